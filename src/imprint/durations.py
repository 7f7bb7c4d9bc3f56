"""Human durations such as ``30d``, ``12h``, ``2w`` or ``90m``."""

from __future__ import annotations

import re
from datetime import timedelta

from imprint.errors import InvalidValue

__all__ = ["parse_duration"]

_PATTERN = re.compile(r"\s*(\d{1,6})\s*([smhdw])\s*")
_UNITS = {"s": "seconds", "m": "minutes", "h": "hours", "d": "days", "w": "weeks"}


def parse_duration(text: str) -> timedelta:
    """Parse ``<number><unit>`` with unit s, m, h, d or w.

    Raises:
        InvalidValue: anything else.
    """
    match = _PATTERN.fullmatch(text)
    if not match:
        raise InvalidValue(f"{text!r} is not a duration such as 30d, 12h or 2w")
    return timedelta(**{_UNITS[match.group(2)]: int(match.group(1))})
