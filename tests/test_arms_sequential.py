"""SequentialRecommender: transitions, context, feedback, persistence and next-item quality."""

from __future__ import annotations

import itertools

import numpy as np
import pandas as pd
import pytest

from arms import PopularityRecommender, Recommender, SequentialRecommender
from arms.data import Dataset, make_synthetic, temporal_split
from arms.errors import NotFittedError
from arms.metrics import hit_rate_at_k


# ---------------------------------------------------------------------- helpers
def tiny_dataset(sequences: dict[int, list[int]], n_items: int = 6) -> Dataset:
    """One rating per (user, item) in the given time order, one second apart."""
    rows = [
        (user, item, 4.0, 1_000 + t)
        for user, items in sequences.items()
        for t, item in enumerate(items)
    ]
    ratings = pd.DataFrame(rows, columns=["user_id", "item_id", "rating", "timestamp"])
    items = pd.DataFrame({"title": [f"item {i}" for i in range(n_items)]},
                         index=pd.Index(range(n_items), name="item_id"))  # fmt: skip
    users = pd.DataFrame({"age": [30] * len(sequences)},
                         index=pd.Index(sorted(sequences), name="user_id"))  # fmt: skip
    return Dataset.from_frames(ratings, items, users, (), name="tiny")


def feedback(user_ids, item_ids, ratings) -> pd.DataFrame:
    return pd.DataFrame({"user_id": user_ids, "item_id": item_ids, "rating": ratings})


def leave_last_out_hr(model: Recommender, train: Dataset, test: Dataset, k: int = 10) -> float:
    model.fit(train)
    items, _ = model.recommend(np.arange(train.n_users), k)
    return hit_rate_at_k(items, test.interaction_matrix(binary=True), k)


def tuned_hr(model_class: type[Recommender], train: Dataset, test: Dataset) -> tuple[float, dict]:
    """Choose the grid point on the second-to-last item, refit on train, score the last item."""
    fit_part, validation = temporal_split(train, n_last=1)
    grid = model_class.tuning_grid
    points = [dict(zip(grid, values, strict=True)) for values in itertools.product(*grid.values())]
    scores = [leave_last_out_hr(model_class(**p), fit_part, validation) for p in points]
    best = points[int(np.argmax(scores))]
    return leave_last_out_hr(model_class(**best), train, test), best


@pytest.fixture(scope="module")
def synthetic() -> Dataset:
    return make_synthetic(n_users=200, n_items=400, n_ratings=8_000, random_state=7)


@pytest.fixture(scope="module")
def fitted(synthetic: Dataset) -> SequentialRecommender:
    return SequentialRecommender(n_recent=5).fit(synthetic)


# ---------------------------------------------------------------------- transitions
def test_transitions_match_hand_computed_counts():
    # user 0: 0 -> 1 -> 2; user 1: 0 -> 1.  Window 2, decay 0.5, no backward pairs, no damping.
    data = tiny_dataset({10: [0, 1, 2], 11: [0, 1]}, n_items=4)
    model = SequentialRecommender(
        window=2, decay=0.5, backward_weight=0.0, damping=0.0, max_successors=None
    ).fit(data)
    counts = np.zeros((4, 4))
    counts[0, 1] = 2.0  # both users
    counts[0, 2] = 0.5  # two places away
    counts[1, 2] = 1.0
    expected = counts / np.maximum(counts.sum(axis=1, keepdims=True), 1e-300)
    np.testing.assert_allclose(model.transitions_.toarray(), expected, rtol=1e-6)


def test_backward_pairs_and_damping():
    data = tiny_dataset({10: [0, 1], 11: [2, 1], 12: [3, 1]}, n_items=4)
    model = SequentialRecommender(window=1, backward_weight=0.5, damping=1.0,
                                  max_successors=None).fit(data)  # fmt: skip
    dense = model.transitions_.toarray()
    # Item 1 was followed by nothing, so its row holds only the three backward pairs, each
    # damped by its target's popularity (1); items 0, 2, 3 each have one successor, item 1,
    # whose popularity 3 divides the weight.
    np.testing.assert_allclose(dense[1], [1 / 3, 0, 1 / 3, 1 / 3], rtol=1e-6)
    np.testing.assert_allclose(dense[0], [0, 1 / 3, 0, 0], rtol=1e-6)


