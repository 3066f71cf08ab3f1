"""Legacy cosign signatures with keys: real containers/image fixtures and generated keys."""

from __future__ import annotations

import base64
import hashlib
import json
from collections.abc import Callable
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pytest
import rfc8785
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import dsa, ec, ed25519, padding, rsa, x25519

from webhook.errors import VerificationError
from webhook.oci import (
    COSIGN_BUNDLE_ANNOTATION,
    COSIGN_CERTIFICATE_ANNOTATION,
    COSIGN_SIGNATURE_ANNOTATION,
    COSIGN_SIMPLE_SIGNING,
    SignatureLayer,
)
from webhook.patterns import compile_image_pattern
from webhook.signatures import (
    PublicKey,
    RekorEntry,
    RekorKey,
    key_fingerprint,
    load_public_key,
    load_trusted_root,
    parse_simple_signing,
    verify_key_signature,
    verify_raw_signature,
    verify_rekor_bundle,
)

DATA = Path(__file__).parent / "data" / "containers-image"
DIR_TRANSPORT_PREFIX = b"\x00sigstore-json\n"

IMAGE_A = "192.168.64.2:5000/cosign-signed-single-sample"
DIGEST_A = "sha256:634a8f35b5f16dcf4aaa0822adc0b1964bb786fca12f6831de8ddc45e5986a00"
IMAGE_B = "192.168.64.2:5000/cosign-signed/key-1"
DIGEST_B = "sha256:0489474da8ea22426ece86ace6c1c0026ab2fd3cdfbbd62b7e94650266c37d9a"
PUBLIC_GOOD_REKOR_LOG_ID = "c0d23d6ad406973f9559f3ba2d1ca01f84147d8ffc5b8445c224f98b9591801d"
KEY_REKOR_INTEGRATED_TIME = 1674251859


# --------------------------------------------------------------------------- helpers


def fixture_layer(name: str) -> SignatureLayer:
    """A containers/image dir-transport signature blob as the registry client would return it."""
    raw = (DATA / name).read_bytes()
    assert raw.startswith(DIR_TRANSPORT_PREFIX), name
    document = json.loads(raw[len(DIR_TRANSPORT_PREFIX) :])
    return SignatureLayer(
        media_type=document["mimeType"],
        payload=base64.b64decode(document["payload"]),
        annotations=dict(document.get("annotations", {})),
    )


def manifest_digest(directory: str) -> str:
    return "sha256:" + hashlib.sha256((DATA / directory / "manifest.json").read_bytes()).hexdigest()


def fixture_key(name: str) -> PublicKey:
    return load_public_key((DATA / name).read_bytes())


def with_annotations(layer: SignatureLayer, **changes: str | None) -> SignatureLayer:
    """``changes`` maps annotation keys (underscored) to new values; None removes."""
    annotations = dict(layer.annotations)
    for name, value in changes.items():
        key = {"bundle": COSIGN_BUNDLE_ANNOTATION, "signature": COSIGN_SIGNATURE_ANNOTATION}[name]
        if value is None:
            annotations.pop(key, None)
        else:
            annotations[key] = value
    return SignatureLayer(layer.media_type, layer.payload, annotations)


PrivateKey = ec.EllipticCurvePrivateKey | rsa.RSAPrivateKey | ed25519.Ed25519PrivateKey


def simple_signing(reference: str, digest: str, **optional: Any) -> bytes:
    return json.dumps({
        "critical": {
            "identity": {"docker-reference": reference},
            "image": {"docker-manifest-digest": digest},
            "type": "cosign container image signature",
        },
        "optional": optional or None,
    }).encode()


def cosign_sign(key: PrivateKey, payload: bytes, *, pss: bool = False) -> bytes:
    """Sign as cosign does: ECDSA SHA-256 (P-256) / SHA-384 (P-384), RSA PKCS#1 v1.5, Ed25519."""
    if isinstance(key, ec.EllipticCurvePrivateKey):
        algorithm = hashes.SHA384() if key.curve.name == "secp384r1" else hashes.SHA256()
        return key.sign(payload, ec.ECDSA(algorithm))
    if isinstance(key, rsa.RSAPrivateKey):
        if pss:
            scheme = padding.PSS(mgf=padding.MGF1(hashes.SHA256()), salt_length=32)
            return key.sign(payload, scheme, hashes.SHA256())
        return key.sign(payload, padding.PKCS1v15(), hashes.SHA256())
    return key.sign(payload)


def make_layer(key: PrivateKey, payload: bytes, signature: bytes | None = None) -> SignatureLayer:
    signature = cosign_sign(key, payload) if signature is None else signature
    return SignatureLayer(
        COSIGN_SIMPLE_SIGNING,
        payload,
        {COSIGN_SIGNATURE_ANNOTATION: base64.b64encode(signature).decode()},
    )


def public_pem(key: PrivateKey | PublicKey) -> bytes:
    public = key.public_key() if hasattr(key, "public_key") else key
    return public.public_bytes(
        serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo
    )


