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
from collections.abc import AsyncIterator, Mapping, Sequence
from dataclasses import dataclass, field

import anyio
import httpx

from webhook.cache import CacheSettings, FactCache, Verdict
from webhook.decision import CheckPlan, ImageFacts, Outcome, ScanFact, SignatureCheck
from webhook.errors import (
    ManifestUnknownError,
    RegistryAuthError,
    RegistryContentError,
    RegistryError,
    SealgateError,
)
from webhook.fairness import end_request, start_request
from webhook.harbor import HarborClient
from webhook.metrics import Metrics
from webhook.oci import Descriptor
from webhook.policy import Authority, ScanRequirement
from webhook.references import ImageReference
from webhook.registry import (
    ACTIVE_CREDENTIAL,
    Credential,
    RegistryClient,
    RegistryCredentials,
    credentials_for,
)
from webhook.scans import ScanReportError, fact_from_statement, is_scan_statement
from webhook.settings import Settings
from webhook.sharedcache import shared_cache
from webhook.signatures.attestations import (
    AttachedAttestations,
    fetch_attestations,
    verify_attestations,
)
from webhook.signatures.cosign_verifier import bundle_trust
from webhook.signatures.listing import listed_referrers
from webhook.verifiers import AuthorityVerifier, default_verifiers, verifier_for

log = logging.getLogger(__name__)

DigestFact = tuple[Outcome, str | None]
_REFUSED = "credentials refused: "  # an auth error: the next credential may do
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


@dataclass(frozen=True, slots=True)
class CachedFacts:
    """Facts read entirely from the local cache, and until when (cache clock) they hold."""

    facts: dict[str, ImageFacts]
    expires: float
    hits: Mapping[str, int]  # lookups per fact type, for the metrics
    epoch: int


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
    credential: str | None = None  # the source of the credentials used (audit)


