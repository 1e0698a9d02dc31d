"""SageMaker PyTorch inference handlers for the model train.py writes.

train.py copies this file and preprocessing.py into `<model dir>/code/`, where the AWS PyTorch
inference container looks for them. Requests:

- `application/json`: `{"instances": [image, ...]}`, a bare list of images, or `{"image": image}`,
  where an image is a base64-encoded PNG/JPEG string or a nested array of 0..255 pixel values
  shaped H x W (grey) or H x W x C (C = 1, 3 or 4);
- `image/png`, `image/jpeg` (or `application/x-image`): the raw bytes of one image.

The answer is `{"predictions": [{"label": ..., "probabilities": {label: p, ...}}, ...]}`.
"""

from __future__ import annotations

import base64
import binascii
import io
import json
from dataclasses import dataclass
from http import HTTPStatus
from pathlib import Path
from typing import Any

import numpy as np
import torch
from PIL import Image, UnidentifiedImageError

from preprocessing import image_to_array, normalize

try:
    from sagemaker_inference.errors import BaseInferenceToolkitError
except ImportError:  # outside SageMaker's containers; the executor's model worker reads status_code alike
    BaseInferenceToolkitError = Exception

JSON_CONTENT_TYPE = "application/json"
IMAGE_CONTENT_TYPES = frozenset({"image/png", "image/jpeg", "application/x-image"})
ARRAY_CHANNELS = (1, 3, 4)
# Decoding is bounded before any pixel is decompressed: a 2 MB PNG of zeros can hold 80 megapixels
# (a few hundred MB once decoded), and a request can carry many of them.
MAX_IMAGES_PER_REQUEST = 256
MAX_PIXELS_PER_IMAGE = 25_000_000
MAX_PIXELS_PER_REQUEST = 50_000_000


class Refusal(BaseInferenceToolkitError):
    """The request, not the model, is at fault: answered with status_code and the message."""

    # SageMaker's inference toolkit answers an exception of its BaseInferenceToolkitError with the
    # exception's status_code and message, and any other exception with a 500
    # (sagemaker-inference-toolkit, src/sagemaker_inference/transformer.py: Transformer.transform).
    status_code: HTTPStatus

    def __init__(self, message: str):
        Exception.__init__(self, message)
        self.message = self.phrase = message


class RequestTooLarge(Refusal):
    """The request holds more images or pixels than one request may decode: a 413, not a malformed request."""

    status_code = HTTPStatus.REQUEST_ENTITY_TOO_LARGE


# Refusal first, so that its __init__ (not ValueError's) sets message and phrase; Refusal is a class
# of its own, so this order holds whether BaseInferenceToolkitError is the toolkit's or Exception.
class BadRequest(Refusal, ValueError):
    """The request cannot be read as images: a 400 (a ValueError too, for callers that catch those)."""

    status_code = HTTPStatus.BAD_REQUEST


class UnsupportedContentType(BadRequest):
    """The request's content type is not one input_fn reads."""

    status_code = HTTPStatus.UNSUPPORTED_MEDIA_TYPE


class UnsupportedAccept(BadRequest):
    """The answer type asked for is not one output_fn writes."""

    status_code = HTTPStatus.NOT_ACCEPTABLE


@dataclass(frozen=True)
class LoadedModel:
    """The TorchScript network with the preprocessing settings it was trained with."""

    network: torch.jit.ScriptModule
    labels: list[str]
    image_size: int
    channels: int
    mean: list[float]
    std: list[float]


def model_fn(model_dir: str) -> LoadedModel:
    """Load model.pt and the preprocessing settings of labels.json from the model folder."""
    folder = Path(model_dir)
    settings = json.loads((folder / "labels.json").read_text(encoding="utf-8"))
    network = torch.jit.load(str(folder / "model.pt"), map_location="cpu").eval()
    labels = [settings["labels"][str(index)] for index in range(len(settings["labels"]))]
    return LoadedModel(network, labels, settings["image_size"], settings["channels"],
                       settings["normalization"]["mean"], settings["normalization"]["std"])


def input_fn(request_body: bytes | str, content_type: str) -> list[Image.Image]:
    """Decode a request body into a list of images: RequestTooLarge over the bounds, BadRequest on anything else."""
    media_type = (content_type or "").split(";", 1)[0].strip().lower()
    if media_type in IMAGE_CONTENT_TYPES:
        return [_decode_image_bytes(_as_bytes(request_body), "the request body", [0])]
    if media_type != JSON_CONTENT_TYPE:
        raise UnsupportedContentType(f"unsupported content type {content_type!r}: send {JSON_CONTENT_TYPE} or an "
                                     f"image type ({', '.join(sorted(IMAGE_CONTENT_TYPES))})")
    try:
        payload = json.loads(request_body)
    except (json.JSONDecodeError, UnicodeDecodeError) as error:
        raise BadRequest(f"the request body is not valid JSON: {error}") from None
    instances = _json_instances(payload)
    if not instances:
        raise BadRequest("the request holds no images")
    if len(instances) > MAX_IMAGES_PER_REQUEST:
        raise RequestTooLarge(f"the request holds {len(instances)} images; at most {MAX_IMAGES_PER_REQUEST} "
                              "are accepted")
    pixels_so_far = [0]
    return [_json_image(instance, number, pixels_so_far) for number, instance in enumerate(instances)]


