"""Settings: built once, from the environment and command-line flags (SPEC §8)."""

from __future__ import annotations

import os
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

from webhook.durations import parse_duration
from webhook.errors import SealgateError
from webhook.limits import DEFAULT_MAX_IMAGES, MIB, RegistryLimits
from webhook.policy import Mode

POLICY_SOURCES = ("files", "crd", "both")


class SettingsError(SealgateError):
    """A setting has a value sealgate cannot use; the message names the variable."""


@dataclass(frozen=True, slots=True)
class Settings:
    host: str = "0.0.0.0"  # noqa: S104 - a webhook serves the cluster network by design
    port: int = 8443
    policies: Path = Path("policies")
    cert: Path | None = None
    key: Path | None = None
    deadline: float = 8.0  # seconds; below the API server's timeoutSeconds (10)
    audit_log: Path | None = None  # None: stdout
    registry_auth: Path | None = None
    insecure_registries: frozenset[str] = field(default_factory=frozenset)
    mode_override: Mode | None = None
    mutate: bool = False
    max_body_bytes: int = 3 * 1024 * 1024
    cache_size: int = 10_000  # entries per fact type
    digest_ttl: float = 60.0  # tag -> digest
    success_ttl: float = 600.0  # verified signatures, scan results
    failure_ttl: float = 30.0  # definitive failures (unsigned, tag unknown, no scan)
    reload_interval: float = 1.0  # policy directory polling; 0 disables hot reload
    policy_source: str = "files"  # files | crd | both (SPEC §9)
    kubeconfig: Path | None = None  # None: in-cluster config, else $KUBECONFIG
    pod_pull_secrets: bool = False  # registry credentials from pods' imagePullSecrets
    audit_key: Path | None = None  # file with the HMAC key of the audit chain (SPEC §9)
    workers: int = 1  # processes serving one port (SPEC §9)
    # SPEC §9 hard limits: what one request can make sealgate do
    max_images: int = DEFAULT_MAX_IMAGES  # distinct images per request; over it: denied
    max_manifest_bytes: int = 4 * MIB
    max_blob_bytes: int = 4 * MIB
    max_referrers_bytes: int = 4 * MIB
    max_signatures: int = 100  # signatures (and attestations) examined per image
    max_referrers: int = 1000  # referrers examined per image
    max_header_bytes: int = 64 * 1024  # all request headers of one request: else 431
    max_headers: int = 100  # request header lines: else 431
    registry_concurrency: int = 32  # requests in flight per registry
    # SPEC §9 shared cache: redis:// or rediss:// (Valkey or Redis) behind the local cache
    cache_url: str | None = None
    cache_key: Path | None = None  # file holding the HMAC key; required with cache_url
    cache_timeout: float = 0.05  # slower answers are skipped (local cache only)

    @classmethod
    def from_env(cls, env: Mapping[str, str] | None = None, **overrides: Any) -> Settings:
        """Settings from ``SEALGATE_*`` variables; non-None ``overrides`` (flags) win."""
        env = os.environ if env is None else env
        values: dict[str, Any] = {}

        def text(name: str) -> str | None:
            value = env.get(name)
            return value if value else None

        if (v := text("SEALGATE_HOST")) is not None:
            values["host"] = v
        if (v := text("SEALGATE_PORT")) is not None:
            values["port"] = _port(v, "SEALGATE_PORT")
        for attr, var in (
            ("policies", "SEALGATE_POLICIES"),
            ("cert", "SEALGATE_CERT"),
            ("key", "SEALGATE_KEY"),
            ("audit_log", "SEALGATE_AUDIT_LOG"),
            ("registry_auth", "SEALGATE_REGISTRY_AUTH"),
            ("audit_key", "SEALGATE_AUDIT_KEY"),
        ):
            if (v := text(var)) is not None:
                values[attr] = Path(v)
        if (v := text("SEALGATE_DEADLINE")) is not None:
            try:
                values["deadline"] = parse_duration(v).total_seconds()
            except ValueError as exc:
                raise SettingsError(f"SEALGATE_DEADLINE: {exc}") from exc
            if values["deadline"] <= 0:
                raise SettingsError("SEALGATE_DEADLINE: must be greater than zero")
        for attr, var in (
            ("digest_ttl", "SEALGATE_DIGEST_TTL"),
            ("success_ttl", "SEALGATE_CACHE_TTL"),
            ("failure_ttl", "SEALGATE_FAILURE_TTL"),
            ("reload_interval", "SEALGATE_RELOAD_INTERVAL"),
        ):
            if (v := text(var)) is not None:
                try:
                    values[attr] = parse_duration(v).total_seconds()
                except ValueError as exc:
                    raise SettingsError(f"{var}: {exc}") from exc
        if (v := text("SEALGATE_CACHE_SIZE")) is not None:
            try:
                values["cache_size"] = int(v)
            except ValueError:
                raise SettingsError(f"SEALGATE_CACHE_SIZE: not a whole number: {v!r}") from None
            if values["cache_size"] < 1:
                raise SettingsError("SEALGATE_CACHE_SIZE: must be at least 1")
        if (v := text("SEALGATE_WORKERS")) is not None:
            try:
                values["workers"] = int(v)
            except ValueError:
                raise SettingsError(f"SEALGATE_WORKERS: not a whole number: {v!r}") from None
        for attr, var in _COUNTS:
            if (v := text(var)) is not None:
                values[attr] = _count(v, var)
        for attr, var in _SIZES:
            if (v := text(var)) is not None:
                values[attr] = _size(v, var)
        if (v := text("SEALGATE_INSECURE_REGISTRIES")) is not None:
            values["insecure_registries"] = frozenset(
                part.strip() for part in v.split(",") if part.strip()
            )
        if (v := text("SEALGATE_MODE_OVERRIDE")) is not None:
            if v not in ("audit", "warn", "enforce"):
                raise SettingsError(
                    f"SEALGATE_MODE_OVERRIDE: must be audit or warn, not {v!r}"
                )
            values["mode_override"] = None if v == "enforce" else v
        if (v := text("SEALGATE_MUTATE")) is not None:
            values["mutate"] = _bool(v, "SEALGATE_MUTATE")
        if (v := text("SEALGATE_POD_PULL_SECRETS")) is not None:
            values["pod_pull_secrets"] = _bool(v, "SEALGATE_POD_PULL_SECRETS")
        if (v := text("SEALGATE_POLICY_SOURCE")) is not None:
            values["policy_source"] = v
        _shared_cache(text, values)
        settings = cls(**values)
        flags = {k: v for k, v in overrides.items() if v is not None}
        settings = replace(settings, **flags) if flags else settings
        if settings.policy_source not in POLICY_SOURCES:
            raise SettingsError(
                f"SEALGATE_POLICY_SOURCE / --policy-source: must be one of "
                f"{', '.join(POLICY_SOURCES)}, not {settings.policy_source!r}"
            )
        if settings.workers < 1:
            raise SettingsError(f"SEALGATE_WORKERS: must be at least 1, not {settings.workers}")
        return settings

    @property
    def registry_limits(self) -> RegistryLimits:
        return RegistryLimits(
            max_manifest_bytes=self.max_manifest_bytes,
            max_blob_bytes=self.max_blob_bytes,
            max_referrers_bytes=self.max_referrers_bytes,
            max_signatures=self.max_signatures,
            max_referrers=self.max_referrers,
        )


