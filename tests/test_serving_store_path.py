"""The store's request path: PostgreSQL group reads and commits, SQLite locks and checkpoints.

- PostgreSQL (:mod:`serving.store.postgresql`): a batch written by the event-loop writer stores,
  counts and answers exactly what :meth:`Store.write_batch` does (duplicates within a batch,
  keys already stored, the latest rating winning); batched reads answer what the Store's own
  reads answer, many requests per query.
- SQLite: while another connection holds the write lock, the event loop keeps serving (the batch
  waits in a thread), the write lands once the lock is released, and after ``store_timeout_s``
  it fails with a 503 having written nothing. The writer's commits never checkpoint the WAL;
  :meth:`SQLiteStore.checkpoint` (the writer's jobs thread) does.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import sqlite3
import threading
import time
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import numpy as np
import psycopg
import pytest
from fastapi.testclient import TestClient
from test_serving_support import postgres
from test_serving_support import read_table as table

from arms.data.dataset import Dataset
from serving.app import create_app
from serving.errors import StoreUnavailableError
from serving.rules import RuleBook
from serving.settings import Settings
from serving.store import FeedbackWrite, GroupCommitWriter, Store, open_store
from serving.store.tables import arm_state, decisions, feedback, feedback_ratings
from serving.store.tables import outcomes as outcomes_table

ARMS = ["svd", "popularity"]


def decision(event_id: str, user: int, arm: str, slate: list[int], at: float,
             cold_start: bool = False) -> dict[str, Any]:
    return {"event_id": event_id, "created_at": at, "user_id": user,
            "context": {"known_user": not cold_start, "k": len(slate)}, "arm": arm,
            "propensity": 0.5, "pmf": '{"svd":0.5,"popularity":0.5}', "slate": slate,
            "policy_version": 1, "cold_start": cold_start, "reward_deadline": at + 1800.0}


RULES = RuleBook()


def fb(user: int, movie: int, kind: str, event: dict[str, Any] | None,
       at: float) -> FeedbackWrite:
    """A feedback write as the service makes it: it may decide a policy decision's outcome."""
    decides = event is not None and not event["cold_start"]
    reward = RULES.reward(kind)
    values = {"created_at": at, "user_id": user, "movie_id": movie, "feedback_type": kind,
              "event_id": None if event is None else event["event_id"],
              "event_key": "" if event is None else event["event_id"],
              "arm": None if event is None else event["arm"], "reward": reward,
              "rating": RULES.rating(kind), "counted": False, "note": "n"}
    outcome = ({"event_id": event["event_id"], "arm": event["arm"], "reward": reward}
               if decides and event is not None else None)
    return FeedbackWrite(values, outcome, "decided", precedence=RULES.precedence(kind),
                         excludes=RULES.excludes(kind))


D1 = decision("e1", 1, "svd", [10, 11, 12], 100.0)
D2 = decision("e2", 2, "popularity", [20, 21], 101.0)
D3 = decision("e3", 1, "popularity", [11, 13], 102.0, cold_start=True)
BATCH_1 = ([D1, D2, D3], [
    fb(1, 10, "like", D1, 103.0),
    fb(1, 10, "like", D1, 103.5),  # the same key again in the same batch: counted once
    fb(2, 20, "dislike", D2, 104.0),
    fb(1, 11, "click", D3, 105.0),  # cold start: stored, not counted
    fb(3, 30, "like", None, 106.0),  # never shown: a rating only
    fb(3, 30, "dislike", None, 107.0),  # the latest rating of (3, 30) wins
])
BATCH_2 = ([decision("e4", 2, "svd", [21, 22], 108.0)], [
    fb(1, 10, "like", D1, 109.0),  # stored by the first batch: its row, not counted
    fb(2, 21, "like", D2, 110.0),
])


def stored(url: str) -> dict[str, Any]:
    """The store's content without ids (a PostgreSQL sequence also moves on a conflict)."""
    return {
        "decisions": sorted((r["event_id"], r["user_id"], r["arm"], tuple(r["slate"]),
                             r["cold_start"], r["created_at"]) for r in table(url, decisions)),
        # Without ids and seqs: a PostgreSQL sequence also moves on a conflict, and the two
        # writers hand out seqs to duplicates differently (order, not value, is the contract).
        "feedback": sorted(tuple(v for k, v in r.items() if k not in ("id", "seq"))
                           for r in table(url, feedback)),
        # Without seqs either (see "feedback"): the rating, its rank and exclusion are compared.
        "ratings": sorted(tuple(v for k, v in r.items() if k != "seq")
                          for r in table(url, feedback_ratings)),
        "arm_state": sorted(tuple(r.values()) for r in table(url, arm_state)),
    }


def outcomes(results: list[Any]) -> list[tuple[bool, Any, Any]]:
    return [(r.created, r.row["feedback_type"], r.row["created_at"]) for r in results]


@pytest.fixture
def pg_store() -> Iterator[Store]:
    store = open_store(postgres().create_database())
    store.create_schema(ARMS)
    try:
        yield store
    finally:
        store.dispose()


# ---------------------------------------------------------------------------- PostgreSQL
def test_a_read_is_tried_again_only_on_a_connection_the_server_ended(
        pg_store: Store, monkeypatch: pytest.MonkeyPatch) -> None:
    """One test of an ended connection (``Store._stale``): a read that fails on a live one is
    not sent again (a statement error, a time-out: its wait is not doubled)."""
    from serving.store.postgresql import _conninfo

    connects = 0
    connect = pg_store._raw_connect

    def counting() -> Any:
        nonlocal connects
        connects += 1
        return connect()

    monkeypatch.setattr(pg_store, "_raw_connect", counting)
    assert pg_store._fast("SELECT 1", ()) == [(1,)] and connects == 1
    with pytest.raises(psycopg.errors.DivisionByZero):
        pg_store._fast("SELECT 1 / 0", ())
    assert connects == 1  # the failed connection is dropped, and nothing sent again
    assert pg_store._fast("SELECT 1", ()) == [(1,)] and connects == 2
    pid = pg_store._local.conn.info.backend_pid
    with psycopg.connect(_conninfo(pg_store), autocommit=True) as admin:
        admin.execute("SELECT pg_terminate_backend(%s)", (pid,))
        for _ in range(100):  # the backend is gone once its pid leaves the list
            if not admin.execute("SELECT 1 FROM pg_stat_activity WHERE pid = %s",
                                 (pid,)).fetchall():
                break
            time.sleep(0.05)
    assert pg_store._fast("SELECT 2", ()) == [(2,)]  # read again on a new connection
    assert connects == 3


