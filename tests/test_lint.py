"""`sealgate policy lint` and `sealgate policy schema` through the real entry point."""

from __future__ import annotations

import datetime as dt
import json
import shutil
import textwrap
from pathlib import Path
from typing import Any

import jsonschema
import pytest
import yaml
from cryptography.hazmat.primitives.asymmetric import ec

from tests.signing import public_pem
from webhook.__main__ import main
from webhook.lint import lint_directory

REPO = Path(__file__).resolve().parent.parent


def shipped_policies(tmp_path: Path) -> Path:
    """A copy of policies/ with the demo key `make run` would generate next to it."""
    target = tmp_path / "policies"
    shutil.copytree(REPO / "policies", target)
    (tmp_path / "certs").mkdir()
    key = ec.generate_private_key(ec.SECP256R1())
    (tmp_path / "certs" / "demo-cosign.pub").write_bytes(public_pem(key))
    return target


def pem_block(indent: int) -> str:
    key = ec.generate_private_key(ec.SECP256R1())
    return textwrap.indent(public_pem(key).decode(), " " * indent)


def policy(name: str, match: str, *, mode: str = "enforce", rules: str | None = None,
           exclude: str = "") -> str:
    rules = rules or """\
    - name: all
      images: ["**"]
      signatures: none
"""
    excluded = f", exclude: {exclude}" if exclude else ""
    return (f"apiVersion: sealgate.dev/v1alpha1\nkind: ImagePolicy\nmetadata: {{name: {name}}}\n"
            f"spec:\n  namespaces: {{match: {match}{excluded}}}\n  mode: {mode}\n  rules:\n{rules}")


def test_shipped_policies_are_clean(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["policy", "lint", str(shipped_policies(tmp_path))]) == 0
    assert capsys.readouterr().out.strip() == "2 policies in 2 files: 0 errors, 0 warnings"


