"""webhook/certs.py: a local CA and a serving certificate (SPEC §6 `sealgate certs`)."""

from __future__ import annotations

import base64
import ipaddress
import os
import shlex
import socket
import ssl
import stat
import threading
from pathlib import Path

import pytest
from cryptography import x509
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.hazmat.primitives.serialization import load_pem_private_key
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID

from webhook.certs import (
    CertificateError,
    CertificatePaths,
    generate_certificates,
    kubectl_hints,
)

SERVICE = "sealgate"
NAMESPACE = "sealgate-system"
SERVICE_DNS = f"{SERVICE}.{NAMESPACE}.svc"


@pytest.fixture(scope="module")
def paths(tmp_path_factory: pytest.TempPathFactory) -> CertificatePaths:
    out = tmp_path_factory.mktemp("certs") / "out"  # created by generate_certificates
    return generate_certificates(out, service=SERVICE, namespace=NAMESPACE)


def _cert(path: Path) -> x509.Certificate:
    return x509.load_pem_x509_certificate(path.read_bytes())


def _key(path: Path) -> ec.EllipticCurvePrivateKey:
    key = load_pem_private_key(path.read_bytes(), password=None)
    assert isinstance(key, ec.EllipticCurvePrivateKey)
    return key


def test_files_written(paths: CertificatePaths) -> None:
    out = paths.cert.parent
    assert paths == CertificatePaths(
        out / "ca.crt", out / "ca.key", out / "tls.crt", out / "tls.key", ca_reused=False
    )
    assert sorted(p.name for p in out.iterdir()) == ["ca.crt", "ca.key", "tls.crt", "tls.key"]


def test_private_keys_are_0600(paths: CertificatePaths) -> None:
    for path in (paths.key, paths.ca_key):
        assert stat.S_IMODE(path.stat().st_mode) == 0o600, path
    for path in (paths.cert, paths.ca_cert):
        assert stat.S_IMODE(path.stat().st_mode) == 0o644, path


def test_key_mode_does_not_depend_on_umask(tmp_path: Path) -> None:
    old = os.umask(0o000)
    try:
        result = generate_certificates(tmp_path, service="a", namespace="b")
    finally:
        os.umask(old)
    assert stat.S_IMODE(result.key.stat().st_mode) == 0o600
    assert stat.S_IMODE(result.ca_key.stat().st_mode) == 0o600


def test_ca_certificate(paths: CertificatePaths) -> None:
    ca = _cert(paths.ca_cert)
    assert isinstance(ca.public_key(), ec.EllipticCurvePublicKey)
    assert isinstance(ca.public_key().curve, ec.SECP256R1)  # type: ignore[union-attr]
    assert ca.subject == ca.issuer
    constraints = ca.extensions.get_extension_for_class(x509.BasicConstraints)
    assert constraints.critical
    assert constraints.value.ca
    usage = ca.extensions.get_extension_for_class(x509.KeyUsage).value
    assert usage.key_cert_sign
    assert usage.crl_sign
    assert not usage.digital_signature
    ski = ca.extensions.get_extension_for_class(x509.SubjectKeyIdentifier).value
    assert ski == x509.SubjectKeyIdentifier.from_public_key(ca.public_key())
    ca.verify_directly_issued_by(ca)
    assert _key(paths.ca_key).public_key() == ca.public_key()


def test_serving_cert_chains_to_ca(paths: CertificatePaths) -> None:
    ca, cert = _cert(paths.ca_cert), _cert(paths.cert)
    assert cert.issuer == ca.subject
    # the signature itself, with the CA's public key
    ca_public = ca.public_key()
    assert isinstance(ca_public, ec.EllipticCurvePublicKey)
    assert cert.signature_hash_algorithm is not None
    ca_public.verify(
        cert.signature, cert.tbs_certificate_bytes, ec.ECDSA(cert.signature_hash_algorithm)
    )
    cert.verify_directly_issued_by(ca)
    aki = cert.extensions.get_extension_for_class(x509.AuthorityKeyIdentifier).value
    ca_ski = ca.extensions.get_extension_for_class(x509.SubjectKeyIdentifier).value
    assert aki.key_identifier == ca_ski.digest
    assert cert.not_valid_after_utc <= ca.not_valid_after_utc


def test_serving_cert_does_not_verify_against_another_ca(
    paths: CertificatePaths, tmp_path: Path
) -> None:
    other = generate_certificates(tmp_path, service=SERVICE, namespace=NAMESPACE)
    with pytest.raises(Exception):  # noqa: B017 - InvalidSignature or ValueError
        _cert(paths.cert).verify_directly_issued_by(_cert(other.ca_cert))


