"""Helpers shared by the serving tests: a throw-away PostgreSQL server, uvicorn processes, and
reading a table back.

PostgreSQL 15 from Debian (``/usr/lib/postgresql/15/bin``) is started once per test session on
127.0.0.1 with a free port, in a temporary folder, as the ``postgres`` user when the tests run
as root (``initdb`` refuses root); every test gets its own database. Where the binaries are
missing or the server cannot start, the PostgreSQL variants are skipped with the reason.
"""

from __future__ import annotations

import atexit
import contextlib
import json
import os
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
import uuid
from collections import Counter
from pathlib import Path
from typing import Any

import httpx2
import pytest
import sqlalchemy as sa

PG_BIN_DIRS = [Path("/usr/lib/postgresql/15/bin"), *sorted(Path("/usr/lib/postgresql").glob(
    "*/bin"), reverse=True)] if Path("/usr/lib/postgresql").exists() else []
REPO = Path(__file__).resolve().parent.parent


def read_table(url: str, table: sa.Table) -> list[dict]:
    """Every row of ``table`` in the database at ``url``, in storage order."""
    engine = sa.create_engine(url)
    try:
        with engine.connect() as conn:
            return [dict(r._mapping) for r in conn.execute(sa.select(table))]
    finally:
        engine.dispose()


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


class PostgresServer:
    """A PostgreSQL cluster in a temporary folder; ``url(db)`` for SQLAlchemy.

    ``fsync`` False (the tests' default): a commit's WAL reaches the kernel before it returns but
    is never synced to disk, so like SQLite's ``synchronous=NORMAL`` it survives a killed
    process, not a power loss. True: the server's default durability (a WAL flush per commit).
    """

    def __init__(self, *, fsync: bool = False) -> None:
        self.bin = next((d for d in PG_BIN_DIRS if (d / "initdb").is_file()), None)
        if self.bin is None:
            raise RuntimeError("no PostgreSQL binaries under /usr/lib/postgresql/*/bin "
                               "(apt-get install postgresql)")
        self.root = Path(tempfile.mkdtemp(prefix="recbandits-pg-"))
        self.data = self.root / "data"
        self.port = free_port()
        self.as_user: list[str] = []
        if os.geteuid() == 0:
            shutil.chown(self.root, user="postgres")
            self.as_user = ["runuser", "-u", "postgres", "--"]
        self._run([str(self.bin / "initdb"), "-D", str(self.data), "-U", "recbandits",
                   "--auth=trust", "-E", "UTF8", "--no-sync"])
        self._run([str(self.bin / "pg_ctl"), "-D", str(self.data), "-l",
                   str(self.root / "log"), "-w", "-t", "30", "-o",
                   f"-h 127.0.0.1 -p {self.port} -k {self.root} "
                   f"-c fsync={'on' if fsync else 'off'} "
                   f"-c max_connections=200", "start"])
        atexit.register(self.stop)

    def _run(self, cmd: list[str]) -> None:
        proc = subprocess.run([*self.as_user, *cmd], capture_output=True, text=True,
                              timeout=60, check=False)
        if proc.returncode != 0:
            log = self.root / "log"
            detail = log.read_text()[-2000:] if log.exists() else ""
            raise RuntimeError(f"{' '.join(cmd[:1])} failed: {proc.stderr.strip()} {detail}")

    def url(self, database: str = "postgres") -> str:
        return f"postgresql+psycopg://recbandits@127.0.0.1:{self.port}/{database}"

    def socket_url(self, database: str = "postgres") -> str:
        """``database``'s URL over the server's Unix-domain socket (in :attr:`root`, ``-k``)."""
        return (f"postgresql+psycopg://recbandits@/{database}?host={self.root}"
                f"&port={self.port}")

    def create_database(self) -> str:
        """A fresh database; returns its SQLAlchemy URL."""
        import psycopg

        name = f"t_{uuid.uuid4().hex[:12]}"
        with psycopg.connect(f"host=127.0.0.1 port={self.port} user=recbandits "
                             f"dbname=postgres", autocommit=True) as conn:
            conn.execute(f"CREATE DATABASE {name}")
        return self.url(name)

    def stop(self) -> None:
        if self.data.exists():
            with contextlib.suppress(Exception):
                self._run([str(self.bin / "pg_ctl"), "-D", str(self.data), "-m", "immediate",
                           "-w", "stop"])
            shutil.rmtree(self.root, ignore_errors=True)


_SERVER: dict[str, PostgresServer | str] = {}


