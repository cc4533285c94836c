"""Arms by name: build, fit (once per process) and precompute their slates.

An environment's arms are given as names of :mod:`arms.registry` (``"svd"``, ``"sequential"``
and the others ``arms.registry.ARMS`` lists) or as :class:`arms.Recommender` instances. The
registry is the only place arms are named; this module only fits and caches them.

Fitting an arm on MovieLens 100K takes seconds, so :func:`fitted_arms` caches each named arm per
(name, training data, seed) and its frozen slates per slate size within the process; the slate
arrays it returns are read-only so that no environment can corrupt the cache. The cached arm
objects are shared: environments never mutate them (online learning works on deep copies).
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from functools import lru_cache

import numpy as np

from arms import Recommender, registry
from arms._validation import check_int
from arms.data import Dataset

logger = logging.getLogger(__name__)

#: The recommenders a MovieLens environment serves by default (names of :mod:`arms.registry`).
DEFAULT_ARMS = ("svd", "sequential", "autoencoder")
#: Longest slate an environment shows (a dataset's catalogue bounds it further): every user's
#: slates are held as users x arms x slate size, and ``slate_size=10**10`` asked numpy for
#: 218 TiB (found by attack).
MAX_SLATE_SIZE = 1000
#: Users recommended for in one pass when precomputing slates (bounds memory to
#: ``chunk * n_items`` scores).
SLATE_CHUNK = 4096


def arm_name(arm: str | Recommender) -> str:
    """Display name of an arm: its canonical registry name, or a recommender's registry name."""
    return registry.canonical_name(arm) if isinstance(arm, str) else registry.name_of(arm)


def make_arm(name: str, *, random_state: int = 0) -> Recommender:
    """A new, unfitted arm from its registry name (:func:`arms.registry.make_arm`).

    Parameters
    ----------
    name : str
        A registered arm name or alias.
    random_state : int, default 0
        Seed of the arm's randomness.

    Raises
    ------
    TypeError
        If ``name`` is not a string.
    arms.UnknownArmError
        If the name is not registered (``envs.UnknownArmError`` is the same class).
    """
    return registry.make_arm(name, random_state=random_state)


def check_arms(arm_specs: object) -> tuple[str | Recommender, ...]:
    """Validate an arm list (names or recommenders); returns it as a tuple.

    Raises
    ------
    TypeError
        If ``arm_specs`` is a bare string or holds something else than names and recommenders.
    ValueError
        If it is empty or names an arm twice (an alias and its canonical name count as one).
    arms.UnknownArmError
        If a name is not registered.
    """
    if isinstance(arm_specs, str) or not isinstance(arm_specs, Sequence):
        raise TypeError(
            f"arms must be a sequence of arm names or Recommender instances, got {arm_specs!r}"
        )
    specs = tuple(arm_specs)
    for spec in specs:
        if not isinstance(spec, str | Recommender):
            raise TypeError(
                f"arms must hold arm names or Recommender instances, got {type(spec).__name__}"
            )
        if isinstance(spec, str):
            registry.resolve(spec)  # raises UnknownArmError, with a "did you mean"
    registry.refuse_repeats([arm_name(s) for s in specs])
    return specs


