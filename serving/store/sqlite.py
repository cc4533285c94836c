"""SQLite: a file in WAL mode, the writers' lock, checkpoints off the request path.

Everything that only SQLite needs: the engines with their pragmas, the WAL tuning below, the
writers' lock (:mod:`serving.store.write_lock`) taken before SQLite's own by every serving
write, the checkpoint job the group-commit writer runs, and the raw DBAPI connections of the
request-path reads and of the batch write.
"""

from __future__ import annotations

import contextlib
import functools
import itertools
import operator
import os
import sqlite3
import threading
import time
from collections.abc import Iterable, Iterator, Sequence
from pathlib import Path
from typing import Any, NamedTuple

import sqlalchemy as sa
from sqlalchemy import event
from sqlalchemy.dialects import sqlite
from sqlalchemy.engine import Connection, Engine
from sqlalchemy.schema import CreateIndex, DropIndex

from serving.errors import StoreUnavailableError
from serving.rules import RuleBook
from serving.store.base import DEFAULT_TIMEOUT_S, CommitMode, Store
from serving.store.errors import (
    StoreAccessError,
    StoreBusyError,
    StoreNotFoundError,
    register_driver_errors,
    unavailable_on_db_error,
)
from serving.store.event_marks import EventMarks
from serving.store.tables import SQLITE_SLATE_KEY, USER_DECISIONS_INDEX
from serving.store.types import BatchResult, FeedbackWrite, PeriodicJob, Record, UserEvent
from serving.store.write_lock import WriteLock

#: SQLite's result codes that mean the file is locked, busy or cannot be read or written now
#: (an outage: a 503); its other "operational" errors (no such table or column, a syntax error)
#: are the caller's or the schema's.
SQLITE_OUTAGES = ("SQLITE_BUSY", "SQLITE_LOCKED", "SQLITE_CANTOPEN", "SQLITE_IOERR",
                  "SQLITE_FULL", "SQLITE_PROTOCOL", "SQLITE_NOMEM")
#: The same by the words of their messages, for an error made without a result code.
_OUTAGE_WORDS = ("locked", "busy", "unable to open", "disk i/o", "is full", "out of memory")
#: The result codes of a file that is not a database, or a damaged one, and their words.
SQLITE_UNREADABLE = ("SQLITE_NOTADB", "SQLITE_CORRUPT")
_UNREADABLE_WORDS = ("file is not a database", "database disk image is malformed")


def _sqlite_error_is(exc: BaseException, codes: tuple[str, ...],
                     words: tuple[str, ...] = ()) -> bool:
    """Whether SQLite's error ``exc`` has one of the result ``codes``, as ``sqlite3`` names
    them (an extended code, e.g. SQLITE_IOERR_WRITE or SQLITE_BUSY_SNAPSHOT, has its primary
    code's name as prefix), or, for an error made without a code, one of ``words`` in its
    message: the one reading of SQLite's errors, for outages, lock waits and unreadable files.
    """
    name = getattr(exc, "sqlite_errorname", None)
    if name:
        return name.startswith(codes)
    text = str(exc).lower()
    return any(word in text for word in words)


def _refuse_a_file_that_is_no_database(database: str) -> None:
    """Raise SQLite's error for a file that is not a database, as a read of it would (its
    result code, so that :func:`_sqlite_unreadable` reads it), naming the file, if
    ``database`` is a file whose first bytes are not :data:`SQLITE_HEADER`. An empty or
    missing file may become a store; one this user may not read is left to opening it.

    Before a store is opened or made: ``serve`` made its marks file (512 KiB) beside a file
    that was no database before SQLite refused it, and SQLite's "file is not a database"
    named no file (found by a README check).
    """
    path = Path(database)
    if not (path.is_file() and os.access(path, os.R_OK)):
        return
    with path.open("rb") as file:
        head = file.read(len(SQLITE_HEADER))
    if head and head != SQLITE_HEADER:
        error = sqlite3.DatabaseError(f"{database!r} is not an SQLite database")
        error.sqlite_errorname = "SQLITE_NOTADB"
        raise error


def _sqlite_outage(exc: BaseException) -> bool:
    """Whether SQLite's operational error ``exc`` means the store is locked or unavailable."""
    return _sqlite_error_is(exc, SQLITE_OUTAGES, _OUTAGE_WORDS)


def _sqlite_unreadable(exc: BaseException) -> bool:
    """Whether SQLite's error ``exc`` says the file is not a database, or a damaged one."""
    return isinstance(exc, sqlite3.Error) and _sqlite_error_is(exc, SQLITE_UNREADABLE,
                                                               _UNREADABLE_WORDS)


register_driver_errors(sqlite3.Error, sqlite3.OperationalError, _sqlite_outage,
                       _sqlite_unreadable)

