"""MovieLens 100K, 1M, 10M, 20M, 25M and 32M: find them, download them once, parse them.

Every variant is one row of :data:`MOVIELENS_VARIANTS` (archive URL, its SHA-256, size and the MD5
GroupLens publishes beside it, the folder names, the file layout and the published counts); the
finding, downloading and parsing below read that table and nothing else.

Where the files come from, in order: the ``data_dir`` argument (the CLI's ``--data``), the folder
named by ``RECBANDITS_DATA``, the user cache (``$XDG_CACHE_HOME/recbandits`` or
``~/.cache/recbandits``). A folder qualifies if it holds the variant's folder (``ml-1m/``, ...) or
is that folder itself. Failing all three, the official GroupLens archive is downloaded into the
cache, checked against its pinned size, SHA-256 and MD5 before anything is unpacked, and only the
files the loader reads are extracted. The licence forbids redistribution, so the project never
ships the files.

File layouts (``layout`` in the table):

``"100k"``
    ``u.data`` (tab-separated ``user item rating timestamp``), ``u.item`` (``|``-separated, latin-1,
    19 genre flags, release dates), ``u.user`` (``|``-separated demographics).
``"dat"``
    ``ratings.dat`` and ``movies.dat`` with ``::`` between fields (``MovieID::Title::Genres``,
    genres ``|``-separated); 1M's titles are latin-1 and it has ``users.dat``
    (``UserID::Gender::Age::Occupation::Zip-code``, age and occupation as codes); 10M has no users
    file and half-star ratings.
``"csv"``
    ``ratings.csv`` (``userId,movieId,rating,timestamp`` with a header) and ``movies.csv``
    (``movieId,title,genres``, quoted where a title holds a comma), UTF-8, half-star ratings.

Every variant becomes the same :class:`~arms.data.Dataset` schema as 100K. Where a variant lacks
something, the column is kept and holds missing values: no release dates beyond 100K (``year`` is
the title's trailing ``(1995)`` in every release, else the release date's year), and no demographics
beyond 1M (users are the raters, with ``age`` as a nullable ``Int64`` NA, ``gender``/``zip_code``
None, ``occupation`` an empty category). Genres use 100K's names (``Children`` becomes
``Children's``, ``(no genres listed)`` becomes ``unknown``); a genre 100K lacks (``IMAX``) is
appended after them.
"""

from __future__ import annotations

import logging
import os
import urllib.error
import urllib.request
import zipfile
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from arms.data.dataset import RATING_SCALE, WHOLE_STARS, Dataset
from arms.data.download import download_zip
from arms.data.files import line_of_row, read_table, whole_numbers
from arms.errors import (
    DataFileError,
    DataFolderError,
    DataUnavailableError,
    RatingRowError,
    unknown_id_message,
)

logger = logging.getLogger(__name__)

ML100K_GENRES = (
    "unknown", "Action", "Adventure", "Animation", "Children's", "Comedy", "Crime",
    "Documentary", "Drama", "Fantasy", "Film-Noir", "Horror", "Musical", "Mystery", "Romance",
    "Sci-Fi", "Thriller", "War", "Western",
)  # fmt: skip
#: Genre spellings of the later releases mapped onto 100K's names.
GENRE_ALIASES = {"Children": "Children's", "(no genres listed)": "unknown"}
#: ``users.dat`` occupation codes of MovieLens 1M (its README), in code order.
ML1M_OCCUPATIONS = (
    "other", "academic/educator", "artist", "clerical/admin", "college/grad student",
    "customer service", "doctor/health care", "executive/managerial", "farmer", "homemaker",
    "K-12 student", "lawyer", "programmer", "retired", "sales/marketing", "scientist",
    "self-employed", "technician/engineer", "tradesman/craftsman", "unemployed", "writer",
)  # fmt: skip
_BASE_URL = "https://files.grouplens.org/datasets/movielens/"
_CHUNK = 1 << 20


