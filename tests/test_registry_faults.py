"""Registry fault matrix (issue 11, deliverable 3): one row per fault, read as a list.

Every row puts a signed image (real ``docker-registry``, real signature) behind
one fault and sends its review through the app. Each must be decided before
the deadline: a fault that leaves the check unfinished follows ``onError``
(both ``deny`` and ``allow`` are run), one that shows there is no valid
signature is a deny whatever ``onError`` says, and the audit line names the
reason. Faults come from the real network where a real peer produces them
(a closed port, TLS to a plain-HTTP registry, a loopback server that hangs or
trickles) and from a transport wrapped around the real registry otherwise.
"""

from __future__ import annotations

import hashlib
import http.server
import json
import os
import time
from collections.abc import AsyncIterator, Awaitable, Callable, Iterator
from dataclasses import dataclass
from pathlib import Path

import httpx
import pytest
from cryptography.hazmat.primitives.asymmetric import ec

from tests.admission_helpers import pod_review, policy_text, signed_image
from tests.registry_server import OCI_INDEX, OCI_MANIFEST, RegistryServer
from tests.served import FaultRegistry, rss_bytes
from tests.signing import public_pem
from tests.system import free_port
from webhook.app import create_app
from webhook.settings import Settings

DEADLINE = 1.5
MIB = 1024 * 1024

Hook = Callable[[httpx.Request], Awaitable[httpx.Response | None]]


class FaultTransport(httpx.AsyncBaseTransport):
    """The real network, with ``hook`` answering (or altering) what it wants to."""

    def __init__(self, hook: Hook | None) -> None:
        self.inner = httpx.AsyncHTTPTransport()
        self.hook = hook
        self.streamed = 0  # bytes a hook's streamed body handed out

    async def handle_async_request(self, request: httpx.Request) -> httpx.Response:
        if self.hook is not None:
            answer = await self.hook(request)
            if answer is not None:
                return answer
        return await self.inner.handle_async_request(request)

    async def aclose(self) -> None:
        await self.inner.aclose()


def _kind(request: httpx.Request) -> str:
    path = request.url.path
    if "/referrers/" in path:
        return "referrers"
    if "/manifests/" in path:
        return "signature" if path.endswith((".sig", ".att")) else "manifest"
    return "blob" if "/blobs/" in path else "other"


# --------------------------------------------------------------------------- fault hooks


def _always(kind: str, status: int, headers: dict[str, str] | None = None,
            body: bytes = b"") -> Callable[[FaultTransport], Hook]:
    def make(_transport: FaultTransport) -> Hook:
        async def hook(request: httpx.Request) -> httpx.Response | None:
            if _kind(request) == kind or kind == "any":
                return httpx.Response(status, headers=headers, content=body)
            return None
        return hook
    return make


def _first(count: int, kind: str, status: int, headers: dict[str, str]
           ) -> Callable[[FaultTransport], Hook]:
    def make(_transport: FaultTransport) -> Hook:
        seen = 0

        async def hook(request: httpx.Request) -> httpx.Response | None:
            nonlocal seen
            if _kind(request) == kind and seen < count:
                seen += 1
                return httpx.Response(status, headers=headers)
            return None
        return hook
    return make


def _unauthorized_loop(_transport: FaultTransport) -> Hook:
    async def hook(request: httpx.Request) -> httpx.Response | None:
        if request.url.path == "/token":
            return httpx.Response(200, json={"token": "t0ken-never-accepted"})
        if _kind(request) == "manifest":
            realm = f"{request.url.scheme}://{request.url.netloc.decode()}/token"
            return httpx.Response(401, headers={
                "WWW-Authenticate": f'Bearer realm="{realm}",service="r",scope="x"'})
        return None
    return hook


def _redirect_loop(_transport: FaultTransport) -> Hook:
    async def hook(request: httpx.Request) -> httpx.Response | None:
        if _kind(request) == "blob":
            return httpx.Response(307, headers={"Location": str(request.url)})
        return None
    return hook


def _huge_manifest(transport: FaultTransport) -> Hook:
    async def body() -> AsyncIterator[bytes]:
        chunk = b"{" + b" " * (MIB - 1)
        for _ in range(20):
            transport.streamed += len(chunk)
            yield chunk

    async def hook(request: httpx.Request) -> httpx.Response | None:
        if _kind(request) == "manifest":
            return httpx.Response(200, headers={"Content-Type": OCI_MANIFEST}, content=body())
        return None
    return hook


def _huge_index(_transport: FaultTransport) -> Hook:
    entries = [{"mediaType": OCI_MANIFEST, "size": 500,
                "digest": "sha256:" + hashlib.sha256(str(i).encode()).hexdigest(),
                "platform": {"architecture": f"arch{i}", "os": "linux"}}
               for i in range(10_000)]
    index = json.dumps({"schemaVersion": 2, "mediaType": OCI_INDEX,
                        "manifests": entries}).encode()

    async def hook(request: httpx.Request) -> httpx.Response | None:
        if _kind(request) == "manifest":
            return httpx.Response(200, headers={"Content-Type": OCI_INDEX}, content=index)
        return None
    return hook


def _tampered_blob(transport: FaultTransport) -> Hook:
    async def hook(request: httpx.Request) -> httpx.Response | None:
        if _kind(request) != "blob":
            return None
        real = await transport.inner.handle_async_request(request)
        content = await real.aread()
        # a man in the middle swapping the signed payload for another one
        tampered = content.replace(b"sha256:", b"sha256:0", 1)
        return httpx.Response(real.status_code, headers={"Content-Type": "application/json"},
                              content=tampered)
    return hook


# --------------------------------------------------------------------------- loopback peers


