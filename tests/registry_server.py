"""A real registry for tests: Debian's ``docker-registry`` (CNCF distribution 2.8).

``RegistryServer`` runs one on a free loopback port (plain HTTP by default;
optionally TLS from a ``trustme`` CA and htpasswd basic auth), and the
``push_*`` functions put content into it through the registry HTTP API the
way ``docker push`` / ``cosign sign`` lay it out. Helpers use a sync httpx
client: they run in fixtures and test bodies, not on the event loop's hot path.
"""

from __future__ import annotations

import ctypes
import ctypes.util
import gzip
import hashlib
import io
import json
import secrets
import ssl
import subprocess
import tarfile
import tempfile
import time
from collections.abc import Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

import httpx

from tests.system import find_or_install, find_tool, free_port

if TYPE_CHECKING:
    import trustme

OCI_MANIFEST = "application/vnd.oci.image.manifest.v1+json"
OCI_INDEX = "application/vnd.oci.image.index.v1+json"
OCI_CONFIG = "application/vnd.oci.image.config.v1+json"
OCI_LAYER = "application/vnd.oci.image.layer.v1.tar+gzip"
DOCKER_MANIFEST = "application/vnd.docker.distribution.manifest.v2+json"
DOCKER_CONFIG = "application/vnd.docker.container.image.v1+json"
DOCKER_LAYER = "application/vnd.docker.image.rootfs.diff.tar.gzip"
COSIGN_SIMPLE_SIGNING = "application/vnd.dev.cosign.simplesigning.v1+json"

MISSING_MESSAGE = "needs Debian's docker-registry: apt-get install -y docker-registry"
_DEFAULT_BINARY = "/usr/bin/docker-registry"
_START_TIMEOUT = 15.0

Verify = ssl.SSLContext | bool
Auth = tuple[str, str] | None


# --------------------------------------------------------------------------- the binary


def find_registry_binary() -> str | None:
    """Path of ``docker-registry`` if installed."""
    return find_tool("docker-registry")


def find_or_install_registry_binary() -> str | None:
    """``docker-registry``, installing Debian's package first when running as root."""
    return find_or_install("docker-registry", "docker-registry")


# --------------------------------------------------------------------------- htpasswd


def bcrypt_hash(password: str) -> str:
    """A bcrypt hash for an htpasswd line (distribution accepts only bcrypt).

    Uses the ``bcrypt`` package when installed, else the system's libcrypt
    (libxcrypt, which Debian ships and which implements ``$2b$``) through
    ctypes: no extra dependency, and not the deprecated ``crypt`` module.
    """
    try:
        import bcrypt  # type: ignore[import-not-found, unused-ignore]
    except ImportError:
        pass
    else:
        hashed: bytes = bcrypt.hashpw(password.encode(), bcrypt.gensalt(rounds=5))
        return hashed.decode()
    name = ctypes.util.find_library("crypt")
    if name is None:
        raise RuntimeError("bcrypt hashing needs the 'bcrypt' package or libcrypt")
    lib = ctypes.CDLL(name)
    lib.crypt_gensalt.restype = ctypes.c_char_p
    lib.crypt_gensalt.argtypes = [ctypes.c_char_p, ctypes.c_ulong, ctypes.c_char_p, ctypes.c_int]
    lib.crypt.restype = ctypes.c_char_p
    lib.crypt.argtypes = [ctypes.c_char_p, ctypes.c_char_p]
    setting = lib.crypt_gensalt(b"$2b$", 5, None, 0)
    result = lib.crypt(password.encode(), setting) if setting else None
    if not result or not result.startswith(b"$2"):
        raise RuntimeError("this system's libcrypt cannot make bcrypt hashes")
    return str(result.decode())


# --------------------------------------------------------------------------- the server


