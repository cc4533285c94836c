"""Load test of the service on loopback, beside a bare FastAPI endpoint in the same run.

For 1 and 2 uvicorn workers and for SQLite and PostgreSQL, wrk (Debian's ``wrk``) measures:

- the bare endpoint (``GET /bare``: a FastAPI route returning a small JSON dict, same uvicorn
  settings): throughput at saturation and its p50/p99;
- ``GET /recommendations`` (policy + arm + decision committed): throughput at saturation, and
  p50/p99 at a fixed rate of half the bare endpoint's throughput. wrk is closed-loop (a slow
  answer delays the next request, so its latencies hide queueing) and Debian has no wrk2, so the
  fixed-rate run uses :func:`open_loop`: requests are *scheduled* at ``rate`` per second on
  ``--open-loop-connections`` keep-alive connections (default: ``--connections``, request i on
  connection i modulo their number, as wrk2's ``-c``; 0: a new one whenever all are busy) and
  each latency is measured from its scheduled time, wrk2's correction for coordinated
  omission. The bare endpoint is run
  through the same generator at the same rate: its p99 is the floor of this measurement on this
  machine (the generator's own jitter and the other processes on the cores);
- ``POST /feedback`` on distinct (event, movie, type) triples from decisions made just before
  (attribution + feedback row + arm counter + rating, committed before the response).

Targets (issue 6): recommendations >= 60% of bare throughput with p99 <= 20 ms at half the bare
throughput; feedback >= 40%. The machine is shared and noisy: the ratios within one run are the
figures, and every configuration is measured right after its own bare reference (and, for
PostgreSQL, on a server of its own, started for it).

CPU placement (``--pin``, 1 worker only): the machine has 2 cores, and unpinned, wrk and the
server (and everyone else's jobs) migrate between them. With ``--pin`` the server (bare and
service alike) runs on CPU 0 and wrk and the fixed-rate generator on CPU 1. Either way bare
and service get the same placement, and the fitted arms are shared by every configuration.

PostgreSQL is reached over TCP on 127.0.0.1 (the figures so far, and the README's ``--db``
example), or with ``--pg-socket`` over its Unix-domain socket, as a deployment with the database
on the same host may connect. Those configurations are named ``postgresql_unix_w<n>``, and the
legend says which was used. The socket's saving is within the noise of a recommendation's CPU
(``bench/pg_socket_cost.py``, in process, medians of 10 alternations, load 1.2-1.6: 32
concurrent, Thompson Sampling 78.1 / 34.4 us of worker / PostgreSQL CPU both ways, LinTS 105.7
/ 35.9 over TCP against 99.7 / 32.8; one at a time, 6 alternations, load 1.3-2.0, Thompson
Sampling 648 / 290 against 653 / 287): hence not the default.

Durability: the PostgreSQL servers run with ``fsync=off`` by default (as the tests' do): a
commit's WAL reaches the kernel before the service answers, so an acknowledged write survives a
killed server process but not a power loss, the durability of the SQLite store's
``synchronous=NORMAL``. ``--pg-fsync`` runs them with ``fsync=on`` (a WAL flush per group
commit, PostgreSQL's default); the legend says which.

CPU per request is printed beside the rates (steadier on a shared machine): the uvicorn
processes', and on PostgreSQL the database server's (its backends included), which shares the
same two cores.

Both servers run under the uvicorn options of ``recbandits serve``
(:func:`serving.api.protocol.uvicorn_options`: header cap, time-outs, concurrency limit);
``--stock-server`` runs both on uvicorn's defaults instead, to measure what the limits cost.

Usage::

    RECBANDITS_DATA=/work/shared/data .venv/bin/python bench/serving_load.py [--seconds 8]
        [--workers 1 2] [--stores sqlite postgresql] [--connections 32] [--pin]
        [--open-loop-connections N] [--stock-server] [--pg-socket] [--pg-fsync]

Ends with ``name: value`` lines. Bounded: every wrk run lasts ``--seconds``; loopback only.
"""

from __future__ import annotations

import argparse
import asyncio
import collections
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
from collections.abc import Callable, Coroutine
from pathlib import Path
from typing import Any

import httpx2
import sqlalchemy as sa

