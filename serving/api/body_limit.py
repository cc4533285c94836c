"""Request bodies larger than ``max_body_bytes`` are answered 413 before anything is parsed.

One limit for every route, except those given their own (``POST /events`` takes batches).
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from fastapi.responses import JSONResponse
from starlette.exceptions import HTTPException as StarletteHTTPException
from starlette.types import Scope


class BodyTooLargeError(StarletteHTTPException):
    """A body over the limit; an HTTPException so FastAPI's body reader lets it through."""

    def __init__(self, max_bytes: int) -> None:
        super().__init__(413, f"request body larger than {max_bytes} bytes")

    def response(self) -> JSONResponse:
        """The 413 answer, ``{"detail": ..., "code": "body_too_large"}``."""
        return JSONResponse({"detail": self.detail, "code": "body_too_large"}, status_code=413)


def declared_too_large(scope: Scope, max_bytes: int) -> bool:
    """Whether the request's ``Content-Length`` already says the body is over ``max_bytes``."""
    for name, value in scope["headers"]:
        if name == b"content-length" and value.isdigit() and int(value) > max_bytes:
            return True
    return False


def body_limit(scope: Scope, max_bytes: int, per_path: Mapping[str, int]) -> int:
    """The body limit of the request in ``scope``: its path's own, else ``max_bytes``."""
    return per_path.get(scope["path"], max_bytes)


class BodyLimitMiddleware:
    """Answer 413 to a request body larger than ``max_bytes`` (declared or streamed).

    ``per_path`` gives some paths a limit of their own.
    """

    def __init__(self, app: Any, max_bytes: int, per_path: Mapping[str, int] | None = None
                 ) -> None:
        self.app = app
        self.max_bytes = max_bytes
        self.per_path = dict(per_path or {})

    async def __call__(self, scope: dict[str, Any], receive: Any, send: Any) -> None:
        """Pass an HTTP request on, or answer 413 once its body is over ``max_bytes``.

        ``scope``, ``receive`` and ``send`` are the ASGI call's; other scope types pass unchanged.
        """
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        limit = body_limit(scope, self.max_bytes, self.per_path)
        if declared_too_large(scope, limit):
            await BodyTooLargeError(limit).response()(scope, receive, send)
            return
        received = 0

        async def limited_receive() -> dict[str, Any]:
            nonlocal received
            message = await receive()
            if message["type"] == "http.request":
                received += len(message.get("body", b""))
                if received > limit:
                    raise BodyTooLargeError(limit)
            return message

        try:
            await self.app(scope, limited_receive, send)
        except BodyTooLargeError:
            await BodyTooLargeError(limit).response()(scope, receive, send)
