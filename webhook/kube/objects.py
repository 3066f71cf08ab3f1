"""ImagePolicy objects from the cluster -> Policy, validated exactly as a policy file.

Pure: the object (a dict, as the API server returns it) is rendered back to the
YAML document a file would hold (apiVersion, kind, metadata name/labels/
annotations, spec) and loaded by ``webhook.policy``; every problem comes back
as one line, without the file:line prefix that means nothing for an object.
"""

from __future__ import annotations

import re
from collections.abc import Iterator, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import yaml

from webhook.errors import PolicyError
from webhook.policy import API_VERSION, KIND, Policy, load_policy_text

# Paths in a cluster object point nowhere the webhook can see: only absolute ones count.
_BASE_DIR = Path("/")


@dataclass(frozen=True, slots=True)
class Checked:
    """One object's verdict: its policy when valid, else every ``field: problem``."""

    name: str
    generation: int
    policy: Policy | None
    problems: tuple[str, ...]


def display_name(name: str) -> str:
    return f"imagepolicy/{name}"


def check_object(obj: Mapping[str, Any]) -> Checked:
    """Validate one ImagePolicy object as a file would be validated."""
    metadata = obj.get("metadata") if isinstance(obj.get("metadata"), Mapping) else {}
    assert isinstance(metadata, Mapping)
    name = metadata.get("name")
    generation = metadata.get("generation")
    generation = generation if isinstance(generation, int) else 0
    if not isinstance(name, str) or not name:
        return Checked("", generation, None, ("metadata.name: is required",))
    problems = list(_file_references(obj.get("spec"), "spec"))
    document: dict[str, Any] = {
        "apiVersion": obj.get("apiVersion", API_VERSION),
        "kind": obj.get("kind", KIND),
        "metadata": {"name": name, **{
            key: metadata[key] for key in ("labels", "annotations") if metadata.get(key)
        }},
        "spec": obj.get("spec"),
    }
    source = display_name(name)
    text = yaml.safe_dump(document, sort_keys=False)
    policy = None
    try:
        policies = load_policy_text(text, source, base_dir=_BASE_DIR)
    except PolicyError as exc:
        for line in str(exc).splitlines():
            problem = _strip_location(line, source)
            if problems and "cannot read key.file" in problem:
                continue  # already said: a cluster object names no file
            problems.append(problem)
    else:
        policy = policies[0] if policies else None
    if problems:
        return Checked(name, generation, None, tuple(dict.fromkeys(problems)))
    return Checked(name, generation, policy, ())


def _strip_location(line: str, source: str) -> str:
    return re.sub(rf"^{re.escape(source)}:\d+: ", "", line)


def _file_references(node: object, path: str) -> Iterator[str]:
    """``key.file`` anywhere in a spec: a cluster object carries its key inline (SPEC §9)."""
    if isinstance(node, Mapping):
        for key, value in node.items():
            child = f"{path}.{key}"
            if key == "key" and isinstance(value, Mapping) and "file" in value:
                yield (f"{child}.file: a cluster ImagePolicy cannot name a file; put the PEM "
                       f"in {child}.publicKey")
            yield from _file_references(value, child)
    elif isinstance(node, list):
        for index, item in enumerate(node):
            yield from _file_references(item, f"{path}[{index}]")
