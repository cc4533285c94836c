"""The rule book: what each kind of feedback is worth, and how one decision gets one reward.

Nothing else in the code knows these rules. The service applies them when feedback arrives, the
store's replay and ``rebuild-state`` apply them to the log, ``ope`` reads the rewards they
decided, and retraining reads the ratings they give.

A feedback type has

- a **reward** for the policy in ``[0, 1]`` (``None``: the type is stored but carries no reward,
  so it never decides a decision's outcome);
- a **rating** kept for retraining (``None``: no rating);
- a **session sign**: +1 when it pulls the user's next slates towards the item's genres, -1 when
  it pushes them away, 0 when it does neither;
- whether it **excludes** the item from the user's next slates (live, and after a retrain);
- a **precedence**: which of a (user, item)'s rated events gives the pair its one rating for
  retraining (:meth:`RuleBook.kept_rating`). The event of highest precedence wins, ties going to
  the later event (its timestamp, then its log position): an explicit ``rating`` outranks every
  implicit event and the latest of several explicit ratings wins; a like or a dislike outranks
  a click or a view, so a view after a like leaves the like's rating. The fold is commutative,
  so the rating does not depend on the order the events arrive in.

Exactly one reward in ``[0, 1]`` per policy decision reaches the policy. How several feedbacks
on one decision combine is the **aggregation**, as Azure Personalizer had it:

``earliest`` (default)
    The first feedback that carries a reward, stamped inside the decision's reward window,
    decides the reward at once; later feedback is stored and changes nothing.
``max``
    The decision is settled when its window closes, with the largest reward of the feedback
    stamped inside the window.

Either way, a decision with no rewarded feedback in its window gets ``default_reward`` once,
when the window closes (after the settle grace). The store decides each decision's outcome
once, atomically (:mod:`serving.store`), so the settle sweep and a late feedback can never both
count.
"""

from __future__ import annotations

import enum
import math
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass, field, replace
from typing import Literal, NamedTuple, TypeVar

from arms.data.dataset import WHOLE_STARS

_T = TypeVar("_T")
Aggregation = Literal["earliest", "max"]
AGGREGATIONS: tuple[Aggregation, ...] = ("earliest", "max")


class EventType(enum.StrEnum):
    """What a user did with an item (see :data:`DEFAULT_RULES` for what each is worth).

    ``rating`` carries a value from 1 to 5 (stars) and ``dwell`` a value in seconds; the other
    types carry none.
    """

    view = "view"
    click = "click"
    like = "like"
    dislike = "dislike"
    add_to_cart = "add_to_cart"
    purchase = "purchase"
    rating = "rating"
    dwell = "dwell"


class FeedbackType(enum.StrEnum):
    """The types ``POST /feedback`` takes (the seeds' like / dislike API, and click)."""

    like = "like"
    dislike = "dislike"
    click = "click"


#: The scale of the ratings an event is worth for retraining: the arms' whole stars
#: (:data:`arms.data.dataset.WHOLE_STARS`, what their feedback takes). Every rule's rating
#: lies in it, and the evaluation gate's relevance threshold (``gate_relevance``) too.
RATING_SCALE = WHOLE_STARS


@dataclass(frozen=True)
class ValueRange:
    """The value an event type must carry: a number in ``[low, high]`` (``unit`` for messages).

    Attributes
    ----------
    low, high : float
    unit : str
    """

    low: float
    high: float
    unit: str

    def __post_init__(self) -> None:
        if not (math.isfinite(self.low) and math.isfinite(self.high) and self.low < self.high):
            raise ValueError(f"a value range needs finite low < high, got [{self.low!r}, "
                             f"{self.high!r}]")


