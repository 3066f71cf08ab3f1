"""Hard limits on what one request can make sealgate do (SPEC §9 "Serving").

Every limit is a setting (``SEALGATE_MAX_*``) with a safe default; the README
lists them. A request over ``max_images`` is denied naming the limit; a registry
answer over a byte limit is read no further and is an error (or, for planted
signature material, not a signature); signatures and referrers past their
count are not examined.
"""

from __future__ import annotations

from dataclasses import dataclass

MIB = 1024 * 1024


@dataclass(frozen=True, slots=True)
class RegistryLimits:
    """What one image may make the registry client read and examine."""

    # The OCI distribution spec's limit for manifests registries must accept.
    max_manifest_bytes: int = 4 * MIB
    max_blob_bytes: int = 4 * MIB  # signature payloads, attestations, bundles
    max_referrers_bytes: int = 4 * MIB  # one page of the referrers API's answer
    max_signatures: int = 100  # `.sig` layers and signature bundles examined per image
    max_referrers: int = 1000  # referrer descriptors examined per image


DEFAULT_MAX_IMAGES = 200


def max_images_message(count: int, limit: int) -> str:
    return (f"request names {count} distinct images, over the limit of {limit} "
            "(SEALGATE_MAX_IMAGES)")
