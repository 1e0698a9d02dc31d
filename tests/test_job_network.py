"""What a job can reach over the network, tried by hostile jobs against a real service, network on and off.

Every test runs real jobs in the sandbox the executor builds by default (bubblewrap, and slirp4netns
where the network is on) against a real executor: waitress on a free loopback port in this process,
or `python app.py`. Each attack runs once with EXECUTOR_SANDBOX_NETWORK=true and once with false;
a test skips, saying why, where its sandbox cannot be had here. docs/security.md lists what each proves.
"""
from __future__ import annotations

import ipaddress
import json
import os
import random
import shutil
import socket
import subprocess
import sys
import tempfile
import textwrap
import time
import uuid
from contextlib import contextmanager
from pathlib import Path
from typing import Any, Iterator

import psutil
import pytest

from config import load_config
from conftest import ROOT, pipeline_body, wait_final, wait_for, write_pipeline
from helpers_service import AUTH, TOKEN
from mlops import sandbox_network
from mlops.sandbox import detect

NETWORK = pytest.mark.parametrize("network", ["on", "off"])


def sandbox_or_skip(data_dir: Path, network: str) -> None:
    """Skip unless the default sandbox, with this network setting, works here."""
    found = detect(load_config(environ={}, overrides={"data_dir": str(data_dir), "sandbox_network": _flag(network)}))
    if not found.isolating:
        pytest.skip(f"no sandbox here: {found.missing}")
    if network == "on" and found.network is None:
        pytest.skip(f"no user-mode networking here: {found.network_missing}")


def _flag(network: str) -> str:
    return "true" if network == "on" else "false"


def run_job(server: Any, script: str, headers: dict[str, str] | None = None, timeout: float = 60) -> dict[str, Any]:
    """Run a pipeline script to its end (it must complete); return the JSON it printed last."""
    job_id = start_job(server, script, headers)
    final = wait_final_as(server, job_id, headers, timeout)
    log = job_log(server, job_id, headers)
    assert final["task_status"] == "COMPLETED", log
    return json.loads([line for line in log.splitlines() if line.startswith("{")][-1])


def start_job(server: Any, script: str, headers: dict[str, str] | None = None,
              storage_root: Path | None = None) -> str:
    folder = f"net-{uuid.uuid4().hex[:8]}"
    write_pipeline(storage_root or server.storage_root, folder, textwrap.dedent(script))
    status, body = server.request("POST", "/execute", pipeline_body(folder, "python pipe1.py"), headers=headers)
    assert status == 201, body
    return body["task_id"]


def wait_final_as(server: Any, job_id: str, headers: dict[str, str] | None, timeout: float = 60) -> dict[str, Any]:
    return wait_for(lambda: (body := server.request("GET", f"/execute/{job_id}/getStatus", headers=headers)[1])
                    ["task_status"] in ("COMPLETED", "ERROR", "CANCELLED") and body, timeout=timeout, interval=0.1)


def job_log(server: Any, job_id: str, headers: dict[str, str] | None = None) -> str:
    return server.request("GET", f"/execute/{job_id}/getLog", headers=headers)[1]["logs"]["content"]


def host_addresses(family: socket.AddressFamily = socket.AF_INET) -> list[str]:
    """This host's addresses of a family, loopback and link-local aside."""
    found = {entry.address.split("%")[0] for entries in psutil.net_if_addrs().values() for entry in entries
             if entry.family == family}
    return sorted(address for address in found
                  if not ipaddress.ip_address(address).is_loopback and not ipaddress.ip_address(address).is_link_local)


# Tries a TCP connection to each target; reports "connected" or the error, as JSON.
CONNECT = """
import json, socket
results = {{}}
for host, port in {targets!r}:
    try:
        socket.create_connection((host, port), timeout=3).close()
        results[f"{{host}}:{{port}}"] = "connected"
    except OSError as exc:
        results[f"{{host}}:{{port}}"] = f"{{type(exc).__name__}}: {{exc}}"
print(json.dumps(results), flush=True)
"""


