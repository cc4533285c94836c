"""The dynamics of the recommender-arms environments, on batches of independent sub-environments.

:class:`RecommenderArmsEnv` (one user per step) and :class:`RecommenderArmsVectorEnv` (one user per
sub-environment per step) both call the same :class:`Simulator` methods — the single environment
with batches of one — so their dynamics cannot diverge.

Randomness. Each (sub-)environment owns one ``numpy.random.Generator`` and consumes it in blocks:
at ``reset`` and whenever a block is used up it draws ``rng.random((BLOCK_STEPS, 1 + k))``; step
``t`` uses row ``t`` — column 0 for the arrival of the user served at ``t`` and columns ``1..k``
for that user's responses. The number of draws never depends on actions or outcomes, so a
vectorised environment whose sub-environment ``i`` is seeded like a single environment reproduces
that environment exactly, while drawing for all sub-environments in one call per block.
"""

from __future__ import annotations

import copy
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
import pandas as pd

from arms import DISLIKE_RATING, LIKE_RATING, Recommender, registry
from arms._validation import check_choice
from envs.base import (
    LIKE,
    UserModel,
    check_reward,
    check_step,
    expected_reward,
    realised_reward,
    sample_responses,
)
from envs.errors import UserModelError

ARRIVALS = ("uniform", "activity", "replay")
#: Steps of random numbers drawn at once per (sub-)environment.
BLOCK_STEPS = 256


def check_arm_names(arm_names: object) -> tuple[str, ...]:
    """The arms' labels as a tuple: strings, each once (:func:`arms.registry.refuse_repeats`,
    the rule of the registered ids' ``arms``).

    Raises
    ------
    TypeError
        Not a sequence of strings (a bare string included).
    ValueError
        No name, or a name given twice.
    """
    if isinstance(arm_names, str) or not isinstance(arm_names, Sequence):
        raise TypeError(f"arm_names must be a sequence of names, got {type(arm_names).__name__}")
    for name in arm_names:
        if not isinstance(name, str):
            raise TypeError(f"arm_names must hold names (str), got {name!r} "
                            f"({type(name).__name__})")
    names = tuple(arm_names)
    registry.refuse_repeats(names, field="arm_names")
    return names


def check_slates(slates: object, n_items: int | None) -> np.ndarray:
    """``slates`` after checking it is a 3-D integer array ``(n_users, n_arms, k)``, no
    dimension empty, of ``-1`` or item indices below ``n_items`` (None: no catalogue).

    Raises
    ------
    TypeError
        Not a numpy array of integers.
    ValueError
        Another number of dimensions, an empty one, or an entry out of range.
    """
    if not isinstance(slates, np.ndarray) or slates.dtype.kind not in "iu":
        raise TypeError("slates must be a numpy array of integer item indices, shape (n_users, "
                        f"n_arms, slate_size), got {_describe(slates)}")
    if slates.ndim != 3 or 0 in slates.shape:
        raise ValueError("slates must be a 3-D array (n_users, n_arms, slate_size), none of them "
                         f"0, got shape {slates.shape}")
    top = None if n_items is None else n_items - 1
    bad = slates < -1 if top is None else (slates < -1) | (slates > top)
    if bad.any():
        allowed = "-1 (no item)" + ("" if top is None else f" or an item index from 0 to {top}")
        where = tuple(int(i) for i in np.argwhere(bad)[0])
        raise ValueError(f"slates must hold {allowed}, got {slates[where]} at {where}")
    return slates


def check_contexts(contexts: object) -> np.ndarray:
    """``contexts`` after checking it is a 2-D float array of finite values within ``[0, 1]``
    (the observation space ``Box(0, 1)``).

    Raises
    ------
    TypeError
        Not a numpy array of floats (a list included).
    ValueError
        Not 2-D, or a value outside ``[0, 1]`` (NaN included), named by its place.
    """
    if not isinstance(contexts, np.ndarray) or contexts.dtype.kind != "f":
        raise TypeError("contexts must be a numpy array of floats, shape (n_users, n_features), "
                        f"got {_describe(contexts)}")
    if contexts.ndim != 2:
        raise ValueError(f"contexts must be a 2-D array (n_users, n_features), got shape "
                         f"{contexts.shape}")
    bad = ~((contexts >= 0) & (contexts <= 1))  # NaN too
    if bad.any():
        row, column = (int(i) for i in np.argwhere(bad)[0])
        raise ValueError(f"contexts must hold finite values within [0, 1], got "
                         f"{float(contexts[row, column])!r} at ({row}, {column})")
    return contexts


