"""Image preprocessing shared by training and inference, so both see identical pixels.

train.py copies this module next to inference.py into the model's `code/` folder.
"""

from __future__ import annotations

import numpy as np
from PIL import Image

GRAYSCALE_MODES = frozenset({"1", "L", "LA", "I", "I;16", "I;16B", "I;16L", "F"})

# Transparent pixels are laid on white: the usual background of transparent scans and icons.
ALPHA_BACKGROUND = (255, 255, 255)

RESIZE_FILTER = Image.Resampling.BILINEAR


def is_color_mode(mode: str) -> bool:
    """Tell whether a Pillow image mode holds colour (palette images count as colour)."""
    return mode not in GRAYSCALE_MODES


def image_to_array(image: Image.Image, image_size: int, channels: int) -> np.ndarray:
    """Flatten alpha, convert to `channels` (1 or 3), resize and return uint8 C x H x W."""
    image = _flatten_alpha(_to_8_bit(image))
    target_mode = "L" if channels == 1 else "RGB"
    # Converting to the image's own mode would only copy it.
    if image.mode != target_mode:
        image = image.convert(target_mode)
    image = image.resize((image_size, image_size), RESIZE_FILTER)
    array = np.asarray(image, dtype=np.uint8)
    return array[np.newaxis] if channels == 1 else array.transpose(2, 0, 1)


def normalize(images: np.ndarray, mean: list[float], std: list[float]) -> np.ndarray:
    """Scale uint8 N x C x H x W images to [0, 1] and standardise each channel to float32."""
    scaled = images.astype(np.float32) / 255.0
    shape = (1, len(mean), 1, 1)
    return (scaled - np.asarray(mean, np.float32).reshape(shape)) / np.asarray(std, np.float32).reshape(shape)


def _to_8_bit(image: Image.Image) -> Image.Image:
    # Pillow's convert("L") clips 16-bit grey (as in 16-bit PNGs) at 255 instead of scaling it.
    if image.mode not in ("I", "I;16", "I;16B", "I;16L"):
        return image
    pixels = np.asarray(image, dtype=np.float64) * (255.0 / 65535.0)
    return Image.fromarray(np.clip(np.rint(pixels), 0, 255).astype(np.uint8))


def _flatten_alpha(image: Image.Image) -> Image.Image:
    has_alpha = image.mode in ("RGBA", "LA", "PA") or (image.mode == "P" and "transparency" in image.info)
    if not has_alpha:
        return image
    rgba = image.convert("RGBA")
    background = Image.new("RGBA", rgba.size, ALPHA_BACKGROUND + (255,))
    return Image.alpha_composite(background, rgba)
