"""The OCI distribution registry client (SPEC §4), by concern:

- ``credentials``: docker ``config.json`` credentials per registry host;
- ``auth``: answering ``WWW-Authenticate`` challenges (bearer tokens, basic);
- ``client``: ``RegistryClient`` — requests, retries, per-registry limits,
  manifests, blobs and cosign's attached ``.sig`` / ``.att`` images;
- ``referrers``: the OCI 1.1 referrers API, its tag schema, sigstore bundles;
- ``content``: reading answers within limits and checking them against digests.

The names below are the package's interface; import them from ``webhook.registry``.
"""

from webhook.registry.auth import DEFAULT_TOKEN_TTL
from webhook.registry.client import RegistryClient
from webhook.registry.content import MAX_BLOB_BYTES, MAX_MANIFEST_BYTES, MAX_SIGNATURE_LAYERS
from webhook.registry.credentials import (
    ACTIVE_CREDENTIAL,
    REQUEST_CREDENTIALS,
    Credential,
    RegistryCredentials,
    credentials_for,
    request_credentials,
    using_credential,
)
from webhook.registry.referrers import NoBundleLayerError

__all__ = [
    "ACTIVE_CREDENTIAL",
    "DEFAULT_TOKEN_TTL",
    "MAX_BLOB_BYTES",
    "MAX_MANIFEST_BYTES",
    "MAX_SIGNATURE_LAYERS",
    "REQUEST_CREDENTIALS",
    "Credential",
    "NoBundleLayerError",
    "RegistryClient",
    "RegistryCredentials",
    "credentials_for",
    "request_credentials",
    "using_credential",
]
