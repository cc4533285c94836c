"""Off-policy evaluation of the decision log: what other policies would have earned.

The decision log (SQLite or PostgreSQL, :mod:`serving.store.tables`) is read into arrays
(:func:`read_log`), candidate policies' action probabilities are built for every logged decision
(:func:`candidate_policies`), and :func:`bandits.ope.evaluate_policies` estimates their value with
IPS, self-normalised IPS and doubly robust estimators and bootstrap intervals
(:func:`evaluate_log`). ``recbandits ope`` is :func:`run` (an :class:`OPEConfig` in, an
:class:`OPERun` out; it writes the table as CSV, the CLI prints :func:`format_run`); the log can be
exported as CSV (:func:`export_csv`) and in Open Bandit Pipeline's layout (:func:`export_obp`).

Reward of a decision
    The one reward the service decided for it: its stored outcome (:mod:`serving.rules`: the
    first rewarded feedback in its window, or the window's close). A decision whose window
    closed before its outcome was stored gets the default reward the settle sweep will give
    it. Decisions whose window is still open at ``as_of`` are left out (their reward is not
    known yet; leaving out only the open ones without a like would bias every estimate
    upwards), unless ``include_open`` counts them with what they have so far. Cold-start
    decisions were made outside the policy (propensity 1, one fixed arm) and are left out.

Candidate policies (per logged decision i)
    ``always:<arm>`` for every arm; ``uniform``; ``greedy`` on the posterior means
    (Beta(1, 1) prior; ties split evenly); ``thompson(a=..,b=..)``: Thompson Sampling with other
    Beta priors; ``logging``: the logged pmf itself, whose IPS and SNIPS estimates equal the
    observed mean reward exactly.

    Offline replay: the posterior of ``greedy`` and of each Thompson candidate at decision i is
    the prior plus every reward the service's policy had observed before decision i (the
    decided outcomes, in the order they were decided). The candidates
    therefore learn from the log's rewards, i.e. from the arms the *logging* policy played,
    not from the arms they would have played themselves; their propensities at i depend only
    on the past, so the estimators stay unbiased for ``mean_i sum_a pi_i(a) E[r | x_i, a]``.
    The Thompson candidates refresh their posterior every ``ceil(n / ts_states)`` decisions
    (delayed updates, as the service refreshes its snapshot periodically) and their
    propensities come from :meth:`bandits.ThompsonSampling.probabilities_batch` (the batched
    ``action_probabilities``) with ``propensity_grid`` quadrature intervals.

Contextual candidates (when every decision logged its context vector, ``context["features"]``)
    ``LinTS(scale=..,ridge=..)`` and ``LinUCB(alpha=..,ridge=..)`` (:data:`DEFAULT_LINEAR`, or
    ``--linear``): replayed the same way, in the same refresh blocks: at the start of a block
    their ridge statistics hold every observation (context, arm, reward) decided before it,
    and their propensities at each decision's logged context come from one batched
    ``probabilities_batch`` call per block. With the logging policy's own parameters and
    refresh points the replay reproduces a LinTS logger's pmf (tested). And
    ``best_arm_per_segment``: users are grouped by their one-hot gender x age columns (every
    0/1 column when the feature names are unknown, as the service logs only the vector and its
    ``feature_version``); at decision i, the arm with the best smoothed mean reward
    ``(wins + 1) / (plays + 2)`` among the earlier observations of the user's segment, ties
    split evenly. Logs of a contextual logging policy need nothing special: the logged pmf is
    per decision already.

Reward model for DR
    Per arm, the mean reward of the *earlier* logged decisions that played it (Beta(1, 1)
    smoothing); with user segments, the mean of the earlier decisions of the user's segment,
    shrunk towards it. Being predictable it keeps DR unbiased; it is crude, so DR mainly helps
    the candidates that rely on rarely played arms.
"""

from __future__ import annotations

import bisect
import json
import logging
import math
import os
import time
from collections import Counter
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from arms._validation import check_seed
from arms.data.files import staged_run_folder, write_whole
from bandits import ThompsonSampling
from bandits.base import (
    BatchedPolicy,
    BatchState,
    argmax_set_probabilities,
    registered_policies,
)
from bandits.errors import integer_text, number_text
from bandits.ope import (
    DEFAULT_CONFIDENCE,
    DEFAULT_MIN_ESS,
    DEFAULT_MIN_PROPENSITY,
    DEFAULT_N_BOOTSTRAP,
    ESTIMATORS,
    NO_RESAMPLES,
    PolicyReport,
    bootstrap_sums,
    check_n_bootstrap,
    estimates_from_sums,
    estimator_terms,
    evaluate_policies,
    percentile_interval,
)
from bandits.thompson import check_beta_prior
from serving.holdout import under_holdout
from serving.policy import PolicyModel, said_policy, with_shared_params
from serving.rules import ALREADY_DECIDED, Feedback, RuleBook, decided_note
from serving.store import open_store
from serving.store.types import Outcome

logger = logging.getLogger(__name__)

DEFAULT_TS_PRIORS: tuple[tuple[float, float], ...] = ((1.0, 1.0), (1.0, 19.0), (20.0, 20.0))
#: The rules the simulated log follows and ``read_log`` applies to undecided decisions.
RULES = RuleBook()


class EmptyLogError(ValueError):
    """The log holds no decision that can be evaluated.

    Attributes
    ----------
    n_open : int
        Policy decisions whose reward window is still open (0 when waiting will not help).
    first_close : float or None
        When the first of them closes (seconds since the epoch).
    what : str
        The message without the advice (which names the Python parameter; the CLI gives its
        own, naming its option).
    """

    def __init__(self, message: str, *, n_open: int = 0, first_close: float | None = None,
                 what: str | None = None) -> None:
        super().__init__(message)
        self.n_open = n_open
        self.first_close = first_close
        self.what = message if what is None else what


@dataclass
class DecisionLog:
    """The evaluable part of a decision log, as arrays in decision-time order.

    Attributes
    ----------
    arms : list of str
        Arm names; column order of ``pmf`` and value range of ``actions``.
    event_ids : ndarray of str, shape (n,)
    created_at : ndarray of float64, shape (n,)
        Decision times (seconds since the epoch).
    user_ids : ndarray of int64, shape (n,)
    actions : ndarray of int64, shape (n,)
        Position of the logged arm in ``arms``.
    propensities : ndarray of float64, shape (n,)
        Logged probability of the chosen arm.
    pmf : ndarray of float64, shape (n, K)
        Logged probability of every arm (0 for arms absent at the time).
    rewards : ndarray of float64, shape (n,)
        The decision's one reward (see the module doc).
    policy_versions : ndarray of int64, shape (n,)
    context : ndarray of float64, shape (n, d)
        Numeric fields of the logged context, columns ``context_names``.
    context_names : list of str
    obs_times, obs_actions, obs_rewards : ndarray, shape (m,)
        Every reward the service's policy observed (replay of the log), in time order.
    excluded : dict of str to int
        Decisions left out: ``cold_start``, ``open`` (window not closed), ``unknown_arm``.
    counted_open : int
        Decisions counted while their window is still open (``include_open``), with the
        feedback they have so far: those without any at the default reward.
    source : str
        The store URL without password.
    features : ndarray of float64, shape (n, d), or None
        The context vector the logging policy saw (``context["features"]``); rows of
        decisions logged without one (older or simulated logs, another ``feature_version``
        or dimension) are zero and ``has_features`` is False there. None when no decision
        has one.
    has_features : ndarray of bool, shape (n,), or None
    feature_version : str or None
        The version of ``features`` (the most frequent (version, dimension) of the log).
    feature_names : list of str or None
        Names of the ``d`` columns when known (logged as ``context["feature_names"]`` or given
        to :func:`read_log`).
    obs_features : ndarray of float64, shape (m, d), or None
        The context of every observation (``obs_*``), zero where ``obs_has_features`` is False.
    obs_has_features : ndarray of bool, shape (m,), or None
    """

    arms: list[str]
    event_ids: np.ndarray
    created_at: np.ndarray
    user_ids: np.ndarray
    actions: np.ndarray
    propensities: np.ndarray
    pmf: np.ndarray
    rewards: np.ndarray
    policy_versions: np.ndarray
    context: np.ndarray
    context_names: list[str]
    obs_times: np.ndarray
    obs_actions: np.ndarray
    obs_rewards: np.ndarray
    excluded: dict[str, int] = field(default_factory=dict)
    source: str = ""
    counted_open: int = 0
    features: np.ndarray | None = None
    has_features: np.ndarray | None = None
    feature_version: str | None = None
    feature_names: list[str] | None = None
    obs_features: np.ndarray | None = None
    obs_has_features: np.ndarray | None = None

    @property
    def n(self) -> int:
        """Number of logged decisions, ``actions.size``."""
        return int(self.actions.size)

    def contextual_note(self) -> str | None:
        """Why contextual candidates cannot be evaluated on this log, or None if they can."""
        if self.features is None or self.has_features is None:
            return ("no decision logged a context vector (context['features']): contextual "
                    "candidates (LinTS, LinUCB, best arm per segment) skipped")
        missing = int((~self.has_features).sum())
        if missing:
            return (f"{missing} of {self.n} decisions have no context vector of feature set "
                    f"{self.feature_version!r} ({self.features.shape[1]} values): contextual "
                    "candidates (LinTS, LinUCB, best arm per segment) skipped")
        return None

    def counts_before(self) -> tuple[np.ndarray, np.ndarray]:
        """Successes and failures per arm the policy had observed before each decision.

        Returns
        -------
        successes, failures : ndarray of float64, shape (n, K)
        """
        K = len(self.arms)
        m = self.obs_actions.size
        onehot_s = np.zeros((m + 1, K))
        onehot_f = np.zeros((m + 1, K))
        onehot_s[np.arange(1, m + 1), self.obs_actions] = self.obs_rewards
        onehot_f[np.arange(1, m + 1), self.obs_actions] = 1.0 - self.obs_rewards
        before = np.searchsorted(self.obs_times, self.created_at, side="left")
        return np.cumsum(onehot_s, axis=0)[before], np.cumsum(onehot_f, axis=0)[before]