# Keys are slow to make (RSA): one of each per module.
GENERATED: dict[str, PrivateKey] = {
    "ecdsa-p256": ec.generate_private_key(ec.SECP256R1()),
    "ecdsa-p384": ec.generate_private_key(ec.SECP384R1()),
    "rsa-3072": rsa.generate_private_key(public_exponent=65537, key_size=3072),
    "ed25519": ed25519.Ed25519PrivateKey.generate(),
}
REPO = "registry.example.com/team/app"
DIGEST = "sha256:" + "ab" * 32
OTHER_DIGEST = "sha256:" + "cd" * 32


def verify(layer: SignatureLayer, key: PublicKey, **kwargs: Any) -> Any:
    kwargs.setdefault("image_digest", DIGEST)
    kwargs.setdefault("image_name", REPO)
    return verify_key_signature(layer, key=key, **kwargs)


# --------------------------------------------------------------------------- keys


def test_fixture_key_fingerprints() -> None:
    assert key_fingerprint(fixture_key("cosign.pub")).startswith("c87a7901")
    assert key_fingerprint(fixture_key("cosign.pub")).endswith("301f")
    assert key_fingerprint(fixture_key("rekor.pub")) == PUBLIC_GOOD_REKOR_LOG_ID


@pytest.mark.parametrize("name", sorted(GENERATED))
def test_load_public_key_accepts_supported_types_as_bytes_and_str(name: str) -> None:
    pem = public_pem(GENERATED[name])
    assert key_fingerprint(load_public_key(pem)) == key_fingerprint(load_public_key(pem.decode()))


@pytest.mark.parametrize(
    ("make_key", "message"),
    [
        (lambda: ec.generate_private_key(ec.SECP256K1()), "unsupported ECDSA curve secp256k1"),
        (lambda: ec.generate_private_key(ec.SECP521R1()), "unsupported ECDSA curve secp521r1"),
        (lambda: rsa.generate_private_key(65537, 1024), "RSA key of 1024 bits is too small"),
        (lambda: dsa.generate_private_key(2048), "unsupported public key type"),
        (lambda: x25519.X25519PrivateKey.generate(), "unsupported public key type"),
    ],
    ids=["secp256k1", "p521", "rsa-1024", "dsa", "x25519"],
)
def test_load_public_key_rejects_unsupported_keys(
    make_key: Callable[[], Any], message: str
) -> None:
    pem = make_key().public_key().public_bytes(
        serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo
    )
    with pytest.raises(VerificationError, match=message):
        load_public_key(pem)


@pytest.mark.parametrize(
    "text",
    [
        "",
        "not a key at all",
        "-----BEGIN PUBLIC KEY-----\nbm90IGEga2V5\n-----END PUBLIC KEY-----\n",
        # a private key is not a public key, even though it contains one
        GENERATED["ecdsa-p256"].private_bytes(
            serialization.Encoding.PEM,
            serialization.PrivateFormat.PKCS8,
            serialization.NoEncryption(),
        ).decode(),
        # nor is a certificate
        (DATA / "fulcio_v1.crt.pem").read_text(),
    ],
    ids=["empty", "garbage", "bad-der", "private-key", "certificate"],
)
def test_load_public_key_rejects_garbage(text: str) -> None:
    with pytest.raises(VerificationError, match="PEM public key"):
        load_public_key(text)


# --------------------------------------------------------------------------- payload


def test_parse_simple_signing_reads_fields() -> None:
    claim = parse_simple_signing(fixture_layer("dir-img-cosign-valid-with-tag/signature-1").payload)
    assert claim.docker_reference == "192.168.64.2:5000/skopeo-signed:tag"
    assert claim.manifest_digest == DIGEST_A
    assert claim.type == "cosign container image signature"
    assert claim.optional == {"creator": "containers/image 5.21.2-dev", "timestamp": 1657296609}
    untagged = parse_simple_signing(fixture_layer("dir-img-cosign-valid/signature-1").payload)
    assert untagged.optional is None


def _mutated(change: Callable[[dict[str, Any]], None]) -> bytes:
    document = json.loads(simple_signing(REPO, DIGEST))
    change(document)
    return json.dumps(document).encode()


