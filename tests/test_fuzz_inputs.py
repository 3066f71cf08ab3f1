"""Fuzzing everything else sealgate reads from people and programs it does not control:
image references, policy files, audit lines (``audit report``, ``replay``) and scan reports.

Properties: bad input is a SealgateError naming what is wrong (policy errors start with
``file:line:``), never another exception, a traceback or a hang; good input round-trips.
"""

from __future__ import annotations

import contextlib
import copy
import io
import json
import textwrap
import time
from pathlib import Path
from typing import Any

import pytest
import yaml
from cryptography.hazmat.primitives.asymmetric import ec
from hypothesis import event, given
from hypothesis import strategies as st

from tests.fuzz_reviews import workload
from tests.fuzzing import SURROGATES, budget, image_references, nested, texts, write_json
from tests.signing import public_pem
from webhook.__main__ import main
from webhook.errors import InvalidReferenceError, PolicyError
from webhook.patterns import PatternError, compile_image_pattern
from webhook.policy import load_policy_text
from webhook.references import parse_reference
from webhook.scans import ScanReportError, fact_from_statement, fact_from_vuln_predicate

# --------------------------------------------------------------------------- image references


@budget(400)
@given(image_references())
def test_fuzz_image_references_parse_or_name_the_problem(text: str) -> None:
    try:
        ref = parse_reference(text)
    except InvalidReferenceError as exc:
        event("invalid")
        assert str(exc)
        return
    event("valid")
    assert parse_reference(str(ref)) == ref  # normalisation is idempotent
    assert parse_reference(ref.pinned("sha256:" + "a" * 64)).name == ref.name
    assert ref.name == ref.name.strip() and "@" not in ref.name


@budget(200)
@given(st.one_of(image_references(), st.builds(lambda a, b: a + "/**" + b, image_references(),
                                               st.sampled_from(["", "*", "/x"]))))
def test_fuzz_image_patterns_compile_or_name_the_problem(text: str) -> None:
    try:
        pattern = compile_image_pattern(text)
    except PatternError as exc:
        assert str(exc).startswith("invalid image pattern")
        return
    pattern.matches("docker.io/library/nginx")  # never raises


# --------------------------------------------------------------------------- policy files

KEY_PEM = public_pem(ec.generate_private_key(ec.SECP256R1())).decode()


def base_policy() -> dict[str, Any]:
    return {
        "apiVersion": "sealgate.dev/v1alpha1", "kind": "ImagePolicy",
        "metadata": {"name": "fuzzed"},
        "spec": {
            "namespaces": {"match": ["prod-*"], "exclude": ["prod-sandbox"]},
            "mode": "enforce", "onError": "deny", "requireDigest": False,
            "unmatched": "deny", "breakGlass": False,
            "rules": [
                {"name": "ours", "images": ["registry.example.com/team/**"],
                 "signatures": {"threshold": 1, "signedReferences": [],
                                "authorities": [{"name": "release",
                                                 "key": {"publicKey": KEY_PEM, "tlog": "off"}}]},
                 "scan": {"maxAge": "168h", "onMissing": "deny", "deny": {"CRITICAL": 0},
                          "warn": {"HIGH": 0},
                          "ignore": [{"id": "CVE-2024-1", "until": "2027-01-31",
                                      "reason": "tracked"}]}},
                {"name": "keyless", "images": ["ghcr.io/acme/*"],
                 "signatures": {"authorities": [{"name": "gh", "keyless": {
                     "issuer": "https://token.actions.githubusercontent.com",
                     "subjectRegExp": "^https://github.com/acme/.+$"}}]}},
                {"name": "base", "images": ["docker.io/library/*"], "signatures": "none"},
            ],
        },
    }


def _paths(node: Any, prefix: tuple[Any, ...] = ()) -> list[tuple[Any, ...]]:
    found = [prefix] if prefix else []
    if isinstance(node, dict):
        for key, value in node.items():
            found += _paths(value, (*prefix, key))
    elif isinstance(node, list):
        for index, value in enumerate(node):
            found += _paths(value, (*prefix, index))
    return found


HOSTILE_VALUES = st.one_of(
    # fresh containers each draw (st.just would share one, and a mutation could nest it
    # inside itself)
    st.none(), st.booleans(), st.integers(), st.floats(), st.builds(list), st.builds(dict),
    st.builds(lambda: ["a", 1]), texts(surrogates=False), st.sampled_from(
        ["off", "no", "yes", "~", "-1", "1e9", "2027-02-30", "168x", "0s", "-5h", "9" * 40,
         "[", "*", "**", "nginx:1.0", "a@sha256:" + "0" * 64, "(?P<", "^$", ".*" * 50]))


