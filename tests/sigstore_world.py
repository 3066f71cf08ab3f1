"""A private, offline sigstore for tests: Fulcio CA, CT log and Rekor log, with real crypto.

Everything is built with ``cryptography``; nothing is mocked. What a verifier sees is
what public-good sigstore would hand it, only signed by keys made here:

- ``FulcioCA``: a P-384 root and P-384 intermediate (like Fulcio's), issuing
  10-minute P-256 leaf certificates with an e-mail or URI SAN, EKU codeSigning,
  the OIDC issuer extensions (1.3.6.1.4.1.57264.1.1 raw string and .1.8 DER
  UTF8String) and an embedded SCT. Issuance follows RFC 6962 §3.1: a
  precertificate with the critical poison extension is signed first, the CT log
  signs its TBSCertificate with the poison removed plus the issuer key hash,
  and the final certificate carries the SCT list instead of the poison.
- ``CTLog``: an ECDSA P-256 certificate-transparency log issuing v1 SCTs.
- ``RekorLog``: an ECDSA P-256 Rekor v1 log issuing Signed Entry Timestamps
  (SETs) over the RFC 8785 canonical JSON of ``{body, integratedTime, logID,
  logIndex}``; ``hashedrekord_body`` and ``dsse_body`` make the entry bodies
  (``dsse_envelope``/``dsse_pae`` sign DSSE envelopes with a leaf). Every entry
  it logs is kept in ``entries`` (index = logIndex), and its ``key`` / ``log_id``
  are public, so a Merkle inclusion proof and a signed checkpoint can be added
  later from the same state.
- ``SigstoreWorld``: one of each, its ``trusted_root.json`` (``trusted_root()``,
  ``write_trusted_root(path)``, ``material()``) and ``keyless_signature_layer``,
  a legacy cosign keyless ``.sig`` layer for an image reference and digest.

Typical use::

    world = SigstoreWorld.create()
    leaf = world.issue_leaf(email="dev@example.com", issuer="https://issuer.example")
    layer = world.keyless_signature_layer(leaf, "registry.test/app", digest)
    verify_keyless_signature(layer, identity=..., trust=world.material(), ...)

Negative cases swap one part: a leaf from another ``FulcioCA`` (``fulcio=``), an SCT
from an untrusted ``CTLog`` (``ctlog=``) or another certificate's SCT (``scts=``), a
SET from another ``RekorLog`` (``rekor=``), or a Rekor entry for another body.
"""

from __future__ import annotations

import base64
import hashlib
import json
import struct
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import rfc8785
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID

from tests.signing import simple_signing_payload
from webhook.oci import (
    COSIGN_BUNDLE_ANNOTATION,
    COSIGN_CERTIFICATE_ANNOTATION,
    COSIGN_CHAIN_ANNOTATION,
    COSIGN_SIGNATURE_ANNOTATION,
    COSIGN_SIMPLE_SIGNING,
    SignatureLayer,
)
from webhook.signatures.trust import TrustedRootMaterial, parse_trusted_root

TRUSTED_ROOT_MEDIA_TYPE = "application/vnd.dev.sigstore.trustedroot+json;version=0.1"
OIDC_ISSUER_V1_OID = x509.ObjectIdentifier("1.3.6.1.4.1.57264.1.1")  # raw string
OIDC_ISSUER_V2_OID = x509.ObjectIdentifier("1.3.6.1.4.1.57264.1.8")  # DER UTF8String
SCT_LIST_OID = x509.ObjectIdentifier("1.3.6.1.4.1.11129.2.4.2")
PRECERT_POISON_OID = x509.ObjectIdentifier("1.3.6.1.4.1.11129.2.4.3")
DEFAULT_ISSUER = "https://oidc.sigstore-world.test"
LEAF_VALIDITY = timedelta(minutes=10)


def utc_now() -> datetime:
    """Now, in whole seconds (certificate times have one-second precision)."""
    return datetime.now(UTC).replace(microsecond=0)


