"""The live holdout: a share of requests served by a fixed baseline, and its report.

With ``holdout_share`` ``s > 0`` every policy decision (not a cold-start one, and never a
multileaved slate: the settings refuse that) draws ``u`` from the service's seeded generator;
when ``u < s`` the arm is drawn from the **baseline** (``holdout_baseline``: ``uniform`` over the
arms, or one named arm) instead of the policy's probabilities. The arm is therefore drawn from
the mixture

    q = s * baseline + (1 - s) * policy        (policy: the served pmf, exploration floor included)

and ``q`` is what the decision logs as its ``pmf`` and ``q[arm]`` as its ``propensity``: the
probability the arm really had, so ``recbandits ope`` (IPS, SNIPS, DR) evaluates candidates on a
log with a holdout without any change. The decision's ``policy`` JSON says it:
``{"holdout": {"share": s, "baseline": b, "draw": u, "held_out": u < s}}`` (``rebuild-state``
checks ``held_out == (draw < share)`` and that the logged pmf is the mixture's).

**Exploration floor.** The floor applies to the policy's part; a uniform baseline keeps every
arm's logged propensity at least the floor (``s / K + (1 - s) floor >= floor`` as ``floor <=
1 / K``). A one-arm baseline would lower the other arms' to ``(1 - s) floor``, breaking the
floor's promise (every logged propensity at least the floor, which ``recbandits ope`` relies
on): the settings refuse a floor with a one-arm baseline (:func:`check_holdout`), rather than
flooring the mixture, which would make the logged pmf other than the two-stage draw's.

**Outcomes of held-out decisions reach the policy's fold** like any other: the policies the
service runs (Beta Thompson Sampling, LinTS, ...) learn each arm's reward from the observed
(arm, context, reward) triples, whatever chose the arm (the choice depends only on the service's
own random draw, not on the reward), so these are valid observations, the fold stays the plain
fold of every outcome in log order (``rebuild-state`` unchanged), and the baseline's arm choices
add exploration rather than waste it. The holdout measures what **serving** the policy is worth,
not a policy that never saw the holdout's traffic.

:func:`holdout_report` (``recbandits holdout``) compares the reward rate of the decisions the
policy served with that of the held-out ones, over the decisions logged while a holdout ran,
each with a 95% percentile bootstrap interval, and their difference with its interval.
"""

from __future__ import annotations

import json
import math
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from typing import NamedTuple

import numpy as np
import numpy.typing as npt
from scipy import stats

from bandits.ope import DEFAULT_N_BOOTSTRAP, MIN_OBSERVATIONS, NO_RESAMPLES, mean_interval
from serving.errors import ArmNotServedError, check_bootstrap
from serving.multileave import parse
from serving.policy import PMF_CACHE_SIZE, draw_arm
from serving.store.types import JsonObject

#: The baseline that serves every arm with probability ``1 / K``.
UNIFORM = "uniform"


def check_holdout(share: float, baseline: str, arms: Sequence[str], floor: float = 0.0
                  ) -> None:
    """Refuse a holdout share outside ``[0, 1)``, a baseline that is neither ``uniform`` nor
    one of ``arms``, or a one-arm baseline with an exploration ``floor`` (default 0: none;
    see the module doc).

    Raises
    ------
    ValueError
        The message names the setting, the value and what is allowed
        (:class:`~serving.errors.ArmNotServedError` for a baseline not among ``arms``).
    """
    if not 0.0 <= share < 1.0:
        raise ValueError(f"holdout_share={share} is outside [0, 1): the share of requests "
                         "served by the baseline")
    if baseline != UNIFORM and baseline not in arms:
        raise ArmNotServedError(f"holdout_baseline={baseline!r} is neither 'uniform' nor a served "
                         f"arm; allowed: {[UNIFORM, *arms]}")
    if share and floor and baseline != UNIFORM:
        raise ValueError(
            f"exploration_floor={floor} with holdout_baseline={baseline!r} (holdout_share="
            f"{share}): a one-arm baseline would log the other arms at (1 - holdout_share) * "
            f"exploration_floor = {(1.0 - share) * floor:g}, below the floor; use "
            "holdout_baseline='uniform' (every arm keeps at least the floor) or set "
            "exploration_floor to 0")


