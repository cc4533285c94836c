"""``recbandits replay``: does learning from each event help? A streaming replay in time order.

Read top to bottom, one replay is:

1. **Cut** the ratings at the ``cut`` quantile of their timestamps: the ratings strictly before
   the cut's second train the arms, the rest form the stream (a second is never split).
2. **Order the stream** by time; ratings of one user within one second form a *step* (half of
   MovieLens 100K's ratings share their second with another rating of the same user, and their
   order within it is unknown). Steps are ordered by time, then user id.
3. **Score, then reveal**: for each step of a user with training ratings, every variant of every
   arm recommends one top-``k`` slate for that user, leaving out what the user rated before
   (in training or earlier in the stream); each rating of the step is then a hit if its item is
   in the slate (NDCG: ``1 / log2(rank + 1)``). Only then are the step's ratings revealed. So all
   of a second's ratings are scored against the same slate, before any of them is known.
4. **Cold users**: a user without a rating before the cut has nothing a frozen arm can know.
   Their ratings are *revealed* (they feed the live arms and retraining, as a service's
   events of new users would) but **not scored**; the notes say how many events and users
   that leaves out.
5. **Variants** of each arm:

   - ``frozen``: fitted once on the training ratings; events only hide consumed items.
   - ``realtime``: ``score_history`` of the user's events since the cut, on the same fitted
     arm (no refit); the arms that learn from the stream (``popularity`` as live popularity,
     ``cooccurrence``) also :meth:`~arms.base.Recommender.observe` every revealed event of every
     user (weight: the rating), and the co-occurrence arm starts empty (``from_train=False``):
     it learns only from the stream.
   - ``retrain``: refitted on the training ratings plus the revealed stream every
     ``retrain_every`` events, frozen in between.

6. **Report** HR@k and NDCG@k per arm and variant with 95% bootstrap intervals, and paired
   differences (real time minus frozen, retrain minus frozen, real time minus retrain, and
   co-occurrence minus live popularity, both in real time), each with its own interval from
   the same resamples. The bootstrap resamples *users* (their events stay together), because a
   user's events are not independent.
"""

from __future__ import annotations

import dataclasses
import datetime as _dt
import inspect
import json
import logging
import math
import numbers
import sys
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from functools import partial
from pathlib import Path
from typing import Any, cast

import numpy as np
import pandas as pd

from arms._validation import check_fraction, check_int, check_seed
from arms.base import Recommender, check_k, top_k
from arms.cooccurrence import MIN_HALF_LIFE_S, time_order
from arms.data import find_movielens, load_movielens, make_synthetic
from arms.data.dataset import Dataset
from arms.data.files import SYNTHETIC_READS_NO_DATA, staged_run_folder, write_whole
from arms.data.synthetic import check_sizes
from arms.errors import UnknownArmError
from arms.registry import make_arm, resolve, resolve_names
from bandits.ope import (
    DEFAULT_CONFIDENCE,
    DEFAULT_N_BOOTSTRAP,
    MIN_OBSERVATIONS,
    NO_RESAMPLES,
    bootstrap_sums,
    check_n_bootstrap,
    percentile_interval,
)

logger = logging.getLogger(__name__)

DEFAULT_ARMS = ("sequential", "autoencoder", "cooccurrence", "popularity")
VARIANTS = ("frozen", "realtime", "retrain")
COLD_USERS = ("drop", "include")
DAY = 86_400.0
#: The cross-arm comparison: co-occurrence from the stream against live popularity.
CROSS = (("cooccurrence", "realtime"), ("popularity", "realtime"))


class ReplayConfigError(ValueError):
    """A replay setting out of range; ``field`` names it."""

    def __init__(self, field_name: str, message: str) -> None:
        super().__init__(message)
        self.field = field_name


