"""Dependencies shared by the routes: the service, the metrics, the admin check.

They are ``async def`` on purpose: FastAPI runs plain ``def`` dependencies in a thread pool,
which costs two thread switches per request for what is an attribute lookup.
"""

from __future__ import annotations

import secrets
from typing import Annotated

from fastapi import Depends, Header, Request

from serving.errors import ForbiddenError, UnauthorizedError
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


ServiceDep = Annotated[RecommendationService, Depends(get_service)]
MetricsDep = Annotated[Metrics, Depends(get_metrics)]
AdminDep = Depends(require_admin)
