"""webhook.kube driven in process with the client library (lightkube) against the real
API server: the ImagePolicy source's status and name clashes, and the pull-secret cache."""

from __future__ import annotations

import asyncio
import base64
import contextlib
import json
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import anyio
import pytest
from cryptography.hazmat.primitives.asymmetric import ec
from lightkube import ApiError, AsyncClient, KubeConfig
from lightkube.models.core_v1 import LocalObjectReference
from lightkube.models.meta_v1 import ObjectMeta
from lightkube.resources.core_v1 import Namespace, Secret, ServiceAccount

from tests.kube_server import REPO, KubeServer
from tests.signing import public_pem
from webhook.admission import AdmissionRequest
from webhook.kube.pullsecrets import PullSecrets
from webhook.kube.source import ClusterPolicies, ImagePolicyResource
from webhook.policy import PolicySet, load_policy_text
from webhook.registry import Credential

CRD_FILE = REPO / "charts" / "sealgate" / "crds" / "imagepolicies.yaml"
PEM = public_pem(ec.generate_private_key(ec.SECP256R1())).decode()


@pytest.fixture
async def client(kube: KubeServer) -> AsyncIterator[AsyncClient]:
    kube.kubectl("apply", "-f", str(CRD_FILE))
    kube.kubectl("wait", "--for=condition=Established", "--timeout=60s",
                 "crd/imagepolicies.sealgate.dev")
    api = AsyncClient(config=KubeConfig.from_file(kube.kubeconfig), field_manager="tests")
    try:
        yield api
    finally:
        await api.close()


def _policy(name: str, namespaces: list[str]) -> Any:
    return ImagePolicyResource(
        metadata=ObjectMeta(name=name),
        spec={"namespaces": {"match": namespaces}, "rules": [{
            "name": "r", "images": ["registry.example.com/**"], "signatures": {
                "authorities": [{"name": "k", "key": {"publicKey": PEM}}]}}]},
    )


async def _eventually(check: Any, within: float = 5.0) -> None:
    """Poll ``check`` (an API read or a look at the source) until true, or fail."""
    with anyio.fail_after(within):
        while not await check():  # noqa: ASYNC110 - polling the API server, no event to wait on
            await asyncio.sleep(0.05)


async def test_source_status_and_name_clash(client: AsyncClient) -> None:
    files = load_policy_text(
        "apiVersion: sealgate.dev/v1alpha1\nkind: ImagePolicy\nmetadata: {name: lc-file}\n"
        "spec:\n  namespaces: {match: [files-*]}\n  rules: [{name: all, images: ['**'], "
        "signatures: none}]\n", "f.yaml", base_dir=Path("."))
    source = ClusterPolicies(client, lambda: PolicySet(tuple(files), 7))
    await client.create(_policy("lc-good", ["lc-*"]))
    await client.create(_policy("lc-file", ["lc-other"]))
    try:
        async with source.running():
            assert source.synced.is_set()
            names = {p.name for p in source.current.policies}
            assert {"lc-good", "lc-file"} <= names
            file_policy = next(p for p in source.current.policies if p.name == "lc-file")
            assert file_policy.namespaces_match == ("files-*",)  # the file's, not the object's

            async def reported() -> bool:
                good = await client.get(ImagePolicyResource, "lc-good")
                clash = await client.get(ImagePolicyResource, "lc-file")
                return bool(good.status and clash.status)

            await _eventually(reported)
            good = (await client.get(ImagePolicyResource, "lc-good")).status
            clash = (await client.get(ImagePolicyResource, "lc-file")).status
            assert good["conditions"][0]["status"] == "True"
            assert good["observedGeneration"] == 1
            assert clash["conditions"][0]["status"] == "False"
            assert clash["conditions"][0]["message"].startswith(
                "metadata.name: policy 'lc-file' is also defined by a policy file")
            generation = source.current.generation
            await client.delete(ImagePolicyResource, "lc-good")

            async def gone() -> bool:
                return "lc-good" not in {p.name for p in source.current.policies}

            await _eventually(gone, within=2.0)
            assert source.current.generation > generation
    finally:
        for name in ("lc-good", "lc-file"):
            with contextlib.suppress(ApiError):  # already gone
                await client.delete(ImagePolicyResource, name)


