"""The context a contextual policy sees: what the service knows about the user at request time.

Feature set ``user-v4`` (:class:`FeatureStore`; 100 values on MovieLens 100K with the default
rule book's 8 event types and 19 genres):

=======================  ==========================================================================
``bias``                 1 for every request
``gender=<g>``           one-hot of the catalogue's genders (all zero when unknown)
``age=<bucket>``         one-hot of the MovieLens age buckets (<18, 18-24, ..., 56+)
``occupation=<o>``       one-hot of the catalogue's occupations
``genre=<g>``            share of each genre among the movies the user rated in training
``activity``             ``log1p(ratings in training) / log1p(most ratings of any user)``
``count=<type>``         ``log1p(decayed count of the user's events of <type>)``, one per type of
                         the rule book (``view``, ``click``, ``like``, ...)
``affinity=<g>``         ``(P_g - N_g) / sum over genres of (P_g + N_g)``, in ``[-1, 1]``: ``P_g``
                         (``N_g``) is the decayed number of events on movies of genre ``g`` that
                         the rule book signs positive (negative; ``RuleBook.session_sign``);
                         a movie added at run time (``POST /admin/items``) has the genres it
                         was added with (:meth:`BehaviourSpec.learn`)
``recency``              ``2 ** (-(t - latest event) / half_life)``; 0 with no event
``live_activity``        ``log1p(decayed count of all the user's events)``
``diversity``            entropy of the genre shares ``P_g / sum(P)`` over ``log(n_genres)``, in
                         ``[0, 1]`` (0 with no positive event)
``stated=<g>``           one-hot of the genres the user stated (``PUT /users/{id}/preferences``)
=======================  ==========================================================================

The first six rows are the **static** part (training data; all zero but ``bias`` for a user the
catalogue does not know); the next five the **behavioural** part, a fold of the user's events
(:class:`BehaviourState`); the last the stated preferences. Every value is rounded to
:data:`DECIMALS` decimals, so what a decision logs is exactly what the policy saw.

**Decay.** An event ``half_life_s`` seconds old weighs 1/2, one twice as old 1/4. The decay of
a vector asked for at ``now`` is taken at ``t``, the start of the user's ``decay_step_s`` step
that holds ``now`` (``now`` itself when the step is 0), or at the user's latest event if that is
later. So a user's context stays put between their events for up to a step (default a minute,
over which a day's half-life moves a count by 0.05%), and so do the policy's probabilities for
it, which the service computes once per context: with a context that moved every second or two
(``user-v2``, the decay taken at ``now``) LinTS's probabilities were recomputed on most requests
of a returning user. Each user's steps start at their own **phase**
(:meth:`BehaviourSpec.decay_phase`: the fraction ``(user_id * 0x9E3779B97F4A7C15 mod 2**64) /
2**64`` of a step, the golden ratio's Weyl sequence in 64-bit fixed point, exact for every id,
so that any run of user ids spreads evenly over the step): ``t = floor((now - phase) / step) *
step + phase``. With one phase for all (``user-v3``: ``floor(now / step) * step``) every
user's context moved at the start of each minute, and every active user's next slate
recomputed their features and the policy's probabilities at once: on one worker at 3,500
requests a second, 943 returning users made the p99 235-295 ms in the 8-second windows that
held a minute's start, against 6-30 ms in the others; with the phases, 5.4-8.8 ms in those
(``bench/minute_windows.py --rate 3500``, 6 December). A state keeps
its sums relative to an **anchor** time ``A`` (its first event's time): an event at ``t_e`` adds
``2 ** ((t_e - A) / half_life)``, and a vector at ``t`` multiplies the sums by
``2 ** ((A - t) / half_life)``. Each event's term depends on the event and the anchor only, and
the terms are added one by one in log order (``numpy.add.accumulate``, which adds sequentially),
so folding a log in any chunks, saving and restoring the state in between, gives bit for bit the
sums of one replay; an event stamped in the past (or at the same second as another) simply adds
a smaller term. The anchor moves to an event's time when the event lies more than
:data:`REBASE_HALF_LIVES` half-lives after it (the sums are scaled down once), at the same event
in every chunking, so that the terms never overflow.

**Retention.** Events older than ``retention_s`` stop steering the features: the fold takes only
the events stamped at or after the cut-off ``now - retention_s``, and a state whose oldest
folded event has left the window (or that dropped an event that the cut-off now admits, or
that was folded under a later cut-off: a clock set back, or two requests of one user whose
reads finished out of order, and the store's read left out events the earlier cut-off admits)
is rebuilt from the events the caller passes (:meth:`BehaviourState.covers`). A
:class:`FeatureCache` keeps one state per user, so a request folds only the events logged since
the last one; the vector always equals a replay of the user's events within the window.

Set ``user-v1`` (:class:`UserFeatures`; the static part plus ``session_likes`` and
``session_dislikes``, ``log1p`` of the positive and negative feedback in the session window) is
what the request path logged before ``user-v2`` (``user-v3`` with the decay taken at ``now``;
``user-v4`` with each user's steps at their own phase);
older logs hold their vectors under their names. A
change of the feature set must change the version, so that the log never mixes vectors of
different meanings under one name.
"""

from __future__ import annotations

import bisect
import json
import math
from collections import OrderedDict
from collections.abc import Sequence
from dataclasses import dataclass
from itertools import repeat
from operator import attrgetter
from typing import Any

import numpy as np
import pandas as pd
from scipy.special import entr

from arms.data.dataset import Dataset
from bandits.errors import check_int, check_real
from serving.rules import RuleBook
from serving.store.types import AddedItem, UserEvent

