"""webhook/registry/ against Debian's docker-registry; MockTransport only for faults
a real registry cannot produce (wrong content, oversized bodies, token servers, 5xx/429)."""

from __future__ import annotations

import base64
import hashlib
import json
import re
from collections.abc import AsyncIterator, Callable
from pathlib import Path
from typing import Any

import httpx
import pytest
import trustme

from tests.registry_server import (
    COSIGN_SIMPLE_SIGNING,
    DOCKER_MANIFEST,
    OCI_INDEX,
    OCI_MANIFEST,
    RegistryServer,
    push_blob,
    push_cosign_signature,
    push_image,
    push_index,
)
from webhook.errors import DigestMismatchError, ManifestUnknownError, RegistryError
from webhook.oci import SignatureLayer
from webhook.references import ImageReference, parse_reference
from webhook.registry import MAX_MANIFEST_BYTES, RegistryClient, RegistryCredentials

SIGNATURE = "dev.cosignproject.cosign/signature"
MOCK_HOST = "reg.example.com"


def sha256(data: bytes) -> str:
    return "sha256:" + hashlib.sha256(data).hexdigest()


@pytest.fixture
async def http() -> AsyncIterator[httpx.AsyncClient]:
    async with httpx.AsyncClient(timeout=10) as client:
        yield client


@pytest.fixture
def client(registry: RegistryServer, http: httpx.AsyncClient) -> RegistryClient:
    return RegistryClient(http, insecure=frozenset({registry.host}))


def ref_to(registry: RegistryServer, repo: str, tag: str = "v1") -> ImageReference:
    return parse_reference(f"{registry.host}/{repo}:{tag}")


# --------------------------------------------------------------------------- real registry


async def test_resolve_tag_of_an_oci_manifest(registry: RegistryServer,
                                              client: RegistryClient) -> None:
    digest, body = push_image(registry.url, "resolve/oci", "v1")
    ref = ref_to(registry, "resolve/oci")
    assert await client.resolve_digest(ref) == digest
    manifest = await client.get_manifest(ref, "v1")
    assert (manifest.digest, manifest.media_type, manifest.content) == (digest, OCI_MANIFEST, body)


async def test_resolve_tag_of_a_docker_v2_manifest(registry: RegistryServer,
                                                   client: RegistryClient) -> None:
    digest, body = push_image(registry.url, "resolve/docker", "v1", docker=True)
    ref = ref_to(registry, "resolve/docker")
    assert await client.resolve_digest(ref) == digest
    manifest = await client.get_manifest(ref, "v1")
    assert (manifest.digest, manifest.media_type, manifest.content) == (
        digest, DOCKER_MANIFEST, body)


async def test_an_index_tag_resolves_to_the_index_digest(registry: RegistryServer,
                                                        client: RegistryClient) -> None:
    amd64, _ = push_image(registry.url, "resolve/multi", "amd64")
    arm64, _ = push_image(registry.url, "resolve/multi", "arm64", architecture="arm64")
    index = push_index(registry.url, "resolve/multi", "v1", [amd64, arm64])
    ref = ref_to(registry, "resolve/multi")
    assert await client.resolve_digest(ref) == index  # not a platform's manifest digest
    manifest = await client.get_manifest(ref, "v1")
    assert manifest.media_type == OCI_INDEX
    assert [m["digest"] for m in json.loads(manifest.content)["manifests"]] == [amd64, arm64]


async def test_get_manifest_by_digest_returns_the_verified_content(
        registry: RegistryServer, client: RegistryClient) -> None:
    digest, body = push_image(registry.url, "bydigest/app", "v1")
    ref = parse_reference(f"{registry.host}/bydigest/app@{digest}")
    manifest = await client.get_manifest(ref, digest)
    assert (manifest.digest, manifest.content) == (digest, body)


async def test_unknown_tag_and_repository_are_manifest_unknown(
        registry: RegistryServer, client: RegistryClient) -> None:
    push_image(registry.url, "unknown/app", "v1")
    with pytest.raises(ManifestUnknownError) as tag_error:
        await client.resolve_digest(ref_to(registry, "unknown/app", "nope"))
    assert str(tag_error.value) == (
        f"registry {registry.host} has no manifest unknown/app:nope (MANIFEST_UNKNOWN)")
    with pytest.raises(ManifestUnknownError, match="no manifest never/pushed:v1"):
        await client.resolve_digest(ref_to(registry, "never/pushed"))


