"""``sealgate policy test``: policy unit tests (``*.test.yaml``) run through the pure core.

Each case names a namespace, one or more images and the facts the registry
would report (digest, which authorities signed, scan results, errors); the
case's facts are mapped onto the keys ``decision.plan_checks`` asks for, and
``decision.decide`` — the same function ``/validate`` runs — gives the verdict.
No network. The format is documented in docs/policy-tests.md and in
``webhook/schema/imagepolicytest.schema.json`` (``sealgate policy schema --test``).
"""

from __future__ import annotations

import dataclasses
import datetime as dt
import hashlib
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from yaml.constructor import ConstructorError, SafeConstructor
from yaml.nodes import MappingNode, Node, ScalarNode, SequenceNode

from webhook.decision import (
    BreakGlass,
    CheckPlan,
    Decision,
    ImageFacts,
    Outcome,
    ScanFact,
    Status,
    decide,
    plan_checks,
)
from webhook.durations import parse_duration
from webhook.errors import SealgateError
from webhook.policy import (
    API_VERSION,
    MODES,
    SCAN_SOURCES,
    SEVERITIES,
    Mode,
    PolicySet,
    compose_documents,
)

TEST_KIND = "ImagePolicyTest"
DECISIONS = ("allow", "warn", "deny")
STATUSES: tuple[Status, ...] = ("ok", "fail", "error")
# what the registry-backed gatherer would say, so expected message fragments read naturally
_SIGNATURE_REASONS: dict[Status, str] = {
    "ok": "",
    "fail": "signature does not verify",
    "error": "registry error while fetching signatures",
}
_UNLISTED_REASON = "no signatures found"


class PolicyTestError(SealgateError):
    """A test file that cannot be read; the message starts ``file:line:``."""


@dataclass(frozen=True, slots=True)
class ScanInput:
    source: str
    attestor: str | None  # authority name; None: every attestor the rules accept
    scanned_at: dt.datetime | None  # None: `age` from the test clock
    age: dt.timedelta
    ids: Mapping[str, tuple[str, ...]]


@dataclass(frozen=True, slots=True)
class FactsInput:
    digest: str | None = None
    not_found: bool = False
    signatures: Mapping[str, Status] = field(default_factory=dict)
    scans: tuple[ScanInput, ...] = ()
    errors: Mapping[str, str] = field(default_factory=dict)  # digest | attestation | harbor


@dataclass(frozen=True, slots=True)
class PolicyTestCase:
    file: str
    line: int
    name: str
    namespace: str
    images: tuple[tuple[str, FactsInput], ...]
    expect_decision: str
    expect_messages: tuple[str, ...]
    now: dt.datetime | None
    break_glass: str | None
    user: str
    mode: Mode | None = None  # decide as if every policy were in this mode

    @property
    def location(self) -> str:
        return f"{self.file}:{self.line}"


@dataclass(frozen=True, slots=True)
class CaseResult:
    case: PolicyTestCase
    failures: tuple[str, ...]  # "- expected" / "+ actual" lines; empty: passed
    decision: Decision | None = None

    @property
    def passed(self) -> bool:
        return not self.failures


@dataclass(slots=True)
class PolicyTestRun:
    results: list[CaseResult] = field(default_factory=list)
    errors: list[str] = field(default_factory=list)  # test files that could not be read

    @property
    def passed(self) -> int:
        return sum(r.passed for r in self.results)

    @property
    def failed(self) -> int:
        return sum(not r.passed for r in self.results) + len(self.errors)

    def render(self, *, verbose: bool = False) -> str:
        lines: list[str] = [f"ERROR {error}" for error in self.errors]
        for result in self.results:
            case = result.case
            if result.passed:
                if verbose:
                    lines.append(f"PASS {case.location}: {case.name}")
                continue
            lines.append(f"FAIL {case.location}: {case.name}")
            lines.extend(f"  {line}" for line in result.failures)
        lines.append(f"{self.passed} passed, {self.failed} failed")
        return "\n".join(lines)


