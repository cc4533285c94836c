"""Train/test splits of a :class:`~arms.data.Dataset`; each returns new datasets.

Every split keeps the catalogue (users, items and their indices) of the dataset it splits, so a
model fit on the training part scores the test part without re-mapping, and none mutates its
input. The per-user splits follow one rule for how many ratings a user keeps in training: with
``n`` ratings and a training share ``r``, the user keeps ``round(r * n)`` (round half to even, as
Python and numpy round, which is what Microsoft Recommenders' splitters do) and never fewer than
one, so a user with a single rating keeps it in training.
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import TYPE_CHECKING, cast

import numpy as np

from arms._validation import check_fraction, check_int, check_random_state
from arms.data.dataset import Dataset

if TYPE_CHECKING:
    import pandas as pd

__all__ = ["kfold_split", "random_split", "rating_order", "temporal_split", "tie_break_key"]


def temporal_split(
    dataset: Dataset, *, n_last: int | None = None, fraction: float | None = None
) -> tuple[Dataset, Dataset]:
    """Hold out the latest ratings of every user.

    Each user's ratings are put in time order and the latest ones form the test set. Ties in
    ``timestamp`` (half of MovieLens 100K's ratings share a second with another rating of the
    same user) are broken by a fixed hash of ``(user_id, item_id)`` (splitmix64), then by row
    position: the split depends only on the data, not on the order of the rows, and, unlike
    ordering ties by id, does not favour old or new (in MovieLens: popular or niche) items.

    Parameters
    ----------
    dataset : Dataset
        The ratings to split.
    n_last : int, optional
        Hold out each user's last ``n_last`` ratings (``>= 1``). A user with ``n_last`` ratings
        or fewer keeps them all in training (nothing to learn the user from otherwise); for
        ``n_last=1`` that is leave-last-out.
    fraction : float, optional
        Hold out each user's last ``fraction`` of ratings, ``0 < fraction < 1``: the user keeps
        ``round((1 - fraction) * n)`` ratings in training (at least one) and the rest go to test.
        Exactly one of ``n_last`` and ``fraction`` must be given.

    Returns
    -------
    train, test : Dataset
        Disjoint, together all the ratings; every test timestamp of a user is at or after each
        of that user's training timestamps.

    Raises
    ------
    TypeError
        If ``dataset`` is not a Dataset or ``n_last``/``fraction`` has the wrong type.
    ValueError
        If both or neither of ``n_last`` and ``fraction`` are given, or one is out of range.
    """
    _check_dataset(dataset)
    if (n_last is None) == (fraction is None):
        raise ValueError(
            f"give exactly one of n_last and fraction, got n_last={n_last!r}, fraction={fraction!r}"
        )
    if n_last is not None:
        check_int("n_last", n_last, low=1)
    else:
        share = check_fraction("fraction", fraction)
    ratings = dataset.ratings
    users = ratings["user_index"].to_numpy()
    order = rating_order(ratings, per_user=True)
    counts = np.bincount(users, minlength=dataset.n_users)
    if n_last is not None:
        n_train = np.where(counts > n_last, counts - n_last, counts)
    else:
        n_train = _train_sizes(counts, 1.0 - share)
    return _split_by_rank(dataset, order, n_train, "temporal")


def random_split(
    dataset: Dataset,
    *,
    test_fraction: float = 0.25,
    random_state: int | np.random.Generator | None = 0,
) -> tuple[Dataset, Dataset]:
    """Hold out a random share of every user's ratings (stratified by user).

    The protocol of Microsoft Recommenders' ``python_stratified_split`` (75/25 per user by
    default): each user keeps ``round((1 - test_fraction) * n)`` of their ``n`` ratings in
    training (at least one), chosen uniformly at random; the rest are the test set.

    Parameters
    ----------
    dataset : Dataset
        The ratings to split.
    test_fraction : float, default 0.25
        Share of each user's ratings held out, ``0 < test_fraction < 1``.
    random_state : int, numpy.random.Generator or None, default 0
        Seed or generator of the shuffle; the same seed gives the same split.

    Returns
    -------
    train, test : Dataset

    Raises
    ------
    TypeError, ValueError
        If an argument has the wrong type or value.
    """
    _check_dataset(dataset)
    share = check_fraction("test_fraction", test_fraction)
    rng = check_random_state(random_state)
    users = dataset.ratings["user_index"].to_numpy()
    order = np.lexsort((rng.random(len(users)), users))
    counts = np.bincount(users, minlength=dataset.n_users)
    return _split_by_rank(dataset, order, _train_sizes(counts, 1.0 - share), "random")


def kfold_split(
    dataset: Dataset,
    *,
    n_splits: int = 5,
    random_state: int | np.random.Generator | None = 0,
) -> Iterator[tuple[Dataset, Dataset]]:
    """K-fold cross-validation over shuffled ratings, as Surprise's ``KFold``.

    The ratings are shuffled once and cut into ``n_splits`` folds whose sizes differ by at most
    one; fold ``i`` is the test set of the ``i``-th pair and the others its training set. Folds
    ignore users, so a user may have no training rating in some pair (arms then fall back to
    popularity).

    Parameters
    ----------
    dataset : Dataset
        The ratings to split.
    n_splits : int, default 5
        Number of folds, ``2 <= n_splits <= n_ratings``.
    random_state : int, numpy.random.Generator or None, default 0
        Seed or generator of the shuffle.

    Yields
    ------
    train, test : Dataset
        ``n_splits`` pairs; the test sets partition the ratings.

    Raises
    ------
    TypeError, ValueError
        If an argument has the wrong type or value (raised at the call, not at first iteration).
    """
    _check_dataset(dataset)
    check_int("n_splits", n_splits, low=2)
    if n_splits > dataset.n_ratings:
        raise ValueError(
            f"n_splits must be at most the number of ratings ({dataset.n_ratings}), got {n_splits}"
        )
    rng = check_random_state(random_state)
    fold = np.empty(dataset.n_ratings, dtype=np.int64)
    for i, rows in enumerate(np.array_split(rng.permutation(dataset.n_ratings), n_splits)):
        fold[rows] = i
    return _folds(dataset, fold, n_splits)


def tie_break_key(user_ids: np.ndarray, item_ids: np.ndarray) -> np.ndarray:
    """A fixed pseudo-random ``uint64`` per (user, item) pair: splitmix64 of the raw ids.

    Used to order ratings that share a timestamp; the same pair always gets the same key.
    """
    x = np.asarray(user_ids).astype(np.uint64) * np.uint64(0x9E3779B97F4A7C15)
    x = x + np.asarray(item_ids).astype(np.uint64)
    x ^= x >> np.uint64(30)
    x *= np.uint64(0xBF58476D1CE4E5B9)
    x ^= x >> np.uint64(27)
    x *= np.uint64(0x94D049BB133111EB)
    x ^= x >> np.uint64(31)
    return x


def rating_order(ratings: pd.DataFrame, *, per_user: bool = False) -> np.ndarray:
    """Row order of ``ratings`` in time: by timestamp, ties by :func:`tie_break_key` of (user,
    item), then by row; with ``per_user``, by ``user_index`` first. The one time order of the
    ratings: the temporal split holds out each user's latest by it, the gate its last share of
    events, the sequential arm reads its "most recent" item by it, and the live arms and the
    replay fold the ratings in it.
    """
    keys = [np.arange(len(ratings)),
            tie_break_key(ratings["user_id"].to_numpy(), ratings["item_id"].to_numpy()),
            ratings["timestamp"].to_numpy()]
    if per_user:
        keys.append(ratings["user_index"].to_numpy())
    return np.lexsort(keys)


def _folds(dataset: Dataset, fold: np.ndarray, n_splits: int) -> Iterator[tuple[Dataset, Dataset]]:
    for i in range(n_splits):
        test = fold == i
        yield (
            dataset.subset(~test, name=f"{dataset.name}:fold{i}-train"),
            dataset.subset(test, name=f"{dataset.name}:fold{i}-test"),
        )


def _train_sizes(counts: np.ndarray, train_share: float) -> np.ndarray:
    """Ratings each user keeps in training: ``round(train_share * n)``, at least one."""
    sizes = np.minimum(counts, np.maximum(np.round(train_share * counts), 1))
    return cast(np.ndarray, sizes.astype(np.int64))


def _split_by_rank(
    dataset: Dataset, order: np.ndarray, n_train: np.ndarray, kind: str
) -> tuple[Dataset, Dataset]:
    """Train = the first ``n_train[u]`` rows of each user in ``order`` (grouped by user)."""
    users = dataset.ratings["user_index"].to_numpy()[order]
    starts = np.concatenate([[0], np.cumsum(np.bincount(users, minlength=dataset.n_users))])
    rank = np.arange(len(order)) - starts[users]
    in_train = np.empty(len(order), dtype=bool)
    in_train[order] = rank < n_train[users]
    return (
        dataset.subset(in_train, name=f"{dataset.name}:{kind}-train"),
        dataset.subset(~in_train, name=f"{dataset.name}:{kind}-test"),
    )


def _check_dataset(dataset: object) -> None:
    if not isinstance(dataset, Dataset):
        raise TypeError(f"dataset must be an arms.data.Dataset, got {type(dataset).__name__}")
