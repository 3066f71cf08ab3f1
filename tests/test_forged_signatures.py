"""The forged-signature corpus: named attacks on signature and scan checks, each of which
must be DENIED by /validate with the right reason.

Every attack plants its material in the real docker-registry (tests/registry_server.py)
with real cryptography (tests/signing.py, tests/sigstore_world.py, tests/bundle_builder.py)
under its own repository, then asks the webhook about the image. Read ``ATTACKS`` as the
list: a name, the rule the image falls under (see ``POLICY``), how the forgery is made, and
the words the deny message must contain. A fault a real registry cannot serve (a blob that
does not hash to its digest, a signature manifest that is not a manifest) goes through
``Tamper``, the real network with that one answer changed.

``test_the_corpus_has_a_genuine_twin_for_every_rule`` makes sure each rule does allow a
genuinely signed image, so a deny here is the attack's, not a broken fixture's.
"""

from __future__ import annotations

import base64
import concurrent.futures
import datetime as dt
import functools
import json
import re
import textwrap
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import anyio.from_thread
import httpx
import pytest
from cryptography.hazmat.primitives.asymmetric import ec

from tests.admission_helpers import pod_review
from tests.bundle_builder import (
    attestation_layer,
    key_bundle,
    keyless_bundle,
    statement,
)
from tests.bundle_builder import (
    dsse_body as tlog_dsse_body,
)
from tests.notation_signing import (
    COSE,
    JWS,
    Envelope,
    Signer,
    attach_signatures,
    make_signer,
    push_notation_signature,
)
from tests.registry_server import (
    RegistryServer,
    manifest_descriptor,
    push_artifact,
    push_cosign_attestations,
    push_cosign_signature,
    push_image,
    push_index,
    push_referrers_tag_index,
    sha256_digest,
)
from tests.signing import PrivateKey, cosign_layer, public_pem, sign, simple_signing_payload
from tests.sigstore_world import (
    FulcioCA,
    RekorLog,
    SigstoreWorld,
    der_utf8string,
    hashedrekord_body,
)
from tests.test_scan_gate import SARIF_PREDICATE, TRIVY, vuln_predicate
from webhook.app import create_app
from webhook.oci import COSIGN_BUNDLE_ANNOTATION, COSIGN_SIGNATURE_ANNOTATION, SIGSTORE_BUNDLE_V03
from webhook.scans import VULN_PREDICATE
from webhook.settings import Settings

WORKFLOW = "https://github.com/acme/app/.github/workflows/release.yml@refs/heads/main"
ISSUER = "https://token.actions.githubusercontent.com"
SIGN_PREDICATE = "https://sigstore.dev/cosign/sign/v1"
OVERSIZED = b"\x00" * (5 * 1024 * 1024)  # over the 4 MiB cap on signature payloads


# --------------------------------------------------------------------------- the arsenal


@dataclass
class Arsenal:
    """Keys, sigstores and the registry the attacks are made with."""

    registry: RegistryServer
    tmp: Path
    release: PrivateKey = field(default_factory=lambda: ec.generate_private_key(ec.SECP256R1()))
    second: PrivateKey = field(default_factory=lambda: ec.generate_private_key(ec.SECP256R1()))
    stranger: PrivateKey = field(default_factory=lambda: ec.generate_private_key(ec.SECP256R1()))
    world: SigstoreWorld = field(default_factory=SigstoreWorld.create)
    elsewhere: SigstoreWorld = field(default_factory=SigstoreWorld.create)  # trusted by nobody
    retired: FulcioCA = field(default_factory=lambda: FulcioCA.create(
        name="rotating", valid_until=dt.datetime.now(dt.UTC) - dt.timedelta(days=1)))
    current: FulcioCA = field(default_factory=lambda: FulcioCA.create(name="rotating"))
    notary: Signer = field(default_factory=lambda: make_signer("release", ec_key=True))
    notary_stranger: Signer = field(default_factory=lambda: make_signer("release", ec_key=True))
    tamper: dict[str, tuple[bytes, str]] = field(default_factory=dict)  # path -> (body, type)

    @property
    def host(self) -> str:
        return self.registry.host

    def image(self, repo: str, tag: str = "v1") -> str:
        digest, _ = push_image(self.registry.url, repo, tag)
        return digest

    def ref(self, repo: str, digest: str | None = None, tag: str = "v1") -> str:
        return f"{self.host}/{repo}" + (f"@{digest}" if digest else f":{tag}")

    def sig(self, repo: str, digest: str, *layers: tuple[bytes, dict[str, str]]) -> None:
        push_cosign_signature(self.registry.url, repo, digest, list(layers))

    def key_layer(self, key: PrivateKey, repo: str, digest: str) -> tuple[bytes, dict[str, str]]:
        return cosign_layer(key, f"{self.host}/{repo}", digest)

    def keyless_layer(self, repo: str, digest: str, **options: Any
                      ) -> tuple[bytes, dict[str, str]]:
        """A legacy keyless `.sig` layer; ``options`` go to issue_leaf (``leaf_*``) or to
        keyless_signature_layer."""
        leaf_options = {k[5:]: v for k, v in options.items() if k.startswith("leaf_")}
        world = options.pop("world", self.world)
        leaf = world.issue_leaf(**{"uri": WORKFLOW, "issuer": ISSUER, **leaf_options})
        layer = world.keyless_signature_layer(
            leaf, f"{self.host}/{repo}", digest,
            **{k: v for k, v in options.items() if not k.startswith("leaf_")})
        return layer.payload, dict(layer.annotations)

    def referrer(self, repo: str, digest: str, bundle: bytes,
                 predicate_type: str = SIGN_PREDICATE) -> None:
        artifact = push_artifact(
            self.registry.url, repo, artifact_type=SIGSTORE_BUNDLE_V03,
            layers=[(SIGSTORE_BUNDLE_V03, bundle)],
            subject=manifest_descriptor(self.registry.url, repo, digest),
            annotations={"dev.sigstore.bundle.predicateType": predicate_type,
                         "dev.sigstore.bundle.content": "dsse-envelope"},
        )
        push_referrers_tag_index(self.registry.url, repo, digest, [artifact])

    def attest(self, repo: str, digest: str, signer: PrivateKey, predicate: dict[str, Any],
               *, predicate_type: str = VULN_PREDICATE, subject: str | None = None) -> None:
        layer = attestation_layer(signer, statement(subject or digest, predicate_type,
                                                    predicate), predicate_type=predicate_type)
        push_cosign_attestations(self.registry.url, repo, digest,
                                 [(layer.payload, dict(layer.annotations))])

    def root(self, name: str, *cas: FulcioCA, world: SigstoreWorld | None = None) -> Path:
        document = (world or self.world).trusted_root()
        if cas:
            document["certificateAuthorities"] = [ca.trusted_root_entry() for ca in cas]
        path = self.tmp / f"{name}.json"
        path.write_text(json.dumps(document))
        return path


