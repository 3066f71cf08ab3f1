"""Audit log: one JSON line per admission request, written before the answer (SPEC §5, §8, §9).

Records carry facts (digests, per-authority outcomes, scan IDs) so that
``sealgate replay`` can re-decide them; never keys, tokens or certificates.
Every line is a link of a hash chain (SPEC §9 "Tamper-evident audit log"):
``chain`` (random per writer), ``seq`` and ``prev`` (SHA-256, or HMAC-SHA256 with
``SEALGATE_AUDIT_KEY``, of the previous line of the chain as written);
``sealgate audit verify`` checks them (``webhook.auditchain``).
"""

from __future__ import annotations

import asyncio
import collections
import contextlib
import datetime as dt
import json
import logging
import os
import secrets
import select
import stat
import sys
import threading
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import orjson
from cachetools import LRUCache

from webhook.admission import AdmissionRequest
from webhook.auditchain import GENESIS, link
from webhook.decision import Decision, ImageEntry
from webhook.errors import AuditWriteError

log = logging.getLogger("sealgate")


class DecisionJSON:
    """The decision's fields of audit lines (``decision`` … ``break_glass``, with the
    per-image facts), encoded once per decision object.

    A decision reused from the warm path (``review.DecisionMemo``) is the same object
    request after request, and these fields are the bulk of its line. Bounded; one per
    app, used on its event loop only.
    """

    def __init__(self, maxsize: int = 4096) -> None:
        self._encoded: LRUCache[int, tuple[Decision, bytes]] = LRUCache(maxsize)

    def __call__(self, decision: Decision) -> bytes:
        found = self._encoded.get(id(decision))
        if found is not None and found[0] is decision:
            return found[1]
        encoded = encode_record(_decision_fields(decision))[1:-1]  # without the braces
        self._encoded[id(decision)] = (decision, encoded)
        return encoded


def _request_fields(request: AdmissionRequest, now: dt.datetime,
                    latency_ms: float) -> dict[str, Any]:
    return {
        "time": now.astimezone(dt.UTC).isoformat(timespec="milliseconds").replace("+00:00", "Z"),
        "uid": request.uid,
        "namespace": request.namespace,
        "kind": request.kind,
        "name": request.name,
        "operation": request.operation,
        "sub_resource": request.sub_resource,
        "user": request.user,
        "dry_run": request.dry_run,
        "latency_ms": round(latency_ms, 3),
        # every image the request asked about, also when no policy applied (for replay)
        "checked_images": list(request.images),
    }


def _decision_fields(decision: Decision) -> dict[str, Any]:
    return {
        "decision": decision.decision,
        "reason": decision.reason,
        "message": decision.message or None,
        "warnings": list(decision.warnings),
        "enforced_by": list(decision.enforced_by),
        "images": [_image(entry) for entry in decision.entries],
        "break_glass": (
            {"reason": decision.break_glass.reason, "user": decision.break_glass.user}
            if decision.break_glass is not None
            else None
        ),
    }


def audit_line(request: AdmissionRequest, decision: Decision, *, now: dt.datetime,
               latency_ms: float, decisions: DecisionJSON) -> bytes:
    """The record ``audit_record`` builds, encoded (no newline, no chain links yet)."""
    head = encode_record(_request_fields(request, now, latency_ms))
    return head[:-1] + b"," + decisions(decision) + b"}"


def audit_record(
    request: AdmissionRequest, decision: Decision, *, now: dt.datetime, latency_ms: float
) -> dict[str, Any]:
    """One admission's audit record (SPEC §5, §8); ``audit_line`` is the same, encoded."""
    return {**_request_fields(request, now, latency_ms), **_decision_fields(decision)}


