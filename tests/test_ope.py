"""Off-policy estimators (:mod:`bandits.ope`): hand-checked arithmetic, bootstrap, flags, bias.

Complements tests/test_bandits_ope.py (the first estimators' tests) with the multi-policy
evaluation the service's ``recbandits ope`` uses.
"""

from __future__ import annotations

import numpy as np
import pytest

from bandits import ope

# Four decisions, two arms, checked by hand below.
R = np.array([1.0, 0.0, 1.0, 1.0])
A = np.array([0, 1, 1, 0])
P0 = np.array([0.5, 0.5, 0.25, 0.5])
PE = np.array([[1.0, 0.0], [0.0, 1.0], [0.5, 0.5], [0.0, 1.0]])
Q = np.array([[0.6, 0.2], [0.6, 0.2], [0.6, 0.2], [0.6, 0.2]])


def test_terms_and_estimates_by_hand() -> None:
    terms = ope.estimator_terms(R, A, P0, PE, Q)
    # w = [2, 2, 2, 0]
    np.testing.assert_allclose(terms[:, 1], [2.0, 2.0, 2.0, 0.0])
    np.testing.assert_allclose(terms[:, 0], [2.0, 0.0, 2.0, 0.0])
    # direct = pe . q = [0.6, 0.2, 0.4, 0.2]; correction w (r - q[a]) = [0.8, -0.4, 1.6, 0]
    np.testing.assert_allclose(terms[:, 2], [1.4, -0.2, 2.0, 0.2])
    reports = ope.evaluate_policies(R, A, P0, {"target": PE}, Q, n_bootstrap=0)
    est = reports["target"].estimates
    assert est["ips"].value == pytest.approx(4.0 / 4)
    assert est["snips"].value == pytest.approx(4.0 / 6)
    assert est["dr"].value == pytest.approx(3.4 / 4)
    assert reports["target"].effective_sample_size == pytest.approx(36 / 12)
    assert reports["target"].max_weight == pytest.approx(2.0)
    assert ope.estimate("dr", R, A, P0, PE, Q, n_bootstrap=0).value == pytest.approx(0.85)
    # No resamples: every bound NaN, in the reports and their rows.
    row = reports["target"].to_row()
    assert all(np.isnan(row[f"{e}_{end}"]) for e in est for end in ("low", "high"))
    low, high = ope.percentile_interval(np.empty((0, 2, 3)), 0.95, 4)
    assert low.shape == high.shape == (2, 3) and np.isnan(low).all() and np.isnan(high).all()
    # One decision, no interval: every resample is that decision (found by attack: IPS read
    # "3.0000 [3.0000, 3.0000]" on a one-decision log), however many resamples.
    one = ope.evaluate_policies(R[:1], A[:1], P0[:1], {"target": PE[:1]}, n_bootstrap=200,
                                random_state=0)["target"].estimates["ips"]
    assert one.value == pytest.approx(2.0) and np.isnan(one.ci_low) and np.isnan(one.ci_high)
    single = ope.estimate("ips", R[:1], A[:1], P0[:1], PE[:1], n_bootstrap=200,
                          random_state=0)
    assert np.isnan(single.ci_low) and np.isnan(single.ci_high)
    two = ope.estimate("ips", R[:2], A[:2], P0[:2], PE[:2], n_bootstrap=200, random_state=0)
    assert two.ci_low < two.ci_high  # from two decisions on, an interval


def test_logging_policy_estimates_equal_the_observed_mean() -> None:
    rng = np.random.default_rng(0)
    pmf = rng.dirichlet(np.ones(3), size=500)
    a = np.array([rng.choice(3, p=p) for p in pmf])
    r = (rng.random(500) < 0.3).astype(float)
    p0 = pmf[np.arange(500), a]
    rep = ope.evaluate_policies(r, a, p0, {"logging": pmf}, np.full((500, 3), 0.3),
                                logging_pmf=pmf, n_bootstrap=200, random_state=0)["logging"]
    assert rep.estimates["ips"].value == pytest.approx(r.mean(), abs=1e-12)
    assert rep.estimates["snips"].value == pytest.approx(r.mean(), abs=1e-12)
    # the bootstrap of IPS with unit weights is the bootstrap of the mean
    se = r.std() / np.sqrt(500)
    assert rep.estimates["ips"].ci_high - rep.estimates["ips"].ci_low == pytest.approx(
        2 * 1.96 * se, rel=0.2)


