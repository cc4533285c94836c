"""Slate environments: several arms share one slate, position by position (multileaving).

``recbandits/MovieLensSlate-v0`` (simulated MovieLens users) and ``recbandits/SyntheticSlate-v0``
(the same dynamics on :func:`arms.data.make_synthetic` ratings, seconds to build, for tests) take
as action the *composition* of a slate: the arm that fills each of its ``k`` positions. Position
``j`` shows its arm's highest-ranked item not already in the slate (the fill rule of team-draft
multileaving), so ``[a] * k`` shows arm ``a``'s own slate and a team-draft order from
:func:`bandits.multileave.draft_order` shows the multileaved one. ``info["arms"]`` returns the
arm of every position, so each click can be credited to the arm that contributed the item.

Users are :class:`~envs.latent_factor.LatentFactorUsers`: an item's attraction is its like
probability without the position discount, ``like(u, a, rank) / examination(rank)`` at its rank
in its arm's list, with that arm's boredom (``(1 - boredom) ** fatigue[u, a]``); shown at position
``j`` it is liked with ``examination(j) * attraction`` (the same position bias), disliked likewise.

Click models (``click_model``):

``"pbm"`` (position-based)
    Every position responds independently, as in the single-arm environments.
``"cascade"``
    The user reads from the top and leaves after the first like (click): the position-based
    responses drawn from the same uniforms, cut after the first like. Position ``j`` is reached
    with probability ``prod_{i<j} (1 - like_i)``.

Boredom: at each visit of a user every arm's fatigue decays by ``boredom_decay`` and each arm
gains the share of the slate it filled (1 for a single-arm slate, as in ``MovieLensSim-v0``).

:mod:`envs` may not import :mod:`bandits` (DESIGN.md), so :func:`fill_positions` is this
package's copy of :func:`bandits.multileave.fill_slate`'s rule; ``tests/test_envs_slate.py``
checks that the two agree.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from functools import lru_cache
from typing import Any

import numpy as np
from gymnasium import spaces

from arms._validation import check_choice, check_seed
from arms.data import Dataset, make_synthetic
from arms.data.synthetic import check_sizes
from envs.arm_set import check_arms
from envs.base import LIKE, check_step, expected_reward, realised_reward, sample_responses
from envs.errors import InvalidActionError, StepBeforeResetError
from envs.factories import (
    DRIFT_ARMS,
    build_movielens_sim,
    cached_simulator,
    check_online_learning,
)
from envs.latent_factor import LatentFactorUsers
from envs.recommender_env import RecommenderArmsEnv, check_render_mode
from envs.simulator import Simulator
from envs.vector_env import RecommenderArmsVectorEnv

CLICK_MODELS = ("pbm", "cascade")
#: Arms of the slate ids by default: the four rankers of the issue's simulation.
SLATE_ARMS = DRIFT_ARMS
#: Arms of ``SyntheticSlate-v0`` by default (fast to fit on the synthetic ratings).
SYNTHETIC_ARMS = ("svd", "popularity", "random")


def check_click_model(value: object) -> str:
    """Validate a click model name: ``TypeError`` for a non-string, ``ValueError`` for another
    name, each naming the allowed values (:func:`arms._validation.check_choice`).
    """
    return check_choice("click_model", value, CLICK_MODELS)


def fill_positions(lists: np.ndarray, teams: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Items of slates whose position ``j`` is filled by arm ``teams[:, j]``.

    Each position takes its arm's highest-ranked item not yet in the slate; an arm with nothing
    left leaves the position empty (``-1``). The same rule as
    :func:`bandits.multileave.fill_slate` (see the module docstring); ``k`` vectorised steps.

    Parameters
    ----------
    lists : ndarray of int64, shape (n, n_arms, L)
        Every arm's list per user, best first, ``-1`` padded.
    teams : ndarray of int64, shape (n, k)
        Arm of every position, in ``[0, n_arms)``.

    Returns
    -------
    items, ranks : ndarray of int64, shape (n, k)
        Items shown and their rank in their arm's list (``-1`` for an empty position).
    """
    n, n_arms, L = lists.shape
    k = teams.shape[1]
    rows = np.arange(n)
    items = np.full((n, k), -1, dtype=np.int64)
    ranks = np.full((n, k), -1, dtype=np.int64)
    flat = lists.reshape(n * n_arms, L)
    for j in range(k):
        own = np.take(flat, rows * n_arms + teams[:, j], axis=0)
        free = own >= 0
        if j:
            free &= ~(own[:, :, None] == items[:, None, :j]).any(axis=2)
        first = free.argmax(axis=1)
        found = free[rows, first]
        items[:, j] = np.where(found, own[rows, first], -1)
        ranks[:, j] = np.where(found, first, -1)
    return items, ranks


