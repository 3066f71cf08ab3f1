"""CI identity claims (SPEC §9): Fulcio certificate extensions by name, exact or full-match.

Real certificates: the kubewarden release bundle (sigstore-rs; GitHub Actions, every claim
of the OID registry) and the containers/image keyless signature (GitHub OAuth: no CI
claims). Self-made: Fulcio leaves from the test world, signed into the real registry.
"""

from __future__ import annotations

import json
from pathlib import Path

import httpx
import pytest

from tests.admission_helpers import pod_review
from tests.registry_server import RegistryServer, push_cosign_signature, push_image
from tests.sigstore_world import SigstoreWorld, der_utf8string
from tests.test_attestations import IMAGE, RELEASE, attestation_layer, vuln_statement
from tests.test_bundles import KUBEWARDEN, KUBEWARDEN_DIGEST, KUBEWARDEN_IDENTITY
from tests.test_signatures_keyless import IDENTITY as MITR_IDENTITY
from tests.test_signatures_keyless import fixture_layer
from tests.test_signatures_keyless import verify as verify_legacy
from webhook.app import create_app
from webhook.errors import PolicyError, VerificationError
from webhook.identity import Identity
from webhook.lint import lint_directory
from webhook.policy import load_policy_text
from webhook.settings import Settings
from webhook.signatures.attestations import verify_attestation_layer
from webhook.signatures.bundle import KeylessTrust, verify_bundle_sync

WORKFLOW = "https://github.com/acme/app/.github/workflows/release.yml@refs/tags/v1.2.0"
ISSUER = "https://token.actions.githubusercontent.com"


def kubewarden(claims: dict[str, str] | None = None,
               claims_regexp: dict[str, str] | None = None) -> KeylessTrust:
    identity = Identity(KUBEWARDEN_IDENTITY.issuer, KUBEWARDEN_IDENTITY.subject,
                        claims=tuple((claims or {}).items()),
                        claims_regexp=tuple((claims_regexp or {}).items()))
    return KeylessTrust(identity)


# --------------------------------------------------------------------------- real bundle


def test_real_bundle_claims_match_raw_and_der_extensions() -> None:
    verify_bundle_sync(KUBEWARDEN, kubewarden(
        {"githubWorkflowRepository": "kubewarden/kubewarden-controller",  # 1.5, raw
         "githubWorkflowTrigger": "push",                                  # 1.2, raw
         "runnerEnvironment": "github-hosted",                             # 1.11, DER
         "sourceRepositoryURI": "https://github.com/kubewarden/kubewarden-controller"},
        {"sourceRepositoryRef": r"refs/tags/v[0-9]+\..+",
         "githubWorkflowRef": r"refs/tags/v1\.34\.0"}),
        image_digest=KUBEWARDEN_DIGEST)


@pytest.mark.parametrize(("claims", "regexps", "words"), [
    ({"githubWorkflowRepository": "acme/app"}, {},
     ["githubWorkflowRepository", "kubewarden/kubewarden-controller", "acme/app"]),
    ({"buildTrigger": "workflow_dispatch"}, {}, ["buildTrigger", "push"]),
    # full match: a regexp matching only a prefix does not count
    ({}, {"sourceRepositoryURI": r"https://github\.com/kubewarden"}, ["sourceRepositoryURI"]),
])
def test_real_bundle_claim_mismatch_fails(claims: dict[str, str], regexps: dict[str, str],
                                          words: list[str]) -> None:
    with pytest.raises(VerificationError, match="claims mismatch") as caught:
        verify_bundle_sync(KUBEWARDEN, kubewarden(claims, regexps),
                           image_digest=KUBEWARDEN_DIGEST)
    for word in words:
        assert word in str(caught.value)


def test_claim_absent_from_a_real_legacy_certificate_fails() -> None:
    # an OAuth (not CI) certificate: no GitHub workflow extensions at all
    verify_legacy(fixture_layer())
    identity = Identity(MITR_IDENTITY.issuer, MITR_IDENTITY.subject,
                        claims=(("githubWorkflowRepository", "containers/image"),))
    with pytest.raises(VerificationError, match="claim githubWorkflowRepository missing"):
        verify_legacy(fixture_layer(), identity=identity)


