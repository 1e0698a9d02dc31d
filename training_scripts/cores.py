"""How many cores this process may use: its rank's share of SM_NUM_CPUS, or of the cores it can run on.

SageMaker sets SM_NUM_CPUS to the instance's cores; the executor's local platform sets it to the
job's share of the machine while other jobs run beside it.
"""

from __future__ import annotations

import os


def rank_cores() -> int:
    """Return the cores this rank may keep busy: SM_NUM_CPUS (else usable cores) over the ranks on this host."""
    cores = int(os.environ.get("SM_NUM_CPUS", 0)) or _usable_cores()
    # Under torchrun every rank of a host decodes and, on the CPU, trains at the same time.
    ranks_here = int(os.environ.get("LOCAL_WORLD_SIZE", 1))
    return max(1, cores // max(1, ranks_here))


def torch_threads() -> int:
    """Return how many threads torch may compute with: an explicit OMP_NUM_THREADS, else this rank's cores."""
    # torchrun and the executor's local platform set OMP_NUM_THREADS on purpose; honour it.
    return int(os.environ.get("OMP_NUM_THREADS", 0)) or rank_cores()


def _usable_cores() -> int:
    # A container limited to some cores (cpusets, taskset) reports them here, not in cpu_count.
    if hasattr(os, "sched_getaffinity"):
        return len(os.sched_getaffinity(0))
    return os.cpu_count() or 1
