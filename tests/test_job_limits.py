"""Limits per job, tried by hostile jobs through a real service: real cgroups, real bubblewrap, real forks.

Each limit is small (64 MiB of memory, 50 processes, 8 MiB of disk) so that every test ends in
seconds. The tests that need cgroups or root skip, saying why, where the machine has neither.
"""
from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import time
import uuid
from pathlib import Path
from typing import Any

import pytest

import app as app_module
from config import ConfigError, load_config
from conftest import http_request, pipeline_body, wait_final, wait_for, write_pipeline
from db import SQLiteStore, StoreUnavailable
from mlops.errors import BackendError
from mlops.local import limits as limits_module
from mlops.local.limits import Confinement, JobLimits, UidPool, confinement_for, format_size

pytestmark = pytest.mark.skipif(not sys.platform.startswith("linux"), reason="cgroups and uids are Linux's")

SMALL = {"job_memory_limit": "64MiB", "job_max_processes": "50", "job_disk_limit": "8MiB"}

# Forks until the kernel refuses, holds its children for a while, says how many it got.
FORK_BOMB = """\
import os, sys, time
children = 0
try:
    for _ in range(300):
        if os.fork() == 0:
            time.sleep(float(sys.argv[1]))
            os._exit(0)
        children += 1
except OSError as exc:
    print(f"fork refused after {children} children: {exc.strerror}", flush=True)
print(f"holding {children} children", flush=True)
time.sleep(float(sys.argv[1]))
"""
FORKS = """\
import os, sys, time
pids = []
for _ in range(int(sys.argv[1])):
    pid = os.fork()
    if pid == 0:
        time.sleep(1)
        os._exit(0)
    pids.append(pid)
for pid in pids:
    os.waitpid(pid, 0)
print(f"forked {len(pids)}", flush=True)
"""
# Touches memory 8 MiB at a time, up to argv[1] MiB, then holds it.
MEMORY = """\
import sys, time
held = []
for _ in range(int(sys.argv[1]) // 8):
    held.append(bytearray(8 << 20))
print(f"holding {len(held) * 8} MiB", flush=True)
time.sleep(float(sys.argv[2]))
"""
# Writes argv[1] MiB to its temporary folder, says what /tmp is and when it was written, then waits.
WRITE_TMP = """\
import os, sys, tempfile, time
mounts = [line.split() for line in open("/proc/self/mountinfo")]
print("tmp is", next((fields[fields.index("-") + 1] for fields in mounts if fields[4] == "/tmp"), "none"), flush=True)
with open(os.path.join(tempfile.gettempdir(), "scratch.bin"), "wb") as scratch:
    for _ in range(int(sys.argv[1])):
        scratch.write(os.urandom(1 << 20))
    scratch.flush()
    os.fsync(scratch.fileno())
print(f"wrote at {time.time()}", flush=True)
time.sleep(float(sys.argv[2]))
"""


def submit(server, folder: str, command: str) -> str:
    status, body = server.request("POST", "/execute", pipeline_body(folder, command))
    assert status == 201, body
    return body["task_id"]


def job_log(server, job_id: str) -> str:
    status, body = http_request(server.url, "GET", f"/execute/{job_id}/getLog", timeout=5)
    assert status == 200, body
    return body["logs"]["content"]


def wait_for_line(server, job_id: str, text: str, timeout: float = 30) -> str:
    return wait_for(lambda: next((line for line in job_log(server, job_id).splitlines() if text in line), None),
                    timeout=timeout, interval=0.1)


def limited_server(live_server, **settings: str):
    server = live_server(**{**SMALL, **settings})
    confinement = server.executor.confinement
    if not confinement.cgroups:
        pytest.skip(f"no cgroups here: {confinement.missing}")
    return server


def job_processes(job_id: str) -> list:
    import psutil
    found = []
    for process in psutil.process_iter():
        try:
            if process.environ().get("EXECUTOR_JOB_ID") == job_id and process.uids().real != 0:
                found.append(process)
        except psutil.Error:
            continue
    return found


