"""Hostile AdmissionReviews (issue 11): each one a defect found by trying it, now a 400 or a
decided-and-audited answer; never a 500, never an allow that skipped the images."""

from __future__ import annotations

import json
import time
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import anyio
import httpx
import pytest
from cryptography.hazmat.primitives.asymmetric import ec

from tests.admission_helpers import pod_review
from tests.registry_server import RegistryServer, push_image
from tests.signing import PrivateKey
from tests.test_app import Env, make_env
from webhook.admission import object_images, parse_review


@pytest.fixture
def key() -> PrivateKey:
    return ec.generate_private_key(ec.SECP256R1())


@pytest.fixture
async def env(tmp_path: Path, registry: RegistryServer, key: PrivateKey) -> AsyncIterator[Env]:
    async for value in make_env(tmp_path, registry, key):
        yield value


def _unsigned(env: Env, repo: str = "team/unsigned") -> str:
    push_image(env.registry.url, repo, "v1")
    return f"{env.registry.host}/{repo}:v1"


def _raw(review: dict[str, Any]) -> bytes:
    # json.dumps escapes a lone surrogate as \ud800, exactly what a hostile client sends
    return json.dumps(review).encode()


SURROGATE = "\ud800"


def _with_surrogate(where: str, image: str) -> dict[str, Any]:
    review = pod_review(image)
    request = review["request"]
    if where == "uid":
        request["uid"] = "abc" + SURROGATE
    elif where == "image":
        request["object"]["spec"]["containers"][0]["image"] = image + SURROGATE
    elif where == "username":
        request["userInfo"]["username"] = "mallory" + SURROGATE
    elif where == "object name":
        request["object"]["metadata"]["name"] = "web" + SURROGATE
    elif where == "namespace":
        request["namespace"] = "prod" + SURROGATE
    elif where == "break-glass reason":
        request["object"]["metadata"]["annotations"] = {
            "sealgate.dev/break-glass": "fire" + SURROGATE}
    return review


@pytest.mark.parametrize("where", ["uid", "image", "username", "object name", "namespace",
                                   "break-glass reason"])
async def test_lone_surrogate_is_a_400_never_a_500(env: Env, where: str) -> None:
    # Found: "\ud800" in the uid, an image, the username or the object's name answered 500
    # with no audit line (the audit line could not be encoded).
    response = await env.post(_raw(_with_surrogate(where, _unsigned(env))))
    assert response.status_code == 400, response.text
    assert "surrogate" in response.json()["error"]
    assert env.audit_lines() == []  # malformed: logged and counted, not audited (SPEC §8)
    # the server is still fine, and still denies the unsigned image
    ok = await env.post(pod_review(_unsigned(env)))
    assert ok.json()["response"]["allowed"] is False


async def test_surrogate_pair_is_ordinary_unicode(env: Env) -> None:
    review = pod_review(_unsigned(env))
    review["request"]["userInfo"]["username"] = "mallory \U0001f600 ünïcode"
    response = await env.post(_raw(review))
    assert response.status_code == 200
    [line] = env.audit_lines()
    assert line["user"] == "mallory \U0001f600 ünïcode" and line["decision"] == "deny"


@pytest.mark.parametrize("kind", ["missing", None, "Pod", {}, {"kind": None}, {"kind": ""},
                                  {"kind": 7}, [], 0])
async def test_request_kind_that_is_not_a_kind_is_a_400_never_an_allow(
    env: Env, kind: Any
) -> None:
    # Found: request.kind missing, null, a string or {} allowed an unsigned Pod in an enforce
    # namespace without looking at its images, audited with kind "".
    review = pod_review(_unsigned(env))
    if kind == "missing":
        del review["request"]["kind"]
    else:
        review["request"]["kind"] = kind
    response = await env.post(review)
    assert response.status_code == 400, response.text
    assert "request.kind" in response.json()["error"]
    assert env.audit_lines() == []


@pytest.mark.parametrize("operation", ["missing", None, "", 5])
async def test_request_without_an_operation_is_a_400(env: Env, operation: Any) -> None:
    review = pod_review(_unsigned(env))
    if operation == "missing":
        del review["request"]["operation"]
    else:
        review["request"]["operation"] = operation
    response = await env.post(review)
    assert response.status_code == 400, response.text
    assert "request.operation" in response.json()["error"]


def _many_containers(count: int, image: str, *, distinct: bool) -> dict[str, Any]:
    review = pod_review(image)
    review["request"]["object"]["spec"]["containers"] = [
        {"name": f"c{i}", "image": f"{image}-{i}" if distinct else image} for i in range(count)
    ]
    return review


def test_image_deduplication_is_linear() -> None:
    # Found: quadratic de-duplication: a 750 KB Pod with 40,000 containers took 10-15 s.
    obj = _many_containers(40_000, "r.example/team/x:v", distinct=True)["request"]["object"]
    started = time.perf_counter()
    images = object_images("Pod", obj)
    elapsed = time.perf_counter() - started
    assert len(images) == 40_000 and images[0] == "r.example/team/x:v-0"
    assert elapsed < 0.5, f"40,000 distinct images took {elapsed:.2f}s to list"


def test_parse_keeps_first_seen_order_without_duplicates() -> None:
    review = pod_review("a/b:1")
    spec = review["request"]["object"]["spec"]
    spec["initContainers"] = [{"name": "i", "image": "c/d:2"}]
    spec["containers"] = [{"name": "x", "image": "a/b:1"}, {"name": "y", "image": "c/d:2"},
                          {"name": "z", "image": "e/f:3"}]
    assert parse_review(json.dumps(review).encode()).images == ("c/d:2", "a/b:1", "e/f:3")


async def test_huge_pod_does_not_block_healthz(env: Env) -> None:
    body = _raw(_many_containers(40_000, f"{env.registry.host}/team/x:v", distinct=True))
    assert 700_000 < len(body) < 3 * 1024 * 1024
    worst = 0.0
    answered: list[httpx.Response] = []

    async def flood() -> None:
        answered.append(await env.post(body))

    async def probe() -> None:
        nonlocal worst
        while not answered:
            started = time.perf_counter()
            health = await env.client.get("/healthz")
            assert health.status_code == 200
            worst = max(worst, time.perf_counter() - started)
            await anyio.sleep(0.01)

    async with anyio.create_task_group() as tg:
        tg.start_soon(flood)
        tg.start_soon(probe)
    [response] = answered
    answer = response.json()["response"]
    assert answer["allowed"] is False
    assert "SEALGATE_MAX_IMAGES" in answer["status"]["message"]
    assert worst < 0.5, f"/healthz waited {worst:.2f}s behind one huge Pod"


async def test_over_max_images_is_denied_naming_the_limit_whatever_on_error_says(
    tmp_path: Path, registry: RegistryServer, key: PrivateKey
) -> None:
    async for env in make_env(tmp_path, registry, key, extra="  onError: allow\n"):
        review = _many_containers(201, f"{registry.host}/team/flood:v", distinct=True)
        response = await env.post(review)
        answer = response.json()["response"]
        assert answer["allowed"] is False
        assert answer["status"]["message"] == (
            "request names 201 distinct images, over the limit of 200 (SEALGATE_MAX_IMAGES)"
        )
        [line] = env.audit_lines()
        assert line["decision"] == "deny" and line["reason"] == "error"
        assert line["uid"] == review["request"]["uid"]
        # 200 copies of one image are one image, well within the limit
        same = _many_containers(500, _unsigned(env), distinct=False)
        answer = (await env.post(same)).json()["response"]
        assert "SEALGATE_MAX_IMAGES" not in answer["status"]["message"]
