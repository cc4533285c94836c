"""Experiment configuration: TOML files read with :mod:`tomllib` into validated dataclasses.

A config names one environment, the policies to compare on it and how long and how often to run
them. Every file in ``experiments/configs/`` has this shape::

    name = "fixed_ctr"                  # used in the output folder name
    description = "..."                 # optional, one line
    horizon = 5000                      # steps (users) per run
    runs = 200                          # independent runs per policy
    seed = 2024                         # optional; drawn from the OS and recorded when absent

    [env]
    id = "recbandits/FixedCTR-v0"       # a registered Gymnasium id
    [env.params]                        # keyword arguments of gymnasium.make
    click_rates = [0.10, 0.15, 0.12]

    [[policies]]
    id = "ThompsonSampling"             # a bandits class name or an experiment baseline
    label = "Thompson Sampling"         # optional, defaults to the id
    [policies.params]                   # keyword arguments of the policy
    prior_alpha = 1.0

Optional top-level keys: ``runs_per_task`` (runs simulated together in one batched task; the
split of the work, and so the results, never depends on the number of workers),
``record_every`` (the step grid of ``steps.csv``), ``checkpoints`` (steps at which posteriors are
plotted), ``executor`` (``"local"`` or ``"dask"``), ``scheduler`` (a Dask address) and
``workers``.

Command-line options override the file through :func:`override`; :func:`validate` runs on every
config built here, so an invalid value never reaches a simulation.
"""

from __future__ import annotations

import dataclasses
import importlib.metadata
import stat
import tomllib
from collections.abc import Mapping
from dataclasses import dataclass, field
from importlib import resources
from pathlib import Path
from types import MappingProxyType
from typing import Any, TypeAlias

import bandits
from arms._validation import MAX_SEED, check_int, check_seed
from arms.data.files import write_whole
from arms.errors import unknown_id_message
from arms.registry import refuse_repeats
from bandits.errors import check_port

#: A TOML table as :mod:`tomllib` reads it (``[env.params]``, a policy's ``params``): its values
#: are whatever TOML holds, checked by the code that takes them (the experiment runner's seam
#: names this alias rather than spelling ``Any``).
TomlTable: TypeAlias = dict[str, Any]


def _package_policies() -> dict[str, type[bandits.BatchedPolicy]]:
    # The bandits registry holds every concrete policy class by class name; a subclass defined
    # in a test or a notebook registers itself too, but only the package's own are config ids.
    registered = bandits.registered_policies()
    return {name: registered[name] for name in sorted(registered)
            if registered[name].__module__.startswith("bandits.")}


#: Policy classes a config may name, by id (their class name): :func:`bandits.registered_policies`.
BANDIT_POLICIES: Mapping[str, type[bandits.BatchedPolicy]] = MappingProxyType(_package_policies())
BANDIT_POLICY_IDS = tuple(BANDIT_POLICIES)
#: The experiment's own oracle baseline: the arm with the highest total expected reward over the
#: run's users, known only in hindsight (see :mod:`experiments.simulate`).
HINDSIGHT_POLICY_ID = "BestArmInHindsight"
#: Every policy id a config may name.
POLICY_IDS = (*BANDIT_POLICY_IDS, HINDSIGHT_POLICY_ID)
#: Policies that read the user context observation (``contextual`` in their class).
CONTEXTUAL_POLICY_IDS = tuple(name for name, cls in BANDIT_POLICIES.items() if cls.contextual)
#: Policies whose model is a Beta posterior per arm (``beta_posterior`` in their class).
BETA_POLICY_IDS = tuple(name for name, cls in BANDIT_POLICIES.items() if cls.beta_posterior)
EXECUTORS = ("local", "dask")
ENV_NAMESPACE = "recbandits"

_TOP_KEYS = (
    "name", "description", "horizon", "runs", "seed", "runs_per_task", "record_every",
    "checkpoints", "executor", "scheduler", "workers", "env", "policies", "meta",
)  # fmt: skip
_ENV_KEYS = ("id", "params")
_POLICY_KEYS = ("id", "label", "params")


class ConfigError(ValueError):
    """A configuration file or option is invalid; the message names the key and what is allowed."""


@dataclass(frozen=True)
class EnvConfig:
    """The environment: a registered Gymnasium ``id`` and the keyword ``params`` of ``make``."""

    id: str
    params: TomlTable = field(default_factory=dict)


