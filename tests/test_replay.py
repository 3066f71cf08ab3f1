"""`sealgate replay` on audit lines recorded from real /validate calls against the real registry:
edit the policy, re-decide offline, see exactly the admissions that change — and the ones the
log cannot decide."""

from __future__ import annotations

import json
import textwrap
import uuid
from pathlib import Path
from typing import Any

import httpx
import pytest
from cryptography.hazmat.primitives.asymmetric import ec

from tests.registry_server import RegistryServer, push_cosign_signature, push_image
from tests.signing import PrivateKey, cosign_layer, public_pem
from webhook.__main__ import main
from webhook.app import create_app
from webhook.settings import Settings


def authority(name: str, key: PrivateKey) -> str:
    pem = textwrap.indent(public_pem(key).decode(), " " * 16)
    return f"""\
          - name: {name}
            key:
              tlog: "off"
              publicKey: |
{pem}"""


def policy(host: str, authorities: str, *, mode: str = "audit", match: str = '["prod"]',
           threshold: int = 1, extra_rules: str = "", images: str | None = None) -> str:
    images = images or f'["{host}/team/**"]'
    return f"""\
apiVersion: sealgate.dev/v1alpha1
kind: ImagePolicy
metadata: {{name: production}}
spec:
  namespaces: {{match: {match}}}
  mode: {mode}
  rules:
{extra_rules}    - name: ours
      images: {images}
      signatures:
        threshold: {threshold}
        authorities:
{authorities}
"""


def write(directory: Path, text: str) -> Path:
    directory.mkdir(parents=True, exist_ok=True)
    (directory / "p.yaml").write_text(text)
    return directory


def review(image: str, *, namespace: str = "prod", kind: str = "Pod", name: str = "web"
           ) -> dict[str, Any]:
    obj: dict[str, Any] = {"kind": kind, "metadata": {"name": name},
                           "spec": {"containers": [{"name": "c", "image": image}]}}
    if kind == "ConfigMap":
        obj = {"kind": "ConfigMap", "metadata": {"name": name}, "data": {}}
    return {
        "apiVersion": "admission.k8s.io/v1", "kind": "AdmissionReview",
        "request": {
            "uid": str(uuid.uuid4()), "kind": {"group": "", "version": "v1", "kind": kind},
            "namespace": namespace, "operation": "CREATE", "userInfo": {"username": "alice"},
            "object": obj,
        },
    }


async def validate_all(policies: Path, audit_log: Path, host: str,
                       reviews: list[dict[str, Any]]) -> list[bool]:
    """POST each review to a real app (real lifespan, real registry); the answers' allowed."""
    settings = Settings(policies=policies, audit_log=audit_log, deadline=5.0,
                        insecure_registries=frozenset({host}))
    app = create_app(settings)
    allowed = []
    async with app.router.lifespan_context(app):
        transport = httpx.ASGITransport(app=app)
        async with httpx.AsyncClient(transport=transport, base_url="https://sealgate") as client:
            for body in reviews:
                response = await client.post("/validate", json=body)
                assert response.status_code == 200
                allowed.append(response.json()["response"]["allowed"])
    return allowed


def replay_json(log: Path, policies: Path, capsys: pytest.CaptureFixture[str]) -> Any:
    assert main(["replay", str(log), "--policies", str(policies), "--output", "json"]) == 0
    return json.loads(capsys.readouterr().out)


def by_name(items: list[dict[str, Any]]) -> dict[str, dict[str, Any]]:
    return {f"{item['namespace']}/{item['name']}": item for item in items}


