"""The arms the service routes to: resolve by name, fit, save, load, and look up items.

An :class:`ArmSet` is immutable once built; a retrain builds a new one and the service swaps the
reference, so a request that started on the old set finishes on it.
"""

from __future__ import annotations

import fcntl
import logging
import os
import shutil
import tempfile
import threading
import time
from collections import OrderedDict
from collections.abc import Mapping, Sequence
from contextlib import contextmanager
from dataclasses import dataclass, field
from functools import cached_property
from pathlib import Path

import numpy as np
import pandas as pd

from arms import registry
from arms.base import Recommender, top_k
from arms.data.dataset import Dataset

logger = logging.getLogger(__name__)


def make_arm(name: str, *, seed: int | None) -> Recommender:
    """An unfitted arm by its :mod:`arms.registry` name (``random_state=seed`` if it takes one).

    Raises
    ------
    arms.UnknownArmError
        A ``ValueError``, if the name is not registered; the message lists the valid names.
    """
    return registry.make_arm(name, random_state=seed)


def fit_arms(names: Sequence[str], train: Dataset, *, seed: int | None) -> dict[str, Recommender]:
    """Fit one arm per name on ``train`` (progress logged: see :func:`_fit_each`)."""
    return _fit_each({name: make_arm(name, seed=seed) for name in names}, train)


def refit_like(models: Mapping[str, Recommender], train: Dataset) -> dict[str, Recommender]:
    """Fit fresh copies (same class and hyper-parameters) of ``models`` on ``train``."""
    return _fit_each({name: type(m)(**m.get_params()) for name, m in models.items()}, train)


def _fit_each(unfitted: Mapping[str, Recommender], train: Dataset) -> dict[str, Recommender]:
    """Fit every arm on ``train``, logging (INFO) each as it starts and the time it took:
    ``serve`` and ``retrain`` show these lines (a first start on MovieLens takes ~20 s).
    """
    fitted = {}
    for i, (name, model) in enumerate(unfitted.items(), 1):
        logger.info("fitting arm %s (%d of %d) on %s", name, i, len(unfitted), train)
        start = time.perf_counter()
        fitted[name] = model.fit(train)
        logger.info("fitted arm %s in %.1f s", name, time.perf_counter() - start)
    return fitted


def save_arms(models: Mapping[str, Recommender], target: Path) -> Path:
    """Write every arm to ``target/<name>.npz`` atomically (a folder renamed into place)."""
    target.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=f".{target.name}-", dir=target.parent))
    try:
        for name, model in models.items():
            model.save(tmp / f"{name}.npz")
        if target.exists():
            shutil.rmtree(target)
        os.replace(tmp, target)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    return target


def load_arms(folder: Path, names: Sequence[str]) -> dict[str, Recommender]:
    """Read ``folder/<name>.npz`` for every name.

    Raises
    ------
    FileNotFoundError
        If an arm file is missing (the message names it).
    """
    missing = [n for n in names if not (folder / f"{n}.npz").is_file()]
    if missing:
        raise FileNotFoundError(f"no saved arm {missing} in {folder}")
    return {name: Recommender.load(folder / f"{name}.npz") for name in names}


