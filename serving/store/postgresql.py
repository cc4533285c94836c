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
  of a few statements sent in pipeline mode: one ``INSERT ... SELECT FROM json_to_recordset`` for
  all the decisions; for the feedback, one statement that takes the batch's seqs from
  ``log_head`` (its row stays locked until ``COMMIT``: the commit order of the log) and inserts the
  rows (``ON CONFLICT DO NOTHING RETURNING``), and one that inserts the outcomes they decide
  (``ON CONFLICT (event_id) DO NOTHING``: a decision is decided once) and marks their feedback
  counted; then the ratings, the pulls and ``COMMIT``. The pulls are incremented in SQL in arm
  order (no dead-lock between workers) as the last statement before ``COMMIT``.

The results are those of :meth:`PostgreSQLStore.write_batch` and the store's read methods (the
tests run the same API suite on both paths).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import math
import select
from collections import Counter, defaultdict
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from typing import Any

import orjson
import psycopg
import sqlalchemy as sa
from sqlalchemy.dialects import postgresql
from sqlalchemy.engine import Connection, Engine

from serving.errors import StoreUnavailableError
from serving.store.base import USER_EVENT_COLUMNS, CommitMode, Store, stored_feedback_row
from serving.store.errors import (
    register_driver_errors,
    store_unavailable,
    store_unavailable_error,
)
from serving.store.types import BatchResult, FeedbackResult, FeedbackWrite, UserEvent

logger = logging.getLogger(__name__)
register_driver_errors(psycopg.Error, psycopg.OperationalError)

_DECISION_COLUMNS = Store._DECISION_COLUMNS

# A batch travels as ONE JSON document per statement (orjson: one C call for the whole batch,
# exact float round trip), unpacked by the server with json_to_recordset; per-element array
# parameters cost ~10x more client CPU (psycopg's list dumper quotes every element in Python).
_DECISION_RECORD = (
    "event_id text, created_at float8, user_id int8, context json, arm text, "
    "propensity float8, pmf json, slate json, policy json, policy_version int4, cold_start bool, "
    "reward_deadline float8")
_INSERT_DECISIONS = (
    "INSERT INTO decisions (event_id, created_at, user_id, context, arm, propensity, pmf, slate, "
    "policy, policy_version, cold_start, reward_deadline) "
    "SELECT event_id, created_at, user_id, context, arm, propensity, pmf, slate, policy, "
    "policy_version, cold_start, reward_deadline FROM json_to_recordset(%s::json) "
    f"AS t({_DECISION_RECORD})"
)

# The batch's seqs: log_head moves by ``wanted`` (feedback + outcome candidates); feedback i
# (1-based) gets head - wanted + i, outcome candidate j gets head - wanted + n_feedback + j.
_FEEDBACK_RECORD = (
    "created_at float8, user_id int8, movie_id int8, feedback_type text, value float8, "
    "event_id text, event_key text, arm text, reward float8, rating float8, note text")
def _numbered(document: str, record: str, alias: str) -> str:
    """``json_to_recordset`` of ``record`` columns, numbered 1, 2, ... in column ``ord``
    (a column definition list only takes WITH ORDINALITY inside ``ROWS FROM``).
    """
    names = ", ".join(column.split()[0] for column in record.split(", "))
    return (f"ROWS FROM (json_to_recordset({document}) AS ({record})) WITH ORDINALITY "
            f"AS {alias}({names}, ord)")


