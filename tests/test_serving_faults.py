"""Faults: a SIGKILL mid-burst loses no acknowledged feedback; a locked or stopped store is a 503.

The crash test runs ``recbandits serve`` (uvicorn, SQLite file store in WAL mode) as users do,
kills it with SIGKILL while eight clients are sending feedback, restarts it and checks the store
against what the clients were told. The outage tests hold SQLite's write lock from another
connection, and stop and restart a PostgreSQL server of their own under a running app.
"""

from __future__ import annotations

import io
import signal
import threading
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import httpx
import pytest
import sqlalchemy as sa
from test_serving_process import ENV, serve_args
from test_serving_support import ServiceProcess

from serving.commands import rebuild_state
from serving.settings import Settings
from serving.store.tables import arm_state, decisions, feedback

ARMS = ["svd", "popularity"]


def read_table(url: str, table: sa.Table) -> list[dict[str, Any]]:
    engine = sa.create_engine(url)
    try:
        with engine.connect() as conn:
            return [dict(r._mapping) for r in conn.execute(sa.select(table))]
    finally:
        engine.dispose()


def assert_state_is_the_log(url: str, arms: str, state_dir: Path) -> dict[str, Any]:
    """Stored counts == counted feedback rows and decisions, and == a replay of the log."""
    rows = read_table(url, feedback)
    state = {r["arm"]: r for r in read_table(url, arm_state)}
    n_decisions = len(read_table(url, decisions))
    for arm, row in state.items():
        counted = [r for r in rows if r["counted"] and r["arm"] == arm]
        assert row["successes"] == sum(r["reward"] == 1.0 for r in counted), arm
        assert row["failures"] == sum(r["reward"] == 0.0 for r in counted), arm
    assert sum(r["pulls"] for r in state.values()) == n_decisions
    out = io.StringIO()
    code = rebuild_state(Settings(db=url, arms=arms.split(","), state_dir=state_dir), out)
    assert code == 0 and "match: yes" in out.getvalue(), out.getvalue()
    return state


# ---------------------------------------------------------------------------- crash
@pytest.mark.slow
def test_sigkill_mid_burst_loses_no_acknowledged_feedback(tmp_path: Path) -> None:
    url = f"sqlite:///{tmp_path / 'store.db'}"
    arms = "svd,autoencoder,popularity"
    args = serve_args(tmp_path, url)
    server = ServiceProcess(args, ENV, tmp_path / "server.log")
    try:
        with httpx.Client(base_url=server.base, timeout=30) as client:
            slates = [client.get("/recommendations", params={"user_id": u, "k": 5}).json()
                      for u in range(1, 101)]
        payloads = [{"user_id": s["user_id"], "movie_id": item["movie_id"],
                     "feedback_type": ("like", "dislike", "click")[(i + j) % 3],
                     "event_id": s["event_id"]}
                    for i, s in enumerate(slates) for j, item in enumerate(s["items"])]
        acknowledged: dict[int, dict[str, Any]] = {}  # payload index -> response body
        lost: list[int] = []  # sent, but no response: may or may not be stored
        lock = threading.Lock()
        enough = threading.Event()

        def sender(indices: list[int]) -> None:
            with httpx.Client(base_url=server.base, timeout=30) as c:
                for i in indices:
                    try:
                        response = c.post("/feedback", json=payloads[i])
                    except httpx.HTTPError:
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
    assert len(payloads) == 500
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
    assert_state_is_the_log(url, arms, tmp_path / "state")

    # Restarted: every payload again. Acknowledged ones are recognised (200, same row), the
    # others land once, and the state still equals the log.
    server = ServiceProcess(args, ENV, tmp_path / "server.log")
    try:
        with httpx.Client(base_url=server.base, timeout=30) as client:
            again = [client.post("/feedback", json=p) for p in payloads]
            policy = client.get("/policy").json()
    finally:
        server.stop()
    for i, response in enumerate(again):
        assert response.status_code == (200 if keys[i] in stored else 201), response.text
        if i in acknowledged:
            assert response.json()["id"] == acknowledged[i]["id"]
    state = assert_state_is_the_log(url, arms, tmp_path / "state")
    assert len(read_table(url, feedback)) == len(payloads)
    assert sum(r["successes"] + r["failures"] for r in state.values()) == len(payloads)
    assert {a["arm"]: (a["successes"], a["failures"]) for a in policy["arms"]} == {
        arm: (r["successes"], r["failures"]) for arm, r in state.items()}
