"""The service as users run it: ``recbandits serve`` under uvicorn, two workers, restarted.

Runs on SQLite and on a PostgreSQL the tests start on loopback, for Thompson Sampling and for
LinTS (whose state is matrices folded from the logged contexts, not counters). Process start-up
dominates the cost, so one test per store and policy covers both the concurrency and the restart
requirements: after concurrent feedback through two workers, every worker's learned state equals
the fold of the log up to the position it reports, and so does a restarted worker's.
"""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
import time
from concurrent.futures import ThreadPoolExecutor
from datetime import UTC, datetime
from pathlib import Path

import httpx2
import pytest
import sqlalchemy as sa
from test_serving_support import (
    ADMIN_TOKEN,
    REPO,
    STARTUP_DEADLINE_S,
    ServiceProcess,
    assert_log_invariants,
    assert_workers_are_the_fold,
    free_port,
    store_url,
    wait_for_workers,
)

from experiments.cli import main as cli_main
from serving.results import PurgeResults
from serving.settings import Settings
from serving.store import open_store
from serving.store.tables import arm_state, decisions, feedback, outcomes

pytestmark = pytest.mark.slow

ARMS = "svd,autoencoder,popularity"
ENV = {"RECBANDITS_SYNTHETIC_USERS": "120", "RECBANDITS_SYNTHETIC_ITEMS": "200",
       "RECBANDITS_SYNTHETIC_RATINGS": "3000", "RECBANDITS_REFRESH_INTERVAL_S": "0.05",
       "RECBANDITS_ADMIN_TOKEN": ADMIN_TOKEN}
POLICIES = ["ThompsonSampling", "LinTS"]


def serve_env(policy: str = "ThompsonSampling") -> dict[str, str]:
    """The workers' environment serving ``policy``."""
    return {**ENV, "RECBANDITS_POLICY": policy}


def serve_args(tmp_path: Path, url: str) -> list[str]:
    return ["--dataset", "synthetic", "--arms", ARMS, "--seed", "1",
            "--state-dir", str(tmp_path / "state"), "--db", url]


def served_settings(tmp_path: Path, url: str, policy: str) -> Settings:
    """The settings the served workers run with (for the fold and rebuild-state)."""
    return Settings(db=url, arms=ARMS.split(","), seed=1, policy=policy,
                    state_dir=tmp_path / "state")


