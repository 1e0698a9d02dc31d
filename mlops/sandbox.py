"""The sandbox every process that runs user code starts in: bubblewrap on Linux.

Inside it a job sees the system's programs and libraries read-only, the interpreter, its own
container folders (the only place it may write), a private /tmp (a folder of the job's on disk, where
given), /proc of its own PID namespace and nothing of the
executor: not its data folder (database, key file, other jobs), not the storage root, not its secret
files, not its environment. It never runs as root: an executor running as root hands each job and
model worker a uid/gid of its own (EXECUTOR_JOB_UIDS, leased by mlops/local/limits.py); an
unprivileged executor's jobs keep its uid inside a user namespace. The whole tree dies with its first process (the PID namespace's init) and with the
executor (--die-with-parent), daemons and double forks included.

Where there is no bubblewrap (Windows, a host without it, EXECUTOR_SANDBOX=off) the process starts
bare, and stopping the job kills its tree by other means (mlops/local/processes.py).
"""
from __future__ import annotations

import functools
import glob
import json
import logging
import os
import shutil
import subprocess
import sys
import threading
from contextlib import closing
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any, Callable, Iterable, Sequence

from config import Config, ConfigError
from mlops.sandbox_network import Hookup, UserNetwork, find_user_network

logger = logging.getLogger(__name__)

# Read-only everywhere: programs, libraries and /etc (DNS, CA certificates, the user database).
SYSTEM_FOLDERS = ("/usr", "/etc", "/bin", "/sbin", "/lib", "/lib32", "/lib64", "/libx32", "/sys")
# A resolv.conf that points into /run (systemd-resolved) needs its target.
RUNTIME_FOLDERS = ("/run/systemd/resolve",)
# Only while the executor is root: bubblewrap keeps these for setpriv, which drops them with the uid.
SETPRIV_CAPABILITIES = ("CAP_SETUID", "CAP_SETGID", "CAP_SETPCAP")
PROBE_TIMEOUT_S = 30
UNISOLATED = (f"{sys.platform} has no namespaces: user code runs as the executor's user and can read and write "
              "what it can (the data folder with its database and key file, other jobs' folders, the storage "
              "root); its environment still holds only the job's contract, and its whole process tree is "
              "still ended at stop, max runtime and shutdown")

_detected: dict[tuple, "Sandbox"] = {}
_detect_lock = threading.Lock()