# ---------------------------------------------------------------------------- reading
def read_log(url: str, *, as_of: float | None = None, include_open: bool = False,
             partition: int = 50_000, feature_names: Sequence[str] | None = None,
             default_reward: float = RULES.default_reward) -> DecisionLog:
    """Read the evaluable decisions of the store at ``url`` into a :class:`DecisionLog`.

    Parameters
    ----------
    url : str
        SQLAlchemy URL (``sqlite:///path.db`` or ``postgresql+psycopg://...``).
    as_of : float, optional
        Time (seconds since the epoch) at which windows are judged closed; default now.
    include_open : bool, default False
        Count decisions whose window is still open with the feedback they have so far.
    partition : int, default 50000
        Rows fetched at a time.
    feature_names : sequence of str, optional
        Names of the logged context vector's columns (the service logs the vector and its
        ``feature_version`` only); used to find user segments.
    default_reward : float, default the rule book's
        The reward a decision gets when its window closes without rewarded feedback (the
        service's ``default_reward`` setting): what a closed decision not yet settled counts as.

    Raises
    ------
    EmptyLogError
        No decision can be evaluated (empty log, or only cold-start/open decisions); its
        ``n_open`` and ``first_close`` say whether waiting helps.
    ValueError
        For a URL that is neither SQLite nor PostgreSQL, an SQLite file that does not exist,
        or ``feature_names`` of another length than the logged vectors.
    """
    store = open_store(url, read_only=True)  # ValueError: no such SQLite file
    as_of = time.time() if as_of is None else float(as_of)
    try:
        if not store.has_log():
            raise EmptyLogError(f"{store.describe()} has no decision log (no 'decisions' table)")
        arms: list[str] = []
        parts: list[dict[str, Any]] = []
        n_cold = store.decision_log_rows(lambda rows: parts.append(_arrays(rows, arms)),
                                         partition=partition)
        source = store.describe()
        _, _, logged_version, _ = _features(parts) if parts else (None, None, None, None)
        stored_names = (store.feature_names(logged_version) if logged_version is not None
                        else None)
        n_multileaved = 0 if parts else len(store.multileave_rows()[0])
    finally:
        store.dispose()
    if not parts:
        raise EmptyLogError(f"{source} holds no single-arm policy decision (cold-start "
                            f"decisions: {n_cold}; multileaved decisions: {n_multileaved}"
                            + (", whose arms 'recbandits credit' compares)" if n_multileaved
                               else ")"))
    K = len(arms)
    features_all, has_all, version, logged_names = _features(parts)
    cat = {k: np.concatenate([p[k] for p in parts]) for k in parts[0]
           if k not in ("pmf", "features")}
    pmf = np.zeros((cat["created_at"].size, K))
    row = 0
    for p in parts:
        pmf[row:row + p["pmf"].shape[0], :p["pmf"].shape[1]] = p["pmf"]
        row += p["pmf"].shape[0]
    decided = ~np.isnan(cat["reward"])
    closed = ~np.isnan(cat["settled_at"]) | (cat["reward_deadline"] < as_of)
    # An undecided decision whose window closed gets the default reward when the sweep settles
    # it (earliest: no feedback decided it); so does an open one counted with include_open.
    rewards = np.where(decided, cat["reward"], default_reward)
    keep = closed | include_open
    unknown = cat["actions"] < 0
    keep &= ~unknown
    if not keep.any():
        open_ = ~closed & ~unknown
        first = float(cat["reward_deadline"][open_].min()) if open_.any() else None
        when = ("" if first is None else
                f"; the first closes at {_utc(first)} UTC, in {max(first - as_of, 0) / 60:.0f} "
                "min")
        what = (f"{source}: none of the {pmf.shape[0]} policy decisions has a closed reward "
                f"window yet ({int(open_.sum())} open{when})")
        advice = ("; wait for it, or count open decisions with the feedback they have so far "
                  "(include_open=True)") if open_.any() else ""
        raise EmptyLogError(what + advice, n_open=int(open_.sum()), first_close=first,
                            what=what)
    # What the service's policy observed: every decided outcome, in the order it was decided.
    observed = np.flatnonzero(decided & ~unknown)
    observed = observed[np.argsort(cat["decided_at"][observed], kind="stable")]
    ctx_names = parts[0]["context_names"].tolist()
    if logged_names is None:
        logged_names = stored_names  # the service logs the names once per feature set
    names = list(feature_names) if feature_names is not None else logged_names
    d = 0 if features_all is None else features_all.shape[1]
    if feature_names is not None and len(feature_names) != d:
        raise ValueError(f"feature_names has {len(feature_names)} names; the logged context "
                         f"vectors have {d} values")
    if names is not None and len(names) != d:  # logged names of another vector
        names = None
    return DecisionLog(
        arms=arms,
        event_ids=cat["event_ids"][keep],
        created_at=cat["created_at"][keep],
        user_ids=cat["user_ids"][keep],
        actions=cat["actions"][keep],
        propensities=cat["propensities"][keep],
        pmf=pmf[keep],
        rewards=rewards[keep].astype(np.float64),
        policy_versions=cat["policy_versions"][keep],
        context=cat["context"][keep],
        context_names=ctx_names,
        obs_times=cat["decided_at"][observed],
        obs_actions=cat["actions"][observed],
        obs_rewards=cat["reward"][observed],
        excluded={"cold_start": n_cold,
                  "open": 0 if include_open else int((~closed & ~unknown).sum()),
                  "unknown_arm": int(unknown.sum())},
        source=source,
        counted_open=int((~closed & ~unknown).sum()) if include_open else 0,
        features=None if features_all is None else features_all[keep],
        has_features=None if has_all is None else has_all[keep],
        feature_version=version, feature_names=names,
        obs_features=None if features_all is None else features_all[observed],
        obs_has_features=None if has_all is None else has_all[observed],
    )


def _utc(t: float) -> str:
    from datetime import UTC, datetime

    return datetime.fromtimestamp(t, UTC).strftime("%Y-%m-%d %H:%M:%S")


def _features(parts: Sequence[dict[str, Any]]
              ) -> tuple[np.ndarray | None, np.ndarray | None, str | None, list[str] | None]:
    """The log's context vectors: (n, d) array, (n,) mask, version, logged names.

    The (feature version, dimension) logged most often wins (ties: the latest); vectors of
    another version or dimension count as absent, as the service's fold skips them.
    """
    counts: dict[tuple[str | None, int], int] = {}
    for p in parts:
        for key, (rows, _, _) in p["features"].items():
            counts[key] = counts.get(key, 0) + rows.size
    if not counts:
        return None, None, None, None
    key = max(reversed(list(counts)), key=counts.__getitem__)
    n = sum(p["created_at"].size for p in parts)
    out = np.zeros((n, key[1]))
    has = np.zeros(n, dtype=bool)
    names = None
    start = 0
    for p in parts:
        if key in p["features"]:
            rows, matrix, logged = p["features"][key]
            out[start + rows] = matrix
            has[start + rows] = True
            names = names or logged
        start += p["created_at"].size
    return out, has, key[0], names


def _arrays(rows: Sequence[Any], arms: list[str]) -> dict[str, Any]:
    """One partition of decision rows as arrays; ``arms`` grows as new names appear.

    ``rows`` hold :attr:`serving.store.Store.DECISION_LOG_COLUMNS`.

    ``pmf`` and ``context`` arrive as JSON text: the pmf only changes when the service
    refreshes its snapshot, so each distinct text is parsed once and rows gather from a small
    table (parsing every row dominated the cost of reading 10^6 decisions).
    """
    (event_ids, created, users, contexts, arm, prop, pmfs, versions, deadlines,
     settled, reward, decided_at) = zip(*rows, strict=True)
    index = {a: k for k, a in enumerate(arms)}

    def distinct(texts: tuple[str, ...]) -> tuple[np.ndarray, list[Any]]:
        seen: dict[str, int] = {}
        codes = np.fromiter((seen.setdefault(t, len(seen)) for t in texts), np.int64,
                            len(texts))
        return codes, [json.loads(t) if t else {} for t in seen]

    pmf_codes, parsed = distinct(pmfs)
    for pmf in parsed:
        for a in pmf:
            if a not in index:
                index[a] = len(arms)
                arms.append(a)
    table = np.zeros((len(parsed), len(arms)))
    for j, pmf in enumerate(parsed):
        table[j, [index[a] for a in pmf]] = list(pmf.values())
    ctx_codes, ctx_parsed = distinct(contexts)
    first = ctx_parsed[ctx_codes[0]] if isinstance(ctx_parsed[ctx_codes[0]], dict) else {}
    names = sorted(k for k, v in first.items() if isinstance(v, int | float | bool))
    ctx_table = np.array([[float((c if isinstance(c, dict) else {}).get(k, 0) or 0)
                           for k in names] for c in ctx_parsed],
                         dtype=np.float64).reshape(len(ctx_parsed), len(names))
    # context vectors, grouped by (feature_version, dimension): rows, (rows, d), logged names
    vectors: dict[tuple[str | None, int], list[int]] = {}
    for j, c in enumerate(ctx_parsed):
        f = c.get("features") if isinstance(c, dict) else None
        if isinstance(f, list) and f:
            vectors.setdefault((c.get("feature_version"), len(f)), []).append(j)
    features: dict[tuple[str | None, int], tuple[np.ndarray, np.ndarray, list[str] | None]] = {}
    for key, distinct_rows in vectors.items():
        table_ = np.array([ctx_parsed[j]["features"] for j in distinct_rows], dtype=np.float64)
        lookup = np.full(len(ctx_parsed), -1, dtype=np.int64)
        lookup[distinct_rows] = np.arange(len(distinct_rows))
        at = lookup[ctx_codes]
        ctx_rows = np.flatnonzero(at >= 0)
        logged = ctx_parsed[distinct_rows[0]].get("feature_names")
        features[key] = (ctx_rows, table_[at[ctx_rows]],
                         list(logged) if isinstance(logged, list) else None)
    return {
        "event_ids": np.array(event_ids, dtype=object),
        "created_at": np.array(created, dtype=np.float64),
        "user_ids": np.array(users, dtype=np.int64),
        "actions": np.array([index.get(a, -1) for a in arm], dtype=np.int64),
        "propensities": np.array(prop, dtype=np.float64),
        "policy_versions": np.array(versions, dtype=np.int64),
        "reward_deadline": np.array(deadlines, dtype=np.float64),
        "settled_at": np.array(settled, dtype=np.float64),  # None -> NaN
        "reward": np.array(reward, dtype=np.float64),  # None -> NaN
        "decided_at": np.array(decided_at, dtype=np.float64),
        "context": ctx_table[ctx_codes],
        "context_names": np.array(names, dtype=object),
        "pmf": table[pmf_codes],
        "features": features,
    }


# ---------------------------------------------------------------------------- candidates
def ts_name(alpha: float, beta: float) -> str:
    """The candidate name of Thompson Sampling with a Beta(``alpha``, ``beta``) prior."""
    return f"thompson(a={alpha:g},b={beta:g})"


