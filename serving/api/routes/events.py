"""``POST /events``: what users did with items (views, clicks, likes, carts, purchases, ratings,
dwell times), one event or a batch, each worth what the rule book (:mod:`serving.rules`) says.

A plain Starlette route answered in front of the middleware stack, like ``POST /feedback``.
"""

from __future__ import annotations

from starlette.requests import Request
from starlette.responses import Response

from serving.api.deps import checked_body
from serving.api.openapi import DocumentedRoute, operation
from serving.api.responses import json_response
from serving.schemas import MAX_EVENTS, EventOut, EventsIn, EventsOut

DESCRIPTION = f"""Store one event, or a batch of up to {MAX_EVENTS:,} (``{{"events": [...]}}``),
all or none, in order; a bare event is a batch of one.

Each event is attributed to the decision that showed its item (its ``event_id``, or the user's
latest decision showing it within the reward window) and is worth what the rule book says: a
reward for that decision's arm (the first rewarded event decides it, under the default
``earliest`` aggregation), an implicit rating for retraining, and a pull of the user's next
slates towards or away from the item's genres.

Returns 201 when the batch stored at least one new event, 200 when every event was stored
before (retries are safe: see ``idempotency_key``). A refused event refuses the whole batch
(422, 404 or 409, the message naming ``events[i]``); nothing is stored."""


async def post_events(request: Request) -> Response:
    """``POST /events``: validate :class:`EventsIn`, store, answer :class:`EventsOut`."""
    # No query parameter is taken: a typo (``?dry_run=1``) must not store as if it were absent.
    body = await checked_body(request, EventsIn, query={})
    state = request.app.state
    results = await state.service.record_events(body.events)
    stored = 0
    for event, result in zip(body.events, results, strict=True):
        if result.created:
            stored += 1
            state.metrics.record_feedback(event.type.value)
    # EventsOut's fields, written without building the model (see EventOut.fields_of).
    out = {"stored": stored, "duplicates": len(results) - stored,
           "events": [EventOut.fields_of(r.row, r.created) for r in results]}
    return json_response(out, 201 if stored else 200)


_OPENAPI, _MODELS = operation(
    summary="Post Events", description=DESCRIPTION, tag="feedback",
    operation_id="post_events", body=EventsIn,
    responses={201: (EventsOut, "stored (some events may have been stored before)"),
               200: (EventsOut, "every event was stored already")},
    errors={404: "an event_id is not in the decision log",
            409: "an event_id was served to another user",
            413: "request body too large",
            415: "the body is not application/json",
            422: "malformed body or a query parameter; an unknown type or item, a value the "
                 "type does not take, "
                 "an item not in the named slate, a timestamp in the future or past retention",
            503: "the store is unavailable (``Retry-After``)"})

route = DocumentedRoute("/events", post_events, method="POST", openapi=_OPENAPI, models=_MODELS)