@dataclass(frozen=True)
class MovieLensVariant:
    """One MovieLens release: where to get it, how to check it, how its files are laid out.

    Attributes
    ----------
    name : str
        The id used everywhere (``"ml-1m"``); also the dataset's ``name``.
    folders : tuple of str
        Folder names the files may sit in; the first is the one inside the archive.
    url : str
        The archive's address.
    sha256, md5 : str
        Hex digests of the archive; the MD5 is the one GroupLens publishes in ``<url>.md5``.
    size : int
        The archive's size in bytes.
    layout : {"100k", "dat", "csv"}
        The file format (see the module docstring).
    files : tuple of str
        The files the loader reads; a folder qualifies only if it holds all of them.
    encodings : tuple of str
        Text encodings of the movie titles, tried in order.
    n_users, n_items, n_ratings : int
        Published counts (items: every movie in the movie file, rated or not).
    rating_scale : tuple of float
        The lowest and highest rating of the release: whole stars 1-5 up to 1M, half stars
        0.5-5 from 10M on (the Dataset's ``rating_scale``: what it accepts, and what SVD's
        predictions are clipped to).
    """

    name: str
    folders: tuple[str, ...]
    url: str
    sha256: str
    md5: str
    size: int
    layout: str
    files: tuple[str, ...]
    encodings: tuple[str, ...]
    n_users: int
    n_items: int
    n_ratings: int
    rating_scale: tuple[float, float] = RATING_SCALE

    @property
    def title(self) -> str:
        """The release's usual name, e.g. ``"MovieLens 1M"``."""
        return f"MovieLens {self.name.removeprefix('ml-').upper()}"


# SHA-256 and sizes: TensorFlow Datasets' url_checksums/movielens.txt for 100K, 1M, 20M and 25M;
# for 10M and 32M, pins published by several independent projects, each pairing them with the
# GroupLens MD5 below. The MD5s are GroupLens' own ``.md5`` files. Both digests are checked.
_CSV_FILES = ("ratings.csv", "movies.csv")
MOVIELENS_VARIANTS: dict[str, MovieLensVariant] = {
    v.name: v
    for v in (
        MovieLensVariant(
            "ml-100k", ("ml-100k",), _BASE_URL + "ml-100k.zip",
            "50d2a982c66986937beb9ffb3aa76efe955bf3d5c6b761f4e3a7cd717c6a3229",
            "0e33842e24a9c977be4e0107933c0723", 4_924_029,
            "100k", ("u.data", "u.item", "u.user"), ("latin-1",), 943, 1_682, 100_000,
            WHOLE_STARS,
        ),
        MovieLensVariant(
            "ml-1m", ("ml-1m",), _BASE_URL + "ml-1m.zip",
            "a6898adb50b9ca05aa231689da44c217cb524e7ebd39d264c56e2832f2c54e20",
            "c4d9eecfca2ab87c1945afe126590906", 5_917_549,
            "dat", ("ratings.dat", "movies.dat", "users.dat"), ("latin-1",),
            6_040, 3_883, 1_000_209, WHOLE_STARS,
        ),
        MovieLensVariant(
            "ml-10m", ("ml-10M100K", "ml-10m"), _BASE_URL + "ml-10m.zip",
            "813c411ccb6122564edfe752e7f80c4dcc5aa25fa94c93622f6877a7ba252862",
            "ce571fd55effeba0271552578f2648bd", 65_566_137,
            "dat", ("ratings.dat", "movies.dat"), ("utf-8", "latin-1"),
            69_878, 10_681, 10_000_054,
        ),
        MovieLensVariant(
            "ml-20m", ("ml-20m",), _BASE_URL + "ml-20m.zip",
            "96f243c338a8665f6bcc89c53edf6ee39162a846940de6b7c8c48aeada765ff3",
            "cd245b17a1ae2cc31bb14903e1204af3", 198_702_078,
            "csv", _CSV_FILES, ("utf-8",), 138_493, 27_278, 20_000_263,
        ),
        MovieLensVariant(
            "ml-25m", ("ml-25m",), _BASE_URL + "ml-25m.zip",
            "8b21cfb7eb1706b4ec0aac894368d90acf26ebdfb6aced3ebd4ad5bd1eb9c6aa",
            "6b51fb2759a8657d3bfcbfc42b592ada", 261_978_986,
            "csv", _CSV_FILES, ("utf-8",), 162_541, 62_423, 25_000_095,
        ),
        MovieLensVariant(
            "ml-32m", ("ml-32m",), _BASE_URL + "ml-32m.zip",
            "e4a68655d7386b8f95f2f2424b2ff975dfdd15ffd59e0d864a14dca43e99d6ee",
            "d472be332d4daa821edc399621853b57", 238_950_008,
            "csv", _CSV_FILES, ("utf-8",), 200_948, 87_585, 32_000_204,
        ),
    )
}  # fmt: skip
#: Older names that stay valid: ``movielens`` has always meant 100K.
MOVIELENS_ALIASES = {"movielens": "ml-100k"}
#: Every name :func:`load_movielens` accepts, for command-line choices.
MOVIELENS_NAMES = (*MOVIELENS_ALIASES, *MOVIELENS_VARIANTS)
#: The synthetic dataset's name (:func:`arms.data.make_synthetic`), and every dataset name the
#: commands and the service take: one list (it was written out in four places).
SYNTHETIC = "synthetic"
DATASETS = (*MOVIELENS_NAMES, SYNTHETIC)