@dataclass(frozen=True)
class LinearCandidate:
    """A contextual candidate: LinTS or LinUCB with given hyper-parameters.

    Attributes
    ----------
    policy : {"LinTS", "LinUCB"}
    params : tuple of (str, float)
        Keyword hyper-parameters of the class (``scale`` or ``alpha``, ``ridge``).
    """

    policy: str
    params: tuple[tuple[str, float], ...] = ()

    def __post_init__(self) -> None:
        if self.policy not in ("LinTS", "LinUCB"):
            raise ValueError(f"LinearCandidate.policy must be 'LinTS' or 'LinUCB', got "
                             f"{self.policy!r}")
        try:  # said at once, before the log is read (found in review: Python's words, late)
            registered_policies()[self.policy].check_param_names(
                dict(self.params), set_by_caller={"n_features": "the log (its contexts)",
                                                  "random_state": "the evaluation",
                                                  # (taken, and changed nothing: attack)
                                                  "batch_size": "the evaluation (it replays "
                                                                "in refresh blocks)"})
            # The values too, before the log is read: a class's own checks, on one arm.
            values: dict[str, Any] = {"n_features": 1, **dict(self.params)}
            registered_policies()[self.policy](["arm"], **values)
        except (TypeError, ValueError) as exc:
            raise ValueError(f"linear candidate {self.name}: {exc}") from None

    @property
    def name(self) -> str:
        """Display name, e.g. ``"LinTS(scale=0.5,ridge=1)"``."""
        return f"{self.policy}({','.join(f'{k}={v:g}' for k, v in self.params)})"

    @property
    def ridge(self) -> float:
        """The ``ridge`` hyper-parameter (default 1.0)."""
        return float(dict(self.params).get("ridge", 1.0))

    @classmethod
    def parse(cls, text: str) -> LinearCandidate:
        """``"LinTS:scale=0.5,ridge=1"`` -> LinearCandidate (the CLI's ``--linear``).

        Raises
        ------
        ValueError
            Not ``NAME[:KEY=VALUE,...]`` with a known NAME and numeric values.
        """
        name, _, rest = text.partition(":")
        params: dict[str, float] = {}
        for item in filter(None, rest.split(",")):
            key, eq, value = item.partition("=")
            key = key.strip()
            if not eq:
                raise ValueError(f"linear candidate {text!r}: parameters are KEY=NUMBER, got "
                                 f"{item!r}")
            try:
                # An integer stays one: batch_size and propensity_grid are refused as floats
                # ("got 512.0"), while the message listed them as allowed (found by attack).
                # The numbers' one rule and its words (bandits.errors: Python reads "1_0" as
                # 10, found by attack; " 1" was taken here alone, found in review).
                number = (integer_text(value) if value.lstrip("-").isdigit()
                          else number_text(value))
            except ValueError as exc:
                raise ValueError(f"linear candidate {text!r}: {key} {exc}") from None
            if key in params:  # one value was dropped without a word (found by attack)
                raise ValueError(f"linear candidate {text!r}: {key} is given twice")
            params[key] = number
        return cls(name.strip(), tuple(params.items()))


#: Contextual candidates evaluated by default (LinTS with the service's default and a narrower
#: and a stronger-prior posterior; LinUCB with and without its bonus).
DEFAULT_LINEAR: tuple[LinearCandidate, ...] = (
    LinearCandidate("LinTS", (("scale", 1.0), ("ridge", 1.0))),
    LinearCandidate("LinTS", (("scale", 0.25), ("ridge", 1.0))),
    LinearCandidate("LinTS", (("scale", 0.5), ("ridge", 10.0))),
    LinearCandidate("LinUCB", (("alpha", 0.5), ("ridge", 1.0))),
    LinearCandidate("LinUCB", (("alpha", 0.0), ("ridge", 1.0))),
)
#: Feature-name prefixes whose one-hot columns define the user segments (gender x age bucket).
DEFAULT_SEGMENTS: tuple[str, ...] = ("gender=", "age=")
SEGMENT_CANDIDATE = "best_arm_per_segment"
#: Decisions per call of a linear policy's batched probabilities (bounds the (rows, K, grid)
#: quadrature arrays).
_LINEAR_ROWS = 2048


def linear_probabilities(policy: BatchedPolicy, stats: dict[str, np.ndarray],
                         contexts: np.ndarray) -> np.ndarray:
    """One linear policy state's propensities at many contexts, shape (n, K).

    ``stats`` is one run's statistics (``A_inv`` (K, d, d), ``b`` (K, d), ``pulls`` (K,));
    they are broadcast (read-only views, no copy) over the distinct rows of ``contexts``
    (n, d), so one call of the policy's :meth:`~bandits.base.BatchedPolicy.probabilities_batch`
    covers a whole refresh block (a user seen twice in a block costs one row: LinTS's
    quadrature, not Python, is the cost of a row). The rows are normalised like the service's
    (clipped at 0, summing to one).
    """
    distinct, inverse = np.unique(contexts, axis=0, return_inverse=True)
    out = np.empty((distinct.shape[0], policy.n_arms))
    for start in range(0, distinct.shape[0], _LINEAR_ROWS):
        x = distinct[start:start + _LINEAR_ROWS]
        rows = x.shape[0]
        # An empty buffer of the policy's own layout (probabilities_batch checks it), as
        # zero-strided views: nothing allocated for it.
        buffer = (rows, policy.batch_size)
        state = BatchState(
            stats={k: np.broadcast_to(v, (rows, *v.shape)) for k, v in stats.items()},
            pending_arms=np.broadcast_to(np.zeros((), dtype=np.int64), buffer),
            pending_rewards=np.broadcast_to(np.zeros(()), buffer),
            pending_contexts=(np.broadcast_to(np.zeros(()), (*buffer, x.shape[1]))
                              if policy.contextual else None))
        p = np.clip(np.asarray(policy.probabilities_batch(state, x)), 0.0, None)
        out[start:start + rows] = p / p.sum(axis=1, keepdims=True)
    return out[inverse.reshape(-1)]


def _blocks(n: int, ts_states: int) -> np.ndarray:
    """First decision of each refresh block: every ``ceil(n / ts_states)`` decisions."""
    return np.arange(0, n, math.ceil(n / ts_states))


def _linear_replay(log: DecisionLog, candidates: Sequence[LinearCandidate], ts_states: int,
                   propensity_grid: int) -> dict[str, np.ndarray]:
    """Propensities of the linear candidates, replayed over the log in refresh blocks.

    At the start of each block the ridge statistics per arm are those of every observation
    decided before the block's first decision, ``A_k = ridge I + X_k^T X_k`` and
    ``b_k = X_k^T r_k`` (accumulated block by block with matrix products and inverted once per
    block and arm, the same estimate as the service's Sherman-Morrison fold); the candidate's
    propensities for every decision of the block come from one batched call at their contexts.
    """
    x_all, obs_x, usable = log.features, log.obs_features, log.obs_has_features
    if x_all is None or obs_x is None or usable is None:
        raise ValueError(f"{log.source}: the log has no context vectors")
    n, K, d = log.n, len(log.arms), x_all.shape[1]
    policies: dict[str, BatchedPolicy] = {}
    for cand in candidates:  # validate every hyper-parameter before any work
        params: dict[str, Any] = dict(cand.params)
        if cand.policy == "LinTS":
            params.setdefault("propensity_grid", propensity_grid)
        try:
            policies[cand.name] = registered_policies()[cand.policy](  # type: ignore[call-arg]  # a contextual class: it takes n_features
                log.arms, n_features=d, **params, random_state=0)
        except TypeError as exc:
            raise ValueError(f"linear candidate {cand.name}: {exc}") from None
    starts = _blocks(n, ts_states)
    ends = np.append(starts[1:], n)
    before = np.searchsorted(log.obs_times, log.created_at[starts], side="left")
    xtx = np.zeros((K, d, d))
    xtr = np.zeros((K, d))
    pulls = np.zeros(K)
    ridges = sorted({c.ridge for c in candidates})
    stats_by_block: list[dict[float, dict[str, np.ndarray]]] = []
    done = 0
    for upto in before.tolist():
        new = np.arange(done, upto)[usable[done:upto]]
        for k in np.unique(log.obs_actions[new]).tolist():  # BLAS products, one per arm
            mine = new[log.obs_actions[new] == k]
            x = obs_x[mine]
            xtx[k] += x.T @ x
            xtr[k] += log.obs_rewards[mine] @ x
            pulls[k] += mine.size
        done = upto
        stats_by_block.append({
            ridge: {"A_inv": np.linalg.inv(ridge * np.eye(d) + xtx), "b": xtr.copy(),
                    "pulls": pulls.copy()} for ridge in ridges})
    out: dict[str, np.ndarray] = {}
    for cand in candidates:
        probs = np.empty((n, K))
        for block, (a, b) in enumerate(zip(starts.tolist(), ends.tolist(), strict=True)):
            probs[a:b] = linear_probabilities(policies[cand.name],
                                              stats_by_block[block][cand.ridge], x_all[a:b])
        out[cand.name] = probs
    return out


def segments(log: DecisionLog, prefixes: Sequence[str] = DEFAULT_SEGMENTS
             ) -> tuple[np.ndarray, np.ndarray, str] | None:
    """User segment of every decision and observation, from the logged context vectors.

    With feature names, the segment is the pattern of the columns whose names start with one
    of ``prefixes`` (default gender x age bucket); without names (the service logs only the
    vector and its version), the pattern of every 0/1-valued column that varies. None when
    the log has no context vectors, or no such column.

    Returns
    -------
    codes : ndarray of int64, shape (n,)
        Segment of each decision (-1 without a context vector).
    obs_codes : ndarray of int64, shape (m,)
        Segment of each observation (-1 without a context vector).
    description : str
        Which columns define the segments.
    """
    x, obs_x, has, obs_has = (log.features, log.obs_features, log.has_features,
                              log.obs_has_features)
    if x is None or obs_x is None or has is None or obs_has is None:
        return None
    both = np.concatenate([x[has], obs_x[obs_has]])
    if both.shape[0] == 0:
        return None
    if log.feature_names is not None:
        cols = [j for j, name in enumerate(log.feature_names) if name.startswith(tuple(prefixes))]
        how = f"columns starting with {', '.join(map(repr, prefixes))}"
    else:
        binary = ((both == 0) | (both == 1)).all(axis=0) & (both.min(axis=0) < both.max(axis=0))
        cols = np.flatnonzero(binary).tolist()
        how = "every 0/1 column of the context vector (feature names not logged)"
    if not cols:
        return None
    _, inverse = np.unique(both[:, cols], axis=0, return_inverse=True)
    inverse = inverse.reshape(-1)
    codes = np.full(log.n, -1, dtype=np.int64)
    obs_codes = np.full(log.obs_actions.size, -1, dtype=np.int64)
    k = int(has.sum())
    codes[has] = inverse[:k]
    obs_codes[obs_has] = inverse[k:]
    return codes, obs_codes, f"{int(inverse.max()) + 1} segments: {how}"


def segment_counts_before(log: DecisionLog, codes: np.ndarray, obs_codes: np.ndarray
                          ) -> tuple[np.ndarray, np.ndarray]:
    """Rewards and plays per arm of the user's segment observed before each decision.

    Returns
    -------
    wins, plays : ndarray of float64, shape (n, K)
        Zero for decisions without a segment.
    """
    K = len(log.arms)
    wins = np.zeros((log.n, K))
    plays = np.zeros((log.n, K))
    for seg in np.unique(codes[codes >= 0]).tolist():  # one pass per segment, not per decision
        mine = np.flatnonzero(obs_codes == seg)
        onehot = np.zeros((mine.size + 1, K))
        onehot[np.arange(1, mine.size + 1), log.obs_actions[mine]] = 1.0
        rewarded = onehot.copy()
        rewarded[1:] *= log.obs_rewards[mine, None]
        rows = np.flatnonzero(codes == seg)
        at = np.searchsorted(log.obs_times[mine], log.created_at[rows], side="left")
        plays[rows] = np.cumsum(onehot, axis=0)[at]
        wins[rows] = np.cumsum(rewarded, axis=0)[at]
    return wins, plays


