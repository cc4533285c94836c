"""The :class:`Dataset` every part of recbandits passes around.

A dataset is ratings plus the catalogue of users and items they refer to. Both id spaces get a
contiguous index that is fixed by the catalogue (``users`` and ``items``), not by the ratings, so
every split of a dataset shares the same indices and a model fit on one split can be evaluated on
another without re-mapping.
"""

from __future__ import annotations

from dataclasses import dataclass, field, replace
from functools import cached_property
from typing import NoReturn

import numpy as np
import pandas as pd
import scipy.sparse as sp

from arms.errors import RatingRowError, unknown_id_message

RATING_COLUMNS = ("user_id", "item_id", "rating", "timestamp")
#: Half stars, 0.5-5 (MovieLens from 10M on): the default rating scale, lowest and highest
#: allowed rating, wide enough for every loader (serving's feedback ratings are 1-5).
RATING_SCALE = (0.5, 5.0)
#: Whole stars, 1-5 (MovieLens 100K and 1M, the synthetic data).
WHOLE_STARS = (1.0, 5.0)


@dataclass(frozen=True, eq=False)
class Dataset:
    """Ratings with the users and items they refer to.

    Attributes
    ----------
    ratings : pandas.DataFrame
        One row per rating with columns ``user_id`` (int64, raw id), ``item_id`` (int64, raw id),
        ``rating`` (float32: whole stars 1-5 in MovieLens 100K and 1M, half stars 0.5-5 from 10M
        on), ``timestamp`` (int64, seconds since the epoch), ``user_index``
        and ``item_index`` (int32, contiguous indices into ``users`` and ``items``).
    items : pandas.DataFrame
        Indexed by raw ``item_id`` in index order; columns ``title`` (str), ``release_date``
        (datetime64, NaT where unknown), ``year`` (Int64), ``genres`` (str, ``|``-separated) and
        one bool column per name in ``genre_names``.
    users : pandas.DataFrame
        Indexed by raw ``user_id`` in index order; columns ``age`` (int), ``gender`` (``"M"`` or
        ``"F"``), ``occupation`` (category), ``zip_code`` (str).
    genre_names : tuple of str
        The genre flag columns of ``items``, in order.
    name : str
        Where the data came from, e.g. ``"ml-100k"``, ``"ml-20m"`` or ``"synthetic"``.
    rating_scale : tuple of float, or None
        The lowest and highest rating allowed, both inclusive (default :data:`RATING_SCALE`);
        None: any finite value (events whose value is whatever their source logs).
    """

    ratings: pd.DataFrame
    items: pd.DataFrame
    users: pd.DataFrame
    genre_names: tuple[str, ...]
    name: str = "dataset"
    rating_scale: tuple[float, float] | None = RATING_SCALE
    _cache: dict[tuple[str, bool], sp.csr_matrix] = field(default_factory=dict, repr=False,
                                                          compare=False)

    @classmethod
    def from_frames(
        cls,
        ratings: pd.DataFrame,
        items: pd.DataFrame,
        users: pd.DataFrame,
        genre_names: tuple[str, ...],
        name: str = "dataset",
        rating_scale: tuple[float, float] | None = RATING_SCALE,
    ) -> Dataset:
        """Build a dataset from raw-id ratings, adding the contiguous indices.

        Every rating must be finite and within ``rating_scale``, ``(lowest, highest)`` both
        inclusive; ``rating_scale=None`` says "any finite value", for events that are not
        ratings on a scale (a log's values, as :func:`arms.gate.evaluate_gate` takes them).

        Raises
        ------
        ValueError
            If a column is missing; if an id or timestamp is missing, not finite or not a whole
            number; if a rating is not finite or lies outside ``rating_scale`` (nor a finite
            ``(lowest, highest)`` with ``lowest < highest``, nor None); if the catalogue
            repeats a user or item id; or if a rating names a user or item absent from it. The
            message names the first bad row (its index label, user, item and value).
        """
        missing = [c for c in RATING_COLUMNS if c not in ratings.columns]
        if missing:
            raise ValueError(f"ratings lack columns {missing}; expected {list(RATING_COLUMNS)}")
        scale = None if rating_scale is None else _check_scale(rating_scale)
        _check_catalogue("user_id", users.index)
        _check_catalogue("item_id", items.index)
        _check_ratings(ratings, scale)
        frame = ratings.loc[:, list(RATING_COLUMNS)].copy()
        frame["user_id"] = frame["user_id"].astype(np.int64)
        frame["item_id"] = frame["item_id"].astype(np.int64)
        frame["rating"] = frame["rating"].astype(np.float32)
        frame["timestamp"] = frame["timestamp"].astype(np.int64)
        user_pos = pd.Index(users.index).get_indexer(frame["user_id"])
        item_pos = pd.Index(items.index).get_indexer(frame["item_id"])
        if (user_pos < 0).any():
            bad = frame["user_id"].to_numpy()[user_pos < 0][0]
            raise ValueError(unknown_id_message("user_id", int(bad), users.index[:50]))
        if (item_pos < 0).any():
            bad = frame["item_id"].to_numpy()[item_pos < 0][0]
            raise ValueError(unknown_id_message("item_id", int(bad), items.index[:50]))
        frame["user_index"] = user_pos.astype(np.int32)
        frame["item_index"] = item_pos.astype(np.int32)
        return cls(frame.reset_index(drop=True), items, users, tuple(genre_names), name, scale)

    def with_ratings(self, ratings: pd.DataFrame, name: str | None = None) -> Dataset:
        """A new dataset over the same catalogue holding ``ratings`` (raw ids are re-indexed)."""
        return Dataset.from_frames(
            ratings, self.items, self.users, self.genre_names, name or self.name,
            self.rating_scale,
        )

    def subset(self, mask: np.ndarray, name: str | None = None) -> Dataset:
        """A new dataset keeping the ratings where ``mask`` (shape ``(n_ratings,)``) is true."""
        kept = self.ratings.loc[np.asarray(mask, dtype=bool)].reset_index(drop=True)
        return replace(self, ratings=kept, name=name or self.name, _cache={})

    @property
    def n_users(self) -> int:
        """Number of users, ``len(self.users)``."""
        return len(self.users)

    @property
    def n_items(self) -> int:
        """Number of items in the catalogue, ``len(self.items)``."""
        return len(self.items)

    @property
    def n_ratings(self) -> int:
        """Number of ratings, ``len(self.ratings)``."""
        return len(self.ratings)

    @cached_property
    def user_ids(self) -> np.ndarray:
        """Raw user ids in index order, shape ``(n_users,)``."""
        return self.users.index.to_numpy(dtype=np.int64)

    @cached_property
    def item_ids(self) -> np.ndarray:
        """Raw item ids in index order, shape ``(n_items,)``."""
        return self.items.index.to_numpy(dtype=np.int64)

    def user_index(self, user_ids: object) -> np.ndarray:
        """Contiguous indices of raw ``user_ids``; raises ``ValueError`` naming an unknown id."""
        return _lookup("user_id", self.users.index, user_ids)

    def item_index(self, item_ids: object) -> np.ndarray:
        """Contiguous indices of raw ``item_ids``; raises ``ValueError`` naming an unknown id."""
        return _lookup("item_id", self.items.index, item_ids)

    def interaction_matrix(self, *, binary: bool = False) -> sp.csr_matrix:
        """Ratings as a CSR matrix of shape ``(n_users, n_items)`` (1.0 per rating if ``binary``).

        A repeated (user, item) pair keeps its latest rating.
        """
        key = ("interactions", binary)
        if key not in self._cache:
            latest = self.ratings.sort_values("timestamp", kind="stable").drop_duplicates(
                ["user_index", "item_index"], keep="last"
            )
            values = (
                np.ones(len(latest), dtype=np.float32)
                if binary
                else latest["rating"].to_numpy(np.float32)
            )
            matrix = sp.csr_matrix(
                (values, (latest["user_index"].to_numpy(), latest["item_index"].to_numpy())),
                shape=(self.n_users, self.n_items),
                dtype=np.float32,
            )
            matrix.sort_indices()
            self._cache[key] = matrix
        return self._cache[key]

    def genre_matrix(self) -> np.ndarray:
        """Genre flags of every item, shape ``(n_items, n_genres)``, dtype float32."""
        return self.items.loc[:, list(self.genre_names)].to_numpy(dtype=np.float32)

    def __repr__(self) -> str:
        return (
            f"Dataset(name={self.name!r}, n_users={self.n_users}, n_items={self.n_items}, "
            f"n_ratings={self.n_ratings})"
        )


