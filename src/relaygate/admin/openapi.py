"""The OpenAPI 3.1 document of the admin API, generated from the route table and the same
msgspec types that decode the requests and encode the responses."""

from __future__ import annotations

from typing import Any

import msgspec

from relaygate.admin.routes import PREFIX, Route
from relaygate.admin.schemas import Error

_REF = "#/components/schemas/{name}"
_ERRORS = {
    "400": "Invalid request (the field at fault in param)",
    "401": "No valid admin token or session",
    "403": "Not allowed to this principal",
    "404": "No such object (or another account's, for a member)",
    "409": "Conflicts with an earlier request",
}


def _operation(route: Route, names: dict[type, str]) -> dict[str, Any]:
    error = {"content": {"application/json": {"schema": {"$ref": _REF.format(name="Error")}}}}
    responses: dict[str, Any] = {
        str(route.status): {
            "description": "OK",
            "content": {
                "application/json": {"schema": {"$ref": _REF.format(name=names[route.response])}}
            },
        }
    }
    if not route.public:
        responses.update({code: {"description": text, **error} for code, text in _ERRORS.items()})
    parameters: list[dict[str, Any]] = [
        {"name": part[1:-1], "in": "path", "required": True, "schema": {"type": "string"}}
        for part in route.parts
        if part.startswith("{")
    ]
    parameters += [
        {"name": name, "in": "query", "required": False, "schema": {"type": "string"}}
        for name in route.query
    ]
    parameters += [
        {"name": name, "in": "header", "required": False, "schema": {"type": "string"}}
        for name in route.headers
    ]
    operation: dict[str, Any] = {
        "summary": route.summary,
        "operationId": route.handler.__name__,
        "responses": responses,
    }
    if parameters:
        operation["parameters"] = parameters
    if route.body is not None:
        operation["requestBody"] = {
            "required": True,
            "content": {
                "application/json": {"schema": {"$ref": _REF.format(name=names[route.body])}}
            },
        }
    if not route.public:
        operation["security"] = [{"adminToken": []}, {"session": []}]
    return operation


def _money_accepts_numbers(schema: Any) -> None:
    """msgspec describes a Decimal as a string; requests may send a JSON number too."""
    if isinstance(schema, dict):
        if schema.get("format") == "decimal":
            schema["type"] = ["string", "number"]
        for value in schema.values():
            _money_accepts_numbers(value)
    elif isinstance(schema, list):
        for value in schema:
            _money_accepts_numbers(value)


def document(routes: list[Route]) -> dict[str, Any]:
    """The OpenAPI 3.1 document for ``routes``."""
    types: list[type] = [Error]
    for route in routes:
        types.append(route.response)
        if route.body is not None:
            types.append(route.body)
    types = list(dict.fromkeys(types))
    schemas, components = msgspec.json.schema_components(types, ref_template=_REF)
    _money_accepts_numbers(components)
    pairs = zip(types, schemas, strict=True)
    names = {kind: schema["$ref"].rsplit("/", 1)[1] for kind, schema in pairs}
    paths: dict[str, dict[str, Any]] = {}
    for route in routes:
        paths.setdefault(PREFIX + route.path, {})[route.method.lower()] = _operation(route, names)
    return {
        "openapi": "3.1.0",
        "info": {
            "title": "relaygate admin API",
            "version": "1",
            "description": "Accounts, their keys and credits, redemption codes and the audit"
            " log. Money is a decimal string of USD (six places); errors have the"
            ' contract\'s shape {"error": {code, message, type, param?}}.',
        },
        "paths": paths,
        "components": {
            "schemas": components,
            "securitySchemes": {
                "adminToken": {"type": "http", "scheme": "bearer"},
                "session": {"type": "apiKey", "in": "cookie", "name": "relaygate_session"},
            },
        },
    }
