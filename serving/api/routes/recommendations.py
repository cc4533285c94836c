"""``GET /recommendations``: the policy picks an arm, the arm fills the slate.

A plain Starlette route (see :mod:`serving.api.openapi`): FastAPI's per-request parameter
solving and response-model validation cost more than the domain work of this route.

No hand-written path is kept in front of the app's middleware stack. Measured with
bench/serving_load.py (1 worker, SQLite, server CPU per request, three alternated pairs at load
9-12): a shorter stack for the hot routes (the same routes, middleware and handlers without
FastAPI's own layers) took 153/178/195 us per recommendation against 183/206/188 us for the
app's stack (-9% on average, one pair the other way; the rate ratios did not separate them),
under the 10% that would justify a second way in. The hand-written ASGI path this replaced
took about 113 us (two runs).
"""

from __future__ import annotations

from starlette.requests import Request
from starlette.responses import Response

from serving.api.openapi import DocumentedRoute, operation
from serving.api.responses import json_response
from serving.api.validation import validate
from serving.schemas import RecommendationOut, RecommendationQuery

#: The response's keys, in the model's order (the service's Recommendation has each of them).
FIELDS = tuple(RecommendationOut.model_fields)

DESCRIPTION = """Top-``k`` movies for ``user_id`` from the arm the policy picks; the decision is
logged.

Movies the user rated in training or gave feedback on are excluded; the session's likes promote
movies of similar genres and its dislikes demote them. A user unknown to the arms is served by
popularity outside the policy (``cold_start: true``, propensity 1)."""


async def recommendations(request: Request) -> Response:
    """``GET /recommendations``: top-``k`` movies for ``user_id`` (see ``DESCRIPTION``).

    The query of ``request`` is validated as :class:`RecommendationQuery`; the decision is
    logged and counted in the metrics.
    """
    query = validate(RecommendationQuery, request.query_params, "query")
    state = request.app.state
    result = await state.service.recommend(query.user_id, query.k)
    state.metrics.record_decision(result.arm)
    # Written as the service made it (RecommendationOut documents it; tests check they agree).
    return json_response({name: getattr(result, name) for name in FIELDS})


_OPENAPI, _MODELS = operation(
    summary="Recommendations", description=DESCRIPTION, tag="recommendations",
    operation_id="recommendations", query=RecommendationQuery,
    responses={200: (RecommendationOut, "the slate and the logged decision")},
    errors={503: "the store is unavailable (``Retry-After``)"})

route = DocumentedRoute("/recommendations", recommendations, method="GET", openapi=_OPENAPI,
                        models=_MODELS)
