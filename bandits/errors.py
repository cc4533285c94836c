"""Exceptions of the ``bandits`` package and the checks that raise them.

Every user-facing check lives here so the messages read the same everywhere: they name the
parameter, show the value received and say what is allowed. Wrong types raise ``TypeError``,
wrong values ``ValueError`` (``UnknownArmError`` is a ``ValueError`` too, with a "did you mean").
"""

from __future__ import annotations

import difflib
import re
from collections import Counter
from collections.abc import Mapping, Sequence
from numbers import Integral, Real
from typing import Any

import numpy as np


class UnknownArmError(ValueError):
    """An arm name or position that the policy does not have."""


class PerArmLengthError(ValueError):
    """A per-arm hyper-parameter (a list) whose length is not the number of arms."""


#: Most arms a policy, the multileaving policy or a detector takes. Every step reads a
#: statistic of each arm, and the propensities of the quadrature policies cost K x K x grid
#: values; ``ThompsonSampling(10**9)`` ran out of the machine's 23 GiB building its names
#: (found by attack). A choice among more items than this is a ranking, an arm's job.
MAX_ARMS = 100_000


#: Most bytes the statistics of one batched state may take (every run together: a policy's own
#: one-run state, a simulation task's block of runs). Sizes multiply: a sliding window holds
#: ``runs x window`` slots, a ridge model ``runs x arms x n_features**2`` numbers, and
#: ``SlidingWindowThompsonSampling(window=10**12)`` and ``LinUCB(n_features=10**6)`` failed
#: with numpy's MemoryError asking 7.28 TiB while ``window=10**8`` took 7.5 GB per simulation
#: task (found by attack). The ceiling of the environments' draws
#: (``envs.vector_env.MAX_DRAW_BYTES``), for the same machine.
MAX_STATE_BYTES = 2 * 2**30


def format_bytes(n: float) -> str:
    """``n`` bytes as a short text in binary units: ``'1.49 GiB'``, ``'512 B'``."""
    units = ("B", "KiB", "MiB", "GiB", "TiB", "PiB", "EiB")
    i = 0
    while n >= 1024 and i < len(units) - 1:
        n /= 1024
        i += 1
    return f"{n:.0f} {units[i]}" if i == 0 else f"{n:.3g} {units[i]}"


def check_arm_names(arms: Sequence[str] | int, name: str = "arms") -> list[str]:
    """Arm names from a list of unique non-empty strings or a count (named ``arm0``, ...).

    Raises
    ------
    TypeError
        ``arms`` is neither an int nor a sequence of str.
    ValueError
        Fewer than one arm or more than :data:`MAX_ARMS`, empty or duplicate names.
    """
    if isinstance(arms, Integral) and not isinstance(arms, bool):
        count = int(arms)
        if not 1 <= count <= MAX_ARMS:
            raise ValueError(f"{name}={arms!r}: a policy takes from 1 to {MAX_ARMS:,} arms")
        return [f"arm{i}" for i in range(count)]
    if isinstance(arms, str) or not isinstance(arms, Sequence):
        raise TypeError(f"{name} must be a list of str or an int, got {type(arms).__name__}")
    if len(arms) > MAX_ARMS:
        raise ValueError(f"{name} names {len(arms):,} arms; a policy takes from 1 to "
                         f"{MAX_ARMS:,}")
    names = list(arms)
    if not names:
        raise ValueError(f"{name}=[]: need at least one arm")
    for arm in names:
        if not isinstance(arm, str):
            raise TypeError(f"{name} must contain str, got {arm!r} ({type(arm).__name__})")
        if not arm:
            raise ValueError(f"{name} contains an empty name; arm names must be non-empty")
    dupes = sorted(a for a, n in Counter(names).items() if n > 1)  # (count() was K x K)
    if dupes:
        raise ValueError(f"{name} contains duplicates {dupes}; arm names must be unique")
    return names


