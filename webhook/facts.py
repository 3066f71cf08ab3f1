"""Gathering facts for the decision core: digests, signature outcomes (async I/O layer).

Each image of a request is checked concurrently; everything runs inside the
request's deadline, and whatever has not finished by then is an ``error``
outcome, which the policy's ``onError`` decides (SPEC §4).
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from dataclasses import dataclass, field

import anyio

from webhook.decision import CheckPlan, ImageFacts, Outcome, SignatureCheck
from webhook.errors import ManifestUnknownError, RegistryError, SealgateError, VerificationError
from webhook.oci import SignatureLayer
from webhook.policy import KeyAuthority
from webhook.references import ImageReference
from webhook.registry import RegistryClient
from webhook.signatures.cosign import verify_key_signature
from webhook.signatures.trust import load_trusted_root

log = logging.getLogger(__name__)


@dataclass(slots=True)
class _Progress:
    """Facts as they arrive, so a deadline keeps what finished in time."""

    digest: Outcome | None = None
    resolved: str | None = None
    signatures: dict[str, Outcome] = field(default_factory=dict)


def _unsupported_scan_sources(plan: CheckPlan) -> dict[str, str]:
    """Scan sources are not gathered yet: say so as an error (-> onError), never as "clean"."""
    sources = {source for scan in plan.scans for source in scan.sources}
    return {source: f"scan source {source} is not supported yet" for source in sorted(sources)}


class FactGatherer:
    """Turns check plans into ImageFacts using the registry client."""

    def __init__(self, registry: RegistryClient) -> None:
        self.registry = registry

    async def gather(
        self, plans: tuple[CheckPlan, ...], *, deadline: float
    ) -> dict[str, ImageFacts]:
        progress = {plan.ref_text: _Progress() for plan in plans}
        with anyio.move_on_after(deadline):
            async with anyio.create_task_group() as tg:
                for plan in plans:
                    if plan.ref is not None and plan.needs_digest:
                        tg.start_soon(self._check_image, plan, plan.ref, progress[plan.ref_text])
        timeout = f"deadline of {deadline:g}s exceeded"
        facts: dict[str, ImageFacts] = {}
        for plan in plans:
            state = progress[plan.ref_text]
            signatures = {
                check.key: state.signatures.get(check.key, Outcome("error", timeout))
                for check in plan.signatures
            }
            facts[plan.ref_text] = ImageFacts(
                digest=state.digest or Outcome("error", timeout),
                resolved_digest=state.resolved,
                signatures=signatures,
                scan_errors=_unsupported_scan_sources(plan),
            )
        return facts

    async def _check_image(self, plan: CheckPlan, ref: ImageReference, state: _Progress) -> None:
        try:
            digest = await self.registry.resolve_digest(ref)
        except ManifestUnknownError as exc:
            state.digest = Outcome("fail", f"image not found in registry: {exc}")
            return
        except RegistryError as exc:
            state.digest = Outcome("error", str(exc))
            return
        state.digest = Outcome("ok")
        state.resolved = digest
        if not plan.signatures:
            return
        try:
            layers = await self.registry.cosign_signatures(ref, digest)
        except RegistryError as exc:
            for check in plan.signatures:
                state.signatures[check.key] = Outcome("error", f"fetching signatures: {exc}")
            return
        for check in plan.signatures:
            state.signatures[check.key] = self._verify(check, ref, digest, layers)

    def _verify(
        self,
        check: SignatureCheck,
        ref: ImageReference,
        digest: str,
        layers: Sequence[SignatureLayer],
    ) -> Outcome:
        authority = check.authority
        if not isinstance(authority, KeyAuthority):
            return Outcome("error", "keyless verification is not supported yet")
        if not layers:
            return Outcome("fail", "no signatures found")
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
