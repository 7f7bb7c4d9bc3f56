"""Backups of an instance: its data directory and, on SQLite, a consistent copy of the
database, in one gzip-compressed tar file; and restoring one into an empty place.

The file holds::

    imprint-backup.json    the manifest: format, imprint version, when, the database
                           kind and schema revision, and every file's size and SHA-256
    data/<path>            each file of the data directory but the live SQLite files
    database/imprint.db    SQLite only: a snapshot made with SQLite's online backup API,
                           consistent while the server writes

A PostgreSQL database is not in the file: ``pg_dump`` is the tool for it. Secrets kept
outside the data directory (``secrets.key_file``, ``ca.passphrase_file``, or given in
the configuration or the environment) are not in it either; the report says which, so
they can be kept with the backup. What is in it (the encrypted CA keys, and the
key-encryption key and a generated CA passphrase when they live in the data
directory) opens the CA: the file is written with mode 0600.

A restore checks everything before it writes anything: the manifest, that each member
is a plain file the manifest names with its size and digest, and that the data
directory and the SQLite database do not exist yet (or the directory is empty).
"""

from __future__ import annotations

import hashlib
import io
import json
import os
import shutil
import sqlite3
import tarfile
import tempfile
from collections.abc import Iterator
from contextlib import closing, contextmanager
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path, PurePosixPath
from typing import IO, Any

from sqlalchemy.engine import make_url

from imprint import __version__
from imprint.errors import InvalidValue
from imprint.settings import Settings

__all__ = ["BackupReport", "RestoreReport", "create_backup", "restore_backup"]

FORMAT = 1
MANIFEST = "imprint-backup.json"
DATABASE_MEMBER = "database/imprint.db"
_CHUNK = 1 << 20


@dataclass(frozen=True, slots=True)
class BackupReport:
    files: int
    size: int
    database: str  # "sqlite" or "postgresql"
    revision: str | None
    not_included: list[str] = field(default_factory=list)


@dataclass(frozen=True, slots=True)
class RestoreReport:
    data_dir: Path
    files: int
    database_path: Path | None
    revision: str | None
    created_at: str


def _sqlite_path(settings: Settings) -> Path | None:
    url = make_url(settings.database_url())
    if url.get_backend_name() != "sqlite":
        return None
    if not url.database or url.database == ":memory:":
        raise InvalidValue("database.url: an in-memory SQLite database cannot be backed up")
    return Path(url.database).resolve()


def _live_files(database: Path | None) -> set[Path]:
    if database is None:
        return set()
    return {Path(f"{database}{suffix}") for suffix in ("", "-wal", "-shm", ".writer-lock")}


def _outside(settings: Settings) -> list[str]:
    """The secrets an instance needs that a backup of its data directory leaves out."""
    data = settings.data_dir.resolve()
    missing = []
    if settings.secrets.key is not None:
        missing.append("secrets.key (given in the configuration or the environment)")
    elif not settings.secrets_key_path().resolve().is_relative_to(data):
        missing.append(f"secrets.key_file ({settings.secrets_key_path()})")
    passphrase_file = settings.passphrase_path()
    if settings.ca.passphrase is not None:
        missing.append("the CA passphrase (ca.passphrase, or IMPRINT_CA__PASSPHRASE)")
    elif not passphrase_file.is_file():
        missing.append(f"the CA passphrase (none configured, and no file at {passphrase_file})")
    elif not passphrase_file.resolve().is_relative_to(data):
        missing.append(f"ca.passphrase_file ({passphrase_file})")
    return missing


def _revision(connection: sqlite3.Connection) -> str | None:
    try:
        row = connection.execute("SELECT version_num FROM alembic_version").fetchone()
    except sqlite3.Error:
        return None
    return None if row is None else str(row[0])


def _postgres_revision(settings: Settings) -> str | None:
    from imprint.store.db import create_engine, current_revision

    engine = create_engine(settings.database_url())
    try:
        return current_revision(engine)
    finally:
        engine.dispose()


