"""The keyless identity policy; it lives in the pure `webhook.identity` (policy holds it)."""

from webhook.identity import Identity

__all__ = ["Identity"]