@pytest.mark.parametrize("policy", POLICIES)
@pytest.mark.parametrize("backend", ["sqlite", "postgresql"])
def test_two_workers_lose_no_feedback_and_a_restart_keeps_state(
        backend: str, policy: str, tmp_path: Path, capsys: pytest.CaptureFixture[str],
        monkeypatch: pytest.MonkeyPatch) -> None:
    url = store_url(backend, tmp_path)
    settings = served_settings(tmp_path, url, policy)
    scratch = tmp_path / "tmp"  # where the workers' shared metric files go (TMPDIR)
    scratch.mkdir()
    server = ServiceProcess([*serve_args(tmp_path, url), "--workers", "2"],
                            {**serve_env(policy), "TMPDIR": str(scratch)},
                            tmp_path / "server.log")
    try:
        wait_for_workers(server.base, 2)  # so that both take a share of the burst
        assert [p.name[:19] for p in scratch.iterdir()] == ["recbandits-metrics-"]
        with httpx2.Client(base_url=server.base, timeout=30) as client:
            slates = [client.get("/recommendations", params={"user_id": u, "k": 4}).json()
                      for u in range(1, 61)]
        payloads = []
        for i, slate in enumerate(slates):
            for j, item in enumerate(slate["items"][:3]):
                kind = ("like", "dislike", "click")[(i + j) % 3]
                payloads.append({"user_id": slate["user_id"], "movie_id": item["movie_id"],
                                 "feedback_type": kind, "event_id": slate["event_id"]})

        def send(payload: dict) -> int:
            with httpx2.Client(base_url=server.base, timeout=30) as c:
                return c.post("/feedback", json=payload).status_code

        # Every payload twice, interleaved, from 8 concurrent clients over fresh connections
        # (so both workers take a share).
        with ThreadPoolExecutor(8) as pool:
            statuses = list(pool.map(send, payloads + payloads[::-1]))
        # Both workers, once refreshed, serve exactly the fold of the log.
        assert len(assert_workers_are_the_fold(server.base, url, settings, workers=2)) == 2
        before = httpx2.get(f"{server.base}/policy").json()
    finally:
        server.stop()
    # Removed once the workers stopped (found by attack: every `serve --workers 2` left it).
    assert list(scratch.iterdir()) == []
    assert statuses.count(201) == len(payloads) == 180
    assert statuses.count(200) == len(payloads)

    engine = sa.create_engine(url)
    with engine.connect() as conn:
        counted = conn.execute(sa.select(sa.func.count()).select_from(feedback)
                               .where(feedback.c.counted)).scalar_one()
        n_feedback = conn.execute(sa.select(sa.func.count()).select_from(feedback)).scalar_one()
        n_decisions = conn.execute(sa.select(sa.func.count())
                                   .select_from(decisions)).scalar_one()
        decided = conn.execute(sa.select(outcomes.c.event_id)).scalars().all()
        pulls = sum(r.pulls for r in conn.execute(sa.select(arm_state)))
    engine.dispose()
    # Three rewarded feedbacks on each decision, one outcome each (the earliest decides).
    assert n_feedback == 180 and n_decisions == 60 and pulls == 60
    assert len(decided) == len(set(decided)) == counted == 60
    assert sum(a["outcomes"] for a in before["arms"]) == 60
    assert before["policy"] == policy

    # Restarted (one worker this time): the same policy, and serving goes on.
    server = ServiceProcess(serve_args(tmp_path, url), serve_env(policy),
                            tmp_path / "server.log")
    try:
        assert httpx2.get(f"{server.base}/policy").json() == before
        assert_workers_are_the_fold(server.base, url, settings, workers=1)
        body = httpx2.get(f"{server.base}/recommendations", params={"user_id": 1}).json()
        assert body["policy_version"] == 1
        assert not {i["movie_id"] for i in body["items"]} & {
            p["movie_id"] for p in payloads if p["user_id"] == 1}
    finally:
        server.stop()

    assert_log_invariants(url, settings)
    capsys.readouterr()
    monkeypatch.setenv("RECBANDITS_POLICY", policy)  # the CLI reads the policy from the env
    code = cli_main(["rebuild-state", "--db", url, "--arms", ARMS,
                     "--state-dir", str(tmp_path / "state")])
    out = capsys.readouterr().out
    assert code == 0, out
    assert "match: yes" in out and f"policy: {policy}" in out


def test_a_worker_slow_to_import_is_not_killed_as_hung_and_a_death_is_a_warning(
        tmp_path: Path) -> None:
    # uvicorn kills a worker that has not answered its health ping within its
    # timeout_worker_healthcheck (5 s by default), and a worker answers only once it has
    # imported the service: on a machine at load 12 that took 8 s, so every replacement of a
    # killed worker was killed again and the service stayed on one worker, which uvicorn said
    # only at info, below the default level (found by attack). Here every worker takes 7 s
    # more to import (a sitecustomize that sleeps in multiprocessing's spawned children).
    site = tmp_path / "site"
    site.mkdir()
    (site / "sitecustomize.py").write_text(
        "import sys, time\nif '--multiprocessing-fork' in sys.argv:\n    time.sleep(7)\n")
    # A time-out far above the 7 s (a loaded CI machine slows the imports behind it many times
    # over); the setting not reaching uvicorn would leave uvicorn's 5 s, which kills them.
    # Below the 300 s this test waits: a SIGKILL that lands while uvicorn's supervisor pings
    # that worker leaves the ping waiting the whole time-out (the pipe's other end stays open
    # in the supervisor), and only then is the death seen (a CI run waited out 600 s so).
    env = {**serve_env(), "RECBANDITS_WORKER_HEALTHCHECK_TIMEOUT_S": "90",
           "PYTHONPATH": os.pathsep.join([str(site), str(REPO),
                                          os.environ.get("PYTHONPATH", "")])}
    url = store_url("sqlite", tmp_path)
    log = tmp_path / "server.log"
    server = ServiceProcess([*serve_args(tmp_path, url), "--workers", "2"], env, log)
    try:
        first = wait_for_workers(server.base, 2)
        killed = min(first)
        os.kill(killed, signal.SIGKILL)
        # Its replacement answers (it would have been killed 5 s into its 7 s import).
        deadline = time.monotonic() + 300
        while not (wait_for_workers(server.base, 1) - first):
            assert time.monotonic() < deadline, log.read_text()[-3000:]
        text = log.read_text()
        deaths = [line for line in text.splitlines() if line.endswith(" died")]
        assert deaths == [f"WARNING:  Child process [{killed}] died"], text[-3000:]
    finally:
        server.stop()