def cascade_probabilities(like: np.ndarray, dislike: np.ndarray
                          ) -> tuple[np.ndarray, np.ndarray]:
    """Per-position like and dislike probabilities under the cascade, shapes ``(..., k)``.

    Position ``j`` is reached when no earlier position was liked: both probabilities are
    multiplied by ``prod_{i<j} (1 - like_i)``.
    """
    reach = np.cumprod(1.0 - like, axis=-1)
    reach = np.concatenate([np.ones_like(reach[..., :1]), reach[..., :-1]], axis=-1)
    return like * reach, dislike * reach


def cut_after_first_like(responses: np.ndarray) -> np.ndarray:
    """Cascade responses from position-based ones: everything after the first like is 0."""
    liked = responses == LIKE
    before = np.cumsum(liked, axis=-1) - liked  # likes strictly before each position
    return np.where(before > 0, 0, responses).astype(responses.dtype)


def slate_expected_reward(like: np.ndarray, dislike: np.ndarray, reward: str,
                          click_model: str) -> np.ndarray:
    """Expected reward of slates with per-position ``like``/``dislike`` ``(..., k)``.

    Under the cascade, "any" is unchanged (the first like is kept) and "count" / "signed" use
    :func:`cascade_probabilities`.
    """
    if click_model == "cascade" and reward != "any":
        like, dislike = cascade_probabilities(like, dislike)
    return expected_reward(like, dislike, reward)


@dataclass
class SlateOutcome:
    """What happened when a batch of users was shown multileaved slates (arrays over the batch)."""

    teams: np.ndarray  #: (n, k) int64 arm of every position, -1 where empty
    responses: np.ndarray  #: (n, k) int8
    rewards: np.ndarray  #: (n,) float64
    expected: np.ndarray  #: (n, n_arms) float64, every arm's own slate's expected reward
    best: np.ndarray  #: (n,) int64, an arm with the highest ``expected``
    slate_expected: np.ndarray  #: (n,) float64, expected reward of the slate shown
    raw_slates: np.ndarray  #: (n, k) int64 raw item ids, -1 where empty