def arm_index(arms: list[str], arm: Any, name: str = "arm") -> int:
    """Position of ``arm`` (a name or a position) in ``arms``.

    Raises
    ------
    UnknownArmError
        Unknown name (with the closest names) or position out of range.
    TypeError
        Neither str nor int.
    """
    if isinstance(arm, str):
        try:
            return arms.index(arm)
        except ValueError:
            close = difflib.get_close_matches(arm, arms, n=3)
            hint = f"; did you mean {close}?" if close else ""
            raise UnknownArmError(f"{name}={arm!r} is not an arm; arms are {arms}{hint}") from None
    if isinstance(arm, Integral | np.integer) and not isinstance(arm, bool):
        if 0 <= int(arm) < len(arms):
            return int(arm)
        raise UnknownArmError(
            f"{name}={int(arm)} is out of range; positions are 0..{len(arms) - 1} ({arms})"
        )
    raise TypeError(f"{name} must be an arm name (str) or position (int), got {type(arm).__name__}")


def check_real(value: Any, name: str, *, low: float | None = None, high: float | None = None,
               low_open: bool = False, high_open: bool = False) -> float:
    """``value`` as a finite float inside the given bounds.

    Raises
    ------
    TypeError
        Not a real number.
    ValueError
        NaN, infinite or outside ``[low, high]`` (open ends where asked).
    """
    if isinstance(value, bool) or not isinstance(value, Real | np.floating | np.integer):
        raise TypeError(f"{name} must be a real number, got {value!r} ({type(value).__name__})")
    x = float(value)
    if not np.isfinite(x):
        raise ValueError(f"{name}={x!r} must be finite")
    lo_bad = low is not None and (x <= low if low_open else x < low)
    hi_bad = high is not None and (x >= high if high_open else x > high)
    if lo_bad or hi_bad:
        lb = "(" if low_open or low is None else "["  # an unbounded end is open
        hb = ")" if high_open or high is None else "]"
        lo = "-inf" if low is None else f"{low:g}"
        hi = "inf" if high is None else f"{high:g}"
        raise ValueError(f"{name}={x!r} is outside the allowed range {lb}{lo}, {hi}{hb}")
    return x


def check_int(value: Any, name: str, *, low: int | None = 1) -> int:
    """``value`` as an int ``>= low`` (``low`` None: any int, for a caller that says its own
    range).

    Raises
    ------
    TypeError
        Not an integer.
    ValueError
        Smaller than ``low``.
    """
    if isinstance(value, bool) or not isinstance(value, Integral | np.integer):
        raise TypeError(f"{name} must be an int, got {value!r} ({type(value).__name__})")
    if low is not None and int(value) < low:
        raise ValueError(f"{name}={int(value)} must be >= {low}")
    return int(value)


def check_per_arm(value: Any, name: str, n_arms: int, *, low: float, low_open: bool,
                  high: float | None = None) -> np.ndarray:
    """A scalar or one value per arm, as a float array of shape ``(n_arms,)``.

    Raises
    ------
    TypeError, ValueError
        Wrong type, wrong length (:class:`PerArmLengthError`) or a value outside ``(low,
        high]`` / ``[low, high]`` (no upper bound when ``high`` is None).
    """
    if isinstance(value, Sequence | np.ndarray) and not isinstance(value, str):
        values = list(value)
        if len(values) != n_arms:
            raise PerArmLengthError(f"{name} has {len(values)} values; expected one per arm "
                                    f"({n_arms})")
        return np.array([check_real(v, f"{name}[{i}]", low=low, low_open=low_open, high=high)
                         for i, v in enumerate(values)], dtype=np.float64)
    return np.full(n_arms, check_real(value, name, low=low, low_open=low_open, high=high))


