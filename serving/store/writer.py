"""Group commit: one writer thread per process commits many requests in one transaction.

A request hands its write to the writer and awaits a future; the writer takes everything queued
(up to ``batch_max``), commits it in one transaction and then resolves all the futures in one
call into the event loop. Under load the cost of a commit (an fsync on SQLite, a round trip on
PostgreSQL) is shared by the whole batch, and no response is sent before its write is durable.
Between batches (and when idle, every ``tick_s``) the thread runs the periodic jobs: re-reading
the posterior counts and settling expired decisions.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import queue
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from serving.errors import StoreUnavailableError
from serving.store.repository import (
    BatchResult,
    FeedbackResult,
    FeedbackWrite,
    Store,
    store_unavailable,
)

logger = logging.getLogger(__name__)


@dataclass
class _Item:
    kind: str  # "decision" or "feedback"
    payload: Any
    future: asyncio.Future[Any]


@dataclass
class PeriodicJob:
    """``fn`` runs in the writer thread every ``interval_s`` (and when ``request()``-ed)."""

    name: str
    interval_s: float
    fn: Callable[[], None]
    last: float = 0.0
    wanted: bool = False


class GroupCommitWriter:
    """The only code path that writes to the store during serving.

    Parameters
    ----------
    store : Store
    batch_max : int
        Most requests per transaction.
    jobs : list of PeriodicJob
        Run in the writer thread between batches.
    tick_s : float, default 0.01
        Longest wait for work before the periodic jobs are checked.
    on_counted : callable, optional
        Called (in the writer thread) after a commit that changed the posterior counts.
    inline : bool, default False
        Commit in the event loop itself instead of a thread: for a local SQLite file whose
        commits (WAL, ``synchronous=NORMAL``) take well under a millisecond, this saves the
        thread hand-offs and the contention for the GIL that cost more than the commit.
    """

    def __init__(self, store: Store, *, batch_max: int, jobs: list[PeriodicJob] | None = None,
                 tick_s: float = 0.01, on_counted: Callable[[], None] | None = None,
                 inline: bool = False) -> None:
        self.store = store
        self.inline = inline
        self._pending: list[_Item] = []
        self._tasks: list[asyncio.Task[None]] = []
        self._running = False
        self.on_counted = on_counted
        self.batch_max = batch_max
        self.jobs = {job.name: job for job in jobs or []}
        self.tick_s = tick_s
        self._queue: queue.SimpleQueue[_Item | None] = queue.SimpleQueue()
        self._thread: threading.Thread | None = None
        self._loop: asyncio.AbstractEventLoop | None = None
        self._stopping = False
        self.batches = 0
        self.items = 0

    # ------------------------------------------------------------------ lifecycle
    def start(self, loop: asyncio.AbstractEventLoop) -> None:
        self._loop = loop
        self._running = True
        if self.inline:
            self._wake = asyncio.Event()
            self._tasks = [loop.create_task(self._inline_commits()),
                           loop.create_task(self._inline_jobs())]
            return
        self._thread = threading.Thread(target=self._run, name="recbandits-writer", daemon=True)
        self._thread.start()

    async def aclose(self, timeout: float = 10.0) -> None:
        """Commit what is queued, then stop."""
        if not self._running:
            return
        self._stopping = True
        if self.inline:
            for task in self._tasks:
                task.cancel()
            while self._pending:
                batch, self._pending = (self._pending[:self.batch_max],
                                        self._pending[self.batch_max:])
                self._commit(batch)
        else:
            self._queue.put(None)
            await asyncio.to_thread(self._thread.join, timeout)
            self._thread = None
        self._running = False

    # ------------------------------------------------------------------ inline mode
    async def _inline_commits(self) -> None:
        while True:
            await self._wake.wait()
            self._wake.clear()
            # One turn of the loop lets every request that is ready join this batch.
            await asyncio.sleep(0)
            batch, self._pending = (self._pending[:self.batch_max],
                                    self._pending[self.batch_max:])
            if self._pending:
                self._wake.set()
            if batch:
                self._commit(batch)

    async def _inline_jobs(self) -> None:
        while True:
            await asyncio.sleep(self._wait_s())
            self._run_jobs()

    def request(self, job: str) -> None:
        """Ask for ``job`` to run as soon as the current batch is done."""
        self.jobs[job].wanted = True

    # ------------------------------------------------------------------ submitting
    async def write_decision(self, row: dict[str, Any]) -> None:
        await self._submit("decision", row)

    async def write_feedback(self, write: FeedbackWrite) -> FeedbackResult:
        return await self._submit("feedback", write)

    async def _submit(self, kind: str, payload: Any) -> Any:
        if not self._running or self._stopping:
            raise StoreUnavailableError("the store writer is not running")
        future = asyncio.get_running_loop().create_future()
        if self.inline:
            self._pending.append(_Item(kind, payload, future))
            self._wake.set()
        else:
            self._queue.put(_Item(kind, payload, future))
        return await future

    # ------------------------------------------------------------------ the thread
    def _run(self) -> None:
        while True:
            batch: list[_Item] = []
            stop = False
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
            if batch:
                self._commit(batch)
            self._run_jobs()
            if stop:
                return

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

    def _commit(self, batch: list[_Item]) -> None:
        decisions = [i for i in batch if i.kind == "decision"]
        feedback = [i for i in batch if i.kind == "feedback"]
        try:
            result = self.store.write_batch([i.payload for i in decisions],
                                            [i.payload for i in feedback])
        except Exception as exc:
            unavailable = store_unavailable(exc)
            if len(batch) == 1 or unavailable is not None:
                # An outage fails the whole batch at once (503): retrying each write alone
                # would hold every later request for one more time-out per write.
                error = unavailable if unavailable is not None else exc
                self._resolve([(item, None, error) for item in batch])
                return
            # One bad write must not fail its neighbours: retry each alone.
            logger.warning("batch of %d failed (%s); retrying one by one", len(batch), exc)
            for item in batch:
                self._commit([item])
            return
        self.batches += 1
        self.items += len(batch)
        outcomes: list[tuple[_Item, Any, BaseException | None]] = [
            (i, None, None) for i in decisions
        ]
        outcomes += [(i, r, None) for i, r in zip(feedback, result.feedback, strict=True)]
        if result.counted and self.on_counted is not None:
            self.on_counted()
        self._resolve(outcomes)

    def _resolve(self, outcomes: list[tuple[_Item, Any, BaseException | None]]) -> None:
        if self.inline:
            _set_results(outcomes)
            return
        assert self._loop is not None  # set by start(); internal invariant, not user input
        with contextlib.suppress(RuntimeError):  # the loop is closed: nobody is waiting
            self._loop.call_soon_threadsafe(_set_results, outcomes)


def _set_results(outcomes: list[tuple[_Item, Any, BaseException | None]]) -> None:
    for item, result, error in outcomes:
        if item.future.done():
            continue
        if error is not None:
            item.future.set_exception(error)
        else:
            item.future.set_result(result)


__all__ = ["BatchResult", "GroupCommitWriter", "PeriodicJob"]
