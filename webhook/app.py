"""The Starlette application: ``/validate``, ``/mutate``, ``/healthz``, ``/readyz``, ``/metrics``.

``create_app(settings)`` is the only way to get an app; the HTTP client,
registry client, fact cache, metrics, policy set (and its reloader) and the
audit writer are created in the lifespan and kept on ``app.state``.
"""

from __future__ import annotations

import asyncio
import base64
import contextlib
import datetime as dt
import json
import logging
import time
from collections.abc import AsyncIterator
from dataclasses import dataclass, field
from typing import TYPE_CHECKING

import anyio
import httpx
import orjson
from starlette.applications import Starlette
from starlette.requests import ClientDisconnect, Request
from starlette.responses import JSONResponse, Response
from starlette.routing import Route
from starlette.types import Receive, Scope, Send

from webhook.admission import AdmissionRequest, parse_review, review_response
from webhook.audit import AuditWriter, DecisionJSON, audit_line
from webhook.auditchain import read_key
from webhook.decision import Decision
from webhook.errors import AdmissionError, AuditWriteError
from webhook.facts import FactGatherer, registry_facts
from webhook.metrics import CONTENT_TYPE_LATEST, Metrics
from webhook.mutation import digest_patch
from webhook.policy import PolicySet
from webhook.registry import RegistryCredentials, request_credentials
from webhook.reload import PolicyReloader, load_policies
from webhook.review import DecisionMemo, decide_request
from webhook.settings import Settings

if TYPE_CHECKING:
    from webhook.kube.pullsecrets import PullSecrets
    from webhook.kube.source import ClusterPolicies

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
    memo: DecisionMemo = field(default_factory=DecisionMemo)
    decisions_json: DecisionJSON = field(default_factory=DecisionJSON)
    cluster: ClusterPolicies | None = None  # ImagePolicy objects (--policy-source crd|both)
    pull_secrets: PullSecrets | None = None  # SEALGATE_POD_PULL_SECRETS

    @property
    def policies(self) -> PolicySet:
        return self.cluster.current if self.cluster is not None else self.reloader.current


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
        files = settings.policy_source != "crd"
        initial = policies or (
            load_policies(settings.policies, generation=1) if files else PolicySet((), 1)
        )
        reloader = PolicyReloader(settings.policies, initial, metrics=metrics,
                                  interval=settings.reload_interval if files else 0)
        key = read_key(settings.audit_key) if settings.audit_key is not None else None
        audit = AuditWriter(settings.audit_log, key=key, on_write=metrics.audit_written)
        audit.open()
        async with contextlib.AsyncExitStack() as stack:
            cluster = pull_secrets = None
            if settings.policy_source != "files" or settings.pod_pull_secrets:
                from webhook.kube.source import ClusterPolicies, kube_client

                client = kube_client(settings.kubeconfig)
                stack.push_async_callback(client.close)
                if settings.policy_source != "files":
                    cluster = ClusterPolicies(
                        client, (lambda: reloader.current) if files else None, metrics=metrics)
                if settings.pod_pull_secrets:
                    from webhook.kube.pullsecrets import PullSecrets

                    config = (RegistryCredentials.from_file(settings.registry_auth)
                              if settings.registry_auth is not None else None)
                    pull_secrets = PullSecrets(client, config)
            gatherer = await stack.enter_async_context(
                registry_facts(settings, metrics=metrics, transport=transport))
            app.state.sealgate = AppState(settings, reloader, gatherer, audit, metrics,
                                          cluster=cluster, pull_secrets=pull_secrets)
            heads = asyncio.create_task(_log_audit_head(audit), name="sealgate-audit-head")
            try:
                await stack.enter_async_context(reloader.running(on_hangup=audit.reopen))
                if cluster is not None:
                    await stack.enter_async_context(cluster.running())
                yield
            finally:
                heads.cancel()
                with contextlib.suppress(asyncio.CancelledError):
                    await heads
                audit.close()

    routes = [
        Route("/validate", validate, methods=["POST"]),
        Route("/validate-policy", validate_policy, methods=["POST"]),
        Route("/healthz", healthz, methods=["GET"]),
        Route("/readyz", readyz, methods=["GET"]),
        Route("/metrics", metrics_endpoint, methods=["GET"]),
    ]
    if settings.mutate:
        routes.append(Route("/mutate", mutate, methods=["POST"]))
    return SealgateApp(routes=routes, lifespan=lifespan)