@dataclass(frozen=True)
class Scale:
    """A worth that grows linearly with the event's value: ``at_low`` at ``low`` (and below),
    ``at_high`` at ``high`` (and above).

    Attributes
    ----------
    low, high : float
        The value range mapped (``low < high``).
    at_low, at_high : float
        The worth at each end.
    """

    low: float
    high: float
    at_low: float
    at_high: float

    def __post_init__(self) -> None:
        if not all(map(math.isfinite, (self.low, self.high, self.at_low, self.at_high))):
            raise ValueError(f"a scale needs finite numbers, got {self!r}")
        if not self.low < self.high:
            raise ValueError(f"a scale needs low < high, got low={self.low!r}, "
                             f"high={self.high!r}")
        if not math.isfinite(self.high - self.low):  # else every value is worth at_low (attack)
            raise ValueError(f"a scale's range high - low must be a finite number, got "
                             f"low={self.low!r}, high={self.high!r}")

    def __call__(self, value: float) -> float:
        """The worth of ``value`` (clipped to the range)."""
        share = (min(max(value, self.low), self.high) - self.low) / (self.high - self.low)
        return self.at_low + share * (self.at_high - self.at_low)

    def bounds(self) -> tuple[float, float]:
        """The smallest and largest worth."""
        return min(self.at_low, self.at_high), max(self.at_low, self.at_high)


#: A worth: a constant, a :class:`Scale` of the event's value, or None (none).
Worth = float | Scale | None


@dataclass(frozen=True)
class FeedbackRule:
    """What one event type is worth.

    Attributes
    ----------
    reward : float, Scale or None
        Reward for the policy in ``[0, 1]``; None: the type never decides an outcome.
    rating : float, Scale or None
        Implicit rating (1-5) kept for retraining (None: none).
    session_sign : {-1, 0, 1} or None
        Steers the user's next slates towards (+1) or away from (-1) the item's genres; None:
        the sign of ``rating - 3`` (a 4-star rating pulls, a 2-star one pushes).
    value : ValueRange or None
        The value an event of this type must carry (None: it carries none). A rule whose
        reward or rating is a :class:`Scale` must have one.
    excludes : bool, default True
        Whether the item is never recommended to the user again after such an event (a like,
        dislike, rating or purchase: yes; a view, dwell or add-to-cart: no, the user may still
        want it), live and after a retrain.
    precedence : float, default 0.0
        Rank of this type's rating among a (user, item)'s events for retraining: the pair keeps
        the rating of its event of highest precedence (ties: the later event).

    Raises
    ------
    TypeError
        If ``precedence`` is not a number (a bool is not one).
    ValueError
        If a value is out of its range, or ``precedence`` is not finite.
    """

    reward: Worth
    rating: Worth
    session_sign: int | None
    value: ValueRange | None = None
    excludes: bool = True
    precedence: float = 0.0

    def __post_init__(self) -> None:
        low, high = _worth_bounds(self.reward)
        if not 0.0 <= low <= high <= 1.0:
            raise ValueError(f"reward must be in [0, 1] or None, got {self.reward!r}")
        low, high = _worth_bounds(self.rating)
        if self.rating is not None and not RATING_SCALE[0] <= low <= high <= RATING_SCALE[1]:
            raise ValueError(f"rating must be in [{RATING_SCALE[0]:g}, {RATING_SCALE[1]:g}] or "
                             f"None, got {self.rating!r}")
        if self.session_sign not in (-1, 0, 1, None):
            raise ValueError(f"session_sign must be -1, 0, 1 or None, got "
                             f"{self.session_sign!r}")
        if self.value is None and (isinstance(self.reward, Scale)
                                   or isinstance(self.rating, Scale)):
            raise ValueError("a reward or rating that scales with the value needs a value "
                             "range (value=ValueRange(...))")
        if self.session_sign is None and self.rating is None:
            raise ValueError("session_sign=None takes the sign of the rating: give a rating "
                             "or a session_sign")
        if isinstance(self.precedence, bool) or not isinstance(self.precedence, int | float):
            raise TypeError(f"precedence must be a number, got {self.precedence!r} of type "
                            f"{type(self.precedence).__name__}")
        if not math.isfinite(self.precedence):
            raise ValueError(f"precedence must be a finite number, got {self.precedence!r}")

    def check_value(self, event_type: str, value: float | None) -> None:
        """Refuse a value this type does not take.

        Raises
        ------
        ValueError
            A value missing, present where none is taken, not finite, or out of range (the
            message names the type and the range).
        """
        if self.value is None:
            if value is not None:
                raise ValueError(f"{event_type} events carry no value, got {value!r}")
            return
        spec = self.value
        if value is None:
            raise ValueError(f"{event_type} events need a value in [{spec.low:g}, "
                             f"{spec.high:g}] {spec.unit}")
        if not (math.isfinite(value) and spec.low <= value <= spec.high):
            raise ValueError(f"{event_type} value must be in [{spec.low:g}, {spec.high:g}] "
                             f"{spec.unit}, got {value!r}")

    def reward_for(self, value: float | None = None) -> float | None:
        """The reward of one event with ``value`` (None: the type carries none)."""
        return _worth(self.reward, value)

    def rating_for(self, value: float | None = None) -> float | None:
        """The rating kept for retraining of one event with ``value`` (None: none)."""
        return _worth(self.rating, value)

    def sign_for(self, value: float | None = None) -> int:
        """The session sign of one event with ``value``."""
        if self.session_sign is not None:
            return self.session_sign
        rating = self.rating_for(value)
        assert rating is not None  # checked in __post_init__
        return (rating > 3.0) - (rating < 3.0)