def candidate_policies(log: DecisionLog, *,
                       ts_priors: Iterable[tuple[float, float]] = DEFAULT_TS_PRIORS,
                       ts_states: int = 100, propensity_grid: int = 256,
                       linear: Sequence[LinearCandidate] = DEFAULT_LINEAR,
                       segment_prefixes: Sequence[str] = DEFAULT_SEGMENTS
                       ) -> dict[str, np.ndarray]:
    """Action probabilities of every candidate at every logged decision (see the module doc).

    Contextual candidates (``linear`` and ``best_arm_per_segment``) are added only when every
    decision logged a context vector (:meth:`DecisionLog.contextual_note` says why not).

    Parameters
    ----------
    log : DecisionLog
    ts_priors : iterable of (alpha, beta), default ((1, 1), (1, 19), (20, 20))
        Beta priors of the Thompson Sampling candidates.
    ts_states : int, default 100
        Most posterior refreshes of a Thompson or linear candidate over the log.
    propensity_grid : int, default 256
        Quadrature intervals of the Thompson and LinTS propensities (error <= pi / (4 grid)).
    linear : sequence of LinearCandidate, default DEFAULT_LINEAR
        LinTS / LinUCB candidates.
    segment_prefixes : sequence of str, default ("gender=", "age=")
        Feature-name prefixes of the segment columns (see :func:`segments`).

    Returns
    -------
    dict of str to ndarray of float64, shape (n, K)
        ``always:<arm>`` ..., ``uniform``, ``greedy``, ``thompson(a=..,b=..)`` ...,
        ``LinTS(..)`` / ``LinUCB(..)`` ..., ``best_arm_per_segment``, ``logging``.

    Raises
    ------
    ValueError
        For a prior that is not positive, ``ts_states`` < 1, or a linear candidate's invalid
        hyper-parameter.
    """
    if not isinstance(ts_states, int) or ts_states < 1:
        raise ValueError(f"ts_states must be an int >= 1, got {ts_states!r}")
    n, K = log.n, len(log.arms)
    out: dict[str, np.ndarray] = {}
    # constant policies as read-only broadcast views: no (n, K) memory each
    for k, arm in enumerate(log.arms):
        out[f"always:{arm}"] = np.broadcast_to(np.eye(K)[k], (n, K))
    out["uniform"] = np.broadcast_to(np.full(K, 1.0 / K), (n, K))
    s, f = log.counts_before()
    out["greedy"] = argmax_set_probabilities((s + 1.0) / (s + f + 2.0))
    starts = _blocks(n, ts_states)
    states, inverse = np.unique(np.concatenate([s[starts], f[starts]], axis=1), axis=0,
                                return_inverse=True)
    rows = np.repeat(inverse.reshape(-1), np.diff(np.append(starts, n)))
    for alpha, beta in ts_priors:  # each checked by ThompsonSampling itself
        policy = ThompsonSampling(log.arms, prior_alpha=alpha, prior_beta=beta,
                                  propensity_grid=propensity_grid, random_state=0)
        state = policy.init_batch(len(states))
        state.stats["successes"][:] = states[:, :K]
        state.stats["failures"][:] = states[:, K:]
        probs = np.asarray(policy.probabilities_batch(state))
        out[ts_name(alpha, beta)] = probs[rows]
    if log.contextual_note() is None:
        out.update(_linear_replay(log, linear, ts_states, propensity_grid))
        seg = segments(log, segment_prefixes)
        if seg is not None:
            wins, plays = segment_counts_before(log, seg[0], seg[1])
            out[SEGMENT_CANDIDATE] = argmax_set_probabilities((wins + 1.0) / (plays + 2.0))
    pmf = log.pmf / log.pmf.sum(axis=1, keepdims=True)
    out["logging"] = pmf
    return out


def model_segments(log: DecisionLog, prefixes: Sequence[str] = DEFAULT_SEGMENTS
                   ) -> tuple[np.ndarray, np.ndarray, str] | None:
    """The user segments of ``best_arm_per_segment`` and of the DR reward model:
    :func:`segments` when every decision logged a context vector, else None.

    The one rule of ``ope`` and ``ope --shadow`` (the shadow's comparison fitted its reward
    model without segments: the logging policy's DR was 0.5487 in one and 0.5499 in the other
    on the same decisions, found by attack).
    """
    return None if log.contextual_note() else segments(log, prefixes)


def reward_model(log: DecisionLog, codes: np.ndarray | None = None) -> np.ndarray:
    """Predicted reward of every arm at every decision, from earlier decisions only; (n, K).

    Per arm, the mean reward of the earlier logged decisions that played it (Beta(1, 1)
    smoothed). With segment ``codes`` (n,) (see :func:`segments`), the mean of the earlier
    decisions of the same segment, shrunk towards that arm-wide mean with the weight of two
    decisions (decisions without a segment, code -1, keep the arm-wide mean).
    """
    n, K = log.n, len(log.arms)
    played = np.zeros((n, K))
    played[np.arange(n), log.actions] = 1.0
    wins = played * log.rewards[:, None]
    pulls_before = np.cumsum(played, axis=0) - played
    wins_before = np.cumsum(wins, axis=0) - wins
    q = (wins_before + 1.0) / (pulls_before + 2.0)
    if codes is None:
        return q
    for seg in np.unique(codes[codes >= 0]).tolist():  # one pass per segment
        rows = np.flatnonzero(codes == seg)
        p, w = played[rows], wins[rows]
        q[rows] = ((np.cumsum(w, axis=0) - w) + 2.0 * q[rows]) / ((np.cumsum(p, axis=0) - p)
                                                                   + 2.0)
    return q


# ---------------------------------------------------------------------------- evaluation
@dataclass
class OPEResult:
    """What ``recbandits ope`` reports.

    Attributes
    ----------
    table : pandas.DataFrame
        One row per candidate: ``policy``, estimates and intervals per estimator, ``ess``,
        ``max_weight``, ``n_tiny_propensity``, ``unsupported_mass``, ``flags``.
    reports : dict of str to PolicyReport
    messages : list of str
        Warnings (tiny propensities, low ESS, support, left-out decisions).
    summary : dict
        Decisions evaluated and left out, observed mean reward, arms, settings.
    notes : list of str
        What was evaluated how (contextual candidates skipped and why, the segments used).
    """

    table: pd.DataFrame
    reports: dict[str, PolicyReport]
    messages: list[str]
    summary: dict[str, Any]
    notes: list[str] = field(default_factory=list)


def evaluate_log(log: DecisionLog, *, n_bootstrap: int = DEFAULT_N_BOOTSTRAP, seed: int = 0,
                 confidence: float = DEFAULT_CONFIDENCE,
                 ts_priors: Iterable[tuple[float, float]] = DEFAULT_TS_PRIORS,
                 ts_states: int = 100, propensity_grid: int = 256,
                 linear: Sequence[LinearCandidate] = DEFAULT_LINEAR,
                 segment_prefixes: Sequence[str] = DEFAULT_SEGMENTS,
                 min_propensity: float = DEFAULT_MIN_PROPENSITY,
                 min_ess: float = DEFAULT_MIN_ESS) -> OPEResult:
    """Estimate every candidate's value on ``log``; see :func:`candidate_policies`.

    Parameters
    ----------
    log : DecisionLog
    n_bootstrap : int, default 1000
        Bootstrap resamples (shared by every candidate and estimator); 0 skips intervals.
    seed : int, default 0
        Seeds the bootstrap.
    confidence : float, default 0.95
    ts_priors, ts_states, propensity_grid, linear, segment_prefixes
        As :func:`candidate_policies`.
    min_propensity, min_ess : float
        Thresholds of the warnings (:func:`bandits.ope.evaluate_policies`).
    """
    targets = candidate_policies(log, ts_priors=ts_priors, ts_states=ts_states,
                                 propensity_grid=propensity_grid, linear=linear,
                                 segment_prefixes=segment_prefixes)
    notes: list[str] = []
    skipped = log.contextual_note()
    seg = model_segments(log, segment_prefixes)
    if skipped:
        notes.append(skipped)
    elif seg is None:
        notes.append(f"no segment column in the context vectors: {SEGMENT_CANDIDATE} skipped "
                     "and the DR reward model is per arm only")
    else:
        notes.append(f"{SEGMENT_CANDIDATE} and the DR reward model: {seg[2]}")
    reports = evaluate_policies(log.rewards, log.actions, log.propensities, targets,
                                reward_model(log, None if seg is None else seg[0]),
                                logging_pmf=log.pmf,
                                n_bootstrap=n_bootstrap, confidence=confidence,
                                min_propensity=min_propensity, min_ess=min_ess,
                                random_state=seed)
    table = pd.DataFrame([r.to_row() for r in reports.values()])
    messages = []
    n_tiny = int((log.propensities < min_propensity).sum())
    if n_tiny:
        messages.append(f"{n_tiny} of {log.n} decisions were logged with propensity < "
                        f"{min_propensity:g} (smallest {log.propensities.min():.3g}); "
                        "candidates that favour those arms get huge weights")
    for report in reports.values():
        messages.extend(report.messages)
    if log.excluded.get("open"):
        messages.append(f"{log.excluded['open']} decision(s) left out: reward window still "
                        "open (use --include-open to count them)")
    if log.counted_open:  # said (it was silent: found by attack)
        messages.append(f"{log.counted_open} decision(s) counted with their reward window still "
                        "open, with the feedback they have so far (those without any at the "
                        "default reward: an underestimate while users may still react)")
    if log.excluded.get("unknown_arm"):
        messages.append(f"{log.excluded['unknown_arm']} decision(s) left out: arm missing "
                        "from their own pmf")
    summary = {
        "source": log.source, "decisions": log.n, "excluded": dict(log.excluded),
        "counted_open": log.counted_open,
        "arms": list(log.arms), "observed_mean_reward": float(log.rewards.mean()),
        "observed_by_arm": {a: (float(log.rewards[log.actions == k].mean())
                                if (log.actions == k).any() else None)
                            for k, a in enumerate(log.arms)},
        "plays_by_arm": {a: int((log.actions == k).sum()) for k, a in enumerate(log.arms)},
        "policy_observations": int(log.obs_actions.size),
        # No level without intervals (review: 0.95 for a run with none).
        "n_bootstrap": n_bootstrap, "seed": seed,
        "confidence": confidence if n_bootstrap else None,
        "ts_priors": [list(p) for p in ts_priors], "ts_states": ts_states,
        "feature_version": log.feature_version,
        "linear": [c.name for c in linear] if not skipped else [],
        "segments": None if seg is None else seg[2],
        "min_propensity": min_propensity, "min_ess": min_ess,
    }
    return OPEResult(table, reports, messages, summary, notes)


