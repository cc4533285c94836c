"""PostgreSQL: pooled engines, and group reads and group commits on the event loop.

:class:`PostgreSQLStore` is the backend; its request-path reads and its commits during serving
run as coroutines (:class:`GroupReader`, :class:`AsyncBatchWriter`), a few round trips per batch.

Profiling the thread-based path (one ``run_in_executor`` hop and one round trip per read, the
writer's batch in about seven round trips, 9 threads contending for the GIL) showed the worker
waiting, not computing: each psycopg call in a thread has to re-acquire the GIL from the busy
event loop (up to one switch interval each), so a request spent most of its time queued behind
those hand-offs. Here both paths run as coroutines on the worker's event loop, each on one
``psycopg.AsyncConnection`` of its own, with no thread and no GIL hand-off:

- :class:`GroupReader`: the request-path reads queued while the previous batch was in flight are
  answered by ONE query per kind (``WHERE user_id = ANY(%s)``, ``event_id = ANY(%s)``, a
  ``LATERAL`` join for the latest decision showing a movie), and the results are handed to the
  waiting requests in the same loop turn.
- :class:`AsyncBatchWriter`: a batch (decisions and feedback of many requests) is one transaction
  of a few statements sent in pipeline mode and read back in one round trip: one
  ``INSERT ... SELECT FROM json_to_recordset`` for all the decisions; for the feedback, the
  batch's seqs taken from ``log_head`` (its row stays locked until ``COMMIT``: the commit order
  of the log), then one statement that writes each new row once, with its seq, the outcomes the
  new rows decide (a decision is decided once) and the ratings; then the pulls, incremented in
  SQL in arm order (no dead-lock between workers), and ``COMMIT``.

The request path's hot statements (a recommendation's user read, a batch of decisions, a
feedback batch's pipeline) are sent as prepared statements on the connection's libpq object
directly (:func:`_execute_prepared`, :func:`_execute_pipeline`), without psycopg's async execute
machinery (about half the event loop's CPU a round trip, more of a feedback batch's pipeline),
and so are the reader's other queries.

The results are those of :meth:`PostgreSQLStore.write_batch` and the store's read methods (the
tests run the same API suite on both paths).
"""

from __future__ import annotations

import asyncio
import contextlib
import functools
import json
import logging
import math
import re
import select
import time
from collections import Counter, defaultdict
from collections.abc import Awaitable, Callable, Iterable, Iterator, Sequence
from dataclasses import dataclass
from typing import Any, TypeVar

import orjson
import psycopg
import sqlalchemy as sa
from sqlalchemy.dialects import postgresql
from sqlalchemy.engine import Connection, Engine

from serving.errors import StoreUnavailableError
from serving.multileave import decision_pulls
from serving.store.base import (
    USER_EVENT_COLUMNS,
    CommitMode,
    Store,
    kept_rating_set,
    stored_feedback_row,
)
from serving.store.errors import (
    StoreAccessError,
    StoreNotFoundError,
    check_url_port,
    redact_url,
    register_driver_errors,
    store_timed_out,
    store_unavailable,
    store_unavailable_error,
    unavailable_on_db_error,
)
from serving.store.tables import FEEDBACK_COLUMNS
from serving.store.types import (
    BatchResult,
    FeedbackResult,
    FeedbackWrite,
    PeriodicJob,
    UserEvent,
)

logger = logging.getLogger(__name__)
_T = TypeVar("_T")
#: What the server says, in its FATAL line at connection, when it refuses the URL's user,
#: password or database. Read from the text: psycopg carries no SQLSTATE for a failed
#: connection (a server set to another language than English is read as an outage).
_REFUSAL = re.compile(r'authentication failed|^(role|database) ".*" does not exist|'
                      r"no pg_hba\.conf entry|^permission denied for database")


#: psycopg's own words (never translated) for a connection libpq would not even start, then
#: libpq's for options it refuses before any server is tried (``?sslmode=bogus``: "invalid
#: sslmode value"; ``?host=a,b&port=1,2,3``: "could not match 3 port numbers to 2 hosts").
#: libpq also fails at that first step on a socket file that is missing ("connection to
#: server on socket ... failed: No such file or directory": a local server stopped or
#: restarting), an outage, so the words after the prefix decide (found in review: that was
#: refused, exit 2, and ``serve`` gave up at once).
_NOT_STARTED = re.compile(r"^connection is bad: (?P<said>(invalid |could not match ).*)")


def _refused(exc: BaseException) -> str | None:
    """What refused the URL if ``exc`` says so: the server's FATAL line on any of the
    addresses libpq tried (:data:`_REFUSAL`, one line each), or libpq's refusal of its options
    before it tried any (:data:`_NOT_STARTED`; found by attack: ``?sslmode=bogus`` was "the
    store is unavailable", exit 3, and ``serve`` retried it for 120 s).
    """
    if not isinstance(exc, psycopg.OperationalError):
        return None
    text = str(exc)
    options = _NOT_STARTED.match(text)
    if options:
        return f"libpq refused the URL's options ({options['said'].strip()})"
    for line in text.splitlines():
        if "FATAL:" in line:
            reason = line.split("FATAL:", 1)[1].strip()
            if _REFUSAL.search(reason):
                return f"the store's server refused the connection ({reason})"
    return None


register_driver_errors(psycopg.Error, psycopg.OperationalError, refused=_refused)

#: PostgreSQL's SQLSTATE for a statement the role's privileges do not allow
#: (``insufficient_privilege``): decided by the code, the server's words may be translated.
_INSUFFICIENT_PRIVILEGE = "42501"

_DECISION_COLUMNS = Store._DECISION_COLUMNS

# Plans must follow the log's growth. A prepared statement (psycopg prepares one at its 5th
# execution, _execute_prepared at its first) is planned afresh for its first 5 executions, then
# PostgreSQL keeps one generic plan, costed for the table sizes of that moment, until the
# table is next analysed: on a log growing from empty (every new store; the benchmark) the
# feedback batch's statements kept a sequential scan of the whole feedback table, under the
# log_head lock (two writers, 16 writes a batch: 2,944 -> 8,134 feedback writes/s, PostgreSQL CPU
# 111 -> 38 us a write), and the request path's reads (user_id = ANY(...)) would too. Planning
# every execution costs: the decisions-only batch 49-51 -> 83-94 us of PostgreSQL CPU a decision,
# the request-path reads 47-61 -> 72-91 us a recommendation. So the hot paths keep their generic
# plans and the store analyses the log's tables as they grow (PostgreSQLStore.analyze_grown,
# every ANALYZE_INTERVAL_S: ANALYZE invalidates every session's cached plans of the table); the
# feedback batch's transaction (SET LOCAL) and the engines' connections (refresh, settle, the
# maintenance reads) plan each statement.
_CUSTOM_PLANS = "-c plan_cache_mode=force_custom_plan"
#: Seconds between two looks for grown log tables (:meth:`PostgreSQLStore.analyze_grown`).
ANALYZE_INTERVAL_S = 2.0
#: The log's tables whose plans must follow their growth.
_LOG_TABLES = ("decisions", "feedback", "outcomes", "preferences")

