"""A local job's dataset is a snapshot: hard links on the same filesystem, read-only to the job, unchanged by re-uploads."""
from __future__ import annotations

import json
import os
import shutil
import stat
import subprocess
import sys
from pathlib import Path

import pytest

from conftest import wait_final
from mlops import job_files
from mlops.job_files import Placement, UnsafeFile, snapshot_tree
from mlops.sandbox import Sandbox


def always(_info: os.stat_result) -> bool:
    return True


def write_dataset(folder: Path) -> Path:
    (folder / "images").mkdir(parents=True)
    (folder / "metadata.csv").write_text("filename,label\nimages/a.png,cat\n")
    (folder / "images" / "a.png").write_bytes(b"first upload")
    os.chmod(folder / "images" / "a.png", 0o644)
    return folder


def test_a_snapshot_links_every_file_and_writes_no_bytes(tmp_path):
    source = write_dataset(tmp_path / "dataset")
    snapshot = snapshot_tree(source, tmp_path / "job" / "channel", 1 << 30, always)
    assert snapshot.placed[Placement.LINK] == 2 and snapshot.placed[Placement.COPY] == 0
    for name in ("metadata.csv", "images/a.png"):
        assert os.stat(tmp_path / "job" / "channel" / name).st_ino == os.stat(source / name).st_ino


def test_a_snapshot_keeps_what_was_there_when_the_dataset_is_replaced_later(tmp_path):
    source = write_dataset(tmp_path / "dataset")
    snapshot_tree(source, tmp_path / "channel", 1 << 30, always)
    # A re-upload writes a new file and renames it over the old name, as the upload route does.
    (source / "images" / ".upload").write_bytes(b"second upload")
    os.replace(source / "images" / ".upload", source / "images" / "a.png")
    (source / "images" / "b.png").write_bytes(b"added later")
    assert (tmp_path / "channel" / "images" / "a.png").read_bytes() == b"first upload"
    assert not (tmp_path / "channel" / "images" / "b.png").exists()


def test_files_the_policy_refuses_are_copies_of_their_own(tmp_path):
    source = write_dataset(tmp_path / "dataset")
    os.chmod(source / "metadata.csv", 0o600)
    snapshot = snapshot_tree(source, tmp_path / "channel", 1 << 30, lambda info: bool(info.st_mode & stat.S_IROTH))
    assert snapshot.placed[Placement.LINK] == 1
    assert snapshot.placed[Placement.COPY] + snapshot.placed[Placement.REFLINK] == 1
    assert os.stat(tmp_path / "channel" / "metadata.csv").st_nlink == 1
    assert snapshot.describe().startswith("hard link: 1, ")


def test_links_in_the_dataset_are_neither_followed_nor_linked(tmp_path):
    source = write_dataset(tmp_path / "dataset")
    secret = tmp_path / "secret"
    secret.write_text("not the job's")
    (source / "images" / "escape.png").symlink_to(secret)
    snapshot_tree(source, tmp_path / "channel", 1 << 30, always)
    assert sorted(path.name for path in (tmp_path / "channel" / "images").iterdir()) == ["a.png"]
    assert os.stat(secret).st_nlink == 1


def test_another_filesystem_gets_a_copy(tmp_path):
    other = Path("/dev/shm")
    if not other.is_dir() or os.stat(other).st_dev == os.stat(tmp_path).st_dev:
        pytest.skip("no second filesystem to stage across")
    source = write_dataset(tmp_path / "dataset")
    target = other / f"snapshot-test-{os.getpid()}"
    try:
        snapshot = snapshot_tree(source, target, 1 << 30, always)
        assert snapshot.placed[Placement.LINK] == 0
        assert (target / "images" / "a.png").read_bytes() == b"first upload"
    finally:
        shutil.rmtree(target, ignore_errors=True)


def test_a_file_swapped_for_a_link_while_placed_leaves_nothing(tmp_path, monkeypatch):
    source = write_dataset(tmp_path / "dataset")
    walk = job_files.copyable_tree

    def swap_after_walk(root, folder):
        tree = walk(root, folder)
        (source / "images" / "a.png").unlink()
        (source / "images" / "a.png").symlink_to(tmp_path / "elsewhere")
        return tree

    monkeypatch.setattr(job_files, "copyable_tree", swap_after_walk)
    with pytest.raises(UnsafeFile):
        snapshot_tree(source, tmp_path / "channel", 1 << 30, always)
    assert not (tmp_path / "channel").exists()


