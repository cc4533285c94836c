"""Invalid input raises a clear error naming it and leaves the policy's state untouched."""

from __future__ import annotations

import json

import numpy as np
import pytest

import bandits as bd

ARMS = ["SVD", "Sequential", "Autoencoder"]


def trained(policy):
    ctx = np.array([0.2, -0.4]) if policy.contextual else None
    rng = np.random.default_rng(0)
    for _ in range(7):
        k = policy.select(ctx)
        policy.update(k, float(rng.random() < 0.5), ctx)
    return policy


POLICIES = [
    lambda: bd.ThompsonSampling(ARMS, batch_size=2, random_state=0),
    lambda: bd.DiscountedThompsonSampling(ARMS, random_state=0),
    lambda: bd.SlidingWindowThompsonSampling(ARMS, window=5, random_state=0),
    lambda: bd.GaussianThompsonSampling(ARMS, noise_variance=None, random_state=0),
    lambda: bd.EpsilonGreedy(ARMS, random_state=0),
    lambda: bd.UCB1(ARMS, random_state=0),
    lambda: bd.KLUCB(ARMS, random_state=0),
    lambda: bd.RandomPolicy(ARMS, random_state=0),
    lambda: bd.LinUCB(ARMS, n_features=2, random_state=0),
    lambda: bd.LinTS(ARMS, n_features=2, batch_size=3, random_state=0),
]
IDS = ["ts", "dts", "swts", "gts", "eg", "ucb1", "klucb", "random", "linucb", "lints"]


def assert_unchanged(policy, before):
    assert json.dumps(policy.state_dict()) == before


@pytest.mark.parametrize("make", POLICIES, ids=IDS)
def test_bad_updates_raise_and_leave_state_untouched(make):
    policy = trained(make())
    ctx = np.array([0.2, -0.4]) if policy.contextual else None
    before = json.dumps(policy.state_dict())
    bad = [
        (("Popularity", 1.0), ValueError, "Popularity.*did you mean|Popularity"),
        (("Sequentail", 1.0), bd.UnknownArmError, "did you mean \\['Sequential'\\]"),
        ((3, 1.0), bd.UnknownArmError, "out of range"),
        ((-1, 1.0), bd.UnknownArmError, "out of range"),
        ((0, float("nan")), ValueError, "reward=nan"),
        ((0, float("inf")), ValueError, "reward=inf"),
        ((0, "1"), TypeError, "reward"),
        ((1.5, 1.0), TypeError, "arm"),
    ]
    if policy.reward_high is not None:
        bad.append(((0, 1.5), ValueError, r"reward=1\.5 is outside .*\[0, 1\]"))
        bad.append(((0, -0.1), ValueError, r"reward=-0\.1"))
    for args, exc, match in bad:
        with pytest.raises(exc, match=match):
            policy.update(*args, context=ctx)
        assert_unchanged(policy, before)


@pytest.mark.parametrize("make", POLICIES[-2:], ids=IDS[-2:])
def test_bad_contexts_raise_and_leave_state_untouched(make):
    policy = trained(make())
    before = json.dumps(policy.state_dict())
    for ctx, match in [(None, "needs a context of 2 features"),
                       ([1.0, 2.0, 3.0], r"shape \(3,\); expected \(2,\)"),
                       (np.ones((2, 2)), r"shape \(2, 2\)"),
                       ([np.nan, 1.0], "NaN"),
                       (["a", "b"], "numeric")]:
        with pytest.raises(ValueError, match=match):
            policy.update(0, 1.0, ctx)
        with pytest.raises(ValueError, match=match):
            policy.select(ctx)
        with pytest.raises(ValueError, match=match):
            policy.action_probabilities(ctx)
        assert_unchanged(policy, before)


def test_batched_update_validates_before_touching_the_state():
    ts = bd.ThompsonSampling(3)
    state = ts.init_batch(4)
    snapshot = state.copy()
    for arms, rewards, match in [
        (np.array([0, 1, 2, 3]), np.ones(4), "contains 3"),
        (np.array([0, 1, 2]), np.ones(3), r"shape \(4,\)"),
        (np.array([0.0, 1, 2, 0]), np.ones(4), "int array"),
        (np.array([0, 1, 2, 0]), np.array([1, np.nan, 0, 0]), "reward=nan"),
        (np.array([0, 1, 2, 0]), np.array([1, 2.0, 0, 0]), "outside"),
        (np.array([0, 1, 2, 0]), np.ones(5), r"rewards has shape \(5,\)"),
    ]:
        with pytest.raises(ValueError, match=match):
            ts.update_batch(state, arms, rewards)
        for key in state.stats:
            np.testing.assert_array_equal(state.stats[key], snapshot.stats[key])
    with pytest.raises(ValueError, match="one per run"):
        ts.select_batch(state, [np.random.default_rng(0)] * 3)
    with pytest.raises(TypeError, match="Generator"):
        ts.select_batch(state, 42)


