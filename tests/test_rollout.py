"""The webhook under a rollout: shared and cached facts, errors not remembered, policy edits,
hanging registries, hot reload, /mutate and /metrics — against the real registry."""

from __future__ import annotations

import asyncio
import base64
import functools
import json
import os
import signal
import textwrap
import time
from collections.abc import AsyncIterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx
import pytest
from cryptography.hazmat.primitives.asymmetric import ec
from starlette.applications import Starlette

from tests.admission_helpers import CountingTransport, pod_review, policy_text, signed_image
from tests.registry_server import RegistryServer, push_image
from tests.signing import PrivateKey, public_pem
from webhook.app import create_app
from webhook.settings import Settings

# a signed image seen for the first time: tag -> digest, the `.sig` manifest, its payload
# blob, the referrers API (distribution 2.8 answers 404) and the referrers tag schema
COLD = {"manifest": 1, "sig-manifest": 1, "blob": 1, "referrers-api": 1, "referrers-tag": 1}


def cold_fetches(counts: dict[str, int]) -> bool:
    """Each request of a cold check made once. The referrers listing (API, then the tag
    schema) starts beside the `.sig` manifest and is cancelled once a `.sig` signature has
    verified, since no one waits for it any more (issue 11): it may stop after either step."""
    listing = ("referrers-api", "referrers-tag")
    essential = {k: v for k, v in counts.items() if k not in listing}
    return essential == {k: v for k, v in COLD.items() if k not in listing} and all(
        counts.get(k, 0) <= COLD[k] for k in listing)


@dataclass
class Webhook:
    app: Starlette
    client: httpx.AsyncClient
    transport: CountingTransport
    policies: Path
    audit_log: Path

    async def review(self, body: dict[str, Any], path: str = "/validate") -> dict[str, Any]:
        response = await self.client.post(path, json=body)
        assert response.status_code == 200, response.text
        answer: dict[str, Any] = response.json()["response"]
        return answer


async def start(tmp_path: Path, registry: RegistryServer, key: PrivateKey, *,
                transport: CountingTransport | None = None, extra: str = "",
                **settings: Any) -> AsyncIterator[Webhook]:
    policies = tmp_path / "policies"
    policies.mkdir(exist_ok=True)
    (policies / "p.yaml").write_text(policy_text(registry.host, public_pem(key), extra=extra))
    transport = transport or CountingTransport()
    config = Settings(policies=policies, audit_log=tmp_path / "audit.log",
                      insecure_registries=frozenset({registry.host}),
                      **{"deadline": 5.0, "reload_interval": 0.05, **settings})
    app = create_app(config, transport=transport)
    async with app.router.lifespan_context(app), httpx.AsyncClient(
        transport=httpx.ASGITransport(app=app), base_url="https://sealgate"
    ) as client:
        yield Webhook(app, client, transport, policies, tmp_path / "audit.log")


@pytest.fixture
def key() -> PrivateKey:
    return ec.generate_private_key(ec.SECP256R1())


async def test_rollout_fan_in_hits_the_registry_once(tmp_path: Path, registry: RegistryServer,
                                                     key: PrivateKey) -> None:
    signed_image(registry, key, "team/rollout")
    image = f"{registry.host}/team/rollout:v1"
    async for hook in start(tmp_path, registry, key):
        # Deployment, then its ReplicaSet, then 50 Pods at once
        assert (await hook.review(pod_review(image, kind="Deployment")))["allowed"]
        cold = dict(hook.transport.counts)
        assert cold_fetches(cold), cold
        assert (await hook.review(pod_review(image, kind="ReplicaSet")))["allowed"]
        answers = await asyncio.gather(*(hook.review(pod_review(image)) for _ in range(50)))
        assert all(answer["allowed"] for answer in answers)
        assert dict(hook.transport.counts) == cold  # warm: no registry request at all
        lines = [json.loads(line) for line in hook.audit_log.read_text().splitlines()]
        assert len(lines) == 52
        assert [line["images"][0]["cached"] for line in lines].count(False) == 1


async def test_concurrent_reviews_of_a_new_digest_share_one_fetch(
    tmp_path: Path, registry: RegistryServer, key: PrivateKey
) -> None:
    signed_image(registry, key, "team/burst")
    image = f"{registry.host}/team/burst:v1"
    async for hook in start(tmp_path, registry, key):
        answers = await asyncio.gather(*(hook.review(pod_review(image)) for _ in range(100)))
        assert all(answer["allowed"] for answer in answers)
        assert cold_fetches(dict(hook.transport.counts)), hook.transport.counts
        metrics = (await hook.client.get("/metrics")).text
        assert 'sealgate_cache_requests_total{fact="signature",result="shared"}' in metrics


