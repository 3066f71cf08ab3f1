"""`sealgate policy test`: *.test.yaml cases run through the pure core, via the entry point."""

from __future__ import annotations

import datetime as dt
import textwrap
from pathlib import Path

import pytest
from cryptography.hazmat.primitives.asymmetric import ec

from tests.signing import public_pem
from tests.test_lint import shipped_policies
from webhook.__main__ import main
from webhook.decision import plan_checks
from webhook.policy import load_policy_dir
from webhook.policytest import FactsInput, image_facts


def pem(indent: int) -> str:
    key = ec.generate_private_key(ec.SECP256R1())
    return textwrap.indent(public_pem(key).decode(), " " * indent)


def write_policies(root: Path) -> Path:
    root.mkdir(parents=True, exist_ok=True)
    (root / "p.yaml").write_text(f"""\
apiVersion: sealgate.dev/v1alpha1
kind: ImagePolicy
metadata: {{name: apps}}
spec:
  namespaces: {{match: ["apps-*"]}}
  breakGlass: true
  unmatched: allow
  rules:
    - name: ours
      images: ["registry.example.com/**"]
      signatures:
        threshold: 2
        authorities:
          - name: ci
            key:
              publicKey: |
{pem(16)}
          - name: release
            key:
              publicKey: |
{pem(16)}
      scan:
        sources: [harbor, attestation]
        attestors:
          - name: scanner
            key:
              publicKey: |
{pem(16)}
        maxAge: 24h
        deny: {{CRITICAL: 0}}
---
apiVersion: sealgate.dev/v1alpha1
kind: ImagePolicy
metadata: {{name: trial}}
spec:
  namespaces: {{match: ["apps-*"]}}
  mode: audit
  rules:
    - name: everything
      images: ["**"]
      signatures:
        authorities:
          - name: ci
            key:
              publicKey: |
{pem(16)}
""")
    return root


PINNED = "sha256:" + "1" * 64
CASES = """\
apiVersion: sealgate.dev/v1alpha1
kind: ImagePolicyTest
now: 2026-03-01T12:00:00Z
cases:
  - name: two authorities and a fresh harbor scan
    namespace: apps-a
    image: registry.example.com/team/api:v1
    facts:
      signatures: {ci: ok, release: ok}
      scan: {source: harbor, age: 1h}
    expect: {decision: allow}

  - name: one authority is not enough
    namespace: apps-a
    image: registry.example.com/team/api:v1
    facts:
      signatures: {ci: ok, release: fail}
      scan: {source: harbor, age: 1h}
    expect:
      decision: deny
      messages:
        - 1 of 2 required authorities verified
        - 'authority "release": signature does not verify'

  - name: harbor down, the attestation decides; a critical finding denies
    namespace: apps-a
    images:
      - image: registry.example.com/team/api@PINNED
        facts:
          signatures: {ci: ok, release: ok}
          errors: {harbor: "harbor: 503"}
          scan: {attestor: scanner, scannedAt: 2026-03-01T00:00:00Z, ids: {CRITICAL: CVE-1}}
      - image: registry.example.com/team/web:v2
        facts:
          signatures: {ci: ok, release: ok}
          scan: {source: harbor, age: 25h}
    expect:
      decision: deny
      messages:
        - registry.example.com/team/api@PINNED
        - 1 CRITICAL (CVE-1) > 0 allowed [attestation]
        - "registry.example.com/team/web@sha256:"
        - no scan result no older than 24h from harbor, attestation

  - name: a missing image
    namespace: apps-a
    image: registry.example.com/team/ghost:v1
    facts: {notFound: true}
    expect: {decision: deny, messages: image not found in registry}

  - name: break glass waives the enforcing policy only
    namespace: apps-a
    image: registry.example.com/team/api:v1
    breakGlass: "INC-7"
    user: bob
    expect: {decision: warn, messages: "break glass used by bob: INC-7"}

  - name: the trial policy, once enforced, would deny an unsigned image elsewhere
    namespace: apps-a
    mode: enforce
    image: docker.io/library/busybox
    facts: {signatures: {ci: fail}}
    expect: {decision: deny, messages: "(policy trial, rule everything)"}

  - name: as written the trial policy only audits
    namespace: apps-a
    image: docker.io/library/busybox
    expect: {decision: allow}
""".replace("PINNED", PINNED)


