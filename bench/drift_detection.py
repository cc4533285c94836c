"""Do the change detectors fire near a drift of tastes and rarely elsewhere? (issue 15, the lab)

Setup: per-arm reward streams (reward 1 when anything in the slate is liked) from simulated
MovieLens 100K users with arms svd, sequential, autoencoder and popularity, one arm drawn
uniformly per step (:class:`bandits.RandomPolicy`, so every arm's stream is watched), ``--runs``
runs, each one sub-environment of the native vector env. One detector per arm
(:class:`bandits.PageHinkley`, :class:`bandits.CUSUM`); an alarm of any arm is an alarm of the run.

Three sets of runs, each from its own seeds:

1. **calibration**: ``recbandits/MovieLensSim-v0`` (stationary tastes) with the drift env's four
   arms, ``--calibration-steps`` steps. Each detector's threshold is the smallest value of a grid
   whose false-alarm rate on these runs is at most ``--target-rate`` alarms per 1,000 steps
   (all arms together); ``delta`` and ``min_samples`` are the classes' defaults (printed). The
   classes' default thresholds are the values this step chose with the default options.
2. **stationary**: the same env, ``--pre + --post`` steps, fresh seeds: the out-of-sample
   false-alarm rate, and a placebo "detection rate": the share of runs with an alarm in the
   same window of ``--window`` steps that follows step ``--pre`` (what chance alone gives).
3. **drift**: ``--pre`` steps of the stationary env, then ``--post`` steps of
   ``recbandits/MovieLensSimDrift-v0`` from its reset: its tastes start turning at its step 0
   (the change, at step ``--pre`` of the run) and have turned fully ``drift_steps = 500`` steps
   later (a ramp, not a jump). At the change, the drift env equals the stationary one (same
   users, arms and slates; angle and herding 0) except that the users' boredom state starts
   afresh: boredom 0.1 per repeated slate, decaying by half per visit, about one visit per user
   in 1,000 steps (measured: the stationary runs' reward rate moves by less than the arms' shifts,
   printed below). Figures: detection rate (share of runs with an alarm within ``--window``
   steps of the change), median delay of those alarms in steps, false alarms per 1,000 steps
   before the change; per arm, the share of runs whose arm alarmed within the window.

Intervals: 95% percentile bootstrap over runs (``--bootstrap`` resamples).

Usage::

    RECBANDITS_DATA=/path/to/data .venv/bin/python bench/drift_detection.py           # 300 runs
    ... --runs 100 --pre 1000 --post 1000 --window 500 --target-rate 0.1 --json /tmp/d.json

Prints the load average at the start and the end and ``name: value`` lines at the end.
"""

from __future__ import annotations

import argparse
import inspect
import json
import os
import time
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import gymnasium
import numpy as np
from host import load_average

import bandits as bd
import envs
from envs.factories import DRIFT_ARMS

STATIONARY_ID = "recbandits/MovieLensSim-v0"
DRIFT_ID = "recbandits/MovieLensSimDrift-v0"
#: The threshold grid of each detector; ``delta`` and ``min_samples`` are the class defaults,
#: fixed before calibration (only the threshold is fitted here).
DETECTORS: dict[str, tuple[type[bd.ChangeDetector], np.ndarray]] = {
    "page_hinkley": (bd.PageHinkley, np.arange(4.0, 40.01, 1.0)),
    "cusum": (bd.CUSUM, np.arange(2.0, 40.01, 0.5)),
}


def defaults(cls: type[bd.ChangeDetector]) -> dict[str, Any]:
    """The class's default ``threshold``, ``delta`` and ``min_samples``."""
    params = inspect.signature(cls).parameters
    return {name: params[name].default for name in ("threshold", "delta", "min_samples")}


@dataclass(frozen=True)
class Config:
    """Everything a run depends on (printed with the results)."""

    runs: int = 300
    pre: int = 1000
    post: int = 1000
    window: int = 1000
    calibration_runs: int = 300
    calibration_steps: int = 2000
    target_rate: float = 0.1
    bootstrap: int = 1000
    seed: int = 0


def streams(env_id: str, runs: int, steps: int, seed: int) -> tuple[np.ndarray, np.ndarray]:
    """Arms played and rewards, each ``(steps, runs)``, under the uniform policy."""
    env = gymnasium.make_vec(env_id, num_envs=runs, max_episode_steps=steps, arms=DRIFT_ARMS)
    policy = bd.RandomPolicy(list(DRIFT_ARMS))
    state = policy.init_batch(runs)
    rng = np.random.default_rng(seed)
    env.reset(seed=seed)
    arms = np.empty((steps, runs), dtype=np.int64)
    rewards = np.empty((steps, runs))
    for t in range(steps):
        arms[t] = policy.select_batch(state, rng)
        rewards[t] = env.step(arms[t])[1]
    env.close()
    return arms, np.minimum(rewards, 1.0)


