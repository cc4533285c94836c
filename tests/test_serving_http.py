"""The HTTP layer alone: validation, the one 422 shape, errors, ``/health``, the schema.

The app is the real one (``create_app``: routes, middleware, handlers, OpenAPI) around a stub
service that records its calls, so that these tests pin the HTTP contract whatever the store
and the policy do; test_serving_hotpath and test_serving run the same routes with the real
service. Findings 2 and 7 of issue 13 are pinned here: hostile numbers and strings are a 422
with a message on every route (they were a 500), and ids are strict (``true`` was user 1).
"""

from __future__ import annotations

import asyncio
import json
import time
from collections.abc import AsyncIterator, Iterator
from contextlib import asynccontextmanager
from dataclasses import dataclass
from pathlib import Path
from types import SimpleNamespace
from typing import Annotated, Any

import pytest
from fastapi import FastAPI, Query
from fastapi.testclient import TestClient

from serving.api.deps import MAX_AUTHORIZATION_CHARS
from serving.app import create_app
from serving.errors import EventNotFoundError, InvalidInputError
from serving.schemas import (
    MAX_ID,
    ErrorOut,
    FeedbackIn,
    FeedbackOut,
    RecommendationOut,
    RecommendationQuery,
)
from serving.settings import MAX_ADMIN_TOKEN_CHARS, Settings

TOKEN = "http-admin-token"
EVENT = "ab" * 16


@dataclass(frozen=True)
class StubRecommendation:
    event_id: str
    user_id: int
    arm: str
    propensity: float
    policy_version: int
    cold_start: bool
    items: list[dict[str, Any]]


class StubService:
    """The service's contract (recommend, feedback, policy_view, the ping read, ``in_thread``
    that ``/metrics`` runs its exposition with), recorded."""

    def __init__(self) -> None:
        self.calls: list[tuple[str, Any]] = []
        self.rows: dict[tuple[int, int, str], dict[str, Any]] = {}
        self.store = SimpleNamespace(describe=lambda: "sqlite:///stub.db", arm_counts=dict)
        self.arm_set = SimpleNamespace(version=3, names=("svd", "popularity"))

    async def _read(self, kind: str, *args: Any) -> None:
        self.calls.append(("read", kind))

    async def in_thread(self, call: Any, *args: Any) -> Any:
        return await asyncio.get_running_loop().run_in_executor(None, call, *args)

    async def recommend(self, user_id: int, k: int) -> StubRecommendation:
        self.calls.append(("recommend", (user_id, k)))
        items = [{"movie_id": m, "title": f"movie {m}", "year": 1990 + m, "genres": ["Drama"],
                  "score": 1.0 / m, "position": m, "arm": "svd"} for m in range(1, k + 1)]
        return StubRecommendation(EVENT, user_id, "svd", 0.25, 3, False, items)

    async def feedback(self, body: FeedbackIn) -> SimpleNamespace:
        self.calls.append(("feedback", body))
        if body.movie_id == 999:
            raise InvalidInputError("unknown movie_id 999")
        if body.event_id == "0" * 32:
            raise EventNotFoundError("event_id is not in the decision log")
        key = (body.user_id, body.movie_id, body.feedback_type.value)
        created = key not in self.rows
        row = self.rows.setdefault(key, {
            "id": len(self.rows) + 1, "user_id": body.user_id, "movie_id": body.movie_id,
            "feedback_type": body.feedback_type.value, "event_id": body.event_id, "arm": "svd",
            "reward": 1.0, "counted": True, "rating": 5.0, "note": "rewarded",
            "created_at": time.time()})
        return SimpleNamespace(row=row, created=created)

    def arm_tallies(self) -> dict[str, tuple[int, int, float]]:
        """Per arm (pulls, outcomes, reward sum), read by /metrics at scrape time."""
        return {}

    def drift_tallies(self) -> tuple[dict, dict, dict]:
        """Window rates, drift alarms and statistics per arm, read by /metrics."""
        return {}, {}, {}

    async def policy_view(self) -> dict[str, Any]:
        return {"policy": "stub", "policy_version": 3, "reward_window_s": 60.0, "arms": []}


