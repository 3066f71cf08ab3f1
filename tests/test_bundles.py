"""webhook/signatures/bundle.py: sigstore bundles v0.3, keyless (sigstore-python) and key-signed.

Real third-party bundles (tests/data/sigstore-rs, tests/data/cosign) verify offline against
the public-good root embedded in the sigstore package; test-made bundles come from a
private sigstore (tests/sigstore_world.py + tests/bundle_builder.py).
"""

from __future__ import annotations

import base64
import json
import time
from collections.abc import Callable
from dataclasses import replace
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import anyio
import pytest
from cryptography.hazmat.primitives.asymmetric import ec, ed25519

from tests.bundle_builder import (
    dsse_body,
    dsse_sign,
    envelope,
    key_bundle,
    keyless_bundle,
    statement,
)
from tests.signing import public_pem
from tests.sigstore_world import CTLog, FulcioCA, RekorLog, SigstoreWorld
from webhook.errors import VerificationError
from webhook.signatures import bundle as bundle_module
from webhook.signatures.bundle import (
    COSIGN_SIGN_PREDICATE,
    KeylessTrust,
    KeyTrust,
    check_statement,
    pae,
    parse_statement,
    sigstore_verifier,
    verify_bundle,
    verify_bundle_sync,
)
from webhook.signatures.identity import Identity
from webhook.signatures.trust import TrustedRootError

DATA = Path(__file__).parent / "data"
KUBEWARDEN = (DATA / "sigstore-rs" / "bundle_v03.json").read_bytes()
KUBEWARDEN_DIGEST = "sha256:c811d58de79c92f03214e63aa339484e488d694ae8a6283b5f3f17a9faf50172"
KUBEWARDEN_IDENTITY = Identity(
    issuer="https://token.actions.githubusercontent.com",
    subject="https://github.com/kubewarden/kubewarden-controller/.github/workflows/"
            "release.yml@refs/tags/v1.34.0",
)
COSIGN_ATTESTATION = (DATA / "cosign" / "oci-attestation.sigstore.json").read_bytes()
COSIGN_ATTESTATION_DIGEST = (
    "sha256:732112270d7e59418a8c080b134b24cabd67d250d0d0147a97ed95ba5c280aa4"
)
CODY = Identity(issuer="https://github.com/login/oauth", subject="cody@soyland.com")
OTHER_DIGEST = "sha256:" + "0" * 64
PUBLIC_GOOD_FILE = str(DATA / "trust" / "sigstore-public-good-trusted_root.json")

GITHUB_ISSUER = "https://token.actions.githubusercontent.com"
RELEASE = "https://github.com/acme/app/.github/workflows/release.yml@refs/heads/main"
IMAGE = "sha256:" + "ab" * 32


def fails(function: Callable[[], object], *words: str) -> str:
    """Run ``function``; it must raise VerificationError whose message holds every word."""
    with pytest.raises(VerificationError) as caught:
        function()
    message = str(caught.value)
    for word in words:
        assert word in message, f"{word!r} not in {message!r}"
    return message


def edit(content: bytes, change: Callable[[dict[str, Any]], None]) -> bytes:
    document = json.loads(content)
    change(document)
    return json.dumps(document).encode()


def flip(encoded: str, position: int) -> str:
    """Flip one bit of the ``position``-th byte of base64 data (a one-byte corruption)."""
    raw = bytearray(base64.b64decode(encoded))
    raw[position % len(raw)] ^= 0x01
    return base64.b64encode(bytes(raw)).decode()


# --------------------------------------------------------------------------- real: sigstore-rs


def test_kubewarden_bundle_verifies_for_its_digest_and_identity() -> None:
    verified = verify_bundle_sync(
        KUBEWARDEN, KeylessTrust(KUBEWARDEN_IDENTITY), image_digest=KUBEWARDEN_DIGEST
    )
    assert verified.predicate_type == COSIGN_SIGN_PREDICATE
    assert verified.predicate == {}
    assert verified.subject_digests == (KUBEWARDEN_DIGEST,)
    assert verified.integrated_time == 1775719409


