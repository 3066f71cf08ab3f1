"""The Starlette application: ``/validate``, ``/healthz``, ``/readyz``.

``create_app(settings)`` is the only way to get an app; the HTTP client,
registry client, policy set and audit writer are created in the lifespan and
kept on ``app.state``.
"""

from __future__ import annotations

import contextlib
import datetime as dt
import logging
import time
from collections.abc import AsyncIterator
from dataclasses import dataclass

import httpx
from starlette.applications import Starlette
from starlette.requests import ClientDisconnect, Request
from starlette.responses import JSONResponse, Response
from starlette.routing import Route

from webhook.admission import AdmissionRequest, parse_review, review_response
from webhook.audit import AuditWriter, audit_record
from webhook.decision import BreakGlass, Decision, decide, plan_checks
from webhook.errors import AdmissionError, AuditWriteError
from webhook.facts import FactGatherer
from webhook.policy import PolicySet, load_policy_dir
from webhook.registry import RegistryClient, RegistryCredentials
from webhook.settings import Settings

log = logging.getLogger("sealgate")


class BodyTooLarge(Exception):
    pass


@dataclass(slots=True)
class AppState:
    """Everything a request needs, built once in the lifespan."""

    settings: Settings
    policies: PolicySet
    gatherer: FactGatherer
    audit: AuditWriter


def create_app(settings: Settings, *, policies: PolicySet | None = None) -> Starlette:
    """Build the webhook app. ``policies`` (already loaded) skips loading from settings."""

    @contextlib.asynccontextmanager
    async def lifespan(app: Starlette) -> AsyncIterator[None]:
        policy_set = policies or load_policy_dir(settings.policies, generation=1)
        credentials = (
            RegistryCredentials.from_file(settings.registry_auth)
            if settings.registry_auth is not None
            else None
        )
        audit = AuditWriter(settings.audit_log)
        audit.open()
        limits = httpx.Limits(max_connections=100, max_keepalive_connections=20)
        timeout = httpx.Timeout(settings.deadline, connect=min(3.0, settings.deadline))
        async with httpx.AsyncClient(limits=limits, timeout=timeout) as http:
            registry = RegistryClient(
                http, credentials=credentials, insecure=settings.insecure_registries
            )
            app.state.sealgate = AppState(settings, policy_set, FactGatherer(registry), audit)
            try:
                yield
            finally:
                audit.close()

    return Starlette(
        routes=[
            Route("/validate", validate, methods=["POST"]),
            Route("/healthz", healthz, methods=["GET"]),
            Route("/readyz", readyz, methods=["GET"]),
        ],
        lifespan=lifespan,
    )


def _state(request: Request) -> AppState:
    state: AppState = request.app.state.sealgate
    return state


async def healthz(request: Request) -> Response:
    return JSONResponse({"ok": True})


async def readyz(request: Request) -> Response:
    state: AppState | None = getattr(request.app.state, "sealgate", None)
    if state is None:
        return JSONResponse({"ready": False, "generation": 0}, status_code=503)
    return JSONResponse({"ready": True, "generation": state.policies.generation})


async def _read_body(request: Request, limit: int) -> bytes:
    declared = request.headers.get("content-length")
    if declared is not None and declared.isdigit() and int(declared) > limit:
        raise BodyTooLarge
    chunks: list[bytes] = []
    size = 0
    async for chunk in request.stream():
        size += len(chunk)
        if size > limit:
            raise BodyTooLarge
        chunks.append(chunk)
    return b"".join(chunks)


def _error(status: int, message: str) -> JSONResponse:
    return JSONResponse({"error": message, "code": status}, status_code=status)


async def validate(request: Request) -> Response:
    state = _state(request)
    started = time.perf_counter()
    try:
        body = await _read_body(request, state.settings.max_body_bytes)
    except BodyTooLarge:
        log.warning("rejected AdmissionReview: body over %d bytes", state.settings.max_body_bytes)
        return _error(413, f"request body over {state.settings.max_body_bytes} bytes")
    except ClientDisconnect:
        return _error(400, "client disconnected while sending the body")
    try:
        review = parse_review(body)
    except AdmissionError as exc:
        log.warning("rejected malformed AdmissionReview: %s", exc)
        return _error(400, f"malformed AdmissionReview: {exc}")

    decision = await decide_review(state, review)
    now = dt.datetime.now(dt.UTC)
    record = audit_record(
        review, decision, now=now, latency_ms=(time.perf_counter() - started) * 1000
    )
    try:
        state.audit.write(record)
    except AuditWriteError as exc:
        # A decision is never returned unrecorded: the API server's failurePolicy decides.
        log.error("audit write failed, answering 500: %s", exc)
        return _error(500, "audit log unavailable; no decision returned")
    answer = review_response(
        review.uid, allowed=decision.allowed, message=decision.message,
        warnings=decision.warnings,
    )
    return JSONResponse(answer)


async def decide_review(state: AppState, review: AdmissionRequest) -> Decision:
    """Gather facts and decide; an unexpected failure denies (never an allow from a failure)."""
    settings = state.settings
    policies = state.policies
    now = dt.datetime.now(dt.UTC)
    try:
        applicable = policies.applicable(review.namespace)
        plans = plan_checks(review.images, applicable) if applicable else ()
        facts = await state.gatherer.gather(plans, deadline=settings.deadline) if plans else {}
        glass = (
            BreakGlass(review.break_glass_reason, review.user)
            if review.break_glass_reason
            else None
        )
        return decide(
            namespace=review.namespace,
            images=review.images,
            policies=policies,
            facts=facts,
            now=now,
            mode_override=settings.mode_override,
            break_glass=glass,
        )
    except Exception as exc:
        log.exception("internal error deciding %s", review.uid)
        return _internal_error(exc)


def _internal_error(exc: BaseException) -> Decision:
    message = f"sealgate internal error: {exc.__class__.__name__}; request denied"
    return Decision("deny", "error", message, (), (), ())