#: Numbers given as text (an option, a variable, a query string), the project's one rule:
#: plain ASCII decimal digits, a leading minus taken (so that a negative number is said to be
#: out of range by the check that follows); a real number may add a fraction and an exponent.
#: No "_", "+", spaces, "inf" or other scripts' digits, all of which int() and float() take
#: (found in review: ``serve --workers 1_6`` and ``RECBANDITS_WORKERS=1_6`` meant 16, while
#: ``--port 8_000`` was refused).
#: A number's digits without a sign: digits with an optional fraction, an optional exponent
#: (also the number of a duration setting's text, serving.durations).
DECIMAL_TEXT = r"(?:[0-9]+(?:\.[0-9]*)?|\.[0-9]+)(?:[eE][-+]?[0-9]+)?"
_INTEGER_TEXT = re.compile(r"-?[0-9]+")
#: ("inf" and "nan" are read, for the range check that follows to refuse them by name: "must be
#: finite".)
_NUMBER_TEXT = re.compile(rf"-?(?:{DECIMAL_TEXT}|(?i:inf|infinity|nan))")
#: Longest integer text read: int() refuses over 4,300 digits with its own error.
MAX_INTEGER_DIGITS = 4000


def integer_text(text: str) -> int:
    """The integer that ``text`` writes in plain decimal digits (an optional leading minus).

    The message names the value, not where it was given: callers add that (argparse's
    ``argument --workers:``, a variable's ``RECBANDITS_WORKERS='1_6':``).

    Raises
    ------
    ValueError
        Anything else (``"1_6"``, ``"+1"``, ``" 1"``, ``"1.0"``, ``"\u0661"``).
    """
    if (not isinstance(text, str) or _INTEGER_TEXT.fullmatch(text) is None
            or len(text) > MAX_INTEGER_DIGITS):
        raise ValueError(f"must be an integer in plain decimal digits, got {short_repr(text)}")
    return int(text)


def number_text(text: str) -> float:
    """The real number that ``text`` writes in plain decimal digits: an optional leading
    minus, digits with an optional fraction, an optional exponent (``"0.5"``, ``"1e-3"``);
    ``"inf"`` and ``"nan"`` as floats, for the caller's range check to refuse by name.

    Raises
    ------
    ValueError
        Anything else (``"1_0"``, ``"+1"``, ``" 1"``, ``"0x1"``).
    """
    if not (isinstance(text, str) and _NUMBER_TEXT.fullmatch(text)):
        raise ValueError(f"must be a number in plain decimal digits, got {short_repr(text)}")
    return float(text)


#: TCP port numbers an address may name (0 names none a client can connect to): a Dask
#: scheduler's (``experiments.config``) and a store URL's (``serving.store``).
PORTS = (1, 65_535)


def check_port(text: object) -> int:
    """The port that ``text`` (a URL's or an address's port, as written) names, if it is ASCII
    digits within :data:`PORTS`: the one rule and message of a port, wherever one is given.

    Raises
    ------
    ValueError
        Anything else, named (callers say where it was given).
    """
    low, high = PORTS
    shown = str(text)
    # The length first: int() of 4,301 digits or more raises its own error (found by attack).
    if not (shown.isascii() and shown.isdigit() and len(shown) <= len(str(high))
            and low <= int(shown) <= high):
        raise ValueError(f"the port must be a number from {low} to {high:,}, got "
                         f"{short_repr(shown)}")
    return int(shown)


#: Largest reward magnitude any policy learns, also where its support is otherwise unbounded
#: (EpsilonGreedy, GaussianThompsonSampling, LinUCB, LinTS): the running sums must stay finite
#: (two rewards of 1e308 made EpsilonGreedy's sum inf, its propensities [0.5, 0, 0.5] and its
#: state_dict no longer JSON). At 1e15 the sums of squares of 1e8 rewards stay below float32's
#: 3.4e38 (a simulation's statistics), and far larger than any rating, count or revenue.
MAX_ABS_REWARD = 1e15


