"""Slate environments (multileaved slates) on small synthetic data."""

from __future__ import annotations

import warnings

import gymnasium
import numpy as np
import pytest
from gymnasium.utils.env_checker import check_env

import bandits as bd
import envs  # registers the ids
from arms.data import make_synthetic
from envs.errors import InvalidActionError
from envs.slate import (
    SlateEnv,
    SlateVectorEnv,
    cascade_probabilities,
    cut_after_first_like,
    fill_positions,
)

ARMS = ("popularity", "random", "svd")
K, k = len(ARMS), 10


@pytest.fixture(scope="module")
def toy():
    return make_synthetic(n_users=60, n_items=150, n_ratings=3000, random_state=3)


def make(toy, **kwargs):
    kwargs.setdefault("dataset", toy)
    kwargs.setdefault("arms", ARMS)
    return gymnasium.make("recbandits/MovieLensSlate-v0", **kwargs)


# ---------------------------------------------------------------------- the Gymnasium contract
@pytest.mark.parametrize("click_model", ["pbm", "cascade"])
@pytest.mark.parametrize("env_id", ["recbandits/MovieLensSlate-v0", "recbandits/SyntheticSlate-v0"])
def test_check_env_passes_without_any_warning(env_id, click_model, toy):
    extra = {"dataset": toy, "arms": ARMS} if "MovieLens" in env_id else {}
    env = gymnasium.make(env_id, click_model=click_model, **extra)
    assert isinstance(env.unwrapped, SlateEnv)
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        check_env(env.unwrapped)
    assert env.spec.max_episode_steps == 1000
    assert env.action_space == gymnasium.spaces.MultiDiscrete([env.unwrapped.simulator.n_arms] * k)


def test_same_seed_same_trajectory_and_other_seed_another(toy):
    actions = np.random.default_rng(0).integers(0, K, (40, k))

    def rollout(seed):
        env = make(toy, click_model="cascade")
        env.reset(seed=seed)
        return [env.step(a)[4] for a in actions]

    first, again, other = rollout(4), rollout(4), rollout(5)
    for key in ("slate", "arms", "responses", "expected_rewards"):
        assert all(np.array_equal(x[key], y[key]) for x, y in zip(first, again, strict=True))
    assert not all(np.array_equal(x["slate"], y["slate"]) for x, y in zip(first, other,
                                                                          strict=True))


def test_a_one_arm_slate_is_the_single_arm_environment(toy):
    # under the position-based model, [a] * k shows arm a's own slate with the same responses,
    # rewards and boredom as recbandits/MovieLensSim-v0 (the same random numbers, step by step)
    slate = make(toy)
    single = gymnasium.make("recbandits/MovieLensSim-v0", dataset=toy, arms=ARMS)
    slate.reset(seed=9)
    single.reset(seed=9)
    for a in np.random.default_rng(1).integers(0, K, 120):
        *_, info = slate.step(np.full(k, a))
        *_, expected_info = single.step(a)
        for key in ("slate", "responses", "expected_rewards", "user_id", "best_arm", "regret"):
            assert np.allclose(info[key], expected_info[key]), key
        assert (info["arms"] == a).all()


def test_positions_take_each_arms_best_unshown_item(toy):
    env = make(toy)
    env.reset(seed=2)
    sim = env.unwrapped.simulator
    teams = np.array([2, 0, 0, 1, 2, 2, 1, 0, 2, 1])
    user = env.unwrapped._user
    *_, info = env.step(teams)
    lists = sim.raw_items(sim.slates[user])
    shown: list[int] = []
    for a in teams:
        shown.append(next(int(x) for x in lists[a] if x not in shown))
    assert info["slate"].tolist() == shown and info["arms"].tolist() == teams.tolist()


def test_an_item_is_examined_at_the_position_it_is_shown(toy):
    # position bias: an item ranked i by its arm and shown at j is liked with
    # examination(j) * like(i) / examination(i); expected likes ("count") sum that over j
    env = make(toy, reward="count", boredom=0.0)
    env.reset(seed=5)
    sim = env.unwrapped.simulator
    examination = sim.user_model.examination(k)
    user = env.unwrapped._user
    teams = np.array([1, 2, 2, 0, 1, 0, 2, 1, 0, 2])
    *_, info = env.step(teams)
    own = sim.prepared["like"][user]  # (K, k): each arm's own slate
    lists = sim.raw_items(sim.slates[user]).tolist()
    expected = sum(examination[j] * own[a, lists[a].index(item)]
                   / examination[lists[a].index(item)]
                   for j, (a, item) in enumerate(zip(teams, info["slate"].tolist(), strict=True)))
    assert info["slate_expected_reward"] == pytest.approx(expected)


