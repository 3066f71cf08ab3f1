"""Facts in, decision out (pure): the heart of sealgate.

``plan_checks`` says which facts the policies need for a request's images;
the I/O layer gathers them into ``ImageFacts``; ``decide`` turns facts and
policies into a ``Decision``. ``/validate``, ``sealgate check``, ``policy test``
and ``replay`` all run this same code.
"""

from __future__ import annotations

import dataclasses
import datetime as dt
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Literal

from webhook.errors import InvalidReferenceError
from webhook.patterns import ImagePattern
from webhook.policy import (
    SEVERITIES,
    Authority,
    KeyAuthority,
    KeylessAuthority,
    Mode,
    Policy,
    PolicySet,
    Rule,
    ScanRequirement,
)
from webhook.references import ImageReference, parse_reference

Status = Literal["ok", "fail", "error"]
DecisionKind = Literal["allow", "warn", "deny"]
Level = Literal["deny", "warn", "allow"]
_MODE_RANK: dict[Mode, int] = {"enforce": 2, "warn": 1, "audit": 0}


@dataclass(frozen=True, slots=True)
class Outcome:
    """Result of one check: ``ok``, ``fail`` (definitive) or ``error`` (could not complete)."""

    status: Status
    reason: str = ""


@dataclass(frozen=True, slots=True)
class ScanFact:
    """A scan result as the source reported it (raw IDs per severity, SPEC §8)."""

    source: str  # "attestation" | "harbor"
    scanned_at: dt.datetime
    ids: Mapping[str, tuple[str, ...]]
    attestor: str | None = None  # authority fingerprint for attestation sources


@dataclass(frozen=True, slots=True)
class ImageFacts:
    """Everything gathered about one image reference."""

    digest: Outcome = Outcome("error", "not resolved")
    resolved_digest: str | None = None
    signatures: Mapping[str, Outcome] = field(default_factory=dict)  # by signature_key()
    scans: tuple[ScanFact, ...] = ()
    scan_errors: Mapping[str, str] = field(default_factory=dict)  # source -> reason
    cached: bool = False
    credential: str | None = None  # secret/NS/NAME, config or anonymous (SPEC §9)


@dataclass(frozen=True, slots=True)
class SignatureCheck:
    """One authority to check on an image, with the repositories its signatures may name."""

    authority: Authority
    signed_references: tuple[ImagePattern, ...]

    @property
    def key(self) -> str:
        return signature_key(self.authority, self.signed_references)


@dataclass(frozen=True, slots=True)
class CheckPlan:
    """What to gather for one image: its parsed reference and the authorities/scans needed."""

    ref_text: str
    ref: ImageReference | None
    signatures: tuple[SignatureCheck, ...]
    scans: tuple[ScanRequirement, ...]
    needs_digest: bool


def signature_key(authority: Authority, signed_references: Sequence[ImagePattern]) -> str:
    """Key of a signature fact in ``ImageFacts.signatures``: what the outcome depends on."""
    if not signed_references:
        return authority.fingerprint
    return authority.fingerprint + "|" + ",".join(sorted(p.text for p in signed_references))


@dataclass(frozen=True, slots=True)
class Finding:
    level: Level  # before the policy mode is applied
    message: str
    error: bool = False


@dataclass(frozen=True, slots=True)
class ScanSummary:
    source: str
    scanned_at: dt.datetime
    ids: Mapping[str, tuple[str, ...]]  # raw, as the source reported them
    counts: Mapping[str, int]  # distinct IDs after `ignore`
    attestor: str | None = None


@dataclass(frozen=True, slots=True)
class ImageEntry:
    """One (image, applicable policy) pair of a decision: what the audit log records."""

    ref: str
    name: str | None
    digest: str | None
    policy: str
    rule: str | None
    mode: Mode
    signatures: Mapping[str, Status]
    signature_reasons: Mapping[str, str]
    # authority name -> signature_key(): what the outcome was about, so `replay` can tell a
    # renamed or re-keyed authority from the one that was checked
    signature_keys: Mapping[str, str]
    scan: ScanSummary | None
    violations: tuple[str, ...]
    cached: bool
    denied: bool
    # parallel to violations: "deny" or "warn" as the rule meant it, before the policy's mode
    # (what `audit report` calls "would deny" in an audit or warn policy)
    violation_levels: tuple[str, ...] = ()
    credential: str | None = None  # where the registry credentials came from (SPEC §9)


@dataclass(frozen=True, slots=True)
class BreakGlass:
    reason: str
    user: str


