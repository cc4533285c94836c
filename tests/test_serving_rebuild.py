"""``recbandits rebuild-state`` against a running worker (issue 13/15, review 4 findings 3-6):
every derived state compared up to the worker's position within the rows read, the live
policy compared as the shadow is, the drift replay with the worker's drift settings, and a
contextual shadow of a context-free policy after a purge.

In process (FastAPI's TestClient) on SQLite, and PostgreSQL for the worker comparisons, with
the fixtures of :mod:`test_serving_versions` and :mod:`test_serving_purge`.
"""

from __future__ import annotations

import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import test_serving_versions
from fastapi.testclient import TestClient
from test_serving_purge import HOUR, run_purge, settle_all
from test_serving_purge import make_settings as purge_settings
from test_serving_purge import traffic as purge_traffic
from test_serving_purge import worker as purge_worker
from test_serving_versions import make_settings, traffic, worker

from arms.data import make_synthetic
from arms.data.dataset import Dataset
from serving.app import create_app
from serving.armset import fit_arms
from serving.commands import rebuild_state
from serving.drift import DriftMonitor, check_replay
from serving.settings import Settings
from serving.store.types import Outcome


@pytest.fixture(scope="module")
def catalog() -> Dataset:
    """test_serving_versions' catalogue (its fixture's function)."""
    return test_serving_versions.catalog.__wrapped__()


@pytest.fixture(scope="module")
def fitted(catalog: Dataset) -> dict:
    """test_serving_versions' fitted arms (its fixture's function)."""
    return test_serving_versions.fitted.__wrapped__(catalog)


def lines_of(text: str, prefix: str) -> list[str]:
    """The report's lines starting (after indentation) with ``prefix``."""
    return [line.strip() for line in text.splitlines() if line.strip().startswith(prefix)]


@pytest.mark.parametrize("backend", ["sqlite", "postgresql"])
def test_worker_positions_are_asked_before_the_rows_are_read(
        backend: str, tmp_path: Path, catalog, fitted, monkeypatch: pytest.MonkeyPatch) -> None:
    """Traffic folded by the worker between rebuild-state's read of the log and its questions
    to the worker gave a false drift "match NO": the worker is now asked first, so its
    position lies within the rows read and every comparison matches."""
    settings = make_settings(tmp_path, backend, gate_enabled=False)
    with worker(settings, catalog, fitted) as client:
        service = client.app.state.service
        traffic(client, range(1, 21))
        service.refresh()
        real = type(service.store).log_rows

        def rows_then_traffic(self, *args, **kwargs):
            rows = real(self, *args, **kwargs)
            traffic(client, range(21, 41))  # live traffic while rebuild-state runs
            service.refresh()
            return rows

        monkeypatch.setattr(type(service.store), "log_rows", rows_then_traffic)
        rebuilt = rebuild_state(settings, service=client)
    text = str(rebuilt)
    assert rebuilt.exit_code == 0, text
    (drift,) = lines_of(text, "drift:")
    assert "match yes" in drift
    # The worker answered at 20 decisions' outcomes; the rows read hold exactly those.
    (live,) = lines_of(text, "live ThompsonSampling")
    assert "match yes" in live and "20 outcomes folded" in live


