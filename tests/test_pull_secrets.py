"""Registry credentials from the cluster (SEALGATE_POD_PULL_SECRETS, SPEC §9).

A real docker-registry with htpasswd auth holds a signed image; `sealgate serve
--pod-pull-secrets` reads pull secrets and ServiceAccounts from a real API server.
"""

from __future__ import annotations

import base64
import json
import os
import ssl
import subprocess
import sys
import uuid
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx
import pytest
import yaml
from cryptography.hazmat.primitives.asymmetric import ec

from tests.kube_server import KubeServer
from tests.registry_server import RegistryServer, push_cosign_signature, push_image
from tests.served import wait_for_readyz
from tests.signing import cosign_layer, public_pem
from tests.system import free_port
from webhook.certs import generate_certificates
from webhook.errors import RegistryError
from webhook.kube.pullsecrets import parse_pull_secret

USER, PASSWORD = "puller", "s3cret-Pa55word"


def _dockerconfigjson(host: str, user: str, password: str) -> str:
    auth = base64.b64encode(f"{user}:{password}".encode()).decode()
    config = {"auths": {host: {"auth": auth}}}
    return base64.b64encode(json.dumps(config).encode()).decode()


def _dockercfg(host: str, user: str, password: str) -> str:
    config = {host: {"username": user, "password": password}}
    return base64.b64encode(json.dumps(config).encode()).decode()


# --------------------------------------------------------------------------- parsing


def test_both_pull_secret_types_parse() -> None:
    modern = parse_pull_secret("kubernetes.io/dockerconfigjson", {
        ".dockerconfigjson": _dockerconfigjson("reg.example:5000", "u", "p")}, "secret/a/b")
    legacy = parse_pull_secret("kubernetes.io/dockercfg", {
        ".dockercfg": _dockercfg("https://reg.example:5000/v1/", "u", "p")}, "secret/a/c")
    assert modern is not None and modern.lookup("reg.example:5000") == ("u", "p")
    assert legacy is not None and legacy.lookup("reg.example:5000") == ("u", "p")
    assert parse_pull_secret("Opaque", {"x": "eA=="}, "secret/a/d") is None


def test_a_malformed_pull_secret_names_itself_never_its_content() -> None:
    bad = base64.b64encode(json.dumps({"auths": {"r": {"auth": "!!" + PASSWORD}}}).encode())
    with pytest.raises(RegistryError) as info:
        parse_pull_secret("kubernetes.io/dockerconfigjson", {".dockerconfigjson": bad.decode()},
                          "secret/ns/broken")
    assert "secret/ns/broken" in str(info.value) and PASSWORD not in str(info.value)
    with pytest.raises(RegistryError, match="not base64 of JSON"):
        parse_pull_secret("kubernetes.io/dockercfg", {".dockercfg": "%%%"}, "secret/ns/x")


# --------------------------------------------------------------------------- end to end


@dataclass
class Served:
    url: str
    trust: ssl.SSLContext
    audit: Path
    log: Path
    image: str
    host: str

    def review(self, namespace: str, spec: dict[str, Any], kind: str = "Pod") -> dict[str, Any]:
        obj: dict[str, Any] = {"kind": kind, "metadata": {"name": "p", "namespace": namespace}}
        if kind == "Pod":
            obj["spec"] = spec
        else:
            obj["spec"] = {"template": {"metadata": {}, "spec": spec}}
        body = {"apiVersion": "admission.k8s.io/v1", "kind": "AdmissionReview", "request": {
            "uid": str(uuid.uuid4()), "operation": "CREATE", "namespace": namespace,
            "kind": {"group": "" if kind == "Pod" else "apps", "version": "v1", "kind": kind},
            "userInfo": {"username": "dev"}, "object": obj}}
        answer = httpx.post(f"{self.url}/validate", json=body, verify=self.trust, timeout=20)
        assert answer.status_code == 200, answer.text
        response: dict[str, Any] = answer.json()["response"]
        return response

    def last_audit(self) -> dict[str, Any]:
        line: dict[str, Any] = json.loads(self.audit.read_text().splitlines()[-1])
        return line


@pytest.fixture(scope="module")
def private_registry(registry_binary: str) -> Iterator[RegistryServer]:
    with RegistryServer(binary=registry_binary, users={USER: PASSWORD}) as server:
        yield server