@dataclass(frozen=True)
class ReplayConfig:
    """What one replay runs.

    Attributes
    ----------
    data : str or None, default None
        Folder holding ``ml-100k/`` (None: ``RECBANDITS_DATA``, the user cache, else download);
        the results' config (and ``config.json``) holds the ``ml-100k`` folder read.
    synthetic : mapping or None, default None
        Keyword arguments of :func:`arms.data.make_synthetic` to replay synthetic ratings
        instead of MovieLens 100K.
    cut : float, default 0.9
        Quantile of the timestamps where the stream starts, in ``(0, 1)``.
    arms : tuple of str, default ``DEFAULT_ARMS``
        Registry names.
    variants : tuple of str, default ``("frozen", "realtime", "retrain")``
    retrain_every : int, default 2000
        Stream events between refits of the ``retrain`` variant (>= 1).
    half_life_days : float, default 7.0
        Half-life of live popularity and co-occurrence, in days (> 0).
    k : int, default 10
        Slate size.
    max_events : int or None, default None
        Replay only the first steps of the stream holding this many events (>= 1); None: all.
    n_bootstrap : int, default 1000
        Bootstrap resamples of users: 0 (no interval) or :data:`bandits.ope.MIN_BOOTSTRAP` to
        ``MAX_BOOTSTRAP`` (100 to 100,000).
    seed : int, default 0
        Seed of the bootstrap (the replay itself draws nothing at random).
    cold_users : {"drop", "include"}, default "drop"
        ``"drop"``: ratings of users without a training rating are revealed, not scored.
        ``"include"``: they are scored too from the user's second step on (their first step
        has no history for any variant to use); frozen sequential and autoencoder arms give
        them the training popularity, frozen co-occurrence its decayed training counts.
    arm_params : mapping of str to mapping, default empty
        Hyper-parameters per arm name, for every variant (on top of the registry's and the
        half-life), e.g. ``{"cooccurrence": {"window": 20}}``; an arm not replayed may be
        named, a name no arm has is refused.
    """

    data: str | None = None
    synthetic: Mapping[str, Any] | None = None
    cut: float = 0.9
    arms: tuple[str, ...] = DEFAULT_ARMS
    variants: tuple[str, ...] = VARIANTS
    retrain_every: int = 2000
    half_life_days: float = 7.0
    k: int = 10
    max_events: int | None = None
    n_bootstrap: int = DEFAULT_N_BOOTSTRAP
    seed: int = 0
    cold_users: str = "drop"
    arm_params: Mapping[str, Mapping[str, Any]] = field(default_factory=dict)

    def __post_init__(self) -> None:
        """Check every field; raise :class:`ReplayConfigError` naming the first bad one."""
        # A number, not text that reads as one (found by a one-rule review: "0.3" passed).
        try:
            check_fraction("cut", self.cut)
        except (TypeError, ValueError) as exc:
            raise ReplayConfigError("cut", str(exc)) from None
        self._check_arms()
        self._check_synthetic()
        bad = [v for v in self.variants if v not in VARIANTS]
        if bad or not self.variants:
            raise ReplayConfigError(
                "variants", f"variants must be among {list(VARIANTS)}, got {list(self.variants)}")
        # (max_events is None or an integer: found by review, True passed as 1 event)
        try:  # the bandits' one rule: 0 or MIN_BOOTSTRAP to MAX_BOOTSTRAP (it took 10**8)
            object.__setattr__(self, "n_bootstrap", check_n_bootstrap(self.n_bootstrap))
        except (TypeError, ValueError) as exc:
            raise ReplayConfigError("n_bootstrap", str(exc)) from None
        for name, low in (("retrain_every", 1), ("k", 1), ("max_events", 1)):
            if name != "max_events" or self.max_events is not None:
                try:  # kept as a Python int (a numpy one would fail writing config.json)
                    object.__setattr__(self, name, check_int(name, getattr(self, name),
                                                             low=low))
                except (TypeError, ValueError) as exc:
                    raise ReplayConfigError(name, str(exc)) from None
        try:  # the lab's one seed rule (MAX_SEED), as simulate's and ope's
            object.__setattr__(self, "seed", check_seed(self.seed))
        except (TypeError, ValueError) as exc:
            raise ReplayConfigError("seed", str(exc)) from None
        if self.cold_users not in COLD_USERS:
            raise ReplayConfigError("cold_users", f"cold_users must be one of "
                                    f"{list(COLD_USERS)}, got {self.cold_users!r}")
        days = self.half_life_days
        # The arms' floor, one second (below it their decay's frames overflowed into NaN), and
        # finite in seconds too (found by attack: 1e308 days passed, and the arm's fit refused
        # "half_life must be finite, got inf", a name and a value the user never gave). A
        # number, not text that reads as one, as every other option.
        if (isinstance(days, bool) or not isinstance(days, numbers.Real)
                or not MIN_HALF_LIFE_S / DAY <= days < math.inf
                or not math.isfinite(days * DAY)):
            raise ReplayConfigError("half_life_days", f"half_life_days must be a number of "
                                    f"days, at least {MIN_HALF_LIFE_S / DAY:.3g} (one second) "
                                    f"and finite in seconds (below {sys.float_info.max / DAY:.3g}"
                                    f"), got {days!r}")

    def _check_synthetic(self) -> None:
        """The synthetic sizes asked for, checked before the run as every other option (they
        were found once the progress bar ran, named as make_synthetic's, not the option).
        """
        if self.synthetic is None:
            return
        if self.data is not None:  # ignored in silence once (found by a README check)
            raise ReplayConfigError("data", SYNTHETIC_READS_NO_DATA)
        sizes = {name: param.default for name, param in
                 inspect.signature(make_synthetic).parameters.items()
                 if name in ("n_users", "n_items", "n_ratings")}
        try:
            check_sizes(**{**sizes, **{k: v for k, v in self.synthetic.items() if k in sizes}})
        except (TypeError, ValueError) as exc:
            raise ReplayConfigError("synthetic", str(exc)) from None

    def _check_arms(self) -> None:
        """At least one arm, each known and named once; kept by its registry name."""
        # Aliases resolved first: ``ease,autoencoder`` is one arm twice. An unknown arm is an
        # UnknownArmError (a ValueError) with a suggestion. Kept resolved, as evaluate-arms
        # labels them (found by attack: "ease" ran the autoencoder under the label "ease",
        # its deprecation warned three times).
        try:
            object.__setattr__(self, "arms", resolve_names(self.arms))
        except UnknownArmError:
            raise
        except ValueError as exc:
            raise ReplayConfigError("arms", str(exc)) from None
        # Keyed by registry name too: {"ease": ...} was ignored once the arm was the
        # autoencoder. A name no arm has is refused (a typo was ignored, silently); an arm
        # not replayed may be named (one mapping for runs of several arm sets).
        if not isinstance(self.arm_params, Mapping):
            raise ReplayConfigError("arm_params", "arm_params must map arm names to "
                                    f"hyper-parameters, got {self.arm_params!r}")
        for name, params in self.arm_params.items():
            if not isinstance(name, str):
                raise ReplayConfigError("arm_params", f"arm_params must map arm names to "
                                        f"hyper-parameters, got the key {name!r}")
            if not isinstance(params, Mapping):
                raise ReplayConfigError("arm_params", f"arm_params[{name!r}] must map "
                                        f"hyper-parameter names to values, got {params!r}")
        # "ease" and "autoencoder": one arm twice, refused by the registry's rule of an arm
        # list (review: its own message). None at all is allowed: no arm's changed.
        try:
            arms = (resolve_names(list(self.arm_params), field="arm_params")
                    if self.arm_params else ())
        except UnknownArmError:  # with a suggestion
            raise
        except ValueError as exc:
            raise ReplayConfigError("arm_params", str(exc)) from None
        named = {arm: dict(params) for arm, params in zip(arms, self.arm_params.values(),
                                                           strict=True)}
        object.__setattr__(self, "arm_params", named)


