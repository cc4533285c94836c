"""What the service's commands return, and the one place each is turned into text.

Every command of :mod:`serving.commands` but ``serve`` has the shape of ``simulate`` (see
:mod:`experiments.results`): a function taking the :class:`~serving.settings.Settings` (and its
options) that returns one of the dataclasses below with the figures, and never prints. The CLI
(:mod:`experiments.cli`) prints ``str(result)`` on stdout and exits with ``result.exit_code``;
a refusal is an exception (``ValueError`` for a bad value, :class:`CommandError` when the
command could not do its work), which the CLI prints on stderr as ``recbandits COMMAND:
message`` and exits with (2, or the error's ``exit_code``).
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field

from serving.errors import iso_time as _iso
from serving.holdout import HoldoutReport, format_report
from serving.multileave import CreditReport, format_credit
from serving.policy import said_policy
from serving.shadow import PromoteResult
from serving.store.types import JsonObject
from serving.versions import ModelsResult, RetrainResult


class CommandError(ValueError):
    """A command that could not do its work (nothing changed); ``exit_code`` is the CLI's status.

    Parameters
    ----------
    message : str
        What went wrong and what to do.
    exit_code : int, default 2
        The status ``recbandits`` exits with.
    """

    def __init__(self, message: str, exit_code: int = 2) -> None:
        super().__init__(message)
        self.exit_code = exit_code


@dataclass(frozen=True)
class NothingToDo:
    """A command's answer when the settings' store does not exist or holds no log yet (nothing
    is created).

    Attributes
    ----------
    verb : str
        What there is nothing to do (``rebuild``, ``purge``, ``credit``).
    reason : str
        Why: the store is missing, or holds no decision log.
    """

    verb: str
    reason: str

    @property
    def exit_code(self) -> int:
        """0: nothing to do is no failure."""
        return 0

    def __str__(self) -> str:
        return f"nothing to {self.verb}: {self.reason}"


@dataclass(frozen=True)
class ArmCheck:
    """One arm of ``rebuild-state``: its pulls as stored and as replayed, and its outcomes.

    Attributes
    ----------
    arm : str
    pulls_stored, pulls_replayed : int
        Policy decisions crediting the arm, as the store counts them and as the log does.
    n_outcomes : int
        Decided outcomes of the arm (the fold's input).
    reward_sum : float
        Their rewards' sum.
    """

    arm: str
    pulls_stored: int
    pulls_replayed: int
    n_outcomes: int
    reward_sum: float

    @property
    def mean_reward(self) -> float:
        """``reward_sum / n_outcomes``; NaN without an outcome."""
        return self.reward_sum / self.n_outcomes if self.n_outcomes else math.nan


@dataclass(frozen=True)
class LiveArmCheck:
    """One live arm (it learns from the stream) of ``rebuild-state``, rebuilt from the log.

    Attributes
    ----------
    arm : str
    match : bool or None
        Whether a running worker's state of it equals the rebuilt one; None when nothing was
        compared (no worker asked or answered, or it is behind the fold snapshot).
    detail : str
        The line's text after ``live arm ARM: `` (what was folded, which worker, or why not).
    """

    arm: str
    match: bool | None
    detail: str

    def __str__(self) -> str:
        return f"live arm {self.arm}: {self.detail}"


@dataclass(frozen=True)
class SnapshotInfo:
    """The fold snapshot a purged log's folds start from.

    Attributes
    ----------
    seq : int
        Its log position S.
    cut : float
        The purge's DATE (Unix seconds).
    pulls : int
        Pulls of the purged decisions.
    ratings : int
        Kept ratings of the purged feedback.
    """

    seq: int
    cut: float
    pulls: int
    ratings: int


@dataclass(frozen=True)
class RebuildStateResults:
    """The log replayed and compared with every derived state (``recbandits rebuild-state``,
    :func:`serving.commands.rebuild_state`).

    Attributes
    ----------
    source : str
        The store (``Store.describe()``).
    n_decisions, n_feedback, n_outcomes : int
        Rows of the log read (outcomes: replayed).
    pending : int
        Policy decisions (per credited arm) without a decided outcome yet.
    policy : str
        The policy folded over the outcomes.
    arms : tuple of ArmCheck
        One per arm, sorted by name.
    not_folded : tuple of (str, int)
        Outcomes of the log the policy did not fold, by why: an arm no longer in the policy
        (dropped from the settings), no context of a contextual policy's dimension.
    mismatches : tuple of str
        One line per disagreement between the store and the replay.
    live : tuple of LiveArmCheck
        One per live arm served.
    snapshot : SnapshotInfo or None
        The fold snapshot the replay started from (a purged log).
    switches : tuple of (str, int)
        The model-version switches whose carry-over (``reset`` or ``discount``) the fold
        applied, with their log positions (:mod:`serving.versions`).
    lifecycle : tuple of str
        The live holdout's logged decisions checked and the drift monitor replayed
        (:func:`serving.holdout.check_decisions`, :func:`serving.drift.check_replay`).
    lifecycle_match : bool
        Whether those agree with the log and the running worker.
    """

    source: str
    n_decisions: int
    n_feedback: int
    n_outcomes: int
    pending: int
    policy: str
    arms: tuple[ArmCheck, ...]
    not_folded: tuple[tuple[str, int], ...] = ()
    mismatches: tuple[str, ...] = ()
    live: tuple[LiveArmCheck, ...] = ()
    snapshot: SnapshotInfo | None = None
    switches: tuple[tuple[str, int], ...] = ()
    lifecycle: tuple[str, ...] = ()
    lifecycle_match: bool = True

    @property
    def match(self) -> bool:
        """No mismatch, no worker's live arm differs from its rebuild, and the holdout and drift
        checks agree.
        """
        return (not self.mismatches and all(c.match is not False for c in self.live)
                and self.lifecycle_match)

    @property
    def exit_code(self) -> int:
        """0 if everything matches, else 1."""
        return 0 if self.match else 1

    def __str__(self) -> str:
        lines = [f"store: {self.source}  ({self.n_decisions} decisions, {self.n_feedback} "
                 f"feedback, {self.n_outcomes} outcomes, {self.pending} undecided)"]
        if (s := self.snapshot) is not None:
            lines.append(f"fold snapshot at log position {s.seq} (purged before "
                         f"{_iso(s.cut, 'auto')}): {s.pulls} pulls and {s.ratings} ratings of "
                         "purged rows; every fold starts from it")
        lines.append(f"policy: {self.policy} folded over the outcomes in log order"
                     + (f", with the carry-over of {len(self.switches)} version switch(es) at "
                        "their log positions ("
                        + ", ".join(f"{mode} at {seq}" for mode, seq in self.switches[-3:]) + ")"
                        if self.switches else ""))
        lines.append(f"{'arm':<14}{'stored n':>10}{'replay n':>10}{'outcomes':>10}"
                     f"{'mean reward':>13}")
        for a in self.arms:
            mean = f"{a.mean_reward:.4f}" if a.n_outcomes else "-"
            lines.append(f"{a.arm:<14}{a.pulls_stored:>10}{a.pulls_replayed:>10}"
                         f"{a.n_outcomes:>10}{mean:>13}")
        if self.not_folded:  # found by a README check: a dropped arm's outcomes were not shown
            lines.append(f"outcomes the policy does not fold: {sum(n for _, n in self.not_folded)}"
                         " (" + "; ".join(f"{n}: {why}" for why, n in self.not_folded) + ")")
        lines += [f"  mismatch: {line}" for line in self.mismatches]
        lines += [str(c) for c in self.live]
        lines += list(self.lifecycle)
        lines.append(f"match: {'yes' if self.match else 'NO'}")
        return "\n".join(lines)


@dataclass(frozen=True)
class PurgeSnapshot:
    """The fold snapshot a purge stored.

    Attributes
    ----------
    seq : int
        Its log position S (the log head read before folding).
    previous : int or None
        The log position of the snapshot it folded on from (None: from the empty state).
    policy : str
        The policy folded: the one in force (the latest promotion's, else the settings').
    n_outcomes : int
        Outcomes folded by this purge.
    live_arms : tuple of str
        The live arms folded.
    n_events : int
        Events folded into them by this purge.
    """

    seq: int
    previous: int | None
    policy: str
    n_outcomes: int
    live_arms: tuple[str, ...]
    n_events: int


@dataclass(frozen=True)
class PurgeResults:
    """What ``recbandits purge`` counted and deleted (:func:`serving.commands.purge`).

    Attributes
    ----------
    source : str
        The store.
    cut : float
        The DATE (Unix seconds): rows before it go.
    head : int
        The log head read before counting.
    counts : dict of str to int
        Rows before the cut, by table (``decisions``, ``outcomes``, ``feedback``).
    dry_run : bool
        Counted only.
    deleted : dict of str to int
        Rows deleted, by table (empty: nothing deleted).
    snapshot : PurgeSnapshot or None
        The fold snapshot stored (None: nothing deleted).
    """

    source: str
    cut: float
    head: int
    counts: dict[str, int]
    dry_run: bool = False
    deleted: dict[str, int] = field(default_factory=dict)
    snapshot: PurgeSnapshot | None = None

    @property
    def exit_code(self) -> int:
        """0: a purge that returns did what it said (a refusal raises)."""
        return 0

    def __str__(self) -> str:
        if self.snapshot is None:
            what = _rows(self.counts, self.cut)
            return (f"{'dry run: would delete' if self.dry_run else 'nothing to purge:'} {what} "
                    f"(log head {self.head}); nothing deleted")
        s = self.snapshot
        start = "the empty state" if s.previous is None else f"the snapshot at {s.previous}"
        return "\n".join([
            f"store: {self.source}",
            f"fold snapshot at log position {s.seq}, from {start}: {s.policy} over "
            f"{s.n_outcomes} more outcomes; live arms {', '.join(s.live_arms) or '(none)'} "
            f"over {s.n_events} more events",
            f"deleted {_rows(self.deleted, self.cut)}"])


def _rows(counts: dict[str, int], cut: float) -> str:
    """``counts`` of the three log tables as purge says them."""
    return (f"{counts['decisions']} decisions, {counts['outcomes']} outcomes and "
            f"{counts['feedback']} feedback rows before {_iso(cut, 'auto')}")


@dataclass(frozen=True)
class CreditResults:
    """The arms of the log's multileaved decisions compared (``recbandits credit``,
    :func:`serving.commands.credit`).

    Attributes
    ----------
    source : str
        The store.
    report : CreditReport
        Per arm and per pair of arms (:func:`serving.multileave.credit_report`).
    """

    source: str
    report: CreditReport

    @property
    def exit_code(self) -> int:
        """0: a report was made."""
        return 0

    def __str__(self) -> str:
        return f"store: {self.source}\n{format_credit(self.report)}"


@dataclass(frozen=True)
class HoldoutResults:
    """The policy-served decisions compared with the held-out ones (``recbandits holdout``,
    :func:`serving.commands.holdout`).

    Attributes
    ----------
    source : str
        The store.
    report : HoldoutReport
        Per group and their difference (:func:`serving.holdout.holdout_report`).
    """

    source: str
    report: HoldoutReport

    @property
    def exit_code(self) -> int:
        """0: a report was made."""
        return 0

    def __str__(self) -> str:
        return f"store: {self.source}\n{format_report(self.report)}"


@dataclass(frozen=True)
class ShadowStatusResults:
    """The live and shadow policies in force (``recbandits shadow status``,
    :func:`serving.commands.shadow_status`).

    Attributes
    ----------
    source : str
        The store.
    report : dict
        :func:`serving.shadow.status`: ``live`` and ``shadow`` (name and params; shadow None),
        ``promotion`` (None: the settings' policy is live) and ``shadow_decisions``.
    checked : str, optional
        Which running worker was seen to run those policies, or why none was asked.
    differs : str, optional
        What a running worker runs instead, when it runs other policies than the settings
        give (then the report is the settings', not the service's).
    """

    source: str
    report: JsonObject
    checked: str | None = None
    differs: str | None = None

    @property
    def exit_code(self) -> int:
        """0: a report was made."""
        return 0

    def __str__(self) -> str:
        live, other, promotion = (self.report["live"], self.report["shadow"],
                                  self.report["promotion"])
        logged = self.report.get("logged_live")
        records = self.report.get("shadow_records", [])
        return "\n".join([
            f"store: {self.source}",
            f"live:   {said_policy(live)}",
            "shadow: " + ("none" if other is None else said_policy(other)),
            # The parameters too: "ThompsonSampling replaced ThompsonSampling" hid what changed.
            "promotion: " + ("none (the settings' policy is live)" if promotion is None else
                             f"#{promotion['id']}: {said_policy(promotion['policy'])} replaced "
                             f"{said_policy(promotion['previous'])} (it overrides the settings' "
                             "policy)"),
            "latest decision logged by: " + (
                "none" if logged is None else said_policy(logged)
                + ("" if self.report.get("logged_is_live") else
                   f" (before promotion #{promotion['id']}: no decision has been made since "
                   "the promotion)" if self.report.get("logged_before_promotion") else
                   " (NOT the live policy above: the settings are not the service's)")),
            f"decisions with a shadow record: {self.report['shadow_decisions']}"
            + ("" if len(records) < 2 and all(r["is_shadow"] for r in records) else
               " (" + "; ".join(f"{r['decisions']} of {said_policy(r['policy'])}"
                                for r in records) + ")"),
            *([] if self.checked is None and self.differs is None else
              [f"service: {self.checked}" if self.differs is None else
               f"service: NOT these policies: {self.differs}"])])


#: Any result of a service command but ``serve``.
CommandResults = (RetrainResult | ModelsResult | RebuildStateResults | PurgeResults
                  | CreditResults | HoldoutResults | ShadowStatusResults | PromoteResult
                  | NothingToDo)