def _worth_bounds(worth: Worth) -> tuple[float, float]:
    if worth is None:
        return 0.0, 0.0
    if isinstance(worth, Scale):
        return worth.bounds()
    return float(worth), float(worth)


def _worth(worth: Worth, value: float | None) -> float | None:
    if worth is None or not isinstance(worth, Scale):
        return worth
    if value is None:
        raise ValueError(f"this worth scales with the event's value (from {worth.low:g} to "
                         f"{worth.high:g}), and none was given")
    return worth(value)


def _named(event_type: str, compute: Callable[[], _T]) -> _T:
    """``compute()``, its ValueError naming ``event_type``."""
    try:
        return compute()
    except ValueError as exc:
        raise ValueError(f"{event_type}: {exc}") from None


#: Longest dwell a ``dwell`` event may report (a day, in seconds).
MAX_DWELL_S = 86_400.0

#: The default worth of each event type. Ratings are on MovieLens's 1-5 scale: a like is 5 and
#: a dislike 1, as the seeds had it; 3 is neutral (a view: seen, neither liked nor not).
#: A dwell carries no reward by default: under ``earliest`` a short dwell arriving first would
#: decide the decision's reward before the like that follows it.
#: Precedence (which event's rating a (user, item) keeps for retraining): a view 0, a dwell 1,
#: a click 2, an add-to-cart 3; a like, a dislike and a purchase 4 (a stated opinion or a
#: commitment: the latest of them wins, so a dislike after a purchase is kept); an explicit
#: rating 5, above every implicit event (MovieLens's own ratings rank as explicit ratings too).
DEFAULT_RULES: Mapping[str, FeedbackRule] = {
    EventType.view: FeedbackRule(reward=None, rating=3.0, session_sign=0,
                                  excludes=False, precedence=0.0),
    EventType.click: FeedbackRule(reward=1.0, rating=4.0, session_sign=1, precedence=2.0),
    EventType.like: FeedbackRule(reward=1.0, rating=5.0, session_sign=1, precedence=4.0),
    EventType.dislike: FeedbackRule(reward=0.0, rating=1.0, session_sign=-1, precedence=4.0),
    EventType.add_to_cart: FeedbackRule(reward=1.0, rating=4.5, session_sign=1,
                                         excludes=False, precedence=3.0),
    EventType.purchase: FeedbackRule(reward=1.0, rating=5.0, session_sign=1, precedence=4.0),
    EventType.rating: FeedbackRule(
        reward=Scale(*RATING_SCALE, 0.0, 1.0), rating=Scale(*RATING_SCALE, *RATING_SCALE),
        session_sign=None, value=ValueRange(*RATING_SCALE, "stars"), precedence=5.0),
    # Seconds on the item: 0 s is neutral (3), a minute or more as good as a like (5).
    EventType.dwell: FeedbackRule(
        reward=None, rating=Scale(0.0, 60.0, 3.0, 5.0), session_sign=0,
        value=ValueRange(0.0, MAX_DWELL_S, "seconds"), excludes=False, precedence=1.0),
}