def test_kubewarden_bundle_verifies_with_the_trusted_root_as_a_file_path() -> None:
    verified = verify_bundle_sync(
        KUBEWARDEN, KeylessTrust(KUBEWARDEN_IDENTITY, PUBLIC_GOOD_FILE),
        image_digest=KUBEWARDEN_DIGEST,
    )
    assert verified.subject_digests == (KUBEWARDEN_DIGEST,)


def test_kubewarden_bundle_subject_regexp_must_match_the_whole_subject() -> None:
    whole = Identity(issuer=GITHUB_ISSUER,
                     subject_regexp=r"https://github\.com/kubewarden/.+@refs/tags/v.*")
    verify_bundle_sync(KUBEWARDEN, KeylessTrust(whole), image_digest=KUBEWARDEN_DIGEST)
    prefix = Identity(issuer=GITHUB_ISSUER, subject_regexp=r"https://github\.com/kubewarden/")
    fails(lambda: verify_bundle_sync(KUBEWARDEN, KeylessTrust(prefix),
                                     image_digest=KUBEWARDEN_DIGEST),
          "identity", "subject mismatch", "kubewarden-controller")


def test_kubewarden_bundle_wrong_identity() -> None:
    attacker = Identity(
        issuer=GITHUB_ISSUER,
        subject="https://github.com/attacker/repo/.github/workflows/release.yml@refs/tags/v1.34.0",
    )
    fails(lambda: verify_bundle_sync(KUBEWARDEN, KeylessTrust(attacker),
                                     image_digest=KUBEWARDEN_DIGEST),
          "subject mismatch", "attacker/repo")


def test_kubewarden_bundle_wrong_issuer() -> None:
    google = Identity(issuer="https://accounts.google.com", subject=KUBEWARDEN_IDENTITY.subject)
    fails(lambda: verify_bundle_sync(KUBEWARDEN, KeylessTrust(google),
                                     image_digest=KUBEWARDEN_DIGEST),
          "issuer mismatch", "https://accounts.google.com")


def test_kubewarden_bundle_for_another_digest() -> None:
    fails(lambda: verify_bundle_sync(KUBEWARDEN, KeylessTrust(KUBEWARDEN_IDENTITY),
                                     image_digest=OTHER_DIGEST),
          f"bundle statement names digest {KUBEWARDEN_DIGEST}, not {OTHER_DIGEST}")


def test_kubewarden_bundle_against_the_staging_root() -> None:
    fails(lambda: verify_bundle_sync(KUBEWARDEN, KeylessTrust(KUBEWARDEN_IDENTITY, "staging"),
                                     image_digest=KUBEWARDEN_DIGEST),
          "certificate chain")


def _corrupt_payload(position: int) -> Callable[[dict[str, Any]], None]:
    def change(document: dict[str, Any]) -> None:
        env = document["dsseEnvelope"]
        env["payload"] = flip(env["payload"], position)
    return change


def _corrupt_signature(position: int) -> Callable[[dict[str, Any]], None]:
    def change(document: dict[str, Any]) -> None:
        sig = document["dsseEnvelope"]["signatures"][0]
        sig["sig"] = flip(sig["sig"], position)
    return change


def _corrupt_certificate(position: int) -> Callable[[dict[str, Any]], None]:
    def change(document: dict[str, Any]) -> None:
        cert = document["verificationMaterial"]["certificate"]
        cert["rawBytes"] = flip(cert["rawBytes"], position)
    return change


@pytest.mark.parametrize(("corrupt", "words"), [
    pytest.param(_corrupt_payload(0), ("signature",), id="payload-first-byte"),
    pytest.param(_corrupt_payload(60), ("signature",), id="payload-digest-byte"),
    pytest.param(_corrupt_signature(10), ("signature",), id="signature"),
    pytest.param(_corrupt_signature(40), ("signature",), id="signature-s"),
    pytest.param(_corrupt_certificate(5), ("certificate",), id="certificate-header"),
    pytest.param(_corrupt_certificate(300), ("certificate",), id="certificate-body"),
    pytest.param(_corrupt_certificate(-5), ("certificate",), id="certificate-signature"),
])
def test_kubewarden_bundle_one_byte_corruptions(
    corrupt: Callable[[dict[str, Any]], None], words: tuple[str, ...]
) -> None:
    damaged = edit(KUBEWARDEN, corrupt)
    fails(lambda: verify_bundle_sync(damaged, KeylessTrust(KUBEWARDEN_IDENTITY),
                                     image_digest=KUBEWARDEN_DIGEST), *words)


