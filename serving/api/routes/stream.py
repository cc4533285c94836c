"""``GET /users/{user_id}/stream``: the live push, as Server-Sent Events.

After each feedback of the user, taken by any worker, the stream sends one ``update`` event:
the refreshed slate (what ``GET /recommendations`` answers; it is a decision shown to the user,
so the service's ``recommend`` makes and logs it like any other) and the policy panel (what
``GET /policy`` answers). Why SSE rather than a WebSocket, how updates cross workers, and how a
slow reader is handled (drop and resync): :mod:`serving.stream`.

The events::

    retry: 1000
    id: <log position the stream starts after>
    event: ready
    data: {"user_id": 7, "after": 812, "pid": 4242}

    id: <seq of the newest feedback reflected>
    event: update
    data: {"user_id": 7, "feedback": [{"seq", "movie_id", "feedback_type", "event_id",
           "counted"}, ...], "recommendations": {...}, "policy": {...}}

    : heartbeat                      (a comment, every ``stream_heartbeat_s`` when idle)

    event: unavailable               (the store failed: the stream ends; reconnecting with
    data: {"detail": ..., "code": ...}  Last-Event-ID replays what this event did not send;
                                     not "error", which is EventSource's own event name)
"""

from __future__ import annotations

import os
from collections.abc import AsyncIterator
from typing import Annotated, Any

import orjson
from fastapi import APIRouter, Header, Path, Query, Request
from fastapi.responses import StreamingResponse
from starlette.background import BackgroundTask

from serving.api.deps import strict_query
from serving.api.routes.recommendations import FIELDS
from serving.errors import ServingError
from serving.schemas import MAX_ID, MAX_K, QUERY_INT, ErrorOut, PolicyOut
from serving.stream import Stream, StreamHub

router = APIRouter(tags=["stream"])

#: Milliseconds a browser's EventSource waits before it reconnects.
RETRY_MS = 1000


def hub(request: Request) -> StreamHub:
    """Return the worker's hub, made on the first stream (nothing at import or start-up)."""
    state = request.app.state
    if getattr(state, "stream_hub", None) is None:
        settings = state.settings
        state.stream_hub = StreamHub(state.service.store, max_streams=settings.stream_max,
                                     queue_size=settings.stream_queue,
                                     poll_s=settings.stream_poll_s)
    return state.stream_hub


def sse(event: str, data: Any, event_id: int | None = None, retry_ms: int | None = None
        ) -> bytes:
    """One Server-Sent Event (``data`` as one line of JSON)."""
    head = b"" if retry_ms is None else b"retry: %d\n" % retry_ms
    if event_id is not None:
        head += b"id: %d\n" % event_id
    return head + b"event: " + event.encode() + b"\ndata: " + orjson.dumps(data) + b"\n\n"


async def update_event(request: Request, stream: Stream, k: int,
                       rows: list[dict[str, Any]]) -> bytes:
    """The ``update`` event for ``rows`` (the feedback since the last event, oldest first)."""
    state = request.app.state
    service = state.service
    # Fold the outcomes logged so far first, so the slate is drawn from a policy that has seen
    # this feedback; the panel after the slate is logged, so its pulls count it as GET /policy
    # does from now on (computed before, "Shown" was one short: found by attack).
    await service.in_thread(service.refresh)
    result = await service.recommend(stream.user_id, k)
    state.metrics.record_decision(result.arm)
    policy = PolicyOut.model_validate(await service.policy_view()).model_dump(mode="json")
    slate = {name: getattr(result, name) for name in FIELDS}
    return sse("update", {"user_id": stream.user_id, "feedback": rows,
                          "recommendations": slate, "policy": policy}, rows[-1]["seq"])


async def events(request: Request, streams: StreamHub, stream: Stream, k: int,
                 heartbeat_s: float) -> AsyncIterator[bytes]:
    """The stream's body; Starlette cancels it when the client disconnects."""
    try:
        yield sse("ready", {"user_id": stream.user_id, "after": stream.sent,
                            "pid": os.getpid()}, stream.sent, RETRY_MS)
        while True:
            rows = await streams.next_rows(stream, heartbeat_s)
            if stream.closing:
                return
            if rows is None:
                yield b": heartbeat\n\n"
                continue
            if not rows:
                continue
            try:
                chunk = await update_event(request, stream, k, rows)
            except ServingError as exc:
                # The rows are not marked sent: a reconnect with Last-Event-ID replays them.
                yield sse("unavailable", {"detail": exc.message, "code": exc.code})
                return
            stream.sent = rows[-1]["seq"]
            yield chunk
    finally:
        streams.close(stream)


@router.get(
    "/users/{user_id}/stream",
    response_class=StreamingResponse,
    # Each update logs a decision: a typo (``?K=3``) must not serve the default k.
    dependencies=[strict_query("k", "after")],
    responses={200: {"content": {"text/event-stream": {}},
                     "description": "``ready``, then an ``update`` event per feedback batch"},
               503: {"model": ErrorOut,
                     "description": "this worker holds ``stream_max`` streams already, or the "
                                    "store is unavailable"}},
)
async def user_stream(
    request: Request,
    # Plain decimal digits (QUERY_INT), as every other route's ids: "1_0", "+1" and "1.0" had
    # opened user 10's or 1's stream here (found by attack).
    user_id: Annotated[int, Path(ge=1, le=MAX_ID, description="Raw user id"), QUERY_INT],
    k: Annotated[int, Query(ge=1, le=MAX_K, description="Slate size of the pushed slates"),
                 QUERY_INT] = 10,
    after: Annotated[int | None, Query(ge=0, description="Resume after this log position "
                                       "(``Last-Event-ID`` wins when both are sent)"),
                     QUERY_INT] = None,
    last_event_id: Annotated[int | None, Header(ge=0, description="Set by EventSource on "
                                                "reconnection"), QUERY_INT] = None,
) -> StreamingResponse:
    """Live slates and policy panel of ``user_id`` after each of their feedbacks.

    An event's id is the log position of the newest feedback it reflects: reconnecting with
    ``Last-Event-ID: n`` (or ``?after=n``) sends one event for every feedback of the user
    after ``n`` that was missed, and none twice.
    """
    streams = hub(request)
    head, _ = await streams.read_tail(0, [])
    resume = last_event_id if last_event_id is not None else after
    # A position past the log's head (a store reset) resumes from the head.
    start = head if resume is None else min(resume, head)
    stream = streams.open(user_id, start)
    settings = request.app.state.settings
    return StreamingResponse(
        events(request, streams, stream, k, settings.stream_heartbeat_s),
        media_type="text/event-stream",
        # Also when the body never started (the client left before the headers went out).
        background=BackgroundTask(streams.close, stream),
        headers={"Cache-Control": "no-cache", "X-Accel-Buffering": "no"})
