"""Secrets never leak (issue 11, deliverable 5).

`sealgate serve` runs at debug log level with known registry passwords and
bearer tokens, against a real registry with htpasswd auth and a loopback
registry that issues a token, then rejects it and echoes every credential it
saw back in its error bodies and headers. Nothing the process printed, no
audit line and no metric may contain any of them.
"""

from __future__ import annotations

import base64
import http.server
import json
import re
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest
from cryptography.hazmat.primitives.asymmetric import ec

from tests.admission_helpers import pod_review, policy_text
from tests.registry_server import RegistryServer, push_cosign_signature, push_image
from tests.served import FaultRegistry, answer, start_served
from tests.signing import cosign_layer, public_pem

PASSWORD = "pw-Zq81vXk2-hunter2"
ECHO_PASSWORD = "pw-echo-77Hq0p"
TOKEN = "tok-9f3Kd0xQ-bearer-secret"


def _echoing_registry() -> FaultRegistry:
    """Issues TOKEN for basic credentials, then refuses it, echoing what it was sent."""

    def behave(handler: http.server.BaseHTTPRequestHandler) -> None:
        authorization = handler.headers.get("Authorization", "")
        echo = json.dumps({"errors": [{"code": "UNAUTHORIZED",
                                       "message": f"rejected {authorization}",
                                       "detail": {"token": TOKEN}}]}).encode()
        if handler.path.startswith("/token"):
            answer(handler, 200, json.dumps({"token": TOKEN, "access_token": TOKEN}).encode(),
                   {"Content-Type": "application/json"})
            return
        host = handler.headers.get("Host", "")
        if "/sha256-" in handler.path:  # signature lookups: a 500 echoing the credentials
            answer(handler, 500, echo, {"Content-Type": "application/json"})
            return
        answer(handler, 401, echo, {
            "Content-Type": "application/json",
            "WWW-Authenticate": f'Bearer realm="http://{host}/token",service="echo",'
                                f'error="invalid_token",error_description="{authorization}"',
        })

    return FaultRegistry(behave)


@pytest.fixture
def htpasswd_registry(registry_binary: str) -> Iterator[RegistryServer]:
    with RegistryServer(binary=registry_binary, users={"robot": PASSWORD}) as server:
        yield server


def _secrets_in(text: str) -> list[str]:
    needles = {
        PASSWORD, ECHO_PASSWORD, TOKEN,
        base64.b64encode(f"robot:{PASSWORD}".encode()).decode(),
        base64.b64encode(f"echo:{ECHO_PASSWORD}".encode()).decode(),
    }
    return sorted(needle for needle in needles if needle in text)


def test_no_password_or_token_in_output_audit_or_metrics(
    tmp_path: Path, htpasswd_registry: RegistryServer
) -> None:
    registry = htpasswd_registry
    key = ec.generate_private_key(ec.SECP256R1())
    digest, _ = push_image(registry.url, "team/app", "v1", auth=registry.auth)
    push_cosign_signature(registry.url, "team/app", digest,
                          [cosign_layer(key, f"{registry.host}/team/app", digest)],
                          auth=registry.auth)
    echo = _echoing_registry()
    try:
        auth = tmp_path / "config.json"
        auth.write_text(json.dumps({"auths": {
            registry.host: {"auth": base64.b64encode(f"robot:{PASSWORD}".encode()).decode()},
            echo.host: {"username": "echo", "password": ECHO_PASSWORD},
        }}))
        policies = tmp_path / "policies"
        policies.mkdir()
        pem = public_pem(key)
        (policies / "a.yaml").write_text(policy_text(registry.host, pem))
        (policies / "b.yaml").write_text(
            policy_text(echo.host, pem).replace("{name: production}", "{name: echo}")
            .replace('["prod"]', '["echo"]'))
        served = start_served(tmp_path, policies, {
            "SEALGATE_REGISTRY_AUTH": str(auth),
            "SEALGATE_INSECURE_REGISTRIES": f"{registry.host},{echo.host}",
            "SEALGATE_DEADLINE": "3s",
        }, args=("--log-level", "debug"))
        with httpx.Client(verify=served.context(), base_url=served.url, timeout=15) as client:
            signed = client.post("/validate", json=pod_review(f"{registry.host}/team/app:v1"))
            assert signed.json()["response"]["allowed"] is True  # the password worked
            refused = client.post("/validate", json=pod_review(f"{echo.host}/team/app:v1",
                                                               namespace="echo"))
            assert refused.json()["response"]["allowed"] is False
            assert "refused access" in refused.json()["response"]["status"]["message"]
            metrics = client.get("/metrics").text
        assert echo.requests >= 2  # the token was fetched and presented
        served.terminate()
        printed = served.printed()
        audit = served.audit_log.read_text()
        assert len(audit.splitlines()) == 2
        assert re.search(r"sealgate_admission_requests_total", metrics)
        for where, text in (("output", printed), ("audit log", audit), ("/metrics", metrics)):
            assert _secrets_in(text) == [], f"secret in {where}"
        assert "Authorization" not in audit
    finally:
        echo.close()
