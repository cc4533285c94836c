"""The opt-in stall log (``stall_log_ms``, :mod:`serving.stall_log`): event-loop stalls with
where the loop was, and long garbage collections, logged; off by default."""

from __future__ import annotations

import asyncio
import gc
import logging
import time
from pathlib import Path
from typing import Any

import pytest
from fastapi.testclient import TestClient
from pydantic import ValidationError

from arms.data.dataset import Dataset
from serving import stall_log
from serving.app import create_app
from serving.settings import Settings
from serving.stall_log import StallLog
from serving.store import GroupCommitWriter, open_store


def _block_the_loop(seconds: float, log: StallLog | None = None) -> None:
    # What a long synchronous call in a request does to every other one; with ``log``, held
    # until its watchdog has read the stack too (a loaded machine may not run the watchdog's
    # thread within ``seconds``).
    end, guard = time.monotonic() + seconds, time.monotonic() + 10
    while time.monotonic() < end or (log is not None and log._stack is None
                                     and time.monotonic() < guard):
        time.sleep(0.01)


def test_a_stall_is_logged_with_where_the_loop_was(caplog: pytest.LogCaptureFixture) -> None:
    log = StallLog(0.02)

    async def run() -> None:
        log.start(asyncio.get_running_loop())
        await asyncio.sleep(0.05)  # heartbeats on time: nothing logged
        _block_the_loop(0.15, log)
        await asyncio.sleep(0.05)  # the next heartbeat reports the stall
        log.stop()

    with caplog.at_level(logging.WARNING, logger="serving.stall_log"):
        asyncio.run(run())
    stalls = [r.getMessage() for r in caplog.records if "event loop stalled" in r.getMessage()]
    assert log.stalls == len(stalls) >= 1  # more only if this machine starved the loop too
    blocked = [m for m in stalls if "_block_the_loop" in m]
    assert len(blocked) == 1 and "time.sleep" in blocked[0], stalls
    took_ms = float(blocked[0].split("stalled ")[1].split(" ms")[0])
    assert took_ms >= 150 - 2 * 5  # the heartbeat's period (5 ms) is its resolution


def test_a_long_garbage_collection_is_logged_and_named_in_the_stall(
        caplog: pytest.LogCaptureFixture, monkeypatch: pytest.MonkeyPatch) -> None:
    clock = [100.0]
    monkeypatch.setattr(stall_log.time, "perf_counter", lambda: clock[0])
    log = StallLog(0.01)
    log._beat = 100.0
    with caplog.at_level(logging.WARNING, logger="serving.stall_log"):
        log._on_gc("start", {"generation": 0, "collected": 0, "uncollectable": 0})
        clock[0] += 0.004  # a short one: not logged alone
        log._on_gc("stop", {"generation": 0, "collected": 10, "uncollectable": 0})
        log._on_gc("start", {"generation": 2, "collected": 0, "uncollectable": 0})
        clock[0] += 0.030
        log._on_gc("stop", {"generation": 2, "collected": 1234, "uncollectable": 0})
        log._heartbeat()  # the loop's next turn, 34 ms after its last
        log.stop()
    messages = [r.getMessage() for r in caplog.records]
    assert messages[0] == ("garbage collection of generation 2 took 30.0 ms (1234 collected, "
                           "thread MainThread)")
    assert messages[1].startswith("event loop stalled 31.5 ms; garbage collections during it: "
                                  "gen0 4.0 ms, gen2 30.0 ms; loop thread after 10 ms:")
    assert "(not read: the watchdog did not run meanwhile" in messages[1]
    assert (log.stalls, log.collections) == (1, 1)


@pytest.mark.parametrize("bad", [0.0, -1.0, float("nan"), float("inf")])
def test_a_threshold_that_is_not_positive_is_refused(bad: float) -> None:
    # inf had passed `threshold_s > 0`: a heartbeat of period inf.
    with pytest.raises(ValueError, match=r"threshold_s=(.* is outside the allowed range "
                                         r"\(0, inf\)|nan must be finite|inf must be finite)"):
        StallLog(bad)
    if bad != 0.0:  # 0 is the setting's "off"
        with pytest.raises(ValidationError, match="stall_log_ms"):
            Settings(stall_log_ms=bad)


def test_the_setting_turns_it_on_in_the_service(tmp_path: Path, serving_catalog: Dataset,
                                               serving_arms: dict,
                                               monkeypatch: pytest.MonkeyPatch) -> None:
    settings = Settings(state_dir=tmp_path / "off", arms=["svd", "popularity"], seed=3)
    with TestClient(create_app(settings, catalog=serving_catalog, arms=serving_arms)) as client:
        assert client.app.state.stall_log is None  # off by default: nothing runs
    monkeypatch.setenv("RECBANDITS_STALL_LOG_MS", "250")
    settings = Settings(state_dir=tmp_path / "on", arms=["svd", "popularity"], seed=3)
    with TestClient(create_app(settings, catalog=serving_catalog, arms=serving_arms)) as client:
        log = client.app.state.stall_log
        assert log.threshold_s == 0.25 and log._watchdog.is_alive()
        assert client.get("/recommendations", params={"user_id": 1, "k": 5}).status_code == 200
    assert log._watchdog is None and log._on_gc not in gc.callbacks


def test_a_commit_that_waited_for_the_write_lock_is_logged(
        tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    # Such a wait holds up the requests of its batch, not the event loop: the writer says so.
    store = open_store(f"sqlite:///{tmp_path / 'store.db'}", timeout_s=5.0)
    store.create_schema(["svd", "popularity"])
    writer = GroupCommitWriter(store, batch_max=8, slow_commit_s=0.02)
    quiet = GroupCommitWriter(store, batch_max=8)  # not timed: nothing logged

    def row(event_id: str) -> dict[str, Any]:
        return {"event_id": event_id, "created_at": 1.0, "user_id": 1,
                "context": {"known_user": True, "k": 1}, "arm": "svd", "propensity": 0.5,
                "pmf": '{"svd":0.5,"popularity":0.5}', "slate": [1], "policy_version": 1,
                "cold_start": False, "reward_deadline": 1801.0}

    async def run(w: GroupCommitWriter, event_id: str) -> None:
        w.start(asyncio.get_running_loop())
        await w.write_decision(row(f"{event_id}-fast"))  # quick: not logged
        assert store.writers_lock.acquire(1.0)  # as the RESTART checkpoint holds it

        async def release() -> None:  # 0.1 s into the wait (a timer armed before could fire
            while w.waited_batches == 0:  # before the write's first try on a loaded machine)
                await asyncio.sleep(0.001)
            await asyncio.sleep(0.1)
            store.writers_lock.release()

        releasing = asyncio.ensure_future(release())
        await w.write_decision(row(event_id))
        await releasing
        await w.aclose()

    with caplog.at_level(logging.WARNING, logger="serving.store.writer"):
        asyncio.run(run(writer, "e1"))
        timed = [r.getMessage() for r in caplog.records if "to commit" in r.getMessage()]
        caplog.clear()
        asyncio.run(run(quiet, "e2"))
    assert not [r for r in caplog.records if "to commit" in r.getMessage()]
    waited = [m for m in timed if m.endswith(" (it waited for the write lock in a thread)")]
    assert len(waited) == 1, timed
    assert waited[0].startswith("a batch of 1 writes took ")
    assert float(waited[0].split("took ")[1].split(" ms")[0]) >= 100 - 5
    assert (writer.waited_batches, quiet.waited_batches) == (1, 1)
    store.dispose()
