"""sealgate against a real Kubernetes API server (tests/kube_server.py).

The webhook runs as ``sealgate serve --policy-source both`` over HTTPS; the API
server calls it through real ValidatingWebhookConfigurations (``clientConfig.url``
on loopback, our CA as ``caBundle``), and ``kubectl apply --dry-run=server``
shows what a user sees. ImagePolicy objects are watched through lightkube.
"""

from __future__ import annotations

import base64
import json
import os
import ssl
import subprocess
import sys
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
import yaml
from cryptography.hazmat.primitives.asymmetric import ec

from tests.kube_server import REPO, KubeServer
from tests.registry_server import RegistryServer, push_cosign_signature, push_image
from tests.served import wait_for_readyz
from tests.signing import cosign_layer, public_pem
from tests.system import free_port
from webhook.certs import generate_certificates

CRD_FILE = REPO / "charts" / "sealgate" / "crds" / "imagepolicies.yaml"
LABEL = {"sealgate-test": "on"}


@dataclass
class Webhook:
    url: str
    ca: Path
    ca_bundle: str
    key: ec.EllipticCurvePrivateKey
    process: subprocess.Popen[bytes]
    log: Path

    def log_text(self) -> str:
        return self.log.read_text(errors="replace")


def _policy(name: str, namespaces: list[str], key: Any, images: str, *,
            mode: str = "enforce") -> dict[str, Any]:
    return {
        "apiVersion": "sealgate.dev/v1alpha1", "kind": "ImagePolicy",
        "metadata": {"name": name},
        "spec": {
            "namespaces": {"match": namespaces}, "mode": mode,
            "rules": [{"name": "local", "images": [images], "signatures": {"authorities": [
                {"name": "ci-key", "key": {"tlog": "off",
                                           "publicKey": public_pem(key).decode()}}]}}],
        },
    }


def _deployment(namespace: str, image: str) -> dict[str, Any]:
    return {
        "apiVersion": "apps/v1", "kind": "Deployment",
        "metadata": {"name": "web", "namespace": namespace},
        "spec": {"selector": {"matchLabels": {"app": "web"}}, "template": {
            "metadata": {"labels": {"app": "web"}},
            "spec": {"containers": [{"name": "web", "image": image}]}}},
    }


def _dry_run(kube: KubeServer, obj: dict[str, Any]) -> subprocess.CompletedProcess[str]:
    return kube.kubectl("apply", "--dry-run=server", "-f", "-", input=yaml.safe_dump(obj),
                        check=False)


def _ready(kube: KubeServer, name: str) -> tuple[str, str, int]:
    """(Ready status, message, observedGeneration) of an ImagePolicy, as stored."""
    obj = json.loads(kube.kubectl("get", "imagepolicy", name, "-o", "json").stdout)
    status = obj.get("status") or {}
    for condition in status.get("conditions") or []:
        if condition["type"] == "Ready":
            return condition["status"], condition.get("message", ""), status.get(
                "observedGeneration", -1)
    return "", "", -1


def _wait(predicate: Any, timeout: float, what: str) -> float:
    started = time.monotonic()
    while not predicate():
        if time.monotonic() - started > timeout:
            pytest.fail(f"{what} not within {timeout} s")
        time.sleep(0.05)
    return time.monotonic() - started


@pytest.fixture(scope="module")
def crd(kube: KubeServer) -> KubeServer:
    kube.kubectl("apply", "-f", str(CRD_FILE))
    kube.kubectl("wait", "--for=condition=Established", "--timeout=60s",
                 "crd/imagepolicies.sealgate.dev")
    for namespace in ("team-crd", "team-warn", "team-files", "team-edit"):
        kube.apply({"apiVersion": "v1", "kind": "Namespace",
                    "metadata": {"name": namespace, "labels": LABEL}})
    return kube


