"""Replaying the log: every derived state of the service recomputed from the raw log.

``rebuild-state`` calls :func:`check_log`: it re-derives each decision's outcome from the
decision and its feedback with the rule book (:meth:`serving.rules.RuleBook.outcome`), the pulls
per arm, the ratings kept for retraining, and the policy (the fold of the outcomes,
:meth:`serving.policy.PolicyModel.replay`), and compares each with what the store holds.

After ``recbandits purge`` the log starts at a **fold snapshot** (:class:`FoldSnapshot`): every
fold starts from the snapshot's state at its log position S instead of the empty state, and
folds only the rows after S (outcomes up to S that a purge kept are not folded twice): the
policy from the snapshot's ``state_dict``, the pulls from those of the purged decisions, the
ratings from the kept rating of each (user, movie) of the purged feedback, into which the
remaining feedback is folded by the rule book's rule (:class:`serving.rules.KeptRating`).
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

from bandits.base import BatchedPolicy
from serving.multileave import credited_feedback, decision_arms, group_feedback
from serving.policy import Outcome, PolicyModel
from serving.rules import Feedback, KeptRating, RuleBook, fold_kept
from serving.store.types import FoldSnapshot, VersionSwitch


@dataclass(frozen=True)
class DecisionRow:
    """The fields of a logged decision that the replay needs."""

    event_id: str
    arm: str
    cold_start: bool
    reward_deadline: float
    settled: bool
    #: A multileaved decision's ``multileave`` column (None: a single-arm decision).
    multileave: Any = None

    @property
    def arms(self) -> tuple[str, ...]:
        """The arms it credits, one outcome each (:func:`serving.multileave.decision_arms`)."""
        return decision_arms(self.arm, self.multileave)


@dataclass(frozen=True)
class FeedbackRow:
    """The fields of a logged feedback that the replay needs."""

    seq: int
    event_id: str | None
    user_id: int
    movie_id: int
    created_at: float
    feedback_type: str
    counted: bool
    rating: float | None
    value: float | None = None
    #: The arm the row was attributed to (a multileaved slate's: the item's contributing arm).
    arm: str | None = None


@dataclass(frozen=True)
class OutcomeRow:
    """A stored outcome: ``feedback_seq`` names the feedback that decided it (None: the window
    closed); ``decided_at``: when it was decided (Unix seconds; None: not known).
    """

    seq: int
    event_id: str
    arm: str
    reward: float
    feedback_seq: int | None
    decided_at: float | None = None


@dataclass
class LogCheck:
    """What :func:`check_log` found.

    Attributes
    ----------
    mismatches : list of str
        One line per disagreement between the store and the replay (empty: they match).
    pulls_stored, pulls_replayed : Counter
        Policy decisions per arm, as stored and as counted from the log.
    rewards : dict of str to (n, sum)
        Outcomes and their reward sum per arm (the fold's input).
    not_folded : Counter
        Outcomes of the log the policy did not fold, by why (:meth:`PolicyModel.fold`).
    pending : int
        Policy decisions (a multileaved one: per credited arm) whose outcome is not decided
        yet.
    policy : BatchedPolicy
        The fold of the outcomes in log order.
    """

    mismatches: list[str] = field(default_factory=list)
    pulls_stored: Counter[str] = field(default_factory=Counter)
    pulls_replayed: Counter[str] = field(default_factory=Counter)
    rewards: dict[str, tuple[int, float]] = field(default_factory=dict)
    not_folded: Counter[str] = field(default_factory=Counter)
    pending: int = 0
    n_outcomes: int = 0
    policy: BatchedPolicy | None = None

    @property
    def match(self) -> bool:
        """Whether every derived state equals its replay."""
        return not self.mismatches


def kept_ratings(feedback: Iterable[FeedbackRow], rules: RuleBook,
                 start: Mapping[tuple[int, int], KeptRating] | None = None
                 ) -> dict[tuple[int, int], KeptRating]:
    """The rating each (user, movie) of ``feedback`` keeps for retraining: the fold that
    ``feedback_ratings`` caches, and that a fold snapshot keeps of the feedback it purges.

    Each row is the rule book's :meth:`~serving.rules.RuleBook.kept_rating` (a type the rule
    book no longer knows keeps the rating it was stored with); the rows of one pair, and
    ``start`` (a fold snapshot's), are folded by :meth:`~serving.rules.KeptRating.then`, so
    the order of ``feedback`` does not matter.
    """
    return fold_kept(dict(start or {}), (
        ((f.user_id, f.movie_id), kept) for f in feedback
        if (kept := rules.kept_rating(f.feedback_type, f.value, f.created_at, f.seq,
                                      f.rating)) is not None))


def _index_feedback(feedback: Iterable[FeedbackRow], rules: RuleBook,
                    fold: FoldSnapshot | None = None) -> tuple[
        Mapping[str, list[tuple[str | None, Feedback]]], set[int],
        dict[tuple[int, int], KeptRating]]:
    """One pass over ``feedback``: what the checks compare against.

    Returns
    -------
    by_event : mapping of event_id to list of (arm, Feedback)
        The feedback attributed to each decision, as the rules read it, with its arm.
    counted_seqs : set of int
        Seqs of the rows marked ``counted`` (they decided an outcome).
    ratings : dict of (user_id, movie_id) to KeptRating
        :func:`kept_ratings` of the feedback, starting from ``fold``'s.
    """
    rows = list(feedback)
    by_event = group_feedback((f.event_id, f.arm, Feedback(f.seq, f.created_at,
                                                           f.feedback_type, f.value))
                              for f in rows if f.event_id is not None)
    counted_seqs = {f.seq for f in rows if f.counted}
    ratings = kept_ratings(rows, rules, None if fold is None else fold.ratings)
    return by_event, counted_seqs, ratings


def _check_undecided(d: DecisionRow, fb: list[Feedback], rules: RuleBook,
                     problems: list[str]) -> int:
    """Check policy decision ``d`` (one credited arm of it) that has no stored outcome; 1 if
    it is rightly pending.

    A problem is appended to ``problems`` when the ``rules`` decide it on its feedback ``fb``,
    or when it was marked settled.
    """
    expected = rules.outcome(fb, d.reward_deadline)
    if expected is not None:
        problems.append(f"decision {d.event_id}: the rules decide reward "
                        f"{expected[0]:g} but no outcome is stored")
    elif d.settled:
        problems.append(f"decision {d.event_id} was settled but has no outcome")
    else:
        return 1
    return 0


def _outcome_problems(d: DecisionRow, o: OutcomeRow, fb: list[Feedback],
                      rules: RuleBook) -> list[str]:
    """Disagreements of decision ``d``'s stored outcome ``o`` with the ``rules`` on ``fb``."""
    problems = []
    # Decided by a feedback at once (earliest), or at the window's close (its own seq).
    at_once = rules.decides_at_once and o.feedback_seq is not None
    settled_seq = None if at_once else o.seq
    expected = rules.outcome(fb, d.reward_deadline, settled_seq)
    decider = None if expected is None or expected[1] is None else expected[1].seq
    if expected is None or expected[0] != o.reward or decider != o.feedback_seq:
        problems.append(f"decision {d.event_id}: stored outcome reward {o.reward:g} "
                        f"(feedback seq {o.feedback_seq}) but the rules give "
                        f"{'none' if expected is None else f'{expected[0]:g}'} "
                        f"(feedback seq {decider})")
    elif (not rules.decides_at_once and o.decided_at is not None
          and o.decided_at < d.reward_deadline):
        # Rules that decide only at the window's close (max) on a log decided at once: the
        # feedback up to the outcome's position agreed, but later feedback in the window would
        # have counted (found by attack: earliest then max said "match: yes").
        problems.append(f"decision {d.event_id}: stored outcome decided at {o.decided_at:.3f}, "
                        f"before its window closed at {d.reward_deadline:.3f}, but the rules "
                        f"({rules.aggregation}) decide only when it closes")
    return problems


def _check_decision(d: DecisionRow, fb: list[tuple[str | None, Feedback]],
                    stored: dict[tuple[str, str], OutcomeRow], rules: RuleBook,
                    report: LogCheck, problems: list[str], deciding: set[int]) -> None:
    """Check policy decision ``d`` against its feedback ``fb``: one outcome per credited arm
    (popped from ``stored``), each the rules' on the feedback that arm is credited with (a
    multileaved decision's arm: its own items'); count its pulls and deciding feedback.
    """
    by_arm = credited_feedback(d.arms, d.multileave is not None, fb)
    for arm in d.arms:
        report.pulls_replayed[arm] += 1
        o = stored.pop((d.event_id, arm), None)
        if o is None:
            report.pending += _check_undecided(d, by_arm[arm], rules, problems)
            continue
        problems.extend(_outcome_problems(d, o, by_arm[arm], rules))
        if o.feedback_seq is not None:
            deciding.add(o.feedback_seq)


def check_log(decisions: Iterable[DecisionRow], feedback: Iterable[FeedbackRow],
              outcomes: Iterable[OutcomeRow], contexts: Mapping[str, Any],
              pulls_stored: Mapping[str, int],
              ratings_stored: Mapping[tuple[int, int], KeptRating],
              rules: RuleBook, model: PolicyModel, *, fold: FoldSnapshot | None = None,
              switches: Sequence[VersionSwitch] = (), max_lines: int = 20) -> LogCheck:
    """Replay the log and compare each derived state with the stored one.

    Parameters
    ----------
    decisions, feedback, outcomes
        The log (any order): the whole log, or what a purge left of it after ``fold``.
    contexts : mapping of event_id to list of float or None
        The context vector each decision logged (for a contextual policy's fold).
    pulls_stored : mapping of str to int
        The store's pulls per arm.
    ratings_stored : mapping of (user_id, movie_id) to KeptRating
        The ratings kept for retraining (``feedback_ratings``): compared whole with the
        replay's (rating, precedence, time, seq and excludes).
    rules : RuleBook
    model : PolicyModel
    fold : FoldSnapshot, optional
        The latest fold snapshot (with its ratings): every fold starts from it.
    switches : sequence of VersionSwitch, optional
        The versions that started being served, in log order (the policy's fold applies
        their posterior carry-over at their positions).
    max_lines : int, default 20
        Mismatch lines kept beyond a count.

    Raises
    ------
    ValueError
        ``fold`` holds the state of another policy than ``model`` (:meth:`PolicyModel.restore`).
    """
    # The pulls start from the purged decisions' (a fold snapshot's).
    report = LogCheck(pulls_replayed=Counter({} if fold is None else fold.pulls))
    problems: list[str] = []
    by_event, counted_seqs, ratings = _index_feedback(feedback, rules, fold)
    outcome_list = list(outcomes)
    stored = {(o.event_id, o.arm): o for o in outcome_list}
    deciding: set[int] = set()
    for d in decisions:
        if d.cold_start:
            if stored.pop((d.event_id, d.arm), None) is not None:
                problems.append(f"cold-start decision {d.event_id} has an outcome")
            continue
        _check_decision(d, by_event.get(d.event_id, []), stored, rules, report, problems,
                        deciding)
    for event_id, arm in stored:
        problems.append(f"outcome of {event_id} (arm {arm}) has no decision crediting that arm")
    if counted_seqs != deciding:
        problems.append(f"{len(counted_seqs ^ deciding)} feedback row(s) say 'counted' where no "
                        f"outcome names them, or the reverse")
    report.pulls_stored = Counter({a: int(n) for a, n in pulls_stored.items() if n})
    if report.pulls_stored != report.pulls_replayed:
        problems.append(f"pulls stored {dict(report.pulls_stored)} != replayed "
                        f"{dict(report.pulls_replayed)}")
    if ratings != dict(ratings_stored):
        diff = {k for k in ratings.keys() | ratings_stored.keys()
                if ratings.get(k) != ratings_stored.get(k)}
        problems.append(f"ratings for retraining: {len(diff)} (user, movie) entries differ "
                        f"from the fold of the feedback (e.g. {min(diff)}: stored "
                        f"{ratings_stored.get(min(diff))}, replayed {ratings.get(min(diff))})")
    report.policy, report.rewards = fold_outcomes(outcome_list, contexts, model, fold,
                                                  switches, report.not_folded)
    report.n_outcomes = len(outcome_list)
    report.mismatches = problems[:max_lines] + (
        [f"... and {len(problems) - max_lines} more"] if len(problems) > max_lines else [])
    return report


def fold_outcomes(outcomes: Iterable[OutcomeRow], contexts: Mapping[str, Any],
                  model: PolicyModel, fold: FoldSnapshot | None = None,
                  switches: Sequence[VersionSwitch] = (), skipped: Counter[str] | None = None
                  ) -> tuple[BatchedPolicy, dict[str, tuple[int, float]]]:
    """:func:`fold_policy` of stored outcome rows (any order) with their decisions' contexts."""
    return fold_policy(sorted((Outcome(o.seq, o.event_id, o.arm, o.reward,
                                       contexts.get(o.event_id)) for o in outcomes),
                              key=lambda o: o.seq), model, fold, switches, skipped)


def fold_policy(outcomes: Iterable[Outcome], model: PolicyModel,
                fold: FoldSnapshot | None = None, switches: Sequence[VersionSwitch] = (),
                skipped: Counter[str] | None = None
                ) -> tuple[BatchedPolicy, dict[str, tuple[int, float]]]:
    """The policy folded over ``outcomes`` (in log order) and the version ``switches`` between
    them (:meth:`PolicyModel.fold`), and (n, reward sum) per arm of the outcomes it folded
    (:meth:`PolicyModel.fold`'s tally, what ``GET /policy`` shows).

    With a ``fold`` snapshot the fold starts from its policy and tally and takes only the
    outcomes and switches after its log position (those up to it are in its state already):
    what ``rebuild-state`` and ``recbandits purge`` both fold. ``skipped``: the outcomes after
    it the policy did not fold, counted by why (:meth:`PolicyModel.fold`).

    Raises
    ------
    ValueError
        ``fold`` holds the state of another policy than ``model``.
    """
    if fold is None:
        policy, sums = model.fresh(), {}
    else:
        policy = model.restore(fold.policy["state"])
        sums = {arm: (int(n), float(total)) for arm, (n, total) in fold.policy["rewards"].items()}
    start = 0 if fold is None else fold.seq
    model.fold(policy, (o for o in outcomes if o.seq > start), sums,
               sorted((w for w in switches if w.seq > start), key=lambda w: w.seq), skipped)
    return policy, sums
