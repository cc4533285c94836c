"""Dependencies shared by the routes: the service, the metrics, the admin check, JSON bodies.

They are ``async def`` on purpose: FastAPI runs plain ``def`` dependencies in a thread pool,
which costs two thread switches per request for what is an attribute lookup.
"""

from __future__ import annotations

import secrets
from typing import Annotated

import pydantic_core
from fastapi import Depends, Header, Request
from fastapi.exceptions import RequestValidationError

from serving.api.validation import invalid_json, is_json
from serving.errors import ForbiddenError, UnauthorizedError, UnsupportedMediaTypeError
from serving.metrics import Metrics
from serving.service import RecommendationService


async def get_service(request: Request) -> RecommendationService:
    """The worker's :class:`RecommendationService`, from ``request.app.state``."""
    return request.app.state.service


async def get_metrics(request: Request) -> Metrics:
    """The worker's :class:`Metrics`, from ``request.app.state``."""
    return request.app.state.metrics


async def require_admin(
    request: Request,
    authorization: Annotated[str | None, Header(max_length=1000)] = None,
) -> None:
    """Allow the call only with ``Authorization: Bearer <admin token>``.

    Raises
    ------
    UnauthorizedError
        No bearer token (401).
    ForbiddenError
        Wrong token, or no admin token configured (403).
    """
    if not authorization or not authorization.lower().startswith("bearer "):
        raise UnauthorizedError("admin endpoints need 'Authorization: Bearer <token>'")
    expected = request.app.state.settings.admin_token
    if expected is None:
        raise ForbiddenError("admin endpoints are disabled: set RECBANDITS_ADMIN_TOKEN")
    given = authorization[len("bearer "):].strip()
    if not secrets.compare_digest(given.encode(), expected.get_secret_value().encode()):
        raise ForbiddenError("wrong admin token")


async def json_content(request: Request) -> None:
    """Hold a FastAPI route's JSON body to what the hot routes take (:func:`~serving.api.
    validation.json_body`): FastAPI decodes a body with ``json.loads``, which also takes a
    byte-order mark, UTF-16 and UTF-32 text and ``NaN``, and a body of another content type
    reaches its model as bytes (a 422 where the hot routes answer 415; found by attack).

    Raises
    ------
    UnsupportedMediaTypeError
        A ``Content-Type`` other than JSON (415).
    RequestValidationError
        A body that is not UTF-8 JSON text as pydantic's parser reads it (422).
    """
    if not is_json(request.headers.get("content-type")):
        raise UnsupportedMediaTypeError("the request body must be application/json")
    raw = await request.body()
    try:
        pydantic_core.from_json(raw, allow_inf_nan=False)
    except ValueError as exc:
        raise RequestValidationError(invalid_json(exc)) from None


ServiceDep = Annotated[RecommendationService, Depends(get_service)]
MetricsDep = Annotated[Metrics, Depends(get_metrics)]
AdminDep = Depends(require_admin)
JsonContentDep = Depends(json_content)
