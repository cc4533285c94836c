"""The app's error handlers: every error of every route becomes one JSON shape here.

``{"detail": <message or list of validation issues>, "code": <reason>}``
(:class:`serving.schemas.ErrorOut`): domain errors (:class:`serving.errors.ServingError`) with
their status, database failures mapped by the store, validation errors (FastAPI's and the hot
routes' alike, see :mod:`serving.api.validation`), starlette's HTTP errors (404, 405, 413) and,
for anything else, a logged 500 that never carries the traceback.
"""

from __future__ import annotations

import logging
import re
from collections.abc import Iterable, Iterator
from http import HTTPStatus

from fastapi import FastAPI
from fastapi.exceptions import RequestValidationError
from starlette.exceptions import HTTPException as StarletteHTTPException
from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import BaseRoute, Route, get_route_path

from serving.api.body_limit import BodyTooLargeError
from serving.api.responses import json_response
from serving.api.validation import invalid_request_body
from serving.errors import ServingError, StoreUnavailableError
from serving.store import database_errors, store_unavailable

logger = logging.getLogger("serving.app")


async def serving_error(_request: Request, exc: ServingError) -> Response:
    """Answer a domain error ``exc`` with its status, message and code.

    A 503 carries ``Retry-After``, a 401 ``WWW-Authenticate: Bearer``; ``_request`` is unused.
    """
    headers = None
    if isinstance(exc, StoreUnavailableError):
        headers = {"Retry-After": str(exc.retry_after_s)}
    elif exc.status_code == 401:
        headers = {"WWW-Authenticate": "Bearer"}
    return json_response({"detail": exc.message, "code": exc.code}, exc.status_code, headers)


async def store_error(request: Request, exc: Exception) -> Response:
    """Answer a database error ``exc`` from the store: 503 for an outage or a lock, else 500.

    The 500 is logged with ``request``'s method and path and its traceback.
    """
    # The one mapping of database failures to HTTP: an outage or a lock is a 503 with
    # Retry-After (see store_unavailable); anything else from the store is a bug (500).
    error = store_unavailable(exc)
    if error is None:
        logger.error("store error on %s %s", request.method, request.url.path, exc_info=exc)
        return json_response({"detail": "internal error of the store", "code": "internal"}, 500)
    return await serving_error(request, error)


async def validation_error(_request: Request, exc: RequestValidationError) -> Response:
    """Answer FastAPI's validation error ``exc`` with the 422 body of :class:`ErrorOut`."""
    return json_response(invalid_request_body(exc.errors()), 422)


async def http_error(request: Request, exc: StarletteHTTPException) -> Response:
    """Answer Starlette's HTTP error ``exc`` as an :class:`ErrorOut` (its code: the phrase)."""
    if isinstance(exc, BodyTooLargeError):  # cut off while the body was being read
        return exc.response()
    code = HTTPStatus(exc.status_code).phrase.lower().replace(" ", "_").replace("-", "_")
    headers = exc.headers
    if exc.status_code == 405:
        headers = {**(headers or {}), "Allow": ", ".join(allowed_methods(request))}
    return json_response({"detail": exc.detail, "code": code}, exc.status_code, headers)


def _route_methods(routes: Iterable[BaseRoute]) -> Iterator[tuple[re.Pattern[str], set[str]]]:
    """Each route's path pattern and methods, FastAPI's included routers walked into."""
    for route in routes:
        included = getattr(route, "original_router", None)  # FastAPI's include_router
        if included is not None:
            yield from _route_methods(included.routes)
        elif isinstance(route, Route) and route.methods:
            yield route.path_regex, route.methods


def allowed_methods(request: Request) -> list[str]:
    """The methods some route of ``request``'s app answers at its path, sorted: a 405's
    ``Allow``. Starlette's names only the first route whose path matched, and
    ``/users/{id}/preferences`` has two (``DELETE`` was answered ``Allow: PUT`` although
    ``GET`` is served there too).
    """
    state = request.app.state
    table = getattr(state, "route_methods", None)
    if table is None:  # the routes are fixed once the app serves
        table = state.route_methods = list(_route_methods(request.app.router.routes))
    # The path the routes match (Starlette's own rule: a mounted app's root path taken off;
    # found by attack: under a Mount every 405 said "Allow:" with nothing).
    path = get_route_path(request.scope)
    return sorted({m for pattern, methods in table if pattern.match(path) for m in methods})


async def internal_error(request: Request, exc: Exception) -> Response:
    """Answer an unexpected ``exc`` with a bare 500, logging it with ``request``'s path."""
    # A bug: the traceback is logged, never sent. Starlette's ServerErrorMiddleware calls this,
    # then re-raises for the server to log as well.
    logger.error("error answering %s %s", request.method, request.url.path, exc_info=exc)
    return json_response({"detail": "internal error", "code": "internal"}, 500)


def install(app: FastAPI) -> None:
    """Register every handler on ``app`` (FastAPI's own 422 handler included)."""
    app.add_exception_handler(ServingError, serving_error)  # type: ignore[arg-type]
    for error_class in database_errors():
        app.add_exception_handler(error_class, store_error)
    app.add_exception_handler(RequestValidationError, validation_error)  # type: ignore[arg-type]
    app.add_exception_handler(StarletteHTTPException, http_error)  # type: ignore[arg-type]
    app.add_exception_handler(Exception, internal_error)
