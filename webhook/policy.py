"""ImagePolicy model, loading and matching (pure: no I/O but reading policy files).

Every load error is a PolicyError whose message starts ``file:line:`` and names
the offending field (SPEC §2, §8). Unknown fields are errors, not ignored.
"""

from __future__ import annotations

import contextlib
import datetime as dt
import functools
import hashlib
import re
from collections.abc import Callable, Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal, TypeVar

import yaml
from cryptography import x509
from cryptography.exceptions import InvalidSignature, UnsupportedAlgorithm
from yaml.constructor import ConstructorError, SafeConstructor
from yaml.nodes import MappingNode, Node, ScalarNode, SequenceNode

from webhook.durations import parse_duration
from webhook.errors import PolicyError, SealgateError, VerificationError
from webhook.identity import Identity, X509Subject, claim_oid, parse_trusted_identity
from webhook.keys import (
    PublicKey,
    certificate_fingerprint,
    key_fingerprint,
    load_certificates,
    load_public_key,
)
from webhook.patterns import (
    ImagePattern,
    PatternError,
    compile_image_pattern,
    namespace_matches,
    validate_namespace_glob,
)

API_VERSION = "sealgate.dev/v1alpha1"
KIND = "ImagePolicy"
SEVERITIES = ("CRITICAL", "HIGH", "MEDIUM", "LOW", "UNKNOWN")
BUILTIN_ROOTS = ("public-good", "staging")
# metadata the API server sets on an ImagePolicy object (``kubectl get -o yaml``): ignored
SERVER_METADATA = (
    "uid", "resourceVersion", "generation", "creationTimestamp", "managedFields",
    "selfLink", "finalizers", "deletionTimestamp", "deletionGracePeriodSeconds",
)
AUTHORITY_KINDS = ("key", "keyless", "notation")

Mode = Literal["enforce", "warn", "audit"]
OnError = Literal["deny", "warn", "allow"]
TlogMode = Literal["required", "optional", "off"]
MODES: tuple[Mode, ...] = ("enforce", "warn", "audit")
ON_ERROR: tuple[OnError, ...] = ("deny", "warn", "allow")
SCAN_SOURCES = ("attestation", "harbor")


@dataclass(frozen=True, slots=True)
class Location:
    """Where a policy element was written, for messages: ``file:line``."""

    file: str
    line: int

    def __str__(self) -> str:
        return f"{self.file}:{self.line}"


@dataclass(frozen=True, slots=True)
class KeyAuthority:
    """A public key that signs images (cosign key-based signatures)."""

    name: str
    public_key: PublicKey = field(repr=False, compare=False)
    key_sha256: str
    tlog: TlogMode
    trusted_root: str
    location: Location = field(compare=False)

    @property
    def kind(self) -> str:
        return "key"

    @property
    def fingerprint(self) -> str:
        """Stable identity of what this authority accepts: cache keys use it, not the name."""
        return _digest("key", self.key_sha256, self.tlog, self.trusted_root)


@dataclass(frozen=True, slots=True)
class KeylessAuthority:
    """A Fulcio-certified OIDC identity (issuer + subject or anchored subject regexp)."""

    name: str
    issuer: str
    subject: str | None
    subject_regexp: str | None
    trusted_root: str
    location: Location = field(compare=False)
    claims: tuple[tuple[str, str], ...] = ()  # Fulcio extensions by name, exact (SPEC §9)
    claims_regexp: tuple[tuple[str, str], ...] = ()  # ... full-match regexps

    @property
    def kind(self) -> str:
        return "keyless"

    @property
    def fingerprint(self) -> str:
        parts = ["keyless", self.issuer, self.subject or "", self.subject_regexp or "",
                 self.trusted_root]
        if self.claims or self.claims_regexp:  # unchanged keys for authorities without claims
            parts += [f"{k}={v}" for k, v in self.claims]
            parts += [f"{k}~{v}" for k, v in self.claims_regexp]
        return _digest(*parts)

    @property
    def identity(self) -> Identity:
        return Identity(self.issuer, self.subject, self.subject_regexp, self.claims,
                        self.claims_regexp)


NotationLevel = Literal["strict", "permissive"]
NOTATION_LEVELS: tuple[NotationLevel, ...] = ("strict", "permissive")


