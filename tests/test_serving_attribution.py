"""The decision an event without ``event_id`` is attributed to, and what finding it costs.

``Store.latest_decision_showing`` (the user's latest decision within the window whose slate
held the movie; ties of time broken by the larger ``event_id``) is one rule on both backends.
On SQLite the index of a user's decisions holds each slate as the text ``,id,...,``
(``tables.SQLITE_SLATE_KEY``), so the search reads neither rows nor JSON: before, every
decision of the user in the window was read and its slate parsed with ``json_each`` (220 us
for 64 decisions, 3 ms for 640), on every event posted without an ``event_id``.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import orjson
import pytest
import sqlalchemy as sa
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from test_serving_support import store_url

from serving.store import Store, open_store
from serving.store.tables import decisions

ARMS = ["svd", "popularity"]
#: Movie ids whose digits overlap (a substring test of the text would confuse them).
MOVIES = (5, 15, 50, 55, 505, 1505)
#: Ways a JSON array of ids may be written: the service's (orjson), SQLAlchemy's JSON column
#: (json.dumps), and JSON's other whitespace, which the SQLite key strips too.
FORMATS = {
    "orjson": lambda ids: orjson.dumps(ids).decode(),
    "json.dumps": json.dumps,
    "indented": lambda ids: json.dumps(ids, indent=1),
    "tabs": lambda ids: "[\t" + ",\t\r\n ".join(str(i) for i in ids) + " ]",
}


def _insert(store: Store, rows: list[tuple[str, float, int, list[int], str]]) -> None:
    """Decisions with their slates stored as the given JSON text."""
    with store.write_engine.begin() as conn:
        conn.execute(decisions.delete())
        for event_id, at, user, slate, fmt in rows:
            conn.exec_driver_sql(
                f"INSERT INTO decisions (event_id, created_at, user_id, context, arm, propensity, "
                f"pmf, slate, policy_version, cold_start, reward_deadline) VALUES "
                f"({', '.join([store.PARAM] * 11)})",
                (event_id, at, user, "{}", "svd", 0.5, "{}", FORMATS[fmt](slate), 1, False,
                 at + 1800.0))


def _expected(rows: list[tuple[str, float, int, list[int], str]], user: int, movie: int,
              since: float, until: float) -> str | None:
    """The rule, in Python: the latest decision (then the larger event_id) showing the movie."""
    held = [(at, event_id) for event_id, at, u, slate, _ in rows
            if u == user and since <= at <= until and movie in slate]
    return max(held)[1] if held else None


@pytest.fixture
def store(backend_store: Store) -> Store:
    return backend_store


decision_rows = st.lists(
    st.tuples(st.integers(1, 2), st.sampled_from([10.0, 11.0, 12.0, 13.0]),
              st.lists(st.sampled_from(MOVIES), min_size=1, max_size=4, unique=True),
              st.sampled_from(sorted(FORMATS))),
    max_size=12)


@settings(max_examples=40, deadline=None,
          suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(drawn=decision_rows, user=st.integers(1, 2), movie=st.sampled_from(MOVIES),
       since=st.sampled_from([0.0, 11.0, 12.5]), until=st.sampled_from([11.0, 13.0, 99.0]))
def test_the_latest_decision_showing_a_movie_follows_the_rule_whatever_the_slate_text(
        store: Store, drawn: list[Any], user: int, movie: int, since: float,
        until: float) -> None:
    # Times repeat (ties go to the larger event_id); ids share digits; slates are written
    # compact, spaced, indented or with tabs and CRs.
    rows = [(f"e{i:02d}", at, u, slate, fmt) for i, (u, at, slate, fmt) in enumerate(drawn)]
    _insert(store, rows)
    found = store.latest_decision_showing(user, movie, since, until)
    assert (found and found["event_id"]) == _expected(rows, user, movie, since, until)
    if found is not None:
        assert movie in found["slate"] and found["user_id"] == user


def _plan(store: Store, user: int, movie: int) -> list[str]:
    """SQLite's plan of the query ``latest_decision_showing`` runs."""
    seen: list[tuple[str, Any]] = []
    original = store._fast

    def capture(sql: str, params: Any, **kwargs: Any) -> Any:
        seen.append((sql, params))
        return original(sql, params, **kwargs)

    store._fast = capture  # type: ignore[method-assign]
    try:
        store.latest_decision_showing(user, movie, 0.0, 100.0)
    finally:
        store._fast = original  # type: ignore[method-assign]
    ((sql, params),) = seen
    with store.write_engine.connect() as conn:
        return [row[-1] for row in conn.exec_driver_sql(f"EXPLAIN QUERY PLAN {sql}", params)]