class SlateDynamics:
    """The response of simulated users to slates composed position by position from the arms.

    Shared by :class:`SlateEnv` and :class:`SlateVectorEnv` (the single env calls it with batches
    of one), on top of a :class:`~envs.simulator.Simulator` whose user model is
    :class:`~envs.latent_factor.LatentFactorUsers`.

    Parameters
    ----------
    simulator : Simulator
        Frozen arms (no ``online_learning``) and latent-factor users.
    click_model : {"pbm", "cascade"}, default "pbm"

    Raises
    ------
    TypeError
        ``simulator`` is not a Simulator, or its users are not latent-factor users.
    ValueError
        Unknown click model, or a simulator with online learning.
    """

    def __init__(self, simulator: Simulator, click_model: str = "pbm") -> None:
        if not isinstance(simulator, Simulator):
            raise TypeError(f"simulator must be an envs.Simulator, got {type(simulator).__name__}")
        if not isinstance(simulator.user_model, LatentFactorUsers):
            raise TypeError("slate environments need LatentFactorUsers (their position bias "
                            f"defines attraction), got {type(simulator.user_model).__name__}")
        if simulator.online_learning:
            raise ValueError("slate environments need frozen arms: online_learning=False")
        self.simulator = simulator
        self.click_model = check_click_model(click_model)
        self.model: LatentFactorUsers = simulator.user_model
        k = simulator.slate_size
        self.examination = self.model.examination(k)
        # shown at j, ranked i: examination(j) / examination(i) times the arm's own probability
        self._rescale = self.examination[None, :] / self.examination[:, None]  # [i, j]

    def serve(self, users: np.ndarray, teams: np.ndarray, uniforms: np.ndarray, t: np.ndarray,
              fatigue: np.ndarray | None) -> SlateOutcome:
        """Show each user the slate ``teams`` composes and sample the responses.

        Parameters
        ----------
        users, t : ndarray of int64, shape (n,)
        teams : ndarray of int64, shape (n, k)
            Arm of every position.
        uniforms : ndarray of float64, shape (n, k)
            One draw per position.
        fatigue : ndarray of float64, shape (n, n_arms), or None
        """
        sim = self.simulator
        prepared = {key: np.take(value, users, axis=0) for key, value in sim.prepared.items()}
        like_all, dislike_all = self.model.probabilities(prepared, users, t, fatigue)
        expected = slate_expected_reward(like_all, dislike_all, sim.reward, self.click_model)
        items, ranks = fill_positions(np.take(sim.slates, users, axis=0), teams)
        n, k = teams.shape
        rows = np.arange(n)[:, None]
        empty = ranks < 0
        rank = np.where(empty, 0, ranks)
        scale = np.where(empty, 0.0, self._rescale[rank, np.arange(k)[None, :]])
        like = like_all[rows, teams, rank] * scale
        dislike = dislike_all[rows, teams, rank] * scale
        responses = sample_responses(like, dislike, uniforms)
        if self.click_model == "cascade":
            responses = cut_after_first_like(responses)
        return SlateOutcome(
            teams=np.where(empty, -1, teams), responses=responses,
            rewards=realised_reward(responses, sim.reward), expected=expected,
            best=expected.argmax(axis=1),
            slate_expected=slate_expected_reward(like, dislike, sim.reward, self.click_model),
            raw_slates=sim.raw_items(items),
        )  # fmt: skip

    def expected_reward_matrix(self, t: int = 0) -> np.ndarray:
        """Expected reward of every arm's own slate for every user at step ``t`` of a fresh
        episode, under the click model; shape ``(n_users, n_arms)``.

        The simulator's matrix when the click model cannot change it (position-based, or the
        ``"any"`` reward, which the cascade keeps).

        Raises
        ------
        TypeError, ValueError
            ``t`` not an integer from 0 to int64's largest (:func:`envs.base.check_step`).
        """
        t = check_step(t)
        sim = self.simulator
        if self.click_model == "pbm" or sim.reward == "any":
            return sim.expected_reward_matrix(t)
        users = np.arange(sim.n_users)
        fatigue = (None if self.model.new_fatigue(1, sim.n_arms) is None
                   else np.zeros((sim.n_users, sim.n_arms)))
        like, dislike = self.model.probabilities(
            sim.prepared, users, np.full(sim.n_users, t, dtype=np.int64), fatigue)
        return slate_expected_reward(like, dislike, sim.reward, self.click_model)

    def update_fatigue(self, fatigue: np.ndarray, envs: np.ndarray | int,
                       users: np.ndarray | int, teams: np.ndarray) -> None:
        """Decay the served users' fatigue, then add each arm's share of its slate, in place.

        ``fatigue`` is ``(n_envs, n_users, n_arms)``; ``envs`` and ``users`` index it (arrays of
        shape (n,) or ints), ``teams`` is ``(n, k)`` (or ``(k,)`` with ints).
        """
        n_arms = self.simulator.n_arms
        teams = np.atleast_2d(teams)
        n, k = teams.shape
        cells = (np.arange(n)[:, None] * n_arms + teams).ravel()  # one bincount, no Python loop
        share = np.bincount(cells, minlength=n * n_arms).reshape(n, n_arms) / k
        decayed = fatigue[envs, users] * self.model.boredom_decay
        fatigue[envs, users] = decayed + (share[0] if np.ndim(users) == 0 else share)

    def check_teams(self, action: Any, shape: tuple[int, ...]) -> np.ndarray:
        """``action`` as int64 arm indices of ``shape``; TypeError / InvalidActionError else."""
        array = np.asarray(action)
        if array.dtype.kind not in "iu":
            raise TypeError(f"action must hold integer arm indices, got {action!r} "
                            f"(dtype {array.dtype})")
        if array.shape != shape:
            raise InvalidActionError(f"action must have shape {shape} (the arm of every slate "
                                     f"position), got {array.shape}")
        n_arms = self.simulator.n_arms
        if array.size and (array.min() < 0 or array.max() >= n_arms):
            bad = array[(array < 0) | (array >= n_arms)][0]
            raise InvalidActionError(f"action must hold arm indices within [0, {n_arms}) for "
                                     f"arms {list(self.simulator.arm_names)}, got {bad}")
        return array.astype(np.int64, copy=False)


