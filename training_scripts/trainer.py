"""The training loop: device and process group, epochs, checkpoints, metric lines and the model export."""

from __future__ import annotations

import argparse
import copy
import json
import logging
import math
import os
import shutil
import signal
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
import torch.distributed as dist
from torch import nn
from torch.nn.parallel import DistributedDataParallel

from batches import Batches, training_batches
from cores import torch_threads
from dataset import ImageDataset, Split
from evaluation import accuracy, classification_auc
from failure import TrainingStopped
from metric_lines import METRIC_NAMES, format_metric_line
from model import build_model

logger = logging.getLogger(__name__)

CHECKPOINT_NAME = "checkpoint.pt"
INFERENCE_FILES = ("inference.py", "preprocessing.py")
EVAL_BATCH_FACTOR = 4
# Ampere (8.0) and later compute in bf16 natively; older GPUs emulate it, where fp16 is the fast path.
BF16_MIN_CAPABILITY = (8, 0)


class StopSignal:
    """SIGTERM, which SageMaker sends before a spot interruption or a stop, noted and acted on between batches.

    Only noted: the handler runs between bytecodes, and a checkpoint half written or a collective
    operation half done must finish first. Before the first epoch there is nothing to save, and the
    default action (ending the process at once) is kept.
    """

    def __init__(self) -> None:
        self.requested = False

    def install(self) -> None:
        """Note SIGTERM from now on (where the platform has it)."""
        if hasattr(signal, "SIGTERM"):
            signal.signal(signal.SIGTERM, self._note)

    def _note(self, _signum: int, _frame: Any) -> None:
        self.requested = True

    def agreed(self, group: ProcessGroup, device: torch.device) -> bool:
        """Tell whether any process of the group was asked to stop; every rank must call it at the same point."""
        if not group.distributed:
            return self.requested
        flag = torch.tensor([1.0 if self.requested else 0.0], device=device)
        dist.all_reduce(flag, op=dist.ReduceOp.MAX)
        return bool(flag.item())


class CheckpointError(RuntimeError):
    """The checkpoint folder holds a checkpoint of a different dataset or model."""


@dataclass(frozen=True)
class ProcessGroup:
    """Where this process sits in a torchrun launch (a lone process is rank 0 of 1)."""

    rank: int
    local_rank: int
    world_size: int
    local_world_size: int

    @property
    def distributed(self) -> bool:
        """Tell whether torchrun launched this process, so DDP and collectives are needed."""
        return "WORLD_SIZE" in os.environ and "RANK" in os.environ

    @property
    def is_main(self) -> bool:
        """Tell whether this process writes the model, metrics, checkpoints and metric lines."""
        return self.rank == 0

    @classmethod
    def from_environment(cls) -> ProcessGroup:
        """Read the rank and world size that torchrun exports."""
        return cls(
            rank=int(os.environ.get("RANK", 0)),
            local_rank=int(os.environ.get("LOCAL_RANK", 0)),
            world_size=int(os.environ.get("WORLD_SIZE", 1)),
            local_world_size=int(os.environ.get("LOCAL_WORLD_SIZE", 1)),
        )


@dataclass(frozen=True)
class OutputDirs:
    """Where the main process writes its results."""

    model: Path
    output_data: Path
    checkpoints: Path | None


def train(args: argparse.Namespace, dataset: ImageDataset, split: Split, group: ProcessGroup,
          outputs: OutputDirs) -> dict[str, Any]:
    """Train, checkpointing every epoch; return the final metrics (written by the main process)."""
    device = choose_device(args.device, group)
    if group.distributed:
        dist.init_process_group("nccl" if device.type == "cuda" else "gloo")
    try:
        return _train_on(device, args, dataset, split, group, outputs)
    finally:
        if group.distributed:
            dist.destroy_process_group()


def choose_device(requested: str, group: ProcessGroup) -> torch.device:
    """Pick this process's device: its local GPU when CUDA is requested or available."""
    if requested == "cuda" and not torch.cuda.is_available():
        raise RuntimeError("--device cuda was requested but CUDA is not available")
    if requested == "cpu" or not torch.cuda.is_available():
        return torch.device("cpu")
    torch.cuda.set_device(group.local_rank)
    return torch.device("cuda", group.local_rank)