@dataclass(frozen=True, slots=True)
class NotationAuthority:
    """Notary Project signatures (JWS or COSE envelopes) chaining to a trust store (SPEC §9).

    ``ca`` serves the ``notary.x509`` signing scheme, ``signing_authority`` the
    ``notary.x509.signingAuthority`` one, ``tsa`` the RFC 3161 timestamp roots.
    ``trusted_identities`` is empty for ``*`` (any leaf the store chains).
    """

    name: str
    ca: tuple[x509.Certificate, ...] = field(repr=False, compare=False)
    signing_authority: tuple[x509.Certificate, ...] = field(repr=False, compare=False)
    tsa: tuple[x509.Certificate, ...] = field(repr=False, compare=False)
    store_sha256: tuple[str, ...]  # "ca:<hex>", "signingAuthority:<hex>", "tsa:<hex>"
    trusted_identities: tuple[X509Subject, ...]
    any_identity: bool
    level: NotationLevel
    location: Location = field(compare=False)

    @property
    def kind(self) -> str:
        return "notation"

    @property
    def fingerprint(self) -> str:
        return _digest("notation", *self.store_sha256, "*" if self.any_identity else "",
                       *(i.text for i in self.trusted_identities), self.level)


Authority = KeyAuthority | KeylessAuthority | NotationAuthority
SigstoreAuthority = KeyAuthority | KeylessAuthority


@dataclass(frozen=True, slots=True)
class SignatureRequirement:
    threshold: int
    authorities: tuple[Authority, ...]
    signed_references: tuple[ImagePattern, ...] = ()


@dataclass(frozen=True, slots=True)
class IgnoreEntry:
    id: str
    until: dt.date
    reason: str

    def active(self, now: dt.datetime) -> bool:
        """Valid through 23:59:59 UTC of ``until`` (SPEC §8)."""
        return now.astimezone(dt.UTC).date() <= self.until


@dataclass(frozen=True, slots=True)
class ScanRequirement:
    sources: tuple[str, ...]
    attestors: tuple[Authority, ...]
    max_age: dt.timedelta | None
    on_missing: OnError
    deny: Mapping[str, int]
    warn: Mapping[str, int]
    ignore: tuple[IgnoreEntry, ...]


@dataclass(frozen=True, slots=True)
class Rule:
    name: str
    images: tuple[ImagePattern, ...]
    signatures: SignatureRequirement | None  # None: `signatures: none`
    scan: ScanRequirement | None
    location: Location = field(compare=False)


@dataclass(frozen=True, slots=True)
class Policy:
    name: str
    namespaces_match: tuple[str, ...]
    namespaces_exclude: tuple[str, ...]
    mode: Mode
    on_error: OnError
    require_digest: bool
    unmatched: OnError
    break_glass: bool
    rules: tuple[Rule, ...]
    location: Location = field(compare=False)

    def applies_to(self, namespace: str) -> bool:
        if not any(namespace_matches(p, namespace) for p in self.namespaces_match):
            return False
        return not any(namespace_matches(p, namespace) for p in self.namespaces_exclude)

    def select_rule(self, image_name: str) -> Rule | None:
        """Most specific matching pattern wins (most literal characters); ties: earlier rule."""
        best: tuple[int, Rule] | None = None
        for rule in self.rules:
            for pattern in rule.images:
                if pattern.matches(image_name) and (best is None or pattern.specificity > best[0]):
                    best = (pattern.specificity, rule)
        return None if best is None else best[1]


@dataclass(frozen=True, slots=True)
class PolicySet:
    policies: tuple[Policy, ...] = ()
    generation: int = 0

    def applicable(self, namespace: str | None) -> tuple[Policy, ...]:
        if not namespace:
            return ()
        return tuple(p for p in self.policies if p.applies_to(namespace))

    def authorities(self) -> Iterator[Authority]:
        for policy in self.policies:
            for rule in policy.rules:
                if rule.signatures is not None:
                    yield from rule.signatures.authorities
                if rule.scan is not None:
                    yield from rule.scan.attestors


@functools.lru_cache(maxsize=4096)  # fingerprints are cache keys, asked for on every review
def _digest(*parts: str) -> str:
    return hashlib.sha256("\x00".join(parts).encode()).hexdigest()[:32]