def movielens_variant(name: str) -> MovieLensVariant:
    """The table row of ``name`` (``"ml-1m"``, ..., or the alias ``"movielens"`` for 100K).

    Raises
    ------
    TypeError
        If ``name`` is not a string.
    ValueError
        If ``name`` is unknown; the message lists the names allowed.
    """
    if not isinstance(name, str):
        raise TypeError(f"variant must be a string, one of {list(MOVIELENS_NAMES)}, got {name!r}")
    key = MOVIELENS_ALIASES.get(name, name)
    if key not in MOVIELENS_VARIANTS:
        message = unknown_id_message("MovieLens variant", name, MOVIELENS_NAMES)
        raise ValueError(f"{message}; allowed: {', '.join(MOVIELENS_NAMES)}")
    return MOVIELENS_VARIANTS[key]


def cache_dir() -> Path:
    """The user cache folder recbandits downloads into."""
    base = os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache"
    return Path(base) / "recbandits"


def _variant_folder(candidate: Path, variant: MovieLensVariant) -> Path | None:
    """``candidate/<folder>`` or ``candidate`` itself (if so named) when it holds every file."""
    options = [candidate / name for name in variant.folders]
    if candidate.name in variant.folders:
        options.append(candidate)
    for folder in options:
        if all((folder / name).is_file() for name in variant.files):
            return folder
    return None


def find_movielens(
    data_dir: str | os.PathLike[str] | None = None,
    *,
    variant: str = "ml-100k",
    download: bool = True,
) -> Path:
    """Path of a folder holding the files of MovieLens ``variant``, downloading them if needed.

    Parameters
    ----------
    data_dir : path, optional
        A folder holding the variant's folder (``ml-100k/``, ``ml-1m/``, ...) or that folder
        itself. When given, it must hold the files: nothing else is searched. None: the folder
        ``RECBANDITS_DATA`` names, held to the same rule where the variable is set (not
        empty); else the user cache, else the download.
    variant : str, default "ml-100k"
        One of :data:`MOVIELENS_NAMES`.
    download : bool, default True
        Whether to download into the user cache when no copy is found.

    Raises
    ------
    TypeError, ValueError
        For a ``variant`` that is not one of :data:`MOVIELENS_NAMES`.
    DataFolderError
        (a DataUnavailableError) When ``data_dir``, or else ``RECBANDITS_DATA``, names a
        folder that does not exist or lacks the variant's files: the folder named is the one
        read, nothing else is searched.
    DataUnavailableError
        When no copy is found and the download is disabled or fails (including a checksum
        mismatch); the message says which option points at a local copy.
    """
    spec = movielens_variant(variant)
    # A folder named, by the option or by the variable, is the one read: the variable was
    # skipped in silence where it named no folder or one without the release, then the cache
    # or a download was used, and the advice said to set it (found by a README check).
    env_dir = os.environ.get("RECBANDITS_DATA") or None
    named = data_dir if data_dir is not None else env_dir
    if named is not None:
        found = _variant_folder(Path(named), spec)
        if found is None:
            source = "--data, RECBANDITS_DATA" if data_dir is not None else (
                "RECBANDITS_DATA; unset it to use the user cache or the download")
            holds = ("is not a folder" if Path(named).exists() and not Path(named).is_dir()
                     else "does not exist" if not Path(named).is_dir() else
                     f"holds no {spec.name} files (expected {', '.join(spec.files)} in "
                     f"{Path(named) / spec.folders[0]})")
            raise DataFolderError(f"the data folder {named} ({source}) {holds}")
        return found
    found = _variant_folder(cache_dir(), spec)
    if found is not None:
        return found
    hint = (
        f"pass --data DIR (a folder holding {spec.folders[0]}/), set RECBANDITS_DATA=DIR, or "
        f"place the unzipped {spec.folders[0]} folder in {cache_dir()}"
    )
    if not download:
        raise DataUnavailableError(f"{spec.title} not found and download disabled: {hint}")
    try:
        return _download(spec, cache_dir())
    except (OSError, urllib.error.URLError, zipfile.BadZipFile, ValueError) as exc:
        raise DataUnavailableError(
            f"{spec.title} not found and the download from {spec.url} failed ({exc}): {hint}"
        ) from exc