def precompute_slates(fitted: Sequence[Recommender], n_users: int, k: int) -> np.ndarray:
    """Every arm's top-``k`` unseen items for every user, shape ``(n_users, n_arms, k)``.

    Item indices, ``-1`` where an arm has fewer than ``k`` unseen items for a user.

    Parameters
    ----------
    fitted : sequence of Recommender
        The arms (at least one), fitted on the data whose users are ``0 .. n_users - 1``.
    n_users : int
        From 1 to the fewest users an arm was fitted on.
    k : int
        Slate size, from 1 to :data:`MAX_SLATE_SIZE` (and at most the catalogue's items).

    Raises
    ------
    TypeError
        ``fitted`` not a sequence of recommenders, or ``n_users`` or ``k`` not an integer.
    ValueError
        No arm, or ``n_users`` or ``k`` out of range (:func:`arms._validation.check_int`).
    arms.NotFittedError
        An arm not fitted.
    """
    # Checked before the (n_users, n_arms, k) array is allocated: k=1.5, k=True, n_users=10**12
    # and no arm at all failed in numpy's or range()'s words (found by attack).
    if isinstance(fitted, str) or not isinstance(fitted, Sequence):
        raise TypeError(f"fitted must be a sequence of fitted Recommender instances, got "
                        f"{type(fitted).__name__}")
    if not fitted:
        raise ValueError("fitted must hold at least one arm")
    for arm in fitted:
        if not isinstance(arm, Recommender):
            raise TypeError(f"fitted must hold Recommender instances, got {type(arm).__name__}")
        arm._check_fitted()  # the arms' own rule and message
    k = check_int("k", k, low=1, high=MAX_SLATE_SIZE)
    n_users = check_int("n_users", n_users, low=1, high=min(arm.n_users_ for arm in fitted))
    slates = np.empty((n_users, len(fitted), k), dtype=np.int64)
    for start in range(0, n_users, SLATE_CHUNK):
        users = np.arange(start, min(start + SLATE_CHUNK, n_users))
        for a, arm in enumerate(fitted):
            slates[users, a], _ = arm.recommend(users, k, exclude_seen=True)
    return slates


def fitted_arms(
    arm_specs: Sequence[str | Recommender], train: Dataset, *, k: int, random_state: int = 0
) -> tuple[tuple[Recommender, ...], np.ndarray]:
    """Fit the arms on ``train`` and precompute their slates.

    Arms given by name are fitted once per (name, training data, seed) within the process and
    their slates computed once per slate size, so environments that share arms (e.g. the
    simulator and its drifting variant) share the work. Recommender instances are used as given
    when already fitted on ``train`` itself (:func:`fitted_on`) and otherwise fitted on
    ``train`` in place (the instance given is changed).

    Returns
    -------
    fitted : tuple of Recommender
    slates : ndarray of int64, shape ``(train.n_users, n_arms, k)``, read-only
    """
    specs = check_arms(arm_specs)
    if isinstance(k, bool) or not isinstance(k, int | np.integer) or not 1 <= k <= train.n_items:
        raise ValueError(f"slate_size must be an integer within [1, {train.n_items}], got {k!r}")
    fitted, columns = [], []
    for spec in specs:
        if isinstance(spec, str):
            name = arm_name(spec)  # canonical, so an alias shares the cache of its arm
            arm = _fit_named(name, train, random_state)
            columns.append(_named_slates(name, train, random_state, int(k)))
        else:
            arm = spec if fitted_on(spec, train) else spec.fit(train)
            columns.append(precompute_slates([arm], train.n_users, int(k))[:, 0])
        fitted.append(arm)
    slates = np.stack(columns, axis=1)
    slates.setflags(write=False)
    return tuple(fitted), slates


def fitted_on(arm: Recommender, train: Dataset) -> bool:
    """Whether ``arm`` was fitted on exactly ``train``'s ratings: the same users, items and
    (user, item) pairs seen.

    Sizes alone were compared: an arm fitted on all of MovieLens has the training split's
    sizes, was used as given by ``MovieLens-v0``, and, having seen the held-out ratings,
    excluded every one of them from its slates: every expected reward 0, no error (found by
    attack).
    """
    seen = getattr(arm, "seen_", None)
    if seen is None or seen.shape != (train.n_users, train.n_items):
        return False
    train_seen = train.interaction_matrix(binary=True)
    return bool(seen.nnz == train_seen.nnz
                and np.array_equal(arm.user_ids_, train.user_ids)
                and np.array_equal(arm.item_ids_, train.item_ids)
                and (seen != train_seen).nnz == 0)


@lru_cache(maxsize=32, typed=True)  # 0 and False are one key untyped
def _fit_named(name: str, train: Dataset, random_state: int) -> Recommender:
    logger.info("fitting arm %s on %r", name, train)
    return make_arm(name, random_state=random_state).fit(train)


@lru_cache(maxsize=64, typed=True)
def _named_slates(name: str, train: Dataset, random_state: int, k: int) -> np.ndarray:
    slates = precompute_slates([_fit_named(name, train, random_state)], train.n_users, k)[:, 0]
    slates.setflags(write=False)
    return slates
