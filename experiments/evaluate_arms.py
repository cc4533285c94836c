"""Offline evaluation of the arms: ``recbandits evaluate-arms``.

Four protocols, each a function of the dataset alone (nothing is chosen on a test split):

``random_75_25``
    Microsoft Recommenders' protocol: each user's ratings split 75/25 at random
    (:func:`~arms.data.random_split`), every held-out item relevant, averaged over ``seeds`` split
    seeds. Full-catalogue top-10 (every item the user did not rate in training is a candidate,
    no sampled negatives): hit rate, precision, recall, NDCG, MAP, catalogue coverage; RMSE and
    MAE on the held-out ratings for arms that predict ratings.
``leave_last_out``
    Next-item prediction: each user's latest rating is held out
    (:func:`~arms.data.temporal_split` with ``n_last=1``); hit rate and NDCG at 10.
``temporal_20_pos4``
    The last 20 % of each user's ratings held out; the positives are the held-out ratings of 4
    or more (the reward the bandit environments use); the same metrics as ``random_75_25``.
``kfold_5``
    Surprise's benchmark: 5-fold cross-validation over shuffled ratings, RMSE and MAE, for arms
    that predict ratings.

Every protocol reports each arm's fit time (``fit_time_s``, mean over seeds or folds) and the
number of users its means are over (``n_users``).

Tuning. An arm class may declare ``tuning_grid`` (``{param: [values]}``; the autoencoder keys its
grids by variant in ``variant_tuning_grids``). For each protocol the runner carves a validation
split out of the *training* part of the first seed, the same way the protocol splits (for
``leave_last_out`` the second-to-last item), fits every combination on the rest, keeps the best
by NDCG@10 on the validation users (by RMSE for ``kfold_5``; ties go to the earlier
combination), then fits that choice on the full training part of every seed and reports the test
part. The choices are written to ``params.json`` next to ``metrics.csv``.
"""

from __future__ import annotations

import argparse
import datetime as dt
import itertools
import json
import logging
import platform
import sys
import time
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import joblib
import numpy as np
import pandas as pd
import scipy.sparse as sp

from arms import registry
from arms.base import Recommender
from arms.data import (
    Dataset,
    kfold_split,
    load_movielens,
    make_synthetic,
    random_split,
    temporal_split,
)
from arms.metrics import mae, ranking_metrics, rmse

logger = logging.getLogger(__name__)

PROTOCOLS = ("random_75_25", "leave_last_out", "temporal_20_pos4", "kfold_5")
#: What each protocol reports, in table order.
PROTOCOL_METRICS = {
    "random_75_25": ("hit_rate", "precision", "recall", "ndcg", "map", "coverage", "rmse", "mae"),
    "leave_last_out": ("hit_rate", "ndcg", "coverage"),
    "temporal_20_pos4": ("hit_rate", "precision", "recall", "ndcg", "map", "coverage"),
    "kfold_5": ("rmse", "mae"),
}
RANKING_PROTOCOLS = ("random_75_25", "leave_last_out", "temporal_20_pos4")
POSITIVE_RATING = 4.0
#: Arms evaluated when none are named (names of :mod:`arms.registry`; "ease" is "autoencoder").
DEFAULT_ARMS = ("svd", "sequential", "autoencoder", "popularity", "random")
USER_BATCH = 1024
COLUMNS = ["protocol", "arm", "metric", "value"]


@dataclass(frozen=True)
class ArmSpec:
    """An arm to evaluate: a label, a :class:`~arms.base.Recommender` class and fixed params."""

    label: str
    factory: type[Recommender]
    params: dict[str, Any] = field(default_factory=dict)

    def grid(self) -> list[dict[str, Any]]:
        """Every combination of the class's tuning grid (one empty dict if it has none)."""
        grids = getattr(self.factory, "variant_tuning_grids", None)
        variant = self.params.get("variant")
        if isinstance(grids, dict) and variant in grids:
            grid = grids[variant]
        else:
            grid = getattr(self.factory, "tuning_grid", None) or {}
        names = sorted(grid)
        return [dict(zip(names, values, strict=True))
                for values in itertools.product(*(grid[n] for n in names))]  # fmt: skip

    def build(self, tuned: dict[str, Any] | None = None) -> Recommender:
        return self.factory(**{**self.params, **(tuned or {})})


