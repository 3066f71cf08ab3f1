"""Who a signature must come from: keyless OIDC identities with CI claims, X.509 subjects.

Pure (the policy model holds it); the verifiers in `webhook.signatures` apply it.
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from dataclasses import dataclass

# Fulcio's OID registry (sigstore/fulcio docs/oid-info.md), 1.3.6.1.4.1.57264.1.x, by the
# camelCase names SPEC §9 gives. 1.1-1.6 hold the raw UTF-8 value as the extension's
# bytes; 1.8 and later hold a DER UTF8String.
FULCIO_OID_ARC = "1.3.6.1.4.1.57264.1"
CLAIM_OIDS: Mapping[str, int] = {
    "githubWorkflowTrigger": 2,
    "githubWorkflowSha": 3,
    "githubWorkflowName": 4,
    "githubWorkflowRepository": 5,
    "githubWorkflowRef": 6,
    "issuerV2": 8,
    "buildSignerURI": 9,
    "buildSignerDigest": 10,
    "runnerEnvironment": 11,
    "sourceRepositoryURI": 12,
    "sourceRepositoryDigest": 13,
    "sourceRepositoryRef": 14,
    "sourceRepositoryIdentifier": 15,
    "sourceRepositoryOwnerURI": 16,
    "sourceRepositoryOwnerIdentifier": 17,
    "buildConfigURI": 18,
    "buildConfigDigest": 19,
    "buildTrigger": 20,
    "runInvocationURI": 21,
    "sourceRepositoryVisibilityAtSigning": 22,
}
RAW_STRING_CLAIMS = frozenset(range(1, 7))


def claim_oid(name: str) -> str:
    """The dotted OID of a claim name; ValueError naming the known ones for any other."""
    if name not in CLAIM_OIDS:
        raise ValueError(
            f"unknown claim {name!r} (known: {', '.join(sorted(CLAIM_OIDS))})"
        )
    return f"{FULCIO_OID_ARC}.{CLAIM_OIDS[name]}"


@dataclass(frozen=True, slots=True)
class Identity:
    """A Fulcio certificate identity policy (SPEC §2 ``keyless``)."""

    issuer: str
    subject: str | None = None
    subject_regexp: str | None = None
    # (claim name, value): Fulcio extensions that must equal / fully match (SPEC §9)
    claims: tuple[tuple[str, str], ...] = ()
    claims_regexp: tuple[tuple[str, str], ...] = ()

    def __post_init__(self) -> None:
        if (self.subject is None) == (self.subject_regexp is None):
            raise ValueError("give exactly one of subject or subject_regexp")
        for name, _ in self.claims + self.claims_regexp:
            claim_oid(name)

    def claim_problems(self, values: Mapping[str, str | None]) -> list[str]:
        """What the certificate's claims (name -> value, None when absent) fail, if anything."""
        problems: list[str] = []
        for name, wanted in self.claims:
            value = values.get(name)
            if value is None:
                problems.append(f"claim {name} missing from the certificate")
            elif value != wanted:
                problems.append(f"claim {name} is {value!r}, not {wanted!r}")
        for name, pattern in self.claims_regexp:
            value = values.get(name)
            if value is None:
                problems.append(f"claim {name} missing from the certificate")
            elif re.fullmatch(pattern, value) is None:
                problems.append(f"claim {name} {value!r} does not match /{pattern}/")
        return problems

    def subject_matches(self, subject: str) -> bool:
        """Exact subject, or the regexp matching the whole subject (never a prefix, SPEC §2)."""
        if self.subject is not None:
            return subject == self.subject
        assert self.subject_regexp is not None
        return re.fullmatch(self.subject_regexp, subject) is not None

    def describe(self) -> str:
        wanted = self.subject if self.subject is not None else f"/{self.subject_regexp}/"
        return f"subject {wanted} from issuer {self.issuer}"


# --------------------------------------------------------------------------- X.509 subjects

# Distinguished-name attributes a Notary Project trusted identity may name.
DN_ATTRIBUTES = ("C", "ST", "L", "O", "OU", "CN", "emailAddress")
# The Notary Project trust policy requires these in an x509.subject identity.
DN_REQUIRED = ("C", "ST", "O")


@dataclass(frozen=True, slots=True)
class X509Subject:
    """A ``x509.subject: C=US, ST=WA, O=Notary, CN=release`` trusted identity.

    A leaf matches when its subject holds every attribute given here with the same
    value (notation-go: the identity's DN is a subset of the leaf's).
    """

    text: str
    attributes: tuple[tuple[str, str], ...]

    def matches(self, subject: Mapping[str, tuple[str, ...]]) -> bool:
        return all(value in subject.get(key, ()) for key, value in self.attributes)


def parse_trusted_identity(text: str) -> X509Subject | None:
    """``*`` (any identity: None) or ``x509.subject: <DN>``; ValueError saying what is wrong."""
    if text.strip() == "*":
        return None
    prefix, sep, dn = text.partition(":")
    if not sep or prefix.strip() != "x509.subject":
        raise ValueError(f"trusted identity {text!r} must be \"*\" or \"x509.subject: <DN>\"")
    attributes = _parse_dn(dn.strip(), text)
    keys = [key for key, _ in attributes]
    missing = [key for key in DN_REQUIRED if key not in keys]
    if missing:
        raise ValueError(
            f"trusted identity {text!r} must name at least C, ST and O "
            f"(missing {', '.join(missing)})"
        )
    duplicates = sorted({key for key in keys if keys.count(key) > 1})
    if duplicates:
        raise ValueError(f"trusted identity {text!r} names {', '.join(duplicates)} twice")
    return X509Subject(text, attributes)


def _parse_dn(dn: str, text: str) -> tuple[tuple[str, str], ...]:
    parts: list[str] = []
    current: list[str] = []
    escaped = False
    for char in dn:
        if escaped:
            current.append(char)
            escaped = False
        elif char == "\\":
            escaped = True
        elif char == ",":
            parts.append("".join(current))
            current = []
        else:
            current.append(char)
    parts.append("".join(current))
    out: list[tuple[str, str]] = []
    for part in parts:
        key, sep, value = part.partition("=")
        key, value = key.strip(), value.strip()
        if not sep or not key or not value:
            raise ValueError(f"trusted identity {text!r}: {part.strip()!r} is not ATTRIBUTE=value")
        if key not in DN_ATTRIBUTES:
            raise ValueError(
                f"trusted identity {text!r}: unknown attribute {key!r} "
                f"(known: {', '.join(DN_ATTRIBUTES)})"
            )
        out.append((key, value))
    return tuple(out)
