"""The shared fact cache: a Valkey/Redis level behind each process's FactCache (SPEC §9).

Replicas (and workers) look here after a local miss, so a fact one of them
verified is not fetched again by the others. Three properties matter more than
the hit ratio:

- **Tamper-proof.** Every entry is ``HMAC-SHA256(key, entry key ‖ value)`` under
  ``SEALGATE_CACHE_KEY``, and carries its own expiry time inside what is
  authenticated. Someone with write access to the cache can delete entries or
  replay one to the same key within its lifetime, never forge a fact, edit one or
  move one to another key: such an entry is a miss, counted in
  ``sealgate_cache_integrity_failures_total``. Values are a small explicit JSON
  encoding of the fact types (no pickle: reading the cache never runs code), and
  are decoded only after the MAC checks.
- **A lease per fact.** The first replica to miss takes a short lease
  (``SET NX PX``, renewed while it fetches) and fetches; the others poll for the
  value for at most half their deadline, then fetch themselves. A holder that dies
  stops renewing, and its lease expires within ``lease_ttl``. A holder whose fetch
  ended in an error stores nothing (errors are never cached) and drops the lease;
  the waiters then fetch on their own.
- **Invisible when down.** Every call is bounded by ``SEALGATE_CACHE_TIMEOUT``;
  a late answer skips the level for that lookup (the local cache and a direct
  fetch answer) and is counted; a refused connection, or three late answers in a
  row (a hang; calls late together count once, and a busy event loop is not the
  cache's fault), also turn the level off: logged at most once a minute, retried
  after a backoff (0.5 s doubling to 30 s). Writes happen after
  the answer, in the background.
"""

from __future__ import annotations

import asyncio
import contextlib
import datetime as dt
import enum
import hashlib
import hmac
import json
import logging
import secrets
import time
from collections.abc import AsyncIterator, Awaitable, Callable, Hashable
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any, TypeVar

from webhook.decision import Outcome, ScanFact
from webhook.metrics import Metrics
from webhook.settings import Settings, SettingsError

if TYPE_CHECKING:  # the client library is imported only when a shared cache is configured
    import redis.asyncio as aioredis

log = logging.getLogger("sealgate.sharedcache")

T = TypeVar("T")

# Facts worth sharing: the ones FactCache stores. Registry material fetched once per
# check ("signature-layers", "attestation-material"...) is never stored, so a lease on
# it would only serialise fetches across replicas.
SHARED_FACTS = frozenset({"digest", "signature", "scan"})
# Bump when the encoding changes: replicas of two versions then simply do not share.
_PREFIX = b"sealgate:facts:v1:"
_MAX_ENTRY_BYTES = 256 * 1024  # a fact is a few hundred bytes; bigger is not ours
MIN_KEY_BYTES = 16
_LOG_EVERY = 60.0
_BACKOFF_FIRST = 0.5
_BACKOFF_MAX = 30.0
_SLOW_IN_A_ROW = 3


class CodecError(ValueError):
    """A value or key that is not one of the fact types this level shares."""


# --------------------------------------------------------------------------- the key file


def load_cache_key(path: Path) -> bytes:
    """The HMAC key from ``SEALGATE_CACHE_KEY`` (surrounding whitespace stripped)."""
    try:
        key = path.read_bytes().strip()
    except OSError as exc:
        raise SettingsError(
            f"SEALGATE_CACHE_KEY: cannot read {path}: {exc.strerror or exc}"
        ) from exc
    if len(key) < MIN_KEY_BYTES:
        raise SettingsError(
            f"SEALGATE_CACHE_KEY: {path} holds {len(key)} bytes; the key must have at least "
            f"{MIN_KEY_BYTES} (e.g. head -c 32 /dev/urandom | base64)"
        )
    return key


# --------------------------------------------------------------------------- encoding


def encode_fact(value: object) -> Any:
    """A JSON-ready form of a fact: primitives as themselves, everything else tagged."""
    if value is None or isinstance(value, str | bool):
        return value
    if isinstance(value, int):
        return value
    if isinstance(value, tuple):
        return {"tuple": [encode_fact(item) for item in value]}
    if isinstance(value, Outcome):
        return {"outcome": [value.status, value.reason]}
    if isinstance(value, ScanFact):
        return {"scan": {
            "source": value.source,
            "scanned_at": value.scanned_at.isoformat(),
            "ids": {severity: list(ids) for severity, ids in value.ids.items()},
            "attestor": value.attestor,
        }}
    raise CodecError(f"cannot share a {type(value).__name__}")