WRITER_SCRIPT = """
import json, os
channel = os.environ["SM_CHANNEL_TRAINING"]
outcome = {}
for attempt, action in (("write", lambda: open(os.path.join(channel, "images", "a.png"), "r+b").write(b"X")),
                        ("create", lambda: open(os.path.join(channel, "new.txt"), "w")),
                        ("chmod", lambda: os.chmod(os.path.join(channel, "images", "a.png"), 0o666))):
    try:
        action()
        outcome[attempt] = "done"
    except OSError as exc:
        outcome[attempt] = exc.strerror
outcome["read"] = open(os.path.join(channel, "images", "a.png"), "rb").read().decode()
json.dump(outcome, open(os.path.join(os.environ["SM_MODEL_DIR"], "outcome.json"), "w"))
print("epoch=1/1 train_loss=0.5")
"""


def test_a_sandboxed_job_reads_its_snapshot_but_cannot_change_the_dataset_through_it(live_server):
    server = live_server()
    if not server.executor.sandbox.isolating:
        pytest.skip(f"no sandbox here: {server.executor.sandbox.missing}")
    root = server.storage_root
    dataset = write_dataset(root / "datasets" / "shared")
    owner = os.stat(dataset / "images" / "a.png")
    code = root / "code" / "writer"
    code.mkdir(parents=True)
    (code / "entry.py").write_text(WRITER_SCRIPT)
    status, accepted = server.request("POST", "/api/service/v1/pipelines/training", {
        "name": "writer", "dataset": "datasets/shared", "source_dir": "code/writer", "entry_point": "entry.py"})
    assert status == 202, accepted
    final = wait_final(server, accepted["job_id"])
    assert final["task_status"] == "COMPLETED", final
    job_dir = Path(final["output_dir"])
    outcome = json.loads((job_dir / "model" / "outcome.json").read_text())
    assert outcome["read"] == "first upload"
    # Its own uid (when the executor is root) already keeps it off the file; the read-only bind keeps
    # it off the folder it owns, and off the file where it runs as the executor's uid.
    assert outcome["create"] == "Read-only file system"
    assert "done" not in (outcome["write"], outcome["chmod"])
    staged = job_dir / "input" / "data" / "training" / "images" / "a.png"
    assert os.stat(staged).st_ino == owner.st_ino
    now = os.stat(dataset / "images" / "a.png")
    assert (now.st_uid, now.st_mode, (dataset / "images" / "a.png").read_bytes()) == \
        (owner.st_uid, owner.st_mode, b"first upload")
    assert "dataset staged read-only (hard link: 2)" in Path(final["log_path"]).read_text()


WRITE_THROUGH = ("import sys\ntry:\n    open(sys.argv[1], 'r+b').write(b'changed')\n    print('written')\n"
                 "except OSError as exc:\n    print(exc.strerror)\n")


@pytest.mark.parametrize("read_only, outcome", [(True, "Read-only file system"), (False, "written")],
                         ids=["channel-bound-read-only", "without-the-bind"])
def test_a_job_running_as_the_files_owner_is_kept_off_them_by_the_read_only_bind(tmp_path, read_only, outcome):
    # An unprivileged executor's job keeps its uid (in a user namespace): it owns the dataset's files,
    # so only the read-only bind stands between it and the dataset. Without it the write goes through.
    bwrap = shutil.which("bwrap")
    if bwrap is None:
        pytest.skip("bubblewrap is not installed")
    source = write_dataset(tmp_path / "dataset")
    job = tmp_path / "job"
    channel = job / "input" / "data" / "training"
    snapshot_tree(source, channel, 1 << 30, always)
    sandbox = Sandbox(bwrap=bwrap)
    process = sandbox.start([sys.executable, "-c", WRITE_THROUGH, str(channel / "images" / "a.png")], cwd=job,
                            writable=[job], readable=[Path(sys.prefix), Path(sys.base_prefix)],
                            read_only=[channel] if read_only else [], stdout=subprocess.PIPE,
                            stderr=subprocess.STDOUT, text=True)
    output, _ = process.communicate(timeout=60)
    assert output.strip().splitlines()[-1] == outcome, output
    expected = b"changed" if outcome == "written" else b"first upload"
    assert (source / "images" / "a.png").read_bytes()[:len(expected)] == expected
