"""Defects the fuzzers (tests/test_fuzz_*.py) caught, each pinned by a plain regression test
so it stays fixed even when hypothesis does not happen to draw it again."""

from __future__ import annotations

import json
import textwrap
from collections.abc import AsyncIterator
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import httpx
import pytest
from cryptography.hazmat.primitives.asymmetric import ec

from tests.admission_helpers import pod_review
from tests.signing import public_pem
from tests.test_fuzz_admission import fortress_policy
from webhook.__main__ import main
from webhook.app import create_app
from webhook.errors import PolicyError
from webhook.policy import load_policy_text
from webhook.scans import ScanReportError, fact_from_statement, ids_from_trivy
from webhook.settings import Settings


@pytest.fixture
async def webhook(tmp_path: Path) -> AsyncIterator[httpx.AsyncClient]:
    (tmp_path / "policies").mkdir()
    (tmp_path / "policies" / "fortress.yaml").write_text(fortress_policy())
    app = create_app(Settings(policies=tmp_path / "policies", audit_log=tmp_path / "audit.log"))
    async with app.router.lifespan_context(app), httpx.AsyncClient(
        transport=httpx.ASGITransport(app=app), base_url="https://sealgate"
    ) as client:
        yield client


def audit_lines(tmp_path: Path) -> list[dict[str, Any]]:
    log = tmp_path / "audit.log"
    return [json.loads(line) for line in log.read_text().splitlines()] if log.exists() else []


def with_surrogate(where: str) -> bytes:
    review = pod_review("registry.example.com/team/app:v1")
    request = review["request"]
    if where == "uid":
        request["uid"] = "\ud800"
    elif where == "image":
        request["object"]["spec"]["containers"][0]["image"] = "registry.example.com/x\ud800"
    elif where == "username":
        request["userInfo"]["username"] = "mallory\udfff"
    elif where == "name":
        request["object"]["metadata"]["name"] = "web\ud83d"
    elif where == "break-glass":
        request["object"]["metadata"]["annotations"] = {"sealgate.dev/break-glass": "x\ud800"}
    return json.dumps(review).encode()  # ensure_ascii: the surrogate travels as "\ud800"


@pytest.mark.parametrize("where", ["uid", "image", "username", "name", "break-glass"])
async def test_a_lone_surrogate_is_a_400_not_a_500(
    webhook: httpx.AsyncClient, tmp_path: Path, where: str
) -> None:
    response = await webhook.post("/validate", content=with_surrogate(where),
                                  headers={"content-type": "application/json"})
    assert response.status_code == 400
    assert "surrogate" in response.json()["error"]
    assert audit_lines(tmp_path) == []


@pytest.mark.parametrize("kind", ["missing", None, "Pod", {}, {"kind": ""}, {"group": ""}])
async def test_a_review_without_a_usable_request_kind_is_a_400_never_an_allow(
    webhook: httpx.AsyncClient, tmp_path: Path, kind: Any
) -> None:
    review = pod_review("registry.example.com/team/unsigned:v1")
    if kind == "missing":
        del review["request"]["kind"]
    else:
        review["request"]["kind"] = kind
    response = await webhook.post("/validate", json=review)
    assert response.status_code == 400
    assert "request.kind" in response.json()["error"]
    assert audit_lines(tmp_path) == []


@pytest.mark.parametrize("spec", [[], "text", {"containers": 7}, {"ephemeralContainers": {}}])
async def test_mutate_answers_a_delete_with_a_malformed_object_not_a_500(
    tmp_path: Path, spec: Any
) -> None:
    """/mutate walked the object of every request, also of operations /validate does not
    read (DELETE, CONNECT), and answered 500 for an object that is not a pod."""
    (tmp_path / "policies").mkdir()
    (tmp_path / "policies" / "fortress.yaml").write_text(fortress_policy())
    app = create_app(Settings(policies=tmp_path / "policies", audit_log=tmp_path / "audit.log",
                              mutate=True))
    review = pod_review("registry.example.com/team/app:v1", operation="DELETE")
    review["request"]["object"]["spec"] = spec
    async with app.router.lifespan_context(app), httpx.AsyncClient(
        transport=httpx.ASGITransport(app=app), base_url="https://sealgate"
    ) as client:
        response = await client.post("/mutate", json=review)
    assert response.status_code == 200
    assert response.json()["response"] == {"uid": review["request"]["uid"], "allowed": True}


