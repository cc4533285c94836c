"""Faults: a SIGKILL mid-burst loses no acknowledged feedback; a locked or stopped store is a 503.

The crash test runs ``recbandits serve`` (uvicorn, on SQLite in WAL mode and on PostgreSQL) as
users do, kills it with SIGKILL while eight clients are sending feedback, restarts it and checks
the store against what the clients were told. The outage tests hold SQLite's write lock from
another connection, and stop and restart a PostgreSQL server of their own under a running app.
Each runs for Thompson Sampling and LinTS, and ends with the served state equal to the fold of
the log (``/admin/policy-state``) and ``rebuild-state`` matching.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import signal
import sqlite3
import subprocess
import threading
import time
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import httpx2
import pytest
import sqlalchemy as sa
from fastapi.testclient import TestClient
from test_serving_process import POLICIES, serve_args, serve_env, served_settings
from test_serving_support import (
    ADMIN_TOKEN,
    PostgresServer,
    ServiceProcess,
    assert_log_invariants,
    assert_workers_are_the_fold,
    free_port,
    postgres,
    read_table,
    store_url,
)

from arms.data.dataset import Dataset
from serving.app import create_app
from serving.errors import StoreUnavailableError
from serving.results import CommandError
from serving.settings import Settings
from serving.store.tables import arm_state, decisions, feedback, outcomes


def assert_state_is_the_log(url: str, settings: Settings) -> dict[str, tuple[int, int]]:
    """Stored pulls == the decisions logged, ``rebuild-state`` matches, rewards <= pulls (see
    :func:`assert_log_invariants`); returns arm -> (pulls, outcomes)."""
    pulls = {r["arm"]: r["pulls"] for r in read_table(url, arm_state)}
    assert sum(pulls.values()) == len(read_table(url, decisions))
    assert_log_invariants(url, settings)
    decided = [r["arm"] for r in read_table(url, outcomes)]
    return {arm: (n, decided.count(arm)) for arm, n in pulls.items()}


# ---------------------------------------------------------------------------- crash
@pytest.mark.slow
@pytest.mark.parametrize("policy", POLICIES)
@pytest.mark.parametrize("backend", ["sqlite", "postgresql"])
def test_sigkill_mid_burst_loses_no_acknowledged_feedback(tmp_path: Path, backend: str,
                                                         policy: str) -> None:
    url = store_url(backend, tmp_path)
    settings = served_settings(tmp_path, url, policy)
    args = serve_args(tmp_path, url)
    server = ServiceProcess(args, serve_env(policy), tmp_path / "server.log")
    try:
        with httpx2.Client(base_url=server.base, timeout=30) as client:
            slates = [client.get("/recommendations", params={"user_id": u, "k": 5}).json()
                      for u in range(1, 61)]
        payloads = [{"user_id": s["user_id"], "movie_id": item["movie_id"],
                     "feedback_type": ("like", "dislike", "click")[(i + j) % 3],
                     "event_id": s["event_id"]}
                    for i, s in enumerate(slates) for j, item in enumerate(s["items"])]
        acknowledged: dict[int, dict[str, Any]] = {}  # payload index -> response body
        lost: list[int] = []  # sent, but no response: may or may not be stored
        lock = threading.Lock()
        enough = threading.Event()

        def sender(indices: list[int]) -> None:
            with httpx2.Client(base_url=server.base, timeout=30) as c:
                for i in indices:
                    try:
                        response = c.post("/feedback", json=payloads[i])
                    except httpx2.HTTPError:
                        with lock:
                            lost.append(i)
                        continue
                    assert response.status_code == 201, response.text
                    with lock:
                        acknowledged[i] = response.json()
                        if len(acknowledged) >= len(payloads) // 3:
                            enough.set()

        with ThreadPoolExecutor(8) as pool:
            futures = [pool.submit(sender, list(range(w, len(payloads), 8))) for w in range(8)]
            assert enough.wait(120), "the burst never got going"
            server.stop(signal.SIGKILL)
            for f in futures:
                f.result()
    finally:
        server.stop(signal.SIGKILL)
    assert len(payloads) == 300
    # Killed mid-burst: some requests were answered, some got no answer.
    assert len(payloads) // 3 <= len(acknowledged) < len(payloads)
    assert lost, "the kill should have caught requests in flight"

    stored = {(r["user_id"], r["event_id"], r["movie_id"], r["feedback_type"]): r
              for r in read_table(url, feedback)}
    keys = [(p["user_id"], p["event_id"], p["movie_id"], p["feedback_type"]) for p in payloads]
    for i, body in acknowledged.items():
        row = stored.get(keys[i])
        assert row is not None, f"acknowledged feedback {payloads[i]} was lost"
        assert row["id"] == body["id"] and row["counted"] == body["policy_updated"]
    assert set(stored) <= set(keys), "the store holds feedback nobody sent"
    assert len(stored) <= len(acknowledged) + len(lost)
    assert_state_is_the_log(url, settings)

    # Restarted: every payload again. Acknowledged ones are recognised (200, same row), the
    # others land once, and the state still equals the log, on the worker as in the store.
    server = ServiceProcess(args, serve_env(policy), tmp_path / "server.log")
    try:
        with httpx2.Client(base_url=server.base, timeout=30) as client:
            again = [client.post("/feedback", json=p) for p in payloads]
            served = client.get("/policy").json()
        assert_workers_are_the_fold(server.base, url, settings, workers=1)
    finally:
        server.stop()
    for i, response in enumerate(again):
        assert response.status_code == (200 if keys[i] in stored else 201), response.text
        if i in acknowledged:
            assert response.json()["id"] == acknowledged[i]["id"]
    state = assert_state_is_the_log(url, settings)
    assert len(read_table(url, feedback)) == len(payloads)
    # Five rewarded feedbacks on each of the 60 decisions: one outcome each.
    assert sum(n for _, n in state.values()) == len(slates) == 60
    assert {a["arm"]: (a["pulls"], a["outcomes"]) for a in served["arms"]} == state


# ---------------------------------------------------------------------------- outages
SMALL_ARMS = ["svd", "popularity"]


def small_settings(tmp_path: Path, db: str | None = None, **extra: Any) -> Settings:
    return Settings(state_dir=tmp_path / "state", db=db, arms=SMALL_ARMS, seed=3,
                    # 1 s also bounds the writes that must succeed (40 ms at load 12)
                    store_timeout_s=1.0, refresh_interval_s=0.05, admin_token=ADMIN_TOKEN,
                    **extra)


def like(client: TestClient, user: int, position: int = 0) -> httpx2.Response:
    slate = client.get("/recommendations", params={"user_id": user, "k": 5}).json()
    return client.post("/feedback", json={"user_id": user, "feedback_type": "like",
                                          "movie_id": slate["items"][position]["movie_id"],
                                          "event_id": slate["event_id"]})


def assert_unavailable(response: httpx2.Response) -> None:
    assert response.status_code == 503, response.text
    assert response.headers["retry-after"] == str(StoreUnavailableError.retry_after_s)
    body = response.json()
    assert body["code"] == "store_unavailable" and "retry later" in body["detail"]
    assert "[SQL" not in body["detail"], "the message must not leak SQL"


def table_sizes(url: str) -> dict[str, int]:
    return {t.name: len(read_table(url, t)) for t in (decisions, feedback, arm_state)}


@pytest.mark.parametrize("policy", POLICIES)
def test_locked_sqlite_store_is_a_503_and_recovers_by_itself(
        tmp_path: Path, serving_catalog: Dataset, serving_arms: dict, policy: str) -> None:
    settings = small_settings(tmp_path, policy=policy)
    url = settings.resolved_db_url()
    with TestClient(create_app(settings, catalog=serving_catalog, arms=serving_arms)) as client:
        assert like(client, 1).status_code == 201
        slate = client.get("/recommendations", params={"user_id": 2, "k": 5}).json()
        payload = {"user_id": 2, "movie_id": slate["items"][0]["movie_id"],
                   "feedback_type": "dislike", "event_id": slate["event_id"]}
        before = (table_sizes(url), client.get("/policy").json())

        # Another process holds the write lock (as a long migration or a backup would).
        holder = sqlite3.connect(url.removeprefix("sqlite:///"), isolation_level=None)
        holder.execute("BEGIN EXCLUSIVE")
        try:
            assert_unavailable(client.post("/feedback", json=payload))
            assert_unavailable(client.get("/recommendations", params={"user_id": 3}))
            with ThreadPoolExecutor(6) as pool:  # queued together: one batch, one 503 each
                burst = list(pool.map(lambda _: client.post("/feedback", json=payload),
                                      range(6)))
            for response in burst:
                assert_unavailable(response)
            # WAL readers never wait for the writer: the posterior and health stay readable.
            assert client.get("/policy").json() == before[1]
            assert client.get("/health").status_code == 200
            assert "locked" in client.post("/feedback", json=payload).json()["detail"]
        finally:
            holder.rollback()
            holder.close()
        assert (table_sizes(url), client.get("/policy").json()) == before

        # The lock is gone: the same requests succeed, without a restart.
        stored = client.post("/feedback", json=payload)
        assert stored.status_code == 201 and stored.json()["policy_updated"]
        assert client.post("/feedback", json=payload).status_code == 200
        assert like(client, 3).status_code == 201
        assert_workers_are_the_fold(client, url, settings, workers=1)
    assert_state_is_the_log(url, settings)
    assert table_sizes(url)["feedback"] == 3


def test_serve_waits_for_a_store_locked_at_its_start(
        tmp_path: Path, serving_catalog: Dataset, serving_arms: dict,
        monkeypatch: pytest.MonkeyPatch) -> None:
    # `recbandits serve` prepares the store before it forks the workers; started while another
    # process held SQLite's write lock it exited with a traceback after the store's time-out
    # (found by attack) instead of waiting up to startup_timeout_s, as each worker does.
    from serving import commands

    settings = small_settings(tmp_path, startup_timeout_s=120, port=free_port())
    arms = {name: serving_arms[name] for name in settings.arms}
    real_prepare = commands.prepare
    commands.prepare(settings, catalog=serving_catalog, arms=arms).store.dispose()
    attempts: list[float] = []

    def prepare(settings: Settings, catalog: Dataset | None = None) -> Any:
        attempts.append(time.monotonic())
        assert catalog is serving_catalog  # read once, before the tries (serve's, below)
        return real_prepare(settings, catalog=serving_catalog, arms=arms)

    ran: list[dict[str, Any]] = []
    monkeypatch.setattr(commands, "prepare", prepare)
    monkeypatch.setattr(commands, "load_catalog", lambda settings: serving_catalog)
    monkeypatch.setattr(commands, "_run_worker",
                        lambda config, sock: ran.append({"workers": config.workers}) or 0)
    monkeypatch.setattr("os.environ", {})  # serve exports the settings for its workers
    holder = sqlite3.connect(settings.resolved_db_url().removeprefix("sqlite:///"),
                             isolation_level=None, check_same_thread=False)
    holder.execute("BEGIN EXCLUSIVE")
    done = threading.Event()

    def release() -> None:  # once serve has been refused and tries again
        while len(attempts) < 2 and not done.is_set():
            time.sleep(0.01)
        holder.rollback()

    releaser = threading.Thread(target=release, daemon=True)
    releaser.start()
    try:
        assert commands.serve(settings) == 0
    finally:
        done.set()
        releaser.join(60)
        holder.close()
    assert len(attempts) >= 2 and len(ran) == 1 and ran[0]["workers"] == settings.workers
    # Past startup_timeout_s: one line saying so (exit status 1), not a traceback.
    holder = sqlite3.connect(settings.resolved_db_url().removeprefix("sqlite:///"),
                             isolation_level=None)
    holder.execute("BEGIN EXCLUSIVE")
    try:
        with pytest.raises(CommandError, match=r"the store did not answer within "
                                               r"startup_timeout_s \(0\.5 s\): the store is "
                                               r"unavailable \(database is locked\)") as refused:
            commands.serve(settings.model_copy(update={"startup_timeout_s": 0.5}))
    finally:
        holder.rollback()
        holder.close()
    # 3, the status of a store that does not answer, as the commands give it (it was 1)
    assert refused.value.exit_code == 3 and len(ran) == 1


class StoppablePostgres(PostgresServer):
    """A PostgreSQL cluster of the test's own, so stopping it disturbs no other test."""

    def ctl(self, action: str) -> None:
        self._run([str(self.bin / "pg_ctl"), "-D", str(self.data), "-l",
                   str(self.root / "log"), "-w", "-t", "30", "-m", "fast", "-o",
                   f"-h 127.0.0.1 -p {self.port} -k {self.root} -c fsync=off", action])


