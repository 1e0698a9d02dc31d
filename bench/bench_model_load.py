"""/health and getStatus latency while slow models are asked more than they can answer.

    python bench/bench_model_load.py [--clients 16] [--seconds 10] [--pause 1.0]

A real `python app.py` (local platform, default settings: 8 HTTP threads, half of them for model
requests) serves one deployed model whose every prediction sleeps --pause seconds. --clients
threads post infers to it for --seconds (each pausing 0.1 s after a 503, far less than the
Retry-After it is told), while one keep-alive client asks /health, then a job's getStatus, one
request after another. Without the bounds the first would wait for the model: seconds, not ms.
"""
from __future__ import annotations

import argparse
import http.client
import json
import tempfile
import textwrap
import threading
import time
from collections import Counter
from pathlib import Path
from typing import Any

from common import header, median, percentile, sequential_latencies, start_executor, stop_executor, table

API = "/api/service/v1"
SLOW_MODEL = """
import json, time

def model_fn(model_dir):
    return None

def input_fn(body, content_type):
    return json.loads(body)

def predict_fn(data, model):
    time.sleep({pause})
    return data

def output_fn(prediction, accept):
    return json.dumps({{"predictions": prediction}})
"""


def call(url: str, method: str, path: str, body: Any = None, timeout: float = 120) -> tuple[int, Any]:
    host, port = url.removeprefix("http://").split(":")
    conn = http.client.HTTPConnection(host, int(port), timeout=timeout)
    try:
        conn.request(method, path, json.dumps(body) if body is not None else None,
                     {"Content-Type": "application/json"})
        response = conn.getresponse()
        return response.status, json.loads(response.read() or b"null")
    finally:
        conn.close()


def deploy_slow_model(url: str, storage_root: Path, pause: float) -> str:
    """Register and deploy a model whose predictions sleep; return the deployment job's id."""
    folder = storage_root / "models" / "slow"
    (folder / "code").mkdir(parents=True)
    (folder / "model.pt").write_bytes(b"unused: model_fn loads nothing")
    (folder / "code" / "inference.py").write_text(textwrap.dedent(SLOW_MODEL.format(pause=pause)))
    steps = [("models/register", {"ModelName": "slow", "Containers": [{"ModelDataUrl": "models/slow"}]}),
             ("endpoints/register", {"ModelName": "slow", "EndpointConfigName": "slow-config",
                                     "VariantName": "AllTraffic", "InitialInstanceCount": 1,
                                     "InstanceType": "ml.m5.large"}),
             ("endpoints/slow/deploy_model", {"EndpointConfigName": "slow-config", "EndpointName": "slow"})]
    for path, body in steps:
        status, answer = call(url, "POST", f"{API}/{path}", body)
        if status not in (201, 202):
            raise RuntimeError(f"{path}: {status} {answer}")
    deadline = time.monotonic() + 120
    while time.monotonic() < deadline:
        _status, record = call(url, "GET", f"{API}/endpoints/slow")
        if record.get("status") == "InService":
            return record["jobId"]
        if record.get("status") == "Failed":
            raise RuntimeError(f"deployment failed: {record}")
        time.sleep(0.2)
    raise RuntimeError("the endpoint did not come into service within 120 s")


def flood(url: str, seconds: float, outcomes: Counter, lock: threading.Lock) -> None:
    """Post infers until the time is up; count the answers by status."""
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        status, _ = call(url, "POST", f"{API}/endpoints/slow/infer", {"instances": [1]})
        with lock:
            outcomes[status] += 1
        if status == 503:
            time.sleep(0.1)


def measure(clients: int, seconds: float, pause: float) -> None:
    with tempfile.TemporaryDirectory() as tmp:
        data = Path(tmp) / "data"
        service, _ready_s = start_executor(data, workers=1)
        try:
            job_id = deploy_slow_model(service.url, data / "storage", pause)
            endless = (lambda path: (path for _ in iter(int, 1)))
            idle = sequential_latencies(service.url, endless("/health"), 300)
            outcomes: Counter = Counter()
            lock = threading.Lock()
            threads = [threading.Thread(target=flood, args=(service.url, seconds, outcomes, lock))
                       for _ in range(clients)]
            for thread in threads:
                thread.start()
            time.sleep(0.5)
            health: list[float] = []
            status: list[float] = []
            until = time.monotonic() + seconds - 1
            while time.monotonic() < until:
                health += sequential_latencies(service.url, endless("/health"), 20)
                status += sequential_latencies(service.url, endless(f"/execute/{job_id}/getStatus"), 20)
            for thread in threads:
                thread.join(seconds + 3 * pause + 120)
        finally:
            stop_executor(service)
    rows = [("/health, models idle", len(idle), median(idle), percentile(idle, 99), max(idle)),
            (f"/health, {clients} clients flooding a {pause:g} s model", len(health), median(health),
             percentile(health, 99), max(health)),
            (f"getStatus, {clients} clients flooding a {pause:g} s model", len(status), median(status),
             percentile(status, 99), max(status))]
    table(["route", "requests", "median ms", "p99 ms", "max ms"], rows)
    print(f"infers in {seconds:g} s: " + ", ".join(f"{count} × {code}" for code, count in sorted(outcomes.items())))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--clients", type=int, default=16)
    parser.add_argument("--seconds", type=float, default=10.0)
    parser.add_argument("--pause", type=float, default=1.0)
    args = parser.parse_args()
    header("Health and status latency under model load")
    measure(args.clients, args.seconds, args.pause)


if __name__ == "__main__":
    main()