def baseline_pmf(baseline: str, arms: Sequence[str]) -> npt.NDArray[np.float64]:
    """The ``baseline``'s probabilities over ``arms``, shape ``(n_arms,)``: ``1 / K`` each for
    ``uniform``, else 1 for the one named arm.
    """
    k = len(arms)
    return np.full(k, 1.0 / k) if baseline == UNIFORM else np.eye(k)[list(arms).index(baseline)]


def under_holdout(target: npt.NDArray[np.float64], served: npt.NDArray[np.float64],
                  arms: Sequence[str], entries: Sequence[JsonObject | None]
                  ) -> npt.NDArray[np.float64]:
    """The probabilities ``target`` would be served with under each decision's holdout:
    ``s_i * baseline_i + (1 - s_i) * target_i``, what the service logs for its own policy
    (:meth:`Holdout.mixture`), so that another policy is compared with the live one as it
    would be served once promoted; rows without a holdout entry unchanged.

    Parameters
    ----------
    target : ndarray of float64, shape ``(n, K)``
        A policy's probabilities at ``n`` decisions, columns ``arms``.
    served : ndarray of float64, shape ``(n, K)``
        The decisions' logged pmf: a ``uniform`` baseline covers the arms it gives a
        probability (each at least ``share / K`` under the holdout), an arm of another arm set
        logs 0.
    arms : sequence of str
        The columns' arm names (a one-arm baseline names one of them).
    entries : sequence of dict or None, length ``n``
        Each decision's ``holdout`` entry (its policy JSON's), None without one.
    """
    target = np.asarray(target, dtype=np.float64)
    shares = np.array([0.0 if not e else float(e["share"]) for e in entries])
    if not shares.any():
        return target
    support = (np.asarray(served) > 0).astype(np.float64)
    base = support / np.maximum(support.sum(axis=1, keepdims=True), 1.0)  # uniform baselines
    for i, entry in enumerate(entries):
        if entry and entry["baseline"] != UNIFORM:  # rare: one arm, the others 0
            base[i] = baseline_pmf(str(entry["baseline"]), arms)
    return shares[:, None] * base + (1.0 - shares[:, None]) * target


class HoldoutChoice(NamedTuple):
    """One request's draw with a holdout (:meth:`Holdout.choose`).

    Attributes
    ----------
    arm : int
        The arm's position.
    propensity : float
        Its probability under the mixture.
    pmf_json : str
        The mixture by arm as JSON: the decision's ``pmf``.
    entry : dict
        The ``holdout`` entry (share, baseline, draw, held_out).
    policy_json : str
        The decision's ``policy``: the policy's description with ``entry`` added.
    """

    arm: int
    propensity: float
    pmf_json: str
    entry: JsonObject
    policy_json: str


