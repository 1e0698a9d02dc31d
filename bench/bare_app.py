"""A bare Flask app on waitress with the executor's two hottest routes and no work behind them.

It parses and answers as the executor does, without validation, storage or a queue: the ceiling
of what Flask on waitress can do on this machine. `python bench/bare_app.py` prints its address.
"""
from __future__ import annotations

import argparse
import sys
import uuid

from flask import Flask, jsonify, request
from waitress.server import create_server


def make_app() -> Flask:
    """Return the bare app."""
    app = Flask(__name__)

    @app.post("/execute")
    def execute():
        body = request.get_json()
        return jsonify(task_id=str(uuid.uuid4()), task_status="Submitted", log_path=str(body.get("name"))), 201

    @app.get("/execute/<task_id>/getStatus")
    def get_status(task_id: str):
        return jsonify(task_id=task_id, pid=None, task_status="COMPLETED", log_path="", submitted="",
                       started="", finished="", output_dir="", timestamp=0)

    return app


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--threads", type=int, default=8)
    args = parser.parse_args()
    server = create_server(make_app(), host="127.0.0.1", port=0, threads=args.threads)
    print(f"serving on http://127.0.0.1:{server.effective_port}", flush=True)
    server.run()


if __name__ == "__main__":
    sys.exit(main())
