"""cosign / sigstore signatures as an authority verifier (``key`` and ``keyless`` authorities).

An authority is satisfied by any legacy ``sha256-<hex>.sig`` layer or any sigstore
bundle referrer (cosign v3) that verifies against it. The signature material is
fetched once per (repository, digest) for all authorities checking it.
"""

from __future__ import annotations

import asyncio
from collections.abc import Sequence

import anyio
import anyio.to_thread

from webhook.cache import FactCache
from webhook.decision import Outcome, SignatureCheck
from webhook.errors import RegistryContentError, RegistryError, SealgateError, VerificationError
from webhook.oci import COSIGN_CERTIFICATE_ANNOTATION, Descriptor, SignatureLayer
from webhook.policy import Authority, KeyAuthority, KeylessAuthority
from webhook.references import ImageReference
from webhook.registry import RegistryClient
from webhook.signatures.bundle import (
    COSIGN_SIGN_PREDICATE,
    BundleTrust,
    FetchedBundle,
    KeylessTrust,
    KeyTrust,
    fetch_bundles,
    verify_image_bundles,
)
from webhook.signatures.cosign import verify_key_signature
from webhook.signatures.keyless import verify_keyless_signature
from webhook.signatures.listing import listed_referrers
from webhook.signatures.trust import load_trusted_root


