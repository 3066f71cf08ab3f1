"""Scan reports -> raw vulnerability IDs per severity (pure parsing; SPEC §2 ``scan``, §8).

Sources: a cosign vulnerability attestation (predicate type
``https://cosign.sigstore.dev/attestation/vuln/v1``) whose ``scanner.result``
is a Trivy JSON report or a SARIF 2.1.0 log, and Harbor's vulnerability
report (see ``webhook.harbor``). IDs are kept as reported; ``ignore`` and
thresholds are applied at decision time.
"""

from __future__ import annotations

import datetime as dt
from collections.abc import Iterable, Mapping
from typing import Any, Protocol

from webhook.decision import ScanFact
from webhook.errors import SealgateError
from webhook.oci import COSIGN_VULN_PREDICATE
from webhook.policy import SEVERITIES

VULN_PREDICATE = COSIGN_VULN_PREDICATE


class ScanStatement(Protocol):
    """What a verified attestation offers the scan gate (signatures.bundle.VerifiedStatement)."""

    @property
    def predicate_type(self) -> str: ...
    @property
    def predicate(self) -> Mapping[str, Any]: ...
    @property
    def integrated_time(self) -> int | None: ...


class ScanReportError(SealgateError):
    """A scan report that cannot be read; the message names the field."""


def _collect(pairs: Iterable[tuple[str, str]]) -> dict[str, tuple[str, ...]]:
    found: dict[str, set[str]] = {severity: set() for severity in SEVERITIES}
    for vuln_id, severity in pairs:
        found[severity].add(vuln_id)
    return {severity: tuple(sorted(ids)) for severity, ids in found.items() if ids}


def _list(value: object, what: str) -> list[Any]:
    """A JSON list field that may be absent (null or missing means empty)."""
    if value is None:
        return []
    if not isinstance(value, list):
        raise ScanReportError(f"{what} must be a list")
    return value


def normalise_severity(value: object) -> str:
    text = str(value or "").strip().upper()
    if text in SEVERITIES:
        return text
    if text == "NEGLIGIBLE":  # Harbor / Clair
        return "LOW"
    return "UNKNOWN"


def ids_from_trivy(report: Mapping[str, Any]) -> dict[str, tuple[str, ...]]:
    """Trivy JSON (SchemaVersion 2): ``Results[].Vulnerabilities[]``; a missing list is clean."""
    results = report.get("Results")
    if results is None:
        return {}
    if not isinstance(results, list):
        raise ScanReportError("Trivy report: Results must be a list")
    pairs: list[tuple[str, str]] = []
    for index, result in enumerate(results):
        if not isinstance(result, dict):
            raise ScanReportError(f"Trivy report: Results[{index}] must be an object")
        vulns = _list(result.get("Vulnerabilities"),
                      f"Trivy report: Results[{index}].Vulnerabilities")
        for vuln in vulns:
            if not isinstance(vuln, dict) or not isinstance(vuln.get("VulnerabilityID"), str):
                raise ScanReportError(
                    f"Trivy report: Results[{index}] has a vulnerability without VulnerabilityID"
                )
            pairs.append((vuln["VulnerabilityID"], normalise_severity(vuln.get("Severity"))))
    return _collect(pairs)


def _sarif_severity(rule: Mapping[str, Any]) -> str:
    properties = rule.get("properties") or {}
    if not isinstance(properties, dict):
        raise ScanReportError("SARIF log: a rule's properties must be an object")
    for tag in _list(properties.get("tags"), "SARIF log: a rule's properties.tags"):
        if isinstance(tag, str) and tag.upper() in SEVERITIES:
            return tag.upper()
    score = properties.get("security-severity")
    try:
        value = float(score) if score is not None else None
    except (TypeError, ValueError):
        value = None
    if value is None:
        return "UNKNOWN"
    # CVSS v3 qualitative bands, as GitHub code scanning reads security-severity
    if value >= 9.0:
        return "CRITICAL"
    if value >= 7.0:
        return "HIGH"
    if value >= 4.0:
        return "MEDIUM"
    return "LOW" if value > 0 else "UNKNOWN"


