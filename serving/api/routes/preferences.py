"""``PUT`` and ``GET /users/{user_id}/preferences``: the genres a user says they like.

A newcomer (a user the arms do not know yet) is served the popularity ranking outside the
policy; once they have stated genres, the items of those genres come first
(:meth:`serving.armset.ArmSet.preferred_ranking`). Each statement is a row of the log
(``preferences``, its seq from ``log_head``); the latest wins. A known user's statement is
stored too, and steers nothing until the service serves them as a newcomer.
"""

from __future__ import annotations

from collections.abc import Sequence
from datetime import UTC, datetime
from typing import Annotated, Any

from fastapi import APIRouter, Depends, Path
from pydantic import BaseModel, ConfigDict, Field, TypeAdapter

from serving.api.deps import JsonBody, ServiceDep
from serving.errors import InvalidInputError
from serving.schemas import MAX_ID, QUERY_INT, ErrorOut, GenreList

router = APIRouter(tags=["users"])

#: A user id in the path: plain decimal digits, as in a query.
UserId = Annotated[int, Path(ge=1, le=MAX_ID, description="Raw user id"), QUERY_INT]


class PreferencesIn(BaseModel):
    """A user's stated genres (``PUT /users/{user_id}/preferences``)."""

    model_config = ConfigDict(extra="forbid")

    genres: GenreList = Field(description="Genre names of the catalogue (``available`` in the "
                                          "GET answer); an empty list clears the preference")


class PreferencesOut(BaseModel):
    """A user's stated genres, when they were stated, and the genres the catalogue has."""

    user_id: int
    genres: list[str] = Field(description="The stated genres, in the catalogue's order")
    updated_at: datetime | None = Field(description="When they were stated (null: never)")
    available: list[str] = Field(description="Every genre name of the catalogue")


def stated_genres(genres: Sequence[str], allowed: Sequence[str]) -> list[str]:
    """``genres`` in the catalogue's order, each once.

    Raises
    ------
    InvalidInputError
        A name that is not one of ``allowed`` (422; the message lists them).
    """
    unknown = sorted(set(genres) - set(allowed))
    if unknown:
        raise InvalidInputError(f"genres {unknown} are not genres of the catalogue; allowed: "
                                f"{list(allowed)}")
    wanted = set(genres)
    return [g for g in allowed if g in wanted]


# Typed as FastAPI's ``responses`` parameter is (a dict's value types are not widened).
_ERRORS: dict[int | str, dict[str, Any]] = {
    422: {"model": ErrorOut, "description": "malformed body or an unknown genre"},
    503: {"model": ErrorOut, "description": "the store is unavailable (Retry-After)"}}


#: The body, the query (none taken) and the user id checked by one dependency: every issue
#: in one 422.
_PREFERENCES = JsonBody(PreferencesIn, query={},
                        path={"user_id": TypeAdapter(UserId).validate_python})


@router.put("/users/{user_id}/preferences", response_model=PreferencesOut,
            responses={**_ERRORS, 415: {"model": ErrorOut, "description": "a body that is not "
                                                                         "JSON"},
                       422: {"model": ErrorOut, "description": "malformed body, an unknown "
                                                               "genre, or a query parameter"}},
            openapi_extra=_PREFERENCES.openapi_extra)
async def put_preferences(user_id: UserId,
                          body: Annotated[PreferencesIn, Depends(_PREFERENCES)],
                          service: ServiceDep) -> PreferencesOut:
    """State the genres ``user_id`` likes (replacing any earlier statement)."""
    available = list(service.catalog.genre_names)
    genres = stated_genres(body.genres, available)
    _, at = await service.write_in_thread(service.store.set_preferences, user_id, genres)
    return PreferencesOut(user_id=user_id, genres=genres,
                          updated_at=datetime.fromtimestamp(at, UTC), available=available)


@router.get("/users/{user_id}/preferences", response_model=PreferencesOut, responses=_ERRORS)
async def get_preferences(user_id: UserId, service: ServiceDep) -> PreferencesOut:
    """The genres ``user_id`` stated last (none: an empty list and ``updated_at`` null)."""
    stated = await service.in_thread(service.store.user_preferences, user_id)
    genres, at = stated if stated is not None else ([], None)
    return PreferencesOut(user_id=user_id, genres=genres,
                          updated_at=None if at is None else datetime.fromtimestamp(at, UTC),
                          available=list(service.catalog.genre_names))
