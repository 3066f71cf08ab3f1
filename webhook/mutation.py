"""``/mutate``: pin verified tag references to their digest with a JSONPatch (SPEC §3).

``nginx:1.27`` becomes ``nginx:1.27@sha256:…`` (the tag stays for readability;
the runtime pulls by digest). Only images whose signatures verified under every
applicable policy are pinned; a reference that already has a digest is left
alone, so re-invocation (``reinvocationPolicy: IfNeeded``) is idempotent.
"""

from __future__ import annotations

from collections import defaultdict
from typing import Any

from webhook.admission import AdmissionRequest, containers_of, pod_spec, pod_spec_pointer
from webhook.decision import Decision, ImageEntry


def verified_digests(decision: Decision) -> dict[str, str]:
    """ref (as written) -> digest, for refs every applicable policy verified without findings."""
    by_ref: dict[str, list[ImageEntry]] = defaultdict(list)
    for entry in decision.entries:
        by_ref[entry.ref].append(entry)
    verified: dict[str, str] = {}
    for ref, entries in by_ref.items():
        digests = {entry.digest for entry in entries}
        digest = digests.pop() if len(digests) == 1 else None
        if digest is None:
            continue
        if any(entry.violations or "error" in entry.signatures.values() for entry in entries):
            continue
        if not any("ok" in entry.signatures.values() for entry in entries):
            continue  # nothing was verified (e.g. `signatures: none`): nothing to pin
        verified[ref] = digest
    return verified


def digest_patch(review: AdmissionRequest, decision: Decision) -> list[dict[str, Any]]:
    if not decision.allowed or review.obj is None:
        return []
    verified = verified_digests(decision)
    if not verified:  # nothing verified (e.g. a DELETE, whose object was never read)
        return []
    prefix = pod_spec_pointer(review.kind)
    spec = pod_spec(review.kind, review.obj)
    if prefix is None or spec is None:
        return []
    patch: list[dict[str, Any]] = []
    for field, index, image in containers_of(spec):
        digest = verified.get(image)
        if digest is None or "@" in image:
            continue
        patch.append({
            "op": "replace",
            "path": f"{prefix}/{field}/{index}/image",
            "value": f"{image}@{digest}",
        })
    return patch
