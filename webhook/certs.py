"""Serving certificates for local use and the chart's ``existingSecret`` mode (SPEC §6).

``sealgate certs`` writes a small private CA (ECDSA P-256) and a serving certificate it
signs for the webhook's Service names. ``ca.key`` is kept next to ``ca.crt`` so that a
later run re-issues only the serving certificate and the ``caBundle`` the API server
trusts stays the same. Uses ``cryptography`` only: no openssl binary, no network.
"""

from __future__ import annotations

import base64
import datetime
import ipaddress
import os
import re
import secrets
import shlex
from dataclasses import dataclass, replace
from pathlib import Path

from cryptography import x509
from cryptography.exceptions import InvalidSignature, UnsupportedAlgorithm
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID

from webhook.errors import SealgateError

CA_CERT_FILE = "ca.crt"
CA_KEY_FILE = "ca.key"
CERT_FILE = "tls.crt"
KEY_FILE = "tls.key"

# A local CA outlives the serving certificates it signs, so re-issuing keeps the caBundle.
_CA_DAYS = 3650
# Tolerate small clock differences between this machine and the cluster.
_BACKDATE = datetime.timedelta(minutes=5)
# Kubernetes Service and Namespace names are RFC 1123 labels.
_DNS_LABEL = re.compile(r"[a-z0-9](?:[-a-z0-9]{0,61}[a-z0-9])?")


class CertificateError(SealgateError):
    """Certificates could not be generated or written; the message names the cause."""


@dataclass(frozen=True, slots=True)
class CertificatePaths:
    """Where the files were written; ``ca_reused`` when an existing CA signed the new cert."""

    ca_cert: Path
    ca_key: Path
    cert: Path
    key: Path
    ca_reused: bool = False


def generate_certificates(
    out_dir: Path,
    *,
    service: str,
    namespace: str,
    days: int = 365,
    reuse_ca: bool = True,
) -> CertificatePaths:
    """Write ``ca.crt``/``ca.key`` and a serving ``tls.crt``/``tls.key`` into ``out_dir``.

    The serving certificate names ``localhost``, ``SERVICE.NAMESPACE.svc``,
    ``SERVICE.NAMESPACE.svc.cluster.local`` and ``127.0.0.1``. With ``reuse_ca`` an
    existing, still usable CA pair in ``out_dir`` signs it instead of a new CA.
    Private keys are written mode 0600.
    """
    for what, value in (("service", service), ("namespace", namespace)):
        if not _DNS_LABEL.fullmatch(value):
            raise CertificateError(
                f"invalid {what} name {value!r}: use a DNS label "
                "(lowercase letters, digits and '-', at most 63 characters)"
            )
    if days < 1:
        raise CertificateError(f"invalid validity {days} days: must be at least 1")

    out_dir = Path(out_dir)
    paths = CertificatePaths(
        ca_cert=out_dir / CA_CERT_FILE,
        ca_key=out_dir / CA_KEY_FILE,
        cert=out_dir / CERT_FILE,
        key=out_dir / KEY_FILE,
    )
    now = datetime.datetime.now(datetime.UTC)
    not_before = now - _BACKDATE
    not_after = now + datetime.timedelta(days=days)

    try:
        out_dir.mkdir(parents=True, exist_ok=True)
        existing = _load_ca(paths, valid_until=not_after) if reuse_ca else None
        if existing is None:
            ca_key = ec.generate_private_key(ec.SECP256R1())
            ca_cert = _issue_ca(
                ca_key, not_before, now + datetime.timedelta(days=max(days, _CA_DAYS))
            )
            # Key first: a crash in between must not leave a CA certificate without its key.
            _write_file(paths.ca_key, _private_pem(ca_key), mode=0o600)
            _write_file(paths.ca_cert, ca_cert.public_bytes(serialization.Encoding.PEM))
        else:
            ca_key, ca_cert = existing

        key = ec.generate_private_key(ec.SECP256R1())
        cert = _issue_serving(
            key, ca_key, ca_cert,
            service=service, namespace=namespace, not_before=not_before, not_after=not_after,
        )
        _write_file(paths.key, _private_pem(key), mode=0o600)
        _write_file(paths.cert, cert.public_bytes(serialization.Encoding.PEM))
    except OSError as exc:
        raise CertificateError(f"cannot write certificates to {out_dir}: {exc}") from exc
    return replace(paths, ca_reused=existing is not None)


def kubectl_hints(paths: CertificatePaths, *, service: str, namespace: str) -> str:
    """How to install these files for the chart's ``tls.mode=existingSecret``: two lines.

    The first creates the TLS Secret; the second holds the ``helm install`` flags that point
    the chart at it and hand the API server the CA (``--set tls.caBundle=...``, base64 PEM).
    ``service`` must be the chart's full name (the release name ``sealgate`` gives
    ``sealgate``), since the serving certificate names ``SERVICE.NAMESPACE.svc``.
    """
    secret_name = f"{service}-tls"
    ca_bundle = base64.b64encode(paths.ca_cert.read_bytes()).decode("ascii")
    secret = shlex.join(
        [
            "kubectl", "create", "secret", "tls", secret_name,
            f"--cert={paths.cert}", f"--key={paths.key}", "-n", namespace,
        ]
    )
    helm_flags = shlex.join(
        [
            "--set", "tls.mode=existingSecret",
            "--set", f"tls.secretName={secret_name}",
            "--set", f"tls.caBundle={ca_bundle}",
        ]
    )
    return f"{secret}\n{helm_flags}"


