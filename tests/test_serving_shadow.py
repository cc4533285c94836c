"""Shadow mode (issue 15): a candidate policy logged beside every decision and never served,
``recbandits ope --shadow`` on exactly those decisions, and promotion by command."""

from __future__ import annotations

import copy
import io
import json
import socket
import threading
import time
from datetime import UTC, datetime
from pathlib import Path

import httpx2
import numpy as np
import pandas as pd
import pytest
import sqlalchemy as sa
from fastapi.testclient import TestClient
from pydantic import ValidationError
from test_serving_support import (
    ADMIN_TOKEN,
    ServiceProcess,
    assert_workers_are_the_fold,
    fold_stats,
    read_table,
    store_url,
    wait_for_workers,
)

from arms.base import Recommender
from arms.data import make_synthetic
from arms.data.dataset import Dataset
from experiments.cli import main as cli_main
from serving import offpolicy, shadow
from serving.app import create_app
from serving.armset import fit_arms
from serving.commands import purge, rebuild_state, shadow_promote, shadow_status
from serving.policy import draw_arm, said_policy
from serving.results import CommandError, PurgeResults
from serving.schemas import ShadowStatusOut
from serving.settings import Settings
from serving.store import open_store
from serving.store.base import Store
from serving.store.tables import decisions

TOKEN = "shadow-token"
AUTH = {"authorization": f"Bearer {TOKEN}"}
ARMS = ["svd", "popularity", "sequential"]
HOUR = 3600.0


@pytest.fixture(scope="module")
def catalog() -> Dataset:
    return make_synthetic(40, 60, 800, random_state=0)


@pytest.fixture(scope="module")
def fitted(catalog: Dataset) -> dict[str, Recommender]:
    return fit_arms(ARMS, catalog, seed=0)


@pytest.fixture(params=["sqlite", "postgresql"])
def backend(request: pytest.FixtureRequest) -> str:
    return request.param


def make_settings(tmp_path: Path, backend: str, **extra: object) -> Settings:
    values: dict = {"state_dir": tmp_path / "state", "db": store_url(backend, tmp_path),
                    "arms": ARMS, "seed": 3, "admin_token": TOKEN, **extra}
    return Settings(**values)


def worker(settings: Settings, catalog: Dataset, fitted: dict[str, Recommender]) -> TestClient:
    return TestClient(create_app(settings, catalog=catalog, arms=copy.deepcopy(fitted)))


def traffic(client: TestClient, n: int, *, refresh_every: int = 10) -> list[dict]:
    """``n`` slates to users 1..30; a like on svd's slates (the policies lean on svd), the
    worker's policies folded by hand every ``refresh_every`` requests."""
    bodies = []
    for i in range(n):
        response = client.get("/recommendations", params={"user_id": 1 + i % 30, "k": 3})
        assert response.status_code == 200, response.text
        body = response.json()
        bodies.append(body)
        if body["arm"] == "svd":
            assert client.post("/feedback", json={
                "user_id": body["user_id"], "movie_id": body["items"][0]["movie_id"],
                "feedback_type": "like", "event_id": body["event_id"]}).status_code == 201
        if i % refresh_every == refresh_every - 1:
            client.app.state.service.refresh()
    return bodies


def fold_state(settings: Settings, model_of: str, upto: int) -> dict:
    """``state_dict()`` of the live (``model_of="live"``) or shadow policy in force on the
    settings' store, folded over its outcomes up to ``upto``, as it reads back from JSON."""
    store = open_store(settings.resolved_db_url(), create=False)
    try:
        current = shadow.effective(settings, store)
        outcomes = [o for o in store.outcomes_after(0) if o.seq <= upto]
    finally:
        store.dispose()
    d = next((len(o.context) for o in outcomes if o.context is not None), None)
    model = current.policy_model(d) if model_of == "live" else current.shadow_model(d)
    assert model is not None
    return json.loads(json.dumps(model.replay(outcomes).state_dict()))


# ---------------------------------------------------------------------------- logged, not served
def test_the_shadow_is_logged_for_every_decision_and_never_served(
        tmp_path: Path, backend: str, catalog: Dataset, fitted: dict[str, Recommender]) -> None:
    # Refreshed by hand only: both services fold the same outcomes at the same requests.
    plain = make_settings(tmp_path / "plain", backend, refresh_interval_s=HOUR)
    shadowed = make_settings(tmp_path / "shadowed", backend, refresh_interval_s=HOUR,
                             shadow_policy="LinTS", shadow_policy_params={"scale": 0.5})
    with worker(plain, catalog, fitted) as client:
        served = traffic(client, 40)
    with worker(shadowed, catalog, fitted) as client:
        logged = traffic(client, 40)
        state = client.get("/admin/policy-state", headers=AUTH).json()
        out = io.StringIO()
        out.write(str(rebuilt := rebuild_state(shadowed, service=client)))
        assert rebuilt.exit_code == 0, out.getvalue()
    # The same arms and slates as the service without a shadow, under the same seed.
    assert [b["arm"] for b in logged] == [b["arm"] for b in served]
    assert [[i["movie_id"] for i in b["items"]] for b in logged] == \
        [[i["movie_id"] for i in b["items"]] for b in served]
    rows = {r["event_id"]: r for r in read_table(shadowed.resolved_db_url(), decisions)}
    assert len(rows) == 40 and all(r["shadow"] is None for r in
                                   read_table(plain.resolved_db_url(), decisions))
    differs = 0
    for body in logged:  # every decision carries the shadow's record, redrawable from the log
        record = rows[body["event_id"]]["shadow"]
        assert record["policy"]["name"] == "LinTS"
        assert record["policy"]["params"]["scale"] == 0.5
        pmf = np.array([record["pmf"][a] for a in ARMS])
        assert pmf.sum() == pytest.approx(1.0) and pmf.min() >= 0
        cdf = np.cumsum(pmf)
        cdf[-1] = 1.0
        assert record["u"] == shadow.uniform(body["event_id"])
        assert record["arm"] == ARMS[draw_arm(cdf, record["u"])]
        assert record["propensity"] == record["pmf"][record["arm"]]
        differs += record["arm"] != body["arm"]
    assert differs >= 5  # it chose otherwise, and was not served
    # Its state is the fold of the same outcomes under LinTS's rule, at the live position.
    assert state["shadow"]["log_seq"] == state["log_seq"] > 0
    assert state["shadow"]["state"] == fold_state(shadowed, "shadow", state["log_seq"])
    assert state["state"]["stats"] == fold_state(shadowed, "live", state["log_seq"])["stats"]
    assert "shadow LinTS" in out.getvalue() and "match yes" in out.getvalue()