def test_shipped_policy_tests_pass(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    policies = shipped_policies(tmp_path)
    assert main(["policy", "test", str(policies)]) == 0
    out = capsys.readouterr().out
    assert out.strip().splitlines()[-1] == "20 passed, 0 failed"


def test_cases_pass_and_verbose_lists_them(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    root = write_policies(tmp_path / "policies")
    (root / "apps.test.yaml").write_text(CASES)
    assert main(["policy", "test", str(root), "-v"]) == 0
    lines = capsys.readouterr().out.splitlines()
    assert lines[0] == f"PASS {root}/apps.test.yaml:5: two authorities and a fresh harbor scan"
    assert lines[-1] == "7 passed, 0 failed"


def test_failure_prints_a_diff_and_exits_1(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    root = write_policies(tmp_path / "policies")
    (root / "apps.test.yaml").write_text(
        CASES.replace("expect: {decision: allow}\n\n  - name: one", "expect: {decision: deny}\n\n"
                      "  - name: one", 1)
        .replace("- 1 of 2 required", "- 2 of 2 required")
    )
    assert main(["policy", "test", str(root)]) == 1
    out = capsys.readouterr().out
    assert f"FAIL {root}/apps.test.yaml:5: two authorities and a fresh harbor scan\n" \
           "  - decision: deny\n  + decision: allow\n  + message: (none)\n" in out
    assert f"FAIL {root}/apps.test.yaml:13: one authority is not enough\n" \
           "  - message containing: 2 of 2 required authorities verified\n" \
           "  + message: registry.example.com/team/api@sha256:" in out
    assert "PASS" not in out
    assert out.splitlines()[-1] == "5 passed, 2 failed"


def test_bad_test_files_and_unknown_names_fail(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    root = write_policies(tmp_path / "policies")
    (root / "typo.test.yaml").write_text(
        "apiVersion: sealgate.dev/v1alpha1\nkind: ImagePolicyTest\ncases:\n"
        "  - name: x\n    namespace: apps-a\n    imagez: nginx\n    expect: {decision: allow}\n"
    )
    (root / "sub").mkdir()
    (root / "sub" / "names.test.yml").write_text(
        "apiVersion: sealgate.dev/v1alpha1\nkind: ImagePolicyTest\ncases:\n"
        "  - name: misspelt authority\n    namespace: apps-a\n"
        "    image: registry.example.com/a:1\n    facts: {signatures: {relase: ok}}\n"
        "    expect: {decision: allow}\n"
        "  - name: misspelt attestor\n    namespace: apps-a\n"
        "    image: registry.example.com/a:1\n    facts: {scan: {attestor: scaner}}\n"
        "    expect: {decision: allow}\n"
        "  - name: bad expectation\n    namespace: apps-a\n    image: x\n"
        "    expect: {decision: allowed}\n"
    )
    assert main(["policy", "test", str(root)]) == 1
    out = capsys.readouterr().out.splitlines()
    assert out == [
        f"ERROR {root}/sub/names.test.yml:17: expect.decision must be one of allow, warn, deny, "
        "not 'allowed'",
        f"ERROR {root}/typo.test.yaml:6: unknown field case.imagez (allowed: name, namespace, "
        "image, images, facts, now, mode, breakGlass, user, expect)",
        "0 passed, 2 failed",
    ]
    # once the file loads, unknown names fail their case (not a guess, not a pass)
    text = (root / "sub" / "names.test.yml").read_text()
    text = text.replace("decision: allowed", "decision: allow")
    (root / "sub" / "names.test.yml").write_text(text)
    (root / "typo.test.yaml").unlink()
    assert main(["policy", "test", str(root)]) == 1
    out = capsys.readouterr().out
    assert "FAIL" in out and "! authority 'relase' is not asked for registry.example.com/a:1 " \
        "by the policies that apply (authorities: ci, release)" in out
    assert "! scan attestor 'scaner' is not an attestor of the rules for " \
        "registry.example.com/a:1 (attestors: scanner)" in out
    assert out.splitlines()[-1] == "1 passed, 2 failed"


def test_no_tests_and_broken_policies(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    root = write_policies(tmp_path / "policies")
    assert main(["policy", "test", str(root)]) == 1
    assert "no *.test.yaml policy tests" in capsys.readouterr().err
    (root / "broken.yaml").write_text("apiVersion: sealgate.dev/v1alpha1\nkind: Nope\n")
    (root / "x.test.yaml").write_text(CASES)
    assert main(["policy", "test", str(root)]) == 2
    assert "broken.yaml:1: ImagePolicy.metadata is required" in capsys.readouterr().err


def test_tests_in_another_directory(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    root = write_policies(tmp_path / "policies")
    tests = tmp_path / "tests"
    tests.mkdir()
    (tests / "apps.test.yaml").write_text(CASES)
    assert main(["policy", "test", str(tests), "--policies", str(root)]) == 0
    assert capsys.readouterr().out.strip() == "7 passed, 0 failed"


def test_authority_names_map_to_every_key_they_name(tmp_path: Path) -> None:
    # "ci" is a different key in each policy: a case's `ci: ok` means both verified
    policies = load_policy_dir(write_policies(tmp_path / "policies"))
    image = "registry.example.com/team/api:v1"
    [plan] = plan_checks([image], policies.applicable("apps-a"))
    ci_keys = {c.key for c in plan.signatures if c.authority.name == "ci"}
    assert len(ci_keys) == 2
    now = dt.datetime(2026, 1, 1, tzinfo=dt.UTC)
    facts = image_facts(plan, FactsInput(signatures={"ci": "ok"}), now)
    assert {facts.signatures[k].status for k in ci_keys} == {"ok"}
    release = next(c.key for c in plan.signatures if c.authority.name == "release")
    assert facts.signatures[release].status == "fail"
    assert facts.signatures[release].reason == "no signatures found"
    assert facts.resolved_digest is not None and facts.resolved_digest.startswith("sha256:")

