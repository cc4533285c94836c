"""Retraining on its own, one retrain at a time across workers and hosts.

**The lease.** Every retrain (the triggers', ``POST /admin/retrain``, ``recbandits retrain``)
runs holding the store's retrain lease (:meth:`serving.store.Store.take_retrain_lease`: the one
``retrain_lease`` row, taken by one conditional UPDATE, so of concurrent takers on any worker or
host exactly one gets it; the others are refused with :class:`~serving.errors.RetrainBusyError`,
HTTP 409). While the fit runs, a heartbeat renews the lease every quarter of ``lease_s``; a
holder that crashed stops renewing and its lease expires ``lease_s`` after its last renewal,
then the next taker takes it as if free. Just before the new version is published the lease is
renewed once more under the service's publish lock, and the retrain gives up (publishing
nothing) if it was lost meanwhile; since a renewal keeps it for ``lease_s`` from then, no other
holder can publish between that renewal and this publish. So publishes never overlap, even
when a holder stalled past its expiry. A release the store did not answer is tried again in the
background until the lease is free (:meth:`HeldLease.release`).

**The triggers.** :class:`RetrainTrigger` looks every ``check_s`` whether a retrain is due:
``retrain_every`` seconds since the last retrain ended, or ``retrain_after_events`` events
logged since the log position the last retrain read the log up to. Both are read from the lease
row, which the retrain that releases the lease updates in the same UPDATE (``fitted_seq``,
``fitted_at``), and the condition is evaluated again once the lease is held: a worker that takes
the lease after another's retrain sees that retrain's reach, so two workers never retrain for
the same events or the same interval. The trigger runs in its own thread, so the fit never runs
on the event loop; requests are served by the old arms until the new ones are swapped in.
"""

from __future__ import annotations

import contextlib
import logging
import os
import socket
import threading
import time
import uuid
from collections.abc import Callable, Iterator
from contextlib import AbstractContextManager
from typing import TYPE_CHECKING, Protocol

from serving.errors import RetrainBusyError, StoreUnavailableError
from serving.store import Store
from serving.store.types import RetrainLease

if TYPE_CHECKING:  # annotations only: the settings import the arms, which this module needs not
    from serving.settings import Settings

logger = logging.getLogger(__name__)

#: What a clock returns: Unix seconds (``time.time``; tests pass their own).
Clock = Callable[[], float]

#: A release the store did not answer is tried again after the first interval (seconds), then
#: after twice as long each time, up to the second (:meth:`HeldLease.release`).
RELEASE_RETRY_S = (0.5, 5.0)


class Retrainable(Protocol):
    """What a trigger retrains (:class:`serving.service.RecommendationService`)."""

    store: Store

    def retrain(self, lease: HeldLease | None = None) -> object:
        """Retrain holding ``lease`` (its result is the caller's: the trigger ignores it)."""
        ...