def _download(spec: MovieLensVariant, target: Path) -> Path:
    """Fetch, verify and unpack ``spec``'s archive into ``target/<folder>``; returns the folder.

    Raises ``ValueError`` on a size or checksum mismatch, before anything is unpacked.
    """
    logger.info("downloading %s", spec.title)
    return download_zip(spec.url, target, folder=spec.folders[0], sha256=spec.sha256,
                        md5=spec.md5, size=spec.size, members=spec.files)


def load_movielens(
    data_dir: str | os.PathLike[str] | None = None,
    *,
    variant: str = "ml-100k",
    download: bool = True,
) -> Dataset:
    """Load MovieLens ``variant`` as a :class:`Dataset` (100K by default).

    Sizes (users, movies, ratings): 100K 943 / 1,682 / 100,000; 1M 6,040 / 3,883 / 1,000,209;
    10M 69,878 / 10,681 / 10,000,054; 20M 138,493 / 27,278 / 20,000,263; 25M 162,541 / 62,423 /
    25,000,095; 32M 200,948 / 87,585 / 32,000,204. The ratings frame takes 36 bytes a rating
    (1.15 GB for 32M), and parsing briefly needs about twice that.

    See :func:`find_movielens` for the parameters, where the files come from and what is raised;
    the module docstring describes each file format and what fills the columns a variant lacks.
    A malformed file raises ``ValueError`` naming it and, where known, the line; a rating that
    :meth:`Dataset.from_frames` refuses raises its ``ValueError`` after the folder's path.

    Parameters
    ----------
    data_dir : path-like or None, default None
    variant : str, default "ml-100k"
    download : bool, default True
        As in :func:`find_movielens`.
    """
    spec = movielens_variant(variant)
    folder = find_movielens(data_dir, variant=spec.name, download=download)
    reader = {"100k": _read_100k, "dat": _read_dat, "csv": _read_csv}[spec.layout]
    ratings, (items, genre_names), users = reader(folder, spec)
    if ratings.empty:  # found by attack: every command then failed in its own words, or not
        raise DataFileError(f"{folder / spec.files[0]}: holds no rating")
    if users is None:
        users = _anonymous_users(ratings["user_id"])
    try:
        return Dataset.from_frames(ratings, items, users, genre_names, name=spec.name,
                                   rating_scale=spec.rating_scale)
    except RatingRowError as exc:  # named by its line, as a value that is no number is
        path = folder / spec.files[0]
        line = line_of_row(path, exc.position, **_RATINGS_FILE_OPTIONS[spec.layout])
        raise DataFileError(f"{path}: line {line} {exc.detail}") from exc
    except ValueError as exc:
        raise DataFileError(f"{folder}: {exc}") from exc


# ---------------------------------------------------------------------- the three layouts
_RATING_DTYPES = {"user_id": np.int64, "item_id": np.int64, "rating": np.float32,
                  "timestamp": np.int64}  # fmt: skip
_RATING_NAMES = list(_RATING_DTYPES)
#: How each layout's ratings file is split (besides its dtypes): what reads it and what names
#: a rating's line in it (:func:`arms.data.files.line_of_row`) agree.
_RATINGS_FILE_OPTIONS: dict[str, dict[str, Any]] = {
    "100k": {"sep": "\t", "names": _RATING_NAMES},
    "dat": {"sep": ":", "header": None, "usecols": [0, 2, 4, 6]},
    "csv": {},
}
#: ratings, (items, genre names), users (None where the release has no users file)
Frames = tuple[pd.DataFrame, tuple[pd.DataFrame, tuple[str, ...]], pd.DataFrame | None]


