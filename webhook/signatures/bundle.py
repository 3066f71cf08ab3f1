"""Sigstore bundles (cosign v3's signature format) and the in-toto statements they carry.

A bundle (media type ``application/vnd.dev.sigstore.bundle.v0.3+json``) holds a DSSE
envelope, its verification material (a Fulcio certificate, or a public-key hint)
and Rekor entries. cosign v3 attaches one per signature or attestation to the
image as an OCI referrer (``webhook.registry.RegistryClient.referrers``).

- Keyless bundles are verified by sigstore-python's ``Verifier.verify_dsse``
  (certificate chain, SCT, Rekor inclusion proof + checkpoint + SET, signature,
  entry/envelope consistency) with an identity policy built from ``Identity``.
  That is CPU-bound and synchronous: ``verify_bundle`` runs it in a worker thread.
- Key-signed bundles (``publicKey`` material) are ours: sigstore-python does not do
  them (SPEC §8). DSSE PAE signature with the key, then the Rekor entry per the
  authority's tlog mode: SET over the RFC 8785 canonical entry, inclusion proof
  and signed checkpoint (transparency.py, not sigstore-python's private modules),
  and a body that records this payload, signature and key (``dsse`` 0.0.1, or Rekor
  v2's ``hashedrekord``/``dsse`` 0.0.2); RFC 3161 timestamps against the trusted
  root's timestamp authorities (timestamp.py, with ``rfc3161-client``).
- Then what sigstore-python leaves to the caller: the statement is in-toto v0.1/v1,
  one of its subjects is the admitted image digest, and (for image signatures) the
  predicate type is cosign's image-signature type.

Trusted roots are the files trust.py reads (SPEC §8: the ones embedded in the
sigstore package for public-good/staging, never its TUF updater).
"""

from __future__ import annotations

import base64
import binascii
import functools
import hashlib
import json
import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from importlib import resources
from typing import Any
from urllib.parse import quote

import anyio
import anyio.to_thread
import pydantic
from cryptography import x509
from cryptography.exceptions import InvalidSignature, UnsupportedAlgorithm
from cryptography.hazmat.primitives.serialization import load_der_public_key, load_pem_public_key
from sigstore.errors import CertValidationError
from sigstore.errors import Error as SigstoreError
from sigstore.errors import VerificationError as SigstoreVerificationError
from sigstore.models import Bundle as SigstoreBundle
from sigstore.models import TrustedRoot as SigstoreTrustedRoot
from sigstore.verify import Verifier
from sigstore_models.bundle.v1 import Bundle as BundleModel
from sigstore_models.rekor.v1 import TransparencyLogEntry as LogEntryModel

from webhook.errors import (
    ManifestUnknownError,
    RegistryContentError,
    RegistryError,
    VerificationError,
)
from webhook.identity import Identity
from webhook.keys import PublicKey, check_public_key, public_key_der
from webhook.oci import (
    BUNDLE_PREDICATE_TYPE_ANNOTATION,
    IN_TOTO_PAYLOAD_TYPE,
    SIGSTORE_BUNDLE_V03,
    Descriptor,
)
from webhook.references import ImageReference
from webhook.registry import NoBundleLayerError, RegistryClient
from webhook.signatures.cosign import (
    RekorKey,
    TlogMode,
    reject_duplicate_keys,
    verify_raw_signature,
    verify_signed_entry_timestamp,
)
from webhook.signatures.keyless import check_identity
from webhook.signatures.timestamp import Timestamp, verify_timestamp_response
from webhook.signatures.transparency import verify_checkpoint, verify_inclusion_proof
from webhook.signatures.trust import (
    EMBEDDED_ROOTS,
    CertificateAuthority,
    TrustedRootError,
    TrustedRootMaterial,
    load_trusted_root,
    root_cache_key,
)

COSIGN_SIGN_PREDICATE = "https://sigstore.dev/cosign/sign/v1"
"""predicateType of cosign v3's image signature statement (no predicate body)."""
IN_TOTO_STATEMENT_V01 = "https://in-toto.io/Statement/v0.1"
IN_TOTO_STATEMENT_V1 = "https://in-toto.io/Statement/v1"
IN_TOTO_STATEMENT_TYPES = (IN_TOTO_STATEMENT_V01, IN_TOTO_STATEMENT_V1)

# A statement larger than this is not a signature: refuse to parse it.
MAX_STATEMENT_BYTES = 4 * 1024 * 1024
# Bundles of one image tried per authority; more referrers than this are abuse.
MAX_BUNDLES = 50
_FETCH_CONCURRENCY = 8


# --------------------------------------------------------------------------- values


