"""A user's signals and context kept between requests (serving/user_view.py): always what a
fresh computation at the request's time gives, bit for bit; and the stepped decay of
``user-v4`` (serving/features.py) that lets a context stay put between a user's events.
"""

from __future__ import annotations

import gc
import math
import weakref
from typing import Any, cast

import numpy as np
import orjson
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from arms.data import make_synthetic
from arms.data.dataset import Dataset
from serving.armset import ArmSet
from serving.features import BehaviourSpec, FeatureStore
from serving.live import user_signals
from serving.rules import EventType, RuleBook
from serving.store.base import json_text
from serving.store.types import UserEvent
from serving.user_view import UserViews

RULES = RuleBook()
RETENTION, SESSION, STEP = 150.0, 30.0, 60.0
BASE = 1_700_000_040.0  # a multiple of STEP
CATALOG: Dataset = make_synthetic(20, 30, 300, random_state=0)
ITEMS = [int(i) for i in CATALOG.item_ids[:6]] + [10_000]  # the last one unknown


class Universe:
    """What UserViews and user_signals read of an arm set (its item index)."""

    def __init__(self, item_index: dict[int, int]) -> None:
        self.item_index = item_index


ARM_SET = cast(ArmSet, Universe({int(i): n for n, i in enumerate(CATALOG.item_ids)}))
TYPES = tuple(EventType)  # every type, so a new one is exercised


def values(kind: str) -> st.SearchStrategy[float | None]:
    """What an event of ``kind`` carries: None, or a value in its range (at most 600 above its
    low end: a dwell's seconds; a rating's stars, their ends and middle included)."""
    spec = RULES.rule(kind).value
    if spec is None:
        return st.none()
    return st.one_of(st.sampled_from([spec.low, (spec.low + spec.high) / 2, spec.high]),
                     st.floats(spec.low, min(spec.high, spec.low + 600.0)))


def store() -> FeatureStore:
    return FeatureStore(CATALOG, RULES, half_life_s=300.0, decay_step_s=STEP,
                        retention_s=RETENTION)


def fresh(features: FeatureStore, user: int, history: list[UserEvent],
          stated: list[str] | None, now: float) -> tuple[list[np.ndarray], np.ndarray]:
    signals = user_signals(history, ARM_SET, RULES, now - RETENTION, now - SESSION)
    vector = features.vector(user, history, stated, now, cached=False)
    return [np.asarray(a) for a in signals[:5]], vector


@st.composite
def event_log(draw: st.DrawFn) -> list[UserEvent]:
    log, seq, t = [], 1, BASE - 100.0
    for _ in range(draw(st.integers(0, 12))):
        kind = draw(st.sampled_from(TYPES))
        value = draw(values(kind))
        t += draw(st.floats(-20.0, 40.0))
        log.append(UserEvent(seq, draw(st.sampled_from(ITEMS)), kind, value, t))
        seq += draw(st.integers(1, 3))
    return log


@settings(max_examples=500, deadline=None, derandomize=True, database=None)
@given(log=event_log(),
       requests=st.lists(st.tuples(st.sampled_from([0, 0, 1, 3]), st.floats(-5.0, 45.0),
                                   st.booleans(),
                                   st.sampled_from([None, ["Action"], ["Drama", "Comedy"]])),
                         min_size=1, max_size=20))
def test_a_kept_view_is_what_a_fresh_computation_gives(
        log: list[UserEvent], requests: list[tuple[int, float, bool, list[str] | None]]) -> None:
    # Each request sees a prefix of the log (growing by 0-3 events) at a time that mostly
    # moves on (across window edges and decay steps) and sometimes back (a clock set back).
    # The store's read leaves out what is past retention, or hands the list it read before
    # again (SQLite's kept answer, which may hold events past retention by now).
    features = store()
    views = UserViews(features, RULES, retention_s=RETENTION, session_window_s=SESSION,
                      history_limit=1000)
    now = BASE
    last: tuple[int, list[UserEvent]] | None = None
    visible = 0
    for more, step, kept_answer, stated in requests:
        visible += more
        now += step
        if kept_answer and last is not None and last[0] == visible:
            history = last[1]
        else:
            history = [e for e in log[:visible] if e.created_at >= now - RETENTION]
        last = visible, history
        view = views.view(7, history, stated, now, ARM_SET)
        signals, vector = fresh(features, 7, history, stated, now)
        for got, want in zip(view.signals[:5], signals, strict=True):
            assert np.asarray(got).tobytes() == want.tobytes()
        assert view.features.tobytes() == vector.tobytes()
        assert not view.features.flags.writeable
        # The same events (in a new list), genres and time: kept, unless the view ends right
        # there (an event exactly on a window's edge: rebuilt, never wrong).
        again = views.view(7, list(history), stated, now, ARM_SET)
        assert (again is view) == (now < view.expires)