def _running(pid: int) -> bool:
    """Whether ``pid`` runs (a zombie nobody reaped yet has stopped: it holds no socket)."""
    try:
        state = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0]
    except (FileNotFoundError, ProcessLookupError):
        return False
    return state not in ("Z", "X")


def test_workers_stop_with_a_killed_supervisor_and_free_the_port(tmp_path: Path) -> None:
    # Found by attack: a SIGKILL of `recbandits serve` left its two workers serving the port
    # with no supervisor, and the next `serve` on it failed "Address already in use".
    import socket

    url = store_url("sqlite", tmp_path)
    log = tmp_path / "server.log"
    server = ServiceProcess([*serve_args(tmp_path, url), "--workers", "2"],
                            {**serve_env(), "RECBANDITS_LOG_LEVEL": "info"}, log)
    workers: set[int] = set()
    try:
        workers = wait_for_workers(server.base, 2)
        # At info each worker says which arms it loads (found by attack: no worker's own
        # record below a warning reached the log, whatever the level).
        loaded = [line for line in log.read_text().splitlines()
                  if line.startswith("INFO:") and "loading the arms of policy version 1" in line]
        assert len(loaded) == 2, log.read_text()[-3000:]
        with httpx2.Client(base_url=server.base, timeout=30) as client:
            slate = client.get("/recommendations", params={"user_id": 3, "k": 2}).json()
            liked = client.post("/feedback", json={
                "user_id": 3, "movie_id": slate["items"][0]["movie_id"],
                "feedback_type": "like", "event_id": slate["event_id"]})
        assert liked.status_code == 201, liked.text
        os.kill(server.proc.pid, signal.SIGKILL)  # the supervisor alone
        server.proc.wait(30)
        deadline = time.monotonic() + 120  # a SIGTERM's graceful stop, on a loaded machine
        while any(_running(pid) for pid in workers):
            assert time.monotonic() < deadline, (workers, log.read_text()[-3000:])
            time.sleep(0.1)
        # The port is free: bound as uvicorn binds it.
        with socket.socket() as sock:
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
            sock.bind(("127.0.0.1", server.port))
        # The acknowledged like is stored (the workers stopped as they would on SIGTERM).
        engine = sa.create_engine(url)
        with engine.connect() as conn:
            stored = conn.execute(sa.select(feedback.c.event_id)).scalars().all()
        engine.dispose()
        assert stored == [slate["event_id"]]
    finally:
        server.stop(signal.SIGKILL)
        for pid in workers:  # orphans, if the test failed: the group is gone with the parent
            if _running(pid):
                os.kill(pid, signal.SIGKILL)