@pytest.mark.parametrize("confidence", [0.95, 0.8])
def test_intervals_are_the_percentiles_of_the_resampled_estimates(confidence: float) -> None:
    """Each interval is the (1 -+ confidence) / 2 quantile pair of the estimator recomputed on
    each resample of the decisions, resampled here by hand with the generator's own stream
    (test_bootstrap_sums_are_sums_of_resampled_rows). A review found the coverage and width
    checks passed with the 97.5% and the 99% quantiles reported as 95%."""
    rng = np.random.default_rng(5)
    n, B = 300, 400
    pmf = rng.dirichlet(np.ones(3), size=n)
    a = np.array([rng.choice(3, p=p) for p in pmf])
    r = (rng.random(n) < 0.4).astype(float)
    p0 = pmf[np.arange(n), a]
    target = rng.dirichlet(np.ones(3), size=n)
    w = target[np.arange(n), a] / p0
    draws = np.random.default_rng(11)
    ips, snips = np.empty(B), np.empty(B)
    for b in range(B):
        rows = draws.integers(n, size=n)
        ips[b] = (w[rows] * r[rows]).sum() / n
        snips[b] = (w[rows] * r[rows]).sum() / w[rows].sum()
    quantiles = [(1 - confidence) / 2, (1 + confidence) / 2]
    for name, resampled in (("ips", ips), ("snips", snips)):
        got = ope.estimate(name, r, a, p0, target, n_bootstrap=B, confidence=confidence,
                           random_state=11)
        assert (got.ci_low, got.ci_high) == pytest.approx(
            tuple(np.quantile(resampled, quantiles)), abs=1e-12)


def test_bootstrap_sums_are_sums_of_resampled_rows() -> None:
    cols = np.arange(12.0).reshape(6, 2)
    sums = ope.bootstrap_sums(cols, 50, random_state=3)
    rng = np.random.default_rng(3)
    for b in range(50):
        counts = np.bincount(rng.integers(6, size=6), minlength=6)
        np.testing.assert_allclose(sums[b], counts @ cols)
    # chunking (tiny cell budget) gives the same stream
    old = ope._BOOT_CELLS
    try:
        ope._BOOT_CELLS = 7
        np.testing.assert_allclose(ope.bootstrap_sums(cols, 50, random_state=3), sums)
    finally:
        ope._BOOT_CELLS = old


def test_shared_resamples_are_seeded_and_paired() -> None:
    rng = np.random.default_rng(1)
    n, K = 2000, 3
    a = rng.integers(K, size=n)
    r = (rng.random(n) < 0.4).astype(float)
    p0 = np.full(n, 1 / K)
    uniform = np.full((n, K), 1 / K)
    twin = {"u1": uniform, "u2": uniform.copy()}
    one = ope.evaluate_policies(r, a, p0, twin, n_bootstrap=300, random_state=9)
    two = ope.evaluate_policies(r, a, p0, twin, n_bootstrap=300, random_state=9)
    assert one == two
    assert one["u1"].estimates == one["u2"].estimates  # same resamples for every policy
    other = ope.evaluate_policies(r, a, p0, twin, n_bootstrap=300, random_state=10)
    assert other["u1"].estimates["ips"].ci_low != one["u1"].estimates["ips"].ci_low


def test_flags_tiny_propensity_low_ess_and_support() -> None:
    n = 1000
    rng = np.random.default_rng(2)
    pmf = np.tile([0.9995, 0.0005, 0.0], (n, 1))
    a = np.where(rng.random(n) < 0.0005, 1, 0)
    a[:3] = 1  # make sure the rare arm was played
    p0 = pmf[np.arange(n), a]
    r = rng.integers(2, size=n).astype(float)
    targets = {"arm0": np.tile([1.0, 0, 0], (n, 1)), "arm1": np.tile([0, 1.0, 0], (n, 1)),
               "arm2": np.tile([0, 0, 1.0], (n, 1))}
    reps = ope.evaluate_policies(r, a, p0, targets, logging_pmf=pmf, n_bootstrap=0)
    assert reps["arm0"].flags == ()
    assert reps["arm1"].flags == ("tiny_propensity", "low_ess")
    assert reps["arm1"].n_tiny_propensity == int((a == 1).sum())
    assert reps["arm1"].max_weight == pytest.approx(2000.0)
    assert any("propensity < 0.001" in m for m in reps["arm1"].messages)
    # Without resamples there is no interval to call unreliable (it said "its interval").
    assert any(m.endswith("decisions; its estimate is not reliable")
               for m in reps["arm1"].messages)
    with_intervals = ope.evaluate_policies(r, a, p0, targets, logging_pmf=pmf, n_bootstrap=100,
                                           random_state=0)
    assert any(m.endswith("decisions; its estimate and interval are not reliable")
               for m in with_intervals["arm1"].messages)
    assert "no_support" in reps["arm2"].flags and reps["arm2"].unsupported_mass == 1.0
    row = reps["arm1"].to_row()
    assert row["flags"] == "tiny_propensity,low_ess" and row["ips"] == reps["arm1"].estimates[
        "ips"].value


