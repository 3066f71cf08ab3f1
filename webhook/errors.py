"""One exception tree for sealgate: every failure is a SealgateError.

Edges convert these into deny messages, ``onError`` outcomes or HTTP errors;
messages are written for the person who has to act on them.
"""

from __future__ import annotations


class SealgateError(Exception):
    """Base of every error sealgate raises on purpose."""


class InvalidReferenceError(SealgateError):
    """An image reference that does not follow the Docker reference grammar."""


class PolicyError(SealgateError):
    """A policy file that cannot be loaded; the message starts ``file:line:``."""


class AdmissionError(SealgateError):
    """A request body that is not a usable AdmissionReview (HTTP 400)."""


class RegistryError(SealgateError):
    """A registry could not answer (network, 5xx, 429, auth): a check error, not a verdict."""


class RegistryAuthError(RegistryError):
    """The registry refused the credentials used, or wanted some (401/403): with pod pull
    secrets, the next credential in line is tried."""


class ManifestUnknownError(RegistryError):
    """The registry answered definitively that a manifest/tag does not exist (404)."""


class RegistryContentError(RegistryError):
    """The registry answered, with content sealgate cannot use (malformed, oversized).

    Anyone who can push to a repository can plant such content next to an image, so
    for signature and attestation material it means "not a signature", never a
    check that could not complete (which would hand the decision to onError).
    """


class DigestMismatchError(RegistryError):
    """Fetched content does not hash to the digest it was requested by."""


class VerificationError(SealgateError):
    """A signature, certificate or transparency-log entry failed verification."""


class AuditWriteError(SealgateError):
    """The audit line could not be written; the request must not be answered with a decision."""