def format_table(table: pd.DataFrame, confidence: float | None = DEFAULT_CONFIDENCE) -> str:
    """The OPE table as fixed-width text: value [low, high] per estimator (the value alone
    when the table has no intervals: NaN bounds, :func:`bandits.ope.percentile_interval`),
    ESS, flags; ``confidence`` names the intervals' level in the header, None (no bootstrap
    resamples) adds the note every command gives then (:data:`bandits.ope.NO_RESAMPLES`).
    """
    estimators = [e for e in ("ips", "snips", "dr") if e in table]
    intervals = bool(estimators) and bool(table[[e + "_low" for e in estimators]].notna()
                                          .any(axis=None))
    width = max(8, int(table["policy"].str.len().max()))
    label = f" [{confidence:.0%} CI]" if intervals else ""
    head = f"{'policy':<{width}}" + "".join(f"{e.upper() + label:>26}" for e in estimators)
    head += f"{'ESS':>10}  flags"
    lines = [head, "-" * len(head)]
    for _, row in table.iterrows():
        # No estimate (SNIPS with no weight on a logged action: 0 / 0): "–", not nan.
        cells = "".join(("–" if pd.isna(row[e]) else
                         f"{row[e]:>8.4f} [{row[e + '_low']:.4f}, {row[e + '_high']:.4f}]"
                         if intervals else f"{row[e]:.4f}").rjust(26) for e in estimators)
        # A row without an ESS (a shadow comparison's difference) shows "-", not nan.
        ess = "-" if pd.isna(row["ess"]) else f"{row['ess']:.1f}"
        lines.append(f"{row['policy']:<{width}}{cells}{ess:>10}  {row['flags']}")
    if confidence is None:  # said as credit, holdout and replay say it (found in review)
        lines.append(f"note: {NO_RESAMPLES}")
    return "\n".join(lines)


# ---------------------------------------------------------------------------- shadow mode
#: The name of the live policy's row in a shadow comparison.
LIVE_ROW = "live (on-policy)"


@dataclass
class ShadowComparison:
    """One shadow policy against the live policy on the decisions that logged its record.

    Attributes
    ----------
    policy : dict
        The shadow policy's ``{"name", "params"}`` as logged (plus its exploration floor).
    n : int
        Decisions compared (closed, single-arm, carrying this shadow's record).
    reports : dict of str to PolicyReport
        :data:`LIVE_ROW` (the logged pmf as target: its IPS and SNIPS are the observed mean
        reward) and ``shadow NAME`` (the logged shadow pmf as target), one bootstrap for both.
    difference : dict of str to (value, low, high)
        Per estimator, shadow minus live with its paired percentile interval (the same
        resamples for both).
    agreement : float
        Share of the decisions whose logged shadow choice is the arm served.
    min_logged_propensity : float
        The least probability the live policy logged for any arm on these decisions (with an
        exploration floor, at least the floor: every arm the shadow may choose has support; a
        holdout keeps it, the settings refusing a floor with a one-arm holdout baseline).
    confidence : float or None
        The intervals' level; None: no bootstrap resamples, no intervals.
    holdout : dict of str to int
        The live holdouts these decisions were served under (``share S, baseline B``), each
        with its decisions; empty: none. The shadow row is the shadow under the same holdout
        (:func:`serving.holdout.under_holdout`), as it would be served once promoted.
    """

    policy: dict[str, Any]
    n: int
    reports: dict[str, PolicyReport]
    difference: dict[str, tuple[float, float, float]]
    agreement: float
    min_logged_propensity: float
    confidence: float | None = DEFAULT_CONFIDENCE
    holdout: dict[str, int] = field(default_factory=dict)

    def table(self) -> pd.DataFrame:
        """The two reports as rows of :func:`format_table`'s layout, then the difference
        (intervals NaN without bootstrap resamples).
        """
        rows = [r.to_row() for r in self.reports.values()]
        diff: dict[str, Any] = {"policy": "shadow - live", "ess": float("nan"), "flags": ""}
        for e, (value, low, high) in self.difference.items():
            diff.update({e: value, f"{e}_low": low, f"{e}_high": high})
        return pd.DataFrame([*rows, diff])


def subset(log: DecisionLog, mask: np.ndarray) -> DecisionLog:
    """The decisions of ``log`` where ``mask`` (bool, shape ``(n,)``) holds; what the policy
    had observed (``obs_*``) stays whole.
    """
    per_decision = ("event_ids", "created_at", "user_ids", "actions", "propensities", "pmf",
                    "rewards", "policy_versions", "context", "features", "has_features")
    changes: dict[str, Any] = {k: (None if getattr(log, k) is None else getattr(log, k)[mask])
                               for k in per_decision}
    return replace(log, **changes)


def shadow_pmf(records: Sequence[dict[str, Any]], arms: Sequence[str]) -> np.ndarray:
    """The logged shadow probabilities as an ``(n, K)`` array in ``arms`` order.

    Raises
    ------
    ValueError
        A record gives probability to an arm not in ``arms``, or its row does not sum to one.
    """
    index = {a: k for k, a in enumerate(arms)}
    out = np.zeros((len(records), len(arms)))
    for i, rec in enumerate(records):
        for arm, p in rec["pmf"].items():
            if arm not in index:
                raise ValueError(f"a shadow record gives probability {p} to arm {arm!r}, which "
                                 f"no evaluated decision played; arms: {list(arms)}")
            out[i, index[arm]] = p
    sums = out.sum(axis=1)
    if not np.allclose(sums, 1.0, atol=1e-6):
        bad = int(np.argmax(np.abs(sums - 1.0)))
        raise ValueError(f"the shadow pmf of decision {bad} sums to {sums[bad]!r}, not 1")
    return out


def evaluate_shadow(log: DecisionLog, records: dict[str, dict[str, Any]], *,
                    n_bootstrap: int = DEFAULT_N_BOOTSTRAP, seed: int = 0,
                    confidence: float = DEFAULT_CONFIDENCE,
                    min_propensity: float = DEFAULT_MIN_PROPENSITY,
                    min_ess: float = DEFAULT_MIN_ESS,
                    segment_prefixes: Sequence[str] = DEFAULT_SEGMENTS
                    ) -> list[ShadowComparison]:
    """``recbandits ope --shadow``: every shadow policy of the log against the live policy on
    exactly the decisions that carry its record (:mod:`serving.shadow`).

    The behaviour policy is the live one, its logged propensities (floor included); the target
    is the shadow's logged pmf at each decision, under the decision's holdout when it had one
    (:func:`serving.holdout.under_holdout`: the held-out share served by the baseline, as the
    live policy's logged pmf is, and as the shadow would be served once promoted; compared
    with the live mixture, the shadow's own pmf showed a false gain: +0.052 [0.040, 0.064]
    where the two policies differed by -0.0005, found by attack). IPS, SNIPS and DR (the
    reward model of :func:`reward_model` with the segments of :func:`model_segments`, fitted
    on the whole log's earlier decisions as ``ope`` fits it: one decision has one predicted
    reward in both) by :func:`bandits.ope.evaluate_policies`, the
    live policy's on-policy value beside it (its own pmf as target: the mean reward), and the
    paired difference from the same bootstrap resamples.

    Parameters
    ----------
    log : DecisionLog
    records : dict of event_id to dict
        The decisions' shadow records (:meth:`serving.store.Store.shadow_rows`).
    n_bootstrap, seed, confidence, min_propensity, min_ess, segment_prefixes
        As :func:`evaluate_log`.

    Returns
    -------
    list of ShadowComparison
        One per distinct shadow policy (name and parameters), most decisions first.

    Raises
    ------
    EmptyLogError
        No evaluable decision carries a shadow record.
    ValueError
        A shadow pmf that is not a distribution over the log's arms.
    """
    keys = np.array([json.dumps(records[e]["policy"], sort_keys=True) if e in records else ""
                     for e in log.event_ids.tolist()], dtype=object)
    groups = [k for k in pd.Series(keys[keys != ""]).value_counts().index]
    if not groups:
        raise EmptyLogError(f"{log.source}: none of the {log.n} evaluated decisions carries a "
                            "shadow record (serve with --shadow-policy)")
    seg = model_segments(log, segment_prefixes)
    predicted = reward_model(log, None if seg is None else seg[0])
    out = []
    for key in groups:
        mask = keys == key
        sub = subset(log, mask)
        recs = [records[e] for e in sub.event_ids.tolist()]
        holdouts = [r.get("holdout") for r in recs]
        target = under_holdout(shadow_pmf(recs, sub.arms), sub.pmf, sub.arms, holdouts)
        q = predicted[mask]
        name = json.loads(key)
        targets = {LIVE_ROW: sub.pmf, f"shadow {name['name']}": target}
        reports = evaluate_policies(sub.rewards, sub.actions, sub.propensities, targets, q,
                                    logging_pmf=sub.pmf, n_bootstrap=n_bootstrap,
                                    confidence=confidence, min_propensity=min_propensity,
                                    min_ess=min_ess, random_state=seed)
        # The same terms and seed as evaluate_policies: the same resamples, so paired.
        terms = np.hstack([estimator_terms(sub.rewards, sub.actions, sub.propensities, t, q)
                           for t in targets.values()])
        value = estimates_from_sums(terms.sum(axis=0).reshape(2, 3), sub.n)
        diff = value[1] - value[0]
        boots = estimates_from_sums(bootstrap_sums(terms, n_bootstrap, seed)
                                    .reshape(n_bootstrap, 2, 3), sub.n)
        low, high = percentile_interval(boots[:, 1] - boots[:, 0], confidence, sub.n)
        chosen = np.array([sub.arms.index(r["arm"]) if r["arm"] in sub.arms else -1
                           for r in recs])
        out.append(ShadowComparison(
            policy=name, n=sub.n, reports=reports,
            difference={e: (float(diff[c]), float(low[c]), float(high[c]))
                        for c, e in enumerate(ESTIMATORS)},
            agreement=float((chosen == sub.actions).mean()),
            min_logged_propensity=float(sub.pmf.min()),
            confidence=confidence if n_bootstrap else None,
            holdout=dict(Counter(f"share {h['share']:g}, baseline {h['baseline']}"
                                 for h in holdouts if h))))
    return out


