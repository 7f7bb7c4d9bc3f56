"""Which channel a client certificate writes to.

Two kinds of certificate name a device:

* one imprint issued: its subject is the device id (CN) and owner (OU), and it must be
  the device's current certificate;
* one from a client CA that a client-ca enrollment trusts: the client-ca attestor
  checks it on every request. A device it knows (pinned to this certificate) writes
  straight away; any other goes through the Provisioner first, which is the device's
  first contact (self-provisioning) or a clear refusal.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping

from cryptography import x509
from cryptography.x509.oid import NameOID
from fastapi import Request

from imprint.api.identity import PresentedCertificate, client_certificate, peer_certificate
from imprint.attestation.base import AttestationFailed, Evidence
from imprint.attestation.client_ca import ClientCAAttestor
from imprint.channels.entries import ChannelKeyInvalid
from imprint.errors import AuthenticationRequired, InvalidRequest, PermissionDenied
from imprint.provisioning.channels import Channel
from imprint.provisioning.devices import DeviceStatus
from imprint.provisioning.enrollments import Mechanism
from imprint.provisioning.service import ChannelNotConfigured
from imprint.runtime import Runtime

__all__ = ["DevicePending", "Precheck", "device_channel"]

Precheck = Callable[[Mapping[str, str]], object]


class DevicePending(PermissionDenied):
    code = "device_pending"


def _name(certificate: x509.Certificate, oid: x509.ObjectIdentifier) -> str | None:
    found = certificate.subject.get_attributes_for_oid(oid)
    value = found[0].value if found else None
    return value if isinstance(value, str) else None


def _channel_or_refuse(runtime: Runtime, device_ref: str | None, device_id: str) -> Channel:
    channel = None if device_ref is None else runtime.channels.for_device(device_ref)
    if channel is None:
        raise ChannelNotConfigured(
            f"device {device_id!r} has no channel: its enrollment gives none"
        )
    return channel


def _issued_by_imprint(runtime: Runtime, certificate: x509.Certificate) -> Channel:
    device_id = _name(certificate, NameOID.COMMON_NAME)
    owner = _name(certificate, NameOID.ORGANIZATIONAL_UNIT_NAME)
    device = None
    if device_id is not None and owner is not None:
        device = runtime.devices.find(owner, device_id)
    serial = format(certificate.serial_number, "x")
    if (
        device is None
        or device.status is not DeviceStatus.PROVISIONED
        or device.certificate_serial != serial
    ):
        raise ChannelKeyInvalid(
            "the client certificate is not the current certificate of a provisioned device"
        )
    return _channel_or_refuse(runtime, device.id, device.device_id)


def _from_client_ca(
    runtime: Runtime, presented: PresentedCertificate, request: Request, precheck: Precheck | None
) -> Channel:
    evidence = Evidence(
        mechanism=Mechanism.CLIENT_CA,
        csr=None,
        at=runtime.clock.now(),
        client_certificate=presented.certificate,
        client_intermediates=presented.intermediates,
        source=request.client.host if request.client else None,
    )
    attestor = ClientCAAttestor(
        enrollments=runtime.enrollments, cas=runtime.client_cas, devices=runtime.devices
    )
    try:
        attestation = attestor.attest(evidence)
    except (AttestationFailed, InvalidRequest):
        attestation = None  # the Provisioner refuses it below, and counts the failure
    if attestation is not None:
        device = runtime.devices.find(attestation.enrollment.owner, attestation.device_id)
        if (
            device is not None
            and device.status is DeviceStatus.PROVISIONED
            and device.pinned_fingerprint == attestation.pinned_fingerprint
        ):
            known = runtime.channels.for_device(device.id)
            if known is not None:
                return known
        template = attestation.enrollment.channel
        if precheck is not None and template is not None:
            precheck(template.fields)  # refuse a bad write before provisioning anything
    outcome = runtime.provisioner.provision(evidence)
    if outcome.status == "pending":
        raise DevicePending(
            f"device {outcome.device_id!r} waits for an administrator's approval; "
            "nothing was stored"
        )
    return _channel_or_refuse(runtime, outcome.device_ref, outcome.device_id)


def device_channel(request: Request, runtime: Runtime, precheck: Precheck | None = None) -> Channel:
    """The channel of the device that presented this request's client certificate.

    ``precheck`` is called with the channel fields (``field1`` -> label) a device is
    about to get on first contact, before it is provisioned; what it raises refuses the
    request with nothing stored.

    Raises:
        AuthenticationRequired: no client certificate (code ``client_certificate_required``).
        ChannelKeyInvalid: an imprint certificate that is not a device's current one.
        CertificateRevoked: an imprint certificate that has been revoked.
        AttestationFailed: a foreign certificate no enabled client-ca enrollment trusts,
            or one pinned to another device certificate.
        PolicyDenied: the enrollment refuses the device (e.g. ``channel_not_configured``).
        DevicePending: the device waits for approval.
    """
    presented = peer_certificate(request)
    if presented is None:
        raise AuthenticationRequired(
            "present the device's client certificate (mutual TLS) or a channel key",
            code="client_certificate_required",
        )
    ours = client_certificate(request)
    if ours is not None:
        return _issued_by_imprint(runtime, ours.certificate)
    return _from_client_ca(runtime, presented, request, precheck)
