"""Fuzzing the API: every operation of the OpenAPI document (schemathesis, valid and invalid data) and a
corpus of bad inputs. No answer is a 5xx, every refusal is a JSON error, a refused request stores nothing.

Bounded and deterministic: fixed example counts, derandomized generation, the app called in-process
through WSGI (no network at all).
"""
from __future__ import annotations

import json
import random
from typing import Any

import pytest
import schemathesis
from hypothesis import HealthCheck, given, settings
from hypothesis.errors import Unsatisfiable
from schemathesis import GenerationMode

from conftest import pipeline_body, write_pipeline

EXAMPLES_PER_OPERATION = 15
# /cloudconnect checks the AWS account and answers 502 when AWS cannot be reached, by design; /ready
# answers 503 while a dependency is down; the local platform answers AutoML with 501 (not offered
# here, on either AutoML route: a platform's one "not supported" answer). None is a crash; the rest of the
# API must never 5xx.
EXPECTED_5XX = {("POST", "/cloudconnect"): {502}, ("GET", "/ready"): {503},
                ("POST", "/api/service/v1/pipelines/training/train"): {501},
                ("POST", "/api/service/v1/pipelines/training/automl"): {501}}
WEIRD_VALUES: list[Any] = [None, 0, -1, 2 ** 70, 1.5, float("1e308"), True, [], {}, "", " ", "x" * 100_000, "\x00",
                           "\ud800", "../../../etc/passwd", "/etc/passwd", "C:\\Windows\\win.ini", "ü€𝄞", "%00",
                           {"$ref": "#"}, [[[[[[]]]]]], "python", "python ../x.py", "python pipe1.py; rm -rf /",
                           "python pipe1.py $(id)", "file:///etc/passwd", "http://169.254.169.254/latest/meta-data"]
RAW_BODIES: list[bytes] = [b"", b"null", b"[]", b'"text"', b"1e999999", b"{", b'{"bucket":', b"\xff\xfe\xfd",
                           b"[" * 100_000 + b"]" * 100_000, b'{"a":' * 5_000 + b"1" + b"}" * 5_000, b"NaN",
                           b'{"bucket": NaN}', b"\xef\xbb\xbf{}", b'{"bucket": "\\ud800"}', b"{}" * 1000,
                           b'{"bucket": "a", "bucket": "b"}', b" " * 10_000]


@pytest.fixture
def fuzz_app(make_app, data_dir, monkeypatch):
    # Any AWS call a route makes goes to a closed loopback port: fuzzing never leaves this machine.
    monkeypatch.setenv("AWS_ENDPOINT_URL", "http://127.0.0.1:9")
    monkeypatch.setenv("AWS_ACCESS_KEY_ID", "testing")
    monkeypatch.setenv("AWS_SECRET_ACCESS_KEY", "testing")
    monkeypatch.setenv("AWS_DEFAULT_REGION", "us-east-1")
    monkeypatch.delenv("AWS_PROFILE", raising=False)
    write_pipeline(data_dir / "storage", "Demo/pipe", "print('ok')\n")
    return make_app()


def stored_jobs(app) -> int:
    return sum(app.config["EXECUTOR"].store.count_by_status().values())


def assert_clean_refusal(response, what: str) -> None:
    assert response.status_code < 500, f"{what}: {response.status_code} {response.get_data(as_text=True)[:300]}"
    if response.status_code >= 400:
        assert response.is_json and isinstance(response.get_json().get("error"), str), what


@pytest.mark.parametrize("mode", [GenerationMode.POSITIVE, GenerationMode.NEGATIVE])
def test_no_operation_of_the_openapi_document_answers_a_5xx(fuzz_app, mode):
    schema = schemathesis.openapi.from_wsgi("/swagger.json", fuzz_app)
    operations = [result.ok() for result in schema.get_all_operations()]
    assert len(operations) > 20
    failures: dict[tuple[str, str, int], str] = {}
    for operation in operations:
        @settings(max_examples=EXAMPLES_PER_OPERATION, deadline=None, derandomize=True, database=None,
                  suppress_health_check=list(HealthCheck))
        @given(case=operation.as_strategy(generation_mode=mode))
        def call(case) -> None:
            response = case.call()
            allowed = EXPECTED_5XX.get((case.method, operation.path), set())
            if response.status_code >= 500 and response.status_code not in allowed:
                failures[(case.method, operation.path, response.status_code)] = (
                    f"{case.formatted_path} body={str(case.body)[:200]!r}: {response.text[:300]}")

        try:
            call()
        except Unsatisfiable:  # no invalid request can be built for an operation without inputs
            assert mode is GenerationMode.NEGATIVE
    assert not failures, "\n".join(f"{key}: {text}" for key, text in failures.items())


