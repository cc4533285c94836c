"""Team-draft multileaving, click credit and the policy that picks which arms to multileave."""

from __future__ import annotations

import itertools
import json
import math

import numpy as np
import pytest

import bandits as bd
from bandits.multileave import (
    MultileaveThompsonSampling,
    credit,
    draft_order,
    fill_slate,
    order_probability,
    team_draft,
)
from bandits.thompson import beta_probability_of_max


def overlapping_lists(rng, runs, m, length, pool):
    """``m`` lists per run, each ``length`` random items of ``pool``: heavy overlap."""
    keys = rng.random((runs, m, pool))
    return np.argsort(keys, axis=2)[:, :, :length].astype(np.int64)


def reference_team_draft(lists, order):
    """The textbook fill: each pick takes the ranker's best item not already in the slate."""
    slate = []
    for ranker in order:
        slate.append(next(item for item in lists[ranker] if item not in slate))
    return slate


# ---------------------------------------------------------------------- team draft
@pytest.mark.parametrize(("m", "k"), [(2, 10), (3, 10), (4, 6), (3, 3)])
def test_team_draft_properties(m, k):
    rng = np.random.default_rng(0)
    runs = 300
    lists = overlapping_lists(rng, runs, m, length=k, pool=k + 3)
    items, teams = team_draft(lists, k, rng)
    assert items.shape == teams.shape == (runs, k)
    # every position is filled and credited to exactly one of the m rankers
    assert (items >= 0).all() and ((teams >= 0) & (teams < m)).all()
    # no duplicates in a slate
    assert all(len(set(row)) == k for row in items.tolist())
    # balanced teams: k // m or k // m + 1 positions each
    sizes = np.stack([(teams == i).sum(axis=1) for i in range(m)], axis=1)
    assert sizes.min() >= k // m and sizes.max() <= -(-k // m)
    assert (sizes.max(axis=1) - sizes.min(axis=1) <= 1).all()
    for r in range(runs):
        # each ranker's contributions come in its own list's order, and each pick is the
        # ranker's best item not yet shown
        for i in range(m):
            own = items[r, teams[r] == i].tolist()
            ranks = [lists[r, i].tolist().index(x) for x in own]
            assert ranks == sorted(ranks)
        assert items[r].tolist() == reference_team_draft(lists[r].tolist(), teams[r].tolist())


def test_one_ranker_gives_its_own_list():
    rng = np.random.default_rng(1)
    lists = overlapping_lists(rng, 20, 1, length=12, pool=30)
    items, teams = team_draft(lists, 8, rng)
    assert np.array_equal(items, lists[:, 0, :8]) and (teams == 0).all()


def test_a_ranker_with_nothing_left_leaves_its_position_empty():
    lists = np.array([[[5, 6, -1], [5, 6, 7]]])
    items, ranks = fill_slate(lists, np.array([[1, 1, 0]]))
    assert items.tolist() == [[5, 6, -1]] and ranks.tolist() == [[0, 1, -1]]


def test_one_run_is_filled_as_every_run_of_a_batch():
    # fill_slate walks a single run (the service's request) in Python: the same slates as the
    # batched numpy steps, padding and exhausted rankers included
    rng = np.random.default_rng(4)
    lists = overlapping_lists(rng, 40, 3, length=6, pool=9)
    lists[rng.random(lists.shape) < 0.1] = -1
    order = draft_order(40, 3, 8, rng)
    items, ranks = fill_slate(lists, order)
    assert (items == -1).any()  # some ranker ran out: the empty position is covered
    for r in range(40):
        one = fill_slate(lists[r:r + 1], order[r:r + 1])
        assert one[0].tolist() == items[r:r + 1].tolist()
        assert one[1].tolist() == ranks[r:r + 1].tolist()


def test_every_ranker_has_the_same_share_of_every_position():
    # fairness: under the random draft order each of m rankers fills position j with
    # probability 1/m (a fixed order would give 1 or 0)
    m, k, runs = 3, 7, 600
    order = draft_order(runs, m, k, np.random.default_rng(2))
    share = np.stack([(order == i).mean(axis=0) for i in range(m)])  # (m, k)
    sigma = math.sqrt((1 / m) * (1 - 1 / m) / runs)
    assert np.abs(share - 1 / m).max() < 4.5 * sigma


