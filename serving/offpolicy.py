"""Off-policy evaluation of the decision log: what would other policies have earned?

The decision log (SQLite or PostgreSQL, :mod:`serving.store.tables`) is read into arrays
(:func:`read_log`), candidate policies' action probabilities are built for every logged decision
(:func:`candidate_policies`), and :func:`bandits.ope.evaluate_policies` estimates their value with
IPS, self-normalised IPS and doubly robust estimators and bootstrap intervals
(:func:`evaluate_log`). ``recbandits ope`` prints the table and writes it as CSV; the log can be
exported as CSV (:func:`export_csv`) and in Open Bandit Pipeline's layout (:func:`export_obp`).

Reward of a decision
    The one reward the service decided for it: its stored outcome (:mod:`serving.rules`: the
    first rewarded feedback in its window, or the window's close). A decision whose window
    closed before its outcome was stored gets the default reward the settle sweep will give
    it. Decisions whose window is still open at ``as_of`` are left out (their reward is not
    known yet; leaving out only the open ones without a like would bias every estimate
    upwards), unless ``include_open`` counts them with what they have so far. Cold-start
    decisions were made outside the policy (propensity 1, one fixed arm) and are left out.

Candidate policies (per logged decision i, non-contextual like the served policy)
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

Reward model for DR
    Per arm, the mean reward of the *earlier* logged decisions that played it (Beta(1, 1)
    smoothing). Being predictable it keeps DR unbiased; it is crude (no user features), so DR
    mainly helps the candidates that rely on rarely played arms.
"""

from __future__ import annotations

import json
import logging
import math
import time
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from bandits import ThompsonSampling
from bandits.base import argmax_set_probabilities, policy_from_state_dict
from bandits.ope import PolicyReport, evaluate_policies
from serving.policy import PolicyModel
from serving.rules import RuleBook
from serving.store import open_store

logger = logging.getLogger(__name__)

DEFAULT_TS_PRIORS: tuple[tuple[float, float], ...] = ((1.0, 1.0), (1.0, 19.0), (20.0, 20.0))
#: The rules the simulated log follows and ``read_log`` applies to undecided decisions.
RULES = RuleBook()