def test_serving_cert_extensions(paths: CertificatePaths) -> None:
    cert = _cert(paths.cert)
    san = cert.extensions.get_extension_for_class(x509.SubjectAlternativeName).value
    assert san.get_values_for_type(x509.DNSName) == [
        "localhost",
        SERVICE_DNS,
        f"{SERVICE_DNS}.cluster.local",
    ]
    assert san.get_values_for_type(x509.IPAddress) == [ipaddress.IPv4Address("127.0.0.1")]
    assert len(list(san)) == 4
    eku = cert.extensions.get_extension_for_class(x509.ExtendedKeyUsage).value
    assert list(eku) == [ExtendedKeyUsageOID.SERVER_AUTH]
    constraints = cert.extensions.get_extension_for_class(x509.BasicConstraints)
    assert constraints.critical
    assert not constraints.value.ca
    assert cert.extensions.get_extension_for_class(x509.KeyUsage).value.digital_signature
    assert isinstance(cert.signature_hash_algorithm, hashes.SHA256)


def test_key_matches_cert(paths: CertificatePaths) -> None:
    key, cert = _key(paths.key), _cert(paths.cert)
    assert isinstance(key.curve, ec.SECP256R1)
    assert key.public_key() == cert.public_key()
    signature = key.sign(b"probe", ec.ECDSA(hashes.SHA256()))
    public = cert.public_key()
    assert isinstance(public, ec.EllipticCurvePublicKey)
    public.verify(signature, b"probe", ec.ECDSA(hashes.SHA256()))
    assert _key(paths.ca_key).public_key() != cert.public_key()


def test_validity_days(tmp_path: Path) -> None:
    result = generate_certificates(tmp_path, service="a", namespace="b", days=30)
    cert = _cert(result.cert)
    lifetime = cert.not_valid_after_utc - cert.not_valid_before_utc
    assert 30 * 86400 <= lifetime.total_seconds() <= 30 * 86400 + 600


def test_reissue_keeps_ca(tmp_path: Path) -> None:
    first = generate_certificates(tmp_path, service="a", namespace="b")
    ca_before = first.ca_cert.read_bytes()
    leaf_before = first.cert.read_bytes()
    second = generate_certificates(tmp_path, service="c", namespace="d")
    assert second.ca_reused
    assert second.ca_cert.read_bytes() == ca_before
    assert second.cert.read_bytes() != leaf_before
    _cert(second.cert).verify_directly_issued_by(_cert(second.ca_cert))
    san = _cert(second.cert).extensions.get_extension_for_class(x509.SubjectAlternativeName)
    assert "c.d.svc" in san.value.get_values_for_type(x509.DNSName)
    third = generate_certificates(tmp_path, service="a", namespace="b", reuse_ca=False)
    assert not third.ca_reused
    assert third.ca_cert.read_bytes() != ca_before


def test_broken_ca_is_replaced(tmp_path: Path) -> None:
    generate_certificates(tmp_path, service="a", namespace="b")
    (tmp_path / "ca.key").write_bytes(b"not a key")
    result = generate_certificates(tmp_path, service="a", namespace="b")
    assert not result.ca_reused
    _cert(result.cert).verify_directly_issued_by(_cert(result.ca_cert))
    assert _key(result.ca_key).public_key() == _cert(result.ca_cert).public_key()


def test_no_temporary_files_left(tmp_path: Path) -> None:
    generate_certificates(tmp_path, service="a", namespace="b")
    generate_certificates(tmp_path, service="a", namespace="b")
    assert sorted(p.name for p in tmp_path.iterdir()) == [
        "ca.crt", "ca.key", "tls.crt", "tls.key",
    ]


@pytest.mark.parametrize(
    ("kwargs", "fragment"),
    [
        pytest.param({"service": "Web", "namespace": "ns"}, "invalid service name", id="upper"),
        pytest.param({"service": "a.b", "namespace": "ns"}, "invalid service name", id="dot"),
        pytest.param({"service": "", "namespace": "ns"}, "invalid service name", id="empty"),
        pytest.param({"service": "a", "namespace": "-ns"}, "invalid namespace", id="dash"),
        pytest.param({"service": "a", "namespace": "n" * 64}, "invalid namespace", id="long"),
        pytest.param({"service": "a", "namespace": "b", "days": 0}, "at least 1", id="days"),
    ],
)
def test_invalid_arguments(tmp_path: Path, kwargs: dict[str, object], fragment: str) -> None:
    with pytest.raises(CertificateError) as info:
        generate_certificates(tmp_path / "out", **kwargs)  # type: ignore[arg-type]
    assert fragment in str(info.value)
    assert not (tmp_path / "out").exists()


def test_unwritable_directory_is_a_certificate_error(tmp_path: Path) -> None:
    blocker = tmp_path / "file"
    blocker.write_text("")
    with pytest.raises(CertificateError, match="cannot write certificates"):
        generate_certificates(blocker / "out", service="a", namespace="b")