def check_feature_names(feature_names: object, n_features: int) -> tuple[str, ...]:
    """The names of the ``n_features`` columns of the contexts, as a tuple.

    Raises
    ------
    TypeError
        Not a sequence (a bare string included).
    ValueError
        Another number of names than columns.
    """
    if isinstance(feature_names, str) or not isinstance(feature_names, Sequence):
        raise TypeError("feature_names must be a sequence of names, one per column of contexts, "
                        f"got {type(feature_names).__name__}")
    names = tuple(feature_names)
    if len(names) != n_features:
        raise ValueError(f"feature_names must name the {n_features} column(s) of contexts, got "
                         f"{len(names)} name(s)")
    return names


def check_ids(name: str, ids: object, *, length: int | None = None) -> np.ndarray:
    """Raw ids as a 1-D int64 array (of ``length`` ids unless None).

    Raises
    ------
    TypeError
        Not an array, list or tuple of integers.
    ValueError
        Not 1-D, or not ``length`` ids (one per user).
    """
    values = np.asarray(ids) if isinstance(ids, np.ndarray | list | tuple) else None
    if values is None or (values.dtype.kind not in "iu" and values.size):
        raise TypeError(f"{name} must be an array of integer ids, got {_describe(ids)}")
    if values.ndim != 1:
        raise ValueError(f"{name} must be 1-D, got shape {values.shape}")
    if length is not None and len(values) != length:
        raise ValueError(f"{name} must hold one id per user ({length}, the slates' rows), got "
                         f"{len(values)}")
    return values.astype(np.int64)


def _describe(value: object) -> str:
    """A value's type (and dtype for an array), for a refusal."""
    if isinstance(value, np.ndarray):
        return f"an array of dtype {value.dtype}"
    return type(value).__name__


@dataclass
class Outcome:
    """What happened when a batch of users was served (arrays over the batch)."""

    slates: np.ndarray  #: (n, k) int64 item indices of the slates shown, -1 padded
    responses: np.ndarray  #: (n, k) int8
    rewards: np.ndarray  #: (n,) float64
    expected: np.ndarray  #: (n, n_arms) float64, every arm's expected reward for the user
    best: np.ndarray  #: (n,) int64, an arm with the highest expected reward
    raw_slates: np.ndarray  #: (n, k) int64 raw item ids of ``slates``, -1 padded