# A batch travels as ONE JSON document per statement (orjson: one C call for the whole batch,
# exact float round trip), unpacked by the server with json_to_recordset; per-element array
# parameters cost ~10x more client CPU (psycopg's list dumper quotes every element in Python).
# The JSON columns are read from the document as text and cast: the service hands most of them
# over already serialised, and orjson writes those strings into the document as they are
# (escaped) instead of each row being copied with its strings wrapped as orjson fragments: 1.11
# -> 0.51 us of client CPU a decision to build the document (32 logged LinTS decisions a batch),
# the server's 24.0 against 22.9 us a decision (load 3.4); a column given as a dict or list is
# nested JSON in the document, whose text json_to_recordset returns for a text column. Either
# way the stored text is the service's serialisation, as before.
_DECISION_RECORD = (
    "event_id text, created_at float8, user_id int8, context text, arm text, "
    "propensity float8, pmf text, slate text, policy text, policy_version int4, cold_start bool, "
    "reward_deadline float8, multileave text, shadow text")
_INSERT_DECISIONS = (
    "INSERT INTO decisions (event_id, created_at, user_id, context, arm, propensity, pmf, slate, "
    "policy, policy_version, cold_start, reward_deadline, multileave, shadow) "
    "SELECT event_id, created_at, user_id, context::json, arm, propensity, pmf::json, "
    "slate::json, policy::json, policy_version, cold_start, reward_deadline, multileave::json, "
    "shadow::json FROM json_to_recordset(%s::json) "
    f"AS t({_DECISION_RECORD})"
)

# A feedback batch is one transaction sent in pipeline mode, read back once, at its COMMIT:
# BEGIN, [the decisions], _TAKE_SEQS (log_head's row lock, held to COMMIT: the log's commit
# order), _WRITE_FEEDBACK, [the pulls], COMMIT. _WRITE_FEEDBACK is a statement of its own, after
# the lock: its snapshot is taken when it starts, so it sees every batch committed before this
# one took the lock (in one statement with the lock, it would not). Every writer of feedback and
# outcomes holds the lock (settle_expired, Store._write_rows too), so what it reads cannot change
# under it: which rows are new, and which new row decides its decision's outcome, are known
# before anything is written. Each row is then written once, with its seq and its ``counted``
# (an earlier design inserted the rows, then set their seqs and marked the counted ones: two
# more versions of each row and index entries, and two scans of the table under the lock).
# A conflict can then only come from a writer that skipped the lock: the inserts have no ON
# CONFLICT clause, so it fails the batch (retried write by write) instead of counting wrongly.
_TAKE_SEQS = "UPDATE log_head SET seq = seq + %s WHERE id = 1"
_PLAN_EACH = "SET LOCAL plan_cache_mode = force_custom_plan"  # see _CUSTOM_PLANS
# Each unique write of the batch, in order: its seq offset ``s`` and, if it may decide an
# outcome, the outcome's ``o_*`` fields and seq offset ``os`` (numbered as Store._write_rows
# numbers them: a feedback, then its outcome); offsets count from log_head's value before the
# batch moved it by ``wanted``.
_WRITE_RECORD = (
    "s int8, created_at float8, user_id int8, movie_id int8, feedback_type text, value float8, "
    "event_id text, event_key text, arm text, reward float8, rating float8, note text, "
    "os int8, o_event text, o_arm text, o_reward float8, o_note text, precedence float8, "
    "excludes bool")
_WRITE_FEEDBACK = (
    "WITH h AS (SELECT seq - %s AS base FROM log_head WHERE id = 1), "
    f"w AS (SELECT w.* FROM json_to_recordset(%s::json) AS w({_WRITE_RECORD})), "
    # New: no stored row has the key (duplicates are answered with the stored row).
    # (LATERAL ... LIMIT 1: one unique-index probe per row; NOT EXISTS was planned as a hash
    # anti-join over a sequential scan of the whole table, json_to_recordset being costed at
    # 100 rows.)
    "n AS (SELECT w.*, h.base + w.s AS seq, h.base + w.os AS oseq FROM h, w "
    "LEFT JOIN LATERAL (SELECT true AS hit FROM feedback AS f WHERE f.user_id = w.user_id "
    "AND f.event_key = w.event_key AND f.movie_id = w.movie_id "
    "AND f.feedback_type = w.feedback_type LIMIT 1) AS x ON true WHERE x.hit IS NULL), "
    # A new row decides its (decision, arm)'s outcome if none is stored and no earlier row of
    # the batch decides it (the first rewarded feedback wins, as in the rule book).
    "d AS (SELECT n.*, coalesce(n.o_event IS NOT NULL AND y.hit IS NULL AND row_number() "
    "OVER (PARTITION BY n.o_event, n.o_arm ORDER BY n.s) = 1, false) AS decides FROM n "
    "LEFT JOIN LATERAL (SELECT true AS hit FROM outcomes AS o WHERE o.event_id = n.o_event "
    "AND o.arm = n.o_arm LIMIT 1) AS y ON true), "
    "f AS (INSERT INTO feedback (id, created_at, user_id, movie_id, feedback_type, value, "
    "event_id, event_key, arm, reward, rating, counted, note, seq) SELECT seq, created_at, "
    "user_id, movie_id, "
    "feedback_type, value, event_id, event_key, arm, reward, rating, decides, "
    "CASE WHEN decides THEN o_note ELSE note END, seq FROM d "
    "RETURNING id, seq, counted, user_id, event_key, movie_id, feedback_type), "
    "o AS (INSERT INTO outcomes (event_id, seq, arm, reward, decided_at, feedback_seq) "
    "SELECT o_event, oseq, o_arm, o_reward, created_at, seq FROM d WHERE decides), "
    # Each movie's kept rating in the batch (the rule book's KeptRating: the row of largest
    # (precedence, created_at, seq), excludes the OR of the rows; window functions run before
    # DISTINCT ON), folded into the stored one by the same clause as every other upsert.
    "r AS (INSERT INTO feedback_ratings (user_id, movie_id, rating, updated_at, precedence, seq, "
    "excludes) SELECT DISTINCT ON (user_id, movie_id) user_id, movie_id, rating, created_at, "
    "precedence, seq, bool_or(excludes) OVER (PARTITION BY user_id, movie_id) FROM d "
    "WHERE rating IS NOT NULL ORDER BY user_id, movie_id, precedence DESC, created_at DESC, "
    f"s DESC {kept_rating_set('feedback_ratings')}) "
    "SELECT * FROM f"
)

# The stored rows of a document of keys ({u, e, m, t}: user, event key, movie, type). LATERAL ...
# LIMIT 1 keeps it one unique-index probe per key: a plain join is planned as a hash join over a
# sequential scan of the whole feedback table.
_STORED_ROWS = (
    f"SELECT {', '.join('f.' + c for c in FEEDBACK_COLUMNS)} FROM "
    "json_to_recordset(%s::json) AS k(u int8, e text, m int8, t text) CROSS JOIN LATERAL "
    "(SELECT * FROM feedback WHERE user_id = k.u AND event_key = k.e AND movie_id = k.m "
    "AND feedback_type = k.t LIMIT 1) AS f")

