"""CPU cost of logging a decision on SQLite, and what each part of it costs.

A recommendation's decision row goes to ``SQLiteStore.write_batch`` in group commits (about five
decisions a commit at half the bare endpoint's rate, ``bench/serving_load.py``), and the
writer's jobs thread copies the WAL into the database (``SQLiteStore.checkpoint``). Measured in
this process, in CPU time (``time.process_time``), on the store's own code and schema:

* the write (``write_batch``: the insert, the ``arm_state`` increments, the commit) and the
  checkpoints, per decision, for the schema as it is and with one of the decisions' secondary
  indexes dropped (``ix_decisions_user_slate``: the user's latest decision showing a movie, for
  events without an ``event_id``; ``ix_decisions_open``: the settle sweep) or, for the first,
  replaced by the index without the slates' keys SQLite stores had before, alternated round by
  round; the ratio is each variant's total against the whole schema's of the same round;
* the ``arm_state`` increments of one batch (four arms): one ``executemany`` (the store's)
  against one statement per arm, in one transaction;
* the logged context's JSON text: serialised per request (``json_text`` of the dict) against
  kept per user view and ``k`` (``UserView.context_json``, a hit);
* the arm draw: ``draw_arm`` (``bisect_right``) against ``ndarray.searchsorted``;
* the search for the decision an event without ``event_id`` answers (the user's latest
  decision showing the movie), on a store of ``--attribution-decisions`` decisions: the store's
  query on the index holding the slates' keys against the old query (``json_each`` of every
  decision of the user) on the old index.

Usage::

    .venv/bin/python bench/decision_write_cost.py [--rows 20000] [--measure 10000]
        [--batch 5] [--repeat 3]

Prints ``cat /proc/loadavg`` at the start and the end, then ``name: value`` lines.
"""

from __future__ import annotations

import argparse
import bisect
import shutil
import sqlite3
import tempfile
import time
import timeit
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
from host import load_average

from serving.live import UserSignals
from serving.policy import draw_arm
from serving.store import open_store
from serving.store.base import json_text
from serving.user_view import UserView

ARMS = ("autoencoder", "popularity", "sequential", "svd")
#: Schema variants: SQL run on the fresh store before it is written to.
VARIANTS: dict[str, tuple[str, ...]] = {
    "schema": (),
    "no_user_slate_index": ("DROP INDEX ix_decisions_user_slate",),
    # The index SQLite stores had before the slate key joined it (still PostgreSQL's).
    "user_time_index_instead": ("DROP INDEX ix_decisions_user_slate", "CREATE INDEX "
                                "ix_decisions_user_time ON decisions (user_id, created_at)"),
    "no_open_index": ("DROP INDEX ix_decisions_open",),
}


def decision_rows(n: int, seed: int) -> list[dict[str, Any]]:
    """``n`` decision rows as the service hands them over (a LinTS decision: a 50-value
    context, the pmf and policy as cached JSON text, a 10-movie slate; 943 users).
    """
    rng = np.random.default_rng(seed)
    policy = json_text({"name": "LinTS", "params": {"alpha": 1.0, "lam": 1.0, "floor": 0.0}})
    rows = []
    for i in range(n):
        now = 1.7e9 + i * 0.001
        features = rng.random(50)
        features[rng.random(50) < 0.5] = 0.0
        rows.append({
            "event_id": f"{int(now * 1000):012x}{i:020x}", "created_at": now,
            "user_id": int(rng.integers(1, 944)),
            "context": {"feature_version": "user-v4", "features": features, "k": 10},
            "arm": ARMS[int(rng.integers(len(ARMS)))], "propensity": 0.25,
            "pmf": json_text(dict(zip(ARMS, rng.dirichlet(np.ones(len(ARMS))).tolist(),
                                      strict=True))),
            "slate": rng.integers(1, 1683, 10).tolist(), "policy": policy,
            "policy_version": 1, "cold_start": False, "reward_deadline": now + 3600.0,
            "shadow": None})
    return rows


