"""Feedback-to-policy latency under load: how soon does the service act on a like?

For 1 and 2 uvicorn workers (SQLite by default, PostgreSQL with ``--stores``), while wrk sends a
paced background load of ``GET /recommendations`` (``--load-rps`` over 16 connections), a probe
repeats ``--probes`` times:

1. ``GET /recommendations`` for a random user, then ``POST /feedback`` (like and dislike in
   turn) on the first movie of that slate; ``t0`` is when the POST returns (201, committed);
2. **policy**: poll ``GET /policy`` until the arm's successes/failures include it (the figure
   users ask for: time from the POST returning to the next ``/policy`` reflecting it);
3. **serving**: poll ``GET /recommendations`` (fresh connections, so any worker may answer)
   until a slate is drawn with the new selection probabilities — its ``propensity`` equals the
   ``selection_probability`` that ``/policy`` reports for that arm at the new counts. ``first``
   is the first such slate; ``all`` the first of 4 consecutive ones (with 2 workers, most likely
   both have refreshed). Each worker rebuilds its policy at most once per
   ``refresh_interval_s`` (default 0.2 s), so ``all`` is bounded by about one interval plus a
   rebuild; ``serving_all_over_interval`` (p99 / interval) is that bound's figure.

A plain ``GET /policy`` round trip, timed in the same loop, is the peer: policy latency / that is
the lag beyond one read. With ~150 probes, p99 is close to the largest sample; read it as such.

Usage::

    RECBANDITS_DATA=/work/shared/data .venv/bin/python bench/feedback_latency.py
        [--probes 150] [--seconds 60] [--workers 1 2] [--stores sqlite postgresql]
        [--load-rps 200] [--dataset movielens|synthetic]

Loopback only; every configuration is bounded by ``--probes`` and ``--seconds``. Ends with
``name: value`` lines.
"""

from __future__ import annotations

import argparse
import random
import re
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import httpx2
import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))
from serving_load import LUA_RECS, Server, prepare_state, start_postgres, wrk_missing

BACKGROUND_CONNECTIONS = 16
CONSECUTIVE = 4
PROBE_TIMEOUT_S = 5.0
POLL_PAUSE_S = 0.002


def pacing(rate: float, connections: int) -> str:
    """A wrk ``delay()`` giving ``rate`` requests/s over ``connections`` connections."""
    per_connection_ms = 1000.0 * connections / rate
    # Jitter so the connections do not fire in lock-step.
    return f"delay = function() return {per_connection_ms:.3f} * (0.5 + math.random()) end\n"


def start_background(base: str, rps: float, seconds: float, n_users: int,
                     tmp: Path) -> subprocess.Popen[str]:
    """wrk pacing ``GET /recommendations`` at ``rps`` for ``seconds`` (runs alongside)."""
    script = tmp / f"background-{random.randrange(1 << 30)}.lua"
    script.write_text(LUA_RECS % {"seed": 7, "n_users": n_users}
                      + pacing(rps, BACKGROUND_CONNECTIONS))
    return subprocess.Popen(
        ["wrk", "-t1", f"-c{BACKGROUND_CONNECTIONS}", f"-d{seconds:g}s", "--latency", "-s",
         str(script), "--timeout", "5s", base], stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
        text=True)


def background_result(proc: subprocess.Popen[str], seconds: float) -> dict[str, float]:
    out, _ = proc.communicate(timeout=seconds + 60)
    rps = re.search(r"Requests/sec:\s+([\d.]+)", out)
    p99 = re.search(r"^\s+99%\s+([\d.]+)(us|ms|s)\s*$", out, re.M)
    non2xx = re.search(r"Non-2xx or 3xx responses:\s+(\d+)", out)
    return {
        "rps": float(rps.group(1)) if rps else float("nan"),
        "p99_ms": (float(p99.group(1)) * {"us": 1e-3, "ms": 1.0, "s": 1e3}[p99.group(2)]
                   if p99 else float("nan")),
        "non2xx": float(non2xx.group(1)) if non2xx else 0.0,
    }


def arm_row(policy: dict, arm: str) -> dict:
    return next(a for a in policy["arms"] if a["arm"] == arm)


