"""Every SQL statement of the service, behind one :class:`Store` (SQLite or PostgreSQL).

Two engines share one URL: a write engine whose transactions take the write lock up front
(``BEGIN IMMEDIATE`` on SQLite, so two processes never dead-lock upgrading a read lock) and a
read engine in autocommit mode. Writes are only issued by the group-commit writer
(:mod:`serving.store.writer`: one thread per process, many requests per transaction);
counters are incremented in SQL (``successes = successes + n``) so several processes never
lose an update.
"""

from __future__ import annotations

import contextlib
import functools
import json
import logging
import math
import sqlite3
import threading
import time
from collections import Counter
from collections.abc import Callable, Iterable, Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, ParamSpec, TypeVar

import orjson
import pandas as pd
import sqlalchemy as sa
from sqlalchemy import event
from sqlalchemy.dialects import postgresql, sqlite
from sqlalchemy.engine import Connection, Engine

from serving.errors import StoreUnavailableError
from serving.store.tables import (
    arm_state,
    decisions,
    feedback,
    feedback_ratings,
    metadata,
    policy_meta,
)
from serving.store.write_lock import WriteLock

logger = logging.getLogger(__name__)

P = ParamSpec("P")
R = TypeVar("R")

POSITIVE_TYPES = ("like", "click")
RATING_OF_TYPE = {"like": 5.0, "dislike": 1.0}


class StoreBusyError(Exception):
    """SQLite's write lock is held by another connection and the caller asked not to wait.

    Raised by ``Store.write_batch(..., wait=False)`` after the transaction was rolled back:
    nothing was written, and the batch can be retried where waiting is harmless (a thread).
    """


def _is_busy(exc: BaseException) -> bool:
    return (isinstance(exc, sqlite3.OperationalError)
            and (getattr(exc, "sqlite_errorcode", 0) & 0xFF) == sqlite3.SQLITE_BUSY)


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


def store_unavailable(exc: BaseException) -> StoreUnavailableError | None:
    """The 503 error for ``exc`` if it means the store is down, unreachable or locked, else None.

    The one place that decides which database errors are outages: SQLAlchemy's operational,
    interface and pool time-out errors, any DBAPI error that invalidated its connection (a
    disconnect), and the raw ``sqlite3``/``psycopg`` operational errors of the fast read path.
    The message names the driver's reason, never the SQL.
    """
    if isinstance(exc, StoreUnavailableError):
        return exc
    if isinstance(exc, sa.exc.DBAPIError):
        if not (exc.connection_invalidated
                or isinstance(exc, sa.exc.OperationalError | sa.exc.InterfaceError)):
            return None
        reason: BaseException = exc.orig if exc.orig is not None else exc
    elif isinstance(exc, sa.exc.TimeoutError) or _is_operational(exc):
        reason = exc
    else:
        return None
    lines = str(reason).strip().splitlines()
    text = lines[0] if lines else type(reason).__name__
    error = StoreUnavailableError(f"the store is unavailable ({text}); retry later")
    error.__cause__ = exc
    return error


def unavailable_on_db_error(fn: Callable[P, R]) -> Callable[P, R]:
    """Turn a lost connection or a lock time-out into :class:`StoreUnavailableError` (503)."""

    @functools.wraps(fn)
    def wrapper(*args: P.args, **kwargs: P.kwargs) -> R:
        try:
            return fn(*args, **kwargs)
        except Exception as exc:
            error = store_unavailable(exc)
            if error is None:
                raise
            raise error from exc

    return wrapper


@dataclass(frozen=True)
class ArmCounts:
    """Posterior counts of one arm as stored."""

    successes: int = 0
    failures: int = 0
    pulls: int = 0


@dataclass(frozen=True)
class PolicyMeta:
    version: int
    arms_dir: str


@dataclass
class FeedbackWrite:
    """One feedback insert as the writer executes it (values already validated)."""

    values: dict[str, Any]
    rating: float | None

    @property
    def key(self) -> tuple[int, str, int, str]:
        v = self.values
        return (v["user_id"], v["event_key"], v["movie_id"], v["feedback_type"])


@dataclass
class FeedbackResult:
    row: dict[str, Any]
    created: bool


@dataclass
class BatchResult:
    feedback: list[FeedbackResult] = field(default_factory=list)
    counted: int = 0


