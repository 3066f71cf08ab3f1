"""Making real cosign (simple-signing) signatures in tests and the demo, with `cryptography`."""

from __future__ import annotations

import base64
import json

from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec, ed25519, padding, rsa

PrivateKey = (
    ec.EllipticCurvePrivateKey | rsa.RSAPrivateKey | ed25519.Ed25519PrivateKey
)


def simple_signing_payload(docker_reference: str, digest: str) -> bytes:
    """The JSON cosign signs: the image's repository and manifest digest."""
    return json.dumps({
        "critical": {
            "identity": {"docker-reference": docker_reference},
            "image": {"docker-manifest-digest": digest},
            "type": "cosign container image signature",
        },
        "optional": None,
    }, separators=(",", ":")).encode()


def sign(key: PrivateKey, payload: bytes) -> bytes:
    """Sign like cosign: ECDSA with SHA-256 (P-256) / SHA-384 (P-384), RSA PKCS#1 v1.5."""
    if isinstance(key, ec.EllipticCurvePrivateKey):
        digest = hashes.SHA384() if key.curve.name == "secp384r1" else hashes.SHA256()
        return key.sign(payload, ec.ECDSA(digest))
    if isinstance(key, rsa.RSAPrivateKey):
        return key.sign(payload, padding.PKCS1v15(), hashes.SHA256())
    return key.sign(payload)


def cosign_layer(
    key: PrivateKey, docker_reference: str, digest: str
) -> tuple[bytes, dict[str, str]]:
    """A `.sig` layer: (payload, annotations) ready for push_cosign_signature."""
    payload = simple_signing_payload(docker_reference, digest)
    signature = base64.b64encode(sign(key, payload)).decode()
    return payload, {"dev.cosignproject.cosign/signature": signature}


def public_pem(key: PrivateKey) -> bytes:
    return key.public_key().public_bytes(
        serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo
    )


def private_pem(key: PrivateKey) -> bytes:
    return key.private_bytes(
        serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
        serialization.NoEncryption(),
    )
