"""Authority verifiers: one per signature format, chosen by the authority's ``kind``.

The fact gatherer knows nothing of signature formats: it asks the verifier
registered for an authority's kind (``key``, ``keyless``, ``notation``) whether
the image digest carries a signature that satisfies it, and caches the answer as
a fact. A new format is one new module with a class that has ``kinds`` and
``verify``, plus one line in :func:`default_verifiers`.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Protocol

from webhook.cache import FactCache
from webhook.decision import Outcome, SignatureCheck
from webhook.references import ImageReference
from webhook.registry import RegistryClient
from webhook.signatures.cosign_verifier import CosignVerifier
from webhook.signatures.notation_verifier import NotationVerifier


class AuthorityVerifier(Protocol):
    """Checks one authority on one image digest.

    ``verify`` answers ``ok`` (a signature satisfies the authority), ``fail`` (none does,
    definitively; the reason says why) or ``error`` (the check could not complete: the
    policy's ``onError`` decides). It never raises for registry or signature problems.
    """

    @property
    def kinds(self) -> tuple[str, ...]: ...

    async def verify(
        self, check: SignatureCheck, ref: ImageReference, digest: str
    ) -> Outcome: ...


def default_verifiers(registry: RegistryClient, cache: FactCache) -> dict[str, AuthorityVerifier]:
    """Every signature format sealgate verifies, by authority kind."""
    verifiers: list[AuthorityVerifier] = [
        CosignVerifier(registry, cache),
        NotationVerifier(registry, cache),
    ]
    return by_kind(verifiers)


def by_kind(verifiers: list[AuthorityVerifier]) -> dict[str, AuthorityVerifier]:
    out: dict[str, AuthorityVerifier] = {}
    for verifier in verifiers:
        for kind in verifier.kinds:
            if kind in out:
                raise ValueError(f"two verifiers for authority kind {kind!r}")
            out[kind] = verifier
    return out


def verifier_for(verifiers: Mapping[str, AuthorityVerifier], kind: str) -> AuthorityVerifier:
    try:
        return verifiers[kind]
    except KeyError:
        raise LookupError(f"no verifier for {kind} authorities") from None
