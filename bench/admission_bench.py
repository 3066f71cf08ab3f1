"""`make bench`: webhook latency and throughput as ratios against a bare endpoint, same run.

Both servers run under uvicorn over TLS on loopback, in their own processes:
- "bare": a Starlette endpoint doing the same JSON work (read the AdmissionReview,
  parse it, answer allowed with its uid) and nothing else;
- "sealgate": `sealgate serve` deciding a Deployment whose image is signed, with
  the image in a real local registry (Debian's docker-registry).
The same client (httpx, keep-alive, fixed concurrency) drives both. Machines
here are noisy, so only ratios measured in one run are reported. It also
counts registry requests per cold and warm image (the cache's job).

Everything stays on 127.0.0.1; request counts and time are bounded.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import socket
import ssl
import statistics
import subprocess
import sys
import tempfile
import textwrap
import time
import uuid
from pathlib import Path
from typing import Any

import httpx
from cryptography.hazmat.primitives.asymmetric import ec

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))

from tests.registry_server import RegistryServer, push_cosign_signature, push_image  # noqa: E402
from tests.signing import cosign_layer, public_pem  # noqa: E402
from webhook.certs import generate_certificates  # noqa: E402

BARE_APP = '''
import json
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import JSONResponse
from starlette.routing import Route

async def validate(request: Request) -> JSONResponse:
    review = json.loads(await request.body())
    uid = review["request"]["uid"]
    return JSONResponse({"apiVersion": "admission.k8s.io/v1", "kind": "AdmissionReview",
                         "response": {"uid": uid, "allowed": True}})

app = Starlette(routes=[Route("/validate", validate, methods=["POST"])])
'''


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
        return port


def review(image: str) -> bytes:
    return json.dumps({
        "apiVersion": "admission.k8s.io/v1", "kind": "AdmissionReview",
        "request": {
            "uid": str(uuid.uuid4()), "operation": "CREATE", "namespace": "bench",
            "kind": {"group": "apps", "version": "v1", "kind": "Deployment"},
            "userInfo": {"username": "bench"},
            "object": {"kind": "Deployment", "metadata": {"name": "web"}, "spec": {
                "replicas": 3, "template": {"metadata": {"labels": {"app": "web"}}, "spec": {
                    "containers": [{"name": "web", "image": image,
                                    "ports": [{"containerPort": 8080}]}]}}}},
        },
    }).encode()


async def wait_ready(url: str, trust: ssl.SSLContext, process: subprocess.Popen[bytes]) -> None:
    deadline = time.monotonic() + 30
    async with httpx.AsyncClient(verify=trust, timeout=1) as client:
        while time.monotonic() < deadline:
            if process.poll() is not None:
                raise SystemExit(f"server exited: {process.stderr.read().decode()}")  # type: ignore[union-attr]
            try:
                await client.post(f"{url}/validate", content=b"{}")
                return
            except httpx.TransportError:
                await asyncio.sleep(0.1)
    raise SystemExit(f"{url} did not start in 30 s")


async def drive(url: str, trust: ssl.SSLContext, bodies: list[bytes], concurrency: int
                ) -> tuple[float, list[float]]:
    """Send every body (concurrency at a time); returns (elapsed seconds, latencies)."""
    queue: asyncio.Queue[bytes] = asyncio.Queue()
    for body in bodies:
        queue.put_nowait(body)
    latencies: list[float] = []
    limits = httpx.Limits(max_connections=concurrency, max_keepalive_connections=concurrency)

    async with httpx.AsyncClient(verify=trust, limits=limits, timeout=30) as client:
        async def worker() -> None:
            while not queue.empty():
                body = queue.get_nowait()
                started = time.perf_counter()
                response = await client.post(f"{url}/validate", content=body,
                                             headers={"content-type": "application/json"})
                latencies.append(time.perf_counter() - started)
                if response.status_code != 200 or not response.json()["response"]["allowed"]:
                    raise SystemExit(f"unexpected answer from {url}: {response.text[:300]}")

        started = time.perf_counter()
        await asyncio.gather(*(worker() for _ in range(concurrency)))
        return time.perf_counter() - started, latencies


def percentile(values: list[float], q: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(q * len(ordered)))]


def summary(name: str, elapsed: float, latencies: list[float]) -> dict[str, float]:
    return {
        "requests": len(latencies),
        "throughput_rps": len(latencies) / elapsed,
        "p50_ms": statistics.median(latencies) * 1000,
        "p99_ms": percentile(latencies, 0.99) * 1000,
    }


def registry_requests(metrics: str) -> int:
    total = 0
    for line in metrics.splitlines():
        if line.startswith("sealgate_cache_requests_total"):
            continue
        if line.startswith("sealgate_registry_requests_total{"):
            total += int(float(line.split()[-1]))
    return total


async def main_async(args: argparse.Namespace) -> dict[str, Any]:
    work = Path(tempfile.mkdtemp(prefix="sealgate-bench-"))
    certs = work / "certs"
    generate_certificates(certs, service="sealgate", namespace="bench")
    trust = ssl.create_default_context(cafile=certs / "ca.crt")
    key = ec.generate_private_key(ec.SECP256R1())
    registry = RegistryServer()
    registry.start()
    processes: list[subprocess.Popen[bytes]] = []
    try:
        images = []
        for index in range(args.cold_images + 1):
            repo = f"bench/app{index}"
            digest, _ = push_image(registry.url, repo, "v1")
            push_cosign_signature(registry.url, repo, digest,
                                  [cosign_layer(key, f"{registry.host}/{repo}", digest)])
            images.append(f"{registry.host}/{repo}:v1")
        policies = work / "policies"
        policies.mkdir()
        (policies / "bench.yaml").write_text(f"""\