class Holdout:
    """The baseline serving a ``share`` of the policy's requests, and the mixture logged.

    Parameters
    ----------
    share : float
        Probability that a request is held out, within ``[0, 1)``.
    baseline : str
        ``uniform``, or the name of the one arm that serves the held-out requests.
    arms : sequence of str
        The policy's arms, in policy order.

    Raises
    ------
    ValueError
        As :func:`check_holdout`.
    """

    def __init__(self, share: float, baseline: str, arms: Sequence[str]) -> None:
        check_holdout(share, baseline, arms)
        self.share = float(share)
        self.baseline = baseline
        self.arms = list(arms)
        self.baseline_pmf = baseline_pmf(baseline, self.arms)
        self.baseline_cdf = np.cumsum(self.baseline_pmf)
        self.baseline_cdf[-1] = 1.0
        # The mixture's probabilities by arm as JSON, per policy pmf JSON (a context-free
        # policy's is one string per snapshot; a contextual one's one per context): bounded.
        self._mixtures: dict[str, tuple[npt.NDArray[np.float64], str]] = {}
        # The entry's constant part as JSON, serialised once (a request adds its draw).
        self._entry_head = json.dumps({"share": self.share, "baseline": baseline})[:-1]

    def describe(self, draw: float) -> JsonObject:
        """The ``holdout`` entry of a decision's policy JSON for the random ``draw``."""
        return {"share": self.share, "baseline": self.baseline, "draw": draw,
                "held_out": draw < self.share}

    def mixture(self, pmf: npt.NDArray[np.float64]) -> npt.NDArray[np.float64]:
        """``share * baseline + (1 - share) * pmf``: the probabilities an arm is drawn with,
        shape ``(n_arms,)``.
        """
        return self.share * self.baseline_pmf + (1.0 - self.share) * np.asarray(pmf)

    def choose(self, pmf: npt.NDArray[np.float64], cdf: npt.NDArray[np.float64],
               pmf_json: str, rng: np.random.Generator, policy_json: str = "{}"
               ) -> HoldoutChoice:
        """Draw one request's arm with the holdout.

        Parameters
        ----------
        pmf, cdf : ndarray of float64, shape ``(n_arms,)``
            The policy's served probabilities and their cumulative sums (last entry 1).
        pmf_json : str
            ``pmf`` by arm as JSON (the key of the cached mixture).
        rng : numpy.random.Generator
            The service's generator: one draw decides the holdout, one the arm.
        policy_json : str, default "{}"
            The policy's description as every decision logs it (a JSON object), to which the
            choice's ``holdout`` entry is added.
        """
        draw = float(rng.random())
        held = draw < self.share
        u = rng.random()
        choice = draw_arm(self.baseline_cdf if held else cdf, u)
        cached = self._mixtures.get(pmf_json)
        if cached is None:
            q = self.mixture(pmf)
            cached = (q, json.dumps(dict(zip(self.arms, q.tolist(), strict=True))))
            if len(self._mixtures) >= PMF_CACHE_SIZE:  # as the policy's own cache
                self._mixtures.clear()  # bounded: the hot contexts come back at once
            self._mixtures[pmf_json] = cached
        q, q_json = cached
        entry = self.describe(draw)
        # repr of a float in [0, 1) is valid JSON: cheaper than json.dumps of the whole entry.
        logged = (f'{policy_json[:-1]}{", " if len(policy_json) > 2 else ""}"holdout": '
                  f'{self._entry_head}, "draw": {draw!r}, '
                  f'"held_out": {"true" if held else "false"}}}}}')
        return HoldoutChoice(choice, float(q[choice]), q_json, entry, logged)


def holdout_problems(event_id: str, policy: JsonObject | None, pmf: JsonObject | None,
                     arm: str, propensity: float) -> list[str]:
    """What is wrong with a logged decision's holdout entry (``rebuild-state``): its
    ``held_out`` flag against its draw and share, its pmf against the mixture of the baseline
    and the policy's part, its propensity against its pmf. Empty: right, or no holdout.

    Parameters
    ----------
    event_id : str
        The decision (named in the lines).
    policy, pmf : dict or None
        Its logged policy JSON and pmf by arm.
    arm : str
        The arm it served.
    propensity : float
        Its logged propensity.
    """
    entry = (parse(policy) or {}).get("holdout")
    if not entry:
        return []
    problems = []
    if bool(entry["held_out"]) != (float(entry["draw"]) < float(entry["share"])):
        problems.append(f"decision {event_id}: holdout held_out={entry['held_out']} but its "
                        f"draw {entry['draw']} against share {entry['share']} says otherwise")
    pmf = parse(pmf) or {}
    arms = list(pmf)
    if arms:
        base = (baseline_pmf(str(entry["baseline"]), arms)
                if entry["baseline"] == UNIFORM or entry["baseline"] in arms
                else np.zeros(len(arms)))  # a baseline the pmf does not name: no mixture
        q = np.array([float(pmf[a]) for a in arms])
        # The policy's part, (q - s b) / (1 - s), must be a distribution.
        part = (q - float(entry["share"]) * base) / (1.0 - float(entry["share"]))
        if part.min() < -1e-9 or abs(part.sum() - 1.0) > 1e-9:
            problems.append(f"decision {event_id}: pmf {pmf} is not the mixture of the "
                            f"{entry['baseline']} baseline at share {entry['share']} and a "
                            "policy")
        if abs(float(pmf.get(arm, -1.0)) - propensity) > 1e-12:
            problems.append(f"decision {event_id}: propensity {propensity} is not its pmf's "
                            f"{pmf.get(arm)} for arm {arm}")
    return problems


