"""``/admin``: refit the arms (``POST /admin/retrain``, gated), the model versions (``GET
/admin/models``, ``GET /admin/models/{v}``, ``POST /admin/models/{v}/promote``, ``POST
/admin/models/rollback``), add catalogue items (``POST /admin/items``), show a worker's learned
state (``GET /admin/policy-state``, ``GET /admin/live-state``), and shadow mode (``GET
/admin/shadow``, ``POST /admin/shadow/promote``).
"""

from __future__ import annotations

from typing import Annotated, Any

from fastapi import APIRouter, Depends, Path
from starlette.concurrency import run_in_threadpool

from serving import versions
from serving.api.deps import AdminDep, JsonBody, ServiceDep, bare
from serving.schemas import (
    ErrorOut,
    ItemIn,
    ItemOut,
    ModelsOut,
    ModelVersionOut,
    PolicyNameOut,
    RetrainOut,
    ShadowPromoteOut,
    ShadowStatusOut,
)

router = APIRouter(prefix="/admin", tags=["admin"], dependencies=[AdminDep])


_AUTH: dict[int | str, dict[str, Any]] = {401: {"model": ErrorOut, "description": "no token"},
         403: {"model": ErrorOut, "description": "wrong token"}}


#: The side-effect routes taking neither a query parameter nor a body.
_BARE = [bare()]

#: A version in the path: text, so that :func:`serving.versions.parse_version` (the one check
#: of the API and the CLI) refuses ``1_0``, ``+2`` or ``02`` with its 422 (``int`` takes them);
#: bounded like every string the API accepts.
VersionPath = Annotated[str, Path(max_length=64,
                                  description=f"plain digits, {versions.VERSION_RANGE}")]


@router.post("/retrain", response_model=RetrainOut,
             responses={**_AUTH, 409: {"model": ErrorOut, "description": "a retrain is running "
                                                                      "already (on any worker "
                                                                      "or host), or a promotion "
                                                                      "or rollback changed the "
                                                                      "live version during its "
                                                                      "fit"},
                        422: {"model": ErrorOut, "description": "an unknown or repeated "
                                                               "query parameter, or a body"}},
             dependencies=[bare(candidate=("true", "false"))])
async def retrain(service: ServiceDep, candidate: bool = False) -> RetrainOut:
    """Fit a candidate arm set (on the ratings the rule book, ``serving.rules``, keeps for
    retraining), gate it, and serve it as a new policy version if the gate accepts it
    (``serving.versions``).

    200 either way: ``status`` says ``live`` or ``rejected`` (nothing served changed), with
    the gate's metrics; ``?candidate=true`` saves an accepted candidate without serving it
    (``candidate``; ``POST /admin/models/{v}/promote`` serves it). Requests keep being served
    by the old arms until the new ones are swapped in; every worker picks the new version up
    within its refresh interval. One retrain runs at a time across workers and hosts (the
    store's retrain lease, as the triggers take it): while one runs, another is answered 409
    ``retrain_running``. A promotion or rollback made during the fit stands: the retrain is
    answered 409 and serves and records nothing.
    """
    result = await run_in_threadpool(lambda: service.retrain(serve=not candidate))
    return RetrainOut(**result.to_dict())


@router.get("/models", response_model=ModelsOut, responses=_AUTH)
async def models(service: ServiceDep) -> ModelsOut:
    """Every model version (the versions table): status, reason, data span, gate report."""
    rows = await service.in_thread(service.store.versions)
    live = next((r.version for r in rows if r.status == "live"), None)
    return ModelsOut(live=live, versions=[ModelVersionOut(**r.to_dict()) for r in rows])


@router.get("/models/{version}", response_model=ModelVersionOut,
            responses={**_AUTH, 404: {"model": ErrorOut, "description": "unknown version"}})
async def model(version: VersionPath, service: ServiceDep) -> ModelVersionOut:
    """One model version's row (``version``: plain digits, 1..``versions.MAX_VERSION``; else
    422).
    """
    row = await service.in_thread(versions.show, service.store,
                                  versions.parse_version(version))
    return ModelVersionOut(**row.to_dict())


