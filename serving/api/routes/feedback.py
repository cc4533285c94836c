"""``POST /feedback``: like, dislike or click on a shown movie.

A plain Starlette route (see :mod:`serving.api.openapi`), like ``GET /recommendations``.
"""

from __future__ import annotations

from starlette.requests import ClientDisconnect, Request
from starlette.responses import Response

from serving.api.openapi import DocumentedRoute, operation
from serving.api.responses import json_response
from serving.api.validation import validate_json
from serving.errors import UnsupportedMediaTypeError
from serving.schemas import FeedbackIn, FeedbackOut

DESCRIPTION = """Store the feedback and reward the arm of the decision that showed the movie.

Returns 201 with the stored row, or 200 with the row stored earlier when the same
``(event, movie, feedback_type)`` was already received (it counts once). The response's
``policy_updated`` and ``note`` say whether (and why not) the policy learned from it."""


def is_json(content_type: str | None) -> bool:
    """Whether a request's ``Content-Type`` is JSON (none counts as JSON, as in FastAPI)."""
    # No Content-Type is taken as JSON, as FastAPI does.
    if content_type is None:
        return True
    media = content_type.partition(";")[0].strip().lower()
    return media == "application/json" or (media.startswith("application/")
                                            and media.endswith("+json"))


async def post_feedback(request: Request) -> Response:
    """``POST /feedback``: record a like, dislike or click, and update the policy.

    The body is parsed by hand from ``request`` (JSON only: 415 otherwise) and validated as
    :class:`FeedbackIn`; the answer is :class:`FeedbackOut`.
    """
    if not is_json(request.headers.get("content-type")):
        raise UnsupportedMediaTypeError("the request body must be application/json")
    try:
        raw = await request.body()
    except ClientDisconnect:  # gone (or cut off at the body time-out): nobody to answer
        return Response(status_code=499)
    body = validate_json(FeedbackIn, raw)
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
            422: "malformed body, unknown feedback_type or movie, movie not in slate",
            503: "the store is unavailable (``Retry-After``)"})

route = DocumentedRoute("/feedback", post_feedback, method="POST", openapi=_OPENAPI,
                        models=_MODELS)
