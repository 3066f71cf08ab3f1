"""`make bench`, cold side: registry requests and their critical path, fan-in, rollout, memory.

Runs sealgate's app in this process (httpx.ASGITransport) in front of the real
registry, with a transport that records when each registry request started and
ended. The critical-path depth is the longest chain of requests each of which
started only after the previous one had finished: what a cold admission waits for.
"""

from __future__ import annotations

import asyncio
import json
import statistics
import subprocess
import sys
import tempfile
import textwrap
import time
from collections import Counter
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx
from cryptography.hazmat.primitives.asymmetric import ec

from tests.admission_helpers import request_kind
from tests.registry_server import RegistryServer
from webhook.app import create_app
from webhook.settings import Settings


@dataclass(frozen=True, slots=True)
class Span:
    kind: str
    started: float
    ended: float


class TimingTransport(httpx.AsyncBaseTransport):
    """The real network, with each request's kind and start/end times."""

    def __init__(self) -> None:
        self.inner = httpx.AsyncHTTPTransport()
        self.spans: list[Span] = []

    async def handle_async_request(self, request: httpx.Request) -> httpx.Response:
        started = time.perf_counter()
        response = await self.inner.handle_async_request(request)
        await response.aread()
        self.spans.append(Span(request_kind(request.url.path), started, time.perf_counter()))
        return response

    async def aclose(self) -> None:
        await self.inner.aclose()

    def counts(self) -> dict[str, int]:
        return dict(Counter(span.kind for span in self.spans))


def critical_depth(spans: list[Span]) -> int:
    """Longest chain of requests where each starts after the previous one ended."""
    ordered = sorted(spans, key=lambda span: span.started)
    depth: list[int] = []
    for index, span in enumerate(ordered):
        before = [depth[j] for j in range(index) if ordered[j].ended <= span.started]
        depth.append(1 + max(before, default=0))
    return max(depth, default=0)


def _review(kind: str, image: str, uid: str) -> dict[str, Any]:
    pod = {"containers": [{"name": "app", "image": image}]}
    obj: dict[str, Any]
    if kind == "Pod":
        obj = {"kind": "Pod", "metadata": {"name": uid}, "spec": pod}
    else:
        obj = {"kind": kind, "metadata": {"name": uid},
               "spec": {"template": {"metadata": {}, "spec": pod}}}
    return {"apiVersion": "admission.k8s.io/v1", "kind": "AdmissionReview",
            "request": {"uid": uid, "operation": "CREATE", "namespace": "bench",
                        "kind": {"group": "", "version": "v1", "kind": kind},
                        "userInfo": {"username": "bench"}, "object": obj}}


async def _with_app(work: Path, policies: Path, registry: RegistryServer,
                    reviews: list[dict[str, Any]]) -> tuple[TimingTransport, list[dict[str, Any]]]:
    transport = TimingTransport()
    settings = Settings(policies=policies, audit_log=work / f"audit-{time.time_ns()}.log",
                        insecure_registries=frozenset({registry.host}))
    app = create_app(settings, transport=transport)
    async with app.router.lifespan_context(app), httpx.AsyncClient(
        transport=httpx.ASGITransport(app=app), base_url="https://sealgate", timeout=30
    ) as client:
        answers = await asyncio.gather(*(client.post("/validate", json=r) for r in reviews))
    return transport, [a.json()["response"] for a in answers]


