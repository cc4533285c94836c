"""``GET /policy``: the posterior of every arm, read fresh from the store."""

from __future__ import annotations

from fastapi import APIRouter

from serving.api.deps import ServiceDep
from serving.schemas import PolicyOut

router = APIRouter(tags=["policy"])


@router.get("/policy", response_model=PolicyOut)
async def policy(service: ServiceDep) -> PolicyOut:
    """Per arm: Beta posterior, pulls, successes, failures, mean reward, selection probability."""
    return PolicyOut.model_validate(await service.policy_view())
