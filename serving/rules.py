"""The rule book: what each kind of feedback is worth, and how one decision gets one reward.

Nothing else in the code knows these rules. The service applies them when feedback arrives, the
store's replay and ``rebuild-state`` apply them to the log, ``ope`` reads the rewards they
decided, and retraining reads the ratings they give.

A feedback type has

- a **reward** for the policy in ``[0, 1]`` (``None``: the type is stored but carries no reward,
  so it never decides a decision's outcome);
- a **rating** kept for retraining (``None``: no rating);
- a **session sign**: +1 when it pulls the user's next slates towards the item's genres, -1 when
  it pushes them away, 0 when it does neither.

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
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from typing import Literal

Aggregation = Literal["earliest", "max"]
AGGREGATIONS: tuple[Aggregation, ...] = ("earliest", "max")


class FeedbackType(enum.StrEnum):
    """What a user said about a shown movie (see :data:`DEFAULT_RULES` for what each is worth)."""

    like = "like"
    dislike = "dislike"
    click = "click"


@dataclass(frozen=True)
class FeedbackRule:
    """What one feedback type is worth.

    Attributes
    ----------
    reward : float or None
        Reward for the policy in ``[0, 1]``; None: the type never decides an outcome.
    rating : float or None
        Implicit rating kept for retraining (None: none).
    session_sign : {-1, 0, 1}
        Steers the user's next slates towards (+1) or away from (-1) the item's genres.
    """

    reward: float | None
    rating: float | None
    session_sign: int

    def __post_init__(self) -> None:
        if self.reward is not None and not 0.0 <= self.reward <= 1.0:
            raise ValueError(f"reward must be in [0, 1] or None, got {self.reward!r}")
        if self.session_sign not in (-1, 0, 1):
            raise ValueError(f"session_sign must be -1, 0 or 1, got {self.session_sign!r}")


#: The default worth of each feedback type (like 5 and dislike 1 as MovieLens ratings).
DEFAULT_RULES: Mapping[str, FeedbackRule] = {
    FeedbackType.like: FeedbackRule(reward=1.0, rating=5.0, session_sign=1),
    FeedbackType.dislike: FeedbackRule(reward=0.0, rating=1.0, session_sign=-1),
    FeedbackType.click: FeedbackRule(reward=1.0, rating=None, session_sign=1),
}


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
        ``like``, ``dislike`` or ``click`` (a key of the rule book).
    """

    seq: int
    created_at: float
    feedback_type: str


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
    default_reward: float = 0.0

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

    def reward(self, feedback_type: str) -> float | None:
        """Reward for the policy of one feedback of ``feedback_type`` (None: carries none)."""
        return self.rule(feedback_type).reward

    def rating(self, feedback_type: str) -> float | None:
        """Rating kept for retraining (None: none)."""
        return self.rule(feedback_type).rating

    @property
    def decides_at_once(self) -> bool:
        """Whether a rewarded feedback settles its decision when it arrives (``earliest``)."""
        return self.aggregation == "earliest"

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
        rewarded = sorted(
            (f for f in feedback
             if f.created_at <= deadline and self.reward(f.feedback_type) is not None
             and (settled_seq is None or f.seq < settled_seq)),
            key=lambda f: f.seq)
        if self.aggregation == "earliest":
            if rewarded:
                return float(self.reward(rewarded[0].feedback_type) or 0.0), rewarded[0]
        elif settled_seq is not None and rewarded:
            best = max(rewarded, key=lambda f: (self.reward(f.feedback_type) or 0.0, -f.seq))
            return float(self.reward(best.feedback_type) or 0.0), best
        if settled_seq is None:
            return None
        return self.default_reward, None


__all__ = [
    "AGGREGATIONS",
    "DEFAULT_RULES",
    "Aggregation",
    "Feedback",
    "FeedbackRule",
    "FeedbackType",
    "RuleBook",
]
