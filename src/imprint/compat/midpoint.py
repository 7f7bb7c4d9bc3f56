"""midPoint's device registration, translated to and from imprint's one provisioning path.

In the midPoint IoT story a thermometer registers itself with its serial number and the
first half of its owner's registration key::

    GET /midpoint/ws/iot/devices/74743827342?key=HQ481047

and reads back its ThingSpeak channel and write key as two ``text/plain`` lines::

    channel=142770
    writeKey=R9TUHWKR8OOQEHWU

imprint keeps that URL, so such firmware works unchanged, and turns the request into
registration-key evidence without a CSR (the thermometer holds no key pair: it gets a
channel, no certificate) for the same Provisioner every route calls. What midPoint left
open is done here:

- the key half may come in the ``X-Imprint-Key-Half`` header (or a form field of a
  POST) instead of the URL, so it stays out of URLs and logs;
- by default the write key is sealed under the *second* half of the key, which never
  crosses the network (HKDF-SHA256 + AES-256-GCM, as every sealed bundle secret): the
  answer is JSON. The plain lines are given only for enrollments whose channel
  ``delivery`` is ``plain``, an operator's choice for firmware that cannot be updated;
- the serial is looked up within the organization of the key, failures are rate
  limited, and refusals are problem+json with a stable ``code``.
"""

from __future__ import annotations

from datetime import datetime
from typing import Any

from imprint.attestation.base import Evidence
from imprint.errors import InvalidValue
from imprint.provisioning.bundle import Bundle, ChannelGrant
from imprint.provisioning.enrollments import Mechanism

__all__ = [
    "PATH",
    "key_half_from",
    "plain_lines",
    "registration_evidence",
    "sealed_answer",
]

PATH = "/midpoint/ws/iot/devices/{serial}"


def key_half_from(*, query: str | None, form: str | None, header: str | None) -> str | None:
    """The first half of the key, from wherever the device put it.

    Raises:
        InvalidValue: it was given in more than one place, with different values.
    """
    given = {value for value in (header, form, query) if value is not None}
    if len(given) > 1:
        raise InvalidValue("key: given in more than one place with different values")
    return next(iter(given), None)


def registration_evidence(
    serial: str, key_half: str | None, *, at: datetime, source: str | None
) -> Evidence:
    """Registration-key evidence for a device that holds no key pair."""
    return Evidence(
        mechanism=Mechanism.REGISTRATION_KEY,
        csr=None,
        at=at,
        registration_id=serial,
        fields={} if key_half is None else {"key_half": key_half},
        source=source,
    )


def plain_lines(channel: ChannelGrant) -> str:
    """The answer midPoint-era firmware parses: ``channel=<id>`` and ``writeKey=<key>``."""
    return f"channel={channel.id}\nwriteKey={channel.write_key}\n"


def sealed_answer(bundle: Bundle) -> dict[str, Any]:
    """The default answer: the channel id readable, the write key only in ``sealed``.

    ``sealed`` opens with HKDF-SHA256 (salt from the answer, info ``imprint bundle v1``)
    of the second half of the registration key and AES-256-GCM with the serial number
    as associated data, to ``{"channel": {"id": ..., "write_key": ...}}`` (plus
    ``pre_shared_key`` when the enrollment has one).
    """
    assert bundle.channel is not None
    return {
        "status": "approved",
        "serial": bundle.device_id,
        "owner": bundle.owner,
        "channel": bundle.channel.id,
        "services": dict(bundle.services),
        "sealed": None if bundle.sealed is None else dict(bundle.sealed),
    }
