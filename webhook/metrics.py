"""Prometheus metrics (SPEC §8 names), one registry per app: nothing global at import time.

With ``--workers N`` every worker process counts into prometheus-client's
multiprocess files (``PROMETHEUS_MULTIPROC_DIR``, set by ``serve`` before the
workers start), and ``/metrics``, whichever worker answers it, reports the sum
over all workers (SPEC §9).
"""

from __future__ import annotations

import os
from typing import Any

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram, generate_latest
from prometheus_client.exposition import CONTENT_TYPE_LATEST

__all__ = ["CONTENT_TYPE_LATEST", "Metrics"]

# Admission latency matters from ~1 ms (all cached) to the 10 s API-server timeout.
_LATENCY_BUCKETS = (0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 8, 10)
MULTIPROCESS_ENV = "PROMETHEUS_MULTIPROC_DIR"


class Metrics:
    def __init__(self) -> None:
        self.multiprocess = bool(os.environ.get(MULTIPROCESS_ENV))
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
            multiprocess_mode="livesum",
        )
        self.policy_reload_errors = Counter(
            "sealgate_policy_reload_errors", "Policy reloads that failed (last good set kept)",
            registry=self.registry,
        )
        self.policy_generation = Gauge(
            "sealgate_policy_generation", "Policy sets loaded so far", registry=self.registry,
            multiprocess_mode="livemax",
        )
        self.malformed_requests = Counter(
            "sealgate_malformed_requests", "Requests answered 400/413 (not audited)",
            ["status"], registry=self.registry,
        )
        self.audit_write_failures = Counter(
            "sealgate_audit_write_failures",
            "Admissions answered HTTP 500 because the audit line could not be written",
            registry=self.registry,
        )
        self.audit_last_seq = Gauge(
            "sealgate_audit_last_seq",
            "seq of the last audit line written, per chain (a log cut short shows against it)",
            ["chain"], registry=self.registry, multiprocess_mode="max",
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
        # labelled children, bound once: labels() costs more than the increment
        self._children: dict[tuple[Any, ...], Any] = {}

    @property
    def shared_cache_up(self) -> Gauge:
        """1 while the shared cache answers, 0 while it is skipped; exported only when
        SEALGATE_CACHE_URL is set, so installs without one never look "down"."""
        if self._shared_cache_up is None:
            self._shared_cache_up = Gauge(
                "sealgate_shared_cache_up",
                "1 while the shared cache (SEALGATE_CACHE_URL) answers in time, else 0",
                registry=self.registry, multiprocess_mode="livemin",
            )
        return self._shared_cache_up

    def _child(self, metric: Any, *labels: str) -> Any:
        key = (id(metric), *labels)
        child = self._children.get(key)
        if child is None:
            child = self._children[key] = metric.labels(*labels)
        return child

    def admitted(self, decision: str, mode: str, seconds: float) -> None:
        self._child(self.admission_requests, decision, mode).inc()
        self.admission_duration.observe(seconds)

    def malformed(self, status: int) -> None:
        self._child(self.malformed_requests, str(status)).inc()

    def audit_written(self, chain: str, seq: int) -> None:
        self._child(self.audit_last_seq, chain).set(seq)

    def cache_event(self, fact: str, result: str) -> None:
        self._child(self.cache_requests, fact, result).inc()

    def cache_hits(self, fact: str, count: int) -> None:
        self._child(self.cache_requests, fact, "hit").inc(count)

    def registry_response(self, registry: str, status: str) -> None:
        self._child(self.registry_requests, registry, status).inc()

    def render(self) -> bytes:
        if not self.multiprocess:
            return generate_latest(self.registry)
        from prometheus_client import multiprocess

        merged = CollectorRegistry()
        multiprocess.MultiProcessCollector(merged)  # type: ignore[no-untyped-call]
        return generate_latest(merged)
