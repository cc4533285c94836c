"""Exceptions raised by :mod:`arms` and a helper for "did you mean" messages."""

from __future__ import annotations

import difflib
from collections.abc import Iterable


class DataUnavailableError(RuntimeError):
    """The MovieLens files are neither on disk nor downloadable."""


class NotFittedError(RuntimeError):
    """A recommender was used before ``fit``."""


def unknown_id_message(kind: str, value: object, known: Iterable[object]) -> str:
    """Message naming an unknown id and, where one is close, suggesting it."""
    known_text = [str(k) for k in known]
    close = difflib.get_close_matches(str(value), known_text, n=1)
    hint = f"; did you mean {close[0]}?" if close else ""
    return f"unknown {kind} {value!r}{hint}"