def test_malformed_bodies_are_4xx_json_errors_and_store_nothing(fuzz_app):
    client = fuzz_app.test_client()
    for path in ("/execute", "/api/service/v1/pipelines/training"):
        for raw in RAW_BODIES:
            for content_type in ("application/json", "text/plain"):
                response = client.post(path, data=raw, content_type=content_type)
                assert_clean_refusal(response, f"{path} {raw[:40]!r} {content_type}")
                assert response.status_code >= 400, (path, raw[:40])
    assert client.post("/execute", data=b"{" + b" " * (2 << 20) + b"}", content_type="application/json"
                       ).status_code == 413
    assert stored_jobs(fuzz_app) == 0


def test_every_field_with_a_bad_value_is_refused_cleanly(fuzz_app):
    client = fuzz_app.test_client()
    valid = pipeline_body("Demo/pipe", "python pipe1.py")
    accepted = 0
    for field in [*valid, "configs", "environment", "credentials.endpoint", "credentials.secret_key"]:
        for value in WEIRD_VALUES:
            body = json.loads(json.dumps(valid))
            if "." in field:
                outer, inner = field.split(".")
                body[outer][inner] = value
            else:
                body[field] = value
            response = client.post("/execute", data=json.dumps(body), content_type="application/json")
            assert_clean_refusal(response, f"{field}={str(value)[:40]!r}")
            accepted += response.status_code == 201
    assert stored_jobs(fuzz_app) == accepted


def test_randomly_mutated_bodies_never_crash_the_api(fuzz_app):
    rng = random.Random(1234)
    client = fuzz_app.test_client()
    bodies = [pipeline_body("Demo/pipe", "python pipe1.py"),
              {"name": "digits", "dataset": "datasets/digits", "hyperparameters": {"epochs": 2}}]
    accepted = 0
    for _ in range(400):
        body = json.loads(json.dumps(rng.choice(bodies)))
        for _ in range(rng.randint(1, 4)):
            key = rng.choice([*body, "unknown", "configs", "tags", "hyperparameters"])
            action = rng.random()
            if action < 0.3:
                body.pop(key, None)
            elif action < 0.8:
                body[key] = rng.choice(WEIRD_VALUES)
            else:
                body[key] = {rng.choice(["a", "epochs", "retry_on_restart", "instance_type", "x" * 300]):
                             rng.choice(WEIRD_VALUES)}
        path = "/execute" if "command" in body or "storage" in body else "/api/service/v1/pipelines/training"
        response = client.post(path, data=json.dumps(body), content_type="application/json")
        assert_clean_refusal(response, f"{path} {json.dumps(body)[:200]}")
        accepted += response.status_code in (201, 202)
    assert stored_jobs(fuzz_app) == accepted


@pytest.mark.parametrize("task_id", ["..", "%2e%2e", "%00", "a" * 5000, "ü", "00000000-0000-0000-0000-000000000000",
                                     "{}", "1 OR 1=1", "../../etc/passwd"])
def test_odd_ids_in_paths_are_4xx(fuzz_app, task_id):
    client = fuzz_app.test_client()
    for route in ("/execute/{}/getStatus", "/execute/{}/stop", "/execute/{}/getLog", "/execute/{}/getOutputArtifacts",
                  "/status/{}", "/api/jobs/{}"):
        response = client.get(route.format(task_id))
        assert_clean_refusal(response, route.format(task_id[:40]))
        assert response.status_code in (400, 404, 405), (route, task_id[:40], response.status_code)


def test_the_compiled_validator_never_accepts_what_jsonschema_refuses():
    # api/schemas.validate lets the compiled validator answer valid bodies alone: it must never be
    # more lenient than jsonschema, the reference that explains refusals.
    from api import model_schemas, schemas
    rng = random.Random(99)
    tricky = [*WEIRD_VALUES, "a\n", "A_B\n", "𝄞" * 64, "𝄞" * 65, "𝄞" * 255, "𝄞" * 256, "ml.p3.2xlarge\n", "x.py\n"]
    cases = [(schemas.EXECUTE, pipeline_body("Demo/pipe", "python pipe1.py")),
             (schemas.TRAINING, {"name": "digits", "dataset": "datasets/digits", "hyperparameters": {"epochs": 2},
                                 "instance_type": "ml.g5.xlarge", "entry_point": "train.py", "tags": {"a": "b"}}),
             *[(schema, {}) for schema in vars(model_schemas).values()
               if isinstance(schema, dict) and schema.get("type") == "object" and "properties" in schema]]
    checked = 0
    for schema, valid in cases:
        compiled, reference = schemas._validators(schema)
        fields = [*schema["properties"], "unknown"]
        for _ in range(300):
            body = json.loads(json.dumps(valid))
            for _ in range(rng.randint(1, 3)):
                value = rng.choice(tricky)
                key = rng.choice(fields)
                body[key] = {rng.choice(["A_B", "A_B\n", "epochs", "x" * 300, ""]): value} if rng.random() < 0.2 else value
            if schemas._compiled_accepts(compiled, body):
                assert reference.is_valid(body), json.dumps(body)[:300]
                checked += 1
    assert checked > 0