async def _cold_side(registry: RegistryServer, key: ec.EllipticCurvePrivateKey,
                     work: Path) -> dict[str, Any]:
    from bench.admission_bench import policy_yaml, signed_attested_image

    policies = work / "policies-cold"
    policies.mkdir(exist_ok=True)
    (policies / "bench.yaml").write_text(policy_yaml(registry.host, key))
    results: dict[str, Any] = {}

    # A new image on a registry sealgate has talked to before (the registry's lack of the
    # referrers API is remembered), then the very first image of a registry.
    first = signed_attested_image(registry, key, "bench/cold-first")
    colds = [signed_attested_image(registry, key, f"bench/cold{i}") for i in range(5)]
    transport = TimingTransport()
    settings = Settings(policies=policies, audit_log=work / "audit-cold.log",
                        insecure_registries=frozenset({registry.host}))
    app = create_app(settings, transport=transport)
    async with app.router.lifespan_context(app), httpx.AsyncClient(
        transport=httpx.ASGITransport(app=app), base_url="https://sealgate", timeout=30
    ) as client:
        phases: list[list[Span]] = []
        for index, ref in enumerate([first, *colds]):
            transport.spans.clear()
            answer = (await client.post("/validate", json=_review("Pod", ref, f"c{index}"))).json()
            if not answer["response"]["allowed"]:
                raise SystemExit(f"cold image denied: {answer}")
            phases.append(list(transport.spans))
    # depth from timing: a request counts as waiting for another when it started after
    # that one ended, so a busy machine can only overstate it; the median of 5 images
    cold = phases[1:]
    results["cold"] = {
        "requests": statistics.median(len(spans) for spans in cold),
        "depth": statistics.median(critical_depth(spans) for spans in cold),
        "by_kind": dict(Counter(span.kind for span in cold[0])),
        "first_image_of_registry": {"requests": len(phases[0]),
                                    "depth": critical_depth(phases[0])},
    }

    image = signed_attested_image(registry, key, "bench/fanin")
    transport, answers = await _with_app(
        work, policies, registry, [_review("Pod", image, f"fan-{i}") for i in range(100)])
    results["fanin"] = {"reviews": 100, "allowed": sum(a["allowed"] for a in answers),
                        "requests": len(transport.spans), "by_kind": transport.counts()}

    image = signed_attested_image(registry, key, "bench/rollout")
    rollout = [_review("Deployment", image, "deploy"), _review("ReplicaSet", image, "rs")]
    rollout += [_review("Pod", image, f"pod-{i}") for i in range(50)]
    transport, answers = await _with_app(work, policies, registry, rollout)
    results["rollout"] = {"reviews": len(rollout), "allowed": sum(a["allowed"] for a in answers),
                          "requests": len(transport.spans),
                          "one_image_cold_requests": results["cold"]["requests"]}
    return results


MEMORY_PROBE = textwrap.dedent('''
    import datetime as dt, gc, json, re, sys, asyncio
    from pathlib import Path

    def rss():
        text = Path("/proc/self/status").read_text()
        return int(re.search(r"VmRSS:\\s+(\\d+)", text).group(1)) * 1024

    import webhook.app  # everything `serve` imports
    from webhook.cache import CacheSettings, FactCache
    from webhook.decision import Outcome, ScanFact
    count = int(sys.argv[1])
    cache = FactCache(CacheSettings(maxsize=count))
    gc.collect()
    before = rss()

    async def fill():
        now = dt.datetime.now(dt.UTC)
        for i in range(count):
            digest = "sha256:" + f"{i:064x}"
            name = f"registry.example.com/team/app{i}"
            async def fact(value=(Outcome("ok"), digest)):
                return value
            await cache.get_or_fetch("digest", ("registry.example.com", f"team/app{i}", "v1"),
                                     fact, lambda v: "success")
            async def sig(value=Outcome("ok")):
                return value
            await cache.get_or_fetch("signature", (name, digest, "policy/rule/release-key"),
                                     sig, lambda v: "success")
            scan = ScanFact(source="attestation", scanned_at=now,
                            ids={"HIGH": ("CVE-2026-0001",),
                                 "MEDIUM": ("CVE-2026-0002", "CVE-2026-0003", "CVE-2026-0004")},
                            attestor="sha256:" + "ab" * 32)
            async def scanned(value=(scan, None)):
                return value
            await cache.get_or_fetch("scan", (name, digest, "attestation", "sha256:" + "ab" * 32),
                                     scanned, lambda v: "success")
    asyncio.run(fill())
    gc.collect()
    after = rss()
    print(json.dumps({"rss_mib": after / 2**20, "growth_mib": (after - before) / 2**20,
                      "entries": 3 * count, "bytes_per_entry": (after - before) / (3 * count)}))
''')


def measure_memory(digests: int = 10_000) -> dict[str, Any]:
    """RSS of a process holding the facts of ``digests`` images (tag, signature, scan)."""
    done = subprocess.run([sys.executable, "-c", MEMORY_PROBE, str(digests)],
                          capture_output=True, text=True, check=True,
                          cwd=Path(__file__).resolve().parent.parent)
    result: dict[str, Any] = json.loads(done.stdout)
    result["digests"] = digests
    return result


def measure_all(registry: RegistryServer, key: ec.EllipticCurvePrivateKey, *,
                quick: bool) -> dict[str, Any]:
    work = Path(tempfile.mkdtemp(prefix="sealgate-bench-cold-"))
    results = asyncio.run(_cold_side(registry, key, work))
    results["memory"] = measure_memory(1_000 if quick else 10_000)
    if not quick:
        from bench import verifycost
        results["verification"] = verifycost.measure()
    return results
