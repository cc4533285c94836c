"""Arm pulls per second: batched Beta-Bernoulli Thompson Sampling against MABWiser and VW.

The seed problem: three arms ("SVD", "Sequential", "Autoencoder") with click rates 0.10, 0.15 and
0.12. Every contender runs the same loop (choose an arm, draw a Bernoulli click, learn it), on
the same machine in the same process:

* recbandits: ``ThompsonSampling.select_batch`` / ``update_batch`` advancing ``--runs``
  independent runs per numpy step (float32 statistics, reusable Gamma buffers, one shared
  Generator, ``numpy.random.default_rng``'s PCG64 unless ``--bit-generator`` says otherwise);
  also the same loop with numpy's own Gamma sampler in place of the vectorised one
  (``bandits.base.standard_gamma``) and without the one-uniform path for ``alpha == 1``
  (``bandits.thompson.beta_odds_draws``), i.e. the code before both, and the same loop with
  only the one-uniform path switched off, so each one's share is measured in the same run;
* MABWiser ``LearningPolicy.ThompsonSampling()``: ``predict()`` + ``partial_fit`` per step;
* Vowpal Wabbit ``--cb_explore 3`` (epsilon-greedy exploration): ``predict`` (a pmf), sample an
  arm from it, ``learn`` the ``action:cost:probability`` label, per step.

Each contender also reports the share of its last pulls that went to the best arm, so speed is
not bought with wrong answers. Peers come from the ``bench`` extra (``pip install -e .[bench]``);
a missing peer is reported and skipped.

The headline ratio against MABWiser (``ratio_batched_vs_mabwiser_cpu_paired``) is measured so
that machine load cancels out as far as one run can make it:

* **CPU time**, not wall time (``time.process_time``; both sides run on one thread): on a shared
  machine the wall clock also measures how much of a core the scheduler gave each side while it
  ran, which moves by 2-3x between consecutive runs under load (MABWiser's wall rate moved 7x
  between two runs 10 s apart at load 6);
* **interleaved and paired**: ``--pairs`` N gives the sequence M0 R1 M1 R2 ... RN MN, each R one
  whole batched run (``--steps`` steps of ``--runs`` runs from the prior, a fresh state) and
  each M one whole MABWiser run (``--peer-steps`` steps, a fresh model), each some 0.4-0.6 s of
  CPU; pair i's ratio is R_i's pulls per CPU second over the geometric mean of its two
  neighbours M_{i-1} and M_i, so a change of load during the run reaches both sides of a pair;
* **the median of the N paired ratios**, printed with their smallest and largest, rather than
  the best of each side taken apart (which lets the side with more repeats pick a luckier
  moment).

The other figures (the ablations, float64, the single-run path, VW) are best of ``--repeats``,
in wall and CPU time as named.

Usage::

    .venv/bin/python bench/bandits_throughput.py            # defaults below
    .venv/bin/python bench/bandits_throughput.py --runs 200000 --steps 60 --peer-steps 4000
"""

from __future__ import annotations

import argparse
import contextlib
import os
import platform
import time
from collections.abc import Iterator

import numpy as np

import bandits as bd
import bandits.base
import bandits.thompson

ARMS = ["SVD", "Sequential", "Autoencoder"]
MEANS = np.array([0.10, 0.15, 0.12])
BEST = int(MEANS.argmax())


def bench_recbandits(runs: int, steps: int, seed: int, dtype: type = np.float32,
                     bit_generator: str = "PCG64") -> tuple[float, float, float]:
    """Pulls/s (wall), best-arm share of the last step and pulls per CPU second, batched TS."""
    ts = bd.ThompsonSampling(ARMS)
    rng = np.random.Generator(getattr(np.random, bit_generator)(seed))
    means = MEANS.astype(dtype)
    state = ts.init_batch(runs, dtype=dtype)
    u = np.empty(runs, dtype=dtype)
    # warm-up step: allocates the reusable buffers outside the timed region
    arms = ts.select_batch(state, rng)
    ts.update_batch(state, arms, (rng.random(runs, dtype=dtype) < means[arms]).astype(dtype),
                    validate=False)
    t0, c0 = time.perf_counter(), time.process_time()
    for _ in range(steps):
        arms = ts.select_batch(state, rng)
        rng.random(dtype=dtype, out=u)
        ts.update_batch(state, arms, (u < means[arms]).astype(dtype), validate=False)
    elapsed, cpu = time.perf_counter() - t0, time.process_time() - c0
    return runs * steps / elapsed, float((arms == BEST).mean()), runs * steps / cpu


