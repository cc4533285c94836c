"""One batch, three writers, the same rows: PostgreSQL's two write paths and SQLite's.

A batch of decisions and feedback is written by :meth:`Store._write_rows` (Python, a statement
per row: SQLite's writer and PostgreSQL's synchronous ``write_batch``) or by PostgreSQL's
:class:`~serving.store.postgresql.AsyncBatchWriter` (``_WRITE_FEEDBACK``, one statement: the
service's path). Each implements the same rules: a key written twice in a batch or before is
one row (the first write's), the first rewarded feedback of a decision decides its outcome, a
keyed resend must repeat its event (else the batch writes nothing), and a (user, movie) keeps
the rating of the largest (precedence, time, position). Seeded random batches of every event
type, with duplicates, keyed resends, ties of time and precedence and multileaved decisions, go
through all three; the feedback, outcome, rating and ``arm_state`` rows and the answers must be
the same. The seqs themselves may differ (the
Python path numbers a batch's duplicates too, leaving gaps), so they are compared by their
order in the log.
"""

from __future__ import annotations

import asyncio
import random
from collections.abc import Callable, Iterator, Sequence
from pathlib import Path
from typing import Any

import pytest
from test_serving_support import postgres, read_table

from serving.multileave import item_arm
from serving.retries import RetryCheck, RetryConflictError
from serving.rules import EventType, RuleBook
from serving.store import FeedbackWrite, Store, open_store
from serving.store.tables import arm_state, feedback, feedback_ratings, outcomes
from serving.store.types import BatchResult

ARMS = ["svd", "popularity", "cooccurrence"]
RULES = RuleBook()
USERS, MOVIES = (1, 2), (10, 11, 12)
TIMES = (100.0, 100.0, 101.5, 102.0)  # ties on purpose: the rating's order falls to position
BATCHES, DECISIONS_EACH = 12, 2

Batch = tuple[list[dict[str, Any]], list[FeedbackWrite]]


def _decision(event_id: str, user: int, at: float, arm: str | None) -> dict[str, Any]:
    """A decision of ``arm``; None: multileaved from two arms (one outcome per arm)."""
    row = {"event_id": event_id, "created_at": at, "user_id": user, "context": {"k": 3},
           "arm": arm, "propensity": 0.5, "pmf": {arm: 0.5}, "slate": list(MOVIES),
           "policy_version": 1, "cold_start": False, "reward_deadline": at + 1800.0}
    if arm is None:
        pair = ARMS[:2]
        row.update(arm="+".join(pair), pmf={"+".join(pair): 0.5},
                   multileave={"arms": pair, "teams": [pair[m % 2] for m in MOVIES]})
    return row


def _value(kind: str, rng: random.Random) -> float | None:
    spec = RULES.rule(kind).value
    return None if spec is None else float(rng.choice([spec.low, spec.high,
                                                       (spec.low + spec.high) / 2]))


def _write(kind: str, user: int, movie: int, at: float, value: float | None,
           decision: dict[str, Any] | None, key: str | None, index: int) -> FeedbackWrite:
    """A write as :meth:`RecommendationService._feedback_write` builds it (decides at once)."""
    rule = RULES.rule(kind)
    reward = rule.reward_for(value)
    outcome, decided_note = None, ""
    arm = None if decision is None else item_arm(decision, movie)
    if decision is not None and reward is not None:
        outcome = {"event_id": decision["event_id"], "arm": arm, "reward": reward}
        decided_note = f"reward {reward:g} given to arm {arm}"
    event_id = None if decision is None else decision["event_id"]
    values = {"created_at": at, "user_id": user, "movie_id": movie, "feedback_type": kind,
              "value": value, "event_id": event_id,
              "event_key": (event_id or "") if key is None else key,
              "arm": arm, "reward": reward,
              "rating": rule.rating_for(value), "counted": False, "note": f"{kind} stored"}
    retry = (None if key is None else
             RetryCheck(index=index, idempotency_key=key, timestamp=True, event_id=True))
    return FeedbackWrite(values, outcome, decided_note, precedence=rule.precedence,
                         excludes=rule.excludes, retry=retry)


def batches(seed: int) -> list[Batch]:
    """Seeded batches: new decisions, then feedback of every type on this and earlier batches'
    decisions (or none), some keyed, some with a twin (another type of the same precedence at
    the same time on the same movie); resends of earlier writes, exact or (rarely) changed."""
    rng = random.Random(seed)
    made: list[dict[str, Any]] = []
    sent: list[tuple[Any, ...]] = []  # the arguments of earlier writes, to resend
    out: list[Batch] = []
    kinds = list(EventType)
    for b in range(BATCHES):
        new = [_decision(f"{seed}d{b}x{i}", rng.choice(USERS), 99.0 + b,
                         rng.choice([*ARMS, None]))
               for i in range(rng.randint(0, DECISIONS_EACH))]
        made += new
        writes = []
        for index in range(rng.randint(1, 9)):
            if sent and rng.random() < 0.3:
                args = list(rng.choice(sent))
                if args[6] is not None and rng.random() < 0.15:  # a keyed resend, changed
                    args[3] += 1.0
                writes.append(_write(*args, index))
                continue
            kind = rng.choice(kinds)
            decision = rng.choice(made) if made and rng.random() < 0.7 else None
            user = decision["user_id"] if decision else rng.choice(USERS)
            key = f"k{rng.randint(0, 5)}" if rng.random() < 0.4 else None
            args = (kind, user, rng.choice(MOVIES), rng.choice(TIMES) + b, _value(kind, rng),
                    decision, key)
            sent.append(args)
            writes.append(_write(*args, index))
            twins = [t for t in kinds if t != kind
                     and RULES.rule(t).precedence == RULES.rule(kind).precedence]
            if twins and rng.random() < 0.3:  # same pair, time and precedence: position decides
                twin = rng.choice(twins)
                args = (twin, *args[1:4], _value(twin, rng), *args[5:])
                sent.append(args)
                writes.append(_write(*args, index))
        out.append((new, writes))
    return out


