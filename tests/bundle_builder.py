"""Making sigstore bundles, DSSE envelopes and cosign ``.att`` layers in tests, with real crypto.

Builds on ``tests/sigstore_world.py`` (Fulcio CA, CT log, Rekor log): a bundle's
Rekor entry gets a SET from the world's log and an RFC 6962 inclusion proof with a
signed checkpoint over all the entries that log holds so far, which is what
sigstore-python insists on (bundle v0.2+). Key-signed bundles carry a
``publicKey`` hint instead of a certificate.
"""

from __future__ import annotations

import base64
import hashlib
import json
from collections.abc import Sequence
from typing import Any

import rfc8785
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec

from tests.signing import PrivateKey, public_pem, sign
from tests.sigstore_world import FulcioLeaf, RekorLog, RekorLogEntry, certificate_pem
from webhook.oci import (
    COSIGN_BUNDLE_ANNOTATION,
    COSIGN_CERTIFICATE_ANNOTATION,
    COSIGN_CHAIN_ANNOTATION,
    COSIGN_PREDICATE_TYPE_ANNOTATION,
    COSIGN_SIGNATURE_ANNOTATION,
    DSSE_ENVELOPE,
    IN_TOTO_PAYLOAD_TYPE,
    SIGSTORE_BUNDLE_V03,
    SignatureLayer,
)

COSIGN_SIGN_PREDICATE = "https://sigstore.dev/cosign/sign/v1"
STATEMENT_V1 = "https://in-toto.io/Statement/v1"
STATEMENT_V01 = "https://in-toto.io/Statement/v0.1"


def b64(data: bytes) -> str:
    return base64.b64encode(data).decode()


# --------------------------------------------------------------------------- statements


def statement(
    digest: str,
    predicate_type: str = COSIGN_SIGN_PREDICATE,
    predicate: dict[str, Any] | None = None,
    *,
    version: str = STATEMENT_V1,
    name: str | None = None,
) -> bytes:
    """An in-toto statement naming ``digest`` (``sha256:<hex>``) as its one subject."""
    algorithm, _, encoded = digest.partition(":")
    subject: dict[str, Any] = {"digest": {algorithm: encoded}}
    if name is not None:
        subject["name"] = name
    document: dict[str, Any] = {
        "_type": version, "subject": [subject], "predicateType": predicate_type,
    }
    if predicate is not None:
        document["predicate"] = predicate
    return json.dumps(document, separators=(",", ":")).encode()


def pae(payload_type: str, payload: bytes) -> bytes:
    """DSSE v1 PAE, written out here independently of the code under test."""
    kind = payload_type.encode()
    return b"DSSEv1 " + str(len(kind)).encode() + b" " + kind + b" " + \
        str(len(payload)).encode() + b" " + payload


def dsse_sign(key: PrivateKey | FulcioLeaf, payload: bytes,
              payload_type: str = IN_TOTO_PAYLOAD_TYPE) -> bytes:
    signed = pae(payload_type, payload)
    return key.sign(signed) if isinstance(key, FulcioLeaf) else sign(key, signed)


def envelope(payload: bytes, signatures: Sequence[bytes],
             payload_type: str = IN_TOTO_PAYLOAD_TYPE) -> dict[str, Any]:
    return {
        "payloadType": payload_type,
        "payload": b64(payload),
        "signatures": [{"keyid": "", "sig": b64(sig)} for sig in signatures],
    }


# --------------------------------------------------------------------------- Rekor bodies


def dsse_body(payload: bytes, envelope_json: bytes, signature: bytes,
              verifier_pem: str | bytes) -> bytes:
    """A Rekor ``dsse`` 0.0.1 entry body as Rekor stores it (canonical JSON)."""
    pem = verifier_pem.encode() if isinstance(verifier_pem, str) else verifier_pem
    return rfc8785.dumps({
        "apiVersion": "0.0.1",
        "kind": "dsse",
        "spec": {
            "envelopeHash": {"algorithm": "sha256",
                             "value": hashlib.sha256(envelope_json).hexdigest()},
            "payloadHash": {"algorithm": "sha256", "value": hashlib.sha256(payload).hexdigest()},
            "signatures": [{"signature": b64(signature), "verifier": b64(pem)}],
        },
    })


