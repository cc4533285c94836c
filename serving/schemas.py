"""Request and response models of the HTTP API (storage has its own tables in :mod:`store`)."""

from __future__ import annotations

import math
import re
import unicodedata
from collections.abc import Mapping
from datetime import UTC, datetime
from typing import Annotated, Any, Literal

from pydantic import (
    AfterValidator,
    AwareDatetime,
    BaseModel,
    BeforeValidator,
    ConfigDict,
    Field,
    model_validator,
)
from pydantic_core import PydanticCustomError

from bandits.errors import integer_text
from serving.rules import EventType, FeedbackType, ratings_text

#: Bounds shared by the routes and the models: ids fit a 63-bit integer, slates are 1..100 long.
MAX_ID = 2**62
MAX_K = 100
EVENT_ID_PATTERN = r"^[0-9a-f]{32}$"


def _decimal(value: object) -> object:
    """A query-string integer by the numbers' one rule (:func:`bandits.errors.integer_text`:
    plain ASCII digits, a leading minus so that "-1" is said to be out of range, at most
    :data:`bandits.errors.MAX_INTEGER_DIGITS`), said in a 422's shape (``int_parsing``);
    non-strings pass on to the strict integer check (which refuses ``True``).
    """
    if isinstance(value, str):
        try:
            return integer_text(value)
        except ValueError as exc:  # the rule's own words, in the 422's sentence
            raise PydanticCustomError("int_parsing", "Input {why}",
                                      {"why": str(exc)}) from None
    return value


def _iso_text(value: object) -> object:
    """A timestamp given as text must be RFC 3339 (:data:`_RFC_3339`), read here, with one
    message for every text refused: pydantic's datetime also reads a string of digits as Unix
    seconds or milliseconds by its magnitude (``"1796555017000"`` was taken as milliseconds
    while the number ``1796555017000`` is refused as seconds in the future), a form the API
    does not document; and text of the right shape but no time (``:60``, ``+24:00``), or a
    value neither text nor number (``true``), got two errors, one per branch of the union
    (found by attack). Numbers pass on to the Unix-seconds branch.
    """
    if isinstance(value, float) and not math.isfinite(value):  # NaN, 1e999 (two messages)
        raise PydanticCustomError("datetime_from_date_parsing", _TIMESTAMP_FORMS)
    if value is None or (isinstance(value, int | float) and not isinstance(value, bool)):
        return value
    if not isinstance(value, str):
        raise PydanticCustomError("datetime_from_date_parsing", _TIMESTAMP_FORMS)
    try:
        return read_timestamp(value)
    except TimestampShapeError:
        raise PydanticCustomError("datetime_from_date_parsing", _TIMESTAMP_FORMS) from None
    except ValueError as exc:
        raise PydanticCustomError("datetime_from_date_parsing",
                                  _TIMESTAMP_FORMS + ": {reason}", {"reason": str(exc)}) from None


class TimestampShapeError(ValueError):
    """Text not of the shape :func:`read_timestamp` takes."""


def read_timestamp(text: str, *, date_alone: bool = False) -> datetime:
    """The one reader of date-times given as text (the API's timestamps, ``recbandits purge
    --before``): RFC 3339 (:data:`_RFC_3339`), as an aware datetime.

    Parameters
    ----------
    text : str
    date_alone : bool, default False
        Also take a date alone (its midnight), a date-time without a zone (UTC) and one
        without seconds (what ``purge --before`` documents). The API's timestamps need both.

    Raises
    ------
    TimestampShapeError
        ``text`` is not of that shape (a week date, ISO 8601's basic form, a decimal comma).
    ValueError
        The shape, but no instant: a month 13, a leap second, an offset of 24 hours (the
        message says which).
    """
    if not (_DATE_OR_RFC_3339 if date_alone else _RFC_3339).fullmatch(text):
        raise TimestampShapeError(f"not an RFC 3339 date-time: {text!r}")
    try:  # fromisoformat keeps six decimals, as pydantic did
        moment = datetime.fromisoformat(text.upper())
    except ValueError as exc:  # the shape, but no instant: a month 13, a leap second
        # (Python's words for +24:00 name its timedelta: found by attack.)
        raise ValueError("the UTC offset must lie within -23:59 and +23:59" if "offset" in str(exc)
                         else str(exc)) from None
    return moment if moment.tzinfo is not None else moment.replace(tzinfo=UTC)