@NETWORK
def test_a_job_cannot_reach_the_executor_on_any_address_of_the_host(service, tmp_path, network):
    # The executor listens on every address, and trusts loopback without a token: the juiciest
    # target a job could find. A proxy socket is configured too: the job must not find it either.
    data_dir = tmp_path / "data"
    sandbox_or_skip(data_dir, network)
    proxy_socket = tmp_path / "run" / "executor.sock"
    proxy_socket.parent.mkdir()
    proc = service(data_dir, args=["--host", "0.0.0.0"], env={
        "EXECUTOR_API_TOKEN": TOKEN, "EXECUTOR_TRUSTED_NETWORKS": "127.0.0.0/8",
        "EXECUTOR_TRUSTED_PROXY": str(proxy_socket), "EXECUTOR_SANDBOX_NETWORK": _flag(network)})
    port = int(proc.url.rsplit(":", 1)[1])
    # slirp4netns's gateway would lead to the host's loopback if it were not disabled.
    targets = [("127.0.0.1", port), ("10.0.2.2", port), *((address, port) for address in host_addresses())]
    # Each of these answers the test itself: the executor really is there for anyone but a job.
    assert proc.request("GET", "/execute")[0] == 200
    for address in host_addresses():
        socket.create_connection((address, port), timeout=5).close()
    script = CONNECT.format(targets=targets) + textwrap.dedent(f"""
        try:
            probe = socket.socket(socket.AF_UNIX)
            probe.connect({str(proxy_socket)!r})
            print(json.dumps({{"proxy socket": "connected"}}))
        except OSError as exc:
            print(json.dumps({{"proxy socket": type(exc).__name__}}))
    """)
    job_id = start_job(proc, script, AUTH, storage_root=data_dir / "storage")
    assert wait_final_as(proc, job_id, AUTH)["task_status"] == "COMPLETED"
    reports = [json.loads(line) for line in job_log(proc, job_id, AUTH).splitlines() if line.startswith("{")]
    reached, proxy = reports
    assert set(reached) == {f"{host}:{port}" for host, port in targets}
    assert not [target for target, outcome in reached.items() if outcome == "connected"], reached
    assert proxy == {"proxy socket": "FileNotFoundError"}
    assert proc.terminate() == 0


@NETWORK
def test_a_job_cannot_reach_another_service_of_the_host_on_any_address(live_server, data_dir, network):
    sandbox_or_skip(data_dir, network)
    server = live_server(sandbox_network=_flag(network))
    # A service on every address of the host, IPv4 and IPv6, and a UDP one on its loopback.
    tcp = socket.create_server(("", 0), family=socket.AF_INET6, dualstack_ipv6=True)
    port = tcp.getsockname()[1]
    udp = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    udp.bind(("127.0.0.1", 0))
    udp.setblocking(False)
    targets = [(address, port) for address in ("127.0.0.1", "::1", *host_addresses(socket.AF_INET6),
                                               *host_addresses())]
    try:
        for target in targets:  # the host itself reaches each of them
            socket.create_connection(target, timeout=5).close()
            tcp.accept()[0].close()
        script = CONNECT.format(targets=targets).replace("print(json.dumps(results)", textwrap.dedent(f"""
            datagram = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
            try:
                datagram.sendto(b"from a job", ("127.0.0.1", {udp.getsockname()[1]}))
                results["udp"] = "sent"
            except OSError as exc:
                results["udp"] = type(exc).__name__
            print(json.dumps(results)"""))
        reached = run_job(server, script)
        # Sent into its own loopback, where nobody listens: the host's service gets nothing.
        assert reached.pop("udp") == "sent"
        with pytest.raises(BlockingIOError):
            udp.recvfrom(100)
        assert len(reached) == len(targets)
        assert not [target for target, outcome in reached.items() if outcome == "connected"], reached
        tcp.setblocking(False)
        with pytest.raises(BlockingIOError):
            tcp.accept()
    finally:
        tcp.close()
        udp.close()


