"""Behaviour and numbers of the bandit policies (fixed seeds, small synthetic problems)."""

from __future__ import annotations

import json

import numpy as np
import pytest
from scipy.optimize import brentq

import bandits as bd
from bandits.base import BatchState
from bandits.simulate import run_generators

SEED_MEANS = [0.10, 0.15, 0.12]
SEED_ARMS = ["SVD", "Sequential", "Autoencoder"]


def all_policies(n_arms=3, **kw):
    """One configured instance of every context-free policy."""
    return [
        bd.ThompsonSampling(n_arms, **kw),
        bd.DiscountedThompsonSampling(n_arms, discount=0.98, **kw),
        bd.SlidingWindowThompsonSampling(n_arms, window=40, **kw),
        bd.GaussianThompsonSampling(n_arms, noise_variance=0.25, **kw),
        bd.GaussianThompsonSampling(n_arms, noise_variance=None, **kw),
        bd.EpsilonGreedy(n_arms, epsilon=0.2, **kw),
        bd.EpsilonGreedy(n_arms, epsilon=1.0, decay=5.0, **kw),
        bd.UCB1(n_arms, **kw),
        bd.KLUCB(n_arms, **kw),
        bd.RandomPolicy(n_arms, **kw),
    ]


def train(policy, steps, seed, means=SEED_MEANS):
    rng = np.random.default_rng(seed)
    for _ in range(steps):
        k = policy.select()
        policy.update(k, float(rng.random() < means[k]))
    return policy


def replicate(state: BatchState, n: int) -> BatchState:
    """``n`` copies of a one-run state as one batched state."""
    return BatchState(
        stats={k: np.repeat(v, n, axis=0) for k, v in state.stats.items()},
        pending_arms=np.repeat(state.pending_arms, n, axis=0),
        pending_rewards=np.repeat(state.pending_rewards, n, axis=0),
        pending_contexts=None if state.pending_contexts is None
        else np.repeat(state.pending_contexts, n, axis=0),
        n_pending=state.n_pending,
    )


# ------------------------------------------------------------------ the seed problem
def test_thompson_concentrates_on_best_arm_of_seed_problem():
    res = bd.simulate_bernoulli(bd.ThompsonSampling(SEED_ARMS), SEED_MEANS, horizon=10_000,
                               runs=100, seed=2024)
    share = (res.arms[:, 9_000:] == 1).mean()
    assert share > 0.90, share  # about 0.97 for a correct implementation
    # regret is logarithmic-ish: far below the 10,000 * 0.033 of uniform play
    assert res.mean_regret()[-1] < 0.25 * 10_000 * np.mean(0.15 - np.array(SEED_MEANS))


def test_thompson_posterior_counts_successes_and_failures():
    ts = bd.ThompsonSampling(SEED_ARMS, prior_alpha=[1, 2, 3], prior_beta=4.0, random_state=0)
    for arm, r in [("SVD", 1), ("SVD", 0), ("Autoencoder", 1), (1, 0.25)]:
        ts.update(arm, r)
    post = ts.posterior()
    assert post["SVD"] == {"alpha": 2.0, "beta": 5.0, "mean": 2 / 7, "successes": 1.0,
                           "failures": 1.0, "pulls": 2.0}
    assert post["Sequential"]["alpha"] == 2.25 and post["Sequential"]["beta"] == 4.75
    assert post["Autoencoder"]["alpha"] == 4.0 and post["Autoencoder"]["pulls"] == 1.0


# ------------------------------------------------------------------ propensities
@pytest.mark.parametrize("policy", all_policies(random_state=3), ids=lambda p: repr(p)[:40])
def test_propensities_sum_to_one_and_match_selection_frequencies(policy):
    train(policy, 60, seed=1, means=[0.3, 0.5, 0.45])
    p, err = policy.action_probabilities_with_error()
    assert p.shape == (3,) and abs(p.sum() - 1) < 1e-12 and (p >= 0).all()
    n = 200_000
    arms = policy.select_batch(replicate(policy.state_, n), np.random.default_rng(11))
    freq = np.bincount(arms, minlength=3) / n
    tol = 4.5 * np.sqrt(p * (1 - p) / n) + err + 1e-9
    np.testing.assert_array_less(np.abs(freq - p), tol)


