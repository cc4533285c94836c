"""Offline metrics: top-k ranking metrics over a batch of users, and rating errors.

Ranking metrics take the slates a recommender returned, ``recommended`` of shape
``(n_users, k)`` holding item indices best first (``-1`` pads a slate shorter than ``k``; a pad is
never a hit), and the items each user found relevant, ``relevant``, a sparse matrix of shape
``(n_users, n_items)`` whose stored positive entries mark relevant items (binary relevance: the
value does not matter, explicit zeros are ignored). Row ``u`` of both refers to the same user.

Definitions follow Microsoft Recommenders' ``python_evaluation`` so numbers sit beside their
published MovieLens table; for a user with relevant set ``R`` (``|R| > 0``) and slate of length
``k``, with ``hit_j = 1`` when the item at rank ``j`` (1-based) is in ``R``:

- hit rate@k: ``1`` if any ``hit_j``, else ``0``.
- precision@k: ``sum_j hit_j / k`` (pads count as misses, as a slate of ``k`` was asked for).
- recall@k: ``sum_j hit_j / |R|``.
- NDCG@k: ``DCG / IDCG`` with ``DCG = sum_j hit_j / log2(j + 1)`` and ``IDCG`` the DCG of a
  slate whose first ``min(|R|, k)`` items are all relevant.
- MAP@k: the mean of average precision, ``AP = sum_j hit_j * precision@j / |R|``. Dividing by
  ``|R|`` (not ``min(|R|, k)``) is Microsoft Recommenders' ``map``, the function their
  MovieLens benchmark reports; ``normalization="truncated"`` divides by ``min(|R|, k)`` as their
  ``map_at_k`` and Spark's ``meanAveragePrecisionAt`` do.

Every ranking metric is the mean over users **with at least one relevant item**; users whose
row of ``relevant`` is empty are left out (they cannot be hit, and counting them as zeros would
make scores depend on how many such users a split happens to produce). With no such user at all
the metrics are ``nan``. Catalogue coverage is the exception: it counts the distinct items
recommended to every user given.

Everything is vectorised over users: no Python loop per user or per item.
"""

from __future__ import annotations

from typing import Literal

import numpy as np
import scipy.sparse as sp

#: The least rating counted as a positive (a relevant item) on MovieLens' whole stars:
#: ``evaluate-arms``' temporal protocol and the service's evaluation gate (the default of its
#: ``gate_relevance``; the rule book says what each event type is worth).
POSITIVE_RATING = 4.0

__all__ = [
    "POSITIVE_RATING",
    "catalogue_coverage",
    "hit_rate_at_k",
    "mae",
    "map_at_k",
    "ndcg_at_k",
    "precision_at_k",
    "ranking_metrics",
    "recall_at_k",
    "rmse",
]

MapNormalization = Literal["relevant", "truncated"]


def ranking_metrics(
    recommended: np.ndarray,
    relevant: sp.spmatrix | sp.sparray,
    *,
    k: int | None = None,
    map_normalization: MapNormalization = "relevant",
) -> dict[str, float]:
    """Every top-k ranking metric at once (the hits are looked up only once).

    Parameters
    ----------
    recommended : array-like of int, shape ``(n_users, n_slots)``
        Item indices best first, ``-1`` for padding; no item twice in a row.
    relevant : scipy sparse matrix, shape ``(n_users, n_items)``
        Positive entries mark relevant items.
    k : int, optional
        Cut-off, ``1 <= k <= n_slots``; by default the slate length ``n_slots``.
    map_normalization : {"relevant", "truncated"}, default "relevant"
        Denominator of average precision: ``|R|`` or ``min(|R|, k)`` (see the module docstring).

    Returns
    -------
    dict
        ``hit_rate``, ``precision``, ``recall``, ``ndcg``, ``map`` (means over users with a
        relevant item), ``coverage`` (share of the catalogue recommended to anyone) and
        ``n_users`` (how many users the means are over).

    Raises
    ------
    TypeError
        If ``recommended`` is not an integer array.
    ValueError
        If shapes disagree, an index is out of range, an item repeats within a slate, ``k`` is
        out of range or ``map_normalization`` is unknown.
    """
    rec, rel, k = _validate(recommended, relevant, k)
    if map_normalization not in ("relevant", "truncated"):
        raise ValueError(
            f"map_normalization must be 'relevant' or 'truncated', got {map_normalization!r}"
        )
    hits, n_rel = _hits(rec, rel)
    out = _from_hits(hits, n_rel, k, map_normalization)
    out["coverage"] = _coverage(rec, rel.shape[1])
    out["n_users"] = float(len(n_rel))
    return out