@dataclass(frozen=True, slots=True)
class KeylessTrust:
    """Who a keyless bundle must come from, and which trusted root vouches for Fulcio/Rekor."""

    identity: Identity
    trusted_root: str = "public-good"


@dataclass(frozen=True, slots=True)
class KeyTrust:
    """A public key bundles must be signed with, and how its Rekor entry is treated."""

    key: PublicKey = field(repr=False, compare=False)
    tlog: TlogMode = "optional"
    trusted_root: str = "public-good"


BundleTrust = KeylessTrust | KeyTrust


@dataclass(frozen=True, slots=True)
class InTotoStatement:
    """An in-toto statement as parsed (not yet tied to any image)."""

    type: str
    predicate_type: str
    predicate: Mapping[str, Any]
    subject_digests: tuple[str, ...]  # "<algorithm>:<hex>", lowercase


@dataclass(frozen=True, slots=True)
class VerifiedStatement:
    """A statement whose signature, signer and subject verified for the admitted digest.

    ``integrated_time``: when Rekor logged it (Unix seconds), if a transparency-log
    entry was verified with a signed timestamp, else the earliest verified RFC 3161
    timestamp (key-signed bundles); None otherwise.
    """

    predicate_type: str
    predicate: Mapping[str, Any]
    subject_digests: tuple[str, ...]
    integrated_time: int | None


@dataclass(frozen=True, slots=True)
class FetchedBundle:
    """A bundle blob fetched from a referrer artifact (bytes verified by digest)."""

    descriptor: Descriptor
    content: bytes


# --------------------------------------------------------------------------- DSSE + in-toto


def pae(payload_type: str, payload: bytes) -> bytes:
    """DSSE v1 pre-authentication encoding: what a DSSE signature actually signs."""
    kind = payload_type.encode()
    return b"DSSEv1 %d %s %d %s" % (len(kind), kind, len(payload), payload)


def parse_statement(payload_type: str, payload: bytes) -> InTotoStatement:
    """Parse a DSSE payload as an in-toto statement v0.1 or v1; VerificationError says why not."""
    if payload_type != IN_TOTO_PAYLOAD_TYPE:
        raise VerificationError(
            f"DSSE payloadType is {payload_type!r}, not an in-toto statement "
            f"({IN_TOTO_PAYLOAD_TYPE})"
        )
    if len(payload) > MAX_STATEMENT_BYTES:
        raise VerificationError(f"in-toto statement is larger than {MAX_STATEMENT_BYTES} bytes")
    try:
        document = json.loads(payload, object_pairs_hook=reject_duplicate_keys("in-toto statement"))
    except (ValueError, RecursionError) as exc:  # UnicodeDecodeError is a ValueError
        raise VerificationError(f"in-toto statement is not JSON: {exc}") from None
    if not isinstance(document, dict):
        raise VerificationError("in-toto statement must be a JSON object")
    kind = document.get("_type")
    if kind not in IN_TOTO_STATEMENT_TYPES:
        raise VerificationError(
            f"in-toto statement _type is {kind!r}, not {IN_TOTO_STATEMENT_V01} or "
            f"{IN_TOTO_STATEMENT_V1}"
        )
    predicate_type = document.get("predicateType")
    if not isinstance(predicate_type, str) or not predicate_type:
        raise VerificationError("in-toto statement has no predicateType string")
    predicate = document.get("predicate", {})
    if predicate is None:
        predicate = {}
    if not isinstance(predicate, dict):
        raise VerificationError("in-toto statement predicate must be a JSON object")
    subjects = document.get("subject")
    if not isinstance(subjects, list) or not subjects:
        raise VerificationError("in-toto statement has no subject list")
    digests: list[str] = []
    for position, subject in enumerate(subjects):
        if not isinstance(subject, dict) or not isinstance(subject.get("digest"), dict):
            raise VerificationError(f"in-toto statement subject {position} has no digest object")
        for algorithm, value in subject["digest"].items():
            if isinstance(value, str) and re.fullmatch(r"[0-9a-fA-F]+", value):
                digests.append(f"{algorithm.lower()}:{value.lower()}")
    return InTotoStatement(kind, predicate_type, predicate, tuple(digests))


def check_statement(
    statement: InTotoStatement,
    *,
    image_digest: str,
    predicate_type: str | None,
    integrated_time: int | None = None,
) -> VerifiedStatement:
    """The statement must name ``image_digest`` (and ``predicate_type`` unless None)."""
    wanted = image_digest.lower()
    if wanted not in statement.subject_digests:
        named = ", ".join(statement.subject_digests) or "no digest"
        raise VerificationError(f"bundle statement names digest {named}, not {image_digest}")
    if predicate_type is not None and statement.predicate_type != predicate_type:
        raise VerificationError(
            f"statement predicateType is {statement.predicate_type!r}, not {predicate_type!r}"
        )
    return VerifiedStatement(
        statement.predicate_type, statement.predicate, statement.subject_digests, integrated_time
    )


