"""The FastAPI application: ``create_app(settings)``; resources live in the lifespan.

Nothing happens at import time. On start the lifespan opens the store, loads the arms (fitting
and saving them the first time), reads the policy state, and starts the group-commit writer and
the policy refresher; on shutdown it commits what is queued and closes everything.
"""

from __future__ import annotations

import asyncio
import ctypes
import gc
import logging
import multiprocessing
import os
import signal
import sys
import threading
from collections.abc import AsyncIterator, Mapping
from contextlib import asynccontextmanager

from fastapi import FastAPI
from fastapi.middleware.cors import CORSMiddleware
from starlette.concurrency import run_in_threadpool
from threadpoolctl import threadpool_limits

from arms.base import Recommender
from arms.data.dataset import Dataset
from serving.api import handlers, openapi
from serving.api.body_limit import BodyLimitMiddleware
from serving.api.front import ServiceApp
from serving.api.routes import (
    admin,
    demo,
    events,
    feedback,
    health,
    policy,
    preferences,
    recommendations,
    stream,
    users,
)
from serving.metrics import Metrics, MetricsMiddleware
from serving.settings import Settings

logger = logging.getLogger(__name__)

#: FastAPI's routers of the app (the hot routes are plain Starlette routes: see create_app).
ROUTERS = (policy.router, health.router, admin.router, stream.router, preferences.router)


class _FullCollections:
    """The collector's third threshold while services run in this process (tests run several,
    in threads): set by each start, Python's put back when the last one stops.
    """

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._running = 0
        self._before: tuple[int, int, int] = gc.get_threshold()

    def start(self, every: int) -> None:
        """A service starts: a full collection once per ``every`` middle ones from now on."""
        with self._lock:
            if self._running == 0:
                self._before = gc.get_threshold()
            self._running += 1
            first, second, _ = gc.get_threshold()
            gc.set_threshold(first, second, every)

    def stop(self) -> None:
        """A service stops; the last one puts back the thresholds found before the first."""
        with self._lock:
            self._running -= 1
            if self._running == 0:
                gc.set_threshold(*self._before)


_FULL_COLLECTIONS = _FullCollections()