class CosignVerifier:
    """Verifies ``key`` and ``keyless`` authorities against cosign signatures and bundles."""

    kinds = ("key", "keyless")

    def __init__(self, registry: RegistryClient, cache: FactCache) -> None:
        self._registry = registry
        self._cache = cache

    async def _layers(self, ref: ImageReference, digest: str) -> list[SignatureLayer]:
        """The `.sig` layers, fetched once for all authorities checking them (not stored)."""

        async def fetch() -> list[SignatureLayer]:
            return await self._registry.cosign_signatures(ref, digest)

        layers, _ = await self._cache.get_or_fetch(
            "signature-layers", (ref.name, digest), fetch, lambda _v: "error"
        )
        return layers

    async def _referrers(self, ref: ImageReference, digest: str) -> list[Descriptor]:
        return await listed_referrers(self._registry, self._cache, ref, digest)

    async def _bundles(self, ref: ImageReference, digest: str) -> list[FetchedBundle]:
        """Sigstore bundle referrers (cosign v3), fetched once for all authorities."""

        async def fetch() -> list[FetchedBundle]:
            return await fetch_bundles(
                self._registry, ref, digest, predicate_type=COSIGN_SIGN_PREDICATE,
                referrers=await self._referrers(ref, digest),
            )

        bundles, _ = await self._cache.get_or_fetch(
            "signature-bundles", (ref.name, digest), fetch, lambda _v: "error"
        )
        return bundles

    async def verify(self, check: SignatureCheck, ref: ImageReference, digest: str) -> Outcome:
        """Satisfied by any legacy `.sig` layer or any bundle referrer that verifies.

        The referrers listing starts at once beside the `.sig` manifest (scan
        attestations need it too, and it keeps the critical path at three round trips),
        but bundles are fetched only when no legacy signature satisfied the authority.
        """
        authority = check.authority
        errors: list[str] = []
        reasons: list[str] = []
        layers: list[SignatureLayer] = []
        listing = asyncio.ensure_future(self._referrers(ref, digest))
        try:
            try:
                layers = await self._layers(ref, digest)
            except RegistryContentError as exc:
                # planted garbage is not a signature, and must not hand the decision to onError
                reasons.append(f"unusable signature manifest: {exc}")
            except RegistryError as exc:
                errors.append(f"fetching signatures: {exc}")
            if layers:
                # keyless chains/SCTs/SETs, and many or large key-signed layers: enough CPU to
                # keep off the event loop
                verify_layers = (
                    self._verify_key_layers if isinstance(authority, KeyAuthority)
                    else self._verify_keyless_layers
                )
                outcome = await anyio.to_thread.run_sync(
                    verify_layers, check, authority, ref, digest, layers  # type: ignore[arg-type]
                )
                if outcome.status == "ok":
                    return outcome
                (errors if outcome.status == "error" else reasons).append(outcome.reason)
            bundles: list[FetchedBundle] = []
            try:
                await listing
                bundles = await self._bundles(ref, digest)
            except RegistryContentError as exc:
                reasons.append(f"unusable referrers: {exc}")
            except RegistryError as exc:
                errors.append(f"fetching signature bundles: {exc}")
            if bundles:
                try:
                    # sigstore-python runs in a worker thread (verify_bundle)
                    await verify_image_bundles(bundles, bundle_trust(authority),
                                               image_digest=digest)
                except VerificationError as exc:
                    reasons.append(f"bundle: {exc}")
                except SealgateError as exc:  # a trusted root that does not load
                    errors.append(f"bundle: {exc}")
                else:
                    return Outcome("ok")
        finally:
            if not listing.done():
                listing.cancel()
            elif not listing.cancelled():
                listing.exception()  # retrieved: its error, if any, was reported above
        if errors:
            return Outcome("error", "; ".join(errors + reasons))
        if not reasons:
            return Outcome("fail", "no signatures found")
        return Outcome("fail", "; ".join(reasons))

    def _verify_key_layers(
        self,
        check: SignatureCheck,
        authority: KeyAuthority,
        ref: ImageReference,
        digest: str,
        layers: Sequence[SignatureLayer],
    ) -> Outcome:
        try:
            rekor_keys = (
                load_trusted_root(authority.trusted_root).rekor_keys
                if authority.tlog != "off"
                else ()
            )
        except SealgateError as exc:
            return Outcome("error", f"trusted root {authority.trusted_root}: {exc}")
        reasons: list[str] = []
        for layer in layers:
            try:
                # ECDSA/RSA/Ed25519 verification of a small payload takes well under a
                # millisecond: cheaper inline than a thread hop.
                verify_key_signature(
                    layer,
                    key=authority.public_key,
                    image_digest=digest,
                    image_name=ref.name,
                    signed_references=check.signed_references,
                    tlog=authority.tlog,
                    rekor_keys=rekor_keys,
                )
            except VerificationError as exc:
                if str(exc) not in reasons:
                    reasons.append(str(exc))
                continue
            return Outcome("ok")
        return Outcome("fail", "; ".join(reasons))

    def _verify_keyless_layers(
        self,
        check: SignatureCheck,
        authority: KeylessAuthority,
        ref: ImageReference,
        digest: str,
        layers: Sequence[SignatureLayer],
    ) -> Outcome:
        try:
            trust = load_trusted_root(authority.trusted_root)
        except SealgateError as exc:
            return Outcome("error", f"trusted root {authority.trusted_root}: {exc}")
        reasons: list[str] = []
        for layer in layers:
            if COSIGN_CERTIFICATE_ANNOTATION not in layer.annotations:
                reason = "signature has no certificate (signed with a key, not keyless)"
                if reason not in reasons:
                    reasons.append(reason)
                continue
            try:
                verify_keyless_signature(
                    layer,
                    identity=authority.identity,
                    trust=trust,
                    image_digest=digest,
                    image_name=ref.name,
                    signed_references=check.signed_references,
                )
            except VerificationError as exc:
                if str(exc) not in reasons:
                    reasons.append(str(exc))
                continue
            return Outcome("ok")
        return Outcome("fail", "; ".join(reasons))


def bundle_trust(authority: Authority) -> BundleTrust:
    """What the bundle/attestation verifiers need of a key or keyless authority."""
    if isinstance(authority, KeyAuthority):
        return KeyTrust(authority.public_key, authority.tlog, authority.trusted_root)
    if isinstance(authority, KeylessAuthority):
        return KeylessTrust(authority.identity, authority.trusted_root)
    raise VerificationError(f"a {authority.kind} authority cannot verify sigstore bundles")
