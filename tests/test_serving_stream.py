"""The live push, ``GET /users/{id}/stream`` (serving.stream, serving.api.routes.stream).

The app runs under uvicorn in a thread (a stream never ends, so the test client, which reads a
response to its end, cannot hold one); the cross-worker test runs two ``recbandits serve``
processes on one store. Waits have generous deadlines that only guard against a hang: the
assertions are on what arrived, never on how fast (the heartbeat test bounds how early).
"""

from __future__ import annotations

import queue
import signal
import socket
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx2
import orjson
import pytest
import uvicorn
from test_serving_support import ServiceProcess, free_port, read_table, store_url

from arms.data.dataset import Dataset
from serving.api.protocol import uvicorn_options
from serving.app import create_app
from serving.settings import Settings
from serving.store.tables import decisions, feedback
from serving.stream import Stream, StreamHub

ARMS = ["svd", "popularity"]
WAIT_S = 20.0  # a hang guard, never a latency assert


class LiveServer:
    """``create_app`` under uvicorn (with the service's protocol options) in a thread."""

    def __init__(self, settings: Settings, catalog: Dataset, arms: dict) -> None:
        self.app = create_app(settings, catalog=catalog, arms=arms)
        self.port = free_port()
        self.base = f"http://127.0.0.1:{self.port}"
        config = uvicorn.Config(self.app, host="127.0.0.1", port=self.port,
                                timeout_graceful_shutdown=1, **uvicorn_options(settings))
        self.server = uvicorn.Server(config)
        self.thread = threading.Thread(target=self.server.run, daemon=True)
        self.thread.start()
        deadline = time.monotonic() + 60
        while not self.server.started:
            if time.monotonic() > deadline or not self.thread.is_alive():
                raise RuntimeError("the test server did not start")
            time.sleep(0.02)

    @property
    def hub(self) -> StreamHub:
        return self.app.state.stream_hub

    def stop(self) -> None:
        self.server.should_exit = True
        self.thread.join(30)


class EventReader:
    """An SSE client in a thread: parsed events (and heartbeats) arrive on ``events``."""

    def __init__(self, base: str, user_id: int, *, k: int = 5,
                 last_event_id: int | None = None) -> None:
        self.events: queue.Queue[dict[str, Any]] = queue.Queue()
        headers = {} if last_event_id is None else {"Last-Event-ID": str(last_event_id)}
        self.client = httpx2.Client(base_url=base, timeout=httpx2.Timeout(30, read=None))
        self.response = self.client.send(
            self.client.build_request("GET", f"/users/{user_id}/stream", params={"k": k},
                                      headers=headers), stream=True)
        self.status = self.response.status_code
        self.thread = threading.Thread(target=self._read, daemon=True)
        if self.status == 200:
            self.thread.start()

    def _read(self) -> None:
        event: dict[str, Any] = {}
        try:
            for line in self.response.iter_lines():
                if line.startswith(":"):
                    self.events.put({"event": "heartbeat", "at": time.monotonic()})
                elif not line:
                    if event:
                        self.events.put(event)
                    event = {}
                else:
                    name, _, value = line.partition(": ")
                    event[name] = orjson.loads(value) if name == "data" else value
        except (httpx2.HTTPError, httpx2.StreamError):  # the test closed the stream: done
            pass

    def next(self, kind: str = "update") -> dict[str, Any]:
        """The next event of type ``kind`` (heartbeats skipped unless asked for)."""
        deadline = time.monotonic() + WAIT_S
        while True:
            event = self.events.get(timeout=max(0.0, deadline - time.monotonic()))
            if event.get("event") == kind:
                return event

    def close(self) -> None:
        self.response.close()
        self.client.close()


def settings_for(tmp_path: Path, **extra: Any) -> Settings:
    return Settings(state_dir=tmp_path / "state", arms=ARMS, seed=3, refresh_interval_s=0.05,
                    **{"stream_heartbeat_s": 0.2, **extra})


@pytest.fixture
def live(tmp_path: Path, serving_catalog: Dataset, serving_arms: dict) -> Iterator[LiveServer]:
    server = LiveServer(settings_for(tmp_path, stream_max=3, stream_queue=4), serving_catalog,
                        serving_arms)
    yield server
    server.stop()


def like(base: str, user: int, position: int = 0, kind: str = "like") -> dict[str, Any]:
    """Like the movie at ``position`` of a fresh slate of ``user``; the stored row."""
    with httpx2.Client(base_url=base, timeout=30) as client:
        slate = client.get("/recommendations", params={"user_id": user, "k": 5}).json()
        response = client.post("/feedback", json={
            "user_id": user, "feedback_type": kind, "event_id": slate["event_id"],
            "movie_id": slate["items"][position]["movie_id"]})
    assert response.status_code == 201, response.text
    return response.json()