def _read_100k(folder: Path, spec: MovieLensVariant) -> Frames:
    ratings = read_table(folder / "u.data", dtype=_RATING_DTYPES, **_RATINGS_FILE_OPTIONS["100k"])
    item_columns = ["item_id", "title", "release_date", "video_release_date", "imdb_url",
                    *ML100K_GENRES]  # fmt: skip
    raw = read_table(folder / "u.item", sep="|", names=item_columns, encoding=spec.encodings[0],
                     index_col="item_id", dtype={"item_id": np.int64,
                                                 **dict.fromkeys(ML100K_GENRES, np.int64)})
    release = pd.to_datetime(raw["release_date"], format="%d-%b-%Y", errors="coerce")
    genres = raw.loc[:, list(ML100K_GENRES)].astype(bool)
    items = _items_frame(raw.index, raw["title"], genres, release_date=release,
                         imdb_url=raw["imdb_url"])  # fmt: skip
    users = read_table(
        folder / "u.user",
        sep="|",
        names=["user_id", "age", "gender", "occupation", "zip_code"],
        dtype={"user_id": np.int64, "age": np.int64, "gender": str, "occupation": "category",
               "zip_code": str},
        index_col="user_id",
    ).sort_index()
    return ratings, items, users


def _read_dat(folder: Path, spec: MovieLensVariant) -> Frames:
    # "1::1193::5::978300760" split on single colons puts the fields in columns 0, 2, 4 and 6;
    # pandas' C parser takes one-character separators only, and the Python one is ~20x slower.
    ratings = read_table(
        folder / "ratings.dat", **_RATINGS_FILE_OPTIONS["dat"],
        dtype={0: np.int64, 2: np.int64, 4: np.float32, 6: np.int64},
        labels=dict(zip([0, 2, 4, 6], _RATING_NAMES, strict=True)),
    )  # fmt: skip
    ratings.columns = _RATING_NAMES
    # Titles may hold single colons ("Star Wars: Episode IV"), so the small files are split on
    # "::" itself: the id before the first, the genres after the last.
    path = folder / "movies.dat"
    lines = _lines(path, spec.encodings, fields=(3, None))
    head = lines.str.split("::", n=1, expand=True)
    tail = head[1].str.rsplit("::", n=1, expand=True)
    item_ids = pd.Index(whole_numbers(head[0], path, "MovieID"), name="item_id")
    items = _items_frame(item_ids, tail[0], _genre_flags(tail[1]))
    users = None
    if "users.dat" in spec.files:
        path = folder / "users.dat"
        fields = _lines(path, spec.encodings, fields=(5, 5)).str.split("::", expand=True)
        codes = whole_numbers(fields[3], path, "Occupation")
        out_of_range = (codes < 0) | (codes >= len(ML1M_OCCUPATIONS))
        if out_of_range.any():
            line = codes.index[out_of_range][0]
            raise DataFileError(f"{path}: line {line}: Occupation {codes[line]} is not a code "
                             f"0-{len(ML1M_OCCUPATIONS) - 1}")
        occupation = pd.Categorical.from_codes(codes,  # type: ignore[call-overload]  # pandas-stubs wants an Index of categories; pandas takes a list
                                               categories=list(ML1M_OCCUPATIONS))  # fmt: skip
        users = pd.DataFrame(
            {"age": whole_numbers(fields[2], path, "Age").to_numpy(),
             "gender": fields[1].astype(str).to_numpy(),
             "occupation": occupation,
             "zip_code": fields[4].astype(str).to_numpy()},
            index=pd.Index(whole_numbers(fields[0], path, "UserID"), name="user_id"),
        ).sort_index()  # fmt: skip
    return ratings, items, users


def _read_csv(folder: Path, spec: MovieLensVariant) -> Frames:
    ratings = read_table(
        folder / "ratings.csv", **_RATINGS_FILE_OPTIONS["csv"],
        dtype={"userId": np.int64, "movieId": np.int64, "rating": np.float32,
               "timestamp": np.int64},
    ).rename(columns={"userId": "user_id", "movieId": "item_id"})  # fmt: skip
    movies = read_table(folder / "movies.csv", dtype={"movieId": np.int64, "title": str,
                                                        "genres": str},
                         encoding=spec.encodings[0], keep_default_na=False)  # fmt: skip
    item_ids = pd.Index(movies["movieId"], name="item_id")
    items = _items_frame(item_ids, movies["title"], _genre_flags(movies["genres"]))
    return ratings.loc[:, _RATING_NAMES], items, None


