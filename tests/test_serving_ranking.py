"""Slates from a precomputed :class:`~serving.armset.Ranking` equal ranking every score.

The service answers most requests by walking the head of a cached ranking; the reference is
:func:`serving.service.top_k_row` over all the scores with the excluded movies at ``-inf``.
"""

from __future__ import annotations

import numpy as np
from hypothesis import given, settings
from hypothesis import strategies as st

from arms.base import top_k
from serving.armset import rank_rows
from serving.service import top_k_row


def reference(scores: np.ndarray, k: int, excluded: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    full = scores.astype(np.float64)
    full[excluded] = -np.inf
    return top_k_row(full, k)


@settings(max_examples=300, deadline=None, derandomize=True)
@given(
    n_items=st.integers(1, 60),
    k=st.integers(1, 30),
    depth=st.integers(1, 40),
    n_excluded=st.integers(0, 40),
    n_unrankable=st.integers(0, 60),
    distinct=st.integers(1, 8),
    seed=st.integers(0, 2**32 - 1),
)
def test_top_equals_ranking_every_score(n_items: int, k: int, depth: int, n_excluded: int,
                                        n_unrankable: int, distinct: int, seed: int) -> None:
    rng = np.random.default_rng(seed)
    # Few distinct values: many ties, which both must break towards the lower index.
    scores = rng.integers(0, distinct, n_items).astype(np.float32) - distinct / 2
    scores[rng.choice(n_items, min(n_unrankable, n_items), replace=False)] = -np.inf
    excluded = rng.choice(n_items, min(n_excluded, n_items), replace=False).astype(np.int64)
    ranking = rank_rows(scores[None, :], depth=depth)[0]
    got = ranking.top(k, excluded)
    want_items, want_values = reference(scores, k, excluded)
    if got is None:
        # Only allowed when the kept head cannot hold k movies past the exclusions.
        assert not ranking.complete
        assert ranking.order.size < k + excluded.size
        assert np.setdiff1d(ranking.order, excluded).size < k
        return
    items, values = got
    np.testing.assert_array_equal(items, want_items)
    np.testing.assert_array_equal(values.astype(np.float64), want_values)


def test_ranking_keeps_order_depth_and_completeness() -> None:
    scores = np.array([[0.5, -np.inf, 2.0, 0.5, 1.0, np.nan]], dtype=np.float32)
    deep, = rank_rows(scores, depth=10)
    np.testing.assert_array_equal(deep.order, [2, 4, 0, 3])  # the tie 0.5 goes to index 0
    assert deep.complete
    shallow, = rank_rows(scores, depth=2)
    np.testing.assert_array_equal(shallow.order, [2, 4])
    assert not shallow.complete
    # Asked for more than the head holds past the exclusion: the caller must rank everything.
    assert shallow.top(2, np.array([4])) is None
    items, values = shallow.top(1, np.array([4]))
    np.testing.assert_array_equal(items, [2])
    np.testing.assert_array_equal(values, [2.0])
    # A complete ranking returns fewer than k when fewer movies are rankable.
    items, _ = deep.top(10, np.array([0, 2]))
    np.testing.assert_array_equal(items, [4, 3])


def stable_reference(scores: np.ndarray, k: int) -> tuple[np.ndarray, np.ndarray]:
    """Best ``k`` of each row by a full stable sort (ties to the lower index), ``-1`` padding."""
    keyed = np.where(np.isnan(scores), np.inf, -scores)
    items = np.argsort(keyed, axis=1, kind="stable")[:, :k]
    values = np.take_along_axis(scores, items, axis=1)
    items = np.where(np.isfinite(values) | (values > 0), items, -1)
    return items, values


@settings(max_examples=200, deadline=None, derandomize=True)
@given(n_rows=st.integers(1, 6), n_cols=st.integers(1, 40), k=st.integers(1, 45),
       distinct=st.integers(1, 5), n_bad=st.integers(0, 40), seed=st.integers(0, 2**32 - 1))
def test_batch_and_row_top_k_break_every_tie_towards_the_lower_index(
        n_rows: int, n_cols: int, k: int, distinct: int, n_bad: int, seed: int) -> None:
    # argpartition alone picks arbitrarily among items tied at the k-th score.
    rng = np.random.default_rng(seed)
    scores = rng.integers(0, distinct, (n_rows, n_cols)).astype(np.float64)
    bad = rng.random((n_rows, n_cols)) < n_bad / 40
    scores[bad] = rng.choice([-np.inf, np.nan], bad.sum())
    items, values = top_k(scores, k)
    want_items, want_values = stable_reference(scores, min(k, n_cols))
    np.testing.assert_array_equal(items, want_items)
    valid = want_items >= 0
    np.testing.assert_array_equal(values[valid], want_values[valid])
    for row in range(n_rows):
        row_items, row_values = top_k_row(scores[row], k)
        np.testing.assert_array_equal(row_items, want_items[row][valid[row]])
        np.testing.assert_array_equal(row_values, want_values[row][valid[row]])


@settings(max_examples=60, deadline=None)
@given(n_items=st.integers(1, 80), depth=st.integers(1, 90), seed=st.integers(0, 2**32 - 1))
def test_one_row_is_ranked_as_in_a_batch(n_items: int, depth: int, seed: int) -> None:
    # rank_rows takes a shortcut for a single row (top_k_row): the same order and completeness
    # as the batch path (arms.base.top_k) gives that row, ties, -inf, +inf and NaN included.
    rng = np.random.default_rng(seed)
    scores = rng.integers(0, 4, (2, n_items)).astype(np.float32)
    for value, share in ((-np.inf, 0.2), (np.nan, 0.1), (np.inf, 0.05)):
        scores[rng.random(scores.shape) < share] = value
    batch = rank_rows(scores, depth=depth)
    for row in range(2):
        alone, = rank_rows(scores[row][None, :], depth=depth)
        np.testing.assert_array_equal(alone.order, batch[row].order)
        assert alone.order.dtype == batch[row].order.dtype
        assert alone.complete == batch[row].complete
