"""`imprint backup create|restore` with the real command line, while the server runs:
a restored instance has the same CA and what was stored before the backup; damaged or
misplaced backups are refused before anything is written."""

from __future__ import annotations

import io
import json
import subprocess
import tarfile
from pathlib import Path

import pytest

from imprint.settings import Settings
from imprint.store import db
from tests.e2e.conftest import run_imprint
from tests.integration.conftest import Service, ensure_org, start_service


def cli(settings: Settings, *args: str) -> subprocess.CompletedProcess[str]:
    return run_imprint(settings, "backup", *args)


def create_enrollment(service: Service, enrollment_id: str) -> int:
    body = {"id": enrollment_id, "mechanism": "oob-secret", "owner": "acme"}
    with service.admin() as admin:
        ensure_org(admin, "acme")
        return admin.post("/api/v1/enrollments", json=body).status_code


def enrollment_status(service: Service, enrollment_id: str) -> int:
    with service.admin() as admin:
        return admin.get(f"/api/v1/enrollments/{enrollment_id}").status_code


def restored_settings(settings: Settings, place: Path) -> Settings:
    sqlite = settings.database_url().startswith("sqlite")
    url = f"sqlite:///{place}/imprint.db" if sqlite else settings.database_url()
    database = settings.database.model_copy(update={"url": url})
    return settings.model_copy(update={"data_dir": place / "data", "database": database})


@pytest.mark.slow
@pytest.mark.both_databases
def test_a_backup_taken_while_serving_restores_the_ca_and_the_data(
    settings: Settings, service: Service, tmp_path: Path
) -> None:
    sqlite = settings.database_url().startswith("sqlite")
    assert create_enrollment(service, "before") == 201
    backup = tmp_path / "backup.tar.gz"
    made = cli(settings, "create", str(backup))
    assert made.returncode == 0, made.stderr
    assert f"backup written: {backup}" in made.stdout
    if sqlite:
        assert f"SQLite snapshot at revision {db.head_revision()}" in made.stdout
    else:
        assert "no database: PostgreSQL is backed up with pg_dump" in made.stdout
    # The passphrase came from the environment: the backup says it is not in it.
    assert "not in the backup, keep it with it: the CA passphrase" in made.stderr
    assert backup.stat().st_mode & 0o777 == 0o600
    assert create_enrollment(service, "after") == 201
    again = cli(settings, "create", str(backup))
    assert again.returncode == 1
    assert "exists: give a new file name" in again.stderr

    target = restored_settings(settings, tmp_path / "restored")
    restored = cli(target, "restore", str(backup))
    assert restored.returncode == 0, restored.stderr
    assert f"into {target.data_dir}" in restored.stdout
    files = set((target.data_dir / "ca").iterdir())
    assert {p.name for p in files} >= {"root.crt", "root.key", "issuing.crt", "issuing.key"}
    for name in ("root.crt", "issuing.key", "server.key"):
        original = settings.data_dir / "ca" / name
        if original.exists():
            assert (target.data_dir / "ca" / name).read_bytes() == original.read_bytes()
    twice = cli(target, "restore", str(backup))
    assert twice.returncode == 1
    assert "is not empty: restore into a new one" in twice.stderr

    for copy in start_service(target, tmp_path):
        assert copy.admin_token == service.admin_token  # the same admin key works
        assert enrollment_status(copy, "before") == 200
        # SQLite came back as it was at the backup; PostgreSQL was not in it.
        assert enrollment_status(copy, "after") == (404 if sqlite else 200)
        assert copy.root_cert.read_bytes() == service.root_cert.read_bytes()


def _rewrite(source: Path, target: Path, change: str) -> None:
    """A copy of the backup ``source`` with one thing wrong."""
    with tarfile.open(source, "r:gz") as tar, tarfile.open(target, "w:gz") as out:
        for member in tar.getmembers():
            data = tar.extractfile(member).read()  # type: ignore[union-attr]
            if change == "content" and member.name == "data/secrets.key":
                data = b"not the key"
            if change == "traversal" and member.name == "imprint-backup.json":
                manifest = json.loads(data)
                manifest["files"]["data/../../escaped"] = {"size": 1, "sha256": "0" * 64}
                data = json.dumps(manifest).encode()
                extra = tarfile.TarInfo("data/../../escaped")
                extra.size = 1
                out.addfile(extra, io.BytesIO(b"x"))
            member.size = len(data)
            out.addfile(member, io.BytesIO(data))


@pytest.mark.slow
@pytest.mark.parametrize(
    ("change", "message"),
    [
        ("content", "the backup is damaged: data/secrets.key does not match its manifest"),
        ("traversal", "the backup names a file outside its place: 'data/../../escaped'"),
        ("not-a-backup", "is not a readable backup"),
    ],
)
def test_a_damaged_backup_is_refused_and_nothing_is_written(
    settings: Settings, service: Service, tmp_path: Path, change: str, message: str
) -> None:
    backup = tmp_path / "backup.tar.gz"
    assert cli(settings, "create", str(backup)).returncode == 0
    broken = tmp_path / "broken.tar.gz"
    if change == "not-a-backup":
        broken.write_bytes(b"just some bytes")
    else:
        _rewrite(backup, broken, change)
    place = tmp_path / "restored"
    result = cli(restored_settings(settings, place), "restore", str(broken))
    assert result.returncode == 1
    assert message in result.stderr
    assert "Traceback" not in result.stderr
    assert not (place / "data").exists()
    assert not (place / "imprint.db").exists()
    assert not (tmp_path.parent / "escaped").exists()
    assert not list(place.glob(".imprint-restore-*"))


@pytest.mark.slow
def test_the_default_layout_round_trips_with_the_database_in_the_data_directory(
    tmp_path: Path,
) -> None:
    """No database.url: the SQLite file lives in the data directory, and comes back there."""
    original = Settings(data_dir=tmp_path / "one" / "data", ca={"passphrase": "test-passphrase"})
    for service in start_service(original, tmp_path):
        assert create_enrollment(service, "kept") == 201
        backup = tmp_path / "backup.tar.gz"
        made = cli(original, "create", str(backup))
        assert made.returncode == 0, made.stderr
    with tarfile.open(backup, "r:gz") as tar:
        names = set(tar.getnames())
    assert "database/imprint.db" in names
    assert not {n for n in names if n.startswith("data/imprint.db")}  # no live SQLite files
    copy = Settings(data_dir=tmp_path / "two" / "data", ca={"passphrase": "test-passphrase"})
    restored = cli(copy, "restore", str(backup))
    assert restored.returncode == 0, restored.stderr
    revision = db.head_revision()
    assert f"SQLite database at revision {revision}: {copy.data_dir.resolve()}/imprint.db" in (
        restored.stdout.replace("\n", "")
    )
    for service in start_service(copy, tmp_path):
        assert enrollment_status(service, "kept") == 200
