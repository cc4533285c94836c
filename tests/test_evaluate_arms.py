"""The offline evaluation runner and its command, end to end on small synthetic data."""

from __future__ import annotations

import json
from pathlib import Path
from typing import ClassVar

import numpy as np
import pandas as pd
import pytest

from arms import AutoencoderRecommender, PopularityRecommender
from arms.data import Dataset, kfold_split, make_synthetic, random_split, temporal_split
from experiments import evaluate_arms
from experiments.cli import main as cli_main
from experiments.evaluate_arms import (
    COLUMNS,
    DEFAULT_ARMS,
    PROTOCOL_METRICS,
    PROTOCOLS,
    VALIDATION_REPEATS,
    ArmSpec,
    EvaluateConfig,
    EvaluateConfigError,
    default_arms,
    evaluate,
    format_results,
    format_table,
    run,
    validate,
)

RANKING_METRICS = ("hit_rate@10", "precision@10", "recall@10", "ndcg@10", "map@10",
                   "coverage@10")  # fmt: skip


@pytest.fixture(scope="module")
def data() -> Dataset:
    return make_synthetic(150, 120, 6_000, random_state=2)


@pytest.fixture(scope="module")
def metrics(data: Dataset) -> pd.DataFrame:
    return evaluate(data, seeds=2)


def _value(metrics: pd.DataFrame, protocol: str, arm: str, metric: str) -> float:
    hit = metrics.query("protocol == @protocol and arm == @arm and metric == @metric")
    assert len(hit) == 1, (protocol, arm, metric)
    return float(hit["value"].iloc[0])


def test_tidy_schema_and_every_protocol(metrics: pd.DataFrame) -> None:
    assert list(metrics.columns) == COLUMNS
    assert set(metrics["protocol"]) == set(PROTOCOLS)
    assert not metrics.duplicated(["protocol", "arm", "metric"]).any()
    assert metrics["value"].notna().all()
    present = [a for a in DEFAULT_ARMS if a in default_arms()]
    for protocol in ("random_75_25", "leave_last_out", "temporal_20_pos4"):
        arms_seen = metrics.loc[metrics["protocol"] == protocol, "arm"]
        assert list(dict.fromkeys(arms_seen)) == present
    # Rating errors only for arms that predict ratings (SVD), in random_75_25 and kfold_5.
    raters = {a for a in present if default_arms()[a].factory.predicts_ratings}
    assert set(metrics.query("protocol == 'kfold_5'")["arm"]) == raters
    assert set(metrics.query("metric == 'rmse'")["arm"]) == raters
    expected = {
        p: {f"{m}@10" if m not in ("rmse", "mae") else m for m in PROTOCOL_METRICS[p]}
        | {"fit_time_s"}
        for p in PROTOCOLS
    }
    for (protocol, arm), part in metrics.groupby(["protocol", "arm"]):
        names = set(part["metric"]) - {"n_users"}
        want = expected[protocol] - (set() if arm in raters else {"rmse", "mae"})
        assert names == want, (protocol, arm)


def test_values_are_in_range(metrics: pd.DataFrame, data: Dataset) -> None:
    ranking = metrics[metrics["metric"].isin(RANKING_METRICS)]
    assert ranking["value"].between(0.0, 1.0).all()
    errors = metrics[metrics["metric"].isin(["rmse", "mae"])]
    assert errors["value"].between(0.3, 2.0).all()
    assert (metrics.query("metric == 'fit_time_s'")["value"] >= 0).all()
    n_users = metrics.query("metric == 'n_users'")
    assert n_users["value"].between(1, data.n_users).all()
    # Hit rate bounds precision; recall and NDCG of one relevant item coincide with hit rates.
    for arm in set(metrics["arm"]) - {"svd"}:
        assert _value(metrics, "random_75_25", arm, "precision@10") <= _value(
            metrics, "random_75_25", arm, "hit_rate@10"
        )


def test_protocol_user_counts(metrics: pd.DataFrame, data: Dataset) -> None:
    # Every user has >= 2 ratings here, so all are evaluated on the random and last-item
    # protocols; the temporal protocol counts only users with a held-out rating >= 4.
    assert _value(metrics, "random_75_25", "popularity", "n_users") == data.n_users
    assert _value(metrics, "leave_last_out", "popularity", "n_users") == data.n_users
    _, test = temporal_split(data, fraction=0.2)
    positives = test.ratings.loc[test.ratings["rating"] >= 4, "user_index"].nunique()
    assert _value(metrics, "temporal_20_pos4", "popularity", "n_users") == positives