@pytest.fixture
def own_postgres() -> Iterator[StoppablePostgres]:
    postgres()  # skips (or fails on CI) with the reason when PostgreSQL cannot run here
    server = StoppablePostgres()
    try:
        yield server
    finally:
        server.stop()


@pytest.mark.slow
@pytest.mark.parametrize("policy", POLICIES)
def test_stopped_postgres_is_a_503_and_the_service_recovers_when_it_returns(
        tmp_path: Path, serving_catalog: Dataset, serving_arms: dict,
        own_postgres: StoppablePostgres, policy: str) -> None:
    url = own_postgres.create_database()
    settings = small_settings(tmp_path, db=url, policy=policy)
    with TestClient(create_app(settings, catalog=serving_catalog, arms=serving_arms)) as client:
        assert like(client, 1).status_code == 201
        slate = client.get("/recommendations", params={"user_id": 2, "k": 5}).json()
        payload = {"user_id": 2, "movie_id": slate["items"][1]["movie_id"],
                   "feedback_type": "like", "event_id": slate["event_id"]}
        before = client.get("/policy").json()

        own_postgres.ctl("stop")
        assert_unavailable(client.post("/feedback", json=payload))
        assert_unavailable(client.get("/recommendations", params={"user_id": 3}))
        assert_unavailable(client.get("/policy"))
        assert_unavailable(client.get("/health"))
        own_postgres.ctl("start")

        # Pooled connections died with the server; the service reconnects on its own.
        for _ in range(100):
            if client.get("/health").status_code == 200:
                break
            time.sleep(0.1)
        assert client.get("/policy").json() == before, "a 503 must have changed nothing"
        assert client.post("/feedback", json=payload).status_code == 201
        assert like(client, 3).status_code == 201
        assert_workers_are_the_fold(client, url, settings, workers=1)
    assert table_sizes(url) == {"decisions": 3, "feedback": 3, "arm_state": 2}
    assert_state_is_the_log(url, settings)


