"""The shared cache level (SPEC §9) against a real redis-server: sharing, leases, tampering,
and a server that is down, hanging or slow."""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import datetime as dt
import logging
import socket
import threading
import time
from collections.abc import AsyncIterator, Iterator
from pathlib import Path
from typing import Any

import pytest
import redis

from tests.redis_server import RedisServer, free_port
from webhook.__main__ import main
from webhook.cache import CacheSettings, FactCache, Verdict
from webhook.decision import Outcome, ScanFact
from webhook.metrics import Metrics
from webhook.settings import Settings, SettingsError
from webhook.sharedcache import (
    CodecError,
    SharedCache,
    decode_fact,
    encode_fact,
    entry_key,
    load_cache_key,
    redis_client,
    seal,
    unseal,
)

SECRET = b"0123456789abcdef0123456789abcdef"
SCAN = ScanFact("attestation", dt.datetime(2026, 11, 30, 12, 0, tzinfo=dt.UTC),
                {"CRITICAL": ("CVE-2024-1",), "HIGH": ("CVE-2024-2", "GHSA-x")}, "fp")


def outcome_verdict(value: Outcome) -> Verdict:
    return {"ok": "success", "fail": "failure", "error": "error"}[value.status]  # type: ignore[return-value]


class Replica:
    """One process's view: a FactCache with the shared level over its own connection."""

    # A loose timeout where a test is about sharing, not speed: a busy CI host must not
    # turn a slow answer into a failed assertion. Outage tests pass the real 50 ms.
    def __init__(self, url: str, *, timeout: float = 0.5, max_wait: float = 2.0,
                 lease_ttl: float = 2.0, secret: bytes = SECRET) -> None:
        self.metrics = Metrics()
        self.level = SharedCache(redis_client(url, timeout=timeout), secret, timeout=timeout,
                                 max_wait=max_wait, lease_ttl=lease_ttl, metrics=self.metrics)
        self.cache = FactCache(CacheSettings(), second=self.level)
        self.fetches = 0

    async def get(self, key: str, value: Outcome, *, gate: asyncio.Event | None = None,
                  fact: str = "signature") -> tuple[Outcome, bool]:
        async def fetch() -> Outcome:
            self.fetches += 1
            if gate is not None:
                await gate.wait()
            return value

        return await self.cache.get_or_fetch(fact, ("repo", "sha256:" + key, "fp"), fetch,
                                             outcome_verdict)

    def metric(self, name: str, **labels: str) -> float:
        return self.metrics.registry.get_sample_value(name, labels) or 0.0


@pytest.fixture
async def replicas(redis_server: RedisServer) -> AsyncIterator[tuple[Replica, Replica]]:
    a, b = Replica(redis_server.url), Replica(redis_server.url)
    yield a, b
    await a.level.aclose()
    await b.level.aclose()


def raw(server: RedisServer) -> redis.Redis:
    return redis.Redis.from_url(server.url)


async def settle(*replicas: Replica) -> None:
    """Wait for the background writes (they happen after the answer)."""
    for replica in replicas:
        await replica.level.flush()


# --------------------------------------------------------------------------- encoding


@pytest.mark.parametrize("value", [
    Outcome("ok"), Outcome("fail", "no signatures found"),
    (Outcome("ok"), "sha256:" + "a" * 64), (Outcome("fail", "image not found"), None),
    (SCAN, None), (None, None), (ScanFact("harbor", SCAN.scanned_at, {}), None),
])
def test_fact_types_round_trip(value: object) -> None:
    key = entry_key("scan", ("r", "d"))
    sealed = seal(SECRET, key, value, expires_at=time.time() + 60)
    assert unseal(SECRET, key, sealed)[0] == value


@pytest.mark.parametrize("data", [
    [1, 2], {"outcome": ["maybe", ""]}, {"outcome": ["ok"]}, {"pickle": "x"},
    {"tuple": [1], "outcome": ["ok", ""]}, {"scan": {"source": "x"}}, 1.5,
    {"scan": {"source": "a", "scanned_at": "yesterday", "ids": {}, "attestor": None}},
    {"scan": {"source": "a", "scanned_at": "2026-01-01", "ids": {"HIGH": "CVE"},
              "attestor": None}},
])
def test_decoding_accepts_only_the_fact_encoding(data: Any) -> None:
    with pytest.raises(CodecError):
        decode_fact(data)