@dataclass(frozen=True, slots=True)
class Decision:
    decision: DecisionKind
    reason: str | None  # None | "no-policy" | "break-glass" | "error"
    message: str
    warnings: tuple[str, ...]
    enforced_by: tuple[str, ...]
    entries: tuple[ImageEntry, ...]
    break_glass: BreakGlass | None = None

    @property
    def allowed(self) -> bool:
        return self.decision != "deny"


def effective_mode(mode: Mode, override: Mode | None) -> Mode:
    """``SEALGATE_MODE_OVERRIDE`` only lowers: enforce → warn → audit."""
    if override is None:
        return mode
    return mode if _MODE_RANK[mode] <= _MODE_RANK[override] else override


def parse_image(ref_text: str) -> ImageReference | None:
    try:
        return parse_reference(ref_text)
    except InvalidReferenceError:
        return None


def plan_checks(
    images: Sequence[str], policies: Sequence[Policy]
) -> tuple[CheckPlan, ...]:
    """Which facts each distinct image needs under the applicable policies."""
    plans: list[CheckPlan] = []
    for ref_text in dict.fromkeys(images):
        ref = parse_image(ref_text)
        checks: dict[str, SignatureCheck] = {}
        scans: list[ScanRequirement] = []
        needs_digest = False
        if ref is not None:
            for policy in policies:
                rule = policy.select_rule(ref.name)
                if rule is None:
                    continue
                if rule.signatures is not None:
                    needs_digest = True
                    for authority in rule.signatures.authorities:
                        check = SignatureCheck(authority, rule.signatures.signed_references)
                        checks.setdefault(check.key, check)
                if rule.scan is not None:
                    needs_digest = True
                    scans.append(rule.scan)
        plans.append(CheckPlan(ref_text, ref, tuple(checks.values()), tuple(scans),
                               needs_digest))
    return tuple(plans)


def decide(
    *,
    namespace: str | None,
    images: Sequence[str],
    policies: PolicySet,
    facts: Mapping[str, ImageFacts],
    now: dt.datetime,
    mode_override: Mode | None = None,
    break_glass: BreakGlass | None = None,
) -> Decision:
    """Decide a request's images under every applicable policy (SPEC §2, §3, §8)."""
    applicable = policies.applicable(namespace)
    distinct = list(dict.fromkeys(images))
    if not applicable or not distinct:
        return Decision("allow", "no-policy" if not applicable else None, "", (), (), ())

    entries: list[ImageEntry] = []
    deny_messages: list[str] = []
    warnings: list[str] = []
    enforced_by: list[str] = []
    waived: list[str] = []
    any_error = False
    for policy in applicable:
        mode = effective_mode(policy.mode, mode_override)
        glass = break_glass is not None and policy.break_glass
        for ref_text in distinct:
            image_facts = facts.get(ref_text, ImageFacts())
            entry, findings = _check_image(policy, mode, ref_text, image_facts, now)
            denied = False
            for finding in findings:
                any_error = any_error or finding.error
                level = _apply_mode(finding.level, mode)
                if level == "deny" and glass:
                    waived.append(finding.message)
                    level = "warn"
                if level == "deny":
                    denied = True
                    deny_messages.append(finding.message)
                    if policy.name not in enforced_by:
                        enforced_by.append(policy.name)
                elif level == "warn":
                    warnings.append(finding.message)
            entries.append(_with_denied(entry, denied))

    reason: str | None = "error" if any_error else None
    used_glass: BreakGlass | None = None
    if waived and break_glass is not None:
        used_glass = break_glass
        reason = "break-glass"
        warnings.insert(0, f"break glass used by {break_glass.user}: {break_glass.reason}")
    if deny_messages:
        return Decision("deny", reason, "; ".join(deny_messages), tuple(warnings),
                        tuple(enforced_by), tuple(entries), used_glass)
    kind: DecisionKind = "warn" if warnings else "allow"
    return Decision(kind, reason, "", tuple(warnings), (), tuple(entries), used_glass)


def stable_until(
    *,
    namespace: str | None,
    images: Sequence[str],
    policies: PolicySet,
    facts: Mapping[str, ImageFacts],
    now: dt.datetime,
) -> dt.datetime | None:
    """Until when ``decide`` gives the same decision for the same facts; None: forever.

    Time enters a decision in two places only: a scan report counts while it is no
    older than ``maxAge``, and an ``ignore`` entry holds through its ``until`` day.
    Whatever counts now stops counting at one of those moments, and nothing that
    does not count now starts counting later, so the earliest of them bounds it.
    """
    moments: list[dt.datetime] = []
    for policy in policies.applicable(namespace):
        for ref_text in dict.fromkeys(images):
            ref = parse_image(ref_text)
            rule = policy.select_rule(ref.name) if ref is not None else None
            if rule is None or rule.scan is None:
                continue
            scan = rule.scan
            if scan.max_age is not None:
                for fact in facts.get(ref_text, ImageFacts()).scans:
                    expiry = fact.scanned_at + scan.max_age
                    if expiry >= now:
                        moments.append(expiry)
            for entry in scan.ignore:
                if entry.active(now):
                    moments.append(dt.datetime.combine(entry.until + dt.timedelta(days=1),
                                                       dt.time(), tzinfo=dt.UTC))
    return min(moments, default=None)