# --------------------------------------------------------------------------- discovery/loading


def find_test_files(directory: Path) -> list[Path]:
    """``*.test.yaml`` / ``*.test.yml`` under ``directory``, skipping dot components."""
    found = []
    for path in sorted(directory.rglob("*")):
        relative = path.relative_to(directory)
        if any(part.startswith(".") for part in relative.parts):
            continue
        if path.name.endswith((".test.yaml", ".test.yml")) and path.is_file():
            found.append(path)
    return found


def load_test_file(path: Path) -> list[PolicyTestCase]:
    display = str(path)
    try:
        text = path.read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError) as exc:
        raise PolicyTestError(f"{display}:1: cannot read test file: {exc}") from exc
    return load_test_text(text, display)


def load_test_text(text: str, file: str) -> list[PolicyTestCase]:
    documents = compose_documents(text, file, PolicyTestError)
    reader = _Reader(file)
    cases: list[PolicyTestCase] = []
    for node in documents:
        if node is None or (isinstance(node, ScalarNode) and node.tag.endswith(":null")):
            continue
        cases.extend(reader.document(node))
    return cases


class _Reader:
    """Walks composed YAML so every error names its line."""

    def __init__(self, file: str) -> None:
        self.file = file

    def fail(self, node: Node, message: str) -> PolicyTestError:
        return PolicyTestError(f"{self.file}:{node.start_mark.line + 1}: {message}")

    def value(self, node: Node) -> Any:
        try:
            return SafeConstructor().construct_object(node, deep=True)
        except ConstructorError as exc:
            raise self.fail(node, f"invalid value: {exc.problem}") from exc

    def mapping(self, node: Node, what: str, allowed: Sequence[str] | None,
                required: Sequence[str] = ()) -> dict[str, Node]:
        """A mapping's fields; ``allowed`` None: any non-empty string keys (names)."""
        if not isinstance(node, MappingNode):
            raise self.fail(node, f"{what} must be a mapping")
        out: dict[str, Node] = {}
        for key_node, value_node in node.value:
            key = self.value(key_node)
            if allowed is None:
                if not isinstance(key, str) or not key:
                    raise self.fail(key_node, f"{what}: keys must be non-empty strings")
            elif key not in allowed:
                raise self.fail(key_node, f"unknown field {what}.{key} "
                                          f"(allowed: {', '.join(allowed)})")
            if key in out:
                raise self.fail(key_node, f"duplicate field {what}.{key}")
            out[key] = value_node
        for key in required:
            if key not in out:
                raise self.fail(node, f"{what}.{key} is required")
        return out

    def string(self, node: Node, what: str) -> str:
        value = self.value(node)
        if not isinstance(value, str) or not value:
            raise self.fail(node, f"{what} must be a non-empty string")
        return value

    def strings(self, node: Node, what: str) -> tuple[str, ...]:
        if isinstance(node, ScalarNode):
            return (self.string(node, what),)
        if not isinstance(node, SequenceNode):
            raise self.fail(node, f"{what} must be a string or a list of strings")
        return tuple(self.string(item, f"each entry of {what}") for item in node.value)

    def time(self, node: Node, what: str) -> dt.datetime:
        value = self.value(node)
        if isinstance(value, str):
            try:
                value = dt.datetime.fromisoformat(value)
            except ValueError:
                raise self.fail(node, f"{what} must be an RFC 3339 time") from None
        if not isinstance(value, dt.datetime):
            raise self.fail(node, f"{what} must be an RFC 3339 time, e.g. 2026-01-31T00:00:00Z")
        return value if value.tzinfo else value.replace(tzinfo=dt.UTC)

    def duration(self, node: Node, what: str) -> dt.timedelta:
        try:
            return parse_duration(self.value(node))
        except (ValueError, TypeError) as exc:
            raise self.fail(node, f"{what}: {exc}") from exc

    def document(self, node: Node) -> list[PolicyTestCase]:
        top = self.mapping(node, TEST_KIND,
                           ("apiVersion", "kind", "metadata", "now", "mode", "cases"),
                           ("apiVersion", "kind", "cases"))
        if self.value(top["apiVersion"]) != API_VERSION:
            raise self.fail(top["apiVersion"], f"apiVersion must be {API_VERSION}")
        if self.value(top["kind"]) != TEST_KIND:
            raise self.fail(top["kind"], f"kind must be {TEST_KIND}")
        if "metadata" in top:
            self.mapping(top["metadata"], "metadata", ("name", "labels", "annotations"))
        now = self.time(top["now"], "now") if "now" in top else None
        mode = self.mode(top["mode"]) if "mode" in top else None
        cases_node = top["cases"]
        if not isinstance(cases_node, SequenceNode):
            raise self.fail(cases_node, "cases must be a list")
        return [self.case(item, now, mode) for item in cases_node.value]

    def mode(self, node: Node) -> Mode:
        value = self.value(node)
        if value not in MODES:
            raise self.fail(node, f"mode must be one of {', '.join(MODES)}, not {value!r}")
        mode: Mode = value
        return mode

    def case(self, node: Node, now: dt.datetime | None, mode: Mode | None) -> PolicyTestCase:
        fields = self.mapping(
            node, "case",
            ("name", "namespace", "image", "images", "facts", "now", "mode", "breakGlass",
             "user", "expect"),
            ("name", "namespace", "expect"),
        )
        name = self.string(fields["name"], "case name")
        if ("image" in fields) == ("images" in fields):
            raise self.fail(node, f"case {name!r}: give exactly one of image or images")
        shared = self.facts(fields["facts"]) if "facts" in fields else FactsInput()
        images: list[tuple[str, FactsInput]] = []
        if "image" in fields:
            images.append((self.string(fields["image"], "image"), shared))
        else:
            items = fields["images"]
            if not isinstance(items, SequenceNode) or not items.value:
                raise self.fail(items, "images must be a non-empty list")
            for item in items.value:
                if isinstance(item, ScalarNode):
                    images.append((self.string(item, "images entry"), shared))
                    continue
                entry = self.mapping(item, "images entry", ("image", "facts"), ("image",))
                facts = self.facts(entry["facts"]) if "facts" in entry else shared
                images.append((self.string(entry["image"], "images entry image"), facts))
        expect = self.mapping(fields["expect"], "expect", ("decision", "messages"),
                              ("decision",))
        decision = self.value(expect["decision"])
        if decision not in DECISIONS:
            raise self.fail(expect["decision"], f"expect.decision must be one of "
                                                f"{', '.join(DECISIONS)}, not {decision!r}")
        messages = (self.strings(expect["messages"], "expect.messages")
                    if "messages" in expect else ())
        return PolicyTestCase(
            file=self.file,
            line=node.start_mark.line + 1,
            name=name,
            namespace=self.string(fields["namespace"], "namespace"),
            images=tuple(images),
            expect_decision=decision,
            expect_messages=messages,
            now=self.time(fields["now"], "now") if "now" in fields else now,
            break_glass=(self.string(fields["breakGlass"], "breakGlass")
                         if "breakGlass" in fields else None),
            user=self.string(fields["user"], "user") if "user" in fields else "policy-test",
            mode=self.mode(fields["mode"]) if "mode" in fields else mode,
        )

    def facts(self, node: Node) -> FactsInput:
        fields = self.mapping(node, "facts",
                              ("digest", "notFound", "signatures", "scan", "errors"))
        digest = None
        if "digest" in fields:
            digest = self.string(fields["digest"], "facts.digest")
            if not digest.startswith("sha256:") or len(digest) != 71:
                raise self.fail(fields["digest"], "facts.digest must be sha256:<64 hex>")
        not_found = False
        if "notFound" in fields:
            not_found = self.value(fields["notFound"])
            if not isinstance(not_found, bool):
                raise self.fail(fields["notFound"], "facts.notFound must be true or false")
        signatures: dict[str, Status] = {}
        if "signatures" in fields:
            for authority, status_node in self.mapping(
                fields["signatures"], "facts.signatures", None
            ).items():
                status = self.value(status_node)
                if status not in STATUSES:
                    raise self.fail(status_node, f"facts.signatures.{authority} must be ok, fail "
                                                 f"or error, not {status!r}")
                signatures[authority] = status
        scans: list[ScanInput] = []
        if "scan" in fields:
            scan_node = fields["scan"]
            items = scan_node.value if isinstance(scan_node, SequenceNode) else [scan_node]
            scans = [self.scan(item) for item in items]
        errors: dict[str, str] = {}
        if "errors" in fields:
            for check, reason_node in self.mapping(
                fields["errors"], "facts.errors", ("digest", *SCAN_SOURCES)
            ).items():
                errors[check] = self.string(reason_node, f"facts.errors.{check}")
        return FactsInput(digest, not_found, signatures, tuple(scans), errors)

    def scan(self, node: Node) -> ScanInput:
        fields = self.mapping(node, "facts.scan",
                              ("source", "attestor", "scannedAt", "age", "ids", "counts"))
        source = self.value(fields["source"]) if "source" in fields else "attestation"
        if source not in SCAN_SOURCES:
            raise self.fail(fields["source"], f"facts.scan.source must be one of "
                                              f"{', '.join(SCAN_SOURCES)}, not {source!r}")
        if "scannedAt" in fields and "age" in fields:
            raise self.fail(node, "facts.scan: give scannedAt or age, not both")
        ids: dict[str, list[str]] = {severity: [] for severity in SEVERITIES}
        if "ids" in fields:
            for severity, list_node in self.mapping(fields["ids"], "facts.scan.ids",
                                                    SEVERITIES).items():
                ids[severity].extend(self.strings(list_node, f"facts.scan.ids.{severity}"))
        if "counts" in fields:
            for severity, count_node in self.mapping(fields["counts"], "facts.scan.counts",
                                                     SEVERITIES).items():
                count = self.value(count_node)
                if isinstance(count, bool) or not isinstance(count, int) or count < 0:
                    raise self.fail(count_node, f"facts.scan.counts.{severity} must be a whole "
                                                "number >= 0")
                ids[severity].extend(f"TEST-{severity}-{n}" for n in range(1, count + 1))
        return ScanInput(
            source=source,
            attestor=(self.string(fields["attestor"], "facts.scan.attestor")
                      if "attestor" in fields else None),
            scanned_at=(self.time(fields["scannedAt"], "facts.scan.scannedAt")
                        if "scannedAt" in fields else None),
            age=(self.duration(fields["age"], "facts.scan.age")
                 if "age" in fields else dt.timedelta(0)),
            ids={severity: tuple(v) for severity, v in ids.items() if v},
        )