class SlateEnv(RecommenderArmsEnv):
    """A user arrives; the agent composes a slate from the arms, position by position.

    ## Description

    As :class:`~envs.RecommenderArmsEnv`, but the action says which arm fills each of the ``k``
    slate positions; position ``j`` shows that arm's highest-ranked item not already shown
    (see :mod:`envs.slate`). ``[a] * k`` is arm ``a``'s own slate; a team-draft order
    multileaves several arms. Users respond under a position-based or a cascade click model.

    ## Action Space

    ``MultiDiscrete([K] * k)``: the arm of every position.

    ## Observation Space

    The arriving user's context, as in :class:`~envs.RecommenderArmsEnv`.

    ## Rewards

    From the responses to the slate, by ``reward`` (``"any"``, ``"count"``, ``"signed"``).

    ## Starting State, Episode End

    As :class:`~envs.RecommenderArmsEnv` (truncated by ``TimeLimit``, 1,000 steps by default).

    ## Information

    ``reset`` returns ``user_id``, ``user_index``, ``t``. ``step`` returns:

    =========================  ============  ================================================
    key                        type          meaning
    =========================  ============  ================================================
    ``user_id``, ``user_index``, ``t``       as the single-arm environment
    ``slate``                  int64 (k,)    raw item ids shown (-1: empty position)
    ``arms``                   int64 (k,)    arm that filled each position (-1: empty)
    ``responses``              int8 (k,)     1 like/click, -1 dislike, 0 nothing
    ``expected_rewards``       float64 (K,)  each arm's own slate's expected reward, now
    ``best_arm``               int           an arm maximising ``expected_rewards``
    ``slate_expected_reward``  float         expected reward of the slate shown
    ``regret``                 float         ``expected_rewards[best_arm]`` minus that (may be
                                             negative: a mix can beat every arm's own slate)
    =========================  ============  ================================================

    ## Arguments

    ``gymnasium.make("recbandits/MovieLensSlate-v0", click_model="pbm", **kwargs)`` with the
    keyword arguments of ``recbandits/MovieLensSim-v0`` except ``online_learning``; or
    ``SlateEnv(dynamics, render_mode=None)`` with ``dynamics`` a
    :class:`SlateDynamics` (``SlateDynamics(simulator, click_model)``); ``render_mode="ansi"``
    returns a line per step.

    ## Version History

    * v0: initial version (position-based and cascade click models).
    """

    def __init__(self, dynamics: SlateDynamics, *, render_mode: str | None = None) -> None:
        if not isinstance(dynamics, SlateDynamics):
            raise TypeError(f"dynamics must be an envs.slate.SlateDynamics, got "
                            f"{type(dynamics).__name__}")
        super().__init__(dynamics.simulator, render_mode=render_mode)
        self.dynamics = dynamics
        self.click_model = dynamics.click_model
        sim = dynamics.simulator
        # the parent's Env[..., np.int64] types one arm; here an action is a (k,) array of them
        self.action_space = spaces.MultiDiscrete(  # type: ignore[assignment]
            np.full(sim.slate_size, sim.n_arms))

    def expected_reward_matrix(self, t: int = 0) -> np.ndarray:
        """Every arm's own slate's expected reward per user under the click model.

        Shape ``(n_users, n_arms)``; see :meth:`SlateDynamics.expected_reward_matrix`.
        """
        return self.dynamics.expected_reward_matrix(t)

    def step(self, action: Any) -> tuple[np.ndarray, float, bool, bool, dict[str, Any]]:
        """Serve the current user the slate ``action`` composes; the next user arrives.

        Parameters
        ----------
        action : array of int, shape (k,)
            Arm of every position.

        Returns
        -------
        observation, reward, terminated, truncated, info
            As :meth:`envs.RecommenderArmsEnv.step`; ``info`` as in the class docstring.

        Raises
        ------
        StepBeforeResetError
            Before the first :meth:`reset`, after :meth:`close`, or once a replay of real
            arrivals has run out.
        TypeError, InvalidActionError
            For an ``action`` of the wrong type, shape or range.
        """
        user = self._check_can_step()
        sim = self.simulator
        teams = self.dynamics.check_teams(action, (sim.slate_size,))
        t = self._t
        fatigue = None if self._fatigue is None else self._fatigue[0, user][None]
        out = self.dynamics.serve(np.array([user]), teams[None], self._uniforms[None],
                                  np.array([t]), fatigue)
        if self._fatigue is not None:
            self.dynamics.update_fatigue(self._fatigue, 0, user, teams)
        best = int(out.best[0])
        info: dict[str, Any] = {
            "user_id": int(sim.user_ids[user]), "user_index": user, "t": t,
            "slate": out.raw_slates[0], "arms": out.teams[0], "responses": out.responses[0],
            "expected_rewards": out.expected[0], "best_arm": best,
            "slate_expected_reward": float(out.slate_expected[0]),
            "regret": float(out.expected[0, best] - out.slate_expected[0]),
        }
        reward = float(out.rewards[0])
        if self.render_mode == "ansi":
            self._last = (f"t={t} user={info['user_id']} arms={info['arms'].tolist()} "
                          f"slate={info['slate'].tolist()} "
                          f"responses={info['responses'].tolist()} reward={reward:g}")
        self._t = t + 1
        limit = sim.episode_limit
        truncated = limit is not None and self._t >= limit
        if not truncated:
            self._arrive()
        return sim.contexts[self._user].copy(), reward, False, truncated, info