# --------------------------------------------------------------------------- identity policy


class IdentityPolicy:
    """sigstore-python verification policy for an ``Identity`` (one ``verify(cert)`` method).

    The same identity rules as legacy keyless signatures (keyless.check_identity):
    issuer from Fulcio's extension (v2, falling back to v1) equals the issuer; some
    SAN equals the subject or fully matches the subject regexp (never a prefix:
    SPEC §2).
    """

    def __init__(self, identity: Identity) -> None:
        self.identity = identity

    def verify(self, cert: x509.Certificate) -> None:
        try:
            check_identity(cert, self.identity)
        except VerificationError as exc:
            # sigstore-python's policies raise its own error type.
            raise SigstoreVerificationError(f"identity: {exc}") from None


# --------------------------------------------------------------------------- trusted roots


def sigstore_verifier(name_or_path: str) -> Verifier:
    """sigstore-python's Verifier for ``public-good``, ``staging`` or a trusted_root.json path.

    Cached per root (a path is re-read when its mtime or size changes). Embedded
    roots are read as files from the installed sigstore package, never via TUF.
    """
    return _verifier(*root_cache_key(name_or_path))


def sigstore_trusted_root(name_or_path: str) -> SigstoreTrustedRoot:
    """sigstore-python's TrustedRoot for the same names/paths as ``sigstore_verifier``."""
    return _trusted_root(*root_cache_key(name_or_path))


def clear_verifier_cache() -> None:
    """Forget cached verifiers and roots (tests; a reload that must see new files)."""
    _verifier.cache_clear()
    _trusted_root.cache_clear()


@functools.lru_cache(maxsize=16)
def _trusted_root(source: str, _mtime_ns: int, _size: int) -> SigstoreTrustedRoot:
    if source in EMBEDDED_ROOTS:
        directory = quote(EMBEDDED_ROOTS[source], safe="")
        resource = resources.files("sigstore._store").joinpath(directory, "trusted_root.json")
        where = f"the {source} trusted root embedded in the sigstore package"
        try:
            with resources.as_file(resource) as path:
                return SigstoreTrustedRoot.from_file(str(path))
        except OSError as exc:
            raise TrustedRootError(f"cannot read {where}: {exc.strerror or exc}") from None
        except (ValueError, SigstoreError) as exc:
            raise TrustedRootError(f"{where} is not a valid trusted_root.json: {exc}") from None
    try:
        return SigstoreTrustedRoot.from_file(source)
    except OSError as exc:
        raise TrustedRootError(
            f"cannot read trusted root {source!r}: {exc.strerror or exc}"
        ) from None
    except (ValueError, SigstoreError) as exc:
        raise TrustedRootError(
            f"trusted root {source!r} is not a valid trusted_root.json: {exc}"
        ) from None


@functools.lru_cache(maxsize=16)
def _verifier(source: str, mtime_ns: int, size: int) -> Verifier:
    try:
        return Verifier(trusted_root=_trusted_root(source, mtime_ns, size))
    except SigstoreError as exc:
        raise TrustedRootError(f"trusted root {source!r} is not usable: {exc}") from None


# --------------------------------------------------------------------------- verification


def verify_bundle_sync(
    content: bytes,
    trust: BundleTrust,
    *,
    image_digest: str,
    predicate_type: str | None = COSIGN_SIGN_PREDICATE,
) -> VerifiedStatement:
    """Verify a sigstore bundle for ``image_digest``; blocking (use ``verify_bundle``).

    ``predicate_type``: the statement's required predicate type; the default is
    cosign's image-signature type, None accepts any (attestations). Raises
    VerificationError naming what failed; TrustedRootError when the root is unusable.
    """
    model = _parse_bundle(content)
    if model.dsse_envelope is None:
        raise VerificationError(
            "bundle holds a message signature, not a DSSE envelope: not an image "
            "signature or attestation"
        )
    if isinstance(trust, KeylessTrust):
        return _verify_keyless(content, model, trust, image_digest, predicate_type)
    return _verify_keyed(model, trust, image_digest, predicate_type)


async def verify_bundle(
    content: bytes,
    trust: BundleTrust,
    *,
    image_digest: str,
    predicate_type: str | None = COSIGN_SIGN_PREDICATE,
) -> VerifiedStatement:
    """``verify_bundle_sync`` in a worker thread: never blocks the event loop."""
    return await anyio.to_thread.run_sync(
        functools.partial(
            verify_bundle_sync,
            content,
            trust,
            image_digest=image_digest,
            predicate_type=predicate_type,
        )
    )


