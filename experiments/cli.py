"""The ``recbandits`` command line: it parses options and calls importable functions.

Serving is imported lazily, inside the handlers of the service's commands, so the lab's commands
never pay for (or depend on) the web stack.
"""

from __future__ import annotations

import argparse
import contextlib
import dataclasses
import importlib
import logging
import os
import sys
import tempfile
import traceback
import warnings
from collections.abc import Callable, Sequence
from typing import TYPE_CHECKING, NoReturn, cast

from arms.data.files import SYNTHETIC_READS_NO_DATA
from arms.data.movielens import DATASETS, MOVIELENS_NAMES, SYNTHETIC
from arms.errors import DataFileError, DataUnavailableError
from arms.registry import split_names
from bandits.errors import check_port, integer_text, number_text
from bandits.ope import BOOTSTRAP_RANGE, DEFAULT_N_BOOTSTRAP

if TYPE_CHECKING:  # serving is imported lazily at run time (see the module docstring)
    from serving.offpolicy import EmptyLogError, LinearCandidate
    from serving.settings import Settings

Handler = Callable[[argparse.Namespace], int]


def _integer(text: str) -> int:
    """An integer option's value by the project's one rule (:func:`bandits.errors.integer_text`:
    plain decimal digits; ``--workers 1_6`` was 16 while ``--port 8_000`` was refused).
    """
    try:
        return integer_text(text)
    except ValueError as exc:  # argparse says "argument --workers: <this>", exit 2
        raise argparse.ArgumentTypeError(str(exc)) from None


def _port(text: str) -> int:
    """A ``--port`` by the port's one rule (:func:`bandits.errors.check_port`), refused by argparse
    as ``argument --port: ...`` (the settings' refusal named ``port``, found in review).
    """
    try:
        return check_port(text)
    except ValueError as exc:
        raise argparse.ArgumentTypeError(str(exc)) from None


def _number(text: str) -> float:
    """A number option's value by the project's one rule (:func:`bandits.errors.number_text`)."""
    try:
        return number_text(text)
    except ValueError as exc:
        raise argparse.ArgumentTypeError(str(exc)) from None


def _evaluate_arms(args: argparse.Namespace) -> int:
    from experiments import evaluate_arms as ev

    arms = None if args.arms is None else split_names(args.arms)
    config = ev.EvaluateConfig(
        data=args.data, dataset=args.dataset, synthetic=args.synthetic, arms=arms,
        seeds=args.seeds, tune=not args.no_tune, n_jobs=args.jobs, out_dir=args.out,
    )  # fmt: skip
    try:
        results = ev.run(config)
    except ev.EvaluateConfigError as exc:
        option = {"n_jobs": "--jobs"}.get(exc.field, f"--{exc.field}")
        print(f"recbandits evaluate-arms: {option}: {exc}", file=sys.stderr)
        return 2
    print(ev.format_results(results))
    return 0


def _simulate(args: argparse.Namespace) -> int:
    from experiments import config as cfg
    from experiments import simulate
    from experiments.executors import WorkerLostError
    from experiments.report import markdown_table

    if args.data is not None and not args.data.strip():  # not the current folder (attack)
        print("recbandits simulate: --data is empty; give a folder holding ml-100k/, ...",
              file=sys.stderr)
        return 2
    try:
        config = cfg.override(
            cfg.load(args.config),
            env_id=args.env, policies=args.policies, horizon=args.horizon, runs=args.runs,
            seed=args.seed, workers=args.workers, scheduler=args.scheduler,
            executor=args.executor or ("dask" if args.scheduler else None),
        )
        # The env's dataset and data folder, as [env.params] dataset and data_dir in the file
        # (--data: the README's, missing here; found by a README check). A folder given is
        # the one read: no fallback to synthetic data (simulate.probe_env). Merged after
        # --env, which starts the new env's params empty: merged before, they were dropped
        # and the run went on MovieLens 100K (found by attack).
        given = {"dataset": args.dataset,
                 "data_dir": None if args.data is None else os.path.abspath(args.data)}
        if any(v is not None for v in given.values()):
            params = {**config.env.params, **{k: v for k, v in given.items() if v is not None}}
            config = dataclasses.replace(config, env=dataclasses.replace(config.env, params=params))
        results = simulate.run(
            config, out_dir=args.out, progress=not args.quiet, plots=not args.no_plots,
            on_note=lambda note: print(f"recbandits: {note}", file=sys.stderr),
        )
    except cfg.ConfigError as exc:
        _traceback_if_verbose(args)  # with what the environment raised
        print(f"recbandits simulate: {exc}", file=sys.stderr)
        return 2
    except WorkerLostError as exc:  # before any task ran (the environment's probe)
        _traceback_if_verbose(args)
        print(f"recbandits simulate: {exc}; no run had started, nothing written",
              file=sys.stderr)
        return SIMULATE_CUT_SHORT
    # Stopped early (Ctrl-C: 130, as main; a lost worker or scheduler: 1): one line saying
    # why and what is reported, after the finished runs' table, or instead of an empty one.
    status = 0 if not results.interrupted else (
        130 if results.stop_reason == simulate.CTRL_C else SIMULATE_CUT_SHORT)
    if results.interrupted and not any(p.n_runs for p in results.policies):
        print(f"recbandits simulate: {results.stop_reason}: no run had finished; nothing "
              "reported, nothing written", file=sys.stderr)
        return status
    print(markdown_table(results.summary))
    for name, path in results.files.items():
        print(f"{name:16s} {path}")
    if results.interrupted:
        print(f"recbandits simulate: {results.stop_note}; the runs finished are reported "
              "above", file=sys.stderr)
    return status


#: Exit status of ``simulate`` stopped by a lost worker process or Dask scheduler (its
#: finished runs reported); Ctrl-C's is 130, as every command's.
SIMULATE_CUT_SHORT = 1


def _replay(args: argparse.Namespace) -> int:
    from datetime import UTC, datetime

    from tqdm import tqdm

    from experiments import replay

    arms = None if args.arms is None else split_names(args.arms)
    if arms == ():  # as evaluate-arms: not the defaults in silence
        print("recbandits replay: --arms: name at least one arm", file=sys.stderr)
        return 2
    try:
        config = replay.ReplayConfig(
            data=args.data, cut=args.cut, retrain_every=args.retrain_every,
            half_life_days=args.half_life_days, max_events=args.max_events,
            n_bootstrap=args.bootstrap, seed=args.seed, cold_users=args.cold_users,
            synthetic=None if args.synthetic is None else {"n_ratings": args.synthetic},
            arms=replay.DEFAULT_ARMS if arms is None else arms,
        )  # fmt: skip
    except replay.ReplayConfigError as exc:
        option = {"n_bootstrap": "bootstrap"}.get(exc.field, exc.field)
        print(f"recbandits replay: --{option.replace('_', '-')}: {exc}", file=sys.stderr)
        return 2
    except ValueError as exc:  # an unknown arm
        print(f"recbandits replay: --arms: {exc}", file=sys.stderr)
        return 2
    out = args.out or f"runs/replay-{datetime.now(UTC).strftime('%Y%m%dT%H%M%S')}"
    with tqdm(desc="replay", unit=" steps", disable=args.quiet, leave=False) as bar:

        def step(_: int) -> None:
            bar.update()

        try:
            results = replay.run(config, out_dir=out, on_step=step)
        except ValueError as exc:  # what the data makes of the options (--synthetic 0, ...)
            _traceback_if_verbose(args)
            print(f"recbandits replay: {exc}", file=sys.stderr)
            return 2
    print(replay.format_results(results))
    for note in results.notes:
        print(f"note: {note}")
    for name, path in results.files.items():
        print(f"{name:16s} {path}")
    return 0


