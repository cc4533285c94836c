"""The service's domain logic: route a request through the policy, attribute feedback, retrain.

Routes call :class:`RecommendationService` and hold no modelling logic. The service keeps two
immutable snapshots, swapped by reference: the :class:`~serving.armset.ArmSet` (changed by a
retrain) and the :class:`PolicySnapshot` (rebuilt from the store's counts by the writer thread
every ``refresh_interval_s`` and right after this worker's own feedback commits).

Cold start: a user id the arms do not know (not in the training catalogue) is served the
popularity ranking of ``cold_start_arm`` outside the policy. The decision is logged with
propensity 1 and ``cold_start = true``; feedback on it is stored (and kept as a rating for the
next retrain, after which the user is known) but updates no arm.
"""

from __future__ import annotations

import asyncio
import dataclasses
import logging
import os
import threading
import time
import uuid
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import numpy as np

from arms.data.dataset import Dataset
from arms.errors import unknown_id_message
from serving.armset import ArmSet, file_lock, load_arms, refit_like, save_arms, training_set
from serving.errors import (
    EventConflictError,
    EventNotFoundError,
    InvalidInputError,
    StoreUnavailableError,
)
from serving.policy import PolicyModel, PolicySnapshot
from serving.schemas import FeedbackIn
from serving.session import session_adjust
from serving.settings import Settings
from serving.store import ArmCounts, FeedbackResult, FeedbackWrite, Store
from serving.store.types import RATING_OF_TYPE

logger = logging.getLogger(__name__)


@dataclass(frozen=True)
class Recommendation:
    event_id: str
    user_id: int
    arm: str
    propensity: float
    policy_version: int
    cold_start: bool
    items: list[dict[str, Any]]


