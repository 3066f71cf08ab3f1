"""Notary Project signatures in the real registry (SPEC §9).

The reference implementation's signed OCI layouts are pushed into docker-registry and
reach their recorded verdicts (tests/data/notation/PROVENANCE.md) at ``strict`` and
``permissive``; then images are signed here with JWS and COSE envelopes, and the
negative cases are checked through the webhook end to end, audit line included.
"""

from __future__ import annotations

import json
import textwrap
from collections.abc import AsyncIterator
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import httpx
import pytest

from tests.admission_helpers import pod_review
from tests.notation_signing import (
    COSE,
    JWS,
    Envelope,
    Signer,
    attach_signatures,
    make_signer,
    push_notation_signature,
    push_oci_layout,
)
from tests.registry_server import RegistryServer, manifest_descriptor, push_image
from tests.signing import cosign_layer, public_pem
from tests.test_notation import DATA, own_certificate
from webhook.app import create_app
from webhook.cache import FactCache
from webhook.decision import Outcome, SignatureCheck
from webhook.policy import NotationAuthority, load_policy_text
from webhook.references import parse_reference
from webhook.registry import RegistryClient
from webhook.settings import Settings
from webhook.signatures.notation_verifier import NotationVerifier

E2E = "e2e-config/localkeys/e2e.crt"
E2E_IDENTITY = "x509.subject: CN=e2e,O=Notary,L=Seattle,ST=WA,C=US"


def notation_yaml(name: str, pems: list[str], *, identities: tuple[str, ...] = ("*",),
                  level: str = "strict", tsa: list[str] = ()) -> str:  # type: ignore[assignment]
    def entries(items: list[str]) -> str:
        return "[" + ", ".join("{pem: " + json.dumps(p) + "}" for p in items) + "]"
    tsa_line = f"\n    tsa: {entries(tsa)}" if tsa else ""
    return textwrap.indent(f"""\
- name: {name}
  notation:
    trustStore:
      ca: {entries(pems)}{tsa_line}
    trustedIdentities: {json.dumps(list(identities))}
    level: {level}
""", " " * 10)


def policy_text(host: str, authorities: str, *, threshold: int = 1) -> str:
    return f"""\
apiVersion: sealgate.dev/v1alpha1
kind: ImagePolicy
metadata: {{name: notary}}
spec:
  namespaces: {{match: ["prod"]}}
  rules:
    - name: signed
      images: ["{host}/**"]
      signatures:
        threshold: {threshold}
        authorities:
{authorities}"""


def load_authority(pems: list[str], **options: Any) -> NotationAuthority:
    (policy,) = load_policy_text(policy_text("r.example", notation_yaml("n", pems, **options)),
                                 "p.yaml", base_dir=Path("."))
    assert policy.rules[0].signatures is not None
    (authority,) = policy.rules[0].signatures.authorities
    assert isinstance(authority, NotationAuthority)
    return authority


def pem_file(path: str) -> str:
    return (DATA / path).read_text()


async def check(registry: RegistryServer, image: str, authority: NotationAuthority) -> Outcome:
    async with httpx.AsyncClient() as http:
        verifier = NotationVerifier(
            RegistryClient(http, insecure=frozenset({registry.host})), FactCache())
        ref = parse_reference(image)
        digest = ref.digest
        if digest is None:
            digest = await RegistryClient(http, insecure=frozenset({registry.host})
                                          ).resolve_digest(ref)
        return await verifier.verify(SignatureCheck(authority, ()), ref, digest)


# --------------------------------------------------------------------------- upstream layouts

LAYOUTS = DATA / "oci-layouts"
TESTCERT7 = "testcert7"  # no store file upstream: taken from the envelope (PROVENANCE)


def cert7_pem() -> str:
    blob = (LAYOUTS / "e2e-with-invalid-timestamped-signature" / "blobs" / "sha256" /
            "8d2e70ffc2af68b7f2df6f30dfefcb7bcda1db5f9ac2566fc8c6c2248c8d4c5f")
    relative = str(blob.relative_to(DATA))
    return own_certificate(relative)