def test_rebuild_state_says_no_when_the_shadow_differs_from_its_fold(
        tmp_path: Path, catalog: Dataset, fitted: dict[str, Recommender]) -> None:
    settings = make_settings(tmp_path, "sqlite", refresh_interval_s=HOUR,
                             shadow_policy="LinTS")
    with worker(settings, catalog, fitted) as client:
        traffic(client, 20)
        service = client.app.state.service
        model, snap, text = service._shadow
        broken = copy.deepcopy(snap.policy)
        broken.update("popularity", 1.0, np.ones(model.n_features))  # an outcome never logged
        service._shadow = (model, type(snap)(snap.version, snap.seq, broken, snap.pulls, None,
                                             None), text)
        out = io.StringIO()
        out.write(str(rebuilt := rebuild_state(settings, service=client)))
        assert rebuilt.exit_code == 1, out.getvalue()
    assert "shadow LinTS" in out.getvalue() and "match NO" in out.getvalue()


# ---------------------------------------------------------------------------- settings
@pytest.mark.parametrize(("values", "match"), [
    ({"shadow_policy": "Thompson"}, r"shadow_policy: policy must be one of .*'LinTS'"),
    ({"shadow_policy": "ThompsonSampling"}, "is the live policy itself"),
    ({"policy": "LinTS", "policy_params": {"scale": 0.5}, "shadow_policy": "LinTS",
      "shadow_policy_params": {"scale": 0.5}}, "is the live policy itself"),
    ({"policy": "LinTS", "shadow_policy": "LinTS", "shadow_policy_params": {"scale": 1.0}},
     "is the live policy itself"),  # LinTS's default scale
    # The parameters compared, without the n_features=1 they are compared at (the service
    # sets it; "'n_features': 1" misled, found by attack).
    ({"policy": "LinTS", "shadow_policy": "LinTS"},
     r"is the live policy itself \(LinTS \{'scale': 1\.0, 'ridge': 1\.0, 'batch_size': 1, "
     r"'propensity_grid': 256\}\)"),
    ({"shadow_policy_params": {"scale": 0.5}}, "shadow_policy is not"),
    ({"shadow_policy": "LinTS", "shadow_policy_params": {"bogus": 1}},
     r"shadow_policy_params: LinTS has no hyper-parameter 'bogus'; allowed: \['scale'"),
    ({"shadow_policy": "LinTS", "slate_mode": "multileave"}, "single-arm slates"),
    # The live policy's unknown keyword alone, and the keywords a user may give (found by a
    # README check: every parameter given was "invalid", n_features and the allowed among them).
    ({"policy": "LinTS", "policy_params": {"bogus": 1, "scale": 0.5}},
     r"Value error, policy_params: LinTS has no hyper-parameter 'bogus'; allowed: "
     r"\['scale', 'ridge', 'batch_size', 'propensity_grid'\] \[type"),
    ({"policy": "LinTS", "policy_params": {"scale": True}},
     r"LinTS: scale must be a real number, got True \(bool\)"),
])
def test_invalid_shadow_settings_are_refused_naming_the_value(values: dict, match: str) -> None:
    with pytest.raises(ValidationError, match=match):
        Settings(arms=ARMS, **values)


def test_the_shadow_settings_come_from_file_env_and_flags(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
        ) -> None:
    path = tmp_path / "settings.toml"
    path.write_text('shadow_policy = "LinTS"\n[shadow_policy_params]\nscale = 0.25\n')
    settings = Settings.from_file(path, arms=ARMS)
    assert settings.shadow_model(4).params == {"scale": 0.25, "propensity_grid": 256,
                                               "n_features": 4}
    for key, value in settings.to_env().items():  # what a worker process is handed
        if "SHADOW" in key:
            monkeypatch.setenv(key, value)
    assert Settings(arms=ARMS).shadow_model(4).params == settings.shadow_model(4).params
    monkeypatch.setenv("RECBANDITS_SHADOW_POLICY", "UCB1")
    monkeypatch.setenv("RECBANDITS_SHADOW_POLICY_PARAMS", '{"exploration": 1.5}')
    assert Settings(arms=ARMS).shadow_model(4).params == {"exploration": 1.5}
    assert cli_main(["shadow", "status", "--state-dir", str(tmp_path / "s"),
                     "--shadow-policy-params", "{scale"]) == 2
    assert "--shadow-policy-params='{scale': must be a JSON object" in capsys.readouterr().err
    assert cli_main(["shadow", "promote", "--state-dir", str(tmp_path / "s"),
                     "--shadow-policy", "Nope"]) == 2
    assert "shadow_policy: policy must be one of" in capsys.readouterr().err


def test_an_older_store_gains_the_shadow_column(tmp_path: Path, backend: str) -> None:
    url = store_url(backend, tmp_path)
    store = open_store(url)
    try:
        store.create_schema(ARMS)
        with store.write_engine.begin() as conn:
            conn.exec_driver_sql("ALTER TABLE decisions DROP COLUMN shadow")
            conn.exec_driver_sql("DROP TABLE policy_promotions")
        assert "shadow" not in {c["name"] for c in sa.inspect(store.write_engine)
                                .get_columns("decisions")}
    finally:
        store.dispose()
    old = open_store(url, create=False)  # what rebuild-state, ope and shadow status open
    try:
        assert (old.latest_promotion(), old.count_shadow(), old.shadow_rows()) == (None, 0, {})
        assert shadow.effective(Settings(arms=ARMS), old).policy == "ThompsonSampling"
    finally:
        old.dispose()
    store = open_store(url)
    try:
        store.create_schema(ARMS)
        assert "shadow" in {c["name"] for c in sa.inspect(store.write_engine)
                            .get_columns("decisions")}
        assert store.count_shadow() == 0
    finally:
        store.dispose()


