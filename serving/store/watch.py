"""How long the store has left a worker's call unanswered: what its thread hops time out on.

A request that hands store work to a thread cannot interrupt that thread, and a server that
stops answering without closing its connections (a frozen process, a stalled disk: the kernel
still acknowledges every packet) fires no socket, server or lock time-out. So the service times
out the *wait*: every store call it runs in a thread, and the refresher's, registers itself
here while it runs, and a request waiting on one answers 503 once any call has gone
``store_timeout_s`` without an answer (:meth:`serving.service.RecommendationService.in_thread`).

A wait for one of the service's own locks is not the store's: a call that waits for a lock
pauses its registration meanwhile (:meth:`StoreWatch.paused`), so a refresh that waits while a
retrain publishes its arms (seconds of CPU and disk under the lock) is never taken for a store
that does not answer.
"""

from __future__ import annotations

import contextlib
import itertools
import threading
import time
from collections.abc import Iterator


class StoreWatch:
    """The store calls in flight in one worker and when each began (thread-safe)."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._begun: dict[int, float] = {}
        self._tokens = itertools.count()
        self._mine = threading.local()  # the token of the call this thread is in, if any

    @contextlib.contextmanager
    def call(self) -> Iterator[None]:
        """Register the store call this block makes (nested blocks: the outermost counts)."""
        if getattr(self._mine, "token", None) is not None:
            yield
            return
        token = next(self._tokens)
        self._begin(token)
        self._mine.token = token
        try:
            yield
        finally:
            self._mine.token = None
            self._end(token)

    @contextlib.contextmanager
    def paused(self) -> Iterator[None]:
        """Leave this thread's call out while the block waits (for a lock of the service's);
        it counts again, from the block's end, afterwards.
        """
        token = getattr(self._mine, "token", None)
        if token is None:
            yield
            return
        self._end(token)
        try:
            yield
        finally:
            self._begin(token)

    def unanswered_s(self) -> float:
        """How long the oldest call in flight has been waiting (0.0 with none)."""
        with self._lock:
            oldest = min(self._begun.values(), default=None)
        return 0.0 if oldest is None else time.monotonic() - oldest

    def _begin(self, token: int) -> None:
        with self._lock:
            self._begun[token] = time.monotonic()

    def _end(self, token: int) -> None:
        with self._lock:
            self._begun.pop(token, None)


__all__ = ["StoreWatch"]
