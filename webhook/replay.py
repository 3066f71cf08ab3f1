"""``sealgate replay``: re-decide recorded admissions under another policy set, offline.

Each audit line carries facts, not only the decision (SPEC §8): digests, the
outcome of every signature check with the key it was about
(``signature_keys``: authority name -> ``decision.signature_key``), and the raw
scan result. Replay rebuilds the request (namespace, images, break glass,
user) and the facts, plans the checks the *new* policies need
(``decision.plan_checks``) and runs ``decision.decide`` — the function
``/validate`` runs — at the time of the admission.

A fact the new policies need that was never recorded (a new authority or key,
a scan from another source or attestor, the digest of an image nobody
resolved) is *unknown*: it enters the decision as
``Outcome("error", "unknown: not recorded")``, never as ok or fail. When the
verdict could depend on it, the admission is reported as *undecidable*
instead of as a change. It could not depend on it when the most permissive and
the most restrictive values of the unknowns give the same verdict (e.g. a
second authority added to a threshold-1 rule whose first authority verified).
"""

from __future__ import annotations

import dataclasses
import datetime as dt
import json
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

from webhook.admission import POD_BEARING_KINDS
from webhook.auditlog import AuditLine, parse_time
from webhook.decision import (
    BreakGlass,
    CheckPlan,
    Decision,
    ImageFacts,
    Outcome,
    ScanFact,
    decide,
    plan_checks,
)
from webhook.policy import PolicySet
from webhook.tables import render_table

UNKNOWN = "unknown: not recorded"
_PLACEHOLDER_DIGEST = "sha256:" + "0" * 64


@dataclass(frozen=True, slots=True)
class RecordedFacts:
    """What one audit line says about one image reference."""

    digest: str | None = None
    signatures: Mapping[str, Outcome] = field(default_factory=dict)  # by signature key
    scans: tuple[ScanFact, ...] = ()


@dataclass(frozen=True, slots=True)
class Replayed:
    line: AuditLine
    old: str  # allow | warn | deny
    new: Decision | None  # None: undecidable
    unknown: tuple[str, ...]  # facts the new policies need that were never recorded
    note: str = ""

    @property
    def changed(self) -> bool:
        return self.new is not None and self.new.decision != self.old

    @property
    def change(self) -> str:
        return f"{self.old} → {self.new.decision if self.new else '?'}"

    @property
    def reason(self) -> str:
        if self.new is None:
            return self.note or "; ".join(self.unknown)
        if self.new.decision == "deny":
            return self.new.message
        if self.new.decision == "warn":
            return "; ".join(self.new.warnings)
        was = self.line.text("message")
        return f"allowed (was: {was})" if was else "allowed"


@dataclass(slots=True)
class ReplayReport:
    records: int = 0
    skipped: int = 0  # not pod-bearing, not CREATE/UPDATE, cluster-scoped
    unchanged: int = 0
    changed: list[Replayed] = field(default_factory=list)
    undecidable: list[Replayed] = field(default_factory=list)

    def transitions(self) -> dict[str, int]:
        counts: dict[str, int] = {}
        for item in self.changed:
            counts[item.change] = counts.get(item.change, 0) + 1
        return dict(sorted(counts.items()))

    def render(self) -> str:
        lines: list[str] = []
        if self.changed:
            lines.append("changed decisions:")
            lines.append(render_table(
                ["TIME", "NAMESPACE", "OBJECT", "USER", "CHANGE", "NEW REASON"],
                [[r.line.time_text, r.line.namespace or "", r.line.object_name,
                  r.line.text("user"), r.change, r.reason] for r in self.changed],
            ))
            lines.append("")
        if self.undecidable:
            lines.append("undecidable (the new policies need facts these admissions never "
                         "recorded; nothing was guessed):")
            lines.append(render_table(
                ["TIME", "NAMESPACE", "OBJECT", "WAS", "UNKNOWN"],
                [[r.line.time_text, r.line.namespace or "", r.line.object_name, r.old,
                  r.reason] for r in self.undecidable],
            ))
            lines.append("")
        transitions = ", ".join(f"{k}: {v}" for k, v in self.transitions().items())
        lines.append(
            f"replayed {self.records - self.skipped} of {self.records} admissions: "
            f"{len(self.changed)} changed{f' ({transitions})' if transitions else ''}, "
            f"{self.unchanged} unchanged, {len(self.undecidable)} undecidable"
            + (f"; {self.skipped} skipped (no images to decide)" if self.skipped else "")
        )
        return "\n".join(lines)

    def to_json(self) -> str:
        def item(r: Replayed) -> dict[str, Any]:
            out: dict[str, Any] = {
                "line": r.line.line, "time": r.line.time_text, "uid": r.line.text("uid"),
                "namespace": r.line.namespace, "kind": r.line.text("kind"),
                "name": r.line.text("name"), "user": r.line.text("user"), "old": r.old,
            }
            if r.new is not None:
                out.update(new=r.new.decision, message=r.new.message or None,
                           warnings=list(r.new.warnings), enforced_by=list(r.new.enforced_by))
            else:
                out.update(unknown=list(r.unknown), note=r.note or None)
            return out

        return json.dumps({
            "changed": [item(r) for r in self.changed],
            "undecidable": [item(r) for r in self.undecidable],
            "summary": {
                "records": self.records, "skipped": self.skipped,
                "changed": len(self.changed), "unchanged": self.unchanged,
                "undecidable": len(self.undecidable), "transitions": self.transitions(),
            },
        }, indent=2)