def _answer(result: BatchResult | str) -> Any:
    if isinstance(result, str):
        return result
    return [(r.created, {k: v for k, v in r.row.items() if k not in ("id", "seq")})
            for r in result.feedback], result.counted


def _rows(url: str) -> dict[str, list[dict[str, Any]]]:
    """The tables a batch writes, every seq replaced by its place in the log (ids are seqs)."""
    tables = {t.name: read_table(url, t)
              for t in (feedback, outcomes, feedback_ratings, arm_state)}
    order = {s: n for n, s in enumerate(sorted(
        {r["seq"] for r in tables["feedback"]} | {r["seq"] for r in tables["outcomes"]}))}
    for row in tables["feedback"]:
        row["id"] = row["seq"] = order[row["seq"]]
    for row in tables["outcomes"]:
        row["seq"] = order[row["seq"]]
        row["feedback_seq"] = order.get(row["feedback_seq"], row["feedback_seq"])
    for row in tables["feedback_ratings"]:
        row["seq"] = order[row["seq"]]
    return {name: sorted(rows, key=repr) for name, rows in tables.items()}


def _run(write: Callable[[Batch], BatchResult], plan: Sequence[Batch]) -> list[Any]:
    answers = []
    for batch in plan:
        try:
            answers.append(_answer(write(batch)))
        except RetryConflictError as exc:  # nothing of the batch is written
            answers.append(f"conflict: {exc}")
    return answers


@pytest.fixture(scope="module")
def pg_urls() -> Iterator[Callable[[], str]]:
    server = postgres()
    yield server.create_database


def _store(url: str) -> Store:
    store = open_store(url)
    store.create_schema(ARMS)
    return store


@pytest.mark.parametrize("seed", range(6))
def test_both_postgresql_paths_and_sqlite_write_the_same_rows(
        seed: int, tmp_path: Path, pg_urls: Callable[[], str]) -> None:
    plan = batches(seed)
    kinds = {w.values["feedback_type"] for _, writes in plan for w in writes}
    assert kinds == set(EventType)  # every type, so a new one is compared too
    urls = {"sqlite": f"sqlite:///{tmp_path / 'store.db'}", "pg_sync": pg_urls(),
            "pg_async": pg_urls()}
    stores = {name: _store(url) for name, url in urls.items()}
    try:
        answers = {name: _run(lambda b, s=stores[name]: s.write_batch(*b), plan)
                   for name in ("sqlite", "pg_sync")}

        async def run_async() -> list[Any]:
            writer = stores["pg_async"].async_writer()
            try:
                out = []
                for batch in plan:
                    try:
                        out.append(_answer(await writer.write_batch(*batch)))
                    except RetryConflictError as exc:
                        out.append(f"conflict: {exc}")
                return out
            finally:
                await writer.aclose()

        answers["pg_async"] = asyncio.run(run_async())
    finally:
        for store in stores.values():
            store.dispose()
    rows = {name: _rows(url) for name, url in urls.items()}

    # The batches exercised what they are for: duplicates, decided outcomes, a conflict.
    assert any(not created for a in answers["sqlite"] if not isinstance(a, str)
               for created, _ in a[0])
    assert rows["sqlite"]["outcomes"] and rows["sqlite"]["feedback_ratings"]
    for name in ("pg_sync", "pg_async"):
        assert answers[name] == answers["sqlite"], name
        for table in ("feedback", "outcomes", "feedback_ratings", "arm_state"):
            assert rows[name][table] == rows["sqlite"][table], (name, table)


def test_the_batches_hold_conflicting_resends_and_in_batch_duplicates() -> None:
    # What the comparison above relies on, over its seeds.
    plans = [batches(seed) for seed in range(6)]
    in_batch = sum(len(writes) - len({w.key for w in writes})
                   for plan in plans for _, writes in plan)
    keyed = sum(w.retry is not None for plan in plans for _, writes in plan for w in writes)
    assert in_batch > 5 and keyed > 20
    # Multileaved decisions with rewarded feedback for both of their arms (two outcomes).
    arms_rewarded: dict[str, set[str]] = {}
    for plan in plans:
        for _, writes in plan:
            for w in writes:
                if w.outcome is not None:
                    arms_rewarded.setdefault(w.outcome["event_id"], set()).add(
                        w.outcome["arm"])
    assert sum(len(arms) == 2 for arms in arms_rewarded.values()) >= 3