FEATURE_VERSION = "user-v4"
#: The golden ratio's fractional part in 64-bit fixed point: user ``u``'s decay phase is the
#: fraction ``(u * this mod 2**64) / 2**64`` of a step (consecutive ids land far apart, any run
#: of ids covers the step evenly; integer arithmetic, so an id of any size keeps its phase: a
#: float product loses the fraction from about 1e16 on).
DECAY_PHASE_MULTIPLIER = 0x9E3779B97F4A7C15
#: The version of :class:`UserFeatures` (static part and session counts).
SESSION_FEATURE_VERSION = "user-v1"
#: Decimals every feature value is rounded to (what is logged is exactly what the policy saw).
DECIMALS = 4
#: MovieLens 1M's age groups (lower bounds), used for every catalogue with an ``age`` column.
AGE_BUCKETS = (0, 18, 25, 35, 45, 50, 56)
#: Default half-life of an event's weight (a day).
DEFAULT_HALF_LIFE_S = 86_400.0
#: Default step of the decay's time (a minute; see the module doc).
DEFAULT_DECAY_STEP_S = 60.0
#: Default retention (the service's default ``retention_s``: 90 days).
DEFAULT_RETENTION_S = 90 * 86_400.0
#: Default number of users a worker's :class:`FeatureCache` keeps.
DEFAULT_CACHE_USERS = 10_000
#: Half-lives an event may lie after a state's anchor before the anchor moves to it: a term is
#: at most 2**256 (~1e77), so sums of billions of events stay far below float64's 1.8e308.
REBASE_HALF_LIVES = 256.0

_SEQ = attrgetter("seq")
_NONE = np.empty(0, dtype=np.int64)


def _age_labels() -> list[str]:
    bounds = [*AGE_BUCKETS[1:], None]
    return [f"age={low}-{high - 1}" if high is not None else f"age={low}+"
            for low, high in zip(AGE_BUCKETS, bounds, strict=True)]


def _one_hot(matrix: np.ndarray, col: int, values: pd.Series, categories: list[str]) -> None:
    """Set ``matrix[row, col + code] = 1`` for each row's category code (none when unknown)."""
    codes = pd.Categorical(values.astype("string"), categories=categories).codes
    rows = np.flatnonzero(codes >= 0)
    matrix[rows, col + codes[rows]] = 1.0


def _demographics(users: pd.DataFrame) -> tuple[list[str], np.ndarray]:
    """Names and one-hot columns of the users' gender, age bucket and occupation."""
    genders = sorted(map(str, users["gender"].dropna().unique())) if "gender" in users else []
    occupations = (sorted(map(str, users["occupation"].dropna().unique()))
                   if "occupation" in users else [])
    names = [*(f"gender={g}" for g in genders), *_age_labels(),
             *(f"occupation={o}" for o in occupations)]
    block = np.zeros((len(users), len(names)))
    if genders:
        _one_hot(block, 0, users["gender"], genders)
    col = len(genders)
    if "age" in users:
        ages = pd.to_numeric(users["age"], errors="coerce").to_numpy(dtype=np.float64)
        known = np.isfinite(ages)
        bucket = np.searchsorted(AGE_BUCKETS, ages[known], side="right") - 1
        block[np.flatnonzero(known), col + bucket] = 1.0
    col += len(AGE_BUCKETS)
    if occupations:
        _one_hot(block, col, users["occupation"], occupations)
    return names, block


@dataclass(frozen=True)
class StaticFeatures:
    """The part of the context that comes from the catalogue (``bias`` to ``activity``).

    Attributes
    ----------
    names : list of str
        ``bias``, demographics, ``genre=<g>`` training shares, ``activity``.
    rows : ndarray of float64, shape ``(n_users, len(names))``
        Each catalogue user's values, rounded to :data:`DECIMALS`.
    unknown : ndarray of float64, shape ``(len(names),)``
        The values of a user the catalogue does not know (``bias`` only).
    index : dict of int to int
        Raw user id -> row of ``rows``.
    """

    names: list[str]
    rows: np.ndarray
    unknown: np.ndarray
    index: dict[int, int]

    @classmethod
    def build(cls, catalog: Dataset) -> StaticFeatures:
        """The static features of ``catalog``'s users (demographics, training ratings)."""
        users = catalog.users
        demo_names, demographics = _demographics(users)
        ratings = catalog.ratings
        flags = catalog.items.loc[:, list(catalog.genre_names)].to_numpy(dtype=np.float64)
        user_pos = ratings["user_index"].to_numpy()
        genre_sums = np.zeros((len(users), flags.shape[1]))
        np.add.at(genre_sums, user_pos, flags[ratings["item_index"].to_numpy()])
        totals = genre_sums.sum(axis=1, keepdims=True)
        shares = np.divide(genre_sums, totals, out=np.zeros_like(genre_sums), where=totals > 0)
        counts = np.bincount(user_pos, minlength=len(users)).astype(np.float64)
        activity = np.log1p(counts) / max(np.log1p(counts.max(initial=0.0)), 1.0)
        names = ["bias", *demo_names, *(f"genre={g}" for g in catalog.genre_names), "activity"]
        # Rounded to 4 decimals: every decision logs its vector, and 53 values of 17 digits
        # made a decision row ~1 KB (~250 bytes rounded); the policy sees the rounded values too.
        rows = np.round(np.column_stack((np.ones(len(users)), demographics, shares, activity)),
                        DECIMALS)
        unknown = np.zeros(len(names))
        unknown[0] = 1.0
        return cls(names, rows, unknown, {int(u): i for i, u in enumerate(users.index)})

    def row(self, user_id: int) -> np.ndarray:
        """The static values of ``user_id`` (read-only view; ``unknown`` for a stranger)."""
        i = self.index.get(user_id)
        return self.unknown if i is None else self.rows[i]


