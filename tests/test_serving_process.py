"""The service as users run it: ``recbandits serve`` under uvicorn, two workers, restarted.

Runs on SQLite and on a PostgreSQL the tests start on loopback. Process start-up dominates the
cost, so one test per store covers both the concurrency and the restart requirements.
"""

from __future__ import annotations

from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import httpx
import pytest
import sqlalchemy as sa
from test_serving_support import ServiceProcess, store_url

from experiments.cli import main as cli_main
from serving.store.tables import arm_state, decisions, feedback

pytestmark = pytest.mark.slow

ARMS = "svd,autoencoder,popularity"
ENV = {"RECBANDITS_SYNTHETIC_USERS": "120", "RECBANDITS_SYNTHETIC_ITEMS": "200",
       "RECBANDITS_SYNTHETIC_RATINGS": "3000", "RECBANDITS_REFRESH_INTERVAL_S": "0.05"}


def serve_args(tmp_path: Path, url: str) -> list[str]:
    return ["--dataset", "synthetic", "--arms", ARMS, "--seed", "1",
            "--state-dir", str(tmp_path / "state"), "--db", url]


@pytest.mark.parametrize("backend", ["sqlite", "postgresql"])
def test_two_workers_lose_no_feedback_and_a_restart_keeps_state(
        backend: str, tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    url = store_url(backend, tmp_path)
    server = ServiceProcess([*serve_args(tmp_path, url), "--workers", "2"], ENV,
                            tmp_path / "server.log")
    try:
        with httpx.Client(base_url=server.base, timeout=30) as client:
            slates = [client.get("/recommendations", params={"user_id": u, "k": 4}).json()
                      for u in range(1, 61)]
        payloads = []
        for i, slate in enumerate(slates):
            for j, item in enumerate(slate["items"][:3]):
                kind = ("like", "dislike", "click")[(i + j) % 3]
                payloads.append({"user_id": slate["user_id"], "movie_id": item["movie_id"],
                                 "feedback_type": kind, "event_id": slate["event_id"]})

        def send(payload: dict) -> int:
            with httpx.Client(base_url=server.base, timeout=30) as c:
                return c.post("/feedback", json=payload).status_code

        # Every payload twice, interleaved, from 8 concurrent clients over fresh connections
        # (so both workers take a share).
        with ThreadPoolExecutor(8) as pool:
            statuses = list(pool.map(send, payloads + payloads[::-1]))
        before = httpx.get(f"{server.base}/policy").json()
    finally:
        server.stop()
    assert statuses.count(201) == len(payloads) == 180
    assert statuses.count(200) == len(payloads)

    engine = sa.create_engine(url)
    with engine.connect() as conn:
        counted = conn.execute(sa.select(feedback.c.arm, feedback.c.reward)
                               .where(feedback.c.counted)).all()
        n_feedback = conn.execute(sa.select(sa.func.count()).select_from(feedback)).scalar_one()
        n_decisions = conn.execute(sa.select(sa.func.count())
                                   .select_from(decisions)).scalar_one()
        state = {r.arm: r for r in conn.execute(sa.select(arm_state))}
    engine.dispose()
    assert n_feedback == len(counted) == 180 and n_decisions == 60
    for arm, row in state.items():
        assert row.successes == sum(1 for a, r in counted if a == arm and r == 1.0), arm
        assert row.failures == sum(1 for a, r in counted if a == arm and r == 0.0), arm
    assert sum(r.pulls for r in state.values()) == 60
    assert sum(a["successes"] + a["failures"] for a in before["arms"]) == 180

    # Restarted (one worker this time): the same posterior, and serving goes on.
    server = ServiceProcess(serve_args(tmp_path, url), ENV, tmp_path / "server.log")
    try:
        assert httpx.get(f"{server.base}/policy").json() == before
        body = httpx.get(f"{server.base}/recommendations", params={"user_id": 1}).json()
        assert body["policy_version"] == 1
        assert not {i["movie_id"] for i in body["items"]} & {
            p["movie_id"] for p in payloads if p["user_id"] == 1}
    finally:
        server.stop()

    capsys.readouterr()
    code = cli_main(["rebuild-state", "--db", url, "--arms", ARMS,
                     "--state-dir", str(tmp_path / "state")])
    out = capsys.readouterr().out
    assert code == 0, out
    assert "match: yes" in out
