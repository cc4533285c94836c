"""The arms the service routes to: resolve by name, fit, save, load, and look up items.

An :class:`ArmSet` is immutable once built; a retrain builds a new one and the service swaps the
reference, so a request that started on the old set finishes on it.
"""

from __future__ import annotations

import contextlib
import fcntl
import hashlib
import logging
import os
import shutil
import tempfile
import threading
import time
import uuid
from collections import OrderedDict
from collections.abc import Iterator, Mapping, Sequence
from contextlib import contextmanager
from dataclasses import dataclass, field
from datetime import UTC, datetime
from functools import cached_property
from pathlib import Path

import numpy as np
import numpy.typing as npt
import pandas as pd
import scipy.sparse as sp

from arms import registry
from arms.base import Recommender, top_k
from arms.data.dataset import RATING_COLUMNS, Dataset
from serving.session import session_adjust
from serving.store.types import AddedItem

logger = logging.getLogger(__name__)


def make_arm(name: str, *, seed: int | None, **params: object) -> Recommender:
    """An unfitted arm by its :mod:`arms.registry` name (``random_state=seed`` if it takes one),
    with ``params`` over the registry's hyper-parameters.

    Raises
    ------
    arms.UnknownArmError
        A ``ValueError``, if the name is not registered; the message lists the valid names.
    TypeError, ValueError
        A hyper-parameter the arm does not take, or a bad value (from the arm).
    """
    return registry.make_arm(name, random_state=seed, **params)


def fit_arms(names: Sequence[str], train: Dataset, *, seed: int | None,
             params: Mapping[str, Mapping[str, object]] | None = None,
             seed_time: int | None = None) -> dict[str, Recommender]:
    """Fit one arm per name on ``train`` (``params``: hyper-parameters by arm name; progress
    logged and ``seed_time``: see :func:`_fit_each`).
    """
    params = params or {}
    return _fit_each({name: make_arm(name, seed=seed, **params.get(name, {}))
                      for name in names}, train, seed_time)


def _comparable(value: object) -> object:
    """``value`` with numbers as floats and sequences as lists: how two spellings of one
    hyper-parameter (``3600`` and ``3600.0``, a tuple saved as a list) compare equal.
    """
    if isinstance(value, bool) or value is None or isinstance(value, str):
        return value
    if isinstance(value, int | float):
        return float(value)
    if isinstance(value, list | tuple):
        return [_comparable(v) for v in value]
    if isinstance(value, dict):
        return {k: _comparable(v) for k, v in value.items()}
    return str(value)


def params_differ(fitted: Recommender, asked: Recommender
                  ) -> dict[str, tuple[object, object]]:
    """The hyper-parameters ``fitted`` was made with that differ from ``asked``'s:
    ``{parameter: (fitted's, asked's)}``, compared by value; the seed (``random_state``) is
    left out (a new seed alone refits nothing).
    """
    mine, theirs = fitted.get_params(), asked.get_params()
    return {key: (mine.get(key), value) for key, value in theirs.items()
            if key != "random_state" and _comparable(mine.get(key)) != _comparable(value)}


def refit_like(models: Mapping[str, Recommender], train: Dataset, *,
               seed_time: int | None = None) -> dict[str, Recommender]:
    """Fit fresh copies (same class and hyper-parameters) of ``models`` on ``train``
    (``seed_time``: see :func:`_fit_each`).
    """
    return _fit_each({name: type(m)(**m.get_params()) for name, m in models.items()}, train,
                     seed_time)


def _fit_each(unfitted: Mapping[str, Recommender], train: Dataset,
              seed_time: int | None = None) -> dict[str, Recommender]:
    """Fit every arm on ``train``, logging (INFO) each as it starts and the time it took:
    ``serve`` and ``retrain`` show these lines (a first start on MovieLens takes ~20 s).

    A live arm's training seed is made as of ``seed_time`` (Unix seconds; None: now), its
    store's first fit (:func:`serving.versions.seed_time`), and saved so: the base every fold
    of the log starts from. So the log's events, backfilled ones too, fold by their own age
    against it (found by attack: the first event past the training ratings anchored it, and a
    backfilled one aged it 89 days), and a later refit or a promotion between versions gives
    it the same age (found by attack: a refit anchored at its own time brought it back whole
    against weeks of events, a rollback took that away again).
    """
    at = int(time.time()) if seed_time is None else int(seed_time)
    fitted = {}
    for i, (name, model) in enumerate(unfitted.items(), 1):
        logger.info("fitting arm %s (%d of %d) on %s", name, i, len(unfitted), train)
        start = time.perf_counter()
        fitted[name] = model.fit(train).anchor_seed(at)
        logger.info("fitted arm %s in %.1f s", name, time.perf_counter() - start)
    return fitted


def arm_file(folder: Path, name: str) -> Path:
    """Where arm ``name`` is saved in a version's arms ``folder`` (the one layout)."""
    return folder / f"{name}.npz"


def missing_arms(folder: Path, names: Sequence[str]) -> list[str]:
    """Those of ``names`` with no saved file in ``folder``."""
    return [n for n in names if not arm_file(folder, n).is_file()]


