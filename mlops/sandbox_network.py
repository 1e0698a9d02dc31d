"""The network of sandboxed user code: a namespace of its own, and a way out through slirp4netns.

Every sandboxed process gets a network namespace of its own (bubblewrap's --unshare-net). Its
loopback is its own, so it reaches neither the executor's port, nor a service listening on the
host's loopback, nor another job: TCP, UDP and abstract Unix sockets all live in a namespace.

With EXECUTOR_SANDBOX_NETWORK=true the namespace gets a way out as rootless Podman's containers
do: slirp4netns, a user-mode TCP/IP stack that turns the job's packets into ordinary sockets of the
host. Three things keep that way out from leading back in:
- --disable-host-loopback: the gateway (10.0.2.2) does not lead to the host's 127.0.0.1;
- every address of the host itself (its local routing table: each interface's address and
  broadcast) and the link-local range, where clouds serve instance credentials (169.254.169.254),
  is unreachable inside the namespace. The routes are added before the job's code runs, and the job
  holds no capability that could change them;
- slirp4netns confines itself once attached: a seccomp filter, and where the executor is root, a
  mount namespace of its own without capabilities (--enable-sandbox).

The order at start: bubblewrap makes the namespaces, reports its child's pid (--info-fd) and waits
(--block-fd); once bubblewrap's own netlink work (the loopback) is done, slirp4netns attaches to
that pid's namespace and says when it is ready (--ready-fd); the routes go in; only then is the child released to run user code. bubblewrap's child goes on when
its --block-fd reads end of file, as it does when the executor dies while the child waits: so the
command itself starts behind a gate (GATE), which runs it only on the byte the executor writes once
the sandbox is placed and attached, and on end of file ends without running it. slirp4netns ends when the pipe
it watches (--exit-fd) closes. The other end is held by bubblewrap and the sandbox's processes
alone, so it ends with the last of them, and so with the executor, whose death ends the sandbox.
"""
from __future__ import annotations

import fcntl
import ipaddress
import json
import os
import select
import shutil
import signal
import subprocess
import tempfile
import threading
import time
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Callable, Iterator, Sequence

# The programs user-mode networking needs, and the Debian package of each.
PROGRAMS = {"slirp4netns": "slirp4netns", "nsenter": "util-linux", "ip": "iproute2"}
ATTACH_TIMEOUT_S = 10.0
LOOPBACK_POLL_S = 0.001
# ioctl(2) on a namespace descriptor: a descriptor of the user namespace that owns it (ioctl_ns(2)).
NS_GET_USERNS = 0xB701
# Never reachable from a job: the link-local range holds cloud metadata services, whose
# instance credentials are the executor's, not the job's.
ALWAYS_UNREACHABLE = ("169.254.0.0/16",)
# The kinds of local routing table entries that lead to the host itself.
HOST_ROUTE_TYPES = ("local", "broadcast")
# Run inside the sandbox before the command: it runs the command only once the executor has written
# its byte (Hookup.attach); end of file, the executor dead before the release, ends it unrun.
GATE = ("import os, sys\n"
        "fd = int(sys.argv[1])\n"
        "if os.read(fd, 1) != b'1':\n"
        "    sys.stderr.write('the executor ended before the sandbox was ready; nothing ran\\n')\n"
        "    os._exit(125)\n"
        "os.close(fd)\n"
        "os.execvp(sys.argv[2], sys.argv[2:])\n")
# slirp4netns's DNS forwarder: it asks the host's resolvers, loopback ones included.
SLIRP_DNS = "10.0.2.3"
RESOLV_CONF = Path("/etc/resolv.conf")


class NetworkSetupError(OSError):
    """User-mode networking could not be attached to a sandbox."""


