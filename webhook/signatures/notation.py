"""Notary Project signature envelopes (JWS and COSE), verified per the Notary Project spec.

notaryproject/specifications: signature-specification.md, signature-envelope-jws.md,
signature-envelope-cose.md, trust-store-trust-policy.md. The steps and what each
level does with a failure:

- integrity (always fails): the envelope parses, every critical header is understood,
  the signature verifies with the leaf certificate's key under the declared algorithm,
  and the signed ``targetArtifact`` is the image (digest, size and media type);
- authenticity (always fails): the x5c chain is well-formed (each certificate signed by
  the next, ending in a self-signed root), one of its certificates is in the trust
  store of the envelope's signing scheme, and the leaf matches ``trustedIdentities``;
- authentic timestamp (strict fails, permissive records): the chain is valid at the
  authentic signing time: the RFC 3161 countersignature's time when it chains to the
  ``tsa`` roots (``notary.x509``), the signed ``authenticSigningTime``
  (``notary.x509.signingAuthority``), else now;
- expiry (strict fails, permissive records): the signature's ``expiry`` has not passed.

Revocation (CRL/OCSP) is not checked: the admission path makes no requests beyond the
registry. A verification plugin named as critical cannot be honoured: it fails.
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import itertools
import json
from collections.abc import Mapping
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any

import cbor2
from cryptography import x509
from cryptography.exceptions import InvalidSignature, UnsupportedAlgorithm
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec, padding, rsa
from cryptography.hazmat.primitives.asymmetric.utils import encode_dss_signature

from webhook.errors import VerificationError
from webhook.oci import Descriptor
from webhook.policy import NotationAuthority
from webhook.signatures.cosign import reject_duplicate_keys
from webhook.signatures.timestamp import Timestamp, verify_timestamp_token

NOTARY_SIGNATURE = "application/vnd.cncf.notary.signature"
JWS_MEDIA_TYPE = "application/jose+json"
COSE_MEDIA_TYPE = "application/cose"
ENVELOPE_MEDIA_TYPES = (JWS_MEDIA_TYPE, COSE_MEDIA_TYPE)
PAYLOAD_MEDIA_TYPE = "application/vnd.cncf.notary.payload.v1+json"
SCHEME_X509 = "notary.x509"
SCHEME_SIGNING_AUTHORITY = "notary.x509.signingAuthority"
MAX_ENVELOPE_BYTES = 256 * 1024
MAX_CHAIN = 10

_NOTARY = "io.cncf.notary."
SIGNING_SCHEME = _NOTARY + "signingScheme"
SIGNING_TIME = _NOTARY + "signingTime"
AUTHENTIC_SIGNING_TIME = _NOTARY + "authenticSigningTime"
EXPIRY = _NOTARY + "expiry"
VERIFICATION_PLUGIN = _NOTARY + "verificationPlugin"
VERIFICATION_PLUGIN_MIN_VERSION = _NOTARY + "verificationPluginMinVersion"
TIMESTAMP_SIGNATURE = _NOTARY + "timestampSignature"
# critical headers a verifier without plugins understands (besides the JOSE/COSE ones)
_UNDERSTOOD_CRITICAL = frozenset({SIGNING_SCHEME, EXPIRY, AUTHENTIC_SIGNING_TIME})
_PLUGIN_HEADERS = frozenset({VERIFICATION_PLUGIN, VERIFICATION_PLUGIN_MIN_VERSION})

# JWS "alg" / COSE alg number -> (name, hash, RSA-PSS key bits or EC curve name)
_ALGORITHMS: Mapping[str | int, tuple[str, type[hashes.HashAlgorithm], int | str]] = {
    "PS256": ("PS256", hashes.SHA256, 2048),
    "PS384": ("PS384", hashes.SHA384, 3072),
    "PS512": ("PS512", hashes.SHA512, 4096),
    "ES256": ("ES256", hashes.SHA256, "secp256r1"),
    "ES384": ("ES384", hashes.SHA384, "secp384r1"),
    "ES512": ("ES512", hashes.SHA512, "secp521r1"),
    -37: ("PS256", hashes.SHA256, 2048),
    -38: ("PS384", hashes.SHA384, 3072),
    -39: ("PS512", hashes.SHA512, 4096),
    -7: ("ES256", hashes.SHA256, "secp256r1"),
    -35: ("ES384", hashes.SHA384, "secp384r1"),
    -36: ("ES512", hashes.SHA512, "secp521r1"),
}


@dataclass(frozen=True, slots=True)
class Envelope:
    """A parsed Notary Project signature envelope (either format)."""

    format: str  # "JWS" | "COSE"
    algorithm: str | int
    critical: tuple[str, ...]
    content_type: str
    protected: Mapping[str | int, Any]
    payload: bytes
    signing_input: bytes
    signature: bytes
    chain: tuple[x509.Certificate, ...]
    timestamp_token: bytes | None = None

    def header_time(self, name: str) -> datetime | None:
        value = self.protected.get(name)
        if value is None:
            return None
        if isinstance(value, datetime):  # COSE: CBOR tag 1
            return value if value.tzinfo else value.replace(tzinfo=UTC)
        if isinstance(value, str):  # JWS: RFC 3339
            try:
                moment = datetime.fromisoformat(value.replace("Z", "+00:00"))
            except ValueError:
                raise VerificationError(f"integrity: {name} {value!r} is not a time") from None
            if moment.tzinfo is None:
                raise VerificationError(f"integrity: {name} {value!r} has no time zone")
            return moment.astimezone(UTC)
        raise VerificationError(f"integrity: {name} is not a time")


@dataclass(frozen=True, slots=True)
class NotationVerified:
    """A signature that satisfies the authority; ``notes`` are what permissive let pass."""

    leaf_subject: str
    signing_time: datetime | None
    timestamp: Timestamp | None
    notes: tuple[str, ...] = field(default=())


# --------------------------------------------------------------------------- parsing


def parse_envelope(media_type: str, blob: bytes) -> Envelope:
    """The envelope of a signature manifest's layer; VerificationError ("integrity: ...")."""
    if len(blob) > MAX_ENVELOPE_BYTES:
        raise VerificationError(f"integrity: envelope of {len(blob)} bytes is too large")
    if media_type == JWS_MEDIA_TYPE:
        return _parse_jws(blob)
    if media_type == COSE_MEDIA_TYPE:
        return _parse_cose(blob)
    raise VerificationError(
        f"integrity: unsupported envelope media type {media_type!r} "
        f"(expected {JWS_MEDIA_TYPE} or {COSE_MEDIA_TYPE})"
    )


