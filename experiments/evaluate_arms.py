"""Offline evaluation of the arms: ``recbandits evaluate-arms``.

Four protocols, each a function of the dataset alone:

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

Tuning (nested). An arm class may declare ``tuning_grid`` (``{param: [values]}``; the
autoencoder keys its grids by variant in ``variant_tuning_grids``). Each split (each seed of
``random_75_25``, each fold of ``kfold_5``) chooses its own parameters from validation splits
carved out of **its own training part only**, so no rating that a split's model is scored on
ever helped choose that model's parameters (a fold's training part does hold the other folds'
test ratings: that is k-fold). Every grid combination is fitted on the rest of the training
part and scored on the validation part: NDCG@10 on the validation users (minus RMSE for
``kfold_5``), averaged over the validation splits; the best mean wins (ties: the earlier
combination, i.e. the smaller value of an ascending grid). The choice is then fitted on the whole
training part and scored on the split's test part. The validation splits, per protocol:

``random_75_25``
    :data:`VALIDATION_REPEATS` random per-user splits of :data:`VALIDATION_FRACTION` of the
    training ratings (:func:`~arms.data.random_split`). Not 25 %: what a user's row holds at
    scoring time moves the best regularisation, and a 25 % carve leaves each validation user
    56 % of their ratings against the 75 % the test users have. On MovieLens 100K, averaged
    over three carves per seed, a 25 % carve put EASE's best lambda at 700-1,000, where the
    test curve of every seed peaks at 350-425; 10 % carves (users keep 67.5 %) put it at
    350-500. One 10 % carve alone is noisy (its best lambda ranged over 150-700), hence the
    mean over three.
``leave_last_out``
    The second-to-last rating of each user (``temporal_split(train, n_last=1)``).
``temporal_20_pos4``
    The last 20 % of each user's training ratings.
``kfold_5``
    One fold of a ``n_folds``-fold split of the training part.

The chosen parameters of every split are in the results and ``params.json``, with every
validation score.

Use :func:`run` with an :class:`EvaluateConfig` (what the command does: load the data, evaluate,
write ``metrics.csv``, ``metrics_per_split.csv`` and ``params.json``), or :func:`evaluate` on a
:class:`~arms.data.Dataset` already in memory.
"""

from __future__ import annotations

import dataclasses
import datetime as dt
import itertools
import json
import logging
import platform
import time
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass, field
from functools import partial
from pathlib import Path
from typing import Any

import joblib
import numpy as np
import pandas as pd
import scipy.sparse as sp

from arms import registry
from arms._validation import check_int
from arms.base import Recommender, check_k
from arms.data import (
    Dataset,
    kfold_split,
    load_movielens,
    make_synthetic,
    random_split,
    temporal_split,
)
from arms.data.files import SYNTHETIC_READS_NO_DATA, staged_run_folder, write_whole
from arms.data.synthetic import MAX_SYNTHETIC_SIZE, n_ratings_bounds
from arms.metrics import POSITIVE_RATING, mae, ranking_metrics, rmse
from experiments.config import MAX_WORKERS

#: Most splits (split seeds, and folds): each fits every arm again (10**6 seeds ran until killed,
#: found by attack).
MAX_SPLITS = 1000

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
#: Share of each user's training ratings held out by each validation split of ``random_75_25``.
VALIDATION_FRACTION = 0.1
#: Validation splits of ``random_75_25`` whose scores are averaged (the others have one).
VALIDATION_REPEATS = 3
#: Arms evaluated when none are named (names of :mod:`arms.registry`; "ease" is "autoencoder").
DEFAULT_ARMS = ("svd", "sequential", "autoencoder", "popularity", "random")
USER_BATCH = 1024
COLUMNS = ["protocol", "arm", "metric", "value"]
SPLIT_COLUMNS = ["protocol", "arm", "split", "metric", "value"]


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
        """A new, unfitted arm: the spec's ``params`` with ``tuned`` (default none) on top."""
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
    """How a protocol splits data into (train, test) pairs, carves validation, and scores.

    ``carve(train, rng)`` returns ``(inner, validation)``, a partition of ``train``;
    ``repeats`` carves (drawn from independent generators) are averaged. ``split_label`` names a
    split in reports ("seed", "fold"; empty for a protocol with one split).
    """

    name: str
    splits: Callable[[Dataset], Iterator[tuple[Dataset, Dataset]]]
    carve: Callable[[Dataset, np.random.Generator], tuple[Dataset, Dataset]]
    threshold: float | None
    ranking: bool
    repeats: int = 1
    split_label: str = ""


