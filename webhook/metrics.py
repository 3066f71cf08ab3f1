"""Prometheus metrics (SPEC §8 names), one registry per app: nothing global at import time."""

from __future__ import annotations

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram, generate_latest
from prometheus_client.exposition import CONTENT_TYPE_LATEST

__all__ = ["CONTENT_TYPE_LATEST", "Metrics"]

# Admission latency matters from ~1 ms (all cached) to the 10 s API-server timeout.
_LATENCY_BUCKETS = (0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 8, 10)


class Metrics:
    def __init__(self) -> None:
        self.registry = CollectorRegistry(auto_describe=True)
        self.admission_requests = Counter(
            "sealgate_admission_requests", "Admission requests answered, by decision and mode",
            ["decision", "mode"], registry=self.registry,
        )
        self.admission_duration = Histogram(
            "sealgate_admission_duration_seconds", "Time to answer an admission request",
            buckets=_LATENCY_BUCKETS, registry=self.registry,
        )
        self.registry_requests = Counter(
            "sealgate_registry_requests", "Registry HTTP requests, by registry host and status",
            ["registry", "status"], registry=self.registry,
        )
        self.cache_requests = Counter(
            "sealgate_cache_requests", "Fact cache lookups, by fact type and result",
            ["fact", "result"], registry=self.registry,
        )
        self.verifications = Counter(
            "sealgate_verifications", "Authority verifications, by authority type and outcome",
            ["authority_type", "outcome"], registry=self.registry,
        )
        self.inflight_checks = Gauge(
            "sealgate_inflight_checks", "Image checks in progress", registry=self.registry,
        )
        self.policy_reload_errors = Counter(
            "sealgate_policy_reload_errors", "Policy reloads that failed (last good set kept)",
            registry=self.registry,
        )
        self.policy_generation = Gauge(
            "sealgate_policy_generation", "Policy sets loaded so far", registry=self.registry,
        )
        self.malformed_requests = Counter(
            "sealgate_malformed_requests", "Requests answered 400/413 (not audited)",
            ["status"], registry=self.registry,
        )
        self.audit_write_failures = Counter(
            "sealgate_audit_write_failures",
            "Audit lines that could not be written (the request was answered HTTP 500)",
            registry=self.registry,
        )
        # SPEC §9 shared cache (Valkey/Redis)
        self.cache_integrity_failures = Counter(
            "sealgate_cache_integrity_failures",
            "Shared cache entries that failed their HMAC check (treated as misses)",
            ["fact"], registry=self.registry,
        )
        self.shared_cache_requests = Counter(
            "sealgate_shared_cache_requests",
            "Shared cache lookups after a local miss: hit, waited (a peer's fetch answered), "
            "miss, skipped (unavailable)",
            ["fact", "result"], registry=self.registry,
        )
        self.shared_cache_errors = Counter(
            "sealgate_shared_cache_errors",
            "Shared cache calls that failed or outlasted SEALGATE_CACHE_TIMEOUT",
            ["reason"], registry=self.registry,
        )
        self._shared_cache_up: Gauge | None = None

    @property
    def shared_cache_up(self) -> Gauge:
        """1 while the shared cache answers, 0 while it is skipped; exported only when
        SEALGATE_CACHE_URL is set, so installs without one never look "down"."""
        if self._shared_cache_up is None:
            self._shared_cache_up = Gauge(
                "sealgate_shared_cache_up",
                "1 while the shared cache (SEALGATE_CACHE_URL) answers in time, else 0",
                registry=self.registry,
            )
        return self._shared_cache_up

    def cache_event(self, fact: str, result: str) -> None:
        self.cache_requests.labels(fact=fact, result=result).inc()

    def registry_response(self, registry: str, status: str) -> None:
        self.registry_requests.labels(registry=registry, status=status).inc()

    def render(self) -> bytes:
        return generate_latest(self.registry)
