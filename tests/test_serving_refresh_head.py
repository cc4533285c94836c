"""A worker's refresh reads the log's tails only when the log's head moved.

Every row a refresh folds (outcomes, version switches, events, added items) takes its ``seq``
from ``log_head`` in the transaction that writes it (docs/architecture.md, "Commit order"), so
an unchanged head since the last tail reads means the tails are empty: an idle refresh (the
refresher's tick with only decisions served) skips 4 of its 7 statements. These tests check
that it skips them exactly when nothing was logged, that a transaction holding seqs while the
head is read is folded once it commits, and that the worker's fold still equals
``rebuild-state``'s, on SQLite and PostgreSQL.
"""

from __future__ import annotations

import time
from collections import Counter
from pathlib import Path
from typing import Any

import pytest
import test_serving_versions
from test_serving_versions import make_settings, traffic, worker

from arms.data.dataset import Dataset
from serving.commands import rebuild_state
from serving.rules import DEFAULT_RULES
from serving.store import FeedbackWrite

TAILS = ("outcomes_after", "switches_after", "items_after", "events_after")


@pytest.fixture(scope="module")
def catalog() -> Dataset:
    """test_serving_versions' catalogue (its fixture's function)."""
    return test_serving_versions.catalog.__wrapped__()


@pytest.fixture(scope="module")
def fitted(catalog: Dataset) -> dict:
    """test_serving_versions' fitted arms (its fixture's function)."""
    return test_serving_versions.fitted.__wrapped__(catalog)


def count_tail_reads(store: Any, monkeypatch: pytest.MonkeyPatch) -> Counter[str]:
    """Count the calls of the store's tail reads (by name) from here on."""
    reads: Counter[str] = Counter()
    for name in TAILS:
        real = getattr(type(store), name)

        def counted(self: Any, *args: Any, _real: Any = real, _name: str = name,
                    **kwargs: Any) -> Any:
            reads[_name] += 1
            return _real(self, *args, **kwargs)

        monkeypatch.setattr(type(store), name, counted)
    return reads


def live_line(text: str) -> str:
    (line,) = [s.strip() for s in text.splitlines()
               if s.strip().startswith("live ThompsonSampling")]
    return line


@pytest.mark.parametrize("backend", ["sqlite", "postgresql"])
def test_an_idle_refresh_reads_no_tail_and_a_moved_head_reads_them(
        backend: str, tmp_path: Path, catalog: Dataset, fitted: dict,
        monkeypatch: pytest.MonkeyPatch) -> None:
    # The refresher thread sleeps for the whole test: only the refreshes called here run.
    settings = make_settings(tmp_path, backend, gate_enabled=False, refresh_interval_s=3600.0)
    with worker(settings, catalog, fitted) as client:
        service = client.app.state.service
        reads = count_tail_reads(service.store, monkeypatch)
        traffic(client, range(1, 11))
        service.refresh()
        assert reads["outcomes_after"] >= 1 and service.snapshot.seq > 0
        seq, pulls = service.snapshot.seq, dict(service.snapshot.pulls)
        reads.clear()
        service.refresh()
        assert sum(reads.values()) == 0  # nothing logged since
        # Decisions alone take no seq: the tails stay unread, the pulls are re-read.
        for user in range(11, 16):
            assert client.get("/recommendations", params={"user_id": user}).status_code == 200
        service.refresh()
        assert sum(reads.values()) == 0 and service.snapshot.seq == seq
        assert sum(service.snapshot.pulls.values()) == sum(pulls.values()) + 5
        traffic(client, range(16, 21))  # five outcomes: the head moved
        service.refresh()
        assert reads["outcomes_after"] >= 1 and service.snapshot.seq > seq
        reads.clear()
        service.refresh()
        assert sum(reads.values()) == 0
        rebuilt = rebuild_state(settings, service=client)
    assert rebuilt.exit_code == 0, str(rebuilt)
    line = live_line(str(rebuilt))
    assert "match yes" in line and "15 outcomes folded" in line, line


def test_seqs_held_while_the_head_is_read_are_folded_once_committed(
        tmp_path: Path, catalog: Dataset, fitted: dict,
        monkeypatch: pytest.MonkeyPatch) -> None:
    # PostgreSQL: a feedback transaction has taken its seq (log_head locked) but not committed
    # when a refresh reads the head: the head read is the committed one, unchanged, so the
    # tails are skipped (they would show nothing either); once it commits, the head has moved
    # and the next refresh folds its outcome.
    settings = make_settings(tmp_path, "postgresql", gate_enabled=False,
                             refresh_interval_s=3600.0)
    with worker(settings, catalog, fitted) as client:
        service = client.app.state.service
        store = service.store
        traffic(client, range(1, 6))
        service.refresh()
        seq = service.snapshot.seq
        body = client.get("/recommendations", params={"user_id": 7, "k": 5}).json()
        event, arm = body["event_id"], body["arm"]
        reads = count_tail_reads(store, monkeypatch)
        like = DEFAULT_RULES["like"]
        write = FeedbackWrite(
            {"created_at": time.time(), "user_id": 7,
             "movie_id": body["items"][0]["movie_id"], "feedback_type": "like",
             "event_id": event, "event_key": event, "arm": arm, "reward": 1.0,
             "rating": 5.0, "counted": False, "note": "already decided"},
            {"event_id": event, "arm": arm, "reward": 1.0}, f"reward 1 to {arm}",
            precedence=like.precedence, excludes=like.excludes)
        context = store.write_engine.begin()
        conn = context.__enter__()
        try:
            store._write_rows(conn.connection.cursor(), [], [write])
            service.refresh()
            assert sum(reads.values()) == 0 and service.snapshot.seq == seq
        finally:
            context.__exit__(None, None, None)
        service.refresh()
        assert reads["outcomes_after"] >= 1 and service.snapshot.seq > seq
        assert service.snapshot.rewards != {}
        rebuilt = rebuild_state(settings, service=client)
    assert rebuilt.exit_code == 0, str(rebuilt)
    line = live_line(str(rebuilt))
    assert "match yes" in line and "6 outcomes folded" in line, line
