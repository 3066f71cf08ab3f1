"""Rekor inclusion proofs and signed checkpoints (RFC 9162 §2.1.3, C2SP signed-note).

sigstore-python verifies these only inside its keyless ``Verifier`` and keeps the
functions in private modules (``sigstore._internal``), which may change in any
release; key-signed bundles need them too (Rekor v1 entries without a SET, and every
Rekor v2 entry, which has no SET at all), so they are here: a few lines of hashing
and one signature check with the log keys of our trusted root.
"""

from __future__ import annotations

import base64
import binascii
import hashlib
from collections.abc import Sequence

from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ed25519

from webhook.errors import VerificationError
from webhook.signatures.cosign import RekorKey, verify_raw_signature

MAX_PROOF_HASHES = 64  # a tree of 2**64 leaves needs no more


def leaf_hash(body: bytes) -> bytes:
    return hashlib.sha256(b"\x00" + body).digest()


def _node(left: bytes, right: bytes) -> bytes:
    return hashlib.sha256(b"\x01" + left + right).digest()


def verify_inclusion_proof(
    body: bytes, *, log_index: int, tree_size: int, hashes: Sequence[bytes], root: bytes
) -> None:
    """The entry ``body`` is leaf ``log_index`` of the tree of ``tree_size`` with ``root``."""
    if not 0 <= log_index < tree_size:
        raise VerificationError(
            f"Rekor inclusion proof: log index {log_index} is outside a tree of {tree_size}"
        )
    if len(hashes) > MAX_PROOF_HASHES:
        raise VerificationError("Rekor inclusion proof has too many hashes")
    fn, sn = log_index, tree_size - 1
    result = leaf_hash(body)
    for sibling in hashes:
        if sn == 0:
            raise VerificationError("Rekor inclusion proof is longer than the tree is deep")
        if fn & 1 or fn == sn:
            result = _node(sibling, result)
            while not fn & 1 and fn != 0:
                fn >>= 1
                sn >>= 1
        else:
            result = _node(result, sibling)
        fn >>= 1
        sn >>= 1
    if sn != 0 or result != root:
        raise VerificationError(
            "Rekor inclusion proof does not lead to the root hash: the entry is not in the log"
        )


def verify_checkpoint(
    envelope: str, *, tree_size: int, root: bytes, rekor_keys: Sequence[RekorKey]
) -> str:
    """A signed note over ``origin\\nsize\\nroot\\n`` by one of ``rekor_keys``, for this
    tree size and root; returns the origin line."""
    body, separator, signatures = envelope.partition("\n\n")
    if not separator or not body:
        raise VerificationError("Rekor checkpoint is not a signed note")
    text = body + "\n"
    lines = body.split("\n")
    if len(lines) < 3:
        raise VerificationError("Rekor checkpoint lacks origin, tree size or root hash")
    origin, size_text, root_text = lines[:3]
    try:
        size = int(size_text)
        checkpoint_root = base64.b64decode(root_text, validate=True)
    except (ValueError, binascii.Error):
        raise VerificationError("Rekor checkpoint has a malformed tree size or root") from None
    if size != tree_size or checkpoint_root != root:
        raise VerificationError(
            "Rekor checkpoint is for another tree than the inclusion proof "
            f"(size {size}, proof tree size {tree_size})"
        )
    for line in signatures.splitlines():
        if not line.startswith("\u2014 "):
            continue
        name, _, encoded = line[2:].rpartition(" ")
        try:
            raw = base64.b64decode(encoded, validate=True)
        except (ValueError, binascii.Error):
            continue
        hint, signature = raw[:4], raw[4:]
        for rekor_key in rekor_keys:
            if hint not in (bytes.fromhex(rekor_key.log_id)[:4], _note_key_hint(name, rekor_key)):
                continue
            try:
                verify_raw_signature(rekor_key.key, signature, text.encode())
            except VerificationError:
                continue
            return origin
    raise VerificationError(
        "Rekor checkpoint is not signed by a transparency log of the trusted root"
    )


def _note_key_hint(name: str, rekor_key: RekorKey) -> bytes:
    """The C2SP signed-note key hash of an Ed25519 key (Rekor v2 logs sign notes so)."""
    key = rekor_key.key
    if not isinstance(key, ed25519.Ed25519PublicKey):
        return b""
    raw = key.public_bytes(serialization.Encoding.Raw, serialization.PublicFormat.Raw)
    return hashlib.sha256(name.encode() + b"\n\x01" + raw).digest()[:4]