# Listens on loopback TCP and UDP and on an abstract Unix socket; proves to itself that each works,
# then reports every contact from anyone else until it is stopped.
LISTENER = """
import json, select, socket, time
tcp = socket.create_server(("127.0.0.1", {port}))
udp = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
udp.bind(("127.0.0.1", {port}))
abstract = socket.socket(socket.AF_UNIX)
abstract.bind("\\0{name}")
abstract.listen()
own = [socket.create_connection(("127.0.0.1", {port})), socket.socket(socket.AF_UNIX)]
own[1].connect("\\0{name}")
socket.socket(socket.AF_INET, socket.SOCK_DGRAM).sendto(b"self", ("127.0.0.1", {port}))
seen = {{"tcp": tcp.accept()[0] is not None, "abstract": abstract.accept()[0] is not None,
        "udp": udp.recvfrom(100)[0] == b"self"}}
print(json.dumps({{"self-test": seen}}), flush=True)
deadline = time.monotonic() + 60
while time.monotonic() < deadline:
    for ready in select.select([tcp, udp, abstract], [], [], 0.2)[0]:
        print("CONTACT", "udp" if ready is udp else ("tcp" if ready is tcp else "abstract"), flush=True)
        if ready is udp:
            udp.recvfrom(100)
        else:
            ready.accept()[0].close()
"""

# Tries the listener's three doors.
KNOCKER = """
import json, socket
results = {{}}
try:
    socket.create_connection(("127.0.0.1", {port}), timeout=3).close()
    results["tcp"] = "connected"
except OSError as exc:
    results["tcp"] = type(exc).__name__
try:
    probe = socket.socket(socket.AF_UNIX)
    probe.connect("\\0{name}")
    results["abstract"] = "connected"
except OSError as exc:
    results["abstract"] = type(exc).__name__
socket.socket(socket.AF_INET, socket.SOCK_DGRAM).sendto(b"knock", ("127.0.0.1", {port}))
print(json.dumps(results), flush=True)
"""


@NETWORK
def test_two_jobs_running_at_once_cannot_reach_each_other(live_server, data_dir, network):
    sandbox_or_skip(data_dir, network)
    server = live_server(sandbox_network=_flag(network), workers="2")
    doors = {"port": random.randint(20000, 60000), "name": f"executor-test-{uuid.uuid4().hex[:8]}"}
    listener = start_job(server, LISTENER.format(**doors))
    wait_for(lambda: "self-test" in job_log(server, listener), timeout=30)
    try:
        knocked = run_job(server, KNOCKER.format(**doors))
    finally:
        server.request("POST", f"/execute/{listener}/stop")
    wait_final(server, listener)
    log = job_log(server, listener)
    self_test = json.loads(next(line for line in log.splitlines() if line.startswith('{"self-test"')))
    assert self_test == {"self-test": {"tcp": True, "abstract": True, "udp": True}}, log
    assert knocked == {"tcp": "ConnectionRefusedError", "abstract": "ConnectionRefusedError"}
    assert "CONTACT" not in log


@NETWORK
def test_a_job_cannot_reach_the_host_nor_link_local_nor_change_its_routes(live_server, data_dir, network):
    sandbox_or_skip(data_dir, network)
    ip = shutil.which("ip") or shutil.which("ip", path="/usr/sbin:/sbin")
    if ip is None:
        pytest.skip("iproute2 is not installed")
    server = live_server(sandbox_network=_flag(network))
    targets = [("169.254.169.254", 80), *((address, 22) for address in host_addresses())]
    script = CONNECT.format(targets=targets).replace("print(json.dumps(results)", textwrap.dedent(f"""
        import subprocess
        for verb in ("del", "add"):
            for target in {[address for address, _ in targets]!r}:
                done = subprocess.run([{ip!r}, "route", verb, "unreachable", target], capture_output=True, text=True)
                results[f"route {{verb}} {{target}}"] = done.returncode == 0 or done.stderr.strip()
        print(json.dumps(results)"""))
    reached = run_job(server, script)
    for host, port in targets:
        assert reached.pop(f"{host}:{port}") != "connected"
    assert reached and all("Operation not permitted" in str(outcome) for outcome in reached.values()), reached


