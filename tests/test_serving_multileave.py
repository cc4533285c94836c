"""Multileaved slates in the service (``slate_mode = "multileave"``): the slate is the team draft
of the logged rankings, an event credits its item's arm once, the settle sweep gives every
uncredited arm its default reward once, and the policy is the fold of the log, mixed logs too.

Arms are SVD, popularity and random fitted on the small synthetic catalogue of ``conftest.py``;
both stores. Team-draft fairness is tested with the lab's code
(``tests/test_bandits_multileave.py``).
"""

from __future__ import annotations

import time
from collections import Counter
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import pytest
import sqlalchemy as sa
from fastapi.testclient import TestClient
from pydantic import ValidationError
from test_serving_support import (
    ADMIN_TOKEN,
    assert_log_invariants,
    assert_workers_are_the_fold,
    read_table,
    store_url,
)

from arms.base import Recommender
from arms.data.dataset import Dataset
from bandits.multileave import fill_slate, order_probability
from experiments.cli import main as cli_main
from serving.app import create_app
from serving.armset import fit_arms
from serving.commands import credit
from serving.multileave import credit_report, format_credit
from serving.results import CreditResults, PurgeResults
from serving.settings import Settings
from serving.store import open_store
from serving.store.tables import arm_state, decisions, feedback, outcomes

ARMS = ["svd", "popularity", "random"]


@pytest.fixture(scope="module")
def three_arms(serving_catalog: Dataset,
               serving_arms: dict[str, Recommender]) -> dict[str, Recommender]:
    return {**serving_arms, **fit_arms(["random"], serving_catalog, seed=0)}


@pytest.fixture(params=["sqlite", "postgresql"])
def settings(request: pytest.FixtureRequest, tmp_path: Path) -> Settings:
    # No sweep of its own during a test: the tests settle with a clock past the window.
    return Settings(state_dir=tmp_path / "state", db=store_url(request.param, tmp_path),
                    arms=ARMS, seed=3, refresh_interval_s=0.05, sweep_interval_s=600,
                    slate_mode="multileave", multileave_arms=2, admin_token=ADMIN_TOKEN,
                    propensity_grid=256)


def _client(settings: Settings, catalog: Dataset, arms: dict[str, Recommender]) -> TestClient:
    return TestClient(create_app(settings, catalog=catalog, arms=arms))


@pytest.fixture
def client(settings: Settings, serving_catalog: Dataset,
           three_arms: dict[str, Recommender]) -> Iterator[TestClient]:
    with _client(settings, serving_catalog, three_arms) as c:
        yield c


def recommend(client: TestClient, user_id: int, k: int = 6) -> dict:
    response = client.get("/recommendations", params={"user_id": user_id, "k": k})
    assert response.status_code == 200, response.text
    return response.json()


def like(client: TestClient, slate: dict, position: int, kind: str = "like"):
    item = slate["items"][position - 1]
    return client.post("/feedback", json={"user_id": slate["user_id"],
                                          "movie_id": item["movie_id"], "feedback_type": kind,
                                          "event_id": slate["event_id"]})


def settle_past_the_window(client: TestClient) -> int:
    """Run the settle sweep as if every window had closed (no sleeping)."""
    service = client.app.state.service
    claimed = service.store.settle_expired(time.time() + service.settings.reward_window_s + 1,
                                           0.0, service.rules)
    service.refresh()
    return claimed


def decision_row(settings: Settings, event_id: str) -> dict:
    (row,) = [r for r in read_table(settings.db, decisions) if r["event_id"] == event_id]
    return row


def outcome_rows(settings: Settings, event_id: str) -> dict[str, dict]:
    return {r["arm"]: r for r in read_table(settings.db, outcomes) if r["event_id"] == event_id}


