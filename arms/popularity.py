"""Popularity: the cold-start arm, ranking items by how often they were rated."""

from __future__ import annotations

import numpy as np

from arms.base import Recommender
from arms.data.dataset import Dataset


class PopularityRecommender(Recommender):
    """Recommend the most-rated items not yet seen; the same ranking for everyone.

    Feedback moves the global counts: a like adds one to the item's count, a dislike removes one,
    so the arm drifts towards what the audience of the service likes.
    """

    name = "popularity"

    def __init__(self) -> None:
        pass

    def _fit(self, train: Dataset) -> None:
        self.counts_ = self.popularity_.copy()

    def _score(self, users: np.ndarray) -> np.ndarray:
        return np.broadcast_to(self.counts_, (len(users), self.n_items_)).copy()

    def _partial_fit(self, users: np.ndarray, items: np.ndarray, ratings: np.ndarray) -> None:
        np.add.at(self.counts_, items, np.where(ratings >= 3, 1.0, -1.0))

    def _get_state(self) -> dict[str, np.ndarray]:
        return {"counts": self.counts_}

    def _set_state(self, state: dict[str, np.ndarray]) -> None:
        self.counts_ = state["counts"].astype(np.float64)
