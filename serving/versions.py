"""Model versions (issue 15): the gated retrain, promotion, rollback, and the versions table.

Every arm set the service fits is a row of the versions table (``model_versions``,
:mod:`serving.store.tables`): its hyper-parameters, the data it was fitted on, the evaluation
gate's report, its status (``live``, ``candidate``, ``rejected``, ``retired``) and why.

**The gate.** :func:`retrain` fits nothing for serving until the candidate arm set (the
settings' hyper-parameters) has passed :func:`arms.gate.evaluate_gate` against the serving arm
set (their hyper-parameters as served), both fitted on the training data before a temporal cut
of its most recent events (``gate_holdout`` of them, or those of the last ``gate_holdout_s``
seconds) and scored with full-catalogue HR@10 / NDCG@10 after it. Rejected: the row says why,
no arms are saved and nothing served changes. Accepted: the arms are fitted on all the data,
saved, and served as a new version.

**Promotion and rollback make new versions.** Serving an older arm set again
(:func:`promote`, :func:`rollback`) records a new version number pointing at that version's
folder (``source_version`` names it), so the decision log's ``policy_version`` always names
exactly the arms that served a decision and versions only grow (every worker loads a version
greater than its own within one refresh interval, while the old arms keep serving). A rejected
version has no saved arms and cannot be promoted; a rollback serves the arms of the version
served before the live one (skipping versions that were themselves rolled back).

**The posterior across versions.** A version that starts being served takes a log position
(``served_seq``) in the transaction that points the service at it, so it sits in the stream the
policy folds at the position of its commit; the fold applies the carry-over the row logged
(``posterior_carryover``: ``carry``, ``reset`` or ``discount`` with ``carryover_discount``) to
the arms whose models changed (:meth:`serving.policy.PolicyModel.switch`), on every worker and
in ``rebuild-state`` alike.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import logging
import re
import shutil
import time
from collections.abc import Mapping, Sequence
from contextlib import AbstractContextManager
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any, Literal

import numpy as np
import pandas as pd

from arms import registry
from arms.base import Recommender
from arms.data.dataset import Dataset
from arms.gate import evaluate_gate
from serving.armset import (
    ArmSet,
    arm_file,
    arms_folder,
    arms_lock,
    load_arms,
    missing_arms,
    new_arms_folder,
    recorded_arms_dir,
    refit_like,
    save_arms,
    seen_after_retrain,
    training_set,
    unreadable_arms,
    with_added_items,
)
from serving.errors import ModelVersionError
from serving.policy import carryover_gamma
from serving.rules import EventType
from serving.settings import Settings
from serving.store import Store, open_store
from serving.store.errors import StoreNotFoundError
from serving.store.types import JsonObject, ModelVersion

logger = logging.getLogger(__name__)

__all__ = ["MAX_VERSION", "VERSION_RANGE", "ModelsError", "RetrainResult", "arm_spec",
           "carryover_of", "catalog_fingerprint", "check_catalog", "data_span", "fit_candidate",
           "parse_version", "promote", "retrain", "rollback", "show", "store_catalog"]

#: A candidate arm set as the gate takes it: ``{label: {"arm": registry name, param: value}}``.
Spec = dict[str, dict[str, object]]


#: The error of this module: :class:`serving.errors.ModelVersionError` (a ValueError whose
#: ``status_code`` the API answers with).
ModelsError = ModelVersionError


class NoVersionsError(ModelVersionError):
    """No store at the settings' place, or one without model versions (404): ``models list``
    then has nothing to list (exit 0, as ``shadow status``); the other actions refuse.

    Parameters
    ----------
    reason : str
        Why there are none (the missing store, or the store that holds none).
    """

    def __init__(self, reason: str) -> None:
        super().__init__(f"no model versions: {reason}", 404)
        self.reason = reason


@dataclass(frozen=True)
class RetrainResult:
    """What a (gated) retrain decided.

    Attributes
    ----------
    status : {"live", "candidate", "rejected", "unchanged"}
        Served now, saved for a later promotion (``serve=False``), rejected by the gate, or
        not fitted at all because its training data and hyper-parameters are the served
        version's (nothing served changed in the last three; nothing recorded in the last).
    version : int
        The version recorded for this retrain (its row in the versions table; unchanged: the
        served version, as no row is recorded).
    policy_version : int
        The version served after the retrain (``version`` if accepted).
    reason : str
    n_feedback_ratings : int
        Kept log ratings the fit trained on (besides the base ratings).
    gate : dict or None
        The gate's report (``arms.gate.GateReport.to_dict()``); None with the gate off.
    gate_seconds, seconds : float
        Time the gate took, and the whole retrain.
    arms : tuple of str
        The arms of the version (refitted, or live and carried over).
    dataset : str
        The base data's name.
    arm_set : ArmSet or None
        The accepted arms, ready to serve (None unless served).
    live_arms : tuple of str
        Those of ``arms`` that learn from the stream: never refitted, carried over.
    """

    status: Literal["live", "candidate", "rejected", "unchanged"]
    version: int
    policy_version: int
    reason: str
    n_feedback_ratings: int
    gate: JsonObject | None
    gate_seconds: float
    seconds: float
    arms: tuple[str, ...] = ()
    dataset: str = ""
    arm_set: ArmSet | None = field(default=None, repr=False, compare=False)
    live_arms: tuple[str, ...] = ()

    @property
    def exit_code(self) -> int:
        """``recbandits retrain``'s status: 1 when the gate rejected the candidate, else 0."""
        return 1 if self.status == "rejected" else 0

    def __str__(self) -> str:
        if self.status == "unchanged":
            return f"{self.reason}; serving version {self.policy_version}"
        refitted = [a for a in self.arms if a not in self.live_arms]
        carried = (f" ({', '.join(self.live_arms)}: learning from the stream, carried over)"
                   if self.live_arms else "")
        return (f"retrained {', '.join(refitted) or 'no arm'}{carried} on {self.dataset} plus "
                f"{self.n_feedback_ratings} feedback ratings in {self.seconds:.1f} s (gate "
                f"{self.gate_seconds:.1f} s): version {self.version} {self.status}; serving "
                f"version {self.policy_version}\n{format_gate(self.gate, self.reason)}")

    def to_dict(self) -> JsonObject:
        """The result as plain JSON data (without the arm set)."""
        return {"status": self.status, "version": self.version,
                "policy_version": self.policy_version, "reason": self.reason,
                "n_feedback_ratings": self.n_feedback_ratings, "gate": self.gate,
                "gate_seconds": self.gate_seconds, "seconds": self.seconds}


