"""Notary Project signatures made in tests: a CA, leaf certificates, JWS and COSE envelopes,
and pushing them (or a whole OCI image layout) into the real registry as referrers.

The envelopes follow notaryproject/specifications (signature-envelope-jws.md,
signature-envelope-cose.md); the fixtures under tests/data/notation are the reference
implementation's, and these helpers are checked against the same verifier.
"""

from __future__ import annotations

import base64
import hashlib
import json
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import cbor2
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec, padding, rsa
from cryptography.hazmat.primitives.asymmetric.utils import decode_dss_signature
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID

from tests.registry_server import (
    OCI_INDEX,
    OCI_MANIFEST,
    push_blob,
    push_manifest,
    push_referrers_tag_index,
    sha256_digest,
)

NOTARY_SIGNATURE = "application/vnd.cncf.notary.signature"
PAYLOAD_TYPE = "application/vnd.cncf.notary.payload.v1+json"
JWS = "application/jose+json"
COSE = "application/cose"

PrivateKey = rsa.RSAPrivateKey | ec.EllipticCurvePrivateKey


def _name(common_name: str, org: str = "Notary") -> x509.Name:
    return x509.Name([
        x509.NameAttribute(NameOID.COUNTRY_NAME, "US"),
        x509.NameAttribute(NameOID.STATE_OR_PROVINCE_NAME, "WA"),
        x509.NameAttribute(NameOID.LOCALITY_NAME, "Seattle"),
        x509.NameAttribute(NameOID.ORGANIZATION_NAME, org),
        x509.NameAttribute(NameOID.COMMON_NAME, common_name),
    ])


@dataclass
class Signer:
    """A leaf key and its chain (leaf first), as notation signs with."""

    key: PrivateKey
    chain: list[x509.Certificate]

    @property
    def root(self) -> x509.Certificate:
        return self.chain[-1]

    def root_pem(self) -> str:
        return self.root.public_bytes(serialization.Encoding.PEM).decode()


def make_signer(
    common_name: str = "release", *, ec_key: bool = False, valid_from: datetime | None = None,
    valid_for: timedelta = timedelta(days=365),
) -> Signer:
    """A CA (RSA-3072 root) and a code-signing leaf (RSA-2048 for PS256, or P-256 for ES256)."""
    start = valid_from or datetime.now(UTC) - timedelta(hours=1)
    root_key = rsa.generate_private_key(public_exponent=65537, key_size=3072)
    root_name = _name(f"{common_name} root")
    root = (
        x509.CertificateBuilder().subject_name(root_name).issuer_name(root_name)
        .public_key(root_key.public_key()).serial_number(x509.random_serial_number())
        .not_valid_before(start - timedelta(days=1)).not_valid_after(start + timedelta(days=3650))
        .add_extension(x509.BasicConstraints(ca=True, path_length=1), critical=True)
        .add_extension(x509.KeyUsage(False, False, False, False, False, True, True, False, False),
                       critical=True)
        .sign(root_key, hashes.SHA384())
    )
    key: PrivateKey = (ec.generate_private_key(ec.SECP256R1()) if ec_key
                       else rsa.generate_private_key(public_exponent=65537, key_size=2048))
    leaf = (
        x509.CertificateBuilder().subject_name(_name(common_name)).issuer_name(root_name)
        .public_key(key.public_key()).serial_number(x509.random_serial_number())
        .not_valid_before(start).not_valid_after(start + valid_for)
        .add_extension(x509.BasicConstraints(ca=False, path_length=None), critical=True)
        .add_extension(x509.KeyUsage(True, False, False, False, False, False, False, False, False),
                       critical=True)
        .add_extension(x509.ExtendedKeyUsage([ExtendedKeyUsageOID.CODE_SIGNING]), critical=False)
        .sign(root_key, hashes.SHA384())
    )
    return Signer(key, [leaf, root])


def _der(cert: x509.Certificate) -> bytes:
    return cert.public_bytes(serialization.Encoding.DER)


