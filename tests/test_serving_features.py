"""Feature set ``user-v4`` (serving/features.py): the behavioural fold of a user's events.

- incremental == replay, bit for bit, over random event streams and chunkings (hypothesis);
- the decay against its closed form on a tiny case;
- retention: events that left the window steer nothing, exactly;
- the per-worker cache == a replay under any sequence of requests and cut-offs;
- names and dimension fixed by the version; an unknown user; bad parameters;
- ``GET /users/{id}/features`` through the app on a synthetic catalogue.
"""

from __future__ import annotations

import itertools
import json
import math
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import pytest
from fastapi.testclient import TestClient
from hypothesis import given, settings
from hypothesis import strategies as st

from arms.data import make_synthetic
from arms.data.dataset import Dataset
from serving.app import create_app
from serving.features import (
    DECIMALS,
    FEATURE_VERSION,
    REBASE_HALF_LIVES,
    SESSION_FEATURE_VERSION,
    BehaviourSpec,
    BehaviourState,
    FeatureCache,
    FeatureStore,
    UserFeatures,
)
from serving.rules import RuleBook
from serving.settings import Settings
from serving.store.types import AddedItem, UserEvent

RULES = RuleBook()
GENRES = ("Action", "Comedy", "Drama")
#: Item 10: Action; 20: Comedy; 30: Action and Comedy; 40: no genre; any other id: unknown.
ITEMS = np.array([10, 20, 30, 40])
FLAGS = np.array([[1, 0, 0], [0, 1, 0], [1, 1, 0], [0, 0, 0]], dtype=float)
HALF_LIFE = 100.0


def spec(half_life: float = HALF_LIFE) -> BehaviourSpec:
    return BehaviourSpec(RULES, ITEMS, FLAGS, GENRES, half_life_s=half_life)


def names(s: BehaviourSpec) -> list[str]:
    return s.names


def value_of(s: BehaviourSpec, x: np.ndarray, name: str) -> float:
    return float(x[s.names.index(name)])


def bits(state: BehaviourState) -> tuple[bytes, float, float, float, float, int, int]:
    """Everything a state holds, exactly (the sums as their bytes)."""
    return (state.sums_.tobytes(), state.anchor_, state.oldest_, state.latest_,
            state.dropped_, state.seq_, state.n_events_)


# ---------------------------------------------------------------------------- random streams
EVENT_TYPES = [*RULES.types, "shrug"]  # plus a type the rule book does not know


@st.composite
def event_logs(draw: st.DrawFn, max_size: int = 40) -> list[UserEvent]:
    """A user's log: ascending seqs (with gaps), any types and values, times that tie, go back
    into the past, or jump far ahead (past the rebase threshold of a 100 s half-life).
    """
    n = draw(st.integers(0, max_size))
    seq = draw(st.integers(1, 5))
    t = 1_700_000_000.0
    log = []
    for _ in range(n):
        kind = draw(st.sampled_from(EVENT_TYPES))
        value = None
        if kind == "rating":
            value = draw(st.sampled_from([1.0, 2.0, 2.5, 3.0, 4.0, 5.0]))
        elif kind == "dwell":
            value = draw(st.floats(0.0, 86_400.0))
        step = draw(st.one_of(st.just(0.0), st.floats(-500.0, 500.0),
                              st.floats(0.0, 2 * REBASE_HALF_LIVES * HALF_LIFE)))
        t += step
        movie = draw(st.sampled_from([10, 20, 30, 40, 99]))
        log.append(UserEvent(seq, movie, kind, value, t))
        seq += draw(st.integers(1, 3))
    return log


def replay(events: list[UserEvent], since: float = -math.inf,
           s: BehaviourSpec | None = None) -> BehaviourState:
    return BehaviourState(s or spec()).fold(events, since)


@settings(max_examples=60, deadline=None, derandomize=True, database=None)
@given(log=event_logs(), cuts=st.lists(st.integers(0, 40), max_size=6),
       later=st.floats(0.0, 1000.0))
