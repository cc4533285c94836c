"""Arms that learn from every event at once, the same on every worker.

Events reach the arms in two ways, and neither refits anything:

**Per user, at request time.** A user's events within ``retention_s`` (read from the log on
every request, so every worker sees a user's latest event: read your writes) are scored by each
arm's :meth:`~arms.base.Recommender.score_history` with the implicit rating the rule book gives
each event: EASE from the updated history row, the sequential arm from the latest items, SVD by
folding in the user's factors. :func:`user_signals` turns the log's events into those arrays.

**Globally, as a fold of the log.** The arms that learn from the stream (``cooccurrence``, and
``popularity`` with a half-life) fold every event of every user in log order
(:func:`fold_log`), on every worker, from the arm fitted on the base catalogue: a worker that
starts (or restarts) folds the log from its start, one that runs folds what was logged since its
last refresh. Their states are deterministic functions of the events in log order (fixed-point
arithmetic, :mod:`arms.cooccurrence`), so every worker holds the same state at the same log
position, and ``rebuild-state`` could rebuild it from the log alone. Items added at run time
(``POST /admin/items``) are part of the same log: an arm that can grow learns an added item at
its position in the log, before any event on it.

After ``recbandits purge`` the events before the cut are gone: the fold starts from the live
arms the fold snapshot saved at its log position S (:func:`arm_bytes`, folded by
:func:`fold_live_arms` exactly as a worker folds) and takes the events after S.
"""

from __future__ import annotations

import hashlib
import math
import tempfile
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import NamedTuple

import numpy as np
import numpy.typing as npt

from arms.base import Recommender
from arms.data.dataset import Dataset
from serving.armset import ArmSet
from serving.rules import RuleBook
from serving.store.types import AddedItem, LogEvent, UserEvent


class UserSignals(NamedTuple):
    """A user's events as a request uses them (:func:`user_signals`).

    Attributes
    ----------
    items : ndarray of int64, shape ``(n,)``
        Universe indices of the events within retention the arms score, in log order (events
        on items the arm set does not know are left out, as are types the rule book gives no
        rating, and neutral ones: no reward and no session sign, such as a view).
    ratings : ndarray of float64, shape ``(n,)``
        Each of those events' implicit rating.
    excluded : ndarray of int64, shape ``(n_excluded,)``
        Universe indices of the items an event's type excludes from the user's slates (a like,
        dislike, click, rating or purchase; not a view), in log order, repeats kept.
    liked, disliked : ndarray of int64
        Universe indices of the session's events that pull the slates towards their genres
        (positive session sign) or push them away (negative).
    last_seq : int
        Log position of the user's latest event (0: none).
    """

    items: npt.NDArray[np.int64]
    ratings: npt.NDArray[np.float64]
    excluded: npt.NDArray[np.int64]
    liked: npt.NDArray[np.int64]
    disliked: npt.NDArray[np.int64]
    last_seq: int


def _frozen(array: np.ndarray) -> np.ndarray:
    array.flags.writeable = False
    return array


# A user without events (most requests) gets these shared read-only arrays: building five empty
# ones took ~2 us of a request (writing into one raises, so sharing them is safe).
_NO_ITEMS = _frozen(np.empty(0, dtype=np.int64))
_NO_SIGNALS = UserSignals(_NO_ITEMS, _frozen(np.empty(0, dtype=np.float64)), _NO_ITEMS,
                          _NO_ITEMS, _NO_ITEMS, 0)


