"""``GET /health`` and ``GET /metrics``."""

from __future__ import annotations

import os

from fastapi import APIRouter, Response
from prometheus_client import CONTENT_TYPE_LATEST

from serving.api.deps import MetricsDep, ServiceDep
from serving.schemas import HealthOut

router = APIRouter(tags=["operations"])


@router.get("/health", response_model=HealthOut, responses={503: {"description": "store down"}})
async def health(service: ServiceDep) -> HealthOut:
    """``ok`` when the store answers; 503 with ``Retry-After`` when it does not."""
    await service._read("ping")
    return HealthOut(status="ok", store=service.store.describe(),
                     policy_version=service.arm_set.version,
                     arms=list(service.arm_set.names), pid=os.getpid())


@router.get("/metrics", response_class=Response,
            responses={200: {"content": {CONTENT_TYPE_LATEST: {}}}})
async def metrics(metrics: MetricsDep) -> Response:
    """Prometheus text format: requests, latency, decisions and feedback, reward rate by arm."""
    return Response(metrics.exposition(), media_type=CONTENT_TYPE_LATEST)
