"""Load test of the real-time service (issue 19) on loopback, beside a bare endpoint in the run.

One configuration, as the issue states it: one uvicorn worker, the arms that learn from each
event (``svd, sequential, autoencoder, cooccurrence, popularity``: every user with events is
scored by ``score_history``, co-occurrence and popularity fold the log) and LinTS on the
``user-v4`` feature vector. Measured, with the machinery of :mod:`serving_load` (wrk for
throughput, the open-loop generator for latency at a fixed rate, CPU per request):

1. the bare endpoint: throughput and, at half its rate, p99 (the floor of this machine);
2. ``POST /events``, one event per request (every type of :class:`serving.rules.EventType`;
   distinct idempotency keys): throughput against bare (target >= 0.50);
3. ``GET /recommendations`` once every user has events (about ten each, from step 2), so every
   slate goes through the real-time path: a first pass (each user's slates scored from their
   events: mostly misses of the ranking cache), then, after a warm-up that asks each user
   until every arm has served them once (LinTS draws the arm at random, and each arm's ranking
   is kept per user), the measured one: the steady state of users coming back between two of
   their events, every ranking and context kept. Throughput against bare (target >= 0.60)
   and p99 at half the bare rate (target <= 20 ms). No event or outcome arrives meanwhile, so
   the policy's snapshot (and its probability cache) stays the same: an upper bound for
   returning users, which holds while users x arms fit ``score_cache_size`` (943 x 5 here)
   and the pass stays within one ``feature_decay_step_s`` step for most users. The first
   pass's figures (no warm-up) show what misses cost, and read-your-writes (4) the first slate
   after each event;
4. read your writes: each connection alternates an event of a user and that user's
   recommendation (pairs per second, p99 of both).

Usage::

    RECBANDITS_DATA=/work/shared/data .venv/bin/python bench/realtime_load.py [--seconds 8]
        [--store sqlite|postgresql] [--connections 32] [--events-only] [--pin]

``--events-only`` stops after step 2 (bare and ``POST /events`` figures only, ~1 minute): for
comparing two trees' events path, run alternately (``PYTHONPATH`` picks the tree the service
imports).

``--pin`` puts the server (bare and service) on CPU 0 and wrk and the fixed-rate generator on
CPU 1, as ``bench/serving_load.py --pin`` (PostgreSQL stays unpinned). It is not the default:
on one core the worker's writer and refresher threads queue behind its event loop, and the
steady state fell to 0.55 of bare, p99 365 ms at half its rate, against 0.59-0.76 and 42-92 ms
unpinned in the same hour (README, "Service").

Ends with ``name: value`` lines; ``cat /proc/loadavg`` is printed at the start and the end.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import math
import random
import shutil
import sys
import tempfile
from pathlib import Path

import httpx2
from host import load_average
from serving_load import (
    LUA_BARE,
    LUA_RECS,
    Server,
    db_cpu_s,
    make_decisions,
    open_loop,
    prepare_state,
    seed_store,
    start_postgres,
    wrk,
    wrk_missing,
)

from serving.rules import DEFAULT_RULES, EventType

ARMS = "svd,sequential,autoencoder,cooccurrence,popularity"
POLICY = "LinTS"
TYPES = tuple(EventType)  # every type, so a new one is loaded too

LUA_EVENTS = """
local lines = {}
for line in io.lines("%(path)s") do lines[#lines + 1] = line end
local i = 0
request = function()
  i = i + 1
  local body = lines[((i - 1) %% #lines) + 1]
  return wrk.format("POST", "/events", {["Content-Type"] = "application/json"}, body)
end
"""

# Each connection alternates: an event of a user, then that user's slate.
LUA_READ_YOUR_WRITES = """
local lines = {}
local users = {}
for line in io.lines("%(path)s") do
  lines[#lines + 1] = line
  users[#users + 1] = string.match(line, '"user_id": (%%d+)')
end
local i = 0
local pending = nil
request = function()
  if pending then
    local user = pending
    pending = nil
    return wrk.format("GET", "/recommendations?user_id=" .. user .. "&k=10")
  end
  i = i + 1
  local n = ((i - 1) %% #lines) + 1
  pending = users[n]
  return wrk.format("POST", "/events", {["Content-Type"] = "application/json"}, lines[n])
end
"""

def event_value(kind: str, rng: random.Random) -> float | None:
    """A value an event of ``kind`` takes (None: it takes none): a whole number in the type's
    range, at most two minutes above its low end (whole stars of a rating, a dwell's seconds).
    """
    spec = DEFAULT_RULES[kind].value
    if spec is None:
        return None
    return float(rng.randint(math.ceil(spec.low), math.floor(min(spec.high, spec.low + 120))))


def event_lines(items: list[int], n_users: int, n: int, seed: int, prefix: str) -> list[str]:
    """``n`` single-event bodies of random users, items and types (distinct keys)."""
    rng = random.Random(seed)
    lines = []
    for i in range(n):
        kind = rng.choice(TYPES)
        event: dict[str, object] = {"user_id": rng.randint(1, n_users),
                                    "item_id": rng.choice(items), "type": kind,
                                    "idempotency_key": f"{prefix}{i}"}
        value = event_value(kind, rng)
        if value is not None:
            event["value"] = value
        lines.append(json.dumps({"events": [event]}))
    return lines


async def warm_every_arm(base: str, n_users: int, n_arms: int, cap: int = 60
                         ) -> tuple[int, int]:
    """Ask each user for slates until every one of ``n_arms`` arms has served them (at most
    ``cap`` requests a user); returns (requests made, (user, arm) pairs never served).
    """
    served: dict[int, set[str]] = {u: set() for u in range(1, n_users + 1)}
    requests = 0
    async with httpx2.AsyncClient(base_url=base, timeout=30) as client:
        sem = asyncio.Semaphore(16)

        async def one(user: int) -> None:
            nonlocal requests
            async with sem:
                for _ in range(cap):
                    if len(served[user]) >= n_arms:
                        return
                    r = await client.get("/recommendations", params={"user_id": user, "k": 10})
                    r.raise_for_status()
                    requests += 1
                    served[user].add(r.json()["arm"])

        await asyncio.gather(*(one(u) for u in served))
    return requests, sum(n_arms - len(arms) for arms in served.values())


def real_time_service(state: Path, dataset: str, db: str, tmp: Path,
                      cpus: str | None = None) -> Server:
    """One worker of the configuration above on store ``db``, arms fitted in ``state`` (pinned
    to ``cpus``, as ``--pin`` says)."""
    env = {"RECBANDITS_STATE_DIR": str(state), "RECBANDITS_DATASET": dataset,
           "RECBANDITS_DB": db, "RECBANDITS_SEED": "0", "RECBANDITS_POLICY": POLICY,
           "RECBANDITS_ARMS": ARMS}
    return Server("serving.app:app_from_env", 1, env, tmp / "rt.log", "/health", cpus)


def shown_items(service: Server, n_users: int) -> list[int]:
    """The movies of 200 slates the service serves (the events' items: known, recommendable)."""
    slates = asyncio.run(make_decisions(service.base, 200, n_users, 1))
    return sorted({i["movie_id"] for s in slates for i in s["items"]})


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--seconds", type=float, default=8.0)
    parser.add_argument("--store", default="sqlite", choices=["sqlite", "postgresql"])
    parser.add_argument("--connections", type=int, default=32)
    parser.add_argument("--dataset", default="movielens", choices=["movielens", "synthetic"])
    parser.add_argument("--events-only", action="store_true",
                        help="stop after the POST /events pass: bare and events figures only")
    parser.add_argument("--pin", action="store_true",
                        help="server (bare and service) on CPU 0, wrk and the fixed-rate "
                             "generator on CPU 1 (bench/serving_load.py's --pin)")
    args = parser.parse_args(argv)
    server_cpus, load_cpus = ("0", "1") if args.pin else (None, None)
    if wrk_missing():
        return 2
    print(f"load average at start: {load_average()}")
    tmp = Path(tempfile.mkdtemp(prefix="recbandits-rt-bench-"))
    state = tmp / "state"
    prepare_state(state, args.dataset, {"RECBANDITS_ARMS": ARMS, "RECBANDITS_POLICY": POLICY})
    n_users = 943 if args.dataset == "movielens" else 200
    pg = None
    results: dict[str, float] = {}
    try:
        if args.store == "postgresql":
            create_db, pg = start_postgres(tmp)
            db = create_db()
        else:
            db = f"sqlite:///{tmp / 'rt.db'}"
        seed_store(state, db, ARMS.split(","))
        bare = Server("serving_load:bare_app", 1, {}, tmp / "bare.log", "/bare",
                      server_cpus)
        try:
            cpu = bare.cpu_s()
            b = wrk(bare.base, LUA_BARE, args.seconds, args.connections, tmp, load_cpus)
            b["cpu_us"] = 1e6 * (bare.cpu_s() - cpu) / b["requests"]
            bh = {} if args.events_only else open_loop(
                bare.base, b["rps"] / 2, args.seconds, n_users, 2, load_cpus, bare=True,
                connections=args.connections)
        finally:
            bare.stop()
        service = real_time_service(state, args.dataset, db, tmp, server_cpus)
        try:
            items = shown_items(service, n_users)
            path = tmp / "events.jsonl"
            path.write_text("\n".join(event_lines(items, n_users, 200_000, 3, "e")) + "\n")
            measured = {}
            recs = LUA_RECS % {"seed": 1, "n_users": n_users}
            # The first pass after the events meets every (user, arm) anew: each slate is
            # scored from the user's events. The measured pass is the steady state, a user's
            # slates served from the ranking cache until their next event, once the warm-up
            # has had every arm serve every user (the first slate after an event is what
            # read-your-writes measures).
            passes = (("events", LUA_EVENTS % {"path": path}),
                      ("recommendations_first", recs), ("recommendations", recs))
            for name, script in passes[:1] if args.events_only else passes:
                if name == "recommendations":
                    warm, cold = asyncio.run(warm_every_arm(service.base, n_users,
                                                            len(ARMS.split(","))))
                    results.update({"warm_up_requests": warm, "warm_up_pairs_never_served":
                                    cold})
                cpu, db_cpu = service.cpu_s(), db_cpu_s(pg)
                run = wrk(service.base, script, args.seconds, args.connections, tmp, load_cpus)
                run["cpu_us"] = 1e6 * (service.cpu_s() - cpu) / run["requests"]
                run["db_us"] = 1e6 * (db_cpu_s(pg) - db_cpu) / run["requests"]
                measured[name] = run
            if args.events_only:
                return _report_events(args.store, b, measured["events"])
            h = open_loop(service.base, b["rps"] / 2, args.seconds, n_users, 2, load_cpus,
                          connections=args.connections)
            pairs_path = tmp / "pairs.jsonl"
            pairs_path.write_text("\n".join(event_lines(items, n_users, 200_000, 4, "p")) + "\n")
            ryw = wrk(service.base, LUA_READ_YOUR_WRITES % {"path": pairs_path}, args.seconds,
                      args.connections, tmp, load_cpus)
        finally:
            service.stop()
    finally:
        if pg is not None:
            pg.stop()
        shutil.rmtree(tmp, ignore_errors=True)
    e, r, f = (measured["events"], measured["recommendations"],
               measured["recommendations_first"])
    results.update({
        "bare_rps": b["rps"], "bare_p99_ms_at_half_bare": bh["p99"],
        "events_rps": e["rps"], "events_ratio": e["rps"] / b["rps"], "events_p99_ms": e["p99"],
        "events_cpu_us_per_request": e["cpu_us"],
        "recommendations_rps": r["rps"], "recommendations_ratio": r["rps"] / b["rps"],
        "recommendations_cpu_us_per_request": r["cpu_us"],
        "recommendations_first_pass_rps": f["rps"], "recommendations_first_pass_ratio":
        f["rps"] / b["rps"], "recommendations_first_pass_cpu_us_per_request": f["cpu_us"],
        "recommendations_p50_ms_at_half_bare": h["p50"],
        "recommendations_p99_ms_at_half_bare": h["p99"],
        "recommendations_achieved_rps_at_half_bare": h["rps"],
        "read_your_writes_requests_rps": ryw["rps"], "read_your_writes_p99_ms": ryw["p99"],
        "non2xx": e["non2xx"] + r["non2xx"] + h["non2xx"] + ryw["non2xx"],
        "events_non2xx": e["non2xx"], "recommendations_first_pass_non2xx": f["non2xx"],
        "recommendations_non2xx": r["non2xx"], "recommendations_non2xx_at_half_bare":
        h["non2xx"], "recommendations_errors_at_half_bare": h.get("errors", 0.0),
        "read_your_writes_non2xx": ryw["non2xx"],
    })
    placement = "; server on CPU 0, wrk and generator on CPU 1" if args.pin else ""
    print(f"\nreal-time service: {args.store}, 1 worker, {POLICY} on user-v4, arms {ARMS}"
          f"{placement}")
    print(f"bare            {b['rps']:>8.0f} req/s   p99 at half rate {bh['p99']:.1f} ms")
    print(f"POST /events    {e['rps']:>8.0f} req/s   ratio {e['rps'] / b['rps']:.2f} "
          "(target >= 0.50)")
    print(f"recommendations, first pass after the events {f['rps']:>8.0f} req/s   ratio "
          f"{f['rps'] / b['rps']:.2f}")
    print(f"warm-up: {results['warm_up_requests']:.0f} requests, "
          f"{results['warm_up_pairs_never_served']:.0f} (user, arm) pairs never served")
    print(f"recommendations {r['rps']:>8.0f} req/s   ratio {r['rps'] / b['rps']:.2f} (target "
          f">= 0.60); p99 at half the bare rate {h['p99']:.1f} ms (target <= 20)")
    print(f"read your writes {ryw['rps']:>7.0f} req/s (event, then that user's slate)   "
          f"p99 {ryw['p99']:.1f} ms")
    print(f"load average at end: {load_average()}\n")
    for name, value in results.items():
        print(f"{name}: {value:.3f}")
    return 0


def _report_events(store: str, b: dict[str, float], e: dict[str, float]) -> int:
    """Print the bare and events figures (``--events-only``) as :func:`main` prints them."""
    print(f"\nreal-time service: {store}, 1 worker, {POLICY} on user-v4, arms {ARMS}")
    print(f"bare            {b['rps']:>8.0f} req/s   {b['cpu_us']:.1f} us of CPU a request")
    print(f"POST /events    {e['rps']:>8.0f} req/s   ratio {e['rps'] / b['rps']:.2f} "
          f"(target >= 0.50)   {e['cpu_us']:.1f} us of CPU a request")
    print(f"load average at end: {load_average()}\n")
    for name, value in {"bare_rps": b["rps"], "events_rps": e["rps"],
                        "events_ratio": e["rps"] / b["rps"], "events_p99_ms": e["p99"],
                        "events_cpu_us_per_request": e["cpu_us"],
                        "bare_cpu_us_per_request": b["cpu_us"],
                        "events_db_cpu_us_per_request": e["db_us"],  # PostgreSQL's; 0 on SQLite
                        "events_non2xx": e["non2xx"]}.items():
        print(f"{name}: {value:.3f}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
