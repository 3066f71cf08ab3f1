"""Go-style durations (``8s``, ``10m``, ``1h30m``, ``500ms``); a bare number means seconds."""

from __future__ import annotations

import re
from datetime import timedelta

_UNITS = {"ns": 1e-9, "us": 1e-6, "µs": 1e-6, "ms": 1e-3, "s": 1.0, "m": 60.0, "h": 3600.0}
_PART = re.compile(r"(\d+(?:\.\d*)?|\.\d+)(ns|us|µs|ms|s|m|h)")


def parse_duration(value: str | int | float) -> timedelta:
    """Parse a duration; raise ValueError with the accepted forms when it is not one."""
    if isinstance(value, bool) or not isinstance(value, str | int | float):
        raise ValueError(f"invalid duration {value!r}: expected e.g. 8s, 10m, 168h")
    if isinstance(value, int | float):
        return _timedelta(value, value)
    text = value.strip()
    try:
        seconds = float(text)
    except ValueError:
        pass
    else:
        return _timedelta(seconds, value)
    pos = 0
    total = 0.0
    for match in _PART.finditer(text):
        if match.start() != pos:
            break
        total += float(match.group(1)) * _UNITS[match.group(2)]
        pos = match.end()
    if not text or pos != len(text):
        raise ValueError(f"invalid duration {value!r}: expected e.g. 8s, 10m, 1h30m, 168h")
    return _timedelta(total, value)


def _timedelta(seconds: float, value: object) -> timedelta:
    if seconds != seconds:  # NaN
        raise ValueError(f"invalid duration {value!r}: not a number")
    if seconds < 0:
        raise ValueError(f"invalid duration {value!r}: must not be negative")
    try:
        return timedelta(seconds=seconds)
    except OverflowError:  # infinity, or beyond timedelta's ~2.7 million years
        raise ValueError(f"invalid duration {value!r}: too long") from None