@pytest.mark.parametrize("backend", ["sqlite", "postgresql"])
def test_the_live_policy_is_compared_with_the_worker(backend: str, tmp_path: Path, catalog,
                                                     fitted) -> None:
    """A worker whose live posterior differs from the fold of the log (here discounted by
    hand, as a switch applied twice would) is a mismatch; an honest one matches; without a
    token, or for a shadow the worker does not run, nothing is compared and the line says
    why."""
    settings = make_settings(tmp_path, backend, gate_enabled=False)
    with worker(settings, catalog, fitted) as client:
        service = client.app.state.service
        traffic(client, range(1, 41))
        service.refresh()
        honest = rebuild_state(settings, service=client)
        untokened = rebuild_state(settings.model_copy(update={"admin_token": None}),
                                  service=client)
        # Settings naming a shadow the worker does not run: the shadow line says so.
        unshadowed = rebuild_state(settings.model_copy(update={"shadow_policy": "UCB1"}),
                                   service=client)
        # Rounding of the last bits (as LinTS's ridge statistics after a discount switch,
        # folded in chunks by a worker and in one pass here) is no mismatch...
        service.snapshot.policy.discount_arms(["svd"], 1.0 - 1e-13)
        rounded = rebuild_state(settings, service=client)
        # ...a switch applied twice is.
        service.snapshot.policy.discount_arms(["svd"], 0.5)
        broken = rebuild_state(settings, service=client)
    (line,) = lines_of(str(honest), "live ThompsonSampling")
    assert honest.exit_code == 0 and "match yes" in line and "40 outcomes folded" in line
    (line,) = lines_of(str(untokened), "live ThompsonSampling")
    assert untokened.exit_code == 0
    assert "not compared (no admin token set" in line and "40 outcomes folded" in line
    (line,) = lines_of(str(unshadowed), "shadow UCB1")
    assert unshadowed.exit_code == 0
    assert "not compared (the worker at http://testserver runs no shadow policy)" in line
    (line,) = lines_of(str(rounded), "live ThompsonSampling")
    assert rounded.exit_code == 0 and "match yes" in line, str(rounded)
    (line,) = lines_of(str(broken), "live ThompsonSampling")
    assert broken.exit_code == 1 and "match NO" in line


def test_the_policies_the_worker_runs_are_folded_whatever_the_settings_ask(
        tmp_path: Path, catalog, fitted) -> None:
    """A LinTS worker with a UCB1 shadow, rebuild-state with the default settings (Thompson
    Sampling, no shadow): both of the worker's policies are folded and compared, and a
    tampered state is a mismatch. The live line said "not compared" and rebuild-state ended
    "match: yes"; the worker's shadow had no line at all."""
    settings = make_settings(tmp_path, "sqlite", gate_enabled=False, policy="LinTS",
                             shadow_policy="UCB1")
    default = settings.model_copy(update={"policy": "ThompsonSampling", "shadow_policy": None})
    with worker(settings, catalog, fitted) as client:
        service = client.app.state.service
        traffic(client, range(1, 31))
        service.refresh()
        honest = rebuild_state(default, service=client)
        service.snapshot.policy.discount_arms(["svd"], 0.5)
        broken = rebuild_state(default, service=client)
    (live,) = lines_of(str(honest), "live LinTS")
    assert honest.exit_code == 0, str(honest)
    assert "(the worker's; these settings ask ThompsonSampling {" in live
    assert "match yes" in live and "30 outcomes folded" in live
    (shadow,) = lines_of(str(honest), "shadow UCB1")
    assert "(the worker's; these settings ask none)" in shadow and "match yes" in shadow
    (live,) = lines_of(str(broken), "live LinTS")
    assert broken.exit_code == 1 and "match NO" in live
    assert str(broken).endswith("match: NO")


def test_a_worker_policy_the_replay_cannot_build_is_no_match(
        tmp_path: Path, catalog, fitted, monkeypatch: pytest.MonkeyPatch) -> None:
    """A worker of another version, whose policy has a hyper-parameter unknown here: its
    state cannot be checked, and rebuild-state does not say it matches."""
    settings = make_settings(tmp_path, "sqlite", gate_enabled=False)
    with worker(settings, catalog, fitted) as client:
        service = client.app.state.service
        traffic(client, range(1, 11))
        service.refresh()
        real = service.policy_state

        def of_another_version() -> dict:
            held = real()
            held["policy"]["params"]["gamma"] = 0.5
            return held

        monkeypatch.setattr(service, "policy_state", of_another_version)
        rebuilt = rebuild_state(settings, service=client)
    (line,) = lines_of(str(rebuilt), "live ThompsonSampling")
    assert "runs a policy this replay cannot build" in line and "'gamma'" in line, line
    assert rebuilt.exit_code == 1


def test_drift_is_replayed_with_the_worker_s_drift_settings(
        tmp_path: Path, catalog, fitted) -> None:
    """A worker started with --drift-detector CUSUM (and its own threshold and windows):
    rebuild-state run with the default settings replays CUSUM with those, and matches."""
    settings = make_settings(tmp_path, "sqlite", gate_enabled=False, drift_detector="CUSUM",
                             drift_threshold=3.0, drift_windows=[5, 50])
    with worker(settings, catalog, fitted) as client:
        traffic(client, range(1, 61))
        client.app.state.service.refresh()
        rebuilt = rebuild_state(settings.model_copy(update={
            "drift_detector": "PageHinkley", "drift_threshold": None,
            "drift_windows": [100, 1000]}), service=client)
    text = str(rebuilt)
    assert rebuilt.exit_code == 0, text
    (drift,) = lines_of(text, "drift:")
    assert drift.startswith("drift: CUSUM") and "match yes" in drift
    assert '"threshold": 3.0' in drift and '"windows": [5, 50]' in drift