def _parse_bundle(content: bytes) -> BundleModel:
    try:
        return BundleModel.from_json(content)
    except pydantic.ValidationError as exc:
        first = exc.errors()[0]
        where = ".".join(str(part) for part in first["loc"]) or "(document)"
        raise VerificationError(f"bundle is malformed: {where}: {first['msg']}") from None
    except ValueError as exc:
        raise VerificationError(f"bundle is not JSON: {exc}") from None


def _verify_keyless(
    content: bytes,
    model: BundleModel,
    trust: KeylessTrust,
    image_digest: str,
    predicate_type: str | None,
) -> VerifiedStatement:
    material = model.verification_material
    if material.public_key is not None:
        raise VerificationError(
            "bundle is signed with a public key, but the authority is keyless"
        )
    verifier = sigstore_verifier(trust.trusted_root)
    try:
        bundle = SigstoreBundle.from_json(content)
    except SigstoreError as exc:
        raise VerificationError(f"bundle is malformed: {_sigstore_message(exc)}") from None
    except ValueError as exc:  # a certificate that does not parse
        raise VerificationError(f"bundle certificate is malformed: {exc}") from None
    try:
        payload_type, payload = verifier.verify_dsse(bundle, IdentityPolicy(trust.identity))
    except CertValidationError as exc:
        raise VerificationError(f"bundle certificate chain: {_sigstore_message(exc)}") from None
    except SigstoreError as exc:
        raise VerificationError(f"bundle: {_sigstore_message(exc)}") from None
    except (ValueError, TypeError, KeyError, IndexError, InvalidSignature) as exc:
        # Malformed certificates or entries can surface as plain parser errors.
        raise VerificationError(
            f"bundle does not verify: {type(exc).__name__}: {exc}"
        ) from None
    entry = model.verification_material.tlog_entries[0]
    root = load_trusted_root(trust.trusted_root)
    _check_rekor_key_window(entry, root.rekor_keys)
    signed_at = (
        datetime.fromtimestamp(entry.integrated_time, UTC)
        if entry.inclusion_promise is not None and entry.integrated_time is not None
        else None
    )
    _check_fulcio_window(bundle.signing_certificate, root, signed_at)
    statement = parse_statement(payload_type, payload)
    return check_statement(
        statement,
        image_digest=image_digest,
        predicate_type=predicate_type,
        integrated_time=entry.integrated_time if entry.inclusion_promise else None,
    )


def _sigstore_message(exc: SigstoreError) -> str:
    text = " ".join(str(arg) for arg in exc.args).strip()
    # sigstore-python appends the whole inclusion proof (bytes reprs) to one message.
    text = text.split(": expected log_index=", 1)[0]
    return text[:300] or type(exc).__name__


def _check_rekor_key_window(entry: LogEntryModel, rekor_keys: Sequence[RekorKey]) -> None:
    """The log key must have been valid when the entry was integrated (trusted root window)."""
    if entry.integrated_time is None:
        return
    log_id = entry.log_id.key_id.hex()
    candidates = [key for key in rekor_keys if key.log_id == log_id]
    if not candidates:
        return  # a key trust.py cannot load (sigstore-python verified with it)
    when = datetime.fromtimestamp(entry.integrated_time, UTC)
    if not any(key.valid_at(when) for key in candidates):
        raise VerificationError(
            f"Rekor key {log_id[:16]}… was not valid at integratedTime {when.isoformat()}"
        )


def _check_fulcio_window(
    cert: x509.Certificate, root: TrustedRootMaterial, signed_at: datetime | None = None
) -> None:
    """The issuing Fulcio CA must have been valid when it issued the certificate.

    sigstore-python chains to every Fulcio certificate of the root, expired CAs included
    (validFor end ignored), so the window is ours to hold. The CA is the one whose
    certificate actually signed the leaf, not one that merely shares its issuer name
    (rotations keep names); its window must contain the leaf's notBefore and, when a
    Rekor SET vouches for it, the integrated time (a retired CA could backdate notBefore).
    """
    issuers = [ca for ca in root.fulcio_authorities
               if any(_directly_issued_by(cert, candidate) for candidate in ca.certificates)]
    if not issuers:
        raise VerificationError(
            f"certificate chain: no Fulcio CA of trusted root {root.source} issued the "
            f"certificate (issuer {cert.issuer.rfc4514_string()})"
        )
    moments = [cert.not_valid_before_utc] + ([signed_at] if signed_at is not None else [])
    for ca in issuers:
        if all(
            (ca.valid_from is None or ca.valid_from <= moment)
            and (ca.valid_until is None or moment <= ca.valid_until)
            for moment in moments
        ):
            return
    raise VerificationError(
        f"certificate chain: Fulcio CA {cert.issuer.rfc4514_string()} was not valid "
        f"at {max(moments).isoformat()} in trusted root {root.source}"
    )