def test_snips_without_weight_is_undefined_not_zero() -> None:
    """A target with no probability on any logged action: SNIPS is 0 / 0, NaN with its
    interval (it read 0.0 [0.0, 0.0], a click rate that looked measured); resamples without
    weight are left out of an interval rather than counted as 0 (which pulled it down)."""
    n = 200
    rng = np.random.default_rng(4)
    a = rng.integers(2, size=n)  # arm 2 never played
    p0 = np.full(n, 1 / 3)
    r = rng.integers(2, size=n).astype(float)
    never = np.tile([0.0, 0.0, 1.0], (n, 1))
    rep = ope.evaluate_policies(r, a, p0, {"never": never}, n_bootstrap=100,
                                random_state=0)["never"]
    snips = rep.estimates["snips"]
    assert np.isnan(snips.value) and np.isnan(snips.ci_low) and np.isnan(snips.ci_high)
    assert rep.estimates["ips"].value == 0.0  # IPS is a mean of zeros: 0 is right
    assert np.isnan(ope.estimate("snips", r, a, p0, never, n_bootstrap=0).value)
    # Three decisions, one with weight: most resamples miss it; those that hold it give 1.
    sums = ope.bootstrap_sums(ope.estimator_terms(np.array([1.0, 0, 0]), np.array([0, 1, 1]),
                                                  np.full(3, 0.5),
                                                  np.tile([1.0, 0.0], (3, 1))), 40, 0)
    resampled = ope.estimates_from_sums(sums, 3)[:, 1]
    assert np.isnan(resampled).any() and (resampled[~np.isnan(resampled)] == 1.0).all()
    low, high = ope.percentile_interval(resampled[:, None], 0.95, 3)
    assert np.isnan(low[0]) and np.isnan(high[0])  # of 40 drawn (< 100) every one must count
    defined = resampled[~np.isnan(resampled)][:, None]
    low, high = ope.percentile_interval(defined, 0.95, 3)  # where all are defined: the interval
    assert low[0] == high[0] == 1.0
    # Of 1,000 decisions one has weight (review): its SNIPS is defined on the ~63% of 100
    # resamples that draw it, too few for an interval ([1.0, 1.0] before).
    n = 1000
    a = np.zeros(n, dtype=np.int64)
    a[0] = 1
    r = np.zeros(n)
    r[0] = 1.0
    rep = ope.evaluate_policies(r, a, np.full(n, 0.5), {"arm1": np.tile([0.0, 1.0], (n, 1))},
                                n_bootstrap=100, random_state=0)["arm1"]
    snips = rep.estimates["snips"]
    assert snips.value == 1.0 and np.isnan(snips.ci_low) and np.isnan(snips.ci_high)
    assert rep.estimates["ips"].ci_high > rep.estimates["ips"].ci_low  # defined everywhere
    mean, sd = ope.resampled_mean_sd(np.array([[np.nan, 1.0], [2.0, 3.0]]))
    assert np.isnan(mean[0]) and mean[1] == 2.0 and sd[1] == 1.0


def test_rewards_and_probabilities_must_be_real_numbers() -> None:
    for bad in (np.array(["1", "0", "1", "1"]), R + 0j):
        with pytest.raises(TypeError, match="rewards must hold real numbers or booleans"):
            ope.estimate("ips", bad, A, P0, PE, n_bootstrap=0)
    with pytest.raises(TypeError, match="logging_propensities must hold real numbers"):
        ope.estimate("ips", R, A, P0.astype(str), PE, n_bootstrap=0)
    clicks = ope.estimate("ips", R.astype(bool), A, P0, PE, n_bootstrap=0).value
    assert clicks == ope.estimate("ips", R, A, P0, PE, n_bootstrap=0).value