def _add_replay(commands: argparse._SubParsersAction) -> None:
    sub = commands.add_parser(
        "replay", help="stream MovieLens 100K in time order after a cut-off: frozen, real-time "
        "and retrained arms recommend before each rating is revealed; HR@10 and NDCG@10 with "
        "bootstrap intervals and paired differences")
    sub.add_argument("--data", help="folder holding ml-100k/ (default: RECBANDITS_DATA, the "
                     "user cache, else download)")
    sub.add_argument("--synthetic", type=_integer, default=None, metavar="N_RATINGS",
                     help="replay a synthetic dataset of N_RATINGS instead of MovieLens")
    sub.add_argument("--cut", type=_number, default=0.9, help="quantile of time where the stream "
                     "starts (default 0.9)")
    sub.add_argument("--arms", help="comma-separated arms (default: "
                     "sequential,autoencoder,cooccurrence,popularity)")
    sub.add_argument("--cold-users", choices=("drop", "include"), default="drop",
                     help="ratings of users with none before the cut: revealed but not scored "
                     "(drop, default), or scored from their second step on (include)")
    sub.add_argument("--retrain-every", type=_integer, default=2000, metavar="N",
                     help="stream ratings between refits of the retrain variant (default 2000)")
    sub.add_argument("--half-life-days", type=_number, default=7.0, metavar="D",
                     help="half-life of live popularity and co-occurrence (default 7)")
    sub.add_argument("--max-events", type=_integer, default=None, metavar="N",
                     help="replay only the first N stream ratings (whole steps: a user's ratings "
                          "in one second are kept or left together)")
    sub.add_argument("--bootstrap", type=_integer, default=DEFAULT_N_BOOTSTRAP, metavar="B",
                     help=f"bootstrap resamples of users, {BOOTSTRAP_RANGE} (default "
                     "%(default)s)")
    sub.add_argument("--seed", type=_integer, default=0, help="bootstrap seed (default 0)")
    sub.add_argument("--out", metavar="DIR", help="folder for summary.csv, differences.csv, "
                     "events.csv and config.json (default runs/replay-<timestamp>)")
    sub.add_argument("-q", "--quiet", action="store_true", help="no progress bar")
    sub.set_defaults(handler=_replay)


def _serving_settings(args: argparse.Namespace) -> object:
    """Settings from RECBANDITS_* variables and the ``--settings`` file, overridden by the
    options given.
    """
    from serving.commands import settings_for_store
    from serving.settings import Settings, json_object

    names = ("host", "port", "workers", "db", "data", "state_dir", "arms", "dataset", "seed",
             "policy", "slate_mode", "multileave_arms", "exploration_floor", "retrain_every",
             "retrain_after_events", "holdout_share", "holdout_baseline", "drift_detector",
             "posterior_carryover", "carryover_discount", "gate_enabled", "gate_holdout",
             "gate_margin", "gate_relevance", "shadow_policy")
    given = {n: getattr(args, n) for n in names if getattr(args, n, None) is not None}
    if getattr(args, "shadow_policy_params", None) is not None:  # the variable's rule
        given["shadow_policy_params"] = json_object("--shadow-policy-params",
                                                    args.shadow_policy_params)
    def build(**extra: object) -> Settings:
        values = {**given, **extra}
        if getattr(args, "settings", None):
            return Settings.from_file(args.settings, **values)
        return Settings(**values)

    # The live version's arms where the settings name none and the default list would not fit
    # their arm_params (serving.commands.settings_for_store).
    settings = settings_for_store(build)
    if "data" in given and settings.dataset == SYNTHETIC:  # ignored once (a README check)
        raise ValueError(f"--data: {SYNTHETIC_READS_NO_DATA}")
    return settings


def _settings_or_none(args: argparse.Namespace, command: str) -> object | None:
    """The service's settings for ``command``; None after saying why they are invalid."""
    from pydantic import ValidationError

    from serving.settings import settings_issues

    try:
        return _serving_settings(args)
    except ValidationError as exc:  # a bad option or variable: one line, no links
        print(f"recbandits {command}: {settings_issues(exc)}", file=sys.stderr)
        return None
    except ValueError as exc:  # a bad settings file
        print(f"recbandits {command}: {exc}", file=sys.stderr)
        return None


def _serve(args: argparse.Namespace) -> int:
    """``serve`` runs the server until it stops: its status, no results to print."""
    from serving import commands
    from serving.results import CommandError

    settings = _settings_or_none(args, "serve")
    if settings is None:
        return 2
    refused = _serve_folder_refusal(args, cast("Settings", settings))
    if refused is not None:
        print(f"recbandits serve: {refused}", file=sys.stderr)
        return 2
    try:
        return commands.serve(settings)  # type: ignore[arg-type]
    except CommandError as exc:  # refused at start (another catalogue, arms missing): said
        print(f"recbandits serve: {exc}", file=sys.stderr)
        return exc.exit_code


def _serve_folder_refusal(args: argparse.Namespace, settings: Settings) -> str | None:
    """Why ``serve`` could not make its state folder, or the folder of its ``--db`` SQLite
    file, or None: ``--out``'s rule (:func:`_out_refusal`), before the data is read. Found by
    a README check: a ``--db`` file under a file ended in a 47-line traceback (exit 1), and a
    ``--state-dir`` that was a file or lay under one said only "File exists" or "Not a
    directory". Named as given: ``--state-dir``, ``--db``'s folder, else the settings' names.
    """
    from serving.store import database_file

    given = args.state_dir is not None  # '' too: it served from the working folder
    state_dir = args.state_dir if given else str(settings.resolved_state_dir())
    named = "--state-dir" if given else "state_dir"
    checks = [(named, state_dir)]
    database = database_file(settings.db) if settings.db else None
    if database is not None:  # (the default file lies in the state folder)
        checks.append((f"{'--db' if args.db else 'db'}'s folder",
                       os.path.dirname(os.path.abspath(database))))
    for option, folder in checks:
        refused = _out_refusal(folder)
        if refused is not None:
            return refused.replace("--out", option, 1)
    return None


def _run_serving(args: argparse.Namespace, command: str, function: str | None = None,
                 **options: object) -> int:
    """Call ``serving.commands``' function of ``command`` (``function``, default ``command``
    with ``_`` for ``-``) with the settings and ``options``, print its results (a
    :mod:`serving.results` object, as ``str()``) on stdout or its refusal on stderr, and return
    the exit status.
    """
    from serving import commands
    from serving.results import CommandError

    settings = _settings_or_none(args, command)
    if settings is None:
        return 2
    missing = (None if command in CREATE_STORE
               else _missing_store(args, cast("Settings", settings)))
    if missing is not None:  # a mistyped path is not "nothing to do" (found by attack: exit 0)
        print(f"recbandits {command}: {missing}", file=sys.stderr)
        return 2
    run = getattr(commands, function or command.replace("-", "_"))
    try:
        results = run(settings, **options)
    except CommandError as exc:  # nothing done: the message says why
        print(f"recbandits {command}: {exc}", file=sys.stderr)
        return exc.exit_code
    except ValueError as exc:  # a bad value (a DATE, --bootstrap) or settings the log refuses
        print(f"recbandits {command}: {exc}", file=sys.stderr)
        return 2
    print(results)
    return int(results.exit_code)


