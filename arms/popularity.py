"""Popularity: the cold-start arm, ranking items by how often they were rated, or live counts."""

from __future__ import annotations

from typing import Any, ClassVar

import numpy as np

from arms.base import Recommender
from arms.cooccurrence import (
    anchor_retiming,
    check_half_life,
    decay_runs,
    decayed_to,
    fixed_point,
    fold_retiming,
    retimed,
    shift_frames,
    time_order,
)
from arms.data.dataset import Dataset


class PopularityRecommender(Recommender):
    """Recommend the most popular items not yet seen; the same ranking for everyone.

    Parameters
    ----------
    half_life : float or None, default None
        None: the counts are the number of training ratings of each item, and
        :meth:`observe` adds each event's weight to them, undecayed. A number of seconds (> 0):
        *live popularity*, the weights of the training ratings (weight: the rating) and of
        the observed events, each decayed exponentially with this half-life from its time, in
        the exact fixed point of :mod:`arms.cooccurrence` (the same events in the same order give
        bit-identical counts however they are batched); every user, known or not, is then scored
        by the live counts decayed to the latest event.
    retime_seed : bool, default True
        Live popularity only: the first observed event later than the training ratings
        re-times the training counts so that training ends then, as the co-occurrence arm's
        seed (see "The seed's clock" in :mod:`arms.cooccurrence`); False keeps the ratings'
        own times, so training data older than a few half-lives counts for nothing from the
        first event on.

    Feedback moves the counts: a like adds one to the item's count, a dislike removes one (at the
    latest event's time for live popularity), so the arm drifts towards what the audience of the
    service likes.

    Attributes
    ----------
    counts_ : ndarray of shape ``(n_items_,)``
        float64 counts; for live popularity int64 fixed point of frame ``frame_`` (``clock_``
        is the latest timestamp observed; ``seed_pending_``: the training counts wait for the
        first observed event to be re-timed).
    """

    name = "popularity"
    learns_from_stream: ClassVar[bool] = True
    can_grow: ClassVar[bool] = True
    personalised: ClassVar[bool] = False

    def __init__(self, *, half_life: float | None = None, retime_seed: bool = True) -> None:
        self.half_life = half_life
        self.retime_seed = retime_seed

    @classmethod
    def params_saved_without(cls, params: dict[str, Any]) -> dict[str, Any]:
        """Live popularity saved before ``retime_seed`` existed kept the training counts' own
        times; without a half-life the parameter changes nothing, so none is filled in.
        """
        if "retime_seed" in params or params.get("half_life") is None:
            return {}
        return {"retime_seed": False}

    def _validate_params(self) -> None:
        if self.half_life is not None:
            check_half_life(self.half_life)
        if not isinstance(self.retime_seed, bool):
            raise TypeError(f"retime_seed must be a bool, got {self.retime_seed!r}")

    def _fit(self, train: Dataset) -> None:
        if self.half_life is None:
            self.counts_ = self.popularity_.copy()
            return
        self.counts_ = np.zeros(self.n_items_, dtype=np.int64)
        self.frame_, self.clock_, self.seed_pending_ = 0, 0, False
        ratings = train.ratings.iloc[time_order(train)]
        self._fold(
            ratings["user_id"].to_numpy(np.int64), ratings["item_index"].to_numpy(np.int64),
            ratings["rating"].to_numpy(np.float64), ratings["timestamp"].to_numpy(np.int64),
        )  # fmt: skip
        self.seed_pending_ = bool(self.retime_seed) and len(ratings) > 0

    def _observe(
        self, users: np.ndarray, items: np.ndarray, weights: np.ndarray, times: np.ndarray
    ) -> None:
        if self.half_life is None:
            np.add.at(self.counts_, items, weights)
            return
        if (times < 0).any():
            raise ValueError(f"timestamps must be >= 0 (seconds since 1970), got {times.min()}")
        fold_retiming(self, users, items, weights, times)

    def _fold(
        self, users: np.ndarray, items: np.ndarray, weights: np.ndarray, times: np.ndarray
    ) -> None:
        """Add events (in log order) to the live counts, each run of one frame at a time."""
        half_life = float(self.half_life)  # type: ignore[arg-type]  # live popularity only
        counts = self.counts_.copy()
        for start, stop, frame in decay_runs(times, half_life, self.frame_):
            counts = shift_frames(counts, frame - self.frame_)
            self.frame_ = frame
            np.add.at(counts, items[start:stop],
                      fixed_point(weights[start:stop], times[start:stop], half_life, frame))
        self.counts_ = counts
        self.clock_ = max(self.clock_, int(times.max()))

    def anchor_seed(self, at: int) -> PopularityRecommender:
        """See :meth:`Recommender.anchor_seed` (:func:`~arms.cooccurrence.anchor_retiming`)."""
        self._check_fitted()
        if self.half_life is not None:
            anchor_retiming(self, at)
        return self

    def _retime_seed(self, delta: int) -> None:
        """Move the live counts ``delta`` (> 0) seconds later: the training counts then end
        at the first event past them (``retime_seed``). Nothing changes if it raises.
        """
        counts, frame = retimed(self.counts_, self.frame_, self.clock_, delta,
                                float(self.half_life))  # type: ignore[arg-type]  # live only
        self.counts_, self.frame_, self.seed_pending_ = counts, frame, False
        self.clock_ += delta

    @property
    def cold_start(self) -> str:
        """What :meth:`_cold_scores` gives a user without training ratings, in words."""
        return ("the training popularity" if self.half_life is None
                else "its time-decayed popularity")

    def _cold_scores(self) -> np.ndarray:
        if self.half_life is None:
            return self.counts_  # the training counts plus every event observed since
        return decayed_to(self.counts_, self.frame_, float(self.clock_), float(self.half_life))

    def _score(self, users: np.ndarray) -> np.ndarray:
        counts = self.counts_ if self.half_life is None else self._cold_scores()
        return np.broadcast_to(counts, (len(users), self.n_items_)).astype(np.float64)

    def _partial_fit(self, users: np.ndarray, items: np.ndarray, ratings: np.ndarray) -> None:
        signs = np.where(ratings >= 3, 1.0, -1.0)
        if self.half_life is None:
            np.add.at(self.counts_, items, signs)
            return
        at = np.full(len(items), self.clock_, dtype=np.int64)
        np.add.at(self.counts_, items, fixed_point(signs, at, float(self.half_life), self.frame_))

    def _grow(self, n_new: int) -> None:
        self.counts_ = np.concatenate([self.counts_, np.zeros(n_new, dtype=self.counts_.dtype)])

    def _get_state(self) -> dict[str, np.ndarray]:
        if self.half_life is None:
            return {"counts": self.counts_}
        return {"counts": self.counts_, "frame": np.asarray(self.frame_, dtype=np.int64),
                "clock": np.asarray(self.clock_, dtype=np.int64),
                # Only while pending, as the co-occurrence arm's (the same bits as before).
                **({"seed_pending": np.asarray(True)} if self.seed_pending_ else {})}

    def _set_state(self, state: dict[str, np.ndarray]) -> None:
        if self.half_life is None:
            self.counts_ = state["counts"].astype(np.float64)
            return
        self.counts_ = state["counts"].astype(np.int64)
        self.frame_, self.clock_ = int(state["frame"]), int(state["clock"])
        # Saved before the training counts were re-timed (retime_seed; load says
        # retime_seed=False): never re-timed.
        self.seed_pending_ = bool(state.get("seed_pending", False))
