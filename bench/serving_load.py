"""Load test of the service on loopback, beside a bare FastAPI endpoint in the same run.

For 1 and 2 uvicorn workers and for SQLite and PostgreSQL, wrk (Debian's ``wrk``) measures:

- the bare endpoint (``GET /bare``: a FastAPI route returning a small JSON dict, same uvicorn
  settings): throughput at saturation and its p50/p99;
- ``GET /recommendations`` (policy + arm + decision committed): throughput at saturation, and
  p50/p99 at a fixed rate of half the bare endpoint's throughput (wrk paced by ``delay()``);
- ``POST /feedback`` on distinct (event, movie, type) triples from decisions made just before
  (attribution + feedback row + arm counter + rating, committed before the response).

Targets (issue 6): recommendations >= 60% of bare throughput with p99 <= 20 ms at half the bare
throughput; feedback >= 40%. The machine is shared and noisy: the ratios within one run are the
figures, and every configuration is measured right after its own bare reference.

Usage::

    RECBANDITS_DATA=/work/shared/data .venv/bin/python bench/serving_load.py [--seconds 8]
        [--workers 1 2] [--stores sqlite postgresql] [--connections 32]

Ends with ``name: value`` lines. Bounded: every wrk run lasts ``--seconds``; loopback only.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import random
import re
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import httpx

REPO = Path(__file__).resolve().parent.parent
HERE = Path(__file__).resolve().parent


def bare_app():  # uvicorn --factory target
    """A FastAPI app with one JSON endpoint: the framework's own floor."""
    from fastapi import FastAPI

    app = FastAPI()

    @app.get("/bare")
    async def bare() -> dict[str, object]:
        return {"ok": True, "user_id": 196, "items": [1, 2, 3]}

    return app


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


class Server:
    """uvicorn in a subprocess with the settings every configuration shares."""

    def __init__(self, target: str, workers: int, env: dict[str, str], log: Path,
                 health: str) -> None:
        self.port = free_port()
        self.base = f"http://127.0.0.1:{self.port}"
        self.log = log.open("ab")
        cmd = [sys.executable, "-m", "uvicorn", target, "--factory", "--host", "127.0.0.1",
               "--port", str(self.port), "--workers", str(workers), "--log-level", "warning",
               "--no-access-log", "--app-dir", str(HERE)]
        self.proc = subprocess.Popen(cmd, env={**os.environ, **env}, cwd=REPO,
                                     stdout=self.log, stderr=subprocess.STDOUT,
                                     start_new_session=True)
        deadline = time.monotonic() + 180
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                raise RuntimeError(f"{target} exited; see {log}")
            try:
                if httpx.get(self.base + health, timeout=2).status_code == 200:
                    return
            except httpx.HTTPError:
                pass
            time.sleep(0.2)
        self.stop()
        raise RuntimeError(f"{target} did not start; see {log}")

    def stop(self) -> None:
        if self.proc.poll() is None:
            os.killpg(self.proc.pid, signal.SIGTERM)
            try:
                self.proc.wait(30)
            except subprocess.TimeoutExpired:
                os.killpg(self.proc.pid, signal.SIGKILL)
                self.proc.wait(10)
        self.log.close()


LUA_RECS = """
math.randomseed(%(seed)d)
request = function()
  return wrk.format("GET", "/recommendations?user_id=" .. math.random(1, %(n_users)d) .. "&k=10")
end
%(pacing)s
"""

LUA_FEEDBACK = """
local lines = {}
for line in io.lines("%(path)s") do lines[#lines + 1] = line end
local i = 0
local thread_offset = 0
setup = function(thread) end
request = function()
  i = i + 1
  local body = lines[((i - 1) %% #lines) + 1]
  return wrk.format("POST", "/feedback", {["Content-Type"] = "application/json"}, body)
end
%(pacing)s
"""

LUA_BARE = """
request = function() return wrk.format("GET", "/bare") end
%(pacing)s
"""


