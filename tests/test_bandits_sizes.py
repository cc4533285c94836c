"""Ceilings of the hyper-parameters that size a policy's state (window, n_features,
batch_size, arms, runs): refused before anything is allocated, naming the parameter, the value
and the ceiling (found by attack: numpy's MemoryError asking 7.28 TiB)."""

from __future__ import annotations

import itertools

import numpy as np
import pandas as pd
import pytest

import bandits.base
import bandits.gaussian
import bandits.thompson
from bandits import (
    ExplorationFloor,
    GaussianThompsonSampling,
    LinTS,
    LinUCB,
    MultileaveThompsonSampling,
    SlidingWindowThompsonSampling,
    ThompsonSampling,
    registered_policies,
)
from bandits.base import MAX_QUADRATURE_VALUES, QUADRATURE_BLOCK_VALUES
from bandits.multileave import order_probability


@pytest.mark.parametrize("build, pattern", [
    (lambda: SlidingWindowThompsonSampling(["a", "b"], window=10**12),
     r"SlidingWindowThompsonSampling\(window=1000000000000, batch_size=1\) with 2 arms: the "
     r"state of one run would take 14.6 TiB; at most 2 GiB \(MAX_STATE_BYTES\)"),
    (lambda: LinUCB(["a", "b"], n_features=10**6),
     r"LinUCB\(n_features=1000000, .*14.6 TiB; at most 2 GiB"),
    (lambda: LinTS(1000, n_features=1000), r"LinTS\(n_features=1000, .* with 1,000 arms"),
    (lambda: ThompsonSampling(3, batch_size=10**12),
     r"ThompsonSampling\(batch_size=1000000000000\)"),
])
def test_a_state_over_the_ceiling_is_refused_at_construction(build, pattern):
    with pytest.raises(ValueError, match=pattern):
        build()


def test_a_block_of_runs_over_the_ceiling_is_refused_before_it_is_built():
    policy = SlidingWindowThompsonSampling(["a", "b"], window=10**6)  # 16 MB a run
    with pytest.raises(ValueError, match=r"the state of 200 runs would take 2.98 GiB; .*"
                                         r"lower window, batch_size, the arms or the runs of "
                                         r"one batch \(simulate's runs_per_task\)"):
        policy.init_batch(200)
    assert policy.init_batch(2).stats["window_arms"].shape == (2, 10**6)


@pytest.mark.parametrize("name", sorted(registered_policies()))
@pytest.mark.parametrize("dtype", [np.float32, np.float64])
def test_state_bytes_is_what_init_batch_builds(name, dtype):
    cls = registered_policies()[name]
    kwargs = {"n_features": 3} if cls.contextual else {}
    policy = cls(4, batch_size=2, **kwargs)
    state = policy.init_batch(5, dtype=dtype)
    arrays = [*state.stats.values(), state.pending_arms, state.pending_rewards]
    arrays += [] if state.pending_contexts is None else [state.pending_contexts]
    assert policy.state_bytes(5, dtype=dtype) == sum(a.nbytes for a in arrays)


def test_the_ridge_models_start_at_the_prior(monkeypatch):
    # built without a d x d identity (state_bytes sizes zero runs): I / ridge exactly
    for dtype in (np.float32, np.float64):
        a_inv = LinUCB(2, n_features=3, ridge=3.0).init_batch(2, dtype=dtype).stats["A_inv"]
        expected = np.broadcast_to(np.eye(3, dtype=dtype) / 3.0, (2, 2, 3, 3))
        assert a_inv.dtype == dtype and np.array_equal(a_inv, expected)


def test_adding_an_arm_past_the_ceiling_is_refused_and_changes_nothing(monkeypatch):
    policy = LinUCB(["a", "b"], n_features=10)
    monkeypatch.setattr(bandits.base, "MAX_STATE_BYTES", policy.state_bytes(1))
    with pytest.raises(ValueError, match=r"LinUCB\(n_features=10, batch_size=1\) with 3 arms"):
        policy.add_arm("c")
    assert policy.arms == ["a", "b"] and policy.state_.stats["A_inv"].shape == (1, 2, 10, 10)


def _block_sizes(monkeypatch) -> list[int]:
    """The number of CDF values of every block :func:`probability_of_max` evaluates."""
    sizes: list[int] = []
    real = bandits.base.probability_of_max

    def spy(ppf, cdf, *args, **kwargs):
        def counted(rows, x, others):
            out = cdf(rows, x, others)
            sizes.append(out.size)
            return out
        return real(ppf, counted, *args, **kwargs)

    for module in (bandits.thompson, bandits.gaussian):
        monkeypatch.setattr(module, "probability_of_max", spy)
    return sizes