def test_a_thread_hop_is_a_503_when_the_store_leaves_a_call_unanswered_not_on_a_held_lock(
        tmp_path: Path, serving_catalog: Dataset, serving_arms: dict) -> None:
    # RecommendationService.in_thread times how long the store has left a call unanswered
    # (found by attack: these waits had no time-out), not the waits for the service's own
    # advance lock, which a retrain publishing its arms holds for seconds (found by review:
    # a first version timed the whole call, and answered 503 with the store healthy).
    settings = small_settings(tmp_path)  # store_timeout_s 1 s
    admin = {"authorization": f"Bearer {ADMIN_TOKEN}"}
    with TestClient(create_app(settings, catalog=serving_catalog, arms=serving_arms)) as client:
        service = client.app.state.service
        store = service.store
        answer = threading.Event()

        def unanswered(real: Any) -> Any:
            def call(*args: Any, **kwargs: Any) -> Any:
                answer.wait(60)
                return real(*args, **kwargs)
            return call

        # The store leaves the call itself unanswered: 503, then 200 once it answers.
        store.versions = unanswered(type(store).versions.__get__(store))
        try:
            assert_unavailable(client.get("/admin/models", headers=admin))
        finally:
            answer.set()
            del store.versions
        assert client.get("/admin/models", headers=admin).status_code == 200

        # The advance lock held far longer than the time-out, the store answering: 200.
        held, done = threading.Event(), threading.Event()

        def publish() -> None:  # what a retrain's publish does: the lock, CPU and disk
            with service._advance_lock:
                held.set()
                done.wait(60)

        publisher = threading.Thread(target=publish)
        publisher.start()
        held.wait(60)
        threading.Timer(3.0, done.set).start()  # three time-outs
        try:
            assert client.get("/policy").status_code == 200
            assert client.get("/metrics").status_code == 200
        finally:
            done.set()
            publisher.join(60)

        # The refresher stuck in the store holding the lock: a request waiting for the lock
        # answers 503 once the refresher's call has gone unanswered for the time-out.
        answer.clear()
        store.state = unanswered(type(store).state.__get__(store))
        try:
            for _ in range(600):  # the refresher's next tick (every 0.05 s) gets stuck
                if service.store_watch.unanswered_s() > 0:
                    break
                time.sleep(0.05)
            assert_unavailable(client.get("/policy"))
        finally:
            answer.set()
            del store.state
        for _ in range(200):
            if client.get("/policy").status_code == 200:
                break
            time.sleep(0.05)
        assert like(client, 1).status_code == 201
    assert_state_is_the_log(settings.resolved_db_url(), settings)


