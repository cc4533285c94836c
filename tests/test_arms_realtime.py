"""Real-time arms: ``score_history`` without a refit, live co-occurrence and live popularity.

Synthetic data throughout: the properties are exact (equalities, closed forms, bit-identical
state), so no quality claim needs MovieLens here.
"""

from __future__ import annotations

import copy
import json
from collections.abc import Iterator

import numpy as np
import pandas as pd
import pytest
import scipy.sparse as sp

from arms import CooccurrenceRecommender, PopularityRecommender
from arms.autoencoder import _with_feedback
from arms.cooccurrence import FIXED_POINT_BITS, FRAME_HALF_LIVES, decayed_to
from arms.data import make_synthetic
from arms.data.dataset import Dataset
from arms.registry import make_arm

#: Arm name, small hyper-parameters (SVD: a few epochs, a few factors: seconds, not minutes).
ARMS = {
    # The registry's autoencoder is DLAE, whose dropout adds p / (1 - p) times an item's count
    # (about 20 here) to its ridge: a weak total ridge, as the EASE entry's l2 50, lets one
    # like move ranks on data this small (the neighbour test: 79 % of users rise; 55 % at the
    # default dropout 0.5, at l2 20; EASE at l2 50: 75 %).
    "autoencoder": ("autoencoder", {"l2": 20.0, "corruption": 0.25}),
    "ease": ("autoencoder", {"variant": "ease", "l2": 50.0}),
    "sequential": ("sequential", {}),
    "svd": ("svd", {"n_factors": 8, "n_epochs": 5}),
    "popularity": ("popularity", {}),
    "live_popularity": ("popularity", {"half_life": 86_400.0}),
    "cooccurrence": ("cooccurrence", {}),
}
#: Arms whose score_history must equal score() after partial_fit of the same events on a copy.
FOLDED = ("autoencoder", "ease", "sequential", "svd")


@pytest.fixture(scope="module")
def data():
    return make_synthetic(60, 90, 1800, random_state=4)


@pytest.fixture(scope="module")
def fitted(data):
    return {key: make_arm(name, **params).fit(data) for key, (name, params) in ARMS.items()}


def _state(model) -> dict[str, np.ndarray]:
    state = {k: np.array(v, copy=True) for k, v in model._get_state().items()}
    state["seen_indices"] = model.seen_.indices.copy()
    state["seen_indptr"] = model.seen_.indptr.copy()
    state["known_users"] = model.known_users_.copy()
    return state


def _assert_same_state(a: dict[str, np.ndarray], b: dict[str, np.ndarray]) -> None:
    assert a.keys() == b.keys()
    for key in a:
        assert a[key].dtype == b[key].dtype, key
        assert np.array_equal(a[key], b[key]), key


def _rank(scores: np.ndarray, item: int) -> int:
    """Place of ``item`` when ``scores`` are sorted best first (0: the best)."""
    return int((scores > scores[item]).sum())


# ------------------------------------------------------------------------ score_history
@pytest.mark.parametrize("key", sorted(ARMS))
def test_no_events_is_score_for_a_known_user_and_cold_scores_for_none(fitted, key):
    model = fitted[key]
    users = np.flatnonzero(model.known_users_)[:3]
    for user in users:
        assert np.array_equal(model.score_history(int(user), [], []), model.score(users)[
            list(users).index(user)])
    cold = model.score_history(None, [], [])
    if key in ("live_popularity", "cooccurrence"):  # live arms: the live counts, decayed
        assert np.array_equal(cold, model._cold_scores())
        assert np.argmax(cold) == np.argmax(model.counts_)
    else:
        assert np.array_equal(cold, model.popularity_)
    assert cold.shape == (model.n_items_,) and cold.dtype == np.float64


@pytest.mark.parametrize("key", FOLDED)
def test_score_history_equals_partial_fit_on_a_copy(fitted, key):
    model = fitted[key]
    before = _state(model)
    user = 7
    items = np.array([3, 11, 40, 3, 52])  # item 3 twice: the later rating wins in both paths
    ratings = np.array([5.0, 1.0, 4.0, 2.0, 3.0])
    live = model.score_history(user, items, ratings)
    _assert_same_state(before, _state(model))  # the fitted model is untouched
    refit_free = copy.deepcopy(model).partial_fit(pd.DataFrame({
        "user_id": model.user_ids_[np.full(len(items), user)],
        "item_id": model.item_ids_[items], "rating": ratings}))
    expected = refit_free.score(np.array([user]))[0]
    if key == "svd":  # one linear solve each, the same numbers; the sum's order may differ
        np.testing.assert_allclose(live, expected, rtol=1e-12, atol=1e-12)
    elif key in ("autoencoder", "ease", "sequential"):  # float32 rows summed densely
        assert live.dtype == expected.dtype
        np.testing.assert_allclose(live, expected, rtol=1e-5,
                                   atol=1e-6 * np.abs(expected).max())
    else:
        assert np.array_equal(live, expected)


def random_histories(model, *, seed: int, trials: int, longest: int
                     ) -> Iterator[tuple[int | None, np.ndarray, np.ndarray]]:
    """``trials`` seeded histories ``(user, items, ratings)`` for ``model``: 1 to ``longest``
    events with every rating and repeated items, a newcomer (None) every fourth.
    """
    rng = np.random.default_rng(seed)
    for trial in range(trials):
        n = int(rng.integers(1, longest + 1))
        items = rng.integers(0, model.n_items_, n)
        ratings = rng.choice([1.0, 2.0, 3.0, 4.0, 5.0], n)
        yield (None if trial % 4 == 0 else int(rng.integers(0, model.n_users_))), items, ratings


