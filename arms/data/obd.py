"""The Open Bandit Dataset (ZOZOTOWN): find it, download it once, parse one logged policy's rounds.

Layout (the same for the small sample shipped with Open Bandit Pipeline and for the full release)::

    <root>/<behavior_policy>/<campaign>/<campaign>.csv        # random | bts ; all | men | women
    <root>/<behavior_policy>/<campaign>/item_context.csv
    <root>/bts_prior.yaml                                     # sample only (see below)

Each ``<campaign>.csv`` row is one impression: ``timestamp``, ``item_id`` (0..n_items-1),
``position`` (1..3), ``click``, ``propensity_score`` (probability of that item at that position
under the logging policy), four hashed ``user_feature_*`` columns and ``user-item_affinity_*``.

Where the files come from, in order:

* ``data_dir`` (the CLI's ``--data``): a folder holding the tree above, or a folder holding
  ``obd/`` or ``open_bandit_dataset/``. When given, nothing else is searched.
* ``full=False`` (default): the small sample (10,000 rounds per log) in ``$RECBANDITS_DATA/obd``.
* ``full=True``: the full release (about 26 million rounds) in the user cache
  (``<cache>/open_bandit_dataset``), downloaded once from ZOZO Research and checked against its
  SHA-256 before it is unpacked.

The full dataset is published by ZOZO, Inc. under CC BY 4.0 (Saito, Aihara, Matsutani and Narita,
"Open Bandit Dataset and Pipeline", NeurIPS 2021 Datasets and Benchmarks).
"""

from __future__ import annotations

import logging
import os
import urllib.error
import urllib.request
import zipfile
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pandas as pd

from arms._validation import check_choice
from arms.data.download import download_zip
from arms.data.files import read_table
from arms.data.movielens import cache_dir
from arms.errors import DataFileError, DataUnavailableError

logger = logging.getLogger(__name__)

OBD_URL = "https://research.zozo.com/data_release/open_bandit_dataset.zip"
# Size and SHA-256 of the archive at OBD_URL as recorded by a third party that downloaded it (a
# public repository's data notes; a HEAD request elsewhere reports the same Content-Length). Not
# re-measured here: these machines have no internet. A wrong value makes the download fail
# loudly, never pass silently; pass ``sha256=`` to override.
OBD_ZIP_SHA256 = "e8ec18196582a5937381a1776382ca940689b90a18d2dcd1fb635be6df614d78"
OBD_ZIP_BYTES = 412_931_917
#: Top folder inside the official archive.
OBD_ARCHIVE_FOLDER = "open_bandit_dataset"

BEHAVIOR_POLICIES: tuple[str, ...] = ("random", "bts")
CAMPAIGNS: tuple[str, ...] = ("all", "men", "women")
#: Items per campaign (the same in the sample and the full data).
N_ITEMS: dict[str, int] = {"all": 80, "men": 34, "women": 46}
#: Positions of the recommendation widget.
LEN_LIST = 3

_CORE_COLUMNS = ("timestamp", "item_id", "position", "click", "propensity_score")
_CHUNK = 1 << 20


@dataclass(frozen=True)
class OBDLog:
    """One logged policy's rounds on one campaign.

    Attributes
    ----------
    behavior_policy : str
        "random" or "bts" (Bernoulli Thompson Sampling).
    campaign : str
        "all", "men" or "women".
    n_items : int
        Items of the campaign (actions are ``0..n_items-1``).
    len_list : int
        Positions (3).
    items : ndarray of int64, shape (n,)
        Item shown.
    positions : ndarray of int64, shape (n,)
        Position shown at, **0-based** (the file's 1..3 minus one).
    clicks : ndarray of float64, shape (n,)
        1.0 for a click, else 0.0.
    propensities : ndarray of float64, shape (n,)
        Logging policy's probability of that item at that position, in (0, 1].
    timestamps : pandas.DatetimeIndex, length n
        UTC time of each impression, in file order.
    features : pandas.DataFrame or None
        ``user_feature_*`` and ``user-item_affinity_*`` columns (n rows), when loaded.
    item_context : pandas.DataFrame
        ``item_feature_*`` columns indexed by ``item_id``.
    path : pathlib.Path
        The CSV file read.
    """

    behavior_policy: str
    campaign: str
    n_items: int
    len_list: int
    items: np.ndarray
    positions: np.ndarray
    clicks: np.ndarray
    propensities: np.ndarray
    timestamps: pd.DatetimeIndex
    features: pd.DataFrame | None
    item_context: pd.DataFrame
    path: Path

    @property
    def n_rounds(self) -> int:
        """Number of logged impressions."""
        return int(self.items.size)

    def click_rate(self) -> float:
        """On-policy value of the logging policy: the mean click per impression."""
        return float(self.clicks.mean())


def _obd_root(candidate: Path) -> Path | None:
    """``candidate`` itself or its ``obd/`` / ``open_bandit_dataset/`` child, if it holds a log."""
    for folder in (candidate, candidate / "obd", candidate / OBD_ARCHIVE_FOLDER):
        if any((folder / p / c / f"{c}.csv").is_file() for p in BEHAVIOR_POLICIES
               for c in CAMPAIGNS):
            return folder
    return None


