"""Ratings for retraining, exclusion after a retrain, and rebuild-state on the live arms.

1. Each (user, item) keeps ONE rating for retraining, by the rule book's precedence
   (:class:`serving.rules.KeptRating`): an explicit rating outranks every implicit event, a like
   or a dislike outranks a view; ties go to the later event. The store's upsert (SQLite's, and
   PostgreSQL's batch statement), the purge's fold snapshot and ``rebuild-state``'s replay agree
   on it whatever the order events arrive in (hypothesis over random event sequences).
2. After a retrain, the refitted arms exclude what the rule book excludes (a purchase, a
   dislike), not every training pair: a viewed item can still be recommended.
3. ``rebuild-state`` rebuilds the live arms (co-occurrence, live popularity) from the log and
   says, per arm, whether a running worker holds the same state.

Arms are fitted on the small synthetic catalogue of ``conftest.py``; the store is SQLite and
PostgreSQL (skipped with the reason where no server can be started).
"""

from __future__ import annotations

import copy
import itertools
import time
from collections.abc import Iterator
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import pytest
from fastapi.testclient import TestClient
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from test_serving_support import read_table, store_url

from arms.base import Recommender
from arms.data.dataset import Dataset
from serving.app import create_app
from serving.armset import fit_arms, training_set
from serving.commands import purge, rebuild_state
from serving.results import PurgeResults, RebuildStateResults
from serving.rules import EventType, KeptRating, RuleBook, fold_kept
from serving.settings import Settings
from serving.store import open_store
from serving.store.tables import RATING_COLUMNS_ADDED, feedback, feedback_ratings, fold_ratings

TOKEN = "t0ken"
AUTH = {"authorization": f"Bearer {TOKEN}"}
RULES = RuleBook()
KINDS = [t.value for t in EventType]
HOUR = 3600.0


def make_settings(tmp_path: Path, backend: str, arms: list[str], **extra: object) -> Settings:
    return Settings(state_dir=tmp_path / "state", db=store_url(backend, tmp_path), arms=arms,
                    seed=3, session_strength=0.0, refresh_interval_s=HOUR, **extra)


def event(user_id: int, item_id: int, kind: str, at: float, value: float | None = None
          ) -> dict:
    body: dict = {"user_id": user_id, "item_id": item_id, "type": kind, "timestamp": at}
    if value is not None:
        body["value"] = value
    elif kind == "rating":
        body["value"] = 4.0
    elif kind == "dwell":
        body["value"] = 30.0
    return body


def post(client: TestClient, events: list[dict]) -> None:
    response = client.post("/events", json={"events": events})
    # 200: every event of the request was stored before (a repeated event is idempotent).
    assert response.status_code in (200, 201), response.text


def stored_ratings(settings: Settings) -> dict[tuple[int, int], tuple[float, bool]]:
    return {(r["user_id"], r["movie_id"]): (r["rating"], bool(r["excludes"]))
            for r in read_table(settings.resolved_db_url(), feedback_ratings)}


def expected_ratings(settings: Settings, users: set[int]
                     ) -> dict[tuple[int, int], tuple[float, bool]]:
    """The rule written out plainly over the stored events (not through KeptRating): per pair,
    the rating of the event of largest (precedence, timestamp, seq); excluded if any excludes.
    """
    by_pair: dict[tuple[int, int], list[dict]] = {}
    for r in read_table(settings.resolved_db_url(), feedback):
        if r["user_id"] in users:
            by_pair.setdefault((r["user_id"], r["movie_id"]), []).append(r)
    out = {}
    for pair, rows in by_pair.items():
        best = max(rows, key=lambda r: (RULES.precedence(r["feedback_type"]), r["created_at"],
                                        r["seq"]))
        out[pair] = (RULES.rating(best["feedback_type"], best["value"]),
                     any(RULES.excludes(r["feedback_type"]) for r in rows))
    return out


def check_replay(settings: Settings, **kwargs: Any) -> str:
    result = rebuild_state(settings, **kwargs)
    assert result.exit_code == 0 and str(result).endswith("match: yes"), str(result)
    return str(result)