def stub_app(tmp: Path, **settings: Any) -> tuple[FastAPI, StubService]:
    app = create_app(Settings(state_dir=tmp, arms=["svd", "popularity"], admin_token=TOKEN,
                              **settings))
    service = StubService()

    @asynccontextmanager
    async def lifespan(_app: FastAPI) -> AsyncIterator[None]:
        app.state.service = service
        yield

    app.router.lifespan_context = lifespan

    # A FastAPI route validating a query integer as FastAPI does: its 422 must have the shape
    # of the Starlette routes' 422.
    @app.get("/fastapi-probe")
    async def probe(user_id: Annotated[int, Query(ge=1, le=MAX_ID)]) -> dict[str, int]:
        return {"user_id": user_id}

    return app, service


@pytest.fixture
def app_and_service(tmp_path: Path) -> Iterator[tuple[TestClient, StubService]]:
    app, service = stub_app(tmp_path)
    with TestClient(app) as client:
        yield client, service


@pytest.fixture
def client(app_and_service: tuple[TestClient, StubService]) -> TestClient:
    return app_and_service[0]


def assert_invalid(response: Any, where: str, field: str | None = None) -> list[dict]:
    """A 422 in the one shape, located at ``where`` (and ``field``), with a message."""
    assert response.status_code == 422, response.text
    assert response.headers["content-type"] == "application/json"
    body = response.json()
    ErrorOut.model_validate(body)
    assert set(body) == {"detail", "code"} and body["code"] == "invalid_request"
    assert body["detail"] and all(set(i) == {"loc", "msg", "type"} for i in body["detail"])
    assert body["detail"][0]["loc"][0] == where
    if field is not None:
        assert body["detail"][0]["loc"][1] == field, body
    assert all(issue["msg"] for issue in body["detail"])
    return body["detail"]


GOOD = {"user_id": 5, "movie_id": 7, "feedback_type": "like", "event_id": EVENT}


def with_raw(field: str, value: str) -> bytes:
    """``GOOD`` as JSON text with ``field`` set to the raw JSON text ``value``."""
    return json.dumps({**GOOD, field: "@RAW@"}).replace('"@RAW@"', value).encode()


# ---------------------------------------------------------------------------- finding 2
@pytest.mark.parametrize("field", ["user_id", "movie_id", "feedback_type", "event_id"])
@pytest.mark.parametrize("value", ["NaN", "Infinity", "-Infinity", "1e400", "-1e400",
                                   '"\\ud800"', '"a\\udfffb"'])
def test_hostile_numbers_and_lone_surrogates_in_a_body_are_422_not_500(
        app_and_service: tuple[TestClient, StubService], field: str, value: str) -> None:
    client, service = app_and_service
    raw = with_raw(field, value)
    response = client.post("/feedback", content=raw,
                           headers={"content-type": "application/json"})
    issues = assert_invalid(response, "body")
    # Numbers are refused where they stand; a lone surrogate makes the JSON invalid.
    assert issues[0]["loc"] in (["body", field], ["body"])
    assert not [c for c in service.calls if c[0] == "feedback"]


@pytest.mark.parametrize("query", ["user_id=nan", "user_id=inf", "user_id=1e400",
                                   "user_id=Infinity", "user_id=%ED%A0%80", "user_id=%F0",
                                   "user_id=5&k=nan", "user_id=5&k=1e400", "user_id=" + "9" * 5000,
                                   # Found by attack: the last of a repeated one was served and
                                   # its decision logged.
                                   "user_id=5&user_id=6", "user_id=5&k=3&k=4",
                                   "user_id=5&user_id=%36"])
