"""Async client for the Docker Registry HTTP API v2 / OCI distribution (SPEC §4).

What it does: resolve tags to digests, fetch manifests and blobs (verifying that
content hashes to the digest it was asked for) and find cosign's legacy
``sha256-<hex>.sig`` signatures. Anonymous, bearer-token and basic auth;
credentials come from a docker ``config.json``-format file.

Every failure is a RegistryError naming the registry, the repository and what
happened; a 404 for a manifest is the definitive ManifestUnknownError. Messages
never carry credentials or tokens. The client does not own its
``httpx.AsyncClient``: the app lifespan creates and closes it.
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import json
import logging
import os
import random
import re
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any
from urllib.parse import urlencode, urlsplit

import anyio
import httpx

from webhook.errors import (
    DigestMismatchError,
    ManifestUnknownError,
    RegistryContentError,
    RegistryError,
)
from webhook.fairness import FairLimiter
from webhook.limits import RegistryLimits
from webhook.oci import (
    DOCKER_MANIFEST_LIST,
    MANIFEST_MEDIA_TYPES,
    OCI_INDEX,
    OCI_MANIFEST,
    SIGSTORE_BUNDLE_MEDIA_TYPES,
    Descriptor,
    Manifest,
    SignatureLayer,
)
from webhook.references import DOCKER_HUB, ImageReference

# The OCI distribution spec's limit for manifests registries must accept.
MAX_MANIFEST_BYTES = 4 * 1024 * 1024
MAX_BLOB_BYTES = 4 * 1024 * 1024
# A .sig image with more layers than this is abuse, not signatures: use the first ones.
MAX_SIGNATURE_LAYERS = 100
# Referrers of one digest we look at (API pages followed / descriptors kept): more is abuse.
MAX_REFERRER_PAGES = 10
MAX_REFERRERS = 1000
# Blob fetches of one .sig image in flight at once.
_LAYER_CONCURRENCY = 8
# Docker's token spec: a token without expires_in lives 60 s.
log = logging.getLogger(__name__)
DEFAULT_TOKEN_TTL = 60.0
_NO_REFERRERS_API_TTL = 600.0  # seconds
_MAX_RETRY_AFTER = 2.0  # seconds: longer waits are not worth it inside a webhook deadline
# Drop cached tokens a little before they expire, so a request never races the expiry.
_TOKEN_EXPIRY_MARGIN = 5.0
# Error bodies (401, 404, 5xx) are read only this far: we never need more of them.
_ERROR_BODY_BYTES = 64 * 1024
# Per-registry / per-repository state (tokens, semaphores, the referrers-API memo) is
# pruned beyond this many entries: image names come from whoever may create Pods.
_MAX_TRACKED = 1024
# A token claiming to live longer than a day is kept a day (and huge numbers stay floats).
_MAX_TOKEN_TTL = 86_400.0
# Token answers are a few KiB of JSON; a realm sending more is not read to its end.
_MAX_TOKEN_BYTES = 1024 * 1024

_MANIFEST_ACCEPT = ", ".join(MANIFEST_MEDIA_TYPES)
_DOCKER_HUB_API = "registry-1.docker.io"
_DOCKER_HUB_KEYS = frozenset({"docker.io", "index.docker.io", "registry-1.docker.io"})
_HASHES: Mapping[str, Callable[[bytes], Any]] = {
    "sha256": hashlib.sha256,
    "sha512": hashlib.sha512,
}
_GENERIC_CONTENT_TYPES = frozenset(
    {"", "application/json", "text/plain", "application/octet-stream"}
)
_DIGEST = re.compile(r"sha256:[0-9a-f]{64}|sha512:[0-9a-f]{128}")
_NEXT_LINK = re.compile(r'<([^>]*)>\s*;[^,]*?\brel="?next"?', re.IGNORECASE)
_CHALLENGE_PARAM = re.compile(r'\s*([A-Za-z_][\w-]*)\s*=\s*("(?:[^"\\]|\\.)*"|[^,\s]*)\s*,?')


class NoBundleLayerError(RegistryError):
    """A referrer artifact that carries no sigstore bundle layer: content, not an outage.

    Verifiers skip such a referrer (it is no signature) rather than treating it as a
    failed check, so nobody can turn a deny into ``onError`` by pushing one.
    """


# --------------------------------------------------------------------------- credentials


def _registry_key(text: str) -> str:
    """``host``, ``host:port``, ``https://host/v1/`` -> ``host[:port]``; Hub aliases: docker.io."""
    text = text.strip()
    if "://" in text:
        text = urlsplit(text).netloc
    host = text.split("/", 1)[0].lower()
    return DOCKER_HUB if host in _DOCKER_HUB_KEYS else host


