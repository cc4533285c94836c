"""MovieLens 1M, 10M and the CSV releases (20M, 25M, 32M): formats, lookup and download.

The real files are not on these machines, so each format is checked on small files written here
byte for byte as GroupLens writes them (separators, encodings, quoting, half stars), and the
download path on a generated zip served from file:// and from a loopback HTTP server. The last
tests run on the real releases when ``RECBANDITS_DATA`` holds them and say why they skip if not.
"""

from __future__ import annotations

import dataclasses
import hashlib
import http.server
import os
import threading
import zipfile
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from arms.data import Dataset, find_movielens, load_movielens, make_synthetic
from arms.data import movielens as ml
from arms.errors import DataFolderError, DataUnavailableError

# ---------------------------------------------------------------------------- generated files
ML1M_FILES = {
    "ratings.dat": (
        "1::1193::5::978300760\n1::3::3::978302109\n2::1193::4::978298413\n"
        "2::2::1::978299000\n6040::1::5::956703932\n"
    ).encode("latin-1"),
    # A title with single colons, a latin-1 accent (é is one byte, 0xE9) and a movie nobody rated.
    "movies.dat": (
        "1::Toy Story (1995)::Animation|Children's|Comedy\n"
        "2::Star Wars: Episode IV - A New Hope (1977)::Action|Adventure|Fantasy|Sci-Fi\n"
        "3::Cité des enfants perdus, La (1995)::Adventure|Sci-Fi\n"
        "1193::One Flew Over the Cuckoo's Nest (1975)::Drama\n"
        "3952::Contender, The (2000)::Drama|Thriller\n"
    ).encode("latin-1"),
    "users.dat": b"1::F::1::10::48067\n2::M::56::16::70072\n6040::M::25::6::11106\n",
}
ML10M_FILES = {
    "ratings.dat": (
        b"1::122::5::838985046\n1::185::4.5::838983525\n7::122::0.5::1049764487\n"
        b"71567::65133::3.5::1230258713\n"
    ),
    # UTF-8 titles, IMAX and the release's "(no genres listed)".
    "movies.dat": (
        "122::Boomerang (1992)::Comedy|Romance\n"
        "185::Net, The (1995)::Action|Crime|Thriller\n"
        "8606::Pull My Daisy (1958)::(no genres listed)\n"
        "65133::Blackadder Back & Forth (1999)::Comedy|IMAX\n"
        "4973::Amélie (Fabuleux destin d'Amélie Poulain, Le) (2001)::Comedy|Romance\n"
    ).encode(),
}
CSV_FILES = {
    "ratings.csv": (
        b"userId,movieId,rating,timestamp\n1,2,3.5,1112486027\n1,29,4.0,1112484676\n"
        b"3,2,0.5,1439474476\n138493,131262,5.0,1438347015\n"
    ),
    # Quoted titles holding commas and quotes, "Children", no year, no genres, UTF-8.
    "movies.csv": (
        'movieId,title,genres\n'
        '2,"American President, The (1995)",Children|Comedy|Drama|Romance\n'
        '29,"City of Lost Children, The (Cité des enfants perdus, La) (1995)",Adventure|Sci-Fi\n'
        '131262,Innocence (2014),Adventure|Fantasy|Horror\n'
        '140956,"Ready Player One",Action|Sci-Fi|Thriller|IMAX\n'
        '176601,"""Great Performances"" Cats (1998)",(no genres listed)\n'
    ).encode(),
}


def write_release(folder: Path, files: dict[str, bytes]) -> Path:
    folder.mkdir(parents=True, exist_ok=True)
    for name, data in files.items():
        (folder / name).write_bytes(data)
    return folder


def zip_release(path: Path, inner: str, files: dict[str, bytes]) -> Path:
    """An archive laid out like GroupLens' (one top folder), with a file the loader never reads."""
    with zipfile.ZipFile(path, "w", compression=zipfile.ZIP_DEFLATED) as zf:
        for name, data in files.items():
            zf.writestr(f"{inner}/{name}", data)
        zf.writestr(f"{inner}/README.txt", b"not extracted")
    return path