@dataclass
class ReplayResults:
    """What :func:`run` returns.

    Attributes
    ----------
    config : ReplayConfig
    summary : pandas.DataFrame
        One row per arm and variant: ``arm, variant, events, users, hr, hr_low, hr_high, ndcg,
        ndcg_low, ndcg_high`` (95% bootstrap intervals over users).
    differences : pandas.DataFrame
        One row per comparison and metric: ``a, b, metric, difference, low, high`` where ``a``
        and ``b`` read ``arm/variant`` and the difference is ``a - b``.
    events : pandas.DataFrame
        One row per scored event and arm variant: ``step, timestamp, user_id, item_id, arm,
        variant, rank`` (1-based place in the slate, 0 for a miss), ``hit``, ``ndcg``.
    counts : dict of str to int
        ``train``, ``stream``, ``scored`` (events) of ``scored_users``, ``steps``, ``tied``
        (stream events sharing their step with another), ``cold_events`` of ``cold_users``
        (no training rating), ``cold_scored`` (of those, scored), ``refits``.
    notes : list of str
        Plain sentences about the protocol's choices (cold users, ties).
    files : dict of str to Path
        Files written, when an output folder was given.
    """

    config: ReplayConfig
    summary: pd.DataFrame
    differences: pd.DataFrame
    events: pd.DataFrame
    counts: dict[str, int]
    notes: list[str] = field(default_factory=list)
    files: dict[str, Path] = field(default_factory=dict)


# ============================================================================ data and stream
def load_data(config: ReplayConfig) -> Dataset:
    """MovieLens 100K, or the synthetic ratings the config asks for."""
    if config.synthetic is not None:
        return make_synthetic(**dict(config.synthetic))
    return load_movielens(config.data)


