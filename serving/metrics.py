"""Prometheus metrics: requests, latency, decisions, feedback, and reward rate by arm.

Each app gets its own registry (several apps in one test process never clash). With several
worker processes the ``serve`` command sets ``PROMETHEUS_MULTIPROC_DIR`` and ``/metrics`` sums
the workers' files; the per-arm reward rate and pulls come from the store, shared by all.
The drift figures (sliding-window reward rates, alarms, the detector's statistic;
:mod:`serving.drift`) are gauges of the answering worker's fold of the log, read at scrape
time like the per-arm rates: equal on every worker at one log position, so never summed.
:meth:`Metrics.exposition` reads both (a refresh of the fold, the advance lock): the route
calls it in the service's reader executor, off the event loop.
"""

from __future__ import annotations

import os
import time
from collections.abc import Callable, Iterator
from typing import Any

from prometheus_client import CollectorRegistry, Counter, Histogram, generate_latest
from prometheus_client.core import GaugeMetricFamily, Metric
from prometheus_client.multiprocess import MultiProcessCollector

LATENCY_BUCKETS = (0.001, 0.0025, 0.005, 0.01, 0.02, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 10.0)


#: Per arm at scrape time: (pulls, outcomes folded, their reward sum).
ArmTallies = dict[str, tuple[int, int, float]]
#: At scrape time: per arm and window size (outcomes in it, their mean reward or None); alarms
#: per arm; the detector's statistic per arm (:meth:`RecommendationService.drift_tallies`).
DriftTallies = tuple[dict[str, dict[int, tuple[int, float | None]]], dict[str, int],
                     dict[str, float]]


class _DriftCollector:
    """Sliding-window reward rates, drift alarms and statistics per arm, read at scrape time."""

    def __init__(self, tallies: Callable[[], DriftTallies | None]) -> None:
        self._tallies = tallies

    def collect(self) -> Iterator[Metric]:
        tallies = self._tallies()
        if tallies is None:
            return
        windows, alarms, statistics = tallies
        rate = GaugeMetricFamily(
            "recbandits_arm_window_reward_rate",
            "Mean reward of the arm's last `window` decided outcomes (NaN: none yet)",
            labels=["arm", "window"])
        count = GaugeMetricFamily("recbandits_arm_window_outcomes",
                                  "Decided outcomes in the arm's sliding window",
                                  labels=["arm", "window"])
        alarm = GaugeMetricFamily(
            "recbandits_drift_alarms",
            "Change-detector alarms on the arm's reward stream (a fold of the log)",
            labels=["arm"])
        statistic = GaugeMetricFamily("recbandits_drift_statistic",
                                      "The change detector's evidence of a shift",
                                      labels=["arm"])
        for arm in sorted(windows):
            for size, (n, mean) in sorted(windows[arm].items()):
                rate.add_metric([arm, str(size)], float("nan") if mean is None else mean)
                count.add_metric([arm, str(size)], n)
            alarm.add_metric([arm], alarms.get(arm, 0))
            statistic.add_metric([arm], statistics.get(arm, 0.0))
        yield from (rate, count, alarm, statistic)

    def describe(self) -> list[Metric]:
        return []


class _ArmCollector:
    """Mean reward, outcomes and pulls per arm, read at scrape time."""

    def __init__(self, counts: Callable[[], ArmTallies]) -> None:
        self._counts = counts

    def collect(self) -> Iterator[Metric]:
        counts = self._counts()
        rate = GaugeMetricFamily("recbandits_arm_reward_rate",
                                 "Mean reward of the decided outcomes by arm", labels=["arm"])
        obs = GaugeMetricFamily("recbandits_arm_outcomes",
                                "Decided outcomes (rewards the policy folded) by arm",
                                labels=["arm"])
        pulls = GaugeMetricFamily("recbandits_arm_pulls", "Policy decisions by arm",
                                  labels=["arm"])
        for arm, (n_pulls, n, total) in sorted(counts.items()):
            rate.add_metric([arm], total / n if n else 0.0)
            obs.add_metric([arm], n)
            pulls.add_metric([arm], n_pulls)
        yield from (rate, obs, pulls)

    def describe(self) -> list[Metric]:
        return []