def _worth_text(worth: Worth) -> str:
    if worth is None:
        return "none"
    if isinstance(worth, Scale):
        return f"{worth.at_low:g} at {worth.low:g} to {worth.at_high:g} at {worth.high:g}"
    return f"{worth:g}"


def ratings_text(event_types: Iterable[str],
                 rules: Mapping[str, FeedbackRule] = DEFAULT_RULES) -> str:
    """The rating each of ``event_types`` keeps for retraining under ``rules``, as help and
    OpenAPI texts show it (``"like 5, dislike 1, click 4"``): texts are built from the rule
    book, never quote it by hand, so they cannot disagree with it.
    """
    return ", ".join(f"{t} {_worth_text(rules[t].rating)}" for t in event_types)


#: The keys a settings file may set for an event type (``[rules.<type>]`` in TOML).
RULE_KEYS = ("reward", "rating", "session_sign", "excludes", "precedence")


def _worth_setting(event_type: str, key: str, value: object) -> Worth:
    """A worth from a settings value: a number, ``false`` (none) or a scale table."""
    if value is False or value is None:
        return None
    if isinstance(value, int | float) and not isinstance(value, bool):
        return float(value)
    if isinstance(value, Mapping) and set(value) == {"low", "high", "at_low", "at_high"}:
        return Scale(**{k: float(v) for k, v in value.items()})
    raise ValueError(f"rules.{event_type}.{key} must be a number, false (none) or a table "
                     f"{{low, high, at_low, at_high}}, got {value!r}")


def _overridden(event_type: str, rule: FeedbackRule,
                table: Mapping[str, object]) -> FeedbackRule:
    """``rule`` with a settings table's values (checked) in place of its own."""
    reward, rating = rule.reward, rule.rating
    sign, excludes, precedence = rule.session_sign, rule.excludes, rule.precedence
    if "reward" in table:
        reward = _worth_setting(event_type, "reward", table["reward"])
    if "rating" in table:
        rating = _worth_setting(event_type, "rating", table["rating"])
    if "session_sign" in table:
        value = table["session_sign"]
        if isinstance(value, bool) or not isinstance(value, int | float) or value not in (
                -1, 0, 1):
            raise ValueError(f"rules.{event_type}.session_sign must be -1, 0 or 1, got "
                             f"{value!r}")
        sign = int(value)
    if "excludes" in table:
        value = table["excludes"]
        if not isinstance(value, bool):
            raise ValueError(f"rules.{event_type}.excludes must be true or false, got "
                             f"{value!r}")
        excludes = value
    if "precedence" in table:
        value = table["precedence"]
        if isinstance(value, bool) or not isinstance(value, int | float) or not math.isfinite(
                value):
            raise ValueError(f"rules.{event_type}.precedence must be a finite number, got "
                             f"{value!r}")
        precedence = float(value)
    try:
        return FeedbackRule(reward, rating, sign, rule.value, excludes, precedence)
    except ValueError as exc:
        raise ValueError(f"rules.{event_type}: {exc}") from None