def _sign(key: PrivateKey, data: bytes) -> tuple[bytes, str, int]:
    """(raw signature, JWS alg, COSE alg) as the Notary Project specs want them."""
    if isinstance(key, rsa.RSAPrivateKey):
        pss = padding.PSS(mgf=padding.MGF1(hashes.SHA256()), salt_length=32)
        return key.sign(data, pss, hashes.SHA256()), "PS256", -37
    r, s = decode_dss_signature(key.sign(data, ec.ECDSA(hashes.SHA256())))
    return r.to_bytes(32, "big") + s.to_bytes(32, "big"), "ES256", -7


def _b64url(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode()


@dataclass
class Envelope:
    """What to sign: the target descriptor and the signed attributes."""

    target: Mapping[str, Any]
    signing_time: datetime = field(default_factory=lambda: datetime.now(UTC).replace(
        microsecond=0))
    expiry: datetime | None = None
    scheme: str = "notary.x509"
    extra_critical: Mapping[str, str] = field(default_factory=dict)

    def payload(self) -> bytes:
        return json.dumps({"targetArtifact": dict(self.target)}, separators=(",", ":")).encode()

    def jws(self, signer: Signer, *, tamper_payload: bool = False) -> bytes:
        critical = ["io.cncf.notary.signingScheme"]
        header: dict[str, Any] = {"cty": PAYLOAD_TYPE, "io.cncf.notary.signingScheme": self.scheme}
        time_name = ("io.cncf.notary.authenticSigningTime"
                     if self.scheme.endswith("signingAuthority") else "io.cncf.notary.signingTime")
        if time_name.endswith("authenticSigningTime"):
            critical.append(time_name)
        header[time_name] = self.signing_time.strftime("%Y-%m-%dT%H:%M:%SZ")
        if self.expiry is not None:
            critical.append("io.cncf.notary.expiry")
            header["io.cncf.notary.expiry"] = self.expiry.strftime("%Y-%m-%dT%H:%M:%SZ")
        for name, value in self.extra_critical.items():
            critical.append(name)
            header[name] = value
        _, alg, _ = _sign(signer.key, b"probe")
        header["alg"] = alg
        header["crit"] = critical
        protected = _b64url(json.dumps(header, separators=(",", ":")).encode())
        payload = _b64url(self.payload())
        signature, _, _ = _sign(signer.key, f"{protected}.{payload}".encode())
        if tamper_payload:
            payload = _b64url(self.payload().replace(b'"size":', b'"size":1'))
        return json.dumps({
            "payload": payload, "protected": protected,
            "header": {"x5c": [base64.b64encode(_der(c)).decode() for c in signer.chain],
                       "io.cncf.notary.signingAgent": "sealgate-tests"},
            "signature": _b64url(signature),
        }).encode()

    def cose(self, signer: Signer, *, tamper_payload: bool = False) -> bytes:
        _, _, alg = _sign(signer.key, b"probe")
        critical: list[Any] = ["io.cncf.notary.signingScheme"]
        header: dict[Any, Any] = {1: alg, 3: PAYLOAD_TYPE,
                                  "io.cncf.notary.signingScheme": self.scheme}
        time_name = ("io.cncf.notary.authenticSigningTime"
                     if self.scheme.endswith("signingAuthority") else "io.cncf.notary.signingTime")
        if time_name.endswith("authenticSigningTime"):
            critical.append(time_name)
        header[time_name] = cbor2.CBORTag(1, int(self.signing_time.timestamp()))
        if self.expiry is not None:
            critical.append("io.cncf.notary.expiry")
            header["io.cncf.notary.expiry"] = cbor2.CBORTag(1, int(self.expiry.timestamp()))
        for name, value in self.extra_critical.items():
            critical.append(name)
            header[name] = value
        header[2] = critical
        protected = cbor2.dumps(header)
        payload = self.payload()
        signature, _, _ = _sign(signer.key, cbor2.dumps(["Signature1", protected, b"", payload]))
        if tamper_payload:
            payload = payload.replace(b'"size":', b'"size":1')
        unprotected = {33: [_der(c) for c in signer.chain],
                       "io.cncf.notary.signingAgent": "sealgate-tests"}
        return cbor2.dumps(cbor2.CBORTag(18, [protected, unprotected, payload, signature]))


# --------------------------------------------------------------------------- registry


def push_notation_signature(
    url: str, repo: str, subject: Mapping[str, Any], envelope: bytes, media_type: str, *,
    legacy: bool = False,
) -> tuple[str, bytes]:
    """A signature manifest with ``subject``: the OCI 1.1 form (``artifactType``, empty
    config) or, with ``legacy``, notation's config-media-type form. Pushed by digest."""
    layer_digest = push_blob(url, repo, envelope)
    config = b"{}"
    push_blob(url, repo, config)
    document: dict[str, Any] = {"schemaVersion": 2, "mediaType": OCI_MANIFEST}
    if legacy:
        document["config"] = {"mediaType": NOTARY_SIGNATURE, "digest": sha256_digest(config),
                              "size": 2}
    else:
        document["artifactType"] = NOTARY_SIGNATURE
        document["config"] = {"mediaType": "application/vnd.oci.empty.v1+json",
                              "digest": sha256_digest(config), "size": 2}
    document["layers"] = [{"mediaType": media_type, "digest": layer_digest,
                           "size": len(envelope)}]
    document["subject"] = dict(subject)
    manifest = json.dumps(document, separators=(",", ":")).encode()
    digest = push_manifest(url, repo, sha256_digest(manifest), manifest, OCI_MANIFEST)
    return digest, manifest


def attach_signatures(url: str, repo: str, subject_digest: str,
                      signatures: Sequence[tuple[str, bytes]]) -> None:
    """List signature manifests in the referrers tag index (the registry has no referrers
    API: distribution 2.8), as notation does for such registries."""
    push_referrers_tag_index(url, repo, subject_digest, list(signatures))


def push_oci_layout(url: str, repo: str, layout: Path) -> dict[str, str]:
    """Push an OCI image layout as ``oras cp`` / notation would: every blob, then every
    manifest its index.json lists (image and signature manifests, then indexes), tagged by
    their ref.name. The registry (distribution 2.8) has no referrers API, so a pushed
    manifest with a ``subject`` that the layout's referrers tag index does not list is
    added to that index, as the distribution spec asks of a pushing client.

    Returns {tag: digest}.
    """
    blobs = layout / "blobs" / "sha256"
    for blob in sorted(blobs.iterdir()):
        data = blob.read_bytes()
        assert hashlib.sha256(data).hexdigest() == blob.name, blob
        push_blob(url, repo, data)
    index = json.loads((layout / "index.json").read_text())
    tags: dict[str, str] = {}
    entries = sorted(index["manifests"], key=lambda m: m["mediaType"] == OCI_INDEX)
    for entry in entries:
        body = (blobs / entry["digest"].removeprefix("sha256:")).read_bytes()
        name = entry.get("annotations", {}).get("org.opencontainers.image.ref.name")
        push_manifest(url, repo, name or entry["digest"], body, entry["mediaType"])
        if name:
            tags[name] = entry["digest"]
    referrers: dict[str, list[tuple[str, bytes]]] = {}
    for entry in entries:
        body = (blobs / entry["digest"].removeprefix("sha256:")).read_bytes()
        subject = json.loads(body).get("subject")
        if subject is not None:
            referrers.setdefault(subject["digest"], []).append((entry["digest"], body))
    for subject_digest, found in referrers.items():
        tag = subject_digest.replace(":", "-")
        listed: set[str] = set()
        if tag in tags:
            body = (blobs / tags[tag].removeprefix("sha256:")).read_bytes()
            listed = {m["digest"] for m in json.loads(body)["manifests"]}
        if not {digest for digest, _ in found} <= listed:
            tags[tag] = push_referrers_tag_index(url, repo, subject_digest, found)
    return tags