@st.composite
def mutated_policies(draw: st.DrawFn) -> str:
    """A valid policy with fields dropped, retyped, renamed or added; as YAML text."""
    document = draw(mutated_policy_documents())
    text = yaml.safe_dump(document, allow_unicode=True, sort_keys=False)
    if draw(st.integers(0, 5)) == 0:
        text += "---\n" + yaml.safe_dump(document, allow_unicode=True)  # a second document
    return text


@st.composite
def mutated_policy_documents(draw: st.DrawFn) -> dict[str, Any]:
    """A valid policy with fields dropped, retyped, renamed or added."""
    document = base_policy()
    for _ in range(draw(st.integers(1, 4))):
        paths = _paths(document)
        if not paths:
            break
        path = draw(st.sampled_from(paths))
        parent: Any = document
        for key in path[:-1]:
            parent = parent[key]
        action = draw(st.sampled_from(["drop", "value", "rename", "extra", "dup"]))
        last = path[-1]
        if action == "drop":
            del parent[last]
        elif action == "value":
            parent[last] = draw(HOSTILE_VALUES)
        elif action == "rename" and isinstance(last, str):
            parent[last + draw(st.sampled_from(["s", "_", "X"]))] = parent.pop(last)
        elif action == "extra" and isinstance(parent, dict):
            parent[draw(texts(surrogates=False, huge=False))] = draw(HOSTILE_VALUES)
        elif action == "dup" and isinstance(parent, list):
            parent.append(copy.deepcopy(parent[last]))
    return document


RAW_YAML = st.one_of(
    texts(surrogates=False),
    st.sampled_from([
        "", "---\n", "null\n", "[]\n", "42\n", "\t- a\n", "a: [\n", "a: *missing\n",
        "!!python/object/apply:os.system ['true']\n", "a: !!binary 'AAAA'\n",
        "apiVersion: sealgate.dev/v1alpha1\napiVersion: x\n",
        "%YAML 9.9\n---\na: 1\n", "\ufeffapiVersion: 1\n", "? [a, b]\n: c\n",
        # an alias bomb: a walker that expands aliases would take forever
        "a: &a [x, x, x, x, x, x, x, x, x]\nb: &b [*a, *a, *a, *a, *a, *a, *a, *a, *a]\n"
        "c: &c [*b, *b, *b, *b, *b, *b, *b, *b, *b]\nd: &d [*c, *c, *c, *c, *c, *c, *c, *c]\n"
        "e: &e [*d, *d, *d, *d, *d, *d, *d, *d, *d]\nf: &f [*e, *e, *e, *e, *e, *e, *e, *e]\n"
        "apiVersion: sealgate.dev/v1alpha1\nkind: ImagePolicy\nmetadata: {name: *f}\n"
        "spec: {namespaces: {match: *f}, rules: *f}\n",
        "a: " + "[" * 5000 + "]" * 5000 + "\n",
    ]),
    st.builds(lambda text, cut: text[:cut],
              st.just(yaml.safe_dump(base_policy(), sort_keys=False)), st.integers(0, 2000)),
)


def check_policy_load(text: str, tmp: Path) -> None:
    started = time.monotonic()
    try:
        policies = load_policy_text(text, "fuzzed.yaml", base_dir=tmp)
    except PolicyError as exc:
        event("PolicyError")
        message = str(exc)
        assert message.startswith("fuzzed.yaml:"), message
        first = message.split(":", 2)
        assert first[1].isdigit() and int(first[1]) >= 1, message
        assert "Traceback" not in message
    else:
        event("loaded")
        assert all(policy.name for policy in policies)
    assert time.monotonic() - started < 5, "policy loading took over 5 s"


@budget(200)
@given(mutated_policies())
def test_fuzz_policy_files_load_or_name_file_and_line(tmp_path: Path, text: str) -> None:
    check_policy_load(text, tmp_path)


@budget(150)
@given(RAW_YAML)
def test_fuzz_raw_policy_text_loads_or_names_file_and_line(tmp_path: Path, text: str) -> None:
    check_policy_load(text, tmp_path)


# --------------------------------------------------------------------------- audit lines

RECORD = {
    "time": "2026-11-30T10:00:00.000Z", "uid": "u-1", "namespace": "prod", "kind": "Pod",
    "name": "web", "operation": "CREATE", "sub_resource": None, "user": "alice",
    "dry_run": False, "decision": "deny", "reason": None, "message": "denied",
    "warnings": [], "enforced_by": ["fuzzed"], "latency_ms": 1.5,
    "images": [{
        "ref": "registry.example.com/team/api:v1", "name": "registry.example.com/team/api",
        "digest": "sha256:" + "ab" * 32, "policy": "fuzzed", "rule": "ours", "mode": "enforce",
        "signatures": {"release": "fail"}, "signature_reasons": {"release": "no signatures"},
        "signature_keys": {"release": "k1"},
        "scan": {"source": "attestation", "scanned_at": "2026-11-30T09:00:00+00:00",
                 "ids": {"CRITICAL": ["CVE-1"]}, "counts": {"CRITICAL": 1}, "attestor": "k1"},
        "violations": ["denied"], "violation_levels": ["deny"], "cached": False,
    }],
    "checked_images": ["registry.example.com/team/api:v1"], "break_glass": None,
}


