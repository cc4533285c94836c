"""Environments on small synthetic data: API contract, exact expectations, vector == single."""

from __future__ import annotations

import warnings

import gymnasium
import numpy as np
import pytest
from gymnasium.utils.env_checker import check_env

import envs
from arms.data import make_synthetic, temporal_split
from envs import LatentFactorUsers
from envs.base import expected_reward, realised_reward, sample_responses

IDS = (
    "recbandits/FixedCTR-v0",
    "recbandits/MovieLens-v0",
    "recbandits/MovieLensSim-v0",
    "recbandits/MovieLensSimDrift-v0",
)
ARMS = ("popularity", "random")


@pytest.fixture(scope="module")
def toy():
    return make_synthetic(n_users=60, n_items=150, n_ratings=3000, random_state=3)


def make(env_id, toy, **kwargs):
    if env_id != "recbandits/FixedCTR-v0":
        kwargs.setdefault("dataset", toy)
        kwargs.setdefault("arms", ARMS)
    return gymnasium.make(env_id, **kwargs)


def rollout(env, seed, actions):
    obs, info = env.reset(seed=seed)
    out = [(obs, info["user_id"])]
    for a in actions:
        obs, reward, terminated, truncated, info = env.step(a)
        out.append((obs, reward, terminated, truncated, info["slate"], info["responses"],
                    info["expected_rewards"]))
        if terminated or truncated:
            env.reset()
    return out


def same(a, b):
    return all(
        all(np.array_equal(x, y) for x, y in zip(s, t, strict=True))
        for s, t in zip(a, b, strict=True)
    )


# ---------------------------------------------------------------------- the Gymnasium contract
@pytest.mark.parametrize("env_id", IDS)
def test_check_env_passes_without_any_warning(env_id, toy):
    env = make(env_id, toy)
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        check_env(env.unwrapped)
    assert env.spec.max_episode_steps == 1000


def test_fixed_ctr_check_env_with_a_dataset_and_every_reward(toy):
    for reward in envs.REWARDS:
        env = gymnasium.make("recbandits/FixedCTR-v0", dataset=toy, arms=("popularity", "random"),
                             ctr=(0.2, 0.4), reward=reward)
        with warnings.catch_warnings():
            warnings.simplefilter("error")
            check_env(env.unwrapped)


@pytest.mark.parametrize("env_id", IDS)
def test_observation_is_the_users_documented_context(env_id, toy):
    env = make(env_id, toy)
    obs, info = env.reset(seed=0)
    names = env.unwrapped.feature_names
    assert obs.dtype == np.float32 and obs.shape == (len(names),)
    assert env.observation_space.contains(obs)
    if env_id == "recbandits/FixedCTR-v0":
        assert names == ("bias",) and obs.tolist() == [1.0]
        return
    user = toy.users.loc[info["user_id"]]
    age = [i for i, n in enumerate(names) if n.startswith("age:")]
    assert obs[age].sum() == 1.0
    bucket = np.searchsorted(envs.context.AGE_EDGES, user["age"], side="right")
    assert obs[age[bucket]] == 1.0
    assert obs[names.index("gender:F")] == float(user["gender"] == "F")
    assert obs[names.index(f"occupation:{user['occupation']}")] == 1.0
    genres = [n for n in names if n.startswith("genre:")]
    assert len(genres) == len(toy.genre_names)
    assert 0 < obs[names.index("history_length")] <= 1


def test_episode_is_truncated_by_the_time_limit(toy):
    env = make("recbandits/MovieLensSim-v0", toy, max_episode_steps=5)
    env.reset(seed=0)
    flags = [env.step(0)[3] for _ in range(5)]
    assert flags == [False] * 4 + [True]


def test_same_seed_same_trajectory_and_other_seed_another(toy):
    actions = np.random.default_rng(0).integers(0, 2, 60)
    for env_id in IDS[1:]:
        first = rollout(make(env_id, toy), 7, actions)
        second = rollout(make(env_id, toy), 7, actions)
        other = rollout(make(env_id, toy), 8, actions)
        assert same(first, second)
        assert not same(first, other)


# ---------------------------------------------------------------------- rewards and expectations
def test_fixed_ctr_click_frequency_matches_the_seed_story():
    env = gymnasium.make("recbandits/FixedCTR-v0", max_episode_steps=10**6)
    env.reset(seed=1)
    n = 4000
    for arm, ctr in enumerate((0.10, 0.15, 0.12)):
        rewards = np.array([env.step(arm)[1] for _ in range(n)])
        info = env.step(arm)[4]
        assert info["expected_rewards"] == pytest.approx([0.10, 0.15, 0.12])
        assert abs(rewards.mean() - ctr) < 4 * np.sqrt(ctr * (1 - ctr) / n)


