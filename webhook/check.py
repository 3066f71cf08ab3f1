"""``sealgate check``: decide Kubernetes manifests as ``/validate`` would (SPEC §6).

Every pod-bearing object becomes the CREATE request the API server would send
(``manifests.admission_request``) and goes through ``review.decide_request``,
the webhook's own pipeline. Facts come from the registry (online, the default)
or from ``OfflineFacts``, which does no I/O and says what it could not check.
"""

from __future__ import annotations

import json
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any, Literal

import anyio

from webhook.admission import AdmissionRequest
from webhook.decision import CheckPlan, Decision, ImageEntry, ImageFacts, Outcome
from webhook.facts import registry_facts
from webhook.manifests import ManifestObject, admission_request
from webhook.policy import PolicySet
from webhook.review import FactSource, decide_request
from webhook.settings import Settings
from webhook.tables import render_table, strip_subject

OFFLINE_REASON = "not checked offline (--offline)"
ImageStatus = Literal["allow", "warn", "deny"]


# --------------------------------------------------------------------------- fact sources


class OfflineFacts:
    """A FactSource that performs no I/O.

    A digest is known only when the reference pins it; every signature and scan
    check is an ``error`` outcome (so ``onError`` decides, as when a registry is
    down): offline can never prove a signature. What was not checked is kept in
    ``not_checked`` (image reference -> checks) for the output.
    """

    def __init__(self) -> None:
        self.not_checked: dict[str, list[str]] = {}

    async def gather(
        self, plans: tuple[CheckPlan, ...], *, deadline: float
    ) -> dict[str, ImageFacts]:
        facts: dict[str, ImageFacts] = {}
        for plan in plans:
            pinned = plan.ref.digest if plan.ref is not None else None
            skipped: list[str] = []
            if plan.needs_digest and pinned is None:
                skipped.append("digest (tag not resolved)")
            for name in dict.fromkeys(check.authority.name for check in plan.signatures):
                skipped.append(f'signature "{name}"')
            sources = list(dict.fromkeys(s for scan in plan.scans for s in scan.sources))
            if sources:
                skipped.append(f"scan ({', '.join(sources)})")
            if skipped:
                self.not_checked[plan.ref_text] = skipped
            facts[plan.ref_text] = ImageFacts(
                digest=Outcome("ok") if pinned else Outcome("error", OFFLINE_REASON),
                resolved_digest=pinned,
                signatures={check.key: Outcome("error", OFFLINE_REASON)
                            for check in plan.signatures},
                scan_errors={source: OFFLINE_REASON for source in sources},
            )
        return facts


# --------------------------------------------------------------------------- results


@dataclass(frozen=True, slots=True)
class ImageResult:
    """One image of one object, summarised over the policies that apply to it."""

    ref: str
    status: ImageStatus
    unverified: bool  # offline: some checks did not run, so this verdict proves nothing
    reasons: tuple[str, ...]
    entries: tuple[ImageEntry, ...]
    not_checked: tuple[str, ...]

    @property
    def label(self) -> str:
        return f"{self.status} (unverified offline)" if self.unverified else self.status


@dataclass(frozen=True, slots=True)
class CheckedObject:
    obj: ManifestObject
    request: AdmissionRequest
    decision: Decision
    not_checked: Mapping[str, Sequence[str]] = field(default_factory=dict)

    def images(self) -> list[ImageResult]:
        return [self._image(ref) for ref in self.request.images]

    def _image(self, ref: str) -> ImageResult:
        entries = tuple(e for e in self.decision.entries if e.ref == ref)
        skipped = tuple(self.not_checked.get(ref, ()))
        if not entries:
            reason = ("no policy for namespace" if self.decision.reason == "no-policy"
                      else self.decision.message or "no policy for namespace")
            status: ImageStatus = "deny" if self.decision.decision == "deny" else "allow"
            return ImageResult(ref, status, False, (reason,), (), skipped)
        reasons: list[str] = []
        status = "allow"
        for entry in entries:
            texts = [strip_subject(v, entry.name, entry.ref) for v in entry.violations]
            if entry.denied:
                status = "deny"
            elif texts and entry.mode != "audit" and status == "allow":
                status = "warn"
            if entry.mode == "audit" and texts:
                texts = [f"audit mode, not enforced: {t}" for t in texts]
            if not texts:
                rule = f", rule {entry.rule}" if entry.rule else ""
                texts = [f"ok (policy {entry.policy}{rule})"]
            reasons.extend(t for t in texts if t not in reasons)
        unverified = False
        if skipped:
            if status == "deny":
                # deny only because checks could not run offline: say so, it proves nothing
                unverified = all(OFFLINE_REASON in v for e in entries if e.denied
                                 for v in e.violations)
            else:
                unverified = True
        return ImageResult(ref, status, unverified, tuple(reasons), entries, skipped)