def write_cost(variant: tuple[str, ...], rows: list[dict[str, Any]], fill: int, batch: int,
               checkpoint_every: int) -> tuple[float, float]:
    """CPU us a decision of ``write_batch`` and of the checkpoints, measured over the rows
    after the first ``fill`` (a table of that size), on a fresh store with ``variant`` run.
    """
    tmp = Path(tempfile.mkdtemp(prefix="decision-write-"))
    try:
        store = open_store(f"sqlite:///{tmp / 'log.db'}")
        store.create_schema(ARMS)
        conn = sqlite3.connect(tmp / "log.db", isolation_level=None)
        for sql in variant:
            conn.execute(sql)
        conn.close()
        write = ckpt = 0.0
        measured = 0
        for n, start in enumerate(range(0, len(rows), batch)):
            chunk = rows[start:start + batch]
            t0 = time.process_time()
            store.write_batch(chunk, [], wait=False)
            t1 = time.process_time()
            if n % checkpoint_every == 0:
                store.checkpoint()  # as the jobs thread does, between batches
            t2 = time.process_time()
            if start >= fill:
                write += t1 - t0
                ckpt += t2 - t1
                measured += len(chunk)
        store.dispose()
        return 1e6 * write / measured, 1e6 * ckpt / measured
    finally:
        shutil.rmtree(tmp, ignore_errors=True)


#: The attribution's search as SQLite stores ran it before the slate key joined the index.
OLD_ATTRIBUTION = (
    "SELECT event_id FROM decisions WHERE user_id = ? AND created_at >= ? AND created_at <= ? "
    "AND EXISTS (SELECT 1 FROM json_each(decisions.slate) WHERE value = ?) "
    "ORDER BY created_at DESC, event_id DESC LIMIT 1")


def attribution_cost(rows: list[dict[str, Any]], queries: int) -> dict[str, float]:
    """CPU us of finding the decision an event without ``event_id`` answers (the user's latest
    decision showing the movie), for a movie none of the user's slates held (every decision of
    the user in the window is looked at) and for a random movie: the store's query on its
    schema, and the old query on the old index, on a store of ``rows``.
    """
    tmp = Path(tempfile.mkdtemp(prefix="decision-attribution-"))
    out: dict[str, float] = {}
    try:
        for name, variant in (("slate_index", ()),
                              ("old_json_each", VARIANTS["user_time_index_instead"])):
            store = open_store(f"sqlite:///{tmp / f'{name}.db'}")
            store.create_schema(ARMS)
            conn = sqlite3.connect(tmp / f"{name}.db", isolation_level=None)
            for sql in variant:
                conn.execute(sql)
            for start in range(0, len(rows), 64):
                store.write_batch(rows[start:start + 64], [], wait=False)
            rng = np.random.default_rng(2)
            users = rng.integers(1, 944, queries).tolist()
            movies = rng.integers(1, 1683, queries).tolist()
            for kind, wanted in (("absent_movie", [0] * queries), ("random_movie", movies)):
                t0 = time.process_time()
                for user, movie in zip(users, wanted, strict=True):
                    if name == "slate_index":
                        store.latest_decision_showing(user, movie, 0.0, float("inf"))
                    else:
                        conn.execute(OLD_ATTRIBUTION, (user, 0.0, float("inf"), movie)
                                     ).fetchall()
                out[f"attribution_{name}_{kind}_us"] = 1e6 * (time.process_time() - t0) / queries
            conn.close()
            store.dispose()
        return out
    finally:
        shutil.rmtree(tmp, ignore_errors=True)


def best_us(fn: Callable[[], object], number: int, repeat: int) -> float:
    """Best microseconds a call of ``fn`` (timeit's clock: short calls without I/O)."""
    return min(timeit.repeat(fn, number=number, repeat=repeat)) / number * 1e6