def test_resamples_and_quadrature_grids_have_a_ceiling() -> None:
    """10**9 resamples asked for 22.4 GiB and 10**20 failed in numpy's words; a policy took
    propensity_grid=10**9 and failed at its first call asking 7.45 GiB (found by attack)."""
    assert ope.check_n_bootstrap(ope.MAX_BOOTSTRAP) == 100_000
    with pytest.raises(ValueError, match=r"^n_bootstrap=100001 is more resamples than are "
                                         r"kept; allowed: 0 \(no interval\) or 100 to 100,000$"):
        ope.estimate("ips", R, A, P0, PE, n_bootstrap=100_001)
    with pytest.raises(ValueError, match="n_bootstrap=10000000000000000000000"):
        ope.evaluate_policies(R, A, P0, {"x": PE}, n_bootstrap=10**22)
    from bandits import GaussianThompsonSampling, LinTS, ThompsonSampling
    from bandits.multileave import MultileaveThompsonSampling

    for make in (lambda g: ThompsonSampling(3, propensity_grid=g),
                 lambda g: GaussianThompsonSampling(3, propensity_grid=g),
                 lambda g: LinTS(3, n_features=2, propensity_grid=g),
                 lambda g: MultileaveThompsonSampling(3, slate_size=2, m=2,
                                                       propensity_grid=g)):
        make(8192)
        with pytest.raises(ValueError, match=r"propensity_grid=1000000000 is outside the "
                                             r"allowed range \[2, 8192\]"):
            make(10**9)


def test_the_cli_refuses_too_many_resamples_and_a_negative_seed(tmp_path) -> None:
    from experiments.cli import main
    from serving.offpolicy import OPEConfig

    assert main(["ope", "--obd", "--data", str(tmp_path), "--bootstrap", "100001"]) == 2
    # The service log's seed as --seed names it (it said random_state=-3), as ope --obd's.
    with pytest.raises(ValueError, match=r"^seed must be an integer from 0 to "
                                         r"9,223,372,036,854,775,807, got -3$"):
        OPEConfig(url=f"sqlite:///{tmp_path / 'none.db'}", out_dir=tmp_path / 'out', seed=-3)


@pytest.mark.parametrize("kwargs, error, match", [
    (dict(targets={}), ValueError, "targets is empty"),
    (dict(targets={"x": np.ones((4, 2))}), ValueError, r"targets\['x'\] rows"),
    (dict(targets={"x": np.full((4, 2), .5), "y": np.full((4, 3), 1 / 3)}), ValueError,
     "every target must have shape"),
    (dict(logging_pmf=np.full((4, 2), 0.5)), ValueError, "must equal logging_propensities"),
    (dict(n_bootstrap=-1), ValueError, "n_bootstrap"),
    (dict(n_bootstrap=2.5), TypeError, "n_bootstrap"),
    (dict(confidence=1.0), ValueError, "confidence"),
    (dict(min_propensity=2.0), ValueError, "min_propensity"),
    (dict(reward_model=np.full((4, 3), 0.5)), ValueError, "reward_model has shape"),
])
def test_invalid_input_is_rejected(kwargs: dict, error: type, match: str) -> None:
    args = dict(targets={"x": PE}, n_bootstrap=0)
    args.update(kwargs)
    with pytest.raises(error, match=match):
        ope.evaluate_policies(R, A, P0, **args)