async def test_get_blob_returns_verified_bytes(registry: RegistryServer,
                                               client: RegistryClient) -> None:
    data = b"some blob content"
    digest = push_blob(registry.url, "blobs/app", data)
    ref = ref_to(registry, "blobs/app")
    assert await client.get_blob(ref, digest) == data
    with pytest.raises(RegistryError, match="larger than the limit of 4 bytes"):
        await client.get_blob(ref, digest, max_bytes=4)
    missing = sha256(b"never pushed")
    with pytest.raises(RegistryError, match=f"has no blob blobs/app@{missing}") as error:
        await client.get_blob(ref, missing)
    assert not isinstance(error.value, ManifestUnknownError)


async def test_cosign_signatures_returns_payloads_and_annotations(
        registry: RegistryServer, client: RegistryClient) -> None:
    digest, _ = push_image(registry.url, "signed/app", "v1")
    layers = [(b'{"payload":1}', {SIGNATURE: "c2lnLW9uZQ=="}),
              (b'{"payload":2}', {SIGNATURE: "c2lnLXR3bw==", "extra": "x"})]
    push_cosign_signature(registry.url, "signed/app", digest, layers)
    found = await client.cosign_signatures(ref_to(registry, "signed/app"), digest)
    assert found == [
        SignatureLayer(COSIGN_SIMPLE_SIGNING, b'{"payload":1}', {SIGNATURE: "c2lnLW9uZQ=="}),
        SignatureLayer(COSIGN_SIMPLE_SIGNING, b'{"payload":2}',
                       {SIGNATURE: "c2lnLXR3bw==", "extra": "x"}),
    ]


async def test_no_signature_tag_means_no_signatures(registry: RegistryServer,
                                                    client: RegistryClient) -> None:
    digest, _ = push_image(registry.url, "unsigned/app", "v1")
    assert await client.cosign_signatures(ref_to(registry, "unsigned/app"), digest) == []
    # a repository the registry has never seen answers the same way
    assert await client.cosign_signatures(ref_to(registry, "nothing/here"), digest) == []


async def test_a_stopped_registry_is_a_registry_error(registry_binary: str,
                                                      http: httpx.AsyncClient) -> None:
    server = RegistryServer(binary=registry_binary)
    server.start()
    host = server.host
    server.stop()
    client = RegistryClient(http, insecure=frozenset({host}))
    with pytest.raises(RegistryError) as error:
        await client.resolve_digest(parse_reference(f"{host}/gone/app:v1"))
    assert not isinstance(error.value, ManifestUnknownError)
    assert str(error.value).startswith(
        f"could not reach registry {host} for manifest gone/app:v1: ConnectError")
    assert isinstance(error.value.__cause__, httpx.ConnectError)


async def test_plain_http_only_for_insecure_registries(registry: RegistryServer,
                                                       http: httpx.AsyncClient) -> None:
    digest, _ = push_image(registry.url, "scheme/app", "v1")
    ref = ref_to(registry, "scheme/app")
    assert await RegistryClient(http, insecure=frozenset({registry.host})).resolve_digest(
        ref) == digest
    # Not listed: https to a plain-HTTP port fails the TLS handshake -> an error, not a verdict.
    unreachable = re.escape(f"could not reach registry {registry.host}")
    with pytest.raises(RegistryError, match=unreachable) as info:
        await RegistryClient(http).resolve_digest(ref)
    assert "list it in SEALGATE_INSECURE_REGISTRIES" in str(info.value)


