"""The context a contextual policy sees: what the service knows about the user at request time.

Feature set ``user-v1`` (53 values on MovieLens 100K, names in :attr:`UserFeatures.names`):

==================  ======================================================================
``bias``            1 for every request
``gender=<g>``      one-hot of the catalogue's genders (all zero when unknown)
``age=<bucket>``    one-hot of the MovieLens age buckets (<18, 18-24, ..., 56+)
``occupation=<o>``  one-hot of the catalogue's occupations
``genre=<g>``       share of each genre among the movies the user rated in training
``activity``        ``log1p(ratings in training) / log1p(most ratings of any user)``
``session_likes``   ``log1p(positive feedback in the session window)``
``session_dislikes`` ``log1p(negative feedback in the session window)``
==================  ======================================================================

A user the catalogue does not know has only the bias and session features. Every decision logs
the vector with ``FEATURE_VERSION``; a change of the feature set must change the version, so that
the log never mixes vectors of different meanings under one name.
"""

from __future__ import annotations

import math

import numpy as np
import pandas as pd

from arms.data.dataset import Dataset

FEATURE_VERSION = "user-v1"
#: Decimals every feature value is rounded to (what is logged is exactly what the policy saw).
DECIMALS = 4
#: MovieLens 1M's age groups (lower bounds), used for every catalogue with an ``age`` column.
AGE_BUCKETS = (0, 18, 25, 35, 45, 50, 56)


def _age_labels() -> list[str]:
    bounds = [*AGE_BUCKETS[1:], None]
    return [f"age={low}-{high - 1}" if high is not None else f"age={low}+"
            for low, high in zip(AGE_BUCKETS, bounds, strict=True)]


class UserFeatures:
    """Context vectors of ``catalog``'s users, precomputed once; session counts added per request.

    Parameters
    ----------
    catalog : Dataset
        Users (demographics) and training ratings (genre shares, activity).
    """

    version = FEATURE_VERSION

    def __init__(self, catalog: Dataset) -> None:
        users = catalog.users
        genders = sorted(map(str, users["gender"].dropna().unique())) if "gender" in users else []
        occupations = (sorted(map(str, users["occupation"].dropna().unique()))
                       if "occupation" in users else [])
        self.names: list[str] = [
            "bias", *(f"gender={g}" for g in genders), *_age_labels(),
            *(f"occupation={o}" for o in occupations),
            *(f"genre={g}" for g in catalog.genre_names), "activity",
            "session_likes", "session_dislikes",
        ]
        n_users = len(users)
        static = np.zeros((n_users, len(self.names) - 2), dtype=np.float64)
        static[:, 0] = 1.0
        col = 1
        if genders:
            codes = pd.Categorical(users["gender"].astype("string"), categories=genders).codes
            rows = np.flatnonzero(codes >= 0)
            static[rows, col + codes[rows]] = 1.0
        col += len(genders)
        if "age" in users:
            ages = pd.to_numeric(users["age"], errors="coerce").to_numpy(dtype=np.float64)
            known = np.isfinite(ages)
            bucket = np.searchsorted(AGE_BUCKETS, ages[known], side="right") - 1
            static[np.flatnonzero(known), col + bucket] = 1.0
        col += len(AGE_BUCKETS)
        if occupations:
            codes = pd.Categorical(users["occupation"].astype("string"),
                                   categories=occupations).codes
            rows = np.flatnonzero(codes >= 0)
            static[rows, col + codes[rows]] = 1.0
        col += len(occupations)
        ratings = catalog.ratings
        flags = catalog.items.loc[:, list(catalog.genre_names)].to_numpy(dtype=np.float64)
        user_pos = ratings["user_index"].to_numpy()
        item_pos = ratings["item_index"].to_numpy()
        genre_sums = np.zeros((n_users, flags.shape[1]))
        np.add.at(genre_sums, user_pos, flags[item_pos])
        totals = genre_sums.sum(axis=1, keepdims=True)
        static[:, col:col + flags.shape[1]] = np.divide(genre_sums, totals,
                                                        out=np.zeros_like(genre_sums),
                                                        where=totals > 0)
        col += flags.shape[1]
        counts = np.bincount(user_pos, minlength=n_users).astype(np.float64)
        static[:, col] = np.log1p(counts) / max(np.log1p(counts.max(initial=0.0)), 1.0)
        # Whole vectors with an empty session: a request copies its row and sets the last two
        # values (2 us, against 10 us for concatenating the parts).
        # Rounded to 4 decimals: every decision logs its vector, and 53 values of 17 digits
        # made a decision row ~1 KB (~250 bytes rounded); the policy sees the rounded values too.
        self._full = np.round(np.concatenate((static, np.zeros((n_users, 2))), axis=1),
                              DECIMALS)
        self._row = {int(u): i for i, u in enumerate(users.index)}
        self._unknown = np.zeros(len(self.names))
        self._unknown[0] = 1.0

    @property
    def dimension(self) -> int:
        """Length ``d`` of every vector."""
        return len(self.names)

    def mean_vector(self) -> np.ndarray:
        """The average context of the catalogue's users with an empty session, shape ``(d,)``
        (where ``GET /policy`` evaluates a contextual policy).
        """
        return self._full.mean(axis=0)

    def vector(self, user_id: int, session_likes: int, session_dislikes: int) -> np.ndarray:
        """The context of one request, shape ``(d,)``.

        Parameters
        ----------
        user_id : int
            Raw user id (unknown users get the bias and session features only).
        session_likes, session_dislikes : int
            Positive and negative feedback of the user within the session window.
        """
        row = self._row.get(user_id)
        x = self._unknown.copy() if row is None else self._full[row].copy()
        x[-2] = round(math.log1p(session_likes), DECIMALS)
        x[-1] = round(math.log1p(session_dislikes), DECIMALS)
        return x


__all__ = ["AGE_BUCKETS", "FEATURE_VERSION", "UserFeatures"]