class SealgateApp(Starlette):
    """Starlette, with ``POST /validate`` answered as a plain ASGI endpoint.

    The warm path is the product (CONVENTIONS): an all-cached review should cost
    little more than parsing it, so the admission endpoint skips the middleware and
    routing layers (``make bench`` measured them at about a tenth of a warm request).
    Everything else, ``/mutate`` included, goes through Starlette as usual.
    """

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] == "http" and scope["path"] == "/validate" \
                and scope["method"] == "POST":
            state: AppState | None = getattr(self.state, "sealgate", None)
            if state is not None:
                await _validate_asgi(state, scope, receive, send)
                return
        await super().__call__(scope, receive, send)


async def _log_audit_head(audit: AuditWriter) -> None:
    """The chain's head on the operational log every minute (SPEC §9): a log cut short
    after the fact shows against it."""
    while True:
        await asyncio.sleep(60)
        chain, seq, prev = audit.head
        log.info("audit chain %s at seq %d (link %s)", chain, seq, prev)


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
    if state.cluster is not None and not state.cluster.synced.is_set():
        # ImagePolicy objects never listed yet: serving now would enforce none of them
        return JSONResponse({"ready": False, "generation": 0}, status_code=503)
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


def _rejected(state: AppState, status: int, message: str) -> tuple[int, bytes]:
    """A 400/413 answer: logged and counted, not audited (it decides nothing)."""
    log.warning("rejected AdmissionReview: %s", message)
    state.metrics.malformed(status)
    return status, orjson.dumps({"error": message, "code": status})


async def _review(request: Request, state: AppState) -> AdmissionRequest | JSONResponse:
    """The parsed AdmissionReview, or the 400/413 answer (logged and counted, not audited)."""
    limit = state.settings.max_body_bytes
    try:
        # a client trickling its body holds a connection, never more than a deadline
        with anyio.fail_after(state.settings.deadline):
            body = await _read_body(request, limit)
    except BodyTooLarge:
        return _as_response(*_rejected(state, 413, f"request body over {limit} bytes"))
    except TimeoutError:
        return _as_response(*_rejected(state, 408, _slow_body(state)))
    except ClientDisconnect:
        return _as_response(*_rejected(state, 400, "client disconnected while sending the body"))
    return await _parsed(state, body)


def _slow_body(state: AppState) -> str:
    return f"request body not received within {state.settings.deadline:g}s"


async def _parse(body: bytes) -> AdmissionRequest:
    if len(body) > _PARSE_INLINE_BYTES:
        # a large review (tens of thousands of containers) parses in a worker thread,
        # so /healthz and small reviews don't wait behind it (issue 11)
        return await anyio.to_thread.run_sync(parse_review, body)
    return parse_review(body)


async def _parsed(state: AppState, body: bytes) -> AdmissionRequest | JSONResponse:
    try:
        return await _parse(body)
    except AdmissionError as exc:
        return _as_response(*_rejected(state, 400, f"malformed AdmissionReview: {exc}"))


def _as_response(status: int, body: bytes) -> JSONResponse:
    return JSONResponse(orjson.loads(body), status_code=status)


async def _decide(state: AppState, review: AdmissionRequest) -> Decision:
    if state.pull_secrets is None:
        return await decide_request(
            review,
            policies=state.policies,
            facts=state.gatherer,
            deadline=state.settings.deadline,
            mode_override=state.settings.mode_override,
            memo=state.memo,
            max_images=state.settings.max_images,
        )
    # pod pull secrets: credentials differ per pod, so no decision is reused across pods
    chain = await state.pull_secrets.chain(review)
    with request_credentials(chain):
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


