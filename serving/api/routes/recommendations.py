"""``GET /recommendations``: the policy picks an arm, the arm fills the slate."""

from __future__ import annotations

from typing import Annotated

from fastapi import APIRouter, Query, Request

from serving.schemas import MAX_ID, MAX_K, RecommendationOut

router = APIRouter(tags=["recommendations"])


@router.get("/recommendations", response_model=RecommendationOut)
async def recommendations(
    request: Request,
    user_id: Annotated[int, Query(ge=1, le=MAX_ID, description="Raw user id")],
    k: Annotated[int, Query(ge=1, le=MAX_K, description="Slate size")] = 10,
) -> RecommendationOut:
    """Top-``k`` movies for ``user_id`` from the arm the policy picks; the decision is logged.

    Movies the user rated in training or gave feedback on are excluded; the session's likes
    promote movies of similar genres and its dislikes demote them. A user unknown to the arms
    is served by popularity outside the policy (``cold_start: true``, propensity 1).
    """
    # The hot path reads app state directly: each Depends() costs a dependency-solving pass.
    state = request.app.state
    result = await state.service.recommend(user_id, k)
    state.metrics.record_decision(result.arm)
    return RecommendationOut(
        event_id=result.event_id, user_id=result.user_id, arm=result.arm,
        propensity=result.propensity, policy_version=result.policy_version,
        cold_start=result.cold_start, items=result.items,
    )
