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

import contextlib
from collections.abc import Collection, Iterable, Mapping, Sequence
from typing import Any, TypeVar

from fastapi.exceptions import RequestValidationError
from pydantic import BaseModel, ValidationError
from starlette.requests import ClientDisconnect, Request

from serving.api.protocol import BODY_TIMED_OUT
from serving.errors import ClientGoneError, RequestTimeoutError, UnsupportedMediaTypeError
from serving.json_text import duplicate_key

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

    An object that names a key twice is refused too (:func:`duplicate_key`).

    Raises
    ------
    RequestValidationError
    """
    try:
        parsed = model.model_validate_json(raw)
    except ValidationError as exc:
        # A key named twice is said beside the other issues (found by a README check: it
        # came only once they were mended), unless the text is no JSON at all.
        errors = _errors(exc, "body")
        if not any(e["type"] == "json_invalid" for e in errors):
            # (what the second parser reads otherwise, a nesting too deep for it, is left)
            with contextlib.suppress(ValueError, RecursionError):
                errors += _duplicate_key_errors(duplicate_key(raw))
        raise RequestValidationError(errors) from None
    # Every member of every object has its colon: as many colons as top-level keys pydantic
    # set means one flat object with no key twice (a one-event feedback body), and the second
    # parse (5.4 us there, against pydantic's 1.9) is skipped; any other body is searched.
    repeated = _duplicate_key_errors(None if raw.count(b":") == len(parsed.model_fields_set)
                                     else duplicate_key(raw))
    if repeated:
        raise RequestValidationError(repeated)
    return parsed


def _duplicate_key_errors(key: str | None) -> list[dict[str, Any]]:
    """The 422 issue of a key named twice in one object (none for None)."""
    if key is None:
        return []
    return [{"loc": ("body",), "msg": f"the key {_text(key, SHOWN_KEY_CHARS)!r} appears twice "
                                      "in one object", "type": "duplicate_key"}]


#: The longest key a duplicate-key error quotes (the input is otherwise never echoed).
SHOWN_KEY_CHARS = 40


def is_json(content_type: str | None) -> bool:
    """Whether a request's ``Content-Type`` is JSON (none counts as JSON, as in FastAPI)."""
    if content_type is None:
        return True
    media = content_type.partition(";")[0].strip().lower()
    return media == "application/json" or (media.startswith("application/")
                                            and media.endswith("+json"))


#: ``charset`` labels a body read as UTF-8 may carry: UTF-8's, and ASCII's (a subset of it).
UTF8_LABELS = frozenset({"utf-8", "utf8", "us-ascii", "ascii"})


def _charsets(content_type: str | None) -> list[str]:
    """Every ``charset`` (or RFC 2231 ``charset*``) parameter of a ``Content-Type``, lower-cased
    and unquoted: all are checked (found by attack: only the first one was).
    """
    if content_type is None or ";" not in content_type:
        return []
    out = []
    for parameter in content_type.split(";")[1:]:
        name, _, value = parameter.partition("=")
        if name.strip().lower() in ("charset", "charset*"):
            out.append(value.strip().strip('"').lower())
    return out


async def json_body(request: Request, model: type[M]) -> M:
    """A request's JSON body as ``model``: the one reader of every route's body (the hot
    routes call it, the FastAPI routes through :class:`serving.api.deps.JsonBody`).

    Raises
    ------
    UnsupportedMediaTypeError
        As :func:`check_json_headers` (415).
    RequestValidationError
        As :func:`validate_json` (422).
    RequestTimeoutError, ClientGoneError
        As :func:`read_body` (408, 499).
    """
    check_json_headers(request)
    return validate_json(model, await read_body(request))


async def read_body(request: Request) -> bytes:
    """The body of ``request`` as it came.

    Raises
    ------
    RequestTimeoutError
        The server cut the client off at the body time-out (408, the answer it was sent).
    ClientGoneError
        The client went away before sending it all (499, heard by nobody).
    """
    try:
        return await request.body()
    except ClientDisconnect:
        timed_out = request.scope.get(BODY_TIMED_OUT)
        if timed_out is not None:
            raise RequestTimeoutError(timed_out) from None
        raise ClientGoneError("the client went away before sending its body") from None


