"""Multileaved slates in the service (``slate_mode = "multileave"``): one rule in one place.

A multileaved decision shows one slate mixed by team draft (:mod:`bandits.multileave`) from the
rankings of ``m`` arms, and a rewarded event on an item credits the arm that contributed it. The
log keeps one row per decision as for a single-arm slate; what differs is

* ``decisions.multileave`` (JSON; NULL for a single-arm decision): ``arms`` (the set, in
  policy order), ``order`` (the index into ``arms`` of every position: the draft order),
  ``teams`` (the arm of every position of ``slate``), ``rankings`` (every arm's top ``k``
  movie ids for the user, what the draft took from), ``set_probability`` (``P(S)`` under the
  policy: the decision's ``propensity``), ``order_probability`` (``P(order | S)``) and
  ``inclusion`` (``P(arm in S)`` by arm). ``fill_slate(rankings, order)`` reproduces the slate.
  ``decisions.arm`` is the set's name (the arms joined by ``+``) and ``pmf`` the probability of
  every set by name.
* ``outcomes``: one row per (decision, arm) instead of one per decision. A single-arm decision
  has one credited arm, its own; a multileaved one has the ``m`` arms of its set. Each
  (decision, arm) gets one reward, decided once in the store (its key), by the rule book's
  aggregation over the feedback on that arm's items (:func:`credited_feedback`), or the default
  reward when the window closes.

The policy is a Beta policy's per-arm statistics (``beta_posterior``: Thompson Sampling or its
discounted or sliding-window variant, which decay or window them per outcome), the same fold
of the outcomes as for single-arm slates (every (decision, arm) outcome is one Bernoulli
observation of its arm), so
the state after a restart, on every worker and in ``rebuild-state`` is the fold of the log for
mixed logs too. A request multileaves the ``m`` arms with the largest of one Beta sample each
(:class:`bandits.multileave.MultileaveThompsonSampling` on those statistics).

``recbandits credit`` (:func:`credit_report`) compares the arms of such a log.
"""

from __future__ import annotations

import json
import math
from collections import Counter, defaultdict
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Literal, get_args

import numpy as np
import numpy.typing as npt
import pandas as pd

from bandits.multileave import MultileaveThompsonSampling, draft_order, fill_slate
from bandits.ope import DEFAULT_N_BOOTSTRAP, NO_RESAMPLES, mean_interval
from serving.errors import check_bootstrap
from serving.rules import Feedback, RuleBook

if TYPE_CHECKING:  # only for annotations: the store imports this module, and policy the store
    from serving.policy import PolicySnapshot
    from serving.store.types import JsonObject, Row

#: ``slate_mode``'s values (the type of the setting; the CLI's choices by test).
SlateMode = Literal["single", "multileave"]
SLATE_MODES: tuple[str, ...] = get_args(SlateMode)
#: Joins the arms of a multileaved set into its name (``decisions.arm``, the ``pmf``'s keys).
SET_SEPARATOR = "+"


def parse(multileave: object) -> JsonObject | None:
    """A decision's ``multileave`` column as a dict (``multileave``: JSON text, a dict or
    None; None for a single-arm decision).
    """
    if multileave is None:
        return None
    if isinstance(multileave, str | bytes):
        multileave = json.loads(multileave)
    return multileave if isinstance(multileave, dict) else None


def decision_arms(arm: str, multileave: object) -> tuple[str, ...]:
    """The arms a decision credits (each gets one outcome): the multileaved set of its
    ``multileave`` column, else its own ``arm``.
    """
    parsed = parse(multileave)
    return (arm,) if parsed is None else tuple(parsed["arms"])


def decision_pulls(decision_rows: Iterable[Row]) -> Counter[str]:
    """Pulls per arm of ``decision_rows`` as the service writes them: one per credited arm of
    every policy (not cold-start) decision. Every backend counts the pulls it adds with this.
    """
    pulls: Counter[str] = Counter()
    for row in decision_rows:
        if not row["cold_start"]:
            pulls.update(decision_arms(row["arm"], row.get("multileave")))
    return pulls


