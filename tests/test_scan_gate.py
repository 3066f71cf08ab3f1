"""The scan gate through /validate: signed vulnerability attestations (real Trivy and SARIF
reports) on images in the real registry; unsigned or foreign reports never count."""

from __future__ import annotations

import asyncio
import datetime as dt
import json
import textwrap
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import httpx
import pytest
from cryptography.hazmat.primitives.asymmetric import ec

from tests.admission_helpers import CountingTransport, pod_review, signed_image
from tests.bundle_builder import attestation_layer, key_bundle, statement
from tests.registry_server import (
    RegistryServer,
    manifest_descriptor,
    push_artifact,
    push_cosign_attestations,
    push_referrers_tag_index,
)
from tests.signing import PrivateKey, public_pem
from webhook.app import create_app
from webhook.oci import SIGSTORE_BUNDLE_V03
from webhook.scans import VULN_PREDICATE
from webhook.settings import Settings

TRIVY = Path(__file__).parent / "data" / "trivy"
SARIF_PREDICATE = "https://github.com/sealgate/attestation/sarif/v1"


def vuln_predicate(report: str, *, finished: dt.datetime | None = None) -> dict[str, Any]:
    finished = finished or dt.datetime.now(dt.UTC) - dt.timedelta(hours=1)
    return {
        "invocation": {"uri": "https://ci.example.com/run/1"},
        "scanner": {"uri": "pkg:github/aquasecurity/trivy", "version": "0.50.0",
                    "result": json.loads((TRIVY / report).read_text())},
        "metadata": {"scanStartedOn": (finished - dt.timedelta(minutes=2)).isoformat(),
                     "scanFinishedOn": finished.isoformat()},
    }


def policy(host: str, signer: PrivateKey, *, scan: str) -> str:
    return f"""\
apiVersion: sealgate.dev/v1alpha1
kind: ImagePolicy
metadata: {{name: scanned}}
spec:
  namespaces: {{match: ["prod"]}}
  rules:
    - name: ours
      images: ["{host}/team/**"]
      signatures:
        authorities:
          - name: release-key
            key:
              tlog: "off"
              publicKey: |
{textwrap.indent(public_pem(signer).decode(), " " * 16)}
      scan:
{textwrap.indent(scan, " " * 8)}"""


DEFAULT_SCAN = """\
maxAge: 24h
onMissing: deny
deny: {CRITICAL: 0}
warn: {MEDIUM: 0}
"""


@pytest.fixture
def key() -> PrivateKey:
    return ec.generate_private_key(ec.SECP256R1())


async def webhook(tmp_path: Path, registry: RegistryServer, key: PrivateKey,
                  scan: str = DEFAULT_SCAN) -> AsyncIterator[httpx.AsyncClient]:
    policies = tmp_path / "policies"
    policies.mkdir(exist_ok=True)
    (policies / "p.yaml").write_text(policy(registry.host, key, scan=scan))
    app = create_app(Settings(policies=policies, audit_log=tmp_path / "audit.log",
                              insecure_registries=frozenset({registry.host})))
    async with app.router.lifespan_context(app), httpx.AsyncClient(
        transport=httpx.ASGITransport(app=app), base_url="https://sealgate"
    ) as client:
        yield client


def attest(registry: RegistryServer, repo: str, digest: str, signer: PrivateKey,
           predicate: dict[str, Any], predicate_type: str = VULN_PREDICATE) -> None:
    layer = attestation_layer(signer, statement(digest, predicate_type, predicate),
                              predicate_type=predicate_type)
    push_cosign_attestations(registry.url, repo, digest, [(layer.payload,
                                                           dict(layer.annotations))])


async def decide(client: httpx.AsyncClient, image: str) -> dict[str, Any]:
    response = await client.post("/validate", json=pod_review(image))
    answer: dict[str, Any] = response.json()["response"]
    return answer


async def test_critical_vulnerability_denies_with_counts_and_ids(
    tmp_path: Path, registry: RegistryServer, key: PrivateKey
) -> None:
    digest = signed_image(registry, key, "team/photon")
    attest(registry, "team/photon", digest, key, vuln_predicate("photon-30.json.golden"))
    async for client in webhook(tmp_path, registry, key):
        answer = await decide(client, f"{registry.host}/team/photon:v1")
    assert answer["allowed"] is False
    assert "1 CRITICAL (CVE-2019-5481) > 0 allowed" in answer["status"]["message"]
    audit = json.loads((tmp_path / "audit.log").read_text().splitlines()[0])
    scan = audit["images"][0]["scan"]
    assert scan["source"] == "attestation" and scan["counts"]["CRITICAL"] == 1
    assert scan["ids"]["HIGH"] == ["CVE-2019-18276"]


async def test_medium_only_report_warns(tmp_path: Path, registry: RegistryServer,
                                        key: PrivateKey) -> None:
    digest = signed_image(registry, key, "team/alpine")
    attest(registry, "team/alpine", digest, key, vuln_predicate("alpine-310.json.golden"))
    async for client in webhook(tmp_path, registry, key):
        answer = await decide(client, f"{registry.host}/team/alpine:v1")
    assert answer["allowed"] is True
    assert "2 MEDIUM (CVE-2019-1549, CVE-2019-1551) > 0 allowed" in answer["warnings"][0]


