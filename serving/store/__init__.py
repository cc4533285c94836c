"""The service's storage: one backend-neutral :class:`Store`, one module per backend.

:func:`open_store` is the one place that looks at a URL's backend: a new backend is one new
module (a :class:`Store` subclass) and one entry in :data:`BACKENDS`.
"""

from __future__ import annotations

from typing import Any

import sqlalchemy as sa

from serving.store.base import Store
from serving.store.errors import (
    StoreBusyError,
    database_errors,
    parse_url,
    redact_url,
    store_unavailable,
    unavailable_on_db_error,
    unreadable_database,
)
from serving.store.postgresql import PostgreSQLStore
from serving.store.sqlite import SQLiteStore
from serving.store.types import (
    BatchResult,
    FeedbackResult,
    FeedbackWrite,
    Outcome,
    PeriodicJob,
    PolicyMeta,
)
from serving.store.writer import GroupCommitWriter

#: Store class of each SQLAlchemy backend name (the URL's scheme before any ``+driver``).
BACKENDS: dict[str, type[Store]] = {
    "sqlite": SQLiteStore,
    "postgresql": PostgreSQLStore,
}


def open_store(url: str, **options: Any) -> Store:
    """Open the store at ``url`` with the class of its backend.

    Parameters
    ----------
    url : str
        SQLAlchemy URL: ``sqlite:///path.db`` or ``postgresql+psycopg://user@host:port/db``.
    **options
        Keyword arguments of that class: ``timeout_s`` and ``create`` for every backend,
        ``sqlite_synchronous`` for SQLite (see :class:`SQLiteStore`).

    Raises
    ------
    TypeError
        If ``url`` is not a str, or an option is not one of the backend's.
    ValueError
        If ``url`` is not a URL of one of :data:`BACKENDS`, or the backend rejects it or an
        option's value.
    """
    return store_class_of(url)(url, **options)


def store_class_of(url: str) -> type[Store]:
    """The backend class of the store URL ``url``, after checking its text
    (:meth:`Store.check_url`): nothing is opened, created or connected to.

    Raises
    ------
    TypeError
        ``url`` not a str.
    ValueError
        Not a URL, or not one of :data:`BACKENDS` or of its driver, or a port that is not
        a number within :data:`bandits.errors.PORTS` (the password never shown).
    """
    if not isinstance(url, str):
        raise TypeError(f"db must be a URL string, got {type(url).__name__}")
    allowed = " or ".join(f"{name}://" for name in BACKENDS)
    try:
        parsed = parse_url(url)
    except sa.exc.ArgumentError as exc:
        raise ValueError(f"db must be an {allowed} URL, got {redact_url(url)!r}") from exc
    store_class = BACKENDS.get(parsed.get_backend_name())
    if store_class is None:
        raise ValueError(f"db must be an {allowed} URL (allowed backends: "
                         f"{', '.join(BACKENDS)}), got {redact_url(url)!r}")
    store_class.check_url(parsed)
    return store_class


def database_file(url: str) -> str | None:
    """The local file the store URL ``url`` names (an SQLite file), else None: a server's
    store, or text that is no store URL (the backend says, :meth:`Store.database_file`).
    """
    try:
        parsed = sa.engine.make_url(url)
    except (sa.exc.ArgumentError, TypeError, ValueError):
        return None
    store_class = BACKENDS.get(parsed.get_backend_name())
    return None if store_class is None else store_class.database_file(parsed)


__all__ = [
    "BACKENDS",
    "BatchResult",
    "FeedbackResult",
    "FeedbackWrite",
    "GroupCommitWriter",
    "Outcome",
    "PeriodicJob",
    "PolicyMeta",
    "PostgreSQLStore",
    "SQLiteStore",
    "Store",
    "StoreBusyError",
    "database_errors",
    "database_file",
    "open_store",
    "redact_url",
    "store_class_of",
    "store_unavailable",
    "unavailable_on_db_error",
    "unreadable_database",
]
