"""FactCache: TTL per outcome, errors never stored, single-flight (SPEC §4)."""

from __future__ import annotations

import asyncio

import pytest

from webhook.cache import CacheSettings, FactCache, Verdict


class Clock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


def verdict_of(value: str) -> Verdict:
    return value  # type: ignore[return-value]


async def test_ttl_by_verdict() -> None:
    clock = Clock()
    cache = FactCache(CacheSettings(digest_ttl=60, success_ttl=600, failure_ttl=30), timer=clock)
    calls: list[str] = []

    def fetcher(value: str):  # type: ignore[no-untyped-def]
        async def fetch() -> str:
            calls.append(value)
            return value
        return fetch

    assert await cache.get_or_fetch("signature", "ok", fetcher("success"), verdict_of) == (
        "success", False)
    assert await cache.get_or_fetch("signature", "bad", fetcher("failure"), verdict_of) == (
        "failure", False)
    assert await cache.get_or_fetch("signature", "err", fetcher("error"), verdict_of) == (
        "error", False)
    assert await cache.get_or_fetch("digest", "tag", fetcher("success"), verdict_of) == (
        "success", False)
    clock.now += 29
    for key in ("ok", "bad", "tag"):
        assert (await cache.get_or_fetch(
            "digest" if key == "tag" else "signature", key, fetcher("x"), verdict_of))[1]
    # errors are never remembered
    assert not (await cache.get_or_fetch("signature", "err", fetcher("error"), verdict_of))[1]
    clock.now += 2  # 31 s: the failure expired, the success did not
    assert not (await cache.get_or_fetch("signature", "bad", fetcher("failure"), verdict_of))[1]
    assert (await cache.get_or_fetch("signature", "ok", fetcher("x"), verdict_of))[1]
    clock.now += 30  # 61 s: the tag -> digest resolution expired
    assert not (await cache.get_or_fetch("digest", "tag", fetcher("success"), verdict_of))[1]
    clock.now += 600
    assert not (await cache.get_or_fetch("signature", "ok", fetcher("success"), verdict_of))[1]


async def test_bounded_size() -> None:
    cache = FactCache(CacheSettings(maxsize=3))

    async def fetch() -> str:
        return "success"

    for key in range(10):
        await cache.get_or_fetch("signature", key, fetch, verdict_of)
    assert (await cache.get_or_fetch("signature", 9, fetch, verdict_of))[1]
    assert not (await cache.get_or_fetch("signature", 0, fetch, verdict_of))[1]


async def test_single_flight_shares_one_fetch() -> None:
    events: list[tuple[str, str]] = []
    cache = FactCache(on_event=lambda fact, result: events.append((fact, result)))
    started = 0
    release = asyncio.Event()

    async def fetch() -> str:
        nonlocal started
        started += 1
        await release.wait()
        return "success"

    waiters = [asyncio.create_task(cache.get_or_fetch("signature", "k", fetch, verdict_of))
               for _ in range(100)]
    await asyncio.sleep(0.01)
    release.set()
    results = await asyncio.gather(*waiters)
    assert started == 1
    assert [value for value, _ in results] == ["success"] * 100
    assert sum(1 for _, cached in results if not cached) == 1
    assert events.count(("signature", "miss")) == 1
    assert events.count(("signature", "shared")) == 99


async def test_shared_failure_reaches_all_waiters_then_retries() -> None:
    cache = FactCache()
    attempts = 0
    release = asyncio.Event()

    async def flaky() -> str:
        nonlocal attempts
        attempts += 1
        await release.wait()
        if attempts == 1:
            raise ConnectionError("registry down")
        return "success"

    waiters = [asyncio.create_task(cache.get_or_fetch("digest", "t", flaky, verdict_of))
               for _ in range(5)]
    await asyncio.sleep(0.01)
    release.set()
    results = await asyncio.gather(*waiters, return_exceptions=True)
    assert all(isinstance(r, ConnectionError) for r in results)
    value, cached = await cache.get_or_fetch("digest", "t", flaky, verdict_of)
    assert (value, cached, attempts) == ("success", False, 2)


async def test_a_waiter_leaving_does_not_cancel_the_shared_fetch() -> None:
    cache = FactCache()
    release = asyncio.Event()

    async def slow() -> str:
        await release.wait()
        return "success"

    first = asyncio.create_task(cache.get_or_fetch("scan", "k", slow, verdict_of))
    second = asyncio.create_task(cache.get_or_fetch("scan", "k", slow, verdict_of))
    await asyncio.sleep(0.01)
    first.cancel()  # its request hit the deadline
    with pytest.raises(asyncio.CancelledError):
        await first
    release.set()
    assert await second == ("success", True)
    assert await cache.get_or_fetch("scan", "k", slow, verdict_of) == ("success", True)
