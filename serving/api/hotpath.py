"""The two hot routes answered without FastAPI's per-request machinery.

``GET /recommendations`` and ``POST /feedback`` are each a few tens of microseconds of domain
work, and FastAPI's routing, parameter solving, response-model validation and serialisation
cost more than that per request. :class:`HotPathMiddleware` answers the *well-formed* requests
of these two routes directly: it parses the query string (or the JSON body) itself, validates
the body with the same pydantic model, calls the same service method and sends pre-serialised
JSON bytes of the same shape as the response model.

Everything else goes to the FastAPI route, which stays the single definition of the contract
(the OpenAPI schema, every 422 message): a query string with anything unusual (percent-encoding,
repeated or unknown keys, values out of bounds), a body that is not plain ``application/json``
or fails validation. Domain errors raised by the service are answered by the app's own
exception handlers, so their status, body and headers are those of the FastAPI route.
"""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any

import orjson
from pydantic import ValidationError
from starlette.requests import Request

from serving.schemas import MAX_ID, MAX_K, FeedbackIn, FeedbackOut
from serving.store.repository import RATING_OF_TYPE

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


class HotPathMiddleware:
    """Answer well-formed ``GET /recommendations`` and ``POST /feedback`` directly.

    Sits inside the metrics, body-limit and CORS middleware (so they apply unchanged) and
    outside FastAPI's exception middleware (so service errors are mapped here, by the app's
    handlers). ``scope["route"]`` is set to the FastAPI route, which the metrics label uses.

    Parameters
    ----------
    app : ASGI app
        The rest of the stack (FastAPI's router).
    fastapi_app : FastAPI
        Where the routes, the exception handlers and ``state`` live.
    """

    def __init__(self, app: Any, fastapi_app: Any) -> None:
        self.app = app
        self.fastapi_app = fastapi_app
        self._routes: dict[tuple[str, str], Any] | None = None

    def _route(self, method: str, path: str) -> Any:
        if self._routes is None:
            from serving.api.routes import feedback, recommendations

            self._routes = {(m, r.path): r for module in (recommendations, feedback)
                            for r in module.router.routes for m in getattr(r, "methods", ())}
        return self._routes[method, path]

    async def __call__(self, scope: dict[str, Any], receive: Any, send: Any) -> None:
        if scope["type"] == "http" and not scope.get("root_path"):
            path = scope["path"]
            if path == "/recommendations" and scope["method"] == "GET":
                parsed = parse_recommendation_query(scope["query_string"])
                if parsed is not None:
                    await self._recommendations(scope, receive, send, *parsed)
                    return
            elif path == "/feedback" and scope["method"] == "POST":
                await self._feedback(scope, receive, send)
                return
        await self.app(scope, receive, send)

    async def _recommendations(self, scope: dict[str, Any], receive: Any, send: Any,
                               user_id: int, k: int) -> None:
        scope["route"] = self._route("GET", "/recommendations")
        state = self.fastapi_app.state
        try:
            result = await state.service.recommend(user_id, k)
        except Exception as exc:
            await self._error(scope, receive, send, exc)
            return
        state.metrics.decisions.labels(result.arm).inc()
        # The keys and order of RecommendationOut (tests check the two agree).
        body = orjson.dumps({
            "event_id": result.event_id, "user_id": result.user_id, "arm": result.arm,
            "propensity": result.propensity, "policy_version": result.policy_version,
            "cold_start": result.cold_start, "items": result.items,
        })
        await _send_json(send, 200, body)

    async def _feedback(self, scope: dict[str, Any], receive: Any, send: Any) -> None:
        content_type = None
        for name, value in scope["headers"]:
            if name == b"content-type":
                content_type = value
        chunks = []
        more = True
        while more:
            message = await receive()
            if message["type"] != "http.request":  # client gone: nothing to answer
                return
            chunks.append(message.get("body", b""))
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
            await self.app(scope, _replay(raw, receive), send)
            return
        scope["route"] = self._route("POST", "/feedback")
        state = self.fastapi_app.state
        try:
            result = await state.service.feedback(body)
        except Exception as exc:
            await self._error(scope, receive, send, exc)
            return
        if result.created:
            state.metrics.feedback.labels(body.feedback_type.value).inc()
        row = result.row
        out = FeedbackOut(
            id=row["id"], user_id=row["user_id"], movie_id=row["movie_id"],
            feedback_type=row["feedback_type"], event_id=row["event_id"], arm=row["arm"],
            reward=row["reward"], policy_updated=bool(row["counted"]),
            rating=RATING_OF_TYPE.get(row["feedback_type"]), note=row["note"],
            created_at=datetime.fromtimestamp(row["created_at"], UTC),
        )
        await _send_json(send, 201 if result.created else 200, out.model_dump_json().encode())

    async def _error(self, scope: dict[str, Any], receive: Any, send: Any,
                     exc: Exception) -> None:
        # The handler the app registered for this class (or its nearest base), as
        # starlette's ExceptionMiddleware would pick it; none: the server's 500.
        handlers = self.fastapi_app.exception_handlers
        for cls in type(exc).__mro__:
            handler = handlers.get(cls)
            if handler is not None:
                response = await handler(Request(scope, receive), exc)
                await response(scope, receive, send)
                return
        raise exc


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


async def _send_json(send: Any, status: int, body: bytes) -> None:
    await send({"type": "http.response.start", "status": status,
                "headers": [(b"content-length", str(len(body)).encode()), _JSON_HEADERS]})
    await send({"type": "http.response.body", "body": body})
