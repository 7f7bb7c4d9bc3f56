"""``imprint denylist ...`` run as a user runs it: each change is in the audit log,
written by ``cli:<os user>``, on SQLite and PostgreSQL."""

from __future__ import annotations

import getpass
from pathlib import Path

import pytest
from cryptography.hazmat.primitives import hashes, serialization

from imprint.attestation.revocation import key_sha256
from imprint.audit import AuditEntry, AuditQuery
from imprint.runtime import open_runtime, prepare
from imprint.settings import Settings
from tests.e2e.conftest import run_imprint
from tests.integration.test_x509_attestation import Manufacturer, crl_of

# Said to hold on both databases: every test here runs on PostgreSQL too (see
# tests/conftest.py).
pytestmark = pytest.mark.both_databases


def _imprint(settings: Settings, *args: str) -> str:
    result = run_imprint(settings, *args)
    assert result.returncode == 0, result.stderr
    return result.stdout


def _logged(settings: Settings, action: str) -> list[AuditEntry]:
    runtime = open_runtime(settings, migrate=False)
    try:
        return list(runtime.audit.search(AuditQuery(action=action)))
    finally:
        runtime.close()


def test_deny_list_and_crl_changes_from_the_cli_are_audited(
    settings: Settings, tmp_path: Path
) -> None:
    runtime, _ = prepare(settings)
    runtime.close()
    maker = Manufacturer.create("Acme")
    chain = tmp_path / "chain.pem"
    chain.write_text("".join(maker.chain()))
    _imprint(settings, "org", "create", "Acme", "--id", "acme")
    _imprint(
        settings, "enrollment", "create", "--mechanism", "x509", "--owner", "acme",
        "--id", "meters", "--x509-chain", str(chain),
    )  # fmt: skip
    device = maker.line.idevid("meter-1")[0]
    cert = tmp_path / "meter-1.pem"
    cert.write_bytes(device.public_bytes(serialization.Encoding.PEM))
    fingerprint = device.fingerprint(hashes.SHA256()).hex()
    crl = tmp_path / "line-a.crl"
    crl.write_text(crl_of(maker.line.certificate, maker.line.key, [device.serial_number], 1))
    issuer_key = key_sha256(maker.line.certificate)

    assert fingerprint in _imprint(
        settings, "denylist", "add", "--cert", str(cert), "--reason", "cloned"
    )
    assert fingerprint in _imprint(settings, "denylist", "list")
    _imprint(settings, "denylist", "remove", fingerprint)
    assert issuer_key in _imprint(settings, "denylist", "crl-upload", str(crl))
    _imprint(settings, "denylist", "crl-remove", issuer_key)

    cli = f"cli:{getpass.getuser()}"
    for action, target_type, target in (
        ("deny_list.add", "certificate", fingerprint),
        ("deny_list.remove", "certificate", fingerprint),
        ("manufacturer_crl.upload", "crl", issuer_key),
        ("manufacturer_crl.remove", "crl", issuer_key),
    ):
        logged = _logged(settings, action)
        assert [(e.actor, e.target_type, e.target_id) for e in logged] == [
            (cli, target_type, target)
        ], action


def test_a_refused_cli_change_writes_nothing(settings: Settings) -> None:
    runtime, _ = prepare(settings)
    runtime.close()
    missing = "ab" * 32
    refused = run_imprint(settings, "denylist", "remove", missing)
    assert refused.returncode == 1
    assert "not on the deny-list" in refused.stderr
    assert _logged(settings, "deny_list.remove") == []
