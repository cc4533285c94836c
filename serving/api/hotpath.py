"""The two hot routes answered in front of FastAPI's middleware stack.

``GET /recommendations`` and ``POST /feedback`` are each a few tens of microseconds of domain
work, and FastAPI's per-request machinery (its middleware layers, routing, parameter solving,
response-model validation and serialisation) costs more than that. :class:`ServiceApp` is the
FastAPI app with one addition: its ``__call__`` hands the *well-formed* requests of these two
routes to :class:`HotPath`, which parses the query string (or the JSON body) itself, validates
the body with the same pydantic model, calls the same service method, records the same metrics,
applies the same body limit and sends pre-serialised JSON bytes of the same shape as the
response model.

Everything else goes through the whole FastAPI stack, which stays the single definition of the
contract (the OpenAPI schema, every 422 message): a query string with anything unusual
(percent-encoding, repeated or unknown keys, values out of bounds), a body that is not plain
``application/json`` or fails validation, a cross-origin request when CORS is configured, an app
mounted under a root path. Errors raised by the service are answered by the app's own exception
handlers, so their status, body and headers are those of the FastAPI route; anything else is a
logged 500. FastAPI's native OpenTelemetry instrumentation does not see the hot requests (the
service's own Prometheus metrics do).
"""

from __future__ import annotations

import time
from collections.abc import Awaitable, Callable
from typing import Any

import orjson
from fastapi import FastAPI
from pydantic import ValidationError
from starlette.requests import Request

from serving.api.body_limit import BodyTooLargeError, declared_too_large
from serving.schemas import MAX_ID, MAX_K, FeedbackIn, FeedbackOut

ASGIApp = Callable[[dict[str, Any], Any, Any], Awaitable[None]]

_JSON_HEADERS = (b"content-type", b"application/json")
_MAX_ID_DIGITS = len(str(MAX_ID))


def _int_param(raw: bytes, high: int) -> int | None:
    """``raw`` as an int in ``1..high`` when it is plain decimal digits, else None."""
    if not raw.isdigit() or raw[0] == 48 or len(raw) > _MAX_ID_DIGITS:  # 48: b"0"
        return None
    value = int(raw)
    return value if value <= high else None


def parse_recommendation_query(query: bytes) -> tuple[int, int] | None:
    """``(user_id, k)`` from ``user_id=<n>[&k=<n>]`` (either order), or None.

    None means "not the common case": the caller leaves the request to the FastAPI route,
    which validates it (and answers 422 with its usual message where it is invalid).
    """
    user_id: int | None = None
    k: int | None = None
    for part in query.split(b"&"):
        name, sep, value = part.partition(b"=")
        if not sep:
            return None
        if name == b"user_id" and user_id is None:
            user_id = _int_param(value, MAX_ID)
            if user_id is None:
                return None
        elif name == b"k" and k is None:
            k = _int_param(value, MAX_K)
            if k is None:
                return None
        else:
            return None
    if user_id is None:
        return None
    return user_id, 10 if k is None else k


class ServiceApp(FastAPI):
    """FastAPI, with :class:`HotPath` in front of the middleware stack once it is enabled."""

    hot_path: HotPath | None = None

    def enable_hot_path(self, *, max_body_bytes: int, cors: bool) -> None:
        """Answer the hot routes directly (see the module doc); call once, before serving."""
        self.hot_path = HotPath(self, super().__call__, max_body_bytes=max_body_bytes,
                                cors=cors)

    async def __call__(self, scope: dict[str, Any], receive: Any, send: Any) -> None:
        if self.hot_path is not None and scope["type"] == "http":
            await self.hot_path(scope, receive, send)
        else:
            await super().__call__(scope, receive, send)


