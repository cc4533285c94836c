"""The Recommender contract, checked for every arm exported from :mod:`arms`.

The arms are discovered from ``arms.__all__``, so a new arm is tested as soon as it is exported.
``VARIANTS`` adds extra configurations (for example the autoencoder's ``"dae"``) and small,
fast hyper-parameters for the tiny data used here.
"""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

import arms
from arms import PopularityRecommender, Recommender

ARM_CLASSES = sorted(
    (
        obj
        for obj in (getattr(arms, name) for name in arms.__all__)
        if isinstance(obj, type) and issubclass(obj, Recommender) and obj is not Recommender
    ),
    key=lambda cls: cls.__name__,
)
#: Extra or faster configurations per class name; a class not listed is tested with defaults.
VARIANTS: dict[str, list[dict]] = {
    "SVDRecommender": [{"n_factors": 10, "n_epochs": 30}],
    "AutoencoderRecommender": [
        {"l2": 5.0},
        {"variant": "dlae", "l2": 5.0},
        {"variant": "edlae", "l2": 5.0},
        {"variant": "dae"},
    ],
}
CASES = [
    pytest.param(cls, params, id=f"{cls.name}-{'-'.join(map(str, params.values())) or 'default'}")
    for cls in ARM_CLASSES
    for params in VARIANTS.get(cls.__name__, [{}])
]
#: Arms whose feedback is global or ignored by design (see their docstrings).
NOT_PERSONAL = {"popularity", "random", "cooccurrence"}

N_ITEMS, N_USERS = 40, 61
CLUSTER_A, CLUSTER_B = np.arange(0, 20), np.arange(20, 40)
COLD_USER = N_USERS - 1  # in the catalogue, no training rating


def _two_taste_dataset() -> arms.data.Dataset:
    """Users 0-29 love items 0-19 and dislike a few of 20-39; users 30-59 the reverse.

    Each user rates 10 items of their cluster (4-5 stars) in a walk along the cluster, so that
    consecutive items are neighbours, and 2 items of the other cluster (1-2 stars).
    """
    rng = np.random.default_rng(42)
    rows = []
    for user in range(N_USERS - 1):
        home, away = (CLUSTER_A, CLUSTER_B) if user < 30 else (CLUSTER_B, CLUSTER_A)
        start = rng.integers(len(home))
        liked = home[(start + np.arange(10)) % len(home)]
        disliked = rng.choice(away, size=2, replace=False)
        items = np.concatenate([liked, disliked])
        ratings = np.concatenate([rng.integers(4, 6, 10), rng.integers(1, 3, 2)])
        order = rng.permutation(12) if user % 7 == 0 else np.arange(12)
        for position, (item, rating) in enumerate(zip(items[order], ratings[order], strict=True)):
            rows.append((user + 1, item + 1, float(rating), 880_000_000 + 1000 * user + position))
    ratings = pd.DataFrame(rows, columns=["user_id", "item_id", "rating", "timestamp"])
    genres = ("Drama", "Comedy")
    items = pd.DataFrame(
        {
            "title": [f"Movie {i}" for i in range(1, N_ITEMS + 1)],
            "release_date": pd.NaT,
            "year": pd.array([1995] * N_ITEMS, dtype="Int64"),
            "genres": ["Drama" if i < 20 else "Comedy" for i in range(N_ITEMS)],
            "Drama": np.arange(N_ITEMS) < 20,
            "Comedy": np.arange(N_ITEMS) >= 20,
        },
        index=pd.Index(np.arange(1, N_ITEMS + 1), name="item_id"),
    )
    users = pd.DataFrame(
        {
            "age": 30,
            "gender": "F",
            "occupation": pd.Categorical(["other"] * N_USERS),
            "zip_code": "00000",
        },
        index=pd.Index(np.arange(1, N_USERS + 1), name="user_id"),
    )
    return arms.data.Dataset.from_frames(ratings, items, users, genres, name="two-tastes")


@pytest.fixture(scope="module")
def data():
    return _two_taste_dataset()


def _fit(cls, params, data):
    return cls(**params).fit(data)


def _feedback(data, users, items, rating):
    items = np.atleast_1d(items)
    users = np.broadcast_to(users, items.shape)
    return pd.DataFrame({
        "user_id": data.user_ids[users],
        "item_id": data.item_ids[items],
        "rating": np.full(len(items), rating, dtype=float),
    })