_TIMESTAMP_FORMS = ("Input should be ISO 8601 text with a UTC offset (RFC 3339: "
                    "2026-01-01T12:00:00Z) or Unix seconds as a finite JSON number")

#: RFC 3339 date-times (ISO 8601's extended form): a "T" (or a space) between date and time,
#: seconds, any decimal fraction (six decimals kept), and "Z" or a +-HH:MM offset, not RFC
#: 3339's "-00:00" (offset unknown). ASCII digits only. Found by attack: "2026-12-06_12:05:50Z"
#: and "+0000" passed a date-only check and pydantic's loose reading of the rest; then
#: (re-attack) minutes without seconds, a decimal comma and full-width digits passed this one;
#: an offset's minutes are 00-59 (review: "+05:60" was read as +06:00, "+00:99" as +01:39).
_DATE, _MINUTE = r"[0-9]{4}-[0-9]{2}-[0-9]{2}", r"[Tt ][0-9]{2}:[0-9]{2}"
_SECONDS = r":[0-9]{2}(\.[0-9]+)?"
_TIME = _MINUTE + _SECONDS
_OFFSET = r"([Zz]|(?!-00:00)[+-][0-9]{2}:[0-5][0-9])"
_RFC_3339 = re.compile(_DATE + _TIME + _OFFSET)
#: The same with the time, or only its zone (then UTC), or the time's seconds left out:
#: ``purge --before``'s DATE (review: ``2026-09-01T12:00`` was refused though ISO 8601). The
#: API's timestamps keep RFC 3339's seconds.
_DATE_OR_RFC_3339 = re.compile(f"{_DATE}({_MINUTE}({_SECONDS})?{_OFFSET}?)?")

#: An id in a JSON body: a JSON integer only (``true``, ``1.0`` and ``"10"`` are refused).
Id = Annotated[int, Field(strict=True, ge=1, le=MAX_ID)]
#: Parses a query-string integer (after the bounds in the annotation, so that the JSON schema
#: shows them as ``minimum``/``maximum``).
QUERY_INT = BeforeValidator(_decimal)


class RecommendationQuery(BaseModel):
    """The query of ``GET /recommendations`` (the route refuses any other key: its
    ``PARAMETERS``).
    """

    user_id: Annotated[int, Field(strict=True, ge=1, le=MAX_ID, description="Raw user id"),
                       QUERY_INT]
    k: Annotated[int, Field(strict=True, ge=1, le=MAX_K, description="Slate size"),
                 QUERY_INT] = 10


class RecommendedItem(BaseModel):
    """One movie of a slate."""

    movie_id: int
    title: str
    year: int | None = None
    genres: list[str]
    score: float = Field(description="Arm score after the session adjustment (higher is better)")
    position: int = Field(description="1-based rank in the slate")
    arm: str | None = Field(None, description="The arm that contributed this movie: the "
                            "decision's arm, or in a multileaved slate the arm whose ranking "
                            "the team draft took it from (events on it credit that arm)")


class RecommendationOut(BaseModel):
    """A slate: the decision's ``event_id``, the arm that chose it and its propensity."""

    event_id: str = Field(description="Id of the logged decision; send it back with feedback")
    user_id: int
    arm: str = Field(description="The arm that ranked the slate, or with multileaved slates "
                     "the set of arms mixed into it, joined by '+' (each item names its own)")
    propensity: float = Field(description="Probability the policy had of choosing this arm (a "
                              "multileaved slate: this set of arms)")
    policy_version: int
    cold_start: bool = Field(description="True when the user is unknown to the arms and the "
                             "popularity ranking served them outside the (context-free) "
                             "policy")
    items: list[RecommendedItem]


class FeedbackIn(BaseModel):
    """A user's like, dislike or click on a movie, optionally naming the decision that showed it."""

    model_config = ConfigDict(extra="forbid")

    user_id: Id
    movie_id: Id
    feedback_type: FeedbackType
    event_id: str | None = Field(
        default=None, pattern=EVENT_ID_PATTERN, min_length=32, max_length=32,
        description="Decision that showed the movie; omitted: the latest such decision of this "
                    "user within the reward window",
    )