def _b64url(text: object, what: str) -> bytes:
    # Strict: no padding, URL alphabet (notation-core-go uses RawURLEncoding).
    if not isinstance(text, str) or "=" in text:
        raise VerificationError(f"integrity: JWS {what} is not unpadded base64url")
    try:
        return base64.b64decode(text + "=" * (-len(text) % 4), altchars=b"-_", validate=True)
    except (binascii.Error, ValueError):
        raise VerificationError(f"integrity: JWS {what} is not unpadded base64url") from None


def _json(data: bytes, what: str) -> dict[str, Any]:
    try:
        value = json.loads(data, object_pairs_hook=reject_duplicate_keys(what))
    except VerificationError as exc:
        raise VerificationError(f"integrity: {exc}") from None
    except (ValueError, UnicodeDecodeError, RecursionError):
        raise VerificationError(f"integrity: {what} is not JSON") from None
    if not isinstance(value, dict):
        raise VerificationError(f"integrity: {what} is not a JSON object")
    return value


def _parse_jws(blob: bytes) -> Envelope:
    document = _json(blob, "JWS envelope")
    unknown = set(document) - {"payload", "protected", "header", "signature"}
    if unknown or not {"payload", "protected", "signature"} <= set(document):
        raise VerificationError(
            "integrity: not a flattened JWS JSON envelope (payload, protected, header, signature)"
        )
    protected_text = document["protected"]
    payload_text = document["payload"]
    protected = _json(_b64url(protected_text, "protected header"), "JWS protected header")
    payload = _b64url(payload_text, "payload")
    signature = _b64url(document["signature"], "signature")
    header = document.get("header", {})
    if not isinstance(header, dict):
        raise VerificationError("integrity: JWS unprotected header is not an object")
    x5c = header.get("x5c")
    if not isinstance(x5c, list) or not x5c or not all(isinstance(c, str) for c in x5c):
        raise VerificationError("integrity: JWS header has no x5c certificate chain")
    chain = _certificates([_std_b64(c, "x5c certificate") for c in x5c])
    token_text = header.get(TIMESTAMP_SIGNATURE)
    token = None if token_text is None else _std_b64(token_text, "timestamp signature")
    critical = protected.get("crit", [])
    if not isinstance(critical, list) or not all(isinstance(c, str) for c in critical):
        raise VerificationError("integrity: JWS crit is not a list of header names")
    return Envelope(
        format="JWS",
        algorithm=protected.get("alg", ""),
        critical=tuple(critical),
        content_type=str(protected.get("cty", "")),
        protected={k: v for k, v in protected.items() if k not in ("alg", "crit", "cty")},
        payload=payload,
        signing_input=f"{protected_text}.{payload_text}".encode("ascii"),
        signature=signature,
        chain=chain,
        timestamp_token=token,
    )


