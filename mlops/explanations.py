"""Explanations of an image model's prediction by occlusion, through the model's own serving interface.

The executor never reaches into the model: it sends images to the endpoint's predict path (the
same input_fn → predict_fn → output_fn a client's request takes, in whatever process serves it)
and reads back per-class probabilities. The saliency of a patch is how much the probability of the
explained class drops when that patch is covered (Zeiler & Fergus, "Visualizing and Understanding
Convolutional Networks", 2014).
"""
from __future__ import annotations

import base64
import binascii
import io
import json
import math
from typing import Any, Callable

import numpy as np
from PIL import Image, UnidentifiedImageError

from mlops.errors import InvalidRequest, MalformedRequest, TooLarge

# Predict function: images (H x W x C uint8 arrays) → one {label: probability} map per image.
Predict = Callable[[list[np.ndarray]], list[dict[str, float]]]

# A grid of at most this many patches a side keeps an explanation to a few hundred predictions.
MAX_GRID = 16
# Each patch is one more prediction of the whole image: explanations stay on images of model size.
MAX_SIDE = 256


def decode_request(payload: bytes, content_type: str) -> tuple[np.ndarray, str | None]:
    """Return the one image a request holds (H x W x C uint8, C = 1, 3 or 4) and the class it asks about."""
    media = content_type.split(";", 1)[0].strip().lower()
    if media.startswith("image/") or media == "application/x-image":
        return _from_image_bytes(payload), None
    if media != "application/json":
        raise MalformedRequest("body", "explain takes one image: JSON {\"instances\": [image]} or {\"image\": image}, "
                                     "or the image's bytes")
    try:
        document = json.loads(payload)
    except ValueError as exc:
        raise MalformedRequest("body", f"not valid JSON: {exc}") from None
    if isinstance(document, dict) and "instances" in document:
        images = document["instances"]
    elif isinstance(document, dict) and "image" in document:
        images = [document["image"]]
    else:
        raise MalformedRequest("body", "send {\"instances\": [image]} or {\"image\": image}")
    if not isinstance(images, list) or len(images) != 1:
        raise MalformedRequest("instances", "explain one image at a time")
    label = document.get("label")
    if label is not None and not isinstance(label, str):
        raise MalformedRequest("label", "must be a string (a class of the model)")
    image = images[0]
    if isinstance(image, str):
        try:
            return _from_image_bytes(base64.b64decode(image.split(",", 1)[-1], validate=True)), label
        except binascii.Error:
            raise MalformedRequest("image", "is not base64") from None
    return _from_pixels(image), label


def _from_image_bytes(data: bytes) -> np.ndarray:
    try:
        with Image.open(io.BytesIO(data)) as image:
            if max(image.size) > MAX_SIDE:
                raise TooLarge("image", f"is {image.size[0]}x{image.size[1]}; explain takes at most "
                                              f"{MAX_SIDE} pixels a side")
            pixels = np.asarray(image.convert("RGB") if image.mode not in ("L", "RGB", "RGBA") else image)
    except (UnidentifiedImageError, OSError) as exc:
        raise MalformedRequest("image", f"is not a PNG or JPEG image: {exc}") from None
    return _from_pixels(pixels)


def _from_pixels(instance: Any) -> np.ndarray:
    try:
        pixels = np.asarray(instance, dtype=np.float64)
    except (ValueError, TypeError):
        raise MalformedRequest("image", "is not a rectangular array of pixel values") from None
    if pixels.ndim == 2:
        pixels = pixels[:, :, np.newaxis]
    if pixels.ndim != 3 or pixels.shape[2] not in (1, 3, 4) or min(pixels.shape[:2]) == 0:
        raise MalformedRequest("image", f"has shape {list(pixels.shape)}; expected H x W or H x W x C, C in 1, 3, 4")
    if max(pixels.shape[:2]) > MAX_SIDE:
        raise TooLarge("image", f"explain takes at most {MAX_SIDE} pixels a side")
    if not np.all(np.isfinite(pixels)) or pixels.min() < 0 or pixels.max() > 255:
        raise MalformedRequest("image", "has pixel values outside 0..255")
    return np.rint(pixels).astype(np.uint8)


def occlusion(image: np.ndarray, predict: Predict, label: str | None = None,
              patch: int | None = None) -> dict[str, Any]:
    """Explain the model's prediction for one image: probabilities and an occlusion saliency map."""
    height, width = image.shape[:2]
    patch = patch or max(1, math.ceil(max(height, width) / MAX_GRID))
    probabilities = predict([image])[0]
    if not probabilities:
        raise ValueError("the model answered no probabilities")
    label = label if label is not None else max(probabilities, key=probabilities.__getitem__)
    if label not in probabilities:
        raise InvalidRequest("label", f"is not a class of the model; classes: {', '.join(probabilities)}")
    # Covered with the image's mean colour: a black patch would be evidence of its own on digit scans.
    fill = image.reshape(-1, image.shape[2]).mean(axis=0).round().astype(np.uint8)
    corners = [(top, left) for top in range(0, height, patch) for left in range(0, width, patch)]
    covered = []
    for top, left in corners:
        variant = image.copy()
        variant[top:top + patch, left:left + patch] = fill
        covered.append(variant)
    drops = np.zeros((height, width), dtype=np.float64)
    for (top, left), answer in zip(corners, predict(covered)):
        drops[top:top + patch, left:left + patch] = probabilities[label] - answer.get(label, 0.0)
    return {"method": "occlusion", "label": label, "probabilities": probabilities, "patch": patch,
            "baseline": [int(value) for value in fill],
            "saliency": [[round(float(value), 6) for value in row] for row in drops]}


def probabilities_from_predictions(answer: bytes) -> list[dict[str, float]]:
    """Read per-class probabilities from a JSON answer {"predictions": [{"probabilities": {...}}, ...]}."""
    try:
        predictions = json.loads(answer)["predictions"]
        return [{str(key): float(value) for key, value in item["probabilities"].items()} for item in predictions]
    except (ValueError, KeyError, TypeError, AttributeError, RecursionError):
        raise ValueError("the model does not answer per-class probabilities "
                         "({\"predictions\": [{\"probabilities\": {...}}]}), which occlusion needs") from None
