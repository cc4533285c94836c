"""RecommenderArmsVectorEnv: N independent users per step, in numpy."""

from __future__ import annotations

from numbers import Integral
from typing import Any, ClassVar

import numpy as np
from gymnasium import spaces
from gymnasium.utils import seeding
from gymnasium.vector import AutoresetMode, VectorEnv
from gymnasium.vector.utils import batch_space

from arms._validation import check_int
from envs.errors import InvalidActionError, StepBeforeResetError
from envs.recommender_env import check_no_options, check_render_mode
from envs.simulator import BLOCK_STEPS, Simulator

#: Most bytes the sub-environments' draws ahead may take together: ``num_envs=10**9`` used up
#: the machine's 23 GiB and was killed by the kernel, with no Python error (found by attack).
MAX_DRAW_BYTES = 2 * 2**30


def max_num_envs(slate_size: int) -> int:
    """Most sub-environments a vector env of slates of ``slate_size`` takes (95,325 at 10):
    each holds ``BLOCK_STEPS`` x ``(1 + slate_size)`` float64 draws ahead.
    """
    return MAX_DRAW_BYTES // (BLOCK_STEPS * (1 + slate_size) * 8)


def check_env_seed(seed: object, name: str = "seed") -> int:
    """A reset seed as an int: Gymnasium's rule of ``Env.reset`` (an integer >= 0, a bool
    counting as the int it equals), numpy integers included, by the one integer rule
    (:func:`arms._validation.check_int`).

    A list of numpy integers and ``-1`` raised ``gymnasium.error.Error`` where the docstring
    promised ``TypeError``/``ValueError`` (found by attack).

    Raises
    ------
    TypeError
        Not an integer.
    ValueError
        Negative.
    """
    if isinstance(seed, bool):  # Env.reset(seed=True) seeds with 1: the single env's rule
        seed = int(seed)
    return check_int(name, seed, low=0)