@pytest.mark.parametrize("reward", envs.REWARDS)
def test_monte_carlo_reward_per_arm_matches_info_expectation(toy, reward):
    # Boredom and drift on: each step's expectation is conditional on the state, so the
    # realised-minus-expected differences must average to zero for every arm.
    env = make("recbandits/MovieLensSimDrift-v0", toy, reward=reward, drift_steps=300,
               max_episode_steps=10**6)
    env.reset(seed=5)
    rng = np.random.default_rng(0)
    diffs = {a: [] for a in range(env.action_space.n)}
    for a in rng.integers(0, env.action_space.n, 6000):
        _, r, _, _, info = env.step(a)
        diffs[a].append(r - info["expected_rewards"][a])
    for a, d in diffs.items():
        d = np.array(d)
        assert abs(d.mean()) < 4 * d.std() / np.sqrt(len(d)) + 1e-9, (a, d.mean())


def test_expected_reward_formulas_agree_with_sampling():
    rng = np.random.default_rng(0)
    like = rng.uniform(0, 0.5, (4, 5))
    dislike = rng.uniform(0, 0.4, (4, 5))
    uniforms = rng.random((20000, 4, 5))
    responses = sample_responses(like, dislike, uniforms)
    assert set(np.unique(responses)) <= {-1, 0, 1}
    for reward in envs.REWARDS:
        got = realised_reward(responses, reward).mean(axis=0)
        assert np.allclose(got, expected_reward(like, dislike, reward), atol=0.03)


def test_regret_is_never_negative_and_is_exact(toy):
    for env_id in IDS:
        env = make(env_id, toy)
        env.reset(seed=2)
        for a in np.random.default_rng(1).integers(0, env.action_space.n, 300):
            info = env.step(a)[4]
            expected = info["expected_rewards"]
            assert info["regret"] >= 0
            assert info["regret"] == expected.max() - expected[a]
            assert expected[info["best_arm"]] == expected.max()


def test_best_fixed_arm_is_the_argmax_of_arrival_weighted_rewards(toy):
    env = make("recbandits/MovieLensSim-v0", toy, arrival="activity").unwrapped
    matrix = env.expected_reward_matrix()
    assert matrix.shape == (toy.n_users, 2)
    probabilities = env.arrival_probabilities
    assert probabilities.sum() == pytest.approx(1.0)
    arm, means = env.best_fixed_arm()
    assert np.allclose(means, probabilities @ matrix) and arm == int(np.argmax(means))
    # The fresh-episode matrix is what the first step's info reports for its user.
    _, info = env.reset(seed=0)
    step_info = env.step(0)[4]
    assert np.allclose(step_info["expected_rewards"], matrix[info["user_index"]])


def test_activity_arrival_is_proportional_to_number_of_ratings(toy):
    env = make("recbandits/MovieLensSim-v0", toy, arrival="activity", max_episode_steps=10**6)
    env.reset(seed=0)
    users = np.array([env.step(0)[4]["user_index"] for _ in range(6000)])
    counts = np.bincount(users, minlength=toy.n_users)
    activity = np.diff(toy.interaction_matrix(binary=True).indptr)
    expected = activity / activity.sum() * len(users)
    chi2 = ((counts - expected) ** 2 / expected).sum()
    assert chi2 < toy.n_users + 5 * np.sqrt(2 * toy.n_users)


def test_latent_factor_position_bias_and_boredom(toy):
    model = LatentFactorUsers(rank=4, boredom=0.3).fit(toy)
    users = np.arange(5)
    slates = np.tile(np.arange(8), (5, 2, 1))  # both arms show the same items in one order
    prepared = model.prepare(users, slates)
    fresh, _ = model.probabilities(prepared, users, np.zeros(5, np.int64), np.zeros((5, 2)))
    tired, _ = model.probabilities(prepared, users, np.zeros(5, np.int64),
                                   np.array([[2.0, 0.0]] * 5))
    assert np.allclose(tired[:, 0], fresh[:, 0] * 0.7**2) and np.allclose(tired[:, 1], fresh[:, 1])
    exam = model.examination(8)
    assert exam[0] == 1.0 and np.all(np.diff(exam) < 0)
    fatigue = model.new_fatigue(1, 2)
    model.update_fatigue(fatigue, np.array([0]), np.array([3]), np.array([1]))
    model.update_fatigue(fatigue, np.array([0]), np.array([3]), np.array([1]))
    assert fatigue[0, 3].tolist() == [0.0, 1.5]