# ---------------------------------------------------------------------------- promotion
def test_a_promotion_reaches_every_worker_survives_a_restart_and_is_the_fold(
        tmp_path: Path, backend: str, catalog: Dataset, fitted: dict[str, Recommender]) -> None:
    settings = make_settings(tmp_path, backend, refresh_interval_s=0.05,
                             shadow_policy="LinTS", shadow_policy_params={"scale": 0.5})
    with worker(settings, catalog, fitted) as first, worker(settings, catalog, fitted) as other:
        traffic(first, 20)
        traffic(other, 20)
        before = first.get("/admin/shadow", headers=AUTH).json()
        assert ShadowStatusOut.model_validate(before).model_dump(mode="json") == before
        assert before["live"]["name"] == "ThompsonSampling" and before["promotion"] is None
        paths = first.get("/openapi.json").json()["paths"]  # documented by their models
        for path, method, model in (("/admin/shadow", "get", "ShadowStatusOut"),
                                    ("/admin/shadow/promote", "post", "ShadowPromoteOut")):
            schema = paths[path][method]["responses"]["200"]["content"]["application/json"]
            assert schema["schema"]["$ref"].endswith(f"/{model}"), (path, schema)
        assert before["shadow"] == {"name": "LinTS", "params": {"scale": 0.5}}
        answer = first.post("/admin/shadow/promote", headers=AUTH)
        assert answer.status_code == 200, answer.text
        assert answer.json() == {"promotion": 1,
                                 "policy": {"name": "LinTS", "params": {"scale": 0.5}},
                                 "previous": {"name": "ThompsonSampling", "params": {}}}
        assert first.get("/admin/shadow", headers=AUTH).json()["promotion"] == {
            "id": 1, "policy": answer.json()["policy"], "previous": answer.json()["previous"]}
        assert first.get("/admin/policy-state", headers=AUTH).json()["policy"]["name"] == "LinTS"
        # The other worker follows within a refresh interval, serving every request meanwhile.
        deadline = time.monotonic() + 30
        statuses = []
        while other.get("/admin/policy-state", headers=AUTH).json()["policy"]["name"] != "LinTS":
            assert time.monotonic() < deadline, "the other worker never followed"
            statuses.append(other.get("/recommendations",
                                      params={"user_id": 7, "k": 3}).status_code)
        assert set(statuses) <= {200}
        after = traffic(other, 20) + traffic(first, 20)
        for client in (first, other):  # the promoted state is the fold of the whole log
            client.app.state.service.refresh()
            state = client.get("/admin/policy-state", headers=AUTH).json()
            assert state["policy"]["name"] == "LinTS" and state["shadow"] is None
            assert state["state"] == fold_state(settings, "live", state["log_seq"])
        assert first.get("/policy").json()["policy"] == "LinTS"
        again = first.post("/admin/shadow/promote", headers=AUTH)
        assert again.status_code == 409 and "promoted already" in again.text
        out = io.StringIO()
        out.write(str(rebuilt := rebuild_state(settings, service=first)))
        assert rebuilt.exit_code == 0, out.getvalue()
        assert "policy: LinTS" in out.getvalue()
    rows = {r["event_id"]: r for r in read_table(settings.resolved_db_url(), decisions)}
    assert all(rows[b["event_id"]]["policy"]["name"] == "LinTS" and
               rows[b["event_id"]]["shadow"] is None for b in after)
    with worker(settings, catalog, fitted) as restarted:  # the settings still say TS
        state = restarted.get("/admin/policy-state", headers=AUTH).json()
        assert state["policy"]["name"] == "LinTS"
        assert state["state"] == fold_state(settings, "live", state["log_seq"])
    out = io.StringIO()
    assert cli_main(["shadow", "status", "--db", settings.resolved_db_url(),
                     "--state-dir", str(tmp_path / "state"), "--shadow-policy", "LinTS",
                     "--shadow-policy-params", '{"scale": 0.5}']) == 0


@pytest.mark.slow
def test_two_uvicorn_workers_follow_a_promotion_under_load_with_no_failed_request(
        tmp_path: Path, backend: str) -> None:
    url = store_url(backend, tmp_path)
    env = {"RECBANDITS_SYNTHETIC_USERS": "120", "RECBANDITS_SYNTHETIC_ITEMS": "200",
           "RECBANDITS_SYNTHETIC_RATINGS": "3000", "RECBANDITS_REFRESH_INTERVAL_S": "0.05",
           "RECBANDITS_ADMIN_TOKEN": ADMIN_TOKEN, "RECBANDITS_SHADOW_POLICY": "LinTS",
           "RECBANDITS_SHADOW_POLICY_PARAMS": '{"scale": 0.5}'}
    args = ["--dataset", "synthetic", "--arms", "svd,popularity", "--seed", "1",
            "--state-dir", str(tmp_path / "state"), "--db", url, "--workers", "2"]
    auth = {"Authorization": f"Bearer {ADMIN_TOKEN}"}
    statuses: list[int] = []
    stop = threading.Event()

    def load(offset: int) -> None:  # fresh connections, so that both workers take a share
        user = offset
        while not stop.is_set():
            user = user % 100 + 1
            with httpx2.Client(base_url=server.base, timeout=30) as c:
                answer = c.get("/recommendations", params={"user_id": user, "k": 3})
                statuses.append(answer.status_code)
                if answer.status_code == 200 and user % 2:
                    body = answer.json()
                    statuses.append(c.post("/feedback", json={
                        "user_id": user, "movie_id": body["items"][0]["movie_id"],
                        "feedback_type": "like", "event_id": body["event_id"]}).status_code)

    server = ServiceProcess(args, env, tmp_path / "server.log")
    try:
        wait_for_workers(server.base, 2)
        threads = [threading.Thread(target=load, args=(k * 25,)) for k in range(3)]
        for thread in threads:
            thread.start()

        def until_answered(count: int) -> None:  # not a sleep: a loaded machine is slow
            deadline = time.monotonic() + 60
            while len(statuses) < count:
                assert time.monotonic() < deadline, f"{len(statuses)} answers in 60 s"
                time.sleep(0.05)

        until_answered(10)  # decisions of Thompson Sampling logged before the promotion
        answer = httpx2.post(f"{server.base}/admin/shadow/promote", headers=auth, timeout=30)
        assert answer.status_code == 200, answer.text
        following: set[int] = set()
        deadline = time.monotonic() + 60
        while len(following) < 2:  # each worker follows within its refresh interval
            assert time.monotonic() < deadline, f"only {following} serve LinTS"
            with httpx2.Client(base_url=server.base, timeout=30, headers=auth) as c:
                state = c.get("/admin/policy-state").json()
            if state["policy"]["name"] == "LinTS":
                following.add(int(state["pid"]))
        until_answered(len(statuses) + 10)  # and some of LinTS after it
        stop.set()
        for thread in threads:
            thread.join(60)
        promoted = Settings(db=url, arms=["svd", "popularity"], seed=1, policy="LinTS",
                            policy_params={"scale": 0.5}, state_dir=tmp_path / "state")
        assert len(assert_workers_are_the_fold(server.base, url, promoted, workers=2)) == 2
    finally:
        stop.set()
        server.stop()
    assert len(statuses) > 20 and set(statuses) <= {200, 201}, sorted(set(statuses))
    logged = read_table(url, decisions)
    assert {r["policy"]["name"] for r in logged} == {"ThompsonSampling", "LinTS"}
    assert all((r["shadow"] is None) == (r["policy"]["name"] == "LinTS") for r in logged)
    out = io.StringIO()
    settings = Settings(db=url, arms=["svd", "popularity"], seed=1, shadow_policy="LinTS",
                        shadow_policy_params={"scale": 0.5}, state_dir=tmp_path / "state")
    out.write(str(rebuilt := rebuild_state(settings)))
    assert rebuilt.exit_code == 0, out.getvalue()
    assert "policy: LinTS" in out.getvalue()


