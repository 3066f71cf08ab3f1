"""Rekor inclusion proofs and signed checkpoints, verified by our own code (no
sigstore-python private modules): the real kubewarden bundle's Rekor entry against the
public-good root, and RFC 9162 proofs of every leaf of small trees."""

from __future__ import annotations

import base64
import json

import pytest

from tests.bundle_builder import inclusion_path, leaf_hash, merkle_root
from tests.test_bundles import KUBEWARDEN
from webhook.errors import VerificationError
from webhook.signatures.transparency import verify_checkpoint, verify_inclusion_proof
from webhook.signatures.trust import load_trusted_root

ENTRY = json.loads(KUBEWARDEN)["verificationMaterial"]["tlogEntries"][0]
PROOF = ENTRY["inclusionProof"]
BODY = base64.b64decode(ENTRY["canonicalizedBody"])


def real_proof(**change: object) -> dict[str, object]:
    proof: dict[str, object] = {
        "log_index": int(PROOF["logIndex"]), "tree_size": int(PROOF["treeSize"]),
        "hashes": [base64.b64decode(h) for h in PROOF["hashes"]],
        "root": base64.b64decode(PROOF["rootHash"]),
    }
    return proof | change


def test_real_rekor_entry_is_in_the_public_good_log() -> None:
    verify_inclusion_proof(BODY, **real_proof())  # type: ignore[arg-type]
    origin = verify_checkpoint(PROOF["checkpoint"]["envelope"], tree_size=int(PROOF["treeSize"]),
                               root=base64.b64decode(PROOF["rootHash"]),
                               rekor_keys=load_trusted_root("public-good").rekor_keys)
    assert origin.startswith("rekor.sigstore.dev")


def test_real_checkpoint_is_not_signed_by_the_staging_log() -> None:
    with pytest.raises(VerificationError, match="not signed by a transparency log"):
        verify_checkpoint(PROOF["checkpoint"]["envelope"], tree_size=int(PROOF["treeSize"]),
                          root=base64.b64decode(PROOF["rootHash"]),
                          rekor_keys=load_trusted_root("staging").rekor_keys)


@pytest.mark.parametrize("change", [
    {"log_index": int(PROOF["logIndex"]) + 1},
    {"hashes": [b"\x00" * 32] + [base64.b64decode(h) for h in PROOF["hashes"][1:]]},
    {"hashes": [base64.b64decode(h) for h in PROOF["hashes"][:-1]]},
])
def test_real_proof_with_one_change_fails(change: dict[str, object]) -> None:
    with pytest.raises(VerificationError, match="Rekor inclusion proof"):
        verify_inclusion_proof(BODY, **real_proof(**change))  # type: ignore[arg-type]
    with pytest.raises(VerificationError):
        verify_inclusion_proof(BODY + b" ", **real_proof())  # type: ignore[arg-type]


def test_checkpoint_for_another_tree_fails() -> None:
    with pytest.raises(VerificationError, match="another tree"):
        verify_checkpoint(PROOF["checkpoint"]["envelope"],
                          tree_size=int(PROOF["treeSize"]) - 1,
                          root=base64.b64decode(PROOF["rootHash"]),
                          rekor_keys=load_trusted_root("public-good").rekor_keys)


@pytest.mark.parametrize("size", range(1, 10))
def test_every_leaf_of_small_trees(size: int) -> None:
    bodies = [f"entry {i}".encode() for i in range(size)]
    leaves = [leaf_hash(b) for b in bodies]
    root = merkle_root(leaves)
    for index, body in enumerate(bodies):
        path = inclusion_path(index, leaves)
        verify_inclusion_proof(body, log_index=index, tree_size=size, hashes=path, root=root)
        if size > 1:
            with pytest.raises(VerificationError):
                verify_inclusion_proof(body, log_index=(index + 1) % size, tree_size=size,
                                       hashes=path, root=root)