# --------------------------------------------------------------------------- facts


def recorded_facts(line: AuditLine) -> dict[str, RecordedFacts]:
    """Facts per image reference, from every (image, policy) entry of the line."""
    digests: dict[str, str] = {}
    signatures: dict[str, dict[str, Outcome]] = {}
    scans: dict[str, list[ScanFact]] = {}
    for entry in line.images:
        ref = entry.get("ref")
        if not isinstance(ref, str):
            continue
        digest = entry.get("digest")
        if isinstance(digest, str) and ref not in digests:
            digests[ref] = digest
        keys = entry.get("signature_keys") or {}
        statuses = entry.get("signatures") or {}
        reasons = entry.get("signature_reasons") or {}
        if isinstance(keys, dict) and isinstance(statuses, dict):
            for name, key in keys.items():
                status = statuses.get(name)
                if isinstance(key, str) and status in ("ok", "fail", "error"):
                    reason = reasons.get(name, "") if isinstance(reasons, dict) else ""
                    signatures.setdefault(ref, {})[key] = Outcome(status, str(reason or ""))
        scan = _scan_fact(entry.get("scan"))
        if scan is not None and scan not in scans.setdefault(ref, []):
            scans[ref].append(scan)
    refs = dict.fromkeys([*digests, *signatures, *scans])
    return {
        ref: RecordedFacts(digests.get(ref), signatures.get(ref, {}), tuple(scans.get(ref, ())))
        for ref in refs
    }


def _scan_fact(raw: object) -> ScanFact | None:
    if not isinstance(raw, dict):
        return None
    scanned_at = parse_time(raw.get("scanned_at"))
    source = raw.get("source")
    ids = raw.get("ids")
    if scanned_at is None or not isinstance(source, str) or not isinstance(ids, dict):
        return None  # a record without raw IDs cannot be re-thresholded
    attestor = raw.get("attestor")
    return ScanFact(
        source=source,
        scanned_at=scanned_at,
        ids={str(k): tuple(str(i) for i in v) for k, v in ids.items() if isinstance(v, list)},
        attestor=attestor if isinstance(attestor, str) else None,
    )


@dataclass(slots=True)
class _Unknowns:
    """The facts of one request the new plan needs and the record lacks."""

    labels: list[str] = field(default_factory=list)
    signature_keys: dict[str, set[str]] = field(default_factory=dict)  # ref -> keys
    digests: set[str] = field(default_factory=set)  # refs
    scan_sources: dict[str, dict[str, str | None]] = field(default_factory=dict)  # ref -> src

    @property
    def signatures_only(self) -> bool:
        return not self.digests and not self.scan_sources


def _facts(plan: CheckPlan, recorded: RecordedFacts, now: dt.datetime, unknowns: _Unknowns,
           ) -> ImageFacts:
    ref = plan.ref
    digest = recorded.digest or (ref.digest if ref is not None else None)
    if plan.needs_digest and digest is None:
        unknowns.digests.add(plan.ref_text)
        unknowns.labels.append(f"digest of {plan.ref_text}")
    signatures: dict[str, Outcome] = {}
    for check in plan.signatures:
        outcome = recorded.signatures.get(check.key)
        if outcome is None:
            unknowns.signature_keys.setdefault(plan.ref_text, set()).add(check.key)
            label = f'signature "{check.authority.name}" on {plan.ref_text}'
            if label not in unknowns.labels:
                unknowns.labels.append(label)
            outcome = Outcome("error", UNKNOWN)
        signatures[check.key] = outcome
    scan_errors: dict[str, str] = {}
    for requirement in plan.scans:
        attestors = {a.fingerprint for a in requirement.attestors}
        for source in requirement.sources:
            matching = [
                s for s in recorded.scans
                if s.source == source and (source != "attestation" or s.attestor in attestors)
            ]
            fresh = [s for s in matching if requirement.max_age is None
                     or now - s.scanned_at <= requirement.max_age]
            if fresh:
                break
            if matching:
                continue  # recorded, but too old for the new maxAge: the next source decides
            scan_errors[source] = UNKNOWN
            unknowns.scan_sources.setdefault(plan.ref_text, {})[source] = (
                min(attestors) if attestors and source == "attestation" else None
            )
            label = f"scan ({source}) of {plan.ref_text}"
            if label not in unknowns.labels:
                unknowns.labels.append(label)
            break  # an unknown source would have won if it had a result
    return ImageFacts(
        digest=Outcome("ok") if digest else Outcome("error", UNKNOWN),
        resolved_digest=digest,
        signatures=signatures,
        scans=recorded.scans,
        scan_errors=scan_errors,
    )