# --------------------------------------------------------------------------- running


def run_directory(directory: Path | str, policies: PolicySet) -> PolicyTestRun:
    """Run every ``*.test.yaml`` under ``directory`` against ``policies``."""
    run = PolicyTestRun()
    for path in find_test_files(Path(directory)):
        try:
            cases = load_test_file(path)
        except PolicyTestError as exc:
            run.errors.append(str(exc))
            continue
        run.results.extend(run_case(case, policies) for case in cases)
    return run


def run_case(case: PolicyTestCase, policies: PolicySet, *, clock: dt.datetime | None = None
             ) -> CaseResult:
    now = case.now or clock or dt.datetime.now(dt.UTC)
    if case.mode is not None:
        policies = PolicySet(
            tuple(dataclasses.replace(p, mode=case.mode) for p in policies.policies),
            policies.generation,
        )
    images = [image for image, _ in case.images]
    plans = {plan.ref_text: plan
             for plan in plan_checks(images, policies.applicable(case.namespace))}
    facts: dict[str, ImageFacts] = {}
    problems: list[str] = []
    for image, given in case.images:
        plan = plans.get(image)
        if plan is None:  # no policy applies: nothing is asked
            continue
        try:
            facts[image] = image_facts(plan, given, now)
        except PolicyTestError as exc:
            problems.append(f"! {exc}")
    if problems:
        return CaseResult(case, tuple(problems))
    glass = BreakGlass(case.break_glass, case.user) if case.break_glass else None
    decision = decide(namespace=case.namespace, images=images, policies=policies, facts=facts,
                      now=now, break_glass=glass)
    return CaseResult(case, tuple(_compare(case, decision)), decision)