@pytest.fixture(scope="module")
def webhook(crd: KubeServer, registry: RegistryServer,
            tmp_path_factory: pytest.TempPathFactory) -> Iterator[Webhook]:
    kube = crd
    root = tmp_path_factory.mktemp("kube-webhook")
    key = ec.generate_private_key(ec.SECP256R1())
    certs = root / "certs"
    generate_certificates(certs, service="sealgate", namespace="sealgate")
    policies = root / "policies"
    policies.mkdir()
    (policies / "files.yaml").write_text(yaml.safe_dump(
        _policy("from-file", ["team-files"], key, f"{registry.host}/kube/**")))
    port = free_port()
    log = root / "serve.log"
    log_handle = open(log, "wb")  # noqa: SIM115 - closed below
    env = {**os.environ, "SEALGATE_HOST": "127.0.0.1", "SEALGATE_PORT": str(port),
           "SEALGATE_CERT": str(certs / "tls.crt"), "SEALGATE_KEY": str(certs / "tls.key"),
           "SEALGATE_AUDIT_LOG": str(root / "audit.log"),
           "SEALGATE_INSECURE_REGISTRIES": registry.host}
    process = subprocess.Popen(
        [sys.executable, "-m", "webhook", "serve", "--policies", str(policies),
         "--policy-source", "both", "--kubeconfig", str(kube.kubeconfig)],
        env=env, stdout=log_handle, stderr=subprocess.STDOUT,
    )
    url = f"https://127.0.0.1:{port}"
    trust = ssl.create_default_context(cafile=certs / "ca.crt")
    ca_bundle = base64.b64encode((certs / "ca.crt").read_bytes()).decode()
    try:
        wait_for_readyz(url, trust, process, lambda: log.read_text(), timeout=30)
        kube.apply({
            "apiVersion": "admissionregistration.k8s.io/v1",
            "kind": "ValidatingWebhookConfiguration",
            "metadata": {"name": "sealgate"},
            "webhooks": [{
                "name": "images.sealgate.dev",
                "clientConfig": {"url": f"{url}/validate", "caBundle": ca_bundle},
                "rules": [{"apiGroups": ["", "apps"], "apiVersions": ["v1"],
                           "operations": ["CREATE", "UPDATE"],
                           "resources": ["pods", "deployments"]}],
                "namespaceSelector": {"matchLabels": LABEL},
                "failurePolicy": "Fail", "sideEffects": "None",
                "admissionReviewVersions": ["v1"], "timeoutSeconds": 10,
            }],
        })
        yield Webhook(url, certs / "ca.crt", ca_bundle, key, process, log)
    finally:
        kube.kubectl("delete", "validatingwebhookconfiguration", "sealgate",
                     "--ignore-not-found", check=False)
        process.terminate()
        try:
            process.wait(timeout=10)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait()
        log_handle.close()


@pytest.fixture
def policy_webhook(webhook: Webhook, kube: KubeServer) -> Iterator[None]:
    """/validate-policy registered for imagepolicies, as the chart does."""
    kube.apply({
        "apiVersion": "admissionregistration.k8s.io/v1",
        "kind": "ValidatingWebhookConfiguration",
        "metadata": {"name": "sealgate-policies"},
        "webhooks": [{
            "name": "policies.sealgate.dev",
            "clientConfig": {"url": f"{webhook.url}/validate-policy",
                             "caBundle": webhook.ca_bundle},
            "rules": [{"apiGroups": ["sealgate.dev"], "apiVersions": ["v1alpha1"],
                       "operations": ["CREATE", "UPDATE"], "resources": ["imagepolicies"],
                       "scope": "Cluster"}],
            "failurePolicy": "Fail", "sideEffects": "None",
            "admissionReviewVersions": ["v1"], "timeoutSeconds": 10,
        }],
    })
    try:
        yield
    finally:
        kube.kubectl("delete", "validatingwebhookconfiguration", "sealgate-policies",
                     "--ignore-not-found", check=False)


@pytest.fixture(scope="module")
def images(registry: RegistryServer, webhook: Webhook) -> dict[str, str]:
    signed, _ = push_image(registry.url, "kube/app", "signed")
    push_cosign_signature(registry.url, "kube/app", signed,
                          [cosign_layer(webhook.key, f"{registry.host}/kube/app", signed)])
    push_image(registry.url, "kube/app", "unsigned")
    return {"signed": f"{registry.host}/kube/app:signed",
            "unsigned": f"{registry.host}/kube/app:unsigned"}


# --------------------------------------------------------------------------- tests


