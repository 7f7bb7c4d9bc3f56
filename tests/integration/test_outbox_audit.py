"""Outbox deliveries that change state are audited (actor ``system:outbox``); those that
find nothing to change are not. Here the change is the MQTT broker's CRL and ACL,
rewritten after each issuance and revocation (both backends, no HTTP)."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest
from cryptography import x509
from cryptography.hazmat.primitives.asymmetric import ec

from imprint.audit import OUTBOX_ACTOR, AuditEntry, AuditQuery, verify_chain
from imprint.mqtt.broker import write_broker_setup
from imprint.pki.authority import IssuanceRequest
from imprint.runtime import Runtime, prepare
from imprint.settings import Settings
from tests.integration.conftest import ServerClock
from tests.integration.test_use_cases import _enroll, _provision

pytestmark = pytest.mark.both_databases


@pytest.fixture
def runtime(settings: Settings, tmp_path: Path) -> Iterator[Runtime]:
    mqtt = settings.mqtt.model_copy(update={"enabled": True, "dir": tmp_path / "mqtt"})
    opened, _first = prepare(settings.model_copy(update={"mqtt": mqtt}), clock=ServerClock())
    write_broker_setup(opened.settings, opened.authority, clock=opened.clock)
    yield opened
    opened.close()


def _syncs(runtime: Runtime) -> list[AuditEntry]:
    return list(reversed(runtime.audit.search(AuditQuery(action="mqtt.broker.sync"))))


def _crl_serials(runtime: Runtime) -> set[str]:
    crl = x509.load_pem_x509_crl((runtime.settings.mqtt_dir() / "crl.pem").read_bytes())
    return {format(r.serial_number, "x") for r in crl}


def test_broker_syncs_that_change_the_crl_or_acl_are_audited_and_no_ops_are_not(
    runtime: Runtime,
) -> None:
    assert _syncs(runtime) == []  # the broker's own certificate changes no device's access
    group_key = _enroll(runtime, "meters")

    first = _provision(runtime, group_key, "meter-1")
    assert first.bundle is not None
    (added,) = _syncs(runtime)
    assert (added.actor, added.target_type, added.org_id) == (OUTBOX_ACTOR, "mqtt_broker", None)
    assert added.details["serial"] == first.bundle.serial
    assert (added.details["acl_changed"], added.details["crl_changed"]) == (True, False)
    assert isinstance(added.details["outbox_message"], int)

    # Re-provisioning: a new certificate for the same device (the ACL stays as it was)
    # and the old one revoked (the CRL changes). Two messages, one change.
    second = _provision(runtime, group_key, "meter-1")
    assert second.bundle is not None
    syncs = _syncs(runtime)
    assert len(syncs) == 2
    revoked = syncs[1]
    assert (revoked.actor, revoked.details["crl_changed"]) == (OUTBOX_ACTOR, True)
    assert revoked.details["acl_changed"] is False
    assert first.bundle.serial in _crl_serials(runtime)

    # A certificate no broker client holds, and a round with nothing due: no entries.
    key = ec.generate_private_key(ec.SECP256R1())
    runtime.authority.issue(
        IssuanceRequest(
            public_key=key.public_key(), profile="server", common_name="web", sans=["web"]
        )
    )
    assert runtime.outbox.deliver() == 0
    assert len(_syncs(runtime)) == 2
    assert verify_chain(runtime.audit).ok


def test_a_delivery_that_finds_the_files_current_writes_no_entry(runtime: Runtime) -> None:
    group_key = _enroll(runtime, "meters")
    outcome = _provision(runtime, group_key, "meter-2")
    assert outcome.bundle is not None
    assert len(_syncs(runtime)) == 1
    # Delivered again (at least once means now and then twice): nothing changes.
    assert runtime.authority.tell_listeners(outcome.bundle.serial) == []
    assert len(_syncs(runtime)) == 1