def test_the_slate_is_the_team_draft_of_the_logged_rankings(
        client: TestClient, settings: Settings) -> None:
    service = client.app.state.service
    users = [int(u) for u in service.arm_set.user_index][:8]
    seen_sets = set()
    for user in users:
        slate = recommend(client, user, k=7)
        row = decision_row(settings, slate["event_id"])
        ml = row["multileave"]
        chosen = ml["arms"]
        seen_sets.add(tuple(chosen))
        # The response names each item's arm; the set's name and probability are the decision's.
        assert len(chosen) == 2 and set(chosen) <= set(ARMS)
        assert slate["arm"] == row["arm"] == "+".join(chosen)
        assert [i["arm"] for i in slate["items"]] == ml["teams"]
        assert [i["movie_id"] for i in slate["items"]] == row["slate"]
        assert [i["position"] for i in slate["items"]] == list(range(1, 8))
        # Team draft: every round of two positions has each arm once.
        assert all(sorted(ml["order"][j:j + 2]) == [0, 1] for j in range(0, 6, 2))
        assert ml["teams"] == [chosen[j] for j in ml["order"]]
        # Reproduced from the log: the team draft of the logged rankings by the logged order.
        lists = np.array([[ml["rankings"][a] for a in chosen]])
        items, _ = fill_slate(lists, np.array([ml["order"]]))
        assert items[0].tolist() == row["slate"]
        # Each ranking is the arm's own top k for the user (the single-arm slate's code).
        arm_set = service.arm_set
        for arm in chosen:
            none = np.empty(0, np.int64)
            top, _ = service._arm_top(arm_set, arm, user, 7,
                                      (none, none.astype(float), none, none, none))
            assert ml["rankings"][arm] == arm_set.item_ids[top].tolist()
        # The propensity is P(set) under the policy; the pmf is over the sets.
        assert slate["propensity"] == row["propensity"] == ml["set_probability"]
        assert row["pmf"][row["arm"]] == pytest.approx(row["propensity"])
        assert sum(row["pmf"].values()) == pytest.approx(1.0)
        assert sum(ml["inclusion"].values()) == pytest.approx(2.0)
        assert ml["order_probability"] == order_probability(2, 7) == 1 / (2 ** 3 * 2)
        assert not row["cold_start"] and row["context"]["k"] == 7
    assert len(seen_sets) >= 2  # the policy draws sets, not one fixed pair
    # Each of the two arms of every decision counts a pull.
    pulls = {r["arm"]: r["pulls"] for r in read_table(settings.db, arm_state)}
    assert sum(pulls.values()) == 2 * len(users)


def test_a_like_credits_the_arm_of_its_position_once(client: TestClient,
                                                     settings: Settings) -> None:
    slate = recommend(client, 1)
    fifth = slate["items"][4]
    first = like(client, slate, 5)
    assert first.status_code == 201, first.text
    assert first.json()["arm"] == fifth["arm"] and first.json()["policy_updated"]
    again = like(client, slate, 5)  # a duplicate: answered with the stored row, counts nothing
    assert again.status_code == 200 and again.json()["id"] == first.json()["id"]
    # Another like on an item of the same arm: stored, the arm's outcome is decided already.
    same = next(p for p, i in enumerate(slate["items"], 1) if i["arm"] == fifth["arm"] and p != 5)
    later = like(client, slate, same)
    assert later.status_code == 201 and not later.json()["policy_updated"]
    decided = outcome_rows(settings, slate["event_id"])
    assert list(decided) == [fifth["arm"]]
    assert decided[fifth["arm"]]["reward"] == 1.0
    counted = [r for r in read_table(settings.db, feedback) if r["counted"]]
    assert [r["movie_id"] for r in counted] == [fifth["movie_id"]]
    assert decided[fifth["arm"]]["feedback_seq"] == counted[0]["seq"]
    policy = client.get("/policy").json()
    assert (policy["slate_mode"], policy["multileave_arms"]) == ("multileave", 2)
    inclusion = [a["inclusion_probability"] for a in policy["arms"]]
    assert sum(inclusion) == pytest.approx(2.0)
    assert max(inclusion) == next(a["inclusion_probability"] for a in policy["arms"]
                                  if a["arm"] == fifth["arm"])  # the one arm with a success
    # The fold: the credited arm gained one success, no other arm anything yet.
    stats = client.get("/admin/policy-state",
                       headers={"Authorization": f"Bearer {ADMIN_TOKEN}"}).json()
    successes = dict(zip(ARMS, stats["state"]["stats"]["successes"], strict=True))
    assert successes == {a: float(a == fifth["arm"]) for a in ARMS}


