"""The HTTP server's limits: uvicorn's httptools protocol with a header cap and time-outs.

uvicorn bounds neither the size of a request head nor the time a client takes to send it:
``timeout_keep_alive`` only runs between a response and the next request's first byte (and is
not armed at all on a fresh connection), every received byte cancels it, and the httptools
protocol keeps appending an unfinished header to memory (``h11_max_incomplete_event_size``
exists for the slower h11 protocol only, and answers 400, not 431). Its ``limit_concurrency``
counts open connections as well as requests in flight, so idle keep-alive clients would turn
every request into a 503, and its 503 is plain text rather than the API's error body.

:class:`GuardedHttpToolsProtocol` adds, per connection:

- a cap on the request head (request line and headers): 431 and close above
  ``max_header_bytes``; the reads after the one a head began in are counted as they arrive,
  so an unfinished head is cut off at the cap (plus at most that one socket read), not when
  it ends (or at the header time-out, if it all came in that read);
- a header time-out: the whole head must arrive within ``header_timeout_s`` of its first byte
  (408 and close), so a client trickling one byte a second cannot hold a connection;
- a body time-out: the body must arrive within ``body_timeout_s`` of the end of the head (408
  and close; the app sees a disconnect);
- a write time-out: a client whose unread answers fill the transport's buffer must read again
  within ``body_timeout_s`` or the connection is aborted;
- an idle time-out from the moment a connection opens (uvicorn's keep-alive time-out, which it
  otherwise arms only after a response);
- a cap on requests in flight in the worker: 503 with ``Retry-After`` and close beyond
  ``max_concurrency``, before the app is called;
- no trailer fields after a chunked body (400): uvicorn merged them into the request's
  headers, which the app reads.

Refusals carry the API's error body (``{"detail": ..., "code": ...}``) and close the
connection, after the answers of the requests pipelined before the refused one (HTTP/1.1
answers in order; the refused request's own app, if it started, sees a disconnect). A client
that half-closes gets the answers of the requests it sent, then the close. Refusals happen
below the app, so the app's Prometheus counters do not see them.

:func:`uvicorn_options` turns :class:`~serving.settings.Settings` into the keyword arguments of
``uvicorn.run`` (``serve`` and ``bench/serving_load.py`` share it): these limits, the workers'
health-check time-out and the log configuration.
"""

from __future__ import annotations

import asyncio
import collections
import contextlib
import copy
import functools
import logging
import socket
import struct
from dataclasses import dataclass
from typing import Any

import httptools
import orjson
from uvicorn.config import LOG_LEVELS, LOGGING_CONFIG, Config
from uvicorn.protocols.http.httptools_impl import (
    STATUS_LINE,
    HttpToolsProtocol,
    RequestResponseCycle,
)
from uvicorn.server import ServerState

from serving.settings import Settings

#: The ASGI scope key under which a request cut off at the body time-out carries the 408's
#: detail (:func:`serving.api.validation.read_body` answers with it).
BODY_TIMED_OUT = "recbandits.body_timed_out"


@dataclass(frozen=True)
class ConnectionLimits:
    """What :class:`GuardedHttpToolsProtocol` enforces (see the module doc)."""

    max_header_bytes: int
    header_timeout_s: float
    body_timeout_s: float
    max_concurrency: int

    @classmethod
    def from_settings(cls, settings: Settings) -> ConnectionLimits:
        """The limits of ``settings`` (max_header_bytes, the two time-outs, max_concurrency)."""
        return cls(max_header_bytes=settings.max_header_bytes,
                   header_timeout_s=settings.header_timeout_s,
                   body_timeout_s=settings.body_timeout_s,
                   max_concurrency=settings.max_concurrency)


class _RefusedError(Exception):
    """Raised in a parser callback to stop parsing once the request has been answered."""


# Where the parser is in the current request.
_IDLE, _HEAD, _BODY = 0, 1, 2


