"""Sigstore trust roots (``trusted_root.json``) as plain key and certificate material.

``public-good`` and ``staging`` are the roots embedded in the installed
``sigstore`` package, read as files: never through its TUF updater, which
writes to the home directory and goes online (SPEC §8). Any other name is a
path to a ``trusted_root.json`` (production clusters mount a current one).
"""

from __future__ import annotations

import functools
import logging
from dataclasses import dataclass
from datetime import UTC, datetime
from importlib import resources
from pathlib import Path
from typing import TypeVar
from urllib.parse import quote

import pydantic
from cryptography import x509
from sigstore_models.common.v1 import TimeRange
from sigstore_models.trustroot.v1 import CertificateAuthority as _CertificateAuthorityModel
from sigstore_models.trustroot.v1 import TransparencyLogInstance
from sigstore_models.trustroot.v1 import TrustedRoot as _TrustedRootModel

from webhook.errors import SealgateError, VerificationError
from webhook.keys import PublicKey, load_public_key_der
from webhook.signatures.cosign import RekorKey

log = logging.getLogger(__name__)

# The TUF repositories whose trusted_root.json sigstore-python embeds, in a directory
# named after the quoted URL (sigstore._utils.read_embedded).
EMBEDDED_ROOTS = {
    "public-good": "https://tuf-repo-cdn.sigstore.dev",
    "staging": "https://tuf-repo-cdn.sigstage.dev",
}


class TrustedRootError(SealgateError):
    """A trusted root that cannot be read or parsed; the message names the file."""


@dataclass(frozen=True, slots=True)
class CTLogKey:
    """A certificate-transparency log's key (verifies Fulcio certificates' SCTs)."""

    key: PublicKey
    log_id: str
    valid_from: datetime | None = None
    valid_until: datetime | None = None


@dataclass(frozen=True, slots=True)
class CertificateAuthority:
    """A CA chain (leaf-most first, root last) and when it may have issued certificates."""

    certificates: tuple[x509.Certificate, ...]
    uri: str | None
    valid_from: datetime | None
    valid_until: datetime | None


@dataclass(frozen=True, slots=True)
class TrustedRootMaterial:
    """What a trusted_root.json vouches for, as keys and certificates.

    ``source`` names the root (``public-good``, ``staging`` or the file path).
    """

    source: str
    rekor_keys: tuple[RekorKey, ...]
    ctlog_keys: tuple[CTLogKey, ...]
    fulcio_authorities: tuple[CertificateAuthority, ...]
    timestamp_authorities: tuple[CertificateAuthority, ...]

    @property
    def fulcio_certs(self) -> tuple[x509.Certificate, ...]:
        """Every Fulcio CA certificate (intermediates and roots), expired ones included:
        a certificate is checked at the time it was used, not now."""
        return tuple(cert for ca in self.fulcio_authorities for cert in ca.certificates)


def load_trusted_root(name_or_path: str) -> TrustedRootMaterial:
    """Load ``public-good``, ``staging`` or a trusted_root.json path; cached.

    A path is re-read when its modification time or size changes (a remounted
    ConfigMap), otherwise served from the cache. Raises TrustedRootError naming
    the file when it is missing or malformed.
    """
    if name_or_path in EMBEDDED_ROOTS:
        return _load_embedded(name_or_path)
    return _load_file(*root_cache_key(name_or_path))


def root_cache_key(name_or_path: str) -> tuple[str, int, int]:
    """(resolved path, mtime, size) of a trusted root file — a key that changes when a
    remounted ConfigMap replaces it; embedded roots are keyed by name."""
    if name_or_path in EMBEDDED_ROOTS:
        return name_or_path, 0, 0
    path = Path(name_or_path)
    try:
        stat = path.stat()
    except OSError as exc:
        raise TrustedRootError(
            f"cannot read trusted root {name_or_path!r}: {exc.strerror or exc}"
        ) from None
    return str(path.resolve()), stat.st_mtime_ns, stat.st_size


def clear_trusted_root_cache() -> None:
    """Forget every loaded root (tests; a reload that must see new files)."""
    _load_embedded.cache_clear()
    _load_file.cache_clear()


