"""Which attestation mechanisms this server runs, each built with what it needs."""

from __future__ import annotations

from sqlalchemy.engine import Engine

from imprint.attestation.base import Attestor
from imprint.attestation.client_ca import ClientCAAttestor
from imprint.attestation.oob_secret import OobSecretAttestor
from imprint.attestation.registration_key import RegistrationKeyAttestor
from imprint.attestation.symmetric_key import SymmetricKeyAttestor
from imprint.attestation.x509 import X509Attestor
from imprint.provisioning.devices import DeviceStore, NonceStore
from imprint.provisioning.enrollments import EnrollmentStore, Mechanism
from imprint.sealing import SecretBox
from imprint.store.client_cas import SqlClientCAStore
from imprint.store.deny_list import SqlDenyList, SqlManufacturerCrlStore
from imprint.store.oob_secrets import SqlOobSecretStore
from imprint.store.registration_keys import SqlRegistrationKeyStore

__all__ = ["build_attestors"]


def build_attestors(
    *,
    engine: Engine,
    box: SecretBox,
    enrollments: EnrollmentStore,
    devices: DeviceStore,
    nonces: NonceStore,
    provision_url: str,
) -> dict[Mechanism, Attestor]:
    """One attestor per mechanism (the engine is only for mechanism-specific stores).

    ``provision_url`` is the audience signed requests must name.
    """
    attestors: dict[Mechanism, Attestor] = {}
    attestors[Mechanism.CLIENT_CA] = ClientCAAttestor(
        enrollments=enrollments, cas=SqlClientCAStore(engine), devices=devices
    )
    attestors[Mechanism.X509] = X509Attestor(
        enrollments=enrollments,
        devices=devices,
        nonces=nonces,
        deny_list=SqlDenyList(engine),
        crls=SqlManufacturerCrlStore(engine),
        audience=provision_url,
    )
    attestors[Mechanism.SYMMETRIC_KEY] = SymmetricKeyAttestor(enrollments, nonces)
    keys = SqlRegistrationKeyStore(engine, box)
    attestors[Mechanism.REGISTRATION_KEY] = RegistrationKeyAttestor(keys, enrollments)
    attestors[Mechanism.OOB_SECRET] = OobSecretAttestor(
        SqlOobSecretStore(engine, box), enrollments, devices, nonces
    )
    return attestors