#: Printable text with at least one visible character: no NUL or other control character (one
#: store refuses NUL in text, and none belongs in a title). The JSON schema shows it;
#: :func:`_printable` checks the rest of Unicode.
PRINTABLE_PATTERN = r"^[^\x00-\x1f\x7f]*[^\s\x00-\x1f\x7f][^\x00-\x1f\x7f]*$"
#: Unicode categories refused anywhere in printable text: controls (C1 included), line and
#: paragraph separators, surrogates and private use. Unassigned code points stay allowed: they
#: are per this Python's Unicode database (14.0 on 3.11), so an emoji of a later Unicode would be
#: refused (found by review); the non-characters, which no Unicode will assign, are refused by
#: :data:`_NON_CHARACTERS`.
_UNPRINTABLE = frozenset({"Cc", "Zl", "Zp", "Cs", "Co"})
#: The 66 non-characters, U+FDD0-U+FDEF and the last two code points of every plane (found by
#: attack: ``"A\uffffB"`` was a title): Unicode's own, the same whatever its version.
_NON_CHARACTERS = frozenset([*map(chr, range(0xFDD0, 0xFDF0)),
                             *(chr(plane + last) for plane in range(0, 0x110000, 0x10000)
                               for last in (0xFFFE, 0xFFFF))])
#: Refused anywhere: the bidi embeddings, overrides and isolates, which reorder the text shown
#: after them ("evil\u202egnp.exe" shows as "evilexe.png"; the marks LRM and RLM stay allowed),
#: the tag characters (hidden text after a title), the interlinear annotation marks, and the
#: byte-order mark U+FEFF (a zero-width no-break space inside text: found by attack).
_HIDING_CHARACTERS = frozenset(chr(c) for c in (*range(0x202A, 0x202F), *range(0x2066, 0x206A),
                                            *range(0xE0000, 0xE0080), *range(0xFFF9, 0xFFFC),
                                            0xFEFF))
#: Letters and symbols that show as blank (Hangul fillers, the Braille blank) or stand in for
#: an object that is not there (U+FFFC: a title of it alone was taken, found by attack): not
#: visible.
_BLANK_LOOKING = frozenset("\u115f\u1160\u3164\uffa0\u2800\ufffc")


def _printable(value: str) -> str:
    """Printable text (a title, a genre): none of :data:`_UNPRINTABLE` or
    :data:`_HIDING_CHARACTERS`, and at least one letter, digit, punctuation mark or symbol not
    in :data:`_BLANK_LOOKING`, so a text of zero-width spaces alone is refused as one of spaces
    is (found by attack:
    ``"\u200b\u200b"``, ``"a\u0085b\u2028c"`` and a bidi override were accepted as titles).
    """
    categories = [unicodedata.category(c) for c in value]
    if (any(c in _UNPRINTABLE for c in categories)
            or any(c in _HIDING_CHARACTERS or c in _NON_CHARACTERS for c in value)
            or not any(cat[0] in "LNPS" and c not in _BLANK_LOOKING
                       for c, cat in zip(value, categories, strict=True))):
        raise PydanticCustomError("printable_text", "Input should be printable text: no "
                                  "control, line or paragraph separator, bidi-override, tag, "
                                  "annotation, byte-order-mark or private-use character or "
                                  "non-character, and at least one letter, digit, "
                                  "punctuation mark or symbol that does not show as blank or "
                                  "stand in for an object")
    return value


#: Most genres one request names, and the longest genre name: one limit for an item's genres
#: (``POST /admin/items``) and a user's stated ones (``PUT /users/{id}/preferences``).
MAX_GENRES = 64
MAX_GENRE_CHARS = 64
#: A genre name in a request: printable (:func:`_printable`), at most :data:`MAX_GENRE_CHARS`.
GenreName = Annotated[str, Field(max_length=MAX_GENRE_CHARS,
                                 json_schema_extra={"pattern": PRINTABLE_PATTERN}),
                      AfterValidator(_printable)]
#: The genres a request names: at most :data:`MAX_GENRES`.
GenreList = Annotated[list[GenreName], Field(max_length=MAX_GENRES)]