class RegistryServer:
    """``docker-registry serve`` on ``127.0.0.1:<free port>`` with storage in a temp dir.

    ``tls``: a ``trustme.CA`` to serve HTTPS with a certificate it issues for
    127.0.0.1 (clients verify with ``server.ssl_context()``).
    ``users``: ``{username: password}`` to require htpasswd basic auth.
    """

    def __init__(
        self,
        *,
        binary: str | None = None,
        tls: trustme.CA | None = None,
        users: dict[str, str] | None = None,
        port: int | None = None,
    ) -> None:
        self.binary = binary or find_registry_binary() or _DEFAULT_BINARY
        self.tls = tls
        self.users = dict(users or {})
        self.port = 0
        self._fixed_port = port  # None: a free port (tests); `make run` asks for 5000
        self._tmp: tempfile.TemporaryDirectory[str] | None = None
        self._process: subprocess.Popen[bytes] | None = None
        self._log: io.BufferedWriter | None = None

    @property
    def host(self) -> str:
        return f"127.0.0.1:{self.port}"

    @property
    def url(self) -> str:
        return f"{'https' if self.tls else 'http'}://{self.host}"

    @property
    def auth(self) -> Auth:
        """Credentials of the first user (for the push helpers), or None."""
        return next(iter(self.users.items()), None)

    def ssl_context(self) -> ssl.SSLContext:
        """A client context trusting this server's CA (``True``-like default without TLS)."""
        context = ssl.create_default_context()
        if self.tls is not None:
            self.tls.configure_trust(context)
        return context

    @property
    def verify(self) -> Verify:
        return self.ssl_context() if self.tls is not None else True

    def __enter__(self) -> RegistryServer:
        self.start()
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.stop()

    def start(self) -> None:
        if self._process is not None:
            raise RuntimeError("registry already started")
        self._tmp = tempfile.TemporaryDirectory(prefix="sealgate-registry-")
        try:
            for attempt in range(3):  # a free port can be taken between probe and bind
                self.port = self._fixed_port or free_port()
                config = self._write_config(Path(self._tmp.name))
                if self._launch(config, last=attempt == 2):
                    return
        except BaseException:
            self.stop()
            raise

    def stop(self) -> None:
        process, self._process = self._process, None
        if process is not None:
            process.terminate()
            try:
                process.wait(timeout=10)
            except subprocess.TimeoutExpired:
                process.kill()
                process.wait(timeout=10)
        if self._log is not None:
            self._log.close()
            self._log = None
        if self._tmp is not None:
            self._tmp.cleanup()
            self._tmp = None

    def _write_config(self, root: Path) -> Path:
        storage = root / "storage"
        storage.mkdir(exist_ok=True)
        lines = [
            "version: 0.1",
            "log:",
            "  level: warn",
            "  accesslog:",
            "    disabled: true",
            "storage:",
            "  filesystem:",
            f"    rootdirectory: {json.dumps(str(storage))}",
            "  delete:",
            "    enabled: true",
            "  redirect:",
            "    disable: true",
            "http:",
            f"  addr: 127.0.0.1:{self.port}",
            f"  secret: {secrets.token_hex(16)}",
        ]
        if self.tls is not None:
            cert = self.tls.issue_cert("127.0.0.1", "localhost")
            cert.cert_chain_pems[0].write_to_path(str(root / "tls.crt"))
            for pem in cert.cert_chain_pems[1:]:
                pem.write_to_path(str(root / "tls.crt"), append=True)
            cert.private_key_pem.write_to_path(str(root / "tls.key"))
            lines += [
                "  tls:",
                f"    certificate: {json.dumps(str(root / 'tls.crt'))}",
                f"    key: {json.dumps(str(root / 'tls.key'))}",
            ]
        if self.users:
            htpasswd = root / "htpasswd"
            htpasswd.write_text("".join(
                f"{user}:{bcrypt_hash(password)}\n" for user, password in self.users.items()
            ))
            lines += [
                "auth:",
                "  htpasswd:",
                "    realm: sealgate-test",
                f"    path: {json.dumps(str(htpasswd))}",
            ]
        config = root / "config.yml"
        config.write_text("\n".join(lines) + "\n")
        return config

    def _launch(self, config: Path, *, last: bool) -> bool:
        assert self._tmp is not None
        log_path = Path(self._tmp.name) / "registry.log"
        if self._log is not None:
            self._log.close()
        self._log = open(log_path, "wb")  # noqa: SIM115 - lives as long as the process
        self._process = subprocess.Popen(
            [self.binary, "serve", str(config)],
            stdin=subprocess.DEVNULL, stdout=self._log, stderr=subprocess.STDOUT,
        )
        deadline = time.monotonic() + _START_TIMEOUT
        with httpx.Client(verify=self.verify, timeout=2.0) as client:
            while time.monotonic() < deadline:
                code = self._process.poll()
                if code is not None:
                    output = log_path.read_text(errors="replace")
                    self._process = None
                    if not last and "address already in use" in output:
                        return False
                    raise RuntimeError(
                        f"docker-registry exited with status {code} while starting:\n{output}"
                    )
                try:
                    response = client.get(f"{self.url}/v2/")
                except httpx.TransportError:
                    time.sleep(0.05)
                    continue
                # With htpasswd auth, an anonymous /v2/ answers 401: up all the same.
                if response.status_code == 200 or (self.users and response.status_code == 401):
                    return True
                time.sleep(0.05)
        output = log_path.read_text(errors="replace")
        raise RuntimeError(
            f"docker-registry did not answer GET /v2/ within {_START_TIMEOUT:.0f}s:\n{output}"
        )