def default_arms() -> dict[str, ArmSpec]:
    """Every arm of :mod:`arms.registry`, by its registry name.

    ``dae`` (the denoising autoencoder) is known but left out of :data:`DEFAULT_ARMS`: one fit
    takes about 15 s on MovieLens 100K, too slow for a run under a minute; name it in ``arms``.
    """
    return {e.name: ArmSpec(e.name, e.cls, dict(e.params)) for e in registry.ARMS.values()}


# ---------------------------------------------------------------------------- scoring one fit
def _relevant(test: Dataset, threshold: float | None) -> sp.csr_matrix:
    r = test.ratings
    if threshold is not None:
        r = r.loc[r["rating"].to_numpy() >= threshold]
    return sp.csr_matrix(
        (np.ones(len(r)), (r["user_index"].to_numpy(), r["item_index"].to_numpy())),
        shape=(test.n_users, test.n_items),
    )


def _rank_metrics(
    model: Recommender, test: Dataset, *, k: int, threshold: float | None = None
) -> dict[str, float]:
    """Full-catalogue top-``k`` metrics of a fitted model (training items excluded)."""
    relevant = _relevant(test, threshold)
    users = np.flatnonzero(np.diff(relevant.indptr) > 0)
    if users.size == 0:
        return {"n_users": 0.0}
    slates = np.concatenate(
        [model.recommend(users[lo : lo + USER_BATCH], k, exclude_seen=True)[0]
         for lo in range(0, len(users), USER_BATCH)]
    )  # fmt: skip
    return ranking_metrics(slates, relevant[users], k=k)


def _rating_metrics(model: Recommender, test: Dataset) -> dict[str, float]:
    predict = getattr(model, "predict", None)
    if not model.predicts_ratings or predict is None or test.n_ratings == 0:
        return {}
    r = test.ratings
    predicted = predict(r["user_index"].to_numpy(), r["item_index"].to_numpy())
    truth = r["rating"].to_numpy(np.float64)
    return {"rmse": rmse(truth, predicted), "mae": mae(truth, predicted)}


def _fit(spec: ArmSpec, tuned: dict[str, Any], train: Dataset) -> tuple[Recommender, float]:
    model = spec.build(tuned)
    start = time.perf_counter()
    model.fit(train)
    return model, time.perf_counter() - start


# ---------------------------------------------------------------------------- protocols
@dataclass(frozen=True)
class Protocol:
    """How a protocol splits data into (train, test) pairs, carves validation, and scores."""

    name: str
    splits: Callable[[Dataset], Iterator[tuple[Dataset, Dataset]]]
    carve: Callable[[Dataset], tuple[Dataset, Dataset]]
    threshold: float | None
    ranking: bool


def _protocols(seeds: int, k_folds: int, random_state: int) -> dict[str, Protocol]:
    def random_splits(data: Dataset) -> Iterator[tuple[Dataset, Dataset]]:
        for s in range(seeds):
            yield random_split(data, test_fraction=0.25, random_state=random_state + s)

    def one(split: Callable[[Dataset], tuple[Dataset, Dataset]]):
        return lambda data: iter([split(data)])

    def first_fold(data: Dataset) -> tuple[Dataset, Dataset]:
        return next(iter(kfold_split(data, n_splits=k_folds, random_state=random_state + 1)))

    return {
        "random_75_25": Protocol(
            "random_75_25",
            random_splits,
            lambda d: random_split(d, test_fraction=0.25, random_state=random_state + 1000),
            None,
            True,
        ),
        "leave_last_out": Protocol(
            "leave_last_out",
            one(lambda d: temporal_split(d, n_last=1)),
            lambda d: temporal_split(d, n_last=1),
            None,
            True,
        ),
        "temporal_20_pos4": Protocol(
            "temporal_20_pos4",
            one(lambda d: temporal_split(d, fraction=0.2)),
            lambda d: temporal_split(d, fraction=0.2),
            POSITIVE_RATING,
            True,
        ),
        "kfold_5": Protocol(
            "kfold_5",
            lambda d: kfold_split(d, n_splits=k_folds, random_state=random_state),
            first_fold,
            None,
            False,
        ),
    }


