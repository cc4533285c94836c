"""The group-commit writer's linger (``commit_linger_s``): writes that arrive apart share a
commit, a full batch or a stop ends the wait, and the setting reaches the service's writer.

Without it a write that arrives alone pays a whole transaction (7.4 WAL frames and 76-91 us of
CPU per decision on SQLite, against 2.0 frames and 24-26 us committed by eights), which is how
requests arrive at half the bare endpoint's rate in ``bench/serving_load.py``.
"""

from __future__ import annotations

import asyncio
from pathlib import Path
from typing import Any

import pytest
from fastapi.testclient import TestClient
from pydantic import ValidationError
from test_serving_support import read_table as table
from test_serving_support import store_url

from arms.data.dataset import Dataset
from serving.app import create_app
from serving.settings import Settings
from serving.store import GroupCommitWriter, Store, open_store
from serving.store.tables import decisions

ARMS = ["svd", "popularity"]


def decision(event_id: str, at: float) -> dict[str, Any]:
    return {"event_id": event_id, "created_at": at, "user_id": 1,
            "context": {"known_user": True, "k": 1}, "arm": "svd", "propensity": 0.5,
            "pmf": '{"svd":0.5,"popularity":0.5}', "slate": [1], "policy_version": 1,
            "cold_start": False, "reward_deadline": at + 1800.0}


def open_backend(backend: str, tmp_path: Path) -> Store:
    store = open_store(store_url(backend, tmp_path))
    store.create_schema(ARMS)
    return store


def stored_ids(store: Store) -> list[str]:
    return sorted(r["event_id"] for r in table(store.url.render_as_string(False), decisions))


def spaced_writes(writer: GroupCommitWriter, n: int, gap_s: float) -> Any:
    """``n`` decisions queued ``gap_s`` apart, each awaited by its own task."""

    async def run() -> list[Any]:
        tasks = []
        for i in range(n):
            tasks.append(asyncio.ensure_future(writer.write_decision(decision(f"e{i}", i))))
            await asyncio.sleep(gap_s)
        return await asyncio.gather(*tasks)

    return run()


@pytest.mark.parametrize("backend", ["sqlite", "postgresql"])  # inline and async commits
def test_writes_queued_apart_share_one_commit_once_the_batch_is_full(tmp_path: Path,
                                                                     backend: str) -> None:
    # A 60 s linger: only a full batch (batch_max = 3) ends it, so the test would time out
    # (not pass slowly) if it did not.
    store = open_backend(backend, tmp_path)
    writer = GroupCommitWriter(store, batch_max=3, linger_s=60.0)

    async def run() -> list[Any]:
        writer.start(asyncio.get_running_loop())
        try:
            return await asyncio.wait_for(spaced_writes(writer, 3, 0.02), 20)
        finally:
            await writer.aclose()

    assert asyncio.run(run()) == [None, None, None]
    assert (writer.batches, writer.items) == (1, 3)
    assert stored_ids(store) == ["e0", "e1", "e2"]
    store.dispose()


def test_without_a_linger_each_write_queued_apart_is_its_own_commit(tmp_path: Path) -> None:
    store = open_backend("sqlite", tmp_path)
    writer = GroupCommitWriter(store, batch_max=3)

    async def run() -> list[Any]:
        writer.start(asyncio.get_running_loop())
        try:
            return await spaced_writes(writer, 3, 0.02)
        finally:
            await writer.aclose()

    assert asyncio.run(run()) == [None, None, None]
    assert (writer.batches, writer.items) == (3, 3)
    assert stored_ids(store) == ["e0", "e1", "e2"]
    store.dispose()


def test_a_lingering_batch_commits_when_the_writer_stops(tmp_path: Path) -> None:
    store = open_backend("sqlite", tmp_path)
    writer = GroupCommitWriter(store, batch_max=64, linger_s=60.0)

    async def run() -> Any:
        writer.start(asyncio.get_running_loop())
        pending = asyncio.ensure_future(writer.write_decision(decision("e0", 0)))
        await asyncio.sleep(0.02)
        assert not pending.done()  # lingering
        await asyncio.wait_for(writer.aclose(), 20)
        return await pending

    assert asyncio.run(run()) is None
    assert writer.batches == 1 and stored_ids(store) == ["e0"]
    store.dispose()


@pytest.mark.parametrize("bad", [-0.001, float("nan"), float("inf")])
def test_a_negative_linger_is_refused(tmp_path: Path, bad: float) -> None:
    store = open_backend("sqlite", tmp_path)
    # inf had passed `linger_s >= 0`: a batch would have waited for ever.
    with pytest.raises(ValueError, match=r"linger_s=(-0\.001 is outside the allowed range "
                                         r"\[0, inf\)|nan must be finite|inf must be finite)"):
        GroupCommitWriter(store, batch_max=8, linger_s=bad)
    with pytest.raises(ValidationError, match="commit_linger_s"):
        Settings(commit_linger_s=bad)
    with pytest.raises(ValidationError, match="commit_linger_s"):
        Settings(commit_linger_s=0.5)  # at most 0.1 s: a latency every write pays
    store.dispose()


def test_the_setting_reaches_the_service_writer(tmp_path: Path, serving_catalog: Dataset,
                                                serving_arms: dict,
                                                monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("RECBANDITS_COMMIT_LINGER_S", "0.003")
    settings = Settings(state_dir=tmp_path / "state", arms=["svd", "popularity"], seed=3)
    assert settings.commit_linger_s == 0.003
    with TestClient(create_app(settings, catalog=serving_catalog, arms=serving_arms)) as client:
        assert client.app.state.service.writer.linger_s == 0.003
        response = client.get("/recommendations", params={"user_id": 1, "k": 5})
        assert response.status_code == 200, response.text
        event_id = response.json()["event_id"]
    assert [r["event_id"] for r in table(settings.resolved_db_url(), decisions)] == [event_id]