def pacing(rate: float | None, connections: int) -> str:
    """A wrk ``delay()`` giving ``rate`` requests/s over ``connections`` connections."""
    if rate is None:
        return ""
    per_connection_ms = 1000.0 * connections / rate
    # Jitter so the connections do not fire in lock-step.
    return f"delay = function() return {per_connection_ms:.3f} * (0.5 + math.random()) end\n"


def wrk(base: str, script: str, seconds: float, connections: int, tmp: Path) -> dict[str, float]:
    """Run wrk with one thread; returns requests/s, p50, p99 (ms) and error counts."""
    path = tmp / f"script-{random.randrange(1 << 30)}.lua"
    path.write_text(script)
    out = subprocess.run(
        ["wrk", "-t1", f"-c{connections}", f"-d{seconds:g}s", "--latency", "-s", str(path),
         "--timeout", "5s", base], capture_output=True, text=True, timeout=seconds + 60,
        check=True).stdout
    rps = float(re.search(r"Requests/sec:\s+([\d.]+)", out).group(1))
    def pct(p: str) -> float:
        match = re.search(rf"^\s+{p}%\s+([\d.]+)(us|ms|s)\s*$", out, re.M)
        value, unit = float(match.group(1)), match.group(2)
        return value * {"us": 1e-3, "ms": 1.0, "s": 1e3}[unit]
    non2xx = re.search(r"Non-2xx or 3xx responses:\s+(\d+)", out)
    errors = re.search(r"Socket errors:.*", out)
    return {"rps": rps, "p50": pct("50"), "p99": pct("99"),
            "non2xx": float(non2xx.group(1)) if non2xx else 0.0,
            "socket_errors": errors.group(0) if errors else ""}


async def make_decisions(base: str, n: int, n_users: int, seed: int) -> list[dict]:
    """``n`` decisions made through the API (for feedback to refer to)."""
    rng = random.Random(seed)
    out: list[dict] = []
    async with httpx.AsyncClient(base_url=base, timeout=30) as client:
        sem = asyncio.Semaphore(16)

        async def one() -> None:
            async with sem:
                r = await client.get("/recommendations",
                                     params={"user_id": rng.randint(1, n_users), "k": 10})
                out.append(r.json())

        await asyncio.gather(*(one() for _ in range(n)))
    return out


def feedback_lines(slates: list[dict], seed: int) -> list[str]:
    rng = random.Random(seed)
    lines = []
    for slate in slates:
        for item in slate["items"]:
            kind = rng.choice(["like", "dislike", "click"])
            lines.append(json.dumps({"user_id": slate["user_id"], "movie_id": item["movie_id"],
                                     "feedback_type": kind, "event_id": slate["event_id"]}))
    rng.shuffle(lines)
    return lines


def start_postgres(tmp: Path) -> tuple[str, object]:
    sys.path.insert(0, str(REPO / "tests"))
    from test_serving_support import PostgresServer

    server = PostgresServer()
    return server.create_database, server


