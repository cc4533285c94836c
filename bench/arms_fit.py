"""Fit time of the default arms on MovieLens 100K, and fit time and peak memory as data grows.

Run from the repository root::

    RECBANDITS_DATA=/path/holding/ml-100k .venv/bin/python bench/arms_fit.py      # 1e6, 1e7, 2e7
    RECBANDITS_DATA=/path/holding/ml-100k .venv/bin/python bench/arms_fit.py --sizes 1e5 1e6
    .venv/bin/python bench/arms_fit.py --skip-movielens --sizes --ease-items 5000   # EASE only

What it measures
----------------
1. **MovieLens 100K**: each default arm (SVD, sequential, EASE autoencoder, popularity) is fit on
   all 100,000 ratings ``--repeats`` times in this process; the table shows the best and the
   median time, the summary uses the best (the least disturbed by other processes on the machine).
   The target is a total under 10 s on one core.
2. **Synthetic data** (:func:`arms.data.make_synthetic`) of each ``--sizes`` rating count, with
   ``size // --ratings-per-user`` users and a fixed catalogue of ``--n-items`` items (moderate, so
   EASE's dense ``n_items x n_items`` inverse stays affordable and the growth seen is the growth in
   ratings). Each (size, arm) runs in a fresh subprocess that generates the data, resets the
   kernel's peak-RSS mark (``/proc/self/clear_refs``), fits once and reports the fit time, the
   resident memory before the fit (mostly the dataset) and the peak during the fit.
3. **EASE against its catalogue** (``--ease-items``, default 10,000 items, ``--ease-ratings``
   ratings): EASE's memory and time grow with the square and the cube of the items it keeps, not
   with the ratings, so the same data is fit in float64, in float32 (the default) and in float32
   with ``max_items`` at half the catalogue, each in a fresh subprocess; the table sets the
   measured extra memory of each fit beside the ``m^2`` matrix the docstring promises, and the
   summary gives the float32/float64 and half/full ratios measured in the same run.

Every BLAS/OpenMP pool is pinned to ``--threads`` threads (default 1): the environment variables
are set before numpy is imported, here and in the subprocesses, and threadpoolctl limits the
pools as well. The output ends with ``name: value`` lines for scripts to read.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import time
from pathlib import Path

THREAD_VARIABLES = (
    "OMP_NUM_THREADS",
    "OPENBLAS_NUM_THREADS",
    "MKL_NUM_THREADS",
    "BLIS_NUM_THREADS",
    "VECLIB_MAXIMUM_THREADS",
    "NUMEXPR_NUM_THREADS",
)
ARMS = ("svd", "sequential", "ease", "popularity")
MOVIELENS_TARGET_S = 10.0


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument(
        "--sizes", nargs="*", default=["1e6", "1e7", "2e7"], metavar="N",
        help="synthetic rating counts (default 1e6 1e7 2e7); none to skip the synthetic part",
    )  # fmt: skip
    parser.add_argument("--ease-items", type=int, default=10_000, metavar="M",
                        help="catalogue of the EASE memory part (default 10000; 0 skips it)")
    parser.add_argument("--ease-ratings", default="1e6", metavar="N",
                        help="ratings of the EASE memory part (default 1e6)")  # fmt: skip
    parser.add_argument("--arms", nargs="+", default=list(ARMS), choices=ARMS)
    parser.add_argument("--n-items", type=int, default=2000, help="synthetic catalogue size")
    parser.add_argument("--ratings-per-user", type=int, default=100)
    parser.add_argument("--repeats", type=int, default=3, help="MovieLens fits per arm")
    parser.add_argument("--threads", type=int, default=1, help="BLAS/OpenMP threads")
    parser.add_argument("--data", default=None, help="folder holding ml-100k/")
    parser.add_argument("--skip-movielens", action="store_true")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--child", choices=ARMS, help=argparse.SUPPRESS)
    parser.add_argument("--n-ratings", type=int, help=argparse.SUPPRESS)
    parser.add_argument("--dtype", choices=("float32", "float64"), help=argparse.SUPPRESS)
    parser.add_argument("--max-items", type=int, help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    try:
        args.ease_ratings = int(float(args.ease_ratings))
    except ValueError:
        parser.error(f"--ease-ratings takes a rating count such as 1e6, got {args.ease_ratings}")
    try:
        args.sizes = [int(float(s)) for s in args.sizes]
    except ValueError:
        parser.error(f"--sizes takes rating counts such as 1e6, got {args.sizes}")
    if any(s < 1000 for s in args.sizes):
        parser.error(f"--sizes must be at least 1000 ratings each, got {args.sizes}")
    if args.ease_items < 0 or (args.ease_items and args.ease_ratings < 1000):
        parser.error("--ease-items must be >= 0 and --ease-ratings >= 1000, got "
                     f"{args.ease_items} and {args.ease_ratings}")  # fmt: skip
    for name in ("n_items", "ratings_per_user", "repeats", "threads"):
        if getattr(args, name) < 1:
            parser.error(f"--{name.replace('_', '-')} must be >= 1, got {getattr(args, name)}")
    return args


def pin_threads(threads: int) -> None:
    """Set the thread variables; call before numpy is imported."""
    for name in THREAD_VARIABLES:
        os.environ[name] = str(threads)


def make_arm(name: str, **ease_options: object):
    """A default arm; ``ease_options`` (``dtype``, ``max_items``) go to EASE only."""
    from arms import (
        AutoencoderRecommender,
        PopularityRecommender,
        SequentialRecommender,
        SVDRecommender,
    )

    return {
        "svd": SVDRecommender,
        "sequential": SequentialRecommender,
        "ease": lambda: AutoencoderRecommender(variant="ease", **ease_options),
        "popularity": PopularityRecommender,
    }[name]()


def size_tag(size: int) -> str:
    """``1e6`` for a round power-of-ten-ish count, else the digits."""
    short = f"{size:.0e}".replace("e+0", "e").replace("e+", "e")
    return short if float(short) == size else str(size)


# ---------------------------------------------------------------------- memory (Linux)
def _status_mb(field: str) -> float | None:
    try:
        for line in Path("/proc/self/status").read_text().splitlines():
            if line.startswith(field + ":"):
                return int(line.split()[1]) / 1024.0
    except OSError:
        return None
    return None


def _reset_peak() -> bool:
    """Reset the kernel's peak-RSS mark (VmHWM) of this process; False where unsupported."""
    try:
        Path("/proc/self/clear_refs").write_text("5")
    except OSError:
        return False
    return True


