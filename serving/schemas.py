"""Request and response models of the HTTP API (storage has its own tables in :mod:`store`)."""

from __future__ import annotations

from collections.abc import Mapping
from datetime import UTC, datetime
from typing import Any

from pydantic import BaseModel, ConfigDict, Field

from serving.rules import FeedbackType

#: Bounds shared by the routes and the models: ids fit a 63-bit integer, slates are 1..100 long.
MAX_ID = 2**62
MAX_K = 100
EVENT_ID_PATTERN = r"^[0-9a-f]{32}$"


class RecommendedItem(BaseModel):
    movie_id: int
    title: str
    year: int | None = None
    genres: list[str]
    score: float = Field(description="Arm score after the session adjustment (higher is better)")
    position: int = Field(description="1-based rank in the slate")


class RecommendationOut(BaseModel):
    event_id: str = Field(description="Id of the logged decision; send it back with feedback")
    user_id: int
    arm: str
    propensity: float = Field(description="Probability the policy had of choosing this arm")
    policy_version: int
    cold_start: bool = Field(description="True when the user is unknown to the arms and the "
                             "popularity ranking served them outside the policy")
    items: list[RecommendedItem]


class FeedbackIn(BaseModel):
    model_config = ConfigDict(extra="forbid")

    user_id: int = Field(ge=1, le=MAX_ID)
    movie_id: int = Field(ge=1, le=MAX_ID)
    feedback_type: FeedbackType
    event_id: str | None = Field(
        default=None, pattern=EVENT_ID_PATTERN, min_length=32, max_length=32,
        description="Decision that showed the movie; omitted: the latest such decision of this "
                    "user within the reward window",
    )


class FeedbackOut(BaseModel):
    id: int
    user_id: int
    movie_id: int
    feedback_type: FeedbackType
    event_id: str | None = Field(description="Decision the feedback was attributed to, if any")
    arm: str | None = Field(description="Arm rewarded by this feedback, if any")
    reward: float | None
    policy_updated: bool = Field(description="Whether the feedback changed the policy's posterior")
    rating: float | None = Field(description="Rating kept for retraining (the rule book's: "
                                 "like 5, dislike 1, click none)")
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
    arm: str
    alpha: float = Field(description="Beta posterior parameter: prior + successes")
    beta: float = Field(description="Beta posterior parameter: prior + failures")
    pulls: int = Field(description="Decisions that chose this arm")
    successes: int
    failures: int
    mean_reward: float | None = Field(description="successes / (successes + failures)")
    posterior_mean: float
    credible_interval: tuple[float, float] = Field(description="Central 95% posterior interval")
    selection_probability: float


class PolicyOut(BaseModel):
    policy: str
    policy_version: int
    reward_window_s: float
    arms: list[ArmPolicyOut]


class HealthOut(BaseModel):
    status: str
    store: str
    policy_version: int
    arms: list[str]
    pid: int


class RetrainOut(BaseModel):
    policy_version: int
    n_feedback_ratings: int
    seconds: float
