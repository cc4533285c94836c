"""The registered ids with their defaults on MovieLens 100K (the three recommenders as arms)."""

from __future__ import annotations

import warnings

import gymnasium
import numpy as np
import pytest
from gymnasium.utils.env_checker import check_env

import envs  # noqa: F401 - registers the ids
from arms.data import temporal_split

pytestmark = pytest.mark.movielens

IDS = ("recbandits/MovieLens-v0", "recbandits/MovieLensSim-v0", "recbandits/MovieLensSimDrift-v0")


@pytest.mark.parametrize("env_id", IDS)
def test_registered_defaults_pass_check_env_without_warning(movielens, env_id):
    env = gymnasium.make(env_id, dataset=movielens)
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        check_env(env.unwrapped)
    unwrapped = env.unwrapped
    expected_arms = ("svd", "sequential", "autoencoder")
    if env_id.endswith("Drift-v0"):
        expected_arms += ("popularity",)
    assert unwrapped.arm_names == expected_arms
    assert unwrapped.observation_space.shape == (49,)  # 7 + 1 + 21 + 1 + 19


def test_drifting_simulator_changes_its_best_arm(movielens):
    env = gymnasium.make("recbandits/MovieLensSimDrift-v0", dataset=movielens).unwrapped
    start_arm, start = env.best_fixed_arm(0)
    end_arm, end = env.best_fixed_arm(500)
    assert env.arm_names[start_arm] == "svd" and env.arm_names[end_arm] == "popularity"
    assert start[start_arm] - start[end_arm] > 0.1 and end[end_arm] - end[start_arm] > 0.1
    # And per user: most users' best arm is different once the drift is complete.
    per_user_start = env.expected_reward_matrix(0).argmax(axis=1)
    per_user_end = env.expected_reward_matrix(500).argmax(axis=1)
    assert (per_user_start != per_user_end).mean() > 0.5
    # The env reports the same thing step by step: regret against the best arm at the time.
    env.reset(seed=0)
    infos = [env.step(0)[4] for _ in range(600)]
    late = np.array([info["expected_rewards"] for info in infos[500:]])
    assert np.bincount(late.argmax(axis=1), minlength=4).argmax() == end_arm


def test_held_out_users_with_the_real_arms_never_see_their_past(movielens):
    train, _ = temporal_split(movielens, fraction=0.2)
    history = train.interaction_matrix(binary=True).tolil().rows
    env = gymnasium.make("recbandits/MovieLens-v0", dataset=movielens, max_episode_steps=2000)
    env.reset(seed=0)
    rewards = {a: [] for a in range(3)}
    for a in np.random.default_rng(0).integers(0, 3, 2000):
        _, reward, _, _, info = env.step(a)
        items = movielens.item_index(info["slate"])
        assert not set(items.tolist()) & set(history[info["user_index"]])
        rewards[a].append(reward)
    # Held-out users do like what the learned arms show them, each at its own rate.
    means = [np.mean(r) for r in rewards.values()]
    assert min(means) > 0.1