def _apply_mode(level: Level, mode: Mode) -> Level:
    if level == "allow" or mode == "audit":
        return "allow"
    if mode == "warn":
        return "warn"
    return level


def _with_denied(entry: ImageEntry, denied: bool) -> ImageEntry:
    if entry.denied == denied:
        return entry
    return dataclasses.replace(entry, denied=denied)


def _check_image(
    policy: Policy, mode: Mode, ref_text: str, facts: ImageFacts, now: dt.datetime
) -> tuple[ImageEntry, list[Finding]]:
    ref = parse_image(ref_text)
    findings: list[Finding] = []

    def where(rule: Rule | None) -> str:
        rule_part = f", rule {rule.name}" if rule is not None else ""
        return f"(policy {policy.name}{rule_part})"

    def subject() -> str:
        if ref is None:
            return ref_text
        if facts.resolved_digest is not None:
            return ref.pinned(facts.resolved_digest)
        return str(ref)

    keys: dict[str, str] = {}

    def entry(rule: Rule | None, sigs: dict[str, Status], reasons: dict[str, str],
              scan: ScanSummary | None) -> ImageEntry:
        return ImageEntry(
            ref=ref_text, name=ref.name if ref else None, digest=facts.resolved_digest,
            policy=policy.name, rule=rule.name if rule else None, mode=mode, signatures=sigs,
            signature_reasons=reasons, signature_keys=keys, scan=scan,
            # an error that onError allowed stays on record, with level "allow": the
            # audit line must say why a check did not complete (issue 11)
            violations=tuple(f.message for f in findings if f.level != "allow" or f.error),
            violation_levels=tuple(f.level for f in findings if f.level != "allow" or f.error),
            cached=facts.cached, denied=False, credential=facts.credential,
        )

    if ref is None:
        findings.append(Finding("deny", f"{ref_text}: invalid image reference {where(None)}"))
        return entry(None, {}, {}, None), findings

    rule = policy.select_rule(ref.name)
    if rule is None:
        if policy.unmatched != "allow":
            findings.append(Finding(policy.unmatched,
                                    f"{subject()}: image matches no rule {where(None)}"))
        return entry(None, {}, {}, None), findings

    if policy.require_digest and ref.digest is None:
        findings.append(Finding("deny", f"{subject()}: reference must be pinned by digest "
                                        f"(requireDigest) {where(rule)}"))

    needs_digest = rule.signatures is not None or rule.scan is not None
    if needs_digest and facts.resolved_digest is None:
        outcome = facts.digest
        if outcome.status == "fail":
            findings.append(Finding("deny", f"{subject()}: {outcome.reason} {where(rule)}"))
        else:
            findings.append(_error(policy, f"{subject()}: could not resolve digest: "
                                           f"{outcome.reason} {where(rule)}"))
        return entry(rule, {}, {}, None), findings

    sigs: dict[str, Status] = {}
    reasons: dict[str, str] = {}
    if rule.signatures is not None:
        requirement = rule.signatures
        ok = errors = 0
        failed: list[str] = []
        signers: dict[tuple[str, ...], str] = {}  # signer -> first authority it satisfied
        for authority in requirement.authorities:
            key = signature_key(authority, requirement.signed_references)
            keys[authority.name] = key
            outcome = facts.signatures.get(key, Outcome("error", "not checked"))
            sigs[authority.name] = outcome.status
            if outcome.reason:
                reasons[authority.name] = outcome.reason
            signer = _signer(authority)
            if outcome.status == "ok" and signer in signers:
                # one key listed under two names is one signer: a threshold counts signers
                failed.append(f'authority "{authority.name}": same key or identity as '
                              f'authority "{signers[signer]}", counted once')
            elif outcome.status == "ok":
                signers[signer] = authority.name
                ok += 1
            else:
                errors += outcome.status == "error"
                detail = f": {outcome.reason}" if outcome.reason else ""
                failed.append(f'authority "{authority.name}"{detail}')
        if ok < requirement.threshold:
            if ok + errors >= requirement.threshold:
                findings.append(_error(policy, f"{subject()}: signature check could not complete "
                                               f"({'; '.join(failed)}) {where(rule)}"))
            elif requirement.threshold == 1 and len(failed) == 1:
                findings.append(Finding("deny", f"{subject()}: no valid signature from "
                                                f"{failed[0]} {where(rule)}"))
            else:
                findings.append(Finding(
                    "deny",
                    f"{subject()}: {ok} of {requirement.threshold} required authorities verified "
                    f"(no valid signature from {'; '.join(failed)}) {where(rule)}",
                ))

    summary: ScanSummary | None = None
    if rule.scan is not None:
        summary, scan_findings = _check_scan(policy, rule.scan, facts, now, subject(), where(rule))
        findings.extend(scan_findings)
    return entry(rule, sigs, reasons, summary), findings


