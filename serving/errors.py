"""Domain errors of the service; :mod:`serving.app` maps each class to one HTTP status.

Routes and the service raise these, never ``HTTPException``, so the mapping lives in one place.
"""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any

from arms._validation import check_seed
from bandits.ope import check_n_bootstrap


class ArmNotServedError(ValueError):
    """A setting names an arm the settings' arm list does not hold (``arm_params``,
    ``holdout_baseline``), or has one value per arm of another number of arms than the
    default list (a list in ``policy_params``, the settings naming no arms). A command that
    reads a store, its settings naming no arms, then takes the live version's arms instead
    of the default list before refusing (:func:`serving.commands.settings_for_store`).
    """


class ServingError(Exception):
    """Base class; ``status_code`` is the HTTP status the handler answers with."""

    status_code = 500
    code = "internal"

    def __init__(self, message: str) -> None:
        super().__init__(message)
        self.message = message


class InvalidInputError(ServingError):
    """Well-formed JSON whose values make no sense here (unknown movie, movie not in slate)."""

    status_code = 422
    code = "invalid_input"


class EventNotFoundError(ServingError):
    """Feedback names an ``event_id`` the decision log does not hold."""

    status_code = 404
    code = "event_not_found"


class EventConflictError(ServingError):
    """Feedback names an event that was served to another user."""

    status_code = 409
    code = "event_of_another_user"


class UnauthorizedError(ServingError):
    """An admin endpoint was called without a bearer token."""

    status_code = 401
    code = "unauthorized"


class ForbiddenError(ServingError):
    """An admin endpoint was called with a wrong token, or admin is disabled."""

    status_code = 403
    code = "forbidden"


#: Exit status of a command, ``serve`` included, that found its store down, unreachable or
#: locked (nothing was done: run it again once the store answers).
STORE_UNAVAILABLE_EXIT = 3


class StoreUnavailableError(ServingError):
    """The store cannot be reached or is locked; the client should retry later."""

    status_code = 503
    code = "store_unavailable"
    retry_after_s = 2


class IdempotencyConflictError(ServingError):
    """An ``idempotency_key`` used again for an event that is not the same event."""

    status_code = 409
    code = "idempotency_key_reused"


class ItemExistsError(ServingError):
    """``POST /admin/items`` names an item the catalogue holds already."""

    status_code = 409
    code = "item_exists"


class UnsupportedMediaTypeError(ServingError):
    """A request body that is not JSON (``Content-Type`` other than ``application/json``)."""

    status_code = 415
    code = "unsupported_media_type"


class ClientGoneError(ServingError):
    """The client went away before sending its whole body: nobody is left to answer, and
    nothing was read or stored (one cut off at the body time-out is a
    :class:`RequestTimeoutError`).
    """

    status_code = 499
    code = "client_closed_request"


class RequestTimeoutError(ServingError):
    """The request's body did not arrive within ``body_timeout_s``: the server answered 408
    and closed the connection (``serving.api.protocol``); nothing was read or stored.
    """

    status_code = 408
    code = "request_timeout"


class RetrainBusyError(ServingError):
    """A retrain was asked for while another holds the retrain lease (on any worker or host),
    or this one's lease expired and was taken before it could publish.
    """

    status_code = 409
    code = "retrain_running"


class ModelVersionError(ServingError, ValueError):
    """A model version that cannot be shown, promoted or rolled back to (``serving.versions``):
    404 for an unknown version, 409 for one that cannot be served, 400 for a malformed ask,
    422 for a version that is no version number.

    Parameters
    ----------
    message : str
        Names the version and what is allowed.
    status_code : int, default 409
        The HTTP status the API answers with.
    """

    status_code = 409
    code = "model_version"

    def __init__(self, message: str, status_code: int = 409) -> None:
        super().__init__(message)
        self.status_code = status_code
        self.code = {404: "unknown_version", 400: "bad_models_request",
                     422: "invalid_version"}.get(status_code, "model_version")


class PromotionRefusedError(ServingError):
    """``POST /admin/shadow/promote`` with no shadow policy in force, or on a purged log."""

    status_code = 409
    code = "promotion_refused"


def check_bootstrap(n_bootstrap: Any) -> int:
    """``n_bootstrap`` (``--bootstrap`` on the command line) as an int, 0 (the rates without
    intervals) or from :data:`bandits.ope.MIN_BOOTSTRAP` to :data:`bandits.ope.MAX_BOOTSTRAP`:
    :func:`bandits.ope.check_n_bootstrap`, the one rule of every command's ``--bootstrap``
    (found by attack: one resample printed ``0.4667 [0.6000, 0.6000]``, an interval that
    excluded its estimate; found by a README check: 0 was refused here and taken by ``ope``).

    Raises
    ------
    TypeError
        Not an integer.
    ValueError
        Neither 0 nor within ``MIN_BOOTSTRAP`` to ``MAX_BOOTSTRAP``.
    """
    return check_n_bootstrap(n_bootstrap, name="n_bootstrap (--bootstrap)")


def check_bootstrap_seed(seed: Any) -> int:
    """``seed`` (``--bootstrap-seed``) as a seed (:func:`arms._validation.check_seed`, the
    lab's one seed rule), named as the option: numpy's "expected non-negative integer" named
    nothing (found by attack).

    Raises
    ------
    TypeError, ValueError
        Not an integer, or outside 0 to ``MAX_SEED``.
    """
    return check_seed(seed, "seed (--bootstrap-seed)")


def iso_time(unix_s: float, timespec: str = "seconds") -> str:
    """``unix_s`` as ISO 8601 in UTC, to the second (for messages; ``timespec`` as
    :meth:`datetime.isoformat`'s: ``"microseconds"`` where a limit is checked to the
    microsecond, ``"auto"`` for a time the user gave, said with the fraction it has); Unix
    seconds when the time lies beyond what a datetime holds (years 1-9999).
    """
    try:
        return datetime.fromtimestamp(unix_s, UTC).isoformat(timespec=timespec)
    except (OverflowError, OSError, ValueError):
        return f"{unix_s:.6f} (Unix seconds)"
