"""CPU of a recommendation on PostgreSQL over TCP against over its Unix-domain socket, in process.

The service app is called directly through ASGI (no HTTP server, no load generator on the
cores) in waves of ``--concurrency`` requests (the group reader and the writer batch them as
under wrk's 32 connections), on one PostgreSQL server, a fresh database per run, the two URLs
alternated ``--reps`` times. Printed per run and as medians: the worker's CPU (this process,
``time.process_time``) and the PostgreSQL server's (its backends included) per request. The
wall-clock rates of ``bench/serving_load.py`` swing too much on a shared machine to show a
difference of this size; its ``--pg-socket`` runs the HTTP measurement over the socket.

Measured (load 1.2-2.0, medians): 32 concurrent, 10 alternations: Thompson Sampling 78.1 / 34.4
us of worker / PostgreSQL CPU a recommendation over TCP and over the socket alike, LinTS 105.7 /
35.9 over TCP against 99.7 / 32.8 (within the runs' spread); one at a time (``--concurrency 1
--waves 1500``), 6 alternations: Thompson Sampling 648 / 290 against 653 / 287.

Usage::

    RECBANDITS_DATA=/work/shared/data .venv/bin/python bench/pg_socket_cost.py
        [--policy ThompsonSampling] [--reps 6] [--waves 100] [--concurrency 32]

Ends with ``name: value`` lines. Bounded: reps x waves x concurrency requests per URL.
"""

from __future__ import annotations

import argparse
import asyncio
import statistics
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import sqlalchemy as sa

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))
sys.path.insert(0, str(HERE.parent / "tests"))

from serving_load import db_cpu_s, prepare_state, seed_store  # noqa: E402


def _scope(user: int) -> dict[str, Any]:
    return {"type": "http", "asgi": {"version": "3.0"}, "http_version": "1.1", "method": "GET",
            "scheme": "http", "path": "/recommendations", "raw_path": b"/recommendations",
            "query_string": f"user_id={user}&k=10".encode(), "root_path": "",
            "headers": [(b"host", b"bench")], "client": ("127.0.0.1", 1),
            "server": ("127.0.0.1", 8000), "state": {}}


async def _run(pg: Any, url: str, state: Path, policy: str, waves: int,
               concurrency: int) -> tuple[float, float]:
    """(worker, PostgreSQL) CPU microseconds per recommendation of one service on ``url``."""
    from serving.app import create_app
    from serving.settings import Settings

    seed_store(state, url)
    app = create_app(Settings(dataset="movielens", state_dir=state, db=url, seed=0,
                              policy=policy))

    async def call(user: int) -> None:
        sent: list[dict[str, Any]] = []

        async def receive() -> dict[str, Any]:
            return {"type": "http.request", "body": b"", "more_body": False}

        async def send(message: dict[str, Any]) -> None:
            sent.append(message)

        await app(_scope(user), receive, send)
        if sent[0]["status"] != 200:
            raise RuntimeError(f"GET /recommendations answered {sent[0]['status']}")

    async with app.router.lifespan_context(app):
        for user in range(1, 300):  # warm: arms' caches, prepared statements, the pool
            await call(user)
        n, cpu, db = 0, time.process_time(), db_cpu_s(pg)
        for wave in range(waves):
            await asyncio.gather(*(call(1 + (wave * concurrency + i) % 943)
                                   for i in range(concurrency)))
            n += concurrency
        return (time.process_time() - cpu) / n * 1e6, (db_cpu_s(pg) - db) / n * 1e6


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--policy", default="ThompsonSampling")
    parser.add_argument("--reps", type=int, default=6)
    parser.add_argument("--waves", type=int, default=100)
    parser.add_argument("--concurrency", type=int, default=32)
    args = parser.parse_args(argv)
    from test_serving_support import PostgresServer

    state = Path(tempfile.mkdtemp(prefix="recbandits-pgsock-")) / "state"
    prepare_state(state, "movielens")
    pg = PostgresServer()
    runs: dict[str, list[tuple[float, float]]] = {"tcp": [], "unix": []}
    try:
        for rep in range(args.reps):
            for kind in ("tcp", "unix") if rep % 2 == 0 else ("unix", "tcp"):
                tcp = pg.create_database()
                url = tcp if kind == "tcp" else pg.socket_url(sa.engine.make_url(tcp).database
                                                              or "")
                runs[kind].append(asyncio.run(_run(pg, url, state, args.policy, args.waves,
                                                   args.concurrency)))
    finally:
        pg.stop()
    print(f"{args.policy}, {args.concurrency} concurrent, CPU us per recommendation "
          "(worker / PostgreSQL):")
    for kind, values in runs.items():
        print(f"  {kind:<5}", " ".join(f"{w:.0f}/{d:.0f}" for w, d in values))
    print()
    for kind, values in runs.items():
        print(f"{kind}_worker_cpu_us_per_request: {statistics.median(w for w, _ in values):.1f}")
        print(f"{kind}_db_cpu_us_per_request: {statistics.median(d for _, d in values):.1f}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
