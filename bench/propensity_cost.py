"""CPU cost of the selection probabilities the service logs and ``ope`` replays.

:func:`bandits.base.probability_of_max` integrates every arm at once (one special-function call
per block of runs) and never evaluates an arm's own CDF. Its peer in the same run is the rule as
it was computed before (one arm at a time, every arm's CDF, arm k's factor set to 1), written
out below, on the same posteriors; the two agree to ~1e-16 (printed).

Cases, each timed in CPU seconds of this process (``time.process_time``, best of ``--repeat``):

* LinTS, one context (the service's miss: a user whose features changed), d = 100, K = 5,
  the service's 256 intervals: the whole ``action_probabilities`` call, and the quadrature alone
  against the old rule;
* LinTS replayed over a block of 2,000 logged contexts (``ope``: one batched call per refresh
  block), d = 53: the whole ``probabilities_batch`` call (prediction included) against the old
  rule's quadrature alone;
* Beta Thompson Sampling, K = 5 (the refresher's snapshot).

Usage::

    .venv/bin/python bench/propensity_cost.py [--repeat 5]

Prints ``cat /proc/loadavg`` at the start and the end, then ``name: value`` lines.
"""

from __future__ import annotations

import argparse
import time
from collections.abc import Callable

import numpy as np
from host import load_average
from scipy import special

from bandits import LinTS, ThompsonSampling
from bandits.base import BatchState, quadrature_grid
from bandits.gaussian import gaussian_probability_of_max, normal_quantiles


def one_arm_at_a_time(loc: np.ndarray, scale: np.ndarray, n_grid: int) -> np.ndarray:
    """The normal quadrature as computed before: per arm, every arm's CDF, its own set to 1."""
    _, du = quadrature_grid(n_grid)
    z = normal_quantiles(n_grid)  # cached, as LinTS's own were
    R, K = loc.shape
    probs = np.empty((R, K))
    for k in range(K):
        x = loc[:, k, None] + scale[:, k, None] * z[None, :]
        F = special.ndtr((x[:, None, :] - loc[:, :, None]) / scale[:, :, None])
        F[:, k, :] = 1.0
        g = F.prod(axis=1)
        probs[:, k] = 0.5 * (g[:, :-1] @ du + g[:, 1:] @ du)
    probs = np.clip(probs, 0.0, None)
    return probs / probs.sum(axis=1, keepdims=True)


def cpu_us(fn: Callable[[], object], calls: int, repeat: int) -> float:
    """Best CPU microseconds a call of ``fn`` over ``repeat`` rounds of ``calls`` calls."""
    best = float("inf")
    for _ in range(repeat):
        start = time.process_time()
        for _ in range(calls):
            fn()
        best = min(best, (time.process_time() - start) / calls)
    return best * 1e6


def trained_lints(d: int, n_arms: int, rng: np.random.Generator) -> LinTS:
    """LinTS after 500 logged rewards on random contexts (arms pulled unevenly)."""
    policy = LinTS(n_arms, n_features=d, propensity_grid=256, random_state=0)
    weights = np.linspace(1.0, 3.0, n_arms)
    for _ in range(500):
        arm = int(rng.choice(n_arms, p=weights / weights.sum()))
        policy.update(arm, float(rng.random() < 0.3), rng.random(d))
    return policy


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeat", type=int, default=5, help="timed repeats of each case")
    args = parser.parse_args(argv)
    print("load average at start:", load_average())
    rng = np.random.default_rng(0)
    out: dict[str, float] = {}

    policy = trained_lints(100, 5, rng)
    x = rng.random(100)
    mean, sd = policy._posterior(policy.state_, x[None, :])  # the quadrature's inputs
    out["lints_d100_call_us"] = cpu_us(lambda: policy.action_probabilities(x), 200, args.repeat)
    out["lints_d100_quadrature_us"] = cpu_us(
        lambda: gaussian_probability_of_max(mean, sd, None, 256), 200, args.repeat)
    out["lints_d100_quadrature_old_rule_us"] = cpu_us(
        lambda: one_arm_at_a_time(mean, sd, 256), 200, args.repeat)
    out["lints_quadrature_speedup"] = (out["lints_d100_quadrature_old_rule_us"]
                                       / out["lints_d100_quadrature_us"])
    out["lints_max_abs_difference"] = float(np.abs(
        gaussian_probability_of_max(mean, sd, None, 256)[0]
        - one_arm_at_a_time(mean, sd, 256)).max())

    replay = trained_lints(53, 5, rng)
    n = 2000
    state = BatchState(stats={k: np.repeat(v, n, axis=0) for k, v in replay.state_.stats.items()},
                       pending_arms=np.repeat(replay.state_.pending_arms, n, axis=0),
                       pending_rewards=np.repeat(replay.state_.pending_rewards, n, axis=0),
                       pending_contexts=np.repeat(replay.state_.pending_contexts, n, axis=0))
    contexts = rng.random((n, 53))
    out["lints_replay_2000_us_per_decision"] = cpu_us(
        lambda: replay.probabilities_batch(state, contexts), 1, args.repeat) / n
    bmean, bsd = replay._posterior(state, contexts)
    out["lints_replay_2000_old_rule_us_per_decision"] = cpu_us(
        lambda: one_arm_at_a_time(bmean, bsd, 256), 1, args.repeat) / n

    ts = ThompsonSampling(5, propensity_grid=256)
    for _ in range(500):
        arm = int(rng.integers(5))
        ts.update(arm, float(rng.random() < 0.1 + 0.02 * arm))
    out["beta_ts_k5_call_us"] = cpu_us(ts.action_probabilities, 20, args.repeat)

    print("load average at end:", load_average())
    for name, value in out.items():
        print(f"{name}: {value:.3g}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