def item_arm(decision: Row, movie_id: int) -> str:
    """The arm credited with an event on ``movie_id`` of ``decision`` (a decision row as the
    store reads it, its ``slate`` holding the movie): the decision's arm, or for a multileaved
    decision the arm that contributed the movie's position.
    """
    parsed = parse(decision.get("multileave"))
    if parsed is None:
        return str(decision["arm"])
    return str(parsed["teams"][list(decision["slate"]).index(movie_id)])


def credited_feedback(arms: Sequence[str], multileaved: bool,
                      feedback: Iterable[tuple[str | None, Feedback]]
                      ) -> dict[str, list[Feedback]]:
    """The feedback each credited arm of one decision is rewarded from, by arm.

    Parameters
    ----------
    arms : sequence of str
        :func:`decision_arms` of the decision.
    multileaved : bool
        Whether the decision is multileaved: then an arm counts only the feedback on its own
        items (the feedback row's ``arm``); a single-arm decision's arm counts all of it.
    feedback : iterable of (arm, Feedback)
        The decision's feedback with the arm each row was attributed to.
    """
    out: dict[str, list[Feedback]] = {arm: [] for arm in arms}
    for arm, f in feedback:
        if not multileaved:
            out[arms[0]].append(f)
        elif arm in out:
            out[arm].append(f)
    return out


def set_name(arms: Sequence[str]) -> str:
    """The name of the multileaved set of ``arms`` (``decisions.arm``)."""
    return SET_SEPARATOR.join(arms)


def policy_arms(pmf_keys: Sequence[str]) -> list[str]:
    """The arms of a logged pmf's keys in the order of the policy's statistics: the keys of a
    single-arm decision's pmf, or each arm's first appearance in a multileaved one's set names
    (:func:`set_name` of the sets in the policy's order, the combinations of the arms in
    theirs, so every arm first appears after the arms before it).
    """
    return list(dict.fromkeys(arm for key in pmf_keys for arm in key.split(SET_SEPARATOR)))


@dataclass(frozen=True)
class MultileaveView:
    """The multileaving policy at one :class:`~serving.policy.PolicySnapshot` (built once per
    snapshot: the set probabilities cost a quadrature).

    Attributes
    ----------
    snapshot : PolicySnapshot
    policy : MultileaveThompsonSampling
        With the snapshot's Beta statistics (``slate_size = m``: the slate size is the request's).
    set_probabilities : dict of tuple of int to float
        ``P(S)`` of every set of arm positions (ascending).
    inclusion : dict of str to float
        ``P(arm in S)``.
    pmf_json : str
        ``P(S)`` by set name, as JSON (the decisions' ``pmf``).
    """

    snapshot: PolicySnapshot
    policy: MultileaveThompsonSampling
    set_probabilities: dict[tuple[int, ...], float]
    inclusion: dict[str, float]
    pmf_json: str


def multileave_view(snapshot: PolicySnapshot, m: int, propensity_grid: int) -> MultileaveView:
    """The multileaving policy on ``snapshot``'s Beta statistics, choosing ``m``
    arms, its set probabilities by quadrature on ``propensity_grid`` intervals.

    Raises
    ------
    ValueError
        The snapshot's policy keeps no Beta statistics (settings refuse such a policy first).
    """
    served = snapshot.policy
    if not served.beta_posterior:
        raise ValueError(f"multileaving needs a Beta policy, got {type(served).__name__}")
    state = served.state_.stats
    arms = list(served.arms)
    policy = MultileaveThompsonSampling(
        arms, m=m, slate_size=m, prior_alpha=list(map(float, served.arm_params_["prior_alpha"])),
        prior_beta=list(map(float, served.arm_params_["prior_beta"])),
        propensity_grid=propensity_grid, random_state=0)
    policy.state_.successes[0] = np.asarray(state["successes"][0], dtype=np.float64)
    policy.state_.failures[0] = np.asarray(state["failures"][0], dtype=np.float64)
    probs = policy.set_probabilities()
    sets = [tuple(int(a) for a in s) for s in policy.sets]
    inclusion = policy.inclusion_probabilities()
    return MultileaveView(
        snapshot, policy, dict(zip(sets, probs.tolist(), strict=True)),
        dict(zip(arms, inclusion.tolist(), strict=True)),
        json.dumps({set_name([arms[a] for a in s]): p
                    for s, p in zip(sets, probs.tolist(), strict=True)}))


