"""Scale-out of ``recbandits simulate``: a policies x seeds sweep at growing sizes, 1 vs 2 workers.

For each size, the same tasks (five policies, ``runs`` seeds each, cut into blocks of
``runs // 4`` runs) run on the local executor (joblib processes) with one worker and with two,
and on a Dask ``LocalCluster`` with two worker processes. Executors are started and warmed up
before the clock starts, so the figures are the throughput of the sweep itself. Every executor's
numbers are checked to be identical.

    RECBANDITS_DATA=/work/shared/data .venv/bin/python bench/sweep_scaling.py
    .venv/bin/python bench/sweep_scaling.py --sizes 8 32 --horizon 1000 --no-dask

Ends with ``name: value`` summary lines. The machine is shared: compare the 1- and 2-worker
figures of the same run, not figures across runs.
"""

from __future__ import annotations

import argparse
import time

import numpy as np

from experiments import config as cfg
from experiments import simulate
from experiments.executors import make_executor

POLICIES = [
    {"id": "ThompsonSampling"},
    {"id": "EpsilonGreedy", "params": {"epsilon": 0.1}},
    {"id": "UCB1"},
    {"id": "KLUCB"},
    {"id": "RandomPolicy"},
]


def sweep_config(runs: int, horizon: int, env_id: str) -> cfg.ExperimentConfig:
    return cfg.from_dict({
        "name": f"sweep-{runs}",
        "horizon": horizon,
        "runs": runs,
        "seed": 7,
        "runs_per_task": max(1, runs // 4),
        "record_every": max(1, horizon // 100),
        "env": {"id": env_id},
        "policies": POLICIES,
    })


def timed(kind: str, workers: int, tasks: list[simulate.Task]) -> tuple[float, list]:
    """Seconds to run every task on a warmed-up executor, and the results in task order."""
    with make_executor(kind, workers=workers) as executor:
        # Warm-up: start the worker processes and import (and build the env) in each of them.
        list(executor.imap_unordered(simulate.simulate_task, tasks[:workers]))
        start = time.perf_counter()
        done = dict(executor.imap_unordered(simulate.simulate_task, tasks))
        elapsed = time.perf_counter() - start
    return elapsed, [done[i] for i in range(len(tasks))]


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--sizes", type=int, nargs="+", default=[8, 32, 128],
                        help="seeds (runs) per policy at each size")
    parser.add_argument("--horizon", type=int, default=2000)
    parser.add_argument("--env", default="recbandits/FixedCTR-v0")
    parser.add_argument("--no-dask", action="store_true", help="skip the Dask LocalCluster")
    args = parser.parse_args(argv)

    setups = [("local", 1), ("local", 2)] + ([] if args.no_dask else [("dask", 2)])
    print(f"sweep: {len(POLICIES)} policies x seeds, horizon {args.horizon}, env {args.env}")
    print(f"{'runs/policy':>11} {'tasks':>6} " + " ".join(f"{k + ' x' + str(w):>16}"
                                                      for k, w in setups) + "  speed-up(2/1)")
    summary: dict[str, float] = {}
    for size in args.sizes:
        config = sweep_config(size, args.horizon, args.env)
        tasks = simulate.plan_tasks(config, simulate.probe_env(config))
        total_runs = len(POLICIES) * size
        rates, reference = [], None
        for kind, workers in setups:
            elapsed, results = timed(kind, workers, tasks)
            rates.append(total_runs / elapsed)
            cum = np.concatenate([r.cum_reward for r in results])
            if reference is None:
                reference = cum
            elif not np.array_equal(reference, cum):
                raise SystemExit(f"{kind} x{workers} gave different numbers at size {size}")
        speedup = rates[1] / rates[0]
        print(f"{size:>11} {len(tasks):>6} " + " ".join(f"{r:>11.1f} run/s" for r in rates)
              + f"  {speedup:>12.2f}x")
        summary[f"runs_per_s_1_worker_{size}"] = rates[0]
        summary[f"runs_per_s_2_workers_{size}"] = rates[1]
        summary[f"speedup_2_workers_{size}"] = speedup
        if len(rates) > 2:
            summary[f"runs_per_s_dask_2_workers_{size}"] = rates[2]
    print("identical results across executors: yes")
    for name, value in summary.items():
        print(f"{name}: {value:.2f}")


if __name__ == "__main__":
    main()
