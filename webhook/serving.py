"""``sealgate serve``: uvicorn over TLS, one process or N workers on one port (SPEC §9).

With ``--workers N`` (``SEALGATE_WORKERS``) uvicorn's supervisor binds the port once
and starts N worker processes that accept on it. Each worker builds its own app from
the environment (``worker_app``), hot-reloads policies and the serving certificate,
and appends audit lines with one ``O_APPEND`` write each under its own chain id.
Counters go to prometheus-client's multiprocess files, so ``/metrics`` from any
worker is the sum. SIGTERM drains every worker; SIGHUP is passed on to every worker
(policy reload, audit log reopen) instead of uvicorn's restart of the workers.
"""

from __future__ import annotations

import asyncio
import logging
import os
import shutil
import signal
import socket
import ssl
import sys
import tempfile
import time
from collections.abc import Callable
from types import FrameType
from typing import Any

import httptools
import uvicorn
from starlette.applications import Starlette
from uvicorn.protocols.http.httptools_impl import HttpToolsProtocol
from uvicorn.supervisors import Multiprocess, multiprocess

from webhook.metrics import MULTIPROCESS_ENV
from webhook.settings import Settings
from webhook.tls import CertificateReloader

log = logging.getLogger("sealgate")
LOG_LEVEL_ENV = "SEALGATE_LOG_LEVEL"