@pytest.mark.parametrize("params", [{}, {"max_items": 40}, {"dtype": "float64"},
                                    {"variant": "ease"}, {"variant": "edlae"}])
def test_linear_autoencoder_score_history_equals_partial_fit_over_random_histories(data,
                                                                                params):
    # The linear autoencoders (DLAE, EASE, EDLAE) score a history on a dense row (the rows of
    # B of its inputs); partial_fit writes the events into the sparse inputs. Over users known
    # and unknown, repeated items and every rating, with all items kept or only the most
    # rated (the rest -inf).
    model = make_arm("autoencoder", **params).fit(data)
    for user, items, ratings in random_histories(model, seed=8, trials=12, longest=11):
        n = len(items)
        live = model.score_history(user, items, ratings)
        copy_ = copy.deepcopy(model)
        if user is None:  # a newcomer: an empty row with the events written in, times B
            empty = sp.csr_matrix((1, model.n_items_), dtype=model.inputs_.dtype)
            expected = model._score_rows(_with_feedback(empty, np.zeros(n, dtype=np.int64),
                                                        items, ratings))[0]
        else:
            copy_.partial_fit(pd.DataFrame({"user_id": model.user_ids_[np.full(n, user)],
                                            "item_id": model.item_ids_[items],
                                            "rating": ratings}))
            expected = copy_.score(np.array([user]))[0]
        np.testing.assert_array_equal(np.isfinite(live), np.isfinite(expected))
        finite = np.isfinite(expected)
        np.testing.assert_allclose(live[finite], expected[finite], rtol=1e-5,
                                   atol=1e-6 * np.abs(expected[finite]).max())


@pytest.mark.parametrize("params", [{}, {"n_recent": 2, "dislike_weight": 0.5},
                                    {"popularity_weight": 0.3, "recency": 0.5}])
def test_sequential_score_history_equals_the_sparse_fold_over_random_histories(data, params):
    # The dense fold of one user's events (ages, dislikes) against the sparse fold that
    # partial_fit runs, over known users and newcomers, repeats, likes and dislikes.
    model = make_arm("sequential", **params).fit(data)
    for user, items, ratings in random_histories(model, seed=9, trials=16, longest=9):
        n = len(items)
        if user is None:
            ages = sp.csr_matrix((1, model.n_items_), dtype=np.int32)
            dislikes = sp.csr_matrix((1, model.n_items_), dtype=np.float32)
        else:
            ages, dislikes = model.context_ages_[[user]], model.dislikes_[[user]]
        folded = model._fold_feedback(ages, dislikes, np.zeros(n, dtype=np.int64), items,
                                      ratings)
        expected = model._score_rows(*folded)[0]
        dense_ages, dense_dislikes = model._history_row(user, items, ratings)
        np.testing.assert_array_equal(dense_ages, folded[0].toarray()[0])
        np.testing.assert_array_equal(dense_dislikes, folded[1].toarray()[0] > 0)
        np.testing.assert_allclose(model.score_history(user, items, ratings), expected,
                                   rtol=1e-5, atol=1e-6 * np.abs(expected).max())


@pytest.mark.parametrize("key", ["autoencoder", "ease", "sequential", "cooccurrence"])
def test_a_liked_items_neighbours_rise(fitted, key):
    model = fitted[key]
    moved = []
    for user in np.flatnonzero(model.known_users_)[:20]:
        seen = model.seen_[user].indices
        unseen = np.setdiff1d(np.arange(model.n_items_), seen)
        liked = int(unseen[np.argmax(model.popularity_[unseen])])
        # The liked item's nearest neighbour by the arm itself: the top of a newcomer's
        # scores after that one like, among the items this user has not seen.
        alone = model.score_history(None, [liked], [5.0])
        alone[np.append(seen, liked)] = -np.inf
        neighbour = int(np.argmax(alone))
        before = model.score_history(int(user), [], [])[unseen]
        after = model.score_history(int(user), [liked], [5.0])[unseen]
        place = int(np.searchsorted(unseen, neighbour))
        moved.append((_rank(before, place), _rank(after, place)))
    before_ranks, after_ranks = np.array(moved).T  # places among the user's unseen items
    assert np.all(after_ranks <= before_ranks), moved
    below_top = before_ranks > 0
    assert np.mean(after_ranks[below_top] < before_ranks[below_top]) >= 0.75, moved


def test_svd_a_liked_items_factor_neighbour_rises_most(fitted):
    model = fitted["svd"]
    factors = model.item_factors_ / np.linalg.norm(model.item_factors_, axis=1, keepdims=True)
    outcomes = []
    for user in np.flatnonzero(model.known_users_)[:20]:
        unseen = np.setdiff1d(np.arange(model.n_items_), model.seen_[user].indices)
        liked = int(unseen[np.argmin(model.score_history(int(user), [], [])[unseen])])
        similarity = factors[unseen] @ factors[liked]
        similarity[unseen == liked] = -np.inf
        neighbour = int(unseen[np.argmax(similarity)])
        rise = model.score_history(int(user), [liked], [5.0]) - model.score_history(
            int(user), [], [])
        outcomes.append(rise[neighbour] > np.median(rise[unseen]) and rise[neighbour] > 0)
    assert np.mean(outcomes) >= 0.9


