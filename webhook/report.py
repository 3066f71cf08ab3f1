"""``sealgate audit report``: what enforcement would have denied, from the audit log.

Every image entry of a policy in ``audit`` or ``warn`` mode that has violations
is something ``enforce`` would have acted on; entries an enforcing policy did
deny, and denials waived by break glass, are shown too, so the report is the
whole picture of a rollout. Grouped namespace -> image (``name@digest``) ->
reason (the violation, which names policy and rule), with counts and the
first/last time seen.

An audit entry lists a policy's violations without their level, so a
violation that ``enforce`` would only warn about (a ``scan.warn`` threshold,
``onError: warn``, ``unmatched: warn``) is listed as well; ``sealgate replay``
with the policy switched to ``enforce`` gives the exact answer. Entries that
carry ``violation_levels`` (a list parallel to ``violations``) are filtered to
the ``deny`` ones.
"""

from __future__ import annotations

import datetime as dt
import json
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

from webhook.auditlog import AuditLine
from webhook.patterns import namespace_matches
from webhook.tables import plural, strip_subject

WOULD_DENY = "would deny"
DENIED = "denied"
WAIVED = "waived by break glass"


@dataclass(slots=True)
class Seen:
    count: int = 0
    first: dt.datetime | None = None
    last: dt.datetime | None = None
    first_text: str = ""
    last_text: str = ""

    def add(self, line: AuditLine) -> None:
        self.count += 1
        if self.first is None or line.time < self.first:
            self.first, self.first_text = line.time, line.time_text
        if self.last is None or line.time >= self.last:
            self.last, self.last_text = line.time, line.time_text


@dataclass(frozen=True, slots=True, order=True)
class ReasonKey:
    policy: str
    rule: str
    mode: str
    outcome: str
    reason: str


@dataclass(slots=True)
class Report:
    records: int = 0  # records read
    in_window: int = 0  # records passing --since / --namespace
    admissions: int = 0  # of those, admissions with something enforcement would deny
    denied: int = 0
    # namespace -> image -> reason -> counts
    groups: dict[str, dict[str, dict[ReasonKey, Seen]]] = field(default_factory=dict)

    def render(self) -> str:
        lines: list[str] = []
        for namespace in sorted(self.groups):
            lines.append(f"namespace {namespace}")
            for image in sorted(self.groups[namespace]):
                lines.append(f"  {image}")
                reasons = self.groups[namespace][image]
                for key in sorted(reasons, key=lambda k: (-reasons[k].count, k)):
                    seen = reasons[key]
                    mode = f" ({key.mode} mode)" if key.outcome == WOULD_DENY else ""
                    lines.append(f"    {key.outcome}{mode}: {plural(seen.count, 'admission')}, "
                                 f"first {seen.first_text}, last {seen.last_text}")
                    lines.append(f"        {key.reason}")
            lines.append("")
        would = {
            (namespace, image) for namespace, images in self.groups.items()
            for image, reasons in images.items() if any(k.outcome == WOULD_DENY for k in reasons)
        }
        namespaces = {namespace for namespace, _ in would}
        lines.append(
            f"{plural(self.records, 'audit record')}, {self.in_window} in scope: enforcement "
            f"would have denied {plural(self.admissions, 'admission')} "
            f"({plural(len(would), 'image')} in {plural(len(namespaces), 'namespace')}); "
            f"{self.denied} denied"
        )
        return "\n".join(lines)

    def to_json(self) -> str:
        namespaces = []
        for namespace in sorted(self.groups):
            images = []
            for image in sorted(self.groups[namespace]):
                reasons = self.groups[namespace][image]
                images.append({
                    "image": image,
                    "reasons": [
                        {
                            "policy": key.policy, "rule": key.rule or None, "mode": key.mode,
                            "outcome": key.outcome, "reason": key.reason,
                            "count": reasons[key].count, "first_seen": reasons[key].first_text,
                            "last_seen": reasons[key].last_text,
                        }
                        for key in sorted(reasons, key=lambda k: (-reasons[k].count, k))
                    ],
                })
            namespaces.append({"namespace": namespace, "images": images})
        summary = {"records": self.records, "in_scope": self.in_window,
                   "would_deny_admissions": self.admissions, "denied_admissions": self.denied}
        return json.dumps({"namespaces": namespaces, "summary": summary}, indent=2)


def image_label(entry: Mapping[str, Any]) -> str:
    """``name@digest`` when the digest was resolved, else the reference as written."""
    name, digest, ref = entry.get("name"), entry.get("digest"), entry.get("ref")
    if isinstance(name, str) and isinstance(digest, str):
        return f"{name}@{digest}"
    return str(ref if ref is not None else name)


def _deny_violations(entry: Mapping[str, Any]) -> list[str]:
    raw = entry.get("violations")
    violations = [v for v in raw if isinstance(v, str)] if isinstance(raw, list) else []
    levels = entry.get("violation_levels")
    if isinstance(levels, list) and len(levels) == len(violations):
        return [v for v, level in zip(violations, levels, strict=True) if level == "deny"]
    return violations


def build_report(
    lines: Sequence[AuditLine],
    *,
    since: dt.timedelta | None = None,
    namespace: str | None = None,
    now: dt.datetime | None = None,
) -> Report:
    now = now or dt.datetime.now(dt.UTC)
    report = Report(records=len(lines))
    for line in lines:
        if since is not None and line.time < now - since:
            continue
        ns = line.namespace
        if namespace is not None and (ns is None or not namespace_matches(namespace, ns)):
            continue
        report.in_window += 1
        decision = line.text("decision")
        raw_enforced = line.record.get("enforced_by")
        enforced_by = ({p for p in raw_enforced if isinstance(p, str)}
                       if isinstance(raw_enforced, list) else set())
        glass = line.record.get("break_glass") is not None
        if decision == "deny":
            report.denied += 1
        would_deny = False
        for entry in line.images:
            mode = entry.get("mode")
            policy = str(entry.get("policy") or "")
            if mode in ("audit", "warn"):
                outcome = WOULD_DENY
            elif decision == "deny" and policy in enforced_by:
                outcome = DENIED
            elif glass and decision != "deny":
                outcome = WAIVED
            else:
                continue  # enforce mode, not denied: warnings enforcement already gives
            violations = _deny_violations(entry)
            if not violations:
                continue
            would_deny = would_deny or outcome == WOULD_DENY
            image = image_label(entry)
            bucket = report.groups.setdefault(ns or "(cluster)", {}).setdefault(image, {})
            for violation in violations:
                reason = strip_subject(violation, entry.get("name"), entry.get("ref"))
                key = ReasonKey(policy, str(entry.get("rule") or ""), str(mode), outcome, reason)
                bucket.setdefault(key, Seen()).add(line)
        report.admissions += would_deny
    return report
