"""Scan report parsing (Trivy JSON, SARIF, cosign vuln predicate) and the Harbor client."""

from __future__ import annotations

import datetime as dt
import json
from pathlib import Path
from typing import Any

import httpx
import pytest
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.routing import Route

from webhook.errors import RegistryError
from webhook.harbor import HarborClient
from webhook.references import parse_reference
from webhook.registry import RegistryCredentials
from webhook.scans import (
    ScanReportError,
    fact_from_vuln_predicate,
    ids_from_report,
    ids_from_sarif,
)

DATA = Path(__file__).parent / "data" / "trivy"


def report(name: str) -> Any:
    return json.loads((DATA / name).read_text())


@pytest.mark.parametrize(
    ("name", "expected"),
    [
        ("photon-30.json.golden", {"CRITICAL": ("CVE-2019-5481",), "HIGH": ("CVE-2019-18276",)}),
        ("busybox-with-lockfile.json.golden",
         {"HIGH": ("CVE-2019-15542",), "MEDIUM": ("CVE-2021-38193",)}),
        ("alpine-distroless.json.golden", {"MEDIUM": ("CVE-2022-24765",)}),
        ("sl-micro-rancher5.4.json.golden", {}),
        ("alpine-310.json.golden", {"MEDIUM": ("CVE-2019-1549", "CVE-2019-1551")}),
        ("alpine-310.sarif.golden", {"MEDIUM": ("CVE-2019-1549", "CVE-2019-1551")}),
    ],
)
def test_real_trivy_reports(name: str, expected: dict[str, tuple[str, ...]]) -> None:
    assert ids_from_report(report(name)) == expected


def test_sarif_severity_from_score_when_no_tag() -> None:
    log = {"version": "2.1.0", "runs": [{
        "tool": {"driver": {"rules": [
            {"id": "CVE-1", "properties": {"security-severity": "9.8"}},
            {"id": "CVE-2", "properties": {"security-severity": "7.5"}},
            {"id": "CVE-3", "properties": {"security-severity": "0.0"}},
        ]}},
        "results": [{"ruleId": "CVE-1"}, {"ruleId": "CVE-2"}, {"ruleId": "CVE-3"},
                    {"ruleId": "CVE-4"}],
    }]}
    assert ids_from_sarif(log) == {"CRITICAL": ("CVE-1",), "HIGH": ("CVE-2",),
                                   "UNKNOWN": ("CVE-3", "CVE-4")}


@pytest.mark.parametrize(
    ("document", "fragment"),
    [
        ({"Results": "x"}, "Results must be a list"),
        ({"Results": [{"Vulnerabilities": [{"Severity": "HIGH"}]}]}, "without VulnerabilityID"),
        ({"runs": [{"results": [{}]}]}, "has no ruleId"),
        ({"hello": 1}, "neither a Trivy JSON report nor a SARIF log"),
        ([], "must be a Trivy JSON report or a SARIF log"),
    ],
)
def test_bad_reports(document: object, fragment: str) -> None:
    with pytest.raises(ScanReportError, match=fragment):
        ids_from_report(document)


def test_vuln_predicate() -> None:
    predicate = {
        "scanner": {"uri": "pkg:github/aquasecurity/trivy", "result": report(
            "photon-30.json.golden")},
        "metadata": {"scanStartedOn": "2026-05-01T10:00:00Z",
                     "scanFinishedOn": "2026-05-01T10:03:00.123456789Z"},
    }
    fact = fact_from_vuln_predicate(predicate, attestor="fp")
    assert fact.source == "attestation" and fact.attestor == "fp"
    assert fact.scanned_at == dt.datetime(2026, 5, 1, 10, 3, 0, 123456, tzinfo=dt.UTC)
    assert fact.ids["CRITICAL"] == ("CVE-2019-5481",)
    del predicate["metadata"]
    with pytest.raises(ScanReportError, match="scanFinishedOn is missing"):
        fact_from_vuln_predicate(predicate, attestor="fp")


# --------------------------------------------------------------------------- Harbor

DIGEST = "sha256:" + "c" * 64
MIME = "application/vnd.security.vulnerability.report; version=1.1"


