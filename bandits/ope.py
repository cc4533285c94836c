"""Off-policy evaluation on plain arrays: what a target policy would have earned on logged data.

Logged data from a logging policy pi_0 (the service's decision log): for each of n decisions
the chosen arm ``actions[i]``, its observed ``rewards[i]`` and the logged propensity
``logging_propensities[i] = pi_0(actions[i] | x_i)``. The target policy pi_e is given by its
propensities for every arm at every logged decision, ``target_probabilities`` of shape (n, K)
(e.g. ``policy.action_probabilities(x_i)`` stacked). Importance weights are
``w_i = pi_e(actions[i] | x_i) / pi_0(actions[i] | x_i)``.

* IPS (Horvitz-Thompson): ``mean(w * r)``; unbiased when pi_0 > 0 wherever pi_e > 0.
* Self-normalised IPS: ``sum(w * r) / sum(w)``; slightly biased, far lower variance.
* Doubly robust (Dudik et al. 2011): ``mean(sum_a pi_e(a|x) q(x, a) + w (r - q(x, a_i)))``
  with a reward model ``q`` given as an (n, K) array; unbiased if either the propensities or
  the model are right.
* Effective sample size ``(sum w)^2 / sum w^2`` (Kish): how many on-policy samples the weighted
  estimate is worth.
* Percentile bootstrap confidence intervals (resampling decisions), seeded.

The target policy may change from decision to decision (a learning policy replayed over the log,
whose propensities at decision i depend only on what was observed before it): the estimators
then estimate ``mean_i sum_a pi_e,i(a | x_i) E[r | x_i, a]``, and stay unbiased because every
term is a martingale difference.

All three estimators are column sums of per-decision terms (:func:`estimator_terms`), so one
set of bootstrap resamples, drawn as multinomial counts and applied by a matrix product
(:func:`bootstrap_sums`), serves every estimator of every target policy at once: memory is
O(n) per chunk of resamples rather than O(B n), and the policies' intervals are paired.
:func:`evaluate_policies` does that and flags what makes an estimate untrustworthy: logged
propensities below ``min_propensity`` that a target relies on, a low effective sample size, and
target mass on arms the logging policy could not play.
"""

from __future__ import annotations

import warnings
from collections.abc import Mapping
from dataclasses import asdict, dataclass
from typing import Any, Literal, cast

import numpy as np

from bandits.base import RandomState, make_generator
from bandits.errors import check_int, check_real, real_array

Estimator = Literal["ips", "snips", "dr"]
ESTIMATORS: tuple[str, ...] = ("ips", "snips", "dr")

#: Memory budget (float64 entries) of one chunk of bootstrap counts, ``(chunk, n)``.
_BOOT_CELLS = 1 << 23


@dataclass(frozen=True)
class OPEEstimate:
    """One off-policy estimate.

    Attributes
    ----------
    estimator : str
        "ips", "snips" or "dr".
    value : float
        Estimated mean reward per decision of the target policy.
    ci_low, ci_high : float
        Percentile bootstrap interval at ``confidence``; NaN without resamples
        (:func:`percentile_interval`).
    confidence : float
        E.g. 0.95.
    effective_sample_size : float
        Kish's ESS of the importance weights.
    n : int
        Number of logged decisions.
    """

    estimator: str
    value: float
    ci_low: float
    ci_high: float
    confidence: float
    effective_sample_size: float
    n: int

    def to_dict(self) -> dict[str, Any]:
        """Plain-JSON form."""
        return asdict(self)


def _check(rewards: Any, actions: Any, logging_propensities: Any, target_probabilities: Any,
           reward_model: Any = None
           ) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray, np.ndarray | None]:
    r, a, p0 = _check_log(rewards, actions, logging_propensities)
    pe = _check_target(target_probabilities, r.size, "target_probabilities")
    if a.max() >= pe.shape[1]:
        raise ValueError(f"actions must lie in 0..{pe.shape[1] - 1} (the columns of "
                         "target_probabilities)")
    q = None if reward_model is None else _check_model(reward_model, pe.shape)
    return r, a, p0, pe, q