REPO = Path(__file__).resolve().parent.parent
#: Connections of the fixed-rate generator (wrk2's ``-c``): as many as wrk's closed-loop runs.
OPEN_LOOP_CONNECTIONS = 32
HERE = Path(__file__).resolve().parent


def bare_app():  # uvicorn --factory target
    """A FastAPI app with one JSON endpoint: the framework's own floor."""
    from fastapi import FastAPI

    app = FastAPI()

    @app.get("/bare")
    async def bare() -> dict[str, object]:
        return {"ok": True, "user_id": 196, "items": [1, 2, 3]}

    return app


def run_server(target: str, port: int, workers: int, stock: bool) -> None:
    """uvicorn as ``recbandits serve`` runs it: the same options (``serving.api.protocol``:
    the header cap and time-outs, the concurrency limit), for the bare app and the service
    alike; ``stock``: uvicorn's defaults instead, to measure what the limits cost."""
    import uvicorn

    # Log level info for uvicorn's "Application startup complete." of every worker.
    options: dict[str, object] = {"log_level": "info"}
    if not stock:
        from serving.api.protocol import uvicorn_options
        from serving.settings import Settings

        options = uvicorn_options(Settings(log_level="info"))
    uvicorn.run(target, factory=True, host="127.0.0.1", port=port, workers=workers,
                access_log=False, app_dir=str(HERE), **options)


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def tree_cpu_s(pid: int) -> float:
    """CPU seconds (user + system) of process ``pid`` and its descendants, those that ended
    included (a process's waited-for children are in its cutime/cstime: the PostgreSQL
    backends of connections closed during a run)."""
    tick = os.sysconf("SC_CLK_TCK")
    pids = [pid]
    total = 0.0
    while pids:
        pid = pids.pop()
        try:
            fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
            children = Path(f"/proc/{pid}/task/{pid}/children").read_text().split()
        except OSError:  # gone
            continue
        total += sum(int(v) for v in fields[11:15]) / tick  # utime, stime, cutime, cstime
        pids.extend(int(c) for c in children)
    return total


def db_cpu_s(pg: object | None) -> float:
    """CPU seconds used so far by the PostgreSQL server ``pg`` (0 for SQLite: in process)."""
    if pg is None:
        return 0.0
    return tree_cpu_s(int((pg.data / "postmaster.pid").read_text().split()[0]))