def test_arms_rank_sensibly_on_synthetic_data(metrics: pd.DataFrame) -> None:
    for protocol in ("random_75_25", "leave_last_out", "temporal_20_pos4"):
        assert _value(metrics, protocol, "popularity", "ndcg@10") > _value(
            metrics, protocol, "random", "ndcg@10"
        )
    if "sequential" in set(metrics["arm"]):
        assert _value(metrics, "leave_last_out", "sequential", "hit_rate@10") > _value(
            metrics, "leave_last_out", "popularity", "hit_rate@10"
        )
    # Popularity recommends nearly the same slate to everyone; random covers the catalogue.
    assert _value(metrics, "random_75_25", "random", "coverage@10") > 0.9
    assert _value(metrics, "random_75_25", "popularity", "coverage@10") < 0.5


def test_deterministic_whatever_the_workers(metrics: pd.DataFrame, data: Dataset) -> None:
    # SVD, the slowest arm here, is left out to keep the test short; the rest is re-run on two
    # worker processes and must match the single-process run to the last digit.
    arms = [a for a in metrics["arm"].unique() if a != "svd"]
    again = evaluate(data, seeds=2, n_jobs=2, arms=arms)
    mine = metrics[metrics["arm"].isin(arms) & (metrics["metric"] != "fit_time_s")]
    theirs = again[again["metric"] != "fit_time_s"]
    pd.testing.assert_frame_equal(mine.reset_index(drop=True), theirs.reset_index(drop=True))
    for protocol, chosen in again.attrs["params"].items():
        for arm, params in chosen.items():
            assert metrics.attrs["params"][protocol][arm] == params


def test_table_lists_every_protocol(metrics: pd.DataFrame) -> None:
    text = format_table(metrics)
    for protocol in PROTOCOLS:
        assert f"== {protocol}" in text
    assert "ndcg@10" in text and "popularity" in text


# ---------------------------------------------------------------------------- tuning
class SpyRecommender(PopularityRecommender):
    """Popularity with a dummy parameter; records the ratings of every fit."""

    name = "spy"
    tuning_grid: ClassVar[dict[str, list]] = {"shift": [0.0, 1.0]}
    fits: ClassVar[list[tuple[float, set[tuple[int, int]]]]] = []

    def __init__(self, *, shift: float = 0.0) -> None:
        super().__init__()  # popularity's own hyper-parameters (half_life) keep their defaults
        self.shift = shift

    def _fit(self, train: Dataset) -> None:
        super()._fit(train)
        pairs = set(zip(train.ratings["user_id"], train.ratings["item_id"], strict=True))
        SpyRecommender.fits.append((self.shift, pairs))


class RatingSpy(SpyRecommender):
    """The spy, predicting ratings too, so that ``kfold_5`` evaluates (and tunes) it."""

    predicts_ratings: ClassVar[bool] = True

    def predict(self, user_indices: np.ndarray, item_indices: np.ndarray) -> np.ndarray:
        return np.full(len(user_indices), 3.0 + self.shift)


def _pairs(dataset: Dataset) -> frozenset[tuple[int, int]]:
    return frozenset(zip(dataset.ratings["user_id"], dataset.ratings["item_id"], strict=True))


@pytest.mark.parametrize(("protocol", "n_splits", "repeats"),
                         [("random_75_25", 3, VALIDATION_REPEATS), ("kfold_5", 5, 1)])  # fmt: skip