def intoto_v002_body(payload: bytes, envelope_json: bytes, signature: bytes,
                     verifier_pem: str | bytes,
                     payload_type: str = IN_TOTO_PAYLOAD_TYPE) -> bytes:
    """A Rekor ``intoto`` 0.0.2 body (legacy ``cosign attest``): signatures double base64."""
    pem = verifier_pem.encode() if isinstance(verifier_pem, str) else verifier_pem
    return rfc8785.dumps({
        "apiVersion": "0.0.2",
        "kind": "intoto",
        "spec": {"content": {
            "envelope": {
                "payloadType": payload_type,
                "signatures": [{"sig": b64(b64(signature).encode()), "publicKey": b64(pem)}],
            },
            "hash": {"algorithm": "sha256", "value": hashlib.sha256(envelope_json).hexdigest()},
            "payloadHash": {"algorithm": "sha256", "value": hashlib.sha256(payload).hexdigest()},
        }},
    })


# --------------------------------------------------------------------------- Merkle + checkpoint


def leaf_hash(body: bytes) -> bytes:
    return hashlib.sha256(b"\x00" + body).digest()


def _node(left: bytes, right: bytes) -> bytes:
    return hashlib.sha256(b"\x01" + left + right).digest()


def _split(n: int) -> int:
    """Largest power of two smaller than ``n`` (RFC 6962 §2.1)."""
    k = 1
    while k * 2 < n:
        k *= 2
    return k


def merkle_root(leaves: Sequence[bytes]) -> bytes:
    """RFC 6962 MTH over leaf hashes."""
    if len(leaves) == 1:
        return leaves[0]
    k = _split(len(leaves))
    return _node(merkle_root(leaves[:k]), merkle_root(leaves[k:]))


def inclusion_path(index: int, leaves: Sequence[bytes]) -> list[bytes]:
    """RFC 6962 PATH(m, D[n]): sibling hashes from the leaf up."""
    if len(leaves) <= 1:
        return []
    k = _split(len(leaves))
    if index < k:
        return [*inclusion_path(index, leaves[:k]), merkle_root(leaves[k:])]
    return [*inclusion_path(index - k, leaves[k:]), merkle_root(leaves[:k])]


def signed_checkpoint(rekor: RekorLog, tree_size: int, root: bytes,
                      origin: str = "rekor.sigstore-world.test - 1") -> str:
    """A signed note (transparency-dev checkpoint) over ``origin\\nsize\\nroot\\n``.

    The signature line carries the first 4 bytes of the log ID as key hint, as Rekor's.
    """
    note = f"{origin}\n{tree_size}\n{b64(root)}\n"
    signature = rekor.key.sign(note.encode(), ec.ECDSA(hashes.SHA256()))
    hint = bytes.fromhex(rekor.log_id)[:4]
    return f"{note}\n\u2014 rekor.sigstore-world.test {b64(hint + signature)}\n"


def tlog_entry(rekor: RekorLog, body: bytes, integrated_time: int, *,
               kind: str = "dsse", version: str = "0.0.1", promise: bool = True,
               proof: bool = True) -> dict[str, Any]:
    """Log ``body`` in ``rekor`` and return the bundle's ``tlogEntries`` item for it:
    SET (``promise``), inclusion proof + signed checkpoint over the log's tree (``proof``)."""
    logged: RekorLogEntry = rekor.log(body, integrated_time)
    item: dict[str, Any] = {
        "logIndex": str(logged.log_index),
        "logId": {"keyId": b64(bytes.fromhex(logged.log_id))},
        "kindVersion": {"kind": kind, "version": version},
        "integratedTime": str(integrated_time),
        "canonicalizedBody": b64(body),
    }
    if promise:
        item["inclusionPromise"] = {"signedEntryTimestamp": b64(logged.signed_entry_timestamp)}
    leaves = [leaf_hash(entry.body) for entry in rekor.entries]
    root = merkle_root(leaves)
    item["inclusionProof"] = {
        "logIndex": str(logged.log_index),
        "rootHash": b64(root),
        "treeSize": str(len(leaves)),
        "hashes": [b64(h) for h in inclusion_path(logged.log_index, leaves)],
    }
    if proof:
        item["inclusionProof"]["checkpoint"] = {
            "envelope": signed_checkpoint(rekor, len(leaves), root)}
    return item