# ---------------------------------------------------------------------------- the rule itself
def fold(events: list[tuple[str, float | None, float]]) -> KeptRating | None:
    """One pair's events ``(type, value, timestamp)`` in arrival order, folded."""
    kept = fold_kept({}, (((1, 1), k) for seq, (kind, value, at) in enumerate(events, 1)
                          if (k := RULES.kept_rating(kind, value, at, seq)) is not None))
    return kept.get((1, 1))


@pytest.mark.parametrize(("events", "rating", "excludes"), [
    ([("like", None, 1.0), ("view", None, 2.0)], 5.0, True),  # a view does not undo a like
    ([("rating", 5.0, 1.0), ("view", None, 2.0)], 5.0, True),
    ([("rating", 2.0, 1.0), ("like", None, 2.0)], 2.0, True),  # explicit stars are authoritative
    ([("rating", 4.0, 1.0), ("rating", 2.0, 2.0)], 2.0, True),  # the latest explicit wins
    ([("rating", 2.0, 2.0), ("rating", 4.0, 1.0)], 2.0, True),  # latest by time, not arrival
    ([("view", None, 1.0), ("dislike", None, 2.0)], 1.0, True),
    ([("dislike", None, 1.0), ("view", None, 2.0)], 1.0, True),  # a dislike beats a view
    ([("like", None, 1.0), ("dislike", None, 2.0)], 1.0, True),  # equal precedence: later
    ([("click", None, 1.0), ("add_to_cart", None, 2.0)], 4.5, True),  # the click excludes
    ([("view", None, 1.0), ("dwell", 60.0, 2.0)], 5.0, False),  # neither excludes
    ([("view", None, 1.0), ("view", None, 1.0)], 3.0, False),
])
def test_a_pair_keeps_the_rating_of_its_strongest_event(events: list, rating: float,
                                                         excludes: bool) -> None:
    kept = fold(events)
    assert kept is not None
    assert (kept.rating, kept.excludes) == (rating, excludes)
    # The fold is commutative: any arrival order keeps the same rating.
    for order in itertools.permutations(range(len(events))):
        again = fold([events[i] for i in order])
        assert again is not None and (again.rating, again.excludes) == (rating, excludes)


def test_precedence_is_a_rule_book_setting(tmp_path: Path) -> None:
    base = Settings(state_dir=tmp_path, db=f"sqlite:///{tmp_path / 's.db'}")
    assert base.rule_book().precedence("dislike") > base.rule_book().precedence("view")
    assert base.rule_book().precedence("rating") > max(
        base.rule_book().precedence(t) for t in KINDS if t != "rating")
    views_win = Settings(state_dir=tmp_path, db=f"sqlite:///{tmp_path / 's.db'}",
                         rules={"view": {"precedence": 9}}).rule_book()
    like, view = (views_win.kept_rating(t, None, at, seq)
                  for seq, (t, at) in enumerate([("like", 1.0), ("view", 2.0)], 1))
    assert like is not None and view is not None
    assert like.then(view).rating == 3.0
    for bad, kind in ((True, TypeError), ("high", TypeError), (float("nan"), ValueError)):
        with pytest.raises((kind, ValueError), match=r"rules\.view\.precedence"):
            Settings(state_dir=tmp_path, db=f"sqlite:///{tmp_path / 's.db'}",
                     rules={"view": {"precedence": bad}}).rule_book()


def test_retraining_ranks_the_base_ratings_as_explicit_ones(serving_catalog: Dataset) -> None:
    user, item, stars = (int(v) for v in serving_catalog.ratings.iloc[0][
        ["user_id", "item_id", "rating"]])
    other = int(np.setdiff1d(serving_catalog.item_ids, serving_catalog.ratings.loc[
        serving_catalog.ratings.user_id == user, "item_id"])[0])
    later = int(serving_catalog.ratings["timestamp"].max()) + 10
    frame = pd.DataFrame({"user_id": [user, user], "item_id": [item, other],
                          "rating": [3.0, 3.0], "timestamp": [later, later],
                          "precedence": [RULES.precedence("view")] * 2,
                          "excludes": [False, False]})
    train = training_set(serving_catalog, frame, base_precedence=RULES.precedence("rating"))
    pairs = train.ratings.set_index(["user_id", "item_id"])["rating"]
    assert not pairs.index.duplicated().any()
    assert pairs[(user, item)] == stars  # a later view does not overwrite a MovieLens rating
    assert pairs[(user, other)] == 3.0  # and still trains where there was none
    assert len(train.ratings) == serving_catalog.n_ratings + 1


