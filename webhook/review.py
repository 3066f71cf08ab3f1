"""One admission request, decided: plan the checks, gather facts, run the pure core.

``/validate``, ``/mutate`` and ``sealgate check`` all come through
``decide_request`` so they can never disagree.
"""

from __future__ import annotations

import datetime as dt
import logging
import time
from collections.abc import Hashable, Mapping
from dataclasses import dataclass
from typing import Any, Protocol

from cachetools import LRUCache

from webhook.admission import AdmissionRequest
from webhook.decision import (
    BreakGlass,
    CheckPlan,
    Decision,
    ImageFacts,
    decide,
    plan_checks,
    stable_until,
)
from webhook.limits import DEFAULT_MAX_IMAGES, max_images_message
from webhook.policy import Mode, PolicySet

log = logging.getLogger("sealgate")


class FactSource(Protocol):
    """Anything that turns check plans into facts (the registry-backed gatherer, or offline)."""

    async def gather(
        self, plans: tuple[CheckPlan, ...], *, deadline: float
    ) -> dict[str, ImageFacts]: ...


class CachedFactSource(FactSource, Protocol):
    """A FactSource that can say which facts it holds already, and for how long."""

    def gather_cached(self, plans: tuple[CheckPlan, ...], *, deadline: float) -> Any: ...

    def still_fresh(self, cached: Any) -> bool: ...

    def count_hits(self, hits: Mapping[str, int]) -> None: ...


@dataclass(frozen=True, slots=True)
class _Remembered:
    policies: PolicySet
    decision: Decision
    cached: Any  # the CachedFacts it was decided from
    until: float  # wall-clock seconds: stable_until, or infinity


class DecisionMemo:
    """Decisions made from facts that were all cached, reused while they must be the same.

    ``decide`` is a pure function of (policy set, namespace, images, mode override,
    break glass, facts, time). A remembered decision is reused only for the very same
    policy set object (a reload makes a new one: an edit is in force at once), while
    every fact it was made from is still within its cache TTL (the cache rules are
    unchanged: a fact is never used longer than the cache would serve it), and before
    the moment time could change it (``stable_until``: a scan report ageing past
    ``maxAge``, an ``ignore`` entry expiring). Bounded, least recently used first out.
    One per app, used on its event loop only (so no lock).
    """

    def __init__(self, maxsize: int = 4096) -> None:
        self._entries: LRUCache[Hashable, _Remembered] = LRUCache(maxsize=maxsize)

    def get(self, key: Hashable, policies: PolicySet, facts: CachedFactSource) -> Decision | None:
        entry = self._entries.get(key)
        if entry is None or entry.policies is not policies or time.time() >= entry.until \
                or not facts.still_fresh(entry.cached):
            return None
        facts.count_hits(entry.cached.hits)
        return entry.decision

    def put(self, key: Hashable, entry: _Remembered) -> None:
        self._entries[key] = entry


async def decide_request(
    request: AdmissionRequest,
    *,
    policies: PolicySet,
    facts: FactSource,
    deadline: float,
    mode_override: Mode | None = None,
    now: dt.datetime | None = None,
    memo: DecisionMemo | None = None,
    max_images: int = DEFAULT_MAX_IMAGES,
) -> Decision:
    """Decide one request; an unexpected failure denies (never an allow from a failure)."""
    if len(request.images) > max_images:
        # SPEC §9: denied, naming the limit, whatever onError says; no fetch is started,
        # so one request cannot queue thousands of registry requests ahead of others.
        return Decision("deny", "error", max_images_message(len(request.images), max_images),
                        (), (), ())
    try:
        applicable = policies.applicable(request.namespace)
        glass = (
            BreakGlass(request.break_glass_reason, request.user)
            if request.break_glass_reason
            else None
        )
        key: Hashable | None = None
        source: CachedFactSource | None = None
        if memo is not None and now is None and applicable and hasattr(facts, "gather_cached"):
            source = facts  # type: ignore[assignment]
            key = (request.namespace, request.images, mode_override, glass)
            remembered = memo.get(key, policies, source)  # type: ignore[arg-type]
            if remembered is not None:
                return remembered
        plans = plan_checks(request.images, applicable) if applicable else ()
        cached = source.gather_cached(plans, deadline=deadline) if source and plans else None
        if cached is not None:
            gathered = cached.facts
        else:
            gathered = await facts.gather(plans, deadline=deadline) if plans else {}
        when = now or dt.datetime.now(dt.UTC)
        decision = decide(
            namespace=request.namespace,
            images=request.images,
            policies=policies,
            facts=gathered,
            now=when,
            mode_override=mode_override,
            break_glass=glass,
        )
        if memo is not None and key is not None and cached is not None:
            until = stable_until(namespace=request.namespace, images=request.images,
                                 policies=policies, facts=gathered, now=when)
            memo.put(key, _Remembered(policies, decision, cached,
                                      until.timestamp() if until else float("inf")))
        return decision
    except Exception as exc:
        log.exception("internal error deciding %s", request.uid)
        message = f"sealgate internal error: {exc.__class__.__name__}; request denied"
        return Decision("deny", "error", message, (), (), ())
