"""Drift in the service: each arm's reward rate over sliding windows, and a change detector on
each arm's reward stream, both folds of the log.

The monitor reads each decision's outcomes at its settlement (:meth:`serving.store.Store.
settled_after`): the settle sweep settles the decisions whose reward window closed in the order
of their deadlines, so the order they were made, and gives each its log position
(``decisions.settled_seq``). The policy folds an outcome as soon as it is decided instead, and
the two orders differ: a like decides its decision at once, a decision without feedback gets its
0 from the sweep a window later, so in the policy's order an arm's stream
ran ahead in 1s and caught up in batches of 0s at each sweep, and a detector on it alarmed
whenever traffic changed (a burst, a quiet night) on arms whose click rate never moved, and the
windows' rates read the last sweep's batch (found by attack: 9 alarms at a constant 0.4). An
outcome reaches the monitor one reward window (plus the sweep's grace) after its decision: the
price of the stream being the one the rewards came from. Each outcome of a served arm is one
observation of that arm: it enters the arm's sliding windows (the last ``max(windows)`` rewards)
and its detector (:mod:`bandits.drift`: Page-Hinkley by default, CUSUM
selectable, thresholds defaulting to the ones ``bench/drift_detection.py`` chose). Because the
monitor is a deterministic fold of that ordered stream, its state (window contents, detector
statistics, alarm counts) is the same on every worker at the same log position, and
``rebuild-state`` replays it (:func:`replay`) and compares it with a running worker's.

An alarm is logged as a WARNING naming the arm, the detector's statistic and threshold, and the
log position of the settlement that raised it, by every worker whose refresh folds it (a
worker's first fold at its start, which catches up with the log, says how many alarms the log
held in one INFO line instead of repeating them). Alarms are counted per arm
(``/metrics``: ``recbandits_drift_alarms``; ``GET /policy``: ``drift``). A detector that
alarms restarts for that arm (:mod:`bandits.drift`'s reset rule).

Where the fold starts: at the log's latest fold snapshot (``recbandits purge``), fresh: the
outcomes before it may be deleted, so every worker and ``rebuild-state`` start the monitor there.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import logging
import threading
from collections import deque
from collections.abc import Iterable, Iterator, Mapping, Sequence
from typing import Any, Literal, get_args

import numpy as np

from bandits.drift import CUSUM, ChangeDetector, PageHinkley
from serving.store.types import JsonObject, Outcome

logger = logging.getLogger(__name__)

#: The detectors ``drift_detector`` selects ("none": windows only).
DETECTORS: dict[str, type[ChangeDetector]] = {"PageHinkley": PageHinkley, "CUSUM": CUSUM}
#: ``drift_detector``'s values: a detector of :data:`DETECTORS`, or none (the type of the
#: setting, the CLI's choices by test).
DetectorName = Literal["PageHinkley", "CUSUM", "none"]
DETECTOR_NAMES: tuple[str, ...] = get_args(DetectorName)
#: The recent-reward windows the monitor reports per arm (the ``drift_windows`` default).
DEFAULT_WINDOWS = (100, 1000)
#: The probe's threshold: never reached (a statistic grows by at most 1 per observation).
PROBE_THRESHOLD = 1e300
#: Alarms kept per arm in :meth:`DriftMonitor.describe` (the latest).
RECENT_ALARMS = 10


class DriftMonitor:
    """Sliding-window reward rates and a change detector per arm, folded from outcomes.

    Parameters
    ----------
    arms : sequence of str
        The served arms (outcomes of other arms are skipped, as the policy's fold skips them).
    detector : {"PageHinkley", "CUSUM", "none"}, default "PageHinkley"
    params : mapping, optional
        The detector's ``threshold``, ``delta``, ``min_samples`` (default: the class's).
    windows : sequence of int, default (100, 1000)
        Window sizes, in decided outcomes of the arm.
    start : int, default 0
        Log position the fold starts after (a fold snapshot's).

    Raises
    ------
    ValueError
        An unknown detector, a window < 1, or a detector parameter outside its range (the
        detector's message, prefixed by ``drift_``).
    """

    def __init__(self, arms: Sequence[str], detector: str = "PageHinkley",
                 params: Mapping[str, Any] | None = None,
                 windows: Sequence[int] = DEFAULT_WINDOWS, start: int = 0) -> None:
        if detector != "none" and detector not in DETECTORS:
            raise ValueError(f"drift_detector={detector!r} is not a detector; allowed: "
                             f"{list(DETECTOR_NAMES)}")
        if not windows or min(windows) < 1:
            raise ValueError(f"drift_windows must be window sizes >= 1, got {list(windows)}")
        self.arms = list(arms)
        self.name = detector
        self.params = dict(params or {})
        self.windows = sorted({int(w) for w in windows})
        self.start = self.seq = int(start)
        self.detector: ChangeDetector | None = None
        self._probe: ChangeDetector | None = None
        if detector != "none":
            try:
                self.detector = DETECTORS[detector](self.arms, **self.params)
            except (TypeError, ValueError) as exc:
                raise ValueError(f"drift_{exc}") from None
            # The same detector that never alarms: the statistic an alarm reached (the alarming
            # detector resets it at once).
            self._probe = DETECTORS[detector](
                self.arms, **{**self.detector.get_params(), "threshold": PROBE_THRESHOLD})
        self._recent: dict[str, deque[float]] = {
            a: deque(maxlen=self.windows[-1]) for a in self.arms}
        self.folded = {a: 0 for a in self.arms}
        self.last_alarms: dict[str, list[JsonObject]] = {a: [] for a in self.arms}

    def fresh(self, start: int) -> DriftMonitor:
        """A monitor with these settings whose fold starts after log position ``start``."""
        return DriftMonitor(self.arms, self.name, self.params, self.windows, start)

    def settings(self) -> JsonObject:
        """What the fold depends on besides the outcomes: ``{"arms", "detector", "params",
        "windows"}`` (``params`` in full, the class's defaults filled in; {} without a
        detector). A worker reports them (``GET /admin/live-state``) so ``rebuild-state``
        replays with the settings the worker runs (:func:`check_replay`).
        """
        return {"arms": list(self.arms), "detector": self.name,
                "params": {} if self.detector is None else self.detector.get_params(),
                "windows": list(self.windows)}

    @classmethod
    def from_settings(cls, settings: Mapping[str, Any], start: int = 0) -> DriftMonitor:
        """A fresh monitor with ``settings`` (:meth:`settings`' form) starting after ``start``.

        Raises
        ------
        ValueError
            As the constructor (an unknown detector, window or detector parameter).
        """
        return cls(settings["arms"], settings["detector"], settings["params"] or None,
                   settings["windows"], start)

    def fold(self, outcomes: Iterable[Outcome]) -> list[JsonObject]:
        """Fold the ``outcomes`` (settlement order: :meth:`serving.store.Store.settled_after`)
        after :attr:`seq`; the alarms they raised.

        Each alarm is ``{"arm", "seq", "statistic", "threshold"}`` and is logged as a WARNING.
        Outcomes at or before :attr:`seq` are skipped (folded already), so handing the monitor
        a stream that overlaps what it has folded is harmless; a multileaved decision's arms
        share one position and are folded together.
        """
        raised: list[JsonObject] = []
        known = self._recent
        folded_upto = self.seq
        for outcome in outcomes:
            if outcome.seq <= self.seq:
                continue
            folded_upto = max(folded_upto, outcome.seq)
            window = known.get(outcome.arm)
            if window is None:
                continue
            reward = float(outcome.reward)
            window.append(reward)
            self.folded[outcome.arm] += 1
            if self.detector is not None and self._observe(outcome.arm, reward):
                alarm = self._alarm(outcome.arm, outcome.seq, reward)
                raised.append(alarm)
        self.seq = folded_upto
        return raised

    def _observe(self, arm: str, reward: float) -> bool:
        """Fold one reward into ``arm``'s detector (keeping its state before, for the probe)."""
        assert self.detector is not None and self._probe is not None
        k = self.arms.index(arm)
        before = {name: s[0, k] for name, s in self.detector.state_.stats.items()}
        alarmed = self.detector.update(k, reward)
        if alarmed:  # the probe takes the state before and folds the reward without resetting
            for name, s in self._probe.state_.stats.items():
                s[0, k] = before[name]
            self._probe.update(k, reward)
        return alarmed

    def _alarm(self, arm: str, seq: int, reward: float) -> JsonObject:
        """Record and log an alarm of ``arm`` at log position ``seq``."""
        assert self.detector is not None and self._probe is not None
        statistic = float(self._probe.statistic()[self.arms.index(arm)])
        alarm: JsonObject = {"arm": arm, "seq": seq, "statistic": statistic,
                             "threshold": float(self.detector.threshold)}
        kept = self.last_alarms[arm]
        kept.append(alarm)
        del kept[:-RECENT_ALARMS]
        logger.warning("drift alarm: arm %s, %s statistic %.3f > threshold %g at log "
                       "position %d (its reward stream's mean moved; the detector restarts)",
                       arm, self.name, statistic, self.detector.threshold, seq)
        return alarm

    def alarm_counts(self) -> dict[str, int]:
        """Alarms raised so far per arm (0 for every arm without a detector)."""
        if self.detector is None:
            return {a: 0 for a in self.arms}
        return self.detector.alarm_counts()

    def window_rates(self) -> dict[str, dict[int, tuple[int, float | None]]]:
        """Per arm and window size: (outcomes in the window, their mean reward or None)."""
        rates: dict[str, dict[int, tuple[int, float | None]]] = {}
        for arm, recent in self._recent.items():
            values = np.fromiter(recent, dtype=np.float64, count=len(recent))
            rates[arm] = {}
            for w in self.windows:
                tail = values[-w:]
                rates[arm][w] = (int(tail.size), float(tail.mean()) if tail.size else None)
        return rates

    def statistics(self) -> dict[str, float]:
        """The detector's current evidence of a shift per arm (0 without a detector)."""
        if self.detector is None:
            return {a: 0.0 for a in self.arms}
        return dict(zip(self.arms, self.detector.statistic().tolist(), strict=True))

    def state(self) -> JsonObject:
        """Everything the fold determines, as plain JSON (compared by ``rebuild-state``)."""
        return {"detector": self.name, "start": self.start, "seq": self.seq,
                "state": None if self.detector is None else self.detector.state_dict(),
                "windows": {a: list(r) for a, r in self._recent.items()},
                "folded": self.folded, "alarms": self.alarm_counts()}

    def digest(self) -> str:
        """A short hash of :meth:`state` (equal states, equal digests)."""
        text = json.dumps(self.state(), sort_keys=True)
        return hashlib.sha256(text.encode()).hexdigest()[:16]

    def describe(self) -> JsonObject:
        """What ``GET /policy`` shows under ``drift``."""
        params = None if self.detector is None else self.detector.get_params()
        rates = self.window_rates()
        statistics = self.statistics()
        counts = self.alarm_counts()
        return {
            "detector": self.name, "params": params, "log_seq": self.seq,
            "windows": self.windows,
            "arms": [{"arm": a, "outcomes": self.folded[a], "alarms": counts[a],
                      "statistic": statistics[a],
                      "window_rates": {str(w): rates[a][w][1] for w in self.windows},
                      "window_outcomes": {str(w): rates[a][w][0] for w in self.windows},
                      "last_alarms": list(self.last_alarms[a])}
                     for a in self.arms],
        }


class _Silenced(logging.Filter):
    """Drops this module's records in the threads inside :func:`alarms_silenced`."""

    def __init__(self) -> None:
        super().__init__()
        self.threads = threading.local()

    def filter(self, record: logging.LogRecord) -> bool:
        return getattr(self.threads, "depth", 0) == 0


_silenced = _Silenced()
logger.addFilter(_silenced)


@contextlib.contextmanager
def alarms_silenced() -> Iterator[None]:
    """No alarm WARNING from this thread within: a fold that repeats what workers logged
    already (a replay, a worker's catch-up at its start, which logged every old alarm again at
    each restart: found by attack). Per thread: switching the module's logger off silenced
    every other thread's alarms meanwhile (review).
    """
    threads = _silenced.threads
    threads.depth = getattr(threads, "depth", 0) + 1
    try:
        yield
    finally:
        threads.depth -= 1


def replay(monitor: DriftMonitor, outcomes: Iterable[Outcome], upto: int | None = None
           ) -> DriftMonitor:
    """``monitor`` (fresh) folded over ``outcomes`` (any order) up to log position ``upto``
    (all if None), in log order, with its alarms' WARNING lines silenced (a replay repeats
    what the workers logged): ``rebuild-state``'s fold.
    """
    rows = sorted((o for o in outcomes if upto is None or o.seq <= upto), key=lambda o: o.seq)
    with alarms_silenced():
        monitor.fold(rows)
    return monitor


def check_replay(monitor: DriftMonitor, outcomes: Iterable[Outcome],
                 worker: Mapping[str, Any] | None, where: str) -> tuple[list[str], bool]:
    """``rebuild-state``'s drift lines: ``monitor`` (fresh, starting at the fold snapshot's
    position) replayed over the log's ``outcomes`` up to the position a running ``worker``
    reported (``GET /admin/live-state``'s ``drift``; None: none answered, ``where`` says why,
    and the whole log is replayed), its alarms per arm, and whether the worker's alarm counts
    and state digest equal the replay's.

    The drift settings are not logged, so the replay takes the ones the worker reports
    (:meth:`DriftMonitor.settings`: its detector, parameters, windows and arms) when they
    differ from ``monitor``'s: a worker started with ``--drift-detector CUSUM`` is compared
    with a CUSUM replay. Without a worker, ``monitor``'s settings are replayed.

    When the log holds settlements after the worker's position, the line says how many and
    up to where: a worker folds them at its next refresh, so a number that stays (rerun the
    command) says its drift fold is stuck, not behind (found by attack: "445 against 772"
    read the same either way).

    Returns
    -------
    (lines, match)
        ``match`` False only when a worker answered with another state.
    """
    outcomes = list(outcomes)
    comparable = worker is not None and int(worker["start"]) == monitor.start
    upto = int(worker["log_seq"]) if worker is not None and comparable else None
    theirs = None if worker is None else worker.get("settings")
    note = ""
    if comparable and theirs is not None and theirs != monitor.settings():
        try:
            monitor = DriftMonitor.from_settings(theirs, monitor.start)
        except (KeyError, TypeError, ValueError) as exc:
            return [f"drift: not compared: the worker at {where} runs drift settings this "
                    f"replay cannot build ({theirs}: {exc!r})"], True
        note = f" with the worker's drift settings {json.dumps(theirs, sort_keys=True)}"
    replayed = replay(monitor, outcomes, upto)
    counts = replayed.alarm_counts()
    line = (f"drift: {replayed.name} on each arm's reward stream, replayed from log position "
            f"{replayed.start} to {replayed.seq}{note}: alarms {counts}")
    if worker is None:
        return [f"{line}; not compared ({where})"], True
    if not comparable:
        return [f"{line}; not compared: the worker at {where} starts its drift fold at "
                f"{worker['start']}, the log's fold snapshot at {monitor.start}"], True
    same = worker["alarms"] == counts and worker["digest"] == replayed.digest()
    line = (f"{line}; match {'yes' if same else 'NO'} (worker at {where}: alarms "
            f"{worker['alarms']}, state digest {worker['digest']} against "
            f"{replayed.digest()})")
    assert upto is not None  # comparable
    after = [o.seq for o in outcomes if o.seq > upto]
    if after:
        line += (f"; the log holds {len(after)} settled outcomes after the worker's position "
                 f"{upto}, up to {max(after)}: not folded by it yet (it folds them at its next "
                 "refresh; a count that stays says its drift fold is stuck)")
    return [line], same


__all__ = ["DETECTORS", "DriftMonitor", "alarms_silenced", "check_replay", "replay"]
