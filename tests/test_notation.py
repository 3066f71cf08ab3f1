"""Notary Project envelopes (SPEC §9): the reference implementation's fixtures reach their
recorded verdicts (tests/data/notation/PROVENANCE.md), at ``strict`` and ``permissive``.

"Now" is the real clock: every verdict below holds from 2026 until at least 2033-05-10
(the first certificate expiry a passing verdict depends on), as PROVENANCE.md states.
"""

from __future__ import annotations

import json
import textwrap
from datetime import UTC, datetime
from pathlib import Path

import pytest

from webhook.errors import PolicyError, VerificationError
from webhook.oci import Descriptor
from webhook.policy import NotationAuthority, load_policy_text
from webhook.signatures.notation import (
    COSE_MEDIA_TYPE,
    JWS_MEDIA_TYPE,
    NotationVerified,
    parse_envelope,
    verify_notation_signature,
)
from webhook.signatures.timestamp import verify_timestamp_token

DATA = Path(__file__).parent / "data" / "notation"
NOW = datetime.now(UTC)

MOCK = Descriptor("application/vnd.docker.distribution.manifest.v2+json",
                  "sha256:60043cf45eaebc4c0867fea485a039b598f52fd09fd5b07b0b2d2f88fad9d74e", 528)
TIMESTAMPED = Descriptor(
    "application/vnd.docker.distribution.manifest.v2+json",
    "sha256:c0669ef34cdc14332c0f1ab0c2c01acb91d96014b172f1a76f3a39e63d1f0bda", 528)
ALPINE = Descriptor("application/vnd.oci.image.manifest.v1+json",
                    "sha256:19dbd2e48e921426ee8ace4dc892edfb2ecdc1d1a72d5416c83670c30acecef0", 481)
METADATA = Descriptor(
    "application/vnd.docker.distribution.manifest.v2+json",
    "sha256:5a07385af4e6b6af81b0ebfd435aedccdfa3507f0609c658209e1aba57159b2b", 942)

CA = "truststore/x509/ca/valid-trust-store"
CA_WRONG = "truststore/x509/ca/valid-trust-store-2"
SA = "truststore/x509/signingAuthority/valid-trust-store"
TSA = "truststore/x509/tsa/test-timestamp"
TSA_WRONG = "truststore/x509/tsa/test-mismatch"
MOCK_IDENTITY = "x509.subject: CN=Notation Test Root,O=Notary,L=Seattle,ST=WA,C=US"


def store(*places: str) -> list[str]:
    """Every file of the named trust-store folders (or single files), as notation loads them."""
    files: list[str] = []
    for place in places:
        path = DATA / place
        found = sorted(path.iterdir()) if path.is_dir() else [path]
        files += [str(f.relative_to(DATA)) for f in found]
    return files


def authority(*, ca: list[str] = (), sa: list[str] = (), tsa: list[str] = (),  # type: ignore[assignment]
              identities: tuple[str, ...] = ("*",), level: str = "strict",
              pem: str | None = None) -> NotationAuthority:
    """A notation authority loaded through the policy loader (files relative to DATA)."""
    def entries(files: list[str]) -> str:
        return "[" + ", ".join(f"{{file: {f}}}" for f in files) + "]"
    store_lines = []
    if ca or pem:
        items = [f"{{file: {f}}}" for f in ca]
        if pem:
            items.append("{pem: " + json.dumps(pem) + "}")
        store_lines.append(f"ca: [{', '.join(items)}]")
    if sa:
        store_lines.append(f"signingAuthority: {entries(sa)}")
    if tsa:
        store_lines.append(f"tsa: {entries(tsa)}")
    text = f"""\
apiVersion: sealgate.dev/v1alpha1
kind: ImagePolicy
metadata: {{name: n}}
spec:
  namespaces: {{match: ["*"]}}
  rules:
    - name: r
      images: ["**"]
      signatures:
        authorities:
          - name: notary
            notation:
              trustStore:
{textwrap.indent(chr(10).join(store_lines), " " * 16)}
              trustedIdentities: {json.dumps(list(identities))}
              level: {level}
"""
    (policy,) = load_policy_text(text, "n.yaml", base_dir=DATA)
    assert policy.rules[0].signatures is not None
    (found,) = policy.rules[0].signatures.authorities
    assert isinstance(found, NotationAuthority)
    return found


