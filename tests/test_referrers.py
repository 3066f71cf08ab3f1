"""Referrers (OCI 1.1) and cosign .att discovery in webhook/registry/, with bundle fetching.

Debian's docker-registry (distribution 2.8) has no referrers API: it answers 404 for the
route, so everything here runs the referrers *tag schema* fallback against the real
registry. The API path is tested by a transport that answers only ``/referrers/``
requests itself and forwards every other request to the same real registry.
"""

from __future__ import annotations

import json
from collections.abc import AsyncIterator, Callable
from typing import Any

import httpx
import pytest
from cryptography.hazmat.primitives.asymmetric import ec

from tests.bundle_builder import key_bundle, statement
from tests.registry_server import (
    DSSE_ENVELOPE,
    OCI_INDEX,
    OCI_MANIFEST,
    SIGSTORE_BUNDLE_V03,
    RegistryServer,
    manifest_descriptor,
    push_artifact,
    push_cosign_attestations,
    push_image,
    push_referrers_tag_index,
    referrers_tag,
)
from webhook.errors import RegistryError, VerificationError
from webhook.oci import Descriptor
from webhook.references import ImageReference, parse_reference
from webhook.registry import NoBundleLayerError, RegistryClient
from webhook.signatures.bundle import KeyTrust, fetch_bundles, verify_image_bundles

SBOM = "application/spdx+json"
SIGN_PREDICATE = "https://sigstore.dev/cosign/sign/v1"


@pytest.fixture
async def http() -> AsyncIterator[httpx.AsyncClient]:
    async with httpx.AsyncClient(timeout=10) as client:
        yield client


@pytest.fixture
def client(registry: RegistryServer, http: httpx.AsyncClient) -> RegistryClient:
    return RegistryClient(http, insecure=frozenset({registry.host}))


def ref_to(registry: RegistryServer, repo: str, tag: str = "v1") -> ImageReference:
    return parse_reference(f"{registry.host}/{repo}:{tag}")


def attach(registry: RegistryServer, repo: str, subject_digest: str, content: bytes, *,
           artifact_type: str = SIGSTORE_BUNDLE_V03, layer_type: str | None = None,
           predicate_type: str = SIGN_PREDICATE) -> tuple[str, bytes]:
    """Push an artifact whose subject is ``subject_digest`` (as cosign v3 attaches a bundle)."""
    return push_artifact(
        registry.url, repo, artifact_type=artifact_type,
        layers=[(layer_type or artifact_type, content)],
        subject=manifest_descriptor(registry.url, repo, subject_digest),
        annotations={"dev.sigstore.bundle.predicateType": predicate_type,
                     "dev.sigstore.bundle.content": "dsse-envelope"},
    )


# --------------------------------------------------------------------------- tag schema (real)


async def test_the_tag_schema_is_read_when_the_registry_has_no_referrers_api(
    registry: RegistryServer, client: RegistryClient
) -> None:
    digest, _ = push_image(registry.url, "refs/tagschema", "v1")
    bundle = key_bundle(ec.generate_private_key(ec.SECP256R1()), statement(digest))
    artifact, manifest = attach(registry, "refs/tagschema", digest, bundle)
    push_referrers_tag_index(registry.url, "refs/tagschema", digest, [(artifact, manifest)])
    ref = ref_to(registry, "refs/tagschema")

    found = await client.referrers(ref, digest)
    assert found == [Descriptor(
        media_type=OCI_MANIFEST, digest=artifact, size=len(manifest),
        artifact_type=SIGSTORE_BUNDLE_V03,
        annotations={"dev.sigstore.bundle.predicateType": SIGN_PREDICATE,
                     "dev.sigstore.bundle.content": "dsse-envelope"},
    )]
    assert await client.bundle_for(ref, found[0]) == bundle


async def test_no_referrers_tag_means_no_referrers(
    registry: RegistryServer, client: RegistryClient
) -> None:
    digest, _ = push_image(registry.url, "refs/none", "v1")
    assert await client.referrers(ref_to(registry, "refs/none"), digest) == []


async def test_referrers_are_filtered_by_artifact_type(
    registry: RegistryServer, client: RegistryClient
) -> None:
    repo = "refs/filter"
    digest, _ = push_image(registry.url, repo, "v1")
    bundle = attach(registry, repo, digest, b'{"bundle": true}')
    sbom = attach(registry, repo, digest, b'{"spdxVersion": "SPDX-2.3"}', artifact_type=SBOM)
    push_referrers_tag_index(registry.url, repo, digest, [bundle, sbom])
    ref = ref_to(registry, repo)
    assert {d.digest for d in await client.referrers(ref, digest)} == {bundle[0], sbom[0]}
    only = await client.referrers(ref, digest, artifact_type=SIGSTORE_BUNDLE_V03)
    assert [d.digest for d in only] == [bundle[0]]
    assert [d.digest for d in await client.referrers(ref, digest, artifact_type=SBOM)] == [
        sbom[0]]
    assert await client.referrers(ref, digest, artifact_type="application/x-none") == []