class UserFeatures:
    """Feature set ``user-v1``: the static part, plus session counts added per request.

    Parameters
    ----------
    catalog : Dataset
        Users (demographics) and training ratings (genre shares, activity).
    """

    version = SESSION_FEATURE_VERSION

    def __init__(self, catalog: Dataset) -> None:
        static = StaticFeatures.build(catalog)
        self.names: list[str] = [*static.names, "session_likes", "session_dislikes"]
        # Whole vectors with an empty session: a request copies its row and sets the last two
        # values (2 us, against 10 us for concatenating the parts).
        self._full = np.concatenate((static.rows, np.zeros((len(static.rows), 2))), axis=1)
        self._row = static.index
        self._unknown = np.concatenate((static.unknown, np.zeros(2)))

    @property
    def dimension(self) -> int:
        """Length ``d`` of every vector."""
        return len(self.names)

    def mean_vector(self) -> np.ndarray:
        """The average context of the catalogue's users with an empty session, shape ``(d,)``
        (where ``GET /policy`` evaluates a contextual policy).
        """
        return self._full.mean(axis=0)

    def vector(self, user_id: int, session_likes: int, session_dislikes: int) -> np.ndarray:
        """The context of one request, shape ``(d,)``.

        Parameters
        ----------
        user_id : int
            Raw user id (unknown users get the bias and session features only).
        session_likes, session_dislikes : int
            Positive and negative feedback of the user within the session window.
        """
        row = self._row.get(user_id)
        x = self._unknown.copy() if row is None else self._full[row].copy()
        x[-2] = round(math.log1p(session_likes), DECIMALS)
        x[-1] = round(math.log1p(session_dislikes), DECIMALS)
        return x


