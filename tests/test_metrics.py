"""Ranking and rating metrics on hand-computed examples and against a per-user reference."""

from __future__ import annotations

import numpy as np
import pytest
import scipy.sparse as sp

from arms.metrics import (
    catalogue_coverage,
    hit_rate_at_k,
    mae,
    map_at_k,
    ndcg_at_k,
    precision_at_k,
    ranking_metrics,
    recall_at_k,
    rmse,
)

L3 = 1 / np.log2(3)  # discount at rank 2


def _relevant(rows: list[list[int]], n_items: int) -> sp.csr_matrix:
    r = [u for u, items in enumerate(rows) for _ in items]
    c = [i for items in rows for i in items]
    return sp.csr_matrix((np.ones(len(c)), (r, c)), shape=(len(rows), n_items))


@pytest.fixture
def example() -> tuple[np.ndarray, sp.csr_matrix]:
    recommended = np.array([[0, 1, 2], [4, 5, -1], [0, 1, 2], [5, 0, 1]])
    # User 2 has no relevant item and is left out of every mean.
    relevant = _relevant([[1, 3], [4, 5, 0, 2], [], [3]], n_items=6)
    return recommended, relevant


def test_hand_computed_example(example) -> None:
    rec, rel = example
    m = ranking_metrics(rec, rel)
    assert m["n_users"] == 3
    assert m["hit_rate"] == pytest.approx(2 / 3)
    assert m["precision"] == pytest.approx((1 / 3 + 2 / 3 + 0) / 3)
    assert m["recall"] == pytest.approx((1 / 2 + 2 / 4 + 0) / 3)
    ndcg_0 = L3 / (1 + L3)
    ndcg_1 = (1 + L3) / (1 + L3 + 0.5)  # ideal over min(|R|=4, k=3) = 3 slots
    assert m["ndcg"] == pytest.approx((ndcg_0 + ndcg_1 + 0) / 3)
    # AP: user 0 hits at rank 2 -> (1/2) / |R|=2; user 1 hits at 1, 2 -> (1 + 1) / 4.
    assert m["map"] == pytest.approx((0.25 + 0.5 + 0) / 3)
    assert m["coverage"] == pytest.approx(5 / 6)
    truncated = ranking_metrics(rec, rel, map_normalization="truncated")["map"]
    assert truncated == pytest.approx((0.25 + 2 / 3 + 0) / 3)  # user 1 divides by min(4, 3)
    assert map_at_k(rec, rel, normalization="truncated") == pytest.approx(truncated)


def test_single_metric_functions_agree(example) -> None:
    rec, rel = example
    m = ranking_metrics(rec, rel)
    assert hit_rate_at_k(rec, rel) == m["hit_rate"]
    assert precision_at_k(rec, rel) == m["precision"]
    assert recall_at_k(rec, rel) == m["recall"]
    assert ndcg_at_k(rec, rel) == m["ndcg"]
    assert map_at_k(rec, rel) == m["map"]
    assert catalogue_coverage(rec, 6) == m["coverage"]


def test_cut_off_k(example) -> None:
    rec, rel = example
    m = ranking_metrics(rec, rel, k=1)
    assert m["hit_rate"] == pytest.approx(1 / 3)
    assert m["precision"] == pytest.approx(1 / 3)
    assert m["recall"] == pytest.approx(1 / 4 / 3)
    assert m["ndcg"] == pytest.approx(1 / 3)
    assert m["map"] == pytest.approx(1 / 4 / 3)
    assert m["coverage"] == pytest.approx(3 / 6)  # items 0, 4, 5


def test_perfect_and_empty_slates() -> None:
    rel = _relevant([[0, 1], [2]], n_items=4)
    perfect = ranking_metrics(np.array([[1, 0], [2, -1]]), rel)
    assert perfect["ndcg"] == pytest.approx(1.0) and perfect["recall"] == pytest.approx(1.0)
    assert perfect["map"] == pytest.approx(1.0) and perfect["precision"] == pytest.approx(0.75)
    nothing = ranking_metrics(np.full((2, 2), -1), rel)
    assert nothing["hit_rate"] == 0 and nothing["ndcg"] == 0 and nothing["coverage"] == 0
    nobody = ranking_metrics(np.array([[0, 1]]), sp.csr_matrix((1, 4)))
    assert nobody["n_users"] == 0 and np.isnan(nobody["ndcg"])


