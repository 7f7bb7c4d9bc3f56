"""The ``imprint`` command line, run as a user would run it."""

from __future__ import annotations

import getpass
from pathlib import Path

import yaml

from imprint.audit import AuditEntry, AuditQuery
from imprint.settings import Settings
from tests.e2e.conftest import Run, openssl, run_imprint

PASS = {"IMPRINT_CA__PASSPHRASE": "correct horse battery staple"}


def make_csr(directory: Path, name: str) -> Path:
    openssl(
        "req", "-new", "-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:P-256", "-nodes",
        "-keyout", f"{name}-key.pem", "-out", f"{name}.csr", "-subj", f"/CN={name}",
        cwd=directory,
    )  # fmt: skip
    return directory / f"{name}.csr"


def audited(tmp_path: Path, action: str) -> list[AuditEntry]:
    """The audit log's entries of ``action`` in the data directory's database, newest
    first."""
    from imprint.store.audit import SqlAuditLog
    from imprint.store.db import create_engine

    engine = create_engine(f"sqlite:///{tmp_path / 'data' / 'imprint.db'}")
    try:
        return list(SqlAuditLog(engine).search(AuditQuery(action=action)))
    finally:
        engine.dispose()


def test_config_show_prints_effective_values_with_secrets_masked(
    imprint: Run, tmp_path: Path
) -> None:
    (tmp_path / "imprint.yaml").write_text(
        "server:\n  port: 9443\ndatabase:\n  url: postgresql+psycopg://imprint:s3cret@db/imprint\n"
    )
    result = imprint("config", "show", IMPRINT_SERVER__HOST="192.0.2.1", **PASS)
    shown = yaml.safe_load(result.stdout)
    assert shown["server"]["port"] == 9443
    assert shown["server"]["host"] == "192.0.2.1"
    assert shown["ca"]["passphrase"] == "********"
    assert "s3cret" not in result.stdout
    assert PASS["IMPRINT_CA__PASSPHRASE"] not in result.stdout


def test_unknown_and_bad_configuration_name_the_key(imprint: Run, tmp_path: Path) -> None:
    config = tmp_path / "imprint.yaml"
    config.write_text("server:\n  prot: 9443\n")
    typo = imprint("config", "show", check=False)
    config.write_text("server:\n  port: many\n")
    bad = imprint("config", "show", check=False)
    config.unlink()
    env_typo = imprint("config", "show", check=False, IMPRINT_SERVER__PROT="1")
    assert typo.returncode == 2
    assert "server.prot: unknown key" in typo.stderr
    assert bad.returncode == 2
    assert "server.port" in bad.stderr
    assert env_typo.returncode == 2
    assert "IMPRINT_SERVER__PROT" in env_typo.stderr


def test_db_upgrade_is_idempotent(imprint: Run) -> None:
    from imprint.store.db import head_revision

    first = imprint("db", "upgrade")
    second = imprint("db", "upgrade")
    assert f"revision {head_revision()}" in first.stdout
    assert f"revision {head_revision()}" in second.stdout


def test_ca_init_with_options_and_refusal_to_overwrite(imprint: Run, tmp_path: Path) -> None:
    created = imprint(
        "ca", "init", "--key-type", "ec-p384", "--root-name", "Acme Root",
        "--issuing-name", "Acme Devices", "--organization", "Acme", **PASS,
    )  # fmt: skip
    assert "CN=Acme Root,O=Acme" in created.stdout
    assert "EC P-384" in created.stdout
    again = imprint("ca", "init", check=False, **PASS)
    assert again.returncode == 1
    assert "exists already" in again.stderr
    key = (tmp_path / "data" / "ca" / "issuing.key").read_text()
    assert "BEGIN ENCRYPTED PRIVATE KEY" in key
    forced = imprint("ca", "init", "--force", **PASS)
    assert "imprint Root CA" in forced.stdout


def test_issue_verify_revoke_and_list(imprint: Run, tmp_path: Path) -> None:
    imprint("ca", "init", **PASS)
    csr = make_csr(tmp_path, "pump-17")
    issued = imprint(
        "cert", "issue", "--csr", str(csr), "--profile", "device", "--out", "pump-17.pem", **PASS
    )
    serial = issued.stderr.split("issued serial ")[1].split(",")[0]
    ca = tmp_path / "data" / "ca"
    verified = openssl(
        "verify", "-CAfile", str(ca / "root.crt"), "-untrusted", str(ca / "issuing.crt"),
        "pump-17.pem", cwd=tmp_path,
    )  # fmt: skip
    assert verified.strip() == "pump-17.pem: OK"

    listed = imprint("cert", "list", "--expiring", "120d", **PASS).stdout
    assert serial in listed
    assert "CN=pump-17" in listed
    assert serial not in imprint("cert", "list", "--expiring", "1d", **PASS).stdout

    revoked = imprint("cert", "revoke", serial, "--reason", "keyCompromise", **PASS)
    assert "keyCompromise" in revoked.stdout
    assert serial in imprint("cert", "list", "--status", "revoked", **PASS).stdout
    twice = imprint("cert", "revoke", serial, check=False, **PASS)
    assert twice.returncode == 1
    assert "already revoked" in twice.stderr

    # Both changes are audited as the operating-system user; the refused one wrote nothing.
    actor = f"cli:{getpass.getuser()}"
    issue_logged = audited(tmp_path, "certificate.issue")
    assert [(e.actor, e.target_type, e.target_id) for e in issue_logged] == [
        (actor, "certificate", serial)
    ]
    revoke_logged = audited(tmp_path, "certificate.revoke")
    assert [(e.actor, e.target_id, e.details) for e in revoke_logged] == [
        (actor, serial, {"reason": "keyCompromise"})
    ]