def test_the_encoding_covers_every_field_of_the_fact_types() -> None:
    # A field added to Outcome or ScanFact must be added to sharedcache's encoding (and its
    # _PREFIX version bumped), or replicas would share facts that lost it.
    assert [f.name for f in dataclasses.fields(Outcome)] == ["status", "reason"]
    assert [f.name for f in dataclasses.fields(ScanFact)] == [
        "source", "scanned_at", "ids", "attestor"]


def test_values_of_other_types_are_not_shared() -> None:
    with pytest.raises(CodecError):
        encode_fact([Outcome("ok")])
    with pytest.raises(CodecError):
        entry_key("signature", ("repo", object()))


def test_an_entry_is_bound_to_its_key_its_value_and_the_secret() -> None:
    key = entry_key("signature", ("r", "d1", "fp"))
    other = entry_key("signature", ("r", "d2", "fp"))
    sealed = seal(SECRET, key, Outcome("ok"), expires_at=time.time() + 60)
    assert unseal(SECRET, key, sealed)[0] == Outcome("ok")
    with pytest.raises(CodecError, match="authentication"):
        unseal(SECRET, other, sealed)  # moved to another key
    with pytest.raises(CodecError, match="authentication"):
        unseal(SECRET, key, sealed.replace(b'"ok"', b'"no"'))  # edited
    with pytest.raises(CodecError, match="authentication"):
        unseal(b"another secret of 32 bytes......", key, sealed)
    with pytest.raises(CodecError):
        unseal(SECRET, key, b"garbage")
    # the fact type is part of the key: a scan entry is not a signature entry
    assert entry_key("scan", ("r", "d1", "fp")) != key


# --------------------------------------------------------------------------- sharing


async def test_a_fact_one_replica_fetched_is_not_fetched_by_another(
    replicas: tuple[Replica, Replica], redis_server: RedisServer
) -> None:
    a, b = replicas
    assert await a.get("1", Outcome("ok")) == (Outcome("ok"), False)
    await settle(a)
    assert await b.get("1", Outcome("fail", "must not be fetched")) == (Outcome("ok"), True)
    assert b.fetches == 0
    assert b.metric("sealgate_shared_cache_requests_total", fact="signature",
                    result="hit") == 1
    # then it is local: a second lookup does not reach the shared level
    assert await b.get("1", Outcome("fail")) == (Outcome("ok"), True)
    assert b.metric("sealgate_shared_cache_requests_total", fact="signature",
                    result="hit") == 1


async def test_same_ttl_per_outcome_and_errors_never_stored(
    replicas: tuple[Replica, Replica], redis_server: RedisServer
) -> None:
    a, b = replicas
    await a.get("ok", Outcome("ok"))
    await a.get("fail", Outcome("fail", "no signatures found"))
    await a.get("error", Outcome("error", "registry down"))
    await settle(a)
    server = raw(redis_server)
    ttl_ok = server.pttl(entry_key("signature", ("repo", "sha256:ok", "fp")))
    ttl_fail = server.pttl(entry_key("signature", ("repo", "sha256:fail", "fp")))
    assert 590_000 < ttl_ok <= 600_000 and 20_000 < ttl_fail <= 30_000
    assert not server.exists(entry_key("signature", ("repo", "sha256:error", "fp")))
    # and the lease of the failed fetch is gone: the next replica fetches at once
    started = time.monotonic()
    assert await b.get("error", Outcome("ok")) == (Outcome("ok"), False)
    assert time.monotonic() - started < 0.5
    # a hit is kept locally only for what is left of the entry's life
    b2 = Replica(redis_server.url)
    try:
        server.pexpire(entry_key("signature", ("repo", "sha256:fail", "fp")), 5_000)
        assert (await b2.get("fail", Outcome("ok")))[0].status == "fail"
    finally:
        await b2.level.aclose()
    entry = b2.cache._cache("signature").get(("repo", "sha256:fail", "fp"))
    assert entry is not None and entry.ttl <= 30


