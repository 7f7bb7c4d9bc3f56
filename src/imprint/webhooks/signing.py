"""How webhook requests are signed, and how a receiver checks them.

Each request carries:

- ``Imprint-Event-Id``: the event's id (the same on every attempt and every receiver
  of the event), for the receiver to drop repeats;
- ``Imprint-Event-Type``: e.g. ``provisioning.succeeded``;
- ``Imprint-Timestamp``: when this attempt was signed, in Unix seconds;
- ``Imprint-Signature``: ``v1=`` and the hex HMAC-SHA256, under the subscription's
  secret, of the timestamp, a dot and the exact body bytes;
- ``Imprint-Delivery-Attempt``: 1 for the first attempt, 2 for the first retry, ...

A receiver recomputes the HMAC over the body as received (before parsing it), compares
in constant time, and refuses a timestamp too far from its own clock (replays).
"""

from __future__ import annotations

import hashlib
import hmac
from collections.abc import Mapping

__all__ = [
    "ATTEMPT_HEADER",
    "EVENT_ID_HEADER",
    "EVENT_TYPE_HEADER",
    "SIGNATURE_HEADER",
    "TIMESTAMP_HEADER",
    "signature",
    "signed_headers",
    "verify",
]

EVENT_ID_HEADER = "Imprint-Event-Id"
EVENT_TYPE_HEADER = "Imprint-Event-Type"
TIMESTAMP_HEADER = "Imprint-Timestamp"
SIGNATURE_HEADER = "Imprint-Signature"
ATTEMPT_HEADER = "Imprint-Delivery-Attempt"

#: A receiver's default tolerance between the timestamp and its own clock.
TOLERANCE_SECONDS = 300


def signature(secret: str, timestamp: int, body: bytes) -> str:
    """``v1=<hex HMAC-SHA256(secret, "<timestamp>." + body)>``."""
    mac = hmac.new(secret.encode(), str(timestamp).encode() + b"." + body, hashlib.sha256)
    return "v1=" + mac.hexdigest()


def signed_headers(secret: str, timestamp: int, body: bytes) -> dict[str, str]:
    """The timestamp and signature headers of one request."""
    return {
        TIMESTAMP_HEADER: str(timestamp),
        SIGNATURE_HEADER: signature(secret, timestamp, body),
    }


def verify(
    secret: str,
    headers: Mapping[str, str],
    body: bytes,
    *,
    now: float,
    tolerance: int = TOLERANCE_SECONDS,
) -> bool:
    """Whether ``headers`` sign ``body`` under ``secret`` at a time close to ``now``
    (Unix seconds). ``headers`` must look names up case-insensitively (as HTTP
    libraries' header mappings do)."""
    stamp = headers.get(TIMESTAMP_HEADER) or ""
    given = headers.get(SIGNATURE_HEADER) or ""
    if not stamp.isdigit() or abs(now - int(stamp)) > tolerance:
        return False
    expected = signature(secret, int(stamp), body)
    return hmac.compare_digest(expected.encode(), given.encode())
