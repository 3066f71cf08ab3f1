"""`make bench`: CPU time of one cold verification, per signature kind.

Real cryptography from the test "sigstore world" (a Fulcio CA, a CT log, a Rekor log).
Each verification gets fresh signature material (no memo can help); the trusted root
is loaded once, as in a running server. CPU time of the calling thread
(``time.thread_time``), so other load on the machine does not count. In the server
these run in worker threads, never on the event loop (``facts.FactGatherer``).
"""

from __future__ import annotations

import statistics
import tempfile
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

from cryptography.hazmat.primitives.asymmetric import ec

from tests.bundle_builder import keyless_bundle, statement
from tests.signing import cosign_layer
from tests.sigstore_world import SigstoreWorld
from webhook.oci import COSIGN_SIMPLE_SIGNING, SignatureLayer
from webhook.signatures.bundle import KeylessTrust, verify_bundle_sync
from webhook.signatures.cosign import verify_key_signature
from webhook.signatures.identity import Identity
from webhook.signatures.keyless import verify_keyless_signature

ISSUER = "https://token.actions.githubusercontent.com"
SUBJECT = "https://github.com/acme/app/.github/workflows/release.yml@refs/heads/main"
NAME = "registry.example.com/acme/app"


def _cpu_ms(make: Callable[[int], Any], verify: Callable[[Any], object], rounds: int) -> float:
    inputs = [make(i) for i in range(rounds)]
    verify(inputs[0])  # imports, first-use caches of the process
    samples = []
    for item in inputs[1:]:
        started = time.thread_time()
        verify(item)
        samples.append((time.thread_time() - started) * 1000)
    return statistics.median(samples)


def _digest(i: int) -> str:
    return "sha256:" + f"{i:064x}"


def measure(rounds: int = 40) -> dict[str, float]:
    """Median CPU milliseconds per verification."""
    world = SigstoreWorld.create()
    root = str(world.write_trusted_root(Path(tempfile.mkdtemp()) / "trusted_root.json"))
    material = world.material()
    identity = Identity(issuer=ISSUER, subject=SUBJECT)
    key = ec.generate_private_key(ec.SECP256R1())

    def key_layer(i: int) -> tuple[SignatureLayer, str]:
        payload, annotations = cosign_layer(key, NAME, _digest(i))
        return SignatureLayer(COSIGN_SIMPLE_SIGNING, payload, annotations), _digest(i)

    def keyless_layer(i: int) -> tuple[SignatureLayer, str]:
        leaf = world.issue_leaf(uri=SUBJECT, issuer=ISSUER)
        return world.keyless_signature_layer(leaf, NAME, _digest(i)), _digest(i)

    def bundle(i: int) -> tuple[bytes, str]:
        leaf = world.issue_leaf(uri=SUBJECT, issuer=ISSUER)
        return keyless_bundle(leaf, statement(_digest(i)), world.rekor), _digest(i)

    return {
        "key_signature_ms": _cpu_ms(key_layer, lambda item: verify_key_signature(
            item[0], key=key.public_key(), image_digest=item[1], image_name=NAME,
            tlog="off"), rounds),
        "keyless_legacy_ms": _cpu_ms(keyless_layer, lambda item: verify_keyless_signature(
            item[0], identity=identity, trust=material, image_digest=item[1],
            image_name=NAME), rounds),
        "keyless_bundle_ms": _cpu_ms(bundle, lambda item: verify_bundle_sync(
            item[0], KeylessTrust(identity, root), image_digest=item[1]), rounds // 2),
    }


if __name__ == "__main__":
    print(measure())
