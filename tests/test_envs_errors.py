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
    with pytest.raises(TypeError, match="seed must be"):
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
        ({"slate_size": 0}, ValueError, "slate_size must be an integer from 1 to 1,000, got 0"),
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


# ---------------------------------------------------------------------- found by attack
F, S, SL = "recbandits/FixedCTR-v0", "recbandits/MovieLensSim-v0", "recbandits/SyntheticSlate-v0"


@pytest.mark.parametrize(("kwargs", "error", "message"), [
    ({"n_users": 10**12}, ValueError, "n_users must be an integer from 1 to 1,000,000"),
    ({"slate_size": 10**10}, ValueError, "slate_size must be an integer from 1 to 1,000"),
    ({"ctr": ["0.1", "0.2", "0.3"]}, TypeError, "ctr must hold real numbers"),
    ({"ctr": [True, False, True]}, TypeError, "ctr must hold real numbers .* bool"),
    ({"ctr": [0.1 + 0.5j, 0.2, 0.3]}, TypeError, "ctr must hold real numbers .* complex"),
    ({"ctr": [[0.1, 0.2], [0.3]]}, ValueError, "rectangular array"),
    ({"ctr": {"svd": 0.1}}, TypeError, "ctr must be a list or array"),
    ({"arms": [1, 2, 3], "ctr": [0.1, 0.2, 0.3]}, TypeError, r"arms must hold names \(str\)"),
    ({"random_state": "a"}, TypeError, "random_state must be an integer >= 0"),
    ({"random_state": -1}, ValueError, "random_state must be an integer >= 0, got -1"),
    ({"online_learning": "yes"}, TypeError, "online_learning must be True or False"),
])
def test_fixed_ctr_names_every_bad_argument(kwargs, error, message):
    """Sizes that asked numpy for 218 TiB, strings and booleans read as rates, a seed that was
    ignored: each is refused naming the argument (strings were taken as numbers before)."""
    with pytest.raises(error, match=message):
        gymnasium.make(F, **kwargs)


def test_the_caches_tell_types_apart_so_a_refusal_does_not_depend_on_what_was_built(toy):
    """10 == 10.0 == True: a cache keyed on values served slate_size=10.0 (refused alone) the
    simulator built for 10, and online_learning=1 the one built for True (found by attack)."""
    gymnasium.make(F, slate_size=10)
    with pytest.raises(TypeError, match="slate_size must be an integer"):
        gymnasium.make(F, slate_size=10.0)
    gymnasium.make(S, dataset=toy, arms=ARMS, rank=4, online_learning=True)
    with pytest.raises(TypeError, match="online_learning must be True or False, got 1"):
        gymnasium.make(S, dataset=toy, arms=ARMS, rank=4, online_learning=1)
    with pytest.raises(TypeError, match="rank must be an integer"):
        gymnasium.make(S, dataset=toy, arms=ARMS, rank=4.0)
    with pytest.raises(TypeError, match="random_state must be an integer"):
        gymnasium.make(S, dataset=toy, arms=ARMS, rank=4, random_state=False)


def test_thresholds_outside_the_rating_scale_are_refused(toy):
    """like_threshold=100 made every expected reward 0 without a word; "4" failed on a
    comparison; 1e308 overflowed (found by attack)."""
    with pytest.raises(ValueError, match=r"like_threshold must be <= 5\.0, got 100\.0"):
        gymnasium.make("recbandits/MovieLens-v0", dataset=toy, arms=ARMS, like_threshold=100)
    with pytest.raises(TypeError, match="like_threshold must be a real number, got '4'"):
        gymnasium.make("recbandits/MovieLens-v0", dataset=toy, arms=ARMS, like_threshold="4")
    with pytest.raises(ValueError, match=r"like_threshold must be <= 5\.0"):
        gymnasium.make(S, dataset=toy, arms=ARMS, rank=4, like_threshold=1e308)
    with pytest.raises(ValueError, match=r"dislike_threshold must be >= 1\.0"):
        gymnasium.make(S, dataset=toy, arms=ARMS, rank=4, dislike_threshold=-1e308)