@pytest.mark.parametrize("make", POLICIES, ids=IDS)
@pytest.mark.parametrize("batch_size", [1, 3])
def test_batched_rewards_that_are_not_real_numbers_change_nothing(make, batch_size):
    """A string or complex reward array passed the support check (numpy reads "1" as 1.0)
    and then failed half-way through the update: UCB1, epsilon-greedy and KL-UCB had counted
    the pulls without their rewards, LinUCB and LinTS updated A_inv but not b; Thompson
    Sampling learned strings as numbers and dropped imaginary parts; a buffer (batch_size 3)
    took all of them, booleans too."""
    made = make()
    policy = type(made)(ARMS, **{**made.get_params(), "batch_size": batch_size})
    state = policy.init_batch(2)
    contexts = np.array([[0.2, -0.4], [0.1, 0.3]]) if policy.contextual else None
    snapshot = state.copy()
    for rewards, shown in [(np.array(["1", "0"]), "<U1"), (np.array([1 + 0j, 0j]), "complex"),
                           (np.array([True, False]), "bool"),
                           (np.array([1.0, "x"], dtype=object), "'x'")]:
        with pytest.raises(TypeError, match=f"reward must hold real numbers, got an array of "
                                            f".*{shown}"):
            policy.update_batch(state, np.array([0, 1]), rewards, contexts)
        for key in state.stats:
            np.testing.assert_array_equal(state.stats[key], snapshot.stats[key])
        assert state.n_pending == 0
    # Python numbers in an object array are real numbers.
    policy.update_batch(state, np.array([0, 1]), np.array([1, 0.0], dtype=object), contexts)


@pytest.mark.parametrize("make", [*POLICIES,
                                  lambda: bd.MultileaveThompsonSampling(ARMS, m=2, slate_size=2),
                                  lambda: bd.PageHinkley(ARMS), lambda: bd.CUSUM(ARMS)],
                         ids=[*IDS, "multileave", "page_hinkley", "cusum"])
def test_hyper_parameters_and_arms_are_fixed_once_built(make):
    """p.epsilon = -5 gave probabilities of -1.67 and a state that could not be loaded,
    p.exploration = nan NaN probabilities, p.prior_alpha = -1 was ignored, p.arms = ["x"] left
    one arm over three columns of state, del p.epsilon broke get_params; a multileaving policy
    and the drift detectors took the same (found by attack)."""
    built = make()
    policy = trained(built) if isinstance(built, bd.BatchedPolicy) else built
    before = json.dumps(policy.state_dict())
    for name in [*policy.get_params(), "arms"]:
        with pytest.raises(AttributeError, match=f"set {type(policy).__name__}.{name}: fixed "
                                                 "once built"):
            setattr(policy, name, -5)
        with pytest.raises(AttributeError, match=f"delete {type(policy).__name__}.{name}: "
                                                 "fixed once built"):
            delattr(policy, name)
    assert json.dumps(policy.state_dict()) == before
    policy._scratch = 1  # other attributes are the object's own business
    rebuilt = type(policy)(policy.arms, **policy.get_params())  # what the message says to do
    assert rebuilt.get_params() == policy.get_params()
    if isinstance(policy, bd.BatchedPolicy):  # arms change the one way they can
        policy.add_arm("Popularity")
        assert policy.arms[-1] == "Popularity" and policy.n_arms == 4


def test_a_numpy_complex_reward_or_context_is_refused():
    ts = bd.ThompsonSampling(ARMS)
    with pytest.raises(TypeError, match="reward must be a real number"):
        ts.update(0, np.complex128(1))
    detector = bd.PageHinkley(ARMS)  # the detectors dropped the imaginary part (review)
    before = json.dumps(detector.state_dict())
    for bad in (np.complex128(0.5 + 1j), np.bool_(True), "1"):
        with pytest.raises(TypeError, match="reward must be a real number"):
            detector.update(0, bad)
    assert json.dumps(detector.state_dict()) == before
    floored = bd.ExplorationFloor(bd.ThompsonSampling(ARMS), floor=0.1)
    with pytest.raises(AttributeError, match=r"set ExplorationFloor\.floor: fixed once built"):
        floored.floor = -5  # was taken (review)
    lin = bd.LinUCB(ARMS, n_features=2)
    before = json.dumps(lin.state_dict())
    for ctx in (np.array([1 + 5j, 1]), np.array(["1", "2"])):
        with pytest.raises(ValueError, match="context must be numeric"):
            lin.update(0, 1.0, ctx)
    assert_unchanged(lin, before)
    lin.update(0, 1.0, np.array([True, False]))  # booleans are features (one-hot)


