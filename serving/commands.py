"""What the ``recbandits serve``, ``retrain``, ``models``, ``rebuild-state``, ``purge``,
``credit``, ``holdout`` and ``shadow status`` / ``shadow promote`` commands do.

The CLI (:mod:`experiments.cli`) only parses options into :class:`~serving.settings.Settings`,
calls these and prints. Each command but ``serve`` has the shape of ``simulate``: it returns a
results dataclass of :mod:`serving.results` (``str()`` is its report, ``exit_code`` its status)
and prints nothing; a refusal raises ``ValueError`` (a bad value) or
:class:`~serving.results.CommandError` (nothing done, with its exit status). ``serve`` runs the
server until it stops and returns its exit status.
"""

from __future__ import annotations

import contextlib
import copy
import dataclasses
import errno
import json
import logging
import math
import os
import shutil
import signal
import socket
import sys
import tempfile
import threading
import time
from collections.abc import Callable, Iterator, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, TypeVar

import httpx2
import uvicorn
from pydantic import ValidationError
from uvicorn.config import LOG_LEVELS, STARTUP_FAILURE
from uvicorn.supervisors.multiprocess import Multiprocess

from arms.base import Recommender
from arms.data import SYNTHETIC, load_movielens, make_synthetic
from arms.data.dataset import Dataset
from bandits.base import registered_policies
from bandits.ope import DEFAULT_N_BOOTSTRAP
from serving import multileave, shadow, versions
from serving.armset import (
    ArmSet,
    arms_folder,
    arms_lock,
    fit_arms,
    load_arms,
    make_arm,
    missing_arms,
    new_arms_folder,
    params_differ,
    recorded_arms_dir,
    refit_like,
    save_arms,
)
from serving.drift import check_replay
from serving.errors import (
    STORE_UNAVAILABLE_EXIT,
    RetrainBusyError,
    StoreUnavailableError,
    check_bootstrap,
    check_bootstrap_seed,
)
from serving.errors import iso_time as _iso
from serving.holdout import check_decisions, holdout_report
from serving.live import arm_bytes, arm_from_bytes, fold_live_arms, fold_models, state_digest
from serving.multileave import credit_report, slate_clicks
from serving.policy import PolicyModel, policy_identity, said_policy
from serving.replay import (
    DecisionRow,
    FeedbackRow,
    LogCheck,
    OutcomeRow,
    check_log,
    fold_policy,
    kept_ratings,
)
from serving.results import (
    ArmCheck,
    CommandError,
    CreditResults,
    HoldoutResults,
    LiveArmCheck,
    NothingToDo,
    PurgeResults,
    PurgeSnapshot,
    RebuildStateResults,
    ShadowStatusResults,
    SnapshotInfo,
)
from serving.retrain_trigger import hold_retrain_lease
from serving.schemas import TimestampShapeError, read_timestamp
from serving.settings import (
    Settings,
    arm_not_served,
    arms_unchecked,
    http_url,
    say_seconds,
    settings_issues,
)
from serving.store import Outcome, Store, open_store, store_class_of
from serving.store.errors import (
    StoreAccessError,
    StoreNotFoundError,
    refused_connection,
    refused_message,
    store_unavailable,
)
from serving.store.types import (
    FoldSnapshot,
    JsonObject,
    LatestDecision,
    LogRows,
    PolicyMeta,
    VersionSwitch,
)
from serving.versions import ModelsResult, RetrainResult

logger = logging.getLogger(__name__)
T = TypeVar("T")


def load_catalog(settings: Settings) -> Dataset:
    """The base training data named by ``settings.dataset``."""
    if settings.dataset == SYNTHETIC:
        return make_synthetic(settings.synthetic_users, settings.synthetic_items,
                              settings.synthetic_ratings, random_state=settings.seed or 0)
    return load_movielens(settings.data, variant=settings.dataset)


@dataclass
class Resources:
    """What a serving command works on: the open ``store``, the ``catalog``, the ``arm_set``
    and the ``settings`` in force (a retrain's take the live arms: :func:`served_settings`).
    """

    store: Store
    catalog: Dataset
    arm_set: ArmSet
    settings: Settings


def _nothing_to_gate(store: Store, meta: PolicyMeta | None, folder: Path | None,
                     state_dir: Path) -> str:
    """Why a retrain has no served arms to be gated against (:func:`prepare`)."""
    assert meta is not None  # a retrain of a store serving nothing stopped in _open_for
    return (f"the arms of the served version {meta.version} are missing in {folder} (nor in "
            f"{state_dir / 'arms'}): nothing to gate a retrain against; if another state "
            "folder holds them, pass it as --state-dir ('recbandits serve' fits them again)")


def prepare(settings: Settings, *, catalog: Dataset | None = None,
            arms: Mapping[str, Recommender] | None = None, refit: bool = True) -> Resources:
    """Open the store, and load the current arms (fitting and saving them the first time).

    Parameters
    ----------
    settings : Settings
    catalog : Dataset, optional
        Base data instead of ``load_catalog(settings)``.
    arms : mapping of name to fitted Recommender, optional
        The first version's arms instead of fitting ``settings.arms`` on the catalogue; their
        names must be ``settings.arms``. Ignored once a version is recorded in the store.
    refit : bool, default True
        Fit again (and serve ungated, as a version of kind ``start``) the served arms whose
        hyper-parameters differ from the settings', and those missing from their folder:
        what ``serve`` does at start. False (``retrain``): load the served arms as they are,
        so that the gate compares the settings' arms with them.

    Raises
    ------
    ValueError
        If ``arms`` does not match ``settings.arms``.
    NothingServedError
        ``refit=False`` and no version is served yet (nothing is created).
    CommandError
        ``refit=False`` and the served version's arms are missing from their folder (exit
        code 1; ``serve`` fits them); or the catalogue is not
        the one the store's arms were fitted on (exit code 1;
        :func:`serving.versions.check_catalog`).
    """
    if arms is not None and list(arms) != list(settings.arms):
        raise ValueError(f"arms names {list(arms)} must equal settings.arms {settings.arms}")
    _warn_of_an_old_state_folder(settings)
    if catalog is None and refit:
        # serve reads its data before it makes the store: a start refused for its data made
        # one first (found by a README check). A retrain opens no store: it reads it first.
        logger.info("loading the %s data", settings.dataset)
        catalog = load_catalog(settings)
    store, settings = _open_for(settings, refit=refit)
    settings = _in_the_snapshot_order(settings, store, refuse_another_policy=refit)
    if catalog is None:
        logger.info("loading the %s data", settings.dataset)
        catalog = load_catalog(settings)
    _refuse_another_catalogue(store, catalog)
    state_dir = settings.resolved_state_dir()
    with arms_lock(state_dir):
        meta = store.policy_meta()
        models = None
        folder = None if meta is None else arms_folder(state_dir, meta.arms_dir)
        if (meta is not None and folder is not None
                and not missing_arms(folder, settings.arms)):
            models, meta = _load_served(store, meta, folder, settings, catalog,
                                        refit=refit and arms is None)
        elif not refit:  # a retrain never fits the arms it would be gated against
            store.dispose()
            raise CommandError(_nothing_to_gate(store, meta, folder, state_dir), exit_code=1)
        elif meta is not None:
            _say_why_a_start_fits(store, meta, folder, state_dir, settings.arms)
        elif arms is None:
            logger.info("first start: fitting the arms once (saved under %s for the "
                        "next starts)", state_dir)
        if models is None:
            # The live arms' seeds as of the store's first fit: this one's for a first
            # version, recorded with it so that every later fit uses the same second.
            since = versions.seed_time(store)
            first = since is None
            since = int(time.time()) if since is None else since
            models, fitted = _kept_and_fitted(store, folder, settings, catalog, arms, since)
            data = versions.data_span(catalog, 0, store.log_seq())
            meta = _publish(store, models, state_dir, meta, changed=fitted, settings=settings,
                            data={**data, "seed_time": since} if first else data)
    assert meta is not None  # loaded from it, or just recorded
    # A store from before the versions table gets a row for the version it serves.
    store.ensure_version_row(meta, arms=_arm_params(models), data={},
                             reason="served when the versions table was created")
    if refit:  # a store from before fingerprints: the catalogue its service starts on
        store.adopt_catalog(versions.catalog_fingerprint(catalog))
    arm_set = ArmSet.build(models, catalog, version=meta.version,
                           cold_start_arm=settings.cold_start_arm,
                           cache_size=settings.score_cache_size, added=store.items_after(0))
    return Resources(store, catalog, arm_set, settings)


def _kept_and_fitted(store: Store, folder: Path | None, settings: Settings, catalog: Dataset,
                     given: Mapping[str, Recommender] | None, since: int
                     ) -> tuple[dict[str, Recommender], list[str]]:
    """The settings' arms for a start that must fit some: those of the served version's
    ``folder`` saved with the settings' hyper-parameters kept, the others fitted (all of them
    on a first start); and the names fitted. A start adding one arm refitted every arm (found
    by attack: adding co-occurrence to MovieLens's default arms refitted all four). ``given``
    (a first version's fitted arms) are taken instead, the live ones copied: they fold the
    log in place, and the caller's stay as given. ``since``: the time the live arms' seeds
    are made as of (:func:`serving.versions.seed_time`).
    """
    if given is not None:
        return {n: copy.deepcopy(m) if m.learns_from_stream else m
                for n, m in given.items()}, list(given)
    present = [] if folder is None else [
        n for n in settings.arms if n not in missing_arms(folder, settings.arms)]
    kept = load_arms(folder, present) if folder is not None and present else {}
    # A live arm a fold snapshot holds keeps the snapshot's hyper-parameters (its purged
    # events cannot be folded again): its base is fitted with them, so that the version
    # records what the workers serve (found by attack: it recorded the settings').
    held = _snapshot_arms(store, settings.arms)
    differ = {**other_params({n: m for n, m in kept.items() if n not in held}, settings),
              **{n: d for n, m in kept.items() if n in held
                 and (d := params_differ(m, held[n]))}}
    kept = {n: m for n, m in kept.items() if n not in differ}
    fitted = [n for n in settings.arms if n not in kept]
    new = {**fit_arms([n for n in fitted if n not in held], catalog, seed=settings.seed,
                      params=settings.fit_params(), seed_time=since),
           **refit_like({n: held[n] for n in fitted if n in held}, catalog, seed_time=since)}
    return {n: kept[n] if n in kept else new[n] for n in settings.arms}, fitted


def _snapshot_arms(store: Store, names: Sequence[str]) -> dict[str, Recommender]:
    """The live arms of ``names`` the latest fold snapshot holds (none without one)."""
    fold = store.fold_snapshot(arms=True)
    return {} if fold is None else {n: arm_from_bytes(b) for n, b in fold.arms.items()
                                    if n in names}