def test_serve_exits_3_when_its_workers_fail_to_start_and_0_when_stopped(
        tmp_path: Path) -> None:
    """``uvicorn.run`` returns normally when its workers fail to start, so ``serve --workers
    2`` exited 0 (found by attack). A worker that cannot start is now ``serve``'s start-up
    failure, 3, as with one worker; a stop by SIGTERM stays 0."""
    url = store_url("sqlite", tmp_path)
    # One worker too (found by a README check: uvicorn raised the SIGTERM again once it had
    # shut down, so the process died by it, status 143).
    for workers in ("1", "2"):
        server = ServiceProcess([*serve_args(tmp_path, url), "--workers", workers],
                                serve_env(), tmp_path / "server.log")
        try:
            with httpx2.Client(base_url=server.base, timeout=30) as client:
                assert client.get("/recommendations", params={"user_id": 1}).status_code == 200
        finally:
            server.stop()
        assert server.proc.returncode == 0, (workers, server.log.read_text()[-2000:])
    # Workers whose app fails its start-up, under serve's supervisor run (_run_workers).
    (tmp_path / "failing_app.py").write_text(
        "async def failing(scope, receive, send):\n"
        "    await receive()\n"
        "    await send({'type': 'lifespan.startup.failed', "
        "'message': 'this app cannot start'})\n\n\n"
        "def app():\n    return failing\n")
    assert_workers_exit_3(tmp_path, "failing_app", 5, "this app cannot start")
    assert_workers_exit_3(tmp_path, "failing_app", 5, "this app cannot start", workers=1)


@pytest.mark.parametrize("workers", ["1", "2"])
def test_serve_refuses_a_taken_port_before_fitting_anything(tmp_path: Path,
                                                            workers: str) -> None:
    """A port another process listens on was found only once the arms were fitted (minutes
    on a first start), then said in uvicorn's words, exit 3."""
    taken = socket.create_server(("127.0.0.1", 0))
    port = taken.getsockname()[1]
    try:
        refused = subprocess.run(
            [sys.executable, "-m", "experiments.cli", "serve", "--port", str(port),
             "--workers", workers, *serve_args(tmp_path, store_url("sqlite", tmp_path))],
            env={**os.environ, **serve_env()}, cwd=REPO, capture_output=True, text=True,
            timeout=STARTUP_DEADLINE_S)
    finally:
        taken.close()
    assert refused.returncode == 2, refused.stderr[-3000:]
    assert refused.stderr.startswith(
        f"recbandits serve: cannot serve on 127.0.0.1:{port}: Address already in use "
        "(another process listens there); --host and --port"), refused.stderr[-3000:]
    assert "fitting" not in refused.stderr and not (tmp_path / "state").exists()


def test_a_second_serve_on_a_port_another_is_preparing_on_is_refused() -> None:
    """Found in review: the first version bound without listening, and two such sockets share
    a port (SO_REUSEADDR): a second serve passed the check while the first prepared, then
    served nothing, without a word."""
    from serving.commands import _bound_socket
    from serving.results import CommandError

    port = free_port()
    first = _bound_socket("127.0.0.1", port)  # a serve still fitting its arms
    try:
        with pytest.raises(CommandError, match=r"Address already in use \(another process "
                                               r"listens there\)") as refused:
            _bound_socket("127.0.0.1", port)
        assert refused.value.exit_code == 2
        # A connection made meanwhile waits for the workers, rather than being refused.
        socket.create_connection(("127.0.0.1", port), timeout=30).close()
    finally:
        first.close()
    with pytest.raises(CommandError, match=r"not an address of this machine"):
        _bound_socket("192.0.2.1", port)  # TEST-NET-1: nobody's address