@dataclass(frozen=True)
class Sandbox:
    """How to start a process that runs user code; `missing` says why there is no isolation."""

    bwrap: str | None
    setpriv: str | None = None
    identity: tuple[int, int] | None = None
    #: The way out of the sandbox's own network namespace; None: loopback only.
    network: UserNetwork | None = None
    #: Why there is no way out although EXECUTOR_SANDBOX_NETWORK asks for one.
    network_missing: str | None = None
    visible: tuple[Path, ...] = ()
    hidden: tuple[Path, ...] = ()
    missing: str | None = None
    devices: tuple[str, ...] = ()
    #: The interpreter the sandbox shows (EXECUTOR_PYTHON): it runs the gate of a held start.
    python: str | None = None

    @property
    def isolating(self) -> bool:
        """True when user code runs inside bubblewrap."""
        return self.bwrap is not None

    def start(self, argv: Sequence[str], *, cwd: Path, writable: Iterable[Path] = (), readable: Iterable[Path] = (),
              read_only: Iterable[Path] = (), tmp: Path | None = None, enter: Sequence[str] = (),
              place: Callable[[Sequence[int]], None] | None = None, **options: Any) -> subprocess.Popen:
        """Start argv in the sandbox, under the job's limits and with its network before argv runs.

        Bare, enter is the command that starts argv under the limits (mlops/local/enter_limits.py); in
        bubblewrap, place puts its processes under them while its child waits. options go to Popen."""
        if self.bwrap is None:
            return subprocess.Popen([*enter, *argv], cwd=cwd, **options)
        folders = {"writable": writable, "readable": readable, "read_only": read_only, "tmp": tmp}
        if self.network is None and place is None:
            return subprocess.Popen(self.wrap(argv, cwd=cwd, **folders), cwd=cwd, **options)
        with self.network.hookup() if self.network is not None else closing(Hookup(None)) as hookup:
            gated = [*hookup.gate(self.python or sys.executable), *argv]
            process = subprocess.Popen(self.wrap(gated, cwd=cwd, attach=hookup.bwrap_options, **folders),
                                       cwd=cwd, pass_fds=hookup.child_fds, **options)
            hookup.attach(process, place)
        return process

    def wrap(self, argv: Sequence[str], *, cwd: Path, writable: Iterable[Path] = (), readable: Iterable[Path] = (),
             read_only: Iterable[Path] = (), attach: Sequence[str] = (), tmp: Path | None = None) -> list[str]:
        """Return the argv that runs argv in the sandbox, loopback its only network, tmp (else a tmpfs) its /tmp.

        read_only: folders inside writable ones that the job may only read (a dataset snapshot of hard
        links: a write through one would change the dataset). attach: bubblewrap options of the network's hookup."""
        if self.bwrap is None:
            return list(argv)
        # A network namespace of its own, always: the host's loopback, its other services and the
        # other jobs are out of reach; a way out, if any, is attached by start().
        args = [self.bwrap, "--die-with-parent", "--new-session", "--unshare-pid", "--unshare-ipc", "--unshare-net"]
        if self.identity is None:
            # Unprivileged: namespaces come with a user namespace, in which no nested one may be made.
            args += ["--unshare-user", "--disable-userns"]
        for folder in SYSTEM_FOLDERS + RUNTIME_FOLDERS:
            args += _system_mount(Path(folder))
        # A /dev/shm of its own that it may write: PyTorch data loaders pass batches through it.
        args += ["--proc", "/proc", "--dev", "/dev", "--perms", "1777", "--tmpfs", "/dev/shm"]
        # A tmpfs is RAM: a job's /tmp is a folder of its own on disk, counted in its disk use.
        args += ["--bind", str(tmp), "/tmp"] if tmp is not None else ["--perms", "1777", "--tmpfs", "/tmp"]
        mounted: set[Path] = {Path("/tmp")}
        for folder in self.visible:
            args += _mount("--ro-bind", folder, mounted)
        for device in self.devices:
            args += ["--dev-bind", device, device]
        for path in self.hidden:
            args += _hide(path, self.visible)
        for folder in readable:
            args += _mount("--ro-bind", Path(folder), mounted)
        for folder in writable:
            args += _mount("--bind", Path(folder), mounted)
        # After the writable folders they lie in: the later mount is the one the job sees.
        for folder in read_only:
            args += ["--ro-bind", str(folder), str(folder)]
        # Last: a file the network brings (a resolv.conf) lies over what the folders above show.
        args += [*attach, "--chdir", str(cwd)]
        if self.identity is not None:
            uid, gid = self.identity
            for capability in SETPRIV_CAPABILITIES:
                args += ["--cap-add", capability]
            return [*args, "--", self.setpriv or "setpriv", f"--reuid={uid}", f"--regid={gid}", "--clear-groups",
                    "--inh-caps=-all", "--bounding-set=-all", "--", *argv]
        return [*args, "--", *argv]

    def as_user(self, uid: int | None) -> "Sandbox":
        """Return this sandbox running user code as uid (and gid uid); unchanged for None or when not root."""
        if uid is None or self.identity is None:
            return self
        return replace(self, identity=(uid, uid))

    def hand_over(self, folder: Path) -> None:
        """Give a folder the sandbox writes to its identity (no-op unless the executor is root).

        A file of several hard links keeps its owner: it is shared (a dataset snapshot), and its other
        names must not change hands."""
        if self.identity is None or self.bwrap is None:
            return
        uid, gid = self.identity
        for root, folders, files in os.walk(folder):
            for name in folders:
                os.chown(os.path.join(root, name), uid, gid, follow_symlinks=False)
            for name in files:
                path = os.path.join(root, name)
                if os.lstat(path).st_nlink == 1:
                    os.chown(path, uid, gid, follow_symlinks=False)
        os.chown(folder, uid, gid, follow_symlinks=False)

    def describe(self) -> str:
        """Say in one line how user code is isolated."""
        if self.bwrap is None:
            return f"user code is NOT isolated: {self.missing}"
        who = "a uid of its own" if self.identity else "the executor's uid in a user namespace"
        if self.network is not None:
            network = ("with network through slirp4netns; the host's loopback, its own addresses and "
                       "link-local addresses are out of reach")
        elif self.network_missing:
            network = f"WITHOUT network although EXECUTOR_SANDBOX_NETWORK=true: {self.network_missing}"
        else:
            network = "without network (EXECUTOR_SANDBOX_NETWORK=false): loopback of its own only"
        return f"user code runs in bubblewrap as {who}, {network}"