def _substitute(facts: dict[str, ImageFacts], unknowns: _Unknowns, *, permissive: bool,
                now: dt.datetime) -> dict[str, ImageFacts]:
    """The unknowns at one extreme: every unknown ok/clean (permissive) or fail."""
    out = dict(facts)
    for ref, image_facts in facts.items():
        signatures = dict(image_facts.signatures)
        for key in unknowns.signature_keys.get(ref, ()):
            signatures[key] = Outcome("ok") if permissive else Outcome("fail", UNKNOWN)
        changes: dict[str, Any] = {"signatures": signatures}
        if permissive and ref in unknowns.digests:
            changes.update(digest=Outcome("ok"), resolved_digest=_PLACEHOLDER_DIGEST)
        sources = unknowns.scan_sources.get(ref, {})
        if permissive and sources:
            changes["scan_errors"] = {k: v for k, v in image_facts.scan_errors.items()
                                      if k not in sources}
            changes["scans"] = (*image_facts.scans, *(
                ScanFact(source, now, {}, attestor) for source, attestor in sources.items()
            ))
        out[ref] = dataclasses.replace(image_facts, **changes)
    return out


# --------------------------------------------------------------------------- replay


def replay_line(line: AuditLine, policies: PolicySet) -> Replayed | None:
    """Re-decide one recorded admission; None when there is nothing to decide."""
    record = line.record
    old = line.text("decision")
    if (line.namespace is None or line.text("kind") not in POD_BEARING_KINDS
            or line.text("operation") not in ("CREATE", "UPDATE")):
        return None
    images = list(dict.fromkeys(
        e["ref"] for e in line.images if isinstance(e.get("ref"), str)
    ))
    checked = record.get("checked_images")
    if not images and isinstance(checked, list):
        # a no-policy admission: the images are known, their facts are not
        images = list(dict.fromkeys(ref for ref in checked if isinstance(ref, str)))
    applicable = policies.applicable(line.namespace)
    if not images and record.get("reason") in ("no-policy", "error"):
        if not applicable and record.get("reason") == "no-policy":
            return Replayed(line, old, Decision("allow", "no-policy", "", (), (), ()), ())
        why = ("no policy applied then" if record.get("reason") == "no-policy"
               else "the admission failed with an internal error")
        return Replayed(line, old, None, ("images",),
                        note=f"images were not recorded ({why})")
    glass_raw = record.get("break_glass")
    glass = None
    if isinstance(glass_raw, dict) and isinstance(glass_raw.get("reason"), str):
        glass = BreakGlass(glass_raw["reason"], str(glass_raw.get("user") or line.text("user")))
    now = line.time
    recorded = recorded_facts(line)
    unknowns = _Unknowns()
    facts = {
        plan.ref_text: _facts(plan, recorded.get(plan.ref_text, RecordedFacts()), now, unknowns)
        for plan in (plan_checks(images, applicable) if applicable else ())
    }

    def run(variant: Mapping[str, ImageFacts]) -> Decision:
        return decide(namespace=line.namespace, images=images, policies=policies,
                      facts=variant, now=now, break_glass=glass)

    decision = run(facts)
    if not unknowns.labels:
        return Replayed(line, old, decision, ())
    permissive = run(_substitute(facts, unknowns, permissive=True, now=now))
    if unknowns.signatures_only:
        restrictive = run(_substitute(facts, unknowns, permissive=False, now=now))
        settled = permissive.decision == restrictive.decision == decision.decision
    else:
        # scans and digests have no single "worst" value; only a deny at the most
        # permissive values is certain
        settled = permissive.decision == decision.decision == "deny"
    if settled:
        return Replayed(line, old, decision, tuple(unknowns.labels))
    return Replayed(line, old, None, tuple(unknowns.labels))


def replay(lines: Sequence[AuditLine], policies: PolicySet) -> ReplayReport:
    report = ReplayReport(records=len(lines))
    for line in lines:
        result = replay_line(line, policies)
        if result is None:
            report.skipped += 1
        elif result.new is None:
            report.undecidable.append(result)
        elif result.changed:
            report.changed.append(result)
        else:
            report.unchanged += 1
    return report