def user_signals(events: Sequence[UserEvent], arm_set: ArmSet, rules: RuleBook, since: float,
                 session_since: float) -> UserSignals:
    """Everything a request reads of a user's events, in one walk over them.

    Parameters
    ----------
    events : sequence of UserEvent
        The user's events, in log order.
    arm_set : ArmSet
        Maps items to universe indices.
    rules : RuleBook
        Gives each event's implicit rating, session sign and exclusion.
    since : float
        Events stamped earlier are past retention: left out of ``items`` (the store's read
        already leaves them out).
    session_since : float
        Start of the session window: events stamped at or after it give ``liked`` and
        ``disliked``.

    Returns
    -------
    UserSignals
        Read-only empty arrays (shared) when ``events`` is empty.

    Raises
    ------
    ValueError
        As :meth:`RuleBook.worth`, for an event whose value its type cannot take.
    """
    if not events:
        return _NO_SIGNALS
    index = arm_set.item_index
    items: list[int] = []
    ratings: list[float] = []
    excluded: list[int] = []
    liked: list[int] = []
    disliked: list[int] = []
    for event in events:
        worth = rules.worth(event.event_type, event.value)
        position = index.get(event.movie_id)
        if position is None:
            continue
        if worth.excludes:
            excluded.append(position)
        at = event.created_at
        sign = worth.session_sign
        if at >= session_since:
            if sign > 0:
                liked.append(position)
            elif sign < 0:
                disliked.append(position)
        # A neutral signal (a view, a dwell): its implicit rating of about 3 would read as a
        # middling explicit rating to SVD and EASE and push the item down. It reaches the arms
        # that learn from the stream (fold_log) and the features instead. (So is an unknown
        # type.)
        if (at < since or (worth.reward is None and sign == 0) or worth.rating is None):
            continue
        items.append(position)
        ratings.append(worth.rating)
    return UserSignals(np.array(items, dtype=np.int64), np.array(ratings, dtype=np.float64),
                       np.array(excluded, dtype=np.int64), np.array(liked, dtype=np.int64),
                       np.array(disliked, dtype=np.int64), int(events[-1].seq))


def user_history(events: Sequence[UserEvent], arm_set: ArmSet, rules: RuleBook, since: float
                 ) -> tuple[npt.NDArray[np.int64], npt.NDArray[np.float64], int]:
    """A user's ``events`` stamped at or after ``since`` as the arms score them: ``(items,
    ratings, last_seq)`` of :func:`user_signals` with the same ``arm_set`` and ``rules`` (see
    :class:`UserSignals`).
    """
    signals = user_signals(events, arm_set, rules, since, math.inf)
    return signals.items, signals.ratings, signals.last_seq


def fold_log(arm_set: ArmSet, events: Sequence[LogEvent], added: Sequence[AddedItem],
             rules: RuleBook, catalog: Dataset) -> ArmSet:
    """Fold logged ``events`` and ``added`` items into ``arm_set``'s live arms, in log order.

    The live arms change in place (under the arm set's ``live_lock``); the arm set returned
    holds the added items in its universe (``arm_set`` itself when none were added).

    Parameters
    ----------
    arm_set : ArmSet
    events : sequence of LogEvent
        Events after the position already folded, in log order.
    added : sequence of AddedItem
        Items added after that position, in log order.
    rules : RuleBook
        Each event's weight for the stream (:meth:`~serving.rules.RuleBook.stream_weight`;
        a dislike, weight 0, is left out).
    catalog : Dataset
        The base catalogue (for the genres of the universe).
    """
    with arm_set.live_lock:
        arm_set.live_lock.generation += 1  # the live arms' cached rankings are now stale
        fold_models([arm_set.models[n] for n in arm_set.live_names], events, added, rules)
    if added:
        arm_set = arm_set.with_items(added, catalog)
    return arm_set


def fold_models(live: Sequence[Recommender], events: Sequence[LogEvent],
                added: Sequence[AddedItem], rules: RuleBook) -> None:
    """Fold ``events`` and ``added`` items into the ``live`` arms (changed in place), in log
    order: the arms' part of :func:`fold_log`, which ``rebuild-state`` runs without a catalogue.

    Parameters
    ----------
    live : sequence of Recommender
        Arms that learn from the stream.
    events, added : sequences of LogEvent, AddedItem
        What was logged after the position the arms hold, in log order.
    rules : RuleBook
    """
    marks = [a.seq for a in added]
    # Events between two additions are folded in one batch: the arms' states do not depend on
    # how the events are batched, only on their order.
    bounds = np.searchsorted(np.array([e.seq for e in events], dtype=np.int64),
                             np.array(marks, dtype=np.int64))
    start = 0
    for item, stop in zip([*added, None], [*bounds.tolist(), len(events)], strict=True):
        _observe(list(live), events[start:stop], rules)
        start = stop
        if item is not None:
            for model in live:
                if model.can_grow and item.item_id not in set(model.item_ids_.tolist()):
                    model.grow([item.item_id])