@dataclass(frozen=True)
class UserNetwork:
    """slirp4netns and the tools that attach it to a sandbox's network namespace."""

    slirp4netns: str
    nsenter: str
    ip: str
    #: True when the sandbox has a user namespace of its own (an unprivileged executor): its network
    #: namespace belongs to it, and is entered through it.
    in_user_namespace: bool

    @contextmanager
    def hookup(self) -> Iterator["Hookup"]:
        """Yield the pipes for one sandbox's start; whatever is left of them is closed afterwards."""
        hookup = Hookup(self)
        try:
            yield hookup
        finally:
            hookup.close()

    def attach(self, pid: int, exit_fd: int) -> None:
        """Give the network namespace of process pid its way out, the host's own addresses cut off."""
        # Listed while bubblewrap still sets the namespace up.
        prefixes = host_prefixes(self.ip)
        _wait_for_loopback(pid)
        owner = _owning_user_namespace(pid) if self.in_user_namespace else None
        try:
            self._start_slirp4netns(pid, exit_fd, owner)
            self._cut_off_host(pid, owner, prefixes)
        finally:
            if owner is not None:
                os.close(owner)

    def _start_slirp4netns(self, pid: int, exit_fd: int, owner: int | None) -> None:
        ready_read, ready_write = os.pipe()
        argv = [self.slirp4netns, "--configure", "--disable-host-loopback", "--enable-seccomp",
                "--ready-fd", str(ready_write), "--exit-fd", str(exit_fd)]
        if owner is None:
            # Its own mount namespace and no capabilities once attached; it needs root (or the root
            # of a user namespace, as under rootless Podman) to set that up.
            argv.append("--enable-sandbox")
        else:
            argv.append(f"--userns-path=/proc/self/fd/{owner}")
        argv += [str(pid), "tap0"]
        inherited = (ready_write, exit_fd) if owner is None else (ready_write, exit_fd, owner)
        with tempfile.TemporaryFile() as errors:
            try:
                # A session of its own: a Ctrl+C meant for the executor must not cut its jobs off first.
                slirp = subprocess.Popen(argv, pass_fds=inherited, stdin=subprocess.DEVNULL,
                                         stdout=subprocess.DEVNULL, stderr=errors, start_new_session=True)
            finally:
                os.close(ready_write)
            try:
                ready = _read_until_closed(ready_read, ATTACH_TIMEOUT_S, limit=1)
            finally:
                os.close(ready_read)
            if ready != b"1":
                slirp.kill()
                slirp.wait()
                errors.seek(0)
                detail = errors.read().decode(errors="replace").strip().splitlines()[-1:] or [
                    f"exit code {slirp.returncode}"]
                raise NetworkSetupError(f"slirp4netns could not attach to the sandbox: {detail[0]}")
        threading.Thread(target=slirp.wait, name=f"slirp4netns-{pid}", daemon=True).start()

    def _cut_off_host(self, pid: int, owner: int | None, prefixes: list[str]) -> None:
        """Make each prefix (the host's addresses) unreachable inside the namespace of process pid."""
        commands = "".join(f"route add unreachable {prefix}\n" for prefix in prefixes)
        enter = [self.nsenter, f"--net=/proc/{pid}/ns/net"]
        if owner is not None:
            enter[1:1] = [f"--user=/proc/self/fd/{owner}", "--preserve-credentials"]
        try:
            done = subprocess.run([*enter, self.ip, "-batch", "-"], input=commands, capture_output=True, text=True,
                                  timeout=ATTACH_TIMEOUT_S, pass_fds=() if owner is None else (owner,))
        except (OSError, subprocess.TimeoutExpired) as exc:
            raise NetworkSetupError(f"the sandbox's routes could not be set: {exc}") from None
        if done.returncode != 0:
            raise NetworkSetupError(f"the sandbox's routes could not be set: {done.stderr.strip()[-300:]}")


