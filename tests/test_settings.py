"""Settings from the environment and flags (SPEC §8)."""

from __future__ import annotations

from pathlib import Path

import pytest

from webhook.settings import Settings, SettingsError


def test_defaults() -> None:
    settings = Settings.from_env({})
    assert (settings.host, settings.port, settings.deadline) == ("0.0.0.0", 8443, 8.0)
    assert settings.policies == Path("policies")
    assert settings.audit_log is None and settings.mode_override is None
    assert settings.insecure_registries == frozenset() and not settings.mutate


def test_environment_and_flags() -> None:
    env = {
        "SEALGATE_HOST": "127.0.0.1", "SEALGATE_PORT": "9443", "SEALGATE_POLICIES": "/p",
        "SEALGATE_CERT": "/c.crt", "SEALGATE_KEY": "/c.key", "SEALGATE_DEADLINE": "2500ms",
        "SEALGATE_AUDIT_LOG": "/var/log/a.log", "SEALGATE_REGISTRY_AUTH": "/auth.json",
        "SEALGATE_INSECURE_REGISTRIES": "127.0.0.1:5000, registry.local:80,",
        "SEALGATE_MODE_OVERRIDE": "audit", "SEALGATE_MUTATE": "true",
    }
    settings = Settings.from_env(env, port=10443, host=None)
    assert settings.host == "127.0.0.1" and settings.port == 10443  # the flag wins
    assert settings.deadline == 2.5 and settings.policies == Path("/p")
    assert settings.cert == Path("/c.crt") and settings.key == Path("/c.key")
    assert settings.audit_log == Path("/var/log/a.log")
    assert settings.registry_auth == Path("/auth.json")
    assert settings.insecure_registries == frozenset({"127.0.0.1:5000", "registry.local:80"})
    assert settings.mode_override == "audit" and settings.mutate
    assert Settings.from_env({"SEALGATE_DEADLINE": "3"}).deadline == 3.0


@pytest.mark.parametrize(
    ("name", "value", "fragment"),
    [
        ("SEALGATE_PORT", "http", "SEALGATE_PORT: not a port number"),
        ("SEALGATE_PORT", "70000", "SEALGATE_PORT: port out of range"),
        ("SEALGATE_DEADLINE", "soon", "SEALGATE_DEADLINE: invalid duration"),
        ("SEALGATE_DEADLINE", "0s", "must be greater than zero"),
        ("SEALGATE_MODE_OVERRIDE", "off", "SEALGATE_MODE_OVERRIDE: must be audit or warn"),
        ("SEALGATE_MUTATE", "maybe", "SEALGATE_MUTATE: expected true or false"),
    ],
)
def test_bad_values_name_the_variable(name: str, value: str, fragment: str) -> None:
    with pytest.raises(SettingsError, match=fragment):
        Settings.from_env({name: value})


def test_cache_and_reload_settings() -> None:
    settings = Settings.from_env({
        "SEALGATE_CACHE_SIZE": "500", "SEALGATE_DIGEST_TTL": "30s", "SEALGATE_CACHE_TTL": "5m",
        "SEALGATE_FAILURE_TTL": "10", "SEALGATE_RELOAD_INTERVAL": "0",
    })
    assert settings.cache_size == 500 and settings.digest_ttl == 30.0
    assert settings.success_ttl == 300.0 and settings.failure_ttl == 10.0
    assert settings.reload_interval == 0.0
    defaults = Settings.from_env({})
    assert (defaults.cache_size, defaults.digest_ttl, defaults.success_ttl,
            defaults.failure_ttl, defaults.reload_interval) == (10_000, 60.0, 600.0, 30.0, 1.0)
    with pytest.raises(SettingsError, match="SEALGATE_CACHE_SIZE: not a whole number"):
        Settings.from_env({"SEALGATE_CACHE_SIZE": "big"})
    with pytest.raises(SettingsError, match="SEALGATE_CACHE_TTL: invalid duration"):
        Settings.from_env({"SEALGATE_CACHE_TTL": "forever"})
