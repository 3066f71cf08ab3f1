"""The image digest's referrers, listed once per (repository, digest) for every verifier.

cosign v3 bundles, Notary Project signatures and scan attestations are all referrers;
one listing (OCI referrers API, else the referrers tag schema) serves them all. It is
fetched through the FactCache's single-flight but never stored: it is material, not a
fact.
"""

from __future__ import annotations

from webhook.cache import FactCache
from webhook.oci import Descriptor
from webhook.references import ImageReference
from webhook.registry import RegistryClient


async def listed_referrers(
    registry: RegistryClient, cache: FactCache, ref: ImageReference, digest: str
) -> list[Descriptor]:
    async def fetch() -> list[Descriptor]:
        return await registry.referrers(ref, digest)

    listed, _ = await cache.get_or_fetch("referrers", (ref.name, digest), fetch,
                                         lambda _v: "error")
    return listed