def test_hostile_numbers_and_bad_unicode_in_a_query_are_422(
        app_and_service: tuple[TestClient, StubService], query: str) -> None:
    client, service = app_and_service
    response = client.get(f"/recommendations?{query}")
    assert_invalid(response, "query", "k" if "&k=" in query else "user_id")
    assert not service.calls


RECOMMENDATION_PARAMETERS = "unknown query parameter; this route takes ['k', 'user_id']"
TAKES_NONE = "unknown query parameter; this route takes none"


@pytest.mark.parametrize(("method", "path", "query", "said"), [
    # Found by attack: ?K=3 served the default 10 items and logged the decision, and
    # ?dry_run=1 stored the event: a typo acted as the default on a route that writes.
    ("GET", "/recommendations", "user_id=41&K=3",
     [("K", "unknown_parameter", RECOMMENDATION_PARAMETERS)]),
    ("GET", "/recommendations", "user_id=41&k=5&x=1&x=2",
     [("x", "unknown_parameter", RECOMMENDATION_PARAMETERS)]),
    ("GET", "/recommendations", "user_id=41&user_id=42&_=1",
     [("_", "unknown_parameter", RECOMMENDATION_PARAMETERS),
      ("user_id", "repeated_parameter", "given more than once; give it once")]),
    # the value of a parameter given once is checked beside them (all at once)
    ("GET", "/recommendations", "user_id=41&k=abc&x=1",
     [("x", "unknown_parameter", RECOMMENDATION_PARAMETERS),
      ("k", "int_parsing", "Input must be an integer in plain decimal digits, got 'abc'")]),
    ("POST", "/events", "dry_run=1", [("dry_run", "unknown_parameter", TAKES_NONE)]),
    ("POST", "/events", "x=1&x=2", [("x", "unknown_parameter", TAKES_NONE)]),
    ("POST", "/feedback", "dry_run=1", [("dry_run", "unknown_parameter", TAKES_NONE)]),
    ("POST", "/feedback", "_=%31", [("_", "unknown_parameter", TAKES_NONE)])])
def test_the_routes_that_write_refuse_unknown_and_repeated_query_parameters(
        app_and_service: tuple[TestClient, StubService], method: str, path: str, query: str,
        said: list[tuple[str, str, str]]) -> None:
    client, service = app_and_service
    body = {"user_id": 5, "item_id": 7, "type": "like"} if path == "/events" else GOOD
    response = client.request(method, f"{path}?{query}",
                              json=None if method == "GET" else body)
    issues = assert_invalid(response, "query")
    assert [(i["loc"], i["type"], i["msg"]) for i in issues] == [
        (["query", name], kind, msg) for name, kind, msg in said]
    assert not service.calls  # nothing served, logged or stored
    if method == "POST":  # the body's issues come in the same 422 (the admin routes' rule)
        response = client.post(f"{path}?{query}", json={})
        issues = assert_invalid(response, "query")
        assert {i["loc"][0] for i in issues} == {"query", "body"}
        assert not service.calls
    # Read-only routes stay lenient (a cache-buster).
    assert client.get(f"/openapi.json?{query}").status_code == 200


@pytest.mark.parametrize("path", ["/users/5/preferences", "/admin/models/rollback",
                                  "/admin/models/7", "/recommendations", "/events", "/policy"])
def test_a_405_allows_every_method_served_at_its_path(
        app_and_service: tuple[TestClient, StubService], path: str) -> None:
    """Starlette's ``Allow`` named only the first route matching the path:
    ``DELETE /users/5/preferences`` said ``Allow: PUT`` although GET is served there too."""
    # The stub answers some served methods 500: only whether a method is served counts here.
    client = TestClient(app_and_service[0].app, raise_server_exceptions=False)
    methods = ("GET", "POST", "PUT", "DELETE", "PATCH")
    answers = {m: client.request(m, path, content=b"x") for m in methods}
    served = sorted(m for m, response in answers.items() if response.status_code != 405)
    assert served  # every path here is served by some method
    for method, response in answers.items():
        if response.status_code == 405:
            assert response.headers["allow"] == ", ".join(served), (method, path)
            assert response.json()["code"] == "method_not_allowed"
    assert client.options(path).headers["allow"] == ", ".join(served)


