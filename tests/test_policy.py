"""Policy loading, validation errors with file:line, and matching (SPEC §2, §8)."""

from __future__ import annotations

import datetime as dt
import re
import shutil
import textwrap
from pathlib import Path

import pytest
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec

from webhook.errors import PolicyError
from webhook.policy import KeyAuthority, KeylessAuthority, load_policy_dir, load_policy_text

REPO = Path(__file__).resolve().parent.parent


def _pem() -> str:
    key = ec.generate_private_key(ec.SECP256R1())
    return key.public_key().public_bytes(
        serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo
    ).decode()


PEM = _pem()
INDENTED_PEM = textwrap.indent(PEM, " " * 16)

FULL = f"""\
apiVersion: sealgate.dev/v1alpha1
kind: ImagePolicy
metadata:
  name: production
spec:
  namespaces:
    match: ["prod-*", "payments"]
    exclude: ["prod-sandbox"]
  mode: warn
  onError: warn
  requireDigest: true
  unmatched: allow
  breakGlass: true
  rules:
    - name: our-registry
      images: ["registry.example.com/team/**", "ghcr.io/acme/*"]
      signatures:
        threshold: 2
        signedReferences: ["upstream.example.com/team/*"]
        authorities:
          - name: release-key
            key:
              publicKey: |
{INDENTED_PEM}
              tlog: off
              trustedRoot: staging
          - name: github-release
            keyless:
              issuer: https://token.actions.githubusercontent.com
              subjectRegExp: '^https://github.com/acme/.+$'
      scan:
        sources: [attestation, harbor]
        maxAge: 168h
        onMissing: warn
        deny: {{CRITICAL: 0, HIGH: 5}}
        warn: {{HIGH: 0}}
        ignore:
          - id: CVE-2024-12345
            until: 2027-01-31
            reason: "not reachable; tracked in SEC-42"
    - name: public-base-images
      images: ["docker.io/library/*"]
      signatures: none
      scan:
        attestors: [{{name: scanner, key: {{file: keys/scanner.pub}}}}]
        onMissing: warn
        deny: {{CRITICAL: 0}}
"""


def write(directory: Path, name: str, text: str) -> Path:
    path = directory / name
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(text)
    return path


@pytest.fixture
def policy_dir(tmp_path: Path) -> Path:
    write(tmp_path, "keys/scanner.pub", PEM)
    write(tmp_path, "production.yaml", FULL)
    return tmp_path


def test_every_field_is_loaded(policy_dir: Path) -> None:
    [policy] = load_policy_dir(policy_dir).policies
    assert policy.name == "production"
    assert policy.namespaces_match == ("prod-*", "payments")
    assert policy.namespaces_exclude == ("prod-sandbox",)
    assert (policy.mode, policy.on_error, policy.unmatched) == ("warn", "warn", "allow")
    assert policy.require_digest and policy.break_glass
    ours, public = policy.rules
    assert [p.text for p in ours.images] == ["registry.example.com/team/**", "ghcr.io/acme/*"]
    assert ours.signatures is not None and ours.signatures.threshold == 2
    assert [p.text for p in ours.signatures.signed_references] == ["upstream.example.com/team/*"]
    key, keyless = ours.signatures.authorities
    assert isinstance(key, KeyAuthority) and key.tlog == "off" and key.trusted_root == "staging"
    assert isinstance(keyless, KeylessAuthority)
    assert keyless.issuer == "https://token.actions.githubusercontent.com"
    assert keyless.subject is None and keyless.trusted_root == "public-good"
    assert ours.scan is not None
    assert ours.scan.sources == ("attestation", "harbor")
    assert ours.scan.max_age == dt.timedelta(hours=168)
    assert ours.scan.on_missing == "warn"
    assert dict(ours.scan.deny) == {"CRITICAL": 0, "HIGH": 5}
    assert dict(ours.scan.warn) == {"HIGH": 0}
    assert ours.scan.attestors == ours.signatures.authorities  # default: the rule's authorities
    [ignore] = ours.scan.ignore
    assert ignore.until == dt.date(2027, 1, 31) and ignore.reason.startswith("not reachable")
    assert public.signatures is None
    assert public.scan is not None and public.scan.attestors[0].name == "scanner"
    assert public.scan.sources == ("attestation",) and public.scan.on_missing == "warn"