def test_a_newcomers_events_alone_drive_the_scores(fitted):
    model = fitted["autoencoder"]
    item = 5
    expected = np.asarray(model.weights_[item], dtype=np.float64)  # row e_item @ B, weight 1
    np.testing.assert_allclose(model.score_history(None, [item], [5.0]), expected, rtol=1e-6)
    # a user row without training ratings counts as None
    assert model.score_history(None, [item], [1.0])[model.weights_[item].argmax()] < 0


def test_score_history_validates_its_input(fitted):
    model = fitted["sequential"]
    with pytest.raises(TypeError, match=r"user_index must be an int or None, got '3' \(str\)"):
        model.score_history("3", [], [])
    with pytest.raises(ValueError, match=r"user_index must be within \[0, 60\), got 60"):
        model.score_history(60, [], [])
    with pytest.raises(ValueError, match=r"item_indices must be within \[0, 90\), got 90"):
        model.score_history(1, [90], [5.0])
    with pytest.raises(TypeError, match="item_indices must be a 1-d integer array"):
        model.score_history(1, [1.5], [5.0])
    with pytest.raises(ValueError, match=r"ratings must be within 1-5 .* got 6\.0"):
        model.score_history(1, [1], [6.0])
    with pytest.raises(ValueError, match="item_indices and ratings must have one length"):
        model.score_history(1, [1, 2], [5.0, 4.0, 3.0])
    with pytest.raises(ValueError, match=r"k must be an integer within \[1, 90\], got 0"):
        model.recommend_history(1, [1], [5.0], k=0)


def test_recommend_history_leaves_out_seen_and_event_items(fitted):
    model = fitted["autoencoder"]
    user = 2
    seen = set(model.seen_[user].indices.tolist())
    items, scores = model.recommend_history(user, [1, 2, 4], [5.0, 5.0, 1.0], k=10)
    assert not (set(items.tolist()) & (seen | {1, 2, 4}))
    assert np.all(np.diff(scores) <= 0) and len(items) == 10
    full = model.score_history(user, [1, 2, 4], [5.0, 5.0, 1.0])
    np.testing.assert_array_equal(scores, full[items])


# ------------------------------------------------------------------------ live arms
def _stream(n_events: int, n_users: int, n_items: int, span: int, seed: int):
    rng = np.random.default_rng(seed)
    users = rng.integers(1, n_users + 1, n_events) * 7  # raw ids, many unknown to training
    items = rng.integers(0, n_items, n_events)
    weights = rng.choice([1.0, 3.0, 4.0, 5.0], n_events)
    times = np.sort(rng.integers(1_000_000, 1_000_000 + span, n_events))
    return users, items, weights, times


def _empty_live(data, **params) -> CooccurrenceRecommender:
    return CooccurrenceRecommender(from_train=False, **params).fit(data)


