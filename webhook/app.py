"""The Starlette application: ``/validate``, ``/mutate``, ``/healthz``, ``/readyz``, ``/metrics``.

``create_app(settings)`` is the only way to get an app; the HTTP client,
registry client, fact cache, metrics, policy set (and its reloader) and the
audit writer are created in the lifespan and kept on ``app.state``.
"""

from __future__ import annotations

import base64
import contextlib
import datetime as dt
import json
import logging
import time
from collections.abc import AsyncIterator
from dataclasses import dataclass

import anyio
import httpx
from starlette.applications import Starlette
from starlette.requests import ClientDisconnect, Request
from starlette.responses import JSONResponse, Response
from starlette.routing import Route

from webhook.admission import AdmissionRequest, parse_review, review_response
from webhook.audit import AuditWriter, audit_record
from webhook.decision import Decision
from webhook.errors import AdmissionError, AuditWriteError
from webhook.facts import FactGatherer, registry_facts
from webhook.metrics import CONTENT_TYPE_LATEST, Metrics
from webhook.mutation import digest_patch
from webhook.policy import PolicySet
from webhook.reload import PolicyReloader, load_policies
from webhook.review import decide_request
from webhook.settings import Settings

log = logging.getLogger("sealgate")


_PARSE_INLINE_BYTES = 64 * 1024


class BodyTooLarge(Exception):
    pass


@dataclass(slots=True)
class AppState:
    """Everything a request needs, built once in the lifespan."""

    settings: Settings
    reloader: PolicyReloader
    gatherer: FactGatherer
    audit: AuditWriter
    metrics: Metrics

    @property
    def policies(self) -> PolicySet:
        return self.reloader.current


def create_app(
    settings: Settings,
    *,
    policies: PolicySet | None = None,
    transport: httpx.AsyncBaseTransport | None = None,
) -> Starlette:
    """Build the webhook app. ``policies`` (already loaded) skips the first load;
    ``transport`` replaces the network under the registry client (tests count or fault it)."""

    @contextlib.asynccontextmanager
    async def lifespan(app: Starlette) -> AsyncIterator[None]:
        metrics = Metrics()
        initial = policies or load_policies(settings.policies, generation=1)
        reloader = PolicyReloader(settings.policies, initial, metrics=metrics,
                                  interval=settings.reload_interval)
        audit = AuditWriter(settings.audit_log)
        audit.open()
        async with registry_facts(settings, metrics=metrics, transport=transport) as gatherer:
            app.state.sealgate = AppState(settings, reloader, gatherer, audit, metrics)
            try:
                async with reloader.running():
                    yield
            finally:
                audit.close()

    routes = [
        Route("/validate", validate, methods=["POST"]),
        Route("/healthz", healthz, methods=["GET"]),
        Route("/readyz", readyz, methods=["GET"]),
        Route("/metrics", metrics_endpoint, methods=["GET"]),
    ]
    if settings.mutate:
        routes.append(Route("/mutate", mutate, methods=["POST"]))
    return Starlette(routes=routes, lifespan=lifespan)


def _state(request: Request) -> AppState:
    state: AppState = request.app.state.sealgate
    return state


async def healthz(request: Request) -> Response:
    return JSONResponse({"ok": True})


async def readyz(request: Request) -> Response:
    state: AppState | None = getattr(request.app.state, "sealgate", None)
    if state is None:
        return JSONResponse({"ready": False, "generation": 0}, status_code=503)
    if getattr(request.app.state, "draining", False):  # SIGTERM: endpoints drain (SPEC §9)
        return JSONResponse({"ready": False, "generation": state.policies.generation},
                            status_code=503)
    return JSONResponse({"ready": True, "generation": state.policies.generation})


async def metrics_endpoint(request: Request) -> Response:
    return Response(_state(request).metrics.render(), media_type=CONTENT_TYPE_LATEST)


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