@dataclass(frozen=True)
class MultileaveChoice:
    """One request's multileaving: the set and the slate's positions.

    Attributes
    ----------
    arms : list of int
        The set's arm positions, ascending (``m``).
    order : ndarray of int64, shape (k,)
        Index into ``arms`` of every position (the draft order).
    """

    arms: list[int]
    order: npt.NDArray[np.int64]


def choose(view: MultileaveView, k: int, rng: np.random.Generator) -> MultileaveChoice:
    """Draw the set (the ``m`` largest of one Beta sample per arm of ``view``'s policy) and
    the draft order of a slate of ``k`` (every arm of the set drafts once per round, in a
    random order), from ``rng``.
    """
    policy = view.policy
    chosen = policy.select_batch(policy.state_, rng).arms[0]
    order = draft_order(1, policy.m, k, rng)[0]
    return MultileaveChoice([int(a) for a in chosen], order)


def draft(rankings: Sequence[npt.NDArray[np.intp]], order: npt.NDArray[np.int64], k: int
          ) -> tuple[npt.NDArray[np.int64], npt.NDArray[np.int64]]:
    """The slate of item indices mixed from ``rankings`` (one top-``k`` list per arm of the
    set, best first) by ``order``, and the index of the contributing arm of every position;
    positions no list could fill are dropped.
    """
    lists = np.full((1, len(rankings), k), -1, dtype=np.int64)
    for j, ranked in enumerate(rankings):
        lists[0, j, :len(ranked)] = ranked[:k]
    items, _ = fill_slate(lists, order[None, :])
    shown = items[0] >= 0
    return items[0][shown], order[shown]


# ---------------------------------------------------------------------------- credit report
@dataclass
class CreditReport:
    """The arms of a multileaved log compared (``recbandits credit``).

    Attributes
    ----------
    arms : pandas.DataFrame
        One row per arm: ``impressions`` (multileaved slates it contributed to),
        ``decided`` (of those, with a decided outcome), ``credited`` (credited reward sum),
        ``rate`` (``credited / decided``) and its 95% bootstrap interval ``low``, ``high``
        (decisions resampled; NaN with fewer than two decided slates).
    wins : pandas.DataFrame
        One row per ordered pair of arms multileaved together: ``comparisons`` (slates showing
        both whose reward window closed), ``wins`` (the first arm's team got more clicks on
        the slate: :func:`slate_clicks`), ``losses``, ``ties`` (as many) and ``win_rate``
        (``wins / (wins + losses)``; NaN without a decisive comparison).
    n_decisions : int
        Multileaved decisions in the log.
    n_bootstrap : int
        The bootstrap resamples of the intervals (0: none).
    """

    arms: pd.DataFrame
    wins: pd.DataFrame
    n_decisions: int
    n_bootstrap: int = DEFAULT_N_BOOTSTRAP


def slate_clicks(closed: Iterable[tuple[str, float, int]],
                 feedback: Iterable[tuple[str, str | None, int, Feedback]], rules: RuleBook
                 ) -> dict[str, dict[str, float]]:
    """Each team's clicked items on every multileaved slate whose reward window closed: the
    team-draft comparison's counts (Radlinski, Kurup & Joachims 2008: the team with more
    clicked items wins the slate, equal counts tie).

    An item of a team (the arm its feedback rows credited) is clicked when a feedback on it
    counts for a reward under ``rules`` (:meth:`~serving.rules.RuleBook.rewarded`: in the
    window, logged before it closed), worth its largest such reward: 1 for a click, like or
    purchase, a rating its scaled stars. So with 0/1 rewards a team's count is its clicked
    items, each once however many events it had (review: a click, a like and a purchase on
    one item outweighed single clicks on two, where the published rule and
    :func:`bandits.multileave.credit` count one click an item). Unlike a (decision, arm)
    outcome, which the first rewarded event decides, every clicked item counts (a team with
    two beats one with one).

    Parameters
    ----------
    closed : iterable of (event_id, reward_deadline, settled_seq)
        The slates whose window closed.
    feedback : iterable of (event_id, arm, movie_id, Feedback)
        Their feedback with the arm each row credited and the item it was on.
    rules : RuleBook

    Returns
    -------
    dict of str to dict of str to float
        By slate, the clicked items of each team that has any.
    """
    by_event: dict[str, list[tuple[str | None, int, Feedback]]] = defaultdict(list)
    for event_id, arm, movie_id, f in feedback:
        by_event[event_id].append((arm, movie_id, f))
    clicks: dict[str, dict[str, float]] = {}
    for event_id, deadline, settled_seq in closed:
        items: dict[tuple[str, int], float] = {}
        for arm, movie_id, f in by_event.get(event_id, []):
            for _, reward in rules.rewarded([f], deadline, settled_seq):
                if arm is not None and reward > 0:  # (a multileaved one always names one)
                    items[arm, movie_id] = max(items.get((arm, movie_id), 0.0), reward)
        team: dict[str, float] = defaultdict(float)
        for (arm, _), reward in items.items():
            team[arm] += reward
        clicks[event_id] = dict(team)
    return clicks


