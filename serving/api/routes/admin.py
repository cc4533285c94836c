"""``/admin``: refit the arms (``POST /admin/retrain``), add catalogue items (``POST
/admin/items``), show a worker's learned state (``GET /admin/policy-state``, ``GET
/admin/live-state``), and shadow mode (``GET /admin/shadow``, ``POST /admin/shadow/promote``).
"""

from __future__ import annotations

import time
from typing import Any

from fastapi import APIRouter
from starlette.concurrency import run_in_threadpool

from serving.api.deps import AdminDep, ServiceDep
from serving.schemas import ErrorOut, ItemIn, ItemOut, RetrainOut

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


@router.get("/live-state",
            responses={401: {"model": ErrorOut, "description": "no token"},
                       403: {"model": ErrorOut, "description": "wrong token"}})
async def live_state(service: ServiceDep) -> dict[str, Any]:
    """The worker's live arms (co-occurrence, live popularity) as a SHA-256 of their state,
    the log position they folded up to and the store they fold: ``recbandits rebuild-state``
    folds the log to that position and compares.
    """
    return await run_in_threadpool(service.live_state)


@router.post("/items", response_model=ItemOut, status_code=201,
             responses={401: {"model": ErrorOut, "description": "no token"},
                        403: {"model": ErrorOut, "description": "wrong token"},
                        409: {"model": ErrorOut, "description": "the item exists already"},
                        422: {"model": ErrorOut, "description": "malformed body or unknown "
                                                               "genre"}})
async def add_item(body: ItemIn, service: ServiceDep) -> ItemOut:
    """Add an item to the catalogue at once, on every worker within one refresh interval.

    Events on it are accepted at once; the arms that grow with the catalogue (co-occurrence,
    popularity) learn it from its events; the others include it at the next retrain (its
    events become ratings) and meanwhile rank it by the genres of the user's session.
    """
    item, arms_now = await run_in_threadpool(service.add_item, body.item_id, body.title,
                                             body.genres, body.year)
    return ItemOut(item_id=item.item_id, title=item.title, genres=list(item.genres), year=item.year,
                   log_seq=item.seq, arms_now=arms_now)


@router.get("/shadow",
            responses={401: {"model": ErrorOut, "description": "no token"},
                       403: {"model": ErrorOut, "description": "wrong token"}})
async def shadow_status(service: ServiceDep) -> dict[str, Any]:
    """The live and shadow policies in force (the settings', or the latest promotion's), the
    latest promotion, how many decisions carry a shadow record, and this worker's view.
    """
    return await run_in_threadpool(service.shadow_status)


@router.post("/shadow/promote",
             responses={401: {"model": ErrorOut, "description": "no token"},
                        403: {"model": ErrorOut, "description": "wrong token"},
                        409: {"model": ErrorOut, "description": "no shadow policy in force, "
                                                               "or a purged log"}})
async def promote_shadow(service: ServiceDep) -> dict[str, Any]:
    """Make the shadow policy the live one: recorded in the store (a restart keeps it; it
    overrides the settings' policy), served by this worker at once and by every other within
    one refresh interval. Its state is the fold of the whole log under its own rule.
    """
    result = await run_in_threadpool(service.promote_shadow)
    p = result.promotion
    return {"promotion": p.id, "policy": {"name": p.policy, "params": p.params},
            "previous": result.previous}
