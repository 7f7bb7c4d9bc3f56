"""The command line against a real HTTPS server, run from a directory with no data
directory: it logs in with an API key or a user's password, lists as JSON, pages,
addresses a device by its own id, and a revoked API key is refused at the next
request."""

from __future__ import annotations

import json
import stat
from collections.abc import Iterator
from pathlib import Path

import pytest

from imprint.audit import AuditQuery
from imprint.provisioning.specs import EnrollmentSpec
from imprint.settings import Settings
from imprint.tenancy.access import cli_principal
from tests.integration.conftest import Service, start_service
from tests.integration.fleet_helpers import Cli, pending_device

PASSWORD = "correct horse battery"
BOX_DRAWING = set("─│┃━┏┓┗┛┡┩╇╋┼├┤┌┐└┘")


@pytest.fixture
def remote(settings: Settings, tmp_path: Path) -> Iterator[Service]:
    yield from start_service(settings, tmp_path / "server")


@pytest.mark.slow
def test_the_command_line_runs_the_fleet_from_elsewhere(remote: Service, tmp_path: Path) -> None:
    app = remote.runtime.app
    app.organizations.create(cli_principal(), "Acme", org_id="acme")
    app.organizations.create(cli_principal(), "Beta", org_id="beta")
    pump = pending_device(remote, "acme", "pump-17")
    pending_device(remote, "acme", "dev-1")
    theirs = pending_device(remote, "beta", "dev-1")
    for n in range(4):
        pending_device(remote, "acme", f"meter-{n}")
    spec = {"id": "labels", "mechanism": "oob-secret", "owner": "acme"}
    app.enrollments.create(cli_principal(), EnrollmentSpec.model_validate(spec))
    for n in range(3):
        app.oob_secrets.register(cli_principal(), "labels", f"label-{n}", f"printed-secret-{n}")
    cli = Cli(tmp_path / "person")
    assert cli("--version").stdout.startswith("imprint ")
    assert not (cli.cwd / "data").exists()

    # Log in with the admin API key, read from standard input.
    server = ["--server", remote.base_url, "--ca-file", str(remote.root_cert)]
    cli("login", *server, input=remote.admin_token + "\n")
    profiles = tmp_path / "person" / "config" / "imprint" / "profiles.yaml"
    assert stat.S_IMODE(profiles.stat().st_mode) == 0o600
    assert stat.S_IMODE(profiles.parent.stat().st_mode) == 0o700
    assert remote.admin_token in profiles.read_text()

    # A list as JSON, a page at a time, with the true total.
    first = cli.json("devices", "list", "--limit", "3")
    assert first["total"] == 7
    assert len(first["items"]) == 3
    assert first["next"]
    second = cli.json("devices", "list", "--limit", "3", "--cursor", str(first["next"]))
    ids = [d["id"] for d in [*first["items"], *second["items"]]]
    assert len(set(ids)) == 6
    everything = cli.json("devices", "list", "--limit", "3", "--all")
    assert len(everything["items"]) == everything["total"] == 7
    assert everything["next"] is None
    # A table on a pipe: no box-drawing, no id cut short; the count on standard error.
    table = cli("devices", "list")
    assert not BOX_DRAWING & set(table.stdout)
    assert pump.id in table.stdout
    assert "7 device(s)" in table.stderr
    rows = list(csvreader(cli("devices", "list", "--output", "csv").stdout))
    assert rows[0][:2] == ["id", "device id"]
    assert len(rows) == 8
    secrets = cli.json("oob", "list", "labels", "--limit", "2")
    assert (secrets["total"], len(secrets["items"]), secrets["next"]) == (3, 2, "label-1")
    assert "printed-secret" not in json.dumps(secrets)

    # A device by its own id; an id two owners share needs --owner.
    assert cli.json("devices", "show", "pump-17")["id"] == pump.id
    shared = cli("devices", "show", "dev-1", ok=False)
    assert shared.returncode == 1
    assert "several owners" in shared.stderr
    assert cli.json("devices", "show", "dev-1", "--owner", "beta")["id"] == theirs.id
    assert cli.json("devices", "approve", "dev-1", "--owner", "beta")["status"] == "approved"

    # Organizations and users, remote; the password comes on standard input, no prompt.
    made = cli.json("org", "create", "Gamma", "--id", "gamma")
    assert made["id"] == "gamma"
    created = cli(
        "user", "create", "bob@gamma.test", "--org", "gamma", "--role", "admin", "-o", "json",
        input=PASSWORD + "\n",
    )  # fmt: skip
    assert "Password" not in created.stderr
    assert "Warning" not in created.stderr
    assert json.loads(created.stdout)["username"] == "bob@gamma.test"
    # Bob signs in with his password into a second profile and sees his organization only.
    cli(
        "login", *server, "--profile", "bob", "--username", "bob@gamma.test",
        input=PASSWORD + "\n",
    )  # fmt: skip
    seen = cli.json("--profile", "bob", "org", "list")
    assert [o["id"] for o in seen["items"]] == ["gamma"]
    wrong = cli(
        "login", *server, "--profile", "x", "--username", "bob@gamma.test", input="no\n", ok=False
    )
    assert "wrong user name or password" in wrong.stderr

    # An API key made remotely works until it is revoked; the next request gets 401.
    key = cli.json("--profile", "default", "admin", "create", "ci", "--expires-in-days", "30")
    cli("login", *server, "--profile", "ci", input=str(key["token"]) + "\n")
    assert cli.json("--profile", "ci", "org", "list")["total"] == 3
    cli("--profile", "default", "admin", "revoke", "ci")
    refused = cli("--profile", "ci", "org", "list", ok=False)
    assert refused.returncode == 1
    assert "refused the credential of profile 'ci'" in refused.stderr

    revoked = remote.runtime.audit.search(AuditQuery(action="api_key.revoke"))
    assert [(e.actor, e.target_id) for e in revoked] == [("api-key:admin", "ci")]
    bob = remote.runtime.audit.search(AuditQuery(actor="user:bob@gamma.test"))
    assert "user.login" in {e.action for e in bob}


def csvreader(text: str) -> Iterator[list[str]]:
    import csv
    import io

    yield from csv.reader(io.StringIO(text))