def _directly_issued_by(cert: x509.Certificate, issuer: x509.Certificate) -> bool:
    try:
        cert.verify_directly_issued_by(issuer)
    except (ValueError, TypeError, InvalidSignature, UnsupportedAlgorithm):
        return False
    return True


# --------------------------------------------------------------------------- key bundles


def _verify_keyed(
    model: BundleModel, trust: KeyTrust, image_digest: str, predicate_type: str | None
) -> VerifiedStatement:
    material = model.verification_material
    if material.public_key is None:
        raise VerificationError(
            "bundle is signed with a certificate (keyless), but the authority is a key"
        )
    envelope = model.dsse_envelope
    assert envelope is not None
    signed = pae(envelope.payload_type, envelope.payload)
    signatures = [signature.sig for signature in envelope.signatures]
    signature = verify_envelope_signatures(trust.key, signatures, signed)
    integrated_time: int | None = None
    if trust.tlog != "off":
        entries = material.tlog_entries
        if not entries and trust.tlog == "required":
            raise VerificationError(
                "transparency log entry required, but the bundle has no Rekor entry"
            )
        data = material.timestamp_verification_data
        responses = [t.signed_timestamp for t in data.rfc3161_timestamps] if data else []
        root = load_trusted_root(trust.trusted_root) if entries or responses else None
        for entry in entries:
            assert root is not None
            check_entry_body(
                entry.canonicalized_body,
                payload=envelope.payload,
                signature=signature,
                signer=trust.key,
                signed=signed,
            )
            time = _verify_log_entry(entry, root)
            if time is not None:
                integrated_time = time
        # RFC 3161 timestamps (what Rekor v2 entries, which have no SET, rely on for time)
        if responses and root is not None:
            times = verify_rfc3161_timestamps(responses, signature, root.timestamp_authorities)
            if integrated_time is None:
                integrated_time = int(min(t.time for t in times).timestamp())
    statement = parse_statement(envelope.payload_type, envelope.payload)
    return check_statement(
        statement,
        image_digest=image_digest,
        predicate_type=predicate_type,
        integrated_time=integrated_time,
    )


MAX_TIMESTAMPS = 32


def verify_rfc3161_timestamps(
    responses: Sequence[bytes], signature: bytes,
    authorities: Sequence[CertificateAuthority],
) -> list[Timestamp]:
    """Every RFC 3161 timestamp over ``signature`` must verify against one of the trusted
    root's timestamp authorities, inside that authority's validity window (a present but
    invalid timestamp fails the bundle, like a present but invalid Rekor entry)."""
    if len(responses) > MAX_TIMESTAMPS:
        raise VerificationError(f"bundle has {len(responses)} timestamps, at most "
                                f"{MAX_TIMESTAMPS} are read")
    if not authorities:
        raise VerificationError(
            "bundle has RFC 3161 timestamps, but the trusted root has no timestamp authorities"
        )
    verified: list[Timestamp] = []
    for number, response in enumerate(responses, 1):
        problems: list[str] = []
        for authority in authorities:
            chain = authority.certificates
            try:
                timestamp = verify_timestamp_response(response, signature, chain[-1:],
                                                      intermediates=chain[:-1])
            except VerificationError as exc:
                problems.append(str(exc))
                continue
            if (authority.valid_from is not None and timestamp.time < authority.valid_from) or (
                authority.valid_until is not None and timestamp.time > authority.valid_until
            ):
                problems.append("the timestamp authority was not valid at the timestamp")
                continue
            verified.append(timestamp)
            break
        else:
            raise VerificationError(
                f"RFC 3161 timestamp {number}: " + "; ".join(dict.fromkeys(problems))
            )
    return verified


def verify_envelope_signatures(
    key: PublicKey, signatures: Sequence[bytes], signed: bytes
) -> bytes:
    """The first DSSE signature that verifies over the PAE with ``key``; else VerificationError."""
    if not signatures:
        raise VerificationError("DSSE envelope has no signatures")
    failure: VerificationError | None = None
    for signature in signatures:
        try:
            verify_raw_signature(key, signature, signed)
        except VerificationError as exc:
            failure = exc
            continue
        return signature
    assert failure is not None
    raise VerificationError(f"DSSE envelope: {failure}")