def test_propensities_of_many_arms_go_in_blocks_of_arms(monkeypatch):
    # found by attack: one run of K arms was one block of K (K - 1) 2049 values, 1.46 GB at
    # 300 arms; 100 arms: 20.3 million values, now blocks of 5 arms (1.01 million)
    sizes = _block_sizes(monkeypatch)
    p = ThompsonSampling(100, random_state=0).action_probabilities()
    assert p.sum() == pytest.approx(1.0) and np.allclose(p, 0.01, atol=1e-6)
    assert len(sizes) == 20 and max(sizes) == 5 * 99 * 2049 <= QUADRATURE_BLOCK_VALUES


def _posteriors(n_arms: int) -> list[tuple[object, object, np.ndarray | None]]:
    """(policy, state, contexts) of every quadrature family, seeded, with distinct arms."""
    rng = np.random.default_rng(3)
    ts = ThompsonSampling(n_arms)
    ts_state = ts.init_batch(3)
    ts_state.stats["successes"][:] = rng.integers(0, 40, (3, n_arms))
    ts_state.stats["failures"][:] = rng.integers(0, 40, (3, n_arms))
    gts = GaussianThompsonSampling(n_arms)  # unknown variance: Student-t marginals
    g_state = gts.init_batch(2)
    g_state.stats["pulls"][:] = rng.integers(1, 20, (2, n_arms))
    g_state.stats["reward_sum"][:] = g_state.stats["pulls"] * rng.random((2, n_arms))
    g_state.stats["reward_sq_sum"][:] = g_state.stats["reward_sum"] * 1.5
    lin = LinTS(n_arms, n_features=2, random_state=0)
    for _ in range(200):
        x = rng.random(2)
        lin.update(lin.select(x), float(rng.random()), x)
    contexts = np.stack([rng.random(2), np.zeros(2)])  # the tanh-sinh rule; point masses
    lin_state = lin.init_batch(2)
    for key, value in lin.state_.stats.items():
        lin_state.stats[key][:] = value
    return [(ts, ts_state, None), (gts, g_state, None), (lin, lin_state, contexts)]


def test_blocks_of_arms_give_the_same_propensities_as_one_block(monkeypatch):
    # Old code (one block per run, every arm) against blocks of one to three arms: the same
    # numbers to the bit, point masses' ties (LinTS at a zero context) included.
    whole = [policy.probabilities_batch(state, ctx, return_error=True)
             for policy, state, ctx in _posteriors(7)]
    monkeypatch.setattr(bandits.base, "QUADRATURE_BLOCK_VALUES", 6 * 2049 * 2)
    blocked = [policy.probabilities_batch(state, ctx, return_error=True)
             for policy, state, ctx in _posteriors(7)]
    for (p, e), (q, f) in zip(whole, blocked, strict=True):
        assert np.array_equal(p, q) and np.array_equal(e, f)


@pytest.mark.parametrize("n_arms, grid, most, pattern", [
    (10_000, 2048, 512, r"use fewer arms or a propensity_grid of at most 4 for 10,000 arms"),
    (513, 2048, 512, r"at most 2,043 for 513 arms"),
    (100_000, 256, 1445, r"use fewer arms$"),
])
def test_propensities_past_the_ceiling_are_refused(n_arms, grid, most, pattern):
    policy = ThompsonSampling(n_arms, propensity_grid=grid)
    with pytest.raises(ValueError, match=rf"propensities of {n_arms:,} arms by quadrature "
                                         rf"\(propensity_grid={grid}, {grid + 1:,} nodes\) are "
                                         rf"computed for at most {most:,} arms: .*{pattern}"):
        policy.action_probabilities()
    assert (most * (most - 1) * (grid + 1) <= MAX_QUADRATURE_VALUES
            < (most + 1) * most * (grid + 1))


@pytest.mark.parametrize("policy_class", [ThompsonSampling, GaussianThompsonSampling])
def test_a_floor_refuses_when_built_propensities_its_every_choice_would_refuse(
        monkeypatch, policy_class):
    # Review: ExplorationFloor(ThompsonSampling(2,000 arms)) was built, then refused every
    # choose(). The policy alone is still built past the ceiling (its batched core needs no
    # propensities); a ceiling of 6 arms on 9 nodes keeps the test fast.
    monkeypatch.setattr(bandits.base, "MAX_QUADRATURE_VALUES", 6 * 5 * 9)
    over = policy_class(7, propensity_grid=8, random_state=0)
    with pytest.raises(ValueError) as per_call:
        over.action_probabilities()
    with pytest.raises(ValueError) as built:
        ExplorationFloor(over, floor=0.01)
    assert str(built.value) == str(per_call.value)
    assert str(built.value).startswith("propensities of 7 arms by quadrature "
                                       "(propensity_grid=8, 9 nodes) are computed for at "
                                       "most 6 arms")
    assert over.select() in range(7)  # the policy alone still selects
    floored = ExplorationFloor(policy_class(6, propensity_grid=8, random_state=0),
                               floor=0.01, random_state=1)  # just under: builds and chooses
    choice = floored.choose()
    assert choice.propensity >= 0.01 and choice.probabilities.sum() == pytest.approx(1.0)