_COUNTS = (
    ("max_images", "SEALGATE_MAX_IMAGES"),
    ("max_signatures", "SEALGATE_MAX_SIGNATURES"),
    ("max_referrers", "SEALGATE_MAX_REFERRERS"),
    ("max_headers", "SEALGATE_MAX_HEADERS"),
    ("registry_concurrency", "SEALGATE_REGISTRY_CONCURRENCY"),
)
_SIZES = (
    ("max_manifest_bytes", "SEALGATE_MAX_MANIFEST_BYTES"),
    ("max_blob_bytes", "SEALGATE_MAX_BLOB_BYTES"),
    ("max_referrers_bytes", "SEALGATE_MAX_REFERRERS_BYTES"),
    ("max_header_bytes", "SEALGATE_MAX_HEADER_BYTES"),
)
_UNITS = {"": 1, "k": 1000, "ki": 1024, "m": 1000**2, "mi": 1024**2}


def _count(value: str, name: str) -> int:
    try:
        number = int(value)
    except ValueError:
        raise SettingsError(f"{name}: not a whole number: {value!r}") from None
    if number < 1:
        raise SettingsError(f"{name}: must be at least 1")
    return number


def _size(value: str, name: str) -> int:
    """Bytes: ``4194304``, ``4Mi``, ``512Ki``, ``1M``."""
    text = value.strip()
    digits = text.rstrip("KkMmIi")
    unit = text[len(digits):].lower()
    if not digits.isdigit() or unit not in _UNITS:
        raise SettingsError(f"{name}: not a size in bytes (e.g. 4Mi, 65536): {value!r}")
    size = int(digits) * _UNITS[unit]
    if size < 1:
        raise SettingsError(f"{name}: must be at least 1 byte")
    return size


def _shared_cache(text: Callable[[str], str | None], values: dict[str, Any]) -> None:
    """SEALGATE_CACHE_URL / _KEY / _TIMEOUT (SPEC §9): a URL without a key is refused."""
    if (v := text("SEALGATE_CACHE_TIMEOUT")) is not None:
        try:
            values["cache_timeout"] = parse_duration(v).total_seconds()
        except ValueError as exc:
            raise SettingsError(f"SEALGATE_CACHE_TIMEOUT: {exc}") from exc
        if values["cache_timeout"] <= 0:
            raise SettingsError("SEALGATE_CACHE_TIMEOUT: must be greater than zero")
    if (v := text("SEALGATE_CACHE_KEY")) is not None:
        values["cache_key"] = Path(v)
    url = text("SEALGATE_CACHE_URL")
    if url is None:
        return
    scheme = url.partition("://")[0].lower() if "://" in url else ""
    if scheme not in ("redis", "rediss"):
        raise SettingsError(
            "SEALGATE_CACHE_URL: must start with redis:// or rediss:// (Valkey or Redis)"
        )
    if "cache_key" not in values:
        raise SettingsError(
            "SEALGATE_CACHE_KEY: required with SEALGATE_CACHE_URL (a file holding the secret "
            "that authenticates shared cache entries)"
        )
    values["cache_url"] = url


def _port(value: str, name: str) -> int:
    try:
        port = int(value)
    except ValueError:
        raise SettingsError(f"{name}: not a port number: {value!r}") from None
    if not 0 < port < 65536:
        raise SettingsError(f"{name}: port out of range: {port}")
    return port


def _bool(value: str, name: str) -> bool:
    lowered = value.strip().lower()
    if lowered in ("1", "true", "yes", "on"):
        return True
    if lowered in ("0", "false", "no", "off"):
        return False
    raise SettingsError(f"{name}: expected true or false, not {value!r}")