@pytest.mark.parametrize(
    ("payload", "message"),
    [
        (b"\xff\xfe", "not JSON"),
        (b"{not json", "not JSON"),
        (b"[]", "must be a JSON object"),
        (_mutated(lambda d: d.pop("critical")), "missing critical$"),
        (_mutated(lambda d: d.update(critical="x")), "critical must be a JSON object"),
        (_mutated(lambda d: d["critical"].pop("identity")), "missing critical.identity$"),
        (
            _mutated(lambda d: d["critical"]["identity"].pop("docker-reference")),
            "missing critical.identity.docker-reference",
        ),
        (
            _mutated(lambda d: d["critical"]["identity"].update({"docker-reference": 1})),
            "critical.identity.docker-reference must be a JSON string",
        ),
        (_mutated(lambda d: d["critical"].pop("image")), "missing critical.image$"),
        (
            _mutated(lambda d: d["critical"]["image"].pop("docker-manifest-digest")),
            "missing critical.image.docker-manifest-digest",
        ),
        (_mutated(lambda d: d["critical"].pop("type")), "missing critical.type"),
        (
            _mutated(lambda d: d["critical"].update(type="atomic container signature")),
            "critical.type is 'atomic container signature'",
        ),
        (_mutated(lambda d: d.update(optional=[1])), "optional must be a JSON object or null"),
        (
            b'{"critical":{"identity":{"docker-reference":"a/b"},"image":{'
            b'"docker-manifest-digest":"sha256:1","docker-manifest-digest":"sha256:2"},'
            b'"type":"cosign container image signature"}}',
            "duplicate field 'docker-manifest-digest'",
        ),
    ],
)
def test_parse_simple_signing_names_the_bad_field(payload: bytes, message: str) -> None:
    with pytest.raises(VerificationError, match=message):
        parse_simple_signing(payload)


# --------------------------------------------------------------------------- real fixtures


def test_fixture_manifest_digests() -> None:
    assert manifest_digest("dir-img-cosign-valid") == DIGEST_A
    assert manifest_digest("dir-img-cosign-key-rekor-valid") == DIGEST_B
    assert manifest_digest("dir-img-cosign-modified-manifest") == (
        "sha256:d9dcafdb480aa7c475e91737b96925e45844213dcb0290b4a90017459121f71f"
    )


def test_valid_signature_verifies_with_cosign_pub() -> None:
    result = verify_key_signature(
        fixture_layer("dir-img-cosign-valid/signature-1"),
        key=fixture_key("cosign.pub"),
        image_digest=manifest_digest("dir-img-cosign-valid"),
        image_name=IMAGE_A,
    )
    assert result.docker_reference == IMAGE_A
    assert result.manifest_digest == DIGEST_A
    assert result.integrated_time is None


def test_valid_signature_does_not_verify_with_another_key() -> None:
    with pytest.raises(VerificationError, match="signature does not verify with key sha256:"):
        verify_key_signature(
            fixture_layer("dir-img-cosign-valid/signature-1"),
            key=fixture_key("cosign2.pub"),
            image_digest=DIGEST_A,
            image_name=IMAGE_A,
        )


def test_signature_for_another_repository_fails_unless_signed_references_allow_it() -> None:
    layer = fixture_layer("dir-img-cosign-valid/signature-1")
    mirror = "registry.example.com/mirror/cosign-signed-single-sample"
    with pytest.raises(
        VerificationError, match=f"signature names repository {IMAGE_A}, not {mirror}"
    ):
        verify_key_signature(
            layer, key=fixture_key("cosign.pub"), image_digest=DIGEST_A, image_name=mirror
        )
    with pytest.raises(VerificationError, match="signature names repository"):
        verify_key_signature(
            layer,
            key=fixture_key("cosign.pub"),
            image_digest=DIGEST_A,
            image_name=mirror,
            signed_references=[compile_image_pattern("192.168.64.2:5000/other/*")],
        )
    result = verify_key_signature(
        layer,
        key=fixture_key("cosign.pub"),
        image_digest=DIGEST_A,
        image_name=mirror,
        signed_references=[
            compile_image_pattern("quay.io/**"),
            compile_image_pattern("192.168.64.2:5000/*"),
        ],
    )
    assert result.docker_reference == IMAGE_A


def test_signature_with_a_tagged_reference_names_its_repository() -> None:
    layer = fixture_layer("dir-img-cosign-valid-with-tag/signature-1")
    result = verify_key_signature(
        layer,
        key=fixture_key("cosign.pub"),
        image_digest=manifest_digest("dir-img-cosign-valid-with-tag"),
        image_name="192.168.64.2:5000/skopeo-signed",
    )
    assert result.docker_reference == "192.168.64.2:5000/skopeo-signed:tag"


@pytest.mark.parametrize("name", ["signature-1", "signature-2"])
def test_two_valid_signatures_both_verify(name: str) -> None:
    verify_key_signature(
        fixture_layer(f"dir-img-cosign-valid-2/{name}"),
        key=fixture_key("cosign.pub"),
        image_digest=manifest_digest("dir-img-cosign-valid-2"),
        image_name=IMAGE_A,
    )


def test_mixed_signatures_one_fails_one_verifies() -> None:
    digest = manifest_digest("dir-img-cosign-mixed")
    with pytest.raises(VerificationError, match="does not verify"):
        verify_key_signature(
            fixture_layer("dir-img-cosign-mixed/signature-1"),
            key=fixture_key("cosign.pub"),
            image_digest=digest,
            image_name=IMAGE_A,
        )
    verify_key_signature(
        fixture_layer("dir-img-cosign-mixed/signature-2"),
        key=fixture_key("cosign.pub"),
        image_digest=digest,
        image_name=IMAGE_A,
    )