#: What each ``models`` action uses of the lifecycle options (the parser's, which the
#: command takes for all of its actions): a promotion and a rollback serve a version, whose
#: carry-over applies; no action gates (a retrain's candidate is gated when it is fitted).
MODELS_LIFECYCLE = {"list": (), "show": (), "promote": ("carry-over",),
                    "rollback": ("carry-over",)}


def _models(args: argparse.Namespace) -> int:
    """``recbandits models``: the lifecycle options its action does not use are refused, one
    line, exit 2 (found by a README check: ``models list --no-gate`` took and ignored them).
    """
    unused = [flag for dest, (flag, whose) in args.lifecycle.items()
              if whose not in MODELS_LIFECYCLE[args.action] and getattr(args, dest) is not None]
    if unused:
        print(f"recbandits models: {', '.join(unused)}: not used by models {args.action} (the "
              "gate options are retrain's and serve's; the carry-over ones apply to promote and "
              "rollback)", file=sys.stderr)
        return 2
    return _run_serving(args, "models", action=args.action, version=args.version)


#: The service's commands that create their store when it is missing (``serve``); every
#: other service command reads an existing store and creates nothing (``retrain`` too: it
#: built a whole store where a mistyped ``--state-dir`` named none, found by a README check).
CREATE_STORE = frozenset({"serve"})


def _missing_store(args: argparse.Namespace, settings: Settings) -> str | None:
    """Why the store the settings name is not there, or None: a ``state_dir`` that is not a
    folder, or a ``db`` or ``state_dir`` where no store is (the store's own test: opened
    without creating it; no connection is made). A store given anywhere (an option, a
    ``RECBANDITS_*`` variable, the settings file) must exist; only at the default place (none
    given) is a missing store (nothing served yet) the command's "nothing to do".
    """
    from serving.store import open_store
    from serving.store.errors import StoreNotFoundError

    state_dir = getattr(args, "state_dir", None)
    if isinstance(state_dir, str) and not os.path.isdir(state_dir):
        return f"--state-dir {state_dir!r}: no such folder"
    named = _store_named(args, settings)
    if named is None:
        return None
    if not settings.db and not os.path.isdir(settings.resolved_state_dir()):
        return f"{named}: no such folder"
    try:
        open_store(settings.resolved_db_url(), create=False).dispose()
    except StoreNotFoundError as exc:
        return f"{named}: {exc}"
    except (TypeError, ValueError) as exc:  # not a store's URL or driver
        return str(exc)
    return None  # (a file that is no database raises on: main's one refusal of it, or -v)


def _store_named(args: argparse.Namespace, settings: Settings | None) -> str | None:
    """Where the store a command reads was given, as its refusals name it: ``--db 'URL'``,
    ``RECBANDITS_STATE_DIR='/x'``, ``state_dir '/x' in the settings file 'f.toml'``; None when
    neither ``db`` nor ``state_dir`` was given anywhere (the default place). The one place that
    tells a store the user named from the default one: a mistyped variable or settings file
    was "nothing to do", exit 0, where the same path as an option was refused (found by a
    README check).
    """
    from serving.settings import Settings
    from serving.store.errors import redact_url

    def said(name: str, value: object) -> str:
        return repr(redact_url(str(value)) if name == "db" else str(value))

    for name in ("db", "state_dir"):  # db first: the store's URL when both are given
        option = getattr(args, name, None)
        if option is not None:
            return f"--{name.replace('_', '-')} {said(name, option)}"
        value = None if settings is None else getattr(settings, name)
        if not value:
            continue
        settings_file = getattr(args, "settings", None)
        if settings_file and name in Settings.read_file(settings_file):
            return f"{name} {said(name, value)} in the settings file {settings_file!r}"
        return f"RECBANDITS_{name.upper()}={said(name, value)}"
    return None


def _ope_candidates(
    args: argparse.Namespace,
) -> tuple[list[tuple[float, ...]], tuple[LinearCandidate, ...]] | None:
    """The ``--ts-prior`` pairs and ``--linear`` candidates of ``args``; None (said) if invalid."""
    from serving import offpolicy

    try:  # the numbers' one rule ("1_0" was 10.0 here while --linear refused it)
        priors = [tuple(number_text(x) for x in p.split(",")) for p in args.ts_prior or []]
    except ValueError:
        priors = [()]
    if any(len(p) != 2 for p in priors):  # the range is the bandits' (OPEConfig checks it)
        print(f"recbandits ope: --ts-prior takes ALPHA,BETA, two numbers in plain decimal "
              f"digits, got {args.ts_prior}", file=sys.stderr)
        return None
    try:
        linear = tuple(offpolicy.LinearCandidate.parse(t) for t in args.linear or [])
    except ValueError as exc:
        print(f"recbandits ope: --linear: {exc}", file=sys.stderr)
        return None
    return priors, linear


def _ope_options_clash(args: argparse.Namespace) -> str | None:
    """Why ``args`` mix the options of the two sources (the parser's argument groups;
    found by attack: ``--obd`` ignored ``--out`` and the exports, and wrote nothing), give the
    candidates' options with ``--shadow``, which replaces the candidates (found by a README
    check: they were ignored), name the store twice (``--db`` and ``--state-dir``), or mix
    the two exports; None if not.
    """
    log_options, obd_options, candidate_options = args.ope_groups

    def given(options: tuple[str, ...]) -> str:
        return ", ".join(f"--{n.replace('_', '-')}" for n in options
                         if getattr(args, n) not in (None, False, []))

    if args.obd and (flags := given(log_options)):
        return f"{flags}: for the service's log, not with --obd"
    if not args.obd and (flags := given(obd_options)):
        return f"{flags}: only with --obd"
    if not args.obd and args.db is not None and args.state_dir is not None:
        # Either names the store read (found by a README check: --state-dir was ignored).
        return "--db, --state-dir: each names the store to read; give one"
    if getattr(args, "shadow", False) and (flags := given(candidate_options)):
        return (f"{flags}: the candidates' options, not with --shadow (it evaluates the "
                "logged shadow policy instead of the candidates)")
    from serving import offpolicy  # the run's own rule, said with the options' names

    clash = offpolicy.export_clash(
        None if args.out is None else ("--out", args.out),
        {"--export-csv": args.export_csv, "--export-obp": args.export_obp},
        getattr(args, "shadow", False))
    if clash is not None:
        return clash
    exports = [p for p in (args.export_csv, args.export_obp) if p is not None]
    for path in exports:
        if os.path.isdir(path):
            return f"{path!r} is a folder; --export-csv and --export-obp take a file path"
    return None


def _ope(args: argparse.Namespace) -> int:
    clash = _ope_options_clash(args)
    if clash is not None:  # refused before anything is read or written
        print(f"recbandits ope: {clash}", file=sys.stderr)
        return 2
    return _ope_obd(args) if args.obd else _ope_log(args)


