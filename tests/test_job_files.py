"""Reading files a job controls: links, FIFOs and devices are refused, reads are bounded, nothing blocks."""
from __future__ import annotations

import os
import threading
from pathlib import Path

import pytest

from mlops import job_files
from mlops.job_files import TooManyEntries, UnsafeFile, append_text, read_bounded, read_tail, regular_files

pytestmark = pytest.mark.skipif(os.name == "nt", reason="links and FIFOs as a POSIX job makes them")


@pytest.fixture
def job_root(tmp_path: Path) -> Path:
    root = tmp_path / "job"
    (root / "output" / "data").mkdir(parents=True)
    return root


def test_a_regular_file_is_read_up_to_the_bound(job_root: Path):
    (job_root / "output" / "data" / "result.txt").write_bytes(b"x" * 1000)
    data, size = read_bounded(job_root, "output/data/result.txt", 100)
    assert (len(data), size) == (100, 1000)


def test_the_tail_is_the_last_bytes(job_root: Path):
    (job_root / "job.log").write_bytes(b"".join(b"line %d\n" % number for number in range(10_000)))
    data, size = read_tail(job_root, "job.log", 20)
    assert data.endswith(b"line 9999\n") and len(data) == 20 and size > 20


def test_a_link_to_a_secret_file_is_refused(job_root: Path, tmp_path: Path):
    key = tmp_path / "secret.key"
    key.write_text("the key")
    (job_root / "job.log").symlink_to(key)
    with pytest.raises(UnsafeFile):
        read_tail(job_root, "job.log", 100)


@pytest.mark.parametrize("descriptors", [True, False], ids=["by descriptors", "by lstat (the Windows way)"])
def test_a_linked_folder_on_the_way_is_refused(job_root: Path, tmp_path: Path, monkeypatch, descriptors: bool):
    monkeypatch.setattr(job_files, "_DIR_FD", descriptors)
    outside = tmp_path / "outside"
    outside.mkdir()
    (outside / "passwd").write_text("root:x:0:0")
    os.rmdir(job_root / "output" / "data")
    (job_root / "output" / "data").symlink_to(outside)
    with pytest.raises(UnsafeFile):
        read_bounded(job_root, "output/data/passwd", 100)
    assert regular_files(job_root, "output/data", 100) == ([], False)
    assert regular_files(job_root, "output", 100) == ([], False)


def test_a_link_to_dev_zero_is_refused_without_reading(job_root: Path):
    (job_root / "job.log").symlink_to("/dev/zero")
    with pytest.raises(UnsafeFile):
        read_tail(job_root, "job.log", 1 << 20)


def test_a_fifo_is_refused_at_once(job_root: Path):
    os.mkfifo(job_root / "job.log")
    outcome: list[BaseException] = []
    reader = threading.Thread(target=lambda: _catch(outcome, lambda: read_tail(job_root, "job.log", 100)))
    reader.start()
    reader.join(timeout=5)
    assert not reader.is_alive(), "reading a FIFO blocked"
    assert isinstance(outcome[0], UnsafeFile)


def test_a_missing_folder_or_a_fifo_in_its_place_lists_nothing_at_once(job_root: Path):
    os.mkfifo(job_root / "model")
    outcome: list[object] = []
    lister = threading.Thread(target=lambda: outcome.extend(
        [regular_files(job_root, "model", 10), regular_files(job_root, "output/missing", 10)]), daemon=True)
    lister.start()
    lister.join(timeout=5)
    assert not lister.is_alive(), "listing a FIFO blocked"
    assert outcome == [([], False), ([], False)]


def test_appending_never_writes_through_a_link(job_root: Path, tmp_path: Path):
    key = tmp_path / "secret.key"
    key.write_text("the key")
    (job_root / "job.log").symlink_to(key)
    with pytest.raises(OSError):
        append_text(job_root, "job.log", "appended\n")
    assert key.read_text() == "the key"


def test_listing_skips_links_and_special_files_and_is_bounded(job_root: Path, tmp_path: Path):
    data = job_root / "output" / "data"
    (data / "a.txt").write_text("a")
    (data / "sub").mkdir()
    (data / "sub" / "b.txt").write_text("bb")
    (data / "passwd").symlink_to("/etc/passwd")
    (data / "etc").symlink_to("/etc")
    os.mkfifo(data / "pipe")
    entries, more = regular_files(job_root, "output/data", 10)
    assert [(entry.relative, entry.size) for entry in entries] == [("output/data/a.txt", 1),
                                                                    ("output/data/sub/b.txt", 2)]
    assert not more
    entries, more = regular_files(job_root, "output/data", 1)
    assert len(entries) == 1 and more


