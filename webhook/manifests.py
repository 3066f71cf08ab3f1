"""Kubernetes manifests (multi-document YAML or JSON, ``kind: List``) as admission requests.

``sealgate check`` decides what ``kubectl apply`` would send: every object
becomes the CREATE ``AdmissionRequest`` the API server would build, through
``admission.request_from_dict`` so image extraction is the webhook's own.
"""

from __future__ import annotations

import json
from collections.abc import Iterator, Mapping
from dataclasses import dataclass, field
from typing import Any

import yaml
from yaml.constructor import ConstructorError, SafeConstructor
from yaml.nodes import MappingNode, Node, ScalarNode, SequenceNode

from webhook.admission import AdmissionRequest, request_from_dict
from webhook.errors import AdmissionError, SealgateError

CHECK_USER = "sealgate-check"


class ManifestError(SealgateError):
    """A manifest that cannot be read; the message starts ``file:line:``."""


@dataclass(frozen=True, slots=True)
class ManifestObject:
    """One Kubernetes object of a manifest, with where it was written."""

    file: str
    line: int
    api_version: str
    kind: str
    name: str | None
    namespace: str | None  # metadata.namespace as written
    body: Mapping[str, Any] = field(repr=False)

    @property
    def location(self) -> str:
        return f"{self.file}:{self.line}"

    @property
    def display_name(self) -> str:
        return f"{self.kind}/{self.name or '?'}"


def load_manifests(text: str, file: str) -> list[ManifestObject]:
    """Every object of a manifest stream; ``List`` kinds are flattened to their items."""
    try:
        documents = list(yaml.compose_all(text, Loader=yaml.SafeLoader))
    except yaml.MarkedYAMLError as exc:
        parsed = _try_json(text, file)
        if parsed is not None:
            return parsed
        mark = exc.problem_mark or exc.context_mark
        line = mark.line + 1 if mark else 1
        raise ManifestError(f"{file}:{line}: invalid YAML: {exc.problem or exc}") from exc
    except yaml.YAMLError as exc:
        raise ManifestError(f"{file}:1: invalid YAML: {exc}") from exc
    except RecursionError:  # PyYAML's composer recurses once per nesting level
        raise ManifestError(f"{file}:1: invalid YAML: nested too deeply") from None
    objects: list[ManifestObject] = []
    for node in documents:
        if node is None or (isinstance(node, ScalarNode) and node.tag.endswith(":null")):
            continue
        objects.extend(_objects(node, file))
    return objects


def _try_json(text: str, file: str) -> list[ManifestObject] | None:
    """JSON that PyYAML refuses (tabs): read it as JSON; not JSON-looking: None."""
    if not text.lstrip().startswith(("{", "[")):
        return None
    try:
        value = json.loads(text)
    except ValueError as exc:
        line = getattr(exc, "lineno", 1)
        raise ManifestError(f"{file}:{line}: invalid JSON: {exc}") from exc
    except RecursionError:
        raise ManifestError(f"{file}:1: invalid JSON: nested too deeply") from None
    return list(_objects_from_value(value, file, 1))


def _construct(node: Node, file: str) -> Any:
    try:
        return SafeConstructor().construct_object(node, deep=True)
    except ConstructorError as exc:
        line = exc.problem_mark.line + 1 if exc.problem_mark else node.start_mark.line + 1
        raise ManifestError(f"{file}:{line}: invalid YAML value: {exc.problem}") from exc
    except RecursionError:
        raise ManifestError(f"{file}:{node.start_mark.line + 1}: invalid YAML value: "
                            "nested too deeply") from None


def _objects(node: Node, file: str) -> Iterator[ManifestObject]:
    line = node.start_mark.line + 1
    value = _construct(node, file)
    if isinstance(value, dict) and _is_list(value) and isinstance(node, MappingNode):
        items = next(
            (v for k, v in node.value if isinstance(k, ScalarNode) and k.value == "items"), None
        )
        if isinstance(items, SequenceNode):
            for item in items.value:
                yield from _objects(item, file)
            return
    yield from _objects_from_value(value, file, line)


def _is_list(value: Mapping[str, Any]) -> bool:
    kind = value.get("kind")
    return isinstance(kind, str) and kind.endswith("List") and isinstance(value.get("items"), list)


def _objects_from_value(value: Any, file: str, line: int) -> Iterator[ManifestObject]:
    if isinstance(value, list):  # a JSON array of objects
        for item in value:
            yield from _objects_from_value(item, file, line)
        return
    if not isinstance(value, dict):
        raise ManifestError(f"{file}:{line}: a manifest document must be a Kubernetes object "
                            f"(a mapping), not {type(value).__name__}")
    if _is_list(value):
        for item in value["items"]:
            yield from _objects_from_value(item, file, line)
        return
    kind = value.get("kind")
    if not isinstance(kind, str) or not kind:
        raise ManifestError(f"{file}:{line}: object has no kind")
    api_version = value.get("apiVersion")
    meta = value.get("metadata")
    if meta is not None and not isinstance(meta, dict):
        raise ManifestError(f"{file}:{line}: {kind}: metadata must be a mapping")
    meta = meta or {}
    name = meta.get("name") or meta.get("generateName")
    namespace = meta.get("namespace")
    yield ManifestObject(
        file=file,
        line=line,
        api_version=api_version if isinstance(api_version, str) else "",
        kind=kind,
        name=name if isinstance(name, str) else None,
        namespace=namespace if isinstance(namespace, str) and namespace else None,
        body=value,
    )


def admission_request(
    obj: ManifestObject, *, default_namespace: str | None, index: int
) -> AdmissionRequest:
    """The CREATE request the API server would send for ``obj`` (dry run, as ``check``).

    Namespace: ``metadata.namespace``, else ``default_namespace`` (``-n``), else ``default``.
    """
    group, _, version = obj.api_version.rpartition("/")
    request = {
        "uid": f"sealgate-check-{index}",
        "kind": {"group": group, "version": version, "kind": obj.kind},
        "namespace": obj.namespace or default_namespace or "default",
        "operation": "CREATE",
        "userInfo": {"username": CHECK_USER},
        "dryRun": True,
        "object": dict(obj.body),
    }
    try:
        return request_from_dict(request)
    except AdmissionError as exc:
        raise ManifestError(f"{obj.location}: {obj.display_name}: {exc}") from exc