def test_event_loop_batch_stores_and_counts_what_the_store_does(
        tmp_path: Path, pg_store: Store) -> None:
    from serving.store.postgresql import AsyncBatchWriter

    reference = open_store(f"sqlite:///{tmp_path / 'ref.db'}")
    reference.create_schema(ARMS)
    expected = [reference.write_batch(*BATCH_1), reference.write_batch(*BATCH_2)]

    async def run() -> list[Any]:
        writer = AsyncBatchWriter(pg_store)
        try:
            return [await writer.write_batch(*BATCH_1), await writer.write_batch(*BATCH_2)]
        finally:
            await writer.aclose()

    got = asyncio.run(run())
    for mine, theirs in zip(got, expected, strict=True):
        assert outcomes(mine.feedback) == outcomes(theirs.feedback)
        assert mine.counted == theirs.counted
    first = got[0].feedback
    assert [r.created for r in first] == [True, False, True, True, True, True]
    assert first[1].row["id"] == first[0].row["id"]  # the duplicate answers the stored row
    assert first[1].row["created_at"] == 103.0
    assert got[1].feedback[0].row["id"] == first[0].row["id"]
    assert got[1].feedback[0].created is False
    # The like on e1 and the dislike on e2 decide their outcomes; the later like on e2 finds
    # e2 decided (earliest aggregation): stored, not counted.
    assert (got[0].counted, got[1].counted) == (2, 0)
    mine, theirs = stored(pg_store.url.render_as_string(False)), stored(
        reference.url.render_as_string(False))
    assert mine == theirs
    assert mine["arm_state"] == [("popularity", 1), ("svd", 2)]
    # A click is an implicit 4 (the rule book's); (3, 30) was liked then disliked in one
    # batch: the dislike stays.
    assert [r[:3] for r in mine["ratings"]] == [(1, 10, 5.0), (1, 11, 4.0), (2, 20, 1.0),
                                                (2, 21, 5.0), (3, 30, 1.0)]
    reference.dispose()


def test_a_failed_batch_writes_nothing_and_the_connection_recovers(pg_store: Store) -> None:
    from serving.store.postgresql import AsyncBatchWriter

    bad = decision("e9", 1, "svd", [1], 1.0)
    bad["arm"] = "x" * 65  # longer than the column: the whole transaction fails

    async def run() -> Any:
        writer = AsyncBatchWriter(pg_store)
        try:
            with pytest.raises(Exception, match="too long"):
                await writer.write_batch([decision("e8", 1, "svd", [1], 1.0), bad],
                                         [fb(1, 1, "like", None, 2.0)])
            return await writer.write_batch([decision("e7", 1, "svd", [1], 3.0)], [])
        finally:
            await writer.aclose()

    asyncio.run(run())
    url = pg_store.url.render_as_string(False)
    assert [r["event_id"] for r in table(url, decisions)] == ["e7"]
    assert table(url, feedback) == [] and table(url, feedback_ratings) == []
    assert {r["arm"]: r["pulls"] for r in table(url, arm_state)} == {"svd": 1, "popularity": 0}