# --------------------------------------------------------------------------- policy model


def policy(keyless_extra: str) -> str:
    return f"""\
apiVersion: sealgate.dev/v1alpha1
kind: ImagePolicy
metadata: {{name: claims}}
spec:
  namespaces: {{match: ["prod"]}}
  rules:
    - name: ci
      images: ["registry.example.com/**"]
      signatures:
        authorities:
          - name: gh
            keyless:
              issuer: {ISSUER}
              subject: {WORKFLOW}
{keyless_extra}"""


def test_claims_load_into_the_identity_and_the_fact_key() -> None:
    plain = load_policy_text(policy(""), "p.yaml", base_dir=Path("."))[0]
    with_claims = load_policy_text(policy(
        "              claims: {githubWorkflowRepository: acme/app}\n"
        "              claimsRegExp: {sourceRepositoryRef: '^refs/tags/v.+$'}\n"),
        "p.yaml", base_dir=Path("."))[0]
    (a,) = plain.rules[0].signatures.authorities  # type: ignore[union-attr]
    (b,) = with_claims.rules[0].signatures.authorities  # type: ignore[union-attr]
    assert b.identity.claims == (("githubWorkflowRepository", "acme/app"),)  # type: ignore[union-attr]
    assert b.identity.claims_regexp == (("sourceRepositoryRef", "^refs/tags/v.+$"),)  # type: ignore[union-attr]
    assert a.fingerprint != b.fingerprint  # a cached verdict without claims never answers


@pytest.mark.parametrize(("extra", "words"), [
    ("              claims: {githubWorkflowRepo: acme/app}\n",
     ["p.yaml:15:", "unknown claim 'githubWorkflowRepo'", "githubWorkflowRepository"]),
    ("              claimsRegExp: {sourceRepositoryRef: '(['}\n",
     ["p.yaml:15:", "claimsRegExp.sourceRepositoryRef", "bad regexp"]),
    ("              claims: [githubWorkflowRepository]\n",
     ["p.yaml:15:", "must be a mapping"]),
])
def test_bad_claims_are_load_errors(extra: str, words: list[str]) -> None:
    with pytest.raises(PolicyError) as caught:
        load_policy_text(policy(extra), "p.yaml", base_dir=Path("."))
    for word in words:
        assert word in str(caught.value)


def test_lint_flags_an_unknown_claim_name(tmp_path: Path) -> None:
    (tmp_path / "p.yaml").write_text(policy("              claims: {workflowRepository: x}\n"))
    result = lint_directory(tmp_path)
    assert any("unknown claim 'workflowRepository'" in m.message for m in result.errors), (
        result.render())


# --------------------------------------------------------------------------- admission


@pytest.fixture(scope="module")
def world() -> SigstoreWorld:
    return SigstoreWorld.create()