def _load_served(store: Store, meta: PolicyMeta, folder: Path, settings: Settings,
                 catalog: Dataset, *, refit: bool) -> tuple[dict[str, Recommender], PolicyMeta]:
    """The settings' arms loaded from the served version's ``folder`` (every one is there),
    and the version served. With ``refit`` (``serve``), those saved with other
    hyper-parameters than the settings give (``arm_params`` changed between two starts) are
    fitted again, as a retrain would fit them, and the arms are published as a new version
    when they changed or are another set than the version's (some of its arms).
    """
    logger.info("loading the arms of policy version %d from %s", meta.version, folder)
    models = load_arms(folder, settings.arms)
    changed = other_params(models, settings) if refit else {}
    # A live arm the latest fold snapshot holds: its events before it are purged, so it cannot
    # be fitted again and fold the log; it keeps its hyper-parameters (the workers say so too)
    # and no version records others it would not serve (found by attack).
    for name in _snapshot_arms(store, list(changed)) if changed else {}:
        logger.warning("a purge's fold snapshot holds the live arm %s: its events before are "
                       "purged, so it keeps its hyper-parameters, not the settings' (%s as "
                       "(kept, asked)); no version is published for them", name,
                       changed.pop(name))
    if changed:
        logger.warning("arms of version %d were fitted with other hyper-parameters than "
                       "the settings give (%s); fitting those again", meta.version,
                       "; ".join(f"{n}: {d}" for n, d in changed.items()))
        models = {**models, **fit_arms(list(changed), catalog, seed=settings.seed,
                                       params=settings.fit_params(),
                                       seed_time=versions.seed_time(store))}
        meta = _publish(store, models, settings.resolved_state_dir(), meta,
                        changed=list(changed), settings=settings)
    elif refit and _another_arm_set(store, settings.arms):
        # Some of the version's arms, named by the settings: a version of their own, so that
        # the versions table says what is served (it said all of them).
        _say_why_a_start_fits(store, meta, folder, settings.resolved_state_dir(),
                              settings.arms)
        meta = _publish(store, models, settings.resolved_state_dir(), meta, changed=[],
                        settings=settings)
    return models, meta


def _another_arm_set(store: Store, arms: Sequence[str]) -> bool:
    """Whether ``arms`` are another set than the live version's (False before versions)."""
    served = versions.live_arms(store)
    return served is not None and sorted(served[1]) != sorted(arms)


def _say_why_a_start_fits(store: Store, meta: PolicyMeta, folder: Path | None, state_dir: Path,
                          arms: Sequence[str]) -> None:
    """Log why ``serve`` fits ``arms`` at start for a store serving version ``meta``: the
    settings name another arm set (a new version, ungated), or the arms are missing from
    their folder (before, a new arm set was said to be "missing"; found by attack).
    """
    if _another_arm_set(store, arms):
        served = versions.live_arms(store)
        assert served is not None
        logger.warning("the settings name the arms %s, version %d serves %s: serving them as a "
                       "new version at start, those not in its folder fitted (ungated, as a "
                       "start fits; a retrain gates the live arm set only)", list(arms),
                       meta.version, served[1])
    else:
        logger.warning("arms of version %d missing in %s (nor in %s); fitting them again",
                       meta.version, folder, state_dir / "arms")


def _refuse_another_catalogue(store: Store, catalog: Dataset, unchanged: str | None = None
                              ) -> None:
    """Settings loading another catalogue than the store's would fit arms no worker of the
    store can load: exit 1 naming both (:func:`serving.versions.check_catalog`; ``unchanged``:
    what the refusal leaves as it was, when not a fit's "nothing was fitted, recorded or
    served").
    """
    fingerprint = versions.catalog_fingerprint(catalog)
    _as_command_error(store, lambda: versions.check_catalog(
        store, fingerprint, "the arms would be", *(() if unchanged is None else (unchanged,))))


class NothingServedError(Exception):
    """No store, or one that serves no model version yet (its first start stopped between
    the schema and the fit): nothing for a retrain to refit, and nothing is created.
    """


def _open_for(settings: Settings, *, refit: bool) -> tuple[Store, Settings]:
    """The settings' store, its schema made or upgraded, and the settings in force. For a
    retrain (``refit`` False) the store must exist and serve a version, checked first without
    creating anything (a mistyped ``--state-dir`` built a whole store; found by a README
    check), and the retrain fits the live version's arms (:func:`served_settings`: the
    default ``--arms`` were said to be "missing" from the served folder, found by attack).

    Raises
    ------
    NothingServedError
        ``refit`` False and no version is served.
    """
    if not refit:
        try:
            check = open_store(settings.resolved_db_url(), timeout_s=settings.store_timeout_s,
                               create=False)
        except StoreNotFoundError as exc:
            raise NothingServedError(f"{exc} (serve fits and serves the first version)") from None
        try:
            if not check.serves_a_version():
                raise NothingServedError(f"{check.describe()} serves no model version yet "
                                         "(serve fits and serves the first)")
            settings = served_settings(settings, check, "this retrain would fit")
        finally:
            check.dispose()
    store = open_store(settings.resolved_db_url(), timeout_s=settings.store_timeout_s)
    if refit and not settings.named_arms() and store.serves_a_version():
        # serve restarted without --arms serves the live version's arms: the default list
        # replaced them, fitted anew and served ungated (found by attack).
        settings = served_settings(settings, store, "this start would serve")
    store.create_schema(settings.arms, settings.rule_book())
    return store, settings


def _in_the_snapshot_order(settings: Settings, store: Store, *,
                           refuse_another_policy: bool) -> Settings:
    """``settings`` with their arms in the order of the store's latest fold snapshot when they
    are its arms in another order. The snapshot's statistics are in its arms' order and a
    purged log folds further only from it, so a restart with the arms reordered after a purge
    failed to start every worker (``serve`` exit 3); the order is the policy's internal one.
    With ``refuse_another_policy`` (``serve``), settings of another policy or arm set than the
    snapshot's are refused too: :func:`_refuse_what_the_snapshot_cannot_fold`.
    """
    state = _snapshot_policy(store)
    if state is None:
        if refuse_another_policy and store.has_log() and store.fold_snapshot() is not None:
            settings = _refuse_another_than_the_latest_decision(settings, store)
        return settings
    order = list(state.get("arms", []))
    if order != settings.arms and sorted(order) == sorted(settings.arms):
        logger.warning("serving the arms in the order of the log's fold snapshot, %s (the "
                       "settings name %s): a purged log folds further only in its order",
                       order, settings.arms)
        settings = settings.with_arms(order)
    if refuse_another_policy:
        _refuse_what_the_snapshot_cannot_fold(settings, store, state)
    return settings


def _refuse_what_the_snapshot_cannot_fold(settings: Settings, store: Store,
                                          state: JsonObject) -> None:
    """Refuse ``serve`` (exit 2, before anything is fitted) with another policy or arm set than
    the store's latest fold snapshot's policy ``state``: a purged log folds further only under
    that policy (:meth:`serving.policy.PolicyModel.restore`'s check), so every worker failed
    to start on it with a traceback each (found by attack).
    """
    current = shadow.effective(settings, store)  # a promotion names the live policy
    try:
        current.policy_model(state.get("params", {}).get("n_features")).restore(state)
    except ValueError as exc:
        store.dispose()
        raise CommandError(f"{exc} (serve it with the policy and arms of the purge; nothing "
                           "was fitted or served)", exit_code=2) from None


def _refuse_another_than_the_latest_decision(settings: Settings, store: Store) -> Settings:
    """``serve``'s check (:func:`_refuse_what_the_snapshot_cannot_fold`) against a fold
    snapshot that records no policy (one that folded no outcome, stored by an older purge):
    the store's record of its policy and arms is then the latest decision's, as a purge checks
    them (:func:`_refuse_another_policy`). ``settings`` with the arms in the workers' order
    when they are the same set (:func:`_workers_arm_order`).
    """
    order = _workers_arm_order(store)
    if order != settings.arms and sorted(order) == sorted(settings.arms):
        settings = settings.with_arms(order)
    latest = store.latest_decision()
    if latest is None:  # nothing recorded to compare with
        return settings
    current = shadow.effective(settings, store)  # a promotion names the live policy
    try:  # (a contextual policy against a decision without a context: the name differs)
        model = current.policy_model(_replayed_dimension(latest.n_features, current.policy,
                                                         None))
        _refuse_another_policy(model, latest, shadow.latest(store),
                               doing="serve would serve",
                               unchanged="nothing was fitted or served")
    except CommandError:
        store.dispose()
        raise
    return settings


def settings_for_store(build: Callable[..., Settings]) -> Settings:
    """The settings of a command that reads (or serves) a store: ``build()``, or, when that
    fails only because ``arm_params`` names an arm outside the default list and the settings
    name no arms, ``build(arms=...)`` with the arms of the store's live version. The store is
    the truth about the arms it serves (:func:`served_settings`): a settings file with values
    for the co-occurrence arm needed ``--arms`` beside it for every command that read the
    service's store.

    Parameters
    ----------
    build : callable
        The settings from the command line, its settings file and the environment, with
        keyword overrides (``arms``).

    Raises
    ------
    pydantic.ValidationError
        ``build()``'s own error when the settings name their arms, name none and no store
        with a live version is where they point, or fail another check (that one's error).
    """
    try:
        return build()
    except ValidationError as exc:
        if not arm_not_served(exc):
            raise
        with arms_unchecked():
            probe = build()  # another invalid setting: its own error
        if probe.named_arms():
            raise
        try:
            store = open_store(probe.resolved_db_url(), timeout_s=probe.store_timeout_s,
                               create=False)
        except (StoreNotFoundError, StoreUnavailableError):
            raise exc from None
        try:
            served = versions.live_arms(store)
        except StoreUnavailableError:
            raise exc from None
        finally:
            store.dispose()
        if served is None:
            raise
    return build(arms=served[1])


def served_settings(settings: Settings, store: Store, what: str,
                    why: tuple[str, str] = versions.UNLOADABLE) -> Settings:
    """The settings a command that reads ``store`` runs with: the store is the truth about
    the arms it serves. Settings that name no arms (the default list, not the service's) take
    the live version's; settings that name others are refused; either way the arms are in
    the order of the workers' policy statistics (:func:`_workers_arm_order`).

    Found in review: ``purge`` with the default ``--arms`` against a store of three arms
    deleted the log and stored a fold snapshot of a four-arm policy, after which
    ``rebuild-state`` failed; and every command had to be given the service's ``--arms``.

    Parameters
    ----------
    settings : Settings
    store : Store
    what : str
        What the command would do, for the refusal (:func:`serving.versions.check_arm_set`).
    why : (str, str)
        The refusal's consequence and alternative (``check_arm_set``'s).

    Raises
    ------
    CommandError
        (exit code 2, nothing done) The settings name other arms than the live version's, or
        a setting does not fit the live arms (``arm_params`` of an arm not served, ...).
    """
    served = versions.live_arms(store)
    if served is None:
        return settings
    version, arms = served
    # The workers' order (that of their policy's statistics), which a restart with the same
    # arms reordered changes without a new version.
    order = _workers_arm_order(store)
    if settings.named_arms():
        try:
            versions.check_arm_set(store, settings.arms, what, why, order)
        except versions.ModelsError as exc:
            raise CommandError(exc.message, exit_code=2) from None
    # Named or not, the order is the workers' (the policy's own; found by attack: a purge
    # with the service's arms in another order wrote a snapshot no worker could restore).
    arms = order if sorted(order) == sorted(arms) else arms
    if arms == settings.arms:
        return settings
    try:
        return settings.with_arms(arms)
    except ValidationError as exc:
        issues = settings_issues(exc).removeprefix("settings: ")  # the model's own checks
        raise CommandError(f"the live version {version} serves the arms {arms}, which the "
                           f"settings do not fit: {issues}", exit_code=2) from None


