"""Image bombs sent to the bundled inference.py are refused before they are decoded, as too large (413),
never a MemoryError or an unhandled DecompressionBombError; a corrupt image stays a malformed request (400)."""
from __future__ import annotations

import base64
import io
import json
import shutil
import struct
import sys
import textwrap
import time
import zlib
from pathlib import Path

import pytest
import torch
from PIL import Image

from conftest import LiveServer
from test_model_lifecycle_local import API, deploy

SCRIPTS = Path(__file__).resolve().parents[1] / "training_scripts"


@pytest.fixture(scope="module")
def inference():
    sys.path.insert(0, str(SCRIPTS))
    try:
        import inference as module
        yield module
    finally:
        sys.path.remove(str(SCRIPTS))
        for name in ("inference", "preprocessing"):
            sys.modules.pop(name, None)


def png_declaring(width: int, height: int) -> bytes:
    """A valid small PNG whose header declares width x height: what a bomb looks like before decoding."""
    buffer = io.BytesIO()
    Image.new("L", (1, 1)).save(buffer, "PNG")
    data = bytearray(buffer.getvalue())
    ihdr = data[12:29]  # b"IHDR" + 13 bytes of header
    ihdr[4:12] = struct.pack(">II", width, height)
    data[12:29] = ihdr
    data[29:33] = struct.pack(">I", zlib.crc32(bytes(ihdr)))
    return bytes(data)


def test_one_image_over_the_pixel_bound_is_refused_before_decoding(inference):
    started = time.monotonic()
    with pytest.raises(inference.RequestTooLarge, match="pixels"):
        inference.input_fn(png_declaring(9000, 9000), "image/png")
    assert time.monotonic() - started < 1


def test_a_200_megapixel_image_is_too_large_not_a_decompression_bomb_error(inference):
    with pytest.raises(inference.RequestTooLarge, match="pixels"):
        inference.input_fn(png_declaring(20000, 10000), "image/png")


def test_many_images_under_the_bound_are_refused_together(inference):
    buffer = io.BytesIO()
    Image.new("L", (4000, 4000)).save(buffer, "PNG")
    instance = base64.b64encode(buffer.getvalue()).decode()
    with pytest.raises(inference.RequestTooLarge, match="together"):
        inference.input_fn(json.dumps({"instances": [instance] * 30}), "application/json")


def test_too_many_images_in_one_request_are_refused(inference):
    tiny = [[0]]
    with pytest.raises(inference.RequestTooLarge, match="at most"):
        inference.input_fn(json.dumps({"instances": [tiny] * (inference.MAX_IMAGES_PER_REQUEST + 1)}),
                           "application/json")


def test_real_zero_filled_png_bomb_is_refused(inference):
    # A genuine all-zero image, highly compressible: its bytes are small, its pixels are not.
    buffer = io.BytesIO()
    Image.new("L", (6000, 6000)).save(buffer, "PNG")
    assert len(buffer.getvalue()) < 200_000
    with pytest.raises(inference.RequestTooLarge, match="pixels"):
        inference.input_fn(buffer.getvalue(), "image/png")


def bundled_model(folder: Path) -> None:
    """A model folder as train.py writes it (8x8 grey images, two labels), served by the bundled inference.py."""
    (folder / "code").mkdir(parents=True)
    for name in ("inference.py", "preprocessing.py"):
        shutil.copy(SCRIPTS / name, folder / "code" / name)
    (folder / "labels.json").write_text(json.dumps({
        "labels": {"0": "zero", "1": "one"}, "image_size": 8, "channels": 1,
        "normalization": {"mean": [0.0], "std": [1.0]}}), encoding="utf-8")
    torch.jit.script(torch.nn.Sequential(torch.nn.Flatten(), torch.nn.Linear(64, 2))).save(str(folder / "model.pt"))


def test_a_local_endpoint_answers_413_to_an_image_bomb_and_400_to_a_corrupt_image(live_server) -> None:
    server: LiveServer = live_server()
    bundled_model(server.storage_root / "models" / "bundled")
    endpoint = deploy(server, "bundled", "bundled", Containers=[{"ModelDataUrl": "models/bundled"}])
    assert endpoint["status"] == "InService", endpoint

    def infer(image: bytes) -> tuple[int, dict]:
        return server.request("POST", f"{API}/endpoints/bundled/infer", raw=image, content_type="image/png")

    bomb = png_declaring(20000, 20000)
    assert len(bomb) < 100
    status, answer = infer(bomb)
    assert (status, answer["field"]) == (413, "body") and "pixels" in answer["error"], answer
    status, answer = infer(bomb[:40] + b"not the rest of a PNG")
    assert (status, answer["field"]) == (400, "body") and "not a readable PNG" in answer["error"], answer
    buffer = io.BytesIO()
    Image.new("L", (8, 8)).save(buffer, "PNG")
    status, answer = infer(buffer.getvalue())
    assert status == 200 and answer["predictions"][0]["label"] in ("zero", "one"), answer


# A model's own error class may also be a ValueError: its status decides, as on SageMaker, before the
# local rule that a ValueError of input_fn is a malformed request.
@pytest.mark.parametrize("base", ["Exception", "ValueError"])
def test_a_local_endpoint_answers_a_models_toolkit_status_as_sagemaker_would(live_server, base: str) -> None:
    # The SageMaker inference toolkit's error contract (sagemaker_inference/errors.py): an exception
    # with status_code and message attributes; the toolkit itself is not installed here.
    server: LiveServer = live_server()
    folder = server.storage_root / "models" / "statuses"
    (folder / "code").mkdir(parents=True)
    (folder / "model.pt").write_bytes(b"unused: model_fn below loads nothing")
    (folder / "code" / "inference.py").write_text(textwrap.dedent(f"""
        class Refused({base}):
            def __init__(self, status_code):
                super().__init__(status_code, "refused", "refused")
                self.status_code, self.message = status_code, f"refused with {{status_code}}"

        def model_fn(model_dir):
            return None

        def input_fn(body, content_type):
            raise Refused(int(body))
    """))
    assert deploy(server, "statuses", "statuses", Containers=[{"ModelDataUrl": "models/statuses"}])["status"] \
        == "InService"

    answered = {}
    for status in (400, 406, 413, 415, 500):
        answered[status], body = server.request("POST", f"{API}/endpoints/statuses/infer", raw=str(status).encode(),
                                                content_type="text/csv")
        # A refusal says the toolkit's message; a model failure its exception.
        assert (f"refused with {status}" if status < 500 else "Refused: (500") in body["error"], body
    # 415 has no refusal of its own here: a request the model cannot read is a 400, as for a ValueError.
    assert answered == {400: 400, 406: 406, 413: 413, 415: 400, 500: 502}