class Tamper(httpx.AsyncBaseTransport):
    """The real registry, except for the answers an attack planted in ``arsenal.tamper``."""

    def __init__(self, arsenal: Arsenal) -> None:
        self.arsenal = arsenal
        self.inner = httpx.AsyncHTTPTransport()

    async def handle_async_request(self, request: httpx.Request) -> httpx.Response:
        planted = self.arsenal.tamper.get(request.url.path)
        if planted is not None:
            body, media_type = planted
            return httpx.Response(200, content=body, headers={"content-type": media_type})
        return await self.inner.handle_async_request(request)

    async def aclose(self) -> None:
        await self.inner.aclose()


# --------------------------------------------------------------------------- the policy


def authority_key(name: str, key: PrivateKey, extra: str = "") -> str:
    return f"""\
          - name: {name}
            key:
              tlog: "off"{extra}
              publicKey: |
{textwrap.indent(public_pem(key).decode(), " " * 16)}"""


def keyless_authority(name: str, root: Path, identity: str) -> str:
    return f"""\
          - name: {name}
            keyless:
              issuer: {ISSUER}
              {identity}
              trustedRoot: {root}"""


def rule(name: str, host: str, authorities: str, extra: str = "") -> str:
    return f"""\
    - name: {name}
      images: ["{host}/forged/{name}/**"]
      signatures:
{extra}        authorities:
{authorities}
"""


def policy(arsenal: Arsenal) -> str:
    """One enforcing policy for namespace prod, one rule per kind of check; and a lenient
    one (onError: allow) for namespace lenient, where planted garbage must still deny."""
    host, a = arsenal.host, arsenal
    world_root = a.root("world")
    rotated_root = a.root("rotated", a.retired, a.current)
    tomorrow_gone = (dt.date.today() - dt.timedelta(days=1)).isoformat()
    rules = "".join([
        rule("key", host, authority_key("release", a.release)),
        rule("tlog", host, authority_key("release", a.release).replace(
            'tlog: "off"', f"tlog: required\n              trustedRoot: {world_root}")),
        rule("pair", host, authority_key("release", a.release) + "\n"
             + authority_key("second", a.second), extra="        threshold: 2\n"),
        rule("twin", host, authority_key("release", a.release) + "\n"
             + authority_key("release-again", a.release), extra="        threshold: 2\n"),
        rule("keyless", host, keyless_authority("ci", world_root, f"subject: {WORKFLOW}")),
        rule("regexp", host, keyless_authority(
            "ci", world_root,
            r"subjectRegExp: 'https://github\.com/acme/app/\.github/workflows/.+@refs/heads/main'")),
        rule("mirror", host, authority_key("release", a.release),
             extra=f'        signedReferences: ["{host}/upstream/**"]\n'),
        rule("rotated", host, keyless_authority("ci", rotated_root, f"subject: {WORKFLOW}")),
        rule("claims", host, keyless_authority("ci", world_root, f"""subject: {WORKFLOW}
              claims: {{githubWorkflowRepository: acme/app}}
              claimsRegExp: {{sourceRepositoryRef: 'refs/heads/main'}}""")),
        rule("notation", host, f"""\
          - name: notary
            notation:
              trustStore: {{ca: [{{pem: {json.dumps(a.notary.root_pem())}}}]}}
              trustedIdentities: ["x509.subject: C=US, ST=WA, O=Notary, CN=release"]
              level: strict"""),
        rule("notation-pair", host, f"""\
          - name: notary
            notation:
              trustStore: {{ca: [{{pem: {json.dumps(a.notary.root_pem())}}}]}}
              trustedIdentities: ["*"]
          - name: notary-again
            notation:
              trustStore: {{ca: [{{pem: {json.dumps(a.notary.root_pem())}}}]}}
              trustedIdentities: ["*"]
              level: permissive""", extra="        threshold: 2\n"),
        rule("scan", host, authority_key("release", a.release)).rstrip("\n") + f"""
      scan:
        maxAge: 24h
        onMissing: deny
        deny: {{CRITICAL: 0}}
        ignore:
          - {{id: CVE-2019-5481, until: {tomorrow_gone}, reason: expired waiver}}
""",
    ])
    return f"""\
apiVersion: sealgate.dev/v1alpha1
kind: ImagePolicy
metadata: {{name: fortress}}
spec:
  namespaces: {{match: ["prod"]}}
  mode: enforce
  onError: deny
  rules:
{rules}---
apiVersion: sealgate.dev/v1alpha1
kind: ImagePolicy
metadata: {{name: lenient}}
spec:
  namespaces: {{match: ["lenient"]}}
  onError: allow
  rules:
{rule("lenient", host, authority_key("release", a.release))}"""


# --------------------------------------------------------------------------- forgeries
# Each takes the arsenal and the attack's repository (under forged/<rule>/) and returns
# the image reference to ask about.

Forgery = Callable[[Arsenal, str], str]


def unsigned(a: Arsenal, repo: str) -> str:
    a.image(repo)
    return a.ref(repo)


def signed_by(key: str) -> Forgery:
    def forge(a: Arsenal, repo: str) -> str:
        digest = a.image(repo)
        a.sig(repo, digest, a.key_layer(getattr(a, key), repo, digest))
        return a.ref(repo)
    return forge


def replayed_from_another_image(a: Arsenal, repo: str) -> str:
    other = a.image(repo, "other")
    digest = a.image(repo)
    a.sig(repo, digest, a.key_layer(a.release, repo, other))  # genuine, for the other digest
    return a.ref(repo)


def signed_for_another_repository(a: Arsenal, repo: str) -> str:
    digest = a.image(repo)
    a.sig(repo, digest, cosign_layer(a.release, f"{a.host}/forged/key/elsewhere", digest))
    return a.ref(repo)