@dataclass
class Stream:
    """The ratings after the cut, in replay order, with their steps.

    Attributes
    ----------
    train : Dataset
        The ratings strictly before the cut's second.
    users, items, times : ndarray of int64, shape ``(n,)``
        User and item indices and timestamps of the stream, in replay order.
    user_ids, item_ids : ndarray of int64, shape ``(n,)``
        Their raw ids.
    ratings : ndarray of float64, shape ``(n,)``
    step_starts : ndarray of int64, shape ``(n_steps + 1,)``
        Step ``s`` is ``[step_starts[s], step_starts[s + 1])``.
    warm : ndarray of bool, shape ``(n_users,)``
        Whether a user has a training rating.
    rows : ndarray of int64, shape ``(n,)``
        Row of each stream rating in the full dataset (for retraining).
    in_train : ndarray of bool, shape ``(n_ratings,)``
        Which rows of the full dataset are training ratings.
    """

    train: Dataset
    users: np.ndarray
    items: np.ndarray
    times: np.ndarray
    user_ids: np.ndarray
    item_ids: np.ndarray
    ratings: np.ndarray
    step_starts: np.ndarray
    warm: np.ndarray
    rows: np.ndarray
    in_train: np.ndarray


def make_stream(data: Dataset, cut: float, max_events: int | None = None) -> Stream:
    """Split ``data`` at the ``cut`` quantile of time and order the stream into steps."""
    ratings = data.ratings
    times = ratings["timestamp"].to_numpy(np.int64)
    cut_time = int(np.quantile(times, cut, method="higher"))
    in_train = times < cut_time
    train = data.subset(in_train, name=f"{data.name}:before-cut")
    order = time_order(data)
    rows = order[~in_train[order]]
    users = ratings["user_index"].to_numpy(np.int64)[rows]
    # Within a second, a user's ratings are one step: group them (stable, so the time order
    # and its tie rule hold between steps) by (time, user).
    by_step = np.lexsort((users, times[rows]))
    rows, users = rows[by_step], users[by_step]
    step_times = times[rows]
    new_step = np.ones(len(rows), dtype=bool)
    new_step[1:] = (step_times[1:] != step_times[:-1]) | (users[1:] != users[:-1])
    step_starts = np.append(np.flatnonzero(new_step), len(rows)).astype(np.int64)
    if max_events is not None and len(rows) > max_events:
        # Whole steps only: the step holding event max_events is the last.
        last = int(np.searchsorted(step_starts, max_events, side="left"))
        step_starts = step_starts[: last + 1]
        rows, users = rows[: step_starts[-1]], users[: step_starts[-1]]
    warm = np.diff(train.interaction_matrix(binary=True).indptr) > 0
    return Stream(
        train=train, users=users, items=ratings["item_index"].to_numpy(np.int64)[rows],
        times=times[rows], user_ids=ratings["user_id"].to_numpy(np.int64)[rows],
        item_ids=ratings["item_id"].to_numpy(np.int64)[rows],
        ratings=ratings["rating"].to_numpy(np.float64)[rows], step_starts=step_starts,
        warm=warm, rows=rows, in_train=in_train,
    )  # fmt: skip


# ============================================================================ the variants
class _Variant:
    """One arm in one variant: how it makes a slate and what it does with revealed events."""

    def __init__(self, arm: str, variant: str, model: Recommender, config: ReplayConfig,
                 params: Mapping[str, Any]) -> None:  # fmt: skip
        self.arm, self.variant, self.model = arm, variant, model
        self.params = params
        self.live = variant == "realtime" and model.learns_from_stream
        self.k = config.k
        self.pending: list[np.ndarray] = []  # revealed, not yet observed (observe is batched)

    def slate(self, user: int, items: np.ndarray, ratings: np.ndarray) -> np.ndarray:
        """Top-``k`` for ``user`` whose stream events so far are ``items``/``ratings``."""
        if self.variant == "realtime":
            self._flush()
            return self.model.recommend_history(user, items, ratings, k=self.k)[0]
        scores = self.model.score(np.array([user]))[0]
        scores[self.model.seen_[user].indices] = -np.inf
        scores[items] = -np.inf
        return top_k(scores[None, :], self.k)[0][0]

    def reveal(self, user_ids: np.ndarray, items: np.ndarray, ratings: np.ndarray,
               times: np.ndarray) -> None:  # fmt: skip
        """Queue revealed events for the live arms (folded in before their next slate)."""
        if self.live:
            self.pending.append(np.stack([user_ids, items, ratings, times]))

    def _flush(self) -> None:
        # One observe per slate, not per event: the fixed-point state is the same however the
        # events are batched, and each call costs O(nnz) of the co-occurrence matrix.
        if self.pending:
            block = np.concatenate(self.pending, axis=1)
            self.pending = []
            self.model.observe(block[0].astype(np.int64), block[1].astype(np.int64), block[2],
                               block[3].astype(np.int64))  # fmt: skip


