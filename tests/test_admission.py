"""AdmissionReview parsing and image extraction for every pod-bearing kind (SPEC §3, §8)."""

from __future__ import annotations

import copy
import json
from typing import Any

import pytest

from webhook.admission import object_images, parse_review, review_response
from webhook.errors import AdmissionError

POD_SPEC = {
    "initContainers": [{"name": "init", "image": "busybox:1"}],
    "containers": [{"name": "app", "image": "nginx:1.27"}, {"name": "side", "image": "nginx:1.27"}],
    "ephemeralContainers": [{"name": "debug", "image": "ghcr.io/acme/debug:2"}],
}
EXPECTED = ("busybox:1", "nginx:1.27", "ghcr.io/acme/debug:2")
TEMPLATE = {"metadata": {"annotations": {"sealgate.dev/break-glass": "INC-1"}}, "spec": POD_SPEC}


def workload(kind: str) -> dict[str, Any]:
    if kind == "Pod":
        return {"kind": "Pod", "metadata": {"name": "p", "annotations":
                                            {"sealgate.dev/break-glass": "INC-1"}},
                "spec": POD_SPEC}
    if kind == "CronJob":
        return {"kind": kind, "metadata": {"name": "c"},
                "spec": {"jobTemplate": {"spec": {"template": TEMPLATE}}}}
    return {"kind": kind, "metadata": {"name": "w"}, "spec": {"template": TEMPLATE}}


def review(obj: dict[str, Any] | None, *, kind: str | None = None, operation: str = "CREATE",
           old: dict[str, Any] | None = None, **extra: Any) -> bytes:
    request: dict[str, Any] = {
        "uid": "705ab4f5-6393-11e8-b7cc-42010a800002",
        "kind": {"group": "", "version": "v1", "kind": kind or (obj or {}).get("kind", "Pod")},
        "namespace": "prod-api",
        "operation": operation,
        "userInfo": {"username": "alice"},
        "object": obj,
        **extra,
    }
    if old is not None:
        request["oldObject"] = old
    return json.dumps({"apiVersion": "admission.k8s.io/v1", "kind": "AdmissionReview",
                       "request": request}).encode()


@pytest.mark.parametrize(
    "kind",
    ["Pod", "Deployment", "ReplicaSet", "StatefulSet", "DaemonSet", "Job", "CronJob",
     "ReplicationController"],
)
def test_every_pod_bearing_kind(kind: str) -> None:
    request = parse_review(review(workload(kind)))
    assert request.images == EXPECTED
    assert request.break_glass_reason == "INC-1"
    assert request.user == "alice" and request.namespace == "prod-api"
    assert request.pod_bearing


def test_other_kinds_have_no_images() -> None:
    request = parse_review(review({"kind": "ConfigMap", "data": {"image": "x"}}))
    assert request.images == () and not request.pod_bearing


def test_ephemeral_containers_subresource() -> None:
    pod = workload("Pod")
    request = parse_review(review(pod, subResource="ephemeralcontainers"))
    assert "ghcr.io/acme/debug:2" in request.images
    legacy = {"kind": "EphemeralContainers", "metadata": {"name": "p"},
              "ephemeralContainers": [{"name": "d", "image": "ghcr.io/acme/debug:3"}]}
    request = parse_review(review(legacy, kind="EphemeralContainers",
                                  subResource="ephemeralcontainers"))
    assert request.images == ("ghcr.io/acme/debug:3",)


def test_update_checks_only_changed_images() -> None:
    old = workload("Deployment")
    new = copy.deepcopy(old)
    new["spec"]["template"]["spec"]["containers"][0]["image"] = "nginx:1.28"
    request = parse_review(review(new, operation="UPDATE", old=old))
    assert request.images == ("nginx:1.28",)
    # without oldObject, everything is checked
    assert parse_review(review(new, operation="UPDATE")).images[1] == "nginx:1.28"


def test_delete_needs_no_object() -> None:
    request = parse_review(review(None, kind="Pod", operation="DELETE"))
    assert request.images == () and request.operation == "DELETE"


def test_dry_run_flag() -> None:
    assert parse_review(review(workload("Pod"), dryRun=True)).dry_run
    assert not parse_review(review(workload("Pod"))).dry_run


def test_empty_break_glass_reason_does_not_count() -> None:
    pod = workload("Pod")
    pod["metadata"]["annotations"]["sealgate.dev/break-glass"] = "   "
    assert parse_review(review(pod)).break_glass_reason is None


@pytest.mark.parametrize(
    ("body", "fragment"),
    [
        (b"not json", "not JSON"),
        (b"[" * 100_000 + b"]" * 100_000, "nested too deeply"),
        (b"[]", "not an AdmissionReview object"),
        (b'{"kind": "Pod"}', "kind must be AdmissionReview"),
        (b'{"kind": "AdmissionReview", "apiVersion": "admission.k8s.io/v1beta1"}',
         "apiVersion must be admission.k8s.io/v1"),
        (b'{"kind": "AdmissionReview", "apiVersion": "admission.k8s.io/v1"}', "has no request"),
        (b'{"kind": "AdmissionReview", "apiVersion": "admission.k8s.io/v1", "request": {}}',
         "request.uid is missing"),
        (review(None, kind="Pod"), "request.object is missing for CREATE"),
        (review({"kind": "Pod", "spec": {"containers": {"a": 1}}}), "containers must be a list"),
        (review({"kind": "Pod", "spec": {"containers": [{"image": 5}]}}),
         "containers[0].image must be a string"),
        (review({"kind": "Deployment", "spec": {"template": []}}),
         "object.spec.template must be an object"),
    ],
)
def test_malformed_reviews(body: bytes, fragment: str) -> None:
    with pytest.raises(AdmissionError) as info:
        parse_review(body)
    assert fragment in str(info.value)


def test_containers_without_image_are_skipped() -> None:
    assert object_images("Pod", {"spec": {"containers": [{"name": "x"}]}}) == ()


def test_response_shapes() -> None:
    deny = review_response("u1", allowed=False, message="nope", warnings=("w",))
    assert deny == {
        "apiVersion": "admission.k8s.io/v1", "kind": "AdmissionReview",
        "response": {"uid": "u1", "allowed": False, "warnings": ["w"],
                     "status": {"code": 403, "reason": "Forbidden", "message": "nope"}},
    }
    allow = review_response("u2", allowed=True)
    assert allow["response"] == {"uid": "u2", "allowed": True}
