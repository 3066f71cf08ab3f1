"""Legacy cosign keyless signatures: Fulcio certificate, embedded SCT, Rekor SET (issue 4).

``cosign sign`` without a key signs with an ephemeral key whose Fulcio certificate
rides along in the ``.sig`` layer (``dev.sigstore.cosign/certificate``, the CA
chain in ``.../chain``) and logs the signature in Rekor (``.../bundle``, a Signed
Entry Timestamp). The certificate lives ten minutes, so it is judged at the SET's
integratedTime, never "now": which is why keyless signatures *require* the SET.

The certificate checks (chain, SCT, identity) are separate functions: sigstore
bundle verification needs the same ones.
"""

from __future__ import annotations

import hashlib
from collections.abc import Sequence
from datetime import UTC, datetime, timedelta

from cryptography import x509
from cryptography.exceptions import InvalidSignature, UnsupportedAlgorithm
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec, padding, rsa
from cryptography.x509.certificate_transparency import LogEntryType, SignedCertificateTimestamp
from cryptography.x509.oid import ExtendedKeyUsageOID
from cryptography.x509.verification import (
    Criticality,
    ExtensionPolicy,
    PolicyBuilder,
    Store,
)
from cryptography.x509.verification import (
    VerificationError as X509VerificationError,
)

from webhook.errors import VerificationError
from webhook.identity import CLAIM_OIDS, RAW_STRING_CLAIMS, Identity, claim_oid
from webhook.keys import PublicKey, check_public_key
from webhook.oci import (
    COSIGN_BUNDLE_ANNOTATION,
    COSIGN_CERTIFICATE_ANNOTATION,
    COSIGN_CHAIN_ANNOTATION,
    SignatureLayer,
)
from webhook.patterns import ImagePattern
from webhook.signatures.cosign import (
    VerifiedSignature,
    check_signed_claim,
    layer_signature,
    verify_raw_signature,
    verify_rekor_bundle,
)
from webhook.signatures.trust import CTLogKey, TrustedRootMaterial

# Fulcio certificate extensions (sigstore/fulcio docs/oid-info.md).
FULCIO_ISSUER_V1_OID = x509.ObjectIdentifier("1.3.6.1.4.1.57264.1.1")  # raw string (deprecated)
FULCIO_ISSUER_V2_OID = x509.ObjectIdentifier("1.3.6.1.4.1.57264.1.8")  # DER UTF8String
FULCIO_USERNAME_SAN_OID = x509.ObjectIdentifier("1.3.6.1.4.1.57264.1.7")  # otherName SAN

_EPOCH = datetime(1970, 1, 1, tzinfo=UTC)


# --------------------------------------------------------------------------- annotations


def parse_certificate_annotation(text: str) -> x509.Certificate:
    """The signing (leaf) certificate of a ``dev.sigstore.cosign/certificate`` annotation."""
    try:
        certificates = x509.load_pem_x509_certificates(text.encode())
    except (ValueError, x509.InvalidVersion) as exc:
        raise VerificationError(
            f"certificate annotation is not a PEM certificate: {exc}"
        ) from None
    if len(certificates) != 1:
        raise VerificationError(
            f"certificate annotation holds {len(certificates)} certificates, expected one"
        )
    return certificates[0]


def parse_chain_annotation(text: str) -> tuple[x509.Certificate, ...]:
    """The CA certificates of a ``dev.sigstore.cosign/chain`` annotation (intermediate first)."""
    try:
        return tuple(x509.load_pem_x509_certificates(text.encode()))
    except (ValueError, x509.InvalidVersion) as exc:
        raise VerificationError(
            f"certificate chain annotation is not PEM certificates: {exc}"
        ) from None


# --------------------------------------------------------------------------- chain


def _code_signing_policies() -> tuple[ExtensionPolicy, ExtensionPolicy]:
    # A client verifier wants EKU clientAuth; Fulcio certificates say codeSigning (and its
    # intermediate carries codeSigning too). Relax only the EKU rule — everything else stays
    # web-PKI strict — and require codeSigning on the leaf ourselves, as sigstore-python does.
    ca_policy = ExtensionPolicy.webpki_defaults_ca().may_be_present(
        x509.ExtendedKeyUsage, Criticality.NON_CRITICAL, None
    )
    ee_policy = ExtensionPolicy.webpki_defaults_ee().may_be_present(
        x509.ExtendedKeyUsage, Criticality.NON_CRITICAL, None
    )
    return ca_policy, ee_policy


