"""`make run`: dev certificates, a demo registry with a signed and an unsigned image, the webhook.

SPEC §8 "Local run": serves policies/ on https://127.0.0.1:8443 with certificates
from `sealgate certs` in certs/; when Debian's docker-registry is available it
also starts a demo registry on 127.0.0.1:5000 and pushes
127.0.0.1:5000/demo/hello:signed (signed with certs/demo-cosign.key) and
127.0.0.1:5000/demo/hello:unsigned.
"""

from __future__ import annotations

import argparse
import os
import signal
import subprocess
import sys
from pathlib import Path

from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))

from tests.registry_server import (  # noqa: E402 - after the path set-up
    RegistryServer,
    find_registry_binary,
    push_cosign_signature,
    push_image,
)
from tests.signing import cosign_layer, private_pem, public_pem  # noqa: E402
from webhook.certs import generate_certificates  # noqa: E402

CERTS = REPO / "certs"
DEMO_REGISTRY_PORT = 5000


def ensure_certificates() -> None:
    if not (CERTS / "tls.crt").exists() or not (CERTS / "tls.key").exists():
        generate_certificates(CERTS, service="sealgate", namespace="sealgate")
        print(f"wrote dev certificates to {CERTS}/ (trust {CERTS}/ca.crt)")


def ensure_demo_key() -> ec.EllipticCurvePrivateKey:
    key_path, pub_path = CERTS / "demo-cosign.key", CERTS / "demo-cosign.pub"
    if key_path.exists() and pub_path.exists():
        key = serialization.load_pem_private_key(key_path.read_bytes(), password=None)
        assert isinstance(key, ec.EllipticCurvePrivateKey)
        return key
    key = ec.generate_private_key(ec.SECP256R1())
    CERTS.mkdir(exist_ok=True)
    fd = os.open(key_path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "wb") as out:
        out.write(private_pem(key))
    pub_path.write_bytes(public_pem(key))
    print(f"wrote demo cosign key pair {key_path} / {pub_path}")
    return key


def start_demo_registry(key: ec.EllipticCurvePrivateKey) -> RegistryServer | None:
    if find_registry_binary() is None:
        print("docker-registry is not installed: no demo registry "
              "(install it with: sudo apt-get install -y docker-registry)")
        return None
    registry = RegistryServer(port=DEMO_REGISTRY_PORT)
    try:
        registry.start()
    except Exception as exc:  # port 5000 taken, or the binary failed
        print(f"demo registry not started: {exc}")
        return None
    signed, _ = push_image(registry.url, "demo/hello", "signed")
    push_cosign_signature(registry.url, "demo/hello", signed,
                          [cosign_layer(key, f"{registry.host}/demo/hello", signed)])
    unsigned, _ = push_image(registry.url, "demo/hello", "unsigned")
    print(f"demo registry on {registry.url}:")
    print(f"  {registry.host}/demo/hello:signed    {signed}  (signed by certs/demo-cosign.key)")
    print(f"  {registry.host}/demo/hello:unsigned  {unsigned}")
    return registry


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", default="8443")
    args = parser.parse_args()
    ensure_certificates()
    key = ensure_demo_key()
    registry = start_demo_registry(key)
    env = dict(os.environ)
    insecure = [v for v in env.get("SEALGATE_INSECURE_REGISTRIES", "").split(",") if v]
    env["SEALGATE_INSECURE_REGISTRIES"] = ",".join([*insecure, f"127.0.0.1:{DEMO_REGISTRY_PORT}"])
    command = [
        str(Path(sys.executable).parent / "sealgate"), "serve",
        "--host", args.host, "--port", args.port, "--policies", str(REPO / "policies"),
        "--cert", str(CERTS / "tls.crt"), "--key", str(CERTS / "tls.key"),
    ]
    print(f"serving policies/ on https://{args.host}:{args.port} (Ctrl-C stops)")
    # SIGTERM (e.g. from a supervisor) cleans up like Ctrl-C does.
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(0))
    server = subprocess.Popen(command, env=env)
    try:
        return server.wait()
    except KeyboardInterrupt:
        return 0
    finally:
        if server.poll() is None:
            server.terminate()
            server.wait(timeout=10)
        if registry is not None:
            registry.stop()


if __name__ == "__main__":
    sys.exit(main())
