"""Signature verification: legacy cosign signatures with keys, Rekor SETs, trust roots."""

from webhook.signatures.cosign import (
    PublicKey,
    RekorEntry,
    RekorKey,
    SimpleSigningPayload,
    TlogMode,
    VerifiedSignature,
    key_fingerprint,
    load_public_key,
    load_public_key_der,
    parse_simple_signing,
    verify_key_signature,
    verify_raw_signature,
    verify_rekor_bundle,
)
from webhook.signatures.trust import (
    CertificateAuthority,
    CTLogKey,
    TrustedRootError,
    TrustedRootMaterial,
    clear_trusted_root_cache,
    load_trusted_root,
)

__all__ = [
    "CTLogKey",
    "CertificateAuthority",
    "PublicKey",
    "RekorEntry",
    "RekorKey",
    "SimpleSigningPayload",
    "TlogMode",
    "TrustedRootError",
    "TrustedRootMaterial",
    "VerifiedSignature",
    "clear_trusted_root_cache",
    "key_fingerprint",
    "load_public_key",
    "load_public_key_der",
    "load_trusted_root",
    "parse_simple_signing",
    "verify_key_signature",
    "verify_raw_signature",
    "verify_rekor_bundle",
]
