"""Content anyone with push access can plant next to an image — oversized or malformed
signature material — is "not a signature", never a check error: with `onError: allow` it
must not turn a deny into an allow, and it must not hide a real signature either."""

from __future__ import annotations

import json
import os
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import httpx
import pytest
from cryptography.hazmat.primitives.asymmetric import ec

from tests.admission_helpers import pod_review, policy_text
from tests.registry_server import RegistryServer, push_cosign_signature, push_image
from tests.signing import PrivateKey, cosign_layer, public_pem
from webhook.app import create_app
from webhook.settings import Settings

OVERSIZED = os.urandom(5 * 1024 * 1024)  # over the 4 MiB cap on signature payloads


@pytest.fixture
def key() -> PrivateKey:
    return ec.generate_private_key(ec.SECP256R1())


async def lenient_webhook(tmp_path: Path, registry: RegistryServer, key: PrivateKey,
                          transport: httpx.AsyncBaseTransport | None = None
                          ) -> AsyncIterator[httpx.AsyncClient]:
    policies = tmp_path / "policies"
    policies.mkdir(exist_ok=True)
    (policies / "p.yaml").write_text(policy_text(registry.host, public_pem(key),
                                                 extra="  onError: allow\n"))
    app = create_app(Settings(policies=policies, audit_log=tmp_path / "audit.log",
                              insecure_registries=frozenset({registry.host})),
                     transport=transport)
    async with app.router.lifespan_context(app), httpx.AsyncClient(
        transport=httpx.ASGITransport(app=app), base_url="https://sealgate"
    ) as client:
        yield client


async def answer(client: httpx.AsyncClient, image: str) -> dict[str, Any]:
    result: dict[str, Any] = (await client.post("/validate", json=pod_review(image))).json()
    return result["response"]  # type: ignore[no-any-return]


async def test_oversized_planted_layer_does_not_turn_a_deny_into_an_allow(
    tmp_path: Path, registry: RegistryServer, key: PrivateKey
) -> None:
    digest, _ = push_image(registry.url, "team/planted", "v1")
    push_cosign_signature(registry.url, "team/planted", digest,
                          [(OVERSIZED, {"dev.cosignproject.cosign/signature": "AAAA"})])
    async for client in lenient_webhook(tmp_path, registry, key):
        result = await answer(client, f"{registry.host}/team/planted:v1")
    assert result["allowed"] is False
    assert "no signatures found" in result["status"]["message"]


async def test_oversized_planted_layer_does_not_hide_a_real_signature(
    tmp_path: Path, registry: RegistryServer, key: PrivateKey
) -> None:
    digest, _ = push_image(registry.url, "team/mixed", "v1")
    real = cosign_layer(key, f"{registry.host}/team/mixed", digest)
    push_cosign_signature(registry.url, "team/mixed", digest,
                          [(OVERSIZED, {"dev.cosignproject.cosign/signature": "AAAA"}), real])
    async for client in lenient_webhook(tmp_path, registry, key):
        result = await answer(client, f"{registry.host}/team/mixed:v1")
    assert result["allowed"] is True


class MalformedSignatureManifest(httpx.AsyncBaseTransport):
    """The real registry, except that `.sig` manifests come back as JSON that is not a
    manifest (a real registry validates what it stores; this is the fault it cannot make)."""

    def __init__(self) -> None:
        self.inner = httpx.AsyncHTTPTransport()

    async def handle_async_request(self, request: httpx.Request) -> httpx.Response:
        if request.url.path.endswith(".sig"):
            body = json.dumps({"schemaVersion": 2, "layers": "not a list"}).encode()
            return httpx.Response(200, content=body, headers={
                "content-type": "application/vnd.oci.image.manifest.v1+json"})
        return await self.inner.handle_async_request(request)

    async def aclose(self) -> None:
        await self.inner.aclose()


async def test_malformed_signature_manifest_is_a_failure_not_an_error(
    tmp_path: Path, registry: RegistryServer, key: PrivateKey
) -> None:
    push_image(registry.url, "team/malformed", "v1")
    async for client in lenient_webhook(tmp_path, registry, key,
                                        transport=MalformedSignatureManifest()):
        result = await answer(client, f"{registry.host}/team/malformed:v1")
    assert result["allowed"] is False
    assert "unusable signature manifest" in result["status"]["message"]
