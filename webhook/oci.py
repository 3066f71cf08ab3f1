"""OCI / Docker distribution value types shared by the registry client and verifiers."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field

OCI_MANIFEST = "application/vnd.oci.image.manifest.v1+json"
OCI_INDEX = "application/vnd.oci.image.index.v1+json"
DOCKER_MANIFEST = "application/vnd.docker.distribution.manifest.v2+json"
DOCKER_MANIFEST_LIST = "application/vnd.docker.distribution.manifest.list.v2+json"
MANIFEST_MEDIA_TYPES = (OCI_MANIFEST, OCI_INDEX, DOCKER_MANIFEST, DOCKER_MANIFEST_LIST)

COSIGN_SIMPLE_SIGNING = "application/vnd.dev.cosign.simplesigning.v1+json"
COSIGN_SIGNATURE_ANNOTATION = "dev.cosignproject.cosign/signature"
COSIGN_CERTIFICATE_ANNOTATION = "dev.sigstore.cosign/certificate"
COSIGN_CHAIN_ANNOTATION = "dev.sigstore.cosign/chain"
COSIGN_BUNDLE_ANNOTATION = "dev.sigstore.cosign/bundle"


@dataclass(frozen=True, slots=True)
class Manifest:
    """A manifest or index as fetched: raw bytes (what the digest covers) and its media type."""

    digest: str
    media_type: str
    content: bytes


@dataclass(frozen=True, slots=True)
class SignatureLayer:
    """One layer of a cosign ``sha256-<hex>.sig`` image: payload blob plus layer annotations."""

    media_type: str
    payload: bytes
    annotations: Mapping[str, str] = field(default_factory=dict)
