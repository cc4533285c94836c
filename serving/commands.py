"""What the ``recbandits serve``, ``retrain`` and ``rebuild-state`` commands do.

The CLI (:mod:`experiments.cli`) only parses options into :class:`~serving.settings.Settings` and
calls these; they return an exit code and print the user-facing output.
"""

from __future__ import annotations

import logging
import os
import sys
import tempfile
from collections import Counter
from collections.abc import Mapping
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import TextIO

from arms.base import Recommender
from arms.data import load_movielens, make_synthetic
from arms.data.dataset import Dataset
from serving.armset import ArmSet, file_lock, fit_arms, load_arms, save_arms
from serving.policy import PolicyModel
from serving.service import retrain_arms
from serving.settings import Settings
from serving.store import Store, open_store

logger = logging.getLogger(__name__)


def load_catalog(settings: Settings) -> Dataset:
    """The base training data named by ``settings.dataset``."""
    if settings.dataset == "synthetic":
        return make_synthetic(settings.synthetic_users, settings.synthetic_items,
                              settings.synthetic_ratings, random_state=settings.seed or 0)
    return load_movielens(settings.data)


@dataclass
class Resources:
    store: Store
    catalog: Dataset
    arm_set: ArmSet


def prepare(settings: Settings, *, catalog: Dataset | None = None,
            arms: Mapping[str, Recommender] | None = None) -> Resources:
    """Open the store, and load the current arms (fitting and saving them the first time).

    Parameters
    ----------
    settings : Settings
    catalog : Dataset, optional
        Base data instead of ``load_catalog(settings)``.
    arms : mapping of name to fitted Recommender, optional
        The first version's arms instead of fitting ``settings.arms`` on the catalogue; their
        names must be ``settings.arms``. Ignored once a version is recorded in the store.

    Raises
    ------
    ValueError
        If ``arms`` does not match ``settings.arms``.
    """
    if arms is not None and list(arms) != list(settings.arms):
        raise ValueError(f"arms names {list(arms)} must equal settings.arms {settings.arms}")
    store = open_store(settings.resolved_db_url(), timeout_s=settings.store_timeout_s)
    store.create_schema(settings.arms)
    catalog = catalog if catalog is not None else load_catalog(settings)
    state_dir = settings.resolved_state_dir()
    with file_lock(state_dir / "arms.lock"):
        meta = store.policy_meta()
        if meta is not None and all((Path(meta.arms_dir) / f"{n}.npz").is_file()
                                    for n in settings.arms):
            models = load_arms(Path(meta.arms_dir), settings.arms)
        else:
            if meta is not None:
                logger.warning("arms of version %d missing in %s; fitting them again",
                               meta.version, meta.arms_dir)
            models = dict(arms) if arms is not None else fit_arms(settings.arms, catalog,
                                                                  seed=settings.seed)
            stamp = datetime.now(UTC).strftime("%Y%m%dT%H%M%S")
            folder = str(save_arms(models, state_dir / "arms" / f"{stamp}-{os.getpid()}"))
            meta = (store.init_policy_meta(folder) if meta is None
                    else store.publish_version(folder))
    arm_set = ArmSet.build(models, catalog, version=meta.version,
                           cold_start_arm=settings.cold_start_arm,
                           cache_size=settings.score_cache_size)
    return Resources(store, catalog, arm_set)


def serve(settings: Settings) -> int:
    """Prepare the store and arms once, then run uvicorn with ``settings.workers`` workers."""
    import uvicorn

    resources = prepare(settings)
    resources.store.dispose()
    env = settings.to_env()
    os.environ.update(env)
    if settings.workers > 1 and not os.environ.get("PROMETHEUS_MULTIPROC_DIR"):
        os.environ["PROMETHEUS_MULTIPROC_DIR"] = tempfile.mkdtemp(prefix="recbandits-metrics-")
    print(f"recbandits: serving {', '.join(settings.arms)} (policy version "
          f"{resources.arm_set.version}) on http://{settings.host}:{settings.port} with "
          f"{settings.workers} worker(s); store {resources.store.describe()}", flush=True)
    uvicorn.run("serving.app:app_from_env", factory=True, host=settings.host,
                port=settings.port, workers=settings.workers, log_level=settings.log_level,
                access_log=False)
    return 0


def retrain(settings: Settings, out: TextIO | None = None) -> int:
    """Refit the arms on the base data plus feedback ratings and publish a new version.

    A running service picks the new version up within its refresh interval.
    """
    out = out if out is not None else sys.stdout  # looked up per call: tests redirect it
    resources = prepare(settings)
    version, n_ratings, _ = retrain_arms(settings, resources.store, resources.catalog,
                                         resources.arm_set.models)
    print(f"retrained {', '.join(settings.arms)} on {resources.catalog.name} plus "
          f"{n_ratings} feedback ratings: policy version {version}", file=out)
    resources.store.dispose()
    return 0


def rebuild_state(settings: Settings, out: TextIO | None = None) -> int:
    """Replay the decision log and compare with the stored posterior; 0 if they match, 1 if not.

    Prints, per arm, the stored successes, failures and pulls beside the replay's, then
    whether the policy rebuilt by replay equals the policy restored from the store.
    """
    out = out if out is not None else sys.stdout  # looked up per call: tests redirect it
    store = open_store(settings.resolved_db_url(), timeout_s=settings.store_timeout_s)
    try:
        stored = store.arm_counts()
        observations, pulls = store.replay_observations()
    finally:
        store.dispose()
    model = PolicyModel(settings.arms, prior_alpha=settings.prior_alpha,
                        prior_beta=settings.prior_beta)
    replayed = model.replay(observations)
    restored = model.build(stored)
    successes: Counter[str] = Counter()
    failures: Counter[str] = Counter()
    for _, arm, reward in observations:
        (successes if reward > 0 else failures)[arm] += 1
    arms = sorted(set(stored) | set(successes) | set(failures) | set(pulls))
    header = (f"{'arm':<14}{'stored s':>10}{'replay s':>10}{'stored f':>10}{'replay f':>10}"
              f"{'stored n':>10}{'replay n':>10}")
    print(f"store: {store.describe()}  ({len(observations)} rewards replayed)", file=out)
    print(header, file=out)
    counts_match = True
    for arm in arms:
        s = stored.get(arm)
        row = (s.successes if s else 0, successes[arm], s.failures if s else 0, failures[arm],
               s.pulls if s else 0, pulls[arm])
        counts_match &= row[0] == row[1] and row[2] == row[3] and row[4] == row[5]
        print(f"{arm:<14}" + "".join(f"{v:>10}" for v in row), file=out)
    policies_match = replayed.state_dict()["stats"] == restored.state_dict()["stats"]
    match = counts_match and policies_match
    print(f"counts match: {'yes' if counts_match else 'NO'}; replayed policy equals stored "
          f"policy: {'yes' if policies_match else 'NO'}", file=out)
    print(f"match: {'yes' if match else 'NO'}", file=out)
    return 0 if match else 1
