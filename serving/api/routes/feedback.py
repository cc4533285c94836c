"""``POST /feedback``: like, dislike or click on a shown movie."""

from __future__ import annotations

from fastapi import APIRouter, Request, Response, status

from serving.errors import ServingError
from serving.schemas import FeedbackIn, FeedbackOut

router = APIRouter(tags=["feedback"])

ERRORS = {
    404: {"description": "event_id is not in the decision log"},
    409: {"description": "event_id was served to another user"},
    422: {"description": "malformed body, unknown feedback_type or movie, movie not in slate"},
}


@router.post("/feedback", response_model=FeedbackOut, status_code=status.HTTP_201_CREATED,
             responses={200: {"model": FeedbackOut,
                              "description": "the same feedback was already stored"},
                        **ERRORS})
async def post_feedback(body: FeedbackIn, request: Request, response: Response) -> FeedbackOut:
    """Store the feedback and reward the arm of the decision that showed the movie.

    Returns 201 with the stored row, or 200 with the row stored earlier when the same
    ``(event, movie, feedback_type)`` was already received (it counts once). The response's
    ``policy_updated`` and ``note`` say whether (and why not) the policy learned from it.
    """
    # The hot path reads app state directly: each Depends() costs a dependency-solving pass.
    state = request.app.state
    result = await state.service.feedback(body)
    if not result.created:
        response.status_code = status.HTTP_200_OK
    else:
        state.metrics.record_feedback(body.feedback_type.value)
    return FeedbackOut.from_row(result.row)


__all__ = ["ServingError", "router"]