def test_check_replay_takes_the_worker_s_settings_and_still_sees_another_state() -> None:
    # Each arm's reward rate moves from 1/3 to 1 half-way: CUSUM alarms.
    outcomes = [Outcome(i + 1, f"e{i}", ["a", "b"][i % 2], float(i % 3 == 0 or i >= 150))
                for i in range(300)]
    theirs = DriftMonitor(["a", "b"], "CUSUM", {"threshold": 2.0, "min_samples": 10},
                          windows=[10])
    theirs.fold(outcomes)
    assert sum(theirs.alarm_counts().values()) > 0  # a state that differs from PageHinkley's
    held = {"log_seq": theirs.seq, "start": 0, "alarms": theirs.alarm_counts(),
            "digest": theirs.digest(), "settings": theirs.settings()}
    lines, match = check_replay(DriftMonitor(["a", "b"]), outcomes, held, "http://w")
    assert match and "match yes" in lines[0] and lines[0].startswith("drift: CUSUM")
    assert "not folded" not in lines[0]
    # A worker behind the log: compared up to its position, and the line says what is after
    # it (found by attack: behind and stuck read the same).
    behind = theirs.fresh(0)
    behind.fold(outcomes[:200])
    lines, match = check_replay(DriftMonitor(["a", "b"]), outcomes, {
        **held, "log_seq": behind.seq, "alarms": behind.alarm_counts(),
        "digest": behind.digest()}, "http://w")
    assert match and "match yes" in lines[0], lines[0]
    assert ("the log holds 100 settled outcomes after the worker's position 200, up to 300: "
            "not folded by it yet") in lines[0]
    # Another state under the same settings is still a mismatch.
    lines, match = check_replay(DriftMonitor(["a", "b"]), outcomes[:-1],
                                {**held, "log_seq": theirs.seq}, "http://w")
    assert not match and "match NO" in lines[0]
    # Settings the replay cannot build: not compared, and says why.
    bad = {**held, "settings": {**theirs.settings(), "detector": "Bayesian"}}
    lines, match = check_replay(DriftMonitor(["a", "b"]), outcomes, bad, "http://w")
    assert match and "not compared" in lines[0] and "Bayesian" in lines[0]


@contextmanager
def purged(tmp_path: Path, **options: object) -> Iterator[tuple[Settings, Any]]:
    """A worker of ``purge_settings(tmp_path, **options)`` and those settings: 20 slates with
    events, settled, all purged, then 5 more, settled and folded (by hand in these settings).
    """
    cat = make_synthetic(120, 200, 3000, random_state=4)
    settings = purge_settings(tmp_path, **options)
    fit = fit_arms(settings.arms, cat, seed=0)
    rng = np.random.default_rng(0)
    with purge_worker(settings, cat, fit) as running:
        purge_traffic(running, rng, 20)
        settle_all(running)
        run_purge(settings, cat, time.time() + 4 * HOUR)
        purge_traffic(running, rng, 5)
        settle_all(running)
        running.app.state.service.refresh()
        yield settings, running


def test_a_contextual_shadow_of_a_context_free_policy_after_a_purge(tmp_path: Path) -> None:
    """The fold snapshot holds Thompson Sampling's state (no n_features): the LinTS shadow's
    dimension comes from the logged contexts, and both policies match the worker's."""
    with purged(tmp_path, shadow_policy="LinTS") as (settings, running):
        rebuilt = rebuild_state(settings, service=running)
    text = str(rebuilt)
    assert rebuilt.exit_code == 0, text
    (line,) = lines_of(text, "live ThompsonSampling")
    assert "match yes" in line and "5 outcomes folded from the fold snapshot at" in line
    # The shadow starts afresh at the snapshot: its line said "from the fold snapshot" too
    # (found by attack).
    (line,) = lines_of(text, "shadow LinTS")
    assert "match yes" in line and "5 outcomes folded after the fold snapshot at" in line
    assert line.endswith(", from a fresh policy)")