# (layout, trust store, level) -> expected: "ok" or the words of the failure
LAYOUT_VERDICTS: list[tuple[str, str, str, str]] = [
    ("e2e", E2E, "strict", "no Notary Project signatures found"),
    ("e2e", E2E, "permissive", "no Notary Project signatures found"),
    ("e2e-valid-signature", E2E, "strict", "ok"),
    ("e2e-valid-signature", E2E, "permissive", "ok"),
    ("e2e-valid-signature", "e2e-config/localkeys/new_e2e.crt", "strict",
     "authenticity: the signature's certificate chain (CN=e2e"),
    ("e2e-valid-signature", "e2e-config/localkeys/new_e2e.crt", "permissive", "authenticity"),
    ("e2e-valid-multiple-signatures", E2E, "strict", "ok"),
    ("e2e-valid-multiple-signatures", E2E, "permissive", "ok"),
    ("e2e-expired-signature", E2E, "strict",
     "expiry: the signature expired at 2023-06-27T05:21:21Z"),
    ("e2e-expired-signature", E2E, "permissive", "ok: expiry"),
    ("e2e-invalid-signature", E2E, "strict", "integrity: unsupported envelope media type"),
    ("e2e-invalid-signature", E2E, "permissive", "integrity: unsupported envelope media type"),
    ("e2e-with-expired-cert", "e2e-config/localkeys/expired_e2e.crt", "strict",
     "authenticTimestamp: with no trusted timestamp, the chain must be valid now"),
    ("e2e-with-expired-cert", "e2e-config/localkeys/expired_e2e.crt", "permissive",
     "ok: authenticTimestamp"),
    ("e2e-with-timestamped-signature", TESTCERT7, "strict",
     "expiry: the signature expired at 2025-01-21T12:39:46Z"),
    ("e2e-with-timestamped-signature", TESTCERT7, "permissive", "ok: expiry"),
    ("e2e-with-invalid-timestamped-signature", TESTCERT7, "strict",
     "authenticTimestamp: with no trusted timestamp"),
    ("e2e-with-invalid-timestamped-signature", TESTCERT7, "permissive", "ok: authenticTimestamp"),
]


@pytest.fixture(scope="module")
def pushed_layouts(registry: RegistryServer) -> dict[str, str]:
    """Every upstream layout in its own repository: layout -> image reference by digest."""
    images = {}
    for layout in sorted(p.name for p in LAYOUTS.iterdir()):
        tags = push_oci_layout(registry.url, f"notation/{layout}", LAYOUTS / layout)
        images[layout] = f"{registry.host}/notation/{layout}@{tags['v1']}"
    return images


@pytest.mark.parametrize(("layout", "store", "level", "expected"), LAYOUT_VERDICTS,
                         ids=[f"{v[0]}-{Path(v[1]).stem}-{v[2]}" for v in LAYOUT_VERDICTS])
async def test_upstream_layout_reaches_its_recorded_verdict(
    registry: RegistryServer, pushed_layouts: dict[str, str],
    layout: str, store: str, level: str, expected: str,
) -> None:
    pem = cert7_pem() if store == TESTCERT7 else pem_file(store)
    outcome = await check(registry, pushed_layouts[layout], load_authority([pem], level=level))
    if expected == "ok":
        assert outcome == Outcome("ok", ""), outcome
    elif expected.startswith("ok: "):
        assert outcome.status == "ok", outcome
        assert expected.removeprefix("ok: ") in outcome.reason  # permissive says what it let by
    else:
        assert outcome.status == "fail", outcome
        assert expected in outcome.reason, outcome.reason


@pytest.mark.parametrize(("identity", "status"), [
    (E2E_IDENTITY, "ok"),
    ("x509.subject: CN=e2e,O=Notary,L=Seattle,ST=WA,C=USB", "fail"),
])
async def test_upstream_layout_trusted_identities(
    registry: RegistryServer, pushed_layouts: dict[str, str], identity: str, status: str
) -> None:
    outcome = await check(registry, pushed_layouts["e2e-valid-signature"],
                          load_authority([pem_file(E2E)], identities=(identity,)))
    assert outcome.status == status, outcome