class EmptyLogError(ValueError):
    """The log holds no decision that can be evaluated."""


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
    source : str
        The store URL without password.
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

    @property
    def n(self) -> int:
        return int(self.actions.size)

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
             partition: int = 50_000) -> DecisionLog:
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

    Raises
    ------
    EmptyLogError
        No decision can be evaluated (empty log, or only cold-start/open decisions).
    ValueError
        For a URL that is neither SQLite nor PostgreSQL, or an SQLite file that does not exist.
    """
    store = open_store(url, create=False)  # ValueError: no such SQLite file
    as_of = time.time() if as_of is None else float(as_of)
    try:
        if not store.has_log():
            raise EmptyLogError(f"{store.describe()} has no decision log (no 'decisions' table)")
        arms: list[str] = []
        parts: list[dict[str, Any]] = []
        n_cold = store.decision_log_rows(lambda rows: parts.append(_arrays(rows, arms)),
                                         partition=partition)
        source = store.describe()
    finally:
        store.dispose()
    if not parts:
        raise EmptyLogError(f"{source} holds no policy decision (cold-start decisions: "
                            f"{n_cold})")
    K = len(arms)
    cat = {k: np.concatenate([p[k] for p in parts]) for k in parts[0] if k != "pmf"}
    pmf = np.zeros((cat["created_at"].size, K))
    row = 0
    for p in parts:
        pmf[row:row + p["pmf"].shape[0], :p["pmf"].shape[1]] = p["pmf"]
        row += p["pmf"].shape[0]
    decided = ~np.isnan(cat["reward"])
    closed = ~np.isnan(cat["settled_at"]) | (cat["reward_deadline"] < as_of)
    # An undecided decision whose window closed gets the default reward when the sweep settles
    # it (earliest: no feedback decided it); so does an open one counted with include_open.
    rewards = np.where(decided, cat["reward"], RULES.default_reward)
    keep = closed | include_open
    unknown = cat["actions"] < 0
    keep &= ~unknown
    if not keep.any():
        raise EmptyLogError(
            f"{source}: none of the {pmf.shape[0]} policy decisions has a closed reward window "
            f"yet ({int((~closed).sum())} open); wait for the window or use include_open")
    # What the service's policy observed: every decided outcome, in the order it was decided.
    observed = np.flatnonzero(decided & ~unknown)
    observed = observed[np.argsort(cat["decided_at"][observed], kind="stable")]
    ctx_names = parts[0]["context_names"].tolist()
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
    )


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
    }


# ---------------------------------------------------------------------------- candidates
def ts_name(alpha: float, beta: float) -> str:
    return f"thompson(a={alpha:g},b={beta:g})"


def candidate_policies(log: DecisionLog, *,
                       ts_priors: Iterable[tuple[float, float]] = DEFAULT_TS_PRIORS,
                       ts_states: int = 100, propensity_grid: int = 256
                       ) -> dict[str, np.ndarray]:
    """Action probabilities of every candidate at every logged decision (see the module doc).

    Parameters
    ----------
    log : DecisionLog
    ts_priors : iterable of (alpha, beta), default ((1, 1), (1, 19), (20, 20))
        Beta priors of the Thompson Sampling candidates.
    ts_states : int, default 100
        Most posterior refreshes of a Thompson candidate over the log.
    propensity_grid : int, default 256
        Quadrature intervals of the Thompson propensities (error <= pi / (4 grid)).

    Returns
    -------
    dict of str to ndarray of float64, shape (n, K)
        ``always:<arm>`` ..., ``uniform``, ``greedy``, ``thompson(a=..,b=..)`` ..., ``logging``.

    Raises
    ------
    ValueError
        For a prior that is not positive, or ``ts_states`` < 1.
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
    block = math.ceil(n / ts_states)
    starts = np.arange(0, n, block)
    states, inverse = np.unique(np.concatenate([s[starts], f[starts]], axis=1), axis=0,
                                return_inverse=True)
    rows = np.repeat(inverse.reshape(-1), np.diff(np.append(starts, n)))
    for alpha, beta in ts_priors:
        if not (alpha > 0 and beta > 0):
            raise ValueError(f"ts_priors: alpha and beta must be > 0, got ({alpha}, {beta})")
        policy = ThompsonSampling(log.arms, prior_alpha=alpha, prior_beta=beta,
                                  propensity_grid=propensity_grid, random_state=0)
        state = policy.init_batch(len(states))
        state.stats["successes"][:] = states[:, :K]
        state.stats["failures"][:] = states[:, K:]
        probs = np.asarray(policy.probabilities_batch(state))
        out[ts_name(alpha, beta)] = probs[rows]
    pmf = log.pmf / log.pmf.sum(axis=1, keepdims=True)
    out["logging"] = pmf
    return out