def predict_fn(data: list[Image.Image], model: LoadedModel) -> list[dict[str, Any]]:
    """Preprocess the images exactly as in training and return each one's label and probabilities."""
    arrays = np.stack([image_to_array(image, model.image_size, model.channels) for image in data])
    inputs = torch.from_numpy(normalize(arrays, model.mean, model.std))
    with torch.inference_mode():
        probabilities = torch.softmax(model.network(inputs).float(), dim=1).numpy()
    return [
        {"label": model.labels[int(np.argmax(row))],
         "probabilities": {label: float(value) for label, value in zip(model.labels, row)}}
        for row in probabilities
    ]


def output_fn(prediction: list[dict[str, Any]], accept: str | None) -> str:
    """Serialise predictions as JSON, the only answer type offered."""
    media_type = (accept or JSON_CONTENT_TYPE).split(";", 1)[0].strip().lower()
    if media_type not in (JSON_CONTENT_TYPE, "*/*"):
        raise UnsupportedAccept(f"unsupported accept type {accept!r}: only {JSON_CONTENT_TYPE} is offered")
    return json.dumps({"predictions": prediction})


def _json_instances(payload: Any) -> list[Any]:
    if isinstance(payload, list):
        return payload
    if isinstance(payload, dict) and isinstance(payload.get("instances"), list):
        return payload["instances"]
    if isinstance(payload, dict) and "image" in payload:
        return [payload["image"]]
    raise BadRequest('the JSON must be {"instances": [...]}, a list of images, or {"image": ...}')


def _json_image(instance: Any, number: int, pixels_so_far: list[int]) -> Image.Image:
    where = f"image {number}"
    if isinstance(instance, str):
        return _decode_image_bytes(_decode_base64(instance, where), where, pixels_so_far)
    if isinstance(instance, list):
        image = _array_to_image(instance, where)
        _count_pixels(image.size, where, pixels_so_far)
        return image
    raise BadRequest(f"{where} must be a base64 string or a nested array of pixels, not {type(instance).__name__}")


def _decode_base64(text: str, where: str) -> bytes:
    # Browsers and many clients send data URLs (data:image/png;base64,...); accept them too.
    encoded = text.split(",", 1)[1] if text.startswith("data:") else text
    try:
        return base64.b64decode(encoded, validate=True)
    except (binascii.Error, ValueError):
        raise BadRequest(f"{where} is a string but not valid base64") from None


def _decode_image_bytes(data: bytes, where: str, pixels_so_far: list[int]) -> Image.Image:
    try:
        # open reads the header only; the size is checked before load decompresses anything.
        image = Image.open(io.BytesIO(data))
        _count_pixels(image.size, where, pixels_so_far)
        image.load()
    except Image.DecompressionBombError:
        raise RequestTooLarge(f"{where} has more than {MAX_PIXELS_PER_IMAGE} pixels") from None
    except (UnidentifiedImageError, OSError, SyntaxError) as error:
        raise BadRequest(f"{where} is not a readable PNG or JPEG image: {error}") from None
    return image


def _count_pixels(size: tuple[int, int], where: str, pixels_so_far: list[int]) -> None:
    """Refuse an image over the per-image bound, or one that takes the request over its bound."""
    pixels = size[0] * size[1]
    if pixels > MAX_PIXELS_PER_IMAGE:
        raise RequestTooLarge(f"{where} is {size[0]} x {size[1]} pixels; at most {MAX_PIXELS_PER_IMAGE} pixels "
                              "per image are accepted")
    pixels_so_far[0] += pixels
    if pixels_so_far[0] > MAX_PIXELS_PER_REQUEST:
        raise RequestTooLarge(f"the request's images hold more than {MAX_PIXELS_PER_REQUEST} pixels together")


def _array_to_image(instance: list, where: str) -> Image.Image:
    try:
        pixels = np.asarray(instance, dtype=np.float64)
    except (TypeError, ValueError):
        raise BadRequest(f"{where} is not an array of numbers with rows of one length (ragged, or holding "
                         "something other than numbers)") from None
    if pixels.ndim == 2:
        pixels = pixels[:, :, np.newaxis]
    if pixels.ndim != 3 or pixels.shape[2] not in ARRAY_CHANNELS or min(pixels.shape[:2]) == 0:
        raise BadRequest(f"{where} has shape {pixels.shape}; expected H x W or H x W x C with C in 1, 3, 4")
    if not np.all(np.isfinite(pixels)) or pixels.min() < 0 or pixels.max() > 255:
        raise BadRequest(f"{where} has pixel values outside 0..255")
    array = np.rint(pixels).astype(np.uint8)
    # Pillow infers L, RGB or RGBA from a uint8 array's shape.
    return Image.fromarray(array[:, :, 0] if array.shape[2] == 1 else array)


def _as_bytes(body: bytes | str) -> bytes:
    return body.encode("latin-1") if isinstance(body, str) else bytes(body)