def test_serving_one_arm_repeatedly_bores_users(toy):
    env = make("recbandits/MovieLensSim-v0", toy, boredom=0.3, max_episode_steps=10**6)
    fresh = env.unwrapped.expected_reward_matrix()[:, 0]
    env.reset(seed=0)
    ratios = []
    for _ in range(600):
        info = env.step(0)[4]
        ratios.append(info["expected_rewards"][0] / fresh[info["user_index"]])
    assert ratios[0] == pytest.approx(1.0)
    assert np.mean(ratios[-100:]) < 0.8


def test_drift_changes_the_ground_truth_only_when_on(toy):
    still = make("recbandits/MovieLensSim-v0", toy).unwrapped
    assert np.array_equal(still.expected_reward_matrix(0), still.expected_reward_matrix(900))
    moving = make("recbandits/MovieLensSimDrift-v0", toy, drift_steps=100).unwrapped
    start, end = moving.expected_reward_matrix(0), moving.expected_reward_matrix(100)
    assert not np.allclose(start, end)
    assert np.array_equal(end, moving.expected_reward_matrix(5000))  # complete after drift_steps


# ---------------------------------------------------------------------- held-out users
def test_held_out_users_are_never_shown_a_training_item(toy):
    train, _ = temporal_split(toy, fraction=0.2)
    history = train.interaction_matrix(binary=True).tolil().rows
    for online in (False, True):
        env = make("recbandits/MovieLens-v0", toy, online_learning=online)
        env.reset(seed=0)
        for a in np.random.default_rng(0).integers(0, 2, 300 if not online else 60):
            info = env.step(a)[4]
            shown = set(toy.item_index(info["slate"][info["slate"] >= 0]).tolist())
            assert not shown & set(history[info["user_index"]])


def test_held_out_responses_are_the_real_future_ratings(toy):
    _, test = temporal_split(toy, fraction=0.3)
    future = test.interaction_matrix().todok()
    env = make("recbandits/MovieLens-v0", toy, held_out_fraction=0.3, reward="signed")
    env.reset(seed=0)
    likes = 0
    for a in np.random.default_rng(0).integers(0, 2, 300):
        _, reward, _, _, info = env.step(a)
        items = toy.item_index(info["slate"])
        ratings = np.array([future.get((info["user_index"], i), 0.0) for i in items])
        want = np.where(ratings >= 4, 1, np.where((ratings > 0) & (ratings <= 2), -1, 0))
        assert info["responses"].tolist() == want.tolist()
        assert reward == want.sum() == info["expected_rewards"][a]
        likes += (want == 1).sum()
    assert likes > 0


def test_replay_arrival_follows_the_held_out_order(toy):
    _, test = temporal_split(toy, fraction=0.2)
    order = test.ratings.sort_values("timestamp", kind="stable")["user_index"].to_numpy()
    visits = order[np.r_[True, order[1:] != order[:-1]]]
    env = make("recbandits/MovieLens-v0", toy, arrival="replay", max_episode_steps=10**6)
    _, info = env.reset(seed=0)
    assert info["user_index"] == visits[0]
    served, truncated = [], False
    while not truncated:
        _, _, _, truncated, info = env.step(0)
        served.append(info["user_index"])
    assert served == visits.tolist()  # and the episode ends when the replay runs out


def test_online_learning_restarts_from_the_fitted_arms_each_episode(toy):
    actions = np.zeros(40, dtype=np.int64)
    env = make("recbandits/MovieLensSim-v0", toy, online_learning=True, max_episode_steps=40)
    first = rollout(env, 3, actions)
    second = rollout(env, 3, actions)
    assert same(first, second)
    frozen = rollout(make("recbandits/MovieLensSim-v0", toy, max_episode_steps=40), 3, actions)
    assert not same(first, frozen)  # feedback changed later slates


