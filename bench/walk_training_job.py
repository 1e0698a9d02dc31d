"""Follow one training job from POST to /status and count the executor's modules it passes through.

Run from a checkout: `python bench/walk_training_job.py` (`--steps` lists each call). A training of a small script runs on the
local platform through the real app, queue, store and sandbox; a profiler notes every call of the
executor's own code that is handed the job in one of its forms (the body, the typed request, the
stored row as a Job, its reporter, its id). It prints the modules in the order the job enters them,
how many it enters, how often it comes back to one it had left, and the names it takes (the
parameters that receive it). Works on any release that has create_app and the training route.
"""
from __future__ import annotations

import inspect
import sys
import tempfile
import threading
import time
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path.cwd()))

from app import create_app  # noqa: E402

MARK = "walk-training-job"
PROJECT = ("app", "db", "db_postgres", "job", "job_secrets", "queue_worker", "config", "lease", "api", "mlops")
SCRIPT = "import os\nprint('epoch 1: loss=0.5', flush=True)\nopen(os.path.join(os.environ['SM_MODEL_DIR'], 'm.txt'), 'w').write('m')\n"


def carries(value: Any, job_id: list[str], depth: int = 0) -> bool:
    """Say whether a value is the job in one of its forms (read from its own attributes, no property run)."""
    if isinstance(value, str):
        return bool(job_id) and value == job_id[0]
    if isinstance(value, dict):
        return value.get("name") == MARK
    attributes = getattr(value, "__dict__", None)
    if not isinstance(attributes, dict) or depth > 2:
        return False
    if attributes.get("name") == MARK or (job_id and attributes.get("id") == job_id[0]):
        return True
    return any(carries(attributes[holder], job_id, depth + 1) for holder in ("request", "job") if holder in attributes)


def main() -> int:
    job_id: list[str] = []
    visits: list[tuple[float, str, str, str]] = []
    lock = threading.Lock()

    generators: dict[int, Any] = {}  # kept alive, so that an id is not taken by another frame
    quiet: set[int] = set()  # threads whose calls are not the job's walk (the wait for its end)

    def profile(frame: Any, event: str, _arg: Any) -> None:
        if event != "call" or threading.get_ident() in quiet:
            return
        module = frame.f_globals.get("__name__", "")
        code = frame.f_code
        # Code a module generates (a dataclass's __init__) is not a step the job takes, nor is a generator
        # taking up again where it yielded (a context manager's exit): only its first call is.
        if module.split(".")[0] not in PROJECT or code.co_filename.startswith("<"):
            return
        if code.co_flags & inspect.CO_GENERATOR:
            if id(frame) in generators:
                return
            generators[id(frame)] = frame
        for name in code.co_varnames[:code.co_argcount + code.co_kwonlyargcount]:
            if name in ("self", "cls"):
                continue
            try:
                value = frame.f_locals.get(name)
                if carries(value, job_id):
                    with lock:
                        visits.append((time.monotonic(), module, name, code.co_name))
                    return
            except Exception:  # noqa: BLE001 - a value whose attributes cannot be read is not the job
                return

    with tempfile.TemporaryDirectory() as folder:
        root = Path(folder)
        storage = root / "data" / "storage"  # the storage root a data folder has by default
        (storage / "walk-data").mkdir(parents=True)
        (storage / "walk-data" / "rows.csv").write_text("a,b\n1,2\n")
        (storage / "walk-code").mkdir()
        (storage / "walk-code" / "train.py").write_text(SCRIPT)
        app = create_app({"data_dir": str(root / "data"), "workers": "1"})
        executor = app.config["EXECUTOR"]
        client = app.test_client()
        threading.setprofile(profile)
        sys.setprofile(profile)
        try:
            answer = client.post("/api/service/v1/pipelines/training", json={
                "name": MARK, "dataset": "walk-data", "source_dir": "walk-code", "entry_point": "train.py"})
            if answer.status_code != 202:
                print(f"the training was refused: {answer.status_code} {answer.get_json()}")
                return 1
            job_id.append(answer.get_json()["job_id"])
            if not executor.queue.started:
                executor.queue.start()
            quiet.add(threading.get_ident())
            deadline = time.monotonic() + 120
            while time.monotonic() < deadline and not executor.store.get(job_id[0]).status.is_final:
                time.sleep(0.2)
            quiet.clear()
            status = client.get(f"/status/{job_id[0]}").get_json()
        finally:
            sys.setprofile(None)
            threading.setprofile(None)  # type: ignore[arg-type]
            executor.queue.stop(timeout=10)
            executor.store.close()
    print(f"job {job_id[0]} ended {status['status'] if status else 'unknown'}")
    route: list[str] = []
    names: set[str] = set()
    for _, module, name, function in sorted(visits):
        if "--steps" in sys.argv:
            print(f"  {module}.{function}({name})")
        names.add(name)
        if not route or route[-1] != module:
            route.append(module)
    returns = sum(1 for index, module in enumerate(route) if module in route[:index])
    print("route:", " -> ".join(route))
    print(f"modules entered: {len(set(route))}; moves: {len(route) - 1}; returns to a module: {returns}")
    print(f"names taken ({len(names)}): {', '.join(sorted(names))}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