def child(args: argparse.Namespace) -> None:
    """Generate one synthetic dataset, fit one arm, print one JSON line."""
    import gc
    import resource

    from threadpoolctl import threadpool_limits

    from arms.data import make_synthetic

    n_users = max(args.n_ratings // args.ratings_per_user, 1)
    start = time.perf_counter()
    data = make_synthetic(
        n_users=n_users, n_items=args.n_items, n_ratings=args.n_ratings, random_state=args.seed
    )
    data.interaction_matrix(binary=True)  # cached on the dataset: part of the data, not the fit
    generate_s = time.perf_counter() - start
    ease_options = {k: v for k, v in (("dtype", args.dtype), ("max_items", args.max_items))
                    if v is not None}  # fmt: skip
    model = make_arm(args.child, **ease_options)
    gc.collect()
    exact_peak = _reset_peak()
    before_mb = _status_mb("VmRSS")
    with threadpool_limits(limits=args.threads):
        start = time.perf_counter()
        model.fit(data)
        fit_s = time.perf_counter() - start
    peak_mb = _status_mb("VmHWM") if exact_peak else None
    if peak_mb is None:  # whole-process peak, data generation included
        peak_mb = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024.0
    print(json.dumps({
        "arm": args.child, "n_ratings": data.n_ratings, "n_users": data.n_users,
        "n_items": data.n_items, "generate_s": generate_s, "fit_s": fit_s,
        "rss_before_mb": before_mb, "peak_rss_mb": peak_mb, "exact_peak": exact_peak,
    }))  # fmt: skip


def run_child(
    args: argparse.Namespace, arm: str, size: int, *, n_items: int | None = None,
    extra: tuple[str, ...] = (),
) -> dict:
    """One (arm, size) cell in a fresh process: its peak RSS is the fit's alone."""
    command = [
        sys.executable, str(Path(__file__).resolve()), "--child", arm, "--n-ratings", str(size),
        "--n-items", str(n_items or args.n_items), "--ratings-per-user",
        str(args.ratings_per_user), "--threads", str(args.threads), "--seed", str(args.seed),
        "--ease-items", "0", *extra, "--sizes",
    ]  # fmt: skip
    done = subprocess.run(command, capture_output=True, text=True, env=os.environ.copy())
    if done.returncode != 0:
        raise RuntimeError(f"{arm} on {size} ratings failed:\n{done.stderr[-3000:]}")
    return json.loads(done.stdout.strip().splitlines()[-1])


# ---------------------------------------------------------------------- the two parts
def bench_movielens(args: argparse.Namespace) -> dict[str, list[float]]:
    from threadpoolctl import threadpool_limits

    from arms.data import load_movielens

    data = load_movielens(args.data, download=False)
    data.interaction_matrix(binary=True)
    times: dict[str, list[float]] = {}
    with threadpool_limits(limits=args.threads):
        for arm in args.arms:
            times[arm] = []
            for _ in range(args.repeats):
                model = make_arm(arm)
                start = time.perf_counter()
                model.fit(data)
                times[arm].append(time.perf_counter() - start)
    return times


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    pin_threads(args.threads)
    sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
    if args.child:
        child(args)
        return 0

    import numpy as np
    from threadpoolctl import threadpool_info

    pools = sorted({f"{p['internal_api']}={p['num_threads']}" for p in threadpool_info()})
    print(f"threads: {args.threads} per BLAS/OpenMP pool ({THREAD_VARIABLES[0]} etc. and "
          f"threadpoolctl); pools seen: {', '.join(pools) or 'none'}")  # fmt: skip
    summary: list[tuple[str, str]] = [("threads", str(args.threads))]

    if not args.skip_movielens:
        times = bench_movielens(args)
        print(f"\nMovieLens 100K (100,000 ratings), fit on all ratings, {args.repeats} repeats")
        print(f"{'arm':<12}{'best s':>10}{'median s':>10}")
        for arm, values in times.items():
            print(f"{arm:<12}{min(values):>10.3f}{float(np.median(values)):>10.3f}")
        total = sum(min(v) for v in times.values())
        print(f"{'total':<12}{total:>10.3f}   (target < {MOVIELENS_TARGET_S:g} s on one core)")
        summary += [(f"movielens_fit_s_{arm}", f"{min(v):.3f}") for arm, v in times.items()]
        summary.append(("movielens_total_fit_s", f"{total:.3f}"))
        summary.append(("movielens_total_under_target", str(total < MOVIELENS_TARGET_S).lower()))

    results: dict[tuple[str, int], dict] = {}
    if args.sizes:
        print(f"\nSynthetic data: n_items = {args.n_items} (fixed, moderate for EASE), "
              f"n_users = ratings / {args.ratings_per_user}; one subprocess per cell")  # fmt: skip
        print(f"{'arm':<12}{'ratings':>11}{'users':>9}{'fit s':>9}{'RSS before MB':>15}"
              f"{'peak MB':>10}{'fit extra MB':>14}")  # fmt: skip
        for size in args.sizes:
            for arm in args.arms:
                row = run_child(args, arm, size)
                results[arm, size] = row
                extra = row["peak_rss_mb"] - row["rss_before_mb"]
                note = "" if row["exact_peak"] else "  (peak includes data generation)"
                print(f"{arm:<12}{row['n_ratings']:>11,}{row['n_users']:>9,}{row['fit_s']:>9.2f}"
                      f"{row['rss_before_mb']:>15.0f}{row['peak_rss_mb']:>10.0f}{extra:>14.0f}"
                      f"{note}", flush=True)  # fmt: skip
                tag = f"synthetic_{size_tag(size)}"
                summary.append((f"{tag}_fit_s_{arm}", f"{row['fit_s']:.2f}"))
                summary.append((f"{tag}_peak_rss_mb_{arm}", f"{row['peak_rss_mb']:.0f}"))
        if len(args.sizes) > 1:
            small, big = min(args.sizes), max(args.sizes)
            print(f"\nGrowth from {small:,} to {big:,} ratings (x{big / small:g} data):")
            for arm in args.arms:
                a, b = results[arm, small], results[arm, big]
                time_ratio = b["fit_s"] / max(a["fit_s"], 1e-9)
                extra_a = max(a["peak_rss_mb"] - a["rss_before_mb"], 1e-9)
                extra_b = b["peak_rss_mb"] - b["rss_before_mb"]
                print(f"{arm:<12} fit time x{time_ratio:.1f}, fit extra memory "
                      f"x{extra_b / extra_a:.1f}")  # fmt: skip
                summary.append((f"fit_time_growth_{arm}", f"{time_ratio:.2f}"))

    if args.ease_items:
        summary += bench_ease_catalogue(args)

    print()
    for name, value in summary:
        print(f"{name}: {value}")
    return 0


def bench_ease_catalogue(args: argparse.Namespace) -> list[tuple[str, str]]:
    """EASE in float64, float32 and float32 with half the items, on one synthetic dataset."""
    m = args.ease_items
    cases = [
        ("float64", m, ("--dtype", "float64")),
        ("float32", m, ("--dtype", "float32")),
        (f"float32, max_items={m // 2}", m // 2, ("--dtype", "float32", "--max-items",
                                                  str(m // 2))),
    ]  # fmt: skip
    print(f"\nEASE against its catalogue: {args.ease_ratings:,} synthetic ratings, {m:,} items, "
          f"users = ratings / {args.ratings_per_user}; one subprocess per row")  # fmt: skip
    print(f"{'EASE':<26}{'fit s':>9}{'RSS before MB':>15}{'peak MB':>10}{'fit extra MB':>14}"
          f"{'m^2 matrix MB':>15}")  # fmt: skip
    rows = {}
    for label, kept, extra in cases:
        row = run_child(args, "ease", args.ease_ratings, n_items=m, extra=extra)
        itemsize = 8 if "64" in label else 4
        matrix_mb = kept * kept * itemsize / 2**20
        fit_extra = row["peak_rss_mb"] - row["rss_before_mb"]
        rows[label] = (row, fit_extra)
        print(f"{label:<26}{row['fit_s']:>9.2f}{row['rss_before_mb']:>15.0f}"
              f"{row['peak_rss_mb']:>10.0f}{fit_extra:>14.0f}{matrix_mb:>15.0f}",
              flush=True)  # fmt: skip
    (r64, x64), (r32, x32), (rhalf, xhalf) = rows.values()
    ratios = [
        ("ease_float32_over_float64_fit_time", r32["fit_s"] / max(r64["fit_s"], 1e-9)),
        ("ease_float32_over_float64_fit_extra_memory", x32 / max(x64, 1e-9)),
        ("ease_half_items_over_all_fit_time", rhalf["fit_s"] / max(r32["fit_s"], 1e-9)),
        ("ease_half_items_over_all_fit_extra_memory", xhalf / max(x32, 1e-9)),
    ]
    print("ratios (same run): " + ", ".join(f"{n.removeprefix('ease_')} {v:.2f}"
                                            for n, v in ratios))  # fmt: skip
    summary = [(f"ease_{m}_items_fit_s_{k.split(',')[0]}{'_half' if ',' in k else ''}",
                f"{r['fit_s']:.2f}") for k, (r, _) in rows.items()]  # fmt: skip
    summary += [(f"ease_{m}_items_fit_extra_mb_{k.split(',')[0]}{'_half' if ',' in k else ''}",
                 f"{x:.0f}") for k, (_, x) in rows.items()]  # fmt: skip
    summary += [(n, f"{v:.3f}") for n, v in ratios]
    return summary


if __name__ == "__main__":
    sys.exit(main())
