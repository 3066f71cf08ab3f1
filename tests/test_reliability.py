"""Reliability review: fail-open paths, unbounded state, partial answers (registry, Harbor, scans).

MockTransport / fake Harbor apps stand in only for answers a real registry cannot be
made to give on demand (partial Harbor reports, endless bodies, token floods).
"""

from __future__ import annotations

import datetime as dt
import textwrap
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import httpx
import pytest
from cryptography.hazmat.primitives.asymmetric import ec
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.routing import Route

from tests.signing import public_pem
from webhook.decision import ScanFact, decide, plan_checks
from webhook.errors import RegistryError
from webhook.facts import FactGatherer
from webhook.harbor import HarborClient
from webhook.policy import Authority, PolicySet, load_policy_text
from webhook.references import ImageReference, parse_reference
from webhook.registry import RegistryClient
from webhook.scans import (
    ScanReportError,
    fact_from_vuln_predicate,
    ids_from_report,
    ids_from_sarif,
)

# --------------------------------------------------------------------------- SARIF


def test_sarif_run_without_results_is_not_a_clean_scan() -> None:
    # SARIF 2.1.0: a run whose results are absent or null produced no results (the tool
    # failed); only an empty array means "nothing found".
    for run in ({"tool": {"driver": {"name": "trivy"}}},
                {"tool": {"driver": {"name": "trivy"}}, "results": None}):
        with pytest.raises(ScanReportError, match="no results"):
            ids_from_report({"version": "2.1.0", "runs": [run]})
    with pytest.raises(ScanReportError, match="no runs"):
        ids_from_sarif({"version": "2.1.0", "runs": []})
    clean = {"tool": {"driver": {"name": "trivy"}}, "results": []}
    assert ids_from_sarif({"version": "2.1.0", "runs": [clean]}) == {}


def test_sarif_failed_invocation_is_not_a_clean_scan() -> None:
    run = {"tool": {"driver": {"name": "trivy"}}, "results": [],
           "invocations": [{"executionSuccessful": False}]}
    with pytest.raises(ScanReportError, match="did not complete"):
        ids_from_sarif({"version": "2.1.0", "runs": [run]})


def test_malformed_sarif_shapes_are_report_errors_not_crashes() -> None:
    for log in ({"runs": ["x"]},
                {"runs": [{"results": [{"ruleId": "CVE-1"}],
                           "tool": {"driver": {"rules": [{"id": "CVE-1",
                                                          "properties": ["x"]}]}}}]}):
        with pytest.raises(ScanReportError):
            ids_from_sarif(log)
    odd_tool = {"runs": [{"results": [{"ruleId": "CVE-1"}], "tool": "x"}]}
    assert ids_from_sarif(odd_tool) == {"UNKNOWN": ("CVE-1",)}
    with pytest.raises(ScanReportError):
        fact_from_vuln_predicate({"scanner": {"result": {"Results": []}}, "metadata": ["x"]},
                                 attestor="fp")


# --------------------------------------------------------------------------- Harbor

DIGEST = "sha256:" + "c" * 64
MIME = "application/vnd.security.vulnerability.report; version=1.1"


def harbor(additions: Any) -> Starlette:
    async def artifact(request: Request) -> Response:
        return JSONResponse({"digest": DIGEST, "scan_overview": {MIME: {
            "scan_status": "Success", "end_time": "2026-05-01T10:00:00Z"}}})

    async def report(request: Request) -> Response:
        if additions is None:
            return JSONResponse({"errors": [{"code": "NOT_FOUND"}]}, status_code=404)
        return JSONResponse(additions)

    base = "/api/v2.0/projects/{project}/repositories/{repo}/artifacts/{digest}"
    return Starlette(routes=[Route(base, artifact),
                             Route(base + "/additions/vulnerabilities", report)])


async def harbor_fact(app: Starlette) -> ScanFact | None:
    async with httpx.AsyncClient(transport=httpx.ASGITransport(app=app)) as http:
        return await HarborClient(http).scan_fact(
            parse_reference("harbor.example.com/team/app:1"), DIGEST)


@pytest.mark.parametrize(
    "additions",
    [
        None,  # 404: the report of a scan the overview says finished is gone
        {},  # no report of any type
        {MIME: {"generated_at": "2026-05-01T10:00:00Z", "severity": "Critical"}},  # no list
        {MIME: {"generated_at": "2026-05-01T10:00:00Z", "vulnerabilities": {"id": "x"}}},
    ],
)
async def test_harbor_finished_scan_with_a_partial_report_is_an_error(additions: Any) -> None:
    # Harbor said the scan succeeded: a missing or partial report is no verdict, never
    # "not scanned" (onMissing) and never "clean".
    with pytest.raises(RegistryError):
        await harbor_fact(harbor(additions))


async def test_harbor_clean_report_is_clean() -> None:
    for vulnerabilities in ([], None):
        fact = await harbor_fact(harbor({MIME: {"generated_at": "2026-05-01T10:00:00Z",
                                                "vulnerabilities": vulnerabilities}}))
        assert fact is not None and fact.ids == {}


async def test_harbor_oversized_answer_is_not_read_to_the_end() -> None:
    produced = 0

    async def endless() -> AsyncIterator[bytes]:
        nonlocal produced
        for _ in range(64):
            produced += 1
            yield b" " * (1024 * 1024)

    def handler(request: httpx.Request) -> httpx.Response:
        return httpx.Response(200, content=endless())

    async with httpx.AsyncClient(transport=httpx.MockTransport(handler)) as http:
        with pytest.raises(RegistryError, match="larger than"):
            await HarborClient(http).scan_fact(
                parse_reference("harbor.example.com/team/app:1"), DIGEST)
    assert produced < 64