def _ope_log(args: argparse.Namespace) -> int:
    from datetime import UTC, datetime

    from pydantic import ValidationError

    from serving import offpolicy
    from serving.settings import settings_issues
    from serving.store.errors import StoreNotFoundError

    url = args.db
    # The service's settings (RECBANDITS_*): its store and the reward an undecided closed
    # decision gets. With --db given, broken settings only cost the default reward.
    default_reward = offpolicy.RULES.default_reward
    settings: Settings | None = None
    try:  # --state-dir alone of the service's options: --seed here is the bootstrap's
        settings = cast("Settings",
                        _serving_settings(argparse.Namespace(state_dir=args.state_dir)))
    except ValueError as exc:  # a setting's value, a variable that is not JSON included
        if url is None:
            said = settings_issues(exc) if isinstance(exc, ValidationError) else str(exc)
            print(f"recbandits ope: {said}", file=sys.stderr)
            return 2
    else:
        url = url or settings.resolved_db_url()
        default_reward = settings.default_reward
    candidates = _ope_candidates(args)
    if candidates is None:
        return 2
    priors, linear = candidates
    try:
        config = offpolicy.OPEConfig(
            url=url, out_dir=args.out or f"runs/ope-{datetime.now(UTC).strftime('%Y%m%dT%H%M%S')}",
            n_bootstrap=args.bootstrap, seed=args.seed,
            ts_priors=tuple(priors) or offpolicy.DEFAULT_TS_PRIORS,  # type: ignore[arg-type]
            linear=linear or offpolicy.DEFAULT_LINEAR, include_open=args.include_open,
            default_reward=default_reward,
            export_csv_path=args.export_csv, export_obp_path=args.export_obp,
            shadow=args.shadow,
        )  # fmt: skip
        results = offpolicy.run(config)
    except StoreNotFoundError as exc:
        return _ope_no_store(args, settings, exc)
    except offpolicy.EmptyLogError as exc:
        return _ope_found_nothing(exc)
    except ValueError as exc:
        print(f"recbandits ope: {exc}", file=sys.stderr)
        return 2
    print(offpolicy.format_run(results))
    reports = ([r for c in results.shadow for r in c.reports.values()]
               if results.shadow is not None else [])
    messages = ([m for r in reports for m in r.messages] if results.result is None
                else results.result.messages)
    for message in messages:
        print(f"warning: {message}", file=sys.stderr)
    for note in [] if results.result is None else results.result.notes:
        print(f"note: {note}", file=sys.stderr)
    return 0


def _ope_no_store(args: argparse.Namespace, settings: Settings | None, exc: Exception) -> int:
    """Say that ``ope`` found no store; its exit status. The default store not made yet
    (nothing served): nothing to do, 0, as the other store readers say it (it was exit 2:
    found by a README check). A store given by ``--db``, ``--state-dir`` or their
    ``RECBANDITS_*`` variables (``settings``, None when they are invalid): a refusal, 2, named
    as every command names it (:func:`_store_named`).
    """
    from serving.results import NothingToDo

    named = _store_named(args, settings)
    if named is None:
        print(NothingToDo("evaluate", f"{exc} (nothing served yet; nothing written)"))
        return 0
    print(f"recbandits ope: {named}: {exc}", file=sys.stderr)
    return 2


def _ope_found_nothing(exc: EmptyLogError) -> int:
    """Say why ``ope`` found no decision to evaluate; its exit status. Decisions whose reward
    windows are all still open: nothing to do yet, which is no failure (it was exit 2; found
    by a README check), said on stdout, no file written (0). A log without what is asked for
    (no policy decision, no shadow record): a refusal, as ``credit`` and ``holdout`` give (2).
    """
    from serving.results import NothingToDo

    if not exc.n_open:
        print(f"recbandits ope: {exc.what}", file=sys.stderr)
        return 2
    print(NothingToDo("evaluate", f"{exc.what}; wait for it, or pass --include-open to count "
                      "open decisions with the feedback they have so far (nothing written)"))
    return 0


def _ope_obd(args: argparse.Namespace) -> int:
    from experiments import obd_ope

    try:
        config = obd_ope.config_from(
            campaigns=(args.campaign,) if args.campaign else None, data_dir=args.data,
            full=args.full, n_bootstrap=args.bootstrap, seed=args.seed)
    except (TypeError, ValueError) as exc:
        print(f"recbandits ope --obd: {exc}", file=sys.stderr)
        return 2
    results = obd_ope.run(config)
    print(results.markdown())
    print()
    # logged_asof has no single table, so no distance to the empirical one: "–", not NaN.
    print(results.reconstructions.to_string(index=False, float_format="{:.3f}".format,
                                            na_rep="–"))
    for note in results.notes:
        print(f"recbandits ope: {note}", file=sys.stderr)
    return 0