def test_folding_in_chunks_with_snapshots_equals_one_replay_bit_for_bit(
        log: list[UserEvent], cuts: list[int], later: float) -> None:
    s = spec()
    whole = replay(log, s=s)
    state = BehaviourState(s)
    bounds = sorted({0, len(log), *(min(c, len(log)) for c in cuts)})
    for start, stop in itertools.pairwise(bounds):
        # Saved and restored between chunks, as a snapshot in the store would be.
        state = BehaviourState.from_json(s, state.fold(log[start:stop]).to_json())
    assert bits(state) == bits(whole)
    # The same chunks, each folded with the whole log passed (seen seqs are skipped).
    again = BehaviourState(s)
    for stop in bounds:
        again.fold(log[:stop])
    assert bits(again) == bits(whole)
    now = (whole.latest_ if log else 1_700_000_000.0) + later
    assert whole.vector(now).tobytes() == state.vector(now).tobytes()
    folded = [e for e in log if e.event_type in RULES.types]
    assert whole.n_events_ == len(folded)
    if folded:
        x = whole.vector(now)
        assert x[s.names.index("recency")] <= 1.0
        affinities = x[[i for i, n in enumerate(s.names) if n.startswith("affinity=")]]
        assert np.abs(affinities).sum() <= 1.0 + 1e-3  # shares of one signed mass


def test_a_far_future_event_moves_the_anchor_and_keeps_the_sums_finite() -> None:
    s = spec(half_life=1.0)
    log = [UserEvent(i + 1, 10, "like", None, 1000.0 * i) for i in range(20)]  # 1,000 half-lives
    state = replay(log, s=s)
    assert state.anchor_ == 19_000.0 and np.isfinite(state.sums_).all()
    x = state.vector(19_000.0)
    assert value_of(s, x, "count=like") == round(math.log1p(1.0), DECIMALS)  # the rest ~2**-1000
    assert value_of(s, x, "affinity=Action") == 1.0


# ---------------------------------------------------------------------------- closed form
def test_decay_matches_the_closed_form_on_a_tiny_log() -> None:
    s = spec()
    h = HALF_LIFE
    log = [UserEvent(1, 10, "like", None, 0.0),       # Action, +
           UserEvent(2, 30, "like", None, h),         # Action and Comedy, +
           UserEvent(3, 20, "dislike", None, 2 * h),  # Comedy, -
           UserEvent(4, 40, "rating", 2.0, 2 * h),    # no genre; 2 stars: - (no genre mass)
           UserEvent(5, 99, "view", None, 0.5 * h)]   # unknown item, sign 0, past timestamp
    now = 3 * h
    x = replay(log, s=s).vector(now)
    like = 2 ** -3 + 2 ** -2
    dislike = rating = 2 ** -1
    view = 2 ** -2.5
    expected = {
        "count=like": math.log1p(like), "count=dislike": math.log1p(dislike),
        "count=rating": math.log1p(rating), "count=view": math.log1p(view),
        "count=click": 0.0, "count=purchase": 0.0,
        "recency": 2 ** -1,
        "live_activity": math.log1p(like + dislike + rating + view),
    }
    # Genre mass: Action + (Action, Comedy) liked, Comedy disliked.
    positive = {"Action": 2 ** -3 + 2 ** -2, "Comedy": 2 ** -2, "Drama": 0.0}
    negative = {"Action": 0.0, "Comedy": 2 ** -1, "Drama": 0.0}
    mass = sum(positive.values()) + sum(negative.values())
    for g in GENRES:
        expected[f"affinity={g}"] = (positive[g] - negative[g]) / mass
    shares = np.array([positive["Action"], positive["Comedy"]]) / (positive["Action"]
                                                                   + positive["Comedy"])
    expected["diversity"] = float(-(shares * np.log(shares)).sum() / math.log(3))
    for name, value in expected.items():
        assert value_of(s, x, name) == pytest.approx(value, abs=0.51 * 10 ** -DECIMALS), name
    assert x.tolist() == np.round(x, DECIMALS).tolist()
    # A client clock ahead of the server: now before the latest event counts as that event.
    early = replay(log, s=s).vector(h)
    assert value_of(s, early, "recency") == 1.0


def test_a_state_with_no_event_is_all_zero() -> None:
    s = spec()
    assert not replay([], s=s).vector(1e9).any()
    # Only events of a type the rule book does not know: nothing folded, but seen.
    state = replay([UserEvent(3, 10, "shrug", None, 5.0)], s=s)
    assert state.n_events_ == 0 and state.seq_ == 3 and not state.vector(6.0).any()