def _variant_params(config: ReplayConfig, arm: str, variant: str) -> dict[str, Any]:
    """The hyper-parameters of ``arm`` in ``variant``: the half-life rules, then the config's."""
    half_life = float(config.half_life_days) * DAY
    return {**_arm_params(arm, variant, half_life), **config.arm_params.get(arm, {})}


def _arm_params(arm: str, variant: str, half_life: float) -> dict[str, Any]:
    """The config's half-life for the live arms; in real time, popularity is live popularity and
    co-occurrence starts empty (it learns from the stream only).
    """
    params: dict[str, Any] = {"half_life": half_life} if arm == "cooccurrence" else {}
    if variant == "realtime" and arm == "popularity":
        params["half_life"] = half_life
    if variant == "realtime" and arm == "cooccurrence":
        params["from_train"] = False
    return params


def build_variants(config: ReplayConfig, train: Dataset) -> list[_Variant]:
    """Fit each arm once per distinct set of hyper-parameters and wrap it per variant.

    The frozen, retrain (until its first refit) and real-time variants share one fitted arm
    where their hyper-parameters agree: neither ``score`` nor ``score_history`` changes it.
    """
    fitted: dict[tuple[str, str, bool], Recommender] = {}
    variants = []
    for arm in config.arms:
        for variant in config.variants:
            params = _variant_params(config, arm, variant)
            # A variant that observes the stream changes its arm: it gets one of its own.
            observes = variant == "realtime" and resolve(arm).cls.learns_from_stream
            key = (arm, json.dumps(params, sort_keys=True), observes)
            if key not in fitted:
                fitted[key] = make_arm(arm, **params).fit(train)
            variants.append(_Variant(arm, variant, fitted[key], config, params))
    return variants


# ============================================================================ the replay
def _hits(slate: np.ndarray, items: np.ndarray) -> np.ndarray:
    """1-based place of each item in ``slate``, 0 where it is absent; shape ``(len(items),)``."""
    match = slate[None, :] == items[:, None]
    return np.where(match.any(axis=1), match.argmax(axis=1) + 1, 0)


def replay(
    config: ReplayConfig, stream: Stream, data: Dataset,
    on_step: Callable[[int], None] | None = None,
) -> tuple[pd.DataFrame, int]:
    """Run every variant over the stream; returns the per-event ranks and the refit count."""
    variants = build_variants(config, stream.train)
    history: dict[int, list[int]] = {}
    refits = 0  # the refits made
    passed = 0  # multiples of retrain_every the revealed events have passed
    records: list[np.ndarray] = []
    n_steps = len(stream.step_starts) - 1
    for step in range(n_steps):
        lo, hi = int(stream.step_starts[step]), int(stream.step_starts[step + 1])
        user = int(stream.users[lo])
        if stream.warm[user] or (config.cold_users == "include" and user in history):
            past = np.asarray(history.get(user, []), dtype=np.int64)
            items, ratings = stream.items[past], stream.ratings[past]
            for index, variant in enumerate(variants):
                ranks = _hits(variant.slate(user, items, ratings), stream.items[lo:hi])
                records.append(np.stack([np.arange(lo, hi), np.full(hi - lo, index), ranks]))
        history.setdefault(user, []).extend(range(lo, hi))
        for variant in variants:
            variant.reveal(stream.user_ids[lo:hi], stream.items[lo:hi], stream.ratings[lo:hi],
                           stream.times[lo:hi])  # fmt: skip
        if "retrain" in config.variants and hi // config.retrain_every > passed:
            passed = hi // config.retrain_every
            # One refit however many multiples a step passed, and none after the last step,
            # where it would score nothing (found by attack: "5 refits" counted one at the
            # stream's end, and a step passing two multiples counted two for one fit).
            if step < n_steps - 1:
                refits += 1
                _refit(variants, data, stream, hi)
        if on_step is not None:
            on_step(step)
    table = np.concatenate(records, axis=1) if records else np.zeros((3, 0), dtype=np.int64)
    event, which, rank = table.astype(np.int64)
    frame = pd.DataFrame({
        "step": np.searchsorted(stream.step_starts, event, side="right") - 1,
        "timestamp": stream.times[event], "user_id": stream.user_ids[event],
        "item_id": stream.item_ids[event],
        "arm": pd.Categorical([variants[i].arm for i in which], categories=list(config.arms)),
        "variant": pd.Categorical([variants[i].variant for i in which],
                                  categories=list(config.variants)),
        "rank": rank, "hit": rank > 0,
        "ndcg": np.where(rank > 0, 1.0 / np.log2(np.maximum(rank, 1) + 1.0), 0.0),
    })  # fmt: skip
    frame = frame.sort_values(["step", "arm", "variant"], kind="stable").reset_index(drop=True)
    return frame, refits


