"""Gathering facts for the decision core: digests, signature outcomes, scans (async I/O layer).

Each image of a request is checked concurrently, and each authority and scan
source of an image too; everything runs inside the request's deadline, and
whatever has not finished by then is an ``error`` outcome, which the policy's
``onError`` decides (SPEC §4). Facts go through the FactCache: cached per
(repository, digest, authority) / (digest, source, attestor), shared by
concurrent requests (single-flight), errors never remembered.
"""

from __future__ import annotations

import contextlib
import logging
from collections.abc import AsyncIterator, Sequence
from dataclasses import dataclass, field

import anyio
import httpx

from webhook.cache import CacheSettings, FactCache, Verdict
from webhook.decision import CheckPlan, ImageFacts, Outcome, ScanFact, SignatureCheck
from webhook.errors import (
    ManifestUnknownError,
    RegistryContentError,
    RegistryError,
    SealgateError,
    VerificationError,
)
from webhook.fairness import end_request, start_request
from webhook.harbor import HarborClient
from webhook.metrics import Metrics
from webhook.oci import COSIGN_CERTIFICATE_ANNOTATION, SignatureLayer
from webhook.policy import Authority, KeyAuthority, KeylessAuthority, ScanRequirement
from webhook.references import ImageReference
from webhook.registry import RegistryClient, RegistryCredentials
from webhook.scans import ScanReportError, fact_from_statement, is_scan_statement
from webhook.settings import Settings
from webhook.signatures.attestations import (
    AttachedAttestations,
    fetch_attestations,
    verify_attestations,
)
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
from webhook.signatures.trust import load_trusted_root

log = logging.getLogger(__name__)

DigestFact = tuple[Outcome, str | None]
ScanResult = tuple[ScanFact | None, str | None]  # (fact or None for "no scan", error reason)


def _outcome_verdict(outcome: Outcome) -> Verdict:
    return {"ok": "success", "fail": "failure", "error": "error"}[outcome.status]  # type: ignore[return-value]


def _digest_verdict(fact: DigestFact) -> Verdict:
    return _outcome_verdict(fact[0])


def _scan_verdict(result: ScanResult) -> Verdict:
    fact, error = result
    if error is not None:
        return "error"
    return "success" if fact is not None else "failure"


@dataclass(slots=True)
class _Progress:
    """Facts as they arrive, so a deadline keeps what finished in time."""

    digest: Outcome | None = None
    resolved: str | None = None
    signatures: dict[str, Outcome] = field(default_factory=dict)
    scans: list[ScanFact] = field(default_factory=list)
    scan_errors: dict[str, str] = field(default_factory=dict)
    scans_done: set[str] = field(default_factory=set)
    all_cached: bool = True


