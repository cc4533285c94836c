"""CPU of one real-time recommendation, in process: a ranking-cache miss, a pmf miss, a hit.

The configuration of ``bench/realtime_load.py`` (arms svd, sequential, autoencoder,
cooccurrence, popularity; LinTS on the 100-value ``user-v4`` context; SQLite), without HTTP and
without the load generator, so that the figure is the service's own work and steady on a shared
machine: ``--events`` single-event ``POST /events`` calls (through the ASGI app) give the users
histories, the refresher folds them, every user is asked once (their feature states warmed),
then ``Service.recommend`` is timed (``time.process_time``) over every user in three modes,
each ``--reps`` times (the minimum and the median printed):

- ``miss``: the users' kept signals and contexts (``serving.user_view``), the arm set's ranking
  cache and the snapshot's pmf cache emptied before each pass (every request rebuilds the
  user's signals and context, scores its arm and computes LinTS's probabilities: a user's
  first slate after an event);
- ``pmf_miss``: the pmf cache emptied, the rest kept (a new policy snapshot: an outcome was
  folded since the user's last request);
- ``hit``: nothing emptied (a returning user, within a decay step and a snapshot). A pass
  asks every user once and LinTS draws the arm at random, so a hit pass still scores the
  (user, arm) pairs it meets for the first time.

The generator of arm draws is reset before each pass, so every pass and every tree serves the
same arms. An A/B of two trees runs this file with each on ``PYTHONPATH`` (alternating, the
medians compared); ``--state`` reuses fitted arms between runs.

Usage::

    RECBANDITS_DATA=/work/shared/data PYTHONPATH=. .venv/bin/python bench/realtime_miss.py
        [--events 6000] [--reps 5] [--state DIR]

Ends with ``name: value`` lines; ``cat /proc/loadavg`` is printed at the start and the end.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import statistics
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
from host import load_average
from realtime_load import ARMS, POLICY, event_lines
from serving_load import prepare_state, seed_store


async def _post(app: object, body: bytes) -> int:
    """``POST /events`` with ``body`` through the ASGI ``app``; the response status."""
    scope = {"type": "http", "asgi": {"version": "3.0"}, "http_version": "1.1",
             "method": "POST", "scheme": "http", "path": "/events", "raw_path": b"/events",
             "query_string": b"", "root_path": "", "client": ("127.0.0.1", 1),
             "server": ("127.0.0.1", 8000), "state": {},
             "headers": [(b"host", b"bench"), (b"content-type", b"application/json"),
                         (b"content-length", str(len(body)).encode())]}
    sent = False
    status = 0

    async def receive() -> dict:
        nonlocal sent
        if sent:  # the app asks again only to watch for a disconnect
            await asyncio.sleep(3600)
        sent = True
        return {"type": "http.request", "body": body, "more_body": False}

    async def send(message: dict) -> None:
        nonlocal status
        if message["type"] == "http.response.start":
            status = message["status"]

    await app(scope, receive, send)  # type: ignore[operator]
    return status


async def measure(state: Path, db: str, n_events: int, reps: int) -> dict[str, float]:
    """The three modes' CPU per recommendation (us), minimum and median over ``reps``."""
    from serving.app import create_app
    from serving.settings import Settings

    settings = Settings(dataset="movielens", state_dir=str(state), db=db, seed=0,
                        policy=POLICY, arms=ARMS.split(","))
    app = create_app(settings)
    out: dict[str, float] = {}
    async with app.router.lifespan_context(app):
        service = app.state.service
        n_users = len(service.arm_set.user_index)
        items = service.arm_set.item_ids[:400].tolist()
        lines = event_lines(items, n_users, n_events, 3, "m")
        for start in range(0, len(lines), 50):
            statuses = await asyncio.gather(*(_post(app, line.encode())
                                              for line in lines[start:start + 50]))
            if any(s != 201 for s in statuses):
                raise RuntimeError(f"POST /events answered {sorted(set(statuses))}")
        service.refresh()  # the live arms fold the events now, not during a pass
        users = sorted(service.arm_set.user_index)
        for user in users:
            await service.recommend(user, 10)
        for mode in ("miss", "pmf_miss", "hit"):
            times = []
            for _ in range(reps):
                service.rng = np.random.default_rng(1)
                if mode == "miss":
                    service.arm_set._cache.clear()
                    service.user_views.clear()
                if mode != "hit":
                    service._live[1].cache.clear()
                start_cpu = time.process_time()
                for user in users:
                    await service.recommend(user, 10)
                times.append(1e6 * (time.process_time() - start_cpu) / len(users))
            out[f"{mode}_cpu_us_min"] = min(times)
            out[f"{mode}_cpu_us_median"] = statistics.median(times)
    return out


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--events", type=int, default=6000)
    parser.add_argument("--reps", type=int, default=5)
    parser.add_argument("--state", type=Path, help="a folder of fitted arms to reuse "
                        "(prepared there if empty)")
    args = parser.parse_args(argv)
    import serving
    print(f"load average at start: {load_average()}")
    print(f"serving from {Path(serving.__file__).parent}")
    tmp = Path(tempfile.mkdtemp(prefix="recbandits-rt-miss-"))
    state = args.state or tmp / "state"
    if not (state / "recbandits.db").exists():
        prepare_state(state, "movielens", {"RECBANDITS_ARMS": ARMS, "RECBANDITS_POLICY": POLICY})
    db = f"sqlite:///{tmp / 'miss.db'}"
    seed_store(state, db, ARMS.split(","))
    results = asyncio.run(measure(state, db, args.events, args.reps))
    print(f"load average at end: {load_average()}\n")
    for name, value in results.items():
        print(f"{name}: {value:.1f}")
    return 0


if __name__ == "__main__":
    os.environ.setdefault("RECBANDITS_LOG_LEVEL", "WARNING")
    sys.exit(main())