# ---------------------------------------------------------------------------- retention
def test_events_older_than_the_retention_window_steer_nothing() -> None:
    s = spec()
    cache = FeatureCache(s, retention_s=300.0, max_users=10)
    log = [UserEvent(1, 10, "dislike", None, 0.0), UserEvent(2, 20, "like", None, 250.0)]
    first = cache.state(7, log, 290.0)  # both within 300 s
    assert first.n_events_ == 2
    later = cache.state(7, log, 320.0)  # the dislike (t=0) is now 320 s old: out
    assert later.n_events_ == 1 and later.oldest_ == 250.0
    only_like = replay(log[1:], s=s)
    assert bits(later)[:4] == bits(only_like)[:4]  # the same sums as if it never happened
    assert bits(later) == bits(replay(log, since=20.0, s=s))
    x = later.vector(320.0)
    assert x.tobytes() == only_like.vector(320.0).tobytes()
    assert value_of(s, x, "count=dislike") == 0.0 and value_of(s, x, "affinity=Comedy") == 1.0
    # A past-stamped event already outside the window is never folded.
    log.append(UserEvent(3, 10, "dislike", None, 10.0))
    assert cache.state(7, log, 330.0).n_events_ == 1
    # Asked for an earlier time again, the dropped events are back in the window: rebuilt.
    back = cache.state(7, log, 290.0)
    assert back.n_events_ == 3 and bits(back)[:5] == bits(replay(log, since=-10.0, s=s))[:5]


@settings(max_examples=60, deadline=None, derandomize=True, database=None)
@given(log=event_logs(max_size=30),
       requests=st.lists(st.tuples(st.integers(0, 30), st.floats(-3000.0, 3000.0),
                                   st.integers(1, 3)), min_size=1, max_size=8),
       retention=st.sampled_from([50.0, 400.0, 5000.0, None]))
def test_the_cache_equals_a_replay_under_any_requests(
        log: list[UserEvent], requests: list[tuple[int, float, int]],
        retention: float | None) -> None:
    # Each request sees a prefix of the log (what was committed by then), at a time now that
    # may go back (another worker's clock); users share one small cache and evict each other.
    s = spec()
    cache = FeatureCache(s, retention_s=retention, max_users=2)
    base = 1_700_000_000.0
    for visible, offset, user in requests:
        events = log[:visible]
        now = base + offset + (events[-1].created_at - base if events else 0.0)
        got = cache.state(user, events, now)
        want = cache.replay(events, now)
        assert bits(got)[:5] == bits(want)[:5] and got.n_events_ == want.n_events_
        assert got.vector(now).tobytes() == want.vector(now).tobytes()
        assert len(cache) <= 2


def added(item_id: int, *genres: str, seq: int = 1) -> AddedItem:
    return AddedItem(seq, item_id, f"item {item_id}", genres, None, 0.0)


#: Items added at run time in the streams below: 50 Drama, 60 Action and Drama.
ADDED = [added(50, "Drama", seq=1), added(60, "Action", "Drama", seq=2)]


@settings(max_examples=60, deadline=None, derandomize=True, database=None)
@given(log=event_logs(max_size=30).map(lambda log: [
           e._replace(movie_id={40: 50, 99: 60}.get(e.movie_id, e.movie_id)) if i % 2 else e
           for i, e in enumerate(log)]),
       steps=st.lists(st.one_of(st.tuples(st.just("request"), st.integers(0, 30),
                                          st.integers(1, 2)),
                                st.tuples(st.just("learn"), st.integers(0, 1), st.just(0))),
                      min_size=1, max_size=10))
def test_the_cache_equals_a_replay_under_the_items_the_spec_knows_as_it_learns(
        log: list[UserEvent], steps: list[tuple[str, int, int]]) -> None:
    # A worker folds events on items another worker added before it has read them (blind),
    # then learns them: every state equals a replay under the items known at that moment.
    s = spec()
    cache = FeatureCache(s, retention_s=None, max_users=4)
    learned: list[AddedItem] = []
    for kind, a, user in steps:
        if kind == "learn":
            learned.append(ADDED[a])
            s.learn([ADDED[a]])
            continue
        events = log[:a]
        now = events[-1].created_at if events else 1_700_000_000.0
        got = cache.state(user, events, now)
        known = spec()
        known.learn(learned)
        want = replay(events, s=known)
        assert bits(got) == bits(want)
        assert got.vector(now).tobytes() == want.vector(now).tobytes()
        assert (got.blind_ is not None) == (want.blind_ is not None)
        _, _, signs, movies = known.encode(events)
        assert (got.blind_ is not None) == any(
            sign != 0 and not known.knows(movie)
            for sign, movie in zip(signs.tolist(), movies.tolist(), strict=True))