# All the arms' increments in one statement. The rows are locked in arm order first (LockRows
# above a Sort: FOR UPDATE ... ORDER BY), and the UPDATE can only reach a row through the locked
# subquery, so two workers' transactions always lock in the same order: no dead-lock.
_INCREMENT_CTES = (
    "v AS (SELECT * FROM json_to_recordset(%s::json) AS v(arm text, p int8)), "
    "l AS (SELECT a.arm FROM arm_state AS a WHERE a.arm IN (SELECT arm FROM v) "
    "ORDER BY a.arm FOR UPDATE)")
_INCREMENT_UPDATE = (
    "UPDATE arm_state SET pulls = arm_state.pulls + v.p "
    "FROM l JOIN v ON v.arm = l.arm WHERE arm_state.arm = l.arm")
_INCREMENT = f"WITH {_INCREMENT_CTES} {_INCREMENT_UPDATE}"
# A batch of decisions alone is ONE statement (one implicit transaction): the rows and the
# pulls they add are committed together, and the arm rows stay locked for its execution only.
_DECISIONS_AND_PULLS = f"WITH ins AS ({_INSERT_DECISIONS}), {_INCREMENT_CTES} {_INCREMENT_UPDATE}"


#: The drivers a PostgreSQL URL may name: psycopg 3, with or without saying so.
POSTGRESQL_DRIVERS = ("postgresql", "postgresql+psycopg")


