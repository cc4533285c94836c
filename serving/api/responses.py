"""JSON responses serialised by orjson (every route and error handler answers through these)."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import orjson
from starlette.responses import Response

#: ``Z`` for UTC times, as pydantic writes them.
_OPTIONS = orjson.OPT_UTC_Z


def json_response(content: Any, status_code: int = 200,
                  headers: Mapping[str, str] | None = None) -> Response:
    """``content`` as ``application/json`` (orjson: dataclasses, datetimes and enums included).

    Raises
    ------
    orjson.JSONEncodeError
        If ``content`` holds something orjson cannot write (a lone surrogate, a set, ...).
    """
    return Response(orjson.dumps(content, option=_OPTIONS), status_code=status_code,
                    headers=headers, media_type="application/json")
