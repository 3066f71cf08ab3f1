"""Artifacts that refer to an image: the OCI 1.1 referrers API and its tag schema,
and the sigstore bundles such referrers carry (SPEC §4).

Bounded: at most MAX_REFERRER_PAGES pages and MAX_REFERRERS descriptors per digest.
"""

from __future__ import annotations

import json
import re
from typing import TYPE_CHECKING
from urllib.parse import urlencode, urlsplit

import httpx

from webhook.errors import ManifestUnknownError, RegistryContentError, RegistryError
from webhook.oci import OCI_INDEX, SIGSTORE_BUNDLE_MEDIA_TYPES, Descriptor
from webhook.references import ImageReference
from webhook.registry.content import (
    _error_code,
    _prune_expiring,
    _signature_layers,
)

if TYPE_CHECKING:
    from webhook.registry.client import RegistryClient

# Referrers of one digest we look at (API pages followed / descriptors kept): more is abuse.
MAX_REFERRER_PAGES = 10
MAX_REFERRERS = 1000
_NO_REFERRERS_API_TTL = 600.0  # seconds
_DIGEST = re.compile(r"sha256:[0-9a-f]{64}|sha512:[0-9a-f]{128}")
_NEXT_LINK = re.compile(r'<([^>]*)>\s*;[^,]*?\brel="?next"?', re.IGNORECASE)


class NoBundleLayerError(RegistryError):
    """A referrer artifact that carries no sigstore bundle layer: content, not an outage.

    Verifiers skip such a referrer (it is no signature) rather than treating it as a
    failed check, so nobody can turn a deny into ``onError`` by pushing one.
    """


async def find_referrers(
    client: RegistryClient,
    ref: ImageReference,
    digest: str,
    artifact_type: str | None,
) -> list[Descriptor]:
    """RegistryClient.referrers: the API when the registry has it, else the tag schema."""
    found = None
    if client._no_referrers_api.get(ref.registry, 0.0) <= client._clock():
        found = await _referrers_api(client, ref, digest, artifact_type)
        if found is None:
            # remembered for a while: distribution 2.8 would cost a 404 every lookup
            _prune_expiring(client._no_referrers_api, lambda expiry: expiry, client._clock())
            client._no_referrers_api[ref.registry] = client._clock() + _NO_REFERRERS_API_TTL
    if found is None:
        found = await _referrers_tag(client, ref, digest)
    if artifact_type is not None:
        found = [item for item in found if item.artifact_type == artifact_type]
    return found


async def bundle_for(
    client: RegistryClient, ref: ImageReference, descriptor: Descriptor
) -> bytes:
    """RegistryClient.bundle_for: the bundle layer blob of a referrer's manifest."""
    manifest = await client.get_manifest(ref, descriptor.digest)
    what = f"referrer manifest {ref.repository}@{descriptor.digest}"
    layers = _signature_layers(manifest.content, ref, what)
    for media_type, digest, _ in layers:
        if media_type in SIGSTORE_BUNDLE_MEDIA_TYPES:
            return await client.get_blob(ref, digest)
    raise NoBundleLayerError(
        f"registry {ref.registry}: {what} has no sigstore bundle layer "
        f"(layer media types: {', '.join(sorted({m for m, _, _ in layers})) or 'none'})"
    )


async def _referrers_api(
    client: RegistryClient, ref: ImageReference, digest: str, artifact_type: str | None
) -> list[Descriptor] | None:
    """The referrers API's answer, following ``Link: rel="next"`` pages; None: no API."""
    path = f"/v2/{ref.repository}/referrers/{digest}"
    if artifact_type is not None:
        path += "?" + urlencode({"artifactType": artifact_type})
    what = f"referrers of {ref.repository}@{digest}"
    found: list[Descriptor] = []
    for page in range(MAX_REFERRER_PAGES):
        fetched = await client._request(
            ref, path, what=what, accept=OCI_INDEX,
            max_bytes=client.limits.max_referrers_bytes,
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
        if len(found) >= client.limits.max_referrers:
            return found[:client.limits.max_referrers]
        next_path = _next_link(fetched.headers, client.base_url(ref.registry))
        if next_path is None:
            return found
        path = next_path
    return found

async def _referrers_tag(
    client: RegistryClient, ref: ImageReference, digest: str
) -> list[Descriptor]:
    """The referrers tag schema: an OCI index tagged ``<alg>-<hex>``; no tag, no referrers."""
    algorithm, _, encoded = digest.partition(":")
    tag = f"{algorithm}-{encoded}"
    try:
        manifest = await client.get_manifest(ref, tag)
    except ManifestUnknownError:
        return []
    what = f"referrers tag {ref.repository}:{tag}"
    return _index_descriptors(manifest.content, ref, what)[:client.limits.max_referrers]


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