def test_order_probability_is_exact_and_matches_frequencies():
    assert order_probability(2, 10) == 1 / 2**5
    assert order_probability(3, 10) == pytest.approx(1 / (6**3 * 3))
    assert order_probability(1, 5) == 1.0
    # m = 2, k = 3: 2 * 2 = 4 orders, each with probability 1/4
    runs = 2000
    order = draft_order(runs, 2, 3, np.random.default_rng(3))
    counts = {}
    for row in map(tuple, order.tolist()):
        counts[row] = counts.get(row, 0) + 1
    assert len(counts) == 4
    p = order_probability(2, 3)
    sigma = math.sqrt(p * (1 - p) / runs)
    assert all(abs(c / runs - p) < 4.5 * sigma for c in counts.values())


def test_draft_order_per_run_generators_reproduce_single_runs():
    rngs = bd.spawn_generators(5, 4)
    batched = draft_order(4, 3, 8, rngs)
    singles = [draft_order(1, 3, 8, g)[0] for g in bd.spawn_generators(5, 4)]
    assert np.array_equal(batched, np.stack(singles))


# ---------------------------------------------------------------------- credit
def test_credit_on_hand_made_click_patterns():
    teams = np.array([[0, 1, 0, 2, -1],
                      [2, 2, 1, 0, 1]])
    clicks = np.array([[1, 1, 0, 0, 1],   # a click on an empty position credits nobody
                       [0, 1, 1, 0, 1]])
    clicked, shown = credit(teams, clicks, 4)
    assert clicked.tolist() == [[1, 1, 0, 0], [0, 2, 1, 0]]
    assert shown.tolist() == [[2, 1, 1, 0], [1, 2, 2, 0]]


def test_credit_rejects_bad_input_naming_it():
    with pytest.raises(TypeError, match="teams"):
        credit(np.array([[0.0, 1.0]]), np.array([[1, 0]]), 2)
    with pytest.raises(ValueError, match="clicks has shape"):
        credit(np.array([[0, 1]]), np.array([[1, 0, 0]]), 2)
    with pytest.raises(ValueError, match=r"teams must hold arm positions in \[0, 2\)"):
        credit(np.array([[0, 2]]), np.array([[1, 0]]), 2)
    with pytest.raises(ValueError, match=r"clicks=2\.0"):
        credit(np.array([[0, 1]]), np.array([[2, 0]]), 2)


