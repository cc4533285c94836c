"""Co-occurrence: which items go together in the live events of all users, time-decayed.

How it learns
-------------
:meth:`CooccurrenceRecommender.observe` takes events of any users in the order of the log. Each
user has a window of their last ``window`` items; a new event of item ``b`` (weight ``w_b``, time
``t``) adds ``sqrt(w_a * w_b)`` to the co-occurrence ``C[a, b]`` and ``C[b, a]`` of every other
item ``a`` (weight ``w_a``) in the user's window, then joins the window; with ``max_gap``,
window items more than that many seconds older than the event form no pair with it (the
service sets it to its retention: an expired event steers no new pair, where a window kept for
months paired it at full weight). Each event also adds its
weight to the item's live count ``n_b``. Both decay exponentially from the time they are added,
with half-life ``half_life`` seconds: a weight ``w`` added at ``t`` is worth ``w * 2 ** -((T - t)
/ half_life)`` at time ``T``. The caller chooses the weights (the service: each event type's
implicit rating); ``fit`` seeds the state from the training ratings (weight: the rating), or,
with ``from_train=False``, the arm learns only from the stream.

The seed's clock
----------------
With ``retime_seed`` (the default), the first observed event later than the training ratings
re-times the seed so that they end at that event's time (their spacing kept): the gap between
the training data and the stream does not decay what training taught. Events before it (late
ones) fold as they come, and feedback (:meth:`partial_fit`, at the training clock) leaves the
seed waiting. Otherwise a seed of old data is gone
at the first event: MovieLens 100K ends in April 1998, and one 2026 event left nothing of a
week's half-life seed, so the service's co-occurrence slates fell back to catalogue order. That
event is the same however the log is folded, so the re-timed state is too (:func:`retimed`,
:func:`fold_retiming`). ``retime_seed=False`` keeps the ratings' own times. ``anchor_seed(t)``
re-times the waiting seed to end at ``t`` at once; the service calls it when it fits an arm,
with its store's first fit's time, so that a backfilled first event cannot age the seed.

Exact and deterministic state
-----------------------------
The service folds the event log into this state on every worker, live event by event or at
start in one batch, and the results must be identical. So the state is kept in fixed point
(int64, whose addition is exact and associative) relative to a *frame* of
:data:`FRAME_HALF_LIVES` half-lives: a weight ``w`` at time ``t`` in frame ``f = floor(t /
(FRAME_HALF_LIVES * half_life))`` is stored as ``round(w * 2 ** (FIXED_POINT_BITS + (t - f *
span) / half_life))``, and when the log enters a later frame the whole state is shifted right by
``FRAME_HALF_LIVES`` bits per frame (halved that many times) before the next event is added. An
event of an earlier frame (a late one) is shifted likewise. Events are processed in runs that
share a frame, so folding the same events in the same order gives bit-identical arrays however
they are batched, and :meth:`save`/:meth:`load` round-trip them. The relative precision is
``2 ** -FIXED_POINT_BITS`` of the current frame's scale; one cell overflows after about
``2 ** (63 - FIXED_POINT_BITS - FRAME_HALF_LIVES) / w`` events of weight ``w`` within one frame
(about 400,000 of weight 5), which raises ``OverflowError`` rather than wrapping.

How it scores
-------------
A user's context is their last ``window`` items (the training tail, then the events given to
:meth:`score_history`), the ``r``-th most recent weighted ``recency ** (r - 1)``, negatively
where the rating is below 3 (a dislike pushes its companions down). Scores are the weighted sum
of the context items' rows of ``C``, divided by ``n ** damping`` (so the items everyone consumes
do not win every slate), scaled so the best scores 1, plus ``popularity_weight`` times the live
counts scaled so the best scores 1: they order the items no context reaches and are the whole
score of a user without context.
"""

from __future__ import annotations

from typing import Any, ClassVar, Protocol, cast

import numpy as np
import scipy.sparse as sp

from arms._validation import check_float, check_int, size_ceiling
from arms.base import Recommender, weighted_row_sum
from arms.data.dataset import Dataset
from arms.data.splits import rating_order