class SlateVectorEnv(RecommenderArmsVectorEnv):
    """``num_envs`` independent :class:`SlateEnv` s stepped as arrays (native, numpy).

    Seeding, autoreset and info masks as :class:`~envs.RecommenderArmsVectorEnv` (sub-environment
    ``i`` reproduces ``SlateEnv.reset(seed=s + i)`` exactly); actions ``(num_envs, k)``.

    Parameters
    ----------
    dynamics : SlateDynamics
    num_envs : int
    max_episode_steps : int or None, default None
    render_mode : None, default None
        As :class:`~envs.RecommenderArmsVectorEnv`: nothing to render, anything else refused.
    """

    def __init__(self, dynamics: SlateDynamics, *, num_envs: int,
                 max_episode_steps: int | None = None, render_mode: str | None = None) -> None:
        if not isinstance(dynamics, SlateDynamics):
            raise TypeError(f"dynamics must be an envs.slate.SlateDynamics, got "
                            f"{type(dynamics).__name__}")
        super().__init__(dynamics.simulator, num_envs=num_envs,
                         max_episode_steps=max_episode_steps, render_mode=render_mode)
        self.dynamics = dynamics
        self.click_model = dynamics.click_model
        sim = dynamics.simulator
        self.single_action_space = spaces.MultiDiscrete(np.full(sim.slate_size, sim.n_arms))
        self.action_space = spaces.MultiDiscrete(np.full((self.num_envs, sim.slate_size),
                                                         sim.n_arms))

    def expected_reward_matrix(self, t: int = 0) -> np.ndarray:
        """As :meth:`SlateEnv.expected_reward_matrix`."""
        return self.dynamics.expected_reward_matrix(t)

    def step(self, actions: Any
             ) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray, dict[str, Any]]:
        """Serve every sub-environment's user the slate its row of ``actions`` composes.

        Raises
        ------
        StepBeforeResetError
            Before :meth:`reset`.
        TypeError, InvalidActionError
            ``actions`` not integer, not of shape ``(num_envs, k)`` or out of range.
        """
        if not self._started:
            raise StepBeforeResetError("call reset() before step()")
        sim = self.simulator
        teams = self.dynamics.check_teams(actions, (self.num_envs, sim.slate_size))
        n = self.num_envs
        resetting = np.flatnonzero(self._autoreset)
        served = self._all if len(resetting) == 0 else np.flatnonzero(~self._autoreset)
        users, t = self._users[served].copy(), self._t[served].copy()
        fatigue = None if self._fatigue is None else self._fatigue[served, users]
        out = self.dynamics.serve(users, teams[served], self._uniforms[served], t, fatigue)
        if self._fatigue is not None:
            self.dynamics.update_fatigue(self._fatigue, served, users, teams[served])
        rewards = np.zeros(n)
        rewards[served] = out.rewards
        self._t[served] = t + 1
        truncated = np.zeros(n, dtype=bool)
        limit = sim.episode_limit
        data_ends = (t + 1 >= limit) if limit is not None else np.zeros(len(served), bool)
        time_ends = (t + 1 >= self.max_episode_steps if self.max_episode_steps is not None
                     else np.zeros(len(served), bool))
        truncated[served] = data_ends | time_ends
        self._arrive(served[~data_ends])
        info = self._slate_info(served, users, out)
        if len(resetting):
            self._reset_envs(resetting)
            reset_info = self._reset_info(resetting)
            for key in ("user_id", "user_index", "t"):
                info[key][resetting] = reset_info[key][resetting]
                info[f"_{key}"][resetting] = True
        self._autoreset = truncated
        return (np.take(sim.contexts, self._users, axis=0), rewards, np.zeros(n, dtype=bool),
                truncated, info)

    def _slate_info(self, served: np.ndarray, users: np.ndarray, out: SlateOutcome
                    ) -> dict[str, Any]:
        sim = self.simulator
        n = self.num_envs
        mask = np.zeros(n, dtype=bool)
        mask[served] = True
        rows = np.arange(len(served))
        values = {
            "user_id": (sim.user_ids[users], -1), "user_index": (users, -1),
            "t": (self._t[served] - 1, -1), "slate": (out.raw_slates, -1),
            "arms": (out.teams, -1), "responses": (out.responses, 0),
            "expected_rewards": (out.expected, np.nan), "best_arm": (out.best, -1),
            "slate_expected_reward": (out.slate_expected, np.nan),
            "regret": (out.expected[rows, out.best] - out.slate_expected, np.nan),
        }
        info: dict[str, Any] = {}
        for key, (value, fill) in values.items():
            array = np.full((n, *value.shape[1:]), fill, dtype=value.dtype)
            array[served] = value
            info[key] = array
            info[f"_{key}"] = mask.copy()
        return info


