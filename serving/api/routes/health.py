"""``GET /health`` and ``GET /metrics``."""

from __future__ import annotations

import os
from typing import Annotated

from fastapi import APIRouter, Header, Request, Response
from prometheus_client import CONTENT_TYPE_LATEST

from serving.api.deps import MAX_AUTHORIZATION_CHARS, MetricsDep, ServiceDep, require_admin
from serving.schemas import ErrorOut, HealthOut

router = APIRouter(tags=["operations"])


@router.get("/health", response_model=HealthOut, response_model_exclude_none=True,
            responses={401: {"model": ErrorOut, "description": "not a bearer token"},
                       403: {"model": ErrorOut, "description": "wrong token"},
                       503: {"model": ErrorOut, "description": "store down"}})
async def health(
    request: Request, service: ServiceDep,
    authorization: Annotated[str | None, Header(max_length=MAX_AUTHORIZATION_CHARS)] = None,
) -> HealthOut:
    """``{"status": "ok"}`` when the store answers; 503 with ``Retry-After`` when it does not.

    With ``Authorization: Bearer <admin token>`` the answer also names the store, the served
    version and arms, the worker's pid and the service's version; an anonymous caller learns
    only up or down.
    """
    await service._read("ping")
    if authorization is None:
        return HealthOut(status="ok")
    await require_admin(request, authorization)
    return HealthOut(status="ok", store=service.store.describe(),
                     policy_version=service.arm_set.version,
                     arms=list(service.arm_set.names), pid=os.getpid(),
                     version=request.app.version)


@router.get("/metrics", response_class=Response,
            responses={200: {"content": {CONTENT_TYPE_LATEST: {}}}})
async def metrics(metrics: MetricsDep, service: ServiceDep) -> Response:
    """Prometheus text format: requests, latency, decisions and feedback, reward rate by arm.

    The exposition runs in the service's reader executor: the per-arm tallies refresh the
    fold from the store and the drift tallies wait on the fold's lock, neither of which may
    hold the event loop (every other request of the worker would wait behind them).
    """
    body = await service.in_thread(metrics.exposition)
    return Response(body, media_type=CONTENT_TYPE_LATEST)
