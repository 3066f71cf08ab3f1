"""The pure decision core: facts + policies -> decision (SPEC §2, §3, §8)."""

from __future__ import annotations

import datetime as dt
import textwrap
from pathlib import Path

import pytest
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec

from webhook.decision import (
    BreakGlass,
    ImageFacts,
    Outcome,
    ScanFact,
    decide,
    effective_mode,
    plan_checks,
    signature_key,
)
from webhook.policy import PolicySet, load_policy_text

NOW = dt.datetime(2026, 6, 1, 12, 0, tzinfo=dt.UTC)
DIGEST = "sha256:" + "ab" * 32
IMAGE = "registry.example.com/team/api:1.0"
PINNED = f"registry.example.com/team/api@{DIGEST}"


def _pem() -> str:
    key = ec.generate_private_key(ec.SECP256R1())
    return key.public_key().public_bytes(
        serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo
    ).decode()


PEM_A = _pem()
PEM_B = _pem()


def policy_yaml(name: str = "production", *, spec_extra: str = "", rules: str | None = None,
                match: str = '["prod-*"]') -> str:
    if rules is None:
        rules = f"""
    - name: our-registry
      images: ["registry.example.com/team/**"]
      signatures:
        authorities:
          - name: release-key
            key:
              publicKey: |
{textwrap.indent(PEM_A, " " * 16)}
"""
    return f"""apiVersion: sealgate.dev/v1alpha1
kind: ImagePolicy
metadata:
  name: {name}
spec:
  namespaces:
    match: {match}
{textwrap.indent(spec_extra, "  ")}
  rules:
{rules}
"""


def load(*documents: str) -> PolicySet:
    policies = []
    for index, text in enumerate(documents):
        policies.extend(load_policy_text(text, f"p{index}.yaml", base_dir=Path(".")))
    return PolicySet(tuple(policies), 1)


def sig_facts(policies: PolicySet, outcomes: dict[str, Outcome], *, image: str = IMAGE,
              scans: tuple[ScanFact, ...] = (), scan_errors: dict[str, str] | None = None
              ) -> dict[str, ImageFacts]:
    by_key: dict[str, Outcome] = {}
    for plan in plan_checks([image], policies.policies):
        for check in plan.signatures:
            if check.authority.name in outcomes:
                by_key[check.key] = outcomes[check.authority.name]
    return {image: ImageFacts(digest=Outcome("ok"), resolved_digest=DIGEST, signatures=by_key,
                              scans=scans, scan_errors=scan_errors or {})}


def run(policies: PolicySet, facts: dict[str, ImageFacts], *, namespace: str = "prod-api",
        images: tuple[str, ...] = (IMAGE,), **kwargs: object):  # type: ignore[no-untyped-def]
    return decide(namespace=namespace, images=images, policies=policies, facts=facts, now=NOW,
                  **kwargs)  # type: ignore[arg-type]


def test_signed_image_is_allowed() -> None:
    policies = load(policy_yaml())
    decision = run(policies, sig_facts(policies, {"release-key": Outcome("ok")}))
    assert decision.decision == "allow"
    assert decision.allowed
    [entry] = decision.entries
    assert entry.signatures == {"release-key": "ok"}
    assert entry.digest == DIGEST and entry.rule == "our-registry" and entry.violations == ()


def test_unsigned_image_denied_with_spec_message() -> None:
    policies = load(policy_yaml())
    facts = sig_facts(policies, {"release-key": Outcome("fail", "no signatures found")})
    decision = run(policies, facts)
    assert decision.decision == "deny"
    assert decision.message == (
        f'{PINNED}: no valid signature from authority "release-key": no signatures found '
        "(policy production, rule our-registry)"
    )
    assert decision.enforced_by == ("production",)


def test_warn_mode_allows_with_warning() -> None:
    policies = load(policy_yaml(spec_extra="mode: warn"))
    decision = run(policies, sig_facts(policies, {"release-key": Outcome("fail", "bad")}))
    assert decision.decision == "warn"
    assert decision.allowed
    assert len(decision.warnings) == 1 and "release-key" in decision.warnings[0]


