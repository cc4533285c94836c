"""p99 of returning users' slates in consecutive windows at a fixed rate, across minute starts.

A user's context (feature set ``user-v4``) and with it LinTS's probabilities stay put between
their events for a step of the decay (``feature_decay_step_s``, a minute); when it ends the
worker recomputes both on the user's next slate. With every user's step starting at the
clock's minute (``user-v3``) all returning users' next slates recomputed them at once, and the
window holding a minute's start had a p99 of 235-295 ms against 6-30 ms for the others; each
user's own phase (``BehaviourSpec.decay_phase``) spreads those recomputations over the minute.

The configuration of ``bench/realtime_load.py`` (one worker, SQLite, the five real-time arms,
LinTS on ``user-v4``): events for every user (``POST /events`` for ``--events-seconds``), a
warm-up until every arm has served every user, then ``--windows`` consecutive open-loop windows
of ``--seconds`` at ``--rate`` requests per second (default: half the bare endpoint's rate
measured first), each printed with whether it holds a minute's start. ``--state`` reuses a
folder of fitted arms (prepared there if empty).

Each window also prints the worker's CPU a request and its busy share (CPU seconds over the
window's length). ``--rates R1 R2 ...`` runs one window per rate instead (a sweep: where the
p99 turns up as the worker fills; a worker's CPU a request is higher at a fixed rate than in
wrk's closed loop, which hands it many requests per turn of its event loop).

Usage::

    RECBANDITS_DATA=/work/shared/data .venv/bin/python bench/minute_windows.py
        [--windows 8] [--seconds 8] [--rate R | --rates R1 R2 ...] [--state DIR]

Ends with ``name: value`` lines; ``cat /proc/loadavg`` is printed at the start and the end.
"""

from __future__ import annotations

import argparse
import asyncio
import shutil
import sys
import tempfile
import time
from pathlib import Path

from host import load_average
from realtime_load import (
    ARMS,
    LUA_EVENTS,
    POLICY,
    event_lines,
    real_time_service,
    shown_items,
    warm_every_arm,
)
from serving_load import (
    LUA_BARE,
    Server,
    open_loop,
    prepare_state,
    seed_store,
    wrk,
    wrk_missing,
)

N_USERS = 943


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--windows", type=int, default=8)
    parser.add_argument("--seconds", type=float, default=8.0, help="length of a window")
    parser.add_argument("--rate", type=float, help="requests a second (default: half bare)")
    parser.add_argument("--rates", type=float, nargs="+",
                        help="one window at each of these rates (instead of --windows)")
    parser.add_argument("--events-seconds", type=float, default=6.0)
    parser.add_argument("--state", type=Path, help="a folder of fitted arms to reuse")
    args = parser.parse_args(argv)
    if wrk_missing():
        return 2
    print(f"load average at start: {load_average()}")
    tmp = Path(tempfile.mkdtemp(prefix="recbandits-minute-"))
    state = args.state or tmp / "state"
    results: dict[str, float] = {}
    try:
        if not (state / "recbandits.db").exists():
            prepare_state(state, "movielens", {"RECBANDITS_ARMS": ARMS,
                                               "RECBANDITS_POLICY": POLICY})
        rate = args.rate
        if rate is None and not args.rates:
            bare = Server("serving_load:bare_app", 1, {}, tmp / "bare.log", "/bare")
            try:
                rate = wrk(bare.base, LUA_BARE, args.seconds, 32, tmp)["rps"] / 2
            finally:
                bare.stop()
        db = f"sqlite:///{tmp / 'rt.db'}"
        seed_store(state, db, ARMS.split(","))
        service = real_time_service(state, "movielens", db, tmp)
        try:
            items = shown_items(service, N_USERS)
            path = tmp / "events.jsonl"
            path.write_text("\n".join(event_lines(items, N_USERS, 200_000, 3, "e")) + "\n")
            wrk(service.base, LUA_EVENTS % {"path": path}, args.events_seconds, 32, tmp)
            warm, cold = asyncio.run(warm_every_arm(service.base, N_USERS,
                                                    len(ARMS.split(","))))
            rates = args.rates or [rate] * args.windows
            print(f"rates {', '.join(f'{r:.0f}' for r in sorted(set(rates)))}/s; warm-up {warm} "
                  f"requests, {cold} pairs never served")
            worst = {True: 0.0, False: 0.0}
            for window, at in enumerate(rates):
                cpu, start = service.cpu_s(), time.time()
                h = open_loop(service.base, at, args.seconds, N_USERS, 2 + window)
                end, used = time.time(), service.cpu_s() - cpu
                crosses = int(start // 60) != int(end // 60)
                worst[crosses] = max(worst[crosses], h["p99"])
                cpu_us = 1e6 * used / max(h["rps"] * args.seconds, 1.0)
                print(f"window {window}: :{time.gmtime(start).tm_sec:02d} to "
                      f":{time.gmtime(end).tm_sec:02d}{'  holds a minute start' if crosses else ''}"
                      f"   {at:.0f}/s   p50 {h['p50']:.1f} ms   p99 {h['p99']:.1f} ms   "
                      f"{h['rps']:.0f} req/s   {cpu_us:.0f} us of CPU a request, worker "
                      f"{used / args.seconds:.0%} busy", flush=True)
                results[f"window_{window}_rate"] = at
                results[f"window_{window}_p99_ms"] = h["p99"]
                results[f"window_{window}_cpu_us_per_request"] = cpu_us
                results[f"window_{window}_busy_share"] = used / args.seconds
                results[f"window_{window}_holds_minute_start"] = float(crosses)
            results["worst_p99_ms_holding_a_minute_start"] = worst[True]
            results["worst_p99_ms_other_windows"] = worst[False]
        finally:
            service.stop()
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    print(f"load average at end: {load_average()}\n")
    for name, value in results.items():
        print(f"{name}: {value:.3f}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