def _add_serving_commands(commands: argparse._SubParsersAction) -> None:
    # The duration units of the help, from their one list (serving.durations: no web stack).
    from serving.durations import units_said

    def running_service_options(parser: argparse.ArgumentParser, what: str) -> None:
        # --host and --port of the running service a command asks (rebuild-state compares
        # with it, shadow status / promote check against it), as serve takes them.
        parser.add_argument("--host", help=f"where the service to {what} listens (default "
                            "127.0.0.1; RECBANDITS_HOST; serve's --host)")
        parser.add_argument("--port", type=_port, help="its port (default 8000; "
                            "RECBANDITS_PORT; serve's --port)")

    def store_options(sub: argparse.ArgumentParser, *, serves: bool = False) -> None:
        # ``serves``: serve's --arms are what it serves; every other command reads a store and
        # takes its live version's arms (serving.commands.served_settings).
        sub.add_argument("--db", metavar="URL", help="SQLAlchemy URL of the store (default: "
                         "SQLite in WAL mode under the state folder; "
                         "postgresql+psycopg://user@host:port/db for several workers or hosts)")
        # The settings' data: RECBANDITS_DATA is then the one folder searched, unlike the lab's
        # commands, which try the cache after it (arms.data.find_movielens with a data_dir).
        sub.add_argument("--data", help="folder holding ml-100k/ (or --dataset's release, "
                         "ml-1m/, ...; default: RECBANDITS_DATA, which must then hold it, else "
                         "the user cache, else download)")
        sub.add_argument("--state-dir", help="folder for the SQLite file and the fitted arms "
                         "(default: $XDG_STATE_HOME/recbandits, else "
                         "~/.local/state/recbandits)")
        sub.add_argument("--arms", help="comma-separated arms (default: "
                         "svd,sequential,autoencoder,popularity)" if serves else
                         "comma-separated arms (default: the live version's; other arms "
                         "are refused)")
        sub.add_argument("--dataset", choices=DATASETS,
                         help="what the arms are fit on (default: movielens)")
        sub.add_argument("--seed", type=_integer, help="seed of arm fitting and arm selection")
        sub.add_argument("--policy", help="the bandit policy: ThompsonSampling (default), "
                         "DiscountedThompsonSampling, EpsilonGreedy, KLUCB, LinTS, LinUCB, "
                         "SlidingWindowThompsonSampling or UCB1 (RECBANDITS_POLICY)")
        sub.add_argument("--settings", metavar="FILE", help="a TOML file of settings (keys as "
                         "the RECBANDITS_* variables without the prefix, lower case; a "
                         "[policy_params] table for the policy's hyper-parameters)")
        sub.add_argument("--shadow-policy", metavar="NAME", help="a candidate policy run in "
                         "shadow mode: logged beside every decision, never served (one of the "
                         "--policy names; RECBANDITS_SHADOW_POLICY)")
        sub.add_argument("--shadow-policy-params", metavar="JSON", help="the shadow policy's "
                         "hyper-parameters as a JSON object, e.g. '{\"scale\": 0.5}' "
                         "(RECBANDITS_SHADOW_POLICY_PARAMS; a [shadow_policy_params] table)")

    def bootstrap_options(sub: argparse.ArgumentParser) -> None:
        # The report commands on the live log (credit, holdout); --seed is the store's.
        sub.add_argument("--bootstrap", type=_integer, default=DEFAULT_N_BOOTSTRAP, metavar="N",
                         help=f"bootstrap resamples, {BOOTSTRAP_RANGE} (default "
                         "%(default)s)")
        sub.add_argument("--bootstrap-seed", type=_integer, default=0, metavar="S",
                         help="bootstrap seed (default 0)")

    def lifecycle_options(sub: argparse.ArgumentParser) -> dict[str, tuple[str, str]]:
        # Returns each option's dest: (its flag, whose it is), for a command that takes them
        # all but uses some (models: _models, by MODELS_LIFECYCLE).
        given = {a.dest for a in sub._actions}
        sub.add_argument("--posterior-carryover", choices=("carry", "reset", "discount"),
                         help="what a refitted arm's policy statistics start from when a new "
                         "version is served (default carry; RECBANDITS_POSTERIOR_CARRYOVER)")
        sub.add_argument("--carryover-discount", type=_number, metavar="GAMMA",
                         help="share of the evidence discount keeps, in (0, 1] (default 0.5; "
                         "RECBANDITS_CARRYOVER_DISCOUNT)")
        sub.add_argument("--no-gate", dest="gate_enabled", action="store_const", const=False,
                         help="serve a retrain's arms without the evaluation gate "
                         "(RECBANDITS_GATE_ENABLED=false)")
        sub.add_argument("--gate-holdout", type=_number, metavar="FRACTION",
                         help="most recent share of events the gate holds out (default 0.1; "
                         "RECBANDITS_GATE_HOLDOUT)")
        sub.add_argument("--gate-margin", type=_number, metavar="M",
                         help="largest HR@10/NDCG@10 drop the gate allows (default 0.01; "
                         "RECBANDITS_GATE_MARGIN)")
        sub.add_argument("--gate-relevance", type=_number, metavar="RATING",
                         help="least rating of a held-out event the gate counts as a hit "
                         "(default 4, so neither views nor dislikes; 1: every event; "
                         "RECBANDITS_GATE_RELEVANCE)")
        return {a.dest: (a.option_strings[0], "carry-over" if "carryover" in a.dest
                         else "gate") for a in sub._actions if a.dest not in given}

    serve = commands.add_parser("serve", help="run the recommendation service (FastAPI)")
    serve.add_argument("--host", help="interface to listen on (default 127.0.0.1)")
    serve.add_argument("--port", type=_port, help="port (default 8000)")
    serve.add_argument("--workers", type=_integer, metavar="N",
                       help="worker processes, in [1, 64] (default 1)")
    serve.add_argument("--slate-mode", choices=("single", "multileave"),
                       help="single (default): one arm ranks each slate; multileave: the team "
                       "draft of --multileave-arms arms, each event crediting its item's arm "
                       "(RECBANDITS_SLATE_MODE)")
    serve.add_argument("--multileave-arms", type=_integer, metavar="M",
                       help="arms per multileaved slate (default 2; RECBANDITS_MULTILEAVE_ARMS)")
    serve.add_argument("--exploration-floor", type=_number, metavar="P",
                       help="least propensity of every arm, 0 to 1/len(arms): the policy mixed "
                            "with uniform (default 0; RECBANDITS_EXPLORATION_FLOOR)")
    serve.add_argument("--retrain-every", metavar="DURATION",
                       help="retrain on its own this long after the last retrain: seconds, "
                            f"or with a unit {units_said()} (as 6h; default off; "
                            "RECBANDITS_RETRAIN_EVERY)")
    serve.add_argument("--retrain-after-events", type=_integer, metavar="N",
                       help="retrain on its own once N events were logged since the last "
                            "retrain (default off; RECBANDITS_RETRAIN_AFTER_EVENTS)")
    serve.add_argument("--holdout-share", type=_number, metavar="S",
                       help="share of requests served by --holdout-baseline instead of the "
                            "policy, in [0, 1) (default 0; RECBANDITS_HOLDOUT_SHARE)")
    serve.add_argument("--holdout-baseline", metavar="ARM",
                       help="what serves the held-out requests: uniform (default) or an arm, "
                            "which refuses --exploration-floor (RECBANDITS_HOLDOUT_BASELINE)")
    serve.add_argument("--drift-detector", choices=("PageHinkley", "CUSUM", "none"),
                       help="change detector on each arm's reward stream (default "
                            "PageHinkley; RECBANDITS_DRIFT_DETECTOR)")
    store_options(serve, serves=True)
    lifecycle_options(serve)
    serve.set_defaults(handler=_serve)

    retrain = commands.add_parser(
        "retrain", help="fit candidate arms on MovieLens plus feedback, gate them on a "
        "temporal hold-out, serve them as a new version if accepted (exit 1 if rejected)")
    retrain.add_argument("--candidate", action="store_true",
                         help="save an accepted candidate without serving it (status "
                         "candidate; 'recbandits models promote V' serves it)")
    store_options(retrain)
    lifecycle_options(retrain)
    retrain.set_defaults(handler=lambda args: _run_serving(args, "retrain",
                                                           candidate=args.candidate))

    models = commands.add_parser(
        "models", help="the model versions: list, show V, promote V, rollback (every worker "
        "serves a promotion or rollback within one refresh interval)")
    models.add_argument("action", choices=("list", "show", "promote", "rollback"))
    # Text: serving.versions.parse_version checks it strictly ('1_0' is not 10), exit 1.
    models.add_argument("version", nargs="?", metavar="V",
                        help="the version (show, promote): plain digits, 1..2147483647")
    store_options(models)
    models.set_defaults(handler=_models, lifecycle=lifecycle_options(models))

    credit = commands.add_parser(
        "credit", help="compare the arms of the log's multileaved slates: credited click rates "
        "with bootstrap intervals and pairwise team-draft win rates")
    store_options(credit)
    bootstrap_options(credit)
    credit.set_defaults(handler=lambda args: _run_serving(
        args, "credit", n_bootstrap=args.bootstrap, seed=args.bootstrap_seed))

    holdout = commands.add_parser(
        "holdout", help="compare the reward rate of the policy-served decisions with the "
        "held-out ones (served by the baseline) on the live log, with bootstrap intervals")
    store_options(holdout)
    bootstrap_options(holdout)
    holdout.set_defaults(handler=lambda args: _run_serving(
        args, "holdout", n_bootstrap=args.bootstrap, seed=args.bootstrap_seed))

    rebuild = commands.add_parser(
        "rebuild-state", help="replay the log: re-derive every outcome, the pulls, the ratings "
        "and the policy's fold; compare with the store (exit 1 if they differ)")
    store_options(rebuild)
    running_service_options(rebuild, "compare with")
    rebuild.set_defaults(handler=lambda args: _run_serving(args, "rebuild-state"))

    purge = commands.add_parser(
        "purge", help="delete the raw log before DATE (older than the retention window), "
        "keeping a fold snapshot so that rebuild-state and every worker stay exact")
    purge.add_argument("--before", required=True, metavar="DATE",
                       help="a date (2026-09-01) or date-time, its seconds and zone optional "
                       "(2026-09-01T12:00, 2026-09-01T12:00:00+02:00; UTC unless it says "
                       "otherwise), at most now minus retention_s (90 days by default)")
    purge.add_argument("--dry-run", action="store_true",
                       help="count what would be deleted; delete nothing")
    store_options(purge)
    purge.set_defaults(handler=lambda args: _run_serving(
        args, "purge", before=args.before, dry_run=args.dry_run))

    shadow = commands.add_parser(
        "shadow", help="shadow mode: the candidate policy logged beside the live one (status) "
        "and its promotion to live policy (promote)")
    actions = shadow.add_subparsers(dest="shadow_command", required=True, metavar="ACTION")
    status = actions.add_parser("status", help="the live and shadow policies in force, the "
                                "latest promotion, the decisions with a shadow record")
    store_options(status)
    running_service_options(status, "check against")  # (it had no --port: attack)
    status.set_defaults(handler=lambda args: _run_serving(args, "shadow status",
                                                                 "shadow_status"))
    promote = actions.add_parser("promote", help="make the shadow policy the live one on "
                                 "every worker within one refresh interval (recorded in the "
                                 "store: it overrides the settings' policy)")
    store_options(promote)
    running_service_options(promote, "check against")
    promote.set_defaults(handler=lambda args: _run_serving(args, "shadow promote",
                                                                  "shadow_promote"))

    ope = commands.add_parser(
        "ope", help="off-policy evaluation of the decision log: IPS, SNIPS and doubly robust "
        "estimates of candidate policies with bootstrap intervals")
    log = ope.add_argument_group("the service's log (the default source)")
    obd = ope.add_argument_group("the Open Bandit Dataset (--obd)")
    log.add_argument("--db", metavar="URL", help="SQLAlchemy URL of the store (default: the "
                     "service's, from RECBANDITS_* variables)")
    log.add_argument("--state-dir", help="the service's state folder, whose SQLite store is "
                     "read, as the other commands take it (default: the settings')")
    log.add_argument("--out", metavar="DIR", help="folder for ope.csv and summary.json, or "
                     "shadow.csv with --shadow (default runs/ope-<timestamp>)")
    ope.add_argument("--bootstrap", type=_integer, default=DEFAULT_N_BOOTSTRAP, metavar="N",
                     help=f"bootstrap resamples, {BOOTSTRAP_RANGE} (default "
                     "%(default)s)")
    ope.add_argument("--seed", type=_integer, default=0, metavar="S", help="bootstrap seed")
    # The candidates are the log's too (refused with --obd), and --shadow replaces them.
    candidates = ope.add_argument_group("the candidate policies (the service's log; not with "
                                        "--shadow)")
    candidates.add_argument("--ts-prior", action="append", metavar="ALPHA,BETA",
                            help="Beta prior of a Thompson Sampling candidate (repeatable; "
                            "default 1,1 1,19 20,20)")
    candidates.add_argument("--linear", action="append", metavar="NAME:KEY=VALUE,...",
                            help="a contextual candidate, e.g. LinTS:scale=0.5,ridge=1 or "
                            "LinUCB:alpha=1 (repeatable; default LinTS:scale=1,ridge=1 "
                            "LinTS:scale=0.25,ridge=1 LinTS:scale=0.5,ridge=10 "
                            "LinUCB:alpha=0.5,ridge=1 LinUCB:alpha=0,ridge=1)")
    log.add_argument("--include-open", action="store_true",
                     help="also count decisions whose reward window (1800 s by default) is "
                     "still open, with the feedback they have so far")
    log.add_argument("--export-csv", metavar="PATH", help="also write the log as CSV")
    log.add_argument("--export-obp", metavar="PATH",
                     help="also write the log in Open Bandit Pipeline's layout (.npz)")
    log.add_argument("--shadow", action="store_true", help="instead of the candidates: the "
                     "logged shadow policy (serve --shadow-policy) on exactly the decisions "
                     "that carry its record, beside the live policy's on-policy value on the "
                     "same decisions, with the paired difference")
    ope.add_argument("--obd", action="store_true", help="instead of the service's log: "
                     "evaluate the Open Bandit Dataset's random policy from its Thompson "
                     "Sampling log and vice versa, against their on-policy click rates")
    obd.add_argument("--campaign", choices=("all", "men", "women"),
                     help="with --obd: one campaign (default: all three)")
    obd.add_argument("--data", metavar="DIR", help="with --obd: folder holding the OBD tree "
                     "(default: the sample in RECBANDITS_DATA/obd)")
    obd.add_argument("--full", action="store_true", help="with --obd: the full dataset, "
                     "downloaded once into the user cache")
    # Each group's options are refused with the other source, the candidates' with --shadow
    # too (_ope_options_clash).
    chosen = tuple(a.dest for a in candidates._group_actions)
    ope.set_defaults(handler=_ope,
                     ope_groups=(tuple(a.dest for a in log._group_actions) + chosen,
                                 tuple(a.dest for a in obd._group_actions), chosen))