def _verify_log_entry(
    entry: LogEntryModel, root: TrustedRootMaterial
) -> int | None:
    """SET (if any) with a Rekor key valid at integratedTime; inclusion proof + checkpoint.

    Returns the integrated time a verified SET vouches for, else None.
    """
    integrated_time: int | None = None
    if entry.inclusion_promise is not None and entry.integrated_time is not None:
        verify_inclusion_promise(
            signed_entry_timestamp=entry.inclusion_promise.signed_entry_timestamp,
            body=entry.canonicalized_body,
            integrated_time=entry.integrated_time,
            log_index=entry.log_index,
            log_id=entry.log_id.key_id.hex(),
            rekor_keys=root.rekor_keys,
        )
        integrated_time = entry.integrated_time
    elif entry.inclusion_proof.checkpoint is None:
        raise VerificationError(
            "Rekor entry has neither a signed entry timestamp nor a checkpointed inclusion proof"
        )
    proof = entry.inclusion_proof
    if proof.checkpoint is not None:
        verify_inclusion_proof(entry.canonicalized_body, log_index=proof.log_index,
                               tree_size=proof.tree_size, hashes=proof.hashes,
                               root=proof.root_hash)
        verify_checkpoint(proof.checkpoint.envelope, tree_size=proof.tree_size,
                          root=proof.root_hash, rekor_keys=root.rekor_keys)
    return integrated_time


def verify_inclusion_promise(
    *,
    signed_entry_timestamp: bytes,
    body: bytes,
    integrated_time: int,
    log_index: int,
    log_id: str,
    rekor_keys: Sequence[RekorKey],
) -> None:
    """Verify a Rekor SET: a log signature over the RFC 8785 JSON of the entry's fields.

    ``body`` is the canonicalized entry body (raw bytes); the key is chosen by
    ``log_id`` (hex) and must have been valid at ``integrated_time``.
    """
    verify_signed_entry_timestamp(
        signed_entry_timestamp,
        body_b64=base64.b64encode(body).decode(),
        integrated_time=integrated_time,
        log_index=log_index,
        log_id=log_id.lower(),
        rekor_keys=rekor_keys,
    )


def check_entry_body(
    body: bytes, *, payload: bytes, signature: bytes, signer: PublicKey | x509.Certificate,
    signed: bytes | None = None,
) -> None:
    """A Rekor entry body must record this DSSE payload, signature and signer.

    Kinds: Rekor v2's ``hashedrekord`` 0.0.2 (the DSSE PAE ``signed`` hashed) and
    ``dsse`` 0.0.2, ``dsse`` 0.0.1 (cosign v3 bundles),
    ``intoto`` 0.0.2 (signature double base64) and 0.0.1 (no signature recorded:
    payload hash and key only) as legacy ``cosign attest`` wrote them.
    """
    try:
        document = json.loads(body)
    except (ValueError, RecursionError) as exc:
        raise VerificationError(f"Rekor entry body is not JSON: {exc}") from None
    if not isinstance(document, dict) or not isinstance(document.get("spec"), dict):
        raise VerificationError("Rekor entry body has no spec object")
    kind, version, spec = document.get("kind"), document.get("apiVersion"), document["spec"]
    payload_hash = hashlib.sha256(payload).hexdigest()
    if version == "0.0.2" and kind in ("hashedrekord", "dsse"):
        _check_v2_body(kind, spec, payload=payload, signature=signature, signer=signer,
                       signed=signed)
        return
    if (kind, version) == ("dsse", "0.0.1"):
        _check_hash(spec.get("payloadHash"), payload_hash, "spec.payloadHash")
        recorded = spec.get("signatures")
        pairs = [
            (_b64(item["signature"], "spec.signatures[].signature"), item.get("verifier"))
            for item in (recorded if isinstance(recorded, list) else [])
            if isinstance(item, dict) and isinstance(item.get("signature"), str)
        ]
    elif (kind, version) == ("intoto", "0.0.2"):
        content = _object(spec.get("content"), "spec.content")
        _check_hash(content.get("payloadHash"), payload_hash, "spec.content.payloadHash")
        envelope = _object(content.get("envelope"), "spec.content.envelope")
        recorded = envelope.get("signatures")
        # The envelope's base64 signature, base64-encoded once more.
        what = "spec.content.envelope.signatures[].sig"
        pairs = [
            (_b64(_b64(item["sig"], what).decode("ascii", "replace"), what), item.get("publicKey"))
            for item in (recorded if isinstance(recorded, list) else [])
            if isinstance(item, dict) and isinstance(item.get("sig"), str)
        ]
    elif (kind, version) == ("intoto", "0.0.1"):
        content = _object(spec.get("content"), "spec.content")
        _check_hash(content.get("payloadHash"), payload_hash, "spec.content.payloadHash")
        if not _same_signer(spec.get("publicKey"), signer):
            raise VerificationError(
                "Rekor entry is for another signer: spec.publicKey differs"
            )
        return
    else:
        raise VerificationError(
            f"Rekor entry is {kind!r} {version!r}: expected dsse 0.0.1 or intoto 0.0.1/0.0.2"
        )
    matching = [verifier for sig, verifier in pairs if sig == signature]
    if not matching:
        raise VerificationError("Rekor entry is for another signature: its signatures differ")
    if not any(_same_signer(verifier, signer) for verifier in matching):
        raise VerificationError("Rekor entry is for another signer: its verifier differs")