def test_each_split_tunes_inside_its_own_training_part(
    data: Dataset, monkeypatch: pytest.MonkeyPatch, protocol: str, n_splits: int, repeats: int
) -> None:
    # Every fit the runner makes, as (params, training pairs, scored pairs).
    calls: list[tuple[dict, frozenset, frozenset]] = []
    real_task = evaluate_arms._task

    def recording_task(
        spec: ArmSpec, params: dict, train: Dataset, test: Dataset, *rest: object
    ) -> dict[str, float]:
        calls.append((params, _pairs(train), _pairs(test)))
        return real_task(spec, params, train, test, *rest)

    monkeypatch.setattr(evaluate_arms, "_task", recording_task)
    out = evaluate(data, seeds=3, n_folds=5, protocols=[protocol],
                   arm_specs={"spy": ArmSpec("spy", RatingSpy)})  # fmt: skip
    if protocol == "random_75_25":
        splits = [random_split(data, test_fraction=0.25, random_state=s) for s in range(3)]
    else:
        splits = list(kfold_split(data, n_splits=5, random_state=0))
    outer = [(_pairs(train), _pairs(test)) for train, test in splits]
    assert len(outer) == n_splits
    tuning = [c for c in calls if (c[1], c[2]) not in outer]
    assert len(calls) - len(tuning) == n_splits  # one scored fit per split
    claimed = 0
    for train, test in outer:
        # The tuning fits of this split: fitted on part of its training ratings, validated on
        # the rest, so no validation rating is a test rating of this split (the old runner
        # carved one validation split from split 0's training part and used it for all).
        mine = [c for c in tuning if c[1] | c[2] == train]
        assert sorted(c[0]["shift"] for c in mine) == sorted([0.0, 1.0] * repeats)
        for _, inner, validation in mine:
            assert validation and not inner & validation and not validation & test
        claimed += len(mine)
    assert claimed == len(tuning)  # and no tuning fit outside a split's training part
    chosen = out.attrs["params"][protocol]["spy"]
    assert len(chosen) == n_splits and all(c in ({"shift": 0.0}, {"shift": 1.0}) for c in chosen)
    trials = out.attrs["tuning"][protocol]["spy"]
    assert sorted(t["split"] for t in trials) == sorted(list(range(n_splits)) * 2)
    assert all(len(t["scores"]) == repeats for t in trials)


def test_each_split_keeps_the_best_mean_validation_score(data: Dataset) -> None:
    out = evaluate(data, seeds=2, protocols=["kfold_5"], n_folds=3,
                   arm_specs={"spy": ArmSpec("spy", RatingSpy)})  # fmt: skip
    trials = out.attrs["tuning"]["kfold_5"]["spy"]
    for split, chosen in enumerate(out.attrs["params"]["kfold_5"]["spy"]):
        mine = [t for t in trials if t["split"] == split]
        best = max(mine, key=lambda t: t["validation"])
        assert chosen == best["params"]
        assert all(np.isclose(t["validation"], np.mean(t["scores"])) for t in mine)


def test_leave_last_out_tunes_on_the_second_to_last_item(data: Dataset) -> None:
    SpyRecommender.fits.clear()
    evaluate(data, protocols=["leave_last_out"],
             arm_specs={"spy": ArmSpec("spy", SpyRecommender)})  # fmt: skip
    train, _ = temporal_split(data, n_last=1)
    inner, _ = temporal_split(train, n_last=1)
    inner_pairs = set(zip(inner.ratings["user_id"], inner.ratings["item_id"], strict=True))
    assert SpyRecommender.fits[0][1] == inner_pairs


def test_no_tune_uses_defaults(data: Dataset) -> None:
    SpyRecommender.fits.clear()
    out = evaluate(data, seeds=1, protocols=["random_75_25"], tune=False,
                   arm_specs={"spy": ArmSpec("spy", SpyRecommender)})  # fmt: skip
    assert len(SpyRecommender.fits) == 1 and out.attrs["params"]["random_75_25"]["spy"] == [{}]


@pytest.mark.parametrize(
    ("kwargs", "error", "match"),
    [
        ({"seeds": 0}, ValueError, "seeds"),
        ({"k": 1.5}, TypeError, "k must"),
        ({"k": 10_000}, ValueError, "k must"),
        ({"arms": ["nope"]}, ValueError, "unknown arms"),
        ({"protocols": ["nope"]}, ValueError, "unknown protocols"),
        ({"n_jobs": 0}, ValueError, "n_jobs"),
    ],
)
def test_bad_arguments(data: Dataset, kwargs: dict, error: type[Exception], match: str) -> None:
    with pytest.raises(error, match=match):
        evaluate(data, **kwargs)


