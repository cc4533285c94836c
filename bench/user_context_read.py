"""SQLite: the request path's read of a user's events right after that user's own event.

A worker keeps each user's ``user_context`` answer until their mark moves; after an event of
the user's own it extends the kept answer with the rows logged since
(``SQLiteStore.user_context``) instead of reading the whole answer again
(``Store.user_context``). Both are timed in the same run after each event, in alternating
order, on one file: ``--users`` users with ``--events`` events each, then ``--rounds`` rounds
of (an event of a random user; its context read both ways). In process, no HTTP.

Usage::

    .venv/bin/python bench/user_context_read.py [--events 30 300] [--users 200] [--rounds 3000]

Ends with ``name: value`` lines.
"""

from __future__ import annotations

import argparse
import random
import tempfile
import time
from functools import partial
from pathlib import Path

from host import load_average

from serving.rules import DEFAULT_RULES
from serving.store import FeedbackWrite, SQLiteStore, Store, open_store


def _like(user: int, movie: int, n: int) -> FeedbackWrite:
    rule = DEFAULT_RULES["like"]
    return FeedbackWrite({"created_at": 1000.0 + n, "user_id": user, "movie_id": movie,
                          "feedback_type": "like", "value": None, "event_id": None,
                          "event_key": f"k{n}", "arm": None, "reward": 1.0, "rating": 5.0,
                          "counted": False, "note": "bench"},
                         precedence=rule.precedence, excludes=rule.excludes)


def measure(events: int, users: int, rounds: int, seed: int = 0) -> dict[str, float]:
    """Microseconds a read, extended and whole, and the answers' mean length."""
    rng = random.Random(seed)
    with tempfile.TemporaryDirectory() as tmp:
        store = open_store(f"sqlite:///{Path(tmp) / 'bench.db'}")
        assert isinstance(store, SQLiteStore)
        try:
            store.create_schema(["svd", "popularity"])
            n = 0
            for _ in range(events):
                batch = []
                for user in range(1, users + 1):
                    n += 1
                    batch.append(_like(user, rng.randrange(1, 1600), n))
                store.write_batch([], batch)
            for user in range(1, users + 1):
                store.user_context(user, 0.0, 1000)
            extended = whole = 0.0
            length = 0
            for _ in range(rounds):
                user = rng.randrange(1, users + 1)
                n += 1
                store.write_batch([], [_like(user, rng.randrange(1, 1600), n)])
                # Alternated: the second read finds the pages the first fetched.
                reads = [store.user_context, partial(Store.user_context, store)]
                times = []
                answers = []
                for read in reads if n % 2 else reads[::-1]:
                    t0 = time.perf_counter()
                    answers.append(list(read(user, 0.0, 1000)[0]))
                    times.append(time.perf_counter() - t0)
                assert answers[0] == answers[1]
                extended += times[0] if n % 2 else times[1]
                whole += times[1] if n % 2 else times[0]
                length += len(answers[0])
        finally:
            store.dispose()
    return {"extended_us": 1e6 * extended / rounds, "whole_us": 1e6 * whole / rounds,
            "events_per_answer": length / rounds}


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--events", type=int, nargs="+", default=[30, 300])
    parser.add_argument("--users", type=int, default=200)
    parser.add_argument("--rounds", type=int, default=3000)
    args = parser.parse_args(argv)
    print("load average:", load_average())
    for events in args.events:
        r = measure(events, args.users, args.rounds)
        print(f"{events:>5} events a user: extended {r['extended_us']:.1f} us, whole read "
              f"{r['whole_us']:.1f} us ({r['events_per_answer']:.0f} events an answer)")
        for key, value in r.items():
            print(f"events_{events}_{key}: {value:.3f}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
