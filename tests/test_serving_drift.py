"""Drift in the service (:mod:`serving.drift`): sliding-window rates and a change detector per
arm, a fold of the outcome stream: alarms after a change and not before, the same on two
workers, in ``/metrics`` and ``GET /policy``, and replayed by rebuild-state.
"""

from __future__ import annotations

import io
import logging
import time
from pathlib import Path

import numpy as np
import pytest
from fastapi.testclient import TestClient
from pydantic import ValidationError
from test_serving_support import store_url

from arms.data import make_synthetic
from bandits.drift import PageHinkley
from serving.app import create_app
from serving.commands import rebuild_state
from serving.drift import DriftMonitor, replay
from serving.settings import Settings
from serving.store.types import Outcome

ARMS = ["svd", "popularity"]
TOKEN = "drift-token"


def _stream(seed: int, n_before: int, n_after: int) -> list[Outcome]:
    """Two arms observed alternately at rate 0.7; popularity's rate drops to 0.2 after
    ``n_before`` observations of each arm."""
    rng = np.random.default_rng(seed)
    rows = []
    for t in range(2 * (n_before + n_after)):
        arm = ARMS[t % 2]
        p = 0.2 if arm == "popularity" and t >= 2 * n_before else 0.7
        rows.append(Outcome(t + 1, f"e{t}", arm, float(rng.random() < p)))
    return rows


@pytest.mark.parametrize("detector", ["PageHinkley", "CUSUM"])
def test_an_arm_whose_rate_drops_alarms_after_the_change_and_not_before(detector: str) -> None:
    # 300 observations of each arm before the change: the lab's stationary false-alarm rate
    # (about 0.1 per 1,000 steps over 4 arms, i.e. per ~1,000 observations) makes a false
    # alarm in 600 observations a ~5% event per stream, so at most 3 of 20 streams may have
    # one; a detector that alarms at random, or on the wrong arm, fails that.
    n_before, n_after = 300, 300
    change = 2 * n_before  # seq of the last outcome before the change
    bound = PageHinkley(ARMS).delay_bound(0.5, n_before) if detector == "PageHinkley" else (
        DriftMonitor(ARMS, "CUSUM").detector.delay_bound(0.5, n_before))  # type: ignore[union-attr]
    early, delays = 0, []
    for seed in range(20):
        monitor = DriftMonitor(ARMS, detector)
        alarms = monitor.fold(_stream(seed, n_before, n_after))
        early += any(a["seq"] <= change for a in alarms)
        after = [a for a in alarms if a["arm"] == "popularity" and a["seq"] > change]
        assert after, f"seed {seed}: no alarm of popularity after its drop ({alarms})"
        delays.append((after[0]["seq"] - change) / 2)  # in popularity's observations
        assert after[0]["statistic"] > after[0]["threshold"]
        assert monitor.alarm_counts()["popularity"] >= 1
    assert early <= 3
    # Detected within twice the mean delay bound of a 0.5 shift every time.
    assert max(delays) < 2 * bound, (delays, bound)
    # The sliding windows hold the new level.
    rates = monitor.window_rates()
    assert rates["popularity"][100][0] == 100 and rates["popularity"][100][1] < 0.35
    assert rates["svd"][1000][0] == n_before + n_after


def test_the_monitor_is_a_fold_however_the_stream_is_chunked() -> None:
    rows = _stream(0, 300, 300)
    whole = DriftMonitor(ARMS)
    whole.fold(rows)
    chunked = DriftMonitor(ARMS)
    for i in range(0, len(rows), 37):
        chunked.fold(rows[max(0, i - 5):i + 37])  # overlapping chunks: folded rows skipped
    assert chunked.state() == whole.state() and chunked.digest() == whole.digest()
    assert replay(DriftMonitor(ARMS), reversed(rows)).digest() == whole.digest()
    assert replay(DriftMonitor(ARMS), rows, upto=600).seq == 600