def _check_log(rewards: Any, actions: Any, logging_propensities: Any
               ) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    # Real numbers only (numpy read "1" as 1.0 and dropped imaginary parts: found by attack);
    # clicks may come as booleans.
    r = real_array(rewards, "rewards", allow_bool=True)
    a = np.asarray(actions)
    p0 = real_array(logging_propensities, "logging_propensities")
    if r.ndim != 1 or r.size == 0:
        raise ValueError(f"rewards must be a non-empty 1-d array, got shape {r.shape}")
    n = r.size
    if a.shape != (n,) or not np.issubdtype(a.dtype, np.integer):
        raise ValueError(f"actions must be an int array of shape ({n},), got {a.dtype} {a.shape}")
    if p0.shape != (n,):
        raise ValueError(f"logging_propensities has shape {p0.shape}; expected ({n},)")
    if not np.isfinite(r).all():
        raise ValueError("rewards contains NaN or infinite values")
    if a.min() < 0:
        raise ValueError(f"actions must lie in 0..K-1, got {int(a.min())}")
    ok = np.isfinite(p0) & (p0 > 0) & (p0 <= 1)
    if not ok.all():
        raise ValueError(f"logging_propensities contains {p0[~ok][0]!r}; each must lie in (0, 1]")
    return r, a, p0


def _check_target(target: Any, n: int, name: str) -> np.ndarray:
    pe = real_array(target, name)
    if pe.ndim != 2 or pe.shape[0] != n:
        raise ValueError(f"{name} has shape {pe.shape}; expected ({n}, n_arms)")
    if not (np.isfinite(pe).all() and (pe >= 0).all()) or not np.allclose(pe.sum(axis=1), 1.0,
                                                                          atol=1e-6):
        raise ValueError(f"{name} rows must be non-negative and sum to one")
    return pe


def _check_model(reward_model: Any, shape: tuple[int, ...]) -> np.ndarray:
    q = real_array(reward_model, "reward_model")
    if q.shape != shape:
        raise ValueError(f"reward_model has shape {q.shape}; expected {shape}")
    if not np.isfinite(q).all():
        raise ValueError("reward_model contains NaN or infinite values")
    return q


def importance_weights(actions: Any, logging_propensities: Any, target_probabilities: Any
                       ) -> np.ndarray:
    """``pi_e(a_i | x_i) / pi_0(a_i | x_i)``, shape (n,)."""
    a = np.asarray(actions)
    pe = np.asarray(target_probabilities, dtype=np.float64)
    return cast(np.ndarray,
                pe[np.arange(a.size), a] / np.asarray(logging_propensities, dtype=np.float64))


def effective_sample_size(weights: Any) -> float:
    """Kish's effective sample size ``(sum w)^2 / sum w^2`` (0 if all weights are 0)."""
    w = np.asarray(weights, dtype=np.float64)
    ss = float((w * w).sum())
    return float(w.sum() ** 2 / ss) if ss > 0 else 0.0


def estimator_terms(rewards: np.ndarray, actions: np.ndarray, logging_propensities: np.ndarray,
                    target_probabilities: np.ndarray, reward_model: np.ndarray | None = None
                    ) -> np.ndarray:
    """Per-decision terms whose column sums give every estimator; shape (n, 3).

    Columns: ``w r`` (IPS numerator), ``w`` (SNIPS denominator) and the doubly robust term
    ``sum_a pi_e(a) q(a) + w (r - q(a_i))`` (NaN without a reward model). With column sums
    ``S`` over n decisions: IPS = S0 / n, SNIPS = S0 / S1, DR = S2 / n. Inputs are not
    validated here (see :func:`estimate`).
    """
    n = rewards.size
    rows = np.arange(n)
    w = target_probabilities[rows, actions] / logging_propensities
    out = np.empty((n, 3))
    np.multiply(w, rewards, out=out[:, 0])
    out[:, 1] = w
    if reward_model is None:
        out[:, 2] = np.nan
    else:
        direct = np.einsum("ij,ij->i", target_probabilities, reward_model)
        out[:, 2] = direct + w * (rewards - reward_model[rows, actions])
    return out


