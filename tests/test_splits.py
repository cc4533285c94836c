"""Splits: partitions, per-user proportions, time order, determinism and bad arguments."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

from arms.data import Dataset, kfold_split, make_synthetic, random_split, temporal_split
from arms.data.splits import tie_break_key


@pytest.fixture(scope="module")
def data() -> Dataset:
    return make_synthetic(120, 80, 3_000, random_state=5)


@pytest.fixture
def tiny() -> Dataset:
    """Three users with 1, 4 and 5 ratings; user 30 has a timestamp tie between items 3 and 1."""
    ratings = pd.DataFrame(
        {
            "user_id": [10, 20, 20, 20, 20, 30, 30, 30, 30, 30],
            "item_id": [1, 1, 2, 3, 4, 5, 3, 1, 2, 4],
            "rating": [5, 4, 3, 2, 1, 5, 4, 3, 2, 1],
            "timestamp": [100, 40, 10, 30, 20, 50, 90, 90, 60, 70],
        }
    )
    items = pd.DataFrame({"title": list("abcde")}, index=pd.Index([1, 2, 3, 4, 5], name="item_id"))
    users = pd.DataFrame({"age": [20, 30, 40]}, index=pd.Index([10, 20, 30], name="user_id"))
    return Dataset.from_frames(ratings, items, users, genre_names=())


def _pairs(d: Dataset) -> set[tuple[int, int, int]]:
    r = d.ratings
    return set(zip(r["user_id"], r["item_id"], r["timestamp"], strict=True))


def _assert_partition(whole: Dataset, train: Dataset, test: Dataset) -> None:
    assert train.n_ratings + test.n_ratings == whole.n_ratings
    assert _pairs(train) | _pairs(test) == _pairs(whole)
    assert not _pairs(train) & _pairs(test)
    # Same catalogue and indices, so models fit on train score test directly.
    for part in (train, test):
        assert part.users is whole.users and part.items is whole.items
        assert part.ratings.columns.tolist() == whole.ratings.columns.tolist()


# ---------------------------------------------------------------------------- temporal
def test_temporal_leave_last_out_on_hand_example(tiny: Dataset) -> None:
    train, test = temporal_split(tiny, n_last=1)
    _assert_partition(tiny, train, test)
    # User 10 has one rating: it stays in training. User 20's latest is item 1 (t=40).
    # User 30 ties items 3 and 1 at t=90: the larger hash of (user_id, item_id) counts as later.
    key = tie_break_key(np.array([30, 30]), np.array([1, 3]))
    assert key[0] > key[1]
    held = sorted(zip(test.ratings["user_id"], test.ratings["item_id"], strict=True))
    assert held == [(20, 1), (30, 1)]
    _, test2 = temporal_split(tiny, n_last=2)
    held = sorted(zip(test2.ratings["user_id"], test2.ratings["item_id"], strict=True))
    assert held == [(20, 1), (20, 3), (30, 1), (30, 3)]


def test_temporal_fraction_on_hand_example(tiny: Dataset) -> None:
    # 20 % of 4 ratings: keep round(3.2) = 3; of 5: keep 4; of 1: keep 1.
    _, test = temporal_split(tiny, fraction=0.2)
    held = sorted(zip(test.ratings["user_id"], test.ratings["item_id"], strict=True))
    assert held == [(20, 1), (30, 1)]
    # 50 %: round(2.0) = 2 of 4 (items 2 and 4 first), round(2.5) = 2 of 5 (half to even).
    _, test = temporal_split(tiny, fraction=0.5)
    assert np.bincount(test.ratings["user_index"], minlength=3).tolist() == [0, 2, 3]


def test_tie_break_key_is_fixed_and_spreads_pairs() -> None:
    users = np.repeat(np.arange(1, 101), 50)
    items = np.tile(np.arange(1, 51), 100)
    keys = tie_break_key(users, items)
    assert len(np.unique(keys)) == len(keys)
    np.testing.assert_array_equal(keys, tie_break_key(users, items))
    # Not monotone in the item id: about half of the consecutive pairs are out of order.
    assert 0.4 < np.mean(np.diff(keys.reshape(100, 50).astype(np.float64), axis=1) > 0) < 0.6


def test_temporal_split_is_row_order_invariant(tiny: Dataset) -> None:
    shuffled = tiny.with_ratings(tiny.ratings.sample(frac=1.0, random_state=1))
    _, a = temporal_split(tiny, n_last=1)
    _, b = temporal_split(shuffled, n_last=1)
    assert _pairs(a) == _pairs(b)


@pytest.mark.parametrize("kwargs", [{"n_last": 1}, {"n_last": 3}, {"fraction": 0.2}])
def test_temporal_split_properties(data: Dataset, kwargs: dict) -> None:
    train, test = temporal_split(data, **kwargs)
    _assert_partition(data, train, test)
    latest_train = train.ratings.groupby("user_index")["timestamp"].max()
    earliest_test = test.ratings.groupby("user_index")["timestamp"].min()
    assert (earliest_test >= latest_train.reindex(earliest_test.index)).all()
    counts = np.bincount(data.ratings["user_index"], minlength=data.n_users)
    held = np.bincount(test.ratings["user_index"], minlength=data.n_users)
    if "n_last" in kwargs:
        n = kwargs["n_last"]
        np.testing.assert_array_equal(held, np.where(counts > n, n, 0))
    else:
        np.testing.assert_array_equal(held, counts - np.maximum(np.round(0.8 * counts), 1))
    assert np.bincount(train.ratings["user_index"], minlength=data.n_users).min() >= 1


def test_splits_do_not_mutate(data: Dataset) -> None:
    before = data.ratings.copy()
    temporal_split(data, n_last=1)
    random_split(data, random_state=3)
    list(kfold_split(data, n_splits=3))
    pd.testing.assert_frame_equal(data.ratings, before)


# ---------------------------------------------------------------------------- random
def test_random_split_per_user_proportions(data: Dataset) -> None:
    train, test = random_split(data, test_fraction=0.25, random_state=0)
    _assert_partition(data, train, test)
    counts = np.bincount(data.ratings["user_index"], minlength=data.n_users)
    n_train = np.bincount(train.ratings["user_index"], minlength=data.n_users)
    np.testing.assert_array_equal(n_train, np.maximum(np.round(0.75 * counts), 1))


def test_random_split_is_seeded(data: Dataset) -> None:
    _, a = random_split(data, random_state=1)
    _, b = random_split(data, random_state=np.random.default_rng(1))
    _, c = random_split(data, random_state=2)
    assert _pairs(a) == _pairs(b)
    assert _pairs(a) != _pairs(c)


def test_random_split_is_uniform_within_users(data: Dataset) -> None:
    # Over many seeds each rating is held out about 25 % of the time, early or late alike.
    counts = np.zeros(data.n_ratings)
    key = data.ratings.set_index(["user_id", "item_id"]).index
    for seed in range(40):
        _, test = random_split(data, random_state=seed)
        counts[key.get_indexer(test.ratings.set_index(["user_id", "item_id"]).index)] += 1
    share = counts / 40
    assert abs(share.mean() - 0.25) < 0.01
    late = data.ratings.groupby("user_index")["timestamp"].rank(pct=True).to_numpy() > 0.5
    assert abs(share[late].mean() - share[~late].mean()) < 0.02


# ---------------------------------------------------------------------------- k-fold
def test_kfold_partitions_the_ratings(data: Dataset) -> None:
    folds = list(kfold_split(data, n_splits=5, random_state=0))
    assert len(folds) == 5
    sizes = [test.n_ratings for _, test in folds]
    assert sum(sizes) == data.n_ratings and max(sizes) - min(sizes) <= 1
    tests = [_pairs(test) for _, test in folds]
    assert set().union(*tests) == _pairs(data)
    assert sum(len(t) for t in tests) == data.n_ratings
    for train, test in folds:
        _assert_partition(data, train, test)
    again = [_pairs(test) for _, test in kfold_split(data, n_splits=5, random_state=0)]
    assert again == tests
    other = [_pairs(test) for _, test in kfold_split(data, n_splits=5, random_state=1)]
    assert other != tests


# ---------------------------------------------------------------------------- bad arguments
@pytest.mark.parametrize(
    ("call", "error", "match"),
    [
        (lambda d: temporal_split(d), ValueError, "n_last and fraction"),
        (lambda d: temporal_split(d, n_last=1, fraction=0.2), ValueError, "n_last and fraction"),
        (lambda d: temporal_split(d, n_last=0), ValueError, "n_last"),
        (lambda d: temporal_split(d, n_last=1.0), TypeError, "n_last"),
        (lambda d: temporal_split(d, fraction=1.0), ValueError, "fraction"),
        (lambda d: temporal_split(d, fraction="0.2"), TypeError, "fraction"),
        (lambda d: random_split(d, test_fraction=0.0), ValueError, "test_fraction"),
        (lambda d: random_split(d, random_state="x"), TypeError, "random_state"),
        (lambda d: kfold_split(d, n_splits=1), ValueError, "n_splits"),
        (lambda d: kfold_split(d, n_splits=10**9), ValueError, "n_splits"),
        (lambda d: temporal_split(d.ratings, n_last=1), TypeError, "dataset"),
    ],
)
def test_bad_arguments(data: Dataset, call, error: type[Exception], match: str) -> None:
    with pytest.raises(error, match=match):
        call(data)