class Server:
    """uvicorn in a subprocess with the settings every configuration shares."""

    def __init__(self, target: str, workers: int, env: dict[str, str], log: Path,
                 health: str, cpus: str | None = None, stock: bool = False) -> None:
        self.port = free_port()
        self.base = f"http://127.0.0.1:{self.port}"
        self.log = log.open("ab")
        log_start = self.log.tell()
        pin = [] if cpus is None else ["taskset", "-c", cpus]
        cmd = [*pin, sys.executable, str(Path(__file__).resolve()), "--serve",
               json.dumps({"target": target, "port": self.port, "workers": workers,
                           "stock": stock})]
        self.proc = subprocess.Popen(cmd, env={**os.environ, **env}, cwd=REPO,
                                     stdout=self.log, stderr=subprocess.STDOUT,
                                     start_new_session=True)
        deadline = time.monotonic() + 180
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                raise RuntimeError(f"{target} exited; see {log}")
            try:
                healthy = httpx2.get(self.base + health, timeout=2).status_code == 200
            except httpx2.HTTPError:
                healthy = False
            # One worker answering is not enough: a load generator connecting while another
            # is still starting up hands all its connections to the first (measured: 1.00 and
            # 0.03 cores used by the two workers for a whole run).
            if healthy and self._started(log, log_start) >= workers:
                return
            time.sleep(0.2)
        self.stop()
        raise RuntimeError(f"{target} did not start; see {log}")

    @staticmethod
    def _started(log: Path, offset: int) -> int:
        with log.open("rb") as f:
            f.seek(offset)
            return f.read().count(b"Application startup complete.")

    def cpu_s(self) -> float:
        """CPU seconds (user + system) used so far by the server and its worker processes.

        Requests per CPU second is the server's cost on this shared machine with the other
        jobs mostly taken out (its throughput swings with their load; this barely does)."""
        return tree_cpu_s(self.proc.pid)

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
"""

LUA_BARE = """
request = function() return wrk.format("GET", "/bare") end
"""


class _OpenLoop:
    """The fixed-rate generator: one timer callback per request, protocol callbacks for the
    answers; no task, coroutine or future per request, so that the generator takes as little
    as it can of the two cores it shares with the server (measured at 5,500 requests/s: 47 us
    of CPU a request, against 60 us with a task per request).

    ``connections`` > 0 (the default of :func:`open_loop`): wrk2's definition. That many
    keep-alive connections are opened before the run and request ``i`` goes out on connection
    ``i % connections`` as soon as it is due and that connection's previous answer is in
    (head-of-line blocking, as wrk2's per-connection schedules); a request that waits for its
    connection has that wait in its latency, which runs from its scheduled time. So a server
    stall counts against every request scheduled during it, but never makes the client open
    more connections than it was given. ``connections`` = 0: the previous generator, which
    sends on an idle connection (the most recently idle) or opens a new one whenever every
    connection is busy: behind a stall it opens one connection per queued request, which the
    server pays for (accepting, a protocol object and timers per connection; past the worker's
    ``max_concurrency`` a 503 that closes the connection, so the next request opens another):
    measured on the service (SQLite, Thompson Sampling, load 3-5), 3,730 connections for 5,000
    requests at 1,000 requests/s and 385-578 us of server CPU a request, against 154-184 us under
    wrk's 32 connections. That is a load no client pool makes (httpx and aiohttp cap theirs at
    100) and it turned a short stall into seconds of queue.

    Responses must carry Content-Length (uvicorn's JSON responses do); latency runs from a
    request's scheduled time to the last byte of its answer.
    """

    def __init__(self, loop: asyncio.AbstractEventLoop, port: int, connections: int = 0
                 ) -> None:
        self.loop = loop
        self.port = port
        self.idle: list[_HttpConnection] = []
        self.lanes = [_Lane(self) for _ in range(connections)]
        self.sent = 0
        self.latencies: list[float] = []
        self.statuses: dict[int, int] = {}
        self.errors = 0
        self.in_flight = 0
        self.opening: set[asyncio.Task[None]] = set()

    def send(self, raw: bytes, scheduled: float) -> None:
        self.in_flight += 1
        if self.lanes:
            self.lanes[self.sent % len(self.lanes)].submit(raw, scheduled)
        elif self.idle:
            self.idle.pop().send(raw, scheduled)
        else:
            self._track(self._open(raw, scheduled))
        self.sent += 1

    def _track(self, coro: Coroutine[Any, Any, None]) -> None:
        task = self.loop.create_task(coro)
        self.opening.add(task)
        task.add_done_callback(self.opening.discard)

    async def _open(self, raw: bytes, scheduled: float) -> None:
        try:
            _, conn = await self.loop.create_connection(lambda: _HttpConnection(self),
                                                        "127.0.0.1", self.port)
        except OSError:
            self.failed()
            return
        conn.send(raw, scheduled)

    def answered(self, conn: _HttpConnection, status: int, scheduled: float) -> None:
        self.in_flight -= 1
        # loop.time() is the loop's cached clock, in whole milliseconds (uvloop); the same
        # monotonic clock read now gives the answer's time to the microsecond.
        self.latencies.append(time.monotonic() - scheduled)
        self.statuses[status] = self.statuses.get(status, 0) + 1
        if conn.lane is not None:
            conn.lane.done()
        else:
            self.idle.append(conn)

    def failed(self) -> None:
        self.in_flight -= 1
        self.errors += 1

    def close(self) -> None:
        """Close every connection (at the end of a run)."""
        for conn in [*self.idle, *(lane.conn for lane in self.lanes if lane.conn)]:
            if conn.transport is not None:
                conn.transport.close()


class _Lane:
    """One of the generator's ``connections`` (wrk2's mode): its requests in order, one in
    flight; it (re)connects when it has a request and no connection (a 503 closes one)."""

    def __init__(self, generator: _OpenLoop) -> None:
        self.generator = generator
        self.waiting: collections.deque[tuple[bytes, float]] = collections.deque()
        self.conn: _HttpConnection | None = None
        self.busy = False
        self.connecting = False

    async def connect(self) -> bool:
        """Open this lane's connection; False (and nothing opened) if that failed."""
        self.connecting = True
        try:
            _, conn = await self.generator.loop.create_connection(
                lambda: _HttpConnection(self.generator, self), "127.0.0.1",
                self.generator.port)
        except OSError:
            return False
        finally:
            self.connecting = False
        self.conn = conn
        return True

    async def _reconnect(self) -> None:
        if not await self.connect() and self.waiting:
            self.waiting.popleft()  # that request could not be sent: an error, as a drop
            self.generator.failed()
        self._pump()

    def submit(self, raw: bytes, scheduled: float) -> None:
        self.waiting.append((raw, scheduled))
        self._pump()

    def _pump(self) -> None:
        if self.busy or not self.waiting:
            return
        if self.conn is None:
            if not self.connecting:
                self.connecting = True
                self.generator._track(self._reconnect())
            return
        raw, scheduled = self.waiting.popleft()
        self.busy = True
        self.conn.send(raw, scheduled)

    def done(self) -> None:
        self.busy = False
        self._pump()

    def lost(self, conn: _HttpConnection) -> None:
        if conn is self.conn:
            self.conn = None
            self.busy = False
            self._pump()


