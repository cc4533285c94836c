"""HeldOutRatings: users who respond as they really rated the items, in a held-out future."""

from __future__ import annotations

from typing import ClassVar, Self

import numpy as np

from arms.data import Dataset
from envs.base import UserModel, check_thresholds
from envs.errors import UserModelError


def _pair_keys(users: np.ndarray, items: np.ndarray, n_items: int) -> np.ndarray:
    return users.astype(np.int64) * n_items + items.astype(np.int64)


class HeldOutRatings(UserModel):
    """Replayed users: a shown item is liked if the user rated it well in the held-out period.

    Built from a temporal split: the arms learn from ``train`` (the past); a user shown item ``i``
    likes it when their rating of ``i`` in ``test`` (the future) is ``>= like_threshold``,
    dislikes it when the rating is ``<= dislike_threshold``, and does nothing otherwise (a middling
    rating, or no rating). Responses are deterministic, so the expected reward of every arm is the
    reward it would get. Unrated items count as no response, which under-states every arm alike:
    the replay method of offline evaluation for slates.

    Parameters
    ----------
    like_threshold : float, default 4.0
    dislike_threshold : float, default 2.0
        Must be below ``like_threshold``; both within the data's rating scale
        (:func:`envs.base.check_thresholds`).
    min_held_out : int, default 1
        A user may arrive only with at least this many held-out ratings.
    min_users : int, default 1
        Fewest eligible users the model accepts.

    Learned attributes (set by :meth:`fit`)
    ---------------------------------------
    n_users, n_items : int
    held_out_counts_ : ndarray of int64, shape ``(n_users,)``
        Held-out ratings per user (the arrival weights for ``arrival="activity"``).
    """

    name: ClassVar[str] = "held-out-ratings"

    def __init__(
        self,
        *,
        like_threshold: float = 4.0,
        dislike_threshold: float = 2.0,
        min_held_out: int = 1,
        min_users: int = 1,
    ) -> None:
        self.like_threshold = like_threshold
        self.dislike_threshold = dislike_threshold
        self.min_held_out = min_held_out
        self.min_users = min_users

    def fit(self, train: Dataset, test: Dataset) -> Self:
        """Index the held-out ratings of ``test``; ``train`` is the history never shown again.

        Raises
        ------
        TypeError
            If ``train`` or ``test`` is not a Dataset.
        ValueError
            If a threshold or minimum is out of range, or the datasets have different catalogues.
        UserModelError
            If fewer than ``min_users`` users have ``min_held_out`` held-out ratings.
        """
        for label, data in (("train", train), ("test", test)):
            if not isinstance(data, Dataset):
                raise TypeError(f"{label} must be an arms.data.Dataset, got {type(data).__name__}")
        check_thresholds(self.like_threshold, self.dislike_threshold, train.rating_scale)
        for label in ("min_held_out", "min_users"):
            value = getattr(self, label)
            if isinstance(value, bool) or not isinstance(value, int | np.integer) or value < 1:
                raise ValueError(f"{label} must be an integer >= 1, got {value!r}")
        if train.n_users != test.n_users or train.n_items != test.n_items:
            raise ValueError(
                "train and test must share one catalogue (a split of one Dataset), got "
                f"{train.n_users}x{train.n_items} and {test.n_users}x{test.n_items}"
            )
        self.n_users, self.n_items = test.n_users, test.n_items
        held = test.interaction_matrix().tocoo()
        rows, cols = held.row.astype(np.int64), held.col.astype(np.int64)
        keys = _pair_keys(rows, cols, self.n_items)
        order = np.argsort(keys)
        self.keys_ = keys[order]
        self.ratings_ = held.data[order].astype(np.float64)
        seen = train.interaction_matrix(binary=True).tocoo()
        self.train_keys_ = np.sort(_pair_keys(seen.row, seen.col, self.n_items))
        self.held_out_counts_ = np.bincount(rows, minlength=self.n_users).astype(np.int64)
        self.eligible_ = self.held_out_counts_ >= self.min_held_out
        n_eligible = int(self.eligible_.sum())
        if n_eligible < self.min_users:
            raise UserModelError(
                f"HeldOutRatings needs at least {self.min_users} user(s) with >= "
                f"{self.min_held_out} held-out rating(s), but the test split of "
                f"{test.n_ratings} rating(s) has {n_eligible}; lower min_held_out, or hold out "
                "more of each user's ratings: a larger held_out_fraction, or an n_last below the "
                "users' numbers of ratings (a user with n_last ratings or fewer keeps them all "
                "in training)"
            )
        ordered = test.ratings.sort_values("timestamp", kind="stable")["user_index"].to_numpy()
        eligible_visits = ordered[self.eligible_[ordered]].astype(np.int64)
        # Consecutive ratings by one user are one visit (a session), not many arrivals.
        starts = np.r_[True, eligible_visits[1:] != eligible_visits[:-1]] if len(eligible_visits) \
            else np.zeros(0, dtype=bool)
        self.replay_ = eligible_visits[starts]
        return self

    def rating_of(self, users: np.ndarray, items: np.ndarray) -> np.ndarray:
        """Held-out rating of each (user, item) pair, 0 where unrated or ``item == -1``."""
        keys = _pair_keys(users, np.maximum(items, 0), self.n_items)
        pos = np.minimum(np.searchsorted(self.keys_, keys), max(len(self.keys_) - 1, 0))
        if len(self.keys_) == 0:
            return np.zeros(keys.shape)
        found = (self.keys_[pos] == keys) & (items >= 0)
        return np.where(found, self.ratings_[pos], 0.0)

    def in_training(self, users: np.ndarray, items: np.ndarray) -> np.ndarray:
        """Whether each (user, item) pair is in the training history (False for ``-1``)."""
        keys = _pair_keys(users, np.maximum(items, 0), self.n_items)
        if len(self.train_keys_) == 0:
            return np.zeros(keys.shape, dtype=bool)
        pos = np.minimum(np.searchsorted(self.train_keys_, keys), len(self.train_keys_) - 1)
        return (self.train_keys_[pos] == keys) & (items >= 0)

    def prepare(self, users: np.ndarray, slates: np.ndarray) -> dict[str, np.ndarray]:
        """Like if a held-out rating is >= ``like_threshold``, dislike if <= ``dislike_threshold``.

        Unrated items (rating 0) get neither. Shapes of ``users`` and ``slates`` and of the
        returned arrays as in :meth:`envs.base.UserModel.prepare`.
        """
        rating = self.rating_of(np.broadcast_to(users[:, None, None], slates.shape), slates)
        like = (rating >= self.like_threshold).astype(np.float64)
        dislike = ((rating > 0) & (rating <= self.dislike_threshold)).astype(np.float64)
        return {"like": like, "dislike": dislike}

    def eligible_users(self) -> np.ndarray:
        """Mask of users with at least ``min_held_out`` held-out ratings, shape ``(n_users,)``."""
        return self.eligible_.copy()

    def activity(self) -> np.ndarray:
        """Held-out ratings per user as arrival weights, shape ``(n_users,)``."""
        return self.held_out_counts_.astype(np.float64)

    def replay_sequence(self) -> np.ndarray:
        """Eligible users in their held-out ratings' timestamp order, one visit per run (a copy).

        Consecutive ratings by one user are one visit (a session), not many arrivals.
        """
        return self.replay_.copy()
