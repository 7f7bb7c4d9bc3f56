"""When a device's certificate is due for renewal, and until when renewal is accepted.

A device renews once two thirds of its certificate's lifetime have passed (the bundle's
``renew_after``, which the device SDK follows). After expiry the enrollment's renewal
grace still accepts a signed renewal for ``renewal_grace_days``
(attestation/renewal.py).
"""

from __future__ import annotations

from datetime import datetime, timedelta

__all__ = ["renew_after", "renewal_accepted_until"]


def renew_after(not_before: datetime, not_after: datetime) -> datetime:
    """When renewal is due: two thirds into the certificate's lifetime."""
    return not_before + (not_after - not_before) * 2 / 3


def renewal_accepted_until(not_after: datetime, renewal_grace_days: int) -> datetime:
    """The last moment a renewal with this certificate is accepted."""
    return not_after + timedelta(days=renewal_grace_days)