def _check_code_signing(leaf: x509.Certificate) -> None:
    try:
        usage = leaf.extensions.get_extension_for_class(x509.KeyUsage).value
        extended = leaf.extensions.get_extension_for_class(x509.ExtendedKeyUsage).value
    except x509.ExtensionNotFound as exc:
        raise VerificationError(f"certificate is not a code-signing certificate: {exc}") from None
    except (ValueError, x509.DuplicateExtension) as exc:
        raise VerificationError(f"certificate has malformed extensions: {exc}") from None
    if not usage.digital_signature:
        raise VerificationError(
            "certificate is not a code-signing certificate: key usage lacks digitalSignature"
        )
    if ExtendedKeyUsageOID.CODE_SIGNING not in extended:
        raise VerificationError(
            "certificate is not a code-signing certificate: extended key usage lacks codeSigning"
        )


def verify_certificate_chain(
    leaf: x509.Certificate,
    chain: Sequence[x509.Certificate],
    trust: TrustedRootMaterial,
    at: datetime,
) -> tuple[x509.Certificate, ...]:
    """Verify ``leaf`` chains to a Fulcio CA of ``trust``, every certificate valid at ``at``.

    ``at`` (timezone-aware) is the verified signing time: Rekor's integratedTime. A CA counts
    only when its trusted-root ``validFor`` window contains ``at``; its certificates (the
    intermediate too) are trust anchors, so ``chain`` (the chain annotation) may be empty
    when the intermediate is in the trusted root. Returns the verified path, leaf first
    (``[1]`` is the leaf's issuer). The leaf must be for code signing (EKU codeSigning).
    """
    if at.tzinfo is None:
        raise ValueError("verify_certificate_chain needs a timezone-aware time")
    _check_code_signing(leaf)
    authorities = [
        ca for ca in trust.fulcio_authorities
        if ca.certificates
        and (ca.valid_from is None or ca.valid_from <= at)
        and (ca.valid_until is None or at <= ca.valid_until)
    ]
    when = at.isoformat()
    if not authorities:
        raise VerificationError(
            f"certificate chain: no Fulcio CA of trusted root {trust.source!r} was valid at {when}"
        )
    ca_policy, ee_policy = _code_signing_policies()
    failures: list[str] = []
    for authority in authorities:
        verifier = (
            PolicyBuilder()
            .store(Store(list(authority.certificates)))
            .time(at)
            .extension_policies(ca_policy=ca_policy, ee_policy=ee_policy)
            .build_client_verifier()
        )
        try:
            verified = verifier.verify(leaf, list(chain))
        except (X509VerificationError, x509.UnsupportedGeneralNameType, ValueError) as exc:
            failures.append(str(exc))
            continue
        if len(verified.chain) < 2:  # the leaf itself was a trust anchor: not a Fulcio leaf
            failures.append("the certificate is itself in the trusted root")
            continue
        return tuple(verified.chain)
    raise VerificationError(
        f"certificate chain does not verify to a Fulcio CA of trusted root {trust.source!r} "
        f"at {when}: {'; '.join(dict.fromkeys(failures))}"
    )


# --------------------------------------------------------------------------- SCT


def _ctlog_key_valid_at(key: CTLogKey, moment: datetime) -> bool:
    return (key.valid_from is None or key.valid_from <= moment) and (
        key.valid_until is None or moment <= key.valid_until
    )


def _sct_signed_data(
    sct: SignedCertificateTimestamp, leaf: x509.Certificate, issuer_key_hash: bytes
) -> bytes:
    """RFC 6962 §3.2 ``digitally-signed`` input of an SCT for a precertificate entry.

    version(1) ‖ signature_type=certificate_timestamp(1) ‖ timestamp ms(8) ‖ entry_type=
    precert_entry(2) ‖ issuer_key_hash(32) ‖ TBSCertificate<u24> ‖ extensions<u16>; the TBS
    is the leaf's without its SCT list, which equals the precertificate's without poison.
    """
    tbs = leaf.tbs_precertificate_bytes
    if len(tbs) >= 1 << 24:
        raise VerificationError("SCT: certificate is too large for an RFC 6962 entry")
    moment: datetime = sct.timestamp.replace(tzinfo=UTC)  # cryptography returns naive UTC
    milliseconds = (moment - _EPOCH) // timedelta(milliseconds=1)
    return (
        bytes([sct.version.value, 0])
        + milliseconds.to_bytes(8, "big")
        + LogEntryType.PRE_CERTIFICATE.value.to_bytes(2, "big")
        + issuer_key_hash
        + len(tbs).to_bytes(3, "big")
        + tbs
        + len(sct.extension_bytes).to_bytes(2, "big")
        + sct.extension_bytes
    )