def test_bad_drift_settings_are_refused() -> None:
    with pytest.raises(ValidationError, match="drift_detector"):
        Settings(arms=ARMS, drift_detector="ADWIN")
    with pytest.raises(ValidationError, match="drift_threshold"):
        Settings(arms=ARMS, drift_threshold=0)
    with pytest.raises(ValidationError, match="drift_windows"):
        Settings(arms=ARMS, drift_windows="100,0")
    with pytest.raises(ValueError, match="drift_detector='x'"):
        DriftMonitor(ARMS, "x")
    assert Settings(arms=ARMS, drift_detector="CUSUM").drift_monitor().detector.threshold == 16


@pytest.mark.parametrize("backend", ["sqlite", "postgresql"])
def test_two_workers_report_the_same_alarm_and_rebuild_state_replays_it(
        tmp_path: Path, backend: str, caplog: pytest.LogCaptureFixture) -> None:
    settings = Settings(state_dir=tmp_path / "state", db=store_url(backend, tmp_path),
                        arms=ARMS, seed=2, admin_token=TOKEN, refresh_interval_s=0.05,
                        drift_windows="10,50")
    catalog = make_synthetic(40, 60, 800, random_state=0)
    auth = {"Authorization": f"Bearer {TOKEN}"}
    liked = 0
    first_drop = None
    with caplog.at_level(logging.WARNING, logger="serving.drift"), \
            caplog.at_level(logging.INFO, logger="serving.service"), \
            TestClient(create_app(settings, catalog=catalog)) as a:
        service = a.app.state.service
        # popularity's decisions are liked 60 times, then disliked: its reward rate drops
        # from 1 to 0; svd's are disliked throughout (a constant stream: no alarm).
        for i in range(400):
            body = a.get("/recommendations", params={"user_id": 1 + i % 30, "k": 3}).json()
            like = body["arm"] == "popularity" and liked < 60
            liked += like
            response = a.post("/feedback", json={
                "user_id": body["user_id"], "movie_id": body["items"][0]["movie_id"],
                "feedback_type": "like" if like else "dislike", "event_id": body["event_id"]})
            assert response.status_code == 201
            # Settled at once (its window closed, as the sweep sees it): the drift monitor
            # folds a decision's outcome at its settlement.
            service.store.settle_expired(time.time() + settings.reward_window_s + 1, 0.0,
                                         service.rules)
            service.refresh()
            if first_drop is None and liked == 60 and not like and body["arm"] == "popularity":
                first_drop = service.snapshot.seq
            if service.drift.alarm_counts()["popularity"] and i % 10 == 9:
                break
        view_a = a.get("/policy").json()["drift"]
        metrics = a.get("/metrics").text
        with TestClient(create_app(settings, catalog=catalog)) as b:  # a second worker
            view_b = b.get("/policy").json()["drift"]
            state_b = b.get("/admin/live-state", headers=auth).json()["drift"]
        state_a = a.get("/admin/live-state", headers=auth).json()["drift"]
        rebuilt = rebuild_state(settings, service=a)
        out = io.StringIO(str(rebuilt))
        assert rebuilt.exit_code == 0, out.getvalue()
    assert first_drop is not None
    by_arm = {r["arm"]: r for r in view_a["arms"]}
    assert by_arm["popularity"]["alarms"] == 1 and by_arm["svd"]["alarms"] == 0
    alarm = by_arm["popularity"]["last_alarms"][0]
    assert alarm["seq"] >= first_drop  # after the change, not before
    assert alarm["statistic"] > alarm["threshold"] == 23.0
    assert by_arm["popularity"]["window_rates"]["10"] == 0.0
    # The second worker folded the same log: the same alarms at the same position.
    assert state_b["log_seq"] == state_a["log_seq"]
    assert state_b["alarms"] == state_a["alarms"] == {"svd": 0, "popularity": 1}
    assert state_b["digest"] == state_a["digest"]
    assert [r["last_alarms"] for r in view_b["arms"]] == [r["last_alarms"]
                                                           for r in view_a["arms"]]
    # Logged once, by the worker whose fold raised it: the arm, the statistic and the log
    # position. The second worker, started after it, says the log holds it in one INFO line
    # (its catch-up logged every old alarm again at each restart: found by attack).
    lines = [r.getMessage() for r in caplog.records if "drift alarm" in r.getMessage()]
    assert len(lines) == 1 and all("arm popularity, PageHinkley statistic" in m
                                   and f"log position {alarm['seq']}" in m for m in lines)
    held = [r.getMessage() for r in caplog.records if "holds 1 alarm(s)" in r.getMessage()]
    assert len(held) == 1 and "{'popularity': 1}" in held[0] and "logged when" in held[0]
    assert 'recbandits_drift_alarms{arm="popularity"} 1.0' in metrics
    assert 'recbandits_drift_alarms{arm="svd"} 0.0' in metrics
    assert 'recbandits_arm_window_reward_rate{arm="popularity",window="10"} 0.0' in metrics
    assert 'recbandits_arm_window_outcomes{arm="popularity",window="50"} 50.0' in metrics
    assert "recbandits_drift_statistic" in metrics
    text = out.getvalue()
    assert "drift: PageHinkley" in text and "'popularity': 1" in text
    assert "; match yes (worker at" in text


