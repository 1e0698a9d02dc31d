"""Read the training channel into memory: unpack archives, find labels, decode and split images.

Labels come from a metadata CSV (`filename,label`, file names relative to the channel) or, when
there is none, from class sub-folders (`<class>/<image>`). Every problem a user can fix raises
DatasetError with a one-line message that ends up in SageMaker's FailureReason.
"""

from __future__ import annotations

import csv
import logging
import os
import tarfile
import zipfile
from dataclasses import dataclass
from pathlib import Path, PurePosixPath
from typing import Callable

import numpy as np

from cores import rank_cores
from decoding import decode_images
from failure import DatasetError

logger = logging.getLogger(__name__)

DEFAULT_CHANNEL_DIR = "/opt/ml/input/data/training"
ARCHIVE_SUFFIXES = (".tar", ".tar.gz", ".tgz", ".zip")
IMAGE_SUFFIXES = (".png", ".jpg", ".jpeg")
IGNORED_NAMES = frozenset({"__MACOSX", "Thumbs.db", "desktop.ini"})
NAMES_SHOWN = 5

@dataclass(frozen=True)
class ImageDataset:
    """Decoded images (uint8 N x C x H x W) with their class indices and label names."""

    images: np.ndarray
    targets: np.ndarray
    labels: list[str]
    channels: int
    skipped: list[str]


@dataclass(frozen=True)
class Split:
    """A seeded, stratified train/validation split with the training split's pixel statistics."""

    train_indices: np.ndarray
    val_indices: np.ndarray
    mean: list[float]
    std: list[float]


def channel_dir() -> Path:
    """Return the training channel's folder from SM_CHANNEL_TRAINING or the container default."""
    return Path(os.environ.get("SM_CHANNEL_TRAINING", DEFAULT_CHANNEL_DIR))


def load_dataset(channel: Path, metadata_file: str, image_size: int, scratch: Path,
                 while_decoding: Callable[[], object] = lambda: None) -> ImageDataset:
    """Load every labelled image of the channel; archives are unpacked into `scratch`."""
    if not channel.is_dir():
        raise DatasetError(f"the training channel {channel} does not exist or is not a folder")
    files = list_channel_files(channel, scratch)
    metadata_name = _normalized_name(metadata_file)
    samples = (samples_from_metadata(files, metadata_name) if metadata_name in files
               else samples_from_class_folders(files, metadata_name))
    labels = sorted({label for _, label in samples}, key=_label_sort_key)
    _require_two_classes(labels)
    return _decode_samples(samples, files, labels, image_size, while_decoding)


def list_channel_files(channel: Path, scratch: Path) -> dict[str, Path]:
    """Map each file's channel-relative POSIX name to its path, with archives unpacked."""
    files: dict[str, Path] = {}
    for name, path in _walk(channel).items():
        if name.lower().endswith(ARCHIVE_SUFFIXES):
            target = scratch / PurePosixPath(name).parent
            unpack_archive(path, target)
            logger.info("unpacked %s", name)
        else:
            files[name] = path
    for name, path in _walk(scratch).items():
        files.setdefault(name, path)
    return _strip_wrapping_folder(files)


def unpack_archive(archive: Path, target: Path) -> None:
    """Unpack a tar or zip archive into `target`, refusing members that would land outside it."""
    target.mkdir(parents=True, exist_ok=True)
    try:
        if archive.name.lower().endswith(".zip"):
            _unpack_zip(archive, target)
        else:
            _unpack_tar(archive, target)
    except (tarfile.TarError, zipfile.BadZipFile, EOFError) as error:
        raise DatasetError(f"cannot unpack archive {archive.name}: {error}") from error