class HotPath:
    """Answer well-formed ``GET /recommendations`` and ``POST /feedback``; pass the rest on.

    Parameters
    ----------
    app : FastAPI
        Where the routes, the exception handlers and ``state`` (service, metrics) live.
    rest : ASGI app
        The whole FastAPI stack, for every request the hot path does not answer.
    max_body_bytes : int
        Feedback bodies over this get the same 413 as from the body-limit middleware.
    cors : bool
        CORS is configured: requests with an ``Origin`` header go through its middleware.
    """

    def __init__(self, app: FastAPI, rest: ASGIApp, *, max_body_bytes: int, cors: bool) -> None:
        self.app = app
        self.rest = rest
        self.max_body_bytes = max_body_bytes
        self.cors = cors

    async def __call__(self, scope: dict[str, Any], receive: Any, send: Any) -> None:
        path = scope["path"]
        if (path == "/recommendations" or path == "/feedback") and self._plain(scope):
            if path == "/recommendations" and scope["method"] == "GET":
                parsed = parse_recommendation_query(scope["query_string"])
                if parsed is not None:
                    await self._timed(self._recommendations, "GET", path, scope, receive, send,
                                      *parsed)
                    return
            elif path == "/feedback" and scope["method"] == "POST":
                await self._timed(self._feedback, "POST", path, scope, receive, send)
                return
        await self.rest(scope, receive, send)

    def _plain(self, scope: dict[str, Any]) -> bool:
        if scope.get("root_path"):
            return False
        return not self.cors or all(name != b"origin" for name, _ in scope["headers"])

    async def _timed(self, handler: Callable[..., Awaitable[int]], method: str, route: str,
                     scope: dict[str, Any], receive: Any, send: Any, *args: Any) -> None:
        start = time.perf_counter()
        status = 500
        try:
            status = await handler(scope, receive, send, *args)
        finally:
            if status:  # 0: handed to the FastAPI stack, which records it itself
                self.app.state.metrics.record_request(method, route, status,
                                                      time.perf_counter() - start)

    async def _recommendations(self, scope: dict[str, Any], receive: Any, send: Any,
                               user_id: int, k: int) -> int:
        state = self.app.state
        try:
            result = await state.service.recommend(user_id, k)
        except Exception as exc:
            return await self._error(scope, receive, send, exc)
        state.metrics.record_decision(result.arm)
        # The keys and order of RecommendationOut (tests check the two agree).
        body = orjson.dumps({
            "event_id": result.event_id, "user_id": result.user_id, "arm": result.arm,
            "propensity": result.propensity, "policy_version": result.policy_version,
            "cold_start": result.cold_start, "items": result.items,
        })
        return await _send_json(send, 200, body)

    async def _feedback(self, scope: dict[str, Any], receive: Any, send: Any) -> int:
        if declared_too_large(scope, self.max_body_bytes):
            return await self._too_large(scope, receive, send)
        content_type = None
        for name, value in scope["headers"]:
            if name == b"content-type":
                content_type = value
        chunks = []
        received = 0
        more = True
        while more:
            message = await receive()
            if message["type"] != "http.request":  # client gone: nothing to answer
                return 499
            chunk = message.get("body", b"")
            received += len(chunk)
            if received > self.max_body_bytes:
                return await self._too_large(scope, receive, send)
            chunks.append(chunk)
            more = message.get("more_body", False)
        raw = b"".join(chunks)
        body = None
        if content_type is not None and content_type.lower() == b"application/json":
            try:
                body = FeedbackIn.model_validate(orjson.loads(raw))
            except (orjson.JSONDecodeError, ValidationError, TypeError):
                body = None
        if body is None:
            # Not the common case: FastAPI reads the same body and answers as its route does.
            await self.rest(scope, _replay(raw, receive), send)
            return 0
        state = self.app.state
        try:
            result = await state.service.feedback(body)
        except Exception as exc:
            return await self._error(scope, receive, send, exc)
        if result.created:
            state.metrics.record_feedback(body.feedback_type.value)
        out = FeedbackOut.from_row(result.row)
        return await _send_json(send, 201 if result.created else 200,
                                out.model_dump_json().encode())

    async def _too_large(self, scope: dict[str, Any], receive: Any, send: Any) -> int:
        await BodyTooLargeError(self.max_body_bytes).response()(scope, receive, send)
        return 413

    async def _error(self, scope: dict[str, Any], receive: Any, send: Any,
                     exc: Exception) -> int:
        # The handler the app registered for this class or its nearest base, as starlette
        # picks it; the app's handler for Exception answers every bug with a logged 500.
        handlers = self.app.exception_handlers
        for cls in type(exc).__mro__:
            handler = handlers.get(cls)
            if handler is not None:
                response = await handler(Request(scope, receive), exc)
                await response(scope, receive, send)
                return response.status_code
        raise exc  # no handler even for Exception: an app built without create_app


def _replay(body: bytes, receive: Any) -> Any:
    """A ``receive`` that yields ``body`` once, then defers to the real one."""
    sent = False

    async def replay() -> dict[str, Any]:
        nonlocal sent
        if not sent:
            sent = True
            return {"type": "http.request", "body": body, "more_body": False}
        return await receive()

    return replay


async def _send_json(send: Any, status: int, body: bytes) -> int:
    await send({"type": "http.response.start", "status": status,
                "headers": [(b"content-length", str(len(body)).encode()), _JSON_HEADERS]})
    await send({"type": "http.response.body", "body": body})
    return status
