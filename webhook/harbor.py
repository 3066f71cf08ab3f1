"""Harbor v2.0 API scan verdicts for an artifact digest (SPEC §2 ``scan.sources: [harbor]``).

The artifact's ``scan_overview`` (``with_scan_overview=true``) says whether a
scan finished and when; the IDs come from its ``additions/vulnerabilities``
report (the overview has only totals, SPEC §8). Harbor serves its API on the
registry's own host, with the registry's credentials.
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from typing import Any
from urllib.parse import quote

import httpx

from webhook.decision import ScanFact
from webhook.errors import RegistryError
from webhook.references import ImageReference
from webhook.registry import RegistryCredentials
from webhook.scans import ScanReportError, normalise_severity, parse_time

# Harbor's vulnerability report MIME types (scanner adapter API v1.0 / v1.1)
REPORT_TYPES = (
    "application/vnd.security.vulnerability.report; version=1.1",
    "application/vnd.scanner.adapter.vuln.report.harbor+json; version=1.0",
)
_MAX_REPORT_BYTES = 16 * 1024 * 1024


class HarborClient:
    """Reads scan results from Harbor; None means "no finished scan" (a definitive answer)."""

    def __init__(
        self,
        http: httpx.AsyncClient,
        *,
        credentials: RegistryCredentials | None = None,
        insecure: frozenset[str] = frozenset(),
    ) -> None:
        self._http = http
        self._credentials = credentials
        self._insecure = insecure

    def _artifact_url(self, ref: ImageReference, digest: str) -> str:
        scheme = "http" if ref.registry in self._insecure else "https"
        project, _, repository = ref.repository.partition("/")
        if not repository:
            raise RegistryError(
                f"{ref.name}: Harbor repositories are PROJECT/REPOSITORY; no project in the name"
            )
        # Harbor wants the slash in nested repository names encoded twice ("a%252Fb").
        encoded = quote(quote(repository, safe=""), safe="")
        return (
            f"{scheme}://{ref.registry}/api/v2.0/projects/{quote(project, safe='')}"
            f"/repositories/{encoded}/artifacts/{digest}"
        )

    async def _get(self, url: str, ref: ImageReference, what: str) -> Any | None:
        auth = self._credentials.lookup(ref.registry) if self._credentials else None
        headers = {
            "Accept": "application/json",
            "X-Accept-Vulnerabilities": ", ".join(REPORT_TYPES),
        }
        too_large = RegistryError(f"Harbor {ref.registry}: {what} is larger than 16 MiB")
        try:
            async with self._http.stream("GET", url, headers=headers, auth=auth) as response:
                status = response.status_code
                if status != 200:
                    content = b""
                else:
                    # Read only up to the cap: a huge (or endless) answer is refused, not held.
                    length = response.headers.get("content-length", "")
                    if length.isdigit() and int(length) > _MAX_REPORT_BYTES:
                        raise too_large
                    chunks: list[bytes] = []
                    size = 0
                    async for chunk in response.aiter_bytes():
                        size += len(chunk)
                        if size > _MAX_REPORT_BYTES:
                            raise too_large
                        chunks.append(chunk)
                    content = b"".join(chunks)
        except httpx.HTTPError as exc:
            raise RegistryError(f"could not reach Harbor {ref.registry} for {what}: "
                                f"{exc.__class__.__name__}") from exc
        if status == 404:
            return None
        if status != 200:
            raise RegistryError(f"Harbor {ref.registry} answered HTTP {status} for {what}")
        try:
            return json.loads(content)
        except (ValueError, UnicodeDecodeError, RecursionError) as exc:
            raise RegistryError(f"Harbor {ref.registry}: {what} is not JSON") from exc

    async def scan_fact(self, ref: ImageReference, digest: str) -> ScanFact | None:
        url = self._artifact_url(ref, digest)
        artifact = await self._get(f"{url}?with_scan_overview=true", ref,
                                   f"artifact {ref.repository}@{digest}")
        if artifact is None:
            return None
        overview = _pick_report(artifact.get("scan_overview") if isinstance(artifact, dict)
                                else None)
        if overview is None:
            return None  # never scanned
        status = str(overview.get("scan_status", ""))
        if status.lower() != "success":
            if status.lower() in ("error", "stopped"):
                raise RegistryError(f"Harbor {ref.registry}: scan of {ref.repository}@{digest} "
                                    f"ended with status {status}")
            return None  # pending / running: no verdict yet
        report = _pick_report(await self._get(f"{url}/additions/vulnerabilities", ref,
                                              f"vulnerabilities of {ref.repository}@{digest}"))
        if report is None:
            # The overview says the scan finished: a missing report is a partial answer,
            # not "never scanned" (that would reach onMissing instead of onError).
            raise RegistryError(f"Harbor {ref.registry}: scan of {ref.repository}@{digest} "
                                f"finished but its vulnerability report is missing")
        try:
            finished = parse_time(overview.get("end_time") or report.get("generated_at"),
                                  "Harbor scan end_time")
            ids = _ids(report)
        except ScanReportError as exc:
            raise RegistryError(f"Harbor {ref.registry}: {exc}") from exc
        return ScanFact("harbor", finished, ids)


def _pick_report(by_type: object) -> Mapping[str, Any] | None:
    if not isinstance(by_type, dict):
        return None
    for mime in REPORT_TYPES:
        report = by_type.get(mime)
        if isinstance(report, dict):
            return report
    for report in by_type.values():  # a scanner with another report version
        if isinstance(report, dict):
            return report
    return None


def _ids(report: Mapping[str, Any]) -> dict[str, tuple[str, ...]]:
    found: dict[str, set[str]] = {}
    if "vulnerabilities" not in report:
        # a clean report says so with an empty list (or null); no key is a partial report
        raise ScanReportError("vulnerability report has no vulnerabilities list")
    vulnerabilities = report["vulnerabilities"]
    if vulnerabilities is not None and not isinstance(vulnerabilities, list):
        raise ScanReportError("vulnerability report: vulnerabilities must be a list")
    for vuln in vulnerabilities or ():
        if not isinstance(vuln, dict) or not isinstance(vuln.get("id"), str):
            raise ScanReportError("vulnerability without id in the report")
        found.setdefault(normalise_severity(vuln.get("severity")), set()).add(vuln["id"])
    return {severity: tuple(sorted(ids)) for severity, ids in found.items()}