def test_audit_mode_allows_and_records_violation() -> None:
    policies = load(policy_yaml(spec_extra="mode: audit"))
    decision = run(policies, sig_facts(policies, {"release-key": Outcome("fail", "bad")}))
    assert decision.decision == "allow"
    assert decision.warnings == ()
    assert decision.entries[0].violations and decision.entries[0].mode == "audit"


@pytest.mark.parametrize(
    ("mode", "override", "expected"),
    [("enforce", "warn", "warn"), ("enforce", "audit", "audit"), ("warn", "audit", "audit"),
     ("audit", "warn", "audit"), ("warn", None, "warn"), ("enforce", None, "enforce")],
)
def test_mode_override_only_lowers(mode: str, override: str | None, expected: str) -> None:
    assert effective_mode(mode, override) == expected  # type: ignore[arg-type]


def test_mode_override_turns_deny_into_warning() -> None:
    policies = load(policy_yaml())
    facts = sig_facts(policies, {"release-key": Outcome("fail", "bad")})
    assert run(policies, facts, mode_override="warn").decision == "warn"
    assert run(policies, facts, mode_override="audit").decision == "allow"


@pytest.mark.parametrize(("on_error", "expected"), [("deny", "deny"), ("warn", "warn"),
                                                     ("allow", "allow")])
def test_errors_follow_on_error(on_error: str, expected: str) -> None:
    policies = load(policy_yaml(spec_extra=f"onError: {on_error}"))
    facts = sig_facts(policies, {"release-key": Outcome("error", "registry timed out")})
    decision = run(policies, facts)
    assert decision.decision == expected
    assert decision.reason == "error"
    assert decision.entries[0].signatures == {"release-key": "error"}
    if expected == "deny":
        assert "could not complete" in decision.message and "registry timed out" in decision.message


def test_on_error_deny_in_warn_policy_is_a_warning() -> None:
    policies = load(policy_yaml(spec_extra="mode: warn\nonError: deny"))
    facts = sig_facts(policies, {"release-key": Outcome("error", "timeout")})
    assert run(policies, facts).decision == "warn"


def test_unresolvable_digest_is_an_error_and_unknown_tag_a_failure() -> None:
    policies = load(policy_yaml(spec_extra="onError: allow"))
    error = {IMAGE: ImageFacts(digest=Outcome("error", "HTTP 503"))}
    assert run(policies, error).decision == "allow"
    missing = {IMAGE: ImageFacts(digest=Outcome("fail", "image not found in registry"))}
    decision = run(policies, missing)
    assert decision.decision == "deny" and "image not found" in decision.message


@pytest.mark.parametrize(("unmatched", "expected"), [("deny", "deny"), ("warn", "warn"),
                                                     ("allow", "allow")])
def test_unmatched_images(unmatched: str, expected: str) -> None:
    policies = load(policy_yaml(spec_extra=f"unmatched: {unmatched}"))
    decision = run(policies, {}, images=("quay.io/other/thing:1",))
    assert decision.decision == expected
    if expected == "deny":
        assert decision.message == (
            "quay.io/other/thing:1: image matches no rule (policy production)"
        )


def test_require_digest() -> None:
    policies = load(policy_yaml(spec_extra="requireDigest: true"))
    facts = sig_facts(policies, {"release-key": Outcome("ok")})
    decision = run(policies, facts)
    assert decision.decision == "deny"
    assert "pinned by digest" in decision.message
    pinned_ref = f"registry.example.com/team/api@{DIGEST}"
    facts = sig_facts(policies, {"release-key": Outcome("ok")}, image=pinned_ref)
    assert run(policies, facts, images=(pinned_ref,)).decision == "allow"


def test_break_glass_only_for_policies_that_allow_it() -> None:
    glass = BreakGlass("incident INC-7", "alice")
    strict = load(policy_yaml())
    facts = sig_facts(strict, {"release-key": Outcome("fail", "bad")})
    assert run(strict, facts, break_glass=glass).decision == "deny"
    lenient = load(policy_yaml(spec_extra="breakGlass: true"))
    facts = sig_facts(lenient, {"release-key": Outcome("fail", "bad")})
    decision = run(lenient, facts, break_glass=glass)
    assert decision.decision == "warn"
    assert decision.reason == "break-glass"
    assert decision.break_glass == glass
    assert "alice" in decision.warnings[0] and "INC-7" in decision.warnings[0]