# ----------------------------------------------------------------- tests/test_fuzz_inputs.py


def test_a_deeply_nested_policy_file_is_a_load_error_with_file_and_line(tmp_path: Path) -> None:
    with pytest.raises(PolicyError, match=r"^deep\.yaml:1: invalid YAML: nested too deeply"):
        load_policy_text("a: " + "[" * 5000 + "]" * 5000 + "\n", "deep.yaml", base_dir=tmp_path)


def test_a_sarif_scan_time_out_of_range_is_a_report_error_not_a_crash() -> None:
    log = {"runs": [{"tool": {"driver": {"name": "x"}}, "results": []}]}
    statement = SimpleNamespace(predicate_type="https://github.com/sealgate/attestation/sarif/v1",
                                predicate=log, integrated_time=2**40, subject_digests=())
    with pytest.raises(ScanReportError, match="integratedTime"):
        fact_from_statement(statement, attestor="k")  # type: ignore[arg-type]


@pytest.mark.parametrize("value", ["", "null", ".inf", ".nan", "1e300", "99999999999999h"])
def test_an_unusable_max_age_is_a_load_error_naming_the_field(tmp_path: Path, value: str) -> None:
    """`maxAge:` left empty crashed `policy lint` with a traceback (AttributeError); an
    infinite or huge one with OverflowError."""
    key = json.dumps(public_pem(ec.generate_private_key(ec.SECP256R1())).decode())
    text = textwrap.dedent(f"""\
        apiVersion: sealgate.dev/v1alpha1
        kind: ImagePolicy
        metadata: {{name: p}}
        spec:
          namespaces: {{match: ["prod"]}}
          rules:
            - name: base
              images: ["docker.io/library/*"]
              signatures: none
              scan:
                attestors: [{{name: k, key: {{publicKey: {key}}}}}]
                maxAge: {value}
        """)
    with pytest.raises(PolicyError, match=r"^p\.yaml:12: scan\.maxAge: "):
        load_policy_text(text, "p.yaml", base_dir=tmp_path)


@pytest.mark.parametrize("field", ["tags", "rules", "invocations", "results-rule"])
def test_a_sarif_field_of_the_wrong_type_is_a_report_error_not_a_crash(field: str) -> None:
    run: dict[str, Any] = {"tool": {"driver": {"name": "x", "rules": [
        {"id": "CVE-1", "properties": {"tags": ["HIGH"]}}]}},
        "results": [{"ruleId": "CVE-1"}]}
    if field == "tags":
        run["tool"]["driver"]["rules"][0]["properties"]["tags"] = True
    elif field == "rules":
        run["tool"]["driver"]["rules"] = 7
    elif field == "invocations":
        run["invocations"] = 7
    else:
        run["tool"]["driver"]["rules"][0]["properties"] = {"tags": 3.5}
    statement = SimpleNamespace(predicate_type="https://github.com/sealgate/attestation/sarif/v1",
                                predicate={"runs": [run]}, integrated_time=1_700_000_000,
                                subject_digests=())
    with pytest.raises(ScanReportError, match="SARIF log: "):
        fact_from_statement(statement, attestor="k")  # type: ignore[arg-type]


@pytest.mark.parametrize("vulnerabilities", [7, True, 2.5])
def test_a_trivy_vulnerabilities_field_of_the_wrong_type_is_a_report_error(
    vulnerabilities: Any
) -> None:
    with pytest.raises(ScanReportError, match="Trivy report: "):
        ids_from_trivy({"Results": [{"Target": "x", "Vulnerabilities": vulnerabilities}]})