def test_a_fork_bomb_is_refused_at_its_process_limit_and_a_second_job_still_forks(live_server):
    server = limited_server(live_server)
    bomb = submit(server, write_pipeline(server.storage_root, "bomb", FORK_BOMB), "python pipe1.py 6")
    line = wait_for_line(server, bomb, "holding")
    held = int(line.split()[1])
    assert "fork refused" in job_log(server, bomb) and 40 <= held < 50
    # The bomb still holds its children: the second job's forks count against its own limit only.
    neighbour = submit(server, write_pipeline(server.storage_root, "forks", FORKS), "python pipe1.py 30")
    assert wait_final(server, neighbour)["task_status"] == "COMPLETED"
    assert "forked 30" in job_log(server, neighbour)
    assert wait_final(server, bomb)["task_status"] == "COMPLETED"


def test_a_memory_hog_is_killed_at_its_limit_and_ends_naming_it_while_a_neighbour_completes(live_server):
    server = limited_server(live_server)
    neighbour = submit(server, write_pipeline(server.storage_root, "modest", MEMORY), "python pipe1.py 24 3")
    wait_for_line(server, neighbour, "holding 24 MiB")
    hog = submit(server, write_pipeline(server.storage_root, "hog", MEMORY), "python pipe1.py 2048 30")
    final = wait_final(server, hog, timeout=30)
    assert final["task_status"] == "ERROR"
    assert "memory limit of 64 MiB reached" in final["failure_reason"]
    assert "holding" not in job_log(server, hog)
    assert wait_final(server, neighbour)["task_status"] == "COMPLETED"


def test_tmp_is_a_folder_on_disk_in_the_job_folder_not_memory(live_server, data_dir):
    server = limited_server(live_server)
    job_id = submit(server, write_pipeline(server.storage_root, "tmp", WRITE_TMP), "python pipe1.py 3 30")
    wait_for_line(server, job_id, "wrote at")
    scratch = data_dir / "jobs" / job_id / "tmp" / "scratch.bin"
    assert scratch.stat().st_size == 3 << 20 and scratch.stat().st_dev == data_dir.stat().st_dev
    assert limits_module.disk_use(data_dir / "jobs" / job_id) >= 3 << 20
    if server.executor.sandbox.isolating:
        assert "tmp is tmpfs" not in job_log(server, job_id)
    assert server.request("POST", f"/execute/{job_id}/stop")[0] == 200
    assert wait_final(server, job_id)["task_status"] == "CANCELLED"
    assert not scratch.exists(), "a job's /tmp is scratch, removed at its end"


def test_a_job_over_its_disk_limit_through_tmp_is_stopped_within_5_s_naming_the_limit(live_server):
    server = limited_server(live_server)
    job_id = submit(server, write_pipeline(server.storage_root, "fill", WRITE_TMP), "python pipe1.py 12 60")
    line = wait_for_line(server, job_id, "wrote at")
    final = wait_final(server, job_id, timeout=15)
    ended = time.time()
    assert final["task_status"] == "ERROR"
    assert "disk limit of 8 MiB reached" in final["failure_reason"]
    assert ended - float(line.split()[-1]) < 5


# Empty files, which take no blocks but an inode each, until stopped; says how many it made.
EMPTY_FILES = """\
import os, sys, time
os.makedirs("/tmp/many", exist_ok=True)
for number in range(int(sys.argv[1])):
    open(f"/tmp/many/{number}", "w").close()
print(f"made {sys.argv[1]} empty files at {time.time()}", flush=True)
time.sleep(float(sys.argv[2]))
"""