@contextlib.contextmanager
def without_alpha_one_path() -> Iterator[None]:
    """Draw every Beta sample from two Gamma draws, ``alpha == 1`` or not."""
    saved = bandits.thompson.ALPHA_ONE_MIN_SHARE
    bandits.thompson.ALPHA_ONE_MIN_SHARE = np.inf
    try:
        yield
    finally:
        bandits.thompson.ALPHA_ONE_MIN_SHARE = saved


@contextlib.contextmanager
def numpy_gamma_sampler() -> Iterator[None]:
    """Route every Gamma draw to numpy's sampler, two per Beta sample (the code before the
    vectorised sampler and the ``alpha == 1`` path).
    """
    saved = bandits.base.FAST_GAMMA_MIN_SIZE
    bandits.base.FAST_GAMMA_MIN_SIZE = np.iinfo(np.int64).max
    try:
        with without_alpha_one_path():
            yield
    finally:
        bandits.base.FAST_GAMMA_MIN_SIZE = saved


def bench_recbandits_single(steps: int, seed: int) -> tuple[float, float]:
    """Pulls/s of the single-run (serving) path: ``select()`` + ``update()`` per step."""
    ts = bd.ThompsonSampling(ARMS, random_state=seed)
    env = np.random.default_rng(seed + 1)
    picks = []
    t0 = time.perf_counter()
    for _ in range(steps):
        k = ts.select()
        ts.update(k, float(env.random() < MEANS[k]))
        picks.append(k)
    elapsed = time.perf_counter() - t0
    return steps / elapsed, float(np.mean(np.array(picks[-steps // 5:]) == BEST))


def bench_mabwiser(steps: int, seed: int) -> tuple[float, float, float] | str:
    """Pulls/s (wall), best-arm share and pulls per CPU second of MABWiser's TS."""
    try:
        from mabwiser.mab import MAB, LearningPolicy
    except ImportError as exc:
        return f"not installed ({exc}); pip install -e .[bench]"
    mab = MAB(ARMS, LearningPolicy.ThompsonSampling(), seed=seed)
    mab.fit(decisions=ARMS, rewards=[0, 0, 0])  # one observation per arm so predict works
    env = np.random.default_rng(seed + 1)
    picks = []
    t0, c0 = time.perf_counter(), time.process_time()
    for _ in range(steps):
        arm = mab.predict()
        k = ARMS.index(arm)
        mab.partial_fit([arm], [int(env.random() < MEANS[k])])
        picks.append(k)
    elapsed, cpu = time.perf_counter() - t0, time.process_time() - c0
    return (steps / elapsed, float(np.mean(np.array(picks[-steps // 5:]) == BEST)),
            steps / cpu)


def bench_vw(steps: int, seed: int) -> tuple[float, float] | str:
    """Pulls/s of Vowpal Wabbit ``--cb_explore 3``: predict pmf, sample, learn per step."""
    try:
        import vowpalwabbit
    except Exception as exc:  # a broken binary wheel raises more than ImportError
        return f"import failed ({type(exc).__name__}: {exc})"
    vw = vowpalwabbit.Workspace(f"--cb_explore 3 --quiet --random_seed {seed}")
    env = np.random.default_rng(seed + 1)
    picks = []
    t0 = time.perf_counter()
    for _ in range(steps):
        pmf = np.asarray(vw.predict("| bias"), dtype=np.float64)
        pmf /= pmf.sum()
        k = int(env.choice(3, p=pmf))
        cost = -float(env.random() < MEANS[k])
        vw.learn(f"{k + 1}:{cost}:{pmf[k]} | bias")
        picks.append(k)
    elapsed = time.perf_counter() - t0
    vw.finish()
    return steps / elapsed, float(np.mean(np.array(picks[-steps // 5:]) == BEST))


def paired_cpu_ratios(pairs: int, runs: int, steps: int, peer_steps: int, seed: int,
                      bit_generator: str) -> tuple[list[float], list[float], list[float]] | str:
    """Interleaved CPU-time measurement: MABWiser, recbandits, MABWiser, ... (``pairs``
    recbandits runs, each between two MABWiser runs).

    Returns
    -------
    (ratios, recbandits, mabwiser) or str
        Per pair: recbandits' pulls per CPU second over the geometric mean of its two MABWiser
        neighbours'; the recbandits rates (``pairs``) and the MABWiser rates (``pairs + 1``),
        pulls per CPU second. A string when MABWiser is missing.
    """
    first = bench_mabwiser(peer_steps, seed)
    if isinstance(first, str):
        return first
    mab = [first[2]]
    ours = []
    for i in range(pairs):
        ours.append(bench_recbandits(runs, steps, seed + i, bit_generator=bit_generator)[2])
        peer = bench_mabwiser(peer_steps, seed + i + 1)
        assert not isinstance(peer, str)
        mab.append(peer[2])
    ratios = [r / float(np.sqrt(a * b)) for r, a, b in zip(ours, mab[:-1], mab[1:], strict=True)]
    return ratios, ours, mab


def main(argv: list[str] | None = None) -> dict[str, float]:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--runs", type=int, default=200_000, help="batched runs R")
    parser.add_argument("--steps", type=int, default=60, help="batched steps")
    parser.add_argument("--peer-steps", type=int, default=4_000, help="steps for each peer")
    parser.add_argument("--repeats", type=int, default=3, help="best of N (the ablations)")
    parser.add_argument("--pairs", type=int, default=7,
                        help="interleaved recbandits/MABWiser pairs of the paired CPU ratio")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--bit-generator", default="PCG64",
                        choices=["PCG64", "PCG64DXSM", "SFC64", "Philox", "MT19937"],
                        help="bit generator of recbandits' shared Generator (default_rng: PCG64)")
    args = parser.parse_args(argv)

    print(f"seed problem {dict(zip(ARMS, MEANS.tolist(), strict=True))}; "
          f"python {platform.python_version()}, numpy {np.__version__}, {platform.machine()}; "
          f"load average {os.getloadavg()[0]:.2f}")
    paired = paired_cpu_ratios(args.pairs, args.runs, args.steps, args.peer_steps, args.seed,
                               args.bit_generator)
    load_after_pairs = os.getloadavg()[0]
    # Peers first and last, recbandits in between, so a change in machine load during the run
    # hits both sides; best of each pair is kept.
    mab_a = bench_mabwiser(args.peer_steps, args.seed)
    bg = args.bit_generator
    repeats = [bench_recbandits(args.runs, args.steps, args.seed + i, bit_generator=bg)
               for i in range(args.repeats)]
    batched = max(repeats, key=lambda x: x[0])
    batched_cpu = max(x[2] for x in repeats)
    with without_alpha_one_path():
        two_gammas = [bench_recbandits(args.runs, args.steps, args.seed + i, bit_generator=bg)
                      for i in range(args.repeats)]
    with numpy_gamma_sampler():
        batched_np = max((bench_recbandits(args.runs, args.steps, args.seed + i, bit_generator=bg)
                          for i in range(args.repeats)), key=lambda x: x[0])
    batched64 = bench_recbandits(args.runs, args.steps, args.seed, np.float64)
    single = bench_recbandits_single(args.peer_steps, args.seed)
    mab_b = bench_mabwiser(args.peer_steps, args.seed + 1)
    vw = bench_vw(args.peer_steps, args.seed)

    figures: dict[str, float] = {
        "recbandits_batched_pulls_per_s": batched[0],
        "recbandits_batched_pulls_per_cpu_s": batched_cpu,
        "recbandits_batched_two_gammas_pulls_per_cpu_s": max(x[2] for x in two_gammas),
        "speedup_alpha_one_path_cpu": batched_cpu / max(x[2] for x in two_gammas),
        "recbandits_batched_numpy_gamma_pulls_per_s": batched_np[0],
        "speedup_vectorised_vs_numpy_gamma": batched[0] / batched_np[0],
        "recbandits_batched_float64_pulls_per_s": batched64[0],
        "recbandits_single_pulls_per_s": single[0],
    }
    print(f"recbandits batched TS (R={args.runs}, float32, {bg}): {batched[0]:,.0f} pulls/s; "
          f"best-arm share at step {args.steps + 1}: {batched[1]:.3f}")
    print(f"  same, two Gamma draws also at alpha = 1:     "
          f"{max(x[2] for x in two_gammas):,.0f} pulls per CPU s (against {batched_cpu:,.0f})")
    print(f"  same, numpy's Gamma sampler (as before):     {batched_np[0]:,.0f} pulls/s; "
          f"best-arm share at step {args.steps + 1}: {batched_np[1]:.3f}")
    print(f"recbandits batched TS (float64, numpy Gamma):  {batched64[0]:,.0f} pulls/s")
    print(f"recbandits single-run select+update:           {single[0]:,.0f} pulls/s; "
          f"best-arm share (last 20%): {single[1]:.3f}")
    if isinstance(mab_a, str) or isinstance(mab_b, str):
        print(f"MABWiser: {mab_a if isinstance(mab_a, str) else mab_b}")
    else:
        mab = max(mab_a, mab_b, key=lambda x: x[0])
        figures["mabwiser_pulls_per_s"] = mab[0]
        figures["ratio_batched_vs_mabwiser"] = batched[0] / mab[0]
        figures["ratio_single_vs_mabwiser"] = single[0] / mab[0]
        mab_cpu = max(mab_a[2], mab_b[2])
        figures["mabwiser_pulls_per_cpu_s"] = mab_cpu
        figures["ratio_batched_vs_mabwiser_cpu"] = batched_cpu / mab_cpu
        print(f"CPU time: recbandits batched {batched_cpu:,.0f} pulls per CPU second, MABWiser "
              f"{mab_cpu:,.0f}: ratio {batched_cpu / mab_cpu:,.0f}x")
        print(f"MABWiser ThompsonSampling predict+partial_fit: {mab[0]:,.0f} pulls/s "
              f"(runs: {mab_a[0]:,.0f}, {mab_b[0]:,.0f}); best-arm share (last 20%): "
              f"{mab[1]:.3f}")
    if isinstance(vw, str):
        print(f"Vowpal Wabbit: {vw}")
    else:
        figures["vw_pulls_per_s"] = vw[0]
        figures["ratio_batched_vs_vw"] = batched[0] / vw[0]
        print(f"Vowpal Wabbit --cb_explore 3:                  {vw[0]:,.0f} pulls/s; "
              f"best-arm share (last 20%): {vw[1]:.3f}")
    if isinstance(paired, str):
        print(f"paired CPU ratio: MABWiser {paired}")
    else:
        ratios, ours, mabs = paired
        figures["ratio_batched_vs_mabwiser_cpu_paired"] = float(np.median(ratios))
        figures["ratio_batched_vs_mabwiser_cpu_paired_min"] = min(ratios)
        figures["ratio_batched_vs_mabwiser_cpu_paired_max"] = max(ratios)
        figures["recbandits_batched_pulls_per_cpu_s_paired_median"] = float(np.median(ours))
        figures["mabwiser_pulls_per_cpu_s_paired_median"] = float(np.median(mabs))
        print(f"paired CPU ratio ({args.pairs} recbandits runs, each between two MABWiser runs; "
              f"load {load_after_pairs:.2f} after them): median {np.median(ratios):,.0f}x "
              f"(pairs: {', '.join(f'{r:,.0f}' for r in ratios)}); recbandits median "
              f"{np.median(ours) / 1e6:.2f} M pulls per CPU s, MABWiser median "
              f"{np.median(mabs):,.0f}")
    figures["load_average_1min"] = os.getloadavg()[0]
    print()
    for key, value in figures.items():
        print(f"{key}: {value:.4g}")
    return figures


if __name__ == "__main__":
    main()