class _HttpConnection(asyncio.Protocol):
    """One keep-alive HTTP/1.1 connection of :class:`_OpenLoop`, one request in flight
    (``lane``: the :class:`_Lane` it serves in wrk2's mode, else None)."""

    def __init__(self, generator: _OpenLoop, lane: _Lane | None = None) -> None:
        self.generator = generator
        self.lane = lane
        self.transport: asyncio.Transport | None = None
        self.buffer = bytearray()
        self.need: int | None = None
        self.status = 0
        self.scheduled: float | None = None

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = transport  # type: ignore[assignment]

    def send(self, raw: bytes, scheduled: float) -> None:
        self.scheduled = scheduled
        self.transport.write(raw)

    def data_received(self, data: bytes) -> None:
        self.buffer += data
        if self.need is None:
            end = self.buffer.find(b"\r\n\r\n")
            if end < 0:
                return
            head = bytes(self.buffer[:end]).lower()
            self.status = int(head[9:12])
            length = re.search(rb"content-length:\s*(\d+)", head)
            self.need = end + 4 + int(length.group(1))
        if len(self.buffer) >= self.need:
            del self.buffer[:self.need]
            self.need = None
            scheduled, self.scheduled = self.scheduled, None
            if scheduled is not None:
                self.generator.answered(self, self.status, scheduled)

    def connection_lost(self, exc: Exception | None) -> None:
        if self.scheduled is not None:
            self.scheduled = None
            self.generator.failed()
        if self in self.generator.idle:
            self.generator.idle.remove(self)
        if self.lane is not None:
            self.lane.lost(self)


async def _open_loop(port: int, rate: float, seconds: float, n_users: int,
                     seed: int, bare: bool = False, connections: int = OPEN_LOOP_CONNECTIONS
                     ) -> dict[str, float]:
    loop = asyncio.get_running_loop()
    rng = random.Random(seed)
    generator = _OpenLoop(loop, port, connections)
    # wrk2 connects first: the run's first requests do not pay for the handshakes.
    connected = await asyncio.gather(*(lane.connect() for lane in generator.lanes))
    if not all(connected):
        generator.close()
        raise OSError(f"could not open {connections} connections to 127.0.0.1:{port}")
    n = int(rate * seconds)
    host = f"Host: 127.0.0.1:{port}\r\n\r\n".encode()
    targets = [b"GET /bare HTTP/1.1\r\n" + host if bare else
               f"GET /recommendations?user_id={rng.randint(1, n_users)}&k=10 HTTP/1.1\r\n"
               .encode() + host for _ in range(n)]
    start = loop.time() + 0.05
    # Timers are set 20 ms ahead, a few at a time: 40,000 set at once would take longer than
    # the lead and start the run with a burst.
    i = 0
    while i < n:
        horizon = loop.time() + 0.02
        while i < n and start + i / rate < horizon:
            scheduled = start + i / rate
            loop.call_at(scheduled, generator.send, targets[i], scheduled)
            i += 1
        await asyncio.sleep(0.01)
    await asyncio.sleep(max(0.0, start + n / rate - loop.time()))
    sent_s = loop.time() - start
    deadline = loop.time() + 30
    while (generator.in_flight or generator.opening) and loop.time() < deadline:
        await asyncio.sleep(0.01)
    generator.close()
    ordered = sorted(generator.latencies)

    def pct(q: float) -> float:
        return 1e3 * ordered[min(len(ordered) - 1, int(q * len(ordered)))] if ordered else 0.0

    statuses = generator.statuses
    return {"rps": len(ordered) / max(sent_s, 1e-9), "target_rps": rate, "p50": pct(0.50),
            "p99": pct(0.99), "max": pct(1.0), "requests": float(len(ordered)),
            "non2xx": float(sum(v for k, v in statuses.items() if not 200 <= k < 300)),
            "errors": float(generator.errors + generator.in_flight)}