apiVersion: sealgate.dev/v1alpha1
kind: ImagePolicy
metadata: {{name: bench}}
spec:
  namespaces: {{match: ["bench"]}}
  rules:
    - name: local
      images: ["{registry.host}/bench/**"]
      signatures:
        authorities:
          - name: bench-key
            key:
              tlog: "off"
              publicKey: |
{textwrap.indent(public_pem(key).decode(), " " * 16)}
""")
        (work / "bare_app.py").write_text(BARE_APP)
        tls = ["--ssl-certfile", str(certs / "tls.crt"), "--ssl-keyfile", str(certs / "tls.key")]
        bare_port, hook_port = free_port(), free_port()
        quiet = {"stdout": subprocess.DEVNULL, "stderr": subprocess.PIPE}
        processes.append(subprocess.Popen(
            [sys.executable, "-m", "uvicorn", "bare_app:app", "--host", "127.0.0.1",
             "--port", str(bare_port), "--log-level", "warning", "--no-access-log", *tls],
            cwd=work, **quiet))  # type: ignore[call-overload]
        env = {**os.environ, "SEALGATE_INSECURE_REGISTRIES": registry.host,
               "SEALGATE_AUDIT_LOG": str(work / "audit.log")}
        processes.append(subprocess.Popen(
            [sys.executable, "-m", "webhook", "serve", "--host", "127.0.0.1",
             "--port", str(hook_port), "--policies", str(policies), "--cert",
             str(certs / "tls.crt"), "--key", str(certs / "tls.key"), "--log-level", "warning"],
            env=env, **quiet))  # type: ignore[call-overload]
        bare_url, hook_url = f"https://127.0.0.1:{bare_port}", f"https://127.0.0.1:{hook_port}"
        await wait_ready(bare_url, trust, processes[0])
        await wait_ready(hook_url, trust, processes[1])

        async with httpx.AsyncClient(verify=trust) as client:
            async def registry_count() -> int:
                return registry_requests((await client.get(f"{hook_url}/metrics")).text)

            # cold: each image once, one at a time (tag -> digest, .sig manifest, payload)
            before = await registry_count()
            _, cold = await drive(hook_url, trust, [review(i) for i in images[1:]], 1)
            cold_requests = (await registry_count() - before) / args.cold_images
            before = await registry_count()
            _, warm_sequential = await drive(hook_url, trust, [review(i) for i in images[1:]], 1)
            warm_requests = (await registry_count() - before) / args.cold_images

        warm = images[0]
        results: dict[str, Any] = {}
        for name, url in (("bare", bare_url), ("sealgate", hook_url)):
            await drive(url, trust, [review(warm) for _ in range(args.warmup)], args.concurrency)
            elapsed, latencies = await drive(url, trust, [review(warm) for _ in range(
                args.requests)], args.concurrency)
            results[name] = summary(name, elapsed, latencies)
        bare, hook = results["bare"], results["sealgate"]
        results["ratios (sealgate / bare)"] = {
            "throughput": hook["throughput_rps"] / bare["throughput_rps"],
            "p50": hook["p50_ms"] / bare["p50_ms"],
            "p99": hook["p99_ms"] / bare["p99_ms"],
        }
        results["cold image"] = {
            "registry_requests_per_image": cold_requests,
            "p50_ms": statistics.median(cold) * 1000,
            "p50_vs_warm_sequential": statistics.median(cold) / statistics.median(warm_sequential),
        }
        results["warm image"] = {"registry_requests_per_image": warm_requests}
        results["settings"] = {"requests": args.requests, "concurrency": args.concurrency,
                               "cold_images": args.cold_images, "cpus": os.cpu_count()}
        return results
    finally:
        for process in processes:
            process.terminate()
            try:
                process.wait(timeout=10)
            except subprocess.TimeoutExpired:
                process.kill()
        registry.stop()


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--requests", type=int, default=3000)
    parser.add_argument("--concurrency", type=int, default=16)
    parser.add_argument("--warmup", type=int, default=300)
    parser.add_argument("--cold-images", type=int, default=20)
    args = parser.parse_args()
    results = asyncio.run(main_async(args))
    print(json.dumps(results, indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())
