"""The request path's shortcuts give what the straightforward code they replaced gave.

Each faster piece of ``GET /recommendations`` (one walk over the user's events, the query read
without the model, the popularity arm's seen-filter on the ranking's head, the decision id's
hash, the JSON response written without Starlette's generic header code) is compared, on
seeded inputs, with a reference written the plain way (the code it replaced, or the model or
library that stays the definition). Synthetic data only.
"""

from __future__ import annotations

import copy
import dataclasses
import hashlib
import itertools
from types import SimpleNamespace

import numpy as np
import orjson
import pytest

from arms.data import make_synthetic
from serving import ids
from serving.api.responses import json_response
from serving.api.routes.recommendations import FIELDS
from serving.armset import RANKING_DEPTH, ArmSet, fit_arms
from serving.live import user_history, user_signals
from serving.rules import EventType, RuleBook
from serving.service import Recommendation, _best, top_k_row
from serving.store.types import UserEvent

NOW = 1.7e9
RETENTION_S, SESSION_S = 5_000.0, 1_000.0


# ---------------------------------------------------------------------------- user's events
def _split_history(history: list[UserEvent], index: dict[int, int], rules: RuleBook,
                   since: float) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """The excluded, liked and disliked items as the service computed them before
    :func:`user_signals` (its ``_split_history``, verbatim but for the arguments)."""
    excluded: list[int] = []
    liked: list[int] = []
    disliked: list[int] = []
    for event in history:
        i = index.get(event.movie_id)
        if i is None:
            continue
        worth = rules.worth(event.event_type, event.value)
        if worth.excludes:
            excluded.append(i)
        if event.created_at >= since:
            sign = worth.session_sign
            if sign > 0:
                liked.append(i)
            elif sign < 0:
                disliked.append(i)
    return (np.array(excluded, np.int64), np.array(liked, np.int64),
            np.array(disliked, np.int64))


def _recent(events: list[UserEvent], index: dict[int, int], rules: RuleBook, since: float
            ) -> tuple[np.ndarray, np.ndarray, int]:
    """The scored events as ``user_history`` computed them before (verbatim but for the
    arguments)."""
    items: list[int] = []
    ratings: list[float] = []
    for event in events:
        if event.created_at < since:
            continue
        worth = rules.worth(event.event_type, event.value)
        if worth.reward is None and worth.session_sign == 0:
            continue
        position = index.get(event.movie_id)
        if position is None or worth.rating is None:
            continue
        items.append(position)
        ratings.append(worth.rating)
    last = events[-1].seq if events else 0
    return np.array(items, dtype=np.int64), np.array(ratings, dtype=np.float64), int(last)


def _events(rng: np.random.Generator, n: int) -> list[UserEvent]:
    types = [*(t.value for t in EventType), "unknown_type"]
    out = []
    for seq in range(1, n + 1):
        kind = types[rng.integers(len(types))]
        value = (float(rng.integers(1, 6)) if kind == "rating" else
                 float(rng.uniform(0, 120)) if kind == "dwell" else None)
        # Items 0..59, of which the arm set knows 0..49; times across both windows.
        # Some exactly on a window's start (it is in the window).
        at = (NOW - float(rng.choice([RETENTION_S, SESSION_S])) if rng.random() < 0.2 else
              NOW - float(rng.uniform(0, 2 * RETENTION_S)))
        out.append(UserEvent(seq * 3, int(rng.integers(60)), kind, value, at))
    return out