async def _admit(state: AppState, review: AdmissionRequest, started: float) -> tuple[int, bytes]:
    """Decide, audit (before answering), count; the status and body of the answer."""
    decision = await _decide(state, review)
    latency = time.perf_counter() - started
    line = audit_line(review, decision, now=dt.datetime.now(dt.UTC),
                      latency_ms=latency * 1000, decisions=state.decisions_json)
    try:
        await state.audit.append(line)
    except AuditWriteError as exc:
        # A decision is never returned unrecorded: the API server's failurePolicy decides.
        log.error("audit write failed, answering 500: %s", exc)
        state.metrics.audit_write_failures.inc()
        return 500, orjson.dumps({"error": "audit log unavailable; no decision returned",
                                  "code": 500})
    state.metrics.admitted(decision.decision, _strictest_mode(decision),
                           time.perf_counter() - started)
    answer = review_response(
        review.uid, allowed=decision.allowed, message=decision.message,
        warnings=decision.warnings,
    )
    return 200, orjson.dumps(answer)


async def validate(request: Request) -> Response:
    """``/validate`` through Starlette (the app normally answers it in ``_validate_asgi``)."""
    state = _state(request)
    started = time.perf_counter()
    review = await _review(request, state)
    if isinstance(review, Response):
        return review
    status, body = await _admit(state, review, started)
    return Response(body, status_code=status, media_type="application/json")


_JSON_HEADERS = [(b"content-type", b"application/json")]


async def _validate_asgi(state: AppState, scope: Scope, receive: Receive, send: Send) -> None:
    started = time.perf_counter()
    status, body = 500, b""
    try:
        status, body = await _validate_body(state, scope, receive, started)
    except Exception:
        log.exception("internal error answering /validate")
        status, body = 500, orjson.dumps({"error": "internal error", "code": 500})
    await send({"type": "http.response.start", "status": status,
                "headers": [*_JSON_HEADERS, (b"content-length", str(len(body)).encode())]})
    await send({"type": "http.response.body", "body": body})


async def _validate_body(state: AppState, scope: Scope, receive: Receive,
                         started: float) -> tuple[int, bytes]:
    limit = state.settings.max_body_bytes
    for name, value in scope["headers"]:
        if name == b"content-length":
            if value.isdigit() and int(value) > limit:
                return _rejected(state, 413, f"request body over {limit} bytes")
            break
    chunks: list[bytes] = []
    size = 0
    # (a client trickling its body is cut off with 408 by the server's protocol,
    # webhook.serving, which keeps a per-request timer off this path)
    while True:
        message = await receive()
        if message["type"] == "http.disconnect":
            return _rejected(state, 400, "client disconnected while sending the body")
        chunk = message.get("body", b"")
        size += len(chunk)
        if size > limit:
            return _rejected(state, 413, f"request body over {limit} bytes")
        chunks.append(chunk)
        if not message.get("more_body", False):
            break
    try:
        review = await _parse(chunks[0] if len(chunks) == 1 else b"".join(chunks))
    except AdmissionError as exc:
        return _rejected(state, 400, f"malformed AdmissionReview: {exc}")
    return await _admit(state, review, started)


async def validate_policy(request: Request) -> Response:
    """ImagePolicy CREATE/UPDATE admission: every ``field: problem`` (SPEC §9)."""
    from webhook.kube.validation import review_policy

    state = _state(request)
    try:
        body = await _read_body(request, state.settings.max_body_bytes)
        answer = await anyio.to_thread.run_sync(review_policy, body)
    except BodyTooLarge:
        return _error(413, f"request body over {state.settings.max_body_bytes} bytes")
    except AdmissionError as exc:
        return _error(400, f"malformed AdmissionReview: {exc}")
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

