"""A real Kubernetes API server for tests: etcd + ``kube-apiserver`` on loopback.

``KubeServer`` starts Debian's ``etcd`` and the API server from
``../shared/k8s/kube-apiserver.xz`` (decompressed into a temp dir) or from the
binary named by ``SEALGATE_TEST_KUBE_APISERVER``, on free loopback ports, with
a generated CA, serving certificate, service-account key pair and a static
token file (``admin`` in ``system:masters``). It writes a kubeconfig and stops
both processes, by their pids, on exit. Like envtest: no controllers, no
kubelet; everything the API server itself does (RBAC, CRDs, dry-run,
admission webhooks, watch with resourceVersion / 410 Gone) is real.
"""

from __future__ import annotations

import lzma
import os
import secrets
import shutil
import signal
import ssl
import subprocess
import tempfile
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import httpx
import trustme
import yaml
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import rsa

from tests.system import find_or_install, find_tool, free_port

REPO = Path(__file__).resolve().parent.parent
SHARED_APISERVER = REPO.parent / "shared" / "k8s" / "kube-apiserver.xz"
ENV_BINARY = "SEALGATE_TEST_KUBE_APISERVER"
MISSING_MESSAGE = (
    "needs a Kubernetes API server and etcd: set SEALGATE_TEST_KUBE_APISERVER to a "
    "kube-apiserver binary (or provide ../shared/k8s/kube-apiserver.xz) and "
    "apt-get install -y etcd-server"
)
_START_TIMEOUT = 90.0


def find_etcd() -> str | None:
    return find_tool("etcd")


def find_or_install_etcd() -> str | None:
    """Debian's etcd, installing ``etcd-server`` first when running as root."""
    return find_or_install("etcd", "etcd-server")


def apiserver_source() -> Path | None:
    """The binary from SEALGATE_TEST_KUBE_APISERVER, else the repository's shared .xz."""
    named = os.environ.get(ENV_BINARY)
    if named:
        path = Path(named)
        return path if path.is_file() else None
    return SHARED_APISERVER if SHARED_APISERVER.is_file() else None


def _materialise(source: Path, directory: Path) -> Path:
    if source.suffix != ".xz":
        return source
    target = directory / "kube-apiserver"
    with lzma.open(source) as packed, open(target, "wb") as out:
        shutil.copyfileobj(packed, out, 1 << 20)
    target.chmod(0o755)
    return target


