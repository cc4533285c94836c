"""Latency of the live push across workers: feedback's 2xx -> the pushed slate on the stream.

``recbandits serve --workers 2`` (the same uvicorn options, through
``bench/serving_load.py``'s server runner), on SQLite and on a throw-away PostgreSQL. The
kernel decides which worker accepts a connection, so the bench opens streams of the user until
it holds one on each worker (their ``ready`` events name the worker's pid): whichever worker
takes a feedback, one of the two streams is held by the other. For each feedback (a like on the
last pushed slate, sent when the previous push has arrived, then a pause, so pushes are not
coalesced) the latency is the time from the feedback's 2xx response to the arrival of its event
on the *slower* of the two streams: an upper bound of the cross-worker figure.

Target (issue 14): p99 <= 250 ms. Prints p50/p99/max per store and the load average.

Usage::

    RECBANDITS_DATA=/work/shared/data .venv/bin/python bench/stream_latency.py
        [--feedbacks 150] [--gap 0.1] [--stores sqlite postgresql] [--dataset movielens]
"""

from __future__ import annotations

import argparse
import asyncio
import shutil
import sys
import tempfile
import time
from collections.abc import AsyncIterator
from pathlib import Path

import httpx2
import numpy as np
import orjson

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))

from host import load_average  # noqa: E402
from serving_load import Server, prepare_state, seed_store, start_postgres  # noqa: E402

USER = 1


async def read_events(lines: AsyncIterator[str], arrivals: dict[int, float],
                      slates: asyncio.Queue[dict]) -> None:
    """Record each update's arrival time by its id; hand its slate on."""
    event: dict[str, str] = {}
    async for line in lines:
        if line.startswith(":"):
            continue
        if line:
            name, _, value = line.partition(": ")
            event[name] = value
            continue
        if event.get("event") == "update":
            seq = int(event["id"])
            arrivals.setdefault(seq, time.perf_counter())  # the first of the two streams
            arrivals[-seq] = time.perf_counter()  # the latest of them, overwritten
            await slates.put(orjson.loads(event["data"])["recommendations"])
        event = {}


async def open_streams(client: httpx2.AsyncClient
                       ) -> list[tuple[httpx2.Response, AsyncIterator[str]]]:
    """One stream of USER on each of the two workers (others opened on the way are closed)."""
    held: dict[int, tuple[httpx2.Response, AsyncIterator[str]]] = {}
    extra = []
    for _ in range(40):
        request = client.build_request("GET", f"/users/{USER}/stream", params={"k": 10})
        response = await client.send(request, stream=True)
        lines = response.aiter_lines()
        event: dict[str, str] = {}
        async for line in lines:
            if not line:
                break
            name, _, value = line.partition(": ")
            event[name] = value
        pid = orjson.loads(event["data"])["pid"]
        if pid in held:
            extra.append(response)
        else:
            held[pid] = (response, lines)
        if len(held) == 2:
            break
    for response in extra:
        await response.aclose()
    if len(held) != 2:
        raise RuntimeError("could not hold a stream on each of the two workers")
    return list(held.values())


async def measure(base: str, n: int, gap: float) -> np.ndarray:
    limits = httpx2.Limits(max_keepalive_connections=0)  # a fresh connection per stream
    async with httpx2.AsyncClient(base_url=base, timeout=httpx2.Timeout(30, read=None),
                                 limits=limits) as streams_client, \
            httpx2.AsyncClient(base_url=base, timeout=30, limits=limits) as client:
        streams = await open_streams(streams_client)
        arrivals: dict[int, float] = {}
        slates: asyncio.Queue[dict] = asyncio.Queue()
        readers = [asyncio.create_task(read_events(lines, arrivals, slates))
                   for _, lines in streams]
        slate = (await client.get("/recommendations", params={"user_id": USER})).json()
        latencies = []
        # Feedback seqs are read back from the push itself: the first event after a 2xx.
        for _ in range(n):
            movie = slate["items"][0]["movie_id"]
            before = set(arrivals)
            response = await client.post("/feedback", json={
                "user_id": USER, "movie_id": movie, "feedback_type": "like",
                "event_id": slate["event_id"]})
            answered = time.perf_counter()
            response.raise_for_status()
            # Both streams' slates arrive; the next like goes on the second one.
            slate = await asyncio.wait_for(slates.get(), 30)
            slate = await asyncio.wait_for(slates.get(), 30)
            new = [s for s in arrivals if s < 0 and s not in before]
            latencies.append(arrivals[new[-1]] - answered if new else np.nan)
            await asyncio.sleep(gap)
        for task in readers:
            task.cancel()
        for response, _ in streams:
            await response.aclose()
    return np.array(latencies) * 1000


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--feedbacks", type=int, default=150)
    parser.add_argument("--gap", type=float, default=0.1, help="seconds between feedbacks")
    parser.add_argument("--stores", nargs="+", default=["sqlite", "postgresql"],
                        choices=["sqlite", "postgresql"])
    parser.add_argument("--dataset", default="movielens", choices=["movielens", "synthetic"])
    parser.add_argument("--keep", action="store_true", help="keep the temporary folder (logs)")
    args = parser.parse_args(argv)
    results = {}
    tmp = Path(tempfile.mkdtemp(prefix="stream-latency-"))
    try:
        state = tmp / "state"
        prepare_state(state, args.dataset)
        for store in args.stores:
            pg = None
            if store == "postgresql":
                create_db, pg = start_postgres(tmp)
                db = create_db()
            else:
                db = f"sqlite:///{tmp / 'stream.db'}"
            env = {"RECBANDITS_STATE_DIR": str(state), "RECBANDITS_DATASET": args.dataset,
                   "RECBANDITS_DB": db, "RECBANDITS_SEED": "0",
                   "PROMETHEUS_MULTIPROC_DIR": tempfile.mkdtemp(dir=tmp)}
            seed_store(state, db)
            server = Server("serving.app:app_from_env", 2, env, tmp / f"{store}.log", "/health")
            try:
                load = load_average()
                ms = asyncio.run(measure(server.base, args.feedbacks, args.gap))
            finally:
                stopped = time.perf_counter()
                server.stop()
                stop_s = time.perf_counter() - stopped
                if pg is not None:
                    pg.stop()
            ok = ms[~np.isnan(ms)]
            results[store] = ok
            print(f"{store}: {ok.size}/{ms.size} pushes, feedback 2xx -> slate on the other "
                  f"worker (slower of 2 streams): p50 {np.percentile(ok, 50):.1f} ms, p99 "
                  f"{np.percentile(ok, 99):.1f} ms, max {ok.max():.1f} ms; load average "
                  f"{load} at start, {load_average()} at end; server stopped "
                  f"in {stop_s:.1f} s", flush=True)
    finally:
        if not args.keep:
            shutil.rmtree(tmp, ignore_errors=True)
    for store, ok in results.items():
        print(f"{store}_p50_ms: {np.percentile(ok, 50):.1f}")
        print(f"{store}_p99_ms: {np.percentile(ok, 99):.1f}")
        print(f"{store}_max_ms: {ok.max():.1f}")
        print(f"{store}_target_met: {np.percentile(ok, 99) <= 250}")
    print(f"load_average: {load_average()}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
