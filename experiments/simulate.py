"""``recbandits simulate``: run every policy of a config R times for T steps and report.

Read top to bottom, one experiment is:

1. **Resolve the config**: a concrete seed (recorded in the resolved ``config.toml`` beside
   the results, in the output folder ``runs/<config>-<timestamp>/``).
2. **Probe the environment** once in this process: arm names, context size, and whether
   MovieLens can be had (if not, the synthetic dataset stands in, said in one line).
3. **Plan tasks**: each policy's runs are cut into blocks of ``runs_per_task``. A task advances
   its block of runs together with the batched policy core (``(runs, arms)`` arrays) against the
   native vector environment (one sub-environment per run), so one numpy step moves every run.
4. **Seed per run and per block**: run ``r`` of every policy sees the same users (the
   environment of run ``r`` is seeded from ``(seed, r)``), which makes the paired comparisons of
   the report meaningful; a policy's block of runs draws from one generator seeded from
   ``(seed, policy label, block)``. Blocks are fixed by the config, never by where tasks execute,
   so the local executor, Dask, and any number of workers produce identical numbers.
5. **Execute** the tasks on the chosen executor (joblib processes or Dask) with a tqdm bar;
   Ctrl-C, or a worker or scheduler lost, stops, keeps the finished tasks and reports them.
6. **Aggregate and report**: ``config.toml``, ``steps.csv``, ``summary.csv``, ``runs.csv``,
   ``summary.md`` and the plots, written once the runs are over into a folder beside the
   output folder, then moved onto it together, a previous run's files that this one did not
   write removed: the folder holds the earlier run until this one replaces it whole (a run
   stopped before any run finished, or while its files were written, writes nothing).

The "best arm in hindsight" baseline is not a bandit: for each run it plays the fixed arm whose
total expected reward over that run's users is highest, found by playing every arm on the same
users first.
"""

from __future__ import annotations

import contextlib
import dataclasses
import datetime as _dt
import functools
import inspect
import logging
import re
import zlib
from collections.abc import Callable, Collection
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Protocol

import numpy as np
import numpy.typing as npt
from tqdm import tqdm

from arms.data.files import SYNTHETIC_READS_NO_DATA, reads_no_data, staged_run_folder
from arms.data.movielens import (
    DATASETS,
    MOVIELENS_ALIASES,
    MOVIELENS_NAMES,
    MOVIELENS_VARIANTS,
    SYNTHETIC,
    movielens_variant,
)
from experiments import config as cfg
from experiments import report
from experiments.config import HINDSIGHT_POLICY_ID, ExperimentConfig, PolicyConfig, TomlTable
from experiments.executors import Executor, WorkerLostError, make_executor
from experiments.results import FIGURE_FILES, PolicyRuns, SimulationResults

if TYPE_CHECKING:  # annotations only: gymnasium and the data are imported where they are used
    import gymnasium

    from arms.data.dataset import Dataset
    from bandits.base import BatchedPolicy

    #: Our native vector environments: float observations, int arms, float rewards.
    VectorEnv = gymnasium.vector.VectorEnv[npt.NDArray[np.float64], npt.NDArray[np.int64],
                                           npt.NDArray[np.float64]]

logger = logging.getLogger(__name__)

#: Key of the expected reward of every arm in the environment's ``info`` (shape ``(n, K)``).
EXPECTED_KEY = "expected_rewards"
_ENV_STREAM, _POLICY_STREAM = 0, 1


# ============================================================================ seeding
def _label_key(label: str) -> int:
    # A stable number per policy label (Python's hash() is salted per process).
    return zlib.crc32(label.encode("utf-8"))


def env_seeds(seed: int, runs: range) -> list[int]:
    """Environment seed of each run: shared by every policy, so run ``r`` sees the same users."""
    return [
        int(np.random.SeedSequence([seed, _ENV_STREAM, r]).generate_state(1, np.uint32)[0])
        for r in runs
    ]


def policy_generator(seed: int, label: str, runs: range) -> np.random.Generator:
    """The generator of the policy labelled ``label`` for one block of runs.

    One generator per block, shared by its runs: the batched policies draw for every run in one
    call (a generator per run costs a Python call per run per step, about ten times slower). The
    blocks are fixed by ``runs_per_task`` in the config, never by the executor or the number of
    workers, so those never change a number.
    """
    return np.random.default_rng([seed, _POLICY_STREAM, _label_key(label), runs.start, runs.stop])


