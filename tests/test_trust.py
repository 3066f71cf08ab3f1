"""Trust roots: the embedded public-good/staging roots load offline; paths load and fail clearly."""

from __future__ import annotations

import base64
import json
import logging
import os
import socket
from collections.abc import Iterator
from datetime import UTC, datetime
from importlib import resources
from pathlib import Path
from typing import Any

import pytest
from cryptography import x509
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec, ed25519

from webhook.errors import SealgateError
from webhook.signatures import (
    TrustedRootError,
    TrustedRootMaterial,
    clear_trusted_root_cache,
    key_fingerprint,
    load_public_key,
    load_trusted_root,
)

DATA = Path(__file__).parent / "data"
PUBLIC_GOOD_FILE = DATA / "trust" / "sigstore-public-good-trusted_root.json"
STAGING_FILE = DATA / "trust" / "sigstore-staging-trusted_root.json"
PUBLIC_GOOD_REKOR_LOG_ID = "c0d23d6ad406973f9559f3ba2d1ca01f84147d8ffc5b8445c224f98b9591801d"
# ctfe.sigstore.dev/2022, which signs the SCTs of the containers-image keyless fixture
PUBLIC_GOOD_CT_2022 = "dd3d306ac6c7113263191e1c99673702a24a5eb8de3cadff878a72802f29ee8e"


@pytest.fixture(autouse=True)
def fresh_cache() -> Iterator[None]:
    clear_trusted_root_cache()
    yield
    clear_trusted_root_cache()


@pytest.fixture
def no_network(monkeypatch: pytest.MonkeyPatch) -> None:
    """Any attempt to open a connection fails the test (SPEC §8: never the TUF updater)."""

    def refuse(*args: Any, **kwargs: Any) -> None:
        raise AssertionError(f"network access attempted: {args!r}")

    monkeypatch.setattr(socket.socket, "connect", refuse)
    monkeypatch.setattr(socket.socket, "connect_ex", refuse)
    monkeypatch.setattr(socket, "create_connection", refuse)
    monkeypatch.setattr(socket, "getaddrinfo", refuse)


def fixture_pem(name: str) -> bytes:
    return (DATA / "containers-image" / name).read_bytes()


# --------------------------------------------------------------------------- embedded roots


def test_public_good_loads_offline_with_the_rekor_key(no_network: None) -> None:
    root = load_trusted_root("public-good")
    assert root.source == "public-good"
    by_id = {key.log_id: key for key in root.rekor_keys}
    rekor = by_id[PUBLIC_GOOD_REKOR_LOG_ID]
    assert key_fingerprint(rekor.key) == PUBLIC_GOOD_REKOR_LOG_ID
    assert key_fingerprint(load_public_key(fixture_pem("rekor.pub"))) == PUBLIC_GOOD_REKOR_LOG_ID
    assert rekor.valid_from == datetime(2021, 1, 12, 11, 53, 27, tzinfo=UTC)
    assert rekor.valid_until is None
    # Rekor v2 (log2025-1) signs with Ed25519.
    assert any(isinstance(key.key, ed25519.Ed25519PublicKey) for key in root.rekor_keys)


def test_public_good_has_ct_logs_and_fulcio_roots(no_network: None) -> None:
    root = load_trusted_root("public-good")
    ct = {key.log_id: key for key in root.ctlog_keys}
    assert PUBLIC_GOOD_CT_2022 in ct
    assert key_fingerprint(ct[PUBLIC_GOOD_CT_2022].key) == PUBLIC_GOOD_CT_2022
    fulcio_root = x509.load_pem_x509_certificate(fixture_pem("fulcio_v1.crt.pem"))
    assert fulcio_root in root.fulcio_certs
    names = {cert.subject.rfc4514_string() for cert in root.fulcio_certs}
    assert "CN=sigstore-intermediate,O=sigstore.dev" in names
    # Expired authorities stay: certificates are checked at the time they were used.
    windows = [(ca.valid_from, ca.valid_until) for ca in root.fulcio_authorities]
    assert (
        datetime(2021, 3, 7, 3, 20, 29, tzinfo=UTC),
        datetime(2022, 12, 31, 23, 59, 59, 999000, tzinfo=UTC),
    ) in windows
    assert all(ca.uri == "https://fulcio.sigstore.dev" for ca in root.fulcio_authorities)
    assert len(root.timestamp_authorities) == 1


def test_staging_loads_offline_without_public_good_material(no_network: None) -> None:
    root = load_trusted_root("staging")
    assert root.source == "staging"
    assert root.rekor_keys
    assert PUBLIC_GOOD_REKOR_LOG_ID not in {key.log_id for key in root.rekor_keys}
    fulcio_root = x509.load_pem_x509_certificate(fixture_pem("fulcio_v1.crt.pem"))
    assert root.fulcio_certs
    assert fulcio_root not in root.fulcio_certs