def test_a_job_filling_the_inode_table_with_empty_files_is_stopped_at_its_disk_limit(live_server):
    # 5000 empty files take no blocks; on a filesystem of a fixed inode table they take 5000 of its
    # inodes, each worth its share of the disk (here 16 KiB: 80 MiB against a limit of 8 MiB).
    server = limited_server(live_server)
    submitted = time.monotonic()
    job_id = submit(server, write_pipeline(server.storage_root, "inodes", EMPTY_FILES), "python pipe1.py 5000 60")
    final = wait_final(server, job_id, timeout=40)
    assert final["task_status"] == "ERROR", final
    assert "disk limit of 8 MiB reached" in final["failure_reason"]
    # Stopped while making its files, or within 5 s of the last: never left to sleep out its 60 s.
    made = [line for line in job_log(server, job_id).splitlines() if "made 5000 empty files" in line]
    assert not made or time.time() - float(made[0].split()[-1]) < 5 + 1
    assert time.monotonic() - submitted < 40


@pytest.mark.skipif(os.name == "nt" or os.geteuid() != 0, reason="jobs get uids of their own only from a root executor")
def test_two_running_jobs_run_as_different_uids_and_cannot_signal_or_read_each_other(live_server, data_dir):
    server = live_server(**SMALL)
    if not server.executor.sandbox.isolating:
        pytest.skip(f"no sandbox here: {server.executor.sandbox.missing}")
    script = ("import os, pathlib, sys, time\n"
              "pathlib.Path(os.environ['SM_OUTPUT_DATA_DIR'], 'private.txt').write_text('mine alone')\n"
              "print('uid', os.getuid(), 'sees', len([p for p in os.listdir('/proc') if p.isdigit()]), flush=True)\n"
              "time.sleep(float(sys.argv[1]))\n")
    first = submit(server, write_pipeline(server.storage_root, "first", script), "python pipe1.py 20")
    second = submit(server, write_pipeline(server.storage_root, "second", script), "python pipe1.py 20")
    uids = {}
    for job_id in (first, second):
        line = wait_for_line(server, job_id, "uid ")
        uids[job_id] = int(line.split()[1])
        assert int(line.split()[3]) < 10, "a job sees its own processes only"
    assert uids[first] != uids[second] and 0 not in uids.values()
    assert all(uid in server.executor.config.job_uids for uid in uids.values())
    victim = wait_for(lambda: job_processes(first))[0]
    assert victim.uids().real == uids[first]
    # As the second job's uid, past what the namespaces already hide: the kernel refuses the signal.
    attempt = subprocess.run(
        [shutil.which("setpriv"), f"--reuid={uids[second]}", f"--regid={uids[second]}", "--clear-groups", "--",
         sys.executable, "-I", "-c", "import os, sys\ntry:\n    os.kill(int(sys.argv[1]), 9)\n"
         "except PermissionError:\n    print('refused')\n", str(victim.pid)],
        capture_output=True, text=True, timeout=30)
    assert attempt.stdout.strip() == "refused", attempt.stderr
    assert victim.is_running()
    # What a job writes is its uid's alone: no other uid may read it, were a mount ever shared.
    private = data_dir / "jobs" / first / "output" / "data" / "private.txt"
    assert private.stat().st_uid == uids[first] and private.stat().st_mode & 0o077 == 0
    for job_id in (first, second):
        server.request("POST", f"/execute/{job_id}/stop")
        assert wait_final(server, job_id)["task_status"] == "CANCELLED"


@pytest.mark.skipif(os.name == "nt" or os.geteuid() != 0, reason="starting a process as another uid needs root")
def test_a_uid_an_orphan_still_runs_as_is_never_handed_out():
    pool = UidPool(load_config(environ={}).job_uids)
    orphan_uid = pool.lease()
    pool.release(orphan_uid)
    # As a job's process that outlived a killed executor: still running as the uid.
    orphan = subprocess.Popen([shutil.which("setpriv"), f"--reuid={orphan_uid}", f"--regid={orphan_uid}",
                               "--clear-groups", "--", "sleep", "30"])
    try:
        wait_for(lambda: orphan_uid in limits_module._uids_of_processes())
        fresh = UidPool(pool.uids)
        assert fresh.lease() != orphan_uid
    finally:
        orphan.kill()
        orphan.wait()


