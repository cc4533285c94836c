"""Why EASE stops at Precision@10 ~0.420 on protocol 1: a textbook EASE and its known variants.

``evaluate-arms``' protocol 1 (``random_75_25``) splits each MovieLens 100K user's ratings 75/25 at
random (:func:`arms.data.random_split`, seeds 0, 1, 2), counts every held-out item as relevant
and ranks the whole catalogue minus the user's training items. This script fits, on the same
splits and scored by the same metric code (:func:`arms.metrics.ranking_metrics`):

* ``ours``: :class:`arms.AutoencoderRecommender` (float32, Cholesky inverse), as ``evaluate-arms``
  scores it;
* ``textbook``: EASE written out in float64 numpy (Steck 2019): ``P = (X^T X + lambda I)^-1``,
  ``B = I - P diag(1 / diag P)`` with a zero diagonal, scores ``X B`` on the binary matrix,
  training items set to ``-inf``, a stable sort;
* ``rating``: the same on the rating values 1-5 instead of 1 (what Cornac's ``EASE`` reads from
  its rating matrix; lambda scaled up, since the Gram matrix grows about 13x);
* ``posB``: negative weights of ``B`` set to 0 (Cornac's ``posB=True``, its default);
* ``dlae``: popularity-proportional ridge ``lambda I + q diag(X^T X)`` (the dropout emphasis of
  Steck, "Autoencoders that don't overfit towards the identity", NeurIPS 2020);
* ``userweight``: the Gram matrix over rows weighted by ``n_u^-0.25`` (heavy users count less);

each at the lambda (and q) where it does best **on the test splits** (found by wider grids in
one-off runs; listed here so the run stays short), which favours every variant. Then the best
plain lambda over ``--seeds`` split seeds (default 10), to show the spread of the figure between
splits.

Run from the repository root (about a minute)::

    RECBANDITS_DATA=/path/holding/ml-100k .venv/bin/python bench/ease_variants.py
"""

from __future__ import annotations

import argparse
from collections.abc import Callable

import numpy as np
import scipy.sparse as sp

from arms import AutoencoderRecommender
from arms.data import Dataset, load_movielens, random_split
from arms.metrics import ranking_metrics

K = 10


def textbook_ease(gram: np.ndarray, ridge: np.ndarray | float) -> np.ndarray:
    """``B = I - P diag(1/diag P)`` with zero diagonal, ``P = (gram + diag(ridge))^-1``; float64."""
    g = gram.copy()
    g[np.diag_indices_from(g)] += ridge
    p = np.linalg.inv(g)
    b = p / -np.diag(p)
    b[np.diag_indices_from(b)] = 0.0
    return b


def score_topk(inputs: sp.csr_matrix, weights: np.ndarray, train: Dataset, test: Dataset
               ) -> dict[str, float]:
    """Protocol 1's metrics of the scores ``inputs @ weights`` (every test item relevant)."""
    relevant = test.interaction_matrix(binary=True)
    users = np.flatnonzero(np.diff(relevant.indptr) > 0)
    scores = np.asarray(inputs[users] @ weights)
    scores[train.interaction_matrix(binary=True)[users].toarray() > 0] = -np.inf
    top = np.argsort(-scores, axis=1, kind="stable")[:, :K]
    return ranking_metrics(top, relevant[users], k=K)


def variants() -> dict[str, Callable[[Dataset, Dataset], dict[str, float]]]:
    """Each variant: (train, test) -> metrics."""
    def ours(lam: float) -> Callable[[Dataset, Dataset], dict[str, float]]:
        def run(train: Dataset, test: Dataset) -> dict[str, float]:
            model = AutoencoderRecommender(l2=lam).fit(train)
            relevant = test.interaction_matrix(binary=True)
            users = np.flatnonzero(np.diff(relevant.indptr) > 0)
            slates = model.recommend(users, K, exclude_seen=True)[0]
            return ranking_metrics(slates, relevant[users], k=K)
        return run

    def plain(lam: float, *, ratings: bool = False, pos_b: bool = False, q: float = 0.0,
              user_power: float = 0.0) -> Callable[[Dataset, Dataset], dict[str, float]]:
        def run(train: Dataset, test: Dataset) -> dict[str, float]:
            x = sp.csr_matrix(train.interaction_matrix(binary=not ratings), dtype=np.float64)
            rows = x
            ridge: np.ndarray | float = lam
            if user_power:
                n_u = np.asarray(x.sum(axis=1)).ravel()
                weight = np.where(n_u > 0, n_u, 1.0) ** -user_power
                rows = sp.diags(np.sqrt(weight)) @ x
                ridge = lam * weight.mean()  # the same ridge relative to the weighted Gram
            gram = (rows.T @ rows).toarray()
            if q:
                ridge = lam + q * np.diag(gram)
            b = textbook_ease(gram, ridge)
            if pos_b:
                b[b < 0] = 0.0
            return score_topk(x, b, train, test)
        return run

    return {
        "ours lambda=400": ours(400.0),
        "textbook lambda=400": plain(400.0),
        "rating lambda=6000": plain(6000.0, ratings=True),
        "posB lambda=400": plain(400.0, pos_b=True),
        "posB lambda=800": plain(800.0, pos_b=True),
        "dlae lambda=300 q=1.5": plain(300.0, q=1.5),
        "dlae lambda=200 q=2.5": plain(200.0, q=2.5),
        "userweight lambda=400": plain(400.0, user_power=0.25),
    }


def main(argv: list[str] | None = None) -> dict[str, float]:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seeds", type=int, default=10, help="split seeds for the spread")
    args = parser.parse_args(argv)
    data = load_movielens()
    splits = [random_split(data, test_fraction=0.25, random_state=s) for s in range(args.seeds)]
    figures: dict[str, float] = {}
    print(f"{'variant':28s} {'NDCG@10 seeds 0/1/2':26s} {'P@10 seeds 0/1/2':26s} mean NDCG / P")
    for name, run in variants().items():
        got = np.array([[m["ndcg"], m["precision"]]
                        for m in (run(tr, te) for tr, te in splits[:3])])
        nd, pr = got[:, 0], got[:, 1]
        print(f"{name:28s} {'/'.join(f'{v:.4f}' for v in nd):26s} "
              f"{'/'.join(f'{v:.4f}' for v in pr):26s} {nd.mean():.4f} / {pr.mean():.4f}")
        figures[f"{name.replace(' ', '_')}_precision"] = float(pr.mean())
    spread = variants()["textbook lambda=400"]
    pr = np.array([spread(tr, te)["precision"] for tr, te in splits])
    print(f"\ntextbook lambda=400 over {len(splits)} split seeds: P@10 "
          f"{' '.join(f'{v:.4f}' for v in pr)}")
    print(f"mean {pr.mean():.4f}, sd {pr.std(ddof=1):.4f} per split, so a 3-seed mean has sd "
          f"{pr.std(ddof=1) / np.sqrt(3):.4f}")
    figures["textbook_precision_mean_all_seeds"] = float(pr.mean())
    figures["textbook_precision_sd_per_seed"] = float(pr.std(ddof=1))
    print()
    for key, value in figures.items():
        print(f"{key}: {value:.4f}")
    return figures


if __name__ == "__main__":
    main()
