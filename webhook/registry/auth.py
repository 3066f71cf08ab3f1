"""Answering registry authentication challenges: bearer tokens and basic auth (SPEC §4).

One Authenticator per RegistryClient holds the tokens it fetched (per registry and
scope, until shortly before they expire) and remembers registries that challenged
with Basic, so later requests send credentials up front. Tokens and passwords never
appear in an error message.
"""

from __future__ import annotations

import base64
import json
import re
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from urllib.parse import urlsplit

import httpx

from webhook.errors import RegistryAuthError, RegistryError
from webhook.references import ImageReference
from webhook.registry.content import _describe, _prune_expiring, _read_capped
from webhook.registry.credentials import ACTIVE_CREDENTIAL, RegistryCredentials

# Docker's token spec: a token without expires_in lives 60 s.
DEFAULT_TOKEN_TTL = 60.0
# Drop cached tokens a little before they expire, so a request never races the expiry.
_TOKEN_EXPIRY_MARGIN = 5.0
# A token claiming to live longer than a day is kept a day (and huge numbers stay floats).
_MAX_TOKEN_TTL = 86_400.0
# Token answers are a few KiB of JSON; a realm sending more is not read to its end.
_MAX_TOKEN_BYTES = 1024 * 1024
_CHALLENGE_PARAM = re.compile(r'\s*([A-Za-z_][\w-]*)\s*=\s*("(?:[^"\\]|\\.)*"|[^,\s]*)\s*,?')


@dataclass(frozen=True, slots=True)
class _Challenge:
    scheme: str  # lowercase: "bearer" | "basic" | other
    params: Mapping[str, str]


def _token_key(registry: str, scope: str) -> tuple[str, str, str]:
    active = ACTIVE_CREDENTIAL.get()
    return registry, scope, active.source if active is not None else ""