# ------------------------------------------------------------------- the store, every backend
@pytest.fixture(scope="module", params=["sqlite", "postgresql"])
def rated(request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory,
          serving_catalog: Dataset, serving_arms: dict[str, Recommender]
          ) -> Iterator[tuple[Settings, TestClient]]:
    path = tmp_path_factory.mktemp(f"ratings-{request.param}")
    config = make_settings(path, request.param, ["svd", "popularity"])
    with TestClient(create_app(config, catalog=serving_catalog,
                               arms=copy.deepcopy(serving_arms))) as client:
        yield config, client


_blocks = itertools.count(1)


@st.composite
def event_sequences(draw: st.DrawFn) -> tuple[list[tuple[int, int, str, float | None, int]],
                                              list[int]]:
    """Events ``(user, item slot, type, value, second)`` on a few pairs (seconds collide, so
    ties happen), and the sizes of the requests they are sent in.
    """
    events = draw(st.lists(st.tuples(
        st.integers(0, 1), st.integers(0, 2), st.sampled_from(KINDS),
        st.sampled_from([1.0, 2.0, 5.0]), st.integers(0, 4)), min_size=1, max_size=14))
    out = [(u, i, k, v if k in ("rating", "dwell") else None, s) for u, i, k, v, s in events]
    cuts = draw(st.lists(st.integers(1, 6), min_size=1, max_size=6))
    return out, cuts


def send(client: TestClient, events: list[dict], cuts: list[int]) -> None:
    """``events`` in requests of the sizes ``cuts`` (cycled): each request is one batch."""
    start = 0
    for size in itertools.cycle(cuts):
        if start >= len(events):
            return
        post(client, events[start:start + size])
        start += size


