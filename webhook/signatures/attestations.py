"""Signed attestations about an image: in-toto statements verified against an authority.

Two places hold them (SPEC §4):
- cosign's legacy ``sha256-<hex>.att`` image: one DSSE envelope per layer (media
  type ``application/vnd.dsse.envelope.v1+json``), signed with a key or keyless
  (Fulcio certificate, chain and Rekor SET in the same annotations as ``.sig``
  layers);
- cosign v3 sigstore bundle referrers whose statement is not an image signature.

A statement counts only when its signature verifies against the authority and one
of its subjects is the admitted digest; ``VerifiedStatement`` hands predicate type
and predicate to the scan gate. The cosign vulnerability predicate
(``https://cosign.sigstore.dev/attestation/vuln/v1``) is recognised by its exact
type: the scheme-less spelling older cosign wrote does not match.
"""

from __future__ import annotations

import base64
import binascii
import functools
import json
from collections.abc import Awaitable, Callable, Mapping, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

import anyio
import anyio.to_thread
from cryptography import x509

from webhook.errors import RegistryError, VerificationError
from webhook.keys import PublicKey
from webhook.oci import (
    BUNDLE_PREDICATE_TYPE_ANNOTATION,
    COSIGN_BUNDLE_ANNOTATION,
    COSIGN_VULN_PREDICATE,
    DSSE_ENVELOPE,
    Descriptor,
    SignatureLayer,
)
from webhook.references import ImageReference
from webhook.registry import RegistryClient
from webhook.signatures.bundle import (
    COSIGN_SIGN_PREDICATE,
    BundleTrust,
    FetchedBundle,
    KeylessTrust,
    KeyTrust,
    VerifiedStatement,
    check_entry_body,
    check_statement,
    fetch_bundles,
    pae,
    parse_statement,
    verify_bundle,
    verify_envelope_signatures,
    verify_inclusion_promise,
)
from webhook.signatures.cosign import RekorKey
from webhook.signatures.keyless import check_certificate, layer_certificates
from webhook.signatures.trust import load_trusted_root

COSIGN_CUSTOM_PREDICATE = "https://cosign.sigstore.dev/attestation/v1"
# More .att layers or bundles than this are abuse: the first ones are looked at.
MAX_ATTESTATIONS = 100


# --------------------------------------------------------------------------- DSSE


@dataclass(frozen=True, slots=True)
class DsseEnvelope:
    """A DSSE envelope as parsed: what is signed (PAE of type + payload) and the signatures."""

    payload_type: str
    payload: bytes
    signatures: tuple[bytes, ...]


def _b64(value: Any, what: str) -> bytes:
    if not isinstance(value, str):
        raise VerificationError(f"DSSE envelope {what} must be a base64 string")
    try:
        # DSSE allows URL-safe base64 too; normalise before a strict decode.
        text = "".join(value.split()).replace("-", "+").replace("_", "/")
        return base64.b64decode(text + "=" * (-len(text) % 4), validate=True)
    except (binascii.Error, ValueError):
        raise VerificationError(f"DSSE envelope {what} is not valid base64") from None


def parse_dsse_envelope(content: bytes) -> DsseEnvelope:
    """Parse DSSE envelope JSON; VerificationError naming the bad field."""
    try:
        document = json.loads(content)
    except (ValueError, RecursionError) as exc:
        raise VerificationError(f"DSSE envelope is not JSON: {exc}") from None
    if not isinstance(document, dict):
        raise VerificationError("DSSE envelope must be a JSON object")
    payload_type = document.get("payloadType")
    if not isinstance(payload_type, str):
        raise VerificationError("DSSE envelope has no payloadType string")
    try:
        payload_type.encode()  # the PAE signs its UTF-8 bytes; JSON allows lone surrogates
    except UnicodeEncodeError:
        raise VerificationError("DSSE envelope payloadType is not valid Unicode") from None
    payload = _b64(document.get("payload"), "payload")
    raw_signatures = document.get("signatures")
    if not isinstance(raw_signatures, list):
        raise VerificationError("DSSE envelope has no signatures list")
    signatures = tuple(
        _b64(item.get("sig"), "signatures[].sig")
        for item in raw_signatures
        if isinstance(item, dict)
    )
    return DsseEnvelope(payload_type, payload, signatures)