def test_a_405_under_a_mount_allows_what_the_mounted_app_serves(
        app_and_service: tuple[TestClient, StubService]) -> None:
    """Found by attack: mounted under a prefix, every 405 said ``Allow:`` with nothing (the
    routes were matched against the path with the prefix)."""
    from starlette.applications import Starlette
    from starlette.routing import Mount

    outer = Starlette(routes=[Mount("/api", app_and_service[0].app)])
    client = TestClient(outer, raise_server_exceptions=False)
    response = client.delete("/api/users/5/preferences")
    assert response.status_code == 405 and response.headers["allow"] == "GET, PUT"
    assert client.patch("/api/admin/models/rollback").headers["allow"] == "GET, POST"


@pytest.mark.parametrize("path", ["/recommendations?user_id=5", "/users/5/features"])
def test_head_is_405_on_the_starlette_routes_as_on_the_others(
        app_and_service: tuple[TestClient, StubService], path: str) -> None:
    """Found by attack: Starlette answered HEAD on its GET routes, and a HEAD of
    ``/recommendations`` logged a decision (a pull, then a reward of 0) with no body sent."""
    client, service = app_and_service
    response = client.head(path)
    assert response.status_code == 405
    assert response.headers["allow"] == "GET"
    assert client.head("/policy").status_code == 405  # a FastAPI GET route, for comparison
    assert not service.calls
    if path.startswith("/recommendations"):
        assert client.get(path).status_code == 200
        assert [c[0] for c in service.calls] == ["recommend"]


def test_an_unknown_key_is_quoted_at_most_40_characters(
        app_and_service: tuple[TestClient, StubService]) -> None:
    """Found by the re-attack: a 15,000-character unknown key came back whole in ``loc``."""
    client, service = app_and_service
    key = "k" * 15_000
    response = client.post("/feedback", json={**GOOD, key: 1})
    issues = assert_invalid(response, "body")
    assert issues[0]["loc"] == ["body", "k" * 40 + "..."]
    assert len(response.content) < 500
    assert not service.calls


# ---------------------------------------------------------------------------- finding 7
@pytest.mark.parametrize("value", ["true", "false", '"1_0"', '"10"', "10.0", "[10]", "null"])
@pytest.mark.parametrize("field", ["user_id", "movie_id"])
def test_ids_in_a_body_are_json_integers_only(
        app_and_service: tuple[TestClient, StubService], field: str, value: str) -> None:
    client, service = app_and_service
    raw = with_raw(field, value)
    response = client.post("/feedback", content=raw,
                           headers={"content-type": "application/json"})
    assert_invalid(response, "body", field)
    assert not service.calls


@pytest.mark.parametrize("value", ["1_0", "+10", " 10", "10 ", "10.0", "1e1", "0x10", "true",
                                   "%D9%A1%D9%A0", "-0"])
def test_query_integers_are_plain_decimal_digits(
        app_and_service: tuple[TestClient, StubService], value: str) -> None:
    client, service = app_and_service
    for query in (f"user_id={value}", f"user_id=5&k={value}"):
        assert_invalid(client.get(f"/recommendations?{query}"), "query")
    assert not service.calls
    # What is plain is taken (leading zeros included; an unknown or repeated key is refused:
    # test_the_routes_that_write_refuse_unknown_and_repeated_query_parameters).
    for query, expected in [("user_id=10", (10, 10)), ("user_id=010&k=03", (10, 3)),
                            ("k=2&user_id=7&", (7, 2))]:
        assert client.get(f"/recommendations?{query}").status_code == 200
        assert service.calls[-1] == ("recommend", expected)


