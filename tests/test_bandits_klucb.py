"""KL-UCB index solver: tolerance, warm starts, the per-state cache and the selection shortcut."""

from __future__ import annotations

import numpy as np
import pytest
from scipy.optimize import brentq

import bandits as bd
from bandits.ucb import kl_ucb_indices


def _root(p: float, d: float) -> float:
    hi = np.nextafter(1.0, 0.0)
    if p >= 1 or bd.bernoulli_kl(p, hi) <= d:
        return 1.0
    return brentq(lambda x: bd.bernoulli_kl(p, x) - d, p, hi, xtol=1e-15, rtol=1e-15)


def test_index_is_the_grid_point_at_or_above_the_root_whatever_the_start():
    rng = np.random.default_rng(4)
    n = 400
    p = np.concatenate([rng.random(n), [0.0, 1e-9, 1 - 1e-9, 1.0]])
    d = np.concatenate([rng.exponential(size=n) * rng.choice([1e-6, 1e-3, 0.1, 5.0], n),
                        [0.3, 1e-5, 2.0, 0.1]])
    for tol in (1e-6, 1e-3):
        q = bd.kl_ucb_upper(p, d, tol=tol)
        for start in (rng.random(p.size), q + 1e-4 * rng.normal(size=p.size),
                      np.full(p.size, np.nan)):
            np.testing.assert_array_equal(bd.kl_ucb_upper(p, d, tol=tol, start=start), q)
        for pi, di, qi in zip(p, d, q, strict=True):
            root = _root(pi, di)
            assert root - 1e-13 <= qi < root + tol, (pi, di, qi, root)


def test_cached_indices_equal_fresh_ones_along_a_simulation_and_after_state_edits():
    means = np.array([0.5, 0.45, 0.45, 0.3])
    pol = bd.KLUCB(4)
    state = pol.init_batch(30)
    rng, env = np.random.default_rng(0), np.random.default_rng(1)
    for t in range(1500):
        if t == 700:  # a state replaced behind the cache's back (e.g. restored) stays exact
            state.stats["pulls"][:5] = state.stats["pulls"][5:10]
            state.stats["reward_sum"][:5] = state.stats["reward_sum"][5:10] * 0.5
        s = state.stats
        cached = kl_ucb_indices(s["pulls"], s["reward_sum"], 0.0, 1e-6, cache=state.scratch)
        if t % 10 == 0 or t == 700:
            np.testing.assert_array_equal(
                cached, kl_ucb_indices(s["pulls"], s["reward_sum"], 0.0, 1e-6))
        arms = pol.select_batch(state, rng)
        pol.update_batch(state, arms, (env.random(30) < means[arms]).astype(float))
    # identical statistics give identical indices (exact ties), cached or not
    s = state.stats
    s["pulls"][:, 2], s["reward_sum"][:, 2] = s["pulls"][:, 1], s["reward_sum"][:, 1]
    q = kl_ucb_indices(s["pulls"], s["reward_sum"], 0.0, 1e-6, cache=state.scratch)
    np.testing.assert_array_equal(q[:, 1], q[:, 2])


def test_selection_shortcut_keeps_the_tie_set_when_an_arm_has_mean_one():
    # at p = 1 the chi-square lower bound rounds to 1 + 1 ulp; arms whose Pinsker bound is capped
    # at 1 must still get their exact index, not a spurious tie at 1
    pulls = np.array([[2.0, 1, 1, 1, 1, 3, 1, 1, 2, 1]])
    sums = np.array([[2.0, 1, 0, 0, 1, 2, 0, 0, 1, 1]])
    fast = kl_ucb_indices(pulls, sums, 0.0, 1e-6, only_argmax=True)
    full = kl_ucb_indices(pulls, sums, 0.0, 1e-6)
    np.testing.assert_array_equal(fast == fast.max(), full == full.max())
    assert (full == 1.0).sum() == 4 and full[0, 3] < 0.93


def _kl_by_hand(p: float, q: float) -> float:
    """Bernoulli KL divergence written out (0 log 0 = 0), independent of bandits.ucb."""
    out = 0.0
    if p > 0:
        out += p * np.log(p / q)
    if p < 1:
        out += (1 - p) * np.log((1 - p) / (1 - q))
    return out


@pytest.mark.parametrize("c", [0.0, 3.0])
def test_each_index_solves_n_kl_equals_the_exploration_budget(c: float) -> None:
    """Garivier & Cappe's index: the largest q with n kl(p, q) <= log t + c log log t, solved
    here by brentq on the divergence written out. A review made the budget 0 (a greedy
    policy) and every KL-UCB test still passed: they compared the solver with itself."""
    pulls = np.array([[100.0, 3.0, 0.0]])
    sums = np.array([[60.0, 1.0, 0.0]])
    t = pulls.sum()
    budget = np.log(t) + c * np.log(np.log(t))
    indices = kl_ucb_indices(pulls, sums, c, 1e-9)
    for arm in (0, 1):
        n, p = pulls[0, arm], sums[0, arm] / pulls[0, arm]
        root = brentq(lambda q, n=n, p=p: n * _kl_by_hand(p, q) - budget, p, 1 - 1e-15,
                      xtol=1e-15)
        assert root - 1e-12 <= indices[0, arm] < root + 1e-9
    assert indices[0, 2] == np.inf  # never pulled: tried first
    # 100 pulls at 0.60 against 3 at 0.33: the budget lifts the rarely pulled arm above it
    # (0.70 against 0.93 at c = 0; 0.79 against 0.97 at c = 3), where a greedy policy would
    # keep pulling arm 0.
    assert indices[0, 1] > 0.9 > 0.8 > indices[0, 0]
    policy = bd.KLUCB(2, c=c, random_state=0)
    for arm, rewards in ((0, [1.0] * 60 + [0.0] * 40), (1, [1.0, 0.0, 0.0])):
        for r in rewards:
            policy.update(arm, r)
    assert policy.select() == 1