def test_kubewarden_bundle_with_a_corrupted_set_or_inclusion_proof() -> None:
    def bad_set(document: dict[str, Any]) -> None:
        promise = document["verificationMaterial"]["tlogEntries"][0]["inclusionPromise"]
        promise["signedEntryTimestamp"] = flip(promise["signedEntryTimestamp"], 20)

    def bad_proof(document: dict[str, Any]) -> None:
        proof = document["verificationMaterial"]["tlogEntries"][0]["inclusionProof"]
        proof["hashes"][0] = flip(proof["hashes"][0], 3)

    trust = KeylessTrust(KUBEWARDEN_IDENTITY)
    fails(lambda: verify_bundle_sync(edit(KUBEWARDEN, bad_set), trust,
                                     image_digest=KUBEWARDEN_DIGEST), "SET")
    fails(lambda: verify_bundle_sync(edit(KUBEWARDEN, bad_proof), trust,
                                     image_digest=KUBEWARDEN_DIGEST), "inclusion proof")


def test_a_bundle_that_is_not_a_bundle() -> None:
    fails(lambda: verify_bundle_sync(b"not json", KeylessTrust(KUBEWARDEN_IDENTITY),
                                     image_digest=KUBEWARDEN_DIGEST), "bundle")
    fails(lambda: verify_bundle_sync(b'{"mediaType": "x"}', KeylessTrust(KUBEWARDEN_IDENTITY),
                                     image_digest=KUBEWARDEN_DIGEST), "bundle is malformed")


def test_a_message_signature_bundle_is_not_an_image_signature() -> None:
    def to_message(document: dict[str, Any]) -> None:
        env = document.pop("dsseEnvelope")
        document["messageSignature"] = {
            "messageDigest": {"algorithm": "SHA2_256",
                              "digest": base64.b64encode(b"\x00" * 32).decode()},
            "signature": env["signatures"][0]["sig"],
        }

    fails(lambda: verify_bundle_sync(edit(KUBEWARDEN, to_message),
                                     KeylessTrust(KUBEWARDEN_IDENTITY),
                                     image_digest=KUBEWARDEN_DIGEST),
          "message signature", "not a DSSE envelope")


def test_a_keyless_bundle_does_not_satisfy_a_key_authority() -> None:
    key = ec.generate_private_key(ec.SECP256R1())
    fails(lambda: verify_bundle_sync(KUBEWARDEN, KeyTrust(key.public_key()),
                                     image_digest=KUBEWARDEN_DIGEST),
          "certificate (keyless)", "authority is a key")


def test_an_unreadable_trusted_root_is_not_a_verification_failure(tmp_path: Path) -> None:
    with pytest.raises(TrustedRootError):
        verify_bundle_sync(KUBEWARDEN, KeylessTrust(KUBEWARDEN_IDENTITY,
                                                    str(tmp_path / "missing.json")),
                           image_digest=KUBEWARDEN_DIGEST)
    broken = tmp_path / "broken.json"
    broken.write_text("{}")
    with pytest.raises(TrustedRootError):
        verify_bundle_sync(KUBEWARDEN, KeylessTrust(KUBEWARDEN_IDENTITY, str(broken)),
                           image_digest=KUBEWARDEN_DIGEST)


def test_the_sigstore_verifier_is_cached_per_trusted_root() -> None:
    assert sigstore_verifier("public-good") is sigstore_verifier("public-good")
    assert sigstore_verifier("public-good") is not sigstore_verifier("staging")
    assert sigstore_verifier(PUBLIC_GOOD_FILE) is sigstore_verifier(PUBLIC_GOOD_FILE)


# --------------------------------------------------------------------------- real: cosign


def test_cosign_attestation_bundle_verifies_as_an_attestation() -> None:
    verified = verify_bundle_sync(
        COSIGN_ATTESTATION, KeylessTrust(CODY),
        image_digest=COSIGN_ATTESTATION_DIGEST, predicate_type=None,
    )
    assert verified.predicate_type == "https://cosign.sigstore.dev/attestation/v1"
    assert verified.predicate == {"Data": '{"foo": "bar"}\n', "Timestamp": "2025-02-28T19:18:11Z"}
    assert verified.integrated_time == 1740770291


