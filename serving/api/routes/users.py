"""``GET /users/{user_id}/features``: the feature vector a contextual policy would see now.

A plain Starlette route (see :mod:`serving.api.openapi`), like ``GET /recommendations``: the
service computes the vector (:meth:`serving.service.RecommendationService.user_features`, feature
set ``user-v4`` of :mod:`serving.features`) from the user's events within the retention window
and the genres they stated.
"""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Annotated

from pydantic import BaseModel, Field
from starlette.requests import Request
from starlette.responses import Response

from serving.api.openapi import DocumentedRoute, operation
from serving.api.responses import json_response
from serving.api.validation import validate
from serving.features import FEATURE_VERSION
from serving.schemas import MAX_ID, QUERY_INT

DESCRIPTION = """The user's named feature vector as of now: static features from the catalogue
(demographics, training genre shares and activity; zero for a user it does not know), behavioural
features folded from the user's events within the retention window (time-decayed counts per event
type, genre affinities, recency, live activity, diversity) and the genres the user stated. Each
value is rounded as a decision logs it; ``names`` is the same list for every user of one
``feature_version``."""


class UserPath(BaseModel):
    """The path parameters of ``GET /users/{user_id}/features``."""

    user_id: Annotated[int, Field(strict=True, ge=1, le=MAX_ID, description="Raw user id"),
                       QUERY_INT]


class UserFeaturesOut(BaseModel):
    """A user's feature vector: names and values in the same order, and when it was computed."""

    user_id: int
    feature_version: str = Field(description="Version of the feature set (names and meaning)")
    names: list[str] = Field(description="Feature names, in the order of ``values``")
    values: list[float] = Field(description="Feature values, rounded as decisions log them")
    as_of: datetime = Field(description="The time the retention window was taken at; the "
                                        "decay is taken at the start of the user's "
                                        "``feature_decay_step_s`` step that holds it (each "
                                        "user's steps start at their own phase), or at the "
                                        "user's latest event if later")


async def user_features(request: Request) -> Response:
    """``GET /users/{user_id}/features``: the vector of :class:`UserFeaturesOut`.

    The path of ``request`` is validated as :class:`UserPath` (422 otherwise).
    """
    path = validate(UserPath, request.path_params, "path")
    names, values, as_of = await request.app.state.service.user_features(path.user_id)
    return json_response({"user_id": path.user_id, "feature_version": FEATURE_VERSION,
                          "names": names, "values": values,
                          "as_of": datetime.fromtimestamp(as_of, UTC)})


_OPENAPI, _MODELS = operation(
    summary="User Features", description=DESCRIPTION, tag="users",
    operation_id="user_features",
    responses={200: (UserFeaturesOut, "the feature vector")},
    errors={503: "the store is unavailable (``Retry-After``)"})
# operation() documents query parameters only; this one is in the path.
_user_id = UserPath.model_json_schema()["properties"]["user_id"]
_OPENAPI["parameters"] = [{
    "name": "user_id", "in": "path", "required": True,
    "description": _user_id.get("description", ""),
    "schema": {k: v for k, v in _user_id.items() if k != "description"}}]

route = DocumentedRoute("/users/{user_id}/features", user_features, method="GET",
                        openapi=_OPENAPI, models=_MODELS)