def signed_for_a_lookalike_registry(a: Arsenal, repo: str) -> str:
    digest = a.image(repo)
    a.sig(repo, digest, cosign_layer(a.release, f"evil.example/{repo}", digest))
    return a.ref(repo)


def layer_with(change: Callable[[Arsenal, str, str, bytes, dict[str, str]],
                                tuple[bytes, dict[str, str]]]) -> Forgery:
    """A genuine release-key layer for the image, then ``change``d."""
    def forge(a: Arsenal, repo: str) -> str:
        digest = a.image(repo)
        payload, annotations = a.key_layer(a.release, repo, digest)
        a.sig(repo, digest, change(a, repo, digest, payload, annotations))
        return a.ref(repo)
    return forge


def _signature(annotations: dict[str, str], value: str | None) -> dict[str, str]:
    changed = {k: v for k, v in annotations.items() if k != COSIGN_SIGNATURE_ANNOTATION}
    if value is not None:
        changed[COSIGN_SIGNATURE_ANNOTATION] = value
    return changed


def signed_payload(document: Any, *, raw: bytes | None = None) -> Forgery:
    """A payload of the attacker's choosing, really signed by the release key."""
    def forge(a: Arsenal, repo: str) -> str:
        digest = a.image(repo)
        text = raw if raw is not None else json.dumps(
            document(a, repo, digest) if callable(document) else document).encode()
        a.sig(repo, digest, (text, {COSIGN_SIGNATURE_ANNOTATION:
                                    base64.b64encode(sign(a.release, text)).decode()}))
        return a.ref(repo)
    return forge


def simple_signing(reference: str, digest: str, *, kind: str = "cosign container image "
                   "signature") -> dict[str, Any]:
    return {"critical": {"identity": {"docker-reference": reference},
                         "image": {"docker-manifest-digest": digest}, "type": kind},
            "optional": None}


def duplicate_digest_keys(a: Arsenal, repo: str, digest: str, first: bool) -> bytes:
    other = "sha256:" + "0" * 64
    one, two = (digest, other) if first else (other, digest)
    reference = json.dumps(f"{a.host}/{repo}")
    return (
        '{"critical":{"identity":{"docker-reference":' + reference + '},'
        '"image":{"docker-manifest-digest":"' + one + '","docker-manifest-digest":"' + two
        + '"},"type":"cosign container image signature"},"optional":null}').encode()


def payload_is_signed_dup(first: bool) -> Forgery:
    def forge(a: Arsenal, repo: str) -> str:
        digest = a.image(repo)
        text = duplicate_digest_keys(a, repo, digest, first)
        a.sig(repo, digest, (text, {COSIGN_SIGNATURE_ANNOTATION:
                                    base64.b64encode(sign(a.release, text)).decode()}))
        return a.ref(repo)
    return forge


def payload_bytes_not_matching_the_layer_digest(a: Arsenal, repo: str) -> str:
    """The manifest names the genuine payload's digest; the blob served is another payload
    (for another image), whose signature is genuine."""
    other = a.image(repo, "other")
    digest = a.image(repo)
    genuine = a.key_layer(a.release, repo, digest)
    swapped_payload, swapped_annotations = a.key_layer(a.release, repo, other)
    a.sig(repo, digest, (genuine[0], swapped_annotations))
    a.tamper[f"/v2/{repo}/blobs/{sha256_digest(genuine[0])}"] = (
        swapped_payload, "application/octet-stream")
    return a.ref(repo)


def signed_tag_pinned_to_an_unsigned_digest(a: Arsenal, repo: str) -> str:
    """``repo:v1@sha256:<unsigned>``: the runtime pulls the digest, whatever v1 names."""
    signed = a.image(repo)
    a.sig(repo, signed, a.key_layer(a.release, repo, signed))
    unsigned = a.image(repo, "other")
    return f"{a.ref(repo)}@{unsigned}"


def signed_for_upstream(upstream: str) -> Forgery:
    """A mirror image whose signature names an upstream repository (signedReferences)."""
    def forge(a: Arsenal, repo: str) -> str:
        digest = a.image(repo)
        a.sig(repo, digest, cosign_layer(a.release, f"{a.host}/{upstream}", digest))
        return a.ref(repo)
    return forge


def index_signature_used_for_a_platform_manifest(a: Arsenal, repo: str) -> str:
    amd = a.image(repo, "amd64")
    arm = a.image(repo, "arm64")
    index = push_index(a.registry.url, repo, "v1", [amd, arm])
    a.sig(repo, index, a.key_layer(a.release, repo, index))
    return a.ref(repo, amd)


def platform_signature_used_for_the_index(a: Arsenal, repo: str) -> str:
    amd = a.image(repo, "amd64")
    push_index(a.registry.url, repo, "v1", [amd])
    a.sig(repo, amd, a.key_layer(a.release, repo, amd))
    return a.ref(repo)


def tag_moved_to_an_unsigned_image(a: Arsenal, repo: str) -> str:
    signed = a.image(repo)
    a.sig(repo, signed, a.key_layer(a.release, repo, signed))
    a.image(repo)  # same tag, new content, unsigned
    return a.ref(repo)


def signature_tag_of_another_image_planted(a: Arsenal, repo: str) -> str:
    """The signature image is pushed under the image's .sig tag but signs another digest
    in another repository (a whole signature manifest copied over)."""
    digest = a.image(repo)
    other_repo = f"{repo}-source"
    other = a.image(other_repo)
    a.sig(repo, digest, a.key_layer(a.release, other_repo, other))
    return a.ref(repo)


def oversized_planted_layer(a: Arsenal, repo: str) -> str:
    digest = a.image(repo)
    a.sig(repo, digest, (OVERSIZED, {COSIGN_SIGNATURE_ANNOTATION: "AAAA"}))
    return a.ref(repo)


def malformed_signature_manifest(a: Arsenal, repo: str) -> str:
    digest = a.image(repo)
    a.tamper[f"/v2/{repo}/manifests/sha256-{digest.split(':')[1]}.sig"] = (
        json.dumps({"schemaVersion": 2, "layers": "not a list"}).encode(),
        "application/vnd.oci.image.manifest.v1+json")
    return a.ref(repo)


