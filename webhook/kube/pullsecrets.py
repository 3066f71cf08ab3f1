"""Registry credentials from the cluster: pod pull secrets (SPEC §9, SEALGATE_POD_PULL_SECRETS).

For a request, the credentials to try, in order: the pod's ``imagePullSecrets``
(a controller's pod template's), then those of its ServiceAccount
(``serviceAccountName``, else ``default``), then ``SEALGATE_REGISTRY_AUTH``
(``config``), then ``anonymous``. ``webhook.facts`` tries them per image in
that order, moving on when the registry answers 401/403.

Secrets and ServiceAccounts are read through the API server, cached briefly
(``ttl``) and fetched once however many requests want them at the same time
(single-flight). Secret contents never reach a log line, a metric or the
audit log: only ``secret/NAMESPACE/NAME`` does. An unreadable or malformed
secret is skipped (logged by name), as the kubelet would fail to use it.
"""

from __future__ import annotations

import asyncio
import base64
import binascii
import functools
import json
import logging
import time
from collections.abc import Awaitable, Callable, Mapping
from typing import Any, TypeVar

import anyio
import httpx2
from lightkube import ApiError, AsyncClient
from lightkube.resources.core_v1 import Secret, ServiceAccount

from webhook.admission import AdmissionRequest, pod_template
from webhook.errors import RegistryError
from webhook.registry import Credential, RegistryCredentials

log = logging.getLogger("sealgate")

DOCKER_CONFIG_JSON = "kubernetes.io/dockerconfigjson"
DOCKER_CFG = "kubernetes.io/dockercfg"
_MAX_ENTRIES = 4096  # cached secrets / service accounts; names come from pod specs
_LOOKUP_TIMEOUT = 2.0  # seconds for the whole chain; beyond it: config, then anonymous
ANONYMOUS = Credential("anonymous", None)

T = TypeVar("T")


def parse_pull_secret(
    secret_type: str, data: Mapping[str, str], source: str
) -> RegistryCredentials | None:
    """Credentials from a Secret's (base64) ``data``; None when it is no pull secret.

    RegistryError (naming ``source``, never the content) when it is one but malformed.
    """
    if secret_type == DOCKER_CONFIG_JSON:
        key, legacy = ".dockerconfigjson", False
    elif secret_type == DOCKER_CFG:
        key, legacy = ".dockercfg", True
    else:
        return None
    encoded = data.get(key)
    if not isinstance(encoded, str):
        raise RegistryError(f"{source}: no {key} in the secret's data")
    try:
        config = json.loads(base64.b64decode(encoded, validate=True))
    except (binascii.Error, ValueError, UnicodeDecodeError, RecursionError):
        raise RegistryError(f"{source}: {key} is not base64 of JSON") from None
    if legacy:
        config = {"auths": config}  # .dockercfg is the bare "auths" object
    return RegistryCredentials.from_config(config, source=source)


class PullSecrets:
    """The credential chain of a request, from the API server, cached with single-flight."""

    def __init__(
        self,
        client: AsyncClient,
        config: RegistryCredentials | None,
        *,
        ttl: float = 30.0,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self._client = client
        self._config = Credential("config", config) if config is not None else None
        self._ttl = ttl
        self._clock = clock
        self._cache: dict[tuple[str, str, str], tuple[float, Any]] = {}
        self._inflight: dict[tuple[str, str, str], asyncio.Future[Any]] = {}

    def fallback(self) -> tuple[Credential, ...]:
        return (self._config, ANONYMOUS) if self._config is not None else (ANONYMOUS,)

    async def chain(self, request: AdmissionRequest) -> tuple[Credential, ...]:
        """Pod secrets, ServiceAccount secrets, config, anonymous (duplicates dropped)."""
        namespace = request.namespace
        obj = request.obj
        template = pod_template(request.kind, obj) if obj is not None else None
        spec = template.get("spec") if isinstance(template, Mapping) else None
        if not namespace or not isinstance(spec, Mapping):
            return self.fallback()
        found: list[Credential] = []
        with anyio.move_on_after(_LOOKUP_TIMEOUT) as scope:
            names = _secret_names(spec.get("imagePullSecrets"))
            account = spec.get("serviceAccountName") or spec.get("serviceAccount") or "default"
            if isinstance(account, str):
                names += await self._cached(("sa", namespace, account),
                                            functools.partial(self._read_account, namespace,
                                                              account))
            for name in dict.fromkeys(names):
                credential = await self._cached(("secret", namespace, name),
                                                functools.partial(self._read_secret, namespace,
                                                                  name))
                if credential is not None:
                    found.append(credential)
        if scope.cancelled_caught:
            log.warning("pull secrets of namespace %s not read within %ss; using the "
                        "configured credentials", namespace, _LOOKUP_TIMEOUT)
        return (*found, *self.fallback())

    async def _cached(self, key: tuple[str, str, str], fetch: Callable[[], Awaitable[T]]) -> T:
        now = self._clock()
        hit = self._cache.get(key)
        if hit is not None and hit[0] > now:
            value: T = hit[1]
            return value
        pending = self._inflight.get(key)
        if pending is None:
            pending = asyncio.get_running_loop().create_future()
            self._inflight[key] = pending
            try:
                result = await fetch()
            except BaseException as exc:
                pending.set_exception(exc)
                pending.exception()  # retrieved: no "never retrieved" warning if nobody waits
                raise
            finally:
                self._inflight.pop(key, None)
            if len(self._cache) >= _MAX_ENTRIES:
                self._cache = {k: v for k, v in self._cache.items() if v[0] > now}
                while len(self._cache) >= _MAX_ENTRIES:
                    del self._cache[next(iter(self._cache))]
            self._cache[key] = (self._clock() + self._ttl, result)
            pending.set_result(result)
            return result
        shared: T = await asyncio.shield(pending)
        return shared

    async def _read_account(self, namespace: str, name: str) -> list[str]:
        try:
            account = await self._client.get(ServiceAccount, name, namespace=namespace)
        except ApiError as exc:
            if exc.status.code != 404:
                log.warning("serviceaccount %s/%s: cannot read it (HTTP %s)", namespace, name,
                            exc.status.code)
            return []
        except httpx2.HTTPError as exc:
            log.warning("serviceaccount %s/%s: cannot read it (%s)", namespace, name,
                        type(exc).__name__)
            return []
        return [ref.name for ref in account.imagePullSecrets or () if ref.name]

    async def _read_secret(self, namespace: str, name: str) -> Credential | None:
        source = f"secret/{namespace}/{name}"
        try:
            secret = await self._client.get(Secret, name, namespace=namespace)
        except ApiError as exc:
            log.warning("%s: cannot read it (HTTP %s); skipped", source, exc.status.code)
            return None
        except httpx2.HTTPError as exc:
            log.warning("%s: cannot read it (%s); skipped", source, type(exc).__name__)
            return None
        try:
            credentials = parse_pull_secret(secret.type or "", secret.data or {}, source)
        except RegistryError as exc:
            log.warning("%s; skipped", exc)
            return None
        if credentials is None:
            log.warning("%s: type %s is not a pull secret; skipped", source, secret.type)
            return None
        return Credential(source, credentials)


def _secret_names(value: object) -> list[str]:
    if not isinstance(value, list):
        return []
    return [
        item["name"] for item in value
        if isinstance(item, Mapping) and isinstance(item.get("name"), str) and item["name"]
    ]