def arm_spec(label: str, model: Recommender) -> dict[str, object]:
    """``model``'s hyper-parameters as a gate spec entry (``"arm"``: its registry name, which
    is ``label`` unless the model is of another registered class).
    """
    name = next((e.name for e in registry.ARMS.values() if type(model) is e.cls
                 and e.name == label), None) or next(
        (e.name for e in registry.ARMS.values() if type(model) is e.cls), label)
    return {"arm": name, **model.get_params()}


def seed_time(store: Store) -> int | None:
    """When the store's arms were first fitted (Unix seconds), the time every later fit makes
    its live arms' training seed as of (:func:`serving.armset._fit_each`): the one its first
    version records (``data["seed_time"]``, its fit's), else that version's time (a version
    recorded before, or by a store from before the versions table); None before a first
    version (that fit's own time then).
    """
    if not store.has_versions():
        return None
    rows = store.versions()
    if not rows:
        return None
    first = min(rows, key=lambda r: r.version)
    recorded = first.data.get("seed_time")
    return int(recorded) if isinstance(recorded, int | float) else int(first.created_at)


def as_made(arms: Mapping[str, Any]) -> JsonObject:
    """Recorded arm specs (``{label: arm_spec}``) with every hyper-parameter an entry lacks
    filled in as that arm was made: those added to its class since it was recorded
    (:meth:`~arms.base.Recommender.params_saved_without`), then the class's defaults; through
    JSON, as the versions table stores them (tuples become lists, and so on). A version
    recorded before a hyper-parameter existed then equals the same arms recorded now (found
    in review: the first retrain once ``retime_seed`` existed published a copy of the served
    version, where "nothing to retrain" was due). An entry whose arm or parameters this
    recbandits does not know is kept as recorded.
    """
    made: JsonObject = {}
    for label, spec in json.loads(json.dumps(dict(arms))).items():
        entry = registry.ARMS.get(str(spec.get("arm"))) if isinstance(spec, dict) else None
        if entry is None:
            made[label] = spec
            continue
        params = {k: v for k, v in spec.items() if k != "arm"}
        try:
            model = entry.cls.as_saved(params)
        except TypeError:  # a parameter of another recbandits
            made[label] = spec
            continue
        made[label] = json.loads(json.dumps({"arm": spec["arm"], **model.get_params()}))
    return made


def carryover_of(settings: Settings) -> JsonObject:
    """The carry-over a version switch logs under ``settings``: ``{"mode", "gamma"}``."""
    return {"mode": settings.posterior_carryover,
            "gamma": carryover_gamma(settings.posterior_carryover, settings.carryover_discount)}


def fit_candidate(spec: Mapping[str, Mapping[str, object]], train: Dataset,
                  seed: int | None) -> dict[str, Recommender]:
    """Fit the arms of a gate spec on ``train`` (each seeded with ``seed`` unless the spec sets
    ``random_state``), logging each fit as :func:`serving.armset.fit_arms` does.

    Parameters
    ----------
    spec : mapping
        ``{label: {"arm": registry name, param: value}}`` (``"arm"`` defaults to the label).
    train : Dataset
    seed : int or None
    """
    unfitted = {}
    for label, params in spec.items():
        rest = {k: v for k, v in params.items() if k not in ("arm", "random_state")}
        state = params.get("random_state", seed)
        unfitted[label] = registry.make_arm(
            str(params.get("arm", label)),
            random_state=None if state is None else int(state),  # type: ignore[call-overload]
            **rest)
    return refit_like(unfitted, train)


#: The largest version number: the versions table's column is 32-bit on PostgreSQL.
MAX_VERSION = 2**31 - 1
#: The versions as help and API texts say them.
VERSION_RANGE = f"1..{MAX_VERSION}"