class KubeServer:
    """etcd + kube-apiserver in a temp dir; ``kubeconfig`` names an admin context."""

    def __init__(self, *, apiserver: Path, etcd: str) -> None:
        self._source = apiserver
        self._etcd_binary = etcd
        self._root = Path(tempfile.mkdtemp(prefix="sealgate-kube-"))
        self.ca = trustme.CA()
        self.port = 0
        self.token = secrets.token_hex(16)
        self.kubeconfig = self._root / "kubeconfig"
        self._etcd: subprocess.Popen[bytes] | None = None
        self._apiserver: subprocess.Popen[bytes] | None = None
        self._apiserver_args: list[str] = []
        self._apiserver_binary: Path | None = None
        self._logs: list[Any] = []
        self.etcd_url = ""

    @property
    def url(self) -> str:
        return f"https://127.0.0.1:{self.port}"

    @property
    def ca_file(self) -> Path:
        return self._root / "ca.crt"

    def __enter__(self) -> KubeServer:
        try:
            self.start()
        except BaseException:
            self.stop()
            raise
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.stop()

    # ----------------------------------------------------------------- lifecycle

    def start(self) -> None:
        root = self._root
        self._apiserver_binary = _materialise(self._source, root)
        self.ca.cert_pem.write_to_path(str(self.ca_file))
        leaf = self.ca.issue_cert("127.0.0.1", "localhost", "kubernetes.default.svc")
        leaf.cert_chain_pems[0].write_to_path(str(root / "apiserver.crt"))
        leaf.private_key_pem.write_to_path(str(root / "apiserver.key"))
        key = rsa.generate_private_key(public_exponent=65537, key_size=2048)
        (root / "sa.key").write_bytes(key.private_bytes(
            serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
            serialization.NoEncryption()))
        (root / "sa.pub").write_bytes(key.public_key().public_bytes(
            serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo))
        (root / "tokens.csv").write_text(f'{self.token},admin,admin-uid,"system:masters"\n')
        etcd_port, peer_port = free_port(), free_port()
        self.etcd_url = f"http://127.0.0.1:{etcd_port}"
        self.port = free_port()
        # etcd reads ETCD_* variables as configuration: give it a clean environment.
        env = {k: v for k, v in os.environ.items() if not k.startswith("ETCD_")}
        peer = f"http://127.0.0.1:{peer_port}"
        etcd_log = open(root / "etcd.log", "wb")  # noqa: SIM115 - closed in stop()
        self._logs.append(etcd_log)
        self._etcd = subprocess.Popen(
            [self._etcd_binary, "--data-dir", str(root / "etcd"),
             "--listen-client-urls", f"http://127.0.0.1:{etcd_port}",
             "--advertise-client-urls", f"http://127.0.0.1:{etcd_port}",
             "--listen-peer-urls", peer, "--initial-advertise-peer-urls", peer,
             "--initial-cluster", f"default={peer}"],
            env=env, stdout=etcd_log, stderr=subprocess.STDOUT,
        )
        self._apiserver_args = [
            "--bind-address=127.0.0.1", "--advertise-address=127.0.0.1",
            f"--secure-port={self.port}", f"--etcd-servers=http://127.0.0.1:{etcd_port}",
            f"--tls-cert-file={root / 'apiserver.crt'}",
            f"--tls-private-key-file={root / 'apiserver.key'}",
            f"--client-ca-file={self.ca_file}", f"--token-auth-file={root / 'tokens.csv'}",
            "--authorization-mode=RBAC",
            "--service-account-issuer=https://kubernetes.default.svc.cluster.local",
            f"--service-account-key-file={root / 'sa.pub'}",
            f"--service-account-signing-key-file={root / 'sa.key'}",
            "--service-cluster-ip-range=10.0.0.0/24", "--endpoint-reconciler-type=none",
        ]
        self._launch_apiserver()
        self._write_kubeconfig()

    def _launch_apiserver(self) -> None:
        assert self._apiserver_binary is not None
        log = open(self._root / "apiserver.log", "ab")  # noqa: SIM115 - closed in stop()
        self._logs.append(log)
        self._apiserver = subprocess.Popen(
            [str(self._apiserver_binary), *self._apiserver_args],
            stdout=log, stderr=subprocess.STDOUT,
        )
        self._wait_ready()

    def _wait_ready(self) -> None:
        deadline = time.monotonic() + _START_TIMEOUT
        last = ""
        while time.monotonic() < deadline:
            for name, proc in (("etcd", self._etcd), ("kube-apiserver", self._apiserver)):
                if proc is not None and proc.poll() is not None:
                    raise RuntimeError(f"{name} exited with {proc.returncode}: {self.log_tail()}")
            try:
                answer = httpx.get(f"{self.url}/readyz", verify=self.ssl_context(),
                                   headers=self.auth_headers, timeout=2)
                if answer.status_code == 200 and answer.text == "ok":
                    return
                last = f"HTTP {answer.status_code}"
            except httpx.HTTPError as exc:
                last = str(exc)
            time.sleep(0.25)
        raise RuntimeError(f"kube-apiserver not ready after {_START_TIMEOUT}s ({last})")

    def restart_apiserver(self) -> None:
        """Stop the API server (etcd keeps its data) and start it again on the same port."""
        self._stop(self._apiserver)
        self._launch_apiserver()

    def stop_apiserver(self) -> None:
        self._stop(self._apiserver)

    def start_apiserver(self) -> None:
        self._launch_apiserver()

    def etcd(self, call: str, body: dict[str, Any]) -> dict[str, Any]:
        """etcd's v3 JSON gateway (``kv/put``, ``kv/deleterange``, ``kv/compaction``)."""
        answer = httpx.post(f"{self.etcd_url}/v3/{call}", json=body, timeout=10)
        answer.raise_for_status()
        result: dict[str, Any] = answer.json()
        return result

    def stop(self) -> None:
        self._stop(self._apiserver)
        self._stop(self._etcd)
        for handle in self._logs:
            handle.close()
        self._logs.clear()
        shutil.rmtree(self._root, ignore_errors=True)

    @staticmethod
    def _stop(proc: subprocess.Popen[bytes] | None) -> None:
        if proc is None or proc.poll() is not None:
            return
        proc.send_signal(signal.SIGTERM)
        try:
            proc.wait(timeout=15)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait(timeout=5)

    def log_tail(self, lines: int = 20) -> str:
        path = self._root / "apiserver.log"
        if not path.exists():
            return ""
        return "\n".join(path.read_text(errors="replace").splitlines()[-lines:])

    # ----------------------------------------------------------------- clients

    def ssl_context(self) -> ssl.SSLContext:
        return ssl.create_default_context(cafile=str(self.ca_file))

    @property
    def auth_headers(self) -> dict[str, str]:
        return {"Authorization": f"Bearer {self.token}"}

    def _write_kubeconfig(self) -> None:
        config = {
            "apiVersion": "v1", "kind": "Config", "current-context": "test",
            "clusters": [{"name": "test", "cluster": {
                "server": self.url, "certificate-authority": str(self.ca_file)}}],
            "users": [{"name": "admin", "user": {"token": self.token}}],
            "contexts": [{"name": "test", "context": {"cluster": "test", "user": "admin"}}],
        }
        self.kubeconfig.write_text(yaml.safe_dump(config))

    def kubectl(
        self, *args: str, input: str | None = None, check: bool = True, timeout: float = 60
    ) -> subprocess.CompletedProcess[str]:
        """Run kubectl against this server; ``check``: raise with its stderr on failure."""
        kubectl = shutil.which("kubectl") or "kubectl"
        result = subprocess.run(
            [kubectl, "--kubeconfig", str(self.kubeconfig), *args],
            input=input, capture_output=True, text=True, timeout=timeout, check=False,
        )
        if check and result.returncode != 0:
            raise AssertionError(
                f"kubectl {' '.join(args)} failed ({result.returncode}): {result.stderr}"
            )
        return result

    def apply(self, documents: Sequence[dict[str, Any]] | dict[str, Any]) -> str:
        docs = [documents] if isinstance(documents, dict) else list(documents)
        return self.kubectl("apply", "-f", "-", input=yaml.safe_dump_all(docs)).stdout
