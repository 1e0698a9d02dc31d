"""Dataset and code uploads: one content-addressed archive, sent once, readable by the bundled script."""
from __future__ import annotations

import gzip
import io
import os
import subprocess
import sys
import tarfile
from pathlib import Path

import pytest
from aws_fixtures import BUCKET, ROOT, aws, aws_setup, clients, config, write_dataset  # noqa: F401

from mlops.sagemaker import dataset_upload as du
from mlops.sagemaker.training_service import SageMakerTrainingService
from mlops.errors import InvalidRequest, SageMakerError


def unpack_with_the_bundled_script(archive: Path, target: Path) -> None:
    """Unpack an archive with training_scripts/dataset.py, as the training container does."""
    code = "import sys; from pathlib import Path; from dataset import unpack_archive; " \
           "unpack_archive(Path(sys.argv[1]), Path(sys.argv[2]))"
    subprocess.run([sys.executable, "-c", code, str(archive), str(target)], cwd=ROOT / "training_scripts",
                   check=True, timeout=60)


@pytest.fixture
def service(config, clients, aws_setup):  # noqa: F811
    return SageMakerTrainingService(config, clients)


def s3_writes(clients) -> int:  # noqa: F811
    calls = clients.counter.snapshot()["calls"]
    return sum(count for (service, op), count in calls.items()
               if service == "s3" and op in ("PutObject", "CreateMultipartUpload", "UploadPart"))


def download(clients, uri: str, name: str, tmp_path: Path) -> Path:  # noqa: F811
    bucket, _, key = uri[len("s3://"):].partition("/")
    target = tmp_path / "downloaded" / name
    target.parent.mkdir(parents=True, exist_ok=True)
    clients.client("s3").download_file(bucket, key + name, str(target))
    return target


def test_a_folder_of_thousands_of_files_is_one_put_and_the_script_reads_it_back(service, clients, tmp_path):  # noqa: F811
    dataset = write_dataset(tmp_path / "images", files=2000)
    uri = service.upload_training_data(str(dataset), "metadata.csv", BUCKET, "team/runs")
    assert uri.startswith(f"s3://{BUCKET}/team/runs/datasets/") and uri.endswith("/")
    assert s3_writes(clients) == 1
    archive = download(clients, uri, "dataset.tar", tmp_path)
    unpacked = tmp_path / "unpacked"
    unpack_with_the_bundled_script(archive, unpacked)
    assert sorted(p.name for p in unpacked.iterdir()) == sorted(p.name for p in dataset.iterdir())
    assert (unpacked / "img_01999.png").read_bytes() == (dataset / "img_01999.png").read_bytes()
    assert (unpacked / "metadata.csv").read_text() == (dataset / "metadata.csv").read_text()


def test_an_unchanged_dataset_is_not_uploaded_again(service, clients, tmp_path):  # noqa: F811
    dataset = write_dataset(tmp_path / "images")
    first = service.upload_training_data(str(dataset), None, BUCKET, "p")
    writes = s3_writes(clients)
    for path in dataset.iterdir():  # touching files changes nothing that is uploaded
        os.utime(path, (1, 1))
    assert service.upload_training_data(str(dataset), None, BUCKET, "p") == first
    assert s3_writes(clients) == writes
    assert clients.counter.total("s3", "HeadObject") == 2


def test_a_changed_file_gives_a_new_content_address(service, tmp_path):
    dataset = write_dataset(tmp_path / "images")
    first = service.upload_training_data(str(dataset), None, BUCKET, "p")
    (dataset / "img_00000.png").write_bytes(b"other bytes")
    assert service.upload_training_data(str(dataset), None, BUCKET, "p") != first


def test_the_archive_is_deterministic_and_carries_no_owner_or_time(tmp_path):
    dataset = write_dataset(tmp_path / "images")
    entries = du.dataset_entries(dataset)
    data = b"".join(du.tar_chunks(entries))
    assert len(data) == du.tar_size(entries)
    assert du.archive_sha256(entries) == du.archive_sha256(du.dataset_entries(dataset))
    with tarfile.open(fileobj=io.BytesIO(data)) as tar:
        members = tar.getmembers()
    assert [m.name for m in members] == sorted(m.name for m in members)
    assert {(m.mtime, m.uid, m.gid, m.uname, m.mode) for m in members} == {(0, 0, 0, "", 0o644)}


def test_a_metadata_file_from_outside_the_folder_lands_at_the_archive_root(service, clients, tmp_path):  # noqa: F811
    dataset = tmp_path / "images"
    (dataset / "cats").mkdir(parents=True)
    (dataset / "cats" / "a.png").write_bytes(b"png")
    labels = tmp_path / "elsewhere" / "labels (v2).csv"
    labels.parent.mkdir()
    labels.write_text("filename,label\ncats/a.png,cat\n")
    uri = service.upload_training_data(str(dataset), str(labels), BUCKET, "")
    assert uri.startswith(f"s3://{BUCKET}/datasets/")
    with tarfile.open(download(clients, uri, "dataset.tar", tmp_path)) as tar:
        assert tar.getnames() == ["cats/a.png", "labels (v2).csv"]


