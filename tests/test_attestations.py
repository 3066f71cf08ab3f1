"""webhook/signatures/attestations.py: legacy cosign .att DSSE layers and attestation bundles.

Real cosign fixtures (tests/data/cosign) for predicate parsing and for what must never
count; signatures made here with ``cryptography`` (keys) and the private sigstore of
tests/sigstore_world.py (keyless); the real registry for discovery.
"""

from __future__ import annotations

import base64
import hashlib
import json
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import httpx
import pytest
from cryptography import x509
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec, ed25519, rsa

from tests.bundle_builder import (
    attestation_layer,
    dsse_body,
    dsse_sign,
    envelope,
    intoto_v002_body,
    key_bundle,
    statement,
)
from tests.registry_server import (
    RegistryServer,
    manifest_descriptor,
    push_artifact,
    push_cosign_attestations,
    push_image,
    push_referrers_tag_index,
)
from tests.signing import public_pem
from tests.sigstore_world import FulcioCA, RekorLog, SigstoreWorld
from webhook.errors import VerificationError
from webhook.oci import COSIGN_BUNDLE_ANNOTATION, DSSE_ENVELOPE, SIGSTORE_BUNDLE_V03, SignatureLayer
from webhook.references import parse_reference
from webhook.registry import RegistryClient
from webhook.signatures.attestations import (
    COSIGN_CUSTOM_PREDICATE,
    COSIGN_VULN_PREDICATE,
    AttachedAttestations,
    fetch_attestations,
    is_vuln_predicate,
    parse_dsse_envelope,
    parse_vuln_predicate,
    verify_attestation_layer,
    verify_attestations,
    verify_cosign_bundle_annotation,
)
from webhook.signatures.bundle import KeylessTrust, KeyTrust, check_entry_body, parse_statement
from webhook.signatures.identity import Identity

DATA = Path(__file__).parent / "data" / "cosign"
VULN_VALID = (DATA / "vuln-attestation-dsse.valid.json").read_bytes()
VULN_MALFORMED = (DATA / "vuln-attestation-dsse.malformed.json").read_bytes()
VULN_PREDICATE = json.loads((DATA / "vuln-predicate.json").read_bytes())
COSIGN_ATTESTATION = (DATA / "oci-attestation.sigstore.json").read_bytes()
VULN_SUBJECT = "sha256:3c19aa980a9c5709a2c96c2d0779febf6e5e453b92b172ce84cb85fdaf695373"
CODY = Identity(issuer="https://github.com/login/oauth", subject="cody@soyland.com")

IMAGE = "sha256:" + "ab" * 32
OTHER = "sha256:" + "cd" * 32
ISSUER = "https://token.actions.githubusercontent.com"
RELEASE = "https://github.com/acme/app/.github/workflows/release.yml@refs/heads/main"
SCAN = {"scanner": {"uri": "pkg:github/aquasecurity/trivy", "version": "0.50.0",
                    "result": {"Results": []}},
        "metadata": {"scanStartedOn": "2026-01-02T03:04:05Z",
                     "scanFinishedOn": "2026-01-02T03:05:00Z"}}


def vuln_statement(digest: str = IMAGE) -> bytes:
    return statement(digest, COSIGN_VULN_PREDICATE, SCAN,
                     version="https://in-toto.io/Statement/v0.1")


@pytest.fixture
def key() -> ec.EllipticCurvePrivateKey:
    return ec.generate_private_key(ec.SECP256R1())


@pytest.fixture(scope="module")
def world() -> SigstoreWorld:
    return SigstoreWorld.create()


@pytest.fixture(scope="module")
def world_root(world: SigstoreWorld, tmp_path_factory: pytest.TempPathFactory) -> str:
    return str(world.write_trusted_root(tmp_path_factory.mktemp("world") / "trusted_root.json"))


# --------------------------------------------------------------------------- real cosign data


def test_cosign_vuln_envelope_parses_as_a_vuln_statement() -> None:
    parsed = parse_dsse_envelope(VULN_VALID)
    assert parsed.payload_type == "application/vnd.in-toto+json"
    assert len(parsed.signatures) == 1
    found = parse_statement(parsed.payload_type, parsed.payload)
    assert found.predicate_type == COSIGN_VULN_PREDICATE
    assert is_vuln_predicate(found.predicate_type)
    assert found.subject_digests == (VULN_SUBJECT,)
    predicate = parse_vuln_predicate(found.predicate)
    # Go's zero time means "not set".
    assert (predicate.scanner_uri, predicate.result, predicate.scan_started,
            predicate.scan_finished) == ("", None, None, None)