def probe_loop(base: str, probes: int, deadline: float, n_users: int, seed: int,
               jitter_s: float) -> dict[str, list[float]]:
    """Run the probes; returns lists of seconds per figure (and the count of time-outs).

    Each probe starts after a random pause of up to ``jitter_s`` (the refresh interval): a probe
    begins right after the previous one saw a refresh, so without it every feedback would
    arrive at the same phase of the refresh cycle.
    """
    rng = random.Random(seed)
    figures: dict[str, list[float]] = {"post": [], "policy": [], "policy_get": [],
                                       "serving_first": [], "serving_all": [], "timeouts": []}
    # No keep-alive for polls: each request may be answered by any worker.
    fresh = httpx2.Limits(max_keepalive_connections=0)
    with httpx2.Client(base_url=base, timeout=10) as client, \
            httpx2.Client(base_url=base, timeout=10, limits=fresh) as poller:
        for i in range(probes):
            if time.monotonic() > deadline:
                break
            time.sleep(rng.uniform(0.0, jitter_s))
            user = rng.randint(1, n_users)
            slate = client.get("/recommendations", params={"user_id": user, "k": 10}).json()
            if slate["cold_start"]:
                continue
            arm = slate["arm"]
            kind = "like" if i % 2 == 0 else "dislike"
            column = "successes" if kind == "like" else "failures"
            expected = arm_row(client.get("/policy").json(), arm)[column] + 1
            start = time.perf_counter()
            response = client.post("/feedback", json={
                "user_id": user, "movie_id": slate["items"][0]["movie_id"],
                "feedback_type": kind, "event_id": slate["event_id"]})
            t0 = time.perf_counter()
            if response.status_code != 201 or not response.json()["policy_updated"]:
                raise RuntimeError(f"feedback was not counted: {response.text}")
            figures["post"].append(t0 - start)

            first_get = None
            while True:
                before = time.perf_counter()
                policy = poller.get("/policy").json()
                if first_get is None:
                    first_get = time.perf_counter() - before
                if arm_row(policy, arm)[column] >= expected:
                    figures["policy"].append(time.perf_counter() - t0)
                    break
                if time.perf_counter() - t0 > PROBE_TIMEOUT_S:
                    figures["timeouts"].append(1.0)
                    break
                time.sleep(POLL_PAUSE_S)
            figures["policy_get"].append(first_get)
            # The selection probabilities at the new counts (pulls do not change them).
            target = {a["arm"]: a["selection_probability"] for a in policy["arms"]}

            first = streak_start = None
            streak = 0
            while time.perf_counter() - t0 <= PROBE_TIMEOUT_S:
                other = rng.randint(1, n_users)
                body = poller.get("/recommendations", params={"user_id": other, "k": 1}).json()
                now = time.perf_counter() - t0
                if body["cold_start"]:
                    continue
                if abs(body["propensity"] - target[body["arm"]]) <= 1e-12:
                    first = now if first is None else first
                    streak_start = now if streak == 0 else streak_start
                    streak += 1
                    if streak == CONSECUTIVE:
                        break
                else:
                    streak = 0
                time.sleep(POLL_PAUSE_S)
            if streak == CONSECUTIVE:
                figures["serving_first"].append(first)
                figures["serving_all"].append(streak_start)
            else:
                figures["timeouts"].append(1.0)
    return figures