def reward_bounds(low: float | None, high: float | None) -> tuple[float, float]:
    """The support ``[low, high]`` a policy accepts rewards in, an unbounded end (None) taken at
    :data:`MAX_ABS_REWARD` in magnitude (the rule of :func:`check_rewards`).
    """
    return (-MAX_ABS_REWARD if low is None else max(low, -MAX_ABS_REWARD),
            MAX_ABS_REWARD if high is None else min(high, MAX_ABS_REWARD))


def real_array(values: Any, name: str, *, allow_bool: bool = False) -> np.ndarray:
    """``values`` (an array or nested sequence) as a float64 array, if it holds real numbers.

    numpy's own conversion reads ``"1"`` as 1.0 and drops an imaginary part with a mere
    warning, so strings, complex numbers and anything else that is not a real number are
    refused here; booleans too unless ``allow_bool`` (clicks may come as a mask; a reward
    ``True`` is refused as the single-step ``update`` refuses it). Found by attack: a string
    reward array passed the support check and then failed half-way through a batched update,
    which had counted the pulls but not their rewards.

    Raises
    ------
    TypeError
        ``values`` holds something other than real numbers (the message shows the first).
    """
    x = np.asarray(values)
    kinds = "iufb" if allow_bool else "iuf"
    if x.dtype.kind in kinds:
        return np.asarray(x, dtype=np.float64)
    flat = x.reshape(-1)
    if x.dtype.kind == "O":  # Python objects: real numbers among them are fine

        def real(v: Any) -> bool:
            boolean = isinstance(v, bool | np.bool_)
            return (isinstance(v, Real) or boolean) and (allow_bool or not boolean)

        bad = next((v for v in flat if not real(v)), None)
        if bad is None:
            return np.asarray(x, dtype=np.float64)
    else:
        bad = flat[0] if flat.size else None
    allowed = "real numbers" + (" or booleans" if allow_bool else "")
    shown = "" if bad is None else f" (first: {short_repr(bad)})"
    raise TypeError(f"{name} must hold {allowed}, got an array of {x.dtype}{shown}")


#: Most quadrature intervals a policy's propensities are computed on. The quadrature's arrays
#: are (rows, arms, grid): 10**9 was taken and failed at the first call asking 7.45 GiB, and
#: 2**70 with numpy's words (found by attack). The defaults are 256 (the service) to 2,048
#: (LinTS), whose pmfs differ by ~3e-5; 8,192 is four times the finest default.
MAX_PROPENSITY_GRID = 8192


def check_propensity_grid(value: Any) -> int:
    """``propensity_grid`` as an int from 2 to :data:`MAX_PROPENSITY_GRID`: the one check of
    every policy that computes its propensities by quadrature.

    Raises
    ------
    TypeError
        Not an int.
    ValueError
        Below 2 or above :data:`MAX_PROPENSITY_GRID`.
    """
    n = check_int(value, "propensity_grid", low=None)
    if not 2 <= n <= MAX_PROPENSITY_GRID:  # one message for both ends (review)
        raise ValueError(f"propensity_grid={n} is outside the allowed range "
                         f"[2, {MAX_PROPENSITY_GRID}]")
    return n


def check_probabilities(values: Any, name: str, *, slack: float = 0.0) -> np.ndarray:
    """``values`` as a float64 array whose every entry lies in ``[0, 1]`` (within ``slack``,
    for a quadrature's rounding): the one check of "is a probability" of
    :func:`bandits.exploration.floor_probabilities` and :func:`bandits.ucb.bernoulli_kl`.

    Raises
    ------
    TypeError
        Not real numbers (:func:`real_array`).
    ValueError
        An entry NaN or outside ``[0, 1]`` (the message shows the first).
    """
    x = real_array(values, name)
    inside = (x >= -slack) & (x <= 1.0 + slack)  # NaN fails both
    if not inside.all():
        raise ValueError(f"{name} contains {float(x[~inside].flat[0])!r}; each must lie in "
                         "[0, 1]")
    return x


