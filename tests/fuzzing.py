"""Shared pieces of the fuzz tests: budgets, hostile strings, an AdmissionReview generator
that can write what ``json.dumps`` cannot (duplicate keys, deep nesting), and the oracle.

Budgets: each fuzz target names its example count for CI, where examples are derandomized
(the same every run, so a merge is never failed by a new random find);
``SEALGATE_FUZZ=long`` multiplies the count by 25 and draws fresh examples each run (a
nightly or pre-release run goes deep; what it finds becomes a regression test).
Run with ``--hypothesis-show-statistics`` to see examples tried per target.
"""

from __future__ import annotations

import json
import os
import string
from dataclasses import dataclass
from typing import Any

from hypothesis import HealthCheck, settings
from hypothesis import strategies as st

LONG = os.environ.get("SEALGATE_FUZZ", "").lower() == "long"


def budget(examples: int) -> settings:
    """Hypothesis settings for one fuzz target: ``examples`` in CI, 25x under SEALGATE_FUZZ=long."""
    return settings(
        max_examples=examples * 25 if LONG else examples,
        deadline=None,  # a shared 2-core CI machine; time is bounded by max_examples
        suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large,
                               HealthCheck.filter_too_much, HealthCheck.large_base_example,
                               HealthCheck.function_scoped_fixture],
        print_blob=True,
        # CI replays the same examples every run (a fuzz find never flakes a merge); the
        # long profile explores fresh ones each time
        derandomize=not LONG,
    )


# --------------------------------------------------------------------------- strings

SURROGATES = st.sampled_from(["\ud800", "\udfff", "a\udc80b", "\ud83d"])  # lone halves
UNICODE_EDGES = st.sampled_from([
    "", " ", "\x00", "\u202e", "\ufeff", "\U0001f512", "é", "ﬁ", "İ", "\u0130", "\n", "\t",
    "\\", '"', "%", "${x}", "../..", "-", "A" * 300,
])


def texts(*, surrogates: bool = True, huge: bool = True) -> st.SearchStrategy[str]:
    """Unicode text: ordinary, edge cases, lone surrogates, very long."""
    options = [
        st.text(max_size=40),
        UNICODE_EDGES,
        st.text(alphabet=string.printable, max_size=20),
    ]
    if surrogates:
        options.append(st.builds(lambda a, s, b: a + s + b, st.text(max_size=5), SURROGATES,
                                 st.text(max_size=5)))
    if huge:
        options.append(st.integers(1_000, 200_000).map(lambda n: "x" * n))
    return st.one_of(*options)


def image_references(host: str | None = None, *, surrogates: bool = True
                     ) -> st.SearchStrategy[str]:
    """Image references, mostly plausible, some broken, some hostile."""
    component = st.from_regex(r"[a-z0-9]{1,8}([._-][a-z0-9]{1,6}){0,2}", fullmatch=True)
    path = st.lists(component, min_size=1, max_size=4).map("/".join)
    registry = st.sampled_from(
        ["", "docker.io/", "ghcr.io/", "registry.example.com:5000/", "LOCALHOST/",
         "[::1]:5000/", "127.0.0.1:1/", "index.docker.io/"] + ([f"{host}/"] if host else []))
    tag = st.one_of(st.just(""), st.from_regex(r":[A-Za-z0-9_][A-Za-z0-9_.-]{0,20}",
                                               fullmatch=True))
    digest = st.one_of(st.just(""), st.builds(lambda h: "@sha256:" + h,
                                              st.from_regex(r"[0-9a-f]{64}", fullmatch=True)),
                       st.just("@sha256:abc"), st.just("@md5:" + "0" * 32))
    plausible = st.builds(lambda r, p, t, d: r + p + t + d, registry, path, tag, digest)
    options = [plausible, plausible, texts(huge=False, surrogates=surrogates),
               st.integers(300, 5_000).map(lambda n: "r.io/" + "a" * n)]
    if surrogates:
        options.append(st.builds(lambda p, s: p + s, plausible, SURROGATES))
    return st.one_of(*options)


# --------------------------------------------------------------------------- JSON writer


@dataclass(frozen=True)
class Pairs:
    """A JSON object written with these (key, value) pairs in order, duplicates and all."""

    items: tuple[tuple[str, Any], ...]


@dataclass(frozen=True)
class Raw:
    """Literal JSON text (deep nesting that json.dumps would refuse to build)."""

    text: str