# ---------------------------------------------------------------------- builders
def build_movielens_slate(*, click_model: str = "pbm", arms: Sequence[Any] = SLATE_ARMS,
                          online_learning: bool = False, **kwargs: Any) -> SlateDynamics:
    """Dynamics of ``recbandits/MovieLensSlate-v0``.

    The simulator of ``recbandits/MovieLensSim-v0`` (shared through its cache; keyword arguments
    as :func:`envs.factories.build_movielens_sim`) with arms ``svd, sequential, autoencoder,
    popularity`` by default, and a click model.

    Raises
    ------
    ValueError
        ``online_learning=True`` (slates need frozen arms) or an unknown click model.
    """
    if check_online_learning(online_learning):  # (np.False_ was refused as "=True": review)
        raise ValueError("online_learning=True is not supported by the slate environments "
                         "(they compose slates from the frozen arms' lists)")
    check_click_model(click_model)
    # checked before tuple(): "svd" became the arms "s", "v", "d" (found by attack)
    arms = check_arms(arms)
    return SlateDynamics(cached_simulator(build_movielens_sim, arms=arms, **kwargs),
                         click_model)


@lru_cache(maxsize=4, typed=True)  # 120 and 120.0 are one key untyped
def _synthetic(n_users: int, n_items: int, n_ratings: int, data_seed: int) -> Dataset:
    return make_synthetic(n_users, n_items, n_ratings, random_state=data_seed)