def hit_rate_at_k(recommended: np.ndarray, relevant: sp.spmatrix, k: int | None = None) -> float:
    """Share of users with a relevant item in their top ``k`` (see :func:`ranking_metrics`)."""
    return _single(recommended, relevant, k, "hit_rate")


def precision_at_k(recommended: np.ndarray, relevant: sp.spmatrix, k: int | None = None) -> float:
    """Mean share of the ``k`` slots that hold a relevant item (see :func:`ranking_metrics`)."""
    return _single(recommended, relevant, k, "precision")


def recall_at_k(recommended: np.ndarray, relevant: sp.spmatrix, k: int | None = None) -> float:
    """Mean share of each user's relevant items found in the top ``k``."""
    return _single(recommended, relevant, k, "recall")


def ndcg_at_k(recommended: np.ndarray, relevant: sp.spmatrix, k: int | None = None) -> float:
    """Mean binary-relevance NDCG@k with the ideal DCG over ``min(|R|, k)`` slots."""
    return _single(recommended, relevant, k, "ndcg")


def map_at_k(
    recommended: np.ndarray,
    relevant: sp.spmatrix,
    k: int | None = None,
    *,
    normalization: MapNormalization = "relevant",
) -> float:
    """Mean average precision over the top ``k``; see the module docstring for ``normalization``."""
    rec, rel, k = _validate(recommended, relevant, k)
    if normalization not in ("relevant", "truncated"):
        raise ValueError(f"normalization must be 'relevant' or 'truncated', got {normalization!r}")
    hits, n_rel = _hits(rec, rel)
    return _from_hits(hits, n_rel, k, normalization)["map"]


def catalogue_coverage(recommended: np.ndarray, n_items: int) -> float:
    """Share of the ``n_items`` catalogue that appears in at least one slate (``-1`` ignored).

    Raises
    ------
    ValueError
        If ``n_items < 1`` or an index is outside ``[-1, n_items)``.
    """
    if isinstance(n_items, bool) or not isinstance(n_items, int | np.integer) or n_items < 1:
        raise ValueError(f"n_items must be a positive integer, got {n_items!r}")
    rec = _as_slates(recommended)
    if rec.size and (rec.min() < -1 or rec.max() >= n_items):
        raise ValueError(f"recommended holds item indices outside [-1, {n_items})")
    return _coverage(rec, int(n_items))


def rmse(y_true: np.ndarray, y_pred: np.ndarray) -> float:
    """Root mean squared error of rating predictions (arrays of the same shape, non-empty)."""
    true, pred = _ratings(y_true, y_pred)
    return float(np.sqrt(np.mean((true - pred) ** 2)))


def mae(y_true: np.ndarray, y_pred: np.ndarray) -> float:
    """Mean absolute error of rating predictions (arrays of the same shape, non-empty)."""
    true, pred = _ratings(y_true, y_pred)
    return float(np.mean(np.abs(true - pred)))


# ---------------------------------------------------------------------------- internals
def _single(recommended: np.ndarray, relevant: sp.spmatrix, k: int | None, name: str) -> float:
    rec, rel, k = _validate(recommended, relevant, k)
    hits, n_rel = _hits(rec, rel)
    return _from_hits(hits, n_rel, k, "relevant")[name]


def _as_slates(recommended: object) -> np.ndarray:
    rec = np.asarray(recommended)
    if rec.ndim != 2:
        raise ValueError(f"recommended must be 2-d (n_users, k), got shape {rec.shape}")
    if rec.dtype.kind not in "iu":
        raise TypeError(f"recommended must hold integer item indices, got dtype {rec.dtype}")
    return rec.astype(np.int64, copy=False)


