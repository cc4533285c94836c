"""``POST /admin/retrain``: refit the arms on MovieLens plus feedback, swap them in."""

from __future__ import annotations

import time
from typing import Any

from fastapi import APIRouter
from starlette.concurrency import run_in_threadpool

from serving.api.deps import AdminDep, ServiceDep
from serving.schemas import ErrorOut, RetrainOut

router = APIRouter(prefix="/admin", tags=["admin"], dependencies=[AdminDep])


@router.post("/retrain", response_model=RetrainOut,
             responses={401: {"model": ErrorOut, "description": "no token"},
                        403: {"model": ErrorOut, "description": "wrong token"}})
async def retrain(service: ServiceDep) -> RetrainOut:
    """Refit every arm (likes as 5, dislikes as 1) and publish a new policy version.

    Requests keep being served by the old arms until the new ones are swapped in; every
    worker picks the new version up within its refresh interval.
    """
    start = time.perf_counter()
    version, n_ratings = await run_in_threadpool(service.retrain)
    return RetrainOut(policy_version=version, n_feedback_ratings=n_ratings,
                      seconds=time.perf_counter() - start)


@router.get("/policy-state",
            responses={401: {"model": ErrorOut, "description": "no token"},
                       403: {"model": ErrorOut, "description": "wrong token"}})
async def policy_state(service: ServiceDep) -> dict[str, Any]:
    """The learned state this worker serves (``state_dict`` of its policy) and the log
    position it folded up to: equal, on every worker, to the fold of the log's outcomes up to
    that position (``recbandits rebuild-state`` computes the same fold).
    """
    return service.policy_state()
