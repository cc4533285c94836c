"""Which database errors are outages (HTTP 503), the same for every backend."""

from __future__ import annotations

import functools
import re
from collections.abc import Callable
from typing import ParamSpec, TypeVar

import sqlalchemy as sa

from bandits.errors import check_port as check_number
from serving.errors import StoreUnavailableError

P = ParamSpec("P")
R = TypeVar("R")


#: A ``key=value`` whose key names a secret (``password``, libpq's ``sslpassword``), in a URL's
#: query or in a libpq keyword string; the value ends at ``&`` or a space, or is quoted.
_SECRET_VALUE = re.compile(r"(?i)(\b\w*password\s*=\s*)('[^']*'|[^&\s]*)")


def redact_url(url: object) -> str:
    """``url`` as every message and banner shows it: a store URL without its passwords, the
    user part's (``user:***@``) and those of query parameters (``password=``,
    ``sslpassword=``); text that parses as no URL with everything between the user's ``:``
    and the last ``@`` masked, and any ``...password=`` value.

    The one place that hides a store's secret. Found by attack: ``postgres+psycopg://u:pw@...``
    (a misspelt scheme) and ``u:pw@host/db`` were echoed whole in their refusals, and
    ``?password=pw`` was shown by ``rebuild-state``'s store line, and ``u:pw@rest@h/db``
    the password's part after its ``@``; by review: ``u:p/w@h/db``, ``u:pa:ss@h/db`` and
    ``host=h password=x`` showed all or part of theirs.
    """
    text = str(url)
    try:
        parsed = sa.engine.make_url(text)
        if parsed.password is not None and "@" in (parsed.host or ""):
            # SQLAlchemy ends the password at its first "@": the rest of it was read as the
            # host's start (found by attack: "u:secret@part@h" showed host 'part@h').
            parsed = parsed.set(host=str(parsed.host).rsplit("@", 1)[1])
        shown = parsed.render_as_string(hide_password=True)
    except (sa.exc.ArgumentError, ValueError, TypeError):
        shown = text
        if "@" in text:
            userinfo, host = text.rsplit("@", 1)
            scheme, sep, user = userinfo.rpartition("://")
            if ":" in user:
                shown = f"{scheme}{sep}{user.split(':', 1)[0]}:***@{host}"
    # on the text: a "***" set in a parsed URL's query came out %2A%2A%2A
    return _SECRET_VALUE.sub(r"\1***", shown)


#: The port's text in a URL, by SQLAlchemy's own grammar (``sqlalchemy.engine.url``'s
#: ``_parse_url``): to name it when SQLAlchemy could not read it as a number.
_URL_PORT = re.compile(r"[\w+]+://(?:[^:/]*(?::[^@]*)?@)?(?:\[[^/?]+\]|[^/:?]+)?:(?P<port>[^/?]*)")


def check_url_port(port: object, url: object) -> None:
    """Refuse ``port``, a port store URL ``url`` names, unless it is a port by the rule of
    every port (:func:`bandits.errors.check_port`, said with the URL): for the port after
    the host (every backend: :func:`serving.store.store_class_of`) and a PostgreSQL URL's
    ``?port=`` (:meth:`serving.store.PostgreSQLStore.check_url`).

    Found in review: SQLAlchemy's "not a number" and the PostgreSQL check's range were
    refused in two wordings, and a ``?port=0`` was the driver's "connection is bad", said as
    an outage (retry later, exit 3).

    Raises
    ------
    ValueError
        ``port`` is not such a number: the message names it and ``url`` (its password hidden).
    """
    try:
        check_number(port)
    except ValueError as exc:
        raise ValueError(f"db: {exc} in {redact_url(url)!r}") from None


def check_port_text(url: str) -> None:
    """Refuse the port after the host of store URL ``url`` as written, as
    :func:`check_url_port` does: text SQLAlchemy could not parse (a ``ValueError`` of
    ``make_url``), or parsed with ``int()`` (``5_432``, ``+5432``, other scripts' digits)
    where the rule takes ASCII digits.
    """
    named = _URL_PORT.match(url)
    check_url_port("" if named is None else named["port"], url)