def _task(
    spec: ArmSpec,
    params: dict[str, Any],
    train: Dataset,
    test: Dataset,
    protocol: Protocol,
    k: int,
    with_ratings: bool,
) -> dict[str, float]:
    """Fit one arm on ``train`` and score it on ``test`` (one unit of parallel work)."""
    model, seconds = _fit(spec, params, train)
    result: dict[str, float] = {"fit_time_s": seconds}
    if protocol.ranking:
        result |= _rank_metrics(model, test, k=k, threshold=protocol.threshold)
    if with_ratings:
        result |= _rating_metrics(model, test)
    return result


def _validation_value(protocol: Protocol, result: dict[str, float]) -> float:
    """Higher is better: NDCG@k for ranking protocols, minus RMSE for rating prediction."""
    if protocol.ranking:
        return result.get("ndcg", float("nan"))
    return -result.get("rmse", float("nan"))


def run(
    dataset: Dataset,
    *,
    seeds: int = 3,
    k: int = 10,
    arms: Sequence[str] | None = None,
    protocols: Sequence[str] = PROTOCOLS,
    tune: bool = True,
    n_folds: int = 5,
    random_state: int = 0,
    n_jobs: int = 1,
    arm_specs: dict[str, ArmSpec] | None = None,
) -> pd.DataFrame:
    """Evaluate the arms on ``dataset`` under the protocols; see the module docstring.

    Parameters
    ----------
    dataset : Dataset
        The ratings (MovieLens 100K for the published comparisons).
    seeds : int, default 3
        Split seeds averaged for ``random_75_25`` (seeds ``random_state .. random_state+seeds-1``).
    k : int, default 10
        Slate length of the ranking metrics.
    arms : sequence of str, optional
        Labels of the arms to evaluate: default :data:`DEFAULT_ARMS` (those :mod:`arms`
        exports), or every arm in ``arm_specs`` when that is given.
    protocols : sequence of str, default all of :data:`PROTOCOLS`
    tune : bool, default True
        Tune each arm's ``tuning_grid`` on a validation split; ``False`` uses the defaults.
    n_folds : int, default 5
        Folds of ``kfold_5``.
    random_state : int, default 0
        Base seed of every split.
    n_jobs : int, default 1
        Worker processes (joblib) fitting arms side by side; results do not depend on it, fit
        times do (workers share the machine).
    arm_specs : dict of str to ArmSpec, optional
        The arms to choose from (default :func:`default_arms`).

    Returns
    -------
    pandas.DataFrame
        Tidy metrics, columns ``protocol, arm, metric, value``; ``attrs["params"]`` holds the
        chosen hyper-parameters per protocol and arm, ``attrs["tuning"]`` every validation score.

    Raises
    ------
    TypeError, ValueError
        For a dataset of the wrong type, an unknown arm or protocol, or a size out of range.
    """
    if not isinstance(dataset, Dataset):
        raise TypeError(f"dataset must be an arms.data.Dataset, got {type(dataset).__name__}")
    for name, value, low in (("seeds", seeds, 1), ("k", k, 1), ("n_folds", n_folds, 2),
                             ("n_jobs", n_jobs, 1)):  # fmt: skip
        if isinstance(value, bool) or not isinstance(value, int | np.integer):
            raise TypeError(f"{name} must be an int, got {type(value).__name__}")
        if value < low:
            raise ValueError(f"{name} must be at least {low}, got {value}")
    if k > dataset.n_items:
        raise ValueError(f"k must be at most the number of items ({dataset.n_items}), got {k}")
    specs = default_arms() if arm_specs is None else dict(arm_specs)
    if arms is None:
        labels = [a for a in DEFAULT_ARMS if a in specs] if arm_specs is None else list(specs)
    else:
        labels = [registry.canonical_name(a) for a in arms]  # a deprecated alias warns
    unknown = [a for a in labels if a not in specs]
    if unknown:
        raise ValueError(f"unknown arms {unknown}; available: {sorted(specs)}")
    if not labels:
        raise ValueError("arms is empty; name at least one arm")
    bad = [p for p in protocols if p not in PROTOCOLS]
    if bad:
        raise ValueError(f"unknown protocols {bad}; available: {list(PROTOCOLS)}")

    table = _protocols(seeds, n_folds, random_state)
    rows: list[tuple[str, str, str, float]] = []
    chosen: dict[str, dict[str, dict[str, Any]]] = {}
    tuning: dict[str, dict[str, list]] = {}
    with joblib.Parallel(n_jobs=n_jobs) as parallel:
        for pname in (p for p in PROTOCOLS if p in protocols):
            protocol = table[pname]
            spec_list = [specs[a] for a in labels
                         if protocol.ranking or specs[a].factory.predicts_ratings]  # fmt: skip
            if not spec_list:
                continue
            with_ratings = pname in ("random_75_25", "kfold_5")
            splits = list(protocol.splits(dataset))

            # Tuning: every grid combination of every arm, on the first split's training part.
            grids = {s.label: (s.grid() if tune else []) for s in spec_list}
            to_tune = [(s, combo) for s in spec_list if len(grids[s.label]) > 1
                       for combo in grids[s.label]]  # fmt: skip
            chosen[pname], tuning[pname] = {}, {}
            if to_tune:
                inner, validation = protocol.carve(splits[0][0])
                results = parallel(
                    joblib.delayed(_task)(s, {**s.params, **c}, inner, validation, protocol, k,
                                          not protocol.ranking)
                    for s, c in to_tune
                )  # fmt: skip
                for (s, combo), result in zip(to_tune, results, strict=True):
                    value = _validation_value(protocol, result)
                    tuning[pname].setdefault(s.label, []).append(
                        {"params": combo, "validation": value, "fit_time_s": result["fit_time_s"]}
                    )
                    logger.info("tune %s on %s: %s -> %.4f", s.label, pname, combo, value)
            for s in spec_list:
                trials = tuning[pname].get(s.label, [])
                values = np.array([t["validation"] for t in trials], dtype=np.float64)
                if trials and not np.isnan(values).all():
                    best = trials[int(np.nanargmax(values))]["params"]
                else:
                    best = grids[s.label][0] if len(grids[s.label]) == 1 else {}
                chosen[pname][s.label] = {**s.params, **best}

            # Evaluation: the chosen parameters on every split.
            jobs = [(s, train, test) for train, test in splits for s in spec_list]
            results = parallel(
                joblib.delayed(_task)(s, chosen[pname][s.label], train, test, protocol, k,
                                      with_ratings)
                for s, train, test in jobs
            )  # fmt: skip
            per_arm: dict[str, list[dict[str, float]]] = {s.label: [] for s in spec_list}
            for (s, _, _), result in zip(jobs, results, strict=True):
                per_arm[s.label].append(result)
                logger.info("%s %s: %s", pname, s.label, result)
            wanted = (*PROTOCOL_METRICS[pname], "n_users", "fit_time_s")
            for s in spec_list:
                frame = pd.DataFrame(per_arm[s.label])
                for metric in wanted:
                    if metric in frame:
                        name = f"{metric}@{k}" if metric in _AT_K else metric
                        rows.append((pname, s.label, name, float(frame[metric].mean())))
    out = pd.DataFrame(rows, columns=COLUMNS)
    out.attrs["params"] = chosen
    out.attrs["tuning"] = tuning
    return out


