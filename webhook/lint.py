"""``sealgate policy lint``: every load error, and warnings about policies that load but mislead.

Errors are the loader's own (``file:line: message``), collected across files and
documents instead of stopping at the first. Warnings (SPEC §6, issue 7):
expired ``ignore`` entries, image patterns an earlier rule already claims (so a
rule is never selected), scan attestors that are never used, one key under
several names (or one name for several keys), and namespaces governed by two
policies in different modes. Warnings are sound: each names something that is
certainly so, never a guess.
"""

from __future__ import annotations

import datetime as dt
from collections import defaultdict
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Literal

import yaml
from yaml.nodes import ScalarNode

from webhook.errors import PolicyError, SealgateError
from webhook.patterns import namespace_matches
from webhook.policy import (
    Authority,
    Location,
    NotationAuthority,
    Policy,
    load_policy_text,
    policy_files,
)
from webhook.signatures.trust import load_trusted_root
from webhook.tables import plural

Level = Literal["error", "warning"]
_GLOB_CHARS = frozenset("*?[")


@dataclass(frozen=True, slots=True)
class LintMessage:
    level: Level
    location: str  # file:line
    message: str

    def __str__(self) -> str:
        marker = "" if self.level == "error" else "warning: "
        return f"{self.location}: {marker}{self.message}"


@dataclass(slots=True)
class LintResult:
    files: int = 0
    policies: list[Policy] = field(default_factory=list)
    messages: list[LintMessage] = field(default_factory=list)

    @property
    def errors(self) -> list[LintMessage]:
        return [m for m in self.messages if m.level == "error"]

    @property
    def warnings(self) -> list[LintMessage]:
        return [m for m in self.messages if m.level == "warning"]

    def render(self) -> str:
        lines = [str(m) for m in self.errors] + [str(m) for m in self.warnings]
        n_err, n_warn = len(self.errors), len(self.warnings)
        lines.append(
            f"{plural(len(self.policies), 'policy', 'policies')} in "
            f"{plural(self.files, 'file')}: {plural(n_err, 'error')}, "
            f"{plural(n_warn, 'warning')}"
        )
        return "\n".join(lines)


def lint_directory(directory: Path | str, *, now: dt.datetime | None = None) -> LintResult:
    """Load every policy under ``directory`` collecting all errors, then add warnings.

    A missing directory raises PolicyError (a usage error, not a lint finding).
    """
    root = Path(directory)
    if not root.is_dir():
        raise PolicyError(f"{root}: policy directory does not exist or is not a directory")
    result = LintResult()
    seen: dict[str, Location] = {}
    for path in policy_files(root):
        result.files += 1
        for policy_or_error in _load_file(path):
            if isinstance(policy_or_error, PolicyError):
                # one error per line: a document reports every broken rule
                result.messages.extend(
                    _from_error(line) for line in str(policy_or_error).splitlines() if line
                )
                continue
            policy = policy_or_error
            if policy.name in seen:
                result.messages.append(LintMessage(
                    "error", str(policy.location),
                    f"duplicate policy name {policy.name!r} (first defined at {seen[policy.name]})",
                ))
                continue
            seen[policy.name] = policy.location
            result.policies.append(policy)
    result.messages.extend(_trust_roots(result.policies))
    now = now or dt.datetime.now(dt.UTC)
    lines = _SourceLines()
    for check in (_expired_ignores(result.policies, now, lines), _shadowed(result.policies),
                  _unused_attestors(result.policies, lines),
                  _authority_names(result.policies, lines), _mode_overlaps(result.policies)):
        result.messages.extend(check)
    return result


# --------------------------------------------------------------------------- loading


def _load_file(path: Path) -> list[Policy | PolicyError]:
    """Each YAML document on its own, so one broken document hides no error of another."""
    display = str(path)
    try:
        text = path.read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError) as exc:
        return [PolicyError(f"{display}:1: cannot read policy file: {exc}")]
    try:
        nodes = [n for n in yaml.compose_all(text, Loader=yaml.SafeLoader) if n is not None]
    except yaml.YAMLError:
        nodes = []
    if len(nodes) <= 1:
        try:
            return list(load_policy_text(text, display, base_dir=path.parent))
        except PolicyError as exc:
            return [exc]
    out: list[Policy | PolicyError] = []
    for node in nodes:
        if isinstance(node, ScalarNode) and node.tag.endswith(":null"):
            continue
        start, end = node.start_mark, node.end_mark
        # pad so the loader's line numbers are the file's
        snippet = "\n" * start.line + " " * start.column + text[start.index:end.index]
        try:
            out.extend(load_policy_text(snippet, display, base_dir=path.parent))
        except PolicyError as exc:
            out.append(exc)
    return out