class _Version(argparse.Action):
    """``--version``: ``recbandits <version>`` (the installed package's,
    :func:`experiments.config.package_version`, read only when asked), exit 0 (review: it was
    refused as a missing COMMAND).
    """

    def __init__(self, option_strings: Sequence[str], dest: str, **kwargs: object) -> None:
        super().__init__(option_strings, dest, nargs=0, default=argparse.SUPPRESS,
                         help=cast("str | None", kwargs.get("help")))

    def __call__(self, parser: argparse.ArgumentParser, namespace: argparse.Namespace,
                 values: object, option_string: str | None = None) -> None:
        from experiments.config import package_version

        print(f"{parser.prog} {package_version()}")  # on stdout, as argparse's own version
        parser.exit(0)


class _Parser(argparse.ArgumentParser):
    """argparse's parser (and its sub-commands'), whose refusals are one line, as every other
    refusal of bad input (README): ``recbandits simulate: argument --workers: invalid int
    value: 'abc' (see recbandits simulate --help)``, exit 2, not argparse's usage block
    before it (found by attack). Its refusal of an option given no value says how to give a
    value that starts with '-': argparse reads ``--ts-prior -1,1`` as two options and said
    only "expected one argument" (found by attack).
    """

    _argv: tuple[str, ...] = ()

    def parse_known_args(self, args: Sequence[str] | None = None,  # type: ignore[override]
                         namespace: argparse.Namespace | None = None
                         ) -> tuple[argparse.Namespace, list[str]]:
        """argparse's, keeping the words parsed (each sub-command's parser gets its own)."""
        self._argv = tuple(sys.argv[1:] if args is None else args)
        return super().parse_known_args(args, namespace)

    def parse_args(self, args: Sequence[str] | None = None,  # type: ignore[override]
                   namespace: argparse.Namespace | None = None) -> argparse.Namespace:
        """argparse's, with words no parser took refused by the sub-command given (review:
        ``simulate fixed_ctr --bogus`` was refused as ``recbandits: ...`` pointing to
        ``recbandits --help``, as argparse's parse_args refuses them on the top parser).
        """
        parsed, unrecognized = self.parse_known_args(args, namespace)
        if unrecognized:
            self._chosen(parsed).error(f"unrecognized arguments: {' '.join(unrecognized)}")
        return parsed

    def _chosen(self, parsed: argparse.Namespace) -> argparse.ArgumentParser:
        """The deepest sub-command's parser that ``parsed`` names (this one when none)."""
        for action in self._actions:
            if isinstance(action, argparse._SubParsersAction):
                name = getattr(parsed, action.dest, None)
                chosen = action.choices.get(name) if name is not None else None
                if chosen is not None:
                    return chosen._chosen(parsed) if isinstance(chosen, _Parser) else chosen
        return self

    def error(self, message: str) -> NoReturn:
        """Exit 2 with ``message`` on stderr in one line naming the command and its
        ``--help``, with the advice added where the option was followed by a word starting
        with '-' (review: it was added to an option that was only the last word, given no
        value at all).
        """
        if message.endswith("expected one argument"):
            option = message.removeprefix("argument ").split(":")[0].split("/")[-1]
            words = self._argv
            if any(option.startswith(word) and len(word) > 2 and n + 1 < len(words)
                   and words[n + 1].startswith("-") for n, word in enumerate(words)):
                message += f" (a value that starts with '-' is written {option}=VALUE)"
        self.exit(2, f"{self.prog}: {message} (see {self.prog} --help)\n")


