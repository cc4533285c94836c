"""EASE at scale: float32 computation, ``max_items`` and the blocked Gram matrix.

Memory and time at large catalogues are measured by ``bench/arms_fit.py``; these tests pin the
numbers that make those settings safe to use.
"""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest
from threadpoolctl import threadpool_limits

from arms import AutoencoderRecommender, Recommender
from arms.autoencoder import ease_weights
from arms.data import make_synthetic


@pytest.fixture(autouse=True)
def _one_blas_thread():
    with threadpool_limits(limits=1, user_api="blas"):
        yield


@pytest.fixture(scope="module")
def data():
    return make_synthetic(n_users=150, n_items=90, n_ratings=3000, random_state=11)


def _reference_weights(matrix, l2: float) -> np.ndarray:
    """EASE by a general inverse in float64: independent of the code under test."""
    gram = (matrix.T @ matrix).toarray().astype(np.float64) + l2 * np.eye(matrix.shape[1])
    precision = np.linalg.inv(gram)
    weights = precision / -np.diag(precision)
    np.fill_diagonal(weights, 0.0)
    return weights


def test_float32_and_blocked_gram_match_the_float64_closed_form(data, monkeypatch):
    X = data.interaction_matrix(binary=True)
    expected = _reference_weights(X, 20.0)
    exact = ease_weights(X, 20.0, dtype=np.float64)
    np.testing.assert_allclose(exact, expected, atol=1e-12)
    single = ease_weights(X, 20.0, dtype=np.float32)
    assert single.dtype == np.float32 and single.flags.c_contiguous
    # float32's unit roundoff is 6e-8; the condition number here leaves 4 digits at least.
    assert np.abs(single - expected).max() < 1e-4 * np.abs(expected).max()
    np.testing.assert_array_equal(np.diag(single), 0.0)
    # Building the Gram matrix 7 columns at a time (13 blocks, the last one short) and mirroring
    # potri's triangle block by block gives the same matrix.
    monkeypatch.setattr("arms.autoencoder._GRAM_BLOCK_CELLS", 7 * data.n_items)
    np.testing.assert_allclose(ease_weights(X, 20.0, dtype=np.float64), exact, atol=1e-13)


def test_float32_ranks_like_float64(data):
    users = np.arange(data.n_users)
    single = AutoencoderRecommender(l2=20.0).fit(data)
    double = AutoencoderRecommender(l2=20.0, dtype="float64").fit(data)
    assert single.weights_.dtype == np.float32 and single.inputs_.dtype == np.float32
    np.testing.assert_allclose(single.score(users), double.score(users), atol=1e-4)
    same = single.recommend(users, k=10)[0] == double.recommend(users, k=10)[0]
    assert same.all(axis=1).mean() >= 0.95


def test_max_items_keeps_the_most_rated_and_never_recommends_the_rest(data):
    model = AutoencoderRecommender(l2=20.0, max_items=30, dtype="float64").fit(data)
    counts = np.bincount(data.ratings["item_index"], minlength=data.n_items)
    kept = model.kept_items_
    assert len(kept) == 30 and np.all(np.diff(kept) > 0)
    dropped = np.setdiff1d(np.arange(data.n_items), kept)
    assert counts[kept].min() >= counts[dropped].max()
    # B is EASE fitted on the kept columns alone.
    X = data.interaction_matrix(binary=True)
    np.testing.assert_allclose(model.weights_, _reference_weights(X[:, kept], 20.0), atol=1e-12)
    users = np.arange(data.n_users)
    scores = model.score(users)
    assert np.isneginf(scores[:, dropped]).all()
    np.testing.assert_allclose(scores[:, kept], X[:, kept].toarray() @ model.weights_, atol=1e-12)
    items, values = model.recommend(users, k=data.n_items)
    recommended = items[items >= 0]
    assert np.isin(recommended, kept).all()
    # Each row holds exactly the user's unseen kept items, then -1 padding.
    unseen_kept = 30 - np.asarray(X[:, kept].sum(axis=1)).ravel()
    np.testing.assert_array_equal((items >= 0).sum(axis=1), unseen_kept)
    assert np.isneginf(values[items < 0]).all()