# --------------------------------------------------------------------------- pushing


def sha256_digest(data: bytes) -> str:
    return "sha256:" + hashlib.sha256(data).hexdigest()


def _client(url: str, auth: Auth, verify: Verify) -> httpx.Client:
    return httpx.Client(base_url=url, auth=auth, verify=verify, timeout=30.0)


def _check(response: httpx.Response, expected: int, what: str) -> None:
    if response.status_code != expected:
        raise RuntimeError(
            f"{what}: expected HTTP {expected}, got {response.status_code}: {response.text}"
        )


def push_blob(url: str, repo: str, data: bytes, *, auth: Auth = None,
              verify: Verify = True) -> str:
    """Monolithic upload (POST to start, PUT with ``?digest=``); returns the digest."""
    digest = sha256_digest(data)
    with _client(url, auth, verify) as client:
        started = client.post(f"/v2/{repo}/blobs/uploads/")
        _check(started, 202, f"starting a blob upload to {repo}")
        # Location carries the upload state in its query: add the digest, keep the rest.
        location = httpx.URL(url).join(started.headers["location"])
        location = location.copy_merge_params({"digest": digest})
        done = client.put(location, content=data,
                          headers={"content-type": "application/octet-stream"})
        _check(done, 201, f"uploading blob {digest} to {repo}")
    return digest


def push_manifest(url: str, repo: str, reference: str, body: bytes, media_type: str, *,
                  auth: Auth = None, verify: Verify = True) -> str:
    """PUT a manifest at a tag (or its digest); returns its digest."""
    digest = sha256_digest(body)
    with _client(url, auth, verify) as client:
        response = client.put(f"/v2/{repo}/manifests/{reference}", content=body,
                              headers={"content-type": media_type})
        _check(response, 201, f"pushing manifest {repo}:{reference}")
    sent = response.headers.get("docker-content-digest")
    if sent is not None and sent != digest:
        raise RuntimeError(f"registry says {sent} for a manifest that hashes to {digest}")
    return digest


def _canonical(document: dict[str, Any]) -> bytes:
    return json.dumps(document, separators=(",", ":"), sort_keys=True).encode()


def _layer_tarball() -> tuple[bytes, bytes]:
    """(gzip, tar) of a one-file layer with random content: every image is unique."""
    content = secrets.token_bytes(64)
    raw = io.BytesIO()
    with tarfile.open(fileobj=raw, mode="w") as tar:
        info = tarfile.TarInfo("hello.txt")
        info.size = len(content)
        info.mtime = 0
        tar.addfile(info, io.BytesIO(content))
    tar_bytes = raw.getvalue()
    return gzip.compress(tar_bytes, mtime=0), tar_bytes


def push_image(url: str, repo: str, tag: str, *, docker: bool = False,
               architecture: str = "amd64", auth: Auth = None,
               verify: Verify = True) -> tuple[str, bytes]:
    """A small random single-layer image tagged ``tag``; returns (manifest digest, manifest).

    OCI media types by default; ``docker=True`` for a Docker v2 (schema 2) manifest.
    """
    layer, tar_bytes = _layer_tarball()
    config = _canonical({
        "architecture": architecture,
        "os": "linux",
        "config": {"Cmd": ["/hello.txt"]},
        "rootfs": {"type": "layers", "diff_ids": [sha256_digest(tar_bytes)]},
    })
    layer_digest = push_blob(url, repo, layer, auth=auth, verify=verify)
    config_digest = push_blob(url, repo, config, auth=auth, verify=verify)
    media_type = DOCKER_MANIFEST if docker else OCI_MANIFEST
    manifest = _canonical({
        "schemaVersion": 2,
        "mediaType": media_type,
        "config": {"mediaType": DOCKER_CONFIG if docker else OCI_CONFIG,
                   "digest": config_digest, "size": len(config)},
        "layers": [{"mediaType": DOCKER_LAYER if docker else OCI_LAYER,
                    "digest": layer_digest, "size": len(layer)}],
    })
    digest = push_manifest(url, repo, tag, manifest, media_type, auth=auth, verify=verify)
    return digest, manifest


