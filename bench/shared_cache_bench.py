"""`make bench`, shared cache part (SPEC §9): two `sealgate serve` processes, sharing a
Valkey/Redis fact cache or not, in front of a real registry.

1. Cold images: N distinct signed images (default 100), each reviewed by both replicas at
   the same moment (as a rollout reaches every replica), with each replica's own cache
   (local-only) and with the shared cache. Reports the registry requests both replicas
   made, from their `/metrics`.
2. Warm path: one replica answering an all-cached review, with and without the shared
   level configured, driven by `wrk` (keep-alive, fixed connections) in alternating
   rounds. A local hit never reaches the shared level, so the goal is within 10 %.

Everything runs on 127.0.0.1 (Debian's docker-registry and redis-server, TLS from
`sealgate certs`); time and request counts are bounded. Prints JSON.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import re
import shutil
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

from tests.redis_server import RedisServer, find_redis_binary  # noqa: E402
from tests.registry_server import RegistryServer, push_cosign_signature, push_image  # noqa: E402
from tests.signing import cosign_layer, public_pem  # noqa: E402
from tests.system import free_port  # noqa: E402
from webhook.certs import generate_certificates  # noqa: E402


def review(image: str) -> dict[str, Any]:
    return {
        "apiVersion": "admission.k8s.io/v1", "kind": "AdmissionReview",
        "request": {
            "uid": str(uuid.uuid4()), "operation": "CREATE", "namespace": "bench",
            "kind": {"group": "", "version": "v1", "kind": "Pod"},
            "userInfo": {"username": "bench"},
            "object": {"kind": "Pod", "metadata": {"name": "web"},
                       "spec": {"containers": [{"name": "web", "image": image}]}},
        },
    }


class Replica:
    """`sealgate serve` in its own process (`python -m webhook serve`)."""

    def __init__(self, name: str, work: Path, env: dict[str, str]) -> None:
        self.name = name
        self.port = free_port()
        self.url = f"https://127.0.0.1:{self.port}"
        certs = work / "certs"
        self.log = open(work / f"{name}.stderr", "wb")  # noqa: SIM115 - lives with the process
        self.process = subprocess.Popen(
            [sys.executable, "-m", "webhook", "serve", "--host", "127.0.0.1",
             "--port", str(self.port), "--cert", str(certs / "tls.crt"),
             "--key", str(certs / "tls.key"), "--policies", str(work / "policies"),
             "--audit-log", str(work / f"{name}.audit.log"), "--log-level", "warning"],
            env={**os.environ, **env}, cwd=REPO, stdout=subprocess.DEVNULL, stderr=self.log,
        )

    async def ready(self, trust: ssl.SSLContext) -> None:
        deadline = time.monotonic() + 60
        async with httpx.AsyncClient(verify=trust, timeout=1) as client:
            while time.monotonic() < deadline:
                if self.process.poll() is not None:
                    raise SystemExit(f"{self.name} exited; see its stderr")
                try:
                    if (await client.get(f"{self.url}/readyz")).status_code == 200:
                        return
                except httpx.TransportError:
                    pass
                await asyncio.sleep(0.1)
        raise SystemExit(f"{self.name} did not start in 60 s")

    async def registry_requests(self, client: httpx.AsyncClient) -> int:
        return sum((await self.counters(client, "sealgate_registry_requests_total")).values())

    async def counters(self, client: httpx.AsyncClient, name: str) -> dict[str, int]:
        """Samples of one counter, by their label text."""
        text = (await client.get(f"{self.url}/metrics")).text
        found: dict[str, int] = {}
        for line in text.splitlines():
            if line.startswith(name + "{"):
                labels, value = line[len(name):].rsplit(" ", 1)
                found[labels] = found.get(labels, 0) + int(float(value))
        return found

    def stop(self) -> None:
        self.process.terminate()
        try:
            self.process.wait(timeout=10)
        except subprocess.TimeoutExpired:
            self.process.kill()
            self.process.wait()
        self.log.close()


def push_images(registry: RegistryServer, key: ec.EllipticCurvePrivateKey, count: int
                ) -> list[str]:
    images = []
    for number in range(count):
        repo = f"team/cold-{number}"
        digest, _ = push_image(registry.url, repo, "v1")
        push_cosign_signature(registry.url, repo, digest,
                              [cosign_layer(key, f"{registry.host}/{repo}", digest)])
        images.append(f"{registry.host}/{repo}:v1")
    return images


def write_policy(work: Path, registry: RegistryServer, key: ec.EllipticCurvePrivateKey) -> None:
    policies = work / "policies"
    policies.mkdir()
    (policies / "bench.yaml").write_text(f"""\