@st.composite
def audit_lines(draw: st.DrawFn) -> bytes:
    """A log of recorded lines, some mutated, some garbage, some torn."""
    lines: list[bytes] = []
    for _ in range(draw(st.integers(1, 6))):
        shape = draw(st.sampled_from(["record", "mutated", "mutated", "garbage", "torn"]))
        record = copy.deepcopy(RECORD)
        if shape == "mutated":
            for _ in range(draw(st.integers(1, 3))):
                paths = _paths(record)
                path = draw(st.sampled_from(paths))
                parent: Any = record
                for key in path[:-1]:
                    parent = parent[key]
                if draw(st.booleans()):
                    del parent[path[-1]]
                else:
                    parent[path[-1]] = draw(st.one_of(
                        HOSTILE_VALUES, SURROGATES, st.just(nested(2000))))
        if shape == "garbage":
            lines.append(draw(st.one_of(st.binary(max_size=80), st.sampled_from(
                [b"{}", b"[]", b"null", b'{"time": 5}', b"\xff\xfe", b"{" * 3000]))))
            continue
        line = write_json(record).encode()
        if shape == "torn":
            line = line[:draw(st.integers(0, len(line)))]
        lines.append(line.replace(b"\n", b""))
    return b"\n".join(lines) + b"\n"


@pytest.fixture(scope="module")
def replay_policies(tmp_path_factory: pytest.TempPathFactory) -> Path:
    directory = tmp_path_factory.mktemp("replay-policies")
    (directory / "p.yaml").write_text(textwrap.dedent("""\
        apiVersion: sealgate.dev/v1alpha1
        kind: ImagePolicy
        metadata: {name: fuzzed}
        spec:
          namespaces: {match: ["*"]}
          rules:
            - name: ours
              images: ["registry.example.com/**"]
              signatures:
                authorities:
                  - name: release
                    key:
                      tlog: "off"
                      publicKey: |
        """) + textwrap.indent(KEY_PEM, " " * 16))
    return directory


def run_cli(*argv: str) -> tuple[int, str, str]:
    out, err = io.StringIO(), io.StringIO()
    with contextlib.redirect_stdout(out), contextlib.redirect_stderr(err):
        code = main(list(argv))
    return code, out.getvalue(), err.getvalue()


@budget(120)
@given(audit_lines())
def test_fuzz_audit_lines_fed_to_report_and_replay(
    tmp_path_factory: pytest.TempPathFactory, replay_policies: Path, log: bytes
) -> None:
    path = tmp_path_factory.mktemp("log") / "audit.log"
    path.write_bytes(log)
    for argv in (("audit", "report", str(path)), ("audit", "report", str(path), "-o", "json"),
                 ("replay", str(path), "--policies", str(replay_policies)),
                 ("replay", str(path), "--policies", str(replay_policies), "-o", "json")):
        code, out, err = run_cli(*argv)
        assert code in (0, 1), (argv, code, err)
        assert "Traceback" not in out + err
        if "json" in argv:
            json.loads(out)
        for line in err.splitlines():  # each skipped line is named by file:line
            assert line.startswith(f"sealgate: {path}:"), line


# --------------------------------------------------------------------------- scan reports

DATA = Path(__file__).parent / "data" / "trivy"


def _small_trivy() -> dict[str, Any]:
    """The real Trivy report cut to two results of two vulnerabilities: few enough fields
    that mutations reach the structure, not just one of a thousand leaves."""
    report = json.loads((DATA / "photon-30.json.golden").read_text())
    report["Results"] = report["Results"][:2]
    for result in report["Results"]:
        result["Vulnerabilities"] = [
            {k: v for k, v in vuln.items() if k in ("VulnerabilityID", "Severity", "PkgName")}
            for vuln in (result.get("Vulnerabilities") or [])[:2]]
    return report


def _small_sarif() -> dict[str, Any]:
    log = json.loads((DATA / "alpine-310.sarif.golden").read_text())
    for run in log["runs"]:
        run["results"] = [{"ruleId": r["ruleId"], "level": r.get("level")}
                          for r in run.get("results", [])[:3]]
        rules = run["tool"]["driver"].get("rules", [])[:3]
        run["tool"]["driver"] = {"name": "Trivy", "rules": [
            {"id": r["id"], "properties": r.get("properties", {})} for r in rules]}
        run["invocations"] = [{"executionSuccessful": True,
                               "endTimeUtc": "2026-11-30T00:00:00Z"}]
    return log