def postgres() -> PostgresServer:
    """The session's PostgreSQL server (started on first use); skips with the reason if none."""
    if "server" not in _SERVER:
        try:
            _SERVER["server"] = PostgresServer()
        except (RuntimeError, OSError, subprocess.SubprocessError, KeyError) as exc:
            _SERVER["server"] = f"PostgreSQL could not be started here: {exc}"
    server = _SERVER["server"]
    if isinstance(server, str):
        if os.environ.get("CI"):
            pytest.fail(server)
        pytest.skip(server)
    return server


def store_url(backend: str, tmp_path: Path) -> str:
    if backend == "sqlite":
        return f"sqlite:///{tmp_path / 'store.db'}"
    return postgres().create_database()


#: How long a test waits for ``recbandits serve`` to answer: generous, as on a shared 2-core
#: machine at load ~11 a start took 80-120 s (one timed out at 120 s).
STARTUP_DEADLINE_S = 300.0


class ServiceProcess:
    """``recbandits serve`` in a subprocess on a free loopback port."""

    def __init__(self, args: list[str], env: dict[str, str], log: Path) -> None:
        self.port = free_port()
        self.base = f"http://127.0.0.1:{self.port}"
        self.log = log
        self._cmd = [sys.executable, "-m", "experiments.cli", "serve", "--port", str(self.port),
                     *args]
        self._env = {**os.environ, **env}
        self._start()

    def restart(self) -> None:
        """Start the server again, on the same port and store, after :meth:`stop`: an outage
        and a recovery as a browser on ``base`` sees them."""
        self.stop()
        self._start()

    def _start(self) -> None:
        self._log_handle = self.log.open("ab")
        self.proc = subprocess.Popen(self._cmd, env=self._env, cwd=REPO,
                                     stdout=self._log_handle, stderr=subprocess.STDOUT,
                                     start_new_session=True)
        log = self.log
        deadline = time.monotonic() + STARTUP_DEADLINE_S
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                raise RuntimeError(f"server exited: {log.read_text()[-3000:]}")
            try:
                if httpx2.get(f"{self.base}/health", timeout=1).status_code == 200:
                    return
            except httpx2.HTTPError:
                pass
            time.sleep(0.1)
        self.stop()
        raise RuntimeError(f"server did not become healthy: {log.read_text()[-3000:]}")

    def stop(self, sig: int = signal.SIGTERM) -> None:
        if self.proc.poll() is None:
            os.killpg(self.proc.pid, sig)
            try:
                self.proc.wait(30)
            except subprocess.TimeoutExpired:
                os.killpg(self.proc.pid, signal.SIGKILL)
                self.proc.wait(10)
        self._log_handle.close()


# ---------------------------------------------------------------------------- state == fold
ADMIN_TOKEN = "test-admin-token"


def fold_stats(url: str, settings: Any, upto: int | None = None) -> Any:
    """``state_dict()["stats"]`` of ``settings``' policy folded over the store's outcomes with
    ``seq <= upto`` (all of them if None), as it reads back from JSON."""
    from serving.store import open_store

    store = open_store(url, create=False)
    try:
        outcomes = store.outcomes_after(0)
        # Versions that started being served: their posterior carry-over is part of the fold.
        switches = store.switches_after(0) if store.has_versions() else []
    finally:
        store.dispose()
    n_features = next((len(o.context) for o in outcomes if o.context is not None), None)
    model = settings.policy_model(n_features)
    policy = model.replay((o for o in outcomes if upto is None or o.seq <= upto),
                          [w for w in switches if upto is None or w.seq <= upto])
    return json.loads(json.dumps(policy.state_dict()["stats"]))


def last_outcome_seq(url: str) -> int:
    """The log position of the store's last outcome or version switch (0: none): what a
    worker that folded everything reports as its ``log_seq``.
    """
    from serving.store.tables import model_versions, outcomes

    return max([int(r["seq"]) for r in read_table(url, outcomes)]
               + [int(r["served_seq"]) for r in read_table(url, model_versions)
                  if r["served_seq"] is not None], default=0)


def wait_for_workers(base: str, workers: int, deadline_s: float = 300.0) -> set[int]:
    """Wait until ``workers`` distinct worker pids have answered (the first worker's health
    does not mean the others have started); their pids.

    Raises
    ------
    AssertionError
        Fewer answered before ``deadline_s``.
    """
    pids: set[int] = set()
    deadline = time.monotonic() + deadline_s
    while len(pids) < workers:
        assert time.monotonic() < deadline, f"only workers {pids} answered in {deadline_s} s"
        with httpx2.Client(base_url=base, timeout=30,
                          headers={"Authorization": f"Bearer {ADMIN_TOKEN}"}) as client:
            response = client.get("/admin/policy-state")
        assert response.status_code == 200, response.text
        pids.add(int(response.json()["pid"]))
        time.sleep(0.02)
    return pids


