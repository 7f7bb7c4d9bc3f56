"""Which attestation mechanisms this server runs, each built with what it needs."""

from __future__ import annotations

from imprint.attestation.base import Attestor
from imprint.attestation.client_ca import ClientCAAttestor
from imprint.attestation.oob_secret import OobSecretAttestor
from imprint.attestation.registration_key import RegistrationKeyAttestor
from imprint.attestation.revocation import DenyList, ManufacturerCrlStore
from imprint.attestation.symmetric_key import SymmetricKeyAttestor
from imprint.attestation.x509 import X509Attestor
from imprint.provisioning.client_cas import ClientCAStore
from imprint.provisioning.devices import DeviceStore
from imprint.provisioning.enrollments import EnrollmentStore, Mechanism
from imprint.provisioning.one_time_passwords import OneTimePasswordStore
from imprint.provisioning.oob_secrets import OobSecretStore
from imprint.provisioning.registration_keys import RegistrationKeyStore

__all__ = ["build_attestors"]


def build_attestors(
    *,
    enrollments: EnrollmentStore,
    devices: DeviceStore,
    client_cas: ClientCAStore,
    deny_list: DenyList,
    crls: ManufacturerCrlStore,
    oob_secrets: OobSecretStore,
    registration_keys: RegistrationKeyStore,
    provision_url: str,
    one_time_passwords: OneTimePasswordStore | None = None,
) -> dict[Mechanism, Attestor]:
    """One attestor per mechanism, with the stores the runtime built.

    ``provision_url`` is the audience signed requests must name.
    """
    attestors: dict[Mechanism, Attestor] = {}
    attestors[Mechanism.CLIENT_CA] = ClientCAAttestor(enrollments=enrollments, cas=client_cas)
    attestors[Mechanism.X509] = X509Attestor(
        enrollments=enrollments,
        deny_list=deny_list,
        crls=crls,
        audience=provision_url,
    )
    attestors[Mechanism.SYMMETRIC_KEY] = SymmetricKeyAttestor(enrollments)
    attestors[Mechanism.REGISTRATION_KEY] = RegistrationKeyAttestor(registration_keys, enrollments)
    attestors[Mechanism.OOB_SECRET] = OobSecretAttestor(
        oob_secrets, enrollments, devices, one_time_passwords
    )
    return attestors