def test_the_readme_states_the_id_range_the_routes_take(
        app_and_service: tuple[TestClient, StubService]) -> None:
    """The README said ids were integers, not up to which (a review finding): it states
    ``MAX_ID``, and the routes take it and refuse the next."""
    readme = (Path(__file__).resolve().parents[1] / "README.md").read_text()
    assert MAX_ID == 2**62
    assert f"ids are whole numbers from 1 to 2^62\n({MAX_ID}, `serving.schemas.MAX_ID`" in readme
    client, service = app_and_service
    assert client.get(f"/recommendations?user_id={MAX_ID}").status_code == 200
    assert_invalid(client.get(f"/recommendations?user_id={MAX_ID + 1}"), "query", "user_id")
    assert service.calls == [("recommend", (MAX_ID, 10))]


# ---------------------------------------------------------------------------- one 422 shape
@pytest.mark.parametrize("value", ["abc", "0", "-1", "nan", str(MAX_ID + 1), "", "2.5", "-"])
def test_fastapi_and_the_starlette_routes_give_the_same_422(client: TestClient,
                                                            value: str) -> None:
    ours = client.get(f"/recommendations?user_id={value}")
    fastapi = client.get(f"/fastapi-probe?user_id={value}")
    a, b = assert_invalid(ours, "query", "user_id"), assert_invalid(fastapi, "query", "user_id")
    assert [(i["loc"], i["type"]) for i in a] == [(i["loc"], i["type"]) for i in b]
    if value in ("0", "-1", str(MAX_ID + 1)):  # the same pydantic error, word for word
        assert a == b
    else:  # not digits: refused by the stricter parser here, with its own words
        # (bandits.errors.integer_text's words: one rule, one message)
        assert a[0]["msg"] == f"Input must be an integer in plain decimal digits, got {value!r}"
    missing = (client.get("/recommendations"), client.get("/fastapi-probe"))
    assert missing[0].json() == missing[1].json() == {
        "detail": [{"loc": ["query", "user_id"], "msg": "Field required", "type": "missing"}],
        "code": "invalid_request"}


def test_every_route_answers_errors_in_one_shape(client: TestClient) -> None:
    responses = {
        "recommendations": client.get("/recommendations?user_id=0"),
        "feedback body": client.post("/feedback", json={**GOOD, "feedback_type": "meh"}),
        "feedback json": client.post("/feedback", content=b"{not json",
                                     headers={"content-type": "application/json"}),
        # A header longer than "Bearer " and the longest token the settings take.
        "admin header": client.post("/admin/retrain", headers={
            "Authorization": "Bearer " + "x" * (MAX_ADMIN_TOKEN_CHARS + 1)}),
        "health header": client.get("/health", headers={
            "Authorization": "x" * (MAX_AUTHORIZATION_CHARS + 1)}),
    }
    for name, response in responses.items():
        assert_invalid(response, "header" if "header" in name else
                       "query" if name == "recommendations" else "body")
    others = [
        (client.post("/feedback", json={**GOOD, "movie_id": 999}), 422, "invalid_input"),
        (client.post("/feedback", json={**GOOD, "event_id": "0" * 32}), 404,
         "event_not_found"),
        (client.post("/feedback", content=b"a=1",
                     headers={"content-type": "application/x-www-form-urlencoded"}), 415,
         "unsupported_media_type"),
        (client.post("/feedback", content=b" " * 20_000,
                     headers={"content-type": "application/json"}), 413, "body_too_large"),
        (client.post("/admin/retrain"), 401, "unauthorized"),
        (client.get("/nowhere"), 404, "not_found"),
        (client.post("/policy"), 405, "method_not_allowed"),
        (client.get("/feedback"), 405, "method_not_allowed"),
    ]
    for response, status, code in others:
        assert response.status_code == status, response.text
        body = response.json()
        assert set(body) == {"detail", "code"} and body["code"] == code, body
        assert isinstance(body["detail"], str) and body["detail"]
        ErrorOut.model_validate(body)