def _check_v2_body(
    kind: str, spec: Mapping[str, Any], *, payload: bytes, signature: bytes,
    signer: PublicKey | x509.Certificate, signed: bytes | None,
) -> None:
    """Rekor v2 bodies (rekor-tiles): hashes and keys are base64, verifiers are DER."""
    if kind == "hashedrekord":
        inner = _object(spec.get("hashedRekordV002"), "spec.hashedRekordV002")
        if signed is None:
            raise VerificationError("Rekor hashedrekord 0.0.2 entry for a non-DSSE signature")
        data = _object(inner.get("data"), "spec.hashedRekordV002.data")
        _check_v2_hash(data, signed, "spec.hashedRekordV002.data")
        recorded = [_object(inner.get("signature"), "spec.hashedRekordV002.signature")]
    else:
        inner = _object(spec.get("dsseV002"), "spec.dsseV002")
        _check_v2_hash(_object(inner.get("payloadHash"), "spec.dsseV002.payloadHash"), payload,
                       "spec.dsseV002.payloadHash")
        items = inner.get("signatures")
        recorded = [_object(i, "spec.dsseV002.signatures[]")
                    for i in (items if isinstance(items, list) else [])]
    what = "Rekor v2 entry signature.content"
    matching = [item for item in recorded
                if isinstance(item.get("content"), str)
                and _b64(item["content"], what) == signature]
    if not matching:
        raise VerificationError("Rekor entry is for another signature: its signatures differ")
    for item in matching:
        verifier = _object(item.get("verifier"), "Rekor v2 entry signature.verifier")
        for field_name in ("publicKey", "x509Certificate"):
            raw = verifier.get(field_name)
            if isinstance(raw, dict) and isinstance(raw.get("rawBytes"), str):
                der = _b64(raw["rawBytes"], f"verifier.{field_name}.rawBytes")
                if _same_der_signer(der, field_name, signer):
                    return
    raise VerificationError("Rekor entry is for another signer: its verifier differs")


def _check_v2_hash(data: Mapping[str, Any], content: bytes, what: str) -> None:
    if data.get("algorithm") != "SHA2_256":
        raise VerificationError(f"Rekor entry {what} hashes with {data.get('algorithm')!r}, "
                                "not SHA2_256")
    digest = data.get("digest")
    if not isinstance(digest, str) or _b64(digest, f"{what}.digest") != hashlib.sha256(
        content
    ).digest():
        raise VerificationError(f"Rekor entry is for another payload: {what} differs")


def _same_der_signer(der: bytes, field_name: str, signer: PublicKey | x509.Certificate) -> bool:
    try:
        if field_name == "x509Certificate":
            return isinstance(signer, x509.Certificate) and x509.load_der_x509_certificate(
                der) == signer
        if isinstance(signer, x509.Certificate):
            return False
        return public_key_der(check_public_key(load_der_public_key(der))) == public_key_der(
            signer)
    except (ValueError, UnsupportedAlgorithm, VerificationError):
        return False


def _object(value: Any, what: str) -> Mapping[str, Any]:
    if not isinstance(value, dict):
        raise VerificationError(f"Rekor entry body {what} must be a JSON object")
    return value


def _b64(text: str, what: str) -> bytes:
    try:
        return base64.b64decode(text, validate=True)
    except (binascii.Error, ValueError):
        raise VerificationError(f"Rekor entry body {what} is not base64") from None


def _check_hash(value: Any, expected_hex: str, what: str) -> None:
    hashed = _object(value, what)
    if hashed.get("algorithm") != "sha256":
        raise VerificationError(f"Rekor entry {what} is not sha256")
    recorded = hashed.get("value")
    if not isinstance(recorded, str) or recorded.lower() != expected_hex:
        raise VerificationError(f"Rekor entry is for another payload: {what} differs")