def test_the_settle_sweep_gives_the_uncredited_arms_the_default_once(
        settings: Settings, serving_catalog: Dataset,
        three_arms: dict[str, Recommender]) -> None:
    settings = settings.model_copy(update={"multileave_arms": 3, "default_reward": 0.0})
    with _client(settings, serving_catalog, three_arms) as client:
        slate = recommend(client, 2)
        credited = slate["items"][1]["arm"]
        assert like(client, slate, 2).status_code == 201
        assert settle_past_the_window(client) == 1
        assert settle_past_the_window(client) == 0  # claimed once
        decided = outcome_rows(settings, slate["event_id"])
        assert sorted(decided) == sorted(ARMS)
        assert {a: r["reward"] for a, r in decided.items()} == {
            a: float(a == credited) for a in ARMS}
        assert [a for a, r in decided.items() if r["feedback_seq"] is None] == sorted(
            set(ARMS) - {credited}, key=list(decided).index)
        # A like after the window's close changes nothing: every arm is decided.
        late = like(client, slate, 3)
        assert late.status_code == 201 and not late.json()["policy_updated"]
        assert len(outcome_rows(settings, slate["event_id"])) == 3
        assert_workers_are_the_fold(client, settings.db, settings, workers=1)
    assert_log_invariants(settings.db, settings)


def test_a_mixed_log_folds_across_restarts(settings: Settings, serving_catalog: Dataset,
                                           three_arms: dict[str, Recommender]) -> None:
    rng = np.random.default_rng(0)
    single = settings.model_copy(update={"slate_mode": "single"})
    for mode in (single, settings, single):
        with _client(mode, serving_catalog, three_arms) as client:
            for user in rng.integers(1, 60, size=12).tolist():
                slate = recommend(client, user, k=4)
                position = int(rng.integers(1, 5))
                if rng.random() < 0.5:
                    kind = "like" if rng.random() < 0.7 else "dislike"
                    assert like(client, slate, position, kind).status_code == 201
            settle_past_the_window(client)
            assert_workers_are_the_fold(client, settings.db, settings, workers=1)
    out = assert_log_invariants(settings.db, settings)
    rows = [r for r in read_table(settings.db, decisions) if not r["cold_start"]]
    assert sum(r["multileave"] is not None for r in rows) == 12
    assert " 0 undecided)" in out
    # One outcome per credited arm: one for a single-arm decision, two for a multileaved one.
    assert len(read_table(settings.db, outcomes)) == sum(
        1 if r["multileave"] is None else 2 for r in rows)


@pytest.mark.parametrize("backend", ["sqlite", "postgresql"])
@pytest.mark.parametrize("policy", ["DiscountedThompsonSampling", "SlidingWindowThompsonSampling"])
def test_every_beta_policy_multileaves_and_rebuilds_as_served(
        policy: str, backend: str, tmp_path: Path, serving_catalog: Dataset,
        three_arms: dict[str, Recommender]) -> None:
    # The settings refused them (policy != "ThompsonSampling") though multileave_view takes
    # any Beta policy: two answers to one question (review).
    settings = Settings(state_dir=tmp_path / "state", db=store_url(backend, tmp_path),
                        arms=ARMS, seed=3, refresh_interval_s=0.05, sweep_interval_s=600,
                        slate_mode="multileave", multileave_arms=2, propensity_grid=256,
                        admin_token=ADMIN_TOKEN, policy=policy, policy_params={"discount": 0.9}
                        if policy.startswith("Discounted") else {"window": 5})
    rng = np.random.default_rng(1)
    with _client(settings, serving_catalog, three_arms) as client:
        for user in rng.integers(1, 60, size=10).tolist():
            slate = recommend(client, user, k=4)
            assert len(slate["arm"].split("+")) == 2
            assert like(client, slate, int(rng.integers(1, 5))).status_code == 201
        settle_past_the_window(client)
        assert_workers_are_the_fold(client, settings.db, settings, workers=1)
    assert " 0 undecided)" in assert_log_invariants(settings.db, settings)


