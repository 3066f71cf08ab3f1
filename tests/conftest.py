"""Shared fixtures. Each section is one service or concern; logic lives in helper modules."""

from __future__ import annotations

import os
import shutil
from collections.abc import Iterator

import pytest

from tests.kube_server import MISSING_MESSAGE as KUBE_MISSING_MESSAGE
from tests.kube_server import KubeServer, apiserver_source, find_or_install_etcd
from tests.redis_server import MISSING_MESSAGE as REDIS_MISSING
from tests.redis_server import RedisServer, find_or_install_redis_binary
from tests.registry_server import MISSING_MESSAGE, RegistryServer, find_or_install_registry_binary

# --------------------------------------------------------------------------- real registry
# Debian's docker-registry (tests/registry_server.py). Missing binary: skip, unless
# SEALGATE_REQUIRE_REGISTRY=1 (CI), where a skipped registry test would hide a gap.


@pytest.fixture(scope="session")
def registry_binary() -> str:
    binary = find_or_install_registry_binary()
    if binary is None:
        if os.environ.get("SEALGATE_REQUIRE_REGISTRY") == "1":
            pytest.fail(MISSING_MESSAGE)
        pytest.skip(MISSING_MESSAGE)
    return binary


@pytest.fixture(scope="session")
def registry(registry_binary: str) -> Iterator[RegistryServer]:
    """A started registry shared by the session (plain HTTP: list its host as insecure)."""
    with RegistryServer(binary=registry_binary) as server:
        yield server


# --------------------------------------------------------------------------- real Valkey/Redis
# Debian's redis-server (tests/redis_server.py) for the shared cache (SPEC §9); skipped
# when missing, unless SEALGATE_REQUIRE_REGISTRY=1 (CI) makes that a failure.


@pytest.fixture(scope="session")
def redis_binary() -> str:
    binary = find_or_install_redis_binary()
    if binary is None:
        if os.environ.get("SEALGATE_REQUIRE_REGISTRY") == "1":
            pytest.fail(REDIS_MISSING)
        pytest.skip(REDIS_MISSING)
    return binary


@pytest.fixture
def redis_server(redis_binary: str) -> Iterator[RedisServer]:
    """A fresh, empty server per test (tests kill and restart it)."""
    with RedisServer(redis_binary) as server:
        yield server


def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    # Tests that use a real registry carry the "registry" marker: `pytest -m "not registry"`;
    # those that use a real redis-server the "redis" marker.
    for item in items:
        names = set(getattr(item, "fixturenames", ()))
        if {"registry", "registry_binary"} & names:
            item.add_marker(pytest.mark.registry)
        if {"redis_server", "redis_binary"} & names:
            item.add_marker(pytest.mark.redis)


# --------------------------------------------------------------------------- real API server
# etcd + kube-apiserver (tests/kube_server.py). Missing: skip, unless
# SEALGATE_REQUIRE_APISERVER=1 (CI), where a skipped cluster test would hide a gap.


@pytest.fixture(scope="session")
def kube() -> Iterator[KubeServer]:
    """A started API server shared by the session; ``kube.kubectl(...)`` drives it."""
    source, etcd = apiserver_source(), find_or_install_etcd()
    if source is None or etcd is None or shutil.which("kubectl") is None:
        if os.environ.get("SEALGATE_REQUIRE_APISERVER") == "1":
            pytest.fail(KUBE_MISSING_MESSAGE)
        pytest.skip(KUBE_MISSING_MESSAGE)
    with KubeServer(apiserver=source, etcd=etcd) as server:
        yield server