async def test_replay_after_policy_edits(
    tmp_path: Path, registry: RegistryServer, capsys: pytest.CaptureFixture[str]
) -> None:
    host = registry.host
    release = ec.generate_private_key(ec.SECP256R1())
    newkey = ec.generate_private_key(ec.SECP256R1())

    def signed(repo: str, key: PrivateKey | None) -> str:
        digest, _ = push_image(registry.url, repo, "v1")
        if key is not None:
            push_cosign_signature(registry.url, repo, digest,
                                  [cosign_layer(key, f"{host}/{repo}", digest)])
        return digest

    api = signed("team/api", release)
    worker = signed("team/worker", None)
    tool = signed("team/tool", newkey)

    # 1. the rollout starts in audit mode: everything is allowed, and recorded with its facts
    log = tmp_path / "audit.log"
    audit_policy = write(tmp_path / "audit", policy(host, authority("release-key", release)))
    answers = await validate_all(audit_policy, log, host, [
        review(f"{host}/team/api:v1", name="api"),
        review(f"{host}/team/worker:v1", name="worker"),
        review(f"{host}/team/tool:v1", name="tool"),
        review(f"{host}/team/worker:v1", namespace="dev", name="dev-worker"),
        review("nginx", kind="ConfigMap", name="config"),
    ])
    assert answers == [True] * 5
    records = [json.loads(line) for line in log.read_text().splitlines()]
    assert [r["decision"] for r in records] == ["allow"] * 5
    assert records[0]["images"][0]["signatures"] == {"release-key": "ok"}
    assert records[1]["images"][0]["violations"]  # the violation is recorded, not enforced

    # 2. the same policy, enforced: exactly the unsigned and the foreign-signed images change
    enforce = write(tmp_path / "enforce",
                    policy(host, authority("release-key", release), mode="enforce"))
    report = replay_json(log, enforce, capsys)
    changed = by_name(report["changed"])
    assert sorted(changed) == ["prod/tool", "prod/worker"]
    assert changed["prod/worker"]["old"] == "allow" and changed["prod/worker"]["new"] == "deny"
    assert changed["prod/worker"]["message"] == (
        f'{host}/team/worker@{worker}: no valid signature from authority "release-key": '
        "no signatures found (policy production, rule ours)"
    )
    assert changed["prod/tool"]["message"].startswith(
        f'{host}/team/tool@{tool}: no valid signature from authority "release-key"')
    assert changed["prod/worker"]["user"] == "alice"
    assert report["undecidable"] == []
    # api unchanged; dev (no policy either way) unchanged; the ConfigMap is skipped
    assert report["summary"] == {"records": 5, "skipped": 1, "changed": 2, "unchanged": 2,
                                 "undecidable": 0, "transitions": {"allow → deny": 2}}

    # the table form names the change and the new reason
    assert main(["replay", str(log), "--policies", str(enforce)]) == 0
    out = capsys.readouterr().out
    assert "changed decisions:" in out and "allow → deny" in out
    assert out.splitlines()[-1] == ("replayed 4 of 5 admissions: 2 changed (allow → deny: 2), "
                                    "2 unchanged, 0 undecidable; 1 skipped (no images to decide)")

    # 3. a second authority nobody recorded: never guessed. api's recorded release-key "ok"
    # settles threshold 1 whatever new-key says; worker and tool depend on it: undecidable
    both = write(tmp_path / "both", policy(
        host, authority("release-key", release) + "\n" + authority("new-key", newkey),
        mode="enforce"))
    report = replay_json(log, both, capsys)
    assert report["changed"] == []
    undecidable = by_name(report["undecidable"])
    assert sorted(undecidable) == ["prod/tool", "prod/worker"]
    assert undecidable["prod/tool"]["unknown"] == [f'signature "new-key" on {host}/team/tool:v1']
    assert report["summary"]["unchanged"] == 2

    # with threshold 2 the recorded "fail" of release-key decides: deny regardless of new-key
    strict = write(tmp_path / "strict", policy(
        host, authority("release-key", release) + "\n" + authority("new-key", newkey),
        mode="enforce", threshold=2))
    report = replay_json(log, strict, capsys)
    assert sorted(by_name(report["changed"])) == ["prod/tool", "prod/worker"]
    assert sorted(by_name(report["undecidable"])) == ["prod/api"]

    # 4. a policy that now governs "dev" too: the no-policy admission recorded which images it
    # carried (checked_images) but, with no policy, checked none of them: not guessed
    wider = write(tmp_path / "wider", policy(host, authority("release-key", release),
                                             mode="enforce", match='["prod", "dev"]'))
    report = replay_json(log, wider, capsys)
    dev = by_name(report["undecidable"])["dev/dev-worker"]
    assert dev["unknown"] == [f"digest of {host}/team/worker:v1",
                              f'signature "release-key" on {host}/team/worker:v1']
    # ...while an image no rule of the wider policy matches is decided without any fact
    unmatched = write(tmp_path / "unmatched", policy(host, authority("release-key", release),
                                                     mode="enforce", match='["dev"]',
                                                     images='["other.example.com/**"]'))
    report = replay_json(log, unmatched, capsys)
    dev_changed = by_name(report["changed"])["dev/dev-worker"]
    assert dev_changed["new"] == "deny" and "matches no rule" in dev_changed["message"]

    # 5. enforcement on: the worker is denied for real; exempting its repository turns that
    # recorded deny into an allow
    answers = await validate_all(enforce, log, host, [review(f"{host}/team/worker:v1",
                                                             name="worker-2")])
    assert answers == [False]
    exempt = write(tmp_path / "exempt", policy(
        host, authority("release-key", release), mode="enforce",
        extra_rules=f"""\
    - name: worker-exempt
      images: ["{host}/team/worker"]
      signatures: none
"""))
    report = replay_json(log, exempt, capsys)
    changed = by_name(report["changed"])
    assert sorted(changed) == ["prod/tool", "prod/worker-2"]
    assert (changed["prod/worker-2"]["old"], changed["prod/worker-2"]["new"]) == ("deny", "allow")
    assert report["summary"]["transitions"] == {"allow → deny": 1, "deny → allow": 1}
    assert api  # pushed and verified above