@pytest.mark.parametrize(
    ("name", "copy", "directory"),
    [
        ("public-good", PUBLIC_GOOD_FILE, "https%3A%2F%2Ftuf-repo-cdn.sigstore.dev"),
        ("staging", STAGING_FILE, "https%3A%2F%2Ftuf-repo-cdn.sigstage.dev"),
    ],
)
def test_embedded_roots_are_the_pinned_snapshots(name: str, copy: Path, directory: str) -> None:
    # SPEC §8: the embedded root changes only on purpose (a sigstore upgrade fails here first).
    embedded = resources.files("sigstore._store").joinpath(directory, "trusted_root.json")
    assert embedded.read_bytes() == copy.read_bytes()
    by_name, by_path = load_trusted_root(name), load_trusted_root(str(copy))
    assert by_path.source == str(copy.resolve())
    assert _material(by_name) == _material(by_path)


def _material(root: TrustedRootMaterial) -> tuple[Any, ...]:
    return (root.rekor_keys, root.ctlog_keys, root.fulcio_authorities, root.timestamp_authorities)


def test_roots_are_cached() -> None:
    assert load_trusted_root("public-good") is load_trusted_root("public-good")
    assert load_trusted_root(str(PUBLIC_GOOD_FILE)) is load_trusted_root(str(PUBLIC_GOOD_FILE))


def test_a_changed_file_is_read_again(tmp_path: Path) -> None:
    path = tmp_path / "trusted_root.json"
    path.write_bytes(PUBLIC_GOOD_FILE.read_bytes())
    first = load_trusted_root(str(path))
    assert PUBLIC_GOOD_REKOR_LOG_ID in {key.log_id for key in first.rekor_keys}
    path.write_bytes(STAGING_FILE.read_bytes())
    stat = path.stat()
    os.utime(path, ns=(stat.st_atime_ns, stat.st_mtime_ns + 1_000_000_000))
    second = load_trusted_root(str(path))
    assert PUBLIC_GOOD_REKOR_LOG_ID not in {key.log_id for key in second.rekor_keys}


# --------------------------------------------------------------------------- bad roots


def _write(tmp_path: Path, content: str | bytes) -> Path:
    path = tmp_path / "trusted_root.json"
    if isinstance(content, str):
        path.write_text(content)
    else:
        path.write_bytes(content)
    return path


def _public_good_json() -> dict[str, Any]:
    return json.loads(PUBLIC_GOOD_FILE.read_text())  # type: ignore[no-any-return]


def test_missing_file_names_the_path(tmp_path: Path) -> None:
    path = tmp_path / "nope" / "trusted_root.json"
    with pytest.raises(TrustedRootError, match=f"cannot read trusted root '{path}'"):
        load_trusted_root(str(path))


def test_unknown_name_is_a_path() -> None:
    with pytest.raises(TrustedRootError, match="cannot read trusted root 'Public-Good'"):
        load_trusted_root("Public-Good")


def test_directory_names_the_path(tmp_path: Path) -> None:
    with pytest.raises(TrustedRootError, match=f"cannot read trusted root '{tmp_path}'"):
        load_trusted_root(str(tmp_path))


def _bad_certificate() -> dict[str, Any]:
    document = _public_good_json()
    chain = document["certificateAuthorities"][0]["certChain"]["certificates"]
    chain[0]["rawBytes"] = base64.b64encode(b"not a certificate").decode()
    return document


@pytest.mark.parametrize(
    ("content", "message"),
    [
        ("", "not a valid trusted_root.json"),
        ("not json", "not a valid trusted_root.json"),
        ("[]", "not a valid trusted_root.json"),
        ("{}", "not a valid trusted_root.json: mediaType: Field required"),
        (
            json.dumps({**_public_good_json(), "mediaType": "application/json"}),
            "not a valid trusted_root.json: mediaType",
        ),
        (
            json.dumps({**_public_good_json(), "tlogs": "x"}),
            "not a valid trusted_root.json: tlogs",
        ),
        (json.dumps(_bad_certificate()), "certificateAuthorities .* is not a DER certificate"),
    ],
    ids=["empty", "text", "array", "empty-object", "media-type", "tlogs", "bad-certificate"],
)
def test_malformed_file_names_the_path(tmp_path: Path, content: str, message: str) -> None:
    path = _write(tmp_path, content)
    with pytest.raises(TrustedRootError, match=message) as caught:
        load_trusted_root(str(path))
    assert str(path) in str(caught.value)
    assert isinstance(caught.value, SealgateError)


def test_unusable_log_keys_are_skipped_not_fatal(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    document = _public_good_json()
    p521 = ec.generate_private_key(ec.SECP521R1()).public_key().public_bytes(
        serialization.Encoding.DER, serialization.PublicFormat.SubjectPublicKeyInfo
    )
    document["tlogs"][1]["publicKey"]["rawBytes"] = base64.b64encode(p521).decode()
    document["tlogs"][1]["publicKey"]["keyDetails"] = "PKIX_ECDSA_P521_SHA_512"
    path = _write(tmp_path, json.dumps(document))
    with caplog.at_level(logging.WARNING, logger="webhook.signatures.trust"):
        root = load_trusted_root(str(path))
    assert [key.log_id for key in root.rekor_keys] == [PUBLIC_GOOD_REKOR_LOG_ID]
    assert "log2025-1.rekor.sigstore.dev" in caplog.text
    assert "secp521r1" in caplog.text