class FactGatherer:
    """Turns check plans into ImageFacts using the registry (and Harbor) clients."""

    def __init__(
        self,
        registry: RegistryClient,
        *,
        cache: FactCache | None = None,
        harbor: HarborClient | None = None,
        metrics: Metrics | None = None,
    ) -> None:
        self.registry = registry
        self.cache = cache or FactCache()
        self.harbor = harbor
        self.metrics = metrics

    async def gather(
        self, plans: tuple[CheckPlan, ...], *, deadline: float
    ) -> dict[str, ImageFacts]:
        progress = {plan.ref_text: _Progress() for plan in plans}
        owner = start_request()  # registry slots are shared round robin between requests
        try:
            with anyio.move_on_after(deadline):
                async with anyio.create_task_group() as tg:
                    for plan in plans:
                        if plan.ref is not None and plan.needs_digest:
                            tg.start_soon(self._check_image, plan, plan.ref,
                                          progress[plan.ref_text])
        finally:
            end_request(owner)
        timeout = f"deadline of {deadline:g}s exceeded"
        facts: dict[str, ImageFacts] = {}
        for plan in plans:
            state = progress[plan.ref_text]
            signatures = {
                check.key: state.signatures.get(check.key, Outcome("error", timeout))
                for check in plan.signatures
            }
            scan_errors = dict(state.scan_errors)
            for source in _sources(plan.scans):
                if source not in state.scans_done and source not in scan_errors:
                    scan_errors[source] = timeout
            complete = state.digest is not None and len(state.signatures) == len(signatures)
            facts[plan.ref_text] = ImageFacts(
                digest=state.digest or Outcome("error", timeout),
                resolved_digest=state.resolved,
                signatures=signatures,
                scans=tuple(state.scans),
                scan_errors=scan_errors,
                cached=complete and state.all_cached,
            )
        return facts

    # ------------------------------------------------------------------ per image

    async def _check_image(self, plan: CheckPlan, ref: ImageReference, state: _Progress) -> None:
        if self.metrics is not None:
            self.metrics.inflight_checks.inc()
        try:
            outcome, digest = await self._digest(ref, state)
            state.digest = outcome
            state.resolved = digest
            if digest is None:
                return
            async with anyio.create_task_group() as tg:
                for check in plan.signatures:
                    tg.start_soon(self._signature_into, check, ref, digest, state)
                for source in _sources(plan.scans):
                    tg.start_soon(self._scan_into, source, plan.scans, ref, digest, state)
        finally:
            if self.metrics is not None:
                self.metrics.inflight_checks.dec()

    async def _digest(self, ref: ImageReference, state: _Progress) -> DigestFact:
        if ref.digest is not None:
            return Outcome("ok"), ref.digest

        async def fetch() -> DigestFact:
            try:
                return Outcome("ok"), await self.registry.resolve_digest(ref)
            except ManifestUnknownError as exc:
                return Outcome("fail", f"image not found in registry: {exc}"), None
            except RegistryError as exc:
                return Outcome("error", str(exc)), None

        fact, cached = await self.cache.get_or_fetch(
            "digest", (ref.registry, ref.repository, ref.tag), fetch, _digest_verdict
        )
        state.all_cached &= cached
        return fact

    # ------------------------------------------------------------------ signatures

    async def _signature_into(
        self, check: SignatureCheck, ref: ImageReference, digest: str, state: _Progress
    ) -> None:
        async def fetch() -> Outcome:
            outcome = await self._verify(check, ref, digest)
            if self.metrics is not None:
                self.metrics.verifications.labels(
                    authority_type=check.authority.kind, outcome=outcome.status
                ).inc()
            return outcome

        # per repository, digest and authority: legacy signatures name their repository
        outcome, cached = await self.cache.get_or_fetch(
            "signature", (ref.name, digest, check.key), fetch, _outcome_verdict
        )
        state.all_cached &= cached
        state.signatures[check.key] = outcome

    async def _layers(self, ref: ImageReference, digest: str) -> list[SignatureLayer]:
        """The `.sig` layers, fetched once for all authorities checking them (not stored)."""

        async def fetch() -> list[SignatureLayer]:
            return await self.registry.cosign_signatures(ref, digest)

        layers, _ = await self.cache.get_or_fetch(
            "signature-layers", (ref.name, digest), fetch, lambda _v: "error"
        )
        return layers

    async def _bundles(self, ref: ImageReference, digest: str) -> list[FetchedBundle]:
        """Sigstore bundle referrers (cosign v3), fetched once for all authorities."""

        async def fetch() -> list[FetchedBundle]:
            return await fetch_bundles(
                self.registry, ref, digest, predicate_type=COSIGN_SIGN_PREDICATE
            )

        bundles, _ = await self.cache.get_or_fetch(
            "signature-bundles", (ref.name, digest), fetch, lambda _v: "error"
        )
        return bundles

    async def _verify(self, check: SignatureCheck, ref: ImageReference, digest: str) -> Outcome:
        """Satisfied by any legacy `.sig` layer or any bundle referrer that verifies."""
        authority = check.authority
        errors: list[str] = []
        reasons: list[str] = []
        layers: list[SignatureLayer] = []
        bundles: list[FetchedBundle] = []
        try:
            layers = await self._layers(ref, digest)
        except RegistryContentError as exc:
            # planted garbage is not a signature, and must not hand the decision to onError
            reasons.append(f"unusable signature manifest: {exc}")
        except RegistryError as exc:
            errors.append(f"fetching signatures: {exc}")
        try:
            bundles = await self._bundles(ref, digest)
        except RegistryContentError as exc:
            reasons.append(f"unusable referrers: {exc}")
        except RegistryError as exc:
            errors.append(f"fetching signature bundles: {exc}")
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
        if bundles:
            try:
                # sigstore-python runs in a worker thread (verify_bundle)
                await verify_image_bundles(bundles, bundle_trust(authority), image_digest=digest)
            except VerificationError as exc:
                reasons.append(f"bundle: {exc}")
            except SealgateError as exc:  # a trusted root that does not load
                errors.append(f"bundle: {exc}")
            else:
                return Outcome("ok")
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

    # ------------------------------------------------------------------ scans

    async def _scan_into(
        self,
        source: str,
        scans: Sequence[ScanRequirement],
        ref: ImageReference,
        digest: str,
        state: _Progress,
    ) -> None:
        if source == "harbor":
            results = [await self._harbor(ref, digest, state)]
        else:
            attestors = {a.fingerprint: a for scan in scans for a in scan.attestors}
            results = [
                await self._attestation(authority, ref, digest, state)
                for authority in attestors.values()
            ]
        errors = [error for _, error in results if error is not None]
        state.scans.extend(fact for fact, _ in results if fact is not None)
        if errors:
            # Kept even when another attestor has a report: a requirement whose own
            # attestors failed must reach onError, not onMissing. The decision looks at
            # errors only for a requirement none of whose attestors' reports count.
            state.scan_errors[source] = "; ".join(errors)
        state.scans_done.add(source)

    async def _harbor(self, ref: ImageReference, digest: str, state: _Progress) -> ScanResult:
        harbor = self.harbor
        if harbor is None:
            return None, "harbor is not configured"

        async def fetch() -> ScanResult:
            try:
                return await harbor.scan_fact(ref, digest), None
            except RegistryError as exc:
                return None, str(exc)

        result, cached = await self.cache.get_or_fetch(
            "scan", (ref.name, digest, "harbor"), fetch, _scan_verdict
        )
        state.all_cached &= cached
        return result

    async def _attached(self, ref: ImageReference, digest: str) -> AttachedAttestations:
        async def fetch() -> AttachedAttestations:
            return await fetch_attestations(self.registry, ref, digest)

        attached, _ = await self.cache.get_or_fetch(
            "attestation-material", (ref.name, digest), fetch, lambda _v: "error"
        )
        return attached

    async def _attestation(
        self, authority: Authority, ref: ImageReference, digest: str, state: _Progress
    ) -> ScanResult:
        """The newest vulnerability report this attestor signed for the digest, if any."""

        async def fetch() -> ScanResult:
            try:
                attached = await self._attached(ref, digest)
            except RegistryContentError as exc:
                # planted garbage is no report; it must not hand the decision to onError
                log.info("unusable attestations on %s@%s: %s", ref.name, digest, exc)
                return None, None
            except RegistryError as exc:
                return None, f"fetching attestations: {exc}"
            try:
                results = await verify_attestations(
                    attached, bundle_trust(authority), image_digest=digest
                )
            except SealgateError as exc:  # a trusted root that does not load
                return None, f"verifying attestations: {exc}"
            facts: list[ScanFact] = []
            problems: list[str] = []
            for statement in results.statements:
                if not is_scan_statement(statement.predicate_type, statement.predicate):
                    continue
                try:
                    facts.append(fact_from_statement(statement, attestor=authority.fingerprint))
                except ScanReportError as exc:
                    problems.append(str(exc))
            if facts:
                return max(facts, key=lambda fact: fact.scanned_at), None
            if problems:
                # a signed report we cannot read is not "no scan": it is a check that failed
                return None, "; ".join(problems)
            return None, None

        result, cached = await self.cache.get_or_fetch(
            "scan", (ref.name, digest, "attestation", authority.fingerprint), fetch, _scan_verdict
        )
        state.all_cached &= cached
        return result


