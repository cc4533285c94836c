"""The :class:`UserModel` interface and the reward arithmetic every environment shares.

A user model is the ground truth of an environment: given users and the slates every arm would show
them, it returns, for each slate position, the probability that the user *likes* (clicks) the item
and the probability that they *dislike* it. Everything else — sampling responses, the realised
reward, the expected reward of every arm, hence exact regret — follows from those two arrays with
the pure functions of this module, which the single and the vectorised environment both call.

Responses are coded as int8: ``LIKE = 1`` (a click or a like), ``DISLIKE = -1`` and ``NONE = 0``.
Positions of a slate respond independently: with one uniform draw ``u`` per position, the user
likes the item if ``u < like`` and dislikes it if ``like <= u < like + dislike``.
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from typing import ClassVar

import numpy as np

from arms._validation import check_choice, check_float, check_int

LIKE = 1
NONE = 0
DISLIKE = -1

#: Reward definitions: ``"any"`` is 1 when the user liked/clicked anything in the slate (the
#: default), ``"count"`` the number of likes/clicks, ``"signed"`` likes minus dislikes.
REWARDS = ("any", "count", "signed")
#: Largest step of an episode the ground truth is asked about: the dynamics hold steps as int64.
MAX_STEP = int(np.iinfo(np.int64).max)


def sample_responses(like: np.ndarray, dislike: np.ndarray, uniforms: np.ndarray) -> np.ndarray:
    """Responses for slates, shape ``(..., k)`` int8, from per-position probabilities.

    Parameters
    ----------
    like, dislike : ndarray of float, shape ``(..., k)``
        Probabilities per position; ``like + dislike <= 1``.
    uniforms : ndarray of float, shape ``(..., k)``
        One draw in ``[0, 1)`` per position.
    """
    liked = uniforms < like
    disliked = (uniforms < like + dislike) & ~liked
    return liked.astype(np.int8) - disliked.astype(np.int8)


def realised_reward(responses: np.ndarray, reward: str) -> np.ndarray:
    """The reward of each slate, shape ``responses.shape[:-1]``, float64."""
    if reward == "any":
        return (responses == LIKE).any(axis=-1).astype(np.float64)
    if reward == "count":
        return (responses == LIKE).sum(axis=-1, dtype=np.float64)
    return responses.sum(axis=-1, dtype=np.float64)


def expected_reward(like: np.ndarray, dislike: np.ndarray, reward: str) -> np.ndarray:
    """Expectation of :func:`realised_reward`, reducing the last (slate) axis; float64.

    Parameters
    ----------
    like, dislike : ndarray of float64, same shape ``(..., k)``
        Probability that each slate position is liked, resp. disliked.
    reward : {"any", "count", "signed"}
        ``any``: P(at least one like); ``count``: expected likes; ``signed``: likes minus
        dislikes.
    """
    if reward == "any":
        return 1.0 - np.prod(1.0 - like, axis=-1)
    if reward == "count":
        return like.sum(axis=-1, dtype=np.float64)
    return (like - dislike).sum(axis=-1, dtype=np.float64)


def check_reward(reward: object) -> str:
    """Validate a reward name: ``TypeError`` for a non-string, ``ValueError`` for another name,
    each naming the allowed values (the one choice rule, :func:`arms._validation.check_choice`).
    """
    return check_choice("reward", reward, REWARDS)


def check_step(t: object) -> int:
    """``t`` as an int after checking it is a step of an episode, an integer from 0 to
    :data:`MAX_STEP` (:func:`arms._validation.check_int`, the one integer rule).

    ``expected_reward_matrix(t)`` and ``best_fixed_arm(t)`` read any ``t``: -1000 ran the drift
    backwards, NaN gave numpy warnings and numbers, 1.5 was read as 1, 10**20 failed in
    ``int()``'s words and FixedCTR ignored ``t`` whatever it was (found by attack).

    Raises
    ------
    TypeError
        Not an integer (a bool, a float, NaN or a string included).
    ValueError
        Negative or beyond int64.
    """
    return check_int("t", t, low=0, high=MAX_STEP)


def check_thresholds(like: object, dislike: object, scale: tuple[float, float] | None
                     ) -> tuple[float, float]:
    """The like and dislike thresholds of a rating model, as floats, checked against the
    data's ``scale`` (``Dataset.rating_scale``; None: any finite rating).

    Both must be real numbers within the rating scale, the dislike one below the like one: a
    like threshold above the scale (``like_threshold=100`` on MovieLens) made every expected
    reward 0 without a word, one of ``1e308`` overflowed, and ``"4"`` failed on a comparison
    (found by attack). With no scale, finite is all that is asked.

    Raises
    ------
    TypeError
        A threshold that is not a real number (booleans and strings included).
    ValueError
        Outside the scale, not finite, or ``dislike >= like``.
    """
    values = []
    for name, value in (("like_threshold", like), ("dislike_threshold", dislike)):
        if scale is None:
            values.append(check_float(name, value))
            continue
        values.append(check_float(name, value, low=float(scale[0]), high=float(scale[1])))
    if not values[1] < values[0]:
        raise ValueError(f"dislike_threshold must be below like_threshold, got {values[1]} >= "
                         f"{values[0]}")
    return values[0], values[1]


class UserModel(ABC):
    """How users respond to slates: the ground truth of an environment.

    A model is built (by its constructor) from data, and then answers for batches. Subclasses
    implement :meth:`prepare` (everything that depends only on users and slates, computed once for
    all users when the arms are frozen) and :meth:`probabilities` (the cheap, per-step part that
    may depend on the step ``t`` and on the episode state).

    Attributes
    ----------
    n_users : int
        Users the model knows, by contiguous index.
    dynamic : bool
        Whether probabilities change within an episode (drift with ``t``, boredom with the state).
        Static models let the environment precompute every probability and expected reward.
    """

    name: ClassVar[str] = "user-model"
    #: Whether the model needs real items in the slates (FixedCTR does not).
    needs_items: ClassVar[bool] = True
    n_users: int
    dynamic: bool = False

    @abstractmethod
    def prepare(self, users: np.ndarray, slates: np.ndarray) -> dict[str, np.ndarray]:
        """Step- and state-free quantities for ``slates``.

        Parameters
        ----------
        users : ndarray of int64, shape ``(n,)``
        slates : ndarray of int64, shape ``(n, n_arms, k)``
            Item indices of every arm's slate for each user; ``-1`` pads short slates.

        Returns
        -------
        dict of str to ndarray
            Arrays of shape ``(n, n_arms, k)``; :meth:`probabilities` reads them back, possibly
            after selecting rows with ``array[rows]``.
        """

    def probabilities(
        self,
        prepared: dict[str, np.ndarray],
        users: np.ndarray,
        t: np.ndarray,
        fatigue: np.ndarray | None,
    ) -> tuple[np.ndarray, np.ndarray]:
        """Like and dislike probabilities, each of shape ``(n, n_arms, k)``.

        By default ``prepared["like"]`` and ``prepared["dislike"]``: models whose
        probabilities depend on neither the step nor the episode state compute them once in
        :meth:`prepare`.

        Parameters
        ----------
        prepared : dict
            Rows of what :meth:`prepare` returned for these users.
        users : ndarray of int64, shape ``(n,)``
        t : ndarray of int64, shape ``(n,)``
            Step of the episode each user arrives at (0 for the first).
        fatigue : ndarray of float64, shape ``(n, n_arms)``, or None
            The users' episode state (see :meth:`new_fatigue`); None for models without one.
        """
        return prepared["like"], prepared["dislike"]

    # ------------------------------------------------------------------ optional hooks
    def eligible_users(self) -> np.ndarray:
        """Mask of users who may arrive, shape ``(n_users,)``; by default everyone."""
        return np.ones(self.n_users, dtype=bool)

    def activity(self) -> np.ndarray:
        """Arrival weights for ``arrival="activity"``, shape ``(n_users,)``; uniform by default."""
        return np.ones(self.n_users, dtype=np.float64)

    def replay_sequence(self) -> np.ndarray:
        """User indices in their real order of arrival, for ``arrival="replay"``.

        Raises
        ------
        ValueError
            When the model has no timestamps to replay (the default).
        """
        raise ValueError(f"the {self.name} user model has no real arrivals to replay")

    def new_fatigue(self, n_envs: int, n_arms: int) -> np.ndarray | None:
        """Fresh episode state, shape ``(n_envs, n_users, n_arms)``, or None if stateless."""
        return None

    def update_fatigue(  # noqa: B027 - optional hook, a no-op for stateless models
        self, fatigue: np.ndarray, envs: np.ndarray, users: np.ndarray, actions: np.ndarray
    ) -> None:
        """Advance the episode state in place after ``users`` were served by ``actions``.

        ``envs``, ``users`` and ``actions`` are arrays of one shape (one entry per served
        sub-environment) or, for the single env, plain ints.
        """
