"""Invalid input to the environments: clear exceptions, nothing corrupted."""

from __future__ import annotations

import gymnasium
import numpy as np
import pytest
from gymnasium.error import ResetNeeded

import envs
from arms.data import make_synthetic
from envs import (
    FixedCTR,
    InvalidActionError,
    LatentFactorUsers,
    RecommenderArmsEnv,
    StepBeforeResetError,
    UnknownArmError,
    UserModelError,
)

ARMS = ("popularity", "random")


@pytest.fixture(scope="module")
def toy():
    return make_synthetic(n_users=40, n_items=100, n_ratings=1600, random_state=4)


def test_invalid_actions_are_rejected_and_do_not_advance_the_episode(toy):
    env = gymnasium.make("recbandits/MovieLensSim-v0", dataset=toy, arms=ARMS)
    env.reset(seed=0)
    with pytest.raises(InvalidActionError, match=r"within \[0, 2\).*popularity.*got 2"):
        env.step(2)
    with pytest.raises(InvalidActionError, match="got -1"):
        env.step(-1)
    with pytest.raises(TypeError, match="integer arm index"):
        env.step(0.5)
    with pytest.raises(TypeError, match="integer arm index"):
        env.step("svd")
    assert env.step(np.int64(1))[4]["t"] == 0
    assert env.step(np.array(0))[4]["t"] == 1


def test_step_before_reset_raises(toy):
    raw = gymnasium.make("recbandits/MovieLensSim-v0", dataset=toy, arms=ARMS).unwrapped
    with pytest.raises(StepBeforeResetError, match="reset"):
        raw.step(0)
    assert issubclass(StepBeforeResetError, ResetNeeded)
    vec = gymnasium.make_vec("recbandits/MovieLensSim-v0", num_envs=2, dataset=toy, arms=ARMS)
    with pytest.raises(StepBeforeResetError):
        vec.step(np.array([0, 1]))
    vec.reset(seed=0)
    with pytest.raises(InvalidActionError, match="shape"):
        vec.step(np.array([0, 1, 1]))
    with pytest.raises(InvalidActionError, match="got 5"):
        vec.step(np.array([0, 5]))
    with pytest.raises(TypeError, match="integer"):
        vec.step(np.array([0.0, 1.0]))
    with pytest.raises(ValueError, match="seed must be"):
        vec.reset(seed="x")


def test_held_out_model_that_cannot_be_built_is_a_clear_error(toy):
    with pytest.raises(UserModelError, match=r"at least 1 user\(s\) with >= 500 held-out"):
        gymnasium.make("recbandits/MovieLens-v0", dataset=toy, arms=ARMS, min_held_out=500)


def test_latent_model_that_cannot_be_built_is_a_clear_error(toy):
    with pytest.raises(UserModelError, match="rank"):
        LatentFactorUsers(rank=40).fit(toy)


@pytest.mark.parametrize(
    ("kwargs", "error", "match"),
    [
        ({"arms": ("popularity", "pagerank")}, UnknownArmError, "unknown arm 'pagerank'"),
        ({"arms": ("popularity", "popularity")}, ValueError,
         r"arms must name each arm once, got \[.popularity.\] twice"),
        ({"arms": "popularity"}, TypeError, "sequence"),
        ({"arms": ()}, ValueError, "at least one"),
        ({"reward": "clicks"}, ValueError, r"reward must be one of \['any'"),
        ({"reward": 1}, TypeError, r"reward must be a string, one of \['any'"),
        ({"arrival": "poisson"}, ValueError, "arrival must be one of"),
        ({"arrival": None}, TypeError, r"arrival must be a string, one of \["),
        ({"slate_size": 0}, ValueError, "slate_size must be >= 1"),
        ({"slate_size": 2.5}, TypeError, "slate_size must be an integer"),
        ({"boredom": 1.0}, ValueError, r"boredom must be within \[0.0, 1.0\)"),
        ({"temperature": 0}, ValueError, "temperature"),
        ({"like_threshold": 1.0}, ValueError, "dislike_threshold must be below"),
        ({"drift_steps": 0}, ValueError, "drift_steps must be None or an integer >= 1"),
        ({"dataset": 100}, TypeError, "dataset must be an arms.data.Dataset"),
        ({"dataset": "ml-2m"}, ValueError, "ml-2m"),
        ({"render_mode": "human"}, ValueError, "render_mode"),
    ],
)
def test_bad_configuration_is_rejected_with_a_message(toy, kwargs, error, match):
    kwargs = {"dataset": toy, "arms": ARMS, **kwargs}
    with pytest.raises(error, match=match):
        gymnasium.make("recbandits/MovieLensSim-v0", **kwargs)


def test_fixed_ctr_rejects_bad_rates_and_unknown_arms_without_rates():
    with pytest.raises(ValueError, match=r"within \[0, 1\]"):
        FixedCTR(ctr=(0.1, 1.5))
    with pytest.raises(ValueError, match="ctr is required"):
        gymnasium.make("recbandits/FixedCTR-v0", arms=("a", "b"))
    with pytest.raises(ValueError, match="ctr has 2 arm"):
        gymnasium.make("recbandits/FixedCTR-v0", ctr=(0.1, 0.2))
    with pytest.raises(ValueError, match="online_learning needs a dataset"):
        gymnasium.make("recbandits/FixedCTR-v0", online_learning=True)
    env = gymnasium.make("recbandits/FixedCTR-v0", arms=("a", "b"), ctr=(0.3, 0.6))
    assert env.unwrapped.arm_names == ("a", "b")


def test_env_needs_a_simulator():
    with pytest.raises(TypeError, match="simulator"):
        RecommenderArmsEnv(object())
    with pytest.raises(ValueError, match="num_envs"):
        envs.RecommenderArmsVectorEnv(
            gymnasium.make("recbandits/FixedCTR-v0").unwrapped.simulator, num_envs=0
        )


def test_render_ansi_describes_the_last_step(toy):
    env = gymnasium.make("recbandits/MovieLensSim-v0", dataset=toy, arms=ARMS, render_mode="ansi")
    env.reset(seed=0)
    info = env.step(1)[4]
    text = env.render()
    assert f"user={info['user_id']}" in text and "arm=random" in text