def media_type(blob: bytes) -> str:
    return JWS_MEDIA_TYPE if blob.lstrip()[:1] == b"{" else COSE_MEDIA_TYPE


def check(path: str, target: Descriptor, trust: NotationAuthority, *,
          blob: bytes | None = None, as_type: str | None = None) -> NotationVerified:
    data = blob if blob is not None else (DATA / path).read_bytes()
    return verify_notation_signature(as_type or media_type(data), data, subject=target,
                                     image_digest=target.digest, authority=trust, now=NOW)


def fails(path: str, target: Descriptor, trust: NotationAuthority, *words: str,
          blob: bytes | None = None, as_type: str | None = None) -> str:
    with pytest.raises(VerificationError) as caught:
        check(path, target, trust, blob=blob, as_type=as_type)
    message = str(caught.value)
    for word in words:
        assert word in message, f"{word!r} not in {message!r}"
    return message


def own_certificate(path: str) -> str:
    """The PEM of an envelope's signing certificate (PROVENANCE: "take it from x5c")."""
    from cryptography.hazmat.primitives import serialization

    data = (DATA / path).read_bytes()
    leaf = parse_envelope(media_type(data), data).chain[0]
    return leaf.public_bytes(serialization.Encoding.PEM).decode()


# ------------------------------------------------------------ mock (JWS, both schemes)


@pytest.mark.parametrize("level", ["strict", "permissive"])
def test_mock_valid_envelopes_pass_for_both_signing_schemes(level: str) -> None:
    trust = authority(ca=store(CA), sa=store(SA), identities=(MOCK_IDENTITY,), level=level)
    verified = check("envelopes/mock/ca_valid_sig_env.json", MOCK, trust)
    assert verified.notes == ()
    assert verified.leaf_subject == "CN=Notation Test Root,O=Notary,L=Seattle,ST=WA,C=US"
    assert check("envelopes/mock/sa_valid_sig_env.json", MOCK, trust).notes == ()


@pytest.mark.parametrize("level", ["strict", "permissive"])
@pytest.mark.parametrize("name", ["ca_invalid_sig_env.json", "sa_invalid_sig_env.json"])
def test_padded_base64_payload_fails_integrity_at_every_level(name: str, level: str) -> None:
    trust = authority(ca=store(CA), sa=store(SA), level=level)
    fails(f"envelopes/mock/{name}", MOCK, trust, "integrity", "payload")


@pytest.mark.parametrize("name", ["ca_expired_sig_env.json", "sa_expired_sig_env.json"])
def test_expired_signature_fails_strict_and_is_recorded_at_permissive(name: str) -> None:
    path = f"envelopes/mock/{name}"
    fails(path, MOCK, authority(ca=store(CA), sa=store(SA)),
          "expiry", "expired at 2022-07-29T23:59:00Z")
    verified = check(path, MOCK, authority(ca=store(CA), sa=store(SA), level="permissive"))
    assert verified.notes == ("expiry: the signature expired at 2022-07-29T23:59:00Z",)


@pytest.mark.parametrize("level", ["strict", "permissive"])
def test_plugin_and_unknown_critical_headers_fail_at_every_level(level: str) -> None:
    fails("envelopes/mock/ca_plugin_sig_env.json", MOCK, authority(ca=store(CA), level=level),
          "integrity", "verification plugin 'plugin-name'")


def test_wrong_trust_store_fails_authenticity() -> None:
    for level in ("strict", "permissive"):
        fails("envelopes/mock/ca_valid_sig_env.json", MOCK,
              authority(ca=store(CA_WRONG), level=level),
              "authenticity", "does not contain any certificate of the ca trust store")


def test_signing_authority_scheme_reads_only_the_signing_authority_store() -> None:
    fails("envelopes/mock/sa_valid_sig_env.json", MOCK, authority(ca=store(CA)),
          "authenticity", "notary.x509.signingAuthority", "no signingAuthority certificates")