def test_cosign_attestation_bundle_is_not_an_image_signature() -> None:
    fails(lambda: verify_bundle_sync(COSIGN_ATTESTATION, KeylessTrust(CODY),
                                     image_digest=COSIGN_ATTESTATION_DIGEST),
          "predicateType", "https://sigstore.dev/cosign/sign/v1")


def test_cosign_attestation_bundle_attached_to_another_image() -> None:
    fails(lambda: verify_bundle_sync(COSIGN_ATTESTATION, KeylessTrust(CODY),
                                     image_digest=KUBEWARDEN_DIGEST, predicate_type=None),
          "names digest", COSIGN_ATTESTATION_DIGEST, KUBEWARDEN_DIGEST)


@pytest.mark.parametrize("identity", [
    Identity(issuer="https://github.com/login/oauth", subject="mallory@example.com"),
    Identity(issuer="https://accounts.google.com", subject="cody@soyland.com"),
    Identity(issuer="https://github.com/login/oauth", subject_regexp="wrong"),
])
def test_cosign_attestation_bundle_wrong_identity(identity: Identity) -> None:
    fails(lambda: verify_bundle_sync(COSIGN_ATTESTATION, KeylessTrust(identity),
                                     image_digest=COSIGN_ATTESTATION_DIGEST,
                                     predicate_type=None), "identity")


def test_cosign_attestation_bundle_against_the_staging_root() -> None:
    fails(lambda: verify_bundle_sync(COSIGN_ATTESTATION, KeylessTrust(CODY, "staging"),
                                     image_digest=COSIGN_ATTESTATION_DIGEST,
                                     predicate_type=None), "certificate chain")


# --------------------------------------------------------------------------- statements


def test_pae_is_dsse_v1() -> None:
    assert pae("application/example", b"hello world") == (
        b"DSSEv1 19 application/example 11 hello world")


def test_statement_checks() -> None:
    v01 = parse_statement("application/vnd.in-toto+json",
                          statement(IMAGE, "x", {"a": 1}, version="https://in-toto.io/Statement/v0.1"))
    assert (v01.type, v01.predicate_type, dict(v01.predicate)) == (
        "https://in-toto.io/Statement/v0.1", "x", {"a": 1})
    with pytest.raises(VerificationError, match="not an in-toto statement"):
        parse_statement("text/plain", statement(IMAGE))
    with pytest.raises(VerificationError, match="_type"):
        parse_statement("application/vnd.in-toto+json",
                        statement(IMAGE, version="https://in-toto.io/Statement/v2"))
    with pytest.raises(VerificationError, match="duplicate"):
        parse_statement("application/vnd.in-toto+json",
                        b'{"_type":"https://in-toto.io/Statement/v1","_type":"x"}')
    with pytest.raises(VerificationError, match="no subject"):
        parse_statement("application/vnd.in-toto+json",
                        b'{"_type":"https://in-toto.io/Statement/v1","predicateType":"x",'
                        b'"subject":[]}')
    parsed = parse_statement("application/vnd.in-toto+json", statement(IMAGE))
    with pytest.raises(VerificationError, match="names digest"):
        check_statement(parsed, image_digest=OTHER_DIGEST, predicate_type=None)
    with pytest.raises(VerificationError, match="predicateType"):
        check_statement(parsed, image_digest=IMAGE, predicate_type="other")


# --------------------------------------------------------------------------- test-made keyless


@pytest.fixture(scope="module")
def world() -> SigstoreWorld:
    return SigstoreWorld.create()


@pytest.fixture(scope="module")
def world_root(world: SigstoreWorld, tmp_path_factory: pytest.TempPathFactory) -> str:
    return str(world.write_trusted_root(tmp_path_factory.mktemp("world") / "trusted_root.json"))


def release_trust(root: str, **identity: str) -> KeylessTrust:
    wanted = identity or {"subject": RELEASE}
    return KeylessTrust(Identity(issuer=GITHUB_ISSUER, **wanted), root)