def test_a_policy_reads_the_same_in_every_message() -> None:
    """One formatter (serving.policy.said_policy): the parameters' keys sorted, as
    ``shadow status`` printed them, while ``shadow promote``, ``ope --shadow`` and the check
    against a running service printed them as given (found in review: one policy, two texts).
    """
    live = {"name": "LinTS", "params": {"v": 0.5, "alpha": 1.0}}
    said = 'LinTS {"alpha": 1.0, "v": 0.5}'
    assert said_policy(live) == said and said_policy(None) == "none"
    assert said_policy("corrupt") == "corrupt"  # a malformed logged value, shown as it is
    promotion = shadow.Promotion(id=1, policy="EpsilonGreedy",
                                 params={"epsilon": 0.2, "decay": 0.9}, previous=live,
                                 created_at=0.0)
    assert str(shadow.PromoteResult(promotion, live)).startswith(
        'promoted EpsilonGreedy {"decay": 0.9, "epsilon": 0.2} (promotion #1), replacing '
        + said)


def test_the_settings_policies_are_compared_in_one_form(tmp_path: Path) -> None:
    """shadow status and the check against a running worker built the settings' policies for
    the comparison each in its own code (review): one function, built at each role's context
    dimension, as the settings spell it where it cannot be built or no dimension is given."""
    settings = make_settings(tmp_path, "sqlite", policy="LinTS",
                             policy_params={"scale": 0.5}, shadow_policy="UCB1")
    built = shadow.settings_identities(settings, {"live": 7, "shadow": 7})
    assert built["live"] == settings.policy_model(7).identity()
    assert built["live"]["name"] == "LinTS"
    assert (built["live"]["params"]["n_features"], built["live"]["params"]["scale"]) == (7, 0.5)
    assert built["shadow"] == {"name": "UCB1", "params": {"exploration": 2.0, "batch_size": 1}}
    # LinTS cannot be built without a dimension; a role left out is not built.
    assert shadow.settings_identities(settings, {"live": None}) == {
        "live": {"name": "LinTS", "params": {"scale": 0.5}},
        "shadow": {"name": "UCB1", "params": {}}}
    alone = settings.model_copy(update={"shadow_policy": None})
    assert shadow.settings_identities(alone, {"live": 7, "shadow": 7})["shadow"] is None


def test_the_promote_command_records_it_and_refuses_without_a_shadow(
        tmp_path: Path, catalog: Dataset, fitted: dict[str, Recommender],
        capsys: pytest.CaptureFixture[str]) -> None:
    settings = make_settings(tmp_path, "sqlite", refresh_interval_s=HOUR)
    common = ["--db", settings.resolved_db_url(), "--state-dir", str(tmp_path / "state")]
    with worker(settings, catalog, fitted) as client:  # runs without the shadow
        traffic(client, 20)
        # A refusal that changes nothing: 1, as `models`' (2 stays for a bad value).
        assert cli_main(["shadow", "promote", *common]) == 1
        assert "no shadow policy to promote" in capsys.readouterr().err
        assert cli_main(["shadow", "promote", *common, "--shadow-policy", "Nope"]) == 2
        assert "shadow_policy" in capsys.readouterr().err
        assert cli_main(["shadow", "promote", *common, "--shadow-policy", "UCB1"]) == 0
        assert "promoted UCB1 {} (promotion #1), replacing ThompsonSampling" in \
            capsys.readouterr().out
        # Found by attack: with no decision since the promotion, status blamed the settings
        # ("NOT the live policy above: the settings are not the service's").
        said = str(shadow_status(settings.model_copy(update={"admin_token": None})))
        assert ("latest decision logged by: ThompsonSampling {" in said and "NOT" not in said
                and "(before promotion #1: no decision has been made since the promotion)"
                in said), said
        client.app.state.service.refresh()  # it refolds the log under UCB1's rule
        state = client.get("/admin/policy-state", headers=AUTH).json()
        assert state["policy"]["name"] == "UCB1" and state["log_seq"] > 0
        promoted = settings.model_copy(update={"shadow_policy": "UCB1"})
        assert state["state"] == fold_state(promoted, "live", state["log_seq"])
        traffic(client, 10)
    assert cli_main(["shadow", "status", *common]) == 0
    printed = capsys.readouterr().out
    assert "live:   UCB1 {}" in printed and "shadow: none" in printed
    # The parameters too (found by attack: "ThompsonSampling replaced ThompsonSampling").
    assert "promotion: #1: UCB1 {} replaced ThompsonSampling {} (it overrides" in printed
    assert "latest decision logged by: UCB1 {" in printed and "NOT" not in printed
    with worker(settings, catalog, fitted) as client:
        assert client.get("/policy").json()["policy"] == "UCB1"