def test_an_event_on_a_learned_item_counts_in_its_genres() -> None:
    s = spec()
    like = [UserEvent(1, 50, "like", None, 0.0)]
    blind = replay(like, s=s)
    assert blind.blind_ == 0 and value_of(s, blind.vector(0.0), "affinity=Drama") == 0.0
    assert not s.knows(50) and s.knows(10) and s.generation == 0
    assert s.learn(ADDED) == 2 and s.generation == 1 and s.knows(50) and s.knows(60)
    # Known already (catalogue or learned), a duplicate, or a genre the spec does not have:
    # nothing new, the generation stays.
    assert s.learn([added(10, "Drama"), added(50, "Comedy"), *ADDED]) == 0
    assert s.generation == 1
    assert s.learn([added(70, "Jazz", "Drama"), added(70, "Comedy")]) == 1
    assert s.generation == 2
    # A view (no sign) on an unknown item counts in no genre either way: not blind.
    assert replay([UserEvent(1, 80, "view", None, 0.0)], s=s).blind_ is None
    seen = replay(like, s=s)
    assert seen.blind_ is None and value_of(s, seen.vector(0.0), "affinity=Drama") == 1.0
    both = replay([*like, UserEvent(2, 60, "dislike", None, 0.0)], s=s)
    x = both.vector(0.0)
    assert ([value_of(s, x, f"affinity={g}") for g in GENRES]
            == [round(-1 / 3, DECIMALS), 0.0, 0.0])
    # Item 70's unknown genre is ignored, its known one counts; the first of two adds wins.
    assert value_of(s, replay([UserEvent(1, 70, "like", None, 0.0)], s=s).vector(0.0),
                    "affinity=Drama") == 1.0
    # A blind state saved and restored is rebuilt at the cache's first use of it.
    restored = BehaviourState.from_json(s, blind.to_json())
    assert restored.blind_ == -1
    cache = FeatureCache(s, retention_s=None)
    cache._states[5] = (restored, 1)
    assert cache.state(5, like, 0.0) is not restored
    assert cache.state(5, like, 0.0).blind_ is None


def test_a_cache_without_retention_keeps_each_state_and_folds_only_new_events() -> None:
    # Found when the test above ran without retention: a state that dropped nothing (-inf)
    # did not cover a cut-off of -inf, so the cache rebuilt every state on every request.
    s = spec()
    cache = FeatureCache(s, retention_s=None)
    log = [UserEvent(1, 10, "like", None, 0.0), UserEvent(2, 20, "view", None, 5.0)]
    first = cache.state(3, log[:1], 0.0)
    assert cache.state(3, log, 5.0) is first and first.n_events_ == 2
    assert bits(first) == bits(replay(log, s=s))


def test_a_state_folded_under_a_later_cut_is_rebuilt_when_the_cut_goes_back() -> None:
    # The store's read leaves out what is past retention, so a request at t folds [2, 3];
    # a request of the same user at t - 5 (a clock set back, or two requests whose reads
    # finished out of order) reads [1, 2, 3]: event 1 must count, as in a replay.
    s = spec()
    cache = FeatureCache(s, retention_s=100.0)
    log = [UserEvent(1, 10, "like", None, 0.0), UserEvent(2, 20, "like", None, 50.0),
           UserEvent(3, 30, "click", None, 60.0)]
    late = cache.state(5, [e for e in log if e.created_at >= 102.0 - 100.0], 102.0)
    assert late.n_events_ == 2
    early = cache.state(5, log, 97.0)
    assert early.n_events_ == 3
    assert bits(early)[:5] == bits(replay(log, since=-3.0, s=s))[:5]
    assert early.vector(97.0).tobytes() == cache.replay(log, 97.0).vector(97.0).tobytes()


