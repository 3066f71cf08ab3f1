"""AdmissionReview in and out, and pod-spec extraction for every pod-bearing kind (pure).

SPEC §3: Pod and every controller with a pod template; containers,
initContainers and ephemeralContainers; the ``pods/ephemeralcontainers``
subresource. Malformed input raises AdmissionError (HTTP 400).
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

import orjson

from webhook.errors import AdmissionError

API_VERSION = "admission.k8s.io/v1"
BREAK_GLASS_ANNOTATION = "sealgate.dev/break-glass"
CONTAINER_FIELDS = ("initContainers", "containers", "ephemeralContainers")

# kind -> path from the object to the pod template (whose "spec" is the pod spec)
_TEMPLATE_PATHS: dict[str, tuple[str, ...]] = {
    "Deployment": ("spec", "template"),
    "ReplicaSet": ("spec", "template"),
    "StatefulSet": ("spec", "template"),
    "DaemonSet": ("spec", "template"),
    "Job": ("spec", "template"),
    "ReplicationController": ("spec", "template"),
    "CronJob": ("spec", "jobTemplate", "spec", "template"),
}
POD_BEARING_KINDS = frozenset({"Pod", "EphemeralContainers", *_TEMPLATE_PATHS})


@dataclass(frozen=True, slots=True)
class AdmissionRequest:
    uid: str
    kind: str
    namespace: str | None
    name: str | None
    operation: str
    sub_resource: str | None
    user: str
    dry_run: bool
    images: tuple[str, ...]  # images to check (UPDATE: only the changed ones)
    break_glass_reason: str | None
    obj: Mapping[str, Any] | None = field(default=None, repr=False, compare=False)

    @property
    def pod_bearing(self) -> bool:
        return self.kind in POD_BEARING_KINDS


def parse_review(body: bytes) -> AdmissionRequest:
    """Parse an AdmissionReview body; AdmissionError names what is wrong."""
    try:
        # orjson: several times the standard library's speed; it also refuses what no
        # API server sends (lone UTF-16 surrogates, NaN, nesting deeper than 1024)
        review = orjson.loads(body)
    except orjson.JSONDecodeError as exc:
        if str(exc).startswith("depth limit exceeded"):
            raise AdmissionError("request body is nested too deeply") from exc
        raise AdmissionError(f"request body is not JSON: {exc}") from exc
    if not isinstance(review, dict):
        raise AdmissionError("request body is not an AdmissionReview object")
    if review.get("kind") != "AdmissionReview":
        raise AdmissionError(f"kind must be AdmissionReview, not {_shown(review.get('kind'))}")
    if review.get("apiVersion") != API_VERSION:
        raise AdmissionError(
            f"apiVersion must be {API_VERSION}, not {_shown(review.get('apiVersion'))}")
    request = review.get("request")
    if not isinstance(request, dict):
        raise AdmissionError("AdmissionReview has no request")
    uid = request.get("uid")
    if not isinstance(uid, str) or not uid:
        raise AdmissionError("request.uid is missing")
    _text(uid, "request.uid")
    # Not an AdmissionReview of anything: a review without a kind must never be allowed
    # for want of images to look at (issue 11).
    kind_info = request.get("kind")
    if not isinstance(kind_info, dict):
        raise AdmissionError("request.kind must be an object with a kind")
    kind = kind_info.get("kind")
    if not isinstance(kind, str) or not kind:
        raise AdmissionError("request.kind.kind must be a non-empty string")
    operation = request.get("operation")
    if not isinstance(operation, str) or not operation:
        raise AdmissionError("request.operation must be a non-empty string")
    return request_from_dict(request)


def request_from_dict(request: Mapping[str, Any]) -> AdmissionRequest:
    uid = str(request.get("uid", ""))
    operation = _str(request.get("operation"), "request.operation") or ""
    kind_info = request.get("kind")
    kind = ""
    if isinstance(kind_info, dict):
        kind = _str(kind_info.get("kind"), "request.kind.kind") or ""
    sub_resource = _str(request.get("subResource"), "request.subResource")
    obj = request.get("object")
    old = request.get("oldObject")
    if operation in ("CREATE", "UPDATE") and not isinstance(obj, dict):
        raise AdmissionError(f"request.object is missing for {operation}")
    name = _str(request.get("name"), "request.name")
    if not name and isinstance(obj, dict):
        meta = obj.get("metadata")
        if isinstance(meta, dict):
            name = _str(meta.get("name"), "object.metadata.name") or _str(
                meta.get("generateName"), "object.metadata.generateName"
            )
    user_info = request.get("userInfo")
    user = ""
    if isinstance(user_info, dict):
        user = _str(user_info.get("username"), "request.userInfo.username") or ""
    images: tuple[str, ...] = ()
    glass: str | None = None
    if operation in ("CREATE", "UPDATE") and isinstance(obj, dict) and kind in POD_BEARING_KINDS:
        images = object_images(kind, obj)
        glass = break_glass_reason(kind, obj)
        if operation == "UPDATE" and isinstance(old, dict):
            before = set(object_images(kind, old))
            images = tuple(image for image in images if image not in before)
    return AdmissionRequest(
        uid=uid,
        kind=kind,
        namespace=_str(request.get("namespace"), "request.namespace") or None,
        name=name,
        operation=operation,
        sub_resource=sub_resource,
        user=user,
        dry_run=request.get("dryRun") is True,
        images=images,
        break_glass_reason=glass,
        obj=obj if isinstance(obj, dict) else None,
    )


def pod_template(kind: str, obj: Mapping[str, Any]) -> Mapping[str, Any] | None:
    """The object holding ``metadata`` + ``spec`` of the pod (the Pod itself or its template)."""
    if kind in ("Pod", "EphemeralContainers"):
        return obj
    path = _TEMPLATE_PATHS.get(kind)
    if path is None:
        return None
    node: Any = obj
    walked = "object"
    for key in path:
        walked += f".{key}"
        if node is None:
            return None
        if not isinstance(node, dict):
            raise AdmissionError(f"{walked.rsplit('.', 1)[0]} must be an object")
        node = node.get(key)
    if node is None:
        return None
    if not isinstance(node, dict):
        raise AdmissionError(f"{walked} must be an object")
    return node


def object_images(kind: str, obj: Mapping[str, Any]) -> tuple[str, ...]:
    """Every image of every container kind, in order, without duplicates."""
    spec = pod_spec(kind, obj)
    if spec is None:
        return ()
    # dict.fromkeys: linear in the number of containers, first-seen order (a Pod may
    # carry tens of thousands of containers; a list membership test was quadratic)
    return tuple(dict.fromkeys(image for _name, _index, image in containers_of(spec)))


def pod_spec(kind: str, obj: Mapping[str, Any]) -> Mapping[str, Any] | None:
    template = pod_template(kind, obj)
    if template is None:
        return None
    spec: Any = template if kind == "EphemeralContainers" else template.get("spec")
    if spec is None:
        return None
    if not isinstance(spec, dict):
        raise AdmissionError(f"pod spec of {kind} must be an object")
    return spec


def pod_spec_pointer(kind: str) -> str | None:
    """JSON Pointer from the object to its pod spec (for /mutate patches)."""
    if kind == "Pod":
        return "/spec"
    if kind == "EphemeralContainers":
        return ""
    path = _TEMPLATE_PATHS.get(kind)
    return None if path is None else "/" + "/".join((*path, "spec"))


def containers_of(spec: Mapping[str, Any]) -> list[tuple[str, int, str]]:
    """(container field, index, image) for every container that names an image."""
    found: list[tuple[str, int, str]] = []
    for name in CONTAINER_FIELDS:
        containers = spec.get(name)
        if containers is None:
            continue
        if not isinstance(containers, list):
            raise AdmissionError(f"{name} must be a list")
        for index, container in enumerate(containers):
            if not isinstance(container, dict):
                raise AdmissionError(f"{name}[{index}] must be an object")
            image = container.get("image")
            if image is None:
                continue
            if not isinstance(image, str):
                raise AdmissionError(f"{name}[{index}].image must be a string")
            if not image.isascii():  # (the name is built only when it is needed)
                _text(image, f"{name}[{index}].image")
            found.append((name, index, image))
    return found


def break_glass_reason(kind: str, obj: Mapping[str, Any]) -> str | None:
    """The break-glass annotation of the pod (or pod template); empty reasons don't count."""
    template = pod_template(kind, obj)
    if template is None:
        return None
    meta = template.get("metadata")
    if not isinstance(meta, dict):
        return None
    annotations = meta.get("annotations")
    if not isinstance(annotations, dict):
        return None
    reason = annotations.get(BREAK_GLASS_ANNOTATION)
    if isinstance(reason, str):
        _text(reason, f"annotation {BREAK_GLASS_ANNOTATION}")
    if isinstance(reason, str) and reason.strip():
        return reason.strip()
    return None