def _refit(variants: list[_Variant], data: Dataset, stream: Stream, revealed: int) -> None:
    keep = stream.in_train.copy()
    keep[stream.rows[:revealed]] = True
    current = data.subset(keep, name=f"{data.name}:retrain-{revealed}")
    for variant in variants:
        if variant.variant == "retrain":
            variant.model = make_arm(variant.arm, **variant.params).fit(current)
    logger.info("retrained on %d ratings (%d of the stream)", current.n_ratings, revealed)


# ============================================================================ the report
def _columns(events: pd.DataFrame, labels: list[tuple[str, str]]) -> tuple[np.ndarray, np.ndarray]:
    """Per-user sums: hits and NDCG of each label, then the event count; users as rows."""
    first = events.loc[(events["arm"] == labels[0][0]) & (events["variant"] == labels[0][1])]
    users, user_of = np.unique(first["user_id"].to_numpy(), return_inverse=True)
    columns = np.zeros((len(users), 2 * len(labels) + 1))
    columns[:, -1] = np.bincount(user_of, minlength=len(users))
    for j, (arm, variant) in enumerate(labels):
        part = events.loc[(events["arm"] == arm) & (events["variant"] == variant)]
        index = np.searchsorted(users, part["user_id"].to_numpy())
        columns[:, 2 * j] = np.bincount(index, part["hit"].to_numpy(float), len(users))
        columns[:, 2 * j + 1] = np.bincount(index, part["ndcg"].to_numpy(float), len(users))
    return users, columns


def summarise(events: pd.DataFrame, config: ReplayConfig) -> tuple[pd.DataFrame, pd.DataFrame]:
    """The summary and the paired differences, with bootstrap intervals over users."""
    labels = [(a, v) for a in config.arms for v in config.variants]
    users, columns = _columns(events, labels)
    boots = bootstrap_sums(columns, config.n_bootstrap, config.seed)
    point = columns.sum(axis=0)
    metric = {}  # (label, metric) -> (point, resampled)
    rows = []
    for j, (arm, variant) in enumerate(labels):
        row: dict[str, Any] = {"arm": arm, "variant": variant, "events": int(point[-1]),
                               "users": len(users)}
        for offset, name in ((0, "hr"), (1, "ndcg")):
            value = point[2 * j + offset] / point[-1]
            resampled = boots[:, 2 * j + offset] / boots[:, -1]
            metric[(arm, variant), name] = (value, resampled)
            low, high = percentile_interval(resampled, DEFAULT_CONFIDENCE, len(users))
            row.update({name: value, f"{name}_low": low, f"{name}_high": high})
        rows.append(row)
    differences = []
    for a, b in _comparisons(config):
        for name in ("hr", "ndcg"):
            (va, ra), (vb, rb) = metric[a, name], metric[b, name]
            low, high = percentile_interval(ra - rb, DEFAULT_CONFIDENCE, len(users))
            differences.append({"a": "/".join(a), "b": "/".join(b), "metric": name,
                                "difference": va - vb, "low": low, "high": high})
    return pd.DataFrame(rows), pd.DataFrame(differences)


def _comparisons(config: ReplayConfig) -> list[tuple[tuple[str, str], tuple[str, str]]]:
    pairs = [("realtime", "frozen"), ("retrain", "frozen"), ("realtime", "retrain")]
    out = [((arm, a), (arm, b)) for arm in config.arms for a, b in pairs
           if a in config.variants and b in config.variants]  # fmt: skip
    if all(arm in config.arms for arm, _ in CROSS) and "realtime" in config.variants:
        out.append(CROSS)
    return out


