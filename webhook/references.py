"""Docker image references: parsing and normalisation (pure).

Follows the grammar of github.com/distribution/reference:

    reference  := name [ ":" tag ] [ "@" digest ]
    name       := [domain "/"] path-component ["/" path-component]*
    domain     := host [":" port]

A first component is a registry host when it contains "." or ":" or is
"localhost" (or is an IPv6 literal in brackets); otherwise the image lives on
Docker Hub, where one-component names are in ``library/``.
"""

from __future__ import annotations

import functools
import re
from dataclasses import dataclass

from webhook.errors import InvalidReferenceError

DOCKER_HUB = "docker.io"
_HUB_ALIASES = frozenset({"docker.io", "index.docker.io", "registry-1.docker.io"})

_PATH_COMPONENT = re.compile(r"[a-z0-9]+(?:(?:[._]|__|-+)[a-z0-9]+)*")
_DOMAIN_COMPONENT = r"(?:[a-zA-Z0-9]|[a-zA-Z0-9][a-zA-Z0-9-]*[a-zA-Z0-9])"
_DOMAIN = re.compile(
    # IPv6 literals: compressed or full hex only; IPv4-mapped forms (with ".") are excluded,
    # as in distribution/reference.
    rf"(?:{_DOMAIN_COMPONENT}(?:\.{_DOMAIN_COMPONENT})*|\[[0-9A-Fa-f:]+\])(?::[0-9]{{1,5}})?"
)
# re.ASCII: Go's \w is [0-9A-Za-z_]; Python's would also accept non-ASCII letters.
_TAG = re.compile(r"[\w][\w.-]{0,127}", re.ASCII)
# A bare 64-hex string is an image ID to container runtimes, never a repository name.
_IDENTIFIER = re.compile(r"[a-f0-9]{64}")
_DIGEST = re.compile(r"[a-z0-9]+(?:[+._-][a-z0-9]+)*:[a-zA-Z0-9=_-]{32,}")
_SHA256_HEX = re.compile(r"[0-9a-f]{64}")
_SHA512_HEX = re.compile(r"[0-9a-f]{128}")
_MAX_NAME_LENGTH = 255


@dataclass(frozen=True, slots=True)
class ImageReference:
    """A normalised image reference.

    ``registry`` is the host (``docker.io`` for Docker Hub), ``repository`` the
    path on it (``library/nginx``). ``tag`` is ``latest`` when the reference
    had neither tag nor digest; a reference with only a digest has no tag.
    """

    registry: str
    repository: str
    tag: str | None = None
    digest: str | None = None

    @property
    def name(self) -> str:
        """Normalised name without tag or digest, what policy patterns match."""
        return f"{self.registry}/{self.repository}"

    def __str__(self) -> str:
        text = self.name
        if self.tag is not None:
            text += f":{self.tag}"
        if self.digest is not None:
            text += f"@{self.digest}"
        return text

    def with_digest(self, digest: str) -> ImageReference:
        """The same image pinned to ``digest`` (the tag is kept for readability)."""
        return ImageReference(self.registry, self.repository, self.tag, digest)

    def pinned(self, digest: str) -> str:
        """``name@digest``: the form deny messages and signatures talk about."""
        return f"{self.name}@{digest}"


def _is_domain(first: str) -> bool:
    # distribution/reference splitDockerDomain: a first component with ".", ":" or an
    # uppercase letter, or "localhost", names a registry.
    return (
        "." in first
        or ":" in first
        or first == "localhost"
        or first.startswith("[")
        or first.lower() != first
    )


def split_domain(name: str) -> tuple[str, str]:
    """Split a name into (registry, repository) by the Docker rules, without validation."""
    first, sep, rest = name.partition("/")
    if sep and _is_domain(first):
        # Host names are case-insensitive: "Registry.Example.com/x" pulls from the same
        # registry as "registry.example.com/x", so it must match the same policy rules.
        # (A single label that is a host only because of its capitals, like "Foo", keeps
        # them: lowercased it would read as a Docker Hub namespace.)
        host = first.lower() if _is_domain(first.lower()) else first
        # ":443" is the HTTPS default: "host:443/x" is the same registry as "host/x".
        host = host.removesuffix(":443") if "." in host or host.startswith("[") else host
        registry = DOCKER_HUB if host in _HUB_ALIASES else host
        path = rest
    else:
        registry = DOCKER_HUB
        path = name
    if registry == DOCKER_HUB and "/" not in path:
        path = f"library/{path}"
    return registry, path


