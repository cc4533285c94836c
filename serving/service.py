"""The service's domain logic: route a request through the policy, attribute feedback, retrain.

Routes call :class:`RecommendationService` and hold no modelling logic. The service keeps its
derived state in immutable values, each swapped by reference in one assignment, so a request
reads a consistent one: the :class:`~serving.armset.ArmSet` (changed by a retrain, a version
switch or the live arms' fold); the live policy as one ``(PolicyModel, PolicySnapshot,
description)`` triple (a promotion swaps model and snapshot together), the snapshot being the
served policy after folding the log's outcomes up to a log position; and, with a shadow policy,
the shadow's triple (:mod:`serving.shadow`). The refresher thread advances the snapshots every
``refresh_interval_s`` (sooner after this worker's own feedback decided an outcome) by folding
the outcomes logged since (see :mod:`serving.policy` for why that is exact), under the advance
lock, which also guards the drift monitor (:mod:`serving.drift`) folded with them.

Every decision logs the context the policy saw (:mod:`serving.features`), the probability of
every arm under that context, and the policy's name and hyper-parameters. Feedback is worth what
the rule book (:mod:`serving.rules`) says; the store decides each decision's one reward once.

Cold start: a user id the arms do not know (not in the training catalogue) is served, under a
context-free policy, the popularity ranking of ``cold_start_arm`` outside the policy: the
decision is logged with propensity 1 and ``cold_start = true``; feedback on it is stored (and
kept as a rating for the next retrain, after which the user is known) but updates no arm. A
contextual policy chooses the arm for them from their features, as for anyone. Either way the
genres the user stated (``PUT /users/{id}/preferences``) go first in that arm's ranking until
their session has a like or a dislike (:meth:`RecommendationService._newcomer_top`,
:meth:`serving.armset.ArmSet.preferred_ranking`).
"""

from __future__ import annotations

import asyncio
import contextlib
import functools
import hashlib
import logging
import math
import os
import sys
import threading
import time
from collections.abc import Callable, Iterator, Mapping, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from typing import TYPE_CHECKING, Literal, ParamSpec, Protocol, TypeVar, overload

import numpy as np
import numpy.typing as npt

from arms.base import Recommender
from arms.data.dataset import Dataset
from arms.errors import unknown_id_message
from bandits.multileave import order_probability
from serving import shadow, versions
from serving.armset import (
    ArmSet,
    Ranking,
    UnknownItemsError,
    arms_folder,
    load_arms,
    missing_arms,
    params_differ,
    top_k_row,
)
from serving.drift import alarms_silenced
from serving.errors import (
    EventConflictError,
    EventNotFoundError,
    InvalidInputError,
    ItemExistsError,
    PromotionRefusedError,
    ServingError,
    StoreUnavailableError,
)
from serving.errors import iso_time as _iso
from serving.features import FeatureStore
from serving.ids import new_event_id
from serving.live import arm_from_bytes, fold_log, state_digest
from serving.multileave import (
    MultileaveView,
    choose,
    draft,
    item_arm,
    multileave_view,
    set_name,
)
from serving.policy import PolicyModel, PolicySnapshot, draw_arm
from serving.retrain_trigger import HeldLease, hold_retrain_lease
from serving.retries import RetryCheck, instant, instant_range
from serving.rules import ALREADY_DECIDED, RuleBook
from serving.rules import decided_note as rules_decided_note
from serving.schemas import EventIn, FeedbackIn
from serving.settings import Settings, say_seconds
from serving.store import FeedbackResult, FeedbackWrite, Store
from serving.store.errors import StoreAccessError, store_timed_out
from serving.store.types import (
    AddedItem,
    JsonObject,
    LogEvent,
    ModelVersion,
    Outcome,
    Row,
    UserEvent,
    VersionSwitch,
)
from serving.store.watch import StoreWatch
from serving.store.writer import longest_write_wait
from serving.user_view import UserView, UserViews
from serving.versions import RetrainResult

if TYPE_CHECKING:  # only for annotations: the group reader lives in the backend module
    from serving.store.postgresql import GroupReader

logger = logging.getLogger(__name__)

T = TypeVar("T")
P = ParamSpec("P")

#: A version whose arms could not be loaded is tried again after 1 s, then 2, 4, ... up to
#: 60 s (a published version a worker cannot load must not fail ~10 times a second forever).
LOAD_BACKOFF_S = 1.0
LOAD_BACKOFF_CAP_S = 60.0

#: How often a request waiting on a thread's store call looks whether the store has left a
#: call unanswered for too long (RecommendationService.in_thread).
WATCH_POLL_S = 0.05

#: The back-off's clock (a test substitutes a fake one).
_clock: Callable[[], float] = time.monotonic


@dataclass(frozen=True)
class LoadFailure:
    """A version whose arms could not be loaded, kept in one value so that its error is
    always its own and goes with it when a later load succeeds.

    Attributes
    ----------
    version : int
        The version whose arms failed to load.
    attempts : int
        Failed attempts so far; 0 while its arms wait for items this worker has not folded
        yet (not an error: ``GET /admin/live-state`` does not show it).
    retry_at : float
        The back-off clock's (``_clock``) time of the next attempt.
    error : str
        The ``repr`` of the exception that stopped the last attempt.
    """

    version: int
    attempts: int
    retry_at: float
    error: str


@dataclass  # not frozen: a frozen dataclass's __init__ took 3.1 against 0.8 us (timeit)
class Recommendation:
    """A served decision (logged as ``event_id``): the user, the arm, its propensity, the items.

    Made per request and only written out (the response's fields, in order).

    Attributes
    ----------
    event_id : str
    user_id : int
    arm : str
        The arm, or a multileaved slate's set of arms joined by ``+``.
    propensity : float
        Probability the policy had of choosing ``arm`` (the set).
    policy_version : int
    cold_start : bool
        True when popularity served an unknown user outside the policy.
    items : list of dict
        The slate, as :class:`serving.schemas.RecommendedItem` fields.
    """

    event_id: str
    user_id: int
    arm: str
    propensity: float
    policy_version: int
    cold_start: bool
    items: list[JsonObject]


class Writer(Protocol):
    """What the service needs of the store writer (the app's
    :class:`~serving.store.writer.GroupCommitWriter`): each call returns once its write is
    committed; ``reader`` is the store's group reader when the writer runs one.
    """

    reader: GroupReader | None

    async def write_decision(self, row: Row) -> None:
        """Queue the decision ``row``; return when it is committed."""

    async def write_feedback(self, write: FeedbackWrite) -> FeedbackResult:
        """Queue the feedback ``write``; return its result once committed."""

    async def write_events(self, writes: list[FeedbackWrite]) -> list[FeedbackResult]:
        """Queue one request's writes (one transaction); return their results once committed."""


