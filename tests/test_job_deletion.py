"""Deleting a job removes its folder and its log with its record, once it has ended: links in them are
removed, never followed, and nothing outside the data folder is touched."""
from __future__ import annotations

import os
from pathlib import Path

import pytest

from conftest import LiveServer, pipeline_body, wait_final, write_pipeline

API = "/api/service/v1"


@pytest.fixture
def outside(tmp_path: Path) -> Path:
    """Files outside the data folder that a job's links point to: they must survive every delete."""
    folder = tmp_path / "outside"
    (folder / "tree").mkdir(parents=True)
    (folder / "keep.txt").write_text("keep")
    (folder / "tree" / "inner.txt").write_text("inner")
    return folder


def run_job(server: LiveServer, script: str) -> str:
    status, body = server.request("POST", f"{API}/pipelines/training/custom_script",
                                  pipeline_body(write_pipeline(server.storage_root, "job", script), "python pipe1.py"))
    assert status == 201, body
    return body["task_id"]


def job_files(data_dir: Path, job_id: str) -> tuple[Path, Path]:
    return data_dir / "jobs" / job_id, data_dir / "logs" / "jobs" / f"{job_id}.log"


def assert_outside_intact(outside: Path) -> None:
    assert (outside / "keep.txt").read_text() == "keep"
    assert (outside / "tree" / "inner.txt").read_text() == "inner"


def test_deleting_an_ended_job_removes_its_folder_and_log_and_not_what_its_links_point_to(
        live_server, data_dir: Path, outside: Path) -> None:
    server = live_server()
    script = (f"import os, pathlib\nout = pathlib.Path(os.environ['SM_OUTPUT_DATA_DIR'])\n"
              f"(out / 'real.txt').write_text('mine')\n"
              f"os.symlink({str(outside / 'keep.txt')!r}, out / 'file-link')\n"
              f"os.symlink({str(outside / 'tree')!r}, out / 'folder-link')\n"
              f"print('hello', flush=True)\n")
    job_id = run_job(server, script)
    assert wait_final(server, job_id)["task_status"] == "COMPLETED"
    folder, log = job_files(data_dir, job_id)
    assert (folder / "output" / "data" / "real.txt").is_file() and "hello" in log.read_text()

    status, body = server.request("DELETE", f"{API}/projects_pipelines/{job_id}/delete")
    assert status == 200 and body["deleted"] is True, body
    assert not folder.exists() and not log.exists()
    assert server.request("GET", f"/execute/{job_id}/getStatus")[0] == 404
    assert_outside_intact(outside)
    assert (data_dir / "jobs").is_dir() and (data_dir / "logs" / "jobs").is_dir()


@pytest.mark.skipif(os.name == "nt", reason="FIFOs and links as a POSIX job leaves them")
def test_a_job_folder_turned_link_and_a_log_turned_fifo_are_removed_without_following_or_blocking(
        live_server, data_dir: Path, outside: Path) -> None:
    server = live_server()
    job_id = run_job(server, "print('done', flush=True)\n")
    assert wait_final(server, job_id)["task_status"] == "COMPLETED"
    folder, log = job_files(data_dir, job_id)
    # What a process the job left behind may do once the job has ended: the names themselves swapped.
    os.rename(folder, folder.with_name("moved"))
    folder.symlink_to(outside, target_is_directory=True)
    log.unlink()
    os.mkfifo(log)

    status, body = server.request("DELETE", f"{API}/projects_pipelines/{job_id}/delete")
    assert status == 200 and body["deleted"] is True, body
    assert not os.path.lexists(folder) and not os.path.lexists(log)
    assert_outside_intact(outside)


def test_a_running_job_keeps_its_files_until_it_has_stopped_and_is_deleted_again(live_server, data_dir: Path) -> None:
    server = live_server()
    job_id = run_job(server, "import time\nprint('sleeping now', flush=True)\ntime.sleep(60)\n")
    folder, log = job_files(data_dir, job_id)
    # The script's own line: the executor's "job … started" line comes before the job's folder exists.
    server.wait(f"/execute/{job_id}/getLog", lambda body: "sleeping now" in body["logs"]["content"])

    status, body = server.request("DELETE", f"{API}/projects_pipelines/{job_id}/delete")
    if status == 202:  # the stop is under way: nothing is removed while the job may still write
        assert body["deleted"] is False and folder.is_dir() and log.is_file()
        assert wait_final(server, job_id)["task_status"] == "CANCELLED"
        status, body = server.request("DELETE", f"{API}/projects_pipelines/{job_id}/delete")
    assert status == 200 and body["deleted"] is True, body
    assert not folder.exists() and not log.exists()