async def _review(request: Request, state: AppState) -> AdmissionRequest | JSONResponse:
    """The parsed AdmissionReview, or the 400/413 answer (logged and counted, not audited)."""
    limit = state.settings.max_body_bytes
    try:
        # a client trickling its body holds a connection, never more than a deadline
        with anyio.fail_after(state.settings.deadline):
            body = await _read_body(request, limit)
        if len(body) > _PARSE_INLINE_BYTES:
            # a large review (tens of thousands of containers) parses in a worker thread,
            # so /healthz and small reviews don't wait behind it
            return await anyio.to_thread.run_sync(parse_review, body)
        return parse_review(body)
    except BodyTooLarge:
        log.warning("rejected AdmissionReview: body over %d bytes", limit)
        state.metrics.malformed_requests.labels(status="413").inc()
        return _error(413, f"request body over {limit} bytes")
    except TimeoutError:
        state.metrics.malformed_requests.labels(status="408").inc()
        return _error(408, f"request body not received within {state.settings.deadline:g}s")
    except ClientDisconnect:
        state.metrics.malformed_requests.labels(status="400").inc()
        return _error(400, "client disconnected while sending the body")
    except AdmissionError as exc:
        log.warning("rejected malformed AdmissionReview: %s", exc)
        state.metrics.malformed_requests.labels(status="400").inc()
        return _error(400, f"malformed AdmissionReview: {exc}")


async def _decide(state: AppState, review: AdmissionRequest) -> Decision:
    return await decide_request(
        review,
        policies=state.policies,
        facts=state.gatherer,
        deadline=state.settings.deadline,
        mode_override=state.settings.mode_override,
        max_images=state.settings.max_images,
    )


def _strictest_mode(decision: Decision) -> str:
    modes = {entry.mode for entry in decision.entries}
    for mode in ("enforce", "warn", "audit"):
        if mode in modes:
            return mode
    return "none"


async def validate(request: Request) -> Response:
    state = _state(request)
    started = time.perf_counter()
    review = await _review(request, state)
    if isinstance(review, Response):
        return review
    decision = await _decide(state, review)
    latency = time.perf_counter() - started
    record = audit_record(review, decision, now=dt.datetime.now(dt.UTC),
                          latency_ms=latency * 1000)
    try:
        # In a worker thread: stdout is often a pipe to a log collector, and a full pipe
        # must hold up this answer only, not every request on the event loop.
        await anyio.to_thread.run_sync(state.audit.write, record)
    except AuditWriteError as exc:
        # A decision is never returned unrecorded: the API server's failurePolicy decides.
        log.error("audit write failed, answering 500: %s", exc)
        return _error(500, "audit log unavailable; no decision returned")
    state.metrics.admission_requests.labels(
        decision=decision.decision, mode=_strictest_mode(decision)
    ).inc()
    state.metrics.admission_duration.observe(time.perf_counter() - started)
    answer = review_response(
        review.uid, allowed=decision.allowed, message=decision.message,
        warnings=decision.warnings,
    )
    return JSONResponse(answer)


async def mutate(request: Request) -> Response:
    """Pin verified tag references to their digest (SPEC §3 ``/mutate``); never denies.

    Denying is the validating webhook's job (and it writes the audit line); this
    one only rewrites images whose signatures it verified, using the same facts
    (cached and shared), so the kubelet pulls exactly what was verified.
    """
    state = _state(request)
    review = await _review(request, state)
    if isinstance(review, Response):
        return review
    decision = await _decide(state, review)
    response: dict[str, object] = {"uid": review.uid, "allowed": True}
    patch = digest_patch(review, decision)
    if patch:
        response["patchType"] = "JSONPatch"
        response["patch"] = base64.b64encode(json.dumps(patch).encode()).decode()
    return JSONResponse(
        {"apiVersion": "admission.k8s.io/v1", "kind": "AdmissionReview", "response": response}
    )