def test_cosign_scheme_less_vuln_type_is_not_the_vuln_predicate() -> None:
    parsed = parse_dsse_envelope(VULN_MALFORMED)
    found = parse_statement(parsed.payload_type, parsed.payload)
    assert found.predicate_type == "cosign.sigstore.dev/attestation/vuln/v1"
    assert not is_vuln_predicate(found.predicate_type)


def test_cosign_vuln_predicate_times() -> None:
    predicate = parse_vuln_predicate(VULN_PREDICATE)
    assert predicate.scanner_uri == "fakescanner.example.com/cosign-testing"
    assert predicate.result is None
    assert predicate.scan_started == datetime(2022, 4, 12, tzinfo=UTC)
    assert predicate.scan_finished == datetime(2022, 4, 12, 0, 10, tzinfo=UTC)


def test_bad_vuln_predicates() -> None:
    with pytest.raises(VerificationError, match="scanner"):
        parse_vuln_predicate({})
    with pytest.raises(VerificationError, match="RFC 3339"):
        parse_vuln_predicate({"scanner": {}, "metadata": {"scanStartedOn": "yesterday"}})


async def test_cosign_vuln_envelope_never_counts(key: ec.EllipticCurvePrivateKey) -> None:
    """Its signing key is unpublished: under any key we hold, it must not verify."""
    layer = SignatureLayer(DSSE_ENVELOPE, VULN_VALID, {})
    with pytest.raises(VerificationError, match="signature does not verify"):
        verify_attestation_layer(layer, KeyTrust(key.public_key(), "off"),
                                 image_digest=VULN_SUBJECT)
    with pytest.raises(VerificationError, match=r"no dev\.sigstore\.cosign/certificate"):
        verify_attestation_layer(layer, KeylessTrust(CODY), image_digest=VULN_SUBJECT)
    results = await verify_attestations(
        AttachedAttestations((layer,), ()), KeyTrust(key.public_key(), "off"),
        image_digest=VULN_SUBJECT)
    assert results.statements == ()
    assert len(results.rejected) == 1
    assert "signature does not verify" in results.rejected[0]


def test_not_a_dsse_layer(key: ec.EllipticCurvePrivateKey) -> None:
    layer = SignatureLayer("application/vnd.dev.cosign.simplesigning.v1+json", b"{}", {})
    with pytest.raises(VerificationError, match="not a DSSE attestation"):
        verify_attestation_layer(layer, KeyTrust(key.public_key()), image_digest=IMAGE)
    for bad, message in [(b"[]", "JSON object"), (b"{", "not JSON"),
                         (b'{"payloadType":"x","payload":"!!","signatures":[]}', "base64")]:
        with pytest.raises(VerificationError, match=message):
            parse_dsse_envelope(bad)


# --------------------------------------------------------------------------- key-signed .att


@pytest.mark.parametrize("make_key", [
    lambda: ec.generate_private_key(ec.SECP256R1()),
    lambda: ec.generate_private_key(ec.SECP384R1()),
    lambda: rsa.generate_private_key(public_exponent=65537, key_size=2048),
    ed25519.Ed25519PrivateKey.generate,
], ids=["p256", "p384", "rsa", "ed25519"])
def test_key_attestation_verifies(make_key: Any) -> None:
    signer = make_key()
    layer = attestation_layer(signer, vuln_statement(), predicate_type=COSIGN_VULN_PREDICATE)
    verified = verify_attestation_layer(layer, KeyTrust(signer.public_key(), "off"),
                                        image_digest=IMAGE)
    assert verified.predicate_type == COSIGN_VULN_PREDICATE
    assert verified.predicate == SCAN
    assert verified.integrated_time is None


def test_key_attestation_tampered(key: ec.EllipticCurvePrivateKey) -> None:
    layer = attestation_layer(key, vuln_statement())
    document = json.loads(layer.payload)
    clean = json.loads(vuln_statement())
    clean["predicate"]["scanner"]["result"] = {"Results": [], "hidden": "no CVEs, promise"}
    document["payload"] = envelope(json.dumps(clean).encode(), [])["payload"]
    tampered = SignatureLayer(DSSE_ENVELOPE, json.dumps(document).encode(), layer.annotations)
    with pytest.raises(VerificationError, match="signature does not verify"):
        verify_attestation_layer(tampered, KeyTrust(key.public_key(), "off"), image_digest=IMAGE)


def test_key_attestation_replayed_onto_another_image(key: ec.EllipticCurvePrivateKey) -> None:
    layer = attestation_layer(key, vuln_statement(IMAGE))
    with pytest.raises(VerificationError, match=f"names digest {IMAGE}, not {OTHER}"):
        verify_attestation_layer(layer, KeyTrust(key.public_key(), "off"), image_digest=OTHER)