def test_after_a_purge_every_drift_fold_starts_at_the_snapshot(tmp_path: Path) -> None:
    from test_serving_purge import (
        HOUR,
        make_settings,
        run_purge,
        settle_all,
        traffic,
        worker,
    )

    from serving.armset import fit_arms

    catalog = make_synthetic(120, 200, 3000, random_state=4)
    settings = make_settings(tmp_path, drift_windows="5,20")
    fitted = fit_arms(settings.arms, catalog, seed=0)
    rng = np.random.default_rng(0)
    auth = {"authorization": f"Bearer {settings.admin_token.get_secret_value()}"}
    with worker(settings, catalog, fitted) as running:
        service = running.app.state.service
        traffic(running, rng, 30)
        settle_all(running)
        service.refresh()
        before = service.drift
        assert before.start == 0 and sum(before.folded.values()) > 0
        run_purge(settings, catalog, time.time() + 4 * HOUR)
        traffic(running, rng, 10)
        settle_all(running)
        service.refresh()  # sees the snapshot: the monitor restarts there
        mark = service.store.fold_mark()
        assert mark > 0 and service.drift.start == mark
        # at the last settlement (the drift monitor's stream is the settled decisions')
        assert service.drift.seq == service.store.settled_after(mark)[-1].seq > mark
        state = running.get("/admin/live-state", headers=auth).json()["drift"]
        rebuilt = rebuild_state(settings, service=running)
        out = io.StringIO(str(rebuilt))
        assert rebuilt.exit_code == 0, out.getvalue()
        assert f"replayed from log position {mark} to {state['log_seq']}" in out.getvalue()
        assert "; match yes (worker at" in out.getvalue()
    with worker(settings, catalog, fitted) as restarted:  # starts at the snapshot too
        again = restarted.get("/admin/live-state", headers=auth).json()["drift"]
    assert again == state


@pytest.mark.parametrize("backend", ["sqlite", "postgresql"])
def test_rebuild_state_compares_with_a_worker_on_the_same_store_spelt_another_way(
        tmp_path: Path, backend: str, monkeypatch: pytest.MonkeyPatch) -> None:
    """Found by attack: the same store spelt postgresql:// (or with ?password=, or a relative
    SQLite path) was "another store" to rebuild-state, which compared nothing and said
    "match: yes"; it compares the store's identity now, not its URL's text."""
    url = store_url(backend, tmp_path)
    settings = Settings(state_dir=tmp_path / "state", db=url, arms=ARMS, seed=2,
                        admin_token=TOKEN, refresh_interval_s=0.05)
    if backend == "sqlite":
        monkeypatch.chdir(tmp_path)
        other = "sqlite:///./store.db"
    else:
        other = url.replace("postgresql+psycopg://", "postgresql://") + "?password=unused"
    catalog = make_synthetic(40, 60, 800, random_state=0)
    with TestClient(create_app(settings, catalog=catalog)) as running:
        for i in range(20):
            body = running.get("/recommendations", params={"user_id": 1 + i, "k": 3}).json()
            running.post("/feedback", json={"user_id": body["user_id"],
                                            "movie_id": body["items"][0]["movie_id"],
                                            "feedback_type": "like", "event_id": body["event_id"]})
        running.app.state.service.refresh()
        text = str(rebuild_state(settings.model_copy(update={"db": other}), service=running))
    assert "serves another store" not in text
    assert "; match yes (worker at" in text, text