def test_credit_report_on_hand_made_outcomes() -> None:
    ml = {"a": ["svd", "popularity"], "b": ["svd", "popularity"], "c": ["popularity", "random"],
          "d": ["svd", "random"]}
    # a: both teams clicked (each outcome decided by its first click), svd's twice: svd wins
    # the slate by the published rule (the outcomes alone tied it); b: one click each, a tie;
    # c: random's click only; d: its window still open (no comparison).
    clicks = {"a": {"svd": 2.0, "popularity": 1.0}, "b": {"svd": 1.0, "popularity": 1.0},
              "c": {"random": 1.0}}
    report = credit_report(
        [(e, {"arms": arms}) for e, arms in ml.items()],
        [("a", "svd", 1.0), ("a", "popularity", 1.0), ("b", "svd", 1.0),
         ("b", "popularity", 1.0), ("c", "popularity", 0.0), ("c", "random", 1.0),
         ("d", "svd", 0.0)],  # d's random still undecided
        clicks, ARMS, n_bootstrap=200, seed=0)
    arms = report.arms.set_index("arm")
    assert arms["impressions"].to_dict() == {"svd": 3, "popularity": 3, "random": 2}
    assert arms["decided"].to_dict() == {"svd": 3, "popularity": 3, "random": 1}
    assert arms["credited"].to_dict() == {"svd": 2.0, "popularity": 2.0, "random": 1.0}
    assert arms.loc["svd", "rate"] == pytest.approx(2 / 3)
    assert arms.loc["svd", "low"] <= 2 / 3 <= arms.loc["svd", "high"]
    assert np.isnan(arms.loc["random", "low"])  # one decided slate: no interval
    wins = report.wins.set_index(["arm", "versus"])
    assert wins.loc[("svd", "popularity")].to_dict() == {
        "comparisons": 2, "wins": 1, "losses": 0, "ties": 1, "win_rate": 1.0}
    assert wins.loc[("random", "popularity"), "win_rate"] == 1.0
    assert ("svd", "random") not in wins.index  # d's window is open
    assert report.n_decisions == 4
    assert "(none yet" not in format_credit(report)
    # No closed slate: the pairwise table says so (a header alone said nothing).
    undecided = credit_report([("d", {"arms": ["svd", "random"]})], [("d", "svd", 0.0)], {},
                              ARMS, n_bootstrap=200, seed=0)
    assert format_credit(undecided).endswith(
        "(none yet: no slate showing two arms has its reward window closed)")