@functools.lru_cache(maxsize=len(EMBEDDED_ROOTS))
def _load_embedded(name: str) -> TrustedRootMaterial:
    directory = quote(EMBEDDED_ROOTS[name], safe="")
    resource = resources.files("sigstore._store").joinpath(directory, "trusted_root.json")
    try:
        content = resource.read_bytes()
    except OSError as exc:
        raise TrustedRootError(
            f"cannot read the {name} trusted root embedded in the sigstore package "
            f"({resource}): {exc.strerror or exc}"
        ) from None
    return parse_trusted_root(content, source=name)


@functools.lru_cache(maxsize=16)
def _load_file(path: str, _mtime_ns: int, _size: int) -> TrustedRootMaterial:
    try:
        content = Path(path).read_bytes()
    except OSError as exc:
        raise TrustedRootError(
            f"cannot read trusted root {path!r}: {exc.strerror or exc}"
        ) from None
    return parse_trusted_root(content, source=path)


def parse_trusted_root(content: bytes, *, source: str) -> TrustedRootMaterial:
    """Parse trusted_root.json bytes; ``source`` names the file in error messages."""
    try:
        model = _TrustedRootModel.from_json(content)
    except pydantic.ValidationError as exc:
        first = exc.errors()[0]
        where = ".".join(str(part) for part in first["loc"]) or "(document)"
        raise TrustedRootError(
            f"trusted root {source!r} is not a valid trusted_root.json: {where}: {first['msg']}"
        ) from None
    return TrustedRootMaterial(
        source=source,
        rekor_keys=tuple(_log_keys(model.tlogs, source, "tlogs", RekorKey)),
        ctlog_keys=tuple(_log_keys(model.ctlogs, source, "ctlogs", CTLogKey)),
        fulcio_authorities=tuple(
            _authority(ca, source, "certificateAuthorities") for ca in model.certificate_authorities
        ),
        timestamp_authorities=tuple(
            _authority(ca, source, "timestampAuthorities") for ca in model.timestamp_authorities
        ),
    )


def _window(valid_for: TimeRange | None) -> tuple[datetime | None, datetime | None]:
    if valid_for is None:
        return None, None
    return _aware(valid_for.start), _aware(valid_for.end)


def _aware(moment: datetime | None) -> datetime | None:
    # protobuf-specs timestamps are UTC; a root written without "Z" means UTC too.
    if moment is not None and moment.tzinfo is None:
        return moment.replace(tzinfo=UTC)
    return moment


_LogKey = TypeVar("_LogKey", RekorKey, CTLogKey)


def _log_keys(
    logs: list[TransparencyLogInstance], source: str, field: str, kind: type[_LogKey]
) -> list[_LogKey]:
    keys: list[_LogKey] = []
    for log_instance in logs:
        public_key = log_instance.public_key
        if public_key.raw_bytes is None:
            continue
        try:
            key = load_public_key_der(public_key.raw_bytes)
        except VerificationError as exc:
            # A key type we cannot verify with is unusable, not fatal: the root's other
            # logs still work, and an entry naming this log fails as "no trusted key".
            log.warning("trusted root %s: skipping %s key of %s: %s",
                        source, field, log_instance.base_url, exc)
            continue
        valid_from, valid_until = _window(public_key.valid_for)
        keys.append(kind(key, log_instance.log_id.key_id.hex(), valid_from, valid_until))
    return keys


def _authority(
    model: _CertificateAuthorityModel, source: str, field: str
) -> CertificateAuthority:
    certificates: list[x509.Certificate] = []
    for index, entry in enumerate(model.cert_chain.certificates):
        try:
            certificates.append(x509.load_der_x509_certificate(entry.raw_bytes))
        except ValueError as exc:
            raise TrustedRootError(
                f"trusted root {source!r}: {field} {model.uri or model.subject.common_name} "
                f"certificate {index} is not a DER certificate: {exc}"
            ) from None
    valid_from, valid_until = _window(model.valid_for)
    return CertificateAuthority(tuple(certificates), model.uri, valid_from, valid_until)