def test_a_constant_click_rate_raises_no_alarm_whatever_the_timing_of_its_rewards(
        tmp_path: Path) -> None:
    """Found by attack: a like decides its decision at once, a decision without feedback gets
    its 0 from the sweep a window later; folded as decided, each arm's stream ran ahead in 1s
    and caught up in a batch of 0s at each sweep, and the detector alarmed (9 alarms at a
    constant click rate of 0.4, the windows reading the last sweep's 0s). Folded at
    settlement, in the order the decisions were made, the stream is the clicks' own."""
    settings = Settings(state_dir=tmp_path / "state", db=store_url("sqlite", tmp_path),
                        arms=ARMS, seed=3, refresh_interval_s=3600.0)
    catalog = make_synthetic(40, 60, 800, random_state=0)
    rng = np.random.default_rng(7)
    with TestClient(create_app(settings, catalog=catalog)) as client:
        service = client.app.state.service
        for _ in range(2):  # two bursts, each settled by one sweep afterwards
            for i in range(300):
                body = client.get("/recommendations", params={"user_id": 1 + i % 40,
                                                               "k": 3}).json()
                if rng.random() < 0.4:  # every arm's slates clicked at the same rate
                    assert client.post("/feedback", json={
                        "user_id": body["user_id"], "movie_id": body["items"][0]["movie_id"],
                        "feedback_type": "like", "event_id": body["event_id"]}
                    ).status_code == 201
            service.refresh()
            service.store.settle_expired(time.time() + settings.reward_window_s + 1, 0.0,
                                         service.rules)
            service.refresh()
        view = {a["arm"]: a for a in client.get("/policy").json()["drift"]["arms"]}
    assert sum(a["outcomes"] for a in view.values()) == 600
    assert all(a["alarms"] == 0 for a in view.values()), view
    for arm in view.values():  # the window holds the arm's clicks, not the last sweep's 0s
        assert 0.2 < arm["window_rates"]["100"] < 0.6, view


@pytest.mark.parametrize("backend", ["sqlite", "postgresql"])
def test_an_older_store_gains_the_settlement_position_and_its_index(
        tmp_path: Path, backend: str) -> None:
    import sqlalchemy as sa

    from serving.store import open_store

    url = store_url(backend, tmp_path)
    store = open_store(url)
    try:
        store.create_schema(ARMS)
        with store.write_engine.begin() as conn:  # as a store from before settled_seq
            conn.exec_driver_sql("DROP INDEX ix_decisions_settled_seq")
            conn.exec_driver_sql("ALTER TABLE decisions DROP COLUMN settled_seq")
        store.create_schema(ARMS)  # a worker's start upgrades it
        assert "settled_seq" in {c["name"] for c in sa.inspect(store.write_engine)
                                 .get_columns("decisions")}
        with store.write_engine.connect() as conn:
            names = {r[0] for r in conn.exec_driver_sql(
                "SELECT name FROM sqlite_master WHERE type = 'index'" if backend == "sqlite"
                else "SELECT indexname FROM pg_indexes WHERE tablename = 'decisions'")}
        assert "ix_decisions_settled_seq" in names
        assert store.settled_after(0) == []
    finally:
        store.dispose()