# Serves one line, naming the peer it sees, to every connection; runs in a network namespace of its own.
OUTSIDE_SERVER = """
import socket
server = socket.create_server(("0.0.0.0", 8080))
print("ready", flush=True)
while True:
    connection, peer = server.accept()
    connection.sendall(f"hello from outside, {peer[0]}\\n".encode())
    connection.close()
"""


@contextmanager
def outside_server() -> Iterator[tuple[str, str]]:
    """Run a server in a network namespace made here, behind a veth pair; yield (its address, the host side's)."""
    tools = {name: shutil.which(name) or shutil.which(name, path="/usr/sbin:/sbin") for name in ("ip", "unshare",
                                                                                                "nsenter")}
    if os.geteuid() != 0 or None in tools.values():
        pytest.skip("making a network namespace with a veth pair needs root, ip, unshare and nsenter")
    # A /30 of a documentation network (RFC 5737): never an address of this machine or its networks.
    base = 4 * random.randrange(64)
    host_side, server_side = f"198.51.100.{base + 1}", f"198.51.100.{base + 2}"
    names = f"xv{uuid.uuid4().hex[:6]}h", f"xv{uuid.uuid4().hex[:6]}s"
    server = subprocess.Popen([tools["unshare"], "--net", sys.executable, "-c", OUTSIDE_SERVER],
                              stdout=subprocess.PIPE, text=True)
    try:
        assert server.stdout.readline().strip() == "ready"
        inside = [tools["nsenter"], f"--net=/proc/{server.pid}/ns/net", tools["ip"]]
        for command in ([tools["ip"], "link", "add", names[0], "type", "veth", "peer", "name", names[1], "netns",
                         str(server.pid)],
                        [tools["ip"], "addr", "add", f"{host_side}/30", "dev", names[0]],
                        [tools["ip"], "link", "set", names[0], "up"],
                        [*inside, "addr", "add", f"{server_side}/30", "dev", names[1]],
                        [*inside, "link", "set", names[1], "up"]):
            subprocess.run(command, check=True, capture_output=True, timeout=10)
        # The host reaches it: the way a job's connection must take exists.
        with socket.create_connection((server_side, 8080), timeout=5) as check:
            assert check.makefile().readline() == f"hello from outside, {host_side}\n"
        yield server_side, host_side
    finally:
        server.kill()
        server.wait()
        subprocess.run([tools["ip"], "link", "del", names[0]], capture_output=True, timeout=10)


@NETWORK
def test_a_job_reaches_the_outside_only_with_the_network_on(live_server, data_dir, network):
    sandbox_or_skip(data_dir, network)
    server = live_server(sandbox_network=_flag(network))
    script = """
        import json, socket
        try:
            with socket.create_connection(("SERVER", 8080), timeout=10) as connection:
                answer = connection.makefile().readline().strip()
        except OSError as exc:
            answer = type(exc).__name__ + ": " + str(exc)
        print(json.dumps({"answer": answer}), flush=True)
    """
    with outside_server() as (server_side, host_side):
        answer = run_job(server, script.replace("SERVER", server_side))["answer"]
    if network == "on":
        # It arrives from the host's own address on that network, as any program's on the host would.
        assert answer == f"hello from outside, {host_side}"
    else:
        assert "Network is unreachable" in answer


def _bin_without_slirp4netns(tmp_path: Path) -> dict[str, str]:
    """An environment whose PATH has the sandbox's programs but not slirp4netns."""
    folder = tmp_path / "bin"
    folder.mkdir()
    for name in ("bwrap", "setpriv", "nsenter"):
        found = shutil.which(name)
        if found:
            (folder / name).symlink_to(found)
    return {"PATH": str(folder)}


def test_without_slirp4netns_auto_runs_jobs_without_network_and_says_so(service, tmp_path):
    sandbox_or_skip(tmp_path / "probe", "off")
    proc = service(tmp_path / "data", env=_bin_without_slirp4netns(tmp_path))
    missing = "slirp4netns not installed (apt-get install slirp4netns)"
    wait_for(lambda: any(missing in line and "WARNING" in line for line in proc.lines), timeout=10)
    status, ready = proc.request("GET", "/ready")
    assert status == 200 and missing in ready["checks"]["sandbox"]["reason"]
    assert "WITHOUT network" in ready["checks"]["sandbox"]["isolation"]
    assert proc.terminate() == 0