class HeldLease:
    """The retrain lease while this process holds it (made by :func:`hold_retrain_lease`).

    Attributes
    ----------
    holder : str
        ``host:pid:nonce``, unique per taking.
    taken : RetrainLease
        The row as taken: ``fitted_seq`` and ``fitted_at`` are the last retrain's.
    log_seq : int
        The log position read just after taking it, before any fit reads the log: what this
        retrain's ``fitted_seq`` will be.
    """

    def __init__(self, store: Store, holder: str, taken: RetrainLease, lease_s: float,
                 clock: Clock) -> None:
        self.store = store
        self.holder = holder
        self.taken = taken
        self.lease_s = lease_s
        self.clock = clock
        self.log_seq = store.log_seq()
        self._fitted = False
        self._error = ""
        #: When (monotonic) the lease was taken or last renewed: it expires lease_s after.
        self._renewed = time.monotonic()
        #: The thread freeing the lease after a release the store did not answer (None: none).
        self.retrying: threading.Thread | None = None
        self._released = threading.Event()
        self._heartbeat = threading.Thread(target=self._beat, daemon=True,
                                           name="recbandits-retrain-lease")
        self._heartbeat.start()

    def _beat(self) -> None:
        # Renewed every quarter of the lease: three renewals may fail (store unavailable)
        # before it expires.
        while not self._released.wait(self.lease_s / 4):
            try:
                asked = time.monotonic()
                if not self.store.renew_retrain_lease(self.holder, self.clock(), self.lease_s):
                    logger.error("the retrain lease of %s expired and was taken by another "
                                 "holder; this retrain will not publish", self.holder)
                    return
                self._renewed = asked
            except StoreUnavailableError as exc:
                logger.warning("cannot renew the retrain lease: %s", exc.message)

    def fitted(self) -> None:
        """Mark the retrain done (published, rejected by an evaluation, or ``unchanged``: its
        data and hyper-parameters were the served version's): the release records its reach
        (``log_seq``, now), from which the triggers count again.
        """
        self._fitted = True

    @contextlib.contextmanager
    def guard(self, lock: AbstractContextManager[object]) -> Iterator[None]:
        """Hold ``lock`` (the service's publish lock) and the lease for ``lease_s`` more.

        Raises
        ------
        RetrainBusyError
            The lease expired and another holder took it: publish nothing.
        """
        with lock:
            asked = time.monotonic()
            if not self.store.renew_retrain_lease(self.holder, self.clock(), self.lease_s):
                raise RetrainBusyError(
                    f"the retrain lease of {self.holder} expired (retrain_lease_s="
                    f"{self.lease_s:g}) and another retrain took it; this one published "
                    "nothing")
            self._renewed = asked
            yield

    def release(self) -> None:
        """Stop the heartbeat and free the lease (recording the reach if :meth:`fitted`).

        A store that does not answer (an outage, a restart) does not leave the lease to block
        every retrain until it expires (``lease_s``, 10 minutes by default; found by attack): a
        background thread tries again, at :data:`RELEASE_RETRY_S` intervals, until the lease
        is freed, found taken by another holder (it had expired), or ``lease_s`` has passed.
        """
        self._released.set()
        self._heartbeat.join()
        fitted_seq = self.log_seq if self._fitted else None
        ended = self.clock()  # the reach's time is the retrain's end, however late it is freed
        if self._free(fitted_seq, ended, retried=False):
            return
        # What the retrain did stands (a version may be published); until the lease is freed,
        # a retrain is refused with the lease's holder and expiry.
        logger.warning("cannot free the retrain lease of %s (%s); trying again until it is "
                       "freed or expires", self.holder, self._error)
        self.retrying = threading.Thread(target=self._free_later, args=(fitted_seq, ended),
                                         daemon=True, name="recbandits-retrain-lease-release")
        self.retrying.start()

    def _free(self, fitted_seq: int | None, ended: float, *, retried: bool) -> bool:
        """One attempt to free the lease: True when done (freed, or no longer ours), False
        when the store did not answer (``_error`` says why).
        """
        try:
            released = self.store.release_retrain_lease(self.holder, ended, fitted_seq)
        except StoreUnavailableError as exc:
            self._error = exc.message
            return False
        if not released and retried:
            # An earlier attempt may have freed it with its answer lost, or it expired and
            # another holder took it: either way nothing is left to free.
            logger.info("the retrain lease of %s was no longer held when freed again",
                        self.holder)
        elif not released:
            logger.error("the retrain lease of %s had been taken by another holder when it "
                         "was released", self.holder)
        return True

    def _free_later(self, fitted_seq: int | None, ended: float) -> None:
        """:meth:`_free` again at growing intervals until done or the lease has expired
        (``lease_s`` after its last renewal: nothing left to free, the reach not recorded).
        """
        first, cap = RELEASE_RETRY_S
        wait = first
        deadline = self._renewed + self.lease_s
        while (left := deadline - time.monotonic()) > 0:
            time.sleep(min(wait, left))
            if self._free(fitted_seq, ended, retried=True):
                logger.info("freed the retrain lease of %s once the store answered",
                            self.holder)
                return
            wait = min(2 * wait, cap)
        logger.warning("gave up freeing the retrain lease of %s (%s): it has expired",
                       self.holder, self._error)


def lease_holder() -> str:
    """A holder name for one taking of the lease: ``host:pid:nonce``."""
    return f"{socket.gethostname()}:{os.getpid()}:{uuid.uuid4().hex[:8]}"


@contextlib.contextmanager
def hold_retrain_lease(store: Store, lease_s: float, *, clock: Clock = time.time
                       ) -> Iterator[HeldLease]:
    """Hold the store's retrain lease for the block; free it after, however the block ends.

    Parameters
    ----------
    store : Store
    lease_s : float
        How long the lease outlives its last renewal (``settings.retrain_lease_s``).
    clock : callable, default time.time
        Unix seconds; every host's clock must agree to well within ``lease_s``.

    Raises
    ------
    RetrainBusyError
        Another holder has the lease (a retrain is running on some worker or host).
    """
    holder = lease_holder()
    now = clock()
    taken = store.take_retrain_lease(holder, now, lease_s)
    if taken is None:
        current = store.retrain_lease()
        held = (f"held by {current.holder} for {max(0.0, current.expires_at - now):.0f} s "
                "more unless renewed" if current.holder else "freed since")
        raise RetrainBusyError(f"a retrain is running already (the retrain lease is {held}); "
                               "try again when it has ended")
    try:
        lease = HeldLease(store, holder, taken, lease_s, clock)
    except BaseException:
        store.release_retrain_lease(holder, clock())
        raise
    try:
        yield lease
    finally:
        lease.release()