class PostgreSQLStore(Store):
    """The service's database on a PostgreSQL server, shared by any number of workers.

    Parameters
    ----------
    url : str
        ``postgresql+psycopg://user@host:port/db``, or over the server's Unix-domain socket
        (same host: no TCP stack, fewer CPU cycles per round trip)
        ``postgresql+psycopg://user@/db?host=/socket/dir&port=N`` (the port names the socket
        file): libpq's own parameters, read alike by the engines and the event loop's
        connections.
    timeout_s : float, default 10.0
        Longest wait for a connection, a pooled connection or an answer (then a 503).
    create : bool, default True
        Accepted for every backend; the database must exist on the server either way.
    read_only : bool, default False
        True: every session's transactions are read-only (``default_transaction_read_only``),
        and a store of an older recbandits is refused (see :class:`Store`).

    Raises
    ------
    ValueError
        ``timeout_s`` not positive.
    """

    PARAM = "%s"
    JSON_CAST = "::json"
    SLATE_HOLDS = "decisions.slate::jsonb @> to_jsonb(ARRAY[?::int8])"
    insert = staticmethod(postgresql.insert)

    @classmethod
    def check_url(cls, url: sa.engine.URL) -> None:
        """The driver (psycopg 3, the one installed) and the ports: the server answers for
        the rest.

        Found by attack: ``postgresql+psycopg2://`` failed deep in SQLAlchemy with a
        ``ModuleNotFoundError`` traceback; port 99999 was the driver's "connection is bad",
        an outage. The port after the host is checked as written for every backend
        (:func:`~serving.store.errors.parse_url`); a ``?port=`` here, by the same rule
        (:func:`~serving.store.errors.check_url_port`), each of libpq's comma-separated list of
        ports (one per host; an empty one is the default port); libpq's parse of the URL
        (an option it does not know). The values of its options are libpq's to check when it
        connects: a refusal, not an outage (:func:`_refused`).
        """
        if url.drivername not in POSTGRESQL_DRIVERS:
            raise ValueError(f"db: the PostgreSQL driver must be psycopg "
                             f"(postgresql+psycopg://...), got {url.drivername!r}")
        given = url.query.get("port", ())
        for ports in (given,) if isinstance(given, str) else given:
            for port in ports.split(","):
                if port:
                    check_url_port(port, url)
        try:  # libpq's parse of the URL, which knows its options (nothing is connected)
            psycopg.conninfo.conninfo_to_dict(_url_conninfo(url))
        except psycopg.ProgrammingError as exc:  # found by attack: ?bogus=1, a traceback
            raise ValueError(f"db: {str(exc).strip()} in {redact_url(url)!r} (libpq's connection "
                             "options are allowed)") from None

    def identity(self) -> str:
        """Host, port and database (libpq's defaults filled in, a ``?host=`` or ``?port=``
        query read): not the driver, user, password or other parameters.
        """
        query = self.url.query
        host = self.url.host or query.get("host") or "localhost"
        port = self.url.port or query.get("port") or 5432
        return f"postgresql://{str(host).lower()}:{port}/{self.url.database or ''}"

    def _check_url(self, url: str, create: bool) -> None:
        """With ``create`` False, that the database holds a store."""
        if not create:
            # A database with no store in it is refused, as SQLite's empty file is: the
            # commands said "nothing to ..." there, exit 0 (found by attack). One short
            # connection; its failure is the driver's error (an outage, or the server's
            # refusal of the URL: serving.store.errors).
            with psycopg.connect(_conninfo(self), autocommit=True,
                                 connect_timeout=max(1, math.ceil(self.timeout_s))) as conn:
                row = conn.execute("SELECT to_regclass('log_head') IS NOT NULL").fetchone()
            if not (row and row[0]):
                raise StoreNotFoundError(f"no store in the database {self.url.database!r} "
                                         "(it holds no recbandits table)")

    @property
    def commit_mode(self) -> CommitMode:
        """Always ``"async"``: reads and group commits run as coroutines on the event loop."""
        # The request-path reads and the group commits run as coroutines on the event loop
        # (GroupReader, AsyncBatchWriter below); the engines serve everything else.
        return "async"

    def async_writer(self) -> AsyncBatchWriter:
        """A new :class:`AsyncBatchWriter` on this store."""
        return AsyncBatchWriter(self)

    def periodic_jobs(self) -> list[PeriodicJob]:
        """``analyze``: :meth:`analyze_grown` every :data:`ANALYZE_INTERVAL_S` seconds."""
        return [PeriodicJob("analyze", ANALYZE_INTERVAL_S, self.analyze_grown)]

    @unavailable_on_db_error
    def analyze_grown(self) -> list[str]:
        """ANALYZE each log table changed by more rows since its last analysis than it held
        then (it has about doubled; 500 rows at least), so that the sessions' cached generic
        plans are made again for its size; returns their names (autovacuum's own threshold, a
        tenth of the table, is checked once a minute: far too late for a log growing from
        empty). Several workers may run it at once (SKIP_LOCKED: one analyses a table).
        """
        with self.read_engine.connect() as conn:
            grown = [str(r[0]) for r in conn.exec_driver_sql(
                "SELECT relname FROM pg_stat_user_tables WHERE relname = ANY(%(tables)s) "
                "AND n_mod_since_analyze > greatest(500, n_live_tup - n_mod_since_analyze) "
                "ORDER BY relname", {"tables": list(_LOG_TABLES)})]
            for table in grown:
                conn.exec_driver_sql(f"ANALYZE (SKIP_LOCKED) {table}")
        return grown

    def group_reader(self) -> GroupReader:
        """A new :class:`GroupReader` on this store."""
        return GroupReader(self)

    @property
    def _options(self) -> str:
        """The sessions' options: custom plans, and for a store opened read-only every
        transaction read-only (the server refuses a write, whatever a reader attempts).
        """
        return _CUSTOM_PLANS + (" -c default_transaction_read_only=on" if self.read_only
                                else "")

    def _engines(self) -> tuple[Engine, Engine]:
        connect = {"connect_timeout": max(1, math.ceil(self.timeout_s)),
                   "options": self._options}
        # The writes through this engine (a start's schema and version rows, the settle sweep,
        # the commands, a request's own write) wait for a lock at most the store's time-out,
        # then fail as an outage (a 503; a start tries again until startup_timeout_s): the
        # server's default is to wait without end (a start behind a locked log_head waited
        # silently past its deadline: found by attack).
        lock_timeout = f" -c lock_timeout={max(1, math.ceil(self.timeout_s * 1000))}"
        write = sa.create_engine(self.url, pool_size=2, max_overflow=2, pool_pre_ping=True,
                                 connect_args={**connect, "options": self._options + lock_timeout},
                                 pool_timeout=self.timeout_s)
        read = sa.create_engine(self.url, pool_size=8, max_overflow=8, pool_pre_ping=True,
                                connect_args=connect, pool_timeout=self.timeout_s,
                                isolation_level="AUTOCOMMIT")
        for engine in (write, read):
            sa.event.listen(engine, "handle_error", self._access_denied)
        return write, read

    def _access_denied(self, context: sa.engine.ExceptionContext) -> StoreAccessError | None:
        """The one line for a statement the user's privileges do not allow (SQLSTATE
        :data:`_INSUFFICIENT_PRIVILEGE`; the server's words name the table), raised by
        SQLAlchemy in place of its error: what a command that only reads the store needs, or
        one that writes it (and upgrades it at its start), and how to grant it. Found by
        attack: a traceback, exit 1, from every command run by a role without them.
        """
        denied = context.original_exception
        if getattr(denied, "sqlstate", None) != _INSUFFICIENT_PRIVILEGE:
            return None
        diag = getattr(denied, "diag", None)
        reason = (getattr(diag, "message_primary", None) or str(denied)).strip()
        user = self.url.username
        role = context.dialect.identifier_preparer.quote(user) if user else "<user>"
        if self.read_only:
            return StoreAccessError(
                f"cannot read the store {self.describe()} ({reason}): a command that reads "
                f"it needs SELECT on every table of the store (GRANT SELECT ON ALL TABLES IN "
                f"SCHEMA public TO {role}, public or the store's schema)")
        return StoreAccessError(
            f"cannot write the store {self.describe()} ({reason}): this command writes it "
            "(and upgrades it at its start), which needs SELECT, INSERT, UPDATE and DELETE on "
            f"every table of the store (GRANT SELECT, INSERT, UPDATE, DELETE ON ALL TABLES IN "
            f"SCHEMA public TO {role}, public or the store's schema), USAGE on its sequences "
            "and CREATE on the schema, or, for an upgrade, the tables' owner")

    def _raw_connect(self) -> Any:
        import psycopg

        return psycopg.connect(_conninfo(self), autocommit=True, options=self._options,
                               connect_timeout=max(1, math.ceil(self.timeout_s)))

    def _stale(self, conn: Any) -> bool:
        """Whether psycopg's ``conn`` (sync or async) is closed, broken, or has input waiting
        while idle: an idle connection has nothing to read unless the server ended it.
        """
        return bool(conn.closed or conn.broken or _has_input(conn))

    @contextlib.contextmanager
    def _snapshot_connection(self) -> Iterator[Connection]:
        # The read engine autocommits; a server-side cursor needs a transaction (and
        # REPEATABLE READ gives a count and the rows one snapshot).
        with self.read_engine.connect() as conn:
            conn = conn.execution_options(isolation_level="REPEATABLE READ")
            with conn.begin():
                yield conn

    @contextlib.contextmanager
    def _request_transaction(self) -> Iterator[Callable[[], Connection]]:
        """See :meth:`Store._request_transaction`: before each statement, ``statement_timeout``
        is set to what is left of the store's time-out, counted from before the pool's
        check-out. The server waits for a lock without end by default: a PUT of preferences
        behind a locked table answered 200 after 40 s, holding ``log_head`` (and every event
        behind it) meanwhile, and a time-out per statement still let its two statements take
        16 s (found by attack). A cancelled statement, or no time left, is a 503.
        """
        deadline = time.monotonic() + self.timeout_s
        with self.write_engine.begin() as conn:
            def statement() -> Connection:
                left_ms = math.ceil((deadline - time.monotonic()) * 1000)
                if left_ms <= 0:
                    raise _timed_out(self)
                conn.exec_driver_sql(f"SET LOCAL statement_timeout = {left_ms}")
                return conn

            yield statement

    def write_batch(self, decision_rows: Sequence[dict[str, Any]],
                    feedback_writes: Sequence[FeedbackWrite], *,
                    wait: bool = True) -> BatchResult:
        """See :meth:`Store.write_batch`: the cursor of a pooled connection in ``begin()``
        (serving commits go through :meth:`async_writer` instead). ``wait`` is ignored: the
        server's row locks are waited for.
        """
        with self.write_engine.begin() as conn:
            cursor = conn.connection.cursor()
            try:
                return self._write_rows(cursor, decision_rows, feedback_writes)
            finally:
                cursor.close()


def _url_conninfo(url: sa.engine.URL) -> str:
    """``url`` as libpq's connection URI (the password in it)."""
    return url.set(drivername="postgresql").render_as_string(hide_password=False)


def _conninfo(store: PostgreSQLStore) -> str:
    return _url_conninfo(store.url)


async def _connect(store: PostgreSQLStore, options: str) -> Any:
    import psycopg

    # prepare_threshold None: psycopg must never prepare statements of its own here. Once it
    # has, a ROLLBACK through it (a failed batch's, :meth:`AsyncBatchWriter._recover`) makes it
    # send DEALLOCATE ALL, which drops this module's prepared statements too ("prepared
    # statement rb_0 does not exist" on the next batch: seen once a 409 retry check rolled
    # back batches on a connection that had read duplicates through a psycopg cursor).
    return await psycopg.AsyncConnection.connect(
        _conninfo(store), autocommit=True, options=options, prepare_threshold=None,
        connect_timeout=max(1, math.ceil(store.timeout_s)))


def _has_input(conn: Any) -> bool:
    # poll, not select: select refuses descriptors of 1024 and over, which a busy worker
    # with a raised open-file limit reaches (every connection would then count as broken).
    poller = select.poll()
    try:
        poller.register(conn.fileno(), select.POLLIN)
        return bool(poller.poll(0))
    except (OSError, ValueError):
        return True


