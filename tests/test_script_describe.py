"""Reading a bundled script's hyperparameters (`--describe`) at request time runs it as user code runs:
in the sandbox, as the sandbox's user, its folder read-only, without bytecode writes. A request whose
entry point names any script of the bundled folder cannot change the executor's code or write outside."""
from __future__ import annotations

import os
import shutil
from pathlib import Path

import pytest

from conftest import ROOT
from mlops import job_requests, script_contract

API = "/api/service/v1"
CHECKOUT_SCRIPTS = ROOT / "training_scripts"

# What a hostile script in the bundled folder would try; it reports in the only channel it has, its
# declaration, whose names a refused hyperparameter's error lists.
HOSTILE = """
import json, os
facts = {f"uid-{os.getuid()}": {"type": "int"}}
for name, path in (("own-folder", os.path.join(os.path.dirname(os.path.abspath(__file__)), "planted.py")),
                   ("outside", OUTSIDE)):
    try:
        with open(path, "w") as handle:
            handle.write("planted")
        facts[f"wrote-{name}"] = {"type": "int"}
    except OSError:
        facts[f"refused-{name}"] = {"type": "int"}
import helper  # a sibling module: its bytecode must not be written beside it
print(json.dumps({"hyperparameters": facts}))
"""


def snapshot(folder: Path) -> dict[str, float]:
    return {str(path.relative_to(folder)): path.stat().st_mtime for path in folder.rglob("*")}


@pytest.fixture
def hostile_scripts(tmp_path: Path, monkeypatch) -> Path:
    """A bundled scripts folder with a hostile script in it, as if one had been planted there."""
    folder = tmp_path / "training_scripts"
    folder.mkdir()
    outside = tmp_path / "outside-marker"
    (folder / "hostile.py").write_text(f"OUTSIDE = {str(outside)!r}\n{HOSTILE}")
    (folder / "helper.py").write_text("VALUE = 1\n")
    monkeypatch.setattr(script_contract, "BUNDLED_SCRIPTS", folder.resolve())
    monkeypatch.setattr(job_requests, "BUNDLED_SCRIPTS", folder.resolve())
    return folder


def test_a_hostile_bundled_script_is_described_in_the_sandbox_and_writes_nothing(make_app, hostile_scripts: Path,
                                                                                   tmp_path: Path) -> None:
    app = make_app()
    executor = app.config["EXECUTOR"]
    if not executor.sandbox.isolating:
        pytest.skip(f"no sandbox here: {executor.sandbox.missing}")
    (executor.config.storage_root / "digits").mkdir(parents=True)
    before = snapshot(hostile_scripts)
    answer = app.test_client().post(f"{API}/pipelines/training", json={
        "name": "probe", "dataset": "digits", "entry_point": "hostile.py", "hyperparameters": {"probe": 1}})
    assert answer.status_code == 422, answer.get_json()
    declared = answer.get_json()["error"]
    uid = executor.sandbox.identity[0] if executor.sandbox.identity else os.getuid()
    assert f"uid-{uid}" in declared and "refused-own-folder" in declared and "refused-outside" in declared, declared
    assert uid != 0
    assert snapshot(hostile_scripts) == before  # no planted.py, no __pycache__
    assert not (tmp_path / "outside-marker").exists()


def test_naming_a_bundled_script_that_writes_where_it_runs_leaves_the_checkout_as_it_was(make_app, tmp_path: Path,
                                                                                         monkeypatch) -> None:
    # make_digits_dataset.py --describe would write a dataset into a folder named --describe where it runs.
    copy = tmp_path / "training_scripts"
    shutil.copytree(CHECKOUT_SCRIPTS, copy, ignore=shutil.ignore_patterns("__pycache__"))
    monkeypatch.setattr(script_contract, "BUNDLED_SCRIPTS", copy.resolve())
    monkeypatch.setattr(job_requests, "BUNDLED_SCRIPTS", copy.resolve())
    monkeypatch.setattr(script_contract, "DESCRIBE_TIMEOUT_S", 5)
    app = make_app()
    (app.config["EXECUTOR"].config.storage_root / "digits").mkdir(parents=True)
    before = snapshot(copy)
    for entry_point in ("make_digits_dataset.py", "train.py"):
        answer = app.test_client().post(f"{API}/pipelines/training", json={
            "name": "probe", "dataset": "digits", "entry_point": entry_point, "hyperparameters": {"no-such": 1}})
        assert answer.status_code in (202, 422), answer.get_json()
    assert "is not a hyperparameter of the script" in answer.get_json()["error"]  # train.py was described
    assert snapshot(copy) == before
    assert not list(copy.rglob("__pycache__"))
