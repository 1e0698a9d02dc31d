"""A job's sealed secrets reach a rerun only with the very files the job ran, and a secret printed
encoded (base64, hex, URL) is redacted like the secret itself: a hostile client that can write where a
victim's files come from cannot rerun the victim to read its secrets."""
from __future__ import annotations

import base64
import urllib.parse

import pytest

from conftest import LiveServer, pipeline_body, wait_final, wait_for
from mlops import staging

API = "/api/service/v1"
SECRET = "tok-Victim-9f8e7d6c5b4a"
# The victim's own script: it works for a few seconds, holding its secrets meanwhile.
VICTIM = b"import time\nprint('victim working', flush=True)\ntime.sleep(5)\n"
# What the attacker puts in its place: every encoding of the victim's environment it can think of.
HOSTILE = b"""import base64, os, urllib.parse
token = os.environ.get("API_TOKEN", "none")
print("b64", base64.b64encode(token.encode()).decode(), flush=True)
print("b64-env", base64.b64encode(("API_TOKEN=" + token).encode()).decode(), flush=True)
print("hex", token.encode().hex(), flush=True)
print("url", urllib.parse.quote("x=" + token + "&y", safe=""), flush=True)
"""


def upload_script(server: LiveServer, content: bytes) -> None:
    status, body = server.upload(f"{API}/datasets", {"Bucket": "shared", "Key": "victim/run.py"},
                                 [("file", "run.py", content, "text/x-python")])
    assert status == 201, body


def assert_no_secret_in(text: str) -> None:
    encoded = (SECRET, base64.b64encode(SECRET.encode()).decode(), SECRET.encode().hex(),
               base64.b64encode(f"API_TOKEN={SECRET}".encode()).decode())
    for form in encoded:
        assert form not in text


@pytest.fixture
def victim(live_server):
    """A victim pipeline running from a dataset folder, its secrets sealed, its staged files recorded."""
    server: LiveServer = live_server(workers="1")
    upload_script(server, VICTIM)
    body = pipeline_body("datasets/shared/victim", "python run.py", environment={"API_TOKEN": SECRET})
    status, accepted = server.request("POST", "/execute", body)
    assert status == 201, accepted
    job_id = accepted["task_id"]
    wait_for(lambda: server.request("GET", f"/status/{job_id}")[1]["details"].get("staged_sha256"), timeout=30)
    return server, job_id


def test_a_rerun_of_a_victim_whose_files_were_replaced_is_refused_naming_its_secrets(victim) -> None:
    server, job_id = victim
    jobs_before = len(server.request("GET", "/execute")[1])
    upload_script(server, HOSTILE)
    status, body = server.request("POST", f"/api/jobs/{job_id}/rerun")
    assert status == 422, body
    assert body["secrets"] == ["credentials", "environment"] and "changed since job" in body["error"], body
    assert len(server.request("GET", "/execute")[1]) == jobs_before
    assert_no_secret_in(str(body))


def test_files_replaced_after_a_rerun_was_accepted_never_get_the_secrets(victim) -> None:
    server, job_id = victim
    status, accepted = server.request("POST", f"/api/jobs/{job_id}/rerun")
    assert status == 202, accepted  # the files are the victim's own: the rerun may have its secrets
    upload_script(server, HOSTILE)  # ...but they are swapped before the rerun stages them (one worker: it waits)
    final = wait_final(server, accepted["job_id"], timeout=60)
    assert final["task_status"] == "ERROR" and "nothing ran" in final["failure_reason"], final
    _, log = server.request("GET", f"/execute/{accepted['job_id']}/getLog")
    assert "b64" not in log["logs"]["content"]
    assert_no_secret_in(log["logs"]["content"])
    assert wait_final(server, job_id)["task_status"] == "COMPLETED"


def test_a_rerun_of_the_same_files_inherits_the_secrets(victim) -> None:
    server, job_id = victim
    status, accepted = server.request("POST", f"/api/jobs/{job_id}/rerun")
    assert status == 202, accepted
    assert wait_final(server, accepted["job_id"], timeout=60)["task_status"] == "COMPLETED"
    _, rerun = server.request("GET", f"/status/{accepted['job_id']}")
    assert rerun["details"]["staged_sha256"] == server.request("GET", f"/status/{job_id}")[1]["details"][
        "staged_sha256"]


def test_a_secret_printed_encoded_is_redacted_from_the_log(live_server) -> None:
    server: LiveServer = live_server()
    upload_script(server, HOSTILE)
    body = pipeline_body("datasets/shared/victim", "python run.py", environment={"API_TOKEN": SECRET})
    _, accepted = server.request("POST", "/execute", body)
    assert wait_final(server, accepted["task_id"])["task_status"] == "COMPLETED"
    _, log = server.request("GET", f"/execute/{accepted['task_id']}/getLog")
    content = log["logs"]["content"]
    assert "b64 ****" in content and "hex ****" in content, content
    assert_no_secret_in(content)
    assert urllib.parse.quote(SECRET, safe="") not in content
    # Inside a longer base64 text, only the characters the secret's own bits decide are replaced.
    line = next(line for line in content.splitlines() if line.startswith("b64-env"))
    assert "****" in line


def test_files_too_large_to_compare_in_the_request_are_compared_when_staged(victim, monkeypatch) -> None:
    server, job_id = victim
    monkeypatch.setattr(staging, "REQUEST_DIGEST_BYTES", 0)
    upload_script(server, HOSTILE)
    status, accepted = server.request("POST", f"/api/jobs/{job_id}/rerun")
    assert status == 202, accepted
    final = wait_final(server, accepted["job_id"], timeout=60)
    assert final["task_status"] == "ERROR" and "nothing ran" in final["failure_reason"], final
    _, log = server.request("GET", f"/execute/{accepted['job_id']}/getLog")
    assert "b64" not in log["logs"]["content"]
