"""Cost of ``recbandits ope`` on a decision log of 10^6 decisions (SQLite), and of the estimators.

1. Writes a synthetic service log (``serving.offpolicy.simulate_service_log``: the service's
   Thompson Sampling, refreshed every ``--refresh-every`` decisions, against Bernoulli users with
   like rates 0.10 / 0.15 / 0.12 / 0.08 for four arms) into an SQLite file.
2. Runs ``recbandits ope --db ... --bootstrap B`` in a child process: wall time and peak RSS
   (``getrusage(RUSAGE_CHILDREN).ru_maxrss``).
3. In this process, times the phases (read the log, build the candidates, estimate with the
   bootstrap) and the estimators alone (IPS, SNIPS and DR point estimates of one target policy)
   against a naive Python loop over the decisions on the same arrays, checking they agree.
4. Contextual candidates (``--contextual N``, default 50,000 decisions; 0 skips): a LinTS logging
   policy serves synthetic users with 53-value context vectors (the size of the service's user-v1
   on MovieLens 100K) into a second SQLite log; times reading it, the context-free and the
   contextual candidates (5 LinTS/LinUCB settings and best arm per segment), and the LinTS
   replay's batched propensities (one ``probabilities_batch`` call per refresh block) against
   one ``action_probabilities`` call per decision on the same states (a sample of decisions),
   checking they agree.

Usage::

    RECBANDITS_DATA=/work/shared/data .venv/bin/python bench/ope_cost.py            # 10^6
    .venv/bin/python bench/ope_cost.py --n 100000 --bootstrap 200                   # quick
    .venv/bin/python bench/ope_cost.py --n 0 --contextual 50000     # the contextual part only

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
from host import load_average

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


def user_v1_like_users(n_users: int, seed: int = 0) -> offpolicy.FeatureUsers:
    """Users with 53-value vectors laid out like user-v1 (bias, gender, age, occupation one-hots,
    genre shares, activity, two session values) and like rates linear in gender and age."""
    rng = np.random.default_rng(seed)
    gender, age, job = (rng.integers(2, size=n_users), rng.integers(7, size=n_users),
                        rng.integers(21, size=n_users))
    rows = np.arange(n_users)
    x = np.zeros((n_users, 53))
    x[:, 0] = 1.0
    x[rows, 1 + gender] = 1.0
    x[rows, 3 + age] = 1.0
    x[rows, 10 + job] = 1.0
    x[:, 31:50] = rng.dirichlet(np.ones(19), size=n_users)
    x[:, 50] = rng.random(n_users)
    names = ("bias", "gender=F", "gender=M", *(f"age={a}" for a in range(7)),
             *(f"occupation={o}" for o in range(21)), *(f"genre={g}" for g in range(19)),
             "activity", "session_likes", "session_dislikes")
    base = np.array(list(RATES.values()))
    rates = np.clip(base + np.where(gender[:, None] == 0, [0.08, -0.04, 0.0, 0.0],
                                    [-0.04, 0.08, 0.0, 0.0]) + 0.01 * (age[:, None] - 3)
                    * np.array([1.0, -1.0, 0.5, 0.0]), 0.01, 0.9)
    return offpolicy.FeatureUsers(x, rates, names)


def contextual_part(n: int, refresh_every: int, folder: Path) -> list[str]:
    """Section 4 of the module doc; returns its ``name: value`` lines."""
    from bandits import LinTS

    url = f"sqlite:///{folder / 'contextual.db'}"
    t = time.perf_counter()
    offpolicy.simulate_service_log(url, list(RATES), user_v1_like_users(943), n, seed=0,
                                   refresh_every=refresh_every, policy="LinTS",
                                   propensity_grid=256)
    gen_s = time.perf_counter() - t
    t = time.perf_counter()
    log = offpolicy.read_log(url)
    read_s = time.perf_counter() - t
    t = time.perf_counter()
    plain = offpolicy.candidate_policies(log, linear=())  # context-free + best arm per segment
    plain_s = time.perf_counter() - t
    t = time.perf_counter()
    every = offpolicy.candidate_policies(log)
    every_s = time.perf_counter() - t
    states = n // refresh_every
    lints = offpolicy.LinearCandidate("LinTS", (("scale", 1.0), ("ridge", 1.0)))
    t = time.perf_counter()
    one = offpolicy.candidate_policies(log, ts_priors=(), ts_states=states, linear=[lints])
    batched_s = time.perf_counter() - t
    # the same propensities, one action_probabilities call per decision, for a sample of
    # decisions of one refresh block (the last: the largest statistics); the batched call
    # also computes a context seen twice in the block once
    start = (states - 1) * refresh_every
    sample = np.arange(start, min(start + 500, n))
    policy = LinTS(log.arms, n_features=53, propensity_grid=256, random_state=0)
    mine = log.obs_times < log.created_at[start]
    for x, a, r in zip(log.obs_features[mine], log.obs_actions[mine], log.obs_rewards[mine],
                       strict=True):
        policy.update(int(a), float(r), x)
    t = time.perf_counter()
    loop = np.array([policy.action_probabilities(log.features[i]) for i in sample])
    loop_s = time.perf_counter() - t
    t = time.perf_counter()
    batch = offpolicy.linear_probabilities(
        policy, {k: v[0] for k, v in policy.state_.stats.items()}, log.features[sample])
    block_s = time.perf_counter() - t
    agree = float(np.abs(batch - loop / loop.sum(axis=1, keepdims=True)).max())
    replay_err = float(np.abs(one[lints.name] - log.pmf).max())
    return [
        f"contextual_decisions: {log.n} (d = {log.features.shape[1]})",
        f"contextual_generate_log_s: {gen_s:.1f}",
        f"contextual_read_log_s: {read_s:.2f}",
        f"contextual_candidates: {len(every)} ({len(every) - len(plain)} linear, "
        f"{int(offpolicy.SEGMENT_CANDIDATE in plain)} segment)",
        f"contextual_candidates_without_linear_s: {plain_s:.2f}",
        f"contextual_candidates_all_s: {every_s:.2f}",
        f"contextual_one_lints_replay_s: {batched_s:.2f} ({states} refresh blocks)",
        f"contextual_replay_vs_logged_pmf_max_abs: {replay_err:.1e}",
        f"lints_propensities_per_decision_loop_us: {1e6 * loop_s / sample.size:.0f}",
        f"lints_propensities_batched_us: {1e6 * block_s / sample.size:.1f}",
        f"lints_batched_speedup_vs_loop: {loop_s / block_s:.1f}",
        f"lints_batched_vs_loop_max_abs: {agree:.1e}",
    ]


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--n", type=int, default=1_000_000, help="decisions (default 10^6)")
    parser.add_argument("--bootstrap", type=int, default=200, help="resamples (default 200)")
    parser.add_argument("--refresh-every", type=int, default=2000,
                        help="decisions between policy refreshes in the simulated log")
    parser.add_argument("--db", help="reuse (or keep) this SQLite file")
    parser.add_argument("--contextual", type=int, default=50_000, metavar="N",
                        help="decisions of the LinTS-logged contextual log (0: skip)")
    args = parser.parse_args(argv)
    print(f"load average: {load_average()}", flush=True)
    if args.n == 0:
        folder = Path(tempfile.mkdtemp(prefix="recbandits-ope-bench-"))
        for line in contextual_part(args.contextual, args.refresh_every, folder):
            print(line, flush=True)
        return 0

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
    if args.contextual:
        for line in contextual_part(args.contextual, args.refresh_every, folder):
            print(line, flush=True)
    print(f"load average: {load_average()}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