class GuardedHttpToolsProtocol(HttpToolsProtocol):
    """uvicorn's httptools protocol with :class:`ConnectionLimits` (see the module doc).

    Parameters
    ----------
    config, server_state, app_state, _loop
        As for uvicorn's ``HttpToolsProtocol``.
    limits : ConnectionLimits
        Bound with :func:`functools.partial` by :func:`uvicorn_options` (a partial of a
        module-level class pickles, so it reaches spawned workers).
    """

    def __init__(self, config: Config, server_state: ServerState, app_state: dict[str, Any],
                 _loop: asyncio.AbstractEventLoop | None = None, *,
                 limits: ConnectionLimits) -> None:
        super().__init__(config, server_state, app_state, _loop)
        self.limits = limits
        self._phase = _IDLE
        # The current head's bytes: those of the reads after the one it began in (all of
        # them head bytes), and the size of that one (where in it the head began is unknown:
        # counting all of it against the cap refused 130-byte heads that began at the end of
        # a 64 KiB read of pipelined requests, found by attack; it bounds the head's part).
        self._head_bytes = 0
        self._head_start_read = 0
        self._read_bytes = 0  # the size of the read being parsed
        self._head_began_in_read = False
        self._eof = False  # the client half-closed: answer what came, then close
        self._deadline: asyncio.TimerHandle | None = None
        self._refused = False
        # A refusal waiting for the answers of the requests pipelined before it (see _refuse).
        self._deferred_refusal: bytes | None = None
        # The connection's requests not yet answered: the one being answered and those
        # pipelined behind it (uvicorn keeps only the newest, as ``cycle``).
        self._cycles: collections.deque[RequestResponseCycle] = collections.deque()
        self._write_deadline: asyncio.TimerHandle | None = None  # while writes are paused

    # -------------------------------------------------------------------- connection
    def connection_made(self, transport: asyncio.Transport) -> None:  # type: ignore[override]
        """Accept ``transport``, and time the connection out if it never sends a byte."""
        super().connection_made(transport)
        # A connection that never sends a byte is idle too.
        self.timeout_keep_alive_task = self.loop.call_later(
            self.timeout_keep_alive, self.timeout_keep_alive_handler)

    def connection_lost(self, exc: Exception | None) -> None:
        """Cancel the pending deadline, mark every unanswered request disconnected, then
        uvicorn's clean-up (``exc``: the cause, if any).

        uvicorn marks only the newest request (``cycle``): behind pipelined ones, the request
        still being answered went on writing to the closed transport and logged two ERROR
        tracebacks a connection (a client pipelining without reading, then closing, wrote
        ~1,150 in a minute: found by attack). Marked, its sends return without writing.
        """
        self._cancel_deadline()
        self._cancel_write_deadline()
        for cycle in self._cycles:
            if not cycle.response_complete:
                cycle.disconnected = True
                cycle.message_event.set()
        self._cycles.clear()
        super().connection_lost(exc)

    def pause_writing(self) -> None:
        """The client stopped reading (the transport's buffer is full): it must read again
        within ``body_timeout_s``, the time a request's body may take, or the connection is
        aborted. Without it, clients that pipelined requests and never read the answers held
        their connections and buffers for as long as they liked (found by attack: 600-1,200
        held for a minute).
        """
        super().pause_writing()
        if self._write_deadline is None:
            self._write_deadline = self.loop.call_later(self.limits.body_timeout_s,
                                                        self._write_timed_out)

    def resume_writing(self) -> None:
        """The client reads again: no deadline until the buffer fills up again."""
        self._cancel_write_deadline()
        super().resume_writing()

    def data_received(self, data: bytes) -> None:
        """Parse ``data`` as uvicorn does, counting head bytes against ``max_header_bytes``."""
        # uvicorn's data_received, with the head counted and our refusals left alone.
        if self._refused:
            return
        # The keep-alive time-out is cancelled when a request begins (on_message_begin), not
        # by any byte: llhttp skips blank lines before a request, so a client sending "\r\n"
        # now and then held its connection for good, with no deadline (found by attack).
        self._read_bytes = len(data)
        self._head_began_in_read = False
        if not self._parsed(data):
            return
        if self._phase == _HEAD:
            # Still inside a head: count the reads after the one it began in and cut it off
            # at the cap (so at most one read past it is held).
            if not self._head_began_in_read:
                self._head_bytes += len(data)
            if self._head_bytes > self.limits.max_header_bytes:
                self._refuse(431, "headers_too_large", self._too_large_detail())
        elif self._phase == _BODY and self._deadline is None:
            self._deadline = self.loop.call_later(self.limits.body_timeout_s,
                                                  self._body_timed_out)

    def _parsed(self, data: bytes) -> bool:
        """Feed ``data`` to the parser; False when parsing stopped (a refusal, an upgrade)."""
        try:
            self.parser.feed_data(data)
        except _RefusedError:
            return False
        except httptools.HttpParserUpgrade:
            if self._should_upgrade():
                self.handle_websocket_upgrade()
            else:
                self._unsupported_upgrade_warning()
            return False
        except httptools.HttpParserError as exc:
            if self._refused or isinstance(exc.__context__, _RefusedError):
                return False
            # The API's error body, not uvicorn's plain text (found by attack: a negative or
            # doubled Content-Length, Content-Length with chunked, a NUL in a header). A bad
            # body (a malformed chunk) is the request being received's own refusal.
            self.logger.warning("Invalid HTTP request received: %s", exc)
            self._refuse(400, "bad_request", f"invalid HTTP request: {exc}",
                         of=self.cycle if self._phase == _BODY else None)
            return False
        return True

    # -------------------------------------------------------------------- parser callbacks
    def on_header(self, name: bytes, value: bytes) -> None:
        """A header field; after the head, a chunked body's trailer field: refused (400).

        uvicorn appended trailer fields to the request's headers, which the app reads: a
        token sent only in a trailer opened an admin route, a media type only there passed
        the body's check, and trailers had no cap (64 MB of them were taken; found by
        attack). RFC 9110 forbids merging them; nothing here reads trailers.
        """
        if self._phase == _BODY:
            self._refuse(400, "bad_request", "trailer fields are not accepted; send every "
                         "header field in the request's head", of=self.cycle)
            raise _RefusedError
        super().on_header(name, value)

    def on_message_begin(self) -> None:
        """A request begins: its head must be complete within ``header_timeout_s``."""
        super().on_message_begin()
        self._unset_keepalive_if_required()
        self._phase = _HEAD
        self._head_bytes = 0
        self._head_start_read = self._read_bytes
        self._head_began_in_read = True
        self._cancel_deadline()
        self._deadline = self.loop.call_later(self.limits.header_timeout_s,
                                              self._head_timed_out)

    def on_headers_complete(self) -> None:
        """The head is in: refuse it (431 over ``max_header_bytes``, 503 over ``max_concurrency``).

        Otherwise the body phase begins (timed by ``body_timeout_s``) and uvicorn runs the
        request.
        """
        self._cancel_deadline()
        limits = self.limits
        # The exact size is only worked out when the bytes received could exceed the cap: an
        # upper bound (the read the head began in, whole, and those after it; a head split
        # across reads passed when only the last read was counted, found by attack).
        received = self._head_start_read + self._head_bytes + (
            0 if self._head_began_in_read else self._read_bytes)
        if received > limits.max_header_bytes and self._head_size() > limits.max_header_bytes:
            self._refuse(431, "headers_too_large", self._too_large_detail())
            raise _RefusedError
        if len(self.tasks) >= limits.max_concurrency:
            self.logger.warning("more than %d requests in flight: 503", limits.max_concurrency)
            self._refuse(503, "overloaded",
                         f"the worker already serves {limits.max_concurrency} requests; retry "
                         "shortly", retry_after=True)
            raise _RefusedError
        self._phase = _BODY
        super().on_headers_complete()
        # Answers complete in order: the answered ones leave from the left (a list rebuilt
        # at every head made a pipeline nobody read cost the square of its length: 30,000
        # requests stopped the worker for 25 s, found by attack).
        while self._cycles and self._cycles[0].response_complete:
            self._cycles.popleft()
        self._cycles.append(self.cycle)

    def on_message_complete(self) -> None:
        """The request is in: clear its deadline; the connection is idle until the next one."""
        self._phase = _IDLE
        self._cancel_deadline()
        super().on_message_complete()

    # -------------------------------------------------------------------- limits
    def _head_size(self) -> int:
        """Bytes of the request line and headers as received (without optional spaces)."""
        return (len(self.url) + len(self.parser.get_method()) + 14  # " ", " HTTP/1.1\r\n"
                + sum(len(name) + len(value) + 4 for name, value in self.headers) + 2)

    def _too_large_detail(self) -> str:
        return f"request header fields larger than {self.limits.max_header_bytes} bytes"

    def _cancel_deadline(self) -> None:
        if self._deadline is not None:
            self._deadline.cancel()
            self._deadline = None

    def _cancel_write_deadline(self) -> None:
        if self._write_deadline is not None:
            self._write_deadline.cancel()
            self._write_deadline = None

    def _write_timed_out(self) -> None:
        # A reset (SO_LINGER 0), not a close: a closed socket keeps its unsent answers in the
        # kernel (up to tcp_wmem's 4 MiB) behind a FIN the client never gets while its window
        # is shut; the reset drops them and tells the client at once.
        self._write_deadline = None
        self._refused = True
        self.logger.warning("a client read nothing for %g s: connection reset",
                            self.limits.body_timeout_s)
        sock = self.transport.get_extra_info("socket")
        if sock is not None:
            with contextlib.suppress(OSError):
                sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
        self.transport.abort()

    def _head_timed_out(self) -> None:
        self._deadline = None
        if self.transport.is_closing():
            return
        self._refuse(408, "request_timeout", f"request headers not received within "
                     f"{self.limits.header_timeout_s:g} s")

    def _body_timed_out(self) -> None:
        self._deadline = None
        if self.transport.is_closing():
            return
        # The detail is left in the request's scope for the app's body reader, which then
        # fails with this 408 rather than a 499 for a client gone (found by attack: the client
        # got 408 and the app's metrics counted 499).
        detail = f"request body not received within {self.limits.body_timeout_s:g} s"
        if self.cycle is not None:
            self.cycle.scope[BODY_TIMED_OUT] = detail  # type: ignore[literal-required]
        self._refuse(408, "request_timeout", detail, of=self.cycle)

    def _refuse(self, status: int, code: str, detail: str, *, retry_after: bool = False,
                of: RequestResponseCycle | None = None) -> None:
        """Answer ``status`` with the API's error body and close the connection, once the
        requests pipelined before the refused one are answered.

        HTTP/1.1 answers a connection's requests in order. The refusal used to be written at
        once: a valid ``POST /events`` followed in the same packet by a head over the cap got
        a lone 431 and a closed connection, while its event was stored (found by attack).
        Data received after a refusal is dropped (``_refused``).

        ``of``: the refused request's own cycle, when its head was taken (a body cut off at
        the time-out, a malformed chunk). Its app sees a disconnect and its answer goes
        nowhere (uvicorn drops the sends of a disconnected cycle), so the refusal is the only
        answer on the wire; the refusal waits for none of it (waiting for it hung the
        connection, found by attack). An app that answered before the body was read
        (``response_started``) keeps its answer, the only one: the connection just closes.
        """
        self._refused = True
        self._cancel_deadline()
        if of is not None and not of.response_complete:
            if of.response_started:  # answering already: no second answer
                self.transport.close()
                return
            of.disconnected = True
            of.message_event.set()
        elif of is not None:  # answered already: no second answer
            self.transport.close()
            return
        body = orjson.dumps({"detail": detail, "code": code})
        content = [STATUS_LINE[status]]
        for name, value in self.server_state.default_headers:
            content.extend([name, b": ", value, b"\r\n"])
        if retry_after:
            content.append(b"retry-after: 1\r\n")
        content.extend([b"content-type: application/json\r\n",
                        b"content-length: ", str(len(body)).encode(), b"\r\n",
                        b"connection: close\r\n\r\n", body])
        self._deferred_refusal = b"".join(content)
        self._send_refusal_when_due()

    def on_response_complete(self) -> None:
        """A response is sent: uvicorn starts the next pipelined request; a refusal waiting
        for this answer goes out, or, after a half-close, the connection closes once every
        request that came is answered.
        """
        super().on_response_complete()
        if self._phase == _HEAD:
            # A head is coming (pipelined behind this answer): its own deadline runs, not
            # uvicorn's keep-alive time-out, which closed the connection without a word.
            self._unset_keepalive_if_required()
        self._send_refusal_when_due()
        if self._eof and not self._answering() and not self.transport.is_closing():
            self._unset_keepalive_if_required()
            self.transport.close()

    def _start_asgi_task(self, cycle: RequestResponseCycle, app: Any) -> None:
        """Run ``cycle``'s request, unless it is refused before its app begins (a malformed
        chunk in the read that brought its head, or while it waited behind pipelined
        requests): its app never runs, so a route that reads no body does not act on a
        refused request (a decision logged for an answer dropped).
        """
        if cycle.disconnected:
            return

        async def unless_refused(scope: Any, receive: Any, send: Any) -> None:
            if not cycle.disconnected:
                await app(scope, receive, send)

        super()._start_asgi_task(cycle, unless_refused)

    def eof_received(self) -> bool:  # type: ignore[override]  # asyncio's is bool | None
        """The client half-closed (it sent all it will): the requests that came are answered,
        then the connection closes (asyncio closed the transport at once, so a client that
        shut its sending side after its requests got no answer, while they ran: found by
        attack). A request whose body had not all come is the client's loss (its app sees a
        disconnect, 499).
        """
        self._eof = True
        # (Not after a refusal: the refused request has no cycle of its own, or _refuse
        # marked it; marking the previous request lost it and held the connection, found by
        # attack.)
        if (not self._refused and self._phase == _BODY and self.cycle is not None
                and not self.cycle.response_complete):
            self.cycle.disconnected = True
            self.cycle.message_event.set()
        self._cancel_deadline()
        if self._answering() or self._deferred_refusal is not None:
            return True  # keep the transport to write the answers
        self._unset_keepalive_if_required()
        return False

    def shutdown(self) -> None:
        """The graceful stop (uvicorn's): a connection that answers nothing more (idle, or only
        refused requests left) closes now; one answering closes after its answers. uvicorn
        looked only at the newest request, so a connection whose newest was refused was
        kept, and the stop waited for it for good.
        """
        if not self._answering() and self._deferred_refusal is None:
            self.transport.close()
        else:
            super().shutdown()

    def _answering(self) -> bool:
        """Whether a request of the connection awaits its answer (refused ones do not).

        The answered ones leave from the left first (answers complete in order), so the
        first left is the one being answered: the look stops there.
        """
        cycles = self._cycles
        while cycles and cycles[0].response_complete:
            cycles.popleft()
        return any(not cycle.disconnected for cycle in cycles)

    def _send_refusal_when_due(self) -> None:
        # Only the live requests before the refused one are waited for (its own cycle, if it
        # has one, is marked disconnected).
        if self._deferred_refusal is None or self.transport.is_closing() or self._answering():
            return
        self._unset_keepalive_if_required()
        self.transport.write(self._deferred_refusal)
        self._deferred_refusal = None
        self.transport.close()