def state_digest(model: Recommender) -> str:
    """A SHA-256 of live arm ``model``'s state: its items and its ``_get_state`` arrays (name,
    dtype, shape and bytes, in name order). Two arms folded over the same log have the same digest
    (their states are exact: :mod:`arms.cooccurrence`), so ``rebuild-state`` compares a
    worker's arms with its own fold without shipping them.
    """
    digest = hashlib.sha256()
    arrays = {"item_ids": np.asarray(model.item_ids_), **model._get_state()}
    for name in sorted(arrays):
        value = np.ascontiguousarray(arrays[name])
        digest.update(f"{name}:{value.dtype.str}:{value.shape}:".encode())
        digest.update(value.tobytes())
    return digest.hexdigest()


def _observe(live: list, events: Sequence[LogEvent], rules: RuleBook) -> None:
    """Fold one run of events (no item added inside it) into every live arm."""
    if not live or not events:
        return
    users, items, weights, times = [], [], [], []
    worth = rules.worth  # remembered per (type, value): a fold's events repeat few of them
    for event in events:
        weight = worth(event.event_type, event.value).stream_weight  # 0: an unknown type
        if not weight:
            continue
        users.append(event.user_id)
        items.append(event.movie_id)
        weights.append(weight)
        times.append(int(event.created_at))
    if not items:
        return
    raw = np.array(items, dtype=np.int64)
    for model in live:
        # The arm's own index of each item (every logged item is in its catalogue: an event on
        # an unknown item is refused, and added items grew the arm before their events).
        order = np.argsort(model.item_ids_)
        own = order[np.minimum(np.searchsorted(model.item_ids_, raw, sorter=order),
                               order.size - 1)]
        unknown = model.item_ids_[own] != raw
        if unknown.any():
            raise ValueError(f"the live arm {type(model).__name__} does not know item "
                             f"{int(raw[unknown][0])}: the log's items must be folded first")
        model.observe(np.array(users, dtype=np.int64), own, np.array(weights),
                      np.array(times, dtype=np.int64))


def arm_bytes(model: Recommender) -> bytes:
    """``model`` as the bytes of its saved ``.npz`` (:meth:`~arms.base.Recommender.save`: the
    hyper-parameters, the items it has grown and its ``_get_state`` arrays): how a fold snapshot
    keeps a live arm.
    """
    with tempfile.TemporaryDirectory(prefix="recbandits-arm-") as folder:
        return model.save(Path(folder) / "arm.npz").read_bytes()


def arm_from_bytes(blob: bytes) -> Recommender:
    """The arm :func:`arm_bytes` saved in ``blob`` (its ``.npz`` bytes), bit for bit."""
    with tempfile.TemporaryDirectory(prefix="recbandits-arm-") as folder:
        path = Path(folder) / "arm.npz"
        path.write_bytes(blob)
        return Recommender.load(path)


def fold_live_arms(models: Mapping[str, Recommender], events: Sequence[LogEvent],
                   known: Sequence[AddedItem], added: Sequence[AddedItem], rules: RuleBook,
                   catalog: Dataset) -> dict[str, Recommender]:
    """The live arms ``models`` (changed in place) after folding ``events`` and ``added``
    items in log order, exactly as a worker folds them (:func:`fold_log`): what ``recbandits
    purge`` keeps in its fold snapshot.

    Parameters
    ----------
    models : mapping of str to Recommender
        Arms that learn from the stream, at the position the events follow (their base fits,
        or the previous snapshot's).
    events, added : sequences of LogEvent, AddedItem
        What was logged after that position, in log order.
    known : sequence of AddedItem
        Items added up to that position (the arms have grown them already).
    rules : RuleBook
    catalog : Dataset
        The base catalogue.
    """
    if not models:
        return {}
    arm_set = ArmSet.build(models, catalog, version=0, cold_start_arm=next(iter(models)),
                           added=known)
    folded = fold_log(arm_set, events, added, rules, catalog)
    return {n: folded.models[n] for n in models}


__all__ = ["UserSignals", "arm_bytes", "arm_from_bytes", "fold_live_arms", "fold_log",
           "fold_models", "state_digest", "user_history", "user_signals"]