#: Half-lives per frame of the fixed-point state; a frame change shifts the state this many bits.
FRAME_HALF_LIVES = 8
#: Bits of the fixed point: a weight ``w`` at the start of the current frame is ``w * 2**32``.
FIXED_POINT_BITS = 32
#: Largest magnitude a state entry may reach (2**62): beyond it an addition could wrap.
_LIMIT = 1 << 62
#: Longest window: five float64/int64 arrays of users x window (the tails, their ratings and
#: the live windows' items, weights and times): 267 on MovieLens 32M within
#: ``arms._validation.MAX_MODEL_BYTES`` (the default is 10).
MAX_WINDOW = size_ceiling(per_user=5 * 8)
#: Default half-life: one week, in seconds.
WEEK = 7 * 24 * 3600.0
#: Shortest half-life (seconds), the log's time resolution: an event's frame is its time over
#: ``FRAME_HALF_LIVES`` half-lives, which past int64 (a half-life of 1e-20 days) came out as
#: NaN cast to an integer, with numpy's warnings and figures that meant nothing (found by
#: attack). The one floor of the arms that decay with time (co-occurrence, popularity).
MIN_HALF_LIFE_S = 1.0


def check_half_life(value: object) -> float:
    """``half_life`` (seconds) as a float, finite and at least :data:`MIN_HALF_LIFE_S`."""
    return check_float("half_life", value, low=MIN_HALF_LIFE_S)


# ---------------------------------------------------------------------- decayed fixed point
def frame_of(times: np.ndarray, half_life: float) -> np.ndarray:
    """Frame index of each timestamp, ``floor(t / (FRAME_HALF_LIVES * half_life))``, int64."""
    span = FRAME_HALF_LIVES * half_life
    return np.floor(np.asarray(times, dtype=np.float64) / span).astype(np.int64)


def fixed_point(
    weights: np.ndarray, times: np.ndarray, half_life: float, frame: int
) -> np.ndarray:
    """Weights at ``times`` as int64 fixed point relative to the start of ``frame``.

    Parameters
    ----------
    weights : ndarray of float64, shape ``(n,)``
    times : ndarray of int64, shape ``(n,)``
        Seconds; an event of a frame before ``frame`` is shifted right a frame's bits per frame.
    half_life : float
        Seconds.
    frame : int
        The current frame, at least every event's own frame.

    Returns
    -------
    ndarray of int64, shape ``(n,)``
        ``round(w * 2 ** (FIXED_POINT_BITS + (t - f * span) / half_life)) >> (frame - f) * 8``.
    """
    frames = frame_of(times, half_life)
    offset = (np.asarray(times, dtype=np.float64) - frames * (FRAME_HALF_LIVES * half_life))
    values = np.rint(np.ldexp(weights * np.exp2(offset / half_life), FIXED_POINT_BITS))
    shift = np.minimum((frame - frames) * FRAME_HALF_LIVES, 63)
    return cast(np.ndarray, values.astype(np.int64) >> shift)


def decay_runs(times: np.ndarray, half_life: float, frame: int) -> list[tuple[int, int, int]]:
    """Consecutive runs of events sharing the running frame: ``(start, stop, frame)`` each.

    The running frame is the largest of ``frame`` and the frames of the events so far; the
    state moves to a run's frame before the run's events are added.
    """
    running = np.maximum(np.maximum.accumulate(frame_of(times, half_life)), frame)
    cuts = (np.flatnonzero(np.diff(running)) + 1).tolist()
    starts, stops = [0, *cuts], [*cuts, len(times)]
    return [(a, b, int(running[a])) for a, b in zip(starts, stops, strict=True)]


def shift_frames(values: np.ndarray, frames: int) -> np.ndarray:
    """``values`` (int64) moved ``frames`` frames on: halved ``FRAME_HALF_LIVES`` times each."""
    return cast(np.ndarray, values >> min(frames * FRAME_HALF_LIVES, 63))


def decayed_to(values: np.ndarray, frame: int, at: float, half_life: float) -> np.ndarray:
    """Fixed-point ``values`` of ``frame`` as float64 weights decayed to time ``at``."""
    start = frame * FRAME_HALF_LIVES * half_life
    scale = np.ldexp(np.exp2(-(at - start) / half_life), -FIXED_POINT_BITS)
    return cast(np.ndarray, values.astype(np.float64) * scale)


def retimed(
    values: np.ndarray, frame: int, clock: int, delta: int, half_life: float
) -> tuple[np.ndarray, int]:
    """Fixed-point ``values`` of ``frame`` with every time ``delta`` seconds later.

    Moving every weight's time by ``delta`` multiplies each entry by the same power of two,
    so the entries are re-expressed in the frame of ``clock + delta`` (``clock``: the latest
    time among them, whose frame is ``frame``) and rounded to the fixed point: the same
    arrays in, the same arrays out, whoever folds them.

    Returns
    -------
    values : ndarray of int64, shape like ``values``
    frame : int
        The frame of ``clock + delta``.

    Raises
    ------
    OverflowError
        An entry would reach :data:`_LIMIT` (a frame holds at most ``2 ** FRAME_HALF_LIVES``
        times the weight of its start).
    """
    new_frame = int(frame_of(np.array([clock + delta]), half_life)[0])
    exponent = (delta - (new_frame - frame) * FRAME_HALF_LIVES * half_life) / half_life
    scaled = np.rint(values.astype(np.float64) * np.exp2(exponent))
    check_limit(scaled, "re-timed seed")
    return scaled.astype(np.int64), new_frame


