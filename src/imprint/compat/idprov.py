"""idprov's wire format, translated to and from imprint's one provisioning path.

idprov (the WoST/HiveOT IoT provisioning protocol, Go) has four messages. Field names
and order follow its Go structs, because signatures are HMACs over ``json.Marshal``
output (:mod:`imprint.compat.gojson`)::

    PostProvisionRequestMessage  deviceID, ip, mac, publicKeyPEM, signature
    PostProvisionResponseMessage retrySec (omitempty), status, caCert, clientCert, signature
    GetDeviceStatusMessage       deviceID, status, caCert, clientCert ([]byte: base64)
    GetDirectoryMessage          endpoints{directory, status, postOobSecret,
                                 postProvisionRequest}, caCert ([]byte: base64),
                                 version, services (a map: keys sorted)

A request's ``signature`` is base64(HMAC-SHA256(secret, json.Marshal(request with an
empty signature))), keyed with the raw OOB secret; an approved response is signed the
same way, so the device knows the answer came from a server holding its secret.
Statuses are ``Approved``, ``Waiting`` and ``Rejected``.

A device renews by sending ``provreq`` again over mutual TLS with its current
certificate (:meth:`ProvisionRequest.renewal_evidence`): no secret is needed, the
certificate must name the request's device, and the answer is signed with the empty
secret, which is what idprov's client verifies when it holds a certificate.

idprov sends a bare public key where imprint expects a CSR. The key is wrapped in a
PKCS#10 structure whose signature is left empty (:func:`key_only_request`) so it can
travel through the one provisioning path; the proof of possession a CSR signature
would give is replaced, as in idprov itself, by the HMAC over ``publicKeyPEM``, and the
attestor checks that the wrapped key is the signed one.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from datetime import datetime
from typing import Literal

from cryptography import x509
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec, ed25519, rsa
from cryptography.x509.oid import NameOID

from imprint.attestation.base import AttestationFailed, Evidence, EvidenceMissing
from imprint.attestation.oob_secret import IDPROV_FORMAT, idprov_signature
from imprint.compat.gojson import GoValue, Struct, marshal
from imprint.errors import InvalidValue
from imprint.pki.csr import IssuablePublicKey, check_public_key
from imprint.provisioning.enrollments import Mechanism

__all__ = [
    "PATHS",
    "VERSION",
    "DeviceIdMismatch",
    "ProvisionRequest",
    "Status",
    "directory_message",
    "key_only_request",
    "provision_response",
    "status_message",
]

VERSION = "1"
PATHS = {
    "directory": "/idprov/directory",
    "status": "/idprov/status/{deviceID}",
    "postOobSecret": "/idprov/oobsecret",
    "postProvisionRequest": "/idprov/provreq",
}
Status = Literal["Approved", "Waiting", "Rejected"]

# AlgorithmIdentifier of the (empty) signature of a key-only request, per key type.
_SIGNATURE_OID = {
    ec.EllipticCurvePublicKey: "2a8648ce3d040302",  # ecdsa-with-SHA256
    rsa.RSAPublicKey: "2a864886f70d01010b",  # sha256WithRSAEncryption
    ed25519.Ed25519PublicKey: "2b6570",  # id-Ed25519
}


class DeviceIdMismatch(AttestationFailed):
    """A renewal whose client certificate names another device than the request."""

    code = "device_id_mismatch"


@dataclass(frozen=True, slots=True)
class ProvisionRequest:
    """An idprov provisioning request as the device sent it."""

    device_id: str
    ip: str
    mac: str
    public_key_pem: str
    signature: str = field(repr=False)

    def signed_message(self) -> bytes:
        """The bytes the device signed: its request with an empty signature, Go-encoded."""
        return marshal(
            Struct.of(
                ("deviceID", self.device_id),
                ("ip", self.ip),
                ("mac", self.mac),
                ("publicKeyPEM", self.public_key_pem),
                ("signature", ""),
            )
        )

    def public_key(self) -> IssuablePublicKey:
        """The device's public key.

        Raises:
            InvalidValue: not a PEM public key.
            UnsupportedKey: a key type imprint does not certify.
        """
        try:
            key = serialization.load_pem_public_key(self.public_key_pem.encode("utf-8"))
        except (ValueError, TypeError, UnicodeEncodeError):
            raise InvalidValue("publicKeyPEM: not a PEM public key") from None
        return check_public_key(key)

    def renewal_evidence(
        self, at: datetime, source: str | None, certificate: x509.Certificate
    ) -> Evidence:
        """The request, sent over mutual TLS with the device's current certificate, as
        renewal evidence: idprov's renewal needs no secret and no signature.

        Raises:
            EvidenceMissing: deviceID or publicKeyPEM is empty.
            DeviceIdMismatch: the certificate names another device.
            InvalidValue, UnsupportedKey: see :meth:`public_key`.
        """
        missing = [
            name
            for name, value in (("deviceID", self.device_id), ("publicKeyPEM", self.public_key_pem))
            if not value
        ]
        if missing:
            raise EvidenceMissing(f"{', '.join(missing)} required in an idprov request")
        names = certificate.subject.get_attributes_for_oid(NameOID.COMMON_NAME)
        if not names or names[0].value != self.device_id:
            raise DeviceIdMismatch(
                "the client certificate is another device's: a device renews only its own"
            )
        return Evidence(
            mechanism=Mechanism.RENEWAL,
            csr=key_only_request(self.public_key(), self.device_id),
            at=at,
            registration_id=self.device_id,
            client_certificate=certificate,
            source=source,
        )

    def evidence(self, at: datetime, source: str | None) -> Evidence:
        """The request as oob-secret evidence for the Provisioner.

        Raises:
            EvidenceMissing: deviceID, ip or publicKeyPEM is empty (idprov requires them).
            InvalidValue, UnsupportedKey: see :meth:`public_key`.
        """
        missing = [
            name
            for name, value in (
                ("deviceID", self.device_id),
                ("ip", self.ip),
                ("publicKeyPEM", self.public_key_pem),
            )
            if not value
        ]
        if missing:
            raise EvidenceMissing(f"{', '.join(missing)} required in an idprov request")
        return Evidence(
            mechanism=Mechanism.OOB_SECRET,
            csr=key_only_request(self.public_key(), self.device_id),
            at=at,
            registration_id=self.device_id,
            fields={
                "format": IDPROV_FORMAT,
                "message": self.signed_message().decode("utf-8"),
                "signature": self.signature,
            },
            source=source,
        )


def _der(tag: int, content: bytes) -> bytes:
    size = len(content)
    if size < 0x80:
        length = bytes([size])
    else:
        encoded = size.to_bytes((size.bit_length() + 7) // 8, "big")
        length = bytes([0x80 | len(encoded)]) + encoded
    return bytes([tag]) + length + content


def key_only_request(
    public_key: IssuablePublicKey, device_id: str
) -> x509.CertificateSigningRequest:
    """A PKCS#10 request carrying ``public_key`` with an empty signature.

    Only for wire formats that send a bare key (idprov): the request's signature does
    not verify, so it proves nothing by itself; the caller's attestation must bind the
    key (idprov's HMAC covers ``publicKeyPEM``).
    """
    spki = public_key.public_bytes(
        serialization.Encoding.DER, serialization.PublicFormat.SubjectPublicKeyInfo
    )
    subject = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, device_id[:64])]).public_bytes()
    info = _der(0x30, _der(0x02, b"\x00") + subject + spki + _der(0xA0, b""))
    oid = next(o for kind, o in _SIGNATURE_OID.items() if isinstance(public_key, kind))
    algorithm = _der(0x30, _der(0x06, bytes.fromhex(oid)))
    return x509.load_der_x509_csr(_der(0x30, info + algorithm + _der(0x03, b"\x00")))


def provision_response(
    status: Status,
    *,
    retry_seconds: int = 0,
    ca_cert: str = "",
    client_cert: str = "",
    secret: str | None = None,
    extra: Mapping[str, str] | None = None,
) -> bytes:
    """A PostProvisionResponseMessage; signed with ``secret`` when one is given.

    ``extra`` fields (imprint's error ``code`` and ``detail``) follow idprov's; Go
    clients ignore fields they do not know, and they are never signed.
    """
    fields: list[tuple[str, GoValue]] = []
    if retry_seconds > 0:  # uint with omitempty
        fields.append(("retrySec", retry_seconds))
    fields += [("status", status), ("caCert", ca_cert), ("clientCert", client_cert)]
    unsigned = Struct((*fields, ("signature", "")))
    signature = "" if secret is None else idprov_signature(secret, marshal(unsigned))
    extras: list[tuple[str, GoValue]] = list((extra or {}).items())
    return marshal(Struct((*fields, ("signature", signature), *extras)))


def status_message(
    device_id: str, status: Status, ca_cert: str, client_cert: bytes | None
) -> bytes:
    """A GetDeviceStatusMessage; ``clientCert`` is a Go ``[]byte``, so base64 (or null)."""
    return marshal(
        Struct.of(
            ("deviceID", device_id),
            ("status", status),
            ("caCert", ca_cert),
            ("clientCert", client_cert),
        )
    )


def directory_message(ca_cert: str, services: Mapping[str, str]) -> bytes:
    """A GetDirectoryMessage: endpoints as paths (idprov clients prefix the server's
    address), the CA certificate as a Go ``[]byte`` (base64 of the PEM)."""
    return marshal(
        Struct.of(
            ("endpoints", Struct(tuple(PATHS.items()))),
            ("caCert", ca_cert.encode("ascii")),
            ("version", VERSION),
            ("services", dict(services)),
        )
    )