def test_crd_policy_denies_with_reason_and_allows_signed(
    kube: KubeServer, webhook: Webhook, images: dict[str, str], registry: RegistryServer
) -> None:
    created = kube.apply(_policy("team-crd", ["team-crd"], webhook.key,
                                 f"{registry.host}/kube/**"))
    assert "imagepolicy.sealgate.dev/team-crd created" in created
    _wait(lambda: _ready(kube, "team-crd")[0] == "True", 5, "Ready=True")
    assert _ready(kube, "team-crd") == ("True", "in force", 1)
    denied = _dry_run(kube, _deployment("team-crd", images["unsigned"]))
    assert denied.returncode != 0
    assert 'admission webhook "images.sealgate.dev" denied the request' in denied.stderr
    assert f"{registry.host}/kube/app@sha256:" in denied.stderr
    assert "(policy team-crd, rule local)" in denied.stderr
    allowed = _dry_run(kube, _deployment("team-crd", images["signed"]))
    assert allowed.returncode == 0, allowed.stderr
    assert "deployment.apps/web created (server dry run)" in allowed.stdout
    table = kube.kubectl("get", "imagepolicies").stdout.splitlines()
    assert table[0].split() == ["NAME", "MODE", "READY", "AGE"]
    assert any(line.split()[:3] == ["team-crd", "enforce", "True"] for line in table)


def test_warn_mode_policy_prints_warning_lines(
    kube: KubeServer, webhook: Webhook, images: dict[str, str], registry: RegistryServer
) -> None:
    kube.apply(_policy("team-warn", ["team-warn"], webhook.key, f"{registry.host}/kube/**",
                       mode="warn"))
    _wait(lambda: _ready(kube, "team-warn")[0] == "True", 5, "Ready=True")
    answer = _dry_run(kube, _deployment("team-warn", images["unsigned"]))
    assert answer.returncode == 0, answer.stderr
    assert "deployment.apps/web created (server dry run)" in answer.stdout
    warnings = [line for line in answer.stderr.splitlines() if line.startswith("Warning: ")]
    assert warnings and f"{registry.host}/kube/app@sha256:" in warnings[0]


def test_file_policy_in_force_beside_objects_and_name_clash_is_an_error(
    kube: KubeServer, webhook: Webhook, images: dict[str, str], registry: RegistryServer
) -> None:
    denied = _dry_run(kube, _deployment("team-files", images["unsigned"]))
    assert "(policy from-file, rule local)" in denied.stderr
    # an object named like a file policy is not in force; the file's policy stays
    kube.apply(_policy("from-file", ["team-files"], webhook.key, "nothing/**", mode="audit"))
    _wait(lambda: _ready(kube, "from-file")[0] == "False", 5, "Ready=False")
    assert "also defined by a policy file" in _ready(kube, "from-file")[1]
    denied = _dry_run(kube, _deployment("team-files", images["unsigned"]))
    assert "(policy from-file, rule local)" in denied.stderr
    kube.kubectl("delete", "imagepolicy", "from-file")


def test_edit_in_force_within_2s_and_broken_edit_keeps_last_good(
    kube: KubeServer, webhook: Webhook, images: dict[str, str], registry: RegistryServer
) -> None:
    kube.apply(_policy("team-edit", ["team-edit"], webhook.key, f"{registry.host}/kube/**"))
    _wait(lambda: _ready(kube, "team-edit")[0] == "True", 5, "Ready=True")
    assert _dry_run(kube, _deployment("team-edit", images["signed"])).returncode == 0
    other = ec.generate_private_key(ec.SECP256R1())
    kube.apply(_policy("team-edit", ["team-edit"], other, f"{registry.host}/kube/**"))
    took = _wait(lambda: _dry_run(kube, _deployment("team-edit", images["signed"])).returncode
                 != 0, 2, "the edited policy in force")
    assert took < 2
    assert _ready(kube, "team-edit")[2] == 2
    # a broken edit (stored: no /validate-policy registered here) changes nothing in force
    broken = _policy("team-edit", ["team-edit"], webhook.key, f"{registry.host}/kube/**")
    broken["spec"]["rules"][0]["signatures"]["authorities"][0]["key"]["publicKey"] = "nope"
    kube.apply(broken)
    _wait(lambda: _ready(kube, "team-edit")[0] == "False", 5, "Ready=False")
    _status, message, generation = _ready(kube, "team-edit")
    assert generation == 3
    assert "bad public key PEM" in message
    # still the last good version (key `other`): the signed image stays denied
    assert _dry_run(kube, _deployment("team-edit", images["signed"])).returncode != 0
    kube.kubectl("delete", "imagepolicy", "team-edit")
    _wait(lambda: _dry_run(kube, _deployment("team-edit", images["unsigned"])).returncode == 0,
          2, "the deleted policy out of force")