#: A version as written in a path or on the command line: digits, no sign, leading zero or
#: underscore (``int()`` would read ``"1_0"`` as 10 and ``"+2"``, ``"02"`` as 2).
_VERSION_TEXT = re.compile(r"[1-9][0-9]*")


def parse_version(value: int | str) -> int:
    """A model version as the API and ``recbandits models`` take it (the one check of both).

    Parameters
    ----------
    value : int or str
        A whole number 1..:data:`MAX_VERSION`; as text, its plain decimal digits.

    Returns
    -------
    int

    Raises
    ------
    ModelsError
        Status 422 for anything else (naming the value and what is allowed).
    """
    allowed = (f"a model version is a whole number from 1 to {MAX_VERSION} written in plain "
               "digits (no sign, leading zero, underscore, point or space)")
    if isinstance(value, str):
        # The length bound first: int() of a long digit string costs time.
        if (_VERSION_TEXT.fullmatch(value) is None or len(value) > len(str(MAX_VERSION))
                or int(value) > MAX_VERSION):
            raise ModelsError(f"{allowed}, got {value!r}", 422)
        return int(value)
    if isinstance(value, bool) or not isinstance(value, int):
        raise ModelsError(f"{allowed}, got {value!r} of type {type(value).__name__}", 422)
    if not 1 <= value <= MAX_VERSION:
        raise ModelsError(f"{allowed}, got {value!r}", 422)
    return value


def catalog_fingerprint(catalog: Dataset) -> str:
    """The base catalogue's identity, as every version row records it (``data["catalog"]``):
    ``name:rating count:hash``, the hash a SHA-256 (16 hex digits) of its sorted item ids and
    of its ratings' (user, item, rating, time) rows, hashed by pandas and sorted (so the rows'
    order does not matter). Deterministic; about 10 ms for MovieLens 100K.

    Two runs with settings that load another catalogue (another ``--dataset`` or ``--data``,
    or another ``--seed`` for the synthetic one: the same ids, other ratings) get different
    fingerprints, so arms fitted on one are never published to a store serving the other.
    """
    return f"{catalog.name}:{int(catalog.n_ratings)}:{ratings_hash(catalog)}"


def ratings_hash(data: Dataset) -> str:
    """A SHA-256 (16 hex digits) of ``data``'s sorted item ids and of its ratings' (user,
    item, rating, time) rows, hashed by pandas and sorted (the rows' order does not matter);
    its name is left out. What :func:`catalog_fingerprint` and a fit's data span
    (:func:`data_span`, ``data["train"]``) record.
    """
    rows = pd.util.hash_pandas_object(
        data.ratings[["user_id", "item_id", "rating", "timestamp"]], index=False)
    digest = hashlib.sha256(np.sort(data.item_ids).astype("<i8").tobytes())
    digest.update(np.sort(rows.to_numpy()).astype("<u8").tobytes())
    return digest.hexdigest()[:16]


def store_catalog(store: Store) -> str | None:
    """The fingerprint of the catalogue the store's arms were fitted on: that of the first
    version recording one (None for a store from before fingerprints: nothing to check).
    """
    return next((str(r.data["catalog"]) for r in sorted(store.versions(),
                                                         key=lambda r: r.version)
                 if r.data.get("catalog")), None)


#: Why a new version must serve the live version's arms (:func:`check_arm_set`'s default).
UNLOADABLE = ("a version of other arms could not be loaded by the workers", ", or serve the new "
              "arm set with 'recbandits serve'")


def check_arm_set(store: Store, names: Sequence[str], what: str,
                  why: tuple[str, str] = UNLOADABLE, order: Sequence[str] = (),
                  remedy: str | None = None) -> None:
    """Refuse ``what`` (a ModelsError, 409) when ``names`` is not the arm set of the live
    version: workers load the arms they serve from the new version's folder, so a version of
    other arms would be live in the table while no worker can load it (nothing to check
    before a version is recorded). ``why``: the consequence, and what else to do besides
    running with the live arms (``rebuild-state``: its fold would not be the workers').
    ``order``: the live arms in the order the hint names them (default: the version's; a
    command that folds the workers' statistics passes theirs, found by attack: the hint named
    them sorted, and a purge run with that order left a snapshot no worker could restore).
    ``remedy``: what to do instead of running with the live arms, for ``what`` whose arms do
    not come from the settings (a promotion's: the version's own).
    """
    served = live_arms(store)
    if served is None:
        return
    version, arms = served
    live = sorted(arms)
    if sorted(names) != live:
        hint = ",".join(order if sorted(order) == live else arms)
        remedy = remedy if remedy is not None else f"run with --arms {hint}{why[1]}"
        raise ModelsError(f"{what} the arms {sorted(names)}, but the live version {version} "
                          f"serves {live}: {why[0]} ({remedy})")


def live_arms(store: Store) -> tuple[int, list[str]] | None:
    """The live version and the names of the arms it serves, in the order it recorded them;
    None before a version with arms is recorded (or in a store older than the versions table).
    """
    if not store.has_versions():
        return None
    served = store.policy_meta()
    rows = [] if served is None else store.versions(served.version)
    if not rows or not rows[0].arms:
        return None
    return rows[0].version, list(rows[0].arms)