def samples_from_metadata(files: dict[str, Path], metadata_name: str) -> list[tuple[str, str]]:
    """Read (file name, label) pairs from the metadata CSV, dropping rows whose file is missing."""
    with files[metadata_name].open(newline="", encoding="utf-8-sig") as handle:
        reader = csv.DictReader(handle)
        columns = [column.strip() for column in reader.fieldnames or []]
        if "filename" not in columns or "label" not in columns:
            raise DatasetError(f"{metadata_name} must have the columns filename,label; "
                               f"it has {','.join(columns) or 'no header'}")
        reader.fieldnames = columns
        rows = [(row["filename"] or "", row["label"] or "", reader.line_num) for row in reader]
    if not rows:
        raise DatasetError(f"{metadata_name} lists no images")
    samples, missing = [], []
    for filename, label, line in rows:
        if not label.strip():
            raise DatasetError(f"{metadata_name} line {line} has no label")
        name = _normalized_name(filename.strip())
        (samples if name in files else missing).append((name, label.strip()))
    if not samples:
        raise DatasetError(f"none of the {len(rows)} file(s) named in {metadata_name} exist in the channel, "
                           f"e.g. {missing[0][0]}")
    if missing:
        logger.warning("%s names %d missing file(s): %s", metadata_name, len(missing),
                       _some_names(name for name, _ in missing))
    return samples


def samples_from_class_folders(files: dict[str, Path], metadata_name: str) -> list[tuple[str, str]]:
    """Label each image by its top-level sub-folder (`<class>/<image>`)."""
    images = [name for name in files if name.lower().endswith(IMAGE_SUFFIXES)]
    if not images:
        raise DatasetError(f"no images (.png, .jpg, .jpeg) and no {metadata_name} in the training channel")
    samples = [(name, name.split("/", 1)[0]) for name in images if "/" in name]
    if not samples:
        raise DatasetError(f"the training channel has images but neither {metadata_name} "
                           "nor class sub-folders (<class>/<image>) to label them")
    return samples


def split_dataset(dataset: ImageDataset, val_split: float, seed: int) -> Split:
    """Hold out `val_split` of every class for validation, reproducibly for a given seed."""
    random = np.random.default_rng(seed)
    train_parts, val_parts = [], []
    for target in range(len(dataset.labels)):
        members = random.permutation(np.flatnonzero(dataset.targets == target))
        # Every class with two or more images gets one in each split, so AUC can be computed.
        held_out = min(max(round(len(members) * val_split), 1), len(members) - 1) if len(members) > 1 else 0
        val_parts.append(members[:held_out])
        train_parts.append(members[held_out:])
    train_indices, val_indices = np.sort(np.concatenate(train_parts)), np.sort(np.concatenate(val_parts))
    if len(val_indices) == 0:
        raise DatasetError("too few images to hold any out for validation: every class has a single image")
    mean, std = _pixel_statistics(dataset.images[train_indices])
    return Split(train_indices, val_indices, mean, std)


def _walk(root: Path) -> dict[str, Path]:
    files = {}
    for folder, subfolders, names in os.walk(root):
        subfolders[:] = [name for name in subfolders if not _is_ignored(name)]
        # One relative prefix per folder: a path computation per file costs more than decoding a
        # small PNG's header.
        folder_path = Path(folder)
        prefix = folder_path.relative_to(root).as_posix() + "/" if folder_path != root else ""
        for name in names:
            if not _is_ignored(name):
                files[prefix + name] = folder_path / name
    return files


def _is_ignored(name: str) -> bool:
    # Hidden files and the resource forks macOS adds to zips are never images.
    return name.startswith(".") or name in IGNORED_NAMES


def _strip_wrapping_folder(files: dict[str, Path]) -> dict[str, Path]:
    # An archive of a folder wraps the dataset in one top folder (`digits/metadata.csv`); look
    # inside it. A lone folder of images with no sub-folders is a single class, so keep it.
    while files and all("/" in name for name in files):
        tops = {name.split("/", 1)[0] for name in files}
        inner = {name.split("/", 1)[1]: path for name, path in files.items()}
        if len(tops) != 1 or not any("/" in name or not name.lower().endswith(IMAGE_SUFFIXES) for name in inner):
            break
        files = inner
    return files