def test_max_successors_keeps_the_largest_entries(synthetic: Dataset):
    full = SequentialRecommender(max_successors=None).fit(synthetic).transitions_
    pruned = SequentialRecommender(max_successors=3).fit(synthetic).transitions_
    assert np.diff(pruned.indptr).max() == 3
    row = int(np.argmax(np.diff(full.indptr)))
    full_row = full[row].toarray().ravel()
    kept = pruned[row].indices
    assert np.min(full_row[kept]) >= np.sort(full_row)[-3]
    np.testing.assert_allclose(pruned[row].data, full_row[kept])


def test_tied_timestamps_are_ordered_as_the_temporal_split_orders_them():
    rows = pd.DataFrame({"user_id": [1] * 4, "item_id": [3, 0, 2, 1], "rating": [4.0] * 4,
                         "timestamp": [5, 5, 5, 9]})  # fmt: skip
    items = pd.DataFrame({"title": list("abcd")}, index=pd.Index([0, 1, 2, 3], name="item_id"))
    users = pd.DataFrame({"age": [20]}, index=pd.Index([1], name="user_id"))
    data = Dataset.from_frames(rows, items, users, ())
    shuffled = data.with_ratings(rows.iloc[[1, 3, 0, 2]])
    params = {"window": 1, "backward_weight": 0.0, "damping": 0.0}
    a = SequentialRecommender(**params).fit(data)
    b = SequentialRecommender(**params).fit(shuffled)
    np.testing.assert_array_equal(a.transitions_.toarray(), b.transitions_.toarray())
    np.testing.assert_array_equal(a.context_ages_.toarray(), b.context_ages_.toarray())
    # the split's order of the tied burst: hold out 3 items one at a time from the end
    expected = []
    rest = data
    for _ in range(3):
        rest, last = temporal_split(rest, n_last=1)
        expected.append(int(last.ratings["item_index"].iloc[0]))
    ages = a.context_ages_.toarray()[0]
    assert [int(np.flatnonzero(ages == age)[0]) for age in (1, 2, 3)] == expected
    order = [expected[2], expected[1]]
    assert a.transitions_[order[0], order[1]] == 1.0


# ---------------------------------------------------------------------- recommending
def test_recommend_shapes_excludes_seen_and_follows_transitions():
    data = tiny_dataset({1: [0, 1, 2], 2: [0, 1, 2], 3: [3, 4, 5], 4: [0]}, n_items=6)
    model = SequentialRecommender(window=1, backward_weight=0.0, popularity_weight=0.0).fit(data)
    items, scores = model.recommend(np.array([3]), k=3)
    assert items.shape == scores.shape == (1, 3)
    # user 4 has seen 0; what follows 0 is 1 (then 2 never directly): 1 comes first
    assert items[0, 0] == 1
    assert 0 not in items[0]
    all_items, _ = model.recommend(np.arange(4), k=6)
    seen = data.interaction_matrix(binary=True).toarray() > 0
    for user in range(4):
        slate = all_items[user][all_items[user] >= 0]
        assert not seen[user, slate].any()
        assert len(slate) == (~seen[user]).sum()


def test_beats_popularity_on_synthetic_leave_last_out(synthetic: Dataset):
    train, test = temporal_split(synthetic, n_last=1)
    seq = leave_last_out_hr(SequentialRecommender(), train, test)
    pop = leave_last_out_hr(PopularityRecommender(), train, test)
    assert seq > pop + 0.05, (seq, pop)


def test_fit_is_deterministic(synthetic: Dataset):
    a = SequentialRecommender().fit(synthetic)
    b = SequentialRecommender().fit(synthetic)
    users = np.arange(synthetic.n_users)
    ia, sa = a.recommend(users, 10)
    ib, sb = b.recommend(users, 10)
    np.testing.assert_array_equal(ia, ib)
    np.testing.assert_array_equal(sa, sb)


def test_not_fitted_raises():
    with pytest.raises(NotFittedError):
        SequentialRecommender().recommend(np.array([0]), 5)


# ---------------------------------------------------------------------- feedback
def _unseen_item_with_successors(model: SequentialRecommender, user: int) -> int:
    unseen = np.flatnonzero(model.seen_[user].toarray().ravel() == 0)
    lengths = np.diff(model.transitions_.indptr)[unseen]
    return int(unseen[np.argmax(lengths)])


def _successors(model: SequentialRecommender, item: int, user: int, n: int = 5) -> np.ndarray:
    row = model.transitions_[item].toarray().ravel()
    row[model.seen_[user].indices] = -np.inf
    row[item] = -np.inf
    return np.argsort(-row, kind="stable")[:n]