apiVersion: sealgate.dev/v1alpha1
kind: ImagePolicy
metadata: {{name: bench}}
spec:
  namespaces: {{match: ["bench"]}}
  rules:
    - name: ours
      images: ["{registry.host}/team/**"]
      signatures:
        authorities:
          - name: bench-key
            key:
              tlog: "off"
              publicKey: |
{textwrap.indent(public_pem(key).decode(), " " * 16)}
""")


async def cold_round(replicas: list[Replica], images: list[str], trust: ssl.SSLContext,
                     concurrency: int) -> dict[str, Any]:
    """Every image reviewed by every replica at once; registry requests made in total."""
    semaphore = asyncio.Semaphore(concurrency)
    async with httpx.AsyncClient(verify=trust, timeout=30) as client:
        before = sum([await r.registry_requests(client) for r in replicas])

        async def one(image: str) -> None:
            async with semaphore:
                answers = await asyncio.gather(*(
                    client.post(f"{r.url}/validate", json=review(image)) for r in replicas))
            for answer in answers:
                if answer.status_code != 200 or not answer.json()["response"]["allowed"]:
                    raise SystemExit(f"unexpected answer for {image}: {answer.text[:300]}")

        started = time.perf_counter()
        await asyncio.gather(*(one(image) for image in images))
        elapsed = time.perf_counter() - started
        after = sum([await r.registry_requests(client) for r in replicas])
        shared: dict[str, int] = {}
        for replica in replicas:
            for name in ("sealgate_shared_cache_requests_total",
                         "sealgate_shared_cache_errors_total"):
                for labels, value in (await replica.counters(client, name)).items():
                    shared[labels] = shared.get(labels, 0) + value
    return {"registry_requests": after - before,
            "per_image": round((after - before) / len(images), 2),
            "seconds": round(elapsed, 2), **({"shared_cache": shared} if shared else {})}


_LATENCY = re.compile(r"^\s+(50|90|99)%\s+([\d.]+)(us|ms|s)\s*$", re.MULTILINE)


def run_wrk(wrk: str, url: str, body: bytes, seconds: int, connections: int, work: Path
            ) -> dict[str, float]:
    script = work / "post.lua"
    script.write_text(
        'wrk.method = "POST"\n'
        f"wrk.body = {json.dumps(body.decode())}\n"
        'wrk.headers["Content-Type"] = "application/json"\n'
    )
    result = subprocess.run(
        [wrk, "-t1", f"-c{connections}", f"-d{seconds}s", "--latency", "-s", str(script),
         f"{url}/validate"],
        capture_output=True, text=True, timeout=seconds + 30, check=False,
    )
    if result.returncode != 0 or "Non-2xx" in result.stdout or "Socket errors" in result.stdout:
        raise SystemExit(f"wrk against {url} failed:\n{result.stdout}{result.stderr}")
    scale = {"us": 1e-3, "ms": 1.0, "s": 1e3}
    latency = {f"p{q}_ms": float(v) * scale[unit] for q, v, unit in _LATENCY.findall(result.stdout)}
    rps = re.search(r"Requests/sec:\s+([\d.]+)", result.stdout)
    if rps is None or len(latency) != 3:
        raise SystemExit(f"cannot read wrk's output:\n{result.stdout}")
    return {"throughput_rps": float(rps.group(1)), **latency}


def median_of(rounds: list[dict[str, float]]) -> dict[str, float]:
    return {name: round(statistics.median(r[name] for r in rounds), 3) for name in rounds[0]}


async def main_async(args: argparse.Namespace) -> dict[str, Any]:
    wrk = shutil.which("wrk")
    if find_redis_binary() is None or wrk is None:
        raise SystemExit("needs Debian's redis-server and wrk: apt-get install -y redis-server wrk")
    key = ec.generate_private_key(ec.SECP256R1())
    with tempfile.TemporaryDirectory(prefix="sealgate-shared-bench-", ) as tmp, \
            RegistryServer() as registry, RedisServer(find_redis_binary() or "") as cache:
        work = Path(tmp)
        paths = generate_certificates(work / "certs", service="sealgate", namespace="bench")
        trust = ssl.create_default_context(cafile=str(paths.ca_cert))
        write_policy(work, registry, key)
        (work / "cache.key").write_text("bench key, thirty-two bytes long\n")
        print(f"pushing {args.images} signed images…", file=sys.stderr)
        images = push_images(registry, key, args.images)
        base = {"SEALGATE_INSECURE_REGISTRIES": registry.host}
        shared_env = {**base, "SEALGATE_CACHE_URL": cache.url,
                      "SEALGATE_CACHE_KEY": str(work / "cache.key")}
        sets = {"local_only": [Replica(f"local-{n}", work, base) for n in "ab"],
                "shared": [Replica(f"shared-{n}", work, shared_env) for n in "ab"]}
        try:
            for replicas in sets.values():
                for replica in replicas:
                    await replica.ready(trust)
            cold = {}
            for mode, replicas in sets.items():
                print(f"cold images, {mode}…", file=sys.stderr)
                cold[mode] = await cold_round(replicas, images, trust, args.concurrency)
            # Warm path: replica "a" of each set, every image of the review already cached.
            body = json.dumps(review(images[0])).encode()
            rounds: dict[str, list[dict[str, float]]] = {mode: [] for mode in sets}
            for number in range(args.rounds):
                order = list(sets.items())
                for mode, replicas in order if number % 2 == 0 else order[::-1]:  # ABBA
                    print(f"warm path, {mode}, round {number + 1}/{args.rounds}…",
                          file=sys.stderr)
                    rounds[mode].append(run_wrk(wrk, replicas[0].url, body, args.seconds,
                                                args.connections, work))
        finally:
            for replicas in sets.values():
                for replica in replicas:
                    replica.stop()
    warm = {mode: median_of(found) for mode, found in rounds.items()}
    local, shared = warm["local_only"], warm["shared"]
    return {
        "cold_images": args.images,
        "cold": cold,
        "cold_requests_saved": round(
            1 - cold["shared"]["registry_requests"] / cold["local_only"]["registry_requests"], 3),
        "warm": warm,
        "warm_shared_vs_local": {
            "throughput": round(shared["throughput_rps"] / local["throughput_rps"], 3),
            "p50": round(shared["p50_ms"] / local["p50_ms"], 3),
            "p99": round(shared["p99_ms"] / local["p99_ms"], 3),
        },
        "warm_settings": {"tool": "wrk", "connections": args.connections,
                          "seconds_per_round": args.seconds, "rounds": args.rounds},
    }


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0] if __doc__ else None)
    parser.add_argument("--images", type=int, default=100, help="distinct cold images")
    parser.add_argument("--concurrency", type=int, default=10,
                        help="cold images under review at once")
    parser.add_argument("--rounds", type=int, default=3, help="alternating warm-path rounds")
    parser.add_argument("--seconds", type=int, default=5, help="seconds per wrk round")
    parser.add_argument("--connections", type=int, default=8, help="wrk connections")
    args = parser.parse_args()
    result = asyncio.run(main_async(args))
    print(json.dumps(result, indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())