def test_explicit_zeros_and_values_do_not_count_as_relevance() -> None:
    rel = sp.csr_matrix(([0.0, 3.0], ([0, 0], [1, 2])), shape=(1, 4))
    m = ranking_metrics(np.array([[1, 2, 3]]), rel)
    assert m["recall"] == pytest.approx(1.0) and m["precision"] == pytest.approx(1 / 3)
    assert rel.nnz == 2, "the caller's matrix must not be modified"


def _reference(rec: np.ndarray, rel: sp.csr_matrix, k: int) -> dict[str, float]:
    out: dict[str, list[float]] = {m: [] for m in ("hit_rate", "precision", "recall", "ndcg",
                                                   "map")}  # fmt: skip
    for u in range(rec.shape[0]):
        truth = set(rel[u].indices)
        if not truth:
            continue
        slate = [i for i in rec[u, :k]]
        hits = [1.0 if i in truth else 0.0 for i in slate]
        dcg = sum(h / np.log2(j + 2) for j, h in enumerate(hits))
        idcg = sum(1 / np.log2(j + 2) for j in range(min(len(truth), k)))
        ap = sum(h * sum(hits[: j + 1]) / (j + 1) for j, h in enumerate(hits)) / len(truth)
        out["hit_rate"].append(float(any(hits)))
        out["precision"].append(sum(hits) / k)
        out["recall"].append(sum(hits) / len(truth))
        out["ndcg"].append(dcg / idcg)
        out["map"].append(ap)
    return {m: float(np.mean(v)) for m, v in out.items()}


def test_matches_a_per_user_reference_on_random_data() -> None:
    rng = np.random.default_rng(0)
    n_users, n_items, k = 200, 50, 10
    rel = sp.random(n_users, n_items, density=0.08, format="csr", random_state=rng)
    rec = np.argsort(rng.random((n_users, n_items)), axis=1)[:, :k]
    rec[rng.random((n_users, k)) < 0.05] = -1
    got = ranking_metrics(rec, rel)
    want = _reference(rec, rel, k)
    for name, value in want.items():
        assert got[name] == pytest.approx(value), name
    got5 = ranking_metrics(rec, rel, k=5)
    for name, value in _reference(rec, rel, 5).items():
        assert got5[name] == pytest.approx(value), name


def test_rmse_and_mae() -> None:
    assert rmse([1, 2, 3, 4], [2, 2, 3, 2]) == pytest.approx(np.sqrt((1 + 0 + 0 + 4) / 4))
    assert mae([1, 2, 3, 4], [2, 2, 3, 2]) == pytest.approx(3 / 4)
    assert rmse(np.array([3.5]), np.array([3.5])) == 0.0


@pytest.mark.parametrize(
    ("call", "error", "match"),
    [
        (lambda r, s: ranking_metrics(r[:2], s), ValueError, "rows"),
        (lambda r, s: ranking_metrics(r.astype(float), s), TypeError, "integer"),
        (lambda r, s: ranking_metrics(r[0], s), ValueError, "2-d"),
        (lambda r, s: ranking_metrics(r + 10, s), ValueError, "outside"),
        (lambda r, s: ranking_metrics(np.zeros((4, 2), dtype=int), s), ValueError, "repeats"),
        (lambda r, s: ranking_metrics(r, s, k=4), ValueError, "k must"),
        (lambda r, s: ranking_metrics(r, s, k=0), ValueError, "k must"),
        (lambda r, s: ranking_metrics(r, s.toarray()), TypeError, "sparse"),
        (lambda r, s: ranking_metrics(r, s, map_normalization="x"), ValueError, "map_norm"),
        (lambda r, s: catalogue_coverage(r, 0), ValueError, "n_items"),
        (lambda r, s: rmse([1, 2], [1]), ValueError, "same shape"),
        (lambda r, s: mae([], []), ValueError, "empty"),
        (lambda r, s: rmse([1.0], [np.nan]), ValueError, "finite"),
    ],
)
def test_bad_input(example, call, error: type[Exception], match: str) -> None:
    with pytest.raises(error, match=match):
        call(*example)
