"""The one validation of requests: pydantic models, and the one shape of a 422.

Every route's JSON body is read by :func:`json_body` (the FastAPI routes' through
:class:`serving.api.deps.JsonBody`: FastAPI never parses a body); the hot routes validate their
query with :func:`validate`, FastAPI the other routes' parameters itself. Both end in
:class:`fastapi.exceptions.RequestValidationError`, which the app's one handler turns into
:func:`invalid_request_body`: ``{"detail": [{"loc", "msg", "type"}, ...], "code":
"invalid_request"}``. The offending input is never echoed back: it may be non-finite (``NaN``,
``1e400``), which JSON cannot carry and FastAPI's own handler failed to render (a 500), or
large.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from typing import Any, TypeVar

from fastapi.exceptions import RequestValidationError
from pydantic import BaseModel, ValidationError
from starlette.requests import ClientDisconnect, Request

from serving.errors import ClientGoneError, UnsupportedMediaTypeError

M = TypeVar("M", bound=BaseModel)


def _errors(exc: ValidationError, where: str) -> list[dict[str, Any]]:
    return [{**error, "loc": (where, *error["loc"])}
            for error in exc.errors(include_url=False, include_input=False,
                                    include_context=False)]


def validate(model: type[M], data: Mapping[str, Any], where: str) -> M:
    """``model`` from ``data`` (a query's parameters, a header set), or a 422.

    Parameters
    ----------
    model : pydantic model class
    data : mapping
        The raw values (strings, for a query).
    where : {"query", "header", "path"}
        First element of each error's ``loc``.

    Raises
    ------
    RequestValidationError
        With every issue located under ``where``.
    """
    try:
        return model.model_validate(data)
    except ValidationError as exc:
        raise RequestValidationError(_errors(exc, where)) from None


def validate_json(model: type[M], raw: bytes) -> M:
    """``model`` from a JSON body (pydantic's parser: malformed JSON, ``NaN``, ``Infinity``,
    ``1e400`` and lone surrogates are issues like any other), or a 422 located under ``body``.

    Raises
    ------
    RequestValidationError
    """
    try:
        return model.model_validate_json(raw)
    except ValidationError as exc:
        raise RequestValidationError(_errors(exc, "body")) from None


def is_json(content_type: str | None) -> bool:
    """Whether a request's ``Content-Type`` is JSON (none counts as JSON, as in FastAPI)."""
    if content_type is None:
        return True
    media = content_type.partition(";")[0].strip().lower()
    return media == "application/json" or (media.startswith("application/")
                                            and media.endswith("+json"))


async def json_body(request: Request, model: type[M]) -> M:
    """A request's JSON body as ``model``: the one reader of every route's body (the hot
    routes call it, the FastAPI routes through :class:`serving.api.deps.JsonBody`).

    Raises
    ------
    UnsupportedMediaTypeError
        A body that is not JSON (415).
    RequestValidationError
        As :func:`validate_json` (422).
    ClientGoneError
        The client went away before sending it all, or was cut off at the body time-out
        (499, heard by nobody).
    """
    if not is_json(request.headers.get("content-type")):
        raise UnsupportedMediaTypeError("the request body must be application/json")
    try:
        raw = await request.body()
    except ClientDisconnect:
        raise ClientGoneError("the client went away before sending its body") from None
    return validate_json(model, raw)


def _text(value: Any) -> Any:
    # A lone surrogate (from a key or a message) cannot be written as UTF-8: escape it.
    if isinstance(value, str):
        return value.encode("utf-8", "backslashreplace").decode("utf-8")
    return value


def invalid_request_body(errors: Iterable[Mapping[str, Any]]) -> dict[str, Any]:
    """The 422 body for pydantic/FastAPI errors: location, message and type of each."""
    return {"detail": [{"loc": [_text(part) for part in error["loc"]],
                        "msg": _text(error["msg"]), "type": _text(error["type"])}
                       for error in errors],
            "code": "invalid_request"}