async def test_a_lease_makes_the_others_wait_for_one_fetch(
    replicas: tuple[Replica, Replica]
) -> None:
    a, b = replicas
    gate = asyncio.Event()
    first = asyncio.ensure_future(a.get("2", Outcome("ok"), gate=gate))
    await asyncio.sleep(0.05)  # a holds the lease and is fetching
    waiting = [asyncio.ensure_future(b.get("2", Outcome("fail", "own fetch"))) for _ in range(5)]
    await asyncio.sleep(0.3)
    assert not any(task.done() for task in waiting)
    gate.set()
    assert (await first) == (Outcome("ok"), False)
    assert [await task for task in waiting] == [(Outcome("ok"), True)] * 5
    assert (a.fetches, b.fetches) == (1, 0)
    assert b.metric("sealgate_shared_cache_requests_total", fact="signature",
                    result="waited") == 1


async def test_a_long_fetch_keeps_its_lease(redis_server: RedisServer) -> None:
    a, b = Replica(redis_server.url, lease_ttl=0.3), Replica(redis_server.url, lease_ttl=0.3)
    try:
        gate = asyncio.Event()
        first = asyncio.ensure_future(a.get("3", Outcome("ok"), gate=gate))
        await asyncio.sleep(0.05)
        second = asyncio.ensure_future(b.get("3", Outcome("fail")))
        await asyncio.sleep(1.0)  # three lease lifetimes: renewed, so b still waits
        assert not second.done()
        gate.set()
        assert (await first)[0] == (await second)[0] == Outcome("ok")
        assert b.fetches == 0
    finally:
        await a.level.aclose()
        await b.level.aclose()


async def test_a_holder_whose_requests_gave_up_hands_the_lease_back(
    replicas: tuple[Replica, Replica]
) -> None:
    a, b = replicas
    stuck = asyncio.ensure_future(a.get("6", Outcome("ok"), gate=asyncio.Event()))
    await asyncio.sleep(0.05)  # a holds the lease; its fetch never ends
    stuck.cancel()  # a's request reached its deadline: its fetch is abandoned
    with contextlib.suppress(asyncio.CancelledError):
        await stuck
    await settle(a)  # the lease is released in the background
    started = time.monotonic()
    assert await b.get("6", Outcome("ok")) == (Outcome("ok"), False)
    assert time.monotonic() - started < 0.5  # no waiting for the 2 s lease to run out


async def test_a_dead_holders_lease_expires_quickly(redis_server: RedisServer,
                                                    replicas: tuple[Replica, Replica]) -> None:
    _, b = replicas
    key = entry_key("signature", ("repo", "sha256:4", "fp"))
    raw(redis_server).set(key + b":lease", "crashed-replica", px=300)
    started = time.monotonic()
    assert await b.get("4", Outcome("ok")) == (Outcome("ok"), False)
    assert 0.25 < time.monotonic() - started < 1.0
    assert b.fetches == 1


async def test_a_lease_that_never_ends_costs_at_most_max_wait(redis_server: RedisServer) -> None:
    b = Replica(redis_server.url, max_wait=0.4)
    try:
        key = entry_key("signature", ("repo", "sha256:5", "fp"))
        raw(redis_server).set(key + b":lease", "someone")  # no expiry at all
        started = time.monotonic()
        assert await b.get("5", Outcome("ok")) == (Outcome("ok"), False)
        assert time.monotonic() - started < 0.7
    finally:
        await b.level.aclose()


# --------------------------------------------------------------------------- tampering


async def test_moved_edited_or_garbage_entries_are_misses_and_counted(
    replicas: tuple[Replica, Replica], redis_server: RedisServer
) -> None:
    a, _ = replicas
    await a.get("signed", Outcome("ok"))
    await a.get("unsigned", Outcome("fail", "no signatures found"))
    await settle(a)
    server = raw(redis_server)
    signed = entry_key("signature", ("repo", "sha256:signed", "fp"))
    unsigned = entry_key("signature", ("repo", "sha256:unsigned", "fp"))
    good = server.get(signed)
    assert isinstance(good, bytes)
    attempts: list[bytes | tuple[str, ...]] = [
        good,  # the signed image's entry copied onto the unsigned one
        server.get(unsigned).replace(b'["fail","no signatures found"]', b'["ok",""]'),  # type: ignore[union-attr]
        b"garbage", b"", b"x" * (300 * 1024), ("list",),
    ]
    for number, forged in enumerate(attempts, start=1):
        server.delete(unsigned)
        if isinstance(forged, tuple):
            server.rpush(unsigned, *forged)
        else:
            server.set(unsigned, forged)
        fresh = Replica(redis_server.url)
        try:
            value, cached = await fresh.get("unsigned", Outcome("fail", "refetched"))
            await settle(fresh)
        finally:
            await fresh.level.aclose()
        assert (value, cached) == (Outcome("fail", "refetched"), False), number
        assert fresh.metric("sealgate_cache_integrity_failures_total",
                            fact="signature") == 1, number
        # the fetched fact replaced the forgery
        assert unseal(SECRET, unsigned, server.get(unsigned))[0] == Outcome(  # type: ignore[arg-type]
            "fail", "refetched")


