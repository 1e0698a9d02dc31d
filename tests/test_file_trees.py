"""Trees of files the executor copies (a model to register, a pipeline's or a dataset's folder to stage):
links are never followed, not even those inside the folder; walks are bounded in entries, bytes and
depth; a copy lands whole or not at all; a large model folder is copied without holding the request."""
from __future__ import annotations

import hashlib
import os
import subprocess
import tarfile
import time
import urllib.request
from pathlib import Path

import pytest

from conftest import LiveServer, pipeline_body, wait_final, write_pipeline
from mlops import job_files
from config import load_config
from mlops.job_files import TreeTooLarge, copy_tree, remove_tree, tree_digest
from mlops.staging import stage_folder
from mlops.local import serving
from mlops.aws_statuses import CREATING
from mlops.records import MODEL
from test_model_lifecycle_local import API, tiny_model
from test_transform_links import echo_model

pytestmark = pytest.mark.skipif(os.name == "nt", reason="links as a POSIX user makes them")

MEGABYTE = 1 << 20


def model_with_a_loop(folder: Path) -> Path:
    """A 1 MB model folder holding `loop -> .` and a link to a file of the machine."""
    tiny_model(folder)
    (folder / "weights.bin").write_bytes(os.urandom(MEGABYTE))
    os.symlink(".", folder / "loop")
    os.symlink("/etc/hostname", folder / "host-file")
    os.symlink("weights.bin", folder / "link-inside")
    return folder


def test_a_model_folder_with_a_link_loop_is_copied_once_without_its_links(live_server) -> None:
    server: LiveServer = live_server()
    model_with_a_loop(server.storage_root / "models" / "looped")
    started = time.monotonic()
    status, body = server.request("POST", f"{API}/models/register",
                                  {"ModelName": "looped", "Containers": [{"ModelDataUrl": "models/looped"}]})
    assert status == 201, body
    assert time.monotonic() - started < 10
    assert sorted(body["artifacts"]["files"]) == ["model.pt", "weights.bin"]
    copy = Path(body["artifacts"]["model_dir"])
    assert sorted(path.name for path in copy.iterdir()) == ["model.pt", "weights.bin"]
    assert sum(path.stat().st_size for path in copy.iterdir()) < 2 * MEGABYTE
    assert not any(path.is_symlink() for path in copy.iterdir())


def test_a_model_whose_model_pt_is_a_link_is_refused_naming_it(live_server) -> None:
    server: LiveServer = live_server()
    folder = tiny_model(server.storage_root / "models" / "linked")
    (folder / "model.pt").rename(folder / "real.pt")
    os.symlink("real.pt", folder / "model.pt")
    status, body = server.request("POST", f"{API}/models/register",
                                  {"ModelName": "linked", "Containers": [{"ModelDataUrl": "models/linked"}]})
    assert status == 422 and "model.pt is a link" in body["error"], body
    assert not (server.executor.config.data_dir / "models" / "linked").exists()


@pytest.mark.parametrize("bound, value", [("MAX_FOLDER_DEPTH", 3), ("MAX_COMPLETE_WALK_ENTRIES", 5)])
def test_a_model_folder_past_a_walk_bound_is_refused_and_nothing_is_kept(live_server, monkeypatch, bound: str,
                                                                         value: int) -> None:
    server: LiveServer = live_server()
    folder = tiny_model(server.storage_root / "models" / "deep")
    (folder / "a" / "b" / "c" / "d" / "e").mkdir(parents=True)
    (folder / "a" / "b" / "c" / "d" / "e" / "leaf.txt").write_text("leaf")
    monkeypatch.setattr(job_files, bound, value)
    status, body = server.request("POST", f"{API}/models/register",
                                  {"ModelName": "deep", "Containers": [{"ModelDataUrl": "models/deep"}]})
    assert status == 413 and body["field"] == "ModelDataUrl", body
    assert list((server.executor.config.data_dir / "models").glob("*")) == []
    assert server.request("GET", f"{API}/models/deep")[0] == 404


