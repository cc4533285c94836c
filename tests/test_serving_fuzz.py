"""Fuzzing and properties: generated requests never get a 5xx or an off-schema answer, and
duplicate feedback in any order (or all at once) ends in the same state.

schemathesis reads the service's own OpenAPI document and sends a few thousand generated
requests, valid and invalid, through the ASGI interface (no network; derandomised, so a run is
reproducible). Hypothesis then drives feedback plans against a model of the attribution rules.
"""

from __future__ import annotations

import itertools
from collections import Counter
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import pytest
import schemathesis
from fastapi.testclient import TestClient
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from schemathesis.checks import not_a_server_error
from schemathesis.generation import GenerationMode
from schemathesis.python import asgi as schemathesis_asgi
from schemathesis.specs.openapi.checks import (
    content_type_conformance,
    negative_data_rejection,
    response_headers_conformance,
    response_schema_conformance,
    status_code_conformance,
)

from arms.data.dataset import Dataset
from serving.app import create_app
from serving.settings import Settings

ARMS = ["svd", "popularity"]
TOKEN = "fuzz-admin-token"
CHECKS = [
    not_a_server_error,
    status_code_conformance,
    content_type_conformance,
    response_headers_conformance,
    response_schema_conformance,
    negative_data_rejection,
]
# Examples per operation, valid (positive) and invalid (negative): ~2,300 requests in all.
# Invalid cases cost ~10x more to generate, so they get fewer; operations without parameters
# have a single valid request and no invalid one.
BUDGET = {
    ("GET", "/recommendations"): (900, 150),
    ("POST", "/feedback"): (900, 200),
    ("POST", "/admin/retrain"): (60, 60),
    ("PUT", "/users/{user_id}/preferences"): (60, 40),
    ("GET", "/policy"): (1, 0),
    ("GET", "/health"): (1, 0),
    ("GET", "/metrics"): (1, 0),
}
FUZZ_CASES = [(method, path, mode, n) for (method, path), budgets in BUDGET.items()
              for mode, n in zip((GenerationMode.POSITIVE, GenerationMode.NEGATIVE), budgets,
                                 strict=True) if n]


def app_settings(folder: Path, **extra: Any) -> Settings:
    return Settings(state_dir=folder, arms=ARMS, seed=5, admin_token=TOKEN,
                    refresh_interval_s=0.05, **extra)


@pytest.fixture(scope="module")
def api_schema(tmp_path_factory: pytest.TempPathFactory, serving_catalog: Dataset,
               serving_arms: dict) -> Iterator[Any]:
    app = create_app(app_settings(tmp_path_factory.mktemp("fuzz")), catalog=serving_catalog,
                     arms=serving_arms)
    # from_asgi starts the app's lifespan once and keeps it for every generated request.
    schema = schemathesis.openapi.from_asgi("/openapi.json", app)
    try:
        yield schema
    finally:
        schemathesis_asgi.shutdown_lifespans()


def test_the_schema_documents_every_operation_and_its_errors(api_schema: Any) -> None:
    operations = {(op.method.upper(), op.path) for op in
                  (result.ok() for result in api_schema.get_all_operations())}
    assert set(BUDGET) <= operations, operations - set(BUDGET)
    raw = api_schema.raw_schema["paths"]
    assert {"404", "409", "422", "201", "200"} <= set(raw["/feedback"]["post"]["responses"])
    assert {"401", "403"} <= set(raw["/admin/retrain"]["post"]["responses"])
    # The bodies FastAPI leaves to serving.api.deps.JsonBody, documented from their models.
    def body(path: str, method: str) -> dict:
        schema = raw[path][method]["requestBody"]["content"]["application/json"]["schema"]
        if "$ref" in schema:
            schema = api_schema.raw_schema["components"]["schemas"][schema["$ref"].split("/")[-1]]
        return schema

    item, preferences = body("/admin/items", "post"), body("/users/{user_id}/preferences", "put")
    assert (item["required"], item["additionalProperties"]) == (["item_id", "title"], False)
    assert preferences["required"] == ["genres"]
    assert preferences["properties"]["genres"]["maxItems"] == 64
    k = next(p for p in raw["/recommendations"]["get"]["parameters"] if p["name"] == "k")
    assert (k["schema"]["minimum"], k["schema"]["maximum"]) == (1, 100)


@pytest.mark.slow
@pytest.mark.parametrize(("method", "path", "mode", "budget"), FUZZ_CASES,
                         ids=[f"{m} {p} {mode}" for m, p, mode, _ in FUZZ_CASES])
def test_generated_requests_get_no_5xx_and_conform_to_the_schema(
        api_schema: Any, method: str, path: str, mode: GenerationMode, budget: int) -> None:
    operation = api_schema[path][method]
    statuses: Counter[int] = Counter()

    @settings(max_examples=budget, deadline=None, derandomize=True,
              database=None, suppress_health_check=list(HealthCheck))
    @given(case=operation.as_strategy(generation_mode=mode))
    def run(case: Any) -> None:
        response = case.call_and_validate(checks=CHECKS)
        statuses[response.status_code] += 1

    run()
    assert sum(statuses.values()) >= budget // 2, statuses  # hypothesis used the budget
    if mode is GenerationMode.NEGATIVE and path in ("/recommendations", "/feedback"):
        assert statuses[422] > 0, statuses  # invalid input reached the validation
    if path == "/admin/retrain":
        assert set(statuses) <= {401, 403, 422}, statuses  # never runs without the token


