"""Notary Project signatures as an authority verifier (``notation`` authorities, SPEC §9).

Signature manifests are the image digest's referrers (OCI referrers API, else the
referrers tag schema) with artifactType ``application/vnd.cncf.notary.signature``
(registries fill it in from the config media type of the legacy form). Each holds one
envelope layer. The manifests and envelopes are fetched once per (repository, digest)
for every notation authority; verification runs in a worker thread.
"""

from __future__ import annotations

import json
import logging
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import UTC, datetime

import anyio
import anyio.to_thread

from webhook.cache import FactCache
from webhook.decision import Outcome, SignatureCheck
from webhook.errors import (
    ManifestUnknownError,
    RegistryContentError,
    RegistryError,
    VerificationError,
)
from webhook.oci import Descriptor
from webhook.policy import NotationAuthority
from webhook.references import ImageReference
from webhook.registry import RegistryClient
from webhook.signatures.listing import listed_referrers
from webhook.signatures.notation import (
    ENVELOPE_MEDIA_TYPES,
    MAX_ENVELOPE_BYTES,
    NOTARY_SIGNATURE,
    verify_notation_signature,
)

log = logging.getLogger(__name__)

MAX_NOTATION_SIGNATURES = 16  # signature manifests examined per image (SPEC §9 hard limits)


@dataclass(frozen=True, slots=True)
class NotarySignature:
    """One signature manifest: its envelope (or why it holds none) and the signed subject."""

    manifest_digest: str
    subject: Descriptor | None
    envelope_media_type: str
    envelope: bytes
    problem: str = ""  # set when the manifest is not a usable signature


class NotationVerifier:
    """Verifies ``notation`` authorities against the image's Notary Project signatures."""

    kinds = ("notation",)

    def __init__(self, registry: RegistryClient, cache: FactCache) -> None:
        self._registry = registry
        self._cache = cache

    async def verify(self, check: SignatureCheck, ref: ImageReference, digest: str) -> Outcome:
        authority = check.authority
        if not isinstance(authority, NotationAuthority):
            raise TypeError(f"not a notation authority: {authority.kind}")
        try:
            signatures = await self._signatures(ref, digest)
        except RegistryContentError as exc:
            return Outcome("fail", f"unusable referrers: {exc}")
        except RegistryError as exc:
            return Outcome("error", f"fetching Notary Project signatures: {exc}")
        if not signatures:
            return Outcome("fail", "no Notary Project signatures found")
        return await anyio.to_thread.run_sync(
            verify_signatures, signatures, authority, digest, datetime.now(UTC)
        )

    async def _signatures(self, ref: ImageReference, digest: str) -> list[NotarySignature]:
        async def fetch() -> list[NotarySignature]:
            # the listing bundles and attestations use too: one request for all of them
            listed = await listed_referrers(self._registry, self._cache, ref, digest)
            return await fetch_notary_signatures(self._registry, ref, digest, listed)

        signatures, _ = await self._cache.get_or_fetch(
            "notation-signatures", (ref.name, digest), fetch, lambda _v: "error"
        )
        return signatures


def verify_signatures(
    signatures: Sequence[NotarySignature],
    authority: NotationAuthority,
    digest: str,
    now: datetime,
) -> Outcome:
    """``ok`` when any signature satisfies the authority (permissive notes as the reason)."""
    reasons: list[str] = []
    for signature in signatures:
        where = f"signature {signature.manifest_digest[:19]}"
        if signature.problem or signature.subject is None:
            reasons.append(f"{where}: {signature.problem}")
            continue
        try:
            verified = verify_notation_signature(
                signature.envelope_media_type,
                signature.envelope,
                subject=signature.subject,
                image_digest=digest,
                authority=authority,
                now=now,
            )
        except VerificationError as exc:
            reasons.append(f"{where}: {exc}")
            continue
        # permissive: what it let pass goes to the audit line (signature_reasons)
        note = "; ".join(verified.notes)
        return Outcome("ok", f"{where} ({verified.leaf_subject}): {note}" if note else "")
    return Outcome("fail", "; ".join(reasons))


async def fetch_notary_signatures(
    registry: RegistryClient, ref: ImageReference, digest: str,
    referrers: Sequence[Descriptor] | None = None,
) -> list[NotarySignature]:
    """The image's Notary Project signature manifests with their envelope blobs.

    ``referrers``: the digest's referrers already listed (else they are listed here).
    A manifest that is not a usable signature (no envelope layer, another subject) is
    kept with its problem, so the deny message can say why; registry failures raise.
    """
    if referrers is None:
        referrers = await registry.referrers(ref, digest, artifact_type=NOTARY_SIGNATURE)
    descriptors = [d for d in referrers if d.artifact_type == NOTARY_SIGNATURE]
    out: list[NotarySignature] = []
    for descriptor in descriptors[:MAX_NOTATION_SIGNATURES]:
        try:
            out.append(await _fetch_one(registry, ref, descriptor.digest))
        except ManifestUnknownError as exc:
            log.info("listed Notary signature %s is gone: %s", descriptor.digest, exc)
        except RegistryContentError as exc:
            out.append(NotarySignature(descriptor.digest, None, "", b"", f"unusable: {exc}"))
    return out


async def _fetch_one(
    registry: RegistryClient, ref: ImageReference, manifest_digest: str
) -> NotarySignature:
    manifest = await registry.get_manifest(ref, manifest_digest)

    def unusable(problem: str) -> NotarySignature:
        return NotarySignature(manifest_digest, None, "", b"", problem)

    try:
        document = json.loads(manifest.content)
    except (ValueError, UnicodeDecodeError, RecursionError):
        return unusable("integrity: the signature manifest is not JSON")
    if not isinstance(document, dict):
        return unusable("integrity: the signature manifest is not a JSON object")
    config = document.get("config")
    config_type = config.get("mediaType") if isinstance(config, dict) else None
    if NOTARY_SIGNATURE not in (document.get("artifactType"), config_type):
        return unusable(f"not a Notary Project signature manifest (no {NOTARY_SIGNATURE})")
    subject = _descriptor(document.get("subject"))
    if subject is None:
        return unusable("integrity: the signature manifest has no subject")
    layers = document.get("layers")
    if not isinstance(layers, list) or len(layers) != 1:
        return unusable("integrity: a signature manifest must have exactly one layer")
    layer = _descriptor(layers[0])
    if layer is None:
        return unusable("integrity: the signature manifest's layer is malformed")
    if layer.media_type not in ENVELOPE_MEDIA_TYPES:
        return unusable(
            f"integrity: unsupported envelope media type {layer.media_type!r} "
            f"(expected {' or '.join(ENVELOPE_MEDIA_TYPES)})"
        )
    if layer.size > MAX_ENVELOPE_BYTES:
        return unusable(f"integrity: envelope of {layer.size} bytes is too large")
    envelope = await registry.get_blob(ref, layer.digest, max_bytes=MAX_ENVELOPE_BYTES)
    return NotarySignature(manifest_digest, subject, layer.media_type, envelope)


def _descriptor(value: object) -> Descriptor | None:
    if not isinstance(value, dict):
        return None
    media_type, digest, size = value.get("mediaType"), value.get("digest"), value.get("size")
    if not isinstance(media_type, str) or not isinstance(digest, str):
        return None
    if not isinstance(size, int) or isinstance(size, bool) or size < 0:
        return None
    return Descriptor(media_type=media_type, digest=digest, size=size)