# --------------------------------------------------------------------------- legacy .att


def verify_attestation_layer(
    layer: SignatureLayer,
    trust: BundleTrust,
    *,
    image_digest: str,
    predicate_type: str | None = None,
) -> VerifiedStatement:
    """Verify one legacy ``.att`` layer (a DSSE envelope) for ``image_digest``; blocking.

    Key authorities: a DSSE signature over the PAE with the key; a Rekor SET in
    ``dev.sigstore.cosign/bundle`` per the tlog mode (``optional``: checked when
    present). Keyless authorities: the certificate's key signs the envelope, the SET
    is required and dates the signature, at which time the certificate must chain to a
    Fulcio CA with a valid embedded SCT, and carry the identity. Then the statement must
    name ``image_digest`` (and ``predicate_type`` unless None).
    """
    if layer.media_type != DSSE_ENVELOPE:
        raise VerificationError(f"not a DSSE attestation: media type {layer.media_type!r}")
    envelope = parse_dsse_envelope(layer.payload)
    signed = pae(envelope.payload_type, envelope.payload)
    bundle_text = layer.annotations.get(COSIGN_BUNDLE_ANNOTATION)
    integrated_time: int | None = None
    if isinstance(trust, KeyTrust):
        signature = verify_envelope_signatures(trust.key, envelope.signatures, signed)
        if trust.tlog != "off":
            if bundle_text is None:
                if trust.tlog == "required":
                    raise VerificationError(
                        "transparency log entry required, but the attestation has no "
                        "Rekor bundle"
                    )
            else:
                integrated_time = verify_cosign_bundle_annotation(
                    bundle_text,
                    payload=envelope.payload,
                    signature=signature,
                    signer=trust.key,
                    rekor_keys=load_trusted_root(trust.trusted_root).rekor_keys,
                )
    else:
        integrated_time = _verify_keyless_layer(layer, envelope, signed, bundle_text, trust)
    statement = parse_statement(envelope.payload_type, envelope.payload)
    return check_statement(
        statement,
        image_digest=image_digest,
        predicate_type=predicate_type,
        integrated_time=integrated_time,
    )


def _verify_keyless_layer(
    layer: SignatureLayer,
    envelope: DsseEnvelope,
    signed: bytes,
    bundle_text: str | None,
    trust: KeylessTrust,
) -> int:
    leaf, chain, signer_key = layer_certificates(layer, "attestation")
    try:
        signature = verify_envelope_signatures(signer_key, envelope.signatures, signed)
    except VerificationError:
        raise VerificationError(
            "DSSE signature does not verify with the certificate's public key"
        ) from None
    if bundle_text is None:
        raise VerificationError(
            "transparency log entry required: a keyless attestation needs a Rekor SET "
            f"({COSIGN_BUNDLE_ANNOTATION}) to prove when its short-lived certificate was used"
        )
    material = load_trusted_root(trust.trusted_root)
    integrated_time = verify_cosign_bundle_annotation(
        bundle_text,
        payload=envelope.payload,
        signature=signature,
        signer=leaf,
        rekor_keys=material.rekor_keys,
    )
    check_certificate(leaf, chain, material, trust.identity, integrated_time=integrated_time)
    return integrated_time