def test_credit_counts_each_teams_clicks_on_the_log(client: TestClient,
                                                     settings: Settings) -> None:
    # Radlinski, Kurup & Joachims (2008): the team with more clicks on its items wins. Two
    # clicks on one team's items and one on the other's is a win, though each arm's outcome
    # (its first click) is 1.
    slate = recommend(client, 1)
    by_arm: dict[str, list[int]] = {}
    for position, item in enumerate(slate["items"], start=1):
        by_arm.setdefault(item["arm"], []).append(position)
    (first, two), (second, one) = sorted(by_arm.items())[0], sorted(by_arm.items())[1]
    for position in (*two[:2], one[0]):
        assert like(client, slate, position, "click").status_code == 201
    late = like(client, slate, one[1], "dislike")  # reward 0: worth no click
    assert late.status_code == 201
    settle_past_the_window(client)
    result = credit(settings, n_bootstrap=100)
    assert isinstance(result, CreditResults), str(result)
    arms = result.report.arms.set_index("arm")
    assert arms.loc[first, "credited"] == arms.loc[second, "credited"] == 1.0
    wins = result.report.wins.set_index(["arm", "versus"])
    assert wins.loc[(first, second)].to_dict() == {
        "comparisons": 1, "wins": 1, "losses": 0, "ties": 0, "win_rate": 1.0}
    assert wins.loc[(second, first), "losses"] == 1
    # A click and a like on one item are one clicked item: two clicked items of the other
    # team win (review: every event counted, so one item's two events beat two items').
    slate = recommend(client, 2)
    by_arm = {}
    for position, item in enumerate(slate["items"], start=1):
        by_arm.setdefault(item["arm"], []).append(position)
    (busy, positions), (spread, others) = sorted(by_arm.items())
    for position, kind in ((positions[0], "click"), (positions[0], "like"),
                           (others[0], "click"), (others[1], "click")):
        assert like(client, slate, position, kind).status_code == 201
    settle_past_the_window(client)
    result = credit(settings, n_bootstrap=100)
    assert isinstance(result, CreditResults), str(result)
    wins = result.report.wins.set_index(["arm", "versus"])
    again = {spread, busy} == {first, second}  # the pair of the first slate again
    assert wins.loc[(spread, busy)].to_dict() | {"win_rate": 0} == {
        "comparisons": 1 + again, "wins": 1 + (again and spread == first),
        "losses": int(again and spread == second), "ties": 0, "win_rate": 0}


def test_credit_command_reads_the_log(client: TestClient, settings: Settings) -> None:
    for user in range(1, 7):
        slate = recommend(client, user)
        like(client, slate, 1)
    result = credit(settings, n_bootstrap=100)
    assert isinstance(result, CreditResults) and result.exit_code == 0, str(result)
    assert "note: 6 (decision, arm) outcomes are still open" in str(result)
    settle_past_the_window(client)
    result = credit(settings, n_bootstrap=100)
    assert isinstance(result, CreditResults), str(result)
    text = str(result)
    assert "6 multileaved decisions" in text and "win rate" in text
    assert "still open" not in text
    arms = result.report.arms.set_index("arm")
    assert result.report.n_decisions == 6
    assert arms["decided"].sum() == arms["impressions"].sum() == 12  # two arms a slate
    assert arms["credited"].sum() == 6.0  # one like a slate, credited to one arm
    store = open_store(settings.db, read_only=True)
    try:
        rows, decided, closed, clicked = store.multileave_rows()
    finally:
        store.dispose()
    assert len(rows) == 6 and len(decided) == 12 and len(closed) == 6 and len(clicked) == 6
    assert sum(r for _, _, r in decided) == 6.0  # each first item credited its arm once
    # ope evaluates single-arm policies: on this log it says what it holds and where to look.
    from serving import offpolicy
    with pytest.raises(offpolicy.EmptyLogError, match="multileaved decisions: 6, whose arms "
                                                      "'recbandits credit' compares"):
        offpolicy.read_log(settings.db)


def test_k_below_m_and_foreign_items_are_refused(client: TestClient) -> None:
    response = client.get("/recommendations", params={"user_id": 1, "k": 1})
    assert response.status_code == 422
    assert "k=1 is smaller than multileave_arms=2" in response.json()["detail"]
    slate = recommend(client, 1)
    shown = {i["movie_id"] for i in slate["items"]}
    other = next(m for m in client.app.state.service.arm_set.item_ids.tolist()
                 if m not in shown)
    bad = client.post("/feedback", json={"user_id": 1, "movie_id": other,
                                         "feedback_type": "like", "event_id": slate["event_id"]})
    assert bad.status_code == 422 and "was not in the slate" in bad.json()["detail"]


def test_a_newcomer_is_served_outside_the_policy(client: TestClient) -> None:
    slate = recommend(client, 10_000_001)
    assert slate["cold_start"] and slate["arm"] == "popularity"
    assert {i["arm"] for i in slate["items"]} == {"popularity"}


