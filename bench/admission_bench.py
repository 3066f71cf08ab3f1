"""`make bench`: sealgate against a bare endpoint, measured in one run on one machine.

Warm path. Both servers run under the same uvicorn (httptools, uvloop) over TLS
on loopback, one process each:
- "floor": a bare Starlette endpoint that does ``await request.json()`` and
  answers ``allowed: true`` with the uid, and nothing else;
- "sealgate": ``sealgate serve`` deciding a ~900-byte Pod with three signed images
  by tag, each with a signed vulnerability attestation, every fact cached.
`wrk` drives both (a Python client on these two cores would saturate first and
measure itself), alternating floor and sealgate at each concurrency, for several
rounds; ratios are sealgate ÷ floor from the same rounds, since these machines are
noisy. After every sealgate run the audit log must have grown by exactly one valid
JSON line per request the server counted.

Then: two workers against one; the cold path (registry requests per image and the
critical-path depth); fan-in and rollout; memory per cached fact; CPU per cold
verification. Everything stays on 127.0.0.1.
"""

from __future__ import annotations

import argparse
import json
import os
import ssl
import statistics
import subprocess
import sys
import tempfile
import textwrap
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import httpx
from cryptography.hazmat.primitives.asymmetric import ec

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))

from bench import coldpath, loadgen  # noqa: E402
from tests.admission_helpers import signed_image  # noqa: E402
from tests.bundle_builder import attestation_layer, statement  # noqa: E402
from tests.registry_server import RegistryServer, push_cosign_attestations  # noqa: E402
from tests.signing import public_pem  # noqa: E402
from tests.system import free_port  # noqa: E402
from webhook.certs import generate_certificates  # noqa: E402
from webhook.scans import VULN_PREDICATE  # noqa: E402

FLOOR_APP = '''
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import JSONResponse
from starlette.routing import Route

async def validate(request: Request) -> JSONResponse:
    review = await request.json()
    return JSONResponse({"apiVersion": "admission.k8s.io/v1", "kind": "AdmissionReview",
                         "response": {"uid": review["request"]["uid"], "allowed": True}})

app = Starlette(routes=[Route("/validate", validate, methods=["POST"])])
'''

GOALS = {
    "throughput c=16": (">=", 0.7),
    "p99 c=64": ("<=", 1.5),
    "p50 c=1": ("<=", 2.0),
    "CPU per request": ("<=", 1.5),
    "2 workers / 1 worker": (">=", 1.8),
    "cold requests per image": ("<=", 5),
    "cold critical-path depth": ("<=", 3),
    "RSS with 10,000 digests cached (MiB)": ("<=", 150),
}


def pod_review(images: list[str], uid: str = "@UID@") -> bytes:
    """A Pod review of about 900 bytes naming ``images`` (uid: wrk's placeholder)."""
    containers = [
        {"name": f"c{index}", "image": image, "ports": [{"containerPort": 8080 + index}],
         "resources": {"requests": {"cpu": "100m", "memory": "64Mi"}}}
        for index, image in enumerate(images)
    ]
    return json.dumps({
        "apiVersion": "admission.k8s.io/v1", "kind": "AdmissionReview",
        "request": {
            "uid": uid, "operation": "CREATE", "namespace": "bench",
            "kind": {"group": "", "version": "v1", "kind": "Pod"},
            "resource": {"group": "", "version": "v1", "resource": "pods"},
            "userInfo": {"username": "system:serviceaccount:kube-system:replicaset-controller",
                         "groups": ["system:serviceaccounts"]},
            "object": {"apiVersion": "v1", "kind": "Pod",
                       "metadata": {"name": "web-7d9f8c-abcde", "namespace": "bench",
                                    "labels": {"app": "web", "tier": "frontend"}},
                       "spec": {"containers": containers}},
        },
    }, separators=(",", ":")).encode()


def vuln_predicate() -> dict[str, Any]:
    finished = time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime(time.time() - 3600))
    return {
        "invocation": {"uri": "https://ci.example.com/run/1"},
        "scanner": {"uri": "pkg:github/aquasecurity/trivy", "version": "0.50.0",
                    "result": {"SchemaVersion": 2, "ArtifactName": "app", "Results": []}},
        "metadata": {"scanStartedOn": finished, "scanFinishedOn": finished},
    }


