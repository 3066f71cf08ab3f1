"""`sealgate audit report`: what enforcement would have denied, from audit lines the webhook's
own code writes (decision.decide + audit.audit_record)."""

from __future__ import annotations

import datetime as dt
import json
import textwrap
import uuid
from pathlib import Path
from typing import Any

import pytest
from cryptography.hazmat.primitives.asymmetric import ec

from tests.signing import public_pem
from webhook.__main__ import main
from webhook.admission import AdmissionRequest
from webhook.audit import audit_record
from webhook.decision import BreakGlass, ImageFacts, Outcome, decide, plan_checks
from webhook.policy import PolicySet, load_policy_dir

DIGEST_A = "sha256:" + "a" * 64
DIGEST_B = "sha256:" + "b" * 64


def write_policies(root: Path) -> PolicySet:
    root.mkdir()
    pem = textwrap.indent(public_pem(ec.generate_private_key(ec.SECP256R1())).decode(), " " * 16)
    rules = f"""\
  rules:
    - name: ours
      images: ["registry.example.com/**"]
      signatures:
        authorities:
          - name: release-key
            key:
              publicKey: |
{pem}
"""
    (root / "p.yaml").write_text(
        "apiVersion: sealgate.dev/v1alpha1\nkind: ImagePolicy\nmetadata: {name: trial}\n"
        "spec:\n  namespaces: {match: [\"prod-*\"]}\n  mode: audit\n" + rules
        + "---\napiVersion: sealgate.dev/v1alpha1\nkind: ImagePolicy\nmetadata: {name: soft}\n"
        "spec:\n  namespaces: {match: [\"staging\"]}\n  mode: warn\n" + rules
        + "---\napiVersion: sealgate.dev/v1alpha1\nkind: ImagePolicy\nmetadata: {name: strict}\n"
        "spec:\n  namespaces: {match: [\"payments\"]}\n  breakGlass: true\n" + rules
    )
    return load_policy_dir(root)


def record(policies: PolicySet, namespace: str, image: str, status: str, when: dt.datetime, *,
           digest: str = DIGEST_A, glass: str | None = None) -> dict[str, Any]:
    plans = plan_checks([image], policies.applicable(namespace))
    reason = "no signatures found" if status == "fail" else ""
    facts = {
        plan.ref_text: ImageFacts(Outcome("ok"), digest, {
            check.key: Outcome(status, reason) for check in plan.signatures  # type: ignore[arg-type]
        })
        for plan in plans
    }
    breaking = BreakGlass(glass, "oncall") if glass else None
    decision = decide(namespace=namespace, images=[image], policies=policies, facts=facts,
                      now=when, break_glass=breaking)
    request = AdmissionRequest(
        uid=str(uuid.uuid4()), kind="Pod", namespace=namespace, name="web", operation="CREATE",
        sub_resource=None, user="oncall" if glass else "alice", dry_run=False, images=(image,),
        break_glass_reason=glass,
    )
    return audit_record(request, decision, now=when, latency_ms=1.5)


@pytest.fixture
def log(tmp_path: Path) -> Path:
    policies = write_policies(tmp_path / "policies")
    now = dt.datetime.now(dt.UTC)
    api = "registry.example.com/team/api:v1"
    lines = [
        record(policies, "prod-a", api, "fail", now - dt.timedelta(hours=30)),
        record(policies, "prod-a", api, "fail", now - dt.timedelta(hours=2)),
        record(policies, "prod-a", api, "fail", now - dt.timedelta(hours=1)),
        record(policies, "prod-a", api, "ok", now - dt.timedelta(minutes=30)),
        record(policies, "prod-b", "registry.example.com/team/web:v2", "fail",
               now - dt.timedelta(minutes=20), digest=DIGEST_B),
        record(policies, "staging", api, "fail", now - dt.timedelta(minutes=10)),
        record(policies, "payments", api, "fail", now - dt.timedelta(minutes=5)),
        record(policies, "payments", api, "fail", now - dt.timedelta(minutes=4), glass="INC-9"),
        record(policies, "payments", api, "ok", now - dt.timedelta(minutes=3)),
        record(policies, "dev", api, "fail", now - dt.timedelta(minutes=2)),
    ]
    assert [line["decision"] for line in lines] == [
        "allow", "allow", "allow", "allow", "allow", "warn", "deny", "warn", "allow", "allow",
    ]
    path = tmp_path / "audit.log"
    text = "\n".join(json.dumps(line) for line in lines)
    # a torn line and garbage, as a crashed writer or a mixed-up file would leave
    path.write_text(text + '\n{"time": "2026-\nnot json at all\n[1, 2]\n\n')
    return path


