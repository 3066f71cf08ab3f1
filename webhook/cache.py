"""Fact cache with per-outcome TTLs, and single-flight for concurrent misses (SPEC §4).

Keys hold facts (a digest, a signature outcome for (repository, digest,
authority), a scan result), never decisions, so a policy edit takes effect at
once. Successes live ``success_ttl``, definitive failures ``failure_ttl``;
errors (registry down, timeout) are never stored: the next request asks again.

A second level (SPEC §9: the shared cache on Valkey/Redis, webhook/sharedcache.py)
may sit behind it. It is consulted only by the single fetch of a local miss, so a
local hit costs exactly what it did without it.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Awaitable, Callable, Hashable
from dataclasses import dataclass
from typing import Any, Generic, Literal, Protocol, TypeVar

from cachetools import TLRUCache

T = TypeVar("T")
Verdict = Literal["success", "failure", "error"]
CacheEvent = Callable[[str, str], None]  # (fact, "hit" | "miss" | "shared")


@dataclass(frozen=True, slots=True)
class CacheSettings:
    maxsize: int = 10_000
    digest_ttl: float = 60.0
    success_ttl: float = 600.0
    failure_ttl: float = 30.0


class SecondLevel(Protocol):
    """A cache level behind this one, shared with other processes."""

    def shares(self, fact: str) -> bool:
        """Whether facts of this type go through this level at all."""
        ...

    async def get_or_fetch(
        self,
        fact: str,
        key: Hashable,
        fetch: Callable[[], Awaitable[T]],
        ttl_of: Callable[[T], float | None],
    ) -> tuple[T, float | None, bool]:
        """(value, seconds to keep it locally or None, whether it came from this level)."""
        ...


@dataclass(frozen=True, slots=True)
class _Entry(Generic[T]):
    value: T
    ttl: float
    expires: float  # on the cache's timer: what a decision built on it may last


@dataclass(slots=True)
class _Flight:
    """One shared fetch and how many requests still wait for it."""

    task: asyncio.Future[Any]
    waiters: int = 0


class FactCache:
    """One bounded TLRU cache per fact type, plus the in-flight fetches."""

    def __init__(
        self,
        settings: CacheSettings | None = None,
        *,
        timer: Callable[[], float] = time.monotonic,
        on_event: CacheEvent | None = None,
        on_hits: Callable[[str, int], None] | None = None,
        second: SecondLevel | None = None,
    ) -> None:
        self.settings = settings or CacheSettings()
        self._timer = timer
        self._on_event = on_event
        self._on_hits = on_hits  # many hits of one fact type at once (the warm path)
        self.second = second
        self._caches: dict[str, TLRUCache[Hashable, _Entry[Any]]] = {}
        self._inflight: dict[tuple[str, Hashable], _Flight] = {}
        self.epoch = 0  # bumped by clear(): what was built on older entries is stale

    def _cache(self, fact: str) -> TLRUCache[Hashable, _Entry[Any]]:
        cache = self._caches.get(fact)
        if cache is None:
            cache = TLRUCache(
                maxsize=self.settings.maxsize,
                ttu=lambda _key, entry, now: now + entry.ttl,
                timer=self._timer,
            )
            self._caches[fact] = cache
        return cache

    def _event(self, fact: str, result: str) -> None:
        if self._on_event is not None:
            self._on_event(fact, result)

    def ttl_for(self, verdict: Verdict, *, fact: str) -> float | None:
        if verdict == "error":
            return None
        if verdict == "failure":
            return self.settings.failure_ttl
        return self.settings.digest_ttl if fact == "digest" else self.settings.success_ttl

    def now(self) -> float:
        """The cache's clock (entries' ``expires`` are on it)."""
        return self._timer()

    def peek(self, fact: str, key: Hashable) -> _Entry[Any] | None:
        """The cached entry, if there is one; counts nothing (the warm path counts hits
        itself once it knows every fact was there)."""
        cache = self._caches.get(fact)
        return None if cache is None else cache.get(key)

    def hits(self, fact: str, count: int = 1) -> None:
        if self._on_hits is not None:
            self._on_hits(fact, count)
            return
        for _ in range(count):
            self._event(fact, "hit")

    async def get_or_fetch(
        self,
        fact: str,
        key: Hashable,
        fetch: Callable[[], Awaitable[T]],
        classify: Callable[[T], Verdict],
    ) -> tuple[T, bool]:
        """The cached fact, or one shared fetch of it; returns (value, came_from_cache).

        Exceptions from ``fetch`` reach every waiter and are not stored.
        """
        cache = self._cache(fact)
        entry = cache.get(key)
        if entry is not None:
            self._event(fact, "hit")
            return entry.value, True
        flight_key = (fact, key)
        pending = self._inflight.get(flight_key)
        if pending is not None:
            self._event(fact, "shared")
            value, _ = await self._wait(flight_key, pending)
            return value, True
        self._event(fact, "miss")
        flight = _Flight(asyncio.ensure_future(self._fetch(fact, key, fetch, classify)))
        self._inflight[flight_key] = flight
        flight.task.add_done_callback(lambda done: self._finished(flight_key, flight))
        value, from_second = await self._wait(flight_key, flight)
        return value, from_second

    async def _wait(self, flight_key: tuple[str, Hashable], flight: _Flight) -> Any:
        """Wait for a shared fetch. Shielded: one waiter reaching its deadline must not
        cancel the others' fetch; but a fetch whose waiters have all gone is cancelled,
        so one request's abandoned work never queues ahead of another's (issue 11)."""
        flight.waiters += 1
        try:
            return await asyncio.shield(flight.task)
        finally:
            flight.waiters -= 1
            if flight.waiters == 0 and not flight.task.done():
                if self._inflight.get(flight_key) is flight:
                    del self._inflight[flight_key]  # a newcomer starts afresh
                flight.task.cancel()

    def _finished(self, flight_key: tuple[str, Hashable], flight: _Flight) -> None:
        if self._inflight.get(flight_key) is flight:
            del self._inflight[flight_key]
        if not flight.task.cancelled():
            flight.task.exception()  # retrieved: every waiter may have left at its deadline

    @property
    def inflight(self) -> int:
        """Shared fetches running now (tests and metrics)."""
        return len(self._inflight)

    async def _fetch(
        self,
        fact: str,
        key: Hashable,
        fetch: Callable[[], Awaitable[T]],
        classify: Callable[[T], Verdict],
    ) -> tuple[T, bool]:
        second = self.second
        if second is not None and second.shares(fact):
            value, ttl, from_second = await second.get_or_fetch(
                fact, key, fetch, lambda fetched: self.ttl_for(classify(fetched), fact=fact)
            )
        else:
            value = await fetch()
            ttl, from_second = self.ttl_for(classify(value), fact=fact), False
        if ttl is not None and ttl > 0:
            self._cache(fact)[key] = _Entry(value, ttl, self._timer() + ttl)
        return value, from_second

    def clear(self) -> None:
        for cache in self._caches.values():
            cache.clear()
        self.epoch += 1