@pytest.fixture(scope="module")
def served(kube: KubeServer, private_registry: RegistryServer,
           tmp_path_factory: pytest.TempPathFactory) -> Iterator[Served]:
    registry = private_registry
    root = tmp_path_factory.mktemp("pull-secrets")
    key = ec.generate_private_key(ec.SECP256R1())
    digest, _ = push_image(registry.url, "private/app", "v1", auth=registry.auth)
    push_cosign_signature(registry.url, "private/app", digest,
                          [cosign_layer(key, f"{registry.host}/private/app", digest)],
                          auth=registry.auth)
    good = _dockerconfigjson(registry.host, USER, PASSWORD)
    wrong = _dockerconfigjson(registry.host, USER, "not-the-password")
    objects: list[dict[str, Any]] = []
    for namespace in ("ps-pod", "ps-sa", "ps-none"):
        objects.append({"apiVersion": "v1", "kind": "Namespace",
                        "metadata": {"name": namespace}})
    objects += [
        {"apiVersion": "v1", "kind": "Secret", "type": "kubernetes.io/dockerconfigjson",
         "metadata": {"name": "wrong", "namespace": "ps-pod"},
         "data": {".dockerconfigjson": wrong}},
        {"apiVersion": "v1", "kind": "Secret", "type": "kubernetes.io/dockerconfigjson",
         "metadata": {"name": "good", "namespace": "ps-pod"},
         "data": {".dockerconfigjson": good}},
        {"apiVersion": "v1", "kind": "Secret", "type": "kubernetes.io/dockercfg",
         "metadata": {"name": "legacy", "namespace": "ps-sa"},
         "data": {".dockercfg": _dockercfg(registry.host, USER, PASSWORD)}},
        {"apiVersion": "v1", "kind": "ServiceAccount",
         "metadata": {"name": "builder", "namespace": "ps-sa"},
         "imagePullSecrets": [{"name": "legacy"}]},
        # another namespace's secret, named by a pod in ps-none: never read across
        {"apiVersion": "v1", "kind": "ServiceAccount",
         "metadata": {"name": "default", "namespace": "ps-none"}},
    ]
    kube.kubectl("apply", "-f", "-", input=yaml.safe_dump_all(objects))
    certs = root / "certs"
    generate_certificates(certs, service="sealgate", namespace="sealgate")
    policies = root / "policies"
    policies.mkdir()
    (policies / "p.yaml").write_text(yaml.safe_dump({
        "apiVersion": "sealgate.dev/v1alpha1", "kind": "ImagePolicy",
        "metadata": {"name": "private"},
        "spec": {"namespaces": {"match": ["ps-*"]}, "rules": [{
            "name": "ours", "images": [f"{registry.host}/private/**"],
            "signatures": {"authorities": [{"name": "ci", "key": {
                "tlog": "off", "publicKey": public_pem(key).decode()}}]}}]},
    }))
    port = free_port()
    audit, log = root / "audit.log", root / "serve.log"
    env = {**os.environ, "SEALGATE_HOST": "127.0.0.1", "SEALGATE_PORT": str(port),
           "SEALGATE_CERT": str(certs / "tls.crt"), "SEALGATE_KEY": str(certs / "tls.key"),
           "SEALGATE_AUDIT_LOG": str(audit), "SEALGATE_INSECURE_REGISTRIES": registry.host,
           "SEALGATE_POD_PULL_SECRETS": "true"}
    handle = open(log, "wb")  # noqa: SIM115 - closed below
    process = subprocess.Popen(
        [sys.executable, "-m", "webhook", "serve", "--policies", str(policies),
         "--kubeconfig", str(kube.kubeconfig), "--log-level", "debug"],
        env=env, stdout=handle, stderr=subprocess.STDOUT,
    )
    trust = ssl.create_default_context(cafile=certs / "ca.crt")
    url = f"https://127.0.0.1:{port}"
    try:
        wait_for_readyz(url, trust, process, lambda: log.read_text(), timeout=30)
        yield Served(url, trust, audit, log, f"{registry.host}/private/app:v1", registry.host)
    finally:
        process.terminate()
        try:
            process.wait(timeout=10)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait()
        handle.close()


def _pod(image: str, **extra: Any) -> dict[str, Any]:
    return {"containers": [{"name": "c", "image": image}], **extra}


def test_pod_secret_refused_gives_way_to_the_next(served: Served) -> None:
    spec = _pod(served.image, imagePullSecrets=[{"name": "wrong"}, {"name": "good"}])
    answer = served.review("ps-pod", spec)
    assert answer["allowed"] is True, answer
    entry = served.last_audit()["images"][0]
    assert entry["credential"] == "secret/ps-pod/good"
    assert entry["digest"].startswith("sha256:")


def test_service_account_dockercfg_secret_for_a_controller(served: Served) -> None:
    answer = served.review("ps-sa", _pod(served.image, serviceAccountName="builder"),
                           kind="Deployment")
    assert answer["allowed"] is True, answer
    assert served.last_audit()["images"][0]["credential"] == "secret/ps-sa/legacy"


def test_a_namespace_without_credentials_learns_nothing(served: Served) -> None:
    # resolved twice above with other namespaces' secrets: still not for this one
    spec = _pod(served.image, imagePullSecrets=[{"name": "good"}])  # ps-pod's, not here
    answer = served.review("ps-none", spec)
    assert answer["allowed"] is False
    assert "requires credentials" in answer["status"]["message"]
    entry = served.last_audit()["images"][0]
    assert entry["credential"] == "anonymous" and entry["digest"] is None


def test_secrets_never_in_logs_audit_or_metrics(served: Served) -> None:
    served.review("ps-pod", _pod(served.image, imagePullSecrets=[{"name": "wrong"},
                                                                 {"name": "good"}]))
    metrics = httpx.get(f"{served.url}/metrics", verify=served.trust, timeout=10).text
    basic = base64.b64encode(f"{USER}:{PASSWORD}".encode()).decode()
    for text in (served.log.read_text(), served.audit.read_text(), metrics):
        assert PASSWORD not in text and basic not in text
    assert "secret/ps-pod/good" in served.audit.read_text()