def test_world_keyless_bundle_verifies_through_sigstore_python(
    world: SigstoreWorld, world_root: str
) -> None:
    leaf = world.issue_leaf(uri=RELEASE, issuer=GITHUB_ISSUER)
    content = keyless_bundle(leaf, statement(IMAGE), world.rekor)
    verified = verify_bundle_sync(content, release_trust(world_root), image_digest=IMAGE)
    assert verified.subject_digests == (IMAGE,)
    assert verified.integrated_time == int(leaf.not_before.timestamp()) + 2
    regexp = release_trust(world_root, subject_regexp=r"https://github\.com/acme/.+")
    verify_bundle_sync(content, regexp, image_digest=IMAGE)


def test_world_keyless_bundle_subject_regexp_matching_only_a_prefix(
    world: SigstoreWorld, world_root: str
) -> None:
    leaf = world.issue_leaf(uri=RELEASE + "-evil", issuer=GITHUB_ISSUER)
    content = keyless_bundle(leaf, statement(IMAGE), world.rekor)
    prefix = release_trust(world_root, subject_regexp=r"https://github\.com/acme/app/"
                                                      r"\.github/workflows/release\.yml@refs/heads/main")
    fails(lambda: verify_bundle_sync(content, prefix, image_digest=IMAGE),
          "subject mismatch", "-evil")


def test_world_keyless_bundle_issuer_only_in_the_v1_extension(
    world: SigstoreWorld, world_root: str
) -> None:
    leaf = world.issue_leaf(uri=RELEASE, issuer=None, issuer_v1=GITHUB_ISSUER)
    content = keyless_bundle(leaf, statement(IMAGE), world.rekor)
    verify_bundle_sync(content, release_trust(world_root), image_digest=IMAGE)


def test_world_keyless_bundle_for_another_image(world: SigstoreWorld, world_root: str) -> None:
    leaf = world.issue_leaf(uri=RELEASE, issuer=GITHUB_ISSUER)
    content = keyless_bundle(leaf, statement(IMAGE), world.rekor)
    fails(lambda: verify_bundle_sync(content, release_trust(world_root),
                                     image_digest=OTHER_DIGEST), "names digest")


def test_world_keyless_bundle_from_an_untrusted_ca(world: SigstoreWorld, world_root: str) -> None:
    leaf = world.issue_leaf(fulcio=FulcioCA.create(), uri=RELEASE, issuer=GITHUB_ISSUER)
    content = keyless_bundle(leaf, statement(IMAGE), world.rekor)
    fails(lambda: verify_bundle_sync(content, release_trust(world_root), image_digest=IMAGE),
          "certificate chain")


def test_world_keyless_bundle_with_an_sct_from_an_unknown_log(
    world: SigstoreWorld, world_root: str
) -> None:
    leaf = world.issue_leaf(ctlog=CTLog.create(), uri=RELEASE, issuer=GITHUB_ISSUER)
    content = keyless_bundle(leaf, statement(IMAGE), world.rekor)
    fails(lambda: verify_bundle_sync(content, release_trust(world_root), image_digest=IMAGE),
          "SCT")


def test_world_keyless_bundle_logged_in_an_untrusted_rekor(
    world: SigstoreWorld, world_root: str
) -> None:
    leaf = world.issue_leaf(uri=RELEASE, issuer=GITHUB_ISSUER)
    content = keyless_bundle(leaf, statement(IMAGE), RekorLog.create())
    fails(lambda: verify_bundle_sync(content, release_trust(world_root), image_digest=IMAGE),
          "log entry")


def test_world_keyless_bundle_whose_entry_is_for_another_payload(
    world: SigstoreWorld, world_root: str
) -> None:
    leaf = world.issue_leaf(uri=RELEASE, issuer=GITHUB_ISSUER)
    other = statement(OTHER_DIGEST)
    signature = dsse_sign(leaf, other)
    body = dsse_body(other, json.dumps(envelope(other, [signature])).encode(), signature,
                     leaf.pem)
    content = keyless_bundle(leaf, statement(IMAGE), world.rekor, body=body)
    fails(lambda: verify_bundle_sync(content, release_trust(world_root), image_digest=IMAGE),
          "log entry")