def test_strictest_policy_wins() -> None:
    trial = policy_yaml("trial", spec_extra="mode: audit", match='["prod-*"]')
    enforcing = policy_yaml("production", match='["prod-api"]')
    policies = load(trial, enforcing)
    facts = sig_facts(policies, {"release-key": Outcome("fail", "bad")})
    decision = run(policies, facts)
    assert decision.decision == "deny"
    assert decision.enforced_by == ("production",)
    assert {e.policy for e in decision.entries} == {"trial", "production"}
    # another namespace only matched by the trial policy: allowed
    assert run(policies, facts, namespace="prod-web").decision == "allow"


def test_no_policy_namespace_and_exclude() -> None:
    policies = load(policy_yaml(spec_extra="", match='["prod-*"]'))
    decision = run(policies, {}, namespace="dev")
    assert decision.decision == "allow" and decision.reason == "no-policy"
    excluded = load(policy_yaml().replace('match: ["prod-*"]',
                                          'match: ["prod-*"]\n    exclude: ["prod-sandbox"]'))
    assert run(excluded, {}, namespace="prod-sandbox").reason == "no-policy"
    assert run(excluded, {}, namespace=None).reason == "no-policy"


def two_authority_rules(threshold: int) -> str:
    return f"""
    - name: our-registry
      images: ["registry.example.com/team/**"]
      signatures:
        threshold: {threshold}
        authorities:
          - name: key-a
            key:
              publicKey: |
{textwrap.indent(PEM_A, " " * 16)}
          - name: key-b
            key:
              publicKey: |
{textwrap.indent(PEM_B, " " * 16)}
"""


def test_threshold_counts_distinct_authorities() -> None:
    policies = load(policy_yaml(rules=two_authority_rules(2)))
    one = sig_facts(policies, {"key-a": Outcome("ok"), "key-b": Outcome("fail", "no sig")})
    decision = run(policies, one)
    assert decision.decision == "deny"
    assert "1 of 2 required authorities verified" in decision.message
    both = sig_facts(policies, {"key-a": Outcome("ok"), "key-b": Outcome("ok")})
    assert run(policies, both).decision == "allow"
    err = sig_facts(policies, {"key-a": Outcome("ok"), "key-b": Outcome("error", "503")})
    assert run(policies, err).reason == "error"
    any_one = load(policy_yaml(rules=two_authority_rules(1)))
    assert run(any_one, sig_facts(any_one, {"key-b": Outcome("ok"),
                                            "key-a": Outcome("fail", "x")})).decision == "allow"


def test_invalid_reference_is_denied() -> None:
    policies = load(policy_yaml())
    decision = run(policies, {}, images=("Bad//Ref",))
    assert decision.decision == "deny" and "invalid image reference" in decision.message


def test_several_violations_joined() -> None:
    policies = load(policy_yaml())
    other = "registry.example.com/team/web:2"
    facts = {**sig_facts(policies, {"release-key": Outcome("fail", "x")}),
             **sig_facts(policies, {"release-key": Outcome("fail", "y")}, image=other)}
    decision = run(policies, facts, images=(IMAGE, other))
    assert decision.message.count("; ") == 1
    assert decision.message.startswith(PINNED)


SCAN_RULES = f"""
    - name: our-registry
      images: ["registry.example.com/team/**"]
      signatures:
        authorities:
          - name: release-key
            key:
              publicKey: |
{textwrap.indent(PEM_A, " " * 16)}
      scan:
        maxAge: 24h
        onMissing: warn
        deny: {{CRITICAL: 0, HIGH: 1}}
        warn: {{MEDIUM: 0}}
        ignore:
          - id: CVE-2024-0002
            until: 2026-06-01
            reason: not reachable
          - id: CVE-2020-0001
            until: 2020-01-01
            reason: expired
"""


