"""``POST /feedback``: like, dislike or click on a shown movie.

A plain Starlette route (see :mod:`serving.api.openapi`), like ``GET /recommendations``.
"""

from __future__ import annotations

from starlette.requests import Request
from starlette.responses import Response

from serving.api.deps import checked_body
from serving.api.openapi import DocumentedRoute, operation
from serving.api.responses import json_response
from serving.schemas import FeedbackIn, FeedbackOut

DESCRIPTION = """Store the feedback and reward the arm of the decision that showed the movie.

Returns 201 with the stored row, or 200 with the row stored earlier when the same
``(event, movie, feedback_type)`` was already received (it counts once). The response's
``policy_updated`` and ``note`` say whether (and why not) the policy learned from it."""


async def post_feedback(request: Request) -> Response:
    """``POST /feedback``: record a like, dislike or click, and update the policy.

    The body is parsed by hand from ``request`` (JSON only: 415 otherwise) and validated as
    :class:`FeedbackIn`; the answer is :class:`FeedbackOut`.
    """
    # No query parameter is taken: a typo (``?dry_run=1``) must not store as if it were absent.
    body = await checked_body(request, FeedbackIn, query={})
    state = request.app.state
    result = await state.service.feedback(body)
    if result.created:
        state.metrics.record_feedback(body.feedback_type.value)
    out = FeedbackOut.from_row(result.row)
    return json_response(out.model_dump(), 201 if result.created else 200)


_OPENAPI, _MODELS = operation(
    summary="Post Feedback", description=DESCRIPTION, tag="feedback",
    operation_id="post_feedback", body=FeedbackIn,
    responses={201: (FeedbackOut, "stored"),
               200: (FeedbackOut, "the same feedback was already stored")},
    errors={404: "event_id is not in the decision log",
            409: "event_id was served to another user",
            413: "request body too large",
            415: "the body is not application/json",
            422: "malformed body, unknown feedback_type or movie, movie not in slate, "
                 "or a query parameter",
            503: "the store is unavailable (``Retry-After``)"})

route = DocumentedRoute("/feedback", post_feedback, method="POST", openapi=_OPENAPI,
                        models=_MODELS)