@dataclass(frozen=True)
class PolicyConfig:
    """One policy to run: its ``id``, a display ``label`` (unique) and constructor ``params``."""

    id: str
    label: str
    params: TomlTable = field(default_factory=dict)

    @property
    def contextual(self) -> bool:
        """Whether the policy reads the user context."""
        return self.id in CONTEXTUAL_POLICY_IDS


@dataclass(frozen=True)
class ExperimentConfig:
    """A validated experiment.

    Attributes
    ----------
    name : str
        Short name, used in the output folder ``runs/<name>-<timestamp>/``.
    env : EnvConfig
        The environment.
    policies : tuple of PolicyConfig
        Policies in report order (at least one; labels unique).
    horizon : int, default 1000
        Steps (arriving users) per run, ``>= 1``.
    runs : int, default 100
        Independent runs per policy, ``>= 1``.
    seed : int or None, default None
        Root seed; ``None`` is resolved to fresh OS entropy by :func:`resolve_seed` and recorded.
    runs_per_task : int, default 50
        Runs advanced together in one batched task. Fixed by the config, never by the number of
        workers, so every executor computes the same numbers.
    record_every : int, default 1
        Step grid of ``steps.csv`` (the last step is always recorded).
    checkpoints : tuple of int, default ()
        Steps at which posterior densities are plotted; empty picks four log-spaced steps.
    executor : {"local", "dask"}, default "local"
    scheduler : str or None, default None
        Address of a Dask scheduler (``tcp://host:8786``); ``None`` starts a ``LocalCluster``.
    workers : int or None, default None
        Worker processes (local executor and ``LocalCluster``); ``None`` uses every core.
    description : str, default ""
    """

    name: str
    env: EnvConfig
    policies: tuple[PolicyConfig, ...]
    horizon: int = 1000
    runs: int = 100
    seed: int | None = None
    runs_per_task: int = 50
    record_every: int = 1
    checkpoints: tuple[int, ...] = ()
    executor: str = "local"
    scheduler: str | None = None
    workers: int | None = None
    description: str = ""

    @property
    def policy_labels(self) -> list[str]:
        """Label of each policy, in the config's order."""
        return [p.label for p in self.policies]

    def to_dict(self) -> dict[str, Any]:
        """Plain data in the TOML layout (``None`` values left out, as TOML has no null)."""
        data: dict[str, Any] = {
            "name": self.name,
            "description": self.description,
            "horizon": self.horizon,
            "runs": self.runs,
            "seed": self.seed,
            "runs_per_task": self.runs_per_task,
            "record_every": self.record_every,
            "checkpoints": list(self.checkpoints),
            "executor": self.executor,
            "scheduler": self.scheduler,
            "workers": self.workers,
            "env": {"id": self.env.id, "params": dict(self.env.params)},
            "policies": [
                {"id": p.id, "label": p.label, "params": dict(p.params)} for p in self.policies
            ],
        }
        return {k: v for k, v in data.items() if v is not None}


# ---------------------------------------------------------------------- ids and labels
def default_label(policy_id: str) -> str:
    """The label of a policy given without one: its id.

    The one place that derives a label. Labels name a policy in every table and figure and seed
    its random stream (:func:`experiments.simulate.policy_generator`), so changing this rule
    would change the numbers of every configured policy that has no ``label``.
    """
    return policy_id


def env_ids() -> list[str]:
    """Registered ``recbandits/...`` Gymnasium ids (importing :mod:`envs` registers them)."""
    import gymnasium

    import envs  # noqa: F401  (registers the ids)

    return sorted(
        env_id for env_id in gymnasium.registry if env_id.startswith(f"{ENV_NAMESPACE}/")
    )


def _unknown(kind: str, where: str, value: object, valid: list[str] | tuple[str, ...]) -> str:
    return f"{where}: {unknown_id_message(kind, value, valid, list_known=True)}"


def unknown_policy_message(name: str, labels: list[str] | tuple[str, ...]) -> str:
    """Why ``--policies`` cannot use ``name``: neither one of ``labels`` nor a policy id.

    Suggests the closest label or id, then lists the labels of the config's policies (quoted:
    they may hold spaces and commas) and the policy ids, each once: a label that is also an id
    (``UCB1`` labelled ``"UCB1"``) is listed with the ids only.
    """
    extra = list(dict.fromkeys(label for label in labels if label not in POLICY_IDS))
    message = f"--policies: {unknown_id_message('policy', name, [*extra, *POLICY_IDS])}"
    if not message.endswith("?"):
        message += "."
    if extra:
        message += f" Labels of the config's policies: {', '.join(map(repr, extra))}."
    return message + f" Policy ids: {', '.join(POLICY_IDS)}."