def test_key_attestation_from_another_key(key: ec.EllipticCurvePrivateKey) -> None:
    layer = attestation_layer(ec.generate_private_key(ec.SECP256R1()), vuln_statement())
    with pytest.raises(VerificationError, match="signature does not verify"):
        verify_attestation_layer(layer, KeyTrust(key.public_key(), "off"), image_digest=IMAGE)


def test_key_attestation_predicate_type_filter(key: ec.EllipticCurvePrivateKey) -> None:
    layer = attestation_layer(key, vuln_statement())
    with pytest.raises(VerificationError, match="predicateType"):
        verify_attestation_layer(layer, KeyTrust(key.public_key(), "off"), image_digest=IMAGE,
                                 predicate_type="https://slsa.dev/provenance/v1")


def test_key_attestation_with_rekor_set(
    key: ec.EllipticCurvePrivateKey, world: SigstoreWorld, world_root: str
) -> None:
    layer = attestation_layer(key, vuln_statement(), rekor=world.rekor,
                              integrated_time=1_750_000_000)
    verified = verify_attestation_layer(layer, KeyTrust(key.public_key(), "required", world_root),
                                        image_digest=IMAGE)
    assert verified.integrated_time == 1_750_000_000


def test_key_attestation_tlog_modes(
    key: ec.EllipticCurvePrivateKey, world_root: str
) -> None:
    bare = attestation_layer(key, vuln_statement())
    verify_attestation_layer(bare, KeyTrust(key.public_key(), "optional", world_root),
                             image_digest=IMAGE)
    with pytest.raises(VerificationError, match="transparency log entry required"):
        verify_attestation_layer(bare, KeyTrust(key.public_key(), "required", world_root),
                                 image_digest=IMAGE)
    foreign = attestation_layer(key, vuln_statement(), rekor=RekorLog.create())
    with pytest.raises(VerificationError, match=r"Rekor SET.*no trusted Rekor key"):
        verify_attestation_layer(foreign, KeyTrust(key.public_key(), "optional", world_root),
                                 image_digest=IMAGE)
    verify_attestation_layer(foreign, KeyTrust(key.public_key(), "off", world_root),
                             image_digest=IMAGE)


def test_key_attestation_set_for_another_body(
    key: ec.EllipticCurvePrivateKey, world: SigstoreWorld, world_root: str
) -> None:
    layer = attestation_layer(key, vuln_statement(IMAGE))
    other = vuln_statement(OTHER)
    signature = dsse_sign(key, other)
    body = intoto_v002_body(other, b"{}", signature, public_pem(key))
    logged = world.rekor.log(body, 1_750_000_000)
    swapped = SignatureLayer(DSSE_ENVELOPE, layer.payload,
                             {**layer.annotations, COSIGN_BUNDLE_ANNOTATION:
                              logged.bundle_annotation()})
    with pytest.raises(VerificationError, match="another payload"):
        verify_attestation_layer(swapped, KeyTrust(key.public_key(), "optional", world_root),
                                 image_digest=IMAGE)


@pytest.mark.parametrize(("text", "message"), [
    ("not json", "not JSON"),
    ("{}", "no Payload"),
    ('{"Payload": {"body": "x"}, "SignedEntryTimestamp": "x"}', "needs"),
    ('{"Payload": {"body": "!", "integratedTime": 1, "logIndex": 1, "logID": "a"},'
     ' "SignedEntryTimestamp": "!"}', "base64"),
])
def test_malformed_cosign_bundle_annotations(
    key: ec.EllipticCurvePrivateKey, text: str, message: str
) -> None:
    with pytest.raises(VerificationError, match=message):
        verify_cosign_bundle_annotation(text, payload=b"", signature=b"",
                                        signer=key.public_key(), rekor_keys=())


# --------------------------------------------------------------------------- keyless .att


def keyless_trust(root: str, subject: str = RELEASE) -> KeylessTrust:
    return KeylessTrust(Identity(issuer=ISSUER, subject=subject), root)


def test_keyless_attestation_verifies(world: SigstoreWorld, world_root: str) -> None:
    leaf = world.issue_leaf(uri=RELEASE, issuer=ISSUER)
    layer = attestation_layer(leaf, vuln_statement(), rekor=world.rekor)
    verified = verify_attestation_layer(layer, keyless_trust(world_root), image_digest=IMAGE)
    assert verified.predicate_type == COSIGN_VULN_PREDICATE
    assert verified.integrated_time == int(leaf.not_before.timestamp()) + 2
    # The intermediate is in the trusted root: the chain annotation is optional.
    bare = attestation_layer(leaf, vuln_statement(), rekor=world.rekor, chain=False)
    verify_attestation_layer(bare, keyless_trust(world_root), image_digest=IMAGE)