def test_an_arm_fitted_on_other_ratings_of_the_same_catalogue_is_refitted(toy):
    """An arm fitted on all the data has the training split's sizes and was used as given:
    having seen the held-out ratings it excluded them all, every expected reward 0."""
    from arms import PopularityRecommender
    everything = PopularityRecommender().fit(toy)
    env = gymnasium.make("recbandits/MovieLens-v0", dataset=toy, arms=[everything]).unwrapped
    fresh = gymnasium.make("recbandits/MovieLens-v0", dataset=toy,
                           arms=[PopularityRecommender()]).unwrapped
    assert env.expected_reward_matrix().mean() > 0.0
    np.testing.assert_array_equal(env.expected_reward_matrix(), fresh.expected_reward_matrix())


def test_vector_envs_cap_their_draws_and_stop_after_close():
    with pytest.raises(ValueError, match=r"num_envs must be at most 95,325 with slate_size 10"):
        gymnasium.make_vec(F, num_envs=10**9)
    vec = gymnasium.make_vec(F, num_envs=3)
    vec.reset(seed=0)
    vec.close()
    with pytest.raises(StepBeforeResetError):  # it went on stepping after close
        vec.step(np.array([0, 0, 0]))


def test_reset_options_are_refused_and_render_names_the_raw_user_id(toy):
    env = gymnasium.make(S, dataset=toy, arms=ARMS, rank=4, render_mode="ansi").unwrapped
    with pytest.raises(ValueError, match=r"reset takes no options, got \['user'\]"):
        env.reset(seed=0, options={"user": 5})
    _, info = env.reset(seed=0, options={})
    assert env.render() == f"t=0 user={info['user_id']} (no step yet)"  # was the index
    assert info["user_id"] != info["user_index"]
    vec = gymnasium.make_vec(S, num_envs=2, dataset=toy, arms=ARMS, rank=4)
    with pytest.raises(ValueError, match="reset takes no options"):
        vec.reset(seed=0, options={"bogus": 1})


def test_synthetic_slate_checks_arms_sizes_and_seed_first():
    with pytest.raises(TypeError, match="arms must be a sequence"):  # was arms 's', 'v', 'd'
        gymnasium.make(SL, arms="svd")
    with pytest.raises(TypeError, match="makes its own dataset"):
        gymnasium.make(SL, dataset=make_synthetic(20, 40, 200, random_state=0))
    with pytest.raises(ValueError, match=r"data_seed must be an integer from 0 to .*, got -1"):
        gymnasium.make(SL, data_seed=-1)
    with pytest.raises(TypeError, match="n_ratings must be an integer"):
        gymnasium.make(SL, n_ratings=float("nan"))


def test_a_policy_refuses_more_arms_than_it_can_hold():
    import bandits as bd
    from bandits.errors import MAX_ARMS
    with pytest.raises(ValueError, match="a policy takes from 1 to 100,000 arms"):
        bd.ThompsonSampling(10**9)  # ran out of the machine's memory
    with pytest.raises(ValueError, match="names 100,001 arms"):
        bd.ThompsonSampling([f"a{i}" for i in range(MAX_ARMS + 1)])
    assert bd.ThompsonSampling(MAX_ARMS).n_arms == MAX_ARMS


def test_resolve_dataset_remembers_a_bounded_number_of_datasets():
    """It kept every dataset ever seen (40 synthetic ones took 615 MB, found by attack)."""
    from envs import factories
    for seed in range(2 * factories._CANONICAL_SIZE + 3):
        data = make_synthetic(5, 10, 10, random_state=seed)
        assert factories.resolve_dataset(data, None) is data
    assert len(factories._canonical) == factories._CANONICAL_SIZE
    again = make_synthetic(5, 10, 10, random_state=2 * factories._CANONICAL_SIZE + 2)
    assert factories.resolve_dataset(again, None) is data  # the latest is still the first seen


def test_review_online_learning_is_one_check_and_a_bad_rate_is_named_by_its_place():
    from envs.fixed_ctr import check_ctr

    # numpy's False is False for every builder (the slate ones said "online_learning=True")
    gymnasium.make(SL, online_learning=np.False_)
    with pytest.raises(TypeError, match="online_learning must be True or False, got 0"):
        gymnasium.make(SL, online_learning=0)
    rates = np.full((1000, 3), 0.1)
    rates[417, 2] = 2.0
    with pytest.raises(ValueError, match=r"got 2\.0 at \(417, 2\)$") as refused:
        check_ctr(rates)
    assert len(str(refused.value)) < 100  # not the whole matrix (17,047 characters)