# ---------------------------------------------------------------------------- properties
FEEDBACK_TYPES = ("like", "dislike", "click")
USERS = itertools.cycle(range(1, 121))  # every synthetic user is known to the arms


@pytest.fixture(scope="module")
def client(tmp_path_factory: pytest.TempPathFactory, serving_catalog: Dataset,
           serving_arms: dict) -> Iterator[TestClient]:
    app = create_app(app_settings(tmp_path_factory.mktemp("props")),
                     catalog=serving_catalog, arms=serving_arms)
    with TestClient(app) as c:
        yield c


@st.composite
def feedback_plans(draw: st.DrawFn) -> tuple[int, list[tuple[int, int, str, bool]], bool]:
    """Decisions to request, then feedback messages, each sent 1-3 times, in any order.

    A message is ``(decision index, slate position, feedback type, send event_id?)``.
    """
    n_decisions = draw(st.integers(1, 3))
    message = st.tuples(st.integers(0, n_decisions - 1), st.integers(0, 4),
                        st.sampled_from(FEEDBACK_TYPES), st.booleans())
    messages = draw(st.lists(message, min_size=1, max_size=6, unique=True))
    copies = draw(st.lists(st.integers(1, 3), min_size=len(messages), max_size=len(messages)))
    sent = [m for m, c in zip(messages, copies, strict=True) for _ in range(c)]
    return n_decisions, draw(st.permutations(sent)), draw(st.booleans())


def arm_counts(client: TestClient) -> dict[str, tuple[int, int]]:
    return {a["arm"]: (int(a["successes"]), int(a["failures"]))
            for a in client.get("/policy").json()["arms"]}


@settings(max_examples=40, deadline=None, derandomize=True, database=None,
          suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(plan=feedback_plans())
def test_duplicate_feedback_in_any_interleaving_gives_the_same_state(
        client: TestClient, plan: tuple[int, list[tuple[int, int, str, bool]], bool]) -> None:
    n_decisions, sent, concurrent = plan
    user = next(USERS)
    slates = [client.get("/recommendations", params={"user_id": user, "k": 5}).json()
              for _ in range(n_decisions)]
    before = arm_counts(client)

    def payload(message: tuple[int, int, str, bool]) -> dict[str, Any]:
        d, position, kind, with_event = message
        items = slates[d]["items"]
        body = {"user_id": user, "movie_id": items[min(position, len(items) - 1)]["movie_id"],
                "feedback_type": kind}
        return {**body, "event_id": slates[d]["event_id"]} if with_event else body

    def resolved_event(message: tuple[int, int, str, bool]) -> str:
        """The model of attribution: the named event, else the latest slate showing the movie."""
        body = payload(message)
        if "event_id" in body:
            return body["event_id"]
        return next(s["event_id"] for s in reversed(slates)
                    if body["movie_id"] in {i["movie_id"] for i in s["items"]})

    if concurrent:
        with ThreadPoolExecutor(4) as pool:
            responses = list(pool.map(lambda m: client.post("/feedback", json=payload(m)), sent))
    else:
        responses = [client.post("/feedback", json=payload(m)) for m in sent]

    arm_of = {s["event_id"]: s["arm"] for s in slates}
    expected: dict[tuple[str, int, str], tuple[str, float]] = {}
    ids: dict[tuple[str, int, str], set[int]] = {}
    created: Counter[tuple[str, int, str]] = Counter()
    # One reward per decision: exactly one distinct feedback of each decision decided it.
    deciders: dict[str, set[tuple[str, int, str]]] = {}
    for message, response in zip(sent, responses, strict=True):
        body = payload(message)
        key = (resolved_event(message), body["movie_id"], body["feedback_type"])
        expected[key] = (arm_of[key[0]], 0.0 if key[2] == "dislike" else 1.0)
        assert response.status_code in (200, 201), response.text
        out = response.json()
        assert (out["event_id"], out["movie_id"], out["feedback_type"]) == key
        assert out["arm"] == arm_of[key[0]]
        ids.setdefault(key, set()).add(out["id"])
        deciders.setdefault(key[0], set()).update([key] if out["policy_updated"] else [])
        created[key] += response.status_code == 201
    # Each distinct feedback is stored once (one 201, one row id), whatever the order.
    assert all(len(v) == 1 for v in ids.values()) and set(created.values()) == {1}
    if not concurrent:  # sequential: the first copy creates, the others find it
        seen: set[tuple[str, int, str]] = set()
        for message, response in zip(sent, responses, strict=True):
            body = payload(message)
            key = (resolved_event(message), body["movie_id"], body["feedback_type"])
            assert response.status_code == (200 if key in seen else 201)
            seen.add(key)
    assert all(len(keys) == 1 for keys in deciders.values()), deciders
    if not concurrent:  # sequential: the first feedback of a decision decides it (earliest)
        first: dict[str, tuple[str, int, str]] = {}
        for message in sent:
            body = payload(message)
            first.setdefault(resolved_event(message),
                             (resolved_event(message), body["movie_id"], body["feedback_type"]))
        assert {event: {key} for event, key in first.items()} == deciders
    # The posterior moved by exactly one observation per decision, its decider's reward.
    after = arm_counts(client)
    delta = Counter()
    for (key,) in deciders.values():
        delta[expected[key]] += 1
    for arm in ARMS:
        assert after[arm][0] - before[arm][0] == delta[(arm, 1.0)], (arm, expected)
        assert after[arm][1] - before[arm][1] == delta[(arm, 0.0)], (arm, expected)