def test_a_view_is_kept_until_an_event_leaves_a_window_or_the_step_ends() -> None:
    features = store()
    views = UserViews(features, RULES, retention_s=500.0, session_window_s=100.0,
                      history_limit=1000)
    # User 3's decay steps start at BASE + its phase plus multiples of STEP.
    start = BASE + features.spec.decay_phase(3)
    like = UserEvent(5, ITEMS[0], "like", None, start + 10.0)  # in the session until +110
    first = views.view(3, [like], None, start + 20.0, ARM_SET)
    assert first.signals.liked.size == 1
    assert first.expires == pytest.approx(start + STEP, abs=1e-6)
    assert views.view(3, [like], None, start + 59.9, ARM_SET) is first
    second = views.view(3, [like], None, start + 60.001, ARM_SET)  # the next step: rebuilt
    assert second is not first
    assert second.expires == pytest.approx(start + 110.0, abs=1e-6)  # the session's edge
    third = views.view(3, [like], None, start + 110.5, ARM_SET)  # out of the session
    assert third.signals.liked.size == 0
    assert third.expires == pytest.approx(start + 2 * STEP, abs=1e-6)
    t = start + 110.5
    # Another user, other genres, another arm set or a clock set back: not this view.
    assert views.view(3, [like], None, t, ARM_SET) is third
    assert views.view(4, [like], None, t, ARM_SET) is not third
    assert views.view(3, [like], ["Drama"], t, ARM_SET) is not third
    assert views.view(3, [like], None, t, ARM_SET) is not third  # rebuilt after "Drama"
    kept = views.view(3, [like], None, t, ARM_SET)
    other = cast(ArmSet, Universe(ARM_SET.item_index))
    assert views.view(3, [like], None, t, other) is not kept
    back = views.view(3, [like], None, start + 100.0, other)
    assert back.signals.liked.size == 1


def test_clear_forgets_every_kept_view() -> None:
    views = UserViews(store(), RULES, retention_s=500.0, session_window_s=100.0,
                      history_limit=1000)
    like = UserEvent(5, ITEMS[0], "like", None, BASE + 10.0)
    first = views.view(3, [like], None, BASE + 20.0, ARM_SET)
    views.view(4, [like], None, BASE + 20.0, ARM_SET)
    assert len(views) == 2 and views.view(3, [like], None, BASE + 20.0, ARM_SET) is first
    views.clear()
    assert len(views) == 0
    rebuilt = views.view(3, [like], None, BASE + 20.0, ARM_SET)
    assert rebuilt is not first and rebuilt.features.tobytes() == first.features.tobytes()


def test_the_context_text_is_serialised_once_per_view_and_k() -> None:
    features = store()
    views = UserViews(features, RULES, retention_s=500.0, session_window_s=100.0,
                      history_limit=1000)
    like = UserEvent(5, ITEMS[0], "like", None, BASE + 10.0)
    first = views.view(3, [like], None, BASE + 20.0, ARM_SET)
    text = first.context_json(features.version, 10)
    assert first.context_json(features.version, 10) is text  # kept, not serialised again
    assert orjson.loads(text) == {"feature_version": features.version,
                                  "features": first.features.tolist(), "k": 10}
    # Another k: its own text; the view keeps one (the latest) at a time.
    assert orjson.loads(first.context_json(features.version, 4))["k"] == 4
    assert first.context_json(features.version, 10) is not text
    # A new event or the next decay step: a new view, whose text follows its new vector.
    click = UserEvent(6, ITEMS[1], "click", None, BASE + 30.0)
    for history, now in (([like, click], BASE + 31.0), ([like], BASE + STEP + 1.0)):
        view = views.view(3, history, None, now, ARM_SET)
        assert view is not first and view.features.tobytes() != first.features.tobytes()
        assert view.context_json(features.version, 10) == json_text(
            {"feature_version": features.version,
             "features": features.vector(3, history, None, now, cached=False), "k": 10})
        assert view.context_json(features.version, 10) != text


def test_the_features_own_retention_window_ends_a_view_too() -> None:
    # A feature store passed in with a shorter retention than the service's: its edge counts.
    features = FeatureStore(CATALOG, RULES, half_life_s=300.0, decay_step_s=STEP,
                            retention_s=100.0)
    views = UserViews(features, RULES, retention_s=500.0, session_window_s=10.0,
                      history_limit=1000)
    history = (UserEvent(1, ITEMS[0], "like", None, BASE - 95.0),)
    view = views.view(1, history, None, BASE, ARM_SET)
    assert view.expires == BASE + 5.0
    later = views.view(1, history, None, BASE + 5.5, ARM_SET)
    assert later is not view
    assert later.features.tobytes() == features.vector(1, history, None, BASE + 5.5,
                                                       cached=False).tobytes()
    assert later.features.tobytes() != view.features.tobytes()


