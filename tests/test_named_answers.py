"""Failures that used to answer 500 answer with a status and a reason of their own: a full disk on an
upload (507, nothing kept), a model whose answer cannot be read (502 naming it), file names that a
header cannot carry as they are (RFC 6266), and a model folder crowded with folders and links."""
from __future__ import annotations

import io
import os
import subprocess
import tarfile
import textwrap
from pathlib import Path
from urllib.parse import quote

import pytest

from api.downloads import attachment
from conftest import LiveServer
from test_model_lifecycle_local import API, deploy

pytestmark = pytest.mark.skipif(os.name == "nt", reason="tmpfs mounts and POSIX file names")


@pytest.fixture
def small_disk(tmp_path: Path):
    """A real 1 MiB filesystem (tmpfs) to put the storage root on; the test is skipped where mounting is not allowed."""
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


def test_an_upload_to_a_full_disk_answers_507_and_keeps_nothing(live_server, small_disk: Path) -> None:
    storage = small_disk / "storage"
    server: LiveServer = live_server(local_storage_root=str(storage))
    (storage / "datasets").mkdir(parents=True)
    before = sorted(path.relative_to(small_disk) for path in small_disk.rglob("*"))

    status, body = server.upload(f"{API}/datasets", {"Bucket": "new-bucket", "Key": "deep/folder/big.bin"},
                                 [("file", "big.bin", os.urandom(2 << 20), "application/octet-stream")])
    assert status == 507, body
    assert "no space left" in body["error"] and "new-bucket/deep/folder/big.bin" in body["error"]
    assert sorted(path.relative_to(small_disk) for path in small_disk.rglob("*")) == before
    assert server.request("GET", f"{API}/datasets/list")[1] == []

    # The disk is usable again at once: a small upload is kept whole.
    status, body = server.upload(f"{API}/datasets", {"Bucket": "new-bucket", "Key": "small.csv"},
                                 [("file", "small.csv", b"a,b\n1,2\n", "text/csv")])
    assert status == 201, body
    assert (storage / "datasets" / "new-bucket" / "small.csv").read_bytes() == b"a,b\n1,2\n"


def answering_model(folder: Path, answer: str) -> Path:
    """A model folder whose inference.py answers the given JSON text to every request."""
    (folder / "code").mkdir(parents=True)
    (folder / "model.pt").write_bytes(b"unused: model_fn below loads nothing")
    (folder / "code" / "inference.py").write_text(textwrap.dedent(f"""
        def model_fn(model_dir):
            return None

        def predict_fn(data, model):
            return None

        def output_fn(prediction, accept):
            return {answer!r}
    """))
    return folder


@pytest.mark.parametrize("answer, reason", [
    ("[" * 100_000 + "]" * 100_000, "nested deeper than"),
    ('{"predictions": [1, 2', "not valid JSON"),
])
def test_a_model_answer_that_cannot_be_read_is_a_502_naming_the_model(live_server, answer: str, reason: str) -> None:
    server: LiveServer = live_server()
    answering_model(server.storage_root / "models" / "odd", answer)
    assert deploy(server, "odd-model", "odd", Containers=[{"ModelDataUrl": "models/odd"}])["status"] == "InService"
    status, body = server.request("POST", f"{API}/endpoints/odd/infer", {"instances": [1]})
    assert status == 502, body
    assert "odd-model" in body["error"] and "'odd'" in body["error"] and reason in body["error"], body
    assert server.request("GET", "/health")[0] == 200


# File names a job may give its outputs, and how RFC 6266 and RFC 5987 carry them: an ASCII fallback
# without quotes, and the exact name percent-encoded in UTF-8.
@pytest.mark.parametrize("name, expected", [
    ("model.pt", 'attachment; filename="model.pt"'),
    ("résumé.txt", "attachment; filename=\"resume.txt\"; filename*=UTF-8''r%C3%A9sum%C3%A9.txt"),
    ("日本語.txt", "attachment; filename=\".txt\"; filename*=UTF-8''%E6%97%A5%E6%9C%AC%E8%AA%9E.txt"),
    ('a"; filename="evil.sh', "attachment; filename=\"a_; filename=_evil.sh\"; "
                              "filename*=UTF-8''a%22%3B%20filename%3D%22evil.sh"),
])
def test_output_file_names_are_served_per_rfc_6266_and_never_inject(app, client, tmp_path: Path, name: str,
                                                                      expected: str) -> None:
    job_id = "f11e0000-0000-4000-8000-000000000000"
    (tmp_path / "output" / "data").mkdir(parents=True)
    (tmp_path / "output" / "data" / name).write_bytes(b"content")
    app.config["EXECUTOR"].store.create_job(job_id, kind="pipeline", backend="local", request={"name": "names"},
                                            secrets=None, log_path=str(tmp_path / "job.log"),
                                            output_dir=str(tmp_path))
    listed = client.get(f"/api/jobs/{job_id}/files").get_json()["files"]
    answer = client.get(f"/api/jobs/{job_id}/files/{quote(listed[0]['path'])}")
    assert answer.status_code == 200 and answer.data == b"content"
    assert answer.headers.get_all("Content-Disposition") == [expected]


def test_a_control_character_in_a_name_never_reaches_a_header_as_it_is() -> None:
    assert attachment("two\nlines\r.txt") == "attachment; filename=\"two_lines_.txt\"; filename*=UTF-8''two%0Alines%0D.txt"


def test_a_model_folder_crowded_with_folders_and_links_still_downloads(app, client, tmp_path: Path) -> None:
    job_id = "c20d0000-0000-4000-8000-000000000000"
    model = tmp_path / "model"
    model.mkdir()
    for number in range(12):
        (model / f"a-folder-{number:02d}").mkdir()
        os.symlink("/etc/hostname", model / f"a-link-{number:02d}")
    (model / "model.pt").write_bytes(b"weights")
    app.config["EXECUTOR"].store.create_job(job_id, kind="training", backend="local", request={"name": "crowded"},
                                            secrets=None, log_path=str(tmp_path / "job.log"),
                                            output_dir=str(tmp_path))
    answer = client.get(f"/api/jobs/{job_id}/model.tar.gz")
    assert answer.status_code == 200, answer.get_json()
    with tarfile.open(fileobj=io.BytesIO(answer.data), mode="r:gz") as tar:
        assert tar.getnames() == ["model.pt"]
