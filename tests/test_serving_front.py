"""The hand-written pieces of the hot routes give what the general path gives."""

from __future__ import annotations

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
    mine, theirs = _query(request), request.query_params
    for key in ("user_id", "k"):
        assert mine.get(key) == theirs.get(key), raw


def test_a_repeated_key_takes_starlettes_rule() -> None:
    request = _request(b"user_id=1&user_id=2")
    assert _query(request) is request.query_params and _query(request)["user_id"] == "2"