def test_a_worker_at_the_purge_s_position_restarts_its_shadow_there(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """Found by attack: a worker that had folded up to the log head when a purge recorded its
    fold snapshot there was not behind it, so its shadow kept the purged outcomes, while
    rebuild-state (and a starting worker) start the shadow afresh at the snapshot: match NO
    once traffic went on."""
    cat = make_synthetic(120, 200, 3000, random_state=4)
    settings = purge_settings(tmp_path, shadow_policy="UCB1")
    fit = fit_arms(settings.arms, cat, seed=0)
    rng = np.random.default_rng(0)
    with purge_worker(settings, cat, fit) as running:
        service = running.app.state.service
        purge_traffic(running, rng, 20)
        settle_all(running)
        service.refresh()
        # The purge reads the head where the worker's fold stands (the rows after it were
        # logged after that read: the same log, by its commit order).
        store_class = type(service.store)
        real_head = store_class.log_seq
        with monkeypatch.context() as patched:
            patched.setattr(store_class, "log_seq",
                            lambda self: min(real_head(self), service.snapshot.seq))
            run_purge(settings, cat, time.time() + 4 * HOUR)
        assert service.store.fold_mark() == service.snapshot.seq
        purge_traffic(running, rng, 5)
        settle_all(running)
        service.refresh()
        rebuilt = rebuild_state(settings, service=running)
    text = str(rebuilt)
    (line,) = lines_of(text, "shadow UCB1")
    assert "match yes" in line and "5 outcomes folded after the fold snapshot at" in line, text
    assert rebuilt.exit_code == 0, text


def test_a_purged_log_is_checked_under_its_fold_snapshot_s_policy(tmp_path: Path) -> None:
    """Found by attack: after a purge under LinTS, rebuild-state with other settings (the
    defaults) exited 1 ("a purged log can only be folded further under the policy it was
    folded with"), though the worker runs exactly the snapshot's policy; the header named
    the settings' policy, not the one folded."""
    with purged(tmp_path, policy="LinTS") as (settings, running):
        defaults = settings.model_copy(update={"policy": "ThompsonSampling"})
        rebuilt = rebuild_state(defaults, service=running)
        alone = rebuild_state(defaults.model_copy(update={"admin_token": None}),
                              service=running)  # no worker asked: the snapshot says it
    text = str(rebuilt)
    assert rebuilt.exit_code == 0, text
    assert "policy: LinTS folded over the outcomes" in text
    (line,) = lines_of(text, "live LinTS")
    assert "(the fold snapshot's; these settings ask ThompsonSampling {" in line
    assert "match yes" in line and "5 outcomes folded from the fold snapshot at" in line
    assert alone.exit_code == 0 and "policy: LinTS folded" in str(alone)


def test_outcomes_of_an_arm_no_longer_served_are_said(tmp_path: Path, catalog: Dataset) -> None:
    """Found by a README check: after ``serve`` with another arm set, an arm dropped from it
    showed 0 outcomes in rebuild-state's table though the log holds its outcomes (the live
    policy does not fold them). They are counted now, by why."""
    three = make_settings(tmp_path, "sqlite", arms=["svd", "random", "popularity"],
                          gate_enabled=False)
    with TestClient(create_app(three, catalog=catalog)) as client:
        served = []
        for user in range(1, 41):
            body = client.get("/recommendations", params={"user_id": user, "k": 5}).json()
            served.append(body["arm"])
            assert client.post("/feedback", json={
                "user_id": user, "event_id": body["event_id"],
                "movie_id": body["items"][0]["movie_id"], "feedback_type": "like"},
            ).status_code == 201
    dropped = served.count("random")
    assert 0 < dropped < 40
    two = three.model_copy(update={"arms": ["svd", "popularity"]})
    with TestClient(create_app(two, catalog=catalog)) as client:  # a new version at start
        assert client.app.state.service.arm_set.version == 2
    rebuilt = rebuild_state(two)
    text = str(rebuilt)
    assert rebuilt.exit_code == 0, text
    assert (f"outcomes the policy does not fold: {dropped} ({dropped}: arm random not in the "
            "policy)") in text
    (row,) = lines_of(text, "random ")
    assert row.split()[1:4] == [str(dropped)] * 2 + ["0"]  # pulls stored and replayed; folded 0