def test_replay_usage_errors(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    (tmp_path / "audit.log").write_text("")
    assert main(["replay", str(tmp_path / "audit.log"), "--policies",
                 str(tmp_path / "missing")]) == 2
    assert "policy directory does not exist" in capsys.readouterr().err
    with pytest.raises(SystemExit) as info:
        main(["replay", str(tmp_path / "audit.log")])  # --policies is required
    assert info.value.code == 2


# --------------------------------------------------------------------------- scans, digests
# Records made by the webhook's own code (decide + audit_record), with scan facts the registry
# gatherer does not collect yet.

SCAN_DIGEST = "sha256:" + "c" * 64


def scan_policy(signer: PrivateKey, scanner: PrivateKey, scan: str) -> str:
    return policy("registry.example.com", authority("release-key", signer), mode="enforce") + \
        textwrap.indent(
            f"scan:\n  attestors:\n{textwrap.indent(authority('scanner', scanner), '  ')}"
            f"\n{textwrap.indent(scan, '  ')}", " " * 6)


def scanned_record(policies_dir: Path, image: str, when: Any, scanned_at: Any,
                   ids: dict[str, list[str]]) -> dict[str, Any]:
    from webhook.admission import AdmissionRequest
    from webhook.audit import audit_record
    from webhook.decision import ImageFacts, Outcome, ScanFact, decide, plan_checks
    from webhook.policy import load_policy_dir

    policies = load_policy_dir(policies_dir)
    [plan] = plan_checks([image], policies.applicable("prod"))
    attestor = plan.scans[0].attestors[0].fingerprint
    facts = {image: ImageFacts(
        Outcome("ok"), SCAN_DIGEST, {c.key: Outcome("ok") for c in plan.signatures},
        (ScanFact("attestation", scanned_at, {k: tuple(v) for k, v in ids.items()}, attestor),),
    )}
    decision = decide(namespace="prod", images=[image], policies=policies, facts=facts, now=when)
    request = AdmissionRequest(uid="u", kind="Pod", namespace="prod", name="web",
                               operation="CREATE", sub_resource=None, user="alice",
                               dry_run=False, images=(image,), break_glass_reason=None)
    return audit_record(request, decision, now=when, latency_ms=1.0)


def test_replay_rethresholds_recorded_scans(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    import datetime as dt

    signer = ec.generate_private_key(ec.SECP256R1())
    scanner = ec.generate_private_key(ec.SECP256R1())
    when = dt.datetime(2026, 5, 1, 12, tzinfo=dt.UTC)
    image = "registry.example.com/team/api:v1"
    lenient = write(tmp_path / "lenient", scan_policy(signer, scanner, "deny: {CRITICAL: 0}\n"))
    record = scanned_record(lenient, image, when, when - dt.timedelta(hours=2),
                            {"HIGH": ["CVE-1", "CVE-2"], "LOW": ["CVE-3"]})
    assert record["decision"] == "allow"
    assert record["images"][0]["scan"]["ids"] == {"HIGH": ["CVE-1", "CVE-2"], "LOW": ["CVE-3"]}
    log = tmp_path / "audit.log"
    log.write_text(json.dumps(record) + "\n")

    # stricter thresholds re-applied to the recorded raw IDs
    strict = write(tmp_path / "strict", scan_policy(signer, scanner, "deny: {HIGH: 1}\n"))
    [changed] = replay_json(log, strict, capsys)["changed"]
    assert changed["new"] == "deny"
    assert "vulnerabilities 2 HIGH (CVE-1, CVE-2) > 1 allowed [attestation]" in changed["message"]
    # ... and with an ignore entry valid at the time of the admission, unchanged
    ignoring = write(tmp_path / "ignoring", scan_policy(
        signer, scanner,
        "deny: {HIGH: 1}\nignore:\n  - {id: CVE-2, until: 2026-05-01, reason: tracked}\n"))
    assert replay_json(log, ignoring, capsys)["summary"]["unchanged"] == 1
    # a maxAge the recorded scan is too old for: no scan result, onMissing decides
    fresh = write(tmp_path / "fresh", scan_policy(signer, scanner, "maxAge: 1h\n"))
    [changed] = replay_json(log, fresh, capsys)["changed"]
    assert "no scan result no older than 1h from attestation" in changed["message"]
    # another scanner's attestation was never looked for: unknown, not "missing"
    other = ec.generate_private_key(ec.SECP256R1())
    moved = write(tmp_path / "moved", scan_policy(signer, other, "deny: {HIGH: 1}\n"))
    report = replay_json(log, moved, capsys)
    [undecidable] = report["undecidable"]
    assert undecidable["unknown"] == [f"scan (attestation) of {image}"]
    # a source never recorded, tried first: unknown too
    harbor = write(tmp_path / "harbor", scan_policy(
        signer, scanner, "sources: [harbor, attestation]\n"))
    assert replay_json(log, harbor, capsys)["undecidable"][0]["unknown"] == [
        f"scan (harbor) of {image}"]


def test_replay_unknown_digest_and_old_records(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    base = {"uid": "u", "namespace": "prod", "kind": "Pod", "name": "web",
            "operation": "CREATE", "user": "bob", "decision": "allow", "reason": None,
            "break_glass": None}
    unmatched = {**base, "time": "2026-05-01T00:00:00Z", "images": [{
        "ref": "quay.io/x/y:1", "name": "quay.io/x/y", "digest": None, "policy": "production",
        "rule": None, "mode": "audit", "signatures": {}, "violations": ["unmatched"]}]}
    pinned = {**base, "time": "2026-05-01T00:00:01Z", "name": "pinned", "images": [{
        "ref": f"quay.io/x/y@{SCAN_DIGEST}", "name": "quay.io/x/y", "digest": None,
        "policy": "production", "rule": None, "mode": "audit", "violations": []}]}
    log = tmp_path / "audit.log"
    log.write_text(json.dumps(unmatched) + "\n" + json.dumps(pinned) + "\nnot json\n")
    key = ec.generate_private_key(ec.SECP256R1())
    quay = write(tmp_path / "quay", policy("quay.io", authority("k", key), mode="enforce")
                 .replace('"quay.io/team/**"', '"quay.io/**"'))
    assert main(["replay", str(log), "--policies", str(quay), "-o", "json"]) == 0
    captured = capsys.readouterr()
    assert f"{log}:3: skipped: not JSON" in captured.err
    report = json.loads(captured.out)
    undecidable = by_name(report["undecidable"])
    # the tag was never resolved: its digest and signature are unknown
    assert undecidable["prod/web"]["unknown"] == [
        "digest of quay.io/x/y:1", 'signature "k" on quay.io/x/y:1']
    # the pinned reference's digest is known (it is in the reference), its signature is not
    assert undecidable["prod/pinned"]["unknown"] == [f'signature "k" on quay.io/x/y@{SCAN_DIGEST}']
    assert report["changed"] == []