class RecommendationService:
    """Everything the routes need, for one worker process.

    Parameters
    ----------
    settings : Settings
    store : Store
    catalog : Dataset
        The base training data (MovieLens or synthetic): item titles and genres, and what a
        retrain starts from.
    arm_set : ArmSet
        The arms of the current policy version.
    policy_model : PolicyModel, optional
        The served policy (default: ``settings.policy_model`` for the feature set).
    features : FeatureStore, optional
        The context of each request, feature set ``user-v4`` (default: built from ``catalog``
        and the rules, with the settings' half-life, decay step and retention).
    rules : RuleBook, optional
        Default: ``settings.rule_book()``.
    """

    def __init__(self, settings: Settings, store: Store, catalog: Dataset, arm_set: ArmSet,
                 policy_model: PolicyModel | None = None, features: FeatureStore | None = None,
                 rules: RuleBook | None = None) -> None:
        self.settings = settings
        self.store = store
        self.catalog = catalog
        self.arm_set = arm_set
        self.rules = rules if rules is not None else settings.rule_book()
        self.features = features if features is not None else FeatureStore(
            catalog, self.rules, half_life_s=settings.feature_half_life_s,
            decay_step_s=settings.feature_decay_step_s, retention_s=settings.retention_s)
        # The genres of the items the arm set was built with (added at run time): the rest
        # as the refreshes fold them (_learn_items).
        self.features.learn(arm_set.added)
        # Each user's signals and context, kept until their events or a window's edge move
        # them (serving.user_view).
        self.user_views = UserViews(self.features, self.rules,
                                    retention_s=settings.retention_s,
                                    session_window_s=settings.session_window_s,
                                    history_limit=settings.history_limit)
        model = (policy_model if policy_model is not None
                 else settings.policy_model(self.features.dimension))
        # The live policy, its snapshot and its description (logged with every decision:
        # serialised once) in one tuple swapped whole: a request reads it once, so a promotion
        # (serving.shadow) never pairs one policy's snapshot with the other's model.
        self._live: tuple[PolicyModel, PolicySnapshot, str] = (
            model, model.advance(None, [], {}, arm_set.version), shadow.describe(model))
        # The shadow policy (serving.shadow), the same way; None without one.
        self._shadow = self._shadow_of(settings)
        # The log position the shadow's fold starts at: the latest fold snapshot's it saw
        # (a purge keeps no shadow state: every fold of it starts afresh there).
        self._shadow_start = 0
        self._promotion_id = 0  # the latest promotion followed (serving.shadow)
        self.rng = np.random.default_rng(settings.seed)
        # The live holdout (None: none) and the drift monitor, a fold of the outcomes.
        self.holdout = settings.holdout()
        self.drift = settings.drift_monitor()
        self.writer: Writer | None = None  # set by the app's lifespan (GroupCommitWriter)
        # The store work requests hand to threads (health, /policy, /metrics, the admin reads,
        # the preferences, an added item: in_thread): the request-path reads of a PostgreSQL
        # store are batched on the event loop instead (see _read).
        self.readers = ThreadPoolExecutor(max_workers=4, thread_name_prefix="recbandits-read")
        # The store writes requests hand to threads (preferences, an added item: write_in_thread)
        # have their own, as many as Starlette's pool they ran in before: a read never queues
        # behind writes waiting for SQLite's lock (found by attack: /policy and the
        # preferences' GET were 503s behind 30 PUTs while the lock was held).
        self.writers = ThreadPoolExecutor(max_workers=40, thread_name_prefix="recbandits-write")
        # The store calls in flight in the reader threads and the refresher's (in_thread's
        # time-out), and in the writer threads (write_in_thread's): a read is not timed on a
        # write's wait for the lock.
        self.store_watch = StoreWatch()
        self.write_watch = StoreWatch()
        self._advance_lock = threading.Lock()
        self._loading: threading.Thread | None = None
        # The version that failed to load (None: none): retried with exponential back-off,
        # logged once; live_state says it.
        self._load_failure: LoadFailure | None = None
        self._retrain_lock = threading.Lock()
        self._refresh_wanted = threading.Event()
        self._stopping = threading.Event()
        self._refresher: threading.Thread | None = None
        self.on_decision: Callable[[str], None] = lambda arm: None
        # The DATE of the latest purge this worker's folds resumed from (-inf: none): an event
        # stamped before it is refused (_event_time).
        self.purged_before = -math.inf
        # Log positions of the last event and added item folded into the arm set.
        self.live_seq = 0
        self.items_seq = 0
        # A fold of the live arms failed part-way: they start again (_restart_live_folds).
        self._live_broken = False
        # (log head, policy, live and item positions, live arms?) after the last refresh that
        # read the tails: the same again means its tails would be empty (refresh).
        self._tails_read: tuple[int, int, int, int, bool] | None = None
        # slate_mode "multileave": the set chooser of the current snapshot (serving.multileave).
        self._multileave = settings.slate_mode == "multileave"
        self._multileave_view: MultileaveView | None = None

    @property
    def policy_model(self) -> PolicyModel:
        """The live policy's model."""
        return self._live[0]

    @property
    def snapshot(self) -> PolicySnapshot:
        """The live policy's snapshot (the fold of the log up to its ``seq``)."""
        return self._live[1]

    @snapshot.setter
    def snapshot(self, value: PolicySnapshot) -> None:
        self._live = (self._live[0], value, self._live[2])

    @property
    def _policy_json(self) -> str:
        return self._live[2]

    def _shadow_of(self, settings: Settings
                   ) -> tuple[PolicyModel, PolicySnapshot, str] | None:
        """``settings``' shadow policy, fresh at the live snapshot's log position (it is folded
        there by the caller); None without one.
        """
        model = settings.shadow_model(self.features.dimension)
        if model is None:
            return None
        return model, model.advance(None, [], {}, self.arm_set.version), shadow.describe(model)

    def start(self) -> None:
        """Log the feature set's names, read the state once, then keep it fresh in a
        background thread.
        """
        self.store.register_feature_set(self.features.version, self.features.names)
        with alarms_silenced():  # its alarms were logged when a worker's fold raised them
            self.refresh()
        held = {arm: n for arm, n in self.drift.alarm_counts().items() if n}
        if held:
            logger.info("drift: the log up to position %d holds %d alarm(s) since log position "
                        "%d (per arm %s), logged when they were raised; GET /policy shows them",
                        self.drift.seq, sum(held.values()), self.drift.start, held)
        self.arm_set.warm()  # before the first request, so none pays for scoring
        self._refresher = threading.Thread(target=self._refresh_loop, daemon=True,
                                           name="recbandits-refresh")
        self._refresher.start()

    def close(self) -> None:
        """Stop the refresher thread (waiting up to 5 s) and the read pool (not waiting)."""
        self._stopping.set()
        self._refresh_wanted.set()
        if self._refresher is not None:
            self._refresher.join(5)
        # Not waiting: a call stuck on a store that does not answer must not hold the
        # shutdown (its request was answered 503 already); queued ones never run.
        self.readers.shutdown(wait=False, cancel_futures=True)
        self.writers.shutdown(wait=False, cancel_futures=True)

    @contextlib.contextmanager
    def _advancing(self) -> Iterator[None]:
        """Hold the advance lock (the folds of the log, the arm-set swap, the drift monitor);
        its wait is not the store's (:meth:`StoreWatch.paused`).
        """
        with self.store_watch.paused():
            self._advance_lock.acquire()
        try:
            yield
        finally:
            self._advance_lock.release()

    def policy_changed(self) -> None:
        """Ask for an early refresh (this worker just committed counted feedback)."""
        self._refresh_wanted.set()

    def _refresh_loop(self) -> None:
        # At most one rebuild per refresh interval: the selection probabilities cost ~20 ms.
        # Idle, a worker rebuilds every interval; asked early (its own counted feedback), it
        # rebuilds as soon as an interval has passed since the last rebuild. Either way another
        # worker's feedback reaches this worker's policy within one interval (plus ~20 ms).
        interval = self.settings.refresh_interval_s
        outage = False
        last = time.monotonic()
        while not self._stopping.is_set():
            self._refresh_wanted.wait(max(0.0, last + interval - time.monotonic()))
            if self._stopping.wait(max(0.0, last + interval - time.monotonic())):
                return
            self._refresh_wanted.clear()
            last = time.monotonic()
            try:
                with self.store_watch.call():  # a request waiting for it times out on it
                    self.refresh()
            except StoreUnavailableError as exc:  # once per outage, not once per tick
                if not outage:
                    logger.warning("cannot refresh the policy until the store is back: %s",
                                   exc.message)
                outage = True
            except Exception:  # must not kill the thread; next tick retries
                logger.exception("refreshing the policy from the store failed")
            else:
                if outage:
                    logger.warning("the store is back; policy refreshed")
                outage = False

    # The store reads the service makes, by name (the group reader batches them by name).
    @overload
    async def _read(self, kind: Literal["ping"], /) -> None: ...
    @overload
    async def _read(self, kind: Literal["user_feedback"],
                    user_id: int, /) -> list[UserEvent]: ...
    @overload
    async def _read(self, kind: Literal["user_context"], user_id: int, since: float,
                    limit: int, /) -> tuple[list[UserEvent], list[str] | None]: ...
    @overload
    async def _read(self, kind: Literal["user_preferences"],
                    user_id: int, /) -> tuple[list[str], float] | None: ...
    @overload
    async def _read(self, kind: Literal["decision"], event_id: str, /) -> Row | None: ...
    @overload
    async def _read(self, kind: Literal["latest_decision_showing"], user_id: int,
                    movie_id: int, since: float, until: float, /) -> Row | None: ...

    async def _read(self, kind: str, *args: object) -> object:
        """``Store.<kind>(*args)``, read where it is cheapest for this store.

        A store whose reads are cheap enough runs them inline (``Store.inline_reads``: an
        indexed read of a local SQLite file in WAL mode takes ~10 us and never waits for the
        writer). Otherwise the request-path reads (the group reader's kinds) join the writer's
        group reader if the store has one (PostgreSQL: one query per batch on the event loop);
        any other read goes to a thread.
        """
        if self.store.inline_reads:
            return getattr(self.store, kind)(*args)
        reader = self.writer.reader if self.writer is not None else None
        if reader is not None and kind in reader.KINDS:
            return await reader.read(kind, *args)
        return await self.in_thread(getattr(self.store, kind), *args)

    async def in_thread(self, call: Callable[P, T], *args: P.args, **kwargs: P.kwargs) -> T:
        """``call(*args, **kwargs)`` (store work that only reads) in the reader threads,
        answered 503 once the store has left a call unanswered for ``store_timeout_s``.

        Every store call a request hands to a thread goes through here or
        :meth:`write_in_thread`: a server that stops answering without closing the connection
        (frozen, a stalled disk) fires no socket, server or lock time-out, and the thread cannot
        be interrupted, so the request stops waiting for it (found by attack: ``/health``,
        ``/metrics``, ``/policy``, the admin reads and the preferences hung the whole 30 s a
        PostgreSQL server was stopped). What is timed is how long the store has left a call of
        this worker unanswered (:class:`~serving.store.watch.StoreWatch`: this one's, one it
        queues behind, or the refresher's it waits for), not the waits for the service's own
        locks, which a retrain publishing its arms holds for seconds.

        Raises
        ------
        StoreUnavailableError
            The store left a call unanswered for ``store_timeout_s``.
        """
        return await self._watched(self.settings.store_timeout_s, self.readers,
                                   self.store_watch, functools.partial(call, *args, **kwargs))

    async def write_in_thread(self, call: Callable[P, T], *args: P.args,
                              **kwargs: P.kwargs) -> T:
        """:meth:`in_thread` for store work that writes: it waits as long as a queued write
        may (:func:`~serving.store.writer.longest_write_wait`), past the store's own lock
        time-out, so a write refused by the store is refused by it (nothing written), and a 503
        from here means the store stopped answering: the write may then still commit, as one
        whose answer a lost connection cut off (a retry must be safe: the preferences' ``PUT``
        replaces, an added item answers 409).
        """
        return await self._watched(longest_write_wait(self.settings.store_timeout_s),
                                   self.writers, self.write_watch,
                                   functools.partial(call, *args, **kwargs))

    async def _watched(self, timeout: float, pool: ThreadPoolExecutor, watch: StoreWatch,
                       call: Callable[[], T]) -> T:
        def watched() -> T:
            with watch.call():
                return call()

        future = asyncio.get_running_loop().run_in_executor(pool, watched)
        while not (await asyncio.wait({future}, timeout=WATCH_POLL_S))[0]:
            if watch.unanswered_s() > timeout:
                future.cancel()  # one still queued never runs
                raise store_timed_out(timeout)
        return future.result()

    async def _user_context(self, user_id: int, now: float
                            ) -> tuple[Sequence[UserEvent], list[str] | None]:
        """The user's latest ``history_limit`` events within the retention window (oldest
        first) and their stated genres: all a request reads of them.
        """
        return await self._read("user_context", user_id, now - self.settings.retention_s,
                                 self.settings.history_limit)

    # ------------------------------------------------------------------ periodic jobs
    def refresh(self) -> None:
        """Fold the outcomes logged since the snapshot; re-read pulls and version; start
        loading new arms if a retrain published them.
        """
        with self._advancing():  # the refresher and policy_view never fold the same rows twice
            if self._live_broken:
                try:
                    self._restart_live_folds()
                except Exception:  # the policy still refreshes; the live arms wait for it
                    logger.exception("the live arms could not start again (the next refresh "
                                     "retries; until then they fold nothing)")
            meta, pulls, head = self.store.state()
            version = meta.version if meta else self.arm_set.version
            self._follow_promotion(pulls, version)
            while True:
                idle = self._tails_read == self._positions(head)
                if idle:
                    # Every row logged takes its seq from the head, committed with it: an
                    # unchanged head since the last tail reads (which came after that head
                    # was read, and were folded up to these positions) means none logged
                    # since, so the tails are empty. 4 of 7 statements an idle refresh
                    # (each with the pool's pre-ping) saved on PostgreSQL.
                    outcomes: list[Outcome] = []
                    switches: list[VersionSwitch] = []
                    live: tuple[list[LogEvent], list[AddedItem]] = ([], [])
                else:
                    outcomes, switches = self._policy_tail()
                    live = self._live_tail()
                # Read after the rows: a purge that deleted rows this fold has not taken yet
                # committed its fold snapshot with them, so it shows here; then the fold
                # restarts from the snapshot and reads the rows after it again.
                mark = self.store.fold_mark()
                if not self._behind_fold(mark):
                    break
                self._resume_from_fold(pulls, version)
            self.snapshot = self.policy_model.advance(self.snapshot, outcomes, pulls, version,
                                                      switches)
            if not idle or mark > self.drift.start:  # (a settlement moves the head too)
                self._fold_drift(mark)
            if self._shadow is not None:  # the same outcomes and switches, under its own rule
                self._shadow = self._advance_shadow(self._shadow, outcomes, switches, mark,
                                                    pulls, version)
            if self._multileave:  # its set probabilities, off the request path
                self.multileave_view()
            self._fold_live(*live)
            self._tails_read = self._positions(head)
        failed = self._load_failure
        if (meta and meta.version > self.arm_set.version and self._loading is None
                and (failed is None or failed.version != meta.version
                     or _clock() >= failed.retry_at)):
            self._loading = threading.Thread(target=self._load_version, args=(meta.version,
                                             meta.arms_dir), name="recbandits-arms", daemon=True)
            self._loading.start()

    def _advance_shadow(self, current: tuple[PolicyModel, PolicySnapshot, str],
                        outcomes: list[Outcome], switches: list[VersionSwitch], mark: int,
                        pulls: dict[str, int], version: int
                        ) -> tuple[PolicyModel, PolicySnapshot, str]:
        """The shadow folded over the refresh's ``outcomes`` and ``switches``; restarted
        afresh at a newer fold snapshot's position ``mark`` first, and folded over the log
        after it up to the live position, as the drift monitor is (:meth:`_fold_drift`).

        A worker that had folded up to the snapshot's position when a purge recorded it was
        not behind it, so its shadow kept the purged outcomes, while ``rebuild-state`` and a
        starting worker start it afresh there: "match NO" (found by attack).
        """
        model, snap, described = current
        if mark > self._shadow_start:
            upto = self.snapshot.seq
            since = [o for o in self.store.outcomes_after(mark) if o.seq <= upto]
            between = [w for w in self.store.switches_after(mark) if w.seq <= upto]
            snap = model.advance(model.resume(None, mark, {}, pulls, version), since, pulls,
                                 version, between)
            self._shadow_start = mark
            return model, snap, described
        return model, model.advance(snap, outcomes, pulls, version, switches), described

    def _positions(self, head: int) -> tuple[int, int, int, int, bool]:
        """``head`` and the log positions the tails are read from (:meth:`refresh`)."""
        return (head, self.snapshot.seq, self.live_seq, self.items_seq,
                bool(self.arm_set.live_names))

    def _fold_drift(self, mark: int) -> None:
        """Fold the outcomes of the decisions settled since the drift monitor's position into
        it (:meth:`~serving.store.Store.settled_after`: its own stream, not the policy's);
        restart it at a newer fold snapshot's position ``mark`` first (the rows before may be
        purged: every worker and ``rebuild-state`` start it there; :mod:`serving.drift`).
        """
        if mark > self.drift.start:
            self.drift = self.drift.fresh(mark)
        self.drift.fold(self.store.settled_after(self.drift.seq))

    def _policy_tail(self) -> tuple[list[Outcome], list[VersionSwitch]]:
        """The outcomes and version switches logged after the snapshot, complete up to the
        later of the last of each: a switch read after the outcomes may lie past outcomes
        committed in between, so those are read again (an outcome below a visible switch
        committed before it, by the log's commit order) and none past the switch is taken.
        """
        seq = self.snapshot.seq
        outcomes = self.store.outcomes_after(seq)
        switches = self.store.switches_after(seq)
        if switches and switches[-1].seq > (outcomes[-1].seq if outcomes else seq):
            outcomes = [o for o in self.store.outcomes_after(seq) if o.seq < switches[-1].seq]
        return outcomes, switches

    def _follow_promotion(self, pulls: dict[str, int], version: int) -> None:
        """Serve the store's latest promoted policy if this worker does not yet
        (:mod:`serving.shadow`): the shadow's snapshot when the shadow is that policy (the same
        fold at the same log position), else the promoted policy folded over the outcomes up
        to the live snapshot's position. Called holding the advance lock.
        """
        promotion = shadow.latest(self.store)
        if promotion is None or promotion.id == self._promotion_id:
            return
        if self._multileave:  # its sets are drawn from the Beta policy's statistics
            if self._promotion_id != -promotion.id:
                logger.error("promotion %d of %s is not followed: slate_mode 'multileave' "
                             "serves Thompson Sampling only", promotion.id, promotion.policy)
            self._promotion_id = -promotion.id  # said once
            return
        settings = shadow.promoted(self.settings, promotion)
        model = settings.policy_model(self.features.dimension)
        described = shadow.describe(model)
        seq = self.snapshot.seq
        read: list[tuple[list[Outcome], list[VersionSwitch]]] = []

        def log_upto() -> tuple[list[Outcome], list[VersionSwitch]]:
            # The outcomes and version switches up to the live position, read once and only
            # if a fold from the log's start is needed (the live one, a new shadow, or both).
            if not read:
                read.append(([o for o in self.store.outcomes_after(0) if o.seq <= seq],
                             [w for w in self.store.switches_after(0) if w.seq <= seq]))
            return read[0]

        if self._shadow is not None and self._shadow[2] == described:
            snapshot = self._shadow[1]
        else:  # a worker started before the shadow was set, or with other settings
            upto, switches = log_upto()
            snapshot = model.advance(None, upto, pulls, version, switches)
        # One assignment: requests from here on use the promoted pair.
        self._live = (model, snapshot, described)
        self._shadow = self._shadow_of(settings)
        if self._shadow is not None:  # another shadow: folded up to the same position
            other, fresh, text = self._shadow
            upto, switches = log_upto()
            self._shadow = (other, other.advance(fresh, upto, pulls, version, switches), text)
        self._promotion_id = promotion.id
        logger.warning("now serving the promoted policy %s (promotion %d)", described,
                       promotion.id)

    def promote_shadow(self) -> shadow.PromoteResult:
        """Record the shadow policy's promotion (:func:`serving.shadow.promote`) and serve it
        here at once (every other worker within one refresh interval).

        Raises
        ------
        PromotionRefusedError
            As :func:`serving.shadow.promote`'s ValueError (409).
        """
        try:
            result = shadow.promote(self.settings, self.store)
        except StoreAccessError:
            raise  # the service's role denied a write: no refusal of the promotion (a 500)
        except ValueError as exc:
            raise PromotionRefusedError(str(exc)) from None
        self._refresh_after(f"policy {result.promotion.policy} was promoted")
        return result

    def shadow_status(self) -> JsonObject:
        """The live and shadow policies in force, the latest promotion (``GET /admin/shadow``:
        :func:`serving.shadow.status`) and this worker's shadow state's log position.
        """
        report = shadow.status(self.settings, self.store)
        state = self.shadow_state()
        report["worker"] = {"pid": os.getpid(), "live": self.policy_model.describe_params(),
                            "shadow_log_seq": None if state is None else state["log_seq"]}
        return report

    def shadow_state(self) -> JsonObject | None:
        """The shadow's learned state and the log position it folded up to (None without a
        shadow): ``rebuild-state`` compares it with its fold of the log.
        """
        current = self._shadow
        if current is None:
            return None
        model, snap, _ = current
        return {"log_seq": snap.seq, "policy": model.describe_params(),
                "state": snap.policy.state_dict()}

    def _behind_fold(self, fold_seq: int) -> bool:
        """Whether the fold snapshot at ``fold_seq`` is past what the policy or the live arms
        have folded (the rows in between may be purged).
        """
        return fold_seq > self.snapshot.seq or (bool(self.arm_set.live_names)
                                                and fold_seq > self.live_seq)

    def _resume_from_fold(self, pulls: dict[str, int], version: int) -> None:
        """Restart the folds that are behind the latest fold snapshot from it: the policy from
        its state, the live arms from their saved arrays (with the items they had grown by
        then in the universe).
        """
        live = self.arm_set.live_names
        fold = self.store.fold_snapshot(arms=bool(live))
        if fold is None:
            return
        self.purged_before = max(self.purged_before, fold.cut)
        if fold.seq > self.snapshot.seq:
            # (The shadow restarts at the snapshot in refresh: _advance_shadow.)
            self.snapshot = self.policy_model.resume(fold.policy["state"], fold.seq,
                                                     fold.policy["rewards"], pulls, version)
        if live and fold.seq > self.live_seq:
            current = self.arm_set
            missing = [n for n in live if n not in fold.arms]
            if missing:
                logger.warning("the fold snapshot at %d holds no state of the live arms %s: "
                               "they fold only the events after it", fold.seq, missing)
            restored = {n: arm_from_bytes(fold.arms[n]) for n in live if n in fold.arms}
            for name, arm in restored.items():
                if differ := params_differ(arm, current.models[name]):
                    # Its events before the snapshot are purged: it cannot be folded again
                    # under other hyper-parameters, so it goes on with the ones it had.
                    logger.warning("the fold snapshot at %d holds the live arm %s with the "
                                   "hyper-parameters %s, not the settings' (%s as (kept, "
                                   "asked)): the events before it are purged, so it keeps "
                                   "those", fold.seq, name, arm.get_params(), differ)
            models = {**current.models, **restored}
            grown = [a for a in self.store.items_after(self.items_seq) if a.seq <= fold.seq]
            arm_set = self._arm_set_of(models, current.version, [
                *current.added, *(a for a in grown if a not in current.added)], current)
            self._learn_items(grown)
            self.arm_set = arm_set
            self.live_seq = fold.seq
            if grown:
                self.items_seq = grown[-1].seq
            elif self.items_seq > fold.seq:
                # Items past the snapshot this worker had folded already (added while the
                # purge ran): read again, so that the restored arms grow them at their log
                # positions. They never did: the arms lacked the items, unlike the log's fold
                # (found by attack: rebuild-state "match NO" at an unchanging position).
                self.items_seq = fold.seq

    def _restart_live_folds(self) -> None:
        """Start the live arms again from their base fit (the served version's folder) at log
        position 0, as a starting worker does; the refresh that follows resumes them from the
        latest fold snapshot, if any, and folds the log from there. Called after a fold failed
        part-way (the arms had taken some of its events: a refold from the same position
        counted those twice, so the worker's arms differed from the log's fold until it was
        restarted).
        """
        current = self.arm_set
        meta = self.store.policy_meta()
        if meta is None or not current.live_names:
            self._live_broken = False
            return
        folder = arms_folder(self.settings.resolved_state_dir(), meta.arms_dir)
        bases = load_arms(folder, list(current.live_names))
        arm_set = self._arm_set_of({**current.models, **bases}, current.version,
                                   current.added, current)
        with current.live_lock:
            current.live_lock.generation += 1  # rankings of the broken state are stale
        self.arm_set = arm_set
        self.live_seq = self.items_seq = 0
        self._live_broken = False
        logger.warning("the live arms %s start again from their base fit and fold the log "
                       "afresh (a fold had failed part-way)", list(current.live_names))

    def _arm_set_of(self, models: Mapping[str, Recommender], version: int,
                    added: Sequence[AddedItem], current: ArmSet) -> ArmSet:
        """An arm set of ``models`` at ``version`` with the ``added`` items, built as the
        settings say, sharing ``current``'s live lock (the live arms fold under one lock
        whichever arm set serves them).
        """
        arm_set = ArmSet.build(models, self.catalog, version=version,
                               cold_start_arm=self.settings.cold_start_arm,
                               cache_size=self.settings.score_cache_size, added=added)
        object.__setattr__(arm_set, "live_lock", current.live_lock)
        return arm_set

    def _live_tail(self) -> tuple[list[LogEvent], list[AddedItem]]:
        """The events (if any arm learns from them) and added items logged since the last
        fold. Events are read before items: an event's item was committed before it, so it is
        among the items read.
        """
        live = bool(self.arm_set.live_names)
        events = self.store.events_after(self.live_seq) if live else []
        return events, self.store.items_after(self.items_seq)

    def _fold_live(self, events: list[LogEvent], added: list[AddedItem]) -> None:
        """Fold ``events`` and ``added`` items (:meth:`_live_tail`) into the arm set (its live
        arms and its universe; :mod:`serving.live`).
        """
        if self._live_broken:  # never into arms a failed fold left part-way
            return
        if events or added:
            try:
                arm_set = fold_log(self.arm_set, events, added, self.rules, self.catalog)
            except Exception:
                # The arms fold in place: some took part of these events, and folding them
                # again from the same position counted those twice, for good.
                self._live_broken = True
                raise
            self._learn_items(added)
            self.arm_set = arm_set
        if events:
            self.live_seq = events[-1].seq
        if added:
            self.items_seq = added[-1].seq

    def _learn_items(self, added: list[AddedItem]) -> None:
        """Give the features the genres of ``added`` items before the arm set that serves them
        is swapped in: a user's view is rebuilt when the arm set changes
        (:class:`~serving.user_view.UserViews`), so none built with the new arm set folds an
        event of theirs without their genres.
        """
        if added:
            self.features.learn(added)

    def _swap(self, arm_set: ArmSet) -> None:
        """Serve ``arm_set`` from now on, with every item the refresher added to the current
        one meanwhile, and the current one's live arms if the refresher replaced them meanwhile
        (a fold snapshot: :meth:`_resume_from_fold`); the two never interleave: both hold the
        advance lock.
        """
        with self._advancing():
            current = self.arm_set
            latest = current.added
            replaced = {n: current.models[n] for n in current.live_names
                        if arm_set.models.get(n) is not current.models[n]}
            if replaced:
                arm_set = self._arm_set_of(
                    {**arm_set.models, **replaced}, arm_set.version,
                    [*arm_set.added, *(a for a in latest if a not in arm_set.added)], current)
            self.arm_set = (arm_set.with_items(latest, self.catalog)
                            if set(latest) - set(arm_set.added) else arm_set)
            # Under the lock live_state reads both under: it never says the version now
            # served failed to load (review: cleared after the swap, it did for a moment).
            self._load_failure = None

    def _load_version(self, version: int, arms_dir: str) -> None:
        try:
            current = self.arm_set
            # The live arms are a fold of the log from their base fit: carried over, not
            # reloaded (a retrain does not refit them).
            folder = arms_folder(self.settings.resolved_state_dir(), arms_dir)
            # The live arms' base fits too, where the folder holds them (to compare below).
            absent = set(missing_arms(folder, list(current.live_names)))
            loaded = load_arms(folder, [n for n in current.names if n not in absent])
            models = {**loaded, **{n: current.models[n] for n in current.live_names}}
            arm_set = self._arm_set_of({n: models[n] for n in current.names}, version,
                                       current.added, current)
            arm_set.warm()
            # A version whose live arms' base fit has other hyper-parameters (a promotion or a
            # rollback to it): the carried arms are not what a starting worker or rebuild-state
            # folds, so they start again from its base (found by attack: match NO until a
            # restart, which changed what was served).
            # (A live arm a fold snapshot holds keeps the snapshot's, whatever the version.)
            other = [n for n in current.live_names
                     if n in loaded and params_differ(current.models[n], loaded[n])]
            fold = self.store.fold_snapshot(arms=True) if other else None
            other = [n for n in other if fold is None or n not in fold.arms]
            self._swap(arm_set)
            if other:
                with self._advancing():
                    self._live_broken = True
                self._refresh_wanted.set()
                logger.warning("version %d's live arms %s have other hyper-parameters than "
                               "those served: they start again from its base fit", version,
                               other)
            logger.info("now serving arms of policy version %d from %s", version, folder)
        except UnknownItemsError as exc:
            if not self._items_pending(exc.missing):
                self._load_failed(version, arms_dir)
                return
            # Items added before the retrain read them that this worker has not folded yet
            # (its fold of the log lags in a burst): tried again after the first back-off
            # step, every time, and not an error (found by attack: 1, 2, 4, 8 s of back-off
            # and an ERROR with its traceback per attempt kept one worker on the old
            # version 16 s longer than the other).
            self._load_failure = LoadFailure(version, 0, _clock() + LOAD_BACKOFF_S, repr(exc))
            logger.info("the arms of version %d know items this worker has not folded yet "
                        "(%s); trying again in %g s", version, exc.missing[:5], LOAD_BACKOFF_S)
        except Exception:
            self._load_failed(version, arms_dir)
        finally:
            self._loading = None

    def _items_pending(self, items: list[int]) -> bool:
        """Whether every one of ``items`` was added to the log after the last item this
        worker folded (False if the store cannot say).
        """
        try:
            pending = {a.item_id for a in self.store.items_after(self.items_seq)}
        except StoreUnavailableError:
            return False
        return set(items) <= pending

    def _load_failed(self, version: int, arms_dir: str) -> None:
        """Back off before loading ``version`` again (1, 2, 4, ... s up to
        :data:`LOAD_BACKOFF_CAP_S`), saying why once per version (in an ``except`` block).
        """
        failed = self._load_failure
        n = failed.attempts + 1 if failed is not None and failed.version == version else 1
        delay = min(LOAD_BACKOFF_CAP_S, LOAD_BACKOFF_S * 2.0 ** (n - 1))
        # One assignment: a reader (live_state) never sees this version with another's error.
        self._load_failure = LoadFailure(version, n, _clock() + delay, repr(sys.exc_info()[1]))
        if n == 1:  # once per version: the old arms keep serving meanwhile
            logger.exception("could not load the arms of version %d from %s; the arms of "
                             "version %d keep serving; trying again with back-off (up to "
                             "every %g s)", version, arms_dir, self.arm_set.version,
                             LOAD_BACKOFF_CAP_S)
        else:
            logger.debug("the arms of version %d still cannot be loaded (attempt %d); "
                         "next in %g s", version, n, delay)

    def settle(self) -> None:
        """Decide the outcome of every decision whose reward window closed (once, in the
        store; see :mod:`serving.rules`), ``settle_grace_s`` after its close and never before
        a write received inside the window has committed or failed
        (:func:`~serving.store.writer.longest_write_wait`): a like acknowledged within the
        window decides its decision however long the store was locked.
        """
        grace = max(self.settings.settle_grace_s,
                    longest_write_wait(self.settings.store_timeout_s))
        if self.store.settle_expired(time.time(), grace, self.rules):
            self.refresh()

    # ------------------------------------------------------------------ recommendations
    async def recommend(self, user_id: int, k: int) -> Recommendation:
        """Pick an arm, take its top-``k`` for the user, log the decision; see the module doc."""
        model, snapshot, policy_json = self._live
        shadowing = self._shadow
        # On its microsecond (serving.retries.instant), as the API states it: an event stamped
        # with the decision's time as shown was refused as made before it (found by attack).
        now = instant(time.time())
        history, stated = await self._user_context(user_id, now)
        # The user's events within the retention window as every arm scores them now, the
        # items they exclude, the session's likes and dislikes, and the context: kept from
        # the user's last request while none of them can have changed.
        arms, view = await self._user_view(user_id, history, stated, now)
        user = arms.user_index.get(user_id)
        recent, ratings, excluded, liked, disliked, _ = view.signals
        features = view.features
        if self._multileave and user is not None:
            return await self._recommend_multileave(
                user_id, user, k, arms, now, view.context_json(self.features.version, k),
                (recent, ratings, excluded, liked, disliked))
        if user is None and not model.contextual:
            # A context-free policy cannot tell a newcomer from anyone else: popularity serves
            # them outside it. A contextual one chooses for them from their features.
            cold_start = True
            arm = self.settings.cold_start_arm
            pmf: dict[str, float] | str = {arm: 1.0}  # str: the snapshot's cached JSON
            propensity = 1.0
            top = self._newcomer_top(arms, arm, user_id, k, stated,
                                     (recent, ratings, excluded, liked, disliked))
        else:
            cold_start = False
            # Context-free: computed once per snapshot; contextual: once per context in it.
            probabilities, cdf, pmf = model.selection(snapshot, features)
            if self.holdout is None:
                choice = draw_arm(cdf, self.rng.random())
                propensity = float(probabilities[choice])
            else:  # the mixture with the baseline is drawn from and logged (serving.holdout)
                choice, propensity, pmf, _, policy_json = self.holdout.choose(
                    probabilities, cdf, pmf, self.rng, policy_json)
            arm = model.arms[choice]
            signals = (recent, ratings, excluded, liked, disliked)
            # A newcomer who stated genres: the chosen arm's ranking with them first, as the
            # context-free policies' popularity (one rule: _newcomer_top).
            top = (self._newcomer_top(arms, arm, user_id, k, stated, signals)
                   if user is None and stated else
                   self._arm_top(arms, arm, user_id, k, signals))
        indices, values = top
        slate = arms.item_ids[indices].tolist()
        event_id = new_event_id(now)  # time-ordered and unguessable (serving.ids)
        # The JSON text the store logs, serialised once per user view and k.
        context = view.context_json(self.features.version, k)
        # What the shadow policy would have done here: logged, never served.
        shadow_record = (None if shadowing is None or cold_start else
                         shadow.record(shadowing[0], shadowing[1], shadowing[2], features,
                                       event_id))
        assert self.writer is not None  # set by the app's lifespan before any request
        await self.writer.write_decision({
            "event_id": event_id, "created_at": now, "user_id": user_id, "context": context,
            "arm": arm, "propensity": propensity, "pmf": pmf, "slate": slate,
            "policy": policy_json, "policy_version": arms.version,
            "cold_start": cold_start, "reward_deadline": now + self.settings.reward_window_s,
            "shadow": shadow_record,
        })
        self.on_decision(arm)
        titles, years, genres = arms.titles, arms.years, arms.genres
        items = [
            {"movie_id": movie, "title": titles[i], "year": years[i], "genres": genres[i],
             "score": v, "position": pos, "arm": arm}
            for pos, movie, i, v in zip(range(1, len(slate) + 1), slate, indices.tolist(),
                                        values.tolist(), strict=True)
        ]
        return Recommendation(event_id, user_id, arm, propensity, arms.version, cold_start,
                              items)

    def _newcomer_top(self, arms: ArmSet, arm: str, user_id: int, k: int,
                      stated: Sequence[str] | None,
                      history: tuple[npt.NDArray[np.int64], npt.NDArray[np.float64],
                                     npt.NDArray[np.int64], npt.NDArray[np.int64],
                                     npt.NDArray[np.int64]]
                      ) -> tuple[npt.NDArray[np.intp], npt.NDArray[np.float64]]:
        """The best ``k`` items of ``arm`` for a user the arms do not know, and their scores:
        the arm's ranking from the user's own events (an arm absent from the set: the base
        fit's popularity) with the genres they stated (``PUT /users/{id}/preferences``)
        first, until their session has a like or a dislike, whose adjustment then re-ranks
        the arm's scores instead. The one rule for a newcomer's slate, whichever policy (or
        the cold-start bypass of a context-free one) chose the arm.
        """
        recent, ratings, excluded, liked, disliked = history
        steer = [g for g in stated or () if g in arms.genre_names]
        strength = self.settings.session_strength
        if arm in arms.names:  # cached until the user's next event (ArmSet.user_ranking)
            return _best(arms.user_ranking(arm, user_id, recent, ratings, excluded, liked,
                                           disliked, strength, steer), k, excluded)
        ranking = arms.preferred_ranking(steer) if steer else arms.cold_start_ranking
        if strength and (liked.size or disliked.size):
            return top_k_row(arms.session_scores(ranking.scores, excluded, liked, disliked,
                                                 strength), k)
        return _best(ranking, k, excluded)

    # ------------------------------------------------------------------ multileaved slates
    def _arm_top(self, arms: ArmSet, arm: str, user_id: int, k: int,
                 history: tuple[npt.NDArray[np.int64], npt.NDArray[np.float64],
                                npt.NDArray[np.int64], npt.NDArray[np.int64],
                                npt.NDArray[np.int64]]
                 ) -> tuple[npt.NDArray[np.intp], npt.NDArray[np.float64]]:
        """``arm``'s best ``k`` item indices for the user and their scores: its ranking from
        the user's events (``history``: recent items and their ratings, excluded, liked and
        disliked items), the excluded items left out and the session's likes and dislikes
        applied; cached until the user's next event or a live arm's next fold
        (:meth:`ArmSet.user_ranking`).
        """
        recent, ratings, excluded, liked, disliked = history
        ranking = arms.user_ranking(arm, user_id, recent, ratings, excluded, liked, disliked,
                                    self.settings.session_strength)
        return _best(ranking, k, excluded)

    def multileave_view(self, snapshot: PolicySnapshot | None = None) -> MultileaveView:
        """The multileaving policy of ``snapshot`` (default the current one), built once per
        snapshot.
        """
        view = self._multileave_view
        snapshot = self.snapshot if snapshot is None else snapshot
        if view is None or view.snapshot is not snapshot:
            view = multileave_view(snapshot, self.settings.multileave_arms,
                                   self.settings.propensity_grid)
            if snapshot is self.snapshot:
                self._multileave_view = view
        return view

    async def _recommend_multileave(
            self, user_id: int, user: int, k: int, arms: ArmSet, now: float, context: str,
            history: tuple[npt.NDArray[np.int64], npt.NDArray[np.float64],
                           npt.NDArray[np.int64], npt.NDArray[np.int64], npt.NDArray[np.int64]]
            ) -> Recommendation:
        """A multileaved slate for a user the arms know (:mod:`serving.multileave`): the set
        and draft order drawn, each arm of the set ranked as for a single-arm slate, the team
        draft of their top ``k``, logged with what reproduces and evaluates it.

        Raises
        ------
        InvalidInputError
            ``k`` smaller than ``multileave_arms`` (422): every arm must fill a position.
        """
        m = self.settings.multileave_arms
        if k < m:
            raise InvalidInputError(f"k={k} is smaller than multileave_arms={m}: a multileaved "
                                    f"slate needs k >= {m} so that every arm fills a position")
        view = self.multileave_view()
        names = view.policy.arms
        choice = choose(view, k, self.rng)
        chosen = [names[a] for a in choice.arms]
        tops = [self._arm_top(arms, arm, user_id, k, history) for arm in chosen]
        indices, order = draft([i for i, _ in tops], choice.order, k)
        scores = {(j, int(i)): float(v) for j, (idx, val) in enumerate(tops)
                  for i, v in zip(idx.tolist(), val.tolist(), strict=True)}
        slate = arms.item_ids[indices].tolist()
        teams = [chosen[j] for j in order.tolist()]
        arm = set_name(chosen)
        propensity = view.set_probabilities[tuple(choice.arms)]
        event_id = new_event_id(now)
        multileave = {
            "arms": chosen, "order": order.tolist(), "teams": teams,
            "rankings": {a: arms.item_ids[i].tolist() for a, (i, _) in zip(chosen, tops,
                                                                          strict=True)},
            "set_probability": propensity,
            "order_probability": order_probability(m, k),
            "inclusion": view.inclusion,
        }
        assert self.writer is not None  # set by the app's lifespan before any request
        await self.writer.write_decision({
            "event_id": event_id, "created_at": now, "user_id": user_id, "context": context,
            "arm": arm, "propensity": propensity, "pmf": view.pmf_json, "slate": slate,
            "policy": self._policy_json, "policy_version": arms.version, "cold_start": False,
            "reward_deadline": now + self.settings.reward_window_s, "multileave": multileave,
        })
        self.on_decision(arm)
        items = [
            {"movie_id": movie, "title": arms.titles[i], "year": arms.years[i],
             "genres": arms.genres[i], "score": scores[j, i], "position": pos, "arm": chosen[j]}
            for pos, movie, i, j in zip(range(1, len(slate) + 1), slate, indices.tolist(),
                                        order.tolist(), strict=True)
        ]
        return Recommendation(event_id, user_id, arm, propensity, arms.version, False, items)

    # ------------------------------------------------------------------ feedback and events
    async def _attributed_decision(self, user_id: int, movie_id: int, event_id: str | None,
                                   at: float) -> Row | None:
        """The decision an event of ``user_id`` on ``movie_id`` at ``at`` is attributed to.

        The one ``event_id`` names, checked against its user, its slate and its time (made at or
        before ``at``); without one, the user's latest decision made in the reward window
        before ``at`` that showed the movie.

        Raises
        ------
        EventNotFoundError, EventConflictError, InvalidInputError
            As :meth:`feedback`.
        """
        # Both times on their microsecond, the one rule of when (serving.retries.instant; a
        # decision is stamped on it, a row from before is rounded here): an event stamped at a
        # decision's time as the API shows it was refused, the decision's exact float later.
        at = instant(at)
        if event_id is None:  # a decision made before the event, within the window
            # Its instant within them, as below (a stored time compared in SQL, on its index).
            since, until = instant_range(at - self.settings.reward_window_s, at)
            return await self._read("latest_decision_showing", user_id, movie_id, since, until)
        decision = await self._read("decision", event_id)
        if decision is None:
            raise EventNotFoundError(f"event_id {event_id!r} is not in the decision log")
        made = instant(decision["created_at"])
        if at < made:
            # Shown to the microsecond, as the other timestamp checks (found by attack: cut to
            # the second, both times read the same).
            raise InvalidInputError(
                f"timestamp {_iso(at, 'microseconds')} is before decision {event_id!r} was "
                f"made ({_iso(made, 'microseconds')}): an event cannot answer a later slate")
        if decision["user_id"] != user_id:
            raise EventConflictError(
                f"event_id {event_id!r} was served to another user, not user_id {user_id}")
        if movie_id not in decision["slate"]:
            raise InvalidInputError(
                f"movie_id {movie_id} was not in the slate of event {event_id!r} "
                f"(it showed {decision['slate']})")
        return decision

    def _event_time(self, timestamp: float | None, now: float) -> float:
        """When an event happened: its ``timestamp``, checked against now and the retention.

        Raises
        ------
        InvalidInputError
            A timestamp in the future (beyond the clock-skew tolerance) or older than the
            retention window; the message names the limit.
        """
        if timestamp is None:
            return now
        latest = now + self.settings.clock_skew_s
        earliest = now - self.settings.retention_s
        # To the microsecond, as the limits are checked (found by attack: to the second, a
        # timestamp 0.3 s beyond the limit read as equal to it).
        if timestamp > latest:
            raise InvalidInputError(
                f"timestamp {_iso(timestamp, 'microseconds')} is in the future: events may be "
                f"stamped at most {self.settings.clock_skew_s:g} s after the server's clock "
                f"({_iso(now, 'microseconds')}): the latest accepted now is "
                f"{_iso(latest, 'microseconds')}")
        if timestamp < earliest:
            raise InvalidInputError(
                f"timestamp {_iso(timestamp, 'microseconds')} is older than the retention "
                f"window of {say_seconds(self.settings.retention_s)}: the earliest accepted "
                f"now is {_iso(earliest, 'microseconds')}")
        if timestamp < self.purged_before:
            # A purge run with a shorter retention than the service's deleted the raw events
            # before its DATE, their idempotency keys with them, and folded them into its
            # snapshot: a client's retry of one was stored anew and counted twice (found by
            # attack). The events of that time are the snapshot's.
            raise InvalidInputError(
                f"timestamp {_iso(timestamp, 'microseconds')} is before "
                f"{_iso(self.purged_before, 'microseconds')}, the DATE the log was purged "
                "before (recbandits purge): the events of that time are folded into the "
                "purge's snapshot, where another would be counted twice")
        return timestamp

    async def _event_write(self, user_id: int, movie_id: int, event_type: str,
                           value: float | None, at: float, event_id: str | None,
                           event_key: str | None, *, item_field: str = "movie_id"
                           ) -> FeedbackWrite:
        """The write of one event (validated): attributed, worth what the rule book says.

        ``event_key`` None: the decision's id (or ``""``), as ``POST /feedback`` keys feedback.
        ``item_field`` names the item in messages (``movie_id`` or ``item_id``).

        Raises
        ------
        InvalidInputError, EventNotFoundError, EventConflictError
            As :meth:`feedback`; also a value the type does not take.
        """
        # Stored on its microsecond, as decisions are (serving.retries.instant): the exact
        # float could lie up to 0.5 us before its decision's, so the log showed the event
        # first and the off-policy counts took it as seen before (found in review).
        at = instant(at)
        if not await self._known_item(movie_id):
            raise InvalidInputError(unknown_id_message(item_field, movie_id,
                                                       self.arm_set.item_ids[:500]))
        rule = self.rules.rule(event_type)
        try:
            rule.check_value(event_type, value)
        except ValueError as exc:
            raise InvalidInputError(str(exc)) from None
        reward = rule.reward_for(value)
        if reward is None and event_id is None:
            # A type that carries no reward decides nothing: no search for its decision (a
            # batch of 1,000 views would otherwise read the decision log 1,000 times).
            decision = None
        else:
            decision = await self._attributed_decision(user_id, movie_id, event_id, at)
        arm = None
        outcome = None
        decided_note = ""
        if decision is None:
            note = (f"{event_type} carries no reward: stored, no arm updated" if reward is None
                    else "item never shown to this user within the reward window: kept as a "
                         "rating signal, no arm updated")
        else:
            arm = item_arm(decision, movie_id)
            if decision["cold_start"]:
                note = "cold-start decision (served outside the policy): no arm updated"
            elif at > decision["reward_deadline"]:
                note = "after the decision's reward window closed: no arm updated"
            elif reward is None:
                note = f"{event_type} carries no reward: stored, no arm updated"
            elif not self.rules.decides_at_once:
                note = (f"reward {reward:g} for arm {arm} is combined ({self.rules.aggregation}) "
                        "with the decision's other feedback when its window closes")
            else:
                # The store inserts the decision's one outcome unless one exists already.
                outcome = {"event_id": decision["event_id"], "arm": arm, "reward": reward}
                decided_note = rules_decided_note(reward, arm)
                note = ALREADY_DECIDED
        decided_id = None if decision is None else decision["event_id"]
        values = {
            "created_at": at, "user_id": user_id, "movie_id": movie_id,
            "feedback_type": event_type, "value": value, "event_id": decided_id,
            "event_key": (decided_id or "") if event_key is None else event_key,
            "arm": arm, "reward": reward, "rating": rule.rating_for(value), "counted": False,
            "note": note,
        }
        return FeedbackWrite(values, outcome, decided_note, precedence=rule.precedence,
                             excludes=rule.excludes)

    async def feedback(self, body: FeedbackIn) -> FeedbackResult:
        """Validate, attribute and store one feedback; see :mod:`serving` for the rules.

        Raises
        ------
        InvalidInputError
            Unknown movie, or a movie absent from the named event's slate (422).
        EventNotFoundError
            ``event_id`` not in the decision log (404).
        EventConflictError
            ``event_id`` served to another user (409).
        """
        write = await self._event_write(body.user_id, body.movie_id, body.feedback_type.value,
                                        None, time.time(), body.event_id, None)
        assert self.writer is not None  # set by the app's lifespan before any request
        return await self.writer.write_feedback(write)

    async def record_events(self, events: Sequence[EventIn]) -> list[FeedbackResult]:
        """Validate, attribute and store a batch of events, all or none, in order.

        Raises
        ------
        InvalidInputError, EventNotFoundError, EventConflictError
            As :meth:`feedback`, or a timestamp outside the accepted range, or a value the type
            does not take; the message starts with ``events[i]``, the first event refused
            (nothing of the batch is stored).
        IdempotencyConflictError
            An ``idempotency_key`` whose stored event is another one (409; raised by the write:
            :mod:`serving.retries`; nothing of the batch is stored).
        """
        now = time.time()
        writes = []
        for i, event in enumerate(events):
            try:
                at = self._event_time(event.unix_time(), now)
                key = event_key(event, at)
                write = await self._event_write(
                    event.user_id, event.item_id, event.type.value, event.value, at,
                    event.event_id, key, item_field="item_id")
            except StoreUnavailableError:
                raise  # the store's fault, not this event's
            except ServingError as exc:  # the same error, saying which event
                raise type(exc)(f"events[{i}]: {exc.message}") from None
            if event.idempotency_key is not None:  # checked by the write: serving.retries
                write.retry = RetryCheck(i, event.idempotency_key, event.timestamp is not None,
                                         event.event_id is not None)
            writes.append(write)
        assert self.writer is not None  # set by the app's lifespan before any request
        return await self.writer.write_events(writes)

    async def post_item(self, item_id: int, title: str, genres: Sequence[str],
                        year: int | None) -> tuple[AddedItem, list[str]]:
        """Log a new catalogue item and fold it in here at once (other workers within one
        refresh interval); returns it and the arms that learn it at once (``POST
        /admin/items``). The write runs within the store's write time-out
        (:meth:`write_in_thread`), then the refresh, whose failure or silence (found by attack:
        a lock on a table only the refresh reads) does not fail the committed write: the
        refresher folds it in.

        Raises
        ------
        ItemExistsError
            The item is in the catalogue already (409).
        InvalidInputError
            A genre the catalogue does not have (422).
        """
        item = await self.write_in_thread(self._record_item, item_id, title, genres, year)
        try:
            await self.in_thread(self.refresh)
        except StoreUnavailableError as exc:
            self._refresh_failed(f"item {item_id} was added", exc)
        return item, self._growing_arms()

    def _record_item(self, item_id: int, title: str, genres: Sequence[str], year: int | None
                     ) -> AddedItem:
        """Check and log a new item (:meth:`post_item`'s errors); nothing folded yet."""
        if item_id in self.arm_set.item_index:
            raise ItemExistsError(self.store.item_exists_message(item_id))
        unknown = sorted(set(genres) - set(self.arm_set.genre_names))
        if unknown:
            raise InvalidInputError(f"genres must be among {list(self.arm_set.genre_names)}, "
                                    f"got {unknown}")
        try:
            return self.store.add_item(item_id, title, list(dict.fromkeys(genres)), year)
        except StoreAccessError:
            raise  # the service's role denied the write: not an item that exists (a 500)
        except ValueError as exc:
            raise ItemExistsError(str(exc)) from None

    def _growing_arms(self) -> list[str]:
        """The served arms that learn an added item at once (from its events)."""
        return [n for n in self.arm_set.names if self.arm_set.models[n].can_grow]

    def _refresh_after(self, done: str) -> None:
        """Refresh now after a write that is committed (``done`` says what it was): a store
        that fails the refresh does not fail the request, which would say the write was not
        made (found by attack: items added and versions promoted were answered 503 after a
        PostgreSQL restart); the refresher folds it in within its interval.
        """
        try:
            self.refresh()
        except StoreUnavailableError as exc:
            self._refresh_failed(done, exc)

    @staticmethod
    def _refresh_failed(done: str, exc: StoreUnavailableError) -> None:
        logger.warning("%s; this worker serves it at its next refresh (%s)", done, exc.message)

    async def _known_item(self, movie_id: int) -> bool:
        """Whether ``movie_id`` is in the catalogue, folding in items another worker added
        since this one's last refresh.
        """
        if movie_id in self.arm_set.item_index:
            return True
        await self._catch_up_items()
        return movie_id in self.arm_set.item_index

    async def _catch_up_items(self) -> None:
        """Fold in the items another worker added since this one's last refresh."""
        def catch_up() -> None:
            # One indexed read; the whole refresh only when an item was in fact added.
            if self.store.items_after(self.items_seq):
                self.refresh()

        await self.in_thread(catch_up)

    async def _user_view(self, user_id: int, history: Sequence[UserEvent],
                         stated: list[str] | None, now: float) -> tuple[ArmSet, UserView]:
        """The arm set serving the request and the user's view under it
        (:class:`~serving.user_view.UserViews`). A view that met an event on an item the
        features do not know (added by another worker, whose add committed before the event
        did, and not yet read here) is built again once this worker has read the items added
        since: the context equals a replay under every item the log holds.
        """
        arms = self.arm_set
        view = self.user_views.view(user_id, history, stated, now, arms)
        if view.blind:
            # Built now or kept from a concurrent request of the user that is catching up
            # itself (found by attack: those were served the blind context); blind for good
            # is not possible (an event's item is in the catalogue or the log's items).
            await self._catch_up_items()
            # Changed by this catch-up or by the refresher meanwhile (which learned the items
            # before swapping it in): either way the features may know the item now.
            if self.arm_set is not arms:
                arms = self.arm_set
                view = self.user_views.view(user_id, history, stated, now, arms)
        return arms, view

    # ------------------------------------------------------------------ policy and retraining
    async def policy_view(self) -> JsonObject:
        """What ``GET /policy`` answers: the policy folded up to the log's latest outcome."""
        await self.in_thread(self.refresh)
        model, snapshot, _ = self._live  # one pair, even across a promotion
        view = model.describe(snapshot, self.features.mean_vector(),
                              self.settings.reward_window_s)
        view["drift"] = await self.in_thread(self.drift_view)
        if self.holdout is not None:
            view["holdout"] = {"share": self.holdout.share, "baseline": self.holdout.baseline}
        if self._multileave:  # each arm's chance of being multileaved into the next slate
            inclusion = self.multileave_view(snapshot).inclusion
            view.update(slate_mode="multileave", multileave_arms=self.settings.multileave_arms)
            for row in view["arms"]:
                row["inclusion_probability"] = inclusion[row["arm"]]
        return view

    def arm_tallies(self) -> dict[str, tuple[int, int, float]]:
        """Per arm: (pulls, outcomes folded, reward sum), for ``/metrics`` (fresh: the outcomes
        logged since the last refresh are folded first, as ``/policy`` does).
        """
        self.refresh()
        pulls = self.snapshot.pulls
        rewards = self.snapshot.rewards
        return {arm: (pulls.get(arm, 0), *rewards.get(arm, (0, 0.0)))
                for arm in self.policy_model.arms}

    def drift_view(self) -> JsonObject:
        """The drift monitor as ``GET /policy`` shows it (read under the advance lock: the
        refresher folds into it meanwhile).
        """
        with self._advancing():
            return self.drift.describe()

    def drift_tallies(self) -> tuple[dict[str, dict[int, tuple[int, float | None]]],
                                     dict[str, int], dict[str, float]]:
        """Per arm: the sliding windows' (outcomes, reward rate), the drift alarms and the
        detector's statistic, for ``/metrics`` (after :meth:`arm_tallies`' refresh).
        """
        with self._advancing():
            drift = self.drift
            return drift.window_rates(), drift.alarm_counts(), drift.statistics()

    def policy_state(self) -> JsonObject:
        """The learned state this worker serves and the log position it folded up to (tests
        and ``rebuild-state`` compare it with the fold of the log).
        """
        model, snapshot, _ = self._live
        # pid: which worker answered (a test must see every worker's state).
        return {"log_seq": snapshot.seq, "policy_version": snapshot.version,
                "pid": os.getpid(), "state": snapshot.policy.state_dict(),
                "policy": model.describe_params(), "shadow": self.shadow_state(),
                "store": self.store.describe(), "store_identity": self.store.identity()}

    def live_state(self) -> JsonObject:
        """The worker's live arms (those that learn from the stream) as digests
        (:func:`serving.live.state_digest`), the log position they folded up to, and the store
        they fold: what ``recbandits rebuild-state`` compares with its own fold of the log.

        The position is the later of the last event and the last added item folded: the
        refresher folds every event and item up to the head it read, so nothing lies between.
        With them, the version whose arms it serves and, while loading another version's
        fails, that version, its attempts and the error (``load_failure``): found by attack,
        a promotion to arms that cannot be read left every worker on the old version while
        rebuild-state said "match: yes".
        """
        with self._advancing():  # no fold in between: the digests are of that position
            arm_set = self.arm_set
            with arm_set.live_lock:
                arms = {n: state_digest(arm_set.models[n]) for n in arm_set.live_names}
            position = max(self.live_seq, self.items_seq)
            drift = {"log_seq": self.drift.seq, "start": self.drift.start,
                     "alarms": self.drift.alarm_counts(), "digest": self.drift.digest(),
                     # Not logged: rebuild-state replays with the settings this worker runs.
                     "settings": self.drift.settings()}
            failure = self._load_failure
        return {"log_seq": position, "pid": os.getpid(), "store": self.store.describe(),
                "store_identity": self.store.identity(), "arms": arms, "drift": drift,
                "version": arm_set.version,
                "load_failure": None if failure is None or failure.attempts == 0 else {
                    "version": failure.version, "attempts": failure.attempts,
                    "error": failure.error}}

    def retrain(self, lease: HeldLease | None = None, *, serve: bool = True) -> RetrainResult:
        """Fit a candidate arm set, gate it, and serve it if accepted
        (:func:`serving.versions.retrain`); a rejected one changes nothing served.

        Runs in a thread; requests keep being served by the old arms until the swap. Holds
        the store's retrain lease (:mod:`serving.retrain_trigger`): ``lease`` if given (a
        trigger took it), else taken here.

        Parameters
        ----------
        lease : HeldLease, optional
            The retrain lease a trigger took (default: taken here).
        serve : bool, default True
            False: an accepted candidate is only saved (status ``candidate``).

        Raises
        ------
        RetrainBusyError
            Another retrain holds the lease, on this or another worker or host (409).
        """
        with contextlib.ExitStack() as stack:
            if lease is None:
                lease = stack.enter_context(hold_retrain_lease(
                    self.store, self.settings.retrain_lease_s))
            stack.enter_context(self._retrain_lock)
            current = self.arm_set
            result = versions.retrain(self.settings, self.store, self.catalog, current.models,
                                      lock=lease.guard(self._advance_lock), serve=serve,
                                      expect_live=current.version)
            # A rejected candidate counts as a retrain for the triggers too.
            lease.fitted()
            if result.arm_set is not None:
                object.__setattr__(result.arm_set, "live_lock", current.live_lock)
                result.arm_set.warm()
                self._swap(result.arm_set)
            self._refresh_after(f"the retrain ended ({result.status}, version {result.version})")
            return result

    def serve_version(self, version: int | None) -> ModelVersion:
        """Promote ``version`` (None: roll back to the version served before the live one);
        this worker starts loading its arms at once, every other within one refresh interval.

        Raises
        ------
        serving.versions.ModelsError
            See :func:`serving.versions.promote` and :func:`serving.versions.rollback`.
        """
        with self._retrain_lock:
            row = (versions.rollback(self.settings, self.store) if version is None
                   else versions.promote(self.settings, self.store, version))
        self._refresh_after(f"version {row.version} is live")
        return row

    # ------------------------------------------------------------------ user features
    async def user_features(self, user_id: int) -> tuple[list[str], list[float], float]:
        """``user_id``'s context as a request would see it now, feature set ``user-v4``
        (:mod:`serving.features`): ``(names, values, as_of)``, ``as_of`` in Unix seconds
        (``GET /users/{id}/features``).

        The behavioural features fold the user's events within ``settings.retention_s`` (this
        worker's feature cache folds only those logged since the user's last request); the
        stated ones are the genres of their latest ``PUT /users/{id}/preferences``.
        """
        now = time.time()
        events, stated = await self._user_context(user_id, now)
        values = (await self._user_view(user_id, events, stated, now))[1].features
        return self.features.names, values.tolist(), now

