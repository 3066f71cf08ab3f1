"""``POST /validate-policy``: admission for ImagePolicy objects (SPEC §9).

The same validation the policy source applies (``webhook.kube.objects``), so
``kubectl apply`` of a broken ImagePolicy is refused with every ``field:
problem`` instead of being stored and reported as ``Ready=False`` later.
DELETE (and anything that is not an ImagePolicy CREATE/UPDATE) is allowed.
"""

from __future__ import annotations

import json
import logging
from collections.abc import Mapping
from typing import Any

from webhook.errors import AdmissionError, SealgateError
from webhook.kube.objects import Checked, check_object
from webhook.policy import KIND
from webhook.reload import check_trusted_roots

log = logging.getLogger("sealgate")


def validate_object(obj: Mapping[str, Any]) -> Checked:
    """check_object, plus the trusted roots its authorities name (as a file reload does)."""
    checked = check_object(obj)
    if checked.policy is None:
        return checked
    try:
        check_trusted_roots([checked.policy])
    except SealgateError as exc:
        problem = str(exc).split(": ", 1)[-1]
        return Checked(checked.name, checked.generation, None, (problem,))
    return checked


def parse_policy_review(body: bytes) -> tuple[str, str, dict[str, Any] | None]:
    """``(uid, operation, object)`` of an AdmissionReview; AdmissionError when malformed."""
    try:
        review = json.loads(body)
    except (ValueError, UnicodeDecodeError, RecursionError) as exc:
        raise AdmissionError("body is not JSON") from exc
    request = review.get("request") if isinstance(review, dict) else None
    if not isinstance(request, dict):
        raise AdmissionError('no "request" object')
    uid = request.get("uid")
    if not isinstance(uid, str) or not uid:
        raise AdmissionError('request.uid must be a non-empty string')
    operation = request.get("operation")
    obj = request.get("object")
    kind = request.get("kind")
    if operation not in ("CREATE", "UPDATE") or not (
        isinstance(kind, dict) and kind.get("kind") == KIND
    ):
        return uid, str(operation), None
    if not isinstance(obj, dict):
        raise AdmissionError("request.object must be an object")
    return uid, operation, obj


def policy_review_answer(uid: str, problems: tuple[str, ...]) -> dict[str, Any]:
    response: dict[str, Any] = {"uid": uid, "allowed": not problems}
    if problems:
        response["status"] = {
            "code": 422,
            "reason": "Invalid",
            "message": "invalid ImagePolicy:\n" + "\n".join(f"- {p}" for p in problems),
        }
    return {"apiVersion": "admission.k8s.io/v1", "kind": "AdmissionReview", "response": response}


def review_policy(body: bytes) -> dict[str, Any]:
    """The AdmissionReview answer for one ImagePolicy request (CPU-bound: run off the loop)."""
    uid, operation, obj = parse_policy_review(body)
    if obj is None:
        return policy_review_answer(uid, ())
    checked = validate_object(obj)
    if checked.problems:
        log.info("refused %s of imagepolicy/%s: %s", operation, checked.name,
                 "; ".join(checked.problems))
    return policy_review_answer(uid, checked.problems)