def _json(value: Any) -> str:
    """``value`` as JSON text; a str is taken as already serialised (the service caches some)."""
    return value if isinstance(value, str) else orjson.dumps(value).decode()


def _is_operational(exc: BaseException) -> bool:
    """Whether a DBAPI error means the store is down or locked (rather than a bug)."""
    if isinstance(exc, sqlite3.OperationalError):
        return True
    try:
        import psycopg
    except ImportError:  # pragma: no cover - psycopg is a dependency
        return False
    return isinstance(exc, psycopg.OperationalError)


def database_errors() -> tuple[type[BaseException], ...]:
    """Every exception class a store call can raise from SQLAlchemy or a driver."""
    classes: list[type[BaseException]] = [sa.exc.DBAPIError, sa.exc.TimeoutError, sqlite3.Error]
    try:
        import psycopg
    except ImportError:  # pragma: no cover - psycopg is a dependency
        pass
    else:
        classes.append(psycopg.Error)
    return tuple(classes)


class Store:
    """The service's database.

    Parameters
    ----------
    url : str
        SQLAlchemy URL: ``sqlite:///path.db`` (the parent folder is created; WAL mode) or
        ``postgresql+psycopg://user@host:port/db``.
    sqlite_synchronous : {"NORMAL", "FULL"}, default "NORMAL"
        SQLite's durability in WAL mode: NORMAL survives a crash or kill of the process (the
        commit is in the WAL file before the response) but not a power loss; FULL also
        survives power loss at the cost of an fsync per commit, so its commits go through the
        writer thread instead of the event loop (see ``inline_commits``).
    timeout_s : float, default 10.0
        Longest wait for SQLite's write lock, a PostgreSQL connection or a pooled connection;
        beyond it the operation fails with :class:`StoreUnavailableError` (HTTP 503).

    Notes
    -----
    SQLite checkpoints: the serving writer's connection has ``wal_autocheckpoint=0``, so no
    commit (in the event loop) ever runs a checkpoint and its fsync; instead the writer's jobs
    thread calls :meth:`checkpoint` every ``SQLITE_CHECKPOINT_INTERVAL_S`` on a connection of
    its own: a PASSIVE checkpoint (never waits for a lock or stalls a reader), followed by a
    RESTART one once the WAL holds ``SQLITE_WAL_RESTART_FRAMES`` (16 MiB), because under load
    a PASSIVE checkpoint never copies the whole WAL and it would never start over. The WAL file
    therefore stays around that size (~25 MB measured with two workers at 5000 req/s);
    ``journal_size_limit`` truncates it back to 64 MiB after a burst. Other connections
    (commands, the settle job) keep SQLite's automatic checkpoints.

    Raises
    ------
    ValueError
        If ``url`` is not a file SQLite or a PostgreSQL URL, or ``timeout_s`` is not positive.
    """

    def __init__(self, url: str, *, sqlite_synchronous: str = "NORMAL",
                 timeout_s: float = 10.0) -> None:
        if sqlite_synchronous not in ("NORMAL", "FULL"):
            raise ValueError(f"sqlite_synchronous must be 'NORMAL' or 'FULL', got "
                             f"{sqlite_synchronous!r}")
        if not timeout_s > 0:
            raise ValueError(f"timeout_s must be > 0 seconds, got {timeout_s!r}")
        self.timeout_s = float(timeout_s)
        self.url = sa.engine.make_url(url)
        self.backend = self.url.get_backend_name()
        if self.backend not in ("sqlite", "postgresql"):
            raise ValueError(f"db must be an sqlite:// or postgresql+psycopg:// URL, got {url!r}")
        if self.backend == "sqlite":
            if self.url.database in (None, "", ":memory:"):
                raise ValueError("db: an in-memory SQLite store cannot be shared; give a file")
            Path(self.url.database).parent.mkdir(parents=True, exist_ok=True)
            self.write_engine = self._sqlite_engine(immediate=True, sync=sqlite_synchronous)
            self.read_engine = self._sqlite_engine(immediate=False, sync=sqlite_synchronous)
            self._insert = sqlite.insert
            # Sub-millisecond commits: cheaper in the event loop than through a thread.
            self.inline_commits = sqlite_synchronous == "NORMAL"
            self.event_loop_io = False
        else:
            connect = {"connect_timeout": max(1, math.ceil(self.timeout_s))}
            self.write_engine = sa.create_engine(self.url, pool_size=2, max_overflow=2,
                                                 pool_pre_ping=True, connect_args=connect,
                                                 pool_timeout=self.timeout_s)
            self.read_engine = sa.create_engine(self.url, pool_size=8, max_overflow=8,
                                                pool_pre_ping=True, connect_args=connect,
                                                pool_timeout=self.timeout_s,
                                                isolation_level="AUTOCOMMIT")
            self._insert = postgresql.insert
            self.inline_commits = False
            # The request-path reads and the group commits run as coroutines on the event
            # loop (serving.store.pgasync); the engines serve everything else.
            self.event_loop_io = True
        self._param = "?" if self.backend == "sqlite" else "%s"
        self._local = threading.local()
        self.sqlite_synchronous = sqlite_synchronous
        self._write_conn: sqlite3.Connection | None = None
        self._write_busy_ms = 0
        self._write_lock = threading.Lock()
        self._checkpoint_conn: sqlite3.Connection | None = None
        self._checkpoint_lock = threading.Lock()
        # Taken before SQLite's own write lock by every serving write (see write_lock.py).
        self.writers_lock = (WriteLock(self.url.database) if self.backend == "sqlite"
                             else None)
        self.checkpoint_interval_s = SQLITE_CHECKPOINT_INTERVAL_S
        self.last_checkpoint: tuple[int, int, int] | None = None
        p = self._param
        as_json = "" if self.backend == "sqlite" else "::json"
        self._insert_decision_sql = (
            "INSERT INTO decisions (event_id, created_at, user_id, context, arm, propensity, "
            "pmf, slate, policy_version, cold_start, reward_deadline, expired_zero) VALUES "
            f"({p}, {p}, {p}, {p}{as_json}, {p}, {p}, {p}{as_json}, {p}{as_json}, {p}, {p}, {p}, "
            "false)")
        self._insert_feedback_sql = (
            "INSERT INTO feedback (created_at, user_id, movie_id, feedback_type, event_id, "
            f"event_key, arm, reward, counted, note) VALUES ({p}, {p}, {p}, {p}, {p}, {p}, {p}, "
            f"{p}, {p}, {p}) ON CONFLICT (user_id, event_key, movie_id, feedback_type) "
            "DO NOTHING RETURNING id")
        self._feedback_columns = [c.name for c in feedback.columns]
        self._select_feedback_sql = (
            f"SELECT {', '.join(self._feedback_columns)} FROM feedback WHERE user_id = {p} AND "
            f"event_key = {p} AND movie_id = {p} AND feedback_type = {p}")
        self._increment_sql = (
            f"UPDATE arm_state SET successes = successes + {p}, failures = failures + {p}, "
            f"pulls = pulls + {p} WHERE arm = {p}")
        self._upsert_rating_sql = (
            f"INSERT INTO feedback_ratings (user_id, movie_id, rating, updated_at) VALUES ({p}, "
            f"{p}, {p}, {p}) ON CONFLICT (user_id, movie_id) DO UPDATE SET rating = "
            "excluded.rating, updated_at = excluded.updated_at")

    def _sqlite_engine(self, *, immediate: bool, sync: str) -> Engine:
        engine = sa.create_engine(self.url, pool_size=8, max_overflow=8,
                                  pool_timeout=self.timeout_s)
        busy_ms = int(self.timeout_s * 1000)

        @event.listens_for(engine, "connect")
        def _on_connect(dbapi_conn: Any, _record: Any) -> None:
            # Transactions are begun explicitly below, so pysqlite must not begin its own.
            dbapi_conn.isolation_level = None
            cursor = dbapi_conn.cursor()
            cursor.execute("PRAGMA journal_mode=WAL")
            cursor.execute(f"PRAGMA synchronous={sync}")
            cursor.execute(f"PRAGMA busy_timeout={busy_ms}")
            cursor.close()

        @event.listens_for(engine, "begin")
        def _on_begin(conn: Connection) -> None:
            conn.exec_driver_sql("BEGIN IMMEDIATE" if immediate else "BEGIN")

        return engine

    def describe(self) -> str:
        """The URL without its password."""
        return self.url.render_as_string(hide_password=True)

    def dispose(self) -> None:
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
        if self.writers_lock is not None:
            self.writers_lock.close()
        self.write_engine.dispose()
        self.read_engine.dispose()

    # ------------------------------------------------------------------ schema and metadata
    @unavailable_on_db_error
    def create_schema(self, arms: Iterable[str]) -> None:
        """Create missing tables and an ``arm_state`` row (zeros) for every arm."""
        metadata.create_all(self.write_engine, checkfirst=True)
        with self.write_engine.begin() as conn:
            for arm in arms:
                conn.execute(self._insert(arm_state).values(arm=arm).on_conflict_do_nothing())

    @unavailable_on_db_error
    def policy_meta(self) -> PolicyMeta | None:
        with self.read_engine.connect() as conn:
            row = conn.execute(sa.select(policy_meta.c.version, policy_meta.c.arms_dir)
                               .where(policy_meta.c.id == 1)).first()
        return None if row is None else PolicyMeta(int(row.version), row.arms_dir)

    @unavailable_on_db_error
    def init_policy_meta(self, arms_dir: str) -> PolicyMeta:
        """Record version 1 serving ``arms_dir`` unless a version exists; return the current."""
        with self.write_engine.begin() as conn:
            conn.execute(self._insert(policy_meta).values(
                id=1, version=1, arms_dir=arms_dir, updated_at=time.time()
            ).on_conflict_do_nothing())
            row = conn.execute(sa.select(policy_meta.c.version, policy_meta.c.arms_dir)
                               .where(policy_meta.c.id == 1)).one()
        return PolicyMeta(int(row.version), row.arms_dir)

    @unavailable_on_db_error
    def next_version(self) -> int:
        """The version a retrain will publish (current + 1; 1 when nothing is recorded)."""
        meta = self.policy_meta()
        return 1 if meta is None else meta.version + 1

    @unavailable_on_db_error
    def publish_version(self, arms_dir: str) -> PolicyMeta:
        """Point the policy at freshly saved arms and increment the version atomically."""
        with self.write_engine.begin() as conn:
            updated = conn.execute(
                policy_meta.update().where(policy_meta.c.id == 1)
                .values(version=policy_meta.c.version + 1, arms_dir=arms_dir,
                        updated_at=time.time())
                .returning(policy_meta.c.version)
            ).first()
            if updated is None:
                conn.execute(policy_meta.insert().values(id=1, version=1, arms_dir=arms_dir,
                                                         updated_at=time.time()))
                return PolicyMeta(1, arms_dir)
        return PolicyMeta(int(updated.version), arms_dir)

    # ------------------------------------------------------------------ reads
    @unavailable_on_db_error
    def arm_counts(self) -> dict[str, ArmCounts]:
        with self.read_engine.connect() as conn:
            rows = conn.execute(sa.select(arm_state)).all()
        return {r.arm: ArmCounts(int(r.successes), int(r.failures), int(r.pulls)) for r in rows}

    @unavailable_on_db_error
    def state(self) -> tuple[PolicyMeta | None, dict[str, ArmCounts]]:
        """Policy version and arm counts in one connection (the workers' periodic refresh)."""
        with self.read_engine.connect() as conn:
            rows = conn.execute(sa.select(arm_state)).all()
            meta = conn.execute(sa.select(policy_meta.c.version, policy_meta.c.arms_dir)
                                .where(policy_meta.c.id == 1)).first()
        counts = {r.arm: ArmCounts(int(r.successes), int(r.failures), int(r.pulls))
                  for r in rows}
        return (None if meta is None else PolicyMeta(int(meta.version), meta.arms_dir)), counts

    # The three reads on the request path skip SQLAlchemy: one DBAPI connection per reader
    # thread, plain SQL, no pool check-out or transaction round trips (about 10x cheaper).
    def _fast(self, sql: str, params: tuple[Any, ...]) -> list[tuple[Any, ...]]:
        conn = getattr(self._local, "conn", None)
        try:
            if conn is None:
                conn = self._local.conn = self._raw_connect()
            cursor = conn.cursor()
            cursor.execute(sql.replace("?", self._param), params)
            rows = cursor.fetchall()
            cursor.close()
            return rows
        except Exception as exc:
            self._local.conn = None
            with contextlib.suppress(Exception):
                if conn is not None:
                    conn.close()
            error = store_unavailable(exc)
            if error is not None:
                raise error from exc
            raise

    def _raw_connect(self) -> Any:
        if self.backend == "sqlite":
            conn = sqlite3.connect(self.url.database, isolation_level=None,
                                   check_same_thread=False, timeout=self.timeout_s)
            conn.execute("PRAGMA query_only=ON")
            conn.execute(f"PRAGMA cache_size=-{SQLITE_CACHE_KIB}")
            return conn
        import psycopg

        conninfo = self.url.set(drivername="postgresql").render_as_string(hide_password=False)
        return psycopg.connect(conninfo, autocommit=True,
                               connect_timeout=max(1, math.ceil(self.timeout_s)))

    def user_feedback(self, user_id: int) -> list[tuple[int, str, float]]:
        """``(movie_id, feedback_type, created_at)`` of every feedback of ``user_id``."""
        return self._fast("SELECT movie_id, feedback_type, created_at FROM feedback "
                          "WHERE user_id = ?", (user_id,))

    _DECISION_COLUMNS = "event_id, user_id, arm, slate, cold_start, reward_deadline, created_at"

    @staticmethod
    def _decision_row(row: tuple[Any, ...]) -> dict[str, Any]:
        slate = row[3]
        return {"event_id": row[0], "user_id": int(row[1]), "arm": row[2],
                "slate": json.loads(slate) if isinstance(slate, str) else slate,
                "cold_start": bool(row[4]), "reward_deadline": float(row[5]),
                "created_at": float(row[6])}

    def decision(self, event_id: str) -> dict[str, Any] | None:
        """The logged decision ``event_id`` (the fields attribution needs), or None."""
        rows = self._fast(f"SELECT {self._DECISION_COLUMNS} FROM decisions WHERE event_id = ?",
                          (event_id,))
        return self._decision_row(rows[0]) if rows else None

    def latest_decision_showing(self, user_id: int, movie_id: int,
                                since: float) -> dict[str, Any] | None:
        """The latest decision of ``user_id`` made after ``since`` whose slate held the movie."""
        rows = self._fast(f"SELECT {self._DECISION_COLUMNS} FROM decisions WHERE user_id = ? "
                          "AND created_at >= ? ORDER BY created_at DESC LIMIT 500",
                          (user_id, since))
        for row in rows:
            decision = self._decision_row(row)
            if movie_id in decision["slate"]:
                return decision
        return None

    @unavailable_on_db_error
    def feedback_row(self, key: tuple[int, str, int, str]) -> dict[str, Any] | None:
        user_id, event_key, movie_id, feedback_type = key
        stmt = sa.select(feedback).where(
            feedback.c.user_id == user_id, feedback.c.event_key == event_key,
            feedback.c.movie_id == movie_id, feedback.c.feedback_type == feedback_type)
        with self.read_engine.connect() as conn:
            row = conn.execute(stmt).first()
        return None if row is None else dict(row._mapping)

    @unavailable_on_db_error
    def ratings_frame(self) -> pd.DataFrame:
        """Feedback ratings as ``user_id, item_id, rating, timestamp`` (for retraining)."""
        with self.read_engine.connect() as conn:
            rows = conn.execute(sa.select(feedback_ratings)).all()
        frame = pd.DataFrame(rows, columns=["user_id", "movie_id", "rating", "updated_at"])
        return pd.DataFrame({
            "user_id": frame["user_id"].astype("int64"),
            "item_id": frame["movie_id"].astype("int64"),
            "rating": frame["rating"].astype("float32"),
            "timestamp": frame["updated_at"].astype("int64"),
        })

    @unavailable_on_db_error
    def count_rows(self) -> dict[str, int]:
        with self.read_engine.connect() as conn:
            return {t.name: int(conn.execute(sa.select(sa.func.count()).select_from(t))
                                .scalar_one())
                    for t in (decisions, feedback, feedback_ratings)}

    @unavailable_on_db_error
    def ping(self) -> None:
        with self.read_engine.connect() as conn:
            conn.execute(sa.text("SELECT 1"))

    # ------------------------------------------------------------------ writes (writer thread)
    def write_batch(self, decision_rows: Sequence[dict[str, Any]],
                    feedback_writes: Sequence[FeedbackWrite], *,
                    wait: bool = True) -> BatchResult:
        """Insert decisions and feedback, update counters and ratings, in ONE transaction.

        Feedback whose idempotency key already exists inserts nothing and counts nothing; its
        stored row is returned with ``created=False``.

        Parameters
        ----------
        decision_rows, feedback_writes
            What to write, in arrival order.
        wait : bool, default True
            SQLite: wait up to ``timeout_s`` for the write lock (then ``database is locked``,
            a 503). False never waits: if another connection holds the lock the transaction is
            rolled back and :class:`StoreBusyError` raised (the event loop's attempt).
        """
        result = BatchResult()
        successes: Counter[str] = Counter()
        failures: Counter[str] = Counter()
        pulls = Counter(row["arm"] for row in decision_rows if not row["cold_start"])
        ratings: list[tuple[Any, ...]] = []
        with self._write_cursor(wait) as cursor:
            if decision_rows:
                cursor.executemany(self._insert_decision_sql, [
                    (r["event_id"], r["created_at"], r["user_id"], _json(r["context"]),
                     r["arm"], r["propensity"], _json(r["pmf"]), _json(r["slate"]),
                     r["policy_version"], r["cold_start"], r["reward_deadline"])
                    for r in decision_rows])
            for write in feedback_writes:
                v = write.values
                cursor.execute(
                    self._insert_feedback_sql,
                    (v["created_at"], v["user_id"], v["movie_id"], v["feedback_type"],
                     v["event_id"], v["event_key"], v["arm"], v["reward"], v["counted"],
                     v["note"]))
                inserted = cursor.fetchone()
                if inserted is None:
                    cursor.execute(self._select_feedback_sql, (
                        v["user_id"], v["event_key"], v["movie_id"], v["feedback_type"]))
                    existing = dict(zip(self._feedback_columns, cursor.fetchone(),
                                        strict=True))
                    existing["counted"] = bool(existing["counted"])
                    result.feedback.append(FeedbackResult(existing, False))
                    continue
                row = dict(v, id=int(inserted[0]))
                result.feedback.append(FeedbackResult(row, True))
                if row["counted"]:
                    result.counted += 1
                    (successes if row["reward"] > 0 else failures)[row["arm"]] += 1
                if write.rating is not None:
                    ratings.append((row["user_id"], row["movie_id"], write.rating,
                                    row["created_at"]))
            if ratings:  # in arrival order, so the latest rating of a movie wins
                cursor.executemany(self._upsert_rating_sql, ratings)
            self._increment(cursor.execute, successes, failures, pulls)
        return result

    @contextlib.contextmanager
    def _write_cursor(self, wait: bool = True) -> Iterator[Any]:
        """A DBAPI cursor inside one write transaction, committed on a clean exit.

        SQLAlchemy's per-statement and per-transaction work (pool check-out, events, result
        metadata) costs more than SQLite's own insert, so the batch runs on plain DBAPI: for
        SQLite one dedicated connection (``BEGIN IMMEDIATE`` ... ``COMMIT``, the same pragmas
        as the engine's), for PostgreSQL the cursor of a pooled connection in ``begin()``.
        """
        if self.backend != "sqlite":
            with self.write_engine.begin() as conn:
                cursor = conn.connection.cursor()
                try:
                    yield cursor
                finally:
                    cursor.close()
            return
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
        """Hold :attr:`writers_lock` (SQLite), waiting up to ``timeout_s`` for it if ``wait``.

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
        if lock is None:
            yield self.timeout_s
            return
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

    def _raw_write_connect(self) -> sqlite3.Connection:
        # busy_timeout 0: the wait for the lock is chosen per batch (see _write_cursor).
        conn = sqlite3.connect(self.url.database, isolation_level=None, check_same_thread=False,
                               timeout=0)
        conn.execute("PRAGMA journal_mode=WAL")
        conn.execute(f"PRAGMA synchronous={self.sqlite_synchronous}")
        conn.execute("PRAGMA busy_timeout=0")
        # Checkpoints run in the writer's jobs thread (checkpoint()), never inside a commit.
        conn.execute("PRAGMA wal_autocheckpoint=0")
        conn.execute(f"PRAGMA journal_size_limit={SQLITE_JOURNAL_SIZE_LIMIT}")
        conn.execute(f"PRAGMA cache_size=-{SQLITE_CACHE_KIB}")
        return conn

    def checkpoint(self) -> tuple[int, int, int] | None:
        """Copy the WAL's committed pages into the database file, and keep the WAL bounded.

        First a PASSIVE checkpoint: it never waits for a lock and never blocks readers or the
        writer (pages still used by a reader are left for the next call). A WAL only starts
        over when a writer finds it fully checkpointed, which never happens while commits keep
        arriving during the checkpoint; so once the WAL holds ``SQLITE_WAL_RESTART_FRAMES``
        or more, a RESTART checkpoint follows under :attr:`writers_lock` (waiting at most
        ``SQLITE_RESTART_WAIT_MS`` for it): it copies the few pages committed since the PASSIVE
        one, so the WAL starts over at the next commit unless a reader is still in it (then
        the next call tries again; it never waits for readers). The serving writers meanwhile
        wait for the lock in a thread, never in the event loop. Called by the writer's jobs
        thread, so no checkpoint (and no fsync of the database file) ever runs inside a commit
        on the event loop.

        Returns
        -------
        (busy, wal_frames, checkpointed_frames) or None
            SQLite's answer (busy = 1 when another checkpoint was running); None for
            PostgreSQL, which checkpoints by itself.
        """
        if self.backend != "sqlite":
            return None
        with self._checkpoint_lock:
            try:
                if self._checkpoint_conn is None:
                    conn = sqlite3.connect(self.url.database, isolation_level=None,
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

    def settle_expired(self, now: float, grace_s: float) -> int:
        """Settle decisions whose window closed; those with no counted feedback count as 0.

        Each decision is claimed by exactly one ``UPDATE ... WHERE settled_at IS NULL``, so
        several workers sweeping at once never count a decision twice.
        """
        has_counted = sa.exists().where(feedback.c.event_id == decisions.c.event_id,
                                        feedback.c.counted)
        with self._writers_locked(), self.write_engine.begin() as conn:
            claimed = conn.execute(
                decisions.update()
                .where(decisions.c.settled_at.is_(None),
                       decisions.c.reward_deadline < now - grace_s)
                .values(settled_at=now,
                        expired_zero=sa.and_(sa.not_(decisions.c.cold_start),
                                             sa.not_(has_counted)))
                .returning(decisions.c.arm, decisions.c.expired_zero)
            ).all()
            zeros = Counter(r.arm for r in claimed if r.expired_zero)
            self._increment(conn.exec_driver_sql, Counter(), zeros, Counter())
        return len(claimed)

    def _increment(self, execute: Callable[[str, tuple[Any, ...]], Any],
                   successes: Counter[str], failures: Counter[str], pulls: Counter[str]) -> None:
        """Add the counts to ``arm_state`` in SQL (``execute``: a DBAPI cursor's or a
        connection's), so that concurrent writers never lose an update."""
        # Sorted so that concurrent transactions lock the rows in one order (no dead-lock).
        for arm in sorted(set(successes) | set(failures) | set(pulls)):
            execute(self._increment_sql, (successes[arm], failures[arm], pulls[arm], arm))

    # ------------------------------------------------------------------ replay
    @unavailable_on_db_error
    def replay_observations(self) -> tuple[list[tuple[float, str, float]], Counter[str]]:
        """Rebuild, from the raw log, every reward the policy must have seen.

        Feedback counts when it was attributed to a policy (not cold-start) decision and
        stamped within that decision's reward window; a settled decision with no such feedback
        counts as one reward 0. The stored ``counted``/``expired_zero`` flags are NOT used.

        Returns
        -------
        observations : list of (time, arm, reward)
            In time order.
        pulls : Counter
            Policy decisions per arm.
        """
        fb = (sa.select(feedback.c.created_at, feedback.c.feedback_type, feedback.c.event_id,
                        decisions.c.arm)
              .join(decisions, feedback.c.event_id == decisions.c.event_id)
              .where(sa.not_(decisions.c.cold_start),
                     feedback.c.created_at <= decisions.c.reward_deadline))
        observations: list[tuple[float, str, float]] = []
        rewarded: set[str] = set()
        with self.read_engine.connect() as conn:
            for row in conn.execute(fb):
                reward = 1.0 if row.feedback_type in POSITIVE_TYPES else 0.0
                observations.append((float(row.created_at), row.arm, reward))
                rewarded.add(row.event_id)
            settled = conn.execute(
                sa.select(decisions.c.event_id, decisions.c.settled_at, decisions.c.arm)
                .where(decisions.c.settled_at.is_not(None), sa.not_(decisions.c.cold_start)))
            for row in settled:
                if row.event_id not in rewarded:
                    observations.append((float(row.settled_at), row.arm, 0.0))
            pulls = Counter({r.arm: int(r.n) for r in conn.execute(
                sa.select(decisions.c.arm, sa.func.count().label("n"))
                .where(sa.not_(decisions.c.cold_start)).group_by(decisions.c.arm))})
        observations.sort(key=lambda o: o[0])
        return observations, pulls
