"""Audit log: one JSON line per admission request, written before the answer (SPEC §5, §8).

Records carry facts (digests, per-authority outcomes, scan IDs) so that
``sealgate replay`` can re-decide them; never keys, tokens or certificates.
"""

from __future__ import annotations

import datetime as dt
import json
import sys
import threading
from pathlib import Path
from typing import IO, Any

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
        }
    return {
        "ref": entry.ref,
        "name": entry.name,
        "digest": entry.digest,
        "policy": entry.policy,
        "rule": entry.rule,
        "mode": entry.mode,
        "signatures": dict(entry.signatures),
        "signature_reasons": dict(entry.signature_reasons),
        "scan": scan,
        "violations": list(entry.violations),
        "cached": entry.cached,
    }


class AuditWriter:
    """Appends JSON lines to a file (or stdout); a failed write raises AuditWriteError."""

    def __init__(self, path: Path | None = None) -> None:
        self._path = path
        self._lock = threading.Lock()
        self._stream: IO[str] | None = None

    def open(self) -> None:
        if self._path is None:
            self._stream = sys.stdout
            return
        try:
            self._path.parent.mkdir(parents=True, exist_ok=True)
            self._stream = self._path.open("a", encoding="utf-8")
        except OSError as exc:
            raise AuditWriteError(f"cannot open audit log {self._path}: {exc}") from exc

    def write(self, record: dict[str, Any]) -> None:
        line = json.dumps(record, separators=(",", ":"), ensure_ascii=False) + "\n"
        with self._lock:
            if self._stream is None:
                self.open()
            assert self._stream is not None
            try:
                self._stream.write(line)
                self._stream.flush()
            except (OSError, ValueError) as exc:
                raise AuditWriteError(f"cannot write audit log: {exc}") from exc

    def close(self) -> None:
        with self._lock:
            if self._stream is not None and self._stream is not sys.stdout:
                self._stream.close()
            self._stream = None
