"""Key-signed sigstore bundles with Rekor v2 entries and RFC 3161 timestamps.

Rekor v2 (rekor-tiles) entries have no SET: an inclusion proof with a signed checkpoint,
and a ``hashedrekord``/``dsse`` 0.0.2 body. Their time comes from RFC 3161 timestamps,
checked against the trusted root's timestamp authorities; the real GlobalSign tokens of
the Notary Project fixtures stand in for a TSA (tests/data/notation/PROVENANCE.md).
"""

from __future__ import annotations

import base64
import json
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pytest
from cryptography import x509
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec

from tests.bundle_builder import b64, dsse_sign, key_bundle, pae, statement, tlog_entry
from tests.sigstore_world import SigstoreWorld
from tests.test_bundles import IMAGE, edit, fails
from webhook.errors import VerificationError
from webhook.signatures.bundle import KeyTrust, verify_bundle_sync, verify_rfc3161_timestamps
from webhook.signatures.trust import CertificateAuthority

NOTATION = Path(__file__).parent / "data" / "notation"
IN_TOTO = "application/vnd.in-toto+json"


def der_tlv(tag: int, content: bytes) -> bytes:
    length = len(content)
    if length < 0x80:
        return bytes([tag, length]) + content
    encoded = length.to_bytes((length.bit_length() + 7) // 8, "big")
    return bytes([tag, 0x80 | len(encoded)]) + encoded + content


def globalsign_timestamp() -> tuple[bytes, bytes]:
    """(TimeStampResp, the signature it timestamps) from a real Notary Project envelope."""
    envelope = json.loads((NOTATION / "envelopes/timestamp/jwsWithTimestamp.sig").read_bytes())
    token = base64.b64decode(envelope["header"]["io.cncf.notary.timestampSignature"])
    signature = base64.urlsafe_b64decode(envelope["signature"] + "==")
    return der_tlv(0x30, b"\x30\x03\x02\x01\x00" + token), signature


def tsa(path: str, *, until: datetime | None = None) -> CertificateAuthority:
    root = x509.load_der_x509_certificate((NOTATION / path).read_bytes())
    return CertificateAuthority((root,), None, None, until)


GLOBALSIGN = "truststore/x509/tsa/test-timestamp/globalsignRoot.cer"
DIGICERT = "truststore/x509/tsa/test-mismatch/DigiCertTSARootSHA384.cer"


def test_real_timestamp_verifies_against_its_authority() -> None:
    response, signature = globalsign_timestamp()
    (timestamp,) = verify_rfc3161_timestamps([response], signature, [tsa(GLOBALSIGN)])
    assert timestamp.time == datetime(2024, 6, 18, 6, 29, 37, tzinfo=UTC)


@pytest.mark.parametrize(("change", "words"), [
    ("message", "timestamp does not verify"),
    ("authority", "does not chain to a trusted timestamp authority root"),
    ("window", "not valid at the timestamp"),
    ("none", "no timestamp authorities"),
])
def test_real_timestamp_negatives(change: str, words: str) -> None:
    response, signature = globalsign_timestamp()
    authorities = {
        "message": [tsa(GLOBALSIGN)], "authority": [tsa(DIGICERT)],
        "window": [tsa(GLOBALSIGN, until=datetime(2020, 1, 1, tzinfo=UTC))], "none": [],
    }[change]
    with pytest.raises(VerificationError, match=words):
        verify_rfc3161_timestamps([response], b"x" + signature if change == "message"
                                  else signature, authorities)


# --------------------------------------------------------------------------- Rekor v2 bodies


def spki(key: ec.EllipticCurvePrivateKey) -> bytes:
    return key.public_key().public_bytes(serialization.Encoding.DER,
                                         serialization.PublicFormat.SubjectPublicKeyInfo)


def hashedrekord_v2(signed: bytes, signature: bytes, key: ec.EllipticCurvePrivateKey) -> bytes:
    import hashlib

    return json.dumps({"apiVersion": "0.0.2", "kind": "hashedrekord", "spec": {
        "hashedRekordV002": {
            "data": {"algorithm": "SHA2_256", "digest": b64(hashlib.sha256(signed).digest())},
            "signature": {"content": b64(signature), "verifier": {
                "publicKey": {"rawBytes": b64(spki(key))},
                "keyDetails": "PKIX_ECDSA_P256_SHA_256"}}}}}).encode()


def dsse_v2(payload: bytes, signature: bytes, key: ec.EllipticCurvePrivateKey) -> bytes:
    import hashlib

    return json.dumps({"apiVersion": "0.0.2", "kind": "dsse", "spec": {"dsseV002": {
        "payloadHash": {"algorithm": "SHA2_256", "digest": b64(hashlib.sha256(payload).digest())},
        "signatures": [{"content": b64(signature), "verifier": {
            "publicKey": {"rawBytes": b64(spki(key))},
            "keyDetails": "PKIX_ECDSA_P256_SHA_256"}}]}}}).encode()


def v2_bundle(key: ec.EllipticCurvePrivateKey, world: SigstoreWorld, kind: str,
              *, body_key: ec.EllipticCurvePrivateKey | None = None,
              timestamps: list[bytes] = ()) -> bytes:  # type: ignore[assignment]
    payload = statement(IMAGE)
    content = key_bundle(key, payload)  # no Rekor entry yet: add a v2 one
    document: dict[str, Any] = json.loads(content)
    signature = base64.b64decode(document["dsseEnvelope"]["signatures"][0]["sig"])
    signer = body_key or key
    if kind == "hashedrekord":
        body = hashedrekord_v2(pae(IN_TOTO, payload), signature, signer)
    else:
        body = dsse_v2(payload, signature, signer)
    entry = tlog_entry(world.rekor, body, 0, kind=kind, version="0.0.2", promise=False)
    entry.pop("integratedTime")
    document["verificationMaterial"]["tlogEntries"] = [entry]
    if timestamps:
        document["verificationMaterial"]["timestampVerificationData"] = {
            "rfc3161Timestamps": [{"signedTimestamp": b64(t)} for t in timestamps]}
    return json.dumps(document).encode()


@pytest.fixture(scope="module")
def world() -> SigstoreWorld:
    return SigstoreWorld.create()


@pytest.fixture(scope="module")
def world_root(world: SigstoreWorld, tmp_path_factory: pytest.TempPathFactory) -> str:
    return str(world.write_trusted_root(tmp_path_factory.mktemp("w") / "trusted_root.json"))


@pytest.mark.parametrize("kind", ["hashedrekord", "dsse"])
def test_key_bundle_with_a_rekor_v2_entry(world: SigstoreWorld, world_root: str,
                                          kind: str) -> None:
    key = ec.generate_private_key(ec.SECP256R1())
    content = v2_bundle(key, world, kind)
    verified = verify_bundle_sync(content, KeyTrust(key.public_key(), "required", world_root),
                                  image_digest=IMAGE)
    assert verified.integrated_time is None  # no SET, no timestamp: no verified time


@pytest.mark.parametrize("kind", ["hashedrekord", "dsse"])
def test_rekor_v2_entry_for_another_signer_or_signature(world: SigstoreWorld, world_root: str,
                                                        kind: str) -> None:
    key = ec.generate_private_key(ec.SECP256R1())
    trust = KeyTrust(key.public_key(), "required", world_root)
    stranger = ec.generate_private_key(ec.SECP256R1())
    fails(lambda: verify_bundle_sync(v2_bundle(key, world, kind, body_key=stranger), trust,
                                     image_digest=IMAGE), "another signer")

    def other_signature(document: dict[str, Any]) -> None:
        other = dsse_sign(key, statement(IMAGE))  # ECDSA: a second, different signature
        document["dsseEnvelope"]["signatures"][0]["sig"] = b64(other)

    fails(lambda: verify_bundle_sync(edit(v2_bundle(key, world, kind), other_signature), trust,
                                     image_digest=IMAGE), "another signature")


def test_rekor_v2_entry_outside_the_checkpointed_tree_fails(world: SigstoreWorld,
                                                           world_root: str) -> None:
    key = ec.generate_private_key(ec.SECP256R1())

    def wrong_hash(document: dict[str, Any]) -> None:
        proof = document["verificationMaterial"]["tlogEntries"][0]["inclusionProof"]
        proof["hashes"] = [b64(b"\x00" * 32), *proof["hashes"][1:]]

    world.rekor.log(b"another entry, so the proof has a hash", 0)
    content = edit(v2_bundle(key, world, "hashedrekord"), wrong_hash)
    fails(lambda: verify_bundle_sync(content, KeyTrust(key.public_key(), "required", world_root),
                                     image_digest=IMAGE), "inclusion proof")


def test_timestamp_over_another_signature_fails_the_bundle(
    world: SigstoreWorld, world_root: str, tmp_path: Path
) -> None:
    key = ec.generate_private_key(ec.SECP256R1())
    response, _ = globalsign_timestamp()  # real, but for a Notary signature
    content = v2_bundle(key, world, "hashedrekord", timestamps=[response])
    fails(lambda: verify_bundle_sync(content, KeyTrust(key.public_key(), "required", world_root),
                                     image_digest=IMAGE), "no timestamp authorities")
    # a root whose timestamp authority is the token's own (GlobalSign R6)
    root = world.trusted_root()
    root["timestampAuthorities"] = [{
        "subject": {"organization": "GlobalSign", "commonName": "GlobalSign Root CA - R6"},
        "uri": "https://timestamp.example",
        "certChain": {"certificates": [{"rawBytes": b64((NOTATION / GLOBALSIGN).read_bytes())}]},
        "validFor": {"start": "2014-12-10T00:00:00Z"},
    }]
    with_tsa = tmp_path / "trusted_root.json"
    with_tsa.write_text(json.dumps(root))
    fails(lambda: verify_bundle_sync(content, KeyTrust(key.public_key(), "required",
                                                       str(with_tsa)), image_digest=IMAGE),
          "RFC 3161 timestamp 1", "timestamp does not verify")
