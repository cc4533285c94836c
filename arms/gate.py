"""The evaluation gate: should a candidate arm set replace the serving one? A pure function.

:func:`evaluate_gate` cuts the ratings in time (the most recent ``holdout_fraction`` of events,
or every event at or after ``cut_time``), fits the candidate arm set and the serving arm set on
the events before the cut, and scores both on the events after it with full-catalogue HR@10 and
NDCG@10 (:func:`arms.metrics.ranking_metrics`: every item the user did not rate before the cut is
a candidate; the hold-out's items are the relevant ones), with percentile bootstrap intervals
over users. The candidate is **promoted** when no arm is worse than its serving counterpart (the
arm with the same label) by more than ``margin`` on either metric (beyond noise, by default: see
the decision rule below), and **rejected** otherwise; the report says why.

Arm sets are specs, not fitted models, so both sides are fitted on exactly the same events::

    ["svd", "popularity"]                                   # registry names, default params
    {"svd": {"n_factors": 64}, "popularity": {}}            # label -> params for make_arm
    {"svd": {"arm": "random"}}                              # label "svd", built as "random"

Labels pair the arms of the two sets. An arm only in the candidate is new (scored, not gated);
one only in the serving set is dropped (noted); a candidate with no label in common is rejected,
since nothing vouches for it.

Decision rule and statistics: an arm is worse by more than ``margin`` when the point estimate of
its difference (candidate minus serving, means over the hold-out's users) is below ``-margin``
and, with ``beyond_noise`` (the default), the paired percentile interval of that difference (both
sets on the same bootstrap resamples of users) lies below zero as well: on a hold-out of a few
hundred users an honest refit with another seed moves HR@10 by more than 0.01 either way. The
resamples are seeded, so the decision is deterministic given the data and ``random_state``.
Users with hold-out events but none before the cut are scored too: every arm serves them
popularity, as in the service.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any, Literal

import numpy as np
import pandas as pd
import scipy.sparse as sp

from arms._validation import check_float, check_fraction, check_int, check_seed
from arms.base import Recommender
from arms.data.dataset import Dataset
from arms.data.splits import rating_order
from arms.metrics import ranking_metrics
from arms.registry import make_arm, refuse_repeats, resolve

__all__ = ["ArmSetSpec", "GateReport", "evaluate_gate", "temporal_cut"]

#: ``["svd", ...]`` or ``{label: {param: value, ...}}`` (``"arm"`` names the registry entry when it
#: differs from the label).
ArmSetSpec = Sequence[str] | Mapping[str, Mapping[str, Any]]
#: Metrics the gate compares, as named by :func:`arms.metrics.ranking_metrics`.
GATED_METRICS = ("hit_rate", "ndcg")
#: Users scored per ``recommend`` call: bounds the dense ``(users, n_items)`` score block.
USER_BATCH = 2048


@dataclass(frozen=True)
class GateReport:
    """What :func:`evaluate_gate` found and decided.

    Attributes
    ----------
    decision : {"promote", "reject"}
    reason : str
        One sentence per failing comparison (or why the candidate passes).
    cut_time : int
        Timestamp of the cut: the hold-out is every event at or after it (in the fraction form,
        events at exactly this second may sit on both sides; ties broken as
        :func:`arms.data.temporal_split` does).
    n_train, n_holdout, n_users : int
        Events before and after the cut, and hold-out users scored.
    n_relevant : int
        Hold-out (user, item) pairs counted as relevant (a rating at or above
        ``relevance_threshold``), of the scored users.
    relevance_threshold : float or None
        The least rating of a relevant hold-out event (None: every event).
    k : int
        Cut-off of the metrics.
    margin : float
        The largest drop allowed per arm and metric.
    beyond_noise : bool
        Whether a drop also had to be outside its interval's noise (see :func:`evaluate_gate`).
    metrics : dict
        ``{"candidate" | "serving": {label: {metric: {"value", "low", "high"}}}}``.
    differences : dict
        ``{label: {metric: {"value", "low", "high"}}}``: candidate minus serving for the labels
        of both sets.
    new_arms, dropped_arms : list of str
        Labels only in the candidate, only in the serving set.
    fitted : dict of str to Recommender
        The candidate's arms fitted on the events before the cut (not in :meth:`to_dict`).
    """

    decision: Literal["promote", "reject"]
    reason: str
    cut_time: int
    n_train: int
    n_holdout: int
    n_users: int
    k: int
    margin: float
    beyond_noise: bool
    metrics: dict[str, dict[str, dict[str, dict[str, float]]]]
    differences: dict[str, dict[str, dict[str, float]]]
    new_arms: list[str]
    dropped_arms: list[str]
    n_relevant: int
    relevance_threshold: float | None
    fitted: dict[str, Recommender] = field(default_factory=dict, repr=False, compare=False)

    def to_dict(self) -> dict[str, Any]:
        """The report as plain JSON data (for the versions table), without the fitted arms."""
        return {
            "decision": self.decision, "reason": self.reason, "cut_time": self.cut_time,
            "n_train": self.n_train, "n_holdout": self.n_holdout, "n_users": self.n_users,
            "k": self.k, "margin": self.margin, "beyond_noise": self.beyond_noise,
            "metrics": self.metrics,
            "differences": self.differences, "new_arms": list(self.new_arms),
            "dropped_arms": list(self.dropped_arms), "n_relevant": self.n_relevant,
            "relevance_threshold": self.relevance_threshold,
        }  # fmt: skip


#: The gate's default margin, and its largest: the metrics are rates on a 0-1 scale, so a
#: margin above 1 would reject nothing (the service's ``gate_margin`` takes both from here).
DEFAULT_MARGIN = 0.01
MAX_MARGIN = 1.0

#: Fewest bootstrap resamples the gate's percentile intervals are computed from: with 1 or 2
#: resamples a "95% interval" is one or two resampled values (it took 1, found by review).
#: The floor is :data:`bandits.ope.MIN_BOOTSTRAP`'s, which ``arms`` may not import (neither
#: may ``bandits`` import ``arms``; docs/architecture.md), so the number is written here too
#: and ``tests/test_gate.py`` holds the two equal: the service's ``gate_bootstrap`` setting,
#: at least ``bandits.ope.MIN_BOOTSTRAP``, is then always a value the gate takes.
MIN_BOOTSTRAP = 100
#: Fewest hold-out users with a hit the gate decides on: below it, the interval of a drop is
#: too wide to tell a broken candidate from noise, and the gate does not vouch (found by
#: attack: 5 users scored, a candidate's svd at HR@10 0.60 against 1.00, interval [-0.80,
#: +0.00], passed "beyond noise").
MIN_USERS = 10
#: The ceiling, :data:`bandits.ope.MAX_BOOTSTRAP`'s, mirrored as the floor is (and held equal
#: by the same test): the resamples are a (n_bootstrap, users) array.
MAX_BOOTSTRAP = 100_000
#: The gate's default resamples and confidence: :data:`bandits.ope.DEFAULT_N_BOOTSTRAP` and
#: :data:`bandits.ope.DEFAULT_CONFIDENCE`, written here for the same reason and held equal by the
#: same test.
DEFAULT_N_BOOTSTRAP = 1000
DEFAULT_CONFIDENCE = 0.95


def temporal_cut(
    data: Dataset, *, holdout_fraction: float | None = None, cut_time: int | None = None
) -> tuple[Dataset, Dataset, int]:
    """Split ``data`` at one moment for everyone: ``(before, after, cut_time)``.

    Parameters
    ----------
    data : Dataset
    holdout_fraction : float, optional
        The most recent share of events, ``0 < holdout_fraction < 1``: the last
        ``ceil(holdout_fraction * n)`` events in time order (ties in time broken by
        :func:`arms.data.splits.tie_break_key`, as the per-user temporal split does).
    cut_time : int, optional
        Every event with ``timestamp >= cut_time`` is held out. Exactly one of the two.

    Returns
    -------
    before, after : Dataset
        Same catalogue as ``data``; together all its events, both non-empty.
    cut_time : int
        The earliest timestamp held out.

    Raises
    ------
    TypeError
        A wrong type for ``data`` or either argument.
    ValueError
        Both or neither given, a fraction outside ``(0, 1)``, or a cut that leaves one side empty.
    """
    if not isinstance(data, Dataset):
        raise TypeError(f"data must be an arms.data.Dataset, got {type(data).__name__}")
    if (holdout_fraction is None) == (cut_time is None):
        raise ValueError(f"give exactly one of holdout_fraction and cut_time, got "
                         f"holdout_fraction={holdout_fraction!r}, cut_time={cut_time!r}")
    r = data.ratings
    times = r["timestamp"].to_numpy()
    if holdout_fraction is not None:
        share = check_fraction("holdout_fraction", holdout_fraction)
        order = rating_order(r)
        n_hold = min(max(math.ceil(share * len(r)), 1), len(r) - 1) if len(r) > 1 else 0
        held = np.zeros(len(r), dtype=bool)
        held[order[len(r) - n_hold:]] = True
    else:
        cut = check_int("cut_time", cut_time)
        held = times >= cut
    if held.all() or not held.any():
        raise ValueError(
            f"the cut leaves {int((~held).sum())} events before it and {int(held.sum())} after "
            f"(timestamps {int(times.min()) if len(times) else None}.."
            f"{int(times.max()) if len(times) else None}); both sides need events"
        )
    cut_at = int(times[held].min())
    return data.subset(~held, name=f"{data.name}-before"), data.subset(held, name=f"{data.name}"
                                                                            "-after"), cut_at


def evaluate_gate(
    data: Dataset | pd.DataFrame,
    candidate: ArmSetSpec,
    serving: ArmSetSpec,
    *,
    holdout_fraction: float | None = None,
    cut_time: int | None = None,
    k: int = 10,
    margin: float = DEFAULT_MARGIN,
    beyond_noise: bool = True,
    relevance_threshold: float | None = None,
    n_bootstrap: int = DEFAULT_N_BOOTSTRAP,
    confidence: float = DEFAULT_CONFIDENCE,
    random_state: int = 0,
) -> GateReport:
    """Fit both arm sets before the cut, score them after it, and decide (see the module doc).

    Parameters
    ----------
    data : Dataset or pandas.DataFrame
        The events; a DataFrame needs columns ``user_id, item_id, rating, timestamp`` and its
        catalogue is the ids it mentions (finite ratings of any value; timestamps in seconds,
        taken whole).
    candidate, serving : ArmSetSpec
        The arm sets to compare (labels pair them).
    holdout_fraction : float, optional
        Most recent share of events held out, within ``(0, 1)``.
    cut_time : int, optional
        Hold out the events at or after this timestamp. Exactly one of the two.
    k : int, default 10
        Cut-off of HR@k and NDCG@k, >= 1.
    margin : float, default 0.01
        Largest drop of HR@k or NDCG@k (absolute, on the metric's 0-1 scale) a candidate arm may
        show against its serving counterpart, from 0 to 1 (:data:`MAX_MARGIN`).
    beyond_noise : bool, default True
        Count a drop larger than ``margin`` only when the paired interval of the difference lies
        below zero too, so a refit that differs by noise alone is not rejected (an SVD refit
        with another seed on MovieLens 100K's last 10%: HR@10 -0.012, interval [-0.066,
        +0.042]). False: the point estimate alone decides.
    relevance_threshold : float, optional
        Only hold-out ratings at or above it count as relevant (all of them by default: an event
        is an interaction).
    n_bootstrap : int, default 1000
        Resamples of the users for the intervals, at least :data:`MIN_BOOTSTRAP`.
    confidence : float, default 0.95
        Level of the percentile intervals, within ``(0, 1)``.
    random_state : int, default 0
        Seed of the arms and of the resamples.

    Returns
    -------
    GateReport

    Raises
    ------
    TypeError
        A wrong type for ``data``, a spec or an option.
    ValueError
        An empty spec, bad options, a cut leaving a side empty, a hold-out without relevant
        events, or an unknown arm (:class:`arms.errors.UnknownArmError`, with a suggestion).
    """
    dataset = _as_dataset(data)
    cand_specs = _specs(candidate, "candidate")
    serv_specs = _specs(serving, "serving")
    k = check_int("k", k, low=1)
    margin = check_float("margin", margin, low=0.0, high=MAX_MARGIN)
    n_bootstrap = check_int("n_bootstrap", n_bootstrap, low=MIN_BOOTSTRAP, high=MAX_BOOTSTRAP)
    confidence = check_fraction("confidence", confidence)
    seed = check_seed(random_state, "random_state")  # the one seed rule (review)
    if not isinstance(beyond_noise, bool):
        raise TypeError(f"beyond_noise must be True or False, got {beyond_noise!r}")
    before, after, cut_at = temporal_cut(dataset, holdout_fraction=holdout_fraction,
                                         cut_time=cut_time)
    relevant = _relevant(after, relevance_threshold)
    users = np.flatnonzero(np.diff(relevant.indptr) > 0)
    if users.size == 0:
        raise ValueError(f"no hold-out event is relevant (relevance_threshold="
                         f"{relevance_threshold!r}); nothing to score")
    if users.size < MIN_USERS:
        raise ValueError(f"the hold-out has hits of {users.size} users, fewer than {MIN_USERS}: "
                         "too few to tell a worse candidate from noise (hold out more, with "
                         "gate_holdout or gate_holdout_s)")
    relevant = relevant[users]
    # One set of user resamples for every arm of both sets: the differences are paired.
    resamples = np.random.default_rng(seed).integers(users.size, size=(n_bootstrap, users.size))
    alpha = (1.0 - confidence) / 2.0
    scored: dict[str, dict[str, dict[str, np.ndarray]]] = {}
    fitted: dict[str, Recommender] = {}
    for side, specs in (("candidate", cand_specs), ("serving", serv_specs)):
        scored[side] = {}
        for label, (name, params) in specs.items():
            own = dict(params)
            model = make_arm(name, random_state=own.pop("random_state", seed), **own).fit(before)
            if side == "candidate":
                fitted[label] = model
            slates = np.concatenate([model.recommend(users[lo:lo + USER_BATCH], k)[0]
                                     for lo in range(0, users.size, USER_BATCH)])
            scored[side][label] = _scores(slates, relevant, k, resamples)

    def summary(point: float, boot: np.ndarray) -> dict[str, float]:
        low, high = np.quantile(boot, [alpha, 1.0 - alpha])
        return {"value": float(point), "low": float(low), "high": float(high)}

    metrics = {side: {label: {m: summary(v[m][0], v[m][1:]) for m in GATED_METRICS}
                      for label, v in arms.items()} for side, arms in scored.items()}
    common = [label for label in cand_specs if label in serv_specs]
    differences = {
        label: {m: summary(scored["candidate"][label][m][0] - scored["serving"][label][m][0],
                           scored["candidate"][label][m][1:] - scored["serving"][label][m][1:])
                for m in GATED_METRICS}
        for label in common
    }
    failures = [
        f"{label} {m}@{k} {metrics['candidate'][label][m]['value']:.4f} against serving "
        f"{metrics['serving'][label][m]['value']:.4f} (difference {d['value']:+.4f}, "
        f"{confidence:.0%} interval [{d['low']:+.4f}, {d['high']:+.4f}]) is worse by more than "
        f"margin={margin:g}" + (" beyond noise" if beyond_noise else "")
        for label, per_metric in differences.items()
        for m, d in per_metric.items()
        if d["value"] < -margin and (d["high"] < 0.0 or not beyond_noise)
    ]
    decision: Literal["promote", "reject"]
    if not common:
        decision, reason = "reject", (
            f"no candidate arm ({sorted(cand_specs)}) has a serving counterpart "
            f"({sorted(serv_specs)}); nothing vouches for the candidate")
    elif failures:
        decision, reason = "reject", "; ".join(failures)
    else:
        worst_label, worst_metric = min(
            ((label, m) for label in common for m in GATED_METRICS),
            key=lambda lm: differences[lm[0]][lm[1]]["value"])
        w = differences[worst_label][worst_metric]
        decision, reason = "promote", (
            f"no arm is worse than its serving counterpart by more than margin={margin:g}"
            f"{' beyond noise' if beyond_noise else ''} (smallest difference: {worst_label} "
            f"{worst_metric}@{k} {w['value']:+.4f}, "
            f"{confidence:.0%} interval [{w['low']:+.4f}, {w['high']:+.4f}])")
    return GateReport(
        decision=decision, reason=reason, cut_time=cut_at, n_train=before.n_ratings,
        n_holdout=after.n_ratings, n_users=int(users.size), k=k, margin=margin,
        beyond_noise=bool(beyond_noise), metrics=metrics, differences=differences,
        new_arms=[label for label in cand_specs if label not in serv_specs],
        dropped_arms=[label for label in serv_specs if label not in cand_specs],
        n_relevant=int(relevant.nnz), fitted=fitted,
        relevance_threshold=None if relevance_threshold is None else float(relevance_threshold),
    )  # fmt: skip


def _scores(slates: np.ndarray, relevant: sp.csr_matrix, k: int, resamples: np.ndarray
            ) -> dict[str, np.ndarray]:
    """HR@k and NDCG@k over all users, then over each resample of them: ``(1 + B,)`` each.

    Every value comes from :func:`arms.metrics.ranking_metrics` (a resample is its rows
    repeated), so the gate's numbers are the lab's numbers.
    """
    out = {m: np.empty(1 + len(resamples)) for m in GATED_METRICS}
    full = ranking_metrics(slates, relevant, k=k)
    for m in GATED_METRICS:
        out[m][0] = full[m]
    for b, rows in enumerate(resamples, start=1):
        res = ranking_metrics(slates[rows], relevant[rows], k=k)
        for m in GATED_METRICS:
            out[m][b] = res[m]
    return out


def _relevant(after: Dataset, threshold: float | None) -> sp.csr_matrix:
    """Hold-out events (ratings >= threshold) as the binary ``(n_users, n_items)`` matrix."""
    if threshold is not None:
        keep = after.ratings["rating"].to_numpy() >= check_float("relevance_threshold", threshold)
        after = after.subset(keep)
    return after.interaction_matrix(binary=True)


def _as_dataset(data: Dataset | pd.DataFrame) -> Dataset:
    """``data`` as a Dataset; a ratings DataFrame gets a catalogue of the ids it mentions."""
    if isinstance(data, Dataset):
        return data
    if not isinstance(data, pd.DataFrame):
        raise TypeError(f"data must be an arms.data.Dataset or a pandas DataFrame of ratings, "
                        f"got {type(data).__name__}")
    missing = [c for c in ("user_id", "item_id", "rating", "timestamp") if c not in data.columns]
    if missing:
        raise ValueError(f"data lacks columns {missing}; expected user_id, item_id, rating, "
                         "timestamp")
    users = pd.DataFrame(index=pd.Index(np.unique(data["user_id"].to_numpy(np.int64)),
                                        name="user_id"))
    items = pd.DataFrame(index=pd.Index(np.unique(data["item_id"].to_numpy(np.int64)),
                                        name="item_id"))
    # An event's value is whatever the caller logs (0 for a miss, say): any finite value
    # (rating_scale=None; the Dataset still refuses NaN and inf), and timestamps are taken in
    # whole seconds, as a Dataset keeps them (found by review: fractional timestamps and
    # ratings of 0, which this function took before the Dataset's checks, were refused).
    frame = data.copy()
    stamps = pd.to_numeric(frame["timestamp"], errors="coerce").to_numpy(np.float64)
    frame["timestamp"] = np.where(np.isfinite(stamps), np.floor(stamps), stamps)
    return Dataset.from_frames(frame, items, users, (), name="ratings", rating_scale=None)


def _specs(spec: ArmSetSpec, name: str) -> dict[str, tuple[str, dict[str, Any]]]:
    """``{label: (registry name, params)}`` from an :data:`ArmSetSpec` named ``name``."""
    if isinstance(spec, Mapping):
        out: dict[str, tuple[str, dict[str, Any]]] = {}
        for label, params in spec.items():
            if not isinstance(label, str) or not label:
                raise TypeError(f"{name} labels must be non-empty strings, got {label!r}")
            if not isinstance(params, Mapping):
                raise TypeError(f"{name}[{label!r}] must be a mapping of hyper-parameters, got "
                                f"{params!r}")
            rest = dict(params)
            arm = rest.pop("arm", label)
            if not isinstance(arm, str):
                raise TypeError(f"{name}[{label!r}]['arm'] must be an arm name, got {arm!r}")
            out[label] = (arm, rest)
    elif isinstance(spec, Sequence) and not isinstance(spec, str):
        if not all(isinstance(a, str) and a for a in spec):
            raise TypeError(f"{name} must list arm names (non-empty strings), got {spec!r}")
        out = {a: (a, {}) for a in spec}
    else:
        raise TypeError(f"{name} must be a list of arm names or a mapping label -> params, got "
                        f"{type(spec).__name__}")
    # The registry's one rule of an arm list, naming the side: none at all, or one arm twice
    # (labels of a list resolved: an alias and its arm are one arm named twice).
    names = [resolve(a).name for a in spec] if not isinstance(spec, Mapping) else list(out)
    try:
        refuse_repeats(names)
    except ValueError as exc:
        raise ValueError(f"{name}: {exc}") from None
    return out