@pytest.mark.slow
def test_a_frozen_postgres_is_a_503_within_the_store_timeout_on_every_route(
        tmp_path: Path, serving_catalog: Dataset, serving_arms: dict,
        own_postgres: StoppablePostgres, monkeypatch: pytest.MonkeyPatch) -> None:
    # Found by attack: with the server's processes stopped (SIGSTOP: the connections stay
    # open, so no socket, server or lock time-out fires), /health, /metrics, /policy, the
    # admin reads and the preferences hung as long as the server did (30 s), not
    # store_timeout_s. The watchdog resumes it after 60 s, so the old code fails, not hangs.
    # And a read that timed out first tried to cancel its query in the server, which a frozen
    # server never lets it connect for: 5 s more (a read changes nothing to cancel).
    import psycopg

    cancels: list[object] = []
    cancel_safe = psycopg.AsyncConnection.cancel_safe

    async def counted_cancel(self: psycopg.AsyncConnection, *args: Any, **kwargs: Any) -> None:
        cancels.append(self)
        await cancel_safe(self, *args, **kwargs)

    monkeypatch.setattr(psycopg.AsyncConnection, "cancel_safe", counted_cancel)
    url = own_postgres.create_database()
    settings = small_settings(tmp_path, db=url, policy="LinTS")
    admin = {"authorization": f"Bearer {ADMIN_TOKEN}"}
    postmaster = int((own_postgres.data / "postmaster.pid").read_text().split()[0])
    with TestClient(create_app(settings, catalog=serving_catalog, arms=serving_arms)) as client:
        assert like(client, 1).status_code == 201
        before = client.get("/policy").json()
        processes = [postmaster, *map(int, subprocess.run(
            ["pgrep", "-P", str(postmaster)], capture_output=True, text=True).stdout.split())]

        def resume() -> None:
            for pid in processes:
                with contextlib.suppress(ProcessLookupError):
                    os.kill(pid, signal.SIGCONT)

        watchdog = threading.Timer(60, resume)
        for pid in processes:
            os.kill(pid, signal.SIGSTOP)
        watchdog.start()
        try:
            answers = {
                "health": client.get("/health"),
                "metrics": client.get("/metrics"),
                "policy": client.get("/policy"),
                "models": client.get("/admin/models", headers=admin),
                "live-state": client.get("/admin/live-state", headers=admin),
                "shadow": client.get("/admin/shadow", headers=admin),
                "preferences": client.get("/users/5/preferences"),
                "put preferences": client.put("/users/5/preferences",
                                              json={"genres": ["Comedy"]}),
                "recommendations": client.get("/recommendations", params={"user_id": 6}),
            }
        finally:
            watchdog.cancel()
            resume()
        for route, response in answers.items():
            assert response.status_code == 503, (route, response.text)
            assert_unavailable(response)
        assert cancels == [], "a read that timed out tried to cancel its query in the server"
        for _ in range(200):  # the service goes on by itself once the server answers
            if client.get("/health").status_code == 200:
                break
            time.sleep(0.1)
        assert client.get("/policy").json()["arms"] == before["arms"]
        assert like(client, 3).status_code == 201
        assert_workers_are_the_fold(client, url, settings, workers=1)
    assert_state_is_the_log(url, settings)