def test_cooccurrence_incremental_fold_is_bit_identical_to_one_batch(data):
    # half-life 60 s over 40 min: the stream crosses 5 frames of 8 half-lives, so the shifts
    # between frames are exercised; one event is late (an earlier frame than the one before).
    users, items, weights, times = _stream(400, 25, 90, 2_400, seed=1)
    times[200] = times[150]
    params = {"half_life": 60.0, "window": 4}
    batch = _empty_live(data, **params).observe(users, items, weights, times)
    one_by_one = _empty_live(data, **params)
    for i in range(len(users)):
        one_by_one.observe(users[i : i + 1], items[i : i + 1], weights[i : i + 1], times[i : i + 1])
    chunks = _empty_live(data, **params)
    cuts = np.sort(np.random.default_rng(2).choice(np.arange(1, 400), 12, replace=False))
    for part in np.split(np.arange(400), cuts):
        chunks.observe(users[part], items[part], weights[part], times[part])
    assert batch.frame_ == int(times.max() // (FRAME_HALF_LIVES * 60.0))
    assert batch.frame_ > 3
    _assert_same_state(_state(batch), _state(one_by_one))
    _assert_same_state(_state(batch), _state(chunks))
    assert batch.pairs_.nnz > 100
    assert (batch.pairs_ != batch.pairs_.T).nnz == 0  # symmetric
    # live popularity: the same fixed point, the same guarantee
    live = [PopularityRecommender(half_life=60.0).fit(data) for _ in range(2)]
    live[0].observe(users, items, weights, times)
    for i in range(len(users)):
        live[1].observe(users[i : i + 1], items[i : i + 1], weights[i : i + 1], times[i : i + 1])
    _assert_same_state(_state(live[0]), _state(live[1]))


def test_a_window_item_older_than_max_gap_pairs_with_no_new_event(data, tmp_path):
    """Found in review: a user's window never expired, so an event months after the last one
    paired with it at full weight (the service's retention, and a purge, did not stop it).
    With ``max_gap`` an older window item forms no pair, whatever the batching; a state saved
    before the windows kept times loads with them at the clock, pairing as it did."""
    day = 86_400
    t0 = 1_700_000_000
    gap = 90.0 * day
    stale = _empty_live(data, max_gap=gap).observe([7, 7], [10, 20], [5.0, 5.0],
                                                   [t0, t0 + 100 * day])
    assert stale.pairs_[10, 20] == stale.pairs_[20, 10] == 0
    assert stale.window_items_[0, -2:].tolist() == [10, 20]
    assert stale.window_times_[0, -2:].tolist() == [t0, t0 + 100 * day]
    # Item 10 keeps only its 100-day-old count (the popularity term, a week's half-life).
    assert stale.score_history(None, [20], [5.0])[10] < 1e-5
    recent = _empty_live(data, max_gap=gap).observe([7, 7], [10, 20], [5.0, 5.0],
                                                    [t0, t0 + 80 * day])
    assert recent.pairs_[10, 20] > 0
    unlimited = _empty_live(data).observe([7, 7], [10, 20], [5.0, 5.0], [t0, t0 + 100 * day])
    assert unlimited.pairs_[10, 20] > 0  # no limit: the arm as it was
    assert unlimited.score_history(None, [20], [5.0])[10] >= 1.0
    # One batch, or event by event: the same state.
    users, items, weights, times = _stream(300, 20, 90, 200 * day, seed=8)
    batch = _empty_live(data, window=4, max_gap=gap).observe(users, items, weights, times)
    one_by_one = _empty_live(data, window=4, max_gap=gap)
    for i in range(len(users)):
        one_by_one.observe(users[i:i + 1], items[i:i + 1], weights[i:i + 1], times[i:i + 1])
    _assert_same_state(_state(batch), _state(one_by_one))
    assert 0 < batch.pairs_.nnz < _empty_live(data, window=4).observe(
        users, items, weights, times).pairs_.nnz
    with pytest.raises(ValueError, match=r"max_gap must be > 0\.0, got 0\.0"):
        _empty_live(data, max_gap=0.0)
    # Saved and loaded, it goes on with its max_gap; a state saved before the windows kept
    # their times loads them at the clock.
    path = recent.save(tmp_path / "arm")
    assert CooccurrenceRecommender.load(path).max_gap == gap
    with np.load(path, allow_pickle=False) as saved:
        arrays = {k: saved[k] for k in saved.files if not k.endswith("window_times")}
    assert len(arrays) < len(np.load(path).files)
    np.savez(path, **arrays)
    old = CooccurrenceRecommender.load(path)
    assert (old.window_times_[old.window_items_ >= 0] == recent.clock_).all()


def test_buffered_cooccurrences_score_as_merged_ones(data):
    users, items, weights, times = _stream(300, 20, 90, 5_000, seed=5)
    model = CooccurrenceRecommender(half_life=500.0).fit(data)  # C holds the training pairs
    model.observe(users, items, weights, times + model.clock_)
    assert model._pending  # below the merge threshold: the additions wait in the buffer
    buffered = [model.score_history(None, [i], [5.0]) for i in (3, 17, 40)]
    merged_matrix = model.pairs_  # reading C merges the buffer
    assert not model._pending and merged_matrix.nnz > 0
    for i, scores in zip((3, 17, 40), buffered, strict=True):
        np.testing.assert_array_equal(model.score_history(None, [i], [5.0]), scores)


@pytest.mark.parametrize("buffered", [False, True])
def test_cooccurrence_score_history_equals_the_sparse_product(data, buffered):
    # One user's history scored on dense rows against _score_contexts' sparse product (which
    # score() runs for many users), with the stream's additions buffered or merged into C.
    model = CooccurrenceRecommender(half_life=500.0, window=6).fit(data)
    users, items, weights, times = _stream(300, 20, 90, 5_000, seed=6)
    model.observe(users, items, weights, times + model.clock_)
    if not buffered:
        assert model.pairs_.nnz > 0  # reading C merges the buffer
    assert bool(model._pending) == buffered
    rng = np.random.default_rng(10)
    for trial in range(12):
        n = int(rng.integers(1, 9))
        history = rng.integers(0, model.n_items_, n)
        ratings = rng.choice([1.0, 2.0, 3.0, 4.0, 5.0], n)
        user = None if trial % 3 == 0 else int(rng.integers(0, model.n_users_))
        width = int(model.window)
        if user is None:
            tail, tail_ratings = np.full(width, -1), np.full(width, -1.0)
        else:
            tail, tail_ratings = model.tail_[user], model.tail_ratings_[user]
        context = np.concatenate([tail, history])[-width:]
        values = np.concatenate([tail_ratings, ratings])[-width:]
        expected = model._score_contexts(context[None, :], values[None, :])[0]
        np.testing.assert_allclose(model.score_history(user, history, ratings), expected,
                                   rtol=1e-12, atol=1e-12)
    assert bool(model._pending) == buffered  # scoring does not merge the buffer


def test_decay_matches_the_closed_form_on_a_tiny_case(data):
    h = 100.0
    t0, t1, t2 = 1_000_000, 1_000_450, 1_001_300  # t2 is a frame (800 s) later than t1
    model = _empty_live(data, half_life=h, window=2)
    model.observe([1, 1, 1], [0, 1, 2], [4.0, 1.0, 2.0], [t0, t1, t2])
    at = float(t2 + 37)
    pairs = decayed_to(model.pairs_.toarray(), model.frame_, at, h)
    expected = {  # sqrt(w_a w_b), decayed from the later event's time
        (0, 1): np.sqrt(4.0) * 2 ** -((at - t1) / h),
        (0, 2): np.sqrt(8.0) * 2 ** -((at - t2) / h),
        (1, 2): np.sqrt(2.0) * 2 ** -((at - t2) / h),
    }
    for (a, b), value in expected.items():
        np.testing.assert_allclose([pairs[a, b], pairs[b, a]], value, rtol=2.0 ** -20)
    assert np.count_nonzero(pairs) == 6
    counts = decayed_to(model.counts_, model.frame_, at, h)
    np.testing.assert_allclose(
        counts[:3], [4 * 2 ** -((at - t0) / h), 2 ** -((at - t1) / h), 2 * 2 ** -((at - t2) / h)],
        rtol=2.0 ** -20)
    assert model.counts_[2] == round(2.0 * 2 ** (FIXED_POINT_BITS + (t2 - 1_000_800) / h))
    # The training counts at their own times (retime_seed=False): gone a thousand half-lives on.
    live = PopularityRecommender(half_life=h, retime_seed=False).fit(data)
    assert live._cold_scores().max() > 0  # seeded from training
    late = live.clock_ + 100_000
    live.observe([1, 2, 3], [0, 1, 2], [4.0, 1.0, 2.0], [late + t0, late + t1, late + t2])
    np.testing.assert_allclose(
        live._cold_scores()[:3],
        [4 * 2 ** -((t2 - t0) / h), 2 ** -((t2 - t1) / h), 2.0], rtol=2.0 ** -20)


def _decayed(model) -> tuple[np.ndarray, np.ndarray]:
    """The arm's pairs (co-occurrence) or None, and counts, as float weights at its clock."""
    at, h = float(model.clock_), float(model.half_life)
    pairs = (decayed_to(model.pairs_.toarray(), model.frame_, at, h)
             if isinstance(model, CooccurrenceRecommender) else None)
    return pairs, decayed_to(model.counts_, model.frame_, at, h)


@pytest.mark.parametrize("make", [
    lambda **kw: CooccurrenceRecommender(half_life=100.0, **kw),
    lambda **kw: PopularityRecommender(half_life=100.0, **kw)], ids=["cooccurrence", "popularity"])
def test_the_seed_is_retimed_to_end_at_the_first_event(data, make):
    """Found in review: on MovieLens (ratings of 1998) the first 2026 event left nothing of a
    week's half-life seed, and the service's co-occurrence slates fell back to catalogue order.
    The first event now finds the seed as it was when training ended."""
    model = make().fit(data)
    assert model.seed_pending_
    pairs, counts = _decayed(model)
    end = model.clock_
    late = end + 1_000_000  # ten thousand half-lives after training
    user, item = 10_000, 7  # a newcomer: no window pairs its event
    model.observe([user], [item], [3.0], [late])
    assert not model.seed_pending_ and model.clock_ == late
    after_pairs, after_counts = _decayed(model)
    others = np.arange(len(counts)) != item
    np.testing.assert_allclose(after_counts[others], counts[others], rtol=2.0 ** -20)
    np.testing.assert_allclose(after_counts[item], counts[item] + 3.0, rtol=2.0 ** -20)
    if pairs is not None:
        assert pairs.max() > 0
        np.testing.assert_allclose(after_pairs, pairs, rtol=2.0 ** -20, atol=2.0 ** -30)
        # The windows moved with the seed: a training user's next event pairs with them.
        assert model.window_times_[model.window_items_ >= 0].max() == late
    # A later event decays the seed from the first event's time, as any other weight.
    model.observe([user], [item], [3.0], [late + 100])
    np.testing.assert_allclose(_decayed(model)[1][others], counts[others] / 2, rtol=2.0 ** -20)
    # retime_seed=False keeps the ratings' own times: the seed is gone.
    old = make(retime_seed=False).fit(data)
    assert not old.seed_pending_
    old.observe([user], [item], [3.0], [late])
    assert _decayed(old)[1][others].max() == 0.0


@pytest.mark.parametrize("make", [
    lambda: CooccurrenceRecommender(half_life=100.0, window=3),
    lambda: PopularityRecommender(half_life=100.0)], ids=["cooccurrence", "popularity"])
def test_a_retimed_seed_is_the_same_however_the_log_is_folded(data, make, tmp_path):
    """The re-time takes the log's first event, the same in every fold: all at once, in
    batches, and across a save and load before and after it give bit-identical state."""
    rng = np.random.default_rng(8)
    fitted = make().fit(data)
    n = 40
    users = rng.choice(fitted.user_ids_, n)
    items = rng.integers(0, fitted.n_items_, n)
    weights = rng.choice([1.0, 3.0, 5.0], n)
    times = fitted.clock_ + 50_000 + np.sort(rng.integers(0, 3_000, n))
    times[:3] = fitted.clock_ - np.array([500, 20, 900])  # late events (before training's end)
    weights[3] = 0.0  # and a dropped one where the re-time falls
    whole = copy.deepcopy(fitted).observe(users, items, weights, times)
    parts = type(fitted).load(fitted.save(tmp_path / "pending"))  # saved while pending
    assert parts.seed_pending_
    for cut in ([1, 2, 9, 30], [3, 4, 5]):
        parts = type(fitted).load(fitted.save(tmp_path / "pending"))
        for chunk in np.array_split(np.arange(n), cut):
            parts.observe(users[chunk], items[chunk], weights[chunk], times[chunk])
            if chunk[-1] < 3:  # only late events so far: the seed still waits
                assert parts.seed_pending_
            parts = type(fitted).load(parts.save(tmp_path / "after"))
        _assert_same_state(_state(whole), _state(parts))
        assert not parts.seed_pending_
    # The seed ends at the first event past training's end, not at the late ones.
    assert whole.clock_ == times[-1]


@pytest.mark.parametrize("make", [
    lambda: CooccurrenceRecommender(half_life=100.0),
    lambda: PopularityRecommender(half_life=100.0)], ids=["cooccurrence", "popularity"])
def test_a_state_not_waiting_for_a_retime_has_the_bits_it_had_before_the_retime(data, make):
    """Found in review: the state always carried ``seed_pending``, so ``rebuild-state`` of
    this code called a worker of the previous one "match NO" for the same arrays."""
    model = make().fit(data)
    assert "seed_pending" in model._get_state()
    model.observe([10_000], [7], [3.0], [model.clock_ + 10])
    assert "seed_pending" not in model._get_state()
    frozen = make()
    frozen.retime_seed = False
    assert "seed_pending" not in frozen.fit(data)._get_state()


def test_feedback_before_the_first_event_leaves_the_seed_waiting(data):
    """Found in review: the co-occurrence arm's ``partial_fit`` (feedback at the clock) went
    through the path that re-times, used the re-time up and left the seed to decay."""
    model = CooccurrenceRecommender(half_life=100.0).fit(data)
    counts = _decayed(model)[1]
    model.partial_fit(pd.DataFrame({"user_id": [model.user_ids_[0]],
                                    "item_id": [model.item_ids_[3]], "rating": [5.0]}))
    assert model.seed_pending_
    model.observe([10_000], [7], [3.0], [model.clock_ + 1_000_000])
    others = ~np.isin(np.arange(model.n_items_), [3, 7])
    np.testing.assert_allclose(_decayed(model)[1][others], counts[others], rtol=2.0 ** -20)


@pytest.mark.parametrize("cls", [CooccurrenceRecommender, PopularityRecommender])
def test_a_retime_that_overflows_changes_nothing(cls):
    """Found in review: the seed stopped waiting before the re-time raised, so the retry
    folded the event with the seed decayed to nothing (and the co-occurrence arm's counts
    had moved while its pairs had not)."""
    frame = pd.DataFrame({"user_id": [1, 1], "item_id": [10, 11], "rating": [5e6, 5e6],
                          "timestamp": [800, 800]})
    items = pd.DataFrame({"title": ["a", "b", "c"]},
                         index=pd.Index([10, 11, 12], name="item_id"))
    users = pd.DataFrame({"age": [30]}, index=pd.Index([1], name="user_id"))
    heavy = Dataset.from_frames(frame, items, users, (), rating_scale=None)
    model = cls(half_life=100.0).fit(heavy)
    before = _state(model)
    at = model.clock_ + 79_999  # just under a frame on: the seed grows ~2**8
    for _ in range(2):
        with pytest.raises(OverflowError, match="re-timed seed"):
            model.observe([5], [0], [1.0], [at])
        assert model.seed_pending_
        _assert_same_state(before, _state(model))


def test_a_state_saved_before_the_retime_existed_is_never_retimed(data, tmp_path):
    """A fold snapshot or version saved before ``retime_seed`` has already decayed its seed
    (or folded events since): it loads as it was, and its next event re-times nothing."""
    model = CooccurrenceRecommender(half_life=100.0).fit(data)
    path = model.save(tmp_path / "arm")
    with np.load(path) as saved:
        arrays = {k: saved[k] for k in saved.files if k != "state__seed_pending"}
    meta = json.loads(arrays["meta"].tobytes())
    del meta["params"]["retime_seed"]  # as an older recbandits saved it
    arrays["meta"] = np.frombuffer(json.dumps(meta).encode(), dtype=np.uint8)
    np.savez(path, **arrays)
    old = CooccurrenceRecommender.load(path)
    assert not old.seed_pending_
    # Made with its seed at the ratings' own times: said so, and a service asking for the
    # default (True) fits it again.
    assert old.retime_seed is False
    old.observe([10_000], [7], [3.0], [old.clock_ + 1_000_000])
    assert _decayed(old)[1][np.arange(old.n_items_) != 7].max() == 0.0


@pytest.mark.parametrize(("model", "loaded"), [
    (PopularityRecommender(), True), (PopularityRecommender(half_life=100.0), False),
    (CooccurrenceRecommender(from_train=False), True)], ids=["counts", "live", "unseeded"])
def test_an_arm_saved_before_the_retime_existed_says_how_it_was_made(
        data, tmp_path, model, loaded):
    """Live popularity saved before ``retime_seed`` was made without it; counting popularity
    (no half-life) and a co-occurrence arm without a seed are the same either way, so they
    keep the default and no service refits them (found in review: an unseeded co-occurrence
    arm was fitted again and published at start for nothing)."""
    path = copy.deepcopy(model).fit(data).save(tmp_path / "arm")
    with np.load(path) as saved:
        arrays = {k: saved[k] for k in saved.files if k != "state__seed_pending"}
    meta = json.loads(arrays["meta"].tobytes())
    del meta["params"]["retime_seed"]
    arrays["meta"] = np.frombuffer(json.dumps(meta).encode(), dtype=np.uint8)
    np.savez(path, **arrays)
    assert type(model).load(path).retime_seed is loaded


@pytest.mark.parametrize("cls", [CooccurrenceRecommender, PopularityRecommender])
def test_retime_seed_must_be_a_bool(data, cls):
    with pytest.raises(TypeError, match="retime_seed must be a bool, got 'yes'"):
        cls(retime_seed="yes").fit(data)


def test_window_holds_the_last_items_of_each_user(data):
    model = _empty_live(data, window=1)
    # user 1: items 0, 1, 2; user 2 interleaved: items 5, 6
    model.observe([1, 2, 1, 2, 1], [0, 5, 1, 6, 2], 1.0, [10, 11, 12, 13, 14])
    nonzero = {tuple(p) for p in np.argwhere(model.pairs_.toarray() > 0)}
    assert nonzero == {(0, 1), (1, 0), (1, 2), (2, 1), (5, 6), (6, 5)}  # no (0, 2): window 1
    assert model.window_users_.tolist() == [1, 2]
    assert model.window_items_.tolist() == [[2], [6]]
    wide = _empty_live(data, window=3)
    wide.observe([1, 2, 1, 2, 1], [0, 5, 1, 6, 2], 1.0, [10, 11, 12, 13, 14])
    assert wide.pairs_[0, 2] > 0
    assert wide.window_items_.tolist() == [[0, 1, 2], [-1, 5, 6]]


def test_cooccurrence_scores_the_companions_of_recent_items(data):
    model = _empty_live(data, half_life=3600.0)
    # Many users watch 10 then 20; item 30 is popular on its own.
    n = 40
    users = np.repeat(np.arange(1000, 1000 + n), 2)
    items = np.tile([10, 20], n)
    model.observe(users, items, 5.0, np.arange(2 * n) + 5_000)
    model.observe(np.arange(2000, 2100), np.full(100, 30), 5.0, np.arange(100) + 6_000)
    assert np.argmax(model.score_history(None, [], [])) == 30  # cold: live popularity
    scores = model.score_history(None, [10], [5.0])
    assert np.argmax(scores) == 20
    assert model.score_history(None, [10], [1.0])[20] < 0  # a dislike pushes companions down
    slate, _ = model.recommend_history(None, [10], [5.0], k=2)
    assert slate.tolist() == [20, 30]


def test_save_load_round_trip_is_bit_identical(data, tmp_path):
    users, items, weights, times = _stream(300, 20, 90, 5_000, seed=3)
    for model in (CooccurrenceRecommender(half_life=500.0).fit(data),
                  PopularityRecommender(half_life=500.0).fit(data),
                  PopularityRecommender().fit(data)):
        model.observe(users, items, weights, times)
        path = model.save(tmp_path / type(model).__name__)
        loaded = type(model).load(path)
        _assert_same_state(_state(model), _state(loaded))
        assert loaded.get_params() == model.get_params()
        # ... and it goes on identically
        model.observe(users[:50], items[:50], weights[:50], times[:50] + 10_000)
        loaded.observe(users[:50], items[:50], weights[:50], times[:50] + 10_000)
        _assert_same_state(_state(model), _state(loaded))
        np.testing.assert_array_equal(model.score_history(3, [4], [5.0]),
                                      loaded.score_history(3, [4], [5.0]))


def test_popularity_without_half_life_adds_weights_undecayed(data):
    model = PopularityRecommender().fit(data)
    before = model.counts_.copy()
    model.observe([1, 2, 3], [4, 4, 9], [2.0, 3.0, 1.0], [5, 6, 7])
    expected = before.copy()
    expected[4] += 5.0
    expected[9] += 1.0
    np.testing.assert_array_equal(model.counts_, expected)


def test_grow_adds_items_the_live_arms_can_recommend_at_once(data):
    for model in (CooccurrenceRecommender(half_life=3600.0).fit(data),
                  PopularityRecommender(half_life=3600.0).fit(data)):
        n = model.n_items_
        model.grow([10_001, 10_002])
        assert model.n_items_ == n + 2 and model.item_ids_[-2:].tolist() == [10_001, 10_002]
        assert model.seen_.shape == (model.n_users_, n + 2)
        clock = model.clock_
        model.observe(np.arange(100, 130), np.full(30, n + 1), 5.0, np.full(30, clock + 1))
        items, _ = model.recommend_history(None, [], [], k=1)
        assert items.tolist() == [n + 1]
        assert model.recommend(np.array([0]), k=1)[0].shape == (1, 1)
        with pytest.raises(ValueError, match="item_ids must be new, got 10001"):
            model.grow([10_001])
        with pytest.raises(ValueError, match="item_ids must be distinct, got 20007 twice"):
            model.grow([20_007, 20_007])
    model = _empty_live(data, half_life=3600.0)
    model.observe([1, 1, 2, 2], [3, 33, 3, 33], 5.0, [1, 2, 3, 4])
    n = model.n_items_
    model.grow([10_001])
    clock = model.clock_
    model.observe(np.repeat(np.arange(900, 910), 2), np.tile([3, n], 10), 5.0,
                  clock + np.arange(1, 21))
    assert np.argmax(model.score_history(None, [3], [5.0])) == n  # it co-occurs at once


def test_arms_that_need_a_refit_refuse_to_grow_and_observe(fitted):
    with pytest.raises(NotImplementedError, match="includes new items only at its next refit"):
        copy.deepcopy(fitted["svd"]).grow([10_001])
    with pytest.raises(NotImplementedError, match="does not learn from the stream"):
        copy.deepcopy(fitted["autoencoder"]).observe([1], [1], [1.0], [1])


def test_observe_validates_and_ignores_zero_weights(data):
    model = _empty_live(data)
    with pytest.raises(ValueError, match=r"weights must be >= 0, got -1.0"):
        model.observe([1], [2], [-1.0], [10])
    with pytest.raises(ValueError, match="must have one length, got 2, 1, 1 and 1"):
        model.observe([1, 2], [2], [1.0], [10])
    with pytest.raises(TypeError, match="timestamps must be a 1-d integer array"):
        model.observe([1], [2], [1.0], [10.5])
    with pytest.raises(ValueError, match="timestamps must be >= 0"):
        model.observe([1], [2], [1.0], [-5])
    model.observe([1, 1], [2, 3], [0.0, 0.0], [10, 11])
    assert model.pairs_.nnz == 0 and not model.counts_.any() and len(model.window_users_) == 0


def test_cooccurrence_params_are_validated(data):
    with pytest.raises(ValueError, match=r"half_life must be >= 1\.0, got 0\.0"):
        CooccurrenceRecommender(half_life=0.0).fit(data)
    # Below a second the frames overflowed: NaN cast to int64, numpy's warnings, figures
    # that meant nothing (found by attack with replay --half-life-days 1e-20).
    for tiny in (1e-20 * 86_400, 0.5):
        with pytest.raises(ValueError, match=r"half_life must be >= 1\.0"):
            CooccurrenceRecommender(half_life=tiny).fit(data)
        with pytest.raises(ValueError, match=r"half_life must be >= 1\.0"):
            PopularityRecommender(half_life=tiny).fit(data)
    CooccurrenceRecommender(half_life=1.0).fit(data)
    with pytest.raises(TypeError, match="window must be an integer"):
        CooccurrenceRecommender(window=2.5).fit(data)  # type: ignore[arg-type]
    with pytest.raises(TypeError, match="from_train must be a bool"):
        CooccurrenceRecommender(from_train=1).fit(data)  # type: ignore[arg-type]
    with pytest.raises(ValueError, match=r"half_life must be >= 1\.0"):
        PopularityRecommender(half_life=-1.0).fit(data)


def test_seeded_cooccurrence_equals_an_empty_one_fed_the_training_ratings(data):
    from arms.cooccurrence import time_order

    seeded = CooccurrenceRecommender(retime_seed=False).fit(data)
    empty = _empty_live(data)
    rows = data.ratings.iloc[time_order(data)]
    empty.observe(rows["user_id"].to_numpy(), rows["item_index"].to_numpy(),
                  rows["rating"].to_numpy(np.float64), rows["timestamp"].to_numpy())
    _assert_same_state(_state(seeded), _state(empty))


@pytest.mark.parametrize("key", list(ARMS))
def test_score_history_without_validation_gives_the_same_scores(fitted, key):
    """``validate=False`` (serving.armset's path, its arguments built by the service) skips
    the checks only: the same bits for known, unknown and row-less users, with and without
    events, likes and dislikes."""
    model = fitted[key]
    rng = np.random.default_rng(21)
    users = [None, *rng.integers(0, model.n_users_, 6).tolist()]
    for user in users:
        for n in (0, 1, 7):
            items = rng.integers(0, model.n_items_, n).astype(np.int64)
            ratings = rng.choice([1.0, 2.0, 4.0, 5.0], n)
            np.testing.assert_array_equal(
                model.score_history(user, items, ratings, validate=False),
                model.score_history(user, items, ratings))


@pytest.mark.parametrize("make", [
    lambda: CooccurrenceRecommender(half_life=100.0),
    lambda: PopularityRecommender(half_life=100.0)], ids=["cooccurrence", "popularity"])
def test_anchor_seed_makes_the_seed_as_of_a_time_and_late_events_fold_by_their_age(data, make):
    """``anchor_seed(at)`` (the service's, at its fit) re-times the waiting seed to end at
    ``at``; events then fold by their own time, an earlier one decayed by its age, in either
    order (found by attack: the first event decided the seed's age)."""
    model = make().fit(data)
    counts = _decayed(model)[1]
    at = model.clock_ + 1_000_000
    anchored = copy.deepcopy(model).anchor_seed(at)
    assert not anchored.seed_pending_ and anchored.clock_ == at
    np.testing.assert_allclose(_decayed(anchored)[1], counts, rtol=2.0 ** -20)
    late, fresh = ([10_001], [5], [4.0], [at - 300]), ([10_002], [6], [2.0], [at])
    one = copy.deepcopy(anchored).observe(*late).observe(*fresh)
    two = copy.deepcopy(anchored).observe(*fresh).observe(*late)
    np.testing.assert_array_equal(one.counts_, two.counts_)
    expected = counts.copy()
    expected[5] += 4.0 * 2 ** -3  # three half-lives old
    expected[6] += 2.0
    np.testing.assert_allclose(_decayed(one)[1], expected, rtol=2.0 ** -20)
    # A time not after the training end moves nothing; the seed waits no more either way.
    early = copy.deepcopy(model).anchor_seed(model.clock_ - 5)
    assert not early.seed_pending_ and early.clock_ == model.clock_
    _assert_same_state({k: v for k, v in _state(early).items() if k != "seed_pending"},
                       {k: v for k, v in _state(model).items() if k != "seed_pending"})


def test_anchor_seed_leaves_arms_without_a_waiting_seed_alone(fitted):
    for key in ("svd", "popularity", "sequential"):
        before = _state(fitted[key])
        assert fitted[key].anchor_seed(2_000_000_000) is fitted[key]
        _assert_same_state(before, _state(fitted[key]))