@contextmanager
def file_lock(path: Path):
    """An exclusive lock between processes (several workers starting at once fit only once)."""
    path.parent.mkdir(parents=True, exist_ok=True)
    with path.open("a") as handle:
        fcntl.flock(handle, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(handle, fcntl.LOCK_UN)


def training_set(base: Dataset, feedback: pd.DataFrame) -> Dataset:
    """``base`` plus feedback ratings (like 5, dislike 1), newest rating of a pair winning.

    Users that exist only in the feedback join the user catalogue (unknown demographics), so a
    retrain turns them from cold-start users into known ones.
    """
    if feedback.empty:
        return base
    new_users = np.setdiff1d(feedback["user_id"].unique(), base.user_ids)
    users = base.users
    if len(new_users):
        users = users.reindex(users.index.union(pd.Index(new_users)))
    ratings = pd.concat([base.ratings.loc[:, list(feedback.columns)], feedback],
                        ignore_index=True)
    return Dataset.from_frames(ratings, base.items, users, base.genre_names,
                               name=f"{base.name}+feedback")


#: How many of a user's best items a :class:`Ranking` keeps in order: ``k`` (at most 100) plus
#: the user's excluded movies must fit in it, or the slate is ranked from all the scores.
RANKING_DEPTH = 256


@dataclass(frozen=True)
class Ranking:
    """One user's scores under one arm, with the best items already sorted.

    A request then only walks the head of ``order`` past the user's excluded movies instead of
    partitioning every item's score.

    Attributes
    ----------
    scores : ndarray, shape ``(n_items,)``
        The arm's scores; ``-inf`` (or NaN) marks items never recommended to this user.
    order : ndarray of int64, shape ``(m,)``, ``m <= RANKING_DEPTH``
        The ``m`` best rankable items, best first, ties to the lower index (the order of
        :func:`serving.service.top_k_row`).
    complete : bool
        ``order`` holds every rankable item.
    """

    scores: np.ndarray
    order: np.ndarray
    complete: bool

    def top(self, k: int, excluded: np.ndarray) -> tuple[np.ndarray, np.ndarray] | None:
        """The best ``k`` items not in ``excluded`` and their scores, or None if ``order`` is too
        short to tell (the caller then ranks all of ``scores``).

        Parameters
        ----------
        k : int
        excluded : ndarray of int, shape ``(n_excluded,)``
            Item indices not to recommend.

        Returns
        -------
        items : ndarray of int64, shape ``(<= k,)``
            Fewer than ``k`` only when fewer items are rankable.
        scores : ndarray, shape like ``items``
        """
        head = self.order[:k + excluded.size]
        if excluded.size:
            hidden = np.zeros(self.scores.size, dtype=bool)
            hidden[excluded] = True
            head = head[~hidden[head]]
        head = head[:k]
        if head.size < k and not self.complete:
            return None
        return head, self.scores[head]


def rank_rows(scores: np.ndarray, depth: int = RANKING_DEPTH) -> list[Ranking]:
    """A :class:`Ranking` for every row of ``scores`` (shape ``(n_users, n_items)``)."""
    n_rankable = (np.isfinite(scores) | (scores > 0)).sum(axis=1).tolist()
    order, _ = top_k(scores, depth)  # unrankable (-inf, NaN) last, as -1
    return [Ranking(row, order[i, :min(depth, n)].copy(), n <= depth)
            for i, (row, n) in enumerate(zip(scores, n_rankable, strict=True))]


@dataclass(frozen=True)
class ArmSet:
    """Fitted arms sharing one catalogue, plus what the service needs to present items.

    Attributes
    ----------
    names : tuple of str
        Arm names in policy order.
    models : dict of str to Recommender
    version : int
        Policy version these arms belong to.
    user_index : dict of int to int
        Raw user id -> arm user index (users the arms know).
    item_ids : ndarray of int64, shape ``(n_items,)``
    item_index : dict of int to int
    titles, years, genres : lists of length ``n_items``
    genre_unit : ndarray of float64, shape ``(n_items, n_genres)``
        Genre flags scaled to unit length (cosine similarity is a dot product).
    popularity : ndarray of float64, shape ``(n_items,)``
        Cold-start scores.
    genre_names : tuple of str
        The catalogue's genres, in the order of ``genre_unit``'s columns.
    """

    names: tuple[str, ...]
    models: dict[str, Recommender]
    version: int
    user_index: dict[int, int]
    item_ids: np.ndarray
    item_index: dict[int, int]
    titles: list[str]
    years: list[int | None]
    genres: list[list[str]]
    genre_unit: np.ndarray
    popularity: np.ndarray
    cache_size: int = 0
    genre_names: tuple[str, ...] = ()
    _cache: OrderedDict = field(default_factory=OrderedDict, repr=False, compare=False)
    _lock: threading.Lock = field(default_factory=threading.Lock, repr=False, compare=False)

    def ranking(self, arm: str, user: int) -> Ranking:
        """The arm's :class:`Ranking` of every item for one user (arm user index ``user``).

        Scores only change with the arms, and an ArmSet never changes, so up to
        ``cache_size`` (arm, user) rankings are kept (least recently used evicted; about
        ``4 n_items + 8 RANKING_DEPTH`` bytes each).
        """
        key = (arm, user)
        with self._lock:
            hit = self._cache.get(key)
            if hit is not None:
                self._cache.move_to_end(key)
                return hit
        model = self.models[arm]
        scores = model.score(np.array([user]))[0]
        seen = model.seen_
        scores[seen.indices[seen.indptr[user]:seen.indptr[user + 1]]] = -np.inf
        ranking = rank_rows(scores[None, :].astype(np.float32))[0]
        self._remember(key, ranking)
        return ranking

    def _remember(self, key: tuple, ranking: Ranking) -> None:
        """Cache ``ranking`` (up to ``cache_size``, least recently used evicted)."""
        if self.cache_size:
            with self._lock:
                self._cache[key] = ranking
                while len(self._cache) > self.cache_size:
                    self._cache.popitem(last=False)

    @cached_property
    def cold_start_ranking(self) -> Ranking:
        """The popularity ranking served to users the arms do not know."""
        return rank_rows(self.popularity[None, :])[0]

    def preferred_ranking(self, genres: Sequence[str]) -> Ranking:
        """The cold-start ranking steered by stated genres: the items of any of ``genres``
        first, then the others, each part in popularity order (ties to the lower index), so
        a slate is full even where those genres hold fewer than ``k`` items. The scores stay
        the popularity scores. Cached like the arms' rankings (one sort of the items each).
        Once the user's session has likes or dislikes, the service's session adjustment
        re-ranks those scores instead (the genres of what they liked then lead).

        Raises
        ------
        ValueError
            If a genre is not one of ``genre_names``.
        """
        unknown = sorted(set(genres) - set(self.genre_names))
        if unknown:
            raise ValueError(f"genres must be among {list(self.genre_names)}, got {unknown}")
        if not genres:
            return self.cold_start_ranking
        columns = sorted({self.genre_names.index(g) for g in genres})
        key = ("genres", tuple(columns))
        with self._lock:
            hit = self._cache.get(key)
        if hit is not None:
            return hit
        preferred = (self.genre_unit[:, columns] > 0).any(axis=1)
        scores = self.popularity
        # lexsort: the last key is the primary one.
        order = np.lexsort((np.arange(scores.size), -scores, ~preferred))
        ranking = Ranking(scores, order[np.isfinite(scores[order])], complete=True)
        self._remember(key, ranking)
        return ranking

    def warm(self, chunk: int = 256) -> int:
        """Fill the ranking cache for the known users, arm by arm, in batched passes.

        Runs at start-up and before a new ArmSet is swapped in, so requests rarely pay for
        scoring. Returns the number of rankings cached.
        """
        if not self.cache_size:
            return 0
        per_arm = self.cache_size // len(self.names)
        first = self.models[self.names[0]]
        users = np.flatnonzero(first.known_users_)[:per_arm]
        done = 0
        for arm in self.names:
            model = self.models[arm]
            for start in range(0, len(users), chunk):
                batch = users[start:start + chunk]
                scores = model.score(batch)
                rows = model.seen_[batch]
                scores[np.repeat(np.arange(len(batch)), np.diff(rows.indptr)),
                       rows.indices] = -np.inf
                rankings = rank_rows(scores.astype(np.float32))
                with self._lock:
                    for user, ranking in zip(batch.tolist(), rankings, strict=True):
                        self._cache.setdefault((arm, user), ranking)
                done += len(batch)
        return done

    @classmethod
    def build(cls, models: Mapping[str, Recommender], catalog: Dataset, *, version: int,
              cold_start_arm: str, cache_size: int = 0) -> ArmSet:
        """Check that every arm shares one catalogue and index the items for presentation.

        Raises
        ------
        ValueError
            If the arms disagree on users or items, or an arm's item is not in ``catalog``.
        """
        names = tuple(models)
        first = models[names[0]]
        for name in names[1:]:
            other = models[name]
            if not (np.array_equal(other.item_ids_, first.item_ids_)
                    and np.array_equal(other.user_ids_, first.user_ids_)):
                raise ValueError(f"arm {name!r} was fit on another catalogue than {names[0]!r}")
        item_ids = np.asarray(first.item_ids_, dtype=np.int64)
        missing = np.setdiff1d(item_ids, catalog.item_ids)
        if missing.size:
            raise ValueError(f"the arms know movie ids absent from the catalogue: {missing[:5]}")
        items = catalog.items.loc[item_ids]
        flags = items.loc[:, list(catalog.genre_names)].to_numpy(dtype=np.float64)
        norms = np.linalg.norm(flags, axis=1, keepdims=True)
        years = items["year"] if "year" in items else pd.Series([None] * len(items))
        popular_model = models.get(cold_start_arm, first)
        return cls(
            names=names,
            models=dict(models),
            version=version,
            user_index={int(u): i for i, u in enumerate(first.user_ids_)},
            item_ids=item_ids,
            item_index={int(m): i for i, m in enumerate(item_ids)},
            titles=items["title"].astype(str).tolist(),
            years=[None if pd.isna(y) else int(y) for y in years],
            genres=[g.split("|") if g else [] for g in items["genres"].astype(str)],
            genre_unit=np.divide(flags, norms, out=np.zeros_like(flags), where=norms > 0),
            popularity=np.asarray(popular_model.popularity_, dtype=np.float64),
            cache_size=cache_size,
            genre_names=tuple(catalog.genre_names),
        )
