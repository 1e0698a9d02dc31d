"""A job's output listing is bounded: the first files, model/ before output/, and whether more were left out."""
from __future__ import annotations

from pathlib import Path

import pytest

from mlops.job_outputs import list_outputs


@pytest.fixture
def job_dir(tmp_path: Path) -> Path:
    for relative in ("model/a.bin", "model/b.bin", "output/data/x.txt", "output/data/y.txt"):
        (tmp_path / relative).parent.mkdir(parents=True, exist_ok=True)
        (tmp_path / relative).write_bytes(b"12")
    return tmp_path


def paths(job_dir: Path, limit: int | None) -> tuple[list[str], bool]:
    listing = list_outputs(job_dir, limit=limit)
    return [item.path for item in listing.files], listing.truncated


def test_a_listing_under_the_bound_holds_every_file_and_is_not_cut(job_dir: Path):
    every = ["model/a.bin", "model/b.bin", "output/data/x.txt", "output/data/y.txt"]
    assert paths(job_dir, 5) == (every, False)
    assert paths(job_dir, 4) == (every, False)
    assert paths(job_dir, None) == (every, False)


def test_a_listing_over_the_bound_holds_the_first_files_and_says_it_was_cut(job_dir: Path):
    assert paths(job_dir, 3) == (["model/a.bin", "model/b.bin", "output/data/x.txt"], True)
    assert paths(job_dir, 1) == (["model/a.bin"], True)


def test_a_bound_reached_at_the_end_of_a_folder_is_cut_only_when_the_next_folder_has_a_file(job_dir: Path):
    assert paths(job_dir, 2) == (["model/a.bin", "model/b.bin"], True)
    for name in ("x.txt", "y.txt"):
        (job_dir / "output" / "data" / name).unlink()
    (job_dir / "output" / "data" / "empty").mkdir()
    assert paths(job_dir, 2) == (["model/a.bin", "model/b.bin"], False)