def test_reads_do_not_queue_behind_writes_waiting_for_a_held_sqlite_lock(
        tmp_path: Path, serving_catalog: Dataset, serving_arms: dict) -> None:
    # Found by the last attack: the preferences' PUTs took the reader threads, so with SQLite's
    # write lock held GET /policy and GET /users/{id}/preferences queued behind them and were
    # answered 503 (a write's wait for the lock taken for the store not answering).
    settings = small_settings(tmp_path)  # store_timeout_s 1 s
    with TestClient(create_app(settings, catalog=serving_catalog, arms=serving_arms)) as client:
        holder = sqlite3.connect(settings.resolved_db_url().removeprefix("sqlite:///"),
                                 isolation_level=None)
        holder.execute("BEGIN IMMEDIATE")
        try:
            with ThreadPoolExecutor(12) as pool:
                puts = [pool.submit(client.put, f"/users/{900 + i}/preferences",
                                    json={"genres": ["War"]}) for i in range(12)]
                while not client.app.state.service.write_watch.unanswered_s():
                    time.sleep(0.01)  # the writes are waiting for the lock
                reads = [client.get("/users/5/preferences"), client.get("/policy")]
                written = [p.result() for p in puts]
        finally:
            holder.rollback()
            holder.close()
    assert [r.status_code for r in reads] == [200, 200], [r.text for r in reads]
    for response in written:  # the lock outlasted none or all of them: a 503 or a 200
        assert response.status_code in (200, 503), response.text