#: Most events in one ``POST /events`` request.
MAX_EVENTS = 1000
IDEMPOTENCY_KEY_PATTERN = r"^[A-Za-z0-9._:-]{1,64}$"


class EventIn(BaseModel):
    """One thing a user did with an item (``POST /events``); what it is worth is the rule book's."""

    model_config = ConfigDict(extra="forbid")

    user_id: Id
    item_id: Id = Field(description="The item (a movie id, or one added by POST /admin/items)")
    type: EventType
    # + 0.0: a dwell of -0.0 is stored and echoed as 0.0 (found by attack: "-0.0" came back).
    value: Annotated[float, Field(strict=True, allow_inf_nan=False),
                     AfterValidator(lambda v: v + 0.0)] | None = Field(
        default=None, description="A rating's stars (1-5) or a dwell's seconds; omitted for "
                                  "the other types")
    timestamp: Annotated[
        AwareDatetime | Annotated[float, Field(strict=True, allow_inf_nan=False)] | None,
        BeforeValidator(_iso_text)] = (
        Field(default=None, description="When it happened: ISO 8601 with a UTC offset, or Unix "
                                        "seconds (default: when it is received). Not in the "
                                        "future, nor older than the retention window"))
    event_id: str | None = Field(
        default=None, pattern=EVENT_ID_PATTERN, min_length=32, max_length=32,
        description="Decision that showed the item; omitted: the latest such decision of this "
                    "user within the reward window")
    idempotency_key: str | None = Field(
        default=None, pattern=IDEMPOTENCY_KEY_PATTERN,
        description="Makes retries safe: an event with the same user, item, type and key is "
                    "stored once. Without it, an event is a duplicate of one with the same "
                    "user, item, type, decision and timestamp (without a timestamp either: "
                    "the same user, item, type and decision, so a repeated view needs a key "
                    "or a timestamp)")

    def unix_time(self) -> float | None:
        """``timestamp`` in Unix seconds (None when not given)."""
        if self.timestamp is None or isinstance(self.timestamp, float | int):
            return self.timestamp
        return self.timestamp.timestamp()


class EventsIn(BaseModel):
    """A batch of events, stored all or none, in order; one event may come bare (an object
    without ``events``), taken as a batch of one, so its errors name ``events[0]``.
    """

    model_config = ConfigDict(extra="forbid")

    events: list[EventIn] = Field(min_length=1, max_length=MAX_EVENTS)

    @model_validator(mode="before")
    @classmethod
    def _one_event(cls, data: Any) -> Any:
        if isinstance(data, dict) and "events" not in data:
            return {"events": [data]}
        return data


class EventOut(BaseModel):
    """One stored event, and whether (and why) it updated the policy."""

    id: int = Field(description="The event's log position: never given to another event")
    user_id: int
    item_id: int
    type: EventType
    value: float | None
    event_id: str | None = Field(description="Decision the event was attributed to, if any")
    arm: str | None = Field(description="Arm of that decision, if any")
    reward: float | None = Field(description="The rule book's reward for it (None: it carries "
                                 "none)")
    policy_updated: bool = Field(description="Whether it decided its decision's reward")
    rating: float | None = Field(description="Implicit rating kept for retraining")
    note: str
    created: bool = Field(description="False: the same event was stored earlier (counted once)")
    timestamp: datetime = Field(description="When it happened")

    @classmethod
    def from_row(cls, row: Mapping[str, Any], created: bool) -> EventOut:
        """The answer for a stored event row."""
        return cls(**cls.fields_of(row, created))

    @staticmethod
    def fields_of(row: Mapping[str, Any], created: bool) -> dict[str, Any]:
        """The fields of :meth:`from_row`'s answer, as its validation leaves them (the
        numbers of float fields as floats), without building the model: ``POST /events``
        writes them as JSON directly (the same bytes; 4.6 against 12.0 us for a one-event
        answer with the model built, validated and dumped).

        Raises
        ------
        ValueError
            A ``feedback_type`` that is not an :class:`EventType`.
        """
        value, reward, rating = row.get("value"), row["reward"], row["rating"]
        return {
            "id": int(row["id"]), "user_id": int(row["user_id"]), "item_id": int(row["movie_id"]),
            "type": EventType(row["feedback_type"]),
            "value": None if value is None else float(value), "event_id": row["event_id"],
            "arm": row["arm"], "reward": None if reward is None else float(reward),
            "policy_updated": bool(row["counted"]),
            "rating": None if rating is None else float(rating), "note": row["note"],
            "created": created, "timestamp": datetime.fromtimestamp(row["created_at"], UTC)}


