"""The two hot routes dispatched in front of the middleware stack: a hand-written piece that pays.

``GET /recommendations`` and ``POST /feedback`` are plain Starlette endpoints (their own modules
under :mod:`serving.api.routes`); every other route goes through FastAPI. :class:`ServiceApp`
is the FastAPI app that hands a request for one of the two straight to its endpoint, with the
app's own exception handlers (:mod:`serving.api.handlers`), the same body limit and the same
request metrics: the validation, the error bodies and the answers are the endpoint's, whichever
way a request comes in, because there is only the one endpoint.

Why a second way in at all: the app's middleware stack (error and exception middleware, the
exit-stack and body-limit layers, routing over every route, the OpenTelemetry hooks) costs more
than the domain work of these routes. Measured in process (the app called as an ASGI
callable, 2,000 concurrent ``GET /recommendations`` on MovieLens with SQLite, process CPU per
request, best of 3, load ~3-5): 165 us through the stack against 89 us through this front (101 us
with LinTS); the hand-written path of the previous round took 55-63 us. That is ~1.85x the
throughput of the stack for the same endpoint, far over the 10% a second way in must buy.

Requests with anything unusual go through the whole stack, which stays the definition: another
method, a mounted root path, an ``Origin`` header when CORS is configured.
"""

from __future__ import annotations

import time
from collections.abc import Awaitable, Callable, Mapping
from types import MappingProxyType
from typing import Any

from fastapi import FastAPI
from starlette.requests import Request
from starlette.responses import Response
from starlette.types import Scope

from serving.api.body_limit import BodyTooLargeError, body_limit, declared_too_large

Endpoint = Callable[[Request], Awaitable[Response]]


class ServiceApp(FastAPI):
    """FastAPI with :meth:`hot_route` endpoints answered in front of its middleware stack."""

    _hot: dict[tuple[str, str], Endpoint]
    _max_body_bytes: int = 0
    _body_limits: Mapping[str, int] = MappingProxyType({})
    _cors: bool = False

    def enable_front(self, routes: dict[tuple[str, str], Endpoint], *, max_body_bytes: int,
                     cors: bool, body_limits: Mapping[str, int] | None = None) -> None:
        """Answer ``routes`` (``(method, path) -> endpoint``) in front of the stack.

        Parameters
        ----------
        routes : dict of (str, str) to endpoint
            The hot endpoints by method and path.
        max_body_bytes : int
            Bodies over this are answered 413, as by the body-limit middleware.
        cors : bool
            CORS is configured: requests with an ``Origin`` header take the whole stack.
        body_limits : mapping of path to int, optional
            Paths with a body limit of their own.
        """
        self._hot = dict(routes)
        self._max_body_bytes = max_body_bytes
        self._body_limits = dict(body_limits or {})
        self._cors = cors

    async def __call__(self, scope: Scope, receive: Any, send: Any) -> None:
        """Dispatch an ASGI call: a plain hot request to its endpoint, anything else to FastAPI."""
        hot = getattr(self, "_hot", None)
        if hot and scope["type"] == "http" and not scope.get("root_path"):
            endpoint = hot.get((scope["method"], scope["path"]))
            if endpoint is not None and not (self._cors and any(
                    name == b"origin" for name, _ in scope["headers"])):
                await self._answer(endpoint, scope, receive, send)
                return
        await super().__call__(scope, receive, send)

    async def _answer(self, endpoint: Endpoint, scope: Scope, receive: Any,
                      send: Any) -> None:
        start = time.perf_counter()
        scope["app"] = self
        route = scope["path"]
        limit = body_limit(scope, self._max_body_bytes, self._body_limits)
        if declared_too_large(scope, limit):
            response: Response = BodyTooLargeError(limit).response()
            route = "unmatched"  # refused before routing, as the body-limit middleware labels it
        else:
            response = await self._respond(endpoint, scope, self._limited(receive, limit))
        await response(scope, receive, send)
        self.state.metrics.record_request(scope["method"], route, response.status_code,
                                          time.perf_counter() - start)

    async def _respond(self, endpoint: Endpoint, scope: Scope,
                       receive: Any) -> Response:
        request = Request(scope, receive)
        try:
            return await endpoint(request)
        except Exception as exc:
            # The handler the app registered for this class or its nearest base, as Starlette
            # picks it (the app's handler for Exception answers any bug with a logged 500).
            for cls in type(exc).__mro__:
                handler = self.exception_handlers.get(cls)
                if handler is not None:
                    return await handler(request, exc)  # type: ignore[misc]  # the app's handlers are all async
            raise

    @staticmethod
    def _limited(receive: Any, limit: int) -> Any:
        """``receive`` that raises :class:`BodyTooLargeError` past ``limit`` bytes."""
        received = 0

        async def limited() -> dict[str, Any]:
            nonlocal received
            message: dict[str, Any] = await receive()
            if message["type"] == "http.request":
                received += len(message.get("body", b""))
                if received > limit:
                    raise BodyTooLargeError(limit)
            return message

        return limited


__all__ = ["ServiceApp"]
