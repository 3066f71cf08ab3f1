"""Legacy cosign keyless signatures: the real containers/image Fulcio+Rekor fixture against the
public-good root, and a private sigstore world (tests/sigstore_world.py) for every failure."""

from __future__ import annotations

import base64
import hashlib
import json
from dataclasses import replace
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec

from tests.signing import simple_signing_payload
from tests.sigstore_world import (
    DEFAULT_ISSUER,
    CTLog,
    FulcioCA,
    RekorLog,
    SigstoreWorld,
    dsse_body,
    dsse_envelope,
    dsse_pae,
    hashedrekord_body,
    utc_now,
)
from webhook.errors import VerificationError
from webhook.oci import (
    COSIGN_BUNDLE_ANNOTATION,
    COSIGN_CERTIFICATE_ANNOTATION,
    COSIGN_CHAIN_ANNOTATION,
    COSIGN_SIGNATURE_ANNOTATION,
    SignatureLayer,
)
from webhook.patterns import compile_image_pattern
from webhook.signatures import (
    CertificateAuthority,
    TrustedRootMaterial,
    VerifiedSignature,
    certificate_issuer,
    certificate_subjects,
    check_identity,
    load_trusted_root,
    verify_certificate_chain,
    verify_embedded_sct,
    verify_keyless_signature,
    verify_rekor_bundle,
)
from webhook.signatures.identity import Identity

DATA = Path(__file__).parent / "data" / "containers-image"
TRUST = Path(__file__).parent / "data" / "trust"
DIR_TRANSPORT_PREFIX = b"\x00sigstore-json\n"

FIXTURE = "dir-img-cosign-fulcio-rekor-valid"
IMAGE = "192.168.64.2:5000/cosign-signed/fulcio-rekor-1"
DIGEST = "sha256:0489474da8ea22426ece86ace6c1c0026ab2fd3cdfbbd62b7e94650266c37d9a"
OTHER_DIGEST = "sha256:634a8f35b5f16dcf4aaa0822adc0b1964bb786fca12f6831de8ddc45e5986a00"
GITHUB_OAUTH = "https://github.com/login/oauth"
SUBJECT = "mitr@redhat.com"
INTEGRATED_TIME = datetime.fromtimestamp(1674247893, UTC)
IDENTITY = Identity(issuer=GITHUB_OAUTH, subject=SUBJECT)


# --------------------------------------------------------------------------- helpers


def fixture_layer(name: str = f"{FIXTURE}/signature-1") -> SignatureLayer:
    """A containers/image dir-transport signature blob as the registry client returns it."""
    raw = (DATA / name).read_bytes()
    assert raw.startswith(DIR_TRANSPORT_PREFIX)
    document = json.loads(raw[len(DIR_TRANSPORT_PREFIX) :])
    return SignatureLayer(
        media_type=document["mimeType"],
        payload=base64.b64decode(document["payload"]),
        annotations=dict(document["annotations"]),
    )


def with_annotation(layer: SignatureLayer, key: str, value: str | None) -> SignatureLayer:
    annotations = dict(layer.annotations)
    if value is None:
        annotations.pop(key, None)
    else:
        annotations[key] = value
    return replace(layer, annotations=annotations)


def flip(data: bytes, index: int) -> bytes:
    return data[:index] + bytes([data[index] ^ 0x01]) + data[index + 1 :]


def verify(
    layer: SignatureLayer,
    *,
    identity: Identity = IDENTITY,
    trust: TrustedRootMaterial | None = None,
    digest: str = DIGEST,
    name: str = IMAGE,
) -> VerifiedSignature:
    return verify_keyless_signature(
        layer,
        identity=identity,
        trust=trust if trust is not None else load_trusted_root("public-good"),
        image_digest=digest,
        image_name=name,
    )


def fixture_certificates() -> tuple[x509.Certificate, tuple[x509.Certificate, ...]]:
    layer = fixture_layer()
    leaf = x509.load_pem_x509_certificate(layer.annotations[COSIGN_CERTIFICATE_ANNOTATION].encode())
    chain = tuple(x509.load_pem_x509_certificates(
        layer.annotations[COSIGN_CHAIN_ANNOTATION].encode()))
    return leaf, chain


def root_only(trust: TrustedRootMaterial) -> TrustedRootMaterial:
    """``trust`` with each Fulcio CA reduced to its root: the intermediate is not trusted."""
    return replace(trust, fulcio_authorities=tuple(
        replace(ca, certificates=ca.certificates[-1:]) for ca in trust.fulcio_authorities
    ))


