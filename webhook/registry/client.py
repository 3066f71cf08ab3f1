"""Async client for the Docker Registry HTTP API v2 / OCI distribution (SPEC §4).

What it does: resolve tags to digests, fetch manifests and blobs (verifying that
content hashes to the digest it was asked for), find cosign's legacy
``sha256-<hex>.sig`` / ``.att`` images and OCI referrers. Every request goes through
``_request``: authentication (webhook.registry.auth), retries with backoff, and at
most ``max_concurrency`` requests per registry.

Every failure is a RegistryError naming the registry, the repository and what
happened; a 404 for a manifest is the definitive ManifestUnknownError. Messages
never carry credentials or tokens. The client does not own its
``httpx.AsyncClient``: the app lifespan creates and closes it.
"""

from __future__ import annotations

import hashlib
import logging
import random
import time
from collections.abc import Callable, Mapping

import anyio
import httpx

from webhook.errors import (
    ManifestUnknownError,
    RegistryAuthError,
    RegistryContentError,
    RegistryError,
)
from webhook.fairness import FairLimiter
from webhook.limits import RegistryLimits
from webhook.oci import MANIFEST_MEDIA_TYPES, Descriptor, Manifest, SignatureLayer
from webhook.references import DOCKER_HUB, ImageReference
from webhook.registry import referrers as _referrers
from webhook.registry.auth import Authenticator
from webhook.registry.content import (
    _ERROR_BODY_BYTES,
    _MAX_TRACKED,
    _describe,
    _error_code,
    _Fetched,
    _media_type,
    _read_capped,
    _read_prefix,
    _signature_layers,
    _verify_digest,
)
from webhook.registry.credentials import RegistryCredentials

# Blob fetches of one .sig image in flight at once.
_LAYER_CONCURRENCY = 8
log = logging.getLogger(__name__)
_MAX_RETRY_AFTER = 2.0  # seconds: longer waits are not worth it inside a webhook deadline

_MANIFEST_ACCEPT = ", ".join(MANIFEST_MEDIA_TYPES)
_DOCKER_HUB_API = "registry-1.docker.io"


