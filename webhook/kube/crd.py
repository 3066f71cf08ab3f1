"""The ImagePolicy CustomResourceDefinition, generated from the policy JSON Schema (SPEC §9).

One model: ``webhook/schema/imagepolicy.schema.json`` is what ``sealgate policy
schema`` prints; the CRD's OpenAPI v3 schema is computed from it here, so the
two cannot drift (tests compare the chart's ``crds/`` file with this output).

Kubernetes wants a *structural* schema, so the JSON Schema is rewritten:
``$ref`` inlined, ``const`` -> one-value ``enum``, every node typed (a value
that may be of several types, like a duration or ``tlog: off``, is marked
``x-kubernetes-preserve-unknown-fields`` and left to sealgate's own validation,
which ``/validate-policy`` runs at admission), ``additionalProperties: false``
dropped (the API server prunes, and kubectl's strict field validation rejects,
unknown fields), and JSON-Schema-only keywords (``$schema``, ``examples``,
``default``) removed. Pure: no I/O beyond reading the packaged schema.
"""

from __future__ import annotations

from typing import Any

import yaml

from webhook.policy import API_VERSION, KIND
from webhook.schema import load_schema

GROUP, _, VERSION = API_VERSION.partition("/")
PLURAL = "imagepolicies"
SINGULAR = "imagepolicy"
CRD_NAME = f"{PLURAL}.{GROUP}"

_DROPPED = frozenset({"$schema", "$id", "$defs", "title", "examples", "default", "const"})
_JUNCTORS = ("oneOf", "anyOf", "allOf", "not")

_STATUS_SCHEMA: dict[str, Any] = {
    "type": "object",
    "description": "Whether this policy is in force, as sealgate last saw it.",
    "properties": {
        "observedGeneration": {
            "type": "integer",
            "format": "int64",
            "description": "The metadata.generation the Ready condition describes.",
        },
        "conditions": {
            "type": "array",
            "x-kubernetes-list-type": "map",
            "x-kubernetes-list-map-keys": ["type"],
            "items": {
                "type": "object",
                "required": ["type", "status"],
                "properties": {
                    "type": {"type": "string"},
                    "status": {"type": "string", "enum": ["True", "False", "Unknown"]},
                    "reason": {"type": "string"},
                    "message": {"type": "string"},
                    "observedGeneration": {"type": "integer", "format": "int64"},
                    "lastTransitionTime": {"type": "string", "format": "date-time"},
                },
            },
        },
    },
}


def _json_type(value: object) -> str:
    if isinstance(value, bool):
        return "boolean"
    if isinstance(value, int):
        return "integer"
    if isinstance(value, float):
        return "number"
    if isinstance(value, str):
        return "string"
    return "object"


def _node_types(node: dict[str, Any]) -> set[str]:
    """The JSON types a (resolved) node declares, from ``type``, ``const`` or ``enum``."""
    if isinstance(node.get("type"), str):
        return {node["type"]}
    if "const" in node:
        return {_json_type(node["const"])}
    return {_json_type(value) for value in node.get("enum", [])}


def _resolve(node: dict[str, Any], defs: dict[str, Any]) -> dict[str, Any]:
    """``node`` with its ``$ref`` merged in (the node's own keys win, as in 2020-12)."""
    ref = node.get("$ref")
    if not isinstance(ref, str):
        return node
    target = _resolve(defs[ref.rsplit("/", 1)[-1]], defs)
    merged = {**target, **{k: v for k, v in node.items() if k != "$ref"}}
    return merged


