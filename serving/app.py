"""The FastAPI application: ``create_app(settings)``; resources live in the lifespan.

Nothing happens at import time. On start the lifespan opens the store, loads the arms (fitting
and saving them the first time), reads the policy state, and starts the group-commit writer and
the policy refresher; on shutdown it commits what is queued and closes everything.
"""

from __future__ import annotations

import asyncio
import gc
import logging
import sys
from collections.abc import AsyncIterator, Mapping
from contextlib import asynccontextmanager

from fastapi import FastAPI, Request
from fastapi.exception_handlers import http_exception_handler
from fastapi.middleware.cors import CORSMiddleware
from fastapi.responses import JSONResponse, Response
from starlette.concurrency import run_in_threadpool
from starlette.exceptions import HTTPException as StarletteHTTPException

from arms.base import Recommender
from arms.data.dataset import Dataset
from serving.api.body_limit import BodyLimitMiddleware, BodyTooLargeError
from serving.api.hotpath import ServiceApp
from serving.api.routes import admin, demo, feedback, health, policy, recommendations
from serving.errors import ServingError, StoreUnavailableError
from serving.metrics import Metrics, MetricsMiddleware
from serving.settings import Settings
from serving.store.errors import database_errors, store_unavailable

logger = logging.getLogger(__name__)


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
        from serving.commands import prepare
        from serving.policy import PolicyModel
        from serving.service import RecommendationService
        from serving.store import GroupCommitWriter, PeriodicJob

        # The event loop shares the GIL with the writer and refresher threads; a short switch
        # interval bounds how long a request waits for it after a read or a commit wake-up.
        sys.setswitchinterval(settings.switch_interval_s)
        resources = await run_in_threadpool(prepare, settings, catalog=catalog, arms=arms)
        model = PolicyModel(settings.arms, prior_alpha=settings.prior_alpha,
                            prior_beta=settings.prior_beta,
                            propensity_grid=settings.propensity_grid)
        service = RecommendationService(settings, resources.store, resources.catalog,
                                        resources.arm_set, model)
        await run_in_threadpool(service.start)
        writer = GroupCommitWriter(
            resources.store, batch_max=settings.batch_max,
            jobs=[PeriodicJob("settle", settings.sweep_interval_s, service.settle)],
            on_counted=service.policy_changed,
        )
        writer.start(asyncio.get_running_loop())
        service.writer = writer
        app.state.service = service
        # The arms, the catalogue and the libraries are millions of long-lived objects: frozen,
        # the garbage collector's full passes skip them instead of pausing requests to scan them.
        gc.freeze()
        try:
            yield
        finally:
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
    # Read at scrape time from the store, which every worker shares.
    metrics = Metrics(lambda: app.state.service.store.arm_counts()
                      if hasattr(app.state, "service") else {})
    app.state.metrics = metrics
    for module in (recommendations, feedback, policy, health, admin):
        app.include_router(module.router)
    demo.mount(app)

    @app.exception_handler(ServingError)
    async def serving_error(_request: Request, exc: ServingError) -> JSONResponse:
        headers = None
        if isinstance(exc, StoreUnavailableError):
            headers = {"Retry-After": str(exc.retry_after_s)}
        elif exc.status_code == 401:
            headers = {"WWW-Authenticate": "Bearer"}
        return JSONResponse({"detail": exc.message, "code": exc.code},
                            status_code=exc.status_code, headers=headers)

    async def store_error(request: Request, exc: Exception) -> JSONResponse:
        # The one mapping of database failures to HTTP: an outage or a lock is a 503 with
        # Retry-After (see store_unavailable); anything else from the store is a bug (500).
        error = store_unavailable(exc)
        if error is None:
            logger.error("store error on %s %s", request.method, request.url.path, exc_info=exc)
            return JSONResponse({"detail": "internal error of the store", "code": "internal"},
                                status_code=500)
        return await serving_error(request, error)

    for error_class in database_errors():
        app.add_exception_handler(error_class, store_error)

    @app.exception_handler(Exception)
    async def internal_error(request: Request, exc: Exception) -> JSONResponse:
        # A bug: the traceback is logged, never sent. The same body on the hot path (which
        # picks this handler too) and through FastAPI (where starlette's ServerErrorMiddleware
        # calls it, then re-raises for the server to log as well).
        logger.error("error answering %s %s", request.method, request.url.path, exc_info=exc)
        return JSONResponse({"detail": "internal error", "code": "internal"}, status_code=500)

    @app.exception_handler(StarletteHTTPException)
    async def http_error(request: Request, exc: StarletteHTTPException) -> Response:
        if isinstance(exc, BodyTooLargeError):  # cut off while FastAPI was reading it
            return exc.response()
        if exc.status_code == 400 and exc.__cause__ is not None:
            # FastAPI answers 400 to a body it cannot decode (invalid UTF-8, ...); the API
            # promises 422 with a message for every malformed body.
            return JSONResponse({"detail": f"the request body is not valid JSON: "
                                           f"{str(exc.__cause__)[:200]}",
                                 "code": "malformed_body"}, status_code=422)
        return await http_exception_handler(request, exc)

    if settings.cors_origins:
        app.add_middleware(CORSMiddleware, allow_origins=settings.cors_origins,
                           allow_methods=["GET", "POST"], allow_headers=["Content-Type"])
    app.add_middleware(BodyLimitMiddleware, max_bytes=settings.max_body_bytes)
    app.add_middleware(MetricsMiddleware, metrics=metrics)
    app.enable_hot_path(max_body_bytes=settings.max_body_bytes, cors=bool(settings.cors_origins))
    return app


def app_from_env() -> FastAPI:
    """Factory for ``uvicorn --factory``: settings from ``RECBANDITS_*`` (used by ``serve``)."""
    return create_app(Settings())