@pytest.mark.parametrize("call, exc, match", [
    (lambda: bd.ThompsonSampling(ARMS, prior_alpha=0.0), ValueError, "prior_alpha=0.0"),
    (lambda: bd.ThompsonSampling(ARMS, prior_beta=[1, 2]), ValueError, "one per arm"),
    (lambda: bd.ThompsonSampling(ARMS, prior_beta="x"), TypeError, "prior_beta"),
    (lambda: bd.ThompsonSampling(ARMS, batch_size=0), ValueError, "batch_size=0"),
    (lambda: bd.ThompsonSampling(ARMS, random_state="seed"), TypeError, "random_state"),
    (lambda: bd.ThompsonSampling(["a", "a"]), ValueError, "duplicates"),
    (lambda: bd.ThompsonSampling([]), ValueError, "at least one arm"),
    (lambda: bd.ThompsonSampling("abc"), TypeError, "list of str"),
    (lambda: bd.EpsilonGreedy(ARMS, epsilon=1.5), ValueError, r"epsilon=1\.5"),
    (lambda: bd.EpsilonGreedy(ARMS, decay=-1.0), ValueError, "decay"),
    (lambda: bd.UCB1(ARMS, exploration=0.0), ValueError, "exploration"),
    (lambda: bd.KLUCB(ARMS, tol=0.0), ValueError, "tol"),
    (lambda: bd.DiscountedThompsonSampling(ARMS, discount=1.2), ValueError, "discount"),
    (lambda: bd.SlidingWindowThompsonSampling(ARMS, window=0), ValueError, "window"),
    (lambda: bd.GaussianThompsonSampling(ARMS, noise_variance=-1.0), ValueError,
     "noise_variance"),
    (lambda: bd.LinUCB(ARMS, n_features=0), ValueError, "n_features"),
    (lambda: bd.LinTS(ARMS, n_features=2, scale=0.0), ValueError, "scale"),
])
def test_bad_hyper_parameters_are_named(call, exc, match):
    with pytest.raises(exc, match=match):
        call()


def test_bad_arm_changes_leave_state_untouched():
    ts = trained(bd.ThompsonSampling(ARMS, random_state=0))
    before = json.dumps(ts.state_dict())
    for call, match in [(lambda: ts.add_arm("SVD"), "duplicates"),
                        (lambda: ts.add_arm("X", warm_start_from="Nope"), "warm_start_from"),
                        (lambda: ts.add_arm("X", prior_alpha=-1.0), "prior_alpha"),
                        (lambda: ts.add_arm("X", discount=0.5), "unknown per-arm"),
                        (lambda: ts.remove_arm("Nope"), "Nope")]:
        with pytest.raises(ValueError, match=match):
            call()
        assert_unchanged(ts, before)
    single = bd.ThompsonSampling(["only"])
    with pytest.raises(ValueError, match="at least one arm"):
        single.remove_arm("only")


def test_bad_state_dicts_are_rejected():
    state = bd.ThompsonSampling(ARMS, random_state=0).state_dict()
    with pytest.raises(ValueError, match="not a known policy"):
        bd.policy_from_state_dict({**state, "policy": "Nope"})
    with pytest.raises(ValueError, match="not a UCB1"):
        bd.UCB1.from_state_dict(state)
    with pytest.raises(ValueError, match="format"):
        bd.policy_from_state_dict({**state, "format": 99})
    broken = json.loads(json.dumps(state))
    broken["stats"]["successes"] = [1.0, 2.0]
    with pytest.raises(ValueError, match="successes"):
        bd.policy_from_state_dict(broken)
    with pytest.raises(ValueError, match="no 'policy' key"):
        bd.policy_from_state_dict({"arms": ARMS})