def test_promote_and_status_check_the_policies_a_running_worker_runs(
        tmp_path: Path, catalog: Dataset, fitted: dict[str, Recommender]) -> None:
    """Settings other than the service's promoted their own shadow and recorded their own live
    policy as the one replaced (ThompsonSampling), while the worker served LinTS: now refused
    (exit 2, nothing recorded) when a running worker runs other policies; with the service's
    settings the promotion says which worker it checked."""
    with socket.socket() as probe:  # a port nothing listens on (not 8000: the machine's)
        probe.bind(("127.0.0.1", 0))
        free = probe.getsockname()[1]
    served = make_settings(tmp_path, "sqlite", refresh_interval_s=HOUR, policy="LinTS",
                           shadow_policy="UCB1", port=free)
    other = served.model_copy(update={"policy": "ThompsonSampling"})
    with worker(served, catalog, fitted) as client:
        traffic(client, 20)
        status = shadow_status(other, service=client)
        assert status.exit_code == 0
        assert ("service: NOT these policies: the service at http://testserver runs live "
                "LinTS {") in str(status)
        assert "these settings give live ThompsonSampling {" in str(status)
        assert "latest decision logged by: LinTS {" in str(status)
        assert "(NOT the live policy above: the settings are not the service's)" in str(status)
        with pytest.raises(CommandError) as refused:
            shadow_promote(other, service=client)
        assert refused.value.exit_code == 2
        assert "runs live LinTS" in str(refused.value) and "with shadow UCB1 {" in str(
            refused.value)
        store = open_store(served.resolved_db_url())
        try:
            assert shadow.latest(store) is None  # nothing recorded
        finally:
            store.dispose()
        # Another shadow than the worker's is refused too.
        with pytest.raises(CommandError, match="with shadow EpsilonGreedy"):
            shadow_promote(served.model_copy(update={"shadow_policy": "EpsilonGreedy"}),
                           service=client)
        own = str(shadow_status(served, service=client))
        assert "service: the service at http://testserver runs these policies" in own
        # The service's own settings are not marked: compared with every hyper-parameter
        # filled in, as the workers log them (found by attack: the settings' {} never
        # equalled the logged parameters, so every status said NOT).
        assert "latest decision logged by: LinTS {" in own and "NOT" not in own
        assert "decisions with a shadow record: 20\n" in own + "\n"  # one shadow: no split
        done = shadow_promote(served, service=client)
        assert done.previous["name"] == "LinTS" and done.promotion.policy == "UCB1"
        assert str(done).endswith("(the service at http://testserver runs these policies)")
        client.app.state.service.refresh()
        assert client.get("/policy").json()["policy"] == "UCB1"
    # No worker answers: the settings' policies, and the result says none was checked.
    assert f"service: no service answered at http://127.0.0.1:{free}" in str(
        shadow_status(served))
    # What the log says, beside the settings (found by attack: the settings alone were printed
    # as live and shadow, with one count for two shadow policies' records). The promotion
    # made UCB1 live; the settings below say ThompsonSampling and KLUCB.
    with worker(served, catalog, fitted) as client:
        traffic(client, 5)  # UCB1 live now, no shadow
    text = str(shadow_status(other.model_copy(update={"shadow_policy": "KLUCB"})))
    assert "latest decision logged by: UCB1 {" in text
    assert "live:   UCB1 {" in text  # the promotion overrides the settings' policy
    said = next(line for line in text.splitlines() if line.startswith("decisions with"))
    assert said.startswith("decisions with a shadow record: 20 (20 of UCB1 {"), text
    report = shadow_status(served).report
    assert report["logged_live"]["name"] == "UCB1"
    assert [(r["policy"]["name"], r["decisions"]) for r in report["shadow_records"]] == [
        ("UCB1", 20)]
    assert "service: no admin token set: no running service asked" in str(shadow_status(
        served.model_copy(update={"admin_token": None})))


# ---------------------------------------------------------------------------- ope --shadow
RATES = np.array([0.2, 0.5, 0.8])  # each arm's true reward rate


def synthetic_shadow_log(url: str, n: int, shadows: dict[str, np.ndarray], seed: int, *,
                         live: np.ndarray | None = None, holdout_share: float = 0.0,
                         segments: bool = False) -> None:
    """A log of ``n`` decisions drawn from the live pmf (default (0.4, 0.3, 0.3)) with
    Bernoulli(RATES) rewards, each decision carrying a shadow record of one of ``shadows``
    (name -> pmf), taken in turn. With ``holdout_share`` s, a uniform holdout as the service's
    (serving.holdout): the arm drawn from the mixture s / 3 + (1 - s) live, which is logged.
    With ``segments``, each decision logs a context vector of a gender (the DR reward model's
    segments) and women's rewards are Bernoulli(1 - RATES)."""
    rng = np.random.default_rng(seed)
    live = np.array([0.4, 0.3, 0.3]) if live is None else live
    served = holdout_share / 3 + (1.0 - holdout_share) * live
    store = open_store(url)
    store.create_schema(ARMS)
    names = list(shadows)
    draws = rng.random(n)
    held = draws < holdout_share
    actions = np.where(held, rng.choice(3, size=n), rng.choice(3, size=n, p=live))
    women = rng.random(n) < (0.5 if segments else 0.0)
    rates = np.where(women, 1.0 - RATES[actions], RATES[actions])
    rewards = (rng.random(n) < rates).astype(float)
    rows, outcomes = [], []
    for i in range(n):
        name = names[i % len(names)]
        pmf = shadows[name]
        event_id = f"{i:012x}{rng.integers(16 ** 12):020x}"
        policy: dict = {"name": "ThompsonSampling", "params": {}}
        if holdout_share:
            policy["holdout"] = {"share": holdout_share, "baseline": "uniform",
                                 "draw": float(draws[i]), "held_out": bool(held[i])}
        context: dict = {"k": 3}
        if segments:
            context.update({"feature_version": "g1", "feature_names": ["gender=F", "gender=M"],
                            "features": [float(women[i]), float(not women[i])]})
        rows.append({
            "event_id": event_id, "created_at": 1000.0 + i, "user_id": 1 + i % 50,
            "context": context, "arm": ARMS[actions[i]], "propensity": served[actions[i]],
            "pmf": dict(zip(ARMS, served.tolist(), strict=True)), "slate": [1, 2, 3],
            "policy": policy, "policy_version": 1,
            "cold_start": False, "reward_deadline": 1001.0 + i, "settled_at": 1002.0 + i,
            "shadow": {"policy": {"name": name, "params": {}}, "arm": ARMS[int(pmf.argmax())],
                       "propensity": float(pmf.max()), "u": 0.5, "seq": i,
                       "pmf": dict(zip(ARMS, pmf.tolist(), strict=True))}})
        outcomes.append({"event_id": event_id, "arm": ARMS[actions[i]], "seq": i + 1,
                         "reward": rewards[i], "decided_at": 1001.5 + i, "feedback_seq": None})
    store.insert_simulated(rows, [], outcomes)
    store.dispose()


