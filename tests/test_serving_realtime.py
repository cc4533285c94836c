"""Arms that learn from each event in the service: read your writes on every worker, live arms
that are a fold of the log (identical after a restart), items added at run time.

Two ``TestClient`` apps on one store play two workers. Arms are fitted on a small synthetic
catalogue with the MovieLens schema.
"""

from __future__ import annotations

import copy
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import pytest
from fastapi.testclient import TestClient
from test_serving_support import store_url

from arms.base import Recommender
from arms.data import make_synthetic
from arms.data.dataset import Dataset
from serving.app import create_app
from serving.armset import fit_arms
from serving.rules import RuleBook
from serving.settings import Settings

TOKEN = "t0ken"
ARMS = ["autoencoder", "sequential", "cooccurrence", "popularity"]
AUTH = {"authorization": f"Bearer {TOKEN}"}


@pytest.fixture(scope="module")
def catalog() -> Dataset:
    return make_synthetic(150, 240, 4000, random_state=3)


@pytest.fixture(scope="module")
def fitted(catalog: Dataset) -> dict[str, Recommender]:
    return fit_arms(ARMS, catalog, seed=0)


def make_settings(tmp_path: Path, backend: str = "sqlite", **extra: object) -> Settings:
    values: dict = {"state_dir": tmp_path / "state", "db": store_url(backend, tmp_path),
                    "arms": ARMS, "seed": 11, "admin_token": TOKEN, "session_strength": 0.0,
                    "refresh_interval_s": 3600.0, **extra}
    return Settings(**values)


def app_client(settings: Settings, catalog: Dataset,
               fitted: dict[str, Recommender]) -> TestClient:
    # Each worker gets its own copies of the arms, as separate processes would.
    return TestClient(create_app(settings, catalog=catalog, arms=copy.deepcopy(fitted)))


@pytest.fixture
def two_workers(request: pytest.FixtureRequest, tmp_path: Path, catalog: Dataset,
                fitted: dict[str, Recommender]) -> Iterator[tuple[TestClient, TestClient]]:
    settings = make_settings(tmp_path, getattr(request, "param", "sqlite"))
    with app_client(settings, catalog, fitted) as a, app_client(settings, catalog, fitted) as b:
        yield a, b


def slate(client: TestClient, user_id: int, k: int = 10) -> dict:
    response = client.get("/recommendations", params={"user_id": user_id, "k": k})
    assert response.status_code == 200, response.text
    return response.json()


def expected_slate(client: TestClient, arm: str, user_id: int, items: list[int],
                   ratings: list[float], k: int) -> list[int]:
    """The arm's top-k for the user from their events, computed from the model directly."""
    service = client.app.state.service
    model = service.arm_set.models[arm]
    row = int(np.flatnonzero(model.user_ids_ == user_id)[0])
    own = np.array([int(np.flatnonzero(model.item_ids_ == i)[0]) for i in items])
    scores = model.score_history(row, own, np.array(ratings))
    scores[model.seen_[row].indices] = -np.inf
    scores[own] = -np.inf  # a like excludes its item
    order = np.lexsort((np.arange(scores.size), -scores))[:k]
    return model.item_ids_[order].tolist()


@pytest.mark.parametrize("two_workers", ["sqlite", "postgresql"], indirect=True)
def test_a_like_on_one_worker_steers_the_next_slate_from_the_other(
        two_workers: tuple[TestClient, TestClient], catalog: Dataset) -> None:
    a, b = two_workers
    user = int(catalog.user_ids[5])
    before = {}
    for _ in range(30):  # until both per-user arms have served the user once
        shown = slate(b, user)
        before.setdefault(shown["arm"], [i["movie_id"] for i in shown["items"]])
        if {"autoencoder", "sequential"} <= set(before):
            break
    liked = before["autoencoder"][3]
    response = a.post("/events", json={"events": [
        {"user_id": user, "item_id": liked, "type": "like"}]})
    assert response.status_code == 201
    seen: dict[str, list[int]] = {}
    for _ in range(40):
        shown = slate(b, user)  # the other worker, with no refresh since the like
        seen.setdefault(shown["arm"], [i["movie_id"] for i in shown["items"]])
        if {"autoencoder", "sequential"} <= set(seen):
            break
    for arm in ("autoencoder", "sequential"):
        assert seen[arm] == expected_slate(b, arm, user, [liked], [5.0], 10)
        assert seen[arm] != before[arm]  # the like moved the slate
        assert liked not in seen[arm]