def credit_report(decisions: Iterable[tuple[str, object]],
                  outcomes: Iterable[tuple[str, str, float]],
                  clicks: Mapping[str, Mapping[str, float]], arms: Sequence[str], *,
                  n_bootstrap: int = DEFAULT_N_BOOTSTRAP, seed: int = 0) -> CreditReport:
    """Compare the arms of multileaved decisions: each arm's credited rewards, and every pair's
    team-draft wins by the clicks on each team's items.

    Parameters
    ----------
    decisions : iterable of (event_id, multileave)
        The multileaved decisions (their ``multileave`` column).
    outcomes : iterable of (event_id, arm, reward)
        The decided (decision, arm) outcomes of those decisions.
    clicks : mapping of str to mapping of str to float
        By decision whose reward window closed, the clicks of each team
        (:func:`slate_clicks`; a team shown without any: 0).
    arms : sequence of str
        Arm names, the report's order of those the log multileaved (others it multileaved are
        appended by name).
    n_bootstrap : int, default 1000
        Bootstrap resamples of the decisions: 0 (the rates without intervals) or
        ``bandits.ope.MIN_BOOTSTRAP`` to ``MAX_BOOTSTRAP``.
    seed : int, default 0

    Raises
    ------
    ValueError
        ``n_bootstrap`` neither 0 nor within ``bandits.ope.MIN_BOOTSTRAP`` to
        ``MAX_BOOTSTRAP`` (``errors.check_bootstrap``).
    """
    n_bootstrap = check_bootstrap(n_bootstrap)
    sets = {e: tuple(parse(m)["arms"]) for e, m in decisions}  # type: ignore[index]
    seen = {a for s in sets.values() for a in s}
    names = [a for a in arms if a in seen] + sorted(seen - set(arms))
    column = {a: j for j, a in enumerate(names)}
    row = {e: i for i, e in enumerate(sets)}
    n, K = len(sets), len(names)
    shown = np.zeros((n, K), dtype=bool)
    for e, s in sets.items():
        shown[row[e], [column[a] for a in s]] = True
    reward = np.full((n, K), np.nan)
    for e, a, r in outcomes:
        if e in row and a in column:
            reward[row[e], column[a]] = r
    # NaN where the slate's window is open or the arm not shown on it.
    team_clicks = np.full((n, K), np.nan)
    for e, by_arm in clicks.items():
        if e in row:
            i = row[e]
            team_clicks[i, shown[i]] = 0.0
            for a, c in by_arm.items():
                if a in column and shown[i, column[a]]:
                    team_clicks[i, column[a]] = c
    arm_rows = _arm_rows(names, shown, reward, n_bootstrap, np.random.default_rng(seed))
    return CreditReport(pd.DataFrame(arm_rows), _pairwise(names, team_clicks), n, n_bootstrap)


def _arm_rows(names: Sequence[str], shown: npt.NDArray[np.bool_],
              reward: npt.NDArray[np.float64], n_bootstrap: int, rng: np.random.Generator
              ) -> list[JsonObject]:
    """Per arm: impressions, decided, credited, rate and its percentile bootstrap interval
    (decisions resampled; ``reward`` (n, K) is NaN where undecided or not shown).
    """
    decided = ~np.isnan(reward)
    credited = np.where(decided, reward, 0.0)
    rows = []
    for j, arm in enumerate(names):
        d = decided[:, j]
        values = credited[d, j]
        low, high = mean_interval(values, n_bootstrap, rng)
        rows.append({"arm": arm, "impressions": int(shown[:, j].sum()), "decided": int(d.sum()),
                     "credited": float(values.sum()),
                     "rate": float(values.mean()) if values.size else float("nan"),
                     "low": low, "high": high})
    return rows