def test_report_groups_namespace_image_reason(
    log: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    assert main(["audit", "report", str(log)]) == 0
    captured = capsys.readouterr()
    assert captured.err.splitlines() == [
        f"sealgate: {log}:11: skipped: not JSON: Unterminated string starting at (column 10)",
        f"sealgate: {log}:12: skipped: not JSON: Expecting value (column 1)",
        f"sealgate: {log}:13: skipped: not a JSON object",
    ]
    out = captured.out
    reason = ('no valid signature from authority "release-key": no signatures found '
              "(policy {policy}, rule ours)")
    lines = out.splitlines()
    start = lines.index("namespace prod-a")
    assert lines[start:start + 4] == [
        "namespace prod-a",
        f"  registry.example.com/team/api@{DIGEST_A}",
        lines[start + 2],
        "        " + reason.format(policy="trial"),
    ]
    assert lines[start + 2].startswith("    would deny (audit mode): 3 admissions, first ")
    assert "namespace prod-b" in lines and f"  registry.example.com/team/web@{DIGEST_B}" in lines
    staging = lines.index("namespace staging")
    assert lines[staging + 2].startswith("    would deny (warn mode): 1 admission, first ")
    payments = lines.index("namespace payments")
    block = lines[payments:payments + 6]
    assert any(line.startswith("    denied: 1 admission") for line in block)
    assert any(line.startswith("    waived by break glass: 1 admission") for line in block)
    assert "namespace dev" not in lines  # no policy there
    assert lines[-1] == ("10 audit records, 10 in scope: enforcement would have denied "
                         "5 admissions (3 images in 3 namespaces); 1 denied")


def test_since_and_namespace_filters(log: Path, capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["audit", "report", str(log), "--since", "24h", "--namespace", "prod-*",
                 "--output", "json"]) == 0
    report = json.loads(capsys.readouterr().out)
    assert [n["namespace"] for n in report["namespaces"]] == ["prod-a", "prod-b"]
    [image] = report["namespaces"][0]["images"]
    assert image["image"] == f"registry.example.com/team/api@{DIGEST_A}"
    [reason] = image["reasons"]
    assert reason["count"] == 2  # the 30h-old one is outside --since 24h
    assert reason["policy"] == "trial" and reason["rule"] == "ours"
    assert reason["mode"] == "audit" and reason["outcome"] == "would deny"
    assert reason["first_seen"] < reason["last_seen"]
    assert reason["first_seen"].endswith("Z")
    assert report["summary"] == {"records": 10, "in_scope": 4, "would_deny_admissions": 3,
                                 "denied_admissions": 0}


def test_exact_namespace(log: Path, capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["audit", "report", str(log), "--namespace", "payments", "-o", "json"]) == 0
    report = json.loads(capsys.readouterr().out)
    [payments] = report["namespaces"]
    outcomes = sorted(r["outcome"] for r in payments["images"][0]["reasons"])
    assert outcomes == ["denied", "waived by break glass"]
    assert report["summary"]["would_deny_admissions"] == 0


def test_violation_levels_when_recorded(tmp_path: Path, capsys: pytest.CaptureFixture[str]
                                        ) -> None:
    # entries that say which violations are deny-level count only those
    line = {"time": "2026-01-01T00:00:00Z", "namespace": "prod", "decision": "allow",
            "kind": "Pod", "images": [{
                "ref": "x:1", "name": "docker.io/library/x", "digest": DIGEST_A,
                "policy": "p", "rule": "r", "mode": "audit",
                "violations": ["docker.io/library/x@" + DIGEST_A + ": too many HIGH",
                               "docker.io/library/x@" + DIGEST_A + ": some warning"],
                "violation_levels": ["deny", "warn"],
            }]}
    path = tmp_path / "audit.log"
    path.write_text(json.dumps(line) + "\n")
    assert main(["audit", "report", str(path), "-o", "json"]) == 0
    [ns] = json.loads(capsys.readouterr().out)["namespaces"]
    assert [r["reason"] for r in ns["images"][0]["reasons"]] == ["too many HIGH"]


@pytest.mark.parametrize(("argv", "message"), [
    (["audit", "report", "/nonexistent/audit.log"], "cannot read audit log"),
    (["audit", "report", "-", "--since", "yesterday"], "--since: invalid duration"),
])
def test_errors_exit_2(argv: list[str], message: str, capsys: pytest.CaptureFixture[str]
                       ) -> None:
    assert main(argv) == 2
    assert message in capsys.readouterr().err


def test_empty_log(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    (tmp_path / "audit.log").write_text("")
    assert main(["audit", "report", str(tmp_path / "audit.log")]) == 0
    assert capsys.readouterr().out.strip() == (
        "0 audit records, 0 in scope: enforcement would have denied 0 admissions "
        "(0 images in 0 namespaces); 0 denied"
    )


def test_records_of_the_wrong_shape_do_not_crash(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    weird = [
        {"time": "2026-01-01T00:00:00Z", "decision": "deny", "namespace": 5,
         "enforced_by": [{}], "images": [3, {"ref": 3, "violations": "x", "mode": "audit",
                                             "signatures": [], "signature_keys": "k",
                                             "scan": {"ids": "x"}}]},
        {"time": "2026-01-01T00:00:00Z", "decision": "allow", "kind": "Pod",
         "operation": "CREATE", "namespace": "prod",
         "images": [{"ref": "nginx", "signatures": {"a": "maybe"}, "signature_keys": {"a": 1},
                     "scan": {"source": "harbor", "scanned_at": "yesterday", "ids": {}}}]},
        {"time": "nope", "decision": "allow"},
        {"time": "2026-01-01T00:00:00Z"},
        {"time": "2026-01-01T00:00:00Z", "decision": "allow", "images": "none"},
    ]
    path = tmp_path / "audit.log"
    path.write_text("\n".join(json.dumps(w) for w in weird) + "\n" + "[" * 100_000 + "\n")
    assert main(["audit", "report", str(path)]) == 0
    err = capsys.readouterr().err.splitlines()
    assert [e.split(": skipped: ")[1] for e in err] == [
        "no valid time", "no decision", "images is not a list", "not JSON: nested too deeply"]
    (tmp_path / "policies").mkdir()
    assert main(["replay", str(path), "--policies", str(tmp_path / "policies")]) == 0
    assert capsys.readouterr().out.splitlines()[-1].startswith("replayed ")