def pin_archive(
    monkeypatch: pytest.MonkeyPatch, variant: str, archive: Path, url: str | None = None
) -> ml.MovieLensVariant:
    """Point ``variant``'s table row at ``archive`` (served at ``url``) with its true digests."""
    data = archive.read_bytes()
    row = dataclasses.replace(
        ml.MOVIELENS_VARIANTS[variant], url=url or archive.as_uri(), size=len(data),
        sha256=hashlib.sha256(data).hexdigest(), md5=hashlib.md5(data).hexdigest(),
    )  # fmt: skip
    monkeypatch.setitem(ml.MOVIELENS_VARIANTS, variant, row)
    return row


@pytest.fixture
def isolated_cache(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """An empty user cache and no RECBANDITS_DATA, so the loader must download."""
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "cache"))
    monkeypatch.delenv("RECBANDITS_DATA", raising=False)
    return tmp_path / "cache" / "recbandits"


@pytest.fixture
def loopback(tmp_path: Path) -> Iterator[tuple[str, Path, list[str]]]:
    """An HTTP server on 127.0.0.1 serving a folder; yields (base URL, folder, paths requested)."""
    served = tmp_path / "served"
    served.mkdir()
    requests: list[str] = []

    class Handler(http.server.SimpleHTTPRequestHandler):
        def __init__(self, *args, **kwargs):
            super().__init__(*args, directory=str(served), **kwargs)

        def log_message(self, format: str, *args: object) -> None:
            requests.append(self.path)

    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield f"http://127.0.0.1:{server.server_address[1]}", served, requests
    finally:
        server.shutdown()
        server.server_close()
        thread.join(timeout=5)


@pytest.fixture(scope="module")
def reference() -> Dataset:
    """A dataset with 100K's schema (the synthetic one matches it column for column)."""
    return make_synthetic(30, 40, 300, random_state=0)


def assert_schema(data: Dataset, reference: Dataset) -> None:
    assert data.ratings.dtypes.to_dict() == reference.ratings.dtypes.to_dict()
    assert list(data.items.columns[:3]) == ["title", "release_date", "imdb_url"]
    assert list(data.items.columns[-2:]) == ["year", "genres"]
    assert list(data.items.columns[3:-2]) == list(data.genre_names)
    assert data.genre_names[: len(ml.ML100K_GENRES)] == ml.ML100K_GENRES
    for column in ("title", "release_date", "imdb_url", "year", "genres", *ml.ML100K_GENRES):
        assert data.items[column].dtype == reference.items[column].dtype, column
    assert list(data.users.columns) == list(reference.users.columns)
    assert data.items.index.name == "item_id" and data.users.index.name == "user_id"
    assert data.items.index.is_monotonic_increasing and data.users.index.is_monotonic_increasing
    # The contiguous index maps back to the raw ids.
    r = data.ratings
    np.testing.assert_array_equal(data.user_ids[r["user_index"]], r["user_id"])
    np.testing.assert_array_equal(data.item_ids[r["item_index"]], r["item_id"])