@pytest.mark.parametrize(
    ("t", "error", "message"),
    [
        (-1000, ValueError, "t must be an integer from 0 to 9,223,372,036,854,775,807, got -1000"),
        (10**20, ValueError, "got 100000000000000000000$"),
        (1.5, TypeError, r"t must be an integer .*, got 1\.5 \(float\)"),
        (float("nan"), TypeError, r"got nan \(float\)"),
        (True, TypeError, r"got True \(bool\)"),
        ("a", TypeError, r"got 'a' \(str\)"),
        (None, TypeError, r"got None \(NoneType\)"),
    ],
)
def test_the_ground_truth_takes_only_a_step_t(toy, t, error, message):
    """-1000 ran the drift backwards, NaN gave numbers, 1.5 was read as 1, FixedCTR ignored t
    (found by attack): every env that answers for a step checks it, static or not.
    """
    drift = gymnasium.make("recbandits/MovieLensSimDrift-v0", dataset=toy, arms=ARMS).unwrapped
    fixed = gymnasium.make("recbandits/FixedCTR-v0").unwrapped
    slate = gymnasium.make(SL, click_model="cascade", reward="count").unwrapped
    vec = gymnasium.make_vec("recbandits/FixedCTR-v0", num_envs=2)
    for ask in (drift.expected_reward_matrix, drift.best_fixed_arm, fixed.expected_reward_matrix,
                fixed.best_fixed_arm, slate.expected_reward_matrix, slate.best_fixed_arm,
                vec.expected_reward_matrix):
        with pytest.raises(error, match=message):
            ask(t)
    assert np.array_equal(drift.expected_reward_matrix(np.int64(3)),
                          drift.expected_reward_matrix(3))


def _simulator_kwargs(**changes):
    kwargs = {"user_model": FixedCTR(ctr=[0.1, 0.2], n_users=3), "arm_names": ("a", "b"),
              "slates": np.full((3, 2, 2), -1, dtype=np.int64),
              "contexts": np.full((3, 2), 0.5, dtype=np.float32), "feature_names": ("x", "y"),
              "user_ids": np.array([7, 8, 9]), "item_ids": np.array([100, 101, 102])}
    return {**kwargs, **changes}


@pytest.mark.parametrize(
    ("changes", "error", "message"),
    [
        ({"contexts": [[0.5, 0.5]] * 3}, TypeError,
         "contexts must be a numpy array of floats.*list"),
        ({"contexts": np.ones((3, 2), dtype=np.int64)}, TypeError, "dtype int64"),
        ({"contexts": np.full(3, 0.5)}, ValueError, r"contexts must be a 2-D array.*\(3,\)"),
        ({"contexts": np.array([[0.5, 0.5], [0.5, np.nan], [0, 1]])}, ValueError,
         r"within \[0, 1\], got nan at \(1, 1\)"),
        ({"contexts": np.array([[0.5, 0.5], [0.5, 0.5], [0, 7.0]])}, ValueError,
         r"got 7\.0 at \(2, 1\)"),
        ({"contexts": np.full((4, 2), 0.5)}, ValueError, r"contexts \(4 rows\)"),
        ({"feature_names": ("x",)}, ValueError,
         r"feature_names must name the 2 column\(s\).*got 1"),
        ({"feature_names": "xy"}, TypeError, "feature_names must be a sequence"),
        ({"slates": np.full((3, 2), -1)}, ValueError, r"slates must be a 3-D array.*\(3, 2\)"),
        ({"slates": np.full((3, 2, 2), -1.0)}, TypeError, "slates must be a numpy array of "
         "integer item indices.*float64"),
        ({"slates": np.full((3, 2, 0), -1)}, ValueError, r"got shape \(3, 2, 0\)"),
        ({"slates": np.full((3, 2, 2), 3)}, ValueError,
         r"slates must hold -1 \(no item\) or an item index from 0 to 2, got 3 at \(0, 0, 0\)"),
        ({"slates": np.full((3, 2, 2), -2), "item_ids": None}, ValueError,
         r"slates must hold -1 \(no item\), got -2"),
        ({"user_ids": np.array([7, 8])}, ValueError,
         r"user_ids must hold one id per user \(3, the slates' rows\), got 2"),
        ({"user_ids": np.array(["u1", "u2", "u3"])}, TypeError, "user_ids must be an array of "
         "integer ids"),
        ({"arm_names": ("a", "a")}, ValueError,
         r"arm_names must name each arm once, got \['a'\] twice"),
        ({"arm_names": ("a", 2)}, TypeError, r"arm_names must hold names \(str\), got 2"),
        ({"user_model": "fixed"}, TypeError, "user_model must be an envs.UserModel"),
    ],
)
def test_a_simulator_checks_what_its_docstring_promises(changes, error, message):
    """NaN contexts, names of another length, duplicate arms and 2-D slates were taken, or
    failed later in numpy's words (found by attack).
    """
    with pytest.raises(error, match=message):
        envs.Simulator(**_simulator_kwargs(**changes))
    sim = envs.Simulator(**_simulator_kwargs())
    assert RecommenderArmsEnv(sim).reset(seed=0)[1]["user_id"] in (7, 8, 9)