def write_json(value: Any) -> str:
    """JSON text for ``value``; ``Pairs`` and ``Raw`` write what json.dumps cannot.
    Strings are escaped ASCII, so lone surrogates travel as valid ``\\udXXX`` escapes."""
    parts: list[str] = []
    stack: list[Any] = [value]
    while stack:  # iterative: hostile values are deep
        item = stack.pop()
        if isinstance(item, Raw | _Token):
            parts.append(item.text)
        elif isinstance(item, Pairs | dict):
            pairs = item.items if isinstance(item, Pairs) else tuple(item.items())
            stack.append(_Token("}"))
            for index, (key, element) in reversed(list(enumerate(pairs))):
                stack.append(element)
                stack.append(_Token(("," if index else "") + json.dumps(key) + ":"))
            stack.append(_Token("{"))
        elif isinstance(item, list | tuple):
            stack.append(_Token("]"))
            for index, element in reversed(list(enumerate(item))):
                stack.append(element)
                if index:
                    stack.append(_Token(","))
            stack.append(_Token("["))
        else:
            parts.append(json.dumps(item))
    return "".join(parts)


@dataclass(frozen=True)
class _Token:
    text: str


def nested(depth: int) -> Raw:
    """A value nested ``depth`` levels deep."""
    return Raw('{"a":' * depth + "1" + "}" * depth if depth % 2 else "[" * depth + "]" * depth)


# --------------------------------------------------------------------------- the oracle

TEMPLATE_PATHS: dict[str, tuple[str, ...]] = {
    # written out again here, independently of webhook/admission.py
    "Pod": (),
    "Deployment": ("spec", "template"),
    "ReplicaSet": ("spec", "template"),
    "StatefulSet": ("spec", "template"),
    "DaemonSet": ("spec", "template"),
    "Job": ("spec", "template"),
    "ReplicationController": ("spec", "template"),
    "CronJob": ("spec", "jobTemplate", "spec", "template"),
}
POD_KINDS = tuple(TEMPLATE_PATHS)
OTHER_KINDS = ("ConfigMap", "Service", "Namespace", "pod", "POD", "Deployment ", "")


def images_named(kind: str, obj: Any) -> list[str]:
    """Every image string at a container path of ``obj`` read as ``kind``."""
    node = obj
    if kind == "EphemeralContainers":
        spec = obj
    else:
        for key in TEMPLATE_PATHS.get(kind, ("<not pod-bearing>",)):
            node = node.get(key) if isinstance(node, dict) else None
        spec = node.get("spec") if isinstance(node, dict) else None
    found: list[str] = []
    if isinstance(spec, dict):
        for field in ("initContainers", "containers", "ephemeralContainers"):
            containers = spec.get(field)
            if isinstance(containers, list):
                found += [c["image"] for c in containers
                          if isinstance(c, dict) and isinstance(c.get("image"), str)]
    return found


def request_kind(request: dict[str, Any]) -> str | None:
    """``request.kind.kind`` when well formed; else the object's own ``kind`` (a review
    without a usable request.kind must never be allowed without looking at its images)."""
    info = request.get("kind")
    if isinstance(info, dict) and isinstance(info.get("kind"), str) and info["kind"]:
        return str(info["kind"])
    obj = request.get("object")
    if isinstance(obj, dict) and isinstance(obj.get("kind"), str):
        return str(obj["kind"])
    return None


def images_an_enforce_policy_denies(review: Any) -> list[str]:
    """Images the fuzz policy (enforce, every namespace, nothing reachable or matched)
    must deny: images of a CREATE, or those an UPDATE adds, of a pod-bearing kind in
    a namespace. Duplicate keys read last-wins, as the API server's decoder does."""
    if not isinstance(review, dict):
        return []
    request = review.get("request")
    if not isinstance(request, dict):
        return []
    namespace, operation = request.get("namespace"), request.get("operation")
    kind = request_kind(request)
    if not (isinstance(namespace, str) and namespace) or kind is None:
        return []
    if operation not in ("CREATE", "UPDATE"):
        return []
    images = images_named(kind, request.get("object"))
    if operation == "UPDATE" and isinstance(request.get("oldObject"), dict):
        before = set(images_named(kind, request["oldObject"]))
        images = [image for image in images if image not in before]
    return images
