"""The live push's hub: each worker's open streams and the one reader of the log's tail.

``GET /users/{id}/stream`` (:mod:`serving.api.routes.stream`) pushes a user's refreshed slate
and the policy panel after each of their feedbacks, whichever worker (or host) took the
feedback. Why Server-Sent Events rather than a WebSocket: the push is one-way (the page sends
its feedback with plain ``POST /feedback`` as before), SSE is one long plain-HTTP response that
proxies and load balancers pass through without an upgrade, the browser's ``EventSource``
reconnects by itself and sends ``Last-Event-ID``, which is exactly the resume point the log can
serve, and the server side is a Starlette ``StreamingResponse`` over an async generator (which
Starlette cancels when the client disconnects) instead of a second protocol stack.

How an update reaches a stream. Workers share nothing but the store, so the log is the bus:
while a worker has open streams, one task per worker reads the feedback logged after the
lowest position its streams have seen, for the users with open streams only
(:meth:`~serving.store.base.Store.feedback_after`): one query per worker per
``stream_poll_s`` (50 ms), not one per stream, and nothing at all without streams. It works
the same on every backend (the store method is the only SQL). Feedback positions (``seq``)
are handed out in commit order, so "everything after position n" never misses a row that
commits late, and an event's id is the position of the newest feedback it reflects: a client
reconnecting with ``Last-Event-ID: n`` is sent every feedback of its user after ``n``.

Coalescing: a stream sends one event for all the feedback that arrived since its last event
(listed in the event), with one fresh slate. The slate pushed is a decision shown to the user,
so it is made and logged by the service's ``recommend`` like any other; a slate per feedback of
a burst would log decisions nobody saw, which would settle at the default reward and count
against their arms.

Slow readers: drop and resync. Each stream holds at most ``stream_queue`` unsent feedback
rows; the log reader never waits for a stream (it only appends and sets an event). When a
stream's rows overflow, they are dropped and the stream re-reads its user's feedback after its
last sent position from the log (one query, that stream only) when its reader next keeps up.
Nothing is lost and memory stays bounded; a reader blocked on a full socket only blocks its own
generator (the server's flow control), never the worker.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import signal
import threading
from collections.abc import Callable, Iterable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from types import FrameType
from typing import Any

from serving.errors import ServingError, StoreUnavailableError
from serving.store import Store

logger = logging.getLogger(__name__)


class StreamLimitError(ServingError):
    """Raised when the worker already holds its ``stream_max`` open streams (HTTP 503).

    ``message`` (as for every :class:`ServingError`) says which limit was reached.
    """

    status_code = 503
    code = "too_many_streams"


@dataclass(eq=False)
class Stream:
    """One open stream of ``user_id``: what it has sent and what waits to be sent.

    Attributes
    ----------
    sent : int
        Log position of the newest feedback the stream has sent (its last event id).
    fetched : int
        Position up to which the log reader has handed this stream its user's feedback.
    pending : list of dict
        Feedback rows not yet sent (at most ``capacity``).
    resync : bool
        Rows were dropped: the next read goes to the log from ``sent``.
    dropped : int
        How many times rows were dropped (tests and logs).
    closing : bool
        The stream is being shut down: it sends nothing more.
    wake : asyncio.Event
        Set when rows arrive or the stream closes, to wake the task that sends them.
    """

    user_id: int
    sent: int
    capacity: int
    fetched: int = 0
    pending: list[dict[str, Any]] = field(default_factory=list)
    resync: bool = False
    dropped: int = 0
    closing: bool = False
    wake: asyncio.Event = field(default_factory=asyncio.Event)

    def __post_init__(self) -> None:
        self.fetched = max(self.fetched, self.sent)

    def offer(self, rows: list[dict[str, Any]], head: int) -> None:
        """Queue the rows the log reader found (never waits); ``head``: the read's position."""
        fresh = [r for r in rows if r["seq"] > self.fetched]
        self.fetched = max(self.fetched, head)
        if not fresh:
            return
        if len(self.pending) + len(fresh) > self.capacity:
            # Drop and resync: the log still holds every row.
            self.pending.clear()
            self.resync = True
            self.dropped += 1
        else:
            self.pending.extend(fresh)
        self.wake.set()

    def close(self) -> None:
        """End the stream at its next wake-up (the server is shutting down)."""
        self.closing = True
        self.wake.set()