# ---- transparency log (rule tlog: the release key, tlog required, the world's Rekor)


def tlog_layer(change: Callable[[Arsenal, str, str, bytes, bytes], dict[str, str]]) -> Forgery:
    """A release-key layer; ``change`` builds its annotations from (payload, signature)."""
    def forge(a: Arsenal, repo: str) -> str:
        digest = a.image(repo)
        payload = simple_signing_payload(f"{a.host}/{repo}", digest)
        signature = sign(a.release, payload)
        a.sig(repo, digest, (payload, change(a, repo, digest, payload, signature)))
        return a.ref(repo)
    return forge


def _with_bundle(signature: bytes, bundle: str) -> dict[str, str]:
    return {COSIGN_SIGNATURE_ANNOTATION: base64.b64encode(signature).decode(),
            COSIGN_BUNDLE_ANNOTATION: bundle}


def _logged(a: Arsenal, payload: bytes, signature: bytes, *, rekor: RekorLog | None = None,
            when: int | None = None) -> str:
    body = hashedrekord_body(payload, signature, public_pem(a.release))
    entry = (rekor or a.world.rekor).log(body, when or int(dt.datetime.now(dt.UTC).timestamp()))
    return entry.bundle_annotation()


def no_set(a: Arsenal, repo: str, digest: str, payload: bytes, signature: bytes
           ) -> dict[str, str]:
    return {COSIGN_SIGNATURE_ANNOTATION: base64.b64encode(signature).decode()}


def set_over_another_body(a: Arsenal, repo: str, digest: str, payload: bytes,
                          signature: bytes) -> dict[str, str]:
    other = simple_signing_payload(f"{a.host}/{repo}", "sha256:" + "1" * 64)
    return _with_bundle(signature, _logged(a, other, sign(a.release, other)))


def set_with_altered_integrated_time(a: Arsenal, repo: str, digest: str, payload: bytes,
                                     signature: bytes) -> dict[str, str]:
    bundle = json.loads(_logged(a, payload, signature))
    bundle["Payload"]["integratedTime"] += 3600
    return _with_bundle(signature, json.dumps(bundle))


def set_from_an_untrusted_rekor(a: Arsenal, repo: str, digest: str, payload: bytes,
                                signature: bytes) -> dict[str, str]:
    return _with_bundle(signature, _logged(a, payload, signature, rekor=a.elsewhere.rekor))


def set_of_another_signature(a: Arsenal, repo: str, digest: str, payload: bytes,
                             signature: bytes) -> dict[str, str]:
    other = simple_signing_payload(f"{a.host}/{repo}", digest)  # same payload, new signature
    return _with_bundle(signature, _logged(a, other, sign(a.release, other)))


# ---- thresholds (rule pair: release + second, threshold 2; rule twin: the release key
# listed twice under two names, threshold 2)


def one_signature_twice(a: Arsenal, repo: str) -> str:
    digest = a.image(repo)
    layer = a.key_layer(a.release, repo, digest)
    a.sig(repo, digest, layer, layer)
    return a.ref(repo)


def two_signatures_by_one_key(a: Arsenal, repo: str) -> str:
    digest = a.image(repo)
    a.sig(repo, digest, a.key_layer(a.release, repo, digest),
          a.key_layer(a.release, repo, digest))  # ECDSA: a second, different signature
    return a.ref(repo)


def release_and_a_stranger(a: Arsenal, repo: str) -> str:
    digest = a.image(repo)
    a.sig(repo, digest, a.key_layer(a.release, repo, digest),
          a.key_layer(a.stranger, repo, digest))
    return a.ref(repo)


# ---- keyless (rules keyless, regexp, rotated: the world's Fulcio, CT log and Rekor)


def keyless(**options: Any) -> Forgery:
    def forge(a: Arsenal, repo: str) -> str:
        digest = a.image(repo)
        resolved = {k: (v(a) if callable(v) else v) for k, v in options.items()}
        if resolved.pop("for_other_digest", False):
            a.sig(repo, digest, a.keyless_layer(repo, a.image(repo, "other"), **resolved))
        else:
            a.sig(repo, digest, a.keyless_layer(repo, digest, **resolved))
        return a.ref(repo)
    return forge


def keyless_signed_by_another_key(a: Arsenal, repo: str) -> str:
    digest = a.image(repo)
    payload, annotations = a.keyless_layer(repo, digest)
    annotations[COSIGN_SIGNATURE_ANNOTATION] = base64.b64encode(
        sign(a.stranger, payload)).decode()
    a.sig(repo, digest, (payload, annotations))
    return a.ref(repo)


def keyless_from_the_retired_ca(a: Arsenal, repo: str) -> str:
    digest = a.image(repo)
    world = SigstoreWorld(a.retired, a.world.ctlog, a.world.rekor)
    a.sig(repo, digest, a.keyless_layer(repo, digest, world=world))
    return a.ref(repo)


def keyless_bundle_from_the_retired_ca(a: Arsenal, repo: str) -> str:
    digest = a.image(repo)
    leaf = a.world.issue_leaf(fulcio=a.retired, uri=WORKFLOW, issuer=ISSUER)
    a.referrer(repo, digest, keyless_bundle(leaf, statement(digest), a.world.rekor))
    return a.ref(repo)


def bundle(make: Callable[[Arsenal, str, str], bytes],
           predicate_type: str = SIGN_PREDICATE) -> Forgery:
    def forge(a: Arsenal, repo: str) -> str:
        digest = a.image(repo)
        a.referrer(repo, digest, make(a, repo, digest), predicate_type)
        return a.ref(repo)
    return forge


def _leaf(a: Arsenal, **options: Any) -> Any:
    return a.world.issue_leaf(**{"uri": WORKFLOW, "issuer": ISSUER, **options})


def claimed(**claims: bytes) -> Forgery:
    """A keyless signature whose certificate carries these Fulcio claims (by OID)."""
    return keyless(leaf_claims={OID[name]: value for name, value in claims.items()})


OID = {"githubWorkflowRepository": "1.3.6.1.4.1.57264.1.5",  # raw string
       "sourceRepositoryRef": "1.3.6.1.4.1.57264.1.14"}  # DER UTF8String
GENUINE_CLAIMS = {"githubWorkflowRepository": b"acme/app",
                  "sourceRepositoryRef": der_utf8string("refs/heads/main")}