class EventsOut(BaseModel):
    """The stored events, in request order."""

    stored: int = Field(description="Events stored by this request")
    duplicates: int = Field(description="Events that were stored already")
    events: list[EventOut]


class FeedbackOut(BaseModel):
    """The recorded feedback, and whether (and why) it updated the policy."""

    id: int
    user_id: int
    movie_id: int
    feedback_type: FeedbackType
    event_id: str | None = Field(description="Decision the feedback was attributed to, if any")
    arm: str | None = Field(description="Arm rewarded by this feedback, if any")
    reward: float | None
    policy_updated: bool = Field(description="Whether the feedback changed the policy's posterior")
    rating: float | None = Field(description="Rating kept for retraining (the rule book's; by "
                                 f"default {ratings_text(FeedbackType)})")
    note: str = Field(description="Why the policy was or was not updated")
    created_at: datetime

    @classmethod
    def from_row(cls, row: Mapping[str, Any]) -> FeedbackOut:
        """The response for a stored feedback row (the route and the hot path share it)."""
        return cls(
            id=row["id"], user_id=row["user_id"], movie_id=row["movie_id"],
            feedback_type=row["feedback_type"], event_id=row["event_id"], arm=row["arm"],
            reward=row["reward"], policy_updated=bool(row["counted"]),
            rating=row["rating"], note=row["note"],
            created_at=datetime.fromtimestamp(row["created_at"], UTC),
        )


class ArmPolicyOut(BaseModel):
    """One arm of the served policy; the Beta fields only for the Thompson Sampling policies."""

    arm: str
    pulls: int = Field(description="Decisions that chose this arm")
    outcomes: int = Field(description="Rewards the policy folded for this arm (decided outcomes)")
    mean_reward: float | None = Field(description="Mean of those rewards (None before any)")
    expected_reward: float = Field(
        description="The policy's estimate: the posterior mean (Beta policies), the observed "
                    "mean (UCB, epsilon-greedy), or x.theta at the average context (LinTS, "
                    "LinUCB)")
    selection_probability: float = Field(
        description="Probability of choosing this arm now (at the average context when "
                    "contextual)")
    alpha: float | None = Field(None, description="Beta posterior parameter: prior + successes")
    beta: float | None = Field(None, description="Beta posterior parameter: prior + failures")
    successes: float | None = None
    failures: float | None = None
    credible_interval: tuple[float, float] | None = Field(
        None, description="Central 95% posterior interval")
    inclusion_probability: float | None = Field(
        None, description="With multileaved slates: probability this arm is among the "
                          "multileaved arms of the next slate (summing to multileave_arms)")


class PolicyOut(BaseModel):
    """The served policy: its class, hyper-parameters, version and per-arm posterior."""

    policy: str = Field(description="The policy class served")
    params: dict[str, Any] = Field(description="Its hyper-parameters")
    contextual: bool
    policy_version: int
    log_seq: int = Field(description="Log position of the last outcome folded into the state")
    reward_window_s: float
    slate_mode: str = Field("single", description="``single`` or ``multileave`` (slates mixed "
                            "from multileave_arms arms, each event crediting its item's arm)")
    multileave_arms: int | None = Field(None, description="Arms per multileaved slate")
    holdout: dict[str, Any] | None = Field(
        None, description="The live holdout, ``{share, baseline}`` (None: none; "
        ":mod:`serving.holdout`)")
    drift: dict[str, Any] | None = Field(
        None, description="Per arm: the sliding-window reward rates, the change detector's "
        "alarms (with the latest alarms' log positions) and statistic, a fold of the log "
        "(:mod:`serving.drift`)")
    arms: list[ArmPolicyOut]