def test_unbiased_by_simulation_with_a_learning_target() -> None:
    """Many independent logs: the estimators' average equals the truth within noise.

    Contexts of two types with different best arms; the logging policy is epsilon-greedy
    on a wrong guess; the target changes over time (it moves towards arm 2 as decisions go
    by, as a learning policy replayed over the log would); the reward model is wrong.
    """
    rng = np.random.default_rng(11)
    rates = np.array([[0.2, 0.5, 0.3], [0.6, 0.1, 0.4]])
    n, K, reps = 400, 3, 400
    t = np.linspace(0, 1, n)[:, None]
    target = (1 - t) * np.array([[0.6, 0.2, 0.2]]) + t * np.array([[0.1, 0.1, 0.8]])
    wrong_model = np.full((n, K), 0.9)
    est = {e: [] for e in ("ips", "snips", "dr")}
    truths = []
    for _ in range(reps):
        types = rng.integers(2, size=n)
        pmf = np.full((n, K), 0.1)
        pmf[np.arange(n), np.where(types == 0, 0, 1)] = 0.8
        a = (rng.random((n, 1)) > pmf.cumsum(axis=1)).sum(axis=1)
        r = (rng.random(n) < rates[types, a]).astype(float)
        truths.append((target * rates[types]).sum(axis=1).mean())
        out = ope.evaluate_policies(r, a, pmf[np.arange(n), a], {"t": target}, wrong_model,
                                    n_bootstrap=0)["t"].estimates
        for e in est:
            est[e].append(out[e].value)
    truth = float(np.mean(truths))
    for e in ("ips", "dr"):  # unbiased: the mean of 400 logs is within 3 standard errors
        values = np.array(est[e])
        assert abs(values.mean() - truth) < 3 * values.std() / np.sqrt(reps), e
    # SNIPS is biased O(1/n): close, not exact
    assert abs(np.mean(est["snips"]) - truth) < 0.01


def test_interval_coverage_by_simulation() -> None:
    """95% percentile-bootstrap intervals cover the truth in about 95% of independent logs."""
    rng = np.random.default_rng(5)
    n, K, reps = 300, 3, 120
    rates = np.array([0.3, 0.5, 0.4])
    target = np.tile([0.2, 0.6, 0.2], (n, 1))
    truth = float(target[0] @ rates)
    hits = {e: 0 for e in ("ips", "snips", "dr")}
    for seed in range(reps):
        a = rng.integers(K, size=n)
        r = (rng.random(n) < rates[a]).astype(float)
        out = ope.evaluate_policies(r, a, np.full(n, 1 / K), {"t": target},
                                    np.tile([0.35, 0.45, 0.4], (n, 1)), n_bootstrap=200,
                                    random_state=seed)["t"].estimates
        for e in hits:
            hits[e] += out[e].ci_low <= truth <= out[e].ci_high
    for e, h in hits.items():  # Binomial(120, 0.95): 3 sd below the mean is about 0.89
        assert h / reps >= 0.88, (e, h)


@pytest.mark.parametrize("n_bootstrap", [1, 2, 10, 99])
def test_too_few_resamples_for_an_interval_are_refused(n_bootstrap: int) -> None:
    # With 1 or 2 resamples the "95% interval" was one resampled estimate and could exclude the
    # estimate itself (found by attack: 6.90 [8.10, 8.10]); 0 still means no interval.
    msg = rf"n_bootstrap={n_bootstrap} .*allowed: 0 \(no interval\) or 100 to 100,000"
    with pytest.raises(ValueError, match=msg):
        ope.estimate("ips", R, A, P0, PE, n_bootstrap=n_bootstrap, random_state=0)
    with pytest.raises(ValueError, match=msg):
        ope.evaluate(R, A, P0, PE, n_bootstrap=n_bootstrap, random_state=0)
    with pytest.raises(ValueError, match=msg):
        ope.evaluate_policies(R, A, P0, {"x": PE}, n_bootstrap=n_bootstrap, random_state=0)


def test_the_fewest_resamples_allowed_give_an_interval() -> None:
    est = ope.estimate("ips", R, A, P0, PE, n_bootstrap=ope.MIN_BOOTSTRAP, random_state=0)
    assert est.ci_low <= est.ci_high
    assert ope.MIN_BOOTSTRAP == 100  # experiments/replay.py refuses fewer than 100 as well


def test_the_service_ope_table_prints_no_number_for_an_undefined_snips() -> None:
    import pandas as pd

    from serving.offpolicy import format_table

    # Three arms, 0 and 1 logged: "never" puts all its weight on arm 2.
    targets = {"uniform": np.full((4, 3), 1 / 3), "never": np.tile([0.0, 0.0, 1.0], (4, 1))}
    reports = ope.evaluate_policies(R, A, P0, targets, n_bootstrap=100, random_state=0)
    text = format_table(pd.DataFrame([r.to_row() for r in reports.values()]))
    never_line = next(line for line in text.splitlines() if line.startswith("never"))
    # policy, IPS value [low, high], then SNIPS: "–" (it printed nan)
    assert "nan" not in text.lower() and never_line.split()[4] == "–", text