async def test_an_old_entry_replayed_after_its_life_is_a_miss(
    replicas: tuple[Replica, Replica], redis_server: RedisServer
) -> None:
    _, b = replicas
    key = entry_key("signature", ("repo", "sha256:old", "fp"))
    raw(redis_server).set(key, seal(SECRET, key, Outcome("ok"), expires_at=time.time() - 1))
    assert await b.get("old", Outcome("fail", "fresh")) == (Outcome("fail", "fresh"), False)


# --------------------------------------------------------------------------- unavailable


def _skips(replica: Replica) -> float:
    return replica.metric("sealgate_shared_cache_requests_total", fact="signature",
                          result="skipped")


async def test_refused_connections_fall_back_to_local_quietly(
    caplog: pytest.LogCaptureFixture
) -> None:
    replica = Replica(f"redis://127.0.0.1:{free_port()}/0", timeout=0.05)
    try:
        with caplog.at_level(logging.WARNING, logger="sealgate.sharedcache"):
            started = time.monotonic()
            for number in range(20):
                assert await replica.get(str(number), Outcome("ok")) == (Outcome("ok"), False)
            elapsed = time.monotonic() - started
    finally:
        await replica.level.aclose()
    assert elapsed < 0.5
    assert replica.fetches == 20 and _skips(replica) >= 19
    assert replica.metric("sealgate_shared_cache_up") == 0
    assert len([r for r in caplog.records if "shared cache unavailable" in r.message]) == 1


@pytest.fixture
def silent_server() -> Iterator[int]:
    """A TCP listener that accepts connections and never answers (a hung node)."""
    listener = socket.socket()
    listener.bind(("127.0.0.1", 0))
    listener.listen(64)
    accepted: list[socket.socket] = []
    stop = threading.Event()

    def accept() -> None:
        listener.settimeout(0.1)
        while not stop.is_set():
            try:
                accepted.append(listener.accept()[0])
            except OSError:
                continue

    thread = threading.Thread(target=accept, daemon=True)
    thread.start()
    yield listener.getsockname()[1]
    stop.set()
    thread.join()
    for conn in accepted:
        conn.close()
    listener.close()


async def test_a_hanging_server_costs_one_timeout_then_nothing(silent_server: int) -> None:
    replica = Replica(f"redis://127.0.0.1:{silent_server}/0", timeout=0.05)
    try:
        started = time.monotonic()
        results = await asyncio.gather(*(replica.get(str(n), Outcome("ok")) for n in range(30)))
        first_burst = time.monotonic() - started
        started = time.monotonic()
        for number in range(30, 60):
            await replica.get(str(number), Outcome("ok"))
        backing_off = time.monotonic() - started
    finally:
        await replica.level.aclose()
    assert all(result == (Outcome("ok"), False) for result in results)
    assert first_burst < 0.3  # one 50 ms timeout, concurrently (counted as one stall)
    # two more late answers make three in a row; then skipped without asking
    assert backing_off < 0.35
    assert replica.metric("sealgate_shared_cache_up") == 0
    assert replica.metric("sealgate_shared_cache_errors_total", reason="timeout") == 32


async def test_a_busy_event_loop_is_not_an_outage(silent_server: int) -> None:
    """Timeouts that fire late because this process was busy (CPU-bound verification on
    the loop, a loaded host) skip their lookups but never turn the level off."""
    replica = Replica(f"redis://127.0.0.1:{silent_server}/0", timeout=0.05)
    try:
        for number in range(4):
            pending = asyncio.ensure_future(replica.get(str(number), Outcome("ok")))
            await asyncio.sleep(0.01)  # the lookup is waiting for its answer
            time.sleep(0.2)  # the loop is blocked past the lookup's deadline  # noqa: ASYNC251
            assert await pending == (Outcome("ok"), False)
    finally:
        await replica.level.aclose()
    assert replica.metric("sealgate_shared_cache_errors_total", reason="timeout") == 4
    assert replica.metric("sealgate_shared_cache_up") == 1


