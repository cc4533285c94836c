"""The interface every arm implements, as a template method.

Public methods handle what every recommender shares — validation, id mapping, cold start, excluding
seen items, top-k selection, feedback bookkeeping and persistence — so each arm writes only how it
learns (``_fit``, ``_partial_fit``) and how it scores (``_score``), and, for ``save``/``load``,
which arrays make up its learned state (``_get_state``/``_set_state``).
"""

from __future__ import annotations

import inspect
import json
from abc import ABC, abstractmethod
from os import PathLike
from pathlib import Path
from typing import Any, ClassVar, Self

import numpy as np
import pandas as pd
import scipy.sparse as sp

from arms.data.dataset import Dataset
from arms.errors import NotFittedError, unknown_id_message

LIKE_RATING = 5.0
DISLIKE_RATING = 1.0
_REGISTRY: dict[str, type[Recommender]] = {}


class Recommender(ABC):
    """Base class of the arms.

    Learned attributes (set by :meth:`fit`)
    ---------------------------------------
    n_users_, n_items_ : int
        Size of the catalogue the model was fit on.
    user_ids_, item_ids_ : ndarray of int64, shapes ``(n_users_,)`` and ``(n_items_,)``
        Raw ids in index order, for mapping feedback.
    seen_ : scipy.sparse.csr_matrix, shape ``(n_users_, n_items_)``
        1 where the user rated the item in training or gave feedback on it since.
    popularity_ : ndarray of float64, shape ``(n_items_,)``
        Number of training ratings of each item: the cold-start score.
    known_users_ : ndarray of bool, shape ``(n_users_,)``
        Whether a user had any training rating. Unknown users get popularity from every arm.
    """

    name: ClassVar[str] = "recommender"
    #: Whether the arm predicts ratings on the 1-5 scale (and so has RMSE/MAE).
    predicts_ratings: ClassVar[bool] = False

    def __init_subclass__(cls, **kwargs: Any) -> None:
        super().__init_subclass__(**kwargs)
        if not inspect.isabstract(cls):
            _REGISTRY[cls.__name__] = cls

    # ------------------------------------------------------------------ parameters
    @classmethod
    def _param_names(cls) -> list[str]:
        signature = inspect.signature(cls.__init__)
        return [
            p.name
            for p in signature.parameters.values()
            if p.name != "self" and p.kind not in (p.VAR_POSITIONAL, p.VAR_KEYWORD)
        ]

    def get_params(self) -> dict[str, Any]:
        """Hyper-parameters as given to ``__init__``."""
        return {name: getattr(self, name) for name in self._param_names()}

    def __repr__(self) -> str:
        params = ", ".join(f"{k}={v!r}" for k, v in self.get_params().items())
        return f"{type(self).__name__}({params})"

    # ------------------------------------------------------------------ learning
    def fit(self, train: Dataset) -> Self:
        """Learn from the training ratings; returns ``self``.

        Raises
        ------
        TypeError
            If ``train`` is not a :class:`~arms.data.Dataset`.
        ValueError
            If ``train`` holds no rating or a hyper-parameter is out of range.
        """
        if not isinstance(train, Dataset):
            raise TypeError(f"train must be an arms.data.Dataset, got {type(train).__name__}")
        if train.n_ratings == 0:
            raise ValueError("train holds no rating; cannot fit a recommender on nothing")
        self._validate_params()
        self.n_users_ = train.n_users
        self.n_items_ = train.n_items
        self.user_ids_ = train.user_ids.copy()
        self.item_ids_ = train.item_ids.copy()
        seen = train.interaction_matrix(binary=True)
        self.seen_ = seen.copy()
        self.popularity_ = np.asarray(seen.sum(axis=0), dtype=np.float64).ravel()
        self.known_users_ = np.diff(seen.indptr) > 0
        self._fit(train)
        return self

    def partial_fit(self, feedback: pd.DataFrame) -> Self:
        """Take explicit feedback without a full refit; returns ``self``.

        Parameters
        ----------
        feedback : pandas.DataFrame
            Columns ``user_id`` and ``item_id`` (raw ids) and ``rating`` (a like is 5, a dislike
            is 1). Rated items join the user's seen set, so they are not recommended again, and
            the arm updates that user's scores in the direction of the rating.

        Raises
        ------
        ValueError
            If a column is missing, an id is unknown or a rating is outside 1-5; nothing changes.
        """
        self._check_fitted()
        missing = {"user_id", "item_id", "rating"} - set(feedback.columns)
        if missing:
            raise ValueError(f"feedback lacks columns {sorted(missing)}")
        users = self._map_ids("user_id", feedback["user_id"].to_numpy(), self.user_ids_)
        items = self._map_ids("item_id", feedback["item_id"].to_numpy(), self.item_ids_)
        ratings = feedback["rating"].to_numpy(dtype=np.float64)
        if not np.all(np.isfinite(ratings)) or ((ratings < 1) | (ratings > 5)).any():
            raise ValueError("feedback rating must be finite and within 1-5 (like 5, dislike 1)")
        if len(users) == 0:
            return self
        self._partial_fit(users, items, ratings)
        marks = sp.csr_matrix(
            (np.ones(len(users), dtype=np.float32), (users, items)), shape=self.seen_.shape
        )
        self.seen_ = (self.seen_ + marks).sign().tocsr()
        self.known_users_[users] = True
        return self

    # ------------------------------------------------------------------ recommending
    def recommend(
        self, user_indices: Any, k: int = 10, *, exclude_seen: bool = True
    ) -> tuple[np.ndarray, np.ndarray]:
        """Top-``k`` items for a batch of users in one vectorised pass.

        Parameters
        ----------
        user_indices : array-like of int, shape ``(n_users,)``
            Contiguous user indices (``Dataset.user_index`` maps raw ids).
        k : int, default 10
            Slate size, ``1 <= k <= n_items_``.
        exclude_seen : bool, default True
            Leave out items the user rated in training or gave feedback on.

        Returns
        -------
        items : ndarray of int64, shape ``(n_users, k)``
            Item indices, best first. Where fewer than ``k`` items are unseen, the tail is ``-1``.
        scores : ndarray of float64, shape ``(n_users, k)``
            Their scores (``-inf`` for the ``-1`` padding). A user without training ratings is
            scored by popularity, whatever the arm.
        """
        self._check_fitted()
        users = np.atleast_1d(np.asarray(user_indices))
        if users.ndim != 1 or users.dtype.kind not in "iu":
            raise TypeError(f"user_indices must be a 1-d integer array, got {users.dtype}")
        if users.size and (users.min() < 0 or users.max() >= self.n_users_):
            raise ValueError(f"user_indices must be within [0, {self.n_users_}), got {users}")
        valid_k = isinstance(k, int | np.integer) and not isinstance(k, bool)
        if not valid_k or not 1 <= k <= self.n_items_:
            raise ValueError(f"k must be an integer within [1, {self.n_items_}], got {k!r}")
        scores = self.score(users)
        if exclude_seen:
            rows = self.seen_[users]
            scores[np.repeat(np.arange(len(users)), np.diff(rows.indptr)), rows.indices] = -np.inf
        return top_k(scores, int(k))

    def score(self, user_indices: np.ndarray) -> np.ndarray:
        """Scores of every item for each user, shape ``(n_users, n_items_)``, float64.

        Users with no training rating get popularity scores.
        """
        users = np.asarray(user_indices, dtype=np.int64)
        scores = np.empty((len(users), self.n_items_), dtype=np.float64)
        known = self.known_users_[users]
        if known.any():
            scores[known] = self._score(users[known])
        if not known.all():
            scores[~known] = self.popularity_
        return scores

    # ------------------------------------------------------------------ persistence
    def save(self, path: str | PathLike[str]) -> Path:
        """Write hyper-parameters and learned state to one ``.npz`` file (no pickle)."""
        self._check_fitted()
        path = Path(path)
        arrays = {f"state__{k}": np.asarray(v) for k, v in self._get_state().items()}
        meta = {"class": type(self).__name__, "params": self.get_params()}
        np.savez_compressed(
            path,
            meta=np.frombuffer(json.dumps(meta).encode(), dtype=np.uint8),
            user_ids=self.user_ids_,
            item_ids=self.item_ids_,
            popularity=self.popularity_,
            known_users=self.known_users_,
            seen_indptr=self.seen_.indptr,
            seen_indices=self.seen_.indices,
            **arrays,  # type: ignore[arg-type]  # numpy's stub types **kwds by its keyword flags
        )
        return path if path.suffix == ".npz" else path.with_name(path.name + ".npz")

    @classmethod
    def load(cls, path: str | PathLike[str]) -> Recommender:
        """Read a recommender written by :meth:`save`; returns the saved subclass."""
        with np.load(Path(path), allow_pickle=False) as data:
            meta = json.loads(bytes(data["meta"]).decode())
            klass = _REGISTRY.get(meta["class"])
            if klass is None or not issubclass(klass, cls):
                raise ValueError(f"{path} holds a {meta['class']}, not a {cls.__name__}")
            model = klass(**meta["params"])
            model.user_ids_ = data["user_ids"]
            model.item_ids_ = data["item_ids"]
            model.n_users_, model.n_items_ = len(model.user_ids_), len(model.item_ids_)
            model.popularity_ = data["popularity"]
            model.known_users_ = data["known_users"].copy()
            indices = data["seen_indices"]
            model.seen_ = sp.csr_matrix(
                (np.ones(len(indices), dtype=np.float32), indices, data["seen_indptr"]),
                shape=(model.n_users_, model.n_items_),
            )
            state = {k.removeprefix("state__"): data[k] for k in data.files
                     if k.startswith("state__")}
        model._set_state(state)
        return model

    # ------------------------------------------------------------------ for subclasses
    def _validate_params(self) -> None:  # noqa: B027 - optional hook
        """Raise ``ValueError`` naming a hyper-parameter that is out of range."""

    @abstractmethod
    def _fit(self, train: Dataset) -> None:
        """Learn from ``train``; the base class has set the catalogue attributes."""

    @abstractmethod
    def _score(self, users: np.ndarray) -> np.ndarray:
        """Scores for known users, shape ``(len(users), n_items_)``."""

    @abstractmethod
    def _partial_fit(self, users: np.ndarray, items: np.ndarray, ratings: np.ndarray) -> None:
        """Move the scores of ``users`` towards their feedback (indices, validated)."""

    @abstractmethod
    def _get_state(self) -> dict[str, np.ndarray]:
        """The learned arrays :meth:`save` writes."""

    @abstractmethod
    def _set_state(self, state: dict[str, np.ndarray]) -> None:
        """Restore what :meth:`_get_state` returned."""

    # ------------------------------------------------------------------ helpers
    def _check_fitted(self) -> None:
        if not hasattr(self, "seen_"):
            raise NotFittedError(f"{type(self).__name__} is not fitted; call fit(train) first")

    @staticmethod
    def _map_ids(kind: str, raw: np.ndarray, known: np.ndarray) -> np.ndarray:
        raw = np.asarray(raw, dtype=np.int64)
        order = np.argsort(known)
        pos = np.searchsorted(known, raw, sorter=order)
        pos = np.clip(pos, 0, len(known) - 1)
        mapped = order[pos]
        bad = known[mapped] != raw
        if bad.any():
            raise ValueError(unknown_id_message(kind, int(raw[bad][0]), known[:200]))
        return mapped.astype(np.int64)