def _train_on(device: torch.device, args: argparse.Namespace, dataset: ImageDataset, split: Split,
              group: ProcessGroup, outputs: OutputDirs) -> dict[str, Any]:
    # torch would spin a thread on every core; jobs and ranks beside this one have their own share.
    torch.set_num_threads(torch_threads())
    torch.manual_seed(args.seed)
    model = build_model(dataset.channels, len(dataset.labels)).to(device)
    if device.type == "cuda":
        torch.backends.cudnn.benchmark = True
        model = model.to(memory_format=torch.channels_last)
    optimizer = torch.optim.AdamW(model.parameters(), lr=args.learning_rate, weight_decay=args.weight_decay)
    # The schedule depends on the epoch index alone, never on the total: a spot restart that
    # resumes with more epochs then retraces exactly the same path as an uninterrupted run.
    scheduler = torch.optim.lr_scheduler.ExponentialLR(optimizer, gamma=args.lr_decay)
    precision = Precision.choose(args.amp, device)
    fingerprint = _fingerprint(args, dataset, split)
    start_epoch, history = _resume(outputs.checkpoints, fingerprint, model, optimizer, scheduler, precision, device)
    network: nn.Module = DistributedDataParallel(model, device_ids=[device.index] if device.type == "cuda" else None) \
        if group.distributed else model

    images, targets = torch.from_numpy(dataset.images), torch.from_numpy(dataset.targets)
    train_images, train_targets = images[split.train_indices], targets[split.train_indices]
    val_images, val_targets = images[split.val_indices], targets[split.val_indices]
    batches = training_batches(train_images, train_targets, args.batch_size, args.num_workers, args.seed,
                               group.rank, group.world_size, device, resident_bytes=images.nbytes)
    if batches.resident:
        val_images = val_images.to(device)
    elif device.type == "cuda":
        val_images = val_images.pin_memory()
    mean = torch.tensor(split.mean, device=device).view(1, -1, 1, 1)
    std = torch.tensor(split.std, device=device).view(1, -1, 1, 1)
    normalizer = Normalizer(mean, std, device)
    _log_start(args, dataset, split, group, device, precision, batches, start_epoch)
    stop = StopSignal()
    stop.install()

    for epoch in range(start_epoch, args.epochs + 1):
        if stop.agreed(group, device):
            _keep_last_epoch(model, history, dataset, split, args, outputs, group, device)
            raise TrainingStopped(epoch, outputs.checkpoints)
        # Seeding from the epoch (not from the RNG's history) makes dropout identical after a resume.
        torch.manual_seed(args.seed + 1_000_003 * epoch + group.rank)
        batches.set_epoch(epoch)
        started = time.perf_counter()
        # One process stops between batches; ranks of a group stop together, at the next epoch's start.
        train_loss = _train_epoch(network, batches, optimizer, precision, normalizer, group,
                                  stop=None if group.distributed else stop)
        if train_loss is None:
            _keep_last_epoch(model, history, dataset, split, args, outputs, group, device)
            raise TrainingStopped(epoch, outputs.checkpoints)
        seconds = time.perf_counter() - started
        scheduler.step()
        val_metrics = _evaluate(model, val_images, val_targets, args.batch_size * EVAL_BATCH_FACTOR, precision,
                                normalizer)
        record = {"epoch": epoch, "train_loss": train_loss, **val_metrics, "seconds": seconds,
                  "samples_per_second": len(train_targets) / seconds}
        history.append(record)
        if group.is_main:
            print(format_metric_line(epoch, args.epochs, record), flush=True)
            logger.info("epoch %d trained in %.2f s (%.1f samples/s)", epoch, seconds, record["samples_per_second"])
            if outputs.checkpoints is not None:
                _save_checkpoint(outputs.checkpoints, epoch, fingerprint, model, optimizer, scheduler, precision,
                                 history)

    final = _final_metrics(history, dataset, split)
    if group.is_main:
        _export(model, dataset, split, args, final, history, outputs)
    return final


class Precision:
    """Mixed-precision settings: autocast dtype and, for fp16, the gradient scaler."""

    def __init__(self, device: torch.device, dtype: torch.dtype | None) -> None:
        self.device_type = device.type
        self.dtype = dtype
        self.scaler = torch.amp.GradScaler("cuda", enabled=dtype == torch.float16)

    @classmethod
    def choose(cls, amp: bool, device: torch.device) -> Precision:
        """Use bf16 where the GPU computes it natively, fp16 otherwise, and full precision on the CPU."""
        # CPU autocast to bf16 is slower than float32 for convolutions on most CPUs.
        if not amp or device.type != "cuda":
            return cls(device, None)
        return cls(device, autocast_dtype(torch.cuda.get_device_capability(device)))

    def autocast(self) -> torch.autocast:
        """Return the autocast context for forward passes."""
        return torch.autocast(self.device_type, dtype=self.dtype, enabled=self.dtype is not None)

    def describe(self) -> str:
        """Name the precision for the log."""
        return "float32" if self.dtype is None else str(self.dtype).removeprefix("torch.")