def event_key(event: EventIn, at: float) -> str | None:
    """The idempotency part of an event's identity (the store's key is user, key, item, type).

    ``idempotency_key`` given: a digest of it (the column holds 32 characters, a key up to 64).
    Else, with a ``timestamp``: a digest of the decision and the time (its microsecond,
    :func:`serving.retries.instant`, as answers state it), so that a retry of the same event
    is stored once while the same action at another time is a new event. Else None:
    keyed by its decision, as ``POST /feedback`` keys feedback.
    """
    if event.idempotency_key is not None:
        return "k" + hashlib.sha256(event.idempotency_key.encode()).hexdigest()[:31]
    if event.timestamp is not None:  # found in review: the exact float kept a retry apart
        return "t" + hashlib.sha256(f"{event.event_id}|{instant(at)!r}".encode()).hexdigest()[:31]
    return None


def _best(ranking: Ranking, k: int, excluded: npt.NDArray[np.int64]
          ) -> tuple[npt.NDArray[np.intp], npt.NDArray[np.float64]]:
    """The best ``k`` items of ``ranking`` not in ``excluded`` and their scores: read off its
    sorted head, or (a head not sorted yet, or too short) from all its scores.
    """
    top = ranking.top(k, excluded)
    if top is None:
        scores = ranking.scores.astype(np.float64)
        scores[excluded] = -np.inf
        top = top_k_row(scores, k)
    return top