def _std_b64(text: object, what: str) -> bytes:
    if not isinstance(text, str):
        raise VerificationError(f"integrity: {what} is not base64")
    try:
        return base64.b64decode(text, validate=True)
    except (binascii.Error, ValueError):
        raise VerificationError(f"integrity: {what} is not base64") from None


def _parse_cose(blob: bytes) -> Envelope:
    try:
        message = cbor2.loads(blob)
    except (cbor2.CBORDecodeError, ValueError, RecursionError) as exc:
        raise VerificationError(f"integrity: COSE envelope is not CBOR: {exc}") from None
    if not isinstance(message, cbor2.CBORTag) or message.tag != 18:
        raise VerificationError("integrity: not a COSE_Sign1_Tagged message (CBOR tag 18)")
    parts = message.value
    if not isinstance(parts, list | tuple) or len(parts) != 4:
        raise VerificationError("integrity: COSE_Sign1 must have four parts")
    protected_bytes, unprotected, payload, signature = parts
    # cbor2 decodes maps inside a tag as its immutable frozendict: any Mapping will do
    if not isinstance(protected_bytes, bytes) or not isinstance(unprotected, Mapping):
        raise VerificationError("integrity: COSE_Sign1 headers are malformed")
    if not isinstance(payload, bytes) or not isinstance(signature, bytes):
        raise VerificationError("integrity: COSE_Sign1 needs an attached payload and signature")
    try:
        protected = cbor2.loads(protected_bytes) if protected_bytes else {}
    except (cbor2.CBORDecodeError, ValueError) as exc:
        raise VerificationError(f"integrity: COSE protected header: {exc}") from None
    if not isinstance(protected, Mapping):
        raise VerificationError("integrity: COSE protected header is not a map")
    chain_value = unprotected.get(33)  # x5chain
    if isinstance(chain_value, bytes):
        chain_value = [chain_value]
    if not isinstance(chain_value, list | tuple) or not chain_value or not all(
        isinstance(c, bytes) for c in chain_value
    ):
        raise VerificationError("integrity: COSE header has no x5chain certificate chain")
    token = unprotected.get(TIMESTAMP_SIGNATURE)
    if token is not None and not isinstance(token, bytes):
        raise VerificationError("integrity: COSE timestamp signature is not a byte string")
    critical = protected.get(2, [])
    if not isinstance(critical, list | tuple):
        raise VerificationError("integrity: COSE crit is not a list")
    signing_input = cbor2.dumps(["Signature1", protected_bytes, b"", payload])
    return Envelope(
        format="COSE",
        algorithm=protected.get(1, ""),
        critical=tuple(str(c) for c in critical),
        content_type=str(protected.get(3, "")),
        protected={k: v for k, v in protected.items() if k not in (1, 2, 3)},
        payload=payload,
        signing_input=signing_input,
        signature=signature,
        chain=_certificates(list(chain_value)),
        timestamp_token=token,
    )