def _pairwise(names: Sequence[str], clicks: npt.NDArray[np.float64]) -> pd.DataFrame:
    """Per ordered pair of arms shown on the same closed slates: the team-draft comparisons
    (``clicks`` (n, K): each team's clicks, NaN where the window is open or the arm not shown).
    """
    closed = ~np.isnan(clicks)
    pairs = []
    for a in range(len(names)):
        for b in range(len(names)):
            both = closed[:, a] & closed[:, b]
            if a == b or not both.any():
                continue
            diff = clicks[both, a] - clicks[both, b]
            wins, losses = int((diff > 0).sum()), int((diff < 0).sum())
            pairs.append({"arm": names[a], "versus": names[b], "comparisons": int(both.sum()),
                          "wins": wins, "losses": losses, "ties": int(both.sum()) - wins - losses,
                          "win_rate": wins / (wins + losses) if wins + losses else float("nan")})
    return pd.DataFrame(pairs, columns=["arm", "versus", "comparisons", "wins", "losses", "ties",
                                        "win_rate"])



def format_credit(report: CreditReport) -> str:
    """The ``report`` as text (``recbandits credit``'s output)."""
    lines = [f"{report.n_decisions} multileaved decisions", "",
             f"{'arm':<14}{'impressions':>12}{'decided':>9}{'credited':>10}{'rate':>8}"
             f"{'95% interval':>18}"]
    for r in report.arms.to_dict("records"):
        interval = "-" if math.isnan(r["low"]) else f"[{r['low']:.3f}, {r['high']:.3f}]"
        rate = "-" if math.isnan(r["rate"]) else f"{r['rate']:.3f}"
        lines.append(f"{r['arm']:<14}{r['impressions']:>12}{r['decided']:>9}"
                     f"{r['credited']:>10g}{rate:>8}{interval:>18}")
    if not report.n_bootstrap:
        lines += ["", f"note: {NO_RESAMPLES}"]
    undecided = int((report.arms["impressions"] - report.arms["decided"]).sum())
    if undecided:
        # Under "earliest" a credited arm is decided at once, an uncredited one only when the
        # window closes: until then the rates lean towards the credited.
        lines += ["", f"note: {undecided} (decision, arm) outcomes are still open: an arm "
                  "without credit gets the default reward when its decision's window closes, "
                  "so the rates above count the credited ones first"]
    lines += ["", "pairwise (team draft: on each closed slate showing both arms, the team with "
              "more clicks wins):",
              f"{'arm':<14}{'versus':<14}{'slates':>8}{'wins':>7}{'losses':>8}{'ties':>7}"
              f"{'win rate':>10}"]
    for w in report.wins.to_dict("records"):
        rate = "-" if math.isnan(w["win_rate"]) else f"{w['win_rate']:.3f}"
        lines.append(f"{w['arm']:<14}{w['versus']:<14}{w['comparisons']:>8}{w['wins']:>7}"
                     f"{w['losses']:>8}{w['ties']:>7}{rate:>10}")
    if report.wins.empty:  # a header and nothing under it said nothing (found by attack)
        lines.append("(none yet: no slate showing two arms has its reward window closed)")
    return "\n".join(lines)


def group_feedback(rows: Iterable[tuple[str, str | None, Feedback]]
                   ) -> Mapping[str, list[tuple[str | None, Feedback]]]:
    """``(event_id, arm, Feedback)`` rows grouped by decision, in the given order."""
    out: dict[str, list[tuple[str | None, Feedback]]] = defaultdict(list)
    for event_id, arm, f in rows:
        out[event_id].append((arm, f))
    return out


__all__ = ["SLATE_MODES", "CreditReport", "MultileaveChoice", "MultileaveView", "choose",
           "credit_report", "credited_feedback", "decision_arms", "decision_pulls", "draft",
           "format_credit", "item_arm", "multileave_view", "parse", "set_name", "slate_clicks"]
