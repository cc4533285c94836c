"""Cost of one real-time request per arm: ``recommend_history`` against the frozen ``recommend``.

Run from the repository root::

    RECBANDITS_DATA=/path/holding/ml-100k .venv/bin/python bench/realtime_arms.py
    .venv/bin/python bench/realtime_arms.py --synthetic 20000 --requests 200

What it measures
----------------
Each arm is fit on all of MovieLens 100K (or a synthetic dataset). For ``--requests`` random
users it then times, in this process and in the same run:

- ``recommend`` of that one user (the frozen arm's request: the peer),
- ``recommend_history`` of that user with a history of ``--history`` events since training
  (``score_history``, then the top-10 without seen and event items),
- for the arms that learn from the stream, ``observe`` of one event (what the service does for
  each ``POST /events``).

The table gives the mean time of each and the ratio real-time / frozen. BLAS pools are pinned to
``--threads`` threads (default 1): SVD's fold-in solves a 101 x 101 system per request, and a
multi-threaded BLAS on a loaded 2-core machine made it 5-30 times slower. The output ends with
``name: value`` lines.
"""

from __future__ import annotations

import argparse
import os
import sys
import time
from pathlib import Path

from host import load_average

THREAD_VARIABLES = ("OMP_NUM_THREADS", "OPENBLAS_NUM_THREADS", "MKL_NUM_THREADS")
ARMS = (("sequential", {}), ("autoencoder", {}), ("svd", {}), ("cooccurrence", {}),
        ("popularity", {"half_life": 7 * 86_400.0}))  # fmt: skip


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--requests", type=int, default=300, help="timed requests per arm")
    parser.add_argument("--history", type=int, default=10,
                        help="events since training per request (default 10)")
    parser.add_argument("--synthetic", type=int, default=None, metavar="N_RATINGS",
                        help="a synthetic dataset instead of MovieLens 100K")
    parser.add_argument("--threads", type=int, default=1, help="BLAS threads (default 1)")
    parser.add_argument("--seed", type=int, default=0)
    return parser.parse_args(argv)


def _mean_ms(call, n: int) -> float:
    start = time.perf_counter()
    for i in range(n):
        call(i)
    return (time.perf_counter() - start) / n * 1e3


def time_arm(model, users, items, ratings) -> tuple[float, float, float]:
    """Mean ms of a frozen request, a real-time request and (live arms) one observed event."""
    n = len(users)
    frozen = _mean_ms(lambda i: model.recommend(users[i : i + 1], k=10), n)
    live = _mean_ms(lambda i: model.recommend_history(int(users[i]), items[i], ratings[i], k=10),
                    n)  # fmt: skip
    observe = float("nan")
    if model.learns_from_stream:
        clock = int(model.clock_)
        observe = _mean_ms(lambda i: model.observe(users[i : i + 1] + 1, items[i, :1],
                                                   ratings[i, :1], [clock + i]), n)  # fmt: skip
    return frozen, live, observe


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    for name in THREAD_VARIABLES:
        os.environ[name] = str(args.threads)
    sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
    import numpy as np
    from threadpoolctl import threadpool_limits

    from arms.data import load_movielens, make_synthetic
    from arms.registry import make_arm

    data = (make_synthetic(n_ratings=args.synthetic, random_state=args.seed)
            if args.synthetic else load_movielens())  # fmt: skip
    rng = np.random.default_rng(args.seed)
    n, h = args.requests, args.history
    users = rng.integers(0, data.n_users, n)
    items = rng.integers(0, data.n_items, (n, h))
    ratings = rng.choice([1.0, 3.0, 4.0, 5.0], (n, h))
    print(f"{data!r}; {n} requests, history {h}, BLAS threads {args.threads}; "
          f"load average {load_average()}")
    print(f"{'arm':<14}{'frozen ms':>10}{'real-time ms':>14}{'ratio':>7}{'observe ms':>12}")
    summary = []
    with threadpool_limits(args.threads):
        for name, params in ARMS:
            model = make_arm(name, **params).fit(data)
            frozen, live, observe = time_arm(model, users, items, ratings)
            print(f"{name:<14}{frozen:>10.3f}{live:>14.3f}{live / frozen:>7.2f}{observe:>12.3f}")
            summary += [(f"{name}_frozen_ms", frozen), (f"{name}_realtime_ms", live),
                        (f"{name}_realtime_over_frozen", live / frozen)]
            if model.learns_from_stream:
                summary.append((f"{name}_observe_ms", observe))
    print()
    for key, value in summary:
        print(f"{key}: {value:.3f}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