@pytest.mark.parametrize(("update", "message"), [
    ({"multileave_arms": 4}, r"multileave_arms=4 is more than the 3 arms served"),
    ({"multileave_arms": 1}, r"multileave_arms\n  Input should be greater than or equal to 2"),
    ({"policy": "LinTS"}, r"a Beta posterior per arm; policy must be one of \['ThompsonSampling', "
                          r"'DiscountedThompsonSampling', 'SlidingWindowThompsonSampling'\], "
                          r"got 'LinTS'"),
    ({"slate_mode": "interleave"}, r"slate_mode\n  Input should be 'single' or 'multileave'"),
])
def test_bad_multileave_settings_fail_at_start(update: dict, message: str) -> None:
    with pytest.raises(ValidationError, match=message):
        Settings(arms=ARMS, **{"slate_mode": "multileave", **update})


def test_serve_refuses_more_multileaved_arms_than_served(
        capsys: pytest.CaptureFixture[str]) -> None:
    code = cli_main(["serve", "--slate-mode", "multileave", "--multileave-arms", "3",
                     "--arms", "svd,popularity", "--dataset", "synthetic"])
    assert code == 2
    assert "multileave_arms=3 is more than the 2 arms served" in capsys.readouterr().err


@pytest.mark.parametrize("backend", ["sqlite", "postgresql"])
def test_an_old_store_gains_the_multileave_schema(backend: str, tmp_path: Path) -> None:
    url = store_url(backend, tmp_path)
    store = open_store(url)
    store.create_schema(ARMS)
    engine = sa.create_engine(url)
    with engine.begin() as conn:  # the schema before multileaving
        conn.exec_driver_sql("ALTER TABLE decisions DROP COLUMN multileave")
        conn.exec_driver_sql("DROP TABLE outcomes")
        conn.exec_driver_sql(
            "CREATE TABLE outcomes (event_id VARCHAR(32) PRIMARY KEY, seq BIGINT NOT NULL UNIQUE,"
            " arm VARCHAR(64) NOT NULL, reward FLOAT NOT NULL, decided_at FLOAT NOT NULL, "
            "feedback_seq BIGINT)")
        conn.exec_driver_sql("INSERT INTO outcomes VALUES ('e1', 1, 'svd', 1.0, 5.0, NULL)")
    store.create_schema(ARMS)
    inspector = sa.inspect(engine)
    assert inspector.get_pk_constraint("outcomes")["constrained_columns"] == ["event_id", "arm"]
    assert "multileave" in {c["name"] for c in inspector.get_columns("decisions")}
    assert [(r["event_id"], r["arm"], r["reward"]) for r in read_table(url, outcomes)] == [
        ("e1", "svd", 1.0)]
    store.dispose()
    engine.dispose()