def open_loop(base: str, rate: float, seconds: float, n_users: int, seed: int,
              cpus: str | None = None, bare: bool = False,
              connections: int = OPEN_LOOP_CONNECTIONS) -> dict[str, float]:
    """GET /recommendations (``bare``: GET /bare) at a fixed ``rate`` (requests scheduled, not
    waited for); p50/p99 in ms from each request's scheduled time. ``connections``: wrk2's
    fixed set of connections (0: a new one whenever all are busy; see :class:`_OpenLoop`).
    Runs in a child process (pinned to ``cpus``)."""
    port = base.rsplit(":", 1)[1]
    pin = [] if cpus is None else ["taskset", "-c", cpus]
    cmd = [*pin, sys.executable, str(Path(__file__).resolve()), "--open-loop",
           json.dumps({"port": int(port), "rate": rate, "seconds": seconds, "n_users": n_users,
                       "seed": seed, "bare": bare, "connections": connections})]
    out = subprocess.run(cmd, capture_output=True, text=True, timeout=seconds + 90, check=True)
    return json.loads(out.stdout.strip().splitlines()[-1])


def wrk_missing() -> bool:
    """Whether ``wrk`` is absent (said on stderr, with how to install it): a bench's exit 2."""
    if shutil.which("wrk") is None:
        print("wrk not found: apt-get install wrk", file=sys.stderr)
        return True
    return False


def wrk(base: str, script: str, seconds: float, connections: int, tmp: Path,
        cpus: str | None = None) -> dict[str, float]:
    """Run wrk with one thread; returns requests/s, p50, p99 (ms) and error counts."""
    path = tmp / f"script-{random.randrange(1 << 30)}.lua"
    path.write_text(script)
    pin = [] if cpus is None else ["taskset", "-c", cpus]
    out = subprocess.run(
        [*pin, "wrk", "-t1", f"-c{connections}", f"-d{seconds:g}s", "--latency", "-s",
               str(path), "--timeout", "5s", base],
        capture_output=True, text=True, timeout=seconds + 60, check=True).stdout
    rps = float(re.search(r"Requests/sec:\s+([\d.]+)", out).group(1))
    requests = float(re.search(r"(\d+) requests in", out).group(1))
    def pct(p: str) -> float:
        match = re.search(rf"^\s+{p}%\s+([\d.]+)(us|ms|s)\s*$", out, re.M)
        value, unit = float(match.group(1)), match.group(2)
        return value * {"us": 1e-3, "ms": 1.0, "s": 1e3}[unit]
    non2xx = re.search(r"Non-2xx or 3xx responses:\s+(\d+)", out)
    errors = re.search(r"Socket errors:.*", out)
    return {"rps": rps, "requests": requests, "p50": pct("50"), "p99": pct("99"),
            "non2xx": float(non2xx.group(1)) if non2xx else 0.0,
            "socket_errors": errors.group(0) if errors else ""}


async def make_decisions(base: str, n: int, n_users: int, seed: int) -> list[dict]:
    """``n`` decisions made through the API (for feedback to refer to)."""
    rng = random.Random(seed)
    out: list[dict] = []
    async with httpx2.AsyncClient(base_url=base, timeout=30) as client:
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