def _hang(handler: http.server.BaseHTTPRequestHandler) -> None:
    time.sleep(DEADLINE + 3)  # accepted, never a byte


def _trickle(handler: http.server.BaseHTTPRequestHandler) -> None:
    handler.send_response(200)
    handler.send_header("Content-Type", OCI_MANIFEST)
    handler.send_header("Content-Length", "1000")
    handler.end_headers()
    for _ in range(int(DEADLINE) + 3):  # 1 byte a second
        handler.wfile.write(b" ")
        handler.wfile.flush()
        time.sleep(1)


# --------------------------------------------------------------------------- the matrix


@dataclass(frozen=True)
class Fault:
    name: str
    outcome: str  # "error": onError decides; "deny": denied whatever onError; "allow"
    reason: str  # in the audit line
    hook: Callable[[FaultTransport], Hook] | None = None
    peer: Callable[[http.server.BaseHTTPRequestHandler], None] | None = None
    network: str = ""  # "closed-port" | "tls-to-plain-http"


FAULTS = [
    Fault("connection refused", "error", "could not resolve digest", network="closed-port"),
    Fault("TLS failure", "error", "could not resolve digest", network="tls-to-plain-http"),
    Fault("hang with no bytes", "error", "deadline of 1.5s exceeded", peer=_hang),
    Fault("1 byte/s body", "error", "deadline of 1.5s exceeded", peer=_trickle),
    Fault("401 loop", "error", "refused access", hook=_unauthorized_loop),
    Fault("404 signature", "deny", "no signatures found",
          hook=_always("signature", 404, body=b'{"errors":[{"code":"MANIFEST_UNKNOWN"}]}')),
    Fault("429 with Retry-After, then served", "allow", "",
          hook=_first(2, "manifest", 429, {"Retry-After": "0.2"})),
    Fault("429 storm with Retry-After", "error", "could not resolve digest",
          hook=_always("manifest", 429, {"Retry-After": "1"})),
    Fault("500 storm", "error", "HTTP 500", hook=_always("any", 500)),
    Fault("redirect loop", "error", "redirect", hook=_redirect_loop),
    Fault("20 MiB manifest", "error", "larger than the limit", hook=_huge_manifest),
    Fault("index with 10,000 entries", "deny", "no signatures found", hook=_huge_index),
    Fault("blob not matching its digest", "error", "does not match", hook=_tampered_blob),
]


@pytest.fixture(scope="module")
def signed(registry: RegistryServer) -> tuple[ec.EllipticCurvePrivateKey, str]:
    key = ec.generate_private_key(ec.SECP256R1())
    signed_image(registry, key, "team/faulty")
    return key, "team/faulty:v1"


@pytest.fixture(scope="module")
def rss_start() -> Iterator[int]:
    yield rss_bytes(os.getpid())


pytestmark = pytest.mark.usefixtures("rss_start")  # measured before the first row


@pytest.mark.parametrize("on_error", ["deny", "allow"])
@pytest.mark.parametrize("fault", FAULTS, ids=[fault.name for fault in FAULTS])
async def test_registry_fault_is_decided_in_time(
    fault: Fault, on_error: str, tmp_path: Path, registry: RegistryServer,
    signed: tuple[ec.EllipticCurvePrivateKey, str],
) -> None:
    key, image = signed
    host = registry.host
    insecure = frozenset({registry.host})
    peer: FaultRegistry | None = None
    if fault.network == "closed-port":
        host = f"127.0.0.1:{free_port()}"
        insecure = frozenset({host})
    elif fault.network == "tls-to-plain-http":
        insecure = frozenset()
    elif fault.peer is not None:
        peer = FaultRegistry(fault.peer)
        host = peer.host
        insecure = frozenset({host})
    transport = FaultTransport(None)
    if fault.hook is not None:
        transport.hook = fault.hook(transport)
    policies = tmp_path / "policies"
    policies.mkdir()
    (policies / "p.yaml").write_text(
        policy_text(host, public_pem(key), extra=f"  onError: {on_error}\n"))
    audit = tmp_path / "audit.log"
    settings = Settings(policies=policies, audit_log=audit, deadline=DEADLINE,
                        insecure_registries=insecure)
    app = create_app(settings, transport=transport)
    review = pod_review(f"{host}/{image}")
    try:
        async with app.router.lifespan_context(app), httpx.AsyncClient(
            transport=httpx.ASGITransport(app=app), base_url="https://sealgate"
        ) as client:
            started = time.perf_counter()
            response = await client.post("/validate", json=review)
            elapsed = time.perf_counter() - started
    finally:
        if peer is not None:
            peer.close()
    assert response.status_code == 200
    answer = response.json()["response"]
    assert answer["uid"] == review["request"]["uid"]
    assert elapsed < DEADLINE + 1.0, f"{fault.name}: answered after {elapsed:.1f}s"
    expected = fault.outcome if fault.outcome != "error" else on_error
    assert answer["allowed"] is (expected == "allow"), answer
    [line] = [json.loads(text) for text in audit.read_text().splitlines()]
    assert line["uid"] == review["request"]["uid"]
    assert line["decision"] == ("deny" if expected == "deny" else "allow")
    if fault.outcome == "error":
        assert line["reason"] == "error" or "error" in json.dumps(line["images"])
    assert fault.reason in json.dumps(line), json.dumps(line)
    # nothing a fault sends is read past the limits
    assert transport.streamed <= 5 * MIB


def test_matrix_memory_stays_bounded(rss_start: int) -> None:
    # runs after the matrix (file order): the 20 MiB manifests, 10,000-entry indexes and
    # retries of every row together left the process well within its memory budget
    grown = rss_bytes(os.getpid()) - rss_start
    assert grown < 64 * MIB, f"RSS grew {grown / MIB:.0f} MiB over the fault matrix"