async def test_a_referrer_without_a_bundle_layer(
    registry: RegistryServer, client: RegistryClient
) -> None:
    repo = "refs/nolayer"
    digest, _ = push_image(registry.url, repo, "v1")
    artifact = attach(registry, repo, digest, b"plain text", layer_type="text/plain")
    push_referrers_tag_index(registry.url, repo, digest, [artifact])
    ref = ref_to(registry, repo)
    [descriptor] = await client.referrers(ref, digest)
    with pytest.raises(NoBundleLayerError, match="has no sigstore bundle layer"):
        await client.bundle_for(ref, descriptor)
    # Not a signature, and not an error an attacker could push either: just skipped.
    assert await fetch_bundles(client, ref, digest) == []


async def test_a_referrers_tag_that_is_not_an_index(
    registry: RegistryServer, client: RegistryClient
) -> None:
    repo = "refs/notindex"
    digest, _ = push_image(registry.url, repo, "v1")
    push_image(registry.url, repo, referrers_tag(digest))
    with pytest.raises(RegistryError, match="is not an OCI index"):
        await client.referrers(ref_to(registry, repo), digest)


async def test_a_key_signed_bundle_referrer_verifies_and_is_not_replayable(
    registry: RegistryServer, client: RegistryClient
) -> None:
    repo = "refs/verify"
    key = ec.generate_private_key(ec.SECP256R1())
    image_a, _ = push_image(registry.url, repo, "a")
    image_b, _ = push_image(registry.url, repo, "b")
    bundle = key_bundle(key, statement(image_a))
    push_referrers_tag_index(registry.url, repo, image_a, [attach(registry, repo, image_a, bundle)])
    # The same bundle copied onto image B, as an attacker with push access could.
    push_referrers_tag_index(registry.url, repo, image_b, [attach(registry, repo, image_b, bundle)])
    trust = KeyTrust(key.public_key(), "off")

    ref_a = ref_to(registry, repo, "a")
    fetched = await fetch_bundles(client, ref_a, image_a, predicate_type=SIGN_PREDICATE)
    assert [f.content for f in fetched] == [bundle]
    verified = await verify_image_bundles(fetched, trust, image_digest=image_a)
    assert verified.subject_digests == (image_a,)

    ref_b = ref_to(registry, repo, "b")
    replayed = await fetch_bundles(client, ref_b, image_b)
    with pytest.raises(VerificationError, match=f"names digest {image_a}, not {image_b}"):
        await verify_image_bundles(replayed, trust, image_digest=image_b)


async def test_no_bundles_is_a_verification_failure() -> None:
    key = ec.generate_private_key(ec.SECP256R1())
    with pytest.raises(VerificationError, match="no sigstore bundles"):
        await verify_image_bundles([], KeyTrust(key.public_key()),
                                   image_digest="sha256:" + "1" * 64)


# --------------------------------------------------------------------------- cosign .att (real)


async def test_cosign_attestation_layers(registry: RegistryServer, client: RegistryClient) -> None:
    repo = "refs/att"
    digest, _ = push_image(registry.url, repo, "v1")
    first = (b'{"payloadType":"application/vnd.in-toto+json","payload":"e30=","signatures":[]}',
             {"dev.cosignproject.cosign/signature": "", "predicateType": "https://x/v1"})
    second = (b'{"payloadType":"application/vnd.in-toto+json","payload":"W10=","signatures":[]}',
              {"predicateType": "https://y/v1"})
    push_cosign_attestations(registry.url, repo, digest, [first, second])
    layers = await client.cosign_attestations(ref_to(registry, repo), digest)
    assert [(layer.media_type, layer.payload, dict(layer.annotations)) for layer in layers] == [
        (DSSE_ENVELOPE, first[0], first[1]), (DSSE_ENVELOPE, second[0], second[1])]
    # .att and .sig are separate tags.
    assert await client.cosign_signatures(ref_to(registry, repo), digest) == []


async def test_no_attestation_tag_means_no_attestations(
    registry: RegistryServer, client: RegistryClient
) -> None:
    digest, _ = push_image(registry.url, "refs/noatt", "v1")
    assert await client.cosign_attestations(ref_to(registry, "refs/noatt"), digest) == []


# --------------------------------------------------------------------------- referrers API


Handler = Callable[[httpx.Request], httpx.Response]


