"""Audit log: one JSON line per admission request, written before the answer (SPEC §5, §8).

Records carry facts (digests, per-authority outcomes, scan IDs) so that
``sealgate replay`` can re-decide them; never keys, tokens or certificates.
"""

from __future__ import annotations

import contextlib
import datetime as dt
import json
import os
import sys
import threading
from pathlib import Path
from typing import Any

from webhook.admission import AdmissionRequest
from webhook.decision import Decision, ImageEntry
from webhook.errors import AuditWriteError


def audit_record(
    request: AdmissionRequest, decision: Decision, *, now: dt.datetime, latency_ms: float
) -> dict[str, Any]:
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
        "decision": decision.decision,
        "reason": decision.reason,
        "message": decision.message or None,
        "warnings": list(decision.warnings),
        "enforced_by": list(decision.enforced_by),
        "latency_ms": round(latency_ms, 3),
        "images": [_image(entry) for entry in decision.entries],
        # every image the request asked about, also when no policy applied (for replay)
        "checked_images": list(request.images),
        "break_glass": (
            {"reason": decision.break_glass.reason, "user": decision.break_glass.user}
            if decision.break_glass is not None
            else None
        ),
    }


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


class AuditWriter:
    """Appends JSON lines to a file (or stdout); a failed write raises AuditWriteError.

    Each line goes out with one unbuffered ``os.write`` on an ``O_APPEND``
    descriptor: nothing is left in a buffer after a failure (a half-written
    record is never glued to the next one), and replicas or rotations that
    append to the same file don't interleave within a line.
    """

    def __init__(self, path: Path | None = None) -> None:
        self._path = path
        self._lock = threading.Lock()
        self._fd: int | None = None

    def open(self) -> None:
        if self._path is None:
            self._fd = sys.stdout.fileno()
            return
        try:
            self._path.parent.mkdir(parents=True, exist_ok=True)
            self._fd = os.open(self._path, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o640)
        except OSError as exc:
            raise AuditWriteError(f"cannot open audit log {self._path}: {exc}") from exc

    def write(self, record: dict[str, Any]) -> None:
        line = (json.dumps(record, separators=(",", ":"), ensure_ascii=False) + "\n").encode()
        with self._lock:
            if self._fd is None:
                self.open()
            assert self._fd is not None
            view = memoryview(line)
            try:
                while view:
                    written = os.write(self._fd, view)
                    view = view[written:]
            except OSError as exc:
                raise AuditWriteError(f"cannot write audit log: {exc}") from exc

    def close(self) -> None:
        with self._lock:
            if self._fd is not None and self._path is not None:
                with contextlib.suppress(OSError):
                    os.close(self._fd)
            self._fd = None