class RegistryCredentials:
    """Basic credentials per registry host, from a docker ``config.json``-format file.

    Only the ``auths`` section is read: ``{"auths": {HOST: {"auth": base64("user:pass")}}}``
    or ``{HOST: {"username": ..., "password": ...}}``. Entries without credentials
    (Docker Desktop writes ``{}`` next to a ``credsStore``) are ignored.
    """

    __slots__ = ("_auths",)

    def __init__(self, auths: Mapping[str, tuple[str, str]] | None = None) -> None:
        self._auths = {_registry_key(host): creds for host, creds in (auths or {}).items()}

    def __repr__(self) -> str:
        # The secret never appears in a repr (logs, tracebacks, pytest output).
        return f"RegistryCredentials(hosts={sorted(self._auths)!r})"

    @property
    def hosts(self) -> frozenset[str]:
        return frozenset(self._auths)

    @classmethod
    def from_file(cls, path: str | os.PathLike[str]) -> RegistryCredentials:
        """Read a docker config file; RegistryError naming the file and the problem."""
        name = os.fspath(path)
        try:
            with open(name, "rb") as handle:
                raw = handle.read()
        except OSError as exc:
            raise RegistryError(
                f"registry credentials file {name}: cannot read it: {exc.strerror or exc}"
            ) from exc
        try:
            config = json.loads(raw)
        except (UnicodeDecodeError, json.JSONDecodeError) as exc:
            # JSONDecodeError.msg/lineno/colno describe the position, never the content.
            where = (
                f" (line {exc.lineno}, column {exc.colno}): {exc.msg}"
                if isinstance(exc, json.JSONDecodeError)
                else ": not UTF-8 text"
            )
            raise RegistryError(
                f"registry credentials file {name}: not valid JSON{where}"
            ) from exc
        return cls.from_config(config, source=name)

    @classmethod
    def from_config(cls, config: object, *, source: str = "<config>") -> RegistryCredentials:
        """Credentials from an already parsed docker config (``source`` names it in errors)."""

        def fail(problem: str) -> RegistryError:
            return RegistryError(f"registry credentials file {source}: {problem}")

        if not isinstance(config, dict):
            raise fail("expected a JSON object at the top level")
        auths = config.get("auths", {})
        if not isinstance(auths, dict):
            raise fail('"auths" must be an object mapping registry hosts to credentials')
        parsed: dict[str, tuple[str, str]] = {}
        for host, entry in auths.items():
            if not isinstance(entry, dict):
                raise fail(f'"auths" entry {host!r} must be an object')
            try:
                creds = _entry_credentials(entry)
            except _BadEntry as exc:
                raise fail(f'"auths" entry {host!r}: {exc}') from None
            if creds is not None:
                parsed[host] = creds
        return cls(parsed)

    def lookup(self, registry_host: str) -> tuple[str, str] | None:
        """``(username, password)`` for a registry host (``host[:port]``), or None."""
        return self._auths.get(_registry_key(registry_host))


class _BadEntry(Exception):
    """One ``auths`` entry is unusable; the text says why and never holds the secret."""