def build_synthetic_slate(*, n_users: int = 120, n_items: int = 300, n_ratings: int = 6000,
                          data_seed: int = 0, arms: Sequence[Any] = SYNTHETIC_ARMS,
                          **kwargs: Any) -> SlateDynamics:
    """Dynamics of ``recbandits/SyntheticSlate-v0``: :func:`build_movielens_slate` on
    ``make_synthetic(n_users, n_items, n_ratings, random_state=data_seed)``.

    Other keyword arguments as :func:`build_movielens_slate` (``dataset`` excepted).

    Raises
    ------
    TypeError
        ``dataset`` given (this environment makes its own), or a size or seed of the wrong type.
    ValueError
        Sizes :func:`arms.data.synthetic.check_sizes` refuses, or a negative ``data_seed``.
    """
    if "dataset" in kwargs:
        raise TypeError("SyntheticSlate-v0 makes its own dataset (n_users, n_items, n_ratings, "
                        "data_seed); for a dataset of yours use recbandits/MovieLensSlate-v0 "
                        "with dataset=")
    check_sizes(n_users, n_items, n_ratings)
    check_seed(data_seed, "data_seed")  # the one seed rule: a TOML integer (review)
    data = _synthetic(n_users, n_items, n_ratings, data_seed)
    return build_movielens_slate(dataset=data, arms=arms, **kwargs)


def make_movielens_slate(*, render_mode: str | None = None, **kwargs: Any) -> SlateEnv:
    """A :class:`SlateEnv` on :func:`build_movielens_slate`'s dynamics."""
    return SlateEnv(build_movielens_slate(**kwargs), render_mode=render_mode)


def make_movielens_slate_vector(*, num_envs: int = 1, max_episode_steps: int | None = None,
                                render_mode: str | None = None, **kwargs: Any) -> SlateVectorEnv:
    """A :class:`SlateVectorEnv` on :func:`build_movielens_slate`'s dynamics."""
    check_render_mode(render_mode, SlateVectorEnv.metadata["render_modes"])  # before building
    return SlateVectorEnv(build_movielens_slate(**kwargs), num_envs=num_envs,
                          max_episode_steps=max_episode_steps, render_mode=render_mode)


def make_synthetic_slate(*, render_mode: str | None = None, **kwargs: Any) -> SlateEnv:
    """A :class:`SlateEnv` on :func:`build_synthetic_slate`'s dynamics."""
    return SlateEnv(build_synthetic_slate(**kwargs), render_mode=render_mode)


def make_synthetic_slate_vector(*, num_envs: int = 1, max_episode_steps: int | None = None,
                                render_mode: str | None = None, **kwargs: Any) -> SlateVectorEnv:
    """A :class:`SlateVectorEnv` on :func:`build_synthetic_slate`'s dynamics."""
    check_render_mode(render_mode, SlateVectorEnv.metadata["render_modes"])  # before building
    return SlateVectorEnv(build_synthetic_slate(**kwargs), num_envs=num_envs,
                          max_episode_steps=max_episode_steps, render_mode=render_mode)