def validate_digest(digest: str) -> str:
    """Check a ``algorithm:hex`` digest; sha256 and sha512 must have the right length."""
    if not _DIGEST.fullmatch(digest):
        raise InvalidReferenceError(f"invalid digest {digest!r}: expected algorithm:hex")
    algorithm, _, encoded = digest.partition(":")
    if algorithm == "sha256" and not _SHA256_HEX.fullmatch(encoded):
        raise InvalidReferenceError(
            f"invalid digest {digest!r}: sha256 needs 64 lowercase hex characters"
        )
    if algorithm == "sha512" and not _SHA512_HEX.fullmatch(encoded):
        raise InvalidReferenceError(
            f"invalid digest {digest!r}: sha512 needs 128 lowercase hex characters"
        )
    if algorithm not in ("sha256", "sha512"):
        raise InvalidReferenceError(
            f"invalid digest {digest!r}: unsupported algorithm {algorithm!r}"
        )
    return digest


def parse_reference(text: str) -> ImageReference:
    """Parse and normalise an image reference; raise InvalidReferenceError naming the problem.

    Memoised (references are immutable values): every review of a rollout names the
    same few images, and the warm path should not parse them again.
    """
    if not isinstance(text, str):
        raise InvalidReferenceError("empty image reference")
    return _parse_reference(text)


@functools.lru_cache(maxsize=4096)
def _parse_reference(text: str) -> ImageReference:
    if not text:
        raise InvalidReferenceError("empty image reference")
    if text != text.strip() or any(c.isspace() for c in text):
        raise InvalidReferenceError(f"invalid image reference {text!r}: contains whitespace")
    if _IDENTIFIER.fullmatch(text):
        raise InvalidReferenceError(
            f"invalid image reference {text!r}: cannot specify 64-byte hexadecimal strings"
        )
    remainder, at, digest = text.partition("@")
    if at:
        validate_digest(digest)
        digest_value: str | None = digest
    else:
        digest_value = None
    # A tag is after the last ":" that follows the last "/" (a port is before a "/").
    tag: str | None = None
    last_slash = remainder.rfind("/")
    colon = remainder.rfind(":")
    if colon > last_slash:
        remainder, tag = remainder[:colon], remainder[colon + 1 :]
        if not _TAG.fullmatch(tag):
            raise InvalidReferenceError(f"invalid image reference {text!r}: bad tag {tag!r}")
    if not remainder:
        raise InvalidReferenceError(f"invalid image reference {text!r}: missing repository name")
    registry, path = _validate_name(remainder, text)
    if tag is None and digest_value is None:
        tag = "latest"
    return ImageReference(registry, path, tag, digest_value)


def _validate_name(name: str, original: str) -> tuple[str, str]:
    first, sep, rest = name.partition("/")
    if sep and _is_domain(first):
        if not _DOMAIN.fullmatch(first):
            raise InvalidReferenceError(
                f"invalid image reference {original!r}: bad registry host {first!r}"
            )
        path_text = rest
    else:
        path_text = name
    for component in path_text.split("/"):
        if not component:
            raise InvalidReferenceError(
                f"invalid image reference {original!r}: empty path component"
            )
        if not _PATH_COMPONENT.fullmatch(component):
            reason = (
                "repository names must be lowercase"
                if component.lower() != component
                else f"bad path component {component!r}"
            )
            raise InvalidReferenceError(f"invalid image reference {original!r}: {reason}")
    registry, path = split_domain(name)
    # The limit applies to the normalised name (distribution/reference checks it after
    # adding docker.io/library/), so that str(parse_reference(x)) parses again.
    if len(registry) + 1 + len(path) > _MAX_NAME_LENGTH:
        raise InvalidReferenceError(
            f"invalid image reference {original!r}: name longer than {_MAX_NAME_LENGTH} characters"
        )
    return registry, path