def test_world_keyless_bundle_signed_after_the_certificate_expired(
    world: SigstoreWorld, world_root: str
) -> None:
    leaf = world.issue_leaf(uri=RELEASE, issuer=GITHUB_ISSUER)
    late = int((leaf.not_after + timedelta(minutes=5)).timestamp())
    content = keyless_bundle(leaf, statement(IMAGE), world.rekor, integrated_time=late)
    fails(lambda: verify_bundle_sync(content, release_trust(world_root), image_digest=IMAGE),
          "certificate")


def test_world_rekor_key_window_is_honoured(tmp_path: Path) -> None:
    ended = datetime.now(UTC) - timedelta(days=1)
    world = SigstoreWorld(FulcioCA.create(), CTLog.create(),
                          RekorLog.create(valid_until=ended))
    root = str(world.write_trusted_root(tmp_path / "root.json"))
    leaf = world.issue_leaf(uri=RELEASE, issuer=GITHUB_ISSUER)
    content = keyless_bundle(leaf, statement(IMAGE), world.rekor)
    fails(lambda: verify_bundle_sync(content, release_trust(root), image_digest=IMAGE),
          "Rekor key", "not valid at integratedTime")


def _root_with_cas(world: SigstoreWorld, path: Path, *extra: FulcioCA) -> str:
    document = world.trusted_root()
    document["certificateAuthorities"] += [ca.trusted_root_entry() for ca in extra]
    path.write_text(json.dumps(document))
    return str(path)


def test_world_keyless_bundle_from_a_retired_ca_sharing_its_name_with_the_current_one(
    tmp_path: Path,
) -> None:
    # A Fulcio key rotation that keeps the CA names: the retired CA's validFor has ended.
    # A certificate it issues now (its key leaked, say) must not borrow the window of the
    # current CA that merely carries the same subject name.
    retired = FulcioCA.create(name="rotating", valid_until=datetime.now(UTC) - timedelta(days=1))
    current = FulcioCA.create(name="rotating")
    assert retired.intermediate.subject == current.intermediate.subject
    world = SigstoreWorld(retired, CTLog.create(), RekorLog.create())
    root = _root_with_cas(world, tmp_path / "root.json", current)
    leaf = world.issue_leaf(uri=RELEASE, issuer=GITHUB_ISSUER)
    content = keyless_bundle(leaf, statement(IMAGE), world.rekor)
    fails(lambda: verify_bundle_sync(content, release_trust(root), image_digest=IMAGE),
          "certificate chain", "was not valid")
    # The current CA's certificates still verify.
    fresh = world.issue_leaf(fulcio=current, uri=RELEASE, issuer=GITHUB_ISSUER)
    verify_bundle_sync(keyless_bundle(fresh, statement(IMAGE), world.rekor),
                       release_trust(root), image_digest=IMAGE)


def test_world_keyless_bundle_issued_by_the_root_of_a_retired_ca(tmp_path: Path) -> None:
    # The trusted root lists the retired CA as [intermediate, root]; a leaf signed by its
    # root directly must be held to that CA's window too, not waved through.
    retired = FulcioCA.create(valid_until=datetime.now(UTC) - timedelta(days=1))
    world = SigstoreWorld(retired, CTLog.create(), RekorLog.create())
    root = str(world.write_trusted_root(tmp_path / "root.json"))
    by_root = replace(retired, intermediate=retired.root, intermediate_key=retired.root_key)
    leaf = world.issue_leaf(fulcio=by_root, uri=RELEASE, issuer=GITHUB_ISSUER)
    content = keyless_bundle(leaf, statement(IMAGE), world.rekor)
    fails(lambda: verify_bundle_sync(content, release_trust(root), image_digest=IMAGE),
          "certificate chain", "was not valid")


def test_world_keyless_bundle_ca_window_is_judged_at_the_logged_time(tmp_path: Path) -> None:
    # The CA's window ended an hour ago. A certificate backdated into the window (its
    # issuer chose notBefore) but logged by Rekor now was not issued while the CA was valid.
    ended = datetime.now(UTC) - timedelta(hours=1)
    retired = FulcioCA.create(valid_until=ended)
    world = SigstoreWorld(retired, CTLog.create(), RekorLog.create())
    root = str(world.write_trusted_root(tmp_path / "root.json"))
    leaf = world.issue_leaf(uri=RELEASE, issuer=GITHUB_ISSUER,
                            not_before=ended - timedelta(minutes=5), validity=timedelta(days=1))
    content = keyless_bundle(leaf, statement(IMAGE), world.rekor,
                             integrated_time=int(datetime.now(UTC).timestamp()))
    fails(lambda: verify_bundle_sync(content, release_trust(root), image_digest=IMAGE),
          "certificate chain", "was not valid")