def check_decisions(rows: Iterable[tuple[str, str, float, JsonObject | None,
                                         JsonObject | None, float | None]],
                    max_lines: int = 20) -> tuple[list[str], bool]:
    """``rebuild-state``'s holdout lines: :func:`holdout_problems` of every decision of
    ``rows`` (``Store.holdout_rows``: event_id, arm, propensity, pmf, policy, reward).
    At most ``max_lines`` mismatch lines are kept beyond a count.

    Returns
    -------
    (lines, match)
        No line when no decision was logged with a holdout.
    """
    problems: list[str] = []
    n_holdout = n_held = 0
    for event_id, arm, propensity, pmf, policy, _ in rows:
        entry = (parse(policy) or {}).get("holdout")
        if not entry:
            continue
        n_holdout += 1
        n_held += bool(entry["held_out"])
        problems.extend(holdout_problems(event_id, policy, pmf, arm, propensity))
    if not n_holdout:
        return [], True
    lines = [f"holdout: {n_held} of {n_holdout} decisions logged with a holdout were held "
             f"out; each one's flag against its draw, its pmf against the mixture, its "
             f"propensity against its pmf: {'match yes' if not problems else 'NO'}"]
    lines += [f"  mismatch: {p}" for p in problems[:max_lines]]
    if len(problems) > max_lines:
        lines.append(f"  ... and {len(problems) - max_lines} more")
    return lines, not problems


# ---------------------------------------------------------------------------- the report
@dataclass(frozen=True)
class GroupRate:
    """The decided reward rate of one group of decisions.

    Attributes
    ----------
    decisions : int
        Decisions of the group (decided or not).
    decided : int
        Those with a decided outcome: the rate's sample.
    open : int
        Those still undecided (their reward window open, or closed and not settled yet).
    rate, low, high : float
        Mean reward of the decided ones and its 95% percentile bootstrap interval
        (:func:`bandits.ope.mean_interval`; rate NaN: none decided; interval NaN: fewer than
        two).
    arms : dict of str to int
        Decisions per arm.
    """

    decisions: int
    decided: int
    open: int
    rate: float
    low: float
    high: float
    arms: dict[str, int] = field(default_factory=dict)


@dataclass(frozen=True)
class HoldoutReport:
    """Policy-served against held-out decisions (:func:`holdout_report`).

    Attributes
    ----------
    policy, holdout : GroupRate
    difference, low, high : float
        ``policy.rate - holdout.rate`` and its 95% percentile bootstrap interval (the two
        groups resampled independently; NaN when a group has no decided outcome).
    baselines : list of str
        The baseline of the configuration compared (``uniform`` or an arm), which serves the
        held-out decisions, had it served any yet; empty when no decision had a holdout.
    without_holdout : int
        Policy decisions logged while no holdout ran (left out: another period).
    n_bootstrap, seed : int
    configuration : str
        The holdout configuration compared (share, baseline, policy): the latest decision's.
    other_configurations : list of (str, int)
        Every other configuration the log holds, with its decisions, left out: decisions of
        two configurations (a share or baseline changed at a restart, a promoted policy) are
        no one comparison, and the two groups draw from the periods in other proportions, so
        a pooled difference mixes them (it did: +0.013 pooled over two periods of +0.067 and
        -0.067, found by attack).
    """

    policy: GroupRate
    holdout: GroupRate
    difference: float
    low: float
    high: float
    baselines: list[str]
    without_holdout: int
    n_bootstrap: int
    seed: int
    configuration: str = ""
    other_configurations: list[tuple[str, int]] = field(default_factory=list)

    def to_dict(self) -> JsonObject:
        """Plain JSON data of the report."""
        return {"policy": vars(self.policy), "holdout": vars(self.holdout),
                "difference": self.difference, "low": self.low, "high": self.high,
                "baselines": self.baselines, "without_holdout": self.without_holdout,
                "n_bootstrap": self.n_bootstrap, "seed": self.seed,
                "configuration": self.configuration,
                "other_configurations": [list(c) for c in self.other_configurations]}