class RegistryClient:
    """One per app. Talks HTTPS, or plain HTTP to hosts listed in ``insecure``."""

    def __init__(
        self,
        http: httpx.AsyncClient,
        *,
        credentials: RegistryCredentials | None = None,
        insecure: frozenset[str] = frozenset(),
        clock: Callable[[], float] = time.monotonic,
        retries: int = 3,
        backoff: float = 0.1,
        max_concurrency: int = 32,
        on_response: Callable[[str, str], None] | None = None,
        limits: RegistryLimits | None = None,
    ) -> None:
        self._http = http
        self.limits = limits or RegistryLimits()  # SPEC §9 hard limits (settings)
        self._insecure = insecure
        self._clock = clock
        self._retries = retries
        self._backoff = backoff
        self._max_concurrency = max_concurrency
        # per registry; round robin between admission requests (webhook.fairness)
        self._limits: dict[str, FairLimiter] = {}
        self._on_response = on_response
        # registries that answered 404 for the referrers API: host -> monotonic expiry
        self._no_referrers_api: dict[str, float] = {}
        self._auth = Authenticator(
            http, credentials=credentials, insecure=insecure, clock=clock
        )

    # ----------------------------------------------------------------- public API

    def credential_source(self, registry: str) -> str:
        """``config`` when SEALGATE_REGISTRY_AUTH has credentials for ``registry``, else
        ``anonymous`` (what an audit line names when pod pull secrets are off)."""
        return "config" if self._auth.has_credentials(registry) else "anonymous"

    def base_url(self, registry: str) -> str:
        """``https://host[:port]`` (``http://`` when insecure); Docker Hub's API host."""
        scheme = "http" if registry in self._insecure else "https"
        host = _DOCKER_HUB_API if registry == DOCKER_HUB else registry
        return f"{scheme}://{host}"

    async def get_manifest(self, ref: ImageReference, reference: str) -> Manifest:
        """The manifest (or index) at a tag or digest, verified against that digest."""
        what = f"manifest {ref.repository}{'@' if ':' in reference else ':'}{reference}"
        fetched = await self._request(
            ref,
            f"/v2/{ref.repository}/manifests/{reference}",
            what=what,
            accept=_MANIFEST_ACCEPT,
            max_bytes=self.limits.max_manifest_bytes,
        )
        if fetched.status == 404:
            raise ManifestUnknownError(
                f"registry {ref.registry} has no {what}{_error_code(fetched.content)}"
            )
        content = fetched.content
        if ":" in reference:
            # A digest reference: the content must be what the reference names.
            _verify_digest(content, reference, ref, what)
            digest = reference
        else:
            digest = "sha256:" + hashlib.sha256(content).hexdigest()
        header = fetched.headers.get("docker-content-digest")
        if header:
            _verify_digest(content, header.strip(), ref, what, source="Docker-Content-Digest")
        return Manifest(digest=digest, media_type=_media_type(fetched, content), content=content)

    async def resolve_digest(self, ref: ImageReference) -> str:
        """The digest a reference names; a digest reference needs no request.

        An index / manifest list digest is kept as is (SPEC §4: resolved as the
        digest the reference names), so signatures on the index are what count.
        """
        if ref.digest is not None:
            return ref.digest
        manifest = await self.get_manifest(ref, ref.tag or "latest")
        return manifest.digest

    async def get_blob(
        self, ref: ImageReference, digest: str, *, max_bytes: int | None = None
    ) -> bytes:
        """A blob's bytes, verified against ``digest``; redirects (CDNs) are followed."""
        what = f"blob {ref.repository}@{digest}"
        fetched = await self._request(
            ref,
            f"/v2/{ref.repository}/blobs/{digest}",
            what=what,
            max_bytes=self.limits.max_blob_bytes if max_bytes is None else max_bytes,
            follow_redirects=True,
        )
        if fetched.status == 404:
            raise RegistryError(
                f"registry {ref.registry} has no {what}{_error_code(fetched.content)}"
            )
        _verify_digest(fetched.content, digest, ref, what)
        return fetched.content

    async def cosign_signatures(
        self, ref: ImageReference, image_digest: str
    ) -> list[SignatureLayer]:
        """Layers of cosign's ``sha256-<hex>.sig`` image for a digest; ``[]`` when there is none."""
        return await self._cosign_attached_layers(ref, image_digest, "sig", "signature")

    async def cosign_attestations(
        self, ref: ImageReference, image_digest: str
    ) -> list[SignatureLayer]:
        """Layers of cosign's legacy ``sha256-<hex>.att`` image; ``[]`` when there is none.

        Each layer is a DSSE envelope (media type ``application/vnd.dsse.envelope.v1+json``)
        with cosign's annotations (certificate, chain, Rekor bundle, predicateType).
        """
        return await self._cosign_attached_layers(ref, image_digest, "att", "attestation")


    async def referrers(
        self, ref: ImageReference, digest: str, *, artifact_type: str | None = None
    ) -> list[Descriptor]:
        """Artifacts whose ``subject`` is ``digest``: OCI 1.1 referrers API, else the tag schema.

        ``GET /v2/<name>/referrers/<digest>`` answers an OCI index (200, possibly empty:
        "no referrers"). A 404 means the registry lacks the API (distribution 2.8 answers
        404 for the route; the OCI spec forbids a 404 from registries that have it): then
        the referrers tag schema's ``sha256-<hex>`` index is read instead, and a missing
        tag means no referrers. ``artifact_type`` is sent as the API's filter and applied
        here too, since registries may ignore it and the tag schema cannot filter.
        """
        return await _referrers.find_referrers(self, ref, digest, artifact_type)

    async def bundle_for(self, ref: ImageReference, descriptor: Descriptor) -> bytes:
        """The sigstore bundle a referrer artifact carries: its manifest's bundle layer blob.

        The manifest is fetched by the descriptor's digest and the layer blob by its own
        digest, each verified against the digest. RegistryError when the manifest holds
        no bundle layer.
        """
        return await _referrers.bundle_for(self, ref, descriptor)

    async def _cosign_attached_layers(
        self, ref: ImageReference, image_digest: str, suffix: str, kind: str
    ) -> list[SignatureLayer]:
        algorithm, _, encoded = image_digest.partition(":")
        tag = f"{algorithm}-{encoded}.{suffix}"
        try:
            manifest = await self.get_manifest(ref, tag)
        except ManifestUnknownError:
            return []  # no such tag: a definitive "nothing attached", not an error
        what = f"{kind} manifest {ref.repository}:{tag}"
        layers = _signature_layers(manifest.content, ref, what)[:self.limits.max_signatures]
        payloads: list[bytes | None] = [None] * len(layers)
        errors: list[RegistryError] = []
        limiter = anyio.Semaphore(_LAYER_CONCURRENCY)

        async with anyio.create_task_group() as group:

            async def fetch(index: int, digest: str) -> None:
                async with limiter:
                    try:
                        payloads[index] = await self.get_blob(ref, digest)
                    except RegistryContentError as exc:
                        # a planted oversized layer is not a signature; the others may be
                        log.info("skipping %s layer %s: %s", kind, digest, exc)
                    except RegistryError as exc:
                        # One unreadable layer makes the answer an error: stop the rest.
                        errors.append(exc)
                        group.cancel_scope.cancel()

            for index, (_, digest, _) in enumerate(layers):
                group.start_soon(fetch, index, digest)
        if errors:
            raise errors[0]
        return [
            SignatureLayer(media_type=media_type, payload=payload, annotations=annotations)
            for (media_type, _, annotations), payload in zip(layers, payloads, strict=True)
            if payload is not None
        ]

    # ----------------------------------------------------------------- HTTP + auth

    async def _request(
        self,
        ref: ImageReference,
        path: str,
        *,
        what: str,
        max_bytes: int,
        accept: str | None = None,
        follow_redirects: bool = False,
    ) -> _Fetched:
        """GET ``path`` on ``ref``'s registry with auth; 200 and 404 return, all else raises.

        The one place every registry request goes through: retries with backoff
        and response caching belong here.
        """
        url = self.base_url(ref.registry) + path
        scope = f"repository:{ref.repository}:pull"
        headers = {"Accept": accept} if accept else {}
        authorization = self._auth.known_authorization(ref.registry, scope)
        fetched = await self._send(
            ref, url, headers, authorization, what=what, max_bytes=max_bytes,
            follow_redirects=follow_redirects,
        )
        if fetched.status == 401:
            if authorization is not None:
                # A cached token the registry no longer takes: start over once.
                self._auth.forget(ref.registry, scope)
            authorization = await self._auth.authorize(ref, fetched.headers, scope, what)
            fetched = await self._send(
                ref, url, headers, authorization, what=what, max_bytes=max_bytes,
                follow_redirects=follow_redirects,
            )
            if fetched.status in (401, 403):
                raise RegistryAuthError(
                    f"registry {ref.registry} refused access to repository {ref.repository} "
                    f"after authenticating (HTTP {fetched.status}) for {what}"
                    f"{_error_code(fetched.content)}"
                )
        if fetched.status in (200, 404):
            return fetched
        if fetched.status == 403:
            raise RegistryAuthError(
                f"registry {ref.registry} denied access to repository {ref.repository} "
                f"(HTTP 403) for {what}{_error_code(fetched.content)}"
            )
        if fetched.status == 429:
            raise RegistryError(
                f"registry {ref.registry} is rate limiting (HTTP 429) for {what}"
                f"{_error_code(fetched.content)}"
            )
        raise RegistryError(
            f"registry {ref.registry} answered HTTP {fetched.status} for {what}"
            f"{_error_code(fetched.content)}"
        )

    async def _send(
        self,
        ref: ImageReference,
        url: str,
        headers: Mapping[str, str],
        authorization: str | None,
        *,
        what: str,
        max_bytes: int,
        follow_redirects: bool,
    ) -> _Fetched:
        """One request with retries: 429, 5xx and connection errors are tried again after a
        jittered exponential backoff. The request's deadline cancels any wait, so retries
        only ever happen inside it; at most ``max_concurrency`` requests per registry."""
        limit = self._limits.get(ref.registry)
        if limit is None:
            if len(self._limits) >= _MAX_TRACKED:
                # forget idle registries' semaphores (one in use is never dropped)
                for registry, idle in list(self._limits.items()):
                    if idle.idle:
                        del self._limits[registry]
            limit = self._limits[ref.registry] = FairLimiter(self._max_concurrency)
        attempt = 0
        while True:
            try:
                async with limit:
                    fetched = await self._send_once(
                        ref, url, headers, authorization, what=what, max_bytes=max_bytes,
                        follow_redirects=follow_redirects,
                    )
            except RegistryError as exc:
                if attempt >= self._retries or not _retryable_error(exc):
                    self._observe(ref.registry, "error")
                    raise
                self._observe(ref.registry, "error")
                delay = self._delay(attempt, None)
            else:
                self._observe(ref.registry, str(fetched.status))
                if attempt >= self._retries or not _retryable_status(fetched.status):
                    return fetched
                delay = self._delay(attempt, fetched.headers.get("retry-after"))
                if delay is None:
                    return fetched  # told to wait longer than a webhook can
            attempt += 1
            await anyio.sleep(delay or 0)

    def _observe(self, registry: str, status: str) -> None:
        if self._on_response is not None:
            self._on_response(registry, status)

    def _delay(self, attempt: int, retry_after: str | None) -> float | None:
        if retry_after is not None:
            try:
                wanted = float(retry_after)
            except ValueError:
                wanted = None  # an HTTP date: fall back to our own backoff
            if wanted is not None:
                return wanted if wanted <= _MAX_RETRY_AFTER else None
        # full jitter: spreads a rollout's retries instead of stampeding the registry
        return random.uniform(0, self._backoff * (2**attempt))  # noqa: S311 - not crypto

    async def _send_once(
        self,
        ref: ImageReference,
        url: str,
        headers: Mapping[str, str],
        authorization: str | None,
        *,
        what: str,
        max_bytes: int,
        follow_redirects: bool,
    ) -> _Fetched:
        request_headers = dict(headers)
        if authorization is not None:
            request_headers["Authorization"] = authorization
        request = self._http.build_request("GET", url, headers=request_headers)
        try:
            response = await self._http.send(
                request, stream=True, follow_redirects=follow_redirects
            )
            try:
                if response.status_code == 200:
                    content = await _read_capped(response, max_bytes, ref, what)
                else:
                    content = await _read_prefix(response, _ERROR_BODY_BYTES)
            finally:
                await response.aclose()
        except httpx.TimeoutException as exc:
            raise RegistryError(
                f"registry {ref.registry} timed out for {what} ({type(exc).__name__})"
            ) from exc
        except httpx.HTTPError as exc:
            raise RegistryError(
                f"could not reach registry {ref.registry} for {what}: {_describe(exc)}"
            ) from exc
        return _Fetched(response.status_code, response.headers, content)



def _retryable_status(status: int) -> bool:
    return status == 429 or status >= 500


def _retryable_error(exc: RegistryError) -> bool:
    """Network trouble and timeouts are worth another try; content problems are not."""
    cause = exc.__cause__
    return isinstance(cause, httpx.TransportError)