def check_reward_value(reward: Any) -> float:
    """One observed ``reward`` as a float, if it is a real number (not a bool, a string or a
    complex number, numpy's included): the single-step ``update`` of every policy and drift
    detector (the detectors took ``np.complex128`` and dropped its imaginary part).

    Raises
    ------
    TypeError
        ``reward`` is not a real number.
    """
    if isinstance(reward, bool | np.bool_) or not isinstance(reward, Real):
        raise TypeError(f"reward must be a real number, got {reward!r}")
    return float(reward)


def check_rewards(rewards: Any, name: str, low: float | None, high: float | None, *,
                  allow_bool: bool = False) -> np.ndarray:
    """Validate a reward array (any shape) against the support ``[low, high]``; returns it
    as float64.

    An unbounded end (None) is taken at :data:`MAX_ABS_REWARD` in magnitude.

    Raises
    ------
    TypeError
        Not real numbers (strings, complex numbers, booleans unless ``allow_bool``:
        :func:`real_array`).
    ValueError
        NaN, infinite or outside the support; the message shows the first offending value.
    """
    low, high = reward_bounds(low, high)
    r = real_array(rewards, name, allow_bool=allow_bool)
    bad = ~((r >= low) & (r <= high))  # NaN fails both; both ends are finite
    if bad.any():
        first = r.reshape(-1)[np.flatnonzero(bad.reshape(-1))[0]]
        lo, hi = f"{low:g}", f"{high:g}"
        raise ValueError(
            f"{name}={float(first)!r} is outside the policy's reward support [{lo}, {hi}] "
            "(NaN and infinities are never allowed)"
        )
    return r


#: Largest count (pulls, successes, failures, observations) a restored state may hold: 2**53,
#: where float64 stops counting (``2.0**53 + 1 == 2.0**53``), so no policy's own updates go past
#: it. Below the Beta quadrature's NaN (from ~1e18, see ``bandits.thompson.BETA_PRIOR_MAX``).
MAX_COUNT = 2.0**53


def short_repr(value: Any, limit: int = 60) -> str:
    """``repr(value)`` cut to ``limit`` characters (with ``...``), for messages."""
    text = repr(value)
    return text if len(text) <= limit else text[:limit - 3] + "..."


def check_state_type(state: Any, expected: type, owner: str) -> None:
    """Refuse a ``state`` that is not an ``expected`` (``BatchState``, ...) with the one
    message of the three batched owners (:func:`check_state_layout` checks the rest).

    Raises
    ------
    TypeError
        ``state must be a BatchState from UCB1.init_batch, got dict``.
    """
    if not isinstance(state, expected):
        raise TypeError(f"state must be a {expected.__name__} from {owner}.init_batch, got "
                        f"{type(state).__name__}")


def check_state_layout(arrays: Mapping[str, np.ndarray], tails: Mapping[str, tuple[int, ...]],
                       owner: str) -> int:
    """The number of runs of a batched state, after checking it is laid out as ``owner``'s.

    The one check that a state handed back to a policy, the multileaving policy or a drift
    detector (``select_batch``, ``update_batch``, ...) is one of its own: the same statistics,
    each of shape ``(R, *tail)``. A state built for 3 arms and given to a 5-arm policy was read
    with the wrong arm count, choosing among the first three arms only, silently (found by
    review). Names and shapes only, no values: 4-6 us a call (select_batch itself, one run:
    110-160 us; measured by review).

    Parameters
    ----------
    arrays : mapping of str to ndarray
        The state's statistics.
    tails : mapping of str to tuple of int
        Every statistic's shape past the run axis, as ``owner`` builds them.
    owner : str
        Who reads the state, for the messages (``"ThompsonSampling with 5 arms"``).

    Raises
    ------
    ValueError
        Other statistics, another shape past the run axis, or runs that differ between them.
    """
    if arrays.keys() != tails.keys():
        raise ValueError(f"the state holds the statistics {sorted(arrays)}, not the "
                         f"{sorted(tails)} of {owner}: a state from another policy or detector")
    n_runs = -1
    for key, tail in tails.items():
        shape = arrays[key].shape
        if n_runs < 0:
            n_runs = shape[0] if shape else -1
        if len(shape) != len(tail) + 1 or shape[1:] != tail or shape[0] != n_runs:
            raise ValueError(f"the state's {key!r} has shape {shape}; {owner} expects "
                             f"(runs, {', '.join(map(str, tail))}): a state from before an arm "
                             "was added or removed, or from another policy or detector")
    return n_runs