def test_without_slirp4netns_a_required_sandbox_refuses_to_start(tmp_path):
    sandbox_or_skip(tmp_path / "probe", "off")
    done = subprocess.run([sys.executable, "app.py", "--port", "0", "--data-dir", str(tmp_path / "data"),
                           "--sandbox", "required"], cwd=ROOT, env=_bin_without_slirp4netns(tmp_path),
                          capture_output=True, text=True, timeout=60)
    assert done.returncode == 2
    assert "EXECUTOR_SANDBOX=required with EXECUTOR_SANDBOX_NETWORK=true" in done.stderr
    assert "apt-get install slirp4netns" in done.stderr


def test_a_resolver_on_the_hosts_loopback_is_asked_through_slirp4netns(tmp_path, monkeypatch):
    # systemd-resolved's stub on 127.0.0.53 is not on the job's own loopback; slirp4netns's forwarder
    # (10.0.2.3) asks the host's resolvers for it. The host's file stands in for /etc/resolv.conf here:
    # the machine's own must not change under other programs.
    sandbox_or_skip(tmp_path / "data", "on")
    host_file = tmp_path / "resolve" / "stub-resolv.conf"
    host_file.parent.mkdir()
    host_file.write_text("nameserver 127.0.0.53\noptions edns0 trust-ad\nsearch example.internal\n")
    link = tmp_path / "resolv.conf"
    link.symlink_to(host_file)
    monkeypatch.setattr(sandbox_network, "RESOLV_CONF", link)
    box = detect(load_config(environ={}, overrides={"data_dir": str(tmp_path / "data")}))
    # The link itself lies outside the sandbox's view here; in /etc it is there and leads to this file.
    job = box.start([sys.executable, "-c", f"print(open({str(host_file)!r}).read(), end='')"], cwd=Path("/"),
                    stdout=subprocess.PIPE, text=True, env={"PATH": "/usr/bin:/bin"})
    seen = job.communicate(timeout=60)[0]
    assert seen == "nameserver 10.0.2.3\noptions edns0 trust-ad\nsearch example.internal\n"
    assert job.returncode == 0


# Run by an unprivileged stand-in executor: the sandbox it detects, and what a job of it reached.
UNPRIVILEGED = """
import json, sys
sys.path.insert(0, {root!r})
from pathlib import Path
from config import load_config
from mlops.sandbox import detect
box = detect(load_config(environ={{}}, overrides={{"data_dir": {data!r}, "python": sys.executable}}))
job = box.start([sys.executable, "-c", {job!r}], cwd=Path("/"), stdout=__import__("subprocess").PIPE, text=True,
                env={{"PATH": "/usr/bin:/bin"}})
print(json.dumps({{"isolation": box.describe(), "reached": json.loads(job.communicate(timeout=60)[0])}}))
"""


