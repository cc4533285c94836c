"""Model versions (issue 15, :mod:`serving.versions`): the gated retrain, the versions table,
promotion and rollback, and the posterior across versions as part of the fold of the log.

In process (FastAPI's TestClient) on SQLite and on PostgreSQL, with SVD and live popularity
fitted on a small synthetic dataset; one slow test runs two ``recbandits serve`` workers under
a request loop through a retrain and a rollback.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import httpx2
import numpy as np
import pytest
import sqlalchemy as sa
from fastapi.testclient import TestClient
from test_serving_support import (
    ADMIN_TOKEN,
    ServiceProcess,
    fold_stats,
    store_url,
    wait_for_workers,
)

from arms.data import make_synthetic
from arms.data.dataset import Dataset
from serving import versions
from serving.app import create_app
from serving.armset import arms_folder, arms_lock, fit_arms, save_arms
from serving.commands import models as models_command
from serving.commands import rebuild_state
from serving.results import CommandError
from serving.retrain_trigger import RetrainTrigger
from serving.settings import Settings
from serving.store import open_store
from serving.store.tables import model_versions

ARMS = ["svd", "popularity"]
AUTH = {"Authorization": f"Bearer {ADMIN_TOKEN}"}


@pytest.fixture(scope="module")
def catalog() -> Dataset:
    """Synthetic ratings with shuffled (seeded) times, so that the gate's hold-out holds
    events of most users, as in a service where users keep coming back: on it SVD's HR@10 is
    0.25 and a random ranking's 0.16 (180 users; the paired interval of the difference lies
    below zero), as arms.gate's tests measure on a larger one.
    """
    ds = make_synthetic(200, 300, 6000, random_state=0)
    times = np.random.default_rng(0).permutation(ds.ratings["timestamp"].to_numpy())
    ratings = ds.ratings.assign(timestamp=times)
    return ds.with_ratings(ratings[["user_id", "item_id", "rating", "timestamp"]])


@pytest.fixture(scope="module")
def fitted(catalog: Dataset) -> dict:
    return fit_arms(ARMS, catalog, seed=0)


@pytest.fixture(params=["sqlite", "postgresql"])
def backend(request: pytest.FixtureRequest) -> str:
    return request.param


def make_settings(tmp_path: Path, backend: str, **options: object) -> Settings:
    return Settings(**{"state_dir": tmp_path / "state", "db": store_url(backend, tmp_path),
                       "arms": ARMS, "seed": 0, "admin_token": ADMIN_TOKEN,
                       "refresh_interval_s": 0.05, **options})


@contextmanager
def worker(settings: Settings, catalog: Dataset, fitted: dict) -> Iterator[TestClient]:
    with TestClient(create_app(settings, catalog=catalog, arms=fitted)) as client:
        yield client


def slates(client: TestClient, users: range, k: int = 10) -> dict[int, list[int]]:
    out = {}
    for user in users:
        response = client.get("/recommendations", params={"user_id": user, "k": k})
        assert response.status_code == 200, response.text
        out[user] = [i["movie_id"] for i in response.json()["items"]]
    return out


def traffic(client: TestClient, users: range) -> None:
    """A recommendation per user and a like or dislike of its first item (decided at once)."""
    for user in users:
        body = client.get("/recommendations", params={"user_id": user, "k": 5}).json()
        client.post("/feedback", json={"user_id": user, "event_id": body["event_id"],
                                        "movie_id": body["items"][0]["movie_id"],
                                        "feedback_type": ("like", "dislike")[user % 2]})


def served_version(client: TestClient) -> int:
    return client.get("/policy").json()["policy_version"]


def wait_for_version(client: TestClient, version: int, deadline_s: float = 60.0) -> None:
    service = client.app.state.service
    deadline = time.monotonic() + deadline_s
    while service.arm_set.version != version:
        assert time.monotonic() < deadline, f"still serving {service.arm_set.version}"
        service.refresh()
        time.sleep(0.02)


def policy_stats(client: TestClient) -> tuple[dict, int]:
    client.app.state.service.refresh()
    body = client.get("/admin/policy-state", headers=AUTH).json()
    return body["state"]["stats"], int(body["log_seq"])


def assert_state_is_the_fold(client: TestClient, settings: Settings) -> None:
    stats, seq = policy_stats(client)
    assert stats == fold_stats(settings.resolved_db_url(), settings, seq)
    rebuilt = rebuild_state(settings)
    assert rebuilt.exit_code == 0, str(rebuilt)
    assert "match: yes" in str(rebuilt)


# ---------------------------------------------------------------------------- the gate
def test_the_gate_rejects_a_broken_candidate_and_accepts_an_honest_refit(
        backend: str, tmp_path: Path, catalog: Dataset, fitted: dict) -> None:
    settings = make_settings(tmp_path, backend)
    with worker(settings, catalog, fitted) as client:
        service = client.app.state.service
        svd = service.arm_set.models["svd"]
        # A candidate whose "svd" ranks at random: worse beyond noise on the hold-out.
        result = versions.retrain(settings, service.store, catalog, service.arm_set.models,
                                  candidate={"svd": {"arm": "random"}})
        assert (result.status, result.version, result.policy_version) == ("rejected", 2, 1)
        assert result.reason.startswith("svd hit_rate@10") and "worse by more than" in \
            result.reason
        gate = result.gate
        assert gate is not None and gate["decision"] == "reject"
        cand, serv = gate["metrics"]["candidate"]["svd"], gate["metrics"]["serving"]["svd"]
        assert cand["hit_rate"]["value"] < serv["hit_rate"]["value"] - settings.gate_margin
        assert gate["differences"]["svd"]["hit_rate"]["high"] < 0
        # Nothing served changed: the pointer, the worker's arms, the slates.
        assert service.store.policy_meta().version == 1
        service.refresh()
        assert served_version(client) == 1 and service.arm_set.models["svd"] is svd
        rows = client.get("/admin/models", headers=AUTH).json()
        assert rows["live"] == 1
        assert [(r["version"], r["status"], r["kind"], r["arms_dir"] is None)
                for r in rows["versions"]] == [(1, "live", "start", False),
                                               (2, "rejected", "retrain", True)]
        # A rejected version has no arms to serve: promoting it is refused, naming it.
        refused = client.post("/admin/models/2/promote", headers=AUTH)
        assert refused.status_code == 409 and "model version 2 was rejected" in refused.text

        # An honest refit (the settings' hyper-parameters, with a few new events) is accepted.
        traffic(client, range(1, 11))
        response = client.post("/admin/retrain", headers=AUTH)
        assert response.status_code == 200, response.text
        body = response.json()
        assert (body["status"], body["version"], body["policy_version"]) == ("live", 3, 3)
        assert body["gate"]["decision"] == "promote" and "svd" in body["gate"]["differences"]
        assert body["reason"].startswith("no arm is worse than its serving counterpart")
        row = client.get("/admin/models/3", headers=AUTH).json()
        assert row["status"] == "live" and row["gate"]["n_holdout"] > 0
        assert row["data"]["n_ratings"] == catalog.n_ratings + body["n_feedback_ratings"]
        assert row["changed_arms"] == ["svd"]  # live popularity is never refitted
        assert client.get("/admin/models/1", headers=AUTH).json()["status"] == "retired"
        assert served_version(client) == 3


def test_the_gate_counts_positive_hold_out_events_only(tmp_path: Path, catalog: Dataset) -> None:
    """Found by attack: the gate counted every held-out event as a hit, a dislike's 1 and a
    view's 3 too, so an arm that showed disliked items scored as if they were wanted. The
    default counts ratings of at least 4 (gate_relevance), and the report says how many."""
    settings = make_settings(tmp_path, "sqlite")
    spec = {"svd": {"arm": "svd"}}
    accepted, reason, gate, _ = versions._gate(settings, catalog, spec, spec)
    assert gate is not None and gate["relevance_threshold"] == 4.0
    times = catalog.ratings["timestamp"].to_numpy()
    held = catalog.ratings[times >= gate["cut_time"]]
    assert gate["n_relevant"] <= int((held["rating"] >= 4).sum()) < len(held)
    assert (f": {gate['n_relevant']} hits (rated at least 4) of {gate['n_users']} users, scored;"
            in versions.format_gate(gate, reason))
    older = {k: v for k, v in gate.items() if k not in ("n_relevant", "relevance_threshold")}
    assert f"hold-out of {gate['n_holdout']} events of {gate['n_users']} users from" in \
        versions.format_gate(older, reason)  # a row of an older release
    # A hold-out of dislikes only: nothing to count as a hit, so nothing vouches for a
    # candidate (before, every dislike was one).
    disliked = catalog.with_ratings(catalog.ratings.assign(rating=np.where(
        times >= gate["cut_time"], 1.0, catalog.ratings["rating"])))
    accepted, reason, gate, _ = versions._gate(settings, disliked, spec, spec)
    assert not accepted and gate is None
    assert reason == ("the gate could not evaluate the candidate: no hold-out event is relevant "
                      "(relevance_threshold=4.0); nothing to score")
    every = settings.model_copy(update={"gate_relevance": 1.0})  # each event a hit, as before
    accepted, _, gate, _ = versions._gate(every, disliked, spec, spec)
    assert accepted and gate is not None and gate["relevance_threshold"] == 1.0


def test_retrain_command_prints_the_gate_and_exits_1_when_rejected(
        tmp_path: Path, catalog: Dataset, fitted: dict, monkeypatch: pytest.MonkeyPatch,
        capsys: pytest.CaptureFixture[str]) -> None:
    from serving import commands

    settings = make_settings(tmp_path, "sqlite")
    monkeypatch.setattr(commands, "load_catalog", lambda _: catalog)
    # Before any version is served, there is nothing to retrain (and nothing is created).
    nothing = commands.retrain(settings)
    assert (nothing.exit_code, str(nothing)) == (0, (
        f"nothing to retrain: no SQLite file at '{tmp_path / 'store.db'}' (serve fits and "
        "serves the first version)"))
    assert list(tmp_path.iterdir()) == []
    # A store whose first start stopped between its schema and its first fit serves nothing
    # either (found by review: retrain fitted and served version 1, then said it did nothing).
    store = open_store(settings.resolved_db_url())
    store.create_schema(settings.arms, settings.rule_book())
    store.dispose()
    nothing = commands.retrain(settings)
    assert (nothing.exit_code, str(nothing)) == (0, (
        f"nothing to retrain: {store.describe()} serves no model version yet (serve fits and "
        "serves the first)"))
    assert not (tmp_path / "state" / "arms").exists()
    with pytest.raises(commands.NothingServedError, match="serves no model version yet"):
        commands.prepare(settings, refit=False)  # what retrain turns into "nothing to retrain"
    commands.prepare(settings).store.dispose()  # what serve does at its first start
    # No event since the served version's fit, same hyper-parameters: nothing to publish.
    unchanged = commands.retrain(settings)
    assert (unchanged.exit_code, unchanged.status, unchanged.version) == (0, "unchanged", 1)
    assert str(unchanged).startswith("nothing to retrain: the training data (6000 ratings, 0 ")
    assert str(unchanged).endswith("served version 1; nothing was fitted, recorded or served; "
                                   "serving version 1")
    assert [r.version for r in versions.run(settings, "list").rows] == [1]
    # Recorded by a recbandits before retime_seed (popularity's spec without it): the same
    # arms, still nothing to retrain (found in review: it published a copy of version 1).
    engine = sa.create_engine(settings.resolved_db_url())
    with engine.begin() as conn:
        one = model_versions.c.version == 1
        arms = conn.execute(sa.select(model_versions.c.arms).where(one)).scalar_one()
        assert any("retime_seed" in spec for spec in arms.values())
        conn.execute(sa.update(model_versions).where(one).values(arms={
            name: {k: v for k, v in spec.items() if k != "retime_seed"}
            for name, spec in arms.items()}))
    engine.dispose()
    assert commands.retrain(settings).status == "unchanged"
    with worker(settings, catalog, fitted) as client:
        traffic(client, range(1, 3))
    accepted = commands.retrain(settings)
    assert accepted.exit_code == 0 and accepted.status == "live" and accepted.version == 2
    out = str(accepted)
    assert "version 2 live; serving version 2" in out and "gate: promote" in out
    assert "svd          HR@10" in out
    real = versions.retrain
    monkeypatch.setattr(versions, "retrain", lambda *a, **k: real(
        *a, **k, candidate={"svd": {"arm": "random"}}))
    rejected = commands.retrain(settings)
    assert rejected.exit_code == 1 and rejected.status == "rejected" and rejected.version == 3
    out = str(rejected)
    assert "version 3 rejected; serving version 2" in out and "gate: reject" in out


def test_retrain_command_gates_new_hyper_parameters_against_the_served_arms(
        tmp_path: Path, catalog: Dataset, fitted: dict,
        monkeypatch: pytest.MonkeyPatch) -> None:
    """``recbandits retrain`` with changed ``arm_params`` loads the served arms as they are:
    the gate compares the new svd with the served one, and the carry-over applies once (no
    ungated version of kind ``start`` before the gated one).
    """
    from serving import commands

    settings = make_settings(tmp_path, "sqlite", posterior_carryover="discount",
                             carryover_discount=0.5)
    url = settings.resolved_db_url()
    with worker(settings, catalog, fitted) as client:
        traffic(client, range(1, 41))
    before = fold_stats(url, settings)
    assert before["successes"][0] + before["failures"][0] > 0  # svd has learned something
    monkeypatch.setattr(commands, "load_catalog", lambda _: catalog)
    gated: list[tuple[dict, dict]] = []
    real_gate = versions._gate
    monkeypatch.setattr(versions, "_gate", lambda s, train, cand, serv: (
        gated.append((cand, serv)) or real_gate(s, train, cand, serv)))
    other = settings.model_copy(update={"arm_params": {"svd": {"n_factors": 4}},
                                        "gate_margin": 1.0})
    result = commands.retrain(other)
    assert (result.status, result.version, result.policy_version) == ("live", 2, 2)
    ((candidate, serving),) = gated
    assert candidate["svd"]["n_factors"] == 4
    assert serving["svd"] == versions.arm_spec("svd", fitted["svd"])
    assert serving["svd"]["n_factors"] != 4
    rows = versions.run(settings, "list").rows
    assert [(r.version, r.kind, r.status) for r in rows] == [(1, "start", "retired"),
                                                             (2, "retrain", "live")]
    after = fold_stats(url, settings)
    for key in ("successes", "failures"):
        assert after[key][0] == pytest.approx(0.5 * before[key][0])  # discounted once
        assert after[key][1] == before[key][1]  # live popularity: never refitted


def test_retrain_command_refuses_when_the_served_arms_are_missing(
        tmp_path: Path, catalog: Dataset, fitted: dict,
        monkeypatch: pytest.MonkeyPatch) -> None:
    """Nothing to gate against: ``recbandits retrain`` refuses (exit 1) rather than fit the
    missing arms ungated; ``serve``'s start still fits them again.
    """
    from serving import commands

    settings = make_settings(tmp_path, "sqlite")
    monkeypatch.setattr(commands, "load_catalog", lambda _: catalog)
    with worker(settings, catalog, fitted) as client:
        recorded = client.app.state.service.store.policy_meta().arms_dir
    folder = arms_folder(settings.resolved_state_dir(), recorded)
    (folder / "svd.npz").unlink()
    with pytest.raises(CommandError, match=f"the arms of the served version 1 are missing in "
                                           f"{folder}") as refused:
        commands.retrain(settings)
    assert refused.value.exit_code == 1
    assert "pass it as --state-dir" in str(refused.value)  # where else its arms may be
    assert [r.version for r in versions.run(settings, "list").rows] == [1]
    started = commands.prepare(settings)
    started.store.dispose()
    assert started.arm_set.version == 2


def test_a_retrain_does_not_undo_a_rollback_made_during_its_fit(
        backend: str, tmp_path: Path, catalog: Dataset, fitted: dict,
        monkeypatch: pytest.MonkeyPatch) -> None:
    """A promotion or rollback made while a retrain fits (another host's ``recbandits models
    rollback``) stands: the retrain, gated against other arms, is refused (409, nothing
    served or recorded, its saved arms removed); the next retrain is gated against the arms
    served now.
    """
    settings = make_settings(tmp_path, backend, gate_enabled=False,
                             arm_params={"svd": {"n_factors": 4}})
    arms_dir = settings.resolved_state_dir() / "arms"
    with worker(settings, catalog, fitted) as client:
        service = client.app.state.service
        traffic(client, range(1, 21))
        assert client.post("/admin/retrain", headers=AUTH).json()["version"] == 2
        folders = sorted(arms_dir.iterdir())
        real = versions.fit_candidate
        done = {}

        def fit_with_a_rollback_meanwhile(*a: object, **k: object) -> dict:
            done["rollback"] = versions.rollback(settings, service.store)
            return real(*a, **k)

        monkeypatch.setattr(versions, "fit_candidate", fit_with_a_rollback_meanwhile)
        traffic(client, range(21, 23))  # new data: a retrain that fits
        refused = client.post("/admin/retrain", headers=AUTH)
        assert refused.status_code == 409, refused.text
        assert refused.json()["detail"] == (
            "the live version is 3, not version 2 whose arms this retrain is gated against "
            "(served since: 3 (a rollback)); nothing was served or recorded: retrain again "
            "against the arms served now (a worker loads them within one refresh interval)")
        assert done["rollback"].version == 3
        rows = service.store.versions()
        assert [(r.version, r.status, r.kind) for r in rows] == [
            (1, "retired", "start"), (2, "retired", "retrain"), (3, "live", "rollback")]
        assert service.store.policy_meta().version == 3
        assert sorted(arms_dir.iterdir()) == folders
        monkeypatch.setattr(versions, "fit_candidate", real)
        # A worker still on version 2 fits nothing; once it serves 3, a retrain goes through.
        with pytest.raises(versions.ModelsError, match="nothing was fitted"):
            versions.retrain(settings, service.store, catalog, service.arm_set.models,
                             expect_live=2)
        wait_for_version(client, 3)
        body = client.post("/admin/retrain", headers=AUTH).json()
        assert (body["status"], body["version"]) == ("live", 4)
        assert_state_is_the_fold(client, settings)


def test_retrain_command_refuses_to_serve_over_a_rollback_made_during_its_fit(
        tmp_path: Path, catalog: Dataset, fitted: dict,
        monkeypatch: pytest.MonkeyPatch) -> None:
    from serving import commands

    settings = make_settings(tmp_path, "sqlite", gate_enabled=False)
    monkeypatch.setattr(commands, "load_catalog", lambda _: catalog)
    with worker(settings, catalog, fitted) as client:  # new data: each retrain fits
        traffic(client, range(1, 3))
    assert commands.retrain(settings).version == 2
    with worker(settings, catalog, fitted) as client:
        traffic(client, range(3, 5))
    real = versions.fit_candidate

    def fit_with_a_rollback_meanwhile(*a: object, **k: object) -> dict:
        models_command(settings, "rollback")
        return real(*a, **k)

    monkeypatch.setattr(versions, "fit_candidate", fit_with_a_rollback_meanwhile)
    with pytest.raises(CommandError, match="the live version is 3, not version 2") as refused:
        commands.retrain(settings)
    assert refused.value.exit_code == 1
    listed = models_command(settings, "list")
    assert listed.live == 3 and [r.version for r in listed.rows] == [1, 2, 3]


@pytest.mark.parametrize("outcome", ["rejected", "candidate"])
def test_a_retrain_whose_lease_was_taken_over_records_nothing(
        outcome: str, tmp_path: Path, catalog: Dataset, fitted: dict) -> None:
    """The rejected and candidate rows are written under the lease's guard, as a publish:
    a retrain whose lease another took (the guard raises) leaves the versions table as it was.
    """
    from serving.errors import RetrainBusyError

    @contextmanager
    def taken_over() -> Iterator[None]:
        raise RetrainBusyError("the retrain lease of x expired")
        yield  # a generator: the context manager the guard is

    settings = make_settings(tmp_path, "sqlite")
    with worker(settings, catalog, fitted) as client:
        service = client.app.state.service
        # A random svd is rejected by the gate; an honest refit saved as a candidate.
        broken = {"svd": {"arm": "random"}} if outcome == "rejected" else None
        traffic(client, range(1, 3))  # new data: the honest refit is not unchanged
        with pytest.raises(RetrainBusyError):
            versions.retrain(settings, service.store, catalog, service.arm_set.models,
                             lock=taken_over(), candidate=broken, serve=outcome == "rejected")
        assert [(r.version, r.status) for r in service.store.versions()] == [(1, "live")]


def test_a_promotion_reloads_the_rows_own_arms_whatever_the_callers_settings(
        tmp_path: Path, catalog: Dataset, fitted: dict) -> None:
    """``recbandits models promote`` run with other ``arms`` than the service's checks and
    refits the arms of the promoted version's folder, not the caller's.
    """
    settings = make_settings(tmp_path, "sqlite", gate_enabled=False,
                             arm_params={"svd": {"n_factors": 4}})
    with worker(settings, catalog, fitted) as client:
        service = client.app.state.service
        assert client.post("/admin/retrain", headers=AUTH).json()["version"] == 2
        caller = settings.model_copy(update={"arms": ["svd", "sequential", "popularity"]})
        row = versions.promote(caller, service.store, 1)
        assert (row.version, row.source_version, row.changed_arms) == (3, 1, ["svd"])
        wait_for_version(client, 3)
        assert_state_is_the_fold(client, settings)


# ---------------------------------------------------------------------------- versions
def test_rollback_restores_the_previous_slates_exactly(
        backend: str, tmp_path: Path, catalog: Dataset) -> None:
    settings = make_settings(tmp_path, backend, arms=["svd"])
    with worker(settings, catalog, fit_arms(["svd"], catalog, seed=0)) as client:
        service = client.app.state.service
        users = range(1, 21)
        before = slates(client, users)  # decisions only: no event moves any arm
        other = settings.model_copy(update={"arm_params": {"svd": {"n_factors": 4}},
                                            "gate_margin": 1.0})
        result = versions.retrain(other, service.store, catalog, service.arm_set.models)
        assert result.status == "live" and result.version == 2
        wait_for_version(client, 2)
        retrained = slates(client, users)
        assert retrained != before
        response = client.post("/admin/models/rollback", headers=AUTH)
        assert response.status_code == 200, response.text
        row = response.json()
        assert (row["version"], row["kind"], row["source_version"]) == (3, "rollback", 1)
        wait_for_version(client, 3)
        assert slates(client, users) == before
        # Decisions name the version that served them; versions only grow.
        rows = client.get("/admin/models", headers=AUTH).json()["versions"]
        assert [(r["version"], r["status"]) for r in rows] == [
            (1, "retired"), (2, "retired"), (3, "live")]
        assert "rolled back from version 2" in rows[1]["reason"]
        # Nothing earlier to go back to: version 1's arms are live, version 2 was rolled back.
        again = client.post("/admin/models/rollback", headers=AUTH)
        assert again.status_code == 409 and "nothing to roll back to" in again.text
        # Promoting version 2 serves its arms again, as version 4.
        promoted = client.post("/admin/models/2/promote", headers=AUTH).json()
        assert (promoted["version"], promoted["source_version"]) == (4, 2)
        wait_for_version(client, 4)
        assert slates(client, users) == retrained
        assert_state_is_the_fold(client, settings)


def test_rollbacks_walk_back_and_end_instead_of_bouncing_between_two_versions(
        tmp_path: Path, catalog: Dataset) -> None:
    """Three versions: the first rollback served version 2's arms, the second version 1's,
    the third version 2's again (rolled away from already), the fourth version 1's, for ever;
    the README says a rollback walks further back or says there is nothing to roll back to
    (found by attack). A promotion is a step forward, which a rollback then undoes."""
    settings = make_settings(tmp_path, "sqlite", arms=["svd"])
    with worker(settings, catalog, fit_arms(["svd"], catalog, seed=0)) as client:
        service = client.app.state.service
        for n_factors in (4, 6):  # versions 2 and 3
            other = settings.model_copy(update={"arm_params": {"svd": {"n_factors": n_factors}},
                                                "gate_margin": 1.0})
            assert versions.retrain(other, service.store, catalog,
                                    service.arm_set.models).status == "live"

        def rollback() -> tuple[int, int]:
            response = client.post("/admin/models/rollback", headers=AUTH)
            assert response.status_code == 200, response.text
            return response.json()["version"], response.json()["source_version"]

        assert rollback() == (4, 2)
        assert rollback() == (5, 1)
        again = client.post("/admin/models/rollback", headers=AUTH)
        assert again.status_code == 409 and "nothing to roll back to" in again.text
        # Promote version 3, roll it back: back to version 1's arms, then nothing.
        assert client.post("/admin/models/3/promote", headers=AUTH).json()["version"] == 6
        assert rollback() == (7, 1)
        assert client.post("/admin/models/rollback", headers=AUTH).status_code == 409
        wait_for_version(client, 7)
        assert_state_is_the_fold(client, settings)


def test_bad_versions_get_a_clear_4xx(tmp_path: Path, catalog: Dataset, fitted: dict,
                                      capsys: pytest.CaptureFixture[str]) -> None:
    settings = make_settings(tmp_path, "sqlite")
    with worker(settings, catalog, fitted) as client:
        assert client.get("/admin/models").status_code == 401
        assert client.post("/admin/models/rollback").status_code == 401
        unknown = client.get("/admin/models/99", headers=AUTH)
        assert unknown.status_code == 404
        assert unknown.json()["detail"] == "no model version 99; recorded versions: [1]"
        assert client.post("/admin/models/99/promote", headers=AUTH).status_code == 404
        live = client.post("/admin/models/1/promote", headers=AUTH)
        assert live.status_code == 409 and "model version 1 is live already" in live.text
        assert client.post("/admin/models/rollback", headers=AUTH).status_code == 409
        assert client.get("/admin/models/x", headers=AUTH).status_code == 422
        store = client.app.state.service.store
        # A promotion decided on a live version another one replaced meanwhile serves nothing.
        with pytest.raises(versions.ModelsError, match="the live version is 1 now, not 7"):
            store.serve_version(kind="promote", arms_dir="x", arms={}, data={}, gate=None,
                                reason="stale", changed_arms=[], carryover={},
                                expect_live=7)
        assert store.policy_meta().version == 1 and len(store.versions()) == 1
    # The command refuses the same (the CLI: on stderr, exit 1); list gives the table.
    with pytest.raises(CommandError, match="no model version 99") as unknown_version:
        models_command(settings, "show", 99)
    assert unknown_version.value.exit_code == 1
    listed = models_command(settings, "list")
    assert listed.exit_code == 0 and listed.live == 1 and [r.version for r in listed.rows] == [1]
    out = str(listed)
    assert "      1  live      start" in out and out.rstrip().endswith("serving version 1")
    with pytest.raises(CommandError, match="promote takes a version V, got version=None"):
        models_command(settings, "promote")


def test_a_candidate_is_saved_and_served_only_when_promoted(
        tmp_path: Path, catalog: Dataset, fitted: dict) -> None:
    settings = make_settings(tmp_path, "sqlite")
    with worker(settings, catalog, fitted) as client:
        traffic(client, range(1, 3))  # new data: the honest refit is not unchanged
        body = client.post("/admin/retrain", params={"candidate": "true"}, headers=AUTH).json()
        assert (body["status"], body["version"], body["policy_version"]) == ("candidate", 2, 1)
        row = client.get("/admin/models/2", headers=AUTH).json()
        assert row["status"] == "candidate" and row["served_seq"] is None and row["arms_dir"]
        client.app.state.service.refresh()
        assert served_version(client) == 1
        promoted = client.post("/admin/models/2/promote", headers=AUTH).json()
        assert (promoted["version"], promoted["source_version"], promoted["status"]) == (
            3, 2, "live")
        wait_for_version(client, 3)
        rows = client.get("/admin/models", headers=AUTH).json()["versions"]
        assert [(r["version"], r["status"]) for r in rows] == [
            (1, "retired"), (2, "retired"), (3, "live")]
        assert rows[1]["reason"].endswith("retired: replaced by version 3 (version 2 promoted)")
        # The same arms again change nothing: refused (found by attack: a new version each
        # time, whose carry-over could reset what the policy had learned since).
        for again in (2, 3):
            refused = client.post(f"/admin/models/{again}/promote", headers=AUTH)
            assert refused.status_code == 409, refused.text
        assert refused.json()["detail"] == "model version 3 is live already"
        assert client.post("/admin/models/2/promote", headers=AUTH).json()["detail"] == (
            "the arms of model version 2 are live already (served as version 3): nothing to "
            "promote")
        assert len(client.get("/admin/models", headers=AUTH).json()["versions"]) == 3


def test_a_store_from_before_the_versions_table_gains_it_with_its_served_version(
        backend: str, tmp_path: Path, catalog: Dataset, fitted: dict) -> None:
    import sqlalchemy as sa

    from serving.store.tables import model_versions, policy_meta

    settings = make_settings(tmp_path, backend)
    with worker(settings, catalog, fitted) as client:
        traffic(client, range(1, 11))
    engine = sa.create_engine(settings.resolved_db_url())
    with engine.begin() as conn:  # as an older recbandits left it: version 5, no table
        model_versions.drop(conn)
        conn.execute(policy_meta.update().values(version=5))
    engine.dispose()
    with worker(settings, catalog, fitted) as client:
        rows = client.get("/admin/models", headers=AUTH).json()
        assert rows["live"] == 5
        (row,) = rows["versions"]
        assert (row["version"], row["status"], row["kind"], row["served_seq"]) == (
            5, "live", "start", None)
        assert row["reason"] == "served when the versions table was created"
        assert served_version(client) == 5
        response = client.post("/admin/retrain", headers=AUTH).json()
        assert (response["status"], response["version"]) == ("live", 6)
        assert_state_is_the_fold(client, settings)


# ---------------------------------------------------------------------------- the posterior
def test_one_mode_to_gamma_rule_for_the_switch_logged_and_the_switch_folded(
        tmp_path: Path) -> None:
    from serving.policy import carryover_gamma
    from serving.store.types import VersionSwitch

    for mode, gamma in (("carry", 1.0), ("reset", 0.0), ("discount", 0.25)):
        assert carryover_gamma(mode, 0.25) == gamma
        settings = make_settings(tmp_path, "sqlite", posterior_carryover=mode,
                                 carryover_discount=0.25)
        assert versions.carryover_of(settings) == {"mode": mode, "gamma": gamma}
        # What the fold applies is the logged gamma under the same rule.
        model = settings.policy_model(None)
        policy = model.fresh()
        for _ in range(8):  # 8 successes for svd
            policy.update("svd", 1.0)
        model.switch(policy, VersionSwitch(1, 2, ("svd",), mode, gamma))
        assert policy.state_dict()["stats"]["successes"][0] == pytest.approx(8 * gamma)
    with pytest.raises(ValueError, match="posterior_carryover must be one of carry, reset, "
                       "discount, got 'wipe'"):
        carryover_gamma("wipe", 0.5)


@pytest.mark.parametrize("mode", ["carry", "reset", "discount"])
@pytest.mark.parametrize("policy", ["ThompsonSampling", "LinTS"])
def test_the_posterior_across_a_retrain_is_part_of_the_fold(
        backend: str, policy: str, mode: str, tmp_path: Path, catalog: Dataset,
        fitted: dict) -> None:
    settings = make_settings(tmp_path, backend, policy=policy, posterior_carryover=mode,
                             carryover_discount=0.25, gate_enabled=False)
    with worker(settings, catalog, fitted) as client:
        traffic(client, range(1, 41))
        before, _ = policy_stats(client)
        evidence = "successes" if policy == "ThompsonSampling" else "b"
        assert np.abs(before[evidence][0]).sum() > 0  # svd has learned something
        response = client.post("/admin/retrain", headers=AUTH)
        assert response.json()["status"] == "live", response.text
        after, _ = policy_stats(client)
        gamma = {"carry": 1.0, "reset": 0.0, "discount": 0.25}[mode]
        fresh = settings.policy_model(len(before["b"][0]) if policy == "LinTS" else None
                                      ).fresh().state_dict()["stats"]
        for key, value in after.items():
            # popularity (index 1) learns from the stream: never refitted, never touched.
            assert value[1] == before[key][1]
            if policy == "ThompsonSampling":
                assert value[0] == pytest.approx(gamma * before[key][0])
            elif key != "A_inv":
                np.testing.assert_allclose(value[0], gamma * np.asarray(before[key][0]))
        if mode == "reset":
            assert [v[0] for v in after.values()] == [v[0] for v in fresh.values()]
        assert_state_is_the_fold(client, settings)
        traffic(client, range(40, 60))
        assert_state_is_the_fold(client, settings)
    with worker(settings, catalog, fitted) as restarted:  # a restart folds the same
        assert_state_is_the_fold(restarted, settings)


def test_a_triggered_retrain_with_no_new_event_publishes_nothing_and_keeps_the_posterior(
        backend: str, tmp_path: Path, catalog: Dataset, fitted: dict) -> None:
    """Under ``reset``, a retrain_every retrain on the served version's data must not wipe
    the posterior every interval: it publishes nothing, and counts as done for the trigger.
    """
    settings = make_settings(tmp_path, backend, posterior_carryover="reset",
                             gate_enabled=False)
    with worker(settings, catalog, fitted) as client:
        service = client.app.state.service
        traffic(client, range(1, 41))
        # A first retrain on these events, carrying the posterior over, so there is one to
        # lose: version 2, whose data span holds every event logged.
        carry = settings.model_copy(update={"posterior_carryover": "carry"})
        first = versions.retrain(carry, service.store, catalog, service.arm_set.models)
        assert (first.status, first.version) == ("live", 2)
        wait_for_version(client, 2)
        before, _ = policy_stats(client)
        assert before["successes"][0] + before["failures"][0] > 0  # svd has learned something
        now = [time.time()]
        trigger = RetrainTrigger(service.store, service.retrain, every_s=100.0,
                                 after_events=None, check_s=1.0,
                                 lease_s=settings.retrain_lease_s, clock=lambda: now[0])
        now[0] += 101.0
        assert trigger.check() and trigger.retrains == 1  # due by time, and ran
        assert service.store.policy_meta().version == 2
        assert [r.version for r in service.store.versions()] == [1, 2]  # nothing recorded
        after, _ = policy_stats(client)
        assert after == before  # the reset was not applied: no switch was logged
        # Counted as done: not due again until another interval has passed.
        assert trigger.due(service.store.retrain_lease(), now[0]) is None
        assert not trigger.check()
        # The API answers 200 with the status and why.
        response = client.post("/admin/retrain", headers=AUTH)
        assert response.status_code == 200, response.text
        body = response.json()
        assert (body["status"], body["version"], body["policy_version"]) == (
            "unchanged", 2, 2)
        assert body["reason"].startswith("nothing to retrain: the training data (")
        assert "served version 2" in body["reason"] and body["gate"] is None
        # Other hyper-parameters on the same data are a new version.
        other = settings.model_copy(update={"arm_params": {"svd": {"n_factors": 4}}})
        assert versions.retrain(other, service.store, catalog,
                                service.arm_set.models, serve=False).status == "candidate"
        # One new event: the next triggered retrain publishes version 4, and resets svd.
        traffic(client, range(41, 42))
        now[0] += 101.0
        assert trigger.check() and trigger.retrains == 2
        wait_for_version(client, 4)
        reset, _ = policy_stats(client)
        assert reset["successes"][0] == reset["failures"][0] == 0  # svd starts afresh
        assert_state_is_the_fold(client, settings)


def test_a_purge_folds_the_switches_before_its_cut(backend: str, tmp_path: Path,
                                                   catalog: Dataset, fitted: dict) -> None:
    from datetime import UTC, datetime

    from serving.commands import purge

    hour = 3600.0
    settings = make_settings(tmp_path, backend, posterior_carryover="discount",
                             carryover_discount=0.5, gate_enabled=False)
    url = settings.resolved_db_url()
    with worker(settings, catalog, fitted) as client:
        service = client.app.state.service
        traffic(client, range(1, 31))
        assert client.post("/admin/retrain", headers=AUTH).json()["status"] == "live"
        traffic(client, range(31, 51))
        want = fold_stats(url, settings)  # the whole log, switch included
        assert service.store.settle_expired(time.time() + 2 * hour, 0.0, service.rules) > 0
        cut = time.time() + 4 * hour
        purged = purge(settings, datetime.fromtimestamp(cut, UTC).isoformat(),
                       catalog=catalog, now=cut + settings.retention_s + 1.0)
        assert purged.exit_code == 0, str(purged)
        fold = service.store.fold_snapshot()
        assert fold is not None and fold.policy["state"]["stats"] == want
        assert policy_stats(client)[0] == want
        check = rebuild_state(settings)
        assert check.exit_code == 0 and "match: yes" in str(check)
    with worker(settings, catalog, fitted) as restarted:
        assert policy_stats(restarted)[0] == want


def test_a_switch_read_past_the_outcomes_is_folded_in_log_order(
        tmp_path: Path, catalog: Dataset, fitted: dict) -> None:
    """An outcome committed between a worker's read of the outcomes and its read of the
    switches is folded before the switch (it precedes it in the log), never after it.
    """
    # A discount, not a reset: folded before or after the outcomes, a reset gives the same.
    settings = make_settings(tmp_path, "sqlite", posterior_carryover="discount",
                             carryover_discount=0.5, gate_enabled=False)
    with worker(settings, catalog, fitted) as client:
        service = client.app.state.service
        traffic(client, range(1, 7))
        service.refresh()
        store = service.store
        real = store.outcomes_after
        calls = {"n": 0}

        def late(seq: int, **options: object) -> list:
            calls["n"] += 1
            if calls["n"] == 1:  # the first read misses what commits next
                rows = real(seq, **options)
                traffic(client, range(6, 10))  # outcomes, then a switch, after that read
                result = versions.retrain(settings, store, catalog, service.arm_set.models)
                assert result.status == "live"
                return rows
            return real(seq, **options)

        store.outcomes_after = late  # type: ignore[method-assign]
        try:
            # A refresh reads the tails only once the log's head has moved (an outcome
            # logged): the first refresh after this one, the refresher's or this test's, reads
            # them and meets ``late``.
            traffic(client, range(6, 7))
            service.refresh()
        finally:
            store.outcomes_after = real  # type: ignore[method-assign]
        assert calls["n"] >= 2  # the late read, and the outcomes read again below the switch
        stats, seq = policy_stats(client)
        assert seq == store.switches_after(0)[-1].seq
        assert stats == fold_stats(settings.resolved_db_url(), settings, seq)


# ---------------------------------------------------------------------------- two workers
@pytest.mark.slow
def test_two_workers_serve_a_rollback_with_no_failed_request(backend: str,
                                                            tmp_path: Path) -> None:
    url = store_url(backend, tmp_path)
    env = {"RECBANDITS_SYNTHETIC_USERS": "120", "RECBANDITS_SYNTHETIC_ITEMS": "200",
           "RECBANDITS_SYNTHETIC_RATINGS": "3000", "RECBANDITS_REFRESH_INTERVAL_S": "0.05",
           "RECBANDITS_ADMIN_TOKEN": ADMIN_TOKEN, "RECBANDITS_POSTERIOR_CARRYOVER": "reset",
           "RECBANDITS_ARMS": "svd,popularity"}
    args = ["--dataset", "synthetic", "--seed", "1", "--state-dir", str(tmp_path / "state"),
            "--db", url, "--workers", "2"]
    server = ServiceProcess(args, env, tmp_path / "server.log")
    statuses: list[int] = []
    versions_seen: list[int] = []
    stop = threading.Event()

    def loop() -> None:
        with httpx2.Client(base_url=server.base, timeout=30) as c:
            user = 0
            while not stop.is_set():
                user = user % 100 + 1
                r = c.get("/recommendations", params={"user_id": user, "k": 5})
                statuses.append(r.status_code)
                if r.status_code == 200:
                    versions_seen.append(r.json()["policy_version"])

    try:
        wait_for_workers(server.base, 2)
        threads = [threading.Thread(target=loop) for _ in range(3)]
        for t in threads:
            t.start()
        with httpx2.Client(base_url=server.base, timeout=120, headers=AUTH) as admin:
            # New data (a view): a retrain on the served version's data would be unchanged.
            assert admin.post("/events", json={"events": [
                {"user_id": 1, "item_id": 1, "type": "view", "idempotency_key": "ev-0"}]}
                ).status_code == 201
            assert admin.post("/admin/retrain").json()["status"] == "live"
            assert admin.post("/admin/models/rollback").json()["version"] == 3
            deadline = time.monotonic() + 60
            while set(versions_seen[-40:]) != {3}:  # both workers serve version 3
                assert time.monotonic() < deadline, set(versions_seen[-40:])
                time.sleep(0.05)
    finally:
        stop.set()
        for t in threads:
            t.join()
        server.stop()
    assert statuses and set(statuses) == {200}
    assert {1, 2, 3} <= set(versions_seen) or {1, 3} <= set(versions_seen)
    settings = Settings(db=url, arms=["svd", "popularity"], seed=1,
                        state_dir=tmp_path / "state")
    rebuilt = rebuild_state(settings)
    assert rebuilt.exit_code == 0, str(rebuilt)


@pytest.mark.parametrize("recorded", ["absolute", "relative to the working directory"])
def test_a_state_folder_moved_elsewhere_serves_and_rolls_back_its_own_arms(
        recorded: str, tmp_path: Path, catalog: Dataset, fitted: dict,
        monkeypatch: pytest.MonkeyPatch) -> None:
    # Found by attack: once the state folder was moved (its recorded arms folders gone),
    # `serve` fitted the arms again as a new version and a rollback found no arms to serve.
    import os
    import shutil

    import sqlalchemy as sa

    from serving import commands
    from serving.store.tables import model_versions, policy_meta

    monkeypatch.setattr(commands, "load_catalog", lambda _: catalog)

    def settings_in(root: Path) -> Settings:
        return Settings(state_dir=root / "state", arms=ARMS, seed=0, gate_enabled=False,
                        admin_token=ADMIN_TOKEN)

    first = settings_in(tmp_path / "a")
    with worker(first, catalog, fitted) as client:
        traffic(client, range(1, 21))
        assert client.post("/admin/retrain", headers=AUTH).json()["version"] == 2
        saved = {r.version: r.arms_dir for r in client.app.state.service.store.versions()}
    arms = first.resolved_state_dir().resolve() / "arms"
    assert all(Path(folder).parent == arms for folder in saved.values()), saved
    if recorded != "absolute":  # as an older store given a relative --state-dir recorded them
        engine = sa.create_engine(first.resolved_db_url())
        with engine.begin() as conn:
            for table in (model_versions, policy_meta):
                conn.execute(table.update().values(arms_dir=sa.func.replace(
                    table.c.arms_dir, str(arms), os.path.relpath(arms))))
        engine.dispose()
    shutil.move(tmp_path / "a", tmp_path / "b")
    moved = settings_in(tmp_path / "b")
    started = commands.prepare(moved)
    try:
        assert started.arm_set.version == 2  # its own arms: nothing fitted again
        kept = arms_folder(moved.resolved_state_dir(), started.store.policy_meta().arms_dir)
        assert kept == moved.resolved_state_dir() / "arms" / Path(saved[2]).name
        assert np.array_equal(started.arm_set.models["svd"].item_factors_,
                              np.load(kept / "svd.npz")["state__item_factors"])
        assert versions.rollback(moved, started.store).version == 3  # version 1's arms found
        assert [r.version for r in started.store.versions()] == [1, 2, 3]
    finally:
        started.store.dispose()


def test_a_retrain_with_another_state_folder_than_the_service_is_served(
        tmp_path: Path, catalog: Dataset, fitted: dict,
        monkeypatch: pytest.MonkeyPatch) -> None:
    # Found by review: arms folders recorded relative to the writer's state folder were looked
    # up in the reader's, so a `recbandits retrain` run with another --state-dir than the
    # service's (same store) found no served arms, and the service could not load its arms.
    from serving import commands

    monkeypatch.setattr(commands, "load_catalog", lambda _: catalog)
    served = make_settings(tmp_path, "sqlite", gate_enabled=False)
    other = served.model_copy(update={"state_dir": tmp_path / "elsewhere"})
    with worker(served, catalog, fitted) as client:
        traffic(client, range(1, 21))
        assert commands.retrain(other).version == 2
        wait_for_version(client, 2)
        folder = Path(client.app.state.service.store.policy_meta().arms_dir)
        assert folder.parent == (tmp_path / "elsewhere" / "arms").resolve()
        assert client.app.state.service.arm_set.version == 2


def test_every_new_arms_folder_is_named_one_way(tmp_path: Path) -> None:
    """A first start named its folder by its pid (which repeats across hosts sharing a state
    folder), a retrain by 8 random hex digits; both now take ``armset.new_arms_folder``
    (one-rule review)."""
    import re

    from serving.armset import new_arms_folder

    folders = {new_arms_folder(tmp_path) for _ in range(50)}
    assert len(folders) == 50
    assert all(f.parent == tmp_path / "arms" and re.fullmatch(r"\d{8}T\d{6}-[0-9a-f]{8}", f.name)
               for f in folders)
    # A service's first start and its retrain both name theirs so.
    settings = make_settings(tmp_path, "sqlite")
    from serving import commands

    resources = commands.prepare(settings, catalog=make_synthetic(
        n_users=40, n_items=60, n_ratings=800))
    try:
        first = Path(resources.store.policy_meta().arms_dir)
    finally:
        resources.store.dispose()
    assert re.fullmatch(r"\d{8}T\d{6}-[0-9a-f]{8}", first.name), first


def test_the_arms_lock_removes_what_a_killed_save_left(tmp_path: Path,
                                                       catalog: Dataset) -> None:
    """Found by attack: a first start killed while fitting left its temporary arms folder
    (``arms/.<name>-*``, 860 KB) for good. Saves run under the arms lock, so its holder
    removes such folders; finished ones stay."""
    state = tmp_path / "state"
    with arms_lock(state):
        kept = save_arms(fit_arms(["popularity"], catalog, seed=0), state / "arms" / "v1")
    left = state / "arms" / ".v2-abc123"
    left.mkdir()
    (left / "popularity.npz").write_bytes(b"half written")
    with arms_lock(state):
        assert not left.exists()
    assert sorted(p.name for p in (state / "arms").iterdir()) == ["v1"]
    assert (kept / "popularity.npz").is_file()


def test_a_version_recorded_before_a_hyper_parameter_existed_is_the_same_arms() -> None:
    """Found in review: ``retime_seed`` joined every new arm spec, so the first retrain on an
    unchanged store compared the served version's row (recorded without it) with specs that
    had it, and published a copy where "nothing to retrain" was due (wiping or discounting
    the posterior under those carry-overs). Recorded specs are compared as the arms were made:
    an added parameter takes the value its class says an older arm had, else the default."""
    from arms.cooccurrence import CooccurrenceRecommender
    from arms.popularity import PopularityRecommender

    def recorded(label: str, model: object, *without: str) -> dict:
        spec = versions.arm_spec(label, model)  # type: ignore[arg-type]
        return {label: {k: v for k, v in spec.items() if k not in without}}

    counting = PopularityRecommender()  # no half-life: retime_seed changes nothing
    assert versions.as_made(recorded("popularity", counting, "retime_seed")) == (
        versions.as_made(recorded("popularity", counting)))
    unseeded = CooccurrenceRecommender(from_train=False)
    assert versions.as_made(recorded("cooccurrence", unseeded, "retime_seed")) == (
        versions.as_made(recorded("cooccurrence", unseeded)))
    # A seeded live arm recorded before it kept its ratings' own times: another arm.
    for live in (CooccurrenceRecommender(), PopularityRecommender(half_life=3600.0)):
        label = live.name
        old = versions.as_made(recorded(label, live, "retime_seed"))
        assert old[label]["retime_seed"] is False
        assert old != versions.as_made(recorded(label, live))
    # Missing defaults are filled, and an arm this recbandits does not know is kept as is.
    assert versions.as_made({"p": {"arm": "popularity"}}) == versions.as_made(
        recorded("p", counting))
    assert versions.as_made({"x": {"arm": "nope", "a": (1, 2)}}) == {"x": {"arm": "nope",
                                                                         "a": [1, 2]}}
    assert versions.as_made({"p": {"arm": "popularity", "future": 1}}) == {
        "p": {"arm": "popularity", "future": 1}}


def test_arms_that_cannot_be_read_are_not_promoted_and_a_worker_stuck_is_said(
        tmp_path: Path, catalog: Dataset, fitted: dict, monkeypatch: pytest.MonkeyPatch) -> None:
    """Found by attack: a version whose saved svd file was cut short was promoted (exit 0), no
    worker could load it, the old version went on serving, and rebuild-state said "match:
    yes". The promotion reads the files first; a worker that fails to load the live version
    (its files went bad after the check) is a mismatch."""
    from serving.armset import arm_file

    settings = make_settings(tmp_path, "sqlite")
    with worker(settings, catalog, fitted) as client:
        service = client.app.state.service
        traffic(client, range(1, 11))
        made = versions.retrain(settings, service.store, catalog, service.arm_set.models,
                                serve=False)
        assert (made.status, made.version) == ("candidate", 2)
        row = next(iter(service.store.versions(2)))
        folder = arms_folder(settings.resolved_state_dir(), row.arms_dir)
        # A live arm's base fit too, which a worker loads where the folder holds it (review).
        saved = {}
        for name in ("svd", "popularity"):
            path = arm_file(folder, name)
            assert path.is_file()
            whole = saved[name] = path.read_bytes()
            path.write_bytes(whole[:300])
            refused = client.post("/admin/models/2/promote", headers=AUTH)
            assert refused.status_code == 409, refused.text
            assert f"{name} ({path}) cannot be read: ValueError:" in refused.json()["detail"]
            assert refused.json()["detail"].endswith("; nothing was promoted")
            assert service.store.policy_meta().version == 1
            if name == "popularity":
                path.write_bytes(whole)
        # A live arm's file missing (found by attack: promoted, then rebuild-state said "not
        # rebuilt" and the next start refitted it as a new version).
        popularity = arm_file(folder, "popularity")
        popularity.rename(popularity.with_suffix(".away"))
        refused = client.post("/admin/models/2/promote", headers=AUTH)
        assert refused.status_code == 409 and "['popularity'] missing in" in refused.text
        popularity.with_suffix(".away").rename(popularity)
        # Gone bad after the check (another host's copy, a disk fault): the worker keeps
        # version 1, and rebuild-state says so.
        monkeypatch.setattr(versions, "unreadable_arms", lambda folder, names: {})
        assert client.post("/admin/models/2/promote", headers=AUTH).status_code == 200
        service.refresh()
        assert service.arm_set.version == 1  # the arms it serves (/policy folds version 3)
        text = str(rebuilt := rebuild_state(settings, service=client))
        assert rebuilt.exit_code == 1, text
        (line,) = [s for s in text.splitlines() if s.startswith("version:")]
        assert line.startswith("version: match NO: the worker at http://testserver serves "
                               "version 1, not the live version 3, whose arms it failed to "
                               "load 1 time(s): ValueError("), line
        arm_file(folder, "svd").write_bytes(saved["svd"])  # mended: loaded after the back-off,
        service._load_failure = None  # cut short here (it grows to a minute under load)
        deadline = time.monotonic() + 60
        while service.arm_set.version != 3:
            assert time.monotonic() < deadline
            service.refresh()
            time.sleep(0.1)
        text = str(rebuilt := rebuild_state(settings, service=client))
        assert rebuilt.exit_code == 0, text
        assert ("version: match yes (the worker at http://testserver serves the live version 3)"
                in text)


def test_a_failed_load_is_said_with_its_own_error_and_gone_after_a_load_that_succeeds(
        tmp_path: Path, catalog: Dataset, fitted: dict,
        monkeypatch: pytest.MonkeyPatch) -> None:
    """A failed load's version, attempts and error are one value (review: the error was a
    second attribute, set after the version, so a reader in between saw the new version
    with the previous one's error, and it outlived a successful load)."""
    from serving import service as service_module

    settings = make_settings(tmp_path, "sqlite")
    with worker(settings, catalog, fitted) as client:
        service = client.app.state.service
        arms_dir = service.store.policy_meta().arms_dir
        # What live-state said while each failure was being recorded (its repr is taken then).
        said_meanwhile: dict[str, object] = {}

        class UnreadableError(OSError):
            def __repr__(self) -> str:
                said_meanwhile.setdefault(self.args[0], service.live_state()["load_failure"])
                return f"UnreadableError({self.args[0]!r})"

        failures = iter([UnreadableError("disk 1"), UnreadableError("disk 2")])

        def unreadable(*args: object, **kwargs: object) -> None:
            raise next(failures)

        monkeypatch.setattr(service_module, "load_arms", unreadable)
        service._load_version(2, arms_dir)
        first = {"version": 2, "attempts": 1, "error": "UnreadableError('disk 1')"}
        assert client.get("/admin/live-state", headers=AUTH).json()["load_failure"] == first
        service._load_version(3, arms_dir)
        assert said_meanwhile == {"disk 1": None, "disk 2": first}
        assert client.get("/admin/live-state", headers=AUTH).json()["load_failure"] == {
            "version": 3, "attempts": 1, "error": "UnreadableError('disk 2')"}
        monkeypatch.undo()  # readable again: the same arms, served as version 3
        # What live-state says the moment version 3 is served (review: the failure was
        # cleared after the swap, so for a moment the version served was said to fail).
        swap = service._swap
        at_swap: list[object] = []

        def swap_and_look(arm_set: object) -> None:
            swap(arm_set)
            state = service.live_state()
            at_swap.append((state["version"], state["load_failure"]))

        monkeypatch.setattr(service, "_swap", swap_and_look)
        service._load_version(3, arms_dir)
        assert at_swap == [(3, None)]
        assert service.arm_set.version == 3
        assert client.get("/admin/live-state", headers=AUTH).json()["load_failure"] is None
        assert service._load_failure is None


def test_a_worker_and_the_promotion_check_read_the_arm_files_one_way(
        tmp_path: Path, fitted: dict) -> None:
    """load_arms (a worker) and unreadable_arms (the check before a promotion) read the files
    in one loop (review: two copies): what the check says of a file is the error a worker's
    load raises, and a folder the check passes loads."""
    from serving.armset import arm_file, load_arms, unreadable_arms

    folder = save_arms(fitted, tmp_path / "version")
    assert unreadable_arms(folder, ARMS) == {}
    loaded = load_arms(folder, ARMS)
    assert {n: type(m) for n, m in loaded.items()} == {n: type(fitted[n]) for n in ARMS}
    path = arm_file(folder, "svd")
    path.write_bytes(path.read_bytes()[:300])
    said = unreadable_arms(folder, ARMS)
    assert list(said) == ["svd"]
    with pytest.raises(Exception) as raised:  # whatever the reader raises
        load_arms(folder, ARMS)
    assert said["svd"] == f"{type(raised.value).__name__}: {raised.value}"