def reward_model(log: DecisionLog) -> np.ndarray:
    """Per-arm mean reward of the earlier decisions (Beta(1, 1) smoothed), shape (n, K)."""
    n, K = log.n, len(log.arms)
    played = np.zeros((n, K))
    played[np.arange(n), log.actions] = 1.0
    wins = played * log.rewards[:, None]
    pulls_before = np.cumsum(played, axis=0) - played
    wins_before = np.cumsum(wins, axis=0) - wins
    return (wins_before + 1.0) / (pulls_before + 2.0)


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
    """

    table: pd.DataFrame
    reports: dict[str, PolicyReport]
    messages: list[str]
    summary: dict[str, Any]


def evaluate_log(log: DecisionLog, *, n_bootstrap: int = 1000, seed: int = 0,
                 confidence: float = 0.95,
                 ts_priors: Iterable[tuple[float, float]] = DEFAULT_TS_PRIORS,
                 ts_states: int = 100, propensity_grid: int = 256,
                 min_propensity: float = 1e-3, min_ess: float = 100.0) -> OPEResult:
    """Estimate every candidate's value on ``log``; see :func:`candidate_policies`.

    Parameters
    ----------
    log : DecisionLog
    n_bootstrap : int, default 1000
        Bootstrap resamples (shared by every candidate and estimator); 0 skips intervals.
    seed : int, default 0
        Seeds the bootstrap.
    confidence : float, default 0.95
    ts_priors, ts_states, propensity_grid
        As :func:`candidate_policies`.
    min_propensity, min_ess : float
        Thresholds of the warnings (:func:`bandits.ope.evaluate_policies`).
    """
    targets = candidate_policies(log, ts_priors=ts_priors, ts_states=ts_states,
                                 propensity_grid=propensity_grid)
    reports = evaluate_policies(log.rewards, log.actions, log.propensities, targets,
                                reward_model(log), logging_pmf=log.pmf,
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
    if log.excluded.get("unknown_arm"):
        messages.append(f"{log.excluded['unknown_arm']} decision(s) left out: arm missing "
                        "from their own pmf")
    summary = {
        "source": log.source, "decisions": log.n, "excluded": dict(log.excluded),
        "arms": list(log.arms), "observed_mean_reward": float(log.rewards.mean()),
        "observed_by_arm": {a: (float(log.rewards[log.actions == k].mean())
                                if (log.actions == k).any() else None)
                            for k, a in enumerate(log.arms)},
        "plays_by_arm": {a: int((log.actions == k).sum()) for k, a in enumerate(log.arms)},
        "policy_observations": int(log.obs_actions.size),
        "n_bootstrap": n_bootstrap, "seed": seed, "confidence": confidence,
        "ts_priors": [list(p) for p in ts_priors], "ts_states": ts_states,
        "min_propensity": min_propensity, "min_ess": min_ess,
    }
    return OPEResult(table, reports, messages, summary)


def format_table(table: pd.DataFrame) -> str:
    """The OPE table as fixed-width text: value [low, high] per estimator, ESS, flags."""
    estimators = [e for e in ("ips", "snips", "dr") if e in table]
    width = max(8, int(table["policy"].str.len().max()))
    head = f"{'policy':<{width}}" + "".join(f"{e.upper() + ' [95% CI]':>26}" for e in estimators)
    head += f"{'ESS':>10}  flags"
    lines = [head, "-" * len(head)]
    for _, row in table.iterrows():
        cells = "".join(f"{row[e]:>8.4f} [{row[e + '_low']:.4f}, {row[e + '_high']:.4f}]"
                        .rjust(26) for e in estimators)
        lines.append(f"{row['policy']:<{width}}{cells}{row['ess']:>10.1f}  {row['flags']}")
    return "\n".join(lines)


# ---------------------------------------------------------------------------- export
def log_frame(log: DecisionLog) -> pd.DataFrame:
    """The evaluable log as a flat table (one row per decision; pmf and context columns)."""
    frame = pd.DataFrame({
        "event_id": log.event_ids, "created_at": log.created_at, "user_id": log.user_ids,
        "policy_version": log.policy_versions, "arm": np.asarray(log.arms)[log.actions],
        "action": log.actions, "propensity": log.propensities, "reward": log.rewards,
    })
    for k, arm in enumerate(log.arms):
        frame[f"pmf_{arm}"] = log.pmf[:, k]
    for j, name in enumerate(log.context_names):
        frame[f"context_{name}"] = log.context[:, j]
    return frame


def export_csv(log: DecisionLog, path: str | Path) -> Path:
    """Write :func:`log_frame` as CSV; returns the path."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    log_frame(log).to_csv(path, index=False)
    return path


def obp_feedback(log: DecisionLog) -> dict[str, Any]:
    """The log in Open Bandit Pipeline's ``bandit_feedback`` layout.

    Keys: ``n_rounds``, ``n_actions`` (ints), ``action`` (n,), ``reward`` (n,), ``pscore`` (n,),
    ``position`` (n,) zeros (one arm per decision), ``context`` (n, d), ``action_context``
    (K, K) one-hot, ``pi_b`` (n, K, 1) the logging policy's pmf, and ``action_names`` (K,).
    """
    K = len(log.arms)
    return {
        "n_rounds": log.n, "n_actions": K, "action": log.actions.copy(),
        "reward": log.rewards.copy(), "pscore": log.propensities.copy(),
        "position": np.zeros(log.n, dtype=np.int64), "context": log.context.copy(),
        "action_context": np.eye(K), "pi_b": log.pmf[:, :, None].copy(),
        "action_names": np.array(log.arms, dtype=str),
    }


