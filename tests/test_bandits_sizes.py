"""Ceilings of the hyper-parameters that size a policy's state (window, n_features,
batch_size, arms, runs): refused before anything is allocated, naming the parameter, the value
and the ceiling (found by attack: numpy's MemoryError asking 7.28 TiB)."""

from __future__ import annotations

import numpy as np
import pytest

import bandits.base
from bandits import (
    LinTS,
    LinUCB,
    SlidingWindowThompsonSampling,
    ThompsonSampling,
    registered_policies,
)


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
                                         r"lower window, batch_size, the arms or the runs"):
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