# The rows go in without a seq; once the client knows which were new (duplicates are not), the
# batch's last statements take the seqs from log_head, so its row lock is held for the server's
# execution of those statements only, never across a client round trip (with two workers the
# lock taken first and held over the round trip cut feedback to 0.20 of the bare endpoint).
_INSERT_FEEDBACK = (
    "INSERT INTO feedback (created_at, user_id, movie_id, feedback_type, value, event_id, "
    "event_key, arm, reward, rating, counted, note) "
    "SELECT created_at, user_id, movie_id, feedback_type, value, event_id, event_key, arm, "
    f"reward, rating, false, note FROM json_to_recordset(%s::json) AS t({_FEEDBACK_RECORD}) "
    "ON CONFLICT (user_id, event_key, movie_id, feedback_type) DO NOTHING "
    "RETURNING id, user_id, event_key, movie_id, feedback_type"
)
# The new rows' seqs, in batch order (= ANY keeps it an index scan of the primary key).
_ASSIGN_SEQS = (
    "WITH h AS (UPDATE log_head SET seq = seq + %s WHERE id = 1 RETURNING seq) "
    "UPDATE feedback SET seq = h.seq - %s + array_position(%s::int8[], feedback.id) FROM h "
    "WHERE feedback.id = ANY(%s::int8[]) RETURNING feedback.id, feedback.seq"
)
# Outcome candidate j of new feedback f (its ordinal among the batch's new rows): inserted only
# if its decision has no outcome yet; its feedback is then counted.
_OUTCOME_RECORD = "event_id text, arm text, reward float8, decided_at float8, f int8, note text"
_INSERT_OUTCOMES = (
    "WITH h AS (SELECT seq FROM log_head WHERE id = 1), "
    "c AS (SELECT c.*, h.seq - %s + c.f AS feedback_seq, h.seq - %s + c.ord AS seq "
    f"FROM h, {_numbered('%s::json', _OUTCOME_RECORD, 'c')}), "
    "ins AS (INSERT INTO outcomes (event_id, seq, arm, reward, decided_at, feedback_seq) "
    "SELECT c.event_id, c.seq, c.arm, c.reward, c.decided_at, c.feedback_seq FROM c "
    "ON CONFLICT (event_id) DO NOTHING RETURNING feedback_seq) "
    # = ANY(ARRAY(...)) likewise makes the update an index scan of the few rows it marks.
    "UPDATE feedback SET counted = true, "
    "note = (SELECT c.note FROM c WHERE c.feedback_seq = feedback.seq) "
    "WHERE feedback.seq = ANY(ARRAY(SELECT feedback_seq FROM ins)) RETURNING feedback.seq"
)

_UPSERT_RATINGS = (
    "INSERT INTO feedback_ratings (user_id, movie_id, rating, updated_at) "
    "SELECT u, m, r, t FROM json_to_recordset(%s::json) AS x(u int8, m int8, r float8, t float8) "
    "ON CONFLICT (user_id, movie_id) DO UPDATE SET rating = excluded.rating, "
    "updated_at = excluded.updated_at"
)

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


class PostgreSQLStore(Store):
    """The service's database on a PostgreSQL server, shared by any number of workers.

    Parameters
    ----------
    url : str
        ``postgresql+psycopg://user@host:port/db``.
    timeout_s : float, default 10.0
        Longest wait for a connection, a pooled connection or an answer (then a 503).
    create : bool, default True
        Accepted for every backend; the database must exist on the server either way.

    Raises
    ------
    ValueError
        ``timeout_s`` not positive.
    """

    PARAM = "%s"
    JSON_CAST = "::json"
    SLATE_HOLDS = "decisions.slate::jsonb @> to_jsonb(ARRAY[?::int8])"
    insert = staticmethod(postgresql.insert)

    def _check_url(self, url: str, create: bool) -> None:
        """Nothing to check before connecting: the server answers for the database."""

    @property
    def commit_mode(self) -> CommitMode:
        """Always ``"async"``: reads and group commits run as coroutines on the event loop."""
        # The request-path reads and the group commits run as coroutines on the event loop
        # (GroupReader, AsyncBatchWriter below); the engines serve everything else.
        return "async"

    def async_writer(self) -> AsyncBatchWriter:
        """A new :class:`AsyncBatchWriter` on this store."""
        return AsyncBatchWriter(self)

    def group_reader(self) -> GroupReader:
        """A new :class:`GroupReader` on this store."""
        return GroupReader(self)

    def _engines(self) -> tuple[Engine, Engine]:
        connect = {"connect_timeout": max(1, math.ceil(self.timeout_s))}
        write = sa.create_engine(self.url, pool_size=2, max_overflow=2, pool_pre_ping=True,
                                 connect_args=connect, pool_timeout=self.timeout_s)
        read = sa.create_engine(self.url, pool_size=8, max_overflow=8, pool_pre_ping=True,
                                connect_args=connect, pool_timeout=self.timeout_s,
                                isolation_level="AUTOCOMMIT")
        return write, read

    def _raw_connect(self) -> Any:
        import psycopg

        return psycopg.connect(_conninfo(self), autocommit=True,
                               connect_timeout=max(1, math.ceil(self.timeout_s)))

    @contextlib.contextmanager
    def _snapshot_connection(self) -> Iterator[Connection]:
        # The read engine autocommits; a server-side cursor needs a transaction (and
        # REPEATABLE READ gives a count and the rows one snapshot).
        with self.read_engine.connect() as conn:
            conn = conn.execution_options(isolation_level="REPEATABLE READ")
            with conn.begin():
                yield conn

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


