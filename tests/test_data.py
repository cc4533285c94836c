"""The MovieLens loader (including the download path) and the synthetic generator."""

from __future__ import annotations

import re
import shutil
import zipfile
from dataclasses import replace
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import scipy.sparse as sp
from test_movielens_large import pin_archive

from arms.data import Dataset, find_movielens, load_movielens, make_synthetic
from arms.data import movielens as movielens_module
from arms.data.movielens import ML100K_GENRES
from arms.data.synthetic import RATING_SHARES
from arms.errors import DataFileError, DataFolderError, DataUnavailableError

SHARED_ML100K = Path("/work/shared/data/ml-100k")


# ---------------------------------------------------------------------------- MovieLens
@pytest.mark.movielens
def test_movielens_shape_and_dtypes(movielens: Dataset) -> None:
    assert (movielens.n_users, movielens.n_items, movielens.n_ratings) == (943, 1682, 100_000)
    r = movielens.ratings
    assert r.dtypes.to_dict() == {
        "user_id": np.int64, "item_id": np.int64, "rating": np.float32,
        "timestamp": np.int64, "user_index": np.int32, "item_index": np.int32,
    }  # fmt: skip
    assert sorted(r["rating"].unique()) == [1, 2, 3, 4, 5]
    assert movielens.items.loc[1, "title"] == "Toy Story (1995)"
    assert movielens.items.loc[1, "genres"] == "Animation|Children's|Comedy"
    assert movielens.items.loc[1, "year"] == 1995
    assert list(movielens.genre_names) == list(ML100K_GENRES)
    assert movielens.users.loc[1, "occupation"] == "technician"
    assert movielens.users.loc[1, "zip_code"] == "85711"
    # The contiguous index maps back to the raw ids.
    np.testing.assert_array_equal(movielens.user_ids[r["user_index"]], r["user_id"])
    np.testing.assert_array_equal(movielens.item_ids[r["item_index"]], r["item_id"])


def _zip_ml100k(folder: Path, *, corrupt: bool = False) -> Path:
    """An archive laid out like GroupLens' ml-100k.zip, built from the shared copy."""
    archive = folder / "ml-100k.zip"
    with zipfile.ZipFile(archive, "w") as zf:
        for name in ("u.data", "u.item", "u.user"):
            data = (SHARED_ML100K / name).read_bytes()
            if corrupt and name == "u.data":
                data = data.replace(b"\t5\t", b"\t4\t", 1)
            zf.writestr(f"ml-100k/{name}", data)
    return archive


@pytest.fixture
def isolated_cache(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """An empty user cache and no RECBANDITS_DATA, so the loader must download."""
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "cache"))
    monkeypatch.delenv("RECBANDITS_DATA", raising=False)
    return tmp_path / "cache" / "recbandits"


needs_shared = pytest.mark.skipif(
    not (SHARED_ML100K / "u.data").is_file(), reason="needs the shared MovieLens copy"
)