class FactGatherer:
    """Turns check plans into ImageFacts using the registry (and Harbor) clients."""

    def __init__(
        self,
        registry: RegistryClient,
        *,
        cache: FactCache | None = None,
        harbor: HarborClient | None = None,
        metrics: Metrics | None = None,
        verifiers: Mapping[str, AuthorityVerifier] | None = None,
    ) -> None:
        self.registry = registry
        self.cache = cache or FactCache()
        self.harbor = harbor
        self.metrics = metrics
        # one verifier per authority kind (key, keyless, notation): webhook/verifiers.py
        self.verifiers = (
            verifiers if verifiers is not None else default_verifiers(registry, self.cache)
        )

    async def gather(
        self, plans: tuple[CheckPlan, ...], *, deadline: float
    ) -> dict[str, ImageFacts]:
        cached = self.gather_cached(plans, deadline=deadline)
        if cached is not None:
            return cached.facts
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
        return self._facts(plans, progress, deadline)

    def gather_cached(self, plans: tuple[CheckPlan, ...], *, deadline: float) -> CachedFacts | None:
        """The warm path: every fact from the local cache, without a task, a cancel scope or
        an await; None as soon as one is missing (then ``gather`` asks for all of them)."""
        found = self._all_cached(plans)
        if found is None:
            return None
        progress, expires, hits = found
        for fact, count in hits.items():
            self.cache.hits(fact, count)
        return CachedFacts(self._facts(plans, progress, deadline), expires, hits,
                           self.cache.epoch)

    def still_fresh(self, cached: CachedFacts) -> bool:
        """Whether every fact ``cached`` was built from is still within its TTL."""
        return cached.epoch == self.cache.epoch and self.cache.now() < cached.expires

    def count_hits(self, hits: Mapping[str, int]) -> None:
        """Cache hits of a decision reused from facts that are still cached (metrics count
        every lookup the decision stands for)."""
        for fact, count in hits.items():
            self.cache.hits(fact, count)

    def _all_cached(
        self, plans: tuple[CheckPlan, ...]
    ) -> tuple[dict[str, _Progress], float, dict[str, int]] | None:
        """Reads the same cache keys the full path writes."""
        progress: dict[str, _Progress] = {}
        hits: dict[str, int] = {}
        expires = float("inf")
        cache = self.cache
        for plan in plans:
            state = progress[plan.ref_text] = _Progress()
            ref = plan.ref
            if ref is None or not plan.needs_digest:
                continue
            chain = credentials_for(ref.registry)
            state.credential = (
                chain[0].source if chain else self.registry.credential_source(ref.registry))
            if ref.digest is not None:
                state.digest, digest = Outcome("ok"), ref.digest
            elif chain is not None:
                return None  # pod pull secrets: tags resolve per credential, on the full path
            else:
                entry = cache.peek("digest", _digest_key(ref))
                if entry is None:
                    return None
                expires = min(expires, entry.expires)
                hits["digest"] = hits.get("digest", 0) + 1
                state.digest, digest = entry.value
            state.resolved = digest
            if digest is None:
                continue
            for check in plan.signatures:
                entry = cache.peek("signature", _signature_key(ref, digest, check))
                if entry is None:
                    return None
                expires = min(expires, entry.expires)
                state.signatures[check.key] = entry.value
            hits["signature"] = hits.get("signature", 0) + len(plan.signatures)
            for source in _sources(plan.scans):
                keys = ([_scan_key(ref, digest, "harbor")] if source == "harbor" else [
                    _scan_key(ref, digest, "attestation", fingerprint)
                    for fingerprint in _attestors(plan.scans)])
                results: list[ScanResult] = []
                for key in keys:
                    entry = cache.peek("scan", key)
                    if entry is None:
                        return None
                    expires = min(expires, entry.expires)
                    results.append(entry.value)
                hits["scan"] = hits.get("scan", 0) + len(keys)
                _record_scans(state, source, results)
        return progress, expires, hits

    def _facts(self, plans: tuple[CheckPlan, ...], progress: dict[str, _Progress],
               deadline: float) -> dict[str, ImageFacts]:
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
                credential=state.credential,
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
        chain = credentials_for(ref.registry)
        if chain is None:  # no pod pull secrets: the client's own credentials
            state.credential = self.registry.credential_source(ref.registry)
            return await self._digest_with(ref, state, None)
        fact: DigestFact = (Outcome("error", "no credentials"), None)
        for position, credential in enumerate(chain):
            # the rest of this image's checks (a task of its own) use the same credential
            ACTIVE_CREDENTIAL.set(credential)
            state.credential = credential.source
            fact = await self._digest_with(ref, state, credential)
            refused = fact[0].status == "error" and fact[0].reason.startswith(_REFUSED)
            if not refused or position == len(chain) - 1:
                break
        return fact

    async def _digest_with(
        self, ref: ImageReference, state: _Progress, credential: Credential | None
    ) -> DigestFact:
        if ref.digest is not None:
            return Outcome("ok"), ref.digest

        async def fetch() -> DigestFact:
            try:
                return Outcome("ok"), await self.registry.resolve_digest(ref)
            except ManifestUnknownError as exc:
                return Outcome("fail", f"image not found in registry: {exc}"), None
            except RegistryAuthError as exc:
                return Outcome("error", f"{_REFUSED}{exc}"), None
            except RegistryError as exc:
                return Outcome("error", str(exc)), None

        # per credential: a tag resolved with one namespace's secret is not another's answer
        key = _digest_key(ref) if credential is None else (*_digest_key(ref), credential.source)
        fact, cached = await self.cache.get_or_fetch("digest", key, fetch, _digest_verdict)
        state.all_cached &= cached
        return fact

    # ------------------------------------------------------------------ signatures

    async def _signature_into(
        self, check: SignatureCheck, ref: ImageReference, digest: str, state: _Progress
    ) -> None:
        async def fetch() -> Outcome:
            outcome = await verifier_for(self.verifiers, check.authority.kind).verify(
                check, ref, digest
            )
            if self.metrics is not None:
                self.metrics.verifications.labels(
                    authority_type=check.authority.kind, outcome=outcome.status
                ).inc()
            return outcome

        # per repository, digest and authority: legacy signatures name their repository
        outcome, cached = await self.cache.get_or_fetch(
            "signature", _signature_key(ref, digest, check), fetch, _outcome_verdict
        )
        state.all_cached &= cached
        state.signatures[check.key] = outcome

    async def _referrers(self, ref: ImageReference, digest: str) -> list[Descriptor]:
        """The image's referrers, listed once for signatures and attestations (not stored)."""
        return await listed_referrers(self.registry, self.cache, ref, digest)

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
            results = [
                await self._attestation(authority, ref, digest, state)
                for authority in _attestors(scans).values()
            ]
        _record_scans(state, source, results)

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
            "scan", _scan_key(ref, digest, "harbor"), fetch, _scan_verdict
        )
        state.all_cached &= cached
        return result

    async def _attached(self, ref: ImageReference, digest: str) -> AttachedAttestations:
        async def fetch() -> AttachedAttestations:
            return await fetch_attestations(
                self.registry, ref, digest,
                list_referrers=lambda: self._referrers(ref, digest))

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
            "scan", _scan_key(ref, digest, "attestation", authority.fingerprint), fetch,
            _scan_verdict
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
        on_hits=metrics.cache_hits if metrics is not None else None,
    )
    limits = httpx.Limits(max_connections=100, max_keepalive_connections=20)
    timeout = httpx.Timeout(settings.deadline, connect=min(3.0, settings.deadline))
    async with shared_cache(settings, metrics=metrics) as cache.second, httpx.AsyncClient(
        limits=limits, timeout=timeout, transport=transport
    ) as http:
        registry = RegistryClient(
            http, credentials=credentials, insecure=settings.insecure_registries,
            on_response=metrics.registry_response if metrics is not None else None,
            limits=settings.registry_limits, max_concurrency=settings.registry_concurrency,
        )
        harbor = HarborClient(http, credentials=credentials,
                              insecure=settings.insecure_registries)
        yield FactGatherer(registry, cache=cache, harbor=harbor, metrics=metrics)


# Cache keys: facts about a tag, or about (repository, digest) — legacy signatures name
# their repository — never decisions (SPEC §4).
def _digest_key(ref: ImageReference) -> tuple[str, str, str | None]:
    return (ref.registry, ref.repository, ref.tag)


def _signature_key(ref: ImageReference, digest: str, check: SignatureCheck) -> tuple[str, ...]:
    return (ref.name, digest, check.key)


def _scan_key(ref: ImageReference, digest: str, *source: str) -> tuple[str, ...]:
    return (ref.name, digest, *source)


def _attestors(scans: Sequence[ScanRequirement]) -> dict[str, Authority]:
    return {a.fingerprint: a for scan in scans for a in scan.attestors}


def _record_scans(state: _Progress, source: str, results: Sequence[ScanResult]) -> None:
    errors = [error for _, error in results if error is not None]
    state.scans.extend(fact for fact, _ in results if fact is not None)
    if errors:
        # Kept even when another attestor has a report: a requirement whose own
        # attestors failed must reach onError, not onMissing. The decision looks at
        # errors only for a requirement none of whose attestors' reports count.
        state.scan_errors[source] = "; ".join(errors)
    state.scans_done.add(source)


def _sources(scans: Sequence[ScanRequirement]) -> list[str]:
    return list(dict.fromkeys(source for scan in scans for source in scan.sources))