async def test_https_registry_with_a_trusted_ca(registry_binary: str) -> None:
    ca = trustme.CA()
    with RegistryServer(binary=registry_binary, tls=ca) as server:
        digest, _ = push_image(server.url, "tls/app", "v1", verify=server.verify)
        ref = parse_reference(f"{server.host}/tls/app:v1")
        async with httpx.AsyncClient(verify=server.ssl_context()) as http:
            assert RegistryClient(http).base_url(server.host) == f"https://{server.host}"
            assert await RegistryClient(http).resolve_digest(ref) == digest
            # listed as insecure, the client speaks plain HTTP to the TLS port
            insecure = RegistryClient(http, insecure=frozenset({server.host}))
            plain_to_tls = re.escape(f"registry {server.host} answered HTTP 400")
            with pytest.raises(RegistryError, match=plain_to_tls):
                await insecure.resolve_digest(ref)
        # the default trust store does not know the test CA
        async with httpx.AsyncClient() as http:
            with pytest.raises(RegistryError, match="could not reach registry"):
                await RegistryClient(http).resolve_digest(ref)


def write_config(tmp_path: Path, auths: dict[str, Any]) -> Path:
    path = tmp_path / "config.json"
    path.write_text(json.dumps({"auths": auths}))
    return path


async def test_basic_auth_with_credentials_from_a_config_file(
        registry_binary: str, tmp_path: Path) -> None:
    with RegistryServer(binary=registry_binary, users={"alice": "wonder-land"}) as server:
        digest, _ = push_image(server.url, "private/app", "v1", auth=server.auth)
        push_cosign_signature(server.url, "private/app", digest, [(b"{}", {SIGNATURE: "x"})],
                              auth=server.auth)
        ref = parse_reference(f"{server.host}/private/app:v1")
        insecure = frozenset({server.host})
        good = RegistryCredentials.from_file(write_config(tmp_path, {
            server.host: {"auth": base64.b64encode(b"alice:wonder-land").decode()}}))
        bad = RegistryCredentials({server.host: ("alice", "not-the-password")})
        async with httpx.AsyncClient() as http:
            client = RegistryClient(http, credentials=good, insecure=insecure)
            assert await client.resolve_digest(ref) == digest
            layers = await client.cosign_signatures(ref, digest)  # blobs sent with Basic too
            assert [layer.payload for layer in layers] == [b"{}"]

            with pytest.raises(RegistryError) as anonymous:
                await RegistryClient(http, insecure=insecure).resolve_digest(ref)
            assert str(anonymous.value) == (
                f"registry {server.host} requires credentials for repository private/app "
                f"(manifest private/app:v1); none are configured for {server.host}")

            with pytest.raises(RegistryError) as refused:
                await RegistryClient(http, credentials=bad, insecure=insecure).resolve_digest(ref)
            message = str(refused.value)
            assert f"registry {server.host} refused access to repository private/app" in message
            assert "not-the-password" not in message and "alice" not in message


# --------------------------------------------------------------------------- credentials


def test_credentials_from_auth_and_username_password(tmp_path: Path) -> None:
    path = write_config(tmp_path, {
        "registry.example.com": {"auth": base64.b64encode(b"robot:pa:ss").decode()},
        "127.0.0.1:5000": {"username": "u", "password": "p"},
        "https://ghcr.io/v2/": {"auth": base64.b64encode(b"gh:token").decode()},
        "desktop.example.com": {},  # a credsStore entry without inline credentials
    })
    creds = RegistryCredentials.from_file(path)
    assert creds.lookup("registry.example.com") == ("robot", "pa:ss")
    assert creds.lookup("127.0.0.1:5000") == ("u", "p")
    assert creds.lookup("ghcr.io") == ("gh", "token")
    assert creds.lookup("desktop.example.com") is None
    assert creds.lookup("127.0.0.1:5001") is None
    assert "pa:ss" not in repr(creds) and "robot" not in repr(creds)


def test_docker_hub_key_applies_to_docker_io(tmp_path: Path) -> None:
    path = write_config(tmp_path, {"https://index.docker.io/v1/": {"username": "me",
                                                                    "password": "hub"}})
    creds = RegistryCredentials.from_file(path)
    assert creds.lookup("docker.io") == ("me", "hub")
    assert creds.lookup(parse_reference("nginx").registry) == ("me", "hub")