def _image(entry: ImageEntry) -> dict[str, Any]:
    scan = None
    if entry.scan is not None:
        scan = {
            "source": entry.scan.source,
            "scanned_at": entry.scan.scanned_at.astimezone(dt.UTC).isoformat(),
            "ids": {k: list(v) for k, v in entry.scan.ids.items() if v},
            "counts": dict(entry.scan.counts),
            "attestor": entry.scan.attestor,
        }
    record = {
        "ref": entry.ref,
        "name": entry.name,
        "digest": entry.digest,
        "policy": entry.policy,
        "rule": entry.rule,
        "mode": entry.mode,
        "signatures": dict(entry.signatures),
        "signature_reasons": dict(entry.signature_reasons),
        "signature_keys": dict(entry.signature_keys),
        "scan": scan,
        "violations": list(entry.violations),
        "violation_levels": list(entry.violation_levels),
        "cached": entry.cached,
    }
    if entry.credential is not None:
        # secret/NAMESPACE/NAME, config or anonymous: never the credentials themselves
        record["credential"] = entry.credential
    return record


def encode_record(record: dict[str, Any] | list[Any]) -> bytes:
    """One record as compact UTF-8 JSON (no newline).

    orjson refuses lone UTF-16 surrogates (which no UTF-8 file can hold); the standard
    library then writes them as ``\\udXXX`` escapes, so such a record is still logged.
    """
    try:
        return orjson.dumps(record)
    except TypeError:
        return json.dumps(record, separators=(",", ":"), ensure_ascii=True).encode()


@dataclass(slots=True)
class _Pending:
    """A chained line waiting for the sink to take it (a full pipe)."""

    data: memoryview
    done: asyncio.Future[None]
    seq: int  # chain state before this line, restored if it is never written
    prev: str