def unreadable_arms(folder: Path, names: Sequence[str]) -> dict[str, str]:
    """Those of ``names`` whose saved file in ``folder`` cannot be read back, with why: each
    is loaded as a worker loads it (:func:`load_arms`), so a promotion is refused before it
    is recorded, not found by every worker afterwards (found by attack: a truncated file was
    promoted, no worker could serve it, and the old version went on serving).
    """
    return {name: f"{type(read).__name__}: {read}" for name, read in _read_each(folder, names)
            if isinstance(read, Exception)}


def _read_each(folder: Path, names: Sequence[str]
               ) -> Iterator[tuple[str, Recommender | Exception]]:
    """Each of ``names`` read back from its file in ``folder``, or the exception that stopped
    it: the one loop of a worker's load (:func:`load_arms`, which raises it) and of the check
    before a promotion (:func:`unreadable_arms`, which collects them), so the check reads
    every file as a worker would. One arm at a time: the check holds none.
    """
    for name in names:
        try:
            read: Recommender | Exception = Recommender.load(arm_file(folder, name))
        except Exception as exc:  # any failure to read it is the answer
            read = exc
        yield name, read


def new_arms_folder(state_dir: Path) -> Path:
    """A new folder for a version's arms: ``state_dir/arms/<UTC time>-<8 hex digits>``, unique
    across processes and hosts sharing the state folder (a start used its pid instead, which
    repeats across hosts; found by a one-rule review).
    """
    stamp = datetime.now(UTC).strftime("%Y%m%dT%H%M%S")
    return state_dir / "arms" / f"{stamp}-{uuid.uuid4().hex[:8]}"


@contextlib.contextmanager
def arms_lock(state_dir: Path) -> Iterator[None]:
    """The lock of ``state_dir``'s arms between processes: held to fit a first version, or to
    save and record a new one (:func:`file_lock` on ``arms.lock``). Its holder first removes
    what saves that never finished left (:func:`_remove_unfinished_saves`).
    """
    with file_lock(state_dir / "arms.lock"):
        _remove_unfinished_saves(state_dir / "arms")
        yield


def _remove_unfinished_saves(arms_dir: Path) -> None:
    """Remove the temporary folders of :func:`save_arms` in ``arms_dir``: a save writes into
    ``.<name>-*`` and renames it into place, so a process killed meanwhile left one for good
    (found by attack: a first start killed while fitting). Every save runs under
    :func:`arms_lock`, so one its holder finds is no one's.
    """
    if arms_dir.is_dir():
        for path in arms_dir.glob(".*"):
            if path.is_dir():
                shutil.rmtree(path, ignore_errors=True)


def save_arms(models: Mapping[str, Recommender], target: Path) -> Path:
    """Write every arm to ``target/<name>.npz`` atomically (a folder renamed into place)."""
    target.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=f".{target.name}-", dir=target.parent))
    try:
        for name, model in models.items():
            model.save(arm_file(tmp, name))
        if target.exists():
            shutil.rmtree(target)
        os.replace(tmp, target)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    return target


def recorded_arms_dir(folder: Path) -> str:
    """How the store records an arms folder (``model_versions.arms_dir``): its absolute path,
    so that every process of the store finds it whatever its own state folder or working
    directory (a ``retrain`` or ``models promote`` run with another ``--state-dir`` than the
    service's; a relative record broke those, found by review). A state folder moved
    elsewhere finds its own arms by name (:func:`arms_folder`).
    """
    return str(Path(folder).resolve())


def arms_folder(state_dir: Path, recorded: str) -> Path:
    """The arms folder a store's ``arms_dir`` names, for a process whose state folder is
    ``state_dir``: ``recorded`` if it exists (an older store may have recorded it relative
    to the working directory: then it is tried relative to the state folder first); else
    ``state_dir/arms/<its name>``, where a state folder copied or moved elsewhere holds it
    (found by attack: once the original was gone, ``serve`` fitted the arms again as a new
    version and a rollback found nothing to serve); else ``recorded``. A copy whose original
    still exists reads the original's folders, which hold the same files: a folder is never
    written again once recorded.
    """
    path = Path(recorded)
    candidates = [*(() if path.is_absolute() else (state_dir / path,)), path,
                  state_dir / "arms" / path.name]
    return next((c for c in candidates if c.is_dir()), path)


def load_arms(folder: Path, names: Sequence[str]) -> dict[str, Recommender]:
    """Read ``folder/<name>.npz`` for every name.

    Raises
    ------
    FileNotFoundError
        If an arm file is missing (the message names it).
    Exception
        The first arm that cannot be read, its own error (:func:`unreadable_arms` says it
        for every arm).
    """
    missing = missing_arms(folder, names)
    if missing:
        raise FileNotFoundError(f"no saved arm {missing} in {folder}")
    loaded = {}
    for name, read in _read_each(folder, names):
        if isinstance(read, Exception):
            raise read  # as it was raised (its traceback kept)
        loaded[name] = read
    return loaded


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


