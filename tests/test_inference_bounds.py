"""Image bombs sent to the bundled inference.py are refused before they are decoded, with a ValueError
(a client error), never a MemoryError or an unhandled DecompressionBombError."""
from __future__ import annotations

import base64
import io
import json
import struct
import sys
import time
import zlib
from pathlib import Path

import pytest
from PIL import Image

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
    with pytest.raises(ValueError, match="pixels"):
        inference.input_fn(png_declaring(9000, 9000), "image/png")
    assert time.monotonic() - started < 1


def test_a_200_megapixel_image_is_a_value_error_not_a_decompression_bomb_error(inference):
    with pytest.raises(ValueError, match="pixels"):
        inference.input_fn(png_declaring(20000, 10000), "image/png")


def test_many_images_under_the_bound_are_refused_together(inference):
    buffer = io.BytesIO()
    Image.new("L", (4000, 4000)).save(buffer, "PNG")
    instance = base64.b64encode(buffer.getvalue()).decode()
    with pytest.raises(ValueError, match="together"):
        inference.input_fn(json.dumps({"instances": [instance] * 30}), "application/json")


def test_too_many_images_in_one_request_are_refused(inference):
    tiny = [[0]]
    with pytest.raises(ValueError, match="at most"):
        inference.input_fn(json.dumps({"instances": [tiny] * (inference.MAX_IMAGES_PER_REQUEST + 1)}),
                           "application/json")


def test_real_zero_filled_png_bomb_is_refused(inference):
    # A genuine all-zero image, highly compressible: its bytes are small, its pixels are not.
    buffer = io.BytesIO()
    Image.new("L", (6000, 6000)).save(buffer, "PNG")
    assert len(buffer.getvalue()) < 200_000
    with pytest.raises(ValueError, match="pixels"):
        inference.input_fn(buffer.getvalue(), "image/png")