def check_catalog(store: Store, fingerprint: str | None, what: str,
                  unchanged: str = "nothing was fitted, recorded or served") -> None:
    """Refuse ``what`` (a ModelsError, 409) when ``fingerprint`` is not the store's catalogue
    (:func:`store_catalog`; nothing to check while either is unknown); the message ends with
    ``unchanged``, what the refusal left as it was.
    """
    expected = store_catalog(store)
    if expected is not None and fingerprint is not None and fingerprint != expected:
        raise ModelsError(f"{what} fitted on the catalogue {fingerprint}, but this store's "
                          f"arms are fitted on the catalogue {expected} (name:ratings:item-id "
                          "hash): run with the service's settings (--dataset, --seed, "
                          f"RECBANDITS_DATA); {unchanged}")


def data_span(train: Dataset, n_feedback: int, log_seq: int,
              catalog: Dataset | None = None) -> JsonObject:
    """What a fit saw, as the versions table records it: its events' count and time span
    (``train``), the kept log ratings among them (``n_feedback``), the log position read
    (``log_seq``), the base catalogue's fingerprint (``catalog``, default ``train``;
    :func:`catalog_fingerprint`) and the hash of the training data itself (``train``:
    :func:`ratings_hash`, by which a retrain on the served version's data publishes nothing).
    """
    times = train.ratings["timestamp"]
    return {"n_ratings": int(train.n_ratings), "n_feedback_ratings": int(n_feedback),
            "first_event": int(times.min()) if len(times) else None,
            "last_event": int(times.max()) if len(times) else None, "log_seq": int(log_seq),
            "catalog": catalog_fingerprint(train if catalog is None else catalog),
            "train": ratings_hash(train)}


def _unchanged(store: Store, served: int | None, data: JsonObject, arms: JsonObject
               ) -> str | None:
    """Why a retrain would publish nothing new (None: it would): its training data's hash
    (``data["train"]``) and every arm's hyper-parameters (``arms``) are those the served
    version ``served`` recorded. A version recorded before training hashes has none, so a
    retrain always runs against it.
    """
    row = next(iter(store.versions(served)), None) if served is not None else None
    if (row is None or row.data.get("train") != data["train"]
            or as_made(row.arms) != as_made(arms)):
        return None
    return (f"nothing to retrain: the training data ({data['n_ratings']} ratings, "
            f"{data['n_feedback_ratings']} of them from the log; hash {data['train']}) and "
            f"every arm's hyper-parameters are those of the served version {served}; nothing "
            "was fitted, recorded or served")


def _gate(settings: Settings, train: Dataset, candidate: Spec, serving: Spec
          ) -> tuple[bool, str, JsonObject | None, float]:
    """Run the gate: (accepted, reason, report, seconds). A gate that cannot run (too few
    events to cut) rejects, saying why: nothing vouches for the candidate then.
    """
    if not settings.gate_enabled or not candidate:
        return True, "gate disabled" if candidate else "no arm to refit", None, 0.0
    start = time.perf_counter()
    holdout = ({"cut_time": int(train.ratings["timestamp"].max() - settings.gate_holdout_s)}
               if settings.gate_holdout_s is not None
               else {"holdout_fraction": settings.gate_holdout})
    try:
        report = evaluate_gate(train, candidate, serving, margin=settings.gate_margin,
                               relevance_threshold=settings.gate_relevance,
                               n_bootstrap=settings.gate_bootstrap,
                               random_state=settings.seed or 0, **holdout)
    except ValueError as exc:
        return False, f"the gate could not evaluate the candidate: {exc}", None, (
            time.perf_counter() - start)
    seconds = time.perf_counter() - start
    gate = {**report.to_dict(), "seconds": seconds}
    return report.decision == "promote", report.reason, gate, seconds


#: What publishes a version of each kind, as a refusal names it.
KIND_SAID = {"start": "a serve start", "retrain": "a retrain", "promote": "a promotion",
             "rollback": "a rollback"}


def _moved_on(store: Store, live: int | None, gated: int | None, done: str) -> ModelsError:
    """The refusal of a retrain whose arms were gated against version ``gated`` while
    ``live`` is served: 409, naming the versions served since and what published each (it
    said "a promotion or rollback came first" after another retrain; found by a README
    check), and what was ``done``. A worker's retrain is gated against the version it loaded
    at its last refresh, so the retry waits for its next one.
    """
    since = [f"{r.version} ({KIND_SAID.get(r.kind, r.kind)})" for r in store.versions()
             if gated is not None and r.version > gated and r.served_seq is not None]
    moved = f"served since: {', '.join(since)}" if since else "the live version moved"
    return ModelsError(f"the live version is {live}, not version {gated} whose arms this "
                       f"retrain is gated against ({moved}); {done}: retrain again against "
                       "the arms served now (a worker loads them within one refresh interval)")