class RetrainTrigger:
    """A background thread that starts a retrain when one is due (see the module doc).

    Parameters
    ----------
    store : Store
    retrain : callable
        Runs one retrain holding the lease it is given (``RecommendationService.retrain``),
        and marks it :meth:`HeldLease.fitted`.
    every_s : float or None
        Retrain when this many seconds have passed since the last retrain ended (None: never
        for time).
    after_events : int or None
        Retrain when this many events were logged after the last retrain's reach (None: never
        for events).
    check_s : float
        Seconds between two looks.
    lease_s : float
        The lease's life after its last renewal.
    clock : callable, default time.time

    Attributes
    ----------
    retrains : int
        Retrains this trigger ran.
    """

    def __init__(self, store: Store, retrain: Callable[[HeldLease], object], *,
                 every_s: float | None, after_events: int | None, check_s: float,
                 lease_s: float, clock: Clock = time.time) -> None:
        self.store = store
        self.retrain = retrain
        self.every_s = every_s
        self.after_events = after_events
        self.check_s = check_s
        self.lease_s = lease_s
        self.clock = clock
        self.retrains = 0
        self._stopping = threading.Event()
        self._thread: threading.Thread | None = None

    def due(self, lease: RetrainLease, now: float) -> str | None:
        """Why a retrain is due given the lease row ``lease`` at ``now``; None if it is not."""
        if self.every_s is not None and now >= lease.fitted_at + self.every_s:
            return f"{now - lease.fitted_at:.0f} s since the last retrain (retrain_every)"
        # Events are a part of the log's positions: fewer positions than N since the last
        # retrain's reach (one indexed read) means fewer events, without counting them.
        if (self.after_events is not None
                and self.store.log_seq() - lease.fitted_seq >= self.after_events):
            new = self.store.feedback_count_after(lease.fitted_seq, limit=self.after_events)
            if new >= self.after_events:
                return (f"{new} events or more since log position {lease.fitted_seq} "
                        f"(retrain_after_events={self.after_events})")
        return None

    def check(self) -> bool:
        """Look once; retrain if due (checked again holding the lease). Whether it retrained.

        A lease held elsewhere means a retrain is running there: not this trigger's to run.
        """
        if self.due(self.store.retrain_lease(), self.clock()) is None:
            return False  # the common case costs two indexed reads and no write
        try:
            with hold_retrain_lease(self.store, self.lease_s, clock=self.clock) as lease:
                reason = self.due(lease.taken, self.clock())
                if reason is None:  # another worker retrained since the first look
                    return False
                logger.info("retraining: %s", reason)
                self.retrain(lease)
        except RetrainBusyError:
            return False
        self.retrains += 1
        return True

    def start(self) -> None:
        """Start looking, in a daemon thread."""
        self._thread = threading.Thread(target=self._loop, daemon=True,
                                        name="recbandits-retrain-trigger")
        self._thread.start()

    def close(self, timeout_s: float = 5.0) -> None:
        """Stop looking; wait up to ``timeout_s`` for a retrain under way (one cut short by
        the process's exit leaves its lease to expire after ``lease_s``).
        """
        self._stopping.set()
        if self._thread is not None:
            self._thread.join(timeout_s)

    def _loop(self) -> None:
        backoff = self.check_s
        while not self._stopping.wait(backoff):
            try:
                self.check()
            except StoreUnavailableError as exc:
                logger.warning("retrain trigger: the store is unavailable (%s)", exc.message)
            except Exception:  # must not kill the thread: the next look tries again
                logger.exception("a triggered retrain failed; trying again later")
                # A failure that repeats (a bad fit) is retried ever less often, up to 10 min.
                backoff = max(self.check_s, min(2 * backoff, 600.0))
                continue
            backoff = self.check_s


def retrain_trigger(settings: Settings, service: Retrainable) -> RetrainTrigger | None:
    """The trigger ``settings`` ask for (``retrain_every``, ``retrain_after_events``) over
    ``service`` (its store and its ``retrain``), not started; None when neither is set.
    """
    if settings.retrain_every is None and settings.retrain_after_events is None:
        return None
    return RetrainTrigger(service.store, service.retrain, every_s=settings.retrain_every,
                          after_events=settings.retrain_after_events,
                          check_s=settings.retrain_check_s, lease_s=settings.retrain_lease_s)
