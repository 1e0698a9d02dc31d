"""Slow models never starve the service: each model answers one request at a time with a short line, model
requests hold at most a share of the HTTP threads, and an explanation stops at its deadline."""
from __future__ import annotations

import json
import re
import statistics
import textwrap
import threading
import time
import urllib.error
import urllib.request
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import pytest

from conftest import LiveServer
from mlops.admission import Gate
from mlops.errors import Overloaded
from test_model_lifecycle_local import API, deploy

# A model whose every prediction sleeps: what a slow or stuck model looks like from the executor.
SLOW_MODEL = """
import json, time

def model_fn(model_dir):
    return None

def input_fn(body, content_type):
    return json.loads(body)

def predict_fn(data, model):
    time.sleep({pause})
    # Two classes, as an image classifier answers them: what explain's occlusion reads.
    return [{{"probabilities": {{"one": 0.75, "other": 0.25}}}} for _ in data.get("instances", [None])]

def output_fn(prediction, accept):
    return json.dumps({{"predictions": prediction}})
"""


def slow_model(storage_root: Path, name: str, pause: float) -> dict[str, list[dict[str, str]]]:
    """Write a model folder whose predictions each take `pause` seconds; return its register body's source."""
    folder = storage_root / "models" / name
    (folder / "code").mkdir(parents=True)
    (folder / "model.pt").write_bytes(b"unused: model_fn loads nothing")
    (folder / "code" / "inference.py").write_text(textwrap.dedent(SLOW_MODEL.format(pause=pause)))
    return {"Containers": [{"ModelDataUrl": f"models/{name}"}]}


def timed_get(server: LiveServer, path: str) -> float:
    """GET a path, check it answers 200, and return how long it took in seconds."""
    started = time.perf_counter()
    with urllib.request.urlopen(server.url + path, timeout=30) as response:
        response.read()
        assert response.status == 200, path
    return time.perf_counter() - started


def post(server: LiveServer, path: str, body: dict) -> tuple[int, dict, dict]:
    """POST JSON and return (status, headers, parsed answer)."""
    request = urllib.request.Request(server.url + path, data=json.dumps(body).encode(), method="POST",
                                     headers={"Content-Type": "application/json"})
    try:
        with urllib.request.urlopen(request, timeout=60) as response:
            return response.status, dict(response.headers), json.loads(response.read())
    except urllib.error.HTTPError as error:
        return error.code, dict(error.headers), json.loads(error.read())


# -- the gate itself -----------------------------------------------------------------------------

def test_a_full_gate_refuses_at_once_and_says_when_to_retry() -> None:
    gate = Gate("model m", limit=1, line=0)
    with gate.admit():
        started = time.monotonic()
        with pytest.raises(Overloaded, match="model m is busy: 1 in progress") as refused:
            with gate.admit():
                pass
        assert time.monotonic() - started < 0.1
    assert refused.value.retry_after >= 1
    with gate.admit():  # the place is free again
        pass


def test_a_caller_in_line_gets_in_when_the_place_frees_and_a_second_in_line_is_refused() -> None:
    gate = Gate("model m", limit=1, line=1, wait_s=5)
    inside, release = threading.Event(), threading.Event()

    def hold() -> None:
        with gate.admit():
            inside.set()
            release.wait(5)

    holder = threading.Thread(target=hold)
    holder.start()
    inside.wait(5)
    admitted = []

    def wait_in_line() -> None:
        with gate.admit():
            admitted.append(True)

    waiter = threading.Thread(target=wait_in_line)
    waiter.start()
    time.sleep(0.2)
    with pytest.raises(Overloaded, match="1 in progress and 1 waiting"):
        with gate.admit():
            pass
    release.set()
    waiter.join(5)
    holder.join(5)
    assert admitted == [True]


def test_a_wait_in_line_is_bounded() -> None:
    gate = Gate("model m", limit=1, line=2, wait_s=0.3)
    with gate.admit():
        started = time.monotonic()
        with pytest.raises(Overloaded, match="stayed busy for the 0.3 s"):
            with gate.admit():
                pass
        assert 0.3 <= time.monotonic() - started < 1.0


# -- against a real service ----------------------------------------------------------------------