class RecommendationService:
    """Everything the routes need, for one worker process.

    Parameters
    ----------
    settings : Settings
    store : Store
    catalog : Dataset
        The base training data (MovieLens or synthetic): item titles and genres, and what a
        retrain starts from.
    arm_set : ArmSet
        The arms of the current policy version.
    policy_model : PolicyModel
        Builds the bandit policy from stored counts.
    """

    def __init__(self, settings: Settings, store: Store, catalog: Dataset, arm_set: ArmSet,
                 policy_model: PolicyModel) -> None:
        self.settings = settings
        self.store = store
        self.catalog = catalog
        self.arm_set = arm_set
        self.policy_model = policy_model
        self.rng = np.random.default_rng(settings.seed)
        self.writer: Any = None  # set by the app's lifespan (GroupCommitWriter)
        # Off-loop reads outside the request path (health, /policy): the request-path reads of
        # a PostgreSQL store are batched on the event loop instead (see _read).
        self.readers = ThreadPoolExecutor(max_workers=4, thread_name_prefix="recbandits-read")
        self.snapshot: PolicySnapshot = policy_model.snapshot({}, arm_set.version)
        self._loading: threading.Thread | None = None
        self._retrain_lock = threading.Lock()
        self._refresh_wanted = threading.Event()
        self._stopping = threading.Event()
        self._refresher: threading.Thread | None = None
        self.on_decision: Callable[[str], None] = lambda arm: None

    def start(self) -> None:
        """Read the state once, then keep it fresh in a background thread."""
        self.refresh()
        self.arm_set.warm()  # before the first request, so none pays for scoring
        self._refresher = threading.Thread(target=self._refresh_loop, daemon=True,
                                           name="recbandits-refresh")
        self._refresher.start()

    def close(self) -> None:
        self._stopping.set()
        self._refresh_wanted.set()
        if self._refresher is not None:
            self._refresher.join(5)
        self.readers.shutdown(wait=True)

    def policy_changed(self) -> None:
        """Ask for an early refresh (this worker just committed counted feedback)."""
        self._refresh_wanted.set()

    def _refresh_loop(self) -> None:
        # At most one rebuild per refresh interval: the selection probabilities cost ~20 ms.
        # Idle, a worker rebuilds every interval; asked early (its own counted feedback), it
        # rebuilds as soon as an interval has passed since the last rebuild. Either way another
        # worker's feedback reaches this worker's policy within one interval (plus ~20 ms).
        interval = self.settings.refresh_interval_s
        outage = False
        last = time.monotonic()
        while not self._stopping.is_set():
            self._refresh_wanted.wait(max(0.0, last + interval - time.monotonic()))
            if self._stopping.wait(max(0.0, last + interval - time.monotonic())):
                return
            self._refresh_wanted.clear()
            last = time.monotonic()
            try:
                self.refresh()
            except StoreUnavailableError as exc:  # once per outage, not once per tick
                if not outage:
                    logger.warning("cannot refresh the policy until the store is back: %s",
                                   exc.message)
                outage = True
            except Exception:  # must not kill the thread; next tick retries
                logger.exception("refreshing the policy from the store failed")
            else:
                if outage:
                    logger.warning("the store is back; policy refreshed")
                outage = False

    async def _read(self, kind: str, *args: Any) -> Any:
        """``Store.<kind>(*args)``, read where it is cheapest for this store.

        A store whose reads are cheap enough runs them inline (``Store.inline_reads``: an
        indexed read of a local SQLite file in WAL mode takes ~10 us and never waits for the
        writer). Otherwise the request-path reads (the group reader's kinds) join the writer's
        group reader if the store has one (PostgreSQL: one query per batch on the event loop);
        any other read goes to a thread.
        """
        if self.store.inline_reads:
            return getattr(self.store, kind)(*args)
        reader = getattr(self.writer, "reader", None)
        if reader is not None and kind in reader.KINDS:
            return await reader.read(kind, *args)
        return await asyncio.get_running_loop().run_in_executor(
            self.readers, getattr(self.store, kind), *args)

    # ------------------------------------------------------------------ periodic jobs
    def refresh(self) -> None:
        """Re-read counts and version from the store (writer thread); start loading new arms."""
        meta, counts = self.store.state()
        version = meta.version if meta else self.arm_set.version
        reused = self._reuse_snapshot(counts, version)
        self.snapshot = (reused if reused is not None
                         else self.policy_model.snapshot(counts, version))
        if meta and meta.version > self.arm_set.version and self._loading is None:
            self._loading = threading.Thread(target=self._load_version, args=(meta.version,
                                             meta.arms_dir), name="recbandits-arms", daemon=True)
            self._loading.start()

    def _reuse_snapshot(self, counts: dict[str, ArmCounts],
                        version: int) -> PolicySnapshot | None:
        """The current snapshot with ``counts`` if its posterior is theirs, else None.

        Only successes and failures move the posterior; pulls do not, so the selection
        probabilities (~20 ms to compute) are reused.
        """
        old = self.snapshot
        if old.version != version or any(
                (c.successes, c.failures) != (o.successes, o.failures)
                for c, o in ((counts.get(a), old.counts.get(a, ArmCounts()))
                             for a in self.policy_model.arms) if c is not None):
            return None
        return old if old.counts == counts else dataclasses.replace(old, counts=counts)

    def _load_version(self, version: int, arms_dir: str) -> None:
        try:
            models = load_arms(Path(arms_dir), self.arm_set.names)
            arm_set = ArmSet.build(models, self.catalog, version=version,
                                   cold_start_arm=self.settings.cold_start_arm,
                                   cache_size=self.settings.score_cache_size)
            arm_set.warm()
            self.arm_set = arm_set
            logger.info("now serving arms of policy version %d from %s", version, arms_dir)
        except Exception:
            logger.exception("could not load the arms of version %d from %s", version, arms_dir)
        finally:
            self._loading = None

    def settle(self) -> None:
        """Count decisions whose reward window closed without feedback as reward 0 (once)."""
        if self.store.settle_expired(time.time(), self.settings.settle_grace_s):
            self.refresh()

    # ------------------------------------------------------------------ recommendations
    async def recommend(self, user_id: int, k: int) -> Recommendation:
        """Pick an arm, take its top-``k`` for the user, log the decision; see the module doc."""
        arms = self.arm_set
        snapshot = self.snapshot
        history = await self._read("user_feedback", user_id)
        now = time.time()
        user = arms.user_index.get(user_id)
        if user is None:
            cold_start = True
            arm = self.settings.cold_start_arm
            pmf: Any = {arm: 1.0}
            propensity = 1.0
            ranking = arms.cold_start_ranking
        else:
            cold_start = False
            choice = int(np.searchsorted(snapshot.cdf, self.rng.random(), side="right"))
            choice = min(choice, len(arms.names) - 1)
            arm = arms.names[choice]
            pmf = snapshot.pmf_json
            propensity = snapshot.pmf_by_arm[arm]
            ranking = arms.ranking(arm, user)
        excluded, liked, disliked = self._split_history(history, arms, now)
        strength = self.settings.session_strength
        top = None
        if strength == 0 or not (liked.size or disliked.size):
            top = ranking.top(k, excluded)  # the common case: no partition of every score
        if top is None:
            scores = ranking.scores.astype(np.float64)
            scores[excluded] = -np.inf
            scores = session_adjust(scores, liked, disliked, arms.genre_unit, strength)
            top = top_k_row(scores, k)
        indices, values = top
        slate = arms.item_ids[indices].tolist()
        # 48 bits of milliseconds, then 80 random bits: unguessable like a uuid4, but the log's
        # primary-key index grows at its end instead of splitting pages at random.
        event_id = f"{int(now * 1000):012x}{os.urandom(10).hex()}"
        context = {"known_user": not cold_start, "k": k, "session_likes": int(liked.size),
                   "session_dislikes": int(disliked.size)}
        await self.writer.write_decision({
            "event_id": event_id, "created_at": now, "user_id": user_id, "context": context,
            "arm": arm, "propensity": propensity, "pmf": pmf, "slate": slate,
            "policy_version": arms.version, "cold_start": cold_start,
            "reward_deadline": now + self.settings.reward_window_s, "settled_at": None,
            "expired_zero": False,
        })
        self.on_decision(arm)
        titles, years, genres = arms.titles, arms.years, arms.genres
        items = [
            {"movie_id": movie, "title": titles[i], "year": years[i], "genres": genres[i],
             "score": v, "position": pos}
            for pos, movie, i, v in zip(range(1, len(slate) + 1), slate, indices.tolist(),
                                        values.tolist(), strict=True)
        ]
        return Recommendation(event_id, user_id, arm, propensity, arms.version, cold_start,
                              items)

    def _split_history(self, history: list[tuple[int, str, float]], arms: ArmSet,
                       now: float) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """Item indices of every movie the user gave feedback on (excluded from the slate), and
        of the session's likes (and clicks) and dislikes."""
        empty = np.empty(0, dtype=np.int64)
        if not history:
            return empty, empty, empty
        index = arms.item_index
        rows = [(index[m], t, at) for m, t, at in history if m in index]
        excluded = np.fromiter((r[0] for r in rows), dtype=np.int64, count=len(rows))
        since = now - self.settings.session_window_s
        liked = np.array([i for i, t, at in rows if at >= since and t != "dislike"], np.int64)
        disliked = np.array([i for i, t, at in rows if at >= since and t == "dislike"], np.int64)
        return excluded, liked, disliked

    # ------------------------------------------------------------------ feedback
    async def feedback(self, body: FeedbackIn) -> FeedbackResult:
        """Validate, attribute and store one feedback; see :mod:`serving` for the rules.

        Raises
        ------
        InvalidInputError
            Unknown movie, or a movie absent from the named event's slate (422).
        EventNotFoundError
            ``event_id`` not in the decision log (404).
        EventConflictError
            ``event_id`` served to another user (409).
        """
        arms = self.arm_set
        if body.movie_id not in arms.item_index:
            raise InvalidInputError(unknown_id_message("movie_id", body.movie_id,
                                                       arms.item_ids[:500]))
        now = time.time()
        feedback_type = body.feedback_type.value
        window = self.settings.reward_window_s
        if body.event_id is not None:
            decision = await self._read("decision", body.event_id)
            if decision is None:
                raise EventNotFoundError(f"event_id {body.event_id!r} is not in the decision log")
            if decision["user_id"] != body.user_id:
                raise EventConflictError(
                    f"event_id {body.event_id!r} was served to another user, not user_id "
                    f"{body.user_id}")
            if body.movie_id not in decision["slate"]:
                raise InvalidInputError(
                    f"movie_id {body.movie_id} was not in the slate of event {body.event_id!r} "
                    f"(it showed {decision['slate']})")
        else:
            decision = await self._read("latest_decision_showing", body.user_id,
                                        body.movie_id, now - window)
        reward = None
        arm = None
        counted = False
        if decision is None:
            note = ("movie never shown to this user within the reward window: kept as a rating "
                    "signal, no arm updated")
        else:
            arm = decision["arm"]
            reward = 1.0 if feedback_type in ("like", "click") else 0.0
            if decision["cold_start"]:
                note = "cold-start decision (served outside the policy): no arm updated"
            elif now > decision["reward_deadline"]:
                note = "after the decision's reward window closed: no arm updated"
            else:
                counted = True
                note = f"reward {reward:g} given to arm {arm}"
        values = {
            "created_at": now, "user_id": body.user_id, "movie_id": body.movie_id,
            "feedback_type": feedback_type,
            "event_id": None if decision is None else decision["event_id"],
            "event_key": "" if decision is None else decision["event_id"],
            "arm": arm, "reward": reward, "counted": counted, "note": note,
        }
        return await self.writer.write_feedback(
            FeedbackWrite(values, RATING_OF_TYPE.get(feedback_type)))

    # ------------------------------------------------------------------ policy and retraining
    async def policy_view(self) -> dict[str, Any]:
        """Posterior, counts and selection probability of every arm, read fresh from the store."""
        counts = await self._read("arm_counts")
        version = self.snapshot.version
        snapshot = self._reuse_snapshot(counts, version)
        if snapshot is None:  # feedback newer than this worker's snapshot: off the event loop
            snapshot = await asyncio.get_running_loop().run_in_executor(
                self.readers, self.policy_model.snapshot, counts, version)
        return self.policy_model.describe(snapshot, self.settings.reward_window_s)

    def retrain(self) -> tuple[int, int]:
        """Refit the arms on the catalogue plus feedback ratings and publish a new version.

        Runs in a thread; requests keep being served by the old arms until the swap.

        Returns
        -------
        (policy_version, n_feedback_ratings)
        """
        with self._retrain_lock:
            version, n_ratings, arm_set = retrain_arms(
                self.settings, self.store, self.catalog, self.arm_set.models)
            arm_set.warm()
            self.arm_set = arm_set
            self.refresh()
            return version, n_ratings