def seq_of(url: str, row: dict[str, Any]) -> int:
    """The log position of a stored feedback row."""
    return next(int(r["seq"]) for r in read_table(url, feedback) if r["id"] == row["id"])


def wait_until(condition: Any) -> None:
    deadline = time.monotonic() + WAIT_S
    while not condition():
        assert time.monotonic() < deadline, "condition not reached"
        time.sleep(0.02)


def test_a_feedback_pushes_the_logged_slate_and_the_policy(live: LiveServer) -> None:
    url = live.app.state.settings.resolved_db_url()
    reader = EventReader(live.base, 7)
    try:
        ready = reader.next("ready")
        assert ready["data"]["user_id"] == 7
        start = int(ready["id"])
        liked = like(live.base, 7)
        update = reader.next()
        # Nothing was served since the push: its panel counts its own slate as GET /policy
        # does (found by attack: "Shown" was one short after every pushed update).
        pulls = {a["arm"]: a["pulls"] for a in httpx2.get(f"{live.base}/policy").json()["arms"]}
        assert {a["arm"]: a["pulls"] for a in update["data"]["policy"]["arms"]} == pulls
        assert sum(pulls.values()) == len(read_table(url, decisions)) == 2
        seq = seq_of(url, liked)
        assert seq > start and int(update["id"]) == seq
        data = update["data"]
        assert [(f["seq"], f["movie_id"], f["feedback_type"]) for f in data["feedback"]] == [
            (seq, liked["movie_id"], "like")]
        slate = data["recommendations"]
        # The pushed slate is a logged decision of this user, shaped as GET /recommendations.
        logged = {r["event_id"]: r for r in read_table(url, decisions)}
        assert logged[slate["event_id"]]["user_id"] == 7
        assert set(slate) == set(httpx2.get(f"{live.base}/recommendations",
                                           params={"user_id": 7}).json())
        assert len(slate["items"]) == 5
        assert liked["movie_id"] not in {i["movie_id"] for i in slate["items"]}
        # The policy panel as GET /policy answers it, with the like folded in.
        policy = data["policy"]
        assert policy.keys() == httpx2.get(f"{live.base}/policy").json().keys()
        assert sum(a["outcomes"] for a in policy["arms"]) == 1
        # Another user's feedback pushes nothing to this stream.
        like(live.base, 8)
        mine = like(live.base, 7, kind="dislike")
        assert int(reader.next()["id"]) == seq_of(url, mine)
    finally:
        reader.close()


def test_heartbeats_arrive_while_idle_every_interval(live: LiveServer) -> None:
    """Every ``stream_heartbeat_s`` (0.2 s here) while idle, not faster: the k-th heartbeat
    cannot arrive before k intervals have passed since the request was sent (each waits a
    whole idle interval after the one before). A lower bound only: a late reader makes
    arrivals later, never earlier (a first version's gaps between arrivals could shrink to 0
    when a loaded machine's reader took two at once)."""
    sent = time.monotonic()
    reader = EventReader(live.base, 3)
    try:
        reader.next("ready")
        arrivals = [reader.next("heartbeat")["at"] for _ in range(5)]
    finally:
        reader.close()
    late = [round(at - sent, 3) for at in arrivals]
    assert all(delay >= k * 0.2 - 0.005 for k, delay in enumerate(late, start=1)), late
    # And not at the default interval (5 s: the fifth at 25 s): 1.0 s expected, 4 s of slack
    # for a loaded machine (review: with the lower bound alone the setting could be ignored).
    assert late[-1] < 5.0, late


@pytest.mark.parametrize("value", ["1_0", "+1", "1.0", "%201", "0x1", "%D9%A1"])
def test_ids_and_positions_of_a_stream_are_plain_decimal_digits(live: LiveServer,
                                                                value: str) -> None:
    # As on every other route: "1_0" had opened user 10's stream, "+1" and "1.0" user 1's, and
    # k, after and Last-Event-ID took the same (found by attack). Leading zeros are digits.
    with httpx2.Client(base_url=live.base, timeout=30) as client:
        for path, headers in [(f"/users/{value}/stream", {}),
                              (f"/users/7/stream?k={value}", {}),
                              (f"/users/7/stream?after={value}", {}),
                              ("/users/7/stream", {"Last-Event-ID": value})]:
            # Streamed: an accepted one (the old code's) would never end.
            with client.stream("GET", path, headers=headers) as response:
                assert response.status_code == 422, (path, headers)
                assert orjson.loads(response.read())["code"] == "invalid_request"
    assert getattr(live.app.state, "stream_hub", None) is None  # no stream was opened
    reader = EventReader(live.base, 7)
    assert reader.next("ready")["data"]["user_id"] == 7
    reader.close()