def _workers_arm_order(store: Store) -> list[str]:
    """The arms in the order of the workers' policy statistics: that of the latest decision's
    probabilities, else (every decision purged) that of the latest fold snapshot's policy;
    empty when the store holds neither.
    """
    if not store.has_log():
        return []
    latest = store.latest_decision()
    if latest is not None and latest.pmf_keys:
        return multileave.policy_arms(latest.pmf_keys)
    state = _snapshot_policy(store)
    return [] if state is None else list(state.get("arms", []))


def _snapshot_policy(store: Store) -> JsonObject | None:
    """The policy state of the store's latest fold snapshot (its ``state_dict``), or None: no
    log, never purged, or a snapshot that records none (:func:`_fold_policy`).
    """
    fold = store.fold_snapshot() if store.has_log() else None
    state = None if fold is None else fold.policy.get("state")
    return state if isinstance(state, dict) else None


def _as_command_error(store: Store, check: Callable[[], None]) -> None:
    """Run ``check``; its refusal (a ModelsError) as the command's (exit 1), the store
    disposed of.
    """
    try:
        check()
    except versions.ModelsError as exc:
        store.dispose()
        raise CommandError(exc.message, exit_code=1) from None


def _publish(store: Store, models: Mapping[str, Recommender], state_dir: Path,
             meta: PolicyMeta | None, *, changed: list[str], settings: Settings,
             data: JsonObject | None = None) -> PolicyMeta:
    """Save ``models`` in a new folder of ``state_dir`` and record them: the first version,
    or the next one after ``meta``'s (``changed``: the arms fitted again, to which the
    posterior carry-over applies; :mod:`serving.versions`).
    """
    served = None if meta is None else versions.live_arms(store)
    folder = recorded_arms_dir(save_arms(models, new_arms_folder(state_dir)))
    if meta is None:
        return store.init_policy_meta(folder, arms=_arm_params(models), data=data)
    if served is not None and _another_arm_set(store, list(models)):
        # Said as it is: "arm_params changed" was recorded for a new arm set (found by attack).
        reason = f"the arm set changed at start: {served[1]} -> {list(models)}" + (
            f"; fitted at start with the settings' hyper-parameters: {changed}"
            if changed else "")
        why = "arm set changed"
    else:
        reason, why = (f"fitted again at start with the settings' hyper-parameters: {changed}",
                       "arm_params changed")
    row = store.serve_version(
        kind="start", arms_dir=folder, arms=_arm_params(models), data=data or {}, gate=None,
        reason=reason, changed_arms=[n for n in changed if not models[n].learns_from_stream],
        carryover=versions.carryover_of(settings),
        retire_reason=f"replaced by version {{version}} ({why})")
    return PolicyMeta(row.version, folder)


def _arm_params(models: Mapping[str, Recommender]) -> JsonObject:
    """Every arm's hyper-parameters as the versions table records them."""
    return {n: versions.arm_spec(n, m) for n, m in models.items()}


def other_params(models: Mapping[str, Recommender], settings: Settings
                 ) -> dict[str, dict[str, tuple[object, object]]]:
    """Per arm of ``models`` fitted with other hyper-parameters than ``settings`` give it
    (``arm_params`` over the registry's defaults): ``{parameter: (fitted with, asked for)}``.
    The seed (``random_state``) is left out: a new seed alone does not refit saved arms.
    """
    out: dict[str, dict[str, tuple[object, object]]] = {}
    for name, model in models.items():
        wanted = make_arm(name, seed=settings.seed, **settings.fit_params().get(name, {}))
        if differ := params_differ(model, wanted):
            out[name] = differ
    return out


def _warn_of_an_old_state_folder(settings: Settings) -> None:
    """Say where an earlier recbandits' state is, if the default folder moved away from it
    (until issue 14 the default was ``<data>/serving``; a new default starts a new store).
    """
    if settings.state_dir is not None or settings.db or settings.data is None:
        return
    old = Path(settings.data) / "serving"
    if (old / "recbandits.db").is_file() and old != settings.resolved_state_dir():
        logger.warning("the state folder is now %s; an earlier recbandits kept its store and "
                       "arms in %s: pass --state-dir %s to keep using them",
                       settings.resolved_state_dir(), old, old)


#: The loggers whose INFO lines show a command's start-up progress (see progress_on_stderr).
PROGRESS_LOGGERS = ("serving.commands", "serving.armset")


@contextlib.contextmanager
def progress_on_stderr() -> Iterator[None]:
    """Show the start-up's progress on stderr whatever the log level: the data loading, each
    arm's fit with its time, the arms loaded (a first ``serve`` on MovieLens fits for ~20 s and
    would otherwise print nothing until it listens).

    The INFO lines of :data:`PROGRESS_LOGGERS` go to stderr as ``recbandits: <message>`` inside
    the block (not to the root logger too, so ``-v`` prints them once); the loggers' levels and
    handlers are restored on exit.
    """
    handler = logging.StreamHandler(sys.stderr)
    handler.setFormatter(logging.Formatter("recbandits: %(message)s"))
    loggers = [logging.getLogger(name) for name in PROGRESS_LOGGERS]
    saved = [(log.level, log.propagate) for log in loggers]
    for log in loggers:
        log.addHandler(handler)
        log.setLevel(logging.INFO)
        log.propagate = False
    try:
        yield
    finally:
        for log, (level, propagate) in zip(loggers, saved, strict=True):
            log.removeHandler(handler)
            log.setLevel(level)
            log.propagate = propagate


def until_the_store_answers(settings: Settings, start: Callable[[], T]) -> T:
    """``start()``, tried again while the store is unavailable (locked, or its server down),
    for up to ``settings.startup_timeout_s``; the last :class:`StoreUnavailableError` past it.

    What ``serve`` does before it forks the workers, and what each worker does at its start
    (:func:`serving.app.create_app`, in a thread): a worker that fails to start makes uvicorn
    stop every worker, and a ``serve`` that failed at once while another process held SQLite's
    lock exited after the store's time-out (found by attack), so both wait for the store
    instead.

    Parameters
    ----------
    settings : Settings
        Its ``startup_timeout_s`` bounds the wait.
    start : callable
        What to try (no arguments); its result is returned.
    """
    deadline = time.monotonic() + settings.startup_timeout_s
    delay = 0.25
    while True:
        try:
            return start()
        except Exception as exc:
            refused = refused_connection(exc)
            if refused is not None:  # waiting cannot mend the URL (it waited 120 s)
                raise CommandError(refused_message(refused), exit_code=2) from None
            if isinstance(exc, StoreAccessError):  # nor grant the user's access (a traceback)
                raise CommandError(str(exc), exit_code=2) from None
            # The one rule of outages, also for an error the store raised unwrapped (a
            # connection refused while opening it was not tried again: found in review)
            outage = store_unavailable(exc)
            if outage is None:
                raise
            if time.monotonic() + delay > deadline:
                raise outage from exc
            logger.warning("the store is unavailable at start (%s); trying again in %.2g s",
                           outage.message, delay)
            time.sleep(delay)
            delay = min(2 * delay, 5.0)


def serve(settings: Settings) -> int:
    """Prepare the store and arms once (waiting for the store as
    :func:`until_the_store_answers` does), then run uvicorn with ``settings.workers`` workers.

    Each worker enforces the connection limits of ``settings`` (header size and time-out, body
    and keep-alive time-outs, requests in flight; see :mod:`serving.api.protocol`).

    Raises
    ------
    CommandError
        The store did not answer within ``startup_timeout_s`` (exit status 3), ``prepare``
        refused (another catalogue, arms missing), or a setting cannot be passed to the
        workers (:meth:`Settings.to_env`; exit status 2).
    """
    try:  # a SIGTERM at any point is a stop (found in review: during a first start's fit, 143)
        with _stopped_by_sigterm():
            return _serve(settings)
    except _StopRequested:
        return 0


def _serve(settings: Settings) -> int:
    """:func:`serve`'s body, under its SIGTERM handler."""
    try:  # what the workers' environment cannot carry, before anything is fitted or served
        settings.to_env()
        # A store URL that names no store (a misspelt scheme, another driver, a port that is
        # no number) in one line: it was a traceback echoing the password, exit 1, where the
        # other commands said it in one line (found by attack). Its text only: nothing made.
        store_class_of(settings.resolved_db_url())
    except (TypeError, ValueError) as exc:
        raise CommandError(str(exc), exit_code=2) from None
    sock = _bound_socket(settings.host, settings.port)
    try:
        return _serve_on(settings, sock)
    finally:
        sock.close()


def _bound_socket(host: str, port: int) -> socket.socket:
    """The service's socket, bound to ``host``:``port`` and listening before anything is
    fitted (as uvicorn binds it, ``Config.bind_socket``), then handed to the workers.

    A port taken by another process was found only once the arms were fitted (minutes on a
    first start), then said in uvicorn's words, exit 3. It listens at once: a socket bound
    but not listening shares its port with another (``SO_REUSEADDR``), so a second ``serve``
    on the port passed the check, then served nothing, without a word (found in review). A
    connection made while ``serve`` prepares waits in the kernel's queue until the workers
    serve.

    Raises
    ------
    CommandError
        The address cannot be taken (in use, not this host's, a privileged port): exit 2.
    """
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    sock = socket.socket(family, socket.SOCK_STREAM, socket.IPPROTO_TCP)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    try:
        sock.bind((host, port))
        sock.listen()
    except OSError as exc:
        sock.close()
        hint = {errno.EADDRINUSE: "another process listens there",
                errno.EACCES: "a port below 1024 needs privileges",
                errno.EADDRNOTAVAIL: "not an address of this machine"}.get(
            exc.errno or 0, "not an address this machine can serve on"
            if isinstance(exc, socket.gaierror) else "")
        raise CommandError(f"cannot serve on {host}:{port}: {exc.strerror or exc}"
                           + (f" ({hint})" if hint else "") + "; --host and --port (or "
                           "RECBANDITS_HOST and RECBANDITS_PORT) choose another",
                           exit_code=2) from None
    sock.set_inheritable(True)  # the workers of --workers > 1 inherit it
    return sock


