"""JSON Schemas (draft 2020-12) of sealgate's YAML formats, shipped as package data.

``sealgate policy schema`` prints them, so editors (yaml-language-server's
``# yaml-language-server: $schema=...``) can validate and complete policy files.
"""

from __future__ import annotations

import json
from importlib import resources
from typing import Any

SCHEMA_FILES = {
    "ImagePolicy": "imagepolicy.schema.json",
    "ImagePolicyTest": "imagepolicytest.schema.json",
}


def schema_text(kind: str = "ImagePolicy") -> str:
    """The schema of ``kind`` (ImagePolicy or ImagePolicyTest) as JSON text."""
    return resources.files(__name__).joinpath(SCHEMA_FILES[kind]).read_text(encoding="utf-8")


def load_schema(kind: str = "ImagePolicy") -> dict[str, Any]:
    schema: dict[str, Any] = json.loads(schema_text(kind))
    return schema