def top_k_row(scores: np.ndarray, k: int) -> tuple[np.ndarray, np.ndarray]:
    """:func:`arms.base.top_k` for one row, without its batch machinery (~5x faster).

    Same contract: the best ``k`` of ``scores`` (shape ``(n_items,)``), best first, ties to the
    lower index; excluded (``-inf`` or NaN) items are dropped rather than padded with ``-1``.
    """
    k = min(k, scores.size)
    if k < scores.size:
        kth = -np.partition(-scores, k - 1)[k - 1]
        if np.isnan(kth):  # fewer than k items are not NaN: every one of them is a candidate
            part = np.flatnonzero(~np.isnan(scores))
        else:
            above = np.flatnonzero(scores > kth)
            # Of the items tied at the k-th score, the lowest-indexed fill the remaining places.
            part = np.concatenate((above, np.flatnonzero(scores == kth)[:k - above.size]))
    else:
        part = np.arange(scores.size)
    part_scores = scores[part]
    order = np.lexsort((part, -part_scores))
    items, values = part[order], part_scores[order]
    keep = np.isfinite(values) | (values > 0)
    return items[keep], values[keep]


def retrain_arms(settings: Settings, store: Store, catalog: Dataset,
                 models: dict[str, Any]) -> tuple[int, int, ArmSet]:
    """Fit fresh copies of ``models`` on ``catalog`` + feedback ratings, save, publish."""
    ratings = store.ratings_frame()
    train = training_set(catalog, ratings)
    fitted = refit_like(models, train)
    state_dir = settings.resolved_state_dir()
    stamp = datetime.now(UTC).strftime("%Y%m%dT%H%M%S")
    with file_lock(state_dir / "arms.lock"):
        folder = save_arms(fitted, state_dir / "arms" / f"{stamp}-{uuid.uuid4().hex[:8]}")
        meta = store.publish_version(str(folder))
    arm_set = ArmSet.build(fitted, catalog, version=meta.version,
                           cold_start_arm=settings.cold_start_arm,
                           cache_size=settings.score_cache_size)
    logger.info("retrained on %s: policy version %d", train, meta.version)
    return meta.version, len(ratings), arm_set