def parse_url(url: str) -> sa.engine.URL:
    """Store URL ``url`` parsed by SQLAlchemy, its port after the host checked as written
    (:func:`check_port_text`): the one parse of :func:`serving.store.store_class_of` and of
    every store's constructor (found in review: a store built in Python took ``:5_432``, which
    the command line refused).

    Raises
    ------
    sqlalchemy.exc.ArgumentError
        ``url`` is no URL (the caller words it with the backends allowed).
    ValueError
        Its port is not a port (:func:`check_url_port`), or its host holds an ``@`` (one of
        the password's, not percent-encoded).
    """
    try:
        parsed = sa.engine.make_url(url)
    except ValueError:  # "host:notaport": int()'s words, in a traceback, before
        check_port_text(url)
        raise  # (no other ValueError of make_url is known)
    if "@" in (parsed.host or ""):
        # A password's "@" not written %40: SQLAlchemy ends the password at the first "@" and
        # reads the rest as the host, which no server has (found by attack: "failed to resolve
        # host 'part@h'", the password's end in it, exit 3, and serve retried it for 120 s).
        raise ValueError(f"db: {redact_url(url)!r} has an '@' in its password, where an '@' ends "
                         "it: percent-encode it as %40")
    if parsed.port is not None:  # every backend's: SQLite's ignores it, but 0 is no port
        # As written, by the one rule (found by attack: SQLAlchemy's int() took 5_432, +5432
        # and other scripts' digits, which a ?port= was refused for).
        check_port_text(url)
    return parsed


def refused_message(refusal: str) -> str:
    """The one text of a refusal of the store URL (:func:`refused_connection`'s ``refusal``,
    what refused it and why).
    """
    return f"{refusal}; check --db or RECBANDITS_DB"


class StoreNotFoundError(ValueError):
    """A store opened with ``create=False`` does not exist (nothing was created)."""


class OlderStoreError(ValueError):
    """A store opened to be read only lacks what the upgrades of a newer recbandits add
    (``Store.create_schema``): a command that writes upgrades it (``serve``, ``retrain``,
    ``models promote``/``rollback``, ``purge``, ``shadow promote``), a reader writes nothing,
    so it refuses, naming what is missing (found by attack: a traceback per reader).
    """


class StoreAccessError(ValueError):
    """A store cannot be used with the access the user has: one opened to be read only
    cannot be read (SQLite's file; a PostgreSQL role denied a table), or a PostgreSQL role
    is denied a write that a command which writes the store makes (its upgrade at start too).
    """


class StoreBusyError(Exception):
    """SQLite's write lock is held by another connection and the caller asked not to wait.

    Raised by ``Store.write_batch(..., wait=False)`` after the transaction was rolled back:
    nothing was written, and the batch can be retried where waiting is harmless (a thread).
    """


def store_unavailable(exc: BaseException) -> StoreUnavailableError | None:
    """The 503 error for ``exc`` if it means the store is down, unreachable or locked, else None.

    The one place that decides which database errors are outages: SQLAlchemy's operational,
    interface and pool time-out errors, any DBAPI error that invalidated its connection (a
    disconnect), and the raw drivers' operational errors of the fast read path (each backend
    registers its driver's: :func:`register_driver_errors`).
    The message names the driver's reason, never the SQL.
    """
    if isinstance(exc, StoreUnavailableError):
        return exc
    if isinstance(exc, sa.exc.DBAPIError):
        if not (exc.connection_invalidated
                or (isinstance(exc, sa.exc.OperationalError | sa.exc.InterfaceError)
                    and _driver_says_outage(exc.orig))):
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


def store_timed_out(timeout_s: float) -> StoreUnavailableError:
    """The 503 error for a store that left a call unanswered for ``timeout_s`` seconds."""
    return store_unavailable_error(f"no answer from the store within {timeout_s:g} s")


def unavailable_on_db_error(fn: Callable[P, R]) -> Callable[P, R]:
    """Wrap ``fn``: a lost connection or a lock time-out becomes :class:`StoreUnavailableError`.

    Any other exception from ``fn`` propagates unchanged; the route layer answers the
    :class:`StoreUnavailableError` with a 503 and ``Retry-After``.
    """

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


#: The raw driver errors of every backend: the base class of each driver's errors, and the
#: ones meaning "down or locked" with the driver's test of which of them are. Each backend
#: module registers its own driver's (:func:`register_driver_errors`), so a new backend adds
#: its errors in its own file.
_DRIVER_ERRORS: list[type[BaseException]] = []
_OPERATIONAL_ERRORS: dict[type[BaseException], Callable[[BaseException], bool] | None] = {}
#: Each backend's test of a driver error saying the database is not one, or is damaged.
_UNREADABLE_TESTS: list[Callable[[BaseException], bool]] = []