@pytest.mark.parametrize("user", [0, 17, 42])
def test_like_raises_the_liked_items_successors(synthetic: Dataset, user: int):
    model = SequentialRecommender(n_recent=5).fit(synthetic)
    item = _unseen_item_with_successors(model, user)
    successors = _successors(model, item, user)
    before = model.score(np.array([user]))[0]
    slate_before, _ = model.recommend(np.array([user]), 10)
    others = np.setdiff1d(np.arange(model.n_items_), np.r_[successors, item])
    model.partial_fit(feedback([synthetic.user_ids[user]], [synthetic.item_ids[item]], [5]))
    after = model.score(np.array([user]))[0]
    gain = after - before
    assert gain[successors].min() > 0
    assert gain[successors].mean() > gain[others].mean() + 0.05
    assert model.context_ages_[user, item] == 1
    slate_after, _ = model.recommend(np.array([user]), 10)
    assert item not in slate_after[0]  # rated items join the seen set
    assert np.isin(successors, slate_after[0]).sum() >= np.isin(successors, slate_before[0]).sum()
    rank_before = np.argsort(np.argsort(-before, kind="stable"))[successors]
    rank_after = np.argsort(np.argsort(-after, kind="stable"))[successors]
    assert rank_after.mean() < 0.8 * rank_before.mean(), (rank_before, rank_after)


@pytest.mark.parametrize("user", [0, 17, 42])
def test_dislike_demotes_the_disliked_items_successors(synthetic: Dataset, user: int):
    model = SequentialRecommender(n_recent=5).fit(synthetic)
    item = _unseen_item_with_successors(model, user)
    successors = _successors(model, item, user)
    before = model.score(np.array([user]))[0]
    others = np.setdiff1d(np.arange(model.n_items_), np.r_[successors, item])
    model.partial_fit(feedback([synthetic.user_ids[user]], [synthetic.item_ids[item]], [1]))
    after = model.score(np.array([user]))[0]
    drop = before - after
    assert drop[successors].min() > 0
    assert drop[successors].mean() > drop[others].mean() + 0.05
    assert model.dislikes_[user, item] == 1
    assert model.context_ages_[user, item] == 0


def test_dislike_weight_zero_leaves_scores_unchanged(synthetic: Dataset):
    model = SequentialRecommender(dislike_weight=0.0).fit(synthetic)
    before = model.score(np.array([3]))
    item = _unseen_item_with_successors(model, 3)
    model.partial_fit(feedback([synthetic.user_ids[3]], [synthetic.item_ids[item]], [1]))
    np.testing.assert_allclose(model.score(np.array([3])), before)


def test_likes_age_the_context_and_respect_n_recent():
    data = tiny_dataset({1: [0, 1, 2], 2: [3, 4, 5]}, n_items=8)
    model = SequentialRecommender(n_recent=3).fit(data)
    np.testing.assert_array_equal(model.context_ages_.toarray()[0], [3, 2, 1, 0, 0, 0, 0, 0])
    # two likes in one batch: the later row is the more recent
    model.partial_fit(feedback([1, 1], [6, 7], [5, 4]))
    np.testing.assert_array_equal(model.context_ages_.toarray()[0], [0, 0, 3, 0, 0, 0, 2, 1])
    np.testing.assert_array_equal(model.context_ages_.toarray()[1], [0, 0, 0, 3, 2, 1, 0, 0])
    # liking an item already in the context moves it to the front; latest feedback wins
    model.partial_fit(feedback([1, 1], [2, 6], [5, 1]))
    np.testing.assert_array_equal(model.context_ages_.toarray()[0], [0, 0, 1, 0, 0, 0, 0, 2])
    assert model.dislikes_.toarray()[0].tolist() == [0, 0, 0, 0, 0, 0, 1, 0]
    model.partial_fit(feedback([1], [6], [5]))  # a like clears the dislike
    assert model.dislikes_.nnz == 0
    np.testing.assert_array_equal(model.context_ages_.toarray()[0], [0, 0, 2, 0, 0, 0, 1, 3])


def test_cold_user_gets_popularity_then_follows_a_like():
    data = tiny_dataset({1: [0, 1, 2], 2: [0, 1, 3], 3: [4, 5], 9: []}, n_items=6)
    model = SequentialRecommender(window=1, backward_weight=0.0).fit(data)
    cold = int(data.user_index([9])[0])
    np.testing.assert_array_equal(model.score(np.array([cold]))[0], model.popularity_)
    model.partial_fit(feedback([9], [4], [5]))
    items, _ = model.recommend(np.array([cold]), 1)
    assert items[0, 0] == 5  # 4 -> 5 is the only transition out of item 4