# --------------------------------------------------------------------------- test-made key bundles


@pytest.fixture
def key() -> ec.EllipticCurvePrivateKey:
    return ec.generate_private_key(ec.SECP256R1())


def test_key_bundle_verifies_without_a_tlog(key: ec.EllipticCurvePrivateKey) -> None:
    content = key_bundle(key, statement(IMAGE))
    for mode in ("off", "optional"):
        verified = verify_bundle_sync(content, KeyTrust(key.public_key(), mode),  # type: ignore[arg-type]
                                      image_digest=IMAGE)
        assert verified.integrated_time is None
    fails(lambda: verify_bundle_sync(content, KeyTrust(key.public_key(), "required"),
                                     image_digest=IMAGE), "transparency log entry required")


def test_key_bundle_with_rekor_entry(
    key: ec.EllipticCurvePrivateKey, world: SigstoreWorld, world_root: str
) -> None:
    content = key_bundle(key, statement(IMAGE), world.rekor, integrated_time=1_700_000_123)
    verified = verify_bundle_sync(content, KeyTrust(key.public_key(), "required", world_root),
                                  image_digest=IMAGE)
    assert verified.integrated_time == 1_700_000_123


def test_key_bundle_ed25519(world: SigstoreWorld, world_root: str) -> None:
    key = ed25519.Ed25519PrivateKey.generate()
    content = key_bundle(key, statement(IMAGE), world.rekor)
    verify_bundle_sync(content, KeyTrust(key.public_key(), "required", world_root),
                       image_digest=IMAGE)


def test_key_bundle_from_another_key(key: ec.EllipticCurvePrivateKey) -> None:
    other = ec.generate_private_key(ec.SECP256R1())
    content = key_bundle(other, statement(IMAGE))
    fails(lambda: verify_bundle_sync(content, KeyTrust(key.public_key(), "off"),
                                     image_digest=IMAGE), "signature does not verify")


def test_key_bundle_tampered_payload(key: ec.EllipticCurvePrivateKey) -> None:
    content = key_bundle(key, statement(IMAGE))

    def swap(document: dict[str, Any]) -> None:
        document["dsseEnvelope"]["payload"] = base64.b64encode(statement(OTHER_DIGEST)).decode()

    fails(lambda: verify_bundle_sync(edit(content, swap), KeyTrust(key.public_key(), "off"),
                                     image_digest=OTHER_DIGEST), "signature does not verify")


def test_key_bundle_replayed_onto_another_image(key: ec.EllipticCurvePrivateKey) -> None:
    content = key_bundle(key, statement(IMAGE))
    fails(lambda: verify_bundle_sync(content, KeyTrust(key.public_key(), "off"),
                                     image_digest=OTHER_DIGEST),
          f"names digest {IMAGE}, not {OTHER_DIGEST}")


def test_key_bundle_does_not_satisfy_a_keyless_authority(key: ec.EllipticCurvePrivateKey) -> None:
    content = key_bundle(key, statement(IMAGE))
    fails(lambda: verify_bundle_sync(content, KeylessTrust(KUBEWARDEN_IDENTITY),
                                     image_digest=IMAGE), "public key", "keyless")


def test_key_bundle_entry_for_another_payload(
    key: ec.EllipticCurvePrivateKey, world: SigstoreWorld, world_root: str
) -> None:
    other = statement(OTHER_DIGEST)
    signature = dsse_sign(key, other)
    body = dsse_body(other, b"{}", signature, public_pem(key))
    content = key_bundle(key, statement(IMAGE), world.rekor, body=body)
    fails(lambda: verify_bundle_sync(content, KeyTrust(key.public_key(), "optional", world_root),
                                     image_digest=IMAGE), "another payload")