def retrain(settings: Settings, store: Store, catalog: Dataset,
            models: Mapping[str, Recommender], *,
            lock: AbstractContextManager[object] | None = None,
            candidate: Mapping[str, Mapping[str, object]] | None = None,
            serve: bool = True, expect_live: int | None = None) -> RetrainResult:
    """Fit a candidate arm set, gate it, and serve it only if the gate accepts it.

    The training data is ``catalog`` with the items added at run time plus the ratings of the
    log (one per (user, item), by the rule book: :func:`serving.armset.training_set`). The
    arms that learn from the stream are not refitted (their state is a fold of the log from
    their base fit, which is what is saved for them) and not gated. The refitted arms exclude
    from a user's slates their base ratings and the items of their events whose type excludes
    (:func:`serving.armset.seen_after_retrain`).

    Parameters
    ----------
    settings : Settings
        ``arm_params`` (the candidate), ``gate_*`` and ``posterior_carryover``.
    store : Store
    catalog : Dataset
    models : mapping of str to Recommender
        The served arms, as served (their hyper-parameters are the gate's serving side).
    lock : context manager, optional
        Held while the version's row is written: with the arm set built and the version
        served (the service's advance lock: its refresher may grow the live arms meanwhile),
        or the candidate or rejected row recorded (the retrain lease's guard: a retrain whose
        lease was taken over writes nothing); a failure serves nothing.
    candidate : mapping, optional
        ``{arm: {"arm": registry name, param: value}}`` instead of the settings' arms (a test
        hook: e.g. ``{"svd": {"arm": "random"}}`` is a broken candidate).
    serve : bool, default True
        False: an accepted candidate is saved and recorded with status ``candidate``, served
        only when promoted (``recbandits models promote V``).
    expect_live : int, optional
        The version whose arms ``models`` are (default: the live one when the retrain starts).
        The new version is served only if it is still the live one when it is published: a
        promotion or rollback made during the fit is not undone by a candidate gated against
        other arms.

    Returns
    -------
    RetrainResult
        Status ``unchanged`` (nothing fitted, gated, recorded or served; the posterior is
        untouched) when the training data (:func:`ratings_hash` of the log ratings over the
        catalogue) and every arm's hyper-parameters equal those the served version recorded.

    Raises
    ------
    ModelsError
        ``expect_live`` is not the live version, when the retrain starts (nothing fitted) or
        when it would serve the new arms (409; nothing served or recorded, the saved arms
        removed): retrain again against the arms served now. ``catalog`` is not the
        catalogue the store's arms were fitted on (:func:`catalog_fingerprint`; 409, nothing
        fitted): settings that load another catalogue would publish arms no worker can load.
    """
    start = time.perf_counter()
    served = store.policy_meta()
    if expect_live is None and served is not None:
        expect_live = served.version
    if served is not None and served.version != expect_live:
        raise _moved_on(store, served.version, expect_live, "nothing was fitted")
    check_catalog(store, catalog_fingerprint(catalog), "this retrain's arms would be")
    check_arm_set(store, list(models), "this retrain would fit")
    log_seq = store.log_seq()
    ratings = store.ratings_frame()
    base = with_added_items(catalog, store.items_after(0))
    # Every kept rating trains (a view's too); the base ratings rank as explicit ratings.
    train = training_set(base, ratings,
                         base_precedence=settings.rule_book().precedence(EventType.rating))
    live = [n for n, m in models.items() if m.learns_from_stream]
    refit = [n for n in models if n not in live]
    spec: Spec = {n: dict(candidate[n]) if candidate is not None and n in candidate
                  else arm_spec(n, registry.make_arm(n, random_state=settings.seed,
                                                     **settings.fit_params().get(n, {})))
                  for n in refit}
    serving: Spec = {n: arm_spec(n, models[n]) for n in refit}
    data = data_span(train, len(ratings), log_seq, catalog)
    params: JsonObject = {**spec, **{n: arm_spec(n, models[n]) for n in live}}
    # A refit on the served version's data with its hyper-parameters would pass the gate and
    # publish a copy, which under posterior_carryover reset or discount would wipe or discount
    # the posterior at every retrain_every interval for nothing.
    same = _unchanged(store, expect_live, data, params)
    if same is not None:
        logger.info("retrain: %s", same)
        return RetrainResult("unchanged", int(expect_live or 0), int(expect_live or 0), same,
                             len(ratings), None, 0.0, time.perf_counter() - start,
                             tuple(models), catalog.name, live_arms=tuple(live))
    accepted, reason, gate, gate_seconds = _gate(settings, train, spec, serving)
    guard = lock if lock is not None else contextlib.nullcontext()
    if not accepted:
        with guard:
            row = store.record_version(status="rejected", reason=reason, arms_dir=None,
                                       arms=params, data=data, gate=gate)
        served = store.policy_meta()
        logger.warning("retrain rejected (version %d): %s", row.version, reason)
        return RetrainResult("rejected", row.version, served.version if served else 0, reason,
                             len(ratings), gate, gate_seconds, time.perf_counter() - start,
                             tuple(models), catalog.name, live_arms=tuple(live))
    fitted = fit_candidate(spec, train, settings.seed)
    # A fit marks every training pair seen; the rule book says which of them the user must not
    # be shown again (a viewed item may still be recommended, a purchased one not).
    seen = seen_after_retrain(train, base, ratings)
    for model in fitted.values():
        model.seen_ = seen.copy()
    # The stream-learning arms are never refitted: the new folder gets their served base fit
    # (what the log folds from), so rebuild-state folds the same arms whatever is promoted.
    state_dir = settings.resolved_state_dir()
    bases = (load_arms(arms_folder(state_dir, served.arms_dir), live) if served is not None
             else refit_like({n: models[n] for n in live}, catalog, seed_time=seed_time(store)))
    if not serve:  # saved for a later promotion; nothing served changes
        with guard, arms_lock(state_dir):
            folder = save_arms({n: fitted[n] if n in fitted else bases[n] for n in models},
                               new_arms_folder(state_dir))
            row = store.record_version(status="candidate", reason=reason,
                                       arms_dir=recorded_arms_dir(folder),
                                       arms=params, data=data, gate=gate)
        served = store.policy_meta()
        return RetrainResult("candidate", row.version, served.version if served else 0,
                             reason, len(ratings), gate, gate_seconds,
                             time.perf_counter() - start, tuple(models), catalog.name,
                             live_arms=tuple(live))
    with guard:
        arm_set = ArmSet.build({n: fitted[n] if n in fitted else models[n] for n in models},
                               catalog, version=0, cold_start_arm=settings.cold_start_arm,
                               cache_size=settings.score_cache_size,
                               added=store.items_after(0))
        with arms_lock(state_dir):
            folder = save_arms({n: fitted[n] if n in fitted else bases[n] for n in models},
                               new_arms_folder(state_dir))
            try:
                row = store.serve_version(
                    kind="retrain", arms_dir=recorded_arms_dir(folder), arms=params,
                    data=data, gate=gate,
                    reason=reason, changed_arms=refit, carryover=carryover_of(settings),
                    retire_reason="replaced by version {version} (retrain)",
                    expect_live=expect_live)
            except ModelsError:
                # Nothing points at the folder: it would only take room.
                shutil.rmtree(folder, ignore_errors=True)
                now = store.policy_meta()
                raise _moved_on(store, None if now is None else now.version, expect_live,
                                "nothing was served or recorded") from None
    object.__setattr__(arm_set, "version", row.version)
    logger.info("retrained on %s: policy version %d", train, row.version)
    return RetrainResult("live", row.version, row.version, reason, len(ratings), gate,
                         gate_seconds, time.perf_counter() - start, tuple(models), catalog.name,
                         arm_set, tuple(live))