def prepare_state(state: Path, dataset: str) -> None:
    """Fit and save the default arms once, so every configuration only loads them."""
    env = {**os.environ, "RECBANDITS_STATE_DIR": str(state), "RECBANDITS_DATASET": dataset}
    code = ("from serving.commands import prepare; from serving.settings import Settings; "
            "prepare(Settings()).store.dispose()")
    subprocess.run([sys.executable, "-c", code], env=env, cwd=REPO, check=True, timeout=900)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--seconds", type=float, default=8.0)
    parser.add_argument("--workers", type=int, nargs="+", default=[1, 2])
    parser.add_argument("--stores", nargs="+", default=["sqlite", "postgresql"],
                        choices=["sqlite", "postgresql"])
    parser.add_argument("--connections", type=int, default=32)
    parser.add_argument("--dataset", default="movielens", choices=["movielens", "synthetic"])
    parser.add_argument("--decisions", type=int, default=1500,
                        help="decisions made before the feedback run (x10 feedback bodies)")
    args = parser.parse_args(argv)
    if shutil.which("wrk") is None:
        print("wrk not found: apt-get install wrk", file=sys.stderr)
        return 2
    tmp = Path(tempfile.mkdtemp(prefix="recbandits-bench-"))
    state = tmp / "state"
    prepare_state(state, args.dataset)
    n_users = 943 if args.dataset == "movielens" else 200
    pg = None
    results: dict[str, float] = {}
    rows = []
    try:
        for store in args.stores:
            if store == "postgresql" and pg is None:
                create_db, pg = start_postgres(tmp)
            for workers in args.workers:
                tag = f"{store}_w{workers}"
                bare = Server("serving_load:bare_app", workers, {}, tmp / "bare.log", "/bare")
                try:
                    b = wrk(bare.base, LUA_BARE % {"pacing": ""}, args.seconds,
                            args.connections, tmp)
                finally:
                    bare.stop()
                db = (f"sqlite:///{tmp / f'{tag}.db'}" if store == "sqlite" else create_db())
                env = {"RECBANDITS_STATE_DIR": str(state), "RECBANDITS_DATASET": args.dataset,
                       "RECBANDITS_DB": db, "RECBANDITS_SEED": "0"}
                if workers > 1:
                    env["PROMETHEUS_MULTIPROC_DIR"] = tempfile.mkdtemp(dir=tmp)
                service = Server("serving.app:app_from_env", workers, env,
                                 tmp / f"{tag}.log", "/health")
                try:
                    recs_script = LUA_RECS % {"seed": 1, "n_users": n_users, "pacing": ""}
                    r = wrk(service.base, recs_script, args.seconds, args.connections, tmp)
                    half = LUA_RECS % {"seed": 2, "n_users": n_users,
                                       "pacing": pacing(b["rps"] / 2, args.connections)}
                    h = wrk(service.base, half, args.seconds, args.connections, tmp)
                    slates = asyncio.run(make_decisions(service.base, args.decisions, n_users,
                                                        workers))
                    path = tmp / f"{tag}-feedback.jsonl"
                    path.write_text("\n".join(feedback_lines(slates, workers)) + "\n")
                    f = wrk(service.base, LUA_FEEDBACK % {"path": path, "pacing": ""},
                            args.seconds, args.connections, tmp)
                finally:
                    service.stop()
                rows.append((tag, b, r, h, f))
                results[f"{tag}_bare_rps"] = b["rps"]
                results[f"{tag}_bare_p99_ms"] = b["p99"]
                results[f"{tag}_recommendations_rps"] = r["rps"]
                results[f"{tag}_recommendations_ratio"] = r["rps"] / b["rps"]
                results[f"{tag}_recommendations_p50_ms_at_half_bare"] = h["p50"]
                results[f"{tag}_recommendations_p99_ms_at_half_bare"] = h["p99"]
                results[f"{tag}_recommendations_achieved_rps_at_half_bare"] = h["rps"]
                results[f"{tag}_feedback_rps"] = f["rps"]
                results[f"{tag}_feedback_ratio"] = f["rps"] / b["rps"]
                results[f"{tag}_feedback_p99_ms"] = f["p99"]
                results[f"{tag}_non2xx"] = r["non2xx"] + h["non2xx"] + f["non2xx"]
    finally:
        if pg is not None:
            pg.stop()
        shutil.rmtree(tmp, ignore_errors=True)

    print(f"\n{'config':<14}{'bare rps':>10}{'bare p99':>10}{'recs rps':>10}{'ratio':>7}"
          f"{'p50@half':>10}{'p99@half':>10}{'fb rps':>9}{'ratio':>7}{'fb p99':>9}")
    for tag, b, r, h, f in rows:
        print(f"{tag:<14}{b['rps']:>10.0f}{b['p99']:>9.1f}m{r['rps']:>10.0f}"
              f"{r['rps'] / b['rps']:>7.2f}{h['p50']:>9.1f}m{h['p99']:>9.1f}m{f['rps']:>9.0f}"
              f"{f['rps'] / b['rps']:>7.2f}{f['p99']:>8.1f}m")
    print()
    for name, value in results.items():
        print(f"{name}: {value:.3f}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