def test_a_floor_over_lints_is_built_and_its_quadrature_checked_at_each_choice(monkeypatch):
    # LinTS's rule depends on the context (33 to 129 tanh-sinh nodes, or the grid): only a
    # choice at a context can tell.
    monkeypatch.setattr(bandits.base, "MAX_QUADRATURE_VALUES", 6 * 5 * 9)
    floored = ExplorationFloor(LinTS(7, n_features=2, propensity_grid=8), floor=0.01)
    with pytest.raises(ValueError, match=r"^propensities of 7 arms by quadrature "
                                         r"\(the tanh-sinh rule, 33 nodes\)"):
        floored.choose(np.array([1.0, 0.5]))


def test_a_refused_multileave_select_draws_nothing():
    # Review: select() drew the set, then refused its probabilities past MAX_SETS, having
    # moved the policy's generator on.
    policy = MultileaveThompsonSampling(300, m=20, slate_size=20, random_state=0)
    before = policy._rng.bit_generator.state
    with pytest.raises(ValueError, match=r"sets of m=20 among 300 arms"):
        policy.select()
    assert policy._rng.bit_generator.state == before


def test_multileave_builds_its_sets_only_when_asked_and_never_past_max_sets():
    # found while bounding the attack's sizes: m=20 of 300 arms enumerated C(300, 20) = 7.5e30
    # sets in the constructor
    policy = MultileaveThompsonSampling(300, m=20, slate_size=20, random_state=0)
    choice = policy.select_batch(policy.init_batch(2), np.random.default_rng(0))
    assert choice.arms.shape == (2, 20)
    with pytest.raises(ValueError, match=r"^7,500,433,758,922,134,083,130,376,809,510 sets of "
                                         r"m=20 among 300 arms; set probabilities are computed "
                                         r"for at most 10,000$"):
        policy.set_probabilities()
    small = MultileaveThompsonSampling(5, m=2, slate_size=4)
    assert small.sets.tolist() == [list(s) for s in itertools.combinations(range(5), 2)]
    assert small.set_probabilities().shape == (10,)


@pytest.mark.parametrize("m, slate_size, exponent", [(2, 10**12, -150514997832),
                                                      (200, 200, -375), (2, 2046, -308)])
def test_a_draft_order_probability_below_float64_is_refused(m, slate_size, exponent):
    # found while bounding the attack's sizes: slate_size=10**12 computed 2**(5 * 10**11) and
    # never returned
    with pytest.raises(ValueError, match=rf"^m={m} rankers on slate_size={slate_size} positions: "
                                         rf".* would be 1e{exponent}, below float64's 2.23e-308"):
        MultileaveThompsonSampling(300, m=m, slate_size=slate_size)
    assert order_probability(2, 2044) == 2.0**-1022  # the last one that is a normal float


def test_the_machine_s_2_gib_is_one_number() -> None:
    """bandits, arms and envs may not import one another's (docs/architecture.md), so each
    keeps its copy of the limit; held equal here (review: three copies drift apart)."""
    from arms._validation import MAX_MODEL_BYTES
    from bandits.errors import MAX_STATE_BYTES
    from envs.vector_env import MAX_DRAW_BYTES

    assert MAX_STATE_BYTES == MAX_MODEL_BYTES == MAX_DRAW_BYTES == 2 * 2**30


def test_the_gate_s_and_the_slate_data_s_seeds_follow_the_one_seed_rule() -> None:
    """Review: a seed beyond what a TOML integer holds was refused by simulate's --seed but
    taken as the slate environment's data_seed and the gate's random_state."""
    from arms._validation import MAX_SEED
    from arms.gate import evaluate_gate
    from envs.slate import build_synthetic_slate

    with pytest.raises(ValueError, match=rf"data_seed must be an integer from 0 to {MAX_SEED:,}"):
        build_synthetic_slate(data_seed=MAX_SEED + 1)
    frame = pd.DataFrame({"user_id": [1, 2], "item_id": [1, 2], "rating": [5.0, 5.0],
                          "timestamp": [0, 1]})
    with pytest.raises(ValueError, match=rf"random_state must be an integer from 0 to "
                       rf"{MAX_SEED:,}, got {MAX_SEED + 1}"):
        evaluate_gate(frame, ["popularity"], ["popularity"], cut_time=1,
                      random_state=MAX_SEED + 1)