# --------------------------------------------------------------------------- scan facts

KEY_A = ec.generate_private_key(ec.SECP256R1())
KEY_B = ec.generate_private_key(ec.SECP256R1())


def scan_policy(name: str, key: ec.EllipticCurvePrivateKey, on_missing: str) -> str:
    return f"""\
apiVersion: sealgate.dev/v1alpha1
kind: ImagePolicy
metadata: {{name: {name}}}
spec:
  namespaces: {{match: ["*"]}}
  rules:
    - name: r
      images: ["registry.example.com/**"]
      signatures: none
      scan:
        attestors:
          - name: scanner-{name}
            key:
              tlog: "off"
              publicKey: |
{textwrap.indent(public_pem(key).decode(), " " * 16)}
        onMissing: {on_missing}
        deny: {{CRITICAL: 0}}
"""


async def test_an_attestor_error_is_not_hidden_by_another_attestors_report(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    # Policy a's attestor has a report; policy b's attestor failed (its signed report is
    # unreadable). b must see an error (onError: deny), not "no scan" (onMissing: allow).
    policy_set = PolicySet(
        tuple(load_policy_text(scan_policy("a", KEY_A, "deny"), "a.yaml", base_dir=Path(".")))
        + tuple(load_policy_text(scan_policy("b", KEY_B, "allow"), "b.yaml",
                                 base_dir=Path("."))),
        1,
    )
    policy_a = policy_set.policies[0]
    fp_a = policy_a.rules[0].scan.attestors[0].fingerprint  # type: ignore[union-attr]
    image = "registry.example.com/team/app@" + DIGEST.replace("c", "d")
    now = dt.datetime.now(dt.UTC)

    async def attestation(self: FactGatherer, authority: Authority, ref: ImageReference,
                          digest: str, state: object) -> tuple[ScanFact | None, str | None]:
        if authority.fingerprint == fp_a:
            return ScanFact("attestation", now, {}, fp_a), None
        return None, "vuln predicate metadata.scanFinishedOn is missing"

    monkeypatch.setattr(FactGatherer, "_attestation", attestation)
    async with httpx.AsyncClient() as http:
        gatherer = FactGatherer(RegistryClient(http))
        facts = await gatherer.gather(plan_checks([image], policy_set.policies), deadline=5)
    decision = decide(namespace="x", images=[image], policies=policy_set, facts=facts, now=now)
    assert decision.decision == "deny" and decision.reason == "error", decision
    assert "scan verdict unavailable" in decision.message


# --------------------------------------------------------------------------- bounded state


class Clock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


async def test_token_cache_does_not_grow_without_bound() -> None:
    manifest = b'{"schemaVersion": 2, "layers": []}'

    def handler(request: httpx.Request) -> httpx.Response:
        if request.url.host == "auth.example.com":
            return httpx.Response(200, json={"token": "t", "expires_in": 60})
        if "authorization" not in request.headers:
            return httpx.Response(401, headers={
                "www-authenticate": 'Bearer realm="https://auth.example.com/token",'
                                    'service="registry.example.com"'})
        return httpx.Response(200, content=manifest)

    clock = Clock()
    async with httpx.AsyncClient(transport=httpx.MockTransport(handler)) as http:
        registry = RegistryClient(http, clock=clock)
        for index in range(3000):
            ref = parse_reference(f"registry.example.com/team/app{index}:v1")
            await registry.resolve_digest(ref)
            clock.now += 1  # every token outlives ~55 s: most of them are long expired
        assert len(registry._auth.tokens) <= 1024


async def test_per_registry_state_does_not_grow_without_bound() -> None:
    def handler(request: httpx.Request) -> httpx.Response:
        return httpx.Response(404)

    clock = Clock()
    async with httpx.AsyncClient(transport=httpx.MockTransport(handler)) as http:
        registry = RegistryClient(http, clock=clock)
        for index in range(3000):
            ref = parse_reference(f"registry{index}.example.com/team/app:v1")
            assert await registry.referrers(ref, DIGEST) == []
            clock.now += 1
        assert len(registry._limits) <= 1024
        assert len(registry._no_referrers_api) <= 1024


async def test_absurd_token_lifetime_is_not_a_crash() -> None:
    manifest = b'{"schemaVersion": 2, "layers": []}'

    def handler(request: httpx.Request) -> httpx.Response:
        if request.url.host == "auth.example.com":
            return httpx.Response(200, content=b'{"token": "t", "expires_in": 1' + b"0" * 400
                                  + b"}")
        if "authorization" not in request.headers:
            return httpx.Response(401, headers={
                "www-authenticate": 'Bearer realm="https://auth.example.com/token"'})
        return httpx.Response(200, content=manifest)

    async with httpx.AsyncClient(transport=httpx.MockTransport(handler)) as http:
        registry = RegistryClient(http)
        await registry.resolve_digest(parse_reference("registry.example.com/team/app:v1"))


async def test_token_answer_is_read_only_up_to_a_cap() -> None:
    produced = 0

    async def endless() -> AsyncIterator[bytes]:
        nonlocal produced
        for _ in range(64):
            produced += 1
            yield b" " * (1024 * 1024)

    def handler(request: httpx.Request) -> httpx.Response:
        if request.url.host == "auth.example.com":
            return httpx.Response(200, content=endless())
        return httpx.Response(401, headers={
            "www-authenticate": 'Bearer realm="https://auth.example.com/token"'})

    async with httpx.AsyncClient(transport=httpx.MockTransport(handler)) as http:
        registry = RegistryClient(http)
        with pytest.raises(RegistryError, match="larger than"):
            await registry.resolve_digest(parse_reference("registry.example.com/team/app:v1"))
    assert produced < 64
