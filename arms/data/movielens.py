"""MovieLens 100K: find it, download it once, parse it into a :class:`Dataset`.

The files are looked for, in order, in the ``data_dir`` argument (the CLI's ``--data``), the
folder named by ``RECBANDITS_DATA``, and the user cache (``$XDG_CACHE_HOME/recbandits`` or
``~/.cache/recbandits``); a folder may be the ``ml-100k`` folder itself or one holding it. Failing
all three, the official GroupLens archive is downloaded into the cache and ``u.data`` is checked
against its published size and md5. The licence forbids redistribution, so the project never ships
the files.
"""

from __future__ import annotations

import hashlib
import logging
import os
import shutil
import tempfile
import urllib.error
import urllib.request
import zipfile
from pathlib import Path

import numpy as np
import pandas as pd

from arms.data.dataset import Dataset
from arms.errors import DataUnavailableError

logger = logging.getLogger(__name__)

ML100K_URL = "https://files.grouplens.org/datasets/movielens/ml-100k.zip"
ML100K_UDATA_MD5 = "6e47046882bad158b0efbb84cd5cb987"
ML100K_UDATA_BYTES = 1_979_173
REQUIRED_FILES = ("u.data", "u.item", "u.user")
ML100K_GENRES = (
    "unknown", "Action", "Adventure", "Animation", "Children's", "Comedy", "Crime",
    "Documentary", "Drama", "Fantasy", "Film-Noir", "Horror", "Musical", "Mystery", "Romance",
    "Sci-Fi", "Thriller", "War", "Western",
)  # fmt: skip


def cache_dir() -> Path:
    """The user cache folder recbandits downloads into."""
    base = os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache"
    return Path(base) / "recbandits"


def _ml100k_folder(candidate: Path) -> Path | None:
    for folder in (candidate / "ml-100k", candidate):
        if all((folder / name).is_file() for name in REQUIRED_FILES):
            return folder
    return None


def find_movielens(data_dir: str | os.PathLike | None = None, *, download: bool = True) -> Path:
    """Path of a folder holding the MovieLens 100K files, downloading them if needed.

    Parameters
    ----------
    data_dir : path, optional
        A folder holding ``ml-100k/`` (or the ``ml-100k`` folder itself). When given, it must hold
        the files: nothing else is searched.
    download : bool, default True
        Whether to download into the user cache when no copy is found.

    Raises
    ------
    DataUnavailableError
        When no copy is found and the download is disabled or fails; the message says which
        option points at a local copy.
    """
    if data_dir is not None:
        found = _ml100k_folder(Path(data_dir))
        if found is None:
            raise DataUnavailableError(
                f"--data {data_dir}: no MovieLens 100K files there (expected "
                f"{', '.join(REQUIRED_FILES)} in {Path(data_dir) / 'ml-100k'})"
            )
        return found
    env_dir = os.environ.get("RECBANDITS_DATA")
    if env_dir:
        found = _ml100k_folder(Path(env_dir))
        if found is not None:
            return found
        logger.warning("RECBANDITS_DATA=%s holds no ml-100k folder; trying the cache", env_dir)
    found = _ml100k_folder(cache_dir())
    if found is not None:
        return found
    hint = (
        "pass --data DIR (a folder holding ml-100k/), set RECBANDITS_DATA=DIR, or place the "
        f"unzipped ml-100k folder in {cache_dir()}"
    )
    if not download:
        raise DataUnavailableError(f"MovieLens 100K not found and download disabled: {hint}")
    try:
        return _download(cache_dir())
    except (OSError, urllib.error.URLError, zipfile.BadZipFile, ValueError) as exc:
        raise DataUnavailableError(
            f"MovieLens 100K not found and the download from {ML100K_URL} failed ({exc}): {hint}"
        ) from exc


def _download(target: Path) -> Path:
    target.mkdir(parents=True, exist_ok=True)
    logger.info("downloading MovieLens 100K from %s into %s", ML100K_URL, target)
    with tempfile.TemporaryDirectory(dir=target) as tmp:
        archive = Path(tmp) / "ml-100k.zip"
        with urllib.request.urlopen(ML100K_URL, timeout=60) as response, archive.open("wb") as out:
            shutil.copyfileobj(response, out)
        with zipfile.ZipFile(archive) as zf:
            zf.extractall(tmp)
        udata = Path(tmp) / "ml-100k" / "u.data"
        digest = hashlib.md5(udata.read_bytes()).hexdigest()
        if udata.stat().st_size != ML100K_UDATA_BYTES or digest != ML100K_UDATA_MD5:
            raise ValueError(f"u.data checksum mismatch (md5 {digest}, want {ML100K_UDATA_MD5})")
        final = target / "ml-100k"
        if final.exists():
            shutil.rmtree(final)
        # Rename inside one filesystem so a concurrent reader never sees half a folder.
        (Path(tmp) / "ml-100k").rename(final)
    return final


def load_movielens(
    data_dir: str | os.PathLike | None = None, *, download: bool = True
) -> Dataset:
    """Load MovieLens 100K (943 users, 1,682 movies, 100,000 ratings) as a :class:`Dataset`.

    See :func:`find_movielens` for where the files come from and what is raised.
    """
    folder = find_movielens(data_dir, download=download)
    ratings = pd.read_csv(
        folder / "u.data",
        sep="\t",
        names=["user_id", "item_id", "rating", "timestamp"],
        dtype={"user_id": np.int64, "item_id": np.int64, "rating": np.float32,
               "timestamp": np.int64},
    )
    item_columns = ["item_id", "title", "release_date", "video_release_date", "imdb_url",
                    *ML100K_GENRES]
    items = pd.read_csv(
        folder / "u.item", sep="|", names=item_columns, encoding="latin-1", index_col="item_id"
    )
    items = items.drop(columns=["video_release_date"])
    items["title"] = items["title"].astype(str)
    items["release_date"] = pd.to_datetime(items["release_date"], format="%d-%b-%Y",
                                           errors="coerce")
    items["year"] = items["release_date"].dt.year.astype("Int64")
    flags = items.loc[:, list(ML100K_GENRES)].astype(bool)
    items[list(ML100K_GENRES)] = flags
    genre_array = np.array(ML100K_GENRES, dtype=object)
    items["genres"] = ["|".join(genre_array[row]) for row in flags.to_numpy()]
    items = items.sort_index()
    users = pd.read_csv(
        folder / "u.user",
        sep="|",
        names=["user_id", "age", "gender", "occupation", "zip_code"],
        dtype={"user_id": np.int64, "age": np.int64, "gender": str, "occupation": "category",
               "zip_code": str},
        index_col="user_id",
    ).sort_index()
    return Dataset.from_frames(ratings, items, users, ML100K_GENRES, name="ml-100k")