class Hookup:
    """The pipes between the executor, bubblewrap and slirp4netns while one sandbox starts.

    Without a network (None) it only holds the sandbox until the job's limits are in place.
    """

    def __init__(self, network: UserNetwork | None):
        self.network = network
        self._info_read, self._info_write = os.pipe()
        self._block_read, self._block_write = os.pipe()
        # The gate's pipe: its write end stays with the executor alone (close-on-exec, never passed).
        self._gate_read, self._gate_write = os.pipe()
        self._open = {self._info_read, self._info_write, self._block_read, self._block_write, self._gate_read,
                      self._gate_write}
        self._exit_read = self._exit_write = -1
        self._resolver: int | None = None
        if network is None:
            return
        self._exit_read, self._exit_write = os.pipe()
        self._open |= {self._exit_read, self._exit_write}
        resolv_conf = sandbox_resolv_conf(_read_text(RESOLV_CONF))
        if resolv_conf is not None:
            # A few hundred bytes: the pipe holds them until bubblewrap reads them (--ro-bind-data).
            self._resolver, resolver_write = os.pipe()
            self._open.add(self._resolver)
            os.write(resolver_write, resolv_conf.encode())
            os.close(resolver_write)

    @property
    def bwrap_options(self) -> list[str]:
        """Return bubblewrap's options: report the child's pid, hold it until released, its resolv.conf."""
        options = ["--info-fd", str(self._info_write), "--block-fd", str(self._block_read)]
        if self._resolver is not None:
            # Over the file itself: /etc/resolv.conf may be a link into /run (systemd-resolved).
            options += ["--perms", "0644", "--ro-bind-data", str(self._resolver), os.path.realpath(RESOLV_CONF)]
        return options

    def gate(self, python: str) -> list[str]:
        """Return the command that runs the argv after it only once the executor releases the sandbox."""
        return [python, "-I", "-S", "-c", GATE, str(self._gate_read)]

    @property
    def child_fds(self) -> tuple[int, ...]:
        """Return the descriptors bubblewrap inherits: the two above, the gate's, the end slirp4netns lives by, a resolv.conf."""
        if self.network is None:
            return self._info_write, self._block_read, self._gate_read
        fds = (self._info_write, self._block_read, self._gate_read, self._exit_write)
        return fds if self._resolver is None else (*fds, self._resolver)

    def attach(self, process: subprocess.Popen, place: Callable[[Sequence[int]], None] | None = None) -> None:
        """Place bubblewrap's processes (place: under the job's limits), attach the network, then let it run.

        Killed if either fails."""
        for fd in self.child_fds:
            self._close(fd)
        try:
            info = _read_until_closed(self._info_read, ATTACH_TIMEOUT_S, limit=4096)
            try:
                pid = int(json.loads(info)["child-pid"])
            except (ValueError, KeyError, TypeError):
                raise NetworkSetupError("bubblewrap did not report its sandbox's pid "
                                        f"(exit code {process.poll()})") from None
            # The child brings its loopback up once bubblewrap has let it go on (bubblewrap.c:
            # child_wait_fd). Were the executor to die before that, bubblewrap would die with it and its
            # child wait forever; past it, the child waits on --block-fd and the gate, which end it.
            _wait_for_loopback(pid)
            if place is not None:
                # Both of bubblewrap's processes, before its child forks anything or runs user code.
                place([process.pid, pid])
            if self.network is not None:
                self.network.attach(pid, self._exit_read)
        except BaseException:
            # Killed before the release: its child never runs user code without its network set up.
            _kill_unreleased(process)
            raise
        os.write(self._gate_write, b"1")
        os.write(self._block_write, b"1")

    def close(self) -> None:
        """Close what the executor still holds of the pipes."""
        for fd in list(self._open):
            self._close(fd)

    def _close(self, fd: int) -> None:
        if fd in self._open:
            self._open.discard(fd)
            os.close(fd)


def _kill_unreleased(process: subprocess.Popen) -> None:
    """Kill bubblewrap and its waiting child: the child, left alone, waits for its parent forever.

    Until released the child has not left bubblewrap's process group (--new-session comes later), so
    the group holds both where bubblewrap leads one; killing bubblewrap alone orphans a child blocked
    on a read that nothing will answer.
    """
    try:
        if os.getpgid(process.pid) == process.pid:
            os.killpg(process.pid, signal.SIGKILL)
    except (ProcessLookupError, PermissionError):
        pass
    process.kill()
    process.wait()


def find_user_network(in_user_namespace: bool) -> tuple[UserNetwork | None, str | None]:
    """Find the programs user-mode networking needs; return it, or None and what is missing."""
    found = {name: shutil.which(name) or shutil.which(name, path="/usr/sbin:/sbin") for name in PROGRAMS}
    missing = [name for name, path in found.items() if path is None]
    if missing:
        packages = " ".join(sorted({PROGRAMS[name] for name in missing}))
        return None, f"{', '.join(missing)} not installed (apt-get install {packages})"
    return UserNetwork(found["slirp4netns"], found["nsenter"], found["ip"], in_user_namespace), None