def test_broken_policy_refused_at_apply_with_every_problem(
    kube: KubeServer, webhook: Webhook, policy_webhook: None
) -> None:
    broken = _policy("broken", ["team-x"], webhook.key, "r.example/**")
    authority = broken["spec"]["rules"][0]["signatures"]["authorities"][0]
    authority["key"] = {"file": "keys/ci.pub"}
    broken["spec"]["rules"].append({"name": "second", "images": ["x/**"], "signatures": {
        "authorities": [{"name": "k2", "key": {"publicKey": "not a pem"}}]}})
    answer = kube.kubectl("apply", "-f", "-", input=yaml.safe_dump(broken), check=False)
    assert answer.returncode != 0
    assert 'admission webhook "policies.sealgate.dev" denied the request' in answer.stderr
    assert ("spec.rules[0].signatures.authorities[0].key.file: a cluster ImagePolicy cannot "
            "name a file") in answer.stderr
    assert "authority 'k2': bad public key PEM" in answer.stderr
    missing = kube.kubectl("get", "imagepolicy", "broken", check=False)
    assert missing.returncode != 0 and "NotFound" in missing.stderr
    good = _policy("good", ["team-x"], webhook.key, "r.example/**")
    assert "created" in kube.apply(good)
    kube.kubectl("delete", "imagepolicy", "good")


def test_tools_accept_the_list_kubectl_prints(
    kube: KubeServer, webhook: Webhook, tmp_path: Path
) -> None:
    kube.apply(_policy("listed", ["team-list"], webhook.key, "r.example/**"))
    listing = kube.kubectl("get", "imagepolicies", "-o", "yaml").stdout
    (tmp_path / "cluster.yaml").write_text(listing)
    lint = subprocess.run(
        [sys.executable, "-m", "webhook", "policy", "lint", str(tmp_path)],
        capture_output=True, text=True, timeout=60, check=False,
    )
    assert lint.returncode == 0, lint.stdout + lint.stderr
    from webhook.policy import load_policy_dir

    names = {policy.name for policy in load_policy_dir(tmp_path).policies}
    assert "listed" in names
    kube.kubectl("delete", "imagepolicy", "listed")



def _b64(text: str) -> str:
    return base64.b64encode(text.encode()).decode()


def test_watch_survives_restart_and_relists_on_410(
    kube: KubeServer, webhook: Webhook, images: dict[str, str], registry: RegistryServer
) -> None:
    """The API server goes away; meanwhile the policy is deleted behind its back and the
    history compacted, so the watch's resourceVersion is gone (410): sealgate relists and
    the deleted policy leaves force. (Last in this module: it restarts the API server.)"""
    kube.kubectl("create", "namespace", "team-gone")
    kube.kubectl("label", "namespace", "team-gone", "sealgate-test=on")
    kube.apply(_policy("gone-later", ["team-gone"], webhook.key, f"{registry.host}/kube/**"))
    _wait(lambda: _ready(kube, "gone-later")[0] == "True", 5, "Ready=True")
    assert _dry_run(kube, _deployment("team-gone", images["unsigned"])).returncode != 0
    kube.stop_apiserver()
    try:
        kube.etcd("kv/deleterange",
                  {"key": _b64("/registry/sealgate.dev/imagepolicies/gone-later")})
        revision = 0
        for n in range(3):
            put = kube.etcd("kv/put", {"key": _b64(f"/sealgate-test/{n}"), "value": _b64("x")})
            revision = int(put["header"]["revision"])
        kube.etcd("kv/compaction", {"revision": str(revision), "physical": True})
    finally:
        kube.start_apiserver()
    _wait(lambda: "relisting" in webhook.log_text(), 15, "a relist after 410 Gone")
    _wait(lambda: _dry_run(kube, _deployment("team-gone", images["unsigned"])).returncode == 0,
          5, "the policy deleted during the outage out of force")
    assert "watch interrupted" in webhook.log_text()  # it kept trying during the outage
    # and watching again afterwards: a new object is in force
    kube.apply(_policy("after-restart", ["team-gone"], webhook.key, f"{registry.host}/kube/**"))
    _wait(lambda: _dry_run(kube, _deployment("team-gone", images["unsigned"])).returncode != 0,
          5, "a policy created after the restart in force")
    kube.kubectl("delete", "imagepolicy", "after-restart")