def test_a_purge_of_events_the_state_folded_rebuilds_it() -> None:
    # Found by attack: `recbandits purge` at a shorter retention than the service's deleted
    # events still inside the service's window; the cached state kept them (until a restart).
    s = spec()
    cache = FeatureCache(s, retention_s=1000.0)
    log = [UserEvent(1, 10, "purchase", None, 0.0), UserEvent(2, 20, "like", None, 50.0),
           UserEvent(3, 30, "click", None, 60.0)]
    assert cache.state(5, log, 100.0).n_events_ == 3
    after = cache.state(5, log[1:], 100.0)  # the purge took event 1
    assert after.n_events_ == 2 and bits(after)[:5] == bits(replay(log[1:], s=s))[:5]
    more = [*log[1:], UserEvent(4, 40, "like", None, 90.0)]  # and a new event folds onto it
    got = cache.state(5, more, 100.0)
    assert got.vector(100.0).tobytes() == cache.replay(more, 100.0).vector(100.0).tobytes()


def test_an_event_older_than_the_folded_ones_appearing_rebuilds_the_state() -> None:
    # Found by a helper's property run: a history without event 1, then one with it (a clock
    # set back re-admits it to the window): the state had skipped it as already seen.
    s = spec()
    cache = FeatureCache(s, retention_s=1000.0)
    log = [UserEvent(1, 10, "dislike", None, 10.0), UserEvent(2, 20, "like", None, 20.0)]
    assert cache.state(5, log[1:], 30.0).n_events_ == 1
    both = cache.state(5, log, 30.0)
    assert both.n_events_ == 2 and bits(both)[:5] == bits(replay(log, s=s))[:5]


@settings(max_examples=60, deadline=None, derandomize=True, database=None)
@given(log=event_logs(max_size=30),
       requests=st.lists(st.tuples(st.integers(0, 6), st.floats(0.0, 300.0),
                                   st.one_of(st.none(), st.floats(-300.0, 300.0))),
                         min_size=1, max_size=10))
def test_the_cache_equals_a_replay_when_purges_delete_events(
        log: list[UserEvent], requests: list[tuple[int, float, float | None]]) -> None:
    # The log grows and the clock moves on; between requests a purge may delete every event
    # stamped before a date (what `recbandits purge --before` does), also inside the cache's
    # retention window.
    s = spec()
    cache = FeatureCache(s, retention_s=5000.0)
    visible, clock = 0, 0.0
    purged_before = -math.inf
    for grow, dt, cut in requests:
        visible, clock = visible + grow, clock + dt
        prefix = log[:visible]  # what was committed by then
        events = [e for e in prefix if e.created_at >= purged_before]
        now = clock + max((e.created_at for e in prefix), default=1_700_000_000.0)
        got = cache.state(1, events, now)
        want = cache.replay(events, now)
        assert bits(got)[:5] == bits(want)[:5] and got.n_events_ == want.n_events_
        assert got.vector(now).tobytes() == want.vector(now).tobytes()
        if cut is not None and prefix:
            purged_before = max(purged_before, prefix[0].created_at + cut)


# ---------------------------------------------------------------------------- snapshots
def test_a_snapshot_restores_only_under_the_same_spec() -> None:
    log = [UserEvent(1, 10, "like", None, 0.0)]
    text = replay(log).to_json()
    assert json.loads(text)["version"] == FEATURE_VERSION
    restored = BehaviourState.from_json(spec(), text)
    assert bits(restored) == bits(replay(log))
    with pytest.raises(ValueError, match=r"half_life_s.*rebuild it from the events"):
        BehaviourState.from_json(spec(half_life=50.0), text)
    other = BehaviourSpec(RULES, ITEMS, FLAGS[:, :2], GENRES[:2], half_life_s=HALF_LIFE)
    with pytest.raises(ValueError, match="genres"):
        BehaviourState.from_json(other, text)
    empty = BehaviourState.from_json(spec(), BehaviourState(spec()).to_json())
    assert bits(empty) == bits(BehaviourState(spec()))


# ---------------------------------------------------------------------------- the feature set
@pytest.fixture(scope="module")
def catalog() -> Dataset:
    return make_synthetic(40, 60, 800, random_state=0)


