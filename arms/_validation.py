"""Hyper-parameter checks shared by the arms, so every message has the same shape.

Each check raises ``TypeError`` for a value of the wrong type and ``ValueError`` for one out of
range, naming the parameter, the value received and what is allowed.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from numbers import Integral, Real

import numpy as np

#: Most bytes the arrays one size hyper-parameter of an arm scales may take (an SVD's factors,
#: a DAE's weights, the co-occurrence arm's windows) on the largest MovieLens release the arms
#: are built for: each ceiling is :func:`size_ceiling` of its bytes per user and per item, so a
#: value is refused when its settings are read, before any data is (found by attack:
#: ``n_factors=50000000`` passed as an int >= 1 and ``retrain`` ended in numpy's "Unable to
#: allocate 112 GiB"). The environments' and the policies' ceiling, 2 GiB, for the same machine.
MAX_MODEL_BYTES = 2 * 2**30


def size_ceiling(*, per_user: int = 0, per_item: int = 0) -> int:
    """The largest value of a size hyper-parameter whose arrays take ``per_user`` bytes a user
    and ``per_item`` bytes an item per unit within :data:`MAX_MODEL_BYTES`, on the largest
    MovieLens release (32M: 200,948 users, 87,585 items).
    """
    from arms.data.movielens import MOVIELENS_VARIANTS  # here: the data imports these checks

    largest = max(MOVIELENS_VARIANTS.values(), key=lambda variant: variant.n_ratings)
    return MAX_MODEL_BYTES // (per_user * largest.n_users + per_item * largest.n_items)


def check_int(name: str, value: object, *, low: int | None = None,
              high: int | None = None) -> int:
    """Return ``value`` as an int after checking it is an integer from ``low`` to ``high``
    (either bound may be absent): the one integer check of the arms, the data and the lab's
    commands (``experiments.config`` raises its ``ConfigError`` with this message).
    """
    allowed = ("" if low is None and high is None
               else f" >= {low}" if high is None
               else f" <= {high:,}" if low is None
               else f" from {low} to {high:,}")
    if isinstance(value, bool) or not isinstance(value, Integral):
        raise TypeError(f"{name} must be an integer{allowed}, got {value!r} "
                        f"({type(value).__name__})")
    number = int(value)
    if (low is not None and number < low) or (high is not None and number > high):
        raise ValueError(f"{name} must be an integer{allowed}, got {number}")
    return number


#: Largest seed: a TOML integer is a signed 64-bit one, so a larger seed written into a run's
#: ``config.toml`` made a file other TOML readers refuse (found by attack). The seeds drawn from
#: OS entropy lie below it too (:func:`experiments.config.resolve_seed`).
MAX_SEED = 2**63 - 1


def check_seed(value: object, name: str = "seed") -> int:
    """Return ``value`` as an int after checking it is a seed, from 0 to :data:`MAX_SEED`: the
    one seed check of the lab's commands (``simulate``, ``replay``, ``ope``) and the service's
    (``--seed``, ``--bootstrap-seed``).
    """
    return check_int(name, value, low=0, high=MAX_SEED)


def check_float(
    name: str, value: object, *, low: float | None = None, strict: bool = False,
    high: float | None = None,
) -> float:
    """Return ``value`` as a float after checking it is finite and within the bounds.

    ``low`` is exclusive when ``strict`` is true, inclusive otherwise; ``high`` is inclusive.
    """
    if isinstance(value, bool) or not isinstance(value, Real):
        raise TypeError(f"{name} must be a real number, got {value!r} ({type(value).__name__})")
    value = float(value)
    if not math.isfinite(value):
        raise ValueError(f"{name} must be finite, got {value!r}")
    if low is not None and (value <= low if strict else value < low):
        bound = f"> {low}" if strict else f">= {low}"
        raise ValueError(f"{name} must be {bound}, got {value!r}")
    if high is not None and value > high:
        raise ValueError(f"{name} must be <= {high}, got {value!r}")
    return value


def check_fraction(name: str, value: object) -> float:
    """Return ``value`` as a float after checking it is a real number strictly between 0 and
    1: the one check of a share or a confidence level (the splits, the gate and the replay's
    cut had four, with four messages).
    """
    if isinstance(value, bool) or not isinstance(value, Real):
        raise TypeError(f"{name} must be a real number in (0, 1), got {value!r} "
                        f"({type(value).__name__})")
    if not 0.0 < float(value) < 1.0:  # NaN fails too
        raise ValueError(f"{name} must be in (0, 1), got {value!r}")
    return float(value)


def check_choice(name: str, value: object, allowed: Sequence[str]) -> str:
    """Return ``value`` after checking it is one of the strings in ``allowed``."""
    if not isinstance(value, str):
        raise TypeError(f"{name} must be a string, one of {list(allowed)}, got {value!r}")
    if value not in allowed:
        raise ValueError(f"{name} must be one of {list(allowed)}, got {value!r}")
    return value


def check_random_state(random_state: object) -> np.random.Generator:
    """The generator ``random_state`` names: a Generator as given, else a new one seeded by an
    int or None (a bool is no seed): the data generators' and splits' one rule.

    Raises
    ------
    TypeError
        Anything else, named by its type.
    """
    if isinstance(random_state, np.random.Generator):
        return random_state
    if random_state is None or (isinstance(random_state, Integral)
                                and not isinstance(random_state, bool)):
        return np.random.default_rng(random_state)  # type: ignore[arg-type]  # an Integral is a valid seed
    raise TypeError("random_state must be an int, a numpy.random.Generator or None, got "
                    f"{type(random_state).__name__}")