_PLATFORMS = ("amd64", "arm64", "ppc64le", "s390x", "riscv64")


def push_index(url: str, repo: str, tag: str, manifest_digests: Sequence[str], *,
               auth: Auth = None, verify: Verify = True) -> str:
    """An OCI index over manifests already in ``repo`` (platforms assigned in order)."""
    entries = []
    with _client(url, auth, verify) as client:
        for position, digest in enumerate(manifest_digests):
            response = client.get(f"/v2/{repo}/manifests/{digest}", headers={
                "accept": f"{OCI_MANIFEST}, {DOCKER_MANIFEST}"})
            _check(response, 200, f"reading manifest {repo}@{digest}")
            media_type = response.headers["content-type"].split(";")[0]
            entries.append({
                "mediaType": media_type,
                "digest": digest,
                "size": len(response.content),
                "platform": {"architecture": _PLATFORMS[position % len(_PLATFORMS)],
                             "os": "linux"},
            })
    index = _canonical({"schemaVersion": 2, "mediaType": OCI_INDEX, "manifests": entries})
    return push_manifest(url, repo, tag, index, OCI_INDEX, auth=auth, verify=verify)


def cosign_signature_tag(image_digest: str) -> str:
    """cosign's legacy tag for an image's signatures: ``sha256-<hex>.sig``."""
    algorithm, _, encoded = image_digest.partition(":")
    return f"{algorithm}-{encoded}.sig"


def push_cosign_signature(url: str, repo: str, image_digest: str,
                          layers: Sequence[tuple[bytes, dict[str, str]]], *,
                          auth: Auth = None, verify: Verify = True) -> str:
    """cosign's ``.sig`` image: one simple-signing layer per (payload, annotations).

    Empty ``{}`` OCI config, layers annotated as cosign does
    (``dev.cosignproject.cosign/signature`` etc.), tagged ``sha256-<hex>.sig``.
    Replaces any signature image already there (cosign appends; tests say what they mean).
    """
    config = b"{}"
    config_digest = push_blob(url, repo, config, auth=auth, verify=verify)
    descriptors = []
    for payload, layer_annotations in layers:
        digest = push_blob(url, repo, payload, auth=auth, verify=verify)
        descriptors.append({"mediaType": COSIGN_SIMPLE_SIGNING, "digest": digest,
                            "size": len(payload), "annotations": dict(layer_annotations)})
    manifest = _canonical({
        "schemaVersion": 2,
        "mediaType": OCI_MANIFEST,
        "config": {"mediaType": OCI_CONFIG, "digest": config_digest, "size": len(config)},
        "layers": descriptors,
    })
    return push_manifest(url, repo, cosign_signature_tag(image_digest), manifest, OCI_MANIFEST,
                         auth=auth, verify=verify)


# --------------------------------------------------------------------------- OCI 1.1 artifacts

OCI_EMPTY = "application/vnd.oci.empty.v1+json"
DSSE_ENVELOPE = "application/vnd.dsse.envelope.v1+json"
SIGSTORE_BUNDLE_V03 = "application/vnd.dev.sigstore.bundle.v0.3+json"


def manifest_descriptor(url: str, repo: str, digest: str, *, auth: Auth = None,
                        verify: Verify = True) -> dict[str, Any]:
    """``{mediaType, digest, size}`` of a manifest already in ``repo`` (for ``subject``)."""
    with _client(url, auth, verify) as client:
        response = client.get(f"/v2/{repo}/manifests/{digest}", headers={
            "accept": f"{OCI_MANIFEST}, {OCI_INDEX}, {DOCKER_MANIFEST}"})
        _check(response, 200, f"reading manifest {repo}@{digest}")
    return {"mediaType": response.headers["content-type"].split(";")[0].strip(),
            "digest": digest, "size": len(response.content)}