def test_keyless_attestation_wrong_identity(world: SigstoreWorld, world_root: str) -> None:
    leaf = world.issue_leaf(uri=RELEASE, issuer=ISSUER)
    layer = attestation_layer(leaf, vuln_statement(), rekor=world.rekor)
    with pytest.raises(VerificationError, match="subject mismatch"):
        verify_attestation_layer(layer, keyless_trust(world_root, RELEASE + "x"),
                                 image_digest=IMAGE)


def test_keyless_attestation_needs_a_set(world: SigstoreWorld, world_root: str) -> None:
    leaf = world.issue_leaf(uri=RELEASE, issuer=ISSUER)
    layer = attestation_layer(leaf, vuln_statement())
    with pytest.raises(VerificationError, match="transparency log entry required"):
        verify_attestation_layer(layer, keyless_trust(world_root), image_digest=IMAGE)


def test_keyless_attestation_from_an_untrusted_ca(world: SigstoreWorld, world_root: str) -> None:
    leaf = world.issue_leaf(fulcio=FulcioCA.create(), uri=RELEASE, issuer=ISSUER)
    layer = attestation_layer(leaf, vuln_statement(), rekor=world.rekor)
    with pytest.raises(VerificationError, match="certificate chain"):
        verify_attestation_layer(layer, keyless_trust(world_root), image_digest=IMAGE)


def test_keyless_attestation_replayed(world: SigstoreWorld, world_root: str) -> None:
    leaf = world.issue_leaf(uri=RELEASE, issuer=ISSUER)
    layer = attestation_layer(leaf, vuln_statement(IMAGE), rekor=world.rekor)
    with pytest.raises(VerificationError, match="names digest"):
        verify_attestation_layer(layer, keyless_trust(world_root), image_digest=OTHER)


# --------------------------------------------------------------------------- real registry


def push_bundle_referrer(registry: RegistryServer, repo: str, digest: str, content: bytes,
                         predicate_type: str) -> tuple[str, bytes]:
    return push_artifact(
        registry.url, repo, artifact_type=SIGSTORE_BUNDLE_V03,
        layers=[(SIGSTORE_BUNDLE_V03, content)],
        subject=manifest_descriptor(registry.url, repo, digest),
        annotations={"dev.sigstore.bundle.predicateType": predicate_type},
    )


async def test_attestations_from_att_layers_and_bundle_referrers(
    registry: RegistryServer, key: ec.EllipticCurvePrivateKey
) -> None:
    repo = "attest/app"
    digest, _ = push_image(registry.url, repo, "v1")
    att = attestation_layer(key, vuln_statement(digest))
    stranger = attestation_layer(ec.generate_private_key(ec.SECP256R1()), vuln_statement(digest))
    push_cosign_attestations(registry.url, repo, digest, [
        (att.payload, dict(att.annotations)), (stranger.payload, dict(stranger.annotations))])
    custom = statement(digest, COSIGN_CUSTOM_PREDICATE, {"Data": "x"})
    referrers = [
        push_bundle_referrer(registry, repo, digest, key_bundle(key, custom),
                             COSIGN_CUSTOM_PREDICATE),
        # An image signature bundle: not an attestation.
        push_bundle_referrer(registry, repo, digest, key_bundle(key, statement(digest)),
                             "https://sigstore.dev/cosign/sign/v1"),
    ]
    push_referrers_tag_index(registry.url, repo, digest, referrers)

    async with httpx.AsyncClient(timeout=10) as http:
        client = RegistryClient(http, insecure=frozenset({registry.host}))
        attached = await fetch_attestations(client, parse_reference(f"{registry.host}/{repo}:v1"),
                                            digest)
    assert len(attached.layers) == 2
    assert len(attached.bundles) == 1
    results = await verify_attestations(attached, KeyTrust(key.public_key(), "off"),
                                        image_digest=digest)
    assert sorted(s.predicate_type for s in results.statements) == [
        COSIGN_CUSTOM_PREDICATE, COSIGN_VULN_PREDICATE]
    [vuln] = results.of_type(COSIGN_VULN_PREDICATE)
    assert parse_vuln_predicate(vuln.predicate).scanner_version == "0.50.0"
    assert len(results.rejected) == 1 and "signature does not verify" in results.rejected[0]
    only_vuln = await verify_attestations(attached, KeyTrust(key.public_key(), "off"),
                                          image_digest=digest,
                                          predicate_type=COSIGN_VULN_PREDICATE)
    assert [s.predicate_type for s in only_vuln.statements] == [COSIGN_VULN_PREDICATE]