def verify_cosign_bundle_annotation(
    text: str,
    *,
    payload: bytes,
    signature: bytes,
    signer: PublicKey | x509.Certificate,
    rekor_keys: Sequence[RekorKey],
) -> int:
    """Verify cosign's ``dev.sigstore.cosign/bundle`` (a Rekor SET) for a DSSE signature.

    The SET must verify with a trusted Rekor key valid at integratedTime, and the entry
    body (``intoto`` 0.0.1/0.0.2 or ``dsse`` 0.0.1) must record this payload, signature
    and signer. Returns the integrated time.
    """
    try:
        document = json.loads(text)
    except (ValueError, RecursionError) as exc:
        raise VerificationError(f"Rekor bundle is not JSON: {exc}") from None
    entry = document.get("Payload") if isinstance(document, dict) else None
    if not isinstance(entry, dict):
        raise VerificationError("Rekor bundle has no Payload object")
    set_text = document.get("SignedEntryTimestamp")
    body_text = entry.get("body")
    integrated_time = entry.get("integratedTime")
    log_index = entry.get("logIndex")
    log_id = entry.get("logID")
    if not (
        isinstance(set_text, str)
        and isinstance(body_text, str)
        and isinstance(log_id, str)
        and isinstance(integrated_time, int)
        and not isinstance(integrated_time, bool)
        and isinstance(log_index, int)
        and not isinstance(log_index, bool)
    ):
        raise VerificationError(
            "Rekor bundle needs SignedEntryTimestamp, Payload.body, Payload.logID (strings) "
            "and Payload.integratedTime, Payload.logIndex (integers)"
        )
    try:
        set_signature = base64.b64decode(set_text, validate=True)
        body = base64.b64decode(body_text, validate=True)
    except (binascii.Error, ValueError):
        raise VerificationError("Rekor bundle SET or body is not valid base64") from None
    try:
        verify_inclusion_promise(
            signed_entry_timestamp=set_signature,
            body=body,
            integrated_time=integrated_time,
            log_index=log_index,
            log_id=log_id,
            rekor_keys=rekor_keys,
        )
        check_entry_body(body, payload=payload, signature=signature, signer=signer)
    except VerificationError as exc:
        raise VerificationError(f"transparency log entry (Rekor SET) rejected: {exc}") from None
    return integrated_time


# --------------------------------------------------------------------------- gathering


@dataclass(frozen=True, slots=True)
class AttachedAttestations:
    """What an image carries that may be attestations, fetched but not yet verified."""

    layers: tuple[SignatureLayer, ...]  # legacy .att DSSE layers
    bundles: tuple[FetchedBundle, ...]  # bundle referrers that are not image signatures


@dataclass(frozen=True, slots=True)
class AttestationResults:
    """Statements that verified for an authority, and why the others did not count."""

    statements: tuple[VerifiedStatement, ...]
    rejected: tuple[str, ...]

    def of_type(self, predicate_type: str) -> tuple[VerifiedStatement, ...]:
        return tuple(s for s in self.statements if s.predicate_type == predicate_type)


async def fetch_attestations(
    registry: RegistryClient, ref: ImageReference, image_digest: str, *,
    list_referrers: Callable[[], Awaitable[Sequence[Descriptor]]] | None = None,
) -> AttachedAttestations:
    """Legacy ``.att`` layers and bundle referrers of an image (RegistryError on failure).

    ``list_referrers``: how to list the image's referrers when the caller shares one listing
    between signatures and attestations."""
    layers: list[SignatureLayer] = []
    bundles: list[FetchedBundle] = []
    errors: list[RegistryError] = []

    async def legacy() -> None:
        try:
            layers.extend(await registry.cosign_attestations(ref, image_digest))
        except RegistryError as exc:
            errors.append(exc)

    async def referrers() -> None:
        try:
            listed = await list_referrers() if list_referrers is not None else None
            found = await fetch_bundles(registry, ref, image_digest, referrers=listed)
        except RegistryError as exc:
            errors.append(exc)
            return
        # Image signatures are bundles too; the hint saves nothing if wrong (checked later).
        bundles.extend(
            item for item in found
            if item.descriptor.annotations.get(BUNDLE_PREDICATE_TYPE_ANNOTATION)
            != COSIGN_SIGN_PREDICATE
        )

    async with anyio.create_task_group() as group:
        group.start_soon(legacy)
        group.start_soon(referrers)
    if errors:
        raise errors[0]
    limit = min(MAX_ATTESTATIONS, registry.limits.max_signatures)
    return AttachedAttestations(tuple(layers[:limit]), tuple(bundles[:limit]))