_AT_K = ("hit_rate", "precision", "recall", "ndcg", "map", "coverage")


# ---------------------------------------------------------------------------- reporting
def format_table(metrics: pd.DataFrame) -> str:
    """The tidy metrics as one readable block per protocol (rows: arms, columns: metrics)."""
    blocks = []
    for pname in dict.fromkeys(metrics["protocol"]):
        part = metrics.loc[metrics["protocol"] == pname]
        wide = part.pivot(index="arm", columns="metric", values="value")
        wide = wide.loc[list(dict.fromkeys(part["arm"])), list(dict.fromkeys(part["metric"]))]
        if "n_users" in wide:
            wide["n_users"] = wide["n_users"].round().astype("Int64")
        blocks.append(f"== {pname}\n{wide.to_string(float_format=lambda v: f'{v:.4f}')}")
    return "\n\n".join(blocks)


def _json_default(value: object) -> object:
    if isinstance(value, np.generic):
        return value.item()
    raise TypeError(f"not JSON serialisable: {type(value).__name__}")


def write_results(
    metrics: pd.DataFrame, out_dir: Path, config: dict[str, Any]
) -> tuple[Path, Path]:
    """Write ``metrics.csv`` and ``params.json`` (config, chosen params, validation scores)."""
    out_dir.mkdir(parents=True, exist_ok=True)
    csv_path = out_dir / "metrics.csv"
    metrics.to_csv(csv_path, index=False, float_format="%.6g")
    params_path = out_dir / "params.json"
    payload = {
        "config": config,
        "chosen_params": metrics.attrs.get("params", {}),
        "validation": metrics.attrs.get("tuning", {}),
    }
    params_path.write_text(json.dumps(payload, indent=2, default=_json_default) + "\n")
    return csv_path, params_path