@pytest.mark.slow
def test_two_workers_credit_each_arm_once_and_serve_the_fold(tmp_path: Path) -> None:
    # PostgreSQL: the store where two workers' batches commit concurrently (SQLite serialises).
    from concurrent.futures import ThreadPoolExecutor

    import httpx2
    from test_serving_support import ServiceProcess, wait_for_workers

    url = store_url("postgresql", tmp_path)
    env = {"RECBANDITS_SYNTHETIC_USERS": "120", "RECBANDITS_SYNTHETIC_ITEMS": "200",
           "RECBANDITS_SYNTHETIC_RATINGS": "3000", "RECBANDITS_REFRESH_INTERVAL_S": "0.05",
           "RECBANDITS_ADMIN_TOKEN": ADMIN_TOKEN, "RECBANDITS_PROPENSITY_GRID": "256"}
    args = ["--dataset", "synthetic", "--arms", ",".join(ARMS), "--seed", "1", "--state-dir",
            str(tmp_path / "state"), "--db", url, "--slate-mode", "multileave",
            "--multileave-arms", "2"]
    settings = Settings(db=url, arms=ARMS, seed=1, state_dir=tmp_path / "state",
                        slate_mode="multileave")
    server = ServiceProcess([*args, "--workers", "2"], env, tmp_path / "server.log")
    try:
        wait_for_workers(server.base, 2)
        with httpx2.Client(base_url=server.base, timeout=30) as client:
            slates = [client.get("/recommendations", params={"user_id": u, "k": 4}).json()
                      for u in range(1, 41)]
        payloads = [{"user_id": s["user_id"], "movie_id": item["movie_id"],
                     "feedback_type": ("like", "click", "dislike")[(i + j) % 3],
                     "event_id": s["event_id"]}
                    for i, s in enumerate(slates) for j, item in enumerate(s["items"])]

        def send(payload: dict) -> int:
            with httpx2.Client(base_url=server.base, timeout=30) as c:
                return c.post("/feedback", json=payload).status_code

        with ThreadPoolExecutor(8) as pool:  # every payload twice, interleaved
            statuses = list(pool.map(send, payloads + payloads[::-1]))
        assert len(assert_workers_are_the_fold(server.base, url, settings, workers=2)) == 2
    finally:
        server.stop()
    assert statuses.count(201) == statuses.count(200) == len(payloads) == 160
    decided = [(r["event_id"], r["arm"]) for r in read_table(url, outcomes)]
    # Every (decision, arm) had rewarded feedback on its items: one outcome each, no more.
    assert len(decided) == len(set(decided)) == 2 * 40
    assert sum(r["counted"] for r in read_table(url, feedback)) == 80
    assert_log_invariants(url, settings)


@pytest.mark.slow
def test_readme_multileave_example_works_when_pasted(tmp_path: Path) -> None:
    import subprocess
    import sys

    from test_serving_newcomer import readme_block
    from test_serving_support import ServiceProcess

    script = readme_block("multileave-example")
    assert "localhost:8000" in script and "/tmp/ml-demo" in script
    state = str(tmp_path / "state")
    server = ServiceProcess(["--dataset", "synthetic", "--arms", "svd,popularity,random",
                             "--state-dir", state, "--slate-mode", "multileave",
                             "--multileave-arms", "2"], {}, tmp_path / "server.log")
    try:
        script = (script.replace("localhost:8000", server.base.removeprefix("http://"))
                  .replace("/tmp/ml-demo", state)
                  .replace("recbandits credit", f"{sys.executable} -m experiments.cli credit"))
        run = subprocess.run(["bash", "-e", "-o", "pipefail", "-c", script],
                             capture_output=True, text=True, timeout=300)
    finally:
        server.stop()
    assert run.returncode == 0, run.stderr
    lines = run.stdout.splitlines()
    assert lines[0].startswith('{"arm":"') and '"propensity":' in lines[0]
    fifth_arm = lines[5].split(",")[-1].strip('"]')  # the items' lines follow the slate's
    assert f'{{"arm":"{fifth_arm}","reward":1,' in lines[7]
    assert "1 multileaved decisions" in run.stdout and "win rate" in run.stdout


