"""`sealgate serve` under hostile clients and SIGTERM (SPEC §9 "Serving", issue 11).

Real subprocess, real uvicorn over HTTPS: capped request headers, a drain on
SIGTERM that neither waits for idle keep-alive clients nor drops requests in
flight, TLS 1.2 minimum.
"""

from __future__ import annotations

import concurrent.futures
import json
import signal
import socket
import ssl
import time
import warnings
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest
from cryptography.hazmat.primitives.asymmetric import ec

from tests.admission_helpers import pod_review, policy_text
from tests.served import (
    FaultRegistry,
    Served,
    manifest_unknown_after,
    rss_bytes,
    start_served,
)
from tests.signing import public_pem
from webhook.app import create_app
from webhook.settings import Settings

CLEAN_EXIT = (0, -signal.SIGTERM)


@pytest.fixture
def slow_registry() -> Iterator[FaultRegistry]:
    registry = FaultRegistry(manifest_unknown_after(1.5))
    yield registry
    registry.close()


def _policies(tmp_path: Path, host: str) -> Path:
    policies = tmp_path / "policies"
    policies.mkdir(exist_ok=True)
    key = ec.generate_private_key(ec.SECP256R1())
    (policies / "p.yaml").write_text(policy_text(host, public_pem(key)))
    return policies


@pytest.fixture
def served(tmp_path: Path, slow_registry: FaultRegistry) -> Iterator[Served]:
    server = start_served(tmp_path, _policies(tmp_path, slow_registry.host),
                          {"SEALGATE_INSECURE_REGISTRIES": slow_registry.host})
    yield server
    if server.process.poll() is None:
        server.process.kill()
        server.process.wait()


def _post(served: Served, client: httpx.Client, review: dict[str, Any]) -> httpx.Response:
    return client.post(f"{served.url}/validate", content=json.dumps(review),
                       headers={"content-type": "application/json"}, timeout=15)


def test_sigterm_with_an_idle_keep_alive_client_exits_promptly(served: Served) -> None:
    # Found: serve did not exit on SIGTERM while an idle keep-alive client stayed connected.
    with httpx.Client(verify=served.context()) as idle:
        assert idle.get(f"{served.url}/healthz").status_code == 200  # connection kept open
        started = time.monotonic()
        # uvicorn re-raises the SIGTERM it handled once drained: "killed by SIGTERM" is clean
        assert served.terminate(timeout=10) in CLEAN_EXIT
        assert time.monotonic() - started < 5


def test_sigterm_with_idle_keep_alive_clients_exits_promptly_with_workers(
    tmp_path: Path, slow_registry: FaultRegistry
) -> None:
    served = start_served(tmp_path, _policies(tmp_path, slow_registry.host),
                          {"SEALGATE_INSECURE_REGISTRIES": slow_registry.host,
                           "SEALGATE_WORKERS": "2"})
    clients = [httpx.Client(verify=served.context()) for _ in range(6)]
    try:
        for client in clients:  # connections spread over both workers, then left idle
            assert client.get(f"{served.url}/healthz").status_code == 200
        started = time.monotonic()
        assert served.terminate(timeout=15) in CLEAN_EXIT
        assert time.monotonic() - started < 6
    finally:
        for client in clients:
            client.close()
        if served.process.poll() is None:
            served.process.kill()
            served.process.wait()


def test_sigterm_answers_and_audits_requests_in_flight_then_exits(
    served: Served, slow_registry: FaultRegistry
) -> None:
    reviews = [pod_review(f"{slow_registry.host}/team/app{i}:v1") for i in range(4)]
    with concurrent.futures.ThreadPoolExecutor(4) as pool, \
            httpx.Client(verify=served.context()) as client:
        futures = [pool.submit(_post, served, client, review) for review in reviews]
        time.sleep(0.5)  # all four are waiting on the slow registry
        assert slow_registry.requests >= 1
        served.process.send_signal(signal.SIGTERM)
        time.sleep(0.2)
        # not ready at once: the listener is closed, a probe is refused
        with pytest.raises(httpx.TransportError):
            httpx.get(f"{served.url}/readyz", verify=served.context(), timeout=1)
        answers = [future.result() for future in futures]
    assert served.process.wait(10) in CLEAN_EXIT
    for review, response in zip(reviews, answers, strict=True):
        assert response.status_code == 200
        answer = response.json()["response"]
        assert answer["uid"] == review["request"]["uid"] and answer["allowed"] is False
        assert "not found" in answer["status"]["message"]
    audited = {line["uid"] for line in served.audit_lines()}
    assert audited == {review["request"]["uid"] for review in reviews}


async def test_readyz_turns_not_ready_when_draining(tmp_path: Path) -> None:
    policies = tmp_path / "policies"
    policies.mkdir()
    app = create_app(Settings(policies=policies, audit_log=tmp_path / "audit.log"))
    async with app.router.lifespan_context(app):
        transport = httpx.ASGITransport(app=app)
        async with httpx.AsyncClient(transport=transport, base_url="https://s") as client:
            assert (await client.get("/readyz")).status_code == 200
            app.state.draining = True  # what DrainingServer's SIGTERM handler sets
            response = await client.get("/readyz")
            assert response.status_code == 503 and response.json()["ready"] is False
            assert (await client.get("/healthz")).status_code == 200