def test_without_cgroups_ready_says_so_and_rlimits_still_bound_a_job(live_server):
    server = live_server(job_cgroups="off", job_memory_limit="256MiB", job_max_processes="50")
    status, body = server.request("GET", "/ready")
    assert status == 200
    limits = body["checks"]["limits"]
    assert limits["ok"] and limits["reason"] == "EXECUTOR_JOB_CGROUPS=off"
    assert "NOT enforced by cgroups" in limits["enforcement"] and "rlimits" in limits["enforcement"]
    hog = submit(server, write_pipeline(server.storage_root, "hog", MEMORY), "python pipe1.py 1024 1")
    final = wait_final(server, hog)
    assert final["task_status"] == "ERROR" and "MemoryError" in final["failure_reason"]
    if os.geteuid() == 0 and server.executor.sandbox.isolating:
        # Processes per uid: the job's uid is its own, so the limit is the job's.
        bomb = submit(server, write_pipeline(server.storage_root, "bomb", FORK_BOMB), "python pipe1.py 1")
        assert wait_final(server, bomb)["task_status"] == "COMPLETED"
        assert "fork refused" in job_log(server, bomb)


def test_with_cgroups_ready_names_the_cgroup_and_the_limits(live_server):
    server = limited_server(live_server)
    limits = server.request("GET", "/ready")[1]["checks"]["limits"]
    assert limits["ok"] and limits["reason"] is None
    assert "cgroup v" in limits["enforcement"] and "memory 64 MiB, 50 processes" in limits["enforcement"]


def test_required_cgroups_that_cannot_be_made_refuse_to_start(tmp_path, monkeypatch):
    # Injected: this machine can make cgroups; the refusal is what a host without permission gets.
    monkeypatch.setattr(limits_module, "_cgroup_root", lambda prefix: (None, "cgroup v2 is not delegated"))
    config = load_config(environ={}, overrides={"data_dir": str(tmp_path), "job_cgroups": "required"})
    with pytest.raises(ConfigError, match="EXECUTOR_JOB_CGROUPS=required: cgroup v2 is not delegated"):
        limits_module.detect(config)


def test_cgroups_a_killed_executor_left_are_emptied_and_removed_at_start(tmp_path):
    config = load_config(environ={}, overrides={"data_dir": str(tmp_path), **SMALL})
    confinement = limits_module.detect(config)
    if not confinement.cgroups:
        pytest.skip(f"no cgroups here: {confinement.missing}")
    enclosure = confinement.enclose("orphaned-job", own_uid=False)
    orphan = subprocess.Popen([*enclosure.prefix(), shutil.which("sleep"), "30"])
    try:
        wait_for(lambda: orphan.pid in enclosure.cgroup.pids())
        # A fresh start on the same data folder finds it by its prefix.
        assert Confinement(confinement.limits, confinement.root, None, confinement.uids).sweep_leftovers() == 1
        assert orphan.wait(timeout=10) == -9
        assert not any(folder.exists() for folder in enclosure.cgroup.folders.values())
    finally:
        orphan.kill()
        orphan.wait()


def test_limit_settings_are_read_as_sizes_and_said_in_binary_units(tmp_path):
    config = load_config(environ={"EXECUTOR_JOB_MEMORY_LIMIT": "1GiB", "EXECUTOR_JOB_DISK_LIMIT": "512MiB"},
                         overrides={"data_dir": str(tmp_path)})
    limits = JobLimits.from_config(config)
    assert (limits.memory, limits.disk, limits.processes) == (1 << 30, 512 << 20, 1024)
    assert limits.memory_reached() == "memory limit of 1 GiB reached"
    assert format_size(1536 << 20) == "1.5 GiB"
    for bad in ("lots", "-1GiB", "0"):
        with pytest.raises(ConfigError, match="EXECUTOR_JOB_MEMORY_LIMIT"):
            load_config(environ={"EXECUTOR_JOB_MEMORY_LIMIT": bad})
    with pytest.raises(ConfigError, match="EXECUTOR_JOB_UIDS"):
        load_config(environ={"EXECUTOR_JOB_UIDS": "0-10"})
    defaults = JobLimits.from_config(load_config(environ={}, overrides={"data_dir": str(tmp_path)}))
    assert 0 < defaults.memory < __import__("psutil").virtual_memory().total