def export_obp(log: DecisionLog, path: str | Path) -> Path:
    """Save :func:`obp_feedback` with ``numpy.savez_compressed``; load with :func:`load_obp`."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    with open(path, "wb") as fh:  # an open file keeps numpy from appending ".npz"
        np.savez_compressed(fh, **obp_feedback(log))
    return path


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


def simulate_service_log(url: str, arms: Sequence[str], respond: Respond, n_decisions: int, *,
                         seed: int = 0, refresh_every: int = 100, prior_alpha: float = 1.0,
                         prior_beta: float = 1.0, propensity_grid: int = 2048,
                         start: float = 1.7e9, spacing_s: float = 1.0,
                         reward_window_s: float = 30.0, chunk: int = 20_000) -> dict[str, Any]:
    """Write a decision log as the service's policy would produce it against simulated users.

    The service's :class:`~serving.policy.PolicyModel` (Thompson Sampling, propensities by
    quadrature) draws each decision's arm from its snapshot, which is rebuilt from the counts
    every ``refresh_every`` decisions (the service's periodic refresh). Decision i is made at
    ``start + i * spacing_s``; its feedback one tenth of a spacing later, the first of which
    decides its outcome (the rule book's ``earliest`` aggregation); a decision with no
    feedback gets the default reward about one spacing after its window closes. Rows go
    straight into the service's tables (bulk inserts, no idempotency checks) with log positions
    in time order, and ``arm_state`` ends equal to the pulls of the log, so
    ``recbandits rebuild-state`` agrees with it.

    Parameters
    ----------
    url : str
        Store URL; the tables are created if missing. Use an empty store.
    arms : sequence of str
    respond : callable
        ``respond(actions, rng) -> Responses`` for a block of arm positions.
    n_decisions : int
    seed : int, default 0
        Seeds the arm draws and ``respond``'s generator.
    refresh_every : int, default 100
    prior_alpha, prior_beta, propensity_grid
        The served policy's settings.
    start, spacing_s, reward_window_s : float
        Time line of the log (seconds).
    chunk : int, default 20000
        Rows per insert batch.

    Returns
    -------
    dict
        ``decisions``, ``feedback``, ``outcomes`` (rows written), ``pulls`` (per arm).
    """
    if n_decisions < 1 or refresh_every < 1:
        raise ValueError(f"n_decisions and refresh_every must be >= 1, got {n_decisions}, "
                         f"{refresh_every}")
    arms = list(arms)
    K = len(arms)
    model = PolicyModel("ThompsonSampling", arms, params={
        "prior_alpha": prior_alpha, "prior_beta": prior_beta,
        "propensity_grid": propensity_grid})
    policy_json = json.dumps(model.describe_params())
    template = model.fresh().state_dict()
    rng = np.random.default_rng(seed)
    store = open_store(url)
    store.create_schema(arms)
    base_seq = store.log_seq()
    # Log positions follow time: decision i's feedback comes at i + 0.1 spacings, its window
    # closes at i + settle_lag spacings; seq = 256 * (4 * bucket + kind) + j keeps that order.
    settle_lag = math.ceil(reward_window_s / spacing_s) + 1

    def seq_of(bucket: int, kind: int, j: int = 0) -> int:
        return base_seq + 256 * (4 * bucket + kind) + j + 1

    successes = np.zeros(K)
    failures = np.zeros(K)
    pulls = np.zeros(K, dtype=np.int64)
    # Outcomes not yet seen by the policy: (time, arm, reward), in time order.
    pending = np.empty((0, 3))
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
            due = pending[:, 0] < now
            if due.any():
                arm_idx = pending[due, 1].astype(np.int64)
                wins = pending[due, 2]
                successes += np.bincount(arm_idx, weights=wins, minlength=K)
                failures += np.bincount(arm_idx, weights=1.0 - wins, minlength=K)
                pending = pending[~due]
            # The served policy at these counts (a Beta policy's state is its counts).
            state = {**template, "stats": {"successes": successes.tolist(),
                                           "failures": failures.tolist()}}
            pmf_arr = policy_from_state_dict(state).action_probabilities()
            pmf_arr = np.clip(pmf_arr, 0.0, None) / np.clip(pmf_arr, 0.0, None).sum()
            cdf = np.cumsum(pmf_arr)
            cdf[-1] = 1.0
            b = min(refresh_every, n_decisions - first)
            actions = np.minimum(np.searchsorted(cdf, rng.random(b), side="right"), K - 1)
            pulls += np.bincount(actions, minlength=K)
            resp = respond(actions, rng)
            pmf = dict(zip(arms, pmf_arr.tolist(), strict=True))
            times = start + (first + np.arange(b)) * spacing_s
            n_fb = resp.likes + resp.dislikes
            obs = []
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
                dec_rows.append({
                    "event_id": event, "created_at": t, "user_id": int(resp.user_ids[j]),
                    "context": {"k": len(slate)}, "arm": arm, "propensity": pmf[arm],
                    "pmf": pmf, "slate": slate, "policy": policy_json, "policy_version": 1,
                    "cold_start": False, "reward_deadline": deadline, "settled_at": settled_at,
                })
                fb_time = t + 0.1 * spacing_s
                if resp.codes is not None:
                    code = resp.codes[j]
                    rated = [(m, "like" if c > 0 else "dislike")
                             for m, c in zip(slate, code.tolist(), strict=True) if c != 0]
                else:
                    kinds = ["like"] * int(resp.likes[j]) + ["dislike"] * int(resp.dislikes[j])
                    rated = list(zip(slate, kinds, strict=False))
                for n, (movie, kind) in enumerate(rated[:255]):
                    rule = RULES.rule(kind)
                    decides = n == 0  # earliest: the first rewarded feedback decides
                    fb_seq = seq_of(i, 1, n)
                    fb_rows.append({
                        "created_at": fb_time, "user_id": int(resp.user_ids[j]),
                        "movie_id": int(movie), "feedback_type": kind, "event_id": event,
                        "event_key": event, "arm": arm, "reward": rule.reward,
                        "rating": rule.rating, "counted": decides, "seq": fb_seq,
                        "note": (f"reward {rule.reward:g} given to arm {arm}" if decides else
                                 "the decision's reward was already decided"),
                    })
                    if decides:
                        out_rows.append({"event_id": event, "seq": seq_of(i, 1, 255),
                                         "arm": arm, "reward": rule.reward,
                                         "decided_at": fb_time, "feedback_seq": fb_seq})
                        obs.append((fb_time, actions[j], rule.reward))
                if not rated:
                    out_rows.append({"event_id": event, "seq": seq_of(i + settle_lag, 2),
                                     "arm": arm, "reward": RULES.default_reward,
                                     "decided_at": settled_at, "feedback_seq": None})
                    obs.append((settled_at, actions[j], RULES.default_reward))
            if obs:
                new = np.array(obs, dtype=np.float64)
                pending = np.concatenate([pending, new])
                pending = pending[np.argsort(pending[:, 0], kind="stable")]
            flush()
        flush(final=True)
        store.set_pulls({a: int(pulls[k]) for k, a in enumerate(arms)})
    finally:
        store.dispose()
    return {**written, "pulls": {a: int(pulls[k]) for k, a in enumerate(arms)}}


# ---------------------------------------------------------------------------- the command
def run(url: str, *, out_dir: str | Path, n_bootstrap: int = 1000, seed: int = 0,
        confidence: float = 0.95, ts_priors: Iterable[tuple[float, float]] = DEFAULT_TS_PRIORS,
        include_open: bool = False, export_csv_path: str | Path | None = None,
        export_obp_path: str | Path | None = None, out: Any = None, err: Any = None) -> int:
    """What ``recbandits ope`` does: read, evaluate, print, write; returns the exit code.

    Writes ``<out_dir>/ope.csv`` (the table) and ``<out_dir>/summary.json``; prints the table
    to ``out`` and warnings to ``err`` (default stdout and stderr). Exit 2 when the log holds
    nothing to evaluate.
    """
    import sys

    out = out or sys.stdout
    err = err or sys.stderr
    try:
        log = read_log(url, include_open=include_open)
    except (EmptyLogError, ValueError) as exc:
        print(f"recbandits ope: {exc}", file=err)
        return 2
    result = evaluate_log(log, n_bootstrap=n_bootstrap, seed=seed, confidence=confidence,
                          ts_priors=ts_priors)
    folder = Path(out_dir)
    folder.mkdir(parents=True, exist_ok=True)
    result.table.to_csv(folder / "ope.csv", index=False)
    (folder / "summary.json").write_text(json.dumps(result.summary, indent=2) + "\n")
    s = result.summary
    excluded = ", ".join(f"{v} {k.replace('_', '-')}" for k, v in s["excluded"].items() if v)
    print(f"decision log: {s['source']}: {s['decisions']} decisions evaluated"
          + (f" ({excluded} left out)" if excluded else "")
          + f"; observed mean reward {s['observed_mean_reward']:.4f}", file=out)
    print("plays by arm: " + ", ".join(f"{a} {n}" for a, n in s["plays_by_arm"].items()),
          file=out)
    print(format_table(result.table), file=out)
    for message in result.messages:
        print(f"warning: {message}", file=err)
    print(f"table: {folder / 'ope.csv'}", file=out)
    if export_csv_path:
        print(f"log (CSV): {export_csv(log, export_csv_path)}", file=out)
    if export_obp_path:
        print(f"log (Open Bandit Pipeline .npz): {export_obp(log, export_obp_path)}", file=out)
    return 0