def _pull_secret(namespace: str, name: str, host: str) -> Secret:
    auth = base64.b64encode(b"u:p").decode()
    config = json.dumps({"auths": {host: {"auth": auth}}}).encode()
    return Secret(metadata=ObjectMeta(name=name, namespace=namespace),
                  type="kubernetes.io/dockerconfigjson",
                  data={".dockerconfigjson": base64.b64encode(config).decode()})


async def test_pull_secrets_cached_with_single_flight(client: AsyncClient) -> None:
    namespace = "lc-pull"
    await client.apply(Namespace(metadata=ObjectMeta(name=namespace)))
    await client.apply(_pull_secret(namespace, "pod-secret", "reg.example"))
    await client.apply(_pull_secret(namespace, "sa-secret", "other.example"))
    await client.apply(ServiceAccount(metadata=ObjectMeta(name="builder", namespace=namespace),
                                      imagePullSecrets=[LocalObjectReference(name="sa-secret")]))
    now = [0.0]
    reads: list[str] = []

    class Counting(PullSecrets):
        async def _read_secret(self, namespace: str, name: str) -> Credential | None:
            reads.append(name)
            await asyncio.sleep(0.05)  # keep the first read in flight while others arrive
            return await super()._read_secret(namespace, name)

    secrets = Counting(client, None, ttl=30.0, clock=lambda: now[0])
    request = AdmissionRequest(
        uid="u", kind="Pod", namespace=namespace, name="p", operation="CREATE",
        sub_resource=None, user="dev", dry_run=False, images=("reg.example/a:1",),
        break_glass_reason=None,
        obj={"spec": {"serviceAccountName": "builder", "imagePullSecrets": [
            {"name": "pod-secret"}, {"name": "missing"}],
            "containers": [{"name": "c", "image": "reg.example/a:1"}]}},
    )
    chains = await asyncio.gather(*(secrets.chain(request) for _ in range(20)))
    assert all(chain == chains[0] for chain in chains)
    assert [c.source for c in chains[0]] == [
        f"secret/{namespace}/pod-secret", f"secret/{namespace}/sa-secret", "anonymous"]
    assert sorted(reads) == ["missing", "pod-secret", "sa-secret"]  # once each for 20
    await secrets.chain(request)
    assert len(reads) == 3  # cached
    now[0] = 31.0
    await secrets.chain(request)
    assert len(reads) == 6  # expired: read again


async def test_not_ready_until_imagepolicies_are_listed(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """crd mode with no reachable API server: /readyz says not ready (never an empty,
    allow-everything policy set presented as ready)."""
    import httpx

    from webhook.app import create_app
    from webhook.kube import source
    from webhook.settings import Settings

    kubeconfig = tmp_path / "kubeconfig"
    kubeconfig.write_text(json.dumps({
        "apiVersion": "v1", "kind": "Config", "current-context": "x",
        "clusters": [{"name": "x", "cluster": {"server": "https://127.0.0.1:9"}}],
        "users": [{"name": "x", "user": {"token": "t"}}],
        "contexts": [{"name": "x", "context": {"cluster": "x", "user": "x"}}]}))
    app = create_app(Settings(policies=tmp_path / "none", policy_source="crd",
                              kubeconfig=kubeconfig, audit_log=tmp_path / "a.log"))
    monkeypatch.setattr(source, "INITIAL_SYNC_TIMEOUT", 0.3)
    async with app.router.lifespan_context(app):
        transport = httpx.ASGITransport(app=app)
        async with httpx.AsyncClient(transport=transport, base_url="https://s") as http:
            ready = await http.get("/readyz")
    assert ready.status_code == 503 and ready.json()["ready"] is False