def _validate(
    recommended: object, relevant: object, k: int | None
) -> tuple[np.ndarray, sp.csr_matrix, int]:
    rec = _as_slates(recommended)
    if not sp.issparse(relevant):
        raise TypeError(
            f"relevant must be a scipy sparse matrix (n_users, n_items), got "
            f"{type(relevant).__name__}"
        )
    rel = sp.csr_matrix(relevant, dtype=np.float64, copy=True)
    if rel.shape[0] != rec.shape[0]:
        raise ValueError(
            f"recommended has {rec.shape[0]} rows but relevant has {rel.shape[0]}; "
            "row u of both must be the same user"
        )
    n_items = rel.shape[1]
    if rec.size and (rec.min() < -1 or rec.max() >= n_items):
        raise ValueError(f"recommended holds item indices outside [-1, {n_items})")
    if k is None:
        k = rec.shape[1]
    if isinstance(k, bool) or not isinstance(k, int | np.integer) or not 1 <= k <= rec.shape[1]:
        raise ValueError(f"k must be an integer within [1, {rec.shape[1]}], got {k!r}")
    rec = rec[:, :k]
    ordered = np.sort(rec, axis=1)
    if ((ordered[:, 1:] == ordered[:, :-1]) & (ordered[:, 1:] >= 0)).any():
        raise ValueError("recommended repeats an item within a slate; each slot must differ")
    rel.data = (rel.data > 0).astype(np.float64)
    rel.eliminate_zeros()
    rel.sort_indices()
    return rec, rel, int(k)


def _hits(rec: np.ndarray, rel: sp.csr_matrix) -> tuple[np.ndarray, np.ndarray]:
    """Hit matrix and ``|R|`` for the users with a relevant item, shapes ``(m, k)``, ``(m,)``."""
    n_items = rel.shape[1]
    n_rel_all = np.diff(rel.indptr)
    rows = np.repeat(np.arange(rel.shape[0], dtype=np.int64), n_rel_all)
    # CSR with sorted indices lists (row, column) in lexicographic order, so these keys are
    # sorted and one searchsorted finds every slate entry among the relevant pairs.
    keys = rows * n_items + rel.indices
    kept = n_rel_all > 0
    rec = rec[kept]
    query = np.flatnonzero(kept)[:, None] * n_items + rec
    pos = np.minimum(np.searchsorted(keys, query), max(len(keys) - 1, 0))
    hits = (rec >= 0) & (keys[pos] == query) if len(keys) else np.zeros(rec.shape, dtype=bool)
    return hits, n_rel_all[kept].astype(np.float64)


def _from_hits(
    hits: np.ndarray, n_rel: np.ndarray, k: int, map_normalization: MapNormalization
) -> dict[str, float]:
    if len(n_rel) == 0:
        return dict.fromkeys(("hit_rate", "precision", "recall", "ndcg", "map"), float("nan"))
    ranks = np.arange(1, k + 1, dtype=np.float64)
    discount = 1.0 / np.log2(ranks + 1.0)
    n_hits = hits.sum(axis=1)
    ideal = np.cumsum(discount)[np.minimum(n_rel, k).astype(np.int64) - 1]
    precision_at_rank = np.cumsum(hits, axis=1) / ranks
    denominator = n_rel if map_normalization == "relevant" else np.minimum(n_rel, k)
    return {
        "hit_rate": float(np.mean(n_hits > 0)),
        "precision": float(np.mean(n_hits / k)),
        "recall": float(np.mean(n_hits / n_rel)),
        "ndcg": float(np.mean((hits @ discount) / ideal)),
        "map": float(np.mean((precision_at_rank * hits).sum(axis=1) / denominator)),
    }


def _coverage(rec: np.ndarray, n_items: int) -> float:
    shown = np.unique(rec[rec >= 0])
    return float(len(shown) / n_items)


def _ratings(y_true: object, y_pred: object) -> tuple[np.ndarray, np.ndarray]:
    true = np.asarray(y_true, dtype=np.float64)
    pred = np.asarray(y_pred, dtype=np.float64)
    if true.shape != pred.shape:
        raise ValueError(f"y_true and y_pred must have the same shape, got {true.shape} and "
                         f"{pred.shape}")  # fmt: skip
    if true.size == 0:
        raise ValueError("y_true is empty; an error over no rating is undefined")
    if not (np.isfinite(true).all() and np.isfinite(pred).all()):
        raise ValueError("y_true and y_pred must be finite (no nan or inf)")
    return true, pred
