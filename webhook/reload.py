"""Policy hot reload: poll the policy directory, swap in a new set atomically (SPEC §2, §8).

Polling by content (not inotify) survives a ConfigMap's ``..data`` symlink
swap, where the watched files never change in place. A set that fails to load
keeps the last good one, logs why and counts it in
``sealgate_policy_reload_errors_total``; ``SIGHUP`` forces a reload.
"""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
import logging
import signal
from collections.abc import AsyncIterator, Callable, Iterable
from pathlib import Path

import anyio

from webhook.errors import PolicyError, SealgateError
from webhook.metrics import Metrics
from webhook.policy import NotationAuthority, Policy, PolicySet, load_policy_dir
from webhook.signatures.trust import load_trusted_root

log = logging.getLogger("sealgate")


def load_policies(directory: Path, *, generation: int) -> PolicySet:
    """Load a policy set and the trust roots its authorities name (so /readyz means usable)."""
    policies = load_policy_dir(directory, generation=generation)
    check_trusted_roots(policies.policies)
    return policies


def check_trusted_roots(policies: Iterable[Policy]) -> None:
    """PolicyError naming the authority whose trusted root cannot be loaded."""
    for policy in policies:
        for rule in policy.rules:
            authorities = (
                *(rule.signatures.authorities if rule.signatures else ()),
                *(rule.scan.attestors if rule.scan else ()),
            )
            for authority in authorities:
                if isinstance(authority, NotationAuthority):
                    continue  # its trust store is in the policy itself
                try:
                    load_trusted_root(authority.trusted_root)
                except SealgateError as exc:
                    raise PolicyError(
                        f"{authority.location}: authority {authority.name!r}: trusted root "
                        f"{authority.trusted_root}: {exc}"
                    ) from exc


def directory_fingerprint(directory: Path) -> str:
    """Hash of every file's path and content below ``directory`` (symlinks followed)."""
    digest = hashlib.sha256()
    if not directory.is_dir():
        return "missing"
    for path in sorted(directory.rglob("*")):
        relative = path.relative_to(directory)
        if any(part.startswith(".") for part in relative.parts):
            continue  # the ConfigMap's ..data/..2024_… directories; their links are followed
        try:
            if not path.is_file():
                continue
            content = path.read_bytes()
        except OSError:
            continue  # vanished mid-swap: the next poll sees the settled state
        digest.update(str(relative).encode() + b"\0" + hashlib.sha256(content).digest())
    return digest.hexdigest()


class PolicyReloader:
    def __init__(
        self,
        directory: Path,
        initial: PolicySet,
        *,
        metrics: Metrics | None = None,
        interval: float = 1.0,
    ) -> None:
        self.directory = directory
        self.current = initial
        self.metrics = metrics
        self.interval = interval
        self.last_error: str | None = None
        self._fingerprint: str | None = None
        self._wake = asyncio.Event()
        if metrics is not None:
            metrics.policy_generation.set(initial.generation)

    async def reload(self, *, force: bool = False) -> bool:
        """Load the directory if it changed (or ``force``); True when a new set is in place."""
        fingerprint = await anyio.to_thread.run_sync(directory_fingerprint, self.directory)
        if not force and fingerprint == self._fingerprint:
            return False
        generation = self.current.generation + 1
        try:
            policies = await anyio.to_thread.run_sync(
                lambda: load_policies(self.directory, generation=generation)
            )
        except SealgateError as exc:
            if self.last_error != str(exc) or force:
                log.error("policy reload failed, keeping generation %d: %s",
                          self.current.generation, exc)
                if self.metrics is not None:
                    self.metrics.policy_reload_errors.inc()
            self.last_error = str(exc)
            self._fingerprint = fingerprint  # don't retry the same broken content every poll
            return False
        self.current = policies  # one assignment: requests see the old set or the new one
        self._fingerprint = fingerprint
        self.last_error = None
        if self.metrics is not None:
            self.metrics.policy_generation.set(generation)
        log.info("loaded policy generation %d (%d policies) from %s",
                 generation, len(policies.policies), self.directory)
        return True

    async def _poll(self) -> None:
        while True:
            with anyio.move_on_after(self.interval):
                await self._wake.wait()
            forced = self._wake.is_set()
            self._wake.clear()
            try:
                await self.reload(force=forced)
            except Exception:  # the poller must outlive any surprise
                log.exception("policy reload crashed")

    def request_reload(self) -> None:
        self._wake.set()

    @contextlib.asynccontextmanager
    async def running(
        self, *, on_hangup: Callable[[], None] | None = None
    ) -> AsyncIterator[None]:
        """Poll in the background while the app serves; SIGHUP forces a reload (and calls
        ``on_hangup``: the audit log reopens for rotation)."""
        self._fingerprint = await anyio.to_thread.run_sync(directory_fingerprint, self.directory)
        if self.interval <= 0:
            yield
            return
        loop = asyncio.get_running_loop()
        hup = False
        with contextlib.suppress(NotImplementedError, RuntimeError, ValueError):
            def hangup() -> None:
                self.request_reload()
                if on_hangup is not None:
                    on_hangup()

            loop.add_signal_handler(signal.SIGHUP, hangup)  # main thread only
            hup = True
        # A plain task, not a task group: the lifespan may be entered and left by different
        # tasks (test fixtures do), which a cancel scope does not allow.
        poller = asyncio.create_task(self._poll(), name="sealgate-policy-reload")
        try:
            yield
        finally:
            poller.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await poller
            if hup:
                loop.remove_signal_handler(signal.SIGHUP)