# Page cache of the writer and reader connections (KiB; SQLite's default is 2 MiB): the
# decisions table grows by thousands of rows a second under load and its primary key is a
# random event id, so index inserts touch pages all over the B-tree.
SQLITE_CACHE_KIB = 32_768
# How often the serving writer checkpoints the WAL (PASSIVE) from its jobs thread. Measured
# (16-decision batches, 6000 commits): automatic checkpoints inside the commit: mean 1.25 ms,
# p99 22.5 ms; this job every 0.1/0.25/1 s: mean 0.54/0.54/0.55 ms, p99 0.82/0.79/0.98 ms.
SQLITE_CHECKPOINT_INTERVAL_S = 0.25
# Past this many WAL frames (4 KiB pages: 16 MiB) the checkpoint job makes the WAL start over.
# Each restart holds the writers' lock a few ms (2 workers at 5600 req/s: ~2.5 a second); a
# higher threshold makes them rarer but every read searches one more WAL-index segment per 4096
# frames, and 16000 measured the same within the noise (p99 10-14 vs 11-15 ms).
SQLITE_WAL_RESTART_FRAMES = 4000
# Before that RESTART, up to this many more PASSIVE passes, until one finds fewer than
# SQLITE_SMALL_DELTA_FRAMES new frames.
SQLITE_EXTRA_PASSES = 3
SQLITE_SMALL_DELTA_FRAMES = 64
# Longest wait of that RESTART checkpoint for the writers' lock (it never waits for readers).
SQLITE_RESTART_WAIT_MS = 100
# The WAL file is truncated back to this size after a checkpoint let it restart.
SQLITE_JOURNAL_SIZE_LIMIT = 64 * 1024 * 1024
# Where a process lists its open file descriptors (Linux, then the BSDs and macOS): the
# database file is synced through one that SQLite opened (see SQLiteStore._sync_database_file).
_OPEN_FDS_DIRS = ("/proc/self/fd", "/dev/fd")

SYNCHRONOUS = ("NORMAL", "FULL")

#: The drivers an SQLite URL may name: the standard library's ``sqlite3`` (``pysqlite``).
SQLITE_DRIVERS = ("sqlite", "sqlite+pysqlite")
#: The first bytes of every SQLite database file.
SQLITE_HEADER = b"SQLite format 3\x00"

#: Below every feedback id: ``user_context_after`` reads every event.
NO_ID = -(2 ** 63)
# The user_context answers a process keeps: at most this many users and events in all (the
# oldest kept go first beyond either; an event is ~150 bytes, and history_limit may be 100000).
SQLITE_CONTEXT_CACHE_USERS = 65_536
SQLITE_CONTEXT_CACHE_EVENTS = 250_000
_CREATED_AT = operator.attrgetter("created_at")


class _Context(NamedTuple):
    """A kept ``user_context`` answer: read under ``mark`` with ``since`` and ``limit``."""

    mark: tuple[int, int]
    since: float
    limit: int
    events: tuple[UserEvent, ...]
    stated: tuple[str, ...] | None
    oldest: float  # the smallest created_at of ``events`` (inf: none)
    largest: int  # the largest feedback id of the log in the read's snapshot (0: an empty log)

    def answer(self, since: float) -> tuple[Sequence[UserEvent], list[str] | None] | None:
        """The answer for ``since`` (not before ``self.since``), or None if it needs a read.

        The kept events are the latest ``limit`` (by seq) stamped at or after ``self.since``.
        Fewer than ``limit``: they were all such events, and those stamped at or after
        ``since`` are the answer. ``limit`` of them, all stamped at or after ``since``: they are
        still the latest ``limit``. Else an older event may be due in place of a dropped one.
        """
        events: Sequence[UserEvent]
        if self.oldest >= since:
            # The kept tuple itself (immutable): a caller that keeps what it derived from the
            # answer knows it by identity (serving.user_view).
            events = self.events
        elif len(self.events) < self.limit:
            events = [e for e in self.events if e.created_at >= since]
        else:
            return None
        return events, None if self.stated is None else list(self.stated)


def _open_descriptors() -> Iterator[int]:
    """The file descriptors open in this process, from the first of ``_OPEN_FDS_DIRS`` that
    lists them (none where neither does).
    """
    for folder in _OPEN_FDS_DIRS:
        try:
            names = os.listdir(folder)
        except OSError:
            continue
        yield from (int(name) for name in names if name.isdigit())
        return


def _is_busy(exc: BaseException) -> bool:
    """Whether ``exc`` is SQLite's "busy": another connection holds the lock (wait for it)."""
    return isinstance(exc, sqlite3.OperationalError) and _sqlite_error_is(exc, ("SQLITE_BUSY",))


def _start_wal_over(conn: sqlite3.Connection) -> None:
    """Commit a one-page write on ``conn`` so that the WAL, just fully checkpointed, starts over.

    The first commit into a restarted WAL fsyncs its header (even with ``synchronous=NORMAL``):
    made here, in the checkpoint job's thread under the writers' lock, it is not the next
    serving commit in the event loop, which measured loop stalls of up to 9 ms without this.
    Setting ``user_version`` to its own value writes page 1 and changes nothing else; if a
    program outside the writers' lock holds SQLite's lock, the next commit restarts it instead.
    """
    version = int(conn.execute("PRAGMA user_version").fetchone()[0])
    try:
        conn.execute("BEGIN IMMEDIATE")
        conn.execute(f"PRAGMA user_version={version}")
        conn.execute("COMMIT")
    except sqlite3.OperationalError as exc:
        if conn.in_transaction:
            conn.execute("ROLLBACK")
        if not _is_busy(exc):
            raise


