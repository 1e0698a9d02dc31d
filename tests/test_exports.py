"""Local exports: one file with its size and SHA-256; a model folder as a reproducible model.tar.gz without links."""
from __future__ import annotations

import hashlib
import io
import os
import tarfile

import pytest

from mlops import job_files
from mlops.exports import file_export, folder_export
from mlops.job_files import TooManyEntries


def model_folder(root):
    (root / "code").mkdir(parents=True)
    (root / "model.pt").write_bytes(b"weights")
    (root / "code" / "inference.py").write_text("def model_fn(d): ...\n")
    return root


def test_the_same_model_archives_to_the_same_bytes(tmp_path):
    folder = model_folder(tmp_path / "model")
    first = folder_export(folder, tmp_path / "out" / "a.tar.gz")
    os.utime(folder / "model.pt", (1_700_000_000, 1_700_000_000))  # another mtime must not change the archive
    second = folder_export(folder, tmp_path / "out" / "b.tar.gz")
    assert first.sha256 == second.sha256 == hashlib.sha256(first.path.read_bytes()).hexdigest()
    assert first.size == first.path.stat().st_size
    with tarfile.open(first.path) as archive:
        assert sorted(archive.getnames()) == ["code/inference.py", "model.pt"]
        assert archive.extractfile("model.pt").read() == b"weights"


def test_links_in_a_model_folder_are_left_out(tmp_path):
    folder = model_folder(tmp_path / "model")
    secret = tmp_path / "secret.txt"
    secret.write_text("not the model's")
    (folder / "leak.txt").symlink_to(secret)
    (folder / "code" / "outside").symlink_to(tmp_path)
    export = folder_export(folder, tmp_path / "out.tar.gz")
    with tarfile.open(fileobj=io.BytesIO(export.path.read_bytes())) as archive:
        assert sorted(archive.getnames()) == ["code/inference.py", "model.pt"]


def test_a_model_folder_past_the_walk_bound_is_refused_not_archived_in_part(tmp_path, monkeypatch):
    folder = model_folder(tmp_path / "model")
    monkeypatch.setattr(job_files, "MAX_COMPLETE_WALK_ENTRIES", 2)  # model.pt, code, code/inference.py: 3
    with pytest.raises(TooManyEntries):
        folder_export(folder, tmp_path / "out" / "model.tar.gz")
    assert not (tmp_path / "out").exists() or not any((tmp_path / "out").iterdir())


def test_a_file_export_refuses_a_link(tmp_path):
    target = tmp_path / "data.csv"
    target.write_bytes(b"a,b\n")
    assert file_export(target).sha256 == hashlib.sha256(b"a,b\n").hexdigest()
    (tmp_path / "link.csv").symlink_to(target)
    with pytest.raises(OSError):
        file_export(tmp_path / "link.csv")
