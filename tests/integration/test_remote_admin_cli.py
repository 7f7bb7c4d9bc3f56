"""The rest of the admin command line against a real HTTPS server, from a directory with
no data directory: OOB secrets (one, thousands from a CSV in batches with bad rows
reported, removed), registration keys, the deny-list, the audit log's check and export,
a plgd values import; lists of enrollments, organizations, OAuth clients and API keys
paged with true totals. Each change is audited as the API key that made it; ``mqtt``
stays on the server and says so."""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from imprint.audit import AuditQuery
from imprint.provisioning.specs import EnrollmentSpec
from imprint.settings import Settings
from imprint.tenancy.access import cli_principal
from tests.integration.conftest import Service, start_service
from tests.integration.fleet_helpers import Cli
from tests.integration.test_plgd_values import GROUP_ID, write_values
from tests.integration.test_x509_attestation import Manufacturer

ROWS = 4100  # three batches of the remote import: 2000, 2000 and 100 rows
FINGERPRINT = "ab" * 32


@pytest.fixture
def remote(settings: Settings, tmp_path: Path) -> Iterator[Service]:
    yield from start_service(settings, tmp_path / "server")


def _actors(service: Service, action: str) -> list[tuple[str, str | None]]:
    return [(e.actor, e.target_id) for e in service.runtime.audit.search(AuditQuery(action=action))]


def _pages(cli: Cli, *command: str) -> tuple[list[Any], int]:
    """Every item of a list read two at a time, following ``next``; and its total."""
    first = cli.json(*command, "--limit", "2")
    assert len(first["items"]) == 2
    assert first["next"]
    second = cli.json(*command, "--limit", "2", "--cursor", first["next"])
    assert second["total"] == first["total"]
    items = [*first["items"], *second["items"]]
    if second["next"] is None:
        assert len(items) == first["total"]
    return items, int(first["total"])


def _csv(path: Path) -> Path:
    lines = ["device_id,secret"]
    for n in range(ROWS):
        device_id, secret = f"meter-{n:05d}", f"printed-secret-{n}"
        if n == 9:
            secret = "short"  # line 11
        elif n == 2499:
            device_id = "has space"  # line 2501, in the second batch
        elif n == 4049:
            device_id = "meter-00004"  # line 4051, in the third batch: as on line 6
        lines.append(f"{device_id},{secret}")
    path.write_text("\n".join(lines) + "\n")
    return path


