"""A local batch transform reads the regular files of its input folder only: a link in the folder, to the
executor's key file or to a folder outside, is neither followed nor sent through the model."""
from __future__ import annotations

import json
import os
from pathlib import Path

import pytest

from conftest import LiveServer
from test_model_lifecycle_local import API
# Answers with the request's own bytes: whatever the executor reads reaches the output as it was.
ECHO_INFERENCE = '''
import json

def model_fn(model_dir):
    return None

def input_fn(body, content_type):
    return body.decode("utf-8", errors="replace") if isinstance(body, bytes) else body

def predict_fn(data, model):
    return data

def output_fn(prediction, accept):
    return json.dumps({"echo": prediction})
'''


def echo_model(folder: Path) -> None:
    (folder / "code").mkdir(parents=True)
    # A model folder must hold model.pt; this model_fn never reads it.
    (folder / "model.pt").write_bytes(b"unused")
    (folder / "code" / "inference.py").write_text(ECHO_INFERENCE)


@pytest.mark.skipif(not hasattr(os, "symlink") or os.name == "nt", reason="symbolic links need a POSIX system")
def test_a_transform_runs_the_real_input_and_never_what_a_link_in_its_folder_leads_to(
        live_server, data_dir: Path, tmp_path: Path) -> None:
    server: LiveServer = live_server()
    echo_model(server.storage_root / "models" / "echo")
    status, body = server.request("POST", f"{API}/models/register",
                                  {"ModelName": "echo", "Containers": [{"ModelDataUrl": "models/echo"}]})
    assert status == 201, body
    key = (data_dir / "secret.key").read_bytes().strip()
    outside = tmp_path / "outside"
    outside.mkdir()
    (outside / "planted.json").write_text("OUTSIDE-SECRET")
    inputs = server.storage_root / "inputs"
    inputs.mkdir()
    (inputs / "real.json").write_text("the real input")
    (inputs / ".hidden.json").write_text("a hidden file")
    (inputs / "key.json").symlink_to(data_dir / "secret.key")
    (inputs / "folder").symlink_to(outside, target_is_directory=True)

    status, record = server.request("POST", f"{API}/pipelines/inference", {
        "TransformJobName": "links", "ModelName": "echo",
        "TransformInput": {"DataSource": {"S3DataSource": {"S3Uri": "inputs"}}}})
    assert status == 202, record
    done = server.wait(f"{API}/pipelines/inference/links/get", lambda record: record["status"] != "InProgress")

    assert done["status"] == "Completed" and done["artifacts"]["records"] == 1, done
    out_dir = Path(done["artifacts"]["output_dir"])
    written = sorted(path for path in out_dir.rglob("*") if path.is_file())
    assert [path.relative_to(out_dir).as_posix() for path in written] == ["real.json.out"]
    assert json.loads((out_dir / "real.json.out").read_text()) == {"echo": "the real input"}
    assert done["artifacts"]["files"] == ["output/transform/real.json.out"]
    for path in written:
        assert key not in path.read_bytes() and b"OUTSIDE-SECRET" not in path.read_bytes()