# --------------------------------------------------------------------------- real fixture


def test_fixture_manifest_digest() -> None:
    manifest = (DATA / FIXTURE / "manifest.json").read_bytes()
    assert "sha256:" + hashlib.sha256(manifest).hexdigest() == DIGEST


@pytest.mark.parametrize(
    "root", ["public-good", str(TRUST / "sigstore-public-good-trusted_root.json")]
)
def test_real_keyless_signature_verifies_with_public_good(root: str) -> None:
    result = verify(fixture_layer(), trust=load_trusted_root(root))
    assert result == VerifiedSignature(IMAGE, DIGEST, 1674247893)


def test_real_certificate_is_expired_now_but_valid_at_integrated_time() -> None:
    leaf, _ = fixture_certificates()
    assert leaf.not_valid_after_utc < datetime.now(UTC)
    assert leaf.not_valid_before_utc <= INTEGRATED_TIME <= leaf.not_valid_after_utc


def test_real_certificate_parts_verify_separately() -> None:
    trust = load_trusted_root("public-good")
    leaf, chain = fixture_certificates()
    path = verify_certificate_chain(leaf, chain, trust, INTEGRATED_TIME)
    assert path[0] == leaf
    assert path[1].subject.rfc4514_string() == "CN=sigstore-intermediate,O=sigstore.dev"
    sct_time = verify_embedded_sct(leaf, path[1], trust)
    assert sct_time == datetime(2023, 1, 20, 20, 51, 31, 374000, tzinfo=UTC)
    # The v1 issuer extension only: no .1.8 in certificates from January 2023.
    assert certificate_issuer(leaf) == GITHUB_OAUTH
    assert certificate_subjects(leaf) == (SUBJECT,)
    assert check_identity(leaf, IDENTITY) == SUBJECT


def test_real_chain_is_judged_at_the_given_time() -> None:
    trust = load_trusted_root("public-good")
    leaf, chain = fixture_certificates()
    with pytest.raises(VerificationError, match="certificate chain does not verify"):
        verify_certificate_chain(leaf, chain, trust, datetime.now(UTC))
    # Before the current Fulcio CA's validFor window only the old CA applies: it fails.
    with pytest.raises(VerificationError, match="certificate chain"):
        verify_certificate_chain(leaf, chain, trust, datetime(2022, 1, 1, tzinfo=UTC))
    with pytest.raises(ValueError, match="timezone-aware"):
        verify_certificate_chain(leaf, chain, trust, datetime(2023, 1, 20, 20, 52))


def test_standalone_keyless_certificate_chains_through_the_trusted_intermediate() -> None:
    # rekor-set-standalone carries no chain: the intermediate comes from the trusted root.
    trust = load_trusted_root("public-good")
    leaf = x509.load_pem_x509_certificate(
        (DATA / "rekor-set-standalone" / "rekor-cert").read_bytes())
    at = datetime.fromtimestamp(1670870899, UTC)
    path = verify_certificate_chain(leaf, (), trust, at)
    verify_embedded_sct(leaf, path[1], trust)
    with pytest.raises(VerificationError, match="certificate chain"):
        verify_certificate_chain(leaf, (), root_only(trust), at)


def test_real_sct_fails_without_its_ct_log_key() -> None:
    trust = load_trusted_root("public-good")
    leaf, chain = fixture_certificates()
    issuer = verify_certificate_chain(leaf, chain, trust, INTEGRATED_TIME)[1]
    without_logs = replace(trust, ctlog_keys=())
    with pytest.raises(VerificationError, match="SCT from unknown CT log dd3d306a"):
        verify_embedded_sct(leaf, issuer, without_logs)
    expired = replace(trust, ctlog_keys=tuple(
        replace(key, valid_until=datetime(2023, 1, 1, tzinfo=UTC)) for key in trust.ctlog_keys
    ))
    with pytest.raises(VerificationError, match=r"SCT .*not valid at"):
        verify_embedded_sct(leaf, issuer, expired)
    # The SCT binds the issuer's key: the root is not the issuer.
    with pytest.raises(VerificationError, match=r"SCT signature .*does not verify"):
        verify_embedded_sct(leaf, chain[1], trust)


