"""Image-name glob patterns (pure): ``*`` within one path segment, ``**`` across segments.

Patterns are normalised like references (SPEC §8): ``nginx`` means
``docker.io/library/nginx``; a pattern with a tag or digest is an error.
"""

from __future__ import annotations

import fnmatch
import re
from dataclasses import dataclass, field

from webhook.references import split_domain

_GLOB_CHARS = frozenset("*?[")
# A character class: [abc], [a-z], [!a-z] (fnmatch style).
_CLASS = re.compile(r"\[(!?)([^\]/]+)\]")


class PatternError(ValueError):
    """A malformed glob; the policy loader adds file and line."""


@dataclass(frozen=True, slots=True)
class ImagePattern:
    """A compiled image pattern; ``text`` is the normalised form, ``specificity`` its literals."""

    text: str
    specificity: int
    _regex: re.Pattern[str] = field(compare=False, repr=False)

    def matches(self, name: str) -> bool:
        """Does the normalised image name (no tag/digest) match?"""
        return self._regex.fullmatch(name) is not None


def compile_image_pattern(text: str) -> ImagePattern:
    """Normalise and compile an image pattern; raise PatternError naming the problem."""
    if not text or any(c.isspace() for c in text):
        raise PatternError(f"invalid image pattern {text!r}: empty or contains whitespace")
    if "@" in text:
        raise PatternError(f"invalid image pattern {text!r}: patterns must not carry a digest")
    last_segment = text.rsplit("/", 1)[-1]
    if ":" in last_segment:  # a port is in the first segment, a tag in the last
        raise PatternError(f"invalid image pattern {text!r}: patterns must not carry a tag")
    first, sep, rest = text.partition("/")
    if text == "**" or (sep and first in ("*", "**")):
        normalised = text  # any registry
    elif sep and rest == "**":
        # "docker.io/**" is all of Docker Hub, not only "library/" (split_domain would add it).
        normalised = f"{split_domain(text)[0]}/**"
    else:
        registry, path = split_domain(text)
        normalised = f"{registry}/{path}"
    regex = _to_regex(normalised, text)
    literals = sum(1 for c in re.sub(r"\[[^\]]*\]", "", normalised) if c not in _GLOB_CHARS)
    return ImagePattern(normalised, literals, regex)


def _to_regex(pattern: str, original: str) -> re.Pattern[str]:
    parts: list[str] = []
    segments = pattern.split("/")
    for index, segment in enumerate(segments):
        if not segment:
            raise PatternError(f"invalid image pattern {original!r}: empty path segment")
        if segment == "**":
            # one or more whole segments
            parts.append(r"[^/]+(?:/[^/]+)*")
        elif "**" in segment:
            raise PatternError(
                f"invalid image pattern {original!r}: '**' must be a whole path segment"
            )
        else:
            parts.append(_segment_regex(segment, original))
        if index < len(segments) - 1:
            parts.append("/")
    try:
        return re.compile("".join(parts))
    except re.error as exc:  # defensive: a class body _class_body did not foresee
        raise PatternError(f"invalid image pattern {original!r}: {exc}") from exc


def _segment_regex(segment: str, original: str) -> str:
    out: list[str] = []
    i = 0
    while i < len(segment):
        c = segment[i]
        if c == "*":
            out.append("[^/]*")
        elif c == "?":
            out.append("[^/]")
        elif c == "[":
            m = _CLASS.match(segment, i)
            if m is None:
                raise PatternError(
                    f"invalid image pattern {original!r}: unclosed or empty '[' character class"
                )
            negate, body = m.groups()
            out.append(f"[{'^' if negate else ''}{_class_body(body, original)}]")
            i = m.end()
            continue
        elif c == "]":
            raise PatternError(f"invalid image pattern {original!r}: unmatched ']'")
        else:
            out.append(re.escape(c))
        i += 1
    return "".join(out)


def _class_body(body: str, original: str) -> str:
    # Every character is escaped (Python reads "[[", "--", "&&", "~~", "||" in a set as
    # future set syntax and warns); only "a-z" ranges keep their "-".
    out: list[str] = []
    i = 0
    while i < len(body):
        if i + 2 < len(body) and body[i + 1] == "-":
            low, high = body[i], body[i + 2]
            if low > high:
                raise PatternError(
                    f"invalid image pattern {original!r}: bad character range {low}-{high}"
                )
            out.append(f"{re.escape(low)}-{re.escape(high)}")
            i += 3
        else:
            out.append(re.escape(body[i]))
            i += 1
    return "".join(out)


def validate_namespace_glob(text: str) -> str:
    """Check a namespace glob (fnmatch syntax on DNS-label names)."""
    if not text or not re.fullmatch(r"[a-z0-9*?\[\]!-]+", text):
        raise PatternError(
            f"invalid namespace pattern {text!r}: use lowercase letters, digits, '-' and globs"
        )
    depth = 0
    for i, c in enumerate(text):
        if c == "[":
            if depth:
                raise PatternError(f"invalid namespace pattern {text!r}: nested '['")
            if text.startswith(("]", "!]"), i + 1):
                # fnmatch would read "[]" / "[!]" as literal text no namespace contains.
                raise PatternError(f"invalid namespace pattern {text!r}: empty '[]'")
            depth = 1
        elif c == "!" and not depth:
            # A leading "!" looks like negation but fnmatch reads it literally.
            raise PatternError(
                f"invalid namespace pattern {text!r}: '!' negates only right after '['; "
                "use namespaces.exclude to leave namespaces out"
            )
        elif c == "]":
            if not depth:
                raise PatternError(f"invalid namespace pattern {text!r}: unmatched ']'")
            depth = 0
    if depth:
        raise PatternError(f"invalid namespace pattern {text!r}: unclosed '['")
    return text


def namespace_matches(pattern: str, namespace: str) -> bool:
    """fnmatch (case-sensitive) of a namespace glob against a namespace name."""
    return fnmatch.fnmatchcase(namespace, pattern)