def test_max_items_ties_go_to_the_lower_index(data):
    # Five items with the same count: only the two lowest indices fit in max_items=2.
    r = data.ratings
    kept = r[r["item_index"] < 5].groupby("item_index").head(3)
    tied = data.with_ratings(kept.loc[:, ["user_id", "item_id", "rating", "timestamp"]])
    assert np.unique(np.bincount(tied.ratings["item_index"])[:5]).tolist() == [3]
    model = AutoencoderRecommender(l2=1.0, max_items=2).fit(tied)
    assert model.kept_items_.tolist() == [0, 1]


def test_max_items_above_the_catalogue_keeps_everything(data):
    users = np.arange(data.n_users)
    everything = AutoencoderRecommender(l2=20.0, max_items=10_000).fit(data)
    default = AutoencoderRecommender(l2=20.0).fit(data)
    assert len(everything.kept_items_) == data.n_items
    np.testing.assert_array_equal(everything.score(users), default.score(users))


def test_feedback_keeps_float32_and_save_load_keeps_the_kept_items(data, tmp_path):
    model = AutoencoderRecommender(l2=20.0, max_items=40).fit(data)
    X = data.interaction_matrix(binary=True)
    user = 5
    new = np.setdiff1d(model.kept_items_, X[user].indices)[0]
    before = model.score([user])[0]
    model.partial_fit(pd.DataFrame({"user_id": data.user_ids[[user]],
                                    "item_id": data.item_ids[[new]], "rating": [5.0]}))  # fmt: skip
    assert model.inputs_.dtype == np.float32
    after = model.score([user])[0]
    row = np.searchsorted(model.kept_items_, new)
    kept = model.kept_items_
    np.testing.assert_allclose(after[kept] - before[kept], model.weights_[row], atol=1e-6)
    path = model.save(tmp_path / "ease")
    loaded = Recommender.load(path)
    assert loaded.get_params() == model.get_params()
    np.testing.assert_array_equal(loaded.kept_items_, model.kept_items_)
    assert loaded.weights_.dtype == np.float32
    users = np.arange(data.n_users)
    np.testing.assert_array_equal(loaded.score(users), model.score(users))


@pytest.mark.parametrize(
    ("params", "error", "pattern"),
    [
        ({"max_items": 0}, ValueError, "max_items must be an integer >= 1, got 0"),
        ({"max_items": 2.5}, TypeError, "max_items must be an integer"),
        ({"dtype": "float16"}, ValueError, r"dtype must be one of \['float32', 'float64'\]"),
        ({"dtype": np.float32}, TypeError, "dtype must be a string"),
    ],
)
def test_bad_scale_parameters_raise_naming_them(data, params, error, pattern):
    with pytest.raises(error, match=pattern):
        AutoencoderRecommender(**params).fit(data)


def test_dae_ignores_the_ease_only_options(data):
    small = make_synthetic(n_users=40, n_items=30, n_ratings=500, random_state=2)
    model = AutoencoderRecommender(variant="dae", hidden_units=4, n_epochs=1, max_items=5,
                                   dtype="float32").fit(small)  # fmt: skip
    assert model.inputs_.dtype == np.float64 and model.score([0]).shape == (1, 30)


def test_a_catalogue_too_big_for_memory_is_named_before_the_fit(data, monkeypatch, caplog):
    # 90 items in float32 are 32,400 bytes; a 30,000-byte limit stands in for 4 GB.
    monkeypatch.setattr("arms.autoencoder._WARN_BYTES", 30_000)
    with caplog.at_level("WARNING", logger="arms.autoencoder"):
        AutoencoderRecommender(l2=20.0).fit(data)
        AutoencoderRecommender(l2=20.0, max_items=80).fit(data)  # 25,600 bytes: no warning
    warnings = [r.getMessage() for r in caplog.records]
    assert warnings == [
        "EASE over 90 items holds a 0.0 GB float32 matrix while fitting and after; "
        "max_items=20000 would hold 1.6 GB"
    ]