def _serve_on(settings: Settings, sock: socket.socket) -> int:
    """:func:`_serve` once ``sock`` is bound: prepare, then run the workers on it."""
    from serving.api.protocol import uvicorn_options

    with progress_on_stderr():
        # Read once: each try while the store does not answer loaded it again (found by
        # attack: "loading the synthetic data" 27 times in 2 minutes).
        logger.info("loading the %s data", settings.dataset)
        catalog = load_catalog(settings)
        try:
            resources = until_the_store_answers(settings,
                                                lambda: prepare(settings, catalog=catalog))
        except StoreUnavailableError as exc:  # said in one line, not a traceback
            # 3, as every command whose store is down says it (it was 1)
            raise CommandError(f"the store did not answer within startup_timeout_s "
                               f"({settings.startup_timeout_s:g} s): {exc.message}",
                               exit_code=STORE_UNAVAILABLE_EXIT) from None
    resources.store.dispose()
    # The settings in force (the live version's arms when none were named, in the workers'
    # order), for the banner and the workers: they rebuild theirs from the environment, and
    # the unnamed default list exported there named the arms for them (found in review: a
    # restart without --arms served the default list as a new version all the same).
    settings = resources.settings
    if logging.getLogger().getEffectiveLevel() <= logging.INFO < LOG_LEVELS[settings.log_level]:
        # `recbandits -v serve`: the workers' own info lines too (their loggers no longer
        # reach the root logger -v configures: serving.api.protocol.log_config).
        settings = settings.model_copy(update={"log_level": "info"})
    settings.export_env(os.environ)
    metrics_dir = None
    try:
        if settings.workers > 1 and not os.environ.get("PROMETHEUS_MULTIPROC_DIR"):
            metrics_dir = tempfile.mkdtemp(prefix="recbandits-metrics-")
            os.environ["PROMETHEUS_MULTIPROC_DIR"] = metrics_dir
        print(f"recbandits: serving {', '.join(settings.arms)} (policy version "
              f"{resources.arm_set.version}) on {http_url(settings.host, settings.port)} with "
              f"{settings.workers} worker(s); store {resources.store.describe()}", flush=True)
        config = uvicorn.Config("serving.app:app_from_env", factory=True, host=settings.host,
                                port=settings.port, workers=settings.workers, access_log=False,
                                **uvicorn_options(settings))
        return (_run_workers if settings.workers > 1 else _run_worker)(config, sock)
    finally:
        if metrics_dir is not None:  # the workers' metric files: removed once they stopped
            # (found by attack: every `serve --workers 2` left its folder in /tmp; only a
            # SIGKILL of `serve` itself still can)
            shutil.rmtree(metrics_dir, ignore_errors=True)
            os.environ.pop("PROMETHEUS_MULTIPROC_DIR", None)


def _run_worker(config: uvicorn.Config, sock: socket.socket) -> int:
    """Run ``config``'s one worker on ``sock`` in this process, as ``uvicorn.run`` does, and
    return 0 once stopped, or uvicorn's start-up failure status (3) when it failed to start.
    """
    server = uvicorn.Server(config)
    with contextlib.suppress(KeyboardInterrupt):  # Ctrl-C once serving is a stop
        server.run(sockets=[sock])
    return 0 if server.started else STARTUP_FAILURE


class _StopRequested(BaseException):
    """A SIGTERM to ``serve``'s one-worker server or to ``retrain`` (see
    :func:`_stopped_by_sigterm`).
    """


def _stop_requested(signum: int, frame: object) -> None:
    raise _StopRequested


@contextlib.contextmanager
def _stopped_by_sigterm() -> Iterator[None]:
    """Make a SIGTERM end ``serve`` with status 0, whenever it comes (``retrain`` uses it too,
    to free its lease on the way out: see :func:`retrain`).

    uvicorn's one-worker server shuts down gracefully on the signal, then restores the handler
    it found and raises the signal again: with the default handler the process died by it
    (status 143; found by a README check, which says 0 when stopped, as ``--workers 2`` and
    Ctrl-C give). The handler it finds is this one, which raises :class:`_StopRequested` (a
    BaseException, which no ``except Exception`` takes) for ``serve`` to end with. So does a
    SIGTERM while ``serve`` prepares (a first start fits the arms for seconds to minutes; found
    in review: 143 there, with any number of workers) or while uvicorn sets up or tears down.
    A stop while fitting leaves no version: the next start fits again. uvicorn's supervisor
    (``--workers`` > 1) handles the signal itself once it runs. The previous handler is
    restored on the way out.
    """
    if threading.current_thread() is not threading.main_thread():
        yield  # signals are the main thread's (uvicorn captures none elsewhere either)
        return
    previous = signal.signal(signal.SIGTERM, _stop_requested)
    try:
        yield
    finally:
        signal.signal(signal.SIGTERM, previous)


def _run_workers(config: uvicorn.Config, sock: socket.socket) -> int:
    """Run ``config``'s workers on ``sock`` under uvicorn's supervisor, as ``uvicorn.run`` does,
    and return uvicorn's start-up failure status (3) when a worker failed to start:
    ``uvicorn.run`` returns normally then, so ``serve`` exited 0 after its workers had failed
    (found by attack: a store whose fold snapshot the workers could not restore).
    """
    supervisor = Multiprocess(config, sockets=[sock])
    stop = threading.Event()
    watcher = threading.Thread(target=_answer_for_exited_workers, args=(supervisor, stop),
                               name="recbandits-worker-watcher", daemon=True)
    watcher.start()
    try:
        supervisor.run()
    finally:
        stop.set()
        watcher.join()
    failed = any(worker.process.exitcode == STARTUP_FAILURE for worker in supervisor.processes)
    return STARTUP_FAILURE if failed else 0


#: How often ``serve``'s watcher looks for a worker that has exited (seconds).
WORKER_WATCH_S = 0.2


def _answer_for_exited_workers(supervisor: Multiprocess, stop: threading.Event) -> None:
    """Until ``stop``, answer uvicorn's health-check ping for each worker of ``supervisor``
    that has exited, so that the supervisor acts on the exit at once.

    The supervisor pings its live workers in turn and waits for each answer up to
    ``worker_healthcheck_timeout_s`` (60 s). A worker that died just after a ping never
    answered, and since the parent holds the worker's end of the pipe too, the wait ran its
    full time-out: ``serve --workers 2`` took a minute to exit 3 after its workers had failed
    to start (3 runs of 7 in an attack). The watcher writes there the answer of a worker that
    has not started (False); the supervisor's next look, half a second later, finds the worker
    dead and acts on its exit status (3: ``serve`` stops; otherwise a new worker).

    Only a dead worker's end is written to, once, by this thread alone (the worker wrote to it
    until it died). The supervisor closes that end when it reaps the worker, hence the
    suppressed errors.
    """
    answered: set[int | None] = set()
    while not stop.wait(WORKER_WATCH_S):
        for worker in list(supervisor.processes):
            if worker.exitcode is None or worker.pid in answered:
                continue
            answered.add(worker.pid)
            with contextlib.suppress(OSError, ValueError):
                worker.child_conn.send(False)


def retrain(settings: Settings, *, candidate: bool = False) -> RetrainResult | NothingToDo:
    """Fit a candidate arm set on the base data plus feedback ratings, gate it, and serve it
    as a new version if the gate accepts it (:func:`serving.versions.retrain`).

    A running service picks a new version up within its refresh interval. Holds the store's
    retrain lease (:mod:`serving.retrain_trigger`). The gate compares the settings' arms with
    the served version's arms as they are (``prepare(refit=False)``: arms whose
    hyper-parameters the settings change are refitted once, by the gated retrain); a new
    version is served only if the version loaded is still the live one.

    Parameters
    ----------
    settings : Settings
    candidate : bool, default False
        Save an accepted candidate without serving it (status ``candidate``, served by
        ``recbandits models promote V``).

    Returns
    -------
    serving.versions.RetrainResult or NothingToDo
        The decision with the gate's metrics; ``exit_code`` 1 when the gate rejected the
        candidate (nothing served changed). NothingToDo where no store or no version is yet:
        there is nothing to retrain, and nothing is created (``serve`` fits and serves the
        first version; a mistyped ``--state-dir`` built a whole new store before).

    Raises
    ------
    CommandError
        While another retrain runs (a worker's trigger, ``POST /admin/retrain``, another
        ``retrain``): nothing is fitted; or a promotion or rollback changed the live version
        during the fit: nothing is served or recorded (exit code 1 either way); or the served
        arms are missing (see :func:`prepare`); or a SIGTERM stopped it (exit code 143, as a
        process the signal ended), the lease freed on the way out as on Ctrl-C.
    """
    try:
        # The default SIGTERM action ends the process where it stands, leaving the store's
        # retrain lease to its dead pid for retrain_lease_s (600 s), every retrain refused
        # meanwhile (found by attack: timeout, systemd and CI cancels send it). Raised here
        # instead, it unwinds through hold_retrain_lease, which frees the lease, as Ctrl-C's
        # KeyboardInterrupt does. A SIGKILL cannot be caught: its lease expires.
        with _stopped_by_sigterm():
            return _retrain(settings, candidate=candidate)
    except _StopRequested:
        raise CommandError("stopped by SIGTERM before the retrain ended; the retrain lease, "
                           "if it was taken, is freed", exit_code=SIGTERM_EXIT) from None


#: ``retrain``'s exit status when a SIGTERM stopped it: 128 + the signal's number, what a
#: process the signal ended reports.
SIGTERM_EXIT = 128 + signal.SIGTERM


def _retrain(settings: Settings, *, candidate: bool) -> RetrainResult | NothingToDo:
    """:func:`retrain`'s body, under its SIGTERM handler."""
    with progress_on_stderr():
        try:
            resources = prepare(settings, refit=False)
        except NothingServedError as exc:
            return NothingToDo("retrain", str(exc))
        try:
            settings = resources.settings  # the live arms (served_settings)
            with hold_retrain_lease(resources.store, settings.retrain_lease_s) as lease:
                result = versions.retrain(settings, resources.store, resources.catalog,
                                          resources.arm_set.models, serve=not candidate,
                                          lock=lease.guard(contextlib.nullcontext()),
                                          expect_live=resources.arm_set.version)
                lease.fitted()
        except (RetrainBusyError, versions.ModelsError) as exc:
            raise CommandError(exc.message, exit_code=1) from None
        finally:
            resources.store.dispose()
    return result


def models(settings: Settings, action: str, version: int | str | None = None
           ) -> ModelsResult | NothingToDo:
    """``recbandits models list | show V | promote V | rollback`` (:func:`serving.versions.run`).

    Returns
    -------
    serving.versions.ModelsResult or NothingToDo
        The latter for ``list`` where no store or no version is yet (exit 0, as the other
        commands that read a store).

    Raises
    ------
    CommandError
        An unknown version, one that cannot be served, nothing to roll back to, no version
        yet to show, promote or roll back (exit code 1); ``version`` no version number, as
        ``02`` or ``abc`` (exit code 2, a bad value: it said 1, as for a refusal, found by
        attack); settings that name other arms than the live version's (exit code 2, as
        every command that reads the store refuses them: :func:`served_settings`; they were
        ignored, found by a README check).
    """
    if settings.named_arms():
        try:
            store = open_store(settings.resolved_db_url(), timeout_s=settings.store_timeout_s,
                               create=False, read_only=action in ("list", "show"))
        except StoreNotFoundError:
            pass  # no versions: said below
        else:
            try:
                served_settings(settings, store, f"models {action} was given",
                                MODELS_OF_THE_STORE)
            finally:
                store.dispose()
    try:
        return versions.run(settings, action, version)
    except versions.NoVersionsError as exc:
        if action != "list":
            raise CommandError(exc.message, exit_code=1) from None
        return NothingToDo(action, f"no model versions: {exc.reason}")
    except versions.ModelsError as exc:
        # a request the command line got wrong (400: a version missing or given where none
        # is taken, which said 1, as a refusal; 422: no version number) is a bad input
        raise CommandError(exc.message, exit_code=2 if exc.status_code in (400, 422) else 1
                           ) from None


#: Why ``models`` refuses other arms (:func:`served_settings`): it takes none of its own.
MODELS_OF_THE_STORE = ("the versions are the store's, whatever arms the settings name (a "
                       "promotion serves its version's own)", ", or without --arms")

#: Why a command that reads the log must read it with the live arms (:func:`served_settings`).
READ_WITH_OTHER_ARMS = ("the workers log and fold those", "")


