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

from webhook.admission import parse_review, review_response
from webhook.audit import AuditWriter, audit_record
from webhook.errors import AdmissionError, AuditWriteError
from webhook.facts import FactGatherer
from webhook.policy import PolicySet, load_policy_dir
from webhook.registry import RegistryClient, RegistryCredentials
from webhook.review import decide_request
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

    decision = await decide_request(
        review,
        policies=state.policies,
        facts=state.gatherer,
        deadline=state.settings.deadline,
        mode_override=state.settings.mode_override,
    )
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