def training_set(base: Dataset, feedback: pd.DataFrame, *, base_precedence: float) -> Dataset:
    """``base`` plus feedback ratings, each (user, item) keeping one rating by the rule book's
    rule (:class:`serving.rules.KeptRating`): of the base rating and the feedback's, the one of
    higher precedence, then the later.

    Parameters
    ----------
    base : Dataset
        The base catalogue's ratings: explicit ratings, ranked with ``base_precedence``.
    feedback : pandas.DataFrame
        :meth:`serving.store.Store.ratings_frame`: ``user_id, item_id, rating, timestamp,
        precedence`` (more columns are ignored), one row per pair.
    base_precedence : float
        The precedence of the base ratings (the rule book's for an explicit ``rating``).

    Users that exist only in the feedback join the user catalogue (unknown demographics), so a
    retrain turns them from cold-start users into known ones.
    """
    if feedback.empty:
        return base
    new_users = np.setdiff1d(feedback["user_id"].unique(), base.user_ids)
    users = base.users
    if len(new_users):
        users = users.reindex(users.index.union(pd.Index(new_users)))
    columns = [*RATING_COLUMNS, "precedence"]
    ratings = pd.concat([base.ratings.loc[:, list(RATING_COLUMNS)].assign(
        precedence=float(base_precedence)), feedback.loc[:, columns]], ignore_index=True)
    # One rating per pair: the largest (precedence, timestamp), the feedback's on a full tie
    # (a stable sort keeps the base rows first).
    kept = ratings.sort_values(["precedence", "timestamp"], kind="stable").drop_duplicates(
        ["user_id", "item_id"], keep="last")
    return Dataset.from_frames(kept.sort_index(), base.items, users, base.genre_names,
                               name=f"{base.name}+feedback", rating_scale=base.rating_scale)


def seen_after_retrain(train: Dataset, base: Dataset, feedback: pd.DataFrame) -> sp.csr_matrix:
    """What a retrained arm never shows a user again, on ``train``'s indices: their ratings of
    the ``base`` catalogue and the pairs of ``feedback`` (:meth:`serving.store.Store.
    ratings_frame`) whose ``excludes`` is set (an event of a type that excludes: a like, a
    purchase, a rating...; not a view, which still trains the arms).

    Returns
    -------
    scipy.sparse.csr_matrix of float32, shape ``(train.n_users, train.n_items)``
        1 where excluded (sorted indices, as :meth:`arms.data.Dataset.interaction_matrix`).
    """
    pairs = pd.concat([base.ratings.loc[:, ["user_id", "item_id"]],
                       feedback.loc[feedback["excludes"].astype(bool), ["user_id", "item_id"]]],
                      ignore_index=True)
    rows = pd.Index(train.user_ids).get_indexer(pairs["user_id"])
    cols = pd.Index(train.item_ids).get_indexer(pairs["item_id"])
    matrix = sp.csr_matrix((np.ones(len(pairs), dtype=np.float32), (rows, cols)),
                           shape=(train.n_users, train.n_items)).sign().astype(np.float32)
    matrix.sort_indices()
    return matrix


def with_added_items(base: Dataset, added: Sequence[AddedItem]) -> Dataset:
    """``base`` with the items added at run time in its item catalogue (title, genres, year),
    so that a retrain learns them from their ratings.
    """
    known = set(base.item_ids.tolist())
    new = [a for a in added if a.item_id not in known]
    if not new:
        return base
    genre_names = list(base.genre_names)
    rows = pd.DataFrame(
        [{"title": a.title, "year": a.year, "genres": "|".join(a.genres),
          **dict(zip(genre_names, map(int, a.genre_flags(genre_names)), strict=True))}
         for a in new],
        index=pd.Index([a.item_id for a in new], name=base.items.index.name))
    items = pd.concat([base.items, rows.reindex(columns=base.items.columns)])
    return Dataset.from_frames(base.ratings.loc[:, list(RATING_COLUMNS)], items, base.users,
                               base.genre_names, name=base.name, rating_scale=base.rating_scale)


class LiveLock:
    """The lock over an arm set's live arms (those that learn from the stream), and how many
    times they changed under it.

    :func:`serving.live.fold_log` bumps ``generation`` under the lock whenever it folds events
    or grows an arm; a live arm's rankings are cached under the generation they were scored
    at, so a ranking of an older state is never served once the state has moved.
    """

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self.generation = 0

    def __enter__(self) -> LiveLock:
        self._lock.acquire()
        return self

    def __exit__(self, *exc: object) -> None:
        self._lock.release()


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
    order : ndarray of int64 (or int32), shape ``(m,)``, ``m <= RANKING_DEPTH``
        The ``m`` best rankable items, best first, ties to the lower index (the order of
        :func:`top_k_row`); every rankable item, ``m`` past the depth, for a ranking steered
        by stated genres (:meth:`ArmSet.preferred_ranking`).
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
        if self.order.size < k and not self.complete:
            return None  # too short whatever is excluded (a ranking kept unranked: a miss's)
        head = self.order[:k + excluded.size]
        if excluded.size:
            hidden = np.zeros(self.scores.size, dtype=bool)
            hidden[excluded] = True
            head = head[~hidden[head]]
        head = head[:k]
        if head.size < k and not self.complete:
            return None
        return head, self.scores[head]