def test_defaults(tmp_path: Path) -> None:
    write(tmp_path, "p.yaml", f"""\
apiVersion: sealgate.dev/v1alpha1
kind: ImagePolicy
metadata: {{name: minimal}}
spec:
  namespaces: {{match: ["*"]}}
  rules:
    - name: all
      images: ["**"]
      signatures:
        authorities:
          - name: k
            key:
              publicKey: |
{INDENTED_PEM}
      scan: {{}}
""")
    [policy] = load_policy_dir(tmp_path).policies
    assert (policy.mode, policy.on_error, policy.unmatched) == ("enforce", "deny", "deny")
    assert not policy.require_digest and not policy.break_glass
    rule = policy.rules[0]
    assert rule.signatures is not None and rule.signatures.threshold == 1
    key = rule.signatures.authorities[0]
    assert isinstance(key, KeyAuthority) and key.tlog == "optional"
    assert key.trusted_root == "public-good"
    assert rule.scan is not None
    assert rule.scan.sources == ("attestation",) and rule.scan.on_missing == "deny"
    assert rule.scan.max_age is None


def error_of(text: str, tmp_path: Path, name: str = "bad.yaml") -> str:
    write(tmp_path, name, text)
    with pytest.raises(PolicyError) as info:
        load_policy_dir(tmp_path)
    return str(info.value)


@pytest.mark.parametrize(
    ("original", "replacement", "line", "fragment"),
    [
        ("  mode: warn", "  mode: warn\n  colour: blue", 10, "unknown field spec.colour"),
        ("  mode: warn", "  mode: loud", 9, "spec.mode must be one of enforce, warn, audit"),
        ('"ghcr.io/acme/*"]', '"ghcr.io/acme/[*"]', 16, "unclosed"),
        ('"ghcr.io/acme/*"]', '"ghcr.io/acme/app:v1"]', 16, "must not carry a tag"),
        ("maxAge: 168h", "maxAge: 7days", 37, "invalid duration '7days'"),
        ("        threshold: 2", "        threshold: 3", 18, "threshold 3 is more than the 2"),
        ("              tlog: off", "              tlog: maybe", 29, "key.tlog must be one of"),
        ("    exclude: [\"prod-sandbox\"]", "    exclude: [\"Prod_Sandbox\"]", 8,
         "invalid namespace pattern"),
        ("subjectRegExp: '^https://github.com/acme/.+$'", "subjectRegExp: '(unclosed'", 34,
         "bad keyless.subjectRegExp"),
        ("            until: 2027-01-31", "            until: someday", 43, "must be a date"),
        ('            reason: "not reachable; tracked in SEC-42"\n', "", 42, "reason is required"),
        ("        deny: {CRITICAL: 0, HIGH: 5}", "        deny: {CRITICAL: -1}", 39,
         "scan.deny.CRITICAL must be a whole number >= 0"),
        ("        deny: {CRITICAL: 0, HIGH: 5}", "        deny: {SEVERE: 1}", 39,
         "unknown field scan.deny.SEVERE"),
        ("      signatures: none", "      signatures: nope", 47, "signatures must be a mapping"),
        ("apiVersion: sealgate.dev/v1alpha1", "apiVersion: sealgate.dev/v2", 1, "apiVersion must"),
        ("key: {file: keys/scanner.pub}", "key: {file: keys/missing.pub}", 49,
         "cannot read key.file"),
        ("        sources: [attestation, harbor]", "        sources: [attestation, trivy]", 36,
         "scan.sources entry must be one of attestation, harbor"),
    ],
)
def test_load_errors_name_file_line_and_field(
    tmp_path: Path, original: str, replacement: str, line: int, fragment: str
) -> None:
    write(tmp_path, "keys/scanner.pub", PEM)
    assert original in FULL
    message = error_of(FULL.replace(original, replacement, 1), tmp_path)
    assert message.startswith(f"{tmp_path / 'bad.yaml'}:{line}: "), message
    assert fragment in message


def test_bad_pem(tmp_path: Path) -> None:
    message = error_of(FULL.replace(INDENTED_PEM, " " * 16 + "-----BEGIN PUBLIC KEY-----\n"
                                    + " " * 16 + "bm90IGEga2V5\n" + " " * 16
                                    + "-----END PUBLIC KEY-----\n"), tmp_path)
    assert re.match(rf"{re.escape(str(tmp_path))}/bad\.yaml:2\d: authority 'release-key': "
                    r"bad public key PEM", message), message