def create_app(settings: Settings | None = None, *, catalog: Dataset | None = None,
               arms: Mapping[str, Recommender] | None = None) -> FastAPI:
    """Build the service.

    Parameters
    ----------
    settings : Settings, optional
        Default: ``Settings()`` (``RECBANDITS_*`` environment variables).
    catalog : Dataset, optional
        Base data instead of loading ``settings.dataset`` (tests pass a small synthetic one).
    arms : mapping of name to fitted Recommender, optional
        First-version arms instead of fitting ``settings.arms`` (see
        :func:`serving.commands.prepare`).
    """
    settings = settings if settings is not None else Settings()

    @asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        from serving.commands import prepare, until_the_store_answers
        from serving.retrain_trigger import retrain_trigger
        from serving.service import RecommendationService
        from serving.store import GroupCommitWriter, PeriodicJob

        # The event loop shares the GIL with the writer and refresher threads; a short switch
        # interval bounds how long a request waits for it after a read or a commit wake-up.
        sys.setswitchinterval(settings.switch_interval_s)
        resources = await run_in_threadpool(  # waits for a locked or restarting store
            until_the_store_answers, settings,
            lambda: prepare(settings, catalog=catalog, arms=arms))
        # The policy, the feature set and the rule book come from the settings (their arms in
        # the order of a purged log's fold snapshot: prepare).
        service = RecommendationService(resources.settings, resources.store, resources.catalog,
                                        resources.arm_set)
        await run_in_threadpool(until_the_store_answers, settings, service.start)
        writer = GroupCommitWriter(
            resources.store, batch_max=settings.batch_max,
            jobs=[PeriodicJob("settle", settings.sweep_interval_s, service.settle)],
            on_counted=service.policy_changed, linger_s=settings.commit_linger_s,
            slow_commit_s=settings.stall_log_s,
        )
        writer.start(asyncio.get_running_loop())
        service.writer = writer
        stalls = None
        if settings.stall_log_s is not None:  # opt-in: what holds up this worker's loop
            from serving.stall_log import StallLog

            stalls = StallLog(settings.stall_log_s)
            stalls.start(asyncio.get_running_loop())
        app.state.stall_log = stalls
        app.state.service = service
        trigger = retrain_trigger(resources.settings, service)
        if trigger is not None:
            trigger.start()
        # The arms, the catalogue and the libraries are millions of long-lived objects: frozen,
        # the garbage collector's full passes skip them instead of pausing requests to scan them.
        gc.freeze()
        # And full passes are rare (settings.gc_full_collection_every): each scanned every
        # object made since the start, to free none.
        _FULL_COLLECTIONS.start(settings.gc_full_collection_every)
        try:
            # One BLAS thread per worker: a request's numpy work is one user's (a fold-in, a row
            # times EASE's B), where OpenBLAS's threads cost more than they save. Measured on
            # MovieLens (2 cores, load 9.5): SVD's score_history 14.6 ms with 2 threads, 0.67 ms
            # with 1; EASE's 1.5 ms against 2.0 ms.
            with threadpool_limits(1, user_api="blas"):
                yield
        finally:
            _FULL_COLLECTIONS.stop()
            if stalls is not None:
                stalls.stop()
            if trigger is not None:
                await run_in_threadpool(trigger.close)
            await writer.aclose()
            service.close()
            resources.store.dispose()

    app = ServiceApp(
        title="recbandits",
        summary="Recommendations routed through a Thompson Sampling policy over recommenders",
        version="0.1.0",
        lifespan=lifespan,
    )
    app.state.settings = settings
    # Read at scrape time: pulls from the store, rewards from this worker's fold of the log
    # (the same on every worker within one refresh interval).
    metrics = Metrics(lambda: app.state.service.arm_tallies()
                      if hasattr(app.state, "service") else {},
                      lambda: app.state.service.drift_tallies()
                      if hasattr(app.state, "service") else None)
    app.state.metrics = metrics
    for router in ROUTERS:
        app.include_router(router)
    # The hot routes: plain Starlette routes, documented from their models (serving.api.openapi).
    openapi.install(app, [recommendations.route, feedback.route, events.route, users.route])
    demo.mount(app)
    handlers.install(app)

    if settings.cors_origins:
        app.add_middleware(CORSMiddleware, allow_origins=settings.cors_origins,
                           allow_methods=["GET", "POST", "PUT"], allow_headers=["Content-Type"])
    body_limits = {"/events": settings.max_events_body_bytes}
    app.add_middleware(BodyLimitMiddleware, max_bytes=settings.max_body_bytes,
                       per_path=body_limits)
    app.add_middleware(MetricsMiddleware, metrics=metrics)
    # The same endpoints, answered in front of the stack (serving.api.front: the figure).
    app.enable_front({("GET", "/recommendations"): recommendations.recommendations,
                      ("POST", "/feedback"): feedback.post_feedback,
                      ("POST", "/events"): events.post_events},
                     max_body_bytes=settings.max_body_bytes, cors=bool(settings.cors_origins),
                     body_limits=body_limits)
    return app


#: Linux's ``prctl`` option that asks for a signal when the parent process dies.
PR_SET_PDEATHSIG = 1


def stop_with_the_supervisor() -> bool:
    """In a worker that uvicorn's supervisor spawned (``serve --workers`` > 1), ask Linux for a
    SIGTERM when the supervisor dies, so that the worker shuts down as a SIGTERM from the
    supervisor would have made it (in-flight requests answered, queued writes committed) and
    lets go of the port; returns whether it was asked.

    Found by attack: a SIGKILL of ``recbandits serve`` left its workers serving the port with
    no supervisor, and the next ``serve`` failed with "Address already in use". The request
    holds for the thread that spawned the worker, uvicorn's main thread. Elsewhere (one worker
    in the supervisor's own process, or not Linux) nothing is asked.
    """
    parent = multiprocessing.parent_process()
    if parent is None or not sys.platform.startswith("linux"):
        return False
    libc = ctypes.CDLL(None, use_errno=True)
    if libc.prctl(PR_SET_PDEATHSIG, signal.SIGTERM, 0, 0, 0) != 0:
        logger.warning("could not ask to stop with the supervisor (prctl: %s): this worker "
                       "outlives a SIGKILL of it", os.strerror(ctypes.get_errno()))
        return False
    if os.getppid() != parent.pid:  # it died before the request: stop now, as it would have
        os.kill(os.getpid(), signal.SIGTERM)
    return True


def app_from_env() -> FastAPI:
    """Factory for ``uvicorn --factory``: settings from ``RECBANDITS_*`` (used by ``serve``).

    A worker of a supervisor stops with it (:func:`stop_with_the_supervisor`).
    """
    stop_with_the_supervisor()
    return create_app(Settings())