# ---------------------------------------------------------------------- parsing
def _check_keys(table: Mapping[str, Any], allowed: tuple[str, ...], where: str) -> None:
    unknown = [k for k in table if k not in allowed]
    if unknown:
        raise ConfigError(
            f"{where}: unknown key {unknown[0]!r}; allowed keys: {', '.join(allowed)}"
        )


def _table(value: object, where: str) -> dict[str, Any]:
    if not isinstance(value, Mapping):
        raise ConfigError(f"{where} must be a table, got {type(value).__name__} {value!r}")
    return dict(value)


def from_dict(data: Mapping[str, Any], *, default_name: str = "experiment") -> ExperimentConfig:
    """Build and validate a config from TOML-shaped data.

    Raises
    ------
    ConfigError
        Unknown key, missing ``env`` or ``policies``, an id that is not registered (the message
        lists the valid ones), or a value out of range.
    """
    data = _table(data, "config")
    _check_keys(data, _TOP_KEYS, "config")
    if "env" not in data:
        raise ConfigError("config: missing [env] table with an 'id' (a registered env id)")
    env_table = _table(data["env"], "[env]")
    _check_keys(env_table, _ENV_KEYS, "[env]")
    if "id" not in env_table:
        raise ConfigError("[env]: missing 'id'; valid env ids: " + ", ".join(env_ids()))
    env = EnvConfig(id=env_table["id"], params=_table(env_table.get("params", {}), "[env.params]"))

    raw_policies = data.get("policies")
    if not isinstance(raw_policies, list) or not raw_policies:
        raise ConfigError(
            "config: missing [[policies]] entries (at least one); valid policy ids: "
            + ", ".join(POLICY_IDS)
        )
    policies = []
    for i, raw in enumerate(raw_policies):
        table = _table(raw, f"policies[{i}]")
        _check_keys(table, _POLICY_KEYS, f"policies[{i}]")
        if "id" not in table:
            raise ConfigError(f"policies[{i}]: missing 'id'; valid policy ids: "
                              + ", ".join(POLICY_IDS))
        policies.append(
            PolicyConfig(
                id=table["id"],
                label=table.get("label", default_label(table["id"])),
                params=_table(table.get("params", {}), f"policies[{i}].params"),
            )
        )
    scalars = {k: data[k] for k in _TOP_KEYS if k in data and k not in ("env", "policies", "meta")}
    if "checkpoints" in scalars and isinstance(scalars["checkpoints"], list):
        scalars["checkpoints"] = tuple(scalars["checkpoints"])
    scalars.setdefault("name", default_name)
    config = ExperimentConfig(env=env, policies=tuple(policies), **scalars)
    validate(config)
    return config


#: Largest horizon: each step is one turn of a Python loop over the batched runs, and the
#: per-step arm counts take horizon x arms x 8 bytes (found by attack: 10^13 asked numpy for
#: 7.3 TiB and ended in a traceback).
MAX_HORIZON = 10**8
#: Largest number of runs (and runs per task): the recorded curves take runs x records x 8 bytes
#: each.
MAX_RUNS = 10**6
#: Most local worker processes (found by attack: 1,000 workers took the machine down).
MAX_WORKERS = 256


def _check_int(name: str, value: object, minimum: int, maximum: int | None = None) -> None:
    try:
        check_int(name, value, low=minimum, high=maximum)
    except (TypeError, ValueError) as exc:  # the one integer rule, raised as a config error
        raise ConfigError(str(exc)) from None


def check_executor(kind: object) -> str:
    """``kind`` after checking it names an executor (:data:`EXECUTORS`): the one rule of the
    config's ``executor`` and :func:`experiments.executors.make_executor`'s ``kind``.

    Raises
    ------
    ConfigError
        Another value, named with the allowed ones.
    """
    if not isinstance(kind, str) or kind not in EXECUTORS:
        raise ConfigError(f"executor must be one of {', '.join(EXECUTORS)}, got {kind!r}")
    return kind


#: Protocols of a Dask scheduler's address that name a host and port (``inproc://`` names an
#: address in this process, passed on as given).
SCHEDULER_PROTOCOLS = ("tcp", "tls", "ws", "wss", "ucx")


