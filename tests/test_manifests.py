"""Manifests (multi-doc YAML/JSON, List kinds) -> the admission requests /validate would get."""

from __future__ import annotations

import json

import pytest

from webhook.admission import request_from_dict
from webhook.manifests import CHECK_USER, ManifestError, admission_request, load_manifests

MULTI = """\
apiVersion: apps/v1
kind: Deployment
metadata:
  name: web
  namespace: prod
spec:
  template:
    metadata:
      annotations: {sealgate.dev/break-glass: "INC-1"}
    spec:
      initContainers: [{name: init, image: busybox}]
      containers:
        - {name: app, image: "registry.example.com/team/api:v1"}
        - {name: side, image: busybox}
---
# a comment-only document and an empty one are skipped
---
apiVersion: v1
kind: List
items:
  - apiVersion: v1
    kind: Pod
    metadata: {name: one}
    spec: {containers: [{name: a, image: nginx}]}
  - apiVersion: v1
    kind: ConfigMap
    metadata: {name: config}
    data: {a: b}
  - apiVersion: batch/v1
    kind: CronJob
    metadata: {name: nightly, namespace: jobs}
    spec:
      jobTemplate:
        spec:
          template:
            spec: {containers: [{name: j, image: "alpine:3"}]}
"""


def test_multi_document_and_list_items_with_lines() -> None:
    objects = load_manifests(MULTI, "all.yaml")
    assert [(o.kind, o.name, o.namespace, o.line) for o in objects] == [
        ("Deployment", "web", "prod", 1),
        ("Pod", "one", None, 21),
        ("ConfigMap", "config", None, 25),
        ("CronJob", "nightly", "jobs", 29),
    ]
    assert objects[0].location == "all.yaml:1"
    assert objects[0].display_name == "Deployment/web"


def test_requests_match_the_webhooks_extraction() -> None:
    objects = load_manifests(MULTI, "all.yaml")
    deployment = admission_request(objects[0], default_namespace="ignored", index=1)
    assert deployment.namespace == "prod"  # metadata.namespace wins over -n
    assert deployment.operation == "CREATE" and deployment.dry_run
    assert deployment.user == CHECK_USER
    assert deployment.images == ("busybox", "registry.example.com/team/api:v1")
    assert deployment.break_glass_reason == "INC-1"
    # identical to what /validate extracts from the same object
    direct = request_from_dict({
        "uid": "x", "kind": {"kind": "Deployment"}, "namespace": "prod",
        "operation": "CREATE", "object": objects[0].body,
    })
    assert direct.images == deployment.images
    pod = admission_request(objects[1], default_namespace="dev", index=2)
    assert pod.namespace == "dev" and pod.images == ("nginx",) and pod.uid == "sealgate-check-2"
    assert admission_request(objects[1], default_namespace=None, index=2).namespace == "default"
    config = admission_request(objects[2], default_namespace=None, index=3)
    assert not config.pod_bearing and config.images == ()
    cron = admission_request(objects[3], default_namespace=None, index=4)
    assert cron.images == ("alpine:3",) and cron.namespace == "jobs"


def test_json_list_as_kubectl_prints_it() -> None:
    # kubectl get -o json indents with spaces; a tab-indented JSON is still read (PyYAML
    # refuses tabs)
    body = {"apiVersion": "v1", "kind": "List", "items": [
        {"apiVersion": "v1", "kind": "Pod", "metadata": {"name": "p", "namespace": "n"},
         "spec": {"containers": [{"name": "c", "image": "nginx"}]}},
    ]}
    for text in (json.dumps(body, indent=4), json.dumps(body, indent="\t")):
        [pod] = load_manifests(text, "-")
        assert (pod.kind, pod.name, pod.namespace) == ("Pod", "p", "n")


def test_pod_list_kind_is_flattened() -> None:
    text = "kind: PodList\napiVersion: v1\nitems:\n- kind: Pod\n  metadata: {name: a}\n"
    assert [o.name for o in load_manifests(text, "f")] == ["a"]


@pytest.mark.parametrize(("text", "expected"), [
    ("kind: Pod\nmetadata: {name: [unclosed\n", "bad.yaml:3: invalid YAML"),
    ("apiVersion: v1\nkind: Pod\n---\n- just\n- a list\n", "bad.yaml:4: a manifest document"),
    ("apiVersion: v1\nmetadata: {name: x}\n", "bad.yaml:1: object has no kind"),
    ("kind: Pod\nmetadata: 3\n", "bad.yaml:1: Pod: metadata must be a mapping"),
])
def test_bad_manifests_name_file_and_line(text: str, expected: str) -> None:
    with pytest.raises(ManifestError) as info:
        load_manifests(text, "bad.yaml")
    assert str(info.value).startswith(expected)


def test_malformed_pod_spec_names_the_object() -> None:
    [obj] = load_manifests("kind: Pod\nmetadata: {name: p}\nspec:\n  containers: 3\n", "p.yaml")
    with pytest.raises(ManifestError, match=r"^p.yaml:1: Pod/p: containers must be a list"):
        admission_request(obj, default_namespace=None, index=1)