class _SeededLiveArm(Protocol):
    seed_pending_: bool
    clock_: int

    def _fold(self, users: np.ndarray, items: np.ndarray, weights: np.ndarray,
              times: np.ndarray) -> None: ...

    def _retime_seed(self, delta: int) -> None: ...


def fold_retiming(
    arm: _SeededLiveArm, users: np.ndarray, items: np.ndarray, weights: np.ndarray,
    times: np.ndarray,
) -> None:
    """Fold events into a live arm whose training seed may wait to be re-timed
    (``retime_seed``): the events up to the training end (late ones) as they come, then the
    seed moved to end at the first later event, then that event and the rest. The first event
    past the training end is the same in every fold of a log, so the state is too.
    """
    if arm.seed_pending_:
        later = np.flatnonzero(times > arm.clock_)  # the clock is the training end meanwhile
        if not later.size:
            arm._fold(users, items, weights, times)
            return
        first = int(later[0])
        if first:
            arm._fold(users[:first], items[:first], weights[:first], times[:first])
        arm._retime_seed(int(times[first]) - arm.clock_)
        users, items, weights, times = users[first:], items[first:], weights[first:], times[first:]
    arm._fold(users, items, weights, times)


def anchor_retiming(arm: _SeededLiveArm, at: int) -> None:
    """Re-time ``arm``'s waiting seed to end at ``at`` (:meth:`Recommender.anchor_seed`):
    nothing waits afterwards, and nothing moves if training ended at ``at`` or later.
    """
    if arm.seed_pending_:
        if int(at) > arm.clock_:
            arm._retime_seed(int(at) - arm.clock_)
        arm.seed_pending_ = False


def check_limit(values: np.ndarray, what: str) -> None:
    """Raise ``OverflowError`` if a fixed-point entry has reached :data:`_LIMIT`."""
    if values.size and np.abs(values).max() >= _LIMIT:
        raise OverflowError(
            f"{what}: a fixed-point entry reached 2**62 (more than ~2**{63 - FIXED_POINT_BITS - 8} "
            "weight within one frame of FRAME_HALF_LIVES half-lives); lower the weights or the "
            "half_life"
        )


def time_order(data: Dataset) -> np.ndarray:
    """Row order of ``data``'s ratings by timestamp; ties by the splits' hash, then by row."""
    return rating_order(data.ratings)


