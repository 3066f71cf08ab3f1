"""A lean HTTPS load generator for /validate: asyncio streams, HTTP/1.1 keep-alive.

Lean on purpose: a general HTTP client costs more CPU per request than the
webhook does on a warm path, and on a 2-core machine the generator must not be
the bottleneck. Each logical request carries its own uid; a request is retried
(same uid) only when the connection failed before any answer byte came back
(refused, reset during the handshake, or a keep-alive connection the server
had closed). Whether such a retry hid a request the server *did* decide shows
in the audit log as a uid written twice, which the tests look for.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import ssl
import time
import uuid
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any


@dataclass
class LoadResult:
    answers: dict[str, dict[str, Any]] = field(default_factory=dict)  # uid -> response
    latencies: list[float] = field(default_factory=list)
    retries: int = 0
    lost: list[str] = field(default_factory=list)  # uid: request sent, no answer ever
    statuses: dict[int, int] = field(default_factory=dict)


class _Connection:
    def __init__(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        self.reader = reader
        self.writer = writer
        self.reused = False

    async def close(self) -> None:
        # waited for: a transport left closing when the test's loop ends warns (unclosed)
        self.writer.close()
        with contextlib.suppress(Exception):
            await asyncio.wait_for(self.writer.wait_closed(), 1)


class _NoAnswer(Exception):
    """The connection ended before any byte of an answer."""


class _Partial(Exception):
    """The connection ended in the middle of an answer: lost."""


async def _connect(port: int, context: ssl.SSLContext) -> _Connection:
    reader, writer = await asyncio.open_connection(
        "127.0.0.1", port, ssl=context, server_hostname="localhost")
    return _Connection(reader, writer)


async def _exchange(connection: _Connection, body: bytes) -> tuple[int, bytes, bool]:
    """(status, body, keep_alive) of one POST /validate."""
    connection.writer.write(
        b"POST /validate HTTP/1.1\r\nHost: localhost\r\nContent-Type: application/json\r\n"
        b"Content-Length: %d\r\n\r\n" % len(body) + body)
    await connection.writer.drain()
    try:
        head = await connection.reader.readuntil(b"\r\n\r\n")
    except (asyncio.IncompleteReadError, ConnectionError, ssl.SSLError) as exc:
        if isinstance(exc, asyncio.IncompleteReadError) and exc.partial:
            raise _Partial from exc
        raise _NoAnswer from exc
    lines = head.decode("latin-1").split("\r\n")
    status = int(lines[0].split()[1])
    headers = {k.strip().lower(): v.strip() for k, _, v in
               (line.partition(":") for line in lines[1:] if line)}
    try:
        content = await connection.reader.readexactly(int(headers.get("content-length", "0")))
    except (asyncio.IncompleteReadError, ConnectionError, ssl.SSLError) as exc:
        raise _Partial from exc
    return status, content, headers.get("connection", "").lower() != "close"


async def run_load(port: int, context: ssl.SSLContext, *, requests: int, concurrency: int,
                   make_review: Callable[[str], dict[str, Any]],
                   on_progress: Callable[[int], None] | None = None,
                   retry_for: float = 20.0) -> LoadResult:
    """``requests`` reviews over ``concurrency`` keep-alive connections."""
    result = LoadResult()
    counter = iter(range(requests))
    done = 0

    async def worker() -> None:
        nonlocal done
        connection: _Connection | None = None
        for _ in counter:
            uid = str(uuid.uuid4())
            body = json.dumps(make_review(uid)).encode()
            give_up = time.monotonic() + retry_for
            started = time.perf_counter()
            while True:
                try:
                    if connection is None:
                        connection = await _connect(port, context)
                    status, content, keep_alive = await _exchange(connection, body)
                except (_NoAnswer, _Partial, ConnectionError, ssl.SSLError, OSError) as exc:
                    # refused / reset before anything was answered: retry with the same uid
                    if connection is not None:
                        await connection.close()
                    connection = None
                    if isinstance(exc, _Partial) or time.monotonic() > give_up:
                        result.lost.append(uid)
                        break
                    result.retries += 1
                    await asyncio.sleep(0.02)
                    continue
                result.latencies.append(time.perf_counter() - started)
                result.statuses[status] = result.statuses.get(status, 0) + 1
                if status == 200:
                    result.answers[uid] = json.loads(content)["response"]
                if not keep_alive:
                    await connection.close()
                    connection = None
                break
            done += 1
            if on_progress is not None:
                on_progress(done)
        if connection is not None:
            await connection.close()

    await asyncio.gather(*(worker() for _ in range(concurrency)))
    return result