def test_a_committed_admin_write_whose_refresh_fails_is_answered_as_made(
        tmp_path: Path, serving_catalog: Dataset, serving_arms: dict,
        monkeypatch: pytest.MonkeyPatch) -> None:
    # Found by attack: an item added (a version promoted) was answered 503 when the refresh
    # after its commit failed, so a client retried and got 409, or thought nothing changed.
    settings = small_settings(tmp_path)
    admin = {"authorization": f"Bearer {ADMIN_TOKEN}"}
    with TestClient(create_app(settings, catalog=serving_catalog, arms=serving_arms)) as client:
        service = client.app.state.service
        refresh = service.refresh
        failed: list[str] = []

        def down_once() -> None:
            if threading.current_thread().name.startswith("recbandits-read") and not failed:
                failed.append("refresh")
                raise StoreUnavailableError("the store is unavailable (down); retry later")
            refresh()

        monkeypatch.setattr(service, "refresh", down_once)
        added = client.post("/admin/items", headers=admin,
                            json={"item_id": 9201, "title": "film", "genres": ["Drama"]})
        assert failed == ["refresh"] and added.status_code == 201, added.text
        # A refresh the store leaves unanswered (a lock on a table only it reads: found by
        # the final attack) is past the request's wait, not a failure of the committed write.
        silent = threading.Event()

        def unanswered() -> None:
            if threading.current_thread().name.startswith("recbandits-read"):
                with service.store_watch.call():
                    silent.wait(30)
            refresh()

        monkeypatch.setattr(service, "refresh", unanswered)
        try:
            held = client.post("/admin/items", headers=admin,
                               json={"item_id": 9202, "title": "film", "genres": ["Drama"]})
        finally:
            silent.set()
        assert held.status_code == 201, held.text
        monkeypatch.setattr(service, "refresh", refresh)
        for _ in range(200):  # the refresher folds them in within its interval
            if {9201, 9202} <= service.arm_set.item_index.keys():
                break
            time.sleep(0.05)
        assert {9201, 9202} <= service.arm_set.item_index.keys()
        again = client.post("/admin/items", headers=admin,
                            json={"item_id": 9201, "title": "film", "genres": ["Drama"]})
        assert again.status_code == 409


@pytest.mark.slow
def test_after_a_postgres_restart_reads_reconnect_and_committed_admin_writes_answer_ok(
        tmp_path: Path, serving_catalog: Dataset, serving_arms: dict,
        own_postgres: StoppablePostgres) -> None:
    # Found by attack: after a restart, each thread's kept connection of the fast reads was
    # dead until that thread's next read failed on it (a 503 five minutes later), and items
    # added or versions promoted were answered 503 although committed: the refresh after the
    # commit read on a dead connection.
    from serving.store import open_store

    url = own_postgres.create_database()
    settings = small_settings(tmp_path, db=url)
    admin = {"authorization": f"Bearer {ADMIN_TOKEN}"}
    with TestClient(create_app(settings, catalog=serving_catalog, arms=serving_arms)) as client:
        store = open_store(url)
        try:
            assert store.decision("0" * 32) is None  # this thread's connection, kept
            service = client.app.state.service
            for item in (9001, 9002, 9003, 9004, 9005):  # every reader thread reads once
                assert client.post("/admin/items", headers=admin, json={
                    "item_id": item, "title": f"film {item}", "genres": ["Drama"]}
                ).status_code == 201
            own_postgres.ctl("stop")
            own_postgres.ctl("start")
            assert store.decision("0" * 32) is None  # read again on a new connection
            added = [client.post("/admin/items", headers=admin, json={
                "item_id": item, "title": f"film {item}", "genres": ["Comedy"]})
                for item in range(9100, 9108)]
            assert [r.status_code for r in added] == [201] * 8, [r.text for r in added]
            assert {i.item_id for i in store.items_after(0)} >= set(range(9100, 9108))
            assert 9107 in service.arm_set.item_index
        finally:
            store.dispose()
        assert like(client, 2).status_code == 201
        assert_workers_are_the_fold(client, url, settings, workers=1)
    assert_state_is_the_log(url, settings)