def test_quadrature_propensity_is_accurate_and_bounded():
    ts = bd.ThompsonSampling(2, prior_alpha=[3.0, 5.0], prior_beta=[4.0, 2.0])
    p, err = ts.action_probabilities_with_error()
    # P(X > Y) for independent Betas, by brute-force 1-d integration
    from scipy import integrate, special
    pdf = lambda x: x**2 * (1 - x) ** 3 / special.beta(3, 4)  # noqa: E731
    exact = integrate.quad(lambda x: pdf(x) * special.betainc(5, 2, x), 0, 1, epsabs=1e-12)[0]
    assert abs(p[0] - exact) < 1e-6 and (err <= np.pi / (4 * 2048) + 1e-15).all()


def _probability_of_max_one_arm_at_a_time(ppf, cdf_all, n_runs, n_arms, n_grid):
    """The quadrature as it was computed before, one arm at a time with every arm's CDF and arm
    k's factor set to 1: the reference the all-arms-at-once form must equal to rounding.
    """
    from bandits.base import quadrature_grid
    u, du = quadrature_grid(n_grid)
    probs = np.empty((n_runs, n_arms))
    for k in range(n_arms):
        F = cdf_all(ppf(k, u))
        F[:, k, :] = 1.0
        g = F.prod(axis=1)
        probs[:, k] = 0.5 * (g[:, :-1] @ du + g[:, 1:] @ du)
    probs = np.clip(probs, 0.0, None)
    return probs / probs.sum(axis=1, keepdims=True)


@pytest.mark.parametrize("n_arms", [1, 2, 5])
def test_quadrature_of_all_arms_at_once_equals_the_one_arm_at_a_time_rule(n_arms):
    from scipy import special

    from bandits.gaussian import gaussian_probability_of_max
    from bandits.thompson import beta_probability_of_max
    rng = np.random.default_rng(3)
    a, b = rng.uniform(1, 40, (4, n_arms)), rng.uniform(1, 40, (4, n_arms))
    ref = _probability_of_max_one_arm_at_a_time(
        lambda k, u: special.betaincinv(a[:, k, None], b[:, k, None], u[None, :]),
        lambda x: special.betainc(a[:, :, None], b[:, :, None], x[:, None, :]), 4, n_arms, 256)
    np.testing.assert_allclose(beta_probability_of_max(a, b, 256)[0], ref, rtol=0, atol=1e-15)
    loc, scale = rng.normal(size=(4, n_arms)), rng.uniform(0.01, 2.0, (4, n_arms))
    ref = _probability_of_max_one_arm_at_a_time(
        lambda k, u: loc[:, k, None] + scale[:, k, None] * special.ndtri(u)[None, :],
        lambda x: special.ndtr((x[:, None, :] - loc[:, :, None]) / scale[:, :, None]),
        4, n_arms, 300)
    np.testing.assert_allclose(gaussian_probability_of_max(loc, scale, None, 300)[0], ref,
                               rtol=0, atol=1e-15)
    df = rng.uniform(2, 30, (4, n_arms))
    ref = _probability_of_max_one_arm_at_a_time(
        lambda k, u: loc[:, k, None] + scale[:, k, None] * special.stdtrit(df[:, k, None], u),
        lambda x: special.stdtr(df[:, :, None],
                                (x[:, None, :] - loc[:, :, None]) / scale[:, :, None]),
        4, n_arms, 300)
    np.testing.assert_allclose(gaussian_probability_of_max(loc, scale, df, 300)[0], ref,
                               rtol=0, atol=1e-15)


