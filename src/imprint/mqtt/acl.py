"""The broker's access control list, derived from the certificates imprint issued.

Mosquitto takes the client certificate's common name as the user name
(``use_identity_as_username``); imprint puts the device id there and the owning
organization in the organizational unit. Each device with a current certificate gets:

    user <device-id>
    topic readwrite devices/<device-id>/#
    topic readwrite orgs/<organization>/#

so a device reads and writes its own subtree and its organization's shared subtree, and
nothing of another device or organization. A device id held by devices of two
organizations is left out altogether (neither may connect to a topic), as are names a
topic filter cannot carry safely (``/``, ``+``, ``#``, spaces).
"""

from __future__ import annotations

import re
from collections.abc import Iterable, Iterator
from dataclasses import dataclass
from datetime import datetime

from cryptography import x509
from cryptography.x509.oid import NameOID

from imprint.pki.records import CertificateLedger, CertificateRecord, CertificateStatus

__all__ = ["AclEntry", "acl_entries", "current_certificates", "render_acl"]

_SAFE = re.compile(r"[A-Za-z0-9._:@=-]{1,200}")
_PAGE = 1000
#: Profiles whose holders connect to the broker as clients.
CLIENT_PROFILES = frozenset({"device", "client"})


@dataclass(frozen=True, slots=True, order=True)
class AclEntry:
    """One broker user: the certificate's common name and its organization (if any)."""

    user: str
    organization: str | None


def current_certificates(ledger: CertificateLedger, now: datetime) -> Iterator[CertificateRecord]:
    """Every issued, unexpired (at ``now``), unrevoked client certificate in the ledger."""
    after: str | None = None
    while True:
        page = ledger.search(status=CertificateStatus.ISSUED, limit=_PAGE, after_serial=after)
        for record in page:
            if record.profile in CLIENT_PROFILES and record.not_after > now and record.der:
                yield record
        if len(page) < _PAGE:
            return
        after = page[-1].serial


def _attribute(name: x509.Name, oid: x509.ObjectIdentifier) -> str | None:
    values = name.get_attributes_for_oid(oid)
    return str(values[0].value) if values else None


def acl_entries(records: Iterable[CertificateRecord]) -> tuple[list[AclEntry], list[str]]:
    """The ACL users for these certificates, and the names left out (with why)."""
    organizations: dict[str, set[str | None]] = {}
    skipped: list[str] = []
    for record in records:
        assert record.der is not None
        subject = x509.load_der_x509_certificate(record.der).subject
        user = _attribute(subject, NameOID.COMMON_NAME)
        organization = _attribute(subject, NameOID.ORGANIZATIONAL_UNIT_NAME)
        if not user or not _SAFE.fullmatch(user):
            skipped.append(f"serial {record.serial}: common name unusable as a topic level")
            continue
        if organization is not None and not _SAFE.fullmatch(organization):
            skipped.append(f"{user}: organization unusable as a topic level")
            continue
        organizations.setdefault(user, set()).add(organization)
    entries = []
    for user, found in sorted(organizations.items()):
        if len(found) > 1:
            skipped.append(f"{user}: held by devices of several organizations")
            continue
        entries.append(AclEntry(user, next(iter(found))))
    return entries, skipped


def render_acl(entries: Iterable[AclEntry], skipped: Iterable[str] = ()) -> str:
    """The ACL file's text (Mosquitto's acl_file format)."""
    lines = [
        "# Mosquitto ACL written by imprint; rewritten on every issuance and revocation,",
        "# so do not edit it. User name = certificate common name = device id.",
    ]
    lines.extend(f"# left out: {reason}" for reason in skipped)
    for entry in entries:
        lines += ["", f"user {entry.user}", f"topic readwrite devices/{entry.user}/#"]
        if entry.organization is not None:
            lines.append(f"topic readwrite orgs/{entry.organization}/#")
    return "\n".join(lines) + "\n"