def test_server_profile_needs_a_san(imprint: Run, tmp_path: Path) -> None:
    imprint("ca", "init", **PASS)
    csr = make_csr(tmp_path, "web")
    refused = imprint(
        "cert", "issue", "--csr", str(csr), "--profile", "server", check=False, **PASS
    )
    assert refused.returncode == 1
    assert "DNS name or IP address" in refused.stderr
    imprint(
        "cert", "issue", "--csr", str(csr), "--profile", "server", "--out", "web.pem",
        "--san", "web.example.test", "--san", "192.0.2.10", **PASS,
    )  # fmt: skip
    text = openssl("x509", "-in", "web.pem", "-noout", "-ext", "subjectAltName", cwd=tmp_path)
    assert "DNS:web.example.test, IP Address:192.0.2.10" in text


def test_bad_csr_is_refused_and_nothing_is_recorded(imprint: Run, tmp_path: Path) -> None:
    imprint("ca", "init", **PASS)
    garbage = tmp_path / "garbage.csr"
    garbage.write_text("this is not a CSR")
    result = imprint("cert", "issue", "--csr", str(garbage), check=False, **PASS)
    assert result.returncode == 1
    assert "not a PKCS#10" in result.stderr
    assert "Traceback" not in result.stderr
    assert "0 certificate(s)" in imprint("cert", "list", **PASS).stderr


def test_wrong_passphrase_is_a_clear_error(imprint: Run, tmp_path: Path) -> None:
    imprint("ca", "init", **PASS)
    csr = make_csr(tmp_path, "locked")
    result = imprint(
        "cert", "issue", "--csr", str(csr), check=False, IMPRINT_CA__PASSPHRASE="wrong"
    )
    assert result.returncode == 1
    assert "wrong passphrase" in result.stderr


def test_import_a_ca_made_with_openssl(imprint: Run, tmp_path: Path) -> None:
    ext = tmp_path / "ca.ext"
    ext.write_text(
        "basicConstraints=critical,CA:TRUE,pathlen:0\n"
        "keyUsage=critical,keyCertSign,cRLSign,digitalSignature\n"
        "subjectKeyIdentifier=hash\nauthorityKeyIdentifier=keyid\n"
    )
    (tmp_path / "pw.txt").write_text("import-me\n")
    openssl(
        "req", "-x509", "-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:P-256", "-nodes",
        "-keyout", "root-key.pem", "-out", "root.pem", "-subj", "/CN=Factory Root",
        "-days", "3650", "-addext", "keyUsage=critical,keyCertSign,cRLSign", cwd=tmp_path,
    )  # fmt: skip
    openssl(
        "req", "-new", "-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:P-256",
        "-passout", "file:pw.txt", "-keyout", "sub-key.pem", "-out", "sub.csr",
        "-subj", "/CN=Factory Issuing", cwd=tmp_path,
    )  # fmt: skip
    openssl(
        "x509", "-req", "-in", "sub.csr", "-CA", "root.pem", "-CAkey", "root-key.pem",
        "-CAcreateserial", "-days", "1000", "-extfile", "ca.ext", "-out", "sub.pem",
        cwd=tmp_path,
    )  # fmt: skip
    wrong = imprint(
        "ca", "import", "--cert", "sub.pem", "--key", "root-key.pem", "--chain", "root.pem",
        check=False, **PASS,
    )  # fmt: skip
    assert wrong.returncode == 1
    assert "does not belong" in wrong.stderr
    imported = imprint(
        "ca", "import", "--cert", "sub.pem", "--key", "sub-key.pem", "--chain", "root.pem",
        "--key-password-file", "pw.txt", **PASS,
    )  # fmt: skip
    assert "CN=Factory Issuing" in imported.stdout
    csr = make_csr(tmp_path, "after-import")
    imprint("cert", "issue", "--csr", str(csr), "--out", "leaf.pem", **PASS)
    verified = openssl(
        "verify", "-CAfile", "root.pem", "-untrusted", "sub.pem", "leaf.pem", cwd=tmp_path
    )
    assert verified.strip() == "leaf.pem: OK"