def test_quadrature_in_blocks_of_runs_equals_one_run_at_a_time(monkeypatch):
    # A batched call (OPE's replay of a refresh block) goes in blocks of runs that bound its
    # memory; each run's probabilities are those of a call for that run alone.
    import bandits.base
    from bandits.thompson import beta_probability_of_max
    rng = np.random.default_rng(4)
    a, b = rng.uniform(1, 40, (23, 4)), rng.uniform(1, 40, (23, 4))
    monkeypatch.setattr(bandits.base, "QUADRATURE_BLOCK_VALUES", 5 * 4 * 3 * 65)  # 5 runs
    p, err = beta_probability_of_max(a, b, 64)
    for r in range(23):
        one, one_err = beta_probability_of_max(a[r:r + 1], b[r:r + 1], 64)
        np.testing.assert_allclose(p[r], one[0], rtol=0, atol=1e-15)
        np.testing.assert_allclose(err[r], one_err[0], rtol=0, atol=1e-15)
    assert (err <= np.pi / (4 * 64) + 1e-15).all()


@pytest.mark.parametrize(("grid", "atol"), [(2048, 1e-6), (256, 2e-5)])
def test_lints_propensities_match_a_direct_integral(grid, atol):
    # The pmf the service logs and OPE replays: LinTS (d = 30, five arms) with the class's
    # default 2048 intervals and the service's 256, against P(k max) = int phi(z)
    # prod_j Phi((m_k + s_k z - m_j) / s_j) dz by adaptive quadrature. With 256 intervals the
    # error here is 6e-6 (the guaranteed bound is pi / 1024).
    from scipy import integrate, special
    rng = np.random.default_rng(5)
    policy = bd.LinTS(5, n_features=30, propensity_grid=grid, random_state=0)
    for _ in range(400):
        x = rng.random(30)
        policy.update(int(rng.integers(5)), float(rng.random() < 0.3), x)
    x = rng.random(30)
    p = policy.action_probabilities(x)
    A, b = policy.state_.stats["A_inv"][0], policy.state_.stats["b"][0]
    m = np.array([x @ A[k] @ b[k] for k in range(5)])
    s = np.sqrt([x @ A[k] @ x for k in range(5)])
    exact = [integrate.quad(lambda z, k=k: np.exp(-z * z / 2) / np.sqrt(
        2 * np.pi) * np.prod([special.ndtr((m[k] + s[k] * z - m[j]) / s[j])
                              for j in range(5) if j != k]), -12, 12, epsabs=1e-13,
        limit=200)[0] for k in range(5)]
    assert 0.05 < p.max() < 0.95  # a case where the arms compete
    np.testing.assert_allclose(p, exact, atol=atol, rtol=0)


def test_contextual_propensities_match_frequencies():
    rng = np.random.default_rng(0)
    for policy in (bd.LinTS(3, n_features=2, random_state=0),
                   bd.LinUCB(3, n_features=2, random_state=0)):
        for _ in range(30):
            x = rng.normal(size=2)
            policy.update(int(rng.integers(3)), float(rng.normal()), x)
        x = np.array([0.5, -1.0])
        p = policy.action_probabilities(x)
        n = 100_000
        arms = policy.select_batch(replicate(policy.state_, n), np.random.default_rng(1),
                                   np.tile(x, (n, 1)))
        freq = np.bincount(arms, minlength=3) / n
        assert abs(p.sum() - 1) < 1e-12
        np.testing.assert_array_less(np.abs(freq - p), 4.5 * np.sqrt(p * (1 - p) / n) + 1e-3)


# ------------------------------------------------------------------ batched == single
@pytest.mark.parametrize("policy", all_policies(batch_size=3), ids=lambda p: repr(p)[:40])
def test_batched_runs_equal_single_runs_with_the_same_seeds(policy):
    R, T, seed = 4, 120, 77
    res = bd.simulate_bernoulli(policy, SEED_MEANS, T, R, seed, rng_mode="per_run")
    pol_rngs, env_rngs = run_generators(seed, R)
    for r in range(R):
        single = bd.policy_from_state_dict(policy.state_dict(), random_state=pol_rngs[r])
        single.state_ = single.init_batch(1)
        arms, rewards = [], []
        for _ in range(T):
            k = single.select()
            reward = float(env_rngs[r].random((1,))[0] < SEED_MEANS[k])
            single.update(k, reward)
            arms.append(k)
            rewards.append(reward)
        np.testing.assert_array_equal(res.arms[r], arms)
        np.testing.assert_array_equal(res.rewards[r], rewards)
        np.testing.assert_array_equal(res.pulls[r, -1], np.bincount(arms, minlength=3))


