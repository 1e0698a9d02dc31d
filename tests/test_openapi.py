"""The OpenAPI document: valid, built from the URL map and the very schemas that validate requests."""
from __future__ import annotations

import re

import pytest
from flask import Blueprint, jsonify

from api import schemas
from api.docs import documented, openapi_document
from helpers_service import AUTH, TOKEN

openapi_spec_validator = pytest.importorskip("openapi_spec_validator", reason="pip install openapi-spec-validator")


@pytest.fixture
def document(app):
    response = app.test_client().get("/swagger.json")
    assert response.status_code == 200
    return response.get_json()


def test_document_is_valid_openapi_3_1(document):
    openapi_spec_validator.validate(document)
    assert document["openapi"] == "3.1.0"


def test_request_bodies_are_the_schemas_that_validate_requests(document):
    components = document["components"]["schemas"]
    execute_body = document["paths"]["/execute"]["post"]["requestBody"]["content"]["application/json"]["schema"]
    training = document["paths"]["/api/service/v1/pipelines/training"]["post"]
    training_body = training["requestBody"]["content"]["application/json"]["schema"]
    assert components[execute_body["$ref"].rsplit("/", 1)[-1]] == schemas.EXECUTE
    assert components[training_body["$ref"].rsplit("/", 1)[-1]] == schemas.TRAINING
    assert set(document["paths"]["/execute"]["post"]["responses"]) >= {"201", "400", "401", "422"}
    assert "202" in training["responses"]


def test_every_route_of_the_url_map_is_documented(app, document):
    served = {(re.sub(r"<(?:[^:>]+:)?([^>]+)>", r"{\1}", rule.rule), method.lower())
              for rule in app.url_map.iter_rules() if rule.endpoint != "static"
              for method in rule.methods - {"HEAD", "OPTIONS"}}
    documented_operations = {(path, method) for path, item in document["paths"].items() for method in item}
    assert documented_operations == served
    parameters = document["paths"]["/execute/{task_id}/getStatus"]["get"]["parameters"]
    assert parameters == [{"name": "task_id", "in": "path", "required": True, "schema": {"type": "string"}}]


def test_a_new_route_appears_with_its_schema_without_touching_the_docs(make_app):
    app = make_app()
    extra = Blueprint("models", __name__)
    model_schema = {"title": "ModelRegistration", "type": "object", "required": ["ModelName"],
                    "properties": {"ModelName": schemas.text(63)}}

    @extra.post("/api/service/v1/models/register")
    @documented(model_schema, status=201)
    def register_model():
        """Register a model."""
        return jsonify(ok=True), 201

    app.register_blueprint(extra)
    document = openapi_document(app)
    operation = document["paths"]["/api/service/v1/models/register"]["post"]
    assert operation["summary"] == "Register a model."
    assert operation["requestBody"]["content"]["application/json"]["schema"] == {
        "$ref": "#/components/schemas/ModelRegistration"}
    assert document["components"]["schemas"]["ModelRegistration"] == model_schema
    openapi_spec_validator.validate(document)


def test_security_is_bearer_and_only_public_routes_are_open(document):
    assert document["components"]["securitySchemes"] == {"bearerAuth": {"type": "http", "scheme": "bearer"}}
    assert document["security"] == [{"bearerAuth": []}]
    open_paths = {path for path, item in document["paths"].items()
                  for operation in item.values() if operation.get("security") == []}
    assert open_paths == {"/", "/health", "/swagger", "/swagger/{name}", "/execute/jobs", "/execute/jobs/{job_id}",
                          "/execute/jobs/compare", "/execute/jobs/{job_id}/tuning", "/assets/{name}"}


def test_the_document_needs_the_token_and_the_docs_page_does_not(make_app):
    client = make_app(api_token=TOKEN).test_client()
    assert client.get("/swagger.json").status_code == 401
    assert client.get("/swagger.json", headers=AUTH).status_code == 200
    page = client.get("/swagger")
    assert page.status_code == 200
    assert "default-src 'self'" in page.headers["Content-Security-Policy"]


def test_docs_page_loads_swagger_ui_from_this_server_only(client):
    html = client.get("/swagger").get_data(as_text=True)
    references = re.findall(r'(?:src|href)="([^"]+)"', html)
    assert references and all(reference.startswith("/") for reference in references), references
    for reference in references:
        response = client.get(reference)
        assert response.status_code == 200, reference
        assert len(response.get_data()) > 100, reference
    assert client.get("/swagger/swagger-ui-bundle.js").mimetype in ("text/javascript", "application/javascript")
    assert client.get("/swagger/index.html").status_code == 404


def test_the_job_api_comes_first_and_every_202_answer_has_a_schema(document):
    first_tags = [tag["name"] for tag in document["tags"][:5]]
    assert first_tags == ["execute", "training", "rerun", "dashboard", "downloads"]
    first_paths = list(document["paths"])[:3]
    assert all(next(iter(document["paths"][path].values()))["tags"][0] == "execute" for path in first_paths)
    accepted = [(path, method, operation["responses"]["202"]) for path, item in document["paths"].items()
                for method, operation in item.items() if "202" in operation["responses"]]
    assert len(accepted) >= 3
    for path, method, answer in accepted:
        reference = answer["content"]["application/json"]["schema"]["$ref"]
        assert reference.rsplit("/", 1)[-1] in document["components"]["schemas"], (path, method)


def test_the_token_header_is_written_as_code_so_swagger_ui_shows_it(document):
    # Swagger UI renders the description as Markdown, where a bare <token> is an HTML tag and vanishes.
    description = document["info"]["description"]
    assert "`Authorization: Bearer <token>`" in description
    assert "<token>" not in description.replace("`Authorization: Bearer <token>`", "")


def test_every_body_a_route_reads_is_in_the_document_multipart_included(document):
    api = "/api/service/v1"
    for route in (f"{api}/endpoints/{{endpoint_id}}/infer", f"{api}/endpoints/{{endpoint_id}}/explain"):
        content = document["paths"][route]["post"]["requestBody"]["content"]
        assert {"multipart/form-data", "application/json", "text/csv", "image/png", "image/jpeg"} <= set(content)
        form = document["components"]["schemas"][content["multipart/form-data"]["schema"]["$ref"].rsplit("/", 1)[1]]
        assert form["required"] == ["file"] and form["properties"]["file"]["type"] == "array"
    content = document["paths"][f"{api}/datasets"]["post"]["requestBody"]["content"]
    upload = document["components"]["schemas"][content["multipart/form-data"]["schema"]["$ref"].rsplit("/", 1)[1]]
    assert "file" in upload["required"] and {"Bucket", "Key"} <= set(upload["properties"])
    from_storage = document["components"]["schemas"][content["application/json"]["schema"]["$ref"].rsplit("/", 1)[1]]
    assert from_storage["required"] == ["local_dataset_path"]


def test_every_record_family_answers_the_get_shape_and_a_wrong_shape_names_the_right_routes(client):
    api = "/api/service/v1"
    for family in ("models", "endpoints", "datasets", "pipelines/inference", "pipelines/training"):
        answer = client.get(f"{api}/{family}/nothing-here/get")
        assert answer.status_code == 404, (family, answer.get_json())
        assert answer.get_json()["field"] == "id"
    answer = client.get(f"{api}/endpoints/digits/status")
    body = answer.get_json()
    assert answer.status_code == 404 and f"GET {api}/endpoints/<id>/get" in body["error"]
    assert f"POST {api}/endpoints/<id>/infer" in body["error"]