def test_a_config_without_auths_has_no_credentials(tmp_path: Path) -> None:
    path = tmp_path / "config.json"
    path.write_text('{"credsStore": "desktop"}')
    assert RegistryCredentials.from_file(path).lookup("docker.io") is None


@pytest.mark.parametrize(("content", "problem"), [
    ("{not json", "not valid JSON (line 1, column 2)"),
    ("[]", "expected a JSON object at the top level"),
    ('{"auths": []}', '"auths" must be an object'),
    ('{"auths": {"r.io": "c2VjcmV0LXZhbHVl"}}', "\"auths\" entry 'r.io' must be an object"),
    ('{"auths": {"r.io": {"auth": "c2VjcmV0LXZhbHVl"}}}',  # base64("secret-value"), no colon
     "\"auths\" entry 'r.io': \"auth\" does not decode to \"username:password\""),
    ('{"auths": {"r.io": {"auth": "secret-value!"}}}',
     "\"auths\" entry 'r.io': \"auth\" is not valid base64"),
    ('{"auths": {"r.io": {"username": "bob"}}}', '"password" must be a string'),
    ('{"auths": {"r.io": {"password": "secret-value"}}}', '"username" must be a non-empty'),
])
def test_a_malformed_config_names_the_file_and_the_problem_not_the_secret(
        tmp_path: Path, content: str, problem: str) -> None:
    path = tmp_path / "config.json"
    path.write_text(content)
    with pytest.raises(RegistryError) as error:
        RegistryCredentials.from_file(path)
    message = str(error.value)
    assert message.startswith(f"registry credentials file {path}: ")
    assert problem in message
    assert "secret-value" not in message and "c2VjcmV0LXZhbHVl" not in message
    assert error.value.__cause__ is None or "secret" not in str(error.value.__cause__)


def test_a_missing_config_file(tmp_path: Path) -> None:
    with pytest.raises(RegistryError, match=r"config\.json: cannot read it: No such file"):
        RegistryCredentials.from_file(tmp_path / "config.json")


# --------------------------------------------------------------------------- MockTransport faults

Handler = Callable[[httpx.Request], httpx.Response]
MANIFEST = json.dumps({"schemaVersion": 2, "mediaType": OCI_MANIFEST,
                       "config": {}, "layers": []}).encode()
MOCK_REF = parse_reference(f"{MOCK_HOST}/team/app:v1")


def mock_client(handler: Handler, **kwargs: Any) -> httpx.AsyncClient:
    return httpx.AsyncClient(transport=httpx.MockTransport(handler), **kwargs)


def manifest_response(body: bytes = MANIFEST, *, digest: str | None = None) -> httpx.Response:
    headers = {"content-type": OCI_MANIFEST}
    if digest is not None:
        headers["docker-content-digest"] = digest
    return httpx.Response(200, content=body, headers=headers)


async def test_a_digest_reference_resolves_without_a_request() -> None:
    requests: list[httpx.Request] = []

    def handler(request: httpx.Request) -> httpx.Response:
        requests.append(request)
        return httpx.Response(500)

    digest = sha256(b"index")
    async with mock_client(handler) as http:
        ref = parse_reference(f"{MOCK_HOST}/team/app:v1@{digest}")
        assert await RegistryClient(http).resolve_digest(ref) == digest
    assert requests == []


async def test_scheme_host_and_accept_header() -> None:
    seen: list[httpx.Request] = []

    def handler(request: httpx.Request) -> httpx.Response:
        seen.append(request)
        return manifest_response()

    async with mock_client(handler) as http:
        client = RegistryClient(http, insecure=frozenset({"insecure.local:5000"}))
        await client.get_manifest(parse_reference("nginx"), "latest")
        await client.get_manifest(parse_reference("insecure.local:5000/a/b"), "v1")
        await client.get_manifest(parse_reference("insecure.local:5001/a/b"), "v1")
    assert [str(r.url) for r in seen] == [
        "https://registry-1.docker.io/v2/library/nginx/manifests/latest",
        "http://insecure.local:5000/v2/a/b/manifests/v1",
        "https://insecure.local:5001/v2/a/b/manifests/v1",
    ]
    accept = seen[0].headers["accept"]
    for media_type in (OCI_MANIFEST, OCI_INDEX, DOCKER_MANIFEST,
                       "application/vnd.docker.distribution.manifest.list.v2+json"):
        assert media_type in accept
    assert "authorization" not in seen[0].headers  # anonymous first