def test_special_characters_in_folder_and_file_names_survive(service, clients, tmp_path):  # noqa: F811
    dataset = tmp_path / "dätä set; $(rm -rf) & 'quotes'"
    dataset.mkdir()
    (dataset / "ünïcødé name.png").write_bytes(b"x")
    uri = service.upload_training_data(str(dataset), None, BUCKET, "p")
    with tarfile.open(download(clients, uri, "dataset.tar", tmp_path)) as tar:
        assert tar.getnames() == ["ünïcødé name.png"]


def test_symbolic_links_are_not_followed_out_of_the_dataset(tmp_path):
    dataset = write_dataset(tmp_path / "images", files=1)
    secret = tmp_path / "secret.txt"
    secret.write_text("do not upload")
    (dataset / "link.txt").symlink_to(secret)
    assert "link.txt" not in [entry.name for entry in du.dataset_entries(dataset)]


@pytest.mark.parametrize("args, field", [
    (("", None, BUCKET, "p"), "dataset_folder"), (("   ", None, BUCKET, "p"), "dataset_folder"),
    (("{ds}", "", BUCKET, "p"), "metadata_file"),
    (("{ds}", None, "", "p"), "s3_bucket"), (("{ds}", None, "Bad_Bucket!", "p"), "s3_bucket"),
    (("{ds}", None, BUCKET, "a#b/`x`"), "s3_prefix"), (("{ds}", None, BUCKET, "../up"), "s3_prefix"),
])
def test_bad_arguments_are_refused_before_any_aws_call(service, clients, tmp_path, args, field):  # noqa: F811
    dataset = write_dataset(tmp_path / "images", files=1)
    args = tuple(str(dataset) if a == "{ds}" else a for a in args)
    before = clients.counter.total()
    with pytest.raises(InvalidRequest) as raised:
        service.upload_training_data(*args)
    assert raised.value.field == field
    assert clients.counter.total() == before


def test_missing_or_empty_datasets_and_metadata_files_fail_with_a_reason(service, tmp_path):
    with pytest.raises(SageMakerError, match="does not exist"):
        service.upload_training_data(str(tmp_path / "nope"), None, BUCKET, "p")
    (tmp_path / "empty").mkdir()
    with pytest.raises(SageMakerError, match="holds no files"):
        service.upload_training_data(str(tmp_path / "empty"), None, BUCKET, "p")
    dataset = write_dataset(tmp_path / "images", files=1)
    with pytest.raises(SageMakerError, match="metadata file"):
        service.upload_training_data(str(dataset), "missing.csv", BUCKET, "p")


def test_a_large_dataset_goes_up_in_multipart_parts(service, clients, tmp_path):  # noqa: F811
    dataset = tmp_path / "big"
    dataset.mkdir()
    (dataset / "blob.bin").write_bytes(os.urandom(20 * 1024 * 1024))
    service.upload_training_data(str(dataset), None, BUCKET, "p")
    calls = clients.counter.snapshot()["calls"]
    assert calls.get(("s3", "CreateMultipartUpload")) == 1
    assert calls.get(("s3", "UploadPart")) == 2
    assert ("s3", "PutObject") not in calls


def test_a_dataset_that_changes_during_the_upload_is_removed_and_reported(service, clients, monkeypatch, tmp_path):  # noqa: F811
    dataset = write_dataset(tmp_path / "images", files=2)
    monkeypatch.setattr(du, "archive_sha256", lambda entries: "0" * 64)  # the first pass saw other bytes
    with pytest.raises(SageMakerError, match="changed while it was being uploaded"):
        service.upload_training_data(str(dataset), None, BUCKET, "p")
    listed = clients.client("s3").list_objects_v2(Bucket=BUCKET, Prefix="p/")
    assert listed.get("KeyCount", 0) == 0


def test_the_code_archive_is_deterministic_and_leaves_caches_out(clients, aws_setup, tmp_path):  # noqa: F811
    code = tmp_path / "code"
    (code / "__pycache__").mkdir(parents=True)
    (code / "__pycache__" / "train.cpython-311.pyc").write_bytes(b"x")
    (code / "train.py").write_text("print('hi')\n")
    (code / "requirements.txt").write_text("")
    s3 = clients.client("s3")
    first = du.upload_source(s3, code, BUCKET, "p")
    os.utime(code / "train.py", (5, 5))
    second = du.upload_source(s3, code, BUCKET, "p")
    assert first.uri == second.uri and first.uploaded and not second.uploaded
    assert first.uri == f"s3://{BUCKET}/p/code/{first.sha256}/sourcedir.tar.gz"
    body = s3.get_object(Bucket=BUCKET, Key=first.key)["Body"].read()
    with tarfile.open(fileobj=io.BytesIO(gzip.decompress(body))) as tar:
        assert tar.getnames() == ["requirements.txt", "train.py"]


def test_the_bundled_training_scripts_pack(tmp_path):
    entries = du.source_entries(ROOT / "training_scripts")
    assert "train.py" in [entry.name for entry in entries]
    assert not any("__pycache__" in entry.name for entry in entries)