class SQLiteStore(Store):
    """The service's database in one SQLite file (WAL mode), shared by the workers of a host.

    Parameters
    ----------
    url : str
        ``sqlite:///path.db`` (the parent folder is created unless ``create`` is False).
    sqlite_synchronous : {"NORMAL", "FULL"}, default "NORMAL"
        SQLite's durability in WAL mode: NORMAL survives a crash or kill of the process (the
        commit is in the WAL file before the response) but not a power loss; FULL also
        survives power loss at the cost of an fsync per commit, so its commits go through the
        writer thread instead of the event loop (see :attr:`commit_mode`).
    timeout_s : float, default 10.0
        Longest wait for SQLite's write lock or a pooled connection (then a 503).
    create : bool, default True
        False: the file must exist already.
    read_only : bool, default False
        True: every connection is SQLite's read-only one (``mode=ro``), so a user who may not
        write the file reads it; see :meth:`_connect_read_only` for what SQLite needs then.

    Notes
    -----
    Checkpoints: the serving writer's connection has ``wal_autocheckpoint=0``, so no commit (in
    the event loop) ever runs a checkpoint and its fsync; instead the writer runs
    :meth:`checkpoint` every ``SQLITE_CHECKPOINT_INTERVAL_S`` (see :meth:`periodic_jobs`) on a
    connection of its own: a PASSIVE checkpoint (never waits for a lock or stalls a reader),
    followed by a RESTART one once the WAL holds ``SQLITE_WAL_RESTART_FRAMES`` (16 MiB),
    because under load a PASSIVE checkpoint never copies the whole WAL and it would never
    start over. The WAL file therefore stays around that size (~25 MB measured with two
    workers at 5000 req/s); ``journal_size_limit`` truncates it back to 64 MiB after a burst.
    Other connections (commands, the settle job) keep SQLite's automatic checkpoints.

    Raises
    ------
    ValueError
        ``sqlite_synchronous`` not NORMAL or FULL, ``timeout_s`` not positive, an in-memory
        database, or (``create`` False) no such file.
    """

    PARAM = "?"
    # The slate key its index of a user's decisions holds (tables.SQLITE_SLATE_KEY), spelled as
    # there so that the index's values are used: no decision's row or JSON is read.
    SLATE_HOLDS = f"instr({SQLITE_SLATE_KEY}, ',' || ? || ',') > 0"
    JSON_CAST = ""
    insert = staticmethod(sqlite.insert)
    # An indexed read of a local file in WAL mode takes ~10 us and never waits for the writer:
    # cheaper in the event loop than a hop to a thread.
    inline_reads = True

    def __init__(self, url: str, *, sqlite_synchronous: str = "NORMAL",
                 timeout_s: float = DEFAULT_TIMEOUT_S, create: bool = True,
                 read_only: bool = False) -> None:
        if sqlite_synchronous not in SYNCHRONOUS:
            raise ValueError(f"sqlite_synchronous must be 'NORMAL' or 'FULL', got "
                             f"{sqlite_synchronous!r}")
        self.sqlite_synchronous = sqlite_synchronous
        create = create and not read_only  # (a store only read is never made: Store)
        # A store opened to create (or serve) one puts the file in WAL mode; one opened only
        # to read or change an existing store finds it so, and a file that is a database but
        # no store is left in its own mode (found by attack: models list switched one).
        self._set_wal = create
        super().__init__(url, timeout_s=timeout_s, create=create, read_only=read_only)
        self._write_conn: sqlite3.Connection | None = None
        self._write_busy_ms = 0
        self._write_lock = threading.Lock()
        self._checkpoint_conn: sqlite3.Connection | None = None
        self._checkpoint_lock = threading.Lock()
        # Taken before SQLite's own write lock by every serving write (see write_lock.py).
        self.writers_lock = WriteLock(self.url.database)  # type: ignore[arg-type]  # _check_url requires a database file
        self.checkpoint_interval_s = SQLITE_CHECKPOINT_INTERVAL_S
        self.last_checkpoint: tuple[int, int, int] | None = None
        self._database_fd: int | None = None  # SQLite's descriptor the checkpoint syncs
        if create:  # a store opened to serve takes its marks now (see event_marks)
            self.event_marks  # noqa: B018  # the property opens them
        self._contexts: dict[int, _Context] = {}
        self._kept_events = 0
        self._contexts_lock = threading.Lock()

    @functools.cached_property
    def event_marks(self) -> EventMarks:
        """The marks every write of users' events or stated genres moves (see
        :mod:`serving.store.event_marks`), so that ``user_context`` answers can be kept until
        one of the user's marks moves. Opened (the ``-marks`` file made if missing) by a store
        opened to create or serve one, else at first use: a command that only reads leaves
        no marks file beside a database that is no store (found by attack).
        """
        return EventMarks(self.url.database)  # type: ignore[arg-type]  # _check_url requires a database file

    @unavailable_on_db_error
    def create_schema(self, arms: Iterable[str], rules: RuleBook | None = None) -> None:
        """See :meth:`Store.create_schema`; a store of an older recbandits also gets the index
        of a user's decisions that holds the slates' keys, in place of the one without them.
        """
        super().create_schema(arms, rules)
        with self.write_engine.begin() as conn:  # SQLite's DDL: no-ops once done
            conn.execute(CreateIndex(USER_DECISIONS_INDEX["sqlite"], if_not_exists=True))
            conn.execute(DropIndex(USER_DECISIONS_INDEX["postgresql"], if_exists=True))

    @staticmethod
    def database_file(url: sa.engine.URL) -> str | None:
        """The SQLite file of ``url`` (None for an in-memory database)."""
        return url.database if url.database not in (None, "", ":memory:") else None

    @classmethod
    def check_url(cls, url: sa.engine.URL) -> None:
        """The driver (the standard library's) and a file, not an in-memory database, a
        folder or a file that is no database (a look at the path and the file's first bytes:
        nothing is opened for writing or made).

        Raises
        ------
        ValueError
            Another driver, no file, a folder, or a query.
        sqlite3.DatabaseError
            A file that is not an SQLite database (:func:`_refuse_a_file_that_is_no_database`).
        """
        if url.drivername not in SQLITE_DRIVERS:
            raise ValueError(f"db: the SQLite driver must be the standard library's "
                             f"(sqlite:///path), got {url.drivername!r}")
        if url.database in (None, "", ":memory:"):
            raise ValueError("db: an in-memory SQLite store cannot be shared; give a file")
        if Path(url.database).is_dir():  # SQLite's "unable to open": an outage, retried (review)
            raise ValueError(f"db: {url.database!r} is a folder, not an SQLite file")
        _refuse_a_file_that_is_no_database(url.database)
        if url.query:  # found by attack: ?port=0 or ?mode=rw ignored, with SQLAlchemy's warning
            query = url.render_as_string().partition("?")[2]
            raise ValueError(f"db: an SQLite store's URL takes no query (the store sets its "
                             f"connections itself), got ?{query}")

    def identity(self) -> str:
        """The database file's real path (links and relative spellings resolved)."""
        return f"sqlite:{os.path.realpath(self.url.database)}"  # type: ignore[type-var]  # check_url requires a database file

    def _check_url(self, url: str, create: bool) -> None:
        database = self.url.database
        assert database is not None  # check_url refused the rest
        if not create:
            # Nothing is written to a file that holds no store (found by attack: the read-only
            # commands made a 0-byte file a database and left a marks file beside garbage).
            path = Path(database)
            if not path.is_file():
                raise StoreNotFoundError(f"no SQLite file at {database!r}")
            if self.read_only and not os.access(path, os.R_OK):
                raise StoreAccessError(f"cannot read the SQLite store {database!r}: this user "
                                       "may not read the file (read access is needed)")
            with path.open("rb") as file:
                head = file.read(len(SQLITE_HEADER))
            wal = Path(f"{database}-wal")
            if not head and not (wal.is_file() and wal.stat().st_size):
                raise StoreNotFoundError(f"no store in the empty file {database!r}")
            # (a file that is no database: refused by check_url)
            if self.read_only:
                self._check_read_only()
        Path(database).parent.mkdir(parents=True, exist_ok=True)

    @property
    def commit_mode(self) -> CommitMode:
        """``"inline"`` with ``synchronous=NORMAL`` (sub-millisecond commits), else ``"thread"``."""
        # Sub-millisecond commits (NORMAL): cheaper in the event loop than through a thread.
        return "inline" if self.sqlite_synchronous == "NORMAL" else "thread"

    def periodic_jobs(self) -> list[PeriodicJob]:
        """The WAL checkpoint, every ``checkpoint_interval_s``, run by the writer."""
        # The WAL is checkpointed by the writer, off the request path: the store's write
        # connection never checkpoints by itself, whatever the commit mode.
        return [PeriodicJob("checkpoint", self.checkpoint_interval_s, self.checkpoint)]

    # ------------------------------------------------------------------ connections
    def _engines(self) -> tuple[Engine, Engine]:
        return (self._engine(immediate=True), self._engine(immediate=False))

    def _engine(self, *, immediate: bool) -> Engine:
        read_only = self.read_only
        engine = sa.create_engine(self.url, pool_size=8, max_overflow=8,
                                  pool_timeout=self.timeout_s,
                                  **({"creator": self._connect_read_only} if read_only else {}))
        busy_ms = int(self.timeout_s * 1000)
        sync, wal = self.sqlite_synchronous, self._set_wal

        @event.listens_for(engine, "connect")
        def _on_connect(dbapi_conn: Any, _record: Any) -> None:
            # Transactions are begun explicitly below, so pysqlite must not begin its own.
            dbapi_conn.isolation_level = None
            cursor = dbapi_conn.cursor()
            if wal:
                cursor.execute("PRAGMA journal_mode=WAL")
            if not read_only:  # (setting it writes: refused on a file the user cannot write)
                cursor.execute(f"PRAGMA synchronous={sync}")
            cursor.execute(f"PRAGMA busy_timeout={busy_ms}")
            cursor.close()

        @event.listens_for(engine, "begin")
        def _on_begin(conn: Connection) -> None:
            conn.exec_driver_sql("BEGIN IMMEDIATE" if immediate else "BEGIN")

        return engine

    def _connect_read_only(self) -> sqlite3.Connection:
        """A read-only connection (``mode=ro``): it writes nothing to the database file.

        SQLite reads a file in WAL mode through its ``-shm`` and ``-wal`` files: a read-only
        connection uses them when they exist (a service has the store open; safe while it
        writes: SQLite's read-only ``-shm`` mode) and makes them where the user may write the
        folder (they are left, empty, after it). Where neither holds, the one open left is
        ``immutable=1``, which is not safe when a service may start writing meanwhile: such a
        store is refused (:meth:`_check_read_only`).
        """
        uri = f"{Path(self.url.database).resolve().as_uri()}?mode=ro"  # type: ignore[arg-type]  # _check_url requires a database file
        conn = sqlite3.connect(uri, uri=True, isolation_level=None, check_same_thread=False,
                               timeout=self.timeout_s)
        conn.execute("PRAGMA query_only=ON")
        return conn

    def _check_read_only(self) -> None:
        """Raise StoreAccessError if the file cannot be read read-only (see
        :meth:`_connect_read_only`): one line naming the file and the access it needs, where
        the engine's first connection raised "attempt to write a readonly database" from a
        pragma (found by attack). A lock or another outage is raised as SQLite's error.
        """
        database = str(self.url.database)
        try:
            conn = self._connect_read_only()
            try:
                conn.execute("SELECT count(*) FROM sqlite_master").fetchone()
            finally:
                conn.close()
        except sqlite3.OperationalError as exc:
            if not _sqlite_error_is(exc, ("SQLITE_READONLY", "SQLITE_CANTOPEN")):
                raise
            name = Path(database).name
            raise StoreAccessError(
                f"cannot read the SQLite store {database!r} read-only: SQLite reads a store in "
                f"WAL mode through {name}-shm and {name}-wal, which do not exist and this user "
                f"may not create in {str(Path(database).resolve().parent)!r}; give it write "
                "access to that folder, or read the store while a service has it open, or "
                "read a copy") from None

    def _raw_connect(self) -> sqlite3.Connection:
        if self.read_only:
            conn = self._connect_read_only()
        else:
            conn = sqlite3.connect(self.url.database, isolation_level=None,  # type: ignore[arg-type]  # _check_url requires a database file
                                   check_same_thread=False, timeout=self.timeout_s)
        conn.execute("PRAGMA query_only=ON")
        conn.execute(f"PRAGMA cache_size=-{SQLITE_CACHE_KIB}")
        return conn

    def _fast(self, sql: str, params: Record, *, bounded: bool = True) -> list[Record]:
        """See :meth:`Store._fast`: a bounded read runs on the write connection when it is open
        and idle.

        SQLite (WAL) empties a connection's page cache at the start of its next read when
        another connection has committed since its last one, but not after its own commits.
        Every group commit of decisions is the write connection's, so a request-path read on
        the reader connection re-fetched every page it touched. Measured (
        ``user_context`` right after a commit of 8 decisions, raw sqlite3): 11.8-14.0 us on
        another connection, 7.2-7.5 us on the committing one, 5.1 us with no commit between.
        A write in progress (another thread holds the connection), a connection not open yet,
        an unbounded read (``user_feedback``: it would hold up the writer) or any error of the
        write connection (e.g. busy, where the reader connection would wait) sends the read to
        the reader connection as before.
        """
        if bounded and self._write_lock.acquire(blocking=False):
            try:
                conn = self._write_conn
                if conn is not None:
                    try:
                        cursor = conn.cursor()
                        try:
                            cursor.execute(sql, params)
                            return cursor.fetchall()
                        finally:
                            cursor.close()
                    except sqlite3.Error:
                        pass  # the reader connection reads (or raises) below
            finally:
                self._write_lock.release()
        return super()._fast(sql, params)

    def _raw_write_connect(self) -> sqlite3.Connection:
        # busy_timeout 0: the wait for the lock is chosen per batch (see _write_cursor).
        conn = sqlite3.connect(self.url.database, isolation_level=None, check_same_thread=False,  # type: ignore[arg-type]  # _check_url requires a database file
                               timeout=0)
        conn.execute("PRAGMA journal_mode=WAL")
        conn.execute(f"PRAGMA synchronous={self.sqlite_synchronous}")
        conn.execute("PRAGMA busy_timeout=0")
        # Checkpoints run in the writer's jobs thread (checkpoint()), never inside a commit.
        conn.execute("PRAGMA wal_autocheckpoint=0")
        conn.execute(f"PRAGMA journal_size_limit={SQLITE_JOURNAL_SIZE_LIMIT}")
        conn.execute(f"PRAGMA cache_size=-{SQLITE_CACHE_KIB}")
        return conn

    def dispose(self) -> None:
        """Close the write connection, checkpoint the WAL and close the checkpoint connection.

        Then release the writers' lock file and both engines' pools.
        """
        with self._write_lock:
            if self._write_conn is not None:
                self._write_conn.close()
                self._write_conn = None
        with self._checkpoint_lock:
            if self._checkpoint_conn is not None:
                # What the writer left in the WAL goes to the database file now.
                with contextlib.suppress(sqlite3.Error):
                    self._checkpoint_conn.execute("PRAGMA wal_checkpoint(PASSIVE)")
                self._checkpoint_conn.close()
                self._checkpoint_conn = None
        self.writers_lock.close()
        marks = self.__dict__.get("event_marks")
        if marks is not None:  # never opened (a command that only read): nothing to close
            marks.close()
        with self._contexts_lock:
            self._contexts = {}
            self._kept_events = 0
        super().dispose()

    # ------------------------------------------------------------------ writes
    def write_batch(self, decision_rows: Sequence[dict[str, Any]],
                    feedback_writes: Sequence[FeedbackWrite], *,
                    wait: bool = True) -> BatchResult:
        """See :meth:`Store.write_batch`: on one dedicated DBAPI connection, under the
        writers' lock (``BEGIN IMMEDIATE`` ... ``COMMIT``, the engine's pragmas).
        """
        # Marked around the transaction: a batch of decisions alone marks nothing.
        with (self.event_marks.writing({w.values["user_id"] for w in feedback_writes}),
              self._write_cursor(wait) as cursor):
            return self._write_rows(cursor, decision_rows, feedback_writes)

    def set_preferences(self, user_id: int, genres: Sequence[str],
                        now: float | None = None) -> tuple[int, float]:
        """See :meth:`Store.set_preferences` (marked: see :meth:`user_context`)."""
        with self.event_marks.writing({user_id}):
            return super().set_preferences(user_id, genres, now)

    def insert_simulated(self, *args: Any, **kwargs: Any) -> None:
        """See :meth:`Store.insert_simulated` (marked for every user)."""
        with self.event_marks.writing(None):
            super().insert_simulated(*args, **kwargs)

    def purge(self, *args: Any, **kwargs: Any) -> dict[str, int]:
        """See :meth:`Store.purge` (marked for every user: it deletes events)."""
        with self.event_marks.writing(None):
            return super().purge(*args, **kwargs)

    # ------------------------------------------------------------------ reads
    def user_context(self, user_id: int, since: float, limit: int
                     ) -> tuple[Sequence[UserEvent], list[str] | None]:
        """See :meth:`Store.user_context`: the answer read last for ``user_id`` while none of
        their marks moved since (see :mod:`serving.store.event_marks`), else a read.

        Every write of feedback or stated genres (:meth:`write_batch`,
        :meth:`set_preferences`, :meth:`purge`, :meth:`insert_simulated`) moves its users'
        marks after its transaction has ended, so an answer read after the mark was taken is
        as new as any write acknowledged before the mark is taken again, in any process.
        A kept answer: 0.7 us against 8.5 us for the read (process time, warm, no commits
        between; load 5.2). When only the user's bucket's marks moved, the kept answer is
        extended with the events logged since (ids above its snapshot's largest) instead of
        read again.
        """
        mark = self.event_marks.mark(user_id)
        kept = None if mark is None else self._contexts.get(user_id)
        after = NO_ID
        earlier: Sequence[UserEvent] = ()
        if kept is not None and kept.limit == limit and since >= kept.since:
            answer = kept.answer(since)
            if answer is not None and kept.mark == mark:
                return answer
            if answer is not None and kept.mark[0] == mark[0]:  # type: ignore[index]  # kept: mark is not None
                # Only writes of the users of this user's bucket (user_id % BUCKETS) since;
                # a purge or bulk insert moves word 0. They appended rows, each with an id
                # above the largest the kept answer's snapshot held: a new row's id is its
                # seq, which one writer at a time takes above every id present (the head
                # passes them: Store.create_schema), and rows are deleted only by a purge.
                # Read those alone: right after the user's own
                # event 29 against 66 us for 39 events, 69 against 504 us for 309
                # (bench/user_context_read.py, load 2.6).
                earlier, after = answer[0], kept.largest
        new, stated, largest = self.user_context_after(user_id, since, limit, after)
        if after != NO_ID:
            # A purge or bulk insert that began after the mark was taken may have deleted
            # kept rows (and freed ids at or below the watermark) before this read: the mark
            # is taken again, and if word 0 moved (or a write is in progress) read whole.
            again = self.event_marks.mark(user_id)
            if again is None or again[0] != mark[0]:  # type: ignore[index]  # after set: mark is not None
                earlier, mark = (), again
                new, stated, largest = self.user_context_after(user_id, since, limit, NO_ID)
        events: Sequence[UserEvent]
        if not new and kept is not None and earlier is kept.events:
            events = earlier  # nothing logged for the user: the same tuple (UserViews' identity)
        else:
            events = (*earlier, *new)[-limit:] if earlier else new
        if mark is not None and len(events) <= SQLITE_CONTEXT_CACHE_EVENTS:
            events = tuple(events)
            assert largest is not None  # user_context_after gives it with an after_id
            self._keep(user_id, _Context(
                mark, since, limit, events, None if stated is None else tuple(stated),
                # 31 against 43 us for a genexpr over 1000 events.
                min(map(_CREATED_AT, events), default=float("inf")), largest))
        return events, stated

    def _keep(self, user_id: int, context: _Context) -> None:
        """Keep ``context`` as the user's answer, the oldest kept going first beyond
        ``SQLITE_CONTEXT_CACHE_USERS`` users or ``SQLITE_CONTEXT_CACHE_EVENTS`` events.
        """
        with self._contexts_lock:
            contexts = self._contexts
            old = contexts.pop(user_id, None)  # re-inserted last: the oldest kept goes first
            self._kept_events += len(context.events) - (0 if old is None else len(old.events))
            while contexts and (len(contexts) >= SQLITE_CONTEXT_CACHE_USERS
                                or self._kept_events > SQLITE_CONTEXT_CACHE_EVENTS):
                self._kept_events -= len(contexts.pop(next(iter(contexts))).events)
            contexts[user_id] = context

    @contextlib.contextmanager
    def _write_cursor(self, wait: bool = True) -> Iterator[sqlite3.Cursor]:
        """A DBAPI cursor inside one write transaction, committed on a clean exit."""
        with self._write_lock, self._writers_locked(wait) as time_left_s:
            conn = self._write_conn
            if conn is None:
                conn = self._write_conn = self._raw_write_connect()
                self._write_busy_ms = 0
            # At least 1 ms: 0 would mean "never wait" where some wait is still allowed.
            busy_ms = max(1, int(time_left_s * 1000)) if wait else 0
            if busy_ms != self._write_busy_ms:
                conn.execute(f"PRAGMA busy_timeout={busy_ms}")
                self._write_busy_ms = busy_ms
            cursor = conn.cursor()
            try:
                cursor.execute("BEGIN IMMEDIATE")
                yield cursor
                cursor.execute("COMMIT")
            except BaseException as exc:
                try:
                    if conn.in_transaction:
                        conn.execute("ROLLBACK")
                except Exception:  # a broken connection: open a new one next time
                    self._write_conn = None
                    with contextlib.suppress(Exception):
                        conn.close()
                if not wait and _is_busy(exc):
                    raise StoreBusyError(str(exc)) from exc
                raise
            finally:
                cursor.close()

    @contextlib.contextmanager
    def _writers_locked(self, wait: bool = True) -> Iterator[float]:
        """Hold :attr:`writers_lock`, waiting up to ``timeout_s`` for it if ``wait``.

        Yields the seconds left of ``timeout_s`` after that wait: what SQLite's own busy wait
        may still take (a program outside the lock, like a shell or a backup, can hold SQLite's
        lock), so that the two waits together never exceed the time-out.

        Raises
        ------
        StoreBusyError
            ``wait`` is False and another writer holds it.
        StoreUnavailableError
            It stayed taken for ``timeout_s`` (503; nothing was written).
        """
        lock = self.writers_lock
        started = time.monotonic()
        if not wait:
            if not lock.try_acquire():
                raise StoreBusyError("another writer holds the SQLite write lock")
        elif not lock.acquire(self.timeout_s):
            raise StoreUnavailableError(
                f"the store is unavailable (database is locked: another writer held it for "
                f"{self.timeout_s:g} s); retry later")
        try:
            yield max(0.0, self.timeout_s - (time.monotonic() - started))
        finally:
            lock.release()

    @contextlib.contextmanager
    def _write_transaction(self) -> Iterator[Connection]:
        with self._writers_locked(), self.write_engine.begin() as conn:
            yield conn

    def checkpoint(self) -> tuple[int, int, int]:
        """Copy the WAL's committed pages into the database file, and keep the WAL bounded.

        First a PASSIVE checkpoint: it never waits for a lock and never blocks readers or the
        writer (pages still used by a reader are left for the next call). A WAL only starts
        over when a writer finds it fully checkpointed, which never happens while commits keep
        arriving during the checkpoint; so once the WAL holds ``SQLITE_WAL_RESTART_FRAMES``
        or more, a RESTART checkpoint follows under :attr:`writers_lock` (waiting at most
        ``SQLITE_RESTART_WAIT_MS`` for it): it copies the few pages committed since the PASSIVE
        one, so the WAL starts over at the next commit unless a reader is still in it (then
        the next call tries again; it never waits for readers). The serving writers meanwhile
        wait for the lock in a thread, never in the event loop; so before taking it, the
        database file is synced (:meth:`_sync_database_file`) and what was committed meanwhile
        copied by one more PASSIVE pass, and the RESTART syncs only the pages copied since.
        Run by the writer's jobs thread (:meth:`periodic_jobs`), so no checkpoint (and no
        fsync of the database file) ever runs inside a commit on the event loop.

        Returns
        -------
        (busy, wal_frames, checkpointed_frames)
            SQLite's answer (busy = 1 when another checkpoint was running).
        """
        with self._checkpoint_lock:
            try:
                if self._checkpoint_conn is None:
                    conn = sqlite3.connect(self.url.database, isolation_level=None,  # type: ignore[arg-type]  # _check_url requires a database file
                                           check_same_thread=False, timeout=0)
                    conn.execute("PRAGMA busy_timeout=0")
                    conn.execute(f"PRAGMA synchronous={self.sqlite_synchronous}")
                    self._checkpoint_conn = conn
                conn = self._checkpoint_conn
                row = conn.execute("PRAGMA wal_checkpoint(PASSIVE)").fetchone()
                if row[1] >= SQLITE_WAL_RESTART_FRAMES:
                    # What was committed during that pass is copied by further PASSIVE passes
                    # while the writers go on, so the RESTART under their lock has little
                    # left: it held the lock for 1.2-12 ms (median ~4) this way, 3.6-11 ms
                    # (median ~6.5) after one pass (2 workers, 5600 req/s).
                    for _ in range(SQLITE_EXTRA_PASSES):
                        previous, row = row, conn.execute(
                            "PRAGMA wal_checkpoint(PASSIVE)").fetchone()
                        if row[1] - previous[1] < SQLITE_SMALL_DELTA_FRAMES:
                            break
                    # Under load no PASSIVE pass syncs the database file (SQLite syncs it only
                    # when a pass copied the whole WAL, and commits land during every pass), so
                    # the RESTART below synced every page copied since the previous restart
                    # while holding the writers' lock, and every commit waited: one SQLite
                    # worker at 5,600 recommendations/s (bench/serving_load.py's fixed rate),
                    # ~17 restarts in 8 s holding it 45-120 ms in all, the longest 5.1-12.3 ms;
                    # synced here first, 43-68 ms, the longest 4.4-8.8 ms (six alternated pairs,
                    # load 1.3-2.6; what remains is the RESTART's own two syncs and the GIL).
                    if self._sync_database_file():
                        row = conn.execute("PRAGMA wal_checkpoint(PASSIVE)").fetchone()
                if (row[1] >= SQLITE_WAL_RESTART_FRAMES
                        and self.writers_lock.acquire(SQLITE_RESTART_WAIT_MS / 1000)):
                    try:
                        row = conn.execute("PRAGMA wal_checkpoint(RESTART)").fetchone()
                        if row[0] == 0:
                            _start_wal_over(conn)
                    finally:
                        self.writers_lock.release()
            except sqlite3.Error:
                if self._checkpoint_conn is not None:
                    with contextlib.suppress(sqlite3.Error):
                        self._checkpoint_conn.close()
                self._checkpoint_conn = None
                raise
        self.last_checkpoint = (int(row[0]), int(row[1]), int(row[2]))
        return self.last_checkpoint

    def _sync_database_file(self) -> bool:
        """Sync the database file to disk through a descriptor SQLite has open on it.

        Never through a descriptor opened here: closing any descriptor of the file drops
        every POSIX lock this process holds on it, and a connection in WAL mode keeps a shared
        lock on the database file for as long as it is open (what tells another process's
        last connection that it must not delete the WAL). So the descriptor is looked up among
        the process's open ones (by device and inode) and only synced. If it was closed and
        its number reused meanwhile, another file is synced, which is harmless; without a
        listing of descriptors (``_OPEN_FDS_DIRS``) nothing is synced here and the RESTART
        checkpoint syncs everything, as SQLite does by itself.

        Returns
        -------
        bool
            Whether the file was synced.
        """
        try:
            target = os.stat(self.url.database)  # type: ignore[arg-type]  # _check_url requires a database file
        except OSError:
            return False
        wanted = (target.st_dev, target.st_ino)
        known = [] if self._database_fd is None else [self._database_fd]
        for fd in itertools.chain(known, _open_descriptors()):  # the listing only if needed
            try:
                found = os.fstat(fd)
                if (found.st_dev, found.st_ino) == wanted:
                    os.fsync(fd)
                    self._database_fd = fd
                    return True
            except OSError:
                continue
        self._database_fd = None
        return False


__all__ = ["SQLiteStore"]