def test_a_view_holds_neither_a_swapped_out_arm_set_nor_a_long_or_mutable_history() -> None:
    views = UserViews(store(), RULES, retention_s=RETENTION, session_window_s=SESSION,
                      history_limit=1000)
    old = Universe(ARM_SET.item_index)
    gone = weakref.ref(old)
    views.view(1, [], None, BASE, cast(ArmSet, old))
    del old
    gc.collect()
    assert gone() is None  # a retrain's or an added item's new arm set replaced it
    events = [UserEvent(s, ITEMS[0], "click", None, BASE - 1.0) for s in range(1, 300)]
    long = views.view(2, tuple(events), None, BASE, ARM_SET)
    assert views._entries[2].history is None  # more than IDENTITY_EVENTS: a digest only
    assert views.view(2, tuple(events), None, BASE, ARM_SET) is long  # same seqs
    short = events[:3]
    first = views.view(3, short, None, BASE, ARM_SET)
    assert views._entries[3].history is None  # a list may change: never kept by reference
    short.append(UserEvent(400, ITEMS[1], "like", None, BASE))
    second = views.view(3, short, None, BASE, ARM_SET)
    assert second is not first
    assert second.signals.liked.size == first.signals.liked.size + 1


def test_the_views_keep_at_most_their_budget_of_events_by_reference() -> None:
    from serving import user_view

    views = UserViews(store(), RULES, retention_s=RETENTION, session_window_s=SESSION,
                      history_limit=1000)
    per_user = 200
    n_users = user_view.IDENTITY_BUDGET // per_user + 5
    histories = {u: tuple(UserEvent(s, ITEMS[s % 3], "view", None, BASE - 1.0)
                          for s in range(u * 1000, u * 1000 + per_user))
                 for u in range(n_users)}
    first = {u: views.view(u, h, None, BASE, ARM_SET) for u, h in histories.items()}
    held = [e.history for e in views._entries.values() if e.history is not None]
    assert sum(map(len, held)) == views._referenced <= user_view.IDENTITY_BUDGET
    assert len(held) == user_view.IDENTITY_BUDGET // per_user < n_users
    # Every user is still known: by reference, or by the digest of their log positions.
    for u, h in histories.items():
        assert views.view(u, h, None, BASE, ARM_SET) is first[u]
    views.view(0, histories[0][:10], None, BASE, ARM_SET)  # a replaced entry frees its share
    assert views._referenced == sum(len(e.history) for e in views._entries.values()
                                    if e.history is not None)


def test_the_decay_step_ends_where_the_step_of_the_time_first_moves() -> None:
    # 59.9 s is not a float: a few values before 60 x 59.9 * k already divide to the next k.
    rng = np.random.default_rng(0)
    for step in (59.9, 60.0, 1 / 3, 0.1):
        s = spec(step)
        for now in BASE + rng.random(300) * 1e6:
            end = s.decay_expiry(float(now))
            before = math.nextafter(end, -math.inf)
            assert s.decay_time(before) == s.decay_time(float(now)) != s.decay_time(end + step)


def test_the_views_drop_the_least_recently_used_user_beyond_max_users() -> None:
    views = UserViews(store(), RULES, retention_s=RETENTION, session_window_s=SESSION,
                      history_limit=1000, max_users=2)
    a = views.view(1, [], None, BASE, ARM_SET)
    views.view(2, [], None, BASE, ARM_SET)
    assert views.view(1, [], None, BASE, ARM_SET) is a  # 1 used last: 2 goes next
    views.view(3, [], None, BASE, ARM_SET)
    assert len(views) == 2 and views.view(1, [], None, BASE, ARM_SET) is a
    for bad, error in ((0, ValueError), (1.0, TypeError), (True, TypeError)):
        with pytest.raises(error, match="max_users"):
            UserViews(store(), RULES, retention_s=RETENTION, session_window_s=SESSION,
                      history_limit=1000, max_users=cast(Any, bad))


# ---------------------------------------------------------------------------- stepped decay
def spec(step: float) -> BehaviourSpec:
    return BehaviourSpec(RULES, np.array([10, 20]), np.array([[1.0], [0.0]]), ["Action"],
                         half_life_s=100.0, decay_step_s=step)


