"""RecommenderArmsEnv: choose which recommender serves the arriving user."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any, ClassVar

import gymnasium as gym
import numpy as np
from gymnasium import spaces

from envs.errors import InvalidActionError, StepBeforeResetError
from envs.simulator import BLOCK_STEPS, Simulator


def check_no_options(options: Any) -> None:
    """Refuse reset options: the environments take none, and a key such as ``{"user": 5}`` was
    ignored without a word (found by attack). None and ``{}`` (Gymnasium's checker sends it)
    pass.

    Raises
    ------
    TypeError
        ``options`` neither None nor a dict.
    ValueError
        A non-empty dict, naming its keys.
    """
    if options is None:
        return
    if not isinstance(options, dict):
        raise TypeError(f"options must be None or a dict, got {type(options).__name__}")
    if options:
        raise ValueError(f"reset takes no options, got {sorted(map(str, options))}")


def check_render_mode(render_mode: object, modes: Sequence[str]) -> None:
    """Refuse a ``render_mode`` that is neither None nor one of the env's metadata
    ``render_modes``: the single and the vector environments' one rule.

    Raises
    ------
    ValueError
        Naming ``render_mode``, the value and the modes allowed.
    """
    if render_mode is not None and render_mode not in modes:
        allowed = f"None or one of {list(modes)}" if modes else "None (no render_modes)"
        raise ValueError(f"render_mode must be {allowed}, got {render_mode!r}")


def check_action(action: Any, n_arms: int, arm_names: tuple[str, ...]) -> int:
    """The arm index of ``action``; raises ``TypeError``/:class:`InvalidActionError` otherwise."""
    if type(action) is not int and not isinstance(action, np.integer):
        if isinstance(action, np.ndarray) and action.shape == () and action.dtype.kind in "iu":
            action = action.item()
        else:
            raise TypeError(
                f"action must be an integer arm index, got {action!r} ({type(action).__name__})"
            )
    if not 0 <= action < n_arms:
        raise InvalidActionError(
            f"action must be an arm index within [0, {n_arms}) for arms {list(arm_names)}, "
            f"got {action}"
        )
    return int(action)


class RecommenderArmsEnv(gym.Env[np.ndarray, np.int64]):
    """A user arrives; the agent picks the recommender (arm) whose slate the user is shown.

    ## Description

    Each step serves one user. The agent sees the user's context, chooses one of ``K`` arms
    (recommenders such as SVD, sequential, autoencoder, popularity); the user is shown that arm's
    top-``k`` slate and responds to each item with a like/click, a dislike or nothing, as their
    :class:`~envs.base.UserModel` dictates. The next user then arrives. A bandit problem with
    contexts: an action does not change which user comes next.

    ## Action Space

    ``Discrete(K)``: the index of an arm, in the order of ``arm_names``.

    ## Observation Space

    ``Box(0, 1, (n_features,), float32)``: the arriving user's context (see :mod:`envs.context`).

    ======================  ===========  =======================================================
    features                 width        meaning
    ======================  ===========  =======================================================
    ``age:*``                7            one-hot age bucket (<18, 18-24, ..., 56+)
    ``gender:F``             1            1 for a woman
    ``occupation:*``         21 (ML)      one-hot occupation
    ``history_length``       1            log1p(past ratings) / log1p(max past ratings)
    ``genre:*``              19 (ML)      share of the user's past ratings in each genre
    ======================  ===========  =======================================================

    49 features on MovieLens 100K; ``feature_names`` lists them. FixedCTR without a dataset has
    one constant feature, ``bias`` = 1.

    ## Rewards

    From the responses to the slate, by ``reward``: ``"any"`` (default) 1 when the user liked or
    clicked anything, else 0; ``"count"`` the number of likes/clicks; ``"signed"`` likes minus
    dislikes.

    ## Starting State

    ``reset`` draws the first user (uniformly, by activity, or the first of the replayed
    arrivals) and clears the episode state (boredom, drift time, arms learnt online).

    ## Episode End

    No terminal state (``terminated`` is always False). Episodes are truncated by Gymnasium's
    ``TimeLimit`` after ``max_episode_steps`` (1,000 for the registered ids, set it with
    ``gymnasium.make(id, max_episode_steps=...)``), or when a replay of real arrivals runs out:
    no user is left then, and ``step`` raises :class:`~envs.errors.StepBeforeResetError` until
    ``reset``.

    ## Information

    ``reset`` returns ``user_id``, ``user_index``, ``t``. ``step`` returns, for the user just
    served:

    ====================  ===============  ===================================================
    key                   type             meaning
    ====================  ===============  ===================================================
    ``user_id``           int              raw user id
    ``user_index``        int              contiguous user index
    ``t``                 int              step of the episode the user was served at
    ``slate``             int64 (k,)       raw item ids shown, best first (-1: no item)
    ``responses``         int8 (k,)        1 like/click, -1 dislike, 0 nothing
    ``expected_rewards``  float64 (K,)     every arm's expected reward for this user, now
    ``best_arm``          int              an arm maximising ``expected_rewards``
    ``regret``            float            ``expected_rewards[best_arm] - expected_rewards[a]``
    ====================  ===============  ===================================================

    ``expected_reward_matrix(t)`` gives every arm's expected reward for every user at step ``t``
    of a fresh episode, ``arrival_probabilities`` who arrives, and ``best_fixed_arm(t)`` the arm
    a non-contextual agent should pick: with them, regret against the best arm per user and
    against the best fixed arm is exact.

    ## Arguments

    Built by the registered ids (see :mod:`envs.registration`) or from a :class:`Simulator`:
    ``RecommenderArmsEnv(simulator, render_mode=None)``. ``render_mode="ansi"`` returns a line per
    step.

    ## Version History

    * v0: initial version (FixedCTR, held-out MovieLens, latent-factor simulator, drift).
    """

    metadata: ClassVar[dict[str, Any]] = {"render_modes": ["ansi"], "render_fps": 4}  # type: ignore[misc]  # gymnasium's is an instance attribute; a ClassVar here (RUF012)

    def __init__(self, simulator: Simulator, *, render_mode: str | None = None) -> None:
        if not isinstance(simulator, Simulator):
            raise TypeError(f"simulator must be an envs.Simulator, got {type(simulator).__name__}")
        check_render_mode(render_mode, self.metadata["render_modes"])
        self.simulator = simulator
        self.render_mode = render_mode
        self.arm_names = simulator.arm_names
        self.feature_names = simulator.feature_names
        self.action_space = spaces.Discrete(simulator.n_arms)
        self.observation_space = spaces.Box(
            0.0, 1.0, shape=(len(simulator.feature_names),), dtype=np.float32
        )
        self._fatigue: np.ndarray | None = None
        self._arms: list = []
        self._user: int | None = None
        self._last: str = ""

    # ------------------------------------------------------------------ Gymnasium API
    def reset(
        self, *, seed: int | None = None, options: dict[str, Any] | None = None
    ) -> tuple[np.ndarray, dict[str, Any]]:
        """Start an episode: the first user arrives.

        Parameters
        ----------
        seed : int or None, default None
            Seeds ``self.np_random`` (Gymnasium's rule); None keeps the current generator.
        options : dict or None, default None
            Accepted for the Gymnasium API; the environment takes no option, so a non-empty
            dict is refused (:func:`check_no_options`).

        Returns
        -------
        observation : ndarray of float32, shape ``(n_features,)``
            The arriving user's context.
        info : dict
            ``user_id``, ``user_index`` and the step ``t`` (0).
        """
        check_no_options(options)
        super().reset(seed=seed)
        sim = self.simulator
        self._block = self.np_random.random((BLOCK_STEPS, 1 + sim.slate_size))
        self._row = 0
        self._t = 0
        self._fatigue = sim.user_model.new_fatigue(1, sim.n_arms)
        if sim.online_learning:
            self._arms = sim.fresh_arms()
        self._arrive()
        self._last = ""
        user = self._user
        return sim.contexts[user].copy(), {
            "user_id": int(sim.user_ids[user]), "user_index": user, "t": 0
        }

    def step(self, action: Any) -> tuple[np.ndarray, float, bool, bool, dict[str, Any]]:
        """Serve the current user the slate of arm ``action``; the next user arrives.

        Parameters
        ----------
        action : int or numpy integer
            Arm index in ``[0, n_arms)``.

        Returns
        -------
        observation, reward, terminated, truncated, info
            The next user's context (shape ``(n_features,)``), the slate's reward, False (episodes
            never end by themselves), whether ``episode_limit`` steps were served, and ``info`` with
            the slate, responses, expected rewards, best arm and regret of this step.

        Raises
        ------
        StepBeforeResetError
            Before the first :meth:`reset`, after :meth:`close`, or once a replay of real
            arrivals has run out (the step that returned ``truncated`` for it was the last).
        TypeError, InvalidActionError
            For an ``action`` of the wrong type or out of range.
        """
        user = self._check_can_step()
        sim = self.simulator
        a = check_action(action, sim.n_arms, sim.arm_names)
        t = self._t
        slates = None
        if sim.online_learning:
            slates = sim.current_slates(self._arms, np.array([user]))
        fatigue = None if self._fatigue is None else self._fatigue[0, user]
        slate, responses, reward, expected, best = sim.serve_one(
            user, a, self._uniforms, t, fatigue, slates
        )
        if self._fatigue is not None:
            # Scalar indices: basic indexing, several times cheaper than arrays of one.
            sim.user_model.update_fatigue(self._fatigue, 0, user, a)  # type: ignore[arg-type]
        if sim.online_learning:
            shown = slates[0, a][None]  # type: ignore[index]  # computed above when learning online
            sim.learn(self._arms, np.array([user]), shown, responses[None])
        info: dict[str, Any] = {
            "user_id": int(sim.user_ids[user]),
            "user_index": user,
            "t": t,
            "slate": slate,
            "responses": responses,
            "expected_rewards": expected,
            "best_arm": best,
            "regret": float(expected[best] - expected[a]),
        }
        if self.render_mode == "ansi":
            self._last = (
                f"t={t} user={info['user_id']} arm={sim.arm_names[a]} "
                f"slate={info['slate'].tolist()} responses={info['responses'].tolist()} "
                f"reward={reward:g} regret={info['regret']:.4f}"
            )
        self._t = t + 1
        limit = sim.episode_limit
        truncated = limit is not None and self._t >= limit
        if not truncated:
            self._arrive()
        return sim.contexts[self._user].copy(), reward, False, truncated, info

    def render(self) -> str | None:
        """The last step as one line of text when ``render_mode="ansi"``; None otherwise."""
        if self.render_mode == "ansi":
            if self._last or self._user is None:
                return self._last or "no episode (call reset())"
            # the raw user id, as the steps' lines show it (this line showed the index)
            return (f"t={getattr(self, '_t', 0)} user={int(self.simulator.user_ids[self._user])} "
                    "(no step yet)")
        return None

    def close(self) -> None:
        """End the episode: :meth:`step` needs a new :meth:`reset`."""
        self._user = None

    # ------------------------------------------------------------------ ground truth
    def expected_reward_matrix(self, t: int = 0) -> np.ndarray:
        """Expected reward of every arm for every user, shape ``(n_users, n_arms)``.

        At step ``t`` of a fresh episode (no fatigue; the arms as fitted). Rows of users who
        never arrive are computed all the same; weight them with :attr:`arrival_probabilities`.

        Raises
        ------
        TypeError, ValueError
            ``t`` not an integer from 0 to int64's largest (:func:`envs.base.check_step`).
        """
        return self.simulator.expected_reward_matrix(t)

    @property
    def arrival_probabilities(self) -> np.ndarray:
        """Probability that each user is the one arriving, shape ``(n_users,)``."""
        return self.simulator.arrival_probabilities.copy()

    def best_fixed_arm(self, t: int = 0) -> tuple[int, np.ndarray]:
        """The arm with the highest mean expected reward over arrivals at step ``t``.

        Returns
        -------
        arm : int
        mean_rewards : ndarray of float64, shape ``(n_arms,)``
            ``arrival_probabilities @ expected_reward_matrix(t)``.

        Raises
        ------
        TypeError, ValueError
            ``t`` not an integer from 0 to int64's largest (:func:`envs.base.check_step`).
        """
        means = self.simulator.arrival_probabilities @ self.expected_reward_matrix(t)
        return int(np.argmax(means)), means

    # ------------------------------------------------------------------ internals
    def _check_can_step(self) -> int:
        """The user waiting to be served; :class:`StepBeforeResetError` when none is: before
        :meth:`reset`, after :meth:`close`, or after the last arrival of a replay (its last user
        was served again and again, at steps past the replay's end: found by attack).
        """
        if self._user is None:
            raise StepBeforeResetError("call reset() before step()")
        limit = self.simulator.episode_limit
        if limit is not None and self._t >= limit:
            raise StepBeforeResetError(f"the replay of {limit} real arrival(s) ended at step "
                                       f"{limit} (truncated); call reset() to start it again")
        return self._user

    def _arrive(self) -> None:
        """Draw the user served at step ``self._t`` and their response uniforms."""
        if self._row == BLOCK_STEPS:
            self._block = self.np_random.random((BLOCK_STEPS, 1 + self.simulator.slate_size))
            self._row = 0
        row = self._block[self._row]
        self._row += 1
        self._user = self.simulator.draw_user(float(row[0]), self._t)
        self._uniforms = row[1:]
