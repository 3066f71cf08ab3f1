"""``sealgate serve``: uvicorn over TLS, one process or N workers on one port (SPEC §9).

With ``--workers N`` (``SEALGATE_WORKERS``) uvicorn's supervisor binds the port once
and starts N worker processes that accept on it. Each worker builds its own app from
the environment (``worker_app``), hot-reloads policies and the serving certificate,
and appends audit lines with one ``O_APPEND`` write each under its own chain id.
Counters go to prometheus-client's multiprocess files, so ``/metrics`` from any
worker is the sum. SIGTERM drains every worker; SIGHUP is passed on to every worker
(policy reload, audit log reopen) instead of uvicorn's restart of the workers.
"""

from __future__ import annotations

import logging
import os
import shutil
import signal
import sys
import tempfile
from typing import Any

import uvicorn
from starlette.applications import Starlette
from uvicorn.supervisors import Multiprocess

from webhook.metrics import MULTIPROCESS_ENV
from webhook.settings import Settings
from webhook.tls import CertificateReloader

log = logging.getLogger("sealgate")
LOG_LEVEL_ENV = "SEALGATE_LOG_LEVEL"


def configure_logging(level: str) -> None:
    logging.basicConfig(level=level.upper(), stream=sys.stderr,
                        format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    logging.getLogger("httpx").setLevel(logging.WARNING)  # one line per registry request


class SealgateConfig(uvicorn.Config):
    """uvicorn's Config, which also keeps the serving certificate current.

    ``load`` runs in the process that serves (each worker, with ``--workers``), after
    the SSLContext exists: the reloader swaps renewed certificates into it there.
    """

    def __init__(self, app: Any, *, reload_interval: float, **kwargs: Any) -> None:
        super().__init__(app, **kwargs)
        self.reload_interval = reload_interval
        self.certificates: CertificateReloader | None = None

    def load(self) -> None:
        first = not self.loaded
        super().load()
        if first and self.ssl is not None and self.ssl_certfile and self.ssl_keyfile:
            from pathlib import Path

            self.certificates = CertificateReloader(
                self.ssl, Path(str(self.ssl_certfile)), Path(str(self.ssl_keyfile)),
                interval=self.reload_interval)
            self.certificates.start()

    def __getstate__(self) -> dict[str, Any]:
        state = dict(self.__dict__)
        state["certificates"] = None  # a thread stays in the process that started it
        return state


class Supervisor(Multiprocess):
    """uvicorn's worker supervisor, passing SIGHUP on to the workers.

    uvicorn restarts every worker on SIGHUP; sealgate's SIGHUP means "reload the
    policies and reopen the audit log" (log rotation), which each worker does itself.
    """

    def handle_hup(self) -> None:
        log.info("SIGHUP: passing it to %d workers", len(self.processes))
        for process in self.processes:
            if process.pid is not None:
                try:
                    os.kill(process.pid, signal.SIGHUP)
                except ProcessLookupError:
                    continue


def worker_app() -> Starlette:
    """The app of one worker process, from the environment ``serve`` prepared."""
    from webhook.app import create_app

    configure_logging(os.environ.get(LOG_LEVEL_ENV, "info"))
    return create_app(Settings.from_env())


def serve(settings: Settings, *, log_level: str) -> int:
    """Run the webhook until SIGTERM/SIGINT; the certificate pair must exist."""
    from webhook.app import create_app
    from webhook.reload import load_policies

    assert settings.cert is not None and settings.key is not None
    # Load once before binding (policies and the trust roots they name, as every reload
    # does): a missing or broken policy directory is a start-up error.
    from webhook.policy import PolicySet

    policies = (load_policies(settings.policies, generation=1)
                if settings.policy_source != "crd" else PolicySet((), 1))
    configure_logging(log_level)
    if settings.policy_source != "crd":
        log.info("loaded %d policies from %s", len(policies.policies), settings.policies)
    common: dict[str, Any] = {
        "host": settings.host, "port": settings.port, "ssl_certfile": str(settings.cert),
        "ssl_keyfile": str(settings.key), "log_level": log_level, "access_log": False,
        "lifespan": "on", "reload_interval": settings.reload_interval,
    }
    if settings.workers == 1:
        config = SealgateConfig(create_app(settings, policies=policies), **common)
        try:
            uvicorn.Server(config).run()
        finally:
            if config.certificates is not None:
                config.certificates.stop()
        return 0
    return _serve_workers(settings, log_level, common)


def _serve_workers(settings: Settings, log_level: str, common: dict[str, Any]) -> int:
    # the workers read their settings from the environment: flags become variables
    for variable, value in (
        ("SEALGATE_HOST", settings.host), ("SEALGATE_PORT", settings.port),
        ("SEALGATE_POLICIES", settings.policies), ("SEALGATE_CERT", settings.cert),
        ("SEALGATE_KEY", settings.key), ("SEALGATE_AUDIT_LOG", settings.audit_log),
        (LOG_LEVEL_ENV, log_level), ("SEALGATE_POLICY_SOURCE", settings.policy_source),
        ("KUBECONFIG", settings.kubeconfig),
        ("SEALGATE_POD_PULL_SECRETS", "true" if settings.pod_pull_secrets else None),
    ):
        if value is not None:
            os.environ[variable] = str(value)
    owned_dir = None
    if not os.environ.get(MULTIPROCESS_ENV):
        owned_dir = tempfile.mkdtemp(prefix="sealgate-metrics-")
        os.environ[MULTIPROCESS_ENV] = owned_dir
    config = SealgateConfig("webhook.serving:worker_app", factory=True,
                            workers=settings.workers, **common)
    try:
        sock = config.bind_socket()
        log.info("serving on %s:%d with %d workers", settings.host, settings.port,
                 settings.workers)
        Supervisor(config, sockets=[sock]).run()
    finally:
        if owned_dir is not None:
            shutil.rmtree(owned_dir, ignore_errors=True)
    return 0