def test_a_model_folder_over_the_byte_bound_is_refused(make_app, tmp_path: Path) -> None:
    app = make_app(max_copy_bytes=str(MEGABYTE))
    storage = app.config["EXECUTOR"].config.storage_root
    model_with_a_loop(storage / "models" / "big")
    answer = app.test_client().post(f"{API}/models/register",
                                    json={"ModelName": "big", "Containers": [{"ModelDataUrl": "models/big"}]})
    assert answer.status_code == 413 and "EXECUTOR_MAX_COPY_BYTES" in answer.get_json()["error"]


@pytest.fixture
def small_disk(tmp_path: Path):
    mount_point = tmp_path / "small-disk"
    mount_point.mkdir()
    mounted = subprocess.run(["mount", "-t", "tmpfs", "-o", "size=1m", "tmpfs", str(mount_point)],
                             capture_output=True, text=True)
    if mounted.returncode != 0:
        pytest.skip(f"cannot mount a tmpfs here: {mounted.stderr.strip()}")
    try:
        yield mount_point
    finally:
        subprocess.run(["umount", "-l", str(mount_point)], check=False)


def test_a_copy_that_fails_midway_leaves_nothing(tmp_path: Path, small_disk: Path) -> None:
    source = tmp_path / "source"
    source.mkdir()
    for number in range(4):
        (source / f"part-{number}.bin").write_bytes(os.urandom(MEGABYTE // 2))
    with pytest.raises(OSError) as failure:
        copy_tree(source, small_disk / "copy", 64 * MEGABYTE)
    assert failure.value.errno == 28  # ENOSPC
    assert list(small_disk.iterdir()) == []
    with pytest.raises(TreeTooLarge):
        copy_tree(source, tmp_path / "copy", MEGABYTE)
    assert not (tmp_path / "copy").exists()


def test_a_copy_keeps_folders_and_files_and_its_digest_is_the_sources(tmp_path: Path) -> None:
    source = tmp_path / "source"
    (source / "empty").mkdir(parents=True)
    (source / "code" / "__pycache__").mkdir(parents=True)
    (source / "code" / "__pycache__" / "x.pyc").write_bytes(b"cache")
    (source / "code" / "run.py").write_text("print('hi')\n")
    (source / "run.sh").write_text("#!/bin/sh\n")
    (source / "run.sh").chmod(0o755)
    os.symlink(".", source / "loop")
    tree = copy_tree(source, tmp_path / "copy", MEGABYTE)
    assert [entry.relative for entry in tree.files] == ["source/code/run.py", "source/run.sh"]
    copy = tmp_path / "copy"
    assert sorted(str(path.relative_to(copy)) for path in copy.rglob("*")) == ["code", "code/run.py", "empty",
                                                                                "run.sh"]
    assert os.access(copy / "run.sh", os.X_OK)
    assert tree_digest(tmp_path, "source") == tree_digest(tmp_path, "copy")
    (source / "code" / "run.py").write_text("print('changed')\n")
    assert tree_digest(tmp_path, "source") != tree_digest(tmp_path, "copy")


def test_a_restaged_attempt_replaces_what_the_killed_attempt_left_without_following_its_links(tmp_path: Path) -> None:
    # An executor killed while a job ran leaves the job's code folder filled (and the job, as its
    # sandbox identity, may have put links there); the restart stages the job again into the same place.
    source = tmp_path / "storage" / "pipe"
    source.mkdir(parents=True)
    (source / "pipe1.py").write_text("print('now')\n")
    outside = tmp_path / "outside"
    outside.mkdir()
    (outside / "keep.txt").write_text("keep")
    code = tmp_path / "jobs" / "job-1" / "code"
    code.mkdir(parents=True)
    (code / "pipe1.py").write_text("print('before')\n")
    (code / "left-by-the-job.txt").write_text("old")
    os.symlink(outside, code / "escape")
    stage_folder(source, code, load_config({}, {"data_dir": str(tmp_path / "data")}), "input_artifacts")
    assert sorted(path.name for path in code.iterdir()) == ["pipe1.py"]
    assert (code / "pipe1.py").read_text() == "print('now')\n"
    assert (outside / "keep.txt").read_text() == "keep"
    assert sorted(path.name for path in code.parent.iterdir()) == ["code"]  # nothing set aside is kept
    # The code folder itself turned into a link to a folder outside: the link goes, its target stays.
    remove_tree(code)
    os.symlink(outside, code)
    copy_tree(source, code, MEGABYTE, replace=True)
    assert not code.is_symlink() and sorted(path.name for path in code.iterdir()) == ["pipe1.py"]
    assert sorted(path.name for path in outside.iterdir()) == ["keep.txt"]
    # Without replace, a filled folder is never overwritten.
    with pytest.raises(OSError):
        copy_tree(source, code, MEGABYTE)


def test_a_pipeline_folder_with_a_link_loop_stages_and_runs(live_server) -> None:
    server: LiveServer = live_server()
    folder = write_pipeline(server.storage_root, "looped", "import os\nprint(sorted(os.listdir('.')))\n")
    os.symlink(".", server.storage_root / folder / "loop")
    os.symlink("/etc/hostname", server.storage_root / folder / "host-file")
    _, accepted = server.request("POST", "/execute", pipeline_body(folder, "python pipe1.py"))
    final = wait_final(server, accepted["task_id"], timeout=60)
    assert final["task_status"] == "COMPLETED", final
    _, log = server.request("GET", f"/execute/{accepted['task_id']}/getLog")
    assert "['pipe1.py']" in log["logs"]["content"]


def test_a_large_model_folder_is_copied_in_the_background_and_polled(live_server, monkeypatch) -> None:
    monkeypatch.setattr(serving, "INLINE_COPY_BYTES", 0)
    server: LiveServer = live_server()
    model_with_a_loop(server.storage_root / "models" / "large")
    status, body = server.request("POST", f"{API}/models/register",
                                  {"ModelName": "large", "Containers": [{"ModelDataUrl": "models/large"}]})
    assert status == 202 and body["status"] == CREATING, body
    record = server.wait(f"{API}/models/large", lambda record: record["status"] != CREATING, timeout=30)
    assert record["status"] == "Created", record
    assert sorted(record["artifacts"]["files"]) == ["model.pt", "weights.bin"]


def test_a_copy_interrupted_by_a_stop_fails_its_model_at_the_next_start(make_app) -> None:
    first = make_app()
    lifecycle = first.config["EXECUTOR"].platform
    lifecycle.put(MODEL, "interrupted", CREATING, {"model_dir": "unused", "artifacts": {}})
    (lifecycle.models_root / "interrupted").mkdir(parents=True)
    first.config["EXECUTOR"].store.close()
    second = make_app()
    record = second.test_client().get(f"{API}/models/interrupted").get_json()
    assert record["status"] == "Failed" and "stopped while the model folder was copied" in record["failureReason"]
    assert not (lifecycle.models_root / "interrupted").exists()
    deploy = second.test_client().post(f"{API}/endpoints/register", json={
        "ModelName": "interrupted", "EndpointConfigName": "c", "VariantName": "AllTraffic",
        "InitialInstanceCount": 1, "InstanceType": "ml.m5.large"})
    assert deploy.status_code == 201
    answer = second.test_client().post(f"{API}/endpoints/e/deploy_model", json={"EndpointConfigName": "c"})
    assert answer.status_code == 422 and "interrupted" in answer.get_json()["error"], answer.get_json()


def test_transform_inputs_are_walked_without_links_and_read_within_a_bound(live_server, monkeypatch) -> None:
    server: LiveServer = live_server()
    echo_model(server.storage_root / "models" / "echo")
    assert server.request("POST", f"{API}/models/register",
                          {"ModelName": "echo", "Containers": [{"ModelDataUrl": "models/echo"}]})[0] == 201
    inputs = server.storage_root / "inputs"
    inputs.mkdir()
    (inputs / "real.json").write_text("the real input")
    os.symlink(".", inputs / "loop")

    def transform(name: str) -> dict:
        status, record = server.request("POST", f"{API}/pipelines/inference", {
            "TransformJobName": name, "ModelName": "echo",
            "TransformInput": {"DataSource": {"S3DataSource": {"S3Uri": "inputs"}}}})
        assert status == 202, record
        return server.wait(f"{API}/pipelines/inference/{name}/get", lambda record: record["status"] != "InProgress")

    done = transform("looped")
    assert done["status"] == "Completed" and done["artifacts"]["records"] == 1, done
    monkeypatch.setattr(serving, "MAX_TRANSFORM_FILE_BYTES", 10)
    done = transform("bounded")
    assert done["status"] == "Failed" and "real.json holds 14 bytes" in done["failureReason"], done


def large_model(folder: Path, random_bytes: int = 0) -> Path:
    """A model folder just past the in-request bound: mostly a sparse file, so the test stays fast."""
    folder.mkdir(parents=True)
    (folder / "model.pt").write_bytes(os.urandom(random_bytes) if random_bytes else b"weights")
    with open(folder / "weights.bin", "wb") as weights:
        weights.truncate(serving.INLINE_COPY_BYTES + MEGABYTE)
    return folder


def register_large(server: LiveServer, name: str, random_bytes: int = 0) -> None:
    large_model(server.storage_root / "models" / name, random_bytes)
    status, body = server.request("POST", f"{API}/models/register",
                                  {"ModelName": name, "Containers": [{"ModelDataUrl": f"models/{name}"}]})
    assert status == 202, body
    assert server.wait(f"{API}/models/{name}", lambda record: record["status"] != CREATING)["status"] == "Created"


def download(server: LiveServer, path: str) -> tuple[int, bytes, str | None]:
    with urllib.request.urlopen(server.url + path, timeout=30) as response:
        return response.status, response.read(), response.headers.get("X-Content-SHA256")


def test_a_large_model_is_exported_in_the_background_once_and_downloads_stream_that_archive(live_server) -> None:
    server: LiveServer = live_server()
    register_large(server, "big")
    status, answer = server.request("POST", f"{API}/models/big/export")
    assert status == 202 and answer["status"] == CREATING and "sha256" not in answer, answer
    # While the archive is built, no request thread is held: /health answers promptly throughout.
    while (state := server.request("GET", answer["poll"])[1])["status"] == CREATING:
        started = time.monotonic()
        assert server.request("GET", "/health")[0] == 200
        assert time.monotonic() - started < 1.0
        time.sleep(0.05)
    assert state["status"] == "Created", state
    archive = server.executor.config.data_dir / "exports" / "models" / "big.tar.gz"
    content = archive.read_bytes()
    assert state["sha256"] == hashlib.sha256(content).hexdigest() and state["size"] == len(content)
    with tarfile.open(archive) as opened:
        assert sorted(opened.getnames()) == ["model.pt", "weights.bin"]
        assert opened.getmember("weights.bin").size == serving.INLINE_COPY_BYTES + MEGABYTE
    built = archive.stat()
    for _ in range(2):
        code, body, sha256 = download(server, state["download"])
        assert code == 200 and body == content and sha256 == state["sha256"]
    status, again = server.request("POST", f"{API}/models/big/export")
    assert status == 200 and again["sha256"] == state["sha256"] and again["size"] == state["size"], again
    kept = archive.stat()
    assert (kept.st_ino, kept.st_mtime_ns) == (built.st_ino, built.st_mtime_ns)  # built once, never rebuilt
    assert server.request("DELETE", f"{API}/models/big")[0] == 200
    assert not archive.exists()


def test_a_large_export_that_fills_the_disk_fails_naming_it_and_leaves_no_partial_archive(live_server) -> None:
    server: LiveServer = live_server()
    exports = server.executor.config.data_dir / "exports"
    exports.mkdir(parents=True, exist_ok=True)
    mounted = subprocess.run(["mount", "-t", "tmpfs", "-o", "size=1m", "tmpfs", str(exports)],
                             capture_output=True, text=True)
    if mounted.returncode != 0:
        pytest.skip(f"cannot mount a tmpfs here: {mounted.stderr.strip()}")
    try:
        register_large(server, "full", random_bytes=2 * MEGABYTE)  # 2 MiB that gzip cannot shrink
        status, answer = server.request("POST", f"{API}/models/full/export")
        assert status == 202, answer
        state = server.wait(answer["poll"], lambda state: state["status"] != CREATING, timeout=30)
        assert state["status"] == "Failed" and "No space left on device" in state["failureReason"], state
        assert "sha256" not in state
        assert not any(exports.rglob("*")) or [path.name for path in exports.rglob("*")] == ["models"]
        status, refused = server.request("GET", answer["download"])
        assert status == 409 and "No space left on device" in refused["error"], refused
        assert server.request("DELETE", f"{API}/models/full")[0] == 200
    finally:
        subprocess.run(["umount", "-l", str(exports)], check=False)
