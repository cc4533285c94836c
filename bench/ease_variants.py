"""EASE and the linear-autoencoder family on protocol 1: tuned on validation, and their ceilings.

``evaluate-arms``' protocol 1 (``random_75_25``) splits each MovieLens 100K user's ratings 75/25 at
random (:func:`arms.data.random_split`, seeds 0, 1, 2), counts every held-out item as relevant
and ranks the whole catalogue minus the user's training items. On those splits and scored by the
same metric code (:func:`arms.metrics.ranking_metrics`), this script prints:

1. **Tuned on validation only** (what the targets NDCG@10 >= 0.48 and Precision@10 >= 0.42 are
   about): :func:`experiments.evaluate_arms.evaluate` itself, so each seed's parameters are chosen
   on three 10 % validation carves of that seed's own training part, exactly as
   ``evaluate-arms`` chooses them, for :class:`arms.AutoencoderRecommender`'s linear variants:

   * ``ease``: EASE (Steck 2019), ``B = I - P / diag(P)``, ``P = (X^T X + lambda I)^-1``;
   * ``dlae``: DLAE (Steck, "Autoencoders that don't overfit towards the identity", NeurIPS
     2020), the ridge ``lambda + p / (1 - p) diag(X^T X)`` that input dropout ``p`` amounts to,
     solved without the zero-diagonal constraint, ``B = (X^T X + L)^-1 X^T X``, its diagonal
     then zeroed (the registry's ``autoencoder`` arm);
   * ``edlae``: the same ridge with EASE's zero diagonal (EDLAE, full emphasis);
   * ``dlae-wide``: DLAE over a log-spaced grid of 20 (lambda 100-1,600, p 0.1-0.75) instead of
     the shipped 6, to show the choice does not hang on a grid drawn near the test optimum;
   * ``ease-norm``: "normalised EASE", fitted on ``X diag(d^-a)`` with ``d`` the item degrees
     (training counts), so popular items weigh less in the Gram matrix;
   * ``ease-pop``, ``dlae-pop``: EASE's or DLAE's scores times ``d^b`` (b < 0 favours the tail).

   Per seed: NDCG@10, Precision@10 and the parameters chosen; then the means.
2. **Ceilings, for information only**: each variant at the single setting of a finer grid that
   does best **on the test splits** (mean Precision@10 over the three), a figure no honest tuner
   can promise; then the input variants tried before, each at its best on test: our float32 arm
   against a textbook EASE in float64 numpy, rating values 1-5 as input (what Cornac's ``EASE``
   reads), Cornac's ``posB`` clipping of negative weights, rows weighted by ``n_u^-0.25``.
3. The spread of the figure between splits: EASE at lambda 400 over ``--seeds`` split seeds.

Run from the repository root (11.6 min at load average 6; part 1 alone, ``--skip-ceilings``,
is about a sixth of it)::

    RECBANDITS_DATA=/path/holding/ml-100k .venv/bin/python bench/ease_variants.py

``--random-state 3 --skip-ceilings`` runs part 1 on split seeds 3, 4, 5, which were not looked
at while the grids were chosen.
"""

from __future__ import annotations

import argparse
import itertools
from collections.abc import Callable

import numpy as np
import scipy.sparse as sp

from arms import AutoencoderRecommender
from arms.autoencoder import ease_weights
from arms.data import Dataset, load_movielens, random_split
from arms.metrics import ranking_metrics
from experiments.evaluate_arms import ArmSpec, evaluate

K = 10
Split = tuple[Dataset, Dataset]
Metrics = dict[str, float]