async def test_real_cosign_attestation_bundle_attached_to_another_image(
    registry: RegistryServer,
) -> None:
    repo = "attest/real"
    digest, _ = push_image(registry.url, repo, "v1")
    push_referrers_tag_index(registry.url, repo, digest, [
        push_bundle_referrer(registry, repo, digest, COSIGN_ATTESTATION, COSIGN_CUSTOM_PREDICATE)])
    async with httpx.AsyncClient(timeout=10) as http:
        client = RegistryClient(http, insecure=frozenset({registry.host}))
        attached = await fetch_attestations(client, parse_reference(f"{registry.host}/{repo}:v1"),
                                            digest)
    assert [b.content for b in attached.bundles] == [COSIGN_ATTESTATION]
    results = await verify_attestations(attached, KeylessTrust(CODY), image_digest=digest)
    assert results.statements == ()
    assert "names digest sha256:732112270d7e59418a8c080b134b24cabd67d250d0d0147a97ed95ba5c280aa4" \
        in results.rejected[0]


def test_rekor_entry_kinds(key: ec.EllipticCurvePrivateKey) -> None:
    payload = vuln_statement()
    signature = dsse_sign(key, payload)
    pem = public_pem(key)
    legacy = json.dumps({"apiVersion": "0.0.1", "kind": "intoto", "spec": {
        "content": {"hash": {"algorithm": "sha256", "value": "00"},
                    "payloadHash": {"algorithm": "sha256",
                                    "value": hashlib.sha256(payload).hexdigest()}},
        "publicKey": base64.b64encode(pem).decode()}}).encode()
    check_entry_body(legacy, payload=payload, signature=signature, signer=key.public_key())
    stranger = ec.generate_private_key(ec.SECP256R1()).public_key()
    with pytest.raises(VerificationError, match="another signer"):
        check_entry_body(legacy, payload=payload, signature=signature, signer=stranger)
    v002 = intoto_v002_body(payload, b"{}", signature, pem)
    check_entry_body(v002, payload=payload, signature=signature, signer=key.public_key())
    with pytest.raises(VerificationError, match="another signature"):
        check_entry_body(v002, payload=payload, signature=dsse_sign(key, payload),
                         signer=key.public_key())
    hashedrekord = b'{"apiVersion":"0.0.1","kind":"hashedrekord","spec":{}}'
    with pytest.raises(VerificationError, match="expected dsse"):
        check_entry_body(hashedrekord, payload=payload, signature=signature,
                         signer=key.public_key())


def test_an_envelope_whose_payload_type_is_not_utf8_is_rejected_not_a_crash(
    key: ec.EllipticCurvePrivateKey,
) -> None:
    # JSON may carry a lone surrogate ("\ud800"); the PAE needs UTF-8 bytes of payloadType.
    content = b'{"payloadType":"\\ud800","payload":"e30=","signatures":[{"sig":"AAAA"}]}'
    with pytest.raises(VerificationError, match="payloadType"):
        parse_dsse_envelope(content)
    layer = SignatureLayer(DSSE_ENVELOPE, content, {})
    with pytest.raises(VerificationError, match="payloadType"):
        verify_attestation_layer(layer, KeyTrust(key.public_key(), "off"), image_digest=IMAGE)


def _certificate_with_unknown_key_type(world: SigstoreWorld) -> bytes:
    """A PEM certificate whose SubjectPublicKeyInfo names an algorithm nobody knows."""
    leaf = world.issue_leaf(uri=RELEASE, issuer=ISSUER)
    der = leaf.certificate.public_bytes(serialization.Encoding.DER)
    ec_public_key = bytes.fromhex("06072a8648ce3d0201")  # OID id-ecPublicKey
    assert der.count(ec_public_key) == 1
    doctored = x509.load_der_x509_certificate(
        der.replace(ec_public_key, bytes.fromhex("06072a8648ce3d0209")))
    return doctored.public_bytes(serialization.Encoding.PEM)


def test_rekor_entry_recording_a_certificate_with_an_unknown_key_type(
    key: ec.EllipticCurvePrivateKey, world: SigstoreWorld
) -> None:
    # The body is checked before its SET/proof: whoever can push a bundle controls it.
    payload = vuln_statement()
    signature = dsse_sign(key, payload)
    body = dsse_body(payload, b"{}", signature, _certificate_with_unknown_key_type(world))
    with pytest.raises(VerificationError, match="another signer"):
        check_entry_body(body, payload=payload, signature=signature, signer=key.public_key())
