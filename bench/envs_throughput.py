"""Throughput of the recommender-arms environments on MovieLens 100K with the three arms.

Measures, in one run on one machine:

* the one-off costs: fitting the arms, precomputing every arm's slate for every user, and
  building the simulator (user model, probabilities, expected rewards);
* the single env through ``gymnasium.make`` (all default wrappers), steps per second;
* the native vector env (``gymnasium.make_vec``), user interactions per second;
* two peers measured in the same run: a plain Python loop that serves each user by asking every
  arm to recommend and looking the responses up item by item (what one writes without
  precomputation), and Gymnasium's ``SyncVectorEnv`` over single envs.

Targets (issue 4): single env >= 20,000 steps/s, vector env >= 1,000,000 interactions/s.
Every rate is the best of ``--repeats`` timed runs (as ``timeit`` does), because the machine may
be shared; the peers are timed the same way.

Run: ``RECBANDITS_DATA=/work/shared/data .venv/bin/python bench/envs_throughput.py``
(``--num-envs``, ``--steps``, ``--env-id`` to change the set-up).
"""

from __future__ import annotations

import argparse
import time

import gymnasium
import numpy as np

import envs  # noqa: F401 - registers the ids
from arms.data import load_movielens, temporal_split
from envs.arm_set import DEFAULT_ARMS, make_arm, precompute_slates


def timed(fn, *args, **kwargs):
    start = time.perf_counter()
    result = fn(*args, **kwargs)
    return result, time.perf_counter() - start


REPEATS = 3


def best_rate(run, work: int) -> float:
    """``work`` units per second of the fastest of :data:`REPEATS` calls of ``run()``."""
    best = np.inf
    for _ in range(REPEATS):
        start = time.perf_counter()
        run()
        best = min(best, time.perf_counter() - start)
    return work / best


def single_env_rate(env_id: str, data, steps: int) -> float:
    env = gymnasium.make(env_id, dataset=data, max_episode_steps=10**9)
    env.reset(seed=0)
    actions = np.random.default_rng(0).integers(0, env.action_space.n, steps).tolist()
    step = env.step

    def run() -> None:
        for a in actions:
            step(a)

    return best_rate(run, steps)


def vector_env_rate(env_id: str, data, num_envs: int, steps: int, mode: str | None = None) -> float:
    extra = {} if mode is None else {"vectorization_mode": mode}
    vec = gymnasium.make_vec(
        env_id, num_envs=num_envs, dataset=data, max_episode_steps=1000, **extra
    )
    vec.reset(seed=0)
    actions = np.random.default_rng(0).integers(0, vec.single_action_space.n, (steps, num_envs))

    def run() -> None:
        for a in actions:
            vec.step(a)

    return best_rate(run, steps * num_envs)


def python_loop_rate(data, steps: int, k: int = 10) -> float:
    """Held-out users served the naive way: live recommend calls and per-item lookups."""
    train, test = temporal_split(data, fraction=0.2)
    arms = [make_arm(name).fit(train) for name in DEFAULT_ARMS]
    future = {
        (u, i): r
        for u, i, r in zip(test.ratings["user_index"], test.ratings["item_index"],
                           test.ratings["rating"], strict=True)
    }
    rng = np.random.default_rng(0)
    users = rng.integers(0, data.n_users, steps)
    actions = rng.integers(0, len(arms), steps)

    def run() -> None:
        for user, action in zip(users.tolist(), actions.tolist(), strict=True):
            expected = []
            for arm in arms:
                slate = arm.recommend(np.array([user]), k)[0][0]
                likes = 0
                for item in slate.tolist():
                    rating = future.get((user, item), 0.0)
                    likes += rating >= 4
                expected.append(float(likes > 0))
            _reward = expected[action]

    return best_rate(run, steps)


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--num-envs", type=int, default=2000)
    parser.add_argument("--steps", type=int, default=30_000, help="single-env steps")
    parser.add_argument("--vector-steps", type=int, default=300)
    parser.add_argument("--env-id", default="recbandits/MovieLens-v0")
    parser.add_argument("--repeats", type=int, default=3)
    args = parser.parse_args(argv)
    global REPEATS
    REPEATS = args.repeats

    data, load_s = timed(load_movielens)
    print(f"MovieLens 100K loaded in {load_s:.2f} s: {data!r}; arms {DEFAULT_ARMS}")
    fitted, fit_s = timed(lambda: [make_arm(name).fit(data) for name in DEFAULT_ARMS])
    _, slate_s = timed(precompute_slates, fitted, data.n_users, 10)
    print(f"one-off: fit 3 arms {fit_s:.2f} s, "
          f"precompute 3 x {data.n_users} slates {slate_s:.3f} s")
    build = {}
    for env_id in (args.env_id, "recbandits/MovieLensSim-v0"):
        _, build[env_id] = timed(gymnasium.make, env_id, dataset=data)
        print(f"build {env_id} (split, fit arms, slates, user model, tables): "
              f"{build[env_id]:.2f} s")

    single = {env_id: single_env_rate(env_id, data, args.steps) for env_id in build}
    vector = {env_id: vector_env_rate(env_id, data, args.num_envs, args.vector_steps)
              for env_id in build}
    sync = vector_env_rate(args.env_id, data, 64, 100, mode="sync")
    loop = python_loop_rate(data, 300)
    for env_id in build:
        print(f"{env_id}: single {single[env_id]:,.0f} steps/s, vector ({args.num_envs} envs) "
              f"{vector[env_id]:,.0f} interactions/s")
    print(f"peers: Python loop {loop:,.0f} steps/s, SyncVectorEnv(64) {sync:,.0f} interactions/s")

    main_id = args.env_id
    print()
    print(f"single_env_steps_per_s: {single[main_id]:.0f}")
    print(f"single_env_target_met: {single[main_id] >= 20_000}")
    print(f"vector_env_interactions_per_s: {vector[main_id]:.0f}")
    print(f"vector_env_target_met: {vector[main_id] >= 1_000_000}")
    print(f"sim_single_env_steps_per_s: {single['recbandits/MovieLensSim-v0']:.0f}")
    print(f"sim_vector_env_interactions_per_s: {vector['recbandits/MovieLensSim-v0']:.0f}")
    print(f"slate_precompute_s: {slate_s:.3f}")
    print(f"arm_fit_s: {fit_s:.2f}")
    print(f"env_build_s: {build[main_id]:.2f}")
    print(f"python_loop_steps_per_s: {loop:.0f}")
    print(f"sync_vector_env_interactions_per_s: {sync:.0f}")
    print(f"single_vs_python_loop: {single[main_id] / loop:.1f}")
    print(f"vector_vs_sync_vector: {vector[main_id] / sync:.1f}")


if __name__ == "__main__":
    main()
