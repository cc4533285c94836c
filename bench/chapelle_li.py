"""Reproduce Figure 1 of Chapelle & Li (2011), "An Empirical Evaluation of Thompson Sampling".

K = 10 Bernoulli arms, the best with mean 0.5 and the other nine with 0.5 - eps, for
eps in {0.1, 0.02}; cumulative pseudo-regret against log T for Thompson Sampling (Beta(1, 1)),
UCB1, KL-UCB (c = 0) and a decaying epsilon-greedy, with the Lai-Robbins lower bound
``C(means) * log T``. All runs of one policy advance together (the batched core); regret is
recorded at log-spaced checkpoints only, so memory stays small for T = 10^6.

Printed figures: Thompson Sampling's late slope (regret gained between T/10 and T per unit of
log t) divided by the Lai-Robbins constant, and its final regret divided by UCB1's; wall and CPU
seconds of every batch and in total (``seconds_total``, ``cpu_seconds_total``).

Cost: the policies whose hyper-parameters do not depend on eps (TS, UCB1, KL-UCB) simulate both
problems in one batch of 2 x runs (per-run means), so one numpy step advances 200 runs; KL-UCB's
indices are re-solved only where they moved, warm-started (see ``bandits.ucb``). ``--jobs 2``
runs the batches in two worker processes (same results; CPU time is reported either way).

The epsilon-greedy baseline is Auer et al.'s epsilon_n-greedy, ``epsilon_t = min(1, K / (eps^2 t))``
(c = 1, with the true gap eps: an oracle tuning that flatters it).

Usage::

    .venv/bin/python bench/chapelle_li.py                          # T = 10^6, 100 runs
    .venv/bin/python bench/chapelle_li.py --horizon 20000 --runs 20  # quick look
    .venv/bin/python bench/chapelle_li.py --jobs 2 --json /tmp/cl.json  # two processes
"""

from __future__ import annotations

import argparse
import json
import logging
import time
from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt
import numpy as np

import bandits as bd

K = 10
POLICIES = {
    "Thompson Sampling": lambda eps: bd.ThompsonSampling(K),
    "UCB1": lambda eps: bd.UCB1(K),
    "KL-UCB": lambda eps: bd.KLUCB(K),
    "epsilon-greedy": lambda eps: bd.EpsilonGreedy(K, epsilon=1.0, decay=K / eps**2),
}
KEYS = {"Thompson Sampling": "ts", "UCB1": "ucb1", "KL-UCB": "klucb", "epsilon-greedy": "egreedy"}
#: Policies whose hyper-parameters do not depend on eps: all problems run in one batch (one numpy
#: step advances every run of every problem, which nearly halves the per-step overhead).
EPS_FREE = {"Thompson Sampling", "UCB1", "KL-UCB"}


def problem(eps: float) -> np.ndarray:
    """Means of the K arms: 0.5 for the best, 0.5 - eps for the others."""
    return np.array([0.5] + [0.5 - eps] * (K - 1))