def unranked(scores: np.ndarray) -> Ranking:
    """A :class:`Ranking` of ``scores`` with no order kept: its :meth:`~Ranking.top` says it
    cannot tell, so the caller partitions the scores (for scores used once).
    """
    return Ranking(scores, np.empty(0, dtype=np.int64), complete=False)


def top_k_row(scores: npt.NDArray[np.float64], k: int
              ) -> tuple[npt.NDArray[np.intp], npt.NDArray[np.float64]]:
    """:func:`arms.base.top_k` for one row, without its batch machinery (~5x faster).

    Same contract: the best ``k`` of ``scores`` (shape ``(n_items,)``), best first, ties to the
    lower index; excluded (``-inf`` or NaN) items are dropped rather than padded with ``-1``.
    Any float dtype works (a cached ranking's float32 scores too); the values keep it.
    """
    k = min(k, scores.size)
    if k < scores.size:
        kth = -np.partition(-scores, k - 1)[k - 1]
        if np.isnan(kth):  # fewer than k items are not NaN: every one of them is a candidate
            part = np.flatnonzero(~np.isnan(scores))
        else:
            above = np.flatnonzero(scores > kth)
            # Of the items tied at the k-th score, the lowest-indexed fill the remaining places.
            part = np.concatenate((above, np.flatnonzero(scores == kth)[:k - above.size]))
    else:
        part = np.arange(scores.size)
    part_scores = scores[part]
    order = np.lexsort((part, -part_scores))
    items, values = part[order], part_scores[order]
    keep = np.isfinite(values) | (values > 0)
    return items[keep], values[keep]


def rank_rows(scores: np.ndarray, depth: int = RANKING_DEPTH) -> list[Ranking]:
    """A :class:`Ranking` for every row of ``scores`` (shape ``(n_users, n_items)``).

    Raises
    ------
    ValueError
        ``depth`` below 1.
    """
    if depth < 1:
        raise ValueError(f"depth must be >= 1, got {depth}")
    n_rankable = (np.isfinite(scores) | (scores > 0)).sum(axis=1).tolist()
    if len(n_rankable) == 1:
        # One row (a user's ranking sorted on its second request): the same order by
        # top_k_row, 33 against 82 us on MovieLens 100K's 1,682 items (a one-off timeit of
        # both on random float32 scores, load ~1; a reviewer's run: 33 against 63 us).
        items, _ = top_k_row(scores[0], depth)
        return [Ranking(scores[0], items.astype(np.int64), n_rankable[0] <= depth)]
    order, _ = top_k(scores, depth)  # unrankable (-inf, NaN) last, as -1
    return [Ranking(row, order[i, :min(depth, n)].copy(), n <= depth)
            for i, (row, n) in enumerate(zip(scores, n_rankable, strict=True))]


class UnknownItemsError(ValueError):
    """The arms know item ids that neither the catalogue nor the added items hold
    (:meth:`ArmSet.build`); ``missing`` lists them all.
    """

    def __init__(self, missing: list[int]) -> None:
        super().__init__(f"the arms know movie ids absent from the catalogue: {missing[:5]}")
        self.missing = missing