def start_postgres(tmp: Path, unix_socket: bool = False, fsync: bool = False
                   ) -> tuple[Callable[[], str], object]:
    """A fresh PostgreSQL server and a function making a database on it (its URL: over TCP
    to 127.0.0.1, or over the server's Unix-domain socket with ``unix_socket``); ``fsync``:
    the server syncs its WAL at each commit (default off, see the module doc)."""
    sys.path.insert(0, str(REPO / "tests"))
    from test_serving_support import PostgresServer

    server = PostgresServer(fsync=fsync)
    if not unix_socket:
        return server.create_database, server
    return lambda: server.socket_url(sa.engine.make_url(server.create_database()).database
                                     or ""), server


def prepare_state(state: Path, dataset: str, settings: dict[str, str] | None = None) -> None:
    """Fit and save the arms once (the default ones, or those of ``settings``:
    ``RECBANDITS_*`` variables), so every configuration only loads them."""
    env = {**os.environ, "RECBANDITS_STATE_DIR": str(state), "RECBANDITS_DATASET": dataset,
           **(settings or {})}
    code = ("from serving.commands import prepare; from serving.settings import Settings; "
            "prepare(Settings()).store.dispose()")
    subprocess.run([sys.executable, "-c", code], env=env, cwd=REPO, check=True, timeout=900)


