"""`sealgate serve --workers 2` over real HTTPS: one port, whole audit lines, summed metrics,
SIGHUP to every worker, SIGTERM drains them all (SPEC §9 "Serving")."""

from __future__ import annotations

import concurrent.futures
import json
import signal
import ssl
import subprocess
import textwrap
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx
import pytest
from cryptography.hazmat.primitives.asymmetric import ec

from tests.admission_helpers import pod_review, signed_image
from tests.registry_server import RegistryServer
from tests.served import start_served, wait_ready
from tests.signing import public_pem
from webhook.auditchain import read_log_lines, verify_lines


@dataclass
class Workers:
    url: str
    trust: ssl.SSLContext
    audit_log: Path
    policies: Path
    process: subprocess.Popen[bytes]
    image: str

    def post(self, body: dict[str, Any]) -> httpx.Response:
        # a connection per request, so the kernel spreads them over the workers
        with httpx.Client(verify=self.trust, timeout=15) as client:
            return client.post(f"{self.url}/validate", json=body)

    def many(self, count: int, image: str | None = None) -> list[httpx.Response]:
        with concurrent.futures.ThreadPoolExecutor(8) as pool:
            return list(pool.map(lambda _: self.post(pod_review(image or self.image)),
                                 range(count)))

    def chains(self) -> set[str]:
        return {json.loads(line)["chain"] for line in self.audit_log.read_text().splitlines()}


POLICY = """\
apiVersion: sealgate.dev/v1alpha1
kind: ImagePolicy
metadata: {{name: workers}}
spec:
  namespaces: {{match: ["prod"]}}
  mode: {mode}
  rules:
    - name: local
      images: ["{host}/**"]
      signatures:
        authorities:
          - name: key
            key:
              tlog: "off"
              publicKey: |
{pem}
"""


@pytest.fixture
def workers(tmp_path: Path, registry: RegistryServer) -> Iterator[Workers]:
    key = ec.generate_private_key(ec.SECP256R1())
    digest = signed_image(registry, key, "team/app")
    assert digest
    policies = tmp_path / "policies"
    policies.mkdir()
    pem = textwrap.indent(public_pem(key).decode(), " " * 16)
    (policies / "p.yaml").write_text(POLICY.format(mode="enforce", host=registry.host, pem=pem))
    served = start_served(
        tmp_path, policies,
        {"SEALGATE_INSECURE_REGISTRIES": registry.host, "SEALGATE_RELOAD_INTERVAL": "0.2",
         "PROMETHEUS_MULTIPROC_DIR": ""},
        args=("--workers", "2", "--log-level", "warning"), wait=False)
    try:
        wait_ready(served, timeout=30)
        yield Workers(served.url, served.context(), served.audit_log, policies,
                      served.process, f"{registry.host}/team/app:v1")
    finally:
        if served.process.poll() is None:
            try:
                served.terminate()
            except subprocess.TimeoutExpired:
                served.process.kill()
                served.process.wait()


def spread(workers: Workers, minimum: int = 60, limit: int = 600) -> list[httpx.Response]:
    """Requests until both workers have answered some (the kernel decides who accepts)."""
    answers: list[httpx.Response] = []
    while len(answers) < minimum or (len(workers.chains()) < 2 and len(answers) < limit):
        answers += workers.many(20)
    return answers


def test_two_workers_share_the_port_the_log_and_the_metrics(workers: Workers) -> None:
    answers = spread(workers)
    assert all(a.status_code == 200 and a.json()["response"]["allowed"] for a in answers)
    assert len(workers.chains()) == 2, "both workers answered and each keeps its own chain"
    lines = workers.audit_log.read_bytes().splitlines()
    assert len(lines) == len(answers)  # one whole line per answer, none torn or interleaved
    assert verify_lines(read_log_lines([workers.audit_log])).intact
    metrics = ""
    for _ in range(4):  # whichever worker answers /metrics reports the sum over both
        with httpx.Client(verify=workers.trust, timeout=10) as client:
            metrics = client.get(f"{workers.url}/metrics").text
        total = sum(float(line.rsplit(" ", 1)[1]) for line in metrics.splitlines()
                    if line.startswith("sealgate_admission_requests_total{"))
        assert total == len(answers)
    assert metrics.count("sealgate_audit_last_seq{") == 2


def test_each_worker_applies_a_policy_edit_and_sighup_reopens_every_audit_file(
    workers: Workers, tmp_path: Path
) -> None:
    spread(workers)
    rotated = workers.audit_log.with_suffix(".log.1")
    workers.audit_log.rename(rotated)
    (workers.policies / "p.yaml").write_text(
        (workers.policies / "p.yaml").read_text().replace("mode: enforce", "mode: warn"))
    workers.process.send_signal(signal.SIGHUP)
    time.sleep(1.0)
    unsigned = workers.image.replace("team/app:v1", "team/unsigned:v1")
    answers = spread(workers)
    answers += workers.many(20, image=unsigned)
    # every worker writes to the new file, and every worker has the edit (warn: allowed)
    assert workers.audit_log.exists() and len(workers.chains()) == 2
    warned = [a for a in answers[-20:]]
    assert all(a.json()["response"]["allowed"] for a in warned)
    assert all(a.json()["response"].get("warnings") for a in warned)
    # the chains continue from the rotated file into the new one
    assert verify_lines(read_log_lines([rotated, workers.audit_log])).intact


def test_sigterm_drains_every_worker(workers: Workers) -> None:
    spread(workers, minimum=20)
    children = [int(pid) for pid in Path(f"/proc/{workers.process.pid}/task/"
                                         f"{workers.process.pid}/children").read_text().split()]
    assert len(children) >= 2
    workers.process.send_signal(signal.SIGTERM)
    assert workers.process.wait(timeout=20) == 0

    def running(pid: int) -> bool:
        try:
            return "zombie" not in Path(f"/proc/{pid}/status").read_text()
        except OSError:
            return False

    # multiprocessing's resource tracker (also a child) leaves once the parent is gone
    deadline = time.monotonic() + 10
    while any(running(pid) for pid in children) and time.monotonic() < deadline:
        time.sleep(0.1)
    assert not [pid for pid in children if running(pid)]