def format_shadow(comparisons: Sequence[ShadowComparison]) -> str:
    """What ``recbandits ope --shadow`` prints: per shadow policy, its decisions and the table
    (live, shadow, shadow - live), ESS in the table.
    """
    blocks = []
    for c in comparisons:
        holdout = "" if not c.holdout else (
            "\nboth rows under the live holdout (" + "; ".join(
                f"{h}: {n} decisions" for h, n in c.holdout.items()) + "): the shadow's "
            "probabilities mixed with the baseline as the live policy's are, as it would be "
            "served once promoted (the difference is the two policies' own times 1 - share)")
        blocks.append(
            f"shadow {said_policy(c.policy)}: {c.n} decisions carry its record; it "
            f"chose the served arm in {c.agreement:.1%} of them; least logged live propensity "
            f"{c.min_logged_propensity:.4f}{holdout}\n"
            + format_table(c.table(), c.confidence))
    return "\n\n".join(blocks)


# ---------------------------------------------------------------------------- export
def feature_columns(log: DecisionLog) -> list[str]:
    """Names of the logged context vector's columns (``log.features``): its feature names,
    else ``f0``, ``f1``, ...; empty when no decision logged one.
    """
    if log.features is None:
        return []
    return list(log.feature_names or (f"f{j}" for j in range(log.features.shape[1])))


def log_frame(log: DecisionLog) -> pd.DataFrame:
    """The evaluable log as a flat table (one row per decision): pmf columns, the context's
    numeric fields (``context_*``) and the context vector the policy saw (``feature_*``, with
    ``has_features`` when some decisions logged none: their row is zeros).

    The context vector was left out (found by attack): a LinTS log's 98 features, which
    ``ope`` itself evaluates the contextual candidates on, were in neither export.
    """
    frame = pd.DataFrame({
        "event_id": log.event_ids, "created_at": log.created_at, "user_id": log.user_ids,
        "policy_version": log.policy_versions, "arm": np.asarray(log.arms)[log.actions],
        "action": log.actions, "propensity": log.propensities, "reward": log.rewards,
    })
    for k, arm in enumerate(log.arms):
        frame[f"pmf_{arm}"] = log.pmf[:, k]
    for j, name in enumerate(log.context_names):
        frame[f"context_{name}"] = log.context[:, j]
    if log.features is not None:
        features = pd.DataFrame(log.features, columns=[f"feature_{name}" for name in
                                                       feature_columns(log)])
        frame = pd.concat([frame, features], axis=1)
        if log.has_features is not None and not log.has_features.all():
            frame["has_features"] = log.has_features
    return frame


def export_csv(log: DecisionLog, path: str | Path) -> Path:
    """Write :func:`log_frame` as CSV; returns the path."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    frame = log_frame(log)
    return write_whole(path, lambda p: frame.to_csv(p, index=False))


def obp_feedback(log: DecisionLog) -> dict[str, Any]:
    """The log in Open Bandit Pipeline's ``bandit_feedback`` layout.

    Keys: ``n_rounds``, ``n_actions`` (ints), ``action`` (n,), ``reward`` (n,), ``pscore`` (n,),
    ``position`` (n,) zeros (one arm per decision), ``context`` (n, d), ``action_context``
    (K, K) one-hot, ``pi_b`` (n, K, 1) the logging policy's pmf, ``action_names`` (K,), and
    ``context_names`` (d,). ``context`` is the context vector the logging policy saw
    (``log.features``), else, in a log without one, the context's numeric fields (the slate
    size ``k``): it held only ``k``, so OBP's contextual estimators had no user features
    (found by attack). When some decisions logged none (another feature set), their rows are
    zeros and ``has_features`` (n,) marks the others, as the CSV's column does.
    """
    K = len(log.arms)
    if log.features is not None:
        context, names = log.features, feature_columns(log)
    else:
        context, names = log.context, list(log.context_names)
    return {
        "n_rounds": log.n, "n_actions": K, "action": log.actions.copy(),
        "reward": log.rewards.copy(), "pscore": log.propensities.copy(),
        "position": np.zeros(log.n, dtype=np.int64), "context": context.copy(),
        "action_context": np.eye(K), "pi_b": log.pmf[:, :, None].copy(),
        "action_names": np.array(log.arms, dtype=str),
        "context_names": np.array(names, dtype=str),
        **({"has_features": log.has_features.copy()} if log.features is not None
           and log.has_features is not None and not log.has_features.all() else {}),
    }


def export_obp(log: DecisionLog, path: str | Path) -> Path:
    """Save :func:`obp_feedback` with ``numpy.savez_compressed``; load with :func:`load_obp`."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    feedback = obp_feedback(log)

    def save(partial: Path) -> None:
        with open(partial, "wb") as fh:  # an open file keeps numpy from appending ".npz"
            np.savez_compressed(fh, **feedback)

    return write_whole(path, save)


def load_obp(path: str | Path) -> dict[str, Any]:
    """Read an :func:`export_obp` file back into OBP's dictionary (ints as Python ints)."""
    with np.load(path, allow_pickle=False) as data:
        out: dict[str, Any] = {k: data[k] for k in data.files}
    out["n_rounds"] = int(out["n_rounds"])
    out["n_actions"] = int(out["n_actions"])
    return out


# ---------------------------------------------------------------------------- simulated logs
@dataclass
class Responses:
    """What simulated users did with a block of decisions (arrays over the block).

    Attributes
    ----------
    user_ids : ndarray of int64, shape (b,)
    likes, dislikes : ndarray of int64, shape (b,)
        Liked and disliked movies of each decision's slate.
    slates : ndarray of int64, shape (b, k), optional
        Movie ids shown; default ``1..k`` with ``k = max(likes + dislikes, 1)``.
    codes : ndarray of int8, shape (b, k), optional
        Response per slate position (1 like, -1 dislike, 0 none), naming which movies the
        feedback rows are about; without it the first slate positions are used.
    """

    user_ids: np.ndarray
    likes: np.ndarray
    dislikes: np.ndarray
    slates: np.ndarray | None = None
    codes: np.ndarray | None = None


Respond = Callable[[np.ndarray, np.random.Generator], Responses]


def bernoulli_users(arm_rates: Sequence[float], *, n_users: int = 943,
                    dislike_share: float = 0.5) -> Respond:
    """Users who like a slate of arm k with probability ``arm_rates[k]`` (one like at most).

    A slate without a like is disliked (one dislike) with probability ``dislike_share``, else
    ignored (the service then counts it as reward 0 when its window closes).
    """
    rates = np.asarray(arm_rates, dtype=np.float64)

    def respond(actions: np.ndarray, rng: np.random.Generator) -> Responses:
        liked = rng.random(actions.size) < rates[actions]
        disliked = ~liked & (rng.random(actions.size) < dislike_share)
        return Responses(rng.integers(1, n_users + 1, size=actions.size),
                         liked.astype(np.int64), disliked.astype(np.int64))

    return respond


@dataclass(frozen=True)
class FeatureUsers:
    """Simulated users known by a context vector, whose like rate per arm is known too.

    A decision draws a user uniformly; the logging policy sees ``features[user]``; the slate
    of arm k is liked (one like) with probability ``rates[user, k]``, else disliked with
    probability ``dislike_share``, else ignored (reward 0 when the window closes).

    Attributes
    ----------
    features : ndarray of float64, shape (U, d)
    rates : ndarray of float64, shape (U, K)
        True expected reward of every arm for every user.
    names : tuple of str
        The ``d`` feature names.
    version : str, default "synthetic-v1"
        Logged as the context's ``feature_version``.
    dislike_share : float, default 0.5
    """

    features: np.ndarray
    rates: np.ndarray
    names: tuple[str, ...]
    version: str = "synthetic-v1"
    dislike_share: float = 0.5

    def respond(self, users: np.ndarray, actions: np.ndarray,
                rng: np.random.Generator) -> Responses:
        """Draw each user's response to ``actions`` with ``rng``.

        A like with probability ``rates[users, actions]``; a dislike, among the rest, with
        ``dislike_share``. ``users`` and ``actions`` are index arrays of one shape ``(b,)``.
        """
        liked = rng.random(actions.size) < self.rates[users, actions]
        disliked = ~liked & (rng.random(actions.size) < self.dislike_share)
        return Responses(users + 1, liked.astype(np.int64), disliked.astype(np.int64))


def segment_users(n_users: int = 600, *, seed: int = 0) -> FeatureUsers:
    """Users in gender x age segments whose best arm depends on the segment (three arms).

    Features ``bias, gender=F, gender=M, age=<25, age=25-44, age=45+`` (one-hot); the like
    rate of arm k is ``base[k] + by_gender[g, k] + by_age[a, k]``, linear in the features, so
    LinTS can learn it exactly: women like arm 0 best, men arm 1, and arm 2 is the best for
    no one but the most even.
    """
    rng = np.random.default_rng(seed)
    gender = rng.integers(2, size=n_users)
    age = rng.integers(3, size=n_users)
    features = np.zeros((n_users, 6))
    features[:, 0] = 1.0
    features[np.arange(n_users), 1 + gender] = 1.0
    features[np.arange(n_users), 3 + age] = 1.0
    base = np.array([0.12, 0.12, 0.15])
    by_gender = np.array([[0.14, -0.06, 0.0], [-0.06, 0.14, 0.0]])
    by_age = np.array([[0.04, 0.0, 0.0], [0.0, 0.0, 0.0], [0.0, 0.04, 0.0]])
    rates = base + by_gender[gender] + by_age[age]
    return FeatureUsers(features, rates, ("bias", "gender=F", "gender=M", "age=<25",
                                          "age=25-44", "age=45+"))


def _simulation_model(policy: str, arms: list[str], users: FeatureUsers | None,
                      policy_params: dict[str, Any] | None, prior_alpha: float,
                      prior_beta: float, propensity_grid: int) -> PolicyModel:
    """The served :class:`PolicyModel` of :func:`simulate_service_log` (same parameters).

    Raises
    ------
    ValueError
        An unknown policy or invalid parameters, a contextual policy without ``users``, or
        ``users`` with like rates for another number of arms than ``arms``.
    """
    params = with_shared_params(policy, policy_params, prior_alpha=prior_alpha,
                                prior_beta=prior_beta, propensity_grid=propensity_grid)
    if registered_policies()[policy].contextual and users is None:
        raise ValueError(f"policy={policy!r} is contextual: respond must be FeatureUsers (users "
                         "with context vectors)")
    model = PolicyModel(policy, arms, params=params,
                        n_features=None if users is None else users.features.shape[1])
    if users is not None and users.rates.shape[1] != len(arms):
        raise ValueError(f"respond has like rates for {users.rates.shape[1]} arms; arms has "
                         f"{len(arms)}")
    return model


def _snapshot_pmf(served: BatchedPolicy, b: int) -> np.ndarray:
    """A context-free policy's pmf, one row for each of ``b`` decisions, shape ``(b, K)``."""
    p = np.clip(served.action_probabilities(), 0.0, None)
    return np.broadcast_to(p / p.sum(), (b, p.size))