def _rfc3339(moment: datetime) -> str:
    return moment.astimezone(UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


def _b64(data: bytes) -> str:
    return base64.b64encode(data).decode()


def spki_der(key: ec.EllipticCurvePublicKey) -> bytes:
    """DER SubjectPublicKeyInfo of ``key``."""
    return key.public_bytes(
        serialization.Encoding.DER, serialization.PublicFormat.SubjectPublicKeyInfo
    )


def certificate_pem(certificate: x509.Certificate) -> str:
    return certificate.public_bytes(serialization.Encoding.PEM).decode()


# --------------------------------------------------------------------------- DER bits


def _der_length(length: int) -> bytes:
    if length < 0x80:
        return bytes([length])
    encoded = length.to_bytes((length.bit_length() + 7) // 8, "big")
    return bytes([0x80 | len(encoded)]) + encoded


def der_tlv(tag: int, content: bytes) -> bytes:
    """One DER element: tag, definite length, content."""
    return bytes([tag]) + _der_length(len(content)) + content


def der_utf8string(text: str) -> bytes:
    return der_tlv(0x0C, text.encode())


def _der_elements(data: bytes) -> list[tuple[int, bytes, bytes]]:
    """Split concatenated DER elements into (tag, content, whole element)."""
    elements = []
    offset = 0
    while offset < len(data):
        tag = data[offset]
        first = data[offset + 1]
        if first < 0x80:
            length, header = first, 2
        else:
            count = first & 0x7F
            length = int.from_bytes(data[offset + 2 : offset + 2 + count], "big")
            header = 2 + count
        end = offset + header + length
        elements.append((tag, data[offset + header : end], data[offset:end]))
        offset = end
    return elements


def tbs_without_extension(tbs: bytes, oid: x509.ObjectIdentifier) -> bytes:
    """Re-encode a DER TBSCertificate with the extension ``oid`` removed (RFC 6962 §3.2)."""
    [(tag, content, _)] = _der_elements(tbs)
    assert tag == 0x30, "TBSCertificate is a SEQUENCE"
    oid_tlv = _encode_oid(oid)
    fields = []
    for field_tag, field_content, whole in _der_elements(content):
        if field_tag == 0xA3:  # [3] EXPLICIT Extensions
            [(_, extensions, _)] = _der_elements(field_content)
            kept = b"".join(
                ext for _, ext_content, ext in _der_elements(extensions)
                if not ext_content.startswith(oid_tlv)
            )
            fields.append(der_tlv(0xA3, der_tlv(0x30, kept)))
        else:
            fields.append(whole)
    return der_tlv(0x30, b"".join(fields))


def _encode_oid(oid: x509.ObjectIdentifier) -> bytes:
    arcs = [int(arc) for arc in oid.dotted_string.split(".")]
    body = bytearray([arcs[0] * 40 + arcs[1]])
    for arc in arcs[2:]:
        chunk = [arc & 0x7F]
        arc >>= 7
        while arc:
            chunk.append(0x80 | (arc & 0x7F))
            arc >>= 7
        body.extend(reversed(chunk))
    return der_tlv(0x06, bytes(body))


# --------------------------------------------------------------------------- CT log


@dataclass(frozen=True, slots=True)
class CTLog:
    """An RFC 6962 log: its logId is sha256 of the DER SPKI of its key."""

    key: ec.EllipticCurvePrivateKey
    base_url: str = "https://ctfe.sigstore-world.test"
    valid_from: datetime | None = None
    valid_until: datetime | None = None

    @classmethod
    def create(cls, **window: Any) -> CTLog:
        return cls(ec.generate_private_key(ec.SECP256R1()), **window)

    @property
    def log_id(self) -> bytes:
        return hashlib.sha256(spki_der(self.key.public_key())).digest()

    def sign_precertificate(
        self, precert_tbs: bytes, issuer_key_hash: bytes, timestamp: datetime
    ) -> bytes:
        """A TLS-encoded v1 SCT for a precertificate entry (RFC 6962 §3.2).

        Signed: version(0) ‖ signature_type certificate_timestamp(0) ‖ timestamp (ms, u64)
        ‖ entry_type precert_entry(1, u16) ‖ issuer_key_hash[32] ‖ tbs<u24> ‖ extensions<u16>.
        """
        milliseconds = (timestamp - datetime(1970, 1, 1, tzinfo=UTC)) // timedelta(milliseconds=1)
        extensions = b""
        signed = (
            struct.pack("!BBQH", 0, 0, milliseconds, 1)
            + issuer_key_hash
            + len(precert_tbs).to_bytes(3, "big")
            + precert_tbs
            + struct.pack("!H", len(extensions))
            + extensions
        )
        signature = self.key.sign(signed, ec.ECDSA(hashes.SHA256()))
        return (
            struct.pack("!B", 0)
            + self.log_id
            + struct.pack("!QH", milliseconds, len(extensions))
            + extensions
            + struct.pack("!BBH", 4, 3, len(signature))  # sha256, ecdsa
            + signature
        )

    def trusted_root_entry(self) -> dict[str, Any]:
        return _log_instance(self.key.public_key(), self.base_url, self.valid_from,
                             self.valid_until)


def sct_list_extension(scts: Sequence[bytes]) -> x509.UnrecognizedExtension:
    """The X.509 SCT-list extension: an OCTET STRING holding a TLS SCT list (RFC 6962 §3.3)."""
    entries = b"".join(struct.pack("!H", len(sct)) + sct for sct in scts)
    listed = struct.pack("!H", len(entries)) + entries
    return x509.UnrecognizedExtension(SCT_LIST_OID, der_tlv(0x04, listed))


def _log_instance(
    key: ec.EllipticCurvePublicKey,
    base_url: str,
    valid_from: datetime | None,
    valid_until: datetime | None,
) -> dict[str, Any]:
    window: dict[str, str] = {
        "start": _rfc3339(valid_from or datetime(2020, 1, 1, tzinfo=UTC))
    }
    if valid_until is not None:
        window["end"] = _rfc3339(valid_until)
    der = spki_der(key)
    return {
        "baseUrl": base_url,
        "hashAlgorithm": "SHA2_256",
        "publicKey": {
            "rawBytes": _b64(der),
            "keyDetails": "PKIX_ECDSA_P256_SHA_256",
            "validFor": window,
        },
        "logId": {"keyId": _b64(hashlib.sha256(der).digest())},
    }


# --------------------------------------------------------------------------- Fulcio


@dataclass(frozen=True, slots=True)
class FulcioLeaf:
    """A Fulcio-style signing certificate, its private key, and how it chains."""

    key: ec.EllipticCurvePrivateKey
    certificate: x509.Certificate
    precertificate: x509.Certificate
    chain: tuple[x509.Certificate, ...]  # intermediate, root
    scts: tuple[bytes, ...]  # TLS-encoded SCTs embedded in ``certificate``

    @property
    def not_before(self) -> datetime:
        return self.certificate.not_valid_before_utc

    @property
    def not_after(self) -> datetime:
        return self.certificate.not_valid_after_utc

    def sign(self, payload: bytes) -> bytes:
        """ECDSA P-256 / SHA-256 over ``payload``, as cosign signs with an ephemeral key."""
        return self.key.sign(payload, ec.ECDSA(hashes.SHA256()))

    @property
    def pem(self) -> str:
        return certificate_pem(self.certificate)

    @property
    def chain_pem(self) -> str:
        return "".join(certificate_pem(cert) for cert in self.chain)


@dataclass(frozen=True, slots=True)
class FulcioCA:
    """A root and an intermediate CA, shaped like public-good Fulcio's (P-384, pathLen 0)."""

    root_key: ec.EllipticCurvePrivateKey
    root: x509.Certificate
    intermediate_key: ec.EllipticCurvePrivateKey
    intermediate: x509.Certificate
    uri: str = "https://fulcio.sigstore-world.test"
    valid_from: datetime | None = None
    valid_until: datetime | None = None

    @classmethod
    def create(
        cls,
        *,
        not_before: datetime | None = None,
        not_after: datetime | None = None,
        name: str = "sigstore-world",
        valid_from: datetime | None = None,
        valid_until: datetime | None = None,
    ) -> FulcioCA:
        """CA certificates valid ``not_before``..``not_after`` (default: a year ago, +10 years);
        ``valid_from``/``valid_until`` is the trusted root's validFor window for this CA."""
        start = not_before or utc_now() - timedelta(days=365)
        end = not_after or start + timedelta(days=3650)
        root_key = ec.generate_private_key(ec.SECP384R1())
        root_name = _ca_name(name)
        root = _ca_certificate(root_name, root_key, root_name, root_key, start, end, None)
        intermediate_key = ec.generate_private_key(ec.SECP384R1())
        intermediate = _ca_certificate(
            _ca_name(f"{name}-intermediate"), intermediate_key, root_name, root_key, start, end, 0
        )
        return cls(root_key, root, intermediate_key, intermediate,
                   valid_from=valid_from, valid_until=valid_until)

    @property
    def chain(self) -> tuple[x509.Certificate, ...]:
        return (self.intermediate, self.root)

    def issue(
        self,
        ctlog: CTLog,
        *,
        email: str | None = None,
        uri: str | None = None,
        issuer: str | None = DEFAULT_ISSUER,
        issuer_v1: str | None = None,
        not_before: datetime | None = None,
        validity: timedelta = LEAF_VALIDITY,
        scts: Sequence[bytes] | None = None,
        code_signing: bool = True,
        claims: Mapping[str, bytes] | None = None,
    ) -> FulcioLeaf:
        """Issue a leaf with an embedded SCT from ``ctlog``.

        ``issuer`` goes into the .1.8 extension and ``issuer_v1`` into .1.1 (default: the
        same value as ``issuer``; pass ``issuer=None`` for a .1.1-only certificate, as
        Fulcio issued before 2023). ``scts`` embeds these SCTs instead of a fresh one
        (e.g. another certificate's, which must not verify). ``claims`` adds extensions
        by dotted OID with their encoded value (raw string or DER UTF8String, as Fulcio).
        """
        if email is None and uri is None:
            raise ValueError("a Fulcio certificate needs an email or URI SAN")
        start = not_before or utc_now()
        key = ec.generate_private_key(ec.SECP256R1())
        names: list[x509.GeneralName] = []
        if email is not None:
            names.append(x509.RFC822Name(email))
        if uri is not None:
            names.append(x509.UniformResourceIdentifier(uri))
        usages = [ExtendedKeyUsageOID.CODE_SIGNING if code_signing
                  else ExtendedKeyUsageOID.CLIENT_AUTH]
        builder = (
            x509.CertificateBuilder()
            .subject_name(x509.Name([]))
            .issuer_name(self.intermediate.subject)
            .public_key(key.public_key())
            .serial_number(x509.random_serial_number())
            .not_valid_before(start)
            .not_valid_after(start + validity)
            .add_extension(_key_usage(digital_signature=True), critical=True)
            .add_extension(x509.ExtendedKeyUsage(usages), critical=False)
            .add_extension(x509.SubjectKeyIdentifier.from_public_key(key.public_key()),
                           critical=False)
            .add_extension(
                x509.AuthorityKeyIdentifier.from_issuer_public_key(
                    self.intermediate_key.public_key()),
                critical=False,
            )
            .add_extension(x509.SubjectAlternativeName(names), critical=True)
        )
        v1 = issuer if issuer_v1 is None else issuer_v1
        if v1 is not None:
            builder = builder.add_extension(
                x509.UnrecognizedExtension(OIDC_ISSUER_V1_OID, v1.encode()), critical=False)
        if issuer is not None:
            builder = builder.add_extension(
                x509.UnrecognizedExtension(OIDC_ISSUER_V2_OID, der_utf8string(issuer)),
                critical=False,
            )
        for oid, value in (claims or {}).items():
            builder = builder.add_extension(
                x509.UnrecognizedExtension(x509.ObjectIdentifier(oid), value), critical=False)
        # RFC 6962 §3.1: the precertificate carries the poison where the SCTs will go.
        precertificate = builder.add_extension(x509.PrecertPoison(), critical=True).sign(
            self.intermediate_key, hashes.SHA384()
        )
        precert_tbs = tbs_without_extension(
            precertificate.tbs_certificate_bytes, PRECERT_POISON_OID
        )
        if scts is None:
            issuer_key_hash = hashlib.sha256(spki_der(self.intermediate_key.public_key())).digest()
            scts = [ctlog.sign_precertificate(precert_tbs, issuer_key_hash, start)]
        certificate = builder.add_extension(sct_list_extension(scts), critical=False).sign(
            self.intermediate_key, hashes.SHA384()
        )
        # The verifier's view (cryptography strips the SCT list) must be what the log signed.
        assert certificate.tbs_precertificate_bytes == precert_tbs
        return FulcioLeaf(key, certificate, precertificate, self.chain, tuple(scts))

    def trusted_root_entry(self) -> dict[str, Any]:
        window: dict[str, str] = {
            "start": _rfc3339(self.valid_from or self.root.not_valid_before_utc)
        }
        if self.valid_until is not None:
            window["end"] = _rfc3339(self.valid_until)
        return {
            "subject": {"organization": "sigstore-world.test", "commonName": "sigstore-world"},
            "uri": self.uri,
            "certChain": {"certificates": [
                {"rawBytes": _b64(cert.public_bytes(serialization.Encoding.DER))}
                for cert in self.chain
            ]},
            "validFor": window,
        }


def _ca_name(common_name: str) -> x509.Name:
    return x509.Name([
        x509.NameAttribute(NameOID.ORGANIZATION_NAME, "sigstore-world.test"),
        x509.NameAttribute(NameOID.COMMON_NAME, common_name),
    ])


def _key_usage(*, digital_signature: bool = False, cert_sign: bool = False) -> x509.KeyUsage:
    return x509.KeyUsage(
        digital_signature=digital_signature, content_commitment=False, key_encipherment=False,
        data_encipherment=False, key_agreement=False, key_cert_sign=cert_sign,
        crl_sign=cert_sign, encipher_only=False, decipher_only=False,
    )


def _ca_certificate(
    subject: x509.Name,
    key: ec.EllipticCurvePrivateKey,
    issuer: x509.Name,
    issuer_key: ec.EllipticCurvePrivateKey,
    not_before: datetime,
    not_after: datetime,
    path_length: int | None,
) -> x509.Certificate:
    builder = (
        x509.CertificateBuilder()
        .subject_name(subject)
        .issuer_name(issuer)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(not_before)
        .not_valid_after(not_after)
        .add_extension(_key_usage(cert_sign=True), critical=True)
        .add_extension(x509.BasicConstraints(ca=True, path_length=path_length), critical=True)
        .add_extension(x509.SubjectKeyIdentifier.from_public_key(key.public_key()),
                       critical=False)
        .add_extension(
            x509.AuthorityKeyIdentifier.from_issuer_public_key(issuer_key.public_key()),
            critical=False,
        )
    )
    if path_length is not None:  # Fulcio's intermediate is for code signing only
        builder = builder.add_extension(
            x509.ExtendedKeyUsage([ExtendedKeyUsageOID.CODE_SIGNING]), critical=False)
    return builder.sign(issuer_key, hashes.SHA384())


# --------------------------------------------------------------------------- Rekor


@dataclass(frozen=True, slots=True)
class RekorLogEntry:
    """One logged entry: what its SET covers, and the SET itself."""

    body: bytes  # the entry as Rekor stores it (canonical JSON)
    integrated_time: int
    log_index: int
    log_id: str  # hex
    signed_entry_timestamp: bytes

    def bundle(self) -> dict[str, Any]:
        """cosign's ``dev.sigstore.cosign/bundle`` document (the SET plus its payload)."""
        return {
            "SignedEntryTimestamp": _b64(self.signed_entry_timestamp),
            "Payload": {
                "body": _b64(self.body),
                "integratedTime": self.integrated_time,
                "logIndex": self.log_index,
                "logID": self.log_id,
            },
        }

    def bundle_annotation(self) -> str:
        return json.dumps(self.bundle(), separators=(",", ":"))


@dataclass(slots=True)
class RekorLog:
    """A Rekor v1 log: logID = sha256 of the DER SPKI of ``key``; entries kept in order.

    ``entries[i]`` has logIndex ``i`` — the leaves (RFC 6962 leaf hash
    sha256(0x00 ‖ body)) from which an inclusion proof and checkpoint could be built.
    """

    key: ec.EllipticCurvePrivateKey
    base_url: str = "https://rekor.sigstore-world.test"
    valid_from: datetime | None = None
    valid_until: datetime | None = None
    entries: list[RekorLogEntry] = field(default_factory=list)

    @classmethod
    def create(cls, **window: Any) -> RekorLog:
        return cls(ec.generate_private_key(ec.SECP256R1()), **window)

    @property
    def log_id(self) -> str:
        return hashlib.sha256(spki_der(self.key.public_key())).hexdigest()

    def log(self, body: bytes, integrated_time: int) -> RekorLogEntry:
        """Append ``body`` and sign its SET over the canonical JSON of the entry."""
        entry = self.set_for(body, integrated_time, len(self.entries))
        self.entries.append(entry)
        return entry

    def set_for(self, body: bytes, integrated_time: int, log_index: int = 0) -> RekorLogEntry:
        """A SET over an entry without logging it (e.g. a SET naming a doctored body)."""
        entry_fields: dict[str, Any] = {
            "body": _b64(body),
            "integratedTime": integrated_time,
            "logID": self.log_id,
            "logIndex": log_index,
        }
        signature = self.key.sign(rfc8785.dumps(entry_fields), ec.ECDSA(hashes.SHA256()))
        return RekorLogEntry(body, integrated_time, log_index, self.log_id, signature)

    def trusted_root_entry(self) -> dict[str, Any]:
        return _log_instance(self.key.public_key(), self.base_url, self.valid_from,
                             self.valid_until)


def hashedrekord_body(payload: bytes, signature: bytes, signer_pem: str | bytes) -> bytes:
    """A ``hashedrekord`` 0.0.1 entry body as Rekor stores it (canonical JSON).

    ``signer_pem`` is the leaf certificate PEM (keyless) or a PEM public key.
    """
    pem = signer_pem.encode() if isinstance(signer_pem, str) else signer_pem
    return rfc8785.dumps({
        "apiVersion": "0.0.1",
        "kind": "hashedrekord",
        "spec": {
            "data": {"hash": {"algorithm": "sha256",
                              "value": hashlib.sha256(payload).hexdigest()}},
            "signature": {"content": _b64(signature), "publicKey": {"content": _b64(pem)}},
        },
    })


def dsse_pae(payload_type: str, payload: bytes) -> bytes:
    """DSSE v1 pre-authentication encoding: what a DSSE signature covers."""
    return b"DSSEv1 %d %s %d %s" % (
        len(payload_type.encode()), payload_type.encode(), len(payload), payload)


def dsse_envelope(leaf: FulcioLeaf, payload_type: str, payload: bytes) -> dict[str, Any]:
    """A DSSE envelope (JSON form) signed by ``leaf`` over ``dsse_pae(payload_type, payload)``."""
    return {
        "payloadType": payload_type,
        "payload": _b64(payload),
        "signatures": [{"keyid": "", "sig": _b64(leaf.sign(dsse_pae(payload_type, payload)))}],
    }


def dsse_body(envelope: bytes, signer_pem: str | bytes) -> bytes:
    """A Rekor ``dsse`` 0.0.1 entry body (canonical JSON) for the serialized ``envelope``.

    Records sha256 of the envelope bytes and of its decoded payload, and each signature
    with ``signer_pem`` (the leaf certificate) as verifier, as sigstore-python checks it.
    """
    pem = signer_pem.encode() if isinstance(signer_pem, str) else signer_pem
    document = json.loads(envelope)
    payload = base64.b64decode(document["payload"])
    return rfc8785.dumps({
        "apiVersion": "0.0.1",
        "kind": "dsse",
        "spec": {
            "envelopeHash": {"algorithm": "sha256",
                             "value": hashlib.sha256(envelope).hexdigest()},
            "payloadHash": {"algorithm": "sha256", "value": hashlib.sha256(payload).hexdigest()},
            "signatures": [
                {"signature": signature["sig"], "verifier": _b64(pem)}
                for signature in document["signatures"]
            ],
        },
    })


# --------------------------------------------------------------------------- the world


@dataclass(slots=True)
class SigstoreWorld:
    """One Fulcio CA, CT log and Rekor log, and the trusted root that names them."""

    fulcio: FulcioCA
    ctlog: CTLog
    rekor: RekorLog

    @classmethod
    def create(cls) -> SigstoreWorld:
        return cls(FulcioCA.create(), CTLog.create(), RekorLog.create())

    # trusted root ---------------------------------------------------------------

    def trusted_root(self) -> dict[str, Any]:
        """The trusted_root.json document (sigstore protobuf-specs TrustedRoot, v0.1)."""
        return {
            "mediaType": TRUSTED_ROOT_MEDIA_TYPE,
            "tlogs": [self.rekor.trusted_root_entry()],
            "certificateAuthorities": [self.fulcio.trusted_root_entry()],
            "ctlogs": [self.ctlog.trusted_root_entry()],
            "timestampAuthorities": [],
        }

    def write_trusted_root(self, path: Path | str) -> Path:
        """Write ``trusted_root()`` as JSON to ``path`` (load_trusted_root can read it)."""
        target = Path(path)
        target.write_text(json.dumps(self.trusted_root(), indent=2))
        return target

    def material(self) -> TrustedRootMaterial:
        """The trusted root as the verifiers see it, parsed by webhook.signatures.trust."""
        content = json.dumps(self.trusted_root()).encode()
        return parse_trusted_root(content, source="sigstore-world")

    # signing --------------------------------------------------------------------

    def issue_leaf(
        self, *, fulcio: FulcioCA | None = None, ctlog: CTLog | None = None, **options: Any
    ) -> FulcioLeaf:
        """A leaf from this world's (or the given) CA with an SCT from this (or the given)
        CT log; ``options`` as FulcioCA.issue (email, uri, issuer, issuer_v1, not_before,
        validity, scts, code_signing)."""
        return (fulcio or self.fulcio).issue(ctlog or self.ctlog, **options)

    def keyless_signature_layer(
        self,
        leaf: FulcioLeaf,
        docker_reference: str,
        digest: str,
        *,
        payload: bytes | None = None,
        integrated_time: int | None = None,
        rekor: RekorLog | None = None,
        tlog: bool = True,
        chain: bool = True,
    ) -> SignatureLayer:
        """A legacy cosign keyless ``.sig`` layer, as ``cosign sign`` pushes it.

        The payload (simple signing for ``docker_reference``/``digest`` unless given) is
        signed by the leaf key and logged in ``rekor`` (default: this world's log) at
        ``integrated_time`` (default: two seconds after the leaf's notBefore). ``tlog=False``
        leaves the bundle out, ``chain=False`` the chain annotation.
        """
        signed = payload if payload is not None else simple_signing_payload(
            docker_reference, digest)
        signature = leaf.sign(signed)
        annotations = {
            COSIGN_SIGNATURE_ANNOTATION: _b64(signature),
            COSIGN_CERTIFICATE_ANNOTATION: leaf.pem,
        }
        if chain:
            annotations[COSIGN_CHAIN_ANNOTATION] = leaf.chain_pem
        if tlog:
            when = integrated_time
            if when is None:
                when = int(leaf.not_before.timestamp()) + 2
            entry = (rekor or self.rekor).log(
                hashedrekord_body(signed, signature, leaf.pem), when)
            annotations[COSIGN_BUNDLE_ANNOTATION] = entry.bundle_annotation()
        return SignatureLayer(COSIGN_SIMPLE_SIGNING, signed, annotations)