def test_concurrent_batches_never_dead_lock_and_count_exactly() -> None:
    # Four writers (as four workers would) commit batches touching random subsets of the arms
    # in random orders; the increments lock the arm rows in one order, so none dead-locks
    # (which PostgreSQL would break by failing a transaction after a second) and every pull
    # and reward is counted once.
    from serving.store.postgresql import AsyncBatchWriter

    arms = ["a", "b", "c", "d", "e"]
    url = postgres().create_database()
    setup = open_store(url)
    setup.create_schema(arms)
    setup.dispose()
    errors: list[BaseException] = []

    def worker(seed: int) -> None:
        rng = np.random.default_rng(seed)

        async def run() -> None:
            store = open_store(url)
            writer = AsyncBatchWriter(store)
            try:
                for b in range(60):
                    picked = rng.permutation(arms)[:rng.integers(1, len(arms) + 1)]
                    rows = [decision(f"{seed}-{b}-{i}", int(seed), str(arm), [1, 2], float(b))
                            for i, arm in enumerate(picked)]
                    writes = [fb(int(seed), 1, "like", row, float(b)) for row in rows[::2]]
                    await writer.write_batch(rows, writes if b % 2 else [])
            finally:
                await writer.aclose()
                store.dispose()

        try:
            asyncio.run(run())
        except BaseException as exc:  # collected: a thread's failure must fail the test
            errors.append(exc)

    threads = [threading.Thread(target=worker, args=(seed,)) for seed in range(4)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert errors == []
    rows = table(url, decisions)
    counted = table(url, feedback)
    assert len(rows) > 4 * 60 and counted
    state = {r["arm"]: r for r in table(url, arm_state)}
    decided = table(url, outcomes_table)
    for arm in arms:
        assert state[arm]["pulls"] == sum(r["arm"] == arm for r in rows), arm
        assert sum(r["arm"] == arm for r in decided) == sum(
            r["arm"] == arm and r["counted"] for r in counted), arm
    # Every feedback here decided its decision's outcome, and seq order is the log's order.
    assert sorted(r["feedback_seq"] for r in decided) == sorted(
        r["seq"] for r in counted if r["counted"])
    assert len({r["seq"] for r in decided} | {r["seq"] for r in counted}) == len(decided) + len(
        counted)


def test_group_reads_answer_what_the_store_reads_many_per_query(pg_store: Store) -> None:
    from serving.store.postgresql import GroupReader

    pg_store.write_batch(*BATCH_1)
    pg_store.write_batch(*BATCH_2)
    calls: list[tuple[str, tuple[Any, ...]]] = (
        [("user_feedback", (u,)) for u in (1, 2, 3, 4, 1)]
        + [("decision", (e,)) for e in ("e1", "e2", "e4", "nope", "e1")]
        + [("latest_decision_showing", args) for args in (
            (1, 11, 0.0, float("inf")), (1, 11, 0.0, 0.0))]  # until: unbounded; before all
        + [("latest_decision_showing", args) for args in (
            (1, 11, 0.0),  # shown by e1 (policy) and e3 (cold start, later): e3
            (1, 10, 0.0), (1, 10, 100.5),  # e1; then nothing after its time
            (2, 21, 0.0),  # e2 and e4 show it: e4, the latest
            (2, 99, 0.0), (7, 10, 0.0))])

    def normal(kind: str, value: Any) -> Any:
        return sorted(value) if kind == "user_feedback" else value

    async def run() -> tuple[list[Any], GroupReader]:
        reader = GroupReader(pg_store)
        reader.start()
        try:
            answers = await asyncio.gather(*(reader.read(k, *a) for k, a in calls))
            return list(answers), reader
        finally:
            await reader.aclose()

    answers, reader = asyncio.run(run())
    expected = [getattr(pg_store, kind)(*args) for kind, args in calls]
    assert [normal(k, a) for (k, _), a in zip(calls, answers, strict=True)] == [
        normal(k, e) for (k, _), e in zip(calls, expected, strict=True)]
    assert [a and a["event_id"] for a in answers[-6:]] == ["e3", "e1", None, "e4", None, None]
    assert [(e.movie_id, e.event_type, e.value, e.created_at) for e in answers[0]] == [
        (10, "like", None, 103.0), (11, "click", None, 105.0)]
    # Queued together, answered together: one query per kind, not one per request.
    assert reader.reads == len(calls) and reader.batches == 1


def test_group_reads_of_user_context_answer_what_the_store_reads(pg_store: Store) -> None:
    # The user read goes to libpq directly (serving.store.postgresql._execute_prepared), not
    # through psycopg's cursor: its answer must be the store's own value for value and type for
    # type: ints, the event type, a NULL value, floats to the last bit, the stated genres; the
    # window (since) and the limit applied per user, users without events or genres.
    from serving.store.postgresql import GroupReader

    pg_store.write_batch(*BATCH_1)
    valued = fb(2, 22, "view", None, 200.0 + 1 / 3)
    valued.values["value"] = 0.1 + 0.2  # 0.30000000000000004: the last bit must survive
    pg_store.write_batch([], [valued, fb(2, 23, "click", None, 201.0)])
    pg_store.set_preferences(2, ["Comedy", "Film-Noir"], 300.0)
    pg_store.set_preferences(5, ["Drama"], 301.0)
    pg_store.set_preferences(5, [], 302.0)  # the latest statement wins, even an empty one
    calls = [(1, 0.0, 50), (1, 103.2, 50), (1, 0.0, 1), (2, 0.0, 50), (3, 0.0, 50),
             (4, 0.0, 50), (5, 0.0, 50), (1, 0.0, 50)]

    async def run() -> tuple[list[Any], GroupReader]:
        reader = GroupReader(pg_store)
        reader.start()
        try:
            return list(await asyncio.gather(*(reader.read("user_context", *c)
                                                for c in calls))), reader
        finally:
            await reader.aclose()

    answers, reader = asyncio.run(run())
    expected = [pg_store.user_context(*c) for c in calls]
    assert answers == expected
    kinds = [[tuple(type(v) for v in e) for e in events] + [type(genres)]
             for events, genres in answers]
    assert kinds == [[tuple(type(v) for v in e) for e in events] + [type(genres)]
                     for events, genres in expected]
    assert [len(events) for events, _ in answers] == [2, 1, 1, 3, 2, 0, 0, 2]
    events_2, genres_2 = answers[3]
    assert [(e.movie_id, e.event_type, e.value) for e in events_2] == [
        (20, "dislike", None), (22, "view", 0.30000000000000004), (23, "click", None)]
    assert events_2[1].created_at == 200.0 + 1 / 3 and isinstance(events_2[0].seq, int)
    assert (genres_2, answers[4][1], answers[6][1]) == (["Comedy", "Film-Noir"], None, [])
    assert reader.batches == 1  # queued together, answered by one query


def test_a_batch_of_decisions_stores_each_column_as_given(pg_store: Store) -> None:
    # The decisions-only batch goes to libpq directly and carries the JSON columns as text in
    # its document: a column the service passes serialised is stored as that very text, a dict
    # or list as its JSON, a missing or None one as NULL; the pulls are added in the same
    # statement; a second batch reuses the statement prepared by the first.
    import psycopg

    from serving.store.postgresql import AsyncBatchWriter

    context = '{"feature_version":"user-v2","features":[0.1,0.30000000000000004,1e-300],"k":2}'
    rows = [dict(decision("e1", 1, "svd", [10, 11], 100.0 + 1 / 3), context=context,
                 policy='{"name":"LinTS","params":{"ridge":1.0}}', multileave=None,
                 shadow='{"arm":"popularity","pmf":{"svd":0.5,"popularity":0.5}}'),
            decision("e2", 2, "popularity", [20], 101.0)]

    async def run() -> None:
        writer = AsyncBatchWriter(pg_store)
        try:
            for batch in ([rows[0]], [rows[1]]):
                result = await writer.write_batch(batch, [])
                assert (result.feedback, result.counted) == ([], 0)
        finally:
            await writer.aclose()

    asyncio.run(run())
    url = pg_store.url.set(drivername="postgresql").render_as_string(False)
    with psycopg.connect(url) as conn:
        got = conn.execute(
            "SELECT event_id, created_at, user_id, context::text, arm, propensity, pmf::text, "
            "slate::text, policy::text, policy_version, cold_start, reward_deadline, "
            "multileave::text, shadow::text FROM decisions ORDER BY event_id").fetchall()
    first, second = got
    assert first == ("e1", 100.0 + 1 / 3, 1, context, "svd", 0.5, rows[0]["pmf"], "[10,11]",
                     rows[0]["policy"], 1, False, 100.0 + 1 / 3 + 1800.0, None, rows[0]["shadow"])
    assert second[3] == '{"known_user":true,"k":1}' and second[8] is None  # no policy given
    assert {r["arm"]: r["pulls"] for r in table(pg_store.url.render_as_string(False),
                                                 arm_state)} == {"svd": 1, "popularity": 1}


def test_a_unix_socket_url_serves_the_engines_and_the_libpq_paths(
        tmp_path: Path, pg_store: Store) -> None:
    # postgresql+psycopg://user@/db?host=<socket dir>&port=N: a same-host deployment's URL. The
    # SQLAlchemy engines and the event loop's libpq connections (writer, group reader) all
    # reach the server over the socket (inet_server_addr() is NULL there, 127.0.0.1 over TCP),
    # and what they write and read is what the TCP store of the same database sees.
    from serving.store.postgresql import AsyncBatchWriter, GroupReader, _connect

    server = postgres()
    database = pg_store.url.database
    assert database is not None
    store = open_store(server.socket_url(database))
    addr = "SELECT coalesce(host(inet_server_addr()), 'unix')"
    try:
        with store.read_engine.connect() as conn:
            assert conn.exec_driver_sql(addr).scalar() == "unix"
        with pg_store.read_engine.connect() as conn:
            assert conn.exec_driver_sql(addr).scalar() == "127.0.0.1"
        assert store.write_batch(*BATCH_1).counted == 2  # the write engine

        async def run() -> tuple[str, Any, list[Any]]:
            conn = await _connect(store, "")
            try:
                where = (await (await conn.execute(addr)).fetchone())[0]
            finally:
                await conn.close()
            writer, reader = AsyncBatchWriter(store), GroupReader(store)
            reader.start()
            try:
                written = await writer.write_batch(*BATCH_2)
                read = await asyncio.gather(*(reader.read("user_feedback", u) for u in (1, 2)))
                return where, written, list(read)
            finally:
                await reader.aclose()
                await writer.aclose()

        where, written, read = asyncio.run(run())
        assert where == "unix"
        assert written.counted == 0 and [r.created for r in written.feedback] == [False, True]
        assert [sorted(r) for r in read] == [sorted(pg_store.user_feedback(u)) for u in (1, 2)]
        assert [len(r) for r in read] == [2, 2]
        reference = open_store(f"sqlite:///{tmp_path / 'ref.db'}")
        reference.create_schema(ARMS)
        reference.write_batch(*BATCH_1)
        reference.write_batch(*BATCH_2)
        assert stored(store.url.render_as_string(False)) == stored(
            reference.url.render_as_string(False))
        reference.dispose()
    finally:
        store.dispose()


def errors_behind_a_lock(lock: str, calls: dict[str, Any]) -> tuple[Store, dict[str, Any]]:
    """A new PostgreSQL store (time-out 1 s) and what each of ``calls`` (name: a function of
    the store) raised while another session held ``lock`` (a ``LOCK TABLE`` statement); None
    for a call still waiting after 60 s (the lock is then released to let it end).
    """
    store = open_store(postgres().create_database(), timeout_s=1.0)
    store.create_schema(ARMS)
    holder = psycopg.connect(store.url.set(drivername="postgresql").render_as_string(False))
    holder.execute(lock)
    errors: dict[str, Any] = {}
    try:
        with ThreadPoolExecutor(max_workers=len(calls)) as pool:
            futures = {name: pool.submit(call, store) for name, call in calls.items()}
            for name, future in futures.items():
                try:
                    errors[name] = future.exception(timeout=60)
                except TimeoutError:  # the old code waited for the holder
                    errors[name] = None
                    holder.rollback()
    finally:
        holder.rollback()
        holder.close()
    return store, errors


def test_a_request_write_outside_the_batch_writer_waits_no_longer_than_the_time_out() -> None:
    # PUT /users/{id}/preferences and POST /admin/items write through the store's engine, not
    # the batch writer: behind a locked table they waited for as long as the lock was held
    # (200 after 40 s, found by attack), holding log_head, so every event waited too. Now each
    # statement is cancelled past the store's time-out (a 503), and nothing is left behind.
    from serving.store.tables import items, preferences

    store, errors = errors_behind_a_lock("LOCK TABLE preferences, items IN EXCLUSIVE MODE", {
        "preferences": lambda store: store.set_preferences(1, ["Drama"], 1.0),
        "item": lambda store: store.add_item(90_001, "New", ["Drama"], 2026, 1.0)})
    # The two contend for log_head too: the one that waited there for the other's cancellation
    # may find its time spent before its insert (CI's fresh clone, load 5+), so its 503 comes
    # from the client's deadline instead of the server's cancellation. Both name the time-out.
    for name, error in errors.items():
        assert isinstance(error, StoreUnavailableError), (name, error)
        assert ("statement timeout" in error.message
                or "no answer from the store within 1 s" in error.message), error.message
    url = store.url.render_as_string(False)
    assert table(url, preferences) == [] and table(url, items) == []
    # The lock released, both go through (log_head was not left held).
    assert store.set_preferences(1, ["Drama"], 2.0)[0] > 0
    assert store.add_item(90_001, "New", ["Drama"], 2026, 2.0).item_id == 90_001
    assert [r["genres"] for r in table(url, preferences)] == [["Drama"]]
    store.dispose()


def test_a_request_writes_statements_share_one_time_out() -> None:
    # Each statement of a request's write waits at most what is left of the store's time-out:
    # with a time-out per statement, a PUT of preferences waiting 8 s for log_head and 8 s for
    # its table answered 200 after 16 s (found by attack).
    import sqlalchemy as sa

    from serving.store.tables import preferences

    store = open_store(postgres().create_database(), timeout_s=1.0)
    store.create_schema(ARMS)
    timeouts: list[int] = []
    holder = psycopg.connect(store.url.set(drivername="postgresql").render_as_string(False))
    holder.execute("SELECT * FROM log_head FOR UPDATE")  # held 0.5 s from the first statement
    # Started once the write's deadline is set (at its first statement): started before, the
    # release could come less than 0.5 s into the write's second, which then had 501 ms left
    # (seen at load 12).
    release = threading.Timer(0.5, holder.rollback)

    @sa.event.listens_for(store.write_engine, "before_cursor_execute")
    def record(conn: Any, cursor: Any, statement: str, *args: Any) -> None:
        if statement.startswith("SET LOCAL statement_timeout"):
            timeouts.append(int(statement.rsplit(" ", 1)[1]))
            if len(timeouts) == 1:
                release.start()

    try:
        outcome: Any = store.set_preferences(1, ["Drama"], 1.0)
    except StoreUnavailableError as exc:  # only if the release came 1 s late (a loaded host)
        outcome = exc
    finally:
        if release.ident is not None:
            release.join()
        holder.rollback()
        holder.close()
    if isinstance(outcome, StoreUnavailableError):
        assert len(timeouts) >= 1
    else:
        # The second statement had at most what the first left: 1,000 ms less >= 500 waited.
        assert len(timeouts) == 2 and timeouts[0] <= 1000 and timeouts[1] <= 500, timeouts
        url = store.url.render_as_string(False)
        assert [r["genres"] for r in table(url, preferences)] == [["Drama"]]
    store.dispose()


def test_the_stores_own_writes_wait_for_a_lock_no_longer_than_the_time_out() -> None:
    # The writes of a start (create_schema, the version rows), the settle sweep and the
    # commands wait on the server's locks: a service started while log_head was locked waited
    # silently for as long as the lock lasted, past startup_timeout_s (found by re-attack).
    # lock_timeout bounds each wait: a 503, which the start retries until its deadline.
    store, errors = errors_behind_a_lock(
        "LOCK TABLE log_head, arm_state IN ACCESS EXCLUSIVE MODE",
        {"create_schema": lambda store: store.create_schema(ARMS)})
    error = errors["create_schema"]
    assert isinstance(error, StoreUnavailableError), error
    assert "lock timeout" in error.message, error.message
    store.create_schema(ARMS)  # the lock released: as before
    store.dispose()


def test_a_database_that_stops_answering_is_a_503_and_writes_nothing() -> None:
    # Another session holds locks the batch needs (as a long migration would): past the
    # store's time-out the write and the read fail with a 503 instead of holding their
    # requests forever; the aborted write leaves nothing behind, and both recover.
    import psycopg

    from serving.store.postgresql import AsyncBatchWriter, GroupReader

    store = open_store(postgres().create_database(), timeout_s=2.0)
    store.create_schema(ARMS)
    holder = psycopg.connect(store.url.set(drivername="postgresql").render_as_string(False))
    holder.execute("SELECT * FROM arm_state WHERE arm = 'svd' FOR UPDATE")
    holder.execute("LOCK TABLE feedback IN ACCESS EXCLUSIVE MODE")

    async def run() -> list[Any]:
        writer, reader = AsyncBatchWriter(store), GroupReader(store)
        reader.start()
        out: list[Any] = []
        try:
            for attempt in (lambda: writer.write_batch([decision("e1", 1, "svd", [1], 1.0)], []),
                            lambda: reader.read("user_feedback", 1)):
                try:
                    out.append(await attempt())
                except StoreUnavailableError as exc:
                    out.append(exc)
            holder.rollback()
            out.append(await writer.write_batch([decision("e2", 1, "svd", [1], 2.0)], []))
            out.append(await reader.read("user_feedback", 1))
        finally:
            await reader.aclose()
            await writer.aclose()
        return out

    try:
        written, read, later, read_later = asyncio.run(run())
    finally:
        holder.close()
    for error in (written, read):
        assert isinstance(error, StoreUnavailableError), error
        assert "no answer from the store within 2 s" in error.message
    assert later.feedback == [] and read_later == []
    url = store.url.render_as_string(False)
    assert [r["event_id"] for r in table(url, decisions)] == ["e2"]
    assert {r["arm"]: r["pulls"] for r in table(url, arm_state)} == {"svd": 1, "popularity": 0}
    store.dispose()


def test_a_server_that_accepts_but_never_answers_a_connection_is_a_503() -> None:
    # Found by attack: with PostgreSQL frozen while the batch writer had to reconnect, events
    # that need no read (a view, a dwell) were answered 500: the connection's time-out was
    # raised as a bare TimeoutError. A listening socket that never answers stands in for the
    # frozen server (the kernel completes the handshake; libpq then waits for the server):
    # the store's time-out (0.5 s) ends the wait before libpq's connect_timeout (1 s) would.
    import socket

    from serving.store.postgresql import AsyncBatchWriter, GroupReader, PostgreSQLStore

    with socket.socket() as silent:
        silent.bind(("127.0.0.1", 0))
        silent.listen(8)
        port = silent.getsockname()[1]
        store = PostgreSQLStore(f"postgresql+psycopg://recbandits@127.0.0.1:{port}/db",
                                timeout_s=0.5)

        async def run() -> list[BaseException]:
            writer, reader = AsyncBatchWriter(store), GroupReader(store)
            reader.start()
            out: list[BaseException] = []
            try:
                for attempt in (lambda: writer.write_batch([decision("e1", 1, "svd", [1], 1.0)],
                                                           []),
                                lambda: reader.read("user_feedback", 1)):
                    try:
                        await attempt()
                    except Exception as exc:
                        out.append(exc)
            finally:
                await reader.aclose()
                await writer.aclose()
            return out

        errors = asyncio.run(run())
        store.dispose()
    assert [type(e) for e in errors] == [StoreUnavailableError] * 2, errors
    assert all("no answer from the store within 0.5 s" in e.message for e in errors)  # type: ignore[attr-defined]


def test_a_feedback_batch_that_times_out_waiting_for_a_lock_never_commits() -> None:
    # The feedback batch is one pipeline (BEGIN ... COMMIT) sent at once: when its wait for
    # log_head's lock outlasts the store's time-out, the statement is cancelled in the server,
    # so the COMMIT queued behind it cannot run once the lock is let go: nothing of the batch
    # (its decisions, feedback, outcomes, ratings, pulls) is written, and the writer recovers.
    import psycopg

    from serving.store.postgresql import AsyncBatchWriter

    store = open_store(postgres().create_database(), timeout_s=1.0)
    store.create_schema(ARMS)
    url = store.url.render_as_string(False)
    holder = psycopg.connect(store.url.set(drivername="postgresql").render_as_string(False))
    holder.execute("SELECT * FROM log_head FOR UPDATE")

    async def run() -> list[Any]:
        writer = AsyncBatchWriter(store)
        out: list[Any] = []
        try:
            try:
                out.append(await writer.write_batch(*BATCH_1))
            except StoreUnavailableError as exc:
                out.append(exc)
            await asyncio.to_thread(holder.rollback)
            await asyncio.sleep(0.3)  # a COMMIT left queued would have run by now
            out.append((stored(url), table(url, outcomes_table)))
            out.append(await writer.write_batch(*BATCH_1))
        finally:
            await writer.aclose()
        return out

    try:
        error, after_timeout, later = asyncio.run(run())
    finally:
        holder.close()
    assert isinstance(error, StoreUnavailableError), error
    assert "no answer from the store within 1 s" in error.message
    assert after_timeout == ({"decisions": [], "feedback": [], "ratings": [],
                              "arm_state": [("popularity", 0), ("svd", 0)]}, [])
    assert later.counted == 2 and len(stored(url)["feedback"]) == 5
    store.dispose()


def test_reader_rejects_unknown_kinds_and_refuses_when_stopped(pg_store: Store) -> None:
    from serving.store.postgresql import GroupReader

    async def run() -> None:
        reader = GroupReader(pg_store)
        with pytest.raises(StoreUnavailableError):
            await reader.read("decision", "e1")
        reader.start()
        with pytest.raises(ValueError, match="kind must be one of"):
            await reader.read("count_rows")
        await reader.aclose()

    asyncio.run(run())


# ---------------------------------------------------------------------------- SQLite locks
def sqlite_store(tmp_path: Path, timeout_s: float) -> Store:
    store = open_store(f"sqlite:///{tmp_path / 'store.db'}", timeout_s=timeout_s)
    store.create_schema(ARMS)
    return store


def hold_write_lock(store: Store) -> sqlite3.Connection:
    holder = sqlite3.connect(store.url.database, isolation_level=None)
    holder.execute("BEGIN EXCLUSIVE")
    return holder


def test_a_bad_write_in_an_inline_batch_is_retried_alone_once(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    # The event loop's attempt at the batch fails for one write (a duplicate event id) and
    # rolls back; each write is then committed alone, once, in a thread. The batch neither
    # runs a second time whole nor counts as having waited for the lock.
    store = sqlite_store(tmp_path, timeout_s=5.0)
    store.write_batch([decision("e0", 1, "svd", [1], 1.0)], [])
    calls: list[tuple[list[str], bool]] = []
    write_batch = store.write_batch

    def spied(rows: list[dict[str, Any]], feedback: list[Any], *, wait: bool = True) -> Any:
        calls.append(([r["event_id"] for r in rows], wait))
        return write_batch(rows, feedback, wait=wait)

    monkeypatch.setattr(store, "write_batch", spied)
    writer = GroupCommitWriter(store, batch_max=64)

    async def run() -> list[Any]:
        writer.start(asyncio.get_running_loop())
        outcomes = await asyncio.gather(
            *(writer.write_decision(decision(e, 2, "svd", [1], 2.0)) for e in ("e1", "e0", "e2")),
            return_exceptions=True)
        await writer.aclose()
        return outcomes

    first, duplicate, last = asyncio.run(run())
    assert first is None and last is None
    assert isinstance(duplicate, sqlite3.IntegrityError)
    assert calls == [(["e1", "e0", "e2"], False), (["e1"], True), (["e0"], True), (["e2"], True)]
    assert writer.waited_batches == 0
    assert [r["event_id"] for r in table(store.url.render_as_string(False), decisions)] == [
        "e0", "e1", "e2"]
    store.dispose()


@pytest.mark.parametrize("released", [True, False])
def test_inline_writer_waits_for_the_lock_off_the_event_loop(tmp_path: Path,
                                                             released: bool) -> None:
    # Released: the write lands once the lock is free. Not released: after the time-out the
    # batch fails with a 503 having written nothing. Either way the loop ran meanwhile.
    store = sqlite_store(tmp_path, timeout_s=30.0 if released else 2.0)
    writer = GroupCommitWriter(store, batch_max=64)
    holder = hold_write_lock(store)

    async def run() -> tuple[int, BaseException | None]:
        writer.start(asyncio.get_running_loop())
        ticks = 0
        writes = [asyncio.ensure_future(writer.write_decision(
            decision(f"e{i}", 1, "svd", [1], float(i)))) for i in range(3)]
        while writer.waited_batches == 0 and not all(w.done() for w in writes):
            await asyncio.sleep(0.001)
        assert writer.waited_batches == 1, "the batch waited for the lock in the event loop"
        # The event loop keeps turning while the batch waits for the lock.
        for _ in range(5):
            await asyncio.sleep(0.001)
            ticks += not any(w.done() for w in writes)
        later = asyncio.ensure_future(writer.write_decision(decision("e9", 1, "svd", [1], 9.0)))
        await asyncio.sleep(0.01)
        assert not any(w.done() for w in [*writes, later])
        if released:
            holder.rollback()
        results = await asyncio.gather(*writes, later, return_exceptions=True)
        await writer.aclose()
        errors = [r for r in results if isinstance(r, BaseException)]
        return ticks, errors[0] if errors else None

    try:
        ticks, error = asyncio.run(run())
    finally:
        holder.close()
    assert ticks == 5
    url = store.url.render_as_string(False)
    if released:
        assert error is None
        # In arrival order: the batch that waited, then the one queued behind it.
        assert [r["event_id"] for r in table(url, decisions)] == ["e0", "e1", "e2", "e9"]
        assert writer.batches == 2
    else:
        assert isinstance(error, StoreUnavailableError) and "locked" in error.message
        assert table(url, decisions) == []
        assert {r["arm"]: r["pulls"] for r in table(url, arm_state)} == {"svd": 0,
                                                                       "popularity": 0}
    store.dispose()


@pytest.mark.parametrize("store_kind", ["NORMAL", "FULL", "postgresql"])  # inline, thread, async
def test_writes_queued_behind_a_batch_that_timed_out_fail_with_it(
        tmp_path: Path, store_kind: str, monkeypatch: pytest.MonkeyPatch) -> None:
    """Finding 4: while another connection holds the store's lock, the writes queued behind a
    batch that times out, having waited half the time-out already, fail with it (one wait for
    all), so no write waits much more than ``store_timeout_s`` (at most 1.5 of it).

    The old writer (fa0c8ed) tried the writes that queued during a failing batch's wait as a
    new batch, which waited the whole time-out again: their 503 came after up to twice the
    time-out (3.5-4.0 s with 2 s), and the store was waited for twice.
    """
    import psycopg

    from serving.store.postgresql import AsyncBatchWriter

    timeout = 4.0
    waits: list[int] = []  # one entry per attempt allowed to wait for the lock
    if store_kind == "postgresql":
        store = open_store(postgres().create_database(), timeout_s=timeout)
        store.create_schema(ARMS)
        async_write = AsyncBatchWriter.write_batch

        async def spied_async(self: Any, rows: list[dict[str, Any]], feedback: list[Any]) -> Any:
            waits.append(len(rows))
            return await async_write(self, rows, feedback)

        monkeypatch.setattr(AsyncBatchWriter, "write_batch", spied_async)
        # Another session holds the row every decision of arm svd updates (its pulls).
        holder: Any = psycopg.connect(
            store.url.set(drivername="postgresql").render_as_string(False))
        holder.execute("SELECT * FROM arm_state WHERE arm = 'svd' FOR UPDATE")
    else:
        store = open_store(f"sqlite:///{tmp_path / 'store.db'}", timeout_s=timeout,
                           sqlite_synchronous=store_kind)
        store.create_schema(ARMS)
        write_batch = store.write_batch

        def spied(rows: list[dict[str, Any]], feedback: list[Any], *, wait: bool = True) -> Any:
            if wait:
                waits.append(len(rows))
            return write_batch(rows, feedback, wait=wait)

        monkeypatch.setattr(store, "write_batch", spied)
        holder = hold_write_lock(store)
    writer = GroupCommitWriter(store, batch_max=64)

    async def one(i: int) -> tuple[float, BaseException | None]:
        start = time.monotonic()
        try:
            await writer.write_decision(decision(f"e{i}", 1, "svd", [1], float(i)))
        except StoreUnavailableError as exc:
            return time.monotonic() - start, exc
        return time.monotonic() - start, None

    async def run() -> tuple[list[tuple[float, BaseException | None]], list[int]]:
        writer.start(asyncio.get_running_loop())
        first = asyncio.ensure_future(one(0))
        while not waits:  # the first batch is waiting for the lock
            await asyncio.sleep(0.001)
        queued = []
        # Eight more, queued over the first 16% of its wait: each must have waited half the
        # time-out when the batch fails (at 32%, loop stalls at load 12 left 0.7 s of margin).
        for i in range(1, 9):
            await asyncio.sleep(0.02 * timeout)
            queued.append(asyncio.ensure_future(one(i)))
        results = await asyncio.gather(first, *queued)
        waited = list(waits)
        holder.rollback()  # the lock is free again: the next write lands normally
        results.append(await one(9))
        await writer.aclose()
        return results, waited

    try:
        results, waited = asyncio.run(run())
    finally:
        holder.close()
    *locked_out, after = results
    assert all(isinstance(error, StoreUnavailableError) for _, error in locked_out), locked_out
    assert len({id(error) for _, error in locked_out}) == 1, "one outage, one error"
    # The store was waited for once for all nine; the writes queued during that wait were
    # failed with it (the old writer waited a second time for them).
    assert waited == [1], waited
    # Generous bound (the old writer's earliest queued writes took ~1.9x the time-out).
    assert max(latency for latency, _ in locked_out) < 1.5 * timeout, locked_out
    assert after[1] is None
    assert [r["event_id"] for r in table(store.url.render_as_string(False), decisions)] == [
        "e9"]
    store.dispose()


def test_health_answers_while_a_recommendation_waits_for_the_lock(
        tmp_path: Path, serving_catalog: Dataset, serving_arms: dict) -> None:
    settings = Settings(state_dir=tmp_path / "state", arms=["svd", "popularity"], seed=3,
                        store_timeout_s=60.0)
    with TestClient(create_app(settings, catalog=serving_catalog, arms=serving_arms)) as client:
        writer = client.app.state.service.writer
        assert writer.mode == "inline"
        holder = hold_write_lock(writer.store)
        try:
            with ThreadPoolExecutor(1) as pool:
                pending = pool.submit(client.get, "/recommendations",
                                      params={"user_id": 1, "k": 5})
                while writer.waited_batches == 0 and not pending.done():
                    threading.Event().wait(0.005)
                # A blocked loop would answer only after the 60 s time-out, once the
                # recommendation had failed.
                assert client.get("/health").status_code == 200
                assert client.get("/policy").status_code == 200
                assert not pending.done()
                holder.rollback()
                response = pending.result()
        finally:
            holder.close()
        assert response.status_code == 200, response.text
        event_id = response.json()["event_id"]
    assert [r["event_id"] for r in table(settings.resolved_db_url(), decisions)] == [event_id]


# ---------------------------------------------------------------------------- checkpoints
def wal_frames_written(store: Store) -> int:
    """Frames in the WAL file (valid while the WAL has not restarted since it was created)."""
    page_size = sqlite3.connect(store.url.database).execute("PRAGMA page_size").fetchone()[0]
    return (os.path.getsize(f"{store.url.database}-wal") - 32) // (page_size + 24)


def test_commits_never_checkpoint_and_the_checkpoint_job_does(tmp_path: Path) -> None:
    store = sqlite_store(tmp_path, timeout_s=5.0)
    store.checkpoint()  # the schema's pages: the WAL starts over with the first batch
    for b in range(40):  # ~12k rows, well past SQLite's 1000-page automatic checkpoint
        rows = [decision(f"{b:03d}-{i:04d}", i, "svd", list(range(20)), float(i))
                for i in range(300)]
        store.write_batch(rows, [], wait=False)
    frames = wal_frames_written(store)
    # An automatic checkpoint would have let the WAL restart at about 1000 pages.
    assert frames > 2000
    assert store.checkpoint() == (0, frames, frames)
    # Fully checkpointed: the next commit starts the WAL over.
    store.write_batch([decision("last", 1, "svd", [1], 1.0)], [], wait=False)
    busy, log, done = store.checkpoint()
    assert busy == 0 and 0 < log < 10 and done == log
    assert len(table(store.url.render_as_string(False), decisions)) == 12_001
    store.dispose()


@pytest.mark.parametrize("synchronous", ["NORMAL", "FULL"])
def test_the_writer_runs_the_checkpoint_job_for_an_sqlite_store(tmp_path: Path,
                                                                synchronous: str) -> None:
    # NORMAL commits inline on the event loop, FULL in the writer thread; the store's write
    # connection never checkpoints by itself, so in both modes the writer's job must.
    store = open_store(f"sqlite:///{tmp_path / 'store.db'}", timeout_s=5.0,
                  sqlite_synchronous=synchronous)
    store.create_schema(ARMS)
    store.checkpoint()  # the schema's pages
    store.checkpoint_interval_s = 0.01
    writer = GroupCommitWriter(store, batch_max=64)
    assert writer.mode == ("inline" if synchronous == "NORMAL" else "thread")
    assert "checkpoint" in writer.jobs
    runs: list[tuple[float, tuple[int, int, int]]] = []  # (started at, SQLite's answer)

    def recorded() -> tuple[int, int, int] | None:
        started = time.monotonic()
        answer = store.checkpoint()
        runs.append((started, answer))
        return answer

    writer.jobs["checkpoint"].fn = recorded
    seen: list[tuple[int, int, int]] = []

    async def run() -> None:
        writer.start(asyncio.get_running_loop())
        for i in range(3):
            await writer.write_decision(decision(f"e{i}", 1, "svd", [1], 1.0))
            committed = time.monotonic()
            deadline = committed + 10.0
            # The first checkpoint that started after this commit.
            while not any(started > committed for started, _ in runs):
                assert time.monotonic() < deadline, "no checkpoint within 10 s of a commit"
                await asyncio.sleep(0.002)
            seen.append(next(answer for started, answer in runs if started > committed))
        await writer.aclose()

    asyncio.run(run())
    assert all(busy == 0 and done == log for busy, log, done in seen), seen
    # Every commit was followed by a checkpoint that emptied the WAL: it never grows.
    assert max(log for _, log, _ in seen) < 10
    assert len(table(store.url.render_as_string(False), decisions)) == 3
    store.dispose()


def test_a_large_wal_is_made_to_start_over_once_readers_leave(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    # Under load a reader is almost always inside the WAL, so a PASSIVE checkpoint never
    # copies all of it and the WAL never starts over (it grew past 300 MB in a 2-worker
    # benchmark). Past the threshold the job's RESTART checkpoint, holding the writers' lock so
    # no commit lands meanwhile, copies everything the readers allow; it does not wait for a
    # reader (the writers would wait with it), so a reader inside the WAL keeps it until a
    # later call, after which the next commit starts it over.
    from serving.store import sqlite as sqlite_backend

    monkeypatch.setattr(sqlite_backend, "SQLITE_WAL_RESTART_FRAMES", 50)
    store = sqlite_store(tmp_path, timeout_s=5.0)

    def write(tag: str) -> None:
        store.write_batch([decision(f"{tag}-{i:04d}", i, "svd", list(range(20)), float(i))
                           for i in range(300)], [], wait=False)

    write("a")
    reader = sqlite3.connect(store.url.database, isolation_level=None,
                             check_same_thread=False)
    reader.execute("BEGIN")
    reader.execute("SELECT count(*) FROM decisions").fetchone()  # a snapshot inside the WAL
    write("b")
    write("c")
    busy, log, done = store.checkpoint()
    assert log > 50 and 0 < done < log  # nothing past the reader's snapshot is copied
    reader.rollback()
    reader.close()
    busy, log_again, done = store.checkpoint()
    assert busy == 0 and log_again == log and done == log  # all copied once the reader left
    write("d")
    busy, log_after, done = store.checkpoint()
    assert 0 < log_after < log and done == log_after  # the WAL started over
    assert len(table(store.url.render_as_string(False), decisions)) == 1200
    store.dispose()


def store_past_wal_restart(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Store:
    """An SQLite store whose WAL holds 1,200 decisions, past a RESTART threshold of 50 frames."""
    from serving.store import sqlite as sqlite_backend

    monkeypatch.setattr(sqlite_backend, "SQLITE_WAL_RESTART_FRAMES", 50)
    store = sqlite_store(tmp_path, timeout_s=5.0)
    for b in range(4):
        store.write_batch([decision(f"{b}-{i:04d}", i, "svd", list(range(20)), float(i))
                           for i in range(300)], [], wait=False)
    return store


def wal_checkpoint_sequence(store: Store) -> int:
    """The WAL header's checkpoint sequence number: +1 each time the WAL starts over."""
    with open(f"{store.url.database}-wal", "rb") as wal:
        return int.from_bytes(wal.read(16)[12:16], "big")


def test_the_wal_starts_over_in_the_checkpoint_job_not_in_the_next_commit(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    # The first commit into a restarted WAL fsyncs its header; the job makes that commit
    # itself (under the writers' lock), so the serving writer's next commit does not.
    store = store_past_wal_restart(tmp_path, monkeypatch)
    before = wal_checkpoint_sequence(store)
    busy, log, done = store.checkpoint()
    assert busy == 0 and log > 50 and done == log
    assert wal_checkpoint_sequence(store) == before + 1  # restarted, before any other commit
    assert not store.writers_lock.held
    busy, log_after, done = store.checkpoint()
    assert (busy, log_after, done) == (0, 1, 1)  # only the job's one-page commit is in it
    store.write_batch([decision("next", 1, "svd", [1], 1.0)], [], wait=False)
    assert wal_checkpoint_sequence(store) == before + 1
    assert len(table(store.url.render_as_string(False), decisions)) == 1201
    with sqlite3.connect(store.url.database) as conn:  # the job's write changed nothing
        assert conn.execute("PRAGMA user_version").fetchone()[0] == 0
        assert conn.execute("PRAGMA integrity_check").fetchone()[0] == "ok"
    store.dispose()


def test_the_restart_checkpoint_syncs_the_database_file_before_taking_the_writers_lock(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    # Under load no PASSIVE pass syncs the database file, so the RESTART (which holds the
    # writers' lock: every commit waits) synced every page copied since the last one. The job
    # syncs the file first, outside the lock, through a descriptor SQLite has open on it.
    store = store_past_wal_restart(tmp_path, monkeypatch)
    database = os.stat(store.url.database)
    real_fsync = os.fsync
    synced: list[tuple[bool, int]] = []  # (writers' lock held, WAL restarts so far) per call

    def recording_fsync(fd: int) -> None:
        found = os.fstat(fd)
        if (found.st_dev, found.st_ino) == (database.st_dev, database.st_ino):
            synced.append((store.writers_lock.held, wal_checkpoint_sequence(store)))
        real_fsync(fd)

    monkeypatch.setattr(os, "fsync", recording_fsync)
    before = wal_checkpoint_sequence(store)
    busy, log, done = store.checkpoint()
    assert busy == 0 and log > 50 and done == log
    assert wal_checkpoint_sequence(store) == before + 1  # the RESTART ran, then the WAL over
    assert synced == [(False, before)]  # once, before the RESTART, not holding the lock
    assert len(table(store.url.render_as_string(False), decisions)) == 1200
    store.dispose()


@pytest.mark.skipif(not os.path.exists("/proc/locks"), reason="needs Linux's /proc/locks")
def test_syncing_the_database_file_keeps_sqlite_s_locks_on_it(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    # A connection in WAL mode holds a shared POSIX lock on the database file while it is
    # open; closing ANY descriptor of the file in the process would drop it (and let another
    # process's last connection delete the WAL under it). The sync opens and closes none.
    from serving.store import sqlite as sqlite_backend

    monkeypatch.setattr(sqlite_backend, "SQLITE_WAL_RESTART_FRAMES", 50)
    store = sqlite_store(tmp_path, timeout_s=5.0)
    reader = sqlite3.connect(store.url.database, isolation_level=None, check_same_thread=False)
    reader.execute("SELECT count(*) FROM decisions").fetchone()  # open, in WAL mode
    inode = os.stat(store.url.database).st_ino

    def our_locks() -> list[str]:
        # Without each line's ordinal, which other processes' locks shift (found flaky in CI,
        # "121: POSIX ..." against "120: POSIX ...", with tests in two processes).
        with open("/proc/locks") as locks:
            return [line.partition(":")[2] for line in locks
                    if f":{inode} " in line and f" {os.getpid()} " in line]

    held = our_locks()
    assert held  # SQLite's shared lock on the database file
    for b in range(3):
        store.write_batch([decision(f"{b}-{i:04d}", i, "svd", list(range(20)), float(i))
                           for i in range(300)], [], wait=False)
        assert store._sync_database_file()
        store.checkpoint()
        assert our_locks() == held
    reader.close()
    store.dispose()


def test_without_a_listing_of_descriptors_the_restart_syncs_as_before(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    from serving.store import sqlite as sqlite_backend

    monkeypatch.setattr(sqlite_backend, "SQLITE_WAL_RESTART_FRAMES", 50)
    monkeypatch.setattr(sqlite_backend, "_OPEN_FDS_DIRS", (str(tmp_path / "no-such-dir"),))
    store = sqlite_store(tmp_path, timeout_s=5.0)
    for b in range(4):
        store.write_batch([decision(f"{b}-{i:04d}", i, "svd", list(range(20)), float(i))
                           for i in range(300)], [], wait=False)
    assert not store._sync_database_file()
    before = wal_checkpoint_sequence(store)
    busy, log, done = store.checkpoint()
    assert busy == 0 and log > 50 and done == log
    assert wal_checkpoint_sequence(store) == before + 1
    assert len(table(store.url.render_as_string(False), decisions)) == 1200
    store.dispose()


def test_a_quiet_connection_is_kept_whatever_its_descriptor_number() -> None:
    # The pre-use check must tell "nothing to read" (keep the connection) from "the server
    # ended it" (reconnect) also for descriptors of 1024 and over, where select() fails.
    import resource
    import socket

    from serving.store.postgresql import _has_input

    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    if hard != resource.RLIM_INFINITY and hard < 2048:
        pytest.skip(f"the open-file hard limit ({hard}) allows no descriptor of 2000")
    resource.setrlimit(resource.RLIMIT_NOFILE, (max(soft, 2048), hard))
    ours, server = socket.socketpair()
    high = os.dup2(ours.fileno(), 2000)
    try:
        class Conn:
            def fileno(self) -> int:
                return high

        assert not _has_input(Conn())
        server.sendall(b"E")  # what a terminated backend's last message looks like to us
        assert _has_input(Conn())
    finally:
        os.close(high)
        ours.close()
        server.close()
        resource.setrlimit(resource.RLIMIT_NOFILE, (soft, hard))



class _Pgconn:
    transaction_status = psycopg.pq.TransactionStatus.ACTIVE


class _BusyConn:
    """A connection whose first answer comes only after the store's time-out, and whose second
    read (after the cancel) gives ``second``: an answer, or the server's QueryCanceled."""

    pgconn = _Pgconn()

    def __init__(self, second: object) -> None:
        self.second = second
        self.reads = 0
        self.cancels = 0

    async def cancel_safe(self, timeout: float) -> None:
        self.cancels += 1

    async def read(self, _conn: object) -> object:
        self.reads += 1
        if self.reads == 1:
            await asyncio.sleep(60)  # cancelled by the time-out below
        if isinstance(self.second, BaseException):
            raise self.second
        return self.second


@pytest.mark.parametrize("finished", [True, False])
def test_a_time_out_answers_what_the_server_finished_before_the_cancel(finished: bool) -> None:
    # Found by attack: the server committed a feedback batch just before the cancel arrived,
    # the read after the cancel returned its COMMIT, and the request was answered 503 anyway
    # (22 of 52 events answered 503 were stored). What the server finished is the answer; a
    # cancelled command is the time-out (503).
    from serving.store.postgresql import _answered

    conn = _BusyConn("COMMIT" if finished else psycopg.errors.QueryCanceled("canceling"))

    async def timed() -> object:
        async with asyncio.timeout(0.05):
            return await _answered(conn, conn.read)

    if finished:
        assert asyncio.run(timed()) == "COMMIT"
    else:
        with pytest.raises(TimeoutError):
            asyncio.run(timed())
    assert (conn.reads, conn.cancels) == (2, 1)


def test_dispose_closes_every_threads_request_path_connection(tmp_path: Path) -> None:
    """A pool's threads outlive the store, and their thread-local connections kept the
    database's files open after dispose (found by a CI run: a test process passed 1,024
    descriptors and select() failed)."""
    store = sqlite_store(tmp_path, timeout_s=5.0)

    def open_files() -> int:
        names = []
        for fd in os.listdir("/proc/self/fd"):
            with contextlib.suppress(OSError):
                names.append(os.readlink(f"/proc/self/fd/{fd}"))
        return sum(name.startswith(str(store.url.database)) for name in names)

    before = open_files()
    with ThreadPoolExecutor(4) as pool:
        barrier = threading.Barrier(4)

        def read(_: int) -> int:
            barrier.wait()  # four threads, four connections
            return len(store.user_feedback(1))

        assert list(pool.map(read, range(4))) == [0] * 4
        assert open_files() >= before + 4
        store.dispose()
        assert open_files() == 0


def test_a_group_read_queued_behind_a_hung_batch_times_out_from_its_own_arrival() -> None:
    """Found by attack: under a held lock a read queued behind the batch in flight waited for
    that batch's time-out, then a whole one of its own: 503s after 20 s with a 10 s time-out."""
    import time

    import psycopg

    from serving.store.errors import StoreUnavailableError
    from serving.store.postgresql import GroupReader

    url = postgres().create_database()
    store = open_store(url, timeout_s=3.0)
    store.create_schema(ARMS)
    locker = psycopg.connect(url.replace("postgresql+psycopg://", "postgresql://"))
    try:
        locker.execute("LOCK TABLE feedback IN ACCESS EXCLUSIVE MODE")  # held until rollback

        async def run() -> list[float]:
            reader = GroupReader(store)
            reader.start()
            took: list[float] = []

            async def timed(delay: float) -> None:
                await asyncio.sleep(delay)
                start = time.monotonic()
                with pytest.raises(StoreUnavailableError, match="within 3 s"):
                    await reader.read("user_feedback", 1)
                took.append(time.monotonic() - start)

            try:  # the second arrives while the first's batch hangs: the next batch
                await asyncio.gather(timed(0.0), timed(0.5))
            finally:
                await reader.aclose()
            return took

        took = asyncio.run(run())
    finally:
        locker.rollback()
        locker.close()
        store.dispose()
    # 3 s from its arrival (it was 2.5 + 3 = 5.5 s): a margin for a loaded machine.
    assert max(took) < 4.6, took