def test_one_walk_over_a_users_events_gives_what_the_two_walks_gave() -> None:
    rng = np.random.default_rng(5)
    index = {movie: 49 - movie for movie in range(50)}  # universe order differs from ids
    arm_set = SimpleNamespace(item_index=index)
    rules = RuleBook()
    for n in [0, 1, 2, 5, 30, 200]:
        for _ in range(20):
            events = _events(rng, n)
            got = user_signals(events, arm_set, rules, NOW - RETENTION_S,  # type: ignore[arg-type]
                               NOW - SESSION_S)
            want = (*_recent(events, index, rules, NOW - RETENTION_S)[:2],
                    *_split_history(events, index, rules, NOW - SESSION_S),
                    _recent(events, index, rules, NOW - RETENTION_S)[2])
            for name, a, b in zip(got._fields, got, want, strict=True):
                if isinstance(b, np.ndarray):
                    assert a.dtype == b.dtype, name
                    np.testing.assert_array_equal(a, b, err_msg=name)
                else:
                    assert a == b, name
            old = _recent(events, index, rules, NOW - RETENTION_S)
            new = user_history(events, arm_set, rules, NOW - RETENTION_S)  # type: ignore[arg-type]
            np.testing.assert_array_equal(new[0], old[0])
            np.testing.assert_array_equal(new[1], old[1])
            assert new[2] == old[2]
    # The arrays of a user without events are shared: none of them can be written into.
    empty = user_signals([], arm_set, rules, 0.0, 0.0)  # type: ignore[arg-type]
    assert empty.last_seq == 0 and all(a.size == 0 for a in empty[:5])
    with pytest.raises(ValueError, match="read-only"):
        empty.excluded[...] = 1


# ---------------------------------------------------------------------------- decision ids
def test_a_decision_id_is_the_keyed_hash_of_the_counter(monkeypatch: pytest.MonkeyPatch
                                                         ) -> None:
    monkeypatch.setattr(ids, "_counter", itertools.count(41))
    for n in range(41, 45):
        event_id = ids.new_event_id(1.5)
        tail = hashlib.blake2b(n.to_bytes(8, "little"), key=ids._KEY,
                               digest_size=10).hexdigest()
        assert event_id == f"{1500:012x}{tail}"


# ---------------------------------------------------------------------------- popularity
def test_popularitys_head_filter_serves_what_filtering_every_item_served() -> None:
    # More items than RANKING_DEPTH, so that long slates and long exclusions fall back on
    # ranking every score; counts with ties (popularity is integer-valued).
    catalog = make_synthetic(120, 700, 6000, random_state=4)
    models = fit_arms(["popularity"], catalog, seed=0)
    arms = ArmSet.build(copy.deepcopy(models), catalog, version=1, cold_start_arm="popularity",
                        cache_size=16)
    model = arms.models["popularity"]
    assert arms.item_ids.size > RANKING_DEPTH + 100 and not model.personalised
    rng = np.random.default_rng(8)
    n = arms.item_ids.size
    tested_fallback = tested_head = False
    for user_id in catalog.user_ids[:60].tolist():
        row = arms._user_rows["popularity"][int(user_id)]
        seen = model.seen_.indices[model.seen_.indptr[row]:model.seen_.indptr[row + 1]]
        # The filter as it was: every score copied and every item of the order masked.
        reference = arms.to_universe("popularity", model.score(np.array([row]))[0], seen)
        ranking = arms.ranking("popularity", int(user_id))
        np.testing.assert_array_equal(ranking.scores, reference)
        assert ranking.scores.dtype == reference.dtype
        for k, n_excluded in [(1, 0), (10, 0), (10, 5), (100, 0), (100, 200), (30, 400),
                              (100, 600)]:
            excluded = rng.choice(n, n_excluded, replace=False).astype(np.int64)
            scores = reference.astype(np.float64)
            scores[excluded] = -np.inf
            want_items, want_scores = top_k_row(scores, k)
            if ranking.top(k, excluded) is None:
                tested_fallback = True
            else:
                tested_head = True
            got_items, got_scores = _best(ranking, k, excluded)
            np.testing.assert_array_equal(got_items, want_items)
            # The same float32 numbers (served as Python floats: the JSON is the same).
            assert got_scores.tolist() == want_scores.tolist()
    assert tested_fallback and tested_head


# ---------------------------------------------------------------------------- the response
def test_a_recommendation_is_written_as_the_dict_of_the_models_fields() -> None:
    assert tuple(f.name for f in dataclasses.fields(Recommendation)) == FIELDS
    result = Recommendation("ab" * 16, 7, "svd", 0.25, 3, False,
                            [{"movie_id": 1, "title": "A", "year": None, "genres": ["Drama"],
                              "score": 0.5, "position": 1, "arm": "svd"}])
    assert json_response(result).body == orjson.dumps(
        {name: getattr(result, name) for name in FIELDS})