def test_the_decay_is_taken_at_the_start_of_the_step_or_at_the_latest_event() -> None:
    from serving.features import BehaviourState

    s, continuous = spec(STEP), spec(0.0)
    log = [UserEvent(1, 10, "like", None, BASE - 250.0), UserEvent(2, 20, "view", None,
                                                                   BASE - 100.0)]
    state = BehaviourState(s).fold(log)
    exact = BehaviourState(continuous).fold(log)
    # Anywhere in [BASE, BASE + 60): the values at BASE, which the continuous decay gives there.
    for now in (BASE, BASE + 1.0, BASE + 59.999):
        assert state.vector(now).tobytes() == exact.vector(BASE).tobytes()
    assert state.vector(BASE + 60.0).tobytes() == exact.vector(BASE + 60.0).tobytes()
    assert state.vector(BASE + 1.0).tobytes() != exact.vector(BASE + 59.0).tobytes()
    recency = s.names.index("recency")
    assert state.vector(BASE + 30.0)[recency] == 0.5  # 100 s old at BASE
    # An event inside the step: the decay is taken at it (its recency is 1).
    state.fold([UserEvent(3, 10, "click", None, BASE + 20.0)])
    assert state.vector(BASE + 40.0)[recency] == 1.0
    assert s.decay_expiry(BASE + 40.0) == BASE + STEP
    assert continuous.decay_expiry(BASE + 40.0) == BASE + 40.0  # moves all the time


def test_each_users_steps_start_at_their_own_phase_and_the_decay_is_exact_there() -> None:
    from serving.features import BehaviourState

    s, continuous = spec(STEP), spec(0.0)
    log = [UserEvent(1, 10, "like", None, BASE - 250.0)]
    state, exact = BehaviourState(s).fold(log), BehaviourState(continuous).fold(log)
    for user in (1, 2, 3, 10**12):
        phase = s.decay_phase(user)
        assert 0.0 <= phase < STEP and phase == s.decay_phase(user)  # the same every time
        start = s.decay_time(BASE + 200.0, phase)  # the start of that user's step
        assert start == pytest.approx(BASE + 180.0 + phase - (STEP if phase > 20.0 else 0.0),
                                      abs=1e-6)
        for now in (start, start + 1.0, start + 59.999):
            assert s.decay_time(now, phase) == start
            assert state.vector(now, phase).tobytes() == exact.vector(start).tobytes()
        edge = s.decay_expiry(start + 30.0, phase)
        assert s.decay_time(edge, phase) > start  # from the expiry on, the next step
        assert s.decay_time(math.nextafter(edge, -math.inf), phase) == start
    assert continuous.decay_phase(5) == 0.0
    # Ids of any size keep distinct phases (a float product lost them from about 1e16 on).
    for base in (10**15, 10**17, 2**62 - 2000):
        assert len({s.decay_phase(base + i) for i in range(1000)}) == 1000


def test_users_contexts_move_at_instants_spread_over_the_step() -> None:
    # One phase for all (user-v3) made every active user's context, and with it the policy's
    # probabilities, change at the start of each minute: a worker recomputed them all at once
    # (p99 235-295 ms in the window holding it). Each user's view now expires at their own
    # instant.
    features = store()
    views = UserViews(features, RULES, retention_s=10 * STEP, session_window_s=1.0,
                      history_limit=1000)
    users = range(1, 944)
    now = BASE + 5.0
    expiries = np.array([views.view(u, [UserEvent(u, ITEMS[0], "view", None, BASE - 400.0)],
                                    None, now, ARM_SET).expires for u in users])
    assert ((expiries > now) & (expiries <= now + STEP)).all()
    # Every 1-second window of the step holds at most twice its even share (943 / 60 = 15.7).
    busiest = max(int(((expiries >= t) & (expiries < t + 1.0)).sum())
                  for t in np.arange(now, now + STEP, 0.25))
    assert busiest <= 2 * len(users) / STEP


@pytest.mark.parametrize("bad, error, message", [
    (-1.0, ValueError, r"decay_step_s=-1\.0 is outside the allowed range \[0, inf\)"),
    (math.inf, ValueError, r"decay_step_s=inf must be finite"),
    (math.nan, ValueError, r"decay_step_s=nan must be finite"),
    ("60", TypeError, r"decay_step_s must be a real number, got '60' \(str\)"),
    (True, TypeError, r"decay_step_s must be a real number, got True \(bool\)"),
])
def test_a_bad_decay_step_is_refused_by_name(bad: object, error: type[Exception],
                                            message: str) -> None:
    with pytest.raises(error, match=message):
        spec(cast(Any, bad))