@contextlib.contextmanager
def _open_log(settings: Settings, verb: str, what: str, *, read_only: bool = True
              ) -> Iterator[tuple[Store, Settings] | NothingToDo]:
    """The settings' store holding a decision log, disposed of afterwards, with the settings
    in force on it (the live arms: :func:`served_settings`; ``what`` the command would do, for
    its refusal); or, when there is no store or no log yet, the
    :class:`~serving.results.NothingToDo` saying so (nothing is created). ``read_only``: the
    command only reads (see ``Store``'s ``read_only``: an older store is refused, the file
    needs no write access); False for a command that writes to the store.
    """
    try:
        store = open_store(settings.resolved_db_url(), timeout_s=settings.store_timeout_s,
                           create=False, read_only=read_only)
    except StoreNotFoundError as exc:
        yield NothingToDo(verb, str(exc))
        return
    try:
        if not store.has_log():
            yield NothingToDo(verb, f"{store.describe()} holds no decision log yet")
            return
        yield store, served_settings(settings, store, what, READ_WITH_OTHER_ARMS)
    finally:
        store.dispose()


def rebuild_state(settings: Settings, *, service: httpx2.Client | None = None
                  ) -> RebuildStateResults | NothingToDo:
    """Replay the log and compare every derived state with the stored one and a worker's.

    A running worker is asked first (``GET /admin/policy-state`` and ``GET
    /admin/live-state``), then the log is read: every worker position compared with lies
    within the rows read. The live and shadow policies are those in force
    (:func:`serving.shadow.effective`: a promotion's; the live one of a purged log its fold
    snapshot's, else a worker's that runs another: :func:`check_policy`).

    Re-derives each decision's outcome with the rule book, the pulls per arm, the ratings kept
    for retraining and the policy (the fold of the outcomes from the latest fold snapshot with
    the model-version switches' carry-over), per arm and every disagreement. Then, each against
    the worker up to its log position: the live policy and the shadow (:func:`check_policy`;
    the shadow's dimension is the logged contexts'), the live arms (co-occurrence, live
    popularity: :func:`_check_live_arms`), the holdout's logged draws and the drift monitor
    replayed with the worker's drift settings (:func:`_check_holdout_and_drift`). Without a
    worker each line says ``not compared`` and why.

    Parameters
    ----------
    settings : Settings
    service : httpx2.Client, optional
        A client of the running service compared with (its base URL set); default: the
        service ``settings.host`` and ``settings.port`` name, asked with
        ``settings.admin_token`` (none asked without a token).

    Returns
    -------
    RebuildStateResults or NothingToDo
        The comparison (``match``; ``exit_code`` 1 if anything differs); NothingToDo when the
        store does not exist or holds no log yet (left untouched).

    Raises
    ------
    ValueError
        A purged log's fold snapshot holds a policy this version cannot build.
    CommandError
        The settings name other arms than the live version serves (exit 2).
    """
    # A fold of other arms than the live version's is no fold of the workers' (found by attack:
    # "match: yes" over a policy of the settings' four arms on a store of two): _open_log.
    with _open_log(settings, "rebuild", "rebuild-state would fold") as opened:
        if isinstance(opened, NothingToDo):
            return opened
        store, settings = opened
        # The live and shadow policies in force: the settings', or a promotion's.
        settings = shadow.effective(settings, store)
        # Both asked before the log is read: every worker position compared with is then
        # within the rows read (a worker answering later may have folded rows committed after).
        policy_held = _service_policy_state(settings, store, service)
        live_held = _service_live_state(settings, store, service)
        rows = store.log_rows()
        logged = _logged_dimension(store.latest_decision(), rows)
        switches = store.switches_after(0) if store.has_versions() else []
        source = store.describe()
        live = _check_live_arms(settings, store, *live_held)
        lifecycle, lifecycle_match = _check_holdout_and_drift(settings, store, rows, *live_held)
        served_lines, served_match = _check_served_version(store.policy_meta(), *live_held)
        lifecycle, lifecycle_match = [*served_lines, *lifecycle], lifecycle_match and served_match
    held = policy_held[0]
    asked = _replay_model(settings, rows, logged, held)
    fold = rows["fold"]
    # The log is replayed under the live policy in force: a fold snapshot's (a purged log
    # folds under no other), else a worker's (found by attack: other settings than the
    # service's exited 1 after a purge, and the header named the settings' policy while the
    # line compared the worker's).
    model = _policy_of_snapshot(asked, fold, settings.arms)
    with contextlib.suppress(KeyError, TypeError, ValueError):  # check_policy says why
        model = _worker_policy(model, held, settings.arms) or model
    check = _replay_log(settings, rows, switches, model)
    policy_lines, policy_match = check_policy("live", asked, rows, switches, *policy_held,
                                              arms=settings.arms)
    shadow_model = settings.shadow_model(_replayed_dimension(
        logged, settings.shadow_policy, None if held is None else held.get("shadow")))
    shadow_lines, shadow_match = check_policy("shadow", shadow_model, rows, switches,
                                              *policy_held, arms=settings.arms)
    names = sorted(set(check.pulls_stored) | set(check.pulls_replayed) | set(check.rewards))
    return RebuildStateResults(
        source=source, n_decisions=len(rows["decisions"]), n_feedback=len(rows["feedback"]),
        n_outcomes=check.n_outcomes, pending=check.pending, policy=model.name,
        switches=tuple((w.mode, w.seq) for w in switches if w.mode != "carry" and w.arms),
        arms=tuple(ArmCheck(arm, check.pulls_stored[arm], check.pulls_replayed[arm],
                            *check.rewards.get(arm, (0, 0.0))) for arm in names),
        mismatches=tuple(check.mismatches), live=tuple(live),
        not_folded=tuple(sorted(check.not_folded.items())),
        lifecycle=(*lifecycle, *policy_lines, *shadow_lines),
        lifecycle_match=lifecycle_match and policy_match and shadow_match,
        snapshot=None if fold is None else SnapshotInfo(
            fold.seq, fold.cut, sum(fold.pulls.values()), len(fold.ratings)))


def _replay_log(settings: Settings, rows: LogRows, switches: Sequence[VersionSwitch],
                model: PolicyModel) -> LogCheck:
    """The log ``rows`` replayed under ``settings``' rule book and the live policy ``model``
    (:func:`_replay_model`), with the version ``switches``, and compared with the stored folds
    (:func:`serving.replay.check_log`): ``rebuild-state``'s check, and a purge's before it
    deletes.
    """
    fold = rows["fold"]
    return check_log(
        [DecisionRow(e, a, bool(c), float(d), bool(s), ml)
         for e, a, c, d, s, ml in rows["decisions"]],
        [FeedbackRow(int(q), e, int(u), int(m), float(t), ty, bool(c), r, v, fa)
         for q, e, u, m, t, ty, c, r, v, fa in rows["feedback"]],
        [OutcomeRow(int(q), e, a, float(r), None if f is None else int(f), float(t))
         for q, e, a, r, f, t in rows["outcomes"]],
        rows["contexts"], rows["pulls"], rows["ratings"], settings.rule_book(),
        model, fold=fold, switches=switches)


def _replay_model(settings: Settings, rows: LogRows, logged: int | None,
                  held: JsonObject | None = None) -> PolicyModel:
    """The live policy's model a replay of ``rows`` folds (:func:`_replay_log`): of the
    dimension a purge's snapshot folded with, else ``logged`` (:func:`_logged_dimension`),
    else, with no decided decision, a running worker's (``held``: its policy state;
    :func:`_replayed_dimension`).
    """
    # A purged log's policy has the dimension it was folded with (the shadow's state is not in
    # the fold snapshot, so rebuild-state gives it the logged contexts', as a worker's).
    fold = rows["fold"]
    state = None if fold is None else fold.policy["state"]
    return settings.policy_model(_replayed_dimension(
        logged if state is None else state["params"].get("n_features"), settings.policy, held))


def _replayed_dimension(logged: int | None, policy: str | None, held: JsonObject | None
                        ) -> int | None:
    """The context dimension ``rebuild-state`` replays the ``policy`` with: ``logged`` (that of
    the decided decisions' contexts, or a fold snapshot's), else, for a contextual policy, the
    dimension of the worker's policy in that role (``held``: its state in ``GET
    /admin/policy-state``, whose prior is then compared) if one answered, else 1.

    With no decided decision (a fresh store, or slates without feedback yet) a contextual
    policy has folded nothing, whatever its dimension, so no figure printed depends on the
    fallback. One rule for the live policy and the shadow: found by attack, the live LinTS's
    replay exited 2 ("n_features is required"); found by the README's audit, a LinTS shadow
    was then "not compared".
    """
    if logged is not None or policy is None or not registered_policies()[policy].contextual:
        return logged
    return int((held or {}).get("policy", {}).get("params", {}).get("n_features") or 1)


def _check_holdout_and_drift(settings: Settings, store: Store, rows: LogRows,
                             held: JsonObject | None, where: str) -> tuple[list[str], bool]:
    """The holdout's logged decisions checked (:func:`serving.holdout.check_decisions`), and
    the drift monitor replayed from the fold snapshot's position over the outcomes and
    compared with a running worker's (``held``: its ``GET /admin/live-state``, asked before
    ``rows`` were read; None: ``where`` says why; :func:`serving.drift.check_replay`).
    """
    lines, match = check_decisions(store.holdout_rows())
    start = 0 if rows["fold"] is None else rows["fold"].seq
    # The monitor's own stream: each decision's outcomes at its settlement (serving.drift),
    # from the rows' snapshot (the fold snapshot's position is that snapshot's too: review)
    outcomes = [Outcome(int(q), e, a, float(r)) for q, e, a, r in rows["settled"]
                if int(q) > start]
    drift_lines, drift_match = check_replay(settings.drift_monitor().fresh(start), outcomes,
                                            None if held is None else held.get("drift"), where)
    return [*lines, *drift_lines], match and drift_match


def holdout(settings: Settings, *, n_bootstrap: int = DEFAULT_N_BOOTSTRAP, seed: int = 0
            ) -> HoldoutResults | NothingToDo:
    """Compare the policy-served decisions with the held-out ones (``recbandits holdout``,
    :func:`serving.holdout.holdout_report`).

    Returns
    -------
    HoldoutResults or NothingToDo
        The report; NothingToDo when the store does not exist or holds no log yet.

    Raises
    ------
    ValueError
        ``n_bootstrap`` neither 0 nor within ``bandits.ope.MIN_BOOTSTRAP`` to
        ``MAX_BOOTSTRAP`` (checked before the store is opened).
    CommandError
        No decision of the log was logged with a holdout (exit status 2).
    """
    n_bootstrap, seed = check_bootstrap(n_bootstrap), check_bootstrap_seed(seed)
    with _open_log(settings, "compare", "holdout would compare") as opened:
        if isinstance(opened, NothingToDo):
            return opened
        store, settings = opened
        report = holdout_report(((a, p, r) for _, a, _, _, p, r in store.holdout_rows()),
                                n_bootstrap=n_bootstrap, seed=seed)
        source = store.describe()
    if not report.policy.decisions and not report.holdout.decisions:
        raise CommandError(f"{source} holds no decision logged with a holdout (serve with "
                           "--holdout-share)")
    return HoldoutResults(source, report)


