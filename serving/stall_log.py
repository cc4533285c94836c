"""An opt-in log of what holds up a worker's event loop (setting ``stall_log_ms``; 0: off).

A request's latency at a fixed rate is the time it waits behind whatever runs in the worker's
event loop, or keeps the loop from running. To find the tail of that latency without a
profiler attached, a worker started with ``stall_log_ms`` > 0 logs (WARNING, logger
``serving.stall_log``):

- every turn of the event loop later than ``stall_log_ms`` (a heartbeat scheduled every
  quarter of it arrived that much late), with where the loop's thread was when the stall had
  lasted ``stall_log_ms`` (a watchdog thread reads its stack then) and the garbage collections
  that ran during it;
- every garbage collection that took ``stall_log_ms`` or longer (``gc.callbacks``), in any
  thread, with its generation;
- (the group-commit writer, ``slow_commit_s``) every commit that took that long, waits for the
  write lock included: such a wait holds up the requests in the batch, not the loop.

A stall with no stack was one in which the watchdog itself did not get to run: the process
had no CPU (the machine's other jobs) or a C call held the GIL throughout. Off by default: the
heartbeat and the watchdog cost a few microseconds each a millisecond; with the setting at 0
nothing of this module runs.
"""

from __future__ import annotations

import asyncio
import gc
import logging
import sys
import threading
import time
import traceback
from typing import Any

from bandits.errors import check_real

logger = logging.getLogger(__name__)

#: Frames of the loop thread's stack a stall's record shows (innermost last).
STACK_FRAMES = 12


class StallLog:
    """Log event-loop stalls and garbage collections of ``threshold_s`` or longer.

    Parameters
    ----------
    threshold_s : float
        Shortest stall or collection logged, in seconds (> 0).

    Raises
    ------
    TypeError
        If ``threshold_s`` is not a real number.
    ValueError
        If ``threshold_s`` is not finite and above 0.
    """

    def __init__(self, threshold_s: float) -> None:
        self.threshold_s = check_real(threshold_s, "threshold_s", low=0, low_open=True)
        # The heartbeat's period: a stall is seen within a quarter of the threshold.
        self.period_s = threshold_s / 4
        self.stalls = 0
        self.collections = 0
        self._loop: asyncio.AbstractEventLoop | None = None
        self._loop_thread: int | None = None
        self._beat = time.perf_counter()
        self._stack: list[str] | None = None  # the loop thread's, read during this stall
        self._gc_started = 0.0
        self._gc_log: list[tuple[float, float, int]] = []  # (start, seconds, generation)
        self._handle: asyncio.TimerHandle | None = None
        self._stop = threading.Event()
        self._watchdog: threading.Thread | None = None

    def start(self, loop: asyncio.AbstractEventLoop) -> None:
        """Watch ``loop`` (call from its own thread, once it runs)."""
        self._loop = loop
        self._loop_thread = threading.get_ident()
        self._beat = time.perf_counter()
        self._handle = loop.call_later(self.period_s, self._heartbeat)
        gc.callbacks.append(self._on_gc)
        self._stop.clear()
        self._watchdog = threading.Thread(target=self._watch, name="recbandits-stall-log",
                                          daemon=True)
        self._watchdog.start()

    def stop(self) -> None:
        """Stop watching (the heartbeat, the watchdog and the collector callback)."""
        self._stop.set()
        if self._handle is not None:
            self._handle.cancel()
            self._handle = None
        if self._on_gc in gc.callbacks:
            gc.callbacks.remove(self._on_gc)
        if self._watchdog is not None:
            self._watchdog.join(1.0)
            self._watchdog = None

    def _heartbeat(self) -> None:
        now = time.perf_counter()
        late = now - self._beat - self.period_s
        if late >= self.threshold_s:
            self.stalls += 1
            began = self._beat + self.period_s
            collections = [f"gen{g} {1e3 * s:.1f} ms" for t, s, g in self._gc_log
                           if t + s >= began and t <= now]
            logger.warning(
                "event loop stalled %.1f ms; garbage collections during it: %s; loop thread "
                "after %.0f ms:\n%s", 1e3 * late, ", ".join(collections) or "none",
                1e3 * self.threshold_s,
                "".join(self._stack) if self._stack else "  (not read: the watchdog did not "
                "run meanwhile: no CPU for this process, or the GIL held throughout)\n")
        self._stack = None
        self._gc_log = [entry for entry in self._gc_log if entry[0] > now - 1.0]
        self._beat = now
        if not self._stop.is_set() and self._loop is not None:
            self._handle = self._loop.call_later(self.period_s, self._heartbeat)

    def _watch(self) -> None:
        while not self._stop.wait(self.period_s):
            if (self._stack is None and self._loop_thread is not None
                    and time.perf_counter() - self._beat - self.period_s >= self.threshold_s):
                frame = sys._current_frames().get(self._loop_thread)
                if frame is not None:
                    self._stack = traceback.format_stack(frame, STACK_FRAMES)

    def _on_gc(self, phase: str, info: dict[str, Any]) -> None:
        if phase == "start":
            self._gc_started = time.perf_counter()
            return
        took = time.perf_counter() - self._gc_started
        self._gc_log.append((self._gc_started, took, int(info["generation"])))
        if took >= self.threshold_s:
            self.collections += 1
            logger.warning("garbage collection of generation %d took %.1f ms (%d collected, "
                           "thread %s)", info["generation"], 1e3 * took, info["collected"],
                           threading.current_thread().name)


__all__ = ["StallLog"]