@pytest.mark.parametrize(("cls", "params"), CASES)
def test_shapes_order_and_no_seen_item(cls, params, data):
    model = _fit(cls, params, data)
    users = np.arange(N_USERS)
    items, scores = model.recommend(users, k=5)
    assert items.shape == scores.shape == (N_USERS, 5)
    assert items.dtype == np.int64 and scores.dtype == np.float64
    assert (np.diff(scores, axis=1) <= 0).all()
    assert all(len(set(row)) == 5 for row in items)
    seen = data.interaction_matrix(binary=True).toarray() > 0
    assert not np.take_along_axis(seen, items, axis=1).any()
    # Asking for the whole catalogue pads with -1 after the unseen items, which all appear.
    full, full_scores = model.recommend([0], k=N_ITEMS)
    n_unseen = int((~seen[0]).sum())
    assert set(full[0, :n_unseen]) == set(np.flatnonzero(~seen[0]))
    assert (full[0, n_unseen:] == -1).all() and np.isneginf(full_scores[0, n_unseen:]).all()
    with_seen, _ = model.recommend([0], k=N_ITEMS, exclude_seen=False)
    assert sorted(with_seen[0]) == list(range(N_ITEMS))


@pytest.mark.parametrize(("cls", "params"), CASES)
def test_same_seed_same_recommendations(cls, params, data):
    first = _fit(cls, params, data).recommend(np.arange(N_USERS), k=7)
    second = _fit(cls, params, data).recommend(np.arange(N_USERS), k=7)
    np.testing.assert_array_equal(first[0], second[0])
    np.testing.assert_array_equal(first[1], second[1])


@pytest.mark.parametrize(("cls", "params"), CASES)
def test_save_load_round_trip_is_identical_before_and_after_feedback(cls, params, data, tmp_path):
    users = np.arange(N_USERS)
    model = _fit(cls, params, data)
    path = model.save(tmp_path / "model")
    loaded = Recommender.load(path)
    assert type(loaded) is cls and loaded.get_params() == model.get_params()
    for left, right in zip(model.recommend(users, 6), loaded.recommend(users, 6), strict=True):
        np.testing.assert_array_equal(left, right)

    feedback = pd.concat([
        _feedback(data, 2, CLUSTER_B[:2], 5.0), _feedback(data, COLD_USER, [3], 5.0),
        _feedback(data, 40, CLUSTER_B[5], 1.0),
    ])
    model = _fit(cls, params, data).partial_fit(feedback)
    path = model.save(tmp_path / "after.npz")
    loaded = cls.load(path)
    for left, right in zip(model.recommend(users, 6), loaded.recommend(users, 6), strict=True):
        np.testing.assert_array_equal(left, right)


def test_recommend_for_no_user_is_empty_and_bad_users_are_named(data):
    """Found by attack: ``recommend([])`` was refused as "got float64"."""
    model = PopularityRecommender().fit(data)
    items, scores = model.recommend([], k=3)
    assert items.shape == scores.shape == (0, 3) and items.dtype.kind == "i"
    with pytest.raises(TypeError, match=r"user_indices must be a 1-d integer array, got dtype "
                                        r"float64"):
        model.recommend([1.0], k=3)
    with pytest.raises(ValueError, match=rf"user_indices must be within \[0, {N_USERS}\), got "
                                         rf"{N_USERS}$"):
        model.recommend([0, N_USERS], k=3)


def test_save_into_a_folder_and_load_of_another_file_name_the_path(data, tmp_path):
    """Found by attack: save(<folder>) wrote <folder>.npz beside it, and loading a file save
    did not write gave numpy's "allow_pickle=False" text, naming neither."""
    import pickle

    model = PopularityRecommender().fit(data)
    with pytest.raises(IsADirectoryError, match=r"is a folder; save writes one \.npz file"):
        model.save(tmp_path)
    assert list(tmp_path.parent.glob(f"{tmp_path.name}.npz")) == []
    pickled, text, array, other = (tmp_path / n for n in ("p.pkl", "t.npz", "a.npy", "o.npz"))
    pickled.write_bytes(pickle.dumps({"a": 1}))
    text.write_text("not an archive")
    np.save(array, np.arange(3))
    np.savez(other, x=np.arange(3))
    for path in (pickled, text, array, other):
        with pytest.raises(ValueError, match=rf"^{path} is not a recommender written by save"):
            Recommender.load(path)
    with pytest.raises(FileNotFoundError):
        Recommender.load(tmp_path / "absent.npz")


@pytest.mark.parametrize(("cls", "params"), CASES)
def test_unseen_user_gets_popularity(cls, params, data):
    model = _fit(cls, params, data)
    if cls.name == "cooccurrence":  # live popularity instead (tests/test_arms_realtime.py)
        np.testing.assert_array_equal(model.score([COLD_USER])[0], model.live_counts())
        return
    popular = PopularityRecommender().fit(data)
    items, scores = model.recommend([COLD_USER], k=8)
    expected_items, expected_scores = popular.recommend([COLD_USER], k=8)
    np.testing.assert_array_equal(items, expected_items)
    np.testing.assert_array_equal(scores, expected_scores)
    np.testing.assert_array_equal(model.score([COLD_USER])[0], model.popularity_)