class RecommenderArmsVectorEnv(VectorEnv):
    """``num_envs`` independent copies of :class:`~envs.RecommenderArmsEnv`, stepped as arrays.

    Not a :class:`~gymnasium.vector.SyncVectorEnv`: one step serves every sub-environment's user
    with a handful of numpy operations on the precomputed slates (the single environment calls the
    very same :class:`~envs.simulator.Simulator` methods with batches of one).

    Spaces, rewards and info keys are those of the single environment, batched: observations
    ``(num_envs, n_features)`` float32, actions ``MultiDiscrete([K] * num_envs)``, and ``info``
    holds one array per key with a leading ``num_envs`` axis and a ``_key`` boolean mask (False
    for sub-environments that were being reset on that step).

    Exactness. ``reset(seed=s)`` seeds sub-environment ``i`` with ``s + i`` (or ``seed[i]`` for a
    list) exactly as ``RecommenderArmsEnv.reset(seed=s + i)`` would, and each sub-environment
    consumes its own generator in the same blocks, so the trajectories equal those of
    ``num_envs`` single environments (wrapped in ``TimeLimit(max_episode_steps)``) that are reset
    with no seed after each episode.

    Autoreset follows Gymnasium's default ``NEXT_STEP`` mode: the step after a sub-environment
    ends resets it, ignores its action, and returns its first observation with reward 0.

    Parameters
    ----------
    simulator : Simulator
    num_envs : int
        Number of sub-environments, >= 1.
    max_episode_steps : int or None, default None
        Truncate each episode after this many steps (the registered ids pass their own).
    render_mode : None, default None
        The vector environment renders nothing (its metadata's ``render_modes`` are empty);
        accepted so that ``gymnasium.make_vec(id, render_mode=None)`` works, any other value
        refused with a ``ValueError``.

    Notes
    -----
    With ``online_learning`` each sub-environment learns on its own copy of the arms, one
    sub-environment at a time: correct, but without the vectorised speed.
    """

    metadata: ClassVar[dict[str, Any]] = {  # type: ignore[misc]  # gymnasium's is an instance attribute; a ClassVar here (RUF012)
        "autoreset_mode": AutoresetMode.NEXT_STEP,
        "render_modes": [],
    }

    def __init__(
        self, simulator: Simulator, *, num_envs: int, max_episode_steps: int | None = None,
        render_mode: str | None = None,
    ) -> None:
        if not isinstance(simulator, Simulator):
            raise TypeError(f"simulator must be an envs.Simulator, got {type(simulator).__name__}")
        check_render_mode(render_mode, self.metadata["render_modes"])
        self.render_mode = render_mode
        if isinstance(num_envs, bool) or not isinstance(num_envs, int | np.integer) or num_envs < 1:
            raise ValueError(f"num_envs must be an integer >= 1, got {num_envs!r}")
        most = max_num_envs(simulator.slate_size)
        if num_envs > most:
            raise ValueError(f"num_envs must be at most {most:,} with slate_size "
                             f"{simulator.slate_size} (each sub-environment draws {BLOCK_STEPS} "
                             f"steps of {1 + simulator.slate_size} uniforms ahead, and all of "
                             f"them together at most {MAX_DRAW_BYTES // 2**30} GiB), got "
                             f"{num_envs:,}")
        if max_episode_steps is not None and (
            isinstance(max_episode_steps, bool)
            or not isinstance(max_episode_steps, int | np.integer)
            or max_episode_steps < 1
        ):
            raise ValueError(
                f"max_episode_steps must be None or an integer >= 1, got {max_episode_steps!r}"
            )
        self.simulator = simulator
        self.num_envs = int(num_envs)
        self.max_episode_steps = max_episode_steps
        self.arm_names = simulator.arm_names
        self.feature_names = simulator.feature_names
        self.single_action_space = spaces.Discrete(simulator.n_arms)
        self.action_space = spaces.MultiDiscrete(np.full(self.num_envs, simulator.n_arms))
        self.single_observation_space = spaces.Box(
            0.0, 1.0, shape=(len(simulator.feature_names),), dtype=np.float32
        )
        self.observation_space = batch_space(self.single_observation_space, self.num_envs)
        n, k = self.num_envs, simulator.slate_size
        self._rngs: list[np.random.Generator] | None = None
        self._block = np.empty((n, BLOCK_STEPS, 1 + k))
        self._row = np.zeros(n, dtype=np.int64)
        self._t = np.zeros(n, dtype=np.int64)
        self._users = np.zeros(n, dtype=np.int64)
        self._uniforms = np.empty((n, k))
        self._autoreset = np.zeros(n, dtype=bool)
        self._fatigue: np.ndarray | None = None
        self._arms: list[list] = []
        self._all = np.arange(n)
        self._started = False

    # ------------------------------------------------------------------ Gymnasium API
    def reset(
        self, *, seed: int | list[int] | None = None, options: dict[str, Any] | None = None
    ) -> tuple[np.ndarray, dict[str, Any]]:
        """Reset every sub-environment; returns observations ``(num_envs, n_features)`` and info.

        Parameters
        ----------
        seed : int, list of int or None, default None
            None keeps every sub-environment's generator (new ones at the first reset); an int
            ``s`` seeds sub-environment ``i`` with ``s + i``; a list (or tuple) of ``num_envs``
            seeds, each an int or None, seeds them one by one. A seed follows Gymnasium's rule
            of the single env (``Env.reset``): an integer >= 0, a bool counting as the int it
            equals (``True`` is 1); numpy integers are taken too, alone or in a list.
        options : dict or None, default None
            Refused unless empty (:func:`~envs.recommender_env.check_no_options`).

        Raises
        ------
        TypeError
            A seed that is not an integer (a float, a string, an array), or ``options`` not a
            dict.
        ValueError
            A negative seed, a list of another length than ``num_envs``, or non-empty
            ``options``.
        """
        check_no_options(options)
        if seed is None:
            super().reset()
            if self._rngs is None:
                self._rngs = [seeding.np_random(None)[0] for _ in range(self.num_envs)]
        elif isinstance(seed, list | tuple):
            if len(seed) != self.num_envs:
                raise ValueError(f"seed must be None, an int or a list of {self.num_envs} seeds "
                                 f"(one per sub-environment), got a list of {len(seed)}")
            seeds = [None if s is None else check_env_seed(s, f"seed[{i}]")
                     for i, s in enumerate(seed)]
            super().reset()
            self._rngs = [seeding.np_random(s)[0] for s in seeds]
        elif isinstance(seed, Integral):
            first = check_env_seed(seed)
            super().reset(seed=first)
            self._rngs = [seeding.np_random(first + i)[0] for i in range(self.num_envs)]
        else:
            raise TypeError(f"seed must be None, an integer >= 0 or a list of {self.num_envs} "
                            f"of them, got {seed!r} ({type(seed).__name__})")
        sim = self.simulator
        self._fatigue = sim.user_model.new_fatigue(self.num_envs, sim.n_arms)
        # A full reset starts every episode now, so no sub-env owes an autoreset step.
        self._autoreset[:] = False
        self._reset_envs(self._all)
        self._started = True
        return self.simulator.contexts[self._users], self._reset_info(self._all)

    def close_extras(self, **kwargs: Any) -> None:
        """Called once by :meth:`close`: :meth:`step` needs a new :meth:`reset` after it, as
        the single environment's does (it went on stepping: found by attack).
        """
        self._started = False

    def step(
        self, actions: Any
    ) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray, dict[str, Any]]:
        """Serve every sub-environment's user with its arm; see the class docstring."""
        if not self._started:
            raise StepBeforeResetError("call reset() before step()")
        actions = self._check_actions(actions)
        sim = self.simulator
        n = self.num_envs
        resetting = np.flatnonzero(self._autoreset)
        served = self._all if len(resetting) == 0 else np.flatnonzero(~self._autoreset)
        index = slice(None) if len(resetting) == 0 else served
        # Copies: with a slice these would be views that _arrive below overwrites.
        users, t, chosen = self._users[index].copy(), self._t[index].copy(), actions[index]
        fatigue = None if self._fatigue is None else self._fatigue[served, users]
        slates = None
        if sim.online_learning and len(served):
            slates = np.concatenate(
                [sim.current_slates(self._arms[i], users[j : j + 1]) for j, i in enumerate(served)]
            )
        out = sim.serve(users, chosen, self._uniforms[index], t, fatigue, slates)
        if self._fatigue is not None:
            sim.user_model.update_fatigue(self._fatigue, served, users, chosen)
        if sim.online_learning:
            for j, i in enumerate(served):
                sim.learn(self._arms[i], users[j : j + 1], out.slates[j : j + 1],
                          out.responses[j : j + 1])
        rewards = out.rewards if len(resetting) == 0 else np.zeros(n)
        rewards[index] = out.rewards
        self._t[index] = t + 1
        truncated = np.zeros(n, dtype=bool)
        limit = sim.episode_limit
        data_ends = (t + 1 >= limit) if limit is not None else np.zeros(len(served), dtype=bool)
        time_ends = (
            t + 1 >= self.max_episode_steps
            if self.max_episode_steps is not None
            else np.zeros(len(served), dtype=bool)
        )
        truncated[index] = data_ends | time_ends
        # As the single env: on a time limit the next user still arrives (consuming the same
        # random numbers); when the replay runs out nobody does.
        self._arrive(served[~data_ends])
        info = self._step_info(served, users, chosen, out)
        if len(resetting):
            self._reset_envs(resetting)
            reset_info = self._reset_info(resetting)
            for key in ("user_id", "user_index", "t"):
                info[key][resetting] = reset_info[key][resetting]
                info[f"_{key}"][resetting] = True
        self._autoreset = truncated
        return (
            np.take(sim.contexts, self._users, axis=0),
            rewards,
            np.zeros(n, dtype=bool),
            truncated,
            info,
        )

    # ------------------------------------------------------------------ ground truth
    def expected_reward_matrix(self, t: int = 0) -> np.ndarray:
        """As :meth:`envs.RecommenderArmsEnv.expected_reward_matrix`."""
        return self.simulator.expected_reward_matrix(t)

    @property
    def arrival_probabilities(self) -> np.ndarray:
        """Probability that each user is the one arriving, shape ``(n_users,)``."""
        return self.simulator.arrival_probabilities.copy()

    # ------------------------------------------------------------------ internals
    def _check_actions(self, actions: Any) -> np.ndarray:
        array = np.asarray(actions)
        if array.dtype.kind not in "iu":
            raise TypeError(f"actions must be integer arm indices, got dtype {array.dtype}")
        if array.shape != (self.num_envs,):
            raise InvalidActionError(
                f"actions must have shape ({self.num_envs},), got {array.shape}"
            )
        if array.size and (array.min() < 0 or array.max() >= self.simulator.n_arms):
            bad = array[(array < 0) | (array >= self.simulator.n_arms)][0]
            raise InvalidActionError(
                f"actions must be arm indices within [0, {self.simulator.n_arms}) for arms "
                f"{list(self.simulator.arm_names)}, got {bad}"
            )
        return array.astype(np.int64, copy=False)

    def _reset_envs(self, envs: np.ndarray) -> None:
        sim = self.simulator
        shape = (BLOCK_STEPS, 1 + sim.slate_size)
        for i in envs:
            self._block[i] = self._rngs[i].random(shape)  # type: ignore[index]  # set by reset()
        self._row[envs] = 0
        self._t[envs] = 0
        if self._fatigue is not None:
            self._fatigue[envs] = 0.0
        if sim.online_learning:
            if not self._arms:
                self._arms = [[] for _ in range(self.num_envs)]
            for i in envs:
                self._arms[i] = sim.fresh_arms()
        self._arrive(envs)

    def _arrive(self, envs: np.ndarray) -> None:
        if len(envs) == 0:
            return
        # Basic slicing when every sub-environment advances (the common case) is much cheaper
        # than fancy indexing with arange(num_envs).
        index = slice(None) if len(envs) == self.num_envs else envs
        row = self._row[index]
        if (row == BLOCK_STEPS).any():
            exhausted = envs[row == BLOCK_STEPS]
            shape = (BLOCK_STEPS, 1 + self.simulator.slate_size)
            for i in exhausted:
                self._block[i] = self._rngs[i].random(shape)  # type: ignore[index]  # set by reset()
            self._row[exhausted] = 0
            row = self._row[index]
        rows = np.take(
            self._block.reshape(-1, self._block.shape[2]), envs * BLOCK_STEPS + row, axis=0
        )
        self._row[index] += 1
        self._users[index] = self.simulator.draw_users(rows[:, 0], self._t[index])
        self._uniforms[index] = rows[:, 1:]

    def _reset_info(self, envs: np.ndarray) -> dict[str, Any]:
        n = self.num_envs
        mask = np.zeros(n, dtype=bool)
        mask[envs] = True
        return {
            "user_id": self.simulator.user_ids[self._users],
            "_user_id": mask,
            "user_index": self._users.copy(),
            "_user_index": mask.copy(),
            "t": np.zeros(n, dtype=np.int64),
            "_t": mask.copy(),
        }

    def _step_info(
        self, served: np.ndarray, users: np.ndarray, chosen: np.ndarray, out: Any
    ) -> dict[str, Any]:
        sim = self.simulator
        n, k, m = self.num_envs, sim.slate_size, sim.n_arms
        full = len(served) == n
        mask = np.ones(n, dtype=bool) if full else np.zeros(n, dtype=bool)
        mask[served] = True

        def spread(values: np.ndarray, fill: float, shape: tuple = ()) -> np.ndarray:
            if full:
                return values
            array = np.full((n, *shape), fill, dtype=values.dtype)
            array[served] = values
            return array

        expected = spread(out.expected, np.nan, (m,))
        best = spread(out.best, -1)
        regret = spread(
            out.expected[np.arange(len(served)), out.best]
            - out.expected[np.arange(len(served)), chosen],
            np.nan,
        )
        return {
            "user_id": spread(sim.user_ids[users], -1),
            "_user_id": mask,
            "user_index": spread(users, -1),
            "_user_index": mask.copy(),
            "t": spread(self._t[served] - 1, -1),
            "_t": mask.copy(),
            "slate": spread(out.raw_slates, -1, (k,)),
            "_slate": mask.copy(),
            "responses": spread(out.responses, 0, (k,)),
            "_responses": mask.copy(),
            "expected_rewards": expected,
            "_expected_rewards": mask.copy(),
            "best_arm": best,
            "_best_arm": mask.copy(),
            "regret": regret,
            "_regret": mask.copy(),
        }