# ---------------------------------------------------------------------------- behaviour
class BehaviourSpec:
    """What a :class:`BehaviourState` counts: the rule book's types, the catalogue's genres.

    Shared by every user's state. Its types, genres and times never change; its items grow:
    items added at run time (``POST /admin/items``) are learned with :meth:`learn`, so that
    events on them count in their genres' affinities. An item's genres never change once
    known (the service refuses to add an item twice), so a fold that knew an event's item
    gives the sums of any later fold; a state that folded an event of an item the spec did
    not know yet (another worker added it, this one has not read it yet) records it
    (:attr:`BehaviourState.blind_`) and is rebuilt once the spec has learned more
    (:meth:`FeatureCache.state`).

    Parameters
    ----------
    rules : RuleBook
        Event types (one ``count=<type>`` each) and each event's session sign.
    item_ids : array-like of int, shape ``(n_items,)``
        The catalogue's raw item ids.
    genre_flags : array-like of float, shape ``(n_items, n_genres)``
        1 where an item has a genre.
    genre_names : sequence of str, length ``n_genres``
    half_life_s : float, default :data:`DEFAULT_HALF_LIFE_S`
        Seconds after which an event weighs half as much.
    decay_step_s : float, default :data:`DEFAULT_DECAY_STEP_S`
        The decay of a vector is taken at the start of the step of this many seconds that
        holds the request's time (see the module doc); 0 takes it at the request's time.

    Raises
    ------
    TypeError, ValueError
        ``half_life_s`` not a positive finite number; ``decay_step_s`` not a finite number
        >= 0; ``item_ids`` and ``genre_flags`` of different lengths.
    """

    def __init__(self, rules: RuleBook, item_ids: Sequence[int] | np.ndarray,
                 genre_flags: np.ndarray, genre_names: Sequence[str], *,
                 half_life_s: float = DEFAULT_HALF_LIFE_S,
                 decay_step_s: float = DEFAULT_DECAY_STEP_S) -> None:
        self.rules = rules
        self.half_life_s = check_real(half_life_s, "half_life_s", low=0, low_open=True)
        self.decay_step_s = check_real(decay_step_s, "decay_step_s", low=0)
        self.types: tuple[str, ...] = tuple(rules.types)
        self.genres: tuple[str, ...] = tuple(genre_names)
        ids = np.asarray(item_ids, dtype=np.int64)
        flags = np.asarray(genre_flags, dtype=np.float64)
        if flags.shape != (ids.size, len(self.genres)):
            raise ValueError(f"genre_flags must have shape (len(item_ids), len(genre_names)) = "
                             f"{(ids.size, len(self.genres))}, got {flags.shape}")
        order = np.argsort(ids, kind="stable")
        # One more id, above any raw id, and its row of zeros: where an item the spec does not
        # know is looked up (no genre). Ids, flags and the generation (items learned so far)
        # in one tuple swapped whole by learn(): a fold on the event loop reads one of them
        # while a refresher thread learns, never ids of one and flags of another.
        self._lookup: tuple[np.ndarray, np.ndarray, int] = (
            np.append(ids[order], np.iinfo(np.int64).max),
            np.vstack((flags[order], np.zeros((1, len(self.genres))))), 0)
        self._type_code = {t: i for i, t in enumerate(self.types)}
        # Each type's sign where its rule has a constant one (valued: it depends on the value);
        # one more entry, 0, for code -1 (a type the rule book does not know).
        constant = [rules.rule(t).session_sign for t in self.types]
        self._type_sign = np.array([*(s or 0 for s in constant), 0], dtype=np.float64)
        self._valued_codes = [code for code, s in enumerate(constant) if s is None]

    @classmethod
    def from_catalog(cls, catalog: Dataset, rules: RuleBook, *,
                     half_life_s: float = DEFAULT_HALF_LIFE_S,
                     decay_step_s: float = DEFAULT_DECAY_STEP_S) -> BehaviourSpec:
        """The spec of ``catalog``'s items and genres under ``rules``."""
        return cls(rules, catalog.item_ids, catalog.genre_matrix(), catalog.genre_names,
                   half_life_s=half_life_s, decay_step_s=decay_step_s)

    @property
    def generation(self) -> int:
        """How many times :meth:`learn` added items (0 for the catalogue's alone)."""
        return self._lookup[2]

    def knows(self, item_id: int) -> bool:
        """Whether ``item_id``'s genres are known (a catalogue item or one learned)."""
        ids = self._lookup[0]
        return bool(ids[np.searchsorted(ids, item_id)] == item_id)

    def learn(self, items: Sequence[AddedItem]) -> int:
        """Learn the genres of ``items`` (added at run time; those known already and genres
        the spec does not have are ignored); returns how many were new. Safe beside folds
        (one tuple swapped whole), not beside another ``learn``.
        """
        ids, flags, generation = self._lookup
        new: dict[int, list[float]] = {}
        for item in items:
            item_id = int(item.item_id)
            if item_id in new or ids[np.searchsorted(ids, item_id)] == item_id:
                continue
            new[item_id] = item.genre_flags(self.genres)
        if not new:
            return 0
        all_ids = np.concatenate((ids[:-1], np.fromiter(new, np.int64, len(new))))
        all_flags = np.vstack((flags[:-1], np.array(list(new.values()), dtype=np.float64)))
        order = np.argsort(all_ids, kind="stable")
        self._lookup = (np.append(all_ids[order], ids[-1]),
                        np.vstack((all_flags[order], flags[-1:])), generation + 1)
        return len(new)

    @property
    def names(self) -> list[str]:
        """Names of the behavioural features, in :meth:`BehaviourState.vector`'s order."""
        return [*(f"count={t}" for t in self.types), *(f"affinity={g}" for g in self.genres),
                "recency", "live_activity", "diversity"]

    @property
    def width(self) -> int:
        """Number of sums a state keeps: a count per type, positive and negative per genre."""
        return len(self.types) + 2 * len(self.genres)

    def describe(self) -> dict[str, Any]:
        """What a saved state must match to be restored under this spec."""
        return {"types": list(self.types), "genres": list(self.genres),
                "half_life_s": self.half_life_s, "decay_step_s": self.decay_step_s}

    def decay_phase(self, user_id: int) -> float:
        """Where ``user_id``'s decay steps start within a step: ``step * (user_id *``
        :data:`DECAY_PHASE_MULTIPLIER` ``mod 2**64) / 2**64``, in ``[0, step)`` (0 with a step
        of 0). The same in every process: integer arithmetic, then one correctly rounded
        division and one product.
        """
        fraction = (int(user_id) * DECAY_PHASE_MULTIPLIER) % 2**64 / 2**64
        return self.decay_step_s * fraction

    def decay_time(self, now: float, phase: float = 0.0) -> float:
        """The time a vector asked for at ``now`` takes its decay at, before the latest event
        is considered: the start of ``now``'s step, steps starting at ``phase`` (a user's
        :meth:`decay_phase`) plus a multiple of the step; ``now`` with a step of 0.
        """
        step = self.decay_step_s
        return math.floor((now - phase) / step) * step + phase if step else now

    def decay_expiry(self, now: float, phase: float = 0.0) -> float:
        """The time from which :meth:`decay_time` (at ``phase``) moves on from ``now``'s: the
        end of ``now``'s step; ``now`` itself with a step of 0 (the decay moves all the time).
        """
        step = self.decay_step_s
        if not step:
            return now
        k = math.floor((now - phase) / step)
        edge = (k + 1) * step + phase
        # A few float values before it may already divide to k + 1 (steps or phases that
        # are not exactly representable, like 59.9): the edge is the first of them. (One
        # after it that still divides to k only makes a view expire early: never late.)
        while math.floor(((before := math.nextafter(edge, -math.inf)) - phase) / step) > k:
            edge = before
        return edge

    def signs(self, codes: np.ndarray, values: Sequence[float | None]) -> np.ndarray:
        """The rule book's session sign of each event, shape ``(n,)`` (0 for a code of -1).

        A type with a constant sign takes it at once; the rule book is asked once per distinct
        value of a type whose sign depends on the value (a rating's stars).
        """
        signs = self._type_sign[codes]
        for code in self._valued_codes:
            mine = np.flatnonzero(codes == code)
            if not mine.size:
                continue
            event_type = self.types[code]
            # None -> nan: the rule book refuses a missing value of a type that needs one.
            given = np.array([values[i] for i in mine.tolist()], dtype=np.float64)
            distinct, inverse = np.unique(given, return_inverse=True)
            per_value = [self.rules.session_sign(event_type, None if math.isnan(v) else v)
                         for v in distinct.tolist()]
            signs[mine] = np.asarray(per_value, dtype=np.float64)[inverse]
        return signs

    def terms(self, codes: np.ndarray, signs: np.ndarray, movies: np.ndarray,
              weights: np.ndarray) -> tuple[np.ndarray, int | None]:
        """Each event's addition to the sums, shape ``(n, width)``: its weight in its type's
        count, and in its movie's genres, positive or negative by its sign; and the
        :attr:`generation` of the items looked up if the movie of an event with a sign was
        not among them (it counts in no genre), else None (an unsigned event, a view, counts
        in no genre anyway).
        """
        n_types, n_genres = len(self.types), len(self.genres)
        ids, flags, generation = self._lookup
        pos = np.searchsorted(ids, movies)  # at most the last id's, the unknown one's
        found = ids[pos] == movies
        rows = flags[np.where(found, pos, ids.size - 1)]
        out = np.zeros((codes.size, self.width))
        out[np.arange(codes.size), codes] = weights
        out[:, n_types:n_types + n_genres] = rows * (weights * (signs > 0))[:, None]
        out[:, n_types + n_genres:] = rows * (weights * (signs < 0))[:, None]
        return out, None if (found | (signs == 0)).all() else generation

    def encode(self, events: Sequence[UserEvent]
               ) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
        """The events of a known type as arrays: ``(times, codes, signs, movies)``, each of
        shape ``(n_known,)`` (a type the rule book does not know steers nothing).

        Raises
        ------
        ValueError
            Events not in log order (ascending ``seq``), or a time that is not finite.
        """
        if not events:
            empty = np.empty(0)
            return empty, np.empty(0, dtype=np.int64), empty, np.empty(0, dtype=np.int64)
        seq, movie, kind, value, at = zip(*events, strict=True)
        seqs = np.asarray(seq, dtype=np.int64)
        if seqs.size > 1 and (np.diff(seqs) <= 0).any():
            raise ValueError("events must be in log order (strictly ascending seq), got seqs "
                             f"{seqs.tolist()[:10]}...")
        codes = np.fromiter(map(self._type_code.get, kind, repeat(-1)), np.int64, len(kind))
        signs = self.signs(codes, value)
        times = np.asarray(at, dtype=np.float64)
        if not np.isfinite(times).all():
            raise ValueError(f"event times (created_at) must be finite Unix seconds, got "
                             f"{times[~np.isfinite(times)].tolist()[:3]}")
        movies = np.asarray(movie, dtype=np.int64)
        known = codes >= 0
        if not known.all():
            return times[known], codes[known], signs[known], movies[known]
        return times, codes, signs, movies


