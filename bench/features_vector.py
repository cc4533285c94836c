"""Cost of one request's context vector, feature set ``user-v4`` (serving/features.py).

Run from the repository root::

    RECBANDITS_DATA=/path/holding/ml-100k .venv/bin/python bench/features_vector.py
    .venv/bin/python bench/features_vector.py --synthetic --events 1000 --repeats 7

What it measures (microseconds per call, best of ``--repeats`` rounds, each round ``--calls``
calls; the best is the round least disturbed by other processes on the machine, and short rounds
make an undisturbed one likely on a loaded machine: 300-call rounds measured the one-event path
at 60-210 us as the load went from 4 to 8, while 20-call rounds stay near the unloaded figure):

1. **scratch**: ``FeatureStore.vector`` folding a user's ``--events`` events (random types and
   items, one a minute, all inside the retention window) from nothing: a worker's first request
   of the user, or a rebuild after the oldest event left the window.
2. **cached + 1 event**: the worker's cache holds the user's state and the request brings one new
   event (the common request after an event).
3. **cached, no new event**: the cache is up to date; only the vector at ``now`` is computed.
4. **peer, user-v1**: ``UserFeatures.vector`` (static row plus two session counts), what the
   request path computed before ``user-v2``, measured in the same run; the ratios are against
   it.
5. **cache memory**: bytes allocated (tracemalloc) per user state in the cache.

The load average (``/proc/loadavg``) is printed before and after: the machine is shared.
"""

from __future__ import annotations

import argparse
import time
import tracemalloc
from collections.abc import Callable

import numpy as np
from host import load_average

from arms.data import load_movielens, make_synthetic
from arms.data.dataset import Dataset
from arms.errors import DataUnavailableError
from serving.features import FeatureStore, UserFeatures
from serving.store.types import UserEvent


def best_us(run: Callable[[int], None], calls: int, repeats: int) -> float:
    """Best per-call time of ``repeats`` rounds; ``run(i)`` makes call ``i`` of a round."""
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        for i in range(calls):
            run(i)
        times.append((time.perf_counter() - start) / calls)
    return min(times) * 1e6


def event_log(catalog: Dataset, store: FeatureStore, n: int, seed: int) -> list[UserEvent]:
    rng = np.random.default_rng(seed)
    types = list(store.spec.types)
    t0 = 1_700_000_000.0
    log = []
    for i in range(n):
        kind = types[int(rng.integers(len(types)))]
        value = (float(rng.integers(1, 6)) if kind == "rating"
                 else float(rng.uniform(0, 120)) if kind == "dwell" else None)
        log.append(UserEvent(i + 1, int(rng.choice(catalog.item_ids)), kind, value,
                             t0 + 60.0 * i))
    return log


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--events", type=int, default=1000)
    parser.add_argument("--calls", type=int, default=20)
    parser.add_argument("--repeats", type=int, default=60)
    parser.add_argument("--synthetic", action="store_true", help="skip MovieLens")
    args = parser.parse_args(argv)
    print(f"load average before: {load_average()}")
    try:
        if args.synthetic:
            raise DataUnavailableError("--synthetic")
        catalog = load_movielens(download=False)
    except DataUnavailableError:
        catalog = make_synthetic(943, 1682, 100_000, random_state=0)
    store = FeatureStore(catalog)
    user = int(catalog.users.index[0])
    # A log long enough for every round's one-new-event calls.
    extra = args.calls * args.repeats
    log = event_log(catalog, store, args.events + extra, seed=0)
    base = log[:args.events]
    now = base[-1].created_at + 60.0
    stated = ["Drama", "Comedy"]

    scratch = best_us(lambda i: store.vector(user, base, stated, now, cached=False),
                      args.calls // 10 or 1, args.repeats)
    store.vector(user, base, stated, now)
    # Each call sees the log one event longer (built beforehand: the store's read makes it).
    prefixes = [log[:n] for n in range(args.events + 1, len(log) + 1)]
    cursor = iter(prefixes)

    def one_new(_: int) -> None:
        events = next(cursor)
        store.vector(user, events, stated, events[-1].created_at)

    one = best_us(one_new, args.calls, args.repeats)
    last = prefixes[-1]
    at = last[-1].created_at + 1.0
    none_new = best_us(lambda i: store.vector(user, last, stated, at), args.calls, args.repeats)
    v1 = UserFeatures(catalog)
    peer = best_us(lambda i: v1.vector(user, 3, 1), args.calls, args.repeats)
    print(f"catalogue: {catalog.name} ({catalog.n_users} users, {catalog.n_items} items); "
          f"user-v4 has {store.dimension} values, user-v1 {v1.dimension}")
    rows = [(f"scratch ({args.events} events)", scratch), ("cached + 1 event", one),
            ("cached, no new event", none_new), ("peer: user-v1 vector", peer)]
    print(f"{'path':<28}{'us/call':>10}{'x user-v1':>11}")
    for name, us in rows:
        print(f"{name:<28}{us:>10.1f}{us / peer:>11.1f}")
    # Memory of the per-worker cache: states of 2,000 users with 20 events each.
    small = FeatureStore(catalog, cache_users=2000)
    logs = [event_log(catalog, small, 20, seed=u) for u in range(2000)]
    tracemalloc.start()
    before = tracemalloc.get_traced_memory()[0]
    for u, events in enumerate(logs):
        small.vector(u, events, None, events[-1].created_at)
    per_user = (tracemalloc.get_traced_memory()[0] - before) / len(logs)
    tracemalloc.stop()
    print(f"cache memory: {per_user / 1024:.2f} KiB per user, "
          f"{per_user * 10_000 / 2**20:.1f} MiB for the default 10,000 users")
    print(f"load average after: {load_average()}")
    for name, us in rows:
        print(f"{name.split(' (')[0].replace(' ', '_').replace(',', '').replace(':', '')}_us: "
              f"{us:.1f}")


if __name__ == "__main__":
    main()