def check_policy(role: str, model: PolicyModel | None, rows: LogRows,
                 switches: Sequence[VersionSwitch], held: JsonObject | None, where: str, *,
                 arms: Sequence[str]) -> tuple[list[str], bool]:
    """Fold the log's outcomes under the ``role`` policy's rule and compare with a running
    worker's state of it, up to the worker's log position, with the model-version
    ``switches`` between them: the live policy (``role`` "live") and the shadow ("shadow")
    are checked by the same fold and comparison.

    The live policy's fold starts from the latest fold snapshot's state (a purge's), the
    shadow's from a fresh policy at the snapshot's position (its state cannot be restored
    from it: :mod:`serving.shadow`).

    Parameters
    ----------
    role : {"live", "shadow"}
    model : PolicyModel or None
        The policy in force in that role (``shadow.effective`` settings); None: no such
        policy. A worker running another policy in that role (other settings than these,
        or a promotion not followed yet) is compared with the fold of its own.
    rows : LogRows
        The log, read after the worker answered (its position is within them).
    switches : sequence of VersionSwitch
        Every version switch of the log (those after the snapshot and up to the worker's
        position are folded).
    held : dict or None
        The worker's ``GET /admin/policy-state`` (the live state at top level, the shadow's
        under ``shadow``); None when none answered (``where`` says why).
    where : str
        The worker's base URL, or why none was asked.

    Returns
    -------
    (lines, match)
        One ``<role> <policy> <params>`` line (none when neither ``model`` nor the worker
        has a policy in that role; ``(the fold snapshot's; these settings ask ...)`` or
        ``(the worker's; ...)`` after the parameters when the live policy of a purged log
        or the worker's was folded instead of ``model``); ``match`` False when the worker's
        state differs from the fold, or the worker runs a policy this replay cannot fold (an
        unknown one, or another than the fold snapshot's). Not compared (match True, the line
        says why): no worker, a worker without a policy in that role, or a worker behind
        the fold snapshot.
    """
    theirs = held if role == "live" or held is None else held.get(role)
    fold = rows["fold"]
    start = 0 if fold is None else fold.seq
    upto = None if theirs is None else int(theirs["log_seq"])
    asked = None if model is None else model.identity()
    whence = []
    if role == "live" and model is not None:
        in_force = _policy_of_snapshot(model, fold, arms)
        if in_force is not model:
            whence.append("the fold snapshot's")
        model = in_force
    runs = {} if theirs is None else theirs.get("policy") or {}
    try:
        worker = _worker_policy(model, theirs, arms)
    except (KeyError, TypeError, ValueError) as exc:
        return [f"{role} {said_policy(runs)}: match NO (the "
                f"worker at {where} runs a policy this replay cannot build: {exc})"], False
    if worker is not None:
        model = worker
        whence.append("the worker's")
    if model is None:
        return [], True
    mine = model.identity()
    name = f"{role} {said_policy(mine)}"
    if whence:
        name += (f" ({' and '.join(whence)}; these settings ask "
                 + said_policy(asked)
                 + ")")
    if upto is not None and upto < start:
        return [f"{name}: not compared (the worker at {where} is at log position {upto}, "
                f"before the fold snapshot at {start})"], True
    # Only the outcomes and switches after the snapshot and up to the worker's position.
    outcomes = sorted((Outcome(int(q), e, a, float(r), rows["contexts"].get(e))
                       for q, e, a, r, *_ in rows["outcomes"]
                       if q > start and (upto is None or q <= upto)), key=lambda o: o.seq)
    between = [w for w in switches if w.seq > start and (upto is None or w.seq <= upto)]
    try:
        policy, _ = fold_policy(outcomes, model, fold if role == "live" else None, between)
    except ValueError as exc:  # the worker runs another policy than the fold snapshot's
        return [f"{name}: match NO (the worker at {where} runs it; {exc})"], False
    # The shadow starts afresh at the snapshot (its state cannot be restored from it).
    folded = f"{len(outcomes)} outcomes folded" + (
        "" if not start else f" from the fold snapshot at {start}" if role == "live"
        else f" after the fold snapshot at {start}, from a fresh policy")
    if theirs is None:
        reason = where if held is None else f"the worker at {where} runs no {role} policy"
        return [f"{name}: not compared ({reason}); {folded}"], True
    same = states_agree(json.loads(json.dumps(policy.state_dict())), theirs["state"])
    pid = "?" if held is None else held.get("pid", "?")
    return [f"{name}: match {'yes' if same else 'NO'} (worker pid {pid} at "
            f"{where}, log position {upto}: {folded})"], same


def _described_model(name: object, params: object, arms: Sequence[str]) -> PolicyModel:
    """The policy ``name`` with the class hyper-parameters ``params`` as a policy reports them
    (``get_params``: ``n_features`` among them for a contextual one) over ``arms``: a
    worker's in ``GET /admin/policy-state``, or a fold snapshot's.

    Raises
    ------
    KeyError, TypeError, ValueError
        A description this version cannot build (an unknown policy or hyper-parameter).
    """
    given = dict(params)  # type: ignore[call-overload]  # JSON: a dict, or refused here
    n_features = given.pop("n_features", None)
    return PolicyModel(str(name), arms, params=given, n_features=n_features)


def _policy_of_snapshot(model: PolicyModel, fold: FoldSnapshot | None, arms: Sequence[str]
                        ) -> PolicyModel:
    """The live policy a purged log is folded under: the one its fold snapshot was folded
    with when it is not ``model`` (the settings'; ``serve`` refuses another on such a log),
    else ``model`` itself.

    Raises
    ------
    ValueError
        The snapshot's policy cannot be built by this version.
    """
    state = None if fold is None else fold.policy["state"]
    if state is None or policy_identity(state.get("policy"), state.get("params")) == \
            model.identity():
        return model
    try:
        return _described_model(state.get("policy"), state.get("params"), arms)
    except (KeyError, TypeError) as exc:
        raise ValueError(f"the fold snapshot's policy cannot be built: {exc}") from None


def _worker_policy(model: PolicyModel | None, theirs: JsonObject | None,
                   arms: Sequence[str]) -> PolicyModel | None:
    """The policy a worker that answered runs in a role (``theirs``: its state of it), when it
    is not ``model``; None when it is, or when the worker runs none there. The fold takes
    it, as the drift replay takes the worker's drift settings: its line said "not compared"
    and rebuild-state ended "match: yes" without checking it (a LinTS service, rebuild-state
    with the default settings).

    Raises
    ------
    KeyError, TypeError, ValueError
        A policy this version cannot build.
    """
    runs = None if theirs is None else theirs.get("policy")
    if not runs or policy_identity(runs.get("name"), runs.get("params")) == (
            None if model is None else model.identity()):
        return None
    return _described_model(runs["name"], runs["params"], arms)


#: Relative and absolute tolerance of a policy state's floats between a worker and the fold.
#: A worker folds the log in refresh-sized chunks and the replay in one pass; LinTS's ridge
#: statistics after a ``discount`` switch then differ in their last bits (up to ~1e-13
#: relative, measured), while a missing or doubled outcome or switch moves them by far more.
STATE_RTOL, STATE_ATOL = 1e-9, 1e-12


def states_agree(ours: object, theirs: object) -> bool:
    """Whether two JSON policy states are the same: equal structure, keys, strings and integers,
    and floats within :data:`STATE_RTOL` / :data:`STATE_ATOL` of each other.
    """
    if isinstance(ours, dict) and isinstance(theirs, dict):
        return ours.keys() == theirs.keys() and all(states_agree(ours[k], theirs[k])
                                                     for k in ours)
    if isinstance(ours, list) and isinstance(theirs, list):
        return len(ours) == len(theirs) and all(map(states_agree, ours, theirs))
    if isinstance(ours, float) or isinstance(theirs, float):
        return (isinstance(ours, int | float) and isinstance(theirs, int | float)
                and not isinstance(ours, bool) and not isinstance(theirs, bool)
                and math.isclose(ours, theirs, rel_tol=STATE_RTOL, abs_tol=STATE_ATOL))
    return ours == theirs


def _live_names(settings: Settings) -> list[str]:
    """The served arms that learn from the stream (their state is a fold of the log)."""
    return [n for n in settings.arms if make_arm(n, seed=None).learns_from_stream]


def _check_served_version(meta: PolicyMeta | None, held: JsonObject | None, where: str
                          ) -> tuple[list[str], bool]:
    """``rebuild-state``'s line on the version a running worker serves (``held``: its ``GET
    /admin/live-state``) against the store's live one (``meta``): ``match NO`` when the worker
    failed to load the live version's arms (found by attack: a promotion to an arm file that
    could not be read left every worker on the old version, and the command said "match:
    yes"); a worker that has not refreshed since the switch is said, not a mismatch.
    """
    if held is None or meta is None or "version" not in held:  # (an older worker says none)
        return [], True
    serving = int(held["version"])
    if serving == meta.version:
        return [f"version: match yes (the worker at {where} serves the live version "
                f"{meta.version})"], True
    failure = held.get("load_failure")
    if failure is not None and int(failure["version"]) == meta.version:
        return [f"version: match NO: the worker at {where} serves version {serving}, not the "
                f"live version {meta.version}, whose arms it failed to load "
                f"{failure['attempts']} time(s): {failure['error']}"], False
    return [f"version: not compared yet: the worker at {where} serves version {serving}, the "
            f"live one is {meta.version} (it loads it at its next refresh: rerun to see it "
            "done)"], True


def _check_live_arms(settings: Settings, store: Store, held: JsonObject | None, where: str
                     ) -> list[LiveArmCheck]:
    """Rebuild the live arms from the log and compare them with a running worker's.

    The fold starts where a worker's does (the latest fold snapshot's saved arms, else the
    base fits of the served version's folder) and takes every event and added item up to the
    worker's log position (``held``: its ``GET /admin/live-state``,
    :meth:`serving.service.RecommendationService.live_state`), or up to the log head when no
    worker answered (``held`` None: nothing is compared, ``where`` says why).

    Returns
    -------
    list of LiveArmCheck
        One per live arm: ``match`` False when a worker's digest differs from the rebuilt one
        (or a worker answered and the arm could not be rebuilt), None when nothing was compared.
    """
    live = _live_names(settings)
    if not live:
        return []
    previous = store.fold_snapshot(arms=True)
    position = int(held["log_seq"]) if held is not None else store.log_seq()
    if previous is not None and position < previous.seq:
        # The worker has not reached the snapshot yet; the events before it are gone.
        return [LiveArmCheck(n, None, f"not compared: the worker at {where} is at log "
                             f"position {position}, before the fold snapshot at {previous.seq}")
                for n in live]
    try:
        models, n_events = _live_arms_at(settings, store, previous, position)
    except (ValueError, FileNotFoundError) as exc:  # no arms folder, or an arm file missing
        return [LiveArmCheck(n, None if held is None else False, f"not rebuilt: {exc}")
                for n in live]
    start = "their base fits" if previous is None else f"the fold snapshot at {previous.seq}"
    folded = (f"{n_events} events and the items added up to log position {position} "
              f"folded from {start}")
    # The arms are rebuilt as the log's versions made them, whatever the settings' arm_params
    # ask: said, so that nobody takes the check for one of those (left unsaid before).
    asked = {n: "; made with other hyper-parameters than the settings ask (made with, asked): "
             + ", ".join(f"{k}={made!r}, {want!r}" for k, (made, want) in d.items())
             for n, d in other_params({n: models[n] for n in live}, settings).items()}
    if held is None:
        return [LiveArmCheck(n, None, f"not compared ({where}); {folded}{asked.get(n, '')}")
                for n in live]
    checks = []
    for name in live:
        same = held["arms"].get(name) == state_digest(models[name])
        checks.append(LiveArmCheck(name, same, f"match {'yes' if same else 'NO'} (worker pid "
                                   f"{held['pid']} at {where}: {folded}){asked.get(name, '')}"))
    return checks