def scan_fact(policies: PolicySet, ids: dict[str, tuple[str, ...]], *,
              age: dt.timedelta = dt.timedelta(hours=1)) -> ScanFact:
    attestor = policies.policies[0].rules[0].scan.attestors[0]  # type: ignore[union-attr]
    return ScanFact("attestation", NOW - age, ids, attestor.fingerprint)


def test_scan_thresholds_ignores_and_distinct_ids() -> None:
    policies = load(policy_yaml(rules=SCAN_RULES))
    ids = {"CRITICAL": ("CVE-2024-0002", "CVE-2020-0001"), "HIGH": ("CVE-2020-0001",
                                                                       "CVE-2024-0003")}
    facts = sig_facts(policies, {"release-key": Outcome("ok")},
                      scans=(scan_fact(policies, ids),))
    decision = run(policies, facts)
    # CVE-2024-0002 ignored until today (valid through 23:59:59); CVE-2020-0001's ignore expired
    # and it counts once, at CRITICAL.
    assert decision.decision == "deny"
    assert "1 CRITICAL (CVE-2020-0001) > 0 allowed" in decision.message
    entry = decision.entries[0]
    assert entry.scan is not None
    assert entry.scan.counts["CRITICAL"] == 1 and entry.scan.counts["HIGH"] == 1


def test_scan_warn_threshold_and_missing() -> None:
    policies = load(policy_yaml(rules=SCAN_RULES))
    medium = scan_fact(policies, {"MEDIUM": ("CVE-2025-1",)})
    facts = sig_facts(policies, {"release-key": Outcome("ok")}, scans=(medium,))
    decision = run(policies, facts)
    assert decision.decision == "warn" and "1 MEDIUM" in decision.warnings[0]
    stale = scan_fact(policies, {"CRITICAL": ("CVE-2025-9",)}, age=dt.timedelta(hours=48))
    facts = sig_facts(policies, {"release-key": Outcome("ok")}, scans=(stale,))
    decision = run(policies, facts)
    assert decision.decision == "warn"
    assert "no scan result no older than 24h" in decision.warnings[0]
    errored = sig_facts(policies, {"release-key": Outcome("ok")},
                        scan_errors={"attestation": "registry 503"})
    decision = run(policies, errored)
    assert decision.decision == "deny" and "scan verdict unavailable" in decision.message


def test_scan_from_unknown_attestor_does_not_count() -> None:
    policies = load(policy_yaml(rules=SCAN_RULES))
    foreign = ScanFact("attestation", NOW, {"CRITICAL": ()}, "someone-else")
    facts = sig_facts(policies, {"release-key": Outcome("ok")}, scans=(foreign,))
    assert run(policies, facts).decision == "warn"  # onMissing: warn


def test_signature_facts_keyed_by_signed_references() -> None:
    rules = f"""
    - name: mirror
      images: ["mirror.example.com/**"]
      signatures:
        signedReferences: ["docker.io/library/*"]
        authorities:
          - name: release-key
            key:
              publicKey: |
{textwrap.indent(PEM_A, " " * 16)}
"""
    policies = load(policy_yaml(rules=rules))
    [plan] = plan_checks(["mirror.example.com/nginx:1"], policies.policies)
    [check] = plan.signatures
    assert check.key == signature_key(check.authority, check.signed_references)
    assert check.key != check.authority.fingerprint


def test_registry_host_case_cannot_dodge_a_rule() -> None:
    """Host names are case-insensitive: an upper-cased host pulls from the same registry."""
    policies = load(policy_yaml(spec_extra="unmatched: allow"))
    image = "REGISTRY.Example.com/team/api:1.0"
    [plan] = plan_checks([image], policies.policies)
    assert plan.ref is not None and plan.ref.name == "registry.example.com/team/api"
    assert [check.authority.name for check in plan.signatures] == ["release-key"]
    facts = sig_facts(policies, {"release-key": Outcome("fail", "no signatures found")},
                      image=image)
    decision = run(policies, facts, images=(image,))
    assert decision.decision == "deny"
    assert decision.entries[0].rule == "our-registry"
