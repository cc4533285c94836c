"""The interface every arm implements, as a template method.

Public methods handle what every recommender shares — validation, id mapping, cold start, excluding
seen items, top-k selection, feedback bookkeeping and persistence — so each arm writes only how it
learns (``_fit``, ``_partial_fit``) and how it scores (``_score``), and, for ``save``/``load``,
which arrays make up its learned state (``_get_state``/``_set_state``).

Real time: :meth:`Recommender.score_history` scores every item for one user from that user's
events since training, without changing the model (hook ``_score_history``);
:meth:`Recommender.observe` folds events of all users into arms that learn from the stream (hook
``_observe``); :meth:`Recommender.grow` adds catalogue items to arms that can take them at once
(hook ``_grow``).
"""

from __future__ import annotations

import inspect
import json
import zipfile
from abc import ABC, abstractmethod
from collections.abc import Iterable
from os import PathLike
from pathlib import Path
from typing import Any, ClassVar, Self

import numpy as np
import pandas as pd
import scipy.sparse as sp

from arms.data.dataset import WHOLE_STARS, Dataset
from arms.errors import NotFittedError, unknown_id_message

LIKE_RATING = 5.0
DISLIKE_RATING = 1.0
_REGISTRY: dict[str, type[Recommender]] = {}


def check_k(k: object, n_items: int) -> int:
    """``k``, a slate's length, as an int from 1 to the catalogue's ``n_items``: the one rule
    of every slate asked of an arm, checked too by the commands that score slates once their
    data is loaded, before anything is fitted (``replay`` and ``evaluate-arms`` with
    ``k=10**6`` failed after fitting every arm, or printed a table headed HR@1000000).

    Raises
    ------
    ValueError
        ``k`` is no integer within ``[1, n_items]``.
    """
    valid_k = isinstance(k, int | np.integer) and not isinstance(k, bool)
    if not valid_k or not 1 <= k <= n_items:  # type: ignore[operator]  # an int here
        raise ValueError(f"k must be an integer within [1, {n_items}], got {k!r} (the "
                         f"catalogue holds {n_items} items)")
    return int(k)  # type: ignore[call-overload, no-any-return]  # an int here


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
    #: Whether :meth:`observe` folds live events of all users into the arm's state.
    learns_from_stream: ClassVar[bool] = False
    #: Whether :meth:`grow` can add catalogue items without a refit.
    can_grow: ClassVar[bool] = False
    #: Whether :meth:`score` can differ between users (False: every row is the same, so a
    #: service ranks the items once and leaves out each user's seen items).
    personalised: ClassVar[bool] = True

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

    @classmethod
    def check_param_names(cls, names: Iterable[str], *, arm: str | None = None) -> None:
        """Refuse hyper-parameter ``names`` the class does not take: the one message of an
        unknown hyper-parameter for an arm built from names (the registry's ``make_arm``, a
        saved arm's or a versions table's parameters), with those it takes.

        Parameters
        ----------
        names : iterable of str
        arm : str, optional
            The arm's registry name, said instead of the class's.

        Raises
        ------
        TypeError
            ``the svd arm has no hyper-parameter 'x'; allowed: [...]``.
        """
        taken = set(cls._param_names())
        unknown = sorted(set(names) - taken)
        if unknown:
            owner = f"the {arm} arm" if arm is not None else cls.__name__
            # The seed is offered apart (make_arm's random_state), not as a hyper-parameter.
            raise TypeError(f"{owner} has no hyper-parameter "
                            f"{', '.join(repr(p) for p in unknown)}; allowed: "
                            f"{sorted(taken - {'random_state'})}")

    @classmethod
    def params_saved_without(cls, params: dict[str, Any]) -> dict[str, Any]:
        """The hyper-parameters added since ``params`` were saved (by :meth:`save` of an older
        recbandits) whose value for that older arm is not ``__init__``'s default: how that
        arm was made. :meth:`load` fills them in, so that comparing its parameters with the
        ones asked for tells it was made otherwise (a service then fits it again). None here.
        """
        return {}

    @classmethod
    def as_saved(cls, params: dict[str, Any]) -> Self:
        """An unfitted arm with the hyper-parameters ``params`` recorded (by :meth:`save`, or
        in a service's versions table), those added since filled in as that arm was made
        (:meth:`params_saved_without`), the others left at their defaults.

        Raises
        ------
        TypeError
            A parameter this class does not take (recorded by another recbandits):
            :meth:`check_param_names`.
        """
        cls.check_param_names(params)
        return cls(**{**cls.params_saved_without(params), **params})

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

    def anchor_seed(self, at: int) -> Self:
        """Make what the arm learned from the training ratings as of time ``at`` (seconds),
        for an arm whose time-decayed seed waits to be re-timed (``retime_seed``): training
        then ends at ``at`` if it ended earlier, and events fold as events of their own time,
        late or not. The service calls it when it fits an arm, with its store's first fit's
        time, so that the seed's age is the store's whatever the log holds (found by attack:
        a backfilled event 89 days old, arriving first, re-timed the seed to end then, 2 **
        -12.7 of it left the next day). Arms without such a seed: nothing.

        Returns
        -------
        self
        """
        return self

    def partial_fit(self, feedback: pd.DataFrame) -> Self:
        """Take explicit feedback without a full refit; returns ``self``.

        Parameters
        ----------
        feedback : pandas.DataFrame
            Columns ``user_id`` and ``item_id`` (raw ids) and ``rating`` (whole stars, 1-5; the
            service's rule book, ``serving.rules``, says what each event is worth). Rated items
            join the user's seen set, so they are not recommended again, and the arm updates
            that user's scores in the direction of the rating.

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
        low, high = WHOLE_STARS
        if not np.all(np.isfinite(ratings)) or ((ratings < low) | (ratings > high)).any():
            raise ValueError(f"feedback rating must be finite and within {low:g}-{high:g} "
                             "(stars)")
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
        users = index_array("user_indices", user_indices, self.n_users_)
        self._check_k(k)
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
            scores[~known] = self._cold_scores()
        return scores

    # ------------------------------------------------------------------ real time
    def score_history(
        self, user_index: int | None, item_indices: Any, ratings: Any, *, validate: bool = True
    ) -> np.ndarray:
        """Scores of every item for one user from their events since training, without a refit.

        The fitted model is not modified; the cost is one user's work (no loop over items). For
        the arms that take feedback the scores equal those :meth:`score` gives after
        :meth:`partial_fit` of the same events on a copy (EASE, sequential, SVD).

        Parameters
        ----------
        user_index : int or None
            The user's training row, or None for a user unknown to training (then only the
            events count). A row without training ratings counts as None.
        item_indices : array-like of int, shape ``(n_events,)``
            The arm's item indices of the user's events since training, oldest first.
        ratings : array-like of float, shape ``(n_events,)``
            Their implicit ratings, 1-5 (as the service's rule book, ``serving.rules``, gives them).
        validate : bool, default True
            Check the arguments (the raises below). False is for a caller that built them
            itself (``serving.armset``: an int user row or None, int64 item indices of this
            arm, float64 ratings of the rule book): the same scores without the checks' ~10
            numpy calls, paid on every ranking-cache miss.

        Returns
        -------
        ndarray of float64, shape ``(n_items_,)``
            With no event: :meth:`score`'s row for a known user, the cold-start scores
            (popularity; live popularity for the live arms) for an unknown one.

        Raises
        ------
        TypeError
            If ``user_index`` is not an int or None, or the items are not integers.
        ValueError
            If an index is out of range, the lengths differ or a rating is outside 1-5.
        """
        if validate:
            self._check_fitted()
            user = self._check_user_index(user_index)
            items, values = self._check_history(item_indices, ratings)
        else:
            user = self._known_user(user_index)
            items, values = item_indices, ratings
        if len(items) == 0:
            if user is None:
                return np.array(self._cold_scores(), dtype=np.float64)
            row: np.ndarray = self.score(np.array([user]))[0]
            return row
        return np.asarray(self._score_history(user, items, values), dtype=np.float64)

    def recommend_history(
        self, user_index: int | None, item_indices: Any, ratings: Any, k: int = 10
    ) -> tuple[np.ndarray, np.ndarray]:
        """Top-``k`` of :meth:`score_history`, leaving out the user's seen and event items.

        Parameters
        ----------
        user_index, item_indices, ratings
            As :meth:`score_history`.
        k : int, default 10
            Slate size, ``1 <= k <= n_items_``.

        Returns
        -------
        items, scores : ndarray of shape ``(k,)``
            As one row of :meth:`recommend` (``-1`` and ``-inf`` pad a short slate).

        Raises
        ------
        TypeError, ValueError
            As :meth:`score_history`; ``ValueError`` if ``k`` is not within ``[1, n_items_]``.
        """
        scores = self.score_history(user_index, item_indices, ratings)
        self._check_k(k)
        if user_index is not None:
            row = self.seen_[int(user_index)]
            scores[row.indices] = -np.inf
        scores[np.asarray(item_indices, dtype=np.int64)] = -np.inf
        items, values = top_k(scores[None, :], int(k))
        return items[0], values[0]

    def observe(
        self, user_ids: Any, item_indices: Any, weights: Any, timestamps: Any
    ) -> Self:
        """Fold live events of any users into an arm that learns from the stream.

        Parameters
        ----------
        user_ids : array-like of int, shape ``(n_events,)``
            Raw user ids (a user unknown to training is welcome).
        item_indices : array-like of int, shape ``(n_events,)``
            The arm's item indices.
        weights : array-like of float, shape ``(n_events,)``
            Weight of each event, ``>= 0`` (the caller maps event types to weights, e.g. the
            implicit rating); an event of weight 0 is ignored.
        timestamps : array-like of int, shape ``(n_events,)``
            Seconds since the epoch, in the order of the log.

        Returns
        -------
        self

        Raises
        ------
        NotImplementedError
            If the arm does not learn from the stream (``learns_from_stream`` is false).
        TypeError, ValueError
            If an array has the wrong type, length or values; nothing changes.
        """
        self._check_fitted()
        if not self.learns_from_stream:
            raise NotImplementedError(
                f"{type(self).__name__} does not learn from the stream; its events reach it "
                "through score_history, partial_fit or a refit"
            )
        users = _int_array("user_ids", user_ids)
        items = self._check_items("item_indices", item_indices)
        values = _float_array("weights", weights, len(items))
        times = _int_array("timestamps", timestamps)
        if len(users) != len(items) or len(times) != len(items):
            raise ValueError(
                "user_ids, item_indices, weights and timestamps must have one length, got "
                f"{len(users)}, {len(items)}, {len(values)} and {len(times)}"
            )
        if (values < 0).any():
            raise ValueError(f"weights must be >= 0, got {float(values[values < 0][0])!r}")
        keep = values > 0
        if keep.any():
            self._observe(users[keep], items[keep], values[keep], times[keep])
        return self

    def grow(self, item_ids: Any) -> Self:
        """Add new catalogue items at once (indices ``n_items_``, ``n_items_ + 1``, ...).

        Parameters
        ----------
        item_ids : array-like of int, shape ``(n_new,)``
            Raw ids of the new items, distinct and not yet in ``item_ids_``.

        Returns
        -------
        self

        Raises
        ------
        NotImplementedError
            If the arm needs a refit to include new items (``can_grow`` is false).
        TypeError, ValueError
            If an id is not an integer, repeated or already in the catalogue; nothing changes.
        """
        self._check_fitted()
        if not self.can_grow:
            raise NotImplementedError(
                f"{type(self).__name__} includes new items only at its next refit"
            )
        new_ids = _int_array("item_ids", item_ids)
        clash = np.intersect1d(new_ids, self.item_ids_)
        if clash.size:
            raise ValueError(f"item_ids must be new, got {int(clash[0])}, already in the catalogue")
        values, counts = np.unique(new_ids, return_counts=True)
        if (counts > 1).any():
            raise ValueError(f"item_ids must be distinct, got {int(values[counts > 1][0])} twice")
        n_new = len(new_ids)
        if n_new == 0:
            return self
        self.item_ids_ = np.concatenate([self.item_ids_, new_ids])
        self.n_items_ += n_new
        self.popularity_ = np.concatenate([self.popularity_, np.zeros(n_new)])
        self.seen_ = sp.csr_matrix(
            (self.seen_.data, self.seen_.indices, self.seen_.indptr),
            shape=(self.n_users_, self.n_items_),
        )
        self._grow(n_new)
        return self

    # ------------------------------------------------------------------ persistence
    def save(self, path: str | PathLike[str]) -> Path:
        """Write hyper-parameters and learned state to one ``.npz`` file (no pickle).

        Returns the path written (``.npz`` is appended to a name without it).

        Raises
        ------
        IsADirectoryError
            If ``path`` is a folder (numpy would write ``<folder>.npz`` beside it).
        """
        self._check_fitted()
        path = Path(path)
        if path.is_dir():
            raise IsADirectoryError(f"{path} is a folder; save writes one .npz file: give its "
                                    f"path, e.g. {path / 'model.npz'}")
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
        """Read a recommender written by :meth:`save`; returns the saved subclass.

        Raises
        ------
        ValueError
            If ``path`` is not a file :meth:`save` wrote (numpy's own messages, such as
            "allow_pickle=False", named neither the file nor what was expected).
        """
        try:
            archive = np.load(Path(path), allow_pickle=False)
        except (ValueError, zipfile.BadZipFile) as exc:  # not an array file, or a pickle
            raise ValueError(f"{path} is not a recommender written by save(): {exc}") from None
        if not isinstance(archive, np.lib.npyio.NpzFile):
            raise ValueError(f"{path} is not a recommender written by save(): one array, not "
                             "an .npz archive")
        with archive as data:
            try:
                meta = json.loads(bytes(data["meta"]).decode())
            except (KeyError, UnicodeDecodeError, json.JSONDecodeError) as exc:
                raise ValueError(f"{path} is not a recommender written by save(): no readable "
                                 f"'meta' ({type(exc).__name__})") from None
            klass = _REGISTRY.get(meta["class"])
            if klass is None or not issubclass(klass, cls):
                raise ValueError(f"{path} holds a {meta['class']}, not a {cls.__name__}")
            model = klass.as_saved(meta["params"])
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

    def _cold_scores(self) -> np.ndarray:
        """Scores of a user without training ratings or events, shape ``(n_items_,)``."""
        return self.popularity_

    @property
    def cold_start(self) -> str:
        """What :meth:`_cold_scores` gives a user without training ratings, in words (said by
        ``replay --cold-users include``); overridden beside it, so the two agree (found by a
        check: the replay said "popularity" of the co-occurrence arm too).
        """
        return "the training popularity"

    def _score_history(
        self, user: int | None, items: np.ndarray, ratings: np.ndarray
    ) -> np.ndarray:
        """Scores from a validated, non-empty history; shape ``(n_items_,)``.

        The default is for arms that take events only as exclusions (random, popularity): the
        user's :meth:`score` row, or the cold-start scores for an unknown user.
        """
        if user is None:
            return np.array(self._cold_scores(), dtype=np.float64)
        row: np.ndarray = self.score(np.array([user]))[0]
        return row

    def _observe(  # pragma: no cover - reached only where learns_from_stream is true
        self, users: np.ndarray, items: np.ndarray, weights: np.ndarray, times: np.ndarray
    ) -> None:
        """Fold validated events (weights > 0) into the live state."""
        raise NotImplementedError

    def _grow(self, n_new: int) -> None:  # pragma: no cover - reached only where can_grow
        """Extend the learned state by ``n_new`` items (the base class has grown its own)."""
        raise NotImplementedError

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

    def _check_k(self, k: object) -> None:
        check_k(k, self.n_items_)

    def _check_user_index(self, user_index: object) -> int | None:
        """``user_index`` as an int, or None for a user without training ratings."""
        if user_index is None:
            return None
        if isinstance(user_index, bool) or not isinstance(user_index, int | np.integer):
            raise TypeError(
                f"user_index must be an int or None, got {user_index!r} "
                f"({type(user_index).__name__})"
            )
        if not 0 <= user_index < self.n_users_:
            raise ValueError(f"user_index must be within [0, {self.n_users_}), got {user_index}")
        return self._known_user(user_index)

    def _known_user(self, user_index: int | np.integer | None) -> int | None:
        """``user_index`` (in range) as an int, or None for a user without training ratings."""
        return None if user_index is None or not self.known_users_[user_index] else int(
            user_index)

    def _check_items(self, name: str, value: Any) -> np.ndarray:
        items = _int_array(name, value)
        if items.size and (items.min() < 0 or items.max() >= self.n_items_):
            bad = items[(items < 0) | (items >= self.n_items_)][0]
            raise ValueError(f"{name} must be within [0, {self.n_items_}), got {bad}")
        return items

    def _check_history(self, item_indices: Any, ratings: Any) -> tuple[np.ndarray, np.ndarray]:
        items = self._check_items("item_indices", item_indices)
        values = _float_array("ratings", ratings, len(items))
        if len(values) != len(items):
            raise ValueError(
                f"item_indices and ratings must have one length, got {len(items)} and "
                f"{len(values)}"
            )
        low, high = WHOLE_STARS
        if ((values < low) | (values > high)).any():
            bad = values[(values < low) | (values > high)][0]
            raise ValueError(f"ratings must be within {low:g}-{high:g} (stars), got "
                             f"{float(bad)!r}")
        return items, values

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


def _int_array(name: str, value: Any) -> np.ndarray:
    """``value`` as a 1-d int64 array (an empty one of any dtype too: ``[]`` is float64);
    ``TypeError`` naming ``name`` otherwise.
    """
    array = np.atleast_1d(np.asarray(value))
    if array.ndim != 1 or (array.size and array.dtype.kind not in "iu"):
        raise TypeError(f"{name} must be a 1-d integer array, got dtype {array.dtype} "
                        f"and shape {array.shape}")
    return array.astype(np.int64)


def index_array(name: str, value: Any, size: int) -> np.ndarray:
    """``value`` as a 1-d int64 array of indices within ``[0, size)``.

    Raises
    ------
    TypeError
        If it is not a 1-d integer array.
    ValueError
        If an index is out of range (the message names the first one).
    """
    array = _int_array(name, value)
    if array.size and (array.min() < 0 or array.max() >= size):
        bad = array[(array < 0) | (array >= size)][0]
        raise ValueError(f"{name} must be within [0, {size}), got {bad}")
    return array


def _float_array(name: str, value: Any, size: int) -> np.ndarray:
    """``value`` as a 1-d float64 array of finite numbers (a scalar is repeated ``size`` times)."""
    array = np.asarray(value)
    if array.dtype.kind not in "iuf":
        raise TypeError(f"{name} must be real numbers, got dtype {array.dtype}")
    if array.ndim == 0:
        array = np.full(size, float(array))
    if array.ndim != 1:
        raise TypeError(f"{name} must be 1-d, got shape {array.shape}")
    array = array.astype(np.float64)
    if not np.isfinite(array).all():
        raise ValueError(f"{name} must be finite, got {float(array[~np.isfinite(array)][0])!r}")
    return array


def weighted_row_sum(matrix: sp.csr_matrix, rows: np.ndarray, weights: np.ndarray
                     ) -> np.ndarray:
    """``weights @ matrix[rows]`` as a dense float64 vector, without building sparse matrices.

    For one user's scores from a handful of rows of an item-item matrix, scipy.sparse's
    slicing and product cost ~0.1 ms each in validation and index work; this gathers the rows'
    entries and sums them with one ``bincount`` (summed in the same order as the sparse
    product: row by row, each in column order).

    Parameters
    ----------
    matrix : scipy.sparse.csr_matrix, shape ``(n, m)``
    rows : ndarray of int, shape ``(r,)``
        Row indices (ascending for the sparse product's summation order).
    weights : ndarray of float, shape ``(r,)``

    Returns
    -------
    ndarray of float64, shape ``(m,)``
    """
    starts = matrix.indptr[rows]
    lengths = matrix.indptr[rows + 1] - starts
    total = int(lengths.sum())
    # Position of every gathered entry: each row's start, then 0, 1, ... within the row.
    offsets = np.repeat(starts - np.cumsum(lengths) + lengths, lengths)
    entries = offsets + np.arange(total)
    values = np.repeat(np.asarray(weights, dtype=np.float64), lengths)
    values *= matrix.data[entries]
    # (bincount of nothing is int64, even with float weights)
    return np.bincount(matrix.indices[entries], weights=values,
                       minlength=matrix.shape[1]).astype(np.float64, copy=False)


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