def review_response(
    uid: str, *, allowed: bool, message: str = "", warnings: tuple[str, ...] = ()
) -> dict[str, Any]:
    """An AdmissionReview answer; a deny carries status 403 and the message (SPEC §3)."""
    response: dict[str, Any] = {"uid": uid, "allowed": allowed}
    if not allowed:
        response["status"] = {"code": 403, "reason": "Forbidden", "message": message}
    if warnings:
        response["warnings"] = list(warnings)
    return {"apiVersion": API_VERSION, "kind": "AdmissionReview", "response": response}


def _shown(value: Any) -> str:
    """A value for an error message: short strings quoted, anything else by type (repr of a
    value nested a thousand deep raises RecursionError, and of a huge one is huge)."""
    if value is None or isinstance(value, bool | int | float):
        return repr(value)
    if isinstance(value, str):
        return repr(value[:60] + ("…" if len(value) > 60 else ""))
    return f"a JSON {'object' if isinstance(value, dict) else 'array'}"


def _str(value: Any, what: str) -> str | None:
    if value is None:
        return None
    if not isinstance(value, str):
        raise AdmissionError(f"{what} must be a string")
    return _text(value, what)


def _text(value: str, what: str) -> str:
    """``value`` if it is valid Unicode text. JSON may escape a lone UTF-16 surrogate
    (``"\\ud800"``), which no UTF-8 audit line can hold: reject it here, as a 400."""
    if not value.isascii():
        try:
            value.encode("utf-8")
        except UnicodeEncodeError:
            raise AdmissionError(f"{what} contains a lone UTF-16 surrogate") from None
    return value
