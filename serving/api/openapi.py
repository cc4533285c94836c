"""Plain Starlette routes in the FastAPI app, documented from the same pydantic models.

FastAPI documents only its own ``APIRoute``; a :class:`DocumentedRoute` carries its OpenAPI
operation, built by :func:`operation` from the models its endpoint validates with (the query
model's fields become the parameters, the body model the request body, the response models the
responses), so the schema and the validation cannot disagree. :func:`install` adds these
operations and models to the app's schema and documents every 422 (FastAPI's included) with
:class:`serving.schemas.ErrorOut`, the body the one validation handler writes.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from typing import Any

from fastapi import FastAPI
from pydantic import BaseModel
from pydantic.json_schema import JsonSchemaMode, models_json_schema
from starlette.routing import Match, Route
from starlette.types import Scope

from serving.schemas import ErrorOut

REF = "#/components/schemas/{model}"


class DocumentedRoute(Route):
    """A Starlette route with its OpenAPI operation (``openapi``) and its template in the scope.

    ``scope["route"]`` is set as FastAPI sets it for its own routes, so the metrics label the
    request by template.
    """

    def __init__(self, path: str, endpoint: Callable[..., Any], *, method: str,
                 openapi: dict[str, Any],
                 models: list[tuple[type[BaseModel], JsonSchemaMode]]) -> None:
        super().__init__(path, endpoint, methods=[method], include_in_schema=False)
        # Only ``method``: Starlette adds HEAD to a GET route, and a HEAD of GET /recommendations
        # logged a decision (a pull, later a reward of 0) for an answer without a body. HEAD
        # is 405 here as on the FastAPI routes, and the OpenAPI document lists no HEAD.
        self.methods = {method.upper()}
        self.method = method.lower()
        self.openapi = openapi
        self.models = models

    def matches(self, scope: Scope) -> tuple[Match, Scope]:
        """Match as :class:`Route` does, setting ``scope["route"]`` to this route on a match."""
        match, child = super().matches(scope)
        if match is not Match.NONE:
            child["route"] = self
        return match, child


def _ref(model: type[BaseModel]) -> dict[str, str]:
    return {"$ref": REF.format(model=model.__name__)}


def _json(model: type[BaseModel], description: str) -> dict[str, Any]:
    return {"description": description, "content": {"application/json": {"schema": _ref(model)}}}


def operation(*, summary: str, description: str, tag: str, operation_id: str,
              query: type[BaseModel] | None = None, body: type[BaseModel] | None = None,
              responses: Mapping[int, tuple[type[BaseModel], str]],
              errors: Mapping[int, str]
              ) -> tuple[dict[str, Any], list[tuple[type[BaseModel], JsonSchemaMode]]]:
    """An OpenAPI operation and the models it refers to.

    Parameters
    ----------
    summary, description, tag, operation_id : str
    query : pydantic model, optional
        Every field is a query parameter (its JSON schema, required where it has no default).
    body : pydantic model, optional
        The JSON request body.
    responses : mapping of status to (model, description)
        Successful answers.
    errors : mapping of status to description
        Error answers (all :class:`~serving.schemas.ErrorOut`; 422 is always added).

    Returns
    -------
    operation : dict
    models : list of (model, mode)
        For :func:`install`: pydantic's JSON-schema mode of each model
        (``validation`` for what comes in, ``serialization`` for what goes out).
    """
    models: list[tuple[type[BaseModel], JsonSchemaMode]] = [(ErrorOut, "serialization")]
    op: dict[str, Any] = {"tags": [tag], "summary": summary, "description": description,
                          "operationId": operation_id}
    if query is not None:
        schema = query.model_json_schema()
        required = set(schema.get("required", []))
        op["parameters"] = [
            {"name": name, "in": "query", "required": name in required,
             "description": prop.get("description", ""),
             "schema": {k: v for k, v in prop.items() if k != "description"}}
            for name, prop in schema["properties"].items()]
    if body is not None:
        op["requestBody"] = {"required": True,
                             "content": {"application/json": {"schema": _ref(body)}}}
        models.append((body, "validation"))
    op["responses"] = {}
    for status, (model, text) in responses.items():
        op["responses"][str(status)] = _json(model, text)
        models.append((model, "serialization"))
    for status, text in {422: "invalid request (see ``detail``)", **errors}.items():
        op["responses"][str(status)] = _json(ErrorOut, text)
    return op, models


def install(app: FastAPI, routes: list[DocumentedRoute]) -> None:
    """Add ``routes`` to ``app`` and their operations to its OpenAPI schema."""
    # First in the list: the router tries routes in order, and these take most requests.
    app.router.routes[0:0] = routes
    generate = app.openapi

    def openapi() -> dict[str, Any]:
        if app.openapi_schema is not None:
            return app.openapi_schema
        schema = generate()  # FastAPI's, for its own routes (cached on the app)
        components = schema.setdefault("components", {}).setdefault("schemas", {})
        models = [m for route in routes for m in route.models]
        _, defs = models_json_schema(models, ref_template=REF)
        for name, definition in defs.get("$defs", {}).items():
            components.setdefault(name, definition)
        for route in routes:
            schema["paths"].setdefault(route.path, {})[route.method] = route.openapi
        # FastAPI documents its 422 as HTTPValidationError; the one handler writes ErrorOut.
        for path in schema["paths"].values():
            for op in path.values():
                if "422" in op.get("responses", {}):
                    op["responses"]["422"]["content"] = {
                        "application/json": {"schema": _ref(ErrorOut)}}
        for name in ("HTTPValidationError", "ValidationError"):
            components.pop(name, None)
        app.openapi_schema = schema
        return schema

    app.openapi = openapi  # type: ignore[method-assign]