def _conninfo(store: PostgreSQLStore) -> str:
    return store.url.set(drivername="postgresql").render_as_string(hide_password=False)


async def _connect(store: PostgreSQLStore) -> Any:
    import psycopg

    return await psycopg.AsyncConnection.connect(
        _conninfo(store), autocommit=True,
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


class _Connection:
    """One async connection, opened on first use and again after a failure."""

    def __init__(self, store: PostgreSQLStore) -> None:
        self.store = store
        self.conn: Any = None

    async def get(self) -> Any:
        if self.conn is not None and (self.conn.closed or self.conn.broken
                                      or _has_input(self.conn)):
            # An idle connection has nothing to read unless the server ended it (a restart,
            # an administrator's terminate): reconnect now rather than fail a batch on it.
            # SQLAlchemy's pre-ping would cost a round trip per batch for the same.
            await self.discard()
        if self.conn is None:
            self.conn = await asyncio.wait_for(_connect(self.store), self.store.timeout_s)
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

    KINDS = frozenset({"user_feedback", "decision", "latest_decision_showing"})

    def __init__(self, store: PostgreSQLStore) -> None:
        self.store = store
        self._conn = _Connection(store)
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
        return await future

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
                conn = await self._conn.get()
                for kind, items in by_kind.items():
                    results = await getattr(self, f"_{kind}")(conn, items)
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
    async def _user_feedback(conn: Any, items: list[_Read]) -> list[list[UserEvent]]:
        users = sorted({int(item.args[0]) for item in items})
        cursor = conn.cursor()
        await cursor.execute(f"SELECT user_id, {USER_EVENT_COLUMNS} FROM feedback "
                             "WHERE user_id = ANY(%s::int8[]) ORDER BY seq",
                             (_int_array(users),))
        found: dict[int, list[UserEvent]] = defaultdict(list)
        for user, *event in await cursor.fetchall():
            found[user].append(UserEvent(*event))
        return [found.get(item.args[0], []) for item in items]

    @staticmethod
    async def _decision(conn: Any, items: list[_Read]) -> list[dict[str, Any] | None]:
        ids = sorted({item.args[0] for item in items})
        cursor = conn.cursor()
        await cursor.execute(f"SELECT {_DECISION_COLUMNS} FROM decisions WHERE event_id = ANY("
                             "ARRAY(SELECT json_array_elements_text(%s::json)))", (_dumps(ids),))
        found = {row[0]: Store._decision_row(row) for row in await cursor.fetchall()}
        return [found.get(item.args[0]) for item in items]

    @staticmethod
    async def _latest_decision_showing(conn: Any,
                                       items: list[_Read]) -> list[dict[str, Any] | None]:
        # The slate test runs in SQL (jsonb containment), so no decision is missed however many
        # the user has in the window.
        cursor = conn.cursor()
        await cursor.execute(
            f"SELECT q.i, {', '.join('d.' + c for c in _DECISION_COLUMNS.split(', '))} "
            "FROM json_to_recordset(%s::json) AS q(i int8, u int8, m int8, since float8) "
            "CROSS JOIN LATERAL (SELECT * FROM decisions "
            "WHERE decisions.user_id = q.u AND decisions.created_at >= q.since "
            "AND decisions.slate::jsonb @> to_jsonb(ARRAY[q.m]) "
            "ORDER BY decisions.created_at DESC, decisions.event_id DESC LIMIT 1) AS d",
            (_dumps([{"i": i, "u": item.args[0], "m": item.args[1], "since": item.args[2]}
                     for i, item in enumerate(items)]),))
        found = {int(row[0]): Store._decision_row(row[1:]) for row in await cursor.fetchall()}
        return [found.get(i) for i in range(len(items))]


def _timed_out(store: PostgreSQLStore) -> StoreUnavailableError:
    return store_unavailable_error(f"no answer from the database within {store.timeout_s:g} s")


# ---------------------------------------------------------------------------- writes
async def _write_decisions(conn: Any, decision_rows: Sequence[dict[str, Any]],
                           pulls: Counter[str]) -> None:
    """Insert ``decision_rows`` and add ``pulls`` to ``arm_state`` in one statement (autocommit).

    Nothing is sent when ``decision_rows`` is empty; ``conn`` is the writer's async connection.
    """
    if not decision_rows:
        return
    document = _dumps([_as_json(r) for r in decision_rows])
    if pulls:
        await conn.execute(_DECISIONS_AND_PULLS, (document, _increments(pulls)))
    else:
        await conn.execute(_INSERT_DECISIONS, (document,))


def _new_ratings(feedback_writes: Sequence[FeedbackWrite],
                 ids: dict[tuple[int, str, int, str], int],
                 ) -> dict[tuple[int, int], tuple[Any, ...]]:
    """The ratings the batch's new rows (``ids``: key -> id) keep, in log order (the latest
    rating of a movie wins, as one upsert per write would leave it).
    """
    ratings: dict[tuple[int, int], tuple[Any, ...]] = {}
    seen: set[tuple[int, str, int, str]] = set()
    for write in feedback_writes:
        if write.key in seen or write.key not in ids:
            continue
        seen.add(write.key)
        v = write.values
        if v["rating"] is not None:
            ratings[v["user_id"], v["movie_id"]] = (v["user_id"], v["movie_id"], v["rating"],
                                                    v["created_at"])
    return ratings


def _feedback_results(feedback_writes: Sequence[FeedbackWrite],
                      inserted: dict[tuple[int, str, int, str], tuple[int, int]],
                      existing: dict[tuple[int, str, int, str], dict[str, Any]],
                      counted: set[int], result: BatchResult,
                      ) -> dict[tuple[int, int], tuple[Any, ...]]:
    """Append each write's :class:`FeedbackResult` to ``result``; return the ratings to upsert.

    Parameters
    ----------
    feedback_writes : sequence of FeedbackWrite
        The batch's writes, in order; a key written twice gets the first write's row.
    inserted : dict of key to (id, seq)
        The rows this batch inserted.
    existing : dict of key to row
        Rows stored before the batch, for the keys not inserted.
    counted : set of int
        Seqs of the feedback that decided an outcome (``result.counted`` grows by them).
    result : BatchResult

    Returns
    -------
    dict of (user_id, movie_id) to (user_id, movie_id, rating, created_at)
        In log order: the latest rating of a movie wins, as one upsert per write would leave it.
    """
    rows: dict[tuple[int, str, int, str], dict[str, Any]] = {}
    ratings: dict[tuple[int, int], tuple[Any, ...]] = {}
    for write in feedback_writes:
        key = write.key
        if key in rows or key in existing:
            row = rows.get(key) or existing[key]
            result.feedback.append(FeedbackResult(stored_feedback_row(dict(row)), False))
            continue
        row_id, seq = inserted[key]
        row = dict(write.values, id=row_id, seq=seq, counted=seq in counted)
        if row["counted"]:
            row["note"] = write.decided_note
            result.counted += 1
        rows[key] = row
        result.feedback.append(FeedbackResult(row, True))
        if row["rating"] is not None:
            ratings[row["user_id"], row["movie_id"]] = (
                row["user_id"], row["movie_id"], row["rating"], row["created_at"])
    return ratings


class AsyncBatchWriter:
    """Commits one batch per call on a dedicated async connection (see the module doc).

    Parameters
    ----------
    store : PostgreSQLStore
        Its URL and time-out are used.
    """

    def __init__(self, store: PostgreSQLStore) -> None:
        self.store = store
        self._conn = _Connection(store)

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
            if conn.closed or conn.broken:
                raise ConnectionError("broken")
            if conn.info.transaction_status != pq.TransactionStatus.IDLE:
                async with asyncio.timeout(self.store.timeout_s):
                    await conn.execute("ROLLBACK")
        except Exception:
            await self._conn.discard()

    async def _write(self, conn: Any, decision_rows: Sequence[dict[str, Any]],
                     feedback_writes: Sequence[FeedbackWrite]) -> BatchResult:
        result = BatchResult()
        pulls = Counter(row["arm"] for row in decision_rows if not row["cold_start"])
        # The first write of a key in the batch is the one inserted; later ones see its row.
        first: dict[tuple[int, str, int, str], FeedbackWrite] = {}
        for write in feedback_writes:
            first.setdefault(write.key, write)
        unique = list(first.values())
        if not unique:
            await _write_decisions(conn, decision_rows, pulls)
            return result
        fb_cursor = conn.cursor()
        seq_cursor = conn.cursor()
        outcome_cursor = conn.cursor()
        async with conn.pipeline() as pipeline:
            await conn.execute("BEGIN")
            if decision_rows:
                await conn.execute(_INSERT_DECISIONS, (_dumps([_as_json(r)
                                                               for r in decision_rows]),))
            await fb_cursor.execute(_INSERT_FEEDBACK, (_dumps(
                [{k: w.values.get(k) for k in _FEEDBACK_KEYS} for w in unique]),))
            await pipeline.sync()
            ids = {(r[1], r[2], r[3], r[4]): int(r[0]) for r in await fb_cursor.fetchall()}
            missing = [w.key for w in unique if w.key not in ids]
            existing: dict[tuple[int, str, int, str], dict[str, Any]] = {}
            if missing:
                existing = await self._existing(conn, pipeline, missing)
            new = [w for w in unique if w.key in ids]
            candidates = [
                {**w.outcome, "decided_at": w.values["created_at"], "f": i + 1,
                 "note": w.decided_note}
                for i, w in enumerate(new) if w.outcome is not None]
            wanted = len(new) + len(candidates)
            # From here to COMMIT no result is read: log_head stays locked for the server's
            # execution of these statements only.
            if new:
                order = _int_array([ids[w.key] for w in new])
                await seq_cursor.execute(_ASSIGN_SEQS, (wanted, wanted, order, order))
                if candidates:
                    # New row f's seq is head - wanted + f; candidate j's, that + len(new) + j.
                    await outcome_cursor.execute(_INSERT_OUTCOMES, (
                        wanted, wanted - len(new), _dumps(candidates)))
            ratings = _new_ratings(feedback_writes, ids)
            if ratings:
                await conn.execute(_UPSERT_RATINGS, (_dumps(
                    [{"u": u, "m": m, "r": r, "t": t} for u, m, r, t in ratings.values()]),))
            if pulls:
                await conn.execute(_INCREMENT, (_increments(pulls),))
            await conn.execute("COMMIT")
            await pipeline.sync()
            seqs = ({int(r[0]): int(r[1]) for r in await seq_cursor.fetchall()} if new
                    else {})
            counted = ({int(r[0]) for r in await outcome_cursor.fetchall()} if candidates
                       else set())
        inserted = {key: (row_id, seqs[row_id]) for key, row_id in ids.items()}
        _feedback_results(feedback_writes, inserted, existing, counted, result)
        return result

    async def _existing(self, conn: Any, pipeline: Any, keys: list[tuple[int, str, int, str]],
                        ) -> dict[tuple[int, str, int, str], dict[str, Any]]:
        columns = self.store._feedback_columns
        cursor = conn.cursor()
        # LATERAL ... LIMIT 1 keeps it one unique-index probe per key: a plain join is planned
        # as a hash join over a sequential scan of the whole feedback table.
        await cursor.execute(
            f"SELECT {', '.join('f.' + c for c in columns)} FROM "
            "json_to_recordset(%s::json) AS k(u int8, e text, m int8, t text) CROSS JOIN LATERAL "
            "(SELECT * FROM feedback WHERE user_id = k.u AND event_key = k.e AND movie_id = k.m "
            "AND feedback_type = k.t LIMIT 1) AS f",
            (_dumps([{"u": u, "e": e, "m": m, "t": t} for u, e, m, t in keys]),))
        await pipeline.sync()
        found = {}
        for values in await cursor.fetchall():
            row = stored_feedback_row(dict(zip(columns, values, strict=True)))
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


def _as_json(row: dict[str, Any]) -> dict[str, Any]:
    """A decision row for the batch document: JSON columns the service passes as already
    serialised text are embedded as JSON values, not as strings.
    """
    out = row
    for column in ("context", "pmf", "slate", "policy"):
        value = row.get(column)
        if isinstance(value, str):
            if out is row:
                out = dict(row)
            out[column] = orjson.Fragment(value)
    return out


__all__ = ["AsyncBatchWriter", "GroupReader", "PostgreSQLStore"]
