"""The hand-written pieces of the hot routes give what the general path gives."""

from __future__ import annotations

import pytest
from fastapi.exceptions import RequestValidationError
from hypothesis import given, settings
from hypothesis import strategies as st
from starlette.requests import Request

from serving.api.routes.recommendations import _query

KEYS = st.sampled_from(["user_id", "k", "x", "", "user_id%20", "k+1"])
VALUES = st.one_of(st.from_regex(r"[0-9]{0,4}", fullmatch=True),
                   st.sampled_from(["1_0", "+5", "%31", "é", "true", "1.0", " 7"]))


def _request(query: bytes) -> Request:
    return Request({"type": "http", "method": "GET", "path": "/recommendations",
                    "query_string": query, "headers": []})


@settings(max_examples=300, derandomize=True, database=None, deadline=None)
@given(st.lists(st.tuples(KEYS, VALUES, st.booleans()), max_size=4))
def test_the_split_query_equals_starlettes(parts: list[tuple[str, str, bool]]) -> None:
    # What the model sees (user_id and k) is the same whichever way the query was split.
    raw = "&".join(f"{k}={v}" if eq else k for k, v, eq in parts).encode()
    request = _request(raw)
    theirs = request.query_params
    names = [name for name, _ in theirs.multi_items()]
    repeated = sorted(n for n in ("k", "user_id") if names.count(n) > 1)
    unknown = sorted(set(names) - {"k", "user_id"})
    if repeated or unknown:
        with pytest.raises(RequestValidationError) as caught:
            _query(request)
        said = caught.value.errors()
        assert [e["loc"] for e in said if e["type"] == "unknown_parameter"] == [
            ("query", n) for n in unknown]
        assert [e["loc"] for e in said if e["type"] == "repeated_parameter"] == [
            ("query", n) for n in repeated]
        # Any other issue is of a parameter given once (or missing), said beside them.
        assert all(e["loc"][1] not in repeated for e in said
                   if e["type"] != "repeated_parameter"), said
        return
    mine = _query(request)
    for key in ("user_id", "k"):
        assert mine.get(key) == theirs.get(key), raw


def test_a_repeated_parameter_is_said_beside_the_other_parameters_issues() -> None:
    """Found by attack: ``?user_id=1&user_id=2&k=abc`` said only the repeated user_id."""
    with pytest.raises(RequestValidationError) as caught:
        _query(_request(b"user_id=1&user_id=2&k=abc"))
    assert [(e["loc"], e["type"]) for e in caught.value.errors()] == [
        (("query", "user_id"), "repeated_parameter"), (("query", "k"), "int_parsing")]
    with pytest.raises(RequestValidationError) as caught:
        _query(_request(b"k=3&k=4"))
    assert [(e["loc"], e["type"]) for e in caught.value.errors()] == [
        (("query", "k"), "repeated_parameter"), (("query", "user_id"), "missing")]


def test_a_repeated_or_unknown_parameter_is_refused_on_either_split() -> None:
    """Found by attack: ``?user_id=196&user_id=197`` was served (and a decision logged) for
    user 197, Starlette's last value; ``?k=3&k=4`` gave 4 items; ``?K=3`` (a typo) and a
    cache-buster were ignored, the first serving the default k (the route logs a decision)."""
    for raw in (b"user_id=1&user_id=2", b"user_id=1&k=3&k=4", b"k=3&user_id=1&k=3",
                b"user_id=%31&user_id=2", b"user_id=1&K=3", b"user_id=1&_=1&_=2",
                b"user_id=1&%4B=3", b"user_id=1&k=3&x"):
        with pytest.raises(RequestValidationError) as caught:
            _query(_request(raw))
        assert {e["type"] for e in caught.value.errors()} <= {"unknown_parameter",
                                                               "repeated_parameter"}, raw
    # A trailing "&" names no parameter.
    assert dict(_query(_request(b"user_id=1&k=3&"))) == {"user_id": "1", "k": "3"}