@pytest.mark.parametrize("where", ["uid", "name"])
async def test_validate_policy_answers_a_lone_surrogate_with_a_400_not_a_500(
    webhook: httpx.AsyncClient, where: str
) -> None:
    """/validate-policy parsed with the standard library, which accepts "\\ud800"; the
    answer (uid, or a problem naming the field) then could not be encoded."""
    obj: dict[str, Any] = {"apiVersion": "sealgate.dev/v1alpha1", "kind": "ImagePolicy",
                           "metadata": {"name": "p"}, "spec": {}}
    uid = "u-1"
    if where == "uid":
        uid = "\ud800"
    else:
        obj["metadata"]["name"] = "p\udfff"
    review = {"apiVersion": "admission.k8s.io/v1", "kind": "AdmissionReview", "request": {
        "uid": uid, "operation": "CREATE", "object": obj,
        "kind": {"group": "sealgate.dev", "version": "v1alpha1", "kind": "ImagePolicy"}}}
    response = await webhook.post("/validate-policy", content=json.dumps(review).encode(),
                                  headers={"content-type": "application/json"})
    assert response.status_code == 400
    assert "surrogate" in response.json()["error"]


@pytest.mark.parametrize("text", [
    "a: " + "[" * 5000 + "]" * 5000 + "\n",  # YAML: PyYAML's composer recursion
    "[" * 100_000 + "]" * 100_000,  # JSON (read as JSON when YAML refuses it)
    "kind: Pod\nspec: " + "[" * 900 + "]" * 900 + "\n",  # composes, then constructs deep
], ids=["yaml", "json", "construct"])
def test_check_names_a_deeply_nested_manifest_file_instead_of_a_traceback(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], text: str
) -> None:
    (tmp_path / "policies").mkdir()
    (tmp_path / "policies" / "fortress.yaml").write_text(fortress_policy())
    manifest = tmp_path / "deep.yaml"
    manifest.write_text(text)
    code = main(["check", "-f", str(manifest), "--policies", str(tmp_path / "policies"),
                 "-n", "prod"])
    err = capsys.readouterr().err
    assert code == 2, err
    assert f"{manifest}:" in err and "nested too deeply" in err


@pytest.mark.parametrize("ref", [["a", 1], 7, {"x": 1}])
def test_audit_report_reads_a_line_whose_image_ref_is_not_text(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], ref: Any
) -> None:
    """A recorded image whose ``ref`` was not a string crashed `audit report` (TypeError)."""
    line = {"time": "2026-11-30T10:00:00Z", "namespace": "prod", "decision": "deny",
            "enforced_by": ["p"], "images": [{"ref": ref, "policy": "p", "rule": "r",
                                               "mode": "enforce", "violations": ["x: denied"]}]}
    log = tmp_path / "audit.log"
    log.write_text(json.dumps(line) + "\n")
    assert main(["audit", "report", str(log)]) == 0
    assert "denied" in capsys.readouterr().out


def test_replay_reads_a_line_whose_checked_images_are_not_text(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """`checked_images: [[]]` crashed `replay` (TypeError: unhashable type: 'list')."""
    (tmp_path / "policies").mkdir()
    (tmp_path / "policies" / "fortress.yaml").write_text(fortress_policy())
    line = {"time": "2026-11-30T10:00:00Z", "namespace": "prod", "kind": "Pod",
            "operation": "CREATE", "decision": "allow", "reason": "no-policy",
            "images": [], "checked_images": [[], {"a": 1}, "registry.example.com/x:v1"]}
    log = tmp_path / "audit.log"
    log.write_text(json.dumps(line) + "\n")
    assert main(["replay", str(log), "--policies", str(tmp_path / "policies")]) in (0, 1)
    assert "registry.example.com/x" in capsys.readouterr().out


@pytest.mark.parametrize("field", ["apiVersion", "kind"])
async def test_a_deeply_nested_apiversion_or_kind_is_a_400_not_a_500(
    webhook: httpx.AsyncClient, field: str
) -> None:
    """The 400 message quoted the value with repr(), which a value nested 1000 deep (under
    the JSON parser's depth limit) turned into RecursionError: a 500."""
    review = pod_review("registry.example.com/team/app:v1")
    body = json.dumps(review).replace(
        f'"{field}": "{review[field]}"', f'"{field}": ' + "[" * 1000 + "]" * 1000, 1)
    response = await webhook.post("/validate", content=body.encode(),
                                  headers={"content-type": "application/json"})
    assert response.status_code == 400
    assert field in response.json()["error"]