def test_fill_rule_is_the_same_as_bandits_team_draft():
    rng = np.random.default_rng(3)
    lists = np.argsort(rng.random((200, 4, 25)), axis=2)[:, :, :8].astype(np.int64)
    teams = rng.integers(0, 4, (200, 8))
    mine = fill_positions(lists, teams)
    theirs = bd.fill_slate(lists, teams)
    assert all(np.array_equal(x, y) for x, y in zip(mine, theirs, strict=True))


# ---------------------------------------------------------------------- click models
def test_cascade_keeps_only_the_first_click_and_what_came_before():
    responses = np.array([[0, -1, 1, 1, -1, 0], [-1, 0, 0, 0, 0, 1], [0, 0, 0, 0, 0, 0]],
                         dtype=np.int8)
    assert cut_after_first_like(responses).tolist() == [[0, -1, 1, 0, 0, 0],
                                                         [-1, 0, 0, 0, 0, 1], [0] * 6]
    like = np.array([0.5, 0.2, 0.4])
    reach_like, _ = cascade_probabilities(like, np.zeros(3))
    assert np.allclose(reach_like, [0.5, 0.5 * 0.2, 0.5 * 0.8 * 0.4])


@pytest.mark.parametrize("click_model", ["pbm", "cascade"])
@pytest.mark.parametrize("reward", ["count", "signed"])
def test_expected_reward_of_the_slate_shown_matches_sampling(toy, click_model, reward):
    env = make(toy, click_model=click_model, reward=reward, boredom=0.0)
    env.reset(seed=0)
    teams = np.array([0, 2, 1, 2, 0, 1, 2, 0, 1, 2])
    gaps = []
    for _ in range(800):
        _, r, _, _, info = env.step(teams)
        gaps.append(r - info["slate_expected_reward"])
    gaps = np.array(gaps)
    assert abs(gaps.mean()) < 4 * gaps.std() / np.sqrt(len(gaps))


@pytest.mark.parametrize("reward", ["any", "count", "signed"])
def test_expected_reward_matrix_follows_the_click_model(toy, reward):
    pbm = make(toy, reward=reward)
    cascade = make(toy, reward=reward, click_model="cascade")
    _, info = cascade.reset(seed=3)
    *_, step = cascade.step(np.zeros(k, dtype=np.int64))  # the first visit: no fatigue yet
    matrix = cascade.unwrapped.expected_reward_matrix()
    assert np.allclose(matrix[info["user_index"]], step["expected_rewards"])
    same = np.allclose(matrix, pbm.unwrapped.expected_reward_matrix())
    assert same == (reward == "any")  # the cascade keeps the first click, so P(any) is unchanged