def test_batched_linear_thompson_equals_single_runs():
    R, T, d = 3, 60, 2
    rngs = bd.spawn_generators(5, R)
    tmpl = bd.LinTS(["a", "b"], n_features=d, batch_size=2)
    state = tmpl.init_batch(R)
    xs = np.random.default_rng(9).normal(size=(T, R, d))
    batched = []
    for t in range(T):
        arms = tmpl.select_batch(state, rngs, xs[t])
        tmpl.update_batch(state, arms, xs[t].sum(axis=1) * (arms == 1), xs[t])
        batched.append(arms)
    batched = np.array(batched)
    for r, g in enumerate(bd.spawn_generators(5, R)):
        single = bd.LinTS(["a", "b"], n_features=d, batch_size=2, random_state=g)
        for t in range(T):
            k = single.select(xs[t, r])
            single.update(k, float(xs[t, r].sum() * (k == 1)), xs[t, r])
            assert k == batched[t, r]
        np.testing.assert_allclose(single.state_.stats["A_inv"][0], state.stats["A_inv"][r])


# ------------------------------------------------------------------ persistence
@pytest.mark.parametrize("policy", [*all_policies(batch_size=4, random_state=8),
                                    bd.LinUCB(3, n_features=2, batch_size=4, random_state=8),
                                    bd.LinTS(3, n_features=2, batch_size=4, random_state=8)],
                         ids=lambda p: repr(p)[:40])
def test_state_round_trips_through_json_to_an_identical_policy(policy):
    ctx = np.array([0.3, -0.2]) if policy.contextual else None
    rng = np.random.default_rng(0)
    for _ in range(23):  # 23 = not a multiple of batch_size: leaves buffered observations
        k = policy.select(ctx)
        policy.update(k, float(rng.random() < 0.4), ctx)
    text = json.dumps(policy.state_dict())
    clone = bd.policy_from_state_dict(json.loads(text))
    assert type(clone) is type(policy) and clone.state_dict() == policy.state_dict()
    assert type(policy).from_state_dict(json.loads(text)).arms == policy.arms
    for _ in range(30):
        a, b = policy.select(ctx), clone.select(ctx)
        assert a == b
        r = float(rng.random() < 0.4)
        policy.update(a, r, ctx)
        clone.update(b, r, ctx)
    np.testing.assert_allclose(policy.action_probabilities(ctx), clone.action_probabilities(ctx))
    assert json.dumps(clone.state_dict()) == json.dumps(policy.state_dict())


def test_state_dict_has_only_plain_python_types():
    ts = train(bd.ThompsonSampling(SEED_ARMS, random_state=0), 10, 0)

    def walk(x):
        if isinstance(x, dict):
            return all(isinstance(k, str) and walk(v) for k, v in x.items())
        if isinstance(x, list):
            return all(walk(v) for v in x)
        return type(x) in (int, float, str, bool, type(None))
    state = ts.state_dict()
    assert walk(state) and state["stats"]["successes"] == ts.state_.stats["successes"][0].tolist()


@pytest.mark.parametrize("bit_generator", [np.random.SFC64, np.random.Philox, np.random.MT19937])
def test_state_round_trips_with_any_bit_generator(bit_generator):
    # A Generator given by the caller may hold its state in arrays (SFC64's four uint64 words,
    # Philox's counter and key, MT19937's key): the state is still plain JSON, and the rebuilt
    # policy continues the same stream. (Before, json.dumps raised TypeError on the arrays.)
    ts = bd.ThompsonSampling(SEED_ARMS, random_state=np.random.Generator(bit_generator(21)))
    for _ in range(5):
        ts.update(ts.select(), 1.0)
    clone = bd.policy_from_state_dict(json.loads(json.dumps(ts.state_dict())))
    assert type(clone._rng.bit_generator) is bit_generator
    assert [clone.select() for _ in range(40)] == [ts.select() for _ in range(40)]