# ---------------------------------------------------------------------------- the routes
def test_answers_follow_the_response_models(
        app_and_service: tuple[TestClient, StubService]) -> None:
    client, service = app_and_service
    slate = client.get("/recommendations?user_id=5&k=3")
    assert slate.status_code == 200 and slate.headers["content-type"] == "application/json"
    body = slate.json()
    assert list(body) == list(RecommendationOut.model_fields)
    assert RecommendationOut.model_validate(body).model_dump(mode="json") == body
    assert len(body["items"]) == 3
    created = client.post("/feedback", json=GOOD)
    again = client.post("/feedback", content=orjson_bytes(GOOD),
                        headers={"content-type": "application/json; charset=utf-8"})
    assert (created.status_code, again.status_code) == (201, 200)
    assert created.json() == again.json()
    assert list(created.json()) == list(FeedbackOut.model_fields)
    assert FeedbackOut.model_validate(created.json()).model_dump(mode="json") == created.json()
    assert created.json()["created_at"].endswith("Z")
    sent = [c[1] for c in service.calls if c[0] == "feedback"]
    assert sent[0] == FeedbackIn(**GOOD)
    text = client.get("/metrics").text
    assert 'route="/recommendations",status="200"} 1.0' in text
    assert 'route="/feedback",status="201"} 1.0' in text
    assert 'recbandits_decisions_total{arm="svd"} 1.0' in text
    assert 'recbandits_feedback_total{feedback_type="like"} 1.0' in text


def orjson_bytes(value: Any) -> bytes:
    import orjson

    return orjson.dumps(value)


def test_an_unexpected_error_is_a_logged_500_in_the_error_shape(
        app_and_service: tuple[TestClient, StubService], monkeypatch: pytest.MonkeyPatch,
        caplog: pytest.LogCaptureFixture) -> None:
    client, service = app_and_service

    async def broken(user_id: int, k: int) -> None:
        raise RuntimeError("arm exploded")

    monkeypatch.setattr(service, "recommend", broken)
    quiet = TestClient(client.app, raise_server_exceptions=False)  # not entered: no restart
    with caplog.at_level("ERROR", logger="serving.app"):
        response = quiet.get("/recommendations?user_id=7&k=5")
    assert response.status_code == 500
    assert response.json() == {"detail": "internal error", "code": "internal"}
    assert "arm exploded" in caplog.text  # the traceback is logged, not sent
    assert 'route="/recommendations",status="500"} 1.0' in client.get("/metrics").text


def test_health_tells_an_anonymous_caller_only_up_or_down(client: TestClient) -> None:
    anonymous = client.get("/health")
    assert anonymous.status_code == 200 and anonymous.json() == {"status": "ok"}
    admin = client.get("/health", headers={"Authorization": f"Bearer {TOKEN}"}).json()
    assert admin["status"] == "ok" and admin["store"] == "sqlite:///stub.db"
    assert admin["policy_version"] == 3 and admin["arms"] == ["svd", "popularity"]
    assert isinstance(admin["pid"], int) and admin["version"]
    wrong = client.get("/health", headers={"Authorization": "Bearer wrong"})
    assert wrong.status_code == 403 and "store" not in wrong.text
    # Two Authorization headers: ambiguous, refused whichever comes first (the first won).
    for pair in ([f"Bearer {TOKEN}", "Bearer wrong"], ["Bearer wrong", f"Bearer {TOKEN}"],
                 [f"Bearer {TOKEN}", f"Bearer {TOKEN}"]):
        twice = client.get("/health", headers=[("Authorization", value) for value in pair])
        assert twice.status_code == 401 and "store" not in twice.text, twice.text
        assert twice.json() == {"detail": "send one Authorization header, got 2",
                                "code": "unauthorized"}
        assert twice.headers["www-authenticate"] == "Bearer"
        admin_route = client.post("/admin/retrain",
                                  headers=[("Authorization", value) for value in pair])
        assert admin_route.status_code == 401, admin_route.text