def check_scheduler(address: object) -> str:
    """``address`` after checking it can name a Dask scheduler: ``[protocol://]host:port``
    with a protocol of :data:`SCHEDULER_PROTOCOLS`, a host and a port (the rule of every port:
    :func:`bandits.errors.check_port`): the one rule of the config's ``scheduler``
    (``--scheduler``). Whether a scheduler answers
    there is the client's to find; an address that cannot be one is refused at once (found by
    attack: ``tcp://127.0.0.1:99999`` waited 20 s for the connection to fail).

    Raises
    ------
    ConfigError
        Not a string, or not such an address (the message says which part).
    """
    if not isinstance(address, str):
        raise ConfigError(f"scheduler must be an address string, got {address!r}")

    def refused(why: str) -> ConfigError:
        return ConfigError(f"scheduler must be a Dask scheduler's address such as "
                           f"tcp://host:8786, got {address!r}: {why}")

    protocol, sep, location = address.partition("://")
    if not sep:  # Dask reads an address without a protocol as tcp
        protocol, location = "tcp", address
    if protocol == "inproc":
        return address
    if protocol not in SCHEDULER_PROTOCOLS:
        raise refused(f"unknown protocol {protocol!r}; known: "
                      f"{', '.join(SCHEDULER_PROTOCOLS)}, inproc")
    try:
        host, port = _host_and_port(location)
    except ValueError as exc:
        raise refused(str(exc)) from None
    if not host or any(c.isspace() or c in "/?#@" for c in host):
        raise refused(f"no host name in {location!r}" if not host else f"host {host!r}")
    try:
        check_port(port)
    except ValueError as exc:
        raise refused(str(exc)) from None
    return address


def _host_and_port(location: str) -> tuple[str, str]:
    """The host and port texts of ``host:port`` or ``[ipv6]:port``, unchecked.

    Raises
    ------
    ValueError
        No port, or an IPv6 address without its brackets (Dask refuses both).
    """
    if location.startswith("["):  # an IPv6 host: [::1]:8786
        host, closed, rest = location[1:].partition("]")
        if closed and rest.startswith(":"):
            return host, rest[1:]
    elif location.count(":") == 1:
        host, port = location.split(":")
        return host, port
    raise ValueError("an IPv6 host is written [address]:port" if ":" in location
                     else "no port (host:port)")


def validate(config: ExperimentConfig) -> ExperimentConfig:
    """Check every field; returns ``config`` unchanged.

    Raises
    ------
    ConfigError
        With the field, the value received and what is allowed; unknown ids list the valid ones.
    """
    _check_run(config)
    _check_env(config.env)
    _check_policies(config.policies)
    return config


def _check_run(config: ExperimentConfig) -> None:
    """Check the run's fields of ``config``: name, sizes, seed, checkpoints and executor.

    Raises
    ------
    ConfigError
        As :func:`validate`.
    """
    if not isinstance(config.name, str) or not config.name.strip():
        raise ConfigError(f"name must be a non-empty string, got {config.name!r}")
    if any(c in config.name for c in "/\\") or config.name.startswith("."):
        raise ConfigError(f"name is used as a folder name; got {config.name!r}")
    _check_int("horizon", config.horizon, 1, MAX_HORIZON)
    _check_int("runs", config.runs, 1, MAX_RUNS)
    _check_int("runs_per_task", config.runs_per_task, 1, MAX_RUNS)
    _check_int("record_every", config.record_every, 1)
    if config.seed is not None:
        try:
            check_seed(config.seed)
        except (TypeError, ValueError) as exc:
            raise ConfigError(str(exc)) from None
    if not isinstance(config.checkpoints, tuple | list):
        # A string was read character by character ("10": "got '1' (str)"; found by attack).
        raise ConfigError(f"checkpoints must be a list of steps (integers >= 1) such as "
                          f"[10, 100], got {config.checkpoints!r} "
                          f"({type(config.checkpoints).__name__})")
    for c in config.checkpoints:
        _check_int("checkpoints[]", c, 1)
        if c > config.horizon:
            raise ConfigError(f"checkpoints: step {c} is beyond the horizon {config.horizon}")
    check_executor(config.executor)
    if config.scheduler is not None:
        check_scheduler(config.scheduler)
    if config.workers is not None:
        _check_int("workers", config.workers, 1, MAX_WORKERS)