@dataclass(frozen=True)
class ArmSet:
    """Fitted arms over one item universe, plus what the service needs to present items.

    The universe is every item some arm knows, in the first arm's order, then the items added
    at run time (``POST /admin/items``) in log order. Arms need not know the same items: arms
    that can grow (co-occurrence, popularity) learn an added item at once, the others at their
    next refit. An item an arm does not know gets that arm's lowest score for the user (never
    ``-inf``), so the session's genre adjustment can still lift it: the content path that shows
    a new item before any arm has learned it.

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
        The universe.
    item_index : dict of int to int
    titles, years, genres : lists of length ``n_items``
    genre_unit : ndarray of float64, shape ``(n_items, n_genres)``
        Genre flags scaled to unit length (cosine similarity is a dot product).
    popularity : ndarray of float64, shape ``(n_items,)``
        Cold-start scores.
    positions : dict of str to ndarray of int64
        Per arm, the universe index of each of the arm's items (shape ``(arm's n_items_,)``).
    genre_names : tuple of str
        The catalogue's genres, in the order of ``genre_unit``'s columns.
    added : tuple of AddedItem
        The items added at run time that the universe holds.
    cold_start_name : str
        The arm whose popularity serves cold starts.
    live_lock : LiveLock
        Held while an arm that learns from the stream folds events or scores (shared by the
        copies an added item makes and the arm sets a retrain publishes).
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
    positions: dict[str, np.ndarray] = field(default_factory=dict)
    cache_size: int = 0
    genre_names: tuple[str, ...] = ()
    added: tuple[AddedItem, ...] = ()
    cold_start_name: str = ""
    live_lock: LiveLock = field(default_factory=LiveLock, repr=False, compare=False)
    _cache: OrderedDict = field(default_factory=OrderedDict, repr=False, compare=False)
    _lock: threading.Lock = field(default_factory=threading.Lock, repr=False, compare=False)

    @cached_property
    def user_id_range(self) -> tuple[int, int] | None:
        """The smallest and the largest id of :attr:`user_index` (None: no user), computed once
        per arm set: ``GET /demo/facts`` took ~11 ms of the event loop per call for 330k users.
        Not every id between them need be known (a retrain on new users leaves gaps).
        """
        if not self.user_index:
            return None
        ids = np.fromiter(self.user_index, dtype=np.int64, count=len(self.user_index))
        return int(ids.min()), int(ids.max())

    @cached_property
    def live_names(self) -> tuple[str, ...]:
        """The arms that learn from the stream (their state is a fold of the event log)."""
        return tuple(n for n in self.names if self.models[n].learns_from_stream)

    @cached_property
    def _user_rows(self) -> dict[str, dict[int, int]]:
        """Per arm, raw user id -> the arm's user row (live arms keep their base fit's users;
        the others share ``user_index``).
        """
        out = {}
        for name in self.names:
            model = self.models[name]
            out[name] = (self.user_index if name not in self.live_names else
                         {int(u): i for i, u in enumerate(model.user_ids_)})
        return out

    @cached_property
    def _model_index(self) -> dict[str, np.ndarray]:
        """Per arm, the arm's index of each universe item (-1: unknown to the arm)."""
        out = {}
        for name, positions in self.positions.items():
            index = np.full(self.item_ids.size, -1, dtype=np.int64)
            index[positions] = np.arange(positions.size)
            out[name] = index
        return out

    @cached_property
    def _in_order(self) -> dict[str, bool]:
        """Per arm, whether it knows exactly the universe, in its order (no mapping needed)."""
        n = self.item_ids.size
        return {name: bool(positions.size == n and np.array_equal(positions, np.arange(n)))
                for name, positions in self.positions.items()}

    def to_universe(self, arm: str, scores: np.ndarray, seen: np.ndarray | None = None
                    ) -> np.ndarray:
        """An arm's scores (its own item order) over the universe, float32.

        Items the arm does not know get its lowest finite score; ``seen`` (the arm's item
        indices) get ``-inf``. A live arm may have grown since this arm set was built (the
        refresher folds added items into the shared arm): the items it learned since are
        appended at its end and left out here, as this arm set's universe does not hold them.
        """
        positions = self.positions[arm]
        scores = scores[:positions.size]
        if seen is not None and seen.size:
            scores = scores.copy()
            scores[seen[seen < positions.size]] = -np.inf
        if self._in_order[arm]:
            return scores.astype(np.float32)  # the arm knows every item, in universe order
        finite = scores[np.isfinite(scores)]
        full = np.full(self.item_ids.size, finite.min() if finite.size else -np.inf,
                       dtype=np.float32)
        full[positions] = scores
        return full

    def ranking(self, arm: str, user_id: int) -> Ranking:
        """The arm's :class:`Ranking` of every item for one user it knows (raw ``user_id``).

        Scores only change with the arms, and an ArmSet never changes, so up to
        ``cache_size`` (arm, user) rankings are kept (least recently used evicted; about
        ``4 n_items + 8 RANKING_DEPTH`` bytes each). An arm that learns from the stream is
        cached under its state's generation (:class:`LiveLock`): scored afresh once the log
        has moved it.

        A user this arm does not know (a live arm keeps its base fit's users) is scored as one
        without events (:meth:`history_ranking`).
        """
        user = self._user_rows[arm].get(user_id)
        if user is None:
            empty = np.empty(0, dtype=np.int64)
            return self.history_ranking(arm, user_id, empty, empty.astype(np.float64))
        model = self.models[arm]
        live = model.learns_from_stream
        seen = model.seen_
        if not model.personalised:
            return self._shared_ranking(arm, user, seen.indices[seen.indptr[user]:
                                                               seen.indptr[user + 1]])
        with self.live_lock if live else contextlib.nullcontext():
            key = (arm, user, self.live_lock.generation) if live else (arm, user)
            hit = self._cached(key)
            if hit is None:
                scores = model.score(np.array([user]))[0]
        if hit is not None:
            return self._ranked(key, hit)
        full = self.to_universe(arm, scores, seen.indices[seen.indptr[user]:seen.indptr[user + 1]])
        # A live arm's state moves with the log: its ranking is sorted only if asked for again.
        ranking = unranked(full) if live else rank_rows(full[None, :])[0]
        self._remember(key, ranking)
        return ranking

    def _shared_ranking(self, arm: str, user: int, seen: np.ndarray) -> Ranking:
        """The ranking of an arm whose scores are the same for every user (``personalised``
        false: popularity), for the user of row ``user`` whose seen items (the arm's indices)
        are ``seen``: the items are ranked once per state of the arm (cached under its
        generation, for a live arm) and each request leaves out its user's seen items, instead
        of caching a ranking per user (which a live arm's every fold would invalidate: 56 us
        to score and partition a user's row, 100 us to sort it, against ~10 us here).
        """
        model = self.models[arm]
        with self.live_lock if model.learns_from_stream else contextlib.nullcontext():
            key = ("shared", arm, self.live_lock.generation)
            shared = self._cached(key)
            if shared is None:
                scores = self.to_universe(arm, model.score(np.array([user]))[0])
        if shared is None:
            finite = np.flatnonzero(np.isfinite(scores))
            # Best first, ties to the lower index (the order of top_k_row); every rankable item.
            order = finite[np.lexsort((finite, -scores[finite]))]
            shared = Ranking(scores, order, complete=True)
            self._remember(key, shared)
        positions = self.positions[arm]
        hidden = seen[seen < positions.size]
        if not self._in_order[arm]:  # else the arm's indices are the universe's
            hidden = positions[hidden]
        if not hidden.size:
            return shared
        scores = shared.scores.copy()
        scores[hidden] = -np.inf
        # Only the head a request reads is filtered (RANKING_DEPTH items, as for the cached
        # rankings of the other arms: a longer slate is ranked from all the scores), not the
        # whole order: ~5 against ~16 us a request for MovieLens's popularity arm.
        depth = RANKING_DEPTH + hidden.size
        head = shared.order[:depth]
        head = head[np.isfinite(scores[head])]
        complete = depth >= shared.order.size
        return Ranking(scores, head if complete else head[:RANKING_DEPTH], complete)

    def history_ranking(self, arm: str, user_id: int, items: np.ndarray,
                        ratings: np.ndarray) -> Ranking:
        """The arm's :class:`Ranking` for one user from their events since training (scored
        for this request: see :meth:`user_ranking` for the cached path).

        Parameters
        ----------
        arm : str
        user_id : int
            Raw id; a user the arm does not know is scored from the events alone.
        items : ndarray of int64, shape ``(n_events,)``
            Universe indices of the user's events, oldest first (items the arm does not know
            are left out for it).
        ratings : ndarray of float64, shape ``(n_events,)``
            Each event's implicit rating (the rule book's).
        """
        return unranked(self._history_scores(arm, user_id, items, ratings))

    def _history_scores(self, arm: str, user_id: int, items: np.ndarray,
                        ratings: np.ndarray) -> np.ndarray:
        """The arm's scores over the universe for one user from their events (seen items
        ``-inf``); see :meth:`history_ranking`. Live arms are scored under ``live_lock``.
        """
        model = self.models[arm]
        user = self._user_rows[arm].get(user_id)
        own = self._model_index[arm][items]
        known = own >= 0
        with self.live_lock if model.learns_from_stream else contextlib.nullcontext():
            # Built here (a user row or None, the arm's int64 indices, the rule book's float64
            # ratings): scored without the public checks.
            scores = model.score_history(user, own[known],
                                         np.asarray(ratings, dtype=np.float64)[known],
                                         validate=False)
        seen = None
        if user is not None:
            seen = model.seen_.indices[model.seen_.indptr[user]:model.seen_.indptr[user + 1]]
        return self.to_universe(arm, scores, seen)

    def user_ranking(self, arm: str, user_id: int, items: np.ndarray, ratings: np.ndarray,
                     excluded: np.ndarray, liked: np.ndarray, disliked: np.ndarray,
                     strength: float, steer: Sequence[str] = ()) -> Ranking:
        """The arm's :class:`Ranking` for one user as a request serves it: from their events
        since training (:meth:`history_ranking`; :meth:`ranking` when they have none), with
        ``excluded`` items at ``-inf`` and the session's adjustment
        (:func:`serving.session.session_adjust`) when it has likes or dislikes; without
        them, the items of the genres in ``steer`` first (:meth:`preferred_ranking`: a
        newcomer's stated genres).

        Cached by everything the ranking depends on (the arm, the user, the events and their
        ratings, the excluded, liked and disliked items, ``strength``, the ``steer`` genres
        when no session adjustment applies, and a live arm's state generation), so a user's
        repeated requests between two of their events (paging, a reload, another device) are
        served without scoring: on MovieLens with the real-time
        arms, the scoring and session adjustment were 0.8 ms of a request's ~1 ms of CPU.
        The first hit sorts the ranking's head (70 us), later hits read it (2 us).

        Parameters
        ----------
        arm : str
        user_id : int
        items, ratings : ndarray, shape ``(n_events,)``
            As :meth:`history_ranking`.
        excluded, liked, disliked : ndarray of int64
            Universe indices of the items the user's events exclude, and of the session's
            likes and dislikes.
        strength : float
            The session adjustment's strength (0: none).
        steer : sequence of str, default ()
            Genres (of :attr:`genre_names`) whose items lead while the session has no like or
            dislike. Steered afresh per request, a newcomer's slate cost a lexsort of the
            catalogue (0.12 ms on 1,682 items, ~10 ms on ML-32M) on top of the scoring.
        """
        model = self.models[arm]
        live = model.learns_from_stream
        session = bool(strength) and bool(liked.size or disliked.size)
        steered = () if session else tuple(sorted(set(steer)))
        if (not items.size and not session and not excluded.size and not steered
                and user_id in self._user_rows[arm]):
            return self.ranking(arm, user_id)  # cached per user (frozen arms: warmed at start)
        generation = 0
        if live:
            with self.live_lock:  # the generation the state is scored at, or later
                generation = self.live_lock.generation
        # The arrays by a digest, not their bytes: a key holding a long history's arrays
        # weighed twice its ranking (18.9 against 9.2 KB for 1,000 events).
        signals = hashlib.blake2b(digest_size=16)
        for array in (items, ratings, excluded, liked, disliked):
            signals.update(array.size.to_bytes(4, "little"))  # where each array ends
            signals.update(array.tobytes())
        key = ("user", arm, user_id, signals.digest(), strength if session else 0.0,
               generation, steered)
        hit = self._cached(key)
        if hit is not None:
            return self._ranked(key, hit)
        if items.size or user_id not in self._user_rows[arm]:
            scores = self._history_scores(arm, user_id, items, ratings)
        else:
            scores = self.ranking(arm, user_id).scores
        scores = self.session_scores(scores, excluded, liked, disliked, strength)
        if steered:
            # Sorted whole at once, as every steered ranking is (the order is not the scores'
            # own, so a head alone could not be completed from them): kept as float32 scores
            # and int32 positions, 8 bytes an item against 4 and a 256-item head for another
            # entry (found by attack: float64 and int64, 16 bytes an item, anyone may state
            # genres for any newcomer).
            steered_ranking = self.preferred_ranking(steered, unranked(scores))
            ranking = Ranking(steered_ranking.scores.astype(np.float32),
                              steered_ranking.order.astype(np.int32), complete=True)
        else:
            # The first request partitions the scores (cheaper than sorting a head it may
            # never reuse); a second one sorts it. Kept in float32, as the arms' own rankings
            # are: half the memory of a cache entry.
            ranking = unranked(scores.astype(np.float32))
        self._remember(key, ranking)
        return ranking

    def session_scores(self, scores: np.ndarray, excluded: np.ndarray, liked: np.ndarray,
                       disliked: np.ndarray, strength: float) -> np.ndarray:
        """``scores`` (a copy, float64) as a request ranks them: ``excluded`` items at
        ``-inf``, then the session's adjustment (:func:`serving.session.session_adjust`) when
        it has likes or dislikes and ``strength`` is not 0.
        """
        out = scores.astype(np.float64)
        out[excluded] = -np.inf
        if strength and (liked.size or disliked.size):
            out = session_adjust(out, liked, disliked, self.genre_unit, strength)
        return out

    def _ranked(self, key: tuple, hit: Ranking) -> Ranking:
        """``hit``, the ranking cached under ``key``, with its head sorted (sorted now, and
        cached so, if it was kept unranked: it is being asked for a second time).
        """
        if hit.order.size or hit.complete:
            return hit
        ranking = rank_rows(hit.scores[None, :])[0]
        self._remember(key, ranking)
        return ranking

    def _cached(self, key: tuple) -> Ranking | None:
        """The cached ranking under ``key`` (marked recently used), or None."""
        with self._lock:
            hit = self._cache.get(key)
            if hit is not None:
                self._cache.move_to_end(key)
            return hit

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

    def preferred_ranking(self, genres: Sequence[str], base: Ranking | None = None) -> Ranking:
        """A cold-start ranking steered by stated genres: the items of any of ``genres``
        first, then the others, each part in the order of ``base``'s scores (ties to the lower
        index), so a slate is full even where those genres hold fewer than ``k`` items. The
        scores stay ``base``'s. ``base`` defaults to the base fit's popularity
        (:attr:`cold_start_ranking`), whose steered rankings are cached (one sort each); an arm's
        ranking for one newcomer is steered by :meth:`user_ranking`, which caches it. Once the
        user's session has likes or dislikes, the service's session adjustment re-ranks those
        scores instead (the genres of what they liked then lead).

        Raises
        ------
        ValueError
            If a genre is not one of ``genre_names``.
        """
        unknown = sorted(set(genres) - set(self.genre_names))
        if unknown:
            raise ValueError(f"genres must be among {list(self.genre_names)}, got {unknown}")
        if not genres:
            return self.cold_start_ranking if base is None else base
        columns = sorted({self.genre_names.index(g) for g in genres})
        key = ("genres", tuple(columns))
        if base is None:
            hit = self._cached(key)
            if hit is not None:
                return hit
        preferred = (self.genre_unit[:, columns] > 0).any(axis=1)
        scores = self.popularity if base is None else base.scores
        # lexsort: the last key is the primary one.
        order = np.lexsort((np.arange(scores.size), -scores, ~preferred))
        ranking = Ranking(scores, order[np.isfinite(scores[order])], complete=True)
        if base is None:
            self._remember(key, ranking)
        return ranking

    def warm(self, chunk: int = 256) -> int:
        """Fill the ranking cache for the known users, arm by arm, in batched passes (arms
        that learn from the stream are scored per request instead).

        Runs at start-up and before a new ArmSet is swapped in, so requests rarely pay for
        scoring. Returns the number of rankings cached.
        """
        if not self.cache_size:
            return 0
        frozen = [n for n in self.names if n not in self.live_names]
        if not frozen:
            return 0
        per_arm = self.cache_size // len(frozen)
        first = self.models[frozen[0]]
        users = np.flatnonzero(first.known_users_)[:per_arm]
        done = 0
        for arm in frozen:
            model = self.models[arm]
            for start in range(0, len(users), chunk):
                batch = users[start:start + chunk]
                scores = model.score(batch)
                rows = model.seen_[batch]
                scores[np.repeat(np.arange(len(batch)), np.diff(rows.indptr)),
                       rows.indices] = -np.inf
                rankings = rank_rows(np.stack([self.to_universe(arm, row) for row in scores]))
                with self._lock:
                    for user, ranking in zip(batch.tolist(), rankings, strict=True):
                        self._cache.setdefault((arm, user), ranking)
                done += len(batch)
        return done

    @classmethod
    def build(cls, models: Mapping[str, Recommender], catalog: Dataset, *, version: int,
              cold_start_arm: str, cache_size: int = 0,
              added: Sequence[AddedItem] = ()) -> ArmSet:
        """Index the arms' items for presentation: the universe is every arm's items (the
        first arm's order, then any others'), then ``added`` (items added at run time, in log
        order, unless an arm's catalogue holds them already).

        Raises
        ------
        ValueError
            If the arms disagree on users, or an arm's item is in neither ``catalog`` nor
            ``added``.
        """
        names = tuple(models)
        first = models[names[0]]
        # The live arms keep the users of their base fit; the others are refitted together.
        refitted = [n for n in names if not models[n].learns_from_stream] or list(names)
        users = models[refitted[0]].user_ids_
        for name in refitted[1:]:
            if not np.array_equal(models[name].user_ids_, users):
                raise ValueError(f"arm {name!r} was fit on other users than {refitted[0]!r}")
        universe = list(np.asarray(first.item_ids_, dtype=np.int64).tolist())
        known = set(universe)
        for name in names[1:]:
            extra = [int(i) for i in models[name].item_ids_ if int(i) not in known]
            universe += extra
            known.update(extra)
        for item in added:
            if item.item_id not in known:
                universe.append(item.item_id)
                known.add(item.item_id)
        item_ids = np.array(universe, dtype=np.int64)
        # An item's metadata: the catalogue's, else the one it was added with.
        by_id = {a.item_id: a for a in added}
        in_catalog = np.isin(item_ids, catalog.item_ids)
        missing = [int(i) for i in item_ids[~in_catalog] if int(i) not in by_id]
        if missing:
            raise UnknownItemsError(missing)
        genre_names = list(catalog.genre_names)
        items = catalog.items.loc[item_ids[in_catalog]]
        flags = np.zeros((item_ids.size, len(genre_names)))
        flags[in_catalog] = items.loc[:, genre_names].to_numpy(dtype=np.float64)
        titles: list[str] = [""] * item_ids.size
        years: list[int | None] = [None] * item_ids.size
        genres: list[list[str]] = [[] for _ in range(item_ids.size)]
        rows = np.flatnonzero(in_catalog)
        catalog_years = items["year"] if "year" in items else pd.Series([None] * len(items))
        for row, title, year, names_text in zip(rows.tolist(), items["title"].astype(str),
                                                catalog_years, items["genres"].astype(str),
                                                strict=True):
            titles[row], years[row] = title, None if pd.isna(year) else int(year)
            genres[row] = names_text.split("|") if names_text else []
        for row in np.flatnonzero(~in_catalog).tolist():
            item = by_id[int(item_ids[row])]
            titles[row], years[row], genres[row] = item.title, item.year, list(item.genres)
            flags[row] = item.genre_flags(genre_names)
        norms = np.linalg.norm(flags, axis=1, keepdims=True)
        item_index = {int(m): i for i, m in enumerate(item_ids)}
        positions = {name: np.array([item_index[int(i)] for i in models[name].item_ids_],
                                    dtype=np.int64) for name in names}
        popular_name = cold_start_arm if cold_start_arm in models else names[0]
        popularity = np.zeros(item_ids.size)
        popularity[positions[popular_name]] = models[popular_name].popularity_
        return cls(
            names=names,
            models=dict(models),
            version=version,
            user_index={int(u): i for i, u in enumerate(users)},
            item_ids=item_ids,
            item_index=item_index,
            titles=titles,
            years=years,
            genres=genres,
            genre_unit=np.divide(flags, norms, out=np.zeros_like(flags), where=norms > 0),
            popularity=popularity,
            positions=positions,
            cache_size=cache_size,
            genre_names=tuple(genre_names),
            added=tuple(added),
            cold_start_name=cold_start_arm,
        )

    def with_items(self, added: Sequence[AddedItem], catalog: Dataset) -> ArmSet:
        """The arm set with ``added`` items in the universe (the arms that can grow have
        grown already: see :func:`serving.live.fold_log`); the ranking cache starts afresh,
        the live lock is shared.
        """
        grown = ArmSet.build(self.models, catalog, version=self.version,
                             cold_start_arm=self.cold_start_name, cache_size=self.cache_size,
                             added=[*self.added, *(a for a in added if a not in self.added)])
        object.__setattr__(grown, "live_lock", self.live_lock)
        return grown
