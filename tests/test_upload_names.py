"""Uploads and staged folders against hostile names and links: distinct names never overwrite one
another, impossible names are a 4xx, and links never carry a job out of the storage root."""
from __future__ import annotations

import os

import pytest

from conftest import pipeline_body, wait_final, write_pipeline

API = "/api/service/v1"


def upload(server, key: str, content: bytes = b"a,b\n1,2\n", filename: str = "data.csv"):
    return server.upload(f"{API}/datasets", {"Key": key}, [("file", filename, content, "text/csv")])


def test_unicode_names_mapping_to_one_key_are_a_409_not_an_overwrite(live_server):
    server = live_server()
    status, first = upload(server, "données.csv", b"first\n")
    assert status == 201, first
    status, second = upload(server, "donnees.csv", b"second\n")
    assert status == 409 and "données.csv" in second["error"]
    assert (server.storage_root / "datasets" / "datasets" / "donnees.csv").read_bytes() == b"first\n"
    assert upload(server, "données.csv", b"again\n")[0] == 201  # the same name replaces its own file


def test_names_with_no_ascii_left_collide_too(live_server):
    server = live_server()
    assert upload(server, "日本.csv")[0] == 201
    assert upload(server, "中国.csv")[0] == 409


def test_an_over_long_name_is_a_400(live_server):
    server = live_server()
    status, body = upload(server, "x" * 300 + ".csv")
    assert status == 400 and body["field"] == "Key"


def test_file_and_folder_clashes_are_a_409(live_server):
    server = live_server()
    assert upload(server, "a")[0] == 201
    assert upload(server, "a/b.csv")[0] == 409
    assert upload(server, "c/d.csv")[0] == 201
    assert upload(server, "c")[0] == 409


@pytest.mark.skipif(os.name == "nt", reason="symlinks as a POSIX user makes them")
def test_no_link_in_a_pipeline_folder_is_copied_not_even_one_into_the_storage_root(live_server, tmp_path):
    # A staged copy never follows a link, wherever it points (docs/security.md, "Trees of files"): a
    # link into the storage root could be swapped for one out of it between the check and the copy.
    server = live_server()
    secret = tmp_path / "outside.txt"
    secret.write_text("outside the storage root")
    script = "import os\nprint('listing', sorted(os.listdir('.')), flush=True)\n"
    folder = write_pipeline(server.storage_root, "linked", script)
    (server.storage_root / folder / "etc").symlink_to("/etc")
    (server.storage_root / folder / "outside.txt").symlink_to(secret)
    (server.storage_root / "shared.txt").write_text("shared in the root")
    (server.storage_root / folder / "inside.txt").symlink_to(server.storage_root / "shared.txt")
    status, accepted = server.request("POST", "/execute", pipeline_body(folder, "python pipe1.py"))
    assert status == 201
    assert wait_final(server, accepted["task_id"])["task_status"] == "COMPLETED"
    _, log = server.request("GET", f"/execute/{accepted['task_id']}/getLog")
    content = log["logs"]["content"]
    assert "listing ['pipe1.py']" in content
    assert "shared in the root" not in content and "outside the storage root" not in content