def _certificates(ders: list[bytes]) -> tuple[x509.Certificate, ...]:
    if len(ders) > MAX_CHAIN:
        raise VerificationError(f"integrity: certificate chain of {len(ders)} is too long")
    try:
        return tuple(x509.load_der_x509_certificate(der) for der in ders)
    except ValueError as exc:
        raise VerificationError(f"integrity: unreadable x5c certificate: {exc}") from None


# --------------------------------------------------------------------------- verification


def verify_notation_signature(
    media_type: str,
    blob: bytes,
    *,
    subject: Descriptor,
    image_digest: str,
    authority: NotationAuthority,
    now: datetime,
) -> NotationVerified:
    """Verify one signature envelope on ``image_digest``; VerificationError if it does not
    satisfy ``authority`` at its level (the message starts with the failed step)."""
    envelope = parse_envelope(media_type, blob)
    scheme = _check_headers(envelope)
    _check_signature(envelope)
    _check_target(envelope.payload, subject, image_digest)
    leaf = envelope.chain[0]
    _check_chain(envelope.chain)
    _check_trust_store(envelope.chain, scheme, authority)
    _check_identity(leaf, authority)

    notes: list[str] = []

    def soft(problem: str) -> None:
        if authority.level == "strict":
            raise VerificationError(problem)
        notes.append(problem)

    expiry = envelope.header_time(EXPIRY)
    if expiry is not None and now > expiry:
        soft(f"expiry: the signature expired at {_when(expiry)}")
    timestamp: Timestamp | None = None
    if scheme == SCHEME_SIGNING_AUTHORITY:
        authentic = envelope.header_time(AUTHENTIC_SIGNING_TIME)
        assert authentic is not None  # _check_headers
        problem = _chain_problem(envelope.chain, authentic, authentic)
        if problem:
            soft(f"authenticTimestamp: at the authentic signing time {_when(authentic)}, "
                 f"{problem}")
    else:
        if envelope.timestamp_token is not None and authority.tsa:
            try:
                timestamp = verify_timestamp_token(
                    envelope.timestamp_token, envelope.signature, authority.tsa
                )
            except VerificationError as exc:
                soft(f"authenticTimestamp: the timestamp countersignature: {exc}")
        if timestamp is not None:
            problem = _chain_problem(envelope.chain, timestamp.earliest, timestamp.latest)
            if problem:
                soft(f"authenticTimestamp: at the timestamp {_when(timestamp.time)}, {problem}")
        else:
            problem = _chain_problem(envelope.chain, now, now)
            if problem:
                soft(f"authenticTimestamp: with no trusted timestamp, the chain must be valid "
                     f"now: {problem}")
    return NotationVerified(
        leaf_subject=leaf.subject.rfc4514_string(),
        signing_time=envelope.header_time(SIGNING_TIME),
        timestamp=timestamp,
        notes=tuple(notes),
    )


