"""FixedCTR: arm-level click probabilities, the seed story of the project, no data needed."""

from __future__ import annotations

from typing import ClassVar

import numpy as np

from arms._validation import check_int
from envs.base import UserModel

#: The seed story: the click-through rate of each default arm's slate.
SEED_CTR = {"svd": 0.10, "sequential": 0.15, "autoencoder": 0.12}
#: Users of FixedCTR when neither ``n_users`` nor a click rate per user says how many.
DEFAULT_USERS = 1000


def check_ctr(ctr: object) -> np.ndarray:
    """Click rates as a float64 array of shape ``(n_arms,)`` or ``(n_users, n_arms)``, every
    entry a real number within ``[0, 1]``.

    A list, tuple or array of real numbers only: strings (``"0.1"``, which numpy reads as
    numbers), booleans (read as rates 1 and 0), complex numbers, mappings and ragged rows were
    taken or failed in numpy's words (found by attack).

    Raises
    ------
    TypeError
        Not a list, tuple or array, or entries that are not real numbers.
    ValueError
        Ragged rows, another shape, or a value outside ``[0, 1]`` (NaN included).
    """
    if not isinstance(ctr, list | tuple | np.ndarray):
        raise TypeError(f"ctr must be a list or array of click rates, got {type(ctr).__name__}")
    try:
        values = np.asarray(ctr)
    except ValueError as exc:  # ragged rows
        raise ValueError("ctr must be a rectangular array of click rates (one row per user, "
                         "one column per arm), got rows of different lengths") from exc
    if values.dtype.kind not in "iuf":
        raise TypeError(f"ctr must hold real numbers (click rates), got {values.dtype} values "
                        f"such as {values.ravel()[0]!r}" if values.size else
                        f"ctr must hold real numbers (click rates), got {values.dtype}")
    values = values.astype(np.float64)
    if values.ndim not in (1, 2) or values.size == 0:
        raise ValueError(
            f"ctr must be a non-empty array of shape (n_arms,) or (n_users, n_arms), "
            f"got shape {values.shape}"
        )
    bad = ~((values >= 0) & (values <= 1))  # NaN too
    if bad.any():  # the first bad entry, not the whole matrix (17,047 characters: review)
        where = tuple(int(i) for i in np.argwhere(bad)[0])
        raise ValueError(f"ctr must hold probabilities within [0, 1], got "
                         f"{float(values[where])!r} at {where if len(where) > 1 else where[0]}")
    return values


def check_ctr_rows(values: np.ndarray, n_users: int, source: str) -> None:
    """Refuse click rates with one row per user whose rows are not the ``n_users`` users that
    ``source`` names (``"the dataset has"``, ``"n_users asks for"``): the one wording of both.

    Raises
    ------
    ValueError
        ``values`` 2-D with another number of rows than ``n_users``.
    """
    if values.ndim == 2 and values.shape[0] != n_users:
        raise ValueError(f"ctr has {values.shape[0]} rows (one per user) but {source} "
                         f"{n_users} users")


class FixedCTR(UserModel):
    """Users who click an arm's slate with a fixed probability, whatever it shows.

    ``ctr[a]`` is the probability that a user clicks *something* in arm ``a``'s slate of ``k``
    items, i.e. the expected reward under ``reward="any"``. Each position is clicked independently
    with probability ``q = 1 - (1 - ctr) ** (1 / k)``, so ``P(any click) = ctr`` exactly and the
    expected number of clicks is ``k * q``. Nobody dislikes anything.

    Parameters
    ----------
    ctr : array-like of float, shape ``(n_arms,)`` or ``(n_users, n_arms)``, default the seed story
        Click probabilities within ``[0, 1]``; one row per user makes them personal. The default
        is ``(0.10, 0.15, 0.12)`` for ``("svd", "sequential", "autoencoder")``.
    n_users : int or None, default None
        How many users arrive: :data:`DEFAULT_USERS` (1000) when None and ``ctr`` has one rate
        per arm; ``ctr``'s rows when it has one row per user, which ``n_users``, if given, must
        equal.

    Raises
    ------
    TypeError
        If ``ctr`` is not a list or array of real numbers (:func:`check_ctr`), or ``n_users``
        not an integer.
    ValueError
        If ``ctr`` is empty, ragged, not 1-d or 2-d, or holds a value outside ``[0, 1]``; if
        ``n_users < 1``; or if ``ctr`` has one row per user and ``n_users`` another number
        (:func:`check_ctr_rows`).
    """

    name: ClassVar[str] = "fixed-ctr"
    needs_items: ClassVar[bool] = False

    def __init__(self, *, ctr: object = tuple(SEED_CTR.values()),
                 n_users: int | None = None) -> None:
        self.ctr = ctr
        values = check_ctr(ctr)
        if n_users is not None:
            n_users = check_int("n_users", n_users, low=1)
            # a 2-D ctr took any n_users silently, where the dataset's users were checked
            check_ctr_rows(values, n_users, "n_users asks for")
        if values.ndim == 2:
            self.n_users = values.shape[0]
        else:
            self.n_users = DEFAULT_USERS if n_users is None else n_users
        self.ctr_ = np.broadcast_to(values, (self.n_users, values.shape[-1]))
        self.n_arms = values.shape[-1]

    def prepare(self, users: np.ndarray, slates: np.ndarray) -> dict[str, np.ndarray]:
        """Per-position like probabilities whose slate-level CTR is the arm's ``ctr_``.

        A slate of ``k`` items is liked with probability ``ctr_[user, arm]`` when each position is
        liked with ``1 - (1 - ctr) ** (1 / k)``; this model has no dislikes (all zero). Shapes and
        meaning of ``users`` and ``slates`` as in :meth:`envs.base.UserModel.prepare`.
        """
        k = slates.shape[-1]
        per_position = 1.0 - (1.0 - self.ctr_[users]) ** (1.0 / k)
        like = np.repeat(per_position[:, :, None], k, axis=2)
        return {"like": like, "dislike": np.zeros_like(like)}
