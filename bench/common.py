"""What the benchmarks share: a real service process, a load generator, percentiles and tables.

Every load goes to 127.0.0.1 and every loop is bounded in count and in time.
"""
from __future__ import annotations

import http.client
import json
import os
import platform
import re
import shutil
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Iterator, Sequence

ROOT = Path(__file__).resolve().parents[1]
for folder in (ROOT, ROOT / "tests"):
    if str(folder) not in sys.path:
        sys.path.insert(0, str(folder))

from conftest import ServiceProcess, pipeline_body, write_pipeline  # noqa: E402,F401

BARE_APP = ROOT / "bench" / "bare_app.py"


def machine() -> str:
    """Describe this machine in one line: CPU model, cores, memory, OS, Python."""
    model = "unknown CPU"
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                model = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    memory = ""
    try:
        kib = int(re.search(r"MemTotal:\s+(\d+)", Path("/proc/meminfo").read_text()).group(1))
        memory = f", {kib / 1024 / 1024:.0f} GiB"
    except (OSError, AttributeError):
        pass
    return (f"{model}, {os.cpu_count()} cores{memory}, {platform.system()} {platform.release()}, "
            f"Python {platform.python_version()}")


def header(title: str) -> None:
    """Print the benchmark's title, the date and the machine."""
    print(f"## {title}")
    print(f"{time.strftime('%Y-%m-%d %H:%M %Z')} — {machine()}")
    print()


def table(columns: Sequence[str], rows: Sequence[Sequence[Any]]) -> None:
    """Print a Markdown table."""
    print("| " + " | ".join(columns) + " |")
    print("|" + "|".join("---" for _ in columns) + "|")
    for row in rows:
        print("| " + " | ".join(_cell(value) for value in row) + " |")
    print()


def _cell(value: Any) -> str:
    if isinstance(value, float):
        return f"{value:,.2f}" if abs(value) < 100 else f"{value:,.0f}"
    if isinstance(value, int):
        return f"{value:,}"
    return str(value)


def percentile(values: Sequence[float], q: float) -> float:
    """Return the q-th percentile (0-100) of the values, by nearest rank."""
    ordered = sorted(values)
    if not ordered:
        return float("nan")
    rank = max(0, min(len(ordered) - 1, round(q / 100 * len(ordered) + 0.5) - 1))
    return ordered[rank]


def rss_mib(pid: int) -> tuple[float, float]:
    """Return (resident, peak resident) memory of a process in MiB, from /proc."""
    text = Path(f"/proc/{pid}/status").read_text()
    rss = int(re.search(r"VmRSS:\s+(\d+)", text).group(1))
    hwm = int(re.search(r"VmHWM:\s+(\d+)", text).group(1))
    return rss / 1024, hwm / 1024


class BareService:
    """A bare Flask app on waitress in its own process: the ceiling the executor is compared with."""

    def __init__(self, threads: int = 8):
        self.started = time.monotonic()
        self.process = subprocess.Popen([sys.executable, str(BARE_APP), "--threads", str(threads)],
                                        cwd=ROOT, stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, text=True)
        assert self.process.stdout is not None
        line = self.process.stdout.readline()
        match = re.search(r"serving on (http://\S+)", line)
        if not match:
            self.process.kill()
            raise RuntimeError(f"bare app did not start: {line!r}")
        self.url = match.group(1)
        self.ready_s = time.monotonic() - self.started

    def stop(self) -> None:
        self.process.kill()
        self.process.wait(timeout=10)


def start_executor(data_dir: Path, workers: int = 1, **env: str) -> tuple[ServiceProcess, float]:
    """Start `python app.py` on a free port; return it and the seconds until it logged its address."""
    started = time.monotonic()
    service = ServiceProcess(data_dir, env=env,
                             args=["--workers", str(workers)])
    return service, time.monotonic() - started


def stop_executor(service: ServiceProcess) -> None:
    """Kill the service (its queued jobs do not matter to a benchmark) and close its pipe."""
    if service.process.poll() is None:
        service.process.kill()
        service.process.wait(timeout=10)
    service._reader.join(timeout=5)
    if service.process.stderr:
        service.process.stderr.close()


@dataclass
class LoadResult:
    """What one load run measured."""

    requests: int
    errors: int
    seconds: float
    p50_ms: float
    p99_ms: float
    tool: str

    @property
    def rps(self) -> float:
        return self.requests / self.seconds if self.seconds else 0.0


