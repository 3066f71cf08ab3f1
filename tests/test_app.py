"""/validate in process (httpx.ASGITransport) against the real local registry."""

from __future__ import annotations

import contextlib
import json
import uuid
from collections.abc import AsyncIterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx
import pytest
from cryptography.hazmat.primitives.asymmetric import ec, ed25519, rsa

from tests.admission_helpers import pod_review, policy_text, signed_image
from tests.registry_server import (
    RegistryServer,
    push_cosign_signature,
    push_image,
    push_index,
)
from tests.signing import PrivateKey, cosign_layer, public_pem
from webhook.app import create_app
from webhook.settings import Settings


@dataclass
class Env:
    client: httpx.AsyncClient
    audit_log: Path
    registry: RegistryServer
    key: PrivateKey

    def audit_lines(self) -> list[dict[str, Any]]:
        if not self.audit_log.exists():
            return []
        return [json.loads(line) for line in self.audit_log.read_text().splitlines()]

    async def post(self, body: dict[str, Any] | bytes, **kwargs: Any) -> httpx.Response:
        content = body if isinstance(body, bytes) else json.dumps(body).encode()
        return await self.client.post("/validate", content=content,
                                      headers={"content-type": "application/json"}, **kwargs)


async def make_env(tmp_path: Path, registry: RegistryServer, key: PrivateKey, *,
                   extra: str = "", audit_log: Path | None = None,
                   insecure: frozenset[str] | None = None) -> AsyncIterator[Env]:
    policies = tmp_path / "policies"
    policies.mkdir(exist_ok=True)
    (policies / "p.yaml").write_text(policy_text(registry.host, public_pem(key), extra=extra))
    log = audit_log or tmp_path / "audit.log"
    if insecure is None:
        insecure = frozenset({registry.host})
    settings = Settings(policies=policies, audit_log=log, deadline=5.0,
                        insecure_registries=insecure)
    app = create_app(settings)
    async with app.router.lifespan_context(app):
        transport = httpx.ASGITransport(app=app)
        async with httpx.AsyncClient(transport=transport, base_url="https://sealgate") as client:
            yield Env(client, log, registry, key)


@pytest.fixture
def key() -> PrivateKey:
    return ec.generate_private_key(ec.SECP256R1())


@pytest.fixture
async def env(tmp_path: Path, registry: RegistryServer, key: PrivateKey) -> AsyncIterator[Env]:
    async for value in make_env(tmp_path, registry, key):
        yield value


async def test_signed_pod_allowed_and_audited(env: Env) -> None:
    digest = signed_image(env.registry, env.key, "team/api")
    review = pod_review(f"{env.registry.host}/team/api:v1")
    response = await env.post(review)
    assert response.status_code == 200
    answer = response.json()
    assert answer["response"] == {"uid": review["request"]["uid"], "allowed": True}
    [line] = env.audit_lines()
    assert line["uid"] == review["request"]["uid"]
    assert line["decision"] == "allow" and line["user"] == "alice"
    [image] = line["images"]
    assert image["digest"] == digest
    assert image["signatures"] == {"release-key": "ok"}
    assert image["name"] == f"{env.registry.host}/team/api"
    assert set(line) >= {"time", "uid", "namespace", "kind", "name", "operation", "user",
                         "dry_run", "decision", "reason", "enforced_by", "latency_ms", "images",
                         "break_glass"}
    assert set(image) >= {"ref", "name", "digest", "policy", "rule", "mode", "signatures",
                          "signature_reasons", "scan", "violations", "cached"}
    assert line["time"].endswith("Z") and line["latency_ms"] > 0
    # no key material or signatures in the audit log
    raw = env.audit_log.read_text()
    assert "BEGIN" not in raw and "dev.cosignproject" not in raw


async def test_unsigned_pod_denied_with_message(env: Env) -> None:
    digest, _ = push_image(env.registry.url, "team/unsigned", "v1")
    response = await env.post(pod_review(f"{env.registry.host}/team/unsigned:v1"))
    answer = response.json()["response"]
    assert answer["allowed"] is False
    assert answer["status"]["code"] == 403
    assert answer["status"]["message"] == (
        f"{env.registry.host}/team/unsigned@{digest}: no valid signature from authority "
        '"release-key": no signatures found (policy production, rule ours)'
    )
    [line] = env.audit_lines()
    assert line["decision"] == "deny" and line["enforced_by"] == ["production"]
    assert line["images"][0]["signatures"] == {"release-key": "fail"}