def _same_signer(recorded: Any, signer: PublicKey | x509.Certificate) -> bool:
    """Does a base64 PEM (key or certificate) from an entry body name ``signer``?"""
    if not isinstance(recorded, str):
        return False
    try:
        pem = base64.b64decode(recorded, validate=True)
    except (binascii.Error, ValueError):
        return False
    try:
        if b"-----BEGIN CERTIFICATE-----" in pem:
            certificate = x509.load_pem_x509_certificate(pem)
            if isinstance(signer, x509.Certificate):
                return certificate == signer
            key_der = public_key_der(check_public_key(certificate.public_key()))
            return key_der == public_key_der(signer)
        if isinstance(signer, x509.Certificate):
            return False  # a keyless signature is logged with its certificate
        return public_key_der(check_public_key(load_pem_public_key(pem))) == public_key_der(
            signer
        )
    except (ValueError, UnsupportedAlgorithm, VerificationError):
        # UnsupportedAlgorithm: a certificate whose key type cryptography cannot load.
        return False


# --------------------------------------------------------------------------- registry


async def fetch_bundles(
    registry: RegistryClient,
    ref: ImageReference,
    image_digest: str,
    *,
    predicate_type: str | None = None,
    referrers: Sequence[Descriptor] | None = None,
) -> list[FetchedBundle]:
    """Bundle referrers of an image, fetched (manifest + layer, each verified by digest).

    ``predicate_type`` skips referrers whose ``dev.sigstore.bundle.predicateType``
    annotation names another type (an unauthenticated hint: it only saves fetches;
    the statement inside is what is checked). ``referrers``: the image's referrers list
    when the caller has it already (one listing serves signatures and attestations).
    RegistryError when the registry fails.
    """
    if referrers is None:
        referrers = await registry.referrers(ref, image_digest,
                                             artifact_type=SIGSTORE_BUNDLE_V03)
    descriptors = [item for item in referrers if item.artifact_type == SIGSTORE_BUNDLE_V03]
    wanted = [
        descriptor for descriptor in descriptors
        if predicate_type is None
        or descriptor.annotations.get(BUNDLE_PREDICATE_TYPE_ANNOTATION, predicate_type)
        == predicate_type
    ][:min(MAX_BUNDLES, registry.limits.max_signatures)]
    contents: list[bytes | None] = [None] * len(wanted)
    errors: list[RegistryError] = []
    limiter = anyio.Semaphore(_FETCH_CONCURRENCY)

    async with anyio.create_task_group() as group:

        async def fetch(index: int, descriptor: Descriptor) -> None:
            async with limiter:
                try:
                    contents[index] = await registry.bundle_for(ref, descriptor)
                except (NoBundleLayerError, ManifestUnknownError, RegistryContentError):
                    # A referrer without a bundle, or listed but gone (deleted since):
                    # not a signature (others may be), and never an error someone with
                    # push access could plant to reach onError.
                    return
                except RegistryError as exc:
                    # One unreadable bundle makes the answer an error: stop the rest.
                    errors.append(exc)
                    group.cancel_scope.cancel()

        for index, descriptor in enumerate(wanted):
            group.start_soon(fetch, index, descriptor)
    if errors:
        raise errors[0]
    return [
        FetchedBundle(descriptor, content)
        for descriptor, content in zip(wanted, contents, strict=True)
        if content is not None
    ]


async def verify_image_bundles(
    bundles: Sequence[FetchedBundle],
    trust: BundleTrust,
    *,
    image_digest: str,
    predicate_type: str | None = COSIGN_SIGN_PREDICATE,
) -> VerifiedStatement:
    """The first bundle that verifies for ``image_digest``; VerificationError joins the reasons."""
    if not bundles:
        raise VerificationError("no sigstore bundles attached to the image")
    reasons: list[str] = []
    for fetched in bundles:
        try:
            return await verify_bundle(
                fetched.content, trust, image_digest=image_digest, predicate_type=predicate_type
            )
        except VerificationError as exc:
            if str(exc) not in reasons:
                reasons.append(str(exc))
    raise VerificationError("; ".join(reasons) or "no sigstore bundles attached to the image")


__all__ = [
    "COSIGN_SIGN_PREDICATE",
    "IN_TOTO_STATEMENT_TYPES",
    "BundleTrust",
    "FetchedBundle",
    "IdentityPolicy",
    "InTotoStatement",
    "KeyTrust",
    "KeylessTrust",
    "VerifiedStatement",
    "check_entry_body",
    "check_statement",
    "clear_verifier_cache",
    "fetch_bundles",
    "pae",
    "parse_statement",
    "sigstore_trusted_root",
    "sigstore_verifier",
    "verify_bundle",
    "verify_bundle_sync",
    "verify_envelope_signatures",
    "verify_image_bundles",
    "verify_inclusion_promise",
]