def configuration_of(policy: JsonObject, entry: JsonObject) -> str:
    """A decision's holdout configuration as the report names it: the holdout's share and
    baseline and the policy (name, parameters, exploration floor) that served the rest.
    """
    served = {k: v for k, v in policy.items() if k != "holdout"}
    return (f"share {entry['share']:g}, baseline {entry['baseline']}, policy "
            f"{json.dumps(served, sort_keys=True)}")


def _group(rows: list[tuple[str, float | None]], n_bootstrap: int,
           rng: np.random.Generator) -> tuple[GroupRate, npt.NDArray[np.float64]]:
    """The :class:`GroupRate` of ``rows`` (arm, reward or None) and its decided rewards."""
    rewards = np.array([r for _, r in rows if r is not None], dtype=np.float64)
    arms: dict[str, int] = {}
    for arm, _ in rows:
        arms[arm] = arms.get(arm, 0) + 1
    low, high = mean_interval(rewards, n_bootstrap, rng)
    rate = float(rewards.mean()) if rewards.size else float("nan")
    return GroupRate(len(rows), int(rewards.size), len(rows) - int(rewards.size), rate, low,
                     high, dict(sorted(arms.items()))), rewards


def holdout_report(rows: Iterable[tuple[str, JsonObject | None, float | None]], *,
                   n_bootstrap: int = DEFAULT_N_BOOTSTRAP, seed: int = 0) -> HoldoutReport:
    """Compare the decisions the policy served with the held-out ones.

    Parameters
    ----------
    rows : iterable of (arm, policy, reward)
        Every policy decision (not cold-start, not multileaved): its arm, its logged policy
        JSON and its decided reward (None: not decided yet). Decisions whose policy JSON has
        no ``holdout`` entry were logged while no holdout ran and are only counted.
    n_bootstrap : int, default 1000
        Bootstrap resamples of each group's decided decisions: 0 (the rates without
        intervals) or ``bandits.ope.MIN_BOOTSTRAP`` to ``MAX_BOOTSTRAP``.
    seed : int, default 0
        Seed of the bootstrap.

    Raises
    ------
    ValueError
        ``n_bootstrap`` neither 0 nor within ``bandits.ope.MIN_BOOTSTRAP`` to
        ``MAX_BOOTSTRAP`` (``errors.check_bootstrap``).
    """
    n_bootstrap = check_bootstrap(n_bootstrap)
    # Per configuration, in log order: (arm, held out?, reward)
    by_configuration: dict[str, list[tuple[str, bool, float | None]]] = {}
    without = 0
    latest, baseline = "", ""
    for arm, policy, reward in rows:
        # A JSON column may read back as text (a log written by other tools): parse reads both.
        parsed = parse(policy) or {}
        entry = parsed.get("holdout")
        if not entry:
            without += 1
            continue
        latest, baseline = configuration_of(parsed, entry), str(entry["baseline"])
        by_configuration.setdefault(latest, []).append((arm, bool(entry["held_out"]), reward))
    compared = by_configuration.pop(latest, [])
    served = [(arm, reward) for arm, held_out, reward in compared if not held_out]
    held = [(arm, reward) for arm, held_out, reward in compared if held_out]
    # The configuration's baseline, whether or not it served a request yet: the label of its
    # group (a group with no decisions read "holdout (-)": found by a README check).
    baselines = {baseline} if compared else set()
    rng = np.random.default_rng(seed)
    policy_rate, a = _group(served, n_bootstrap, rng)
    holdout_rate, b = _group(held, n_bootstrap, rng)
    low = high = float("nan")  # one outcome in a group says nothing of its spread (review)
    if n_bootstrap and a.size >= MIN_OBSERVATIONS and b.size >= MIN_OBSERVATIONS:
        low = high = float(a.mean() - b.mean())
        if np.ptp(a) > 0 or np.ptp(b) > 0:
            ci = stats.bootstrap((a, b), _mean_difference, n_resamples=n_bootstrap,
                                 method="percentile", vectorized=True,
                                 random_state=rng).confidence_interval
            low, high = float(ci.low), float(ci.high)
    return HoldoutReport(policy_rate, holdout_rate, policy_rate.rate - holdout_rate.rate, low,
                         high, sorted(baselines), without, n_bootstrap, seed, latest,
                         [(c, len(r)) for c, r in by_configuration.items()])


