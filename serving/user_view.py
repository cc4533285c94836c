"""What a request reads of a user, kept until it can change: signals and context per user.

Every request turns the user's events and stated genres into the arrays the arms score
(:func:`serving.live.user_signals`) and the policy's context (:class:`FeatureStore`). Between
two of the user's events, both are functions of time alone, and they move only when

- an event leaves the retention window (``at + retention_s``), or the session window
  (``at + session_window_s``), or
- the features' decay moves to its next step (:meth:`BehaviourSpec.decay_expiry`).

:class:`UserViews` keeps each user's pair with the first of those times and hands it out again
while the user's events, stated genres and the arm set are the ones it was built from and that
time has not come: the same arrays a fresh computation would give, bit for bit (tested). On the
real-time bench's returning users the pair cost 30-45 us of a ~350 us request to rebuild, and a
context rebuilt at a later time (``user-v2``'s decay moved every second or two) missed the
policy's probability cache as well.
"""

from __future__ import annotations

from collections import OrderedDict
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
import numpy.typing as npt

from serving.armset import ArmSet
from serving.features import DEFAULT_CACHE_USERS, FeatureStore
from serving.live import UserSignals, user_signals
from serving.rules import RuleBook
from serving.store.types import UserEvent


@dataclass(frozen=True, slots=True)
class UserView:
    """A user's signals and context as of a request (see the module doc).

    Attributes
    ----------
    signals : UserSignals
    features : ndarray of float64, shape ``(d,)``
        Read-only: shared by every request served from this view.
    built : float
        The request time it was built at (Unix seconds).
    expires : float
        Unix seconds from which the view may differ from a fresh one (so does any time before
        ``built``: a clock set back).
    """

    signals: UserSignals
    features: npt.NDArray[np.float64]
    built: float
    expires: float


@dataclass(slots=True)
class _Entry:
    history: Sequence[UserEvent]
    seqs: tuple[int, ...] | None  # built on the first lookup that gets another list object
    stated: Sequence[str] | None
    arm_set: ArmSet
    view: UserView


class UserViews:
    """Each user's :class:`UserView`, kept between requests (one per worker; not thread-safe:
    the service uses it from its event loop only).

    Parameters
    ----------
    features : FeatureStore
    rules : RuleBook
    retention_s, session_window_s : float
        The service's windows (``Settings``).
    history_limit : int
        The service's ``history_limit``: a history that long was cut by the store's read, so
        its features are folded afresh (:meth:`FeatureStore.vector`'s ``cached=False``).
    max_users : int, default :data:`~serving.features.DEFAULT_CACHE_USERS`
        Least recently used users are dropped beyond this.

    Raises
    ------
    TypeError, ValueError
        ``max_users`` not an int >= 1.
    """

    def __init__(self, features: FeatureStore, rules: RuleBook, *, retention_s: float,
                 session_window_s: float, history_limit: int,
                 max_users: int = DEFAULT_CACHE_USERS) -> None:
        if isinstance(max_users, bool) or not isinstance(max_users, int):
            raise TypeError(f"max_users must be an int, got {type(max_users).__name__}")
        if max_users < 1:
            raise ValueError(f"max_users must be >= 1, got {max_users}")
        self.features = features
        self.rules = rules
        self.retention_s = retention_s
        self.session_window_s = session_window_s
        self.history_limit = history_limit
        self.max_users = max_users
        self._entries: OrderedDict[int, _Entry] = OrderedDict()

    def __len__(self) -> int:
        return len(self._entries)

    def clear(self) -> None:
        """Forget every user (the next request of each builds afresh)."""
        self._entries.clear()

    def view(self, user_id: int, history: Sequence[UserEvent], stated: Sequence[str] | None,
             now: float, arm_set: ArmSet) -> UserView:
        """``user_id``'s view at ``now``: the kept one if it still holds, else built afresh.

        Parameters
        ----------
        user_id : int
        history : sequence of UserEvent
            The user's events the store read for this request, in log order
            (``Store.user_context``).
        stated : sequence of str or None
            Their stated genres (None if never stated).
        now : float
            Unix seconds.
        arm_set : ArmSet
            The arm set serving the request (its universe maps items to indices).
        """
        entry = self._entries.get(user_id)
        if (entry is not None and entry.view.built <= now < entry.view.expires
                and entry.arm_set is arm_set
                and entry.stated == stated and self._same_history(entry, history)):
            self._entries.move_to_end(user_id)
            return entry.view
        view = self._build(user_id, history, stated, now, arm_set)
        self._entries[user_id] = _Entry(history, None, stated, arm_set, view)
        self._entries.move_to_end(user_id)
        if len(self._entries) > self.max_users:
            self._entries.popitem(last=False)
        return view

    @staticmethod
    def _same_history(entry: _Entry, history: Sequence[UserEvent]) -> bool:
        """Whether ``history`` holds the events ``entry`` was built from: the same list object
        (SQLite's kept answer, :mod:`serving.store.event_marks`) or the same log positions
        (events are immutable and every seq is one event's).
        """
        if history is entry.history:
            return True
        if len(history) != len(entry.history):
            return False
        if entry.seqs is None:
            entry.seqs = tuple(e.seq for e in entry.history)
        if tuple(e.seq for e in history) != entry.seqs:
            return False
        entry.history = history  # the next request's list is likely this one again
        entry.seqs = None
        return True

    def _build(self, user_id: int, history: Sequence[UserEvent], stated: Sequence[str] | None,
               now: float, arm_set: ArmSet) -> UserView:
        since = now - self.retention_s
        session_since = now - self.session_window_s
        signals = user_signals(history, arm_set, self.rules, since, session_since)
        features = self.features.vector(user_id, history, stated, now,
                                        cached=len(history) < self.history_limit)
        features.flags.writeable = False
        expires = self.features.spec.decay_expiry(now)
        for event in history:  # the first time an event leaves a window it is in now
            at = event.created_at
            if at >= since:
                expires = min(expires, at + self.retention_s)
            if at >= session_since:
                expires = min(expires, at + self.session_window_s)
        return UserView(signals, features, now, expires)


__all__ = ["UserView", "UserViews"]
