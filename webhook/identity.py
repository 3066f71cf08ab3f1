"""Who a keyless signature must come from: OIDC issuer + subject (exact or anchored regexp).

Pure (the policy model holds it); the verifiers in `webhook.signatures` apply it.
"""

from __future__ import annotations

import re
from dataclasses import dataclass


@dataclass(frozen=True, slots=True)
class Identity:
    """A Fulcio certificate identity policy (SPEC §2 ``keyless``)."""

    issuer: str
    subject: str | None = None
    subject_regexp: str | None = None

    def __post_init__(self) -> None:
        if (self.subject is None) == (self.subject_regexp is None):
            raise ValueError("give exactly one of subject or subject_regexp")

    def subject_matches(self, subject: str) -> bool:
        """Exact subject, or the regexp matching the whole subject (never a prefix, SPEC §2)."""
        if self.subject is not None:
            return subject == self.subject
        assert self.subject_regexp is not None
        return re.fullmatch(self.subject_regexp, subject) is not None

    def describe(self) -> str:
        wanted = self.subject if self.subject is not None else f"/{self.subject_regexp}/"
        return f"subject {wanted} from issuer {self.issuer}"
