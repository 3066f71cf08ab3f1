"""The audit log's hash chains, and ``sealgate audit verify`` (SPEC §9 "Tamper-evident audit log").

Every line carries ``chain`` (a random id per writer: a worker, a replica, a
restart), ``seq`` (0, 1, 2, … within the chain) and ``prev``: the hex SHA-256 of
the previous line of the same chain exactly as written, without its newline (64
zeros for seq 0), or HMAC-SHA256 under ``SEALGATE_AUDIT_KEY`` so that someone who
can edit the file but cannot read the key cannot rebuild the chain.

Chains may interleave in one file and continue across rotated files: ``verify``
reads the files in the order given (oldest first) and follows each chain.
"""

from __future__ import annotations

import hashlib
import hmac
import json
from collections.abc import Iterable
from dataclasses import dataclass, field
from pathlib import Path

from webhook.errors import SealgateError

GENESIS = "0" * 64


class AuditKeyError(SealgateError):
    """The audit key file cannot be read or is empty."""


def read_key(path: Path) -> bytes:
    """The secret in ``path``, without surrounding whitespace (a trailing newline)."""
    try:
        key = path.read_bytes().strip()
    except OSError as exc:
        raise AuditKeyError(f"{path}: cannot read the audit key: {exc}") from exc
    if not key:
        raise AuditKeyError(f"{path}: the audit key file is empty")
    return key


def link(line: bytes, key: bytes | None = None) -> str:
    """What the next line's ``prev`` must be, for ``line`` as written (no newline)."""
    if key is None:
        return hashlib.sha256(line).hexdigest()
    return hmac.new(key, line, hashlib.sha256).hexdigest()


@dataclass(slots=True)
class ChainReport:
    """What ``verify`` found for one chain."""

    chain: str
    first_seq: int
    last_seq: int = -1
    lines: int = 0
    problem: str | None = None  # the first one, with file:line
    _last_link: str = field(default=GENESIS, repr=False)
    _last_where: str = field(default="", repr=False)

    @property
    def intact(self) -> bool:
        return self.problem is None


@dataclass(slots=True)
class VerifyResult:
    chains: list[ChainReport]
    unchained: list[str]  # file:line of lines that belong to no chain (not JSON, no links)

    @property
    def intact(self) -> bool:
        return not self.unchained and all(chain.intact for chain in self.chains)


def _links(raw: bytes) -> tuple[str, int, str] | None:
    try:
        record = json.loads(raw)
    except (ValueError, RecursionError):
        return None
    if not isinstance(record, dict):
        return None
    chain, seq, prev = record.get("chain"), record.get("seq"), record.get("prev")
    if not isinstance(chain, str) or not chain or isinstance(seq, bool) \
            or not isinstance(seq, int) or seq < 0 or not isinstance(prev, str):
        return None
    return chain, seq, prev


def verify_lines(lines: Iterable[tuple[str, bytes]], key: bytes | None = None) -> VerifyResult:
    """Check every chain in ``lines`` ((``file:line``, raw line without newline), in order)."""
    chains: dict[str, ChainReport] = {}
    unchained: list[str] = []
    for where, raw in lines:
        if not raw.strip():
            continue
        links = _links(raw)
        if links is None:
            unchained.append(f"{where}: not an audit line of any chain (edited or torn)")
            continue
        chain_id, seq, prev = links
        report = chains.get(chain_id)
        if report is None:
            report = chains[chain_id] = ChainReport(chain_id, first_seq=seq)
            if seq != 0:
                report.problem = (f"{where}: chain {chain_id} begins at seq {seq}: lines "
                                  f"0-{seq - 1} are missing (give rotated files too, oldest "
                                  "first)")
            elif prev != GENESIS:
                report.problem = f"{where}: seq 0 of chain {chain_id} has a prev; edited"
        elif report.problem is None:
            expected = report.last_seq + 1
            if seq < expected:
                report.problem = (f"{where}: seq {seq} of chain {chain_id} after seq "
                                  f"{report.last_seq}: duplicated or reordered line")
            elif seq > expected:
                report.problem = (f"{where}: seq {seq} of chain {chain_id} follows seq "
                                  f"{report.last_seq}: "
                                  f"{'line' if seq == expected + 1 else 'lines'} "
                                  f"{expected}{'' if seq == expected + 1 else f'-{seq - 1}'}"
                                  " missing here (deleted or moved)")
            elif not hmac.compare_digest(prev, report._last_link):
                report.problem = (f"{report._last_where}: seq {report.last_seq} of chain "
                                  f"{chain_id} was edited (the next line, {where}, "
                                  "does not link to it)")
        report.last_seq = max(report.last_seq, seq)
        report.lines += 1
        report._last_link = link(raw, key)
        report._last_where = where
    return VerifyResult(list(chains.values()), unchained)


def read_log_lines(paths: Iterable[Path]) -> Iterable[tuple[str, bytes]]:
    """(``file:line``, line without its newline) for every line of ``paths``, in order.

    OSError propagates: an unreadable file is exit 2, not a verdict.
    """
    for path in paths:
        with path.open("rb") as stream:
            for number, raw in enumerate(stream, start=1):
                yield f"{path}:{number}", raw.rstrip(b"\n")


def render(result: VerifyResult) -> str:
    out = []
    for report in result.chains:
        status = "intact" if report.intact else f"BROKEN: {report.problem}"
        out.append(f"chain {report.chain}: seq {report.first_seq}-{report.last_seq}, "
                   f"{report.lines} lines, {status}")
    for where in result.unchained:
        out.append(f"BROKEN: {where}")
    if not result.chains and not result.unchained:
        out.append("no audit lines")
    return "\n".join(out)