def _unpack_tar(archive: Path, target: Path) -> None:
    with tarfile.open(archive) as tar:
        if hasattr(tarfile, "data_filter"):
            try:
                tar.extractall(target, filter="data")
            except tarfile.FilterError as error:
                raise DatasetError(f"archive {archive.name} holds an unsafe member: {error}") from error
        else:
            # Containers on Python < 3.10.12 / 3.11.4 lack the data filter: keep plain files and
            # folders with safe names, which is what the filter would let through for a dataset.
            members = [member for member in tar.getmembers()
                       if (member.isfile() or member.isdir()) and _is_safe_member(member.name)]
            tar.extractall(target, members=members)


def _unpack_zip(archive: Path, target: Path) -> None:
    with zipfile.ZipFile(archive) as bundle:
        for name in bundle.namelist():
            if not _is_safe_member(name):
                raise DatasetError(f"archive {archive.name} holds an unsafe member: {name}")
        bundle.extractall(target)


def _is_safe_member(name: str) -> bool:
    parts = PurePosixPath(name.replace("\\", "/")).parts
    return bool(parts) and not name.startswith(("/", "\\")) and ".." not in parts and ":" not in parts[0]


def _normalized_name(name: str) -> str:
    parts = [part for part in name.replace("\\", "/").split("/") if part not in ("", ".")]
    return "/".join(parts)


def _label_sort_key(label: str) -> tuple[int, int, str]:
    # Numeric labels sort as numbers, so "10" comes after "9" and class indices read naturally.
    return (0, int(label), label) if label.lstrip("-").isdigit() else (1, 0, label)


def _require_two_classes(labels: list[str]) -> None:
    if len(labels) < 2:
        raise DatasetError(f"a classifier needs at least two classes; the dataset has only {labels or 'none'}")


def _decode_samples(samples: list[tuple[str, str]], files: dict[str, Path], labels: list[str],
                    image_size: int, while_decoding: Callable[[], object]) -> ImageDataset:
    decoded = decode_images([files[name] for name, _ in samples], image_size, rank_cores(), while_decoding)
    kept = [sample for sample, readable in zip(samples, decoded.readable) if readable]
    skipped = sorted({name for name, _ in samples} - {name for name, _ in kept})
    if not kept:
        raise DatasetError(f"none of the {len(samples)} image(s) could be read, e.g. {skipped[0]}")
    if skipped:
        logger.warning("skipped %d unreadable image(s): %s", len(skipped), _some_names(skipped))
    index = {label: position for position, label in enumerate(labels)}
    targets = np.array([index[label] for _, label in kept], dtype=np.int64)
    present = [labels[target] for target in np.unique(targets)]
    _require_two_classes(present)
    # A class whose images were all unreadable disappears; renumber so indices stay dense.
    if present != labels:
        targets = np.searchsorted(np.array([index[label] for label in present]), targets)
    logger.info("loaded %d image(s) of %d class(es), %d channel(s), %dx%d pixels, decoded by %d process(es)",
                len(kept), len(present), decoded.channels, image_size, image_size, decoded.processes)
    return ImageDataset(decoded.images, targets, present, decoded.channels, skipped)


def _pixel_statistics(images: np.ndarray) -> tuple[list[float], list[float]]:
    # A 256-bin histogram per channel gives the exact mean and std without a float copy of the data.
    means, stds = [], []
    levels = np.arange(256, dtype=np.float64) / 255.0
    for channel in range(images.shape[1]):
        counts = np.bincount(images[:, channel].ravel(), minlength=256).astype(np.float64)
        mean = float(counts @ levels / counts.sum())
        std = float(np.sqrt(counts @ (levels - mean) ** 2 / counts.sum()))
        means.append(mean)
        # A channel that never varies would divide by zero; leave its scale alone.
        stds.append(std if std > 1e-6 else 1.0)
    return means, stds


def _some_names(names) -> str:
    names = list(names)
    shown = ", ".join(names[:NAMES_SHOWN])
    return shown + (f" and {len(names) - NAMES_SHOWN} more" if len(names) > NAMES_SHOWN else "")
