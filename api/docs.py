"""The OpenAPI document, built from the URL map and the request schemas, and an offline Swagger UI page.

One source of truth: a route's request body is documented with the very schema that validates it
(api/schemas.py), attached with @documented. Every route in the URL map appears, decorated or not,
so a new blueprint shows up without touching this file.
"""
from __future__ import annotations

import importlib.util
import re
from pathlib import Path
from typing import Any, Callable

from flask import Blueprint, Flask, abort, current_app, jsonify, send_from_directory

from api.access import is_public, public
from api.pages import page

blueprint = Blueprint("docs", __name__, template_folder="templates")

OPENAPI_VERSION = "3.1.0"
# Swagger UI 5 (it reads OpenAPI 3.1), shipped inside the swagger-ui-py wheel: no CDN, works offline.
SWAGGER_UI_PACKAGE = "swagger_ui"
SWAGGER_UI_FILES = frozenset({"swagger-ui-bundle.js", "swagger-ui.css", "favicon-32x32.png"})
RULE_VARIABLE = re.compile(r"<(?:(?P<converter>[a-zA-Z_]+)(?:\([^)]*\))?:)?(?P<name>\w+)>")
CONVERTER_SCHEMAS = {"int": {"type": "integer"}, "float": {"type": "number"},
                     "uuid": {"type": "string", "format": "uuid"}}
ERROR_SCHEMA = {
    "title": "Error",
    "type": "object",
    "required": ["error"],
    "properties": {"error": {"type": "string"}, "field": {"type": "string", "description": "the field at fault"}},
}


def documented(request_schema: dict[str, Any] | None = None, *, status: int = 200, summary: str | None = None,
               query: dict[str, dict[str, Any]] | None = None, response_schema: dict[str, Any] | None = None,
               binary: bool = False, optional_body: bool = False,
               media: dict[str, dict[str, Any]] | None = None) -> Callable[[Callable], Callable]:
    """Attach OpenAPI facts to a view: its body's schema (JSON, and any other media type), success status, query."""
    def mark(view: Callable) -> Callable:
        view.openapi = {"request_schema": request_schema, "status": status, "summary": summary,
                        "query": query or {}, "response_schema": response_schema, "binary": binary,
                        "optional_body": optional_body, "media": media or {}}
        return view
    return mark


# The job API first: Swagger UI shows the groups in this order, the rest after them by name.
TAG_ORDER = ("execute", "training", "rerun", "dashboard", "downloads")
TAG_DESCRIPTIONS = {
    "execute": "Essedum pipelines: submit, status, log, outputs, stop",
    "training": "Training jobs (the bundled PyTorch script or your own) and their status",
    "rerun": "Queue a job's request again",
    "dashboard": "Job lists and details as the dashboard and the CLI read them",
    "downloads": "A job's output files and its model as model.tar.gz",
}


def _tag_rank(path_item: dict[str, Any]) -> tuple[int, str]:
    tag = next(iter(path_item.values()))["tags"][0]
    return (TAG_ORDER.index(tag) if tag in TAG_ORDER else len(TAG_ORDER), tag)


def openapi_document(app: Flask) -> dict[str, Any]:
    """Return the OpenAPI 3.1 document of every route the app serves."""
    schemas: dict[str, Any] = {"Error": ERROR_SCHEMA}
    paths: dict[str, dict[str, Any]] = {}
    operation_ids: set[str] = set()
    for rule in sorted(app.url_map.iter_rules(), key=lambda item: (item.rule, item.endpoint)):
        if rule.endpoint == "static":
            continue
        view = app.view_functions[rule.endpoint]
        path, parameters = _path_and_parameters(rule.rule, rule.arguments)
        methods = sorted(rule.methods - {"HEAD", "OPTIONS"})
        for method in methods:
            operation_id = rule.endpoint.replace(".", "_") + (f"_{method.lower()}" if len(methods) > 1 else "")
            while operation_id in operation_ids:
                operation_id += "_"
            operation_ids.add(operation_id)
            open_route = is_public(view)
            paths.setdefault(path, {})[method.lower()] = _operation(view, rule.endpoint, operation_id, parameters,
                                                                     open_route, schemas)
    ordered = dict(sorted(paths.items(), key=lambda item: _tag_rank(item[1])))
    used_tags = sorted({operation["tags"][0] for item in paths.values() for operation in item.values()},
                       key=lambda tag: (TAG_ORDER.index(tag) if tag in TAG_ORDER else len(TAG_ORDER), tag))
    return {
        "openapi": OPENAPI_VERSION,
        # The description is Markdown: the header in backticks, or Swagger UI would read <token> as an HTML tag.
        "info": {"title": "Essedum job executor", "version": "1.0",
                 "description": "Runs Essedum pipelines and training jobs locally or on Amazon SageMaker.\n\n"
                                "When `EXECUTOR_API_TOKEN` is set, every route but the public ones needs the "
                                "header `Authorization: Bearer <token>` (the **Authorize** button sets it)."},
        "tags": [{"name": tag, **({"description": TAG_DESCRIPTIONS[tag]} if tag in TAG_DESCRIPTIONS else {})}
                 for tag in used_tags],
        "paths": ordered,
        "components": {"schemas": schemas,
                       "securitySchemes": {"bearerAuth": {"type": "http", "scheme": "bearer"}}},
        "security": [{"bearerAuth": []}],
    }