# ---------------------------------------------------------------------- shared pieces
def _lines(path: Path, encodings: tuple[str, ...], *, fields: tuple[int, int | None]
           ) -> pd.Series:
    """Non-empty lines of a small text file, decoded with the first encoding that fits, indexed
    by their 1-based line numbers; each must hold ``fields`` (least, most or None) ``::``-fields.
    """
    raw = path.read_bytes()
    for encoding in encodings[:-1]:
        try:
            text = raw.decode(encoding)
            break
        except UnicodeDecodeError:
            continue
    else:
        text = raw.decode(encodings[-1])
    lines = pd.Series(text.splitlines(), dtype=object)
    lines.index += 1
    lines = lines[lines.str.len() > 0]
    count = lines.str.count("::") + 1
    least, most = fields
    bad = (count < least) | (count > (most if most is not None else count))
    if bad.any():
        line = lines.index[bad][0]
        allowed = f"{least}" if least == most else f"at least {least}"
        raise DataFileError(f"{path}: line {line}: {count[line]} '::'-separated field(s), "
                         f"expected {allowed}")
    return lines


def _genre_flags(genres: pd.Series) -> pd.DataFrame:
    """``|``-separated genres as bool flags: 100K's genres in its order, then any others."""
    flags = genres.fillna("").str.get_dummies(sep="|").astype(bool)
    flags = flags.T.groupby(lambda g: GENRE_ALIASES.get(g, g)).any().T  # merge aliased names
    extra = sorted(set(flags.columns) - set(ML100K_GENRES))
    flags = flags.reindex(columns=[*ML100K_GENRES, *extra], fill_value=False)
    return flags.set_axis(genres.index)


def _items_frame(
    item_ids: pd.Index,
    titles: pd.Series,
    flags: pd.DataFrame,
    *,
    release_date: pd.Series | None = None,
    imdb_url: pd.Series | None = None,
) -> tuple[pd.DataFrame, tuple[str, ...]]:
    """The items frame of the :class:`Dataset` schema, sorted by raw id, and its genre names.

    Columns in 100K's order: ``title``, ``release_date``, ``imdb_url`` (empty where unknown), one
    bool column per genre, ``year`` (Int64), ``genres``.

    ``year`` is the title's trailing ``(1995)`` (``(2006-2007)`` gives its first year; a note such
    as ``(V)`` may follow it), else the year of ``release_date``, else missing: the one rule for
    every release. The title comes first because 100K dates some films by a later release (Fargo
    (1996) is dated 14-Feb-1997, Return of the Jedi (1983) 14-Mar-1997).
    """
    titles = pd.Series(np.asarray(titles, dtype=object), index=item_ids).astype(str)
    if release_date is None:  # the unit pandas gives u.item's parsed dates, so dtypes match
        release_date = pd.Series(pd.NaT, index=item_ids, dtype="datetime64[us]")
    # A trailing note without digits may follow the year: "... Giving (1995) (V)".
    year = (titles.str.extract(r"\((\d{4})[^()]*\)(?:\s*\([^()\d]*\))*\s*$", expand=False)
            .astype(float)
            .fillna(pd.Series(release_date.dt.year.to_numpy(dtype=float), index=item_ids)))
    flag_values = flags.to_numpy(dtype=bool)
    names = np.array(flags.columns, dtype=object)
    if imdb_url is None:
        imdb_url = pd.Series("", index=item_ids).astype(str)
    items = pd.DataFrame(
        {"title": titles.to_numpy(), "release_date": release_date.to_numpy(),
         "imdb_url": imdb_url.to_numpy()},
        index=item_ids,
    )
    items[list(names)] = flag_values
    items["year"] = pd.array(np.asarray(year, dtype=float), dtype="Int64")
    items["genres"] = ["|".join(names[row]) for row in flag_values]
    return items.sort_index(), tuple(str(n) for n in names)


def _anonymous_users(user_ids: pd.Series) -> pd.DataFrame:
    """Users of a release without demographics: the raters, every demographic missing."""
    index = pd.Index(np.unique(user_ids.to_numpy()), name="user_id")
    n = len(index)
    return pd.DataFrame(
        {"age": pd.array([pd.NA] * n, dtype="Int64"),
         "gender": pd.Series([None] * n, dtype=object).to_numpy(),
         "occupation": pd.Categorical([None] * n, categories=[]),
         "zip_code": pd.Series([None] * n, dtype=object).to_numpy()},
        index=index,
    )  # fmt: skip