# The request path's statements (the reader's queries, the batches of decisions and feedback)
# go to libpq directly (:func:`_execute_prepared`, :func:`_execute_pipeline`): psycopg's async
# execute (its generator-driven wait, the prepare manager, the result's loaders) cost ~80 us of
# the event loop's CPU a round trip for the user read, against ~42 us sending the same prepared
# statement on the same connection's ``pgconn`` and waiting for its socket on the loop (1,000
# round trips on uvloop, 1 and 6 users a batch, medians of 7, load 4.5-5.6); a batch holds ~6
# requests under the benchmark's 32 connections, so that is ~6 us a recommendation for each of
# the user read and the decisions' write. The results are read as psycopg reads them (text).
_TYPE_LOADERS: dict[int, Any] = {
    16: lambda v: v == b"t",  # bool
    20: int, 21: int, 23: int,  # int8, int2, int4
    700: float, 701: float,  # float4, float8: PostgreSQL's shortest exact text, as psycopg reads
    25: bytes.decode, 1043: bytes.decode,  # text, varchar
    114: json.loads, 3802: json.loads,  # json, jsonb: as psycopg reads them
}


def _numbered(sql: str) -> bytes:
    """``sql`` with its ``%s`` placeholders numbered ``$1, $2, ...`` for libpq."""
    parts = sql.split("%s")
    return "".join(part + (f"${n}" if n < len(parts) else "")
                   for n, part in enumerate(parts, start=1)).encode()


async def _socket_ready(conn: Any, write: bool = False) -> None:
    """Wait on the event loop until ``conn``'s socket can be read (or written)."""
    loop = asyncio.get_running_loop()
    fd = conn.pgconn.socket
    future = loop.create_future()

    def ready() -> None:
        if not future.done():
            future.set_result(None)

    (loop.add_writer if write else loop.add_reader)(fd, ready)
    try:
        await future
    finally:
        (loop.remove_writer if write else loop.remove_reader)(fd)


async def _result(conn: Any, *, writes: bool = True) -> Any:
    """The last result of the command sent on ``conn`` (libpq), once all its results are in
    (``writes``: see :func:`_answered`).

    Raises
    ------
    psycopg.Error
        The server's error (as psycopg raises it), or ``OperationalError`` for a lost
        connection.
    """
    return await _answered(conn, _wait_result, writes=writes)


async def _answered(conn: Any, read: Callable[[Any], Awaitable[_T]], *, writes: bool = True
                    ) -> _T:
    """``await read(conn)``: the answer to what was sent on ``conn``.

    A wait that is cancelled (the store's time-out) cancels the command in the server first
    and reads the rest of its answer, as psycopg does: a statement waiting for a lock must not
    commit after its request was answered with a 503 (closing the connection would not stop
    it, nor the statements sent after it in a pipeline). If the server had finished before the
    cancel reached it, that answer is returned instead of the cancellation: what was sent is
    done (a transaction committed), and a 503 would tell the caller it was not (found by
    attack: 22 of 52 events answered 503 were stored).

    What sent only reads (``writes`` False) changes nothing the cancel must stop: the
    connection is closed at once, so the read's 503 comes after ``store_timeout_s``, not after
    the cancel's own wait too (found by attack: a recommendation waited 6 s against a time-out
    of 1 s while the server was frozen, where the cancel's connection could not be made).
    """
    try:
        return await read(conn)
    except (asyncio.CancelledError, KeyboardInterrupt) as stop:
        if not writes:
            conn.pgconn.finish()
        elif conn.pgconn.transaction_status == psycopg.pq.TransactionStatus.ACTIVE:
            try:
                await conn.cancel_safe(timeout=5.0)
                async with asyncio.timeout(5.0):
                    answer = await read(conn)
            except psycopg.errors.QueryCanceled:
                pass  # as asked
            except BaseException:  # not cancelled in time, or interrupted again: unknown state
                conn.pgconn.finish()
            else:
                # asyncio.timeout (the store's) lets an answer through: only a CancelledError
                # leaving its block becomes its TimeoutError. An interrupt stays one.
                if isinstance(stop, asyncio.CancelledError):
                    return answer
        raise


async def _flushed(conn: Any) -> None:
    """Wait until libpq has sent all it holds for ``conn`` (the socket buffer may be full)."""
    while conn.pgconn.flush():
        await _socket_ready(conn, write=True)


async def _next_result(conn: Any) -> Any:
    """The next result libpq has for ``conn`` (None after a command's last), waiting on the
    socket while libpq is busy reading it.
    """
    pgconn = conn.pgconn
    while pgconn.is_busy():
        await _socket_ready(conn)
        pgconn.consume_input()
    return pgconn.get_result()


async def _wait_result(conn: Any) -> Any:
    pgconn = conn.pgconn
    await _flushed(conn)
    last = None
    while (result := await _next_result(conn)) is not None:
        last = result
    if last is None or last.status == psycopg.pq.ExecStatus.FATAL_ERROR:
        if last is None:
            raise psycopg.OperationalError(pgconn.get_error_message() or "no result")
        raise psycopg.errors.error_from_result(last, encoding=conn.info.encoding)
    return last


async def _pipeline_results(conn: Any, commands: int) -> list[Any]:
    """The last result of each of the ``commands`` sent on ``conn`` in pipeline mode, read up
    to the pipeline's sync; then the first command's error, if any, is raised.
    """
    pgconn = conn.pgconn
    await _flushed(conn)
    results: list[Any] = []
    last = None
    while True:
        result = await _next_result(conn)
        if result is None:
            if last is None:  # the next command's answer has not come yet
                await _socket_ready(conn)
                pgconn.consume_input()
                continue
            results.append(last)
            last = None
        elif result.status == psycopg.pq.ExecStatus.PIPELINE_SYNC:
            break
        else:
            last = result
    for result in results:
        if result.status == psycopg.pq.ExecStatus.FATAL_ERROR:
            raise psycopg.errors.error_from_result(result, encoding=conn.info.encoding)
    if len(results) != commands:
        raise psycopg.OperationalError(f"{len(results)} answers to {commands} commands")
    return results


async def _statement(connection: _Connection, sql: str) -> bytes:
    """The name of ``sql`` prepared on ``connection`` (prepared now, one round trip, if not)."""
    name = connection.prepared.get(sql)
    if name is None:
        name = f"rb_{len(connection.prepared)}".encode()
        connection.conn.pgconn.send_prepare(name, _numbered(sql))
        await _result(connection.conn, writes=False)  # a PREPARE changes no data
        connection.prepared[sql] = name
    return name


