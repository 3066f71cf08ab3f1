"""Two sealgate replicas sharing a real redis-server, in front of the real registry (SPEC §9):
one fetch per fact across replicas, forged entries never allow, a dead cache changes nothing."""

from __future__ import annotations

import asyncio
import contextlib
import json
import time
from collections.abc import AsyncIterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx
import pytest
import redis
import trustme
from cryptography.hazmat.primitives.asymmetric import ec
from starlette.applications import Starlette

from tests.admission_helpers import CountingTransport, pod_review, signed_image
from tests.redis_server import RedisServer
from tests.registry_server import RegistryServer, push_image
from tests.signing import PrivateKey
from tests.test_scan_gate import DEFAULT_SCAN, attest, policy, vuln_predicate
from webhook.app import create_app
from webhook.settings import Settings
from webhook.sharedcache import SharedCache


@dataclass
class Replica:
    app: Starlette
    client: httpx.AsyncClient
    transport: CountingTransport
    audit_log: Path

    async def review(self, image: str) -> dict[str, Any]:
        response = await self.client.post("/validate", json=pod_review(image))
        assert response.status_code == 200, response.text
        answer: dict[str, Any] = response.json()["response"]
        return answer

    async def settle(self) -> None:
        level = self.app.state.sealgate.gatherer.cache.second
        assert isinstance(level, SharedCache)
        await level.flush()

    async def metric(self, name: str) -> float:
        text = (await self.client.get("/metrics")).text
        return sum(float(line.rsplit(" ", 1)[1]) for line in text.splitlines()
                   if line.startswith(name))


@pytest.fixture
def key() -> PrivateKey:
    return ec.generate_private_key(ec.SECP256R1())


@contextlib.asynccontextmanager
async def replica(tmp_path: Path, name: str, registry: RegistryServer, key: PrivateKey,
                  redis_url: str | None) -> AsyncIterator[Replica]:
    policies = tmp_path / "policies"
    policies.mkdir(parents=True, exist_ok=True)
    (policies / "p.yaml").write_text(policy(registry.host, key, scan=DEFAULT_SCAN))
    secret = tmp_path / "cache.key"
    secret.write_text("shared-secret-of-the-two-replicas\n")
    settings = Settings(policies=policies, audit_log=tmp_path / f"{name}.log", deadline=5.0,
                        insecure_registries=frozenset({registry.host}), reload_interval=0,
                        cache_url=redis_url, cache_key=secret,
                        # about sharing, not speed: a busy CI host must not skip the cache
                        cache_timeout=0.5)
    transport = CountingTransport()
    app = create_app(settings, transport=transport)
    async with app.router.lifespan_context(app), httpx.AsyncClient(
        transport=httpx.ASGITransport(app=app), base_url="https://sealgate"
    ) as client:
        yield Replica(app, client, transport, tmp_path / f"{name}.log")


@contextlib.asynccontextmanager
async def two(tmp_path: Path, registry: RegistryServer, key: PrivateKey,
              redis_url: str | None) -> AsyncIterator[tuple[Replica, Replica]]:
    async with replica(tmp_path, "a", registry, key, redis_url) as a, \
            replica(tmp_path, "b", registry, key, redis_url) as b:
        yield a, b


def scanned_image(registry: RegistryServer, key: PrivateKey, repo: str) -> str:
    digest = signed_image(registry, key, repo)
    attest(registry, repo, digest, key, vuln_predicate("alpine-310.json.golden"))
    return f"{registry.host}/{repo}:v1"


async def test_second_replica_fetches_nothing_the_first_verified(
    tmp_path: Path, registry: RegistryServer, key: PrivateKey, redis_server: RedisServer
) -> None:
    image = scanned_image(registry, key, "team/shared-one")
    async with two(tmp_path, registry, key, redis_server.url) as (a, b):
        first = await a.review(image)
        assert first["allowed"] and first["warnings"]
        assert a.transport.counts["sig-manifest"] == 1
        assert a.transport.counts["att-manifest"] == 1
        await a.settle()
        second = await b.review(image)
        assert second == {**first, "uid": second["uid"]}
        assert b.transport.total == 0  # no tag, signature or scan fetch at all
        audit = json.loads(b.audit_log.read_text().splitlines()[0])
        assert audit["images"][0]["cached"] is True
        assert audit["images"][0]["scan"]["counts"] == json.loads(
            a.audit_log.read_text().splitlines()[0])["images"][0]["scan"]["counts"]


async def test_without_sharing_each_replica_fetches(
    tmp_path: Path, registry: RegistryServer, key: PrivateKey
) -> None:
    image = scanned_image(registry, key, "team/unshared")
    async with two(tmp_path, registry, key, None) as (a, b):
        assert (await a.review(image))["allowed"]
        assert (await b.review(image))["allowed"]
        assert a.transport.counts["sig-manifest"] == b.transport.counts["sig-manifest"] == 1