def _verify_sct_signature(key: CTLogKey, sct: SignedCertificateTimestamp, data: bytes) -> bool:
    public_key = key.key
    try:
        if isinstance(public_key, ec.EllipticCurvePublicKey):
            public_key.verify(sct.signature, data, ec.ECDSA(hashes.SHA256()))
        elif isinstance(public_key, rsa.RSAPublicKey):
            public_key.verify(sct.signature, data, padding.PKCS1v15(), hashes.SHA256())
        else:  # RFC 6962 logs sign with ECDSA or RSA only
            return False
    except InvalidSignature:
        return False
    return True


def verify_embedded_sct(
    leaf: x509.Certificate, issuer: x509.Certificate, trust: TrustedRootMaterial
) -> datetime:
    """Verify the SCT embedded in ``leaf`` against a CT log key of ``trust``.

    ``issuer`` is the CA certificate that signed ``leaf`` (the verified chain's ``[1]``):
    its key hash binds the SCT to the issuer. The log is found by logId and its key must
    have been valid at the SCT's timestamp. At least one embedded SCT must verify;
    returns its timestamp (timezone-aware).
    """
    try:
        scts = list(
            leaf.extensions.get_extension_for_class(
                x509.PrecertificateSignedCertificateTimestamps
            ).value
        )
    except x509.ExtensionNotFound:
        raise VerificationError("SCT missing: certificate has no embedded SCT") from None
    except (ValueError, x509.DuplicateExtension) as exc:
        raise VerificationError(f"SCT list of the certificate is malformed: {exc}") from None
    if not scts:
        raise VerificationError("SCT missing: certificate's SCT list is empty")
    try:
        constraints = issuer.extensions.get_extension_for_class(x509.BasicConstraints).value
    except (x509.ExtensionNotFound, x509.DuplicateExtension, ValueError):
        constraints = None
    if constraints is None or not constraints.ca:
        raise VerificationError(f"SCT: issuer {issuer.subject.rfc4514_string()} is not a CA")
    issuer_key_hash = hashlib.sha256(
        issuer.public_key().public_bytes(
            serialization.Encoding.DER, serialization.PublicFormat.SubjectPublicKeyInfo
        )
    ).digest()
    failures: list[str] = []
    for sct in scts:
        log_id = sct.log_id.hex()
        moment: datetime = sct.timestamp.replace(tzinfo=UTC)
        if sct.entry_type != LogEntryType.PRE_CERTIFICATE:
            failures.append(f"SCT from CT log {log_id[:16]}… is not for a precertificate")
            continue
        if not isinstance(sct.signature_hash_algorithm, hashes.SHA256):
            failures.append(f"SCT from CT log {log_id[:16]}… does not hash with SHA-256")
            continue
        keys = [key for key in trust.ctlog_keys if key.log_id == log_id]
        if not keys:
            failures.append(f"SCT from unknown CT log {log_id} (not in trusted root "
                            f"{trust.source!r})")
            continue
        in_window = [key for key in keys if _ctlog_key_valid_at(key, moment)]
        if not in_window:
            failures.append(f"SCT from CT log {log_id[:16]}…, whose key was not valid at "
                            f"the SCT's time {moment.isoformat()}")
            continue
        data = _sct_signed_data(sct, leaf, issuer_key_hash)
        if any(_verify_sct_signature(key, sct, data) for key in in_window):
            return moment
        failures.append(f"SCT signature from CT log {log_id[:16]}… does not verify "
                        "over this certificate")
    raise VerificationError("SCT verification failed: " + "; ".join(failures))


# --------------------------------------------------------------------------- identity


def _der_utf8string(data: bytes) -> str:
    """Decode one DER UTF8String (tag 0x0C), nothing before or after it."""
    if len(data) < 2 or data[0] != 0x0C:
        raise ValueError("not a DER UTF8String")
    first = data[1]
    if first < 0x80:
        length, header = first, 2
    else:
        count = first & 0x7F
        if count == 0 or count > 4 or len(data) < 2 + count:
            raise ValueError("bad DER length")
        length, header = int.from_bytes(data[2 : 2 + count], "big"), 2 + count
    if len(data) != header + length:
        raise ValueError("DER UTF8String length does not match its content")
    return data[header:].decode("utf-8")


