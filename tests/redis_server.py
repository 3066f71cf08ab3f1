"""A real Valkey/Redis for tests: Debian's ``redis-server`` on a free loopback port.

No persistence, no config file: ``--save ""``, data in memory only. ``kill()`` ends
it the hard way (SIGKILL), as a crashed cache node would go.
"""

from __future__ import annotations

import socket
import subprocess
import tempfile
import time
from pathlib import Path
from typing import TYPE_CHECKING

from tests.system import find_or_install, find_tool, free_port

if TYPE_CHECKING:
    import trustme

MISSING_MESSAGE = "needs Debian's redis-server: apt-get install -y redis-server"
_DEFAULT_BINARY = "/usr/bin/redis-server"
_START_TIMEOUT = 10.0


def find_redis_binary() -> str | None:
    return find_tool("redis-server")


def find_or_install_redis_binary() -> str | None:
    """``redis-server``, installing Debian's package first when running as root."""
    return find_or_install("redis-server", "redis-server")


class RedisServer:
    """``redis-server`` on ``127.0.0.1:<free port>``, in-memory, started and stopped by tests.

    ``tls``: serve TLS only, with a certificate from this ``trustme.CA`` (clients name the
    CA file in the URL, ``?ssl_ca_certs=``); ``password``: ``requirepass``.
    """

    def __init__(self, binary: str, *, tls: trustme.CA | None = None,
                 password: str | None = None) -> None:
        self.binary = binary
        self.tls = tls
        self.password = password
        self.port = 0
        self._process: subprocess.Popen[bytes] | None = None
        self._tmp: tempfile.TemporaryDirectory[str] | None = None

    @property
    def url(self) -> str:
        auth = f":{self.password}@" if self.password else ""
        if self.tls is None:
            return f"redis://{auth}127.0.0.1:{self.port}/0"
        return f"rediss://{auth}127.0.0.1:{self.port}/0?ssl_ca_certs={self.ca_file}"

    @property
    def ca_file(self) -> Path:
        assert self._tmp is not None
        return Path(self._tmp.name) / "ca.pem"

    def _options(self) -> list[str]:
        options = []
        if self.password:
            options += ["--requirepass", self.password]
        if self.tls is not None:
            root = Path(self._tmp.name)  # type: ignore[union-attr]
            cert = self.tls.issue_cert("127.0.0.1")
            cert.cert_chain_pems[0].write_to_path(str(root / "tls.crt"))
            cert.private_key_pem.write_to_path(str(root / "tls.key"))
            self.tls.cert_pem.write_to_path(str(self.ca_file))
            options += ["--port", "0", "--tls-port", str(self.port),
                        "--tls-cert-file", str(root / "tls.crt"),
                        "--tls-key-file", str(root / "tls.key"),
                        "--tls-ca-cert-file", str(self.ca_file), "--tls-auth-clients", "no"]
        else:
            options += ["--port", str(self.port)]
        return options

    def __enter__(self) -> RedisServer:
        self.start()
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.stop()

    def start(self) -> None:
        """Start (or restart, on the same port) the server."""
        if self._tmp is None:
            self._tmp = tempfile.TemporaryDirectory(prefix="sealgate-redis-")
        for _attempt in range(3):  # a free port can be taken between probe and bind
            self.port = self.port or free_port()
            self._process = subprocess.Popen(
                [self.binary, *self._options(), "--bind", "127.0.0.1",
                 "--save", "", "--appendonly", "no", "--dir", self._tmp.name,
                 "--protected-mode", "no", "--loglevel", "warning"],
                stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
            )
            deadline = time.monotonic() + _START_TIMEOUT
            while time.monotonic() < deadline and self._process.poll() is None:
                if self._ping():
                    return
                time.sleep(0.02)
            self.kill()
            self.port = 0
        raise RuntimeError("redis-server did not start")

    def _ping(self) -> bool:
        if self.tls is not None or self.password:
            import redis

            try:
                with redis.Redis.from_url(self.url, socket_timeout=0.5) as client:
                    return bool(client.ping())
            except (redis.RedisError, OSError):
                return False
        try:
            with socket.create_connection(("127.0.0.1", self.port), timeout=0.5) as sock:
                sock.sendall(b"PING\r\n")
                return sock.recv(16).startswith(b"+PONG")
        except OSError:
            return False

    def kill(self) -> None:
        process, self._process = self._process, None
        if process is not None:
            process.kill()
            process.wait(timeout=10)

    def stop(self) -> None:
        self.kill()
        if self._tmp is not None:
            self._tmp.cleanup()
            self._tmp = None