def test_modified_manifest_fails_with_the_digest_message() -> None:
    digest = manifest_digest("dir-img-cosign-modified-manifest")
    with pytest.raises(
        VerificationError, match=f"signature is for digest {DIGEST_A}, not {digest}"
    ):
        verify_key_signature(
            fixture_layer("dir-img-cosign-modified-manifest/signature-1"),
            key=fixture_key("cosign.pub"),
            image_digest=digest,
            image_name=IMAGE_A,
        )


@pytest.mark.parametrize("key_file", ["cosign.pub", "cosign2.pub"])
def test_unknown_key_signature_fails(key_file: str) -> None:
    layer = fixture_layer("unknown-cosign-key.signature")
    assert parse_simple_signing(layer.payload).manifest_digest == DIGEST_A  # well-formed
    with pytest.raises(VerificationError, match="does not verify"):
        verify_key_signature(
            layer, key=fixture_key(key_file), image_digest=DIGEST_A, image_name=IMAGE_A
        )


def test_other_attachment_is_not_a_signature() -> None:
    with pytest.raises(
        VerificationError, match="not a cosign signature: media type 'text/plain'"
    ):
        verify_key_signature(
            fixture_layer("dir-img-cosign-other-attachment/signature-1"),
            key=fixture_key("cosign.pub"),
            image_digest=manifest_digest("dir-img-cosign-other-attachment"),
            image_name=IMAGE_A,
        )


def test_pki_signature_verifies_with_rsa_key_from_its_certificate() -> None:
    layer = fixture_layer("dir-img-cosign-pki-valid/signature-1")
    assert "\n" in layer.annotations[COSIGN_SIGNATURE_ANNOTATION]  # lenient base64 needed
    certificate = x509.load_pem_x509_certificate(
        layer.annotations[COSIGN_CERTIFICATE_ANNOTATION].encode()
    )
    key = load_public_key(public_pem(certificate.public_key()))  # type: ignore[arg-type]
    assert isinstance(key, rsa.RSAPublicKey)
    assert key.key_size == 4096
    result = verify_key_signature(
        layer,
        key=key,
        image_digest=manifest_digest("dir-img-cosign-pki-valid"),
        image_name="localhost:5000/test",
        tlog="optional",
    )
    assert result.manifest_digest == (
        "sha256:253c890b744fe3efa923b68e3a1be07bd007eb44ba29da1e7deb1d4c53b3e212"
    )
    signature = base64.b64decode("".join(layer.annotations[COSIGN_SIGNATURE_ANNOTATION].split()))
    verify_raw_signature(key, signature, layer.payload)
    with pytest.raises(VerificationError, match="does not verify"):
        verify_raw_signature(key, signature, layer.payload + b" ")


# --------------------------------------------------------------------------- Rekor SET, real


@pytest.fixture(scope="module")
def public_good_rekor() -> tuple[RekorKey, ...]:
    return load_trusted_root("public-good").rekor_keys


def key_rekor_layer(**changes: str | None) -> SignatureLayer:
    return with_annotations(fixture_layer("dir-img-cosign-key-rekor-valid/signature-1"), **changes)


def verify_b(
    layer: SignatureLayer, rekor_keys: Any, tlog: Any = "required", key: str = "cosign2.pub"
) -> Any:
    return verify_key_signature(
        layer,
        key=fixture_key(key),
        image_digest=manifest_digest("dir-img-cosign-key-rekor-valid"),
        image_name=IMAGE_B,
        tlog=tlog,
        rekor_keys=rekor_keys,
    )


def test_key_and_rekor_set_verify_with_public_good_root(
    public_good_rekor: tuple[RekorKey, ...],
) -> None:
    assert PUBLIC_GOOD_REKOR_LOG_ID in {k.log_id for k in public_good_rekor}
    result = verify_b(key_rekor_layer(), public_good_rekor)
    assert result.integrated_time == KEY_REKOR_INTEGRATED_TIME
    assert result.docker_reference == IMAGE_B


def test_key_and_rekor_set_verify_with_rekor_pub() -> None:
    rekor = RekorKey.from_key(fixture_key("rekor.pub"))
    assert rekor.log_id == PUBLIC_GOOD_REKOR_LOG_ID
    assert verify_b(key_rekor_layer(), [rekor]).integrated_time == KEY_REKOR_INTEGRATED_TIME
    assert verify_b(key_rekor_layer(), [rekor], "optional").integrated_time == (
        KEY_REKOR_INTEGRATED_TIME
    )


def test_tlog_off_ignores_the_set() -> None:
    assert verify_b(key_rekor_layer(), [], "off").integrated_time is None
    assert verify_b(key_rekor_layer(bundle="garbage"), [], "off").integrated_time is None


def test_key_rekor_signature_does_not_verify_with_cosign_pub(
    public_good_rekor: tuple[RekorKey, ...],
) -> None:
    with pytest.raises(VerificationError, match="does not verify with key"):
        verify_b(key_rekor_layer(), public_good_rekor, key="cosign.pub")