def _path_and_parameters(rule: str, arguments: frozenset[str]) -> tuple[str, list[dict[str, Any]]]:
    parameters = []
    for match in RULE_VARIABLE.finditer(rule):
        schema = CONVERTER_SCHEMAS.get(match.group("converter") or "", {"type": "string"})
        parameters.append({"name": match.group("name"), "in": "path", "required": True, "schema": schema})
    return RULE_VARIABLE.sub(lambda match: "{" + match.group("name") + "}", rule), parameters


def _operation(view: Callable, endpoint: str, operation_id: str, path_parameters: list[dict[str, Any]],
               open_route: bool, schemas: dict[str, Any]) -> dict[str, Any]:
    facts = getattr(view, "openapi", {})
    error = {"content": {"application/json": {"schema": {"$ref": "#/components/schemas/Error"}}}}
    doc_lines = (view.__doc__ or "").strip().splitlines()
    operation: dict[str, Any] = {
        "operationId": operation_id,
        "summary": facts.get("summary") or (doc_lines[0] if doc_lines else endpoint.split(".")[-1].replace("_", " ")),
        "tags": [endpoint.split(".")[0]],
        "responses": {str(facts.get("status", 200)): _success(facts, schemas)},
    }
    parameters = path_parameters + [{"name": name, "in": "query", "required": False, "schema": schema}
                                    for name, schema in facts.get("query", {}).items()]
    if parameters:
        operation["parameters"] = parameters
    bodies = dict(facts.get("media", {}))
    if facts.get("request_schema") is not None:
        bodies = {"application/json": facts["request_schema"], **bodies}
    if bodies:
        # A titled schema (and the JSON body's, under the operation's name if untitled) is a component.
        operation["requestBody"] = {"required": not facts.get("optional_body"), "content": {
            media_type: {"schema": _component(schema, schema.get("title") or operation_id, schemas)
                         if schema.get("title") or media_type == "application/json" else schema}
            for media_type, schema in bodies.items()}}
        operation["responses"]["400"] = {"description": "malformed body, unknown or missing field", **error}
        operation["responses"]["422"] = {"description": "a field has a value the executor cannot accept", **error}
    if path_parameters:
        operation["responses"]["404"] = {"description": "no such item", **error}
    if open_route:
        operation["security"] = []
    else:
        operation["responses"]["401"] = {"description": "the bearer token is missing or wrong", **error}
    return operation


def _component(schema: dict[str, Any], name: str, schemas: dict[str, Any]) -> dict[str, str]:
    """Keep a schema once among the components, under this name, and return a reference to it."""
    schemas[name] = schema
    return {"$ref": f"#/components/schemas/{name}"}


def _success(facts: dict[str, Any], schemas: dict[str, Any]) -> dict[str, Any]:
    answer: dict[str, Any] = {"description": "accepted: queued as a job" if facts.get("status") == 202 else "success"}
    if facts.get("binary"):
        answer["content"] = {"application/octet-stream": {"schema": {"type": "string", "contentMediaType":
                                                                     "application/octet-stream"}}}
    elif facts.get("response_schema"):
        schema = facts["response_schema"]
        schemas[schema["title"]] = schema
        answer["content"] = {"application/json": {"schema": {"$ref": f"#/components/schemas/{schema['title']}"}}}
    return answer


@blueprint.get("/swagger.json")
def swagger_json():
    """Return the OpenAPI 3.1 document of this executor."""
    return jsonify(openapi_document(current_app))


@blueprint.get("/swagger")
@public
def swagger_page():
    """Show the API docs (Swagger UI, served from this executor; the page itself holds no data)."""
    return page("swagger.html")


@blueprint.get("/swagger/<name>")
@public
def swagger_asset(name: str):
    """Serve one Swagger UI file from the installed package."""
    if name not in SWAGGER_UI_FILES:
        abort(404)
    spec = importlib.util.find_spec(SWAGGER_UI_PACKAGE)
    if spec is None or spec.origin is None:
        # Only the docs page needs it; the executor itself runs without it.
        abort(503, "Swagger UI is not installed here: pip install swagger-ui-py")
    return send_from_directory(Path(spec.origin).parent / "static", name, max_age=3600)