def test_missing_signatures_is_an_error(tmp_path: Path) -> None:
    write(tmp_path, "keys/scanner.pub", PEM)
    text = FULL.replace("      signatures: none\n", "")
    message = error_of(text, tmp_path)
    assert ":45: rule 'public-base-images': signatures is required" in message


def test_duplicate_names_across_files(policy_dir: Path) -> None:
    write(policy_dir, "zz-again.yml", FULL)
    with pytest.raises(PolicyError, match=r"zz-again\.yml:1: duplicate policy name 'production' "
                                          r"\(first defined at .*production\.yaml:1\)"):
        load_policy_dir(policy_dir)


def test_invalid_yaml_reports_line(tmp_path: Path) -> None:
    message = error_of("apiVersion: x\nkind: [unclosed\n", tmp_path)
    assert message.startswith(f"{tmp_path / 'bad.yaml'}:3: invalid YAML")


def test_unquoted_off_means_off(policy_dir: Path) -> None:
    [policy] = load_policy_dir(policy_dir).policies
    key = policy.rules[0].signatures.authorities[0]  # type: ignore[union-attr]
    assert isinstance(key, KeyAuthority) and key.tlog == "off"


def test_skips_tests_hidden_and_other_files(policy_dir: Path) -> None:
    write(policy_dir, "cases.test.yaml", "not: a policy")
    write(policy_dir, "..2026_01_01/broken.yaml", "not: a policy")
    write(policy_dir, ".hidden.yaml", "not: a policy")
    write(policy_dir, "README.md", "# notes")
    assert [p.name for p in load_policy_dir(policy_dir).policies] == ["production"]


def test_empty_directory_is_valid_and_missing_is_an_error(tmp_path: Path) -> None:
    assert load_policy_dir(tmp_path).policies == ()
    with pytest.raises(PolicyError, match="does not exist"):
        load_policy_dir(tmp_path / "nope")


def test_multiple_documents_per_file(tmp_path: Path) -> None:
    write(tmp_path, "keys/scanner.pub", PEM)
    second = FULL.replace("name: production", "name: staging")
    write(tmp_path, "both.yaml", FULL + "---\n" + second + "---\n")
    assert [p.name for p in load_policy_dir(tmp_path).policies] == ["production", "staging"]


def test_namespace_matching(policy_dir: Path) -> None:
    [policy] = load_policy_dir(policy_dir).policies
    assert policy.applies_to("prod-api")
    assert policy.applies_to("payments")
    assert not policy.applies_to("prod-sandbox")
    assert not policy.applies_to("payments-dev")
    assert not policy.applies_to("staging")


RULES = """\
apiVersion: sealgate.dev/v1alpha1
kind: ImagePolicy
metadata: {name: p}
spec:
  namespaces: {match: ["*"]}
  rules:
    - {name: everything, images: ["**"], signatures: none}
    - {name: team-flat, images: ["registry.example.com/team/*"], signatures: none}
    - {name: team-flat-dup, images: ["registry.example.com/team/*"], signatures: none}
    - {name: team-deep, images: ["registry.example.com/team/**"], signatures: none}
    - {name: api, images: ["registry.example.com/team/api"], signatures: none}
    - {name: nginx, images: ["nginx"], signatures: none}
"""


@pytest.mark.parametrize(
    ("image", "rule"),
    [
        ("registry.example.com/team/api", "api"),
        # same literal count as -dup and team-deep's "**": the earlier rule wins
        ("registry.example.com/team/web", "team-flat"),
        ("registry.example.com/team/web/sidecar", "team-deep"),
        ("registry.example.com/other", "everything"),
        ("docker.io/library/nginx", "nginx"),
        ("docker.io/library/redis", "everything"),
    ],
)
def test_most_specific_rule(image: str, rule: str) -> None:
    [policy] = load_policy_text(RULES, "rules.yaml", base_dir=Path("."))
    selected = policy.select_rule(image)
    assert selected is not None and selected.name == rule


def test_example_policies_load(tmp_path: Path) -> None:
    """The shipped policies/ load (with the demo key `make run` generates)."""
    shutil.copytree(REPO / "policies", tmp_path / "policies")
    write(tmp_path, "certs/demo-cosign.pub", PEM)
    policies = load_policy_dir(tmp_path / "policies")
    assert len(policies.policies) >= 2
