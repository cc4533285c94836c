"""PostgreSQL's feedback batch: the log's commit order, what a batch sees, how it is planned.

- A batch that waits for ``log_head``'s row lock sees everything committed before it took the
  lock: a key stored by the batch before it is a duplicate, and a decision that batch decided
  is not decided again (the batch's statement after the lock takes a snapshot of its own).
- Seq order is commit order: while an earlier transaction holds seqs it has not committed, a
  later batch cannot commit, and a reader sees neither; once both are in, a reader that folded
  up to the earlier outcome gets the later one next (never one below it).
- The batch writer's results and the log it leaves equal SQLite's for the same writes
  (duplicates in and across batches, two outcome candidates of one decision, ratings).
- The cached plans follow the log's growth: a plan cached while the log was empty does not keep
  scanning the whole feedback table once it has grown (the store analyses the grown table).
"""

from __future__ import annotations

import asyncio
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import psycopg
import pytest
from test_serving_support import postgres

from serving.commands import rebuild_state
from serving.rules import DEFAULT_RULES
from serving.settings import Settings
from serving.store import FeedbackWrite, Store, open_store
from serving.store.postgresql import PostgreSQLStore

ARMS = ["svd", "popularity"]
T0 = 1_000_000.0


def _decision(event_id: str, arm: str = "svd") -> dict[str, Any]:
    return {"event_id": event_id, "created_at": T0, "user_id": 1, "context": {"k": 2},
            "arm": arm, "propensity": 0.5, "pmf": {"svd": 0.5, "popularity": 0.5},
            "slate": [10, 11, 20, 21], "policy_version": 1, "cold_start": False,
            "reward_deadline": T0 + 1800.0}


REWARDS = {"like": 1.0, "click": 1.0, "dislike": 0.0}
RATINGS = {"like": 5.0, "click": 4.0, "dislike": 1.0}


def _write(event_id: str, movie: int, kind: str, at: float, arm: str = "svd") -> FeedbackWrite:
    """A feedback write as the service makes it: it may decide its decision's outcome."""
    reward = REWARDS[kind]
    return FeedbackWrite(
        {"created_at": at, "user_id": 1, "movie_id": movie, "feedback_type": kind,
         "event_id": event_id, "event_key": event_id, "arm": arm, "reward": reward,
         "rating": RATINGS[kind], "counted": False, "note": "already decided"},
        {"event_id": event_id, "arm": arm, "reward": reward}, f"reward {reward:g} to {arm}",
        precedence=DEFAULT_RULES[kind].precedence, excludes=DEFAULT_RULES[kind].excludes)


@pytest.fixture
def pg_store() -> Iterator[PostgreSQLStore]:
    store = open_store(postgres().create_database())
    assert isinstance(store, PostgreSQLStore)
    store.create_schema(ARMS)
    yield store
    store.dispose()


def _rebuilt(store: Store) -> str:
    result = rebuild_state(Settings(db=store.url.render_as_string(hide_password=False)))
    assert result.exit_code == 0, str(result)
    return str(result)


def _hold_log(store: PostgreSQLStore, writes: list[FeedbackWrite]) -> Any:
    """A transaction that has written ``writes`` (its seqs taken, log_head locked), not
    committed: ``(connection context, result)``; leave the context to commit."""
    context = store.write_engine.begin()
    conn = context.__enter__()
    return context, store._write_rows(conn.connection.cursor(), [], writes)


async def _waits(task: asyncio.Task[Any]) -> bool:
    """Whether ``task`` is still waiting after a while (it can only be blocked: a slow
    machine cannot make a blocked task finish)."""
    done, _ = await asyncio.wait({task}, timeout=0.5)
    return not done


def test_a_batch_waiting_for_the_log_lock_sees_the_batch_before_it(
        pg_store: PostgreSQLStore) -> None:
    pg_store.write_batch([_decision("e1")], [])

    async def run() -> tuple[Any, Any]:
        writer = pg_store.async_writer()
        try:
            context, first = _hold_log(pg_store, [_write("e1", 10, "like", T0 + 1)])
            try:
                # The same key again, and a second candidate for the decision the held
                # transaction decides.
                task = asyncio.create_task(writer.write_batch([], [
                    _write("e1", 10, "like", T0 + 2), _write("e1", 11, "click", T0 + 3)]))
                assert await _waits(task)
            finally:
                context.__exit__(None, None, None)  # COMMIT: the batch takes the lock
            return first, await task
        finally:
            await writer.aclose()

    first, second = asyncio.run(run())
    stored = first.feedback[0].row
    assert first.counted == 1 and stored["counted"] is True
    assert [(r.created, r.row["counted"]) for r in second.feedback] == [(False, True),
                                                                         (True, False)]
    assert second.feedback[0].row["seq"] == stored["seq"] and second.counted == 0
    assert second.feedback[1].row["seq"] > stored["seq"]
    [outcome] = pg_store.outcomes_after(0)
    assert (outcome.event_id, outcome.reward) == ("e1", 1.0)
    assert "match: yes" in _rebuilt(pg_store)