def _mean_difference(a: npt.NDArray[np.float64], b: npt.NDArray[np.float64],
                     axis: int = -1) -> npt.NDArray[np.float64]:
    """``mean(a) - mean(b)`` along ``axis`` (scipy's vectorised bootstrap statistic)."""
    return np.asarray(a.mean(axis=axis) - b.mean(axis=axis))


def format_report(report: HoldoutReport) -> str:
    """The report as the CLI prints it: one line per group, the difference, the notes."""
    lines = [f"{'served by':<22}{'decisions':>10}{'decided':>9}{'open':>7}{'reward rate':>13}"
             f"  95% interval"]
    for name, g in (("policy", report.policy),
                    (f"holdout ({', '.join(report.baselines) or '-'})", report.holdout)):
        # A group with no decided reward has no rate: said so, not printed as nan (found by
        # the README's audit: right after serving, before any window closed).
        # One decided reward has a rate and no interval (review: "[nan, nan]").
        # A group with no decision at all is not waiting for a reward (found by attack: "none
        # decided yet" for a holdout group that had served nothing).
        interval = "-" if math.isnan(g.low) else f"[{g.low:.4f}, {g.high:.4f}]"
        rate = (f"{g.rate:>13.4f}  {interval}" if g.decided
                else f"{'-':>13}  {'none decided yet' if g.decisions else 'no decisions'}")
        lines.append(f"{name:<22}{g.decisions:>10}{g.decided:>9}{g.open:>7}{rate}")
    empty = [name for name, g in (("policy", report.policy), ("holdout", report.holdout))
             if not g.decisions]
    if empty:
        lines.append(f"difference (policy - holdout): none (the {' and the '.join(empty)} "
                     f"group{'s have' if len(empty) == 2 else ' has'} no decisions)")
    elif report.policy.decided and report.holdout.decided:
        interval = ("-" if not report.n_bootstrap else
                    "- (a group has one decided reward)" if math.isnan(report.low) else
                    f"[{report.low:+.4f}, {report.high:+.4f}] ({report.n_bootstrap} bootstrap "
                    f"resamples per group, seed {report.seed})")
        lines.append(f"difference (policy - holdout): {report.difference:+.4f}  95% interval "
                     f"{interval}")
    else:
        lines.append("difference (policy - holdout): none (a group has no decided reward yet)")
    if not report.n_bootstrap:
        lines.append(f"note: {NO_RESAMPLES}")
    n_open = report.policy.open + report.holdout.open
    if n_open:
        lines.append(f"note: {n_open} decision(s) have no decided reward yet (window open or "
                     "not settled): left out of the rates until they are")
    if report.without_holdout:
        lines.append(f"note: {report.without_holdout} policy decision(s) were logged while no "
                     "holdout ran: left out")
    if report.other_configurations:
        lines.append(f"compared: the latest holdout configuration ({report.configuration})")
        for configuration, n in report.other_configurations:
            lines.append(f"note: {n} decision(s) of another configuration ({configuration}) "
                         "left out: a difference across configurations mixes periods")
    return "\n".join(lines)


__all__ = ["UNIFORM", "GroupRate", "Holdout", "HoldoutChoice", "HoldoutReport", "baseline_pmf",
           "check_decisions", "check_holdout", "format_report", "holdout_problems",
           "holdout_report", "under_holdout"]