def push_artifact(url: str, repo: str, *, artifact_type: str,
                  layers: Sequence[tuple[str, bytes]], subject: dict[str, Any] | None = None,
                  annotations: dict[str, str] | None = None, tag: str | None = None,
                  auth: Auth = None, verify: Verify = True) -> tuple[str, bytes]:
    """An OCI 1.1 artifact manifest (empty config, ``artifactType``, optional ``subject``),
    as ``cosign`` v3 attaches a bundle; pushed by digest unless ``tag``.

    Returns (manifest digest, manifest bytes).
    """
    config = b"{}"
    push_blob(url, repo, config, auth=auth, verify=verify)
    descriptors = []
    for media_type, data in layers:
        digest = push_blob(url, repo, data, auth=auth, verify=verify)
        descriptors.append({"mediaType": media_type, "digest": digest, "size": len(data)})
    document: dict[str, Any] = {
        "schemaVersion": 2,
        "mediaType": OCI_MANIFEST,
        "artifactType": artifact_type,
        "config": {"mediaType": OCI_EMPTY, "digest": sha256_digest(config), "size": 2},
        "layers": descriptors,
    }
    if subject is not None:
        document["subject"] = subject
    if annotations:
        document["annotations"] = dict(annotations)
    manifest = _canonical(document)
    digest = push_manifest(url, repo, tag or sha256_digest(manifest), manifest, OCI_MANIFEST,
                           auth=auth, verify=verify)
    return digest, manifest


def referrers_tag(subject_digest: str) -> str:
    """The referrers tag schema's tag for a subject: ``sha256-<hex>``."""
    algorithm, _, encoded = subject_digest.partition(":")
    return f"{algorithm}-{encoded}"


def push_referrers_tag_index(url: str, repo: str, subject_digest: str,
                             referrers: Sequence[tuple[str, bytes]], *,
                             annotations: Sequence[dict[str, str] | None] = (),
                             auth: Auth = None, verify: Verify = True) -> str:
    """The referrers tag schema (OCI 1.1 distribution spec): an index tagged ``sha256-<hex>``
    listing each referrer ``(digest, manifest bytes)`` with its ``artifactType`` and
    ``annotations`` (taken from the manifest unless given), as a client does for a registry
    without the referrers API. Replaces any index already there."""
    entries = []
    for position, (digest, manifest) in enumerate(referrers):
        document = json.loads(manifest)
        entry: dict[str, Any] = {"mediaType": document.get("mediaType", OCI_MANIFEST),
                                 "digest": digest, "size": len(manifest)}
        artifact_type = document.get("artifactType") or document["config"]["mediaType"]
        entry["artifactType"] = artifact_type
        given = annotations[position] if position < len(annotations) else None
        chosen = given if given is not None else document.get("annotations")
        if chosen:
            entry["annotations"] = chosen
        entries.append(entry)
    index = _canonical({"schemaVersion": 2, "mediaType": OCI_INDEX, "manifests": entries})
    return push_manifest(url, repo, referrers_tag(subject_digest), index, OCI_INDEX,
                         auth=auth, verify=verify)


def cosign_attestation_tag(image_digest: str) -> str:
    """cosign's legacy tag for an image's attestations: ``sha256-<hex>.att``."""
    return referrers_tag(image_digest) + ".att"


def push_cosign_attestations(url: str, repo: str, image_digest: str,
                             layers: Sequence[tuple[bytes, dict[str, str]]], *,
                             auth: Auth = None, verify: Verify = True) -> str:
    """cosign's legacy ``.att`` image: one DSSE-envelope layer per (envelope, annotations),
    tagged ``sha256-<hex>.att`` (replacing what is there)."""
    config = b"{}"
    config_digest = push_blob(url, repo, config, auth=auth, verify=verify)
    descriptors = []
    for envelope, layer_annotations in layers:
        digest = push_blob(url, repo, envelope, auth=auth, verify=verify)
        descriptors.append({"mediaType": DSSE_ENVELOPE, "digest": digest,
                            "size": len(envelope), "annotations": dict(layer_annotations)})
    manifest = _canonical({
        "schemaVersion": 2,
        "mediaType": OCI_MANIFEST,
        "config": {"mediaType": OCI_CONFIG, "digest": config_digest, "size": len(config)},
        "layers": descriptors,
    })
    return push_manifest(url, repo, cosign_attestation_tag(image_digest), manifest,
                         OCI_MANIFEST, auth=auth, verify=verify)