def decode_fact(data: Any) -> Any:
    """The fact ``encode_fact`` made; anything else is a CodecError (never a guess)."""
    if data is None or isinstance(data, str | bool | int):
        return data
    if not isinstance(data, dict) or len(data) != 1:
        raise CodecError("not an encoded fact")
    (tag, body), = data.items()
    if tag == "tuple" and isinstance(body, list):
        return tuple(decode_fact(item) for item in body)
    if tag == "outcome" and isinstance(body, list) and len(body) == 2:
        status, reason = body
        if status not in ("ok", "fail", "error") or not isinstance(reason, str):
            raise CodecError("malformed outcome")
        return Outcome(status, reason)
    if tag == "scan" and isinstance(body, dict):
        return _decode_scan(body)
    raise CodecError(f"unknown fact encoding {tag!r}")


def _decode_scan(body: dict[str, Any]) -> ScanFact:
    if set(body) != {"source", "scanned_at", "ids", "attestor"}:
        raise CodecError("malformed scan fact")
    source, scanned_at, ids, attestor = (
        body["source"], body["scanned_at"], body["ids"], body["attestor"]
    )
    if not isinstance(source, str) or not isinstance(scanned_at, str):
        raise CodecError("malformed scan fact")
    if attestor is not None and not isinstance(attestor, str):
        raise CodecError("malformed scan attestor")
    if not isinstance(ids, dict) or not all(
        isinstance(items, list) and all(isinstance(item, str) for item in items)
        for items in ids.values()
    ):
        raise CodecError("malformed scan ids")
    try:
        when = dt.datetime.fromisoformat(scanned_at)
    except ValueError as exc:
        raise CodecError(f"malformed scan time: {exc}") from None
    return ScanFact(source, when, {severity: tuple(items) for severity, items in ids.items()},
                    attestor)


def _canonical_key(key: Hashable) -> bytes:
    def plain(part: object) -> object:
        if part is None or isinstance(part, str | int):
            return part
        if isinstance(part, tuple):
            return [plain(item) for item in part]
        raise CodecError(f"cannot share a cache key holding a {type(part).__name__}")

    return json.dumps(plain(key), separators=(",", ":"), ensure_ascii=True).encode()


def entry_key(fact: str, key: Hashable) -> bytes:
    """The Redis key of a fact: prefix, fact type, SHA-256 of the canonical key."""
    return _PREFIX + fact.encode() + b":" + hashlib.sha256(_canonical_key(key)).hexdigest().encode()


def seal(secret: bytes, redis_key: bytes, value: object, *, expires_at: float) -> bytes:
    """``<hex HMAC>.<payload>``, the MAC over the Redis key and the payload together."""
    payload = json.dumps(
        {"exp": round(expires_at * 1000), "fact": encode_fact(value)},
        separators=(",", ":"), sort_keys=True, ensure_ascii=True,
    ).encode()
    return _mac(secret, redis_key, payload).encode() + b"." + payload


def unseal(secret: bytes, redis_key: bytes, entry: bytes) -> tuple[object, float]:
    """(value, expiry as a Unix time) of an authentic entry; CodecError otherwise."""
    mac, dot, payload = entry.partition(b".")
    if not dot or not hmac.compare_digest(mac, _mac(secret, redis_key, payload).encode()):
        raise CodecError("authentication failed")
    try:
        body = json.loads(payload)
    except ValueError as exc:  # authentic yet unreadable: a writer of another version
        raise CodecError(f"unreadable entry: {exc}") from None
    if not isinstance(body, dict) or not isinstance(body.get("exp"), int) or "fact" not in body:
        raise CodecError("malformed entry")
    return decode_fact(body["fact"]), body["exp"] / 1000


def _mac(secret: bytes, redis_key: bytes, payload: bytes) -> str:
    message = b"sealgate-fact-v1\0" + str(len(redis_key)).encode() + b":" + redis_key + payload
    return hmac.new(secret, message, hashlib.sha256).hexdigest()


# --------------------------------------------------------------------------- scripts