def _service_policy_state(settings: Settings, store: Store, service: httpx2.Client | None
                          ) -> tuple[JsonObject | None, str]:
    """A running worker's ``GET /admin/policy-state`` (with its shadow's state) and where it
    came from; or None and why not (as :func:`_service_live_state`).
    """
    return _service_live_state(settings, store, service, path="/admin/policy-state")


def _service_live_state(settings: Settings, store: Store, service: httpx2.Client | None,
                        path: str = "/admin/live-state") -> tuple[JsonObject | None, str]:
    """A running worker's ``GET /admin/live-state`` (or ``path``) and where it came from; or
    None and why not (no token, no answer, another store).
    """
    token = settings.admin_token
    if token is None:
        return None, "no admin token set: no running service asked"
    host = settings.host if settings.host not in ("0.0.0.0", "::", "") else "127.0.0.1"
    client = service if service is not None else httpx2.Client(
        base_url=http_url(host, settings.port), timeout=5.0)
    where = str(client.base_url).rstrip("/")
    try:
        response = client.get(path,
                              headers={"authorization": f"Bearer {token.get_secret_value()}"})
    except httpx2.HTTPError as exc:
        return None, f"no service answered at {where}: {exc}"
    finally:
        if service is None:
            client.close()
    if response.status_code != 200:
        return None, f"the service at {where} answered {response.status_code}"
    body = response.json()
    # The store's identity, not its URL's text (a worker from before it: the text)
    same = (body["store_identity"] == store.identity() if "store_identity" in body
            else body.get("store") == store.describe())
    if not same:
        return None, f"the service at {where} serves another store ({body.get('store')})"
    return body, where


def credit(settings: Settings, *, n_bootstrap: int = DEFAULT_N_BOOTSTRAP, seed: int = 0
           ) -> CreditResults | NothingToDo:
    """Compare the arms of the log's multileaved decisions (``recbandits credit``).

    Per arm: impressions (multileaved slates it contributed to), the credited rewards of the
    decided ones, their rate with a 95% percentile bootstrap interval (decisions resampled,
    ``n_bootstrap`` times from ``seed``), and the pairwise win rates of the team-draft
    comparisons of the slates whose window closed, by the clicks on each team's items under
    the settings' rule book (:func:`serving.multileave.slate_clicks`, ``credit_report``).

    Returns
    -------
    CreditResults or NothingToDo
        The report; NothingToDo when the store does not exist or holds no log yet.

    Raises
    ------
    ValueError
        ``n_bootstrap`` neither 0 nor within ``bandits.ope.MIN_BOOTSTRAP`` to
        ``MAX_BOOTSTRAP`` (checked before the store is opened).
    CommandError
        The log holds no multileaved decision (exit status 2).
    """
    n_bootstrap, seed = check_bootstrap(n_bootstrap), check_bootstrap_seed(seed)
    with _open_log(settings, "credit", "credit would compare") as opened:
        if isinstance(opened, NothingToDo):
            return opened
        store, settings = opened
        rows = store.multileave_rows()
        source = store.describe()
    if not rows.decisions:
        raise CommandError(f"{source} holds no multileaved decision (serve with "
                           "--slate-mode multileave)")
    clicks = slate_clicks(rows.closed, rows.feedback, settings.rule_book())
    return CreditResults(source, credit_report(rows.decisions, rows.outcomes, clicks,
                                               settings.arms, n_bootstrap=n_bootstrap,
                                               seed=seed))


def shadow_status(settings: Settings, *, service: httpx2.Client | None = None
                  ) -> ShadowStatusResults | NothingToDo:
    """The live and shadow policies in force on the settings' store, the latest promotion and
    how many decisions carry a shadow record (``recbandits shadow status``;
    :func:`serving.shadow.status`), and whether a running worker (``service``, else the
    one ``settings.host`` and ``settings.port`` name, asked with the admin token) runs those
    policies (:func:`_against_the_service`).
    """
    with _open_log(settings, "show", "shadow status would fold") as opened:
        if isinstance(opened, NothingToDo):
            return opened
        store, settings = opened
        report = shadow.status(settings, store)
        differs, checked = _against_the_service(settings, store, service)
        source = store.describe()
    return ShadowStatusResults(source, report, checked, differs)


def shadow_promote(settings: Settings, *, service: httpx2.Client | None = None
                   ) -> shadow.PromoteResult:
    """Make the shadow policy the live one (``recbandits shadow promote``;
    :func:`serving.shadow.promote`): recorded in the store, followed by every worker within
    one refresh interval.

    The settings say which policy is promoted and which one it replaces, and the promotion
    records both; when a running worker answers (``service``, else the one the settings'
    host and port name, asked with the admin token), it must run the live and shadow
    policies the settings put in force (:func:`_against_the_service`). Before, settings other
    than the service's promoted their own shadow and recorded their own live policy as the
    one replaced, while the workers served another.

    Raises
    ------
    CommandError
        No store or log yet, or nothing to promote (no shadow policy, a purged log, another
        promotion meanwhile): exit 1, a refusal that changes nothing, as ``models``'. A
        running worker that runs other policies than the settings give: exit 2, nothing
        recorded.
    """
    with _open_log(settings, "promote", "shadow promote would fold", read_only=False) as opened:
        if isinstance(opened, NothingToDo):
            raise CommandError(f"nothing to promote: {opened.reason}", exit_code=1)
        store, settings = opened
        differs, checked = _against_the_service(settings, store, service)
        if differs is not None:
            raise CommandError(f"nothing promoted: {differs}; promote with the service's "
                               "settings, or with POST /admin/shadow/promote on it")
        try:
            result = shadow.promote(settings, store)
        except StoreAccessError:
            raise  # the user's access, exit 2 as every command says it (found in review)
        except ValueError as exc:
            raise CommandError(str(exc), exit_code=1) from None
    return dataclasses.replace(result, checked=checked)


def _against_the_service(settings: Settings, store: Store, service: httpx2.Client | None
                         ) -> tuple[str | None, str]:
    """Whether a running worker of ``store`` runs the live and shadow policies ``settings``
    put in force there (:func:`serving.shadow.effective`), compared as
    :func:`serving.policy.policy_identity` (name and hyper-parameters, the context's
    dimension the worker's).

    Returns
    -------
    (differs, checked)
        ``differs``: None when the worker runs them or none answered, else what each side
        runs; ``checked``: which worker ran them, or why none was asked.
    """
    current = shadow.effective(settings, store)
    held, where = _service_policy_state(current, store, service)
    if held is None:  # where: why none was asked, or why the one asked did not answer
        return None, where
    runs = {"live": held.get("policy"), "shadow": (held.get("shadow") or {}).get("policy")}
    theirs = {role: None if not r else policy_identity(r.get("name"), r.get("params"))
              for role, r in runs.items()}
    # The context's dimension from the worker's policies, else from the log's latest decision
    # (a contextual policy in the settings against a worker running a context-free one was
    # refused, "n_features is required", where it differs: found by attack).
    latest = store.latest_decision()
    logged = None if latest is None else latest.n_features
    dimensions = {"live": (runs["live"] or {}).get("params", {}).get("n_features") or logged}
    if theirs["shadow"] is not None:  # (a worker running none: the settings' shadow as spelt)
        dimensions["shadow"] = theirs["shadow"]["params"].get("n_features") or logged
    ours = shadow.settings_identities(current, dimensions)
    if ours == theirs:
        return None, f"the service at {where} runs these policies"

    def said(side: dict[str, JsonObject | None]) -> str:
        return " with shadow ".join(said_policy(p) for p in (side["live"], side["shadow"]))

    return (f"the service at {where} runs live {said(theirs)}, these settings give live "
            f"{said(ours)}"), where


def parse_date(text: str) -> float:
    """An ISO date or RFC 3339 date-time as Unix seconds (a date alone, or a time without a
    zone, is UTC; a time without seconds is taken), read by the API's reader
    (:func:`serving.schemas.read_timestamp`): a purge deletes data, so ``+05:60`` (read as
    +06:00 before), a week date or ISO 8601's basic form is refused, not guessed at.

    Raises
    ------
    ValueError
        ``text`` is neither (the message shows the value, two accepted forms and, for a
        date-time of the right shape but no instant, why).
    """
    try:
        return read_timestamp(text, date_alone=True).timestamp()
    except ValueError as exc:
        why = "" if isinstance(exc, TimestampShapeError) else f" ({exc})"
        raise ValueError(f"--before must be an ISO date or date-time such as 2026-09-01, "
                         f"2026-09-01T12:00 or 2026-09-01T12:00:00+02:00, got {text!r}{why}"
                         ) from None


