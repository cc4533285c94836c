"""``GET /recommendations``: the policy picks an arm, the arm fills the slate.

A plain Starlette route (see :mod:`serving.api.openapi`): FastAPI's per-request parameter
solving and response-model validation cost more than the domain work of this route.

The app answers it in front of its middleware stack (:mod:`serving.api.front`, with the
measured figure), calling this same endpoint with the app's own handlers; a shorter stack alone
measured 9% (153/178/195 against 183/206/188 us of server CPU, three alternated bench pairs at
load 9-12), not enough, while skipping the stack altogether halves the cost in process.
"""

from __future__ import annotations

from collections.abc import Mapping

from fastapi.exceptions import RequestValidationError
from starlette.requests import Request
from starlette.responses import Response

from serving.api.openapi import DocumentedRoute, operation
from serving.api.responses import json_response
from serving.api.validation import query_errors, validate
from serving.schemas import RecommendationOut, RecommendationQuery

#: The response's keys, in the model's order (the service's Recommendation has each of them).
FIELDS = tuple(RecommendationOut.model_fields)

DESCRIPTION = """Top-``k`` movies for ``user_id`` from the arm the policy picks; the decision is
logged.

Movies the user rated in training or gave feedback on are excluded; the session's likes promote
movies of similar genres and its dislikes demote them. A user unknown to the arms is served by
popularity outside a context-free policy (``cold_start: true``, propensity 1); a contextual
policy chooses for them from their features. Either way the genres they stated
(``PUT /users/{id}/preferences``) go first until their session has a like or a dislike."""


#: The query's parameters: any other is refused (422 ``unknown_parameter``), as on every route
#: that writes (the route logs a decision: ``?K=3`` must not serve the default k).
PARAMETERS = frozenset(RecommendationQuery.model_fields)


def _query(request: Request) -> Mapping[str, str]:
    """The parameters of ``request``'s query: a plain one split here, any other by Starlette.

    A query of plain ASCII without escapes, of :data:`PARAMETERS` each given once, is split
    here: Starlette's ``QueryParams`` (``parse_qsl`` into a multi-dict) took ~15 us of a ~90 us
    request in process. Any other query is parsed by Starlette and checked by the one rule
    (a set lookup per key here keeps the split path from taking what that rule refuses). Either
    way the values are validated by the same model, so the answers are the same.

    Raises
    ------
    RequestValidationError
        A parameter the route does not take, or one given more than once
        (:func:`serving.api.validation.query_errors`): the request logs a decision.
    """
    raw: bytes = request.scope["query_string"]
    if raw.isascii() and b"%" not in raw and b"+" not in raw:
        params: dict[str, str] = {}
        for part in raw.split(b"&"):
            name, _, value = part.partition(b"=")
            key = name.decode()
            if key in params or key not in PARAMETERS:
                break  # a repeated or unknown key: checked below on Starlette's parse
            params[key] = value.decode()
        else:
            return params
    errors = query_errors([name for name, _ in request.query_params.multi_items()], PARAMETERS)
    if errors:
        # The other parameters' issues too, all at once (found by attack: a bad k was said
        # only once the repeated user_id was mended); a repeated one's values are not read.
        repeated = {e["loc"][1] for e in errors}
        try:
            validate(RecommendationQuery, request.query_params, "query")
        except RequestValidationError as exc:
            errors += [e for e in exc.errors() if e["loc"][1:2] and e["loc"][1] not in repeated]
        raise RequestValidationError(errors)
    return request.query_params


async def recommendations(request: Request) -> Response:
    """``GET /recommendations``: top-``k`` movies for ``user_id`` (see ``DESCRIPTION``).

    The query of ``request`` is validated as :class:`RecommendationQuery`; the decision is
    logged and counted in the metrics.
    """
    query = validate(RecommendationQuery, _query(request), "query")
    state = request.app.state
    result = await state.service.recommend(query.user_id, query.k)
    state.metrics.record_decision(result.arm)
    # Written as the service made it, a dataclass whose fields are the keys of FIELDS in order
    # (RecommendationOut documents it; tests check they agree): orjson writes it without the
    # dict copy (~1.5 us).
    return json_response(result)


_OPENAPI, _MODELS = operation(
    summary="Recommendations", description=DESCRIPTION, tag="recommendations",
    operation_id="recommendations", query=RecommendationQuery,
    responses={200: (RecommendationOut, "the slate and the logged decision")},
    errors={503: "the store is unavailable (``Retry-After``)"})

route = DocumentedRoute("/recommendations", recommendations, method="GET", openapi=_OPENAPI,
                        models=_MODELS)