def test_make_vec_takes_render_mode_none_and_names_the_allowed_modes_otherwise():
    """``make_vec(id, render_mode=None)`` raised the builder's TypeError (found by attack)."""
    for env_id in ("recbandits/FixedCTR-v0", SL):
        vec = gymnasium.make_vec(env_id, num_envs=2, render_mode=None)
        assert vec.render_mode is None
        assert vec.reset(seed=0)[0].shape[0] == 2
        for mode in ("ansi", "human"):
            with pytest.raises(ValueError, match=rf"render_mode must be None \(no render_modes\), "
                                                 rf"got '{mode}'"):
                gymnasium.make_vec(env_id, num_envs=2, render_mode=mode)
    with pytest.raises(ValueError, match=r"render_mode must be None or one of \['ansi'\], got 3"):
        gymnasium.make("recbandits/FixedCTR-v0", render_mode=3)


def test_precompute_slates_and_user_context_check_their_arguments(toy):
    """k=1.5, k=True, n_users=10**12 and no arm failed in numpy's words; user_context(3) on
    ``3.users`` (found by attack).
    """
    from arms import NotFittedError
    from envs.factories import MAX_SLATE_SIZE

    arm = envs.make_arm("popularity").fit(toy)
    assert envs.precompute_slates([arm], toy.n_users, 3).shape == (toy.n_users, 1, 3)
    refusals = [
        (([arm], 5, 1.5), TypeError, r"k must be an integer from 1 to 1,000, got 1\.5 \(float\)"),
        (([arm], 5, True), TypeError, r"got True \(bool\)"),
        (([arm], 5, 0), ValueError, "k must be an integer from 1 to 1,000, got 0"),
        (([arm], 5, MAX_SLATE_SIZE + 1), ValueError, "got 1001"),
        (([arm], 10**12, 3), ValueError,
         rf"n_users must be an integer from 1 to {toy.n_users}, got 1000000000000"),
        (([arm], 0, 3), ValueError, "n_users must be an integer from 1"),
        (([arm], 2.0, 3), TypeError, r"n_users must be an integer .*got 2\.0 \(float\)"),
        (([], 5, 3), ValueError, "fitted must hold at least one arm"),
        ((arm, 5, 3), TypeError, "fitted must be a sequence of fitted Recommender"),
        ((["popularity"], 5, 3), TypeError, "fitted must hold Recommender instances, got str"),
        (([envs.make_arm("random")], 5, 3), NotFittedError, "not fitted"),
    ]
    for args, error, message in refusals:
        with pytest.raises(error, match=message):
            envs.precompute_slates(*args)
    with pytest.raises(TypeError, match=r"catalogue must be an arms\.data\.Dataset, got int"):
        envs.user_context(3)
    with pytest.raises(TypeError, match=r"history must be None or an arms\.data\.Dataset, got str"):
        envs.user_context(toy, "train")
    with pytest.raises(ValueError, match="history must share catalogue's users and items"):
        envs.user_context(toy, make_synthetic(n_users=5, n_items=10, n_ratings=20))