# ---- Notary Project (rule notation: a trust store of one root, one trusted identity;
# rule notation-pair: the same store and identities under two names, threshold 2)


def notarised(media_type: str = COSE, *, signer: str = "notary", target_digest: str = "",
              jws_alg: str = "", tamper: bool = False, **envelope: Any) -> Forgery:
    def forge(a: Arsenal, repo: str) -> str:
        digest = a.image(repo)
        subject = manifest_descriptor(a.registry.url, repo, digest)
        target = {**subject, "digest": target_digest or digest}
        made = Envelope(target, **envelope)
        key: Signer = getattr(a, signer)
        blob = (made.jws(key, tamper_payload=tamper) if media_type == JWS
                else made.cose(key, tamper_payload=tamper))
        if jws_alg:
            blob = _with_jws_alg(blob, jws_alg)
        attach_signatures(a.registry.url, repo, digest, [
            push_notation_signature(a.registry.url, repo, subject, blob, media_type)])
        return a.ref(repo)
    return forge


def _with_jws_alg(blob: bytes, alg: str) -> bytes:
    """The JWS with its protected header's ``alg`` replaced and an empty signature."""
    document = json.loads(blob)
    encoded = document["protected"]
    header = json.loads(base64.urlsafe_b64decode(encoded + "=" * (-len(encoded) % 4)))
    header["alg"] = alg
    document["protected"] = base64.urlsafe_b64encode(
        json.dumps(header).encode()).rstrip(b"=").decode()
    document["signature"] = ""
    return json.dumps(document).encode()


# ---- scans (rule scan: release-key signature; release-key attested Trivy report no older
# than 24h, CRITICAL 0, an expired waiver for CVE-2019-5481)


def scanned(report: str, *, signer: str = "release", age: dt.timedelta = dt.timedelta(hours=1),
            predicate_type: str = VULN_PREDICATE, other_subject: bool = False) -> Forgery:
    def forge(a: Arsenal, repo: str) -> str:
        digest = a.image(repo)
        a.sig(repo, digest, a.key_layer(a.release, repo, digest))
        subject = a.image(repo, "other") if other_subject else None
        finished = dt.datetime.now(dt.UTC) - age
        a.attest(repo, digest, getattr(a, signer), vuln_predicate(report, finished=finished),
                 predicate_type=predicate_type, subject=subject)
        return a.ref(repo)
    return forge


def sarif_run_without_results(a: Arsenal, repo: str) -> str:
    digest = a.image(repo)
    a.sig(repo, digest, a.key_layer(a.release, repo, digest))
    log = json.loads((TRIVY / "alpine-310.sarif.golden").read_text())
    for run in log["runs"]:
        run.pop("results", None)
        run["invocations"] = [{"executionSuccessful": True,
                               "endTimeUtc": dt.datetime.now(dt.UTC).isoformat()}]
    a.referrer(repo, digest, key_bundle(a.release, statement(digest, SARIF_PREDICATE, log)),
               SARIF_PREDICATE)
    return a.ref(repo)


def signature_attestation_as_scan(a: Arsenal, repo: str) -> str:
    """A genuine cosign/sign statement by the release key, offered where a scan is needed."""
    digest = a.image(repo)
    a.sig(repo, digest, a.key_layer(a.release, repo, digest))
    layer = attestation_layer(a.release, statement(digest, SIGN_PREDICATE, {}),
                              predicate_type=SIGN_PREDICATE)
    push_cosign_attestations(a.registry.url, repo, digest,
                             [(layer.payload, dict(layer.annotations))])
    return a.ref(repo)


# --------------------------------------------------------------------------- the corpus


@dataclass(frozen=True)
class Attack:
    name: str
    rule: str  # repository prefix forged/<rule>/ and the rule that governs it
    forge: Forgery
    reason: tuple[str, ...]  # every one of these is in the deny message
    namespace: str = "prod"


def attack(name: str, rule: str, forge: Forgery, *reason: str, namespace: str = "prod"
           ) -> Any:
    return pytest.param(Attack(name, rule, forge, reason, namespace), id=name)


SIG = 'no valid signature from authority "release"'
CI = 'no valid signature from authority "ci"'