def _rows(result: Any, encoding: str) -> list[tuple[Any, ...]]:
    """The rows of a libpq ``result``, read as psycopg reads them (text format, text in the
    connection's ``encoding``; the column types of :data:`_TYPE_LOADERS`, NULL as None).
    """
    loaders = [_TYPE_LOADERS[oid] if oid not in (25, 1043) or encoding == "utf-8"
               else functools.partial(bytes.decode, encoding=encoding)
               for oid in (result.ftype(j) for j in range(result.nfields))]
    value = result.get_value
    return [tuple(None if (v := value(i, j)) is None else load(v)
                  for j, load in enumerate(loaders)) for i in range(result.ntuples)]


def _encoded(params: Sequence[str | None]) -> list[bytes | None]:
    return [None if p is None else p.encode() for p in params]


async def _execute_prepared(connection: _Connection, sql: str, params: Sequence[str | None],
                            *, writes: bool = True) -> list[tuple[Any, ...]]:
    """Run ``sql`` (``%s`` placeholders, text parameters) as a statement prepared on
    ``connection``'s libpq connection; its rows (:func:`_rows`). ``writes`` False: ``sql``
    only reads (:func:`_answered`).
    """
    name = await _statement(connection, sql)
    connection.conn.pgconn.send_query_prepared(name, _encoded(params))
    return _rows(await _result(connection.conn, writes=writes), connection.conn.info.encoding)


async def _execute_pipeline(connection: _Connection,
                            commands: Sequence[tuple[str, Sequence[str | None]]], *,
                            writes: bool = True) -> list[list[tuple[Any, ...]]]:
    """Send ``commands`` (SQL and text parameters; those with parameters as statements prepared
    on ``connection``) in ONE pipeline ended by a sync, and read their answers in one go: the
    rows of each (:func:`_rows`). The first failed command's error is raised once all answers
    are in (the commands after it were not run).
    """
    names = [await _statement(connection, sql) if params else None for sql, params in commands]
    conn = connection.conn
    pgconn = conn.pgconn
    pgconn.enter_pipeline_mode()
    try:
        for (sql, params), name in zip(commands, names, strict=True):
            if name is None:
                pgconn.send_query_params(sql.encode(), None)
            else:
                pgconn.send_query_prepared(name, _encoded(params))
        pgconn.pipeline_sync()
        results = await _answered(conn, lambda c: _pipeline_results(c, len(commands)),
                                  writes=writes)
    finally:
        with contextlib.suppress(psycopg.Error):  # a connection given up on: discarded later
            pgconn.exit_pipeline_mode()
    return [_rows(result, conn.info.encoding) for result in results]


class _Connection:
    """One async connection, opened on first use and again after a failure (``options``: the
    server settings of its session), and the statements :attr:`prepared` on it.
    """

    def __init__(self, store: PostgreSQLStore, options: str = "") -> None:
        self.store = store
        self.options = options
        self.conn: Any = None
        #: The statements :func:`_execute_prepared` prepared on this connection: SQL to name.
        self.prepared: dict[str, bytes] = {}

    async def get(self) -> Any:
        if self.conn is not None and self.store._stale(self.conn):
            # Reconnect now rather than fail a batch on a connection the server ended.
            # SQLAlchemy's pre-ping would cost a round trip per batch for the same.
            await self.discard()
        if self.conn is None:
            try:
                self.conn = await asyncio.wait_for(_connect(self.store, self.options),
                                                   self.store.timeout_s)
            except TimeoutError as exc:
                # A 503 like every other time-out (found by attack: the batch writer let this
                # one through as a 500, for events that need no read before their write).
                raise _timed_out(self.store) from exc
            self.prepared = {}
        return self.conn

    async def discard(self) -> None:
        conn, self.conn = self.conn, None
        if conn is not None:
            try:
                await conn.close()
            except Exception:  # already broken: nothing left to release
                logger.debug("closing a broken connection failed", exc_info=True)

    async def close(self) -> None:
        await self.discard()


# ---------------------------------------------------------------------------- reads
@dataclass
class _Read:
    kind: str
    args: tuple[Any, ...]
    future: asyncio.Future[Any]


_USER_CONTEXT = (
    "SELECT q.i, p.genres, "
    + ", ".join(f"f.{c}" for c in USER_EVENT_COLUMNS.split(", "))
    + " FROM json_to_recordset(%s::json) AS q(i int8, u int8, since float8, n int8) "
    "LEFT JOIN LATERAL (SELECT genres FROM preferences WHERE user_id = q.u "
    "ORDER BY seq DESC LIMIT 1) AS p ON true "
    "LEFT JOIN LATERAL (SELECT * FROM feedback WHERE user_id = q.u AND created_at >= "
    "q.since ORDER BY seq DESC LIMIT q.n) AS f ON true ORDER BY q.i, f.seq")