def test_cascade_clicks_at_most_once_and_ranks_positions_by_reach(toy):
    env = make(toy, click_model="cascade")
    env.reset(seed=1)
    first = np.zeros(k)
    for a in np.random.default_rng(2).integers(0, K, 400):
        *_, info = env.step(np.full(k, a))
        liked = info["responses"] == 1
        assert liked.sum() <= 1
        first += liked
    assert first[0] > first[k // 2:].sum()


# ---------------------------------------------------------------------- boredom
def test_each_arm_gains_its_share_of_the_slate_as_fatigue(toy):
    env = make(toy)
    env.reset(seed=0)
    user = env.unwrapped._user
    env.step(np.array([0] * 5 + [1] * 3 + [2] * 2))
    assert np.allclose(env.unwrapped._fatigue[0, user], [0.5, 0.3, 0.2])


# ---------------------------------------------------------------------- vector env
def test_vector_env_reproduces_single_envs_exactly(toy):
    n, limit, steps = 3, 7, 280  # several episodes, autoreset, and more than a random block
    kwargs = {"dataset": toy, "arms": ARMS, "click_model": "cascade", "max_episode_steps": limit}
    vec = gymnasium.make_vec("recbandits/MovieLensSlate-v0", num_envs=n, **kwargs)
    assert isinstance(vec, SlateVectorEnv)
    singles = [gymnasium.make("recbandits/MovieLensSlate-v0", **kwargs) for _ in range(n)]
    vobs, _ = vec.reset(seed=11)
    for i, env in enumerate(singles):
        obs, _ = env.reset(seed=11 + i)
        assert np.array_equal(vobs[i], obs)
    done = np.zeros(n, dtype=bool)
    actions = np.random.default_rng(0).integers(0, K, (steps, n, k))
    for step_actions in actions:
        vobs, vrew, _, vtrunc, vinfo = vec.step(step_actions)
        for i, env in enumerate(singles):
            if done[i]:
                obs, info = env.reset()
                assert vrew[i] == 0 and not vinfo["_slate"][i]
                assert vinfo["user_id"][i] == info["user_id"]
                done[i] = False
            else:
                obs, reward, _, truncated, info = env.step(step_actions[i])
                assert (vrew[i], vtrunc[i]) == (reward, truncated)
                for key in ("slate", "arms", "responses", "expected_rewards", "user_id", "t",
                            "slate_expected_reward", "regret"):
                    assert np.array_equal(vinfo[key][i], info[key]), key
                done[i] = truncated
            assert np.array_equal(vobs[i], obs)


# ---------------------------------------------------------------------- the mechanism
def test_multileaving_finds_the_best_arm_as_often_as_per_request_selection():
    # fixed seeds, small setting: after the same number of impressions, the arm with the best
    # posterior mean is the truly best arm in at least as many runs with multileaving (every
    # impression informs every arm) as with uniform per-request selection (one arm each)
    runs, impressions = 100, 30
    vec = gymnasium.make_vec("recbandits/SyntheticSlate-v0", num_envs=runs, boredom=0.0)
    best = int(np.argmax(vec.arrival_probabilities @ vec.expected_reward_matrix()))
    n_arms = len(vec.arm_names)
    found = {}
    for method in ("uniform", "multileave"):
        vec.reset(seed=0)
        rng = np.random.default_rng(1)
        policy = bd.MultileaveThompsonSampling(n_arms, m=n_arms, slate_size=k)
        state = policy.init_batch(runs)
        wins, shows = np.zeros((runs, n_arms)), np.zeros((runs, n_arms))
        for _ in range(impressions):
            if method == "uniform":
                arms = rng.integers(0, n_arms, runs)
                _, reward, _, _, info = vec.step(np.repeat(arms[:, None], k, axis=1))
                wins[np.arange(runs), arms] += reward
                shows[np.arange(runs), arms] += 1
            else:
                choice = policy.select_batch(state, rng)
                _, _, _, _, info = vec.step(choice.teams)
                policy.update_batch(state, info["arms"], info["responses"] == 1)
        if method == "multileave":
            wins, shows = state.successes, state.successes + state.failures
        found[method] = float((np.argmax((wins + 1) / (shows + 2), axis=1) == best).mean())
    assert found["multileave"] >= found["uniform"], found


# ---------------------------------------------------------------------- errors
def test_invalid_actions_and_arguments_are_named(toy):
    env = make(toy)
    env.reset(seed=0)
    with pytest.raises(TypeError, match="integer arm indices"):
        env.step(np.zeros(k))
    with pytest.raises(InvalidActionError, match=r"shape \(10,\)"):
        env.step(np.zeros(k - 1, dtype=int))
    with pytest.raises(InvalidActionError, match=r"within \[0, 3\)"):
        env.step(np.full(k, 3))
    with pytest.raises(ValueError, match="click_model must be one of"):
        make(toy, click_model="dbn")
    with pytest.raises(TypeError, match="click_model must be a string, one of"):
        make(toy, click_model=0)
    with pytest.raises(ValueError, match="online_learning"):
        make(toy, online_learning=True)
    vec = gymnasium.make_vec("recbandits/MovieLensSlate-v0", num_envs=2, dataset=toy, arms=ARMS)
    vec.reset(seed=0)
    with pytest.raises(InvalidActionError, match=r"shape \(2, 10\)"):
        vec.step(np.zeros(2, dtype=int))


def test_the_package_docstring_states_the_synthetic_slates_default_arms():
    """It said SyntheticSlate-v0 "is the same" as MovieLensSlate-v0, whose four arms are not
    its three (found by attack).
    """
    import inspect

    from envs.slate import SYNTHETIC_ARMS, build_synthetic_slate

    assert inspect.signature(build_synthetic_slate).parameters["arms"].default == SYNTHETIC_ARMS
    said = "``(" + ", ".join(f'"{arm}"' for arm in SYNTHETIC_ARMS) + ")``"
    assert said in " ".join(envs.__doc__.split())
    assert gymnasium.make("recbandits/SyntheticSlate-v0").unwrapped.arm_names == SYNTHETIC_ARMS