def test_set_removed_fails_when_required_and_passes_when_optional(
    public_good_rekor: tuple[RekorKey, ...],
) -> None:
    layer = key_rekor_layer(bundle=None)
    with pytest.raises(VerificationError, match="required, but the signature has no Rekor bundle"):
        verify_b(layer, public_good_rekor, "required")
    assert verify_b(layer, public_good_rekor, "optional").integrated_time is None


def _bundle() -> dict[str, Any]:
    return json.loads(key_rekor_layer().annotations[COSIGN_BUNDLE_ANNOTATION])  # type: ignore[no-any-return]


def _flip_set() -> str:
    bundle = _bundle()
    raw = bytearray(base64.b64decode(bundle["SignedEntryTimestamp"]))
    raw[-1] ^= 0x01
    bundle["SignedEntryTimestamp"] = base64.b64encode(bytes(raw)).decode()
    return json.dumps(bundle)


def _edit_payload(**changes: Any) -> str:
    bundle = _bundle()
    bundle["Payload"].update(changes)
    return json.dumps(bundle)


@pytest.mark.parametrize(
    ("garbage", "message"),
    [
        ("this is not a SET", "Rekor bundle is not JSON"),
        ("[]", "Rekor bundle must be a JSON object"),
        ('{"Payload": {}}', "SignedEntryTimestamp must be a string"),
        (json.dumps({**_bundle(), "SignedEntryTimestamp": "!!"}), "not valid base64"),
        (_flip_set(), "Rekor SET does not verify"),
        (_edit_payload(integratedTime=KEY_REKOR_INTEGRATED_TIME + 1), "Rekor SET does not verify"),
        (_edit_payload(logIndex=1), "Rekor SET does not verify"),
        (_edit_payload(integratedTime="1674251859"), "integratedTime must be an integer"),
        (_edit_payload(logID="00" * 32), "no trusted Rekor key for logID"),
        (_edit_payload(logIndex=2**60), "cannot be canonicalised"),
    ],
    ids=["text", "array", "no-set", "set-not-b64", "set-flipped", "time-edited", "index-edited",
         "time-string", "unknown-log", "index-too-large"],
)
def test_garbage_set_fails_even_when_optional(
    public_good_rekor: tuple[RekorKey, ...], garbage: str, message: str
) -> None:
    with pytest.raises(VerificationError, match=message):
        verify_b(key_rekor_layer(bundle=garbage), public_good_rekor, "optional")


def test_set_transplanted_onto_another_signature_fails(
    public_good_rekor: tuple[RekorKey, ...],
) -> None:
    layer = with_annotations(
        fixture_layer("dir-img-cosign-valid/signature-1"),
        bundle=key_rekor_layer().annotations[COSIGN_BUNDLE_ANNOTATION],
    )
    with pytest.raises(VerificationError, match="Rekor entry is for another payload"):
        verify_key_signature(
            layer,
            key=fixture_key("cosign.pub"),
            image_digest=DIGEST_A,
            image_name=IMAGE_A,
            tlog="optional",
            rekor_keys=public_good_rekor,
        )


def test_rekor_key_that_is_not_rekors_fails() -> None:
    cosign_pub = fixture_key("cosign.pub")
    with pytest.raises(
        VerificationError, match=f"no trusted Rekor key for logID {PUBLIC_GOOD_REKOR_LOG_ID}"
    ):
        verify_b(key_rekor_layer(), [RekorKey.from_key(cosign_pub)])
    # Even claiming Rekor's logID, the wrong key cannot verify the SET.
    with pytest.raises(VerificationError, match="Rekor SET does not verify"):
        verify_b(key_rekor_layer(), [RekorKey(cosign_pub, PUBLIC_GOOD_REKOR_LOG_ID)])


def test_present_set_without_rekor_keys_fails() -> None:
    with pytest.raises(VerificationError, match="no trusted Rekor key"):
        verify_b(key_rekor_layer(), [], "optional")


@pytest.mark.parametrize(
    ("valid_from", "valid_until", "ok"),
    [
        (datetime(2023, 1, 20, 21, 57, 39, tzinfo=UTC), None, True),  # inclusive start
        (None, datetime(2023, 1, 20, 21, 57, 39, tzinfo=UTC), True),  # inclusive end
        (datetime(2023, 1, 20, 21, 57, 40, tzinfo=UTC), None, False),  # not yet valid
        (None, datetime(2023, 1, 20, 21, 57, 38, tzinfo=UTC), False),  # expired
    ],
)
def test_rekor_key_validity_window_is_checked_at_integrated_time(
    valid_from: datetime | None, valid_until: datetime | None, ok: bool
) -> None:
    rekor = RekorKey.from_key(fixture_key("rekor.pub"), valid_from, valid_until)
    if ok:
        assert verify_b(key_rekor_layer(), [rekor]).integrated_time == KEY_REKOR_INTEGRATED_TIME
    else:
        with pytest.raises(VerificationError, match="was not valid at integratedTime 2023-01-20"):
            verify_b(key_rekor_layer(), [rekor])


