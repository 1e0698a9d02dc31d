"""Where an accepted request's time goes: POST /execute and getStatus in-process, without HTTP or load.

    python bench/bench_request_cost.py [--requests 500] [--repeat 5]

Runs the real app (local backend, SQLite file in a temporary folder, queue not started, so no job
runs, logging not configured, so no request log line is written) through Flask's test client, and prints the median milliseconds per request over the repeats,
next to a bare Flask route that answers the same JSON: the executor's own cost per request.
"""
from __future__ import annotations

import argparse
import tempfile
import time
from pathlib import Path

from flask import Flask, jsonify

from common import header, median, pipeline_body, table, write_pipeline
from app import create_app


def per_request_ms(send, count: int) -> float:
    started = time.perf_counter()
    for _ in range(count):
        send()
    return (time.perf_counter() - started) / count * 1000


def bare_client():
    bare = Flask(__name__)

    @bare.post("/execute")
    def execute():
        return jsonify(task_id="0f8e2c1a-1111-4a4a-9b9b-123456789abc", task_status="Submitted"), 201

    return bare.test_client()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--requests", type=int, default=500)
    parser.add_argument("--repeat", type=int, default=5)
    args = parser.parse_args()
    header("Cost of one request in-process: the executor against a bare Flask route")
    with tempfile.TemporaryDirectory() as tmp:
        app = create_app({"data_dir": str(Path(tmp) / "data")})
        folder = write_pipeline(app.config["EXECUTOR"].config.storage_root, "bench/pipe", "print('ok')\n")
        body = pipeline_body(folder, "python pipe1.py")
        client, bare = app.test_client(), bare_client()
        task = client.post("/execute", json=body).get_json()["task_id"]
        # An id in capitals names the same job but is never the key of a kept answer: each such poll
        # builds its answer as the first poll after a write of the store does.
        rebuilt = f"/execute/{task.upper()}/getStatus"
        runs = {"POST /execute": [], "GET getStatus": [], "GET getStatus, answer rebuilt": [], "bare POST": []}
        for _ in range(args.repeat):
            runs["POST /execute"].append(per_request_ms(lambda: client.post("/execute", json=body), args.requests))
            runs["GET getStatus"].append(per_request_ms(lambda: client.get(f"/execute/{task}/getStatus"),
                                                        args.requests))
            runs["GET getStatus, answer rebuilt"].append(per_request_ms(lambda: client.get(rebuilt), args.requests))
            runs["bare POST"].append(per_request_ms(lambda: bare.post("/execute", json=body), args.requests))
        app.config["EXECUTOR"].store.close()
    table(["request", "median ms", "min ms", "max ms"],
          [[name, round(median(values), 3), round(min(values), 3), round(max(values), 3)]
           for name, values in runs.items()])
    print(f"{args.requests} requests per repeat, {args.repeat} repeats")


if __name__ == "__main__":
    main()