def test_bad_feedback_raises_and_changes_nothing(fitted: SequentialRecommender, synthetic):
    ages = fitted.context_ages_.copy()
    with pytest.raises(ValueError, match="item_id"):
        fitted.partial_fit(feedback([synthetic.user_ids[0]], [10**9], [5]))
    with pytest.raises(ValueError, match="user_id"):
        fitted.partial_fit(feedback([10**9], [synthetic.item_ids[0]], [5]))
    assert (fitted.context_ages_ != ages).nnz == 0


# ---------------------------------------------------------------------- persistence
def test_save_load_round_trip_after_feedback(tmp_path, synthetic: Dataset):
    model = SequentialRecommender(window=3, n_recent=4).fit(synthetic)
    model.partial_fit(feedback(synthetic.user_ids[[0, 1]], synthetic.item_ids[[5, 6]], [5, 1]))
    path = model.save(tmp_path / "seq")
    loaded = Recommender.load(path)
    assert isinstance(loaded, SequentialRecommender)
    assert loaded.get_params() == model.get_params()
    users = np.arange(synthetic.n_users)
    for a, b in zip(model.recommend(users, 10), loaded.recommend(users, 10), strict=True):
        np.testing.assert_array_equal(a, b)
    # the loaded model keeps learning the same way
    more = feedback(synthetic.user_ids[[2]], synthetic.item_ids[[7]], [5])
    after_model = model.partial_fit(more).recommend(users, 5)[0]
    after_loaded = loaded.partial_fit(more).recommend(users, 5)[0]
    np.testing.assert_array_equal(after_model, after_loaded)


# ---------------------------------------------------------------------- parameters
@pytest.mark.parametrize(
    ("params", "error", "name"),
    [
        ({"window": 0}, ValueError, "window"),
        ({"window": 2.5}, TypeError, "window"),
        ({"window": True}, TypeError, "window"),
        ({"n_recent": 0}, ValueError, "n_recent"),
        ({"decay": 0.0}, ValueError, "decay"),
        ({"decay": 1.5}, ValueError, "decay"),
        ({"recency": -0.1}, ValueError, "recency"),
        ({"damping": 2.0}, ValueError, "damping"),
        ({"backward_weight": -1.0}, ValueError, "backward_weight"),
        ({"popularity_weight": float("nan")}, ValueError, "popularity_weight"),
        ({"dislike_weight": "1"}, TypeError, "dislike_weight"),
        ({"max_successors": 0}, ValueError, "max_successors"),
    ],
)
def test_bad_hyper_parameters_are_named(params, error, name, synthetic: Dataset):
    with pytest.raises(error, match=name):
        SequentialRecommender(**params).fit(synthetic)


def test_params_stored_unchanged_and_grid_is_small():
    model = SequentialRecommender(window=7, damping=0.1, max_successors=None)
    assert model.get_params()["window"] == 7
    assert model.get_params()["max_successors"] is None
    n_points = np.prod([len(v) for v in SequentialRecommender.tuning_grid.values()])
    assert 2 <= n_points <= 4
    assert set(SequentialRecommender.tuning_grid) <= set(model.get_params())


# ---------------------------------------------------------------------- MovieLens 100K
@pytest.fixture(scope="module")
def movielens_leave_last_out(movielens):
    return temporal_split(movielens, n_last=1)


@pytest.fixture(scope="module")
def sequential_on_movielens(movielens_leave_last_out) -> tuple[float, dict]:
    return tuned_hr(SequentialRecommender, *movielens_leave_last_out)


@pytest.mark.movielens
def test_movielens_next_item_hr_beats_target_and_popularity(
    movielens_leave_last_out, sequential_on_movielens
):
    hr, chosen = sequential_on_movielens
    popularity = leave_last_out_hr(PopularityRecommender(), *movielens_leave_last_out)
    assert hr >= 0.20, (hr, chosen)
    assert hr > popularity + 0.05, (hr, popularity)


@pytest.mark.movielens
def test_movielens_next_item_beats_ease(movielens_leave_last_out, sequential_on_movielens):
    from arms import AutoencoderRecommender

    seq_hr, _ = sequential_on_movielens
    ease_hr, chosen = tuned_hr(AutoencoderRecommender, *movielens_leave_last_out)
    assert seq_hr > ease_hr, (seq_hr, ease_hr, chosen)