async def test_upstream_signature_copied_to_another_image_fails(
    registry: RegistryServer, pushed_layouts: dict[str, str]
) -> None:
    # the valid e2e signature manifest, attached to a different image: integrity fails
    digest, _ = push_image(registry.url, "notation/copied", "v1")
    repo = "notation/copied"
    layout = LAYOUTS / "e2e-valid-signature" / "blobs" / "sha256"
    envelope = (layout / "c9af07e038b2b1a463e648986ad7273157511ffeba0b689f33e5472bae471f50"
                ).read_bytes()
    subject = manifest_descriptor(registry.url, repo, digest)
    attach_signatures(registry.url, repo, digest,
                      [push_notation_signature(registry.url, repo, subject, envelope, JWS,
                                               legacy=True)])
    outcome = await check(registry, f"{registry.host}/{repo}@{digest}",
                          load_authority([pem_file(E2E)]))
    assert outcome.status == "fail"
    assert "integrity: the signature is for sha256:b8479de3" in outcome.reason


# --------------------------------------------------------------------------- signed here


@pytest.fixture(scope="module")
def signer() -> Signer:
    return make_signer("release")


@pytest.fixture(scope="module")
def ec_signer() -> Signer:
    return make_signer("release-ec", ec_key=True)


def signed_image(registry: RegistryServer, repo: str, signer: Signer, media_type: str, *,
                 legacy: bool = False, target_digest: str | None = None,
                 tamper: bool = False, **envelope: Any) -> str:
    digest, _ = push_image(registry.url, repo, "v1")
    subject = manifest_descriptor(registry.url, repo, digest)
    target = dict(subject)
    if target_digest is not None:
        target["digest"] = target_digest
    made = Envelope(target, **envelope)
    blob = made.jws(signer, tamper_payload=tamper) if media_type == JWS else made.cose(
        signer, tamper_payload=tamper)
    attach_signatures(registry.url, repo, digest, [
        push_notation_signature(registry.url, repo, subject, blob, media_type, legacy=legacy)])
    return digest


@pytest.mark.parametrize("media_type", [JWS, COSE])
@pytest.mark.parametrize("legacy", [False, True], ids=["oci-1.1", "legacy-config"])
async def test_self_signed_envelopes_verify(registry: RegistryServer, signer: Signer,
                                            ec_signer: Signer, media_type: str,
                                            legacy: bool) -> None:
    for which, key, name in (("rsa", signer, "release"), ("ec", ec_signer, "release-ec")):
        form = "legacy" if legacy else "oci"
        repo = f"notation/self-{which}-{'jws' if media_type == JWS else 'cose'}-{form}"
        digest = signed_image(registry, repo, key, media_type, legacy=legacy)
        identity = f"x509.subject: C=US, ST=WA, O=Notary, CN={name}"
        outcome = await check(registry, f"{registry.host}/{repo}@{digest}",
                              load_authority([key.root_pem()], identities=(identity,)))
        assert outcome == Outcome("ok", ""), (which, outcome)


def expired_signer() -> Signer:
    return make_signer("old", valid_from=datetime.now(UTC) - timedelta(days=30),
                       valid_for=timedelta(days=1))


NEGATIVES: list[tuple[str, dict[str, Any], str]] = [
    ("tampered", {"tamper": True}, "does not verify with the signing certificate's key"),
    ("other-digest", {"target_digest": "sha256:" + "ab" * 32},
     "integrity: the signature is for sha256:abab"),
    ("untrusted-root", {"trust": "other"}, "authenticity"),
    ("expired-cert", {"signer": "expired"}, "authenticTimestamp: with no trusted timestamp"),
    ("wrong-identity", {"identity": "x509.subject: C=US, ST=WA, O=Notary, CN=someone-else"},
     "does not match the trusted identities"),
    ("unknown-critical", {"extra_critical": {"io.example.mustUnderstand": "yes"}},
     "unknown critical header 'io.example.mustUnderstand'"),
    ("expired-signature", {"expiry": datetime.now(UTC) - timedelta(hours=1)}, "expiry"),
]


@pytest.mark.parametrize("media_type", [JWS, COSE])
@pytest.mark.parametrize(("case", "change", "words"), NEGATIVES, ids=[n[0] for n in NEGATIVES])
async def test_negative_cases_are_denied_through_the_webhook(
    tmp_path: Path, registry: RegistryServer, signer: Signer, media_type: str,
    case: str, change: dict[str, Any], words: str,
) -> None:
    change = dict(change)
    key = expired_signer() if change.pop("signer", None) == "expired" else signer
    trusted = make_signer("stranger") if change.pop("trust", None) == "other" else key
    identity = change.pop("identity", "*")
    if case == "expired-cert":
        change["signing_time"] = key.chain[0].not_valid_before_utc + timedelta(hours=1)
    repo = f"notation/neg-{case}-{'jws' if media_type == JWS else 'cose'}"
    digest = signed_image(registry, repo, key, media_type, **change)
    authorities = notation_yaml("acr-release", [trusted.root_pem()], identities=(identity,))
    async for client in webhook(tmp_path, registry, authorities):
        response = await client.post("/validate", json=pod_review(f"{registry.host}/{repo}:v1"))
    result = response.json()["response"]
    assert result["allowed"] is False
    message = result["status"]["message"]
    assert digest in message and 'authority "acr-release"' in message and words in message
    audit = json.loads((tmp_path / "audit.log").read_text().splitlines()[-1])
    assert audit["images"][0]["signatures"] == {"acr-release": "fail"}
    assert words in audit["images"][0]["signature_reasons"]["acr-release"]


