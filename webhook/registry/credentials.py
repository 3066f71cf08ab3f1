"""Registry credentials from a docker ``config.json``-format file (SPEC §4).

Basic ``username:password`` per registry host; messages never carry the secret.
"""

from __future__ import annotations

import base64
import binascii
import json
import os
from collections.abc import Iterator, Mapping
from contextlib import contextmanager
from contextvars import ContextVar
from dataclasses import dataclass
from typing import Any
from urllib.parse import urlsplit

from webhook.errors import RegistryError
from webhook.references import DOCKER_HUB

_DOCKER_HUB_KEYS = frozenset({"docker.io", "index.docker.io", "registry-1.docker.io"})


def _registry_key(text: str) -> str:
    """``host``, ``host:port``, ``https://host/v1/`` -> ``host[:port]``; Hub aliases: docker.io."""
    text = text.strip()
    if "://" in text:
        text = urlsplit(text).netloc
    host = text.split("/", 1)[0].lower()
    return DOCKER_HUB if host in _DOCKER_HUB_KEYS else host


class RegistryCredentials:
    """Basic credentials per registry host, from a docker ``config.json``-format file.

    Only the ``auths`` section is read: ``{"auths": {HOST: {"auth": base64("user:pass")}}}``
    or ``{HOST: {"username": ..., "password": ...}}``. Entries without credentials
    (Docker Desktop writes ``{}`` next to a ``credsStore``) are ignored.
    """

    __slots__ = ("_auths",)

    def __init__(self, auths: Mapping[str, tuple[str, str]] | None = None) -> None:
        self._auths = {_registry_key(host): creds for host, creds in (auths or {}).items()}

    def __repr__(self) -> str:
        # The secret never appears in a repr (logs, tracebacks, pytest output).
        return f"RegistryCredentials(hosts={sorted(self._auths)!r})"

    @property
    def hosts(self) -> frozenset[str]:
        return frozenset(self._auths)

    @classmethod
    def from_file(cls, path: str | os.PathLike[str]) -> RegistryCredentials:
        """Read a docker config file; RegistryError naming the file and the problem."""
        name = os.fspath(path)
        try:
            with open(name, "rb") as handle:
                raw = handle.read()
        except OSError as exc:
            raise RegistryError(
                f"registry credentials file {name}: cannot read it: {exc.strerror or exc}"
            ) from exc
        try:
            config = json.loads(raw)
        except (UnicodeDecodeError, json.JSONDecodeError) as exc:
            # JSONDecodeError.msg/lineno/colno describe the position, never the content.
            where = (
                f" (line {exc.lineno}, column {exc.colno}): {exc.msg}"
                if isinstance(exc, json.JSONDecodeError)
                else ": not UTF-8 text"
            )
            raise RegistryError(
                f"registry credentials file {name}: not valid JSON{where}"
            ) from exc
        return cls.from_config(config, source=name)

    @classmethod
    def from_config(cls, config: object, *, source: str = "<config>") -> RegistryCredentials:
        """Credentials from an already parsed docker config (``source`` names it in errors)."""

        def fail(problem: str) -> RegistryError:
            return RegistryError(f"registry credentials file {source}: {problem}")

        if not isinstance(config, dict):
            raise fail("expected a JSON object at the top level")
        auths = config.get("auths", {})
        if not isinstance(auths, dict):
            raise fail('"auths" must be an object mapping registry hosts to credentials')
        parsed: dict[str, tuple[str, str]] = {}
        for host, entry in auths.items():
            if not isinstance(entry, dict):
                raise fail(f'"auths" entry {host!r} must be an object')
            try:
                creds = _entry_credentials(entry)
            except _BadEntry as exc:
                raise fail(f'"auths" entry {host!r}: {exc}') from None
            if creds is not None:
                parsed[host] = creds
        return cls(parsed)

    def lookup(self, registry_host: str) -> tuple[str, str] | None:
        """``(username, password)`` for a registry host (``host[:port]``), or None."""
        return self._auths.get(_registry_key(registry_host))


class _BadEntry(Exception):
    """One ``auths`` entry is unusable; the text says why and never holds the secret."""


def _entry_credentials(entry: Mapping[str, Any]) -> tuple[str, str] | None:
    auth = entry.get("auth")
    if auth not in (None, ""):
        if not isinstance(auth, str):
            raise _BadEntry('"auth" must be a string (base64 of "username:password")')
        try:
            decoded = base64.b64decode(auth, validate=True).decode()
        except (binascii.Error, UnicodeDecodeError):
            # "from None": the decoder's message would quote the secret.
            raise _BadEntry('"auth" is not valid base64 of "username:password"') from None
        username, colon, password = decoded.partition(":")
        if not colon or not username:
            raise _BadEntry('"auth" does not decode to "username:password"')
        return username, password
    user = entry.get("username")
    secret = entry.get("password")
    if user is None and secret is None:
        return None
    if not isinstance(user, str) or not user:
        raise _BadEntry('"username" must be a non-empty string when "password" is given')
    if not isinstance(secret, str):
        raise _BadEntry('"password" must be a string when "username" is given')
    return user, secret


@dataclass(frozen=True, slots=True)
class Credential:
    """Credentials and where they came from: ``secret/NAMESPACE/NAME``, ``config`` or
    ``anonymous`` (what the audit line records; never the secret itself)."""

    source: str
    credentials: RegistryCredentials | None

    def has(self, registry: str) -> bool:
        return self.credentials is not None and self.credentials.lookup(registry) is not None


# The credential registry requests of the current task use (pod pull secrets, SPEC §9);
# unset: the client's own (SEALGATE_REGISTRY_AUTH). Tasks inherit it from their parent.
ACTIVE_CREDENTIAL: ContextVar[Credential | None] = ContextVar(
    "sealgate_registry_credential", default=None
)


@contextmanager
def using_credential(credential: Credential | None) -> Iterator[None]:
    """Registry requests inside the block authenticate with ``credential``."""
    token = ACTIVE_CREDENTIAL.set(credential)
    try:
        yield
    finally:
        ACTIVE_CREDENTIAL.reset(token)


# The credentials a request may use, in order (pod pull secrets, SPEC §9): each image
# takes the first one the registry accepts. Unset: the client's own, as before.
REQUEST_CREDENTIALS: ContextVar[tuple[Credential, ...] | None] = ContextVar(
    "sealgate_request_credentials", default=None
)


@contextmanager
def request_credentials(chain: tuple[Credential, ...] | None) -> Iterator[None]:
    token = REQUEST_CREDENTIALS.set(chain)
    try:
        yield
    finally:
        REQUEST_CREDENTIALS.reset(token)


def credentials_for(registry: str) -> tuple[Credential, ...] | None:
    """The request's credentials worth trying on ``registry``: those holding an entry for
    it, then anonymous; None when the request has no chain."""
    chain = REQUEST_CREDENTIALS.get()
    if chain is None:
        return None
    usable = tuple(c for c in chain if c.credentials is None or c.has(registry))
    return usable or (Credential("anonymous", None),)

