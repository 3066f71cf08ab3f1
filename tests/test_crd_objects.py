"""ImagePolicy objects as the cluster stores them: validation (webhook.kube.objects),
/validate-policy in process, and the tools reading `kubectl get imagepolicies -o yaml`."""

from __future__ import annotations

import json
import subprocess
import sys
import textwrap
import uuid
from pathlib import Path
from typing import Any

import httpx
import pytest
import yaml
from cryptography.hazmat.primitives.asymmetric import ec

from tests.signing import public_pem
from webhook.app import create_app
from webhook.kube.objects import check_object
from webhook.policy import load_policy_dir
from webhook.settings import Settings, SettingsError

PEM = public_pem(ec.generate_private_key(ec.SECP256R1())).decode()


def _object(name: str = "prod", **spec: Any) -> dict[str, Any]:
    body: dict[str, Any] = {
        "namespaces": {"match": ["prod-*"]},
        "rules": [{"name": "ours", "images": ["registry.example.com/**"], "signatures": {
            "authorities": [{"name": "release", "key": {"publicKey": PEM}}]}}],
    }
    body.update(spec)
    return {
        "apiVersion": "sealgate.dev/v1alpha1", "kind": "ImagePolicy",
        "metadata": {"name": name, "uid": str(uuid.uuid4()), "generation": 4,
                     "resourceVersion": "812", "creationTimestamp": "2026-11-30T10:00:00Z",
                     "managedFields": [{"manager": "kubectl"}],
                     "annotations": {"kubectl.kubernetes.io/last-applied-configuration": "{}"}},
        "spec": body,
        "status": {"observedGeneration": 3, "conditions": []},
    }


def test_a_stored_object_is_a_policy() -> None:
    checked = check_object(_object())
    assert checked.problems == ()
    assert checked.policy is not None and checked.policy.name == "prod"
    assert checked.generation == 4
    assert checked.policy.rules[0].signatures is not None


def test_every_problem_without_file_positions() -> None:
    obj = _object()
    obj["spec"]["rules"][0]["signatures"]["authorities"][0]["key"]["publicKey"] = "nope"
    obj["spec"]["rules"].append({"name": "second", "images": ["x/**"], "signatures": {
        "authorities": [{"name": "k", "key": {"file": "keys/k.pub"}}]}})
    checked = check_object(obj)
    assert checked.policy is None
    assert any(p.startswith("spec.rules[1].signatures.authorities[0].key.file: a cluster "
                            "ImagePolicy cannot name a file") for p in checked.problems)
    assert any("authority 'release': bad public key PEM" in p for p in checked.problems)
    assert not any("imagepolicy/prod:" in p for p in checked.problems)
    assert "spec.mode must be one of enforce, warn, audit" in check_object(
        _object(mode="loud")).problems[0]


def test_missing_name_is_a_problem() -> None:
    obj = _object()
    del obj["metadata"]["name"]
    assert check_object(obj).problems == ("metadata.name: is required",)


def test_policy_source_setting_is_checked() -> None:
    assert Settings.from_env({"SEALGATE_POLICY_SOURCE": "crd"}).policy_source == "crd"
    with pytest.raises(SettingsError, match="must be one of files, crd, both"):
        Settings.from_env({"SEALGATE_POLICY_SOURCE": "etcd"})
    assert Settings.from_env({"SEALGATE_POD_PULL_SECRETS": "true"}).pod_pull_secrets is True


async def test_validate_policy_endpoint(tmp_path: Path) -> None:
    (tmp_path / "policies").mkdir()
    app = create_app(Settings(policies=tmp_path / "policies", audit_log=tmp_path / "a.log"))

    def review(obj: dict[str, Any], operation: str = "CREATE") -> dict[str, Any]:
        return {"apiVersion": "admission.k8s.io/v1", "kind": "AdmissionReview", "request": {
            "uid": "u-1", "operation": operation, "object": obj,
            "kind": {"group": "sealgate.dev", "version": "v1alpha1", "kind": "ImagePolicy"}}}

    async with app.router.lifespan_context(app):
        transport = httpx.ASGITransport(app=app)
        async with httpx.AsyncClient(transport=transport, base_url="https://s") as client:
            ok = (await client.post("/validate-policy", json=review(_object()))).json()
            bad = (await client.post("/validate-policy",
                                      json=review(_object(onError="maybe")))).json()
            deleted = (await client.post("/validate-policy",
                                          json=review(_object(onError="maybe"), "DELETE"))).json()
            malformed = await client.post("/validate-policy", content=b"[1]")
    assert ok["response"] == {"uid": "u-1", "allowed": True}
    assert bad["response"]["allowed"] is False
    assert bad["response"]["status"]["code"] == 422
    assert "- spec.onError must be one of deny, warn, allow" in bad["response"]["status"][
        "message"]
    assert deleted["response"]["allowed"] is True
    assert malformed.status_code == 400


KUBECTL_LIST = """\
apiVersion: v1
items:
- apiVersion: sealgate.dev/v1alpha1
  kind: ImagePolicy
  metadata:
    annotations:
      kubectl.kubernetes.io/last-applied-configuration: |
        {"apiVersion":"sealgate.dev/v1alpha1","kind":"ImagePolicy"}
    creationTimestamp: "2026-11-30T19:19:42Z"
    generation: 1
    name: production
    resourceVersion: "245"
    uid: 0d8b1c3e-52a4-4d0f-9a51-3a3b4c5d6e7f
  spec:
    mode: warn
    namespaces:
      match:
      - prod-*
    rules:
    - images:
      - docker.io/library/*
      name: public-images
      signatures: none
  status:
    conditions:
    - lastTransitionTime: "2026-11-30T19:19:43Z"
      message: in force
      observedGeneration: 1
      reason: Valid
      status: "True"
      type: Ready
    observedGeneration: 1
kind: List
metadata:
  resourceVersion: ""
"""


def test_tools_read_the_list_kubectl_prints(tmp_path: Path) -> None:
    policies = tmp_path / "cluster"
    policies.mkdir()
    (policies / "imagepolicies.yaml").write_text(KUBECTL_LIST)
    (policies / "production.test.yaml").write_text(textwrap.dedent("""\
        apiVersion: sealgate.dev/v1alpha1
        kind: ImagePolicyTest
        metadata: {name: public images warn}
        cases:
          - name: unsigned nginx is allowed with a warning
            namespace: prod-web
            image: docker.io/library/nginx:1.27
            expect:
              decision: allow
    """))
    assert [p.name for p in load_policy_dir(policies).policies] == ["production"]

    def sealgate(*args: str) -> subprocess.CompletedProcess[str]:
        return subprocess.run([sys.executable, "-m", "webhook", *args], capture_output=True,
                              text=True, timeout=60, check=False)

    lint = sealgate("policy", "lint", str(policies))
    assert lint.returncode == 0, lint.stdout + lint.stderr
    tested = sealgate("policy", "test", str(policies))
    assert tested.returncode == 0, tested.stdout + tested.stderr
    manifest = tmp_path / "pod.yaml"
    manifest.write_text(yaml.safe_dump({
        "apiVersion": "v1", "kind": "Pod", "metadata": {"name": "web", "namespace": "prod-web"},
        "spec": {"containers": [{"name": "web", "image": "nginx:1.27"}]}}))
    checked = sealgate("check", "-f", str(manifest), "--policies", str(policies), "--offline",
                       "-o", "json")
    assert "production" in checked.stdout, checked.stdout + checked.stderr
    assert json.loads(checked.stdout)