#: Each backend's reading of a driver error in which the server refused the URL's user,
#: password or database, or the driver its options: what refused it and why, or None.
_REFUSED_TESTS: list[Callable[[BaseException], str | None]] = []


def register_driver_errors(base: type[BaseException], operational: type[BaseException],
                           outage: Callable[[BaseException], bool] | None = None,
                           unreadable: Callable[[BaseException], bool] | None = None,
                           refused: Callable[[BaseException], str | None] | None = None
                           ) -> None:
    """Make a backend's DBAPI driver errors known: ``base`` (every error of the driver) and
    ``operational`` (the store is down, unreachable or locked: a 503), of which ``outage``,
    if given, tells those that are (a driver that files other errors as operational too:
    SQLite's "no such column" is one); ``unreadable``, if given, tells a driver error saying
    the database is not one or is damaged (:func:`unreadable_database`); ``refused``, if
    given, reads the server's refusal of the URL's user, password or database, or the
    driver's of its options, as what refused it and why (:func:`refused_connection`).
    """
    if base not in _DRIVER_ERRORS:
        _DRIVER_ERRORS.append(base)
    _OPERATIONAL_ERRORS[operational] = outage
    if unreadable is not None and unreadable not in _UNREADABLE_TESTS:
        _UNREADABLE_TESTS.append(unreadable)
    if refused is not None and refused not in _REFUSED_TESTS:
        _REFUSED_TESTS.append(refused)


def refused_connection(exc: BaseException) -> str | None:
    """What refused the store URL and why, if ``exc``, or an error it was raised from, says
    the server answered and refused its user, password or database, or the driver refused
    its options before trying any server; else None.

    A mistake in the URL, not an outage: a command says it in one line and exits 2, and
    ``serve`` stops at once, where both said "the store is unavailable ...; retry later"
    (exit 3, and ``serve`` retried for ``startup_timeout_s``: found by attack). A request
    still gets its 503 (:func:`store_unavailable`): a password changed under a running
    service is an outage its operator mends.
    """
    seen: BaseException | None = exc
    for _ in range(8):  # the chain of causes, not a loop through a cycle
        if seen is None:
            return None
        orig = seen.orig if isinstance(seen, sa.exc.DBAPIError) else seen
        for test in _REFUSED_TESTS:
            reason = test(orig) if orig is not None else None
            if reason:
                return reason
        seen = seen.__cause__ or seen.__context__
    return None


def unreadable_database(exc: BaseException) -> BaseException | None:
    """The driver's error if ``exc`` (raw, or SQLAlchemy's around it) says the database is
    not a database or is damaged (a store file the user pointed at that is something else:
    their file, not a bug and not an outage), else None.
    """
    orig = exc.orig if isinstance(exc, sa.exc.DBAPIError) else exc
    if orig is not None and any(test(orig) for test in _UNREADABLE_TESTS):
        return orig
    return None


def _is_operational(exc: BaseException) -> bool:
    """Whether a raw DBAPI error means the store is down or locked (rather than a bug)."""
    return any(isinstance(exc, kind) and (outage is None or outage(exc))
               for kind, outage in _OPERATIONAL_ERRORS.items())


def _driver_says_outage(orig: BaseException | None) -> bool:
    """For SQLAlchemy's operational or interface error around ``orig``: False only when its
    driver's test says ``orig`` is not an outage (found by review: a SQLite store whose table
    lacked a column answered 503 "retry later", and the CLI exited 3, as for a locked one).
    """
    for kind, outage in _OPERATIONAL_ERRORS.items():
        if isinstance(orig, kind) and outage is not None:
            return outage(orig)
    return True


def database_errors() -> tuple[type[Exception], ...]:
    """Every exception class a store call can raise from SQLAlchemy or a driver."""
    return (sa.exc.DBAPIError, sa.exc.TimeoutError, *_DRIVER_ERRORS)


__all__ = [
    "StoreBusyError",
    "StoreNotFoundError",
    "check_port_text",
    "check_url_port",
    "database_errors",
    "parse_url",
    "register_driver_errors",
    "store_timed_out",
    "store_unavailable",
    "store_unavailable_error",
    "unavailable_on_db_error",
    "unreadable_database",
]