def test_live_arms_are_a_fold_of_the_log_identical_after_a_restart(
        tmp_path: Path, catalog: Dataset, fitted: dict[str, Recommender]) -> None:
    settings = make_settings(tmp_path)
    rng = np.random.default_rng(0)
    users = catalog.user_ids[:40]
    items = catalog.item_ids
    kinds = ["view", "click", "like", "dislike", "purchase", "add_to_cart"]
    with app_client(settings, catalog, fitted) as worker:
        for _ in range(6):
            batch = [{"user_id": int(rng.choice(users)), "item_id": int(rng.choice(items)),
                      "type": str(rng.choice(kinds)), "idempotency_key": f"k{rng.integers(1e9)}"}
                     for _ in range(50)]
            assert worker.post("/events", json={"events": batch}).status_code == 201
        worker.app.state.service.refresh()
        running = worker.app.state.service.arm_set.models
        states = {n: running[n]._get_state() for n in ("cooccurrence", "popularity")}
        folded_to = worker.app.state.service.live_seq
    with app_client(settings, catalog, fitted) as restarted:
        service = restarted.app.state.service
        assert service.live_seq == folded_to
        for name, state in states.items():
            again = service.arm_set.models[name]._get_state()
            assert state.keys() == again.keys()
            for key in state:
                np.testing.assert_array_equal(state[key], again[key], err_msg=f"{name}.{key}")
        # And the same as folding the log offline into the base fit, all in one batch.
        events = service.store.events_after(0)
        rules = RuleBook()
        offline = copy.deepcopy(fitted["cooccurrence"])
        rated = [(e.user_id, e.movie_id, rules.rating(e.event_type, e.value), e.created_at)
                 for e in events]
        index = {int(m): i for i, m in enumerate(offline.item_ids_)}
        offline.observe(np.array([r[0] for r in rated]), np.array([index[r[1]] for r in rated]),
                        np.array([r[2] for r in rated]), np.array([int(r[3]) for r in rated]))
        for key, value in offline._get_state().items():
            np.testing.assert_array_equal(value, states["cooccurrence"][key], err_msg=key)


