"""Random: a baseline arm that ranks unseen items uniformly at random."""

from __future__ import annotations

import numpy as np

from arms.base import Recommender
from arms.data.dataset import Dataset


class RandomRecommender(Recommender):
    """Uniformly random slates of unseen items.

    Parameters
    ----------
    random_state : int, default 0
        Seed of the generator the scores are drawn from; the same seed gives the same slates.
    """

    name = "random"

    def __init__(self, *, random_state: int = 0) -> None:
        self.random_state = random_state

    def _fit(self, train: Dataset) -> None:
        self.rng_ = np.random.default_rng(self.random_state)

    def _score(self, users: np.ndarray) -> np.ndarray:
        return self.rng_.random((len(users), self.n_items_))

    def _partial_fit(self, users: np.ndarray, items: np.ndarray, ratings: np.ndarray) -> None:
        """Random ignores feedback beyond excluding the rated items (done by the base class)."""

    def _get_state(self) -> dict[str, np.ndarray]:
        return {}

    def _set_state(self, state: dict[str, np.ndarray]) -> None:
        self.rng_ = np.random.default_rng(self.random_state)