def _entry_credentials(entry: Mapping[str, Any]) -> tuple[str, str] | None:
    auth = entry.get("auth")
    if auth not in (None, ""):
        if not isinstance(auth, str):
            raise _BadEntry('"auth" must be a string (base64 of "username:password")')
        try:
            decoded = base64.b64decode(auth, validate=True).decode()
        except (binascii.Error, UnicodeDecodeError):
            # "from None": the decoder's message would quote the secret.
            raise _BadEntry('"auth" is not valid base64 of "username:password"') from None
        username, colon, password = decoded.partition(":")
        if not colon or not username:
            raise _BadEntry('"auth" does not decode to "username:password"')
        return username, password
    user = entry.get("username")
    secret = entry.get("password")
    if user is None and secret is None:
        return None
    if not isinstance(user, str) or not user:
        raise _BadEntry('"username" must be a non-empty string when "password" is given')
    if not isinstance(secret, str):
        raise _BadEntry('"password" must be a string when "username" is given')
    return user, secret


# --------------------------------------------------------------------------- client


@dataclass(frozen=True, slots=True)
class _Fetched:
    """A response read to the end (or to its cap), connection already released."""

    status: int
    headers: httpx.Headers
    content: bytes


@dataclass(frozen=True, slots=True)
class _Challenge:
    scheme: str  # lowercase: "bearer" | "basic" | other
    params: Mapping[str, str]


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
        self._credentials = credentials
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
        # (registry, scope) -> (token, monotonic expiry)
        self._tokens: dict[tuple[str, str], tuple[str, float]] = {}
        # registries that challenged with Basic: send credentials up front next time
        self._basic: set[str] = set()

    # ----------------------------------------------------------------- public API

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
        found = None
        if self._no_referrers_api.get(ref.registry, 0.0) <= self._clock():
            found = await self._referrers_api(ref, digest, artifact_type)
            if found is None:
                # remembered for a while: distribution 2.8 would cost a 404 every lookup
                _prune_expiring(self._no_referrers_api, lambda expiry: expiry, self._clock())
                self._no_referrers_api[ref.registry] = self._clock() + _NO_REFERRERS_API_TTL
        if found is None:
            found = await self._referrers_tag(ref, digest)
        if artifact_type is not None:
            found = [item for item in found if item.artifact_type == artifact_type]
        return found

    async def bundle_for(self, ref: ImageReference, descriptor: Descriptor) -> bytes:
        """The sigstore bundle a referrer artifact carries: its manifest's bundle layer blob.

        The manifest is fetched by the descriptor's digest and the layer blob by its own
        digest, each verified against the digest. RegistryError when the manifest holds
        no bundle layer.
        """
        manifest = await self.get_manifest(ref, descriptor.digest)
        what = f"referrer manifest {ref.repository}@{descriptor.digest}"
        layers = _signature_layers(manifest.content, ref, what)
        for media_type, digest, _ in layers:
            if media_type in SIGSTORE_BUNDLE_MEDIA_TYPES:
                return await self.get_blob(ref, digest)
        raise NoBundleLayerError(
            f"registry {ref.registry}: {what} has no sigstore bundle layer "
            f"(layer media types: {', '.join(sorted({m for m, _, _ in layers})) or 'none'})"
        )

    async def _referrers_api(
        self, ref: ImageReference, digest: str, artifact_type: str | None
    ) -> list[Descriptor] | None:
        """The referrers API's answer, following ``Link: rel="next"`` pages; None: no API."""
        path = f"/v2/{ref.repository}/referrers/{digest}"
        if artifact_type is not None:
            path += "?" + urlencode({"artifactType": artifact_type})
        what = f"referrers of {ref.repository}@{digest}"
        found: list[Descriptor] = []
        for page in range(MAX_REFERRER_PAGES):
            fetched = await self._request(
                ref, path, what=what, accept=OCI_INDEX,
                max_bytes=self.limits.max_referrers_bytes,
            )
            if fetched.status == 404:
                if "NAME_UNKNOWN" in _error_code(fetched.content):
                    # no such repository, so no referrers either way; and not a sign the
                    # registry lacks the API (a pod naming a made-up repository must not
                    # switch the whole registry to the fallback)
                    return []
                if page == 0:
                    return None  # no referrers API: the caller reads the tag schema
                raise RegistryError(
                    f"registry {ref.registry} answered HTTP 404 for a next page of {what}"
                )
            found.extend(_index_descriptors(fetched.content, ref, what))
            if len(found) >= self.limits.max_referrers:
                return found[:self.limits.max_referrers]
            next_path = _next_link(fetched.headers, self.base_url(ref.registry))
            if next_path is None:
                return found
            path = next_path
        return found

    async def _referrers_tag(self, ref: ImageReference, digest: str) -> list[Descriptor]:
        """The referrers tag schema: an OCI index tagged ``<alg>-<hex>``; no tag, no referrers."""
        algorithm, _, encoded = digest.partition(":")
        tag = f"{algorithm}-{encoded}"
        try:
            manifest = await self.get_manifest(ref, tag)
        except ManifestUnknownError:
            return []
        what = f"referrers tag {ref.repository}:{tag}"
        return _index_descriptors(manifest.content, ref, what)[:self.limits.max_referrers]

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
        authorization = self._known_authorization(ref.registry, scope)
        fetched = await self._send(
            ref, url, headers, authorization, what=what, max_bytes=max_bytes,
            follow_redirects=follow_redirects,
        )
        if fetched.status == 401:
            if authorization is not None:
                # A cached token the registry no longer takes: start over once.
                self._tokens.pop((ref.registry, scope), None)
            authorization = await self._authorize(ref, fetched.headers, scope, what)
            fetched = await self._send(
                ref, url, headers, authorization, what=what, max_bytes=max_bytes,
                follow_redirects=follow_redirects,
            )
            if fetched.status in (401, 403):
                raise RegistryError(
                    f"registry {ref.registry} refused access to repository {ref.repository} "
                    f"after authenticating (HTTP {fetched.status}) for {what}"
                    f"{_error_code(fetched.content)}"
                )
        if fetched.status in (200, 404):
            return fetched
        if fetched.status == 403:
            raise RegistryError(
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

    def _known_authorization(self, registry: str, scope: str) -> str | None:
        cached = self._tokens.get((registry, scope))
        if cached is not None:
            token, expiry = cached
            if self._clock() < expiry:
                return f"Bearer {token}"
            del self._tokens[(registry, scope)]
        if registry in self._basic:
            return self._basic_authorization(registry)
        return None

    def _basic_authorization(self, registry: str) -> str | None:
        creds = self._credentials.lookup(registry) if self._credentials else None
        if creds is None:
            return None
        return "Basic " + base64.b64encode(f"{creds[0]}:{creds[1]}".encode()).decode()

    async def _authorize(
        self, ref: ImageReference, headers: httpx.Headers, scope: str, what: str
    ) -> str:
        """Answer a 401's ``WWW-Authenticate`` challenge with an Authorization header value."""
        challenges = [
            challenge
            for value in headers.get_list("www-authenticate")
            if (challenge := _parse_challenge(value)) is not None
        ]
        by_scheme = {challenge.scheme: challenge for challenge in challenges}
        if "bearer" in by_scheme:
            token = await self._fetch_token(ref, by_scheme["bearer"], scope, what)
            return f"Bearer {token}"
        if "basic" in by_scheme:
            authorization = self._basic_authorization(ref.registry)
            if authorization is None:
                raise RegistryError(
                    f"registry {ref.registry} requires credentials for repository "
                    f"{ref.repository} ({what}); none are configured for {ref.registry}"
                )
            self._basic.add(ref.registry)
            return authorization
        offered = ", ".join(sorted(by_scheme)) or "none"
        raise RegistryError(
            f"registry {ref.registry} answered HTTP 401 for {what} without a usable "
            f"authentication challenge (offered: {offered})"
        )

    async def _fetch_token(
        self, ref: ImageReference, challenge: _Challenge, scope: str, what: str
    ) -> str:
        realm = challenge.params.get("realm", "")
        realm_url = urlsplit(realm)
        if realm_url.scheme not in ("http", "https") or not realm_url.netloc:
            raise RegistryError(
                f"registry {ref.registry} sent an unusable token realm for {what}"
            )
        params = {"scope": challenge.params.get("scope") or scope}
        if challenge.params.get("service"):
            params["service"] = challenge.params["service"]
        creds = self._credentials.lookup(ref.registry) if self._credentials else None
        # Never send the password in clear text to a host the operator did not mark insecure.
        if creds is not None and realm_url.scheme == "http" and (
            realm_url.netloc not in self._insecure
        ):
            creds = None
        token_what = f"token for repository {ref.repository} from {realm_url.netloc}"
        try:
            async with self._http.stream(
                "GET", realm, params=params, auth=creds, follow_redirects=True
            ) as response:
                status = response.status_code
                content = (
                    await _read_capped(response, _MAX_TOKEN_BYTES, ref, token_what)
                    if status == 200
                    else b""
                )
        except httpx.TimeoutException as exc:
            raise RegistryError(
                f"registry {ref.registry}: timed out fetching a {token_what} "
                f"({type(exc).__name__})"
            ) from exc
        except httpx.HTTPError as exc:
            raise RegistryError(
                f"registry {ref.registry}: could not fetch a {token_what}: {_describe(exc)}"
            ) from exc
        if status in (401, 403):
            hint = "credentials were rejected" if creds else "anonymous access was refused"
            raise RegistryError(
                f"registry {ref.registry}: {hint} fetching a {token_what} (HTTP {status})"
            )
        if status != 200:
            raise RegistryError(
                f"registry {ref.registry}: HTTP {status} fetching a {token_what}"
            )
        try:
            body = json.loads(content)
        except (ValueError, UnicodeDecodeError, RecursionError) as exc:
            raise RegistryError(
                f"registry {ref.registry}: the {token_what} is not JSON"
            ) from exc
        token = (body.get("token") or body.get("access_token")) if isinstance(body, dict) else None
        if not isinstance(token, str) or not token:
            raise RegistryError(f"registry {ref.registry}: no token in the {token_what}")
        ttl = body.get("expires_in")
        lifetime = (
            float(min(ttl, _MAX_TOKEN_TTL))
            if isinstance(ttl, int | float) and not isinstance(ttl, bool) and ttl > 0
            else DEFAULT_TOKEN_TTL
        )
        expiry = self._clock() + max(lifetime - _TOKEN_EXPIRY_MARGIN, lifetime / 2)
        _prune_expiring(self._tokens, lambda cached: cached[1], self._clock())
        self._tokens[(ref.registry, scope)] = (token, expiry)
        return token


# --------------------------------------------------------------------------- helpers


def _prune_expiring(
    entries: dict[Any, Any], expiry_of: Callable[[Any], float], now: float
) -> None:
    """Make room for one more entry: drop expired ones, then the oldest, below _MAX_TRACKED."""
    if len(entries) < _MAX_TRACKED:
        return
    for key in [key for key, value in entries.items() if expiry_of(value) <= now]:
        del entries[key]
    while len(entries) >= _MAX_TRACKED:
        del entries[next(iter(entries))]  # insertion order: the oldest first


def _retryable_status(status: int) -> bool:
    return status == 429 or status >= 500


def _retryable_error(exc: RegistryError) -> bool:
    """Network trouble and timeouts are worth another try; content problems are not."""
    cause = exc.__cause__
    return isinstance(cause, httpx.TransportError)


async def _read_capped(
    response: httpx.Response, max_bytes: int, ref: ImageReference, what: str
) -> bytes:
    """The body, or RegistryError as soon as it grows past ``max_bytes`` (stop reading)."""
    too_large = RegistryContentError(
        f"registry {ref.registry} sent a {what} larger than the limit of {max_bytes} bytes"
    )
    length = response.headers.get("content-length", "")
    if length.isdigit() and int(length) > max_bytes:
        raise too_large
    chunks: list[bytes] = []
    size = 0
    async for chunk in response.aiter_bytes():
        size += len(chunk)
        if size > max_bytes:
            raise too_large
        chunks.append(chunk)
    return b"".join(chunks)


async def _read_prefix(response: httpx.Response, limit: int) -> bytes:
    chunks: list[bytes] = []
    size = 0
    async for chunk in response.aiter_bytes():
        chunks.append(chunk)
        size += len(chunk)
        if size >= limit:
            break
    return b"".join(chunks)[:limit]


def _verify_digest(
    content: bytes,
    expected: str,
    ref: ImageReference,
    what: str,
    *,
    source: str = "requested digest",
) -> None:
    algorithm, _, encoded = expected.partition(":")
    hasher = _HASHES.get(algorithm)
    if hasher is None or not encoded:
        raise RegistryError(
            f"registry {ref.registry}: unsupported digest {expected!r} ({source}) for {what}"
        )
    actual = hasher(content).hexdigest()
    if actual != encoded.lower():
        raise DigestMismatchError(
            f"registry {ref.registry} sent content for {what} that does not match the "
            f"{source}: expected {expected}, content hashes to {algorithm}:{actual}"
        )


def _media_type(fetched: _Fetched, content: bytes) -> str:
    """Content-Type, unless missing or generic; then the JSON's ``mediaType`` or its shape."""
    header: str = fetched.headers.get("content-type", "")
    content_type = header.split(";", 1)[0].strip().lower()
    if content_type not in _GENERIC_CONTENT_TYPES:
        return content_type
    try:
        document = json.loads(content)
    except (ValueError, UnicodeDecodeError):
        return content_type
    if not isinstance(document, dict):
        return content_type
    declared = document.get("mediaType")
    if isinstance(declared, str) and declared:
        return declared
    # mediaType is optional in OCI documents: an index has "manifests", an image "layers".
    if "manifests" in document:
        return OCI_INDEX
    if "layers" in document or "config" in document:
        return OCI_MANIFEST
    return content_type


def _signature_layers(
    content: bytes, ref: ImageReference, what: str
) -> list[tuple[str, str, dict[str, str]]]:
    """``(mediaType, digest, annotations)`` of each layer of a .sig manifest."""

    def fail(problem: str) -> RegistryError:
        return RegistryContentError(f"registry {ref.registry}: {what} is malformed: {problem}")

    try:
        document = json.loads(content)
    except (ValueError, UnicodeDecodeError) as exc:
        raise fail("not JSON") from exc
    if not isinstance(document, dict):
        raise fail("not a JSON object")
    if document.get("mediaType") in (OCI_INDEX, DOCKER_MANIFEST_LIST) or "manifests" in document:
        return []  # an index is not a signature image: nothing cosign would have written
    layers = document.get("layers", [])
    if not isinstance(layers, list):
        raise fail('"layers" is not a list')
    result: list[tuple[str, str, dict[str, str]]] = []
    for position, layer in enumerate(layers[:MAX_SIGNATURE_LAYERS]):
        if not isinstance(layer, dict):
            raise fail(f"layer {position} is not an object")
        digest = layer.get("digest")
        if not isinstance(digest, str) or digest.partition(":")[0] not in _HASHES:
            raise fail(f"layer {position} has no sha256/sha512 digest")
        media_type = layer.get("mediaType")
        raw_annotations = layer.get("annotations") or {}
        if not isinstance(raw_annotations, dict):
            raise fail(f"layer {position} annotations are not an object")
        annotations = {
            str(key): value for key, value in raw_annotations.items() if isinstance(value, str)
        }
        result.append((media_type if isinstance(media_type, str) else "", digest, annotations))
    return result


def _index_descriptors(content: bytes, ref: ImageReference, what: str) -> list[Descriptor]:
    """The ``manifests`` of an OCI index (referrers API answer or tag-schema index).

    Entries that are not well-formed descriptors are skipped: one bad entry must not
    hide the others' signatures. A document that is not an index is an error.
    """
    try:
        document = json.loads(content)
    except (ValueError, UnicodeDecodeError, RecursionError) as exc:
        raise RegistryContentError(f"registry {ref.registry}: {what} is not JSON") from exc
    if not isinstance(document, dict) or not isinstance(document.get("manifests"), list):
        raise RegistryContentError(
            f"registry {ref.registry}: {what} is not an OCI index (no \"manifests\" list)"
        )
    descriptors: list[Descriptor] = []
    for entry in document["manifests"]:
        if not isinstance(entry, dict):
            continue
        media_type, digest, size = entry.get("mediaType"), entry.get("digest"), entry.get("size")
        if (
            not isinstance(digest, str)
            or not _DIGEST.fullmatch(digest)
            or not isinstance(size, int)
            or isinstance(size, bool)
            or size < 0
        ):
            continue
        artifact_type = entry.get("artifactType")
        raw_annotations = entry.get("annotations")
        annotations = (
            {str(k): v for k, v in raw_annotations.items() if isinstance(v, str)}
            if isinstance(raw_annotations, dict)
            else {}
        )
        descriptors.append(Descriptor(
            media_type=media_type if isinstance(media_type, str) else "",
            digest=digest,
            size=size,
            artifact_type=artifact_type if isinstance(artifact_type, str) else "",
            annotations=annotations,
        ))
    return descriptors


def _next_link(headers: httpx.Headers, base_url: str) -> str | None:
    """The path of a ``Link: <…>; rel="next"`` page on the same registry, or None.

    A next page on another host is refused: our credentials go only where they belong.
    """
    for value in headers.get_list("link"):
        for match in _NEXT_LINK.finditer(value):
            target = match.group(1).strip()
            if target.startswith("/"):
                return target
            parts = urlsplit(target)
            base = urlsplit(base_url)
            if (parts.scheme, parts.netloc) == (base.scheme, base.netloc):
                return parts.path + (f"?{parts.query}" if parts.query else "")
            raise RegistryError(
                f"registry {base.netloc} sent a referrers next page on another host "
                f"({parts.netloc or 'none'})"
            )
    return None


def _parse_challenge(value: str) -> _Challenge | None:
    """``Bearer realm="…",service="…",scope="…"`` -> _Challenge (None if unparsable)."""
    scheme, _, rest = value.strip().partition(" ")
    if not scheme:
        return None
    params: dict[str, str] = {}
    for match in _CHALLENGE_PARAM.finditer(rest):
        key, raw = match.group(1), match.group(2)
        if raw.startswith('"') and raw.endswith('"') and len(raw) >= 2:
            raw = re.sub(r"\\(.)", r"\1", raw[1:-1])
        params[key.lower()] = raw
    return _Challenge(scheme.lower(), params)


def _error_code(body: bytes) -> str:
    """`` (MANIFEST_UNKNOWN)`` from a distribution error body, or ``""``.

    Only the machine-readable codes are echoed: registry messages are free text.
    """
    try:
        document = json.loads(body)
    except (ValueError, UnicodeDecodeError):
        return ""
    errors = document.get("errors") if isinstance(document, dict) else None
    if not isinstance(errors, list):
        return ""
    codes = [
        error["code"]
        for error in errors
        if isinstance(error, dict)
        and isinstance(error.get("code"), str)
        and re.fullmatch(r"[A-Z_]{1,64}", error["code"])
    ]
    return f" ({', '.join(codes[:3])})" if codes else ""


def _describe(exc: httpx.HTTPError) -> str:
    text = str(exc)
    described = f"{type(exc).__name__}: {text}" if text else type(exc).__name__
    if "WRONG_VERSION_NUMBER" in text or "record layer failure" in text:
        # the classic: a plain-HTTP registry spoken to over TLS
        described += " (does this registry speak plain HTTP? then list it in " \
                     "SEALGATE_INSECURE_REGISTRIES)"
    return described


__all__ = [
    "DEFAULT_TOKEN_TTL",
    "MAX_BLOB_BYTES",
    "MAX_MANIFEST_BYTES",
    "MAX_SIGNATURE_LAYERS",
    "NoBundleLayerError",
    "RegistryClient",
    "RegistryCredentials",
]
