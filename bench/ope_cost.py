"""Cost of ``recbandits ope`` on a decision log of 10^6 decisions (SQLite), and of the estimators.

1. Writes a synthetic service log (``serving.offpolicy.simulate_service_log``: the service's
   Thompson Sampling, refreshed every ``--refresh-every`` decisions, against Bernoulli users with
   like rates 0.10 / 0.15 / 0.12 / 0.08 for four arms) into an SQLite file.
2. Runs ``recbandits ope --db ... --bootstrap B`` in a child process: wall time and peak RSS
   (``getrusage(RUSAGE_CHILDREN).ru_maxrss``).
3. In this process, times the phases (read the log, build the candidates, estimate with the
   bootstrap) and the estimators alone (IPS, SNIPS and DR point estimates of one target policy)
   against a naive Python loop over the decisions on the same arrays, checking they agree.

Usage::

    RECBANDITS_DATA=/work/shared/data .venv/bin/python bench/ope_cost.py            # 10^6
    .venv/bin/python bench/ope_cost.py --n 100000 --bootstrap 200                   # quick

Ends with ``name: value`` lines.
"""

from __future__ import annotations

import argparse
import resource
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

from bandits import ope
from serving import offpolicy

RATES = {"svd": 0.10, "sequential": 0.15, "autoencoder": 0.12, "popularity": 0.08}


def naive_estimates(r: np.ndarray, a: np.ndarray, p0: np.ndarray, pe: np.ndarray,
                    q: np.ndarray) -> tuple[float, float, float]:
    """IPS, SNIPS and DR with one Python loop over the decisions (the baseline)."""
    num = den = dr = 0.0
    r_l, a_l, p_l, pe_l, q_l = r.tolist(), a.tolist(), p0.tolist(), pe.tolist(), q.tolist()
    for i in range(len(r_l)):
        w = pe_l[i][a_l[i]] / p_l[i]
        num += w * r_l[i]
        den += w
        dr += sum(x * y for x, y in zip(pe_l[i], q_l[i], strict=True)) \
            + w * (r_l[i] - q_l[i][a_l[i]])
    n = len(r_l)
    return num / n, num / den, dr / n


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--n", type=int, default=1_000_000, help="decisions (default 10^6)")
    parser.add_argument("--bootstrap", type=int, default=200, help="resamples (default 200)")
    parser.add_argument("--refresh-every", type=int, default=2000,
                        help="decisions between policy refreshes in the simulated log")
    parser.add_argument("--db", help="reuse (or keep) this SQLite file")
    args = parser.parse_args(argv)

    folder = Path(tempfile.mkdtemp(prefix="recbandits-ope-bench-"))
    db = Path(args.db) if args.db else folder / "log.db"
    url = f"sqlite:///{db}"
    gen_s = float("nan")
    if not db.exists():
        t = time.perf_counter()
        info = offpolicy.simulate_service_log(
            url, list(RATES), offpolicy.bernoulli_users(list(RATES.values())), args.n, seed=0,
            refresh_every=args.refresh_every, propensity_grid=512)
        gen_s = time.perf_counter() - t
        print(f"wrote {info['decisions']} decisions and {info['feedback']} feedback rows in "
              f"{gen_s:.1f} s ({db.stat().st_size / 1e6:.0f} MB)", flush=True)

    # --- the command, as a user runs it
    cmd = [sys.executable, "-m", "experiments.cli", "ope", "--db", url, "--out",
           str(folder / "ope"), "--bootstrap", str(args.bootstrap), "--seed", "0"]
    t = time.perf_counter()
    done = subprocess.run(cmd, capture_output=True, text=True, check=False)
    cli_s = time.perf_counter() - t
    peak_mb = resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss / 1024
    if done.returncode != 0:
        print(done.stdout, done.stderr, file=sys.stderr)
        return 1
    print(done.stdout)

    # --- phases in this process
    t = time.perf_counter()
    log = offpolicy.read_log(url)
    read_s = time.perf_counter() - t
    t = time.perf_counter()
    targets = offpolicy.candidate_policies(log)
    cand_s = time.perf_counter() - t
    q = offpolicy.reward_model(log)
    t = time.perf_counter()
    reports = ope.evaluate_policies(log.rewards, log.actions, log.propensities, targets, q,
                                    logging_pmf=log.pmf, n_bootstrap=args.bootstrap,
                                    random_state=0)
    est_s = time.perf_counter() - t

    # --- estimators alone: vectorised vs a Python loop, one target policy
    pe = targets["uniform"]
    t = time.perf_counter()
    sums = ope.estimator_terms(log.rewards, log.actions, log.propensities, pe, q).sum(axis=0)
    vec = (sums[0] / log.n, sums[0] / sums[1], sums[2] / log.n)
    vec_s = time.perf_counter() - t
    t = time.perf_counter()
    naive = naive_estimates(log.rewards, log.actions, log.propensities, pe, q)
    loop_s = time.perf_counter() - t
    if not np.allclose(vec, naive, rtol=1e-9):
        print(f"MISMATCH vectorised {vec} vs loop {naive}", file=sys.stderr)
        return 1
    logging_ips = reports["logging"].estimates["ips"].value
    print(f"logging policy IPS {logging_ips:.6f} vs observed {log.rewards.mean():.6f}")

    print(f"decisions: {log.n}")
    print(f"policy_observations: {log.obs_actions.size}")
    print(f"candidates: {len(targets)}")
    print(f"bootstrap_resamples: {args.bootstrap}")
    print(f"generate_log_s: {gen_s:.1f}")
    print(f"ope_cli_wall_s: {cli_s:.1f}")
    print(f"ope_cli_peak_rss_mb: {peak_mb:.0f}")
    print(f"phase_read_log_s: {read_s:.2f}")
    print(f"phase_candidates_s: {cand_s:.2f}")
    print(f"phase_estimates_with_bootstrap_s: {est_s:.2f}")
    print(f"estimators_vectorised_s: {vec_s:.4f}")
    print(f"estimators_python_loop_s: {loop_s:.2f}")
    print(f"estimators_speedup_vs_loop: {loop_s / vec_s:.0f}")
    print(f"logging_ips_minus_observed: {abs(logging_ips - log.rewards.mean()):.2e}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