# ---------------------------------------------------------------------------- run(config)
def test_run_reports_every_split_and_its_choice(data: Dataset) -> None:
    config = EvaluateConfig(arms=("popularity", "autoencoder"), protocols=("random_75_25",),
                            seeds=2)  # fmt: skip
    results = run(config, dataset=data, write=False)
    assert results.files == {} and results.config == config
    per_split = results.per_split
    assert set(per_split["split"]) == {0, 1}
    means = per_split.groupby(["protocol", "arm", "metric"])["value"].mean()
    for row in results.metrics.itertuples():
        assert means[row.protocol, row.arm, row.metric] == pytest.approx(row.value)
    grid = AutoencoderRecommender.variant_tuning_grids["dlae"]
    chosen = results.params["random_75_25"]["autoencoder"]
    assert len(chosen) == 2
    assert all(c["variant"] == "dlae" and c["l2"] in grid["l2"]
               and c["corruption"] in grid["corruption"] for c in chosen)  # fmt: skip
    assert results.params["random_75_25"]["popularity"] == [{}, {}]
    text = format_results(results)
    line = next(t for t in text.splitlines() if t.startswith("chosen on validation"))
    assert line == "chosen on validation (random_75_25, autoencoder): " + "; ".join(
        f'seed {j} {{"corruption": {c["corruption"]}, "l2": {c["l2"]}}}'
        for j, c in enumerate(chosen)
    )


@pytest.mark.parametrize(
    ("changes", "error", "field"),
    [
        ({"seeds": 0}, EvaluateConfigError, "seeds"),
        ({"n_jobs": 0}, EvaluateConfigError, "n_jobs"),
        ({"arms": ("svd", "bogus")}, EvaluateConfigError, "arms"),
        ({"arms": ()}, EvaluateConfigError, "arms"),
        ({"protocols": ("nope",)}, EvaluateConfigError, "protocols"),
        ({"synthetic": 5}, EvaluateConfigError, "synthetic"),
        ({"k": 1.5}, TypeError, None),
        ({"arms": "svd"}, TypeError, None),
    ],
)
def test_run_rejects_a_bad_config_before_reading_data(
    tmp_path: Path, changes: dict, error: type[Exception], field: str | None
) -> None:
    # data points at an empty folder: a config error must come first, and nothing is written.
    config = EvaluateConfig(data=str(tmp_path), out_dir=str(tmp_path / "o"), **changes)
    with pytest.raises(error) as info:
        run(config)
    assert getattr(info.value, "field", None) == field
    assert not (tmp_path / "o").exists()


def test_a_k_beyond_the_catalogue_is_refused_before_any_fit(
        data: Dataset, monkeypatch: pytest.MonkeyPatch) -> None:
    """Found by attack: k=10**6 was a plain ValueError once the data was loaded and the
    splits fitted. Refused as the config's k, before any fit."""
    import experiments.evaluate_arms as module

    monkeypatch.setattr(module, "evaluate", lambda *a, **k: pytest.fail("evaluated"))
    with pytest.raises(EvaluateConfigError, match=rf"k must be an integer within \[1, "
                       rf"{data.n_items}\], got 1000000") as refused:
        run(EvaluateConfig(arms=("popularity",), k=10**6), dataset=data, write=False)
    assert refused.value.field == "k"


def test_validate_names_arms_canonically() -> None:
    with pytest.warns(FutureWarning, match="ease"):
        assert validate(EvaluateConfig(arms=("ease", "svd"))).arms == ("autoencoder", "svd")


# ---------------------------------------------------------------------------- command
def test_command_writes_metrics_and_params(tmp_path: Path, capsys) -> None:
    out = tmp_path / "run"
    code = cli_main(["evaluate-arms", "--synthetic", "3000", "--seeds", "1", "--jobs", "1",
                     "--arms", "popularity,random", "--out", str(out)])  # fmt: skip
    assert code == 0
    frame = pd.read_csv(out / "metrics.csv")
    assert list(frame.columns) == COLUMNS and set(frame["arm"]) == {"popularity", "random"}
    params = json.loads((out / "params.json").read_text())
    assert params["config"]["seeds"] == 1 and "chosen_params" in params
    per_split = pd.read_csv(out / "metrics_per_split.csv")
    assert set(per_split["arm"]) == {"popularity", "random"} and set(per_split["split"]) == {0}
    printed = capsys.readouterr().out
    assert "== random_75_25" in printed and "metrics.csv" in printed
    assert np.isfinite(frame["value"]).all()


