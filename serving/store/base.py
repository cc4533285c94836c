"""The backend-neutral :class:`Store`: schema, the log's writes and reads, settle sweep, replay.

Every SQL statement of the service is behind one :class:`Store`; a backend (one module each:
:mod:`serving.store.sqlite`, :mod:`serving.store.postgresql`) subclasses it and supplies its
engines, its batch write, its request-path reads and how the group-commit writer
(:mod:`serving.store.writer`) runs it. :func:`serving.store.open_store` picks the backend from
the URL, the one place that knows the backends by name.

Two engines share one URL: a write engine whose transactions take the write lock up front
(``BEGIN IMMEDIATE`` on SQLite, so two processes never dead-lock upgrading a read lock) and a
read engine in autocommit mode. Serving writes are only issued by the group-commit writer (one
batch at a time, many requests per transaction); the pulls are incremented in SQL
(``pulls = pulls + n``) so several processes never lose an update.

Each decision's outcome is decided once, atomically: the ``outcomes`` table's primary key is the
decision, and every insert is ``ON CONFLICT DO NOTHING``, so the first of a feedback and the
settle sweep wins and the other changes nothing. Feedback and outcomes take their ``seq`` from
the ``log_head`` row in the transaction that writes them (see :mod:`serving.store.tables`).
"""

from __future__ import annotations

import abc
import contextlib
import json
import threading
import time
from collections import Counter
from collections.abc import Callable, Iterable, Iterator, Mapping, Sequence
from typing import TYPE_CHECKING, Any, ClassVar, Literal

import orjson
import pandas as pd
import sqlalchemy as sa
from sqlalchemy.engine import Connection, Engine

from serving.errors import ModelVersionError
from serving.multileave import (
    credited_feedback,
    decision_arms,
    decision_pulls,
    group_feedback,
    parse,
)
from serving.rules import Feedback, KeptRating, RuleBook, decided_note, fold_kept
from serving.store.errors import (
    OlderStoreError,
    parse_url,
    redact_url,
    store_unavailable,
    unavailable_on_db_error,
)
from serving.store.tables import (
    FEEDBACK_COLUMNS,
    RATING_COLUMNS_ADDED,
    arm_state,
    decisions,
    feature_sets,
    feedback,
    feedback_ratings,
    fold_arms,
    fold_ratings,
    fold_snapshots,
    items,
    log_head,
    metadata,
    model_versions,
    outcomes,
    policy_meta,
    policy_promotions,
    preferences,
    retrain_lease,
)
from serving.store.types import (
    AddedItem,
    BatchResult,
    Dbapi,
    FeedbackResult,
    FeedbackWrite,
    FoldSnapshot,
    JsonObject,
    LatestDecision,
    LogEvent,
    LogRows,
    ModelVersion,
    MultileaveRows,
    Outcome,
    PeriodicJob,
    PolicyMeta,
    Record,
    RetrainLease,
    Row,
    UserEvent,
    VersionSwitch,
)

#: The columns of a :class:`~serving.store.types.UserEvent`, in its order (every backend's read).
USER_EVENT_COLUMNS = "seq, movie_id, feedback_type, value, created_at"

#: The columns of ``feedback_ratings`` and ``fold_ratings`` that :func:`kept_rating_upsert`
#: writes, in its order.
KEPT_RATING_COLUMNS = ("user_id", "movie_id", "rating", "updated_at", "precedence", "seq",
                       "excludes")


def kept_rating_set(table: str) -> str:
    """The ``ON CONFLICT (user_id, movie_id) DO UPDATE`` clause that folds a new event's kept
    rating (the ``excluded`` row) into ``table``'s: :meth:`serving.rules.KeptRating.then` in
    SQL, so that the stored rating never depends on the order events arrive in (the row of
    larger ``(precedence, updated_at, seq)`` wins; ``excludes`` is the OR of both). Row-value
    comparison: SQLite >= 3.15 and PostgreSQL.
    """
    wins = (f"(excluded.precedence, excluded.updated_at, excluded.seq) > "
            f"({table}.precedence, {table}.updated_at, {table}.seq)")
    taken = ", ".join(f"{c} = CASE WHEN {wins} THEN excluded.{c} ELSE {table}.{c} END"
                      for c in ("rating", "updated_at", "precedence", "seq"))
    return (f"ON CONFLICT (user_id, movie_id) DO UPDATE SET {taken}, "
            f"excludes = {table}.excludes OR excluded.excludes")


def kept_rating_upsert(table: str, n: int, param: str) -> str:
    """The upsert of ``n`` rows of :data:`KEPT_RATING_COLUMNS` into ``table`` (no pair twice:
    one statement cannot update a row twice), folding each into the stored one
    (:func:`kept_rating_set`); ``param`` is the driver's parameter marker.
    """
    row = "(" + ", ".join([param] * len(KEPT_RATING_COLUMNS)) + ")"
    return (f"INSERT INTO {table} ({', '.join(KEPT_RATING_COLUMNS)}) VALUES "
            f"{', '.join([row] * n)} {kept_rating_set(table)}")


def kept_rating_record(user_id: int, movie_id: int, kept: KeptRating) -> Record:
    """One row of :data:`KEPT_RATING_COLUMNS`: ``user_id``, ``movie_id`` and the ``kept``
    rating's fields.
    """
    return (user_id, movie_id, kept.rating, kept.created_at, kept.precedence, kept.seq,
            kept.excludes)


def _settled_statement(seq: int, upto: int | None) -> sa.Select[int, str, str, float]:
    """``(settled_seq, event_id, arm, reward)`` of the decisions settled after ``seq`` (up to
    ``upto``), in settlement order, a multileaved decision's arms in arm order: the drift
    monitor's stream (:meth:`Store.settled_after`, ``log_rows``' ``settled``).
    """
    stmt = (sa.select(decisions.c.settled_seq, outcomes.c.event_id, outcomes.c.arm,
                      outcomes.c.reward)
            .join(outcomes, outcomes.c.event_id == decisions.c.event_id)
            .where(decisions.c.settled_seq > seq)
            .order_by(decisions.c.settled_seq, outcomes.c.arm))
    return stmt if upto is None else stmt.where(decisions.c.settled_seq <= upto)


def _kept(row: Any) -> KeptRating:  # type: ignore[explicit-any]  # a SQLAlchemy Row
    """A stored ``feedback_ratings`` or ``fold_ratings`` row as a :class:`KeptRating`."""
    return KeptRating(float(row.rating), float(row.precedence), float(row.updated_at),
                      int(row.seq), bool(row.excludes))

if TYPE_CHECKING:  # only for annotations: the async helpers live in the backend modules
    from serving.store.postgresql import AsyncBatchWriter, GroupReader

CommitMode = Literal["inline", "async", "thread"]
COMMIT_MODES: tuple[CommitMode, ...] = ("inline", "async", "thread")


def json_text(value: object) -> str:
    """``value`` as JSON text, as the log stores it; a str is taken as already serialised (the
    service caches some: :meth:`serving.user_view.UserView.context_json`, the pmf's text).
    """
    return (value if isinstance(value, str)
            else orjson.dumps(value, option=orjson.OPT_SERIALIZE_NUMPY).decode())


def stored_feedback_row(row: Row) -> Row:
    """A feedback row read back from the table, as the store returns it (``counted`` a bool:
    SQLite stores an int).
    """
    row["counted"] = bool(row["counted"])
    return row


def _context_features(context: object) -> list[float] | None:
    """The feature vector of a logged ``context`` (JSON text or a dict), or None."""
    if isinstance(context, str | bytes):
        context = orjson.loads(context)
    if not isinstance(context, dict):
        return None
    features = context.get("features")
    return features if isinstance(features, list) else None


def _default_sql(column: sa.Column[Any], conn: Connection) -> str:  # type: ignore[explicit-any]
    """``column``'s server default as SQL text of ``conn``'s dialect."""
    default = column.server_default.arg  # type: ignore[union-attr]  # every added column has one
    return str(default if isinstance(default, str)
               else default.compile(dialect=conn.dialect))


def _model_version(row: Mapping[str, Any]) -> ModelVersion:  # type: ignore[explicit-any]  # a SQLAlchemy RowMapping
    """A ``model_versions`` row as a :class:`ModelVersion` (integers as Python ints)."""
    def optional_int(value: object) -> int | None:
        return None if value is None else int(value)  # type: ignore[call-overload]

    return ModelVersion(
        version=int(row["version"]), created_at=float(row["created_at"]),
        status=str(row["status"]), kind=str(row["kind"]), reason=str(row["reason"]),
        arms_dir=row["arms_dir"], arms=dict(row["arms"]), data=dict(row["data"]),
        gate=None if row["gate"] is None else dict(row["gate"]),
        source_version=optional_int(row["source_version"]),
        served_seq=optional_int(row["served_seq"]),
        served_at=None if row["served_at"] is None else float(row["served_at"]),
        changed_arms=list(row["changed_arms"]), carryover=dict(row["carryover"]))


#: What :meth:`Store._upgrade_for_multileave` adds to an older store, as its refusal to a
#: reader names it.
MULTILEAVE_COLUMN = "decisions.multileave"
MULTILEAVE_KEY = "outcomes keyed by (event_id, arm)"

#: How long a store call waits for a lock, a connection or an answer before it is an outage
#: (the stores' default and the service's ``store_timeout_s``'s).
DEFAULT_TIMEOUT_S = 10.0