@router.post("/models/{version}/promote", response_model=ModelVersionOut,
             responses={**_AUTH, 404: {"model": ErrorOut, "description": "unknown version"},
                        409: {"model": ErrorOut, "description": "rejected by the gate (no "
                              "saved arms), live already, fitted on another catalogue, or "
                              "its arms are missing"},
                        422: {"model": ErrorOut, "description": "not a version number, a "
                              "query parameter or a body"}},
             dependencies=[bare(path={"version": versions.parse_version})])
async def promote(version: VersionPath, service: ServiceDep) -> ModelVersionOut:
    """Serve the arms of ``version`` (plain digits, 1..``versions.MAX_VERSION``; else 422) as a
    new version (pointing at its folder); every worker loads them within one refresh interval
    while the old arms keep serving.
    """
    number = versions.parse_version(version)
    row = await run_in_threadpool(service.serve_version, number)
    return ModelVersionOut(**row.to_dict())


@router.post("/models/rollback", response_model=ModelVersionOut,
             responses={**_AUTH, 409: {"model": ErrorOut, "description": "nothing to roll "
                                       "back to"},
                        422: {"model": ErrorOut, "description": "a query parameter or a body"}},
             dependencies=_BARE)
async def rollback(service: ServiceDep) -> ModelVersionOut:
    """Serve again the arms of the version served before the live one, as a new version."""
    row = await run_in_threadpool(service.serve_version, None)
    return ModelVersionOut(**row.to_dict())


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
    return await service.in_thread(service.live_state)


_ITEM = JsonBody(ItemIn, query={})  # the query (none taken) and the body in one 422


@router.post("/items", response_model=ItemOut, status_code=201,
             responses={401: {"model": ErrorOut, "description": "no token"},
                        403: {"model": ErrorOut, "description": "wrong token"},
                        409: {"model": ErrorOut, "description": "the item exists already"},
                        415: {"model": ErrorOut, "description": "a body that is not JSON"},
                        422: {"model": ErrorOut, "description": "malformed body, unknown "
                                                               "genre, or a query parameter"}},
             openapi_extra=_ITEM.openapi_extra)
async def add_item(body: Annotated[ItemIn, Depends(_ITEM)],
                   service: ServiceDep) -> ItemOut:
    """Add an item to the catalogue at once, on every worker within one refresh interval.

    Events on it are accepted at once; the arms that grow with the catalogue (co-occurrence,
    popularity) learn it from its events; the others include it at the next retrain (its
    events become ratings) and meanwhile rank it by the genres of the user's session.
    """
    item, arms_now = await service.post_item(body.item_id, body.title, body.genres,
                                             body.year)
    return ItemOut(item_id=item.item_id, title=item.title, genres=list(item.genres), year=item.year,
                   log_seq=item.seq, arms_now=arms_now)


@router.get("/shadow", response_model=ShadowStatusOut, responses=_AUTH)
async def shadow_status(service: ServiceDep) -> ShadowStatusOut:
    """The live and shadow policies in force (the settings', or the latest promotion's), the
    latest promotion, how many decisions carry a shadow record, and this worker's view.
    """
    return ShadowStatusOut.model_validate(await service.in_thread(service.shadow_status))


@router.post("/shadow/promote", response_model=ShadowPromoteOut,
             responses={**_AUTH, 409: {"model": ErrorOut, "description": "no shadow policy in "
                                                                      "force, a purged log, "
                                                                      "or another promotion "
                                                                      "meanwhile"},
                        422: {"model": ErrorOut, "description": "a query parameter or a body"}},
             dependencies=_BARE)
async def promote_shadow(service: ServiceDep) -> ShadowPromoteOut:
    """Make the shadow policy the live one: recorded in the store (a restart keeps it; it
    overrides the settings' policy), served by this worker at once and by every other within
    one refresh interval. Its state is the fold of the whole log under its own rule.
    """
    result = await run_in_threadpool(service.promote_shadow)
    p = result.promotion
    return ShadowPromoteOut(promotion=p.id, policy=PolicyNameOut(name=p.policy, params=p.params),
                            previous=PolicyNameOut.model_validate(result.previous))