def test_sqlite_finds_the_decision_from_its_index_without_reading_rows_or_json(
        tmp_path: Path) -> None:
    store = open_store(f"sqlite:///{tmp_path / 'store.db'}")
    store.create_schema(ARMS)
    try:
        rows = [(f"e{i:03d}", 10.0 + i, 1, [i % 7 + 1, 50], "orjson") for i in range(60)]
        _insert(store, rows)
        plan = _plan(store, 1, 5)
        # One search of the index on (user, time, slate key); the old plan scanned json_each
        # once per decision of the user in the window, after reading the decision's row.
        assert plan[0].startswith("SEARCH decisions USING INDEX ix_decisions_user_slate "
                                  "(user_id=? AND created_at>? AND created_at<?)"), plan
        assert not [step for step in plan if "json_each" in step or step.startswith("SCAN")]
        found = store.latest_decision_showing(1, 5, 0.0, 100.0)
        assert found is not None and found["event_id"] == _expected(rows, 1, 5, 0.0, 100.0)
    finally:
        store.dispose()


@pytest.mark.parametrize("backend", ["sqlite", "postgresql"])
def test_an_older_store_gets_its_backends_index_of_a_users_decisions(
        backend: str, tmp_path: Path) -> None:
    url = store_url(backend, tmp_path)
    store = open_store(url)
    store.create_schema(ARMS)
    rows = [(f"e{i:02d}", 10.0 + i, 1 + i % 2, [MOVIES[i % 6], MOVIES[(i + 2) % 6]], "orjson")
            for i in range(20)]
    _insert(store, rows)
    engine = sa.create_engine(url)

    def indexes() -> set[str]:
        with engine.connect() as conn:
            if backend == "sqlite":
                return {r[0] for r in conn.exec_driver_sql(
                    "SELECT name FROM sqlite_master WHERE type = 'index' "
                    "AND tbl_name = 'decisions' AND sql IS NOT NULL")}
            return {r[0] for r in conn.exec_driver_sql(
                "SELECT indexname FROM pg_indexes WHERE tablename = 'decisions' "
                "AND indexname LIKE 'ix_%%'")}

    made = indexes()
    if backend == "sqlite":  # as an older recbandits left it: the index without the slates
        assert made == {"ix_decisions_user_slate", "ix_decisions_open",
                        "ix_decisions_settled_seq"}
        with engine.begin() as conn:
            conn.exec_driver_sql("DROP INDEX ix_decisions_user_slate")
            conn.exec_driver_sql(
                "CREATE INDEX ix_decisions_user_time ON decisions (user_id, created_at)")
    else:
        assert made == {"ix_decisions_user_time", "ix_decisions_open",
                        "ix_decisions_settled_seq"}
    store.create_schema(ARMS)
    store.create_schema(ARMS)  # and again: nothing more to do
    assert indexes() == made
    for user in (1, 2):
        for movie in MOVIES:
            found = store.latest_decision_showing(user, movie, 0.0, 25.0)
            assert (found and found["event_id"]) == _expected(rows, user, movie, 0.0, 25.0)
    store.dispose()
    engine.dispose()