async def test_signature_from_another_key_or_image_is_denied(env: Env) -> None:
    # signed by a stranger
    stranger = ec.generate_private_key(ec.SECP256R1())
    signed_image(env.registry, stranger, "team/stranger")
    response = await env.post(pod_review(f"{env.registry.host}/team/stranger:v1"))
    assert response.json()["response"]["allowed"] is False
    # a real signature for image A's digest, replayed onto image B's .sig tag
    digest_a = signed_image(env.registry, env.key, "team/a")
    digest_b, _ = push_image(env.registry.url, "team/b", "v1")
    push_cosign_signature(env.registry.url, "team/b", digest_b,
                          [cosign_layer(env.key, f"{env.registry.host}/team/a", digest_a)])
    response = await env.post(pod_review(f"{env.registry.host}/team/b:v1", kind="Deployment"))
    answer = response.json()["response"]
    assert answer["allowed"] is False
    assert "not" in answer["status"]["message"] and digest_b in answer["status"]["message"]


@pytest.mark.parametrize("make_key", [
    lambda: ec.generate_private_key(ec.SECP384R1()),
    lambda: rsa.generate_private_key(public_exponent=65537, key_size=2048),
    ed25519.Ed25519PrivateKey.generate,
], ids=["p384", "rsa", "ed25519"])
async def test_other_key_types(tmp_path: Path, registry: RegistryServer, make_key: Any) -> None:
    key = make_key()
    async for env in make_env(tmp_path, registry, key):
        repo = f"team/{uuid.uuid4().hex[:8]}"
        signed_image(registry, key, repo)
        response = await env.post(pod_review(f"{registry.host}/{repo}:v1"))
        assert response.json()["response"]["allowed"] is True


async def test_index_digest_is_what_gets_verified(env: Env) -> None:
    amd64, _ = push_image(env.registry.url, "team/multi", "amd64")
    arm64, _ = push_image(env.registry.url, "team/multi", "arm64")
    index = push_index(env.registry.url, "team/multi", "v1", [amd64, arm64])
    push_cosign_signature(env.registry.url, "team/multi", index,
                          [cosign_layer(env.key, f"{env.registry.host}/team/multi", index)])
    response = await env.post(pod_review(f"{env.registry.host}/team/multi:v1"))
    assert response.json()["response"]["allowed"] is True
    assert env.audit_lines()[0]["images"][0]["digest"] == index
    # a platform manifest by digest has no signature of its own
    response = await env.post(pod_review(f"{env.registry.host}/team/multi@{amd64}"))
    assert response.json()["response"]["allowed"] is False


async def test_unknown_tag_denied(env: Env) -> None:
    response = await env.post(pod_review(f"{env.registry.host}/team/ghost:v1"))
    answer = response.json()["response"]
    assert answer["allowed"] is False and "not found" in answer["status"]["message"]


async def test_registry_down_follows_on_error(tmp_path: Path, registry: RegistryServer,
                                              key: PrivateKey) -> None:
    closed = RegistryServer()
    closed.start()
    host = closed.host
    closed.stop()
    policy_dir = tmp_path / "policies"
    policy_dir.mkdir()
    (policy_dir / "p.yaml").write_text(policy_text(host, public_pem(key)))
    settings = Settings(policies=policy_dir, audit_log=tmp_path / "a.log", deadline=3.0,
                        insecure_registries=frozenset({host}))
    app = create_app(settings)
    transport = httpx.ASGITransport(app=app)
    async with app.router.lifespan_context(app), httpx.AsyncClient(
        transport=transport, base_url="https://s"
    ) as client:
        response = await client.post("/validate", json=pod_review(f"{host}/team/x:v1"))
    answer = response.json()["response"]
    assert answer["allowed"] is False
    assert "could not resolve digest" in answer["status"]["message"]
    line = json.loads((tmp_path / "a.log").read_text())
    assert line["reason"] == "error"


async def test_on_error_warn_allows_with_warning(tmp_path: Path, registry: RegistryServer,
                                                 key: PrivateKey) -> None:
    async for env in make_env(tmp_path, registry, key, extra="  onError: warn\n",
                              insecure=frozenset()):
        # the registry speaks plain HTTP but is not listed as insecure: TLS fails -> error
        response = await env.post(pod_review(f"{registry.host}/team/api:v1"))
        answer = response.json()["response"]
        assert answer["allowed"] is True and answer["warnings"]