# ============================================================================ environment
@dataclass(frozen=True)
class EnvInfo:
    """What the simulation needs to know about an environment before running it."""

    arm_names: list[str]
    n_features: int
    params: TomlTable
    notes: tuple[str, ...] = ()
    action_dependent: bool = False


#: ``dataset`` values a config may give (a Dataset object cannot be written in TOML): the
#: MovieLens releases (``"movielens"`` is 100K) and the synthetic generator.
_MOVIELENS_NAME = re.compile(r"movielens", re.IGNORECASE)
_MOVIELENS_TEXT = re.compile(r"MovieLens(?: 100K)?", re.IGNORECASE)


def dataset_name(params: TomlTable) -> str | None:
    """The ``DATASETS`` entry that env ``params`` name, or None where they name none.

    ``dataset`` may be a name or a table whose ``name`` is one (see :func:`env_kwargs`).
    """
    dataset = params.get("dataset")
    if isinstance(dataset, dict):
        dataset = dataset.get("name")
    return dataset if isinstance(dataset, str) else None


def label_dataset(config: ExperimentConfig) -> ExperimentConfig:
    """``config`` named after the dataset it runs on: the one place that decides the label.

    The run's name (its folder ``runs/<name>-<timestamp>/`` and every plot title) and its
    description (the head of ``summary.md``) are written for MovieLens 100K in the shipped
    configs. When the environment runs on the synthetic dataset instead (the fallback of
    :func:`probe_env`, or a config asking for it), "movielens" in the name and "MovieLens
    (100K)" in the description become "synthetic"; on another MovieLens release they become its
    name (``ml-1m``) and title (``MovieLens 1M``). A name or description that then still does
    not say so gets it added. Any other config is returned unchanged.
    """
    name = dataset_name(config.env.params)
    if name == SYNTHETIC:
        label, title, sentence = "synthetic", "synthetic", "On the synthetic dataset."
    elif name in MOVIELENS_NAMES and movielens_variant(name).name != "ml-100k":
        label, title = movielens_variant(name).name, movielens_variant(name).title
        sentence = f"On {title}."
    else:
        return config
    run_name = _MOVIELENS_NAME.sub(label, config.name)
    if label not in run_name.lower():
        run_name = f"{run_name}-{label}"
    description = _MOVIELENS_TEXT.sub(title, config.description or "")
    if title.lower() not in description.lower():
        description = f"{sentence} {description}".strip()
    return dataclasses.replace(config, name=run_name, description=description)


@functools.lru_cache(maxsize=4)
def _synthetic(options: tuple[tuple[str, object], ...]) -> Dataset:
    # Cached so every environment of this process shares one Dataset object, which the envs'
    # own cache keys on (a new object would refit the arms).
    from arms.data import make_synthetic

    return make_synthetic(**dict(options))  # type: ignore[arg-type]  # make_synthetic checks them


def env_kwargs(params: TomlTable, horizon: int) -> TomlTable:
    """Keyword arguments of ``gymnasium.make_vec`` for config ``params``.

    ``dataset = "synthetic"`` (or a table ``{name = "synthetic", n_ratings = ..., ...}`` of
    :func:`arms.data.make_synthetic` arguments) becomes a seeded synthetic dataset;
    ``"movielens"`` or no ``dataset`` means MovieLens 100K, and ``"ml-1m"``, ``"ml-10m"``,
    ``"ml-20m"``, ``"ml-25m"``, ``"ml-32m"`` (or ``"ml-100k"``) name a release the environment
    loads itself (from its ``data_dir``, ``RECBANDITS_DATA`` or the cache). Episodes last the
    whole horizon.

    Raises
    ------
    ConfigError
        An unknown dataset name, or a ``data_dir`` beside the synthetic dataset (which reads
        none: :func:`arms.data.files.reads_no_data`).
    """
    kwargs = dict(params)
    dataset = kwargs.pop("dataset", None)
    options: TomlTable = {}
    if isinstance(dataset, dict):
        options = {k: v for k, v in dataset.items() if k != "name"}
        dataset = dataset.get("name")
    if dataset == SYNTHETIC:
        if kwargs.get("data_dir") is not None:  # the env ignored it (found by a README check)
            raise cfg.ConfigError(f"--data: {SYNTHETIC_READS_NO_DATA}")
        kwargs["dataset"] = _synthetic(tuple(sorted(options.items())))
    elif dataset in MOVIELENS_VARIANTS or dataset in MOVIELENS_ALIASES:
        # The alias is the release it names: "movielens" passed on as no dataset, which a
        # MovieLens environment reads as 100K but FixedCTR as none to fit its arms on, so
        # `--dataset movielens` ran other arms than `--dataset ml-100k` (found by attack).
        kwargs["dataset"] = MOVIELENS_ALIASES.get(dataset, dataset)
    elif dataset is not None:
        raise cfg.ConfigError(
            f"[env.params] dataset must be one of {', '.join(DATASETS)}, got {dataset!r}"
        )
    # One step of slack: a run must never be truncated (and auto-reset) inside the horizon.
    kwargs["max_episode_steps"] = horizon + 1
    return kwargs