# --------------------------------------------------------------------------- bundles


def keyless_bundle(leaf: FulcioLeaf, payload: bytes, rekor: RekorLog, *,
                   integrated_time: int | None = None, body: bytes | None = None,
                   promise: bool = True) -> bytes:
    """A bundle v0.3 as ``cosign`` v3 writes it for a keyless signature/attestation:
    certificate, one ``dsse`` 0.0.1 Rekor entry (SET + proof + checkpoint), DSSE envelope."""
    signature = dsse_sign(leaf, payload)
    env = envelope(payload, [signature])
    env_json = json.dumps(env).encode()
    when = integrated_time if integrated_time is not None else int(leaf.not_before.timestamp()) + 2
    entry_body = body if body is not None else dsse_body(payload, env_json, signature, leaf.pem)
    return json.dumps({
        "mediaType": SIGSTORE_BUNDLE_V03,
        "verificationMaterial": {
            "certificate": {"rawBytes": b64(leaf.certificate.public_bytes(
                serialization.Encoding.DER))},
            "tlogEntries": [tlog_entry(rekor, entry_body, when, promise=promise)],
        },
        "dsseEnvelope": env,
    }).encode()


def key_bundle(key: PrivateKey, payload: bytes, rekor: RekorLog | None = None, *,
               integrated_time: int = 1_700_000_000, hint: str = "",
               body: bytes | None = None, verifier_pem: bytes | None = None,
               promise: bool = True, proof: bool = True) -> bytes:
    """A key-signed bundle v0.3 (``publicKey`` material); logged in ``rekor`` when given.

    ``body`` replaces the Rekor entry body; ``verifier_pem`` the key it records.
    """
    signature = dsse_sign(key, payload)
    env = envelope(payload, [signature])
    entries = []
    if rekor is not None:
        entry_body = body if body is not None else dsse_body(
            payload, json.dumps(env).encode(), signature, verifier_pem or public_pem(key))
        entries.append(tlog_entry(rekor, entry_body, integrated_time, promise=promise,
                                  proof=proof))
    return json.dumps({
        "mediaType": SIGSTORE_BUNDLE_V03,
        "verificationMaterial": {"publicKey": {"hint": hint}, "tlogEntries": entries},
        "dsseEnvelope": env,
    }).encode()


# --------------------------------------------------------------------------- legacy .att


def attestation_layer(key: PrivateKey | FulcioLeaf, payload: bytes, *,
                      rekor: RekorLog | None = None, integrated_time: int | None = None,
                      predicate_type: str | None = None,
                      chain: bool = True) -> SignatureLayer:
    """A cosign ``.att`` layer: DSSE envelope JSON plus cosign's annotations.

    Keyless (a FulcioLeaf) adds certificate and chain; ``rekor`` adds a SET over an
    ``intoto`` 0.0.2 body in ``dev.sigstore.cosign/bundle`` (keyless needs it).
    """
    signature = dsse_sign(key, payload)
    env_json = json.dumps(envelope(payload, [signature])).encode()
    annotations = {COSIGN_SIGNATURE_ANNOTATION: ""}
    if predicate_type is not None:
        annotations[COSIGN_PREDICATE_TYPE_ANNOTATION] = predicate_type
    if isinstance(key, FulcioLeaf):
        annotations[COSIGN_CERTIFICATE_ANNOTATION] = key.pem
        if chain:
            annotations[COSIGN_CHAIN_ANNOTATION] = "".join(
                certificate_pem(cert) for cert in key.chain)
        signer_pem: str | bytes = key.pem
        default_time = int(key.not_before.timestamp()) + 2
    else:
        signer_pem = public_pem(key)
        default_time = 1_700_000_000
    if rekor is not None:
        when = integrated_time if integrated_time is not None else default_time
        logged = rekor.log(intoto_v002_body(payload, env_json, signature, signer_pem), when)
        annotations[COSIGN_BUNDLE_ANNOTATION] = logged.bundle_annotation()
    return SignatureLayer(DSSE_ENVELOPE, env_json, annotations)
