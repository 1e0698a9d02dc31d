"""Feed training batches to the device: the whole training split resident there, or a DataLoader.

Both feeds draw the same batches in the same order from a DistributedSampler seeded with
(seed, epoch): a resumed run and every rank under torchrun see what an uninterrupted run would,
whichever feed is used (tested bit for bit on the CPU).
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from typing import Iterator

import torch
from torch.utils.data import BatchSampler, DataLoader, Dataset, DistributedSampler

# The `num-workers` value that lets the script choose the feed.
AUTO_WORKERS = -1
# Share of the GPU's free memory the decoded images may take when held there; the rest is left to
# activations, cuDNN workspaces and the optimizer, which grow with batch and image size.
DEVICE_MEMORY_SHARE = 0.5


class InMemoryImages(Dataset):
    """uint8 images and targets held in memory, indexed a whole batch at a time."""

    def __init__(self, images: torch.Tensor, targets: torch.Tensor) -> None:
        self.images = images
        self.targets = targets

    def __len__(self) -> int:
        return len(self.targets)

    def __getitem__(self, indices: list[int]) -> tuple[torch.Tensor, torch.Tensor]:
        # One fancy-indexing call per batch beats collating batch-size single images.
        return self.images[indices], self.targets[indices]


class Batches(ABC):
    """An epoch's training batches in the order of a seeded, rank-sharded sampler."""

    resident = False

    def __init__(self, sampler: DistributedSampler, batch_size: int) -> None:
        self.sampler = sampler
        self.batch_size = batch_size

    def set_epoch(self, epoch: int) -> None:
        """Reshuffle for `epoch`: the order depends on the seed and the epoch alone."""
        self.sampler.set_epoch(epoch)

    @abstractmethod
    def __iter__(self) -> Iterator[tuple[torch.Tensor, torch.Tensor]]:
        """Yield this epoch's (uint8 images, targets) batches."""

    @abstractmethod
    def describe(self) -> str:
        """Say for the log how batches reach the device."""


class ResidentBatches(Batches):
    """The training split kept on the device as uint8; each batch is gathered there."""

    resident = True

    def __init__(self, images: torch.Tensor, targets: torch.Tensor, sampler: DistributedSampler, batch_size: int,
                 device: torch.device) -> None:
        super().__init__(sampler, batch_size)
        self.images = images.to(device)
        self.targets = targets.to(device)

    def __iter__(self) -> Iterator[tuple[torch.Tensor, torch.Tensor]]:
        order = torch.tensor(list(self.sampler), dtype=torch.long).to(self.images.device)
        for indices in order.split(self.batch_size):
            yield self.images.index_select(0, indices), self.targets.index_select(0, indices)

    def describe(self) -> str:
        """Say for the log how batches reach the device."""
        return f"training images resident on {self.images.device} ({self.images.nbytes / 2**20:.1f} MiB uint8)"


class LoaderBatches(Batches):
    """Batches assembled on the host by a DataLoader, pinned when a GPU copies them."""

    def __init__(self, images: torch.Tensor, targets: torch.Tensor, sampler: DistributedSampler, batch_size: int,
                 workers: int, device: torch.device) -> None:
        super().__init__(sampler, batch_size)
        # Its own generator: a DataLoader otherwise draws its workers' seed from the global RNG each
        # epoch, which would shift dropout and make the two feeds train different models.
        self.loader = DataLoader(InMemoryImages(images, targets),
                                 sampler=BatchSampler(sampler, batch_size, drop_last=False), batch_size=None,
                                 num_workers=workers, pin_memory=device.type == "cuda", persistent_workers=workers > 0,
                                 generator=torch.Generator())

    def __iter__(self) -> Iterator[tuple[torch.Tensor, torch.Tensor]]:
        return iter(self.loader)

    def describe(self) -> str:
        """Say for the log how batches reach the device."""
        pinned = ", pinned" if self.loader.pin_memory else ""
        return f"DataLoader with {self.loader.num_workers} worker process(es){pinned}"


def training_batches(images: torch.Tensor, targets: torch.Tensor, batch_size: int, workers: int, seed: int,
                     rank: int, world_size: int, device: torch.device, resident_bytes: int) -> Batches:
    """Choose the feed: resident on the device when `workers` is auto and `resident_bytes` fit, else a DataLoader."""
    # DistributedSampler also serves the lone process: its seed + epoch shuffle needs no state to resume.
    sampler = DistributedSampler(targets, num_replicas=world_size, rank=rank, shuffle=True, seed=seed)
    if workers == AUTO_WORKERS and fits_on_device(resident_bytes, device):
        return ResidentBatches(images, targets, sampler, batch_size, device)
    # Measured on an H200 (bench/bench_training.py): with the images in memory, worker processes
    # only add inter-process copies, so the auto setting feeds pinned batches from this process.
    return LoaderBatches(images, targets, sampler, batch_size, max(workers, 0), device)


def fits_on_device(nbytes: int, device: torch.device) -> bool:
    """Tell whether `nbytes` of images may live on the device (host memory already holds them)."""
    if device.type != "cuda":
        return True
    free, _ = torch.cuda.mem_get_info(device)
    return nbytes <= free * DEVICE_MEMORY_SHARE