@settings(max_examples=25, deadline=None, derandomize=True, database=None,
          suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(drawn=event_sequences())
def test_stored_ratings_are_the_fold_of_the_events_in_any_arrival_order(
        rated: tuple[Settings, TestClient], serving_catalog: Dataset, drawn: tuple) -> None:
    config, client = rated
    events, cuts = drawn
    items = serving_catalog.item_ids[:3].tolist()
    block = 1000 * next(_blocks)
    now = time.time() - HOUR
    # The same events for two fresh user blocks: in the drawn order, and reversed.
    forward = [event(block + u, items[i], k, now + s, v) for u, i, k, v, s in events]
    backward = [event(block + 500 + u, items[i], k, now + s, v)
                for u, i, k, v, s in reversed(events)]
    send(client, forward, cuts)
    send(client, backward, cuts)
    users = {block, block + 1, block + 500, block + 501}
    stored = {k: v for k, v in stored_ratings(config).items() if k[0] in users}
    assert stored == expected_ratings(config, users)
    # Whatever the arrival order: equal where the winning event is not tied in time with
    # another of its precedence (then the log order breaks the tie, as documented).
    for (user, item), (rating, excludes) in stored.items():
        if user >= block + 500:
            continue
        twin = stored[(user + 500, item)]
        assert twin[1] == excludes
        mine = [(RULES.precedence(k), s) for u, i, k, _, s in events
                if block + u == user and items[i] == item]
        if mine.count(max(mine)) == 1:
            assert twin[0] == rating
    check_replay(config)


@pytest.mark.parametrize("backend", ["sqlite", "postgresql"])
def test_a_purge_keeps_the_stronger_rating_of_the_purged_events(
        backend: str, tmp_path: Path, serving_catalog: Dataset,
        serving_arms: dict[str, Recommender]) -> None:
    config = make_settings(tmp_path, backend, ["svd", "popularity"])
    user, item = 7, int(serving_catalog.item_ids[5])
    now = time.time()
    with TestClient(create_app(config, catalog=serving_catalog,
                               arms=copy.deepcopy(serving_arms))) as client:
        post(client, [event(user, item, "view", now - 10)])
        post(client, [event(user, item, "like", now - 100)])  # older, arrives later
        post(client, [event(user, item, "dislike", now - 200)])  # equal rank, older
        assert stored_ratings(config)[(user, item)] == (5.0, True)
        cut = now - 50  # the like and the dislike go, the view stays
        result = purge(config, datetime.fromtimestamp(cut, UTC).isoformat(),
                       catalog=serving_catalog, now=cut + config.retention_s + 1)
        assert isinstance(result, PurgeResults), str(result)
        assert result.deleted == {"decisions": 0, "outcomes": 0, "feedback": 2}
        assert "deleted 0 decisions, 0 outcomes and 2 feedback rows" in str(result)
        fold_row = read_table(config.resolved_db_url(), fold_ratings)
        assert [(r["rating"], r["precedence"], bool(r["excludes"])) for r in fold_row] == [
            (5.0, RULES.precedence("like"), True)]
        # The view left in the log does not undo the snapshot's like in the replay either.
        check_replay(config)
        post(client, [event(user, item, "view", now - 5)])
        assert stored_ratings(config)[(user, item)] == (5.0, True)
        check_replay(config)


# ---------------------------------------------------------------- exclusion after a retrain
@pytest.mark.parametrize("backend", ["sqlite", "postgresql"])
def test_a_viewed_item_can_still_be_recommended_after_a_retrain(
        backend: str, tmp_path: Path, serving_catalog: Dataset,
        serving_arms: dict[str, Recommender]) -> None:
    config = make_settings(tmp_path, backend, ["svd", "popularity"], admin_token=TOKEN)
    user = int(serving_catalog.user_ids[3])
    rated_before = set(serving_catalog.ratings.loc[
        serving_catalog.ratings.user_id == user, "item_id"].tolist())
    unrated = [int(i) for i in serving_catalog.item_ids if int(i) not in rated_before]
    viewed, carted, bought, disliked = unrated[:4]
    now = time.time()
    with TestClient(create_app(config, catalog=serving_catalog,
                               arms=copy.deepcopy(serving_arms))) as client:
        post(client, [event(user, viewed, "view", now - 40),
                      event(user, carted, "add_to_cart", now - 30),
                      event(user, bought, "purchase", now - 20),
                      event(user, disliked, "dislike", now - 10)])
        response = client.post("/admin/retrain", headers=AUTH)
        assert response.status_code == 200, response.text
        assert response.json()["n_feedback_ratings"] == 4
        arm_set = client.app.state.service.arm_set
        assert arm_set.version == 2
        svd = arm_set.models["svd"]
        row = arm_set.user_index[user]
        seen = set(svd.item_ids_[svd.seen_.indices[svd.seen_.indptr[row]:
                                                    svd.seen_.indptr[row + 1]]].tolist())
        # Seen: the base ratings, the purchase and the dislike; not the view nor the cart.
        assert seen == rated_before | {bought, disliked}
        scores = arm_set.ranking("svd", user).scores
        index = arm_set.item_index
        assert np.isfinite(scores[[index[viewed], index[carted]]]).all()
        assert np.isneginf(scores[[index[bought], index[disliked]]]).all()
        # Views still train: the viewed pair is a training rating of the refit (3 stars).
        ratings = client.app.state.service.store.ratings_frame()
        assert ratings.set_index(["user_id", "item_id"]).loc[(user, viewed), "rating"] == 3.0
        # Served slates (every arm): the purchased and disliked items never appear, the viewed
        # one does once the slate is long enough to reach it.
        shown: set[int] = set()
        for _ in range(6):
            response = client.get("/recommendations", params={"user_id": user, "k": 100})
            assert response.status_code == 200, response.text
            shown |= {i["movie_id"] for i in response.json()["items"]}
        assert not shown & {bought, disliked}
        assert viewed in shown


# ----------------------------------------------------------- rebuild-state and the live arms
LIVE_ARMS = ["svd", "cooccurrence", "popularity"]


@pytest.fixture(scope="module")
def live_fitted(serving_catalog: Dataset) -> dict[str, Recommender]:
    return fit_arms(LIVE_ARMS, serving_catalog, seed=0)


def burst(client: TestClient, rng: np.random.Generator, n: int) -> None:
    """``n`` slates to random users and events of every type on them and on other items."""
    users = client.app.state.service.catalog.user_ids[:40]
    items = client.app.state.service.catalog.item_ids
    for _ in range(n):
        response = client.get("/recommendations",
                              params={"user_id": int(rng.choice(users)), "k": 5})
        assert response.status_code == 200, response.text
        shown = response.json()
        batch = [{**event(shown["user_id"], item["movie_id"], str(rng.choice(KINDS)),
                          time.time()), "event_id": shown["event_id"]}
                 for item in shown["items"][:int(rng.integers(0, 3))]]
        batch.append({**event(shown["user_id"], int(rng.choice(items)), "view", time.time()),
                      "idempotency_key": f"v{rng.integers(10**12)}"})
        post(client, batch)


def live_lines(text: str) -> dict[str, str]:
    return {line.split(":")[0].removeprefix("live arm "): line
            for line in text.splitlines() if line.startswith("live arm ")}


@pytest.mark.parametrize("backend", ["sqlite", "postgresql"])
def test_rebuild_state_finds_the_live_arms_of_a_worker_equal_to_the_log(
        backend: str, tmp_path: Path, serving_catalog: Dataset,
        live_fitted: dict[str, Recommender]) -> None:
    config = make_settings(tmp_path, backend, LIVE_ARMS, admin_token=TOKEN)
    rng = np.random.default_rng(1)
    with TestClient(create_app(config, catalog=serving_catalog,
                               arms=copy.deepcopy(live_fitted))) as client:
        burst(client, rng, 25)
        response = client.post("/admin/items", headers=AUTH, json={
            "item_id": 90_001, "title": "New", "genres": ["Drama"], "year": 2026})
        assert response.status_code == 201, response.text
        post(client, [event(3, 90_001, "like", time.time())])
        client.app.state.service.refresh()
        held = client.get("/admin/live-state", headers=AUTH).json()
        assert set(held["arms"]) == {"cooccurrence", "popularity"}
        assert held["log_seq"] == client.app.state.service.store.log_seq()
        text = check_replay(config, service=client)
        lines = live_lines(text)
        assert set(lines) == {"cooccurrence", "popularity"}
        assert all("match yes" in line and f"log position {held['log_seq']}" in line
                   for line in lines.values()), text
        # After a purge, the fold starts from the snapshot's arms and still matches.
        cut = time.time() + 2 * HOUR
        client.app.state.service.store.settle_expired(cut, 0.0, client.app.state.service.rules)
        result = purge(config, datetime.fromtimestamp(cut, UTC).isoformat(),
                       catalog=serving_catalog, now=cut + config.retention_s + 1)
        assert isinstance(result, PurgeResults), str(result)
        burst(client, rng, 5)
        client.app.state.service.refresh()
        text = check_replay(config, service=client)
        assert all("match yes" in line and "from the fold snapshot at" in line
                   for line in live_lines(text).values()), text


def test_rebuild_state_reports_a_corrupted_live_arm(
        tmp_path: Path, serving_catalog: Dataset, live_fitted: dict[str, Recommender]) -> None:
    config = make_settings(tmp_path, "sqlite", LIVE_ARMS, admin_token=TOKEN)
    with TestClient(create_app(config, catalog=serving_catalog,
                               arms=copy.deepcopy(live_fitted))) as client:
        burst(client, np.random.default_rng(2), 15)
        service = client.app.state.service
        service.refresh()
        check_replay(config, service=client)
        model = service.arm_set.models["cooccurrence"]
        model.counts_ = model.counts_.copy()
        model.counts_[int(np.argmax(model.counts_))] += 1  # one count off
        result = rebuild_state(config, service=client)
        assert isinstance(result, RebuildStateResults) and result.exit_code == 1, str(result)
        assert not result.mismatches  # the log's folds match: only the live arm differs
        assert {c.arm: c.match for c in result.live} == {"cooccurrence": False,
                                                         "popularity": True}
        lines = live_lines(str(result))
        assert "match NO" in lines["cooccurrence"]
        assert "match yes" in lines["popularity"]
        assert str(result).endswith("match: NO")
        # Without a service to ask, the arms are rebuilt and the lines say nothing compared.
        result = rebuild_state(config.model_copy(update={"admin_token": None}))
        assert isinstance(result, RebuildStateResults) and result.exit_code == 0, str(result)
        assert {c.match for c in result.live} == {None}
        assert all("not compared (no admin token set" in line
                   for line in live_lines(str(result)).values()), str(result)


@pytest.mark.parametrize("backend", ["sqlite", "postgresql"])
def test_an_older_store_refolds_its_kept_ratings_from_the_log(
        backend: str, tmp_path: Path, serving_catalog: Dataset,
        live_fitted: dict[str, Recommender]) -> None:
    config = make_settings(tmp_path, backend, LIVE_ARMS)
    now = time.time()
    user, items = int(serving_catalog.user_ids[0]), serving_catalog.item_ids[:3].tolist()
    with TestClient(create_app(config, catalog=serving_catalog,
                               arms=copy.deepcopy(live_fitted))) as client:
        post(client, [event(user, items[0], "like", now - 30), event(user, items[0], "view",
                                                                      now - 20),
                      event(user, items[1], "rating", now - 30, 2.0),
                      event(user, items[1], "click", now - 20),
                      event(user, items[2], "view", now - 10)])
    store = open_store(config.resolved_db_url())
    try:
        with store.write_engine.begin() as conn:  # as an older recbandits left it: latest wins
            for table, columns in RATING_COLUMNS_ADDED.items():
                for column in columns:
                    conn.exec_driver_sql(f"ALTER TABLE {table} DROP COLUMN {column}")
            conn.exec_driver_sql("UPDATE feedback_ratings SET rating = 3.0 WHERE movie_id = "
                                 f"{items[0]}")
        store.create_schema(config.arms, config.rule_book())
        store.create_schema(config.arms, config.rule_book())  # a second start changes nothing
        kept = store.log_rows()["ratings"]
    finally:
        store.dispose()
    # The like outranks the later view; the explicit rating outranks the later click.
    assert (kept[(user, items[0])].rating, kept[(user, items[0])].excludes) == (5.0, True)
    assert kept[(user, items[1])].rating == 2.0
    assert (kept[(user, items[2])].rating, kept[(user, items[2])].excludes) == (3.0, False)
    assert stored_ratings(config) == expected_ratings(config, {user})
    check_replay(config)


def test_workers_starting_together_upgrade_an_older_store_once(tmp_path: Path) -> None:
    import threading

    url = store_url("postgresql", tmp_path)
    setup = open_store(url)
    setup.create_schema(["svd"])
    for trial in range(4):
        with setup.write_engine.begin() as conn:  # an older store, again
            for table, columns in RATING_COLUMNS_ADDED.items():
                for column in columns:
                    conn.exec_driver_sql(f"ALTER TABLE {table} DROP COLUMN {column}")
        stores = [open_store(url) for _ in range(2)]
        barrier, errors = threading.Barrier(2), []

        def start(store: object, barrier: threading.Barrier, errors: list) -> None:
            barrier.wait()
            try:
                store.create_schema(["svd"])  # type: ignore[attr-defined]
            except Exception as exc:  # the test reports any failure
                errors.append(exc)

        threads = [threading.Thread(target=start, args=(s, barrier, errors)) for s in stores]
        for t in threads:
            t.start()
        for t in threads:
            t.join()
        for s in stores:
            s.dispose()
        assert errors == [], (trial, errors)
    setup.dispose()