def format_results(results: ReplayResults) -> str:
    """Markdown tables of the summary and the differences, and the counts."""
    k = results.config.k
    summary = results.summary
    lines = [f"| arm | variant | events | users | HR@{k} (95% CI) | NDCG@{k} (95% CI) |",
             "|---|---|---:|---:|---|---|"]
    def interval(low: float, high: float, sign: str = "") -> str:
        # No interval from fewer than MIN_OBSERVATIONS users: said, not "[nan, nan]" (attack).
        if math.isnan(low) or math.isnan(high):
            return "[–]"
        return f"[{low:{sign}.4f}, {high:{sign}.4f}]"

    for r in summary.to_dict("records"):
        lines.append(
            f"| {r['arm']} | {r['variant']} | {r['events']} | {r['users']} | "
            f"{r['hr']:.4f} {interval(r['hr_low'], r['hr_high'])} | "
            f"{r['ndcg']:.4f} {interval(r['ndcg_low'], r['ndcg_high'])} |")
    lines += ["", "| a - b | metric | difference (95% CI) | interval above 0 |",
              "|---|---|---|---|"]
    for r in results.differences.to_dict("records"):
        mark = ("–" if math.isnan(r["low"]) else "yes" if r["low"] > 0 else
                "below 0" if r["high"] < 0 else "no")
        lines.append(f"| {r['a']} - {r['b']} | {str(r['metric']).upper()}@{k} | "
                     f"{r['difference']:+.4f} {interval(r['low'], r['high'], '+')} | {mark} |")
    if not results.config.n_bootstrap:
        lines += ["", f"[–]: {NO_RESAMPLES}"]
    elif summary["hr_low"].isna().any():
        lines += ["", f"[–]: no interval; the bootstrap over users needs at least "
                      f"{MIN_OBSERVATIONS} scored users"]
    c = results.counts
    lines += ["", f"train {c['train']} ratings; stream {c['stream']} ratings in {c['steps']} "
              f"steps; scored {c['scored']} events of {c['scored_users']} users; "
              f"{c['refits']} refits"]
    return "\n".join(lines)


# ============================================================================ run
def run(config: ReplayConfig, *, out_dir: str | Path | None = None,
        on_step: Callable[[int], None] | None = None,
        dataset: Dataset | None = None) -> ReplayResults:
    """Replay the stream for every arm and variant and report (see the module docstring).

    Parameters
    ----------
    config : ReplayConfig
    out_dir : str or Path or None, default None
        Folder for ``summary.csv``, ``differences.csv``, ``events.csv`` and ``config.json``;
        None writes nothing.
    on_step : callable or None
        Called with each step's index (a progress bar).
    dataset : Dataset or None, default None
        Ratings to replay instead of the config's (``data``/``synthetic``); for tests and
        notebooks with ratings of their own.

    Returns
    -------
    ReplayResults

    Raises
    ------
    arms.errors.DataUnavailableError
        If MovieLens 100K can be neither found nor downloaded.
    ValueError
        If the cut leaves no training rating, or no step of a user with one.
    """
    data = load_data(config) if dataset is None else dataset
    if dataset is None and config.synthetic is None:
        # The folder read, which config.json records: "data": null said nothing where
        # RECBANDITS_DATA, the cache or a download gave it (found by attack).
        config = dataclasses.replace(config, data=str(find_movielens(config.data)))
    try:  # known once the data is: before anything is fitted
        check_k(config.k, data.n_items)
    except ValueError as exc:
        raise ReplayConfigError("k", str(exc)) from None
    stream = make_stream(data, config.cut, config.max_events)
    if stream.train.n_ratings == 0:
        times = data.ratings["timestamp"]
        # (found by attack: "raise it" where every rating has one time, which no cut splits)
        raise ValueError(f"every rating has the same time ({int(times.iloc[0])}): no cut splits "
                         "them into training and stream" if times.nunique() == 1 else
                         f"cut {config.cut} leaves no rating before it; raise it")
    events, refits = replay(config, stream, data, on_step)
    if events.empty:
        raise ValueError(_no_warm_rating(stream, data))
    summary, differences = summarise(events, config)
    counts, notes = _accounting(stream, events, refits, config.cold_users,
                                frozen_cold_start(config))
    results = ReplayResults(config, summary, differences, events, counts, notes)
    if out_dir is not None:
        results.files = write(results, Path(out_dir))
    return results


def _no_warm_rating(stream: Stream, data: Dataset) -> str:
    """Why no stream rating was scored, with what can help: a higher ``max_events`` where the
    stream past it holds ratings of users with training ratings, else a higher cut (more users
    rate before it). It advised "lower cut" (found by attack, at cut 1e-300: no lower cut
    exists, and a lower one trains on fewer users still).
    """
    users = data.ratings["user_index"].to_numpy(np.int64)[~stream.in_train]
    beyond = int(stream.warm[users].sum())  # in the whole stream: max_events left them out
    warm = int(stream.warm.sum())
    said = (f"no stream rating belongs to a user with training ratings ({warm} "
            f"user{'' if warm == 1 else 's'} rated before the cut)")
    if beyond:
        return (f"{said}; raise max_events: {beyond} ratings of such users lie in the whole "
                "stream")
    return f"{said}; raise cut, so that more users rate before it"


