"""Reusing warm-path decisions (review.DecisionMemo) never changes a decision.

A remembered decision stands for `decide` on the same policy set object, the same
request inputs and the same cached facts; these tests hold it to that: time
(`stable_until`), fact TTLs, policy reloads and cache clears all end it.
"""

from __future__ import annotations

import dataclasses
import datetime as dt
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from tests.test_decision import IMAGE, NOW, SCAN_RULES, load, policy_yaml, scan_fact, sig_facts
from webhook.admission import AdmissionRequest
from webhook.decision import CheckPlan, ImageFacts, Outcome, decide, stable_until
from webhook.facts import CachedFacts
from webhook.policy import PolicySet
from webhook.review import DecisionMemo, decide_request


def decision_at(policies: PolicySet, facts: dict[str, ImageFacts], when: dt.datetime) -> Any:
    return decide(namespace="prod-api", images=(IMAGE,), policies=policies, facts=facts,
                  now=when)


def test_a_scan_ageing_past_max_age_bounds_the_decision() -> None:
    policies = load(policy_yaml(rules=SCAN_RULES))
    scan = scan_fact(policies, {"LOW": ("CVE-2026-1",)}, age=dt.timedelta(hours=23))
    facts = sig_facts(policies, {"release-key": Outcome("ok")}, scans=(scan,))
    until = stable_until(namespace="prod-api", images=(IMAGE,), policies=policies,
                         facts=facts, now=NOW)
    assert until == NOW + dt.timedelta(hours=1)
    before = decision_at(policies, facts, until - dt.timedelta(seconds=1))
    after = decision_at(policies, facts, until + dt.timedelta(seconds=1))
    assert before.decision == "allow"
    assert after.decision == "warn" and "no scan result" in after.warnings[0]


def test_an_ignore_entry_expiring_bounds_the_decision() -> None:
    policies = load(policy_yaml(rules=SCAN_RULES))  # ignores CVE-2024-0002 through 2026-06-01
    scan = scan_fact(policies, {"HIGH": ("CVE-2024-0002", "CVE-2026-7")},
                     age=dt.timedelta(minutes=5))
    facts = sig_facts(policies, {"release-key": Outcome("ok")}, scans=(scan,))
    until = stable_until(namespace="prod-api", images=(IMAGE,), policies=policies,
                         facts=facts, now=NOW)
    assert until == dt.datetime(2026, 6, 2, tzinfo=dt.UTC)
    assert decision_at(policies, facts, until - dt.timedelta(seconds=1)).decision == "allow"
    assert decision_at(policies, facts, until).decision == "deny"  # 2 HIGH > 1 allowed


def test_signatures_alone_never_age() -> None:
    policies = load(policy_yaml())
    facts = sig_facts(policies, {"release-key": Outcome("ok")})
    assert stable_until(namespace="prod-api", images=(IMAGE,), policies=policies,
                        facts=facts, now=NOW) is None


@settings(max_examples=150, deadline=None)
@given(
    ages=st.lists(st.integers(min_value=-3600, max_value=48 * 3600), max_size=3),
    ids=st.lists(st.sampled_from(["CVE-2024-0002", "CVE-2026-7", "CVE-2026-8"]), max_size=3),
    severity=st.sampled_from(["CRITICAL", "HIGH", "MEDIUM", "LOW"]),
    later=st.floats(min_value=0, max_value=1),
)
def test_nothing_changes_before_stable_until(ages: list[int], ids: list[str], severity: str,
                                             later: float) -> None:
    policies = load(policy_yaml(rules=SCAN_RULES))
    scans = tuple(scan_fact(policies, {severity: tuple(ids)}, age=dt.timedelta(seconds=a))
                  for a in ages)
    facts = sig_facts(policies, {"release-key": Outcome("ok")}, scans=scans)
    until = stable_until(namespace="prod-api", images=(IMAGE,), policies=policies,
                         facts=facts, now=NOW)
    horizon = (until - NOW) if until is not None else dt.timedelta(days=30)
    when = NOW + horizon * later
    if until is not None and when >= until:
        when = until - dt.timedelta(microseconds=1)
    assert decision_at(policies, facts, when) == decision_at(policies, facts, NOW)


class CachedSource:
    """A FactSource whose facts are all cached until ``expires`` on its own clock."""

    def __init__(self, facts: dict[str, ImageFacts]) -> None:
        self.facts = facts
        self.clock = 0.0
        self.expires = 100.0
        self.epoch = 0
        self.gathered = 0
        self.hits: list[dict[str, int]] = []

    async def gather(self, plans: tuple[CheckPlan, ...], *, deadline: float
                     ) -> dict[str, ImageFacts]:
        raise AssertionError("every fact is cached")

    def gather_cached(self, plans: tuple[CheckPlan, ...], *, deadline: float) -> CachedFacts:
        self.gathered += 1
        return CachedFacts(self.facts, self.expires, {"signature": 1}, self.epoch)

    def still_fresh(self, cached: CachedFacts) -> bool:
        return cached.epoch == self.epoch and self.clock < cached.expires

    def count_hits(self, hits: dict[str, int]) -> None:
        self.hits.append(dict(hits))


def request(namespace: str = "prod-api", glass: str | None = None) -> AdmissionRequest:
    return AdmissionRequest(uid="u", kind="Pod", namespace=namespace, name="p",
                            operation="CREATE", sub_resource=None, user="alice", dry_run=False,
                            images=(IMAGE,), break_glass_reason=glass)


async def test_a_remembered_decision_lasts_only_as_long_as_its_facts_and_policies(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    policies = load(policy_yaml(rules=SCAN_RULES))
    fresh = scan_fact(policies, {}, age=dt.timedelta(hours=1))
    scan = dataclasses.replace(fresh, scanned_at=dt.datetime.now(dt.UTC) - dt.timedelta(hours=1))
    source = CachedSource(sig_facts(policies, {"release-key": Outcome("ok")}, scans=(scan,)))
    memo = DecisionMemo()

    async def ask(policy_set: PolicySet = policies, **kw: Any) -> Any:
        return await decide_request(request(**kw), policies=policy_set, facts=source,
                                    deadline=1, memo=memo)

    first = await ask()
    assert first.decision == "allow" and source.gathered == 1
    assert await ask() is first and source.gathered == 1  # reused
    assert source.hits == [{"signature": 1}]  # and its cache hits still counted
    assert await ask(namespace="prod-web") is not first  # other inputs: decided anew
    assert await ask(glass="incident 42") is not first
    gathered = source.gathered

    reloaded = load(policy_yaml(rules=SCAN_RULES))  # a reload: a new PolicySet object
    assert await ask(reloaded) is not first and source.gathered == gathered + 1

    source.clock = 100.0  # a fact's TTL is over
    assert await ask() is not first

    again = await ask()
    source.epoch += 1  # the cache was cleared
    assert await ask() is not again

    current = await ask()
    real_time = __import__("time").time
    monkeypatch.setattr("webhook.review.time.time", lambda: real_time() + 24 * 3600)
    assert await ask() is not current  # past maxAge of the scan: decided anew


async def test_fixed_time_decisions_are_never_remembered() -> None:
    """`check --at`-style calls with an explicit `now` decide from scratch."""
    policies = load(policy_yaml())
    source = CachedSource(sig_facts(policies, {"release-key": Outcome("ok")}))
    memo = DecisionMemo()
    for _ in range(2):
        await decide_request(request(), policies=policies, facts=source, deadline=1,
                             memo=memo, now=NOW)
    assert source.gathered == 0