def test_float64_rewards_into_float32_statistics_are_added_as_float32():
    # beta_learn casts the rewards to the statistics' dtype before np.add.at (mixed dtypes take
    # a slow loop); every run's pulled arm gains r and 1 - r, the other arms nothing.
    ts = bd.ThompsonSampling(3)
    state = ts.init_batch(5, dtype=np.float32)
    arms = np.array([0, 2, 2, 1, 0])
    rewards = np.array([0.25, 1.0, 0.0, 0.6, 1.0])
    ts.update_batch(state, arms, rewards)
    ts.update_batch(state, arms, rewards)
    want = np.zeros((5, 3), dtype=np.float32)
    want[np.arange(5), arms] = 2 * rewards
    assert state.stats["successes"].dtype == np.float32
    np.testing.assert_allclose(state.stats["successes"], want, rtol=1e-7)
    want[np.arange(5), arms] = 2 * (1 - rewards)
    np.testing.assert_allclose(state.stats["failures"], want, rtol=1e-7)


# ------------------------------------------------------------------ delayed updates
def test_delayed_updates_refresh_every_batch_size_observations():
    ts = bd.ThompsonSampling(2, batch_size=3, random_state=0)
    ts.update(0, 1.0)
    ts.update(1, 0.0)
    assert ts.posterior()["arm0"]["pulls"] == 0  # buffered, not yet learned
    p_before = ts.action_probabilities()
    np.testing.assert_allclose(p_before, [0.5, 0.5], atol=1e-9)
    ts.update(0, 1.0)  # third observation: refresh
    post = ts.posterior()
    assert post["arm0"]["successes"] == 2 and post["arm1"]["failures"] == 1
    assert ts.state_.n_pending == 0


def test_delayed_thompson_still_learns_the_seed_problem():
    res = bd.simulate_bernoulli(bd.ThompsonSampling(3, batch_size=100), SEED_MEANS, 5_000, 60,
                               seed=4)
    assert (res.arms[:, 4_000:] == 1).mean() > 0.8


# ------------------------------------------------------------------ non-stationarity
def switching_run(policy, R=100, T=1500, switch=1000, seed=0):
    """Arm 0 is best (0.8 vs 0.2) until ``switch``, then arm 1; share of arm 1 afterwards."""
    rng = np.random.default_rng(seed)
    state = policy.init_batch(R)
    late = 0.0
    for t in range(T):
        means = np.array([0.8, 0.2]) if t < switch else np.array([0.2, 0.8])
        arms = policy.select_batch(state, rng)
        policy.update_batch(state, arms, (rng.random(R) < means[arms]).astype(float))
        if t >= switch:
            late += (arms == 1).mean()
    return late / (T - switch)


def test_discounted_thompson_recovers_after_the_best_arm_switches():
    discounted = switching_run(bd.DiscountedThompsonSampling(2, discount=0.95))
    window = switching_run(bd.SlidingWindowThompsonSampling(2, window=100))
    plain = switching_run(bd.ThompsonSampling(2))
    assert discounted > 0.85, discounted
    assert window > 0.75, window
    assert plain < 0.4, plain  # still anchored on ~800 old successes
    assert discounted > plain + 0.3


def test_discounted_thompson_decays_every_count_before_each_observation():
    """The update by hand (gamma 0.5): each observation first multiplies every arm's counts
    by gamma. A review deleted the failures' decay and every test still passed."""
    dts = bd.DiscountedThompsonSampling(["a", "b"], discount=0.5)
    for arm, r in [("a", 1), ("a", 0), ("b", 1)]:
        dts.update(arm, r)
    post = dts.posterior()
    # a: s 1 -> 0.5 -> 0.25; f 0 -> 0 + 1 -> 0.5.  b: 0 -> 0 -> 1.
    assert (post["a"]["successes"], post["a"]["failures"]) == (0.25, 0.5)
    assert (post["b"]["successes"], post["b"]["failures"]) == (1.0, 0.0)


def test_sliding_window_counts_only_the_last_observations():
    sw = bd.SlidingWindowThompsonSampling(["a", "b"], window=3)
    for arm, r in [("a", 1), ("a", 1), ("b", 0), ("b", 1), ("a", 0)]:
        sw.update(arm, r)
    post = sw.posterior()  # window holds b:0, b:1, a:0
    assert (post["a"]["successes"], post["a"]["failures"]) == (0.0, 1.0)
    assert (post["b"]["successes"], post["b"]["failures"]) == (1.0, 1.0)


