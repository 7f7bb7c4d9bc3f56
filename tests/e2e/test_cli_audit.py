"""Every change the command line makes is in the audit log, as ``cli:<os user>``: the
``org``, ``user``, ``client`` and ``admin`` commands go through the same operations as
the API and the console."""

from __future__ import annotations

import getpass
import json
from pathlib import Path

from imprint.audit import AuditEntry, AuditQuery
from imprint.store.audit import SqlAuditLog
from imprint.store.db import create_engine
from tests.e2e.conftest import Run

PASS = {"IMPRINT_CA__PASSPHRASE": "correct horse battery staple"}
PASSWORD = "a long enough password"


def _log(tmp_path: Path) -> list[AuditEntry]:
    engine = create_engine(f"sqlite:///{tmp_path / 'data' / 'imprint.db'}")
    try:
        return list(reversed(SqlAuditLog(engine).search(AuditQuery(limit=1000))))
    finally:
        engine.dispose()


def test_the_command_lines_changes_are_audited_as_the_os_user(imprint: Run, tmp_path: Path) -> None:
    imprint("admin", "create", "ci-bot")  # before the CA: it needs the database alone
    imprint("ca", "init", **PASS)
    imprint("org", "create", "Acme", "--id", "acme", **PASS)
    imprint("org", "create", "East", "--id", "acme-east", "--parent", "acme", **PASS)
    user_id = json.loads(
        imprint(
            "user", "create", "wile@acme.test", "--org", "acme", "-o", "json",
            input=PASSWORD, **PASS,
        ).stdout
    )["id"]  # fmt: skip
    imprint("user", "role", "wile@acme.test", "acme-east", "operator", **PASS)
    imprint("user", "role", "wile@acme.test", "acme-east", "none", **PASS)
    imprint("user", "password", "wile@acme.test", input=PASSWORD + "!", **PASS)
    imprint("user", "disable", "wile@acme.test", **PASS)
    imprint("user", "enable", "wile@acme.test", **PASS)
    client_id = imprint(
        "client", "create", "bot", "--org", "acme", "--role", "operator", **PASS
    ).stdout.split()[0]
    refused = imprint("user", "role", "nobody@acme.test", "acme", "viewer", check=False, **PASS)
    assert refused.returncode == 1
    assert "no user 'nobody@acme.test'" in refused.stderr

    me = f"cli:{getpass.getuser()}"
    mine = [e for e in _log(tmp_path) if e.actor == me]
    assert [(e.action, e.target_id, e.org_id) for e in mine] == [
        ("api_key.create", "ci-bot", None),
        ("org.create", "acme", "acme"),
        ("org.create", "acme-east", "acme-east"),
        ("user.create", user_id, "acme"),
        ("user.role.set", user_id, "acme-east"),
        ("user.role.remove", user_id, "acme-east"),
        ("user.password.reset", user_id, None),
        ("user.disable", user_id, None),
        ("user.enable", user_id, None),
        ("oauth_client.create", client_id, "acme"),
    ]
    assert mine[0].details["role"] == "admin"
    assert mine[2].details == {"name": "East", "parent_id": "acme"}
    assert mine[3].details == {"username": "wile@acme.test", "role": "viewer"}
    assert mine[4].details == {"role": "operator"}
    assert mine[9].details["grant_types"] == ["client_credentials"]
    assert PASSWORD not in str([e.details for e in mine])