def autocast_dtype(capability: tuple[int, int]) -> torch.dtype:
    """Return the autocast dtype for a GPU of this compute capability: bf16 from 8.0, else fp16."""
    # torch.cuda.is_bf16_supported() also says yes on T4 and V100, where bf16 is emulated and slow.
    return torch.bfloat16 if tuple(capability) >= BF16_MIN_CAPABILITY else torch.float16


class Normalizer:
    """Moves uint8 batches to the device and standardises them there (4x less to copy)."""

    def __init__(self, mean: torch.Tensor, std: torch.Tensor, device: torch.device) -> None:
        self.mean, self.std, self.device = mean, std, device
        self.memory_format = torch.channels_last if device.type == "cuda" else torch.contiguous_format

    def __call__(self, images: torch.Tensor) -> torch.Tensor:
        """Return the batch on the device as normalised float32."""
        images = images.to(self.device, non_blocking=True).float().div_(255.0)
        return images.sub_(self.mean).div_(self.std).contiguous(memory_format=self.memory_format)


def _train_epoch(network: nn.Module, batches: Batches, optimizer: torch.optim.Optimizer, precision: Precision,
                 normalizer: Normalizer, group: ProcessGroup, stop: StopSignal | None = None) -> float | None:
    """Train one epoch and return its mean loss; None when `stop` was requested before its end."""
    network.train()
    device = normalizer.device
    # Summed on the device so the loop never waits for the GPU to report a loss.
    loss_sum = torch.zeros((), device=device, dtype=torch.float64)
    sample_count = torch.zeros((), device=device, dtype=torch.float64)
    for images, targets in batches:
        if stop is not None and stop.requested:
            return None
        inputs = normalizer(images)
        targets = targets.to(device, non_blocking=True)
        with precision.autocast():
            loss = nn.functional.cross_entropy(network(inputs), targets)
        optimizer.zero_grad(set_to_none=True)
        precision.scaler.scale(loss).backward()
        precision.scaler.step(optimizer)
        precision.scaler.update()
        loss_sum += loss.detach().double() * len(targets)
        sample_count += len(targets)
    if group.distributed:
        totals = torch.stack([loss_sum, sample_count])
        dist.all_reduce(totals)
        loss_sum, sample_count = totals[0], totals[1]
    return float(loss_sum / sample_count)


@torch.no_grad()
def _evaluate(model: nn.Module, images: torch.Tensor, targets: torch.Tensor, batch_size: int,
              precision: Precision, normalizer: Normalizer) -> dict[str, float]:
    # Every process scores the whole (small) validation split: identical numbers on all ranks
    # with no gathering of uneven shards.
    model.eval()
    batches = []
    for start in range(0, len(targets), batch_size):
        with precision.autocast():
            logits = model(normalizer(images[start:start + batch_size]))
        batches.append(logits.float())
    logits = torch.cat(batches)
    loss = float(nn.functional.cross_entropy(logits, targets.to(logits.device)))
    probabilities = torch.softmax(logits, dim=1).double().cpu().numpy()
    truth = targets.numpy()
    return {"val_loss": loss, "val_accuracy": accuracy(probabilities, truth),
            "val_auc": classification_auc(probabilities, truth)}


def _fingerprint(args: argparse.Namespace, dataset: ImageDataset, split: Split) -> dict[str, Any]:
    return {"labels": dataset.labels, "channels": dataset.channels, "image_size": args.image_size,
            "train_samples": len(split.train_indices), "val_samples": len(split.val_indices), "seed": args.seed}


def _resume(folder: Path | None, fingerprint: dict[str, Any], model: nn.Module, optimizer: torch.optim.Optimizer,
            scheduler: Any, precision: Precision, device: torch.device) -> tuple[int, list[dict[str, Any]]]:
    path = folder / CHECKPOINT_NAME if folder is not None else None
    if path is None or not path.exists():
        return 1, []
    state = torch.load(path, map_location=device, weights_only=True)
    if state["fingerprint"] != fingerprint:
        raise CheckpointError(f"{path} was written for another dataset or settings "
                              f"({state['fingerprint']} instead of {fingerprint}); empty the checkpoint folder "
                              "to start afresh")
    model.load_state_dict(state["model"])
    optimizer.load_state_dict(state["optimizer"])
    scheduler.load_state_dict(state["scheduler"])
    precision.scaler.load_state_dict(state["scaler"])
    logger.info("resuming from %s after epoch %d", path, state["epoch"])
    return state["epoch"] + 1, state["history"]


