"""What a request reads of a user, kept until it can change: signals and context per user.

Every request turns the user's events and stated genres into the arrays the arms score
(:func:`serving.live.user_signals`) and the policy's context (:class:`FeatureStore`). Between
two of the user's events, both are functions of time alone, and they move only when

- an event leaves a window it is in: the retention window of the arms' signals
  (``retention_s``) or of the features (the feature store's own), or the session window
  (``session_window_s``), or
- the features' decay moves to the user's next step (:meth:`FeatureStore.decay_expiry`).

:class:`UserViews` keeps each user's pair with the first of those times and hands it out again
while the user's events (the same log positions), stated genres and the arm set's universe are
the ones it was built from and that time has not come: the same arrays a fresh computation
would give, bit for bit (tested). Without it a returning user's request rebuilt both (a walk
over their events and a fold), and a context rebuilt at a later time (``user-v2``'s decay moved
every second or two) missed the policy's probability cache as well.
"""

from __future__ import annotations

import hashlib
import weakref
from collections import OrderedDict
from collections.abc import Sequence
from dataclasses import dataclass, field
from operator import attrgetter

import numpy as np
import numpy.typing as npt

from bandits.errors import check_int
from serving.armset import ArmSet
from serving.features import DEFAULT_CACHE_USERS, FeatureStore
from serving.live import UserSignals, user_signals
from serving.rules import RuleBook
from serving.store.base import json_text
from serving.store.types import UserEvent

#: A history handed out as a tuple of at most this many events is kept by reference: the next
#: request that gets the same tuple (SQLite's kept answer, serving.store.sqlite) is known by
#: identity. Longer ones, and lists, are known by a digest of their log positions only.
IDENTITY_EVENTS = 256
#: Most events all of a worker's views keep by reference (about 13 MB; SQLite keeps its own
#: answers within a budget of 250,000 events, which a view must not extend: at 10,000 users x
#: 256 events the references kept 713 MiB alive). Beyond it a view keeps the digest only, and
#: its user's next request computes a digest too (~3 us for 25 events, 85 us for 1,000).
IDENTITY_BUDGET = 65_536

_SEQ = attrgetter("seq")
_CREATED_AT = attrgetter("created_at")