def show(store: Store, version: int) -> ModelVersion:
    """The row of ``version``.

    Parameters
    ----------
    store : Store
    version : int

    Raises
    ------
    ModelsError
        No such version (status 404; the message lists the recorded ones); not a version
        number (422, :func:`parse_version`).
    """
    rows = store.versions(parse_version(version))
    if not rows:
        known = [r.version for r in store.versions()]
        raise ModelsError(f"no model version {version}; recorded versions: {known}", 404)
    return rows[0]


def promote(settings: Settings, store: Store, version: int, *,
            kind: Literal["promote", "rollback"] = "promote",
            reason: str | None = None, expect_live: int | None = None) -> ModelVersion:
    """Serve the arms of ``version`` (retired or a candidate) as a new version pointing at its
    folder; the posterior carry-over applies to the arms it refits (every arm but those that
    learn from the stream, whose state is a fold of the log).

    Parameters
    ----------
    settings : Settings
        ``posterior_carryover`` (the arms are the row's own: ``row.arms``).
    store : Store
    version : int
    kind : {"promote", "rollback"}, default "promote"
        What the new row records as its making.
    reason : str, optional
        The new row's reason (and the retired one's); default: says which version is promoted.
    expect_live : int, optional
        The live version the caller decided on (default: the one read here); if another
        promotion or rollback changed it meanwhile, nothing is served (409).

    Returns
    -------
    ModelVersion
        The new live row.

    Raises
    ------
    ModelsError
        ``version`` unknown (404) or not a version number (422), rejected by the gate (no
        saved arms), live already (itself, or its arms as another version), fitted on another
        catalogue than the store's, its folder lacks a served arm, or the live version changed
        since it was read (409); the message names it and what is allowed.
    """
    row = show(store, version)
    served = store.policy_meta()
    if row.arms_dir is None:
        raise ModelsError(f"model version {version} was rejected by the gate ({row.reason}); "
                          "its arms were never saved, so it cannot be served: retrain with "
                          "other settings instead")
    if row.status == "live":
        raise ModelsError(f"model version {version} is live already")
    check_catalog(store, row.data.get("catalog"), f"model version {version}'s arms were")
    # Its own arms: settings cannot change them (found by a README check: the hint said to
    # run with --arms of the live set, which refused the rollback again).
    check_arm_set(store, list(row.arms), f"model version {version} holds", remedy=(
        f"serve its arm set first, 'recbandits serve --arms {','.join(row.arms)}' (a new "
        f"version of those arms as the live version has them), then promote version "
        f"{version}"))
    if served is not None and row.arms_dir == served.arms_dir:
        # The same arms again would be a new version changing nothing, whose carry-over
        # (reset, discount) wipes what the policy learned (found by attack).
        raise ModelsError(f"the arms of model version {version} are live already (served as "
                          f"version {served.version}): nothing to promote")
    # The row's own arms, not the caller's settings: `recbandits models promote` may run with
    # other settings than the service's (the arms a worker reloads are those of its folder).
    refitted = [n for n, spec in row.arms.items()
                if not registry.resolve(str(spec.get("arm", n))).cls.learns_from_stream]
    folder = arms_folder(settings.resolved_state_dir(), row.arms_dir)
    # Every arm's file, the live arms' base fits too: rebuild-state and a later start fold
    # them from it (found by attack: a version without popularity.npz was promoted, then
    # rebuild-state said "not rebuilt" and the next start refitted it as a new version).
    missing = missing_arms(folder, list(row.arms))
    if missing:
        raise ModelsError(f"model version {version} cannot serve its arms {list(row.arms)}: "
                          f"{missing} missing in {folder} (nor in "
                          f"{settings.resolved_state_dir() / 'arms'}); if another state folder "
                          "holds them, pass it as --state-dir")
    # Every file a worker loads (review: a truncated popularity.npz was promoted, as svd's was).
    unreadable = unreadable_arms(folder, list(row.arms))
    if unreadable:
        raise ModelsError(f"model version {version} cannot serve its arms {list(row.arms)}: "
                          "the saved files of " + "; ".join(
                              f"{name} ({arm_file(folder, name)}) cannot be read: {why}"
                              for name, why in unreadable.items())
                          + "; nothing was promoted")
    new = store.serve_version(
        kind=kind, arms_dir=row.arms_dir, arms=row.arms, data=row.data, gate=row.gate,
        reason=reason or f"promoted: the arms of version {version}", changed_arms=refitted,
        carryover=carryover_of(settings), source_version=row.source_version or row.version,
        retire_reason=reason or f"replaced by version {{version}} (version {version} promoted)",
        expect_live=expect_live if expect_live is not None
        else (None if served is None else served.version))
    logger.info("version %d serves the arms of version %d", new.version, version)
    return new