def load(url: str, method: str, path: str, body: dict[str, Any] | None = None, *, connections: int = 16,
         seconds: float = 10.0, expect: int = 200) -> LoadResult:
    """Drive keep-alive load at one route: wrk when installed, otherwise a threaded Python client."""
    if shutil.which("wrk"):
        return _wrk(url, method, path, body, connections, seconds, expect)
    return _python_load(url, method, path, body, connections, seconds, expect)


WRK_SCRIPT = """
wrk.method = "%(method)s"
wrk.body = %(body)s
wrk.headers["Content-Type"] = "application/json"
done = function(summary, latency, requests)
  io.write(string.format("RESULT %%d %%d %%d %%d %%d\\n", summary.requests, summary.duration,
    latency:percentile(50), latency:percentile(99),
    summary.errors.status + summary.errors.connect + summary.errors.read + summary.errors.write + summary.errors.timeout))
end
"""


def _wrk(url: str, method: str, path: str, body: dict[str, Any] | None, connections: int, seconds: float,
         expect: int) -> LoadResult:
    body_text = json.dumps(json.dumps(body)) if body is not None else "nil"
    with tempfile.NamedTemporaryFile("w", suffix=".lua", delete=False) as handle:
        handle.write(WRK_SCRIPT % {"method": method, "body": body_text})
        script = handle.name
    try:
        # Two wrk threads: the machine's cores are shared with the server under test.
        result = subprocess.run(["wrk", "-t2", f"-c{connections}", f"-d{seconds:.0f}s", "--timeout", "10s",
                                 "-s", script, url + path], capture_output=True, text=True,
                                timeout=seconds + 60)
    finally:
        os.unlink(script)
    match = re.search(r"RESULT (\d+) (\d+) (\d+) (\d+) (\d+)", result.stdout)
    if not match:
        raise RuntimeError(f"wrk failed: {result.stdout} {result.stderr}")
    requests, duration_us, p50_us, p99_us, errors = map(int, match.groups())
    # Non-2xx/3xx answers count as wrk 'status' errors; a 201 is a success to wrk, as it should be.
    return LoadResult(requests, errors, duration_us / 1e6, p50_us / 1000, p99_us / 1000, "wrk")


def _python_load(url: str, method: str, path: str, body: dict[str, Any] | None, connections: int,
                 seconds: float, expect: int) -> LoadResult:
    host, port = url.removeprefix("http://").split(":")
    payload = json.dumps(body).encode() if body is not None else None
    headers = {"Content-Type": "application/json"} if payload else {}
    latencies: list[list[float]] = [[] for _ in range(connections)]
    errors = [0] * connections
    deadline = time.monotonic() + seconds

    def client(index: int) -> None:
        conn = http.client.HTTPConnection(host, int(port), timeout=10)
        while time.monotonic() < deadline:
            began = time.perf_counter()
            try:
                conn.request(method, path, body=payload, headers=headers)
                response = conn.getresponse()
                response.read()
                if response.status != expect:
                    errors[index] += 1
            except (OSError, http.client.HTTPException):
                errors[index] += 1
                conn.close()
                conn = http.client.HTTPConnection(host, int(port), timeout=10)
            latencies[index].append(time.perf_counter() - began)
        conn.close()

    began = time.monotonic()
    threads = [threading.Thread(target=client, args=(index,)) for index in range(connections)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(seconds + 30)
    elapsed = time.monotonic() - began
    flat = [value * 1000 for values in latencies for value in values]
    return LoadResult(len(flat), sum(errors), elapsed, percentile(flat, 50), percentile(flat, 99), "python")


def sequential_latencies(url: str, paths: Iterator[str], count: int, max_seconds: float = 60) -> list[float]:
    """Send GETs one after another over one keep-alive connection; return their latencies in ms."""
    host, port = url.removeprefix("http://").split(":")
    conn = http.client.HTTPConnection(host, int(port), timeout=10)
    result: list[float] = []
    deadline = time.monotonic() + max_seconds
    for _, path in zip(range(count), paths):
        if time.monotonic() > deadline:
            break
        began = time.perf_counter()
        conn.request("GET", path)
        response = conn.getresponse()
        response.read()
        if response.status != 200:
            raise RuntimeError(f"GET {path}: {response.status}")
        result.append((time.perf_counter() - began) * 1000)
    conn.close()
    return result


def median(values: Sequence[float]) -> float:
    return statistics.median(values) if values else float("nan")