def _unrecognized_value(leaf: x509.Certificate, oid: x509.ObjectIdentifier) -> bytes | None:
    try:
        value = leaf.extensions.get_extension_for_oid(oid).value
    except x509.ExtensionNotFound:
        return None
    except (ValueError, x509.DuplicateExtension) as exc:  # DuplicateExtension: not a ValueError
        raise VerificationError(f"certificate has malformed extensions: {exc}") from None
    return value.value if isinstance(value, x509.UnrecognizedExtension) else None


def certificate_issuer(leaf: x509.Certificate) -> str | None:
    """The OIDC issuer Fulcio recorded: extension 1.3.6.1.4.1.57264.1.8 (DER UTF8String),
    else the deprecated 1.3.6.1.4.1.57264.1.1 (raw string); None when neither is present."""
    v2 = _unrecognized_value(leaf, FULCIO_ISSUER_V2_OID)
    if v2 is not None:
        try:
            return _der_utf8string(v2)
        except (ValueError, UnicodeDecodeError) as exc:
            raise VerificationError(
                f"issuer extension {FULCIO_ISSUER_V2_OID.dotted_string} is malformed: {exc}"
            ) from None
    v1 = _unrecognized_value(leaf, FULCIO_ISSUER_V1_OID)
    if v1 is not None:
        try:
            return v1.decode("utf-8")
        except UnicodeDecodeError as exc:
            raise VerificationError(
                f"issuer extension {FULCIO_ISSUER_V1_OID.dotted_string} is not UTF-8: {exc}"
            ) from None
    return None


def certificate_claim(leaf: x509.Certificate, name: str) -> str | None:
    """The value of a Fulcio claim extension by its SPEC §9 name; None when absent.

    1.3.6.1.4.1.57264.1.1-1.6 hold the raw UTF-8 string, 1.8 and later a DER UTF8String.
    """
    number = CLAIM_OIDS[name]
    oid = x509.ObjectIdentifier(claim_oid(name))
    raw = _unrecognized_value(leaf, oid)
    if raw is None:
        return None
    try:
        return raw.decode("utf-8") if number in RAW_STRING_CLAIMS else _der_utf8string(raw)
    except (ValueError, UnicodeDecodeError) as exc:
        raise VerificationError(
            f"claim {name} (extension {oid.dotted_string}) is malformed: {exc}"
        ) from None


def check_claims(leaf: x509.Certificate, identity: Identity) -> None:
    """The leaf's Fulcio claims must satisfy ``identity.claims`` / ``claims_regexp``."""
    names = {name for name, _ in identity.claims + identity.claims_regexp}
    if not names:
        return
    problems = identity.claim_problems({name: certificate_claim(leaf, name) for name in names})
    if problems:
        raise VerificationError("claims mismatch: " + "; ".join(problems))


def certificate_subjects(leaf: x509.Certificate) -> tuple[str, ...]:
    """The identities in the leaf's SAN: e-mail addresses, URIs and Fulcio usernames
    (otherName 1.3.6.1.4.1.57264.1.7) — the values cosign matches ``subject`` against."""
    try:
        names = leaf.extensions.get_extension_for_class(x509.SubjectAlternativeName).value
    except x509.ExtensionNotFound:
        return ()
    except (ValueError, x509.UnsupportedGeneralNameType, x509.DuplicateExtension) as exc:
        raise VerificationError(
            f"certificate's subject alternative name is malformed: {exc}"
        ) from None
    subjects: list[str] = list(names.get_values_for_type(x509.RFC822Name))
    subjects.extend(names.get_values_for_type(x509.UniformResourceIdentifier))
    for other in names.get_values_for_type(x509.OtherName):
        if other.type_id == FULCIO_USERNAME_SAN_OID:
            try:
                subjects.append(_der_utf8string(other.value))
            except (ValueError, UnicodeDecodeError):
                continue
    return tuple(subjects)


def check_identity(leaf: x509.Certificate, identity: Identity) -> str:
    """The leaf must carry ``identity``: issuer extension equal to ``identity.issuer`` and a
    SAN equal to ``identity.subject`` or fully matching ``identity.subject_regexp``.

    Returns the matching subject.
    """
    issuer = certificate_issuer(leaf)
    if issuer is None:
        raise VerificationError(
            "issuer missing: certificate has no OIDC issuer extension "
            f"({FULCIO_ISSUER_V2_OID.dotted_string} or {FULCIO_ISSUER_V1_OID.dotted_string})"
        )
    if issuer != identity.issuer:
        raise VerificationError(
            f"issuer mismatch: certificate's OIDC issuer is {issuer}, not {identity.issuer}"
        )
    subjects = certificate_subjects(leaf)
    if not subjects:
        raise VerificationError(
            "subject missing: certificate has no e-mail or URI subject alternative name"
        )
    for subject in subjects:
        if identity.subject_matches(subject):
            check_claims(leaf, identity)
            return subject
    wanted = identity.subject if identity.subject is not None else f"/{identity.subject_regexp}/"
    raise VerificationError(
        f"subject mismatch: certificate identity {', '.join(subjects)} does not match {wanted}"
    )


