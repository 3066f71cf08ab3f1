"""Serving-certificate hot reload: a renewed certificate is served without a restart.

cert-manager renews the serving certificate in place (the kubelet swaps the
Secret's files); sealgate polls the files by content and loads the new pair
into the live SSLContext, so new connections get it. A pair that fails to load
(half-written, key and certificate not matching) keeps the old one and logs why.
"""

from __future__ import annotations

import hashlib
import logging
import ssl
import threading
from pathlib import Path

log = logging.getLogger("sealgate")


def _fingerprint(*paths: Path) -> str | None:
    digest = hashlib.sha256()
    try:
        for path in paths:
            digest.update(path.read_bytes())
    except OSError:
        return None
    return digest.hexdigest()


class CertificateReloader:
    """Polls ``cert``/``key`` every ``interval`` seconds in a daemon thread."""

    def __init__(self, context: ssl.SSLContext, cert: Path, key: Path, *,
                 interval: float = 1.0) -> None:
        self.context = context
        self.cert = cert
        self.key = key
        self.interval = interval
        self.reloads = 0
        self._seen = _fingerprint(cert, key)
        self._failed: str | None = None
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None

    def check(self) -> bool:
        """Load the pair if it changed; True when a new certificate is being served."""
        current = _fingerprint(self.cert, self.key)
        if current is None or current in (self._seen, self._failed):
            return False
        try:
            self.context.load_cert_chain(str(self.cert), str(self.key))
        except (OSError, ssl.SSLError) as exc:
            log.error("serving certificate changed but does not load, keeping the old one: %s",
                      exc)
            self._failed = current  # said once; tried again when the files change again
            return False
        self._seen = current
        self.reloads += 1
        log.info("loaded the renewed serving certificate %s", self.cert)
        return True

    def _run(self) -> None:
        while not self._stop.wait(self.interval):
            self.check()

    def start(self) -> None:
        if self.interval <= 0:
            return
        self._thread = threading.Thread(target=self._run, name="sealgate-tls-reload",
                                        daemon=True)
        self._thread.start()

    def stop(self) -> None:
        self._stop.set()
        if self._thread is not None:
            self._thread.join(timeout=5)