def test_one_flipped_payload_byte_fails() -> None:
    layer = fixture_layer()
    for index in (0, len(layer.payload) // 2, len(layer.payload) - 1):
        with pytest.raises(VerificationError, match="signature does not verify"):
            verify(replace(layer, payload=flip(layer.payload, index)))


def test_one_flipped_signature_byte_fails() -> None:
    layer = fixture_layer()
    signature = base64.b64decode(layer.annotations[COSIGN_SIGNATURE_ANNOTATION])
    for index in range(len(signature)):
        corrupted = base64.b64encode(flip(signature, index)).decode()
        with pytest.raises(VerificationError):
            verify(with_annotation(layer, COSIGN_SIGNATURE_ANNOTATION, corrupted))


def test_every_flipped_certificate_byte_fails() -> None:
    layer = fixture_layer()
    leaf, _ = fixture_certificates()
    der = leaf.public_bytes(serialization.Encoding.DER)
    messages = set()
    for index in range(len(der)):
        pem = base64.encodebytes(flip(der, index)).decode()
        text = f"-----BEGIN CERTIFICATE-----\n{pem}-----END CERTIFICATE-----\n"
        with pytest.raises(VerificationError) as failure:
            verify(with_annotation(layer, COSIGN_CERTIFICATE_ANNOTATION, text))
        messages.add(str(failure.value).split(":")[0])
    # Unparseable, wrong key, another signer in the Rekor entry, broken chain...
    assert len(messages) > 1


@pytest.mark.parametrize("field", ["SignedEntryTimestamp", "body", "integratedTime", "logIndex"])
def test_one_changed_set_byte_fails(field: str) -> None:
    layer = fixture_layer()
    bundle = json.loads(layer.annotations[COSIGN_BUNDLE_ANNOTATION])
    if field == "SignedEntryTimestamp":
        raw = base64.b64decode(bundle[field])
        bundle[field] = base64.b64encode(flip(raw, len(raw) - 1)).decode()
    elif field == "body":
        raw = base64.b64decode(bundle["Payload"]["body"])
        bundle["Payload"]["body"] = base64.b64encode(flip(raw, 40)).decode()
    else:
        bundle["Payload"][field] += 1
    with pytest.raises(VerificationError, match=r"transparency log entry .*Rekor SET does not"):
        verify(with_annotation(layer, COSIGN_BUNDLE_ANNOTATION, json.dumps(bundle)))


def test_wrong_subject_fails() -> None:
    identity = Identity(issuer=GITHUB_OAUTH, subject="this-does-not-match@example.com")
    with pytest.raises(VerificationError, match=r"subject mismatch: .*mitr@redhat.com"):
        verify(fixture_layer(), identity=identity)


def test_wrong_issuer_fails() -> None:
    identity = Identity(issuer="https://token.actions.githubusercontent.com", subject=SUBJECT)
    with pytest.raises(VerificationError, match=r"issuer mismatch: .*github.com/login/oauth"):
        verify(fixture_layer(), identity=identity)


def test_subject_regexp_must_match_the_whole_subject() -> None:
    prefix = Identity(issuer=GITHUB_OAUTH, subject_regexp=r"mitr@redhat")
    with pytest.raises(VerificationError, match="subject mismatch"):
        verify(fixture_layer(), identity=prefix)
    whole = Identity(issuer=GITHUB_OAUTH, subject_regexp=r".*@redhat\.com")
    assert verify(fixture_layer(), identity=whole).integrated_time == 1674247893


def test_wrong_digest_fails() -> None:
    with pytest.raises(VerificationError, match=f"signature is for digest {DIGEST}"):
        verify(fixture_layer(), digest=OTHER_DIGEST)


def test_other_repository_fails_unless_signed_references_allow_it() -> None:
    with pytest.raises(VerificationError, match="signature names repository"):
        verify(fixture_layer(), name="mirror.example.com/fulcio-rekor-1")
    result = verify_keyless_signature(
        fixture_layer(),
        identity=IDENTITY,
        trust=load_trusted_root("public-good"),
        image_digest=DIGEST,
        image_name="mirror.example.com/fulcio-rekor-1",
        signed_references=[compile_image_pattern("192.168.64.2:5000/cosign-signed/*")],
    )
    assert result.docker_reference == IMAGE


def test_set_removed_fails() -> None:
    layer = with_annotation(fixture_layer(), COSIGN_BUNDLE_ANNOTATION, None)
    with pytest.raises(VerificationError, match="transparency log entry required"):
        verify(layer)


def test_certificate_removed_fails() -> None:
    layer = with_annotation(fixture_layer(), COSIGN_CERTIFICATE_ANNOTATION, None)
    with pytest.raises(VerificationError, match=r"not a keyless signature: no .*certificate"):
        verify(layer)


def test_chain_removed_fails_unless_the_intermediate_is_trusted() -> None:
    layer = with_annotation(fixture_layer(), COSIGN_CHAIN_ANNOTATION, None)
    trust = load_trusted_root("public-good")
    # public-good lists the intermediate in the CA's certChain: it is trusted.
    assert verify(layer, trust=trust).integrated_time == 1674247893
    # With only the root trusted the leaf cannot be chained, as containers/image rejects.
    with pytest.raises(VerificationError, match="certificate chain does not verify"):
        verify(layer, trust=root_only(trust))
    assert verify(fixture_layer(), trust=root_only(trust)).integrated_time == 1674247893


def test_root_from_fulcio_v1_pem_alone_verifies_with_the_chain_annotation() -> None:
    public_good = load_trusted_root("public-good")
    root = x509.load_pem_x509_certificate((DATA / "fulcio_v1.crt.pem").read_bytes())
    trust = replace(public_good, fulcio_authorities=(
        CertificateAuthority((root,), None, None, None),))
    assert verify(fixture_layer(), trust=trust).docker_reference == IMAGE


def test_staging_root_fails() -> None:
    with pytest.raises(VerificationError, match="no trusted Rekor key for logID c0d23d6a"):
        verify(fixture_layer(), trust=load_trusted_root("staging"))


def test_staging_fulcio_with_public_good_logs_fails_the_chain() -> None:
    public_good = load_trusted_root("public-good")
    staging = load_trusted_root("staging")
    mixed = replace(public_good, fulcio_authorities=staging.fulcio_authorities)
    with pytest.raises(VerificationError, match="certificate chain does not verify"):
        verify(fixture_layer(), trust=mixed)


def test_garbage_annotations_fail_with_their_names() -> None:
    layer = fixture_layer()
    with pytest.raises(VerificationError, match="certificate annotation is not a PEM"):
        verify(with_annotation(layer, COSIGN_CERTIFICATE_ANNOTATION, "not a certificate"))
    with pytest.raises(VerificationError, match="chain annotation is not PEM"):
        verify(with_annotation(layer, COSIGN_CHAIN_ANNOTATION, "garbage"))
    with pytest.raises(VerificationError, match="Rekor bundle is not JSON"):
        verify(with_annotation(layer, COSIGN_BUNDLE_ANNOTATION, "{"))
    two = layer.annotations[COSIGN_CERTIFICATE_ANNOTATION] * 2
    with pytest.raises(VerificationError, match="holds 2 certificates"):
        verify(with_annotation(layer, COSIGN_CERTIFICATE_ANNOTATION, two))


def test_key_signature_layer_is_not_keyless() -> None:
    layer = fixture_layer("dir-img-cosign-key-rekor-valid/signature-1")
    with pytest.raises(VerificationError, match="not a keyless signature"):
        verify(layer)


# --------------------------------------------------------------------------- sigstore world

WORLD_IMAGE = "registry.sigstore-world.test/team/app"
WORLD_DIGEST = "sha256:" + "ab" * 32
WORLD_OTHER_DIGEST = "sha256:" + "cd" * 32
WORLD_ISSUER = "https://token.actions.githubusercontent.com"
WORLD_EMAIL = "dev@sigstore-world.test"
WORKFLOW = "https://github.com/acme/app/.github/workflows/release.yml@refs/heads/main"
WORLD_IDENTITY = Identity(issuer=WORLD_ISSUER, subject=WORLD_EMAIL)


@pytest.fixture(scope="module")
def world() -> SigstoreWorld:
    return SigstoreWorld.create()


def two_hours_ago() -> datetime:
    # Leaves live ten minutes: signing two hours ago means the certificate is expired now,
    # as every real keyless signature soon is.
    return utc_now() - timedelta(hours=2)


def world_verify(
    world: SigstoreWorld,
    layer: SignatureLayer,
    *,
    identity: Identity = WORLD_IDENTITY,
    digest: str = WORLD_DIGEST,
    trust: TrustedRootMaterial | None = None,
) -> VerifiedSignature:
    return verify_keyless_signature(
        layer,
        identity=identity,
        trust=trust if trust is not None else world.material(),
        image_digest=digest,
        image_name=WORLD_IMAGE,
    )


def test_world_keyless_signature_verifies(world: SigstoreWorld) -> None:
    leaf = world.issue_leaf(email=WORLD_EMAIL, issuer=WORLD_ISSUER, not_before=two_hours_ago())
    layer = world.keyless_signature_layer(leaf, WORLD_IMAGE, WORLD_DIGEST)
    result = world_verify(world, layer)
    assert result.manifest_digest == WORLD_DIGEST
    assert result.integrated_time == int(leaf.not_before.timestamp()) + 2


def test_world_trusted_root_file_loads_and_verifies(
    world: SigstoreWorld, tmp_path: Path
) -> None:
    path = world.write_trusted_root(tmp_path / "trusted_root.json")
    document = json.loads(path.read_text())
    assert document["mediaType"] == "application/vnd.dev.sigstore.trustedroot+json;version=0.1"
    trust = load_trusted_root(str(path))
    assert [key.log_id for key in trust.rekor_keys] == [world.rekor.log_id]
    assert [key.log_id for key in trust.ctlog_keys] == [world.ctlog.log_id.hex()]
    assert trust.fulcio_certs == (world.fulcio.intermediate, world.fulcio.root)
    leaf = world.issue_leaf(email=WORLD_EMAIL, issuer=WORLD_ISSUER)
    layer = world.keyless_signature_layer(leaf, WORLD_IMAGE, WORLD_DIGEST)
    assert world_verify(world, layer, trust=trust).docker_reference == WORLD_IMAGE


def test_world_leaf_looks_like_fulcio(world: SigstoreWorld) -> None:
    leaf = world.issue_leaf(email=WORLD_EMAIL, issuer=WORLD_ISSUER)
    cert = leaf.certificate
    assert cert.not_valid_after_utc - cert.not_valid_before_utc == timedelta(minutes=10)
    assert cert.subject == x509.Name([])
    scts = cert.extensions.get_extension_for_class(
        x509.PrecertificateSignedCertificateTimestamps).value
    assert [sct.log_id for sct in scts] == [world.ctlog.log_id]
    # The precertificate carries the poison instead of the SCT list.
    assert leaf.precertificate.extensions.get_extension_for_class(x509.PrecertPoison).critical
    assert certificate_issuer(cert) == WORLD_ISSUER
    assert certificate_subjects(cert) == (WORLD_EMAIL,)


def test_world_chain_annotation_is_optional_when_the_intermediate_is_trusted(
    world: SigstoreWorld,
) -> None:
    leaf = world.issue_leaf(email=WORLD_EMAIL, issuer=WORLD_ISSUER)
    layer = world.keyless_signature_layer(leaf, WORLD_IMAGE, WORLD_DIGEST, chain=False)
    assert world_verify(world, layer).docker_reference == WORLD_IMAGE
    with pytest.raises(VerificationError, match="certificate chain does not verify"):
        world_verify(world, layer, trust=root_only(world.material()))


def test_world_expired_certificate_without_set_fails(world: SigstoreWorld) -> None:
    leaf = world.issue_leaf(email=WORLD_EMAIL, issuer=WORLD_ISSUER, not_before=two_hours_ago())
    layer = world.keyless_signature_layer(leaf, WORLD_IMAGE, WORLD_DIGEST, tlog=False)
    with pytest.raises(VerificationError, match="transparency log entry required"):
        world_verify(world, layer)


def test_world_fresh_certificate_without_set_fails_too(world: SigstoreWorld) -> None:
    leaf = world.issue_leaf(email=WORLD_EMAIL, issuer=WORLD_ISSUER)
    layer = world.keyless_signature_layer(leaf, WORLD_IMAGE, WORLD_DIGEST, tlog=False)
    with pytest.raises(VerificationError, match="transparency log entry required"):
        world_verify(world, layer)


def test_world_certificate_from_an_untrusted_ca_fails(world: SigstoreWorld) -> None:
    stranger = FulcioCA.create(name="sigstore-stranger")
    leaf = world.issue_leaf(fulcio=stranger, email=WORLD_EMAIL, issuer=WORLD_ISSUER)
    layer = world.keyless_signature_layer(leaf, WORLD_IMAGE, WORLD_DIGEST)
    with pytest.raises(VerificationError, match="certificate chain does not verify"):
        world_verify(world, layer)


def test_world_ca_outside_its_trusted_root_window_fails(world: SigstoreWorld) -> None:
    leaf = world.issue_leaf(email=WORLD_EMAIL, issuer=WORLD_ISSUER, not_before=two_hours_ago())
    layer = world.keyless_signature_layer(leaf, WORLD_IMAGE, WORLD_DIGEST)
    trust = world.material()
    retired = replace(trust, fulcio_authorities=tuple(
        replace(ca, valid_until=leaf.not_before - timedelta(days=1))
        for ca in trust.fulcio_authorities
    ))
    with pytest.raises(VerificationError, match=r"no Fulcio CA of trusted root .* was valid"):
        world_verify(world, layer, trust=retired)


def test_world_sct_from_an_unknown_log_fails(world: SigstoreWorld) -> None:
    leaf = world.issue_leaf(ctlog=CTLog.create(), email=WORLD_EMAIL, issuer=WORLD_ISSUER)
    layer = world.keyless_signature_layer(leaf, WORLD_IMAGE, WORLD_DIGEST)
    with pytest.raises(VerificationError, match="SCT from unknown CT log"):
        world_verify(world, layer)


def test_world_sct_signed_over_another_certificate_fails(world: SigstoreWorld) -> None:
    donor = world.issue_leaf(email="someone-else@sigstore-world.test", issuer=WORLD_ISSUER)
    leaf = world.issue_leaf(email=WORLD_EMAIL, issuer=WORLD_ISSUER, scts=donor.scts)
    layer = world.keyless_signature_layer(leaf, WORLD_IMAGE, WORLD_DIGEST)
    with pytest.raises(VerificationError, match=r"SCT signature .*does not verify"):
        world_verify(world, layer)


def test_world_certificate_without_sct_fails(world: SigstoreWorld) -> None:
    leaf = world.issue_leaf(email=WORLD_EMAIL, issuer=WORLD_ISSUER, scts=[])
    layer = world.keyless_signature_layer(leaf, WORLD_IMAGE, WORLD_DIGEST)
    with pytest.raises(VerificationError, match="SCT missing"):
        world_verify(world, layer)


def test_world_sct_from_a_retired_ct_key_fails() -> None:
    past = utc_now() - timedelta(days=30)
    world = SigstoreWorld(FulcioCA.create(), CTLog.create(valid_until=past), RekorLog.create())
    leaf = world.issue_leaf(email=WORLD_EMAIL, issuer=WORLD_ISSUER)
    layer = world.keyless_signature_layer(leaf, WORLD_IMAGE, WORLD_DIGEST)
    with pytest.raises(VerificationError, match=r"SCT from CT log .*not valid at"):
        world_verify(world, layer)


def test_world_set_for_another_body_fails(world: SigstoreWorld) -> None:
    leaf = world.issue_leaf(email=WORLD_EMAIL, issuer=WORLD_ISSUER)
    layer = world.keyless_signature_layer(leaf, WORLD_IMAGE, WORLD_DIGEST)
    # A genuine SET — for the same certificate's signature over another payload.
    other_payload = simple_signing_payload(WORLD_IMAGE, WORLD_OTHER_DIGEST)
    other_signature = leaf.sign(other_payload)
    entry = world.rekor.log(
        hashedrekord_body(other_payload, other_signature, leaf.pem),
        int(leaf.not_before.timestamp()) + 1,
    )
    forged = with_annotation(layer, COSIGN_BUNDLE_ANNOTATION, entry.bundle_annotation())
    with pytest.raises(VerificationError, match=r"transparency log .*another payload"):
        world_verify(world, forged)
    # ...and for the same payload and signature logged with another certificate.
    stranger = world.issue_leaf(email=WORLD_EMAIL, issuer=WORLD_ISSUER)
    signature = base64.b64decode(layer.annotations[COSIGN_SIGNATURE_ANNOTATION])
    entry = world.rekor.log(
        hashedrekord_body(layer.payload, signature, stranger.pem),
        int(leaf.not_before.timestamp()) + 1,
    )
    forged = with_annotation(layer, COSIGN_BUNDLE_ANNOTATION, entry.bundle_annotation())
    with pytest.raises(VerificationError, match=r"transparency log .*another signer"):
        world_verify(world, forged)


def test_world_set_from_an_untrusted_rekor_fails(world: SigstoreWorld) -> None:
    leaf = world.issue_leaf(email=WORLD_EMAIL, issuer=WORLD_ISSUER)
    layer = world.keyless_signature_layer(leaf, WORLD_IMAGE, WORLD_DIGEST, rekor=RekorLog.create())
    with pytest.raises(VerificationError, match=r"transparency log .*no trusted Rekor key"):
        world_verify(world, layer)


@pytest.mark.parametrize("offset", [timedelta(seconds=-1), timedelta(minutes=10, seconds=1),
                                    timedelta(days=1)])
def test_world_integrated_time_outside_certificate_validity_fails(
    world: SigstoreWorld, offset: timedelta
) -> None:
    leaf = world.issue_leaf(email=WORLD_EMAIL, issuer=WORLD_ISSUER, not_before=two_hours_ago())
    when = int((leaf.not_before + offset).timestamp())
    layer = world.keyless_signature_layer(leaf, WORLD_IMAGE, WORLD_DIGEST, integrated_time=when)
    with pytest.raises(VerificationError, match="certificate was not valid at the transparency"):
        world_verify(world, layer)


@pytest.mark.parametrize("offset", [timedelta(0), timedelta(minutes=10)])
def test_world_integrated_time_at_the_validity_bounds_passes(
    world: SigstoreWorld, offset: timedelta
) -> None:
    leaf = world.issue_leaf(email=WORLD_EMAIL, issuer=WORLD_ISSUER, not_before=two_hours_ago())
    when = int((leaf.not_before + offset).timestamp())
    layer = world.keyless_signature_layer(leaf, WORLD_IMAGE, WORLD_DIGEST, integrated_time=when)
    assert world_verify(world, layer).integrated_time == when


def test_world_signature_replayed_onto_another_image_fails(world: SigstoreWorld) -> None:
    leaf = world.issue_leaf(email=WORLD_EMAIL, issuer=WORLD_ISSUER)
    layer = world.keyless_signature_layer(leaf, WORLD_IMAGE, WORLD_DIGEST)
    with pytest.raises(VerificationError, match=f"signature is for digest {WORLD_DIGEST}"):
        world_verify(world, layer, digest=WORLD_OTHER_DIGEST)


def test_world_issuer_only_in_the_v1_extension_works(world: SigstoreWorld) -> None:
    leaf = world.issue_leaf(email=WORLD_EMAIL, issuer=None, issuer_v1=WORLD_ISSUER)
    extensions = leaf.certificate.extensions
    assert not any(e.oid.dotted_string == "1.3.6.1.4.1.57264.1.8" for e in extensions)
    v1 = extensions.get_extension_for_oid(x509.ObjectIdentifier("1.3.6.1.4.1.57264.1.1")).value
    assert isinstance(v1, x509.UnrecognizedExtension)
    assert v1.value == WORLD_ISSUER.encode()
    layer = world.keyless_signature_layer(leaf, WORLD_IMAGE, WORLD_DIGEST)
    assert world_verify(world, layer).docker_reference == WORLD_IMAGE


def test_world_v2_issuer_extension_wins_over_v1(world: SigstoreWorld) -> None:
    leaf = world.issue_leaf(email=WORLD_EMAIL, issuer=WORLD_ISSUER,
                            issuer_v1="https://old-issuer.example")
    assert certificate_issuer(leaf.certificate) == WORLD_ISSUER
    layer = world.keyless_signature_layer(leaf, WORLD_IMAGE, WORLD_DIGEST)
    assert world_verify(world, layer).docker_reference == WORLD_IMAGE


def test_world_certificate_without_issuer_fails(world: SigstoreWorld) -> None:
    leaf = world.issue_leaf(email=WORLD_EMAIL, issuer=None)
    layer = world.keyless_signature_layer(leaf, WORLD_IMAGE, WORLD_DIGEST)
    with pytest.raises(VerificationError, match="issuer missing"):
        world_verify(world, layer)


def test_world_wrong_issuer_fails(world: SigstoreWorld) -> None:
    leaf = world.issue_leaf(email=WORLD_EMAIL, issuer="https://accounts.google.com")
    layer = world.keyless_signature_layer(leaf, WORLD_IMAGE, WORLD_DIGEST)
    with pytest.raises(VerificationError, match="issuer mismatch"):
        world_verify(world, layer)


def test_world_subject_uri_san_works(world: SigstoreWorld) -> None:
    leaf = world.issue_leaf(uri=WORKFLOW, issuer=WORLD_ISSUER)
    layer = world.keyless_signature_layer(leaf, WORLD_IMAGE, WORLD_DIGEST)
    exact = Identity(issuer=WORLD_ISSUER, subject=WORKFLOW)
    assert world_verify(world, layer, identity=exact).docker_reference == WORLD_IMAGE
    pattern = Identity(issuer=WORLD_ISSUER, subject_regexp=r"https://github\.com/acme/app/.+")
    assert world_verify(world, layer, identity=pattern).docker_reference == WORLD_IMAGE
    prefix = Identity(issuer=WORLD_ISSUER, subject_regexp=r"https://github\.com/acme/app")
    with pytest.raises(VerificationError, match="subject mismatch"):
        world_verify(world, layer, identity=prefix)
    with pytest.raises(VerificationError, match="subject mismatch"):
        world_verify(world, layer)


def test_world_non_code_signing_certificate_fails(world: SigstoreWorld) -> None:
    leaf = world.issue_leaf(email=WORLD_EMAIL, issuer=WORLD_ISSUER, code_signing=False)
    layer = world.keyless_signature_layer(leaf, WORLD_IMAGE, WORLD_DIGEST)
    with pytest.raises(VerificationError, match="not a code-signing certificate"):
        world_verify(world, layer)


def test_world_signature_by_another_key_fails(world: SigstoreWorld) -> None:
    leaf = world.issue_leaf(email=WORLD_EMAIL, issuer=WORLD_ISSUER)
    other = world.issue_leaf(email=WORLD_EMAIL, issuer=WORLD_ISSUER)
    layer = world.keyless_signature_layer(leaf, WORLD_IMAGE, WORLD_DIGEST)
    swapped = with_annotation(layer, COSIGN_CERTIFICATE_ANNOTATION, other.pem)
    with pytest.raises(VerificationError, match="signature does not verify with the certificate"):
        world_verify(world, swapped)


def test_world_tampered_certificate_logged_in_rekor_fails_the_chain(
    world: SigstoreWorld,
) -> None:
    leaf = world.issue_leaf(email=WORLD_EMAIL, issuer=WORLD_ISSUER)
    der = leaf.certificate.public_bytes(serialization.Encoding.DER)
    # flip a byte of the serial number (its length varies with the random value)
    serial = leaf.certificate.serial_number
    serial_bytes = serial.to_bytes((serial.bit_length() + 7) // 8, "big")
    offset = der.find(serial_bytes)
    assert offset > 0
    tampered = replace(leaf, certificate=x509.load_der_x509_certificate(
        flip(der, offset + len(serial_bytes) // 2)))
    layer = world.keyless_signature_layer(tampered, WORLD_IMAGE, WORLD_DIGEST)
    with pytest.raises(VerificationError, match="certificate chain does not verify"):
        world_verify(world, layer)


def test_world_dsse_helpers_make_a_verifiable_envelope_and_rekor_entry(
    world: SigstoreWorld,
) -> None:
    # For the attestation verifiers: the world signs DSSE envelopes and logs dsse entries.
    leaf = world.issue_leaf(email=WORLD_EMAIL, issuer=WORLD_ISSUER)
    statement = b'{"_type":"https://in-toto.io/Statement/v1"}'
    envelope = dsse_envelope(leaf, "application/vnd.in-toto+json", statement)
    signature = base64.b64decode(envelope["signatures"][0]["sig"])
    leaf.key.public_key().verify(
        signature, dsse_pae("application/vnd.in-toto+json", statement), ec.ECDSA(hashes.SHA256())
    )
    body = json.loads(dsse_body(json.dumps(envelope).encode(), leaf.pem))
    assert body["kind"] == "dsse"
    assert body["spec"]["signatures"][0]["verifier"] == base64.b64encode(
        leaf.pem.encode()).decode()
    # A SET over a dsse body verifies, but the hashedrekord check rejects the entry kind.
    entry = world.rekor.log(dsse_body(json.dumps(envelope).encode(), leaf.pem), 1_700_000_000)
    with pytest.raises(VerificationError, match="not a hashedrekord"):
        verify_rekor_bundle(entry.bundle_annotation(), payload=statement, signature=signature,
                            signer=leaf.certificate, rekor_keys=world.material().rekor_keys)


def test_world_certificate_with_a_duplicated_extension_fails_cleanly(world: SigstoreWorld) -> None:
    # RFC 5280 forbids two extensions with one OID; cryptography raises DuplicateExtension
    # (not a ValueError) when they are read: a failed check, never a crash.
    leaf = world.issue_leaf(email="dev@example.com")
    der = leaf.certificate.public_bytes(serialization.Encoding.DER)
    authority_key_id = bytes.fromhex("0603551d23")  # OID 2.5.29.35, rewritten to 2.5.29.14
    assert der.count(authority_key_id) == 1
    doctored = x509.load_der_x509_certificate(
        der.replace(authority_key_id, bytes.fromhex("0603551d0e")))
    identity = Identity(issuer=DEFAULT_ISSUER, subject="dev@example.com")
    for check in (
        lambda: check_identity(doctored, identity),
        lambda: certificate_issuer(doctored),
        lambda: certificate_subjects(doctored),
        lambda: verify_certificate_chain(doctored, leaf.chain, world.material(), utc_now()),
        lambda: verify_embedded_sct(doctored, leaf.chain[0], world.material()),
    ):
        with pytest.raises(VerificationError, match=r"[Dd]uplicate"):
            check()
