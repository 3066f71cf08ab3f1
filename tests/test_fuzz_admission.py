"""Fuzzing /validate (and /mutate) with hostile AdmissionReviews, in-process (ASGI) and over
real HTTPS against ``sealgate serve``.

Property: every answer is a well-formed AdmissionReview carrying the request's uid (and an
audit line for it), or a 400/413 with a JSON error; never a 500, never a crash; and never
an allow for a request naming an image the enforce policy below denies. That policy
governs every namespace and denies every image without the network: unmatched images are
denied, and the one rule's registry (127.0.0.1:1) refuses connections under onError: deny.
"""

from __future__ import annotations

import json
import os
import ssl
import subprocess
import sys
import textwrap
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import anyio.from_thread
import httpx
import pytest
from cryptography.hazmat.primitives.asymmetric import ec
from hypothesis import event, given
from hypothesis import strategies as st

from tests.fuzz_reviews import hostile_reviews, well_formed_reviews
from tests.fuzzing import budget, images_an_enforce_policy_denies, texts, write_json
from tests.signing import public_pem
from tests.system import free_port
from tests.test_fuzz_inputs import mutated_policy_documents
from webhook.app import create_app
from webhook.certs import generate_certificates
from webhook.settings import Settings


def fortress_policy() -> str:
    key = ec.generate_private_key(ec.SECP256R1())
    return f"""\
apiVersion: sealgate.dev/v1alpha1
kind: ImagePolicy
metadata: {{name: fortress}}
spec:
  namespaces: {{match: ["*"]}}
  mode: enforce
  onError: deny
  unmatched: deny
  breakGlass: false
  rules:
    - name: unreachable
      images: ["127.0.0.1:1/**"]
      signatures:
        authorities:
          - name: k
            key:
              tlog: "off"
              publicKey: |
{textwrap.indent(public_pem(key).decode(), " " * 16)}"""


class AuditTail:
    """Reads the audit lines written since the last call."""

    def __init__(self, path: Path) -> None:
        self.path = path
        self.offset = 0

    def new_lines(self) -> list[dict[str, Any]]:
        if not self.path.exists():
            return []
        with self.path.open("rb") as handle:
            handle.seek(self.offset)
            data = handle.read()
        self.offset += len(data)
        # split on "\n" only: U+0085 and U+2028 are legal inside JSON strings
        return [json.loads(line) for line in data.split(b"\n") if line]


def check_answer(body: bytes, status: int, content: bytes, audit: AuditTail, *,
                 must_decide: bool = False) -> None:
    """The property, for one request and its answer."""
    assert status != 500, content[:500]
    answer = json.loads(content)
    if status in (400, 413):
        event(f"answer {status}")
        assert not must_decide, f"a well-formed review was refused: {answer}"
        assert isinstance(answer["error"], str) and answer["code"] == status
        assert audit.new_lines() == []  # malformed requests are logged, not audited
        return
    assert status == 200, (status, answer)
    review = json.loads(body)  # last-wins on duplicate keys, like the API server's decoder
    uid = review["request"]["uid"]
    assert answer["apiVersion"] == "admission.k8s.io/v1"
    assert answer["kind"] == "AdmissionReview"
    response = answer["response"]
    assert response["uid"] == uid
    assert isinstance(response["allowed"], bool)
    if not response["allowed"]:
        assert response["status"]["code"] == 403
        assert isinstance(response["status"]["message"], str)
    denied = images_an_enforce_policy_denies(review)
    event("allowed" if response["allowed"] else "denied")
    assert not (response["allowed"] and denied), f"allowed although it names {denied[:3]}"
    lines = audit.new_lines()
    assert [line["uid"] for line in lines] == [uid]
    assert lines[0]["decision"] in ("allow", "warn", "deny")
    assert (lines[0]["decision"] == "deny") is (not response["allowed"])


# --------------------------------------------------------------------------- in-process


@pytest.fixture(scope="module")
def asgi(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[Any, httpx.AsyncClient,
                                                                     AuditTail]]:
    """The app with its lifespan running in a portal thread, for sync hypothesis tests."""
    tmp = tmp_path_factory.mktemp("fuzz-asgi")
    (tmp / "policies").mkdir()
    (tmp / "policies" / "fortress.yaml").write_text(fortress_policy())
    app = create_app(Settings(policies=tmp / "policies", audit_log=tmp / "audit.log",
                              mutate=True, deadline=2.0))

    async def open_client() -> httpx.AsyncClient:
        return httpx.AsyncClient(transport=httpx.ASGITransport(app=app),
                                 base_url="https://sealgate")

    with anyio.from_thread.start_blocking_portal() as portal, \
            portal.wrap_async_context_manager(app.router.lifespan_context(app)):
        client = portal.call(open_client)
        try:
            yield portal, client, AuditTail(tmp / "audit.log")
        finally:
            portal.call(client.aclose)


def post(asgi: tuple[Any, httpx.AsyncClient, AuditTail], path: str, body: bytes
         ) -> httpx.Response:
    portal, client, _ = asgi

    async def send() -> httpx.Response:
        return await client.post(path, content=body,
                                 headers={"content-type": "application/json"})

    response: httpx.Response = portal.call(send)
    return response