def test_an_added_item_is_recommended_at_once_and_learned_at_the_retrain(
        tmp_path: Path, catalog: Dataset, fitted: dict[str, Recommender]) -> None:
    settings = make_settings(tmp_path, arms=["cooccurrence", "popularity", "autoencoder"])
    arms = {n: fitted[n] for n in settings.arms}
    new_id = int(catalog.item_ids.max()) + 1000
    with app_client(settings, catalog, arms) as a, app_client(settings, catalog, arms) as b:
        item = {"item_id": new_id, "title": "Brand New (2026)", "genres": ["Drama"],
                "year": 2026}
        assert a.post("/admin/items", json=item).status_code == 401  # admin only
        response = a.post("/admin/items", json=item, headers=AUTH)
        assert response.status_code == 201, response.text
        assert set(response.json()["arms_now"]) == {"cooccurrence", "popularity"}
        assert a.post("/admin/items", json=item, headers=AUTH).status_code == 409
        bad = a.post("/admin/items", json={**item, "item_id": new_id + 1, "genres": ["Jazz"]},
                     headers=AUTH)
        assert bad.status_code == 422
        # The other worker takes events on it before its own refresh (it looks the item up).
        fans = [int(u) for u in catalog.user_ids[:60]]
        anchor = int(catalog.item_ids[0])
        events = [e for u in fans for e in (
            {"user_id": u, "item_id": anchor, "type": "view", "idempotency_key": f"a{u}"},
            {"user_id": u, "item_id": new_id, "type": "purchase", "idempotency_key": f"n{u}"})]
        response = b.post("/events", json={"events": events})
        assert response.status_code == 201, response.text
        b.app.state.service.refresh()
        # A newcomer who viewed the anchor: both live arms put the new item first.
        newcomer = 10**9
        b.post("/events", json={"events": [{"user_id": newcomer, "item_id": anchor,
                                            "type": "view"}]})
        service = b.app.state.service
        recent = np.array([service.arm_set.item_index[anchor]])
        for arm in ("cooccurrence", "popularity"):
            ranking = service.arm_set.history_ranking(arm, newcomer, recent, np.array([3.0]))
            assert service.arm_set.item_ids[ranking.order[0]] == new_id, arm
        # Served: a newcomer (context-free policy: the cold-start arm, live popularity) sees it
        # first, with the title it was added with.
        shown = slate(b, newcomer + 1, k=5)
        assert shown["cold_start"] is True
        assert shown["items"][0]["movie_id"] == new_id
        assert shown["items"][0]["title"] == "Brand New (2026)"
        # The frozen arm learns it at the retrain, from its events as ratings.
        assert new_id not in fitted["autoencoder"].item_ids_
        assert a.post("/admin/retrain", headers=AUTH).status_code == 200
        assert new_id in a.app.state.service.arm_set.models["autoencoder"].item_ids_
        titles = dict(zip(a.app.state.service.arm_set.item_ids.tolist(),
                          a.app.state.service.arm_set.titles, strict=True))
        assert titles[new_id] == "Brand New (2026)"


def test_a_contextual_policy_chooses_for_newcomers_from_their_features(
        tmp_path: Path, catalog: Dataset, fitted: dict[str, Recommender]) -> None:
    settings = make_settings(tmp_path, policy="LinTS")
    with app_client(settings, catalog, fitted) as client:
        newcomer = 10**8
        anchor = int(catalog.item_ids[1])
        client.post("/events", json={"events": [{"user_id": newcomer, "item_id": anchor,
                                                 "type": "like"}]})
        arms = {slate(client, newcomer)["arm"] for _ in range(30)}
        response = slate(client, newcomer)
        assert response["cold_start"] is False
        assert 0 < response["propensity"] <= 1
        assert len(arms) > 1  # chosen by the policy, not the cold-start arm every time
        assert anchor not in [i["movie_id"] for i in response["items"]]


def test_arm_params_set_the_arms_hyper_parameters_and_survive_a_retrain(
        tmp_path: Path, catalog: Dataset) -> None:
    path = tmp_path / "settings.toml"
    path.write_text('arms = ["svd", "popularity"]\nseed = 2\nadmin_token = "t0ken"\n'
                    "[arm_params.popularity]\nhalf_life = 604800.0\n"
                    "[arm_params.svd]\nn_factors = 8\n")
    settings = Settings.from_file(path, state_dir=tmp_path / "state")
    with TestClient(create_app(settings, catalog=catalog)) as client:
        models = client.app.state.service.arm_set.models
        assert models["popularity"].half_life == 604800.0
        assert models["svd"].n_factors == 8
        assert client.post("/admin/retrain", headers=AUTH).status_code == 200
        models = client.app.state.service.arm_set.models
        assert models["popularity"].half_life == 604800.0 and models["svd"].n_factors == 8
    for bad, words in (({"svdx": {}}, "not served"),
                       ({"popularity": {"half_life": -1}}, "half_life must be > 0"),
                       ({"popularity": {"colour": 1}}, "unexpected keyword argument 'colour'")):
        with pytest.raises(ValueError, match=words):
            Settings(arms=["svd", "popularity"], arm_params=bad)