TRIVY = _small_trivy()
SARIF = _small_sarif()


@st.composite
def mutated_json(draw: st.DrawFn, document: Any) -> Any:
    document = copy.deepcopy(document)
    for _ in range(draw(st.integers(1, 4))):
        paths = _paths(document)
        if not paths:
            break
        path = draw(st.sampled_from(paths))
        parent: Any = document
        for key in path[:-1]:
            parent = parent[key]
        if draw(st.integers(0, 3)) == 0:
            del parent[path[-1]]
        else:
            parent[path[-1]] = draw(HOSTILE_VALUES)
    return document


class Statement:
    def __init__(self, predicate_type: str, predicate: Any, integrated_time: int | None) -> None:
        self.predicate_type = predicate_type
        self.predicate = predicate
        self.integrated_time = integrated_time
        self.subject_digests = ("sha256:" + "a" * 64,)


VULN = "https://cosign.sigstore.dev/attestation/vuln/v1"


@budget(300)
@given(st.one_of(
    st.builds(lambda r: {"scanner": {"result": r},
                         "metadata": {"scanFinishedOn": "2026-11-30T00:00:00Z"}},
              mutated_json(TRIVY)),
    mutated_json({"scanner": {"result": TRIVY},
                  "metadata": {"scanFinishedOn": "2026-11-30T00:00:00.123456789Z"}}),
))
def test_fuzz_trivy_vuln_predicates_read_or_name_the_problem(predicate: Any) -> None:
    try:
        fact = fact_from_vuln_predicate(predicate, attestor="k")
    except ScanReportError as exc:
        event("ScanReportError")
        assert str(exc)
        return
    event("read")
    for ids in fact.ids.values():
        assert all(isinstance(i, str) for i in ids)


@budget(300)
@given(mutated_json(SARIF), st.one_of(st.none(), st.integers(0, 2**40)))
def test_fuzz_sarif_logs_read_or_name_the_problem(log: Any, integrated_time: int | None) -> None:
    statement = Statement("https://github.com/sealgate/attestation/sarif/v1", log,
                          integrated_time)
    try:
        fact = fact_from_statement(statement, attestor="k")  # type: ignore[arg-type]
    except ScanReportError as exc:
        event("ScanReportError")
        assert str(exc)
        return
    event("read")
    # a run without a results list is never a clean scan
    assert isinstance(log, dict) and all(isinstance(run.get("results"), list)
                                         for run in log["runs"])
    assert fact.source == "attestation"


# --------------------------------------------------------------------------- sealgate check


@st.composite
def manifest_streams(draw: st.DrawFn) -> str:
    """Multi-document manifests of any pod-bearing kind (hostile shapes included), as YAML or
    JSON, sometimes cut short or buried in a List."""
    kinds = st.sampled_from(["Pod", "Deployment", "CronJob", "ConfigMap", "Job", "DaemonSet"])
    documents = [draw(workload(kind, hostile=True))
                 for kind in draw(st.lists(kinds, min_size=1, max_size=3))]
    for document in documents:
        if isinstance(document, dict) and isinstance(document.get("metadata"), dict):
            document["metadata"]["namespace"] = draw(st.sampled_from(["prod", None, "kube-x"]))
    shape = draw(st.sampled_from(["yaml", "json", "list", "torn"]))
    if shape == "json":
        return write_json(documents[0])
    if shape == "list":
        documents = [{"apiVersion": "v1", "kind": "List", "items": documents}]
    text = "---\n".join(yaml.safe_dump(json.loads(write_json(d)), allow_unicode=True)
                        for d in documents)
    return text[:draw(st.integers(0, len(text)))] if shape == "torn" else text


@budget(60)
@given(manifest_streams())
def test_fuzz_check_decides_any_manifest_or_names_the_problem(
    tmp_path_factory: pytest.TempPathFactory, fortress: Path, text: str
) -> None:
    path = tmp_path_factory.mktemp("manifests") / "m.yaml"
    path.write_text(text, encoding="utf-8", errors="surrogatepass")
    code, out, err = run_cli("check", "-f", str(path), "--policies", str(fortress),
                             "-n", "prod", "-o", "json")
    assert code in (0, 1, 2), (code, err)
    assert "Traceback" not in out + err
    event(f"exit {code}")
    if code == 2:
        assert err.startswith("sealgate: "), err
    else:
        json.loads(out)


@pytest.fixture(scope="module")
def fortress(tmp_path_factory: pytest.TempPathFactory) -> Path:
    from tests.test_fuzz_admission import fortress_policy

    directory = tmp_path_factory.mktemp("fortress")
    (directory / "fortress.yaml").write_text(fortress_policy())
    return directory