# ---------------------------------------------------------------------- the native vector env
@pytest.mark.parametrize(
    ("env_id", "kwargs"),
    [
        ("recbandits/FixedCTR-v0", {}),
        ("recbandits/MovieLens-v0", {"reward": "signed"}),
        ("recbandits/MovieLens-v0", {"arrival": "replay"}),
        ("recbandits/MovieLensSim-v0", {"arrival": "activity", "reward": "count"}),
        ("recbandits/MovieLensSimDrift-v0", {"drift_steps": 20}),
    ],
)
def test_vector_env_reproduces_single_envs_exactly(env_id, kwargs, toy):
    n, limit, steps = 4, 9, 300  # several episodes, autoreset, and more than a random block
    extra = {} if env_id == "recbandits/FixedCTR-v0" else {"dataset": toy, "arms": ARMS}
    vec = gymnasium.make_vec(env_id, num_envs=n, max_episode_steps=limit, **extra, **kwargs)
    assert isinstance(vec, envs.RecommenderArmsVectorEnv)
    singles = [gymnasium.make(env_id, max_episode_steps=limit, **extra, **kwargs)
               for _ in range(n)]
    vobs, vinfo = vec.reset(seed=11)
    starts = [env.reset(seed=11 + i) for i, env in enumerate(singles)]
    assert np.array_equal(vobs, np.stack([obs for obs, _ in starts]))
    assert vinfo["user_id"].tolist() == [info["user_id"] for _, info in starts]
    done = np.zeros(n, dtype=bool)
    actions = np.random.default_rng(0).integers(0, vec.single_action_space.n, (steps, n))
    for step_actions in actions:
        vobs, vrew, vterm, vtrunc, vinfo = vec.step(step_actions)
        for i, env in enumerate(singles):
            if done[i]:
                obs, info = env.reset()
                assert vrew[i] == 0 and not vinfo["_slate"][i] and not vtrunc[i]
                assert vinfo["user_id"][i] == info["user_id"]
                done[i] = False
            else:
                obs, reward, terminated, truncated, info = env.step(step_actions[i])
                assert (vrew[i], vterm[i], vtrunc[i]) == (reward, terminated, truncated)
                for key in ("slate", "responses", "expected_rewards", "user_id", "t",
                            "best_arm", "regret"):
                    assert np.array_equal(vinfo[key][i], info[key]), key
                done[i] = truncated
            assert np.array_equal(vobs[i], obs)
        assert np.all(vinfo["regret"][vinfo["_regret"]] >= 0)


def test_vector_env_with_online_learning_matches_single_envs(toy):
    kwargs = {"dataset": toy, "arms": ARMS, "online_learning": True, "max_episode_steps": 15}
    vec = gymnasium.make_vec("recbandits/MovieLensSim-v0", num_envs=2, **kwargs)
    singles = [gymnasium.make("recbandits/MovieLensSim-v0", **kwargs) for _ in range(2)]
    vec.reset(seed=4)
    for i, env in enumerate(singles):
        env.reset(seed=4 + i)
    for a in np.random.default_rng(1).integers(0, 2, (15, 2)):
        _, vrew, _, _, vinfo = vec.step(a)
        for i, env in enumerate(singles):
            _, reward, _, _, info = env.step(a[i])
            assert vrew[i] == reward and np.array_equal(vinfo["slate"][i], info["slate"])


def test_vector_env_seeds_from_a_list_and_spaces_are_batched(toy):
    vec = gymnasium.make_vec("recbandits/MovieLensSim-v0", num_envs=3, dataset=toy, arms=ARMS)
    obs, _ = vec.reset(seed=[5, 6, 7])
    single = gymnasium.make("recbandits/MovieLensSim-v0", dataset=toy, arms=ARMS)
    assert np.array_equal(obs[1], single.reset(seed=6)[0])
    assert vec.observation_space.shape == (3, len(vec.unwrapped.feature_names))
    assert obs in vec.observation_space and vec.action_space.shape == (3,)


def test_vector_reset_after_truncation_serves_the_next_step(toy):
    """A reset() right after truncation starts fresh episodes: no pending autoreset step."""
    kwargs = {"dataset": toy, "arms": ARMS, "max_episode_steps": 3}
    vec = gymnasium.make_vec("recbandits/MovieLensSim-v0", num_envs=2, **kwargs)
    single = gymnasium.make("recbandits/MovieLensSim-v0", **kwargs)
    vec.reset(seed=8)
    for _ in range(3):
        *_, vtrunc, _ = vec.step(np.zeros(2, dtype=np.int64))
    assert vtrunc.all()
    vec.reset(seed=21)
    single.reset(seed=21)
    _, vrew, _, _, vinfo = vec.step(np.ones(2, dtype=np.int64))
    _, reward, _, _, info = single.step(1)
    assert vinfo["_slate"].all() and np.isfinite(vinfo["expected_rewards"]).all()
    assert vrew[0] == reward and np.array_equal(vinfo["slate"][0], info["slate"])