class _Writer:
    """Adds files to the tar file and keeps their sizes and digests for the manifest."""

    def __init__(self, archive: tarfile.TarFile) -> None:
        self.archive = archive
        self.files: dict[str, dict[str, Any]] = {}

    def add(self, name: str, path: Path) -> None:
        digest = hashlib.sha256()
        size = 0
        with path.open("rb") as source:
            while chunk := source.read(_CHUNK):
                digest.update(chunk)
                size += len(chunk)
            source.seek(0)
            info = tarfile.TarInfo(name)
            info.size = size
            info.mode = 0o600
            info.mtime = int(path.stat().st_mtime)
            self.archive.addfile(info, source)
        self.files[name] = {"size": size, "sha256": digest.hexdigest()}

    def add_bytes(self, name: str, data: bytes) -> None:
        info = tarfile.TarInfo(name)
        info.size = len(data)
        info.mode = 0o600
        info.mtime = int(datetime.now(UTC).timestamp())
        self.archive.addfile(info, io.BytesIO(data))


def create_backup(settings: Settings, target: Path) -> BackupReport:
    """Write a backup of the instance to ``target`` (a new file).

    Raises:
        InvalidValue: ``target`` exists, there is no data directory, or the database
            cannot be read.
    """
    data = settings.data_dir.resolve()
    if not data.is_dir():
        raise InvalidValue(f"no data directory at {settings.data_dir}: nothing to back up")
    database = _sqlite_path(settings)
    if database is not None and not database.is_file():
        raise InvalidValue(f"no SQLite database at {database}")
    skip = _live_files(database) | {target.resolve()}
    try:
        descriptor = os.open(target, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    except FileExistsError:
        raise InvalidValue(f"{target} exists: give a new file name") from None
    except OSError as exc:
        raise InvalidValue(f"cannot write {target}: {exc.strerror}") from None
    try:
        with os.fdopen(descriptor, "wb") as raw, tarfile.open(fileobj=raw, mode="w:gz") as tar:
            writer = _Writer(tar)
            for path in sorted(data.rglob("*")):
                if path.is_file() and not path.is_symlink() and path.resolve() not in skip:
                    writer.add(f"data/{path.relative_to(data).as_posix()}", path)
            revision = None
            if database is not None:
                with tempfile.TemporaryDirectory(dir=target.resolve().parent) as scratch:
                    snapshot = Path(scratch) / "imprint.db"
                    _snapshot(database, snapshot)
                    with closing(sqlite3.connect(snapshot)) as copy:
                        revision = _revision(copy)
                    writer.add(DATABASE_MEMBER, snapshot)
            else:
                revision = _postgres_revision(settings)
            kind = "postgresql" if database is None else "sqlite"
            manifest = {
                "format": FORMAT,
                "imprint": __version__,
                "created_at": datetime.now(UTC).isoformat(timespec="seconds"),
                "database": kind,
                "revision": revision,
                "files": writer.files,
            }
            writer.add_bytes(MANIFEST, json.dumps(manifest, indent=1).encode())
    except BaseException:
        target.unlink(missing_ok=True)
        raise
    return BackupReport(
        files=len(writer.files),
        size=target.stat().st_size,
        database=kind,
        revision=revision,
        not_included=_outside(settings),
    )


def _snapshot(database: Path, copy: Path) -> None:
    try:
        with (
            closing(sqlite3.connect(f"file:{database}?mode=ro", uri=True)) as source,
            closing(sqlite3.connect(copy)) as destination,
        ):
            source.backup(destination)
    except sqlite3.Error as exc:
        raise InvalidValue(f"cannot read the SQLite database {database}: {exc}") from None


# --- restore ------------------------------------------------------------------------------


def _check_member_name(name: str) -> None:
    path = PurePosixPath(name)
    if path.is_absolute() or ".." in path.parts or not path.parts:
        raise InvalidValue(f"the backup names a file outside its place: {name!r}")
    if name != DATABASE_MEMBER and path.parts[0] != "data":
        raise InvalidValue(f"the backup holds an unexpected file: {name!r}")


def _manifest(tar: tarfile.TarFile) -> dict[str, Any]:
    try:
        member = tar.getmember(MANIFEST)
    except KeyError:
        raise InvalidValue("not an imprint backup: it has no imprint-backup.json") from None
    handle = tar.extractfile(member)
    if handle is None or member.size > 16 * _CHUNK:
        raise InvalidValue("not an imprint backup: its manifest is not a small file")
    try:
        manifest = json.loads(handle.read())
    except ValueError:
        raise InvalidValue("not an imprint backup: its manifest is not JSON") from None
    if not isinstance(manifest, dict) or manifest.get("format") != FORMAT:
        raise InvalidValue(f"not a backup this version reads (format {FORMAT} is)")
    files = manifest.get("files")
    if not isinstance(files, dict):
        raise InvalidValue("not an imprint backup: its manifest lists no files")
    return manifest


@contextmanager
def _open(source: Path) -> Iterator[tarfile.TarFile]:
    try:
        with tarfile.open(source, mode="r:gz") as tar:
            yield tar
    except FileNotFoundError:
        raise InvalidValue(f"no file {source}") from None
    except (tarfile.TarError, OSError, EOFError) as exc:
        raise InvalidValue(f"{source} is not a readable backup: {exc}") from None


def _copy_checked(handle: IO[bytes], target: Path, size: int, sha256: str, name: str) -> None:
    digest = hashlib.sha256()
    written = 0
    descriptor = os.open(target, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    with os.fdopen(descriptor, "wb") as out:
        while chunk := handle.read(_CHUNK):
            digest.update(chunk)
            written += len(chunk)
            if written > size:
                break
            out.write(chunk)
    if written != size or digest.hexdigest() != sha256:
        raise InvalidValue(f"the backup is damaged: {name} does not match its manifest")


def _empty_or_missing(path: Path) -> bool:
    return not path.exists() or (path.is_dir() and not any(path.iterdir()))


def restore_backup(settings: Settings, source: Path) -> RestoreReport:
    """Restore the backup ``source`` into the data directory (and SQLite database) the
    settings name; both must not exist yet (an empty data directory is fine).

    Raises:
        InvalidValue: the file is not a sound backup, or restoring it would overwrite
            or mismatch what is configured. Nothing is written then.
    """
    data = settings.data_dir.resolve()
    if not _empty_or_missing(data):
        raise InvalidValue(
            f"the data directory {settings.data_dir} is not empty: restore into a new one"
        )
    database = _sqlite_path(settings)
    with _open(source) as tar:
        manifest = _manifest(tar)
        files: dict[str, Any] = manifest["files"]
        kind = manifest.get("database")
        if kind == "sqlite" and database is None:
            raise InvalidValue(
                "the backup holds a SQLite database, but database.url names PostgreSQL: "
                "leave database.url unset (or a sqlite:/// URL) to restore it"
            )
        if database is not None and database.exists():
            raise InvalidValue(f"a database exists at {database}: restore into a new place")
        members = {m.name: m for m in tar.getmembers() if m.name != MANIFEST}
        if set(members) != set(files):
            raise InvalidValue("the backup is damaged: its files and its manifest differ")
        for name, member in members.items():
            _check_member_name(name)
            if not member.isfile():
                raise InvalidValue(f"the backup holds something other than a file: {name!r}")
            entry = files[name]
            if (
                not isinstance(entry, dict)
                or not isinstance(entry.get("size"), int)
                or entry["size"] != member.size
                or not isinstance(entry.get("sha256"), str)
            ):
                raise InvalidValue(f"the backup is damaged: {name} does not match its manifest")
        if (DATABASE_MEMBER in files) != (kind == "sqlite"):
            raise InvalidValue("the backup is damaged: its database and manifest differ")
        data.parent.mkdir(parents=True, exist_ok=True)
        staging = Path(tempfile.mkdtemp(prefix=".imprint-restore-", dir=data.parent))
        try:
            for name, member in members.items():
                entry = files[name]
                target = staging.joinpath(*PurePosixPath(name).parts)
                target.parent.mkdir(parents=True, exist_ok=True, mode=0o700)
                handle = tar.extractfile(member)
                if handle is None:
                    raise InvalidValue(f"the backup is damaged: {name} cannot be read")
                _copy_checked(handle, target, entry["size"], entry["sha256"], name)
            _move_into_place(staging, data, database)
        finally:
            shutil.rmtree(staging, ignore_errors=True)
    return RestoreReport(
        data_dir=settings.data_dir,
        files=len(files),
        database_path=database if kind == "sqlite" else None,
        revision=manifest.get("revision"),
        created_at=str(manifest.get("created_at")),
    )


def _move_into_place(staging: Path, data: Path, database: Path | None) -> None:
    restored = staging / "data"
    restored.mkdir(exist_ok=True, mode=0o700)
    snapshot = staging / "database" / "imprint.db"
    if database is not None and snapshot.exists():
        if database.parent == data:
            snapshot.replace(restored / database.name)
        else:
            database.parent.mkdir(parents=True, exist_ok=True)
            shutil.move(snapshot, database)
    if data.exists():
        for child in restored.iterdir():
            child.replace(data / child.name)
    else:
        restored.replace(data)
    data.chmod(0o700)
