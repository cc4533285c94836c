"""Marks of the writes of users' events on an SQLite file, shared by the processes of a host.

A request reads the user's latest events and stated genres (``Store.user_context``); on SQLite
that read costs 13-50 us in the worker (a read transaction, and the page cache another
connection's commit emptied), and nearly every user's answer is the same as last time:
decisions, written all the time, change neither. :class:`EventMarks` lets a process keep its
answers and know, without asking SQLite, when one may have changed.

``<database>-marks`` holds 64-bit words (a shared memory map): word 0 for writes that may touch
any user (a purge, a bulk insert), word ``1 + user_id % BUCKETS`` for the writes of that user's
events or stated genres. Every such write, on every connection of the store, runs inside
:meth:`EventMarks.writing`, which adds ``STEP + 1`` to its words before the transaction begins
and ``STEP - 1`` after it has ended (committed or rolled back), each under an exclusive
``flock`` of the file. So a word's low 16 bits count the writes in progress and its high bits
change with every write begun or ended.

:meth:`EventMarks.mark` is the pair of the user's words, or None while a write of either is in
progress. An answer read after :meth:`mark` returned ``m`` may be reused as long as
:meth:`mark` returns ``m`` again: a write committed after the answer was read has ended after
it, so its end changed a word (or a write is in progress and the mark is None). A process
killed between a write's start and end leaves the count above zero: those users' answers are
read from SQLite from then on (slower, never stale). A program that writes events into the
file without :class:`EventMarks` (a shell) is not seen until the workers restart.
"""

from __future__ import annotations

import contextlib
import mmap
import os
import struct
import threading
from collections.abc import Iterable, Iterator
from pathlib import Path

from serving.store.write_lock import sidecar_path

try:
    import fcntl
except ImportError:  # pragma: no cover - not a POSIX system: every answer is read again (see
    # EventMarks.enabled)
    fcntl = None  # type: ignore[assignment]

#: User buckets (users in one bucket share a word: a write of one re-reads the others).
BUCKETS = 65_536
#: The unit of a word's high bits, which every write begun or ended moves (the low 16 bits
#: count the writes in progress).
STEP = 1 << 16
_IN_PROGRESS = STEP - 1
_WORD = struct.Struct("=Q")
_SIZE = _WORD.size * (1 + BUCKETS)


def marks_path(database: str | os.PathLike[str]) -> Path:
    """The marks file of an SQLite database file."""
    return sidecar_path(database, "marks")


class EventMarks:
    """The shared marks of an SQLite database file (see the module's notes).

    Parameters
    ----------
    database : path-like
        The SQLite database file; the marks are ``<database>-marks`` (created, or grown to
        ``8 * (1 + BUCKETS)`` bytes, if needed; never deleted or shrunk: another process may
        be using it).
    """

    def __init__(self, database: str | os.PathLike[str]) -> None:
        self.path = marks_path(database)
        self._lock = threading.Lock()  # flock does not exclude the threads of one process
        self._map: mmap.mmap | None = None
        self._fd: int | None = None
        # Without flock two processes could lose each other's moves: nothing is kept at all
        # (mark() is None) and writes mark nothing.
        self.enabled = fcntl is not None
        if not self.enabled:  # pragma: no cover - POSIX systems have fcntl
            return
        fd = os.open(self.path, os.O_RDWR | os.O_CREAT, 0o644)
        try:
            if os.fstat(fd).st_size < _SIZE:
                os.ftruncate(fd, _SIZE)  # zeros; a second process doing the same is harmless
            self._map = mmap.mmap(fd, _SIZE, mmap.MAP_SHARED)
        except BaseException:
            os.close(fd)
            raise
        self._fd = fd

    def mark(self, user_id: int) -> tuple[int, int] | None:
        """The words of ``user_id`` (any user's, the user's bucket's), or None while a write
        of either is in progress (or the marks are closed).
        """
        m = self._map
        if m is None:
            return None
        try:
            every = _WORD.unpack_from(m, 0)[0]
            own = _WORD.unpack_from(m, _WORD.size * (1 + user_id % BUCKETS))[0]
        except ValueError:  # closed by dispose() meanwhile
            return None
        if (every | own) & _IN_PROGRESS:
            return None
        return every, own

    @contextlib.contextmanager
    def writing(self, users: Iterable[int] | None) -> Iterator[None]:
        """Mark the writes of ``users``' events (None: of any user's) around the block.

        The block must hold the whole transaction, commit included; an empty ``users``
        marks nothing.
        """
        offsets = ([0] if users is None
                   else sorted({_WORD.size * (1 + u % BUCKETS) for u in users}))
        if not offsets or not self.enabled:
            yield
            return
        self._add(offsets, STEP + 1)
        try:
            yield
        finally:
            self._add(offsets, STEP - 1)

    def _add(self, offsets: list[int], delta: int) -> None:
        m = self._map
        if m is None:
            raise ValueError(f"the marks {self.path} are closed")
        with self._lock:
            fcntl.flock(self._fd, fcntl.LOCK_EX)  # type: ignore[arg-type]  # open while mapped
            try:
                for offset in offsets:
                    _WORD.pack_into(m, offset, (_WORD.unpack_from(m, offset)[0] + delta)
                                    % (1 << 64))
            finally:
                fcntl.flock(self._fd, fcntl.LOCK_UN)  # type: ignore[arg-type]  # open while mapped

    def close(self) -> None:
        """Unmap and close the file (:meth:`mark` is None from then on)."""
        with self._lock:
            if self._map is not None:
                self._map.close()
                self._map = None
            if self._fd is not None:
                os.close(self._fd)
                self._fd = None


__all__ = ["BUCKETS", "STEP", "EventMarks", "marks_path"]