@contextlib.asynccontextmanager
async def registry_facts(
    settings: Settings,
    *,
    metrics: Metrics | None = None,
    transport: httpx.AsyncBaseTransport | None = None,
) -> AsyncIterator[FactGatherer]:
    """The registry-backed FactGatherer with its HTTP client, as `serve` and `check` use it.

    ``transport`` replaces the network under the registry client (tests count or fault it).
    """
    credentials = (
        RegistryCredentials.from_file(settings.registry_auth)
        if settings.registry_auth is not None
        else None
    )
    cache = FactCache(
        CacheSettings(settings.cache_size, settings.digest_ttl, settings.success_ttl,
                      settings.failure_ttl),
        on_event=metrics.cache_event if metrics is not None else None,
    )
    limits = httpx.Limits(max_connections=100, max_keepalive_connections=20)
    timeout = httpx.Timeout(settings.deadline, connect=min(3.0, settings.deadline))
    async with httpx.AsyncClient(limits=limits, timeout=timeout, transport=transport) as http:
        registry = RegistryClient(
            http, credentials=credentials, insecure=settings.insecure_registries,
            on_response=metrics.registry_response if metrics is not None else None,
            limits=settings.registry_limits, max_concurrency=settings.registry_concurrency,
        )
        harbor = HarborClient(http, credentials=credentials,
                              insecure=settings.insecure_registries)
        yield FactGatherer(registry, cache=cache, harbor=harbor, metrics=metrics)


def bundle_trust(authority: Authority) -> BundleTrust:
    """What the bundle/attestation verifiers need of a policy authority."""
    if isinstance(authority, KeyAuthority):
        return KeyTrust(authority.public_key, authority.tlog, authority.trusted_root)
    return KeylessTrust(authority.identity, authority.trusted_root)


def _sources(scans: Sequence[ScanRequirement]) -> list[str]:
    return list(dict.fromkeys(source for scan in scans for source in scan.sources))
