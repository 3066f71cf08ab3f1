"""The authority-verifier registry: the fact gatherer asks the verifier of an authority's kind."""

from __future__ import annotations

import httpx
import pytest

from tests.test_facts import policies
from webhook.cache import FactCache
from webhook.decision import Outcome, SignatureCheck, plan_checks
from webhook.facts import FactGatherer
from webhook.references import ImageReference
from webhook.registry import RegistryClient
from webhook.verifiers import by_kind, default_verifiers

DIGEST = "sha256:" + "ab" * 32


class Recording:
    kinds = ("key",)

    def __init__(self) -> None:
        self.calls: list[tuple[str, str]] = []

    async def verify(self, check: SignatureCheck, ref: ImageReference, digest: str) -> Outcome:
        self.calls.append((check.authority.name, digest))
        return Outcome("fail", "recorded")


async def test_gatherer_asks_the_verifier_of_the_authority_kind_and_caches_its_answer() -> None:
    recording = Recording()
    async with httpx.AsyncClient() as http:
        gatherer = FactGatherer(RegistryClient(http), verifiers=by_kind([recording]))
        image = f"plug.example.com/app@{DIGEST}"
        plans = plan_checks([image], policies("plug.example.com").policies)
        first = await gatherer.gather(plans, deadline=2)
        second = await gatherer.gather(plans, deadline=2)
    (outcome,) = first[image].signatures.values()
    assert outcome == Outcome("fail", "recorded")
    assert recording.calls == [("k", DIGEST)]  # the second review came from the cache
    assert second[image].cached


async def test_every_authority_kind_has_exactly_one_default_verifier() -> None:
    async with httpx.AsyncClient() as http:
        verifiers = default_verifiers(RegistryClient(http), FactCache())
    assert set(verifiers) == {"key", "keyless", "notation"}
    with pytest.raises(ValueError, match="two verifiers for authority kind 'key'"):
        by_kind([Recording(), Recording()])