def rollback(settings: Settings, store: Store) -> ModelVersion:
    """Serve again the arms of the version served before the live one (as a new version).

    The served versions are a history that a rollback undoes, as an undo stack: taken in the
    order they started being served, each pushes itself, and a rollback pops every version
    back to the one whose arms it serves again (it takes that one's place). The target is
    the nearest version below the live one with other arms. Repeated, it walks back through
    the history and ends with "nothing to roll back to"; a promotion is a step forward, which
    the next rollback undoes. (Skipping only the version a rollback directly followed let
    three versions bounce for ever between the first two arms: found by attack.)

    Parameters
    ----------
    settings : Settings
    store : Store

    Returns
    -------
    ModelVersion
        The new live row.

    Raises
    ------
    ModelsError
        No version is live, or none served before it with other arms (409).
    """
    rows = store.versions()
    order = sorted((r for r in rows if r.served_seq is not None or r.kind == "start"),
                   key=lambda r: (r.served_seq is not None, r.served_seq or 0, r.version))
    live = next((r for r in rows if r.status == "live"), None)
    if live is None or live not in order:
        raise ModelsError("no version is live; nothing to roll back")
    history: list[ModelVersion] = []
    for row in order[:order.index(live) + 1]:
        if row.kind == "rollback":  # undoes every version back to the one it serves again
            while history and history[-1].arms_dir != row.arms_dir:
                history.pop()
            if history:
                history.pop()
        history.append(row)
    choices = [r for r in history[:-1] if r.arms_dir is not None
               and r.arms_dir != live.arms_dir]
    if not choices:
        raise ModelsError(f"nothing to roll back to: no version served before version "
                          f"{live.version} with other arms (see 'recbandits models list')")
    target = choices[-1]
    return promote(settings, store, target.version, kind="rollback",
                   reason=f"rolled back from version {live.version} to the arms of version "
                          f"{target.version}", expect_live=live.version)


@dataclass(frozen=True)
class ModelsResult:
    """What ``recbandits models`` did (:func:`run`).

    Attributes
    ----------
    action : {"list", "show", "promote", "rollback"}
    rows : list of ModelVersion
        Every version (list), the one asked for (show), or the new live version (promote,
        rollback).
    live : int or None
        The version served now.
    """

    action: str
    rows: list[ModelVersion]
    live: int | None

    @property
    def exit_code(self) -> int:
        """``recbandits models``' status: 0 (a refusal raises :data:`ModelsError`)."""
        return 0

    def __str__(self) -> str:
        return format_models(self)


#: The actions of ``recbandits models`` and whether each takes a version.
ACTIONS = {"list": False, "show": True, "promote": True, "rollback": False}