def test_slow_infers_answer_503_with_retry_after_while_health_and_status_answer_at_once(live_server) -> None:
    # 8 HTTP threads, half for models; the model answers one request at a time with one more waiting.
    server: LiveServer = live_server(model_queue="1")
    endpoint = deploy(server, "slow", "slow", **slow_model(server.storage_root, "slow", pause=2.0))
    assert endpoint["status"] == "InService", endpoint
    job_id = endpoint["jobId"]
    infers = 12
    with ThreadPoolExecutor(infers) as pool:
        answers = [pool.submit(post, server, f"{API}/endpoints/slow/infer", {"instances": [1]})
                   for _ in range(infers)]
        time.sleep(0.5)  # every infer has arrived: two hold the model, the rest were refused
        latencies: dict[str, list[float]] = {}
        for _round in range(10):
            for path in ("/health", "/ready", f"/status/{job_id}", f"/execute/{job_id}/getStatus", "/api/jobs"):
                latencies.setdefault(path, []).append(timed_get(server, path))
        results = [future.result() for future in answers]
    statuses = sorted(status for status, _headers, _body in results)
    for path, seconds in latencies.items():
        print(f"{path}: median {statistics.median(seconds) * 1000:.1f} ms, max {max(seconds) * 1000:.1f} ms "
              f"under {infers} concurrent infers of a 2 s model")
    # One in the model, one in its line: the rest were refused, with a time to come back.
    assert statuses.count(200) == 2 and statuses.count(503) == infers - 2, statuses
    for status, headers, body in results:
        if status == 503:
            assert int(headers["Retry-After"]) >= 1 and "busy" in body["error"], (headers, body)
    # The model's 2 s would show here were a route to wait behind it; the target is 50 ms on an idle machine.
    assert max(max(seconds) for seconds in latencies.values()) < 0.5, latencies


def test_model_requests_past_the_servers_share_answer_503_naming_the_share(live_server) -> None:
    # Two models, each busy for 2 s: their requests together may hold 4 of the 8 threads.
    server: LiveServer = live_server(model_queue="4")
    for name in ("first", "second"):
        deploy(server, name, name, **slow_model(server.storage_root, name, pause=2.0))
    with ThreadPoolExecutor(6) as pool:
        answers = [pool.submit(post, server, f"{API}/endpoints/{name}/infer", {"instances": [1]})
                   for name in ("first", "second") * 3]
        time.sleep(0.5)
        health = [timed_get(server, "/health") for _ in range(5)]
        results = [future.result() for future in answers]
    refused = [body for status, headers, body in results if status == 503 and headers.get("Retry-After")]
    print(f"/health: max {max(health) * 1000:.1f} ms with the model share full")
    assert len(refused) == 2 and all("share of threads for model requests (4)" in body["error"] for body in refused)
    assert sorted(status for status, _h, _b in results).count(200) == 4
    assert max(health) < 0.5, health


def test_a_model_loading_slowly_holds_up_no_request_to_a_model_already_served(live_server) -> None:
    server: LiveServer = live_server()
    deploy(server, "quick", "quick", **slow_model(server.storage_root, "quick", pause=0))
    source = slow_model(server.storage_root, "loading", pause=0)
    inference = server.storage_root / "models" / "loading" / "code" / "inference.py"
    inference.write_text(inference.read_text().replace("return None", "time.sleep(4)", 1))
    with ThreadPoolExecutor(1) as pool:
        loading = pool.submit(deploy, server, "loading", "loading", **source)
        time.sleep(1.5)  # the deployment's worker is in model_fn now, with the load lock held
        started = time.monotonic()
        status, _headers, body = post(server, f"{API}/endpoints/quick/infer", {"instances": [1]})
        took = time.monotonic() - started
        assert not loading.done()
        assert loading.result()["status"] == "InService"
    print(f"infer to a served model during another's load: {took * 1000:.1f} ms")
    assert status == 200 and body["predictions"], body
    assert took < 1.0, took


def test_explain_past_its_deadline_answers_504_saying_how_far_it_got(live_server) -> None:
    server: LiveServer = live_server(explain_timeout="1.5")
    deploy(server, "explained", "explained", **slow_model(server.storage_root, "explained", pause=0.4))
    image = [[(row * 8 + column) * 3 for column in range(8)] for row in range(8)]
    started = time.monotonic()
    status, _headers, body = post(server, f"{API}/endpoints/explained/explain", {"instances": [image]})
    took = time.monotonic() - started
    # The image, then 64 covered windows, 16 a call, each call 0.4 s: the deadline comes within them.
    assert status == 504, body
    assert "EXECUTOR_EXPLAIN_TIMEOUT (1.5 s)" in body["error"], body
    done = re.search(r"stopped after (\d+) of 64 occlusion windows", body["error"])
    assert done and int(done.group(1)) in (16, 32, 48), body
    assert took < 2.5, took
    # The model was stopped at the deadline, not counted as a crash: the next request is served.
    status, _headers, body = post(server, f"{API}/endpoints/explained/infer", {"instances": [1]})
    assert status == 200 and body["predictions"][0]["probabilities"]["one"] == 0.75, body


def test_settings_that_would_leave_no_thread_for_status_routes_are_refused_at_start() -> None:
    from config import ConfigError, load_config

    with pytest.raises(ConfigError, match="EXECUTOR_HTTP_THREADS: 1 thread"):
        load_config({}, {"http_threads": "1"})
    with pytest.raises(ConfigError, match="EXECUTOR_MODEL_THREAD_SHARE: must be a fraction"):
        load_config({}, {"model_thread_share": "1"})
    assert load_config({}, {"http_threads": "10", "model_thread_share": "0.3"}).model_threads == 3