# ------------------------------------------------------------------ contextual
def test_linear_thompson_beats_context_free_thompson_when_best_arm_depends_on_context():
    R, T, d = 40, 1500, 2
    rng = np.random.default_rng(3)
    # two user types; type 0 clicks arm 0 at 0.7 and arm 1 at 0.3, type 1 the reverse
    types = rng.integers(2, size=(T, R))
    ctx = np.stack([types == 0, types == 1], axis=-1).astype(float)
    rates = np.array([[0.7, 0.3], [0.3, 0.7]])
    totals = {}
    for name, pol in (("lints", bd.LinTS(2, n_features=d, scale=0.5)),
                      ("ts", bd.ThompsonSampling(2))):
        state = pol.init_batch(R)
        prng = np.random.default_rng(1)
        env = np.random.default_rng(2)
        total = 0.0
        for t in range(T):
            x = ctx[t] if pol.contextual else None
            arms = pol.select_batch(state, prng, x)
            r = (env.random(R) < rates[types[t], arms]).astype(float)
            pol.update_batch(state, arms, r, x)
            total += r.mean()
        totals[name] = total / T
    assert totals["ts"] < 0.55
    assert totals["lints"] > 0.65
    assert totals["lints"] > totals["ts"] + 0.1


def test_linucb_learns_coefficients():
    rng = np.random.default_rng(0)
    lin = bd.LinUCB(["a", "b"], n_features=3, alpha=0.5, ridge=0.1, random_state=0)
    w = np.array([[1.0, -2.0, 0.5], [0.0, 1.0, 1.0]])
    for _ in range(400):
        x = rng.normal(size=3)
        k = int(rng.integers(2))
        lin.update(k, float(w[k] @ x + 0.01 * rng.normal()), x)
    np.testing.assert_allclose(lin.coefficients(), w, atol=0.02)


def test_linucb_scores_are_the_ridge_mean_plus_alpha_times_the_standard_error():
    """A once-seen arm's bonus outweighs a well-known arm's better mean at alpha 1, not at
    alpha 0; computed by hand: A = ridge I + sum x x', theta = A^-1 sum r x, score
    x'theta + alpha sqrt(x' A^-1 x). A review dropped the bonus and every test still passed."""
    x = np.array([1.0, 0.0])
    picks = {}
    for alpha in (1.0, 0.0):
        lin = bd.LinUCB(["known", "new"], n_features=2, alpha=alpha, ridge=1.0, random_state=0)
        for _ in range(100):
            lin.update("known", 0.55, x)
        lin.update("new", 1.0, x)
        scores = []
        for n, r in ((100, 0.55), (1, 1.0)):
            a_inv = np.linalg.inv(np.eye(2) + n * np.outer(x, x))
            scores.append(x @ a_inv @ (n * r * x) + alpha * np.sqrt(x @ a_inv @ x))
        # known: 55/101 + alpha/sqrt(101) = 0.645 at alpha 1; new: 0.5 + alpha/sqrt(2) = 1.207
        best = int(np.argmax(scores))
        picks[alpha] = lin.arms[best]
        assert lin.select(x) == best
        np.testing.assert_array_equal(lin.action_probabilities(x), np.eye(2)[best])
    assert picks == {1.0: "new", 0.0: "known"}


# ------------------------------------------------------------------ gaussian
def test_gaussian_thompson_posterior_matches_conjugate_formulas():
    g = bd.GaussianThompsonSampling(["a", "b"], prior_mean=3.0, prior_strength=2.0,
                                   noise_variance=None, prior_shape=2.0, prior_rate=1.5)
    xs = [4.0, 5.0, 2.0]
    for x in xs:
        g.update("a", x)
    post = g.posterior()["a"]
    n, mean = 3, np.mean(xs)
    kappa = 2.0 + n
    loc = (2.0 * 3.0 + sum(xs)) / kappa
    alpha = 2.0 + n / 2
    beta = 1.5 + 0.5 * np.sum((np.array(xs) - mean) ** 2) + 2.0 * n * (mean - 3.0) ** 2 / (
        2 * kappa)
    assert post["loc"] == pytest.approx(loc)
    assert post["df"] == pytest.approx(2 * alpha)
    assert post["scale"] == pytest.approx(np.sqrt(beta / (alpha * kappa)))
    known = bd.GaussianThompsonSampling(1, prior_strength=1.0, noise_variance=4.0)
    known.update(0, 2.0)
    assert known.posterior()["arm0"]["scale"] == pytest.approx(np.sqrt(4.0 / 2.0))