def test_rekor_key_rotation_picks_the_key_valid_at_integrated_time() -> None:
    old = RekorKey(
        ec.generate_private_key(ec.SECP256R1()).public_key(),
        PUBLIC_GOOD_REKOR_LOG_ID,
        valid_until=datetime(2022, 1, 1, tzinfo=UTC),
    )
    current = RekorKey.from_key(fixture_key("rekor.pub"), datetime(2022, 1, 1, tzinfo=UTC))
    assert verify_b(key_rekor_layer(), [old, current]).integrated_time == KEY_REKOR_INTEGRATED_TIME


def test_rekor_key_needs_aware_datetimes() -> None:
    with pytest.raises(ValueError, match="timezone-aware"):
        RekorKey.from_key(fixture_key("rekor.pub"), datetime(2021, 1, 1))


def test_standalone_keyless_set_verifies_against_its_certificate() -> None:
    standalone = DATA / "rekor-set-standalone"
    certificate = x509.load_pem_x509_certificate((standalone / "rekor-cert").read_bytes())
    payload = (standalone / "rekor-payload").read_bytes()
    signature = base64.b64decode((standalone / "rekor-sig").read_text())
    bundle = (standalone / "rekor-set").read_text()
    rekor = [RekorKey.from_key(fixture_key("rekor.pub"))]
    entry = verify_rekor_bundle(
        bundle, payload=payload, signature=signature, signer=certificate, rekor_keys=rekor
    )
    assert entry == RekorEntry(1670870899, 8949589, PUBLIC_GOOD_REKOR_LOG_ID)
    with pytest.raises(VerificationError, match="another signer"):
        verify_rekor_bundle(
            bundle,
            payload=payload,
            signature=signature,
            signer=fixture_key("cosign2.pub"),
            rekor_keys=rekor,
        )
    with pytest.raises(VerificationError, match="another signature"):
        verify_rekor_bundle(
            bundle, payload=payload, signature=signature[:-1], signer=certificate, rekor_keys=rekor
        )


# --------------------------------------------------------------------------- generated keys


@pytest.mark.parametrize("name", sorted(GENERATED))
def test_generated_key_signature_verifies(name: str) -> None:
    private = GENERATED[name]
    key = load_public_key(public_pem(private))
    payload = simple_signing(REPO, DIGEST)
    result = verify(make_layer(private, payload), key)
    assert (result.docker_reference, result.manifest_digest) == (REPO, DIGEST)


def test_rsa_pss_signature_verifies() -> None:
    private = GENERATED["rsa-3072"]
    payload = simple_signing(REPO, DIGEST)
    layer = make_layer(private, payload, cosign_sign(private, payload, pss=True))
    verify(layer, load_public_key(public_pem(private)))


def test_p384_signature_must_use_sha384() -> None:
    private = GENERATED["ecdsa-p384"]
    assert isinstance(private, ec.EllipticCurvePrivateKey)
    payload = simple_signing(REPO, DIGEST)
    sha256_signature = private.sign(payload, ec.ECDSA(hashes.SHA256()))
    with pytest.raises(VerificationError, match="does not verify"):
        verify(make_layer(private, payload, sha256_signature), load_public_key(public_pem(private)))