def test_simulator_rejects_bad_problems():
    with pytest.raises(ValueError, match="means"):
        bd.simulate_bernoulli(bd.ThompsonSampling(2), [0.5, 1.2], 10)
    with pytest.raises(ValueError, match="2 arms; the problem has 3"):
        bd.simulate_bernoulli(bd.ThompsonSampling(2), [0.1, 0.2, 0.3], 10)
    with pytest.raises(ValueError, match="checkpoints"):
        bd.simulate_bernoulli(bd.ThompsonSampling(2), [0.1, 0.2], 10, checkpoints=[0, 20])
    with pytest.raises(ValueError, match="contextual"):
        bd.simulate_bernoulli(bd.LinTS(2, n_features=2), [0.1, 0.2], 10)
    with pytest.raises(ValueError, match="sds"):
        bd.simulate_gaussian(bd.GaussianThompsonSampling(2), [0.1, 0.2], [1.0, 0.0], 10)


@pytest.mark.parametrize("make", POLICIES, ids=IDS)
def test_a_negative_seed_is_named_by_every_policy(make):
    # numpy's own message, "expected non-negative integer", named neither the value nor the
    # parameter (found by attack).
    cls, params = type(make()), make().get_params()
    params.pop("random_state", None)
    with pytest.raises(ValueError, match=r"random_state=-1 is outside the allowed range \[0, "):
        cls(ARMS, **params, random_state=-1)


@pytest.mark.parametrize("rng_mode", ["shared", "per_run"])
def test_the_simulator_names_a_negative_seed(rng_mode):
    with pytest.raises(ValueError, match=r"seed=-3 is outside the allowed range \[0, "):
        bd.simulate_bernoulli({"policy": "ThompsonSampling"}, [0.1, 0.2], horizon=3, seed=-3,
                              rng_mode=rng_mode)
    with pytest.raises(TypeError, match="seed must be None, a non-negative int"):
        bd.simulate_bernoulli({"policy": "ThompsonSampling"}, [0.1, 0.2], horizon=3, seed="7",
                              rng_mode=rng_mode)


@pytest.mark.parametrize("arms, bad", [([[0, 5, 1]], "5"), ([0, -1], "-1"), ([3], "3")])
def test_regret_helper_names_an_arm_out_of_range(arms, bad):
    # 5 of 3 arms was a bare IndexError and -1 silently counted as the last arm (found by attack).
    with pytest.raises(ValueError, match=rf"arms contains {bad}, outside the allowed range 0\.\.2"):
        bd.cumulative_pseudo_regret([0.5, 0.4, 0.3], np.array(arms))


def test_regret_helper_refuses_non_integer_arms_and_bad_means():
    with pytest.raises(ValueError, match="arms must hold integer arm positions, got dtype float64"):
        bd.cumulative_pseudo_regret([0.5, 0.4], np.array([0.0, 1.0]))
    with pytest.raises(ValueError, match="means must be a non-empty 1-d array"):
        bd.cumulative_pseudo_regret([], np.array([0]))
    np.testing.assert_allclose(bd.cumulative_pseudo_regret([0.5, 0.4], np.array([1, 0, 1])),
                               [0.1, 0.1, 0.2])


def test_a_floor_and_a_bernoulli_divergence_refuse_what_is_no_probability():
    """floor_probabilities([nan, .5, .5]) gave [nan, .45, .45] and [-0.1, .6, .5] a
    valid-looking [0.03, 0.52, 0.45]; bernoulli_kl(0.2, 1.5) gave nan (found by attack)."""
    from bandits.exploration import floor_probabilities
    from bandits.ucb import bernoulli_kl

    for bad, shown in ((np.array([np.nan, .5, .5]), "nan"), (np.array([-0.1, .6, .5]), "-0.1"),
                       (np.array([[0.5, 0.5, 0.0], [1.5, -0.5, 0.0]]), "1.5")):
        with pytest.raises(ValueError, match=f"probabilities contains {shown}; each must lie"):
            floor_probabilities(bad, 0.1)
    with pytest.raises(TypeError, match="probabilities must hold real numbers"):
        floor_probabilities(np.array(["1", "0"]), 0.1)
    with pytest.raises(ValueError, match=r"rows must sum to one, got a row summing to 1\.8"):
        floor_probabilities(np.array([0.9, 0.9]), 0.05)  # gave [0.86, 0.86]
    with pytest.raises(ValueError, match=r"has shape \(0,\)"):
        floor_probabilities(np.array([]), 0.05)  # a ZeroDivisionError
    np.testing.assert_allclose(floor_probabilities(np.array([1.0, 0.0, 0.0]), 0.1),
                               [0.8, 0.1, 0.1])
    for p, q, shown in ((0.2, 1.5, "q contains 1.5"), (np.nan, 0.5, "p contains nan"),
                        (np.array([0.1, -0.2]), 0.5, "p contains -0.2")):
        with pytest.raises(ValueError, match=f"{shown}; each must lie in \\[0, 1\\]"):
            bernoulli_kl(p, q)
    assert bernoulli_kl(0.2, 0.5) == pytest.approx(0.2 * np.log(0.4) + 0.8 * np.log(1.6))