async def test_a_slow_server_is_skipped(redis_server: RedisServer) -> None:
    replica = Replica(redis_server.url, timeout=0.05)
    try:
        await replica.get("warmup", Outcome("ok"))  # connected
        await settle(replica)
        raw(redis_server).execute_command("CLIENT", "PAUSE", "500", "ALL")
        started = time.monotonic()
        assert await replica.get("slow", Outcome("ok")) == (Outcome("ok"), False)
        assert time.monotonic() - started < 0.2
        assert _skips(replica) == 1
        # one late answer is not an outage: the level stays on and is used once it answers
        assert replica.metric("sealgate_shared_cache_up") == 1
        assert replica.metric("sealgate_shared_cache_errors_total", reason="timeout") == 1
        await asyncio.sleep(0.6)
        other = Replica(redis_server.url)
        try:
            await other.get("later", Outcome("ok"))
            await settle(other)
        finally:
            await other.level.aclose()
        assert await replica.get("later", Outcome("fail")) == (Outcome("ok"), True)
    finally:
        await replica.level.aclose()


async def test_startup_connects_or_starts_backing_off(redis_server: RedisServer) -> None:
    up = SharedCache(redis_client(redis_server.url, timeout=0.05), SECRET)
    down = SharedCache(redis_client(f"redis://127.0.0.1:{free_port()}/0", timeout=0.05), SECRET)
    try:
        assert await up.connect() is True
        assert await down.connect() is False
    finally:
        await up.aclose()
        await down.aclose()


async def test_reconnects_after_a_restart(redis_server: RedisServer) -> None:
    replica = Replica(redis_server.url, timeout=0.05)
    try:
        await replica.get("before", Outcome("ok"))
        redis_server.kill()
        await replica.get("down", Outcome("ok"))
        assert replica.metric("sealgate_shared_cache_up") == 0
        redis_server.start()  # same port
        deadline = time.monotonic() + 5
        while replica.metric("sealgate_shared_cache_up") == 0 and time.monotonic() < deadline:
            await replica.get(f"probe{time.monotonic()}", Outcome("ok"))
            await asyncio.sleep(0.1)
        assert replica.metric("sealgate_shared_cache_up") == 1
        await replica.get("after", Outcome("ok"))
        await settle(replica)
        assert raw(redis_server).exists(entry_key("signature", ("repo", "sha256:after", "fp")))
    finally:
        await replica.level.aclose()


# --------------------------------------------------------------------------- settings


def test_cache_url_needs_a_key_and_a_redis_scheme(tmp_path: Path) -> None:
    with pytest.raises(SettingsError, match="SEALGATE_CACHE_KEY: required with SEALGATE_CACHE_URL"):
        Settings.from_env({"SEALGATE_CACHE_URL": "redis://cache:6379/0"})
    with pytest.raises(SettingsError, match="SEALGATE_CACHE_URL: must start with redis://"):
        Settings.from_env({"SEALGATE_CACHE_URL": "http://cache", "SEALGATE_CACHE_KEY": "/k"})
    with pytest.raises(SettingsError, match="SEALGATE_CACHE_TIMEOUT"):
        Settings.from_env({"SEALGATE_CACHE_TIMEOUT": "fast"})
    settings = Settings.from_env({"SEALGATE_CACHE_URL": "rediss://:pw@cache:6380/1",
                                  "SEALGATE_CACHE_KEY": "/k", "SEALGATE_CACHE_TIMEOUT": "20ms"})
    assert settings.cache_url == "rediss://:pw@cache:6380/1"
    assert (settings.cache_key, settings.cache_timeout) == (Path("/k"), 0.02)
    assert Settings.from_env({}).cache_timeout == 0.05
    short = tmp_path / "short"
    short.write_text("tiny\n")
    with pytest.raises(SettingsError, match="at least 16"):
        load_cache_key(short)
    with pytest.raises(SettingsError, match="cannot read"):
        load_cache_key(tmp_path / "missing")


def test_serve_refuses_a_cache_url_without_a_key(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    monkeypatch.setenv("SEALGATE_CACHE_URL", "redis://:secret-password@127.0.0.1:1/0")
    monkeypatch.delenv("SEALGATE_CACHE_KEY", raising=False)
    assert main(["serve", "--policies", str(tmp_path)]) == 2
    err = capsys.readouterr().err
    assert "SEALGATE_CACHE_KEY" in err and "secret-password" not in err