def purge(settings: Settings, before: str, *, dry_run: bool = False,
          catalog: Dataset | None = None, now: float | None = None
          ) -> PurgeResults | NothingToDo:
    """Delete the raw log before ``before`` and keep a fold snapshot, so that every fold
    (``rebuild-state``, a starting worker, a running one) stays exact.

    What goes (:meth:`serving.store.Store.purge`): settled decisions whose reward window closed
    before the DATE, their outcomes and feedback, and the feedback stamped before it that no
    remaining decision owns. The snapshot, at the log head S read before folding, holds the
    policy folded over every outcome up to S (from the previous snapshot, if any), the purged
    decisions' pulls, the purged feedback's kept ratings and the live arms folded over every
    event and added item up to S (:func:`serving.live.fold_live_arms`).

    Parameters
    ----------
    settings : Settings
    before : str
        ISO 8601 date or date-time (UTC unless it says otherwise); at most now -
        ``settings.retention_s``: younger events still steer features and real-time scores.
    dry_run : bool, default False
        Count what would go; delete and store nothing.
    catalog : Dataset, optional
        The base data instead of ``load_catalog(settings)`` (the live arms' universe).
    now : float, optional
        Unix seconds of now (default the clock; tests move it).

    Returns
    -------
    PurgeResults or NothingToDo
        The rows counted before the cut and, unless a dry run or nothing to purge, the rows
        deleted and the snapshot stored; NothingToDo when the store does not exist or holds no
        log yet.

    Raises
    ------
    ValueError
        ``before`` is malformed or inside the retention window (nothing is read).
    CommandError
        Nothing deleted, a dry run refused alike. Exit status 2: settings that are not the
        service's (other arms, another arm order or policy than the latest decision's:
        :func:`served_settings`, :func:`_refuse_another_policy`). Exit status 1: the log does
        not replay exactly under the settings (:func:`_refuse_a_fold_unlike_the_workers`),
        another catalogue than the store's, the previous snapshot is of another policy, the
        workers have not switched to a promotion yet, the store records no arms folder, or
        another purge or a promotion ran meanwhile (run it again).
    """
    now = time.time() if now is None else now
    cut = parse_date(before)
    limit = now - settings.retention_s
    if cut > limit:
        raise ValueError(
            f"--before {_iso(cut, 'auto')} is inside the retention window (retention_s = "
            f"{say_seconds(settings.retention_s)}): events "
            f"after now - retention still steer features and real-time scores; the latest DATE "
            f"allowed now is {_iso(limit)}")
    with _open_log(settings, "purge", "purge would fold", read_only=False) as opened:
        if isinstance(opened, NothingToDo):
            return opened
        store, settings = opened
        store.create_schema(settings.arms, settings.rule_book())  # an older store gains tables
        head = store.log_seq()
        counts = store.purge_counts(cut, head)
        source = store.describe()
        if not any(counts.values()):
            return PurgeResults(source, cut, head, counts, dry_run=dry_run)
        # The policy in force, read once: the fold is of it and the store re-checks, in the
        # purge's transaction, that no promotion was recorded since.
        promotion = shadow.latest(store)
        current = shadow.promoted(settings, promotion)
        # A dry run says so too.
        logged = _refuse_a_fold_unlike_the_workers(current, store, promotion)
        catalog = catalog if catalog is not None else load_catalog(settings)
        # The live arms' snapshot is of the catalogue the workers serve (found in review:
        # a purge on another --dataset or --seed deleted the log), exit 1 naming both.
        _refuse_another_catalogue(store, catalog, "nothing was deleted")  # (a fit's words before)
        if dry_run:
            return PurgeResults(source, cut, head, counts, dry_run=dry_run)
        previous = store.fold_snapshot(arms=True)
        rules = settings.rule_book()
        try:  # no arms folder, another purge or a promotion meanwhile
            policy, n_outcomes = _fold_policy(current, store, previous, head, logged)
            arms, n_events = _fold_arms(settings, store, catalog, previous, head)
            deleted = store.purge(
                cut, head, 0 if previous is None else previous.seq, policy, arms,
                lambda rows: kept_ratings(
                    (FeedbackRow(int(q), None, int(u), int(m), float(t), ty, False, r, v)
                     for q, u, m, ty, v, r, t in rows), rules), now,
                promotion=0 if promotion is None else promotion.id)
        except StoreAccessError:
            raise  # the user's access, exit 2 as every command says it (found in review)
        except ValueError as exc:
            raise CommandError(str(exc), exit_code=1) from exc
    return PurgeResults(source, cut, head, counts, deleted=dict(deleted),
                        snapshot=PurgeSnapshot(head, None if previous is None else previous.seq,
                                               current.policy, n_outcomes, tuple(arms),
                                               n_events))


def _fold_policy(settings: Settings, store: Store, previous: FoldSnapshot | None,
                 head: int, logged: int | None) -> tuple[JsonObject, int]:
    """The policy in force (``settings``, a promotion applied: :func:`serving.shadow.promoted`)
    folded over every outcome up to ``head`` (from ``previous``), as a fold snapshot stores it
    (``{"state", "rewards"}``), and how many outcomes this fold read.

    A snapshot that folds nothing holds the fresh policy's state all the same: it names the
    policy and arms the log folds further under, which ``serve`` holds every later start to
    (:func:`_refuse_what_the_snapshot_cannot_fold`; with state None, found by a README check,
    a start with another policy or arm set was let through). State None is left only for a
    contextual policy whose dimension nothing logged says (no decision logged a context).

    A contextual policy's dimension is the one it folded with (``previous``), else ``logged``
    (:func:`_logged_dimension`): the feature set the service logs now, whose outcomes it folds.
    """
    start = 0 if previous is None else previous.seq
    outcomes = [o for o in store.outcomes_after(start) if o.seq <= head]
    state = None if previous is None else previous.policy["state"]
    dimension = state["params"].get("n_features") if state is not None else logged
    if state is None and dimension is None and registered_policies()[settings.policy].contextual:
        return {"state": None, "rewards": {}}, 0  # no outcome either: none without a context
    switches = [w for w in store.switches_after(start) if w.seq <= head]
    model = settings.policy_model(dimension)
    policy, rewards = fold_policy(outcomes, model, previous, switches)
    return ({"state": policy.state_dict(),
             "rewards": {arm: [n, total] for arm, (n, total) in rewards.items()}},
            len(outcomes))


def _refuse_a_fold_unlike_the_workers(settings: Settings, store: Store,
                                      promotion: shadow.Promotion | None) -> int | None:
    """Refuse a purge (nothing deleted) whose fold would not be the workers': of another policy
    than theirs (:func:`_refuse_another_policy`, exit code 2), or of a log that does not replay
    exactly under ``settings`` (exit code 1: another rule book, say, or a store that disagrees
    with its log; ``rebuild-state`` lists each disagreement). The purge deletes the rows that
    would show it, so it is checked first (found in review: a purge without the service's
    ``--policy`` left a snapshot no worker could restore, one with another rule book a
    ``rebuild-state`` that could never match again). Returns the dimension the workers log
    (:func:`_logged_dimension`), which the purge folds with.
    """
    rows = store.log_rows()
    latest = store.latest_decision()
    logged = _logged_dimension(latest, rows)
    switches = store.switches_after(0) if store.has_versions() else []
    model = _replay_model(settings, rows, logged)
    _refuse_another_policy(model, latest, promotion)
    try:
        check = _replay_log(settings, rows, switches, model)
    except ValueError as exc:  # the latest fold snapshot is of another policy
        raise CommandError(str(exc), exit_code=1) from None
    if not check.match:
        raise CommandError(
            f"the log does not replay exactly under these settings ({len(check.mismatches)} "
            f"disagreement(s); the first: {check.mismatches[0]}): a purge would delete the "
            "rows that show it (run rebuild-state with the same settings to see each; nothing "
            "was deleted)", exit_code=1)
    return logged


def _refuse_another_policy(model: PolicyModel, latest: LatestDecision | None,
                           promotion: shadow.Promotion | None, *,
                           doing: str = "purge would fold",
                           unchanged: str = "nothing was deleted") -> None:
    """Refuse (nothing deleted) to fold another policy than the one the latest decision was
    served by (``latest``: when, its policy, compared by
    :func:`serving.policy.policy_identity`, and its arms in the order of the workers'
    statistics), unless a promotion recorded since names the policy (the workers
    switch to it within a refresh interval).

    A purge's fold snapshot replaces the outcomes it folds, and workers can only fold further
    from a snapshot of their own policy, arms in their order: a purge run without the
    service's ``--policy`` (or ``--settings``, or ``--arms`` in its order) deleted the log and
    left a snapshot no worker could restore (found in review: the running worker failed at
    its next refresh, a restarted one at its start).

    ``doing`` and ``unchanged`` say what the command would do and what the refusal leaves as
    it was (``serve`` checks a snapshot that records no policy this way too:
    :func:`_refuse_another_than_the_latest_decision`).

    Raises
    ------
    CommandError
        Exit code 2: other arms, or another arm order, or another policy than the workers'
        (settings that are not the service's). Exit code 1: the decisions are still the
        policy's a promotion replaced (the workers have not refreshed yet: run it again).
    """
    if latest is None or (promotion is not None and not promotion.precedes(latest.created_at)):
        return
    logged, arms = latest.policy, multileave.policy_arms(latest.pmf_keys)
    if arms and arms != model.arms:
        raise CommandError(
            f"{doing} a policy of the arms {model.arms}, but the latest decision was "
            f"served by one of {arms}, in that order (run it with --arms {','.join(arms)}; "
            f"{unchanged})", exit_code=2)
    if logged is None:  # a decision logged without its policy: nothing to compare
        return
    mine, served = model.identity(), policy_identity(logged.get("name"), logged.get("params"))
    if served == mine:
        return
    if (promotion is not None and model.name == promotion.policy
            and logged.get("name") == promotion.previous.get("name")):
        raise CommandError(
            f"the latest decision was served by {json.dumps(served)}, the policy promotion "
            f"#{promotion.id} replaced: the workers switch to {promotion.policy} within one "
            f"refresh interval; run it again then ({unchanged})", exit_code=1)
    raise CommandError(
        f"{doing} the policy {json.dumps(mine)}, but the latest decision was served "
        f"by {json.dumps(served)}: workers cannot fold further from a snapshot of another "
        f"policy (run it with the service's --policy and --settings; {unchanged})",
        exit_code=2)


def _fold_arms(settings: Settings, store: Store, catalog: Dataset,
               previous: FoldSnapshot | None, head: int) -> tuple[dict[str, bytes], int]:
    """The live arms folded over every event and added item up to ``head`` (from
    ``previous``'s, else from their base fits in the served version's folder), saved; and how
    many events this fold read.
    """
    live = _live_names(settings)
    if not live:
        return {}, 0
    start = 0 if previous is None else previous.seq
    models = _start_models(store, live, previous, settings.resolved_state_dir())
    items = store.items_after(0)
    events = [e for e in store.events_after(start) if e.seq <= head]
    folded = fold_live_arms({n: models[n] for n in live}, events,
                            [a for a in items if a.seq <= start],
                            [a for a in items if start < a.seq <= head],
                            settings.rule_book(), catalog)
    return {n: arm_bytes(m) for n, m in folded.items()}, len(events)


def _start_models(store: Store, live: list[str], previous: FoldSnapshot | None,
                  state_dir: Path) -> dict[str, Recommender]:
    """The ``live`` arms where every fold of them starts: ``previous``'s saved arms (a fold
    snapshot), else their base fits in the served version's folder.

    Raises
    ------
    ValueError
        The store records no arms folder (the service never started).
    """
    meta = store.policy_meta()
    based = [n for n in live if previous is None or n not in previous.arms]
    if based and meta is None:
        raise ValueError("the store records no arms folder (policy_meta): start the service "
                         "once first")
    return {**(load_arms(arms_folder(state_dir, meta.arms_dir), based) if based and meta
               else {}),
            **({n: arm_from_bytes(previous.arms[n]) for n in live if n not in based}
               if previous is not None else {})}


def _live_arms_at(settings: Settings, store: Store, previous: FoldSnapshot | None,
                  position: int) -> tuple[dict[str, Recommender], int]:
    """The live arms folded from where they start (:func:`_start_models`) over every event
    and added item up to log position ``position`` (:func:`serving.live.fold_models`: what a
    worker folds, without its catalogue), and how many events were folded.
    """
    live = _live_names(settings)
    start = 0 if previous is None else previous.seq
    models = _start_models(store, live, previous, settings.resolved_state_dir())
    events = [e for e in store.events_after(start) if e.seq <= position]
    added = [a for a in store.items_after(start) if a.seq <= position]
    fold_models([models[n] for n in live], events, added, settings.rule_book())
    return models, len(events)


def _feature_dimension(contexts: Mapping[str, Any]) -> int | None:
    """The length of the logged context vectors (None when no decided decision logged one)."""
    for vector in contexts.values():
        if vector is not None:
            return len(vector)
    return None


def _logged_dimension(latest: LatestDecision | None, rows: LogRows) -> int | None:
    """The feature set the workers log now: the length of the latest decision's context
    vector, else that of any decided decision's in ``rows`` (:func:`_feature_dimension`).
    The latest's, not any: after an upgrade of the feature set the log holds both lengths
    (found in review: a purge of a LinTS log was refused as "another policy").
    """
    if latest is not None and latest.n_features is not None:
        return latest.n_features
    return _feature_dimension(rows["contexts"])