class GroupReader:
    """Batches the request-path reads of one worker into one query per kind.

    ``await reader.read(kind, *args)`` answers like ``getattr(store, kind)(*args)`` for
    ``kind`` in :attr:`KINDS`. Reads queued while a batch is in flight form the next batch, so
    under load one round trip serves many requests and when idle a read costs one round trip.

    Parameters
    ----------
    store : PostgreSQLStore
        Its URL and time-out are used.
    """

    KINDS = frozenset({"user_feedback", "user_context", "decision", "latest_decision_showing"})

    def __init__(self, store: PostgreSQLStore) -> None:
        self.store = store
        self._conn = _Connection(store)  # generic plans: see _CUSTOM_PLANS
        self._pending: list[_Read] = []
        self._wake: asyncio.Event | None = None
        self._task: asyncio.Task[None] | None = None
        self.batches = 0
        self.reads = 0

    def start(self) -> None:
        """Start the batching task on the running event loop."""
        self._wake = asyncio.Event()
        self._task = asyncio.get_running_loop().create_task(self._run())

    async def aclose(self) -> None:
        """Stop the task, fail the reads still queued (503) and close the connection."""
        if self._task is not None:
            self._task.cancel()
            await asyncio.gather(self._task, return_exceptions=True)
            self._task = None
        for item in self._pending:
            if not item.future.done():
                item.future.set_exception(store_unavailable_error("the reader stopped"))
        self._pending = []
        await self._conn.close()

    async def read(self, kind: str, *args: Any) -> Any:
        """Queue one read ``kind`` (one of :attr:`KINDS`) with ``args``; await its answer.

        Raises
        ------
        ValueError
            For a ``kind`` not in :attr:`KINDS`.
        StoreUnavailableError
            When the reader is not running, or the database does not answer in time.
        """
        if kind not in self.KINDS:
            raise ValueError(f"kind must be one of {sorted(self.KINDS)}, got {kind!r}")
        if self._task is None or self._wake is None:
            raise store_unavailable_error("the reader is not running")
        future = asyncio.get_running_loop().create_future()
        self._pending.append(_Read(kind, args, future))
        self._wake.set()
        # The store's time-out counts from the read's arrival: a read queued behind a batch
        # that hung waited for that batch's time-out, then a whole one of its own (503s after
        # 20 s where the settings say 10: found by attack). Timed out, the future is
        # cancelled, and its batch skips it.
        try:
            async with asyncio.timeout(self.store.timeout_s):
                return await future
        except TimeoutError:
            raise _timed_out(self.store) from None

    async def _run(self) -> None:
        assert self._wake is not None  # set by start(); internal invariant
        while True:
            await self._wake.wait()
            self._wake.clear()
            batch, self._pending = self._pending, []
            if batch:
                await self._answer(batch)

    async def _answer(self, batch: list[_Read]) -> None:
        by_kind: dict[str, list[_Read]] = defaultdict(list)
        for item in batch:
            by_kind[item.kind].append(item)
        try:
            # A server that stops answering (without closing the connection) must not hold
            # requests forever: after the store's time-out they get a 503.
            async with asyncio.timeout(self.store.timeout_s):
                await self._conn.get()
                for kind, items in by_kind.items():
                    results = await getattr(self, f"_{kind}")(self._conn, items)
                    for item, result in zip(items, results, strict=True):
                        if not item.future.done():
                            item.future.set_result(result)
        except asyncio.CancelledError:
            raise
        except Exception as exc:
            await self._conn.discard()
            error: BaseException = (_timed_out(self.store) if isinstance(exc, TimeoutError)
                                    else store_unavailable(exc) or exc)
            for item in batch:
                if not item.future.done():
                    item.future.set_exception(error)
            return
        self.batches += 1
        self.reads += len(batch)

    @staticmethod
    async def _user_feedback(connection: _Connection, items: list[_Read]) -> list[list[UserEvent]]:
        users = sorted({int(item.args[0]) for item in items})
        found: dict[int, list[UserEvent]] = defaultdict(list)
        for user, *event in await _execute_prepared(
                connection, f"SELECT user_id, {USER_EVENT_COLUMNS} FROM feedback "
                "WHERE user_id = ANY(%s::int8[]) ORDER BY seq", (_int_array(users),),
                writes=False):
            found[user].append(UserEvent(*event))
        return [found.get(item.args[0], []) for item in items]

    @staticmethod
    async def _user_context(connection: _Connection, items: list[_Read]
                            ) -> list[tuple[list[UserEvent], list[str] | None]]:
        # One round trip: each user's latest stated genres beside each of their latest events
        # (a user with no event still gets a row, with NULL event columns).
        queries = [{"i": i, "u": item.args[0], "since": item.args[1], "n": item.args[2]}
                   for i, item in enumerate(items)]
        events: dict[int, list[UserEvent]] = defaultdict(list)
        stated: dict[int, list[str] | None] = {}
        for i, genres, *event in await _execute_prepared(connection, _USER_CONTEXT,
                                                         (_dumps(queries),), writes=False):
            stated[i] = None if genres is None else list(genres)
            if event[0] is not None:
                events[i].append(UserEvent(*event))
        return [(events.get(i, []), stated.get(i)) for i in range(len(items))]

    @staticmethod
    async def _decision(connection: _Connection,
                        items: list[_Read]) -> list[dict[str, Any] | None]:
        ids = sorted({item.args[0] for item in items})
        rows = await _execute_prepared(
            connection, f"SELECT {_DECISION_COLUMNS} FROM decisions WHERE event_id = ANY("
            "ARRAY(SELECT json_array_elements_text(%s::json)))", (_dumps(ids),),
            writes=False)
        found = {row[0]: Store._decision_row(row) for row in rows}
        return [found.get(item.args[0]) for item in items]

    @staticmethod
    async def _latest_decision_showing(connection: _Connection,
                                       items: list[_Read]) -> list[dict[str, Any] | None]:
        # The slate test runs in SQL (jsonb containment), so no decision is missed however many
        # the user has in the window.
        rows = await _execute_prepared(
            connection, f"SELECT q.i, {', '.join('d.' + c for c in _DECISION_COLUMNS.split(', '))} "
            "FROM json_to_recordset(%s::json) AS q(i int8, u int8, m int8, since float8, "
            "until float8) CROSS JOIN LATERAL (SELECT * FROM decisions "
            "WHERE decisions.user_id = q.u AND decisions.created_at >= q.since "
            "AND (q.until IS NULL OR decisions.created_at <= q.until) "
            "AND decisions.slate::jsonb @> to_jsonb(ARRAY[q.m]) "
            "ORDER BY decisions.created_at DESC, decisions.event_id DESC LIMIT 1) AS d",
            # JSON has no infinity: an unbounded ``until`` goes as null.
            (_dumps([{"i": i, "u": item.args[0], "m": item.args[1], "since": item.args[2],
                      "until": (item.args[3] if len(item.args) > 3
                                and math.isfinite(item.args[3]) else None)}
                     for i, item in enumerate(items)]),), writes=False)
        found = {int(row[0]): Store._decision_row(row[1:]) for row in rows}
        return [found.get(i) for i in range(len(items))]


def _timed_out(store: PostgreSQLStore) -> StoreUnavailableError:
    return store_timed_out(store.timeout_s)


# ---------------------------------------------------------------------------- writes
async def _write_decisions(connection: _Connection, decision_rows: Sequence[dict[str, Any]],
                           pulls: Counter[str]) -> None:
    """Insert ``decision_rows`` and add ``pulls`` to ``arm_state`` in one statement (autocommit).

    Nothing is sent when ``decision_rows`` is empty; ``connection`` is the writer's.
    """
    if not decision_rows:
        return
    document = _dumps(list(decision_rows))
    if pulls:
        await _execute_prepared(connection, _DECISIONS_AND_PULLS,
                                (document, _increments(pulls)))
    else:
        await _execute_prepared(connection, _INSERT_DECISIONS, (document,))


def _write_document(unique: Sequence[FeedbackWrite]) -> tuple[str, int]:
    """``_WRITE_FEEDBACK``'s document for the batch's ``unique`` writes, and ``wanted``: the
    seqs the batch takes (one per write, one more per write that may decide an outcome).
    """
    records = []
    offset = 0
    for write in unique:
        offset += 1
        record = {key: write.values.get(key) for key in _FEEDBACK_KEYS}
        record.update(s=offset, precedence=write.precedence, excludes=write.excludes)
        if write.outcome is not None:
            offset += 1
            record.update(os=offset, o_event=write.outcome["event_id"],
                          o_arm=write.outcome["arm"], o_reward=write.outcome["reward"],
                          o_note=write.decided_note)
        records.append(record)
    return _dumps(records), offset


def _feedback_results(feedback_writes: Sequence[FeedbackWrite],
                      inserted: dict[tuple[int, str, int, str], tuple[int, int, bool]],
                      existing: dict[tuple[int, str, int, str], dict[str, Any]],
                      result: BatchResult) -> None:
    """Append each write's :class:`FeedbackResult` to ``result`` (and count the counted).

    Parameters
    ----------
    feedback_writes : sequence of FeedbackWrite
        The batch's writes, in order; a key written twice gets the first write's row.
    inserted : dict of key to (id, seq, counted)
        The rows this batch inserted.
    existing : dict of key to row
        Rows stored before the batch, for the keys not inserted.
    result : BatchResult
    """
    rows: dict[tuple[int, str, int, str], dict[str, Any]] = {}
    for write in feedback_writes:
        key = write.key
        if key in rows or key in existing:
            row = rows.get(key) or existing[key]
            result.feedback.append(FeedbackResult(stored_feedback_row(dict(row)), False))
            continue
        row_id, seq, counted = inserted[key]
        row = dict(write.values, id=row_id, seq=seq, counted=counted)
        if counted:
            row["note"] = write.decided_note
            result.counted += 1
        rows[key] = row
        result.feedback.append(FeedbackResult(row, True))