class DemoFactsOut(BaseModel):
    """What the demo page says about the service it shows, read from the service, not written
    into the page (the page said MovieLens's 943 users and the popularity list whatever the
    dataset and ``cold_start_arm``: found by attack).
    """

    dataset: str = Field(description="The catalogue's dataset (the ``dataset`` setting)")
    known_users: int = Field(description="Users the served arms know")
    first_user: int | None = Field(description="Smallest id of a known user (None: none)")
    last_user: int | None = Field(description="Largest id of a known user (None: none)")
    cold_start_arm: str | None = Field(
        description="The arm serving users the arms do not know, outside the policy (None: "
        "a contextual policy chooses for them)")
    max_k: int = Field(description="Longest slate ``GET /recommendations`` serves")


class HealthOut(BaseModel):
    """``status`` for everyone; the rest only for a caller with the admin token."""

    status: str = Field(description="``ok``: the store answers (503 when it does not)")
    store: str | None = Field(None, description="The store (admin token only)")
    policy_version: int | None = Field(None, description="Served version (admin token only)")
    arms: list[str] | None = Field(None, description="Served arms (admin token only)")
    pid: int | None = Field(None, description="Worker process id (admin token only)")
    version: str | None = Field(None, description="Service version (admin token only)")


class ValidationIssue(BaseModel):
    """One reason a request was refused (pydantic's error, without the offending input)."""

    loc: list[str | int] = Field(description="Where: ``query``/``body``/``header``, then the "
                                 "field")
    msg: str
    type: str = Field(description="pydantic's error type, e.g. ``int_parsing``")


class ErrorOut(BaseModel):
    """Every error answer: ``detail`` is a message, or the list of validation issues (422)."""

    detail: str | list[ValidationIssue]
    code: str = Field(description="Machine-readable reason, e.g. ``invalid_request``, "
                      "``event_not_found``, ``store_unavailable``")


#: The earliest release year of an added item (films begin in the 1880s).
MIN_ITEM_YEAR = 1800
#: How many years after the current one an added item's release year may be (a film announced
#: ahead); the bound was a fixed 2200 (found by attack: 174 years ahead was taken).
YEARS_AHEAD = 10


def _not_far_ahead(year: int) -> int:
    """``year`` when at most :data:`YEARS_AHEAD` years after the current one (UTC)."""
    latest = datetime.now(UTC).year + YEARS_AHEAD
    if year > latest:
        raise PydanticCustomError("less_than_equal", "Input should be a year at most "
                                  "{years} years after the current one: at most {latest}",
                                  {"years": YEARS_AHEAD, "latest": latest})
    return year


class ItemIn(BaseModel):
    """A new catalogue item (``POST /admin/items``)."""

    model_config = ConfigDict(extra="forbid")

    # The pattern is the JSON schema's: _printable checks it and more with one readable
    # message (found by attack: a title of spaces was refused with the raw pattern).
    item_id: Id = Field(description="Its id: not yet in the catalogue")
    title: Annotated[str, AfterValidator(_printable)] = Field(
        min_length=1, max_length=500, json_schema_extra={"pattern": PRINTABLE_PATTERN},
        description="Printable text, not only spaces")
    genres: GenreList = Field(
        default_factory=list,
        description="Genre names of the catalogue (``GET /users/{id}/preferences`` lists them); "
                    "one named twice counts once")
    year: Annotated[int, Field(strict=True, ge=MIN_ITEM_YEAR), AfterValidator(_not_far_ahead)
                    ] | None = Field(default=None, description=(
                        f"Its release year: from {MIN_ITEM_YEAR} to {YEARS_AHEAD} years after "
                        "the current one; omitted or null: unknown (stored as null)"))


class ItemOut(BaseModel):
    """An added item: where it is in the log, and which arms can show it at once."""

    item_id: int
    title: str
    genres: list[str]
    year: int | None
    log_seq: int = Field(description="Its position in the log")
    arms_now: list[str] = Field(description="Arms that learned it at once (they grow with the "
                                "catalogue); the others include it at the next retrain and "
                                "meanwhile rank it by the session's genres only")