def host_prefixes(ip: str) -> list[str]:
    """Return the IPv4 prefixes that lead to this host (its local routing table, loopback aside), and link-local."""
    try:
        listed = subprocess.run([ip, "-4", "-json", "route", "show", "table", "local"], capture_output=True,
                                text=True, timeout=ATTACH_TIMEOUT_S, check=True)
        entries = json.loads(listed.stdout or "[]")
    except (OSError, subprocess.SubprocessError, ValueError) as exc:
        raise NetworkSetupError(f"the host's addresses could not be listed: {exc}") from None
    prefixes = {str(ipaddress.ip_network(entry["dst"], strict=False)) for entry in entries
                if entry.get("type") in HOST_ROUTE_TYPES and entry.get("dst") not in (None, "default")}
    prefixes = {prefix for prefix in prefixes if not ipaddress.ip_network(prefix).is_loopback}
    return sorted(prefixes | set(ALWAYS_UNREACHABLE))


def sandbox_resolv_conf(host: str | None) -> str | None:
    """Return the resolv.conf a sandbox with a way out needs, or None where the host's serves it.

    A resolver on the host's loopback (systemd-resolved's 127.0.0.53) is not on the sandbox's own
    loopback: its place is taken by slirp4netns's forwarder, which asks it on the job's behalf.
    """
    if host is None:
        return None
    lines = host.splitlines()
    servers = [line.split()[1] for line in lines if line.split()[:1] == ["nameserver"] and len(line.split()) > 1]
    loopback = [server for server in servers if _is_loopback(server)]
    if not loopback:
        return None
    kept = [line for line in lines
            if not (line.split()[:1] == ["nameserver"] and len(line.split()) > 1 and _is_loopback(line.split()[1]))]
    return f"nameserver {SLIRP_DNS}\n" + "".join(f"{line}\n" for line in kept)


def _is_loopback(address: str) -> bool:
    try:
        return ipaddress.ip_address(address.split("%")[0]).is_loopback
    except ValueError:
        return False


def _read_text(path: Path) -> str | None:
    try:
        return path.read_text(encoding="utf-8", errors="replace")
    except OSError:
        return None


def _wait_for_loopback(pid: int) -> None:
    """Wait until bubblewrap has brought up the namespace's loopback: its netlink work is done then."""
    deadline = time.monotonic() + ATTACH_TIMEOUT_S
    while True:
        try:
            with open(f"/proc/{pid}/net/fib_trie", encoding="ascii", errors="replace") as table:
                # The kernel adds the local route of 127.0.0.1 once lo has its address and is up.
                if "127.0.0.1" in table.read():
                    return
        except OSError as exc:
            raise NetworkSetupError(f"the sandbox ended before its network was attached: {exc}") from None
        if time.monotonic() > deadline:
            raise NetworkSetupError(f"the sandbox's loopback was not up within {ATTACH_TIMEOUT_S:g} s")
        time.sleep(LOOPBACK_POLL_S)


def _owning_user_namespace(pid: int) -> int:
    """Return a descriptor of the user namespace that owns process pid's network namespace.

    bubblewrap's --disable-userns moves the sandbox into a nested user namespace, which holds no
    power over the network namespace: slirp4netns and the routes must enter the outer one.
    """
    net = os.open(f"/proc/{pid}/ns/net", os.O_RDONLY | os.O_CLOEXEC)
    try:
        return fcntl.ioctl(net, NS_GET_USERNS)
    except OSError as exc:
        raise NetworkSetupError(f"the sandbox's user namespace could not be found: {exc}") from None
    finally:
        os.close(net)


def _read_until_closed(fd: int, timeout: float, limit: int) -> bytes:
    """Read a pipe until its writers close it, limit bytes are in, or the time is up."""
    deadline = time.monotonic() + timeout
    data = b""
    while len(data) < limit:
        left = deadline - time.monotonic()
        if left <= 0 or not select.select([fd], [], [], left)[0]:
            raise NetworkSetupError(f"no answer within {timeout:g} s while attaching the sandbox's network")
        chunk = os.read(fd, limit - len(data))
        if not chunk:
            break
        data += chunk
    return data
