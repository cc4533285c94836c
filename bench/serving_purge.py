"""The cost of ``recbandits purge``: how long its transaction holds the ``log_head`` lock (every
writer of feedback and outcomes waits for it meanwhile) and how long the whole command takes.

A log is built through the service in process (``GET /recommendations`` and ``POST /events``
with 0-2 events on each slate plus one unattributed view, as ``tests/test_serving_purge.py``
does; arms SVD, co-occurrence and popularity on a small synthetic catalogue), every decision is
settled by the sweep, then everything is purged. The peer, measured in the same run on the same
rows, is the settle sweep's transaction (also a maintenance transaction under the ``log_head``
lock): ``purge_lock_over_settle`` is the ratio. Only wall-clock of one run each: read it with
the load average printed beside it.

Usage::

    .venv/bin/python bench/serving_purge.py [--decisions 2000] [--stores sqlite postgresql]

Ends with ``name: value`` lines.
"""

from __future__ import annotations

import argparse
import copy
import functools
import sys
import tempfile
import time
from collections.abc import Callable
from datetime import UTC, datetime
from pathlib import Path

import numpy as np
from host import load_average

from serving.rules import DEFAULT_RULES, EventType

REPO = Path(__file__).resolve().parent.parent
ARMS = ["svd", "cooccurrence", "popularity"]
KINDS = list(EventType)  # every type, so a new one's rows are purged too


def typed(event: dict) -> dict:
    """``event`` with the value its type takes, if it takes one (the low end of its range)."""
    spec = DEFAULT_RULES[event["type"]].value
    return event if spec is None else {**event, "value": spec.low}


def traffic(client: object, rng: np.random.Generator, n: int) -> None:
    """``n`` slates to random users, 0-2 events of any type on each and one view of a random
    item (a typed event's value: its range's low end)."""
    service = client.app.state.service  # type: ignore[attr-defined]
    users, items = service.catalog.user_ids[:50], service.catalog.item_ids
    for _ in range(n):
        shown = client.get("/recommendations", params={  # type: ignore[attr-defined]
            "user_id": int(rng.choice(users)), "k": 5}).json()
        batch = [typed({"user_id": shown["user_id"], "item_id": item["movie_id"],
                        "type": str(rng.choice(KINDS)), "event_id": shown["event_id"]})
                 for item in shown["items"][:int(rng.integers(0, 3))]]
        batch.append({"user_id": shown["user_id"], "item_id": int(rng.choice(items)),
                      "type": "view", "idempotency_key": f"v{rng.integers(10**12)}"})
        response = client.post("/events", json={"events": batch})  # type: ignore[attr-defined]
        assert response.status_code == 201, response.text


def timed(record: dict[str, float], key: str, fn: Callable[..., object]) -> Callable[..., object]:
    @functools.wraps(fn)
    def wrapper(*args: object, **kwargs: object) -> object:
        start = time.perf_counter()
        try:
            return fn(*args, **kwargs)
        finally:
            record[key] = time.perf_counter() - start
    return wrapper


def run(backend: str, url: str, n: int, catalog: object, fitted: dict) -> dict[str, float]:
    from fastapi.testclient import TestClient

    from serving.app import create_app
    from serving.commands import purge
    from serving.settings import Settings
    from serving.store.base import Store

    tmp = Path(tempfile.mkdtemp(prefix="recbandits-purge-"))
    settings = Settings(state_dir=tmp / "state", db=url, arms=ARMS, seed=2,
                        session_strength=0.0, refresh_interval_s=3600.0)
    record: dict[str, float] = {}
    purge_tx = Store.purge
    Store.purge = timed(record, "lock_s", purge_tx)  # type: ignore[method-assign]
    try:
        with TestClient(create_app(settings, catalog=catalog,
                                   arms=copy.deepcopy(fitted))) as client:
            traffic(client, np.random.default_rng(0), n)
            store = client.app.state.service.store
            rows = store.count_rows()
            start = time.perf_counter()
            settled = store.settle_expired(time.time() + 7200, 0.0, client.app.state.service.rules)
            record["settle_s"] = time.perf_counter() - start
            cut = time.time() + 4 * 3600
            start = time.perf_counter()
            result = purge(settings, datetime.fromtimestamp(cut, UTC).isoformat(),
                           catalog=catalog, now=cut + settings.retention_s + 1)
            record["total_s"] = time.perf_counter() - start
            assert result.exit_code == 0, str(result)
    finally:
        Store.purge = purge_tx  # type: ignore[method-assign]
    print(f"{backend}: {rows['decisions']} decisions ({settled} settled), {rows['feedback']} "
          f"feedback; {str(result).splitlines()[-1]}")
    return record


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--decisions", type=int, default=2000)
    parser.add_argument("--stores", nargs="+", default=["sqlite", "postgresql"],
                        choices=["sqlite", "postgresql"])
    args = parser.parse_args(argv)
    sys.path.insert(0, str(REPO / "tests"))
    from arms.data import make_synthetic
    from serving.armset import fit_arms

    catalog = make_synthetic(120, 200, 3000, random_state=4)
    fitted = fit_arms(ARMS, catalog, seed=0)
    lines = [f"load_before: {load_average()}"]
    for backend in args.stores:
        if backend == "postgresql":
            from test_serving_support import PostgresServer

            url = PostgresServer().create_database()
        else:
            url = f"sqlite:///{tempfile.mkdtemp(prefix='recbandits-purge-')}/store.db"
        record = run(backend, url, args.decisions, catalog, fitted)
        lines += [f"{backend}_purge_lock_s: {record['lock_s']:.3f}",
                  f"{backend}_settle_lock_s: {record['settle_s']:.3f}",
                  f"{backend}_purge_lock_over_settle: {record['lock_s'] / record['settle_s']:.2f}",
                  f"{backend}_purge_total_s: {record['total_s']:.2f}"]
    lines.append(f"load_after: {load_average()}")
    print("\n".join(lines))
    return 0


if __name__ == "__main__":
    sys.exit(main())