def alarm_matrix(detector: bd.ChangeDetector, arms: np.ndarray, rewards: np.ndarray
                 ) -> np.ndarray:
    """Alarms per step, run and arm, ``(steps, runs, K)`` bool (an arm alarms only when played)."""
    steps, runs = arms.shape
    state = detector.init_batch(runs)
    out = np.zeros((steps, runs, detector.n_arms), dtype=bool)
    for t in range(steps):
        fired = detector.update_batch(state, arms[t], rewards[t])
        out[t, fired, arms[t, fired]] = True
    return out


def rate_per_1000(alarms: np.ndarray) -> float:
    """False alarms per 1,000 steps, all arms and runs together."""
    return float(alarms.sum() / (alarms.shape[0] * alarms.shape[1]) * 1000)


def calibrate(name: str, arms: np.ndarray, rewards: np.ndarray, target: float
              ) -> tuple[float, list[tuple[float, float]]]:
    """The smallest grid threshold whose rate on the calibration runs is at most ``target``."""
    cls, grid = DETECTORS[name]
    params = {**defaults(cls), "threshold": None}
    curve = []
    for threshold in grid:
        params["threshold"] = float(threshold)
        rate = rate_per_1000(alarm_matrix(cls(list(DRIFT_ARMS), **params), arms, rewards))
        curve.append((float(threshold), rate))
        if rate <= target:
            return float(threshold), curve
    raise SystemExit(f"{name}: no threshold up to {grid[-1]} reaches {target} alarms per 1,000 "
                     "steps; extend the grid")


def interval(values: np.ndarray, rng: np.random.Generator, n_boot: int, stat: Any
             ) -> tuple[float, float, float]:
    """``stat`` over runs (axis 0) and its 95% percentile bootstrap interval over runs."""
    idx = rng.integers(len(values), size=(n_boot, len(values)))
    boot = np.array([stat(values[i]) for i in idx])
    low, high = np.nanquantile(boot, [0.025, 0.975])
    return float(stat(values)), float(low), float(high)


def summarise(alarms_drift: np.ndarray, alarms_stat: np.ndarray, cfg: Config,
              rng: np.random.Generator) -> dict[str, Any]:
    """Detection rate, median delay and false-alarm rates of one detector, with intervals.

    ``alarms_drift`` and ``alarms_stat`` are :func:`alarm_matrix` of the drift and the stationary
    runs.
    """
    change, end = cfg.pre, cfg.pre + cfg.window
    per_run = alarms_drift.any(axis=2)  # (steps, runs)
    in_window = per_run[change:end]
    detected = in_window.any(axis=0)
    delay = np.where(detected, in_window.argmax(axis=0) + 1.0, np.nan)
    placebo = alarms_stat.any(axis=2)[change:end].any(axis=0)
    pre_counts = alarms_drift[:change].sum(axis=(0, 2)) / change * 1000
    stat_counts = alarms_stat.sum(axis=(0, 2)) / alarms_stat.shape[0] * 1000
    stat_pre_counts = alarms_stat[:change].sum(axis=(0, 2)) / change * 1000
    per_arm = alarms_drift[change:end].any(axis=0).mean(axis=0)
    return {
        "detection_rate": interval(detected.astype(float), rng, cfg.bootstrap, np.mean),
        "median_delay": interval(delay, rng, cfg.bootstrap,
                                 lambda d: np.nanmedian(d) if np.isfinite(d).any() else np.nan),
        "placebo_detection_rate": interval(placebo.astype(float), rng, cfg.bootstrap, np.mean),
        "false_alarms_per_1000_before_change": interval(pre_counts, rng, cfg.bootstrap, np.mean),
        "false_alarms_per_1000_stationary": interval(stat_counts, rng, cfg.bootstrap, np.mean),
        # the same first --pre steps of the stationary runs: the like-for-like comparison
        "false_alarms_per_1000_stationary_before": interval(stat_pre_counts, rng, cfg.bootstrap,
                                                            np.mean),
        "per_arm_detection": dict(zip(DRIFT_ARMS, per_arm.round(3).tolist(), strict=True)),
    }


