"""How ``sealgate serve`` runs uvicorn: capped request headers and a SIGTERM drain (SPEC §9).

Two defects found with hostile clients (issue 11) live here:

- Request headers were buffered without limit (httptools has no cap of its
  own): one connection could hold hundreds of MiB. ``bounded_httptools``
  answers 431 and closes once a request's headers pass
  ``max_header_bytes`` or ``max_headers`` lines.
- On SIGTERM, uvicorn waited for every connection to close, so an idle
  keep-alive client kept the process alive and stalled rolling restarts.
  ``DrainingServer`` turns ``/readyz`` not-ready at once, stops accepting,
  lets requests in flight finish (answered and audited) within a bound, then
  closes whatever connections are left and exits.
"""

from __future__ import annotations

import asyncio
import logging
import socket
from collections.abc import Callable
from types import FrameType
from typing import Any

import httptools
import uvicorn
from uvicorn.protocols.http.httptools_impl import HttpToolsProtocol

log = logging.getLogger("sealgate")

_431 = (
    b"HTTP/1.1 431 Request Header Fields Too Large\r\n"
    b"content-type: text/plain; charset=utf-8\r\n"
    b"connection: close\r\n"
)


class _TooManyHeaders(Exception):
    pass


class _BoundedHttpTools(HttpToolsProtocol):
    """uvicorn's httptools protocol with a cap on the bytes and lines of request headers."""

    max_header_bytes = 64 * 1024
    max_headers = 100

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self._in_headers = True
        self._header_bytes = 0
        self._header_lines = 0
        self._rejected = False

    def data_received(self, data: bytes) -> None:
        if self._rejected:
            return
        if self._in_headers:
            # Counted before parsing: httptools accumulates a header's value until it
            # ends, so one endless header line is stopped by what arrives, not what parsed.
            self._header_bytes += len(data)
        # uvicorn's data_received, with the header-line cap told apart from a parse error
        self._unset_keepalive_if_required()
        try:
            self.parser.feed_data(data)
        except httptools.HttpParserError as exc:
            if isinstance(exc.__context__, _TooManyHeaders):
                self._reject(f"more than {self.max_headers} request header lines")
                return
            self.logger.warning("Invalid HTTP request received.")
            self.send_400_response("Invalid HTTP request received.")
            return
        except httptools.HttpParserUpgrade:
            if self._should_upgrade():
                self.handle_websocket_upgrade()
            else:
                self._unsupported_upgrade_warning()
        if self._in_headers and self._header_bytes > self.max_header_bytes:
            self._reject(f"request headers over {self.max_header_bytes} bytes")

    def _reject(self, why: str) -> None:
        self._rejected = True
        log.warning("closing a connection from %s: %s (HTTP 431)",
                    self.client[0] if self.client else "?", why)
        body = why.encode()
        self.transport.write(_431 + b"content-length: %d\r\n\r\n" % len(body) + body)
        self.transport.close()
        # A TLS close waits for the peer's close_notify, reading (and decrypting) whatever
        # it still sends: give the answer a moment to leave, then drop the connection.
        self.loop.call_later(1.0, self.transport.abort)

    def on_message_begin(self) -> None:
        super().on_message_begin()
        self._in_headers = True
        self._header_lines = 0

    def on_header(self, name: bytes, value: bytes) -> None:
        self._header_lines += 1
        if self._header_lines > self.max_headers:
            raise _TooManyHeaders
        super().on_header(name, value)

    def on_headers_complete(self) -> None:
        self._in_headers = False
        self._header_bytes = 0
        super().on_headers_complete()

    def on_message_complete(self) -> None:
        super().on_message_complete()
        self._in_headers = True


def bounded_httptools(max_header_bytes: int, max_headers: int) -> type[HttpToolsProtocol]:
    """The protocol class for ``uvicorn.Config(http=...)`` with these caps."""
    return type("BoundedHttpToolsProtocol", (_BoundedHttpTools,),
                {"max_header_bytes": max_header_bytes, "max_headers": max_headers})


class DrainingServer(uvicorn.Server):
    """uvicorn's Server with a bounded drain on SIGTERM (SPEC §9 "Serving")."""

    def __init__(self, config: uvicorn.Config, *, on_drain: Callable[[], None],
                 drain_timeout: float) -> None:
        super().__init__(config)
        self._on_drain = on_drain
        self._drain_timeout = drain_timeout

    def handle_exit(self, sig: int, frame: FrameType | None) -> None:
        self._on_drain()  # /readyz says not-ready from this moment
        super().handle_exit(sig, frame)

    async def shutdown(self, sockets: list[socket.socket] | None = None) -> None:
        self._on_drain()
        log.info("draining: %d requests in flight, %d connections",
                 len(self.server_state.tasks), len(self.server_state.connections))
        for server in self.servers:
            server.close()
        for sock in sockets or []:
            sock.close()
        # Idle connections close now; busy ones after their answer (keep-alive off).
        for connection in list(self.server_state.connections):
            connection.shutdown()
        if self.server_state.tasks:
            await asyncio.wait(set(self.server_state.tasks), timeout=self._drain_timeout)
        if self.server_state.tasks:
            log.error("drain timeout: cancelling %d requests", len(self.server_state.tasks))
            for task in list(self.server_state.tasks):
                task.cancel(msg="sealgate drain timeout")
        # Answers written, give the transports a moment to flush; then a client that
        # never closes its end (an idle keep-alive peer ignoring TLS close_notify)
        # must not keep the process alive.
        loop = asyncio.get_running_loop()
        flush_until = loop.time() + 1.0
        # uvicorn keeps no event for "connection set empty": poll it, briefly
        while self.server_state.connections and loop.time() < flush_until:  # noqa: ASYNC110
            await asyncio.sleep(0.05)
        for connection in list(self.server_state.connections):
            transport = getattr(connection, "transport", None)
            if transport is not None:
                transport.abort()
        for server in self.servers:
            await server.wait_closed()
        if not self.force_exit:
            await self.lifespan.shutdown()
