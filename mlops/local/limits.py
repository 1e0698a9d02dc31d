"""Limits per job: memory, processes, CPU weight and disk, and a uid of its own for each job.

Each process tree of user code (a job, its requirements install, a model worker, a batch transform)
starts in a cgroup of its own, made under the executor's own cgroup: cgroup v2 where the host has
its controllers, else the v1 `memory`, `pids` (and `cpu`) hierarchies. Under systemd the unit's
`Delegate=yes` hands that subtree to the executor. The tree is in the cgroup before it runs anything,
so nothing it forks escapes: bubblewrap's processes are placed while its child waits (--block-fd),
a bare process joins through a launcher before it becomes the command (mlops/local/enter_limits.py). A job over its memory
is killed by the kernel inside its own cgroup only; over its process limit a fork fails inside it
only. Its disk use (its folder, its /tmp included) is measured every second and a job over its disk
limit is stopped.

Where no cgroup can be made (no permission, no controllers, EXECUTOR_JOB_CGROUPS=off) the tree
starts under rlimits instead: address space per process, and processes per uid where the job has a
uid of its own. On Windows a Job Object holds the tree to its memory and process limits
(mlops/local/processes.py).

An executor running as root hands each running job or model worker a uid of its own from
EXECUTOR_JOB_UIDS, so that two jobs can neither signal nor read each other, not even through a
mount they share. A uid is free when no job holds it and no process on the machine runs as it: one
that an orphan of a killed executor still runs as is never handed out. Executors sharing a database
may run side by side on one host with one range, so a uid is claimed for the host by an exclusive
flock on its file in a folder of root's alone (/run/essedum-executor/uids), held from the lease until
the release: no two executors hand out a uid at once, and a killed executor's locks go with it.
"""
from __future__ import annotations

import errno
import hashlib
import logging
import os
import re
import shutil
import signal
import sys
import threading
import time
import uuid
from dataclasses import dataclass
from pathlib import Path
from typing import Callable, Iterator, Sequence

import psutil

from config import Config, ConfigError
from mlops.errors import BackendError
from mlops.local import enter_limits

logger = logging.getLogger(__name__)

LAUNCHER = Path(enter_limits.__file__).resolve()
IS_WINDOWS = os.name == "nt"
# Kept for the executor itself (its threads, the database, the served models' pipes).
MEMORY_RESERVE = 1 << 30
DISK_RESERVE_SHARE = 0.05
WATCH_INTERVAL_S = 1.0
# A walk of a folder of many files takes time: the watch waits at least this many times as long
# before the next, so that it never takes more than a fifth of a core.
WATCH_WALK_FACTOR = 4
# How long the end of a tree waits for the kernel to empty its cgroup before leaving it for the next start.
RELEASE_WAIT_S = 5.0
RELEASE_POLL_S = 0.001
V1_CONTROLLERS = ("memory", "pids", "cpu")
V2_CONTROLLERS = ("memory", "pids", "cpu")
REQUIRED_CONTROLLERS = ("memory", "pids")
# cgroup v1's cpu.shares for the v2 default weight (100).
V1_SHARES_PER_WEIGHT = 1024 / 100
_UNSAFE_NAME = re.compile(r"[^A-Za-z0-9_.-]")


def format_size(size: int) -> str:
    """Say a size in the largest binary unit it fills: 1 GiB, 64 MiB, 1.5 GiB, 512 bytes."""
    for unit, scale in (("TiB", 1 << 40), ("GiB", 1 << 30), ("MiB", 1 << 20), ("KiB", 1 << 10)):
        if size >= scale:
            return f"{size / scale:.2f}".rstrip("0").rstrip(".") + f" {unit}"
    return f"{size} bytes"