def test_every_error_of_every_file_and_document(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    root = tmp_path / "policies"
    root.mkdir()
    (root / "a.yaml").write_text(
        policy("one", '["a"]').replace("  mode: enforce\n", "  mode: enforce\n  bogus: 1\n")
        + "---\n" + policy("two", '["b"]')
        + "---\n" + policy("three", '["c"]', mode="strict")
    )
    (root / "b.yaml").write_text("apiVersion: sealgate.dev/v1alpha1\nkind: [unclosed\n")
    (root / "nested").mkdir()
    (root / "nested" / "c.yml").write_text(policy("two", '["d"]'))
    (root / "ok.test.yaml").write_text("not: a policy")  # policy tests are not policies
    (root / "..data").mkdir()
    (root / "..data" / "x.yaml").write_text("broken: [")  # ConfigMap internals are skipped
    assert main(["policy", "lint", str(root)]) == 1
    lines = capsys.readouterr().out.splitlines()
    assert lines == [
        f"{root}/a.yaml:7: unknown field spec.bogus (allowed: namespaces, mode, onError, "
        "requireDigest, unmatched, breakGlass, rules)",
        f"{root}/a.yaml:29: spec.mode must be one of enforce, warn, audit, not 'strict'",
        f"{root}/b.yaml:3: invalid YAML: expected ',' or ']', but got '<stream end>'",
        f"{root}/nested/c.yml:1: duplicate policy name 'two' (first defined at {root}/a.yaml:13)",
        "1 policy in 3 files: 4 errors, 0 warnings",
    ]


def test_warnings(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    root = tmp_path / "policies"
    root.mkdir()
    release = pem_block(16)
    other = pem_block(16)
    (root / "main.yaml").write_text(policy("main", '["prod", "payments"]', rules=f"""\
    - name: ours
      images: ["registry.example.com/team/**", "nginx"]
      signatures:
        authorities:
          - name: release-key
            key:
              publicKey: |
{release}
      scan:
        ignore:
          - id: CVE-2020-0001
            until: 2021-01-31
            reason: "old"
          - id: CVE-2099-0001
            until: 2099-01-31
            reason: "still valid"
    - name: copy
      images: ["registry.example.com/team/**"]
      signatures: none
    - name: partly
      images: ["docker.io/library/nginx", "quay.io/x/*"]
      signatures:
        authorities:
          - name: same-key-other-name
            key:
              publicKey: |
{release}
    - name: harbor-only
      images: ["ghcr.io/acme/*"]
      signatures:
        authorities:
          - name: release-key
            key:
              publicKey: |
{other}
      scan:
        sources: [harbor]
        attestors:
          - name: scanner
            key:
              publicKey: |
{other}
"""))
    (root / "trial.yaml").write_text(
        policy("trial", '["prod-*", "payments"]', mode="audit")
        + "---\n" + policy("glob", '["pay*"]', mode="warn")
        + "---\n" + policy("same-glob", '["prod-*"]', exclude='["prod-x"]')
        + "---\n" + policy("excluded", '["payments"]', mode="audit", exclude='["pay*"]')
        + "---\n" + policy("same-mode", '["payments"]')
    )
    now = dt.datetime(2026, 6, 1, tzinfo=dt.UTC)
    result = lint_directory(root, now=now)
    assert result.errors == []
    messages = [str(m) for m in result.warnings]
    main_file, trial_file = f"{root}/main.yaml", f"{root}/trial.yaml"
    tail = "each mode applies only to its own policy's violations"
    assert messages == [
        f"{main_file}:22: warning: policy main, rule ours: scan.ignore CVE-2020-0001 expired on "
        "2021-01-31 and no longer applies (reason was: old)",
        f"{main_file}:28: warning: policy main: rule copy is never selected: every image pattern "
        "is already in an earlier rule (ours), which wins ties",
        # "nginx" in rule ours is normalised to docker.io/library/nginx
        f"{main_file}:31: warning: policy main: pattern docker.io/library/nginx of rule partly "
        "never selects it: earlier rule ours has the same pattern",
        f"{main_file}:57: warning: policy main, rule harbor-only: scan.attestors (scanner) are "
        "never used: scan.sources (harbor) has no attestation",
        f"{main_file}:35: warning: authority 'same-key-other-name' (policy main rule partly) is "
        "the same key authority as 'release-key' (policy main rule ours): one name per "
        "authority keeps audit records and tests readable",
        f"{main_file}:58: warning: authority 'scanner' (policy main rule harbor-only) is the same "
        "key authority as 'release-key' (policy main rule harbor-only): one name per authority "
        "keeps audit records and tests readable",
        f"{main_file}:47: warning: authority name 'release-key' (policy main rule harbor-only) "
        "names a different key authority than in policy main rule ours: audit records and "
        "policy tests identify authorities by name",
        f"{trial_file}:1: warning: namespace payments is governed by policy main (mode enforce, "
        f"{main_file}:1) and policy trial (mode audit): {tail}",
        f"{trial_file}:12: warning: namespace payments is governed by policy main (mode enforce, "
        f"{main_file}:1) and policy glob (mode warn): {tail}",
        f"{trial_file}:12: warning: namespace payments is governed by policy trial (mode audit, "
        f"{trial_file}:1) and policy glob (mode warn): {tail}",
        f"{trial_file}:23: warning: namespaces matching prod-* are governed by policy trial "
        f"(mode audit, {trial_file}:1) and policy same-glob (mode enforce): {tail}",
        f"{trial_file}:45: warning: namespace payments is governed by policy trial (mode audit, "
        f"{trial_file}:1) and policy same-mode (mode enforce): {tail}",
        f"{trial_file}:45: warning: namespace payments is governed by policy glob (mode warn, "
        f"{trial_file}:12) and policy same-mode (mode enforce): {tail}",
    ]
    # not warned: "excluded" (its exclude removes payments), main/same-mode (same mode), and
    # main's literal "prod", which trial's "prod-*" does not match
    # warnings alone: exit 0
    assert main(["policy", "lint", str(root)]) == 0
    out = capsys.readouterr().out
    assert out.strip().endswith(f"6 policies in 2 files: 0 errors, {len(messages)} warnings")


def test_missing_directory_is_a_usage_error(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    assert main(["policy", "lint", str(tmp_path / "nope")]) == 2
    assert "policy directory does not exist" in capsys.readouterr().err


# --------------------------------------------------------------------------- schema


def as_json(document: Any) -> Any:
    """What an editor sees: YAML dates and times are strings."""
    return json.loads(json.dumps(document, default=lambda v: v.isoformat().replace("+00:00", "Z")))


def validator(capsys: pytest.CaptureFixture[str], *flags: str) -> jsonschema.Validator:
    assert main(["policy", "schema", *flags]) == 0
    schema = json.loads(capsys.readouterr().out)
    assert schema["$schema"] == "https://json-schema.org/draft/2020-12/schema"
    jsonschema.Draft202012Validator.check_schema(schema)
    return jsonschema.Draft202012Validator(schema, format_checker=jsonschema.FormatChecker())


def test_shipped_policies_validate_against_the_schema(
    capsys: pytest.CaptureFixture[str],
) -> None:
    check = validator(capsys)
    files = sorted((REPO / "policies").glob("*.yaml"))
    policies = [p for p in files if not p.name.endswith(".test.yaml")]
    assert policies
    for path in policies:
        for document in yaml.safe_load_all(path.read_text()):
            errors = [e.message for e in check.iter_errors(as_json(document))]
            assert errors == [], path


def test_shipped_policy_tests_validate_against_the_test_schema(
    capsys: pytest.CaptureFixture[str],
) -> None:
    check = validator(capsys, "--test")
    tests = sorted((REPO / "policies").glob("*.test.yaml"))
    assert tests
    for path in tests:
        for document in yaml.safe_load_all(path.read_text()):
            assert [e.message for e in check.iter_errors(as_json(document))] == [], path


@pytest.mark.parametrize(("path", "value"), [
    (("spec", "modes"), "enforce"),  # typo of mode
    (("spec", "rules", 0, "image"), ["x"]),  # typo of images
    (("spec", "rules", 0, "signatures", "authorities", 0, "keyless"),
     {"issuer": "https://x", "subject": "y"}),  # key and keyless
    (("spec", "rules", 0, "signatures", "authorities", 0, "key", "tlog"), "sometimes"),
    (("spec", "rules", 0, "scan", "deny", "SEVERE"), 1),
    (("spec", "rules", 0, "scan", "maxAge"), "7d"),  # Go durations have no days
    (("spec", "rules", 0, "images", 0), "ghcr.io/acme/app:v1"),  # a tag in a pattern
    (("spec", "mode"), "strict"),
])
def test_schema_rejects_typos_and_bad_values(
    capsys: pytest.CaptureFixture[str], path: tuple[Any, ...], value: Any
) -> None:
    check = validator(capsys)
    document = as_json(yaml.safe_load((REPO / "policies" / "production.yaml").read_text()))
    assert list(check.iter_errors(document)) == []
    node = document
    for step in path[:-1]:
        node = node[step]
    node[path[-1]] = value
    assert list(check.iter_errors(document)) != []


def test_schema_is_package_data() -> None:
    from webhook.schema import load_schema

    assert load_schema("ImagePolicy")["title"] == "sealgate ImagePolicy"
    assert load_schema("ImagePolicyTest")["title"] == "sealgate ImagePolicyTest"


def test_a_trusted_root_the_webhook_cannot_load_is_an_error(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    root = tmp_path / "policies"
    root.mkdir()
    (root / "trusted_root.json").write_text("{}")
    (root / "p.yaml").write_text(policy("p", '["a"]', rules="""\
    - name: keyless
      images: ["**"]
      signatures:
        authorities:
          - name: ci
            keyless:
              issuer: https://token.actions.githubusercontent.com
              subject: https://github.com/acme/app/.github/workflows/release.yml@refs/heads/main
              trustedRoot: trusted_root.json
"""))
    assert main(["policy", "lint", str(root)]) == 1
    [error, summary] = capsys.readouterr().out.splitlines()
    assert error.startswith(f"{root}/p.yaml:14: policy p: authority 'ci': trusted root "
                            f"{root}/trusted_root.json: ")
    assert summary == "1 policy in 1 file: 1 error, 0 warnings"


def test_every_broken_rule_of_a_document_is_reported(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    root = tmp_path / "policies"
    root.mkdir()
    rules = """\
    - name: first
      images: ["ghcr.io/acme/app:v1"]
      signatures: none
    - name: fine
      images: ["ghcr.io/acme/*"]
      signatures: none
    - name: third
      images: ["ghcr.io/other/*"]
      signatures: maybe
"""
    (root / "p.yaml").write_text(policy("p", '["prod"]', rules=rules))
    assert main(["policy", "lint", str(root)]) == 1
    out = capsys.readouterr().out
    assert f"{root / 'p.yaml'}:9: " in out and "must not carry a tag" in out
    assert f"{root / 'p.yaml'}:16: " in out and "signatures must be a mapping" in out
    assert "2 errors" in out