def frozen_cold_start(config: ReplayConfig) -> str:
    """What the frozen arms give a user without training ratings, from each arm's own
    :attr:`~arms.base.Recommender.cold_start` (its hyper-parameters in the frozen variant;
    nothing is fitted): ``"the frozen sequential and autoencoder arms giving those users the
    training popularity, and the frozen cooccurrence arm its ..."``; empty without the frozen
    variant.
    """
    if "frozen" not in config.variants:
        return ""
    said: dict[str, list[str]] = {}
    for arm in config.arms:
        said.setdefault(make_arm(arm, **_variant_params(config, arm, "frozen")).cold_start,
                        []).append(arm)
    parts = []
    for n, (gives, arms) in enumerate(said.items()):
        names = arms[0] if len(arms) == 1 else f"{', '.join(arms[:-1])} and {arms[-1]}"
        plural = "s" if len(arms) > 1 else ""
        parts.append(f"the frozen {names} arm{plural} {'giving those users ' if n == 0 else ''}"
                     f"{gives}")
    return ", and ".join(parts)


def _accounting(
    stream: Stream, events: pd.DataFrame, refits: int, cold_users: str, cold_start: str
) -> tuple[dict[str, int], list[str]]:
    """The counts of :class:`ReplayResults` and the notes on cold users and ties
    (``cold_start``: :func:`frozen_cold_start`).
    """
    warm_events = stream.warm[stream.users]
    step_sizes = np.diff(stream.step_starts)
    scored = events.loc[(events["arm"] == events["arm"].iloc[0])
                        & (events["variant"] == events["variant"].iloc[0])]  # fmt: skip
    cold_scored = int((~stream.warm[stream.users][_event_rows(stream, scored)]).sum())
    counts = {
        "train": stream.train.n_ratings, "stream": len(stream.users), "scored": len(scored),
        "scored_users": int(scored["user_id"].nunique()), "steps": len(step_sizes),
        "tied": int(step_sizes[step_sizes > 1].sum()),
        "cold_events": int((~warm_events).sum()),
        "cold_users": len(np.unique(stream.users[~warm_events])),
        "cold_scored": cold_scored, "refits": refits,
    }  # fmt: skip
    if cold_users == "drop":
        cold = (f"{counts['cold_events']} of {counts['stream']} stream ratings "
                f"({counts['cold_users']} users) belong to users with no rating before the cut: "
                "revealed to the live arms and to retraining, not scored.")
    else:
        cold = (f"{counts['cold_events']} of {counts['stream']} stream ratings "
                f"({counts['cold_users']} users) belong to users with no rating before the cut; "
                f"{cold_scored} of them (all but each such user's first step) are scored"
                + (f", {cold_start}." if cold_start else "."))
    tied = (f"{counts['tied']} stream ratings share their second with another rating of the same "
            "user; each such group is scored against one slate before any of it is revealed.")
    return counts, [cold, tied]


def _event_rows(stream: Stream, scored: pd.DataFrame) -> np.ndarray:
    """Stream positions of the scored events (their step's user is the event's user)."""
    return cast(np.ndarray, stream.step_starts[scored["step"].to_numpy()])


#: The files a replay writes into its folder.
RUN_FILES = ("summary.csv", "differences.csv", "events.csv", "config.json")


def write(results: ReplayResults, out_dir: Path) -> dict[str, Path]:
    """Write the tables and the config to ``out_dir``, all into a folder beside it first, then
    moved onto it together (:func:`arms.data.files.staged_run_folder`, simulate's rule:
    ``out_dir`` holds the earlier run or this one, never a mix; a Ctrl-C or a full disk
    mid-write deleted the earlier run first, found in review); returns the paths by name.
    """
    with staged_run_folder(out_dir, RUN_FILES) as staging:
        _write_files(results, {name: staging / name for name in RUN_FILES})
    return {name: out_dir / name for name in RUN_FILES}


def _write_files(results: ReplayResults, files: dict[str, Path]) -> None:
    for frame, name in ((results.summary, "summary.csv"),
                        (results.differences, "differences.csv"), (results.events, "events.csv")):
        write_whole(files[name], partial(frame.to_csv, index=False))
    config = dataclasses.asdict(results.config)
    config["synthetic"] = dict(results.config.synthetic or {}) or None
    config["arm_params"] = {k: dict(v) for k, v in results.config.arm_params.items()}
    payload = {"config": config, "counts": results.counts, "notes": results.notes,
               "written": _dt.datetime.now(_dt.UTC).isoformat(timespec="seconds")}
    text = json.dumps(payload, indent=2) + "\n"
    write_whole(files["config.json"], lambda p: p.write_text(text, encoding="utf-8"))
