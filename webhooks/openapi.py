"""GET /api/openapi.json: the OpenAPI 3.1 document, generated from the endpoint registry.

Request bodies, responses, path and query parameters come from the very pydantic models the adapter
validates with (`model_json_schema`, shared models deduplicated under `components.schemas`); a non-JSON
body is documented by its content types; every error status an endpoint declares or implies is answered
with the standard error envelope.
"""

from __future__ import annotations

from collections.abc import Sequence
from importlib.metadata import PackageNotFoundError, version
from typing import Any, Literal

from aiohttp import web
from pydantic import BaseModel, Field, RootModel
from pydantic.json_schema import JsonSchemaMode, models_json_schema

from webhooks import health
from webhooks.api import ENDPOINTS, Call, Endpoint, Out, Routes

OPENAPI_VERSION = "3.1.0"
REF = "#/components/schemas/{model}"
ERRORS: dict[int, str] = {
    400: "Invalid request: `field` names the offending input",
    401: "Missing, invalid, expired or revoked token (or a token of another merchant)",
    403: "Authenticated, but the role is too low",
    404: "No such resource",
    409: "Conflicts with the current state",
    413: "Request body too large",
    423: "Account locked after repeated failed logins; Retry-After says for how long",
    429: "Too many attempts; Retry-After says when to try again",
    502: "WeChat refused or could not be reached",
    503: "Service unavailable",
}
HEADERS: dict[int, dict[str, Any]] = {
    401: {"WWW-Authenticate": {"schema": {"type": "string"}, "description": "Bearer challenge"}},
    423: {"Retry-After": {"schema": {"type": "string"}, "description": "seconds until the account unlocks"}},
    429: {"Retry-After": {"schema": {"type": "string"}, "description": "seconds until the next attempt"}},
}

routes = Routes("system")


class ErrorBody(Out):
    code: str = Field(description="stable machine-readable error code, e.g. validation_error")
    message: str = Field(description="human-readable message (Simplified Chinese for end users)")
    field: str | None = Field(None, description="the offending input, when there is one")


class ErrorEnvelope(Out):
    error: ErrorBody


class HealthChecks(Out):
    database: Literal["ok", "down"]
    redis: Literal["ok", "down"]


class HealthOut(Out):
    status: Literal["ok", "down"]
    checks: HealthChecks


class OpenApiDocument(RootModel[dict[str, Any]]):
    """An OpenAPI 3.1 document (this one)."""


@routes.get("/healthz", response=HealthOut, alternatives={503: HealthOut})
async def healthz(call: Call[None, None]) -> web.StreamResponse:
    """Database and Redis reachability (503 when either is down)."""
    return await health.healthz(call.request)


@routes.get("/api/openapi.json", response=OpenApiDocument)
async def openapi_json(call: Call[None, None]) -> web.StreamResponse:
    """This OpenAPI document."""
    endpoints = call.request.app[ENDPOINTS]
    return web.json_response(build_document(endpoints))


def _api_version() -> str:
    try:
        return version("memberbot")
    except PackageNotFoundError:
        return "0.0.0"


def build_document(endpoints: Sequence[Endpoint]) -> dict[str, Any]:
    refs, components = _schemas(endpoints)
    paths: dict[str, dict[str, Any]] = {}
    security_schemes: dict[str, Any] = {}
    used_errors: set[int] = set()
    for endpoint in endpoints:
        if endpoint.auth is not None:
            security_schemes[endpoint.auth.scheme_name] = endpoint.auth.security_scheme()
        used_errors.update(endpoint.error_statuses())
        paths.setdefault(endpoint.path, {})[endpoint.method.lower()] = _operation(endpoint, refs)
    return {
        "openapi": OPENAPI_VERSION,
        "info": {
            "title": "memberbot API",
            "version": _api_version(),
            "description": 'Every error uses the envelope {"error": {"code", "message", "field"?}}.',
        },
        "paths": paths,
        "components": {
            "schemas": components,
            "responses": {
                f"Error{status}": _error_response(status, refs[(ErrorEnvelope, "serialization")])
                for status in sorted(used_errors)
            },
            "securitySchemes": security_schemes,
        },
    }


