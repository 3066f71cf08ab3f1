"""The chart's Kubernetes-native parts (policySource: crd) against a real API server,
and the CRD against the policy schema it is generated from."""

from __future__ import annotations

import subprocess
import sys
from typing import Any

import pytest
import yaml

from tests.kube_server import REPO, KubeServer
from tests.test_chart import CHART, NAMESPACE, RELEASE, helm, render
from webhook.kube.crd import crd_yaml

CRD_FILE = CHART / "crds" / "imagepolicies.yaml"
SA = f"system:serviceaccount:{NAMESPACE}:{RELEASE}"

POLICY = """\
apiVersion: sealgate.dev/v1alpha1
kind: ImagePolicy
metadata: {name: production}
spec:
  namespaces: {match: ["prod-*"]}
  mode: warn
  rules:
    - name: all
      images: ["**"]
      signatures: none
---
apiVersion: sealgate.dev/v1alpha1
kind: ImagePolicy
metadata: {name: staging}
spec:
  namespaces: {match: ["staging"]}
  rules:
    - {name: all, images: ["**"], signatures: none}
"""


@pytest.fixture(scope="module")
def chart() -> Any:
    with helm.Chart.load(CHART) as loaded:
        yield loaded


def test_chart_crd_is_what_the_schema_generates() -> None:
    """One model: regenerate with `sealgate policy crd > charts/sealgate/crds/imagepolicies.yaml`.
    """
    assert CRD_FILE.read_text(encoding="utf-8") == crd_yaml()
    printed = subprocess.run(
        [sys.executable, "-m", "webhook", "policy", "crd"],
        capture_output=True, text=True, timeout=60, check=True, cwd=REPO,
    ).stdout
    assert printed == crd_yaml()


def test_crd_spec_follows_the_schema() -> None:
    from webhook.kube.crd import spec_schema
    from webhook.schema import load_schema

    schema = load_schema("ImagePolicy")["properties"]["spec"]
    spec = spec_schema()
    # every field of the schema, required list and enum the same
    assert set(spec["properties"]) == set(schema["properties"])
    assert spec["required"] == schema["required"]
    assert spec["properties"]["mode"]["enum"] == ["enforce", "warn", "audit"]
    assert spec["properties"]["mode"]["type"] == "string"


def test_files_mode_has_no_rbac_and_no_token(chart: Any) -> None:
    result = render(chart, {"policySource": "files"})
    assert not result.all("ClusterRole") and not result.all("ImagePolicy")
    assert result.one("Deployment")["spec"]["template"]["spec"][
        "automountServiceAccountToken"] is False


def test_crd_mode_renders_policies_as_objects(chart: Any) -> None:
    assert render(chart, {}).env["SEALGATE_POLICY_SOURCE"] == "crd"  # the chart's default
    result = render(chart, {"policySource": "crd", "policies": {"p.yaml": POLICY}})
    objects = result.all("ImagePolicy")
    assert [o["metadata"]["name"] for o in objects] == ["production", "staging"]
    assert objects[0]["spec"]["mode"] == "warn"
    pod = result.one("Deployment")["spec"]["template"]["spec"]
    assert pod["automountServiceAccountToken"] is True
    env = {e["name"]: e.get("value") for e in pod["containers"][0]["env"]}
    assert env["SEALGATE_POLICY_SOURCE"] == "crd"
    hooks = result.one("ValidatingWebhookConfiguration")["webhooks"]
    policy_hook = next(h for h in hooks if h["name"] == "policies.sealgate.dev")
    assert policy_hook["clientConfig"]["service"]["path"] == "/validate-policy"
    assert policy_hook["rules"] == [{
        "apiGroups": ["sealgate.dev"], "apiVersions": ["v1alpha1"],
        "operations": ["CREATE", "UPDATE"], "resources": ["imagepolicies"], "scope": "Cluster"}]


def _can(kube: KubeServer, *args: str) -> bool:
    answer = kube.kubectl("auth", "can-i", f"--as={SA}", *args, check=False)
    return answer.stdout.strip() == "yes"