class Store(abc.ABC):
    """The service's database; subclassed once per backend (open one with ``open_store``).

    Parameters
    ----------
    url : str
        SQLAlchemy URL of the backend's kind.
    timeout_s : float, default 10.0
        Longest wait for a write lock, a connection or a pooled connection; beyond it the
        operation fails with :class:`~serving.errors.StoreUnavailableError` (HTTP 503).
    create : bool, default True
        False: the database must exist already (the readers of a log never create one).
    read_only : bool, default False
        True (implies ``create`` False): the store is only read, never written, not even by
        SQLite's upkeep (the read-only commands: ``holdout``, ``credit``, ``ope``,
        ``rebuild-state``, ``shadow status``, ``models list``/``show``). A store of an older
        recbandits is refused (:class:`~serving.store.errors.OlderStoreError`, naming what
        its upgrade at ``serve``'s start adds), and a backend opens its connections read-only
        (SQLite: :class:`~serving.store.errors.StoreAccessError` when the file cannot be read
        so).

    Attributes
    ----------
    url : sqlalchemy.engine.URL
    backend : str
        The URL's backend name (for messages only: behaviour comes from the subclass).
    write_engine, read_engine : sqlalchemy.engine.Engine
        Set by the subclass's :meth:`_engines`.
    commit_mode : {"inline", "async", "thread"}
        How the group-commit writer runs batches (see :mod:`serving.store.writer`).
    inline_reads : bool
        Whether the request-path reads are cheap enough to run in the event loop itself.

    Raises
    ------
    ValueError
        If ``timeout_s`` is not positive, or the subclass rejects ``url``.
    """

    #: DBAPI parameter marker of the backend's driver ("?" or "%s").
    PARAM: ClassVar[str]
    #: What follows a parameter that fills a JSON column in the DBAPI inserts ("" or "::json").
    JSON_CAST: ClassVar[str] = ""
    #: The dialect's ``insert`` (with ``on_conflict_do_nothing``).
    insert: ClassVar[Callable[..., Any]]  # type: ignore[explicit-any]  # a dialect's insert(); its table type is private to SQLAlchemy
    inline_reads: ClassVar[bool] = False

    _DECISION_COLUMNS = ("event_id, user_id, arm, slate, cold_start, reward_deadline, created_at, "
                         "multileave")

    def __init__(self, url: str, *, timeout_s: float = DEFAULT_TIMEOUT_S,
                 create: bool = True, read_only: bool = False) -> None:
        if not timeout_s > 0:
            raise ValueError(f"timeout_s must be > 0 seconds, got {timeout_s!r}")
        self.timeout_s = float(timeout_s)
        self.read_only = bool(read_only)
        create = create and not self.read_only
        self.url = parse_url(url)
        self.backend = self.url.get_backend_name()
        type(self).check_url(self.url)
        self._check_url(url, create)
        self._local = threading.local()
        # Every thread's request-path connection, so that dispose() closes them all: a pool's
        # threads outlive the store, and their thread-local connections kept the database's
        # files open (found by a CI run: a test process passed 1,024 descriptors).
        self._raw_connections: set[Dbapi] = set()
        self._raw_connections_lock = threading.Lock()
        # Whether the store has the shadow mode's schema (a store not opened by a service
        # since: no promotion and no shadow record, rather than an error; see _has_shadow).
        self._shadow_schema = False
        self.write_engine, self.read_engine = self._engines()
        if self.read_only:
            try:
                self._refuse_an_older_schema()
            except BaseException:
                self.write_engine.dispose()  # (a subclass's own resources come after)
                self.read_engine.dispose()
                raise
        p = self.PARAM
        as_json = self.JSON_CAST
        self._insert_decision_sql = (
            "INSERT INTO decisions (event_id, created_at, user_id, context, arm, propensity, "
            "pmf, slate, policy, policy_version, cold_start, reward_deadline, multileave, shadow) "
            f"VALUES ({p}, {p}, {p}, {p}{as_json}, {p}, {p}, {p}{as_json}, {p}{as_json}, "
            f"{p}{as_json}, {p}, {p}, {p}, {p}{as_json}, {p}{as_json})")
        self._insert_feedback_sql = (
            "INSERT INTO feedback (id, created_at, user_id, movie_id, feedback_type, value, "
            f"event_id, event_key, arm, reward, rating, counted, note, seq) VALUES ({p}, {p}, "
            f"{p}, {p}, {p}, {p}, {p}, {p}, {p}, {p}, {p}, {p}, {p}, {p}) ON CONFLICT (user_id, "
            "event_key, movie_id, feedback_type) DO NOTHING RETURNING id")
        self._select_feedback_sql = (
            f"SELECT {', '.join(FEEDBACK_COLUMNS)} FROM feedback WHERE user_id = {p} AND "
            f"event_key = {p} AND movie_id = {p} AND feedback_type = {p}")
        self._next_seq_sql = f"UPDATE log_head SET seq = seq + {p} WHERE id = 1 RETURNING seq"
        self._insert_outcome_sql = (
            "INSERT INTO outcomes (event_id, seq, arm, reward, decided_at, feedback_seq) VALUES "
            f"({p}, {p}, {p}, {p}, {p}, {p}) ON CONFLICT (event_id, arm) DO NOTHING RETURNING seq")
        self._mark_counted_sql = f"UPDATE feedback SET counted = true, note = {p} WHERE seq = {p}"
        self._increment_sql = f"UPDATE arm_state SET pulls = pulls + {p} WHERE arm = {p}"
        self._upsert_rating_sql = kept_rating_upsert("feedback_ratings", 1, p)

    # ------------------------------------------------------------------ what a backend supplies
    @staticmethod
    def database_file(url: sa.engine.URL) -> str | None:
        """The local file ``url`` names, for a backend that keeps its store in one (SQLite);
        None for a server's (the default). The command line asks it, through
        :func:`serving.store.database_file`, to tell a path the user gave.
        """
        return None

    @classmethod
    @abc.abstractmethod
    def check_url(cls, url: sa.engine.URL) -> None:
        """Raise ValueError if ``url``'s text cannot name a store of this backend (its driver,
        its port): nothing is opened, created or connected to (``serve`` asks it before
        anything else, :func:`serving.store.store_class_of`).
        """

    @abc.abstractmethod
    def _check_url(self, url: str, create: bool) -> None:
        """Raise ValueError if ``url`` cannot be this backend's store (``create``: see above);
        :meth:`check_url` has passed.
        """

    @abc.abstractmethod
    def _engines(self) -> tuple[Engine, Engine]:
        """The write engine and the (autocommit) read engine."""

    @abc.abstractmethod
    def _raw_connect(self) -> Dbapi:
        """A DBAPI connection in autocommit mode for the request-path reads (one per thread)."""

    def _stale(self, conn: Dbapi) -> bool:
        """Whether the server ended the kept connection ``conn`` (a restart, an
        administrator's terminate): the one test, for the request-path reads (:meth:`_fast`
        reads again on a new connection) and for a backend's own connections. Never for a
        file database (the default).
        """
        return False

    @property
    @abc.abstractmethod
    def commit_mode(self) -> CommitMode:
        """How the group-commit writer runs this store's batches: ``inline`` (in the event
        loop, falling back to a thread when the lock is taken), ``async`` (coroutines of
        :meth:`async_writer`) or ``thread`` (one writer thread).
        """

    @abc.abstractmethod
    def write_batch(self, decision_rows: Sequence[Row],
                    feedback_writes: Sequence[FeedbackWrite], *,
                    wait: bool = True) -> BatchResult:
        """Insert decisions and feedback, update counters and ratings, in ONE transaction.

        Feedback whose idempotency key already exists inserts nothing and counts nothing; its
        stored row is returned with ``created=False``. Every returned row has a ``rating``.

        Parameters
        ----------
        decision_rows, feedback_writes
            What to write, in arrival order.
        wait : bool, default True
            Wait up to ``timeout_s`` for the write lock (then a 503). False never waits: if
            another connection holds the lock, the transaction is rolled back and
            :class:`~serving.store.errors.StoreBusyError` raised (the event loop's attempt;
            only for a backend whose :attr:`commit_mode` is ``inline``).

        Raises
        ------
        IdempotencyConflictError
            A write with a ``retry`` check whose key holds another event
            (:mod:`serving.retries`); nothing of the batch is written.
        """

    def periodic_jobs(self) -> list[PeriodicJob]:
        """Upkeep the backend needs run off the request path (the writer runs each job)."""
        return []

    def async_writer(self) -> AsyncBatchWriter:
        """The event-loop batch writer of an ``async`` :attr:`commit_mode` backend."""
        raise NotImplementedError(f"{type(self).__name__} has no async batch writer "
                                  f"(commit_mode {self.commit_mode!r})")

    def group_reader(self) -> GroupReader | None:
        """The event-loop reader batching the request-path reads, if the backend has one."""
        return None

    @contextlib.contextmanager
    def _write_transaction(self) -> Iterator[Connection]:
        """A write-engine transaction for the maintenance writes (the settle sweep)."""
        with self.write_engine.begin() as conn:
            yield conn

    @contextlib.contextmanager
    def _request_transaction(self) -> Iterator[Callable[[], Connection]]:
        """A write-engine transaction for a request's own write outside the batch writer
        (``PUT /users/{id}/preferences``, ``POST /admin/items``), bounded as a whole by the
        store's time-out (a 503 past it), as the batch writer's commits are. It yields
        ``statement()``, to call for the connection before each statement: a backend whose
        server waits for locks without end bounds that statement by the time left there.
        SQLite's busy time-out (the engine's) bounds the transaction already.
        """
        with self.write_engine.begin() as conn:
            yield lambda: conn

    @contextlib.contextmanager
    def _snapshot_connection(self) -> Iterator[Connection]:
        """A read connection in a transaction that sees one snapshot (long log reads)."""
        with self.read_engine.connect() as conn, conn.begin():
            yield conn

    # ------------------------------------------------------------------ common
    @abc.abstractmethod
    def identity(self) -> str:
        """What names this store whatever the spelling of its URL (driver, password, query,
        relative path): ``rebuild-state`` asks a worker which store it serves, and compared
        the URLs' text, so the same store spelt ``postgresql://`` and ``postgresql+psycopg://``
        was "another store", nothing was compared, and it said "match: yes" (found by attack).
        """

    def describe(self) -> str:
        """The URL without its password (:func:`~serving.store.errors.redact_url`)."""
        return redact_url(self.url.render_as_string(hide_password=False))

    def dispose(self) -> None:
        """Close every thread's request-path connection and both engines' pooled ones."""
        with self._raw_connections_lock:
            kept, self._raw_connections = self._raw_connections, set()
        for conn in kept:
            with contextlib.suppress(Exception):  # already closed, or its server gone
                conn.close()
        self.write_engine.dispose()
        self.read_engine.dispose()

    def _reader_connection(self) -> Dbapi:
        """A new request-path connection for this thread (:meth:`_raw_connect`), kept in
        ``_local`` and in the set :meth:`dispose` closes.
        """
        conn = self._local.conn = self._raw_connect()
        with self._raw_connections_lock:
            self._raw_connections.add(conn)
        return conn

    def _close_reader(self, conn: Dbapi) -> None:
        """Close a request-path connection that failed (and forget it)."""
        with self._raw_connections_lock:
            self._raw_connections.discard(conn)
        with contextlib.suppress(Exception):
            conn.close()

    # ------------------------------------------------------------------ schema and metadata
    @unavailable_on_db_error
    def create_schema(self, arms: Iterable[str], rules: RuleBook | None = None) -> None:
        """Create missing tables, the ``log_head`` row and an ``arm_state`` row per arm, and
        upgrade a store written by an older recbandits (:meth:`_upgrade_columns`,
        :meth:`_upgrade_for_multileave`).

        Parameters
        ----------
        arms : iterable of str
        rules : RuleBook, optional
            The rule book a store that gains the ratings' precedence refolds its kept ratings
            with (default: the default rule book).

        Raises
        ------
        ValueError
            The database holds a log written by an older recbandits (no ``outcomes`` table
            beside an existing ``feedback`` table without ``seq``): start a new store.
        """
        self._refuse_a_log_too_old(sa.inspect(self.write_engine))
        metadata.create_all(self.write_engine, checkfirst=True)
        with self.write_engine.begin() as conn:
            conn.execute(self.insert(log_head).values(id=1, seq=0).on_conflict_do_nothing())
            conn.execute(self.insert(retrain_lease).values(id=1, fitted_at=time.time())
                         .on_conflict_do_nothing())
            # An event's id is its log position (tables.feedback). A store made before gave ids
            # of its own, which a PostgreSQL sequence can have taken past the head (it skips
            # the ids of rolled-back inserts): the head moves past them, once (order does not
            # mind a gap).
            self._head_past(conn, sa.select(sa.func.max(feedback.c.id)).scalar_subquery())
        with self.write_engine.begin() as conn:
            self._upgrade_columns(conn, rules or RuleBook())
            self._upgrade_for_multileave(conn)
            for arm in arms:
                conn.execute(self.insert(arm_state).values(arm=arm).on_conflict_do_nothing())

    def _refuse_a_log_too_old(self, inspector: sa.Inspector) -> None:
        """Raise ValueError if the database holds a log of a recbandits too old to upgrade
        (a ``feedback`` table without ``seq``, no ``outcomes`` table): start a new store.
        """
        if inspector.has_table(feedback.name) and "seq" not in {
                c["name"] for c in inspector.get_columns(feedback.name)}:
            raise ValueError(f"the store {self.describe()} holds a log of an older recbandits "
                             "(feedback without seq, no outcomes table); point --db at a new "
                             "store (its arms can be refitted with 'recbandits retrain')")

    def _refuse_an_older_schema(self) -> None:
        """Refuse to read a store that lacks what :meth:`create_schema` adds to an older one
        (its tables, :meth:`_missing_columns`, :meth:`_multileave_missing`): read as it is, the
        readers failed with a traceback on the first missing column (found by attack), and
        defaults would not do (the upgrade numbers the settled decisions and refolds the kept
        ratings). A database without a decision log is left to the caller (``has_log``).

        Raises
        ------
        OlderStoreError
            Naming what is missing and how to upgrade the store.
        ValueError
            A log too old to upgrade (:meth:`_refuse_a_log_too_old`).
        """
        with self.read_engine.connect() as conn:
            inspector = sa.inspect(conn)
            if not inspector.has_table(decisions.name):
                return
            self._refuse_a_log_too_old(inspector)
            lacking = [name for name in metadata.tables if not inspector.has_table(name)]
            lacking += [f"{name}.{column.name}"
                        for name, columns in self._missing_columns(conn).items()
                        for column in columns]
            lacking += self._multileave_missing(inspector)
        if lacking:
            raise OlderStoreError(
                f"the store {self.describe()} was written by an older recbandits and lacks "
                f"{', '.join(lacking)}; a command that reads it writes nothing, so start "
                "'recbandits serve' on it once (its start upgrades the store), then read it")

    def _missing_columns(self, conn: Connection) -> dict[str, list[sa.Column]]:
        """Per table, the columns an older store lacks (``feedback.value``, the kept ratings'
        :data:`RATING_COLUMNS_ADDED`, ``decisions.shadow`` and ``decisions.settled_seq``: NULL
        for the older decisions); a table it lacks altogether is not looked at.
        """
        inspector = sa.inspect(conn)
        inspector.clear_cache()
        wanted = {feedback.name: ("value",), decisions.name: ("shadow", "settled_seq"),
                  **RATING_COLUMNS_ADDED}
        missing = {}
        for name, columns in wanted.items():
            if not inspector.has_table(name):
                continue
            have = {c["name"] for c in inspector.get_columns(name)}
            table = metadata.tables[name]
            if lacking := [table.c[c] for c in columns if c not in have]:
                missing[name] = lacking
        return missing

    def _upgrade_columns(self, conn: Connection, rules: RuleBook) -> None:
        """Add the columns an older store lacks, under the ``log_head`` row lock and looked at
        again once it is held (workers starting together on an old store upgrade it once).

        A store whose kept ratings gain their precedence, time and seq has them refolded from
        the log under ``rules`` (the fold :func:`serving.replay.kept_ratings` and
        ``rebuild-state`` compute), starting from the fold snapshot's ratings of purged
        feedback, which keep precedence 0 (their events are gone).
        """
        if not self._missing_columns(conn):
            return
        conn.exec_driver_sql(self._next_seq_sql, (0,))  # the log_head row lock
        missing = self._missing_columns(conn)
        for name, columns in missing.items():
            for column in columns:
                default = ("" if column.nullable else
                           f" NOT NULL DEFAULT {_default_sql(column, conn)}")
                conn.execute(sa.DDL(f"ALTER TABLE {name} ADD COLUMN {column.name} "
                                    f"{column.type.compile(conn.dialect)}{default}"))
                for index in metadata.tables[name].indexes:  # its index, as create_all's
                    if [c.name for c in index.columns] == [column.name]:
                        # (IF NOT EXISTS: checkfirst reflects every index, warning of the
                        # expression-based ones)
                        conn.execute(sa.schema.CreateIndex(index, if_not_exists=True))
        if feedback_ratings.name in missing:
            self._refold_kept_ratings(conn, rules)
        if "settled_seq" in {c.name for c in missing.get(decisions.name, [])}:
            self._number_old_settlements(conn)

    def _number_old_settlements(self, conn: Connection) -> int:
        """Give the decisions an older store settled their settlement positions, in the order
        the settle sweep takes (their deadlines), after the log's head: a worker's drift monitor
        folds their outcomes at its start (:meth:`settled_after`) instead of never (the
        column came without them: the log's past was missing from every drift fold). One
        position per decision, its credited arms sharing it as the sweep's do. Run under the
        ``log_head`` lock of the upgrade; returns how many were numbered.
        """
        settled = [r.event_id for r in conn.execute(
            sa.select(decisions.c.event_id)
            .where(decisions.c.settled_at.is_not(None), decisions.c.cold_start.is_(False))
            .order_by(decisions.c.reward_deadline, decisions.c.event_id))]
        if not settled:
            return 0
        last = int(conn.exec_driver_sql(self._next_seq_sql, (len(settled),)).scalar_one())
        first = last - len(settled) + 1
        conn.execute(decisions.update().where(decisions.c.event_id == sa.bindparam("e"))
                     .values(settled_seq=sa.bindparam("s")),
                     [{"e": e, "s": first + i} for i, e in enumerate(settled)])
        return len(settled)

    @staticmethod
    def _refold_kept_ratings(conn: Connection, rules: RuleBook) -> None:
        """Rewrite ``feedback_ratings`` as the fold of the log's feedback under ``rules``."""
        start = {(int(r.user_id), int(r.movie_id)): _kept(r)
                 for r in conn.execute(sa.select(fold_ratings))}
        rows = conn.execute(sa.select(
            feedback.c.user_id, feedback.c.movie_id, feedback.c.feedback_type, feedback.c.value,
            feedback.c.created_at, feedback.c.seq, feedback.c.rating))
        kept = fold_kept(start, (
            ((int(r.user_id), int(r.movie_id)), k) for r in rows
            if (k := rules.kept_rating(r.feedback_type, r.value, r.created_at, r.seq,
                                       r.rating)) is not None))
        conn.execute(feedback_ratings.delete())
        if kept:
            conn.execute(feedback_ratings.insert(), [
                dict(zip(KEPT_RATING_COLUMNS, kept_rating_record(u, m, k), strict=True))
                for (u, m), k in kept.items()])

    @staticmethod
    def _multileave_missing(inspector: sa.Inspector) -> list[str]:
        """What of multileaving's schema an older store lacks (:meth:`_upgrade_for_multileave`
        adds it): :data:`MULTILEAVE_COLUMN`, :data:`MULTILEAVE_KEY`.
        """
        lacking = []
        if inspector.has_table(decisions.name) and "multileave" not in {
                c["name"] for c in inspector.get_columns(decisions.name)}:
            lacking.append(MULTILEAVE_COLUMN)
        if inspector.has_table(outcomes.name) and inspector.get_pk_constraint(
                outcomes.name)["constrained_columns"] == ["event_id"]:
            lacking.append(MULTILEAVE_KEY)
        return lacking

    def _upgrade_for_multileave(self, conn: Connection) -> None:
        """Give a store written before multileaving its schema: the ``decisions.multileave``
        column, and ``outcomes`` keyed by (decision, arm) instead of the decision (the rows are
        copied: a primary key cannot be altered in place on SQLite). Portable SQL only.

        Under the ``log_head`` row lock, looked at again once held: workers starting together
        on an old store upgrade it once, and no writer of outcomes runs meanwhile.
        """
        if not self._multileave_missing(sa.inspect(conn)):
            return
        conn.exec_driver_sql(self._next_seq_sql, (0,))  # the log_head row lock
        inspector = sa.inspect(conn)
        inspector.clear_cache()
        missing = self._multileave_missing(inspector)
        if MULTILEAVE_COLUMN in missing:
            conn.exec_driver_sql("ALTER TABLE decisions ADD COLUMN multileave JSON")
        if MULTILEAVE_KEY in missing:
            columns = ", ".join(c.name for c in outcomes.columns)
            conn.exec_driver_sql(f"CREATE TABLE outcomes_v1 AS SELECT {columns} FROM outcomes")
            conn.exec_driver_sql("DROP TABLE outcomes")
            outcomes.create(conn)
            conn.exec_driver_sql(f"INSERT INTO outcomes ({columns}) SELECT {columns} "
                                 "FROM outcomes_v1")
            conn.exec_driver_sql("DROP TABLE outcomes_v1")

    @unavailable_on_db_error
    def register_feature_set(self, version: str, names: Sequence[str]) -> None:
        """Log the names of feature set ``version`` (once; a version never changes meaning).

        Raises
        ------
        ValueError
            ``version`` is logged already with other names.
        """
        with self.write_engine.begin() as conn:
            conn.execute(self.insert(feature_sets).values(version=version, names=list(names))
                         .on_conflict_do_nothing())
            stored = conn.execute(sa.select(feature_sets.c.names)
                                  .where(feature_sets.c.version == version)).scalar_one()
        if list(stored) != list(names):
            raise ValueError(f"feature set {version!r} is logged with other names; a changed "
                             "feature set needs a new version")

    @unavailable_on_db_error
    def feature_names(self, version: str) -> list[str] | None:
        """The names of feature set ``version``'s vector, or None if it was never logged."""
        if not sa.inspect(self.read_engine).has_table(feature_sets.name):
            return None
        with self.read_engine.connect() as conn:
            names = conn.execute(sa.select(feature_sets.c.names)
                                 .where(feature_sets.c.version == version)).scalar_one_or_none()
        return None if names is None else list(names)

    def has_versions(self) -> bool:
        """Whether the database holds the versions table (a store started since issue 15)."""
        return sa.inspect(self.read_engine).has_table(model_versions.name)

    def has_log(self) -> bool:
        """Whether the database holds a decision log (a ``decisions`` table)."""
        return sa.inspect(self.read_engine).has_table(decisions.name)

    def serves_a_version(self) -> bool:
        """Whether a policy version has been served from this store: not a foreign database,
        nor a store whose first start was stopped between its schema and its first fit (a
        store from before the versions table counts: it serves a version).
        """
        return (sa.inspect(self.read_engine).has_table(policy_meta.name)
                and self.policy_meta() is not None)

    @unavailable_on_db_error
    def policy_meta(self) -> PolicyMeta | None:
        """The served policy's version and arms folder; None before the first is recorded."""
        with self.read_engine.connect() as conn:
            row = conn.execute(sa.select(policy_meta.c.version, policy_meta.c.arms_dir)
                               .where(policy_meta.c.id == 1)).first()
        return None if row is None else PolicyMeta(int(row.version), row.arms_dir)

    @unavailable_on_db_error
    def init_policy_meta(self, arms_dir: str, *, arms: JsonObject | None = None,
                         data: JsonObject | None = None) -> PolicyMeta:
        """Record version 1 serving ``arms_dir`` unless a version exists; return the current.

        The version gets its row in the versions table (``arms``, ``data``: its arms'
        hyper-parameters and what they were fitted on), live from the start: no carry-over
        applies to it (the policy starts fresh).
        """
        with self.write_engine.begin() as conn:
            conn.execute(self.insert(policy_meta).values(
                id=1, version=1, arms_dir=arms_dir, updated_at=time.time()
            ).on_conflict_do_nothing())
            row = conn.execute(sa.select(policy_meta.c.version, policy_meta.c.arms_dir)
                               .where(policy_meta.c.id == 1)).one()
        meta = PolicyMeta(int(row.version), row.arms_dir)
        self.ensure_version_row(meta, arms=arms or {}, data=data or {},
                                reason="first start: the arms fitted on the base data")
        return meta

    @unavailable_on_db_error
    def next_version(self) -> int:
        """The version number the next recorded version takes (1 when nothing is recorded)."""
        with self.read_engine.connect() as conn:
            return self._next_version(conn)

    @staticmethod
    def _next_version(conn: Connection) -> int:
        """One more than every version recorded (the versions table and ``policy_meta``)."""
        rows = conn.execute(sa.select(sa.func.max(model_versions.c.version))).scalar()
        meta = conn.execute(sa.select(policy_meta.c.version)
                            .where(policy_meta.c.id == 1)).scalar()
        return max(int(rows or 0), int(meta or 0)) + 1

    @unavailable_on_db_error
    def publish_version(self, arms_dir: str) -> PolicyMeta:
        """Serve freshly saved arms as a new version, carrying the policy over (no gate, no
        report: :func:`serving.versions.retrain` is what a retrain calls).
        """
        row = self.serve_version(kind="start", arms_dir=arms_dir, arms={}, data={}, gate=None,
                                 reason="published", changed_arms=[],
                                 carryover={"mode": "carry", "gamma": 1.0})
        return PolicyMeta(row.version, arms_dir)

    @unavailable_on_db_error
    def serve_version(self, *, kind: str, arms_dir: str, arms: JsonObject, data: JsonObject,
                      gate: JsonObject | None, reason: str, changed_arms: Sequence[str],
                      carryover: JsonObject, source_version: int | None = None,
                      retire_reason: str = "replaced",
                      expect_live: int | None = None) -> ModelVersion:
        """Serve ``arms_dir`` as a new version, in one transaction: take the next log position
        (``log_head``, as an outcome does: so the switch sits in the policy's fold at the
        position of its commit), point ``policy_meta`` at it, retire the live version and a
        candidate it serves (their reasons gain ``retire_reason``) and insert the new row, live.

        Parameters
        ----------
        kind : {"start", "retrain", "promote", "rollback"}
        arms_dir : str
        arms, data, gate
            The row's hyper-parameters by arm, data span, and gate report (None: not gated).
        reason : str
        changed_arms : sequence of str
            Arms whose models change at the switch (the carry-over applies to them).
        carryover : dict
            ``{"mode": "carry" | "reset" | "discount", "gamma": float}`` applied at the switch.
        source_version : int, optional
            A promotion or rollback: the version whose arms are served again.
        retire_reason : str, default "replaced"
            ``{version}`` in it is replaced by the new version's number.
        expect_live : int, optional
            Serve only if this version is still the live one once the ``log_head`` lock is
            held (a promotion or rollback decided on what it read: two of them at once must
            not both apply).

        Returns
        -------
        ModelVersion
            The new row.

        Raises
        ------
        serving.errors.ModelVersionError
            ``expect_live`` is not the live version any more (409; nothing written).
        """
        now = time.time()
        with self.write_engine.begin() as conn:
            seq = int(conn.exec_driver_sql(self._next_seq_sql, (1,)).scalar_one())
            if expect_live is not None:
                live = conn.execute(sa.select(policy_meta.c.version)
                                    .where(policy_meta.c.id == 1)).scalar()
                if live != expect_live:
                    raise ModelVersionError(f"the live version is {live} now, not "
                                            f"{expect_live} as read: another promotion or "
                                            "rollback came first; look again")
            version = self._next_version(conn)
            # The live row, and a candidate served now (it is the new row's source).
            conn.execute(model_versions.update().where(sa.or_(
                model_versions.c.status == "live",
                sa.and_(model_versions.c.status == "candidate",
                        model_versions.c.version == (source_version or 0))))
                         .values(status="retired",
                                 reason=model_versions.c.reason + "; retired: "
                                 + retire_reason.replace("{version}", str(version))))
            updated = conn.execute(policy_meta.update().where(policy_meta.c.id == 1).values(
                version=version, arms_dir=arms_dir, updated_at=now)).rowcount
            if not updated:
                conn.execute(policy_meta.insert().values(id=1, version=version,
                                                         arms_dir=arms_dir, updated_at=now))
            values: Row = dict(version=version, created_at=now, status="live", kind=kind,
                          reason=reason,
                          arms_dir=arms_dir, arms=arms, data=data, gate=gate,
                          source_version=source_version, served_seq=seq, served_at=now,
                          changed_arms=list(changed_arms), carryover=dict(carryover))
            conn.execute(model_versions.insert().values(**values))
        return _model_version(values)

    @unavailable_on_db_error
    def record_version(self, *, status: Literal["candidate", "rejected"], reason: str,
                       arms_dir: str | None, arms: JsonObject, data: JsonObject,
                       gate: JsonObject | None) -> ModelVersion:
        """Record a version that is not served (rejected by the gate, or a candidate); nothing
        served changes. Its number is taken under the ``log_head`` row lock, as a served
        version's.
        """
        now = time.time()
        with self.write_engine.begin() as conn:
            conn.exec_driver_sql(self._next_seq_sql, (0,))  # the log_head row lock
            values: Row = dict(version=self._next_version(conn), created_at=now, status=status,
                          kind="retrain", reason=reason, arms_dir=arms_dir, arms=arms,
                          data=data, gate=gate,
                          source_version=None, served_seq=None, served_at=None,
                          changed_arms=[], carryover={"mode": "carry", "gamma": 1.0})
            conn.execute(model_versions.insert().values(**values))
        return _model_version(values)

    @unavailable_on_db_error
    def ensure_version_row(self, meta: PolicyMeta, *, arms: JsonObject, data: JsonObject,
                           reason: str) -> None:
        """Give the served version ``meta`` a row (live) if it has none: a first start, or a
        store written before the versions table (its earlier versions stay unrecorded).
        """
        with self.write_engine.begin() as conn:
            conn.execute(self.insert(model_versions).values(
                version=meta.version, created_at=time.time(), status="live", kind="start",
                reason=reason,
                arms_dir=meta.arms_dir, arms=arms, data=data, gate=None, source_version=None,
                served_seq=None, served_at=None, changed_arms=[],
                carryover={"mode": "carry", "gamma": 1.0}).on_conflict_do_nothing())

    @unavailable_on_db_error
    def adopt_catalog(self, fingerprint: str) -> bool:
        """Record ``fingerprint`` (:func:`serving.versions.catalog_fingerprint`) in the live
        version's ``data["catalog"]`` if no row records a catalogue yet: the upgrade of a
        store from before fingerprints, by the service starting on it (its arms load on that
        catalogue). Returns whether it was recorded.
        """
        with self.write_engine.begin() as conn:
            rows = conn.execute(sa.select(model_versions.c.version, model_versions.c.status,
                                          model_versions.c.data)).all()
            if any((r.data or {}).get("catalog") for r in rows):
                return False
            live = [r for r in rows if r.status == "live"]
            for r in live:
                conn.execute(model_versions.update()
                             .where(model_versions.c.version == r.version)
                             .values(data={**(r.data or {}), "catalog": fingerprint}))
        return bool(live)

    @unavailable_on_db_error
    def versions(self, version: int | None = None) -> list[ModelVersion]:
        """Every row of the versions table, by version (or the one ``version``'s, if any)."""
        query = sa.select(model_versions).order_by(model_versions.c.version)
        if version is not None:
            query = query.where(model_versions.c.version == version)
        with self.read_engine.connect() as conn:
            rows = conn.execute(query).mappings().all()
        return [_model_version(dict(r)) for r in rows]

    @unavailable_on_db_error
    def switches_after(self, seq: int) -> list[VersionSwitch]:
        """The versions that started being served after log position ``seq``, in log order
        (what the policy's fold applies between outcomes: :meth:`PolicyModel.fold`).
        """
        query = (sa.select(model_versions).where(model_versions.c.served_seq > seq)
                 .order_by(model_versions.c.served_seq))
        with self.read_engine.connect() as conn:
            rows = conn.execute(query).mappings().all()
        return [switch for r in rows if (switch := _model_version(dict(r)).switch()) is not None]

    # ------------------------------------------------------------------ the retrain lease
    _LEASE_COLUMNS = (retrain_lease.c.holder, retrain_lease.c.expires_at,
                      retrain_lease.c.fitted_seq, retrain_lease.c.fitted_at)

    @staticmethod
    def _lease(row: Any) -> RetrainLease:  # type: ignore[explicit-any]  # a SQLAlchemy Row
        return RetrainLease(row.holder, float(row.expires_at), int(row.fitted_seq),
                            float(row.fitted_at))

    @unavailable_on_db_error
    def retrain_lease(self) -> RetrainLease:
        """The ``retrain_lease`` row as it stands (a trigger's cheap look before taking it)."""
        with self.read_engine.connect() as conn:
            row = conn.execute(sa.select(*self._LEASE_COLUMNS)
                               .where(retrain_lease.c.id == 1)).one()
        return self._lease(row)

    @unavailable_on_db_error
    def take_retrain_lease(self, holder: str, now: float, lease_s: float
                           ) -> RetrainLease | None:
        """Take the retrain lease for ``holder`` until ``now + lease_s`` if it is free or
        expired (``expires_at <= now``); the row as taken, or None if another holds it.

        One conditional UPDATE: SQLite runs it under its write lock; on PostgreSQL a second
        UPDATE of the row waits for the first to commit and evaluates its condition again on
        the row the first wrote. Either way, of concurrent takers exactly one succeeds, and the
        ``fitted_seq`` it returns is that of the last retrain that released the lease.
        """
        with self.write_engine.begin() as conn:
            row = conn.execute(
                retrain_lease.update()
                .where(retrain_lease.c.id == 1,
                       sa.or_(retrain_lease.c.holder.is_(None),
                              retrain_lease.c.expires_at <= now))
                .values(holder=holder, expires_at=now + lease_s)
                .returning(*self._LEASE_COLUMNS)).first()
        return None if row is None else self._lease(row)

    @unavailable_on_db_error
    def renew_retrain_lease(self, holder: str, now: float, lease_s: float) -> bool:
        """Extend ``holder``'s lease to ``now + lease_s``; False if ``holder`` no longer holds
        it (it expired and another took it).
        """
        with self.write_engine.begin() as conn:
            renewed = conn.execute(
                retrain_lease.update()
                .where(retrain_lease.c.id == 1, retrain_lease.c.holder == holder)
                .values(expires_at=now + lease_s)).rowcount
        return renewed == 1

    @unavailable_on_db_error
    def release_retrain_lease(self, holder: str, now: float, fitted_seq: int | None = None
                              ) -> bool:
        """Free ``holder``'s lease; with ``fitted_seq``, record in the same UPDATE that a
        retrain read the log up to it and ended at ``now`` (so the next holder counts from
        there). False if ``holder`` no longer held it (nothing changes then).
        """
        values: dict[str, object] = {"holder": None, "expires_at": 0.0}
        if fitted_seq is not None:
            values.update(fitted_seq=fitted_seq, fitted_at=now)
        with self.write_engine.begin() as conn:
            released = conn.execute(
                retrain_lease.update()
                .where(retrain_lease.c.id == 1, retrain_lease.c.holder == holder)
                .values(**values)).rowcount
        return released == 1

    @unavailable_on_db_error
    def feedback_count_after(self, seq: int, limit: int | None = None) -> int:
        """How many events (feedback rows) the log holds after position ``seq``, counting at
        most ``limit`` (None: all): a trigger asks whether there are N, and a look must not
        cost more the longer the log grows past N.
        """
        after = sa.select(feedback.c.seq).where(feedback.c.seq > seq)
        if limit is not None:
            after = after.limit(limit)
        with self.read_engine.connect() as conn:
            return int(conn.execute(sa.select(sa.func.count())
                                    .select_from(after.subquery())).scalar_one())

    # ------------------------------------------------------------------ shadow promotions
    def _has_shadow(self) -> bool:
        """Whether the store has ``policy_promotions`` and ``decisions.shadow`` (every store
        a service started since has: :meth:`create_schema`); looked up until it has.
        """
        if not self._shadow_schema:
            inspector = sa.inspect(self.read_engine)
            self._shadow_schema = inspector.has_table(policy_promotions.name) and "shadow" in {
                c["name"] for c in inspector.get_columns(decisions.name)}
        return self._shadow_schema

    @unavailable_on_db_error
    def latest_promotion(self) -> tuple[int, JsonObject, JsonObject, float] | None:
        """The latest promotion of a shadow policy (``id``, the promoted ``{"name",
        "params"}``, the one it replaced, when it was recorded); None when none was recorded
        (:mod:`serving.shadow`).
        """
        if not self._has_shadow():
            return None
        with self.read_engine.connect() as conn:
            row = conn.execute(sa.select(policy_promotions.c.id, policy_promotions.c.policy,
                                         policy_promotions.c.previous,
                                         policy_promotions.c.created_at)
                               .order_by(policy_promotions.c.id.desc()).limit(1)).first()
        return None if row is None else (int(row.id), dict(row.policy), dict(row.previous),
                                         float(row.created_at))

    @unavailable_on_db_error
    def record_promotion(self, policy: JsonObject, previous: JsonObject, now: float, *,
                         after: int = 0) -> int:
        """Record that ``policy`` replaced ``previous`` as the live policy; its id (a store
        no service has opened since shadow mode existed gains the table first).

        Under the ``log_head`` row lock, as :meth:`purge` takes it: the checks below and the
        insert are one step against a purge (which re-checks the latest promotion in its own
        transaction), so a promotion never lands on a log purged under the old policy.

        Parameters
        ----------
        policy, previous : dict
            ``{"name", "params"}`` of the promoted policy and of the one it replaces.
        now : float
            Unix seconds, stored as ``created_at``.
        after : int, default 0
            The id of the latest promotion the caller read (0: none).

        Raises
        ------
        ValueError
            The log was purged (a fold snapshot exists), or another promotion was recorded
            after ``after``; nothing is written.
        """
        policy_promotions.create(self.write_engine, checkfirst=True)
        with self._write_transaction() as conn:
            conn.exec_driver_sql(self._next_seq_sql, (0,))  # the log_head row lock
            mark = int(conn.execute(sa.select(sa.func.max(fold_snapshots.c.seq)))
                       .scalar_one() or 0)
            if mark:
                raise ValueError(f"the log was purged (fold snapshot at log position {mark}): "
                                 "the shadow has not folded the purged outcomes, so it cannot "
                                 "become the live policy's fold of the log")
            latest = int(conn.execute(sa.select(sa.func.max(policy_promotions.c.id)))
                         .scalar_one() or 0)
            if latest != after:
                raise ValueError(f"another promotion (#{latest}) was recorded after #{after} "
                                 "meanwhile: look at `recbandits shadow status` and run it "
                                 "again")
            return int(conn.execute(policy_promotions.insert().values(
                created_at=now, policy=policy, previous=previous)
                .returning(policy_promotions.c.id)).scalar_one())

    @unavailable_on_db_error
    def count_shadow(self) -> int:
        """Decisions that carry a shadow record."""
        if not self._has_shadow():
            return 0
        with self.read_engine.connect() as conn:
            return int(conn.execute(sa.select(sa.func.count()).select_from(decisions)
                                    .where(decisions.c.shadow.is_not(None))).scalar_one())

    @unavailable_on_db_error
    def shadow_policies(self) -> list[tuple[JsonObject, int]]:
        """The shadow policies the log's shadow records name, each with how many decisions
        carry its record, in the order of their first record (``recbandits shadow status``).
        Streamed: the records are counted, not kept.
        """
        if not self._has_shadow():
            return []
        counts: dict[str, int] = {}
        with self._snapshot_connection() as conn:  # (PostgreSQL's cursor needs a transaction)
            rows = conn.execution_options(yield_per=10_000).execute(
                sa.select(sa.cast(decisions.c.shadow, sa.Text))
                .where(decisions.c.shadow.is_not(None)).order_by(decisions.c.created_at))
            for (text,) in rows:
                key = json.dumps(json.loads(text).get("policy"), sort_keys=True)
                counts[key] = counts.get(key, 0) + 1
        return [(json.loads(key), n) for key, n in counts.items()]

    @unavailable_on_db_error
    def shadow_rows(self) -> dict[str, JsonObject]:
        """Each decision's shadow record by ``event_id`` (the decisions that carry one), with
        the decision's own ``holdout`` entry added (its policy JSON's; None without a
        holdout): the mixture the live policy was served under, which ``ope --shadow`` applies
        to the shadow too (:func:`serving.holdout.under_holdout`).
        """
        if not self._has_shadow():
            return {}
        with self.read_engine.connect() as conn:
            rows = conn.execute(
                sa.select(decisions.c.event_id, sa.cast(decisions.c.shadow, sa.Text),
                          sa.cast(decisions.c.policy, sa.Text))
                .where(decisions.c.shadow.is_not(None))).all()
        records = {}
        for event_id, record, policy in rows:
            parsed = json.loads(policy) if policy else None
            records[event_id] = {**json.loads(record), "holdout": (
                parsed.get("holdout") if isinstance(parsed, dict) else None)}
        return records

    # ------------------------------------------------------------------ reads
    @unavailable_on_db_error
    def pulls(self) -> dict[str, int]:
        """Policy decisions per arm."""
        with self.read_engine.connect() as conn:
            rows = conn.execute(sa.select(arm_state.c.arm, arm_state.c.pulls)).all()
        return {r.arm: int(r.pulls) for r in rows}

    @unavailable_on_db_error
    def state(self) -> tuple[PolicyMeta | None, dict[str, int], int]:
        """Policy version, pulls per arm and the log's head (:meth:`log_seq`, read first) in
        one connection (the workers' refresh: an unchanged head means no row was logged since
        it was last read; see ``RecommendationService.refresh``).
        """
        with self.read_engine.connect() as conn:
            head = int(conn.execute(sa.select(log_head.c.seq).where(log_head.c.id == 1))
                       .scalar_one_or_none() or 0)
            rows = conn.execute(sa.select(arm_state.c.arm, arm_state.c.pulls)).all()
            meta = conn.execute(sa.select(policy_meta.c.version, policy_meta.c.arms_dir)
                                .where(policy_meta.c.id == 1)).first()
        pulls = {r.arm: int(r.pulls) for r in rows}
        return ((None if meta is None else PolicyMeta(int(meta.version), meta.arms_dir)), pulls,
                head)

    @unavailable_on_db_error
    def outcomes_after(self, seq: int, *, limit: int | None = None) -> list[Outcome]:
        """The outcomes logged after ``seq``, in log order, each with its decision's context
        vector (what a worker's policies fold next; the drift monitor reads its own stream,
        :meth:`settled_after`).

        Parameters
        ----------
        seq : int
            The last position already folded (0: from the start).
        limit : int, optional
            At most this many (the oldest first).
        """
        stmt = (sa.select(outcomes.c.seq, outcomes.c.event_id, outcomes.c.arm, outcomes.c.reward,
                          sa.cast(decisions.c.context, sa.Text))
                .join(decisions, decisions.c.event_id == outcomes.c.event_id)
                .where(outcomes.c.seq > seq).order_by(outcomes.c.seq))
        if limit is not None:
            stmt = stmt.limit(limit)
        with self.read_engine.connect() as conn:
            rows = conn.execute(stmt).all()
        return [Outcome(int(r[0]), r[1], r[2], float(r[3]), _context_features(r[4]))
                for r in rows]

    @unavailable_on_db_error
    def events_after(self, seq: int, *, limit: int | None = None) -> list[LogEvent]:
        """The events (feedback of every user) logged after ``seq``, in log order (what a
        worker's live arms fold next); at most ``limit``, the oldest first.
        """
        # Plain DBAPI (_fast), not SQLAlchemy: the refresher reads the tail every interval,
        # holding the GIL the event loop needs.
        sql = ("SELECT seq, user_id, movie_id, feedback_type, value, created_at FROM feedback "
               "WHERE seq > ? ORDER BY seq")
        if limit is not None:
            sql += f" LIMIT {int(limit)}"
        rows = self._fast(sql, (seq,), bounded=False)
        return [LogEvent(int(r[0]), int(r[1]), int(r[2]), r[3],
                         None if r[4] is None else float(r[4]), float(r[5])) for r in rows]

    @unavailable_on_db_error
    def add_item(self, item_id: int, title: str, genres: Sequence[str], year: int | None,
                 now: float | None = None) -> AddedItem:
        """Log a new catalogue item (its seq from ``log_head``, like feedback's; ``now`` None
        reads the clock once the seq is taken, as :meth:`set_preferences` does).

        Raises
        ------
        ValueError
            ``item_id`` was added before (the message names it).
        """
        try:
            with self._request_transaction() as statement:
                seq = int(statement().exec_driver_sql(self._next_seq_sql, (1,)).scalar_one())
                at = time.time() if now is None else now
                statement().execute(items.insert().values(
                    item_id=item_id, seq=seq, title=title, genres=list(genres), year=year,
                    created_at=at))
        except sa.exc.IntegrityError:
            raise ValueError(self.item_exists_message(item_id)) from None
        return AddedItem(seq, item_id, title, tuple(genres), year, at)

    @staticmethod
    def item_exists_message(item_id: int) -> str:
        """The one text of the 409 for an item that exists, whoever sees it first (the worker's
        catalogue or the store's insert: two concurrent adds got two texts, found by attack).
        """
        return f"item_id {item_id} is in the catalogue already"

    @unavailable_on_db_error
    def items_after(self, seq: int) -> list[AddedItem]:
        """The items added after log position ``seq``, in log order."""
        with self.read_engine.connect() as conn:
            rows = conn.execute(sa.select(items).where(items.c.seq > seq)
                                .order_by(items.c.seq)).all()
        return [AddedItem(int(r.seq), int(r.item_id), r.title,
                          tuple(json.loads(r.genres) if isinstance(r.genres, str) else r.genres),
                          None if r.year is None else int(r.year), float(r.created_at))
                for r in rows]

    # The three reads on the request path skip SQLAlchemy: one DBAPI connection per reader
    # thread (the backend's _raw_connect), plain SQL, no pool check-out or transaction round
    # trips (about 10x cheaper). ``bounded`` False marks a read whose size no bound limits (a
    # backend may keep it off a connection its writes share: see SQLiteStore._fast).
    def _fast(self, sql: str, params: Record, *, bounded: bool = True) -> list[Record]:
        conn = getattr(self._local, "conn", None)
        try:
            if conn is None:
                conn = self._reader_connection()
            return self._fetch(conn, sql, params)
        except Exception as first:
            failure = first
            self._local.conn = None
            # Asked before it is closed here (closed, it would always count as ended).
            ended = conn is not None and self._stale(conn)
            if conn is not None:
                self._close_reader(conn)
            # A kept connection the server ended meanwhile (a restart, an administrator's
            # terminate) is read on again once, on a new one: these are reads, and a thread
            # that seldom reads kept its dead connection for minutes (found by attack: one
            # request in 12 was a 503 five minutes after a PostgreSQL restart).
            if ended:
                try:
                    conn = self._reader_connection()
                    return self._fetch(conn, sql, params)
                except Exception as again:
                    self._local.conn = None
                    if conn is not None:
                        self._close_reader(conn)
                    failure = again
            error = store_unavailable(failure)
            if error is not None:
                raise error from failure
            raise failure from None

    def _fetch(self, conn: Dbapi, sql: str, params: Record) -> list[Record]:
        """The rows of ``sql`` (``?`` placeholders) on the DBAPI connection ``conn``."""
        cursor = conn.cursor()
        cursor.execute(sql.replace("?", self.PARAM), params)
        rows = cursor.fetchall()
        cursor.close()
        return rows

    def user_feedback(self, user_id: int) -> list[UserEvent]:
        """Every event (feedback) of ``user_id``, oldest first in log order."""
        return [UserEvent(*row) for row in self._fast(
            f"SELECT {USER_EVENT_COLUMNS} FROM feedback WHERE user_id = ? ORDER BY seq",
            (user_id,), bounded=False)]

    @staticmethod
    def _decision_row(row: Record) -> Row:
        slate = row[3]
        return {"event_id": row[0], "user_id": int(row[1]), "arm": row[2],
                "slate": json.loads(slate) if isinstance(slate, str) else slate,
                "cold_start": bool(row[4]), "reward_deadline": float(row[5]),
                "created_at": float(row[6]), "multileave": parse(row[7])}

    def decision(self, event_id: str) -> Row | None:
        """The logged decision ``event_id`` (the fields attribution needs), or None."""
        rows = self._fast(f"SELECT {self._DECISION_COLUMNS} FROM decisions WHERE event_id = ?",
                          (event_id,))
        return self._decision_row(rows[0]) if rows else None

    #: Whether a decision's JSON ``slate`` holds a movie id (a backend's SQL; ``?`` is the id).
    SLATE_HOLDS: ClassVar[str]

    def latest_decision_showing(self, user_id: int, movie_id: int, since: float,
                                until: float = float("inf")) -> Row | None:
        """The latest decision of ``user_id`` made within ``[since, until]`` whose slate held
        the movie: every such decision is searched, in SQL (the same rule on every backend).
        """
        rows = self._fast(f"SELECT {self._DECISION_COLUMNS} FROM decisions WHERE user_id = ? "
                          f"AND created_at >= ? AND created_at <= ? AND {self.SLATE_HOLDS} "
                          "ORDER BY created_at DESC, event_id DESC LIMIT 1",
                          (user_id, since, until, movie_id))
        return self._decision_row(rows[0]) if rows else None

    def user_context(self, user_id: int, since: float, limit: int
                     ) -> tuple[Sequence[UserEvent], list[str] | None]:
        """What a request knows of ``user_id``: their latest ``limit`` events stamped at or after
        ``since``, oldest first in log order, and the genres they stated last (None: never).

        Bounded, so that no user's history (anyone may post events for any user) can make a
        request slow.
        """
        events, stated, _ = self.user_context_after(user_id, since, limit, None)
        return events, stated

    def user_context_after(self, user_id: int, since: float, limit: int, after_id: int | None
                           ) -> tuple[list[UserEvent], list[str] | None, int | None]:
        """:meth:`user_context` of the events logged with a feedback ``id`` above ``after_id``
        only, and the largest ``id`` of the whole log in the same snapshot.

        Only a backend whose ids grow in commit order and whose rows are deleted only by
        marked purges can extend an answer read earlier with what was logged since: SQLite
        (one writer at a time; :meth:`SQLiteStore.user_context`). On PostgreSQL a sequence's
        ids do not follow commit order: there ``after_id`` must stay None.

        Parameters
        ----------
        user_id, since, limit
            As :meth:`user_context`.
        after_id : int or None
            Only events with a larger ``id``; None: every event (the largest id is not read).

        Returns
        -------
        events : list of UserEvent
            Oldest first in log order.
        stated : list of str or None
            The genres stated last (None: never).
        largest : int or None
            The log's largest ``id`` in the read's snapshot (0 for an empty log); None when
            ``after_id`` is None.
        """
        # One statement for all (the events, then the stated genres as a row of seq -1, then
        # the log's largest id as a row of seq -2): 6.2 against 10.9 us for two on SQLite,
        # paid by every request.
        after = "" if after_id is None else " AND id > ?"
        watermark = ("" if after_id is None else " UNION ALL SELECT -2, (SELECT "
                     "coalesce(max(id), 0) FROM feedback), NULL, NULL, NULL")
        params = ((user_id, since, limit, user_id) if after_id is None
                  else (user_id, since, after_id, limit, user_id))
        rows = self._fast(
            f"SELECT {USER_EVENT_COLUMNS} FROM (SELECT {USER_EVENT_COLUMNS} FROM feedback "
            f"WHERE user_id = ? AND created_at >= ?{after} ORDER BY seq DESC LIMIT ?) AS events "
            "UNION ALL SELECT -1, NULL, CAST(genres AS TEXT), NULL, created_at FROM (SELECT "
            "genres, created_at FROM preferences WHERE user_id = ? ORDER BY seq DESC LIMIT 1) "
            f"AS stated{watermark} ORDER BY seq DESC", params)
        largest = None
        if rows and rows[-1][0] == -2:
            largest = int(rows.pop()[1])
        stated = None
        if rows and rows[-1][0] == -1:
            stated = json.loads(rows.pop()[2])
        return [UserEvent(*row) for row in reversed(rows)], stated, largest

    def user_preferences(self, user_id: int) -> tuple[list[str], float] | None:
        """The genres ``user_id`` stated last and when (``(genres, created_at)``), or None."""
        rows = self._fast("SELECT genres, created_at FROM preferences WHERE user_id = ? "
                          "ORDER BY seq DESC LIMIT 1", (user_id,))
        if not rows:
            return None
        genres = rows[0][0]
        return (json.loads(genres) if isinstance(genres, str) else list(genres),
                float(rows[0][1]))

    @unavailable_on_db_error
    def set_preferences(self, user_id: int, genres: Sequence[str],
                        now: float | None = None) -> tuple[int, float]:
        """Log that ``user_id`` stated ``genres`` (the latest statement wins, in log order: its
        seq comes from ``log_head`` like feedback's). Returns the seq and the time stored.

        ``now`` None reads the clock once the seq is taken, while ``log_head`` is held: the
        times of concurrent statements then follow the order that decides which one wins (a
        time read before the wait let a PUT that lost answer a later ``updated_at`` than the
        one that won; found by attack).
        """
        with self._request_transaction() as statement:
            seq = int(statement().exec_driver_sql(self._next_seq_sql, (1,)).scalar_one())
            at = time.time() if now is None else now
            statement().execute(preferences.insert().values(seq=seq, user_id=user_id,
                                                            genres=list(genres), created_at=at))
        return seq, at

    @unavailable_on_db_error
    def feedback_row(self, key: tuple[int, str, int, str]) -> Row | None:
        """The stored feedback row of ``key`` (user, event key, movie, type), or None."""
        user_id, event_key, movie_id, feedback_type = key
        stmt = sa.select(feedback).where(
            feedback.c.user_id == user_id, feedback.c.event_key == event_key,
            feedback.c.movie_id == movie_id, feedback.c.feedback_type == feedback_type)
        with self.read_engine.connect() as conn:
            row = conn.execute(stmt).first()
        return None if row is None else stored_feedback_row(dict(row._mapping))

    @unavailable_on_db_error
    def ratings_frame(self) -> pd.DataFrame:
        """Feedback ratings as ``user_id, item_id, rating, timestamp, precedence, excludes``
        (for retraining: :func:`serving.armset.training_set`), one row per (user, item).
        """
        cols = (feedback_ratings.c.user_id, feedback_ratings.c.movie_id,
                feedback_ratings.c.rating, feedback_ratings.c.updated_at,
                feedback_ratings.c.precedence, feedback_ratings.c.excludes)
        with self.read_engine.connect() as conn:
            rows = conn.execute(sa.select(*cols)).all()
        frame = pd.DataFrame(rows, columns=[c.name for c in cols])
        return pd.DataFrame({
            "user_id": frame["user_id"].astype("int64"),
            "item_id": frame["movie_id"].astype("int64"),
            "rating": frame["rating"].astype("float32"),
            "timestamp": frame["updated_at"].astype("int64"),
            "precedence": frame["precedence"].astype("float64"),
            "excludes": frame["excludes"].astype(bool),
        })

    @unavailable_on_db_error
    def count_rows(self) -> dict[str, int]:
        """Rows in the ``decisions``, ``feedback`` and ``feedback_ratings`` tables, by name."""
        with self.read_engine.connect() as conn:
            return {t.name: int(conn.execute(sa.select(sa.func.count()).select_from(t))
                                .scalar_one())
                    for t in (decisions, feedback, feedback_ratings)}

    @unavailable_on_db_error
    def ping(self) -> None:
        """Run ``SELECT 1``: raises :class:`StoreUnavailableError` when the database is down."""
        with self.read_engine.connect() as conn:
            conn.execute(sa.text("SELECT 1"))

    # ------------------------------------------------------------------ writes
    def _write_rows(self, cursor: Dbapi, decision_rows: Sequence[Row],
                    feedback_writes: Sequence[FeedbackWrite]) -> BatchResult:
        """The body of :meth:`write_batch` on a DBAPI ``cursor`` inside the transaction.

        SQLAlchemy's per-statement and per-transaction work (pool check-out, events, result
        metadata) costs more than SQLite's own insert, so the batch runs on plain DBAPI.
        A batch with feedback first takes its seqs from ``log_head`` (one number per feedback
        and per outcome it may decide; unused numbers leave gaps, which order does not mind).
        A duplicate's stored row is read back, and checked against the write's ``retry``.
        """
        result = BatchResult()
        pulls = decision_pulls(decision_rows)
        ratings: list[Record] = []
        if decision_rows:
            cursor.executemany(self._insert_decision_sql, [
                (r["event_id"], r["created_at"], r["user_id"], json_text(r["context"]),
                 r["arm"], r["propensity"], json_text(r["pmf"]), json_text(r["slate"]),
                 json_text(r.get("policy")), r["policy_version"], r["cold_start"],
                 r["reward_deadline"],
                 None if r.get("multileave") is None else json_text(r["multileave"]),
                 None if r.get("shadow") is None else json_text(r["shadow"]))
                for r in decision_rows])
        seq = 0
        if feedback_writes:
            wanted = len(feedback_writes) + sum(w.outcome is not None for w in feedback_writes)
            cursor.execute(self._next_seq_sql, (wanted,))
            seq = int(cursor.fetchone()[0]) - wanted
        for write in feedback_writes:
            v = write.values
            seq += 1
            feedback_seq = seq
            cursor.execute(
                self._insert_feedback_sql,
                (feedback_seq, v["created_at"], v["user_id"], v["movie_id"], v["feedback_type"],
                 v.get("value"), v["event_id"], v["event_key"], v["arm"], v["reward"],
                 v["rating"], False, v["note"], feedback_seq))
            inserted = cursor.fetchone()
            if inserted is None:
                cursor.execute(self._select_feedback_sql, (
                    v["user_id"], v["event_key"], v["movie_id"], v["feedback_type"]))
                existing = dict(zip(FEEDBACK_COLUMNS, cursor.fetchone(), strict=True))
                if write.retry is not None:  # raises on another payload: the batch rolls back
                    write.retry.check(v, existing)
                result.feedback.append(FeedbackResult(stored_feedback_row(existing), False))
                continue
            row = dict(v, id=int(inserted[0]), seq=feedback_seq, counted=False)
            if write.outcome is not None:
                seq += 1
                o = write.outcome
                cursor.execute(self._insert_outcome_sql, (
                    o["event_id"], seq, o["arm"], o["reward"], v["created_at"], feedback_seq))
                if cursor.fetchone() is not None:
                    cursor.execute(self._mark_counted_sql, (write.decided_note, feedback_seq))
                    row.update(counted=True, note=write.decided_note)
                    result.counted += 1
            result.feedback.append(FeedbackResult(row, True))
            if v["rating"] is not None:
                ratings.append(kept_rating_record(row["user_id"], row["movie_id"], KeptRating(
                    v["rating"], write.precedence, row["created_at"], feedback_seq,
                    write.excludes)))
        if ratings:  # each folded into the pair's stored one (any order gives the same)
            cursor.executemany(self._upsert_rating_sql, ratings)
        self._increment(cursor, pulls)
        return result

    def _increment(self, cursor: Dbapi, pulls: Counter[str]) -> None:
        """Add the pulls to ``arm_state`` in SQL on the DBAPI ``cursor``, so that concurrent
        writers never lose an update.
        """
        # Sorted so that concurrent transactions lock the rows in one order (no dead-lock).
        # One executemany, not a statement per arm: 5.3-7.3 against 8.8-9.9 us for 4 arms
        # (SQLite, timeit in one transaction, min of 5; bench/decision_write_cost.py).
        if pulls:
            cursor.executemany(self._increment_sql, [(pulls[arm], arm) for arm in sorted(pulls)])

    def settle_expired(self, now: float, grace_s: float, rules: RuleBook) -> int:
        """Decide the outcome of every decision whose window closed more than ``grace_s`` ago.

        Each decision is claimed by exactly one ``UPDATE ... WHERE settled_at IS NULL`` (several
        workers sweeping at once never settle one twice); each claimed policy decision then gets
        the outcome ``rules`` give it at this point of the log (its seq is taken now, under the
        ``log_head`` lock): under ``earliest`` the default reward unless a feedback decided it
        already (the insert then changes nothing), under ``max`` the best reward of the
        feedback stamped in its window.

        Returns
        -------
        int
            Decisions claimed (cold-start ones included).
        """
        with self._write_transaction() as conn:
            claimed = conn.execute(
                decisions.update()
                .where(decisions.c.settled_at.is_(None),
                       decisions.c.reward_deadline < now - grace_s)
                .values(settled_at=now)
                .returning(decisions.c.event_id, decisions.c.arm, decisions.c.reward_deadline,
                           decisions.c.cold_start, decisions.c.multileave)
            ).all()
            # In the order of their deadlines (the order they were made): the drift monitor
            # folds them in the order of their settlement (settled_seq, below).
            policy = sorted((r for r in claimed if not r.cold_start),
                            key=lambda r: (float(r.reward_deadline), r.event_id))
            if not policy:
                return len(claimed)
            # One outcome per credited arm (one per decision unless multileaved), in arm order.
            credited = {r.event_id: decision_arms(r.arm, r.multileave) for r in policy}
            wanted = sum(len(a) for a in credited.values())
            last = int(conn.exec_driver_sql(self._next_seq_sql, (wanted,)).scalar_one())
            rows: list[tuple[str, str | None, Feedback]] = []
            ids = list(credited)
            for start in range(0, len(ids), 500):
                rows += [(f.event_id, f.arm, Feedback(int(f.seq), float(f.created_at),
                                                       f.feedback_type, f.value))
                         for f in conn.execute(
                    sa.select(feedback.c.event_id, feedback.c.arm, feedback.c.seq,
                              feedback.c.created_at, feedback.c.feedback_type, feedback.c.value)
                    .where(feedback.c.event_id.in_(ids[start:start + 500])))]
            by_event = group_feedback(rows)
            seq = last - wanted
            settled: list[dict[str, str | int]] = []
            for r in policy:
                arms = credited[r.event_id]
                by_arm = credited_feedback(arms, r.multileave is not None,
                                           by_event.get(r.event_id, []))
                for arm in arms:
                    seq += 1
                    self._settle_one(conn, r.event_id, arm, by_arm[arm],
                                     float(r.reward_deadline), seq, now, rules)
                settled.append({"e": r.event_id, "s": seq})
            conn.execute(decisions.update().where(decisions.c.event_id == sa.bindparam("e"))
                         .values(settled_seq=sa.bindparam("s")), settled)
        return len(claimed)

    @unavailable_on_db_error
    def settled_after(self, seq: int, upto: int | None = None) -> list[Outcome]:
        """The outcomes of the decisions settled after log position ``seq`` (up to ``upto``),
        each at its decision's settlement position (``decisions.settled_seq``), in that order,
        a multileaved decision's arms in arm order: the drift monitor's stream
        (:mod:`serving.drift`).
        """
        with self.read_engine.connect() as conn:
            rows = conn.execute(_settled_statement(seq, upto)).all()
        return [Outcome(int(r[0]), r[1], r[2], float(r[3])) for r in rows]

    def _settle_one(self, conn: Connection, event_id: str, arm: str, fb: list[Feedback],
                    deadline: float, seq: int, now: float, rules: RuleBook) -> None:
        """Insert the outcome ``rules`` give (decision ``event_id``, ``arm``) on its feedback
        ``fb`` at log position ``seq`` unless one is stored; mark the deciding feedback.
        """
        decided = rules.outcome(fb, deadline, seq)
        assert decided is not None  # settled_seq given: always an outcome
        reward, decider = decided
        inserted = conn.exec_driver_sql(self._insert_outcome_sql, (
            event_id, seq, arm, reward, now, None if decider is None else decider.seq)).first()
        if inserted is not None and decider is not None:
            conn.exec_driver_sql(self._mark_counted_sql, (
                f"{decided_note(reward, arm)} ({rules.aggregation} of the window's feedback)",
                decider.seq))

    # ------------------------------------------------------------------ the log as a whole
    @unavailable_on_db_error
    def log_rows(self) -> LogRows:
        """The whole log and its stored folds, from one snapshot (``rebuild-state``).

        Returns
        -------
        dict
            ``decisions``: ``(event_id, arm, cold_start, reward_deadline, settled,
            multileave)`` tuples; ``feedback``: ``(seq, event_id, user_id, movie_id,
            created_at, feedback_type, counted, rating, value, arm)``; ``outcomes``: ``(seq,
            event_id, arm, reward, feedback_seq, decided_at)``;
            ``contexts``: event_id -> feature vector (decisions with an outcome);
            ``pulls``: arm -> stored pulls; ``ratings``: (user_id, movie_id) -> its
            :class:`~serving.rules.KeptRating`; ``fold``: the latest fold snapshot with its
            ratings (None: never purged); ``settled``: ``(settled_seq, event_id, arm,
            reward)``, the drift monitor's stream (:meth:`settled_after`).
        """
        with self._snapshot_connection() as conn:
            out: LogRows = {
                "decisions": [tuple(r) for r in conn.execute(sa.select(
                    decisions.c.event_id, decisions.c.arm, decisions.c.cold_start,
                    decisions.c.reward_deadline, decisions.c.settled_at.is_not(None),
                    decisions.c.multileave))],
                "feedback": [tuple(r) for r in conn.execute(sa.select(
                    feedback.c.seq, feedback.c.event_id, feedback.c.user_id,
                    feedback.c.movie_id, feedback.c.created_at, feedback.c.feedback_type,
                    feedback.c.counted, feedback.c.rating, feedback.c.value, feedback.c.arm))],
                "outcomes": [tuple(r) for r in conn.execute(sa.select(
                    outcomes.c.seq, outcomes.c.event_id, outcomes.c.arm, outcomes.c.reward,
                    outcomes.c.feedback_seq, outcomes.c.decided_at))],
                "contexts": {r[0]: _context_features(r[1]) for r in conn.execute(
                    sa.select(decisions.c.event_id, sa.cast(decisions.c.context, sa.Text))
                    .join(outcomes, outcomes.c.event_id == decisions.c.event_id))},
                "pulls": {r.arm: int(r.pulls) for r in conn.execute(sa.select(arm_state))},
                "ratings": {(int(r.user_id), int(r.movie_id)): _kept(r)
                            for r in conn.execute(sa.select(feedback_ratings))},
                "fold": self._read_fold(conn, ratings=True, arms=False),
                # the drift monitor's stream (settled_after), from the same snapshot
                "settled": [tuple(r) for r in conn.execute(_settled_statement(0, None))],
            }
        return out

    #: Columns of :meth:`decision_log_rows`, in order.
    DECISION_LOG_COLUMNS = ("event_id", "created_at", "user_id", "context", "arm", "propensity",
                            "pmf", "policy_version", "reward_deadline", "settled_at", "reward",
                            "decided_at")

    def decision_log_rows(self, consume: Callable[[Sequence[Record]], None], *,
                          partition: int = 50_000) -> int:
        """Hand every policy (not cold-start) decision to ``consume``, ``partition`` at a time.

        Rows are tuples of :attr:`DECISION_LOG_COLUMNS` in ``(created_at, event_id)`` order:
        ``context`` and ``pmf`` as JSON text, ``settled_at`` None while unsettled, ``reward``
        and ``decided_at`` the decision's outcome (None while undecided). The count and the
        rows come from one snapshot.

        Returns
        -------
        int
            The number of cold-start decisions (left out of the rows).
        """
        cols = (decisions.c.event_id, decisions.c.created_at, decisions.c.user_id,
                sa.cast(decisions.c.context, sa.Text), decisions.c.arm,
                decisions.c.propensity, sa.cast(decisions.c.pmf, sa.Text),
                decisions.c.policy_version, decisions.c.reward_deadline,
                decisions.c.settled_at, outcomes.c.reward, outcomes.c.decided_at)
        # Multileaved decisions (several credited arms, serving.multileave) are compared by
        # ``recbandits credit``, not evaluated as single-arm actions.
        stmt = (sa.select(*cols)
                .outerjoin(outcomes, outcomes.c.event_id == decisions.c.event_id)
                .where(sa.not_(decisions.c.cold_start), decisions.c.multileave.is_(None))
                .order_by(decisions.c.created_at, decisions.c.event_id))
        with self._snapshot_connection() as conn:
            n_cold = int(conn.execute(sa.select(sa.func.count()).select_from(decisions)
                                      .where(decisions.c.cold_start)).scalar_one())
            result = conn.execution_options(yield_per=partition).execute(stmt)
            for rows in result.partitions(partition):
                consume(rows)
        return n_cold

    @unavailable_on_db_error
    def multileave_rows(self) -> MultileaveRows:
        """The multileaved decisions, their decided outcomes, those whose window closed and
        the feedback on these with its credited team, from one snapshot (``recbandits
        credit``: :class:`~serving.store.types.MultileaveRows`).
        """
        multileaved = decisions.c.multileave.is_not(None)
        closed = multileaved & decisions.c.settled_seq.is_not(None)
        with self._snapshot_connection() as conn:
            rows = [(r[0], r[1]) for r in conn.execute(
                sa.select(decisions.c.event_id, decisions.c.multileave).where(multileaved)
                .order_by(decisions.c.created_at, decisions.c.event_id))]
            decided = [(r[0], r[1], float(r[2])) for r in conn.execute(
                sa.select(outcomes.c.event_id, outcomes.c.arm, outcomes.c.reward)
                .join(decisions, decisions.c.event_id == outcomes.c.event_id)
                .where(multileaved))]
            windows = [(r[0], float(r[1]), int(r[2])) for r in conn.execute(
                sa.select(decisions.c.event_id, decisions.c.reward_deadline,
                          decisions.c.settled_seq).where(closed))]
            feedback_rows = [(r.event_id, r.arm, int(r.movie_id),
                              Feedback(int(r.seq), float(r.created_at), r.feedback_type,
                                       r.value))
                             for r in conn.execute(
                sa.select(feedback.c.event_id, feedback.c.arm, feedback.c.movie_id,
                          feedback.c.seq,
                          feedback.c.created_at, feedback.c.feedback_type, feedback.c.value)
                .join(decisions, decisions.c.event_id == feedback.c.event_id).where(closed)
                .order_by(feedback.c.seq))]
        return MultileaveRows(rows, decided, windows, feedback_rows)

    @unavailable_on_db_error
    def holdout_rows(self) -> list[tuple[str, str, float, JsonObject | None, JsonObject | None,
                                         float | None]]:
        """Every single-arm policy decision (not cold-start, not multileaved) as ``(event_id,
        arm, propensity, pmf, policy, reward)``: its logged pmf and policy JSON and its decided
        reward (None: undecided), in time order, from one snapshot (``recbandits holdout`` and
        ``rebuild-state``'s holdout checks, :mod:`serving.holdout`).
        """
        stmt = (sa.select(decisions.c.event_id, decisions.c.arm, decisions.c.propensity,
                          decisions.c.pmf, decisions.c.policy, outcomes.c.reward)
                .outerjoin(outcomes, outcomes.c.event_id == decisions.c.event_id)
                .where(sa.not_(decisions.c.cold_start), decisions.c.multileave.is_(None))
                .order_by(decisions.c.created_at, decisions.c.event_id))
        with self._snapshot_connection() as conn:
            return [(r[0], r[1], float(r[2]), r[3], r[4], None if r[5] is None else float(r[5]))
                    for r in conn.execute(stmt)]

    @unavailable_on_db_error
    def latest_decision(self) -> LatestDecision | None:
        """The latest policy decision logged (:class:`~serving.store.types.LatestDecision`: the
        policy, arm order and feature set the workers serve; ``recbandits purge`` folds no
        other), or None when none is logged.
        """
        # Not a cold-start decision: served outside the policy, its pmf is the cold-start arm's
        # alone (found in review: every purge after a newcomer's slate was refused).
        stmt = (sa.select(decisions.c.created_at, decisions.c.policy, decisions.c.pmf,
                          sa.cast(decisions.c.context, sa.Text))
                .where(sa.not_(decisions.c.cold_start))
                .order_by(decisions.c.created_at.desc(), decisions.c.event_id.desc()).limit(1))
        with self._snapshot_connection() as conn:
            row = conn.execute(stmt).first()
        if row is None:
            return None
        pmf = json.loads(row[2]) if isinstance(row[2], str) else row[2]
        features = _context_features(row[3])
        return LatestDecision(float(row[0]), row[1] if isinstance(row[1], dict) else None,
                              list(pmf) if isinstance(pmf, dict) else [],
                              None if features is None else len(features))

    @unavailable_on_db_error
    def outcome_rows(self) -> list[Outcome]:
        """Every outcome in log order, with its decision's context (``ope``'s replays)."""
        return self.outcomes_after(0)

    def insert_simulated(self, decision_rows: Sequence[Row],
                         feedback_rows: Sequence[Row],
                         outcome_rows: Sequence[Row] = (), *,
                         rules: RuleBook | None = None) -> None:
        """Bulk-insert simulated log rows in one transaction (no idempotency check).

        The rows hold every column of their table but the feedback ``id`` (set to its ``seq``);
        their ``seq`` values must be above the log's and increasing in log order: ``log_head``
        is moved to the largest; the feedback's ratings are folded into ``feedback_ratings`` as
        the service does, by ``rules`` (default: the default rule book). ``arm_state`` is left
        alone (see :meth:`set_pulls`).
        """
        rules = rules if rules is not None else RuleBook()
        with self.write_engine.begin() as conn:
            if decision_rows:
                conn.execute(decisions.insert(), list(decision_rows))
            if feedback_rows:
                # An event's id is its log position, as the service writes it (_write_rows).
                conn.execute(feedback.insert(), [{"id": r["seq"], **r} for r in feedback_rows])
                ratings = [kept_rating_record(r["user_id"], r["movie_id"], kept)
                           for r in feedback_rows
                           if (kept := rules.kept_rating(r["feedback_type"], r.get("value"),
                                                         r["created_at"], r["seq"],
                                                         r["rating"])) is not None]
                if ratings:
                    conn.exec_driver_sql(self._upsert_rating_sql, ratings)
            if outcome_rows:
                conn.execute(outcomes.insert(), list(outcome_rows))
            self._head_past(conn, max([int(r["seq"]) for r in (*feedback_rows, *outcome_rows)],
                                      default=0))

    @staticmethod
    def _head_past(conn: Connection, top: int | sa.ScalarSelect[int]) -> None:
        """Move ``log_head`` up to ``top`` (a number, or a query of one) if it is below: never
        down, and not at all for a NULL ``top``.
        """
        conn.execute(log_head.update().where(log_head.c.id == 1, log_head.c.seq < top)
                     .values(seq=top))

    def log_seq(self) -> int:
        """The last seq handed out."""
        with self.read_engine.connect() as conn:
            return int(conn.execute(sa.select(log_head.c.seq).where(log_head.c.id == 1))
                       .scalar_one_or_none() or 0)

    @unavailable_on_db_error
    def feedback_after(self, seq: int, user_ids: Iterable[int]
                       ) -> tuple[int, list[Row]]:
        """The log's tail for the live push (:mod:`serving.stream`): the feedback of
        ``user_ids`` logged after ``seq``, in log order, and the position it is complete up to.

        The head is read first: every transaction that took a seq up to it has committed (seqs
        are handed out under ``log_head``'s row lock, in commit order), so the rows in
        ``(seq, head]`` are all visible to the second statement, and a later call from ``head``
        misses none.

        Returns
        -------
        (head, rows)
            ``rows``: dicts with ``seq``, ``user_id``, ``movie_id``, ``feedback_type``,
            ``event_id`` and ``counted``; only rows with ``seq <= head``.
        """
        users = sorted({int(u) for u in user_ids})
        cols = (feedback.c.seq, feedback.c.user_id, feedback.c.movie_id,
                feedback.c.feedback_type, feedback.c.event_id, feedback.c.counted)
        with self.read_engine.connect() as conn:
            head = int(conn.execute(sa.select(log_head.c.seq).where(log_head.c.id == 1))
                       .scalar_one_or_none() or 0)
            if not users or head <= seq:
                return head, []
            rows = conn.execute(sa.select(*cols).where(
                feedback.c.seq > seq, feedback.c.seq <= head, feedback.c.user_id.in_(users))
                .order_by(feedback.c.seq)).all()
        return head, [{"seq": int(r[0]), "user_id": int(r[1]), "movie_id": int(r[2]),
                       "feedback_type": r[3], "event_id": r[4], "counted": bool(r[5])}
                      for r in rows]

    # ------------------------------------------------------------------ fold snapshots (purge)
    @unavailable_on_db_error
    def fold_mark(self) -> int:
        """The log position of the latest fold snapshot (0: none), one indexed read: what a
        worker's refresh compares with the positions it has folded up to.
        """
        with self.read_engine.connect() as conn:
            return int(conn.execute(sa.select(sa.func.max(fold_snapshots.c.seq))).scalar_one()
                       or 0)

    @unavailable_on_db_error
    def fold_snapshot(self, *, ratings: bool = False, arms: bool = False
                      ) -> FoldSnapshot | None:
        """The latest fold snapshot (None: the log was never purged), read in one snapshot.

        Parameters
        ----------
        ratings, arms : bool, default False
            Also read its ratings (``rebuild-state``) or its live arms' saved bytes (a worker).
        """
        with self._snapshot_connection() as conn:
            return self._read_fold(conn, ratings=ratings, arms=arms)

    def _read_fold(self, conn: Connection, *, ratings: bool, arms: bool) -> FoldSnapshot | None:
        """:meth:`fold_snapshot` on ``conn`` (None also for a store older than the table)."""
        if not sa.inspect(conn).has_table(fold_snapshots.name):
            return None
        row = conn.execute(sa.select(fold_snapshots).order_by(fold_snapshots.c.seq.desc())
                           .limit(1)).first()
        if row is None:
            return None
        seq = int(row.seq)
        return FoldSnapshot(
            seq=seq, cut=float(row.cut), created_at=float(row.created_at),
            policy=json.loads(row.policy),
            pulls={a: int(n) for a, n in json.loads(row.pulls).items()},
            deleted={k: int(n) for k, n in json.loads(row.deleted).items()},
            ratings={(int(r.user_id), int(r.movie_id)): _kept(r)
                     for r in conn.execute(sa.select(fold_ratings))} if ratings else {},
            arms={r.arm: bytes(r.state) for r in conn.execute(
                sa.select(fold_arms.c.arm, fold_arms.c.state).where(fold_arms.c.seq == seq))}
            if arms else {})

    @staticmethod
    def _purged(cut: float, seq: int) -> tuple[sa.ColumnElement[bool], sa.ColumnElement[bool],
                                               sa.ColumnElement[bool]]:
        """What a purge before ``cut`` at log position ``seq`` deletes (``recbandits purge``):
        the ``WHERE`` of the decisions, the outcomes and the feedback it deletes.

        A decision goes if it is settled, its reward window closed before ``cut`` (so no event
        the service still accepts, stamped at or after now - retention >= ``cut``, can be
        attributed to it), its outcome (if any) is at or before ``seq``, and none of its
        feedback is stamped at or after ``cut`` or logged after ``seq``. Its outcome goes with
        it; feedback goes if it is stamped before ``cut``, logged at or before ``seq`` and not
        attributed to a decision that stays.
        """
        def doomed(event_id: sa.ColumnElement[str], settled_at: sa.ColumnElement[float],
                   reward_deadline: sa.ColumnElement[float]) -> sa.ColumnElement[bool]:
            """Whether the decision of these columns (of ``decisions`` or an alias) goes."""
            young = feedback.alias("young")
            later = outcomes.alias("later")
            return sa.and_(
                settled_at.is_not(None), reward_deadline < cut,
                ~sa.exists().where(later.c.event_id == event_id, later.c.seq > seq),
                ~sa.exists().where(young.c.event_id == event_id, sa.or_(
                    young.c.created_at >= cut, young.c.seq > seq, young.c.seq.is_(None))))

        kept = decisions.alias("kept")
        gone = decisions.alias("gone")
        feedback_gone = sa.and_(
            feedback.c.created_at < cut, feedback.c.seq <= seq,
            sa.or_(feedback.c.event_id.is_(None), ~sa.exists().where(
                kept.c.event_id == feedback.c.event_id,
                ~doomed(kept.c.event_id, kept.c.settled_at, kept.c.reward_deadline))))
        outcome_gone = sa.and_(outcomes.c.seq <= seq, sa.exists().where(
            gone.c.event_id == outcomes.c.event_id,
            doomed(gone.c.event_id, gone.c.settled_at, gone.c.reward_deadline)))
        return (doomed(decisions.c.event_id, decisions.c.settled_at, decisions.c.reward_deadline),
                outcome_gone, feedback_gone)

    @unavailable_on_db_error
    def purge_counts(self, cut: float, seq: int) -> dict[str, int]:
        """The rows a purge before ``cut`` at log position ``seq`` would delete, by table."""
        decision_gone, outcome_gone, feedback_gone = self._purged(cut, seq)
        with self._snapshot_connection() as conn:
            return {t.name: int(conn.execute(sa.select(sa.func.count()).select_from(t)
                                             .where(where)).scalar_one())
                    for t, where in ((decisions, decision_gone), (outcomes, outcome_gone),
                                     (feedback, feedback_gone))}

    @unavailable_on_db_error
    def purge(self, cut: float, seq: int, previous: int, policy: JsonObject,
              arms: Mapping[str, bytes],
              ratings: Callable[[Sequence[Record]], Mapping[tuple[int, int], KeptRating]],
              now: float, *, promotion: int = 0) -> dict[str, int]:
        """Delete the raw log before ``cut`` and store the fold snapshot at ``seq``, in ONE
        transaction (see :meth:`_purged` for what goes).

        The transaction first takes the ``log_head`` row lock (no writer that takes a seq
        interleaves, and two purges run one after the other).

        Parameters
        ----------
        cut : float
            Unix seconds: the purge's DATE.
        seq : int
            The snapshot's log position S: every row up to it was committed before the folds
            were read (the log head then).
        previous : int
            The log position of the snapshot the folds started from (0: none).
        policy : dict
            ``{"state", "rewards"}``: the policy folded over every outcome up to ``seq``
            (:class:`~serving.store.types.FoldSnapshot`).
        arms : mapping of str to bytes
            Each live arm saved (``Recommender.save``) after folding every event and added
            item up to ``seq``.
        ratings : callable
            Given the deleted feedback rows ``(seq, user_id, movie_id, feedback_type, value,
            rating, created_at)``, their kept rating per ``(user_id, movie_id)``
            (:func:`serving.replay.kept_ratings`), folded into the snapshot's (the same rule in
            SQL: :func:`kept_rating_set`).
        now : float
        promotion : int, default 0
            The id of the latest promotion when ``policy`` was folded (0: none): the policy
            in force it was folded under (:meth:`record_promotion` takes the same lock).

        Returns
        -------
        dict of str to int
            Rows deleted per table (``decisions``, ``outcomes``, ``feedback``).

        Raises
        ------
        ValueError
            Another purge stored a snapshot after ``previous``, or a promotion was recorded
            after ``promotion``, meanwhile (run it again); nothing is written.
        """
        decision_gone, outcome_gone, feedback_gone = self._purged(cut, seq)
        with self._write_transaction() as conn:
            conn.exec_driver_sql(self._next_seq_sql, (0,))  # the log_head row lock
            latest = int(conn.execute(sa.select(sa.func.max(fold_snapshots.c.seq)))
                         .scalar_one() or 0)
            if latest != previous:
                raise ValueError(f"another purge stored a fold snapshot at log position "
                                 f"{latest} while this one folded from {previous}: run it again")
            promoted = int(conn.execute(sa.select(sa.func.max(policy_promotions.c.id)))
                           .scalar_one() or 0)
            if promoted != promotion:
                raise ValueError(f"a promotion (#{promoted}) was recorded while this purge "
                                 f"folded the policy in force at #{promotion}: run it again")
            gone_feedback = conn.execute(feedback.delete().where(feedback_gone).returning(
                feedback.c.seq, feedback.c.user_id, feedback.c.movie_id,
                feedback.c.feedback_type, feedback.c.value, feedback.c.rating,
                feedback.c.created_at)).all()
            n_outcomes = len(conn.execute(outcomes.delete().where(outcome_gone)
                                          .returning(outcomes.c.seq)).all())
            gone = conn.execute(decisions.delete().where(decision_gone).returning(
                decisions.c.arm, decisions.c.cold_start, decisions.c.multileave)).all()
            deleted = {"decisions": len(gone), "outcomes": n_outcomes,
                       "feedback": len(gone_feedback)}
            pulls = Counter(json.loads(conn.execute(
                sa.select(fold_snapshots.c.pulls).where(fold_snapshots.c.seq == previous)
            ).scalar_one_or_none() or "{}"))
            pulls.update(decision_pulls(dict(r._mapping) for r in gone))
            conn.execute(fold_snapshots.insert().values(
                seq=seq, cut=cut, created_at=now, policy=json.dumps(policy),
                pulls=json.dumps(dict(sorted(pulls.items()))), deleted=json.dumps(deleted)))
            conn.execute(fold_arms.delete())
            if arms:
                conn.execute(fold_arms.insert(), [{"arm": a, "seq": seq, "state": blob}
                                                  for a, blob in arms.items()])
            rows = [kept_rating_record(u, m, kept) for (u, m), kept
                    in ratings([tuple(r) for r in gone_feedback]).items()]
            # Multi-row statements of plain SQL (one row per pair: none is updated twice by one
            # statement): an executemany of the upsert cost PostgreSQL ~50-65 us a row, under
            # the log_head lock.
            for start in range(0, len(rows), 1000):
                chunk = rows[start:start + 1000]
                conn.exec_driver_sql(kept_rating_upsert("fold_ratings", len(chunk), self.PARAM),
                                     tuple(v for row in chunk for v in row))
        return deleted

    def set_pulls(self, pulls: Mapping[str, int]) -> None:
        """Overwrite the stored pulls of the arms in ``pulls`` (a simulated log's end state)."""
        with self.write_engine.begin() as conn:
            for arm, n in pulls.items():
                conn.execute(arm_state.update().where(arm_state.c.arm == arm).values(pulls=n))


__all__ = ["COMMIT_MODES", "KEPT_RATING_COLUMNS", "CommitMode", "Store", "json_text",
           "kept_rating_record", "kept_rating_set", "kept_rating_upsert"]
