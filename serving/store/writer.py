"""Group commit: many requests' writes committed in one transaction, one batch at a time.

A request hands its write to the writer and awaits a future; the writer takes everything queued
(up to ``batch_max``), commits it in one transaction and then resolves all the futures at once.
Under load the cost of a commit (an fsync on SQLite, a round trip on PostgreSQL) is shared by
the whole batch, and no response is sent before its write is durable. One batch is in flight at
a time, so writes are committed in arrival order.

Three ways to run the batches, the store's ``commit_mode``:

- ``inline`` (SQLite, ``synchronous=NORMAL``): the commit runs in the event loop itself (well
  under a millisecond: cheaper than a thread hand-off), but it never *waits* there for the
  write lock: the inline attempt never waits, and when another connection holds the lock
  (the other worker committing or checkpointing, a backup, a ``BEGIN EXCLUSIVE``) the batch
  goes to a thread that waits up to ``store_timeout_s`` for it (503 after that, nothing
  written) while the loop keeps serving. The workers' own writes queue on a lock file in
  front of SQLite's lock (:mod:`serving.store.write_lock`), so such a wait ends when the
  holder lets go.
- ``async`` (PostgreSQL): batches are coroutines on the event loop (the store's
  ``async_writer()``), as are the request-path reads (its ``group_reader()``, if any).
- ``thread`` (e.g. SQLite with ``synchronous=FULL``): one writer thread.

The periodic jobs (settling expired decisions, and the store's own ``periodic_jobs()``, such as
SQLite's checkpoints) run in the writer thread between batches, or in a jobs thread of their
own in the other two modes, never in the loop.

An outage costs a request at most about one and a half time-outs: when a batch fails because
the store is unavailable (after waiting up to ``store_timeout_s`` for the lock, a connection or
an answer), every write queued behind it that has waited ``OUTAGE_SHARE`` of the time-out
already fails at once with the same 503 instead of starting a wait of its own (which made
requests answer after up to twice the time-out); the writes queued later are tried again, so a
batch that failed fast (a dropped connection) costs the writes behind it nothing.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import queue
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, cast

from bandits.errors import check_real
from serving.errors import StoreUnavailableError
from serving.retries import RetryConflictError
from serving.store.base import COMMIT_MODES, Store
from serving.store.errors import StoreBusyError, store_unavailable
from serving.store.types import BatchResult, FeedbackResult, FeedbackWrite, PeriodicJob, Row

if TYPE_CHECKING:  # only for annotations: the async helpers live in the backend module
    from serving.store.postgresql import AsyncBatchWriter, GroupReader

logger = logging.getLogger(__name__)

#: A write queued behind a batch that failed with an outage fails with it once it has waited
#: this share of ``store_timeout_s``; a write queued later gets an attempt of its own. So no
#: write waits more than (1 + OUTAGE_SHARE) time-outs in all.
OUTAGE_SHARE = 0.5


def longest_write_wait(timeout_s: float) -> float:
    """The longest a queued write waits before it commits or fails (503), for a store
    time-out of ``timeout_s``: what the settle sweep must wait past a reward window, so that
    a feedback received inside the window is never settled away while it waits for the store.
    """
    return (1.0 + OUTAGE_SHARE) * timeout_s


@dataclass
class _Item:
    kind: str  # "decision", "feedback" or "events"
    # A decision row, a feedback write, or the writes of one events request (committed
    # together: one item is never split over two transactions, nor retried in parts).
    payload: Row | FeedbackWrite | list[FeedbackWrite]
    # None for a decision, a list of results for an events request.
    future: asyncio.Future[FeedbackResult | list[FeedbackResult] | None]
    queued_at: float = field(default_factory=time.monotonic)


def _split(batch: list[_Item]) -> tuple[list[_Item], list[_Item], list[FeedbackWrite]]:
    """The decision items, the feedback/events items, and the feedback writes in item order."""
    decisions = [i for i in batch if i.kind == "decision"]
    feedback = [i for i in batch if i.kind != "decision"]
    writes: list[FeedbackWrite] = []
    for item in feedback:
        if item.kind == "events":
            writes.extend(cast("list[FeedbackWrite]", item.payload))
        else:
            writes.append(cast(FeedbackWrite, item.payload))
    return decisions, feedback, writes


def _refused(batch: list[_Item], exc: Exception) -> tuple[list[_Item], list[_Item]] | None:
    """The item holding the write a :class:`~serving.retries.RetryConflictError` refused (a
    client's 409), and the batch's other items, which then commit as one batch without it:
    retrying each write alone would let one client's reused key cost its neighbours a commit
    each (and a thread hop). None for any other failure, or a batch of that item alone.
    """
    if not isinstance(exc, RetryConflictError) or len(batch) == 1:
        return None
    bad = [item for item in batch if item.kind != "decision" and any(
        write.values is exc.values for write in (
            cast("list[FeedbackWrite]", item.payload) if item.kind == "events"
            else [cast(FeedbackWrite, item.payload)]))]
    if len(bad) != 1:
        return None
    return bad, [item for item in batch if item is not bad[0]]


class GroupCommitWriter:
    """The only code path that writes to the store during serving.

    Parameters
    ----------
    store : Store
        Also says how to commit (``commit_mode``) and which upkeep jobs to run
        (``periodic_jobs()``).
    batch_max : int
        Most requests per transaction.
    jobs : list of PeriodicJob
        Run between batches (``thread``) or in a jobs thread (``inline``, ``async``).
    tick_s : float, default 0.01
        Longest wait for work before the periodic jobs are checked.
    on_counted : callable, optional
        Called after a commit that changed the posterior counts (in the writer thread or the
        event loop; it must be thread-safe and quick).
    linger_s : float, default 0
        ``inline`` and ``async``: how long a batch stays open for more writes after its first
        one was queued (unless ``batch_max`` are queued), so that writes arriving one at a
        time share a commit; a write waits up to this much longer for its commit. 0: a batch
        is committed once the writes ready in one turn of the event loop have joined it.
    slow_commit_s : float, optional
        ``inline`` and ``async``: log (WARNING) every batch whose commit took this long or
        longer, waits for the write lock included (the stall log, ``stall_log_ms``: a commit
        that waits holds up its requests, not the event loop). None (default): not timed.

    Raises
    ------
    TypeError
        If ``linger_s`` is not a real number.
    ValueError
        If the store's ``commit_mode`` is not one of ``COMMIT_MODES``, or ``linger_s`` is
        negative or not finite.
    """

    def __init__(self, store: Store, *, batch_max: int, jobs: list[PeriodicJob] | None = None,
                 tick_s: float = 0.01, on_counted: Callable[[], None] | None = None,
                 linger_s: float = 0.0, slow_commit_s: float | None = None) -> None:
        self.store = store
        self.mode = store.commit_mode
        if self.mode not in COMMIT_MODES:
            raise ValueError(f"store.commit_mode must be one of {list(COMMIT_MODES)}, got "
                             f"{self.mode!r}")
        self._pending: list[_Item] = []
        self._tasks: list[asyncio.Task[None]] = []
        self._running = False
        self.on_counted = on_counted
        self.batch_max = batch_max
        self.jobs = {job.name: job for job in jobs or []}
        for job in store.periodic_jobs():  # the backend's upkeep, off the request path
            self.jobs.setdefault(job.name, job)
        self.tick_s = tick_s
        self.linger_s = check_real(linger_s, "linger_s", low=0)
        self.slow_commit_s = slow_commit_s
        self._lingering: asyncio.Future[None] | None = None  # set while a batch lingers
        self._queue: queue.SimpleQueue[_Item | None] = queue.SimpleQueue()
        self._thread: threading.Thread | None = None
        self._jobs_thread: threading.Thread | None = None
        self._jobs_stop = threading.Event()
        self._loop: asyncio.AbstractEventLoop | None = None
        self._stopping = False
        self.reader: GroupReader | None = None  # the store's group reader in async mode, if any
        self._async_writer: AsyncBatchWriter | None = None
        self.batches = 0
        self.items = 0
        self.waited_batches = 0  # inline batches that had to wait for the lock in a thread

    # ------------------------------------------------------------------ lifecycle
    def start(self, loop: asyncio.AbstractEventLoop) -> None:
        """Start writing, per the store's commit mode.

        ``thread``: one writer thread that also runs the periodic jobs. ``inline`` and
        ``async``: a commit task on ``loop`` and a thread for the jobs; ``async`` also opens the
        store's async batch writer and starts its group reader.
        """
        self._loop = loop
        self._running = True
        if self.mode == "thread":
            self._thread = threading.Thread(target=self._run, name="recbandits-writer",
                                            daemon=True)
            self._thread.start()
            return
        self._wake = asyncio.Event()
        if self.mode == "async":
            self._async_writer = self.store.async_writer()
            self.reader = self.store.group_reader()
            if self.reader is not None:
                self.reader.start()
        self._tasks = [loop.create_task(self._loop_commits())]
        self._jobs_stop.clear()
        self._jobs_thread = threading.Thread(target=self._jobs_loop, name="recbandits-jobs",
                                             daemon=True)
        self._jobs_thread.start()

    async def aclose(self, timeout: float = 10.0) -> None:
        """Commit what is queued, then stop."""
        if not self._running:
            return
        self._stopping = True
        if self.mode == "thread":
            self._queue.put(None)
            await asyncio.to_thread(self._thread.join, timeout)  # type: ignore[union-attr]  # started by start() in thread mode
            self._thread = None
        else:
            self._end_linger()
            # The batch in flight completes (a batch waiting for SQLite's lock is bounded by
            # the store's time-out: cancelling it could leave a write committed by its thread
            # after its request was told it failed); then what is still queued.
            self._wake.set()
            deadline = time.monotonic() + timeout
            busy_deadline = deadline + self.store.timeout_s
            while ((self._pending and time.monotonic() < deadline)
                   or (self._busy and time.monotonic() < busy_deadline)):
                await asyncio.sleep(0.005)
            for task in self._tasks:
                task.cancel()
            await asyncio.gather(*self._tasks, return_exceptions=True)
            self._tasks = []
            _set_results([(item, None, StoreUnavailableError("the store writer stopped"))
                          for item in self._pending])
            self._pending = []
            self._jobs_stop.set()
            if self._jobs_thread is not None:
                await asyncio.to_thread(self._jobs_thread.join, timeout)
                self._jobs_thread = None
            if self.reader is not None:
                await self.reader.aclose()
            if self._async_writer is not None:
                await self._async_writer.aclose()
        self._running = False
        logger.info("store writer (%s) stopped: %d batches, %d writes, %d waited for the lock",
                    self.mode, self.batches, self.items, self.waited_batches)

    _busy = False

    # ------------------------------------------------------------------ inline and async
    async def _loop_commits(self) -> None:
        while True:
            await self._wake.wait()
            self._wake.clear()
            # One turn of the loop lets every request that is ready join this batch.
            await asyncio.sleep(0)
            await self._linger()
            batch, self._pending = (self._pending[:self.batch_max],
                                    self._pending[self.batch_max:])
            if self._pending:
                self._wake.set()
            if not batch:
                continue
            self._busy = True
            started = time.perf_counter() if self.slow_commit_s is not None else 0.0
            lock_waits = self.waited_batches
            try:
                if self.mode == "async":
                    outcomes = await self._commit_async(batch)
                else:
                    outcomes = await self._commit_inline(batch)
                if (self.slow_commit_s is not None
                        and time.perf_counter() - started >= self.slow_commit_s):
                    logger.warning("a batch of %d writes took %.1f ms to commit%s", len(batch),
                                   1e3 * (time.perf_counter() - started),
                                   " (it waited for the write lock in a thread)"
                                   if self.waited_batches != lock_waits else "")
            except BaseException as exc:  # cancelled mid-batch: nobody may wait forever
                _set_results([(item, None, StoreUnavailableError(
                    f"the store writer stopped ({type(exc).__name__})")) for item in batch])
                raise
            finally:
                self._busy = False
            _set_results(outcomes)
            outage = _outage(outcomes)
            if outage is not None and self._pending:
                # Queued while the batch waited in vain: the same 503 now, not a second wait.
                waited, self._pending = self._waited(self._pending)
                _set_results([(item, None, outage) for item in waited])

    async def _linger(self) -> None:
        """Keep the batch open until ``linger_s`` after its first write was queued, unless
        ``batch_max`` are queued or the writer stops meanwhile.
        """
        # A write that arrives alone pays a whole transaction. SQLite, 1,600 decisions with
        # the 100-value context, the store alone (load 3.9): committed one at a time 76-91 us
        # of CPU and 7.4 WAL frames (29 KiB) each, by fours 31-32 us and 2.8 frames, by eights
        # 24-26 us and 2.0 frames; in process, a whole recommendation costs 316-319 us one at
        # a time, 182-212 us four at a time. At half the bare endpoint's rate
        # (bench/serving_load.py) they arrive about one at a time. Over HTTP (two services side
        # by side, 1,200 requests/s alternated four times, load 3.9-5.4): 285 us of server CPU
        # a recommendation with a 1 ms linger, 310 us without (median); equal (210, 212 us)
        # at 2,400/s, where that loaded machine's worker was behind and batched anyway.
        pending = self._pending
        if self.linger_s <= 0 or self._stopping or not pending or len(pending) >= self.batch_max:
            return
        delay = pending[0].queued_at + self.linger_s - time.monotonic()
        if delay <= 0:
            return
        loop = asyncio.get_running_loop()
        self._lingering = waiter = loop.create_future()
        timer = loop.call_later(delay, _resolve_once, waiter)
        try:
            await waiter
        finally:
            timer.cancel()
            self._lingering = None

    def _end_linger(self) -> None:
        """Commit the lingering batch now (it is full, or the writer stops)."""
        if self._lingering is not None:
            _resolve_once(self._lingering)

    async def _commit_inline(self, batch: list[_Item]) -> list[_Outcome]:
        try:
            return self._commit(batch, wait=False)
        except _BatchHasBadWriteError:
            # One bad write failed the batch (rolled back): each is committed alone, in a
            # thread, where waiting for the lock cannot stall the loop.
            return await asyncio.to_thread(self._commit_each, batch, True)
        except StoreBusyError:
            # Locked by another connection (or a write to retry alone): wait in a thread, not
            # in the loop.
            self.waited_batches += 1
            return await asyncio.to_thread(self._commit, batch, wait=True)

    async def _commit_async(self, batch: list[_Item]) -> list[_Outcome]:
        decisions, feedback, writes = _split(batch)
        try:
            result = await self._async_writer.write_batch(  # type: ignore[union-attr]  # set by start() in async mode
                cast("list[Row]", [i.payload for i in decisions]), writes)
        except Exception as exc:
            refused = _refused(batch, exc)
            if refused is not None:
                bad, rest = refused
                return [(bad[0], None, exc), *await self._commit_async(rest)]
            retry = self._failed(batch, exc)
            if retry is not None:
                return retry
            outcomes: list[_Outcome] = []
            for n, item in enumerate(batch):
                outcomes += await self._commit_async([item])
                if _stop_at_outage(outcomes, batch[n + 1:]):
                    break
            return outcomes
        return self._succeeded(decisions, feedback, result)

    def _jobs_loop(self) -> None:
        while not self._jobs_stop.wait(self._wait_s()):
            self._run_jobs()

    def request(self, job: str) -> None:
        """Ask for ``job`` to run as soon as the current batch is done."""
        self.jobs[job].wanted = True

    # ------------------------------------------------------------------ submitting
    async def write_decision(self, row: Row) -> None:
        """Queue the decision ``row`` (the ``decisions`` columns); return once it is committed.

        Raises
        ------
        StoreUnavailableError
            When the writer is not running, or the database is down or locked (HTTP 503);
            another error of the store while writing this row is raised as it came.
        """
        await self._submit("decision", row)

    async def write_feedback(self, write: FeedbackWrite) -> FeedbackResult:
        """Queue the feedback ``write``; return its stored row once committed.

        Raises
        ------
        StoreUnavailableError
            As :meth:`write_decision`.
        """
        # A feedback item always resolves to its result (None is a decision's).
        return cast(FeedbackResult, await self._submit("feedback", write))

    async def write_events(self, writes: list[FeedbackWrite]) -> list[FeedbackResult]:
        """Queue the writes of one events request; return their results once committed.

        They are committed in one transaction, in order: all or none.

        Raises
        ------
        StoreUnavailableError
            As :meth:`write_decision`.
        """
        return cast("list[FeedbackResult]", await self._submit("events", writes))

    async def _submit(self, kind: str, payload: Row | FeedbackWrite | list[FeedbackWrite]
                      ) -> FeedbackResult | list[FeedbackResult] | None:
        if not self._running or self._stopping:
            raise StoreUnavailableError("the store writer is not running")
        future = asyncio.get_running_loop().create_future()
        if self.mode == "thread":
            self._queue.put(_Item(kind, payload, future))
        else:
            self._pending.append(_Item(kind, payload, future))
            self._wake.set()
            if len(self._pending) >= self.batch_max:
                self._end_linger()
        return await future

    # ------------------------------------------------------------------ the thread
    def _run(self) -> None:
        carried: list[_Item] = []  # queued behind a failed batch, not waited long: next batch
        stop = False
        while True:
            batch, carried = carried[:self.batch_max], carried[self.batch_max:]
            stop = self._fill(batch, stop)
            if batch:
                outcomes = self._commit(batch)
                outage = _outage(outcomes)
                if outage is not None:
                    # Queued while the batch waited in vain: the same 503 now, not a second
                    # wait each.
                    queued, stop = self._drain(stop)
                    waited, later = self._waited(queued)
                    outcomes += [(item, None, outage) for item in waited]
                    carried += later
                self._resolve(outcomes)
            self._run_jobs()
            if stop and not carried:
                return

    def _fill(self, batch: list[_Item], stop: bool) -> bool:
        """Top ``batch`` up to ``batch_max`` from the queue; whether the stop sentinel came.

        An empty ``batch`` first waits for one item until the next periodic job is due (1 s at
        most; not at all once ``stop`` is set); then whatever is queued is taken without
        waiting.
        """
        if not batch and not stop:
            try:
                first = self._queue.get(timeout=self._wait_s())
            except queue.Empty:
                first = None
            else:
                if first is None:
                    stop = True
                else:
                    batch.append(first)
        while len(batch) < self.batch_max:
            try:
                item = self._queue.get_nowait()
            except queue.Empty:
                break
            if item is None:
                stop = True
                continue
            batch.append(item)
        return stop

    def _waited(self, items: list[_Item]) -> tuple[list[_Item], list[_Item]]:
        """``items`` that have waited ``OUTAGE_SHARE`` of the time-out, and the others."""
        limit = time.monotonic() - OUTAGE_SHARE * self.store.timeout_s
        return ([i for i in items if i.queued_at <= limit],
                [i for i in items if i.queued_at > limit])

    def _drain(self, stop: bool) -> tuple[list[_Item], bool]:
        """Everything queued now, and whether the stop sentinel was among it (or ``stop``)."""
        items: list[_Item] = []
        while True:
            try:
                item = self._queue.get_nowait()
            except queue.Empty:
                return items, stop
            if item is None:
                stop = True
            else:
                items.append(item)

    def _wait_s(self) -> float:
        now = time.monotonic()
        waits = [self.tick_s if job.wanted else job.last + job.interval_s - now
                 for job in self.jobs.values()]
        return max(0.0005, min([1.0, *waits]))

    def _run_jobs(self) -> None:
        now = time.monotonic()
        for job in self.jobs.values():
            if job.wanted or now - job.last >= job.interval_s:
                job.wanted = False
                job.last = now
                try:
                    job.fn()
                except Exception as exc:  # a failed job must not kill the writer
                    unavailable = store_unavailable(exc)
                    if unavailable is None:
                        logger.exception("periodic job %s failed", job.name)
                    else:
                        logger.warning("periodic job %s: %s", job.name, unavailable.message)

    def _commit(self, batch: list[_Item], *, wait: bool | None = None) -> list[_Outcome]:
        """Commit ``batch``; the outcome of every item (``wait`` as in SQLite's write_batch)."""
        decisions, feedback, writes = _split(batch)
        kwargs = {} if wait is None else {"wait": wait}
        try:
            result = self.store.write_batch(cast("list[Row]", [i.payload for i in decisions]),
                                            writes, **kwargs)
        except StoreBusyError:
            raise  # nothing was written: the caller retries the batch waiting for the lock
        except Exception as exc:
            refused = _refused(batch, exc)
            if refused is not None:
                # Its neighbours commit without it (a StoreBusyError of theirs sends the whole
                # batch to the caller's retry, where the key is refused again).
                bad, rest = refused
                return [(bad[0], None, exc), *self._commit(rest, wait=wait)]
            retry = self._failed(batch, exc)
            if retry is not None:
                return retry
            if wait is False:
                raise _BatchHasBadWriteError from exc
            return self._commit_each(batch, wait)
        return self._succeeded(decisions, feedback, result)

    def _commit_each(self, batch: list[_Item], wait: bool | None) -> list[_Outcome]:
        outcomes: list[_Outcome] = []
        for n, item in enumerate(batch):
            outcomes += self._commit([item], wait=wait)
            if _stop_at_outage(outcomes, batch[n + 1:]):
                break
        return outcomes

    def _failed(self, batch: list[_Item], exc: Exception) -> list[_Outcome] | None:
        """Outcomes failing the whole ``batch``, or None to retry each write alone."""
        unavailable = store_unavailable(exc)
        if len(batch) == 1 or unavailable is not None:
            # An outage fails the whole batch at once (503): retrying each write alone
            # would hold every later request for one more time-out per write.
            error = unavailable if unavailable is not None else exc
            return [(item, None, error) for item in batch]
        # One bad write must not fail its neighbours: retry each alone.
        logger.warning("batch of %d failed (%s); retrying one by one", len(batch), exc)
        return None

    def _succeeded(self, decisions: list[_Item], feedback: list[_Item],
                   result: BatchResult) -> list[_Outcome]:
        self.batches += 1
        self.items += len(decisions) + len(feedback)
        outcomes: list[_Outcome] = [(i, None, None) for i in decisions]
        results = iter(result.feedback)
        for item in feedback:
            if item.kind == "events":
                n = len(cast("list[FeedbackWrite]", item.payload))
                outcomes.append((item, [next(results) for _ in range(n)], None))
            else:
                outcomes.append((item, next(results), None))
        if result.counted and self.on_counted is not None:
            self.on_counted()
        return outcomes

    def _resolve(self, outcomes: list[_Outcome]) -> None:
        """From the writer thread: hand ``outcomes`` to the loop in one call."""
        assert self._loop is not None  # set by start(); internal invariant, not user input
        with contextlib.suppress(RuntimeError):  # the loop is closed: nobody is waiting
            self._loop.call_soon_threadsafe(_set_results, outcomes)


_Outcome = tuple[_Item, FeedbackResult | list[FeedbackResult] | None, BaseException | None]


class _BatchHasBadWriteError(Exception):
    """The event loop's attempt at a batch failed for one of its writes (nothing written)."""


def _outage(outcomes: list[_Outcome]) -> StoreUnavailableError | None:
    """The 503 that failed a whole batch (``outcomes``) because the store is unavailable, or
    None (the batch, or some of its writes, succeeded or failed for another reason).
    """
    if not outcomes:
        return None
    error = outcomes[0][2]
    if not isinstance(error, StoreUnavailableError):
        return None
    return error if all(outcome[2] is error for outcome in outcomes) else None


def _stop_at_outage(outcomes: list[_Outcome], rest: list[_Item]) -> bool:
    """When the last write retried alone failed with an outage, fail ``rest`` with the same
    503 (appended to ``outcomes``) rather than wait one more time-out for each; whether it did.
    """
    outage = _outage(outcomes[-1:])
    if outage is None:
        return False
    outcomes += [(item, None, outage) for item in rest]
    return True


def _resolve_once(future: asyncio.Future[None]) -> None:
    if not future.done():
        future.set_result(None)


def _set_results(outcomes: list[_Outcome]) -> None:
    for item, result, error in outcomes:
        if item.future.done():
            continue
        if error is not None:
            item.future.set_exception(error)
        else:
            item.future.set_result(result)


__all__ = ["BatchResult", "GroupCommitWriter", "PeriodicJob"]