@pytest.mark.parametrize("make", POLICIES, ids=IDS)
def test_a_batched_state_of_another_arm_count_is_refused_before_any_use(make):
    """A state built for fewer arms chose among those arms only, silently (found by review)."""
    policy = make()
    other = type(policy)(ARMS[:2], **{k: v for k, v in policy.get_params().items()
                                        if k not in ("prior_alpha", "prior_beta")})
    state = other.init_batch(3)
    before = {k: v.copy() for k, v in state.stats.items()}
    ctx = np.zeros((3, 2)) if policy.contextual else None
    rng = np.random.default_rng(0)
    for call in (lambda: policy.select_batch(state, rng, ctx),
                 lambda: policy.update_batch(state, np.zeros(3, dtype=int), np.ones(3), ctx),
                 lambda: policy.probabilities_batch(state, ctx),
                 lambda: policy.flush_batch(state)):
        with pytest.raises(ValueError, match=r"with 3 arms expects \(runs, 3"):
            call()
    assert all(np.array_equal(state.stats[k], v) for k, v in before.items())
    policy.add_arm("Popularity")  # the layout follows the arms
    policy.select_batch(policy.init_batch(2), rng, None if ctx is None else ctx[:2])
    with pytest.raises(ValueError, match="with 4 arms"):
        policy.select_batch(make().init_batch(2), rng, None if ctx is None else ctx[:2])


def test_a_batched_state_of_another_policy_or_shape_is_refused_naming_what_differs():
    rng = np.random.default_rng(0)
    ts_state = bd.ThompsonSampling(ARMS).init_batch(2)
    with pytest.raises(ValueError, match=r"holds the statistics \['failures', 'successes'\], "
                                         r"not the \['pulls', 'reward_sum'\] of UCB1"):
        bd.UCB1(ARMS).select_batch(ts_state, rng)
    with pytest.raises(TypeError, match=r"state must be a BatchState from UCB1\.init_batch, "
                                        r"got dict"):
        bd.UCB1(ARMS).select_batch({}, rng)
    with pytest.raises(ValueError, match=r"'A_inv' has shape \(2, 3, 3, 3\); LinTS with 3 arms "
                                         r"expects \(runs, 3, 2, 2\)"):
        bd.LinTS(ARMS, n_features=2).probabilities_batch(
            bd.LinTS(ARMS, n_features=3).init_batch(2), np.zeros((2, 2)))
    with pytest.raises(ValueError, match=r"buffer has shape \(2, 1\); this policy "
                                         r"\(batch_size=4\) expects \(2, 4\)"):
        bd.ThompsonSampling(ARMS, batch_size=4).update_batch(ts_state, np.zeros(2, dtype=int),
                                                             np.ones(2))


def test_the_multileaving_policy_and_the_detectors_refuse_a_state_of_other_arms():
    rng = np.random.default_rng(0)
    five = bd.MultileaveThompsonSampling([*ARMS, "a", "b"], m=2, slate_size=4)
    small = bd.MultileaveThompsonSampling(ARMS, m=2, slate_size=4).init_batch(2)
    for call in (lambda: five.select_batch(small, rng),
                 lambda: five.set_probabilities_batch(small),
                 lambda: five.update_batch(small, np.zeros((2, 4), dtype=int), np.zeros((2, 4)))):
        with pytest.raises(ValueError, match=r"with 5 arms expects \(runs, 5\)"):
            call()
    assert not small.successes.any() and not small.failures.any()
    detector = bd.PageHinkley([*ARMS, "a"])
    state = bd.PageHinkley(ARMS).init_batch(2)
    for call in (lambda: detector.update_batch(state, np.zeros(2, dtype=int), np.ones(2)),
                 lambda: detector.statistic_batch(state)):
        with pytest.raises(ValueError, match=r"PageHinkley with 4 arms expects \(runs, 4\)"):
            call()
    assert not state.stats["n"].any()
    with pytest.raises(ValueError, match=r"not the .* of CUSUM"):
        bd.CUSUM([*ARMS, "a"]).statistic_batch(detector.init_batch(1))