# One round trip: the entry if there is one (a non-string or oversized value answers
# "garbage" instead of being read), else the lease when ARGV[1] holds a token, else
# whether someone holds it.
_LOOKUP = """
local kind = redis.call('TYPE', KEYS[1])['ok']
if kind == 'string' then
  if redis.call('STRLEN', KEYS[1]) > tonumber(ARGV[3]) then return {4} end
  return {1, redis.call('GET', KEYS[1])}
elseif kind ~= 'none' then
  return {4}
end
if ARGV[1] ~= '' then
  if redis.call('SET', KEYS[2], ARGV[1], 'NX', 'PX', ARGV[2]) then return {2} end
  return {0}
end
if redis.call('EXISTS', KEYS[2]) == 1 then return {0} end
return {3}
"""
# Store (unless ARGV[1] is empty: an error is never stored) and drop our lease.
_STORE = """
if ARGV[1] ~= '' then redis.call('SET', KEYS[1], ARGV[1], 'PX', ARGV[2]) end
if ARGV[3] ~= '' and redis.pcall('GET', KEYS[2]) == ARGV[3] then redis.call('DEL', KEYS[2]) end
return 1
"""
_RENEW = """
if redis.pcall('GET', KEYS[1]) == ARGV[1] then return redis.call('PEXPIRE', KEYS[1], ARGV[2]) end
return 0
"""


class _State(enum.Enum):
    BUSY = 0  # a peer holds the lease
    HIT = 1
    LEASED = 2  # ours: fetch and store
    GONE = 3  # no value and no lease: the holder failed or died
    GARBAGE = 4
    UNAVAILABLE = 5  # down, slow, or in backoff


@dataclass(frozen=True, slots=True)
class _Lookup:
    state: _State
    value: object = None
    ttl: float | None = None  # seconds left, for a hit


