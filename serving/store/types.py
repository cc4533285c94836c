"""The values the store takes and returns, the same for every backend."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

POSITIVE_TYPES = ("like", "click")
RATING_OF_TYPE = {"like": 5.0, "dislike": 1.0}


@dataclass(frozen=True)
class ArmCounts:
    """Posterior counts of one arm as stored."""

    successes: int = 0
    failures: int = 0
    pulls: int = 0


@dataclass(frozen=True)
class PolicyMeta:
    version: int
    arms_dir: str


@dataclass
class FeedbackWrite:
    """One feedback insert as the writer executes it (values already validated)."""

    values: dict[str, Any]
    rating: float | None

    @property
    def key(self) -> tuple[int, str, int, str]:
        v = self.values
        return (v["user_id"], v["event_key"], v["movie_id"], v["feedback_type"])


@dataclass
class FeedbackResult:
    row: dict[str, Any]
    created: bool


@dataclass
class BatchResult:
    feedback: list[FeedbackResult] = field(default_factory=list)
    counted: int = 0


@dataclass
class PeriodicJob:
    """``fn`` runs in the writer thread every ``interval_s`` (and when ``request()``-ed)."""

    name: str
    interval_s: float
    fn: Callable[[], Any]
    last: float = 0.0
    wanted: bool = False


__all__ = ["POSITIVE_TYPES", "RATING_OF_TYPE", "ArmCounts", "BatchResult", "FeedbackResult",
           "FeedbackWrite", "PeriodicJob", "PolicyMeta"]