def test_a_reader_never_folds_past_a_transaction_still_holding_seqs(
        pg_store: PostgreSQLStore) -> None:
    pg_store.write_batch([_decision("e1"), _decision("e2", "popularity")], [])

    async def run() -> list[Any]:
        writer = pg_store.async_writer()
        try:
            context, _ = _hold_log(pg_store, [_write("e1", 10, "like", T0 + 1)])
            try:
                # Begun later, so it would take the larger seq: it cannot commit first.
                task = asyncio.create_task(writer.write_batch([], [
                    _write("e2", 20, "click", T0 + 2, "popularity")]))
                assert await _waits(task)
                assert pg_store.outcomes_after(0) == []  # a reader in between sees neither
            finally:
                context.__exit__(None, None, None)
            seen = pg_store.outcomes_after(0)  # e1's, and e2's if its batch committed already
            await task
            return seen
        finally:
            await writer.aclose()

    seen = asyncio.run(run())
    assert seen[0].event_id == "e1"
    # Folded up to e1's outcome, a reader gets e2's next: nothing can appear below a seq seen.
    assert [o.event_id for o in pg_store.outcomes_after(seen[0].seq)] == ["e2"]
    assert [o.event_id for o in pg_store.outcomes_after(0)] == ["e1", "e2"]


BATCHES: list[tuple[list[dict[str, Any]], list[FeedbackWrite]]] = [
    ([_decision("e1"), _decision("e2", "popularity")], []),
    ([], [_write("e1", 10, "like", T0 + 1), _write("e1", 11, "click", T0 + 2),
          _write("e1", 10, "like", T0 + 3), _write("e2", 20, "dislike", T0 + 4, "popularity"),
          _write("e1", 11, "dislike", T0 + 5)]),
    ([_decision("e3")], [_write("e1", 10, "like", T0 + 6),
                         _write("e2", 21, "like", T0 + 7, "popularity"),
                         _write("e1", 11, "like", T0 + 8)]),
]
# (created, counted, rating) per write; 11 is rated twice in batch 2 (the later one wins).
EXPECTED = [
    [],
    [(True, True, 5.0), (True, False, 4.0), (False, True, 5.0), (True, True, 1.0),
     (True, False, 1.0)],
    [(False, True, 5.0), (True, False, 5.0), (True, False, 5.0)],
]


def _state(store: Store) -> tuple[Any, ...]:
    rows = store.log_rows()
    by_seq = {r[0]: (r[3], r[5]) for r in rows["feedback"]}  # seq -> (movie, type)
    outcomes = sorted((e, a, r, by_seq.get(f)) for _, e, a, r, f, _ in rows["outcomes"])
    # The two writers number the seqs of duplicates differently: the ratings without them.
    ratings = {k: v.rating for k, v in rows["ratings"].items()}
    return outcomes, ratings, rows["pulls"]


def test_the_batch_writer_leaves_the_log_sqlite_leaves(pg_store: PostgreSQLStore,
                                                       tmp_path: Path) -> None:
    sqlite = open_store(f"sqlite:///{tmp_path / 'store.db'}")
    sqlite.create_schema(ARMS)

    async def run() -> list[Any]:
        writer = pg_store.async_writer()
        try:
            return [await writer.write_batch(*batch) for batch in BATCHES]
        finally:
            await writer.aclose()

    try:
        expected = [sqlite.write_batch(*batch) for batch in BATCHES]
        got = asyncio.run(run())
        for results in (expected, got):
            assert [[(r.created, r.row["counted"], r.row["rating"]) for r in result.feedback]
                    for result in results] == EXPECTED
        assert [r.counted for r in got] == [r.counted for r in expected] == [0, 2, 0]
        assert _state(pg_store) == _state(sqlite)
        assert _state(pg_store)[0] == [("e1", "svd", 1.0, (10, "like")),
                                       ("e2", "popularity", 0.0, (20, "dislike"))]
        assert _state(pg_store)[1] == {(1, 10): 5.0, (1, 11): 5.0, (1, 20): 1.0,
                                       (1, 21): 5.0}
        assert "match: yes" in _rebuilt(pg_store)
    finally:
        sqlite.dispose()


def _prepare(conn: Any) -> Any:
    """Prepare and run a reader's ``user_id = ANY(...)`` statement on ``conn`` (after 5 runs
    PostgreSQL may keep a generic plan, costed for the table as it is now)."""
    conn.execute("PREPARE q(int8[]) AS SELECT movie_id FROM feedback WHERE user_id = ANY($1)")
    for _ in range(8):
        conn.execute("EXECUTE q(ARRAY[5, 7])")
    return conn


def _plan(conn: Any) -> str:
    return "\n".join(r[0] for r in conn.execute("EXPLAIN EXECUTE q(ARRAY[5, 7])").fetchall())


def test_the_cached_plans_follow_the_logs_growth(pg_store: PostgreSQLStore) -> None:
    url = pg_store.url.set(drivername="postgresql").render_as_string(hide_password=False)
    # A session keeping generic plans, as the group reader's and the batch writer's do.
    with psycopg.connect(url, autocommit=True) as reader:
        _prepare(reader)
        with psycopg.connect(url, autocommit=True) as writer:
            writer.execute(
                "INSERT INTO feedback (id, created_at, user_id, movie_id, feedback_type, "
                "event_key, counted, note, seq) SELECT g, 0, g % 1000, g, 'like', '', false, '', g "
                "FROM generate_series(1, 20000) AS g")
            writer.execute("SELECT pg_stat_force_next_flush()")  # its counts, now
            writer.execute("SELECT 1")
        assert "Seq Scan on feedback" in _plan(reader)  # the plan cached on the empty table
        assert pg_store.analyze_grown() == ["feedback"]
        assert "Seq Scan" not in _plan(reader) and "ix_feedback_user_time" in _plan(reader)
        assert pg_store.analyze_grown() == []  # not again before it doubles
    assert [job.name for job in pg_store.periodic_jobs()] == ["analyze"]