class AsyncBatchWriter:
    """Commits one batch per call on a dedicated async connection (see the module doc).

    Parameters
    ----------
    store : PostgreSQLStore
        Its URL and time-out are used.
    """

    def __init__(self, store: PostgreSQLStore) -> None:
        self.store = store
        self._conn = _Connection(store)  # generic plans: see _CUSTOM_PLANS

    async def aclose(self) -> None:
        """Close the writer's connection."""
        await self._conn.close()

    async def write_batch(self, decision_rows: Sequence[dict[str, Any]],
                          feedback_writes: Sequence[FeedbackWrite]) -> BatchResult:
        """As :meth:`PostgreSQLStore.write_batch`: all in ONE transaction, counted exactly once."""
        conn = await self._conn.get()
        try:
            async with asyncio.timeout(self.store.timeout_s):
                return await self._write(conn, decision_rows, feedback_writes)
        except TimeoutError as exc:
            # No answer: closing the connection aborts the transaction unless its COMMIT was
            # already processed, which the 503 cannot rule out (as with any lost answer).
            await self._conn.discard()
            raise _timed_out(self.store) from exc
        except BaseException:
            # Whatever failed, the transaction must not survive: a broken connection is
            # replaced; a live one in a failed transaction is rolled back.
            await self._recover(conn)
            raise

    async def _recover(self, conn: Any) -> None:
        from psycopg import pq

        try:
            if self.store._stale(conn):
                raise ConnectionError("the server ended the connection")
            if conn.info.transaction_status != pq.TransactionStatus.IDLE:
                async with asyncio.timeout(self.store.timeout_s):
                    await conn.execute("ROLLBACK")
        except Exception:
            await self._conn.discard()

    async def _write(self, conn: Any, decision_rows: Sequence[dict[str, Any]],
                     feedback_writes: Sequence[FeedbackWrite]) -> BatchResult:
        result = BatchResult()
        pulls = decision_pulls(decision_rows)
        # The first write of a key in the batch is the one inserted; later ones see its row.
        first: dict[tuple[int, str, int, str], FeedbackWrite] = {}
        for write in feedback_writes:
            first.setdefault(write.key, write)
        unique = list(first.values())
        if not unique:
            await _write_decisions(self._conn, decision_rows, pulls)
            return result
        document, wanted = _write_document(unique)
        # One round trip (two for a batch with keyed events, whose stored rows are read under
        # log_head's lock first): log_head stays locked for the server's execution of the
        # statements after _TAKE_SEQS (and that one read's round trip). Sent through libpq's
        # pipeline directly (_execute_pipeline), not psycopg's: a batch of 6 feedback writes
        # cost 77.5 us of the event loop's CPU a write through psycopg's pipeline, ~435 us a
        # batch (load 6.2).
        commands: list[tuple[str, Sequence[str | None]]] = [("BEGIN", ()), (_PLAN_EACH, ())]
        if decision_rows:
            commands.append((_INSERT_DECISIONS, (_dumps(list(decision_rows)),)))
        commands.append((_TAKE_SEQS, (str(wanted),)))
        checked = [(w, w.retry) for w in feedback_writes if w.retry is not None]
        stored: dict[tuple[int, str, int, str], dict[str, Any]] = {}
        if checked:
            # A keyed event's retry check (serving.retries) reads the stored rows of its keys
            # in this transaction, after _TAKE_SEQS (log_head's lock: no other batch can store
            # them now): one more round trip for such a batch, in place of the read the service
            # made before the write. Its error leaves the transaction to write_batch's ROLLBACK.
            commands.append((_STORED_ROWS, (_key_document(w.key for w, _ in checked),)))
            stored = _stored_rows((await _execute_pipeline(self._conn, commands))[-1])
            for write, retry in checked:
                row = stored.get(write.key)
                if row is None and first[write.key] is not write:  # its key's first write
                    row = first[write.key].values
                if row is not None:
                    retry.check(write.values, row)
            commands = []
        returned = len(commands)
        commands.append((_WRITE_FEEDBACK, (str(wanted), document)))
        if pulls:
            commands.append((_INCREMENT, (_increments(pulls),)))
        commands.append(("COMMIT", ()))
        answers = await _execute_pipeline(self._conn, commands)
        inserted = {(r[3], r[4], r[5], r[6]): (int(r[0]), int(r[1]), bool(r[2]))
                    for r in answers[returned]}
        missing = [w.key for w in unique if w.key not in inserted]
        # The duplicates' rows: those the retry check read under the lock (no other writer could
        # change them since), the others read after the COMMIT (they are not the batch's own).
        existing = {k: stored[k] for k in missing if k in stored}
        unread = [k for k in missing if k not in existing]
        if unread:
            existing.update(_stored_rows((await _execute_pipeline(
                self._conn, [(_STORED_ROWS, (_key_document(unread),))], writes=False))[0]))
        _feedback_results(feedback_writes, inserted, existing, result)
        return result


def _key_document(keys: Iterable[tuple[int, str, int, str]]) -> str:
    """:data:`_STORED_ROWS`' document of feedback ``keys`` (each once)."""
    return _dumps([{"u": u, "e": e, "m": m, "t": t} for u, e, m, t in dict.fromkeys(keys)])


def _stored_rows(rows: Sequence[tuple[Any, ...]]
                 ) -> dict[tuple[int, str, int, str], dict[str, Any]]:
    """:data:`_STORED_ROWS`' answer as each stored row by its key."""
    found = {}
    for values in rows:
        row = stored_feedback_row(dict(zip(FEEDBACK_COLUMNS, values, strict=True)))
        found[row["user_id"], row["event_key"], row["movie_id"], row["feedback_type"]] = row
    return found


def _dumps(value: Any) -> str:
    return orjson.dumps(value, option=orjson.OPT_SERIALIZE_NUMPY).decode()


def _increments(pulls: Counter[str]) -> str:
    return _dumps([{"arm": arm, "p": pulls[arm]} for arm in sorted(pulls)])


#: The feedback columns the batch document carries (``seq`` and ``counted`` are set in SQL).
_FEEDBACK_KEYS = ("created_at", "user_id", "movie_id", "feedback_type", "value", "event_id",
                  "event_key", "arm", "reward", "rating", "note")


def _int_array(values: Sequence[int]) -> str:
    """A PostgreSQL array literal of ints (no quoting needed, far cheaper than a list dump)."""
    return "{" + ",".join(map(str, values)) + "}"


__all__ = ["AsyncBatchWriter", "GroupReader", "PostgreSQLStore"]