def sandbox_for(config: Config) -> Sandbox:
    """Return the sandbox of a configuration, detected once and said at start-up."""
    key = (config.sandbox, config.sandbox_network, config.job_uids, config.python, config.data_dir,
           config.storage_root, config.values.get("secret_files", ()), config.trusted_proxy)
    with _detect_lock:
        if key not in _detected:
            found = detect(config)
            if found.isolating and not found.network_missing:
                logger.info("%s", found.describe())
            else:
                logger.warning("%s", found.describe())
            _detected[key] = found
        return _detected[key]


def detect(config: Config) -> Sandbox:
    """Find bubblewrap and prove it works here; raise ConfigError when the sandbox is required but missing."""
    if config.sandbox == "off":
        return Sandbox(None, missing="EXECUTOR_SANDBOX=off")
    sandbox = _linux_sandbox(config) if sys.platform.startswith("linux") else Sandbox(None, missing=UNISOLATED)
    if sandbox.bwrap is None and config.sandbox == "required":
        raise ConfigError(f"EXECUTOR_SANDBOX=required: {sandbox.missing}")
    if sandbox.network_missing and config.sandbox == "required":
        raise ConfigError(f"EXECUTOR_SANDBOX=required with EXECUTOR_SANDBOX_NETWORK=true: {sandbox.network_missing}; "
                          "or set EXECUTOR_SANDBOX_NETWORK=false to run jobs with loopback only")
    return sandbox


def _linux_sandbox(config: Config) -> Sandbox:
    bwrap = shutil.which("bwrap")
    if bwrap is None:
        return Sandbox(None, missing="bubblewrap is not installed (apt-get install bubblewrap)")
    root = os.geteuid() == 0
    setpriv = shutil.which("setpriv") if root else None
    # It runs inside the sandbox, which shows the system's folders but not a link to it elsewhere.
    setpriv = os.path.realpath(setpriv) if setpriv else None
    if root and setpriv is None:
        return Sandbox(None, missing="setpriv is not installed (util-linux); the executor runs as root")
    python = config.python or sys.executable
    machine = Sandbox(bwrap, setpriv, _first_identity(config) if root else None,
                      visible=interpreter_folders(python), python=python, devices=tuple(sorted(glob.glob("/dev/nvidia*"))))
    failure = _probe(machine, python)
    if failure:
        return Sandbox(None, missing=failure)
    if config.sandbox_network:
        machine = _with_network(machine, python, in_user_namespace=not root)
    # The proxy's socket: whoever connects to it is believed about the client's address.
    proxy_socket = (config.trusted_proxy,) if isinstance(config.trusted_proxy, Path) else ()
    named = (config.data_dir, config.storage_root, *config.values.get("secret_files", ()), *proxy_socket)
    # Each at its real path too: a path through a link may lead into a folder the sandbox shows.
    hidden = tuple(dict.fromkeys(path for name in named for path in (Path(name), Path(os.path.realpath(name)))))
    return replace(machine, hidden=hidden)


def _with_network(machine: Sandbox, python: str, in_user_namespace: bool) -> Sandbox:
    """Give the sandbox its way out when user-mode networking works here, else say why not."""
    network, missing = find_user_network(in_user_namespace)
    if network is not None:
        failure = _probe(replace(machine, network=network), python)
        if failure is None:
            return replace(machine, network=network)
        missing = f"user-mode networking fails here ({failure})"
    return replace(machine, network_missing=missing)