ATTACKS = [
    # ---- cosign key signatures (.sig)
    attack("no-signature-at-all", "key", unsigned, SIG, "no signatures found"),
    attack("wrong-key", "key", signed_by("stranger"), SIG, "signature does not verify with key"),
    attack("payload-for-another-digest-replayed", "key", replayed_from_another_image,
           SIG, "signature is for digest"),
    attack("signature-manifest-copied-from-another-repository", "key",
           signature_tag_of_another_image_planted, SIG, "signature is for digest"),
    attack("another-repositorys-docker-reference", "key", signed_for_another_repository,
           SIG, "signature names repository", "/forged/key/elsewhere, not"),
    attack("lookalike-registry-docker-reference", "key", signed_for_a_lookalike_registry,
           SIG, "signature names repository evil.example/"),
    attack("payload-bytes-not-matching-the-layer-digest", "key",
           payload_bytes_not_matching_the_layer_digest,
           # only a broken or hostile registry serves this (a push is checked): like a 5xx,
           # the check cannot complete, and onError (deny here) decides
           "signature check could not complete", "does not match the requested digest"),
    attack("signature-over-a-different-payload", "key", layer_with(
        lambda a, repo, d, p, ann: (p.replace(b'"optional":null', b'"optional":{"x":1}'), ann)),
        SIG, "signature does not verify with key"),
    attack("truncated-base64-signature", "key", layer_with(
        lambda a, repo, d, p, ann: (p, _signature(ann, ann[COSIGN_SIGNATURE_ANNOTATION][:-8]))),
        SIG, "signature does not verify with key"),
    attack("garbage-base64-signature", "key", layer_with(
        lambda a, repo, d, p, ann: (p, _signature(ann, "!!not*base64@@"))),
        SIG, "signature annotation is not valid base64"),
    attack("empty-signature-annotation", "key", layer_with(
        lambda a, repo, d, p, ann: (p, _signature(ann, ""))),
        SIG, "signature layer has no dev.cosignproject.cosign/signature annotation"),
    attack("missing-signature-annotation", "key", layer_with(
        lambda a, repo, d, p, ann: (p, _signature(ann, None))),
        SIG, "signature layer has no dev.cosignproject.cosign/signature annotation"),
    attack("signature-bytes-of-another-image", "key", layer_with(
        lambda a, repo, d, p, ann: (p, a.key_layer(a.release, repo, "sha256:" + "2" * 64)[1])),
        SIG, "signature does not verify with key"),
    attack("signed-payload-that-is-not-json", "key", signed_payload(None, raw=b"\x00not json"),
           SIG, "simple-signing payload is not JSON"),
    attack("signed-payload-of-the-wrong-type", "key", signed_payload(
        lambda a, repo, d: simple_signing(f"{a.host}/{repo}", d, kind="cosign sbom")),
        SIG, "critical.type is 'cosign sbom'"),
    attack("signed-payload-with-an-upper-case-digest", "key", signed_payload(
        lambda a, repo, d: simple_signing(f"{a.host}/{repo}", d.upper())),
        SIG, "signature is for digest SHA256:"),
    attack("signed-payload-with-the-digest-duplicated-real-first", "key",
           payload_is_signed_dup(True), SIG, "duplicate field 'docker-manifest-digest'"),
    attack("signed-payload-with-the-digest-duplicated-real-last", "key",
           payload_is_signed_dup(False), SIG, "duplicate field 'docker-manifest-digest'"),
    attack("signed-payload-without-critical", "key", signed_payload(
        lambda a, repo, d: {"optional": {"image": {"docker-manifest-digest": d}}}),
        SIG, "simple-signing payload is missing critical"),
    attack("index-signature-used-for-a-platform-manifest", "key",
           index_signature_used_for_a_platform_manifest, SIG, "no signatures found"),
    attack("platform-signature-used-for-the-index", "key",
           platform_signature_used_for_the_index, SIG, "no signatures found"),
    attack("tag-moved-to-an-unsigned-image", "key", tag_moved_to_an_unsigned_image,
           SIG, "no signatures found"),
    attack("signed-tag-pinned-to-an-unsigned-digest", "key",
           signed_tag_pinned_to_an_unsigned_digest, SIG, "no signatures found"),
    attack("signed-reference-outside-the-mirrors-upstream-glob", "mirror",
           signed_for_upstream("upstream-evil/app"), SIG, "signature names repository",
           "/upstream-evil/app, not"),
    attack("signed-reference-of-the-upstreams-parent", "mirror",
           signed_for_upstream("upstream"), SIG, "signature names repository"),
    # ---- first round, kept fixed: planted material is "not a signature", never onError
    attack("oversized-planted-layer-under-onError-allow", "lenient", oversized_planted_layer,
           SIG, "no signatures found", namespace="lenient"),
    attack("malformed-signature-manifest-under-onError-allow", "lenient",
           malformed_signature_manifest, SIG, "unusable signature manifest",
           namespace="lenient"),
    # ---- transparency log required
    attack("key-signature-without-a-set", "tlog", tlog_layer(no_set),
           SIG, "transparency log entry required, but the signature has no Rekor bundle"),
    attack("set-over-another-body", "tlog", tlog_layer(set_over_another_body),
           SIG, "Rekor entry is for another payload"),
    attack("set-with-an-altered-integrated-time", "tlog",
           tlog_layer(set_with_altered_integrated_time), SIG, "Rekor SET does not verify"),
    attack("set-from-an-untrusted-rekor", "tlog", tlog_layer(set_from_an_untrusted_rekor),
           SIG, "no trusted Rekor key for logID"),
    attack("set-of-another-signature-over-the-same-payload", "tlog",
           tlog_layer(set_of_another_signature), SIG, "Rekor entry is for another signature"),
    # ---- thresholds
    attack("one-signature-counted-twice-toward-a-threshold", "pair", one_signature_twice,
           "1 of 2 required authorities verified", 'authority "second"'),
    attack("two-signatures-by-one-key-toward-a-threshold", "pair", two_signatures_by_one_key,
           "1 of 2 required authorities verified", 'authority "second"'),
    attack("one-authoritys-signature-counted-for-another", "pair", signed_by("release"),
           "1 of 2 required authorities verified", 'authority "second"'),
    attack("a-strangers-signature-as-the-second-authority", "pair", release_and_a_stranger,
           "1 of 2 required authorities verified", 'authority "second"'),
    attack("one-key-under-two-authority-names-toward-a-threshold", "twin", signed_by("release"),
           "1 of 2 required authorities verified",
           'authority "release-again": same key or identity as authority "release"'),
    # ---- keyless (.sig with certificate)
    attack("keyless-untrusted-ca", "keyless", keyless(leaf_fulcio=lambda a: a.elsewhere.fulcio),
           CI, "chain"),
    attack("keyless-expired-certificate-without-a-set", "keyless", keyless(
        tlog=False, leaf_not_before=dt.datetime.now(dt.UTC) - dt.timedelta(hours=2)),
        CI, "a keyless signature needs a Rekor SET"),
    attack("keyless-fresh-certificate-without-a-set", "keyless", keyless(tlog=False),
           CI, "a keyless signature needs a Rekor SET"),
    attack("keyless-set-with-an-integrated-time-after-expiry", "keyless", keyless(
        integrated_time=lambda a: int(dt.datetime.now(dt.UTC).timestamp()) + 3600),
        CI, "certificate was not valid at the transparency log's integratedTime"),
    attack("keyless-set-from-an-untrusted-rekor", "keyless",
           keyless(rekor=lambda a: a.elsewhere.rekor), CI, "no trusted Rekor key for logID"),
    attack("keyless-sct-from-an-unknown-log", "keyless",
           keyless(leaf_ctlog=lambda a: a.elsewhere.ctlog), CI, "SCT from unknown CT log"),
    attack("keyless-subject-of-another-workflow", "keyless", keyless(
        leaf_uri=WORKFLOW.replace("release.yml", "pr.yml")), CI, "subject mismatch"),
    attack("keyless-issuer-mismatch", "keyless", keyless(leaf_issuer="https://evil.example"),
           CI, "issuer mismatch: certificate's OIDC issuer is https://evil.example"),
    attack("keyless-subject-as-email", "keyless", keyless(
        leaf_uri=None, leaf_email="release@github.com"), CI, "subject mismatch"),
    attack("keyless-issuer-v2-extension-wins-over-a-matching-v1", "keyless", keyless(
        leaf_issuer="https://evil.example", leaf_issuer_v1=ISSUER), CI, "issuer mismatch"),
    attack("keyless-sct-of-another-certificate", "keyless", keyless(
        leaf_scts=lambda a: _leaf(a).scts), CI, "does not verify over this certificate"),
    attack("keyless-not-a-code-signing-certificate", "keyless",
           keyless(leaf_code_signing=False), CI, "not a code-signing certificate"),
    attack("keyless-payload-for-another-digest", "keyless", keyless(for_other_digest=True),
           CI, "signature is for digest"),
    attack("keyless-signature-by-a-key-other-than-the-certificates", "keyless",
           keyless_signed_by_another_key, CI,
           "signature does not verify with the certificate's public key"),
    attack("key-signature-under-a-keyless-authority", "keyless", signed_by("release"),
           CI, "signature has no certificate (signed with a key, not keyless)"),
    attack("regexp-matched-as-a-prefix-only", "regexp", keyless(leaf_uri=WORKFLOW + "-evil"),
           CI, "subject mismatch"),
    attack("regexp-matched-as-a-suffix-only", "regexp", keyless(
        leaf_uri="https://evil.example/" + WORKFLOW), CI, "subject mismatch"),
    attack("regexp-matched-up-to-a-trailing-newline", "regexp", keyless(
        leaf_uri=WORKFLOW + "\n"), CI, "subject mismatch"),
    attack("retired-fulcio-ca-borrowing-the-current-cas-window", "rotated",
           keyless_from_the_retired_ca, CI, "certificate chain does not verify to a Fulcio CA"),
    attack("retired-fulcio-ca-bundle-borrowing-the-current-cas-window", "rotated",
           keyless_bundle_from_the_retired_ca, CI,
           "bundle: certificate chain: Fulcio CA", "was not valid at"),
    # ---- CI identity claims (rule claims: githubWorkflowRepository acme/app, sourceRepositoryRef
    # full-matching refs/heads/main)
    attack("claim-absent-from-the-certificate", "claims", claimed(
        sourceRepositoryRef=GENUINE_CLAIMS["sourceRepositoryRef"]), CI,
        "claims mismatch: claim githubWorkflowRepository missing from the certificate"),
    attack("claim-naming-a-fork", "claims", claimed(
        githubWorkflowRepository=b"acme/app-fork",
        sourceRepositoryRef=GENUINE_CLAIMS["sourceRepositoryRef"]), CI,
        "claims mismatch: claim githubWorkflowRepository is 'acme/app-fork'"),
    attack("claim-regexp-matched-as-a-prefix-only", "claims", claimed(
        githubWorkflowRepository=b"acme/app",
        sourceRepositoryRef=der_utf8string("refs/heads/main-evil")), CI,
        "claims mismatch: claim sourceRepositoryRef 'refs/heads/main-evil' does not match"),
    # ---- Notary Project signatures
    attack("notation-envelope-for-another-digest", "notation", notarised(
        target_digest="sha256:" + "5" * 64), 'no valid signature from authority "notary"',
        "integrity: the signature is for sha256:5555"),
    attack("notation-signer-from-an-untrusted-root-with-the-same-name", "notation", notarised(
        signer="notary_stranger"), 'no valid signature from authority "notary"',
        "authenticity: the signature's certificate chain"),
    attack("notation-tampered-payload", "notation", notarised(tamper=True),
           'no valid signature from authority "notary"',
           "does not verify with the signing certificate's key"),
    attack("notation-jws-with-alg-none", "notation", notarised(JWS, jws_alg="none"),
           'no valid signature from authority "notary"',
           "integrity: unsupported signature algorithm 'none'"),
    attack("notation-unknown-critical-header", "notation", notarised(
        extra_critical={"io.example.mustUnderstand": "yes"}),
        'no valid signature from authority "notary"', "unknown critical header"),
    attack("notation-expired-signature-under-strict", "notation", notarised(
        expiry=dt.datetime.now(dt.UTC) - dt.timedelta(hours=1)),
        'no valid signature from authority "notary"', "expiry"),
    attack("cosign-signature-under-a-notation-authority", "notation", signed_by("release"),
           'no valid signature from authority "notary"', "no Notary Project signatures found"),
    attack("one-notation-signer-under-two-authority-names-toward-a-threshold",
           "notation-pair", notarised(), "1 of 2 required authorities verified",
           'authority "notary-again": same key or identity as authority "notary"'),
    # ---- sigstore bundles (OCI referrers)
    attack("bundle-whose-subject-names-another-digest", "keyless", bundle(
        lambda a, repo, d: keyless_bundle(_leaf(a), statement("sha256:" + "3" * 64),
                                          a.world.rekor)), CI, "bundle statement names digest"),
    attack("bundle-with-the-wrong-predicate-type", "keyless", bundle(
        lambda a, repo, d: keyless_bundle(_leaf(a), statement(d, VULN_PREDICATE, {}),
                                          a.world.rekor)), CI, "statement predicateType is"),
    attack("bundle-from-an-untrusted-ca", "keyless", bundle(
        lambda a, repo, d: keyless_bundle(a.elsewhere.issue_leaf(uri=WORKFLOW, issuer=ISSUER),
                                          statement(d), a.elsewhere.rekor)),
        CI, "bundle certificate chain"),
    attack("bundle-tlog-entry-for-another-payload", "keyless", bundle(
        lambda a, repo, d: keyless_bundle(
            _leaf(a), statement(d), a.world.rekor,
            body=tlog_dsse_body(statement(d, SIGN_PREDICATE, {"other": 1}), b"{}", b"sig",
                                _leaf(a).pem))), CI, "log entry payload hash does not match"),
    attack("key-bundle-under-a-keyless-authority", "keyless", bundle(
        lambda a, repo, d: key_bundle(a.release, statement(d))),
        CI, "bundle is signed with a public key, but the authority is keyless"),
    attack("keyless-bundle-under-a-key-authority", "key", bundle(
        lambda a, repo, d: keyless_bundle(_leaf(a), statement(d), a.world.rekor)),
        SIG, "bundle is signed with a certificate (keyless), but the authority is a key"),
    attack("key-bundle-by-a-stranger", "key", bundle(
        lambda a, repo, d: key_bundle(a.stranger, statement(d))),
        SIG, "bundle: DSSE envelope: signature does not verify with key"),
    attack("key-bundle-replayed-from-another-image", "key", bundle(
        lambda a, repo, d: key_bundle(a.release, statement("sha256:" + "4" * 64))),
        SIG, "bundle statement names digest"),
    # ---- scan verdicts
    attack("scan-attested-by-an-unknown-key", "scan", scanned(
        "sl-micro-rancher5.4.json.golden", signer="stranger"), "no scan result"),
    attack("stale-scan-past-max-age", "scan", scanned(
        "sl-micro-rancher5.4.json.golden", age=dt.timedelta(days=3)), "no scan result"),
    attack("ignore-entry-past-its-expiry", "scan", scanned("photon-30.json.golden"),
           "1 CRITICAL (CVE-2019-5481) > 0 allowed"),
    attack("clean-scan-for-another-digest", "scan", scanned(
        "sl-micro-rancher5.4.json.golden", other_subject=True), "no scan result"),
    attack("clean-scan-under-the-wrong-predicate-type", "scan", scanned(
        "sl-micro-rancher5.4.json.golden", predicate_type="https://example.com/not-a-scan"),
        "no scan result"),
    attack("signature-statement-offered-as-a-scan", "scan", signature_attestation_as_scan,
           "no scan result"),
    attack("sarif-run-without-results-counted-as-clean", "scan", sarif_run_without_results,
           "scan verdict unavailable", "SARIF log: a run has no results list"),
]