@pytest.mark.slow
def test_the_remaining_admin_commands_run_remotely(remote: Service, tmp_path: Path) -> None:
    app = remote.runtime.app
    me = cli_principal()
    for org in ("acme", "beta", "gamma"):
        app.organizations.create(me, org.title(), org_id=org)
    for spec in (
        {"id": "labels", "mechanism": "oob-secret", "owner": "acme"},
        {"id": "keys", "mechanism": "registration-key", "owner": "acme"},
        {"id": "spare", "mechanism": "oob-secret", "owner": "beta"},
    ):
        app.enrollments.create(me, EnrollmentSpec.model_validate(spec))
    for name in ("gateway", "hub", "portal"):
        app.oauth_clients.create(me, name, org_id="acme")
    for name in ("ci", "backup"):
        app.api_keys.create(me, name)
    cli = Cli(tmp_path / "person")
    cli(
        "login", "--server", remote.base_url, "--ca-file", str(remote.root_cert),
        input=remote.admin_token + "\n",
    )  # fmt: skip

    # One secret, added and removed.
    added = cli.json("oob", "add", "labels", "label-1", input="printed-secret-x\n")
    assert (added["device_id"], added["result"]) == ("label-1", "created")
    removed = cli.json("oob", "remove", "labels", "label-1")
    assert removed == {"enrollment_id": "labels", "device_id": "label-1", "removed": True}
    assert app.oob_secrets.page(me, "labels", limit=1).total == 0

    # 4,100 rows with three bad ones: by default nothing is written and the bad rows are
    # named by their line in the file, across batches.
    csv_file = _csv(tmp_path / "secrets.csv")
    strict = cli("oob", "import", "labels", str(csv_file), ok=False)
    assert strict.returncode == 1
    assert "4100 row(s): 0 created" in strict.stdout
    assert "nothing was written" in strict.stderr
    assert app.oob_secrets.page(me, "labels", limit=1).total == 0
    # --skip-invalid writes the good rows and reports the bad ones (exit 1 all the same).
    partial = cli(
        "oob", "import", "labels", str(csv_file), "--skip-invalid", "-o", "json", ok=False
    )
    assert partial.returncode == 1, partial.stderr
    report = json.loads(partial.stdout)
    assert (report["rows"], report["created"], report["written"]) == (ROWS, ROWS - 3, True)
    assert [(p["line"], p["field"], p["message"]) for p in report["invalid"]] == [
        (11, "secret", "8 to 256 characters"),
        (2501, "device_id", "1 to 200 printable ASCII characters, no spaces"),
        (4051, "device_id", "device id already on line 6"),
    ]
    assert app.oob_secrets.page(me, "labels", limit=1).total == ROWS - 3
    imports = remote.runtime.audit.search(AuditQuery(action="oob_secret.import"))
    assert {e.actor for e in imports} == {"api-key:admin"}
    assert sum(e.details["created"] for e in imports) == ROWS - 3
    # The server saw two of the bad rows; the repeated id of an earlier batch never left.
    assert sum(e.details.get("invalid", 0) for e in imports) == 2

    # Registration keys: created, rotated, shown (first halves only).
    made = cli.json("regkey", "create", "keys")
    first_half = made["current"]["first_half"]
    assert made["key"].startswith(first_half)
    twice = cli("regkey", "create", "keys", ok=False)
    assert twice.returncode == 1
    assert "rotate it" in twice.stderr
    rotated = cli.json("regkey", "rotate", "keys", "--transition", "1h")
    assert rotated["previous"]["first_half"] == first_half
    shown = cli.json("regkey", "show", "keys")
    assert {k["first_half"] for k in shown["items"]} == {
        first_half,
        rotated["current"]["first_half"],
    }
    assert made["key"] not in json.dumps(shown)
    assert _actors(remote, "registration_key.create") == [("api-key:admin", "keys")]
    assert _actors(remote, "registration_key.rotate") == [("api-key:admin", "keys")]

    # The deny-list.
    denied = cli.json("denylist", "add", "--fingerprint", FINGERPRINT.upper(), "--reason", "lost")
    assert denied["fingerprint_sha256"] == FINGERPRINT
    assert [e["reason"] for e in cli.json("denylist", "list")["items"]] == ["lost"]
    cli("denylist", "remove", FINGERPRINT)
    assert cli.json("denylist", "list")["total"] == 0
    assert _actors(remote, "deny_list.add") == [("api-key:admin", FINGERPRINT)]
    assert _actors(remote, "deny_list.remove") == [("api-key:admin", FINGERPRINT)]

    # The audit log: its chain checked, and exported as JSON lines with its hashes.
    verified = cli.json("audit", "verify")
    assert verified["ok"] is True
    assert verified["broken"] is None
    exported = tmp_path / "audit.jsonl"
    cli("audit", "export", "--out", str(exported))
    entries = [json.loads(line) for line in exported.read_text().splitlines()]
    assert len(entries) >= verified["entries"]
    assert entries[verified["entries"] - 1]["hash"] == verified["head"]
    assert {"deny_list.add", "registration_key.rotate"} <= {e["action"] for e in entries}

    # A plgd values file, checked here and imported there.
    values = write_values(tmp_path / "values.yaml", Manufacturer.create("Mfg"))
    dry = cli("import", "plgd-values", str(values), "--dry-run")
    assert f"enrollment {GROUP_ID}: would be created" in dry.stdout
    imported = cli.json("import", "plgd-values", str(values))
    assert imported["owner_claim"]["agree"] is True
    assert [(a["kind"], a["result"]) for a in imported["actions"]] == [
        ("client", "created"),
        ("enrollment", "created"),
    ]
    assert _actors(remote, "enrollment.import") == [("api-key:admin", GROUP_ID)]

    # Lists paged two at a time, with their true totals.
    enrollments, total = _pages(cli, "enrollment", "list")
    assert total == 4  # labels, keys, spare and the imported group
    assert [e["id"] for e in enrollments] == sorted(e["id"] for e in enrollments)
    orgs, total = _pages(cli, "org", "list")
    assert ([o["id"] for o in orgs], total) == (["acme", "beta", "gamma"], 3)
    clients, total = _pages(cli, "client", "list")
    assert total == 4  # three made here and the imported one
    assert len({c["client_id"] for c in clients}) == 4
    keys, total = _pages(cli, "admin", "list")
    assert ([k["name"] for k in keys], total) == (["admin", "backup", "ci"], 3)

    # mqtt writes files and signals the broker on the server's own host: not remotely.
    refused = cli("mqtt", "sync", ok=False)
    assert refused.returncode == 2
    assert "runs on the server's own data directory" in refused.stderr
