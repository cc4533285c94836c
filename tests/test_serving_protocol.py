"""The HTTP server's limits (serving.api.protocol) on a real uvicorn worker on loopback.

Finding 5 of issue 13: no cap on the request head, no header or body time-out, idle
connections never closed. The worker here runs a tiny Starlette app under exactly the uvicorn
options ``recbandits serve`` uses (:func:`serving.api.protocol.uvicorn_options`); the limits
live below the app, so the app does not matter (test_serving_process covers ``serve`` with the
real service end to end).

No wall-clock asserts: every wait is for an event (a closed socket, an answer), with a
generous deadline that only bounds a broken run; the server's time-outs are short (1-2 s), the
deadlines 60 s, which a load of 10 does not reach.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import socket
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import httpx2
import pytest
from test_serving_support import free_port

pytestmark = pytest.mark.slow

REPO = Path(__file__).resolve().parent.parent
LIMITS = {"RECBANDITS_MAX_HEADER_BYTES": "16384", "RECBANDITS_HEADER_TIMEOUT_S": "2",
          "RECBANDITS_BODY_TIMEOUT_S": "2", "RECBANDITS_KEEP_ALIVE_TIMEOUT_S": "1",
          "RECBANDITS_MAX_CONCURRENCY": "4"}
DEADLINE_S = 300.0  # a start: 1.6 s here, 20 s and more on a loaded machine


def limits_app() -> object:
    """``GET /ok``; ``POST /echo`` (reads the body); ``GET /hold`` (answers once the file
    named by ``HOLD_FILE`` exists, so requests stay in flight as long as the test wants);
    ``GET /hold/{name}`` (the same for the file ``name`` beside it); ``GET /act`` (counts its
    calls without reading a body);
    ``GET /big`` (64 KiB: a client that does not read fills the buffers at once)."""
    from starlette.applications import Starlette
    from starlette.requests import Request
    from starlette.responses import JSONResponse
    from starlette.routing import Route

    from serving.api.validation import read_body
    from serving.errors import ServingError

    hold_file = Path(os.environ["HOLD_FILE"])

    async def ok(_request: Request) -> JSONResponse:
        return JSONResponse({"ok": True})

    async def echo(request: Request) -> JSONResponse:
        return JSONResponse({"bytes": len(await request.body())})

    read_failures: list[dict[str, object]] = []

    async def read(request: Request) -> JSONResponse:
        # The service's body reader: what it raised is what the app answers and counts.
        try:
            return JSONResponse({"bytes": len(await read_body(request))})
        except ServingError as exc:
            read_failures.append({"status": exc.status_code, "detail": str(exc)})
            raise

    async def read_failed(_request: Request) -> JSONResponse:
        return JSONResponse(read_failures)

    async def hold(_request: Request) -> JSONResponse:
        while not hold_file.exists():
            await asyncio.sleep(0.02)
        return JSONResponse({"held": True})

    async def hold_named(request: Request) -> JSONResponse:
        while not (hold_file.parent / request.path_params["name"]).exists():
            await asyncio.sleep(0.02)
        return JSONResponse({"held": request.path_params["name"]})

    acted: list[int] = []

    async def act(_request: Request) -> JSONResponse:  # a side effect without reading a body
        acted.append(1)
        return JSONResponse({"acted": len(acted)})

    async def big(_request: Request) -> JSONResponse:
        return JSONResponse({"pad": "x" * 65_536})

    return Starlette(routes=[Route("/ok", ok), Route("/echo", echo, methods=["POST"]),
                             Route("/read", read, methods=["POST"]),
                             Route("/read-failures", read_failed),
                             Route("/hold", hold), Route("/hold/{name}", hold_named),
                             Route("/act", act), Route("/big", big)])


class Worker:
    """One uvicorn worker (this process is the worker: no supervisor) with ``LIMITS``."""

    def __init__(self, tmp: Path) -> None:
        self.port = free_port()
        self.hold_file = tmp / "release"
        code = ("import uvicorn; from serving.api.protocol import uvicorn_options; "
                "from serving.settings import Settings; "
                f"uvicorn.run('test_serving_protocol:limits_app', factory=True, "
                f"host='127.0.0.1', port={self.port}, "
                f"app_dir={str(Path(__file__).parent)!r}, "
                "**uvicorn_options(Settings(log_level='error')))")
        self.log_path = tmp / "worker.log"
        self.log = self.log_path.open("wb")
        self.proc = subprocess.Popen([sys.executable, "-c", code], cwd=REPO,
                                     env={**os.environ, **LIMITS,
                                          "HOLD_FILE": str(self.hold_file)},
                                     stdout=self.log, stderr=subprocess.STDOUT)
        deadline = time.monotonic() + DEADLINE_S
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                raise RuntimeError(f"worker exited: {(tmp / 'worker.log').read_text()}")
            try:
                if httpx2.get(f"http://127.0.0.1:{self.port}/ok", timeout=1).status_code == 200:
                    return
            except httpx2.HTTPError:
                time.sleep(0.1)
        raise RuntimeError("worker did not start")

    def rss_kib(self) -> int:
        for line in Path(f"/proc/{self.proc.pid}/status").read_text().splitlines():
            if line.startswith("VmRSS:"):
                return int(line.split()[1])
        raise RuntimeError("no VmRSS")

    def connect(self) -> socket.socket:
        sock = socket.create_connection(("127.0.0.1", self.port), timeout=DEADLINE_S)
        return sock

    def stop(self) -> None:
        self.proc.terminate()
        try:
            self.proc.wait(30)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait(10)
        self.log.close()


@pytest.fixture(scope="module")
def worker(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Worker]:
    w = Worker(tmp_path_factory.mktemp("limits"))
    try:
        yield w
    finally:
        w.stop()


def read_until_closed(sock: socket.socket) -> bytes:
    """Everything the server sends until it closes the connection (DEADLINE_S at most)."""
    chunks = []
    while True:
        try:
            chunk = sock.recv(65536)
        except ConnectionResetError:
            break
        if not chunk:
            break
        chunks.append(chunk)
    return b"".join(chunks)


def read_response(sock: socket.socket) -> bytes:
    """One whole response (head and ``Content-Length`` body), however the segments fall."""
    data = b""
    while b"\r\n\r\n" not in data:
        chunk = sock.recv(65536)
        if not chunk:
            return data
        data += chunk
    head, _, body = data.partition(b"\r\n\r\n")
    length = next(int(line.split(b":")[1]) for line in head.split(b"\r\n")
                  if line.lower().startswith(b"content-length:"))
    while len(body) < length:
        chunk = sock.recv(65536)
        if not chunk:
            break
        body += chunk
    return head + b"\r\n\r\n" + body


def status_of(answer: bytes) -> int:
    return int(answer[9:12])


def test_a_head_over_16_kib_is_431_and_one_under_is_served(worker: Worker) -> None:
    url = f"http://127.0.0.1:{worker.port}/ok"
    under = httpx2.get(url, headers={"x-pad": "a" * 15_000})
    assert under.status_code == 200
    over = httpx2.get(url, headers={"x-pad": "a" * 16_400})
    assert over.status_code == 431
    assert over.json() == {"detail": "request header fields larger than 16384 bytes",
                           "code": "headers_too_large"}
    assert over.headers["connection"] == "close"
    # Many small headers count as much as one large one.
    many = httpx2.get(url, headers={f"x-h{i}": "b" * 100 for i in range(200)})
    assert many.status_code == 431


def test_unfinished_10_mb_heads_are_cut_off_without_growing_the_worker(worker: Worker) -> None:
    """20 connections each sending 10 MB of one header that never ends (the old worker grew
    by about 10 MB per connection)."""
    before = worker.rss_kib()
    answers: list[bytes] = []
    sent: list[int] = []

    def attack() -> None:
        sock = worker.connect()
        n = 0
        try:
            sock.sendall(b"GET /ok HTTP/1.1\r\nHost: x\r\nX-Big: ")
            chunk = b"a" * 65536
            while n < 10 * 2**20:
                sock.sendall(chunk)
                n += len(chunk)
        except OSError:  # the server answered and closed: the rest cannot be sent
            pass
        sent.append(n)
        answers.append(read_until_closed(sock))
        sock.close()

    threads = [threading.Thread(target=attack) for _ in range(20)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(DEADLINE_S)
    grown_kib = worker.rss_kib() - before
    assert len(answers) == 20
    assert all(status_of(a) == 431 for a in answers if a), answers
    assert sum(1 for a in answers if a) >= 1  # (a reset may beat the answer to the client)
    assert min(sent) < 10 * 2**20  # every connection was cut off before its 10 MB
    assert grown_kib < 8 * 1024, grown_kib
    assert httpx2.get(f"http://127.0.0.1:{worker.port}/ok").status_code == 200


def test_an_idle_connection_is_closed_after_the_keep_alive_time_out(worker: Worker) -> None:
    # After a request ...
    sock = worker.connect()
    sock.sendall(b"GET /ok HTTP/1.1\r\nHost: x\r\n\r\n")
    answer = read_response(sock)
    assert status_of(answer) == 200 and answer.endswith(b'{"ok":true}')
    assert read_until_closed(sock) == b""  # then nothing more, and closed by the server
    sock.close()
    # ... and before any (uvicorn alone never closes a connection that sent nothing).
    fresh = worker.connect()
    assert read_until_closed(fresh) == b""
    fresh.close()


def test_a_client_sending_its_head_a_byte_a_second_is_cut_off(worker: Worker) -> None:
    """Each byte would reset a keep-alive timer; the header time-out (2 s) runs from the head's
    first byte."""
    sock = worker.connect()
    head = b"GET /ok HTTP/1.1\r\nHost: x\r\nX-Slow: " + b"s" * 200
    sock.settimeout(1.0)
    answer = b""
    sent = 0
    for byte in head:
        try:
            sock.sendall(bytes([byte]))
        except OSError:
            break
        sent += 1
        try:
            answer = sock.recv(65536)
        except TimeoutError:  # nothing yet: send the next byte a second later
            continue
        except ConnectionResetError:
            break
        break
    if answer:  # the rest of the 408, if it came in more than one segment
        sock.settimeout(DEADLINE_S)
        answer += read_until_closed(sock)
    sock.close()
    # The connection ended long before the head did: 408 (a second per byte, 2 s allowed;
    # the margin is 60 bytes, as a loaded machine can run the timer late).
    assert sent < 60, sent
    assert status_of(answer) == 408, answer
    assert b'"code":"request_timeout"' in answer


def stalled_body(worker: Worker, path: str) -> bytes:
    """POST to ``path`` a head announcing 100 bytes, then 6 of them; what the server sends."""
    sock = worker.connect()
    sock.sendall(f"POST {path} HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\n"
                 "Content-Length: 100\r\n\r\n{\"a\": ".encode())
    answer = read_until_closed(sock)
    sock.close()
    return answer


def test_a_body_that_stops_arriving_is_408(worker: Worker) -> None:
    answer = stalled_body(worker, "/echo")
    assert status_of(answer) == 408, answer
    assert b"request body not received" in answer
    # A complete body is served.
    assert httpx2.post(f"http://127.0.0.1:{worker.port}/echo", content=b"x" * 100).json() == \
        {"bytes": 100}


def test_a_body_cut_off_at_the_time_out_is_a_408_to_the_app_too(worker: Worker) -> None:
    # Found by attack: the client was sent 408, while the service's body reader raised the
    # 499 of a client gone, which its metrics counted.
    answer = stalled_body(worker, "/read")
    assert status_of(answer) == 408, answer
    wire_detail = json.loads(answer.partition(b"\r\n\r\n")[2])["detail"]
    assert wire_detail == "request body not received within 2 s"
    assert httpx2.get(f"http://127.0.0.1:{worker.port}/read-failures").json() == \
        [{"status": 408, "detail": wire_detail}]
    # A client that hangs up mid-body is still the 499 of a client gone.
    sock = worker.connect()
    sock.sendall(b"POST /read HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\n"
                 b"Content-Length: 100\r\n\r\n{\"a\": ")
    sock.close()
    deadline = time.monotonic() + DEADLINE_S
    while len(failures := httpx2.get(f"http://127.0.0.1:{worker.port}/read-failures").json()) < 2:
        assert time.monotonic() < deadline
        time.sleep(0.05)
    assert failures[1]["status"] == 499, failures


def test_requests_beyond_the_concurrency_limit_are_503(worker: Worker) -> None:
    assert not worker.hold_file.exists()
    held = []
    for _ in range(4):  # the limit: 4 requests in flight
        sock = worker.connect()
        sock.sendall(b"GET /hold HTTP/1.1\r\nHost: x\r\n\r\n")
        held.append(sock)
    # The 4 are in flight once a 5th is refused; retried until they all arrived (no sleep).
    deadline = time.monotonic() + DEADLINE_S
    refused = None
    while time.monotonic() < deadline:
        response = httpx2.get(f"http://127.0.0.1:{worker.port}/ok")
        if response.status_code == 503:
            refused = response
            break
    assert refused is not None
    assert refused.json()["code"] == "overloaded"
    assert refused.headers["retry-after"] == "1"
    worker.hold_file.touch()  # the held requests end ...
    for sock in held:
        answer = read_response(sock)
        assert status_of(answer) == 200 and b'"held":true' in answer
        sock.close()
    # ... and the worker serves again.
    deadline = time.monotonic() + DEADLINE_S
    while time.monotonic() < deadline:
        if httpx2.get(f"http://127.0.0.1:{worker.port}/ok").status_code == 200:
            break
    else:
        pytest.fail("the worker kept refusing after the held requests ended")


def test_a_pipelining_client_that_leaves_unread_logs_no_error(worker: Worker) -> None:
    # Requests pipelined without reading the answers, then the connection closed: uvicorn
    # marks only the newest request of a connection as disconnected, so the one still being
    # answered wrote to the closed transport and logged two ERROR tracebacks a connection
    # (about 1,150 from one client in a minute: found by attack). No client saw an error.
    errors_before = worker.log_path.read_bytes().count(b"Exception in ASGI application")
    socks = []
    for _ in range(8):
        sock = socket.socket()
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)
        sock.connect(("127.0.0.1", worker.port))
        sock.setblocking(False)
        socks.append(sock)
    for _ in range(20):
        for sock in socks:
            # OSError: the server stopped reading (its answers are not read).
            with contextlib.suppress(OSError):
                sock.send(b"GET /big HTTP/1.1\r\nHost: x\r\n\r\n" * 20)
        time.sleep(0.05)
    for sock in socks:
        sock.close()
    # The worker goes on serving; then its log is read (the closes were seen by then: each
    # is a loop turn before this request's, and a traceback is written as it happens).
    time.sleep(1.0)
    assert httpx2.get(f"http://127.0.0.1:{worker.port}/ok", timeout=DEADLINE_S).status_code == 200
    log = worker.log_path.read_bytes()
    assert log.count(b"Exception in ASGI application") == errors_before, log[-3000:].decode()


def test_a_client_that_stops_reading_its_answers_is_cut_off(worker: Worker) -> None:
    # Its answers fill the server's buffer; it must read again within the body time-out (2 s
    # here) or the connection is aborted. Such connections were held for as long as the
    # client liked (found by attack: 600-1,200 of them for a minute).
    sock = socket.socket()
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)
    sock.connect(("127.0.0.1", worker.port))
    sock.sendall(b"GET /big HTTP/1.1\r\nHost: x\r\n\r\n" * 256)  # 16 MiB of answers
    deadline = time.monotonic() + DEADLINE_S
    state = 0
    while time.monotonic() < deadline:
        # tcpi_state, the first byte of TCP_INFO: 7 CLOSE (reset), 8 CLOSE_WAIT (peer's FIN).
        state = sock.getsockopt(socket.IPPROTO_TCP, socket.TCP_INFO, 1)[0]
        if state in (7, 8):
            break
        time.sleep(0.1)
    sock.close()
    assert state in (7, 8), f"the server kept the connection (tcpi_state {state})"
    assert httpx2.get(f"http://127.0.0.1:{worker.port}/ok", timeout=DEADLINE_S).status_code == 200


def read_responses(sock: socket.socket) -> list[bytes]:
    """Every response the server sends until it closes the connection, one item each."""
    data = read_until_closed(sock)
    answers = []
    while data:
        head, _, rest = data.partition(b"\r\n\r\n")
        length = next(int(line.split(b":")[1]) for line in head.split(b"\r\n")
                      if line.lower().startswith(b"content-length:"))
        answers.append(head + b"\r\n\r\n" + rest[:length])
        data = rest[length:]
    return answers


@pytest.mark.parametrize(("refused", "status"), [
    (b"GET /ok HTTP/1.1\r\nHost: x\r\nX-Pad: " + b"a" * 17_000 + b"\r\n\r\n", 431),
    # Unfinished, and all in the read it began in: that read is not counted (where the head
    # began in it is unknown), so the header time-out ends it.
    (b"GET /ok HTTP/1.1\r\nHost: x\r\nX-Pad: " + b"a" * 17_000, 408),
    (b"POST /echo HTTP/1.1\r\nHost: x\r\nContent-Length: -1\r\n\r\n", 400),
])
def test_a_refused_request_is_answered_after_those_pipelined_before_it(
        worker: Worker, refused: bytes, status: int) -> None:
    # Found by attack: a valid POST and, in the same packet, a head over the cap got a lone
    # 431 and a closed connection: the refusal went out before the app had answered the
    # first request, whose write was done all the same. HTTP/1.1 answers in order.
    sock = worker.connect()
    sock.sendall(b"POST /echo HTTP/1.1\r\nHost: x\r\nContent-Length: 3\r\n\r\nabc"
                 + b"GET /ok HTTP/1.1\r\nHost: x\r\n\r\n" * 2 + refused)
    answers = read_responses(sock)
    sock.close()
    assert [status_of(answer) for answer in answers] == [200, 200, 200, status], answers
    assert answers[0].endswith(b'{"bytes":3}') and answers[1].endswith(b'{"ok":true}')
    assert b"connection: close" in answers[3]


CHUNKED_POST = (b"POST /echo HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\n\r\n"
                b"5\r\nhello\r\nZZZ\r\n")  # a chunk, then a malformed chunk size


def closes_within_deadline(sock: socket.socket) -> list[bytes]:
    """The answers until the server closes; the test fails if it never does (the deadline)."""
    sock.settimeout(60.0)
    try:
        return read_responses(sock)
    except TimeoutError:
        pytest.fail("the server kept the connection open")


def test_a_malformed_chunk_is_400_at_once_and_holds_nothing(worker: Worker) -> None:
    # Found by attack of the first deferral: the refusal waited for the refused request's own
    # app, which waited for the rest of its body: the connection hung with no time limit and
    # held a place of max_concurrency (4 such connections: every other request 503).
    socks = []
    for _ in range(5):  # more than max_concurrency (4)
        sock = worker.connect()
        sock.sendall(b"POST /echo HTTP/1.1\r\nHost: x\r\nContent-Length: 2\r\n\r\nab"
                     + CHUNKED_POST)
        socks.append(sock)
    for sock in socks:
        answers = closes_within_deadline(sock)
        sock.close()
        assert [status_of(a) for a in answers] == [200, 400], answers
        assert answers[0].endswith(b'{"bytes":2}') and b"invalid HTTP request" in answers[1]
    assert httpx2.get(f"http://127.0.0.1:{worker.port}/ok").status_code == 200
    # A route that reads no body does not act on a request refused in the read that brought
    # its head (its app ran, and its answer was dropped).
    before = httpx2.get(f"http://127.0.0.1:{worker.port}/act").json()["acted"]
    sock = worker.connect()
    sock.sendall(CHUNKED_POST.replace(b"POST /echo", b"GET /act"))
    answers = closes_within_deadline(sock)
    sock.close()
    assert [status_of(a) for a in answers] == [400], answers
    assert httpx2.get(f"http://127.0.0.1:{worker.port}/act").json()["acted"] == before + 1
    # One that answered before its body went wrong keeps its one answer: no 400 after it.
    sock = worker.connect()
    sock.sendall(CHUNKED_POST[:CHUNKED_POST.index(b"ZZZ")].replace(b"POST /echo", b"GET /act"))
    assert status_of(read_response(sock)) == 200
    sock.sendall(b"ZZZ\r\n")
    assert closes_within_deadline(sock) == []
    sock.close()


def test_pipelined_heads_cut_by_a_read_are_not_too_large(worker: Worker) -> None:
    # Found by attack: a read ending inside a 30-byte head counted the whole read (up to
    # 256 KiB) as head bytes: 431 after 1,567 of 2,000 pipelined requests, the rest lost; and
    # a short unfinished head after 200 requests was 431, not the header time-out's 408.
    sock = worker.connect()
    sock.sendall(b"GET /ok HTTP/1.1\r\nHost: x\r\n\r\n" * 2000
                 + b"GET /ok HTTP/1.1\r\nConnection: close\r\n\r\n")
    answers = closes_within_deadline(sock)
    sock.close()
    assert len(answers) == 2001 and {status_of(a) for a in answers} == {200}
    sock = worker.connect()
    sock.sendall(b"GET /ok HTTP/1.1\r\nHost: x\r\n\r\n" * 600 + b"GET /ok HTTP/1.1\r\nHo")
    answers = closes_within_deadline(sock)
    sock.close()
    assert [status_of(a) for a in answers] == [200] * 600 + [408]


def test_a_client_that_half_closes_gets_its_answers(worker: Worker) -> None:
    # Found by attack: a client that shut its sending side after its requests got no answer
    # (asyncio closed the connection at the end of the stream) while the requests ran.
    sock = worker.connect()
    sock.sendall(b"POST /echo HTTP/1.1\r\nHost: x\r\nContent-Length: 3\r\n\r\nabc"
                 + b"GET /ok HTTP/1.1\r\nHost: x\r\n\r\n" * 40)
    sock.shutdown(socket.SHUT_WR)
    answers = closes_within_deadline(sock)
    sock.close()
    assert [status_of(a) for a in answers] == [200] * 41
    assert answers[0].endswith(b'{"bytes":3}')
    # A body the client never finished: nothing to answer, the connection closes.
    sock = worker.connect()
    sock.sendall(b"POST /read HTTP/1.1\r\nHost: x\r\nContent-Length: 10\r\n\r\nab")
    sock.shutdown(socket.SHUT_WR)
    assert closes_within_deadline(sock) == []
    sock.close()


def test_a_half_close_after_a_refused_head_keeps_the_requests_before_it(
        worker: Worker) -> None:
    # Found by attack: the end of the stream marked the request before the refused head
    # disconnected: it was lost (or, answered by nobody, held the refusal and the connection
    # for good, and with it the worker's graceful stop).
    sock = worker.connect()
    sock.sendall(b"GET /hold/half-close HTTP/1.1\r\nHost: x\r\n\r\n"  # in flight meanwhile
                 + b"POST /echo HTTP/1.1\r\nHost: x\r\nContent-Length: 3\r\n\r\nabc"
                 + b"GET /ok HTTP/1.1\r\nHost: x\r\nX-Pad: " + b"a" * 17_000 + b"\r\n\r\n")
    sock.shutdown(socket.SHUT_WR)
    time.sleep(1.0)  # the end of the stream is seen (if late, the test checks less)
    (worker.hold_file.parent / "half-close").touch()
    answers = closes_within_deadline(sock)
    sock.close()
    assert [status_of(a) for a in answers] == [200, 200, 431], answers
    assert answers[1].endswith(b'{"bytes":3}')


def test_a_head_over_the_cap_split_across_reads_is_431(worker: Worker) -> None:
    # Found by attack: only the last read of a head that began in an earlier one was counted,
    # so a 20 KB head sent in two parts was served.
    head = b"GET /ok HTTP/1.1\r\nHost: x\r\nX-Pad: " + b"a" * 20_000 + b"\r\n\r\n"
    for split in (100, 8_000, 16_383, 16_385, len(head) - 2):
        sock = worker.connect()
        sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        sock.sendall(head[:split])
        time.sleep(0.15)  # two reads (if not, the one read is counted whole: 431 all the same)
        with contextlib.suppress(OSError):
            sock.sendall(head[split:])
        answers = closes_within_deadline(sock)
        sock.close()
        assert [status_of(a) for a in answers] == [431], (split, answers)


def test_blank_lines_do_not_hold_a_connection(worker: Worker) -> None:
    # Found by attack: llhttp skips blank lines before a request, so no header deadline was
    # armed, while any byte cancelled the keep-alive time-out: "\r\n" held a connection
    # (and a file descriptor) for good.
    for before in (b"", b"GET /ok HTTP/1.1\r\nHost: x\r\n\r\n"):
        sock = worker.connect()
        sock.sendall(before + b"\r\n")
        answers = closes_within_deadline(sock)  # the keep-alive time-out: 1 s here
        sock.close()
        assert [status_of(a) for a in answers] == ([200] if before else [])


def test_trailer_fields_are_refused(worker: Worker) -> None:
    # Found by attack: uvicorn merged a chunked body's trailer fields into the request's
    # headers, which the app reads (a token sent only there opened an admin route), with no
    # cap (64 MB of trailers were taken).
    sock = worker.connect()
    sock.sendall(b"POST /echo HTTP/1.1\r\nHost: x\r\nContent-Length: 2\r\n\r\nab"
                 b"POST /echo HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\n\r\n"
                 b"5\r\nhello\r\n0\r\nAuthorization: Bearer x\r\n\r\n"
                 b"GET /act HTTP/1.1\r\nHost: x\r\n\r\n")
    answers = closes_within_deadline(sock)
    sock.close()
    assert [status_of(a) for a in answers] == [200, 400], answers
    assert b"trailer fields are not accepted" in answers[1]
    # A chunked body without trailers is read as before.
    sock = worker.connect()
    sock.sendall(b"POST /echo HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\n\r\n"
                 b"5\r\nhello\r\n0\r\n\r\n")
    assert read_response(sock).endswith(b'{"bytes":5}')
    sock.close()


def test_a_head_timed_out_behind_a_slow_answer_waits_for_it(worker: Worker) -> None:
    # The header time-out of a head pipelined behind an answer still in the making hung up,
    # and the answer was lost; now the answer goes out, then the 408.
    sock = worker.connect()
    sock.sendall(b"GET /hold/slow-answer HTTP/1.1\r\nHost: x\r\n\r\n"
                 b"GET /ok HTTP/1.1\r\nHost: x\r\nX-Unfinished: a")
    time.sleep(4.0)  # the 2 s header time-out passes (if late on a loaded machine, the test
    # checks less, never fails wrongly)
    (worker.hold_file.parent / "slow-answer").touch()
    answers = read_responses(sock)
    sock.close()
    assert [status_of(answer) for answer in answers] == [200, 408], answers
    assert answers[0].endswith(b'{"held":"slow-answer"}')


@pytest.mark.parametrize("head", [
    b"POST /echo HTTP/1.1\r\nHost: x\r\nContent-Length: -1\r\n\r\n",
    b"POST /echo HTTP/1.1\r\nHost: x\r\nContent-Length: 1\r\nContent-Length: 2\r\n\r\nab",
    b"POST /echo HTTP/1.1\r\nHost: x\r\nContent-Length: 2\r\nTransfer-Encoding: chunked\r\n\r\n",
    b"GET /ok HTTP/1.1\r\nHost: x\r\nX-A: a\x00b\r\n\r\n",
])
def test_malformed_http_gets_the_apis_400_body(worker: Worker, head: bytes) -> None:
    # It was uvicorn's plain-text "Invalid HTTP request received." (found by attack).
    sock = worker.connect()
    sock.sendall(head)
    answer = read_until_closed(sock)
    sock.close()
    assert status_of(answer) == 400, answer
    head_part, _, body = answer.partition(b"\r\n\r\n")
    assert b"content-type: application/json" in head_part.lower()
    error = json.loads(body)
    assert error["code"] == "bad_request" and error["detail"].startswith("invalid HTTP request")


def test_a_workers_death_is_a_warning_and_other_info_stays_below_the_level() -> None:
    # uvicorn's supervisor says "Child process [pid] died" at info, below the service's
    # default level: a worker killed again and again went unseen (found by attack).
    import logging

    import pydantic

    from serving.api.protocol import WorkerDeaths, log_config
    from serving.settings import Settings

    def record(level: int, module: str, message: str) -> logging.LogRecord:
        return logging.LogRecord("uvicorn.error", level, f"/x/{module}.py", 1, message, None,
                                 None)

    deaths = WorkerDeaths(logging.WARNING)
    died = record(logging.INFO, "multiprocess", "Child process [4242] died")
    assert deaths.filter(died) and (died.levelno, died.levelname) == (logging.WARNING, "WARNING")
    assert not deaths.filter(record(logging.INFO, "multiprocess", "Waiting for child process"))
    assert not deaths.filter(record(logging.INFO, "server", "Application startup complete."))
    assert deaths.filter(record(logging.ERROR, "server", "boom"))
    # At info and below too, a death is a warning (it passed as info first).
    died = record(logging.INFO, "multiprocess", "Child process [4243] died")
    assert WorkerDeaths(logging.INFO).filter(died) and died.levelname == "WARNING"
    config = log_config("warning")
    assert config["loggers"]["uvicorn.error"]["level"] == logging.INFO
    # On the handler, built anew by each configuration (a logger's filters pile up).
    assert config["handlers"]["default"]["filters"] == ["worker_deaths"]
    assert "filters" not in config["loggers"]["uvicorn.error"]
    assert config["loggers"]["uvicorn.access"]["level"] == logging.WARNING
    assert log_config("debug")["loggers"]["uvicorn.error"]["level"] == logging.DEBUG
    # The service's own loggers at the level, through the handler that filters deaths.
    assert log_config("info")["loggers"]["serving"] == {
        "handlers": ["default"], "level": logging.INFO, "propagate": False}
    with pytest.raises(pydantic.ValidationError, match="'warning'"):
        Settings(log_level="verbose")
    assert Settings(log_level="WARNING").log_level == "warning"  # as uvicorn takes it
    from serving.api.protocol import uvicorn_options

    options = uvicorn_options(Settings())
    assert (options["timeout_worker_healthcheck"], options["log_level"]) == (60, None)


@pytest.mark.parametrize(("verbose", "level", "expected"), [
    (False, "warning", "WARNING"), (True, "warning", "INFO"), (True, "debug", "DEBUG"),
    (False, "error", "ERROR")])
def test_serve_gives_the_workers_own_loggers_the_level_or_info_with_v(
        monkeypatch: pytest.MonkeyPatch, tmp_path: Path, verbose: bool, level: str,
        expected: str) -> None:
    # `recbandits -v serve` printed the service's info lines through the root logger -v
    # configures; once the serving loggers got their own handler (so that spawned workers log
    # at RECBANDITS_LOG_LEVEL), -v must still reach them.
    import logging
    import types

    from serving import commands
    from serving.settings import Settings

    ran: dict = {}
    settings = Settings(state_dir=tmp_path, log_level=level, port=free_port())
    resources = types.SimpleNamespace(store=types.SimpleNamespace(dispose=lambda: None,
                                                                  describe=lambda: "x"),
                                      arm_set=types.SimpleNamespace(version=1),
                                      settings=settings)  # the settings in force
    monkeypatch.setattr(commands, "until_the_store_answers", lambda settings, start: resources)
    monkeypatch.setattr(commands, "_run_worker",
                        lambda config, sock: ran.update(log_config=config.log_config) or 0)
    root = logging.getLogger()
    monkeypatch.setattr(root, "level", logging.INFO if verbose else logging.WARNING)
    # serve exports the settings for its workers: into a copy of the environment.
    monkeypatch.setattr(os, "environ", {k: v for k, v in os.environ.items()
                                        if not k.startswith("RECBANDITS_")})
    assert commands.serve(settings) == 0
    assert logging.getLevelName(ran["log_config"]["loggers"]["serving"]["level"]) == expected