def overridden_rules(overrides: Mapping[str, Mapping[str, object]],
                     base: Mapping[str, FeedbackRule] = DEFAULT_RULES) -> dict[str, FeedbackRule]:
    """``base`` with the settings' ``overrides`` (type -> {key: value}) applied.

    Raises
    ------
    ValueError
        An unknown type or key, or a value the rule refuses (the message names it).
    """
    rules = dict(base)
    for event_type, table in overrides.items():
        if event_type not in rules:
            raise ValueError(f"rules: unknown event type {event_type!r}; known: "
                             f"{[str(t) for t in rules]}")
        unknown = sorted(set(table) - set(RULE_KEYS))
        if unknown:
            raise ValueError(f"rules.{event_type}: unknown keys {unknown}; allowed: "
                             f"{list(RULE_KEYS)}")
        rules[event_type] = _overridden(event_type, rules[event_type], table)
    return rules


def decided_note(reward: float, arm: str) -> str:
    """The note of the feedback that decided its decision's ``reward`` for ``arm`` (the
    service's, and the simulated log's, :func:`serving.offpolicy.simulate_service_log`).
    """
    return f"reward {reward:g} given to arm {arm}"


#: The note of a rewarded feedback whose decision was decided before it arrived.
ALREADY_DECIDED = ("the decision's reward was already decided by earlier feedback or by its "
                   "window closing: stored, no arm updated")


@dataclass(frozen=True)
class Feedback:
    """One stored feedback as the rules see it.

    Attributes
    ----------
    seq : int
        Its position in the log.
    created_at : float
        When it was recorded (Unix seconds).
    feedback_type : str
        Its event type (a key of the rule book).
    value : float or None
        The value it carries (a rating's stars, a dwell's seconds), if its type takes one.
    """

    seq: int
    created_at: float
    feedback_type: str
    value: float | None = None


class EventWorth(NamedTuple):
    """What one event is worth under a rule book (:meth:`RuleBook.worth`)."""

    reward: float | None
    rating: float | None
    session_sign: int
    excludes: bool
    stream_weight: float


#: The worth of an event of a type the rule book does not know.
UNKNOWN_WORTH = EventWorth(None, None, 0, True, 0.0)


@dataclass(frozen=True)
class KeptRating:
    """The rating a (user, item) keeps for retraining, and what decides it.

    Folding a pair's events with :meth:`then` (in any order: it is commutative and associative)
    gives the same value as the store's upsert (:mod:`serving.store`), ``rebuild-state``'s replay
    and a purge's fold snapshot.

    Attributes
    ----------
    rating : float
        The rating of the winning event.
    precedence : float
        Its type's precedence (:class:`FeedbackRule`).
    created_at : float
        Its timestamp (Unix seconds).
    seq : int
        Its log position (the last tie-break: two events of one pair stamped in one instant).
    excludes : bool
        Whether ANY event of the pair so far excludes the item from the user's slates (its
        type's ``excludes``): after a retrain the arms treat exactly these pairs as seen.
    """

    rating: float
    precedence: float
    created_at: float
    seq: int
    excludes: bool

    @property
    def rank(self) -> tuple[float, float, int]:
        """``(precedence, created_at, seq)``: the larger wins."""
        return (self.precedence, self.created_at, self.seq)

    def then(self, other: KeptRating) -> KeptRating:
        """The pair's kept rating once ``other`` is folded in too."""
        winner = other if other.rank > self.rank else self
        excludes = self.excludes or other.excludes
        return winner if winner.excludes == excludes else replace(winner, excludes=excludes)


def fold_kept(ratings: dict[tuple[int, int], KeptRating],
              events: Iterable[tuple[tuple[int, int], KeptRating]]
              ) -> dict[tuple[int, int], KeptRating]:
    """Fold ``(pair, kept rating)`` of events into ``ratings`` (changed in place, returned)."""
    for key, kept in events:
        old = ratings.get(key)
        ratings[key] = kept if old is None else old.then(kept)
    return ratings


#: The reward of a decision whose window closed with no feedback (``default_reward``).
DEFAULT_REWARD = 0.0


