"""ImagePolicy objects from the cluster as a policy source (SPEC §9 ``--policy-source``).

``ClusterPolicies`` lists ``imagepolicies.sealgate.dev`` and then watches them
from the list's resourceVersion; a watch that breaks (API server restart,
network) is resumed from the last resourceVersion seen, and a ``410 Gone``
(that version compacted away) relists, replacing the whole set. Each object is
validated exactly as a policy file: a valid one replaces that name's policy,
a broken one leaves the last good version of that policy in force. Each
object's ``status`` says which: ``Ready=True`` with ``observedGeneration``, or
``Ready=False`` with every ``field: problem``. With ``both`` sources, a name
defined by a file and by an object is an error for the object (the file's
policy stays in force).

The active set (``current``) is the file policies plus every good object's
policy, rebuilt only when either side changes.
"""

from __future__ import annotations

import asyncio
import contextlib
import datetime as dt
import logging
from collections.abc import AsyncIterator, Callable, Mapping
from pathlib import Path
from typing import Any

import anyio
import httpx2
from lightkube import ApiError, AsyncClient, KubeConfig
from lightkube.generic_resource import create_global_resource
from lightkube.types import PatchType

from webhook.kube.crd import GROUP, PLURAL, VERSION
from webhook.kube.objects import Checked
from webhook.kube.validation import validate_object
from webhook.metrics import Metrics
from webhook.policy import KIND, Policy, PolicySet

log = logging.getLogger("sealgate")

ImagePolicyResource: Any = create_global_resource(GROUP, VERSION, KIND, PLURAL)
_RETRY_MIN, _RETRY_MAX = 0.2, 2.0  # seconds between watch attempts while it fails
_WATCH_TIMEOUT = 290  # server-side: a quiet watch is re-established this often
INITIAL_SYNC_TIMEOUT = 10.0  # seconds start-up waits for the first list (then: not ready)


def kube_client(kubeconfig: Path | None) -> AsyncClient:
    """An async client from ``kubeconfig``, else in-cluster config, else ``$KUBECONFIG``."""
    config = KubeConfig.from_file(kubeconfig) if kubeconfig else KubeConfig.from_env()
    return AsyncClient(config=config, field_manager="sealgate", timeout=httpx2.Timeout(10.0))