class SharedCache:
    """The Valkey/Redis level (a ``cache.SecondLevel``); one per process."""

    def __init__(
        self,
        client: aioredis.Redis,
        secret: bytes,
        *,
        timeout: float = 0.05,
        max_wait: float = 4.0,
        lease_ttl: float = 2.0,
        metrics: Metrics | None = None,
        facts: frozenset[str] = SHARED_FACTS,
        clock: Callable[[], float] = time.time,
        timer: Callable[[], float] = time.monotonic,
    ) -> None:
        from redis.exceptions import RedisError
        from redis.exceptions import TimeoutError as RedisTimeoutError

        self._failures: tuple[type[BaseException], ...] = (RedisError, OSError, TimeoutError)
        self._timeouts: tuple[type[BaseException], ...] = (TimeoutError, RedisTimeoutError)
        self._client = client
        self._secret = secret
        self.timeout = timeout
        self.max_wait = max_wait
        self.lease_ttl = lease_ttl
        self._metrics = metrics
        self._facts = facts
        self._clock = clock
        self._timer = timer
        self._lookup_script = client.register_script(_LOOKUP)
        self._store_script = client.register_script(_STORE)
        self._renew_script = client.register_script(_RENEW)
        self._background: set[asyncio.Task[None]] = set()
        self._retry_at = 0.0  # monotonic: skip the level until then
        self._backoff = 0.0
        self._slow_in_a_row = 0
        self._last_slow_at = -1.0  # when the latest late call gave up (monotonic)
        self._logged_at = self._integrity_logged_at = -_LOG_EVERY * 2
        if metrics is not None:
            metrics.shared_cache_up.set(1)

    # -------------------------------------------------------------- SecondLevel

    def shares(self, fact: str) -> bool:
        return fact in self._facts

    async def get_or_fetch(
        self,
        fact: str,
        key: Hashable,
        fetch: Callable[[], Awaitable[T]],
        ttl_of: Callable[[T], float | None],
    ) -> tuple[T, float | None, bool]:
        try:
            redis_key = entry_key(fact, key)
        except CodecError:
            value = await fetch()
            return value, ttl_of(value), False
        token = secrets.token_hex(16)
        found = await self._lookup(fact, redis_key, token)
        if found.state is _State.BUSY:
            found = await self._wait(fact, redis_key)
            if found.state is _State.HIT:
                self._count(fact, "waited")
        elif found.state is _State.HIT:
            self._count(fact, "hit")
        if found.state is _State.HIT:
            return found.value, found.ttl, True  # type: ignore[return-value]
        if found.state is _State.UNAVAILABLE:
            self._count(fact, "skipped")
        else:
            self._count(fact, "miss")
        leased = found.state is _State.LEASED
        renewal = asyncio.ensure_future(self._renew(redis_key, token)) if leased else None
        try:
            value = await fetch()
        except BaseException:
            if renewal is not None:
                renewal.cancel()
                self._spawn(self._store(fact, redis_key, None, None, token))
            raise
        if renewal is not None:
            renewal.cancel()
        ttl = ttl_of(value)
        if leased or found.state is not _State.UNAVAILABLE:
            self._spawn(self._store(fact, redis_key, value, ttl, token if leased else ""))
        return value, ttl, False

    # -------------------------------------------------------------- the steps

    async def _lookup(self, fact: str, redis_key: bytes, token: str) -> _Lookup:
        answer = await self._call(
            "lookup", self._lookup_script,
            [redis_key, redis_key + b":lease"],
            [token, round(self.lease_ttl * 1000), _MAX_ENTRY_BYTES],
        )
        if answer is None:
            return _Lookup(_State.UNAVAILABLE)
        state = _State(int(answer[0]))
        if state is _State.GARBAGE:
            self._integrity_failure(fact, "not a string, or oversized")
            return _Lookup(state)
        if state is not _State.HIT:
            return _Lookup(state)
        try:
            value, expires_at = unseal(self._secret, redis_key, answer[1])
        except CodecError as exc:
            self._integrity_failure(fact, str(exc))
            return _Lookup(_State.GARBAGE)
        left = expires_at - self._clock()
        if left <= 0:
            return _Lookup(_State.GONE)  # authentic but over: an old entry replayed
        return _Lookup(_State.HIT, value, left)

    async def _wait(self, fact: str, redis_key: bytes) -> _Lookup:
        """Poll for a peer's value while it holds the lease, up to ``max_wait``."""
        give_up = self._timer() + self.max_wait
        delay = 0.005
        while self._timer() < give_up:
            await asyncio.sleep(min(delay, max(0.0, give_up - self._timer())))
            delay = min(delay * 2, 0.05)
            found = await self._lookup(fact, redis_key, "")
            if found.state is not _State.BUSY:
                return found
        return _Lookup(_State.GONE)

    async def _renew(self, redis_key: bytes, token: str) -> None:
        lease_key = redis_key + b":lease"
        while True:
            await asyncio.sleep(self.lease_ttl / 3)
            await self._call("renew", self._renew_script, [lease_key],
                             [token, round(self.lease_ttl * 1000)])

    async def _store(self, fact: str, redis_key: bytes, value: object, ttl: float | None,
                     token: str) -> None:
        entry = b""
        if ttl is not None and ttl > 0:
            try:
                entry = seal(self._secret, redis_key, value, expires_at=self._clock() + ttl)
            except CodecError as exc:
                log.debug("not sharing a %s fact: %s", fact, exc)
        if not entry and not token:
            return
        await self._call("store", self._store_script, [redis_key, redis_key + b":lease"],
                         [entry, max(1, round((ttl or 0) * 1000)), token])

    # -------------------------------------------------------------- availability

    async def _call(self, operation: str, script: Any, keys: list[bytes],
                    args: list[object]) -> Any:
        """The script's answer, or None when the level is down, slow or backing off."""
        started = self._timer()
        if started < self._retry_at:
            return None
        try:
            async with asyncio.timeout(self.timeout):
                answer = await script(keys=keys, args=args)
        except self._failures as exc:
            self._failed(operation, exc, started)
            return None
        self._slow_in_a_row = 0
        if self._backoff:
            self._recovered()
        return answer

    async def connect(self, *, within: float = 2.0, connections: int = 8) -> bool:
        """Open the first connections and load the scripts, with more time than a lookup
        gets: a TCP/TLS handshake and authentication take several round trips, which a
        50 ms budget on a busy host may not cover. Concurrent pings leave ``connections``
        open in the pool for the facts a request looks up at once. False when the cache
        does not answer, which only starts the level in backoff."""
        try:
            async with asyncio.timeout(within):
                await asyncio.gather(*(self._client.ping() for _ in range(connections)))
                for script in (self._lookup_script, self._store_script, self._renew_script):
                    await self._client.script_load(script.script)
        except self._failures as exc:
            self._slow_in_a_row = _SLOW_IN_A_ROW
            self._failed("connect", exc, self._timer())
            return False
        return True

    def _failed(self, operation: str, exc: BaseException, started: float) -> None:
        now = self._timer()
        slow = isinstance(exc, self._timeouts)
        if self._metrics is not None:
            self._metrics.shared_cache_errors.labels(
                reason="timeout" if slow else "unavailable").inc()
        if slow:
            # A late answer skips only its own lookup. The cache counts as down after
            # three in a row, where calls late together count once (one stall, whoever's)
            # and a timeout that fired well after its time does not count at all: the
            # event loop was busy (CPU-bound verification, a loaded host), not the cache.
            late_together = started < self._last_slow_at
            loop_stalled = now - started > 2 * self.timeout
            self._last_slow_at = max(self._last_slow_at, now)
            if not late_together and not loop_stalled:
                self._slow_in_a_row += 1
            if self._slow_in_a_row < _SLOW_IN_A_ROW:
                return
        if self._metrics is not None:
            self._metrics.shared_cache_up.set(0)
        if now >= self._retry_at:  # concurrent failures back off once
            doubled = min(self._backoff * 2, _BACKOFF_MAX)
            self._backoff = doubled if self._backoff else _BACKOFF_FIRST
            self._retry_at = now + self._backoff
        if now - self._logged_at >= _LOG_EVERY:
            self._logged_at = now
            what = f"no answer within {self.timeout * 1000:g} ms" if slow else (
                f"{exc.__class__.__name__}: {exc}")
            log.warning("shared cache unavailable (%s during %s); using the local cache only, "
                        "retrying in %gs", what, operation, self._backoff)

    def _recovered(self) -> None:
        self._backoff = 0.0
        self._retry_at = 0.0
        if self._metrics is not None:
            self._metrics.shared_cache_up.set(1)
        now = self._timer()
        if now - self._logged_at >= _LOG_EVERY:
            self._logged_at = now
            log.info("shared cache reachable again")

    def _integrity_failure(self, fact: str, why: str) -> None:
        if self._metrics is not None:
            self._metrics.cache_integrity_failures.labels(fact=fact).inc()
        now = self._timer()
        if now - self._integrity_logged_at >= _LOG_EVERY:
            self._integrity_logged_at = now
            log.warning("shared cache entry for a %s fact failed its integrity check (%s): "
                        "treated as a miss; is something else writing to the cache?", fact, why)

    def _count(self, fact: str, result: str) -> None:
        if self._metrics is not None:
            self._metrics.shared_cache_requests.labels(fact=fact, result=result).inc()

    # -------------------------------------------------------------- lifecycle

    def _spawn(self, coroutine: Awaitable[None]) -> None:
        task = asyncio.ensure_future(coroutine)
        self._background.add(task)
        task.add_done_callback(self._background.discard)

    async def flush(self) -> None:
        """Wait for the writes still in flight (each is bounded by the timeout)."""
        while self._background:
            await asyncio.wait(set(self._background))

    async def aclose(self) -> None:
        """Let pending writes finish (each is bounded by the timeout), then disconnect."""
        if self._background:
            await asyncio.wait(set(self._background), timeout=self.timeout * 4)
        for task in list(self._background):
            task.cancel()
        await self._client.aclose()