@pytest.mark.parametrize("workers", ["1", "2"])
def test_a_sigterm_while_serve_fits_its_arms_is_a_stop(tmp_path: Path, workers: str) -> None:
    """Found in review: a SIGTERM before uvicorn ran (a first start fits the arms for seconds
    to minutes) killed serve (143). It is a stop, 0; the next start fits again."""
    env = {**os.environ, **serve_env(), "RECBANDITS_SYNTHETIC_USERS": "2000",
           "RECBANDITS_SYNTHETIC_ITEMS": "1000", "RECBANDITS_SYNTHETIC_RATINGS": "300000"}
    url = store_url("sqlite", tmp_path)
    cmd = [sys.executable, "-m", "experiments.cli", "serve", "--port", str(free_port()),
           "--workers", workers, *serve_args(tmp_path, url)]
    proc = subprocess.Popen(cmd, env=env, cwd=REPO, stdout=subprocess.PIPE,
                            stderr=subprocess.STDOUT, text=True, start_new_session=True)
    try:
        assert proc.stdout is not None
        seen = []
        for line in proc.stdout:  # the catalogue is being made, then the arms fitted
            seen.append(line)
            if "loading the synthetic data" in line:
                break
        proc.send_signal(signal.SIGTERM)
        out, _ = proc.communicate(timeout=120)
    finally:
        if proc.poll() is None:
            os.killpg(proc.pid, signal.SIGKILL)
            proc.wait(10)
    assert proc.returncode == 0, "".join(seen) + out[-3000:]
    assert "recbandits: serving" not in out  # stopped before it served


def test_serve_exits_at_once_when_a_worker_dies_with_a_ping_unanswered(tmp_path: Path) -> None:
    """uvicorn's supervisor waits up to the health-check time-out for a worker's answer to its
    ping, and a worker that died just after a ping never answered: ``serve --workers 2`` took
    ``worker_healthcheck_timeout_s`` (60 s) to exit 3 (3 runs of 7 in an attack). Here each
    worker swallows a ping before its start-up fails, so the supervisor alone would wait the
    whole 600-s time-out set below; serve's watcher answers for the dead worker."""
    (tmp_path / "mute_app.py").write_text(
        "import asyncio, threading\n"
        "import uvicorn.supervisors.multiprocess as supervisor\n"
        "pinged = threading.Event()\n\n\n"
        "def swallow(self):  # takes a ping and never answers it\n"
        "    self.child_conn.recv()\n"
        "    pinged.set()\n\n\n"
        "supervisor.Process.pong = swallow\n\n\n"
        "async def failing(scope, receive, send):\n"
        "    await receive()\n"
        "    await asyncio.to_thread(pinged.wait, 120)\n"
        "    await send({'type': 'lifespan.startup.failed', "
        "'message': 'died with a ping unanswered'})\n\n\n"
        "def app():\n    return failing\n")
    assert_workers_exit_3(tmp_path, "mute_app", 600, "died with a ping unanswered")


def assert_workers_exit_3(folder: Path, module: str, healthcheck_s: int, said: str,
                          workers: int = 2) -> None:
    """Run ``workers`` workers of ``module`` (in ``folder``) as serve runs them on its bound
    socket (``_run_workers`` under uvicorn's supervisor, health-check time-out
    ``healthcheck_s``; one: ``_run_worker``): exit 3 and ``said`` on stderr (and uvicorn's
    supervisor's line), within the start-up deadline."""
    run = "_run_workers" if workers > 1 else "_run_worker"
    script = (f"import sys, uvicorn\nfrom serving.commands import _bound_socket, {run}\n"
              f"sys.exit({run}(uvicorn.Config('{module}:app', factory=True, "
              f"workers={workers}, timeout_worker_healthcheck={healthcheck_s}), "
              f"_bound_socket('127.0.0.1', {free_port()})))\n")
    failed = subprocess.run(
        [sys.executable, "-c", script], cwd=REPO, capture_output=True, text=True,
        env={**os.environ, "PYTHONPATH": os.pathsep.join([str(folder), str(REPO)])},
        timeout=STARTUP_DEADLINE_S)
    assert failed.returncode == 3, failed.stderr[-3000:]
    assert said in failed.stderr
    if workers > 1:
        assert "failed to start, stopping the parent process" in failed.stderr