def run(cfg: Config) -> dict[str, Any]:
    """Calibrate every detector, then measure it on stationary and drifting runs."""
    seeds = np.random.SeedSequence(cfg.seed).generate_state(4)
    calib = streams(STATIONARY_ID, cfg.calibration_runs, cfg.calibration_steps, int(seeds[0]))
    stat = streams(STATIONARY_ID, cfg.runs, cfg.pre + cfg.post, int(seeds[1]))
    before = streams(STATIONARY_ID, cfg.runs, cfg.pre, int(seeds[2]))
    after = streams(DRIFT_ID, cfg.runs, cfg.post, int(seeds[3]))
    drift = (np.concatenate([before[0], after[0]]), np.concatenate([before[1], after[1]]))
    env = gymnasium.make(DRIFT_ID, arms=DRIFT_ARMS).unwrapped
    p = env.arrival_probabilities
    expected = {t: (p @ env.expected_reward_matrix(t)).round(3).tolist() for t in (0, 250, 500)}
    observed = {
        "stationary_first_500": stat[1][:500].mean().round(4).item(),
        "stationary_last_500": stat[1][-500:].mean().round(4).item(),
    }
    rng = np.random.default_rng(cfg.seed)
    results: dict[str, Any] = {"expected_reward_by_drift_step": expected,
                               "observed_reward_rate": observed}
    for name, (cls, _) in DETECTORS.items():
        threshold, curve = calibrate(name, *calib, cfg.target_rate)
        chosen = {**defaults(cls), "threshold": threshold}
        results[name] = {
            "params": chosen,
            "class_default_threshold": defaults(cls)["threshold"],
            "calibration_rate": curve[-1][1],
            "calibration_curve": curve,
            **summarise(alarm_matrix(cls(list(DRIFT_ARMS), **chosen), *drift),
                        alarm_matrix(cls(list(DRIFT_ARMS), **chosen), *stat), cfg, rng),
        }
    return results


def main(argv: list[str] | None = None) -> int:
    """Parse the options, run, print the figures."""
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    defaults = Config()
    for name, value in asdict(defaults).items():
        parser.add_argument(f"--{name.replace('_', '-')}", type=type(value), default=value)
    parser.add_argument("--json", type=Path, default=None, help="write the results here")
    args = parser.parse_args(argv)
    cfg = Config(**{k: getattr(args, k) for k in asdict(defaults)})
    print(f"load average at start: {load_average()}; RECBANDITS_DATA="
          f"{os.environ.get('RECBANDITS_DATA')}; envs {envs.__name__}; config {asdict(cfg)}")
    start = time.perf_counter()
    results = run(cfg)
    print(f"expected reward per arm {list(DRIFT_ARMS)} at drift steps 0/250/500: "
          f"{results['expected_reward_by_drift_step']}")
    print(f"observed reward rate (stationary runs): {results['observed_reward_rate']}")
    print("\n| detector | params | detection within W | median delay (steps) | placebo "
          "| false alarms /1000 before change | same steps, stationary | false alarms /1000 "
          "stationary, all steps |")
    print("|---|---|---:|---:|---:|---:|---:|---:|")

    def fmt(v: tuple[float, float, float], digits: int = 3) -> str:
        return f"{v[0]:.{digits}f} [{v[1]:.{digits}f}, {v[2]:.{digits}f}]"

    for name in DETECTORS:
        r = results[name]
        print(f"| {name} | {r['params']} | {fmt(r['detection_rate'])} "
              f"| {fmt(r['median_delay'], 0)} | {fmt(r['placebo_detection_rate'])} "
              f"| {fmt(r['false_alarms_per_1000_before_change'])} "
              f"| {fmt(r['false_alarms_per_1000_stationary_before'])} "
              f"| {fmt(r['false_alarms_per_1000_stationary'])} |")
    for name in DETECTORS:
        print(f"{name} per-arm detection within W: {results[name]['per_arm_detection']}; "
              f"threshold chosen {results[name]['params']['threshold']}, class default "
              f"{results[name]['class_default_threshold']}")
    print(f"\nseconds: {time.perf_counter() - start:.1f}; load average at end: {load_average()}")
    for name in DETECTORS:
        r = results[name]
        print(f"{name}_threshold: {r['params']['threshold']}")
        print(f"{name}_detection_rate: {r['detection_rate'][0]:.4g}")
        print(f"{name}_median_delay: {r['median_delay'][0]:.4g}")
        print(f"{name}_false_alarms_per_1000_stationary: "
              f"{r['false_alarms_per_1000_stationary'][0]:.4g}")
    if args.json:
        args.json.write_text(json.dumps({"config": asdict(cfg), **results}, indent=1))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
