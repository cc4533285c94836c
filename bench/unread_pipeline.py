"""A client that pipelines many requests and never reads the answers, against the HTTP layer.

What it measures: the worker's CPU for one connection sending ``--requests`` pipelined ``GET
/ok`` (its receive buffer 4 KiB, never read), and the worst latency another client sees
meanwhile. The HTTP layer (``serving.api.protocol``) kept its connection's requests in a list
rebuilt at every head, so such a pipeline cost the square of its length: 30,000 requests
stopped the worker for 25-47 s (found by attack, 7 December). The worker runs the protocol
tests' small app under the service's uvicorn options (``tests/test_serving_protocol.py``).

    .venv/bin/python bench/unread_pipeline.py --requests 30000
"""

from __future__ import annotations

import argparse
import socket
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent / "tests"))
import test_serving_protocol as protocol_tests  # its worker and app


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--requests", type=int, default=30_000)
    parser.add_argument("--probes", type=int, default=20)
    args = parser.parse_args(argv)
    worker = protocol_tests.Worker(Path(tempfile.mkdtemp(prefix="unread-pipeline-")))
    try:
        ticks_before = _cpu_ticks(worker.proc.pid)
        sock = socket.socket()
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)
        sock.connect(("127.0.0.1", worker.port))
        sock.setblocking(False)
        data = b"GET /ok HTTP/1.1\r\nHost: x\r\n\r\n" * args.requests
        sent, start = 0, time.monotonic()
        while sent < len(data) and time.monotonic() - start < 20:
            try:
                sent += sock.send(data[sent:])
            except BlockingIOError:
                time.sleep(0.01)
        worst = 0.0
        for _ in range(args.probes):
            began = time.monotonic()
            protocol_tests.httpx2.get(f"http://127.0.0.1:{worker.port}/ok", timeout=300)
            worst = max(worst, time.monotonic() - began)
            time.sleep(0.25)
        sock.close()
        print(f"requests: {args.requests}\nbytes_sent: {sent}\n"
              f"worst_other_client_latency_s: {worst:.2f}\n"
              f"worker_cpu_s: {(_cpu_ticks(worker.proc.pid) - ticks_before) / 100:.2f}")
    finally:
        worker.stop()


def _cpu_ticks(pid: int) -> int:
    fields = Path(f"/proc/{pid}/stat").read_text().split()
    return int(fields[13]) + int(fields[14])


if __name__ == "__main__":
    main()