async def test_content_that_does_not_hash_to_the_requested_digest() -> None:
    wanted = sha256(b"what the reference names")
    async with mock_client(lambda request: manifest_response()) as http:
        with pytest.raises(DigestMismatchError) as error:
            await RegistryClient(http).get_manifest(MOCK_REF, wanted)
    assert f"expected {wanted}, content hashes to {sha256(MANIFEST)}" in str(error.value)
    assert f"registry {MOCK_HOST}" in str(error.value)


async def test_a_docker_content_digest_header_that_disagrees() -> None:
    lie = sha256(b"something else")
    async with mock_client(lambda r: manifest_response(digest=lie)) as http:
        with pytest.raises(DigestMismatchError, match="Docker-Content-Digest"):
            await RegistryClient(http).resolve_digest(MOCK_REF)
    honest = sha256(MANIFEST)
    async with mock_client(
            lambda r: manifest_response(digest=honest)) as http:
        assert await RegistryClient(http).resolve_digest(MOCK_REF) == honest


async def test_blob_content_that_does_not_match_its_digest() -> None:
    wanted = sha256(b"the real blob")
    async with mock_client(lambda r: httpx.Response(200, content=b"tampered")) as http:
        with pytest.raises(DigestMismatchError, match=f"blob team/app@{wanted}"):
            await RegistryClient(http).get_blob(MOCK_REF, wanted)


async def test_blob_redirects_are_followed() -> None:
    data = b"blob on a cdn"

    def handler(request: httpx.Request) -> httpx.Response:
        if request.url.host == "cdn.example.com":
            assert "authorization" not in request.headers
            return httpx.Response(200, content=data)
        return httpx.Response(307, headers={"location": "https://cdn.example.com/blob?sig=1"})

    async with mock_client(handler) as http:
        assert await RegistryClient(http).get_blob(MOCK_REF, sha256(data)) == data


async def test_an_oversized_manifest_is_refused() -> None:
    big = b" " * (MAX_MANIFEST_BYTES + 1)
    async with mock_client(lambda r: manifest_response(big)) as http:
        with pytest.raises(RegistryError, match=f"larger than the limit of {MAX_MANIFEST_BYTES}"):
            await RegistryClient(http).resolve_digest(MOCK_REF)


async def test_an_oversized_streamed_manifest_stops_reading() -> None:
    produced = 0

    async def endless() -> AsyncIterator[bytes]:
        nonlocal produced
        for _ in range(1000):
            produced += 1
            yield b"x" * 65536

    def handler(request: httpx.Request) -> httpx.Response:  # no Content-Length: chunked
        return httpx.Response(200, content=endless(), headers={"content-type": OCI_MANIFEST})

    async with mock_client(handler) as http:
        with pytest.raises(RegistryError, match="larger than the limit"):
            await RegistryClient(http).resolve_digest(MOCK_REF)
    assert produced <= MAX_MANIFEST_BYTES // 65536 + 1


async def test_media_type_falls_back_to_the_document() -> None:
    index = json.dumps({"schemaVersion": 2, "mediaType": OCI_INDEX, "manifests": []}).encode()
    bare = json.dumps({"schemaVersion": 2, "manifests": []}).encode()
    async with mock_client(lambda r: httpx.Response(
            200, content=index, headers={"content-type": "application/json"})) as http:
        assert (await RegistryClient(http).get_manifest(MOCK_REF, "v1")).media_type == OCI_INDEX
    async with mock_client(lambda r: httpx.Response(200, content=bare)) as http:
        assert (await RegistryClient(http).get_manifest(MOCK_REF, "v1")).media_type == OCI_INDEX