def test_the_schema_documents_the_starlette_routes_from_their_models(
        client: TestClient) -> None:
    spec = client.get("/openapi.json").json()
    recs = spec["paths"]["/recommendations"]["get"]
    query = RecommendationQuery.model_json_schema()["properties"]
    assert {p["name"]: (p["schema"]["minimum"], p["schema"]["maximum"])
            for p in recs["parameters"]} == {
        name: (prop["minimum"], prop["maximum"]) for name, prop in query.items()}
    assert [p["required"] for p in recs["parameters"]] == [True, False]
    fb = spec["paths"]["/feedback"]["post"]
    assert fb["requestBody"]["content"]["application/json"]["schema"]["$ref"].endswith(
        "/FeedbackIn")
    assert {"200", "201", "404", "409", "413", "415", "422", "503"} <= set(fb["responses"])
    schemas = spec["components"]["schemas"]
    assert schemas["FeedbackIn"]["additionalProperties"] is False
    assert "HTTPValidationError" not in schemas
    for path in spec["paths"].values():  # every 422 is documented with the one error body
        for op in path.values():
            if "422" in op["responses"]:
                ref = op["responses"]["422"]["content"]["application/json"]["schema"]["$ref"]
                assert ref.endswith("/ErrorOut")


def test_cross_origin_requests_get_the_same_answers(tmp_path: Path) -> None:
    """With CORS on, a cross-origin request (through the CORS middleware) gets the same status
    and body as a same-origin one, errors included, and is counted alike."""
    origin = "https://shop.example"
    app, service = stub_app(tmp_path, cors_origins=[origin], max_body_bytes=1024)

    async def broken(user_id: int, k: int) -> None:
        raise RuntimeError("arm exploded")

    requests: list[tuple[str, str, dict[str, Any]]] = [
        ("GET", "/recommendations?user_id=5&k=2", {}),
        ("GET", "/recommendations?user_id=1_0", {}),
        ("GET", "/recommendations", {}),
        ("POST", "/feedback", {"json": GOOD}),
        ("POST", "/feedback", {"json": {**GOOD, "movie_id": 999}}),
        ("POST", "/feedback", {"json": {**GOOD, "event_id": "0" * 32}}),
        ("POST", "/feedback", {"content": b'{"user_id": NaN}',
                               "headers": {"content-type": "application/json"}}),
        ("POST", "/feedback", {"content": b"a=1",
                               "headers": {"content-type": "text/plain"}}),
        ("POST", "/feedback", {"content": b" " * 2000,
                               "headers": {"content-type": "application/json"}}),
        ("PUT", "/feedback", {}),
        ("GET", "/recommendations?user_id=6", {"broken": True}),
    ]
    answers: dict[bool, list[tuple[int, Any]]] = {}
    with TestClient(app, raise_server_exceptions=False) as client:
        for cross_origin in (False, True):
            service.rows.clear()
            answers[cross_origin] = []
            for method, url, kwargs in requests:
                kwargs = dict(kwargs)
                if kwargs.pop("broken", False):
                    service.recommend = broken  # type: ignore[method-assign]
                headers = {**kwargs.pop("headers", {}),
                           **({"Origin": origin} if cross_origin else {})}
                response = client.request(method, url, headers=headers, **kwargs)
                body = response.json()
                if isinstance(body, dict):
                    body.pop("created_at", None)
                answers[cross_origin].append((response.status_code, body))
                if response.status_code == 200:  # through CORS (413 is answered outside it)
                    assert ("access-control-allow-origin" in response.headers) == cross_origin
            service.recommend = StubService.recommend.__get__(service)  # type: ignore
        text = client.get("/metrics").text
    assert answers[False] == answers[True]
    assert [status for status, _ in answers[False]] == [200, 422, 422, 201, 422, 404, 422,
                                                        415, 413, 405, 500]
    assert 'route="/recommendations",status="200"} 2.0' in text
    assert 'route="unmatched",status="413"} 2.0' in text  # refused before routing
    assert 'route="/recommendations",status="500"} 2.0' in text