def policy_yaml(host: str, key: ec.EllipticCurvePrivateKey) -> str:
    return f"""\
apiVersion: sealgate.dev/v1alpha1
kind: ImagePolicy
metadata: {{name: bench}}
spec:
  namespaces: {{match: ["bench"]}}
  rules:
    - name: local
      images: ["{host}/bench/**"]
      signatures:
        authorities:
          - name: bench-key
            key:
              tlog: "off"
              publicKey: |
{textwrap.indent(public_pem(key).decode(), " " * 16)}
      scan:
        maxAge: 24h
        onMissing: deny
        deny: {{CRITICAL: 0}}
"""


def signed_attested_image(registry: RegistryServer, key: ec.EllipticCurvePrivateKey,
                          repo: str) -> str:
    digest = signed_image(registry, key, repo)
    layer = attestation_layer(key, statement(digest, VULN_PREDICATE, vuln_predicate()),
                              predicate_type=VULN_PREDICATE)
    push_cosign_attestations(registry.url, repo, digest,
                             [(layer.payload, dict(layer.annotations))])
    return f"{registry.host}/{repo}:v1"


@dataclass
class Server:
    name: str
    process: subprocess.Popen[bytes]
    url: str
    audit_log: Path | None = None

    def stop(self) -> None:
        self.process.terminate()
        try:
            self.process.wait(timeout=15)
        except subprocess.TimeoutExpired:
            self.process.kill()
            self.process.wait()


@dataclass
class Bench:
    args: argparse.Namespace
    work: Path
    trust: ssl.SSLContext
    servers: list[Server] = field(default_factory=list)

    def wait_ready(self, server: Server, body: bytes) -> None:
        deadline = time.monotonic() + 60
        with httpx.Client(verify=self.trust, timeout=5) as client:
            while time.monotonic() < deadline:
                if server.process.poll() is not None:
                    err = server.process.stderr.read().decode() if server.process.stderr else ""
                    raise SystemExit(f"{server.name} exited: {err}")
                try:
                    client.post(f"{server.url}/validate", content=body,
                                headers={"content-type": "application/json"})
                    return
                except httpx.TransportError:
                    time.sleep(0.1)
        raise SystemExit(f"{server.name} did not start in 60 s")

    def start_floor(self, workers: int = 1) -> Server:
        (self.work / "floor_app.py").write_text(FLOOR_APP)
        port = free_port()
        certs = self.work / "certs"
        process = subprocess.Popen(
            [sys.executable, "-m", "uvicorn", "floor_app:app", "--host", "127.0.0.1",
             "--port", str(port), "--http", "httptools", "--loop", "uvloop",
             "--log-level", "warning", "--no-access-log", "--workers", str(workers),
             "--ssl-certfile", str(certs / "tls.crt"), "--ssl-keyfile", str(certs / "tls.key")],
            cwd=self.work, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE,
        )
        server = Server(f"floor-{workers}w", process, f"https://127.0.0.1:{port}")
        self.servers.append(server)
        return server

    def start_sealgate(self, name: str, policies: Path, registry_host: str,
                       workers: int = 1) -> Server:
        port = free_port()
        certs = self.work / "certs"
        audit = self.work / f"audit-{name}.log"
        env = {**os.environ, "SEALGATE_INSECURE_REGISTRIES": registry_host,
               "SEALGATE_AUDIT_LOG": str(audit), "SEALGATE_WORKERS": str(workers)}
        process = subprocess.Popen(
            [sys.executable, "-m", "webhook", "serve", "--host", "127.0.0.1",
             "--port", str(port), "--policies", str(policies), "--cert",
             str(certs / "tls.crt"), "--key", str(certs / "tls.key"), "--log-level", "warning"],
            env=env, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE,
        )
        server = Server(name, process, f"https://127.0.0.1:{port}", audit)
        self.servers.append(server)
        return server

    def answered(self, server: Server) -> int:
        """Admission requests the server says it answered (sum over workers)."""
        with httpx.Client(verify=self.trust, timeout=10) as client:
            text = client.get(f"{server.url}/metrics").text
        total = 0.0
        for line in text.splitlines():
            if line.startswith("sealgate_admission_requests_total{"):
                total += float(line.rsplit(" ", 1)[1])
        return int(total)

    def measure(self, server: Server, body_file: Path, connections: int) -> dict[str, Any]:
        """One wrk run; for sealgate, the audit log is checked against the answers."""
        lines_before = _line_count(server.audit_log) if server.audit_log else 0
        answered_before = self.answered(server) if server.audit_log else 0
        cpu_before = loadgen.cpu_seconds(server.process.pid)
        result = loadgen.run_wrk(server.url, body_file, connections=connections,
                                 seconds=self.args.duration)
        cpu = loadgen.cpu_seconds(server.process.pid) - cpu_before
        row: dict[str, Any] = {
            "rps": result.rps, "p50_ms": result.p50_ms, "p99_ms": result.p99_ms,
            "requests": result.requests, "non_2xx": result.non_2xx,
            "socket_errors": result.socket_errors,
            "cpu_ms_per_request": 1000 * cpu / max(1, result.requests),
            "rss_mib": loadgen.rss_mib(server.process.pid),
        }
        if server.audit_log is not None:
            time.sleep(0.2)  # requests wrk gave up on at its stop may still be finishing
            answered = self.answered(server) - answered_before
            new_lines = list(_read_lines(server.audit_log, lines_before))
            valid = sum(1 for line in new_lines if _valid_audit_line(line))
            row["audit"] = {"answered": answered, "lines": len(new_lines), "valid": valid,
                            "ok": valid == len(new_lines) == answered
                            and answered >= result.requests}
        return row


