"""Reading the audit log back (``audit report``, ``replay``): the lines ``audit.audit_record``
writes, one JSON object per line (SPEC §5, §8). Malformed lines are skipped and named."""

from __future__ import annotations

import datetime as dt
import json
import sys
from collections.abc import Iterator, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any, TextIO

from webhook.errors import SealgateError


class AuditLogError(SealgateError):
    """The audit log cannot be read at all (missing file, not text)."""


@dataclass(frozen=True, slots=True)
class AuditLine:
    """One audit record with its line number and parsed time."""

    line: int
    time: dt.datetime
    record: Mapping[str, Any]

    @property
    def namespace(self) -> str | None:
        value = self.record.get("namespace")
        return value if isinstance(value, str) and value else None

    @property
    def images(self) -> list[Mapping[str, Any]]:
        return [i for i in self.record.get("images") or () if isinstance(i, dict)]

    def text(self, key: str) -> str:
        value = self.record.get(key)
        return value if isinstance(value, str) else ""

    @property
    def object_name(self) -> str:
        return f"{self.text('kind') or '?'}/{self.text('name') or '?'}"

    @property
    def time_text(self) -> str:
        return self.text("time")


@dataclass(frozen=True, slots=True)
class Skipped:
    line: int
    reason: str


def parse_time(value: object) -> dt.datetime | None:
    if not isinstance(value, str):
        return None
    try:
        parsed = dt.datetime.fromisoformat(value.replace("Z", "+00:00"))
    except ValueError:
        return None
    return parsed if parsed.tzinfo else parsed.replace(tzinfo=dt.UTC)


def read_lines(stream: TextIO) -> Iterator[AuditLine | Skipped]:
    """Records in order; blank lines are ignored, anything else unusable is ``Skipped``."""
    for number, raw in enumerate(stream, start=1):
        text = raw.strip()
        if not text:
            continue
        try:
            record = json.loads(text)
        except json.JSONDecodeError as exc:
            yield Skipped(number, f"not JSON: {exc.msg} (column {exc.colno})")
            continue
        except RecursionError:
            yield Skipped(number, "not JSON: nested too deeply")
            continue
        if not isinstance(record, dict):
            yield Skipped(number, "not a JSON object")
            continue
        time = parse_time(record.get("time"))
        if time is None:
            yield Skipped(number, "no valid time")
            continue
        if not isinstance(record.get("decision"), str):
            yield Skipped(number, "no decision")
            continue
        if not isinstance(record.get("images", []), list):
            yield Skipped(number, "images is not a list")
            continue
        yield AuditLine(number, time, record)


def read_audit_log(path: Path | str) -> tuple[list[AuditLine], list[Skipped]]:
    """Every record of ``path`` (``-``: stdin), and the lines that had to be skipped."""
    lines: list[AuditLine] = []
    skipped: list[Skipped] = []

    def collect(stream: TextIO) -> None:
        for item in read_lines(stream):
            if isinstance(item, AuditLine):
                lines.append(item)
            else:
                skipped.append(item)

    if str(path) == "-":
        collect(sys.stdin)
        return lines, skipped
    try:
        # a torn or foreign line must not hide the rest of the log
        with open(path, encoding="utf-8", errors="replace") as stream:
            collect(stream)
    except OSError as exc:
        raise AuditLogError(f"{path}: cannot read audit log: {exc}") from exc
    return lines, skipped