def test_names_and_dimension_are_fixed_by_the_version(catalog: Dataset) -> None:
    store = FeatureStore(catalog)
    v1 = UserFeatures(catalog)
    assert store.version == FEATURE_VERSION == "user-v4" != v1.version == SESSION_FEATURE_VERSION
    n_static = v1.dimension - 2  # user-v1 = the static part + two session counts
    assert store.names[:n_static] == v1.names[:n_static]
    g = len(catalog.genre_names)
    assert store.names[n_static:] == [
        *(f"count={t}" for t in RULES.types), *(f"affinity={x}" for x in catalog.genre_names),
        "recency", "live_activity", "diversity", *(f"stated={x}" for x in catalog.genre_names)]
    assert store.dimension == len(store.names) == len(set(store.names)) == n_static + 8 + 2 * g + 3
    user = int(catalog.users.index[3])
    log = [UserEvent(1, int(catalog.item_ids[0]), "like", None, 100.0)]
    for events, stated in (([], None), (log, ["Drama", "Comedy"])):
        x = store.vector(user, events, stated, 200.0)
        assert x.shape == (store.dimension,)
        assert x.tolist() == np.round(x, DECIMALS).tolist()
    # The static part is user-v1's, value for value.
    assert x[:n_static].tolist() == v1.vector(user, 0, 0)[:n_static].tolist()
    stated = x[[store.names.index(f"stated={x}") for x in catalog.genre_names]]
    assert stated.sum() == 2 and x[store.names.index("stated=Drama")] == 1.0
    assert store.mean_vector().shape == (store.dimension,)
    assert store.mean_vector()[n_static:].sum() == 0.0


def test_a_user_the_catalogue_does_not_know_has_bias_behaviour_and_stated_genres(
        catalog: Dataset) -> None:
    store = FeatureStore(catalog)
    stranger = 10**9
    n_static = len(store.static.names)
    like = [UserEvent(1, int(catalog.item_ids[5]), "like", None, 50.0)]
    x = store.vector(stranger, like, ["Comedy", "not a genre"], 50.0)
    assert x[0] == 1.0 and not x[1:n_static].any()
    assert x[store.names.index("count=like")] == round(math.log1p(1.0), DECIMALS)
    assert x[store.names.index("recency")] == 1.0
    assert x[store.names.index("stated=Comedy")] == 1.0 and x[-len(store.genres):].sum() == 1.0
    # The same vector as a replay without the cache.
    assert x.tolist() == store.vector(stranger, like, ["Comedy"], 50.0, cached=False).tolist()


def test_a_user_without_events_gets_the_vector_of_a_fold_of_nothing(catalog: Dataset) -> None:
    # vector() answers a user with no event and no stated genre without the cache: the same
    # values as the fold, for a known user and a stranger, at any time, and after events that
    # left the window (the cache still holds their state; the next event rebuilds it).
    store = FeatureStore(catalog, retention_s=100.0)
    n_static = len(store.static.names)
    for user in (int(catalog.users.index[3]), 10**9):
        for now in (0.0, 1e9):
            x = store.vector(user, [], None, now)
            folded = np.concatenate((store.static.row(user), BehaviourState(store.spec).fold(
                [], store.cache.since(now)).vector(now), np.zeros(len(store.genres))))
            assert x.tolist() == folded.tolist()
            assert x[n_static:].tolist() == store.vector(user, [], [], now)[n_static:].tolist()
    user = int(catalog.users.index[3])
    old = UserEvent(1, int(catalog.item_ids[0]), "like", None, 100.0)
    seen = store.vector(user, [old], None, 150.0)
    assert seen[store.names.index("count=like")] > 0  # cached now
    assert store.vector(user, [], None, 500.0).tolist() == store.vector(user, [], None, 500.0,
                                                                        cached=False).tolist()
    new = UserEvent(2, int(catalog.item_ids[1]), "view", None, 450.0)
    x = store.vector(user, [new], None, 500.0)
    assert x.tolist() == store.vector(user, [new], None, 500.0, cached=False).tolist()
    assert x[store.names.index("count=like")] == 0.0  # the expired like steers nothing
    # The shared blank part cannot be changed through a returned vector.
    x = store.vector(user, [], None, 0.0)
    x[n_static:] = 5.0
    assert not store.vector(user, [], None, 0.0)[n_static:].any()