class StreamHub:
    """The per-worker registry of open streams and the log-tail reader that feeds them.

    Parameters
    ----------
    store : Store
    max_streams : int
        Streams open at once; :meth:`open` raises beyond.
    queue_size : int
        Unsent feedback rows a stream may hold (see the module doc: drop and resync).
    poll_s : float
        Seconds between two reads of the log's tail while any stream is open.
    """

    def __init__(self, store: Store, *, max_streams: int, queue_size: int,
                 poll_s: float) -> None:
        self.store = store
        self.max_streams = max_streams
        self.queue_size = queue_size
        self.poll_s = poll_s
        self._streams: dict[int, set[Stream]] = {}
        self._count = 0
        self._task: asyncio.Task[None] | None = None
        # Its own thread: the tail read never waits behind the service's readers, nor blocks
        # the event loop.
        self._executor = ThreadPoolExecutor(1, thread_name_prefix="recbandits-stream")
        self.polls = 0
        self._signals_chained = False

    @property
    def open_count(self) -> int:
        """Streams open in this worker."""
        return self._count

    async def read_tail(self, after: int, user_ids: Iterable[int]
                        ) -> tuple[int, list[dict[str, Any]]]:
        """``store.feedback_after(after, user_ids)`` in the hub's thread."""
        users = list(user_ids)
        return await asyncio.get_running_loop().run_in_executor(
            self._executor, self.store.feedback_after, after, users)

    def open(self, user_id: int, after: int) -> Stream:
        """Register a stream of ``user_id`` that has seen the log up to ``after``.

        Raises
        ------
        StreamLimitError
            ``max_streams`` streams are open already.
        """
        if self._count >= self.max_streams:
            raise StreamLimitError(
                f"this worker holds its maximum of {self.max_streams} open streams "
                "(stream_max); retry later or on another worker")
        stream = Stream(user_id, after, self.queue_size)
        self._streams.setdefault(user_id, set()).add(stream)
        self._count += 1
        if self._task is None or self._task.done():
            self._task = asyncio.get_running_loop().create_task(self._poll_loop(),
                                                                 name="recbandits-stream-tail")
        self._chain_exit_signals()
        return stream

    def close(self, stream: Stream) -> None:
        """Unregister ``stream`` (idempotent)."""
        group = self._streams.get(stream.user_id)
        if group is None or stream not in group:
            return
        group.discard(stream)
        if not group:
            del self._streams[stream.user_id]
        self._count -= 1

    def shutdown(self) -> None:
        """End every open stream (their clients reconnect elsewhere with Last-Event-ID)."""
        for group in list(self._streams.values()):
            for stream in group:
                stream.close()

    async def next_rows(self, stream: Stream, timeout: float) -> list[dict[str, Any]] | None:
        """The feedback rows ``stream`` has not sent yet, oldest first; None if nothing came
        within ``timeout`` seconds (a heartbeat is due) or the stream is closing. May be
        empty after a wake-up whose rows were all sent already.
        """
        if not stream.wake.is_set():
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(stream.wake.wait(), timeout)
        if not stream.wake.is_set() or stream.closing:
            return None
        stream.wake.clear()
        if stream.resync:
            stream.resync = False
            stream.pending.clear()
            head, rows = await self.read_tail(stream.sent, [stream.user_id])
            stream.fetched = max(stream.fetched, head)
        else:
            rows, stream.pending = stream.pending, []
        return [r for r in rows if r["seq"] > stream.sent]

    async def _poll_loop(self) -> None:
        loop = asyncio.get_running_loop()
        outage = False
        while self._count:
            started = loop.time()
            streams = [s for group in self._streams.values() for s in group]
            after = min(s.fetched for s in streams)
            try:
                head, rows = await self.read_tail(after, list(self._streams))
            except StoreUnavailableError as exc:  # once per outage; the next tick retries
                if not outage:
                    logger.warning("live push paused until the store is back: %s", exc.message)
                outage = True
            except Exception:  # must not end the task (the next tick retries), nor log 20/s
                if not outage:
                    logger.exception("reading the log's tail for the live push failed")
                outage = True
            else:
                outage = False
                self.polls += 1
                by_user: dict[int, list[dict[str, Any]]] = {}
                for row in rows:
                    by_user.setdefault(row["user_id"], []).append(row)
                # Only the streams open when the read started: it covered their users.
                for stream in streams:
                    stream.offer(by_user.get(stream.user_id, []), head)
            await asyncio.sleep(max(0.0, self.poll_s - (loop.time() - started)))

    def _chain_exit_signals(self) -> None:
        # uvicorn waits for open responses before it exits, and a stream never ends by
        # itself: on the signals uvicorn handles, end the streams, then call its handler.
        if self._signals_chained or threading.current_thread() is not threading.main_thread():
            return
        self._signals_chained = True
        loop = asyncio.get_running_loop()
        for sig in (signal.SIGINT, signal.SIGTERM):
            previous = signal.getsignal(sig)
            if not callable(previous):
                continue

            def handler(number: int, frame: FrameType | None,
                        previous: Callable[[int, FrameType | None], Any] = previous) -> None:
                loop.call_soon_threadsafe(self.shutdown)
                previous(number, frame)

            signal.signal(sig, handler)

    def describe(self) -> dict[str, Any]:
        """Counters for tests and logs."""
        return {"open": self._count, "users": len(self._streams), "polls": self.polls,
                "pid": os.getpid()}


__all__ = ["Stream", "StreamHub", "StreamLimitError"]