class ScaledLinear(AutoencoderRecommender):
    """A linear variant fitted on popularity-scaled columns, or with popularity-scaled scores.

    With ``d`` the items' training counts: the item-item matrix is fitted on ``X diag(d^-a)``
    (``item_power`` a: "normalised EASE", a popular item's column counts less in the Gram
    matrix; lambda is scaled by the mean of ``d^-2a`` so it stays relative to the Gram matrix)
    and its scores multiplied by ``d^b`` (``score_power`` b < 0 favours the long tail). Both fold
    into the weights, ``W = diag(d^-a) B diag(d^b)``, so scoring is the arm's ``X @ W``.
    """

    def __init__(self, *, variant: str = "ease", l2: float | None = None,
                 corruption: float = 0.5, item_power: float = 0.0,
                 score_power: float = 0.0) -> None:
        super().__init__(variant=variant, l2=l2, corruption=corruption)
        self.item_power = item_power
        self.score_power = score_power

    def _fit(self, train: Dataset) -> None:
        self.inputs_ = sp.csr_matrix(train.interaction_matrix(binary=True), dtype=np.float32)
        self.kept_items_ = np.arange(self.n_items_, dtype=np.int64)
        degree = np.maximum(self.popularity_, 1.0)
        scale = degree ** -float(self.item_power)
        dropout = 0.0 if self.variant == "ease" else float(self.corruption)
        b = ease_weights(sp.csr_matrix(self.inputs_ @ sp.diags(scale.astype(np.float32))),
                         self.l2_ * float(np.mean(scale**2)), dropout=dropout,
                         constrain_diagonal=self.variant != "dlae", dtype=np.float32)
        b *= scale[:, None].astype(np.float32)
        b *= (degree ** float(self.score_power)).astype(np.float32)
        self.weights_ = b


def _with_grid(cls: type[AutoencoderRecommender], variant: str,
               grid: dict[str, list[float]]) -> type[AutoencoderRecommender]:
    """``cls`` with ``grid`` as ``variant``'s tuning grid (what ``evaluate-arms`` searches)."""
    grids = {**AutoencoderRecommender.variant_tuning_grids, variant: grid}
    return type(f"{cls.__name__}_{variant}", (cls,), {"variant_tuning_grids": grids})


SHIPPED = AutoencoderRecommender.variant_tuning_grids
#: name -> (class, fixed params, grid tuned on validation in part 1, grid of the ceiling).
VARIANTS: dict[str, tuple[type[AutoencoderRecommender], dict[str, object],
                          dict[str, list[float]], dict[str, list[float]]]] = {
    "ease": (AutoencoderRecommender, {"variant": "ease"}, SHIPPED["ease"],
             {"l2": [300.0, 350.0, 400.0, 450.0, 500.0]}),
    "dlae": (AutoencoderRecommender, {"variant": "dlae"}, SHIPPED["dlae"],
             {"l2": [200.0, 300.0, 400.0, 500.0], "corruption": [0.25, 0.33, 0.5, 0.6]}),
    "edlae": (AutoencoderRecommender, {"variant": "edlae"}, SHIPPED["edlae"],
              {"l2": [200.0, 300.0, 400.0, 500.0], "corruption": [0.25, 0.33, 0.5, 0.6]}),
    # Drawn without looking at any test curve: does DLAE's choice hang on a grid near its peak?
    "dlae-wide": (AutoencoderRecommender, {"variant": "dlae"},
                  {"l2": [100.0, 200.0, 400.0, 800.0, 1600.0],
                   "corruption": [0.1, 0.25, 0.5, 0.75]}, {}),
    "ease-norm": (ScaledLinear, {"variant": "ease"},
                  {"l2": [200.0, 400.0, 800.0], "item_power": [0.1, 0.25]},
                  {"l2": [100.0, 200.0, 400.0], "item_power": [0.1, 0.25, 0.4]}),
    "ease-pop": (ScaledLinear, {"variant": "ease"},
                 {"l2": [250.0, 350.0, 500.0], "score_power": [-0.1, -0.05]},
                 {"l2": [300.0, 400.0, 500.0], "score_power": [-0.15, -0.1, -0.05, 0.05]}),
    "dlae-pop": (ScaledLinear, {"variant": "dlae"},
                 {"l2": [250.0, 350.0, 500.0], "score_power": [-0.1, -0.05]},
                 {"l2": [200.0, 300.0, 400.0], "score_power": [-0.15, -0.1, -0.05, 0.05]}),
}  # fmt: skip


# ---------------------------------------------------------------------------- part 1
def _picks(params: dict[str, object], grid: dict[str, list[float]]) -> str:
    return "(" + ", ".join(f"{params[n]:g}" for n in sorted(grid)) + ")"