def ids_from_sarif(log: Mapping[str, Any]) -> dict[str, tuple[str, ...]]:
    """SARIF 2.1.0: each result's ruleId, at its rule's severity (tags or security-severity).

    A run whose ``results`` are absent or null, or with an invocation that was not
    ``executionSuccessful``, is a scan that did not complete (SARIF 2.1.0 §3.14.23,
    §3.20.14): an error, never a clean report. Only ``results: []`` means nothing found.
    """
    runs = log.get("runs")
    if not isinstance(runs, list):
        raise ScanReportError("SARIF log: runs must be a list")
    if not runs:
        raise ScanReportError("SARIF log has no runs: nothing was scanned")
    pairs: list[tuple[str, str]] = []
    for run in runs:
        if not isinstance(run, dict):
            raise ScanReportError("SARIF log: each run must be an object")
        for invocation in _list(run.get("invocations"), "SARIF log: a run's invocations"):
            if isinstance(invocation, dict) and invocation.get("executionSuccessful") is False:
                raise ScanReportError("SARIF log: the scan did not complete "
                                      "(invocations.executionSuccessful is false)")
        results = run.get("results")
        if not isinstance(results, list):
            raise ScanReportError("SARIF log: a run has no results list (the scan produced "
                                  "no results; a clean scan has results: [])")
        tool = run.get("tool") or {}
        driver = (tool.get("driver") if isinstance(tool, dict) else None) or {}
        if not isinstance(driver, dict):
            raise ScanReportError("SARIF log: tool.driver must be an object")
        rules = {
            r["id"]: r for r in _list(driver.get("rules"), "SARIF log: tool.driver.rules")
            if isinstance(r, dict) and isinstance(r.get("id"), str)
        }
        for result in results:
            rule_id = result.get("ruleId") if isinstance(result, dict) else None
            if not isinstance(rule_id, str):
                raise ScanReportError("SARIF log: a result has no ruleId")
            pairs.append((rule_id, _sarif_severity(rules.get(rule_id, {}))))
    return _collect(pairs)


def ids_from_report(result: object) -> dict[str, tuple[str, ...]]:
    """Trivy JSON or SARIF, recognised by shape."""
    if not isinstance(result, dict):
        raise ScanReportError("scanner.result must be a Trivy JSON report or a SARIF log")
    if "runs" in result:
        return ids_from_sarif(result)
    if "Results" in result or "SchemaVersion" in result:
        return ids_from_trivy(result)
    raise ScanReportError("scanner.result is neither a Trivy JSON report nor a SARIF log")


def parse_time(value: object, what: str) -> dt.datetime:
    if not isinstance(value, str):
        raise ScanReportError(f"{what} is missing")
    text = value.strip()
    # Python < 3.11 quirks aside, fromisoformat takes "Z" and up to 6 fractional digits
    if "." in text:
        head, _, tail = text.partition(".")
        digits = "".join(c for c in tail if c.isdigit())
        zone = tail[len(digits):]
        text = f"{head}.{digits[:6]}{zone}"
    try:
        when = dt.datetime.fromisoformat(text)
    except ValueError as exc:
        raise ScanReportError(f"{what} is not an RFC 3339 time: {value!r}") from exc
    if when.tzinfo is None:
        when = when.replace(tzinfo=dt.UTC)
    return when


def fact_from_vuln_predicate(predicate: object, *, attestor: str) -> ScanFact:
    """A verified cosign vuln/v1 predicate -> ScanFact (scanFinishedOn is the scan time)."""
    if not isinstance(predicate, dict):
        raise ScanReportError("vuln predicate must be an object")
    scanner = predicate.get("scanner")
    if not isinstance(scanner, dict):
        raise ScanReportError("vuln predicate: scanner is missing")
    metadata = predicate.get("metadata") or {}
    if not isinstance(metadata, dict):
        raise ScanReportError("vuln predicate: metadata must be an object")
    finished = parse_time(metadata.get("scanFinishedOn"), "vuln predicate metadata.scanFinishedOn")
    if finished.year <= 1:  # Go's zero time: cosign's way of leaving it out
        raise ScanReportError("vuln predicate metadata.scanFinishedOn is missing")
    return ScanFact("attestation", finished, ids_from_report(scanner.get("result")), attestor)


def _is_sarif(predicate_type: str, predicate: object) -> bool:
    return "sarif" in predicate_type.lower() and isinstance(predicate, dict) and "runs" in predicate


def is_scan_statement(predicate_type: str, predicate: object) -> bool:
    """A cosign vuln/v1 predicate, or a SARIF log attached as a signed attestation."""
    return predicate_type == VULN_PREDICATE or _is_sarif(predicate_type, predicate)


def fact_from_statement(statement: ScanStatement, *, attestor: str) -> ScanFact:
    """A verified scan attestation -> ScanFact.

    A SARIF log's time is its run's ``invocations[].endTimeUtc``, else the time the
    transparency log recorded the attestation; without either it cannot meet a maxAge.
    """
    if statement.predicate_type == VULN_PREDICATE:
        return fact_from_vuln_predicate(statement.predicate, attestor=attestor)
    log = statement.predicate
    ids = ids_from_sarif(log)  # also checks the runs' shape before their times are read
    ended: dt.datetime | None = None
    for run in log.get("runs") or ():
        for invocation in run.get("invocations") or ():
            if isinstance(invocation, dict) and invocation.get("endTimeUtc"):
                ended = parse_time(invocation["endTimeUtc"], "SARIF invocations.endTimeUtc")
    if ended is None and statement.integrated_time is not None:
        try:
            ended = dt.datetime.fromtimestamp(statement.integrated_time, dt.UTC)
        except (ValueError, OverflowError, OSError):
            raise ScanReportError(f"SARIF attestation: integratedTime "
                                  f"{statement.integrated_time} is out of range") from None
    if ended is None:
        raise ScanReportError("SARIF attestation has no scan time (invocations.endTimeUtc)")
    return ScanFact("attestation", ended, ids, attestor)