@dataclass(frozen=True)
class JobLimits:
    """What one job may use: memory, processes, CPU weight and disk."""

    memory: int
    processes: int
    cpu_weight: int
    disk: int

    @classmethod
    def from_config(cls, config: Config) -> "JobLimits":
        """Read the limits of a configuration, filling the machine-sized defaults."""
        memory = config.job_memory_limit
        if memory is None:
            total = psutil.virtual_memory().total
            memory = max(total - min(MEMORY_RESERVE, total // 4), 1)
        disk = config.job_disk_limit
        if disk is None:
            # The data folder may not be made yet: its nearest existing folder is on the same disk.
            existing = next(folder for folder in (config.data_dir, *config.data_dir.parents) if folder.exists())
            total = shutil.disk_usage(existing).total
            disk = max(int(total * (1 - DISK_RESERVE_SHARE)), 1)
        return cls(memory, config.job_max_processes, config.job_cpu_weight, disk)

    def memory_reached(self) -> str:
        """Say that a job was stopped at its memory limit."""
        return f"memory limit of {format_size(self.memory)} reached"

    def disk_reached(self, used: int) -> str:
        """Say that a job was stopped at its disk limit."""
        return (f"disk limit of {format_size(self.disk)} reached (EXECUTOR_JOB_DISK_LIMIT): its folder "
                f"and /tmp took {format_size(used)}")

    def describe(self) -> str:
        """Say the limits in one line."""
        return (f"memory {format_size(self.memory)}, {self.processes} processes, CPU weight {self.cpu_weight}, "
                f"disk {format_size(self.disk)}")


class JobCgroup:
    """One process tree's cgroup: a folder per v1 hierarchy, or one v2 folder."""

    def __init__(self, version: int, folders: dict[str, Path]):
        self.version = version
        self.folders = folders

    def join_files(self) -> list[Path]:
        """Return the cgroup.procs files a process writes itself into to join this cgroup."""
        return [folder / "cgroup.procs" for folder in self._distinct()]

    def oom_kills(self) -> int:
        """Return how many processes the kernel killed here for want of memory."""
        counters = "memory.events" if self.version == 2 else "memory.oom_control"
        try:
            text = (self.folders["memory"] / counters).read_text()
        except OSError:
            return 0
        for line in text.splitlines():
            name, _, value = line.partition(" ")
            if name == "oom_kill":
                return int(value)
        return 0

    def pids(self) -> set[int]:
        """Return the processes in this cgroup now."""
        found: set[int] = set()
        for procs in self.join_files():
            try:
                found.update(int(line) for line in procs.read_text().split())
            except OSError:
                continue
        return found

    def kill(self) -> None:
        """Kill every process in this cgroup, those it forks while it is being killed included."""
        kill_file = self.folders.get("memory", Path()) / "cgroup.kill"
        if self.version == 2 and kill_file.exists():
            _write(kill_file, "1")
            return
        # v1 has no cgroup.kill: kill what is there until nothing is (pids.max bounds the rounds' work).
        for _ in range(100):
            members = self.pids()
            if not members:
                return
            for pid in members:
                try:
                    os.kill(pid, signal.SIGKILL)
                except OSError:
                    pass

    def remove(self) -> bool:
        """Kill what is left, wait for the kernel to empty the cgroup, remove it; False if it stays busy."""
        self.kill()
        deadline = time.monotonic() + RELEASE_WAIT_S
        while self.pids() and time.monotonic() < deadline:
            time.sleep(RELEASE_POLL_S)
        removed = True
        for folder in self._distinct():
            try:
                folder.rmdir()
            except FileNotFoundError:
                continue
            except OSError as exc:
                logger.warning("cgroup %s could not be removed (%s); it is removed at the next start",
                               folder, exc.strerror)
                removed = False
        return removed

    def _distinct(self) -> list[Path]:
        return list(dict.fromkeys(self.folders.values()))


class CgroupRoot:
    """Where this executor makes its jobs' cgroups: beside itself in its own cgroup, per hierarchy."""

    def __init__(self, version: int, parents: dict[str, Path], prefix: str):
        self.version = version
        self.parents = parents
        self.prefix = prefix

    def create(self, marker: str, limits: JobLimits) -> JobCgroup:
        """Make a cgroup for one process tree of a job, with the job's limits written in."""
        name = f"{self._marked(marker)}-{uuid.uuid4().hex[:8]}"
        cgroup = JobCgroup(self.version, {controller: parent / name for controller, parent in self.parents.items()})
        try:
            for folder in cgroup._distinct():
                folder.mkdir()
            if self.version == 2:
                self._write_v2(cgroup, limits)
            else:
                self._write_v1(cgroup, limits)
        except OSError as exc:
            cgroup.remove()
            raise BackendError(f"the job's cgroup could not be made ({exc}); set EXECUTOR_JOB_CGROUPS=off "
                               "to run jobs under rlimits instead") from exc
        return cgroup

    def leftovers(self) -> list[JobCgroup]:
        """Return the cgroups an earlier run of this executor left (it was killed before removing them)."""
        return self._found(f"{self.prefix}-*")

    def of_marker(self, marker: str) -> list[JobCgroup]:
        """Return the cgroups of one marker's process trees (a job's runs and installs), whoever made them."""
        return self._found(f"{self._marked(marker)}-" + "[0-9a-f]" * 8)

    def _marked(self, marker: str) -> str:
        return f"{self.prefix}-{_UNSAFE_NAME.sub('_', marker)[:48]}"

    def _found(self, pattern: str) -> list[JobCgroup]:
        names: set[str] = set()
        for parent in self.parents.values():
            names.update(child.name for child in parent.glob(pattern) if child.is_dir())
        return [JobCgroup(self.version, {controller: parent / name for controller, parent in self.parents.items()})
                for name in sorted(names)]

    @staticmethod
    def _write_v2(cgroup: JobCgroup, limits: JobLimits) -> None:
        folder = cgroup.folders["memory"]
        _write(folder / "memory.max", str(limits.memory))
        # Swap would let a job past its memory limit, slowly: none.
        _write_if_present(folder / "memory.swap.max", "0")
        # The whole job dies at its limit, as in a container, not one process of it at random.
        _write(folder / "memory.oom.group", "1")
        _write(folder / "pids.max", str(limits.processes))
        _write_if_present(folder / "cpu.weight", str(limits.cpu_weight))

    @staticmethod
    def _write_v1(cgroup: JobCgroup, limits: JobLimits) -> None:
        memory = cgroup.folders["memory"]
        _write(memory / "memory.limit_in_bytes", str(limits.memory))
        # Memory and swap together, once swap accounting is on: else swap would stretch the limit.
        _write_if_present(memory / "memory.memsw.limit_in_bytes", str(limits.memory))
        _write(cgroup.folders["pids"] / "pids.max", str(limits.processes))
        if "cpu" in cgroup.folders:
            _write(cgroup.folders["cpu"] / "cpu.shares", str(max(2, round(limits.cpu_weight * V1_SHARES_PER_WEIGHT))))


class UidPool:
    """Leases each running job or model worker a uid of its own from a range, exclusive across this host."""

    def __init__(self, uids: range, in_use: Callable[[], set[int]] | None = None,
                 lock_folder: Path | None = None):
        self.uids = uids
        self._in_use = in_use or _uids_of_processes
        self._lock_folder = lock_folder
        self._folder_fd: int | None = None
        # The lock file held for each leased uid (none on Windows, where jobs have no uid of their own).
        self._leased: dict[int, int | None] = {}
        self._lock = threading.Lock()

    def lease(self) -> int:
        """Return a uid no job on this host holds and no process runs as; raise BackendError when none is free."""
        with self._lock:
            busy = set(self._leased) | self._in_use()
            for uid in self.uids:
                if uid in busy:
                    continue
                held = self._claim(uid)
                if held is False:
                    continue
                self._leased[uid] = held
                return uid
        raise BackendError(f"no uid of EXECUTOR_JOB_UIDS ({self.uids.start}-{self.uids.stop - 1}) is free: "
                           f"{len(self._leased)} are held by this executor's running jobs and model workers, the "
                           "others by another executor on this host or by processes still running as them")

    def release(self, uid: int | None) -> None:
        """Give a uid back once nothing runs as it any more."""
        with self._lock:
            if uid not in self._leased:
                return
            held = self._leased.pop(uid)
            if held is not None:
                # Closing the only descriptor of the open file drops its lock.
                os.close(held)

    def _claim(self, uid: int) -> int | None | bool:
        """Lock the uid's file for this executor: its descriptor, None on Windows, False when another holds it."""
        if IS_WINDOWS:
            return None
        import fcntl
        folder = self._folder()
        try:
            held = os.open(f"{uid}.lock", os.O_RDWR | os.O_CREAT | os.O_NOFOLLOW | os.O_CLOEXEC, 0o600,
                           dir_fd=folder)
        except OSError as exc:
            raise BackendError(f"cannot open the lock file of uid {uid} in {self._lock_folder}: "
                               f"{exc.strerror}") from exc
        try:
            fcntl.flock(held, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            os.close(held)
            return False
        except OSError as exc:
            os.close(held)
            raise BackendError(f"cannot lock uid {uid} in {self._lock_folder}: {exc.strerror}") from exc
        return held

    def _folder(self) -> int:
        if self._folder_fd is None:
            self._lock_folder = Path(os.path.abspath(self._lock_folder or uid_lock_folder()))
            try:
                self._folder_fd = _private_folder(self._lock_folder)
            except OSError as exc:
                raise BackendError(f"cannot make the uid lock folder {self._lock_folder}: {exc.strerror}") from exc
        return self._folder_fd


def uid_lock_folder() -> Path:
    """Return the host-wide folder of the uid locks: under /run as root, else a private one in the temp folder."""
    # /run is root's, cleared at boot, and never bound into a sandbox; one folder for the host, not per data
    # folder, so that executors with different data folders but one range exclude each other too.
    if os.geteuid() == 0 and os.path.isdir("/run"):
        return Path("/run/essedum-executor/uids")
    import tempfile
    return Path(tempfile.gettempdir()) / f"essedum-executor-{os.geteuid()}" / "uids"


def _check_no_one_else_may_swap(folder_fd: int, folder: Path) -> None:
    """Refuse a folder on the way that another user owns, or may write to without the sticky bit."""
    status = os.fstat(folder_fd)
    if status.st_uid not in (0, os.geteuid()) or (status.st_mode & 0o022 and not status.st_mode & 0o1000):
        raise BackendError(f"the uid lock folder {folder} lies in a folder that another user may change "
                           f"(owner uid {status.st_uid}, mode {status.st_mode & 0o7777:o})")


def _private_folder(folder: Path) -> int:
    """Open a folder of this user's alone (0700, made where missing), following no link on the way."""
    parent_fd = os.open(folder.anchor, os.O_RDONLY | os.O_DIRECTORY | os.O_CLOEXEC)
    try:
        _check_no_one_else_may_swap(parent_fd, folder)
        for name in folder.parts[1:]:
            try:
                os.mkdir(name, 0o700, dir_fd=parent_fd)
                made = True
            except FileExistsError:
                made = False
            try:
                child = os.open(name, os.O_RDONLY | os.O_DIRECTORY | os.O_NOFOLLOW | os.O_CLOEXEC, dir_fd=parent_fd)
            except OSError as exc:
                raise BackendError(f"cannot open the uid lock folder {folder}: {name!r} is not a plain folder "
                                   f"({exc.strerror})") from exc
            os.close(parent_fd)
            parent_fd = child
            if made:
                os.chmod(child, 0o700)
            _check_no_one_else_may_swap(child, folder)
        status = os.fstat(parent_fd)
        if status.st_uid != os.geteuid() or status.st_mode & 0o077:
            raise BackendError(f"the uid lock folder {folder} must be this user's alone (mode 0700): it is "
                               f"owned by uid {status.st_uid} with mode {status.st_mode & 0o777:o}")
    except BaseException:
        os.close(parent_fd)
        raise
    return parent_fd


def _uids_of_processes() -> set[int]:
    uids: set[int] = set()
    for process in psutil.process_iter(["uids"]):
        if process.info["uids"] is not None:
            uids.update(process.info["uids"])
    return uids


class Enclosure:
    """The limits one process tree starts under: its cgroup, else rlimits; on Windows its Job Object's."""

    def __init__(self, limits: JobLimits, cgroup: JobCgroup | None, rlimits: dict[str, int]):
        self.limits = limits
        self.cgroup = cgroup
        self.rlimits = rlimits
        self._released = False
        self._reached: str | None = None

    def prefix(self) -> list[str]:
        """Return the command that starts what follows it inside these limits (none needed: empty)."""
        if IS_WINDOWS or (self.cgroup is None and not self.rlimits):
            return []
        options: list[str] = []
        for procs in self.cgroup.join_files() if self.cgroup else ():
            options += ["--join", str(procs)]
        for name, value in self.rlimits.items():
            options += ["--rlimit", f"{name}={value}"]
        return [sys.executable, "-I", "-S", str(LAUNCHER), *options, "--"]

    def place(self, pids: Sequence[int]) -> None:
        """Put processes that have not yet run user code under these limits (bubblewrap's, while it waits)."""
        for procs in self.cgroup.join_files() if self.cgroup else ():
            for pid in pids:
                _write(procs, str(pid))
        for name, value in self.rlimits.items():
            for pid in pids:
                psutil.Process(pid).rlimit(getattr(psutil, "RLIMIT_" + name), (value, value))

    def limit_reached(self) -> str | None:
        """Say which limit the kernel stopped the tree at, if any (memory: its cgroup's OOM kills)."""
        if self._reached is None and self.cgroup is not None and not self._released and self.cgroup.oom_kills():
            self._reached = self.limits.memory_reached()
        return self._reached

    def kill(self) -> None:
        """Kill every process in the tree's cgroup (nothing without one)."""
        if self.cgroup is not None and not self._released:
            self.cgroup.kill()

    def release(self) -> None:
        """Kill what is left and remove the cgroup; once the tree has ended."""
        if self.cgroup is not None and not self._released:
            # Its counters go with it: read them last.
            self.limit_reached()
            self._released = True
            self.cgroup.remove()


class Confinement:
    """How this machine holds user code to the job limits: cgroups, or rlimits where it cannot (and why)."""

    def __init__(self, limits: JobLimits, root: CgroupRoot | None, missing: str | None, uids: UidPool):
        self.limits = limits
        self.root = root
        self.missing = missing
        self.uids = uids

    @property
    def cgroups(self) -> bool:
        """True when each process tree gets a cgroup of its own."""
        return self.root is not None

    def enclose(self, marker: str, *, own_uid: bool) -> Enclosure:
        """Make the limits of one process tree: a cgroup, else rlimits (processes only per a uid of its own)."""
        if self.root is not None:
            return Enclosure(self.limits, self.root.create(marker, self.limits), {})
        rlimits = {} if IS_WINDOWS else {"AS": self.limits.memory}
        if own_uid and not IS_WINDOWS:
            rlimits["NPROC"] = self.limits.processes
        return Enclosure(self.limits, None, rlimits)

    def describe(self) -> str:
        """Say in one line how jobs are held to their limits."""
        if self.root is not None:
            return f"each job in a cgroup v{self.root.version} of its own: {self.limits.describe()}"
        if IS_WINDOWS:
            how = "a Job Object holds each job to its memory and process limits"
        else:
            how = ("rlimits instead: address space per process, processes per job uid (only where jobs run as "
                   "uids of their own), no CPU weight")
        return f"job limits NOT enforced by cgroups ({self.missing}); {how}; {self.limits.describe()}"

    def sweep_leftovers(self) -> int:
        """Kill and remove the cgroups a killed run of this executor left; return how many."""
        if self.root is None:
            return 0
        leftovers = self.root.leftovers()
        for cgroup in leftovers:
            cgroup.remove()
        if leftovers:
            logger.warning("removed %d cgroup(s) that an earlier run of the executor left", len(leftovers))
        return len(leftovers)

    def remove_cgroups_of(self, marker: str) -> int:
        """Kill and remove the cgroups of an abandoned job's process trees; return how many."""
        if self.root is None:
            return 0
        found = self.root.of_marker(marker)
        for cgroup in found:
            cgroup.remove()
        if found:
            logger.warning("removed %d cgroup(s) that job %s left", len(found), marker)
        return len(found)


class LimitWatch:
    """Checks a running job against its memory and disk limits every second; stops it at the first breach."""

    def __init__(self, enclosure: Enclosure, folder: Path, stop: Callable[[str], None],
                 interval: float = WATCH_INTERVAL_S, placed: Sequence[Path] = ()):
        self.enclosure = enclosure
        self.folder = folder
        self.placed = tuple(placed)
        self.reached: str | None = None
        self._stop = stop
        self._interval = interval
        self._ended = threading.Event()
        self._thread = threading.Thread(target=self._watch, name=f"limits-{folder.name[:8]}", daemon=True)
        self._thread.start()

    def close(self) -> str | None:
        """Stop watching; return the limit the job reached, if it reached one."""
        self._ended.set()
        self._thread.join()
        return self.reached or self.enclosure.limit_reached()

    def _watch(self) -> None:
        pause = self._interval
        while not self._ended.wait(pause):
            reached = self.enclosure.limit_reached()
            if reached is None:
                began = time.monotonic()
                used = disk_use(self.folder, self.placed)
                pause = max(self._interval, (time.monotonic() - began) * WATCH_WALK_FACTOR)
                reached = self.enclosure.limits.disk_reached(used) if used > self.enclosure.limits.disk else None
            if reached is not None:
                self.reached = reached
                self._stop(reached)
                return


def disk_use(folder: Path, placed: Sequence[Path] = ()) -> int:
    """Return the bytes a folder takes on disk, links not followed, each hard-linked file once.

    Each file, link or folder the job made counts at least its share of the filesystem's inodes
    (its bytes over its inodes): a million empty files take no blocks but all of the inodes, and a
    full inode table fails the executor's own writes as a full disk does. The folders in placed (a
    dataset the executor hard-linked in) count their bytes only: their inodes are the storage's.
    """
    share = _bytes_per_inode(folder)
    placed_prefixes = tuple(os.path.join(str(path), "") for path in placed)
    used, seen = 0, set()
    for entry in _entries(folder):
        try:
            info = entry.stat(follow_symlinks=False)
        except OSError:
            continue
        if info.st_nlink > 1 and not entry.is_dir(follow_symlinks=False):
            if (info.st_dev, info.st_ino) in seen:
                continue
            seen.add((info.st_dev, info.st_ino))
        size = info.st_blocks * 512 if hasattr(info, "st_blocks") else info.st_size
        if share and not entry.path.startswith(placed_prefixes):
            size = max(size, share)
        used += size
    return used


def _bytes_per_inode(folder: Path) -> int:
    """Return a filesystem's bytes over its inodes; 0 where it has no fixed inode table (or says none)."""
    try:
        info = os.statvfs(folder)
    except (OSError, AttributeError):  # Windows has no statvfs, nor inode tables to fill
        return 0
    return info.f_blocks * info.f_frsize // info.f_files if info.f_files else 0


def _entries(folder: Path) -> Iterator[os.DirEntry]:
    folders = [folder]
    while folders:
        try:
            with os.scandir(folders.pop()) as listing:
                for entry in listing:
                    yield entry
                    if entry.is_dir(follow_symlinks=False):
                        folders.append(Path(entry.path))
        except OSError:
            continue


_detected: dict[tuple, Confinement] = {}
_detect_lock = threading.Lock()


def confinement_for(config: Config) -> Confinement:
    """Return the confinement of a configuration, detected once, said at start-up, leftovers removed."""
    key = (config.job_cgroups, config.job_memory_limit, config.job_max_processes, config.job_cpu_weight,
           config.job_disk_limit, config.job_uids, config.data_dir)
    with _detect_lock:
        if key not in _detected:
            found = detect(config)
            # Executors sharing a database share the data folder, and so the cgroups' prefix: those found
            # may be a live neighbour's. A killed one's jobs are swept by their marker when taken over.
            if not config.database_url:
                found.sweep_leftovers()
            (logger.info if found.cgroups else logger.warning)("%s", found.describe())
            _detected[key] = found
        return _detected[key]


def detect(config: Config) -> Confinement:
    """Find where this executor may make cgroups; raise ConfigError when they are required but cannot be."""
    limits = JobLimits.from_config(config)
    _check_uids_are_nobodys(config.job_uids)
    uids = UidPool(config.job_uids)
    if config.job_cgroups == "off":
        return Confinement(limits, None, "EXECUTOR_JOB_CGROUPS=off", uids)
    if not sys.platform.startswith("linux"):
        root, missing = None, f"{sys.platform} has no cgroups"
    else:
        root, missing = _cgroup_root(cgroup_prefix(config.data_dir))
    if root is None and config.job_cgroups == "required":
        raise ConfigError(f"EXECUTOR_JOB_CGROUPS=required: {missing}")
    return Confinement(limits, root, missing, uids)


def cgroup_prefix(data_dir: Path) -> str:
    """Return the name prefix of the cgroups of the executors on a data folder (the next start finds them by it)."""
    return "essedum-" + hashlib.sha256(str(data_dir).encode()).hexdigest()[:10]


def _check_uids_are_nobodys(uids: range) -> None:
    """Refuse a uid range that holds a user of this machine: a job would own that user's files."""
    if IS_WINDOWS:
        return
    import pwd

    taken = sorted((entry.pw_uid, entry.pw_name) for entry in pwd.getpwall() if entry.pw_uid in uids)
    if taken:
        uid, name = taken[0]
        raise ConfigError(f"EXECUTOR_JOB_UIDS: {uids.start}-{uids.stop - 1} holds uid {uid} of the user {name!r} "
                          f"({len(taken)} user(s) in all): jobs must run as uids no user of this machine has")


def _cgroup_root(prefix: str) -> tuple[CgroupRoot | None, str | None]:
    mounts = _cgroup_mounts()
    own = _own_cgroups()
    v2_mount = mounts.get("cgroup2")
    reasons = []
    if v2_mount is not None and "" in own:
        root, reason = _v2_root(v2_mount / own[""].lstrip("/"), prefix)
        if root is not None:
            return root, None
        reasons.append(reason)
    root, reason = _v1_root(mounts, own, prefix)
    if root is not None:
        return root, None
    reasons.append(reason)
    return None, "; ".join(filter(None, reasons))


def _v2_root(folder: Path, prefix: str) -> tuple[CgroupRoot | None, str]:
    try:
        available = (folder / "cgroup.controllers").read_text().split()
        missing = [name for name in REQUIRED_CONTROLLERS if name not in available]
        if missing:
            return None, f"cgroup v2 at {folder} lacks the {', '.join(missing)} controller(s)"
        wanted = [name for name in V2_CONTROLLERS if name in available]
        enabled = (folder / "cgroup.subtree_control").read_text().split()
        if not set(wanted) <= set(enabled):
            _enable_controllers(folder, wanted)
        _probe(CgroupRoot(2, {name: folder for name in wanted}, prefix))
        return CgroupRoot(2, {name: folder for name in wanted}, prefix), ""
    except OSError as exc:
        return None, (f"cgroup v2 at {folder} is not delegated to the executor ({exc.strerror}); under systemd "
                      "the unit needs Delegate=yes")


def _enable_controllers(folder: Path, controllers: Sequence[str]) -> None:
    """Give the children of a v2 cgroup these controllers, moving the executor into a leaf if need be."""
    enable = " ".join(f"+{name}" for name in controllers)
    try:
        _write(folder / "cgroup.subtree_control", enable)
    except OSError as exc:
        if exc.errno != errno.EBUSY:
            raise
        # v2 gives children controllers only where the parent holds no process: the executor moves
        # into a leaf of its own (systemd's Delegate=yes hands it the subtree for that). Busy still,
        # where other processes share its cgroup: then there are no job cgroups, and the reason says so.
        leaf = folder / "executor"
        leaf.mkdir(exist_ok=True)
        _write(leaf / "cgroup.procs", str(os.getpid()))
        _write(folder / "cgroup.subtree_control", enable)


def _v1_root(mounts: dict[str, Path], own: dict[str, str], prefix: str) -> tuple[CgroupRoot | None, str]:
    missing = [name for name in REQUIRED_CONTROLLERS if name not in mounts or name not in own]
    if missing:
        return None, f"no cgroup v1 {', '.join(missing)} hierarchy is mounted"
    parents = {name: mounts[name] / own[name].lstrip("/") for name in V1_CONTROLLERS if name in mounts and name in own}
    root = CgroupRoot(1, parents, prefix)
    try:
        _probe(root)
    except OSError as exc:
        return None, (f"the cgroup v1 hierarchies cannot be written ({exc.strerror}); run the executor as root, "
                      "under systemd with Delegate=yes")
    return root, ""


def _probe(root: CgroupRoot) -> None:
    """Make and remove one cgroup with limits: proof that jobs' cgroups can be made here."""
    probe = root.create("probe", JobLimits(1 << 30, 64, 100, 1 << 30))
    if not probe.remove():
        raise OSError(16, "the probe cgroup could not be removed")


def _cgroup_mounts() -> dict[str, Path]:
    """Return the mount point of each v1 controller and of the v2 hierarchy ("cgroup2")."""
    mounts: dict[str, Path] = {}
    try:
        lines = Path("/proc/self/mountinfo").read_text().splitlines()
    except OSError:
        return mounts
    for line in lines:
        before, _, after = line.partition(" - ")
        fields, tail = before.split(), after.split()
        if len(fields) < 5 or len(tail) < 3:
            continue
        point = Path(fields[4].replace("\\040", " "))
        if tail[0] == "cgroup2":
            mounts.setdefault("cgroup2", point)
        elif tail[0] == "cgroup":
            for option in tail[2].split(","):
                if option in V1_CONTROLLERS:
                    mounts.setdefault(option, point)
    return mounts


def _own_cgroups() -> dict[str, str]:
    """Return this process's cgroup path per v1 controller, and its v2 path under ""."""
    own: dict[str, str] = {}
    try:
        lines = Path("/proc/self/cgroup").read_text().splitlines()
    except OSError:
        return own
    for line in lines:
        _number, controllers, path = line.split(":", 2)
        for controller in controllers.split(",") if controllers else [""]:
            own[controller] = path
    return own


def _write(path: Path, text: str) -> None:
    descriptor = os.open(path, os.O_WRONLY | getattr(os, "O_NOFOLLOW", 0))
    try:
        os.write(descriptor, text.encode())
    finally:
        os.close(descriptor)


def _write_if_present(path: Path, text: str) -> None:
    if path.exists():
        _write(path, text)