def top_k(scores: np.ndarray, k: int) -> tuple[np.ndarray, np.ndarray]:
    """Best ``k`` columns of each row of ``scores`` (shape ``(n, m)``), best first.

    Returns ``(items, values)`` of shape ``(n, k)``; entries whose score is ``-inf`` or NaN are
    ``-1``. Ties are broken by the lower item index, also where the k-th best score is shared
    by more items than fit (``np.argpartition`` alone would pick among those arbitrarily).
    """
    n_rows, n_cols = scores.shape
    k = min(k, n_cols)
    nan = np.isnan(scores)
    if nan.any():  # ranked as -inf, so they are never picked before a rankable item
        scores = np.where(nan, -np.inf, scores)
    if k < n_cols:
        part = np.argpartition(-scores, k - 1, axis=1)[:, :k]
        part_scores = np.take_along_axis(scores, part, axis=1)
        kth = part_scores.min(axis=1, keepdims=True)
        ties = scores == kth
        # Rows whose k-th score is shared by more items than fit: argpartition picked among
        # them arbitrarily, so there the lowest-indexed tied items fill the remaining places.
        split = np.flatnonzero(ties.sum(axis=1) > (part_scores == kth).sum(axis=1))
        if split.size:
            tied = ties[split]
            above = scores[split] > kth[split]
            wanted = k - above.sum(axis=1, keepdims=True)
            chosen = above | (tied & (np.cumsum(tied, axis=1) <= wanted))
            part[split] = np.nonzero(chosen)[1].reshape(split.size, k)
    else:
        part = np.broadcast_to(np.arange(n_cols), (n_rows, n_cols)).copy()
    part_scores = np.take_along_axis(scores, part, axis=1)
    order = np.lexsort((part, -part_scores), axis=1)
    items = np.take_along_axis(part, order, axis=1).astype(np.int64)
    values = np.take_along_axis(part_scores, order, axis=1)
    items[~np.isfinite(values) & (values < 0)] = -1
    return items, values
