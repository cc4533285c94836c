"""An event's ``idempotency_key`` used again: the same event (a retry) or a 409.

The check runs in the store's write transaction (``Store._write_rows``, and the PostgreSQL batch
writer), where the insert finds the key's stored row: a stored row of another payload fails the
whole transaction (nothing of it is written) with :class:`~serving.errors.IdempotencyConflictError`.
Checked there, under the write lock, it is exact when two requests race with one key and two
payloads (the one committed first is stored, the other is refused), and it costs no read of its
own: the write reads the stored row back for a duplicate anyway. Before, the service read the
batch's keys before the write (``feedback_rows``), one indexed read per keyed event (POST
/events, single keyed events: 3.6% of the worker's CPU in the profile of
``bench/realtime_load.py``) and let a racing payload through as a duplicate.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import TYPE_CHECKING

from serving.errors import IdempotencyConflictError, iso_time

if TYPE_CHECKING:  # the store imports this module
    from serving.store.types import Row



class RetryConflictError(IdempotencyConflictError):
    """The 409 of :meth:`RetryCheck.check`, naming the write it refused, so that the
    group-commit writer can commit the batch's other writes without it
    (:mod:`serving.store.writer`).

    Parameters
    ----------
    message : str
        What the client is told (``events[i]``, the key and what differs).
    values : dict
        The refused write's feedback columns: the very dict of its ``FeedbackWrite``.
    """

    def __init__(self, message: str, values: Row) -> None:
        super().__init__(message)
        self.values = values


def instant(at: float) -> float:
    """The Unix time of the microsecond the API states for ``at`` (an answer's ``timestamp``,
    as ``datetime.fromtimestamp`` rounds it): the one rule of when two times are one event's
    (:func:`same_instant`, and an event keyed by its time: ``serving.service.event_key``).
    A time already on a microsecond (any RFC 3339 text) is itself. ``at`` itself beyond the
    years a datetime holds.
    """
    try:
        return datetime.fromtimestamp(at, UTC).timestamp()
    except (OverflowError, OSError, ValueError):
        return at


def instant_range(low: float, high: float) -> tuple[float, float]:
    """The widest range of Unix times whose :func:`instant` lies within ``[low, high]``: what
    a search of a stored time (SQL, on its index) compares against, so that it answers as
    comparing instants does. A row stamped before times were rounded lies up to half a
    microsecond off the instant the API shows for it (found in review: an event without
    ``event_id`` stamped with its decision's time as shown found no decision, one naming it
    did). A bound that is not finite stays as it is.
    """
    return _instant_edge(low, -1.0), _instant_edge(high, 1.0)


def _instant_edge(edge: float, outward: float) -> float:
    """The float furthest from ``edge`` in the direction ``outward`` (-1 or 1) whose instant
    is still on ``edge``'s side (``>= edge`` below, ``<= edge`` above): half a microsecond out,
    then float steps, a few at Unix times of today (one step is 0.24 us there).
    """
    if not math.isfinite(edge):
        return edge

    def inside(x: float) -> bool:
        return instant(x) >= edge if outward < 0 else instant(x) <= edge

    x = edge + outward * 5e-7
    for _ in range(_MAX_STEPS):
        if inside(x):
            break
        x = math.nextafter(x, edge)
    else:
        return edge
    for _ in range(_MAX_STEPS):
        step = math.nextafter(x, outward * math.inf)
        if not inside(step):
            break
        x = step
    return x


#: Float steps :func:`_instant_edge` takes at most either way (a few are enough from half a
#: microsecond out; the bound only keeps a time no datetime holds from a long walk).
_MAX_STEPS = 64


def same_instant(a: float, b: float) -> bool:
    """Whether Unix times ``a`` and ``b`` are one instant as the API states times (the same
    microsecond: :func:`instant`). Found by attack: an event stamped by the service at
    02:47:02.5903406 was answered "02:47:02.590341", and a retry giving that timestamp back
    was refused as another event (409).
    """
    return instant(a) == instant(b)


@dataclass(frozen=True, slots=True)
class RetryCheck:
    """What a keyed event of ``POST /events`` must repeat to be a retry of a stored one.

    Attributes
    ----------
    index : int
        The event's place in its request (``events[index]`` in the message).
    idempotency_key : str
        The key as the client sent it.
    timestamp : bool
        The event gave its timestamp: a retry must give the same one.
    event_id : bool
        The event named its decision: a retry must name the same one.
    """

    index: int
    idempotency_key: str
    timestamp: bool
    event_id: bool

    def check(self, values: Row, stored: Row) -> None:
        """Raise unless the write of ``values`` (a feedback row's columns) repeats ``stored``,
        the row its key holds (the value always; the time and decision when the event gave
        them).

        Raises
        ------
        RetryConflictError
            409 (an :class:`~serving.errors.IdempotencyConflictError`) naming
            ``events[index]``, the key and what differs.
        """
        differs = []
        if stored["value"] != values["value"]:
            differs.append(f"value {stored['value']!r}, not {values['value']!r}")
        if self.timestamp and not same_instant(stored["created_at"], values["created_at"]):
            # In RFC 3339 with the fraction each has: two instants the API tells apart never
            # read alike (found by attack: within one second both read 13:08:55; then they
            # were said as Unix seconds beside RFC 3339 elsewhere in the same message).
            differs.append(f"timestamp {iso_time(stored['created_at'], 'auto')}, not "
                           f"{iso_time(values['created_at'], 'auto')}")
        if self.event_id and stored["event_id"] != values["event_id"]:
            differs.append(f"event_id {stored['event_id']!r}, not {values['event_id']!r}")
        if differs:
            raise RetryConflictError(
                f"events[{self.index}]: idempotency_key {self.idempotency_key!r} was used for "
                f"another {values['feedback_type']} event of this user and item "
                f"({'; '.join(differs)}): a retry must repeat its event, a new event needs a "
                "new key", values)


__all__ = ["RetryCheck", "RetryConflictError", "instant", "same_instant"]