class Authenticator:
    """Authorization header values for one client's requests, and the state behind them."""

    def __init__(
        self,
        http: httpx.AsyncClient,
        *,
        credentials: RegistryCredentials | None,
        insecure: frozenset[str],
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self._http = http
        self._credentials = credentials
        self._insecure = insecure
        self._clock = clock
        # (registry, scope, credential source) -> (token, monotonic expiry): a token got
        # with one namespace's pull secret is never used for another credential
        self.tokens: dict[tuple[str, str, str], tuple[str, float]] = {}
        # registries that challenged with Basic: send credentials up front next time
        self._basic: set[str] = set()

    def forget(self, registry: str, scope: str) -> None:
        """Drop a cached token the registry no longer takes."""
        self.tokens.pop(_token_key(registry, scope), None)

    def known_authorization(self, registry: str, scope: str) -> str | None:
        cached = self.tokens.get(_token_key(registry, scope))
        if cached is not None:
            token, expiry = cached
            if self._clock() < expiry:
                return f"Bearer {token}"
            del self.tokens[_token_key(registry, scope)]
        if registry in self._basic:
            return self._basic_authorization(registry)
        return None

    def has_credentials(self, registry: str) -> bool:
        return self._credentials is not None and self._credentials.lookup(registry) is not None

    def _lookup(self, registry: str) -> tuple[str, str] | None:
        """The credentials in use: the active credential's (pod pull secrets), else ours."""
        active = ACTIVE_CREDENTIAL.get()
        credentials = active.credentials if active is not None else self._credentials
        return credentials.lookup(registry) if credentials is not None else None

    def _basic_authorization(self, registry: str) -> str | None:
        creds = self._lookup(registry)
        if creds is None:
            return None
        return "Basic " + base64.b64encode(f"{creds[0]}:{creds[1]}".encode()).decode()

    async def authorize(
        self, ref: ImageReference, headers: httpx.Headers, scope: str, what: str
    ) -> str:
        """Answer a 401's ``WWW-Authenticate`` challenge with an Authorization header value."""
        challenges = [
            challenge
            for value in headers.get_list("www-authenticate")
            if (challenge := _parse_challenge(value)) is not None
        ]
        by_scheme = {challenge.scheme: challenge for challenge in challenges}
        if "bearer" in by_scheme:
            token = await self._fetch_token(ref, by_scheme["bearer"], scope, what)
            return f"Bearer {token}"
        if "basic" in by_scheme:
            authorization = self._basic_authorization(ref.registry)
            if authorization is None:
                raise RegistryAuthError(
                    f"registry {ref.registry} requires credentials for repository "
                    f"{ref.repository} ({what}); none are configured for {ref.registry}"
                )
            self._basic.add(ref.registry)
            return authorization
        offered = ", ".join(sorted(by_scheme)) or "none"
        raise RegistryError(
            f"registry {ref.registry} answered HTTP 401 for {what} without a usable "
            f"authentication challenge (offered: {offered})"
        )

    async def _fetch_token(
        self, ref: ImageReference, challenge: _Challenge, scope: str, what: str
    ) -> str:
        realm = challenge.params.get("realm", "")
        realm_url = urlsplit(realm)
        if realm_url.scheme not in ("http", "https") or not realm_url.netloc:
            raise RegistryError(
                f"registry {ref.registry} sent an unusable token realm for {what}"
            )
        params = {"scope": challenge.params.get("scope") or scope}
        if challenge.params.get("service"):
            params["service"] = challenge.params["service"]
        creds = self._lookup(ref.registry)
        # Never send the password in clear text to a host the operator did not mark insecure.
        if creds is not None and realm_url.scheme == "http" and (
            realm_url.netloc not in self._insecure
        ):
            creds = None
        token_what = f"token for repository {ref.repository} from {realm_url.netloc}"
        try:
            async with self._http.stream(
                "GET", realm, params=params, auth=creds, follow_redirects=True
            ) as response:
                status = response.status_code
                content = (
                    await _read_capped(response, _MAX_TOKEN_BYTES, ref, token_what)
                    if status == 200
                    else b""
                )
        except httpx.TimeoutException as exc:
            raise RegistryError(
                f"registry {ref.registry}: timed out fetching a {token_what} "
                f"({type(exc).__name__})"
            ) from exc
        except httpx.HTTPError as exc:
            raise RegistryError(
                f"registry {ref.registry}: could not fetch a {token_what}: {_describe(exc)}"
            ) from exc
        if status in (401, 403):
            hint = "credentials were rejected" if creds else "anonymous access was refused"
            raise RegistryAuthError(
                f"registry {ref.registry}: {hint} fetching a {token_what} (HTTP {status})"
            )
        if status != 200:
            raise RegistryError(
                f"registry {ref.registry}: HTTP {status} fetching a {token_what}"
            )
        try:
            body = json.loads(content)
        except (ValueError, UnicodeDecodeError, RecursionError) as exc:
            raise RegistryError(
                f"registry {ref.registry}: the {token_what} is not JSON"
            ) from exc
        token = (body.get("token") or body.get("access_token")) if isinstance(body, dict) else None
        if not isinstance(token, str) or not token:
            raise RegistryError(f"registry {ref.registry}: no token in the {token_what}")
        ttl = body.get("expires_in")
        lifetime = (
            float(min(ttl, _MAX_TOKEN_TTL))
            if isinstance(ttl, int | float) and not isinstance(ttl, bool) and ttl > 0
            else DEFAULT_TOKEN_TTL
        )
        expiry = self._clock() + max(lifetime - _TOKEN_EXPIRY_MARGIN, lifetime / 2)
        _prune_expiring(self.tokens, lambda cached: cached[1], self._clock())
        self.tokens[_token_key(ref.registry, scope)] = (token, expiry)
        return token


def _parse_challenge(value: str) -> _Challenge | None:
    """``Bearer realm="…",service="…",scope="…"`` -> _Challenge (None if unparsable)."""
    scheme, _, rest = value.strip().partition(" ")
    if not scheme:
        return None
    params: dict[str, str] = {}
    for match in _CHALLENGE_PARAM.finditer(rest):
        key, raw = match.group(1), match.group(2)
        if raw.startswith('"') and raw.endswith('"') and len(raw) >= 2:
            raw = re.sub(r"\\(.)", r"\1", raw[1:-1])
        params[key.lower()] = raw
    return _Challenge(scheme.lower(), params)