def _first_identity(config: Config) -> tuple[int, int]:
    """Return the identity the probe runs as; each job then gets its own (Sandbox.as_user)."""
    return config.job_uids.start, config.job_uids.start


@functools.lru_cache(maxsize=None)
def _probe(sandbox: Sandbox, python: str) -> str | None:
    """Start the interpreter in the sandbox (once per machine setup); return why it failed, or None."""
    try:
        probe = sandbox.start([python, "-c", "import sys"], cwd=Path("/"), stdin=subprocess.DEVNULL,
                              stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env={"PATH": "/usr/bin:/bin"})
        try:
            stderr = probe.communicate(timeout=PROBE_TIMEOUT_S)[1]
        finally:
            probe.kill()
            probe.wait()
    except (OSError, subprocess.TimeoutExpired) as exc:
        return f"bubblewrap could not start: {exc}"
    if probe.returncode != 0:
        detail = stderr.strip().splitlines()[-1:] or [f"exit code {probe.returncode}"]
        return (f"bubblewrap fails here ({detail[0]}); user namespaces may be disabled "
                "(kernel.unprivileged_userns_clone, RestrictNamespaces=)")
    return None


@functools.lru_cache(maxsize=None)
def interpreter_folders(python: str) -> tuple[Path, ...]:
    """Return the folders an interpreter reads: its prefixes and the folders on its path."""
    completed = subprocess.run(
        [python, "-I", "-c", "import json, sys; print(json.dumps([sys.prefix, sys.base_prefix, *sys.path]))"],
        capture_output=True, text=True, stdin=subprocess.DEVNULL, timeout=PROBE_TIMEOUT_S,
        env={"PATH": os.environ.get("PATH", "/usr/bin:/bin")})
    if completed.returncode != 0:
        raise ConfigError(f"EXECUTOR_PYTHON: {python} does not run: {completed.stderr.strip()[-300:]}")
    folders = [Path(python).parent.parent, Path(python).resolve().parent.parent]
    folders += [Path(entry) for entry in json.loads(completed.stdout) if entry]
    system = [Path(folder) for folder in SYSTEM_FOLDERS]
    return _outermost(folder for folder in folders if folder.exists() and folder != Path("/")
                      and not any(folder == root or root in folder.parents for root in system))


def _outermost(folders: Iterable[Path]) -> tuple[Path, ...]:
    """Drop folders inside another of the list: mounting the outer one shows them."""
    result: list[Path] = []
    for folder in sorted({folder.resolve() if folder.is_symlink() else folder for folder in folders},
                         key=lambda path: len(path.parts)):
        if not any(folder == kept or kept in folder.parents for kept in result):
            result.append(folder)
    return tuple(result)


def _system_mount(folder: Path) -> list[str]:
    """Mount a system folder read-only, or recreate it as the link it is (/lib -> usr/lib)."""
    if folder.is_symlink():
        return ["--symlink", os.readlink(folder), str(folder)]
    if folder.is_dir():
        return ["--ro-bind", str(folder), str(folder)]
    return []


def _mount(option: str, folder: Path, mounted: set[Path]) -> list[str]:
    """Bind a folder at its own path, after making its missing parents traversable (0755)."""
    args: list[str] = []
    # bubblewrap makes missing parents 0700 (root's), which a dropped uid could not pass.
    for parent in reversed(folder.parents):
        if parent != Path("/") and parent not in mounted and str(parent) not in SYSTEM_FOLDERS:
            args += ["--perms", "0755", "--dir", str(parent)]
            mounted.add(parent)
    return [*args, option, str(folder), str(folder)]


def _hide(path: Path, visible: Sequence[Path]) -> list[str]:
    """Cover a path that a visible folder would show with an empty one."""
    inside = any(path == folder or folder in path.parents for folder in visible)
    inside = inside or any(Path(folder) in path.parents for folder in SYSTEM_FOLDERS)
    if not inside or not path.exists():
        return []
    if path.is_dir():
        return ["--tmpfs", str(path)]
    return ["--dev-bind", "/dev/null", str(path)]
