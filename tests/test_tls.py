"""The serving certificate is reloaded in place when its files change (cert-manager renewals)."""

from __future__ import annotations

import shutil
import socket
import ssl
import threading
from collections.abc import Iterator
from pathlib import Path

import pytest
from cryptography import x509

from webhook.certs import generate_certificates
from webhook.tls import CertificateReloader


@pytest.fixture
def server(tmp_path: Path) -> Iterator[tuple[ssl.SSLContext, int, Path]]:
    certs = tmp_path / "certs"
    generate_certificates(certs, service="s", namespace="n")
    context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    context.load_cert_chain(certs / "tls.crt", certs / "tls.key")
    listener = socket.create_server(("127.0.0.1", 0))
    port = listener.getsockname()[1]
    stop = threading.Event()

    def serve() -> None:
        listener.settimeout(0.1)
        while not stop.is_set():
            try:
                conn, _ = listener.accept()
            except TimeoutError:
                continue
            try:
                with context.wrap_socket(conn, server_side=True):
                    pass
            except (ssl.SSLError, OSError):
                pass

    thread = threading.Thread(target=serve, daemon=True)
    thread.start()
    yield context, port, certs
    stop.set()
    thread.join()
    listener.close()


def served_serial(port: int, ca: Path) -> int:
    client = ssl.create_default_context(cafile=ca)
    with socket.create_connection(("127.0.0.1", port)) as raw, client.wrap_socket(
        raw, server_hostname="localhost"
    ) as tls:
        der = tls.getpeercert(binary_form=True)
    assert der is not None
    return x509.load_der_x509_certificate(der).serial_number


def test_renewed_certificate_is_served_without_restart(
    server: tuple[ssl.SSLContext, int, Path], tmp_path: Path
) -> None:
    context, port, certs = server
    reloader = CertificateReloader(context, certs / "tls.crt", certs / "tls.key", interval=0)
    before = served_serial(port, certs / "ca.crt")
    assert reloader.check() is False  # nothing changed
    generate_certificates(certs, service="s", namespace="n")  # re-issued by the same CA
    assert reloader.check() is True
    after = served_serial(port, certs / "ca.crt")
    assert after != before and reloader.reloads == 1


def test_a_broken_pair_keeps_the_old_certificate(
    server: tuple[ssl.SSLContext, int, Path], tmp_path: Path
) -> None:
    context, port, certs = server
    reloader = CertificateReloader(context, certs / "tls.crt", certs / "tls.key", interval=0)
    before = served_serial(port, certs / "ca.crt")
    other = tmp_path / "other"
    generate_certificates(other, service="s", namespace="n", reuse_ca=False)
    shutil.copy(other / "tls.key", certs / "tls.key")  # key no longer matches the certificate
    assert reloader.check() is False
    assert served_serial(port, certs / "ca.crt") == before