class Metrics:
    """The app's metrics and their exposition.

    Parameters
    ----------
    arm_counts : callable
        Returns the current per-arm counts (read from the store at scrape time).
    drift : callable, optional
        Returns the drift tallies (:data:`DriftTallies`) or None (no service yet).
    """

    def __init__(self, arm_counts: Callable[[], ArmTallies],
                 drift: Callable[[], DriftTallies | None] | None = None) -> None:
        self.multiprocess = bool(os.environ.get("PROMETHEUS_MULTIPROC_DIR"))
        self.registry = CollectorRegistry(auto_describe=True)
        self.requests = Counter("recbandits_http_requests", "HTTP requests",
                                ["method", "route", "status"], registry=self.registry)
        self.latency = Histogram("recbandits_http_request_duration_seconds",
                                 "Time from request to response", ["route"],
                                 buckets=LATENCY_BUCKETS, registry=self.registry)
        self.decisions = Counter("recbandits_decisions", "Decisions logged", ["arm"],
                                 registry=self.registry)
        self.feedback = Counter("recbandits_feedback", "Feedback stored", ["feedback_type"],
                                registry=self.registry)
        self._arms = _ArmCollector(arm_counts)
        self.registry.register(self._arms)
        self._drift = _DriftCollector(drift if drift is not None else lambda: None)
        self.registry.register(self._drift)
        # labels() costs a lock and a tuple hash per call; the label sets are few (route
        # templates x methods x statuses, arms, feedback types), so their children are kept.
        self._children: dict[tuple[int, tuple[Any, ...]], Any] = {}

    def _child(self, metric: Any, *labels: Any) -> Any:
        key = (id(metric), labels)
        child = self._children.get(key)
        if child is None:
            child = self._children[key] = metric.labels(*map(str, labels))
        return child

    def record_request(self, method: str, route: str, status: int, seconds: float) -> None:
        """Count one answered request and time it, labelled by route template."""
        self._child(self.latency, route).observe(seconds)
        self._child(self.requests, method, route, status).inc()

    def record_decision(self, arm: str) -> None:
        """Count one decision served by ``arm``."""
        self._child(self.decisions, arm).inc()

    def record_feedback(self, feedback_type: str) -> None:
        """Count one feedback of ``feedback_type``."""
        self._child(self.feedback, feedback_type).inc()

    def exposition(self) -> bytes:
        """The Prometheus text format of every metric (all workers' when multiprocess)."""
        if not self.multiprocess:
            return generate_latest(self.registry)
        merged = CollectorRegistry()
        MultiProcessCollector(merged)
        merged.register(self._arms)
        merged.register(self._drift)
        return generate_latest(merged)


class MetricsMiddleware:
    """Pure ASGI middleware counting requests and timing them by route template."""

    def __init__(self, app: Any, metrics: Metrics) -> None:
        self.app = app
        self.metrics = metrics

    async def __call__(self, scope: dict[str, Any], receive: Any, send: Any) -> None:
        """Time the HTTP request of ``scope`` (``receive``, ``send``: ASGI's); count its status."""
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        start = time.perf_counter()
        status = {"code": 500}

        async def send_wrapper(message: dict[str, Any]) -> None:
            if message["type"] == "http.response.start":
                status["code"] = message["status"]
            await send(message)

        try:
            await self.app(scope, receive, send_wrapper)
        finally:
            # The template (not the raw path) keeps the label set small.
            route = getattr(scope.get("route"), "path", None) or "unmatched"
            self.metrics.record_request(scope["method"], route, status["code"],
                                        time.perf_counter() - start)