def build_parser() -> argparse.ArgumentParser:
    """The ``recbandits`` argument parser, one sub-command per handler."""
    parser = _Parser(
        prog="recbandits",
        description="Learn which recommender to trust: recommenders as the arms of a bandit.",
    )
    parser.add_argument("-v", "--verbose", action="store_true",
                        help="log at INFO level, and show the traceback of an input refused by "
                        "an error, or of missing data, before its one line (the exit status "
                        "stays 2; a refusal the command says itself has none)")
    parser.add_argument("--version", action=_Version, help="print the version and exit")
    commands = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")

    evaluate = commands.add_parser(
        "evaluate-arms", help="offline evaluation of the arms on MovieLens (100K by default)"
    )
    evaluate.add_argument("--data", help="folder holding ml-100k/, ml-1m/, ... (default: "
                          "RECBANDITS_DATA, the user cache, else download)")
    evaluate.add_argument("--out", default=None, help="folder for metrics.csv "
                          "(default: runs/evaluate-arms-<timestamp>)")
    evaluate.add_argument("--seeds", type=_integer, default=3,
                          help="split seeds averaged for the random protocol (default 3)")
    evaluate.add_argument("--arms", default=None, help="comma-separated arms to evaluate "
                          "(default: svd,sequential,autoencoder,popularity,random; also: dae; "
                          "'ease' is the deprecated name of autoencoder)")
    evaluate.add_argument("--no-tune", action="store_true",
                          help="skip tuning on validation splits; use each arm's defaults")
    source = evaluate.add_mutually_exclusive_group()
    source.add_argument("--dataset", choices=MOVIELENS_NAMES, default="movielens",
                        help="MovieLens release (default movielens, i.e. ml-100k); ml-1m to "
                        "ml-32m are downloaded once into the user cache")
    source.add_argument("--synthetic", type=_integer, default=None, metavar="N_RATINGS",
                        help="evaluate on a synthetic dataset of N_RATINGS instead of MovieLens")
    evaluate.add_argument("--jobs", type=_integer, default=2,
                          help="worker processes fitting arms side by side (default 2)")
    evaluate.set_defaults(handler=_evaluate_arms)

    simulate = commands.add_parser(
        "simulate", help="run bandit policies on an environment and report regret and plots"
    )
    simulate.add_argument("config", nargs="?", default="movielens",
                          help="a TOML file, or the name of a shipped config (fixed_ctr, "
                          "movielens, movielens_drift); default movielens")
    simulate.add_argument("--data", help="folder holding ml-100k/, ml-1m/, ... for the "
                          "MovieLens environments (default: RECBANDITS_DATA, the user cache, "
                          "else download)")
    simulate.add_argument("--env", help="environment id, overriding the config's")
    simulate.add_argument("--dataset", choices=DATASETS,
                          help="the environment's dataset, overriding the config's "
                          "[env.params] dataset (movielens is ml-100k)")
    simulate.add_argument("--policies", nargs="+", metavar="POLICY",
                          help="labels or ids of the config's policies to run, or policy ids")
    simulate.add_argument("--horizon", type=_integer, metavar="T", help="steps per run")
    simulate.add_argument("--runs", type=_integer, metavar="R", help="runs per policy")
    simulate.add_argument("--seed", type=_integer, metavar="S", help="root seed")
    simulate.add_argument("--out", metavar="DIR",
                          help="output folder (default runs/<config>-<timestamp>)")
    simulate.add_argument("--executor", choices=("local", "dask"),
                          help="local processes (joblib, default) or a Dask cluster")
    simulate.add_argument("--scheduler", metavar="ADDRESS",
                          help="Dask scheduler address, e.g. tcp://host:8786 (implies "
                          "--executor dask; without it dask starts a LocalCluster)")
    simulate.add_argument("--workers", type=_integer, metavar="N",
                          help="worker processes (default: every core)")
    simulate.add_argument("--no-plots", action="store_true", help="write the tables only")
    simulate.add_argument("-q", "--quiet", action="store_true", help="no progress bar")
    simulate.set_defaults(handler=_simulate)
    _add_replay(commands)
    _add_serving_commands(commands)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    """Run the ``recbandits`` command line.

    Parameters
    ----------
    argv : sequence of str or None, default None
        Arguments without the program name; None reads ``sys.argv``.

    Returns
    -------
    int
        Exit status: the handler's, 2 when the data is unavailable or a path or store given
        cannot be used, 3 (:data:`serving.errors.STORE_UNAVAILABLE_EXIT`) when the store is
        down, 130 on Ctrl-C,
        141 (:data:`BROKEN_PIPE`) when the reader of the output closed it.
    """
    parser = build_parser()
    args = parser.parse_args(argv)
    with warnings.catch_warnings():  # the way warnings are shown, for this run only
        if not args.verbose:  # -v: Python's own, with the category and the source line
            warnings.showwarning = _one_line_warning(_command_of(args))
        return _main(args)


def _one_line_warning(command: str) -> Callable[..., None]:
    """A ``warnings.showwarning`` saying a warning in one line, as every refusal is (found by
    attack: a deprecated arm name printed Python's two lines, the source line included).
    """
    def show(message: Warning | str, category: type[Warning], *_: object, **__: object) -> None:
        print(f"recbandits {command}: warning: {message}", file=sys.stderr)
    return show