# ---------------------------------------------------------------------- the policy
def test_multileaving_informs_every_chosen_arm_per_impression():
    K, m, k = 4, 2, 10
    policy = MultileaveThompsonSampling(K, m=m, slate_size=k)
    state = policy.init_batch(50)
    choice = policy.select_batch(state, np.random.default_rng(4))
    policy.update_batch(state, choice.teams, np.zeros((50, k)))
    shown = state.successes + state.failures
    rows = np.arange(50)[:, None]
    # each of the m chosen arms gets k / m observations from this one impression ...
    assert (shown[rows, choice.arms] == k // m).all()
    # ... and the others none; per-request Thompson Sampling learns one reward of one arm
    assert shown.sum(axis=1).tolist() == [k] * 50
    ts = bd.ThompsonSampling(K)
    ts_state = ts.init_batch(50)
    ts.update_batch(ts_state, ts.select_batch(ts_state, np.random.default_rng(4)), np.zeros(50))
    assert ((ts_state.stats["successes"] + ts_state.stats["failures"]) > 0).sum(axis=1).max() == 1


def test_set_probabilities_sum_to_one_and_match_frequencies():
    policy = MultileaveThompsonSampling(["a", "b", "c", "d"], m=2, slate_size=4)
    policy.update([0, 0, 1, 1], [1, 1, 1, 0])
    policy.update([2, 3, 2, 3], [0, 1, 0, 0])
    policy.update([0, 2, 0, 2], [1, 0, 0, 0])
    probs = policy.set_probabilities()
    assert probs.sum() == pytest.approx(1.0)
    assert policy.inclusion_probabilities().sum() == pytest.approx(2.0)
    assert policy.sets.tolist() == [list(s) for s in itertools.combinations(range(4), 2)]
    runs = 3000
    state = policy.init_batch(runs)
    state.successes[:] = policy.state_.successes
    state.failures[:] = policy.state_.failures
    chosen = policy.select_batch(state, np.random.default_rng(6)).arms
    index = {tuple(s): i for i, s in enumerate(policy.sets.tolist())}
    freq = np.bincount([index[tuple(s)] for s in chosen.tolist()], minlength=6) / runs
    sigma = np.sqrt(probs * (1 - probs) / runs)
    assert np.all(np.abs(freq - probs) < 4.5 * sigma + 1e-3), (freq, probs)


def test_one_arm_per_slate_has_thompson_samplings_propensities():
    policy = MultileaveThompsonSampling(3, m=1, slate_size=5, propensity_grid=2048)
    policy.update([0, 0, 1, 2, 2], [1, 1, 0, 0, 1])
    a, b = policy.posterior_batch(policy.state_)
    expected, _ = beta_probability_of_max(a, b, 2048)
    assert np.allclose(policy.set_probabilities(), expected[0], atol=1e-6)


def test_select_returns_what_a_log_row_needs():
    policy = MultileaveThompsonSampling(["svd", "ease", "pop"], m=2, slate_size=5, random_state=0)
    decision = policy.select()
    assert sorted(set(decision["teams"])) == decision["arms"]
    assert decision["order_probability"] == order_probability(2, 5)
    index = policy.sets.tolist().index(decision["arms"])
    assert decision["set_probability"] == pytest.approx(policy.set_probabilities()[index])
    assert sum(decision["inclusion_probabilities"]) == pytest.approx(2.0)
    rankings = np.array([[1, 2, 3, 4, 5], [2, 1, 6, 7, 8], [9, 1, 2, 10, 11]])
    slate = policy.multileave(rankings, decision["teams"])
    assert len(set(slate)) == 5
    assert slate == reference_team_draft(rankings.tolist(), decision["teams"])


def test_state_is_json_and_rebuilds_the_same_policy_and_stream():
    policy = MultileaveThompsonSampling(4, m=3, slate_size=6, prior_alpha=[1, 2, 1, 1],
                                        random_state=7)
    for _ in range(5):
        decision = policy.select()
        policy.update(decision["teams"], [1, 0, 0, 1, 0, 0])
    state = json.loads(json.dumps(policy.state_dict()))
    rebuilt = MultileaveThompsonSampling.from_state_dict(state)
    assert rebuilt.posterior() == policy.posterior()
    assert rebuilt.select() == policy.select()
    with pytest.raises(ValueError, match="MultileaveThompsonSampling"):
        MultileaveThompsonSampling.from_state_dict(bd.ThompsonSampling(2).state_dict())


def test_state_is_the_fold_of_the_logged_decisions():
    # what a log row keeps (the arm of every position and the clicks) rebuilds the state
    policy = MultileaveThompsonSampling(4, m=2, slate_size=6, random_state=3)
    clicks = np.random.default_rng(0).integers(0, 2, (20, 6))
    log = []
    for row in clicks:
        decision = policy.select()
        policy.update(decision["teams"], row)
        log.append(json.dumps({"teams": decision["teams"], "clicks": row.tolist(),
                               "set_probability": decision["set_probability"]}))
    rebuilt = MultileaveThompsonSampling(4, m=2, slate_size=6)
    for line in log:
        entry = json.loads(line)
        rebuilt.update(entry["teams"], entry["clicks"])
    assert rebuilt.posterior() == policy.posterior()
    assert rebuilt.state_dict()["stats"] == policy.state_dict()["stats"]


def test_batched_runs_equal_single_policies_with_the_same_generators():
    runs = 3
    policy = MultileaveThompsonSampling(4, m=2, slate_size=6)
    state = policy.init_batch(runs)
    rngs = bd.spawn_generators(11, runs)
    singles = [MultileaveThompsonSampling(4, m=2, slate_size=6, random_state=g)
               for g in bd.spawn_generators(11, runs)]
    clicks = np.random.default_rng(0).integers(0, 2, (8, runs, 6))
    for step in range(8):
        choice = policy.select_batch(state, rngs)
        for r, single in enumerate(singles):
            decision = single.select()
            assert decision["teams"] == choice.teams[r].tolist()
            single.update(decision["teams"], clicks[step, r])
        policy.update_batch(state, choice.teams, clicks[step])


def test_invalid_parameters_are_named():
    with pytest.raises(ValueError, match="m=4"):
        MultileaveThompsonSampling(3, m=4)
    with pytest.raises(ValueError, match="m=3"):
        MultileaveThompsonSampling(5, m=3, slate_size=2)
    with pytest.raises(TypeError, match="m must be an int"):
        MultileaveThompsonSampling(3, m=1.5)
    with pytest.raises(ValueError, match="prior_alpha"):
        MultileaveThompsonSampling(3, prior_alpha=0.0)
    policy = MultileaveThompsonSampling(3, m=2, slate_size=4)
    with pytest.raises(ValueError, match="teams must hold arm positions"):
        policy.update([0, 1, 3, 0], [0, 0, 0, 0])
    assert policy.posterior()["arm0"]["shown"] == 0.0  # unchanged after the error