class ClusterPolicies:
    """The set in force from files (``files()``) and ImagePolicy objects."""

    def __init__(
        self,
        client: AsyncClient,
        files: Callable[[], PolicySet] | None,
        *,
        metrics: Metrics | None = None,
        write_status: bool = True,
    ) -> None:
        self._client = client
        self._files = files
        self._metrics = metrics
        self._write_status = write_status
        self._good: dict[str, Policy] = {}  # name -> last good policy from an object
        self._objects: dict[str, Checked] = {}  # name -> the object's latest verdict
        self._resource_version: str | None = None
        self._version = 0  # bumped on every change of _good
        self._built: tuple[int, int, PolicySet] | None = None
        self.synced = asyncio.Event()  # the first list has been applied
        self.relists = 0

    # ----------------------------------------------------------------- the active set

    @property
    def current(self) -> PolicySet:
        files = self._files() if self._files is not None else PolicySet((), 0)
        built = self._built
        if built is not None and built[0] == files.generation and built[1] == self._version:
            return built[2]
        file_names = {policy.name for policy in files.policies}
        cluster = [p for name, p in sorted(self._good.items()) if name not in file_names]
        generation = files.generation + self._version + 1
        policies = PolicySet((*files.policies, *cluster), generation)
        self._built = (files.generation, self._version, policies)
        if self._metrics is not None:
            self._metrics.policy_generation.set(generation)
        return policies

    def problems(self, name: str) -> tuple[str, ...]:
        checked = self._objects.get(name)
        return checked.problems if checked else ()

    # ----------------------------------------------------------------- applying objects

    async def _apply(self, obj: Mapping[str, Any]) -> None:
        checked = await anyio.to_thread.run_sync(validate_object, obj)
        if not checked.name:
            return
        if checked.policy is not None and self._files is not None and any(
            policy.name == checked.name for policy in self._files().policies
        ):
            checked = Checked(checked.name, checked.generation, None, (
                f"metadata.name: policy {checked.name!r} is also defined by a policy file; "
                "the file's policy stays in force",
            ))
        self._objects[checked.name] = checked
        if checked.policy is not None:
            self._good[checked.name] = checked.policy
            self._version += 1
            log.info("imagepolicy/%s generation %d in force", checked.name, checked.generation)
        else:
            kept = "keeping its last good version" if checked.name in self._good else "not in force"
            log.error("imagepolicy/%s generation %d is invalid, %s: %s", checked.name,
                      checked.generation, kept, "; ".join(checked.problems))
            if self._metrics is not None:
                self._metrics.policy_reload_errors.inc()
        await self._report(obj, checked)

    def _forget(self, name: str) -> None:
        self._objects.pop(name, None)
        if self._good.pop(name, None) is not None:
            self._version += 1
            log.info("imagepolicy/%s deleted: no longer in force", name)

    async def _report(self, obj: Mapping[str, Any], checked: Checked) -> None:
        """Write the Ready condition to the object's status, unless it already says so."""
        if not self._write_status:
            return
        ready = checked.policy is not None
        condition: dict[str, Any] = {
            "type": "Ready",
            "status": "True" if ready else "False",
            "reason": "Valid" if ready else "Invalid",
            "message": "in force" if ready else "\n".join(checked.problems)[:4096],
            "observedGeneration": checked.generation,
        }
        status = obj.get("status") if isinstance(obj.get("status"), Mapping) else {}
        assert isinstance(status, Mapping)
        previous = next((c for c in status.get("conditions") or () if isinstance(c, Mapping)
                         and c.get("type") == "Ready"), None)
        if previous is not None and all(previous.get(k) == v for k, v in condition.items()) and (
            status.get("observedGeneration") == checked.generation
        ):
            return  # nothing new: writing would only wake every watcher
        changed = previous is None or previous.get("status") != condition["status"]
        condition["lastTransitionTime"] = (
            dt.datetime.now(dt.UTC).strftime("%Y-%m-%dT%H:%M:%SZ")
            if changed else previous.get("lastTransitionTime") if previous else None
        )
        patch = {"status": {"observedGeneration": checked.generation, "conditions": [condition]}}
        try:
            await self._client.patch(ImagePolicyResource.Status, checked.name, patch,
                                     patch_type=PatchType.MERGE)
        except (ApiError, httpx2.HTTPError) as exc:
            # the object may be gone, or RBAC may not allow it: the policy is unaffected
            log.warning("imagepolicy/%s: could not update status: %s", checked.name, exc)

    # ----------------------------------------------------------------- list + watch

    async def _relist(self) -> None:
        listing = self._client.list(ImagePolicyResource)
        seen: set[str] = set()
        async for item in listing:
            obj = item.to_dict() if hasattr(item, "to_dict") else dict(item)
            await self._apply(obj)
            seen.add(obj["metadata"]["name"])
        for name in [name for name in self._objects if name not in seen]:
            self._forget(name)
        for name in [name for name in self._good if name not in seen]:
            self._forget(name)
        self._resource_version = listing.resourceVersion
        self.relists += 1
        self.synced.set()

    async def _watch(self) -> None:
        async for event, item in self._client.watch(
            ImagePolicyResource, resource_version=self._resource_version,
            server_timeout=_WATCH_TIMEOUT,
        ):
            obj = item.to_dict() if hasattr(item, "to_dict") else dict(item)
            metadata = obj.get("metadata") or {}
            if event == "DELETED":
                self._forget(metadata.get("name", ""))
            elif event in ("ADDED", "MODIFIED"):
                await self._apply(obj)
            if metadata.get("resourceVersion"):
                self._resource_version = metadata["resourceVersion"]

    async def run(self) -> None:
        """List, then watch forever; resume after failures, relist after 410 Gone."""
        delay = _RETRY_MIN
        need_list = True
        while True:
            try:
                if need_list:
                    await self._relist()
                    need_list = False
                await self._watch()
                delay = _RETRY_MIN
            except ApiError as exc:
                if exc.status.code == 410:
                    log.info("imagepolicies watch: resourceVersion %s is gone (410): relisting",
                             self._resource_version)
                    need_list = True
                    continue
                log.warning("imagepolicies watch failed: %s", exc)
            except (httpx2.HTTPError, OSError) as exc:
                log.warning("imagepolicies watch interrupted (%s); resuming from "
                            "resourceVersion %s", type(exc).__name__, self._resource_version)
            await asyncio.sleep(delay)
            delay = min(delay * 2, _RETRY_MAX)

    @contextlib.asynccontextmanager
    async def running(self, *, initial_sync_timeout: float | None = None) -> AsyncIterator[None]:
        """Watch in the background; wait for the first list (up to a bound) before serving."""
        if initial_sync_timeout is None:
            initial_sync_timeout = INITIAL_SYNC_TIMEOUT
        task = asyncio.create_task(self.run(), name="sealgate-imagepolicy-watch")
        try:
            with anyio.move_on_after(initial_sync_timeout):
                await self.synced.wait()
            if not self.synced.is_set():
                log.error("imagepolicies not listed within %ss; not ready until they are "
                          "(is the CRD installed, and may sealgate list it?)",
                          initial_sync_timeout)
            yield
        finally:
            task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await task