def checkpoints(horizon: int, n: int) -> np.ndarray:
    """Log-spaced steps from 10 to T, always including T/10 and T."""
    cps = np.unique(np.geomspace(10, horizon, n).astype(np.int64))
    return np.unique(np.concatenate([cps, [max(horizon // 10, 1), horizon]]))


def simulate_task(name: str, epsilons: list[float], horizon: int, runs: int, seed: int,
                  cps: np.ndarray) -> dict:
    """One policy on the problems ``epsilons`` (``runs`` runs each) in one batched simulation.

    Returns per-eps mean regret curves and standard errors, wall and CPU seconds.
    """
    t0, c0 = time.perf_counter(), time.process_time()
    means = np.repeat(np.stack([problem(e) for e in epsilons]), runs, axis=0)
    res = bd.simulate_bernoulli(POLICIES[name](epsilons[0]), means, horizon, len(means),
                                seed=seed, checkpoints=cps)
    out: dict = {"name": name, "epsilons": epsilons, "curves": {}, "sem": {},
                 "seconds": time.perf_counter() - t0, "cpu_seconds": time.process_time() - c0}
    for i, eps in enumerate(epsilons):
        reg = res.cumulative_regret[i * runs:(i + 1) * runs]
        out["curves"][str(eps)] = reg.mean(axis=0).tolist()
        out["sem"][str(eps)] = (reg.std(axis=0, ddof=1) / np.sqrt(runs)).tolist() \
            if runs > 1 else [0.0] * len(cps)
    return out


def run(horizon: int, runs: int, epsilons: list[float], seed: int, n_checkpoints: int,
        policies: list[str], partial: Path | None = None, jobs: int = 1) -> dict:
    """Simulate every policy on every problem; returns mean regret curves and timings.

    Policies in :data:`EPS_FREE` run all problems in one batch of ``runs * len(epsilons)``
    runs; epsilon-greedy (tuned to each gap) runs one batch per problem. With ``jobs > 1`` the
    batches run in that many worker processes (joblib). With ``partial``, the results so far are
    written there (JSON) as batches finish, so a long run can be inspected while it goes.
    """
    cps = checkpoints(horizon, n_checkpoints)
    out: dict = {"horizon": horizon, "runs": runs, "checkpoints": cps.tolist(), "problems": {
        str(eps): {"lai_robbins": bd.lai_robbins_constant(problem(eps)), "curves": {}, "sem": {},
                   "seconds": {}, "cpu_seconds": {}} for eps in epsilons}, "tasks": []}
    tasks = [(name, list(epsilons)) for name in policies if name in EPS_FREE]
    tasks += [(name, [eps]) for name in policies if name not in EPS_FREE for eps in epsilons]

    def record(task: dict) -> None:
        out["tasks"].append({k: task[k] for k in ("name", "epsilons", "seconds",
                                                  "cpu_seconds")})
        for eps in task["epsilons"]:
            prob = out["problems"][str(eps)]
            prob["curves"][task["name"]] = task["curves"][str(eps)]
            prob["sem"][task["name"]] = task["sem"][str(eps)]
            prob["seconds"][task["name"]] = task["seconds"]
            prob["cpu_seconds"][task["name"]] = task["cpu_seconds"]
            logging.info("eps=%g %s: final regret %.1f (batch of %d runs: %.1fs wall, %.1fs CPU)",
                         eps, task["name"], task["curves"][str(eps)][-1],
                         runs * len(task["epsilons"]), task["seconds"], task["cpu_seconds"])
        if partial is not None:
            partial.write_text(json.dumps(out))

    if jobs > 1:
        from joblib import Parallel, delayed
        parallel = Parallel(n_jobs=jobs, return_as="generator_unordered")
        for task in parallel(delayed(simulate_task)(name, eps_list, horizon, runs, seed, cps)
                             for name, eps_list in tasks):
            record(task)
    else:
        for name, eps_list in tasks:
            record(simulate_task(name, eps_list, horizon, runs, seed, cps))
    # present the curves in the command's policy order whatever order the batches finished in
    for prob in out["problems"].values():
        for key in ("curves", "sem", "seconds", "cpu_seconds"):
            prob[key] = {name: prob[key][name] for name in policies if name in prob[key]}
    return out


def late_slope(cps: np.ndarray, curve: np.ndarray, horizon: int) -> float:
    """Regret gained between T/10 and T divided by log(10)."""
    lo = int(np.flatnonzero(cps == max(horizon // 10, 1))[0])
    return float((curve[-1] - curve[lo]) / np.log(cps[-1] / cps[lo]))


def plot(results: dict, path: Path) -> None:
    """One panel per eps: mean cumulative regret (± 2 s.e.) against T on a log axis."""
    cps = np.asarray(results["checkpoints"])
    probs = results["problems"]
    fig, axes = plt.subplots(1, len(probs), figsize=(6.2 * len(probs), 4.6), squeeze=False)
    for ax, (eps, prob) in zip(axes[0], probs.items(), strict=True):
        for name, curve in prob["curves"].items():
            c, s = np.asarray(curve), np.asarray(prob["sem"][name])
            line, = ax.plot(cps, c, label=name, lw=1.8)
            ax.fill_between(cps, c - 2 * s, c + 2 * s, color=line.get_color(), alpha=0.2, lw=0)
        lr = prob["lai_robbins"]
        ax.plot(cps, lr * np.log(cps), "k--", lw=1.3,
                label=f"Lai-Robbins bound ({lr:.1f} log T)")
        ax.set_xscale("log")
        ax.set_xlabel("T (pulls)")
        ax.set_ylabel("cumulative pseudo-regret")
        ax.set_title(f"K = {K}, best 0.5, others 0.5 - {eps} ({results['runs']} runs)")
        ax.grid(True, which="both", alpha=0.3)
        ax.legend(fontsize=8, loc="upper left")
    fig.suptitle("Chapelle & Li (2011), Figure 1, reproduced with recbandits")
    fig.tight_layout()
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=120)
    plt.close(fig)


def main(argv: list[str] | None = None) -> dict:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--horizon", type=int, default=1_000_000)
    parser.add_argument("--runs", type=int, default=100)
    parser.add_argument("--eps", type=float, nargs="+", default=[0.1, 0.02])
    parser.add_argument("--policies", nargs="+", default=list(POLICIES), choices=list(POLICIES))
    parser.add_argument("--seed", type=int, default=2011)
    parser.add_argument("--checkpoints", type=int, default=60)
    parser.add_argument("--jobs", type=int, default=1,
                        help="worker processes for the policy batches (default 1)")
    parser.add_argument("--out", type=Path, default=Path("docs/chapelle_li.png"))
    parser.add_argument("--json", type=Path, default=None, help="also save the curves as JSON")
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(message)s")
    t0, c0 = time.perf_counter(), time.process_time()
    results = run(args.horizon, args.runs, args.eps, args.seed, args.checkpoints, args.policies,
                  partial=args.json, jobs=args.jobs)
    results["config"] = {k: (str(v) if isinstance(v, Path) else v) for k, v in vars(args).items()}
    plot(results, args.out)
    if args.json:
        args.json.write_text(json.dumps(results))
    cps = np.asarray(results["checkpoints"])
    summary = {}
    print(f"Chapelle & Li 2011, Figure 1: K={K}, T={args.horizon}, runs={args.runs}, "
          f"seed={args.seed}; figure: {args.out}")
    for eps, prob in results["problems"].items():
        lr = prob["lai_robbins"]
        print(f"\neps={eps}: Lai-Robbins constant {lr:.2f}")
        for name, curve in prob["curves"].items():
            slope = late_slope(cps, np.asarray(curve), args.horizon)
            shared = " (batch shared by all eps)" if name in EPS_FREE and len(args.eps) > 1 else ""
            print(f"  {name:18s} final regret {curve[-1]:9.1f}   late slope {slope:8.2f} "
                  f"(x{slope / lr:.3f} Lai-Robbins)   {prob['seconds'][name]:7.1f}s wall "
                  f"{prob['cpu_seconds'][name]:7.1f}s CPU{shared}")
        if "Thompson Sampling" in prob["curves"]:
            ts = np.asarray(prob["curves"]["Thompson Sampling"])
            summary[f"eps{eps}_ts_late_slope_over_lai_robbins"] = late_slope(
                cps, ts, args.horizon) / lr
            if "UCB1" in prob["curves"]:
                summary[f"eps{eps}_ts_final_regret_over_ucb1"] = ts[-1] / prob["curves"]["UCB1"][-1]
            summary[f"eps{eps}_ts_final_regret"] = float(ts[-1])
    summary["seconds_total"] = time.perf_counter() - t0
    # this process's CPU, plus the batches' when they ran in worker processes
    summary["cpu_seconds_total"] = time.process_time() - c0 + (
        sum(t["cpu_seconds"] for t in results["tasks"]) if args.jobs > 1 else 0.0)
    print()
    for key, value in summary.items():
        print(f"{key}: {value:.4g}")
    return results


if __name__ == "__main__":
    main()
