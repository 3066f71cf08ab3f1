"""Public keys and certificates from PEM/DER text (pure: no I/O, no verification).

Policy loading (the pure core) and the signature verifiers both read keys and
certificates; they share this module so that ``policy`` never imports the
verification code.
"""

from __future__ import annotations

import hashlib
from collections.abc import Mapping

from cryptography import x509
from cryptography.exceptions import UnsupportedAlgorithm
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec, ed25519, rsa

from webhook.errors import VerificationError

PublicKey = ec.EllipticCurvePublicKey | rsa.RSAPublicKey | ed25519.Ed25519PublicKey
"""Key types cosign signs with: ECDSA P-256/P-384, RSA >= 2048 bits, Ed25519."""

MIN_RSA_BITS = 2048
# cosign's hash per curve (sigstore/sigstore signature.LoadVerifier defaults).
ECDSA_HASHES: Mapping[str, type[hashes.HashAlgorithm]] = {
    "secp256r1": hashes.SHA256,
    "secp384r1": hashes.SHA384,
}


def load_public_key(pem: bytes | str) -> PublicKey:
    """Load a PEM SubjectPublicKeyInfo; VerificationError for keys cosign would not sign with.

    Accepted: ECDSA P-256 and P-384, RSA of at least 2048 bits, Ed25519.
    """
    data = pem.encode() if isinstance(pem, str) else pem
    if b"-----BEGIN PUBLIC KEY-----" not in data:
        raise VerificationError(
            "not a PEM public key: expected a '-----BEGIN PUBLIC KEY-----' block"
        )
    try:
        key = serialization.load_pem_public_key(data)
    except (ValueError, UnsupportedAlgorithm) as exc:
        raise VerificationError(f"unreadable PEM public key: {exc}") from exc
    return check_public_key(key)


def load_public_key_der(der: bytes) -> PublicKey:
    """Load a DER SubjectPublicKeyInfo (trusted_root.json form), with load_public_key's rules."""
    try:
        key = serialization.load_der_public_key(der)
    except (ValueError, UnsupportedAlgorithm) as exc:
        raise VerificationError(f"unreadable DER public key: {exc}") from exc
    return check_public_key(key)


def check_public_key(key: object) -> PublicKey:
    """Return ``key`` if it is a supported signing key, else raise VerificationError naming it."""
    if isinstance(key, ec.EllipticCurvePublicKey):
        if key.curve.name not in ECDSA_HASHES:
            raise VerificationError(
                f"unsupported ECDSA curve {key.curve.name}: "
                "use P-256 (secp256r1) or P-384 (secp384r1)"
            )
        return key
    if isinstance(key, rsa.RSAPublicKey):
        if key.key_size < MIN_RSA_BITS:
            raise VerificationError(
                f"RSA key of {key.key_size} bits is too small: "
                f"at least {MIN_RSA_BITS} bits required"
            )
        return key
    if isinstance(key, ed25519.Ed25519PublicKey):
        return key
    raise VerificationError(
        f"unsupported public key type {type(key).__name__}: use ECDSA P-256/P-384, RSA or Ed25519"
    )


def public_key_der(key: PublicKey) -> bytes:
    """DER SubjectPublicKeyInfo: the canonical bytes keys are compared and fingerprinted by."""
    return key.public_bytes(
        serialization.Encoding.DER, serialization.PublicFormat.SubjectPublicKeyInfo
    )


def key_fingerprint(key: PublicKey) -> str:
    """Hex sha256 of the DER SPKI (a Rekor logID is this fingerprint of the log's key)."""
    return hashlib.sha256(public_key_der(key)).hexdigest()


def load_certificates(data: bytes | str, what: str) -> tuple[x509.Certificate, ...]:
    """Every certificate of PEM text, or the one certificate of DER bytes.

    VerificationError (naming ``what``) when there is none or one is unreadable.
    """
    raw = data.encode() if isinstance(data, str) else data
    try:
        if b"-----BEGIN CERTIFICATE-----" in raw:
            certificates = tuple(x509.load_pem_x509_certificates(raw))
        else:
            certificates = (x509.load_der_x509_certificate(raw),)
    except (ValueError, x509.InvalidVersion) as exc:
        raise VerificationError(f"{what} is not a PEM or DER certificate: {exc}") from None
    if not certificates:
        raise VerificationError(f"{what} holds no certificate")
    return certificates


def certificate_fingerprint(certificate: x509.Certificate) -> str:
    """Hex sha256 of the DER certificate (what Notary Project thumbprints are)."""
    return hashlib.sha256(certificate.public_bytes(serialization.Encoding.DER)).hexdigest()