def check_stat(value: Any, name: str, shape: tuple[int, ...], *,
               low: float | np.ndarray | None = None, high: float | np.ndarray | None = None,
               integral: bool = False, why: str = "") -> np.ndarray:
    """A restored statistic (a saved state's numbers) as an array of ``shape``, every entry in
    ``[low, high]``.

    The one check of the statistics a policy or detector restores from a saved state: the
    entry-wise ranges go through :func:`check_real`, so the message reads like a parameter's.

    Parameters
    ----------
    value : Any
        The saved value (nested lists of numbers).
    name : str
        Its key, for the messages (e.g. ``"state['stats']['pulls']"``).
    shape : tuple of int
        The shape it must have.
    low, high : float or ndarray, optional
        Bounds (arrays broadcast against ``shape``); None: unbounded (entries still finite).
    integral : bool, default False
        Entries must be whole numbers (returned as int64).
    why : str, optional
        Where the range comes from, appended to a range error.

    Returns
    -------
    ndarray of float64 (int64 when ``integral``)

    Raises
    ------
    ValueError
        Not numbers (strings, None, booleans, ragged lists), the wrong shape, NaN, infinite,
        outside the range or (``integral``) fractional; the message names the key, the value
        (shortened) and what is allowed.
    """
    try:
        raw: np.ndarray | None = np.asarray(value)
    except (TypeError, ValueError):  # ragged lists
        raw = None
    wrong: list[Any] = [value] if raw is None or raw.dtype.kind not in "iufb" else []
    if not wrong:
        # numpy reads True as 1.0 next to numbers: numbers only, entry by entry (by type: an
        # isinstance per entry took 0.35 s for a LinTS state of 100,000 numbers)
        entries = np.asarray(value, dtype=object).reshape(-1)
        bad = {t for t in set(map(type, entries))
               if issubclass(t, bool | np.bool_) or not issubclass(t, Real | np.number)}
        wrong = [v for v in entries if type(v) in bad][:1] if bad else []
    if wrong or raw is None:
        raise ValueError(f"{name} holds {short_repr(wrong[0])}: it must be numbers (a list "
                         f"of shape {list(shape)})")
    x = raw.astype(np.float64)
    if x.shape != shape:
        raise ValueError(f"{name}={short_repr(value)} has shape {x.shape}; expected {shape}")
    lo = np.broadcast_to(-np.inf if low is None else low, shape)
    hi = np.broadcast_to(np.inf if high is None else high, shape)
    ok = (x >= lo) & (x <= hi) & np.isfinite(x)  # NaN fails the comparisons
    if integral:
        ok &= x == np.round(x)
    if not ok.all():
        idx = tuple(int(i) for i in np.argwhere(~ok)[0])
        where = f"{name}{list(idx)}" if idx else name
        if integral and np.isfinite(x[idx]) and x[idx] != np.round(x[idx]):
            raise ValueError(f"{where}={float(x[idx])!r} must be a whole number")
        try:
            check_real(float(x[idx]), where, low=None if low is None else float(lo[idx]),
                       high=None if high is None else float(hi[idx]))
        except ValueError as exc:
            raise ValueError(f"{exc}{f' ({why})' if why else ''}") from None
    return x.astype(np.int64) if integral else x