def _convert(
    node: dict[str, Any], defs: dict[str, Any], *, in_junctor: bool = False
) -> dict[str, Any]:
    node = _resolve(node, defs)
    out: dict[str, Any] = {}
    for key, value in node.items():
        if key in _DROPPED:
            continue
        if key == "properties":
            out[key] = {name: _convert(child, defs) for name, child in value.items()}
        elif key == "items":
            out[key] = _convert(value, defs)
        elif key == "additionalProperties":
            if isinstance(value, dict) and "properties" not in node:
                out[key] = _convert(value, defs)
            # false: structural schemas prune unknown fields instead
        elif key in _JUNCTORS:
            converted = (
                [_convert(branch, defs, in_junctor=True) for branch in value]
                if isinstance(value, list)
                else _convert(value, defs, in_junctor=True)
            )
            out[key] = converted
        else:
            out[key] = value
    if "const" in node:
        out["enum"] = [node["const"]]
    if in_junctor:
        # Structural schemas allow only value validations inside oneOf/anyOf/not.
        for key in ("type", "description", "additionalProperties", "items", "properties"):
            out.pop(key, None)
        return out
    branch_types = {
        kind
        for branch in node.get("anyOf", node.get("oneOf", []))
        if isinstance(branch, dict)
        for kind in _node_types(_resolve(branch, defs))
    }
    enum_types = {_json_type(value) for value in out.get("enum", [])}
    if len(branch_types) > 1 or len(enum_types) > 1:
        # several types allowed: untyped for the API server, sealgate validates it
        return {
            **({"description": out["description"]} if "description" in out else {}),
            "x-kubernetes-preserve-unknown-fields": True,
        }
    if "type" not in out:
        if enum_types:
            out["type"] = enum_types.pop()
        elif branch_types:
            out["type"] = branch_types.pop()
        elif "properties" in out or "additionalProperties" in out:
            out["type"] = "object"
    if branch_types and "anyOf" in out:
        # one type: keep only the branches' value validations (patterns), type outside
        out["anyOf"] = [
            {k: v for k, v in branch.items() if k != "type"} for branch in out["anyOf"]
        ]
    return out


def spec_schema() -> dict[str, Any]:
    """The OpenAPI v3 schema of an ImagePolicy's ``spec``, from the policy JSON Schema."""
    schema = load_schema("ImagePolicy")
    return _convert(schema["properties"]["spec"], schema.get("$defs", {}))


def custom_resource_definition() -> dict[str, Any]:
    """The ``imagepolicies.sealgate.dev`` CRD as a Kubernetes object."""
    schema = load_schema("ImagePolicy")
    return {
        "apiVersion": "apiextensions.k8s.io/v1",
        "kind": "CustomResourceDefinition",
        "metadata": {
            "name": CRD_NAME,
            "annotations": {
                "sealgate.dev/generated-from": "webhook/schema/imagepolicy.schema.json",
            },
        },
        "spec": {
            "group": GROUP,
            "scope": "Cluster",
            "names": {
                "kind": KIND,
                "listKind": f"{KIND}List",
                "plural": PLURAL,
                "singular": SINGULAR,
                "shortNames": ["imgpol"],
                "categories": ["sealgate"],
            },
            "versions": [
                {
                    "name": VERSION,
                    "served": True,
                    "storage": True,
                    "subresources": {"status": {}},
                    "additionalPrinterColumns": [
                        {"name": "Mode", "type": "string", "jsonPath": ".spec.mode"},
                        {
                            "name": "Ready",
                            "type": "string",
                            "jsonPath": '.status.conditions[?(@.type=="Ready")].status',
                        },
                        {"name": "Age", "type": "date",
                         "jsonPath": ".metadata.creationTimestamp"},
                    ],
                    "schema": {
                        "openAPIV3Schema": {
                            "type": "object",
                            "description": schema.get("description", ""),
                            "required": ["spec"],
                            "properties": {
                                "apiVersion": {"type": "string"},
                                "kind": {"type": "string"},
                                "metadata": {"type": "object"},
                                "spec": spec_schema(),
                                "status": _STATUS_SCHEMA,
                            },
                        }
                    },
                }
            ],
        },
    }


def crd_yaml() -> str:
    """The CRD as the YAML file the chart ships under ``crds/``."""
    header = (
        "# Generated by `sealgate policy crd` from webhook/schema/imagepolicy.schema.json.\n"
        "# Do not edit: change the schema and regenerate (tests fail when they differ).\n"
    )
    return header + yaml.safe_dump(custom_resource_definition(), sort_keys=False, width=100)