def _line_count(path: Path) -> int:
    if not path.exists():
        return 0
    with path.open("rb") as stream:
        return sum(1 for _ in stream)


def _read_lines(path: Path, skip: int) -> Iterator[bytes]:
    with path.open("rb") as stream:
        for number, line in enumerate(stream):
            if number >= skip:
                yield line


def _valid_audit_line(line: bytes) -> bool:
    if not line.endswith(b"\n"):
        return False
    try:
        record = json.loads(line)
    except ValueError:
        return False
    return isinstance(record, dict) and isinstance(record.get("uid"), str) and \
        record.get("decision") in ("allow", "warn", "deny")


def _mean(rows: list[dict[str, Any]], key: str) -> float:
    return statistics.fmean(row[key] for row in rows)


def warm_path(bench: Bench, floor: Server, hook: Server, body_file: Path) -> dict[str, Any]:
    table: dict[str, Any] = {}
    for connections in bench.args.connections:
        runs: dict[str, list[dict[str, Any]]] = {"floor": [], "sealgate": []}
        for _ in range(bench.args.rounds):
            for name, server in (("floor", floor), ("sealgate", hook)):
                runs[name].append(bench.measure(server, body_file, connections))
        summary: dict[str, Any] = {}
        for name, rows in runs.items():
            summary[name] = {key: _mean(rows, key) for key in
                             ("rps", "p50_ms", "p99_ms", "cpu_ms_per_request", "rss_mib")}
            summary[name]["non_2xx"] = sum(row["non_2xx"] for row in rows)
            summary[name]["socket_errors"] = sum(row["socket_errors"] for row in rows)
        audits = [row["audit"] for row in runs["sealgate"]]
        summary["audit"] = {
            "answered": sum(a["answered"] for a in audits),
            "lines": sum(a["lines"] for a in audits),
            "all_valid": all(a["ok"] for a in audits),
        }
        f, s = summary["floor"], summary["sealgate"]
        summary["ratio"] = {
            "throughput": s["rps"] / f["rps"], "p50": s["p50_ms"] / f["p50_ms"],
            "p99": s["p99_ms"] / f["p99_ms"],
            "cpu": s["cpu_ms_per_request"] / f["cpu_ms_per_request"],
        }
        table[f"c={connections}"] = summary
    return table