def _main(args: argparse.Namespace) -> int:
    """:func:`main` once ``args`` are parsed."""
    logging.basicConfig(
        level=logging.INFO if args.verbose else logging.WARNING,
        format="%(levelname)s %(name)s: %(message)s",
    )
    handler: Handler = args.handler
    out = getattr(args, "out", None)
    refused = _out_refusal(out, _run_files(args) if out is not None else ()) or next(
        (said for option, name in (("--export-csv", "export_csv"), ("--export-obp", "export_obp"))
         if (said := _file_refusal(option, getattr(args, name, None))) is not None), None)
    if refused is not None:
        print(f"recbandits {_command_of(args)}: {refused}", file=sys.stderr)
        return 2
    try:
        status = handler(args)
        sys.stdout.flush()  # here, where a closed pipe is caught, not at the interpreter's exit
        return status
    except (DataUnavailableError, DataFileError) as exc:  # absent, or not what it says
        _traceback_if_verbose(args)
        print(f"recbandits {_command_of(args)}: {exc}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print("recbandits: interrupted", file=sys.stderr)
        return 130
    except BrokenPipeError:  # the reader went away (``| head``): stop quietly, as ``seq`` does
        _stdout_to_devnull()
        return BROKEN_PIPE
    except Exception as exc:
        refused = _store_refused(exc)
        if refused is not None:  # the URL's mistake, not an outage: no "retry later"
            print(f"recbandits {_command_of(args)}: {refused}", file=sys.stderr)
            return 2
        outage = _store_outage(exc)
        if outage is not None:
            # One line, not the driver's traceback (found by attack: 130-143 lines), and its
            # own status: rebuild-state's 1 means "match: NO".
            print(f"recbandits {_command_of(args)}: {outage}", file=sys.stderr)
            from serving.errors import STORE_UNAVAILABLE_EXIT  # imported with the store

            return STORE_UNAVAILABLE_EXIT
        refusal = _input_refusal(exc, args)
        if refusal is None:
            raise
        _traceback_if_verbose(args)
        print(f"recbandits {_command_of(args)}: {refusal}", file=sys.stderr)
        return 2


def _command_of(args: argparse.Namespace) -> str:
    """The command as its refusals name it: ``shadow status``, not ``shadow`` (a refusal in
    ``main`` said one, the command's own the other: found by attack).
    """
    action = getattr(args, "shadow_command", None)
    return f"{args.command} {action}" if action else str(args.command)


def _traceback_if_verbose(args: argparse.Namespace) -> None:
    """With ``-v``, the traceback of the exception being handled, on stderr, before its one
    line: the output grows, the exit status stays the refusal's 2 (re-raising made it 1,
    found by a README check).
    """
    if args.verbose:
        traceback.print_exc()


#: Exit status when the reader of the output closed it (``| head``): 128 + SIGPIPE, what a
#: program killed by that signal reports.
BROKEN_PIPE = 141


def _stdout_to_devnull() -> None:
    """Point standard output at ``/dev/null``, so that the flush at exit of what is still
    buffered does not raise a second ``BrokenPipeError`` (the recipe of Python's
    ``signal`` documentation); a traceback was printed (found by a README check).
    """
    with contextlib.suppress(OSError, ValueError, AttributeError):  # no file descriptor
        devnull = os.open(os.devnull, os.O_WRONLY)
        os.dup2(devnull, sys.stdout.fileno())
        os.close(devnull)


#: The module whose ``RUN_FILES`` names what each command writes into ``--out``.
_RUN_FILES_OF = {"simulate": "experiments.simulate", "replay": "experiments.replay",
                 "evaluate-arms": "experiments.evaluate_arms", "ope": "serving.offpolicy"}


def _run_files(args: argparse.Namespace) -> tuple[str, ...]:
    """The file names the command of ``args`` writes into ``--out`` (its module's
    ``RUN_FILES``; ``ope``'s shadow table only with ``--shadow``).
    """
    module = _RUN_FILES_OF.get(args.command)
    if module is None:
        return ()
    if args.command == "ope":  # the run's own list: the shadow table, or the table and summary
        from serving import offpolicy

        return tuple(offpolicy.out_files(getattr(args, "shadow", False)).values())
    files = importlib.import_module(module).RUN_FILES
    return tuple(files.values() if isinstance(files, dict) else files)


def _out_refusal(path: str | None, names: Sequence[str] = ()) -> str | None:
    """Why the folder ``path`` (``--out``) could not be written, or None: checked before a run
    that may take minutes (the run makes the folder, and writes the files ``names``).

    Found by attack: ``replay`` and ``evaluate-arms`` learned after a whole run (30 s, or
    hours on a large dataset) that a file of theirs was a folder there; and as root, whom
    ``os.access`` lets write anywhere, ``--out /proc/x/y`` passed and ended in a traceback.
    So the nearest existing folder is tried for real: a folder made in it and removed.
    """
    if path is None:
        return None
    if not path.strip():  # simulate wrote into the working folder, ope into its default
        return "--out '': give a folder"
    target = os.path.abspath(path)
    if os.path.exists(target) and not os.path.isdir(target):
        return f"--out {path!r} is a file, not a folder"
    for name in names:
        if os.path.isdir(os.path.join(target, name)):
            return (f"--out {path!r}: {os.path.join(path, name)!r} is a folder, where the run "
                    "writes a file")
    ancestor = target
    while not os.path.exists(ancestor):
        ancestor = os.path.dirname(ancestor)
    if not os.path.isdir(ancestor):
        return f"--out {path!r} lies under the file {ancestor!r}"
    try:
        os.rmdir(tempfile.mkdtemp(prefix=".recbandits-out-", dir=ancestor))
    except OSError as exc:
        return f"--out {path!r}: nothing can be written in {ancestor!r} ({exc.strerror or exc})"
    return None


def _file_refusal(option: str, path: str | None) -> str | None:
    """Why the file ``path`` (``--export-csv``, ``--export-obp``) could not be written, or
    None: checked before the run, as ``--out`` (they were found after it had written its
    table, found by attack). An existing file is opened for appending, which changes nothing
    in it: permission bits, an immutable file or a read-only mount refuse that as they refuse
    the export (found by a README check: a file ``chattr +i`` failed the export after the run
    had written its ``--out``; ``os.access`` lets root pass where the write fails).
    """
    if path is None:
        return None
    if not path.strip():
        return f"{option} '': give a file"
    if os.path.isdir(path):
        return f"{option} {path!r} is a folder, not a file"
    folder = _out_refusal(os.path.dirname(os.path.abspath(path)))
    if folder is not None:
        return folder.replace("--out", option, 1)
    # A regular file only: opening a FIFO for writing waits for a reader and then sends it
    # an end of file (found in review: ope hung on one), and a device is left to the run.
    if os.path.isfile(path):
        try:
            open(path, "ab").close()
        except OSError as exc:
            return f"{option} {path!r} cannot be written ({exc.strerror or exc})"
    return None


def _input_refusal(exc: Exception, args: argparse.Namespace) -> str | None:
    """One line for an error of what the user pointed the command at, or None for any other
    (a bug keeps its traceback; found by review: any file error or database error had become
    one line, hiding internal faults).

    A path the user gave that cannot be written or read (``--out`` naming a file, a folder
    under a file, a read-only place; found by attack: a traceback from each command that
    writes), any file the user is denied (``PermissionError``), and a store file that is not a
    database. ``-v`` shows the traceback before it.
    """
    if isinstance(exc, OSError) and exc.filename is not None and (
            _given(args, exc.filename) or isinstance(exc, PermissionError)):
        # A file denied to the user is theirs to grant wherever it lies (the arms folder a
        # store names, made by the service's user, mode 700; found by attack: rebuild-state
        # run by another user ended in a traceback); ``-v`` shows where it came from.
        return f"{exc.strerror or exc}: {exc.filename}"
    store = sys.modules.get("serving.store")  # imported by every command that opens one
    unreadable = None if store is None else store.unreadable_database(exc)
    if unreadable is not None:
        return f"the store cannot be read: {unreadable}"
    return None


def _given(args: argparse.Namespace, filename: object) -> bool:
    """Whether ``filename`` is, or lies under, a path given on the command line (``--out``,
    ``--export-csv``, ``--export-obp``, ``--data``, ``--state-dir``, ``--db``'s file).
    """
    paths = [getattr(args, name, None) for name in
             ("out", "export_csv", "export_obp", "data", "state_dir")]
    db = getattr(args, "db", None)
    if isinstance(db, str):  # a store URL's file (an SQLite one's, whatever its driver)
        from serving.store import database_file

        paths.append(database_file(db))
    target = os.path.abspath(os.fsdecode(filename))  # type: ignore[arg-type]  # str or bytes
    for path in (os.path.abspath(p) for p in paths if isinstance(p, str)):
        # Under it, or a missing folder above it that making it failed on (--out /proc/x/y:
        # found by attack, a traceback on '/proc/x'; an existing one is not the user's).
        if target == path or target.startswith(path.rstrip(os.sep) + os.sep) or (
                path.startswith(target.rstrip(os.sep) + os.sep) and not os.path.exists(target)):
            return True
    return False


def _store_refused(exc: Exception) -> str | None:
    """What to say of the server's refusal of the store URL's user, password or database in
    ``exc`` (:func:`serving.store.errors.refused_connection`), None for any other error.
    """
    errors = sys.modules.get("serving.store.errors")
    if errors is None:  # no store was opened
        return None
    reason = errors.refused_connection(exc)
    return None if reason is None else errors.refused_message(reason)


def _store_outage(exc: Exception) -> Exception | None:
    """The store's outage error for ``exc`` (:func:`serving.store.errors.store_unavailable`,
    the one rule of which database errors are outages), None for any other error. Only a
    command that opened a store can have one: nothing is imported for the others.
    """
    errors = sys.modules.get("serving.store.errors")
    return None if errors is None else errors.store_unavailable(exc)


if __name__ == "__main__":
    sys.exit(main())
