"""RFC 3161 timestamps: when a signature existed, as a timestamp authority (TSA) vouches.

The CMS signature, the TSA certificate chain at the token's time (to the given roots,
with the intermediates the token carries) and the critical timeStamping EKU of the TSA
certificate are checked by ``rfc3161-client`` (which sigstore-python uses as well); we
check that the token's message imprint is the hash of what it claims to timestamp.

Revocation of TSA certificates is not checked: sealgate runs offline (no CRL or OCSP
fetch on the admission path). Trust in a TSA is the presence of its root in the
policy; to withdraw it, remove the root.
"""

from __future__ import annotations

import re
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime, timedelta

from cryptography import x509
from rfc3161_client import TimeStampResponse, VerifierBuilder, decode_timestamp_response
from rfc3161_client.errors import VerificationError as TimestampVerificationError

from webhook.errors import VerificationError

MAX_TOKEN_BYTES = 64 * 1024


@dataclass(frozen=True, slots=True)
class Timestamp:
    """A verified timestamp: the TSA's time and its stated accuracy."""

    time: datetime
    accuracy: timedelta

    @property
    def earliest(self) -> datetime:
        return self.time - self.accuracy

    @property
    def latest(self) -> datetime:
        return self.time + self.accuracy


def verify_timestamp_token(
    token: bytes, message: bytes, roots: Sequence[x509.Certificate]
) -> Timestamp:
    """Verify a bare RFC 3161 TimeStampToken (CMS ContentInfo) over ``message``.

    VerificationError naming the problem when the token is not a token, does not chain
    to ``roots`` at its own time, or timestamps something else.
    """
    if len(token) > MAX_TOKEN_BYTES:
        raise VerificationError(f"timestamp token of {len(token)} bytes is too large")
    try:
        # the TimeStampResp a TSA answers with: status granted, then the token
        response = _decode(_der(0x30, b"\x30\x03\x02\x01\x00" + token))
    except ValueError as exc:
        raise VerificationError(f"timestamp token is not an RFC 3161 token: {exc}") from None
    return verify_timestamp_response(response, message, roots)


def verify_timestamp_response(
    response: TimeStampResponse | bytes, message: bytes, roots: Sequence[x509.Certificate],
    intermediates: Sequence[x509.Certificate] = (),
) -> Timestamp:
    """Verify a TimeStampResp (as sigstore bundles carry them) over ``message``."""
    if isinstance(response, bytes):
        try:
            response = _decode(response)
        except ValueError as exc:
            raise VerificationError(f"timestamp is not an RFC 3161 response: {exc}") from None
    if not roots:
        raise VerificationError("no timestamp authority roots to verify the timestamp with")
    builder = VerifierBuilder(roots=list(roots), intermediates=list(intermediates))
    try:
        builder.build().verify_message(response, message)
    except TimestampVerificationError as exc:
        text = str(exc)
        if "verifying certificates" in text:
            detail = re.search(r'data: "([^"]+)"', text)
            raise VerificationError(
                "timestamp does not chain to a trusted timestamp authority root"
                + (f" ({detail.group(1)})" if detail else "")
            ) from None
        raise VerificationError(f"timestamp does not verify: {text}") from None
    except ValueError as exc:
        raise VerificationError(f"timestamp is malformed: {exc}") from None
    info = response.tst_info
    accuracy = timedelta()
    if info.accuracy is not None:
        accuracy = timedelta(
            seconds=info.accuracy.seconds or 0,
            milliseconds=info.accuracy.millis or 0,
            microseconds=info.accuracy.micros or 0,
        )
    return Timestamp(info.gen_time, accuracy)


def _decode(data: bytes) -> TimeStampResponse:
    try:
        return decode_timestamp_response(data)
    except ValueError:
        # Real TSAs (GlobalSign among them) emit the SignedData certificate SET out of
        # DER order; the set is not signed, so sort it as DER wants and parse again.
        return decode_timestamp_response(_sort_certificate_set(data))


# --------------------------------------------------------------------------- minimal DER


def _der(tag: int, content: bytes) -> bytes:
    length = len(content)
    if length < 0x80:
        return bytes([tag, length]) + content
    encoded = length.to_bytes((length.bit_length() + 7) // 8, "big")
    return bytes([tag, 0x80 | len(encoded)]) + encoded + content


def _element(data: bytes, start: int) -> tuple[int, int, int]:
    """(tag, content start, end) of the DER element at ``start``; ValueError if cut short."""
    if start + 2 > len(data):
        raise ValueError("truncated DER element")
    tag, first = data[start], data[start + 1]
    position = start + 2
    if first & 0x80:
        count = first & 0x7F
        if count == 0 or count > 4 or position + count > len(data):
            raise ValueError("bad DER length")
        length = int.from_bytes(data[position : position + count], "big")
        position += count
    else:
        length = first
    if position + length > len(data):
        raise ValueError("truncated DER element")
    return tag, position, position + length


def _children(data: bytes, start: int, end: int) -> list[bytes]:
    out: list[bytes] = []
    while start < end:
        _, _, child_end = _element(data, start)
        out.append(data[start:child_end])
        start = child_end
    return out


def _sort_certificate_set(response: bytes) -> bytes:
    """TimeStampResp with its token's ``certificates [0] IMPLICIT SET`` in DER order."""
    _, start, end = _element(response, 0)
    status, token = _children(response, start, end)[:2]
    _, start, end = _element(token, 0)
    content_type, explicit = _children(token, start, end)[:2]
    _, start, end = _element(explicit, 0)
    (signed_data,) = _children(explicit, start, end)[:1]
    _, start, end = _element(signed_data, 0)
    fields = []
    for field in _children(signed_data, start, end):
        if field[0] == 0xA0:
            _, field_start, field_end = _element(field, 0)
            field = _der(0xA0, b"".join(sorted(_children(field, field_start, field_end))))
        fields.append(field)
    token = _der(0x30, content_type + _der(0xA0, _der(0x30, b"".join(fields))))
    return _der(0x30, status + token)