def test_gaussian_thompson_finds_the_best_rated_arm():
    res = bd.simulate_gaussian(bd.GaussianThompsonSampling(3, noise_variance=None, prior_mean=3.0),
                              [3.2, 3.9, 3.5], 1.0, horizon=2_000, runs=40, seed=5)
    assert (res.arms[:, 1_500:] == 1).mean() > 0.9


# ------------------------------------------------------------------ arms at run time
def test_add_and_remove_arms():
    ts = train(bd.ThompsonSampling(SEED_ARMS, random_state=0), 200, 0)
    seq = ts.posterior()["Sequential"]
    pos = ts.add_arm("Popularity", warm_start_from="Sequential")
    assert pos == 3 and ts.arms[-1] == "Popularity"
    assert ts.posterior()["Popularity"] == seq
    ts.add_arm("Fresh", prior_alpha=2.0)
    assert ts.posterior()["Fresh"]["alpha"] == 2.0 and ts.posterior()["Fresh"]["pulls"] == 0
    assert ts.action_probabilities().shape == (5,)
    ts.remove_arm("SVD")
    assert ts.arms == ["Sequential", "Autoencoder", "Popularity", "Fresh"]
    assert ts.posterior()["Sequential"] == seq
    picks = {ts.select() for _ in range(300)}
    assert picks <= {0, 1, 2, 3}
    clone = bd.policy_from_state_dict(json.loads(json.dumps(ts.state_dict())))
    assert clone.arms == ts.arms and clone.posterior() == ts.posterior()


def test_remove_arm_reindexes_buffers():
    sw = bd.SlidingWindowThompsonSampling(["a", "b", "c"], window=4, batch_size=2)
    for arm in ["a", "b", "c", "c", "b"]:
        sw.update(arm, 1.0)
    sw.remove_arm("b")  # the buffered "b" is dropped, "c" becomes position 1
    assert sw.state_.n_pending == 0
    assert sorted(sw.state_.stats["window_arms"][0].tolist()) == [-1, 0, 1, 1]
    assert sw.posterior()["c"]["successes"] == 2.0


def test_linear_add_arm_starts_from_the_ridge_prior():
    lin = bd.LinUCB(["a"], n_features=2, ridge=2.0)
    lin.update("a", 1.0, [1.0, 0.0])
    lin.add_arm("b")
    np.testing.assert_allclose(lin.state_.stats["A_inv"][0, 1], np.eye(2) / 2.0)
    assert lin.action_probabilities([0.0, 1.0]).shape == (2,)


# ------------------------------------------------------------------ index policies and regret
def test_kl_ucb_solver_matches_brentq_and_is_never_below_the_root():
    rng = np.random.default_rng(0)
    p = np.concatenate([rng.random(300), [0.0, 0.0, 1.0, 1e-4]])
    d = np.concatenate([rng.exponential(size=300) * rng.choice([1e-3, 0.1, 5], 300),
                        [0.1, 30.0, 0.5, 2.0]])
    q = bd.kl_ucb_upper(p, d, tol=1e-10)
    for pi, di, qi in zip(p, d, q, strict=True):
        hi = np.nextafter(1.0, 0.0)
        if pi >= 1 or bd.bernoulli_kl(pi, hi) <= di:
            assert qi >= hi
            continue
        root = brentq(lambda x, pi=pi, di=di: bd.bernoulli_kl(pi, x) - di, pi, hi, xtol=1e-14)
        assert root - 1e-12 <= qi <= root + 1e-9