def _issue_ca(
    key: ec.EllipticCurvePrivateKey, not_before: datetime.datetime, not_after: datetime.datetime
) -> x509.Certificate:
    name = x509.Name(
        [
            x509.NameAttribute(NameOID.ORGANIZATION_NAME, "sealgate"),
            x509.NameAttribute(NameOID.COMMON_NAME, "sealgate local CA"),
        ]
    )
    public_key = key.public_key()
    return (
        x509.CertificateBuilder()
        .subject_name(name)
        .issuer_name(name)
        .public_key(public_key)
        .serial_number(x509.random_serial_number())
        .not_valid_before(not_before)
        .not_valid_after(not_after)
        .add_extension(x509.BasicConstraints(ca=True, path_length=0), critical=True)
        .add_extension(
            x509.KeyUsage(
                digital_signature=False,
                content_commitment=False,
                key_encipherment=False,
                data_encipherment=False,
                key_agreement=False,
                key_cert_sign=True,
                crl_sign=True,
                encipher_only=False,
                decipher_only=False,
            ),
            critical=True,
        )
        .add_extension(x509.SubjectKeyIdentifier.from_public_key(public_key), critical=False)
        .sign(key, hashes.SHA256())
    )


def _issue_serving(
    key: ec.EllipticCurvePrivateKey,
    ca_key: ec.EllipticCurvePrivateKey,
    ca_cert: x509.Certificate,
    *,
    service: str,
    namespace: str,
    not_before: datetime.datetime,
    not_after: datetime.datetime,
) -> x509.Certificate:
    service_name = f"{service}.{namespace}.svc"
    ca_ski = ca_cert.extensions.get_extension_for_class(x509.SubjectKeyIdentifier).value
    public_key = key.public_key()
    return (
        x509.CertificateBuilder()
        .subject_name(x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, service_name)]))
        .issuer_name(ca_cert.subject)
        .public_key(public_key)
        .serial_number(x509.random_serial_number())
        .not_valid_before(not_before)
        .not_valid_after(not_after)
        .add_extension(x509.BasicConstraints(ca=False, path_length=None), critical=True)
        .add_extension(
            x509.KeyUsage(
                digital_signature=True,
                content_commitment=False,
                key_encipherment=False,
                data_encipherment=False,
                key_agreement=False,
                key_cert_sign=False,
                crl_sign=False,
                encipher_only=False,
                decipher_only=False,
            ),
            critical=True,
        )
        .add_extension(x509.ExtendedKeyUsage([ExtendedKeyUsageOID.SERVER_AUTH]), critical=False)
        .add_extension(
            x509.SubjectAlternativeName(
                [
                    x509.DNSName("localhost"),
                    x509.DNSName(service_name),
                    x509.DNSName(f"{service_name}.cluster.local"),
                    x509.IPAddress(ipaddress.IPv4Address("127.0.0.1")),
                ]
            ),
            critical=False,
        )
        .add_extension(x509.SubjectKeyIdentifier.from_public_key(public_key), critical=False)
        .add_extension(
            x509.AuthorityKeyIdentifier.from_issuer_subject_key_identifier(ca_ski),
            critical=False,
        )
        .sign(ca_key, hashes.SHA256())
    )


def _load_ca(
    paths: CertificatePaths, *, valid_until: datetime.datetime
) -> tuple[ec.EllipticCurvePrivateKey, x509.Certificate] | None:
    """An existing CA pair that can sign a certificate valid until ``valid_until``, or None."""
    if not (paths.ca_cert.is_file() and paths.ca_key.is_file()):
        return None
    try:
        cert = x509.load_pem_x509_certificate(paths.ca_cert.read_bytes())
        key = serialization.load_pem_private_key(paths.ca_key.read_bytes(), password=None)
        constraints = cert.extensions.get_extension_for_class(x509.BasicConstraints).value
        cert.extensions.get_extension_for_class(x509.SubjectKeyIdentifier)
        cert.verify_directly_issued_by(cert)  # self-signed, i.e. a root we made
    except (ValueError, TypeError, UnsupportedAlgorithm, x509.ExtensionNotFound, InvalidSignature):
        return None
    if not isinstance(key, ec.EllipticCurvePrivateKey) or not constraints.ca:
        return None
    if key.public_key() != cert.public_key():
        return None
    now = datetime.datetime.now(datetime.UTC)
    if not cert.not_valid_before_utc <= now or cert.not_valid_after_utc < valid_until:
        return None
    return key, cert


def _private_pem(key: ec.EllipticCurvePrivateKey) -> bytes:
    return key.private_bytes(
        serialization.Encoding.PEM,
        serialization.PrivateFormat.PKCS8,
        serialization.NoEncryption(),
    )


def _write_file(path: Path, content: bytes, *, mode: int = 0o644) -> None:
    """Write atomically; the file has ``mode`` from its creation on (no readable window)."""
    tmp = path.with_name(f".{path.name}.{secrets.token_hex(8)}.tmp")
    # O_EXCL: never reuse (or follow a symlink at) an existing name.
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL, mode)
    try:
        with os.fdopen(fd, "wb") as handle:
            os.fchmod(handle.fileno(), mode)  # the umask may have narrowed it
            handle.write(content)
            handle.flush()
            os.fsync(handle.fileno())
        os.replace(tmp, path)
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise
