"""End to end: `sealgate serve` as a subprocess over real HTTPS, the way the API server calls it."""

from __future__ import annotations

import json
import os
import socket
import ssl
import subprocess
import sys
import textwrap
import time
import uuid
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx
import pytest
from cryptography import x509
from cryptography.hazmat.primitives.asymmetric import ec

from tests.registry_server import RegistryServer, push_cosign_signature, push_image
from tests.signing import cosign_layer, public_pem
from tests.system import free_port
from webhook.certs import generate_certificates


@dataclass
class Server:
    url: str
    ca: Path
    audit_log: Path
    process: subprocess.Popen[bytes]

    def audit_lines(self) -> list[dict[str, Any]]:
        return [json.loads(line) for line in self.audit_log.read_text().splitlines()]


def start_server(tmp_path: Path, policies: Path, env_extra: dict[str, str],
                 args: tuple[str, ...] = ()) -> subprocess.Popen[bytes]:
    env = {**os.environ, **env_extra}
    return subprocess.Popen(
        [sys.executable, "-m", "webhook", "serve", "--policies", str(policies), *args],
        env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
    )


@pytest.fixture
def server(tmp_path: Path, registry: RegistryServer) -> Iterator[tuple[Server, Any]]:
    key = ec.generate_private_key(ec.SECP256R1())
    certs = tmp_path / "certs"
    generate_certificates(certs, service="sealgate", namespace="sealgate")
    policies = tmp_path / "policies"
    policies.mkdir()
    (policies / "p.yaml").write_text(f"""\
apiVersion: sealgate.dev/v1alpha1
kind: ImagePolicy
metadata: {{name: e2e}}
spec:
  namespaces: {{match: ["team-*"]}}
  rules:
    - name: local
      images: ["{registry.host}/e2e/**"]
      signatures:
        authorities:
          - name: ci-key
            key:
              tlog: "off"
              publicKey: |
{textwrap.indent(public_pem(key).decode(), " " * 16)}
""")
    port = free_port()
    audit = tmp_path / "audit.log"
    process = start_server(tmp_path, policies, {
        "SEALGATE_HOST": "127.0.0.1", "SEALGATE_PORT": str(port),
        "SEALGATE_CERT": str(certs / "tls.crt"), "SEALGATE_KEY": str(certs / "tls.key"),
        "SEALGATE_AUDIT_LOG": str(audit), "SEALGATE_INSECURE_REGISTRIES": registry.host,
    })
    url = f"https://localhost:{port}"
    trust = ssl.create_default_context(cafile=certs / "ca.crt")
    try:
        deadline = time.monotonic() + 20
        while True:
            if process.poll() is not None:
                pytest.fail(f"sealgate serve exited: {process.stderr.read().decode()}")  # type: ignore[union-attr]
            try:
                ready = httpx.get(f"{url}/readyz", verify=trust, timeout=1)
                if ready.status_code == 200:
                    break
            except httpx.TransportError:
                pass
            if time.monotonic() > deadline:
                pytest.fail("sealgate serve did not become ready in 20 s")
            time.sleep(0.1)
        yield Server(url, certs / "ca.crt", audit, process), key
    finally:
        process.terminate()
        try:
            process.communicate(timeout=10)
        except subprocess.TimeoutExpired:
            process.kill()
            process.communicate()


def review(image: str, namespace: str = "team-a") -> dict[str, Any]:
    return {
        "apiVersion": "admission.k8s.io/v1", "kind": "AdmissionReview",
        "request": {
            "uid": str(uuid.uuid4()), "operation": "CREATE", "namespace": namespace,
            "kind": {"group": "apps", "version": "v1", "kind": "Deployment"},
            "userInfo": {"username": "system:serviceaccount:ci:deployer"},
            "object": {"kind": "Deployment", "metadata": {"name": "web"}, "spec": {"template": {
                "metadata": {}, "spec": {"containers": [{"name": "web", "image": image}]}}}},
        },
    }


