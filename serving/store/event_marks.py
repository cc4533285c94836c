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
it, so its end changed a word (or a write is in progress and the mark is None). A program that
writes events into the file without :class:`EventMarks` (a shell) is not seen until the workers
restart.

A process killed between a write's start and end (SIGKILL mid-burst) leaves the count above
zero: those users' answers (every user's, for a purge or bulk insert) are read from SQLite
(slower, never stale) until every process using the marks has closed them, that is until the
whole service restarts. Then the first :class:`EventMarks` to open the file finds itself alone
and, under the updates' ``flock``, zeroes every word's count and moves its high bits by one
``STEP`` (so no mark taken before equals one taken after). Being alone is known from an
open-file-description lock (Linux ``F_OFD_SETLK``) on the byte past the words, which every open
:class:`EventMarks` holds shared until :meth:`EventMarks.close`, and which the kernel drops
when the last descriptor of that open file goes, even by SIGKILL: an opener granted it
exclusively, without waiting, knows that no write can be in progress, resets, and converts it
to shared (atomically); one refused takes it shared, waiting while another opener resets. OFD
locks belong to the open file, not the process, so two :class:`EventMarks` of one process
exclude each other like two processes, and closing another descriptor of the file does not
drop them (POSIX ``lockf`` locks would do both wrongly); they do not interact with ``flock``.
A single worker killed while its siblings live still leaves its users read from SQLite until
the service restarts. Where OFD locks do not exist (not Linux, or not 64-bit: ``struct flock``
is packed by hand) nothing is reset: the counts stay until the file is deleted.
"""

from __future__ import annotations

import contextlib
import errno
import logging
import mmap
import os
import struct
import sys
import threading
from collections.abc import Iterable, Iterator
from pathlib import Path

import numpy as np

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
#: ``struct flock`` of 64-bit Linux (l_type, l_whence, l_start, l_len, l_pid; padded to 32 bytes).
_FLOCK = struct.Struct("hhqqi4x")
#: The liveness lock's byte: past the words (a lock may lie past the end of the file).
_ALIVE = _SIZE
#: Open-file-description locks exist: Linux (3.15 and later), 64-bit for ``_FLOCK``'s layout.
OFD_LOCKS = hasattr(fcntl, "F_OFD_SETLK") and sys.maxsize > 2**32

logger = logging.getLogger(__name__)


def marks_path(database: str | os.PathLike[str]) -> Path:
    """The marks file of an SQLite database file."""
    return sidecar_path(database, "marks")


def liveness_request(kind: int) -> bytes:
    """A ``struct flock`` asking for a lock of ``kind`` (``fcntl.F_RDLCK``, ``F_WRLCK`` or
    ``F_UNLCK``) on the liveness byte, for ``fcntl.fcntl`` with ``F_OFD_SETLK``,
    ``F_OFD_SETLKW`` or ``F_OFD_GETLK`` (``l_pid`` must be 0 for OFD locks).
    """
    return _FLOCK.pack(kind, os.SEEK_SET, _ALIVE, 1, 0)


def _reset(words_map: mmap.mmap) -> int:
    """Zero every word's count of writes in progress and move its high bits by one ``STEP``;
    the number of words whose count was above zero.
    """
    words = np.frombuffer(words_map, dtype=np.uint64)  # native order, as _WORD's "=Q"
    try:
        left = int(np.count_nonzero(words & np.uint64(_IN_PROGRESS)))
        words &= np.uint64(~_IN_PROGRESS & (2**64 - 1))
        words += np.uint64(STEP)  # wraps modulo 2**64, as _add does
    finally:
        del words  # the map cannot be closed while a view of it is exported
    return left


class EventMarks:
    """The shared marks of an SQLite database file (see the module's notes).

    Parameters
    ----------
    database : path-like
        The SQLite database file; the marks are ``<database>-marks`` (created, or grown to
        ``8 * (1 + BUCKETS)`` bytes, if needed; never deleted or shrunk: another process may
        be using it).

    Notes
    -----
    Opening takes the liveness lock shared until :meth:`close`; the first opener after every
    other has closed resets the counts of writes in progress (Linux only: see
    :data:`OFD_LOCKS`). It waits only while another opener resets (one pass over the 512 KiB
    of words).

    Raises
    ------
    OSError
        The file cannot be opened, grown, mapped or locked.
    """

    def __init__(self, database: str | os.PathLike[str]) -> None:
        self.path = marks_path(database)
        self._lock = threading.Lock()  # flock does not exclude the threads of one process
        self._map: mmap.mmap | None = None
        self._fd: int | None = None
        #: How many words' counts of writes in progress this opener zeroed (0: none was
        #: left), or None if it did not reset (another opener had the marks, or no OFD locks).
        self.reset: int | None = None
        # Without flock two processes could lose each other's moves: nothing is kept at all
        # (mark() is None) and writes mark nothing.
        self.enabled = fcntl is not None
        if not self.enabled:  # pragma: no cover - POSIX systems have fcntl
            return
        fd = os.open(self.path, os.O_RDWR | os.O_CREAT, 0o644)
        try:
            if os.fstat(fd).st_size < _SIZE:
                os.ftruncate(fd, _SIZE)  # zeros; a second process doing the same is harmless
            words_map = mmap.mmap(fd, _SIZE, mmap.MAP_SHARED)
            try:
                if OFD_LOCKS:
                    self.reset = self._join(fd, words_map)
            except BaseException:
                words_map.close()
                raise
        except BaseException:
            os.close(fd)  # drops the liveness lock if it was taken
            raise
        self._map, self._fd = words_map, fd
        if self.reset:
            logger.warning("%s: %d words counted writes left in progress by a killed "
                           "process; reset, so their users' answers are kept again",
                           self.path, self.reset)

    def _join(self, fd: int, words_map: mmap.mmap) -> int | None:
        """Hold the liveness lock shared, resetting the counts first if no other opener
        holds it (see the module's notes); the number of words reset, or None.
        """
        try:
            fcntl.fcntl(fd, fcntl.F_OFD_SETLK, liveness_request(fcntl.F_WRLCK))
        except OSError as exc:
            if exc.errno not in (errno.EAGAIN, errno.EACCES):
                raise
            # Held by another opener, which may be resetting: wait for its shared lock.
            fcntl.fcntl(fd, fcntl.F_OFD_SETLKW, liveness_request(fcntl.F_RDLCK))
            return None
        # Alone: no write can be in progress. The flock still orders the reset with the
        # updates of a process that marks without the liveness lock (an older version).
        fcntl.flock(fd, fcntl.LOCK_EX)
        try:
            reset = _reset(words_map)
        finally:
            fcntl.flock(fd, fcntl.LOCK_UN)
        # Converting is atomic: no other opener finds the byte unlocked meanwhile.
        fcntl.fcntl(fd, fcntl.F_OFD_SETLK, liveness_request(fcntl.F_RDLCK))
        return reset

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
        """Unmap and close the file, dropping the liveness lock (:meth:`mark` is None from
        then on).
        """
        with self._lock:
            if self._map is not None:
                self._map.close()
                self._map = None
            if self._fd is not None:
                os.close(self._fd)
                self._fd = None


__all__ = ["BUCKETS", "OFD_LOCKS", "STEP", "EventMarks", "liveness_request", "marks_path"]