# ---------------------------------------------------------------------------- the formats
def test_ml1m_format(tmp_path: Path, reference: Dataset) -> None:
    write_release(tmp_path / "ml-1m", ML1M_FILES)
    data = load_movielens(tmp_path, variant="ml-1m", download=False)
    assert data.name == "ml-1m"
    assert (data.n_users, data.n_items, data.n_ratings) == (3, 5, 5)
    assert_schema(data, reference)
    r = data.ratings
    assert r["user_id"].tolist() == [1, 1, 2, 2, 6040]
    assert r["item_id"].tolist() == [1193, 3, 1193, 2, 1]
    assert r["rating"].tolist() == [5, 3, 4, 1, 5]
    assert r["timestamp"].tolist() == [978300760, 978302109, 978298413, 978299000, 956703932]
    items = data.items
    assert items.loc[3, "title"] == "Cité des enfants perdus, La (1995)"
    assert items.loc[2, "title"] == "Star Wars: Episode IV - A New Hope (1977)"
    assert items.loc[1, "genres"] == "Animation|Children's|Comedy"
    assert items.loc[2, ["Action", "Adventure", "Fantasy", "Sci-Fi", "Drama"]].tolist() == [
        True, True, True, True, False,
    ]  # fmt: skip
    assert items["year"].tolist() == [1995, 1977, 1995, 1975, 2000]
    assert items["release_date"].isna().all() and (items["imdb_url"] == "").all()
    assert data.genre_names == ml.ML100K_GENRES  # 1M's 18 genres, in 100K's list and order
    users = data.users
    assert users.loc[1].tolist() == [1, "F", "K-12 student", "48067"]
    assert users.loc[2].tolist() == [56, "M", "self-employed", "70072"]
    assert users.loc[6040, "occupation"] == "doctor/health care"
    assert list(users["occupation"].cat.categories) == list(ml.ML1M_OCCUPATIONS)
    assert users["age"].dtype == np.int64


def test_ml1m_ages_are_the_context_buckets(tmp_path: Path) -> None:
    # 1M's age codes are the lower edges of the buckets envs.context one-hot encodes.
    from envs.context import user_context

    write_release(tmp_path / "ml-1m", ML1M_FILES)
    data = load_movielens(tmp_path, variant="ml-1m", download=False)
    features, names = user_context(data)
    ages = features[:, [i for i, n in enumerate(names) if n.startswith("age:")]]
    np.testing.assert_array_equal(ages.argmax(axis=1), [0, 6, 2])  # <18, 56+, 25-34
    assert features[:, names.index("gender:F")].tolist() == [1.0, 0.0, 0.0]


def test_ml10m_format(tmp_path: Path, reference: Dataset) -> None:
    # GroupLens' 10M archive unpacks to ml-10M100K/; ml-10m/ is accepted too.
    write_release(tmp_path / "ml-10M100K", ML10M_FILES)
    data = load_movielens(tmp_path, variant="ml-10m", download=False)
    assert data.name == "ml-10m"
    assert (data.n_users, data.n_items, data.n_ratings) == (3, 5, 4)
    assert_schema(data, reference)
    assert data.ratings["rating"].tolist() == [5.0, 4.5, 0.5, 3.5]  # half stars kept exactly
    items = data.items
    assert items.loc[4973, "title"] == "Amélie (Fabuleux destin d'Amélie Poulain, Le) (2001)"
    assert data.genre_names == (*ml.ML100K_GENRES, "IMAX")
    assert items.loc[8606, "genres"] == "unknown" and items.loc[8606, "unknown"]
    assert items.loc[65133, "genres"] == "Comedy|IMAX"
    # No users file: the raters, with every demographic missing.
    users = data.users
    assert users.index.tolist() == [1, 7, 71567]
    assert users["age"].dtype == "Int64" and users["age"].isna().all()
    assert users["gender"].isna().all() and users["zip_code"].isna().all()
    assert len(users["occupation"].cat.categories) == 0


def test_ml10m_latin1_titles_fall_back(tmp_path: Path) -> None:
    latin1 = ML10M_FILES["movies.dat"].decode().encode("latin-1")
    files = {**ML10M_FILES, "movies.dat": latin1}
    write_release(tmp_path / "ml-10m", files)
    data = load_movielens(tmp_path, variant="ml-10m", download=False)
    assert data.items.loc[4973, "title"].startswith("Amélie")