def test_kubectl_hints(paths: CertificatePaths) -> None:
    hints = kubectl_hints(paths, service=SERVICE, namespace=NAMESPACE)
    secret_line, helm_line = hints.splitlines()
    assert shlex.split(secret_line) == [
        "kubectl", "create", "secret", "tls", f"{SERVICE}-tls",
        f"--cert={paths.cert}", f"--key={paths.key}", "-n", NAMESPACE,
    ]
    words = shlex.split(helm_line)
    assert words[:4] == [
        "--set", "tls.mode=existingSecret", "--set", f"tls.secretName={SERVICE}-tls",
    ]
    assert words[4] == "--set"
    assert words[5].startswith("tls.caBundle=")
    assert len(words) == 6
    assert helm_line.endswith(words[5])  # copied verbatim: nothing in base64 needs quoting
    bundle = words[5].removeprefix("tls.caBundle=")
    assert base64.b64decode(bundle, validate=True) == paths.ca_cert.read_bytes()


def test_cli_writes_files_and_prints_hints(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    from webhook.__main__ import main

    out = tmp_path / "out"
    assert main(["certs", "--out", str(out), "--service", "gate", "--namespace", "infra"]) == 0
    assert {"ca.crt", "tls.crt", "tls.key"} <= {p.name for p in out.iterdir()}
    lines = capsys.readouterr().out.splitlines()
    assert any(line.startswith("kubectl create secret tls gate-tls ") for line in lines)
    assert any("--set tls.caBundle=" in line for line in lines)
    san = _cert(out / "tls.crt").extensions.get_extension_for_class(x509.SubjectAlternativeName)
    assert "gate.infra.svc" in san.value.get_values_for_type(x509.DNSName)


def test_kubectl_hints_quote_paths(tmp_path: Path) -> None:
    result = generate_certificates(tmp_path / "my certs", service="a", namespace="b")
    secret_line = kubectl_hints(result, service="a", namespace="b").splitlines()[0]
    assert f"--cert={result.cert}" in shlex.split(secret_line)


# --- a real TLS handshake over loopback -----------------------------------------------------


def _handshake(paths: CertificatePaths, server_hostname: str) -> str:
    """Serve one TLS connection on 127.0.0.1 and connect to it trusting only ca.crt."""
    server_ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    server_ctx.load_cert_chain(paths.cert, paths.key)
    client_ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)  # verifies chain and hostname
    client_ctx.load_verify_locations(cafile=paths.ca_cert)

    errors: list[BaseException] = []
    with socket.create_server(("127.0.0.1", 0)) as listener:
        listener.settimeout(10)
        port = listener.getsockname()[1]

        def serve() -> None:
            try:
                conn, _ = listener.accept()
                with server_ctx.wrap_socket(conn, server_side=True) as tls:
                    tls.sendall(tls.recv(64).upper())
            except BaseException as exc:
                errors.append(exc)

        thread = threading.Thread(target=serve, daemon=True)
        thread.start()
        try:
            with (
                socket.create_connection(("127.0.0.1", port), timeout=10) as raw,
                client_ctx.wrap_socket(raw, server_hostname=server_hostname) as tls,
            ):
                tls.sendall(b"ping")
                reply = tls.recv(64)
                peer = tls.getpeercert(binary_form=True)
        finally:
            thread.join(10)
    assert not errors, errors
    assert reply == b"PING"
    assert peer is not None
    (common_name,) = x509.load_der_x509_certificate(peer).subject.get_attributes_for_oid(
        NameOID.COMMON_NAME
    )
    return str(common_name.value)


@pytest.mark.parametrize(
    "hostname",
    ["localhost", SERVICE_DNS, f"{SERVICE_DNS}.cluster.local", "127.0.0.1"],
)
def test_tls_handshake(paths: CertificatePaths, hostname: str) -> None:
    assert _handshake(paths, hostname) == SERVICE_DNS


@pytest.mark.parametrize("hostname", ["example.com", "other.sealgate-system.svc", "127.0.0.2"])
def test_tls_handshake_rejects_other_names(paths: CertificatePaths, hostname: str) -> None:
    with pytest.raises(ssl.SSLCertVerificationError):
        _handshake_client_only(paths, hostname)


def _handshake_client_only(paths: CertificatePaths, server_hostname: str) -> None:
    # In-memory handshake (ssl.MemoryBIO): no socket needed for a failing verification.
    server_ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    server_ctx.load_cert_chain(paths.cert, paths.key)
    client_ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
    client_ctx.load_verify_locations(cafile=paths.ca_cert)
    c_in, c_out, s_in, s_out = ssl.MemoryBIO(), ssl.MemoryBIO(), ssl.MemoryBIO(), ssl.MemoryBIO()
    client = client_ctx.wrap_bio(c_in, c_out, server_hostname=server_hostname)
    server = server_ctx.wrap_bio(s_in, s_out, server_side=True)
    for _ in range(10):
        done = 0
        for side in (client, server):
            try:
                side.do_handshake()
                done += 1
            except ssl.SSLWantReadError:
                pass
        s_in.write(c_out.read())
        c_in.write(s_out.read())
        if done == 2:
            return
    raise AssertionError("handshake did not finish")


def test_memory_bio_handshake_succeeds_for_service_name(paths: CertificatePaths) -> None:
    _handshake_client_only(paths, SERVICE_DNS)