def _when(moment: datetime) -> str:
    return moment.astimezone(UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


def _check_headers(envelope: Envelope) -> str:
    plugin = envelope.protected.get(VERIFICATION_PLUGIN)
    if plugin is not None or any(c in _PLUGIN_HEADERS for c in envelope.critical):
        raise VerificationError(
            f"integrity: the signature requires verification plugin {plugin!r}, "
            "which sealgate does not run"
        )
    unknown = [c for c in envelope.critical if c not in _UNDERSTOOD_CRITICAL]
    if unknown:
        raise VerificationError(
            f"integrity: unknown critical header {', '.join(map(repr, unknown))}"
        )
    for name in (SIGNING_SCHEME, EXPIRY, AUTHENTIC_SIGNING_TIME):
        if name in envelope.protected and name not in envelope.critical:
            raise VerificationError(f"integrity: header {name} must be marked critical")
    if envelope.content_type != PAYLOAD_MEDIA_TYPE:
        raise VerificationError(
            f"integrity: payload content type {envelope.content_type!r} is not "
            f"{PAYLOAD_MEDIA_TYPE}"
        )
    scheme = envelope.protected.get(SIGNING_SCHEME)
    if scheme not in (SCHEME_X509, SCHEME_SIGNING_AUTHORITY):
        raise VerificationError(f"integrity: unknown signing scheme {scheme!r}")
    if scheme == SCHEME_SIGNING_AUTHORITY:
        if envelope.header_time(AUTHENTIC_SIGNING_TIME) is None:
            raise VerificationError(
                f"integrity: {SCHEME_SIGNING_AUTHORITY} needs {AUTHENTIC_SIGNING_TIME}"
            )
    elif envelope.header_time(SIGNING_TIME) is None:
        raise VerificationError(f"integrity: {SCHEME_X509} needs {SIGNING_TIME}")
    envelope.header_time(EXPIRY)  # well-formed when present
    return str(scheme)


def _check_signature(envelope: Envelope) -> None:
    algorithm = _ALGORITHMS.get(envelope.algorithm)
    if algorithm is None:
        raise VerificationError(
            f"integrity: unsupported signature algorithm {envelope.algorithm!r}"
        )
    name, hash_type, expected = algorithm
    key = envelope.chain[0].public_key()
    try:
        if isinstance(expected, int):
            if not isinstance(key, rsa.RSAPublicKey) or key.key_size != expected:
                raise VerificationError(
                    f"integrity: {name} needs an RSA-{expected} signing key"
                )
            # Notary Project: RSASSA-PSS with the salt as long as the hash
            pss = padding.PSS(mgf=padding.MGF1(hash_type()),
                              salt_length=padding.PSS.DIGEST_LENGTH)
            key.verify(envelope.signature, envelope.signing_input, pss, hash_type())
        else:
            if not isinstance(key, ec.EllipticCurvePublicKey) or key.curve.name != expected:
                raise VerificationError(f"integrity: {name} needs a {expected} signing key")
            der = _raw_ecdsa_to_der(envelope.signature, key.curve.key_size)
            key.verify(der, envelope.signing_input, ec.ECDSA(hash_type()))
    except InvalidSignature:
        raise VerificationError(
            f"integrity: the {envelope.format} signature does not verify with the signing "
            "certificate's key"
        ) from None


def _raw_ecdsa_to_der(signature: bytes, bits: int) -> bytes:
    """JWS/COSE ECDSA signatures are r || s; cryptography verifies DER."""
    size = (bits + 7) // 8
    if len(signature) != 2 * size:
        raise InvalidSignature
    return encode_dss_signature(
        int.from_bytes(signature[:size], "big"), int.from_bytes(signature[size:], "big")
    )


def _check_target(payload: bytes, subject: Descriptor, image_digest: str) -> None:
    document = _json(payload, "signature payload")
    target = document.get("targetArtifact")
    if not isinstance(target, dict):
        raise VerificationError("integrity: signature payload has no targetArtifact")
    digest, size, media_type = target.get("digest"), target.get("size"), target.get("mediaType")
    if digest != image_digest:
        raise VerificationError(
            f"integrity: the signature is for {digest}, not this image ({image_digest})"
        )
    if subject.digest != image_digest:
        raise VerificationError("integrity: the signature manifest's subject is another image")
    if size != subject.size or isinstance(size, bool):
        raise VerificationError(
            f"integrity: the signed size {size!r} is not the image manifest's {subject.size}"
        )
    if media_type != subject.media_type:
        raise VerificationError(
            f"integrity: the signed media type {media_type!r} is not the image manifest's "
            f"{subject.media_type!r}"
        )


def _is_ca(cert: x509.Certificate) -> bool:
    try:
        return bool(cert.extensions.get_extension_for_class(x509.BasicConstraints).value.ca)
    except x509.ExtensionNotFound:
        return False


def _issued_by(cert: x509.Certificate, issuer: x509.Certificate) -> bool:
    if cert.issuer != issuer.subject:
        return False
    try:
        cert.verify_directly_issued_by(issuer)
    except (ValueError, TypeError, InvalidSignature, UnsupportedAlgorithm):
        return False
    return True


def _check_chain(chain: tuple[x509.Certificate, ...]) -> None:
    """Leaf first, each certificate signed by the next, ending in a self-signed root."""
    leaf = chain[0]
    try:
        usage = leaf.extensions.get_extension_for_class(x509.KeyUsage).value
        if not usage.digital_signature:
            raise VerificationError(
                "authenticity: the signing certificate's key usage lacks digitalSignature"
            )
    except x509.ExtensionNotFound:
        pass
    try:
        eku = leaf.extensions.get_extension_for_class(x509.ExtendedKeyUsage).value
        if x509.oid.ExtendedKeyUsageOID.CODE_SIGNING not in eku and (
            x509.oid.ExtendedKeyUsageOID.ANY_EXTENDED_KEY_USAGE not in eku
        ):
            raise VerificationError(
                "authenticity: the signing certificate is not for code signing (EKU)"
            )
    except x509.ExtensionNotFound:
        pass
    if len(chain) > 1 and _is_ca(leaf):
        raise VerificationError("authenticity: the signing certificate is a CA certificate")
    for cert, issuer in itertools.pairwise(chain):
        if not _is_ca(issuer) or not _issued_by(cert, issuer):
            raise VerificationError(
                f"authenticity: certificate chain is broken: {cert.subject.rfc4514_string()} "
                f"is not issued by the CA {issuer.subject.rfc4514_string()}"
            )
    if not _issued_by(chain[-1], chain[-1]):
        raise VerificationError(
            f"authenticity: certificate chain does not end in a self-signed root "
            f"({chain[-1].subject.rfc4514_string()})"
        )


def _der(cert: x509.Certificate) -> bytes:
    return cert.public_bytes(serialization.Encoding.DER)


def _check_trust_store(
    chain: tuple[x509.Certificate, ...], scheme: str, authority: NotationAuthority
) -> None:
    store, store_name = (
        (authority.ca, "ca") if scheme == SCHEME_X509
        else (authority.signing_authority, "signingAuthority")
    )
    if not store:
        raise VerificationError(
            f"authenticity: the signature uses the {scheme} signing scheme and the trust "
            f"store has no {store_name} certificates"
        )
    trusted = {hashlib.sha256(_der(c)).digest() for c in store}
    if not any(hashlib.sha256(_der(c)).digest() in trusted for c in chain):
        raise VerificationError(
            f"authenticity: the signature's certificate chain "
            f"({chain[0].subject.rfc4514_string()}) does not contain any certificate of the "
            f"{store_name} trust store"
        )


_DN_OIDS: Mapping[str, x509.ObjectIdentifier] = {
    "C": x509.NameOID.COUNTRY_NAME,
    "ST": x509.NameOID.STATE_OR_PROVINCE_NAME,
    "L": x509.NameOID.LOCALITY_NAME,
    "O": x509.NameOID.ORGANIZATION_NAME,
    "OU": x509.NameOID.ORGANIZATIONAL_UNIT_NAME,
    "CN": x509.NameOID.COMMON_NAME,
    "emailAddress": x509.NameOID.EMAIL_ADDRESS,
}


def _check_identity(leaf: x509.Certificate, authority: NotationAuthority) -> None:
    if authority.any_identity:
        return
    subject = {
        key: tuple(str(a.value) for a in leaf.subject.get_attributes_for_oid(oid))
        for key, oid in _DN_OIDS.items()
    }
    if any(identity.matches(subject) for identity in authority.trusted_identities):
        return
    raise VerificationError(
        f"authenticity: signing certificate subject {leaf.subject.rfc4514_string()!r} does "
        "not match the trusted identities "
        + ", ".join(repr(i.text) for i in authority.trusted_identities)
    )


def _chain_problem(
    chain: tuple[x509.Certificate, ...], earliest: datetime, latest: datetime
) -> str | None:
    """Why the chain is not valid over [earliest, latest], or None."""
    for cert in chain:
        name = cert.subject.rfc4514_string()
        if earliest < cert.not_valid_before_utc:
            return f"certificate {name!r} is not valid before {_when(cert.not_valid_before_utc)}"
        if latest > cert.not_valid_after_utc:
            return f"certificate {name!r} expired at {_when(cert.not_valid_after_utc)}"
    return None