async def check_objects(
    objects: Sequence[ManifestObject],
    *,
    policies: PolicySet,
    settings: Settings,
    default_namespace: str | None,
    offline: bool,
) -> list[CheckedObject]:
    """Decide every pod-bearing object; ManifestError (bad object) before any I/O."""
    requests = [
        (obj, admission_request(obj, default_namespace=default_namespace, index=index))
        for index, obj in enumerate(objects, start=1)
    ]
    requests = [(obj, request) for obj, request in requests if request.pod_bearing]
    results: list[CheckedObject | None] = [None] * len(requests)

    async def run(index: int, source: FactSource, skipped: Mapping[str, Sequence[str]]) -> None:
        obj, request = requests[index]
        decision = await decide_request(
            request, policies=policies, facts=source, deadline=settings.deadline,
            mode_override=settings.mode_override,
        )
        results[index] = CheckedObject(obj, request, decision, skipped)

    if offline:
        for index in range(len(requests)):
            offline_source = OfflineFacts()
            await run(index, offline_source, offline_source.not_checked)
    else:
        async with registry_facts(settings) as gatherer, anyio.create_task_group() as tg:
            for index in range(len(requests)):
                tg.start_soon(run, index, gatherer, {})
    return [result for result in results if result is not None]


def exit_code(results: Sequence[CheckedObject]) -> int:
    """0 when everything is allowed (allow or warn), 1 when any object would be denied."""
    return 1 if any(r.decision.decision == "deny" for r in results) else 0


# --------------------------------------------------------------------------- output


def render_check_table(
    results: Sequence[CheckedObject], *, total_objects: int, offline: bool
) -> str:
    rows: list[list[str]] = []
    for result in results:
        obj, request = result.obj, result.request
        namespace = request.namespace or ""
        images = result.images()
        if not images:
            reason = result.decision.message or "no images"
            rows.append([obj.display_name, namespace, "-", result.decision.decision, reason])
        for image in images:
            reason = "; ".join(image.reasons)
            if image.not_checked:
                reason += f" [not checked: {', '.join(image.not_checked)}]"
            rows.append([obj.display_name, namespace, image.ref, image.label, reason])
    lines = []
    if rows:
        lines.append(render_table(["OBJECT", "NAMESPACE", "IMAGE", "DECISION", "REASON"], rows))
        lines.append("")
    counts = {kind: sum(r.decision.decision == kind for r in results)
              for kind in ("allow", "warn", "deny")}
    skipped = total_objects - len(results)
    summary = (f"{len(results)} pod-bearing object{'s' if len(results) != 1 else ''} checked: "
               f"{counts['allow']} allow, {counts['warn']} warn, {counts['deny']} deny")
    if skipped:
        summary += f"; {skipped} other object{'s' if skipped != 1 else ''} skipped"
    lines.append(summary)
    if offline and any(r.not_checked for r in results):
        lines.append(
            "offline: tag digests, signatures and scans were not checked; they count as "
            "errors and follow each policy's onError. An offline check cannot prove a "
            "signature: run without --offline before relying on an allow."
        )
    return "\n".join(lines)


def check_json(results: Sequence[CheckedObject], *, offline: bool) -> str:
    out: list[dict[str, Any]] = []
    for result in results:
        decision = result.decision
        out.append({
            "source": result.obj.location,
            "kind": result.obj.kind,
            "name": result.obj.name,
            "namespace": result.request.namespace,
            "decision": decision.decision,
            "reason": decision.reason,
            "message": decision.message or None,
            "warnings": list(decision.warnings),
            "enforced_by": list(decision.enforced_by),
            "offline": offline,
            "images": [_image_json(image) for image in result.images()],
        })
    return json.dumps(out, indent=2)


def _image_json(image: ImageResult) -> dict[str, Any]:
    return {
        "ref": image.ref,
        "decision": image.status,
        "unverified": image.unverified,
        "reasons": list(image.reasons),
        "not_checked": list(image.not_checked),
        "policies": [
            {
                "policy": e.policy, "rule": e.rule, "mode": e.mode, "name": e.name,
                "digest": e.digest, "signatures": dict(e.signatures),
                "violations": list(e.violations), "denied": e.denied,
            }
            for e in image.entries
        ],
    }