async def test_transient_registry_error_is_not_remembered(
    tmp_path: Path, registry: RegistryServer, key: PrivateKey
) -> None:
    signed_image(registry, key, "team/flaky")
    image = f"{registry.host}/team/flaky:v1"
    transport = CountingTransport(down=True)
    async for hook in start(tmp_path, registry, key, transport=transport):
        first = await hook.review(pod_review(image))
        assert first["allowed"] is False
        assert "could not resolve digest" in first["status"]["message"]
        assert transport.counts["manifest"] == 4  # the first try and three retries
        transport.down = False  # the registry is back
        second = await hook.review(pod_review(image))
        assert second["allowed"] is True


async def test_cached_allow_never_survives_a_policy_edit(
    tmp_path: Path, registry: RegistryServer, key: PrivateKey
) -> None:
    signed_image(registry, key, "team/edit")
    image = f"{registry.host}/team/edit:v1"
    async for hook in start(tmp_path, registry, key, reload_interval=0):
        assert (await hook.review(pod_review(image)))["allowed"]
        other = ec.generate_private_key(ec.SECP256R1())
        (hook.policies / "p.yaml").write_text(policy_text(registry.host, public_pem(other)))
        assert await hook.app.state.sealgate.reloader.reload()
        answer = await hook.review(pod_review(image))
        assert answer["allowed"] is False
        assert "no valid signature" in answer["status"]["message"]


async def test_hanging_registry_answers_by_the_deadline(
    tmp_path: Path, registry: RegistryServer, key: PrivateKey
) -> None:
    transport = CountingTransport(hang=True)
    async for hook in start(tmp_path, registry, key, transport=transport,
                            extra="  onError: warn\n", deadline=0.5):
        started = time.monotonic()
        answer = await hook.review(pod_review(f"{registry.host}/team/slow:v1"))
        assert time.monotonic() - started < 2
        assert answer["allowed"] is True
        assert "deadline of 0.5s exceeded" in answer["warnings"][0]


def kubelet_swap(policies: Path, files: dict[str, str]) -> None:
    """Replace the directory's content the way the kubelet updates a ConfigMap volume:
    a new timestamped dir, an atomic rename of the ..data symlink, stable top-level links."""
    stamp = f"..{time.time_ns()}"
    (policies / stamp).mkdir()
    for name, text in files.items():
        (policies / stamp / name).write_text(text)
    tmp_link = policies / "..data_tmp"
    tmp_link.symlink_to(stamp)
    os.replace(tmp_link, policies / "..data")
    for name in files:
        link = policies / name
        if not link.is_symlink():
            if link.exists():
                link.unlink()
            link.symlink_to(f"..data/{name}")


async def wait_for(predicate: Any, within: float = 2.0) -> float:
    started = time.monotonic()
    while not await predicate():
        if time.monotonic() - started > within:
            pytest.fail(f"condition not met within {within} s")
        await asyncio.sleep(0.02)
    return time.monotonic() - started


async def test_hot_reload_survives_kubelet_symlink_swap(
    tmp_path: Path, registry: RegistryServer, key: PrivateKey
) -> None:
    signed_image(registry, key, "team/hot")
    image = f"{registry.host}/team/hot:v1"
    async for hook in start(tmp_path, registry, key):
        (hook.policies / "p.yaml").unlink()  # from here on, the directory is a ConfigMap mount
        same_key = policy_text(registry.host, public_pem(key), extra="  mode: enforce\n")
        kubelet_swap(hook.policies, {"p.yaml": same_key})
        await wait_for(functools.partial(_generation, hook, 2))
        assert (await hook.review(pod_review(image)))["allowed"]

        other = ec.generate_private_key(ec.SECP256R1())
        kubelet_swap(hook.policies, {"p.yaml": policy_text(registry.host, public_pem(other))})
        await wait_for(functools.partial(_generation, hook, 3))
        assert (await hook.review(pod_review(image)))["allowed"] is False

        # a broken edit keeps the last good set: no allow, no 500, an error metric
        kubelet_swap(hook.policies, {"p.yaml": "apiVersion: sealgate.dev/v1alpha1\nkind: ["})
        await wait_for(functools.partial(_metric, hook, "sealgate_policy_reload_errors_total", 1.0))
        answer = await hook.review(pod_review(image))
        assert answer["allowed"] is False
        assert (await hook.client.get("/readyz")).json() == {"ready": True, "generation": 3}


async def test_sighup_forces_a_reload(tmp_path: Path, registry: RegistryServer,
                                      key: PrivateKey) -> None:
    async for hook in start(tmp_path, registry, key, reload_interval=3600):
        os.kill(os.getpid(), signal.SIGHUP)
        await wait_for(functools.partial(_generation, hook, 2))