def check_json_headers(request: Request) -> None:
    """Refuse (415) a body that is not JSON, not UTF-8 (a ``charset`` other than UTF-8) or
    encoded (a ``Content-Encoding`` other than ``identity``). Found by attack: a latin-1 or
    UTF-16 label was read as UTF-8 and a gzip one as plain text.

    Raises
    ------
    UnsupportedMediaTypeError
    """
    headers = request.headers
    content_types = headers.getlist("content-type")
    if len(content_types) > 1:  # which one the body is in is anybody's guess
        raise UnsupportedMediaTypeError("the request has several Content-Type headers; send one")
    content_type = content_types[0] if content_types else None
    if not is_json(content_type):
        raise UnsupportedMediaTypeError("the request body must be application/json")
    for charset in _charsets(content_type):
        if charset not in UTF8_LABELS:
            raise UnsupportedMediaTypeError(f"the request body must be UTF-8 JSON, got charset "
                                            f"{_text(charset, SHOWN_KEY_CHARS)!r}")
    # Every coding of every Content-Encoding header (repeated headers are one list in HTTP;
    # found by attack: a second header line was not read).
    codings = [c.strip().lower() for line in headers.getlist("content-encoding")
               for c in line.split(",")]
    encoded = [c for c in codings if c not in ("", "identity")]
    if encoded:
        # Read as it came, a compressed body would be a 422 at best, or a plain one taken
        # under a label that says otherwise.
        raise UnsupportedMediaTypeError(f"the request body must not be encoded, got "
                                        f"Content-Encoding {_text(encoded[0], SHOWN_KEY_CHARS)!r}; "
                                        "send it as is")


def _text(value: Any, limit: int | None = None) -> Any:
    # A lone surrogate (from a key or a message) cannot be written as UTF-8: escape it; and a
    # location part (an unknown key) is quoted at most ``limit`` long (found by attack: a
    # 15,000-character key came back whole).
    if isinstance(value, str):
        if limit is not None and len(value) > limit:
            value = value[:limit] + "..."
        return value.encode("utf-8", "backslashreplace").decode("utf-8")
    return value


def query_errors(names: Sequence[str], taken: Collection[str]) -> list[dict[str, Any]]:
    """Refuse (422, as any invalid query) the parameters ``names`` of a query (in order, a
    repeated one repeated) where a parameter is not in ``taken`` or is given more than once.
    The one rule of the queries of the routes that write (the read-only GETs do not call it):
    a contradiction (``?user_id=1&user_id=2``, ``?candidate=true&candidate=false``) must not
    be settled by taking the last value, and a typo (``?candidat=true``, ``?K=3``) must not
    act as the default. A lenient form, for routes ignoring a cache-buster, lost its last
    caller when every route that writes became strict.

    Returns
    -------
    list of dict
        One 422 issue per offending parameter (``unknown_parameter`` or
        ``repeated_parameter``), for a ``RequestValidationError`` with the route's other issues.
    """
    errors: list[dict[str, Any]] = [
        {"loc": ("query", name), "type": "unknown_parameter",
         "msg": f"unknown query parameter; this route takes {sorted(taken) or 'none'}"}
        for name in sorted(set(names) - set(taken))]
    errors += [{"loc": ("query", name), "msg": "given more than once; give it once",
                "type": "repeated_parameter"}
               for name in sorted(n for n in taken if names.count(n) > 1)]
    return errors


def invalid_request_body(errors: Iterable[Mapping[str, Any]]) -> dict[str, Any]:
    """The 422 body for pydantic/FastAPI errors: location, message and type of each."""
    return {"detail": [{"loc": [_text(part, SHOWN_KEY_CHARS) for part in error["loc"]],
                        "msg": _text(error["msg"]), "type": _text(error["type"])}
                       for error in errors],
            "code": "invalid_request"}