class Simulator:
    """Users, arms and a user model wired together; stateless across episodes.

    Parameters
    ----------
    user_model : UserModel
        The ground truth; fitted.
    arm_names : sequence of str
        One name per arm (the action labels), each once.
    slates : ndarray of int64, shape ``(n_users, n_arms, k)``
        Every arm's slate for every user, as the fitted arms recommend them: item indices into
        ``item_ids``, ``-1`` for no item (``-1`` throughout when the user model needs no items).
        Any integer dtype; every dimension at least 1.
    contexts : ndarray of float32, shape ``(n_users, n_features)``
        Observations, finite and within ``[0, 1]``; any float dtype (stored as float32). A list
        is refused: build the array (its dtype) yourself.
    feature_names : sequence of str, length ``n_features``
        One name per column of ``contexts``.
    user_ids : ndarray of int64, shape ``(n_users,)``
        Raw user ids (reported in ``info``).
    item_ids : ndarray of int64, shape ``(n_items,)``, optional
        Raw item ids; None when there is no catalogue.
    arms : sequence of Recommender, optional
        The fitted arms; needed only with ``online_learning``.
    reward : {"any", "count", "signed"}, default "any"
    arrival : {"uniform", "activity", "replay"}, default "uniform"
    online_learning : bool, default False
        Whether arms learn from each response (``partial_fit``) inside an episode.

    Raises
    ------
    TypeError
        An argument of the wrong type: ``user_model`` not a :class:`~envs.base.UserModel`,
        ``slates``, ``contexts``, ``user_ids`` or ``item_ids``
        not numpy arrays (of integers; of floats for ``contexts``), names that are not strings.
    ValueError
        For a wrong reward or arrival; arrays of another number of dimensions or of sizes that
        disagree (slates, contexts, the user model, ``feature_names``, ``user_ids``); contexts
        outside ``[0, 1]`` (NaN included); slate entries neither ``-1`` nor an index of
        ``item_ids``; an arm named twice; or online learning without arms.
    UserModelError
        If no user is eligible to arrive.
    """

    def __init__(
        self,
        *,
        user_model: UserModel,
        arm_names: Sequence[str],
        slates: np.ndarray,
        contexts: np.ndarray,
        feature_names: Sequence[str],
        user_ids: np.ndarray,
        item_ids: np.ndarray | None = None,
        arms: Sequence[Recommender] = (),
        reward: str = "any",
        arrival: str = "uniform",
        online_learning: bool = False,
    ) -> None:
        if not isinstance(user_model, UserModel):
            raise TypeError(f"user_model must be an envs.UserModel, got "
                            f"{type(user_model).__name__}")
        self.user_model = user_model
        self.arm_names = check_arm_names(arm_names)
        self.reward = check_reward(reward)
        self.arrival = check_choice("arrival", arrival, ARRIVALS)
        if not isinstance(online_learning, bool | np.bool_):
            raise TypeError(f"online_learning must be a bool, got {online_learning!r}")
        self.online_learning = bool(online_learning)
        self.item_ids = None if item_ids is None else check_ids("item_ids", item_ids)
        slates = check_slates(slates, None if self.item_ids is None else len(self.item_ids))
        self.n_users, self.n_arms, self.slate_size = slates.shape
        if self.n_arms != len(self.arm_names):
            raise ValueError(f"slates hold {self.n_arms} arms but {len(self.arm_names)} names")
        contexts = check_contexts(contexts)
        if contexts.shape[0] != self.n_users or user_model.n_users != self.n_users:
            raise ValueError(
                f"contexts ({contexts.shape[0]} rows), the user model ({user_model.n_users} "
                f"users) and the slates ({self.n_users} users) must agree"
            )
        self.slates = slates
        self.contexts = np.ascontiguousarray(contexts, dtype=np.float32)
        self.contexts.setflags(write=False)
        self.feature_names = check_feature_names(feature_names, contexts.shape[1])
        self.user_ids = check_ids("user_ids", user_ids, length=self.n_users)
        self.arms = tuple(arms)
        if self.online_learning and (len(self.arms) != self.n_arms or self.item_ids is None):
            raise ValueError(
                "online_learning needs fitted arms and an item catalogue (a dataset); "
                f"got {len(self.arms)} arm object(s) for {self.n_arms} arms"
            )
        self._init_arrivals()
        self.prepared = user_model.prepare(np.arange(self.n_users), slates)
        self.raw_slates = self.raw_items(slates)
        if not user_model.dynamic:
            self.like, self.dislike = user_model.probabilities(
                self.prepared, np.arange(self.n_users), np.zeros(self.n_users, np.int64), None
            )
            self.expected = expected_reward(self.like, self.dislike, self.reward)
            self.best = self.expected.argmax(axis=1)
        # (user, arm) rows flattened: np.take on one axis is several times faster than
        # fancy indexing with two index arrays, and this is the hot path of the vector env.
        flat = (self.n_users * self.n_arms, self.slate_size)
        self._slates_flat = self.slates.reshape(flat)
        self._raw_flat = self.raw_slates.reshape(flat)
        if not user_model.dynamic:
            self._like_flat = self.like.reshape(flat)
            self._dislike_flat = self.dislike.reshape(flat)

    # ------------------------------------------------------------------ arrivals
    def _init_arrivals(self) -> None:
        eligible = np.flatnonzero(self.user_model.eligible_users())
        if len(eligible) == 0:
            raise UserModelError(
                f"the {self.user_model.name} user model has no user who may arrive"
            )
        self.eligible = eligible
        self.replay: np.ndarray | None = None
        if self.arrival == "replay":
            self.replay = self.user_model.replay_sequence()
            if len(self.replay) == 0:
                raise UserModelError("arrival='replay' needs at least one recorded arrival")
            self.arrival_probabilities = np.bincount(self.replay, minlength=self.n_users) / len(
                self.replay
            )
            return
        weights = np.zeros(self.n_users)
        if self.arrival == "activity":
            weights[eligible] = self.user_model.activity()[eligible]
            if not weights.sum() > 0:
                raise UserModelError("arrival='activity' needs some user with activity > 0")
        else:
            weights[eligible] = 1.0
        self.arrival_probabilities = weights / weights.sum()
        self.arrival_cdf = np.cumsum(weights[eligible]) / weights.sum()

    @property
    def episode_limit(self) -> int | None:
        """Steps until the data runs out (the replay length), None when unbounded."""
        return None if self.replay is None else len(self.replay)

    def draw_users(self, uniforms: np.ndarray, t: np.ndarray) -> np.ndarray:
        """Users arriving at steps ``t`` (shape ``(n,)``), from one uniform each."""
        if self.replay is not None:
            return self.replay[np.minimum(t, len(self.replay) - 1)]
        m = len(self.eligible)
        if self.arrival == "uniform":
            pos = (uniforms * m).astype(np.int64)
        else:
            pos = np.searchsorted(self.arrival_cdf, uniforms, side="right")
        return np.take(self.eligible, np.minimum(pos, m - 1))

    def draw_user(self, uniform: float, t: int) -> int:
        """:meth:`draw_users` for one user, with scalars (the single env's hot path)."""
        if self.replay is not None:
            return int(self.replay[min(t, len(self.replay) - 1)])
        m = len(self.eligible)
        if self.arrival == "uniform":
            pos = int(uniform * m)  # truncation, as astype(int64) in draw_users
        else:
            pos = int(np.searchsorted(self.arrival_cdf, uniform, side="right"))
        return int(self.eligible[min(pos, m - 1)])

    # ------------------------------------------------------------------ serving
    def serve_one(
        self,
        user: int,
        action: int,
        uniforms: np.ndarray,
        t: int,
        fatigue: np.ndarray | None = None,
        slates: np.ndarray | None = None,
    ) -> tuple[np.ndarray, np.ndarray, float, np.ndarray, int]:
        """:meth:`serve` for one user, returning ``(raw_slate, responses, reward, expected, best)``.

        With frozen arms and a static user model it reads the same precomputed tables with scalar
        indexing and applies the same response and reward functions; otherwise it is
        :meth:`serve` on a batch of one. ``expected`` is a new array the caller may keep.
        """
        if slates is None and not self.user_model.dynamic:
            pair = user * self.n_arms + action
            responses = sample_responses(self._like_flat[pair], self._dislike_flat[pair], uniforms)
            return (
                self._raw_flat[pair].copy(),
                responses,
                float(realised_reward(responses, self.reward)),
                self.expected[user].copy(),
                int(self.best[user]),
            )
        out = self.serve(
            np.array([user]), np.array([action]), uniforms[None], np.array([t]),
            None if fatigue is None else fatigue[None], slates,
        )  # fmt: skip
        return out.raw_slates[0], out.responses[0], float(out.rewards[0]), out.expected[0], int(
            out.best[0]
        )

    def serve(
        self,
        users: np.ndarray,
        actions: np.ndarray,
        uniforms: np.ndarray,
        t: np.ndarray,
        fatigue: np.ndarray | None = None,
        slates: np.ndarray | None = None,
    ) -> Outcome:
        """Show each user the slate of the chosen arm and sample the responses.

        Parameters
        ----------
        users, actions, t : ndarray of int64, shape ``(n,)``
        uniforms : ndarray of float64, shape ``(n, k)``
        fatigue : ndarray of float64, shape ``(n, n_arms)``, optional
            The users' episode state, for user models that keep one.
        slates : ndarray of int64, shape ``(n, n_arms, k)``, optional
            Current slates of every arm when arms learn online; the frozen slates otherwise.
        """
        pairs = users * self.n_arms + actions
        if slates is None and not self.user_model.dynamic:
            like = np.take(self._like_flat, pairs, axis=0)
            dislike = np.take(self._dislike_flat, pairs, axis=0)
            expected = np.take(self.expected, users, axis=0)
            best = np.take(self.best, users)
            shown = np.take(self._slates_flat, pairs, axis=0)
            raw = np.take(self._raw_flat, pairs, axis=0)
        else:
            rows = np.arange(len(users))
            if slates is None:
                prepared = {name: np.take(value, users, axis=0)
                            for name, value in self.prepared.items()}
                shown = np.take(self._slates_flat, pairs, axis=0)
            else:
                prepared = self.user_model.prepare(users, slates)
                shown = slates[rows, actions]
            like_all, dislike_all = self.user_model.probabilities(prepared, users, t, fatigue)
            expected = expected_reward(like_all, dislike_all, self.reward)
            best = expected.argmax(axis=1)
            like, dislike = like_all[rows, actions], dislike_all[rows, actions]
            raw = (
                self.raw_items(shown) if slates is not None else np.take(self._raw_flat, pairs, 0)
            )
        responses = sample_responses(like, dislike, uniforms)
        return Outcome(
            shown, responses, realised_reward(responses, self.reward), expected, best, raw
        )

    def raw_items(self, slates: np.ndarray) -> np.ndarray:
        """Raw item ids of item indices (``-1`` stays ``-1``; all ``-1`` without a catalogue)."""
        if self.item_ids is None:
            return np.full(slates.shape, -1, dtype=np.int64)
        return np.where(slates >= 0, self.item_ids[np.maximum(slates, 0)], -1)

    # ------------------------------------------------------------------ online learning
    def fresh_arms(self) -> list[Recommender]:
        """Deep copies of the fitted arms, for one episode of online learning."""
        return [copy.deepcopy(arm) for arm in self.arms]

    def current_slates(self, arms: Sequence[Recommender], users: np.ndarray) -> np.ndarray:
        """Every arm's slate for ``users`` now, shape ``(n, n_arms, k)``."""
        return np.stack(
            [arm.recommend(users, self.slate_size, exclude_seen=True)[0] for arm in arms], axis=1
        )

    def learn(
        self,
        arms: Sequence[Recommender],
        users: np.ndarray,
        shown: np.ndarray,
        responses: np.ndarray,
    ) -> None:
        """Pass likes (rating 5) and dislikes (rating 1) on the shown items to every arm."""
        rows, cols = np.nonzero(responses)
        if len(rows) == 0:
            return
        feedback = pd.DataFrame(
            {
                "user_id": self.user_ids[users[rows]],
                "item_id": self.item_ids[shown[rows, cols]],  # type: ignore[index]  # online learning requires a catalogue
                "rating": np.where(responses[rows, cols] == LIKE, LIKE_RATING, DISLIKE_RATING),
            }
        )
        for arm in arms:
            arm.partial_fit(feedback)

    # ------------------------------------------------------------------ ground truth
    def expected_reward_matrix(self, t: int = 0) -> np.ndarray:
        """Expected reward of every arm for every user at step ``t`` of a fresh episode.

        Uses the frozen slates (the arms as fitted) and no fatigue; shape ``(n_users, n_arms)``.
        ``t`` is checked even when the model is static and the answer does not depend on it.

        Raises
        ------
        TypeError, ValueError
            ``t`` not an integer from 0 to int64's largest (:func:`envs.base.check_step`).
        """
        t = check_step(t)
        if not self.user_model.dynamic:
            return self.expected.copy()
        users = np.arange(self.n_users)
        like, dislike = self.user_model.probabilities(
            self.prepared, users, np.full(self.n_users, t, dtype=np.int64),
            None if self.user_model.new_fatigue(1, self.n_arms) is None
            else np.zeros((self.n_users, self.n_arms)),
        )
        return expected_reward(like, dislike, self.reward)
