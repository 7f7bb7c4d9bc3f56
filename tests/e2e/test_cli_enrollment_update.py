"""The command line fails early and says why: ``imprint enrollment update`` changes what
can change (audited as the operating-system user) and refuses the rest; enrollments of
an organization that does not exist are refused; ``oob import --dry-run`` exits 1 on
invalid rows, and ``--valid-until`` sets the rows' expiry."""

from __future__ import annotations

import getpass
import json
import re
from datetime import UTC, datetime, timedelta
from pathlib import Path

from imprint.audit import AuditQuery
from imprint.store.audit import SqlAuditLog
from imprint.store.db import create_engine
from tests.e2e.conftest import Run

PASS = {"IMPRINT_CA__PASSPHRASE": "correct horse battery staple"}


def updates(tmp_path: Path) -> list[tuple[str, str | None, dict[str, object]]]:
    engine = create_engine(f"sqlite:///{tmp_path / 'data' / 'imprint.db'}")
    try:
        found = SqlAuditLog(engine).search(AuditQuery(action="enrollment.update", limit=100))
    finally:
        engine.dispose()
    return [(e.actor, e.target_id, dict(e.details)) for e in reversed(found)]


def test_enrollment_update_changes_what_it_may_and_refuses_the_rest(
    imprint: Run, tmp_path: Path
) -> None:
    imprint("ca", "init", **PASS)
    imprint("org", "create", "Acme", "--id", "acme", **PASS)
    imprint(
        "enrollment", "create", "--mechanism", "registration-key", "--owner", "acme",
        "--id", "thermo", **PASS,
    )  # fmt: skip
    changed = imprint(
        "enrollment", "update", "thermo", "--channel-field", "field1=temperature",
        "--service", "mqtt=mqtts://broker.example:8883", "--quota", "50",
        "--manual-approval", "--generate-psk", "--output", "json", **PASS,
    )  # fmt: skip
    shown = json.loads(changed.stdout)
    assert shown["channel"]["fields"] == {"field1": "temperature"}
    assert shown["services"] == {"mqtt": "mqtts://broker.example:8883"}
    assert (shown["quota"], shown["manual_approval"], shown["has_pre_shared_key"]) == (
        50,
        True,
        True,
    )
    assert shown["changed"] == ["channel", "manual_approval", "pre_shared_key", "quota", "services"]
    psk = shown["pre_shared_key"]
    assert len(psk) >= 16

    cleared = imprint("enrollment", "update", "thermo", "--no-channel", "--quota", "0", **PASS)
    assert "changed: channel, quota" in cleared.stdout
    unsafe = tmp_path / "owner.yaml"
    unsafe.write_text("owner: globex\n")
    refused = imprint("enrollment", "update", "thermo", "--file", str(unsafe), check=False, **PASS)
    nothing = imprint("enrollment", "update", "thermo", check=False, **PASS)
    bad = imprint("enrollment", "update", "thermo", "--psk", "short", check=False, **PASS)
    missing = imprint("enrollment", "update", "nope", "--quota", "3", check=False, **PASS)

    assert refused.returncode == 1
    assert "owner cannot be changed" in " ".join(refused.stderr.split())
    assert nothing.returncode == 1
    assert "nothing to change" in nothing.stderr
    assert bad.returncode == 1
    assert "pre_shared_key" in bad.stderr
    assert missing.returncode == 1
    user = f"cli:{getpass.getuser()}"
    assert updates(tmp_path) == [
        (
            user,
            "thermo",
            {"changed": ["channel", "manual_approval", "pre_shared_key", "quota", "services"]},
        ),
        (user, "thermo", {"changed": ["channel", "quota"]}),
    ]
    assert psk not in str(updates(tmp_path))


def test_an_enrollment_for_an_unknown_organization_is_refused(imprint: Run, tmp_path: Path) -> None:
    imprint("ca", "init", **PASS)
    refused = imprint(
        "enrollment", "create", "--mechanism", "oob-secret", "--owner", "nosuchorg",
        check=False, **PASS,
    )  # fmt: skip
    assert refused.returncode == 1
    assert "no organization 'nosuchorg'" in refused.stderr
    assert "imprint org create" in " ".join(refused.stderr.split())
    listed = imprint("enrollment", "list", **PASS)
    assert "0 enrollment(s)" in listed.stdout + listed.stderr


def test_oob_import_dry_run_fails_on_invalid_rows_and_valid_until_sets_the_expiry(
    imprint: Run, tmp_path: Path
) -> None:
    imprint("ca", "init", **PASS)
    imprint("org", "create", "Acme", "--id", "acme", **PASS)
    imprint(
        "enrollment", "create", "--mechanism", "oob-secret", "--owner", "acme", "--id", "lab",
        **PASS,
    )  # fmt: skip
    rows = tmp_path / "rows.csv"
    rows.write_text("device_id,secret\nmeter-1,label-secret-0001\nmeter-2,tiny\n")
    dry = imprint("oob", "import", "lab", str(rows), "--dry-run", check=False, **PASS)
    assert dry.returncode == 1
    assert "meter-2" in dry.stderr

    until = (datetime.now(UTC) + timedelta(days=30)).replace(microsecond=0)
    rows.write_text(
        "device_id,secret,valid_until\n"
        "meter-1,label-secret-0001,\n"
        f"meter-3,label-secret-0003,{(until + timedelta(days=1)).isoformat()}\n"
    )
    ok_dry = imprint(
        "oob", "import", "lab", str(rows), "--dry-run", "--valid-until", until.isoformat(), **PASS
    )
    assert ok_dry.returncode == 0
    imprint("oob", "import", "lab", str(rows), "--valid-until", until.isoformat(), **PASS)
    listed = imprint("oob", "list", "lab", **PASS).stdout
    assert re.search(rf"meter-1\s+{until.strftime('%Y-%m-%d %H:%M')}", listed)
    later = until + timedelta(days=1)
    assert re.search(rf"meter-3\s+{later.strftime('%Y-%m-%d %H:%M')}", listed)
    too_far = imprint(
        "oob", "import", "lab", str(rows), "--valid-until", "2999-01-01T00:00:00Z",
        check=False, **PASS,
    )  # fmt: skip
    assert too_far.returncode == 1
    assert "365" in too_far.stderr