def redis_client(url: str, *, timeout: float) -> aioredis.Redis:
    """An async client that never retries by itself. Each call is bounded by the level's
    own timeout; the socket timeouts are only a backstop, loose enough for the TLS
    handshake of the first connection (``SharedCache.connect``)."""
    import redis.asyncio as aioredis
    from redis.asyncio.retry import Retry
    from redis.backoff import NoBackoff

    backstop = max(timeout, 1.0)
    client: aioredis.Redis = aioredis.Redis.from_url(
        url,
        socket_timeout=backstop,
        socket_connect_timeout=backstop,
        retry=Retry(NoBackoff(), 0),
        health_check_interval=0,
    )
    return client


@contextlib.asynccontextmanager
async def shared_cache(
    settings: Settings, *, metrics: Metrics | None = None
) -> AsyncIterator[SharedCache | None]:
    """The configured shared level (None without ``SEALGATE_CACHE_URL``), closed on exit."""
    if settings.cache_url is None:
        yield None
        return
    if settings.cache_key is None:
        raise SettingsError("SEALGATE_CACHE_KEY: required with SEALGATE_CACHE_URL")
    secret = load_cache_key(settings.cache_key)
    level = SharedCache(
        redis_client(settings.cache_url, timeout=settings.cache_timeout), secret,
        timeout=settings.cache_timeout, max_wait=settings.deadline / 2, metrics=metrics,
    )
    try:
        await level.connect()
        yield level
    finally:
        await level.aclose()