def configure_logging(level: str) -> None:
    logging.basicConfig(level=level.upper(), stream=sys.stderr,
                        format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    logging.getLogger("httpx").setLevel(logging.WARNING)  # one line per registry request
    # httpcore's debug lines carry raw response headers, and a registry may echo a
    # credential back in one (WWW-Authenticate error_description): never at any level
    logging.getLogger("httpcore").setLevel(logging.WARNING)


class SealgateConfig(uvicorn.Config):
    """uvicorn's Config, which also keeps the serving certificate current.

    ``load`` runs in the process that serves (each worker, with ``--workers``), after
    the SSLContext exists: the reloader swaps renewed certificates into it there.
    """

    def __init__(self, app: Any, *, reload_interval: float, max_header_bytes: int = 64 * 1024,
                 max_headers: int = 100, drain_timeout: float = 10.0,
                 read_timeout: float | None = None, **kwargs: Any) -> None:
        # request headers capped (431): httptools has no cap of its own (issue 11)
        super().__init__(app, http=BoundedHttpToolsProtocol, **kwargs)
        self.reload_interval = reload_interval
        self.max_header_bytes = max_header_bytes
        self.max_headers = max_headers
        self.drain_timeout = drain_timeout  # SIGTERM: how long requests in flight may take
        self.read_timeout = read_timeout  # a request still arriving after it: 408
        self.certificates: CertificateReloader | None = None

    def load(self) -> None:
        first = not self.loaded
        super().load()
        if first and self.ssl is not None:
            self.ssl.minimum_version = ssl.TLSVersion.TLSv1_2  # never 1.0/1.1 (SPEC §9)
        if first and self.ssl is not None and self.ssl_certfile and self.ssl_keyfile:
            from pathlib import Path

            self.certificates = CertificateReloader(
                self.ssl, Path(str(self.ssl_certfile)), Path(str(self.ssl_keyfile)),
                interval=self.reload_interval)
            self.certificates.start()

    def __getstate__(self) -> dict[str, Any]:
        state = dict(self.__dict__)
        state["certificates"] = None  # a thread stays in the process that started it
        return state


class Supervisor(Multiprocess):
    """uvicorn's worker supervisor, passing SIGHUP on to the workers.

    uvicorn restarts every worker on SIGHUP; sealgate's SIGHUP means "reload the
    policies and reopen the audit log" (log rotation), which each worker does itself.
    """

    def handle_hup(self) -> None:
        log.info("SIGHUP: passing it to %d workers", len(self.processes))
        for process in self.processes:
            if process.pid is not None:
                try:
                    os.kill(process.pid, signal.SIGHUP)
                except ProcessLookupError:
                    continue


def worker_app() -> Starlette:
    """The app of one worker process, from the environment ``serve`` prepared."""
    from webhook.app import create_app

    configure_logging(os.environ.get(LOG_LEVEL_ENV, "info"))
    app = create_app(Settings.from_env())
    _worker_apps.append(app)  # one per worker process: its DrainingServer marks it draining
    return app


_worker_apps: list[Starlette] = []


def _drain_worker_apps() -> None:
    for app in _worker_apps:
        app.state.draining = True


class DrainingProcess(multiprocess.Process):
    """uvicorn's worker process, running a DrainingServer (bounded drain on SIGTERM)."""

    @property
    def server(self) -> uvicorn.Server:
        if self._server is None:
            timeout = getattr(self.config, "drain_timeout", 10.0)
            self._server = DrainingServer(self.config, on_drain=_drain_worker_apps,
                                          drain_timeout=timeout)
        return self._server


def serve(settings: Settings, *, log_level: str) -> int:
    """Run the webhook until SIGTERM/SIGINT; the certificate pair must exist."""
    from webhook.app import create_app
    from webhook.reload import load_policies

    assert settings.cert is not None and settings.key is not None
    # Load once before binding (policies and the trust roots they name, as every reload
    # does): a missing or broken policy directory is a start-up error.
    from webhook.policy import PolicySet

    policies = (load_policies(settings.policies, generation=1)
                if settings.policy_source != "crd" else PolicySet((), 1))
    configure_logging(log_level)
    if settings.policy_source != "crd":
        log.info("loaded %d policies from %s", len(policies.policies), settings.policies)
    common: dict[str, Any] = {
        "host": settings.host, "port": settings.port, "ssl_certfile": str(settings.cert),
        "ssl_keyfile": str(settings.key), "log_level": log_level, "access_log": False,
        "lifespan": "on", "reload_interval": settings.reload_interval,
        "max_header_bytes": settings.max_header_bytes, "max_headers": settings.max_headers,
        "drain_timeout": settings.deadline + 2, "read_timeout": settings.deadline,
        # the API server calls the webhook directly: no X-Forwarded-For to honour, and one
        # middleware layer less on every request
        "proxy_headers": False,
    }
    if settings.workers == 1:
        app = create_app(settings, policies=policies)
        config = SealgateConfig(app, **common)
        try:
            # SIGTERM: /readyz not-ready at once, requests in flight answered and audited
            # (bounded by the deadline), idle keep-alive clients do not hold the exit
            DrainingServer(config, on_drain=lambda: setattr(app.state, "draining", True),
                           drain_timeout=config.drain_timeout).run()
        finally:
            if config.certificates is not None:
                config.certificates.stop()
        return 0
    return _serve_workers(settings, log_level, common)


def _serve_workers(settings: Settings, log_level: str, common: dict[str, Any]) -> int:
    # the workers read their settings from the environment: flags become variables
    for variable, value in (
        ("SEALGATE_HOST", settings.host), ("SEALGATE_PORT", settings.port),
        ("SEALGATE_POLICIES", settings.policies), ("SEALGATE_CERT", settings.cert),
        ("SEALGATE_KEY", settings.key), ("SEALGATE_AUDIT_LOG", settings.audit_log),
        (LOG_LEVEL_ENV, log_level), ("SEALGATE_POLICY_SOURCE", settings.policy_source),
        ("KUBECONFIG", settings.kubeconfig),
        ("SEALGATE_POD_PULL_SECRETS", "true" if settings.pod_pull_secrets else None),
    ):
        if value is not None:
            os.environ[variable] = str(value)
    owned_dir = None
    if not os.environ.get(MULTIPROCESS_ENV):
        owned_dir = tempfile.mkdtemp(prefix="sealgate-metrics-")
        os.environ[MULTIPROCESS_ENV] = owned_dir
    config = SealgateConfig("webhook.serving:worker_app", factory=True,
                            workers=settings.workers, **common)
    # uvicorn's supervisor builds its worker processes by this module-level name; ours
    # run a DrainingServer, as the single-process mode does (issue 11: SIGTERM exits even
    # with idle keep-alive clients, /readyz not-ready at once)
    multiprocess.Process = DrainingProcess  # type: ignore[misc]
    try:
        sock = config.bind_socket()
        log.info("serving on %s:%d with %d workers", settings.host, settings.port,
                 settings.workers)
        Supervisor(config, sockets=[sock]).run()
    finally:
        if owned_dir is not None:
            shutil.rmtree(owned_dir, ignore_errors=True)
    return 0


_408 = (
    b"HTTP/1.1 408 Request Timeout\r\n"
    b"content-type: text/plain; charset=utf-8\r\n"
    b"connection: close\r\n"
)
_431 = (
    b"HTTP/1.1 431 Request Header Fields Too Large\r\n"
    b"content-type: text/plain; charset=utf-8\r\n"
    b"connection: close\r\n"
)


class _TooManyHeaders(Exception):
    pass


class BoundedHttpToolsProtocol(HttpToolsProtocol):
    """uvicorn's httptools protocol with a cap on the bytes and lines of request headers
    (``max_header_bytes`` / ``max_headers`` of a SealgateConfig)."""

    def __init__(self, config: uvicorn.Config, *args: Any, **kwargs: Any) -> None:
        super().__init__(config, *args, **kwargs)
        self.max_header_bytes: int = getattr(config, "max_header_bytes", 64 * 1024)
        self.max_headers: int = getattr(config, "max_headers", 100)
        self._since: float | None = None  # first byte of the request being received
        self._in_headers = True
        self._header_bytes = 0
        self._header_lines = 0
        self._rejected = False

    def data_received(self, data: bytes) -> None:
        if self._rejected:
            return
        if self._since is None:
            self._since = time.monotonic()
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
                self._reject(_431, f"more than {self.max_headers} request header lines")
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
            self._reject(_431, f"request headers over {self.max_header_bytes} bytes")

    def expire(self, now: float, limit: float) -> None:
        """408 and close when a request (headers or body) is still arriving after ``limit``
        seconds: a client trickling it must not hold a connection and a task for ever.
        Checked by DrainingServer's tick, so the warm path sets no timer of its own."""
        if self._since is None or self._rejected or now - self._since <= limit:
            return
        if self.cycle is not None and self.cycle.response_started:
            return
        self._reject(_408, f"request not received within {limit:g}s")

    def _reject(self, head: bytes, why: str) -> None:
        self._rejected = True
        log.warning("closing a connection from %s: %s (HTTP %s)",
                    self.client[0] if self.client else "?", why, head[9:12].decode())
        body = why.encode()
        self.transport.write(head + b"content-length: %d\r\n\r\n" % len(body) + body)
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
        self._since = None


class DrainingServer(uvicorn.Server):
    """uvicorn's Server with a bounded drain on SIGTERM (SPEC §9 "Serving")."""

    def __init__(self, config: uvicorn.Config, *, on_drain: Callable[[], None],
                 drain_timeout: float) -> None:
        super().__init__(config)
        self._on_drain = on_drain
        self._drain_timeout = drain_timeout

    async def on_tick(self, counter: int) -> bool:
        if counter % 5 == 0:  # every 0.5 s
            limit = getattr(self.config, "read_timeout", None)
            if limit is not None:
                now = time.monotonic()
                for connection in list(self.server_state.connections):
                    if isinstance(connection, BoundedHttpToolsProtocol):
                        connection.expire(now, limit)
        return await super().on_tick(counter)

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