def estimates_from_sums(sums: np.ndarray, n: int) -> np.ndarray:
    """Column sums of :func:`estimator_terms` over n decisions -> IPS, SNIPS, DR estimates.

    ``sums`` has shape (..., 3) (e.g. one row per bootstrap resample from
    :func:`bootstrap_sums`); the result has the same shape (DR is NaN without a reward model).
    """
    return _from_sums(sums, n)


def _from_sums(sums: np.ndarray, n: int) -> np.ndarray:
    """(..., 3) column sums -> (..., 3) estimates IPS, SNIPS, DR.

    SNIPS is NaN where the weights sum to zero (the target policy puts no probability on any
    logged action): 0 / 0, as Open Bandit Pipeline's. It read 0.0 before, a click rate that
    looked measured (found by attack), and resamples without weight pulled the interval to 0.
    """
    out = np.empty(sums.shape)
    out[..., 0] = sums[..., 0] / n
    den = sums[..., 1]
    out[..., 1] = np.divide(sums[..., 0], den, out=np.full_like(den, np.nan), where=den > 0)
    out[..., 2] = sums[..., 2] / n
    return out


def bootstrap_sums(columns: np.ndarray, n_bootstrap: int, random_state: RandomState = None
                   ) -> np.ndarray:
    """Column sums of ``n_bootstrap`` resamples (with replacement) of the rows of ``columns``.

    Each resample is drawn as the counts of n uniform row indices and applied as a matrix
    product, in chunks of at most ~8 M count cells, so memory stays O(n) whatever
    ``n_bootstrap``.

    Parameters
    ----------
    columns : ndarray of float, shape (n, m)
    n_bootstrap : int
    random_state : int, SeedSequence, Generator or None

    Returns
    -------
    ndarray of float64, shape (n_bootstrap, m)
    """
    n, m = columns.shape
    rng = make_generator(random_state)
    out = np.empty((n_bootstrap, m))
    # (m, n) @ (n, b) with both operands contiguous along n is several times faster than
    # (b, n) @ (n, m) on a row-major (n, m); no copy when ``columns`` is column-major already
    by_column = np.ascontiguousarray(columns.T)
    chunk = max(1, min(n_bootstrap, _BOOT_CELLS // max(n, 1)))
    counts = np.empty((chunk, n))
    for start in range(0, n_bootstrap, chunk):
        b = min(chunk, n_bootstrap - start)
        for j in range(b):
            counts[j] = np.bincount(rng.integers(n, size=n), minlength=n)
        out[start:start + b] = (by_column @ counts[:b].T).T
    return out


#: The defaults of every report's interval, named once: the lab's reports (replay, the gate,
#: ``ope --obd``), the service's (OPE of the log, holdout, credit) and the command line's options
#: take these, so "1000 resamples, 95%" cannot drift between them.
DEFAULT_N_BOOTSTRAP = 1000
DEFAULT_CONFIDENCE = 0.95
#: Defaults of the log's health flags: a logged propensity below this is "tiny", an effective
#: sample size below this is "low".
DEFAULT_MIN_PROPENSITY = 1e-3
DEFAULT_MIN_ESS = 100.0

#: Fewest bootstrap resamples a percentile interval is computed from (``n_bootstrap=0`` still
#: means no interval): with 1 or 2 resamples the "95% interval" is one or two resampled
#: estimates and can exclude the estimate itself (6.90 [8.10, 8.10] was seen), and the 2.5th
#: and 97.5th percentiles of 10 are their extremes or near them: a third as wide as the
#: interval (found by attack: `replay --bootstrap 10` said an HR@10 difference lay above 0 in
#: 10% of seeds where 1,000 resamples said it did not, in none at 100). The one floor for every
#: bootstrap interval of this package and of its callers.
MIN_BOOTSTRAP = 100
#: Most bootstrap resamples an interval is computed from: each is kept (one row of estimates
#: per policy), and 10**9 asked for 22.4 GiB while 10**20 failed with numpy's words (found
#: by attack). The percentiles of 100,000 resamples move by less than their last digit
#: printed.
MAX_BOOTSTRAP = 100_000
#: The bootstrap counts every command's ``--bootstrap`` takes, as its help and refusals say them.
BOOTSTRAP_RANGE = f"0 (no interval) or {MIN_BOOTSTRAP} to {MAX_BOOTSTRAP:,}"
#: What a report asked for no resamples says once: its "-" or "[–]" intervals, explained.
NO_RESAMPLES = "no intervals: 0 bootstrap resamples asked (--bootstrap 0)"


def check_n_bootstrap(n_bootstrap: Any, *, name: str = "n_bootstrap") -> int:
    """``n_bootstrap`` as an int that is 0 (no interval) or from :data:`MIN_BOOTSTRAP` to
    :data:`MAX_BOOTSTRAP` (:data:`BOOTSTRAP_RANGE`): the one check of every bootstrap count
    of this package and of its callers, ``name`` naming it in the messages (the command
    line's ``n_bootstrap (--bootstrap)``).

    Returns
    -------
    int
        The same number.

    Raises
    ------
    TypeError
        Not an int.
    ValueError
        Outside the allowed values (the message lists them, for a negative count too).
    """
    n = check_int(n_bootstrap, name, low=None)  # its type; the range below, said once
    allowed = BOOTSTRAP_RANGE
    if n > MAX_BOOTSTRAP:
        raise ValueError(f"{name}={n} is more resamples than are kept; allowed: {allowed}")
    if n < 0:
        raise ValueError(f"{name}={n} is no number of resamples; allowed: {allowed}")
    if 0 < n < MIN_BOOTSTRAP:
        raise ValueError(f"{name}={n} is too few resamples for a percentile interval; "
                         f"allowed: {allowed}")
    return n


#: Fewest observations a bootstrap interval is given from: every resample of one observation
#: is that observation, a "95% interval" of zero width around it (``ope --include-open`` on a
#: one-decision log printed IPS ``3.0000 [3.0000, 3.0000]``: found by attack).
MIN_OBSERVATIONS = 2


def mean_interval(values: np.ndarray, n_bootstrap: int, rng: np.random.Generator,
                  confidence: float = DEFAULT_CONFIDENCE) -> tuple[float, float]:
    """Percentile bootstrap interval of the mean of ``values`` (scipy's ``bootstrap``): the
    one interval of a rate the service's reports give (the holdout's, multileaving's credit).

    NaN without resamples (``n_bootstrap=0``, as :func:`percentile_interval`) and for fewer
    than :data:`MIN_OBSERVATIONS` values (one value says nothing of its spread); the mean
    itself at both ends when every value is the same (every resample has that mean; scipy
    would warn).
    """
    if n_bootstrap == 0 or values.size < MIN_OBSERVATIONS:
        return float("nan"), float("nan")
    if np.ptp(values) == 0:
        mean = float(values.mean())  # the rate as computed, to its last bit
        return mean, mean
    from scipy import stats  # only the reports need it

    ci = stats.bootstrap((values,), np.mean, n_resamples=n_bootstrap, method="percentile",
                         confidence_level=confidence, random_state=rng).confidence_interval
    return float(ci.low), float(ci.high)


def percentile_interval(resampled: np.ndarray, confidence: float, n_observations: int
                        ) -> tuple[np.ndarray, np.ndarray]:
    """The ``confidence`` percentile interval of each column of ``resampled`` (one row per
    bootstrap resample of ``n_observations`` observations; any trailing shape), as (low,
    high).

    No resamples (``n_bootstrap=0``), or fewer than :data:`MIN_OBSERVATIONS` observations,
    no interval: both bounds are NaN, never the estimate at both ends. The one rule of every
    report of this package and its callers (the service's ``ope``, ``ope --obd``, the
    replay): each once printed its estimate as an interval of zero width, ``0.8333 [0.8333,
    0.8333]``, and ``ope --obd`` said such an "interval" did not cover the truth.
    """
    if resampled.shape[0] == 0 or n_observations < MIN_OBSERVATIONS:
        nan = np.full(resampled.shape[1:], np.nan)
        return nan, nan.copy()
    # Over the resamples where the estimate exists (SNIPS is undefined on a resample without
    # weight: _from_sums), if enough do (_defined_enough); NaN otherwise (DR without a reward
    # model: none).
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", RuntimeWarning)  # numpy's "All-NaN slice"
        lo, hi = np.nanquantile(resampled, [(1 - confidence) / 2, (1 + confidence) / 2],
                                axis=0)
    enough = _defined_enough(resampled)
    return np.where(enough, lo, np.nan), np.where(enough, hi, np.nan)


def _defined_enough(resampled: np.ndarray) -> np.ndarray:
    """Per column of ``resampled``: whether the estimate is defined (not NaN) on at least
    :data:`MIN_BOOTSTRAP` of the resamples, or on all when fewer were drawn. The one rule of
    statistics over resamples: SNIPS resting on one decision was defined on the ~63% of
    resamples that drew it, and their interval was [1.0, 1.0] (found in review).
    """
    defined = (~np.isnan(resampled)).sum(axis=0)
    return np.asarray(defined >= min(MIN_BOOTSTRAP, resampled.shape[0]))


def resampled_mean_sd(resampled: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Mean and standard deviation of each column of ``resampled`` over the resamples where
    it is defined, NaN where too few are (:func:`_defined_enough`, the rule of
    :func:`percentile_interval`).
    """
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", RuntimeWarning)  # an all-NaN column
        mean, sd = np.nanmean(resampled, axis=0), np.nanstd(resampled, axis=0)
    enough = _defined_enough(resampled)
    return np.where(enough, mean, np.nan), np.where(enough, sd, np.nan)


def estimate(estimator: Estimator, rewards: Any, actions: Any, logging_propensities: Any,
             target_probabilities: Any, reward_model: Any = None, *,
             n_bootstrap: int = DEFAULT_N_BOOTSTRAP, confidence: float = DEFAULT_CONFIDENCE,
             random_state: RandomState = None) -> OPEEstimate:
    """Off-policy estimate of the target policy's mean reward, with a bootstrap interval.

    Parameters
    ----------
    estimator : {"ips", "snips", "dr"}
    rewards : array of float, shape (n,)
    actions : array of int, shape (n,)
        Logged arm positions (columns of ``target_probabilities``).
    logging_propensities : array of float, shape (n,)
        Propensity of the logged arm under the logging policy, in (0, 1].
    target_probabilities : array of float, shape (n, K)
        Target policy's propensities at each logged decision; rows sum to one.
    reward_model : array of float, shape (n, K), optional
        Predicted reward of every arm at each decision; required for "dr".
    n_bootstrap : int, default 1000
        Bootstrap resamples: 0 skips the interval (``ci_low`` and ``ci_high`` NaN:
        :func:`percentile_interval`), otherwise at least :data:`MIN_BOOTSTRAP`.
    confidence : float, default 0.95
        Coverage of the percentile interval.
    random_state : int, SeedSequence, Generator or None
        Seeds the bootstrap.

    Raises
    ------
    ValueError
        Shapes disagree, propensities outside (0, 1], rows not summing to one, NaN, unknown
        estimator, "dr" without a reward model, ``n_bootstrap`` in ``1..MIN_BOOTSTRAP - 1``.
    """
    if estimator not in ESTIMATORS:
        raise ValueError(f"estimator={estimator!r}; allowed: 'ips', 'snips', 'dr'")
    if estimator == "dr" and reward_model is None:
        raise ValueError("estimator='dr' needs reward_model, an (n, K) array of predictions")
    check_n_bootstrap(n_bootstrap)
    check_real(confidence, "confidence", low=0.0, high=1.0, low_open=True, high_open=True)
    r, a, p0, pe, q = _check(rewards, actions, logging_propensities, target_probabilities,
                             reward_model)
    n = r.size
    col = ESTIMATORS.index(estimator)
    terms = estimator_terms(r, a, p0, pe, q)
    value = float(_from_sums(terms.sum(axis=0), n)[col])
    boots = _from_sums(bootstrap_sums(terms, n_bootstrap, random_state), n)[:, col]
    low, high = percentile_interval(boots, confidence, n)
    return OPEEstimate(estimator, value, float(low), float(high), float(confidence),
                       effective_sample_size(terms[:, 1]), n)


def evaluate(rewards: Any, actions: Any, logging_propensities: Any, target_probabilities: Any,
             reward_model: Any = None, *, n_bootstrap: int = DEFAULT_N_BOOTSTRAP,
             confidence: float = DEFAULT_CONFIDENCE, random_state: RandomState = None
             ) -> dict[str, OPEEstimate]:
    """IPS, SNIPS and (with a reward model) DR estimates with the same bootstrap seed."""
    names: list[Estimator] = ["ips", "snips"] + (["dr"] if reward_model is not None else [])  # type: ignore[assignment]  # mypy widens the concatenated literals to str
    seed = make_generator(random_state).integers(2**63)
    return {name: estimate(name, rewards, actions, logging_propensities, target_probabilities,
                           reward_model, n_bootstrap=n_bootstrap, confidence=confidence,
                           random_state=int(seed)) for name in names}


@dataclass(frozen=True)
class PolicyReport:
    """Estimates of one target policy and what may make them untrustworthy.

    Attributes
    ----------
    policy : str
    estimates : dict of str to OPEEstimate
        "ips", "snips" and, with a reward model, "dr".
    effective_sample_size : float
        Kish's ESS of the importance weights.
    max_weight : float
        Largest importance weight.
    n_tiny_propensity : int
        Decisions whose logged propensity is below ``min_propensity`` while the target gives
        the logged arm at least ``min_propensity`` (weights above 1 resting on rare plays, which
        can dominate the estimate; a target as cautious as the logger is not flagged).
    unsupported_mass : float
        Mean target probability on arms the logging policy gave probability 0 (needs the
        logging pmf; IPS and SNIPS are biased when it is positive).
    flags : tuple of str
        Subset of ``("tiny_propensity", "low_ess", "no_support")``.
    messages : tuple of str
        One human-readable warning per flag.
    """

    policy: str
    estimates: dict[str, OPEEstimate]
    effective_sample_size: float
    max_weight: float
    n_tiny_propensity: int
    unsupported_mass: float
    flags: tuple[str, ...]
    messages: tuple[str, ...]

    def to_row(self) -> dict[str, Any]:
        """A flat record for tables: value and interval per estimator, ESS, flags."""
        row: dict[str, Any] = {"policy": self.policy}
        for name, est in self.estimates.items():
            row[name] = est.value
            row[f"{name}_low"] = est.ci_low
            row[f"{name}_high"] = est.ci_high
        row.update(ess=self.effective_sample_size, max_weight=self.max_weight,
                   n_tiny_propensity=self.n_tiny_propensity,
                   unsupported_mass=self.unsupported_mass, flags=",".join(self.flags))
        return row


def _check_targets(targets: Mapping[str, Any], a: np.ndarray) -> dict[str, np.ndarray]:
    """Each of ``targets`` checked as an ``(n, K)`` distribution over the logged arms ``a``.

    Raises
    ------
    ValueError
        A target that is not a distribution per row, has too few columns for ``a``, or has
        another shape than the first.
    """
    n = a.size
    checked = {}
    for name, target in targets.items():
        pe = _check_target(target, n, f"targets[{name!r}]")
        if a.max() >= pe.shape[1]:
            raise ValueError(f"actions must lie in 0..{pe.shape[1] - 1} (the columns of "
                             f"targets[{name!r}])")
        checked[name] = pe
    shape = next(iter(checked.values())).shape
    if any(pe.shape != shape for pe in checked.values()):
        raise ValueError(f"every target must have shape {shape}; got "
                         f"{ {k: v.shape for k, v in checked.items()} }")
    return checked


def _check_logging_pmf(logging_pmf: Any, a: np.ndarray, p0: np.ndarray,
                       shape: tuple[int, ...]) -> np.ndarray:
    """``logging_pmf`` checked: a distribution of ``shape`` that gives the logged arms ``a`` ``p0``.

    Raises
    ------
    ValueError
        Not a distribution per row, another shape, or other propensities than ``p0``.
    """
    n = a.size
    pmf = _check_target(logging_pmf, n, "logging_pmf")
    if pmf.shape != shape:
        raise ValueError(f"logging_pmf has shape {pmf.shape}; expected {shape}")
    if not np.allclose(pmf[np.arange(n), a], p0, rtol=1e-6, atol=1e-9):
        raise ValueError("logging_pmf at the logged arms must equal logging_propensities")
    return pmf


def _flags(name: str, info: dict[str, Any], n: int, min_propensity: float,
           min_ess: float, with_interval: bool = True) -> tuple[list[str], list[str]]:
    """The warning flags of target ``name`` and a message for each.

    Parameters
    ----------
    name : str
    info : dict
        The target's ``ess``, ``max_weight``, ``n_tiny`` and ``unsupported``.
    n : int
        Logged decisions.
    min_propensity, min_ess : float
        As in :func:`evaluate_policies`.
    with_interval : bool, default True
        Whether the estimates carry bootstrap intervals (``n_bootstrap`` > 0): a low ESS makes
        the estimate unreliable and, with intervals, the interval too (``ope --bootstrap 0``
        said "its interval" of a table with none).
    """
    flags: list[str] = []
    messages: list[str] = []
    if info["n_tiny"]:
        flags.append("tiny_propensity")
        messages.append(f"{name}: relies on {info['n_tiny']} decision(s) logged with "
                        f"propensity < {min_propensity:g} (largest weight "
                        f"{info['max_weight']:.3g}); its estimate may be unstable")
    if info["ess"] < min_ess:
        flags.append("low_ess")
        messages.append(f"{name}: effective sample size {info['ess']:.1f} < {min_ess:g} "
                        f"of {n} decisions; its estimate "
                        + ("and interval are" if with_interval else "is") + " not reliable")
    if info["unsupported"] > 0:
        flags.append("no_support")
        messages.append(f"{name}: puts {info['unsupported']:.3g} of its probability on "
                        "arms the logging policy never played; IPS/SNIPS are biased")
    return flags, messages


def evaluate_policies(rewards: Any, actions: Any, logging_propensities: Any,
                      targets: Mapping[str, Any], reward_model: Any = None, *,
                      logging_pmf: Any = None, n_bootstrap: int = DEFAULT_N_BOOTSTRAP,
                      confidence: float = DEFAULT_CONFIDENCE,
                      min_propensity: float = DEFAULT_MIN_PROPENSITY,
                      min_ess: float = DEFAULT_MIN_ESS, random_state: RandomState = None
                      ) -> dict[str, PolicyReport]:
    """IPS, SNIPS and DR estimates of several target policies on one log, with flags.

    Every policy and estimator is bootstrapped on the same resamples (paired intervals).

    Parameters
    ----------
    rewards, actions, logging_propensities : arrays of shape (n,)
        As for :func:`estimate`.
    targets : mapping of str to array of float, shape (n, K)
        Each target policy's propensities at every logged decision.
    reward_model : array of float, shape (n, K), optional
        Predicted rewards for DR (skipped without one).
    logging_pmf : array of float, shape (n, K), optional
        The logging policy's full distribution, to detect targets without support.
    n_bootstrap : int, default 1000
        0 skips the intervals (NaN bounds: :func:`percentile_interval`), otherwise at least
        :data:`MIN_BOOTSTRAP`.
    confidence : float, default 0.95
    min_propensity : float, default 1e-3
        Logged propensities below this are "tiny".
    min_ess : float, default 100
        Effective sample sizes below this are "low".
    random_state : int, SeedSequence, Generator or None
        Seeds the bootstrap.

    Returns
    -------
    dict of str to PolicyReport
        In the order of ``targets``.

    Raises
    ------
    ValueError
        As :func:`estimate`; also for no targets, and a ``logging_pmf`` that is not a
        distribution, disagrees with ``logging_propensities`` or has another arm count.
    """
    check_n_bootstrap(n_bootstrap)
    check_real(confidence, "confidence", low=0.0, high=1.0, low_open=True, high_open=True)
    check_real(min_propensity, "min_propensity", low=0.0, high=1.0)
    check_real(min_ess, "min_ess", low=0.0)
    if not targets:
        raise ValueError("targets is empty; give at least one {name: (n, K) array}")
    r, a, p0 = _check_log(rewards, actions, logging_propensities)
    n = r.size
    checked = _check_targets(targets, a)
    shape = next(iter(checked.values())).shape
    q = None if reward_model is None else _check_model(reward_model, shape)
    pmf = None if logging_pmf is None else _check_logging_pmf(logging_pmf, a, p0, shape)

    tiny = p0 < min_propensity
    terms = np.empty((3 * len(checked), n)).T  # column-major: see bootstrap_sums
    reports: dict[str, dict[str, Any]] = {}
    for j, (name, pe) in enumerate(checked.items()):
        block = estimator_terms(r, a, p0, pe, q)
        terms[:, 3 * j:3 * j + 3] = block
        w = block[:, 1]
        reports[name] = {
            "ess": effective_sample_size(w), "max_weight": float(w.max()),
            # the target plays, with a non-tiny probability, an arm logged with a tiny one
            "n_tiny": int(np.count_nonzero(tiny & (w * p0 >= min_propensity))),
            "unsupported": 0.0 if pmf is None else float((pe * (pmf <= 0)).sum() / n),
        }
    values = _from_sums(terms.sum(axis=0).reshape(-1, 3), n)
    boots = _from_sums(bootstrap_sums(terms, n_bootstrap, random_state)
                       .reshape(n_bootstrap, len(checked), 3), n)
    lows, highs = percentile_interval(boots, confidence, n)
    names = [e for e in ESTIMATORS if e != "dr" or q is not None]
    out = {}
    for j, (name, info) in enumerate(reports.items()):
        estimates = {
            e: OPEEstimate(e, float(values[j, c]), float(lows[j, c]), float(highs[j, c]),
                           float(confidence), info["ess"], n)
            for c, e in enumerate(ESTIMATORS) if e in names
        }
        flags, messages = _flags(name, info, n, min_propensity, min_ess, n_bootstrap > 0)
        out[name] = PolicyReport(name, estimates, info["ess"], info["max_weight"],
                                 info["n_tiny"], info["unsupported"], tuple(flags),
                                 tuple(messages))
    return out
