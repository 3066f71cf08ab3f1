"""Registry retries, backoff, per-registry concurrency and the referrers-API memo.

MockTransport here stands in only for faults a real registry cannot be made to
produce on demand: 429 storms, 5xx bursts, connection resets, slow answers.
"""

from __future__ import annotations

import hashlib
import json
import time

import anyio
import httpx
import pytest

from webhook.errors import DigestMismatchError, RegistryError
from webhook.oci import OCI_INDEX
from webhook.references import parse_reference
from webhook.registry import RegistryClient

MANIFEST = json.dumps({"schemaVersion": 2, "config": {}, "layers": [],
                       "mediaType": "application/vnd.oci.image.manifest.v1+json"}).encode()
DIGEST = "sha256:" + hashlib.sha256(MANIFEST).hexdigest()
REF = parse_reference("registry.example.com/team/app:v1")


def ok() -> httpx.Response:
    return httpx.Response(200, content=MANIFEST,
                          headers={"content-type": "application/vnd.oci.image.manifest.v1+json"})


def client(handler: object, **options: object) -> tuple[httpx.AsyncClient, RegistryClient,
                                                        list[tuple[str, str]]]:
    seen: list[tuple[str, str]] = []
    http = httpx.AsyncClient(transport=httpx.MockTransport(handler))  # type: ignore[arg-type]
    registry = RegistryClient(http, on_response=lambda host, status: seen.append((host, status)),
                              **{"backoff": 0.01, **options})  # type: ignore[arg-type]
    return http, registry, seen


@pytest.mark.parametrize("status", [429, 500, 502, 503])
async def test_transient_statuses_are_retried(status: int) -> None:
    answers = [httpx.Response(status), httpx.Response(status), ok()]

    def handler(request: httpx.Request) -> httpx.Response:
        return answers.pop(0)

    http, registry, seen = client(handler)
    async with http:
        assert await registry.resolve_digest(REF) == DIGEST
    assert [s for _, s in seen] == [str(status), str(status), "200"]
    assert {host for host, _ in seen} == {"registry.example.com"}


async def test_a_429_storm_gives_up_after_the_retries() -> None:
    calls = 0

    def handler(request: httpx.Request) -> httpx.Response:
        nonlocal calls
        calls += 1
        return httpx.Response(429, headers={"retry-after": "0"})

    http, registry, _ = client(handler)
    async with http:
        with pytest.raises(RegistryError, match="rate limiting"):
            await registry.resolve_digest(REF)
    assert calls == 4


async def test_a_long_retry_after_is_not_waited_for() -> None:
    calls = 0

    def handler(request: httpx.Request) -> httpx.Response:
        nonlocal calls
        calls += 1
        return httpx.Response(429, headers={"retry-after": "120"})

    http, registry, _ = client(handler)
    started = time.monotonic()
    async with http:
        with pytest.raises(RegistryError, match="HTTP 429"):
            await registry.resolve_digest(REF)
    assert calls == 1 and time.monotonic() - started < 1


async def test_connection_resets_are_retried() -> None:
    failures = 2

    def handler(request: httpx.Request) -> httpx.Response:
        nonlocal failures
        if failures:
            failures -= 1
            raise httpx.ReadError("connection reset by peer", request=request)
        return ok()

    http, registry, seen = client(handler)
    async with http:
        assert await registry.resolve_digest(REF) == DIGEST
    assert [s for _, s in seen] == ["error", "error", "200"]


async def test_wrong_content_and_not_found_are_not_retried() -> None:
    calls = 0

    def handler(request: httpx.Request) -> httpx.Response:
        nonlocal calls
        calls += 1
        if request.url.path.endswith("/v1"):
            return httpx.Response(404)
        return httpx.Response(200, content=b"{}")

    http, registry, _ = client(handler)
    async with http:
        with pytest.raises(DigestMismatchError):
            await registry.get_manifest(REF, DIGEST)
        assert calls == 1
        with pytest.raises(RegistryError):
            await registry.resolve_digest(REF)
    assert calls == 2


async def test_retries_stop_at_the_deadline() -> None:
    def handler(request: httpx.Request) -> httpx.Response:
        return httpx.Response(503)

    http, registry, _ = client(handler, backoff=5.0)  # each wait would be up to 5, 10, 20 s
    started = time.monotonic()
    async with http:
        with anyio.move_on_after(0.3):
            await registry.resolve_digest(REF)
    assert time.monotonic() - started < 1


async def test_per_registry_concurrency_limit() -> None:
    running = peak = 0

    async def handler(request: httpx.Request) -> httpx.Response:
        nonlocal running, peak
        running += 1
        peak = max(peak, running)
        await anyio.sleep(0.02)
        running -= 1
        return ok()

    http, registry, _ = client(handler, max_concurrency=3)
    async with http, anyio.create_task_group() as tg:
        for index in range(12):
            tg.start_soon(registry.get_manifest, REF, f"t{index}")
    assert peak == 3


async def test_missing_referrers_api_is_remembered() -> None:
    paths: list[str] = []

    def handler(request: httpx.Request) -> httpx.Response:
        paths.append(request.url.path)
        return httpx.Response(404)

    http, registry, _ = client(handler)
    async with http:
        assert await registry.referrers(REF, DIGEST) == []
        assert await registry.referrers(REF, DIGEST) == []
    assert sum("/referrers/" in path for path in paths) == 1
    assert sum("/manifests/sha256-" in path for path in paths) == 2


async def test_an_unknown_repository_does_not_mark_the_registry_as_lacking_the_api() -> None:
    paths: list[str] = []

    def handler(request: httpx.Request) -> httpx.Response:
        paths.append(request.url.path)
        if "/made-up/" in request.url.path:
            return httpx.Response(404, json={"errors": [{"code": "NAME_UNKNOWN",
                                                         "message": "repository name not known"}]})
        if "/referrers/" in request.url.path:
            index = {"schemaVersion": 2, "manifests": []}
            return httpx.Response(200, json=index, headers={"content-type": OCI_INDEX})
        return httpx.Response(404)

    http, registry, _ = client(handler)
    async with http:
        made_up = parse_reference("registry.example.com/made-up/app@" + DIGEST)
        assert await registry.referrers(made_up, DIGEST) == []
        assert await registry.referrers(REF, DIGEST) == []
    # the real repository still asked the referrers API
    assert sum("/referrers/" in path and "/team/app/" in path for path in paths) == 1