def test_confinement_is_detected_once_per_configuration(tmp_path):
    config = load_config(environ={}, overrides={"data_dir": str(tmp_path), **SMALL})
    assert confinement_for(config) is confinement_for(config)


def test_every_job_cgroup_gets_the_same_cpu_weight(tmp_path):
    config = load_config(environ={}, overrides={"data_dir": str(tmp_path), **SMALL})
    confinement = limits_module.detect(config)
    if not confinement.cgroups or "cpu" not in confinement.root.parents:
        pytest.skip(f"no cpu controller here: {confinement.missing or confinement.root.parents}")
    enclosures = [confinement.enclose(f"job-{number}", own_uid=False) for number in range(2)]
    try:
        weights = set()
        for enclosure in enclosures:
            folder = enclosure.cgroup.folders["cpu"]
            weight_file = folder / ("cpu.weight" if enclosure.cgroup.version == 2 else "cpu.shares")
            weights.add(weight_file.read_text().strip())
        assert weights == {"100" if confinement.root.version == 2 else "1024"}
    finally:
        for enclosure in enclosures:
            enclosure.release()


def test_a_bare_job_without_the_sandbox_is_held_to_its_limits_too(live_server):
    server = limited_server(live_server, sandbox="off")
    hog = submit(server, write_pipeline(server.storage_root, "hog", MEMORY), "python pipe1.py 2048 30")
    final = wait_final(server, hog, timeout=30)
    assert final["task_status"] == "ERROR" and "memory limit of 64 MiB reached" in final["failure_reason"]
    bomb = submit(server, write_pipeline(server.storage_root, "bomb", FORK_BOMB), "python pipe1.py 1")
    assert wait_final(server, bomb)["task_status"] == "COMPLETED"
    assert "fork refused" in job_log(server, bomb)


# A model whose prediction touches memory 8 MiB at a time up to 2 GiB: a worker past its limit.
HOG_MODEL = """
import json

def model_fn(model_dir):
    return None

def input_fn(body, content_type):
    return json.loads(body)

def predict_fn(data, model):
    held = [bytearray(8 << 20) for _ in range(256)]
    return [len(held)]

def output_fn(prediction, accept):
    return json.dumps({"predictions": prediction})
"""


def test_a_model_worker_over_its_memory_is_killed_naming_the_limit_and_the_service_answers(live_server):
    from test_model_lifecycle_local import API, deploy

    server = limited_server(live_server)
    folder = server.storage_root / "models" / "hog"
    (folder / "code").mkdir(parents=True)
    (folder / "model.pt").write_bytes(b"unused: model_fn loads nothing")
    (folder / "code" / "inference.py").write_text(HOG_MODEL)
    endpoint = deploy(server, "hog", "hog", Containers=[{"ModelDataUrl": "models/hog"}])
    assert endpoint["status"] == "InService", endpoint
    status, body = server.request("POST", f"{API}/endpoints/hog/infer", {"instances": [1]})
    assert status >= 500 and "memory limit of 64 MiB reached" in json.dumps(body), (status, body)
    assert http_request(server.url, "GET", "/health", timeout=5)[0] == 200


@pytest.mark.skipif(os.name == "nt", reason="the user database is POSIX's")
def test_a_uid_range_holding_a_user_of_the_machine_is_refused(tmp_path):
    import pwd

    nobody = pwd.getpwnam("nobody").pw_uid
    config = load_config(environ={}, overrides={"data_dir": str(tmp_path), "job_uids": f"{nobody}-{nobody + 5}"})
    with pytest.raises(ConfigError, match=f"EXECUTOR_JOB_UIDS: .* holds uid {nobody} of the user 'nobody'"):
        limits_module.detect(config)