async def verify_attestations(
    attached: AttachedAttestations,
    trust: BundleTrust,
    *,
    image_digest: str,
    predicate_type: str | None = None,
) -> AttestationResults:
    """Verify every attached attestation against one authority (each off the event loop).

    Image-signature statements (cosign's sign/v1 predicate) are not attestations and
    are left out. A statement that fails counts for nothing; its reason is kept.
    """
    statements: list[VerifiedStatement] = []
    rejected: list[str] = []
    for layer in attached.layers:
        try:
            statement = await anyio.to_thread.run_sync(functools.partial(
                verify_attestation_layer,
                layer,
                trust,
                image_digest=image_digest,
                predicate_type=predicate_type,
            ))
        except VerificationError as exc:
            rejected.append(f"attestation layer: {exc}")
            continue
        statements.append(statement)
    for fetched in attached.bundles:
        try:
            statement = await verify_bundle(
                fetched.content, trust, image_digest=image_digest, predicate_type=predicate_type
            )
        except VerificationError as exc:
            rejected.append(f"attestation bundle {fetched.descriptor.digest}: {exc}")
            continue
        if statement.predicate_type != COSIGN_SIGN_PREDICATE:
            statements.append(statement)
    return AttestationResults(tuple(statements), tuple(dict.fromkeys(rejected)))


# --------------------------------------------------------------------------- predicates


@dataclass(frozen=True, slots=True)
class CosignVulnPredicate:
    """cosign's vulnerability predicate (``cosign attest --type vuln``), as far as it is typed.

    ``result`` is the scanner's report as given (e.g. Trivy JSON), or None.
    """

    scanner_uri: str
    scanner_version: str
    result: Any
    scan_started: datetime | None
    scan_finished: datetime | None


def is_vuln_predicate(predicate_type: str) -> bool:
    """Exactly cosign's vuln predicate type (not the scheme-less legacy spelling)."""
    return predicate_type == COSIGN_VULN_PREDICATE


def parse_vuln_predicate(predicate: Mapping[str, Any]) -> CosignVulnPredicate:
    """Read a cosign vuln predicate; VerificationError when its shape is wrong."""
    scanner = predicate.get("scanner")
    if not isinstance(scanner, dict):
        raise VerificationError("vuln predicate has no scanner object")
    uri, version = scanner.get("uri", ""), scanner.get("version", "")
    if not isinstance(uri, str) or not isinstance(version, str):
        raise VerificationError("vuln predicate scanner.uri / scanner.version must be strings")
    metadata = predicate.get("metadata") or {}
    if not isinstance(metadata, dict):
        raise VerificationError("vuln predicate metadata must be an object")
    return CosignVulnPredicate(
        scanner_uri=uri,
        scanner_version=version,
        result=scanner.get("result"),
        scan_started=_timestamp(metadata.get("scanStartedOn"), "metadata.scanStartedOn"),
        scan_finished=_timestamp(metadata.get("scanFinishedOn"), "metadata.scanFinishedOn"),
    )


def _timestamp(value: Any, what: str) -> datetime | None:
    """RFC 3339 → aware datetime; Go's zero time (0001-01-01T00:00:00Z) and absence → None."""
    if value is None or value == "":
        return None
    if not isinstance(value, str):
        raise VerificationError(f"vuln predicate {what} must be an RFC 3339 string")
    try:
        moment = datetime.fromisoformat(value.replace("Z", "+00:00"))
    except ValueError:
        raise VerificationError(f"vuln predicate {what} is not RFC 3339: {value!r}") from None
    if moment.tzinfo is None:
        moment = moment.replace(tzinfo=UTC)
    return None if moment.year <= 1 else moment


__all__ = [
    "COSIGN_CUSTOM_PREDICATE",
    "COSIGN_VULN_PREDICATE",
    "AttachedAttestations",
    "AttestationResults",
    "CosignVulnPredicate",
    "DsseEnvelope",
    "fetch_attestations",
    "is_vuln_predicate",
    "parse_dsse_envelope",
    "parse_vuln_predicate",
    "verify_attestation_layer",
    "verify_attestations",
    "verify_cosign_bundle_annotation",
]
