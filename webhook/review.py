"""One admission request, decided: plan the checks, gather facts, run the pure core.

``/validate``, ``/mutate`` and ``sealgate check`` all come through
``decide_request`` so they can never disagree.
"""

from __future__ import annotations

import datetime as dt
import logging
from typing import Protocol

from webhook.admission import AdmissionRequest
from webhook.decision import BreakGlass, CheckPlan, Decision, ImageFacts, decide, plan_checks
from webhook.limits import DEFAULT_MAX_IMAGES, max_images_message
from webhook.policy import Mode, PolicySet

log = logging.getLogger("sealgate")


class FactSource(Protocol):
    """Anything that turns check plans into facts (the registry-backed gatherer, or offline)."""

    async def gather(
        self, plans: tuple[CheckPlan, ...], *, deadline: float
    ) -> dict[str, ImageFacts]: ...


async def decide_request(
    request: AdmissionRequest,
    *,
    policies: PolicySet,
    facts: FactSource,
    deadline: float,
    mode_override: Mode | None = None,
    now: dt.datetime | None = None,
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
        plans = plan_checks(request.images, applicable) if applicable else ()
        gathered = await facts.gather(plans, deadline=deadline) if plans else {}
        glass = (
            BreakGlass(request.break_glass_reason, request.user)
            if request.break_glass_reason
            else None
        )
        return decide(
            namespace=request.namespace,
            images=request.images,
            policies=policies,
            facts=gathered,
            now=now or dt.datetime.now(dt.UTC),
            mode_override=mode_override,
            break_glass=glass,
        )
    except Exception as exc:
        log.exception("internal error deciding %s", request.uid)
        message = f"sealgate internal error: {exc.__class__.__name__}; request denied"
        return Decision("deny", "error", message, (), (), ())