def harbor_app(status: str = "Success", *, vulnerabilities: list[dict[str, str]] | None = None,
               seen: list[Request] | None = None) -> Starlette:
    """Harbor v2.0 response shapes (artifact with scan_overview; additions/vulnerabilities)."""

    async def artifact(request: Request) -> Response:
        if seen is not None:
            seen.append(request)
        if request.path_params["digest"] != DIGEST:
            return JSONResponse({"errors": [{"code": "NOT_FOUND"}]}, status_code=404)
        assert request.query_params["with_scan_overview"] == "true"
        return JSONResponse({
            "digest": DIGEST, "type": "IMAGE",
            "scan_overview": {MIME: {
                "report_id": "r1", "scan_status": status, "severity": "Critical",
                "start_time": "2026-05-01T09:59:00Z", "end_time": "2026-05-01T10:00:00Z",
                "summary": {"total": 3, "fixable": 1, "summary": {"Critical": 1, "High": 2}},
            }},
        })

    async def additions(request: Request) -> Response:
        if seen is not None:
            seen.append(request)
        return JSONResponse({MIME: {
            "generated_at": "2026-05-01T10:00:00Z", "severity": "Critical",
            "vulnerabilities": vulnerabilities if vulnerabilities is not None else [
                {"id": "CVE-2024-1", "package": "openssl", "version": "1", "severity": "Critical"},
                {"id": "CVE-2024-2", "package": "zlib", "version": "1", "severity": "High"},
                {"id": "CVE-2024-2", "package": "zlib-dev", "version": "1", "severity": "High"},
                {"id": "CVE-2024-3", "package": "bash", "version": "1", "severity": "Negligible"},
            ],
        }})

    base = "/api/v2.0/projects/{project}/repositories/{repo}/artifacts/{digest}"
    return Starlette(routes=[Route(base, artifact), Route(base + "/additions/vulnerabilities",
                                                           additions)])


async def harbor_fact(app: Starlette, image: str = "harbor.example.com/team/sub/app:1",
                      credentials: RegistryCredentials | None = None) -> Any:
    async with httpx.AsyncClient(transport=httpx.ASGITransport(app=app)) as http:
        client = HarborClient(http, credentials=credentials)
        return await client.scan_fact(parse_reference(image), DIGEST)


async def test_harbor_scan_fact_with_ids_and_credentials() -> None:
    seen: list[Request] = []
    credentials = RegistryCredentials({"harbor.example.com": ("robot", "s3cret")})
    fact = await harbor_fact(harbor_app(seen=seen), credentials=credentials)
    assert fact.source == "harbor"
    assert fact.scanned_at == dt.datetime(2026, 5, 1, 10, 0, tzinfo=dt.UTC)
    assert fact.ids == {"CRITICAL": ("CVE-2024-1",), "HIGH": ("CVE-2024-2",),
                        "LOW": ("CVE-2024-3",)}
    # nested repository names are double-encoded; the registry's credentials are sent
    assert seen[0].scope["raw_path"].startswith(
        b"/api/v2.0/projects/team/repositories/sub%252Fapp/artifacts/sha256:")
    assert seen[0].headers["authorization"].startswith("Basic ")


@pytest.mark.parametrize("status", ["Pending", "Running"])
async def test_harbor_unfinished_scan_is_missing(status: str) -> None:
    assert await harbor_fact(harbor_app(status)) is None


async def test_harbor_failed_scan_and_bad_names_are_errors() -> None:
    with pytest.raises(RegistryError, match="ended with status Error"):
        await harbor_fact(harbor_app("Error"))
    with pytest.raises(RegistryError, match="no project"):
        await harbor_fact(harbor_app(), image="harbor.example.com/app:1")


async def test_harbor_unknown_artifact_is_missing_and_5xx_an_error() -> None:
    async def broken(request: Request) -> Response:
        return Response("oops", status_code=502)

    app = Starlette(routes=[Route("/api/v2.0/{rest:path}", broken)])
    with pytest.raises(RegistryError, match="HTTP 502"):
        await harbor_fact(app)
    other = Starlette(routes=[])
    assert await harbor_fact(other) is None