async def _generation(hook: Webhook, expected: int) -> bool:
    generation: int = (await hook.client.get("/readyz")).json()["generation"]
    return generation == expected


async def _metric(hook: Webhook, name: str, value: float) -> bool:
    for line in (await hook.client.get("/metrics")).text.splitlines():
        if line.startswith(name + " ") and float(line.split()[1]) >= value:
            return True
    return False


async def test_metrics_names(tmp_path: Path, registry: RegistryServer, key: PrivateKey) -> None:
    push_image(registry.url, "team/metrics", "v1")
    async for hook in start(tmp_path, registry, key):
        await hook.review(pod_review(f"{registry.host}/team/metrics:v1"))
        text = (await hook.client.get("/metrics")).text
    for name in ('sealgate_admission_requests_total{decision="deny",mode="enforce"} 1.0',
                 "sealgate_admission_duration_seconds_bucket",
                 'sealgate_cache_requests_total{fact="digest",result="miss"} 1.0',
                 'sealgate_verifications_total{authority_type="key",outcome="fail"} 1.0',
                 "sealgate_inflight_checks 0.0", "sealgate_policy_reload_errors_total 0.0",
                 "sealgate_policy_generation 1.0"):
        assert name in text, name


def decoded_patch(answer: dict[str, Any]) -> list[dict[str, Any]]:
    assert answer["patchType"] == "JSONPatch"
    patch: list[dict[str, Any]] = json.loads(base64.b64decode(answer["patch"]))
    return patch


async def test_mutate_pins_verified_images_only(tmp_path: Path, registry: RegistryServer,
                                                key: PrivateKey) -> None:
    digest = signed_image(registry, key, "team/pin")
    push_image(registry.url, "team/nopin", "v1")
    signed_ref, unsigned_ref = f"{registry.host}/team/pin:v1", f"{registry.host}/team/nopin:v1"
    async for hook in start(tmp_path, registry, key, mutate=True):
        answer = await hook.review(pod_review(signed_ref), "/mutate")
        assert answer["allowed"] is True
        assert decoded_patch(answer) == [
            {"op": "replace", "path": "/spec/containers/0/image", "value": f"{signed_ref}@{digest}"}
        ]
        def cron(*images: str) -> dict[str, Any]:
            review = pod_review(signed_ref, kind="CronJob")
            review["request"]["object"]["spec"] = {"jobTemplate": {"spec": {"template": {
                "spec": {"initContainers": [{"name": "i", "image": images[0]}],
                         "containers": [{"name": "c", "image": images[1]}]}}}}}
            return review

        answer = await hook.review(cron(signed_ref, f"{signed_ref}@{digest}"), "/mutate")
        assert decoded_patch(answer) == [{
            "op": "replace", "path": "/spec/jobTemplate/spec/template/spec/initContainers/0/image",
            "value": f"{signed_ref}@{digest}",
        }]
        # one image fails: /validate will deny, so nothing is pinned; denying is its job
        answer = await hook.review(cron(signed_ref, unsigned_ref), "/mutate")
        assert answer["allowed"] is True and "patch" not in answer
        # re-invocation on the pinned object: nothing left to patch
        pinned = pod_review(f"{signed_ref}@{digest}")
        assert "patch" not in await hook.review(pinned, "/mutate")
        # /mutate writes no audit line (it decides nothing)
        assert not hook.audit_log.exists() or hook.audit_log.read_text() == ""


async def test_mutate_is_off_unless_enabled(tmp_path: Path, registry: RegistryServer,
                                            key: PrivateKey) -> None:
    async for hook in start(tmp_path, registry, key):
        response = await hook.client.post("/mutate", json=pod_review("nginx"))
        assert response.status_code == 404


async def test_policy_with_unknown_trusted_root_fails_to_load(tmp_path: Path) -> None:
    policies = tmp_path / "policies"
    policies.mkdir()
    (tmp_path / "root.json").write_text("{}")
    pem = public_pem(ec.generate_private_key(ec.SECP256R1())).decode()
    (policies / "p.yaml").write_text(f"""\
apiVersion: sealgate.dev/v1alpha1
kind: ImagePolicy
metadata: {{name: p}}
spec:
  namespaces: {{match: ["*"]}}
  rules:
    - name: r
      images: ["**"]
      signatures:
        authorities:
          - name: k
            key:
              trustedRoot: ../root.json
              publicKey: |
{textwrap.indent(pem, " " * 16)}
""")
    from webhook.errors import PolicyError
    from webhook.reload import load_policies

    with pytest.raises(PolicyError, match=r"p\.yaml:\d+: authority 'k': trusted root"):
        load_policies(policies, generation=1)