def _json_time(value: float) -> float | None:
    return None if math.isinf(value) else value


def _time_from_json(value: float | None, none: float) -> float:
    return none if value is None else float(value)


class BehaviourState:
    """One user's behavioural features as a fold of their events (see the module doc).

    Parameters
    ----------
    spec : BehaviourSpec

    Attributes
    ----------
    seq_ : int
        Highest log position seen (folded or dropped); -1 before any.
    anchor_ : float
        Time the sums are relative to (nan before any event).
    sums_ : ndarray of float64, shape ``(spec.width,)``
        Decayed counts per type, then positive and negative genre weights, at ``anchor_``.
    oldest_, latest_ : float
        Earliest and latest time of the folded events (``inf`` / ``-inf`` before any).
    dropped_ : float
        Latest time of an event left out for being before its fold's cut-off (``-inf``: none).
    cut_ : float
        Latest cut-off of a fold (``-inf``: none). The caller's events may have been cut
        there already (the store's read leaves out what is past retention), so the state says
        nothing of the events before it.
    n_events_ : int
        Events folded.
    blind_ : int or None
        The spec's :attr:`~BehaviourSpec.generation` at the last fold of an event whose item
        the spec did not know (that event counts in no genre); None if every item was known.
        Once the spec has learned more, the state may differ from a replay
        (:meth:`FeatureCache.state` rebuilds it).
    """

    def __init__(self, spec: BehaviourSpec) -> None:
        self.spec = spec
        self.blind_: int | None = None
        self.seq_ = -1
        self.anchor_ = math.nan
        self.sums_ = np.zeros(spec.width)
        self.oldest_ = math.inf
        self.latest_ = -math.inf
        self.dropped_ = -math.inf
        self.cut_ = -math.inf
        self.n_events_ = 0
        # What vector() derives from the sums, until the next fold (see _timeless).
        self._template: np.ndarray | None = None
        self._counts = self.sums_[:0]

    def covers(self, since: float) -> bool:
        """Whether this state equals a replay of the events stamped at or after ``since``
        (none it folded is older, none it dropped is as recent, and no fold was cut later).
        """
        # (Nothing dropped is -inf, which a cut-off of -inf, no retention, must admit: found
        # when a test of the cache without retention saw it rebuild every state each time.)
        return (self.oldest_ >= since and (self.dropped_ < since or self.dropped_ == -math.inf)
                and self.cut_ <= since)

    def fold(self, events: Sequence[UserEvent], since: float = -math.inf) -> BehaviourState:
        """Add the events after ``seq_`` stamped at or after ``since``; returns ``self``.

        Parameters
        ----------
        events : sequence of UserEvent
            The user's events in log order (ascending ``seq``), as the store reads them; those
            at or before ``seq_`` (already seen) are skipped, so the whole log may be passed.
        since : float, default -inf
            Cut-off (Unix seconds): older events are left out (the retention window).

        Raises
        ------
        ValueError
            Events not in log order.
        """
        self.cut_ = max(self.cut_, since)
        new = events[bisect.bisect_right(events, self.seq_, key=_SEQ):]
        if not new:
            return self
        times, codes, signs, movies = self.spec.encode(new)
        self.seq_ = max(self.seq_, int(new[-1].seq))
        inside = times >= since
        if not inside.all():
            self.dropped_ = max(self.dropped_, float(times[~inside].max()))
            times, codes, signs, movies = (times[inside], codes[inside], signs[inside],
                                           movies[inside])
        if times.size:
            self._add(times, codes, signs, movies)
        return self

    def _add(self, times: np.ndarray, codes: np.ndarray, signs: np.ndarray,
             movies: np.ndarray) -> None:
        """Fold events (in log order) into the sums, moving the anchor where the module doc says."""
        half_life = self.spec.half_life_s
        if math.isnan(self.anchor_):
            self.anchor_ = float(times[0])
        first, last = float(times.min()), float(times.max())
        start = 0
        while start < times.size:
            limit = self.anchor_ + REBASE_HALF_LIVES * half_life
            # The first event too far after the anchor (if any; usually none) ends this run.
            far = np.flatnonzero(times[start:] > limit) if last > limit else _NONE
            stop = start + int(far[0]) if far.size else times.size
            if stop > start:
                part = slice(start, stop)
                self._accumulate(times[part], codes[part], signs[part], movies[part])
            if stop < times.size:
                anchor = float(times[stop])
                self.sums_ = self.sums_ * np.exp2((self.anchor_ - anchor) / half_life)
                self.anchor_ = anchor
            start = stop
        self._template = None
        self.oldest_ = min(self.oldest_, first)
        self.latest_ = max(self.latest_, last)
        self.n_events_ += int(times.size)

    def _accumulate(self, times: np.ndarray, codes: np.ndarray, signs: np.ndarray,
                    movies: np.ndarray) -> None:
        """Add the events' terms at the current anchor, one by one in order."""
        weights = np.exp2((times - self.anchor_) / self.spec.half_life_s)
        terms, blind = self.spec.terms(codes, signs, movies, weights)
        if blind is not None:
            self.blind_ = blind
        # Sequential adds (not np.sum's pairwise ones): any chunking adds the same terms in the
        # same order (one term: the same single add, without the stack). The last row is
        # copied: a view would keep the whole (n + 1, width) stack alive in the cache.
        self.sums_ = (self.sums_ + terms[0] if times.size == 1 else
                      np.add.accumulate(np.vstack((self.sums_, terms)), axis=0)[-1].copy())

    def _timeless(self) -> np.ndarray:
        """The vector with the parts that do not change with time filled in (affinities and
        diversity: ratios of sums, where the decay cancels), rounded; kept until the next fold.
        """
        if self._template is None:
            spec = self.spec
            n_types, n_genres = len(spec.types), len(spec.genres)
            out = np.zeros(n_types + n_genres + 3)
            signed = self.sums_[n_types:].reshape(2, n_genres)  # positive, negative
            totals = signed.sum(axis=1)
            mass = float(totals[0] + totals[1])
            if mass > 0:
                out[n_types:n_types + n_genres] = (signed[0] - signed[1]) / mass
            out[-1] = _diversity(signed[0], float(totals[0]))
            self._template = np.round(out, DECIMALS, out=out)
            self._counts = self.sums_[:n_types].copy()
        return self._template

    def vector(self, now: float, phase: float = 0.0) -> np.ndarray:
        """The behavioural features asked for at ``now`` (see the module doc), shape
        ``(len(spec.names),)``, rounded to :data:`DECIMALS`: the decay taken at the start of
        ``now``'s step, steps starting at ``phase`` (:meth:`BehaviourSpec.decay_time`; the
        user's :meth:`BehaviourSpec.decay_phase`), or at the latest event if that is later (an
        event within the step, or a client clock ahead of the server's).
        """
        out = self._timeless().copy()
        if self.n_events_ == 0:
            return out
        half_life = self.spec.half_life_s
        now = max(self.spec.decay_time(now, phase), self.latest_)
        counts = self._counts * (2.0 ** ((self.anchor_ - now) / half_life))
        n_types = counts.size
        out[:n_types] = np.log1p(counts)
        out[-3] = 2.0 ** ((self.latest_ - now) / half_life)
        out[-2] = math.log1p(float(counts.sum()))
        # The template's values are rounded already, and rounding is idempotent on them.
        return np.round(out, DECIMALS, out=out)

    def to_json(self) -> str:
        """The state as JSON text (floats written exactly: :meth:`from_json` restores the bits)."""
        return json.dumps({
            "version": FEATURE_VERSION, **self.spec.describe(), "seq": self.seq_,
            "anchor": None if math.isnan(self.anchor_) else self.anchor_,
            "sums": self.sums_.tolist(), "oldest": _json_time(self.oldest_),
            "latest": _json_time(self.latest_), "dropped": _json_time(self.dropped_),
            "cut": _json_time(self.cut_), "n_events": self.n_events_,
            "blind": self.blind_ is not None})

    @classmethod
    def from_json(cls, spec: BehaviourSpec, text: str | bytes) -> BehaviourState:
        """The state :meth:`to_json` wrote, under ``spec``.

        Raises
        ------
        ValueError
            The text was written for another feature version, types, genres, half-life or
            decay step.
        """
        data = json.loads(text)
        written = {k: data.get(k) for k in ("version", "types", "genres", "half_life_s",
                                            "decay_step_s")}
        expected = {"version": FEATURE_VERSION, **spec.describe()}
        if written != expected:
            raise ValueError(f"state was saved for {written}, which is not this spec's "
                             f"{expected}; rebuild it from the events")
        state = cls(spec)
        state.seq_ = int(data["seq"])
        state.anchor_ = math.nan if data["anchor"] is None else float(data["anchor"])
        state.sums_ = np.asarray(data["sums"], dtype=np.float64)
        state.oldest_ = _time_from_json(data["oldest"], math.inf)
        state.latest_ = _time_from_json(data["latest"], -math.inf)
        state.dropped_ = _time_from_json(data["dropped"], -math.inf)
        state.cut_ = _time_from_json(data["cut"], -math.inf)
        state.n_events_ = int(data["n_events"])
        # Blind under another process's spec: a generation no spec has, so the cache
        # rebuilds it at its first use (FeatureCache.state).
        state.blind_ = -1 if data.get("blind") else None
        return state