class TokenServer:
    """A registry that wants a bearer token plus the token endpoint that issues it."""

    def __init__(self, *, token_field: str = "token", expires_in: int | None = 300) -> None:
        self.token_field = token_field
        self.expires_in = expires_in
        self.issued = 0
        self.token_requests: list[httpx.Request] = []
        self.registry_requests: list[httpx.Request] = []
        self.accept_tokens = True

    def __call__(self, request: httpx.Request) -> httpx.Response:
        if request.url.host == "auth.example.com":
            self.token_requests.append(request)
            self.issued += 1
            body: dict[str, Any] = {self.token_field: f"tok-{self.issued}"}
            if self.expires_in is not None:
                body["expires_in"] = self.expires_in
            return httpx.Response(200, json=body)
        self.registry_requests.append(request)
        if self.accept_tokens and request.headers.get("authorization", "").startswith(
                "Bearer tok-"):
            return manifest_response()
        return httpx.Response(401, headers={"www-authenticate": (
            'Bearer realm="https://auth.example.com/token",service="reg.example.com",'
            'scope="repository:team/app:pull"')}, json={"errors": [{"code": "UNAUTHORIZED"}]})


async def test_bearer_token_flow_with_basic_credentials_and_token_reuse() -> None:
    server = TokenServer()
    creds = RegistryCredentials({MOCK_HOST: ("alice", "pw-123")})
    async with mock_client(server) as http:
        client = RegistryClient(http, credentials=creds)
        assert await client.resolve_digest(MOCK_REF) == sha256(MANIFEST)
        assert await client.resolve_digest(MOCK_REF) == sha256(MANIFEST)
    [token_request] = server.token_requests  # the second request reused the token
    assert token_request.url.params["service"] == "reg.example.com"
    assert token_request.url.params["scope"] == "repository:team/app:pull"
    assert token_request.headers["authorization"] == (
        "Basic " + base64.b64encode(b"alice:pw-123").decode())
    assert [r.headers.get("authorization") for r in server.registry_requests] == [
        None, "Bearer tok-1", "Bearer tok-1"]


async def test_anonymous_token_from_access_token_field() -> None:
    server = TokenServer(token_field="access_token", expires_in=None)
    async with mock_client(server) as http:
        assert await RegistryClient(http).resolve_digest(MOCK_REF) == sha256(MANIFEST)
    assert "authorization" not in server.token_requests[0].headers


async def test_token_expiry_is_honoured() -> None:
    now = [1000.0]
    server = TokenServer(expires_in=None)  # default lifetime: 60 s
    async with mock_client(server) as http:
        client = RegistryClient(http, clock=lambda: now[0])
        await client.resolve_digest(MOCK_REF)
        now[0] += 30
        await client.resolve_digest(MOCK_REF)
        assert server.issued == 1
        now[0] += 31
        await client.resolve_digest(MOCK_REF)
        assert server.issued == 2
    assert server.registry_requests[-1].headers["authorization"] == "Bearer tok-2"


async def test_a_token_the_registry_refuses_is_an_error_naming_registry_and_repository() -> None:
    server = TokenServer()
    server.accept_tokens = False
    async with mock_client(server) as http:
        with pytest.raises(RegistryError) as error:
            await RegistryClient(http).resolve_digest(MOCK_REF)
    message = str(error.value)
    assert message == (f"registry {MOCK_HOST} refused access to repository team/app after "
                       "authenticating (HTTP 401) for manifest team/app:v1 (UNAUTHORIZED)")
    assert "tok-" not in message


async def test_a_token_endpoint_refusing_the_credentials() -> None:
    def handler(request: httpx.Request) -> httpx.Response:
        if request.url.host == "auth.example.com":
            return httpx.Response(401, text="bad password pw-123")
        return httpx.Response(401, headers={
            "www-authenticate": 'Bearer realm="https://auth.example.com/token"'})

    creds = RegistryCredentials({MOCK_HOST: ("alice", "pw-123")})
    async with mock_client(handler) as http:
        with pytest.raises(RegistryError) as error:
            await RegistryClient(http, credentials=creds).resolve_digest(MOCK_REF)
    message = str(error.value)
    assert "credentials were rejected" in message and "team/app" in message
    assert "pw-123" not in message and "alice" not in message