def make_vector_env(env_id: str, params: TomlTable, n: int,
                    horizon: int) -> VectorEnv:
    """A fresh native vector environment of ``env_id`` with ``n`` sub-environments.

    Building a MovieLens environment fits the arms (seconds); :mod:`envs` caches the fitted
    simulator per process, so only the first environment of a worker pays for it and the others
    are cheap views on it. Each task still gets its own environment object, so no episode state
    can leak from one task into the next.
    """
    import gymnasium

    import envs  # noqa: F401  (registers the ids)

    return gymnasium.make_vec(env_id, num_envs=n, vectorization_mode="vector_entry_point",
                              **env_kwargs(params, horizon))


def probe_env(config: ExperimentConfig) -> EnvInfo:
    """Arm names and context size of the config's environment, with the data fallback applied.

    Where the environment needs MovieLens and it cannot be had, the synthetic dataset is used
    instead and a one-line note says so; not when ``[env.params] data_dir`` (``simulate
    --data``) or ``RECBANDITS_DATA`` names a folder: its DataFolderError is raised, naming it.
    """
    import gymnasium

    from arms.errors import DataFileError, DataFolderError, DataUnavailableError

    params = dict(config.env.params)
    notes: list[str] = []
    try:
        try:
            env = make_vector_env(config.env.id, params, 1, config.horizon)
        except DataUnavailableError as exc:
            if isinstance(exc, DataFolderError):  # a folder named (--data, RECBANDITS_DATA)
                raise
            wanted = movielens_variant(dataset_name(params) or "movielens")
            params["dataset"] = SYNTHETIC
            logger.info("MovieLens unavailable: %s", exc)
            notes.append(f"{wanted.title} not available; running on the synthetic dataset "
                         f"instead (--data or RECBANDITS_DATA: a folder holding "
                         f"{wanted.folders[0]}/ to use it)")
            env = make_vector_env(config.env.id, params, 1, config.horizon)
    except (cfg.ConfigError, DataFileError):
        raise
    except (TypeError, ValueError) as exc:
        # The environment's own check of its parameters (a click rate outside [0, 1], an
        # unknown arm: ValueError) and a key it does not take (a typo: the factory's TypeError
        # for the keyword): one line naming the table, not a traceback from a worker (found by
        # attack: every bad value printed one, three stacked with several workers). A value
        # of the wrong type is a TypeError of the parameter checks ("reward must be a string,
        # one of ...", "slate_size must be an integer ..."; found by review: a traceback).
        # Any other TypeError is a bug and keeps its traceback; -v shows this one's cause.
        if isinstance(exc, TypeError) and not any(
                marker in str(exc) for marker in ("keyword argument", " must be ")):
            raise
        if "keyword argument 'data_dir'" in str(exc):  # simulate --data (attack: Python's text)
            raise cfg.ConfigError("--data: " + reads_no_data(
                config.env.id, "its [env.params] take no data_dir")) from exc
        raise cfg.ConfigError(f"[env.params] of {config.env.id}: {exc}") from exc
    if not isinstance(env.single_action_space, gymnasium.spaces.Discrete):
        raise cfg.ConfigError(
            f"[env] id {config.env.id} takes {env.single_action_space} actions (an arm for each "
            "slate position); simulate runs environments whose action is one arm")
    unwrapped = getattr(env, "unwrapped", env)
    arm_names = [str(a) for a in unwrapped.arm_names]  # type: ignore[union-attr]  # envs' vector envs name their arms
    n_features = int(np.prod(env.single_observation_space.shape))  # type: ignore[arg-type]  # a Box: shaped
    return EnvInfo(arm_names=arm_names, n_features=n_features, params=params, notes=tuple(notes),
                   action_dependent=_action_dependent(env))


