"""Hypothesis strategies for AdmissionReviews: well formed (every pod-bearing kind, unicode,
many containers) and hostile (missing/extra fields, wrong types, huge and surrogate strings,
deep nesting, duplicate keys). Each example is the JSON body as bytes."""

from __future__ import annotations

import uuid
from typing import Any

from hypothesis import strategies as st

from tests.fuzzing import (
    OTHER_KINDS,
    POD_KINDS,
    TEMPLATE_PATHS,
    Pairs,
    Raw,
    image_references,
    nested,
    texts,
    write_json,
)


def rarely(draw: st.DrawFn, n: int) -> bool:
    """True about once in ``n`` draws (the usual case first, so examples shrink to it)."""
    return bool(draw(st.sampled_from([False] * (n - 1) + [True])))


UIDS = st.builds(lambda: str(uuid.uuid4()))
WRONG_TYPES = st.one_of(st.none(), st.booleans(), st.integers(), st.floats(allow_nan=False),
                        st.just([]), st.just({}), st.just("text"), st.just([1, "a"]))
CONTAINER_FIELDS = ("containers", "initContainers", "ephemeralContainers")


@st.composite
def containers(draw: st.DrawFn, *, hostile: bool) -> list[Any]:
    count = draw(st.one_of(st.integers(0, 4), st.integers(0, 4), st.integers(5, 400)))
    images = draw(st.lists(image_references(surrogates=hostile and rarely(draw, 4)),
                           min_size=1, max_size=8))
    result: list[Any] = []
    for index in range(count):
        container: dict[str, Any] = {"name": f"c{index}", "image": images[index % len(images)]}
        result.append(container)
        if index >= 8:  # many containers: same shapes, cheap to draw
            continue
        if hostile and rarely(draw, 40):
            container["image"] = draw(WRONG_TYPES)
        if hostile and rarely(draw, 60):
            result[-1] = draw(WRONG_TYPES)
        elif rarely(draw, 10):
            container["extra"] = draw(st.one_of(texts(surrogates=hostile), st.just(nested(50))))
    return result


@st.composite
def pod_spec(draw: st.DrawFn, *, hostile: bool) -> Any:
    spec: dict[str, Any] = {}
    for field in draw(st.lists(st.sampled_from(CONTAINER_FIELDS), min_size=1, max_size=3,
                               unique=True)):
        spec[field] = draw(containers(hostile=hostile))
        if hostile and rarely(draw, 30):
            spec[field] = draw(WRONG_TYPES)
    if draw(st.booleans()):
        spec["nodeSelector"] = {draw(texts(huge=False, surrogates=hostile)):
                                draw(texts(huge=False, surrogates=hostile))}
    if hostile and rarely(draw, 10):
        # a duplicate "containers": the decoder keeps the last one, as the API server's does
        first = draw(containers(hostile=False))
        return Pairs((("containers", first), *spec.items()))
    return spec


@st.composite
def workload(draw: st.DrawFn, kind: str, *, hostile: bool) -> Any:
    spec = draw(pod_spec(hostile=hostile))
    metadata: dict[str, Any] = {"name": draw(st.one_of(
        st.just("web"), st.just("web"), texts(surrogates=hostile, huge=hostile)))}
    if rarely(draw, 5):
        metadata["annotations"] = {"sealgate.dev/break-glass": draw(texts(
            surrogates=hostile and rarely(draw, 4)))}
    template: Any = {"metadata": metadata, "spec": spec}
    if kind == "EphemeralContainers":
        template = {"metadata": metadata, **(spec if isinstance(spec, dict) else {})}
    for key in reversed(TEMPLATE_PATHS.get(kind, ())):
        template = {key: template}
        if hostile and rarely(draw, 25):
            template = draw(WRONG_TYPES)
    if isinstance(template, dict):
        template = {"apiVersion": "v1", "kind": kind, "metadata": metadata, **template}
    return template