def _signer(authority: Authority) -> tuple[str, ...]:
    """Who signs for an authority: its key, or its keyless identity (whatever the tlog mode,
    trusted root or name), so one signer never counts twice toward a threshold."""
    if isinstance(authority, KeyAuthority):
        return ("key", authority.key_sha256)
    if isinstance(authority, KeylessAuthority):
        return ("keyless", authority.issuer, authority.subject or "",
                authority.subject_regexp or "")
    stores = tuple(s for s in authority.store_sha256 if not s.startswith("tsa:"))
    identities = ("*",) if authority.any_identity else tuple(
        i.text for i in authority.trusted_identities)
    return ("notation", *stores, "|", *identities)


def _error(policy: Policy, message: str) -> Finding:
    level: Level = policy.on_error
    return Finding(level, message, error=True)


def _check_scan(
    policy: Policy,
    scan: ScanRequirement,
    facts: ImageFacts,
    now: dt.datetime,
    subject: str,
    where: str,
) -> tuple[ScanSummary | None, list[Finding]]:
    attestors = {a.fingerprint for a in scan.attestors}
    chosen: ScanFact | None = None
    errors: list[str] = []
    for source in scan.sources:
        candidates = [
            fact for fact in facts.scans
            if fact.source == source
            and (source != "attestation" or fact.attestor in attestors)
            and (scan.max_age is None or now - fact.scanned_at <= scan.max_age)
        ]
        if candidates:
            chosen = max(candidates, key=lambda f: f.scanned_at)
            break
        if source in facts.scan_errors:
            errors.append(f"{source}: {facts.scan_errors[source]}")
    if chosen is None:
        if errors:
            return None, [_error(policy, f"{subject}: scan verdict unavailable "
                                         f"({'; '.join(errors)}) {where}")]
        age = f" no older than {_human(scan.max_age)}" if scan.max_age else ""
        if scan.on_missing == "allow":
            return None, []
        return None, [Finding(scan.on_missing, f"{subject}: no scan result{age} from "
                                               f"{', '.join(scan.sources)} {where}")]
    ids = apply_ignores(chosen.ids, scan, now)
    counts = {severity: len(ids.get(severity, ())) for severity in SEVERITIES}
    # the audit keeps the raw IDs (facts, for replay) and the counts after `ignore` (SPEC §8)
    summary = ScanSummary(chosen.source, chosen.scanned_at, chosen.ids, counts, chosen.attestor)
    findings: list[Finding] = []
    for level, limits in (("deny", scan.deny), ("warn", scan.warn)):
        over = [
            f"{counts[sev]} {sev} ({_worst(ids.get(sev, ()))}) > {limit} allowed"
            for sev, limit in limits.items() if counts[sev] > limit
        ]
        if over:
            lvl: Level = "deny" if level == "deny" else "warn"
            findings.append(Finding(lvl, f"{subject}: vulnerabilities {', '.join(over)} "
                                         f"[{chosen.source}] {where}"))
    return summary, findings


def apply_ignores(
    ids: Mapping[str, tuple[str, ...]], scan: ScanRequirement, now: dt.datetime
) -> dict[str, tuple[str, ...]]:
    """Distinct IDs per severity, each at its highest severity, minus unexpired ignores."""
    ignored = {entry.id for entry in scan.ignore if entry.active(now)}
    seen: set[str] = set()
    out: dict[str, tuple[str, ...]] = {}
    for severity in SEVERITIES:
        kept = []
        for vuln_id in ids.get(severity, ()):
            if vuln_id in seen or vuln_id in ignored:
                continue
            seen.add(vuln_id)
            kept.append(vuln_id)
        out[severity] = tuple(sorted(kept))
    return out


def _worst(ids: Sequence[str], limit: int = 3) -> str:
    shown = ", ".join(ids[:limit])
    return shown + (", …" if len(ids) > limit else "")


def _human(delta: dt.timedelta | None) -> str:
    if delta is None:
        return ""
    seconds = int(delta.total_seconds())
    if seconds % 3600 == 0:
        return f"{seconds // 3600}h"
    if seconds % 60 == 0:
        return f"{seconds // 60}m"
    return f"{seconds}s"