def _diversity(positive: np.ndarray, total: float) -> float:
    """Normalised entropy of the genre shares ``positive / total`` (0 with none or one genre)."""
    if total <= 0 or positive.size < 2:
        return 0.0
    return float(entr(positive / total).sum() / math.log(positive.size))


class FeatureCache:
    """Each user's :class:`BehaviourState`, kept between requests (one cache per worker).

    A request folds only the events logged since the user's last request; a state that no
    longer :meth:`~BehaviourState.covers` the retention window is rebuilt from the events
    passed, and a read older than the cached state is replayed on its own, so :meth:`state`
    always equals a replay of the events passed, within the window. The log's seqs must be
    visible in order (the store gives a feedback its seq when it commits, under the lock that
    orders the log), so a read that sees a seq has seen every smaller one of the user. Least
    recently used users are evicted beyond ``max_users``. Not thread-safe: the service uses it
    from its event loop only (a fold never awaits).

    Parameters
    ----------
    spec : BehaviourSpec
    retention_s : float or None, default :data:`DEFAULT_RETENTION_S`
        Events older than this (at the request's ``now``) are left out; None keeps them all.
    max_users : int, default :data:`DEFAULT_CACHE_USERS`

    Raises
    ------
    TypeError, ValueError
        ``retention_s`` not a positive finite number (or None); ``max_users`` not an int >= 1.
    """

    def __init__(self, spec: BehaviourSpec, *, retention_s: float | None = DEFAULT_RETENTION_S,
                 max_users: int = DEFAULT_CACHE_USERS) -> None:
        self.spec = spec
        self.retention_s = (None if retention_s is None
                            else check_real(retention_s, "retention_s", low=0, low_open=True))
        self.max_users = check_int(max_users, "max_users")
        # Each user's state, and how many of the events passed to its last fold it had seen
        # (all of them, after the fold).
        self._states: OrderedDict[int, tuple[BehaviourState, int]] = OrderedDict()

    def __len__(self) -> int:
        return len(self._states)

    def since(self, now: float) -> float:
        """The retention cut-off at ``now`` (``-inf`` without retention)."""
        return -math.inf if self.retention_s is None else now - self.retention_s

    def replay(self, events: Sequence[UserEvent], now: float) -> BehaviourState:
        """A fresh state folded from ``events`` within the window at ``now`` (no cache)."""
        return BehaviourState(self.spec).fold(events, self.since(now))

    def state(self, user_id: int, events: Sequence[UserEvent], now: float) -> BehaviourState:
        """``user_id``'s state at ``now``: the cached one advanced by the new ``events``, or a
        replay when the window moved past it, when the events it had seen are not those
        passed now (a purge deleted some, or one older than those it folded appears), or when
        it folded an item the spec did not know and the spec has learned items since.

        Parameters
        ----------
        user_id : int
        events : sequence of UserEvent
            All the user's events the store holds, in log order.
        now : float
            Unix seconds.
        """
        since = self.since(now)
        kept = self._states.get(user_id)
        state = None if kept is None else kept[0]
        if state is not None and (events[-1].seq if events else -1) < state.seq_:
            # A read older than the cached state (a concurrent request of the same user read
            # the log first): replayed on its own, the cache left as it is.
            return self.replay(events, now)
        self._states.pop(user_id, None)
        # The events up to the state's seq must be the ones its last fold was passed: a purge
        # that deleted some (found by attack: a purge at a shorter retention than the
        # service's left them in the features until a restart), or an older one appearing
        # (a clock gone back), changes their number, and the state is rebuilt. An event
        # leaving the store's window changes it too (a rebuild, also due when it was folded).
        # A state that folded an item the spec did not know then is rebuilt once the spec has
        # learned items since (another worker's POST /admin/items, read by this one's refresh).
        if (state is None or not state.covers(since)
                or (state.blind_ is not None and state.blind_ != self.spec.generation)
                or bisect.bisect_right(events, state.seq_, key=_SEQ) != kept[1]):  # type: ignore[index]  # kept with state
            state = BehaviourState(self.spec)
        state.fold(events, since)
        self._states[user_id] = (state, len(events))
        if len(self._states) > self.max_users:
            self._states.popitem(last=False)
        return state