async def test_fifty_reviews_split_over_two_replicas_fetch_the_signature_once(
    tmp_path: Path, registry: RegistryServer, key: PrivateKey, redis_server: RedisServer
) -> None:
    image = scanned_image(registry, key, "team/rollout-wide")
    async with two(tmp_path, registry, key, redis_server.url) as (a, b):
        answers = await asyncio.gather(*(
            (a if n % 2 else b).review(image) for n in range(50)
        ))
        assert all(answer["allowed"] for answer in answers)
        for kind in ("manifest", "sig-manifest", "att-manifest"):
            assert a.transport.counts[kind] + b.transport.counts[kind] == 1, kind


async def test_swapped_or_corrupted_entries_never_turn_a_deny_into_an_allow(
    tmp_path: Path, registry: RegistryServer, key: PrivateKey, redis_server: RedisServer
) -> None:
    signed = scanned_image(registry, key, "team/good")
    push_image(registry.url, "team/bad", "v1")  # unsigned, no scan
    unsigned = f"{registry.host}/team/bad:v1"
    server = redis.Redis.from_url(redis_server.url)
    async with two(tmp_path, registry, key, redis_server.url) as (a, _):
        assert (await a.review(signed))["allowed"]
        assert not (await a.review(unsigned))["allowed"]
        await a.settle()
    entries = {k: server.get(k) for k in server.keys("sealgate:facts:*")
               if not k.endswith(b":lease")}
    by_fact: dict[str, list[bytes]] = {}
    for name in entries:
        by_fact.setdefault(name.split(b":")[3].decode(), []).append(name)
    assert len(by_fact["signature"]) == 2 and len(by_fact["scan"]) == 2
    allowed_values = {fact: [entries[k] for k in keys] for fact, keys in by_fact.items()}

    def forgeries() -> list[dict[bytes, bytes]]:
        """Every entry overwritten with another entry of its fact, or edited, or garbage."""
        out = []
        for keys in by_fact.values():
            for target in keys:
                for value in allowed_values[target.split(b":")[3].decode()]:
                    if value != entries[target]:
                        out.append({target: value})
                edited = entries[target].replace(b'"fail"', b'"ok"').replace(b"[]", b"{}")
                out.append({target: edited})
                out.append({target: b"{}"})
        return out

    for number, forged in enumerate(forgeries()):
        server.flushall()
        server.mset({**entries, **forged})
        async with replica(tmp_path / str(number), "b", registry, key, redis_server.url) as b:
            tmp_answer = await b.review(unsigned)
            assert not tmp_answer["allowed"], (number, forged)
            assert "no valid signature" in tmp_answer["status"]["message"]
            assert (await b.review(signed))["allowed"]
            if any(value != entries.get(k) for k, value in forged.items()):
                assert await b.metric("sealgate_cache_integrity_failures_total") >= 1


async def test_cache_killed_mid_run_changes_no_decision(
    tmp_path: Path, registry: RegistryServer, key: PrivateKey, redis_server: RedisServer
) -> None:
    images = [scanned_image(registry, key, f"team/kill-{n}") for n in range(3)]
    for n in range(3):
        push_image(registry.url, f"team/kill-bad-{n}", "v1")
    bad = [f"{registry.host}/team/kill-bad-{n}:v1" for n in range(3)]
    async with two(tmp_path, registry, key, redis_server.url) as (a, b):
        verdicts: list[bool] = []
        durations: list[float] = []
        for step, (good, unsigned) in enumerate(zip(images, bad, strict=True)):
            if step == 1:
                redis_server.kill()
            for hook in (a, b):
                started = time.monotonic()
                verdicts += [(await hook.review(good))["allowed"],
                             not (await hook.review(unsigned))["allowed"]]
                durations.append(time.monotonic() - started)
        assert all(verdicts)
        assert max(durations) < 2.0
        assert await a.metric("sealgate_shared_cache_up") == 0
        lines = a.audit_log.read_text().splitlines() + b.audit_log.read_text().splitlines()
        assert len(lines) == 12
        assert all(json.loads(line)["reason"] is None for line in lines)


async def test_over_tls_with_a_password(
    tmp_path: Path, registry: RegistryServer, key: PrivateKey, redis_binary: str
) -> None:
    """rediss:// with the server's CA named in the URL, and requirepass; a wrong password
    only turns sharing off."""
    image = scanned_image(registry, key, "team/over-tls")
    with RedisServer(redis_binary, tls=trustme.CA(), password="s3cret") as server:
        async with two(tmp_path, registry, key, server.url) as (a, b):
            assert (await a.review(image))["allowed"]
            await a.settle()
            assert (await b.review(image))["allowed"]
            assert b.transport.total == 0
        wrong = server.url.replace(":s3cret@", ":wrong@")
        async with replica(tmp_path / "wrong", "c", registry, key, wrong) as c:
            assert (await c.review(image))["allowed"]
            assert c.transport.counts["sig-manifest"] == 1
            assert await c.metric("sealgate_shared_cache_up") == 0