def find_obd(data_dir: str | os.PathLike[str] | None = None, *, full: bool = False,
             download: bool = True, url: str = OBD_URL, sha256: str = OBD_ZIP_SHA256) -> Path:
    """Root folder of an Open Bandit Dataset tree (``<root>/<policy>/<campaign>/...``).

    Parameters
    ----------
    data_dir : path, optional
        A folder holding the tree (or ``obd/`` or ``open_bandit_dataset/`` with it). When given,
        nothing else is searched.
    full : bool, default False
        False: the small sample in ``$RECBANDITS_DATA/obd``. True: the full release in the user
        cache, downloaded there once if absent.
    download : bool, default True
        Whether ``full=True`` may download when the cache has no copy.
    url : str, default :data:`OBD_URL`
        Where the archive is downloaded from (``file://`` URLs work too).
    sha256 : str, default :data:`OBD_ZIP_SHA256`
        Expected SHA-256 (hex) of the archive.

    Raises
    ------
    DataUnavailableError
        No tree where asked, download disabled, the download failed, or the archive's checksum
        does not match (nothing is unpacked then); the message says which option points at a copy.
    """
    if data_dir is not None:
        found = _obd_root(Path(data_dir))
        if found is None:
            raise DataUnavailableError(
                f"--data {data_dir}: no Open Bandit Dataset there (expected "
                "<dir>/{random,bts}/{all,men,women}/<campaign>.csv, possibly under obd/ or "
                f"{OBD_ARCHIVE_FOLDER}/)")
        return found
    if not full:
        env_dir = os.environ.get("RECBANDITS_DATA")
        found = _obd_root(Path(env_dir)) if env_dir else None
        if found is None:
            raise DataUnavailableError(
                f"the Open Bandit Dataset sample is not in RECBANDITS_DATA={env_dir or '(unset)'}"
                " (expected obd/ there): set RECBANDITS_DATA, pass --data DIR, or use the full "
                "dataset (--full, downloaded once into the user cache)")
        return found
    cached = _obd_root(cache_dir() / OBD_ARCHIVE_FOLDER)
    if cached is not None:
        return cached
    hint = (f"pass --data DIR (a folder holding the unzipped {OBD_ARCHIVE_FOLDER}/) or unzip "
            f"{url} into {cache_dir()}")
    if not download:
        raise DataUnavailableError(f"full Open Bandit Dataset not in the cache and download "
                                   f"disabled: {hint}")
    try:
        return download_archive(url, cache_dir(), sha256=sha256, folder=OBD_ARCHIVE_FOLDER)
    except (OSError, urllib.error.URLError, zipfile.BadZipFile, ValueError) as exc:
        raise DataUnavailableError(f"the download of the full Open Bandit Dataset from {url} "
                                   f"failed ({exc}): {hint}") from exc


def download_archive(url: str, target: str | os.PathLike[str], *, sha256: str, folder: str) -> Path:
    """Download the zip at ``url``, check its SHA-256, unpack its ``folder`` into ``target``.

    :func:`arms.data.download.download_zip` with the Open Bandit Dataset's arguments: ``url``
    (https, http or file), ``target`` (created if needed), ``sha256`` (the archive's hex digest)
    and ``folder`` (the archive's top folder; ``target / folder`` is returned). Raises what it
    raises (``ValueError`` on a digest mismatch, nothing unpacked).
    """
    return download_zip(url, Path(target), folder=folder, sha256=sha256)