def nested(data: Dataset, random_state: int, n_jobs: int) -> dict[str, Metrics]:
    """Part 1: the variants through ``evaluate-arms``' nested tuner; prints a row per variant."""
    specs = {name: ArmSpec(name, _with_grid(cls, str(fixed["variant"]), grid), dict(fixed))
             for name, (cls, fixed, grid, _) in VARIANTS.items()}  # fmt: skip
    table = evaluate(data, seeds=3, arm_specs=specs, protocols=["random_75_25"],
                     random_state=random_state, n_jobs=n_jobs)  # fmt: skip
    per_split = table.attrs["per_split"]
    chosen = table.attrs["params"]["random_75_25"]
    seeds = "/".join(str(random_state + s) for s in range(3))
    print(f"1. tuned on validation carved from each split's training part (seeds {seeds})")
    print(f"{'variant':10s} {'NDCG@10 per seed':22s} {'P@10 per seed':22s} {'mean NDCG / P':16s} "
          "chosen per seed")
    means: dict[str, Metrics] = {}
    for name, (_, _, grid, _) in VARIANTS.items():
        rows = per_split[per_split["arm"] == name]
        nd = rows.loc[rows["metric"] == "ndcg@10", "value"].to_numpy()
        pr = rows.loc[rows["metric"] == "precision@10", "value"].to_numpy()
        picks = " ".join(_picks(c, grid) for c in chosen[name])
        print(f"{name:10s} {'/'.join(f'{v:.4f}' for v in nd):22s} "
              f"{'/'.join(f'{v:.4f}' for v in pr):22s} {nd.mean():.4f} / {pr.mean():.4f}  "
              f"{' x '.join(sorted(grid))}: {picks}")
        means[name] = {"ndcg": float(nd.mean()), "precision": float(pr.mean())}
    return means


# ---------------------------------------------------------------------------- part 2
def _users(test: Dataset) -> tuple[np.ndarray, sp.csr_matrix]:
    relevant = test.interaction_matrix(binary=True)
    users = np.flatnonzero(np.diff(relevant.indptr) > 0)
    return users, relevant[users]


def arm_metrics(params: dict[str, object], train: Dataset, test: Dataset,
                cls: type[AutoencoderRecommender] = AutoencoderRecommender) -> Metrics:
    """Protocol 1's metrics of ``cls(**params)`` fitted on ``train``."""
    users, relevant = _users(test)
    slates = cls(**params).fit(train).recommend(users, K)[0]  # type: ignore[arg-type]
    return ranking_metrics(slates, relevant, k=K)


def matrix_metrics(inputs: sp.csr_matrix, weights: np.ndarray, train: Dataset, test: Dataset,
                   column_scale: np.ndarray | None = None) -> Metrics:
    """Protocol 1's metrics of the scores ``inputs @ weights`` (times ``column_scale``)."""
    users, relevant = _users(test)
    scores = np.asarray(inputs[users] @ weights)
    if column_scale is not None:
        scores = scores * column_scale
    scores[train.interaction_matrix(binary=True)[users].toarray() > 0] = -np.inf
    top = np.argsort(-scores, axis=1, kind="stable")[:, :K]
    return ranking_metrics(top, relevant, k=K)


def textbook_ease(gram: np.ndarray, ridge: float) -> np.ndarray:
    """``B = I - P diag(1/diag P)`` with zero diagonal, ``P = (gram + ridge I)^-1``; float64."""
    g = gram.copy()
    g[np.diag_indices_from(g)] += ridge
    p = np.linalg.inv(g)
    b = p / -np.diag(p)
    b[np.diag_indices_from(b)] = 0.0
    return b


def other_variants() -> dict[str, Callable[[Dataset, Dataset], Metrics]]:
    """Fixed-setting variants (their best on test, found by wider grids in one-off runs)."""
    def textbook(lam: float, *, ratings: bool = False, pos_b: bool = False,
                 user_power: float = 0.0) -> Callable[[Dataset, Dataset], Metrics]:
        def run(train: Dataset, test: Dataset) -> Metrics:
            x = sp.csr_matrix(train.interaction_matrix(binary=not ratings), dtype=np.float64)
            rows, ridge = x, lam
            if user_power:
                n_u = np.asarray(x.sum(axis=1)).ravel()
                weight = np.where(n_u > 0, n_u, 1.0) ** -user_power
                rows = sp.diags(np.sqrt(weight)) @ x
                ridge = lam * float(weight.mean())  # the same ridge relative to the weighted Gram
            b = textbook_ease((rows.T @ rows).toarray(), ridge)
            if pos_b:
                b[b < 0] = 0.0
            return matrix_metrics(x, b, train, test)
        return run

    return {
        "ease float32 (the arm) 400": lambda tr, te: arm_metrics(
            {"variant": "ease", "l2": 400.0}, tr, te),
        "textbook float64 400": textbook(400.0),
        "rating values 6000": textbook(6000.0, ratings=True),
        "posB 400": textbook(400.0, pos_b=True),
        "posB 800": textbook(800.0, pos_b=True),
        "user rows n_u^-0.25 400": textbook(400.0, user_power=0.25),
    }  # fmt: skip