# Leases uids from a pool over a range of two, many rounds, as an executor beside another on one host
# would: each leased uid is marked by a file made with O_EXCL, which fails if another holds it at once.
_LEASING = """
import os, sys, time
from pathlib import Path
from mlops.local.limits import UidPool
first, folder, marks, rounds = int(sys.argv[1]), Path(sys.argv[2]), Path(sys.argv[3]), int(sys.argv[4])
pool = UidPool(range(first, first + 2), in_use=set, lock_folder=folder)
for _ in range(rounds):
    uid = pool.lease()
    mark = os.open(str(marks / str(uid)), os.O_CREAT | os.O_EXCL | os.O_WRONLY)
    time.sleep(0.0005)
    os.close(mark)
    os.unlink(marks / str(uid))
    pool.release(uid)
print("done")
"""

_HOLDING = """
import sys, time
from pathlib import Path
from mlops.local.limits import UidPool
pool = UidPool(range(int(sys.argv[1]), int(sys.argv[1]) + 1), in_use=set, lock_folder=Path(sys.argv[2]))
print(pool.lease(), flush=True)
time.sleep(60)
"""

_POOL_UIDS = 1900000500


@pytest.mark.skipif(os.name == "nt", reason="uids are claimed for the host by flock, which Windows has not")
def test_two_executors_on_one_host_never_lease_the_same_uid_at_once(tmp_path):
    marks = tmp_path / "marks"
    marks.mkdir()
    folder = tmp_path / "locks" / "uids"
    leasers = [subprocess.Popen([sys.executable, "-c", _LEASING, str(_POOL_UIDS), str(folder), str(marks), "300"],
                                cwd=Path(__file__).resolve().parent.parent, stdout=subprocess.PIPE,
                                stderr=subprocess.PIPE, text=True) for _ in range(2)]
    for leaser in leasers:
        out, err = leaser.communicate(timeout=60)
        assert leaser.returncode == 0 and out.strip() == "done", err
    assert sorted(path.name for path in folder.iterdir()) == [f"{_POOL_UIDS}.lock", f"{_POOL_UIDS + 1}.lock"]
    assert folder.stat().st_mode & 0o777 == 0o700


@pytest.mark.skipif(os.name == "nt", reason="uids are claimed for the host by flock, which Windows has not")
def test_a_uid_a_killed_executor_held_is_free_again(tmp_path):
    folder = tmp_path / "uids"
    holder = subprocess.Popen([sys.executable, "-c", _HOLDING, str(_POOL_UIDS), str(folder)],
                              cwd=Path(__file__).resolve().parent.parent, stdout=subprocess.PIPE, text=True)
    try:
        assert int(holder.stdout.readline()) == _POOL_UIDS
        pool = UidPool(range(_POOL_UIDS, _POOL_UIDS + 1), in_use=set, lock_folder=folder)
        with pytest.raises(BackendError, match="another executor on this host"):
            pool.lease()
    finally:
        holder.kill()
        holder.wait()
    assert pool.lease() == _POOL_UIDS


@pytest.mark.skipif(os.name == "nt", reason="uids are claimed for the host by flock, which Windows has not")
def test_a_link_planted_as_a_uid_lock_is_not_followed(tmp_path):
    folder = tmp_path / "uids"
    folder.mkdir(mode=0o700)
    target = tmp_path / "elsewhere"
    target.write_text("kept")
    (folder / f"{_POOL_UIDS}.lock").symlink_to(target)
    pool = UidPool(range(_POOL_UIDS, _POOL_UIDS + 1), in_use=set, lock_folder=folder)
    with pytest.raises(BackendError, match=f"lock file of uid {_POOL_UIDS}"):
        pool.lease()
    assert target.read_text() == "kept"
    (folder / "open").mkdir()
    (folder / "open").chmod(0o755)
    with pytest.raises(BackendError, match="must be this user's alone"):
        UidPool(range(_POOL_UIDS, _POOL_UIDS + 1), in_use=set, lock_folder=folder / "open").lease()