async def test_claims_decide_admission_of_a_keyless_signed_image(
    tmp_path: Path, registry: RegistryServer, world: SigstoreWorld
) -> None:
    repo = "claims/app"
    digest, _ = push_image(registry.url, repo, "v1")
    leaf = world.issue_leaf(uri=WORKFLOW, issuer=ISSUER, claims={
        "1.3.6.1.4.1.57264.1.5": b"acme/app",                        # raw string
        "1.3.6.1.4.1.57264.1.14": der_utf8string("refs/tags/v1.2.0"),  # DER UTF8String
    })
    layer = world.keyless_signature_layer(leaf, f"{registry.host}/{repo}", digest)
    push_cosign_signature(registry.url, repo, digest, [(layer.payload, dict(layer.annotations))])
    root = world.write_trusted_root(tmp_path / "trusted_root.json")
    image = f"{registry.host}/{repo}:v1"
    results = {}
    for case, extra in {
        "ok": "              claims: {githubWorkflowRepository: acme/app}\n"
              "              claimsRegExp: {sourceRepositoryRef: 'refs/tags/v[0-9.]+'}\n",
        "other-repo": "              claims: {githubWorkflowRepository: acme/other}\n",
        "absent": "              claims: {runnerEnvironment: github-hosted}\n",
    }.items():
        directory = tmp_path / case
        directory.mkdir()
        text = policy(extra + f"              trustedRoot: {root}\n").replace(
            "registry.example.com", registry.host)
        (directory / "p.yaml").write_text(text)
        app = create_app(Settings(policies=directory, audit_log=tmp_path / f"{case}.log",
                                  insecure_registries=frozenset({registry.host})))
        async with app.router.lifespan_context(app), httpx.AsyncClient(
            transport=httpx.ASGITransport(app=app), base_url="https://sealgate"
        ) as client:
            response = await client.post("/validate", json=pod_review(image, namespace="prod"))
        results[case] = response.json()["response"]
        audit = json.loads((tmp_path / f"{case}.log").read_text().splitlines()[-1])
        assert audit["images"][0]["signatures"]["gh"] == ("ok" if case == "ok" else "fail")
    assert results["ok"]["allowed"] is True
    assert results["other-repo"]["allowed"] is False
    assert "githubWorkflowRepository is 'acme/app', not 'acme/other'" in (
        results["other-repo"]["status"]["message"])
    assert "claim runnerEnvironment missing" in results["absent"]["status"]["message"]


def test_claims_apply_to_keyless_attestations(
    world: SigstoreWorld, tmp_path_factory: pytest.TempPathFactory
) -> None:
    root = str(world.write_trusted_root(tmp_path_factory.mktemp("w") / "trusted_root.json"))
    leaf = world.issue_leaf(uri=RELEASE, issuer=ISSUER,
                           claims={"1.3.6.1.4.1.57264.1.20": der_utf8string("push")})
    layer = attestation_layer(leaf, vuln_statement(), rekor=world.rekor)

    def trust(claims: tuple[tuple[str, str], ...]) -> KeylessTrust:
        return KeylessTrust(Identity(ISSUER, RELEASE, claims=claims), root)

    verify_attestation_layer(layer, trust((("buildTrigger", "push"),)), image_digest=IMAGE)
    with pytest.raises(VerificationError, match="claim buildTrigger is 'push', not 'tag'"):
        verify_attestation_layer(layer, trust((("buildTrigger", "tag"),)), image_digest=IMAGE)
    with pytest.raises(VerificationError, match="claim githubWorkflowSha missing"):
        verify_attestation_layer(layer, trust((("githubWorkflowSha", "abc"),)),
                                 image_digest=IMAGE)


def test_schema_knows_claims_and_notation_authorities() -> None:
    import jsonschema
    import yaml

    from webhook.schema import load_schema

    validator = jsonschema.Draft202012Validator(load_schema("ImagePolicy"))
    document = yaml.safe_load(policy(
        "              claims: {githubWorkflowRepository: acme/app}\n"
        "              claimsRegExp: {sourceRepositoryRef: '^refs/tags/v.+$'}\n"
        "          - name: acr\n"
        "            notation:\n"
        "              trustStore: {ca: [{pem: x}], tsa: [{file: tsa.pem}]}\n"
        "              trustedIdentities: ['x509.subject: C=US, ST=WA, O=Acme']\n"
        "              level: permissive\n"))
    assert list(validator.iter_errors(document)) == []
    authorities = document["spec"]["rules"][0]["signatures"]["authorities"]
    authorities[0]["keyless"]["claims"] = {"workflowRepository": "x"}
    assert list(validator.iter_errors(document))
    authorities[0]["keyless"]["claims"] = {}
    authorities[1]["notation"]["level"] = "audit"
    assert list(validator.iter_errors(document))
    authorities[1]["notation"]["level"] = "strict"
    authorities[1]["notation"]["trustStore"] = {"tsa": [{"pem": "x"}]}  # no ca/signingAuthority
    assert list(validator.iter_errors(document))
