"""The service's commands return their figures (``serving.results``), on SQLite and PostgreSQL.

``rebuild-state``'s per-arm pulls, outcomes and rewards are the ones the requests made, and
``retrain``'s rating count and version are the log's; the text printed is ``str()`` of the same
object (its format is pinned in ``tests/test_cli_shape.py``).
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Iterator
from pathlib import Path

import pytest
from fastapi.testclient import TestClient
from test_serving_support import store_url

from arms.data.dataset import Dataset
from serving.app import create_app
from serving.commands import load_catalog, rebuild_state, retrain
from serving.results import RebuildStateResults
from serving.settings import Settings

ARMS = ["svd", "popularity"]


@pytest.fixture(params=["sqlite", "postgresql"])
def settings(request: pytest.FixtureRequest, tmp_path: Path) -> Settings:
    return Settings(state_dir=tmp_path / "state", db=store_url(request.param, tmp_path),
                    arms=ARMS, seed=3, dataset="synthetic", synthetic_users=60,
                    synthetic_items=80, synthetic_ratings=1200, refresh_interval_s=0.05)


@pytest.fixture
def client(settings: Settings) -> Iterator[TestClient]:
    # The catalogue retrain loads from the settings is the one the service was started on.
    catalog: Dataset = load_catalog(settings)
    with TestClient(create_app(settings, catalog=catalog)) as c:
        yield c


def test_rebuild_state_and_retrain_return_the_figures_of_the_log(
        client: TestClient, settings: Settings) -> None:
    served = []
    for user in range(1, 13):
        response = client.get("/recommendations", params={"user_id": user, "k": 5})
        assert response.status_code == 200, response.text
        served.append(response.json())
    # Users 1, 3, ..., 11 like their second movie (decided at once: reward 1); user 2 dislikes
    # one (decided: reward 0); the others send nothing (undecided until the window closes).
    rewarded = served[::2]
    for body in [*rewarded, served[1]]:
        kind = "like" if body in rewarded else "dislike"
        response = client.post("/feedback", json={
            "user_id": body["user_id"], "movie_id": body["items"][1]["movie_id"],
            "feedback_type": kind, "event_id": body["event_id"]})
        assert response.status_code == 201, response.text

    result = rebuild_state(settings)
    assert isinstance(result, RebuildStateResults), str(result)
    assert result.match and result.exit_code == 0 and not result.mismatches
    pulls = Counter(b["arm"] for b in served)
    likes = Counter(b["arm"] for b in rewarded)
    decided = likes + Counter([served[1]["arm"]])
    assert (result.n_decisions, result.n_feedback, result.n_outcomes, result.pending) == (
        12, 7, 7, 5)
    assert result.policy == "ThompsonSampling" and result.snapshot is None
    assert {a.arm: (a.pulls_stored, a.pulls_replayed, a.n_outcomes, a.reward_sum)
            for a in result.arms} == {
        arm: (pulls[arm], pulls[arm], decided[arm], float(likes[arm])) for arm in pulls}
    for a in result.arms:
        assert a.mean_reward == pytest.approx(likes[a.arm] / decided[a.arm]) if decided[a.arm] \
            else a.mean_reward != a.mean_reward  # NaN without an outcome
    assert str(result).splitlines()[0].endswith("(12 decisions, 7 feedback, 7 outcomes, "
                                                "5 undecided)")

    retrained = retrain(settings)
    assert (retrained.status, retrained.version, retrained.policy_version) == ("live", 2, 2)
    assert retrained.arms == tuple(ARMS) and retrained.dataset == load_catalog(settings).name
    assert retrained.n_feedback_ratings == 7 and retrained.exit_code == 0
    # Popularity learns from the stream and is never refitted (it was said to be retrained).
    assert retrained.live_arms == ("popularity",)
    assert str(retrained).startswith(f"retrained svd (popularity: learning from the stream, "
                                     f"carried over) on {retrained.dataset} plus 7 "
                                     "feedback ratings in ")


# A PostgreSQL URL where nothing listens (port 1 refuses at once): the store is down.
DOWN = "postgresql+psycopg://recbandits@127.0.0.1:1/recbandits"


@pytest.mark.parametrize("command", [
    ["models", "list"], ["models", "rollback"], ["models", "promote", "1"], ["rebuild-state"],
    ["purge", "--before", "2026-01-01", "--dry-run"], ["shadow", "status"],
    ["shadow", "promote"], ["holdout"], ["credit"], ["retrain"], ["ope"]])
def test_a_command_on_a_store_that_is_down_says_so_in_one_line_and_exits_3(
        command: list[str], tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    # Found by attack: each printed a 130-143 line traceback (exit 1, which rebuild-state
    # also gives for "match: NO").
    from experiments.cli import main

    where = ["--out", str(tmp_path / "ope")] if command == ["ope"] else ["--state-dir",
                                                                       str(tmp_path)]
    assert main([*command, "--db", DOWN, *where]) == 3
    out, err = capsys.readouterr()
    assert out == ""
    name = " ".join(command[:2]) if command[0] == "shadow" else command[0]  # shadow status
    assert err.startswith(f"recbandits {name}: the store is unavailable (connection"), err
    assert err.count("\n") == 1 and "Traceback" not in err and "retry later" in err