def test_a_stream_refuses_unknown_and_repeated_query_parameters(live: LiveServer) -> None:
    # Each update logs a decision: ?K=3 (a typo) opened a stream of 10-item slates, and
    # ?k=3&k=4 one of 4 (found by attack), as GET /recommendations did.
    takes = "unknown query parameter; this route takes ['after', 'k']"
    with httpx2.Client(base_url=live.base, timeout=30) as client:
        for query, said in [("K=3", [(["query", "K"], "unknown_parameter", takes)]),
                            ("k=3&k=4", [(["query", "k"], "repeated_parameter",
                                          "given more than once; give it once")])]:
            with client.stream("GET", f"/users/7/stream?{query}") as response:
                assert response.status_code == 422, query
                body = orjson.loads(response.read())
            assert [(i["loc"], i["type"], i["msg"]) for i in body["detail"]] == said
    assert getattr(live.app.state, "stream_hub", None) is None  # no stream was opened


def test_a_stream_says_every_issue_of_its_query_and_path_in_one_422(live: LiveServer) -> None:
    # The query check ran before FastAPI read the path and k: only x was said (review).
    with httpx2.Client(base_url=live.base, timeout=30) as client:
        for path, said in [("/users/5/stream?k=abc&x=1", [["query", "x"], ["query", "k"]]),
                           ("/users/abc/stream?x=1", [["query", "x"], ["path", "user_id"]]),
                           ("/users/0/stream?k=3&k=x&x=1",
                            [["query", "x"], ["query", "k"], ["path", "user_id"]]),
                           ("/users/5/stream?x=1&", [["query", "x"], ["header", "last-event-id"]])]:
            headers = {"Last-Event-ID": "abc"} if path.endswith("&") else {}
            with client.stream("GET", path, headers=headers) as response:
                assert response.status_code == 422, path
                body = orjson.loads(response.read())
            assert sorted(i["loc"] for i in body["detail"]) == sorted(said), path
    assert getattr(live.app.state, "stream_hub", None) is None  # no stream was opened


def test_a_reconnect_replays_what_it_missed_and_nothing_twice(live: LiveServer) -> None:
    url = live.app.state.settings.resolved_db_url()
    first = EventReader(live.base, 11)
    start = int(first.next("ready")["id"])
    first_like = seq_of(url, like(live.base, 11, 0))
    assert int(first.next()["id"]) == first_like
    first.close()
    wait_until(lambda: live.hub.open_count == 0)
    # Missed while disconnected: three feedbacks of user 11.
    missed = [seq_of(url, like(live.base, 11, p, kind)) for p, kind in
              [(0, "like"), (1, "click"), (2, "dislike")]]
    assert start < first_like < min(missed)

    again = EventReader(live.base, 11, last_event_id=first_like)
    try:
        assert int(again.next("ready")["id"]) == first_like
        replayed: list[int] = []
        while len(replayed) < len(missed):
            event = again.next()
            replayed += [f["seq"] for f in event["data"]["feedback"]]
            assert int(event["id"]) == replayed[-1]
        assert replayed == missed  # every one, once, in log order
        newest = seq_of(url, like(live.base, 11, 3))
        event = again.next()
        assert [f["seq"] for f in event["data"]["feedback"]] == [newest]
    finally:
        again.close()


def test_the_per_worker_limit_answers_503_and_a_closed_stream_frees_its_place(
        live: LiveServer) -> None:
    readers = [EventReader(live.base, u) for u in (1, 2, 2)]
    try:
        for reader in readers:
            assert reader.status == 200
            reader.next("ready")
        assert live.hub.open_count == 3
        refused = httpx2.get(f"{live.base}/users/4/stream", timeout=30)
        assert refused.status_code == 503
        assert refused.json()["code"] == "too_many_streams"
        assert "stream_max" in refused.json()["detail"]
        readers.pop().close()
        wait_until(lambda: live.hub.open_count == 2)
        readers.append(EventReader(live.base, 4))
        assert readers[-1].status == 200
    finally:
        for reader in readers:
            reader.close()
    # Every disconnected client is cleaned up.
    wait_until(lambda: live.hub.open_count == 0)
    assert live.hub.describe()["users"] == 0