def assert_workers_are_the_fold(base: str | httpx2.Client, url: str, settings: Any,
                                workers: int, deadline_s: float = 120.0) -> dict[int, int]:
    """Every worker's ``GET /admin/policy-state`` equals the fold of the log up to its log_seq.

    ``base``: the service's URL, or a client of an in-process app (a ``TestClient``).
    Polls over fresh connections (so that every worker answers in turn) until ``workers``
    distinct worker pids have answered with the log's last outcome folded in; each answer, up
    to date or not, must equal the fold up to its own ``log_seq`` exactly. Returns pid ->
    log_seq of the up-to-date answers.

    Raises
    ------
    AssertionError
        A state differing from the fold, or fewer than ``workers`` up-to-date workers seen
        before ``deadline_s``.
    """
    top = last_outcome_seq(url)
    folds: dict[int, Any] = {}
    caught_up: dict[int, int] = {}
    seen: dict[int, int] = {}  # pid -> log_seq of its latest answer
    answers = 0
    deadline = time.monotonic() + deadline_s
    while len(caught_up) < workers:
        assert time.monotonic() < deadline, (
            f"only workers {caught_up} folded the log up to seq {top} within {deadline_s} s "
            f"({answers} answers; latest log_seq per worker: {seen})")
        auth = {"Authorization": f"Bearer {ADMIN_TOKEN}"}
        if isinstance(base, str):
            with httpx2.Client(base_url=base, timeout=30, headers=auth) as client:
                response = client.get("/admin/policy-state")
        else:
            response = base.get("/admin/policy-state", headers=auth)
        assert response.status_code == 200, response.text
        body = response.json()
        answers += 1
        seq = int(body["log_seq"])
        seen[int(body["pid"])] = seq
        if seq not in folds:
            folds[seq] = fold_stats(url, settings, seq)
        assert body["state"]["stats"] == folds[seq], f"worker {body['pid']} at seq {seq}"
        if seq == top:
            caught_up[int(body["pid"])] = seq
        else:
            time.sleep(0.02)  # not refreshed yet: ask again (the deadline bounds the wait)
    return caught_up


def assert_log_invariants(url: str, settings: Any) -> str:
    """``rebuild-state`` prints ``match: yes``; per arm folded rewards <= pulls, and for a Beta
    policy successes <= pulls. Returns rebuild-state's output."""
    from serving.commands import rebuild_state
    from serving.store.tables import arm_state, outcomes

    result = rebuild_state(settings.model_copy(update={"db": url}))
    assert result.exit_code == 0 and str(result).endswith("match: yes"), str(result)
    pulls = {r["arm"]: int(r["pulls"]) for r in read_table(url, arm_state)}
    rewards = Counter(r["arm"] for r in read_table(url, outcomes))
    for arm, n in rewards.items():
        assert n <= pulls.get(arm, 0), (arm, n, pulls)
    stats = fold_stats(url, settings)
    if "successes" in stats:
        for arm, successes in zip(settings.arms, stats["successes"], strict=True):
            assert successes <= pulls.get(arm, 0), (arm, successes, pulls)
    return str(result)


def cut_off(client: Any, method: str, path: str, first: bytes,
            headers: dict[str, str] | None = None) -> int:
    """The status a TestClient ``client``'s app answers a ``method`` of ``path`` whose client
    declares 100 bytes, sends ``first`` and leaves (``headers`` added to the request's)."""
    async def call() -> int:
        messages = iter([{"type": "http.request", "body": first, "more_body": True},
                         {"type": "http.disconnect"}])
        sent: list[dict] = []

        async def receive() -> dict:
            return next(messages)

        async def send(message: dict) -> None:
            sent.append(message)

        scope = {"type": "http", "asgi": {"version": "3.0"}, "http_version": "1.1",
                 "method": method, "scheme": "http", "path": path, "raw_path": path.encode(),
                 "query_string": b"", "root_path": "",
                 "headers": [(b"host", b"testserver"), (b"content-length", b"100"),
                             *[(k.lower().encode(), v.encode())
                               for k, v in (headers or {}).items()]],
                 "client": ("127.0.0.1", 50000), "server": ("testserver", 80)}
        await client.app(scope, receive, send)
        return next(m["status"] for m in sent if m["type"] == "http.response.start")

    return int(client.portal.call(call))