def load_obd(behavior_policy: str, campaign: str, data_dir: str | os.PathLike[str] | None = None, *,
             full: bool = False, download: bool = True, features: bool = False) -> OBDLog:
    """One logged policy's rounds on one campaign of the Open Bandit Dataset.

    Parameters
    ----------
    behavior_policy : {"random", "bts"}
    campaign : {"all", "men", "women"}
    data_dir, full, download
        Where the files come from; see :func:`find_obd`.
    features : bool, default False
        Also read the user features and user-item affinities (the full release's CSVs are
        large; the off-policy evaluation here does not need them).

    Returns
    -------
    OBDLog

    Raises
    ------
    TypeError, ValueError
        ``behavior_policy`` or ``campaign`` not one of the allowed strings.
    DataUnavailableError
        As :func:`find_obd`; also when the tree lacks this policy and campaign.
    ValueError
        The file breaks the format: a missing column, items outside ``0..n_items-1``,
        positions outside 1..3, clicks other than 0/1, propensities outside (0, 1].
    """
    check_choice("behavior_policy", behavior_policy, BEHAVIOR_POLICIES)
    check_choice("campaign", campaign, CAMPAIGNS)
    root = find_obd(data_dir, full=full, download=download)
    folder = root / behavior_policy / campaign
    path = folder / f"{campaign}.csv"
    if not path.is_file():
        raise DataUnavailableError(f"{path} not found (the tree at {root} lacks "
                                   f"{behavior_policy}/{campaign})")
    try:
        header = pd.read_csv(path, nrows=0, index_col=0).columns
    except (ValueError, pd.errors.EmptyDataError) as exc:  # an empty or unreadable file
        raise DataFileError(f"{path}: {exc}") from exc
    missing = [c for c in _CORE_COLUMNS if c not in header]
    if missing:
        raise DataFileError(f"{path}: missing column(s) {missing}; an Open Bandit Dataset log "
                            f"has {', '.join(_CORE_COLUMNS)}")
    wanted = list(header) if features else list(_CORE_COLUMNS)
    frame = read_table(path, index_col=0, usecols=[0, *[header.get_loc(c) + 1 for c in wanted]],  # type: ignore[operator]  # unique columns: get_loc is an int
                       dtype={"item_id": np.int64, "position": np.int64, "click": np.int64,
                              "propensity_score": np.float64})
    n_items = N_ITEMS[campaign]
    items = frame["item_id"].to_numpy()
    positions = frame["position"].to_numpy() - 1
    clicks = frame["click"].to_numpy()
    propensities = frame["propensity_score"].to_numpy()
    _check_range(items, 0, n_items - 1, "item_id", path)
    _check_range(positions, 0, LEN_LIST - 1, "position (1-based in the file)", path, offset=1)
    _check_range(clicks, 0, 1, "click", path)
    bad = ~((propensities > 0) & (propensities <= 1))
    if bad.any():
        raise DataFileError(f"{path}: propensity_score {propensities[bad][0]!r} at row "
                         f"{int(np.flatnonzero(bad)[0])}; each must lie in (0, 1]")
    try:
        timestamps = pd.DatetimeIndex(pd.to_datetime(frame["timestamp"], utc=True))
    except (ValueError, TypeError, OverflowError) as exc:  # found by review: "yesterday"
        raise DataFileError(f"{path}: a timestamp is not a date and time: "
                            f"{str(exc)[:200]}") from exc
    context_path = folder / "item_context.csv"
    item_context = (pd.read_csv(context_path, index_col=0).set_index("item_id").sort_index()
                    if context_path.is_file() else pd.DataFrame(index=pd.RangeIndex(n_items,
                                                                                 name="item_id")))
    extra = frame.drop(columns=list(_CORE_COLUMNS)) if features else None
    return OBDLog(behavior_policy, campaign, n_items, LEN_LIST, items, positions,
                  clicks.astype(np.float64), propensities, timestamps, extra, item_context, path)


def _check_range(values: np.ndarray, low: int, high: int, name: str, path: Path,
                 offset: int = 0) -> None:
    bad = (values < low) | (values > high)
    if bad.any():
        raise DataFileError(f"{path}: {name} {int(values[bad][0]) + offset} at row "
                         f"{int(np.flatnonzero(bad)[0])}; allowed {low + offset}..{high + offset}")


def load_bts_prior(campaign: str, data_dir: str | os.PathLike[str] | None = None
                   ) -> tuple[np.ndarray, np.ndarray]:
    """The production Bernoulli TS's Beta(alpha, beta) parameters per item (``bts_prior.yaml``).

    The file ships with the sample (Open Bandit Pipeline's ``prior_bts.yaml``), not with the full
    release: it is looked for at the root of ``data_dir``'s tree when one is given, then at the
    root of the sample in ``$RECBANDITS_DATA/obd``.

    Returns
    -------
    alpha, beta : ndarray of float64, shape (n_items,)

    Raises
    ------
    DataUnavailableError
        No ``bts_prior.yaml`` at the tree's root.
    ValueError
        The file lacks the campaign or its lists do not have ``n_items`` positive entries.
    """
    import yaml  # a dependency of dask already; imported here as only this reader needs it

    check_choice("campaign", campaign, CAMPAIGNS)
    roots = [find_obd(data_dir)] if data_dir is not None else []
    env_dir = os.environ.get("RECBANDITS_DATA")
    sample = _obd_root(Path(env_dir)) if env_dir else None
    roots += [sample] if sample is not None else []
    found = [root / "bts_prior.yaml" for root in roots if (root / "bts_prior.yaml").is_file()]
    if not found:
        raise DataUnavailableError(
            f"bts_prior.yaml not found in {', '.join(map(str, roots)) or 'no OBD tree'} (it "
            "ships with the OBD sample: set RECBANDITS_DATA to a folder holding obd/)")
    path = found[0]
    with path.open("rb") as fh:
        spec = yaml.safe_load(fh)
    try:
        alpha = np.asarray(spec[campaign]["alpha"], dtype=np.float64)
        beta = np.asarray(spec[campaign]["beta"], dtype=np.float64)
    except (KeyError, TypeError) as exc:
        raise DataFileError(f"{path}: no {campaign}.alpha / {campaign}.beta lists") from exc
    n_items = N_ITEMS[campaign]
    if alpha.shape != (n_items,) or beta.shape != (n_items,) or (alpha <= 0).any() or (
            beta <= 0).any():
        raise DataFileError(f"{path}: {campaign} needs {n_items} positive alpha and beta values, "
                         f"got shapes {alpha.shape} and {beta.shape}")
    return alpha, beta
