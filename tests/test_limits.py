"""SPEC §9 hard limits: settings with safe defaults, and each one binds."""

from __future__ import annotations

import hashlib

import httpx
import pytest

from tests.registry_server import OCI_MANIFEST
from tests.test_registry import MOCK_REF, manifest_response, mock_client, signature_manifest
from webhook.errors import RegistryError
from webhook.limits import RegistryLimits
from webhook.registry import RegistryClient
from webhook.settings import Settings, SettingsError


def _sha256(data: bytes) -> str:
    return "sha256:" + hashlib.sha256(data).hexdigest()


def test_safe_defaults() -> None:
    settings = Settings.from_env({})
    assert settings.max_images == 200
    assert settings.registry_limits == RegistryLimits(
        max_manifest_bytes=4 * 1024 * 1024, max_blob_bytes=4 * 1024 * 1024,
        max_referrers_bytes=4 * 1024 * 1024, max_signatures=100, max_referrers=1000)
    assert (settings.max_header_bytes, settings.max_headers) == (64 * 1024, 100)
    assert settings.registry_concurrency == 32


def test_limits_from_the_environment() -> None:
    settings = Settings.from_env({
        "SEALGATE_MAX_IMAGES": "50", "SEALGATE_MAX_MANIFEST_BYTES": "1Mi",
        "SEALGATE_MAX_BLOB_BYTES": "512Ki", "SEALGATE_MAX_REFERRERS_BYTES": "2000000",
        "SEALGATE_MAX_SIGNATURES": "10", "SEALGATE_MAX_REFERRERS": "64",
        "SEALGATE_MAX_HEADER_BYTES": "16Ki", "SEALGATE_MAX_HEADERS": "40",
        "SEALGATE_REGISTRY_CONCURRENCY": "8",
    })
    assert settings.max_images == 50
    assert settings.registry_limits == RegistryLimits(1024 * 1024, 512 * 1024, 2_000_000, 10, 64)
    assert (settings.max_header_bytes, settings.max_headers) == (16 * 1024, 40)
    assert settings.registry_concurrency == 8


@pytest.mark.parametrize(("name", "value", "fragment"), [
    ("SEALGATE_MAX_IMAGES", "0", "at least 1"),
    ("SEALGATE_MAX_IMAGES", "many", "not a whole number"),
    ("SEALGATE_MAX_MANIFEST_BYTES", "4MB", "not a size in bytes"),
    ("SEALGATE_MAX_BLOB_BYTES", "-1", "not a size in bytes"),
    ("SEALGATE_MAX_SIGNATURES", "1.5", "not a whole number"),
])
def test_bad_limits_name_the_variable(name: str, value: str, fragment: str) -> None:
    with pytest.raises(SettingsError, match=f"{name}: .*{fragment}"):
        Settings.from_env({name: value})


async def test_manifest_limit_binds() -> None:
    manifest = b'{"schemaVersion": 2, "layers": []}' + b" " * 4096

    def handler(request: httpx.Request) -> httpx.Response:
        return httpx.Response(200, content=manifest, headers={"Content-Type": OCI_MANIFEST})

    async with mock_client(handler) as http:
        client = RegistryClient(http, limits=RegistryLimits(max_manifest_bytes=1024))
        with pytest.raises(RegistryError, match="larger than the limit of 1024 bytes"):
            await client.resolve_digest(MOCK_REF)
        assert await RegistryClient(http).resolve_digest(MOCK_REF) == _sha256(manifest)


async def test_signature_count_limit_binds() -> None:
    blobs = [f"payload {n}".encode() for n in range(20)]
    by_digest = {_sha256(blob): blob for blob in blobs}
    fetched: list[str] = []

    def handler(request: httpx.Request) -> httpx.Response:
        if "/manifests/" in request.url.path:
            return manifest_response(signature_manifest(blobs))
        digest = request.url.path.rsplit("/", 1)[1]
        fetched.append(digest)
        return httpx.Response(200, content=by_digest[digest])

    async with mock_client(handler) as http:
        client = RegistryClient(http, limits=RegistryLimits(max_signatures=5))
        layers = await client.cosign_signatures(MOCK_REF, _sha256(b"image"))
    assert [layer.payload for layer in layers] == blobs[:5]
    assert len(fetched) == 5