def run(settings: Settings, action: str, version: int | str | None = None) -> ModelsResult:
    """``recbandits models ACTION [V]`` on the settings' store.

    Parameters
    ----------
    settings : Settings
    action : {"list", "show", "promote", "rollback"}
    version : int or str, optional
        Required by ``show`` and ``promote``, refused by the others (:func:`parse_version`).

    Returns
    -------
    ModelsResult

    Raises
    ------
    ModelsError
        An unknown action, a version missing or given where none is taken, no store yet, or
        what :func:`show`, :func:`promote` and :func:`rollback` raise.
    """
    if action not in ACTIONS:
        raise ModelsError(f"action must be one of {list(ACTIONS)}, got {action!r}", 400)
    if ACTIONS[action] != (version is not None):
        takes = "takes a version V" if ACTIONS[action] else "takes no version"
        raise ModelsError(f"{action} {takes}, got version={version!r}", 400)
    if version is not None:
        version = parse_version(version)
    try:
        # list and show only read (Store's read_only); promote and rollback upgrade it below.
        store = open_store(settings.resolved_db_url(), timeout_s=settings.store_timeout_s,
                           create=False, read_only=action in ("list", "show"))
    except StoreNotFoundError as exc:
        raise NoVersionsError(str(exc)) from None
    try:
        # Listing writes nothing (found by attack: it gave another program's database, or an
        # empty file, the whole schema); a store of an older recbandits is upgraded before a
        # promotion or rollback writes to it.
        if not store.has_versions():
            raise NoVersionsError(f"{store.describe()} holds none")
        if action in ("promote", "rollback"):
            # The live arms' rows, not the settings' (the default list would give arms it
            # does not serve a pulls row; found in review).
            served = live_arms(store)
            store.create_schema(settings.arms if served is None else served[1],
                                settings.rule_book())
        if action == "show":
            assert version is not None  # checked above
            rows = [show(store, version)]
        elif action == "promote":
            assert version is not None
            rows = [promote(settings, store, version)]
        elif action == "rollback":
            rows = [rollback(settings, store)]
        else:
            rows = store.versions()
        meta = store.policy_meta()
    finally:
        store.dispose()
    return ModelsResult(action, rows, None if meta is None else meta.version)


def _when(unix_s: float | None) -> str:
    """``unix_s`` as an ISO date-time in UTC to the second ('-' for None)."""
    if unix_s is None:
        return "-"
    return datetime.fromtimestamp(unix_s, UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


def format_gate(gate: JsonObject | None, reason: str) -> str:
    """The gate's report as lines: per gated arm, HR@10 and NDCG@10 of the candidate and the
    serving arms with their intervals; then the decision's reason.
    """
    if gate is None:
        return f"gate: not run ({reason})"
    k = gate["k"]
    # The users scored are those with a hit (review: "of N users" read as the hold-out's).
    held = (f"hold-out of {gate['n_holdout']} events of {gate['n_users']} users from "
            f"{_when(gate['cut_time'])}" if "n_relevant" not in gate  # an older release's row
            else f"hold-out of {gate['n_holdout']} events from {_when(gate['cut_time'])}: "
            f"{gate['n_relevant']} hits (rated at least {gate['relevance_threshold']:g}) of "
            f"{gate['n_users']} users, scored")
    lines = [f"gate: {gate['decision']} (margin {gate['margin']:g}; {held}; "
             f"{gate.get('seconds', 0.0):.1f} s)"]
    for label, metrics in gate["metrics"]["candidate"].items():
        cells = []
        for m, name in (("hit_rate", f"HR@{k}"), ("ndcg", f"NDCG@{k}")):
            c = metrics[m]
            s = gate["metrics"]["serving"].get(label, {}).get(m)
            cells.append(f"{name} {c['value']:.4f} [{c['low']:.4f}, {c['high']:.4f}]"
                         + (f" vs serving {s['value']:.4f} [{s['low']:.4f}, {s['high']:.4f}]"
                            if s else " (new arm)"))
        lines.append(f"  {label:<12} " + "; ".join(cells))
    lines.append(f"  reason: {reason}")
    return "\n".join(lines)


def format_models(result: ModelsResult) -> str:
    """What ``recbandits models`` prints: a table (list), a row's JSON (show), or the new
    live version (promote, rollback).
    """
    import json

    if result.action == "show":
        return json.dumps(result.rows[0].to_dict(), indent=2, default=str)
    if result.action in ("promote", "rollback"):
        row = result.rows[0]
        return (f"now serving version {row.version} (the arms of version "
                f"{row.source_version}, {row.kind}; log position {row.served_seq}; carry-over "
                f"{row.carryover['mode']} on {', '.join(row.changed_arms) or 'no arm'}): every "
                "worker loads it within one refresh interval")
    head = (f"{'version':>7}  {'status':<10}{'kind':<9}{'created':<21}{'log pos':>10}"
            f"{'source':>7}  reason")
    lines = [head]
    for r in result.rows:
        lines.append(f"{r.version:>7}  {r.status:<10}{r.kind:<9}{_when(r.created_at):<21}"
                     f"{'-' if r.served_seq is None else r.served_seq:>10}"
                     f"{'-' if r.source_version is None else r.source_version:>7}  "
                     f"{r.reason if len(r.reason) <= 90 else r.reason[:87] + '...'}")
    lines.append(f"serving version {result.live}" if result.live is not None
                 else "no version served yet")
    return "\n".join(lines)