def release_and_second(a: Arsenal, repo: str) -> str:
    digest = a.image(repo)
    a.sig(repo, digest, a.key_layer(a.release, repo, digest), a.key_layer(a.second, repo, digest))
    return a.ref(repo)


GENUINE: dict[str, Forgery] = {
    "key": signed_by("release"),
    "pair": release_and_second,
    "claims": claimed(**GENUINE_CLAIMS),
    "notation": notarised(),
    "mirror": signed_for_upstream("upstream/app"),
    "lenient": signed_by("release"),
    "tlog": tlog_layer(lambda a, repo, d, p, s: _with_bundle(s, _logged(a, p, s))),
    "keyless": keyless(),
    "regexp": keyless(),
    "rotated": keyless(world=lambda a: SigstoreWorld(a.current, a.world.ctlog, a.world.rekor)),
    "scan": scanned("sl-micro-rancher5.4.json.golden"),
}


# --------------------------------------------------------------------------- the webhook


@dataclass
class Webhook:
    arsenal: Arsenal
    portal: Any
    client: httpx.AsyncClient
    audit: Path

    def ask(self, image: str, namespace: str) -> dict[str, Any]:
        review = pod_review(image, namespace=namespace)

        async def send() -> httpx.Response:
            return await self.client.post("/validate", json=review)

        response: httpx.Response = self.portal.call(send)
        assert response.status_code == 200, response.text
        answer: dict[str, Any] = response.json()["response"]
        assert answer["uid"] == review["request"]["uid"]
        return answer