class FlakyStore:
    """Stands in for :class:`Store` in the writer: every write fails with ``error``."""

    commit_mode = "thread"

    def __init__(self, error: Exception, timeout_s: float = 10.0) -> None:
        self.error = error
        self.timeout_s = timeout_s
        self.calls: list[int] = []
        self.release = threading.Event()

    def periodic_jobs(self) -> list:
        return []

    def write_batch(self, decision_rows: list, feedback_writes: list) -> None:
        self.calls.append(len(decision_rows) + len(feedback_writes))
        self.release.wait(10)  # hold the first batch until the others are queued behind it
        raise self.error


@pytest.mark.parametrize(("outage", "timeout_s"), [(True, 10.0), (True, 0.02), (False, 10.0)])
def test_writer_fails_a_batch_at_once_on_an_outage_and_isolates_other_errors(
        outage: bool, timeout_s: float) -> None:
    from serving.store import GroupCommitWriter

    error: Exception = (
        sa.exc.OperationalError("BEGIN IMMEDIATE", {}, sqlite3.OperationalError("database is "
                                                                                "locked"))
        if outage else sa.exc.IntegrityError("INSERT", {}, sqlite3.IntegrityError("bad row")))
    store = FlakyStore(error, timeout_s)
    writer = GroupCommitWriter(store, batch_max=64)  # type: ignore[arg-type]

    async def scenario() -> list[BaseException | None]:
        writer.start(asyncio.get_running_loop())
        first = asyncio.ensure_future(writer.write_decision({"n": 0}))
        while not store.calls:
            await asyncio.sleep(0.001)
        rest = [asyncio.ensure_future(writer.write_decision({"n": i})) for i in range(1, 6)]
        await asyncio.sleep(0.05)
        store.release.set()
        results = await asyncio.gather(first, *rest, return_exceptions=True)
        if hasattr(writer, "aclose"):
            await writer.aclose()
        else:
            await asyncio.get_running_loop().run_in_executor(None, writer.stop)
        return results

    results = asyncio.run(scenario())
    assert len(results) == 6
    if outage:
        # The first write fails after 0.05 s. The five queued behind it meanwhile fail with it
        # if they have waited half the time-out by then (0.02 s: the writer of fa0c8ed tried
        # them again, waiting up to a second time-out); otherwise (10 s: a fast failure, such
        # as a dropped connection) they get an attempt of their own, failed here too.
        assert store.calls == ([1] if timeout_s < 0.1 else [1, 5])
        assert all(isinstance(r, StoreUnavailableError) for r in results)
        assert "database is locked" in str(results[0])
    else:
        assert store.calls == [1, 5, 1, 1, 1, 1, 1]  # a bug in one write spares its batch
        assert all(r is error for r in results)


class BadThenLockedStore(FlakyStore):
    """The batch fails for a bad write; then every write, retried alone, meets an outage."""

    def write_batch(self, decision_rows: list, feedback_writes: list) -> None:
        n = len(decision_rows) + len(feedback_writes)
        self.calls.append(n)
        if n > 1:
            raise sa.exc.IntegrityError("INSERT", {}, sqlite3.IntegrityError("bad row"))
        raise self.error


def test_writes_retried_one_by_one_stop_at_the_first_outage() -> None:
    """A batch retried write by write after a bad write fails the rest at the first outage
    (one 503 for all) instead of waiting one more time-out per write: the writer of 9c288b3
    tried each of the five alone, [5, 1, 1, 1, 1, 1], five time-outs for the last."""
    from serving.store import GroupCommitWriter

    store = BadThenLockedStore(sa.exc.OperationalError(
        "BEGIN IMMEDIATE", {}, sqlite3.OperationalError("database is locked")))
    store.release.set()
    writer = GroupCommitWriter(store, batch_max=64)  # type: ignore[arg-type]

    async def scenario() -> list[BaseException | None]:
        writer.start(asyncio.get_running_loop())
        results = await asyncio.gather(*(writer.write_decision({"n": i}) for i in range(5)),
                                       return_exceptions=True)
        await writer.aclose()
        return results

    results = asyncio.run(scenario())
    assert store.calls == [5, 1]
    assert all(isinstance(r, StoreUnavailableError) for r in results)
    assert len({id(r) for r in results}) == 1