def synthetic_like_movielens(n_ratings: int, *, random_state: int = 0) -> Dataset:
    """A synthetic dataset of ``n_ratings`` shaped like MovieLens 100K scaled to that size.

    Users grow in proportion to the ratings (943 per 100,000, at least 20) and items with
    their square root (1,682 at 100,000, at least 50), so the density stays MovieLens-like.

    Raises
    ------
    ValueError
        If ``n_ratings`` is too small for that catalogue (see :func:`arms.data.make_synthetic`).
    """
    scale = n_ratings / 100_000
    n_users = max(20, round(943 * scale))
    n_items = max(50, round(1682 * np.sqrt(scale)))
    return make_synthetic(n_users, n_items, n_ratings, random_state=random_state)


def main(args: argparse.Namespace) -> int:
    """Entry point of ``recbandits evaluate-arms``: load data, run, print, write files."""
    started = time.perf_counter()
    arm_labels = getattr(args, "arms", None)
    if isinstance(arm_labels, str):
        arm_labels = [registry.canonical_name(a.strip()) for a in arm_labels.split(",")
                      if a.strip()]
    known = default_arms()
    if arm_labels is not None:
        unknown = [a for a in arm_labels if a not in known]
        if unknown or not arm_labels:
            print(f"recbandits evaluate-arms: --arms {','.join(arm_labels)}: unknown arms "
                  f"{unknown}; available: {','.join(known)}", file=sys.stderr)  # fmt: skip
            return 2
    seeds = int(getattr(args, "seeds", 3))
    n_jobs = getattr(args, "jobs", None)
    n_jobs = 1 if n_jobs is None else int(n_jobs)
    for option, value in (("--seeds", seeds), ("--jobs", n_jobs)):
        if value < 1:
            print(f"recbandits evaluate-arms: {option} must be at least 1, got {value}",
                  file=sys.stderr)  # fmt: skip
            return 2
    tune = not getattr(args, "no_tune", False)
    n_synthetic = getattr(args, "synthetic", None)
    if n_synthetic is not None:
        try:
            dataset = synthetic_like_movielens(int(n_synthetic))
        except ValueError as exc:
            print(f"recbandits evaluate-arms: --synthetic {n_synthetic}: {exc}", file=sys.stderr)
            return 2
    else:
        variant = getattr(args, "dataset", None) or "movielens"
        dataset = load_movielens(getattr(args, "data", None), variant=variant)
    metrics = run(dataset, seeds=seeds, arms=arm_labels, tune=tune, n_jobs=n_jobs)
    elapsed = time.perf_counter() - started
    out = getattr(args, "out", None)
    stamp = dt.datetime.now().strftime("%Y%m%d-%H%M%S")
    out_dir = Path(out) if out else Path("runs") / f"evaluate-arms-{stamp}"
    config = {
        "dataset": repr(dataset),
        "seeds": seeds,
        "k": 10,
        "tune": tune,
        "n_jobs": n_jobs,
        "arms": sorted(set(metrics["arm"])),
        "wall_time_s": round(elapsed, 2),
        "python": platform.python_version(),
        "numpy": np.__version__,
        "pandas": pd.__version__,
    }
    csv_path, params_path = write_results(metrics, out_dir, config)
    print(f"evaluate-arms on {dataset!r}, {seeds} split seed(s), tuning {'on' if tune else 'off'}")
    print()
    print(format_table(metrics))
    print()
    for pname, per_arm in metrics.attrs["params"].items():
        tuned = {arm: p for arm, p in per_arm.items() if p}
        if tuned:
            print(f"chosen on validation ({pname}): {json.dumps(tuned, default=_json_default)}")
    print(f"wall time {elapsed:.1f} s; wrote {csv_path} and {params_path}")
    return 0
