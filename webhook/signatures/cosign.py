"""Legacy cosign ("simple signing") signatures verified with public keys.

A cosign ``sha256-<hex>.sig`` image holds one layer per signature: the layer
blob is the simple-signing JSON payload, the signature is the base64 layer
annotation ``dev.cosignproject.cosign/signature``, and an optional Rekor
Signed Entry Timestamp (SET) sits in ``dev.sigstore.cosign/bundle``.
sigstore-python verifies bundles with inclusion proofs, not these: SPEC §8.
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import json
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any, Literal

import rfc8785
from cryptography import x509
from cryptography.exceptions import InvalidSignature, UnsupportedAlgorithm
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec, padding, rsa

from webhook.errors import InvalidReferenceError, VerificationError
from webhook.keys import (
    ECDSA_HASHES,
    PublicKey,
    check_public_key,
    key_fingerprint,
    public_key_der,
)
from webhook.oci import (
    COSIGN_BUNDLE_ANNOTATION,
    COSIGN_SIGNATURE_ANNOTATION,
    COSIGN_SIMPLE_SIGNING,
    SignatureLayer,
)
from webhook.patterns import ImagePattern
from webhook.references import parse_reference

TlogMode = Literal["required", "optional", "off"]

SIMPLE_SIGNING_TYPE = "cosign container image signature"


# --------------------------------------------------------------------------- keys


def _short(key: PublicKey) -> str:
    return f"sha256:{key_fingerprint(key)[:16]}"


def verify_raw_signature(key: PublicKey, signature: bytes, payload: bytes) -> None:
    """Check ``signature`` over ``payload`` as cosign makes it; raise VerificationError if not.

    ECDSA P-256 → SHA-256, P-384 → SHA-384; RSA → PKCS#1 v1.5 (or PSS) with SHA-256;
    Ed25519 → pure Ed25519 over the payload.
    """
    try:
        if isinstance(key, ec.EllipticCurvePublicKey):
            hash_type = ECDSA_HASHES.get(key.curve.name)
            if hash_type is None:
                raise VerificationError(f"unsupported ECDSA curve {key.curve.name}")
            key.verify(signature, payload, ec.ECDSA(hash_type()))
        elif isinstance(key, rsa.RSAPublicKey):
            _verify_rsa(key, signature, payload)
        else:
            key.verify(signature, payload)
    except InvalidSignature:
        raise VerificationError(f"signature does not verify with key {_short(key)}") from None


def _verify_rsa(key: rsa.RSAPublicKey, signature: bytes, payload: bytes) -> None:
    try:
        key.verify(signature, payload, padding.PKCS1v15(), hashes.SHA256())
    except InvalidSignature:
        # cosign verifies RSA keys with PKCS#1 v1.5, but KMS-held keys may sign with PSS.
        pss = padding.PSS(mgf=padding.MGF1(hashes.SHA256()), salt_length=padding.PSS.AUTO)
        key.verify(signature, payload, pss, hashes.SHA256())


def decode_base64(text: str, what: str) -> bytes:
    """Standard base64, ignoring line breaks and spaces (as Go's decoder ignores CR/LF)."""
    compact = "".join(text.split())
    try:
        return base64.b64decode(compact, validate=True)
    except (binascii.Error, ValueError) as exc:
        raise VerificationError(f"{what} is not valid base64: {exc}") from None


# --------------------------------------------------------------------------- payload


@dataclass(frozen=True, slots=True)
class SimpleSigningPayload:
    """The signed claim: this manifest digest is an image of this repository."""

    docker_reference: str
    manifest_digest: str
    type: str
    optional: Mapping[str, Any] | None


def reject_duplicate_keys(what: str) -> Callable[[list[tuple[str, Any]]], dict[str, Any]]:
    """A ``json.loads`` object hook refusing duplicate keys in ``what``: two verifiers must
    never read different claims from one signed document."""

    def hook(pairs: list[tuple[str, Any]]) -> dict[str, Any]:
        result: dict[str, Any] = {}
        for name, value in pairs:
            if name in result:
                raise VerificationError(f"{what} has duplicate field {name!r}")
            result[name] = value
        return result

    return hook


def _field(obj: Mapping[str, Any], name: str, path: str, kind: type) -> Any:
    if name not in obj:
        raise VerificationError(f"simple-signing payload is missing {path}")
    value = obj[name]
    if not isinstance(value, kind):
        raise VerificationError(
            f"simple-signing payload field {path} must be a JSON "
            f"{'object' if kind is dict else 'string'}"
        )
    return value


def parse_simple_signing(payload: bytes) -> SimpleSigningPayload:
    """Parse and check the cosign simple-signing JSON; VerificationError names the bad field."""
    try:
        document = json.loads(
            payload, object_pairs_hook=reject_duplicate_keys("simple-signing payload")
        )
    except (ValueError, RecursionError) as exc:  # UnicodeDecodeError is a ValueError
        raise VerificationError(f"simple-signing payload is not JSON: {exc}") from None
    if not isinstance(document, dict):
        raise VerificationError("simple-signing payload must be a JSON object")
    critical = _field(document, "critical", "critical", dict)
    identity = _field(critical, "identity", "critical.identity", dict)
    image = _field(critical, "image", "critical.image", dict)
    reference = _field(identity, "docker-reference", "critical.identity.docker-reference", str)
    digest = _field(image, "docker-manifest-digest", "critical.image.docker-manifest-digest", str)
    kind = _field(critical, "type", "critical.type", str)
    if kind != SIMPLE_SIGNING_TYPE:
        raise VerificationError(
            f"simple-signing payload critical.type is {kind!r}, not {SIMPLE_SIGNING_TYPE!r}"
        )
    optional = document.get("optional")
    if optional is not None and not isinstance(optional, dict):
        raise VerificationError(
            "simple-signing payload field optional must be a JSON object or null"
        )
    return SimpleSigningPayload(reference, digest, kind, optional)


# --------------------------------------------------------------------------- Rekor SET


@dataclass(frozen=True, slots=True)
class RekorKey:
    """A Rekor log's public key, the logID SETs name it by, and when it may have signed.

    ``valid_from`` / ``valid_until`` are timezone-aware (None: open-ended); an entry's
    integratedTime must fall inside the closed window.
    """

    key: PublicKey
    log_id: str
    valid_from: datetime | None = None
    valid_until: datetime | None = None

    def __post_init__(self) -> None:
        for moment in (self.valid_from, self.valid_until):
            if moment is not None and moment.tzinfo is None:
                raise ValueError("RekorKey validity bounds must be timezone-aware datetimes")
        object.__setattr__(self, "log_id", self.log_id.lower())

    @classmethod
    def from_key(
        cls,
        key: PublicKey,
        valid_from: datetime | None = None,
        valid_until: datetime | None = None,
    ) -> RekorKey:
        """A Rekor v1 key, whose logID is the sha256 of its DER SPKI."""
        return cls(key, key_fingerprint(key), valid_from, valid_until)

    def valid_at(self, moment: datetime) -> bool:
        return (self.valid_from is None or self.valid_from <= moment) and (
            self.valid_until is None or moment <= self.valid_until
        )


@dataclass(frozen=True, slots=True)
class RekorEntry:
    """What a verified SET vouches for."""

    integrated_time: int
    log_index: int
    log_id: str


def _verify_set_signature(key: PublicKey, signature: bytes, message: bytes) -> None:
    # Rekor signs SETs with SHA-256 whatever its curve (sigstore/rekor pkg/signer).
    if isinstance(key, ec.EllipticCurvePublicKey):
        key.verify(signature, message, ec.ECDSA(hashes.SHA256()))
    elif isinstance(key, rsa.RSAPublicKey):
        key.verify(signature, message, padding.PKCS1v15(), hashes.SHA256())
    else:
        key.verify(signature, message)


def _json_object(value: Any, what: str) -> Mapping[str, Any]:
    if not isinstance(value, dict):
        raise VerificationError(f"{what} must be a JSON object")
    return value


def _json_int(obj: Mapping[str, Any], name: str, what: str) -> int:
    value = obj.get(name)
    if not isinstance(value, int) or isinstance(value, bool):
        raise VerificationError(f"{what}: {name} must be an integer")
    return value


def _json_str(obj: Mapping[str, Any], name: str, what: str) -> str:
    value = obj.get(name)
    if not isinstance(value, str):
        raise VerificationError(f"{what}: {name} must be a string")
    return value


def _body_signer(pem_text: bytes) -> bytes | x509.Certificate:
    """The signer a hashedrekord entry records: DER SPKI of a public key, or a certificate."""
    try:
        if b"-----BEGIN CERTIFICATE-----" in pem_text:
            return x509.load_pem_x509_certificate(pem_text)
        return public_key_der(check_public_key(serialization.load_pem_public_key(pem_text)))
    except (ValueError, UnsupportedAlgorithm, x509.InvalidVersion) as exc:
        raise VerificationError(
            f"Rekor entry's spec.signature.publicKey is not a PEM key or certificate: {exc}"
        ) from None


def _check_hashedrekord(
    body: bytes, *, payload: bytes, signature: bytes, signer: PublicKey | x509.Certificate
) -> None:
    what = "Rekor entry body"
    try:
        entry = _json_object(json.loads(body), what)
    except (ValueError, RecursionError) as exc:
        raise VerificationError(f"{what} is not JSON: {exc}") from None
    kind, version = entry.get("kind"), entry.get("apiVersion")
    if kind != "hashedrekord" or version != "0.0.1":
        raise VerificationError(
            f"Rekor entry is {kind!r} {version!r}, not a hashedrekord 0.0.1 entry"
        )
    spec = _json_object(entry.get("spec"), f"{what} spec")
    data = _json_object(spec.get("data"), f"{what} spec.data")
    hashed = _json_object(data.get("hash"), f"{what} spec.data.hash")
    sig = _json_object(spec.get("signature"), f"{what} spec.signature")
    public_key = _json_object(sig.get("publicKey"), f"{what} spec.signature.publicKey")
    algorithm = _json_str(hashed, "algorithm", f"{what} spec.data.hash")
    if algorithm != "sha256":
        raise VerificationError(f"Rekor entry hashes with {algorithm!r}, not sha256")
    if _json_str(hashed, "value", f"{what} spec.data.hash").lower() != hashlib.sha256(
        payload
    ).hexdigest():
        raise VerificationError("Rekor entry is for another payload: spec.data.hash differs")
    content = decode_base64(
        _json_str(sig, "content", f"{what} spec.signature"), "Rekor entry's signature"
    )
    if content != signature:
        raise VerificationError("Rekor entry is for another signature: spec.signature differs")
    recorded = _body_signer(
        decode_base64(
            _json_str(public_key, "content", f"{what} spec.signature.publicKey"),
            "Rekor entry's public key",
        )
    )
    if isinstance(signer, x509.Certificate):
        matches = isinstance(recorded, x509.Certificate) and recorded == signer
    else:
        expected = public_key_der(signer)
        # cosign records the key; a certificate holding the same key names the same signer.
        if isinstance(recorded, bytes):
            matches = recorded == expected
        else:
            try:
                matches = public_key_der(check_public_key(recorded.public_key())) == expected
            except (ValueError, UnsupportedAlgorithm, VerificationError):
                matches = False  # a certificate key we cannot load is not this key
    if not matches:
        raise VerificationError(
            "Rekor entry is for another signer: spec.signature.publicKey differs"
        )


def verify_signed_entry_timestamp(
    signed_entry_timestamp: bytes,
    *,
    body_b64: str,
    integrated_time: int,
    log_index: int,
    log_id: str,
    rekor_keys: Sequence[RekorKey],
) -> None:
    """A Rekor SET: the log's signature over the RFC 8785 canonical JSON of
    ``{body, integratedTime, logID, logIndex}`` (fields as the log recorded them), by the
    trusted key named by ``log_id`` that was valid at ``integrated_time``."""
    try:
        canonical = rfc8785.dumps({
            "body": body_b64,
            "integratedTime": integrated_time,
            "logID": log_id,
            "logIndex": log_index,
        })
    except ValueError as exc:  # integers beyond 2**53 have no canonical JSON form
        raise VerificationError(f"Rekor entry cannot be canonicalised: {exc}") from None
    candidates = [k for k in rekor_keys if k.log_id == log_id.lower()]
    if not candidates:
        raise VerificationError(f"no trusted Rekor key for logID {log_id}")
    try:
        when = datetime.fromtimestamp(integrated_time, UTC)
    except (OverflowError, OSError, ValueError):
        raise VerificationError(f"Rekor integratedTime {integrated_time} is out of range") from None
    in_window = [k for k in candidates if k.valid_at(when)]
    if not in_window:
        raise VerificationError(
            f"Rekor key {log_id[:16]}… was not valid at integratedTime {when.isoformat()}"
        )
    for rekor_key in in_window:
        try:
            _verify_set_signature(rekor_key.key, signed_entry_timestamp, canonical)
        except InvalidSignature:
            continue
        return
    raise VerificationError(f"Rekor SET does not verify with the key of log {log_id[:16]}…")


def verify_rekor_bundle(
    bundle: str,
    *,
    payload: bytes,
    signature: bytes,
    signer: PublicKey | x509.Certificate,
    rekor_keys: Sequence[RekorKey],
) -> RekorEntry:
    """Verify a cosign ``dev.sigstore.cosign/bundle`` SET and that its entry is this signature's.

    The SET is a Rekor signature over the RFC 8785 canonical JSON of
    ``{body, integratedTime, logID, logIndex}``; the key is chosen by logID and must
    have been valid at integratedTime. The body (a hashedrekord) must record
    sha256(payload), ``signature`` and ``signer``.
    """
    try:
        document = _json_object(json.loads(bundle), "Rekor bundle")
    except (ValueError, RecursionError) as exc:
        raise VerificationError(f"Rekor bundle is not JSON: {exc}") from None
    set_text = _json_str(document, "SignedEntryTimestamp", "Rekor bundle")
    entry = _json_object(document.get("Payload"), "Rekor bundle Payload")
    body_text = _json_str(entry, "body", "Rekor bundle Payload")
    integrated_time = _json_int(entry, "integratedTime", "Rekor bundle Payload")
    log_index = _json_int(entry, "logIndex", "Rekor bundle Payload")
    log_id = _json_str(entry, "logID", "Rekor bundle Payload")
    verify_signed_entry_timestamp(
        decode_base64(set_text, "Rekor SignedEntryTimestamp"),
        body_b64=body_text,
        integrated_time=integrated_time,
        log_index=log_index,
        log_id=log_id,
        rekor_keys=rekor_keys,
    )
    body = decode_base64(body_text, "Rekor entry body")
    _check_hashedrekord(body, payload=payload, signature=signature, signer=signer)
    return RekorEntry(integrated_time, log_index, log_id.lower())


# --------------------------------------------------------------------------- signatures


@dataclass(frozen=True, slots=True)
class VerifiedSignature:
    """A signature that verified: what it names, and when Rekor logged it (None: no SET checked)."""

    docker_reference: str
    manifest_digest: str
    integrated_time: int | None


def layer_signature(layer: SignatureLayer) -> bytes:
    """The decoded signature of a cosign simple-signing layer (keyed or keyless)."""
    if layer.media_type != COSIGN_SIMPLE_SIGNING:
        raise VerificationError(f"not a cosign signature: media type {layer.media_type!r}")
    encoded = layer.annotations.get(COSIGN_SIGNATURE_ANNOTATION)
    if not encoded:
        raise VerificationError(f"signature layer has no {COSIGN_SIGNATURE_ANNOTATION} annotation")
    return decode_base64(encoded, "signature annotation")


def check_signed_claim(
    payload: bytes,
    *,
    image_digest: str,
    image_name: str,
    signed_references: Sequence[ImagePattern] = (),
) -> SimpleSigningPayload:
    """Parse a verified simple-signing payload; it must name ``image_name@image_digest``.

    The docker-reference may instead name a repository matching ``signed_references``
    (SPEC §2). Call only after the signature over ``payload`` has verified.
    """
    claim = parse_simple_signing(payload)
    if claim.manifest_digest != image_digest:
        raise VerificationError(
            f"signature is for digest {claim.manifest_digest}, not {image_digest}"
        )
    try:
        signed_name = parse_reference(claim.docker_reference).name
    except InvalidReferenceError as exc:
        raise VerificationError(f"signature's docker-reference is invalid: {exc}") from None
    if signed_name != image_name and not any(p.matches(signed_name) for p in signed_references):
        raise VerificationError(f"signature names repository {signed_name}, not {image_name}")
    return claim


def verify_key_signature(
    layer: SignatureLayer,
    *,
    key: PublicKey,
    image_digest: str,
    image_name: str,
    signed_references: Sequence[ImagePattern] = (),
    tlog: TlogMode = "optional",
    rekor_keys: Sequence[RekorKey] = (),
) -> VerifiedSignature:
    """Verify one cosign signature layer for the image ``image_name@image_digest``.

    ``image_name`` is the normalised repository (``ImageReference.name``). A signature
    counts when it verifies with ``key``, names ``image_digest``, and its
    docker-reference names ``image_name`` or a repository matching ``signed_references``
    (SPEC §2). ``tlog``: ``off`` ignores any Rekor SET; ``optional`` checks one if
    present (a present but invalid entry fails, SPEC §8); ``required`` needs one.
    """
    signature = layer_signature(layer)
    payload = layer.payload
    verify_raw_signature(key, signature, payload)
    claim = check_signed_claim(
        payload,
        image_digest=image_digest,
        image_name=image_name,
        signed_references=signed_references,
    )

    integrated_time: int | None = None
    if tlog != "off":
        bundle = layer.annotations.get(COSIGN_BUNDLE_ANNOTATION)
        if bundle is None:
            if tlog == "required":
                raise VerificationError(
                    "transparency log entry required, but the signature has no Rekor bundle"
                )
        else:
            entry = verify_rekor_bundle(
                bundle, payload=payload, signature=signature, signer=key, rekor_keys=rekor_keys
            )
            integrated_time = entry.integrated_time
    return VerifiedSignature(claim.docker_reference, claim.manifest_digest, integrated_time)