# ============================================================================ policies
def build_policy(spec: PolicyConfig, arm_names: list[str], n_features: int) -> BatchedPolicy:
    """The bandit policy of ``spec`` over ``arm_names``.

    Raises
    ------
    TypeError, ValueError
        From the policy's own validation of ``spec.params`` (re-raised naming the policy).
    """
    policy_cls = cfg.BANDIT_POLICIES[spec.id]
    params = dict(spec.params)
    accepted = inspect.signature(policy_cls.__init__).parameters
    if "n_features" in accepted and "n_features" not in params:
        params["n_features"] = n_features
    try:
        policy_cls.check_param_names(params)
        return policy_cls(list(arm_names), **params)
    except (TypeError, ValueError) as exc:
        raise type(exc)(f"policy {spec.label!r} ({spec.id}): {exc}") from exc


class _Driver(Protocol):
    """What :func:`simulate_task` steps: every run's arm from the observations, then learning."""

    def select(self, obs: npt.NDArray[np.float64]) -> npt.NDArray[np.int64]:
        """The arm of every run, shape ``(n,)``, for the observations ``obs`` ``(n, d)``."""

    def update(self, arms: npt.NDArray[np.int64], rewards: npt.NDArray[np.float64],
               obs: npt.NDArray[np.float64]) -> None:
        """Learn from the runs' ``rewards`` ``(n,)`` for ``arms`` pulled at ``obs``."""


class _BanditDriver:
    """Runs of a bandits policy advanced together through its batched core."""

    def __init__(self, policy: BatchedPolicy, rng: np.random.Generator, n_runs: int) -> None:
        self.policy = policy
        self.rng = rng
        self.state = policy.init_batch(n_runs)
        self.contextual = bool(getattr(policy, "contextual", False))

    def select(self, obs: npt.NDArray[np.float64]) -> npt.NDArray[np.int64]:
        contexts = obs if self.contextual else None
        return self.policy.select_batch(self.state, self.rng, contexts)

    def update(self, arms: npt.NDArray[np.int64], rewards: npt.NDArray[np.float64],
               obs: npt.NDArray[np.float64]) -> None:
        contexts = obs if self.contextual else None
        # The environment produced these; re-validating them every step buys nothing.
        self.policy.update_batch(self.state, arms, rewards, contexts, validate=False)


class _FixedArmDriver:
    """Each run pulls one given arm (the best arm in hindsight)."""

    def __init__(self, arms: npt.NDArray[np.int64]) -> None:
        self.arms = np.asarray(arms, dtype=np.int64)

    def select(self, obs: npt.NDArray[np.float64]) -> npt.NDArray[np.int64]:
        return self.arms

    def update(self, arms: npt.NDArray[np.int64], rewards: npt.NDArray[np.float64],
               obs: npt.NDArray[np.float64]) -> None:
        pass


# ============================================================================ one task
@dataclass(frozen=True)
class Task:
    """A block of runs of one policy: everything a worker needs, small and picklable."""

    config: ExperimentConfig
    env_params: TomlTable
    policy_index: int
    run_start: int
    run_stop: int
    arm_names: tuple[str, ...]
    n_features: int

    @property
    def policy(self) -> PolicyConfig:
        """The task's policy, ``config.policies[policy_index]``."""
        return self.config.policies[self.policy_index]

    @property
    def runs(self) -> range:
        """The task's run indices, ``range(run_start, run_stop)``."""
        return range(self.run_start, self.run_stop)


def record_steps(horizon: int, every: int) -> npt.NDArray[np.int64]:
    """1-based steps recorded in ``steps.csv``: every ``every`` steps, and always the last."""
    steps = np.arange(every, horizon + 1, every, dtype=np.int64)
    if steps.size == 0 or steps[-1] != horizon:
        steps = np.append(steps, horizon)
    return steps