def test_ope_shadow_estimates_a_known_value_and_ranks_a_better_shadow_above(
        tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    url = f"sqlite:///{tmp_path / 'log.db'}"
    same = np.array([0.4, 0.3, 0.3])
    better = np.array([0.05, 0.05, 0.9])
    synthetic_shadow_log(url, 1600, {"Same": same, "Better": better}, seed=5)
    run = offpolicy.run(offpolicy.OPEConfig(url=url, out_dir=tmp_path / "ope", shadow=True,
                                            n_bootstrap=400, seed=1))
    assert run.shadow is not None and [c.policy["name"] for c in run.shadow] == ["Same",
                                                                                 "Better"]
    for comparison, pmf in zip(run.shadow, (same, better), strict=True):
        assert comparison.n == 800  # exactly the decisions carrying its record
        truth = {"live": float(same @ RATES), "shadow": float(pmf @ RATES)}
        live, estimated = comparison.reports.values()
        for report, true in ((live, truth["live"]), (estimated, truth["shadow"])):
            for e in ("ips", "snips", "dr"):
                est = report.estimates[e]
                assert est.ci_low <= true <= est.ci_high, (report.policy, e, est)
        value, low, high = comparison.difference["snips"]
        assert value == pytest.approx(estimated.estimates["snips"].value
                                      - live.estimates["snips"].value)
        assert low <= truth["shadow"] - truth["live"] <= high
        assert comparison.min_logged_propensity == pytest.approx(0.3)
    same_c, better_c = run.shadow
    # The live policy itself: the live value exactly, no difference, every weight 1.
    assert same_c.difference["ips"][0] == pytest.approx(0.0, abs=1e-12)
    assert same_c.reports["shadow Same"].effective_sample_size == pytest.approx(800)
    # A clearly better shadow: above the live policy, its difference's interval above 0.
    assert better_c.difference["dr"][1] > 0.15 and better_c.difference["snips"][1] > 0.15
    assert better_c.reports["shadow Better"].effective_sample_size < 800
    assert (tmp_path / "ope" / "shadow.csv").is_file()
    assert cli_main(["ope", "--shadow", "--db", url, "--out", str(tmp_path / "cli"),
                     "--bootstrap", "100", "--export-csv", str(tmp_path / "log.csv"),
                     "--export-obp", str(tmp_path / "log.npz")]) == 0
    printed = capsys.readouterr().out
    assert "shadow Better {}: 800 decisions carry its record" in printed
    # Found by attack: the difference row printed "nan" as its ESS (it has none), and the
    # exports were silently not written with --shadow.
    difference = next(line for line in printed.splitlines() if line.startswith("shadow - live"))
    assert "nan" not in difference and difference.split()[-1] == "-"
    assert "nan" not in printed
    assert len(pd.read_csv(tmp_path / "log.csv")) == len(run.log.actions)
    assert (tmp_path / "log.npz").is_file() and f"log (CSV): {tmp_path / 'log.csv'}" in printed
    # Runs into one folder: each leaves only its own files (a shadow run left the candidates'
    # table and summary of an earlier run beside its own), never a file of the user's.
    (tmp_path / "cli" / "notes.txt").write_text("mine")
    assert cli_main(["ope", "--db", url, "--out", str(tmp_path / "cli"), "--bootstrap",
                     "100"]) == 0
    assert sorted(p.name for p in (tmp_path / "cli").iterdir()) == [
        "notes.txt", "ope.csv", "summary.json"]
    assert cli_main(["ope", "--shadow", "--db", url, "--out", str(tmp_path / "cli"),
                     "--bootstrap", "100"]) == 0
    assert sorted(p.name for p in (tmp_path / "cli").iterdir()) == ["notes.txt", "shadow.csv"]


def test_ope_shadow_compares_the_shadow_under_the_live_holdout(
        tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    """Found by attack: with a holdout the live row is the logged mixture s / K + (1 - s) live
    while the shadow row was the shadow's own pmf, so a shadow equal to the live policy
    showed a significant gain (0.052 [0.040, 0.064] on the attacker's store). The shadow is
    now served under the same holdout: the live policy as its own shadow differs by 0."""
    url = f"sqlite:///{tmp_path / 'log.db'}"
    live = np.array([0.1, 0.2, 0.7])  # worth 0.68; the uniform holdout 0.5
    synthetic_shadow_log(url, 1200, {"Same": live}, seed=7, live=live, holdout_share=0.3)
    run = offpolicy.run(offpolicy.OPEConfig(url=url, out_dir=tmp_path / "ope", shadow=True,
                                            n_bootstrap=400, seed=1))
    assert run.shadow is not None
    (same,) = run.shadow
    for e in ("ips", "snips", "dr"):
        value, low, high = same.difference[e]
        assert low <= 0.0 <= high, (e, same.difference[e])
        assert value == pytest.approx(0.0, abs=1e-12)
    assert same.holdout == {"share 0.3, baseline uniform": 1200}
    truth = 0.3 * RATES.mean() + 0.7 * float(live @ RATES)  # the live policy served as logged
    estimate = same.reports["shadow Same"].estimates["snips"]
    assert estimate.ci_low <= truth <= estimate.ci_high
    assert cli_main(["ope", "--shadow", "--db", url, "--out", str(tmp_path / "cli"),
                     "--bootstrap", "100"]) == 0
    assert ("both rows under the live holdout (share 0.3, baseline uniform: 1200 decisions)"
            in capsys.readouterr().out)


def test_ope_and_ope_shadow_fit_one_reward_model(tmp_path: Path) -> None:
    """Found by attack: ``ope`` fitted the DR reward model per gender x age segment and
    ``ope --shadow`` per arm only, so the logging policy's DR differed on the same decisions
    (0.5487 against 0.5499)."""
    url = f"sqlite:///{tmp_path / 'log.db'}"
    synthetic_shadow_log(url, 600, {"Other": np.array([0.2, 0.2, 0.6])}, seed=3,
                         segments=True)
    candidates = offpolicy.run(offpolicy.OPEConfig(url=url, out_dir=tmp_path / "ope",
                                                   n_bootstrap=0, linear=()))
    compared = offpolicy.run(offpolicy.OPEConfig(url=url, out_dir=tmp_path / "shadow",
                                                 n_bootstrap=0, shadow=True))
    assert candidates.result is not None and compared.shadow is not None
    assert "2 segments" in str(candidates.result.summary["segments"])
    logging = candidates.result.reports["logging"].estimates["dr"].value
    live = compared.shadow[0].reports[offpolicy.LIVE_ROW].estimates["dr"].value
    assert live == pytest.approx(logging, abs=1e-12)


def test_ope_shadow_on_a_log_without_shadow_records_says_so(
        tmp_path: Path, catalog: Dataset, fitted: dict[str, Recommender],
        capsys: pytest.CaptureFixture[str]) -> None:
    settings = make_settings(tmp_path, "sqlite", refresh_interval_s=HOUR)
    with worker(settings, catalog, fitted) as client:
        traffic(client, 5)
    assert cli_main(["ope", "--shadow", "--db", settings.resolved_db_url(), "--include-open",
                     "--out", str(tmp_path / "o")]) == 2
    assert "carries a shadow record (serve with --shadow-policy)" in capsys.readouterr().err


# ---------------------------------------------------------------------------- promotion vs purge
def settled_log(settings: Settings, catalog: Dataset, fitted: dict[str, Recommender]) -> float:
    """Traffic on the settings' store, every outcome settled; a purge cut after all of it."""
    with worker(settings, catalog, fitted) as client:
        traffic(client, 20)
        service = client.app.state.service
        service.store.settle_expired(time.time() + 2 * HOUR, 0.0, service.rules)
    return time.time() + 4 * HOUR


def run_purge(settings: Settings, catalog: Dataset, cut: float) -> PurgeResults:
    result = purge(settings, datetime.fromtimestamp(cut, UTC).isoformat(), catalog=catalog,
                   now=cut + settings.retention_s + 1.0)
    assert isinstance(result, PurgeResults) and result.deleted, str(result)
    return result


def test_a_purge_between_the_promote_check_and_its_record_refuses_the_promotion(
        tmp_path: Path, backend: str, catalog: Dataset, fitted: dict[str, Recommender],
        monkeypatch: pytest.MonkeyPatch) -> None:
    # Review finding 8: promote read "not purged", a purge folded the log under the live policy,
    # then the promotion was recorded over a fold snapshot its policy never folded.
    settings = make_settings(tmp_path, backend, refresh_interval_s=HOUR, shadow_policy="UCB1")
    cut = settled_log(settings, catalog, fitted)
    store = open_store(settings.resolved_db_url(), create=False)
    try:
        record = store.record_promotion

        def purge_first(*args: object, **kwargs: object) -> int:
            run_purge(settings, catalog, cut)
            return record(*args, **kwargs)

        monkeypatch.setattr(store, "record_promotion", purge_first)
        with pytest.raises(ValueError, match=r"the log was purged \(fold snapshot at log "
                                             r"position [1-9]"):
            shadow.promote(settings, store)
        assert shadow.latest(store) is None and store.fold_mark() > 0
    finally:
        store.dispose()


def test_a_promotion_while_a_purge_folds_refuses_the_purge_and_the_rerun_folds_the_promoted(
        tmp_path: Path, backend: str, catalog: Dataset, fitted: dict[str, Recommender],
        monkeypatch: pytest.MonkeyPatch) -> None:
    # The other order: the purge folded under ThompsonSampling, a promotion to UCB1 came in
    # before its transaction; the snapshot would hold the old policy's state under the new one.
    settings = make_settings(tmp_path, backend, refresh_interval_s=HOUR, shadow_policy="UCB1")
    cut = settled_log(settings, catalog, fitted)
    original = Store.purge

    def promote_first(self: Store, *args: object, **kwargs: object) -> dict[str, int]:
        shadow.promote(settings, self)
        return original(self, *args, **kwargs)

    monkeypatch.setattr(Store, "purge", promote_first)
    with pytest.raises(CommandError, match=r"a promotion \(#1\) was recorded while this purge "
                                           r"folded the policy in force at #0"):
        purge(settings, datetime.fromtimestamp(cut, UTC).isoformat(), catalog=catalog,
              now=cut + settings.retention_s + 1.0)
    monkeypatch.setattr(Store, "purge", original)
    store = open_store(settings.resolved_db_url(), create=False)
    try:
        assert store.fold_mark() == 0 and shadow.latest(store).policy == "UCB1"
    finally:
        store.dispose()
    report = run_purge(settings, catalog, cut)
    assert report.snapshot.policy == "UCB1" and ": UCB1 over " in str(report)
    rebuilt = rebuild_state(settings)
    assert rebuilt.exit_code == 0 and str(rebuilt).endswith("match: yes"), str(rebuilt)


# ---------------------------------------------------------------------------- the arm draw
def test_the_one_arm_draw_rule_searches_the_cdf_and_clamps_to_the_last_arm() -> None:
    cdf = np.array([0.2, 0.5, 1.0])
    got = [draw_arm(cdf, u) for u in (0.0, 0.1999, 0.2, 0.4999, 0.5, 0.99999)]
    assert got == [0, 0, 1, 1, 2, 2]  # the first arm whose cumulative probability exceeds u
    short = np.array([0.3, 0.6, 0.9999999])  # float sums ending below u: the last arm
    assert draw_arm(short, 0.99999995) == 2
    rng = np.random.default_rng(0)
    us = rng.random(1000)
    want = np.minimum(np.searchsorted(cdf, us, side="right"), 2)
    assert [draw_arm(cdf, u) for u in us] == want.tolist()
    # Arms of probability 0 (equal cumulative sums) are never drawn, even at u on the tie.
    ties = np.array([0.0, 0.25, 0.25, 0.75, 1.0])
    us = np.concatenate([rng.random(1000), ties[:-1]])
    want = np.minimum(np.searchsorted(ties, us, side="right"), 4)
    got = [draw_arm(ties, u) for u in us]
    assert got == want.tolist() and not {0, 2} & set(got)


@pytest.mark.parametrize(("extra", "served"), [
    ({}, "sppsssssspsppsssppspssps"),
    ({"holdout_share": 0.4}, "psssppssppsppsssssssspps"),
    ({"shadow_policy": "UCB1"}, "sppsssssspsppsssppspssps")])
def test_the_seeded_arm_streams_are_those_before_the_draw_rule_was_shared(
        tmp_path: Path, catalog: Dataset, fitted: dict[str, Recommender], extra: dict,
        served: str) -> None:
    # The first letters of the arms served under seed 11 (floor 0.2), recorded with the three
    # draws written out in service.py, holdout.py and shadow.py before they shared draw_arm:
    # the same generator calls, so the same floats and the same arms (a shadow too: it draws
    # from the event id, never from the service's generator).
    settings = make_settings(tmp_path, "sqlite", seed=11, refresh_interval_s=HOUR,
                             exploration_floor=0.2, **extra)
    arms = []
    with worker(settings, catalog, fitted) as client:
        for i in range(24):
            body = client.get("/recommendations", params={"user_id": 1 + i % 30, "k": 3}).json()
            arms.append(body["arm"])
            if body["arm"] == "svd":
                assert client.post("/feedback", json={
                    "user_id": body["user_id"], "movie_id": body["items"][0]["movie_id"],
                    "feedback_type": "like", "event_id": body["event_id"]}).status_code == 201
            if i % 6 == 5:
                client.app.state.service.refresh()
    assert "".join(a[0] for a in arms) == served


def test_a_promotion_after_discount_switches_is_the_fold_on_every_worker(
        tmp_path: Path, backend: str, catalog: Dataset, fitted: dict[str, Recommender]) -> None:
    # (The reviewer's test.) Worker a runs the shadow (the promotion takes its snapshot),
    # worker b does not (it folds the promoted policy from the log's start, the version
    # switches included: a discount is not idempotent, so a switch missed or applied twice
    # shows). The last log position before the promotion is a switch.
    common: dict = {"posterior_carryover": "discount", "carryover_discount": 0.5,
                    "gate_enabled": False, "refresh_interval_s": HOUR}
    with_shadow = make_settings(tmp_path, backend, shadow_policy="LinTS",
                                shadow_policy_params={"scale": 0.5}, **common)
    without = with_shadow.model_copy(update={"shadow_policy": None,
                                             "shadow_policy_params": {}})
    promoted = with_shadow.model_copy(update={"policy": "LinTS",
                                              "policy_params": {"scale": 0.5}})
    url = with_shadow.resolved_db_url()

    def assert_the_fold(clients: tuple[TestClient, ...]) -> None:
        for client in clients:
            client.app.state.service.refresh()
            state = client.get("/admin/policy-state", headers=AUTH).json()
            assert state["policy"]["name"] == "LinTS"
            want = fold_stats(url, promoted, state["log_seq"])
            for key, value in state["state"]["stats"].items():
                np.testing.assert_allclose(np.asarray(value, float),
                                           np.asarray(want[key], float), rtol=1e-9,
                                           atol=1e-12, err_msg=key)

    with worker(with_shadow, catalog, fitted) as a, worker(without, catalog, fitted) as b:
        traffic(a, 20)
        traffic(b, 10)
        assert a.post("/admin/retrain", headers=AUTH).json()["status"] == "live"
        traffic(a, 10)
        traffic(b, 10)
        assert a.post("/admin/retrain", headers=AUTH).json()["status"] == "live"
        b.app.state.service.refresh()
        assert a.post("/admin/shadow/promote", headers=AUTH).status_code == 200
        assert_the_fold((a, b))
        traffic(b, 10)
        traffic(a, 10)
        assert_the_fold((a, b))
        rebuilt = rebuild_state(with_shadow, service=a)
        assert rebuilt.exit_code == 0, str(rebuilt)


def test_the_shadow_commands_take_the_port_of_the_service_they_check(
        tmp_path: Path, catalog: Dataset, fitted: dict[str, Recommender],
        capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch) -> None:
    """shadow status / promote ask a running worker, but had no --port (rebuild-state has):
    only RECBANDITS_PORT reached one other than 8000 (found by attack)."""
    settings = make_settings(tmp_path, "sqlite", refresh_interval_s=HOUR)
    with worker(settings, catalog, fitted) as client:
        traffic(client, 5)
    monkeypatch.setenv("RECBANDITS_ADMIN_TOKEN", TOKEN)
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        free = probe.getsockname()[1]
    common = ["--db", settings.resolved_db_url(), "--state-dir", str(tmp_path / "state"),
              "--port", str(free)]
    assert cli_main(["shadow", "status", *common]) == 0
    assert f"service: no service answered at http://127.0.0.1:{free}" in capsys.readouterr().out
    assert cli_main(["shadow", "promote", *common]) == 1  # no shadow: nothing to promote
    assert "no shadow policy to promote" in capsys.readouterr().err


def test_status_against_a_worker_of_a_context_free_policy_with_contextual_settings(
        tmp_path: Path, catalog: Dataset, fitted: dict[str, Recommender]) -> None:
    """Found by attack: settings naming LinTS against a worker running Thompson Sampling were
    refused ("LinTS is contextual: n_features is required", exit 2) when a worker answered;
    they differ, which status says (the dimension comes from the log's latest decision)."""
    served = make_settings(tmp_path, "sqlite", refresh_interval_s=HOUR)
    with worker(served, catalog, fitted) as client:
        traffic(client, 5)
        text = str(shadow_status(served.model_copy(update={"policy": "LinTS"}),
                                 service=client))
    assert "service: NOT these policies: the service at http://testserver runs live " \
        "ThompsonSampling {" in text
    assert "these settings give live LinTS {" in text and '"n_features": ' in text
    assert "latest decision logged by: ThompsonSampling {" in text and "(NOT the live" in text