# --------------------------------------------------------------------------- signature


def layer_certificates(
    layer: SignatureLayer, kind: str
) -> tuple[x509.Certificate, tuple[x509.Certificate, ...], PublicKey]:
    """The leaf certificate, the chain and the leaf's key from a cosign layer's annotations."""
    certificate_text = layer.annotations.get(COSIGN_CERTIFICATE_ANNOTATION)
    if not certificate_text:
        raise VerificationError(
            f"not a keyless {kind}: no {COSIGN_CERTIFICATE_ANNOTATION} annotation"
        )
    leaf = parse_certificate_annotation(certificate_text)
    chain_text = layer.annotations.get(COSIGN_CHAIN_ANNOTATION)
    chain = parse_chain_annotation(chain_text) if chain_text else ()
    try:
        signer_key = check_public_key(leaf.public_key())
    except (ValueError, UnsupportedAlgorithm) as exc:  # a corrupted certificate's key
        raise VerificationError(f"certificate's public key is unreadable: {exc}") from None
    except VerificationError as exc:
        raise VerificationError(f"certificate's public key is unusable: {exc}") from None
    return leaf, tuple(chain), signer_key


def check_certificate(
    leaf: x509.Certificate,
    chain: Sequence[x509.Certificate],
    trust: TrustedRootMaterial,
    identity: Identity,
    *,
    integrated_time: int,
) -> None:
    """At the transparency log's integratedTime: the leaf was valid and chains to a Fulcio
    CA of ``trust``, its embedded SCT verifies, and it carries ``identity``."""
    signed_at = datetime.fromtimestamp(integrated_time, UTC)
    if not leaf.not_valid_before_utc <= signed_at <= leaf.not_valid_after_utc:
        raise VerificationError(
            f"certificate was not valid at the transparency log's integratedTime "
            f"{signed_at.isoformat()} (valid {leaf.not_valid_before_utc.isoformat()} to "
            f"{leaf.not_valid_after_utc.isoformat()})"
        )
    path = verify_certificate_chain(leaf, chain, trust, signed_at)
    verify_embedded_sct(leaf, path[1], trust)
    check_identity(leaf, identity)


def verify_keyless_signature(
    layer: SignatureLayer,
    *,
    identity: Identity,
    trust: TrustedRootMaterial,
    image_digest: str,
    image_name: str,
    signed_references: Sequence[ImagePattern] = (),
) -> VerifiedSignature:
    """Verify one legacy cosign keyless signature layer for ``image_name@image_digest``.

    The payload signature must verify with the key of the leaf certificate; a Rekor SET
    from a tlog key of ``trust`` must vouch for exactly this signature, payload and
    certificate (keyless requires it); at its integratedTime the leaf must be valid and
    chain to a Fulcio CA of ``trust``; its embedded SCT must verify against a CT log key of
    ``trust``; the certificate must carry ``identity``; and the payload must name the
    image as for key signatures (verify_key_signature).
    """
    signature = layer_signature(layer)
    leaf, chain, signer_key = layer_certificates(layer, "signature")
    payload = layer.payload
    try:
        verify_raw_signature(signer_key, signature, payload)
    except VerificationError:
        raise VerificationError(
            "signature does not verify with the certificate's public key"
        ) from None

    bundle = layer.annotations.get(COSIGN_BUNDLE_ANNOTATION)
    if bundle is None:
        raise VerificationError(
            "transparency log entry required: a keyless signature needs a Rekor SET "
            f"({COSIGN_BUNDLE_ANNOTATION}) to prove when its short-lived certificate was used"
        )
    try:
        entry = verify_rekor_bundle(
            bundle, payload=payload, signature=signature, signer=leaf, rekor_keys=trust.rekor_keys
        )
    except VerificationError as exc:
        raise VerificationError(f"transparency log entry (Rekor SET) rejected: {exc}") from None

    check_certificate(leaf, chain, trust, identity, integrated_time=entry.integrated_time)
    claim = check_signed_claim(
        payload,
        image_digest=image_digest,
        image_name=image_name,
        signed_references=signed_references,
    )
    return VerifiedSignature(claim.docker_reference, claim.manifest_digest, entry.integrated_time)