@pytest.mark.parametrize("name", sorted(GENERATED))
@pytest.mark.parametrize("where", ["payload", "signature"])
def test_one_flipped_byte_fails(name: str, where: str) -> None:
    private = GENERATED[name]
    payload = simple_signing(REPO, DIGEST)
    signature = bytearray(cosign_sign(private, payload))
    if where == "payload":
        tampered = bytearray(payload)
        tampered[payload.index(b"ab")] ^= 0x03  # still a well-formed hex digest character
        layer = make_layer(private, bytes(tampered), bytes(signature))
    else:
        signature[len(signature) // 2] ^= 0x01
        layer = make_layer(private, payload, bytes(signature))
    with pytest.raises(VerificationError, match="signature does not verify with key"):
        verify(layer, load_public_key(public_pem(private)))


@pytest.mark.parametrize("name", sorted(GENERATED))
def test_signature_for_another_digest_fails(name: str) -> None:
    private = GENERATED[name]
    layer = make_layer(private, simple_signing(REPO, OTHER_DIGEST))
    with pytest.raises(
        VerificationError, match=f"signature is for digest {OTHER_DIGEST}, not {DIGEST}"
    ):
        verify(layer, load_public_key(public_pem(private)))


def test_replay_of_image_a_signature_onto_image_b_fails() -> None:
    private = GENERATED["ecdsa-p256"]
    key = load_public_key(public_pem(private))
    image_a, image_b = "registry.example.com/team/a", "registry.example.com/team/b"
    layer_a = make_layer(private, simple_signing(image_a, DIGEST))
    verify(layer_a, key, image_name=image_a)
    with pytest.raises(VerificationError, match="signature is for digest"):
        verify(layer_a, key, image_name=image_b, image_digest=OTHER_DIGEST)
    # Same digest pushed to another repository: the legacy signature names repository A.
    with pytest.raises(VerificationError, match=f"names repository {image_a}, not {image_b}"):
        verify(layer_a, key, image_name=image_b)


def test_docker_hub_references_are_normalised() -> None:
    private = GENERATED["ed25519"]
    layer = make_layer(private, simple_signing("nginx", DIGEST))
    key = load_public_key(public_pem(private))
    result = verify(layer, key, image_name="docker.io/library/nginx")
    assert result.docker_reference == "nginx"


def test_invalid_docker_reference_fails() -> None:
    private = GENERATED["ed25519"]
    layer = make_layer(private, simple_signing("Not A Reference", DIGEST))
    with pytest.raises(VerificationError, match="docker-reference is invalid"):
        verify(layer, load_public_key(public_pem(private)))


def test_signature_annotation_missing_or_not_base64() -> None:
    private = GENERATED["ecdsa-p256"]
    key = load_public_key(public_pem(private))
    layer = make_layer(private, simple_signing(REPO, DIGEST))
    with pytest.raises(VerificationError, match=r"no dev\.cosignproject\.cosign/signature "):
        verify(with_annotations(layer, signature=None), key)
    with pytest.raises(VerificationError, match="signature annotation is not valid base64"):
        verify(with_annotations(layer, signature="not*base64"), key)


def test_signature_is_checked_before_the_payload_is_trusted() -> None:
    private = GENERATED["ecdsa-p256"]
    key = load_public_key(public_pem(private))
    with pytest.raises(VerificationError, match="does not verify"):
        verify(make_layer(private, b"{}", cosign_sign(private, b"other")), key)
    with pytest.raises(VerificationError, match="missing critical"):
        verify(make_layer(private, b"{}"), key)


# --------------------------------------------------------------------------- Rekor SET, generated


REKOR = ec.generate_private_key(ec.SECP256R1())
INTEGRATED = 1_700_000_000


def hashedrekord(payload: bytes, signature: bytes, signer_pem: bytes, **overrides: Any) -> bytes:
    entry: dict[str, Any] = {
        "apiVersion": "0.0.1",
        "kind": "hashedrekord",
        "spec": {
            "data": {"hash": {"algorithm": "sha256", "value": hashlib.sha256(payload).hexdigest()}},
            "signature": {
                "content": base64.b64encode(signature).decode(),
                "publicKey": {"content": base64.b64encode(signer_pem).decode()},
            },
        },
    }
    entry.update(overrides)
    return json.dumps(entry).encode()


def issue_set(
    body: bytes,
    *,
    rekor: Any = REKOR,
    integrated_time: int = INTEGRATED,
    canonical: bool = True,
) -> str:
    log_id = key_fingerprint(rekor.public_key())
    entry: dict[str, Any] = {
        "body": base64.b64encode(body).decode(),
        "integratedTime": integrated_time,
        "logID": log_id,
        "logIndex": 42,
    }
    message = rfc8785.dumps(entry) if canonical else json.dumps(entry).encode()
    if isinstance(rekor, ec.EllipticCurvePrivateKey):
        set_signature = rekor.sign(message, ec.ECDSA(hashes.SHA256()))
    else:
        set_signature = rekor.sign(message)
    return json.dumps({
        "SignedEntryTimestamp": base64.b64encode(set_signature).decode(),
        "Payload": entry,
    })


def signed_with_set(**body_overrides: Any) -> tuple[SignatureLayer, PublicKey]:
    private = GENERATED["ecdsa-p256"]
    payload = simple_signing(REPO, DIGEST)
    signature = cosign_sign(private, payload)
    body = hashedrekord(payload, signature, public_pem(private), **body_overrides)
    layer = make_layer(private, payload, signature)
    return with_annotations(layer, bundle=issue_set(body)), load_public_key(public_pem(private))


def test_generated_set_verifies() -> None:
    layer, key = signed_with_set()
    rekor = RekorKey.from_key(
        load_public_key(public_pem(REKOR)),
        datetime(2023, 1, 1, tzinfo=UTC),
        datetime(2024, 1, 1, tzinfo=UTC),
    )
    result = verify(layer, key, tlog="required", rekor_keys=[rekor])
    assert result.integrated_time == INTEGRATED


def test_generated_set_with_ed25519_rekor_key_verifies() -> None:
    rekor_private = ed25519.Ed25519PrivateKey.generate()
    private = GENERATED["rsa-3072"]
    payload = simple_signing(REPO, DIGEST)
    signature = cosign_sign(private, payload)
    bundle = issue_set(hashedrekord(payload, signature, public_pem(private)), rekor=rekor_private)
    layer = with_annotations(make_layer(private, payload, signature), bundle=bundle)
    rekor = RekorKey.from_key(load_public_key(public_pem(rekor_private)))
    key = load_public_key(public_pem(private))
    result = verify(layer, key, tlog="required", rekor_keys=[rekor])
    assert result.integrated_time == INTEGRATED


def test_generated_set_from_an_expired_rekor_key_is_rejected() -> None:
    layer, key = signed_with_set()
    expired = RekorKey.from_key(
        load_public_key(public_pem(REKOR)), valid_until=datetime(2023, 1, 1, tzinfo=UTC)
    )
    with pytest.raises(VerificationError, match="was not valid at integratedTime 2023-11-14"):
        verify(layer, key, tlog="optional", rekor_keys=[expired])


def test_set_over_non_canonical_json_is_rejected() -> None:
    private = GENERATED["ecdsa-p256"]
    payload = simple_signing(REPO, DIGEST)
    signature = cosign_sign(private, payload)
    bundle = issue_set(hashedrekord(payload, signature, public_pem(private)), canonical=False)
    layer = with_annotations(make_layer(private, payload, signature), bundle=bundle)
    rekor = RekorKey.from_key(load_public_key(public_pem(REKOR)))
    with pytest.raises(VerificationError, match="Rekor SET does not verify"):
        verify(layer, load_public_key(public_pem(private)), tlog="required", rekor_keys=[rekor])


OTHER_SIGNER = ec.generate_private_key(ec.SECP256R1())


@pytest.mark.parametrize(
    ("overrides", "message"),
    [
        ({"kind": "rekord"}, "not a hashedrekord 0.0.1 entry"),
        ({"apiVersion": "0.0.2"}, "not a hashedrekord 0.0.1 entry"),
        ({"spec": "x"}, "spec must be a JSON object"),
        (
            {"spec": {"data": {"hash": {"algorithm": "sha256", "value": "00" * 32}},
                      "signature": {"content": "", "publicKey": {"content": ""}}}},
            "for another payload",
        ),
        (
            {"spec": {"data": {"hash": {"algorithm": "sha512", "value": "00" * 64}},
                      "signature": {"content": "", "publicKey": {"content": ""}}}},
            "hashes with 'sha512'",
        ),
    ],
)
def test_generated_set_with_a_wrong_body_is_rejected(
    overrides: dict[str, Any], message: str
) -> None:
    layer, key = signed_with_set(**overrides)
    rekor = RekorKey.from_key(load_public_key(public_pem(REKOR)))
    with pytest.raises(VerificationError, match=message):
        verify(layer, key, tlog="optional", rekor_keys=[rekor])


def test_generated_set_for_another_signature_or_signer_is_rejected() -> None:
    private = GENERATED["ecdsa-p256"]
    key = load_public_key(public_pem(private))
    payload = simple_signing(REPO, DIGEST)
    signature = cosign_sign(private, payload)
    rekor = [RekorKey.from_key(load_public_key(public_pem(REKOR)))]
    layer = make_layer(private, payload, signature)

    other_signature = cosign_sign(private, payload)  # ECDSA: a different valid signature
    body = hashedrekord(payload, other_signature, public_pem(private))
    with pytest.raises(VerificationError, match="for another signature"):
        verify(with_annotations(layer, bundle=issue_set(body)), key, rekor_keys=rekor)

    body = hashedrekord(payload, signature, public_pem(OTHER_SIGNER))
    with pytest.raises(VerificationError, match="for another signer"):
        verify(with_annotations(layer, bundle=issue_set(body)), key, rekor_keys=rekor)

    body = hashedrekord(payload, signature, b"not a pem")
    with pytest.raises(VerificationError, match="not a PEM key or certificate"):
        verify(with_annotations(layer, bundle=issue_set(body)), key, rekor_keys=rekor)


def test_generated_set_recording_a_certificate_with_an_unknown_key_type_is_rejected() -> None:
    # A logged certificate whose key cryptography cannot load: a failed check, not a crash.
    private = GENERATED["ecdsa-p256"]
    key = load_public_key(public_pem(private))
    payload = simple_signing(REPO, DIGEST)
    signature = cosign_sign(private, payload)
    rekor = [RekorKey.from_key(load_public_key(public_pem(REKOR)))]
    layer = make_layer(private, payload, signature)
    certificate = (
        x509.CertificateBuilder()
        .subject_name(x509.Name([]))
        .issuer_name(x509.Name([]))
        .public_key(private.public_key())
        .serial_number(1)
        .not_valid_before(datetime(2023, 1, 1, tzinfo=UTC))
        .not_valid_after(datetime(2024, 1, 1, tzinfo=UTC))
        .sign(private, hashes.SHA256())
        .public_bytes(serialization.Encoding.DER)
    )
    ec_public_key = bytes.fromhex("06072a8648ce3d0201")  # OID id-ecPublicKey
    assert certificate.count(ec_public_key) == 1
    doctored = x509.load_der_x509_certificate(
        certificate.replace(ec_public_key, bytes.fromhex("06072a8648ce3d0209")))
    body = hashedrekord(payload, signature, doctored.public_bytes(serialization.Encoding.PEM))
    with pytest.raises(VerificationError, match="publicKey"):
        verify(with_annotations(layer, bundle=issue_set(body)), key, rekor_keys=rekor)