def image_facts(plan: CheckPlan, given: FactsInput, now: dt.datetime) -> ImageFacts:
    """The ImageFacts ``given`` describes, keyed as ``plan`` asks (authority names -> keys)."""
    keys: dict[str, list[str]] = {}
    for check in plan.signatures:
        keys.setdefault(check.authority.name, []).append(check.key)
    unknown = sorted(set(given.signatures) - set(keys))
    if unknown:
        known = ", ".join(sorted(keys)) or "none"
        raise PolicyTestError(f"authority {', '.join(map(repr, unknown))} is not asked for "
                              f"{plan.ref_text} by the policies that apply (authorities: "
                              f"{known})")
    signatures: dict[str, Outcome] = {}
    for name, name_keys in keys.items():
        status = given.signatures.get(name)
        outcome = (Outcome(status, _SIGNATURE_REASONS[status]) if status is not None
                   else Outcome("fail", _UNLISTED_REASON))
        for key in name_keys:
            signatures[key] = outcome
    attestors: dict[str, set[str]] = {}
    for scan in plan.scans:
        for authority in scan.attestors:
            attestors.setdefault(authority.name, set()).add(authority.fingerprint)
    scans: list[ScanFact] = []
    for scan_input in given.scans:
        scanned_at = scan_input.scanned_at or now - scan_input.age
        if scan_input.source != "attestation":
            fingerprints: list[str | None] = [None]
        elif scan_input.attestor is not None:
            if scan_input.attestor not in attestors:
                known = ", ".join(sorted(attestors)) or "none"
                raise PolicyTestError(f"scan attestor {scan_input.attestor!r} is not an attestor "
                                      f"of the rules for {plan.ref_text} (attestors: {known})")
            fingerprints = [*sorted(attestors[scan_input.attestor])]
        else:
            every = sorted({f for prints in attestors.values() for f in prints})
            fingerprints = [*every] if every else [None]
        scans.extend(ScanFact(scan_input.source, scanned_at, scan_input.ids, fingerprint)
                     for fingerprint in fingerprints)
    resolved = given.digest or (plan.ref.digest if plan.ref is not None else None)
    if resolved is None:
        resolved = "sha256:" + hashlib.sha256(plan.ref_text.encode()).hexdigest()
    if given.not_found:
        digest, resolved_digest = Outcome("fail", "image not found in registry"), None
    elif "digest" in given.errors:
        digest, resolved_digest = Outcome("error", given.errors["digest"]), None
    else:
        digest, resolved_digest = Outcome("ok"), resolved
    return ImageFacts(
        digest=digest,
        resolved_digest=resolved_digest,
        signatures=signatures,
        scans=tuple(scans),
        scan_errors={k: v for k, v in given.errors.items() if k != "digest"},
    )


def _compare(case: PolicyTestCase, decision: Decision) -> Iterator[str]:
    texts = [decision.message, *decision.warnings]
    missing = [f for f in case.expect_messages if not any(f in text for text in texts)]
    if decision.decision == case.expect_decision and not missing:
        return
    if decision.decision != case.expect_decision:
        yield f"- decision: {case.expect_decision}"
        yield f"+ decision: {decision.decision}"
    for fragment in missing:
        yield f"- message containing: {fragment}"
    yield f"+ message: {decision.message or '(none)'}"
    for warning in decision.warnings:
        yield f"+ warning: {warning}"