def test_trusted_identity_must_match_the_leaf_subject() -> None:
    fails("envelopes/mock/ca_valid_sig_env.json", MOCK,
          authority(ca=store(CA), identities=(
              "x509.subject: CN=LOL,O=DummyOrg,L=Seattle,ST=WA,C=US",)),
          "authenticity", "does not match the trusted identities")
    # a subset of the subject's attributes is enough (notation-go semantics)
    check("envelopes/mock/ca_valid_sig_env.json", MOCK, authority(
        ca=store(CA), identities=("x509.subject: C=US, ST=WA, O=Notary",)))


@pytest.mark.parametrize("target", [
    Descriptor(MOCK.media_type, "sha256:" + "0" * 64, MOCK.size),
    Descriptor(MOCK.media_type, MOCK.digest, 529),
    Descriptor("application/vnd.oci.image.manifest.v1+json", MOCK.digest, MOCK.size),
])
def test_target_artifact_must_be_the_image(target: Descriptor) -> None:
    fails("envelopes/mock/ca_valid_sig_env.json", target, authority(ca=store(CA)), "integrity")


def test_user_metadata_envelope_signer_is_in_no_store() -> None:
    fails("envelopes/mock/sig_env_with_metadata.json", METADATA, authority(ca=store(CA)),
          "authenticity")


# --------------------------------------------------------------------------- RFC 3161 timestamps


@pytest.mark.parametrize("name", ["jwsWithTimestamp.sig", "coseWithTimestamp.sig"])
def test_timestamped_envelopes_pass_with_the_tsa_root(name: str) -> None:
    path = f"envelopes/timestamp/{name}"
    verified = check(path, TIMESTAMPED, authority(ca=store(CA), tsa=store(TSA)))
    assert verified.timestamp is not None
    assert verified.timestamp.time.year == 2024
    # without a tsa store the chain must be valid now, which it is until 2033
    assert check(path, TIMESTAMPED, authority(ca=store(CA))).timestamp is None


@pytest.mark.parametrize("name", ["jwsWithTimestamp.sig", "coseWithTimestamp.sig"])
def test_timestamp_from_an_untrusted_tsa_fails_strict(name: str) -> None:
    path = f"envelopes/timestamp/{name}"
    fails(path, TIMESTAMPED, authority(ca=store(CA), tsa=store(TSA_WRONG)),
          "authenticTimestamp", "does not chain to a trusted timestamp authority root")
    verified = check(path, TIMESTAMPED, authority(ca=store(CA), tsa=store(TSA_WRONG),
                                                  level="permissive"))
    assert "authenticTimestamp" in verified.notes[0]


@pytest.mark.parametrize("name", ["jwsExpiredWithTimestamp.sig", "coseExpiredWithTimestamp.sig"])
def test_timestamp_rescues_a_certificate_that_expired_after_signing(name: str) -> None:
    path = f"envelopes/timestamp/{name}"
    pem = own_certificate(path)
    assert check(path, TIMESTAMPED, authority(pem=pem, tsa=store(TSA))).timestamp is not None
    fails(path, TIMESTAMPED, authority(pem=pem), "authenticTimestamp",
          "expired at 2024-06-18T07:30:31Z")
    verified = check(path, TIMESTAMPED, authority(pem=pem, level="permissive"))
    assert "expired at 2024-06-18T07:30:31Z" in verified.notes[0]


def test_timestamp_outside_the_certificate_window_fails() -> None:
    after = "envelopes/timestamp/timestampAfterNotAfter.sig"
    fails(after, TIMESTAMPED, authority(pem=own_certificate(after), tsa=store(TSA)),
          "authenticTimestamp", "at the timestamp 2024-06-19", "expired at 2001-09-18T11:54:34Z")
    fails("envelopes/timestamp/timestampBeforeNotBefore.sig", TIMESTAMPED,
          authority(ca=store(CA), tsa=store(TSA)),
          "authenticTimestamp", "not valid before 2099-09-18T11:54:34Z")


def test_envelope_without_timestamp_is_judged_now() -> None:
    # SPEC §9: the authentic time is the countersignature's when present, else now
    path = "envelopes/timestamp/withoutTimestamp.sig"
    assert check(path, TIMESTAMPED, authority(ca=store(CA), tsa=store(TSA))).timestamp is None