def _from_error(text: str) -> LintMessage:
    file, _, rest = text.partition(":")
    line, _, message = rest.partition(": ")
    if line.isdigit():
        return LintMessage("error", f"{file}:{line}", message)
    return LintMessage("error", file, rest.lstrip())


class _SourceLines:
    """Policy files' lines, to point a warning at the line that needs the edit."""

    def __init__(self) -> None:
        self._files: dict[str, list[str]] = {}

    def _lines(self, file: str) -> list[str]:
        lines = self._files.get(file)
        if lines is None:
            try:
                lines = Path(file).read_text(encoding="utf-8").splitlines()
            except (OSError, UnicodeDecodeError):
                lines = []
            self._files[file] = lines
        return lines

    def find(self, location: Location, needle: str, *, backwards: bool = False) -> str:
        """The first line from ``location`` on (or back from it) that contains ``needle``."""
        lines = self._lines(location.file)
        numbers = (range(min(location.line, len(lines)), 0, -1) if backwards
                   else range(location.line, len(lines) + 1))
        for number in numbers:
            if needle in lines[number - 1]:
                return f"{location.file}:{number}"
        return str(location)

    def authority(self, authority: Authority) -> str:
        """The ``- name: X`` line of an authority (its location is its key/keyless mapping)."""
        return self.find(authority.location, authority.name, backwards=True)


def _trust_roots(policies: Sequence[Policy]) -> Iterator[LintMessage]:
    """A trusted root the webhook could not load fails its start-up or reload: an error."""
    failed: set[str] = set()
    for policy, _rule, authority in _authority_uses(policies):
        if isinstance(authority, NotationAuthority):
            continue  # its trust store is in the policy itself
        root = authority.trusted_root
        if root in failed:
            continue
        try:
            load_trusted_root(root)
        except SealgateError as exc:
            failed.add(root)
            yield LintMessage("error", str(authority.location),
                              f"policy {policy.name}: authority {authority.name!r}: trusted root "
                              f"{root}: {exc}")


# --------------------------------------------------------------------------- warnings


def _warn(location: Location | str, message: str) -> LintMessage:
    return LintMessage("warning", str(location), message)


def _expired_ignores(
    policies: Sequence[Policy], now: dt.datetime, lines: _SourceLines
) -> Iterator[LintMessage]:
    for policy in policies:
        for rule in policy.rules:
            if rule.scan is None:
                continue
            for entry in rule.scan.ignore:
                if not entry.active(now):
                    yield _warn(
                        lines.find(rule.location, entry.id),
                        f"policy {policy.name}, rule {rule.name}: scan.ignore {entry.id} expired "
                        f"on {entry.until.isoformat()} and no longer applies "
                        f"(reason was: {entry.reason})",
                    )


def _shadowed(policies: Sequence[Policy]) -> Iterator[LintMessage]:
    # Sound by construction: an identical (normalised) pattern has the same specificity and
    # matches the same names, and ties go to the earlier rule (SPEC §2).
    for policy in policies:
        claimed: dict[str, str] = {}
        for rule in policy.rules:
            dead = [p.text for p in rule.images if p.text in claimed]
            if dead and len(dead) == len({p.text for p in rule.images}):
                owners = ", ".join(dict.fromkeys(claimed[text] for text in dead))
                yield _warn(rule.location, f"policy {policy.name}: rule {rule.name} is never "
                                           f"selected: every image pattern is already in an "
                                           f"earlier rule ({owners}), which wins ties")
            else:
                for text in dead:
                    yield _warn(rule.location, f"policy {policy.name}: pattern {text} of rule "
                                               f"{rule.name} never selects it: earlier rule "
                                               f"{claimed[text]} has the same pattern")
            for pattern in rule.images:
                claimed.setdefault(pattern.text, rule.name)