class AuditWriter:
    """Appends chained JSON lines to a file (or stdout); a failed write raises AuditWriteError.

    Each line goes out with one unbuffered ``os.write`` on an ``O_APPEND``
    descriptor: nothing is left in a buffer after a failure (a half-written record
    is never glued to the next one), and workers, replicas or rotations appending to
    the same file don't interleave within a line.

    ``append`` writes on the event loop: to a regular file that costs microseconds.
    A pipe (stdout to a log collector) is opened non-blocking: when it is full, the
    line waits in order for the pipe to drain and only its own request waits with it.
    Where a private non-blocking descriptor cannot be had, writes go to a thread.
    """

    def __init__(self, path: Path | None = None, *, key: bytes | None = None,
                 chain: str | None = None,
                 on_write: Callable[[str, int], None] | None = None) -> None:
        self._path = path
        self._key = key
        self.chain = chain or secrets.token_hex(8)
        self._on_write = on_write
        self._lock = threading.Lock()  # the thread path and reopen
        self._fd: int | None = None
        self._blocking = False  # writes may block: done in a worker thread
        self._seq = 0  # seq of the next line
        self._prev = GENESIS
        self._queue: collections.deque[_Pending] = collections.deque()
        self._drainer: asyncio.Task[None] | None = None

    @property
    def last_seq(self) -> int:
        """seq of the last line written (-1 before the first)."""
        return self._seq - 1

    @property
    def head(self) -> tuple[str, int, str]:
        """(chain, last seq, link to the last line): logged so a cut log shows against it."""
        return self.chain, self._seq - 1, self._prev

    def open(self) -> None:
        try:
            self._fd, self._blocking = self._open()
        except OSError as exc:
            raise AuditWriteError(f"cannot open audit log {self._path or 'stdout'}: {exc}") \
                from exc

    def _open(self) -> tuple[int, bool]:
        if self._path is None:
            # A descriptor of our own for stdout, so O_NONBLOCK does not leak into the
            # file description other processes share (a pipe re-opened through /proc
            # is a new description of the same pipe).
            try:
                fd = os.open("/proc/self/fd/1", os.O_WRONLY | os.O_APPEND | os.O_NONBLOCK)
            except OSError:
                return os.dup(sys.stdout.fileno()), True
            return fd, False
        self._path.parent.mkdir(parents=True, exist_ok=True)
        fd = os.open(self._path, os.O_WRONLY | os.O_APPEND | os.O_CREAT | os.O_NONBLOCK, 0o640)
        mode = os.fstat(fd).st_mode
        return fd, not (stat.S_ISREG(mode) or stat.S_ISFIFO(mode) or stat.S_ISCHR(mode))

    def reopen(self) -> None:
        """Open the path anew (log rotation, on SIGHUP); the chain continues."""
        if self._path is None:
            return
        with self._lock:
            old = self._fd
            try:
                self._fd, self._blocking = self._open()
            except OSError as exc:
                log.error("cannot reopen audit log %s, keeping the old file: %s",
                          self._path, exc)
                return
            if old is not None:
                with contextlib.suppress(OSError):
                    os.close(old)
        log.info("reopened audit log %s (chain %s continues at seq %d)",
                 self._path, self.chain, self._seq)

    def _chained(self, record: dict[str, Any] | bytes) -> bytes:
        """The record (or its encoded line) as its line of the chain (with newline);
        advances the chain."""
        body = record if isinstance(record, bytes) else encode_record(record)
        links = self._links()[1:]
        body = b"{" + links if body == b"{}" else body[:-1] + b"," + links
        self._prev = link(body, self._key)
        self._seq += 1
        return body + b"\n"

    def _links(self) -> bytes:
        return b'{"chain":"%s","seq":%d,"prev":"%s"}' % (
            self.chain.encode(), self._seq, self._prev.encode())

    def _written(self) -> None:
        if self._on_write is not None:
            self._on_write(self.chain, self._seq - 1)

    async def append(self, record: dict[str, Any] | bytes) -> None:
        """Write ``record`` as the next line; returns once the sink has all of it."""
        if self._fd is None:
            self.open()
        if self._blocking:
            await asyncio.to_thread(self.write, record)
            return
        seq, prev = self._seq, self._prev
        line = self._chained(record)
        written = 0
        if not self._queue:
            try:
                written = os.write(self._fd, line)  # type: ignore[arg-type]
            except BlockingIOError:
                written = 0
            except OSError as exc:
                self._seq, self._prev = seq, prev  # nothing written: the chain has no gap
                raise AuditWriteError(f"cannot write audit log: {exc}") from exc
            if written == len(line):
                self._written()
                return
        done: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        self._queue.append(_Pending(memoryview(line)[written:], done, seq, prev))
        if self._drainer is None or self._drainer.done():
            self._drainer = asyncio.create_task(self._drain(), name="sealgate-audit-drain")
        # shielded: a client that hangs up does not take its line out of the chain
        await asyncio.shield(done)

    async def _drain(self) -> None:
        loop = asyncio.get_running_loop()
        while self._queue:
            pending = self._queue[0]
            fd = self._fd if self._fd is not None else -1
            try:
                written = os.write(fd, pending.data)
            except BlockingIOError:
                ready: asyncio.Future[None] = loop.create_future()

                def wake(ready: asyncio.Future[None] = ready) -> None:
                    if not ready.done():
                        ready.set_result(None)

                loop.add_writer(fd, wake)
                try:
                    await ready
                finally:
                    loop.remove_writer(fd)
                continue
            except OSError as exc:
                # this line and every line chained after it fail (HTTP 500); the chain
                # resumes from the last line that was written
                self._seq, self._prev = pending.seq, pending.prev
                error = AuditWriteError(f"cannot write audit log: {exc}")
                while self._queue:
                    failed = self._queue.popleft()
                    if not failed.done.done():
                        failed.done.set_exception(error)
                return
            if written < len(pending.data):
                pending.data = pending.data[written:]
                continue
            self._queue.popleft()
            self._written_at(pending)

    def _written_at(self, pending: _Pending) -> None:
        if not pending.done.done():
            pending.done.set_result(None)
        if self._on_write is not None:
            self._on_write(self.chain, pending.seq)

    def write(self, record: dict[str, Any] | bytes) -> None:
        """Blocking write of the next line (a sink that can block, or outside an event loop)."""
        with self._lock:
            if self._fd is None:
                self.open()
            assert self._fd is not None
            seq, prev = self._seq, self._prev
            line = self._chained(record)
            view = memoryview(line)
            try:
                while view:
                    try:
                        written = os.write(self._fd, view)
                    except BlockingIOError:
                        select.select([], [self._fd], [], 1.0)
                        continue
                    view = view[written:]
            except OSError as exc:
                if len(view) == len(line):
                    self._seq, self._prev = seq, prev  # nothing written: no gap
                raise AuditWriteError(f"cannot write audit log: {exc}") from exc
            self._written()

    def close(self) -> None:
        with self._lock:
            if self._fd is not None:
                with contextlib.suppress(OSError):
                    os.close(self._fd)
            self._fd = None