def test_an_unprivileged_executors_jobs_are_sealed_off_the_same_way(tmp_path):
    # The systemd unit runs the executor as its own user: bubblewrap then makes a user namespace, and
    # slirp4netns and the routes enter the one that owns the job's network namespace.
    python, setpriv = "/usr/bin/python3", shutil.which("setpriv")
    if os.geteuid() != 0 or setpriv is None or not os.access(python, os.X_OK):
        pytest.skip("needs root (to become another user), setpriv and the system's python3")
    nobody = [setpriv, "--reuid=65534", "--regid=65534", "--clear-groups"]
    if subprocess.run([*nobody, python, "-c", f"import sys; sys.path.insert(0, {str(ROOT)!r}); import mlops.sandbox"],
                      capture_output=True, timeout=60).returncode != 0:
        pytest.skip("the checkout or the system's python3 cannot be read by an unprivileged user here")
    data = Path(tempfile.mkdtemp(prefix="executor-unprivileged-"))
    os.chown(data, 65534, 65534)
    listener = socket.create_server(("127.0.0.1", 0))
    try:
        with outside_server() as (server_side, _):
            targets = [("127.0.0.1", listener.getsockname()[1]), ("10.0.2.2", 22), ("169.254.169.254", 80),
                       *((address, 22) for address in host_addresses()), (server_side, 8080)]
            job = CONNECT.format(targets=targets).replace("print(json.dumps(results)", textwrap.dedent("""
                import subprocess
                done = subprocess.run(["ip", "route", "del", "unreachable", "169.254.0.0/16"], capture_output=True,
                                      text=True)
                results["route del"] = done.returncode == 0 or done.stderr.strip()
                print(json.dumps(results)"""))
            done = subprocess.run([*nobody, python, "-c", UNPRIVILEGED.format(root=str(ROOT), data=str(data), job=job)],
                                  capture_output=True, text=True, timeout=120, env={"PATH": "/usr/bin:/bin"})
    finally:
        listener.close()
        shutil.rmtree(data, ignore_errors=True)
    assert done.returncode == 0, done.stderr
    seen = json.loads(done.stdout)
    assert "in a user namespace, with network through slirp4netns" in seen["isolation"], seen
    reached = seen["reached"]
    assert reached.pop(f"{server_side}:8080") == "connected"
    assert "Operation not permitted" in reached.pop("route del")
    assert not [target for target, outcome in reached.items() if outcome == "connected"], reached


# A stand-in executor: starts a job in the sandbox, says the pids of bubblewrap's processes while
# they wait to be placed under the job's limits, and then waits there (or fails there, with "fail").
HELD = """
import json, subprocess, sys, time
sys.path.insert(0, {root!r})
from pathlib import Path
from config import load_config
from mlops.sandbox import detect
box = detect(load_config(environ={{}}, overrides={{"data_dir": {data!r}, "python": sys.executable,
                                                 "sandbox_network": {network!r}}}))
def place(pids):
    print(json.dumps(list(pids)), flush=True)
    if {fail!r}:
        raise RuntimeError("cannot place")
    time.sleep(600)
try:
    box.start([sys.executable, "-c", "open({marker!r}, 'w').write('ran')"], cwd=Path("/"), writable=[Path({out!r})],
              place=place, start_new_session=True)
except RuntimeError:
    print("refused", flush=True)
    time.sleep(600)
"""


def _alive(pid: int) -> bool:
    try:
        return psutil.Process(pid).status() != psutil.STATUS_ZOMBIE
    except psutil.NoSuchProcess:
        return False


@NETWORK
@pytest.mark.parametrize("ending", ["executor killed", "placing failed"])
def test_a_sandbox_waiting_to_be_placed_dies_with_its_executor_and_never_runs_unplaced(tmp_path, network, ending):
    # bubblewrap's child goes on when its --block-fd reads end of file, which is what it reads once
    # the executor is dead (bubblewrap.c: the read's result is ignored); and a child whose bubblewrap
    # is killed before it lets the child go waits on an eventfd forever.
    if os.geteuid() != 0:
        pytest.skip("places bubblewrap's processes as root does")
    sandbox_or_skip(tmp_path / "data", network)
    out = tmp_path / "out"
    out.mkdir()
    out.chmod(0o777)
    marker = out / "ran"
    script = HELD.format(root=str(ROOT), data=str(tmp_path / "data"), network=_flag(network), out=str(out),
                         marker=str(marker), fail=ending == "placing failed")
    executor = subprocess.Popen([sys.executable, "-c", script], stdout=subprocess.PIPE, text=True)
    try:
        pids = json.loads(executor.stdout.readline())
        assert len(pids) == 2 and all(_alive(pid) for pid in pids) or ending == "placing failed"
        if ending == "placing failed":
            assert executor.stdout.readline().strip() == "refused"
        else:
            executor.kill()
        wait_for(lambda: not [pid for pid in pids if _alive(pid)], timeout=10)
        time.sleep(1)  # time enough for released user code to write its file
        assert not marker.exists()
        assert not [process for process in psutil.process_iter(["cmdline"]) if process.pid != executor.pid
                    and str(out) in " ".join(process.info["cmdline"] or ())]
    finally:
        executor.kill()
        executor.wait()