@pytest.mark.slow
def test_the_demo_page_names_each_movies_arm(tmp_path: Path) -> None:
    from test_demo_page import CHROMIUM_ARGS, ENV, _chromium, _unavailable, _wait_for_new_list
    from test_serving_support import ServiceProcess

    executable = _chromium()
    try:
        from playwright.sync_api import sync_playwright
    except ImportError as exc:
        _unavailable(f"playwright is not installed: {exc} (pip install -e '.[dev]')")
    server = ServiceProcess(["--dataset", "synthetic", "--arms", ",".join(ARMS), "--seed", "1",
                             "--state-dir", str(tmp_path / "state"), "--slate-mode",
                             "multileave"], ENV, tmp_path / "server.log")
    problems: list[str] = []
    try:
        with sync_playwright() as p:
            browser = p.chromium.launch(executable_path=executable, args=CHROMIUM_ARGS)
            page = browser.new_page(viewport={"width": 1280, "height": 900})
            page.on("pageerror", lambda exc: problems.append(f"page error: {exc}"))
            page.goto(f"{server.base}/?user=5", wait_until="domcontentloaded")
            page.wait_for_selector("#heading-user:text-is('5')")
            page.wait_for_selector("#recs[aria-busy='false'] li.movie")
            assert page.text_content("#served-by").startswith("Multileaved from ")
            arms = page.eval_on_selector_all("#recs li.movie", "els => els.map(e => "
                                             "[e.dataset.arm, e.querySelector('.item-arm')"
                                             ".textContent])")
            assert len(arms) == 10 and all(badge == f"from {arm}" for arm, badge in arms)
            assert len({arm for arm, _ in arms}) == 2
            event_id = page.get_attribute("#recs", "data-event-id")
            fifth = page.get_attribute("#recs li.movie:nth-child(5)", "data-movie-id")
            page.click(f"#recs li.movie[data-movie-id='{fifth}'] button.like")
            _wait_for_new_list(page, event_id)
            page.wait_for_selector("#last-reward:not([hidden])")
            assert page.get_attribute("#last-reward", "data-arm") == arms[4][0]
            assert f"gave {arms[4][0]} reward 1" in page.text_content("#last-reward")
            page.screenshot(path=str(tmp_path / "demo_multileave.png"), full_page=True)
            browser.close()
    finally:
        server.stop()
    assert not problems, problems


def test_a_purge_keeps_the_multileaved_folds(client: TestClient, settings: Settings,
                                             serving_catalog: Dataset) -> None:
    from datetime import UTC, datetime

    from serving.commands import purge

    rng = np.random.default_rng(1)
    for user in range(1, 9):
        slate = recommend(client, user, k=4)
        like(client, slate, int(rng.integers(1, 5)), ("like", "dislike")[user % 2])
    settle_past_the_window(client)
    recommend(client, 9, k=4)  # open: kept by the purge
    service = client.app.state.service
    whole = service.policy_model.replay(service.store.outcomes_after(0)).state_dict()["stats"]
    pulls = {r["arm"]: r["pulls"] for r in read_table(settings.db, arm_state)}
    cut = time.time() + 4 * 3600
    result = purge(settings, datetime.fromtimestamp(cut, UTC).isoformat(),
                   catalog=serving_catalog, now=cut + settings.retention_s + 1.0)
    assert isinstance(result, PurgeResults), str(result)
    assert result.deleted["decisions"] == 8 and result.deleted["outcomes"] == 16
    assert "deleted 8 decisions, 16 outcomes" in str(result)
    store = open_store(settings.db, create=False)
    try:
        fold = store.fold_snapshot()
    finally:
        store.dispose()
    (kept,) = read_table(settings.db, decisions)  # the open decision
    purged = Counter(pulls)
    purged.subtract(kept["multileave"]["arms"])  # each purged decision pulled both its arms
    assert fold is not None and fold.pulls == dict(+purged)
    assert fold.policy["state"]["stats"] == json_round_trip(whole)
    assert_log_invariants(settings.db, settings)


def json_round_trip(value: object) -> object:
    import json

    return json.loads(json.dumps(value))


def test_an_event_without_its_decision_credits_the_items_arm(client: TestClient,
                                                              settings: Settings) -> None:
    # Attributed to the user's latest decision showing the item (no event_id): the arm is
    # still the one that contributed the item.
    slate = recommend(client, 3)
    third = slate["items"][2]
    response = client.post("/events", json={"events": [
        {"user_id": 3, "item_id": third["movie_id"], "type": "click"}]})
    assert response.status_code == 201, response.text
    stored = response.json()["events"][0]
    assert (stored["event_id"], stored["arm"], stored["policy_updated"]) == (
        slate["event_id"], third["arm"], True)
    assert list(outcome_rows(settings, slate["event_id"])) == [third["arm"]]