def test_timestamp_token_moved_onto_another_signature_fails() -> None:
    data = json.loads((DATA / "envelopes/timestamp/jwsWithTimestamp.sig").read_bytes())
    import base64

    token = base64.b64decode(data["header"]["io.cncf.notary.timestampSignature"])
    roots = authority(ca=store(CA), tsa=store(TSA)).tsa
    with pytest.raises(VerificationError, match="timestamp does not verify"):
        verify_timestamp_token(token, b"another signature", roots)


# --------------------------------------------------------------------------- alpine + malformed


@pytest.mark.parametrize("name", ["jws_signature.sig", "cose_signature.sig"])
def test_alpine_envelopes_verify_with_their_own_certificate(name: str) -> None:
    path = f"envelopes/alpine/{name}"
    check(path, ALPINE, authority(pem=own_certificate(path)))
    fails(path, ALPINE, authority(ca=store(CA)), "authenticity")
    other = COSE_MEDIA_TYPE if media_type((DATA / path).read_bytes()) == JWS_MEDIA_TYPE \
        else JWS_MEDIA_TYPE
    fails(path, ALPINE, authority(pem=own_certificate(path)), "integrity", as_type=other)


def test_malformed_envelope_fails_integrity() -> None:
    for as_type in (JWS_MEDIA_TYPE, COSE_MEDIA_TYPE, "application/vnd.oci.image.layer.v1.tar"):
        fails("envelopes/invalid/malformed.jws.sig", ALPINE, authority(ca=store(CA)),
              "integrity", as_type=as_type)


def test_tampered_cose_payload_fails() -> None:
    import cbor2

    raw = (DATA / "envelopes/timestamp/coseWithTimestamp.sig").read_bytes()
    message = cbor2.loads(raw)
    protected, unprotected, payload, signature = message.value
    changed = payload.replace(b'"size":528', b'"size":529')
    blob = cbor2.dumps(cbor2.CBORTag(18, [protected, dict(unprotected), changed, signature]))
    fails("", Descriptor(TIMESTAMPED.media_type, TIMESTAMPED.digest, 529),
          authority(ca=store(CA)), "integrity", "does not verify", blob=blob)


# --------------------------------------------------------------------------- policy loading


@pytest.mark.parametrize(("change", "words"), [
    ({"identities": ("x509.subject: CN=e2e",)}, ["must name at least C, ST and O"]),
    ({"identities": ("subject: C=US",)}, ['must be "*" or "x509.subject: <DN>"']),
    ({"identities": ("*", MOCK_IDENTITY)}, ['"*" cannot be combined']),
    ({"level": "audit"}, ["level must be one of strict, permissive"]),
    ({"ca": ["truststore/x509/ca/missing.pem"]}, ["cannot read file"]),
    ({"ca": ["../../data/notation/PROVENANCE.md"]}, ["is not a PEM or DER certificate"]),
])
def test_bad_notation_authorities_are_load_errors(change: dict[str, object],
                                                   words: list[str]) -> None:
    options: dict[str, object] = {"ca": store(CA)} | change
    with pytest.raises(PolicyError) as caught:
        authority(**options)  # type: ignore[arg-type]
    assert str(caught.value).startswith("n.yaml:")
    for word in words:
        assert word in str(caught.value)


def test_trust_store_certificates_must_be_able_to_anchor_a_chain() -> None:
    # the mock envelopes' leaf: issuer DN equal to its subject, but not self-signed
    data = (DATA / "envelopes/mock/ca_valid_sig_env.json").read_bytes()
    from cryptography.hazmat.primitives import serialization

    leaf = parse_envelope(JWS_MEDIA_TYPE, data).chain[0]
    pem = leaf.public_bytes(serialization.Encoding.PEM).decode()
    with pytest.raises(PolicyError, match="neither a CA nor self-signed"):
        authority(pem=pem)


def test_fingerprint_follows_what_the_authority_accepts() -> None:
    base = authority(ca=store(CA))
    assert base.fingerprint == authority(ca=store(CA)).fingerprint
    assert base.fingerprint != authority(ca=store(CA), level="permissive").fingerprint
    assert base.fingerprint != authority(ca=store(CA), tsa=store(TSA)).fingerprint
    assert base.fingerprint != authority(ca=store(CA), identities=(MOCK_IDENTITY,)).fingerprint
    assert base.fingerprint != authority(sa=store(SA)).fingerprint
