"""What a registry answers, read within limits and checked (SPEC §4).

Bodies are read up to a cap, content is verified against the digest it was asked
for, media types are settled, and registry error bodies are reduced to their
machine-readable codes. Nothing here sends a request.
"""

from __future__ import annotations

import hashlib
import json
import re
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any

import httpx

from webhook.errors import DigestMismatchError, RegistryContentError, RegistryError
from webhook.oci import DOCKER_MANIFEST_LIST, OCI_INDEX, OCI_MANIFEST
from webhook.references import ImageReference

# The OCI distribution spec's limit for manifests registries must accept.
MAX_MANIFEST_BYTES = 4 * 1024 * 1024
MAX_BLOB_BYTES = 4 * 1024 * 1024
# A .sig image with more layers than this is abuse, not signatures: use the first ones.
MAX_SIGNATURE_LAYERS = 100
# Error bodies (401, 404, 5xx) are read only this far: we never need more of them.
_ERROR_BODY_BYTES = 64 * 1024
# Per-registry / per-repository state (tokens, semaphores, the referrers-API memo) is
# pruned beyond this many entries: image names come from whoever may create Pods.
_MAX_TRACKED = 1024

_HASHES: Mapping[str, Callable[[bytes], Any]] = {
    "sha256": hashlib.sha256,
    "sha512": hashlib.sha512,
}
_GENERIC_CONTENT_TYPES = frozenset(
    {"", "application/json", "text/plain", "application/octet-stream"}
)


@dataclass(frozen=True, slots=True)
class _Fetched:
    """A response read to the end (or to its cap), connection already released."""

    status: int
    headers: httpx.Headers
    content: bytes


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