def checkpoint_steps(config: ExperimentConfig) -> npt.NDArray[np.int64]:
    """Steps at which posteriors are kept: the config's, else four log-spaced ones."""
    if config.checkpoints:
        return np.unique(np.asarray(config.checkpoints, dtype=np.int64))
    T = config.horizon
    candidates = [10, 100, T // 10, T]
    return np.unique(np.clip(np.asarray(candidates, dtype=np.int64), 1, T))


def _action_dependent(env: object) -> bool:
    """Whether what a user expects from an arm can depend on earlier actions (boredom, drift
    with fatigue, arms learning online); unknown environments are assumed to be.
    """
    simulator = getattr(env, "simulator", None)
    if simulator is None:
        return True
    return bool(getattr(simulator.user_model, "dynamic", True) or simulator.online_learning)


def _hindsight_arms(task: Task) -> npt.NDArray[np.int64]:
    """For each run, the fixed arm with the highest total expected reward over its users.

    The users a run sees never depend on the actions. Where their expectations do not either,
    one pass playing any arm reads every arm's expected reward; otherwise (boredom, online
    learning) each arm is played throughout the run in its own pass. Shape ``(n,)``.
    """
    n, K, T = len(task.runs), len(task.arm_names), task.config.horizon
    seeds = env_seeds(task.config.seed, task.runs)  # type: ignore[arg-type]  # resolve_seed set it before any task
    env = make_vector_env(task.config.env.id, task.env_params, n, T)
    totals = np.zeros((n, K))
    if not _action_dependent(env):
        env.reset(seed=seeds)  # type: ignore[arg-type]  # a native vector env takes a seed per run
        actions = np.zeros(n, dtype=np.int64)
        for _ in range(T):
            totals += env.step(actions)[4][EXPECTED_KEY]
        return totals.argmax(axis=1)
    rows = np.arange(n)
    for k in range(K):
        if k:
            env = make_vector_env(task.config.env.id, task.env_params, n, T)
        env.reset(seed=seeds)  # type: ignore[arg-type]  # a native vector env takes a seed per run
        actions = np.full(n, k, dtype=np.int64)
        for _ in range(T):
            totals[:, k] += env.step(actions)[4][EXPECTED_KEY][rows, k]
    return totals.argmax(axis=1)


def simulate_task(task: Task) -> PolicyRuns:
    """Advance one block of runs of one policy for the whole horizon.

    This is the whole simulation loop: select an arm for every run at once, let the vector
    environment serve every run's user, score the choice against the expected reward of every
    arm, and let the policy learn.
    """
    config, spec = task.config, task.policy
    n, K, T = len(task.runs), len(task.arm_names), config.horizon
    if spec.id == HINDSIGHT_POLICY_ID:
        driver: _Driver = _FixedArmDriver(_hindsight_arms(task))
    else:
        policy = build_policy(spec, list(task.arm_names), task.n_features)
        driver = _BanditDriver(policy, policy_generator(config.seed, spec.label, task.runs), n)  # type: ignore[arg-type]  # resolve_seed set it before any task

    rec_steps = record_steps(T, config.record_every)
    chk_steps = checkpoint_steps(config)
    cum_reward = np.zeros((n, rec_steps.size))
    cum_oracle_regret = np.zeros((n, rec_steps.size))
    cum_chosen = np.zeros((n, rec_steps.size))  # expected reward of the chosen arms
    cum_arms = np.zeros((n, rec_steps.size, K))  # expected reward of every arm
    chk_pulls = np.zeros((n, chk_steps.size, K), dtype=np.int64)
    chk_clicks = np.zeros((n, chk_steps.size, K))
    arm_counts = np.zeros((T, K), dtype=np.int64)
    pulls = np.zeros((n, K), dtype=np.int64)
    clicks = np.zeros((n, K))
    expected_sum = np.zeros((n, K))
    expected_min = np.full(K, np.inf)
    expected_max = np.full(K, -np.inf)
    oracle_arm_pulls = np.zeros(n, dtype=np.int64)
    reward_total = np.zeros(n)
    chosen_total = np.zeros(n)
    oracle_total = np.zeros(n)
    binary = True
    rows = np.arange(n)
    is_record = np.zeros(T + 1, dtype=bool)
    is_record[rec_steps] = True
    is_checkpoint = np.zeros(T + 1, dtype=bool)
    is_checkpoint[chk_steps] = True
    rec_i = chk_i = 0

    env = make_vector_env(config.env.id, task.env_params, n, T)
    obs, _ = env.reset(seed=env_seeds(config.seed, task.runs))  # type: ignore[arg-type]  # a seed per run; resolve_seed set config.seed
    for t in range(1, T + 1):
        actions = driver.select(obs)
        next_obs, rewards, _, _, info = env.step(actions)
        expected = info[EXPECTED_KEY]  # (n, K): exact regret needs every arm's expectation
        if not np.isfinite(expected).all():  # e.g. a sub-environment reset inside the horizon
            raise RuntimeError(f"{config.env.id} gave non-finite expected rewards at step {t}")
        chosen = expected[rows, actions]
        best = expected.max(axis=1)
        driver.update(actions, rewards, obs)
        obs = next_obs

        reward_total += rewards
        chosen_total += chosen
        oracle_total += best
        oracle_arm_pulls += chosen >= best
        pulls[rows, actions] += 1  # one entry per run: no repeated index, so += is exact
        clicks[rows, actions] += rewards
        arm_counts[t - 1] = np.bincount(actions, minlength=K)
        expected_sum += expected
        np.minimum(expected_min, expected.min(axis=0), out=expected_min)
        np.maximum(expected_max, expected.max(axis=0), out=expected_max)
        if binary and not np.all((rewards == 0) | (rewards == 1)):
            binary = False
        if is_record[t]:
            cum_reward[:, rec_i] = reward_total
            cum_chosen[:, rec_i] = chosen_total
            cum_oracle_regret[:, rec_i] = oracle_total - chosen_total
            cum_arms[:, rec_i] = expected_sum
            rec_i += 1
        if is_checkpoint[t]:
            chk_pulls[:, chk_i] = pulls
            chk_clicks[:, chk_i] = clicks
            chk_i += 1

    # Regret against the best fixed arm needs that arm, known only once the run is over.
    best_arms = expected_sum.argmax(axis=1)
    return PolicyRuns(
        label=spec.label, policy_id=spec.id, horizon=T,
        run_ids=np.arange(task.run_start, task.run_stop, dtype=np.int64),
        record_steps=rec_steps, cum_reward=cum_reward,
        cum_regret=cum_arms[rows, :, best_arms] - cum_chosen,
        cum_oracle_regret=cum_oracle_regret, best_arms=best_arms,
        best_arm_pulls=pulls[rows, best_arms], oracle_arm_pulls=oracle_arm_pulls,
        arm_counts=arm_counts, pulls=pulls, clicks=clicks,
        expected_sum=expected_sum, expected_min=expected_min, expected_max=expected_max,
        checkpoint_steps=chk_steps, checkpoint_pulls=chk_pulls, checkpoint_clicks=chk_clicks,
        binary=binary,
    )  # fmt: skip


def plan_tasks(config: ExperimentConfig, env: EnvInfo) -> list[Task]:
    """Blocks of ``runs_per_task`` runs per policy, in config then run order."""
    tasks = []
    for p in range(len(config.policies)):
        for start in range(0, config.runs, config.runs_per_task):
            stop = min(start + config.runs_per_task, config.runs)
            tasks.append(Task(config, env.params, p, start, stop, tuple(env.arm_names),
                              env.n_features))
    return tasks


def _empty_runs(config: ExperimentConfig, spec: PolicyConfig, n_arms: int) -> PolicyRuns:
    chk = checkpoint_steps(config)
    return PolicyRuns(
        label=spec.label, policy_id=spec.id, horizon=config.horizon,
        run_ids=np.zeros(0, dtype=np.int64),
        record_steps=record_steps(config.horizon, config.record_every),
        cum_reward=np.zeros((0, 0)), cum_regret=np.zeros((0, 0)),
        cum_oracle_regret=np.zeros((0, 0)), best_arms=np.zeros(0, dtype=np.int64),
        best_arm_pulls=np.zeros(0, dtype=np.int64), oracle_arm_pulls=np.zeros(0, dtype=np.int64),
        arm_counts=np.zeros((config.horizon, n_arms), dtype=np.int64),
        pulls=np.zeros((0, n_arms), dtype=np.int64), clicks=np.zeros((0, n_arms)),
        expected_sum=np.zeros((0, n_arms)), expected_min=np.full(n_arms, np.inf),
        expected_max=np.full(n_arms, -np.inf), checkpoint_steps=chk,
        checkpoint_pulls=np.zeros((0, chk.size, n_arms), dtype=np.int64),
        checkpoint_clicks=np.zeros((0, chk.size, n_arms)),
    )  # fmt: skip


def _leading(tasks: list[Task], done: Collection[int]) -> list[int]:
    """The finished tasks an interrupted run reports: each policy's leading finished blocks,
    so run ``r`` of every policy is still the same users (a block finished after a missing
    one is left out).
    """
    kept, stopped = [], set()
    for i, task in enumerate(tasks):
        if task.policy_index in stopped:
            continue
        if i in done:
            kept.append(i)
        else:
            stopped.add(task.policy_index)
    return kept


def interrupted_note(tasks: list[Task], done: Collection[int], why: str = "interrupted") -> str:
    """What an interrupted run reports, as it reports it (:func:`_leading`): "reporting the
    2 of 12 tasks that finished" while the summary held one left the other unsaid (found by
    attack). ``why`` heads it: "interrupted by Ctrl-C", "a local worker process was lost
    (...)".
    """
    kept = len(_leading(tasks, done))
    left_out = len(done) - kept
    return (f"{why}: reporting {kept} of the {len(tasks)} tasks"
            + ("" if not left_out else
               f" ({left_out} more finished after an unfinished block of their policy, left "
               "out so that run r of every policy is the same users)"))


def _aggregate(config: ExperimentConfig, tasks: list[Task], done: dict[int, PolicyRuns],
               n_arms: int) -> list[PolicyRuns]:
    """Each policy's finished blocks joined in run order (:func:`_leading`)."""
    kept = _leading(tasks, done)
    out = []
    for p, spec in enumerate(config.policies):
        parts = [done[i] for i in kept if tasks[i].policy_index == p]
        out.append(PolicyRuns.concatenate(parts) if parts else _empty_runs(config, spec, n_arms))
    return out


# ============================================================================ the experiment
def default_out_dir(config: ExperimentConfig, root: Path | str = "runs") -> Path:
    """``runs/<config>-<timestamp>/`` (made unique with a suffix if it exists)."""
    stamp = _dt.datetime.now().strftime("%Y%m%d-%H%M%S")
    base = Path(root) / f"{config.name}-{stamp}"
    out, i = base, 1
    while out.exists():
        i += 1
        out = base.with_name(f"{base.name}-{i}")
    return out


def _settle_config(config: ExperimentConfig, env: EnvInfo,
                   on_note: Callable[[str], None] | None) -> ExperimentConfig:
    """``config`` as the probed ``env`` settled it, its policies checked before any task runs.

    ``env``'s notes go to ``on_note`` (else the log's warnings), once; its parameters (the data
    fallback applied) replace the config's, and the dataset's name labels the run.

    Raises
    ------
    ConfigError
        For a policy parameter that its class refuses.
    """
    for note in env.notes:  # said once: to the caller if it listens, else to the log
        (on_note or logger.warning)(note)
    if env.params != config.env.params:
        config = dataclasses.replace(
            config, env=dataclasses.replace(config.env, params=env.params)
        )
    config = label_dataset(config)  # before the folder, titles and summary use the name
    for spec in config.policies:  # bad policy parameters fail now, not in a worker
        if spec.id != HINDSIGHT_POLICY_ID:
            try:
                policy = build_policy(spec, env.arm_names, env.n_features)
            except (TypeError, ValueError) as exc:
                raise cfg.ConfigError(str(exc)) from exc
            try:  # a task's block of runs too: runs_per_task one-run states
                policy.check_state_size(min(config.runs_per_task, config.runs))
            except ValueError as exc:
                raise cfg.ConfigError(f"policy {spec.label!r} ({spec.id}): {exc}") from exc
    return config


#: What an interrupted run's note says stopped it on Ctrl-C (:func:`interrupted_note`).
CTRL_C = "interrupted by Ctrl-C"

#: Every file a run may write into its folder: a previous run's that this run did not write
#: are removed once it has written its own (:func:`_write_run`).
RUN_FILES = ("config.toml", *report.REPORT_FILES, *FIGURE_FILES)


def _write_run(results: SimulationResults, out: Path, created: str, plots: bool) -> None:
    """Write ``results`` into the folder ``out`` (made if missing): ``config.toml`` (the
    config with the start time ``created`` and the notes), the reports and, with ``plots``,
    the figures, all into a folder beside ``out`` first, then moved onto ``out`` together and
    the :data:`RUN_FILES` of an earlier run that this one did not write removed
    (:func:`arms.data.files.staged_run_folder`): ``out`` holds the earlier run or this one,
    never a mix (found by review: a Ctrl-C during the plots left the new tables beside the
    earlier run's figures; before that, found by attack, the earlier run was deleted first).
    """
    from experiments import plots as figures  # matplotlib: never imported by the workers

    with staged_run_folder(out, RUN_FILES) as staging:
        files = {"config.toml": cfg.dump(results.config, staging / "config.toml",
                                         created=created, notes=results.notes or None)}
        files.update(report.write_reports(results, staging))
        if plots:
            files.update(figures.write_plots(results, staging))
    results.out_dir = out
    results.files = {name: out / name for name in files}


def run(
    config: ExperimentConfig | str | Path,
    *,
    out_dir: Path | str | None = None,
    write: bool = True,
    progress: bool = True,
    plots: bool = True,
    on_note: Callable[[str], None] | None = None,
    executor: Executor | None = None,
) -> SimulationResults:
    """Run an experiment and write its reports.

    Parameters
    ----------
    config : ExperimentConfig, or a path / shipped config name
    out_dir : path, optional
        Output folder; default ``runs/<config>-<timestamp>/``.
    write : bool, default True
        Write ``config.toml``, the CSV and Markdown reports and the plots.
    progress : bool, default True
        Show a tqdm bar (runs finished out of policies x runs).
    plots : bool, default True
        Also write the PNG figures (with ``write``).
    on_note : callable, optional
        Receives one-line notes (e.g. the synthetic-data fallback) as they happen; they are
        also logged and kept in ``results.notes``.
    executor : Executor, optional
        An open executor to run on (left open), instead of the one the config names; lets
        several experiments share one Dask cluster or pool of processes.

    Returns
    -------
    SimulationResults
        With ``interrupted=True`` when Ctrl-C or a lost worker or scheduler stopped it (the
        finished runs are kept and reported, ``stop_note`` says why; nothing is written when
        none had finished).

    Raises
    ------
    KeyboardInterrupt, WorkerLostError
        When it was stopped before any task was planned (nothing ran).

    ConfigError
        An invalid config or an invalid policy parameter.
    """
    # 1. the config, with a concrete seed (written to config.toml before any task runs)
    if not isinstance(config, ExperimentConfig):
        config = cfg.load(config)
    config = cfg.resolve_seed(cfg.validate(config))

    tasks: list[Task] = []
    done: dict[int, PolicyRuns] = {}
    stop_reason = stop_note = None
    created = _dt.datetime.now().isoformat(timespec="seconds")
    bar = tqdm(total=len(config.policies) * config.runs, unit="run", disable=not progress,
               desc=config.name, dynamic_ncols=True)
    try:
        own = executor is None
        if executor is None:
            try:
                executor = make_executor(config.executor, workers=config.workers,
                                         scheduler=config.scheduler)
            except ConnectionError as exc:  # it names the scheduler (once: found by attack)
                raise cfg.ConfigError(str(exc)) from None
            except (ValueError, OSError) as exc:  # a scheduler that is no address, or is gone
                raise cfg.ConfigError(f"scheduler {config.scheduler!r}: {exc}") from None
        with executor if own else contextlib.nullcontext(executor):
            # 2. the environment, probed on a worker: building it fits the arms there, once
            #    per process, where the tasks will need them (the data fallback applies there).
            env = executor.call(probe_env, config)
            config = _settle_config(config, env, on_note)

            # 3-5. tasks, executed where the config says, finished ones kept on Ctrl-C and
            #      when a worker or the scheduler is lost (one path: what is kept is the same)
            tasks = plan_tasks(config, env)
            logger.info("running %d tasks on %s", len(tasks), executor.describe())
            for index, result in executor.imap_unordered(simulate_task, tasks):
                done[index] = result
                bar.update(result.n_runs)
                bar.set_postfix_str(result.label, refresh=False)
    except (KeyboardInterrupt, WorkerLostError) as exc:
        if not tasks:
            raise  # nothing ran yet: nothing to report
        stop_reason = CTRL_C if isinstance(exc, KeyboardInterrupt) else str(exc)
        stop_note = interrupted_note(tasks, done, stop_reason)
        logger.info(stop_note)  # said by the caller (the CLI's one line, summary.md)
    finally:
        bar.close()

    # 6. aggregate and report
    results = SimulationResults(
        config=config,
        arm_names=list(env.arm_names),
        policies=_aggregate(config, tasks, done, len(env.arm_names)),
        notes=list(env.notes),
        action_dependent=env.action_dependent,
        interrupted=stop_note is not None,
        stop_reason=stop_reason, stop_note=stop_note,
    )
    results.steps = report.steps_frame(results)
    results.summary = report.summary_frame(results)
    if write and any(p.n_runs for p in results.policies):  # empty tables replace nothing
        _write_run(results, Path(out_dir) if out_dir is not None else default_out_dir(config),
                   created, plots)
    return results