def test_serve_restarted_without_arms_serves_the_live_ones_in_its_workers(
        tmp_path: Path) -> None:
    """Found in review: the parent resolved the live arms, but exported the unnamed default
    list to the workers' environment, where it named their arms: a restart without --arms
    served the default list as a new version all the same, and the banner named it. Both
    workers now serve the live arms; no version is published."""
    url = store_url("sqlite", tmp_path)
    args = serve_args(tmp_path, url)
    for attempt in range(2):  # the first start names the arms, the restart does not
        argv = args if attempt == 0 else [a for i, a in enumerate(args)
                                          if "--arms" not in args[max(i - 1, 0):i + 1]]
        server = ServiceProcess([*argv, "--workers", "2"], serve_env(),
                                tmp_path / f"server{attempt}.log")
        try:
            with httpx2.Client(base_url=server.base, timeout=30) as client:
                served = {client.get("/recommendations", params={"user_id": u}).json()["arm"]
                          for u in range(1, 41)}
                policy = client.get("/policy").json()
        finally:
            server.stop()
        assert served <= set(ARMS.split(",")), served
        assert sorted(a["arm"] for a in policy["arms"]) == sorted(ARMS.split(","))
        assert policy["policy_version"] == 1
    log = (tmp_path / "server1.log").read_text()
    assert f"serving {ARMS.replace(',', ', ')} (policy version 1)" in log, log[-3000:]
    assert "as a new version" not in log


def test_serve_refuses_another_policy_than_a_purged_logs_at_once(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """After a purge the log folds further only under the snapshot's policy and arms: serve
    with others started workers that each failed with a traceback (exit 3; found by attack).
    Refused in one line, exit 2, before anything is fitted; the snapshot's own settings
    serve."""
    from serving import commands

    url = store_url("sqlite", tmp_path)
    server = ServiceProcess([*serve_args(tmp_path, url)], serve_env(), tmp_path / "server.log")
    try:
        with httpx2.Client(base_url=server.base, timeout=30) as client:
            for user in range(1, 6):
                slate = client.get("/recommendations", params={"user_id": user, "k": 2}).json()
                assert client.post("/feedback", json={
                    "user_id": user, "movie_id": slate["items"][0]["movie_id"],
                    "feedback_type": "like", "event_id": slate["event_id"]}).status_code == 201
    finally:
        server.stop()
    served = Settings(db=url, arms=ARMS.split(","), seed=1, state_dir=tmp_path / "state",
                      dataset="synthetic", synthetic_users=120, synthetic_items=200,
                      synthetic_ratings=3000)
    store = open_store(url, create=False)
    try:  # every reward window closed, as the workers' sweep would find them days later
        store.settle_expired(time.time() + 30 * 86_400.0, 0.0, served.rule_book())
    finally:
        store.dispose()
    cut = time.time() + 31 * 86_400.0
    result = commands.purge(served, datetime.fromtimestamp(cut, UTC).isoformat(),
                            now=cut + served.retention_s + 1.0)
    assert isinstance(result, PurgeResults) and result.deleted["decisions"] == 5, str(result)
    for other in (["--policy", "EpsilonGreedy"], ["--arms", "svd,popularity"]):
        args = [*serve_args(tmp_path, url), "--port", str(free_port()), "--workers", "2"]
        if other[0] == "--arms":
            args[args.index("--arms") + 1] = other[1]
        else:
            args += other
        refused = subprocess.run([sys.executable, "-m", "experiments.cli", "serve", *args],
                                 env={**os.environ, **serve_env()}, cwd=REPO,
                                 capture_output=True, text=True, timeout=STARTUP_DEADLINE_S)
        assert refused.returncode == 2, refused.stderr[-3000:]
        # One refusal (after the progress line of the data, read before the store).
        lines = [line for line in refused.stderr.splitlines()
                 if line.startswith("recbandits serve:")]
        assert len(lines) == 1 and "Traceback" not in refused.stderr, refused.stderr[-3000:]
        assert "the fold snapshot's policy has" in lines[0]
        assert "nothing was fitted or served" in lines[0]
