"""What retraining on its own costs the requests: a trigger's look, and a retrain under way.

1. **A look** (``RetrainTrigger.due`` on the lease row) on a log of ``--events`` events, when
   nothing is due (the row and the log's head: fewer positions than N) and when N events are
   counted (``retrain_after_events`` = half the log), against its peer in the same run, a
   request's read of its user (``Store.user_context``): ``look_over_user_read`` and
   ``look_counting_over_user_read``.
2. **Requests during a retrain**: ``GET /recommendations`` latencies (one client in process,
   ``TestClient``) while nothing else runs, then while a retrain (``POST /admin/retrain``, in
   another thread) fits and publishes: p50, p99 and max of each, and the ratios. A retrain runs
   in a thread beside the event loop; its numpy and surprise fits share the GIL with it, which
   is what the ratio shows.

Wall-clock on a shared machine: read the figures with the load average printed beside them.

Usage::

    RECBANDITS_DATA=/work/shared/data .venv/bin/python bench/serving_retrain.py \\
        [--dataset movielens|synthetic] [--arms svd,autoencoder,popularity] [--events 20000]

Ends with ``name: value`` lines.
"""

from __future__ import annotations

import argparse
import statistics
import sys
import tempfile
import threading
import time
from pathlib import Path

import numpy as np
from host import load_average

REPO = Path(__file__).resolve().parent.parent


def percentile(values: list[float], q: float) -> float:
    return float(np.percentile(np.asarray(values), q))


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--dataset", default="movielens", choices=("movielens", "synthetic"))
    parser.add_argument("--arms", default="svd,autoencoder,popularity")
    parser.add_argument("--events", type=int, default=20_000,
                        help="events in the log the look counts over (default 20000)")
    parser.add_argument("--looks", type=int, default=2000, help="looks timed (default 2000)")
    args = parser.parse_args(argv)
    sys.path.insert(0, str(REPO))

    from fastapi.testclient import TestClient

    from serving.app import create_app
    from serving.commands import load_catalog
    from serving.retrain_trigger import RetrainTrigger
    from serving.settings import Settings

    tmp = Path(tempfile.mkdtemp(prefix="recbandits-retrain-"))
    settings = Settings(state_dir=tmp / "state", arms=args.arms.split(","), seed=0,
                        dataset=args.dataset, admin_token="t", refresh_interval_s=0.2)
    catalog = load_catalog(settings)
    auth = {"Authorization": "Bearer t"}
    users = catalog.user_ids
    with TestClient(create_app(settings, catalog=catalog)) as client:
        store = client.app.state.service.store  # type: ignore[attr-defined]
        # The log the looks count over (simulated rows: the service's own writes are slower).
        store.insert_simulated([], [
            {"created_at": time.time(), "user_id": int(users[s % len(users)]),
             "movie_id": int(catalog.item_ids[s % len(catalog.item_ids)]),
             "feedback_type": "view", "value": None, "event_id": None,
             "event_key": f"b{s}", "arm": None, "reward": None, "rating": 3.0,
             "counted": False, "note": "", "seq": s} for s in range(1, args.events + 1)])
        # Not due (fewer log positions than N: no count), and due (N events counted).
        quiet, due = (RetrainTrigger(store, lambda lease: None, every_s=None, after_events=n,
                                     check_s=10.0, lease_s=600.0)
                      for n in (2 * args.events, args.events // 2))
        row = store.retrain_lease()
        looks, counting, reads = [], [], []
        for i in range(args.looks):
            start = time.perf_counter()
            assert quiet.due(store.retrain_lease(), time.time()) is None
            looks.append(time.perf_counter() - start)
            start = time.perf_counter()
            assert due.due(store.retrain_lease(), time.time()) is not None
            counting.append(time.perf_counter() - start)
            start = time.perf_counter()
            store.user_context(int(users[i % len(users)]), 0.0, settings.history_limit)
            reads.append(time.perf_counter() - start)
        assert row.holder is None
        print(f"load before the looks: {load_average()}")

        def latencies(n: int, until: threading.Event | None = None) -> list[float]:
            out = []
            i = 0
            while (until is None and i < n) or (until is not None and not until.is_set()):
                start = time.perf_counter()
                response = client.get("/recommendations",
                                      params={"user_id": int(users[i % len(users)])})
                out.append(time.perf_counter() - start)
                assert response.status_code == 200, response.text
                i += 1
            return out

        latencies(200)  # warm: every user's first ranking is cached by later ones alike
        idle = latencies(1000)
        load_idle = load_average()
        done = threading.Event()
        answer: list[int] = []

        def retrain() -> None:
            answer.append(client.post("/admin/retrain", headers=auth).status_code)
            done.set()

        start = time.perf_counter()
        thread = threading.Thread(target=retrain)
        thread.start()
        during = latencies(0, until=done)
        thread.join()
        retrain_s = time.perf_counter() - start
        assert answer == [200], answer
    print(f"dataset {settings.dataset}, arms {args.arms}; log of {args.events} events")
    look_us = statistics.median(looks) * 1e6
    read_us = statistics.median(reads) * 1e6
    print(f"look_us_median: {look_us:.1f}")
    print(f"user_read_us_median: {read_us:.1f}")
    print(f"look_over_user_read: {look_us / read_us:.2f}")
    due_us = statistics.median(counting) * 1e6
    print(f"look_counting_{args.events // 2}_events_us_median: {due_us:.1f}")
    print(f"look_counting_over_user_read: {due_us / read_us:.2f}")
    for name, values in (("idle", idle), ("during_retrain", during)):
        print(f"requests_{name}: {len(values)}")
        for q in (50, 99):
            print(f"request_ms_p{q}_{name}: {percentile(values, q) * 1e3:.2f}")
        print(f"request_ms_max_{name}: {max(values) * 1e3:.2f}")
    for q in (50, 99):
        print(f"p{q}_during_over_idle: "
              f"{percentile(during, q) / percentile(idle, q):.2f}")
    print(f"retrain_s: {retrain_s:.1f}")
    print(f"load_idle: {load_idle}")
    print(f"load_after: {load_average()}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