@pytest.mark.parametrize(("cls", "params"), CASES)
@pytest.mark.parametrize("rating", [5.0, 1.0], ids=["like", "dislike"])
def test_feedback_moves_that_users_scores_the_expected_way(cls, params, data, rating):
    """A cluster-A user likes three cluster-B items, or dislikes three unseen cluster-A items.

    Like: the user's scores rise more, on average, on cluster B than on cluster A. Dislike: they
    fall more on cluster A. For personal arms, other users are untouched and the unseen items of
    the favoured cluster climb the user's ranking.
    """
    model = _fit(cls, params, data)
    user = 1
    seen = data.interaction_matrix(binary=True)[user].indices
    target_cluster = CLUSTER_B if rating == 5.0 else CLUSTER_A
    rated = np.setdiff1d(target_cluster, seen)[:3]
    everyone = np.arange(N_USERS)
    if cls.name == "random":
        # Random has no taste to move: feedback only hides the rated items from later slates.
        model.partial_fit(_feedback(data, user, rated, rating))
        assert set(model.seen_[user].indices) == set(seen) | set(rated)
        items, _ = model.recommend([user], k=model.n_items_)
        shown = items[0][items[0] >= 0]
        assert not np.isin(rated, shown).any()
        assert len(shown) == model.n_items_ - len(seen) - len(rated)
        return
    before = model.score(everyone)
    model.partial_fit(_feedback(data, user, rated, rating))
    after = model.score(everyone)
    change = after[user] - before[user]
    # Liking B and disliking A both favour B over A.
    favoured = CLUSTER_B
    assert change[CLUSTER_B].mean() > change[CLUSTER_A].mean()
    assert set(rated) <= set(model.seen_[user].indices)
    if cls.name in NOT_PERSONAL:
        return
    np.testing.assert_array_equal(np.delete(after, user, 0), np.delete(before, user, 0))
    unseen = np.setdiff1d(np.arange(N_ITEMS), model.seen_[user].indices)
    rank_before = np.argsort(np.argsort(-before[user, unseen]))
    rank_after = np.argsort(np.argsort(-after[user, unseen]))
    in_favoured = np.isin(unseen, favoured)
    assert rank_after[in_favoured].mean() < rank_before[in_favoured].mean()


@pytest.mark.parametrize(("cls", "params"), CASES)
@pytest.mark.parametrize(
    ("column", "bad"), [("user_id", 999_999), ("item_id", 777_777)]
)
def test_unknown_id_in_feedback_raises_naming_it_and_changes_nothing(
    cls, params, data, column, bad
):
    model = _fit(cls, params, data)
    feedback = _feedback(data, [3, 4], [5, 6], 5.0)
    feedback.loc[1, column] = bad
    before = model.score(np.arange(N_USERS - 1)) if cls.name != "random" else None
    seen_before = model.seen_.toarray()
    with pytest.raises(ValueError, match=f"{column}.*{bad}"):
        model.partial_fit(feedback)
    np.testing.assert_array_equal(model.seen_.toarray(), seen_before)
    if before is not None:
        np.testing.assert_array_equal(model.score(np.arange(N_USERS - 1)), before)


@pytest.mark.parametrize(("cls", "params"), CASES)
@pytest.mark.parametrize("k", [0, -1, N_ITEMS + 1, 2.5, True, "3", None])
def test_bad_k_raises(cls, params, data, k):
    model = _fit(cls, params, data)
    with pytest.raises(ValueError, match="k must be an integer"):
        model.recommend([0, 1], k=k)


@pytest.mark.parametrize(("cls", "params"), CASES)
def test_arm_declares_its_name_grid_and_keyword_only_parameters(cls, params):
    assert cls.name not in {"recommender", ""} and isinstance(cls.predicts_ratings, bool)
    grid = getattr(cls, "tuning_grid", {})
    assert isinstance(grid, dict)
    n_combos = int(np.prod([len(v) for v in grid.values()])) if grid else 1
    assert n_combos <= 4
    assert set(grid) <= set(cls().get_params())
    with pytest.raises(TypeError):
        cls(*params.values()) if params else cls(0)


def test_every_exported_arm_is_covered():
    names = {cls.__name__ for cls in ARM_CLASSES}
    assert {"SVDRecommender", "AutoencoderRecommender", "PopularityRecommender",
            "RandomRecommender"} <= names
    assert {case.values[0].__name__ for case in CASES} == names


def test_an_unknown_integer_id_gets_no_suggestion_by_spelling():
    """Item 5002 was told "did you mean 8002?" while 5001 and 5003 exist, 7777 "77?", 301
    "31?" (found by attack): a number spelled alike is not near. Names keep theirs."""
    from arms.errors import unknown_id_message

    assert unknown_id_message("item_id", 5002, [8002, 5001, 5003]) == "unknown item_id 5002"
    assert unknown_id_message("item_id", np.int64(301), [31, 300]) == "unknown item_id 301"
    assert unknown_id_message("arm", "ease2", ["ease", "svd"]) == (
        "unknown arm 'ease2'; did you mean ease?")