def increments_cost(repeat: int) -> tuple[float, float]:
    """us a batch's four ``arm_state`` increments: executemany, and one statement each."""
    tmp = Path(tempfile.mkdtemp(prefix="decision-write-"))
    try:
        store = open_store(f"sqlite:///{tmp / 'log.db'}")
        store.create_schema(ARMS)
        sql = store._increment_sql
        store.dispose()
        conn = sqlite3.connect(tmp / "log.db", isolation_level=None)
        cursor = conn.cursor()
        params = [(1, arm) for arm in ARMS]
        conn.execute("BEGIN IMMEDIATE")

        def each() -> None:
            for p in params:
                cursor.execute(sql, p)

        many = best_us(lambda: cursor.executemany(sql, params), 20_000, repeat)
        one_by_one = best_us(each, 20_000, repeat)
        conn.execute("ROLLBACK")
        conn.close()
        return many, one_by_one
    finally:
        shutil.rmtree(tmp, ignore_errors=True)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--rows", type=int, default=20_000,
                        help="decisions written before the measured ones (the table's size)")
    parser.add_argument("--measure", type=int, default=10_000, help="decisions measured")
    parser.add_argument("--batch", type=int, default=5, help="decisions a commit")
    parser.add_argument("--checkpoint-every", type=int, default=50,
                        help="batches between two checkpoints")
    parser.add_argument("--repeat", type=int, default=3, help="alternated rounds")
    parser.add_argument("--attribution-decisions", type=int, default=943 * 64,
                        help="decisions of the store the attribution's search runs on "
                        "(943 users)")
    args = parser.parse_args(argv)
    print(f"loadavg (start): {load_average()}")
    rows = decision_rows(args.rows + args.measure, seed=0)
    results: dict[str, float] = {}
    totals: dict[str, list[float]] = {name: [] for name in VARIANTS}
    for _ in range(args.repeat):
        for name, variant in VARIANTS.items():
            write, ckpt = write_cost(variant, rows, args.rows, args.batch,
                                     args.checkpoint_every)
            totals[name].append(write + ckpt)
            print(f"  {name}: write {write:.1f} + checkpoint {ckpt:.1f} = "
                  f"{write + ckpt:.1f} us a decision")
    for name, values in totals.items():
        results[f"sqlite_{name}_us_per_decision"] = float(np.median(values))
        results[f"sqlite_{name}_ratio_to_schema"] = float(np.median(
            [v / s for v, s in zip(values, totals["schema"], strict=True)]))
    per_user = args.attribution_decisions / 943
    print(f"  attribution: {args.attribution_decisions} decisions, {per_user:.0f} a user")
    results.update(attribution_cost(decision_rows(args.attribution_decisions, seed=1), 2000))
    many, one_by_one = increments_cost(5)
    results["arm_increments_executemany_us_per_batch"] = many
    results["arm_increments_one_by_one_us_per_batch"] = one_by_one

    vector = rows[0]["context"]["features"]
    vector.flags.writeable = False
    empty = np.empty(0, dtype=np.int64)
    signals = UserSignals(empty, empty.astype(np.float64), empty, empty, empty, 0)
    view = UserView(signals, vector, 0.0, float("inf"))
    context = {"feature_version": "user-v4", "features": vector, "k": 10}
    view.context_json("user-v4", 10)
    results["context_json_text_per_request_us"] = best_us(lambda: json_text(context),
                                                         100_000, 5)
    results["context_json_kept_per_view_us"] = best_us(
        lambda: view.context_json("user-v4", 10), 100_000, 5)
    cdf = np.cumsum(np.full(len(ARMS), 1 / len(ARMS)))
    cdf[-1] = 1.0
    assert all(draw_arm(cdf, u) == min(int(cdf.searchsorted(u, side="right")), cdf.size - 1)
               == min(bisect.bisect_right(cdf, u), cdf.size - 1) for u in (0.0, 0.25, 0.6))
    results["draw_arm_us"] = best_us(lambda: draw_arm(cdf, 0.6), 100_000, 5)
    results["searchsorted_draw_us"] = best_us(
        lambda: min(int(cdf.searchsorted(0.6, side="right")), cdf.size - 1), 100_000, 5)
    print(f"loadavg (end): {load_average()}")
    for name, value in results.items():
        print(f"{name}: {value:.3f}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
