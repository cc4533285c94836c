"""Limits: body size, ``k``, ids and string lengths, the admin token, and CORS.

Every refusal is checked for its status, its message, and for having written nothing.
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import sqlalchemy as sa
from fastapi.testclient import TestClient

from arms.data.dataset import Dataset
from serving.app import create_app
from serving.schemas import MAX_ID, MAX_K
from serving.settings import MAX_ADMIN_TOKEN_CHARS, Settings
from serving.store.tables import decisions, feedback

ARMS = ["svd", "popularity"]
TOKEN = "limits-admin-token"
ORIGIN = "https://shop.example"


def make_client(tmp_path: Path, catalog: Dataset, arms: dict, **extra: Any) -> TestClient:
    settings = Settings(state_dir=tmp_path / "state", arms=ARMS, seed=2, admin_token=TOKEN,
                        **extra)
    return TestClient(create_app(settings, catalog=catalog, arms=arms))


@pytest.fixture
def client(tmp_path: Path, serving_catalog: Dataset, serving_arms: dict) -> Iterator[TestClient]:
    with make_client(tmp_path, serving_catalog, serving_arms, max_body_bytes=1024) as c:
        yield c


def stored(client: TestClient) -> dict[str, int]:
    engine = sa.create_engine(client.app.state.settings.resolved_db_url())
    try:
        with engine.connect() as conn:
            return {t.name: conn.execute(sa.select(sa.func.count()).select_from(t)).scalar_one()
                    for t in (decisions, feedback)}
    finally:
        engine.dispose()


# ---------------------------------------------------------------------------- body size
def test_body_larger_than_the_limit_is_413_declared_or_streamed(client: TestClient) -> None:
    slate = client.get("/recommendations", params={"user_id": 4, "k": 3}).json()
    body = (f'{{"user_id": 4, "movie_id": {slate["items"][0]["movie_id"]}, '
            f'"feedback_type": "like", "event_id": "{slate["event_id"]}"}}').encode()
    before = stored(client)
    padded = body[:-1] + b" " * (2000 - len(body)) + b"}"  # valid JSON, too large
    declared = client.post("/feedback", content=padded,
                           headers={"content-type": "application/json"})

    def chunks() -> Iterator[bytes]:  # no Content-Length: the limit must count the stream
        for start in range(0, len(padded), 256):
            yield padded[start:start + 256]

    streamed = client.post("/feedback", content=chunks(),
                           headers={"content-type": "application/json"})
    for response in (declared, streamed):
        assert response.status_code == 413, response.text
        assert response.json() == {"detail": "request body larger than 1024 bytes",
                                   "code": "body_too_large"}
    assert stored(client) == before
    # Exactly at the limit is accepted.
    at_limit = body[:-1] + b" " * (1024 - len(body)) + b"}"
    assert len(at_limit) == 1024
    response = client.post("/feedback", content=at_limit,
                           headers={"content-type": "application/json"})
    assert response.status_code == 201, response.text
    assert stored(client)["feedback"] == before["feedback"] + 1


def test_malformed_bodies_are_422_with_a_message(client: TestClient) -> None:
    cases = [
        (b'{"user_id": 1, "movie_id": 2, "feedback_type": "\xff"}', "Invalid JSON"),
        (b'{"user_id": 1, "movie_id": 2,', "Invalid JSON: EOF while parsing"),
        (b"[1, 2, 3]", "Input should be an object"),
        (b"", "Invalid JSON"),
    ]
    for content, words in cases:
        response = client.post("/feedback", content=content,
                               headers={"content-type": "application/json"})
        assert response.status_code == 422, (content, response.text)
        assert words in response.text, (content, response.text)
    assert stored(client)["feedback"] == 0


# ---------------------------------------------------------------------------- k, ids, strings
def test_k_is_bounded_1_to_100(client: TestClient, serving_catalog: Dataset) -> None:
    for k in (0, -1, MAX_K + 1, 10**6):
        response = client.get("/recommendations", params={"user_id": 3, "k": k})
        assert response.status_code == 422, k
        assert "k" in response.json()["detail"][0]["loc"]
    assert stored(client)["decisions"] == 0
    one = client.get("/recommendations", params={"user_id": 3, "k": 1}).json()
    assert len(one["items"]) == 1
    full = client.get("/recommendations", params={"user_id": 3, "k": MAX_K}).json()
    seen = (serving_catalog.ratings.user_id == 3).sum()
    assert len(full["items"]) == min(MAX_K, serving_catalog.n_items - seen)


def test_ids_are_bounded_and_the_largest_allowed_id_is_stored_exactly(
        client: TestClient) -> None:
    for user_id in (0, -5, MAX_ID + 1, 2**63, 2**64, 10**30):
        response = client.get("/recommendations", params={"user_id": user_id})
        assert response.status_code == 422, user_id
    for movie_id in (0, MAX_ID + 1, 2**63):
        response = client.post("/feedback", json={"user_id": 1, "movie_id": movie_id,
                                                  "feedback_type": "like"})
        assert response.status_code == 422, movie_id
    assert stored(client) == {"decisions": 0, "feedback": 0}
    body = client.get("/recommendations", params={"user_id": MAX_ID, "k": 2}).json()
    assert body["user_id"] == MAX_ID and body["cold_start"]
    engine = sa.create_engine(client.app.state.settings.resolved_db_url())
    with engine.connect() as conn:
        assert conn.execute(sa.select(decisions.c.user_id)).scalar_one() == MAX_ID
    engine.dispose()


def test_every_string_the_api_accepts_is_bounded(client: TestClient) -> None:
    spec = client.get("/openapi.json").json()

    def resolve(schema: dict) -> dict:
        if "$ref" in schema:
            return resolve(spec["components"]["schemas"][schema["$ref"].rsplit("/", 1)[1]])
        return schema

    def strings(schema: dict) -> Iterator[dict]:
        schema = resolve(schema)
        for option in schema.get("anyOf", []):
            yield from strings(option)
        for prop in schema.get("properties", {}).values():
            yield from strings(prop)
        if schema.get("type") == "string":
            yield schema

    found = 0
    for ops in spec["paths"].values():
        for op in ops.values():
            schemas = [p["schema"] for p in op.get("parameters", [])]
            for media in op.get("requestBody", {}).get("content", {}).values():
                schemas.append(media["schema"])
            for schema in schemas:
                for string in strings(schema):
                    found += 1
                    assert "enum" in string or "maxLength" in string, string
    assert found >= 3  # event_id, feedback_type, the admin Authorization header
    feedback_in = spec["components"]["schemas"]["FeedbackIn"]
    assert feedback_in["additionalProperties"] is False
    event_id = next(s for s in feedback_in["properties"]["event_id"]["anyOf"]
                    if s.get("type") == "string")
    assert event_id["maxLength"] == event_id["minLength"] == 32

    long_strings = [
        {"user_id": 1, "movie_id": 2, "feedback_type": "like" * 200},
        {"user_id": 1, "movie_id": 2, "feedback_type": "like", "event_id": "a" * 33},
        {"user_id": 1, "movie_id": 2, "feedback_type": "like", "event_id": "a" * 600},
    ]
    for payload in long_strings:
        assert client.post("/feedback", json=payload).status_code == 422
    # The header's bound is "Bearer " and the longest token the settings take.
    response = client.post("/admin/retrain", headers={
        "Authorization": "Bearer " + "x" * (MAX_ADMIN_TOKEN_CHARS + 1)})
    assert response.status_code == 422
    assert f"at most {MAX_ADMIN_TOKEN_CHARS + len('Bearer ')} characters" in response.text
    assert stored(client)["feedback"] == 0


# ---------------------------------------------------------------------------- admin
def test_admin_refuses_without_the_token_401_and_with_a_wrong_one_403(
        client: TestClient) -> None:
    refusals = [
        ({}, 401),
        ({"Authorization": ""}, 401),
        ({"Authorization": f"Basic {TOKEN}"}, 401),
        ({"Authorization": TOKEN}, 401),
        ({"Authorization": "Bearer wrong"}, 403),
        ({"Authorization": f"Bearer {TOKEN[:-1]}"}, 403),
        ({"Authorization": f"Bearer {TOKEN}x"}, 403),
        ({"Authorization": "Bearer "}, 403),
    ]
    for headers, status in refusals:
        response = client.post("/admin/retrain", headers=headers)
        assert response.status_code == status, (headers, response.text)
        assert response.json()["code"] == ("unauthorized" if status == 401 else "forbidden")
        if status == 401:
            assert response.headers["www-authenticate"] == "Bearer"
    admin = {"Authorization": f"Bearer {TOKEN}"}
    assert client.get("/health", headers=admin).json()["policy_version"] == 1
    assert client.get("/admin/retrain", headers={"Authorization": f"Bearer {TOKEN}"}
                      ).status_code == 405
    response = client.post("/admin/retrain", headers={"Authorization": f"Bearer {TOKEN}"})
    assert response.status_code == 200 and response.json()["policy_version"] == 2


# ---------------------------------------------------------------------------- CORS
def test_cors_is_off_unless_configured(client: TestClient) -> None:
    preflight = client.options("/feedback", headers={
        "Origin": ORIGIN, "Access-Control-Request-Method": "POST"})
    assert preflight.status_code == 405
    simple = client.get("/policy", headers={"Origin": ORIGIN})
    assert simple.status_code == 200
    for response in (preflight, simple):
        assert not any(h.startswith("access-control-") for h in response.headers), \
            response.headers


def test_cors_allows_only_the_configured_origins(
        tmp_path: Path, serving_catalog: Dataset, serving_arms: dict,
        monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("RECBANDITS_CORS_ORIGINS", f"{ORIGIN}, https://admin.example")
    assert Settings().cors_origins == [ORIGIN, "https://admin.example"]
    with make_client(tmp_path, serving_catalog, serving_arms,
                     cors_origins=[ORIGIN, "https://admin.example"]) as client:
        preflight = client.options("/feedback", headers={
            "Origin": ORIGIN, "Access-Control-Request-Method": "POST",
            "Access-Control-Request-Headers": "content-type"})
        assert preflight.status_code == 200
        assert preflight.headers["access-control-allow-origin"] == ORIGIN
        assert "POST" in preflight.headers["access-control-allow-methods"]
        simple = client.get("/policy", headers={"Origin": ORIGIN})
        assert simple.headers["access-control-allow-origin"] == ORIGIN
        assert "access-control-allow-credentials" not in simple.headers
        # The hot routes (plain Starlette routes) as well.
        slate = client.get("/recommendations?user_id=3&k=2", headers={"Origin": ORIGIN})
        assert slate.status_code == 200
        assert slate.headers["access-control-allow-origin"] == ORIGIN
        liked = client.post("/feedback", headers={"Origin": ORIGIN}, json={
            "user_id": 3, "movie_id": slate.json()["items"][0]["movie_id"],
            "feedback_type": "like", "event_id": slate.json()["event_id"]})
        assert liked.status_code == 201
        assert liked.headers["access-control-allow-origin"] == ORIGIN

        other = "https://evil.example"
        refused = client.options("/feedback", headers={
            "Origin": other, "Access-Control-Request-Method": "POST"})
        assert refused.status_code == 400
        assert "access-control-allow-origin" not in refused.headers
        assert "access-control-allow-origin" not in client.get(
            "/policy", headers={"Origin": other}).headers
        # Admin calls carry a token; the browser may not send the header cross-origin.
        admin = client.options("/admin/retrain", headers={
            "Origin": ORIGIN, "Access-Control-Request-Method": "POST",
            "Access-Control-Request-Headers": "authorization"})
        assert admin.status_code == 400