# --------------------------------------------------------------------------- loading


def policy_files(directory: Path) -> list[Path]:
    """Policy files under ``directory``: ``*.yaml``/``*.yml``, recursively, skipping tests
    (``*.test.yaml``) and any path component starting with ``.`` (ConfigMap ``..data``)."""
    found: list[Path] = []
    for path in sorted(directory.rglob("*")):
        relative = path.relative_to(directory)
        if any(part.startswith(".") for part in relative.parts):
            continue
        if path.suffix not in (".yaml", ".yml") or not path.is_file():
            continue
        if path.name.endswith((".test.yaml", ".test.yml")):
            continue
        found.append(path)
    return found


def load_policy_dir(directory: Path | str, *, generation: int = 0) -> PolicySet:
    """Load every policy under ``directory``; the first error raises PolicyError."""
    root = Path(directory)
    if not root.is_dir():
        raise PolicyError(f"{root}: policy directory does not exist or is not a directory")
    policies: list[Policy] = []
    seen: dict[str, Location] = {}
    for path in policy_files(root):
        for policy in load_policy_file(path, display=str(path)):
            if policy.name in seen:
                raise PolicyError(
                    f"{policy.location}: duplicate policy name {policy.name!r} "
                    f"(first defined at {seen[policy.name]})"
                )
            seen[policy.name] = policy.location
            policies.append(policy)
    return PolicySet(tuple(policies), generation)


def load_policy_file(path: Path, *, display: str | None = None) -> list[Policy]:
    name = display or str(path)
    try:
        text = path.read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError) as exc:
        raise PolicyError(f"{name}:1: cannot read policy file: {exc}") from exc
    return load_policy_text(text, name, base_dir=path.parent)


def compose_documents(
    text: str, file: str, error: type[SealgateError] = PolicyError
) -> list[Node]:
    """The YAML documents of ``text`` as nodes (which keep their lines); a syntax error
    raises ``error`` with ``file:line:``."""
    try:
        return list(yaml.compose_all(text, Loader=yaml.SafeLoader))
    except yaml.MarkedYAMLError as exc:
        mark = exc.problem_mark or exc.context_mark
        line = mark.line + 1 if mark else 1
        raise error(f"{file}:{line}: invalid YAML: {exc.problem or exc}") from exc
    except yaml.YAMLError as exc:
        raise error(f"{file}:1: invalid YAML: {exc}") from exc


def load_policy_text(text: str, file: str, *, base_dir: Path) -> list[Policy]:
    documents = compose_documents(text, file)
    parser = _Parser(file, base_dir)
    return [
        parser.policy(node)
        for doc in documents if doc is not None and not _is_null(doc)
        for node in _list_items(doc)
    ]


def _list_items(node: Node) -> list[Node]:
    """A ``kind: List`` / ``ImagePolicyList`` (what ``kubectl get -o yaml`` prints): its
    ``items``; any other document: itself."""
    if not isinstance(node, MappingNode):
        return [node]
    fields = {key.value: value for key, value in node.value if isinstance(key, ScalarNode)}
    kind = fields.get("kind")
    items = fields.get("items")
    if (
        isinstance(kind, ScalarNode)
        and kind.value in ("List", f"{KIND}List")
        and isinstance(items, SequenceNode)
    ):
        return list(items.value)
    return [node]


def _is_null(node: Node) -> bool:
    return isinstance(node, ScalarNode) and node.tag == "tag:yaml.org,2002:null"


T = TypeVar("T")


