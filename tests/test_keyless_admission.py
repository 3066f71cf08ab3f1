"""Keyless (Fulcio + CT + Rekor) signatures through /validate, against the real registry,
with a test sigstore world standing in for the public-good instance."""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import httpx
import pytest

from tests.admission_helpers import pod_review
from tests.registry_server import RegistryServer, push_cosign_signature, push_image
from tests.sigstore_world import SigstoreWorld
from webhook.app import create_app
from webhook.settings import Settings
from webhook.signatures import cosign_verifier as verifier_module

WORKFLOW = "https://github.com/acme/app/.github/workflows/release.yml@refs/heads/main"
ISSUER = "https://token.actions.githubusercontent.com"


def keyless_policy(host: str, root: Path, subject_line: str) -> str:
    return f"""\
apiVersion: sealgate.dev/v1alpha1
kind: ImagePolicy
metadata: {{name: keyless}}
spec:
  namespaces: {{match: ["prod"]}}
  rules:
    - name: ci
      images: ["{host}/team/**"]
      signatures:
        authorities:
          - name: github-release
            keyless:
              issuer: {ISSUER}
              {subject_line}
              trustedRoot: {root}
"""


@pytest.fixture(scope="module")
def world() -> SigstoreWorld:
    return SigstoreWorld.create()


def keyless_signed(world: SigstoreWorld, registry: RegistryServer, repo: str) -> str:
    digest, _ = push_image(registry.url, repo, "v1")
    leaf = world.issue_leaf(uri=WORKFLOW, issuer=ISSUER)
    layer = world.keyless_signature_layer(leaf, f"{registry.host}/{repo}", digest)
    push_cosign_signature(registry.url, repo, digest, [(layer.payload, dict(layer.annotations))])
    return digest


async def client_for(tmp_path: Path, registry: RegistryServer, world: SigstoreWorld,
                     subject_line: str) -> AsyncIterator[httpx.AsyncClient]:
    root = world.write_trusted_root(tmp_path / "trusted_root.json")
    policies = tmp_path / "policies"
    policies.mkdir(exist_ok=True)
    (policies / "p.yaml").write_text(keyless_policy(registry.host, root, subject_line))
    app = create_app(Settings(policies=policies, audit_log=tmp_path / "audit.log",
                              insecure_registries=frozenset({registry.host})))
    async with app.router.lifespan_context(app), httpx.AsyncClient(
        transport=httpx.ASGITransport(app=app), base_url="https://sealgate"
    ) as client:
        yield client


async def answer(client: httpx.AsyncClient, image: str) -> dict[str, Any]:
    response = await client.post("/validate", json=pod_review(image))
    result: dict[str, Any] = response.json()["response"]
    return result


@pytest.mark.parametrize("subject_line", [
    f"subject: {WORKFLOW}",
    r"subjectRegExp: '^https://github\.com/acme/.+@refs/heads/main$'",
])
async def test_keyless_signed_image_is_allowed(tmp_path: Path, registry: RegistryServer,
                                               world: SigstoreWorld, subject_line: str) -> None:
    keyless_signed(world, registry, "team/keyless")
    async for client in client_for(tmp_path, registry, world, subject_line):
        assert (await answer(client, f"{registry.host}/team/keyless:v1"))["allowed"] is True


@pytest.mark.parametrize(("subject_line", "fragment"), [
    ("subject: https://github.com/acme/other/.github/workflows/release.yml@refs/heads/main",
     "subject"),
    # a regexp that matches only a prefix of the subject must not count
    (r"subjectRegExp: 'https://github\.com/acme/app'", "subject"),
])
async def test_wrong_identity_is_denied(tmp_path: Path, registry: RegistryServer,
                                        world: SigstoreWorld, subject_line: str,
                                        fragment: str) -> None:
    digest = keyless_signed(world, registry, "team/wrongid")
    async for client in client_for(tmp_path, registry, world, subject_line):
        result = await answer(client, f"{registry.host}/team/wrongid:v1")
    assert result["allowed"] is False
    message = result["status"]["message"]
    assert digest in message and fragment in message and 'authority "github-release"' in message


async def test_keyless_signature_from_another_world_is_denied(
    tmp_path: Path, registry: RegistryServer, world: SigstoreWorld
) -> None:
    stranger = SigstoreWorld.create()
    keyless_signed(stranger, registry, "team/stranger-kl")
    async for client in client_for(tmp_path, registry, world, f"subject: {WORKFLOW}"):
        result = await answer(client, f"{registry.host}/team/stranger-kl:v1")
    assert result["allowed"] is False


async def test_keyless_verification_does_not_block_the_event_loop(
    tmp_path: Path, registry: RegistryServer, world: SigstoreWorld,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    keyless_signed(world, registry, "team/slowverify")
    real = verifier_module.verify_keyless_signature
    finished: list[float] = []

    def slow_verify(*args: Any, **kwargs: Any) -> Any:
        time.sleep(0.5)  # stands in for heavy chain/SCT work; blocks whatever thread runs it
        result = real(*args, **kwargs)
        finished.append(time.monotonic())
        return result

    monkeypatch.setattr(verifier_module, "verify_keyless_signature", slow_verify)
    async for client in client_for(tmp_path, registry, world, f"subject: {WORKFLOW}"):
        review = asyncio.create_task(answer(client, f"{registry.host}/team/slowverify:v1"))
        await asyncio.sleep(0.1)  # the verification is under way
        health = await client.get("/healthz")
        health_at = time.monotonic()
        assert health.status_code == 200
        assert (await review)["allowed"] is True
    assert finished and health_at < finished[0]