def _tls_socket(served: Served) -> ssl.SSLSocket:
    context = served.context()
    return context.wrap_socket(socket.create_connection(("127.0.0.1", served.port), timeout=8),
                               server_hostname="localhost")


def _read_answer(sock: ssl.SSLSocket) -> bytes:
    data = b""
    try:
        while chunk := sock.recv(65536):
            data += chunk
    except (ConnectionResetError, ssl.SSLError, TimeoutError):
        pass
    return data


def test_huge_request_headers_are_cut_off_with_431(served: Served) -> None:
    # Found: 128 header lines of 1 MiB each were buffered (130 MB held, no answer).
    before = rss_bytes(served.process.pid)
    sock = _tls_socket(served)
    started = time.monotonic()
    try:
        sock.sendall(b"POST /validate HTTP/1.1\r\nHost: localhost\r\n")
        line = b"X-Filler: " + b"a" * (1024 * 1024) + b"\r\n"
        for _ in range(128):
            sock.sendall(line)
    except (BrokenPipeError, ConnectionResetError, ssl.SSLError):
        pass  # the server closed on us: what we want
    answer = _read_answer(sock)
    sock.close()
    assert answer.startswith(b"HTTP/1.1 431 "), answer[:200]
    # the server closed the connection soon after its answer (it did not keep reading)
    assert time.monotonic() - started < 8
    assert rss_bytes(served.process.pid) - before < 32 * 1024 * 1024
    # and it still serves
    assert httpx.get(f"{served.url}/healthz", verify=served.context()).status_code == 200


def test_too_many_request_header_lines_get_431(served: Served) -> None:
    sock = _tls_socket(served)
    headers = b"".join(b"X-H%d: v\r\n" % i for i in range(150))
    sock.sendall(b"GET /healthz HTTP/1.1\r\nHost: localhost\r\n" + headers + b"\r\n")
    answer = _read_answer(sock)
    sock.close()
    assert answer.startswith(b"HTTP/1.1 431 "), answer[:200]
    assert b"header lines" in answer
    # ordinary requests with a normal set of headers are untouched
    sock = _tls_socket(served)
    headers = b"".join(b"X-H%d: v\r\n" % i for i in range(40))
    sock.sendall(b"GET /healthz HTTP/1.1\r\nHost: localhost\r\nConnection: close\r\n"
                 + headers + b"\r\n")
    assert _read_answer(sock).startswith(b"HTTP/1.1 200 ")
    sock.close()


def test_a_request_trickled_byte_by_byte_gets_408_at_the_deadline(
    tmp_path: Path, slow_registry: FaultRegistry
) -> None:
    # slowloris: headers (then a body) one byte at a time must not hold a connection
    served = start_served(tmp_path, _policies(tmp_path, slow_registry.host),
                          {"SEALGATE_INSECURE_REGISTRIES": slow_registry.host,
                           "SEALGATE_DEADLINE": "2s"})
    try:
        sock = _tls_socket(served)
        started = time.monotonic()
        sock.settimeout(0.3)
        answer = b""
        try:
            for byte in b"POST /validate HTTP/1.1\r\nHost: localhost\r\nX-Slow: " + b"a" * 60:
                sock.sendall(bytes([byte]))
                try:
                    answer = sock.recv(65536)
                except TimeoutError:
                    continue
                break
        except (BrokenPipeError, ConnectionResetError, ssl.SSLError):
            pass
        sock.close()
        assert answer.startswith(b"HTTP/1.1 408 "), answer[:100]
        assert time.monotonic() - started < 2 + 1.5
        # others are served as usual meanwhile and after
        assert httpx.get(f"{served.url}/healthz", verify=served.context()).status_code == 200
    finally:
        served.process.kill()
        served.process.wait()


def _client_context(version: ssl.TLSVersion) -> ssl.SSLContext:
    context = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
    context.check_hostname = False
    context.verify_mode = ssl.CERT_NONE
    context.set_ciphers("DEFAULT:@SECLEVEL=0")  # so the client itself would speak old TLS
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", DeprecationWarning)
        context.minimum_version = version
        context.maximum_version = version
    return context


@pytest.mark.parametrize("version", ["TLSv1", "TLSv1_1"])
def test_tls_below_1_2_is_refused(served: Served, version: str) -> None:
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", DeprecationWarning)
        old = getattr(ssl.TLSVersion, version)
    raw = socket.create_connection(("127.0.0.1", served.port), timeout=5)
    with pytest.raises(ssl.SSLError), _client_context(old).wrap_socket(raw):
        pass
    raw.close()
    raw = socket.create_connection(("127.0.0.1", served.port), timeout=5)
    with _client_context(ssl.TLSVersion.TLSv1_2).wrap_socket(raw) as tls:
        assert tls.version() == "TLSv1.2"
