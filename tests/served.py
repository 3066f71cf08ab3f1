"""`sealgate serve` as a subprocess over real HTTPS, and a loopback registry that misbehaves.

``Served`` runs the real command (uvicorn, TLS from ``sealgate certs``) with the
environment a test gives it; ``FaultRegistry`` is a tiny threaded HTTP server
whose answers a test scripts (slow, hanging, trickling) where the real
``docker-registry`` cannot produce the fault.
"""

from __future__ import annotations

import contextlib
import http.server
import json
import os
import signal
import ssl
import subprocess
import sys
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import httpx

from tests.system import free_port
from webhook.certs import generate_certificates


def rss_bytes(pid: int) -> int:
    """Resident set size of a process (Linux /proc)."""
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) * 1024
    return 0


@dataclass
class Served:
    url: str
    port: int
    ca: Path
    audit_log: Path
    process: subprocess.Popen[bytes]
    output: Path  # everything the process printed (stdout + stderr)

    def context(self) -> ssl.SSLContext:
        return ssl.create_default_context(cafile=self.ca)

    def audit_lines(self) -> list[dict[str, Any]]:
        if not self.audit_log.exists():
            return []
        return [json.loads(line) for line in self.audit_log.read_text().splitlines()]

    def terminate(self, timeout: float = 15.0) -> int:
        """SIGTERM and wait; the exit code (the test fails on a hang via TimeoutExpired)."""
        if self.process.poll() is None:
            self.process.send_signal(signal.SIGTERM)
        return self.process.wait(timeout)

    def printed(self) -> str:
        return self.output.read_text(errors="replace")


def certificates(directory: Path) -> Path:
    if not (directory / "tls.crt").exists():
        generate_certificates(directory, service="sealgate", namespace="sealgate")
    return directory


def start_served(tmp_path: Path, policies: Path, env: dict[str, str] | None = None, *,
                 port: int | None = None, name: str = "serve", wait: bool = True,
                 args: tuple[str, ...] = ()) -> Served:
    certs = certificates(tmp_path / "certs")
    port = port or free_port()
    audit = Path(env.get("SEALGATE_AUDIT_LOG", "")) if env and env.get(
        "SEALGATE_AUDIT_LOG") else tmp_path / "audit.log"
    output = tmp_path / f"{name}.out"
    full_env = {
        **os.environ,
        "SEALGATE_HOST": "127.0.0.1", "SEALGATE_PORT": str(port),
        "SEALGATE_CERT": str(certs / "tls.crt"), "SEALGATE_KEY": str(certs / "tls.key"),
        "SEALGATE_AUDIT_LOG": str(audit), "SEALGATE_RELOAD_INTERVAL": "0",
        **(env or {}),
    }
    with output.open("wb") as sink:
        process = subprocess.Popen(
            [sys.executable, "-m", "webhook", "serve", "--policies", str(policies), *args],
            env=full_env, stdout=sink, stderr=subprocess.STDOUT,
        )
    served = Served(f"https://localhost:{port}", port, certs / "ca.crt", audit, process, output)
    if wait:
        wait_ready(served)
    return served


def wait_ready(served: Served, timeout: float = 20.0) -> None:
    wait_for_readyz(served.url, served.context(), served.process, served.printed,
                    timeout=timeout)


def wait_for_readyz(url: str, context: ssl.SSLContext, process: subprocess.Popen[bytes],
                    printed: Callable[[], str], *, timeout: float = 30.0) -> None:
    """Until ``url``/readyz answers 200; AssertionError with what the process printed when
    it exits first or is not ready in ``timeout`` seconds."""
    deadline = time.monotonic() + timeout
    while True:
        if process.poll() is not None:
            raise AssertionError(f"sealgate serve exited: {printed()}")
        try:
            if httpx.get(f"{url}/readyz", verify=context, timeout=1).status_code == 200:
                return
        except httpx.TransportError:
            pass
        if time.monotonic() > deadline:
            raise AssertionError(f"sealgate serve not ready in {timeout:g}s: {printed()}")
        time.sleep(0.05)


# --------------------------------------------------------------------------- fault registry

Handler = Callable[[http.server.BaseHTTPRequestHandler], None]


@dataclass
class FaultRegistry:
    """A loopback HTTP "registry" whose every GET runs ``behave(handler)``."""

    behave: Handler
    server: http.server.ThreadingHTTPServer = field(init=False)
    requests: int = 0

    def __post_init__(self) -> None:
        outer = self

        class _Handler(http.server.BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"

            def do_GET(self) -> None:
                outer.requests += 1
                with contextlib.suppress(BrokenPipeError, ConnectionResetError):
                    outer.behave(self)

            def log_message(self, format: str, *args: Any) -> None:
                pass

        self.server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), _Handler)
        self.server.daemon_threads = True
        threading.Thread(target=self.server.serve_forever, daemon=True).start()

    @property
    def host(self) -> str:
        return f"127.0.0.1:{self.server.server_address[1]}"

    def close(self) -> None:
        self.server.shutdown()
        self.server.server_close()


def answer(handler: http.server.BaseHTTPRequestHandler, status: int, body: bytes = b"",
           headers: dict[str, str] | None = None) -> None:
    handler.send_response(status)
    for name, value in (headers or {}).items():
        handler.send_header(name, value)
    handler.send_header("Content-Length", str(len(body)))
    handler.end_headers()
    handler.wfile.write(body)


def manifest_unknown_after(delay: float) -> Handler:
    def behave(handler: http.server.BaseHTTPRequestHandler) -> None:
        time.sleep(delay)
        answer(handler, 404, b'{"errors":[{"code":"MANIFEST_UNKNOWN"}]}',
               {"Content-Type": "application/json"})
    return behave