def _check_env(env: EnvConfig) -> None:
    """Check that ``env`` names a registered environment id.

    Raises
    ------
    ConfigError
        As :func:`validate`, listing the valid ids.
    """
    if not isinstance(env.id, str):
        raise ConfigError(f"[env] id must be a string, got {env.id!r}")
    valid_envs = env_ids()
    if env.id not in valid_envs:
        raise ConfigError(_unknown("env id", "[env] id", env.id, valid_envs))


def _check_policies(policies: tuple[PolicyConfig, ...]) -> None:
    """Check each of ``policies``: a known id, hyper-parameters its class takes and a unique,
    non-empty label.

    Raises
    ------
    ConfigError
        As :func:`validate`, listing the valid ids.
    """
    labels: set[str] = set()
    for i, policy in enumerate(policies):
        if policy.id not in POLICY_IDS:
            raise ConfigError(
                _unknown("policy id", f"policies[{i}] id", policy.id, list(POLICY_IDS))
            )
        if policy.id in BANDIT_POLICIES:
            # Said before any run starts (it came after the first progress bar, in Python's
            # words: "__init__() got an unexpected keyword argument").
            try:
                BANDIT_POLICIES[policy.id].check_param_names(policy.params)
            except TypeError as exc:
                raise ConfigError(f"policies[{i}].params: {exc}") from None
        if not isinstance(policy.label, str) or not policy.label:
            raise ConfigError(f"policies[{i}] label must be a non-empty string")
        if policy.label in labels:
            raise ConfigError(
                f"policies[{i}] label {policy.label!r} is used twice; labels must be unique "
                "(set 'label' to tell two entries with the same id apart)"
            )
        labels.add(policy.label)


# ---------------------------------------------------------------------- files
def config_dir() -> Path:
    """The folder of the configs shipped with the package."""
    return Path(str(resources.files("experiments") / "configs"))


def shipped_configs() -> list[str]:
    """Names of the shipped configs (file stems)."""
    return sorted(p.stem for p in config_dir().glob("*.toml"))


def resolve_path(config: str | Path) -> Path:
    """The file a CONFIG argument names: a path, or the name of a shipped config.

    Raises
    ------
    ConfigError
        When neither exists; the message lists the shipped configs.
    """
    path = Path(config)
    if path.is_file():
        return path
    for candidate in (config_dir() / path.name, config_dir() / f"{path.name}.toml"):
        if candidate.is_file():
            return candidate
    # A folder, a device or a pipe is named as one (each was "no such file", found by attack).
    kind = _file_kind(path)
    what = "no such file" if kind is None else f"{kind}, not a TOML file,"
    raise ConfigError(
        f"config {str(config)!r}: {what} and no shipped config of that name; shipped "
        f"configs: {', '.join(shipped_configs())}"
    )


def _file_kind(path: Path) -> str | None:
    """What ``path`` is when it exists but is no regular file (``"a folder"``, ``"a character
    device"``, ...); None when nothing is there (or it cannot be looked at).
    """
    try:
        mode = path.stat().st_mode
    except OSError:
        return None
    kinds = ((stat.S_ISDIR, "a folder"), (stat.S_ISCHR, "a character device"),
             (stat.S_ISBLK, "a block device"), (stat.S_ISFIFO, "a named pipe"),
             (stat.S_ISSOCK, "a socket"))
    return next((name for is_kind, name in kinds if is_kind(mode)), "a special file")


def load(config: str | Path) -> ExperimentConfig:
    """Read and validate a TOML config (a path or a shipped config's name).

    Raises
    ------
    ConfigError
        File not found, TOML syntax error (with line and column) or invalid content.
    """
    path = resolve_path(config)
    try:
        data = tomllib.loads(path.read_bytes().decode("utf-8"))
    except OSError as exc:  # unreadable (permissions): one line naming it, not a traceback
        raise ConfigError(f"{path}: cannot be read: {exc.strerror or exc}") from exc
    except UnicodeDecodeError as exc:  # a binary file was a traceback (found by attack)
        raise ConfigError(
            f"{path}: not a TOML file (TOML is UTF-8 text; byte 0x{exc.object[exc.start]:02x} "
            f"at offset {exc.start} is not UTF-8)") from exc
    except tomllib.TOMLDecodeError as exc:
        raise ConfigError(f"{path}: invalid TOML: {exc}") from exc
    try:
        return from_dict(data, default_name=path.stem)
    except ConfigError as exc:
        raise ConfigError(f"{path}: {exc}") from exc