@needs_shared
def test_download_into_cache_verifies_and_is_reused(
    tmp_path: Path, isolated_cache: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    archive = _zip_ml100k(tmp_path)
    pin_archive(monkeypatch, "ml-100k", archive)
    folder = find_movielens()
    assert folder == isolated_cache / "ml-100k"
    assert (folder / "u.data").read_bytes() == (SHARED_ML100K / "u.data").read_bytes()
    # A second call finds the cached copy and does not touch the (now missing) archive.
    archive.unlink()
    assert find_movielens() == folder
    data = load_movielens()
    assert data.n_ratings == 100_000
    assert not list(isolated_cache.glob("tmp*")), "the temporary download folder must be removed"


@needs_shared
def test_download_checksum_mismatch_leaves_no_copy(
    tmp_path: Path, isolated_cache: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    # The table pins the intact archive; the one served has one rating changed.
    pin_archive(monkeypatch, "ml-100k", _zip_ml100k(tmp_path))
    _zip_ml100k(tmp_path, corrupt=True)
    with pytest.raises(DataUnavailableError, match="checksum mismatch"):
        find_movielens()
    assert not (isolated_cache / "ml-100k").exists()


def test_offline_error_names_every_option(
    tmp_path: Path, isolated_cache: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    row = replace(movielens_module.MOVIELENS_VARIANTS["ml-100k"],
                  url=(tmp_path / "no-such-archive.zip").as_uri())
    monkeypatch.setitem(movielens_module.MOVIELENS_VARIANTS, "ml-100k", row)
    with pytest.raises(DataUnavailableError) as excinfo:
        load_movielens()
    message = str(excinfo.value)
    for option in ("--data", "RECBANDITS_DATA", str(isolated_cache)):
        assert option in message
    with pytest.raises(DataUnavailableError, match=r"download disabled.*--data"):
        load_movielens(download=False)


def test_data_dir_without_files_names_the_option(tmp_path: Path) -> None:
    with pytest.raises(DataUnavailableError, match="--data"):
        find_movielens(tmp_path)


@needs_shared
def test_lookup_order(
    tmp_path: Path, isolated_cache: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    # The data_dir wins, RECBANDITS_DATA comes next, the cache last; either the folder holding
    # ml-100k/ or ml-100k itself is accepted.
    env_copy = tmp_path / "env"
    shutil.copytree(SHARED_ML100K, env_copy / "ml-100k")
    monkeypatch.setenv("RECBANDITS_DATA", str(env_copy))
    assert find_movielens(download=False) == env_copy / "ml-100k"
    assert find_movielens(SHARED_ML100K, download=False) == SHARED_ML100K
    assert find_movielens(SHARED_ML100K.parent, download=False) == SHARED_ML100K
    shutil.copytree(SHARED_ML100K, isolated_cache / "ml-100k")
    monkeypatch.delenv("RECBANDITS_DATA")
    assert find_movielens(download=False) == isolated_cache / "ml-100k"


def test_a_data_variable_naming_no_copy_is_refused(
    tmp_path: Path, isolated_cache: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    # Found by a README check: RECBANDITS_DATA naming no folder, or one without the release,
    # was skipped in silence for the cache or a download (then advised "set RECBANDITS_DATA"
    # although it was); it is held to --data's rule, with the cache holding a copy.
    (isolated_cache / "ml-100k").mkdir(parents=True)
    for name in ("u.data", "u.item", "u.user"):
        (isolated_cache / "ml-100k" / name).write_text("")
    missing, empty = tmp_path / "nonexistent", tmp_path / "empty"
    empty.mkdir()
    monkeypatch.setenv("RECBANDITS_DATA", str(missing))
    with pytest.raises(DataFolderError) as excinfo:
        find_movielens(download=False)
    assert str(excinfo.value) == (f"the data folder {missing} (RECBANDITS_DATA; unset it to "
                                  "use the user cache or the download) does not exist")
    monkeypatch.setenv("RECBANDITS_DATA", str(empty))
    with pytest.raises(DataFolderError) as excinfo:
        find_movielens(download=False)
    assert str(excinfo.value) == (
        f"the data folder {empty} (RECBANDITS_DATA; unset it to use the user cache or the "
        f"download) holds no ml-100k files (expected u.data, u.item, u.user in "
        f"{empty / 'ml-100k'})")
    with pytest.raises(DataFolderError, match=r"\(--data, RECBANDITS_DATA\) does not exist"):
        find_movielens(missing, download=False)
    a_file = tmp_path / "a-file"  # said "does not exist" (found by a README check)
    a_file.write_text("")
    with pytest.raises(DataFolderError, match=r"\(--data, RECBANDITS_DATA\) is not a folder"):
        find_movielens(a_file, download=False)
    monkeypatch.setenv("RECBANDITS_DATA", "")  # set empty: not set
    assert find_movielens(download=False) == isolated_cache / "ml-100k"


# ---------------------------------------------------------------------------- synthetic
@pytest.fixture(scope="module")
def synthetic() -> Dataset:
    return make_synthetic(random_state=0)


@pytest.mark.movielens
def test_synthetic_schema_matches_movielens(synthetic: Dataset, movielens: Dataset) -> None:
    for part in ("ratings", "items", "users"):
        ours, theirs = getattr(synthetic, part), getattr(movielens, part)
        assert list(ours.columns) == list(theirs.columns), part
        assert ours.dtypes.to_dict() == theirs.dtypes.to_dict(), part
        assert ours.index.dtype == theirs.index.dtype and ours.index.name == theirs.index.name
    assert synthetic.genre_names == movielens.genre_names
    assert list(synthetic.users["occupation"].cat.categories) == list(
        movielens.users["occupation"].cat.categories
    )


def test_synthetic_catalogue_values(synthetic: Dataset) -> None:
    items, users = synthetic.items, synthetic.users
    flags = items.loc[:, list(ML100K_GENRES)].to_numpy()
    assert flags.any(axis=1).all(), "every item has a genre"
    rebuilt = ["|".join(np.array(ML100K_GENRES)[row]) for row in flags]
    assert list(items["genres"]) == rebuilt
    assert (items["year"] == items["release_date"].dt.year).all()
    assert users["age"].between(7, 73).all()
    assert set(users["gender"]) == {"M", "F"}
    assert users["zip_code"].str.fullmatch(r"\d{5}").all()
    # Drama is MovieLens' commonest genre and Western a rare one; shares should be alike.
    assert items["Drama"].mean() > 0.3 > items["Western"].mean()


@pytest.mark.parametrize(
    ("n_users", "n_items", "n_ratings"),
    [(30, 40, 300), (100, 50, 2_500), (943, 1682, 100_000), (2_000, 300, 40_000)],
)
def test_synthetic_size_is_honoured(n_users: int, n_items: int, n_ratings: int) -> None:
    data = make_synthetic(n_users, n_items, n_ratings, random_state=3)
    assert (data.n_users, data.n_items, data.n_ratings) == (n_users, n_items, n_ratings)
    r = data.ratings
    assert not r.duplicated(["user_index", "item_index"]).any()
    assert np.bincount(r["user_index"], minlength=n_users).min() >= 1
    assert r["rating"].isin([1, 2, 3, 4, 5]).all()
    # Strictly increasing time within each user: no ties to break.
    same_user = r["user_index"].to_numpy()[1:] == r["user_index"].to_numpy()[:-1]
    assert (np.diff(r["timestamp"].to_numpy())[same_user] > 0).all()


def test_synthetic_is_deterministic_under_a_seed() -> None:
    a = make_synthetic(200, 150, 5_000, random_state=7)
    b = make_synthetic(200, 150, 5_000, random_state=np.random.default_rng(7))
    c = make_synthetic(200, 150, 5_000, random_state=8)
    for part in ("ratings", "items", "users"):
        assert getattr(a, part).equals(getattr(b, part)), part
    assert not a.ratings.equals(c.ratings)


def test_synthetic_rating_skew_and_long_tail(synthetic: Dataset) -> None:
    shares = synthetic.ratings["rating"].value_counts(normalize=True).sort_index().to_numpy()
    np.testing.assert_allclose(shares, RATING_SHARES, atol=0.01)
    counts = np.sort(np.bincount(synthetic.ratings["item_index"], minlength=synthetic.n_items))
    top_decile = counts[-synthetic.n_items // 10 :].sum() / counts.sum()
    assert top_decile > 0.25  # MovieLens 100K: 0.43; uniform popularity would give 0.10
    per_user = np.bincount(synthetic.ratings["user_index"])
    assert per_user.min() >= 20 and np.median(per_user) < per_user.mean()  # heavy right tail


def _leave_last_out_hit_rates(data: Dataset, k: int = 10) -> tuple[float, float]:
    """HR@k of a first-order transition model and of popularity on each user's last item."""
    r = data.ratings.sort_values(["user_index", "timestamp", "item_index"])
    users, items = r["user_index"].to_numpy(), r["item_index"].to_numpy()
    is_last = np.r_[users[1:] != users[:-1], True]
    test_users, test_items = users[is_last], items[is_last]
    users, items = users[~is_last], items[~is_last]
    follows = users[1:] == users[:-1]
    transitions = sp.csr_matrix(
        (np.ones(follows.sum()), (items[:-1][follows], items[1:][follows])),
        shape=(data.n_items, data.n_items),
    )
    last_train = items[np.r_[users[1:] != users[:-1], True]]
    seen = sp.csr_matrix((np.ones(len(users)), (users, items)),
                         shape=(data.n_users, data.n_items)).toarray() > 0  # fmt: skip
    popularity = np.bincount(items, minlength=data.n_items).astype(float)
    rates = []
    for scores in ((transitions + transitions.T)[last_train].toarray() + 1e-9 * popularity,
                   np.tile(popularity, (len(test_users), 1))):  # fmt: skip
        scores[seen[test_users]] = -np.inf
        top = np.argsort(-scores, axis=1, kind="stable")[:, :k]
        rates.append(float((top == test_items[:, None]).any(axis=1).mean()))
    return rates[0], rates[1]


def test_synthetic_timestamps_carry_sequential_signal(synthetic: Dataset) -> None:
    sequential, popularity = _leave_last_out_hit_rates(synthetic)
    assert sequential > 1.5 * popularity and sequential > 0.12
    # Shuffling the timestamps within users must destroy the signal.
    rng = np.random.default_rng(0)
    r = synthetic.ratings.copy()
    r["timestamp"] = r.groupby("user_index")["timestamp"].transform(
        lambda t: rng.permutation(t.to_numpy())
    )
    shuffled, _ = _leave_last_out_hit_rates(synthetic.with_ratings(r))
    assert shuffled < 0.75 * sequential


def test_synthetic_context_carries_signal(synthetic: Dataset) -> None:
    # Demographics come from the user factors, so users of one gender rate differently.
    r = synthetic.ratings.join(synthetic.users["gender"], on="user_id")
    per_item = r.pivot_table(index="item_index", columns="gender", values="rating",
                             aggfunc="mean").dropna()  # fmt: skip
    # Correlation of the gender gap with item genres: far from zero when context matters.
    gap = (per_item["M"] - per_item["F"]).to_numpy()
    genres = synthetic.genre_matrix()[per_item.index.to_numpy()]
    corr = [abs(np.corrcoef(gap, genres[:, g])[0, 1]) for g in range(1, genres.shape[1])
            if genres[:, g].std() > 0]  # fmt: skip
    assert max(corr) > 0.15


@pytest.mark.parametrize(
    ("kwargs", "error", "match"),
    [
        ({"n_users": 0}, ValueError, "n_users"),
        ({"n_users": 2.5}, TypeError, "n_users"),
        ({"n_items": True}, TypeError, "n_items"),
        ({"n_users": 10, "n_ratings": 5}, ValueError,
         "^n_ratings must be an integer from 10 to 8,410, got 5$"),
        ({"n_users": 10, "n_items": 10, "n_ratings": 60}, ValueError,
         "^n_ratings must be an integer from 10 to 50, got 60$"),
        ({"jump_probability": 1.5}, ValueError, "jump_probability"),
        ({"step_scale": "big"}, TypeError, "step_scale"),
        ({"random_state": "seed"}, TypeError, "random_state"),
        ({"n_factors": 1}, ValueError, "n_factors"),
    ],
)
def test_synthetic_bad_arguments(kwargs: dict, error: type[Exception], match: str) -> None:
    with pytest.raises(error, match=match):
        make_synthetic(**kwargs)


# ---------------------------------------------------------------------------- bad ratings
@pytest.fixture(scope="module")
def small() -> Dataset:
    return make_synthetic(30, 40, 600, random_state=3)


def _with(data: Dataset, column: str, value: float, row: int = 4) -> Dataset:
    ratings = data.ratings.loc[:, ["user_id", "item_id", "rating", "timestamp"]].astype(
        {column: np.float64})
    ratings.loc[ratings.index[row], column] = value
    return Dataset.from_frames(ratings, data.items, data.users, data.genre_names)


@pytest.mark.parametrize("value", [np.nan, np.inf, -np.inf, 9.0, 0.0, -1.0, 5.5, 0.25])
def test_from_frames_refuses_a_rating_off_the_scale(small: Dataset, value: float) -> None:
    user, item = small.ratings.loc[4, ["user_id", "item_id"]]
    match = (rf"ratings row 4 \(user_id {user}, item_id {item}\): rating {value!r}; each must "
             r"be a finite number within the rating scale \[0\.5, 5\]")
    with pytest.raises(ValueError, match=match):
        _with(small, "rating", value)


@pytest.mark.parametrize("arm", ["svd", "cooccurrence", "popularity"])
def test_no_arm_fits_a_nan_or_negative_rating(small: Dataset, arm: str) -> None:
    # SVD used to recommend item -1 at score -inf; co-occurrence raised a misleading
    # OverflowError ("lower the weights or the half_life"). Both now stop at the data.
    from arms import make_arm

    for value in (np.nan, -1.0):
        with pytest.raises(ValueError, match="rating scale"):
            make_arm(arm, random_state=0).fit(_with(small, "rating", value))


def test_rating_scale_is_a_field_kept_by_new_ratings(small: Dataset) -> None:
    assert small.rating_scale == (1.0, 5.0)  # synthetic: whole stars, as MovieLens 100K
    ratings = small.ratings.assign(rating=small.ratings["rating"] * 2)  # 2-10
    narrow = Dataset.from_frames(ratings, small.items, small.users, small.genre_names,
                                 rating_scale=(2, 10))
    assert narrow.rating_scale == (2.0, 10.0)
    assert narrow.subset(np.arange(narrow.n_ratings) < 10).rating_scale == (2.0, 10.0)
    with pytest.raises(ValueError, match=r"rating 1\.0; .*scale \[2, 10\]"):
        narrow.with_ratings(small.ratings)
    with pytest.raises(ValueError, match="rating_scale must be finite with lowest < highest"):
        Dataset.from_frames(ratings, small.items, small.users, (), rating_scale=(5, 1))


def test_rating_scale_none_takes_any_finite_value_and_only_those(small: Dataset) -> None:
    """An event log's values are not ratings on a scale: ``rating_scale=None`` says so (the
    gate widened a scale to the data's range to pass the check instead)."""
    values = np.resize([-3.0, 0.0, 120.5], small.n_ratings)
    ratings = small.ratings.assign(rating=values)
    events = Dataset.from_frames(ratings, small.items, small.users, (), rating_scale=None)
    assert events.rating_scale is None
    np.testing.assert_array_equal(events.ratings["rating"], values)
    assert events.with_ratings(ratings).rating_scale is None
    assert events.subset(np.arange(events.n_ratings) < 10).rating_scale is None
    for bad in (np.nan, np.inf):
        with pytest.raises(ValueError, match=rf"rating {bad}; each must be a finite number$"):
            Dataset.from_frames(ratings.assign(rating=bad), small.items, small.users, (),
                                rating_scale=None)


@pytest.mark.parametrize("column", ["user_id", "item_id", "timestamp"])
@pytest.mark.parametrize("value", [np.nan, np.inf, 2.5])
def test_from_frames_refuses_a_missing_or_fractional_id_or_timestamp(
    small: Dataset, column: str, value: float
) -> None:
    with pytest.raises(ValueError, match=rf"ratings row 4 \(.*\): {column} {value!r}; each must "
                                         "be a finite whole number"):
        _with(small, column, value)


@pytest.mark.parametrize("column", ["user_id", "item_id", "timestamp"])
def test_from_frames_refuses_a_nullable_integer_na(small: Dataset, column: str) -> None:
    ratings = small.ratings.astype({column: "Int64"})
    ratings.loc[4, column] = pd.NA
    with pytest.raises(ValueError, match=rf"ratings row 4 \(.*\): {column} <NA>; each must be a "
                                         "finite whole number"):
        Dataset.from_frames(ratings, small.items, small.users, small.genre_names)


@pytest.mark.parametrize("kind", ["user_id", "item_id"])
def test_from_frames_refuses_a_repeated_or_missing_catalogue_id(small: Dataset, kind: str
                                                                ) -> None:
    frames = {"user_id": small.users, "item_id": small.items}
    twice = pd.concat([frames[kind], frames[kind].iloc[[2]]])
    gap = frames[kind].set_axis(frames[kind].index.astype(np.float64).where(
        np.arange(len(frames[kind])) != 3, np.nan))
    for catalogue, match in ((twice, rf"the {kind} catalogue holds {kind} 3 more than once"),
                             (gap, rf"the {kind} catalogue holds nan at position 3")):
        given = {**frames, kind: catalogue}
        with pytest.raises(ValueError, match=match):
            Dataset.from_frames(small.ratings, given["item_id"], given["user_id"], ())


# ---------------------------------------------------------------------------- corrupt files
_FLAGS = "|".join("0" * 5 + "1" + "0" * 13)  # 19 genre flags: Comedy
_TINY = {
    "ml-100k": {
        "u.data": "1\t1\t5\t874965758\n1\t2\t3\t876893171\n2\t1\t4\t878542960\n",
        "u.item": f"1|Toy Story (1995)|01-Jan-1995||http://a|{_FLAGS}\n"
                  f"2|GoldenEye (1995)|01-Jan-1995||http://b|{_FLAGS}\n",
        "u.user": "1|24|M|technician|85711\n2|53|F|other|94043\n",
    },
    "ml-1m": {
        "ratings.dat": "1::1::5::978300760\n1::2::3::978300761\n2::1::4::978300762\n",
        "movies.dat": "1::Toy Story (1995)::Comedy\n2::Heat: The Sequel (1995)::Action\n",
        "users.dat": "1::F::1::10::48067\n2::M::56::16::70072\n",
    },
    "ml-20m": {
        "ratings.csv": "userId,movieId,rating,timestamp\n1,1,4.5,978300760\n1,2,0.5,978300761\n"
                       "2,1,4.0,978300762\n",
        "movies.csv": 'movieId,title,genres\n1,"Toy Story (1995)",Comedy\n2,Heat (1995),Action\n',
    },
}


def _tiny_copy(root: Path, variant: str, file: str = "", line: int = 0, text: str = "") -> Path:
    """A tiny copy of ``variant`` under ``root``, line ``line`` of ``file`` replaced by ``text``."""
    folder = root / variant
    folder.mkdir(parents=True)
    for name, content in _TINY[variant].items():
        lines = content.splitlines()
        if name == file:
            lines[line - 1] = text
        (folder / name).write_text("\n".join(lines) + "\n")
    return folder


@pytest.mark.parametrize("variant", list(_TINY))
def test_tiny_copies_load(tmp_path: Path, variant: str) -> None:
    _tiny_copy(tmp_path, variant)
    data = load_movielens(tmp_path, variant=variant, download=False)
    assert (data.n_users, data.n_items, data.n_ratings) == (2, 2, 3)
    # Each release's own scale: whole stars up to 1M, half stars from 10M on (what SVD clips
    # its predictions to: a 0.5 prediction on 100K is no rating of it).
    assert data.rating_scale == ((1.0, 5.0) if variant in ("ml-100k", "ml-1m") else (0.5, 5.0))
    if data.rating_scale[0] == 1.0:
        halves = data.ratings.assign(rating=0.5)
        with pytest.raises(ValueError, match=r"rating 0\.5"):
            data.with_ratings(halves)


@pytest.mark.parametrize(("variant", "file", "line", "text", "message"), [
    ("ml-100k", "u.data", 2, "1\tabc\t3\t881250949", r"line 2: item_id 'abc' is not an integer"),
    ("ml-100k", "u.data", 3, "2\t1\t4", r"line 3: timestamp is missing"),
    ("ml-100k", "u.data", 2, "1\t2\tx\t881250949", r"line 2: rating 'x' is not a number"),
    ("ml-100k", "u.data", 2, "1\t2\t3\t8\t9", r"Expected 4 fields in line 2, saw 5"),
    ("ml-100k", "u.item", 2, f"x2|GoldenEye (1995)|||u|{_FLAGS}", r"line 2: item_id 'x2' is not"),
    ("ml-100k", "u.item", 1, f"1|Toy Story (1995)|||u|{_FLAGS[:-1]}a", r"line 1: Western 'a'"),
    ("ml-100k", "u.user", 2, "2|fifty|F|other|94043", r"line 2: age 'fifty' is not an integer"),
    ("ml-1m", "ratings.dat", 2, "1::abc::3::978300761", r"line 2: item_id 'abc' is not an int"),
    ("ml-1m", "ratings.dat", 3, "2::1::4", r"line 3: timestamp is missing"),
    ("ml-1m", "movies.dat", 2, "x2::Heat (1995)::Action", r"line 2: MovieID 'x2' is not an int"),
    ("ml-1m", "movies.dat", 2, "2 Heat (1995) Action", r"line 2: 1 '::'-separated field\(s\), "
                                                      r"expected at least 3"),
    ("ml-1m", "users.dat", 2, "2::M::56::16", r"line 2: 4 '::'-separated field\(s\), expected 5"),
    ("ml-1m", "users.dat", 2, "2::M::5x6::16::70072", r"line 2: Age '5x6' is not an integer"),
    ("ml-1m", "users.dat", 2, "2::M::56::99::70072", r"line 2: Occupation 99 is not a code 0-20"),
    ("ml-1m", "users.dat", 2, "2::M::1e30::16::70072", r"line 2: Age '1e30' is not an integer"),
    ("ml-1m", "users.dat", 2, "2::M::" + "9" * 90 + "::16::70072",
     r"line 2: Age '9{40}\.\.\.' is not an integer"),
    ("ml-20m", "ratings.csv", 3, "1,abc,0.5,978300761", r"line 3: movieId 'abc' is not an int"),
    ("ml-20m", "ratings.csv", 4, "2,1,4.0", r"line 4: timestamp is missing"),
    ("ml-20m", "movies.csv", 3, "q,Heat (1995),Action", r"line 3: movieId 'q' is not an int"),
])  # fmt: skip
@pytest.mark.parametrize("chunk", [None, 1])
def test_a_corrupt_file_is_named_with_its_line(tmp_path: Path, variant: str, file: str,
                                               line: int, text: str, message: str,
                                               chunk: int | None,
                                               monkeypatch: pytest.MonkeyPatch) -> None:
    # The file is read again in chunks to find the line (whole, a 2-million-row file peaked
    # at 584 MB for it): the same line from any chunk.
    if chunk is not None:
        monkeypatch.setattr("arms.data.files.FAILURE_CHUNK_ROWS", chunk)
    folder = _tiny_copy(tmp_path, variant, file, line, text)
    with pytest.raises(DataFileError, match=rf"^{re.escape(str(folder / file))}: .*{message}"):
        load_movielens(tmp_path, variant=variant, download=False)


def test_whole_numbers_written_as_decimals_load(tmp_path: Path) -> None:
    """Found by review: an age of "1.0" passed the check and then failed in astype with a bare
    "invalid literal for int()"."""
    _tiny_copy(tmp_path, "ml-1m", "users.dat", 2, "2::M::56.0::16::70072")
    data = load_movielens(tmp_path, variant="ml-1m", download=False)
    assert data.users.loc[2, "age"] == 56


@pytest.mark.parametrize(("text", "where", "message"), [
    ("1\t2\tnan\t876893171", "/u.data: line 2 ",
     r"rating nan; each must be a finite number within the rating scale"),
    ("1\t2\t9\t876893171", "/u.data: line 2 ",
     r"rating 9\.0; each must be a finite number within the rating scale"),
    ("1\t3\t4\t876893171", ": ", r"unknown item_id 3"),
])
def test_a_rating_the_dataset_refuses_names_the_folder(tmp_path: Path, text: str, where: str,
                                                       message: str) -> None:
    # A rating off the scale is named by its file and line (the one numbering of the file's
    # messages), an id the catalogue lacks by the folder.
    folder = _tiny_copy(tmp_path, "ml-100k", "u.data", 2, text)
    with pytest.raises(DataFileError, match=rf"^{re.escape(str(folder) + where)}.*{message}"):
        load_movielens(tmp_path, download=False)


def test_clear_run_files_removes_only_the_names_given(tmp_path: Path) -> None:
    from arms.data.files import clear_run_files

    folder = tmp_path / "run"
    assert clear_run_files(folder, ["a.csv"]) == folder and list(folder.iterdir()) == []
    for name in ("a.csv", "b.png", "keep.txt"):
        (folder / name).write_text(name)
    clear_run_files(folder, ["a.csv", "b.png", "absent.json"])
    assert [p.name for p in folder.iterdir()] == ["keep.txt"]


@pytest.mark.parametrize(("variant", "file", "line", "text", "blank"), [
    ("ml-100k", "u.data", 2, "1\t2\t7\t876893171", False),
    ("ml-100k", "u.data", 2, "1\t2\t7\t876893171", True),
    ("ml-1m", "ratings.dat", 3, "2::1::9::978300762", True),
    ("ml-20m", "ratings.csv", 3, "1,2,5.5,978300761", True),
])
def test_a_rating_off_the_scale_is_named_by_its_line(
        tmp_path: Path, variant: str, file: str, line: int, text: str, blank: bool) -> None:
    # Found by a README check: such a rating was "ratings row 1" of the frame, while a rating
    # that is no number on the same line was "line 2": one numbering, the file's 1-based
    # lines (blank lines, which pandas skips, counted).
    folder = _tiny_copy(tmp_path, variant, file, line, text)
    path = folder / file
    if blank:
        lines = path.read_text().splitlines()
        path.write_text("\n".join([*lines[:line - 1], "", *lines[line - 1:]]) + "\n")
    where = line + blank
    with pytest.raises(DataFileError, match=rf"^{re.escape(str(path))}: line {where} \(user_id "
                       r"\d+, item_id \d+\): rating \d+\.\d+; each must be a finite number "
                       r"within the rating scale"):
        load_movielens(tmp_path, variant=variant, download=False)