def _lookup(kind: str, index: pd.Index, ids: object) -> np.ndarray:
    values = np.atleast_1d(np.asarray(ids))
    if values.dtype.kind not in "iu":
        try:
            values = values.astype(np.int64)
        except (TypeError, ValueError):
            raise TypeError(f"{kind} must be integers, got {values.dtype}") from None
    positions = index.get_indexer(values)  # type: ignore[arg-type]  # pandas-stubs wants an Index; pandas takes any array-like
    if (positions < 0).any():
        bad = values[positions < 0][0]
        raise ValueError(unknown_id_message(kind, int(bad), index[:200]))
    return positions.astype(np.int64)


def _check_scale(scale: tuple[float, float]) -> tuple[float, float]:
    """``scale`` as ``(low, high)`` after checking both are finite reals with ``low < high``."""
    try:
        low, high = (float(v) for v in scale)
    except (TypeError, ValueError):
        raise ValueError(f"rating_scale must be two numbers (lowest, highest), got {scale!r}"
                         ) from None
    if not (np.isfinite(low) and np.isfinite(high) and low < high):
        raise ValueError(f"rating_scale must be finite with lowest < highest, got {scale!r}")
    return low, high


def is_whole(values: pd.Series) -> np.ndarray:
    """Where ``values`` (numbers, or their text) are present, finite whole numbers within
    int64 (a numpy integer dtype always is): the one test of ids and seconds, for a Dataset
    and for the data files (:mod:`arms.data.files`).
    """
    if isinstance(values.dtype, np.dtype) and values.dtype.kind in "iu":
        return np.ones(len(values), dtype=bool)
    numbers = pd.to_numeric(values, errors="coerce").to_numpy(dtype=np.float64, na_value=np.nan)
    return np.asarray(np.isfinite(numbers) & (numbers == np.round(numbers))
                      & (np.abs(numbers) < 2.0**62), dtype=bool)  # ids and seconds are far below