def _save_checkpoint(folder: Path, epoch: int, fingerprint: dict[str, Any], model: nn.Module,
                     optimizer: torch.optim.Optimizer, scheduler: Any, precision: Precision,
                     history: list[dict[str, Any]]) -> None:
    state = {"epoch": epoch, "fingerprint": fingerprint, "model": model.state_dict(),
             "optimizer": optimizer.state_dict(), "scheduler": scheduler.state_dict(),
             "scaler": precision.scaler.state_dict(), "history": history}
    # A spot interruption can strike mid-write; the rename leaves either the old or the new file.
    temporary = folder / f".{CHECKPOINT_NAME}.tmp"
    torch.save(state, temporary)
    os.replace(temporary, folder / CHECKPOINT_NAME)


def _final_metrics(history: list[dict[str, Any]], dataset: ImageDataset, split: Split) -> dict[str, Any]:
    last = history[-1]
    return {**{name: last[name] for name in METRIC_NAMES}, "epochs": last["epoch"],
            "samples": len(split.train_indices) + len(split.val_indices),
            "train_samples": len(split.train_indices), "val_samples": len(split.val_indices),
            "skipped_images": len(dataset.skipped)}


def _keep_last_epoch(model: nn.Module, history: list[dict[str, Any]], dataset: ImageDataset, split: Split,
                     args: argparse.Namespace, outputs: OutputDirs, group: ProcessGroup, device: torch.device) -> None:
    """Export the model as the last finished epoch left it, from its checkpoint: a stopped run keeps a model.

    SageMaker's stop (and a tuning's early stop) sends SIGTERM and then uploads /opt/ml/model: what
    is written there in the grace time is the job's model. Mid-epoch weights are not a model of any
    epoch, so the checkpoint's are exported; without checkpoints, or before an epoch ended, nothing is.
    """
    if not group.is_main or not history or outputs.checkpoints is None:
        return
    path = outputs.checkpoints / CHECKPOINT_NAME
    if not path.exists():
        return
    state = torch.load(path, map_location=device, weights_only=True)
    model.load_state_dict(state["model"])
    kept = state["history"]
    _export(model, dataset, split, args, _final_metrics(kept, dataset, split), kept, outputs)


def _export(model: nn.Module, dataset: ImageDataset, split: Split, args: argparse.Namespace,
            final: dict[str, Any], history: list[dict[str, Any]], outputs: OutputDirs) -> None:
    outputs.model.mkdir(parents=True, exist_ok=True)
    outputs.output_data.mkdir(parents=True, exist_ok=True)
    cpu_model = copy.deepcopy(model).to("cpu", memory_format=torch.contiguous_format).float().eval()
    torch.jit.script(cpu_model).save(str(outputs.model / "model.pt"))
    _write_json(outputs.model / "labels.json", {
        "labels": {str(index): label for index, label in enumerate(dataset.labels)},
        "image_size": args.image_size,
        "channels": dataset.channels,
        "normalization": {"mean": split.mean, "std": split.std},
    })
    _write_json(outputs.model / "metrics.json", final)
    _write_json(outputs.output_data / "history.json", history)
    code = outputs.model / "code"
    code.mkdir(exist_ok=True)
    for name in INFERENCE_FILES:
        shutil.copy2(Path(__file__).with_name(name), code / name)
    logger.info("wrote the model to %s", outputs.model)


def _write_json(path: Path, value: Any) -> None:
    path.write_text(json.dumps(_json_safe(value), indent=2) + "\n", encoding="utf-8")


def _json_safe(value: Any) -> Any:
    # JSON has no NaN: an undefined AUC is written as null.
    if isinstance(value, float) and not math.isfinite(value):
        return None
    if isinstance(value, dict):
        return {key: _json_safe(item) for key, item in value.items()}
    if isinstance(value, list):
        return [_json_safe(item) for item in value]
    return value


def _log_start(args: argparse.Namespace, dataset: ImageDataset, split: Split, group: ProcessGroup,
               device: torch.device, precision: Precision, batches: Batches, start_epoch: int) -> None:
    logger.info("training on %s (%s), %d process(es) on host %s of %s, %s",
                device, precision.describe(), group.world_size, os.environ.get("SM_CURRENT_HOST", "local"),
                os.environ.get("SM_HOSTS", "[]"), batches.describe())
    logger.info("%d training and %d validation image(s), classes %s, epochs %d to %d",
                len(split.train_indices), len(split.val_indices), dataset.labels, start_epoch, args.epochs)