def test_kl_ucb_selection_shortcut_keeps_the_argmax():
    from bandits.ucb import kl_ucb_indices
    rng = np.random.default_rng(1)
    pulls = rng.integers(1, 5000, size=(500, 10)).astype(float)
    sums = pulls * (0.4 + 0.1 * rng.random((500, 10)))
    full = kl_ucb_indices(pulls, sums, 0.0, 1e-8)
    fast = kl_ucb_indices(pulls, sums, 0.0, 1e-8, only_argmax=True)
    np.testing.assert_array_equal(full.argmax(axis=1), fast.argmax(axis=1))
    np.testing.assert_allclose(full.max(axis=1), fast.max(axis=1))


def test_ucb1_index_and_first_round_robin():
    ucb = bd.UCB1(["a", "b", "c"], random_state=0)
    seen = set()
    for _ in range(3):
        k = ucb.select()
        seen.add(k)
        ucb.update(k, 0.5)
    assert seen == {0, 1, 2}  # untried arms (index inf) first
    ucb.update("a", 1.0)
    expected = 0.75 + np.sqrt(2 * np.log(4) / 2)
    assert ucb.indices()[0] == pytest.approx(expected)


def test_epsilon_greedy_propensity_is_exact():
    eg = bd.EpsilonGreedy(["a", "b", "c", "d"], epsilon=0.2)
    eg.update("a", 1.0)
    eg.update("b", 1.0)
    eg.update("c", 0.0)
    eg.update("d", 0.5)
    np.testing.assert_allclose(eg.action_probabilities(), [0.05 + 0.4, 0.05 + 0.4, 0.05, 0.05])
    decaying = bd.EpsilonGreedy(2, epsilon=1.0, decay=2.0)
    decaying.update(1, 0.0)
    for _ in range(8):
        decaying.update(0, 1.0)
    # t = 9 observations + 1 -> eps = 2 / 10; arm 0 is greedy
    np.testing.assert_allclose(decaying.action_probabilities(), [0.8 + 0.1, 0.1])


def test_lai_robbins_constant_and_cumulative_regret():
    means = [0.5, 0.4, 0.4]
    kl = 0.4 * np.log(0.4 / 0.5) + 0.6 * np.log(0.6 / 0.5)
    assert bd.lai_robbins_constant(means) == pytest.approx(2 * 0.1 / kl)
    np.testing.assert_allclose(bd.cumulative_pseudo_regret(means, np.array([[0, 1, 2, 0]])),
                               [[0.0, 0.1, 0.2, 0.2]])
    with pytest.raises(ValueError, match="means"):
        bd.lai_robbins_constant([0.5, 1.5])


def test_simulation_checkpoints_and_snapshots_agree_with_full_record():
    full = bd.simulate_bernoulli(bd.ThompsonSampling(3), SEED_MEANS, 300, 5, seed=1)
    cps = [1, 10, 100, 300]
    part = bd.simulate_bernoulli({"policy": "ThompsonSampling"}, SEED_MEANS, 300, 5, seed=1,
                                checkpoints=cps, snapshot=True)
    regret = bd.cumulative_pseudo_regret(SEED_MEANS, full.arms)
    np.testing.assert_allclose(part.cumulative_regret, regret[:, np.array(cps) - 1])
    np.testing.assert_allclose(full.pseudo_regret.cumsum(axis=1), regret)
    assert part.arms is None and len(part.snapshots) == 4
    snap = part.snapshots[-1]
    np.testing.assert_array_equal(snap["successes"] + snap["failures"], part.pulls[:, -1])
    np.testing.assert_allclose(snap["successes"].sum(axis=1), part.cumulative_reward[:, -1])


def test_simulations_are_reproducible():
    a = bd.simulate_bernoulli(bd.KLUCB(3), SEED_MEANS, 200, 4, seed=3)
    b = bd.simulate_bernoulli(bd.KLUCB(3), SEED_MEANS, 200, 4, seed=3)
    c = bd.simulate_bernoulli(bd.KLUCB(3), SEED_MEANS, 200, 4, seed=4)
    np.testing.assert_array_equal(a.arms, b.arms)
    assert not np.array_equal(a.arms, c.arms)