@pytest.fixture(scope="module")
def webhook(registry: RegistryServer, tmp_path_factory: pytest.TempPathFactory
            ) -> Iterator[Webhook]:
    tmp = tmp_path_factory.mktemp("forged")
    arsenal = Arsenal(registry, tmp)
    (tmp / "policies").mkdir()
    (tmp / "policies" / "p.yaml").write_text(policy(arsenal))
    app = create_app(Settings(policies=tmp / "policies", audit_log=tmp / "audit.log",
                              insecure_registries=frozenset({registry.host})),
                     transport=Tamper(arsenal))

    async def open_client() -> httpx.AsyncClient:
        return httpx.AsyncClient(transport=httpx.ASGITransport(app=app),
                                 base_url="https://sealgate")

    with anyio.from_thread.start_blocking_portal() as portal, \
            portal.wrap_async_context_manager(app.router.lifespan_context(app)):
        client = portal.call(open_client)
        try:
            yield Webhook(arsenal, portal, client, tmp / "audit.log")
        finally:
            portal.call(client.aclose)


def repository(kind: str, name: str) -> str:
    return f"forged/{kind}/" + re.sub(r"[^a-z0-9]+", "-", name.lower()).strip("-")


@pytest.fixture(scope="module")
def planted(webhook: Webhook) -> dict[str, str]:
    """Every forgery (and every genuine twin) pushed up front, several at a time: pushing
    is most of the cost, and each attack has a repository of its own."""
    jobs: dict[str, Callable[[], str]] = {
        attack.name: functools.partial(attack.forge, webhook.arsenal,
                                       repository(attack.rule, attack.name))
        for attack in (param.values[0] for param in ATTACKS)  # type: ignore[attr-defined]
    }
    for rule_name, forge in GENUINE.items():
        jobs[f"genuine-{rule_name}"] = functools.partial(
            forge, webhook.arsenal, repository(rule_name, "genuine"))
    with concurrent.futures.ThreadPoolExecutor(max_workers=8) as pool:
        futures = {name: pool.submit(job) for name, job in jobs.items()}
        return {name: future.result() for name, future in futures.items()}


@pytest.mark.parametrize("attack", ATTACKS)
def test_attack_is_denied_with_the_right_reason(webhook: Webhook, planted: dict[str, str],
                                                attack: Attack) -> None:
    answer = webhook.ask(planted[attack.name], attack.namespace)
    assert answer["allowed"] is False, f"FAIL-OPEN: {attack.name} was allowed"
    message = answer["status"]["message"]
    assert f"rule {attack.rule})" in message, message
    for words in attack.reason:
        assert words in message, f"{words!r} not in {message!r}"


@pytest.mark.parametrize("rule_name", sorted(GENUINE))
def test_the_corpus_has_a_genuine_twin_for_every_rule(webhook: Webhook, planted: dict[str, str],
                                                      rule_name: str) -> None:
    namespace = "lenient" if rule_name == "lenient" else "prod"
    answer = webhook.ask(planted[f"genuine-{rule_name}"], namespace)
    assert answer["allowed"] is True, answer


def test_the_corpus_is_at_least_fifty_named_attacks() -> None:
    names = [param.values[0].name for param in ATTACKS]  # type: ignore[attr-defined]
    assert len(names) == len(set(names)) >= 50
    assert {param.values[0].rule for param in ATTACKS} >= set(GENUINE)  # type: ignore[attr-defined]