@pytest.mark.parametrize("body", [b"{nope", b'{"kind": "AdmissionReview"}', b"[1]"])
async def test_malformed_is_400_and_not_audited(env: Env, body: bytes) -> None:
    response = await env.post(body)
    assert response.status_code == 400
    assert "malformed AdmissionReview" in response.json()["error"]
    assert env.audit_lines() == []


async def test_body_over_3_mib_is_413(env: Env) -> None:
    review = pod_review("nginx")
    review["request"]["object"]["metadata"]["annotations"] = {"x": "y" * (3 * 1024 * 1024)}
    response = await env.post(review)
    assert response.status_code == 413
    assert env.audit_lines() == []


async def test_other_kinds_and_namespaces_are_allowed_and_audited(env: Env) -> None:
    cm = pod_review("nginx", kind="ConfigMap")
    cm["request"]["object"] = {"kind": "ConfigMap", "data": {}}
    assert (await env.post(cm)).json()["response"]["allowed"] is True
    other_ns = pod_review(f"{env.registry.host}/team/unsigned:v1", namespace="dev")
    assert (await env.post(other_ns)).json()["response"]["allowed"] is True
    lines = env.audit_lines()
    assert len(lines) == 2
    assert lines[1]["reason"] == "no-policy"


async def test_dry_run_decided_identically_and_marked(env: Env) -> None:
    push_image(env.registry.url, "team/dry", "v1")
    response = await env.post(pod_review(f"{env.registry.host}/team/dry:v1", dryRun=True))
    assert response.json()["response"]["allowed"] is False
    assert env.audit_lines()[0]["dry_run"] is True


async def test_audit_failure_answers_500_not_a_decision(tmp_path: Path, registry: RegistryServer,
                                                        key: PrivateKey) -> None:
    full = Path("/dev/full")
    if not full.exists():
        pytest.skip("/dev/full is needed to simulate a full disk")
    async for env in make_env(tmp_path, registry, key, audit_log=full):
        response = await env.post(pod_review("nginx", namespace="dev"))
        assert response.status_code == 500
        assert "response" not in response.json()


async def test_health_and_readiness(env: Env) -> None:
    assert (await env.client.get("/healthz")).json() == {"ok": True}
    assert (await env.client.get("/readyz")).json() == {"ready": True, "generation": 1}


async def test_a_full_audit_pipe_holds_up_only_its_own_answer(
    tmp_path: Path, registry: RegistryServer, key: PrivateKey
) -> None:
    """stdout is often a pipe to a log collector: a full pipe holds up its own answer only,
    without a thread per waiting line, and the line arrives whole once the pipe drains."""
    import asyncio
    import os

    fifo = tmp_path / "audit.pipe"
    os.mkfifo(fifo)
    reader = os.open(fifo, os.O_RDONLY | os.O_NONBLOCK)
    filler = os.open(fifo, os.O_WRONLY | os.O_NONBLOCK)
    try:
        with contextlib.suppress(BlockingIOError):
            while True:
                os.write(filler, b"x" * 512)
        async for env in make_env(tmp_path, registry, key, audit_log=fifo):
            first = asyncio.create_task(env.post(pod_review("nginx", namespace="dev")))
            second = asyncio.create_task(env.post(pod_review("redis", namespace="dev")))
            await asyncio.sleep(0.3)
            assert not first.done() and not second.done()  # no decision leaves unrecorded
            assert (await env.client.get("/healthz")).status_code == 200
            received = b""
            while not (first.done() and second.done()):
                with contextlib.suppress(BlockingIOError):
                    received += os.read(reader, 1 << 16)
                await asyncio.sleep(0.01)
            assert (await first).json()["response"]["allowed"] is True
            assert (await second).json()["response"]["allowed"] is True
            with contextlib.suppress(BlockingIOError):
                received += os.read(reader, 1 << 16)
        lines = received.lstrip(b"x").splitlines()
        records = [json.loads(line) for line in lines]
        assert [r["checked_images"] for r in records] == [["nginx"], ["redis"]]
        assert [r["seq"] for r in records] == [0, 1]
    finally:
        os.close(reader)
        os.close(filler)


async def test_audit_chain_head_is_exported(env: Env) -> None:
    """A log cut short after the fact shows against sealgate_audit_last_seq (SPEC §9)."""
    for _ in range(2):
        await env.post(pod_review("nginx", namespace="dev"))
    lines = env.audit_lines()
    assert [line["seq"] for line in lines] == [0, 1]
    metrics = (await env.client.get("/metrics")).text
    assert f'sealgate_audit_last_seq{{chain="{lines[0]["chain"]}"}} 1.0' in metrics