def ms(values: list[float], q: float) -> float:
    return float(np.percentile(np.asarray(values) * 1e3, q)) if values else float("nan")


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--probes", type=int, default=150, help="feedback probes per config")
    parser.add_argument("--seconds", type=float, default=60.0,
                        help="time limit of each configuration's probe loop")
    parser.add_argument("--workers", type=int, nargs="+", default=[1, 2])
    parser.add_argument("--stores", nargs="+", default=["sqlite"],
                        choices=["sqlite", "postgresql"])
    parser.add_argument("--load-rps", type=float, default=200.0,
                        help="background GET /recommendations per second (wrk, paced)")
    parser.add_argument("--dataset", default="movielens", choices=["movielens", "synthetic"])
    parser.add_argument("--refresh-interval", type=float, default=None,
                        help="RECBANDITS_REFRESH_INTERVAL_S (default: the service's 0.2 s)")
    args = parser.parse_args(argv)
    for name in ("probes", "seconds", "load_rps"):
        if not getattr(args, name) > 0:
            parser.error(f"--{name.replace('_', '-')} must be > 0, got {getattr(args, name)}")
    if wrk_missing():
        return 2
    tmp = Path(tempfile.mkdtemp(prefix="recbandits-latency-"))
    state = tmp / "state"
    prepare_state(state, args.dataset)
    n_users = 943 if args.dataset == "movielens" else 200
    refresh = args.refresh_interval if args.refresh_interval is not None else 0.2
    pg = None
    results: dict[str, float] = {"refresh_interval_s": refresh, "load_rps_target": args.load_rps}
    rows = []
    try:
        for store in args.stores:
            if store == "postgresql" and pg is None:
                create_db, pg = start_postgres(tmp)
            for workers in args.workers:
                tag = f"{store}_w{workers}"
                db = f"sqlite:///{tmp / f'{tag}.db'}" if store == "sqlite" else create_db()
                env = {"RECBANDITS_STATE_DIR": str(state), "RECBANDITS_DATASET": args.dataset,
                       "RECBANDITS_DB": db, "RECBANDITS_SEED": "0",
                       "RECBANDITS_REFRESH_INTERVAL_S": str(refresh)}
                if workers > 1:
                    env["PROMETHEUS_MULTIPROC_DIR"] = tempfile.mkdtemp(dir=tmp)
                service = Server("serving.app:app_from_env", workers, env, tmp / f"{tag}.log",
                                 "/health")
                try:
                    load_seconds = args.seconds + 5
                    load = start_background(service.base, args.load_rps, load_seconds, n_users,
                                            tmp)
                    time.sleep(1.0)  # the background load is running before the first probe
                    figures = probe_loop(service.base, args.probes,
                                         time.monotonic() + args.seconds, n_users, workers,
                                         refresh)
                    if load.poll() is None:  # probes done early: wrk reports on SIGINT
                        load.send_signal(signal.SIGINT)
                    background = background_result(load, load_seconds)
                finally:
                    service.stop()
                rows.append((tag, figures, background))
                results[f"{tag}_probes"] = len(figures["policy"])
                results[f"{tag}_timeouts"] = len(figures["timeouts"])
                for figure in ("post", "policy_get", "policy", "serving_first", "serving_all"):
                    results[f"{tag}_{figure}_p50_ms"] = ms(figures[figure], 50)
                    results[f"{tag}_{figure}_p99_ms"] = ms(figures[figure], 99)
                results[f"{tag}_policy_over_get_p50"] = (results[f"{tag}_policy_p50_ms"]
                                                         / results[f"{tag}_policy_get_p50_ms"])
                results[f"{tag}_serving_all_over_interval"] = (
                    results[f"{tag}_serving_all_p99_ms"] / (1e3 * refresh))
                results[f"{tag}_background_rps"] = background["rps"]
                results[f"{tag}_background_p99_ms"] = background["p99_ms"]
                results[f"{tag}_background_non2xx"] = background["non2xx"]
    finally:
        if pg is not None:
            pg.stop()
        shutil.rmtree(tmp, ignore_errors=True)

    print(f"\nfeedback -> policy latency, ms (p50 / p99); background {args.load_rps:g} "
          f"recommendations/s; refresh interval {refresh:g} s")
    print(f"{'config':<14}{'probes':>7}{'POST':>15}{'GET /policy':>15}{'-> /policy':>15}"
          f"{'-> serving 1st':>17}{'-> all workers':>17}{'bg rps':>9}{'bg p99':>9}")
    for tag, f, bg in rows:
        cells = "".join(f"{ms(f[k], 50):>7.1f} /{ms(f[k], 99):>6.1f}".rjust(w) for k, w in
                        (("post", 15), ("policy_get", 15), ("policy", 15),
                         ("serving_first", 17), ("serving_all", 17)))
        print(f"{tag:<14}{len(f['policy']):>7}{cells}{bg['rps']:>9.0f}{bg['p99_ms']:>8.1f}m")
    print()
    for name, value in results.items():
        print(f"{name}: {value:.3f}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