class RetrainOut(BaseModel):
    """A finished retrain and the gate's decision (HTTP 200 either way): ``status`` ``live``
    (the candidate passed and is served as ``version``), ``candidate`` (saved for a
    promotion), ``rejected`` (nothing served changed; ``policy_version`` is still the one
    served), with the gate's report, or ``unchanged`` (the training data and hyper-parameters
    are the served version's: nothing fitted or recorded; ``reason`` says so).
    """

    status: Literal["live", "candidate", "rejected", "unchanged"] = Field(
        description="live (served now), candidate (saved), rejected (by the gate) or "
        "unchanged (same data and hyper-parameters as the served version: nothing published)")
    version: int = Field(description="The version recorded for this retrain (unchanged: the "
                         "served one)")
    policy_version: int = Field(description="The version served after the retrain")
    reason: str
    n_feedback_ratings: int
    gate: dict[str, Any] | None = Field(description="The gate's report (arms.gate: per arm "
                                        "HR@10 / NDCG@10 with intervals, candidate and "
                                        "serving); null with the gate off")
    gate_seconds: float
    seconds: float


class ModelVersionOut(BaseModel):
    """One row of the versions table (``serving.versions``)."""

    version: int
    created_at: float
    status: str = Field(description="live, candidate, rejected or retired")
    kind: str = Field(description="start, retrain, promote or rollback")
    reason: str
    arms_dir: str | None
    arms: dict[str, Any]
    data: dict[str, Any] = Field(description="n_ratings, n_feedback_ratings, first_event, "
                                 "last_event, log_seq of the fit")
    gate: dict[str, Any] | None
    source_version: int | None = Field(description="Promotion or rollback: whose arms")
    served_seq: int | None = Field(description="Log position where it started being served")
    served_at: float | None
    changed_arms: list[str]
    carryover: dict[str, Any]


class ModelsOut(BaseModel):
    """Every model version, and the one served."""

    live: int | None
    versions: list[ModelVersionOut]


class PolicyNameOut(BaseModel):
    """A policy as the settings spell it: its name and hyper-parameters."""

    name: str = Field(description="The policy's class (ThompsonSampling, LinTS, UCB1, ...)")
    params: dict[str, Any] = Field(description="Its hyper-parameters (policy_params)")


class PromotionOut(BaseModel):
    """A recorded promotion of a shadow policy (``serving.shadow``)."""

    id: int = Field(description="The promotion's number (the store's latest wins)")
    policy: PolicyNameOut = Field(description="The policy that became live")
    previous: PolicyNameOut = Field(description="The policy it replaced")


class ShadowWorkerOut(BaseModel):
    """The answering worker's view of shadow mode."""

    pid: int
    live: dict[str, Any] = Field(description="The live policy's name and parameters as this "
                                 "worker logs them (exploration floor included)")
    shadow_log_seq: int | None = Field(description="Log position this worker's shadow state "
                                       "folded up to; null without a shadow")


class ShadowRecordsOut(BaseModel):
    """One shadow policy of the log's shadow records and how many decisions carry its record."""

    policy: PolicyNameOut
    decisions: int
    is_shadow: bool = Field(description="Whether it is the shadow in force above")


class ShadowStatusOut(BaseModel):
    """``GET /admin/shadow``: the live and shadow policies in force, the latest promotion, the
    decisions logged with a shadow record, and this worker's view.
    """

    live: PolicyNameOut = Field(description="In force: the latest promotion's, else the "
                                "settings'")
    shadow: PolicyNameOut | None = Field(description="The shadow in force; null: none (or "
                                         "it was promoted)")
    promotion: PromotionOut | None = Field(description="The latest promotion; null: none")
    shadow_decisions: int = Field(description="Decisions that carry a shadow record")
    logged_live: PolicyNameOut | None = Field(description="The policy the log's latest "
                                              "decision was made by; null: no decision")
    logged_is_live: bool | None = Field(description="Whether that is the live policy above, "
                                        "compared by name and every hyper-parameter")
    logged_before_promotion: bool | None = Field(description="Whether that decision was made "
                                                 "before the latest promotion (none since); "
                                                 "null: no decision or no promotion")
    shadow_records: list[ShadowRecordsOut] = Field(description="Each shadow policy the log's "
                                                   "shadow records name, with their count, in "
                                                   "the order of their first record")
    worker: ShadowWorkerOut


class ShadowPromoteOut(BaseModel):
    """``POST /admin/shadow/promote``: the promotion recorded."""

    promotion: int = Field(description="The promotion's number")
    policy: PolicyNameOut = Field(description="The policy live now")
    previous: PolicyNameOut = Field(description="The policy it replaced")
