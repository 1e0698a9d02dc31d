"""Decode image files into uint8 arrays on every core the job may use, opening each file once.

Worker processes, not threads: on small images Pillow spends most of its time in Python code that
holds the GIL, so threads decode no faster than one core. Each file is opened once; a grey image
is decoded as one channel and repeated when the dataset turns out to have colour, which Pillow's
per-band resize makes bit-identical to converting it to RGB first (tested).
"""

from __future__ import annotations

import math
import multiprocessing
from concurrent.futures import ProcessPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from typing import Callable, Sequence

import numpy as np
from PIL import Image

from preprocessing import image_to_array, is_color_mode

# A process costs milliseconds to start and its results a copy back; give each one enough images
# (a few tens of milliseconds of decoding) for that to pay.
MIN_IMAGES_PER_PROCESS = 256
# Several chunks per process keep every core busy to the end when some images decode slower.
CHUNKS_PER_PROCESS = 4

# Pillow signals a file it cannot decode with any of these.
_DECODE_ERRORS = (OSError, ValueError, SyntaxError, Image.DecompressionBombError)


@dataclass(frozen=True)
class DecodedImages:
    """The readable images of a list of files, in the list's order, and which files they are."""

    images: np.ndarray
    readable: np.ndarray
    channels: int
    processes: int


@dataclass(frozen=True)
class _Chunk:
    """One worker's share: per file whether its header is colour and whether it decoded."""

    colour: np.ndarray
    readable: np.ndarray
    grey: np.ndarray
    coloured: np.ndarray


def decode_images(paths: Sequence[Path], image_size: int, processes: int,
                  while_decoding: Callable[[], object] = lambda: None) -> DecodedImages:
    """Decode every file to uint8 C x S x S; `while_decoding` runs meanwhile in this process."""
    processes = max(1, min(processes, len(paths) // MIN_IMAGES_PER_PROCESS))
    if processes == 1:
        while_decoding()
        chunks = [_decode_chunk([str(path) for path in paths], image_size)]
    else:
        size = math.ceil(len(paths) / (processes * CHUNKS_PER_PROCESS))
        parts = [[str(path) for path in paths[start:start + size]] for start in range(0, len(paths), size)]
        with ProcessPoolExecutor(max_workers=processes, mp_context=_process_context()) as pool:
            pending = [pool.submit(_decode_chunk, part, image_size) for part in parts]
            while_decoding()
            chunks = [future.result() for future in pending]
    return _assemble(chunks, image_size, processes)


def _process_context() -> multiprocessing.context.BaseContext:
    # Forking before torch is imported is safe and starts a worker in milliseconds; where there is
    # no fork (Windows, for local jobs) the workers start afresh and import numpy and Pillow.
    if "fork" in multiprocessing.get_all_start_methods():
        return multiprocessing.get_context("fork")
    return multiprocessing.get_context()


def _decode_chunk(paths: list[str], image_size: int) -> _Chunk:
    colour = np.zeros(len(paths), dtype=bool)
    readable = np.zeros(len(paths), dtype=bool)
    grey, coloured = [], []
    for position, path in enumerate(paths):
        try:
            with Image.open(path) as image:
                # The header decides the dataset's channels even when the pixels turn out corrupt.
                colour[position] = is_color_mode(image.mode)
                array = image_to_array(image, image_size, 3 if colour[position] else 1)
        except _DECODE_ERRORS:
            continue
        readable[position] = True
        (coloured if colour[position] else grey).append(array)
    return _Chunk(colour, readable, _stack(grey, 1, image_size), _stack(coloured, 3, image_size))


def _stack(arrays: list[np.ndarray], channels: int, image_size: int) -> np.ndarray:
    return np.stack(arrays) if arrays else np.empty((0, channels, image_size, image_size), dtype=np.uint8)


def _assemble(chunks: list[_Chunk], image_size: int, processes: int) -> DecodedImages:
    readable = np.concatenate([chunk.readable for chunk in chunks])
    channels = 3 if any(chunk.colour.any() for chunk in chunks) else 1
    images = np.empty((int(readable.sum()), channels, image_size, image_size), dtype=np.uint8)
    offset = 0
    for chunk in chunks:
        is_colour = chunk.colour[chunk.readable]
        rows = np.arange(offset, offset + len(is_colour))
        # Assigning one channel to three repeats it, as converting the grey image to RGB would.
        images[rows[~is_colour]] = chunk.grey
        if len(chunk.coloured):
            images[rows[is_colour]] = chunk.coloured
        offset += len(is_colour)
    return DecodedImages(images, readable, channels, processes)