def test_admin_create_prints_a_working_token_once(imprint: Run, tmp_path: Path) -> None:
    from imprint.auth.api_keys import authenticate
    from imprint.store.api_keys import SqlApiKeyStore
    from imprint.store.db import create_engine

    created = imprint("admin", "create", "ci-bot")
    token = created.stdout.strip()
    assert token.startswith("imp_")
    duplicate = imprint("admin", "create", "ci-bot", check=False)
    assert duplicate.returncode == 1
    assert "exists already" in duplicate.stderr
    engine = create_engine(f"sqlite:///{tmp_path / 'data' / 'imprint.db'}")
    try:
        assert authenticate(SqlApiKeyStore(engine), token).name == "ci-bot"
    finally:
        engine.dispose()
    assert "ci-bot" in imprint("admin", "list").stdout


def test_enrollment_lifecycle_from_the_command_line(imprint: Run, tmp_path: Path) -> None:
    import json

    imprint("ca", "init", **PASS)
    created = imprint(
        "enrollment", "create", "--mechanism", "symmetric-key", "--owner", "acme",
        "--id", "plant-7", "--generate-psk", "--service", "mqtt=mqtts://broker:8883",
        "--quota", "5", "--output", "json", **PASS,
    )  # fmt: skip
    shown = json.loads(created.stdout)
    assert shown["id"] == "plant-7"
    assert shown["has_group_key"] is True
    assert shown["services"] == {"mqtt": "mqtts://broker:8883"}
    psk = shown["pre_shared_key"]
    assert len(psk) >= 16
    assert shown["group_key"]
    assert "plant-7" in imprint("enrollment", "list", **PASS).stdout
    details = imprint("enrollment", "show", "plant-7", "-o", "json", **PASS).stdout
    assert psk not in details
    assert json.loads(details)["has_pre_shared_key"] is True
    assert "pre_shared_key" not in json.loads(details)
    imprint("enrollment", "disable", "plant-7", **PASS)
    again = imprint("enrollment", "show", "plant-7", "-o", "json", **PASS).stdout
    assert json.loads(again)["enabled"] is False
    bad = imprint(
        "enrollment", "create", "--mechanism", "x509", "--owner", "acme", check=False, **PASS
    )
    assert bad.returncode == 1
    assert "certificate chain is required" in bad.stderr
    imprint("enrollment", "delete", "plant-7", **PASS)
    gone = imprint("enrollment", "show", "plant-7", check=False, **PASS)
    assert gone.returncode == 1
    assert "no enrollment" in gone.stderr
    assert "0 device(s)" in imprint("devices", "list", **PASS).stderr


def test_audit_verify_and_export(settings: Settings) -> None:
    import hashlib
    import json

    from sqlalchemy import text

    from imprint.audit import GENESIS, AuditEntry
    from imprint.store.audit import SqlAuditLog
    from imprint.store.db import create_engine

    empty = run_imprint(settings, "audit", "verify")  # the settings fixture made the CA
    assert empty.returncode == 0, empty.stderr
    assert empty.stdout.strip() == f"audit log verified: 0 entries, head {GENESIS}"
    engine = create_engine(settings.database_url())
    try:
        log = SqlAuditLog(engine)
        for n in range(3):
            log.write(AuditEntry(actor="cli:ops", action="org.create", target_type="org",
                                 target_id=f"org-{n}", details={"name": f"Org {n}"}))  # fmt: skip
        verified = run_imprint(settings, "audit", "verify")
        exported = run_imprint(settings, "audit", "export")
        to_file = run_imprint(settings, "audit", "export", "--out", "audit.jsonl")
        with engine.begin() as conn:
            conn.execute(text("UPDATE audit_log SET details = '{}' WHERE target_id = 'org-1'"))
            changed = conn.execute(text("SELECT id FROM audit_log WHERE target_id = 'org-1'"))
            changed_id = changed.scalar_one()
        broken = run_imprint(settings, "audit", "verify")
    finally:
        engine.dispose()
    lines = [json.loads(line) for line in exported.stdout.splitlines()]
    assert [line["target_id"] for line in lines] == ["org-0", "org-1", "org-2"]
    assert verified.returncode == 0
    assert verified.stdout.strip() == f"audit log verified: 3 entries, head {lines[-1]['hash']}"
    assert "exported 3 entries" in exported.stderr
    file = next(p for p in settings.data_dir.parents if p.exists()) / "audit.jsonl"
    assert to_file.returncode == 0, to_file.stderr
    assert file.read_text() == exported.stdout
    # The export checks out without imprint: each hash covers its line minus the hashes.
    prev = GENESIS
    for line in lines:
        assert line["prev_hash"] == prev
        body = {k: v for k, v in line.items() if k not in ("prev_hash", "hash")}
        canonical = json.dumps(body, sort_keys=True, separators=(",", ":"))
        assert hashlib.sha256((prev + canonical).encode()).hexdigest() == line["hash"]
        prev = line["hash"]
    assert broken.returncode == 1
    assert f"audit log broken at entry {changed_id}" in broken.stderr
    assert "its content (or its hash) was changed (content_changed)" in broken.stderr