def test_a_multileaved_decisions_arms_share_their_settlement_and_are_all_folded() -> None:
    """Review: the arms of one multileaved decision share one settlement position; a fold that
    skipped by position as it went dropped the second arm (window sizes 1 and 0)."""
    monitor = DriftMonitor(["a", "b"], windows=(10,))
    monitor.fold([Outcome(5, "e1", "a", 1.0), Outcome(5, "e1", "b", 0.0)])
    assert monitor.folded == {"a": 1, "b": 1} and monitor.seq == 5
    monitor.fold([Outcome(5, "e1", "a", 1.0), Outcome(6, "e2", "b", 1.0)])  # 5 is folded
    assert monitor.folded == {"a": 1, "b": 2} and monitor.seq == 6


def test_silencing_the_alarms_of_one_thread_leaves_the_others_logged(
        caplog: pytest.LogCaptureFixture) -> None:
    """Review: the replay switched the module's logger off, so an alarm another thread raised
    meanwhile (another worker's refresh, in one process) was lost."""
    import threading

    from serving.drift import alarms_silenced, logger

    inside, done = threading.Event(), threading.Event()

    def quiet() -> None:
        with alarms_silenced():
            logger.warning("drift alarm: from the silenced thread")
            inside.set()
            done.wait(10)

    thread = threading.Thread(target=quiet)
    with caplog.at_level(logging.WARNING, logger="serving.drift"):
        thread.start()
        inside.wait(10)
        logger.warning("drift alarm: from another thread, meanwhile")
        done.set()
        thread.join(10)
    said = [r.getMessage() for r in caplog.records]
    assert said == ["drift alarm: from another thread, meanwhile"]


@pytest.mark.parametrize("backend", ["sqlite", "postgresql"])
def test_an_older_store_s_settled_decisions_reach_the_drift_fold_after_the_upgrade(
        tmp_path: Path, backend: str) -> None:
    """The column came empty: the decisions an older store settled were in no drift fold,
    ever. The upgrade numbers them in deadline order after the log's head; a worker's monitor
    folds them at start, as rebuild-state's replay does."""
    import sqlalchemy as sa

    settings = Settings(state_dir=tmp_path / "state", db=store_url(backend, tmp_path),
                        arms=ARMS, seed=3, refresh_interval_s=3600.0, admin_token=TOKEN)
    catalog = make_synthetic(40, 60, 800, random_state=0)
    with TestClient(create_app(settings, catalog=catalog)) as client:
        service = client.app.state.service
        for i in range(30):
            body = client.get("/recommendations", params={"user_id": 1 + i, "k": 3}).json()
            if i % 3 == 0:
                assert client.post("/feedback", json={
                    "user_id": body["user_id"], "movie_id": body["items"][0]["movie_id"],
                    "feedback_type": "like", "event_id": body["event_id"]}).status_code == 201
        service.store.settle_expired(time.time() + settings.reward_window_s + 1, 0.0,
                                     service.rules)
        store = service.store
        with store.write_engine.connect() as conn:
            deadlines = [r[0] for r in conn.execute(sa.text(
                "SELECT event_id FROM decisions ORDER BY reward_deadline, event_id"))]
        with store.write_engine.begin() as conn:  # as a store from before settled_seq
            conn.exec_driver_sql("DROP INDEX ix_decisions_settled_seq")
            conn.exec_driver_sql("ALTER TABLE decisions DROP COLUMN settled_seq")
            head = conn.exec_driver_sql("SELECT seq FROM log_head").scalar_one()
    with TestClient(create_app(settings, catalog=catalog)) as client:  # upgrades the store
        service = client.app.state.service
        settled = service.store.settled_after(0)
        assert [o.event_id for o in settled] == deadlines  # in the sweep's order
        assert [o.seq for o in settled] == list(range(head + 1, head + 31))
        assert sum(o.reward for o in settled) == 10
        service.refresh()
        view = client.get("/policy").json()["drift"]
        assert sum(a["outcomes"] for a in view["arms"]) == 30
        text = str(rebuild_state(settings, service=client))
    assert "match: yes" in text and "; match yes (worker at" in text, text