def _rated(resp: Responses, j: int, slate: list[int]) -> list[tuple[int, str]]:
    """``(movie, "like" | "dislike")`` of decision ``j``'s ``slate``, most rewarding first.

    From ``resp.codes`` (per position) where the users give them, else the first
    ``likes[j]`` movies liked and the next ``dislikes[j]`` disliked. Most rewarding first, so
    that the decision's reward (the first rewarded feedback decides) is its largest: "liked
    anything", the envs' reward.
    """
    if resp.codes is not None:
        rated = [(m, "like" if c > 0 else "dislike")
                 for m, c in zip(slate, resp.codes[j].tolist(), strict=True) if c != 0]
    else:
        kinds = ["like"] * int(resp.likes[j]) + ["dislike"] * int(resp.dislikes[j])
        rated = list(zip(slate, kinds, strict=False))
    rated.sort(key=lambda mk: -(RULES.reward(mk[1]) or 0.0))
    return rated


def _feedback_rows(rated: list[tuple[int, str]], seqs: list[int], event: str, arm: str,
                   user_id: int, created_at: float, deadline: float
                   ) -> tuple[list[dict[str, Any]], tuple[float, int] | None]:
    """The feedback rows of one decision: ``rated`` (the first ``len(seqs)``) at ``seqs``, and
    the decision's outcome ``(reward, deciding feedback's seq)`` (None: none decides).

    The rule book decides the outcome of decision ``event`` (served by ``arm`` to ``user_id``,
    window closing at ``deadline``) from them (:meth:`RuleBook.outcome`, as the service does);
    the deciding row is ``counted``, each row carries the service's note; all are stamped
    ``created_at``.
    """
    pairs = list(zip(rated, seqs, strict=False))
    decided = RULES.outcome([Feedback(seq, created_at, kind) for (_, kind), seq in pairs],
                            deadline)
    decider = None if decided is None or decided[1] is None else decided[1].seq
    rows = []
    for (movie, kind), seq in pairs:
        decides = seq == decider
        rows.append({
            "created_at": created_at, "user_id": user_id,
            "movie_id": int(movie), "feedback_type": kind, "event_id": event,
            "event_key": event, "arm": arm, "reward": RULES.reward(kind),
            "rating": RULES.rating(kind), "counted": decides, "seq": seq,
            "note": decided_note(RULES.reward(kind) or 0.0, arm) if decides else ALREADY_DECIDED,
        })
    return rows, None if decided is None or decider is None else (decided[0], decider)


def simulate_service_log(url: str, arms: Sequence[str], respond: Respond | FeatureUsers,
                         n_decisions: int, *, seed: int = 0, refresh_every: int = 100,
                         policy: str = "ThompsonSampling",
                         policy_params: dict[str, Any] | None = None,
                         prior_alpha: float = 1.0, prior_beta: float = 1.0,
                         propensity_grid: int = 2048, start: float = 1.7e9,
                         spacing_s: float = 1.0, reward_window_s: float = 30.0,
                         chunk: int = 20_000) -> dict[str, Any]:
    """Write a decision log as the service's policy would produce it against simulated users.

    The service's :class:`~serving.policy.PolicyModel` (``policy``, Thompson Sampling by
    default, propensities by quadrature) draws each decision's arm from its snapshot, which
    folds the decided outcomes (with :meth:`PolicyModel.fold`, the service's own update) every
    ``refresh_every`` decisions (the service's periodic refresh). With :class:`FeatureUsers`
    each decision logs the user's context vector (``context["features"]`` and its
    ``feature_version``, as the service does) and a contextual policy's pmf at it. Decision i
    is made at ``start + i * spacing_s``; its feedback one tenth of a spacing later, the most
    rewarding first, which decides its outcome (the rule book's ``earliest`` aggregation: the
    reward is 1 if anything was liked, the envs' reward); a decision with
    no feedback gets the default reward about one spacing after its window closes. Rows go
    straight into the service's tables (bulk inserts, no idempotency checks) with log
    positions in time order, and ``arm_state`` ends equal to the pulls of the log, so
    ``recbandits rebuild-state`` agrees with it.

    Parameters
    ----------
    url : str
        Store URL; the tables are created if missing. Use an empty store.
    arms : sequence of str
    respond : callable or FeatureUsers
        ``respond(actions, rng) -> Responses`` for a block of arm positions (no context), or
        users with context vectors and known like rates.
    n_decisions : int
    seed : int, default 0
        Seeds the user and arm draws and the responses.
    refresh_every : int, default 100
    policy : str, default "ThompsonSampling"
        Any of :data:`serving.policy.SERVABLE_POLICIES`; a contextual one needs
        :class:`FeatureUsers`.
    policy_params : dict, optional
        Its hyper-parameters (Thompson Sampling: ``prior_alpha`` / ``prior_beta`` below).
    prior_alpha, prior_beta, propensity_grid
        The served Thompson Sampling's prior, and the quadrature grid of any policy that has
        one.
    start, spacing_s, reward_window_s : float
        Time line of the log (seconds).
    chunk : int, default 20000
        Rows per insert batch.

    Returns
    -------
    dict
        ``decisions``, ``feedback``, ``outcomes`` (rows written), ``pulls`` (per arm); with
        :class:`FeatureUsers` also ``expected_rewards`` (n, K), every arm's true like rate for
        each decision's user, in decision order.

    Raises
    ------
    ValueError
        ``n_decisions`` or ``refresh_every`` < 1, an unknown policy or invalid parameters, a
        contextual policy without :class:`FeatureUsers`, or users of another arm count.
    """
    if n_decisions < 1 or refresh_every < 1:
        raise ValueError(f"n_decisions and refresh_every must be >= 1, got {n_decisions}, "
                         f"{refresh_every}")
    arms = list(arms)
    K = len(arms)
    users = respond if isinstance(respond, FeatureUsers) else None
    model = _simulation_model(policy, arms, users, policy_params, prior_alpha, prior_beta,
                              propensity_grid)
    policy_json = json.dumps(model.describe_params())
    served = model.fresh()
    rng = np.random.default_rng(seed)
    store = open_store(url)
    store.create_schema(arms)
    base_seq = store.log_seq()
    # Log positions follow time: decision i's feedback comes at i + 0.1 spacings, its window
    # closes at i + settle_lag spacings; seq = 256 * (4 * bucket + kind) + j keeps that order.
    settle_lag = math.ceil(reward_window_s / spacing_s) + 1

    def seq_of(bucket: int, kind: int, j: int = 0) -> int:
        return base_seq + 256 * (4 * bucket + kind) + j + 1

    pulls = np.zeros(K, dtype=np.int64)
    # Outcomes not yet folded by the served policy: (time, Outcome), in time order.
    pending: list[tuple[float, Outcome]] = []
    truth: list[np.ndarray] = []
    dec_rows: list[dict[str, Any]] = []
    fb_rows: list[dict[str, Any]] = []
    out_rows: list[dict[str, Any]] = []
    written = {"decisions": 0, "feedback": 0, "outcomes": 0}

    def flush(final: bool = False) -> None:
        if not dec_rows or (len(dec_rows) < chunk and not final):
            return
        store.insert_simulated(dec_rows, fb_rows, out_rows)
        written["decisions"] += len(dec_rows)
        written["feedback"] += len(fb_rows)
        written["outcomes"] += len(out_rows)
        dec_rows.clear()
        fb_rows.clear()
        out_rows.clear()

    try:
        for first in range(0, n_decisions, refresh_every):
            now = start + first * spacing_s
            due = bisect.bisect_left(pending, now, key=lambda p: p[0])
            model.fold(served, [o for _, o in pending[:due]])
            del pending[:due]
            b = min(refresh_every, n_decisions - first)
            if users is not None:
                who = rng.integers(users.features.shape[0], size=b)
                x = users.features[who]
                truth.append(users.rates[who])
            # the pmf at each user's context, as the service computes it; else one per snapshot
            pmf_arr = (linear_probabilities(served, {k: v[0] for k, v in
                                                     served.state_.stats.items()}, x)
                       if model.contextual else _snapshot_pmf(served, b))
            cdf = np.cumsum(pmf_arr, axis=1)
            cdf[:, -1] = 1.0
            u = rng.random(b)
            actions = np.minimum((cdf <= u[:, None]).sum(axis=1), K - 1)
            pulls += np.bincount(actions, minlength=K)
            resp = respond(actions, rng) if users is None else users.respond(who, actions, rng)  # type: ignore[operator]  # respond is the callable when users is None
            times = start + (first + np.arange(b)) * spacing_s
            n_fb = resp.likes + resp.dislikes
            pmf_json = ([dict(zip(arms, row, strict=True)) for row in pmf_arr.tolist()]
                        if model.contextual else
                        [dict(zip(arms, pmf_arr[0].tolist(), strict=True))] * b)
            obs: list[tuple[float, Outcome]] = []
            for j in range(b):
                i = first + j
                t = float(times[j])
                event = f"{seed:08x}{i:024x}"
                arm = arms[actions[j]]
                deadline = t + reward_window_s
                settled_at = start + (i + settle_lag) * spacing_s
                k_show = max(int(n_fb[j]), 1)
                slate = (resp.slates[j].tolist() if resp.slates is not None
                         else list(range(1, k_show + 1)))
                vector = None if users is None else x[j].tolist()
                context: dict[str, Any] = ({"k": len(slate)} if users is None else
                                           {"feature_version": users.version,
                                            "features": vector, "k": len(slate)})
                pmf = pmf_json[j]
                dec_rows.append({
                    "event_id": event, "created_at": t, "user_id": int(resp.user_ids[j]),
                    "context": context, "arm": arm, "propensity": pmf[arm],
                    "pmf": pmf, "slate": slate, "policy": policy_json, "policy_version": 1,
                    "cold_start": False, "reward_deadline": deadline, "settled_at": settled_at,
                })
                fb_time = t + 0.1 * spacing_s
                rated = _rated(resp, j, slate)
                fb_seqs = [seq_of(i, 1, n) for n in range(min(len(rated), 255))]
                rows, decided = _feedback_rows(rated, fb_seqs, event, arm,
                                               int(resp.user_ids[j]), fb_time, deadline)
                fb_rows.extend(rows)
                if decided is not None:
                    reward, decider = decided
                    out_rows.append({"event_id": event, "seq": seq_of(i, 1, 255),
                                     "arm": arm, "reward": reward,
                                     "decided_at": fb_time, "feedback_seq": decider})
                    obs.append((fb_time, Outcome(seq_of(i, 1, 255), event, arm, reward,
                                                 vector)))
                else:
                    seq = seq_of(i + settle_lag, 2)
                    out_rows.append({"event_id": event, "seq": seq,
                                     "arm": arm, "reward": RULES.default_reward,
                                     "decided_at": settled_at, "feedback_seq": None})
                    obs.append((settled_at, Outcome(seq, event, arm, RULES.default_reward,
                                                    vector)))
            pending = sorted(pending + obs, key=lambda p: p[0])  # stable: log order on ties
            flush()
        flush(final=True)
        store.set_pulls({a: int(pulls[k]) for k, a in enumerate(arms)})
    finally:
        store.dispose()
    result: dict[str, Any] = {**written,
                              "pulls": {a: int(pulls[k]) for k, a in enumerate(arms)}}
    if users is not None:
        result["expected_rewards"] = np.concatenate(truth)
    return result