def workers_scaling(bench: Bench, one: Server, two: Server, floors: tuple[Server, Server],
                    body_file: Path) -> dict[str, Any]:
    """Two sealgate workers against one, and the same for the floor: wrk shares the two
    cores, so the floor's own ratio shows what two processes can reach on this machine."""
    servers = {"1 worker": one, "2 workers": two, "floor 1 worker": floors[0],
               "floor 2 workers": floors[1]}
    runs: dict[str, list[dict[str, Any]]] = {name: [] for name in servers}
    for _ in range(bench.args.rounds):
        for name, server in servers.items():
            runs[name].append(bench.measure(server, body_file, 64))
    result: dict[str, Any] = {
        name: {"rps": _mean(rows, "rps"), "p99_ms": _mean(rows, "p99_ms"),
               "audit_ok": all(r["audit"]["ok"] for r in rows if "audit" in r)}
        for name, rows in runs.items()}
    result["ratio"] = result["2 workers"]["rps"] / result["1 worker"]["rps"]
    result["floor_ratio"] = result["floor 2 workers"]["rps"] / result["floor 1 worker"]["rps"]
    return result


def check_goals(results: dict[str, Any]) -> dict[str, dict[str, Any]]:
    warm = results["warm"]
    measured: dict[str, float | None] = {
        "throughput c=16": warm.get("c=16", {}).get("ratio", {}).get("throughput"),
        "p99 c=64": warm.get("c=64", {}).get("ratio", {}).get("p99"),
        "p50 c=1": warm.get("c=1", {}).get("ratio", {}).get("p50"),
        "CPU per request": max((row["ratio"]["cpu"] for row in warm.values()), default=None),
        "2 workers / 1 worker": results.get("workers", {}).get("ratio"),
        "cold requests per image": results.get("cold", {}).get("requests"),
        "cold critical-path depth": results.get("cold", {}).get("depth"),
        "RSS with 10,000 digests cached (MiB)": results.get("memory", {}).get("rss_mib"),
    }
    goals: dict[str, dict[str, Any]] = {}
    for name, (op, target) in GOALS.items():
        value = measured.get(name)
        met = None if value is None else (value >= target if op == ">=" else value <= target)
        goals[name] = {"goal": f"{op} {target}", "measured": value, "met": met}
    return goals


def render(results: dict[str, Any]) -> str:
    lines = ["## Warm path: sealgate ÷ floor (same run, one worker each, wrk over TLS)", "",
             "| c | floor req/s | sealgate req/s | ratio | p50 floor / sealgate (ms) | "
             "p99 floor / sealgate (ms) | CPU/req floor / sealgate (ms) | CPU ratio | "
             "non-2xx | RSS floor / sealgate (MiB) | audit lines = answers |",
             "|---|---|---|---|---|---|---|---|---|---|---|"]
    for label, row in results["warm"].items():
        f, s, r = row["floor"], row["sealgate"], row["ratio"]
        lines.append(
            f"| {label[2:]} | {f['rps']:,.0f} | {s['rps']:,.0f} | {r['throughput']:.2f} | "
            f"{f['p50_ms']:.2f} / {s['p50_ms']:.2f} ({r['p50']:.2f}) | "
            f"{f['p99_ms']:.2f} / {s['p99_ms']:.2f} ({r['p99']:.2f}) | "
            f"{f['cpu_ms_per_request']:.3f} / {s['cpu_ms_per_request']:.3f} | {r['cpu']:.2f} | "
            f"{f['non_2xx']} / {s['non_2xx']} | {f['rss_mib']:.0f} / {s['rss_mib']:.0f} | "
            f"{row['audit']['lines']} = {row['audit']['answered']}: "
            f"{'ok' if row['audit']['all_valid'] else 'MISMATCH'} |")
    if "workers" in results:
        w = results["workers"]
        lines += ["", f"Two workers (c=64): {w['2 workers']['rps']:,.0f} req/s against "
                  f"{w['1 worker']['rps']:,.0f} for one: **{w['ratio']:.2f}x** (the floor, "
                  f"same run: {w['floor 2 workers']['rps']:,.0f} against "
                  f"{w['floor 1 worker']['rps']:,.0f}: {w['floor_ratio']:.2f}x; wrk shares the "
                  "cores)"]
    for section in ("cold", "fanin", "rollout", "memory", "verification"):
        if section in results:
            lines += ["", f"{section}: {json.dumps(results[section])}"]
    lines += ["", "| goal | target | measured | met |", "|---|---|---|---|"]
    for name, goal in results["goals"].items():
        value = goal["measured"]
        shown = "—" if value is None else f"{value:.2f}"
        met = "—" if goal["met"] is None else ("yes" if goal["met"] else "**no**")
        lines.append(f"| {name} | {goal['goal']} | {shown} | {met} |")
    return "\n".join(lines)


