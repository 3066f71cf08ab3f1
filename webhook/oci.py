"""OCI / Docker distribution value types shared by the registry client and verifiers."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field

OCI_MANIFEST = "application/vnd.oci.image.manifest.v1+json"
OCI_INDEX = "application/vnd.oci.image.index.v1+json"
DOCKER_MANIFEST = "application/vnd.docker.distribution.manifest.v2+json"
DOCKER_MANIFEST_LIST = "application/vnd.docker.distribution.manifest.list.v2+json"
MANIFEST_MEDIA_TYPES = (OCI_MANIFEST, OCI_INDEX, DOCKER_MANIFEST, DOCKER_MANIFEST_LIST)

# cosign's vulnerability-scan attestation predicate (`cosign attest --type vuln`)
COSIGN_VULN_PREDICATE = "https://cosign.sigstore.dev/attestation/vuln/v1"
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


# OCI 1.1 artifacts, the referrers API and cosign's attachments (SPEC §4).
OCI_EMPTY = "application/vnd.oci.empty.v1+json"
OCI_EMPTY_DIGEST = "sha256:44136fa355b3678a1146ad16f7e8649e94fb4fc21fe77e8310c060f61caaff8a"
SIGSTORE_BUNDLE_V03 = "application/vnd.dev.sigstore.bundle.v0.3+json"
# Older spellings of the bundle media type (protobuf-specs); cosign v3 writes the v0.3 one.
SIGSTORE_BUNDLE_MEDIA_TYPES = (
    SIGSTORE_BUNDLE_V03,
    "application/vnd.dev.sigstore.bundle+json;version=0.3",
    "application/vnd.dev.sigstore.bundle+json;version=0.2",
    "application/vnd.dev.sigstore.bundle+json;version=0.1",
)
DSSE_ENVELOPE = "application/vnd.dsse.envelope.v1+json"
IN_TOTO_PAYLOAD_TYPE = "application/vnd.in-toto+json"
# Annotations cosign v3 puts on a bundle referrer manifest.
BUNDLE_PREDICATE_TYPE_ANNOTATION = "dev.sigstore.bundle.predicateType"
BUNDLE_CONTENT_ANNOTATION = "dev.sigstore.bundle.content"
# The predicateType annotation cosign puts on legacy .att layers.
COSIGN_PREDICATE_TYPE_ANNOTATION = "predicateType"


@dataclass(frozen=True, slots=True)
class Descriptor:
    """An OCI content descriptor, as listed by the referrers API or an index.

    ``artifact_type`` is the referrer manifest's ``artifactType`` (or its config media
    type, as the OCI spec lets registries fill it in); empty when unknown.
    """

    media_type: str
    digest: str
    size: int
    artifact_type: str = ""
    annotations: Mapping[str, str] = field(default_factory=dict)