async def test_credentials_are_not_sent_to_a_plain_http_token_realm() -> None:
    token_requests: list[httpx.Request] = []

    def handler(request: httpx.Request) -> httpx.Response:
        if request.url.host == "auth.example.com":
            token_requests.append(request)
            return httpx.Response(200, json={"token": "t"})
        if request.headers.get("authorization") == "Bearer t":
            return manifest_response()
        return httpx.Response(401, headers={
            "www-authenticate": 'Bearer realm="http://auth.example.com/token"'})

    creds = RegistryCredentials({MOCK_HOST: ("alice", "pw-123")})
    async with mock_client(handler) as http:
        await RegistryClient(http, credentials=creds).resolve_digest(MOCK_REF)
    assert "authorization" not in token_requests[0].headers


@pytest.mark.parametrize(("status", "expected"), [
    (500, f"registry {MOCK_HOST} answered HTTP 500 for manifest team/app:v1"),
    (503, f"registry {MOCK_HOST} answered HTTP 503 for manifest team/app:v1"),
    (429, f"registry {MOCK_HOST} is rate limiting (HTTP 429) for manifest team/app:v1"),
    (403, f"registry {MOCK_HOST} denied access to repository team/app (HTTP 403)"),
    (418, f"registry {MOCK_HOST} answered HTTP 418 for manifest team/app:v1"),
])
async def test_error_statuses_are_registry_errors(status: int, expected: str) -> None:
    async with mock_client(lambda r: httpx.Response(status)) as http:
        with pytest.raises(RegistryError) as error:
            await RegistryClient(http).resolve_digest(MOCK_REF)
    assert not isinstance(error.value, ManifestUnknownError)
    assert str(error.value).startswith(expected)


async def test_a_timeout_is_a_registry_error() -> None:
    def handler(request: httpx.Request) -> httpx.Response:
        raise httpx.ReadTimeout("timed out", request=request)

    async with mock_client(handler) as http:
        with pytest.raises(RegistryError, match=re.escape(
                f"registry {MOCK_HOST} timed out for manifest team/app:v1 (ReadTimeout)")) as error:
            await RegistryClient(http).resolve_digest(MOCK_REF)
    assert isinstance(error.value.__cause__, httpx.ReadTimeout)


def signature_manifest(blobs: list[bytes]) -> bytes:
    return json.dumps({"schemaVersion": 2, "mediaType": OCI_MANIFEST, "config": {}, "layers": [
        {"mediaType": COSIGN_SIMPLE_SIGNING, "digest": sha256(blob), "size": len(blob),
         "annotations": {SIGNATURE: str(n)}} for n, blob in enumerate(blobs)]}).encode()


async def test_signature_layers_are_capped_at_one_hundred() -> None:
    blobs = [f"payload {n}".encode() for n in range(150)]
    by_digest = {sha256(blob): blob for blob in blobs}
    fetched: list[str] = []

    def handler(request: httpx.Request) -> httpx.Response:
        if "/manifests/" in request.url.path:
            return manifest_response(signature_manifest(blobs))
        digest = request.url.path.rsplit("/", 1)[1]
        fetched.append(digest)
        return httpx.Response(200, content=by_digest[digest])

    async with mock_client(handler) as http:
        layers = await RegistryClient(http).cosign_signatures(MOCK_REF, sha256(b"image"))
    assert [layer.payload for layer in layers] == blobs[:100]
    assert layers[7].annotations == {SIGNATURE: "7"}
    assert len(fetched) == 100


async def test_a_signature_blob_that_fails_is_an_error_not_an_empty_list() -> None:
    blobs = [b"one", b"two"]

    def handler(request: httpx.Request) -> httpx.Response:
        if "/manifests/" in request.url.path:
            assert request.url.path.endswith(f"/manifests/sha256-{'ab' * 32}.sig")
            return manifest_response(signature_manifest(blobs))
        if request.url.path.endswith(sha256(b"two")):
            return httpx.Response(502)
        return httpx.Response(200, content=b"one")

    async with mock_client(handler) as http:
        with pytest.raises(RegistryError, match=f"HTTP 502 for blob team/app@{sha256(b'two')}"):
            await RegistryClient(http).cosign_signatures(MOCK_REF, "sha256:" + "ab" * 32)