async def webhook(tmp_path: Path, registry: RegistryServer, authorities: str, *,
                  threshold: int = 1) -> AsyncIterator[httpx.AsyncClient]:
    policies = tmp_path / "policies"
    policies.mkdir(parents=True, exist_ok=True)
    (policies / "p.yaml").write_text(policy_text(registry.host, authorities,
                                                 threshold=threshold))
    app = create_app(Settings(policies=policies, audit_log=tmp_path / "audit.log",
                              insecure_registries=frozenset({registry.host})))
    async with app.router.lifespan_context(app), httpx.AsyncClient(
        transport=httpx.ASGITransport(app=app), base_url="https://sealgate"
    ) as client:
        yield client


async def test_permissive_admits_an_expired_signature_and_says_why_in_the_audit_line(
    tmp_path: Path, registry: RegistryServer, signer: Signer
) -> None:
    repo = "notation/permissive"
    signed_image(registry, repo, signer, COSE, expiry=datetime.now(UTC) - timedelta(hours=1))
    authorities = notation_yaml("lenient", [signer.root_pem()], level="permissive")
    async for client in webhook(tmp_path, registry, authorities):
        response = await client.post("/validate", json=pod_review(f"{registry.host}/{repo}:v1"))
    assert response.json()["response"]["allowed"] is True
    entry = json.loads((tmp_path / "audit.log").read_text().splitlines()[-1])["images"][0]
    assert entry["signatures"] == {"lenient": "ok"}
    assert "expiry: the signature expired at" in entry["signature_reasons"]["lenient"]


async def test_notation_counts_toward_threshold_and_is_cached(
    tmp_path: Path, registry: RegistryServer, signer: Signer
) -> None:
    from cryptography.hazmat.primitives.asymmetric import ec

    from tests.registry_server import push_cosign_signature

    repo = "notation/threshold"
    digest = signed_image(registry, repo, signer, JWS)
    cosign_key = ec.generate_private_key(ec.SECP256R1())
    pem = textwrap.indent(public_pem(cosign_key).decode(), " " * 18)
    key_authority = textwrap.indent(
        f"- name: cosign-release\n  key:\n    tlog: \"off\"\n    publicKey: |\n{pem}", " " * 10)
    both = notation_yaml("acr-release", [signer.root_pem()]) + key_authority + "\n"
    image = f"{registry.host}/{repo}:v1"
    async for client in webhook(tmp_path, registry, both, threshold=2):
        first = (await client.post("/validate", json=pod_review(image))).json()["response"]
        # the notation signature alone is one of the two authorities required
        assert first["allowed"] is False
        assert 'authority "cosign-release"' in first["status"]["message"]
        push_cosign_signature(registry.url, repo, digest,
                              [cosign_layer(cosign_key, f"{registry.host}/{repo}", digest)])
    lines = [json.loads(line) for line in (tmp_path / "audit.log").read_text().splitlines()]
    assert lines[-1]["images"][0]["signatures"]["acr-release"] == "ok"
    # a second policy directory: the cosign signature now exists, both count
    async for client in webhook(tmp_path / "again", registry, both, threshold=2):
        second = (await client.post("/validate", json=pod_review(image))).json()["response"]
        third = (await client.post("/validate", json=pod_review(image))).json()["response"]
    assert second["allowed"] is True and third["allowed"] is True
    lines = [json.loads(line) for line in
             (tmp_path / "again" / "audit.log").read_text().splitlines()]
    assert lines[0]["images"][0]["cached"] is False
    assert lines[1]["images"][0]["cached"] is True  # the notation fact came from the cache