class FeatureStore:
    """Feature set ``user-v4`` (see the module doc): static, behavioural and stated features.

    One per worker; its :class:`FeatureCache` keeps each user's behavioural state between
    requests.

    Parameters
    ----------
    catalog : Dataset
        Users (demographics), training ratings (genre shares, activity), items' genres.
    rules : RuleBook, optional
        Event types and signs (default: ``RuleBook()``, the default rules).
    half_life_s : float, default :data:`DEFAULT_HALF_LIFE_S`
    decay_step_s : float, default :data:`DEFAULT_DECAY_STEP_S`
    retention_s : float or None, default :data:`DEFAULT_RETENTION_S`
        The service's ``retention_s``.
    cache_users : int, default :data:`DEFAULT_CACHE_USERS`

    Raises
    ------
    TypeError, ValueError
        As :class:`BehaviourSpec` and :class:`FeatureCache`.
    """

    version = FEATURE_VERSION

    def __init__(self, catalog: Dataset, rules: RuleBook | None = None, *,
                 half_life_s: float = DEFAULT_HALF_LIFE_S,
                 decay_step_s: float = DEFAULT_DECAY_STEP_S,
                 retention_s: float | None = DEFAULT_RETENTION_S,
                 cache_users: int = DEFAULT_CACHE_USERS) -> None:
        self.static = StaticFeatures.build(catalog)
        self.spec = BehaviourSpec.from_catalog(catalog, rules if rules is not None
                                               else RuleBook(), half_life_s=half_life_s,
                                               decay_step_s=decay_step_s)
        self.cache = FeatureCache(self.spec, retention_s=retention_s, max_users=cache_users)
        self.genres = self.spec.genres
        self._genre_pos = {g: i for i, g in enumerate(self.genres)}
        self.names: list[str] = [*self.static.names, *self.spec.names,
                                 *(f"stated={g}" for g in self.genres)]
        # The behavioural and stated parts of a user with no event in the window and no stated
        # genre: a fold of nothing, the same at any time (see vector()).
        blank = np.concatenate((BehaviourState(self.spec).vector(0.0), self.stated_vector(None)))
        blank.flags.writeable = False
        self._blank: np.ndarray = blank

    @property
    def dimension(self) -> int:
        """Length ``d`` of every vector."""
        return len(self.names)

    def mean_vector(self) -> np.ndarray:
        """The average context of the catalogue's users with no event and no stated genre,
        shape ``(d,)`` (where ``GET /policy`` evaluates a contextual policy).
        """
        rest = np.zeros(self.dimension - len(self.static.names))
        return np.concatenate((self.static.rows.mean(axis=0), rest))

    def stated_vector(self, stated: Sequence[str] | None) -> np.ndarray:
        """One-hot of the ``stated`` genres, shape ``(n_genres,)``; a name the catalogue does not
        have is ignored (``PUT /users/{id}/preferences`` refuses those).
        """
        out = np.zeros(len(self.genres))
        for genre in stated or ():
            pos = self._genre_pos.get(genre)
            if pos is not None:
                out[pos] = 1.0
        return out

    def decay_expiry(self, user_id: int, now: float) -> float:
        """When ``user_id``'s vector asked for at ``now`` may next change without an event: the
        end of their decay step (:meth:`BehaviourSpec.decay_expiry` at their phase).
        """
        return self.spec.decay_expiry(now, self.spec.decay_phase(user_id))

    def learn(self, items: Sequence[AddedItem]) -> int:
        """Learn the genres of items added at run time (:meth:`BehaviourSpec.learn`); returns
        how many were new. Folds may run meanwhile; calls to ``learn`` must not (the service
        makes them under its advance lock, or before it serves).
        """
        return self.spec.learn(items)

    def vector(self, user_id: int, events: Sequence[UserEvent],
               stated: Sequence[str] | None, now: float, *, cached: bool = True) -> np.ndarray:
        """The context of ``user_id`` at ``now`` (:meth:`context`'s vector)."""
        return self.context(user_id, events, stated, now, cached=cached)[0]

    def context(self, user_id: int, events: Sequence[UserEvent],
                stated: Sequence[str] | None, now: float, *, cached: bool = True
                ) -> tuple[np.ndarray, bool]:
        """The context of ``user_id`` at ``now``, shape ``(d,)``, rounded to :data:`DECIMALS`,
        and whether an event's item was unknown to the spec (it counts in no genre: the
        caller may learn the items added since and ask again).

        Parameters
        ----------
        user_id : int
            Raw user id (a stranger gets the bias, behavioural and stated features only).
        events : sequence of UserEvent
            Every event of the user the store holds, in log order (``Store.user_feedback``).
        stated : sequence of str or None
            The genres the user stated last (``Store.user_preferences``), None if never.
        now : float
            Unix seconds: the retention cut-off is taken at this time, the decay at the start
            of its step of the user's (:meth:`BehaviourSpec.decay_time` at the user's
            :meth:`BehaviourSpec.decay_phase`).
        cached : bool, default True
            Use (and advance) the worker's :class:`FeatureCache`; False replays the events.
        """
        if not events and stated is None:
            # Nothing to fold (most requests of users without events): the empty state's
            # values, without the cache's bookkeeping (1.0 against 2.4 us a call). A state the
            # cache keeps for this user from older events is left there: it no longer covers
            # the window, so the user's next event rebuilds it.
            return np.concatenate((self.static.row(user_id), self._blank)), False
        state = (self.cache.state(user_id, events, now) if cached
                 else self.cache.replay(events, now))
        return (np.concatenate((self.static.row(user_id),
                                state.vector(now, self.spec.decay_phase(user_id)),
                                self.stated_vector(stated))),
                state.blind_ is not None)


__all__ = [
    "AGE_BUCKETS",
    "DECAY_PHASE_MULTIPLIER",
    "DECIMALS",
    "DEFAULT_CACHE_USERS",
    "DEFAULT_DECAY_STEP_S",
    "DEFAULT_HALF_LIFE_S",
    "DEFAULT_RETENTION_S",
    "FEATURE_VERSION",
    "REBASE_HALF_LIVES",
    "SESSION_FEATURE_VERSION",
    "BehaviourSpec",
    "BehaviourState",
    "FeatureCache",
    "FeatureStore",
    "StaticFeatures",
    "UserFeatures",
]
