"""Which database errors are outages (HTTP 503), the same for every backend."""

from __future__ import annotations

import functools
import sqlite3
from collections.abc import Callable
from typing import ParamSpec, TypeVar

import sqlalchemy as sa

from serving.errors import StoreUnavailableError

P = ParamSpec("P")
R = TypeVar("R")


class StoreNotFoundError(ValueError):
    """A store opened with ``create=False`` does not exist (nothing was created)."""


class StoreBusyError(Exception):
    """SQLite's write lock is held by another connection and the caller asked not to wait.

    Raised by ``Store.write_batch(..., wait=False)`` after the transaction was rolled back:
    nothing was written, and the batch can be retried where waiting is harmless (a thread).
    """


def store_unavailable(exc: BaseException) -> StoreUnavailableError | None:
    """The 503 error for ``exc`` if it means the store is down, unreachable or locked, else None.

    The one place that decides which database errors are outages: SQLAlchemy's operational,
    interface and pool time-out errors, any DBAPI error that invalidated its connection (a
    disconnect), and the raw ``sqlite3``/``psycopg`` operational errors of the fast read path.
    The message names the driver's reason, never the SQL.
    """
    if isinstance(exc, StoreUnavailableError):
        return exc
    if isinstance(exc, sa.exc.DBAPIError):
        if not (exc.connection_invalidated
                or isinstance(exc, sa.exc.OperationalError | sa.exc.InterfaceError)):
            return None
        reason: BaseException = exc.orig if exc.orig is not None else exc
    elif isinstance(exc, sa.exc.TimeoutError) or _is_operational(exc):
        reason = exc
    else:
        return None
    lines = str(reason).strip().splitlines()
    text = lines[0] if lines else type(reason).__name__
    error = StoreUnavailableError(f"the store is unavailable ({text}); retry later")
    error.__cause__ = exc
    return error


def store_unavailable_error(reason: str) -> StoreUnavailableError:
    """The 503 error for an outage the store noticed itself (``reason``: what happened)."""
    return StoreUnavailableError(f"the store is unavailable ({reason}); retry later")


def unavailable_on_db_error(fn: Callable[P, R]) -> Callable[P, R]:
    """Turn a lost connection or a lock time-out into :class:`StoreUnavailableError` (503)."""

    @functools.wraps(fn)
    def wrapper(*args: P.args, **kwargs: P.kwargs) -> R:
        try:
            return fn(*args, **kwargs)
        except Exception as exc:
            error = store_unavailable(exc)
            if error is None:
                raise
            raise error from exc

    return wrapper


def _is_operational(exc: BaseException) -> bool:
    """Whether a DBAPI error means the store is down or locked (rather than a bug)."""
    if isinstance(exc, sqlite3.OperationalError):
        return True
    try:
        import psycopg
    except ImportError:  # pragma: no cover - psycopg is a dependency
        return False
    return isinstance(exc, psycopg.OperationalError)


def database_errors() -> tuple[type[BaseException], ...]:
    """Every exception class a store call can raise from SQLAlchemy or a driver."""
    classes: list[type[BaseException]] = [sa.exc.DBAPIError, sa.exc.TimeoutError, sqlite3.Error]
    try:
        import psycopg
    except ImportError:  # pragma: no cover - psycopg is a dependency
        pass
    else:
        classes.append(psycopg.Error)
    return tuple(classes)


__all__ = [
    "StoreBusyError",
    "StoreNotFoundError",
    "database_errors",
    "store_unavailable",
    "store_unavailable_error",
    "unavailable_on_db_error",
]