def history_digest(history: Sequence[UserEvent]) -> bytes:
    """A digest of the log positions of ``history`` (events are immutable and each seq is one
    event's, so equal digests mean the same events, in the same order).
    """
    seqs = np.fromiter(map(_SEQ, history), dtype=np.int64, count=len(history))
    return hashlib.blake2b(seqs.tobytes(), digest_size=16).digest()


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
    blind : bool
        The features met an event on an item they do not know (added by another worker and
        not yet read by this one: :meth:`FeatureStore.context`).
    """

    signals: UserSignals
    features: npt.NDArray[np.float64]
    built: float
    expires: float
    blind: bool = False
    # The last context_json: ((feature_version, k), text). One entry, so that a user asking
    # for every k keeps ~1 KB, not 100: 1.0 KB a view with a 50-value context (text, key and
    # dict), ~10 MB a worker at the default 10,000 users kept.
    _context: dict[tuple[str, int], str] = field(default_factory=dict, compare=False,
                                                 repr=False)

    def context_json(self, feature_version: str, k: int) -> str:
        """The decision's logged context ``{"feature_version", "features", "k"}`` as the JSON
        text the store writes (:func:`~serving.store.base.json_text`), serialised once per view
        and ``k``: the view's features do not change, and every request of the user until
        the view ends logs the same text (50 floats: ~1.4 us a serialisation).

        Parameters
        ----------
        feature_version : str
            The feature set's version (``FeatureStore.version``).
        k : int
            The slate size asked for.

        Returns
        -------
        str
            Equal to ``json_text`` of the context dict built afresh.
        """
        key = (feature_version, k)
        text = self._context.get(key)
        if text is None:
            text = json_text({"feature_version": feature_version, "features": self.features,
                              "k": k})
            self._context.clear()
            self._context[key] = text
        return text


@dataclass(slots=True)
class _Entry:
    history: tuple[UserEvent, ...] | None  # see IDENTITY_EVENTS
    length: int
    digest: bytes | None  # history_digest (computed when first needed if history is kept)
    stated: tuple[str, ...] | None
    universe: weakref.ref[ArmSet]  # a swapped-out arm set is not kept alive by a view
    view: UserView


class UserViews:
    """Each user's :class:`UserView`, kept between requests (one per worker; not thread-safe:
    the service uses it from its event loop only).

    Parameters
    ----------
    features : FeatureStore
        Builds the context (its retention window is the features' one).
    rules : RuleBook
    retention_s, session_window_s : float
        The windows of the arms' signals (the service's ``Settings``).
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
        self.features = features
        self.rules = rules
        self.retention_s = retention_s
        self.session_window_s = session_window_s
        self.history_limit = history_limit
        self.max_users = check_int(max_users, "max_users")
        # Every window an event's time is compared with: one edge each (module doc).
        windows = {retention_s, session_window_s}
        if features.cache.retention_s is not None:
            windows.add(features.cache.retention_s)
        self._windows = np.array(sorted(windows))
        self._entries: OrderedDict[int, _Entry] = OrderedDict()
        self._referenced = 0  # events the entries keep by reference (IDENTITY_BUDGET)

    def __len__(self) -> int:
        return len(self._entries)

    def clear(self) -> None:
        """Forget every kept view: each user's next view is built anew (a benchmark's cold pass)."""
        self._entries.clear()
        self._referenced = 0

    def view(self, user_id: int, history: Sequence[UserEvent], stated: Sequence[str] | None,
             now: float, arm_set: ArmSet) -> UserView:
        """``user_id``'s view at ``now``: the kept one if it still holds, else built afresh.

        Parameters
        ----------
        user_id : int
        history : sequence of UserEvent
            The user's events the store read for this request, in log order
            (``Store.user_context``; never changed afterwards).
        stated : sequence of str or None
            Their stated genres (None if never stated).
        now : float
            Unix seconds.
        arm_set : ArmSet
            The arm set serving the request (its universe maps items to indices).

        Returns
        -------
        UserView
            Equal, array for array, to one built afresh at ``now``.
        """
        entry = self._entries.get(user_id)
        if (entry is not None and entry.view.built <= now < entry.view.expires
                and entry.universe() is arm_set
                and entry.stated == (None if stated is None else tuple(stated))
                and self._same_history(entry, history)):
            self._entries.move_to_end(user_id)
            return entry.view
        view = self._build(user_id, history, stated, now, arm_set)
        if entry is not None:
            self._keep(entry, None)
        fresh = _Entry(None, len(history), None, None if stated is None else tuple(stated),
                       weakref.ref(arm_set), view)
        self._keep(fresh, history)
        if fresh.history is None:
            fresh.digest = history_digest(history)
        self._entries[user_id] = fresh
        self._entries.move_to_end(user_id)
        if len(self._entries) > self.max_users:
            self._keep(self._entries.popitem(last=False)[1], None)
        return view

    def _keep(self, entry: _Entry, history: Sequence[UserEvent] | None) -> None:
        """Make ``entry`` keep ``history`` by reference if it may (:data:`IDENTITY_EVENTS`,
        :data:`IDENTITY_BUDGET`), else nothing; the budget follows.
        """
        if entry.history is not None:
            self._referenced -= len(entry.history)
            entry.history = None
        if (history is not None and type(history) is tuple
                and len(history) <= IDENTITY_EVENTS
                and self._referenced + len(history) <= IDENTITY_BUDGET):
            entry.history = history
            self._referenced += len(history)

    def _same_history(self, entry: _Entry, history: Sequence[UserEvent]) -> bool:
        """Whether ``history`` holds the events ``entry`` was built from: the same tuple (see
        :data:`IDENTITY_EVENTS`) or the same log positions.
        """
        if history is entry.history:
            return True
        if len(history) != entry.length:
            return False
        if entry.digest is None:
            assert entry.history is not None  # kept by reference, else digested when built
            entry.digest = history_digest(entry.history)
        if history_digest(history) != entry.digest:
            return False
        self._keep(entry, history)  # the next request likely hands this one again
        return True

    def _build(self, user_id: int, history: Sequence[UserEvent], stated: Sequence[str] | None,
               now: float, arm_set: ArmSet) -> UserView:
        signals = user_signals(history, arm_set, self.rules, now - self.retention_s,
                               now - self.session_window_s)
        features, blind = self.features.context(user_id, history, stated, now,
                                                cached=len(history) < self.history_limit)
        features.flags.writeable = False
        expires = self.features.decay_expiry(user_id, now)
        if history:
            # The first time an event leaves a window it is in now (at + w; still in at the
            # edge itself, so the view is rebuilt there: never late).
            times = np.fromiter(map(_CREATED_AT, history), dtype=np.float64,
                                count=len(history))
            edges = times[:, None] + self._windows
            inside = times[:, None] >= now - self._windows
            if inside.any():
                expires = min(expires, float(edges[inside].min()))
        return UserView(signals, features, now, expires, blind)


__all__ = ["IDENTITY_BUDGET", "IDENTITY_EVENTS", "UserView", "UserViews", "history_digest"]