def test_a_folder_swapped_for_a_fifo_after_listing_is_skipped_at_once(job_root: Path, monkeypatch):
    # A job can swap a listed folder for a FIFO before the walk opens it; the race itself is timing, so
    # the swap is made here deterministically, right after the listing step, where the race would land.
    data = job_root / "output" / "data"
    (data / "a.txt").write_text("a")
    (data / "d").mkdir()
    (data / "d" / "inner.txt").write_text("i")
    (data / "z.txt").write_text("z")
    real_listing = job_files._list_folder

    def list_then_swap(fd, walk):
        names = real_listing(fd, walk)
        if ("d", True) in names:
            os.unlink(data / "d" / "inner.txt")
            os.rmdir(data / "d")
            os.mkfifo(data / "d")
        return names

    monkeypatch.setattr(job_files, "_list_folder", list_then_swap)
    outcome: list[object] = []
    lister = threading.Thread(target=lambda: outcome.append(regular_files(job_root, "output", 10)), daemon=True)
    lister.start()
    lister.join(timeout=5)
    assert not lister.is_alive(), "the walk blocked opening a FIFO put where a folder was listed"
    entries, more = outcome[0]
    assert [entry.relative for entry in entries] == ["output/data/a.txt", "output/data/z.txt"] and not more


def _counting_entries(monkeypatch) -> list[int]:
    visited = [0]
    real_spend = job_files._Walk.spend

    def spend(walk):
        visited[0] += 1
        real_spend(walk)

    monkeypatch.setattr(job_files._Walk, "spend", spend)
    return visited


def test_empty_folders_cannot_make_a_listing_long(job_root: Path, monkeypatch):
    data = job_root / "output" / "data"
    budget = 30
    monkeypatch.setattr(job_files, "MAX_COMPLETE_WALK_ENTRIES", budget)
    for number in range(3 * budget):
        (data / f"empty-{number:04d}").mkdir()
    (data / "zz-the-file.txt").write_text("late")
    visited = _counting_entries(monkeypatch)
    entries, more = regular_files(job_root, "output/data", 2)
    assert (entries, more) == ([], True)
    assert visited[0] <= budget + 1  # the last one finds the budget spent and stops the walk


def test_one_crowded_folder_is_read_only_up_to_the_budget(job_root: Path, monkeypatch):
    data = job_root / "output" / "data"
    budget = 30
    monkeypatch.setattr(job_files, "MAX_COMPLETE_WALK_ENTRIES", budget)
    for number in range(3 * budget):
        (data / f"name-{number:04d}").mkdir()
    visited = _counting_entries(monkeypatch)
    assert regular_files(job_root, "output/data", 1) == ([], True)
    assert visited[0] <= budget + 1


def test_a_listing_limit_counts_files_only(job_root: Path):
    data = job_root / "output" / "data"
    for number in range(11):
        (data / f"a-folder-{number:02d}").mkdir()
        os.symlink("/etc/passwd", data / f"a-link-{number:02d}")
    (data / "model.pt").write_bytes(b"weights")
    entries, more = regular_files(job_root, "output/data", 1)
    assert [entry.relative for entry in entries] == ["output/data/model.pt"] and not more


def test_a_complete_listing_is_refused_rather_than_cut(job_root: Path, monkeypatch):
    data = job_root / "output" / "data"
    for number in range(5):
        (data / f"file-{number}").write_text("x")
    monkeypatch.setattr(job_files, "MAX_COMPLETE_WALK_ENTRIES", 5)
    assert len(regular_files(job_root, "output/data", None)[0]) == 5
    (data / "file-5").write_text("x")
    with pytest.raises(TooManyEntries):
        regular_files(job_root, "output/data", None)


def test_folders_nested_past_the_depth_bound_stop_the_walk(job_root: Path, monkeypatch):
    monkeypatch.setattr(job_files, "MAX_FOLDER_DEPTH", 3)
    deep = job_root / "output" / "data" / "1" / "2" / "3"
    deep.mkdir(parents=True)
    (deep / "kept.txt").write_text("k")
    assert [entry.relative for entry in regular_files(job_root, "output/data", 10)[0]] == [
        "output/data/1/2/3/kept.txt"]
    (deep / "4").mkdir()
    entries, more = regular_files(job_root, "output/data", 10)
    assert more
    with pytest.raises(TooManyEntries):
        regular_files(job_root, "output/data", None)


def test_paths_leaving_the_folder_are_refused(job_root: Path):
    for bad in ("../x", "/etc/passwd", ""):
        with pytest.raises(UnsafeFile):
            read_bounded(job_root, bad, 10)


def _catch(outcome: list[BaseException], action) -> None:
    try:
        action()
    except BaseException as exc:  # the test inspects what was raised
        outcome.append(exc)