class ReferrersRoute(httpx.AsyncBaseTransport):
    """Answers ``/v2/<name>/referrers/<digest>`` with ``handler``; everything else goes to
    the real registry (distribution 2.8 would answer the route with 404)."""

    def __init__(self, handler: Handler, *, broken: str | None = None) -> None:
        self.handler = handler
        self.broken = broken  # a path to answer with HTTP 500 (a registry fault)
        self.forwarded = httpx.AsyncHTTPTransport()
        self.paths: list[str] = []

    async def handle_async_request(self, request: httpx.Request) -> httpx.Response:
        self.paths.append(request.url.path)
        if "/referrers/" in request.url.path:
            return self.handler(request)
        if self.broken is not None and request.url.path == self.broken:
            return httpx.Response(500, text="storage failure")
        return await self.forwarded.handle_async_request(request)

    async def aclose(self) -> None:
        await self.forwarded.aclose()


def index(*entries: dict[str, Any]) -> bytes:
    return json.dumps({"schemaVersion": 2, "mediaType": OCI_INDEX,
                       "manifests": list(entries)}).encode()


def index_response(*entries: dict[str, Any], headers: dict[str, str] | None = None
                   ) -> httpx.Response:
    return httpx.Response(200, content=index(*entries),
                          headers={"content-type": OCI_INDEX, **(headers or {})})


def entry(digest: str, artifact_type: str = SIGSTORE_BUNDLE_V03, size: int = 10,
          **annotations: str) -> dict[str, Any]:
    result: dict[str, Any] = {"mediaType": OCI_MANIFEST, "digest": digest, "size": size,
                              "artifactType": artifact_type}
    if annotations:
        result["annotations"] = annotations
    return result


async def api_client(registry: RegistryServer, handler: Handler, *, broken: str | None = None
                     ) -> tuple[httpx.AsyncClient, RegistryClient, ReferrersRoute]:
    transport = ReferrersRoute(handler, broken=broken)
    http = httpx.AsyncClient(transport=transport, timeout=10)
    return http, RegistryClient(http, insecure=frozenset({registry.host})), transport


async def test_the_referrers_api_answer_is_used(registry: RegistryServer) -> None:
    repo = "refs/api"
    digest, _ = push_image(registry.url, repo, "v1")
    key = ec.generate_private_key(ec.SECP256R1())
    bundle = key_bundle(key, statement(digest))
    artifact, manifest = attach(registry, repo, digest, bundle)
    # A stale tag-schema index must not be read when the API answers.
    push_referrers_tag_index(registry.url, repo, digest, [])
    seen: list[httpx.URL] = []

    def handler(request: httpx.Request) -> httpx.Response:
        seen.append(request.url)
        return index_response(entry(artifact, size=len(manifest)))

    http, client, transport = await api_client(registry, handler)
    async with http:
        ref = ref_to(registry, repo)
        found = await client.referrers(ref, digest, artifact_type=SIGSTORE_BUNDLE_V03)
        assert [d.digest for d in found] == [artifact]
        assert seen[0].path == f"/v2/{repo}/referrers/{digest}"
        assert seen[0].params["artifactType"] == SIGSTORE_BUNDLE_V03
        assert f"/v2/{repo}/manifests/{referrers_tag(digest)}" not in transport.paths
        fetched = await fetch_bundles(client, ref, digest)
        verified = await verify_image_bundles(fetched, KeyTrust(key.public_key(), "off"),
                                              image_digest=digest)
        assert verified.subject_digests == (digest,)


async def test_an_empty_referrers_api_answer_means_none(registry: RegistryServer) -> None:
    repo = "refs/apiempty"
    digest, _ = push_image(registry.url, repo, "v1")
    artifact = attach(registry, repo, digest, b"{}")
    push_referrers_tag_index(registry.url, repo, digest, [artifact])  # must not be consulted
    http, client, transport = await api_client(registry, lambda _: index_response())
    async with http:
        assert await client.referrers(ref_to(registry, repo), digest) == []
        assert f"/v2/{repo}/manifests/{referrers_tag(digest)}" not in transport.paths


async def test_a_404_from_the_referrers_api_falls_back_to_the_tag(
    registry: RegistryServer,
) -> None:
    repo = "refs/api404"
    digest, _ = push_image(registry.url, repo, "v1")
    artifact = attach(registry, repo, digest, b"{}")
    push_referrers_tag_index(registry.url, repo, digest, [artifact])
    http, client, transport = await api_client(
        registry, lambda _: httpx.Response(404, text="404 page not found\n"))
    async with http:
        found = await client.referrers(ref_to(registry, repo), digest)
        assert [d.digest for d in found] == [artifact[0]]
        assert f"/v2/{repo}/manifests/{referrers_tag(digest)}" in transport.paths