def seed_store(state: Path, db: str, arms: list[str] | None = None) -> None:
    """Point a fresh store at the arms :func:`prepare_state` fitted (no refit per config);
    ``arms``: their names (default: the service's default arms)."""
    from serving.settings import DEFAULT_ARMS
    from serving.store import open_store

    source = open_store(f"sqlite:///{state / 'recbandits.db'}")
    target = open_store(db)
    try:
        meta = source.policy_meta()
        target.create_schema(arms if arms is not None else DEFAULT_ARMS)
        target.init_policy_meta(meta.arms_dir)
    finally:
        source.dispose()
        target.dispose()


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--seconds", type=float, default=8.0)
    parser.add_argument("--workers", type=int, nargs="+", default=[1, 2])
    parser.add_argument("--stores", nargs="+", default=["sqlite", "postgresql"],
                        choices=["sqlite", "postgresql"])
    parser.add_argument("--connections", type=int, default=32)
    parser.add_argument("--dataset", default="movielens", choices=["movielens", "synthetic"])
    parser.add_argument("--policies", nargs="+", default=["ThompsonSampling", "LinTS"],
                        help="served policies; the first is measured in every configuration, "
                             "the others with one worker (LinTS: the 100-value user-v4 context "
                             "on MovieLens)")
    parser.add_argument("--decisions", type=int, default=1500,
                        help="decisions made before the feedback run (x10 feedback bodies)")
    parser.add_argument("--pin", action="store_true",
                        help="1 worker: server on CPU 0, load generators on CPU 1")
    parser.add_argument("--open-loop-connections", type=int, default=None, metavar="N",
                        help="connections of the fixed-rate run (wrk2's -c; default: "
                             "--connections; 0: a new one whenever all are busy)")
    parser.add_argument("--stock-server", action="store_true",
                        help="uvicorn's default options instead of serve's limits (to measure "
                             "their cost)")
    parser.add_argument("--pg-socket", action="store_true",
                        help="PostgreSQL over its Unix-domain socket, as on one host (default: "
                             "TCP to 127.0.0.1); configurations named postgresql_unix_w<n>")
    parser.add_argument("--pg-fsync", action="store_true",
                        help="PostgreSQL with fsync=on (default off: a commit reaches the kernel "
                             "but is not synced, as SQLite's synchronous=NORMAL)")
    parser.add_argument("--open-loop", help=argparse.SUPPRESS)  # the child of open_loop()
    parser.add_argument("--serve", help=argparse.SUPPRESS)  # the child of Server
    args = parser.parse_args(argv)
    if args.serve:
        run_server(**json.loads(args.serve))
        return 0
    if args.open_loop:
        try:
            import uvloop
        except ImportError:  # pragma: no cover - uvicorn[standard] brings it
            uvloop = None
        spec = json.loads(args.open_loop)
        runner = uvloop.run if uvloop is not None else asyncio.run
        print(json.dumps(runner(_open_loop(**spec))))
        return 0
    open_connections = (args.connections if args.open_loop_connections is None
                        else args.open_loop_connections)
    if wrk_missing():
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
            for workers in args.workers:
                if store == "postgresql":
                    # A fresh server for each configuration, so that the previous one's
                    # leftovers (autovacuum of its rows, writing out its dirty buffers) do not
                    # share the cores with this one's measurement (2-worker p99 at half rate:
                    # 28-37 ms after the 1-worker configuration on the same server, 10-11 ms on
                    # a fresh one).
                    if pg is not None:
                        pg.stop()
                    create_db, pg = start_postgres(tmp, args.pg_socket, args.pg_fsync)
                unix = store == "postgresql" and args.pg_socket
                tag = f"{store}{'_unix' if unix else ''}_w{workers}"
                server_cpus, load_cpus = ("0", "1") if args.pin and workers == 1 else (None,
                                                                                       None)
                bare = Server("serving_load:bare_app", workers, {}, tmp / "bare.log", "/bare",
                              server_cpus, args.stock_server)
                try:
                    cpu = bare.cpu_s()
                    b = wrk(bare.base, LUA_BARE, args.seconds,
                            args.connections, tmp, load_cpus)
                    b["cpu_us"] = 1e6 * (bare.cpu_s() - cpu) / b["requests"]
                    # The floor of the fixed-rate measurement: the same generator, same rate.
                    bh = open_loop(bare.base, b["rps"] / 2, args.seconds, n_users, 2,
                                   load_cpus, bare=True, connections=open_connections)
                finally:
                    bare.stop()
                for policy in args.policies:
                    if policy != args.policies[0] and workers > 1:
                        continue
                    ptag = tag if policy == args.policies[0] else f"{tag}_{policy}"
                    if store == "postgresql" and policy != args.policies[0]:
                        pg.stop()  # a fresh server per measured configuration (see above)
                        create_db, pg = start_postgres(tmp, args.pg_socket, args.pg_fsync)
                    db = (f"sqlite:///{tmp / f'{ptag}.db'}" if store == "sqlite" else create_db())
                    env = {"RECBANDITS_STATE_DIR": str(state), "RECBANDITS_DATASET": args.dataset,
                           "RECBANDITS_DB": db, "RECBANDITS_SEED": "0",
                           "RECBANDITS_POLICY": policy}
                    if workers > 1:
                        env["PROMETHEUS_MULTIPROC_DIR"] = tempfile.mkdtemp(dir=tmp)
                    seed_store(state, db)
                    db_server = pg if store == "postgresql" else None
                    service = Server("serving.app:app_from_env", workers, env,
                                     tmp / f"{ptag}.log", "/health", server_cpus, args.stock_server)
                    try:
                        recs_script = LUA_RECS % {"seed": 1, "n_users": n_users}
                        cpu, db_cpu = service.cpu_s(), db_cpu_s(db_server)
                        r = wrk(service.base, recs_script, args.seconds, args.connections, tmp,
                                load_cpus)
                        r["cpu_us"] = 1e6 * (service.cpu_s() - cpu) / r["requests"]
                        r["db_us"] = 1e6 * (db_cpu_s(db_server) - db_cpu) / r["requests"]
                        h = open_loop(service.base, b["rps"] / 2, args.seconds, n_users, 2,
                                      load_cpus, connections=open_connections)
                        slates = asyncio.run(make_decisions(service.base, args.decisions, n_users,
                                                            workers))
                        path = tmp / f"{ptag}-feedback.jsonl"
                        path.write_text("\n".join(feedback_lines(slates, workers)) + "\n")
                        cpu, db_cpu = service.cpu_s(), db_cpu_s(db_server)
                        f = wrk(service.base, LUA_FEEDBACK % {"path": path},
                                args.seconds, args.connections, tmp, load_cpus)
                        f["cpu_us"] = 1e6 * (service.cpu_s() - cpu) / f["requests"]
                        f["db_us"] = 1e6 * (db_cpu_s(db_server) - db_cpu) / f["requests"]
                    finally:
                        service.stop()
                    rows.append((ptag, b, bh, r, h, f))
                    results[f"{ptag}_bare_rps"] = b["rps"]
                    results[f"{ptag}_bare_p99_ms"] = b["p99"]
                    results[f"{ptag}_bare_cpu_us_per_request"] = b["cpu_us"]
                    results[f"{ptag}_recommendations_cpu_us_per_request"] = r["cpu_us"]
                    results[f"{ptag}_recommendations_cpu_ratio"] = b["cpu_us"] / r["cpu_us"]
                    results[f"{ptag}_feedback_cpu_us_per_request"] = f["cpu_us"]
                    results[f"{ptag}_feedback_cpu_ratio"] = b["cpu_us"] / f["cpu_us"]
                    results[f"{ptag}_recommendations_db_cpu_us_per_request"] = r["db_us"]
                    results[f"{ptag}_feedback_db_cpu_us_per_request"] = f["db_us"]
                    results[f"{ptag}_bare_p99_ms_at_half_bare"] = bh["p99"]
                    results[f"{ptag}_recommendations_rps"] = r["rps"]
                    results[f"{ptag}_recommendations_ratio"] = r["rps"] / b["rps"]
                    results[f"{ptag}_recommendations_p50_ms_at_half_bare"] = h["p50"]
                    results[f"{ptag}_recommendations_p99_ms_at_half_bare"] = h["p99"]
                    results[f"{ptag}_recommendations_target_rps_at_half_bare"] = h["target_rps"]
                    results[f"{ptag}_recommendations_achieved_rps_at_half_bare"] = h["rps"]
                    results[f"{ptag}_recommendations_errors_at_half_bare"] = h["errors"]
                    results[f"{ptag}_feedback_rps"] = f["rps"]
                    results[f"{ptag}_feedback_ratio"] = f["rps"] / b["rps"]
                    results[f"{ptag}_feedback_p99_ms"] = f["p99"]
                    results[f"{ptag}_non2xx"] = r["non2xx"] + h["non2xx"] + f["non2xx"]
    finally:
        if pg is not None:
            pg.stop()
        shutil.rmtree(tmp, ignore_errors=True)

    print(f"\n{'config':<14}{'bare rps':>10}{'bare p99':>10}{'recs rps':>10}{'ratio':>7}"
          f"{'half rps':>10}{'p50@half':>10}{'p99@half':>10}{'bare p99@half':>15}{'fb rps':>9}"
          f"{'ratio':>7}{'fb p99':>9}")
    for tag, b, bh, r, h, f in rows:
        print(f"{tag:<14}{b['rps']:>10.0f}{b['p99']:>9.1f}m{r['rps']:>10.0f}"
              f"{r['rps'] / b['rps']:>7.2f}{h['rps']:>10.0f}{h['p50']:>9.1f}m{h['p99']:>9.1f}m"
              f"{bh['p99']:>14.1f}m{f['rps']:>9.0f}{f['rps'] / b['rps']:>7.2f}{f['p99']:>8.1f}m")
    print(f"\n{'config':<14}{'bare us':>9}{'recs us':>9}{'ratio':>7}{'fb us':>9}{'ratio':>7}"
          f"{'recs db':>9}{'fb db':>9}   (server CPU per request under wrk; ratio: bare / "
          "route; db: the PostgreSQL server's, beside it)")
    for tag, b, _bh, r, _h, f in rows:
        print(f"{tag:<14}{b['cpu_us']:>9.0f}{r['cpu_us']:>9.0f}{b['cpu_us'] / r['cpu_us']:>7.2f}"
              f"{f['cpu_us']:>9.0f}{b['cpu_us'] / f['cpu_us']:>7.2f}{r['db_us']:>9.0f}"
              f"{f['db_us']:>9.0f}")
    print("(half rps: achieved rate of the fixed-rate run, target = bare rps / 2; its p50/p99 "
          "are from scheduled send times, on "
          + (f"{open_connections} connections as wrk2 -c{open_connections}" if open_connections
             else "a new connection whenever all are busy")
          + "; bare p99@half: the bare endpoint under the same fixed-rate generator, the floor "
          "of this measurement on this machine)")
    if "postgresql" in args.stores:
        print("PostgreSQL reached over "
              + ("its Unix-domain socket (--pg-socket)" if args.pg_socket
                 else "TCP, 127.0.0.1 (without --pg-socket)")
              + (", fsync=on (--pg-fsync)" if args.pg_fsync
                 else ", fsync=off: commits reach the kernel, not the disk (without --pg-fsync)"))
        results["postgresql_unix_socket"] = float(args.pg_socket)
        results["postgresql_fsync"] = float(args.pg_fsync)
    print()
    for name, value in results.items():
        print(f"{name}: {value:.3f}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