def _row(name: str, got: np.ndarray, note: str = "") -> None:
    nd, pr = got[:, 0], got[:, 1]
    print(f"{name:26s} {'/'.join(f'{v:.4f}' for v in nd):22s} "
          f"{'/'.join(f'{v:.4f}' for v in pr):22s} {nd.mean():.4f} / {pr.mean():.4f}  {note}")


def ceilings(splits: list[Split]) -> dict[str, Metrics]:
    """Part 2: each variant's best setting on the test splits, and the fixed variants."""
    print("\n2. ceilings: the setting best on the test splits (seeds 0/1/2), information only")
    print(f"{'variant':26s} {'NDCG@10 per seed':22s} {'P@10 per seed':22s} {'mean NDCG / P':16s}"
          " setting")
    best: dict[str, Metrics] = {}
    for variant, (cls, fixed, _, grid) in VARIANTS.items():
        if not grid:
            continue
        names = sorted(grid)
        trials = []
        for values in itertools.product(*(grid[n] for n in names)):
            params = {**fixed, **dict(zip(names, values, strict=True))}
            got = np.array([[m["ndcg"], m["precision"]]
                            for m in (arm_metrics(params, tr, te, cls) for tr, te in splits)])
            trials.append((got[:, 1].mean(), got[:, 0].mean(), params, got))
        _, _, params, got = max(trials, key=lambda t: (t[0], t[1]))
        setting = ", ".join(f"{n} {params[n]:g}" for n in names)
        _row(f"{variant} (best of {len(trials)})", got, setting)
        best[variant] = {"ndcg": float(got[:, 0].mean()), "precision": float(got[:, 1].mean())}
    for name, run in other_variants().items():
        got = np.array([[m["ndcg"], m["precision"]] for m in (run(tr, te) for tr, te in splits)])
        _row(name, got)
        best[name] = {"ndcg": float(got[:, 0].mean()), "precision": float(got[:, 1].mean())}
    return best


def main(argv: list[str] | None = None) -> dict[str, float]:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seeds", type=int, default=10, help="split seeds for the spread")
    parser.add_argument("--random-state", type=int, default=0,
                        help="first split seed of part 1 (parts 2 and 3 use 0, 1, 2, ...)")
    parser.add_argument("--jobs", type=int, default=2, help="worker processes of part 1")
    parser.add_argument("--skip-ceilings", action="store_true", help="part 1 only")
    args = parser.parse_args(argv)
    data = load_movielens()
    figures: dict[str, float] = {}
    for name, m in nested(data, args.random_state, args.jobs).items():
        figures[f"validation_tuned_{name}_ndcg"] = m["ndcg"]
        figures[f"validation_tuned_{name}_precision"] = m["precision"]
    if not args.skip_ceilings:
        splits = [random_split(data, test_fraction=0.25, random_state=s)
                  for s in range(max(3, args.seeds))]  # fmt: skip
        for name, m in ceilings(splits[:3]).items():
            figures[f"test_chosen_{name.split(' (')[0].replace(' ', '_')}_precision"] = (
                m["precision"])
        spread = np.array([arm_metrics({"variant": "ease", "l2": 400.0}, tr, te)["precision"]
                           for tr, te in splits])  # fmt: skip
        print(f"\n3. ease lambda=400 over {len(splits)} split seeds: P@10 "
              f"{' '.join(f'{v:.4f}' for v in spread)}")
        print(f"mean {spread.mean():.4f}, sd {spread.std(ddof=1):.4f} per split, so a 3-seed mean "
              f"has sd {spread.std(ddof=1) / np.sqrt(3):.4f}")
        figures["ease_precision_mean_all_seeds"] = float(spread.mean())
        figures["ease_precision_sd_per_seed"] = float(spread.std(ddof=1))
    print()
    for key, value in figures.items():
        print(f"{key}: {value:.4f}")
    return figures


if __name__ == "__main__":
    main()