def test_bad_parameters_name_the_parameter_and_the_value(catalog: Dataset) -> None:
    with pytest.raises(ValueError, match=r"half_life_s=0\.0 is outside the allowed range "
                                         r"\(0, inf\)"):
        FeatureStore(catalog, half_life_s=0)
    with pytest.raises(TypeError, match="half_life_s must be a real number, got '1' \\(str\\)"):
        FeatureStore(catalog, half_life_s="1")  # type: ignore[arg-type]
    with pytest.raises(ValueError, match=r"retention_s=inf must be finite"):
        FeatureStore(catalog, retention_s=math.inf)
    with pytest.raises(ValueError, match="max_users=0 must be >= 1"):
        FeatureStore(catalog, cache_users=0)
    with pytest.raises(TypeError, match=r"max_users must be an int, got 2\.0 \(float\)"):
        FeatureStore(catalog, cache_users=2.0)  # type: ignore[arg-type]
    with pytest.raises(ValueError, match=r"genre_flags must have shape"):
        BehaviourSpec(RULES, ITEMS, FLAGS[:2], GENRES)
    with pytest.raises(ValueError, match="events must be in log order"):
        replay([UserEvent(2, 10, "like", None, 0.0), UserEvent(1, 10, "like", None, 1.0)])
    with pytest.raises(ValueError, match=r"must be finite Unix seconds, got \[inf\]"):
        replay([UserEvent(1, 10, "like", None, math.inf)])
    with pytest.raises(ValueError, match="and none was given"):
        replay([UserEvent(1, 10, "rating", None, 0.0)])


# ---------------------------------------------------------------------------- HTTP
@pytest.fixture
def client(tmp_path: Path, catalog: Dataset, serving_arms: dict) -> Iterator[TestClient]:
    settings = Settings(state_dir=tmp_path / "state", db=f"sqlite:///{tmp_path / 's.db'}",
                        arms=["svd", "popularity"], seed=3)
    with TestClient(create_app(settings, catalog=catalog, arms=serving_arms)) as c:
        yield c


@pytest.fixture(scope="module")
def serving_arms(catalog: Dataset) -> dict:
    from serving.armset import fit_arms

    return fit_arms(["svd", "popularity"], catalog, seed=0)


def test_get_user_features_shows_the_vector_of_the_users_events(client: TestClient,
                                                                catalog: Dataset) -> None:
    user = int(catalog.users.index[0])
    before = client.get(f"/users/{user}/features")
    assert before.status_code == 200, before.text
    body = before.json()
    store = FeatureStore(catalog)
    assert body["user_id"] == user and body["feature_version"] == "user-v4"
    assert body["names"] == store.names and len(body["values"]) == store.dimension
    assert body["as_of"].endswith("Z")
    assert body["values"][store.names.index("count=like")] == 0.0
    # A like and stated genres show at once.
    slate = client.get("/recommendations", params={"user_id": user, "k": 3}).json()
    movie = slate["items"][0]["movie_id"]
    liked = client.post("/feedback", json={"user_id": user, "movie_id": movie,
                                           "feedback_type": "like",
                                           "event_id": slate["event_id"]})
    assert liked.status_code == 201, liked.text
    assert client.put(f"/users/{user}/preferences",
                      json={"genres": ["Drama"]}).status_code == 200
    after = client.get(f"/users/{user}/features").json()
    x = dict(zip(after["names"], after["values"], strict=True))
    assert x["count=like"] == round(math.log1p(1.0), DECIMALS)  # decayed by milliseconds
    assert x["recency"] == 1.0 and x["stated=Drama"] == 1.0
    genres = catalog.items.loc[movie, "genres"].split("|")
    assert sum(x[f"affinity={g}"] for g in genres) == pytest.approx(1.0, abs=1e-3)
    static = store.static.row(user).tolist()
    assert after["values"][:len(static)] == static


@pytest.mark.parametrize("path", ["/users/0/features", "/users/abc/features",
                                  "/users/1.5/features", f"/users/{2**62 + 1}/features"])
def test_get_user_features_refuses_a_bad_id(client: TestClient, path: str) -> None:
    response = client.get(path)
    assert response.status_code == 422
    assert response.json()["code"] == "invalid_request"
    assert response.json()["detail"][0]["loc"][:2] == ["path", "user_id"]


def test_the_route_is_documented(client: TestClient) -> None:
    op = client.get("/openapi.json").json()["paths"]["/users/{user_id}/features"]["get"]
    assert op["parameters"][0]["in"] == "path" and op["parameters"][0]["required"]
    assert op["responses"]["200"]["content"]["application/json"]["schema"]["$ref"].endswith(
        "/UserFeaturesOut")