def test_a_slow_reader_is_dropped_and_resynced_without_delaying_others(
        live: LiveServer) -> None:
    url = live.app.state.settings.resolved_db_url()
    # A client that asks for 100-movie slates and never reads: its socket fills up.
    slow = socket.socket()
    slow.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)
    slow.connect(("127.0.0.1", live.port))
    slow.sendall(b"GET /users/21/stream?k=100 HTTP/1.1\r\nHost: x\r\n\r\n")
    other = EventReader(live.base, 22)
    try:
        other.next("ready")
        wait_until(lambda: live.hub.open_count == 2)
        movies = [int(m) for m in live.app.state.service.arm_set.item_ids[:150]]
        statuses = []
        with httpx2.Client(base_url=live.base, timeout=30) as client:
            for i, movie in enumerate(movies):
                statuses.append(client.post("/feedback", json={
                    "user_id": 21, "movie_id": movie, "feedback_type": "click"}).status_code)
                if i % 30 == 0:  # meanwhile another user's likes and pushes go on
                    like(live.base, 22, i // 30)
                    statuses.append(201)
        assert statuses.count(201) == len(statuses)
        others = [r["seq"] for r in read_table(url, feedback) if r["user_id"] == 22]
        pushed: list[int] = []
        while len(pushed) < len(others):
            pushed += [f["seq"] for f in other.next()["data"]["feedback"]]
        assert pushed == sorted(others)
        (stream,) = [s for group in live.hub._streams.values() for s in group
                     if s.user_id == 21]
        wait_until(lambda: stream.dropped >= 1)
        # Coalesced, and blocked on its socket: far fewer slates made for it than feedbacks.
        slates_21 = [r for r in read_table(url, decisions) if r["user_id"] == 21]
        assert len(slates_21) < len(movies) // 2
    finally:
        other.close()
        slow.close()
    wait_until(lambda: live.hub.open_count == 0)


def test_offer_drops_and_resyncs_beyond_the_queue() -> None:
    stream = Stream(5, sent=10, capacity=3)
    stream.offer([{"seq": s, "user_id": 5} for s in (9, 11, 12)], head=12)
    assert [r["seq"] for r in stream.pending] == [11, 12] and stream.fetched == 12
    stream.offer([{"seq": s, "user_id": 5} for s in (12, 13, 14)], head=20)
    assert stream.pending == [] and stream.resync and stream.dropped == 1
    assert stream.fetched == 20 and stream.wake.is_set()


@pytest.mark.slow
@pytest.mark.parametrize("backend", ["sqlite", "postgresql"])
def test_a_feedback_on_another_worker_process_is_pushed_and_a_stop_ends_the_stream(
        backend: str, tmp_path: Path) -> None:
    """Two ``recbandits serve`` processes on one store (two workers, or two hosts): the stream
    held by one gets the feedback the other took; SIGTERM with the stream open ends it and the
    worker exits by itself (uvicorn waits for open responses, so a stream must end)."""
    url = store_url(backend, tmp_path)
    args = ["--dataset", "synthetic", "--arms", ",".join(ARMS), "--seed", "1",
            "--state-dir", str(tmp_path / "state"), "--db", url]
    env = {"RECBANDITS_SYNTHETIC_USERS": "120", "RECBANDITS_SYNTHETIC_ITEMS": "200",
           "RECBANDITS_SYNTHETIC_RATINGS": "3000"}
    holder = ServiceProcess(args, env, tmp_path / "a.log")
    other = ServiceProcess(args, env, tmp_path / "b.log")
    reader = None
    try:
        reader = EventReader(holder.base, 9)
        pid = reader.next("ready")["data"]["pid"]
        assert pid == holder.proc.pid != other.proc.pid  # held by the other process
        liked = like(other.base, 9)
        update = reader.next()
        assert int(update["id"]) == seq_of(url, liked)
        assert update["data"]["feedback"][0]["movie_id"] == liked["movie_id"]
        slate = update["data"]["recommendations"]
        assert {r["event_id"] for r in read_table(url, decisions)} >= {slate["event_id"]}
        holder.stop()  # SIGTERM, the stream still open
        assert holder.proc.returncode != -signal.SIGKILL, "the worker had to be killed"
        reader.thread.join(WAIT_S)
        assert not reader.thread.is_alive(), "the stream did not end"
    finally:
        if reader is not None:
            reader.close()
        other.stop()
        holder.stop()


def test_feedback_after_reads_the_users_tail_up_to_the_head(live: LiveServer) -> None:
    url = live.app.state.settings.resolved_db_url()
    store = live.app.state.service.store
    rows = [like(live.base, u, p) for u, p in ((7, 0), (8, 0), (7, 1))]
    seqs = [seq_of(url, r) for r in rows]
    head = store.log_seq()
    assert store.feedback_after(0, []) == (head, [])
    got_head, got = store.feedback_after(0, [7, 9])
    assert got_head == head >= max(seqs)
    assert [(r["seq"], r["user_id"], r["movie_id"]) for r in got] == [
        (seqs[0], 7, rows[0]["movie_id"]), (seqs[2], 7, rows[2]["movie_id"])]
    assert [r["seq"] for r in store.feedback_after(seqs[0], [7, 8])[1]] == seqs[1:]
    assert store.feedback_after(head, [7, 8]) == (head, [])