def test_only_outages_map_to_store_unavailable(tmp_path: Path) -> None:
    from serving.store.errors import store_unavailable

    locked = sa.exc.OperationalError("UPDATE arm_state SET x = 1", {},
                                     sqlite3.OperationalError("database is locked"))
    error = store_unavailable(locked)
    assert isinstance(error, StoreUnavailableError) and error.status_code == 503
    assert "database is locked" in error.message and "UPDATE" not in error.message
    disconnect = sa.exc.DBAPIError("SELECT 1", {}, Exception("server closed the connection"),
                                   connection_invalidated=True)
    assert "server closed" in store_unavailable(disconnect).message
    assert store_unavailable(sqlite3.OperationalError("unable to open database file"))
    # SQLite files schema errors as operational too: not outages (found by review: a store
    # lacking a column was a 503 "retry later", and the CLI's exit 3).
    for schema in ("no such column: decisions.shadow", "no such table: decisions"):
        assert store_unavailable(sqlite3.OperationalError(schema)) is None
        assert store_unavailable(sa.exc.OperationalError("SELECT", {},
                                                         sqlite3.OperationalError(schema))) is None
    # The same errors as SQLite raises them (with their result codes).
    holder = sqlite3.connect(tmp_path / "s.db", isolation_level=None)
    other = sqlite3.connect(tmp_path / "s.db", isolation_level=None, timeout=0)
    holder.execute("CREATE TABLE t (x)")
    holder.execute("BEGIN EXCLUSIVE")
    for sql, outage in (("SELECT nothing FROM nowhere", False), ("INSERT INTO t VALUES (1)",
                                                                  True)):
        with pytest.raises(sqlite3.OperationalError) as raised:
            other.execute(sql)
        assert (store_unavailable(raised.value) is not None) is outage, raised.value
    holder.rollback()
    holder.close()
    other.close()
    assert store_unavailable(sa.exc.TimeoutError("QueuePool limit reached"))
    assert store_unavailable(sa.exc.IntegrityError("INSERT", {}, Exception("dup"))) is None
    assert store_unavailable(sqlite3.IntegrityError("dup")) is None
    assert store_unavailable(ValueError("no")) is None


def test_sqlite_errors_are_read_one_way_for_outages_lock_waits_and_unreadable_files(
        tmp_path: Path) -> None:
    """One reading of SQLite's errors (``_sqlite_error_is``): an outage, a lock to wait for,
    and a file that is not a database (which the CLI reports in one line) agree on each
    error, with or without its result code."""
    from serving.store import unreadable_database
    from serving.store.sqlite import _is_busy, _sqlite_outage

    holder = sqlite3.connect(tmp_path / "s.db", isolation_level=None)
    other = sqlite3.connect(tmp_path / "s.db", isolation_level=None, timeout=0)
    holder.execute("CREATE TABLE t (x)")
    holder.execute("BEGIN EXCLUSIVE")
    with pytest.raises(sqlite3.OperationalError) as busy:
        other.execute("INSERT INTO t VALUES (1)")
    holder.rollback()
    with pytest.raises(sqlite3.OperationalError) as schema:
        other.execute("SELECT nothing FROM nowhere")
    holder.close()
    other.close()
    junk = tmp_path / "notes.db"
    junk.write_text("not a database at all, but long enough to have a header" * 4)
    with pytest.raises(sqlite3.DatabaseError) as not_db:
        sqlite3.connect(junk).execute("SELECT 1 FROM sqlite_master")
    assert busy.value.sqlite_errorname == "SQLITE_BUSY"
    assert not_db.value.sqlite_errorname == "SQLITE_NOTADB"
    # (error, outage, busy, unreadable)
    for error, outage, is_busy, unreadable in (
            (busy.value, True, True, False), (schema.value, False, False, False),
            (not_db.value, False, False, True),
            (sqlite3.OperationalError("database is locked"), True, False, False),
            (sqlite3.DatabaseError("database disk image is malformed"), False, False, True)):
        assert _sqlite_outage(error) is outage, error
        assert _is_busy(error) is is_busy, error
        wrapped = sa.exc.DatabaseError("SELECT 1", {}, error)
        assert (unreadable_database(error) is error) is unreadable, error
        assert (unreadable_database(wrapped) is error) is unreadable, error
    assert unreadable_database(ValueError("file is not a database")) is None  # not SQLite's