@st.composite
def well_formed_reviews(draw: st.DrawFn) -> tuple[bytes, Any]:
    """An AdmissionReview the API server could send (all types right), in any unicode."""
    kind = draw(st.sampled_from(("Pod", *OTHER_KINDS[:3], "EphemeralContainers", *POD_KINDS)))
    operation = draw(st.sampled_from(
        ["CREATE"] * 3 + ["UPDATE", "DELETE", "CONNECT", "UPDATE", "CREATE"]))
    request: dict[str, Any] = {
        "uid": draw(st.one_of(st.builds(lambda: str(uuid.uuid4())),
                              texts(surrogates=False, huge=False).filter(bool))),
        "kind": {"group": "", "version": "v1", "kind": kind},
        "operation": operation,
        "namespace": draw(st.sampled_from(["prod", "prod", "prod", "team-a", "kube-system",
                                           "ns-\u00e9\U0001f512", ""])),
        "userInfo": {"username": draw(texts(surrogates=False, huge=False)),
                     "groups": ["system:authenticated"]},
        "dryRun": draw(st.booleans()),
        "object": draw(workload(kind, hostile=False)),
    }
    if kind == "EphemeralContainers" or rarely(draw, 10):
        request["subResource"] = "ephemeralcontainers"
    if operation == "UPDATE" and draw(st.booleans()):
        request["oldObject"] = draw(workload(kind, hostile=False))
    review = {"apiVersion": "admission.k8s.io/v1", "kind": "AdmissionReview", "request": request}
    return write_json(review).encode(), review


def _mutate(draw: st.DrawFn, value: dict[str, Any], keys: tuple[str, ...]) -> Any:
    """Remove a field, give it a wrong type, a hostile string, or duplicate it."""
    key = draw(st.sampled_from(keys))
    action = draw(st.sampled_from(["drop", "type", "text", "dup", "extra", "nest"]))
    if action == "drop":
        value.pop(key, None)
    elif action == "type":
        value[key] = draw(WRONG_TYPES)
    elif action == "text":
        value[key] = draw(texts())
    elif action == "dup":
        return Pairs((*value.items(), (key, draw(st.one_of(WRONG_TYPES, texts())))))
    elif action == "extra":
        value[draw(texts(huge=False))] = draw(st.one_of(WRONG_TYPES, texts()))
    else:
        value[key] = nested(draw(st.sampled_from([10, 900, 990, 3000, 100_000])))
    return value


@st.composite
def hostile_reviews(draw: st.DrawFn) -> bytes:
    """Reviews with fields missing, of wrong types, hostile strings, deep nesting, duplicate
    keys; or not a review at all."""
    if rarely(draw, 20):
        return draw(st.one_of(st.binary(max_size=200), st.sampled_from([
            b"", b"null", b"[]", b"{}", b"\xff\xfe{", b'{"kind":"AdmissionReview"', b"1e99999",
            b'"\\ud800"', nested(100_000).text.encode()])))
    # sampled_from favours its first and last elements: keep the odd ones in the middle
    kind = draw(st.sampled_from(("Pod", *OTHER_KINDS, "EphemeralContainers", *POD_KINDS)))
    request: dict[str, Any] = {
        "uid": draw(UIDS if not rarely(draw, 6) else texts()),
        "kind": draw(st.sampled_from([{"group": "", "version": "v1", "kind": kind}] * 6 + [
            None, "Pod", {}, {"kind": None}, {"kind": 7}, {"group": "apps"}]
            + [{"group": "", "version": "v1", "kind": kind}] * 6)),
        "operation": draw(st.sampled_from(["CREATE", "DELETE", "CONNECT", "UPDATE", "CREATE"])
                          if not rarely(draw, 8) else texts(huge=False)),
        "namespace": draw(st.just("prod") if not rarely(draw, 4) else texts()),
        "userInfo": {"username": draw(st.just("alice") if not rarely(draw, 4) else texts())},
        "object": draw(workload(kind, hostile=True)),
    }
    if draw(st.booleans()):
        request["oldObject"] = draw(st.one_of(workload(kind, hostile=True), WRONG_TYPES))
    if rarely(draw, 4):
        request["name"] = draw(texts())
    if rarely(draw, 5):
        request["subResource"] = draw(st.one_of(texts(huge=False), WRONG_TYPES))
    if rarely(draw, 15):
        request.pop("kind")
    mutated_request: Any = request
    for _ in range(draw(st.sampled_from([0, 0, 0, 0, 1, 1, 2, 3]))):
        if isinstance(mutated_request, dict):
            mutated_request = _mutate(draw, mutated_request, tuple(request) or ("uid",))
    review: Any = {"apiVersion": "admission.k8s.io/v1", "kind": "AdmissionReview",
                   "request": mutated_request}
    if rarely(draw, 10):
        review = _mutate(draw, review, ("apiVersion", "kind", "request"))
    if rarely(draw, 15) and isinstance(review, dict):
        review["padding"] = Raw('"' + "p" * draw(st.integers(1, 3_200_000)) + '"')
    return write_json(review).encode()