def test_rbac_grants_exactly_what_crd_mode_needs(chart: Any, kube: KubeServer) -> None:
    result = render(chart, {"policySource": "crd", "policies": {"p.yaml": POLICY}})
    kube.kubectl("apply", "-f", str(CRD_FILE))
    kube.kubectl("wait", "--for=condition=Established", "--timeout=60s",
                 "crd/imagepolicies.sealgate.dev")
    kube.apply({"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": NAMESPACE}})
    wanted = {"ServiceAccount", "ClusterRole", "ClusterRoleBinding", "ImagePolicy"}
    applied = kube.apply([o for o in result.objects if o["kind"] in wanted])
    assert "imagepolicy.sealgate.dev/production created" in applied
    assert "imagepolicy.sealgate.dev/staging created" in applied
    try:
        assert _can(kube, "watch", "imagepolicies.sealgate.dev")
        assert _can(kube, "list", "imagepolicies.sealgate.dev")
        assert _can(kube, "patch", "imagepolicies.sealgate.dev", "--subresource=status")
        assert not _can(kube, "update", "imagepolicies.sealgate.dev")  # the spec is not ours
        assert not _can(kube, "delete", "imagepolicies.sealgate.dev")
        assert not _can(kube, "create", "pods", "-n", "default")
        assert not _can(kube, "get", "secrets", "-n", "default")
        assert not _can(kube, "update", "secrets", "-n", NAMESPACE)
        assert not _can(kube, "list", "serviceaccounts", "-A")
        listing = yaml.safe_load(kube.kubectl("get", "imagepolicies", f"--as={SA}", "-o",
                                              "yaml").stdout)
        assert {item["metadata"]["name"] for item in listing["items"]} >= {"production",
                                                                           "staging"}
    finally:
        kube.kubectl("delete", "imagepolicy", "production", "staging", "--ignore-not-found",
                     check=False)


def test_rbac_reads_secrets_only_with_pod_pull_secrets(chart: Any, kube: KubeServer) -> None:
    """Same release upgraded with podPullSecrets on: get secrets and serviceaccounts (by
    name); still no listing, no changing secrets, no pods. Then off again: no secrets."""
    kube.apply({"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": NAMESPACE}})
    wanted = {"ServiceAccount", "ClusterRole", "ClusterRoleBinding"}

    def install(values: dict[str, Any]) -> None:
        result = render(chart, values)
        kube.apply([o for o in result.objects if o["kind"] in wanted])

    install({"policySource": "crd", "podPullSecrets": {"enabled": True}})
    assert _can(kube, "get", "secrets", "-n", "team-a")
    assert _can(kube, "get", "serviceaccounts", "-n", "team-a")
    assert _can(kube, "watch", "imagepolicies.sealgate.dev")
    assert not _can(kube, "list", "secrets", "-n", "team-a")
    assert not _can(kube, "watch", "secrets", "-n", "team-a")
    assert not _can(kube, "update", "secrets", "-n", "team-a")
    assert not _can(kube, "create", "secrets", "-n", "team-a")
    assert not _can(kube, "delete", "secrets", "-n", "team-a")
    assert not _can(kube, "create", "pods", "-n", "team-a")

    install({"policySource": "files", "podPullSecrets": {"enabled": True}})
    assert _can(kube, "get", "secrets", "-n", "team-a")
    assert not _can(kube, "watch", "imagepolicies.sealgate.dev")

    install({"policySource": "crd", "podPullSecrets": {"enabled": False}})
    assert not _can(kube, "get", "secrets", "-n", "team-a")
    assert not _can(kube, "get", "serviceaccounts", "-n", "team-a")
    assert _can(kube, "watch", "imagepolicies.sealgate.dev")


def test_pull_secrets_setting_reaches_the_pod(chart: Any) -> None:
    result = render(chart, {"policySource": "files", "podPullSecrets": {"enabled": True}})
    pod = result.one("Deployment")["spec"]["template"]["spec"]
    env = {e["name"]: e.get("value") for e in pod["containers"][0]["env"]}
    assert env["SEALGATE_POD_PULL_SECRETS"] == "true"
    assert pod["automountServiceAccountToken"] is True
    rules = result.one("ClusterRole")["rules"]
    assert rules == [{"apiGroups": [""], "resources": ["secrets", "serviceaccounts"],
                      "verbs": ["get"]}]