class _Parser:
    """Walks composed YAML nodes so every error can name its line."""

    def __init__(self, file: str, base_dir: Path) -> None:
        self.file = file
        self.base_dir = base_dir
        self._constructor = SafeConstructor()

    # -- primitives

    def loc(self, node: Node) -> Location:
        return Location(self.file, node.start_mark.line + 1)

    def fail(self, node: Node, message: str) -> PolicyError:
        return PolicyError(f"{self.loc(node)}: {message}")

    def scalar(self, node: Node) -> Any:
        if not isinstance(node, ScalarNode):
            raise self.fail(node, "expected a single value, not a list or mapping")
        try:
            return self._constructor.construct_object(node, deep=True)
        except ConstructorError as exc:
            raise self.fail(node, f"invalid value: {exc.problem}") from exc

    def string(self, node: Node, what: str) -> str:
        value = self.scalar(node)
        if not isinstance(value, str) or not value:
            raise self.fail(node, f"{what} must be a non-empty string")
        return value

    def boolean(self, node: Node, what: str) -> bool:
        value = self.scalar(node)
        if not isinstance(value, bool):
            raise self.fail(node, f"{what} must be true or false, not {value!r}")
        return value

    def choice(self, node: Node, what: str, allowed: Sequence[T]) -> T:
        value = self.scalar(node)
        if value not in allowed:
            raise self.fail(
                node, f"{what} must be one of {', '.join(map(str, allowed))}, not {value!r}"
            )
        return value  # type: ignore[no-any-return]

    def mapping(
        self, node: Node, what: str, allowed: Sequence[str], required: Sequence[str] = ()
    ) -> dict[str, Node]:
        if not isinstance(node, MappingNode):
            raise self.fail(node, f"{what} must be a mapping")
        out: dict[str, Node] = {}
        for key_node, value_node in node.value:
            key = self.scalar(key_node)
            if not isinstance(key, str):
                raise self.fail(key_node, f"{what}: field names must be strings, not {key!r}")
            if key not in allowed:
                raise self.fail(
                    key_node,
                    f"unknown field {what}.{key} (allowed: {', '.join(allowed)})",
                )
            if key in out:
                raise self.fail(key_node, f"duplicate field {what}.{key}")
            out[key] = value_node
        for key in required:
            if key not in out:
                raise self.fail(node, f"{what}.{key} is required")
        return out

    def sequence(self, node: Node, what: str) -> list[Node]:
        if not isinstance(node, SequenceNode):
            raise self.fail(node, f"{what} must be a list")
        return list(node.value)

    def strings(self, node: Node, what: str, check: Callable[[str], T]) -> tuple[T, ...]:
        out: list[T] = []
        for item in self.sequence(node, what):
            text = self.string(item, f"each entry of {what}")
            try:
                out.append(check(text))
            except (PatternError, ValueError) as exc:
                raise self.fail(item, f"{what}: {exc}") from exc
        return tuple(out)

    # -- the ImagePolicy document

    def policy(self, node: Node) -> Policy:
        top = self.mapping(
            node, "ImagePolicy", ("apiVersion", "kind", "metadata", "spec", "status"),
            ("apiVersion", "kind", "metadata", "spec"),
        )  # status: what the cluster says about the object, ignored
        api = self.scalar(top["apiVersion"])
        if api != API_VERSION:
            raise self.fail(top["apiVersion"], f"apiVersion must be {API_VERSION}, not {api!r}")
        kind = self.scalar(top["kind"])
        if kind != KIND:
            raise self.fail(top["kind"], f"kind must be {KIND}, not {kind!r}")
        meta = self.mapping(top["metadata"], "metadata",
                            ("name", "labels", "annotations", *SERVER_METADATA), ("name",))
        name = self.string(meta["name"], "metadata.name")
        spec = self.mapping(
            top["spec"], "spec",
            ("namespaces", "mode", "onError", "requireDigest", "unmatched", "breakGlass", "rules"),
            ("namespaces", "rules"),
        )
        ns = self.mapping(spec["namespaces"], "spec.namespaces", ("match", "exclude"), ("match",))
        match = self.strings(ns["match"], "spec.namespaces.match", validate_namespace_glob)
        if not match:
            raise self.fail(ns["match"], "spec.namespaces.match must name at least one namespace")
        exclude = (
            self.strings(ns["exclude"], "spec.namespaces.exclude", validate_namespace_glob)
            if "exclude" in ns else ()
        )
        rule_nodes = self.sequence(spec["rules"], "spec.rules")
        rules: list[Rule] = []
        problems: list[str] = []  # every broken rule is reported, not just the first
        for rule_node in rule_nodes:
            try:
                rule = self.rule(rule_node)
                if any(r.name == rule.name for r in rules):
                    raise self.fail(rule_node,
                                    f"duplicate rule name {rule.name!r} in policy {name!r}")
            except PolicyError as exc:
                problems.append(str(exc))
                continue
            rules.append(rule)
        if problems:
            raise PolicyError("\n".join(problems))
        return Policy(
            name=name,
            namespaces_match=match,
            namespaces_exclude=exclude,
            mode=self.choice(spec["mode"], "spec.mode", MODES) if "mode" in spec else "enforce",
            on_error=(self.choice(spec["onError"], "spec.onError", ON_ERROR)
                      if "onError" in spec else "deny"),
            require_digest=(self.boolean(spec["requireDigest"], "spec.requireDigest")
                            if "requireDigest" in spec else False),
            unmatched=(self.choice(spec["unmatched"], "spec.unmatched", ON_ERROR)
                       if "unmatched" in spec else "deny"),
            break_glass=(self.boolean(spec["breakGlass"], "spec.breakGlass")
                         if "breakGlass" in spec else False),
            rules=tuple(rules),
            location=self.loc(node),
        )

    def rule(self, node: Node) -> Rule:
        fields = self.mapping(node, "rule", ("name", "images", "signatures", "scan"),
                              ("name", "images"))
        name = self.string(fields["name"], "rule name")
        if "signatures" not in fields:
            raise self.fail(node, f"rule {name!r}: signatures is required (write `signatures: none`"
                                  " for no signature requirement)")
        images = self.strings(fields["images"], f"rule {name!r} images", compile_image_pattern)
        if not images:
            raise self.fail(fields["images"], f"rule {name!r}: images must not be empty")
        signatures = self.signatures(fields["signatures"], name)
        scan = self.scan(fields["scan"], name, signatures) if "scan" in fields else None
        return Rule(name, images, signatures, scan, self.loc(node))

    def signatures(self, node: Node, rule: str) -> SignatureRequirement | None:
        if isinstance(node, ScalarNode):
            if self.scalar(node) == "none":
                return None
            raise self.fail(node, f"rule {rule!r}: signatures must be a mapping or `none`")
        fields = self.mapping(node, "signatures", ("threshold", "authorities", "signedReferences"),
                              ("authorities",))
        authorities = self.authorities(fields["authorities"], f"rule {rule!r} signatures")
        if not authorities:
            raise self.fail(fields["authorities"],
                            f"rule {rule!r}: signatures.authorities must not be empty")
        threshold = 1
        if "threshold" in fields:
            threshold = self.scalar(fields["threshold"])
            if isinstance(threshold, bool) or not isinstance(threshold, int) or threshold < 1:
                raise self.fail(fields["threshold"],
                                f"rule {rule!r}: signatures.threshold must be a whole number >= 1")
            if threshold > len(authorities):
                raise self.fail(
                    fields["threshold"],
                    f"rule {rule!r}: signatures.threshold {threshold} is more than the "
                    f"{len(authorities)} authorities listed",
                )
        signed_refs = (
            self.strings(fields["signedReferences"], "signatures.signedReferences",
                         compile_image_pattern)
            if "signedReferences" in fields else ()
        )
        return SignatureRequirement(threshold, authorities, signed_refs)

    def authorities(self, node: Node, what: str) -> tuple[Authority, ...]:
        out: list[Authority] = []
        for item in self.sequence(node, f"{what}.authorities"):
            authority = self.authority(item)
            if any(a.name == authority.name for a in out):
                raise self.fail(item, f"duplicate authority name {authority.name!r} in {what}")
            out.append(authority)
        return tuple(out)

    def authority(self, node: Node) -> Authority:
        fields = self.mapping(node, "authority", ("name", *AUTHORITY_KINDS), ("name",))
        name = self.string(fields["name"], "authority name")
        kinds = [kind for kind in AUTHORITY_KINDS if kind in fields]
        if len(kinds) != 1:
            raise self.fail(node, f"authority {name!r}: give exactly one of "
                                  f"{', '.join(AUTHORITY_KINDS[:-1])} or {AUTHORITY_KINDS[-1]}")
        if "key" in fields:
            return self.key_authority(name, fields["key"])
        if "notation" in fields:
            return self.notation_authority(name, fields["notation"])
        return self.keyless_authority(name, fields["keyless"])

    def key_authority(self, name: str, node: Node) -> KeyAuthority:
        fields = self.mapping(node, f"authority {name!r} key",
                              ("publicKey", "file", "tlog", "trustedRoot"))
        if ("publicKey" in fields) == ("file" in fields):
            raise self.fail(node, f"authority {name!r}: give exactly one of key.publicKey or "
                                  "key.file")
        if "publicKey" in fields:
            pem_node = fields["publicKey"]
            pem = self.string(pem_node, f"authority {name!r} key.publicKey")
        else:
            pem_node = fields["file"]
            relative = self.string(pem_node, f"authority {name!r} key.file")
            key_path = (self.base_dir / relative)
            try:
                pem = key_path.read_text(encoding="utf-8")
            except (OSError, UnicodeDecodeError) as exc:
                raise self.fail(pem_node, f"authority {name!r}: cannot read key.file "
                                          f"{str(key_path)!r}: {exc.__class__.__name__}") from exc
        try:
            key = load_public_key(pem.encode())
        except (VerificationError, ValueError) as exc:
            raise self.fail(pem_node, f"authority {name!r}: bad public key PEM: {exc}") from exc
        tlog: TlogMode = "optional"
        if "tlog" in fields:
            raw = self.scalar(fields["tlog"])
            if raw is False:  # an unquoted YAML `off`
                raw = "off"
            if raw not in ("required", "optional", "off"):
                raise self.fail(fields["tlog"], f"authority {name!r}: key.tlog must be one of "
                                                f"required, optional, off, not {raw!r}")
            tlog = raw
        trusted_root = self.trusted_root(fields, name)
        return KeyAuthority(name, key, key_fingerprint(key), tlog, trusted_root, self.loc(node))

    def keyless_authority(self, name: str, node: Node) -> KeylessAuthority:
        fields = self.mapping(node, f"authority {name!r} keyless",
                              ("issuer", "subject", "subjectRegExp", "trustedRoot", "claims",
                               "claimsRegExp"), ("issuer",))
        issuer = self.string(fields["issuer"], f"authority {name!r} keyless.issuer")
        if ("subject" in fields) == ("subjectRegExp" in fields):
            raise self.fail(node, f"authority {name!r}: give exactly one of keyless.subject or "
                                  "keyless.subjectRegExp")
        subject = regexp = None
        if "subject" in fields:
            subject = self.string(fields["subject"], f"authority {name!r} keyless.subject")
        else:
            regexp = self.string(fields["subjectRegExp"],
                                 f"authority {name!r} keyless.subjectRegExp")
            try:
                re.compile(regexp)
            except re.error as exc:
                raise self.fail(fields["subjectRegExp"], f"authority {name!r}: bad "
                                                         f"keyless.subjectRegExp: {exc}") from exc
        claims = self.claims(fields.get("claims"), f"authority {name!r} keyless.claims", False)
        claims_regexp = self.claims(fields.get("claimsRegExp"),
                                    f"authority {name!r} keyless.claimsRegExp", True)
        return KeylessAuthority(name, issuer, subject, regexp, self.trusted_root(fields, name),
                                self.loc(node), claims, claims_regexp)

    def claims(self, node: Node | None, what: str, regexp: bool) -> tuple[tuple[str, str], ...]:
        if node is None:
            return ()
        if not isinstance(node, MappingNode):
            raise self.fail(node, f"{what} must be a mapping of claim name to value")
        out: list[tuple[str, str]] = []
        for key_node, value_node in node.value:
            claim = self.scalar(key_node)
            try:
                claim_oid(str(claim))
            except ValueError as exc:
                raise self.fail(key_node, f"{what}: {exc}") from exc
            if any(claim == seen for seen, _ in out):
                raise self.fail(key_node, f"duplicate field {what}.{claim}")
            value = self.string(value_node, f"{what}.{claim}")
            if regexp:
                try:
                    re.compile(value)
                except re.error as exc:
                    raise self.fail(value_node, f"{what}.{claim}: bad regexp: {exc}") from exc
            out.append((str(claim), value))
        return tuple(out)

    def notation_authority(self, name: str, node: Node) -> NotationAuthority:
        what = f"authority {name!r} notation"
        fields = self.mapping(node, what, ("trustStore", "trustedIdentities", "level"),
                              ("trustStore", "trustedIdentities"))
        store = self.mapping(fields["trustStore"], f"{what}.trustStore",
                             ("ca", "signingAuthority", "tsa"))
        ca = self.certificates(store.get("ca"), f"{what}.trustStore.ca")
        signing_authority = self.certificates(store.get("signingAuthority"),
                                              f"{what}.trustStore.signingAuthority")
        tsa = self.certificates(store.get("tsa"), f"{what}.trustStore.tsa")
        if not ca and not signing_authority:
            raise self.fail(fields["trustStore"], f"{what}.trustStore needs at least one "
                                                  "certificate in ca or signingAuthority")
        for cert in ca + signing_authority:
            if not _is_ca_or_self_signed(cert):
                raise self.fail(fields["trustStore"], f"{what}.trustStore: "
                                f"{cert.subject.rfc4514_string()} is neither a CA nor "
                                "self-signed, so it cannot anchor a chain")
        for cert in tsa:
            if not _is_self_signed(cert):
                raise self.fail(store["tsa"], f"{what}.trustStore.tsa: "
                                f"{cert.subject.rfc4514_string()} is not a root (self-signed) "
                                "certificate")
        identities: list[X509Subject] = []
        any_identity = False
        items = self.sequence(fields["trustedIdentities"], f"{what}.trustedIdentities")
        if not items:
            raise self.fail(fields["trustedIdentities"], f"{what}.trustedIdentities must not be "
                                                         'empty (write ["*"] for any identity)')
        for item in items:
            text = self.string(item, f"each entry of {what}.trustedIdentities")
            try:
                parsed = parse_trusted_identity(text)
            except ValueError as exc:
                raise self.fail(item, f"{what}.trustedIdentities: {exc}") from exc
            if parsed is None:
                any_identity = True
            else:
                identities.append(parsed)
        if any_identity and identities:
            raise self.fail(fields["trustedIdentities"], f'{what}.trustedIdentities: "*" '
                                                         "cannot be combined with x509.subject "
                                                         "identities")
        level: NotationLevel = (self.choice(fields["level"], f"{what}.level", NOTATION_LEVELS)
                                if "level" in fields else "strict")
        prints = tuple(
            [f"ca:{certificate_fingerprint(c)}" for c in ca]
            + [f"signingAuthority:{certificate_fingerprint(c)}" for c in signing_authority]
            + [f"tsa:{certificate_fingerprint(c)}" for c in tsa]
        )
        return NotationAuthority(name, ca, signing_authority, tsa, prints, tuple(identities),
                                 any_identity, level, self.loc(node))

    def certificates(self, node: Node | None, what: str) -> tuple[x509.Certificate, ...]:
        """A list of {file: PATH} (PEM or DER, relative to the policy file) or {pem: TEXT}."""
        if node is None:
            return ()
        out: list[x509.Certificate] = []
        for item in self.sequence(node, what):
            entry = self.mapping(item, f"entry of {what}", ("file", "pem"))
            if ("file" in entry) == ("pem" in entry):
                raise self.fail(item, f"{what}: give exactly one of file or pem per entry")
            if "pem" in entry:
                source = entry["pem"]
                data: bytes = self.string(source, f"{what} pem").encode()
                label = f"{what} pem"
            else:
                source = entry["file"]
                relative = self.string(source, f"{what} file")
                path = self.base_dir / relative
                try:
                    data = path.read_bytes()
                except OSError as exc:
                    raise self.fail(source, f"{what}: cannot read file {str(path)!r}: "
                                            f"{exc.__class__.__name__}") from exc
                label = f"{what} file {relative!r}"
            try:
                out.extend(load_certificates(data, label))
            except VerificationError as exc:
                raise self.fail(source, str(exc)) from exc
        return tuple(out)

    def trusted_root(self, fields: Mapping[str, Node], name: str) -> str:
        if "trustedRoot" not in fields:
            return "public-good"
        value = self.string(fields["trustedRoot"], f"authority {name!r} trustedRoot")
        if value in BUILTIN_ROOTS:
            return value
        path = self.base_dir / value
        if not path.is_file():
            raise self.fail(fields["trustedRoot"], f"authority {name!r}: trustedRoot {value!r} is "
                                                   "neither public-good, staging nor a readable "
                                                   "trusted_root.json file")
        return str(path)

    def scan(self, node: Node, rule: str, signatures: SignatureRequirement | None
             ) -> ScanRequirement:
        fields = self.mapping(
            node, f"rule {rule!r} scan",
            ("sources", "attestors", "maxAge", "onMissing", "deny", "warn", "ignore"),
        )
        sources: tuple[str, ...] = ("attestation",)
        if "sources" in fields:
            items = self.sequence(fields["sources"], "scan.sources")
            sources = tuple(self.choice(i, "scan.sources entry", SCAN_SOURCES) for i in items)
            if not sources:
                raise self.fail(fields["sources"], "scan.sources must not be empty")
        if "attestors" in fields:
            attestors = self.authorities(fields["attestors"], f"rule {rule!r} scan")
            for attestor, item in zip(attestors, self.sequence(fields["attestors"], "attestors"),
                                      strict=True):
                if isinstance(attestor, NotationAuthority):
                    raise self.fail(item, f"rule {rule!r}: scan attestor {attestor.name!r} is a "
                                          "notation authority; attestations are sigstore-signed "
                                          "(use key or keyless)")
        else:
            # notation authorities sign images, not in-toto attestations
            attestors = tuple(
                a for a in (signatures.authorities if signatures is not None else ())
                if not isinstance(a, NotationAuthority)
            )
        if "attestation" in sources and not attestors:
            raise self.fail(node, f"rule {rule!r}: scan source attestation needs attestors "
                                  "(this rule has `signatures: none`, so list scan.attestors)")
        max_age = None
        if "maxAge" in fields:
            try:
                max_age = parse_duration(self.scalar(fields["maxAge"]))
            except (ValueError, TypeError) as exc:
                raise self.fail(fields["maxAge"], f"scan.maxAge: {exc}") from exc
        return ScanRequirement(
            sources=sources,
            attestors=attestors,
            max_age=max_age,
            on_missing=(self.choice(fields["onMissing"], "scan.onMissing", ON_ERROR)
                        if "onMissing" in fields else "deny"),
            deny=self.thresholds(fields.get("deny"), "scan.deny"),
            warn=self.thresholds(fields.get("warn"), "scan.warn"),
            ignore=self.ignores(fields["ignore"]) if "ignore" in fields else (),
        )

    def thresholds(self, node: Node | None, what: str) -> Mapping[str, int]:
        if node is None:
            return {}
        out: dict[str, int] = {}
        for key, value_node in self.mapping(node, what, SEVERITIES).items():
            value = self.scalar(value_node)
            if isinstance(value, bool) or not isinstance(value, int) or value < 0:
                raise self.fail(value_node, f"{what}.{key} must be a whole number >= 0")
            out[key] = value
        return out

    def ignores(self, node: Node) -> tuple[IgnoreEntry, ...]:
        out: list[IgnoreEntry] = []
        for item in self.sequence(node, "scan.ignore"):
            fields = self.mapping(item, "scan.ignore entry", ("id", "until", "reason"),
                                  ("id", "until", "reason"))
            until = self.scalar(fields["until"])
            if isinstance(until, str):
                with contextlib.suppress(ValueError):  # reported just below
                    until = dt.date.fromisoformat(until)
            if isinstance(until, dt.datetime) or not isinstance(until, dt.date):
                raise self.fail(fields["until"], "scan.ignore.until must be a date (YYYY-MM-DD)")
            out.append(IgnoreEntry(
                self.string(fields["id"], "scan.ignore.id"),
                until,
                self.string(fields["reason"], "scan.ignore.reason"),
            ))
        return tuple(out)


def _is_self_signed(cert: x509.Certificate) -> bool:
    if cert.issuer != cert.subject:
        return False
    try:
        cert.verify_directly_issued_by(cert)
    except (ValueError, TypeError, InvalidSignature, UnsupportedAlgorithm):
        return False
    return True


def _is_ca_or_self_signed(cert: x509.Certificate) -> bool:
    try:
        if cert.extensions.get_extension_for_class(x509.BasicConstraints).value.ca:
            return True
    except (x509.ExtensionNotFound, ValueError):
        pass
    return _is_self_signed(cert)