class WorkerDeaths(logging.Filter):
    """Pass uvicorn's records at ``level`` and above, and its supervisor's "Child process [pid]
    died" raised to a warning: uvicorn says a worker's death at info, below the service's
    default level, so a worker killed again and again went unseen (found by attack).
    """

    def __init__(self, level: int) -> None:
        super().__init__()
        self.level = level

    def filter(self, record: logging.LogRecord) -> bool:
        """Whether to emit ``record`` (a death raised to WARNING on the way, at any level)."""
        if (record.levelno < logging.WARNING and record.module == "multiprocess"
                and record.getMessage().endswith(" died")):
            record.levelno, record.levelname = logging.WARNING, "WARNING"
            return True
        return record.levelno >= self.level


def log_config(level: str) -> dict[str, Any]:
    """The logging configuration of uvicorn at ``level`` (a name of ``uvicorn.config.LOG_LEVELS``):
    its error logger set to info at least, its records filtered by :class:`WorkerDeaths` on the
    handler they reach (a handler is built anew by each configuration, where a logger's filters
    would pile up when one process configures logging twice, as tests do); the ``serving``
    loggers at ``level`` through the same handler.
    """
    threshold = LOG_LEVELS[level]
    config = copy.deepcopy(LOGGING_CONFIG)
    config["filters"] = {"worker_deaths": {"()": WorkerDeaths, "level": threshold}}
    config["handlers"]["default"]["filters"] = ["worker_deaths"]
    loggers = config["loggers"]
    loggers["uvicorn.error"] = {**loggers.get("uvicorn.error", {}),
                                "level": min(threshold, logging.INFO)}
    for name in ("uvicorn.access", "uvicorn.asgi"):
        loggers[name] = {**loggers.get(name, {}), "level": threshold}
    # The service's own records at the same level, through the same handler: a spawned worker
    # has no other (found by attack: with the level at info, no worker said "now serving arms
    # of policy version N"; only warnings reached stderr, through logging's last resort).
    loggers["serving"] = {"handlers": ["default"], "level": threshold, "propagate": False}
    return config


def uvicorn_options(settings: Settings) -> dict[str, Any]:
    """Keyword arguments of ``uvicorn.run`` for the server limits in ``settings``.

    The guarded httptools protocol (see the module doc), uvicorn's keep-alive time-out, the
    workers' health-check time-out and :func:`log_config` (``log_level`` None: its levels are
    in there); ``limit_concurrency`` stays off (the protocol counts requests in flight
    instead).
    """
    return {
        "http": functools.partial(GuardedHttpToolsProtocol,
                                  limits=ConnectionLimits.from_settings(settings)),
        "timeout_keep_alive": settings.keep_alive_timeout_s,
        "timeout_worker_healthcheck": settings.worker_healthcheck_timeout_s,
        "log_config": log_config(settings.log_level),
        "log_level": None,
    }