@pytest.mark.parametrize("variant", ["ml-20m", "ml-25m", "ml-32m"])
def test_csv_format(tmp_path: Path, reference: Dataset, variant: str) -> None:
    write_release(tmp_path / variant, CSV_FILES)
    data = load_movielens(tmp_path, variant=variant, download=False)
    assert data.name == variant
    assert (data.n_users, data.n_items, data.n_ratings) == (3, 5, 4)
    assert_schema(data, reference)
    r = data.ratings
    assert r["rating"].tolist() == [3.5, 4.0, 0.5, 5.0]
    assert r["timestamp"].tolist() == [1112486027, 1112484676, 1439474476, 1438347015]
    items = data.items
    assert items.loc[2, "title"] == "American President, The (1995)"
    assert items.loc[29, "title"] == (
        "City of Lost Children, The (Cité des enfants perdus, La) (1995)"
    )
    assert items.loc[176601, "title"] == '"Great Performances" Cats (1998)'
    assert items.loc[2, "genres"] == "Children's|Comedy|Drama|Romance"  # 100K's spelling
    assert items.loc[176601, "genres"] == "unknown"
    assert items["year"].tolist()[:3] == [1995, 1995, 2014]
    assert pd.isna(items.loc[140956, "year"])
    assert data.genre_names == (*ml.ML100K_GENRES, "IMAX")
    assert data.users["age"].isna().all()


def test_variants_do_not_mistake_each_other(tmp_path: Path) -> None:
    # The CSV releases share file names, so a folder counts only under its own name.
    write_release(tmp_path / "ml-25m", CSV_FILES)
    assert find_movielens(tmp_path, variant="ml-25m", download=False) == tmp_path / "ml-25m"
    assert find_movielens(tmp_path / "ml-25m", variant="ml-25m", download=False) == (
        tmp_path / "ml-25m"
    )
    for other in ("ml-20m", "ml-32m"):
        with pytest.raises(DataUnavailableError, match=f"no {other} files"):
            find_movielens(tmp_path / "ml-25m", variant=other, download=False)
    # 1M without its users file is not 1M.
    files = {k: v for k, v in ML1M_FILES.items() if k != "users.dat"}
    write_release(tmp_path / "x" / "ml-1m", files)
    with pytest.raises(DataUnavailableError, match=r"users\.dat"):
        find_movielens(tmp_path / "x", variant="ml-1m", download=False)


def test_variant_names() -> None:
    assert ml.movielens_variant("movielens").name == "ml-100k"
    assert ml.MOVIELENS_NAMES == (
        "movielens", "ml-100k", "ml-1m", "ml-10m", "ml-20m", "ml-25m", "ml-32m",
    )  # fmt: skip
    with pytest.raises(ValueError, match=r"ml-2m.*did you mean.*allowed: movielens, ml-100k"):
        load_movielens(variant="ml-2m")
    with pytest.raises(TypeError, match="variant must be a string"):
        find_movielens(variant=1)  # type: ignore[arg-type]
    # Every row is well formed: a GroupLens URL named after its folder, both digests pinned.
    for name, row in ml.MOVIELENS_VARIANTS.items():
        assert row.name == name and row.url.endswith(f"/{name}.zip")
        assert row.url.startswith("https://files.grouplens.org/datasets/movielens/")
        assert len(row.sha256) == 64 and len(row.md5) == 32 and row.size > 1_000_000