# ---------------------------------------------------------------------------- the command
@dataclass(frozen=True)
class OPEConfig:
    """What ``recbandits ope`` evaluates (the service's decision log).

    Attributes
    ----------
    url : str
        Store URL.
    out_dir : str or Path
        Folder for ``ope.csv`` and ``summary.json``.
    n_bootstrap : int, default 1000
    seed : int, default 0
        Bootstrap seed.
    confidence : float, default 0.95
    ts_priors : tuple of (alpha, beta), default DEFAULT_TS_PRIORS
    linear : tuple of LinearCandidate, default DEFAULT_LINEAR
    segment_prefixes : tuple of str, default ("gender=", "age=")
    feature_names : tuple of str, optional
        Names of the logged context vector's columns (see :func:`read_log`).
    include_open : bool, default False
    default_reward : float, default the rule book's
        The service's ``default_reward`` (see :func:`read_log`).
    as_of : float, optional
        When windows are judged closed (default: now).
    export_csv_path, export_obp_path : str or Path, optional
        Also write the log as CSV / in Open Bandit Pipeline's layout.
    shadow : bool, default False
        Evaluate the logged shadow policies (:func:`evaluate_shadow`) instead of the
        candidates: ``shadow.csv`` instead of ``ope.csv``.

    Raises
    ------
    ValueError
        ``n_bootstrap`` < 0, ``confidence`` outside (0, 1), a prior that is not positive, or
        exports that clash with each other or with the run's files (:func:`export_clash`).
    """

    url: str
    out_dir: str | Path
    n_bootstrap: int = DEFAULT_N_BOOTSTRAP
    seed: int = 0
    confidence: float = DEFAULT_CONFIDENCE
    ts_priors: tuple[tuple[float, float], ...] = DEFAULT_TS_PRIORS
    linear: tuple[LinearCandidate, ...] = DEFAULT_LINEAR
    segment_prefixes: tuple[str, ...] = DEFAULT_SEGMENTS
    feature_names: tuple[str, ...] | None = None
    include_open: bool = False
    default_reward: float = RULES.default_reward
    as_of: float | None = None
    export_csv_path: str | Path | None = None
    export_obp_path: str | Path | None = None
    shadow: bool = False

    def __post_init__(self) -> None:
        # The bandits' own rules, before the log is read: 0 or >= MIN_BOOTSTRAP resamples,
        # Beta priors within [BETA_PRIOR_MIN, BETA_PRIOR_MAX].
        check_n_bootstrap(self.n_bootstrap)
        # The seed as --seed names it, as `ope --obd` does (it said "random_state=-3").
        check_seed(self.seed)
        if not 0 < self.confidence < 1:
            raise ValueError(f"confidence must lie in (0, 1), got {self.confidence!r}")
        for prior in self.ts_priors:
            if len(prior) != 2:
                raise ValueError(f"ts_priors: each is (alpha, beta), got {prior!r}")
            for name, value in zip(("alpha", "beta"), prior, strict=True):
                check_beta_prior(value, f"ts_priors {name} (--ts-prior)", 1)
        clash = export_clash(("out_dir", self.out_dir),
                             {"export_csv_path": self.export_csv_path,
                              "export_obp_path": self.export_obp_path}, self.shadow)
        if clash is not None:  # (review: refused by the CLI only, run() overwrote the table)
            raise ValueError(clash)


@dataclass
class OPERun:
    """What :func:`run` returns.

    Attributes
    ----------
    config : OPEConfig
    log : DecisionLog
    result : OPEResult or None
        The candidates' evaluation (None with ``config.shadow``).
    files : dict of str to Path
        ``table``, ``summary`` and the exports written.
    shadow : list of ShadowComparison, optional
        With ``config.shadow``: :func:`evaluate_shadow`'s comparisons.
    """

    config: OPEConfig
    log: DecisionLog
    result: OPEResult | None
    files: dict[str, Path]
    shadow: list[ShadowComparison] | None = None


#: Every file a run writes into ``out_dir``, by kind (the candidates' table and summary, or
#: ``--shadow``'s table): a previous run's are removed first, so that a shadow run does not
#: leave the candidates' table of an earlier run beside its own.
RUN_FILES = {"table": "ope.csv", "summary": "summary.json", "shadow_table": "shadow.csv"}


def out_files(shadow: bool) -> dict[str, str]:
    """The files a run writes into ``out_dir`` by kind: the candidates' ``table`` and
    ``summary``, or with ``shadow`` the shadow ``table`` alone. The writers use it, and
    :func:`export_clash` refuses an export naming one of them.
    """
    if shadow:
        return {"table": RUN_FILES["shadow_table"]}
    return {kind: RUN_FILES[kind] for kind in ("table", "summary")}


def export_clash(out: tuple[str, str | Path] | None,
                 exports: Mapping[str, str | Path | None], shadow: bool) -> str | None:
    """Why the exports (by the name each is given under: an option or a field) cannot be
    written beside the files a run writes into ``out`` (its name and folder; None: a folder of
    its own, not known yet), or None: two
    exports naming one file, or an export naming a file of :func:`out_files` (found by attack:
    ``--export-csv DIR/ope.csv`` replaced the table with the log, ``--export-obp
    DIR/summary.json`` made it a zip, exit 0). The one rule of :class:`OPEConfig` and the
    CLI's check before anything is read.
    """
    given = [(name, path) for name, path in exports.items() if path is not None]
    real = [os.path.realpath(path) for _, path in given]
    if len(set(real)) < len(real):
        return (f"{' and '.join(name for name, _ in given)} name the same file "
                f"{str(given[0][1])!r}")
    if out is None:
        return None
    out_name, out_dir = out
    written = {os.path.realpath(os.path.join(out_dir, n)): n for n in out_files(shadow).values()}
    for (name, path), where in zip(given, real, strict=True):
        if where in written:
            return (f"{name} {str(path)!r} names the {written[where]} that {out_name} "
                    f"{str(out_dir)!r} gets: give the export another file")
    return None


def run(config: OPEConfig) -> OPERun:
    """What ``recbandits ope`` does: read the log, evaluate every candidate, write the files.

    Writes ``<out_dir>/ope.csv`` (the table), ``<out_dir>/summary.json`` and the exports asked
    for; prints nothing (the CLI prints :func:`format_run`).

    Raises
    ------
    EmptyLogError
        Nothing to evaluate (``n_open`` / ``first_close`` say whether waiting helps).
    ValueError
        An unknown or missing store, or an invalid candidate.
    """
    if config.shadow:
        # No decision at all with a shadow record: a refusal, before the log's windows are
        # looked at (with every window open it said "wait", which could never help: found
        # by attack).
        store = open_store(config.url, read_only=True)
        try:
            shadowed, source = store.count_shadow(), store.describe()
        finally:
            store.dispose()
        if not shadowed:
            raise EmptyLogError(f"{source}: no decision of the log carries a shadow record "
                                "(serve with --shadow-policy)")
    log = read_log(config.url, as_of=config.as_of, include_open=config.include_open,
                   feature_names=config.feature_names, default_reward=config.default_reward)
    if config.shadow:
        return _run_shadow(config, log)
    result = evaluate_log(log, n_bootstrap=config.n_bootstrap, seed=config.seed,
                          confidence=config.confidence, ts_priors=config.ts_priors,
                          linear=config.linear, segment_prefixes=config.segment_prefixes)
    text = json.dumps(result.summary, indent=2) + "\n"
    files = _write_run(config, False, {
        "table": lambda p: result.table.to_csv(p, index=False),
        "summary": lambda p: p.write_text(text, encoding="utf-8")})
    return OPERun(config, log, result, {**files, **_exports(config, log)})


def _write_run(config: OPEConfig, shadow: bool,
               writers: dict[str, Callable[[Path], object]]) -> dict[str, Path]:
    """Write a run's files by kind into ``config.out_dir``, all into a folder beside it first,
    then moved onto it together (:func:`arms.data.files.staged_run_folder`, the lab's rule:
    the folder holds the earlier run or this one, never a mix; the earlier run's files were
    removed first, found in review); their paths by kind.
    """
    names = out_files(shadow=shadow)
    folder = Path(config.out_dir)
    with staged_run_folder(folder, RUN_FILES.values()) as staging:
        for kind, writer in writers.items():
            write_whole(staging / names[kind], writer)
    return {kind: folder / name for kind, name in names.items()}


def _exports(config: OPEConfig, log: DecisionLog) -> dict[str, Path]:
    """The log's exports ``config`` asks for (CSV, Open Bandit Pipeline), written; their paths
    by kind (with or without ``shadow``: found by attack, ``--shadow`` skipped them silently).
    """
    files = {}
    if config.export_csv_path:
        files["csv"] = export_csv(log, config.export_csv_path)
    if config.export_obp_path:
        files["obp"] = export_obp(log, config.export_obp_path)
    return files


def _run_shadow(config: OPEConfig, log: DecisionLog) -> OPERun:
    """:func:`run` with ``config.shadow``: :func:`evaluate_shadow`, ``shadow.csv``."""
    store = open_store(config.url, read_only=True)
    try:
        records = store.shadow_rows()
    finally:
        store.dispose()
    comparisons = evaluate_shadow(log, records, n_bootstrap=config.n_bootstrap,
                                  seed=config.seed, confidence=config.confidence,
                                  segment_prefixes=config.segment_prefixes)
    table = pd.concat([c.table().assign(shadow=json.dumps(c.policy), decisions=c.n)
                       for c in comparisons])
    files = _write_run(config, True, {"table": lambda p: table.to_csv(p, index=False)})
    return OPERun(config, log, None, {**files, **_exports(config, log)}, comparisons)


def format_run(results: OPERun) -> str:
    """The report ``recbandits ope`` prints: the log's summary line, plays by arm, the table,
    and where the files went (warnings and notes are in ``results.result``).
    """
    if results.shadow is not None:
        lines = [f"decision log: {results.log.source}", format_shadow(results.shadow),
                 f"table: {results.files['table']}"]
    else:
        assert results.result is not None  # not a shadow run
        s = results.result.summary
        excluded = ", ".join(f"{v} {k.replace('_', '-')}" for k, v in s["excluded"].items()
                             if v)
        lines = [
            f"decision log: {s['source']}: {s['decisions']} decisions evaluated"
            + (f" ({excluded} left out)" if excluded else "")
            + f"; observed mean reward {s['observed_mean_reward']:.4f}",
            "plays by arm: " + ", ".join(f"{a} {n}" for a, n in s["plays_by_arm"].items()),
            format_table(results.result.table, s["confidence"]),
            f"table: {results.files['table']}",
        ]
    if "csv" in results.files:
        lines.append(f"log (CSV): {results.files['csv']}")
    if "obp" in results.files:
        lines.append(f"log (Open Bandit Pipeline .npz): {results.files['obp']}")
    return "\n".join(lines)