async def test_a_registry_ignoring_the_filter_is_filtered_here(registry: RegistryServer) -> None:
    digest, _ = push_image(registry.url, "refs/apifilter", "v1")
    answer = index_response(entry("sha256:" + "a" * 64), entry("sha256:" + "b" * 64, SBOM))
    http, client, _ = await api_client(registry, lambda _: answer)
    async with http:
        found = await client.referrers(ref_to(registry, "refs/apifilter"), digest,
                                       artifact_type=SBOM)
        assert [d.digest for d in found] == ["sha256:" + "b" * 64]


async def test_malformed_referrer_entries_are_skipped(registry: RegistryServer) -> None:
    digest, _ = push_image(registry.url, "refs/apimalformed", "v1")
    good = entry("sha256:" + "c" * 64, sig="x")
    answer = index_response(
        {"mediaType": OCI_MANIFEST, "digest": "md5:abc", "size": 1},
        {"mediaType": OCI_MANIFEST, "digest": "sha256:" + "d" * 64, "size": "big"},
        "not an object",  # type: ignore[arg-type]
        good,
    )
    http, client, _ = await api_client(registry, lambda _: answer)
    async with http:
        found = await client.referrers(ref_to(registry, "refs/apimalformed"), digest)
        assert found == [Descriptor(OCI_MANIFEST, "sha256:" + "c" * 64, 10,
                                    SIGSTORE_BUNDLE_V03, {"sig": "x"})]


async def test_referrers_api_pages_are_followed(registry: RegistryServer) -> None:
    repo = "refs/apipages"
    digest, _ = push_image(registry.url, repo, "v1")
    first, second = "sha256:" + "e" * 64, "sha256:" + "f" * 64

    def handler(request: httpx.Request) -> httpx.Response:
        if request.url.params.get("last") == "1":
            return index_response(entry(second))
        next_page = f"</v2/{repo}/referrers/{digest}?n=1&last=1>; rel=\"next\""
        return index_response(entry(first), headers={"link": next_page})

    http, client, _ = await api_client(registry, handler)
    async with http:
        found = await client.referrers(ref_to(registry, repo), digest)
        assert [d.digest for d in found] == [first, second]


async def test_a_next_page_on_another_host_is_refused(registry: RegistryServer) -> None:
    digest, _ = push_image(registry.url, "refs/apielsewhere", "v1")
    answer = index_response(entry("sha256:" + "e" * 64), headers={
        "link": '<https://evil.example/v2/x/referrers/y>; rel="next"'})
    http, client, _ = await api_client(registry, lambda _: answer)
    async with http:
        with pytest.raises(RegistryError, match="another host"):
            await client.referrers(ref_to(registry, "refs/apielsewhere"), digest)


@pytest.mark.parametrize(("response", "message"), [
    (httpx.Response(500, text="boom"), "answered HTTP 500 for referrers"),
    (httpx.Response(200, text="<html>hello</html>"), "is not JSON"),
    (httpx.Response(200, json={"layers": []}), "is not an OCI index"),
])
async def test_referrers_api_failures_are_errors_not_fallbacks(
    registry: RegistryServer, response: httpx.Response, message: str
) -> None:
    digest, _ = push_image(registry.url, "refs/apifail", "v1")
    http, client, transport = await api_client(registry, lambda _: response)
    async with http:
        with pytest.raises(RegistryError, match=message):
            await client.referrers(ref_to(registry, "refs/apifail"), digest)
        assert not any("/manifests/sha256-" in path for path in transport.paths)



async def test_a_listed_referrer_that_is_gone_is_skipped(registry: RegistryServer) -> None:
    repo = "refs/gone"
    digest, _ = push_image(registry.url, repo, "v1")
    key = ec.generate_private_key(ec.SECP256R1())
    bundle = key_bundle(key, statement(digest))
    artifact, manifest = attach(registry, repo, digest, bundle)
    answer = index_response(entry("sha256:" + "9" * 64), entry(artifact, size=len(manifest)))
    http, client, _ = await api_client(registry, lambda _: answer)
    async with http:
        fetched = await fetch_bundles(client, ref_to(registry, repo), digest)
    assert [f.descriptor.digest for f in fetched] == [artifact]


async def test_a_registry_fault_fetching_a_bundle_is_an_error(registry: RegistryServer) -> None:
    repo = "refs/fault"
    digest, _ = push_image(registry.url, repo, "v1")
    artifacts = [attach(registry, repo, digest, f'{{"n": {n}}}'.encode()) for n in range(3)]
    answer = index_response(*(entry(a, size=len(m)) for a, m in artifacts))
    http, client, _ = await api_client(registry, lambda _: answer,
                                       broken=f"/v2/{repo}/manifests/{artifacts[1][0]}")
    async with http:
        with pytest.raises(RegistryError, match="answered HTTP 500"):
            await fetch_bundles(client, ref_to(registry, repo), digest)