def test_command_without_data_exits_2_naming_the_option(tmp_path: Path, capsys) -> None:
    code = cli_main(["evaluate-arms", "--data", str(tmp_path), "--out", str(tmp_path / "o")])
    assert code == 2
    err = capsys.readouterr().err
    assert "--data" in err and str(tmp_path) in err
    assert not (tmp_path / "o").exists()


@pytest.mark.parametrize(
    ("argv", "named"),
    [
        (["--arms", "svd,bogus"], "bogus"),
        (["--seeds", "0"], "--seeds"),
        (["--jobs", "0"], "--jobs"),
        (["--synthetic", "5"], "--synthetic"),
    ],
)
def test_command_rejects_bad_options(tmp_path: Path, capsys, argv: list[str], named: str) -> None:
    code = cli_main(["evaluate-arms", "--synthetic", "2000", *argv, "--out", str(tmp_path / "o")])
    assert code == 2 and named in capsys.readouterr().err
    assert not (tmp_path / "o").exists()


# ---------------------------------------------------------------------------- MovieLens
@pytest.mark.movielens
@pytest.mark.slow
def test_movielens_autoencoder_tuned_on_validation_of_seed_0(movielens: Dataset) -> None:
    """The autoencoder arm (DLAE) on protocol 1, seed 0, tuned on validation only.

    Nested, on three 10 % carves of seed 0's training part, it chooses lambda 250 and dropout
    0.5: NDCG@10 0.4818, Precision@10 0.4205. The bounds are the worst of its six grid values on
    this split (0.4783 NDCG, 0.4170 P at lambda 250 / dropout 0.25 and lambda 350 / 0.25), so a
    flip of the choice by rounding cannot fail the test, while EASE, the arm before, fails it at
    every lambda of its grid (best 0.4767 and 0.4152 at 350; the old single-carve tuner: 0.4681,
    0.4059). The seed-to-seed spread is larger than the margin (P@10 sd 0.0022 per split), which
    is why the bounds are for this seed's split, not the target. All three seeds (the issue's
    target, NDCG@10 >= 0.48, Precision@10 >= 0.42) take about three times as long; the README
    gives those figures.
    """
    metrics = evaluate(movielens, seeds=1, arms=["autoencoder"], protocols=["random_75_25"])
    ndcg = _value(metrics, "random_75_25", "autoencoder", "ndcg@10")
    precision = _value(metrics, "random_75_25", "autoencoder", "precision@10")
    chosen = metrics.attrs["params"]["random_75_25"]["autoencoder"]
    assert chosen[0]["variant"] == "dlae"
    assert ndcg >= 0.478 and precision >= 0.4165, (ndcg, precision, chosen)


def test_every_synthetic_size_the_option_takes_fits_its_catalogue() -> None:
    """``--synthetic`` is checked against one range, the least the smallest catalogue takes
    to the ceiling (found by a README check: "from 1 to 100,000,000", then a second message
    refused 10); every size within it must fit the catalogue it gets."""
    from arms.data.synthetic import MAX_SYNTHETIC_SIZE, n_ratings_bounds

    least = evaluate_arms.SYNTHETIC_MIN_USERS
    sizes = np.unique(np.concatenate([np.arange(least, 5000), np.geomspace(
        least, MAX_SYNTHETIC_SIZE, 5000).astype(np.int64)]))
    scale = sizes / 100_000
    users = np.maximum(evaluate_arms.SYNTHETIC_MIN_USERS, np.round(943 * scale))
    items = np.maximum(evaluate_arms.SYNTHETIC_MIN_ITEMS, np.round(1682 * np.sqrt(scale)))
    bounds = np.array([n_ratings_bounds(int(u), int(i)) for u, i in zip(users, items,
                                                                     strict=True)])
    assert ((bounds[:, 0] <= sizes) & (sizes <= bounds[:, 1])).all()
    assert evaluate_arms.synthetic_like_movielens(least).n_ratings == least
    with pytest.raises(evaluate_arms.EvaluateConfigError, match=r"^synthetic must be an "
                       r"integer from 20 to 100,000,000, got 19$"):
        evaluate_arms.validate(evaluate_arms.EvaluateConfig(synthetic=least - 1))
