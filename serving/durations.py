"""The one rule of a duration setting (``retention_s``, ``retrain_every``, ...): seconds, or text
with a unit of :data:`DURATION_UNITS`.

Light on purpose (no pydantic): the CLI builds its help from :data:`DURATION_UNITS` without
importing the web stack (``experiments.cli`` imports serving lazily).
"""

from __future__ import annotations

import math
import re

from bandits.errors import DECIMAL_TEXT, short_repr

#: Seconds per unit of a duration setting (``"90s"``, ``"30m"``, ``"6h"``, ``"1d"``).
DURATION_UNITS = {"s": 1.0, "m": 60.0, "h": 3600.0, "d": 86_400.0}

_YEAR_S = 365.25 * 86_400
#: Longest duration a setting takes (100 years): the times it lets into the log (``retention_s``,
#: ``clock_skew_s``) stay ones every fold and answer can hold (found by attack: with
#: ``clock_skew_s=1e308`` an event stamped 1e300 was stored, then failed every fold and every
#: later start of the service); none needs more.
MAX_DURATION_S = 100 * _YEAR_S

#: A duration as text: a number in plain decimal digits (the numbers' rule, bandits.errors: a
#: fraction and an exponent allowed, as ``Settings.to_env`` writes a float; no ``_``, sign or
#: ``inf``; a leading minus taken so that a negative duration is said to be out of range, as a
#: negative number is), then a unit or none (seconds). No spaces, as no number takes any
#: (" 90 d " was taken while RECBANDITS_WORKERS=" 2" was refused, found in review).
_DURATION = re.compile(rf"(-?{DECIMAL_TEXT})(["
                       + "".join(map(re.escape, DURATION_UNITS)) + r"]?)")


def units_said() -> str:
    """The units as a sentence says them: ``s, m, h or d``."""
    *first, last = DURATION_UNITS
    return f"{', '.join(first)} or {last}"


def duration_allowed() -> str:
    """What a duration setting takes, as its refusals and the CLI's help say it."""
    return (f"a finite number of seconds in plain decimal digits, or one with a unit "
            f"{units_said()} (as '90s' or '6h')")


def longest_said() -> str:
    """:data:`MAX_DURATION_S` as a refusal says it: ``at most 100 years``."""
    return f"at most {MAX_DURATION_S / _YEAR_S:g} years ({MAX_DURATION_S:.0f} s)"


def parse_duration(value: object, *, off: bool = False) -> object:
    """A duration setting in seconds: text of a number with a unit of
    :data:`DURATION_UNITS` or none (seconds) as that many seconds; a number as given.

    A number's other checks (finite, the setting's own lower bound) are its type's (pydantic's,
    in :class:`serving.settings.Settings`); this rule refuses what would pass them wrongly.

    The message names the value, not the setting: callers add that (a settings error's
    ``retention_s:``, a variable's ``RECBANDITS_RETENTION_S='x':``), as for
    :func:`bandits.errors.integer_text`.

    Parameters
    ----------
    value : object
        Text or a number; anything else is returned as given, for the type's refusal.
    off : bool, default False
        Whether None, ``""`` and ``"off"`` (any case) mean none (``retrain_every``): then
        None is returned for them.

    Raises
    ------
    ValueError
        Text that is no duration, a bool, or a finite duration over :data:`MAX_DURATION_S`;
        the message names the value.
    """
    allowed = duration_allowed() + (", or 'off'" if off else "")
    if off and (value is None or (isinstance(value, str)
                                  and value.lower() in ("", "off"))):
        return None
    if isinstance(value, bool):  # pydantic's lax float reads True as 1 s
        raise ValueError(f"must be {allowed}, got {short_repr(value)}")
    if isinstance(value, str):
        match = _DURATION.fullmatch(value.lower())
        seconds = (math.inf if match is None
                   else float(match.group(1)) * DURATION_UNITS[match.group(2) or "s"])
        if not math.isfinite(seconds):  # as text: no duration ('6x', '1e999')
            raise ValueError(f"must be {allowed}, got {short_repr(value)}")
    elif isinstance(value, int | float):
        if isinstance(value, float) and not math.isfinite(value):
            return value  # the type's own refusal: "Input should be a finite number"
        if value > MAX_DURATION_S:  # compared as given: float() of a huge int overflows
            raise ValueError(f"must be {longest_said()}, got {short_repr(value)}")
        return float(value)
    else:
        return value
    if seconds > MAX_DURATION_S:
        raise ValueError(f"must be {longest_said()}, got {short_repr(value)}")
    return seconds