def test_signed_allowed_unsigned_denied_over_https(server: tuple[Server, Any],
                                                   registry: RegistryServer) -> None:
    srv, key = server
    signed, _ = push_image(registry.url, "e2e/app", "signed")
    push_cosign_signature(registry.url, "e2e/app", signed,
                          [cosign_layer(key, f"{registry.host}/e2e/app", signed)])
    unsigned, _ = push_image(registry.url, "e2e/app", "unsigned")
    trust = ssl.create_default_context(cafile=srv.ca)
    with httpx.Client(base_url=srv.url, verify=trust, timeout=15) as client:
        ok = client.post("/validate", json=review(f"{registry.host}/e2e/app:signed"))
        denied = client.post("/validate", json=review(f"{registry.host}/e2e/app:unsigned"))
        bad = client.post("/validate", content=b"{not json")
    assert ok.status_code == 200 and ok.json()["response"]["allowed"] is True
    answer = denied.json()["response"]
    assert answer["allowed"] is False and answer["status"]["code"] == 403
    assert answer["status"]["message"].startswith(f"{registry.host}/e2e/app@{unsigned}: ")
    assert "(policy e2e, rule local)" in answer["status"]["message"]
    assert bad.status_code == 400
    lines = srv.audit_lines()
    assert [line["decision"] for line in lines] == ["allow", "deny"]
    assert lines[0]["images"][0]["digest"] == signed
    assert lines[1]["user"] == "system:serviceaccount:ci:deployer"
    assert lines[0]["uid"] != lines[1]["uid"]


def test_start_up_errors_exit_2(tmp_path: Path) -> None:
    certs = tmp_path / "certs"
    generate_certificates(certs, service="s", namespace="n")
    env = {"SEALGATE_CERT": str(certs / "tls.crt"), "SEALGATE_KEY": str(certs / "tls.key")}
    missing = start_server(tmp_path, tmp_path / "nope", env)
    _, err = missing.communicate(timeout=30)
    assert missing.returncode == 2 and b"does not exist" in err
    broken = tmp_path / "broken"
    broken.mkdir()
    (broken / "p.yaml").write_text("apiVersion: sealgate.dev/v1alpha1\nkind: Nope\n")
    process = start_server(tmp_path, broken, env)
    _, err = process.communicate(timeout=30)
    assert process.returncode == 2 and f"{broken / 'p.yaml'}:".encode() in err


def _served_serial(url: str, ca: Path) -> int:
    host, port = url.removeprefix("https://").split(":")
    context = ssl.create_default_context(cafile=ca)
    with socket.create_connection((host, int(port))) as raw, context.wrap_socket(
        raw, server_hostname=host
    ) as tls:
        der = tls.getpeercert(binary_form=True)
    assert der is not None
    return x509.load_der_x509_certificate(der).serial_number


def test_renewed_serving_certificate_is_picked_up_without_restart(
    server: tuple[Server, Any], tmp_path: Path
) -> None:
    srv, _ = server
    before = _served_serial(srv.url, srv.ca)
    generate_certificates(tmp_path / "certs", service="sealgate", namespace="sealgate")
    deadline = time.monotonic() + 5
    while _served_serial(srv.url, srv.ca) == before:
        if time.monotonic() > deadline:
            pytest.fail("the renewed certificate was not served within 5 s")
        time.sleep(0.1)
    assert srv.process.poll() is None  # same process, no restart


def test_policy_edit_under_the_running_server(server: tuple[Server, Any], tmp_path: Path,
                                              registry: RegistryServer) -> None:
    """Edit the policy the way the kubelet updates a ConfigMap mount; the new decision is
    served within 2 s, and a broken edit never causes an allow or a 500."""
    srv, key = server
    digest, _ = push_image(registry.url, "e2e/reload", "v1")
    push_cosign_signature(registry.url, "e2e/reload", digest,
                          [cosign_layer(key, f"{registry.host}/e2e/reload", digest)])
    image = f"{registry.host}/e2e/reload:v1"
    policy_file = tmp_path / "policies" / "p.yaml"
    trust = ssl.create_default_context(cafile=srv.ca)
    with httpx.Client(base_url=srv.url, verify=trust, timeout=15) as client:
        def allowed() -> bool:
            response = client.post("/validate", json=review(image))
            assert response.status_code == 200
            return bool(response.json()["response"]["allowed"])

        assert allowed()
        other = ec.generate_private_key(ec.SECP256R1())
        text = policy_file.read_text().replace(
            textwrap.indent(public_pem(key).decode(), " " * 16),
            textwrap.indent(public_pem(other).decode(), " " * 16))
        swapped = tmp_path / "policies" / "..2026_11_23_new"
        swapped.mkdir()
        (swapped / "p.yaml").write_text(text)
        policy_file.unlink()
        policy_file.symlink_to(swapped / "p.yaml")
        started = time.monotonic()
        while allowed():
            assert time.monotonic() - started < 2, "the edit was not served within 2 s"
            time.sleep(0.05)
        (swapped / "p.yaml").write_text("kind: [broken")
        time.sleep(1.5)
        assert not allowed()  # still the last good set
        assert client.get("/readyz").json()["generation"] == 2