async def test_clean_report_allows(tmp_path: Path, registry: RegistryServer,
                                   key: PrivateKey) -> None:
    digest = signed_image(registry, key, "team/clean")
    attest(registry, "team/clean", digest, key, vuln_predicate("sl-micro-rancher5.4.json.golden"))
    async for client in webhook(tmp_path, registry, key):
        answer = await decide(client, f"{registry.host}/team/clean:v1")
    assert answer == {"uid": answer["uid"], "allowed": True}


async def test_report_signed_by_someone_else_never_counts(
    tmp_path: Path, registry: RegistryServer, key: PrivateKey
) -> None:
    digest = signed_image(registry, key, "team/forged")
    stranger = ec.generate_private_key(ec.SECP256R1())
    attest(registry, "team/forged", digest, stranger,
           vuln_predicate("sl-micro-rancher5.4.json.golden"))
    async for client in webhook(tmp_path, registry, key):
        answer = await decide(client, f"{registry.host}/team/forged:v1")
    assert answer["allowed"] is False
    assert "no scan result no older than 24h from attestation" in answer["status"]["message"]


async def test_stale_report_counts_as_missing(tmp_path: Path, registry: RegistryServer,
                                              key: PrivateKey) -> None:
    digest = signed_image(registry, key, "team/stale")
    old = dt.datetime.now(dt.UTC) - dt.timedelta(days=3)
    attest(registry, "team/stale", digest, key,
           vuln_predicate("sl-micro-rancher5.4.json.golden", finished=old))
    async for client in webhook(tmp_path, registry, key,
                                scan=DEFAULT_SCAN.replace("onMissing: deny", "onMissing: warn")):
        answer = await decide(client, f"{registry.host}/team/stale:v1")
    assert answer["allowed"] is True and "no scan result" in answer["warnings"][0]


async def test_ignore_entries_apply(tmp_path: Path, registry: RegistryServer,
                                    key: PrivateKey) -> None:
    digest = signed_image(registry, key, "team/ignored")
    attest(registry, "team/ignored", digest, key, vuln_predicate("photon-30.json.golden"))
    until = (dt.date.today() + dt.timedelta(days=30)).isoformat()
    scan = DEFAULT_SCAN + f"ignore:\n  - {{id: CVE-2019-5481, until: {until}, reason: backport}}\n"
    async for client in webhook(tmp_path, registry, key, scan=scan):
        answer = await decide(client, f"{registry.host}/team/ignored:v1")
    assert answer["allowed"] is True


async def test_signed_sarif_referrer_counts(tmp_path: Path, registry: RegistryServer,
                                            key: PrivateKey) -> None:
    """A SARIF log attached as a signed bundle referrer (cosign v3 style)."""
    digest = signed_image(registry, key, "team/sarif")
    log = json.loads((TRIVY / "alpine-310.sarif.golden").read_text())
    log["runs"][0]["invocations"] = [{"executionSuccessful": True,
                                      "endTimeUtc": dt.datetime.now(dt.UTC).isoformat()}]
    bundle = key_bundle(key, statement(digest, SARIF_PREDICATE, log))
    artifact = push_artifact(
        registry.url, "team/sarif", artifact_type=SIGSTORE_BUNDLE_V03,
        layers=[(SIGSTORE_BUNDLE_V03, bundle)],
        subject=manifest_descriptor(registry.url, "team/sarif", digest),
        annotations={"dev.sigstore.bundle.predicateType": SARIF_PREDICATE},
    )
    push_referrers_tag_index(registry.url, "team/sarif", digest, [artifact])
    async for client in webhook(tmp_path, registry, key):
        answer = await decide(client, f"{registry.host}/team/sarif:v1")
    assert answer["allowed"] is True
    assert "2 MEDIUM" in answer["warnings"][0]


async def test_concurrent_reviews_share_one_signature_and_one_scan_fetch(
    tmp_path: Path, registry: RegistryServer, key: PrivateKey
) -> None:
    digest = signed_image(registry, key, "team/burst-scan")
    attest(registry, "team/burst-scan", digest, key, vuln_predicate("alpine-310.json.golden"))
    policies = tmp_path / "policies"
    policies.mkdir()
    (policies / "p.yaml").write_text(policy(registry.host, key, scan=DEFAULT_SCAN))
    transport = CountingTransport()
    app = create_app(Settings(policies=policies, audit_log=tmp_path / "audit.log",
                              insecure_registries=frozenset({registry.host})),
                     transport=transport)
    image = f"{registry.host}/team/burst-scan:v1"
    async with app.router.lifespan_context(app), httpx.AsyncClient(
        transport=httpx.ASGITransport(app=app), base_url="https://sealgate"
    ) as client:
        answers = await asyncio.gather(*(decide(client, image) for _ in range(100)))
    assert all(answer["allowed"] and answer["warnings"] for answer in answers)
    # one tag resolution, one .sig manifest, one .att manifest, and their blobs — once each
    assert transport.counts["manifest"] == 1
    assert transport.counts["sig-manifest"] == 1
    assert transport.counts["att-manifest"] == 1
    assert transport.counts["blob"] == 2