def test_vector_reset_seeds_follow_the_single_envs_rule_with_numpy_integers(toy):
    """A list of numpy integers and -1 raised gymnasium.error.Error where the docstring
    promised TypeError/ValueError (found by attack).
    """
    vec = gymnasium.make_vec("recbandits/MovieLensSim-v0", num_envs=2, dataset=toy, arms=ARMS)
    users = vec.reset(seed=1)[1]["user_index"]
    for same in ([np.int64(1), np.uint8(2)], (1, 2), True, np.int32(1)):
        assert np.array_equal(vec.reset(seed=same)[1]["user_index"], users)
    single = gymnasium.make("recbandits/MovieLensSim-v0", dataset=toy, arms=ARMS)
    assert single.reset(seed=True)[1]["user_index"] == users[0]  # Gymnasium's rule: True is 1
    refusals = [
        (-1, ValueError, "seed must be an integer >= 0, got -1"),
        ([1, -1], ValueError, r"seed\[1\] must be an integer >= 0, got -1"),
        ([1.5, 2], TypeError, r"seed\[0\] must be an integer >= 0, got 1\.5 \(float\)"),
        ([1, 2, 3], ValueError, "a list of 2 seeds .*got a list of 3"),
        (2.0, TypeError, r"seed must be None, an integer >= 0 or a list of 2 of them, got 2\.0"),
        (np.array([1, 2]), TypeError, "got array"),
    ]
    for seed, error, message in refusals:
        with pytest.raises(error, match=message):
            vec.reset(seed=seed)


def test_a_replay_that_ran_out_asks_for_reset_instead_of_serving_its_last_user(toy):
    """After truncation at the end of the replay, step served the last user again and again,
    at steps past the replay (found by attack).
    """
    for env in (gymnasium.make("recbandits/MovieLens-v0", dataset=toy, arms=ARMS,
                               arrival="replay", max_episode_steps=10**6),
                gymnasium.make(SL, n_ratings=600, arrival="replay", max_episode_steps=10**6)):
        limit = env.unwrapped.simulator.episode_limit
        action = np.zeros(env.action_space.shape, dtype=np.int64) if env.action_space.shape \
            else 0
        env.reset(seed=0)
        for t in range(limit):
            truncated, info = env.step(action)[3:]
            assert truncated == (t == limit - 1) and info["t"] == t
        with pytest.raises(StepBeforeResetError,
                           match=rf"the replay of {limit} real arrival\(s\) ended at step "
                                 rf"{limit} \(truncated\); call reset\(\)"):
            env.step(action)
        first = env.unwrapped.simulator.replay[0]
        assert env.reset()[1]["user_index"] == first and env.step(action)[4]["t"] == 0


def test_a_held_out_split_too_small_advises_what_helps():
    """n_last=10**9 was told to "hold out more data (held_out_fraction / n_last)": a larger
    n_last holds out nothing more, users with n_last ratings or fewer keep all in training
    (found by attack).
    """
    toy = make_synthetic(n_users=40, n_items=100, n_ratings=1600, random_state=4)
    with pytest.raises(UserModelError, match=r"test split of 0 rating\(s\) has 0; lower "
                       r"min_held_out, or hold out more of each user's ratings: a larger "
                       r"held_out_fraction, or an n_last below the users' numbers of ratings"):
        gymnasium.make("recbandits/MovieLens-v0", dataset=toy, arms=ARMS, n_last=10**9)


def test_fixed_ctr_per_user_refuses_another_n_users_as_the_dataset_case_does(toy):
    """A 2-D ctr silently ignored n_users, while with dataset= the mismatch was refused (found
    by attack); the default stays ctr's rows, and 1000 users for a rate per arm.
    """
    rates = [[0.1, 0.2, 0.3]] * 5
    with pytest.raises(ValueError, match=r"ctr has 5 rows \(one per user\) but n_users asks for "
                                         r"4 users"):
        gymnasium.make(F, ctr=rates, n_users=4)
    with pytest.raises(ValueError, match=r"ctr has 5 rows \(one per user\) but n_users asks for"):
        FixedCTR(ctr=rates, n_users=4)
    with pytest.raises(ValueError, match=r"ctr has 5 rows \(one per user\) but the dataset has "
                                         r"40 users"):
        gymnasium.make(F, ctr=rates, arms=(*ARMS, "svd"), dataset=toy)
    assert gymnasium.make(F, ctr=rates).unwrapped.simulator.n_users == 5
    assert gymnasium.make(F, ctr=rates, n_users=5).unwrapped.simulator.n_users == 5
    assert gymnasium.make(F).unwrapped.simulator.n_users == 1000
    assert FixedCTR().n_users == 1000 and FixedCTR(n_users=7).n_users == 7
    with pytest.raises(TypeError, match=r"n_users must be an integer >= 1, got 2\.0"):
        FixedCTR(n_users=2.0)