@budget(80)
@given(well_formed_reviews())
def test_fuzz_asgi_well_formed_reviews_are_decided_and_audited(
    asgi: tuple[Any, httpx.AsyncClient, AuditTail], example: tuple[bytes, Any]
) -> None:
    body, _ = example
    response = post(asgi, "/validate", body)
    check_answer(body, response.status_code, response.content, asgi[2], must_decide=True)


@budget(200)
@given(hostile_reviews())
def test_fuzz_asgi_hostile_reviews_never_500_never_allow_a_denied_image(
    asgi: tuple[Any, httpx.AsyncClient, AuditTail], body: bytes
) -> None:
    response = post(asgi, "/validate", body)
    check_answer(body, response.status_code, response.content, asgi[2])


@budget(60)
@given(hostile_reviews())
def test_fuzz_asgi_mutate_answers_a_review_or_400(
    asgi: tuple[Any, httpx.AsyncClient, AuditTail], body: bytes
) -> None:
    response = post(asgi, "/mutate", body)
    assert response.status_code in (200, 400, 413), response.text[:500]
    answer = response.json()
    if response.status_code == 200:
        assert answer["response"]["uid"] == json.loads(body)["request"]["uid"]
        # /mutate never pins an image it could not verify, and nothing here verifies
        assert "patch" not in answer["response"]


@budget(80)
@given(mutated_policy_documents(), st.sampled_from(["CREATE", "UPDATE", "DELETE"]),
       st.one_of(st.builds(lambda: str(uuid.uuid4())), texts(huge=False)))
def test_fuzz_asgi_validate_policy_answers_every_imagepolicy(
    asgi: tuple[Any, httpx.AsyncClient, AuditTail], policy: dict[str, Any], operation: str,
    uid: str,
) -> None:
    """/validate-policy: a broken ImagePolicy is refused with its problems, never a 500."""
    review = {"apiVersion": "admission.k8s.io/v1", "kind": "AdmissionReview", "request": {
        "uid": uid, "operation": operation, "object": policy,
        "kind": {"group": "sealgate.dev", "version": "v1alpha1", "kind": "ImagePolicy"}}}
    body = write_json(review).encode()
    response = post(asgi, "/validate-policy", body)
    assert response.status_code in (200, 400), response.text[:500]
    if response.status_code == 200:
        answer = response.json()["response"]
        assert answer["uid"] == uid
        event("allowed" if answer["allowed"] else "refused")
        if not answer["allowed"]:
            assert answer["status"]["message"].startswith("invalid ImagePolicy:")


# --------------------------------------------------------------------------- served, HTTPS


@pytest.fixture(scope="module")
def served(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[httpx.Client,
                                                                       AuditTail]]:
    tmp = tmp_path_factory.mktemp("fuzz-https")
    certs = tmp / "certs"
    generate_certificates(certs, service="sealgate", namespace="sealgate")
    (tmp / "policies").mkdir()
    (tmp / "policies" / "fortress.yaml").write_text(fortress_policy())
    port = free_port()
    # the server's output goes to a file: an undrained pipe fills (one log line per
    # rejected review) and then blocks the server, which is not what is under test here
    log = (tmp / "serve.log").open("wb")
    process = subprocess.Popen(
        [sys.executable, "-m", "webhook", "serve", "--policies", str(tmp / "policies")],
        stdout=log, stderr=subprocess.STDOUT, env={
            **os.environ, "SEALGATE_HOST": "127.0.0.1", "SEALGATE_PORT": str(port),
            "SEALGATE_CERT": str(certs / "tls.crt"), "SEALGATE_KEY": str(certs / "tls.key"),
            "SEALGATE_AUDIT_LOG": str(tmp / "audit.log"), "SEALGATE_DEADLINE": "2s"})
    trust = ssl.create_default_context(cafile=certs / "ca.crt")
    client = httpx.Client(base_url=f"https://localhost:{port}", verify=trust, timeout=20)
    try:
        for _ in range(200):
            if process.poll() is not None:
                pytest.fail(f"sealgate serve exited: {(tmp / 'serve.log').read_text()}")
            try:
                if client.get("/readyz").status_code == 200:
                    break
            except httpx.TransportError:
                pass
            anyio.run(anyio.sleep, 0.1)
        else:
            pytest.fail("sealgate serve did not become ready in 20 s")
        yield client, AuditTail(tmp / "audit.log")
        assert process.poll() is None, "sealgate serve died during fuzzing"
    finally:
        client.close()
        process.terminate()
        try:
            process.wait(timeout=10)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait()
        log.close()
        output = (tmp / "serve.log").read_text(errors="replace")
        assert "Traceback" not in output, output[-3000:]


@budget(40)
@given(well_formed_reviews())
def test_fuzz_https_well_formed_reviews_are_decided_and_audited(
    served: tuple[httpx.Client, AuditTail], example: tuple[bytes, Any]
) -> None:
    client, audit = served
    body, _ = example
    response = client.post("/validate", content=body,
                           headers={"content-type": "application/json"})
    check_answer(body, response.status_code, response.content, audit, must_decide=True)


@budget(80)
@given(hostile_reviews())
def test_fuzz_https_hostile_reviews_never_500_never_allow_a_denied_image(
    served: tuple[httpx.Client, AuditTail], body: bytes
) -> None:
    client, audit = served
    response = client.post("/validate", content=body,
                           headers={"content-type": "application/json"})
    check_answer(body, response.status_code, response.content, audit)