def override(config: ExperimentConfig, **changes: Any) -> ExperimentConfig:
    """A copy with the non-``None`` ``changes`` applied and validated (command-line options).

    ``policies`` may be given as labels or ids of the config's policies (keeping those) or as
    new policy ids (added with default parameters).

    Raises
    ------
    ConfigError
        An unknown field or an invalid value.
    """
    changes = {k: v for k, v in changes.items() if v is not None}
    fields = {f.name for f in dataclasses.fields(ExperimentConfig)}
    unknown = set(changes) - fields - {"env_id"}
    if unknown:
        raise ConfigError(f"cannot override {sorted(unknown)}; fields: {', '.join(sorted(fields))}")
    description = config.description
    if "env_id" in changes:
        env_id = changes.pop("env_id")
        same = env_id == config.env.id
        changes["env"] = EnvConfig(id=env_id, params=dict(config.env.params) if same else {})
        if not same:
            # The file describes its own environment (fixed_ctr: "hidden click rates 0.10 /
            # 0.15 / 0.12 ..."): a run on another must not be headed by that text.
            description = (f"The {config.name} config on {env_id} with its default parameters "
                           "(overridden on the command line).")
    if "policies" in changes:
        changes["policies"] = _select_policies(config, changes["policies"])
        labels = [p.label for p in changes["policies"]]
        if labels != [p.label for p in config.policies]:  # the file may name its own
            description = (f"{description} Policies run: {', '.join(labels)} (chosen on the "
                           "command line).").strip()
    if description != config.description and "description" not in changes:
        changes["description"] = description
    if "checkpoints" in changes:
        if isinstance(changes["checkpoints"], list):  # anything else is refused as given
            changes["checkpoints"] = tuple(changes["checkpoints"])
    elif "horizon" in changes and config.checkpoints:
        # A shorter --horizon keeps the file's checkpoints that still fit, and ends on the horizon.
        horizon = changes["horizon"]
        kept = [c for c in config.checkpoints if isinstance(c, int) and c < horizon]
        changes["checkpoints"] = (*kept, horizon) if isinstance(horizon, int) else ()
    return validate(dataclasses.replace(config, **changes))


def _select_policies(config: ExperimentConfig, names: Any) -> tuple[PolicyConfig, ...]:
    if isinstance(names, str):
        names = [n for n in names.replace(",", " ").split() if n]
    chosen = []
    for name in names:
        if isinstance(name, PolicyConfig):
            chosen.append(name)
            continue
        match = [p for p in config.policies if name in (p.label, p.id)]
        if match:
            chosen.extend(match)  # a policy named twice is refused below, not run once
        elif name in POLICY_IDS:
            chosen.append(PolicyConfig(id=name, label=default_label(name)))
        else:
            raise ConfigError(unknown_policy_message(name, config.policy_labels))
    try:  # the registry's one rule of a list of names (UCB1 UCB1 ran UCB1 once: a README check)
        refuse_repeats([p.label for p in chosen], field="--policies", kind="policy")
    except ValueError as exc:
        raise ConfigError(str(exc)) from None
    return tuple(chosen)


def package_version() -> str:
    """Installed version of recbandits (``"unknown"`` when run from an uninstalled tree)."""
    try:
        return importlib.metadata.version("recbandits")
    except importlib.metadata.PackageNotFoundError:
        return "unknown"


def resolve_seed(config: ExperimentConfig) -> ExperimentConfig:
    """The config with a concrete ``seed`` (fresh OS entropy when it had none)."""
    if config.seed is not None:
        return config
    import numpy as np

    seed = int(np.random.SeedSequence().entropy % (MAX_SEED + 1))  # type: ignore[operator]  # fresh entropy is an int
    return dataclasses.replace(config, seed=seed)


def dump(config: ExperimentConfig, path: Path, **meta: Any) -> Path:
    """Write ``config`` as TOML, with ``[meta]`` (package version and ``meta``) appended."""
    import tomli_w

    data = config.to_dict()
    data["meta"] = {"recbandits_version": package_version(),
                    **{k: v for k, v in meta.items() if v is not None}}
    text = tomli_w.dumps(data)
    return write_whole(path, lambda p: p.write_text(text, encoding="utf-8"))