def test_key_bundle_entry_for_another_signer(
    key: ec.EllipticCurvePrivateKey, world: SigstoreWorld, world_root: str
) -> None:
    stranger = ec.generate_private_key(ec.SECP256R1())
    content = key_bundle(key, statement(IMAGE), world.rekor, verifier_pem=public_pem(stranger))
    fails(lambda: verify_bundle_sync(content, KeyTrust(key.public_key(), "optional", world_root),
                                     image_digest=IMAGE), "another signer")


def test_key_bundle_logged_in_an_untrusted_rekor(
    key: ec.EllipticCurvePrivateKey, world_root: str
) -> None:
    content = key_bundle(key, statement(IMAGE), RekorLog.create())
    fails(lambda: verify_bundle_sync(content, KeyTrust(key.public_key(), "optional", world_root),
                                     image_digest=IMAGE), "no trusted Rekor key")
    # tlog: off ignores the entry altogether.
    verify_bundle_sync(content, KeyTrust(key.public_key(), "off", world_root), image_digest=IMAGE)


def test_key_bundle_with_a_bad_set_or_checkpoint(
    key: ec.EllipticCurvePrivateKey, world: SigstoreWorld, world_root: str
) -> None:
    content = key_bundle(key, statement(IMAGE), world.rekor)
    trust = KeyTrust(key.public_key(), "required", world_root)

    def bad_set(document: dict[str, Any]) -> None:
        entry = document["verificationMaterial"]["tlogEntries"][0]
        entry["integratedTime"] = str(int(entry["integratedTime"]) + 1)

    def bad_root(document: dict[str, Any]) -> None:
        proof = document["verificationMaterial"]["tlogEntries"][0]["inclusionProof"]
        proof["rootHash"] = flip(proof["rootHash"], 0)

    def bad_checkpoint(document: dict[str, Any]) -> None:
        checkpoint = document["verificationMaterial"]["tlogEntries"][0]["inclusionProof"][
            "checkpoint"]
        lines = checkpoint["envelope"].split("\n")
        lines[1] = str(int(lines[1]) + 1)  # the tree size the log signed
        checkpoint["envelope"] = "\n".join(lines)

    fails(lambda: verify_bundle_sync(edit(content, bad_set), trust, image_digest=IMAGE),
          "Rekor SET does not verify")
    fails(lambda: verify_bundle_sync(edit(content, bad_root), trust, image_digest=IMAGE),
          "inclusion proof")
    fails(lambda: verify_bundle_sync(edit(content, bad_checkpoint), trust, image_digest=IMAGE),
          "inclusion proof", "checkpoint")


def test_key_bundle_with_proof_but_no_set_has_no_integrated_time(
    key: ec.EllipticCurvePrivateKey, world: SigstoreWorld, world_root: str
) -> None:
    content = key_bundle(key, statement(IMAGE), world.rekor, promise=False)
    verified = verify_bundle_sync(content, KeyTrust(key.public_key(), "required", world_root),
                                  image_digest=IMAGE)
    assert verified.integrated_time is None


# --------------------------------------------------------------------------- event loop


async def test_verification_does_not_block_the_event_loop(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    real = bundle_module.verify_bundle_sync
    started = anyio.Event()

    def slow(*args: Any, **kwargs: Any) -> Any:
        # Make the CPU-bound part long enough to observe, like a large bundle would.
        anyio.from_thread.run_sync(started.set)
        time.sleep(0.2)
        return real(*args, **kwargs)

    monkeypatch.setattr(bundle_module, "verify_bundle_sync", slow)
    ticks = 0

    async def ticker() -> None:
        nonlocal ticks
        await started.wait()
        while True:
            ticks += 1
            await anyio.sleep(0.01)

    async with anyio.create_task_group() as group:
        group.start_soon(ticker)
        verified = await verify_bundle(KUBEWARDEN, KeylessTrust(KUBEWARDEN_IDENTITY),
                                       image_digest=KUBEWARDEN_DIGEST)
        ticks_during = ticks
        group.cancel_scope.cancel()
    assert verified.subject_digests == (KUBEWARDEN_DIGEST,)
    assert ticks_during >= 5, f"the event loop ran only {ticks_during} ticks during verification"