def _check_catalogue(kind: str, index: pd.Index) -> None:
    """The catalogue's ids are whole numbers, each once."""
    ok = is_whole(index.to_series())
    if not ok.all():
        raise ValueError(f"the {kind} catalogue holds {_plain(index[~ok][0])!r} at position "
                         f"{int(np.flatnonzero(~ok)[0])}; ids must be whole numbers")
    if not index.is_unique:
        twice = _plain(index[index.duplicated()][0])
        raise ValueError(f"the {kind} catalogue holds {kind} {twice!r} more than once; ids must "
                         "be unique")


def _check_ratings(ratings: pd.DataFrame, scale: tuple[float, float] | None) -> None:
    """Ids and timestamps are whole numbers and ratings finite, within ``scale`` if not None."""
    for column in ("user_id", "item_id", "timestamp"):
        ok = is_whole(ratings[column])
        if not ok.all():
            _refuse(ratings, int(np.flatnonzero(~ok)[0]), column, "a finite whole number")
    rating = pd.to_numeric(ratings["rating"], errors="coerce").to_numpy(
        dtype=np.float64, na_value=np.nan)
    ok = np.isfinite(rating)
    if scale is not None:
        ok &= (rating >= scale[0]) & (rating <= scale[1])
    if not ok.all():
        _refuse(ratings, int(np.flatnonzero(~ok)[0]), "rating", "a finite number" + (
            "" if scale is None else f" within the rating scale [{scale[0]:g}, {scale[1]:g}]"))


def _refuse(ratings: pd.DataFrame, row: int, column: str, allowed: str) -> NoReturn:
    """Raise the ``ValueError`` (a RatingRowError) naming row ``row`` (a position) of
    ``ratings`` and its value.
    """
    user, item, value = (_plain(ratings[c].iloc[row]) for c in ("user_id", "item_id", column))
    detail = f"(user_id {user!r}, item_id {item!r}): {column} {value!r}; each must be {allowed}"
    raise RatingRowError(f"ratings row {_plain(ratings.index[row])!r} {detail}", position=row,
                         detail=detail)


def _plain(value: object) -> object:
    """A numpy scalar as the Python number it holds (so a message reads ``3``, not its repr)."""
    return value.item() if isinstance(value, np.generic) else value