# ---------------------------------------------------------------------------- lookup order
def test_lookup_order(
    tmp_path: Path, isolated_cache: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    write_release(tmp_path / "env" / "ml-1m", ML1M_FILES)
    write_release(tmp_path / "arg" / "ml-1m", ML1M_FILES)
    write_release(isolated_cache / "ml-1m", ML1M_FILES)
    monkeypatch.setenv("RECBANDITS_DATA", str(tmp_path / "env"))
    assert find_movielens(tmp_path / "arg", variant="ml-1m") == tmp_path / "arg" / "ml-1m"
    assert find_movielens(variant="ml-1m") == tmp_path / "env" / "ml-1m"
    monkeypatch.delenv("RECBANDITS_DATA")  # a folder it names is the one read (test_data.py)
    assert find_movielens(variant="ml-1m") == isolated_cache / "ml-1m"
    monkeypatch.setenv("RECBANDITS_DATA", str(tmp_path / "arg"))  # ml-1m/, not ml-10m/
    with pytest.raises(DataUnavailableError, match=r"the data folder .*arg \(RECBANDITS_DATA; "
                       r"unset it .*\) holds no ml-10m files"):
        find_movielens(variant="ml-10m")


# ---------------------------------------------------------------------------- download
def test_download_from_file_url_verifies_and_is_reused(
    tmp_path: Path, isolated_cache: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    archive = zip_release(tmp_path / "ml-1m.zip", "ml-1m", ML1M_FILES)
    pin_archive(monkeypatch, "ml-1m", archive)
    data = load_movielens(variant="ml-1m")
    assert data.n_ratings == 5 and data.items.loc[3, "title"].startswith("Cité")
    folder = isolated_cache / "ml-1m"
    assert sorted(p.name for p in folder.iterdir()) == sorted(ML1M_FILES)  # README left zipped
    assert not list(isolated_cache.glob("tmp*")), "the temporary download folder must be removed"
    archive.unlink()  # a second load finds the cache and never fetches
    assert load_movielens(variant="ml-1m").n_ratings == 5


def test_download_over_http_unpacks_10m_folder(
    tmp_path: Path,
    isolated_cache: Path,
    monkeypatch: pytest.MonkeyPatch,
    loopback: tuple[str, Path, list[str]],
) -> None:
    base, served, requests = loopback
    archive = zip_release(served / "ml-10m.zip", "ml-10M100K", ML10M_FILES)
    pin_archive(monkeypatch, "ml-10m", archive, url=f"{base}/ml-10m.zip")
    data = load_movielens(variant="ml-10m")
    assert data.ratings["rating"].tolist() == [5.0, 4.5, 0.5, 3.5]
    assert (isolated_cache / "ml-10M100K" / "ratings.dat").is_file()
    assert requests == ["/ml-10m.zip"]
    load_movielens(variant="ml-10m")
    assert requests == ["/ml-10m.zip"], "the cached copy must be reused"


@pytest.mark.parametrize("damage", ["bytes", "size"])
def test_download_checksum_mismatch_leaves_nothing(
    tmp_path: Path,
    isolated_cache: Path,
    monkeypatch: pytest.MonkeyPatch,
    loopback: tuple[str, Path, list[str]],
    damage: str,
) -> None:
    base, served, _ = loopback
    archive = zip_release(served / "ml-20m.zip", "ml-20m", CSV_FILES)
    pin_archive(monkeypatch, "ml-20m", archive, url=f"{base}/ml-20m.zip")
    data = bytearray(archive.read_bytes())
    if damage == "bytes":
        data[len(data) // 2] ^= 0xFF  # same size, different digest
    else:
        data += b"\0"
    archive.write_bytes(bytes(data))
    with pytest.raises(DataUnavailableError, match=r"checksum mismatch for .*ml-20m\.zip"):
        load_movielens(variant="ml-20m")
    assert not (isolated_cache / "ml-20m").exists()
    assert not list(isolated_cache.glob("tmp*"))


def test_offline_error_names_every_option(
    tmp_path: Path, isolated_cache: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    row = dataclasses.replace(
        ml.MOVIELENS_VARIANTS["ml-32m"], url=(tmp_path / "missing.zip").as_uri()
    )
    monkeypatch.setitem(ml.MOVIELENS_VARIANTS, "ml-32m", row)
    with pytest.raises(DataUnavailableError) as excinfo:
        load_movielens(variant="ml-32m")
    for part in ("ml-32m", "--data", "RECBANDITS_DATA", str(isolated_cache), "missing.zip"):
        assert part in str(excinfo.value)
    with pytest.raises(DataUnavailableError, match=r"download disabled.*ml-32m/"):
        load_movielens(variant="ml-32m", download=False)


# ---------------------------------------------------------------------------- the real files
REAL = [v for v in ml.MOVIELENS_VARIANTS if v != "ml-100k"]


@pytest.mark.movielens
@pytest.mark.parametrize("variant", REAL)
def test_real_release_matches_published_counts(variant: str, reference: Dataset) -> None:
    root = os.environ.get("RECBANDITS_DATA")
    row = ml.MOVIELENS_VARIANTS[variant]
    if not root or ml._variant_folder(Path(root), row) is None:
        pytest.skip(
            f"{variant} is not in RECBANDITS_DATA={root or '(unset)'} (expected "
            f"{' or '.join(f + '/' for f in row.folders)} holding {', '.join(row.files)}); "
            "the test never downloads 6-260 MB"
        )
    data = load_movielens(root, variant=variant, download=False)
    assert (data.n_users, data.n_items, data.n_ratings) == (row.n_users, row.n_items,
                                                             row.n_ratings)  # fmt: skip
    assert_schema(data, reference)
    steps = np.unique(data.ratings["rating"].to_numpy())
    assert steps.min() >= 0.5 and steps.max() == 5.0 and np.all(steps * 2 == np.round(steps * 2))
    assert data.items["title"].str.len().min() > 0
    assert data.items["year"].notna().mean() > 0.98  # a few titles carry no "(year)"


# ---------------------------------------------------------------------------- the lab's choice
def write_as_ml1m(data: Dataset, folder: Path) -> Path:
    """``data`` written in MovieLens 1M's exact format (``::``, latin-1, coded demographics)."""
    r = data.ratings
    lines = (r["user_id"].astype(str) + "::" + r["item_id"].astype(str) + "::"
             + r["rating"].astype(int).astype(str) + "::" + r["timestamp"].astype(str))  # fmt: skip
    items, users = data.items, data.users
    movies = items.index.astype(str) + "::" + items["title"] + "::" + items["genres"]
    codes = users["occupation"].cat.codes % len(ml.ML1M_OCCUPATIONS)
    people = (users.index.astype(str) + "::" + users["gender"] + "::" + users["age"].astype(str)
              + "::" + codes.astype(str) + "::" + users["zip_code"])  # fmt: skip
    return write_release(folder / "ml-1m", {
        "ratings.dat": ("\n".join(lines) + "\n").encode("latin-1"),
        "movies.dat": ("\n".join(movies) + "\n").encode("latin-1"),
        "users.dat": ("\n".join(people) + "\n").encode("latin-1"),
    })  # fmt: skip


@pytest.fixture
def ml1m_home(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[Dataset]:
    """RECBANDITS_DATA holding a small ml-1m/ (80 users, 120 movies); yields its source."""
    from envs import factories

    source = make_synthetic(80, 120, 3000, random_state=4, min_user_ratings=10)
    write_as_ml1m(source, tmp_path / "data")
    monkeypatch.setenv("RECBANDITS_DATA", str(tmp_path / "data"))
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "cache"))
    factories._movielens.cache_clear()  # keyed by (variant, data_dir): RECBANDITS_DATA moved
    yield source
    factories._movielens.cache_clear()


def test_ml1m_round_trip_keeps_every_rating(ml1m_home: Dataset) -> None:
    data = load_movielens(variant="ml-1m", download=False)
    columns = ["user_id", "item_id", "rating", "timestamp"]
    pd.testing.assert_frame_equal(data.ratings[columns], ml1m_home.ratings[columns])
    assert data.items["genres"].tolist() == ml1m_home.items["genres"].tolist()
    assert data.users["gender"].tolist() == ml1m_home.users["gender"].tolist()


def test_envs_load_a_release_by_name(ml1m_home: Dataset) -> None:
    import gymnasium

    import envs  # noqa: F401  (registers the ids)
    from envs.factories import resolve_dataset

    data = resolve_dataset("ml-1m", None)
    assert (data.name, data.n_users, data.n_ratings) == ("ml-1m", 80, 3000)
    assert resolve_dataset("ml-1m", None) is data  # cached: the arms are fit once
    env = gymnasium.make("recbandits/FixedCTR-v0", dataset="ml-1m", arms=["popularity"],
                         ctr=[0.1])  # fmt: skip
    np.testing.assert_array_equal(env.unwrapped.simulator.user_ids, ml1m_home.user_ids)
    with pytest.raises(ValueError, match="unknown MovieLens variant 'ml-2m'"):
        resolve_dataset("ml-2m", None)


def test_simulate_runs_on_a_release_named_on_the_command_line(
    ml1m_home: Dataset, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    import tomllib

    from experiments.cli import main

    out = tmp_path / "run"
    code = main(["simulate", "movielens", "--dataset", "ml-1m", "--horizon", "20", "--runs", "2",
                 "--workers", "1", "--policies", "Thompson Sampling", "--no-plots", "-q",
                 "--out", str(out)])  # fmt: skip
    assert code == 0, capsys.readouterr().err
    written = tomllib.loads((out / "config.toml").read_text(encoding="utf-8"))
    assert written["env"]["params"]["dataset"] == "ml-1m"
    assert written["name"] == "ml-1m"  # the run is named after the release, not "movielens"
    assert "MovieLens 1M users" in written["description"]


def test_simulate_names_the_release_it_could_not_find(
    tmp_path: Path, isolated_cache: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    from experiments import config as cfg
    from experiments import simulate

    row = dataclasses.replace(ml.MOVIELENS_VARIANTS["ml-20m"], url=(tmp_path / "x.zip").as_uri())
    monkeypatch.setitem(ml.MOVIELENS_VARIANTS, "ml-20m", row)
    real = simulate._synthetic
    small = (("min_user_ratings", 10), ("n_items", 120), ("n_ratings", 3000), ("n_users", 80))
    monkeypatch.setattr(simulate, "_synthetic", lambda options: real(options or small))
    config = cfg.load("movielens")
    params = {**config.env.params, "dataset": "ml-20m", "arms": ["popularity"]}
    config = dataclasses.replace(config, env=dataclasses.replace(config.env, params=params))
    info = simulate.probe_env(config)
    assert info.params["dataset"] == "synthetic"
    assert info.notes == ("MovieLens 20M not available; running on the synthetic dataset "
                          "instead (--data or RECBANDITS_DATA: a folder holding ml-20m/ to use "
                          "it)",)
    with pytest.raises(cfg.ConfigError, match=r"dataset must be one of movielens, ml-100k, "
                       r"ml-1m, ml-10m, ml-20m, ml-25m, ml-32m, synthetic, got 'ml-2m'"):
        simulate.env_kwargs({"dataset": "ml-2m"}, 10)


def test_simulate_reads_the_folder_the_variable_names_or_refuses(
    tmp_path: Path, isolated_cache: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    # Found by a README check: RECBANDITS_DATA naming no folder fell back to synthetic data,
    # exit 0, where --data naming it was refused; both are refused now (no fallback).
    from experiments import config as cfg
    from experiments import simulate

    monkeypatch.setenv("RECBANDITS_DATA", str(tmp_path / "nonexistent"))
    config = cfg.load("movielens")
    params = {**config.env.params, "dataset": "ml-1m", "arms": ["popularity"]}
    config = dataclasses.replace(config, env=dataclasses.replace(config.env, params=params))
    with pytest.raises(DataFolderError, match=r"nonexistent \(RECBANDITS_DATA; unset it to "
                       r"use the user cache or the download\) does not exist"):
        simulate.probe_env(config)


def test_evaluate_arms_on_a_release(
    ml1m_home: Dataset, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    from experiments.cli import main

    code = main(["evaluate-arms", "--dataset", "ml-1m", "--arms", "popularity", "--no-tune",
                 "--seeds", "1", "--jobs", "1", "--out", str(tmp_path / "eval")])  # fmt: skip
    printed = capsys.readouterr().out
    assert code == 0
    assert "evaluate-arms on Dataset(name='ml-1m', n_users=80, n_items=120, n_ratings=3000)" in (
        printed
    )
    with pytest.raises(SystemExit):  # one source of data: a release or a synthetic size
        main(["evaluate-arms", "--dataset", "ml-1m", "--synthetic", "5000"])
    assert "not allowed with argument" in capsys.readouterr().err