@pytest.mark.skipif(os.name == "nt" or os.geteuid() != 0, reason="the folder under /run is a root executor's")
def test_the_uid_locks_of_a_root_executor_are_in_a_folder_of_roots_alone():
    pool = UidPool(range(_POOL_UIDS + 10, _POOL_UIDS + 11), in_use=set)
    uid = pool.lease()
    try:
        folder = Path("/run/essedum-executor/uids")
        assert (folder / f"{uid}.lock").is_file()
        assert folder.stat().st_uid == 0 and folder.stat().st_mode & 0o777 == 0o700
    finally:
        pool.release(uid)


def cgroups_of(root) -> list[Path]:
    """Return the cgroup folders that carry an executor's prefix, in every hierarchy it uses."""
    return sorted(folder for parent in set(root.parents.values()) for folder in parent.glob(f"{root.prefix}-*"))


def test_an_executor_stopped_with_a_job_and_a_model_running_leaves_no_cgroup_behind(live_server):
    from test_model_admission import slow_model
    from test_model_lifecycle_local import API, deploy

    server = limited_server(live_server)
    job_id = submit(server, write_pipeline(server.storage_root, "sleeper", MEMORY), "python pipe1.py 8 60")
    wait_for_line(server, job_id, "holding 8 MiB")
    deploy(server, "served", "served", **slow_model(server.storage_root, "served", pause=0))
    assert server.request("POST", f"{API}/endpoints/served/infer", {"instances": [1]})[0] == 200
    root = server.executor.confinement.root
    assert len(cgroups_of(root)) >= 2 * len(set(root.parents.values()))  # the job's and the model's
    server.close()
    assert cgroups_of(root) == []


class StoreRefusingThePid(SQLiteStore):
    """The real store on its real file, except that it refuses to record a job's process id.

    A fake at the store's edge only, as tests/test_local_job_end.py's: a full disk makes the real store refuse
    any write, but not at a moment a test can choose.
    """

    def update(self, job_id: str, *, message: str | None = None, **fields: Any) -> None:
        if "pid" in fields:
            raise StoreUnavailable(f"job database {self.path} cannot be written: database or disk is full")
        super().update(job_id, message=message, **fields)


def test_a_job_whose_start_the_store_cannot_record_leaves_no_cgroup_behind(live_server, monkeypatch):
    monkeypatch.setattr(app_module, "SQLiteStore", StoreRefusingThePid)
    server = limited_server(live_server)
    job_id = submit(server, write_pipeline(server.storage_root, "sleeper", MEMORY), "python pipe1.py 8 60")
    final = wait_final(server, job_id, timeout=30)
    assert final["task_status"] == "ERROR" and "database or disk is full" in final["failure_reason"], final
    assert cgroups_of(server.executor.confinement.root) == []


def test_a_job_taken_over_from_a_killed_executor_loses_its_cgroups_and_a_neighbours_keep_theirs(make_app):
    from job import PIPELINE

    executor = make_app(**SMALL).config["EXECUTOR"]
    confinement = executor.confinement
    if not confinement.cgroups:
        pytest.skip(f"no cgroups here: {confinement.missing}")
    # A job a killed executor ran, its process still in its cgroup (a bare run outlives its executor), and a
    # job of a live executor sharing the data folder: the start-up sweep is not theirs to make.
    store = executor.store
    job = store.create_job(str(uuid.uuid4()), kind=PIPELINE, backend="local", request={"name": "left"},
                           secrets=None, log_path=os.devnull, output_dir=str(executor.config.data_dir / "jobs"))
    assert store.claim_next(["local"], owner="killed-executor").id == job.id
    abandoned = confinement.enclose(job.id, own_uid=False)
    neighbour = confinement.enclose(str(uuid.uuid4()), own_uid=False)
    orphan = subprocess.Popen([*abandoned.prefix(), shutil.which("sleep"), "30"])
    try:
        wait_for(lambda: orphan.pid in abandoned.cgroup.pids())
        executor.queue.recover()
        assert orphan.wait(timeout=5) == -9
        assert not any(folder.exists() for folder in abandoned.cgroup.folders.values())
        assert all(folder.exists() for folder in neighbour.cgroup.folders.values())
    finally:
        orphan.kill()
        orphan.wait()
        neighbour.release()