# ---------------------------------------------------------------------- the arm
class CooccurrenceRecommender(Recommender):
    """Item-item co-occurrence of live events, exponentially time-decayed, on scipy.sparse.

    See the module docstring for the model, the fixed-point state and the scores.

    Parameters
    ----------
    window : int, default 10
        Items of a user's recent events an event pairs with, and the items of the scoring
        context, from 1 to :data:`MAX_WINDOW` (267).
    half_life : float, default 604800.0 (one week)
        Seconds after which a co-occurrence or a count weighs half (> 0).
    from_train : bool, default True
        Seed the state from the training ratings (weight: the rating) in time order; False
        starts it empty, so the arm learns only from :meth:`observe`. The users' training tails
        (their scoring context) are kept either way.
    recency : float, default 0.8
        Weight ratio between consecutive context items, most recent first, in ``(0, 1]``.
    damping : float, default 0.0
        Exponent of the live count that divides a companion's score, in ``[0, 1]``; 0 keeps
        the raw co-occurrence. On MovieLens 100K's stream between the 0.8 and 0.9 quantiles of
        time (``recbandits replay --cut 0.8 --max-events 10000``, the slice before the one the
        README reports) 0 gave the best HR@10 of 0, 0.25 and 0.5 (0.116, 0.112 and 0.091 with
        cold users scored).
    popularity_weight : float, default 0.02
        Weight of the live counts in the scores (their best item scores this much), ``>= 0``.
    max_gap : float or None, default None
        Seconds (> 0): a window item more than this older than a new event forms no pair with
        it. None: no limit. A hyper-parameter, not an argument of :meth:`observe`, so that the
        state is a function of the arm and the events alone, whoever folds them.
    retime_seed : bool, default True
        With ``from_train``: the first observed event later than the training ratings
        re-times the seed so that training ends then (see "The seed's clock" in the module
        docstring); False keeps the training ratings' own times, so a seed older than a few
        half-lives is gone at the first event.

    Attributes
    ----------
    pairs_ : scipy.sparse.csr_matrix of int64, shape ``(n_items_, n_items_)``
        The symmetric co-occurrence ``C`` in fixed point of frame ``frame_``.
    counts_ : ndarray of int64, shape ``(n_items_,)``
        The live counts ``n`` in fixed point of frame ``frame_``.
    frame_ : int
        The current frame; ``clock_`` (int) is the latest timestamp observed.
    window_users_ : ndarray of int64, shape ``(n_window_users,)``
        Raw ids of the users with a window, in order of their first event.
    window_items_ : ndarray of int64, shape ``(n_window_users, window)``
        Their last items, oldest first, ``-1`` where the window is not full (on the left).
    window_weights_ : ndarray of float64, shape ``(n_window_users, window)``
        The weights of those events.
    window_times_ : ndarray of int64, shape ``(n_window_users, window)``
        Their timestamps.
    seed_pending_ : bool
        The seed waits for the first observed event to be re-timed (``retime_seed``).
    tail_ : ndarray of int64, shape ``(n_users_, window)``
        Each user's last training items, then feedback items (:meth:`partial_fit`), oldest
        first, ``-1``-padded on the left: the user's context.
    tail_ratings_ : ndarray of float64, shape ``(n_users_, window)``
        Their ratings (``-1`` for padding).
    """

    name: ClassVar[str] = "cooccurrence"
    _win_times: np.ndarray  # the window arrays' storage (window_times_ is a view of it)
    learns_from_stream: ClassVar[bool] = True
    can_grow: ClassVar[bool] = True

    def __init__(
        self,
        *,
        window: int = 10,
        half_life: float = WEEK,
        from_train: bool = True,
        recency: float = 0.8,
        damping: float = 0.0,
        popularity_weight: float = 0.02,
        max_gap: float | None = None,
        retime_seed: bool = True,
    ) -> None:
        self.window = window
        self.half_life = half_life
        self.from_train = from_train
        self.recency = recency
        self.damping = damping
        self.popularity_weight = popularity_weight
        self.max_gap = max_gap
        self.retime_seed = retime_seed

    @classmethod
    def params_saved_without(cls, params: dict[str, Any]) -> dict[str, Any]:
        """Saved before ``retime_seed`` existed: its seed kept the ratings' own times (an arm
        without a seed, ``from_train=False``, is the same either way: no refit for it).
        """
        if "retime_seed" in params or params.get("from_train") is False:
            return {}
        return {"retime_seed": False}

    def _validate_params(self) -> None:
        check_int("window", self.window, low=1, high=MAX_WINDOW)
        check_half_life(self.half_life)
        if not isinstance(self.from_train, bool):
            raise TypeError(f"from_train must be a bool, got {self.from_train!r}")
        check_float("recency", self.recency, low=0.0, strict=True, high=1.0)
        check_float("damping", self.damping, low=0.0, high=1.0)
        check_float("popularity_weight", self.popularity_weight, low=0.0)
        if self.max_gap is not None:
            check_float("max_gap", self.max_gap, low=0.0, strict=True)
        if not isinstance(self.retime_seed, bool):
            raise TypeError(f"retime_seed must be a bool, got {self.retime_seed!r}")

    # ------------------------------------------------------------------ learning
    # The learned arrays the docstring lists; pairs_ and the windows are views of storage that
    # makes one observe() cheap: additions to C wait in a small buffer (merged before any read
    # of the whole matrix, before a frame change, and once it holds 1/64 of C's entries; int64
    # sums do not depend on when), and the window arrays grow by doubling.
    @property
    def pairs_(self) -> sp.csr_matrix:
        """The co-occurrence matrix ``C`` (see the class docstring)."""
        self._merge()
        return self._pairs

    @property
    def window_users_(self) -> np.ndarray:
        """Raw ids of the users with a window (see the class docstring)."""
        return self._win_users[: self._n_windows]

    @property
    def window_items_(self) -> np.ndarray:
        """The users' window items (see the class docstring)."""
        return self._win_items[: self._n_windows]

    @property
    def window_weights_(self) -> np.ndarray:
        """The users' window weights (see the class docstring)."""
        return self._win_weights[: self._n_windows]

    @property
    def window_times_(self) -> np.ndarray:
        """The users' window timestamps (see the class docstring)."""
        return self._win_times[: self._n_windows]

    def _fit(self, train: Dataset) -> None:
        n, width = self.n_items_, int(self.window)
        self._pairs = sp.csr_matrix((n, n), dtype=np.int64)
        self._pending: list[np.ndarray] = []
        self.counts_ = np.zeros(n, dtype=np.int64)
        self.frame_, self.clock_, self.seed_pending_ = 0, 0, False
        self._set_windows(np.zeros(0, np.int64), np.zeros((0, width), np.int64),
                          np.zeros((0, width), np.float64), np.zeros((0, width), np.int64))
        ratings = train.ratings.iloc[time_order(train)]
        users = ratings["user_index"].to_numpy(np.int64)
        items = ratings["item_index"].to_numpy(np.int64)
        self.tail_ = _last_per_group(users, items, self.n_users_, width)
        self.tail_ratings_ = _last_per_group(
            users, ratings["rating"].to_numpy(np.float64), self.n_users_, width)
        if self.from_train:
            self._fold(
                ratings["user_id"].to_numpy(np.int64), items,
                ratings["rating"].to_numpy(np.float64), ratings["timestamp"].to_numpy(np.int64),
            )  # fmt: skip
            self.seed_pending_ = bool(self.retime_seed) and len(ratings) > 0

    def _observe(
        self, users: np.ndarray, items: np.ndarray, weights: np.ndarray, times: np.ndarray
    ) -> None:
        if (times < 0).any():
            raise ValueError(f"timestamps must be >= 0 (seconds since 1970), got {times.min()}")
        fold_retiming(self, users, items, weights, times)

    def _fold(
        self, users: np.ndarray, items: np.ndarray, weights: np.ndarray, times: np.ndarray
    ) -> None:
        """Add events (in log order) to the state, each run of one frame at a time."""
        half_life = float(self.half_life)
        rows = self._window_rows(users)
        for start, stop, frame in decay_runs(times, half_life, self.frame_):
            if frame > self.frame_:
                self._move_to(frame)
            part = slice(start, stop)
            self._fold_run(rows[part], items[part], weights[part], times[part])
        self.clock_ = max(self.clock_, int(times.max()))

    def anchor_seed(self, at: int) -> CooccurrenceRecommender:
        """See :meth:`Recommender.anchor_seed` (:func:`anchor_retiming`)."""
        self._check_fitted()
        anchor_retiming(self, at)
        return self

    def _retime_seed(self, delta: int) -> None:
        """Move the whole state ``delta`` (> 0) seconds later: the seed's training ratings
        then end at the first event past them (or at :meth:`anchor_seed`'s time). Nothing
        changes if it raises.
        """
        half_life, clock = float(self.half_life), self.clock_
        counts, frame = retimed(self.counts_, self.frame_, clock, delta, half_life)
        pairs = self.pairs_.copy()  # merged first: every sum so far moves
        pairs.data = retimed(pairs.data, self.frame_, clock, delta, half_life)[0]
        pairs.eliminate_zeros()
        times: np.ndarray = self._win_times.copy()
        times[self._win_items >= 0] += delta
        self.counts_, self._pairs, self._win_times = counts, pairs, times
        self.frame_, self.clock_, self.seed_pending_ = frame, clock + delta, False

    def _move_to(self, frame: int) -> None:
        passed = frame - self.frame_
        self.counts_ = shift_frames(self.counts_, passed)
        pairs = self.pairs_.copy()  # merged first: the shift applies to every sum so far
        pairs.data = shift_frames(pairs.data, passed)
        pairs.eliminate_zeros()
        self._pairs, self.frame_ = pairs, frame

    def _merge(self) -> None:
        """Add the buffered co-occurrences to ``C``."""
        if not self._pending:
            return
        rows, cols, values = np.concatenate(self._pending, axis=1)
        added = sp.csr_matrix((values, (rows, cols)), shape=self._pairs.shape, dtype=np.int64)
        pairs = (self._pairs + added).tocsr()
        pairs.eliminate_zeros()
        pairs.sort_indices()
        check_limit(pairs.data, "co-occurrence")
        self._pairs, self._pending = pairs, []

    def _pair_rows(self, rows: np.ndarray) -> sp.csr_matrix:
        """Rows ``rows`` (sorted, distinct) of ``C`` with the buffered additions, as float64."""
        block = self._pairs[rows].astype(np.float64)
        if self._pending:
            pr, pc, pv = self._consolidated_pending()
            place = np.minimum(np.searchsorted(rows, pr), len(rows) - 1)
            hit = rows[place] == pr
            block = block + sp.csr_matrix(
                (pv[hit].astype(np.float64), (place[hit], pc[hit])), shape=block.shape)
        return block

    def _consolidated_pending(self) -> np.ndarray:
        """The buffered additions to ``C`` as one ``(3, n)`` array of rows, columns and values
        (concatenated once, and kept so).
        """
        self._pending = [np.concatenate(self._pending, axis=1)]
        return self._pending[0]

    def _set_windows(self, users: np.ndarray, items: np.ndarray, weights: np.ndarray,
                     times: np.ndarray) -> None:
        self._win_users, self._win_items, self._win_weights = users, items, weights
        self._win_times = times
        self._n_windows = len(users)
        self._win_index = {u: i for i, u in enumerate(users.tolist())}

    def _window_rows(self, users: np.ndarray) -> np.ndarray:
        """Each event's row of the window arrays; new users get rows in order of appearance."""
        first = users[np.sort(np.unique(users, return_index=True)[1])].tolist()
        new = [u for u in first if u not in self._win_index]
        if new:
            self._add_windows(new)
        lookup = np.array([self._win_index[u] for u in first], dtype=np.int64)
        return _map_rows(users, np.array(first, dtype=np.int64), lookup)

    def _add_windows(self, new: list[int]) -> None:
        start, stop = self._n_windows, self._n_windows + len(new)
        if stop > len(self._win_users):  # grow by doubling, so adding users costs O(1) each
            capacity = max(stop, 2 * len(self._win_users), 16)
            width = int(self.window)
            users = np.zeros(capacity, np.int64)
            items = np.full((capacity, width), -1, np.int64)
            weights = np.zeros((capacity, width), np.float64)
            times = np.zeros((capacity, width), np.int64)
            users[:start], items[:start], weights[:start], times[:start] = (
                self._win_users[:start], self._win_items[:start], self._win_weights[:start],
                self._win_times[:start])
            self._win_users, self._win_items, self._win_weights = users, items, weights
            self._win_times = times
        self._win_users[start:stop] = new
        self._win_items[start:stop] = -1
        self._win_weights[start:stop] = 0.0
        self._win_times[start:stop] = 0
        self._win_index.update(zip(new, range(start, stop), strict=True))
        self._n_windows = stop

    def _fold_run(
        self, rows: np.ndarray, items: np.ndarray, weights: np.ndarray, times: np.ndarray
    ) -> None:
        """Add one run's events (all in frame ``frame_``) to the pairs, counts and windows."""
        width, half_life = int(self.window), float(self.half_life)
        owners, inverse = np.unique(rows, return_inverse=True)
        # Each owner's sequence: its window (oldest first), then its events in log order.
        old_items = self.window_items_[owners].ravel()
        old_weights = self.window_weights_[owners].ravel()
        old_times = self.window_times_[owners].ravel()
        old_owner = np.repeat(np.arange(len(owners)), width)
        present = old_items >= 0
        seq_owner = np.concatenate([old_owner[present], inverse])
        order = np.argsort(seq_owner, kind="stable")
        seq_owner = seq_owner[order]
        seq_items = np.concatenate([old_items[present], items])[order]
        seq_weights = np.concatenate([old_weights[present], weights])[order]
        seq_times = np.concatenate([old_times[present], times])[order]
        is_new = np.concatenate([np.zeros(int(present.sum()), bool),
                                 np.ones(len(items), bool)])[order]  # fmt: skip
        pair_a, pair_b, pair_w, pair_t = [], [], [], []
        for d in range(1, min(width, len(seq_items) - 1) + 1):
            ok = is_new[d:] & (seq_owner[d:] == seq_owner[:-d]) & (seq_items[d:] != seq_items[:-d])
            if self.max_gap is not None:  # an event that old steers no new pair
                ok &= seq_times[d:] - seq_times[:-d] <= float(self.max_gap)
            pair_a.append(seq_items[:-d][ok])
            pair_b.append(seq_items[d:][ok])
            pair_w.append(np.sqrt(seq_weights[:-d][ok] * seq_weights[d:][ok]))
            pair_t.append(seq_times[d:][ok])
        counts = self.counts_.copy()
        np.add.at(counts, items, fixed_point(weights, times, half_life, self.frame_))
        check_limit(counts, "live counts")
        self.counts_ = counts
        if pair_a:
            a, b = np.concatenate(pair_a), np.concatenate(pair_b)
            value = fixed_point(np.concatenate(pair_w), np.concatenate(pair_t), half_life,
                                self.frame_)  # fmt: skip
            self._pending.append(np.stack([np.concatenate([a, b]), np.concatenate([b, a]),
                                           np.concatenate([value, value])]))  # fmt: skip
            if sum(p.shape[1] for p in self._pending) > max(4096, self._pairs.nnz // 64):
                self._merge()
        self._write_windows(owners, seq_owner, seq_items, seq_weights, seq_times)

    def _write_windows(
        self, owners: np.ndarray, seq_owner: np.ndarray, seq_items: np.ndarray,
        seq_weights: np.ndarray, seq_times: np.ndarray,
    ) -> None:
        """Each owner's last ``window`` items of the sequence become their window."""
        width = int(self.window)
        ends = np.searchsorted(seq_owner, np.arange(len(owners)), side="right")
        from_end = ends[seq_owner] - np.arange(len(seq_owner))  # 1 for the newest
        keep = from_end <= width
        items = np.full((len(owners), width), -1, dtype=np.int64)
        weights = np.zeros((len(owners), width), dtype=np.float64)
        times = np.zeros((len(owners), width), dtype=np.int64)
        items[seq_owner[keep], width - from_end[keep]] = seq_items[keep]
        weights[seq_owner[keep], width - from_end[keep]] = seq_weights[keep]
        times[seq_owner[keep], width - from_end[keep]] = seq_times[keep]
        self._win_items[owners] = items
        self._win_weights[owners] = weights
        self._win_times[owners] = times

    def _partial_fit(self, users: np.ndarray, items: np.ndarray, ratings: np.ndarray) -> None:
        """Feedback joins the live state as events at the clock, weighted by the rating, and
        the user's context (the tail) as their most recent items.
        """
        # Folded at the clock, not observed: before the first event past the training end
        # they would take the seed's re-time (retime_seed) with them (found in review).
        self._fold(self.user_ids_[users], items, ratings,
                   np.full(len(users), self.clock_, dtype=np.int64))
        width = int(self.window)
        touched = np.unique(users)
        old = self.tail_[touched].ravel()
        present = old >= 0
        groups = np.concatenate([np.repeat(np.arange(len(touched)), width)[present],
                                 np.searchsorted(touched, users)])  # fmt: skip
        self.tail_[touched] = _last_per_group(
            groups, np.concatenate([old[present], items]), len(touched), width)
        self.tail_ratings_[touched] = _last_per_group(
            groups, np.concatenate([self.tail_ratings_[touched].ravel()[present], ratings]),
            len(touched), width,
        )  # fmt: skip

    # ------------------------------------------------------------------ scoring
    def live_counts(self) -> np.ndarray:
        """The live counts decayed to the clock (the latest event), float64 ``(n_items_,)``."""
        return decayed_to(self.counts_, self.frame_, float(self.clock_), float(self.half_life))

    def _cold_scores(self) -> np.ndarray:
        return self.live_counts()

    @property
    def cold_start(self) -> str:
        """What :meth:`_cold_scores` gives a user without training ratings, in words."""
        return ("its time-decayed, rating-weighted training counts" if self.from_train else
                "its time-decayed, rating-weighted counts of the events observed")

    def _score(self, users: np.ndarray) -> np.ndarray:
        return self._score_contexts(self.tail_[users], self.tail_ratings_[users])

    def _score_history(
        self, user: int | None, items: np.ndarray, ratings: np.ndarray
    ) -> np.ndarray:
        width = int(self.window)
        if user is None:
            tail, tail_ratings = np.full(width, -1, np.int64), np.full(width, -1.0)
        else:
            tail, tail_ratings = self.tail_[user], self.tail_ratings_[user]
        context = np.concatenate([tail, items])[-width:]
        values = np.concatenate([tail_ratings, ratings])[-width:]
        # One row: the context items' rows of C summed densely (arms.base.weighted_row_sum),
        # the same sum as _score_contexts' sparse product up to float rounding, at a fraction
        # of its cost (scipy.sparse's slicing and product dominated a request's scoring).
        present = context >= 0
        rows, inverse = np.unique(context[present], return_inverse=True)
        weights = np.bincount(inverse.ravel(), weights=self._context_weights(values)[present],
                              minlength=len(rows))
        scores = weighted_row_sum(self._pairs, rows, weights)
        if self._pending and rows.size:
            pending_rows, pending_cols, pending_values = self._consolidated_pending()
            place = np.minimum(np.searchsorted(rows, pending_rows), len(rows) - 1)
            hit = rows[place] == pending_rows
            scores += np.bincount(pending_cols[hit], minlength=self.n_items_,
                                  weights=weights[place[hit]] * pending_values[hit])
        finished: np.ndarray = self._finished(scores[None, :])[0]
        return finished

    def _context_weights(self, ratings: np.ndarray) -> np.ndarray:
        """Each context column's weight (oldest first): the recency decay by age, signed by
        whether its rating is a like (>= 3) or a dislike.
        """
        width = ratings.shape[-1]
        age = width - np.arange(width)  # 1 for the newest column
        weights: np.ndarray = float(self.recency) ** (age - 1.0) * np.where(ratings >= 3, 1.0,
                                                                            -1.0)
        return weights

    def _score_contexts(self, contexts: np.ndarray, ratings: np.ndarray) -> np.ndarray:
        """Scores of rows of context items (``(n, window)``, oldest first, ``-1`` for none)."""
        n_rows, width = contexts.shape
        present = contexts >= 0
        weight = self._context_weights(ratings)
        row_index = np.repeat(np.arange(n_rows), width).reshape(n_rows, width)
        # Only the context items' rows of C are converted to float: a request costs the
        # context's share of the matrix, not all of it.
        rows, columns = np.unique(contexts[present], return_inverse=True)
        context = sp.csr_matrix(
            (weight[present], (row_index[present], columns.ravel())), shape=(n_rows, len(rows))
        )
        return self._finished(np.asarray((context @ self._pair_rows(rows)).toarray()))

    def _finished(self, scores: np.ndarray) -> np.ndarray:
        """Co-occurrence sums (rows of users) damped by item counts, scaled to at most 1 in
        absolute value, plus the live popularity term (in place).
        """
        counts = np.maximum(self.counts_.astype(np.float64), 1.0)
        scores /= counts ** float(self.damping)
        scale = np.abs(scores).max(axis=1, keepdims=True)
        scores /= np.where(scale > 0, scale, 1.0)
        if self.popularity_weight > 0:
            live = self.counts_.astype(np.float64)
            top = np.abs(live).max()
            scores += float(self.popularity_weight) * live / (top if top > 0 else 1.0)
        return scores

    # ------------------------------------------------------------------ growth, persistence
    def _grow(self, n_new: int) -> None:
        n = self.n_items_
        self.counts_ = np.concatenate([self.counts_, np.zeros(n_new, dtype=np.int64)])
        pairs = self.pairs_
        indptr = np.concatenate([pairs.indptr, np.full(n_new, pairs.indptr[-1])])
        self._pairs = sp.csr_matrix((pairs.data, pairs.indices, indptr), shape=(n, n))

    def _get_state(self) -> dict[str, np.ndarray]:
        return {
            "pairs_data": self.pairs_.data, "pairs_indices": self.pairs_.indices,
            "pairs_indptr": self.pairs_.indptr, "counts": self.counts_,
            "frame": np.asarray(self.frame_, dtype=np.int64),
            "clock": np.asarray(self.clock_, dtype=np.int64),
            # Only while pending: a state without it is the same bits as before retime_seed
            # existed, so rebuild-state's digests agree with workers of that code (review).
            **({"seed_pending": np.asarray(True)} if self.seed_pending_ else {}),
            "window_users": self.window_users_, "window_items": self.window_items_,
            "window_weights": self.window_weights_, "window_times": self.window_times_,
            "tail": self.tail_,
            "tail_ratings": self.tail_ratings_,
        }  # fmt: skip

    def _set_state(self, state: dict[str, np.ndarray]) -> None:
        n = self.n_items_
        self._pairs = sp.csr_matrix(
            (state["pairs_data"], state["pairs_indices"], state["pairs_indptr"]), shape=(n, n))
        self._pending = []
        self.counts_ = state["counts"].astype(np.int64)
        self.frame_, self.clock_ = int(state["frame"]), int(state["clock"])
        # Saved before the seed was re-timed (retime_seed; load says retime_seed=False): as it
        # was then, never re-timed.
        self.seed_pending_ = bool(state.get("seed_pending", False))
        items = state["window_items"].astype(np.int64)
        # Saved before the windows kept times: taken as of the clock, so that they pair as
        # they did then.
        times = state.get("window_times")
        self._set_windows(state["window_users"].astype(np.int64), items,
                          state["window_weights"].astype(np.float64),
                          np.full(items.shape, self.clock_, np.int64) if times is None
                          else times.astype(np.int64))
        self.tail_ = state["tail"].astype(np.int64)
        self.tail_ratings_ = state["tail_ratings"].astype(np.float64)


def _map_rows(values: np.ndarray, keys: np.ndarray, rows: np.ndarray) -> np.ndarray:
    """``rows[j]`` for each value equal to ``keys[j]`` (every value is among the keys)."""
    order = np.argsort(keys)
    mapped: np.ndarray = rows[order[np.searchsorted(keys, values, sorter=order)]]
    return mapped


def _last_per_group(
    groups: np.ndarray, values: np.ndarray, n_groups: int, width: int
) -> np.ndarray:
    """Each group's last ``width`` values in the given order, oldest first, ``-1`` on the left.

    ``groups`` need not be sorted; the order within a group is the order of the arrays. The
    result has ``values``' dtype, shape ``(n_groups, width)``.
    """
    order = np.argsort(groups, kind="stable")
    g, v = groups[order], values[order]
    ends = np.searchsorted(g, np.arange(n_groups), side="right")
    from_end = ends[g] - np.arange(len(g))
    keep = from_end <= width
    out = np.full((n_groups, width), -1, dtype=values.dtype)
    out[g[keep], width - from_end[keep]] = v[keep]
    return out