def _protocols(seeds: int, k_folds: int, random_state: int) -> dict[str, Protocol]:
    def random_splits(data: Dataset) -> Iterator[tuple[Dataset, Dataset]]:
        for s in range(seeds):
            yield random_split(data, test_fraction=0.25, random_state=random_state + s)

    def one(split: Callable[[Dataset], tuple[Dataset, Dataset]]):
        return lambda data: iter([split(data)])

    def first_fold(data: Dataset, rng: np.random.Generator) -> tuple[Dataset, Dataset]:
        return next(iter(kfold_split(data, n_splits=k_folds, random_state=rng)))

    return {
        "random_75_25": Protocol(
            "random_75_25",
            random_splits,
            lambda d, rng: random_split(d, test_fraction=VALIDATION_FRACTION, random_state=rng),
            None,
            True,
            repeats=VALIDATION_REPEATS,
            split_label="seed",
        ),
        "leave_last_out": Protocol(
            "leave_last_out",
            one(lambda d: temporal_split(d, n_last=1)),
            lambda d, rng: temporal_split(d, n_last=1),
            None,
            True,
        ),
        "temporal_20_pos4": Protocol(
            "temporal_20_pos4",
            one(lambda d: temporal_split(d, fraction=0.2)),
            lambda d, rng: temporal_split(d, fraction=0.2),
            POSITIVE_RATING,
            True,
        ),
        "kfold_5": Protocol(
            "kfold_5",
            lambda d: kfold_split(d, n_splits=k_folds, random_state=random_state),
            first_fold,
            None,
            False,
            split_label="fold",
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


def _choose(
    protocol: Protocol, trials: list[dict[str, Any]], grid: list[dict[str, Any]]
) -> dict[str, Any]:
    """The grid combination with the best mean validation score (the first among equals)."""
    if not trials:
        return grid[0] if len(grid) == 1 else {}
    values = np.array([t["validation"] for t in trials], dtype=np.float64)
    if np.isnan(values).all():
        logger.warning("%s: every validation score is nan; using the defaults", protocol.name)
        return {}
    return trials[int(np.nanargmax(values))]["params"]


def evaluate(
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
        Names of the arms to evaluate: default :data:`DEFAULT_ARMS`, or every arm in
        ``arm_specs`` when that is given. A deprecated registry alias ("ease") warns.
    protocols : sequence of str, default all of :data:`PROTOCOLS`
    tune : bool, default True
        Tune each arm's grid on validation splits of each split's training part (nested);
        ``False`` uses the defaults.
    n_folds : int, default 5
        Folds of ``kfold_5`` (and of the carve that tunes each of them).
    random_state : int, default 0
        Base seed of every split and every validation carve (>= 0).
    n_jobs : int, default 1
        Worker processes (joblib) fitting arms side by side; results do not depend on it, fit
        times do (workers share the machine).
    arm_specs : dict of str to ArmSpec, optional
        The arms to choose from (default :func:`default_arms`).

    Returns
    -------
    pandas.DataFrame
        Tidy metrics (means over the splits), columns :data:`COLUMNS`. ``attrs["params"]``:
        ``{protocol: {arm: [params of split 0, split 1, ...]}}``, the hyper-parameters each split
        was scored with; ``attrs["tuning"]``: ``{protocol: {arm: [trial, ...]}}``, one trial per
        split and grid combination (``split``, ``params``, ``validation`` the mean score,
        ``scores`` one per validation carve, ``fit_time_s``); ``attrs["per_split"]``: the metrics
        of every split, columns :data:`SPLIT_COLUMNS`; ``attrs["split_labels"]``:
        ``{protocol: "seed" | "fold" | ""}``.

    Raises
    ------
    TypeError, ValueError
        For a dataset of the wrong type, an unknown arm or protocol, or a size out of range.
    """
    if not isinstance(dataset, Dataset):
        raise TypeError(f"dataset must be an arms.data.Dataset, got {type(dataset).__name__}")
    for name, value, low, high in (("seeds", seeds, 1, MAX_SPLITS), ("k", k, 1, None),
                                   ("n_folds", n_folds, 2, MAX_SPLITS),
                                   ("random_state", random_state, 0, None)):  # fmt: skip
        check_int(name, value, low=low, high=high)
    check_int("n_jobs", n_jobs, low=1, high=MAX_WORKERS)  # simulate's cap on worker processes
    if k > dataset.n_items:
        raise ValueError(f"k must be at most the number of items ({dataset.n_items}), got {k}")
    specs = default_arms() if arm_specs is None else dict(arm_specs)
    labels = _arm_labels(specs, arms, defaults=arm_specs is None)
    bad = [p for p in protocols if p not in PROTOCOLS]
    if bad:
        raise ValueError(f"unknown protocols {bad}; available: {list(PROTOCOLS)}")

    table = _protocols(seeds, n_folds, random_state)
    rows: list[tuple[str, str, str, float]] = []
    split_rows: list[tuple[str, str, int, str, float]] = []
    chosen: dict[str, dict[str, list[dict[str, Any]]]] = {}
    tuning: dict[str, dict[str, list[dict[str, Any]]]] = {}
    with joblib.Parallel(n_jobs=n_jobs) as parallel:
        for pname in (p for p in PROTOCOLS if p in protocols):
            protocol = table[pname]
            spec_list = [specs[a] for a in labels
                         if protocol.ranking or specs[a].factory.predicts_ratings]  # fmt: skip
            if not spec_list:
                continue
            splits = list(protocol.splits(dataset))
            grids = {s.label: (s.grid() if tune else []) for s in spec_list}
            tuning[pname] = _tune(parallel, protocol, splits, spec_list, grids, k, random_state)
            chosen[pname] = _chosen(protocol, spec_list, grids, tuning[pname], len(splits))
            _score(parallel, protocol, splits, spec_list, chosen[pname], k, rows, split_rows)
    out = pd.DataFrame(rows, columns=COLUMNS)
    out.attrs["params"] = chosen
    out.attrs["tuning"] = tuning
    out.attrs["per_split"] = pd.DataFrame(split_rows, columns=SPLIT_COLUMNS)
    out.attrs["split_labels"] = {p: table[p].split_label for p in chosen}
    return out


def _arm_labels(specs: dict[str, ArmSpec], arms: Sequence[str] | None, *,
                defaults: bool) -> list[str]:
    """The arms :func:`evaluate` runs, in order, checked against ``specs``.

    Parameters
    ----------
    specs : dict of str to ArmSpec
        The arms to choose from.
    arms : sequence of str or None
        Names asked for; None: :data:`DEFAULT_ARMS` when ``defaults`` (the registry's specs),
        else every arm of ``specs``.
    defaults : bool
        Whether ``specs`` are :func:`default_arms`.

    Raises
    ------
    ValueError
        For an unknown arm, an arm named twice, or none at all.
    """
    if arms is None:
        labels = [a for a in DEFAULT_ARMS if a in specs] if defaults else list(specs)
    else:
        labels = [registry.canonical_name(a) for a in arms]  # a deprecated alias warns
    unknown = [a for a in labels if a not in specs]
    if unknown:
        raise ValueError(f"unknown arms {unknown}; available: {sorted(specs)}")
    registry.refuse_repeats(labels)  # labels of the given specs, not only registry names
    return labels


def _chosen(protocol: Protocol, spec_list: list[ArmSpec], grids: dict[str, list[dict[str, Any]]],
            tuning: dict[str, list[dict[str, Any]]], n_splits: int
            ) -> dict[str, list[dict[str, Any]]]:
    """Each arm's parameters for each of ``n_splits`` splits: its defaults, then the best trial.

    Parameters
    ----------
    protocol : Protocol
    spec_list : list of ArmSpec
    grids : dict of str to list of dict
        Each arm's grid combinations, by label.
    tuning : dict of str to list of dict
        :func:`_tune`'s trials (arms without trials keep their defaults).
    n_splits : int
    """
    return {
        s.label: [{**s.params, **_choose(protocol, [t for t in tuning.get(s.label, [])
                                                    if t["split"] == j], grids[s.label])}
                  for j in range(n_splits)]
        for s in spec_list
    }


def _tune(parallel: joblib.Parallel, protocol: Protocol, splits: list[tuple[Dataset, Dataset]],
          spec_list: list[ArmSpec], grids: dict[str, list[dict[str, Any]]], k: int,
          random_state: int) -> dict[str, list[dict[str, Any]]]:
    """Score every grid combination of each tuned arm on validation carves of every split.

    Nested: the validation carves of split ``j`` come from split ``j``'s training part alone
    (seeded by ``[random_state, j, repeat]``), and choose split ``j``'s parameters alone. Arms
    whose grid in ``grids`` has fewer than two combinations are not tuned.

    Parameters
    ----------
    parallel : joblib.Parallel
        The workers fitting the arms.
    protocol : Protocol
    splits : list of (train, test) Datasets
    spec_list : list of ArmSpec
    grids : dict of str to list of dict
        Each arm's grid combinations, by label.
    k : int
        Slate length of the ranking metrics.
    random_state : int

    Returns
    -------
    dict of str to list of dict
        Per tuned arm, one trial per split and combination (``split``, ``params``,
        ``validation``, ``scores``, ``fit_time_s``).
    """
    tuned_specs = [s for s in spec_list if len(grids[s.label]) > 1]
    tuning: dict[str, list[dict[str, Any]]] = {s.label: [] for s in tuned_specs}
    carves = {
        (j, r): protocol.carve(train, np.random.default_rng([random_state, j, r]))
        for j, (train, _) in enumerate(splits) if tuned_specs
        for r in range(protocol.repeats)
    }  # fmt: skip
    trials = [(j, s, combo) for j in range(len(splits)) for s in tuned_specs
              for combo in grids[s.label]]  # fmt: skip
    results = parallel(
        joblib.delayed(_task)(s, {**s.params, **combo}, *carves[j, r], protocol, k,
                              not protocol.ranking)
        for j, s, combo in trials for r in range(protocol.repeats)
    )  # fmt: skip
    for i, (j, s, combo) in enumerate(trials):
        mine = results[i * protocol.repeats : (i + 1) * protocol.repeats]
        scores = [_validation_value(protocol, result) for result in mine]
        value = float(np.mean(scores))
        tuning[s.label].append({
            "split": j, "params": combo, "validation": value, "scores": scores,
            "fit_time_s": float(np.mean([result["fit_time_s"] for result in mine])),
        })  # fmt: skip
        logger.info("tune %s on %s split %d: %s -> %.4f", s.label, protocol.name, j, combo, value)
    return tuning


def _score(parallel: joblib.Parallel, protocol: Protocol, splits: list[tuple[Dataset, Dataset]],
           spec_list: list[ArmSpec], chosen: dict[str, list[dict[str, Any]]], k: int,
           rows: list[tuple[str, str, str, float]],
           split_rows: list[tuple[str, str, int, str, float]]) -> None:
    """Fit each split's chosen parameters on its training part and score its test part.

    Parameters
    ----------
    parallel : joblib.Parallel
    protocol : Protocol
    splits : list of (train, test) Datasets
    spec_list : list of ArmSpec
    chosen : dict of str to list of dict
        Per arm label, the parameters of each split.
    k : int
        Slate length of the ranking metrics.
    rows, split_rows : list
        Appended to: the means over the splits (:data:`COLUMNS`) and every split's metrics
        (:data:`SPLIT_COLUMNS`).
    """
    pname = protocol.name
    with_ratings = pname in ("random_75_25", "kfold_5")
    jobs = [(j, s) for j in range(len(splits)) for s in spec_list]
    results = parallel(
        joblib.delayed(_task)(s, chosen[s.label][j], *splits[j], protocol, k, with_ratings)
        for j, s in jobs
    )  # fmt: skip
    per_arm: dict[str, list[dict[str, float]]] = {s.label: [] for s in spec_list}
    wanted = (*PROTOCOL_METRICS[pname], "n_users", "fit_time_s")
    for (j, s), result in zip(jobs, results, strict=True):
        per_arm[s.label].append(result)
        logger.info("%s %s split %d: %s", pname, s.label, j, result)
        split_rows.extend((pname, s.label, j, _metric_name(m, k), float(result[m]))
                          for m in wanted if m in result)  # fmt: skip
    for s in spec_list:
        frame = pd.DataFrame(per_arm[s.label])
        rows.extend((pname, s.label, _metric_name(m, k), float(frame[m].mean()))
                    for m in wanted if m in frame)  # fmt: skip


_AT_K = ("hit_rate", "precision", "recall", "ndcg", "map", "coverage")


def _metric_name(metric: str, k: int) -> str:
    return f"{metric}@{k}" if metric in _AT_K else metric


# ---------------------------------------------------------------------------- the command
class EvaluateConfigError(ValueError):
    """A value of :class:`EvaluateConfig` that cannot be run; ``field`` names it."""

    def __init__(self, field: str, message: str) -> None:
        super().__init__(message)
        self.field = field


@dataclass(frozen=True)
class EvaluateConfig:
    """Everything one ``evaluate-arms`` run depends on (written to ``params.json``).

    Parameters
    ----------
    data : str or None, default None
        Folder holding the MovieLens files; None: ``RECBANDITS_DATA``, the user cache, else a
        download (see :func:`arms.data.load_movielens`).
    dataset : str, default "ml-100k"
        MovieLens variant to load (a name :func:`arms.data.load_movielens` knows).
    synthetic : int or None, default None
        Evaluate on :func:`synthetic_like_movielens` of this many ratings instead of MovieLens.
    arms : tuple of str or None, default None
        Registry names of the arms (None: :data:`DEFAULT_ARMS`); "ease" is a deprecated alias
        of "autoencoder" and warns.
    protocols : tuple of str, default :data:`PROTOCOLS`
    seeds, k, tune, n_folds, random_state, n_jobs
        As in :func:`evaluate` (defaults 3, 10, True, 5, 0, 1).
    out_dir : str or None, default None
        Folder for the files; None: ``runs/evaluate-arms-<timestamp>``.
    """

    data: str | None = None
    dataset: str = "ml-100k"
    synthetic: int | None = None
    arms: tuple[str, ...] | None = None
    protocols: tuple[str, ...] = PROTOCOLS
    seeds: int = 3
    k: int = 10
    tune: bool = True
    n_folds: int = 5
    random_state: int = 0
    n_jobs: int = 1
    out_dir: str | None = None


def validate(config: EvaluateConfig) -> EvaluateConfig:
    """``config`` with arm aliases replaced by canonical names, checked before any data is read.

    Raises
    ------
    TypeError
        If ``config`` is not an :class:`EvaluateConfig` or a field has the wrong type.
    EvaluateConfigError
        (a ValueError) If a value is out of range or names an unknown arm or protocol; its
        ``field`` says which.
    """
    if not isinstance(config, EvaluateConfig):
        raise TypeError(f"config must be an EvaluateConfig, got {type(config).__name__}")
    for name, low, high in (("seeds", 1, MAX_SPLITS), ("k", 1, None), ("n_folds", 2, MAX_SPLITS),
                            ("random_state", 0, None), ("n_jobs", 1, MAX_WORKERS)):  # fmt: skip
        try:
            check_int(name, getattr(config, name), low=low, high=high)
        except ValueError as exc:
            raise EvaluateConfigError(name, str(exc)) from None
    if config.synthetic is not None:
        try:
            # The real least, that of the smallest catalogue (one rating a user; a second
            # message refused 10 after "from 1" allowed it, found by a README check); from it
            # to the ceiling every size fits its catalogue (test_evaluate_arms.py).
            least = n_ratings_bounds(SYNTHETIC_MIN_USERS, SYNTHETIC_MIN_ITEMS)[0]
            check_int("synthetic", config.synthetic, low=least, high=MAX_SYNTHETIC_SIZE)
        except ValueError as exc:
            raise EvaluateConfigError("synthetic", str(exc)) from None
        if config.data is not None:  # ignored in silence once (found by a README check)
            raise EvaluateConfigError("data", SYNTHETIC_READS_NO_DATA)
    arms = None if config.arms is None else _canonical_arms(config.arms)
    bad = [p for p in config.protocols if p not in PROTOCOLS]
    if bad or not config.protocols:
        raise EvaluateConfigError(
            "protocols", f"unknown protocols {bad}; available: {list(PROTOCOLS)}"
        )
    return dataclasses.replace(config, arms=arms, protocols=tuple(config.protocols))


def _canonical_arms(arms: tuple[str, ...]) -> tuple[str, ...]:
    """The canonical registry names of ``arms`` (a tuple of names or aliases).

    Raises
    ------
    TypeError
        If ``arms`` is a bare string or holds something else than strings.
    EvaluateConfigError
        If it is empty, names an unknown arm or one arm twice (``field`` is ``"arms"``).
    """
    if isinstance(arms, str) or not all(isinstance(a, str) for a in arms):
        raise TypeError(f"arms must be a tuple of arm names, got {arms!r}")
    try:
        return registry.resolve_names(arms)
    except ValueError as exc:
        raise EvaluateConfigError("arms", str(exc)) from None


@dataclass(frozen=True)
class EvaluateResults:
    """What :func:`run` returns.

    Attributes
    ----------
    config : EvaluateConfig
        The validated config.
    dataset : str
        ``repr`` of the dataset evaluated.
    metrics : pandas.DataFrame
        Means over the splits, columns :data:`COLUMNS`.
    per_split : pandas.DataFrame
        Every split's metrics, columns :data:`SPLIT_COLUMNS`.
    params : dict
        ``{protocol: {arm: [params of split 0, ...]}}``: what each split was scored with.
    tuning : dict
        Every validation trial (see :func:`evaluate`).
    split_labels : dict
        ``{protocol: "seed" | "fold" | ""}``.
    wall_time_s : float
        Loading and evaluating (not writing).
    files : dict of str to Path
        What was written (empty with ``write=False``).
    """

    config: EvaluateConfig
    dataset: str
    metrics: pd.DataFrame
    per_split: pd.DataFrame
    params: dict[str, dict[str, list[dict[str, Any]]]]
    tuning: dict[str, dict[str, list[dict[str, Any]]]]
    split_labels: dict[str, str]
    wall_time_s: float
    files: dict[str, Path] = field(default_factory=dict)


def load_dataset(config: EvaluateConfig) -> Dataset:
    """The dataset ``config`` names: synthetic of ``synthetic`` ratings, else MovieLens.

    Raises
    ------
    EvaluateConfigError
        If ``synthetic`` is too small for its catalogue.
    arms.errors.DataUnavailableError
        If MovieLens is neither in ``data`` nor to be had (see :func:`arms.data.load_movielens`).
    """
    if config.synthetic is not None:
        try:
            return synthetic_like_movielens(int(config.synthetic))
        except ValueError as exc:
            raise EvaluateConfigError("synthetic", f"synthetic {config.synthetic}: {exc}") from None
    return load_movielens(config.data, variant=config.dataset)


def run(
    config: EvaluateConfig, *, dataset: Dataset | None = None, write: bool = True
) -> EvaluateResults:
    """Run ``recbandits evaluate-arms``: load the data, evaluate, write the files.

    Parameters
    ----------
    config : EvaluateConfig
    dataset : Dataset, optional
        Evaluate this instead of loading what ``config`` names.
    write : bool, default True
        Write ``metrics.csv``, ``metrics_per_split.csv`` and ``params.json`` to
        ``config.out_dir``.

    Returns
    -------
    EvaluateResults

    Raises
    ------
    TypeError, EvaluateConfigError
        From :func:`validate`, before any data is read.
    arms.errors.DataUnavailableError
        If the data cannot be had.
    """
    config = validate(config)
    started = time.perf_counter()
    data = load_dataset(config) if dataset is None else dataset
    try:  # known once the data is: before anything is fitted
        check_k(config.k, data.n_items)
    except ValueError as exc:
        raise EvaluateConfigError("k", str(exc)) from None
    metrics = evaluate(
        data, seeds=config.seeds, k=config.k, arms=config.arms, protocols=config.protocols,
        tune=config.tune, n_folds=config.n_folds, random_state=config.random_state,
        n_jobs=config.n_jobs,
    )  # fmt: skip
    results = EvaluateResults(
        config=config,
        dataset=repr(data),
        metrics=metrics,
        per_split=metrics.attrs["per_split"],
        params=metrics.attrs["params"],
        tuning=metrics.attrs["tuning"],
        split_labels=metrics.attrs["split_labels"],
        wall_time_s=time.perf_counter() - started,
    )
    if not write:
        return results
    stamp = dt.datetime.now().strftime("%Y%m%d-%H%M%S")
    out_dir = Path(config.out_dir) if config.out_dir else Path("runs") / f"evaluate-arms-{stamp}"
    return dataclasses.replace(results, files=write_results(results, out_dir))


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


def format_choices(results: EvaluateResults) -> str:
    """The tuned parameters of every split, one line per protocol and tuned arm.

    Only the parameters of the arm's grid are shown (not those fixed by the registry, such as
    ``variant``); an arm without a grid, or a run without tuning, has no line.
    """
    specs = default_arms()
    lines = []
    for pname, per_arm in results.params.items():
        label = results.split_labels.get(pname, "")
        for arm, per_split in per_arm.items():
            fixed = specs[arm].params if arm in specs else {}
            shown = [{p: v for p, v in params.items() if fixed.get(p, object()) != v}
                     for params in per_split]  # fmt: skip
            if not any(shown):
                continue
            parts = [f"{label} {j} " * bool(label) + json.dumps(s, default=_json_default)
                     for j, s in enumerate(shown)]  # fmt: skip
            lines.append(f"chosen on validation ({pname}, {arm}): {'; '.join(parts)}")
    return "\n".join(lines)


def format_results(results: EvaluateResults) -> str:
    """What the command prints: the run, the table, the choices per split, the files."""
    config = results.config
    head = (f"evaluate-arms on {results.dataset}, {config.seeds} split seed(s), tuning "
            f"{'on (nested, per split)' if config.tune else 'off'}")  # fmt: skip
    blocks = [head, format_table(results.metrics)]
    choices = format_choices(results)
    if choices:
        blocks.append(choices)
    tail = f"wall time {results.wall_time_s:.1f} s"
    if results.files:
        tail += "; wrote " + ", ".join(str(p) for p in results.files.values())
    blocks.append(tail)
    return "\n\n".join(blocks)


def _json_default(value: object) -> object:
    if isinstance(value, np.generic):
        return value.item()
    if isinstance(value, Path):
        return str(value)
    raise TypeError(f"not JSON serialisable: {type(value).__name__}")


#: The files a run writes into its folder, by key of :attr:`EvaluateResults.files`.
RUN_FILES = {"metrics": "metrics.csv", "per_split": "metrics_per_split.csv",
             "params": "params.json"}


def write_results(results: EvaluateResults, out_dir: Path) -> dict[str, Path]:
    """Write ``metrics.csv``, ``metrics_per_split.csv`` and ``params.json`` into ``out_dir``.

    ``params.json`` holds the config with the run's facts (dataset, wall time, versions), the
    parameters each split was scored with and every validation score. All are written into
    a folder beside ``out_dir`` first, then moved onto it together
    (:func:`arms.data.files.staged_run_folder`, simulate's rule: ``out_dir`` holds the earlier
    run or this one, never a mix; a Ctrl-C or a full disk mid-write deleted the earlier run
    first, found in review).
    """
    with staged_run_folder(out_dir, RUN_FILES.values()) as staging:
        _write_files(results, {key: staging / name for key, name in RUN_FILES.items()})
    return {key: out_dir / name for key, name in RUN_FILES.items()}


def _write_files(results: EvaluateResults, files: dict[str, Path]) -> None:
    for frame, key in ((results.metrics, "metrics"), (results.per_split, "per_split")):
        write_whole(files[key], partial(frame.to_csv, index=False, float_format="%.6g"))
    config = {
        **dataclasses.asdict(results.config),
        "dataset_loaded": results.dataset,
        "arms_evaluated": list(dict.fromkeys(results.metrics["arm"])),
        "validation_fraction": VALIDATION_FRACTION,
        "validation_repeats": VALIDATION_REPEATS,
        "wall_time_s": round(results.wall_time_s, 2),
        "python": platform.python_version(),
        "numpy": np.__version__,
        "pandas": pd.__version__,
    }
    payload = {
        "config": config,
        "split_labels": results.split_labels,
        "chosen_params": results.params,
        "validation": results.tuning,
    }
    text = json.dumps(payload, indent=2, default=_json_default) + "\n"
    write_whole(files["params"], lambda p: p.write_text(text, encoding="utf-8"))


#: The smallest catalogue of :func:`synthetic_like_movielens`, users and items.
SYNTHETIC_MIN_USERS, SYNTHETIC_MIN_ITEMS = 20, 50


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
    n_users = max(SYNTHETIC_MIN_USERS, round(943 * scale))
    n_items = max(SYNTHETIC_MIN_ITEMS, round(1682 * np.sqrt(scale)))
    return make_synthetic(n_users, n_items, n_ratings, random_state=random_state)