def main_run(args: argparse.Namespace) -> dict[str, Any]:
    work = Path(tempfile.mkdtemp(prefix="sealgate-bench-"))
    certs = work / "certs"
    generate_certificates(certs, service="sealgate", namespace="bench")
    trust = ssl.create_default_context(cafile=certs / "ca.crt")
    bench = Bench(args, work, trust)
    key = ec.generate_private_key(ec.SECP256R1())
    registry = RegistryServer()
    registry.start()
    results: dict[str, Any] = {"machine": {"cpus": os.cpu_count(),
                                           "python": sys.version.split()[0]},
                               "settings": {"duration_s": args.duration, "rounds": args.rounds,
                                            "connections": args.connections}}
    try:
        images = [signed_attested_image(registry, key, f"bench/app{i}") for i in range(3)]
        policies = work / "policies"
        policies.mkdir()
        (policies / "bench.yaml").write_text(policy_yaml(registry.host, key))
        body_file = work / "review.json"
        body = pod_review(images)
        body_file.write_bytes(body)
        results["settings"]["review_bytes"] = len(body)
        warmup = pod_review(images, uid="warmup")

        floor = bench.start_floor()
        hook = bench.start_sealgate("sealgate", policies, registry.host)
        for server in (floor, hook):
            bench.wait_ready(server, warmup)
            loadgen.run_wrk(server.url, body_file, connections=16, seconds=1)  # warm up
        results["warm"] = warm_path(bench, floor, hook, body_file)
        if not args.quick and not args.skip_workers:
            two = bench.start_sealgate("sealgate-2w", policies, registry.host, workers=2)
            floor_two = bench.start_floor(workers=2)
            for server in (two, floor_two):
                bench.wait_ready(server, warmup)
                loadgen.run_wrk(server.url, body_file, connections=16, seconds=1)
            results["workers"] = workers_scaling(bench, hook, two, (floor, floor_two), body_file)
            for server in (hook, two, floor, floor_two):
                server.stop()
            results.update(coldpath.measure_all(registry, key, quick=args.quick))
        else:
            results.update(coldpath.measure_all(registry, key, quick=args.quick))
    finally:
        for server in bench.servers:
            if server.process.poll() is None:
                server.stop()
        registry.stop()
    results["goals"] = check_goals(results)
    return results


def _connections(text: str) -> list[int]:
    return [int(part) for part in text.split(",") if part]


def main(argv: list[str] | None = None, *, out: Callable[[str], None] = print) -> int:
    parser = argparse.ArgumentParser(description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--duration", type=float, default=5.0, help="seconds per wrk run")
    parser.add_argument("--rounds", type=int, default=2, help="alternating rounds per setting")
    parser.add_argument("--connections", type=_connections, default=[1, 16, 64],
                        help="wrk concurrencies, comma-separated")
    parser.add_argument("--quick", action="store_true",
                        help="1 s runs, one round, no worker scaling (the test uses it)")
    parser.add_argument("--skip-workers", action="store_true",
                        help="leave out the two-worker run (to measure a build without it)")
    parser.add_argument("--json", type=Path, help="also write the results here")
    args = parser.parse_args(argv)
    if args.quick:
        args.duration, args.rounds = 1.0, 1
    results = main_run(args)
    if args.json is not None:
        args.json.write_text(json.dumps(results, indent=2))
    out(render(results))
    audits_ok = all(row["audit"]["all_valid"] for row in results["warm"].values())
    return 0 if audits_ok else 1


if __name__ == "__main__":
    sys.exit(main())