@dataclass(frozen=True)
class RuleBook:
    """The rules in force: feedback worth, aggregation and the default reward.

    Parameters
    ----------
    rules : mapping of str to FeedbackRule, default DEFAULT_RULES
    aggregation : {"earliest", "max"}, default "earliest"
    default_reward : float, default 0.0
        Reward of a decision whose window closed with no rewarded feedback.

    Raises
    ------
    ValueError
        Unknown aggregation, or a default reward outside ``[0, 1]``.
    """

    rules: Mapping[str, FeedbackRule] = field(default_factory=lambda: dict(DEFAULT_RULES))
    aggregation: Aggregation = "earliest"
    default_reward: float = DEFAULT_REWARD
    _worths: dict[tuple[str, float | None], EventWorth] = field(
        default_factory=dict, init=False, repr=False, compare=False)

    def __post_init__(self) -> None:
        if self.aggregation not in AGGREGATIONS:
            raise ValueError(f"aggregation must be one of {list(AGGREGATIONS)}, got "
                             f"{self.aggregation!r}")
        if not 0.0 <= self.default_reward <= 1.0:
            raise ValueError(f"default_reward must be in [0, 1], got {self.default_reward!r}")

    @property
    def types(self) -> list[str]:
        """Every known feedback type."""
        return list(self.rules)

    def rule(self, feedback_type: str) -> FeedbackRule:
        """The rule of ``feedback_type``.

        Raises
        ------
        ValueError
            Unknown type (the message lists the known ones).
        """
        try:
            return self.rules[feedback_type]
        except KeyError:
            raise ValueError(f"unknown feedback_type {feedback_type!r}; known types: "
                             f"{self.types}") from None

    def reward(self, feedback_type: str, value: float | None = None) -> float | None:
        """Reward for the policy of one event of ``feedback_type`` carrying ``value`` (None:
        it carries none).

        Raises
        ------
        ValueError
            An unknown type, or no value for a type whose reward scales with it (the message
            names the type).
        """
        rule = self.rule(feedback_type)
        return _named(feedback_type, lambda: rule.reward_for(value))

    def rating(self, feedback_type: str, value: float | None = None) -> float | None:
        """Rating kept for retraining of one event (None: none); raises as :meth:`reward`."""
        rule = self.rule(feedback_type)
        return _named(feedback_type, lambda: rule.rating_for(value))

    def session_sign(self, feedback_type: str, value: float | None = None) -> int:
        """+1, 0 or -1: how one event steers the user's next slates (0 for an unknown type);
        raises as :meth:`reward`.
        """
        rule = self.rules.get(feedback_type)
        return 0 if rule is None else _named(feedback_type, lambda: rule.sign_for(value))

    def stream_weight(self, feedback_type: str, value: float | None = None) -> float:
        """How much one event counts for the arms that learn from the stream (co-occurrence,
        live popularity): its rating less 1, so a dislike (1) counts for nothing, a view (3)
        2, a like or purchase (5) 4; 0 for a type without a rating or unknown.
        """
        if feedback_type not in self.rules:
            return 0.0
        rating = self.rating(feedback_type, value)
        return 0.0 if rating is None else max(rating - 1.0, 0.0)

    def worth(self, feedback_type: str, value: float | None = None) -> EventWorth:
        """Reward, rating, session sign, exclusion and stream weight of one event
        (:meth:`reward`, :meth:`rating`, :meth:`session_sign`, :meth:`excludes`,
        :meth:`stream_weight`) in one call, remembered per (type, value): a request reads them
        for every event of the user's history, a fold of the live arms for every new event
        (:data:`UNKNOWN_WORTH` for a type the book does not know); raises as :meth:`reward`.
        """
        key = (feedback_type, value)
        worth = self._worths.get(key)
        if worth is None:
            if feedback_type not in self.rules:
                return UNKNOWN_WORTH
            worth = EventWorth(self.reward(feedback_type, value),
                               self.rating(feedback_type, value),
                               self.session_sign(feedback_type, value),
                               self.excludes(feedback_type),
                               self.stream_weight(feedback_type, value))
            if len(self._worths) >= 4096:  # dwell seconds vary: keep the memo bounded
                self._worths.clear()
            self._worths[key] = worth
        return worth

    def precedence(self, feedback_type: str) -> float:
        """The precedence of ``feedback_type``'s rating for retraining (0 for an unknown type)."""
        rule = self.rules.get(feedback_type)
        return 0.0 if rule is None else float(rule.precedence)

    def kept_rating(self, feedback_type: str, value: float | None, created_at: float, seq: int,
                    stored_rating: float | None = None) -> KeptRating | None:
        """One event as a candidate for its (user, item)'s rating for retraining (None: its
        type gives no rating). A type the rule book no longer knows keeps ``stored_rating`` (the
        rating it was logged with), precedence 0, and excludes (as :meth:`excludes`).

        Raises
        ------
        ValueError
            As :meth:`rating`.
        """
        rating = (self.rating(feedback_type, value) if feedback_type in self.rules
                  else stored_rating)
        if rating is None:
            return None
        return KeptRating(float(rating), self.precedence(feedback_type), float(created_at),
                          int(seq), self.excludes(feedback_type))

    def excludes(self, feedback_type: str) -> bool:
        """Whether an event of this type removes its item from the user's next slates (an
        unknown type: yes, as every feedback did before types said otherwise).
        """
        rule = self.rules.get(feedback_type)
        return True if rule is None else rule.excludes

    @property
    def decides_at_once(self) -> bool:
        """Whether a rewarded feedback settles its decision when it arrives (``earliest``)."""
        return self.aggregation == "earliest"

    def rewarded(self, feedback: Iterable[Feedback], deadline: float,
                 settled_seq: int | None = None) -> list[tuple[Feedback, float]]:
        """The feedback of one decision that counts for its reward, with the reward each
        carries, in log order: of a type with a reward, stamped inside the reward window (by
        ``deadline``) and, once the window closed at log position ``settled_seq``, logged
        before it. The one window rule of :meth:`outcome` and of the team-draft clicks
        (:func:`serving.multileave.slate_clicks`).
        """
        return sorted(
            ((f, float(reward)) for f in feedback
             if f.created_at <= deadline and (settled_seq is None or f.seq < settled_seq)
             and (reward := self.reward(f.feedback_type, f.value)) is not None),
            key=lambda fr: fr[0].seq)

    def outcome(self, feedback: Iterable[Feedback], deadline: float,
                settled_seq: int | None = None) -> tuple[float, Feedback | None] | None:
        """The reward one decision gets from its feedback, and the feedback that decided it.

        Parameters
        ----------
        feedback : iterable of Feedback
            Every feedback attributed to the decision (any order).
        deadline : float
            End of the decision's reward window (feedback stamped later never counts).
        settled_seq : int or None
            Log position of the window's close, if it closed: feedback logged after it no
            longer counts (it arrived after the outcome was decided).

        Returns
        -------
        (reward, deciding feedback or None) or None
            None while the decision is still open (``max``: until the window closes;
            ``earliest``: until rewarded feedback arrives or the window closes).
        """
        rewarded = self.rewarded(feedback, deadline, settled_seq)
        if self.aggregation == "earliest":
            if rewarded:
                first, reward = rewarded[0]
                return float(reward), first
        elif settled_seq is not None and rewarded:
            best, reward = max(rewarded, key=lambda fr: (fr[1], -fr[0].seq))
            return float(reward), best
        if settled_seq is None:
            return None
        return self.default_reward, None


__all__ = [
    "AGGREGATIONS",
    "ALREADY_DECIDED",
    "DEFAULT_RULES",
    "MAX_DWELL_S",
    "RULE_KEYS",
    "UNKNOWN_WORTH",
    "Aggregation",
    "EventType",
    "EventWorth",
    "Feedback",
    "FeedbackRule",
    "FeedbackType",
    "KeptRating",
    "RuleBook",
    "Scale",
    "ValueRange",
    "decided_note",
    "fold_kept",
    "overridden_rules",
    "ratings_text",
]