def _schemas(
    endpoints: Sequence[Endpoint],
) -> tuple[dict[tuple[type[BaseModel], JsonSchemaMode], dict[str, Any]], dict[str, Any]]:
    wanted: list[tuple[type[BaseModel], JsonSchemaMode]] = [(ErrorEnvelope, "serialization")]
    for endpoint in endpoints:
        for body in (endpoint.body, endpoint.form):
            if body is not None:
                wanted.append((body, "validation"))
        for model in (endpoint.response, *endpoint.alternatives.values()):
            if model is not None:
                wanted.append((model, "serialization"))
    unique = list(dict.fromkeys(wanted))
    refs, definitions = models_json_schema(unique, ref_template=REF)
    return {
        (model, mode): schema
        for (model, mode), schema in refs.items()
        if isinstance(model, type) and issubclass(model, BaseModel)
    }, dict(definitions.get("$defs", {}))


def _json(schema: dict[str, Any], media_type: str = "application/json") -> dict[str, Any]:
    return {media_type: {"schema": schema}}


def _operation(
    endpoint: Endpoint, refs: dict[tuple[type[BaseModel], JsonSchemaMode], dict[str, Any]]
) -> dict[str, Any]:
    operation: dict[str, Any] = {
        "operationId": endpoint.operation_id,
        "summary": endpoint.summary,
        "tags": [endpoint.tag],
    }
    parameters: list[dict[str, Any]] = []
    if endpoint.path_model is not None:
        properties = endpoint.path_model.model_json_schema()["properties"]
        parameters = [
            {
                "name": name,
                "in": "path",
                "required": True,
                "schema": {k: v for k, v in properties[name].items() if k != "title"},
            }
            for name in endpoint.path_params()
        ]
    if endpoint.query is not None:
        parameters.extend(_query_parameters(endpoint.query))
    if parameters:
        operation["parameters"] = parameters
    if endpoint.body is not None:
        content = _json(refs[(endpoint.body, "validation")])
        operation["requestBody"] = {"required": endpoint.body_required, "content": content}
    if endpoint.form is not None:
        schema = refs[(endpoint.form, "validation")]
        operation["requestBody"] = {"required": True, "content": _json(schema, "multipart/form-data")}
    if endpoint.auth is not None:
        operation["security"] = [{endpoint.auth.scheme_name: []}]
        operation["description"] = endpoint.auth.describe()
    responses: dict[str, Any] = {}
    if endpoint.media is not None:
        responses[str(endpoint.status)] = {
            "description": "OK",
            "content": {
                media: {"schema": {"type": "string", "format": "binary"}} for media in endpoint.media_types()
            },
        }
    elif endpoint.response is None:
        responses[str(endpoint.status)] = {"description": "Done (no content)"}
    else:
        responses[str(endpoint.status)] = {
            "description": "OK",
            "content": _json(refs[(endpoint.response, "serialization")]),
        }
    for status, model in endpoint.alternatives.items():
        responses[str(status)] = {
            "description": ERRORS.get(status, "Alternative outcome"),
            "content": _json(refs[(model, "serialization")]),
        }
    for status in endpoint.error_statuses():
        responses[str(status)] = {"$ref": f"#/components/responses/Error{status}"}
    operation["responses"] = responses
    return operation


def _query_parameters(model: type[BaseModel]) -> list[dict[str, Any]]:
    """A flat query model's fields as query parameters (an optional field's `null` left out: a query
    string has no null, only an absent parameter)."""
    schema = model.model_json_schema()
    required = set(schema.get("required", ()))
    parameters = []
    for name, prop in schema["properties"].items():
        options = [o for o in prop.get("anyOf", ()) if o.get("type") != "null"]
        value = dict(options[0]) if len(options) == 1 else {k: v for k, v in prop.items() if k != "anyOf"}
        value.update({k: v for k, v in prop.items() if k in ("description", "default") and v is not None})
        parameter: dict[str, Any] = {"name": name, "in": "query", "required": name in required}
        parameter["schema"] = {k: v for k, v in value.items() if k not in ("title", "description")}
        if "description" in value:
            parameter["description"] = value["description"]
        parameters.append(parameter)
    return parameters


def _error_response(status: int, envelope: dict[str, Any]) -> dict[str, Any]:
    response: dict[str, Any] = {"description": ERRORS.get(status, "Error"), "content": _json(envelope)}
    if status in HEADERS:
        response["headers"] = HEADERS[status]
    return response