def _unused_attestors(policies: Sequence[Policy], lines: _SourceLines
                      ) -> Iterator[LintMessage]:
    for policy in policies:
        for rule in policy.rules:
            scan = rule.scan
            if scan is None or "attestation" in scan.sources or not scan.attestors:
                continue
            # attestors default to the rule's signature authorities: only explicit lists count
            defaults = rule.signatures.authorities if rule.signatures is not None else ()
            if scan.attestors is defaults:
                continue
            names = ", ".join(a.name for a in scan.attestors)
            yield _warn(lines.find(scan.attestors[0].location, "attestors", backwards=True),
                        f"policy {policy.name}, rule {rule.name}: scan.attestors ({names}) are "
                        f"never used: scan.sources ({', '.join(scan.sources)}) has no attestation")


def _authority_uses(policies: Sequence[Policy]) -> Iterator[tuple[Policy, str, Authority]]:
    for policy in policies:
        for rule in policy.rules:
            listed: list[Authority] = []
            if rule.signatures is not None:
                listed.extend(rule.signatures.authorities)
            if rule.scan is not None:
                listed.extend(a for a in rule.scan.attestors if a not in listed)
            for authority in listed:
                yield policy, rule.name, authority


def _authority_names(policies: Sequence[Policy], lines: _SourceLines
                     ) -> Iterator[LintMessage]:
    by_fingerprint: dict[str, list[tuple[Policy, str, Authority]]] = defaultdict(list)
    by_name: dict[str, list[tuple[Policy, str, Authority]]] = defaultdict(list)
    for use in _authority_uses(policies):
        by_fingerprint[use[2].fingerprint].append(use)
        by_name[use[2].name].append(use)

    def where(use: tuple[Policy, str, Authority]) -> str:
        return f"policy {use[0].name} rule {use[1]}"

    for uses in by_fingerprint.values():
        names = list(dict.fromkeys(u[2].name for u in uses))
        if len(names) > 1:
            first = next(u for u in uses if u[2].name == names[0])
            others = [next(u for u in uses if u[2].name == n) for n in names[1:]]
            for other in others:
                yield _warn(lines.authority(other[2]),
                            f"authority {other[2].name!r} ({where(other)}) is the same "
                            f"{other[2].kind} authority as {first[2].name!r} ({where(first)}): "
                            "one name per authority keeps audit records and tests readable")
    for name, uses in by_name.items():
        prints = list(dict.fromkeys(u[2].fingerprint for u in uses))
        if len(prints) > 1:
            first = uses[0]
            for other in uses[1:]:
                if other[2].fingerprint != first[2].fingerprint:
                    yield _warn(lines.authority(other[2]),
                                f"authority name {name!r} ({where(other)}) names a different "
                                f"{other[2].kind} authority than in {where(first)}: audit "
                                "records and policy tests identify authorities by name")
                    break


def _is_literal(pattern: str) -> bool:
    return not (_GLOB_CHARS & set(pattern))


def _overlap(a: Policy, b: Policy) -> str | None:
    """A namespace (or identical glob) certainly governed by both policies, else None."""
    for x in a.namespaces_match:
        for y in b.namespaces_match:
            if x == y or (_is_literal(x) and namespace_matches(y, x)):
                witness = x
            elif _is_literal(y) and namespace_matches(x, y):
                witness = y
            else:
                continue
            excluded = any(
                e == witness or (_is_literal(witness) and namespace_matches(e, witness))
                for e in (*a.namespaces_exclude, *b.namespaces_exclude)
            )
            if not excluded:
                return witness
    return None


def _mode_overlaps(policies: Sequence[Policy]) -> Iterator[LintMessage]:
    for index, first in enumerate(policies):
        for second in policies[index + 1:]:
            if first.mode == second.mode:
                continue
            witness = _overlap(first, second)
            if witness is None:
                continue
            what = (f"namespace {witness} is" if _is_literal(witness)
                    else f"namespaces matching {witness} are")
            yield _warn(second.location,
                        f"{what} governed by policy {first.name} (mode {first.mode}, "
                        f"{first.location}) and policy {second.name} (mode {second.mode}): each "
                        "mode applies only to its own policy's violations")
