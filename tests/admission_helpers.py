"""AdmissionReviews, policies and signed images for tests of the webhook."""

from __future__ import annotations

import asyncio
import collections
import textwrap
import uuid
from typing import Any

import httpx

from tests.registry_server import RegistryServer, push_cosign_signature, push_image
from tests.signing import PrivateKey, cosign_layer


def policy_text(host: str, pem: bytes, *, extra: str = "", extra_rules: str = "") -> str:
    """Policy "production" for namespace prod: images under HOST/team/ need a signature by
    ``pem`` (no tlog); ``extra`` adds spec fields, ``extra_rules`` more rules."""
    return f"""\
apiVersion: sealgate.dev/v1alpha1
kind: ImagePolicy
metadata: {{name: production}}
spec:
  namespaces: {{match: ["prod"]}}
{extra}  rules:
    - name: ours
      images: ["{host}/team/**"]
      signatures:
        authorities:
          - name: release-key
            key:
              tlog: "off"
              publicKey: |
{textwrap.indent(pem.decode(), " " * 16)}
{extra_rules}"""


def pod_review(image: str, *, namespace: str = "prod", kind: str = "Pod", **request: Any
               ) -> dict[str, Any]:
    spec = {"containers": [{"name": "app", "image": image}]}
    if kind == "Pod":
        obj: dict[str, Any] = {"kind": "Pod", "metadata": {"name": "web"}, "spec": spec}
    else:
        obj = {"kind": kind, "metadata": {"name": "web"},
               "spec": {"template": {"metadata": {}, "spec": spec}}}
    return {
        "apiVersion": "admission.k8s.io/v1",
        "kind": "AdmissionReview",
        "request": {
            "uid": str(uuid.uuid4()),
            "kind": {"group": "", "version": "v1", "kind": kind},
            "namespace": namespace,
            "operation": "CREATE",
            "userInfo": {"username": "alice"},
            "object": obj,
            **request,
        },
    }


def signed_image(registry: RegistryServer, key: PrivateKey, repo: str, tag: str = "v1") -> str:
    digest, _ = push_image(registry.url, repo, tag)
    push_cosign_signature(registry.url, repo, digest,
                          [cosign_layer(key, f"{registry.host}/{repo}", digest)])
    return digest


def request_kind(path: str) -> str:
    """What a registry request is for, from its path (counted by tests and the bench)."""
    if "/referrers/" in path:
        return "referrers-api"
    if "/manifests/sha256-" in path:
        return ("sig-manifest" if path.endswith(".sig")
                else "att-manifest" if path.endswith(".att") else "referrers-tag")
    if "/manifests/" in path:
        return "manifest"
    return "blob" if "/blobs/" in path else "other"


class CountingTransport(httpx.AsyncBaseTransport):
    """The real network, counting requests by kind; ``down`` refuses connections."""

    def __init__(self, *, down: bool = False, hang: bool = False) -> None:
        self.inner = httpx.AsyncHTTPTransport()
        self.counts: collections.Counter[str] = collections.Counter()
        self.down = down
        self.hang = hang

    async def handle_async_request(self, request: httpx.Request) -> httpx.Response:
        self.counts[request_kind(request.url.path)] += 1
        if self.hang:
            await asyncio.sleep(30)
        if self.down:
            raise httpx.ConnectError("connection refused (injected)", request=request)
        return await self.inner.handle_async_request(request)

    async def aclose(self) -> None:
        await self.inner.aclose()

    @property
    def total(self) -> int:
        return sum(self.counts.values())
