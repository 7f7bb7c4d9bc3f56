"""What ``imprint enrollment`` and ``imprint oob`` change is in the audit log, as the
operating-system user who ran them (``cli:<user>``), like the same change from the API."""

from __future__ import annotations

import getpass
from collections.abc import Sequence
from pathlib import Path

from imprint.audit import AuditEntry, AuditQuery
from imprint.store.audit import SqlAuditLog
from imprint.store.db import create_engine
from tests.e2e.conftest import Run

PASS = {"IMPRINT_CA__PASSPHRASE": "correct horse battery staple"}


def audit_log(tmp_path: Path) -> Sequence[AuditEntry]:
    """Oldest first."""
    engine = create_engine(f"sqlite:///{tmp_path / 'data' / 'imprint.db'}")
    try:
        return list(reversed(SqlAuditLog(engine).search(AuditQuery(limit=1000))))
    finally:
        engine.dispose()


def test_enrollment_and_oob_changes_are_audited_as_the_cli_user(
    imprint: Run, tmp_path: Path
) -> None:
    imprint("ca", "init", **PASS)
    imprint("org", "create", "Acme", "--id", "acme", **PASS)
    imprint(
        "enrollment", "create", "--mechanism", "symmetric-key", "--owner", "acme",
        "--id", "plant-7", "--generate-psk", **PASS,
    )  # fmt: skip
    imprint("enrollment", "disable", "plant-7", **PASS)
    imprint("enrollment", "enable", "plant-7", **PASS)
    imprint("enrollment", "delete", "plant-7", **PASS)
    lab = ("--mechanism", "oob-secret", "--owner", "acme", "--id", "lab")
    imprint("enrollment", "create", *lab, **PASS)
    imprint("oob", "add", "lab", "meter-1", "--secret", "label-secret-0001", **PASS)
    rows = tmp_path / "secrets.csv"
    rows.write_text("device_id,secret\nmeter-1,label-secret-0001\nmeter-2,label-secret-0002\n")
    imprint(
        "oob", "import", "lab", str(rows), "--dry-run", **PASS
    )  # writes nothing, audits nothing
    imprint("oob", "import", "lab", str(rows), **PASS)
    rows.write_text("device_id,secret\nmeter-3,tiny\n")
    refused = imprint("oob", "import", "lab", str(rows), check=False, **PASS)
    assert refused.returncode == 1
    imprint("oob", "remove", "lab", "meter-2", **PASS)
    # Read-only commands write nothing.
    imprint("enrollment", "list", **PASS)
    imprint("enrollment", "show", "lab", **PASS)
    imprint("oob", "list", "lab", **PASS)

    logged = [
        e for e in audit_log(tmp_path) if e.action.split(".")[0] in {"enrollment", "oob_secret"}
    ]
    assert [(e.action, e.target_id) for e in logged] == [
        ("enrollment.create", "plant-7"),
        ("enrollment.disable", "plant-7"),
        ("enrollment.enable", "plant-7"),
        ("enrollment.delete", "plant-7"),
        ("enrollment.create", "lab"),
        ("oob_secret.register", "meter-1"),
        ("oob_secret.import", "lab"),
        ("oob_secret.remove", "meter-2"),
    ]
    assert {e.actor for e in logged} == {f"cli:{getpass.getuser()}"}
    assert {e.org_id for e in logged} == {"acme"}
    by_action = {e.action: e for e in logged}
    assert by_action["oob_secret.register"].details == {"enrollment_id": "lab", "result": "created"}
    assert by_action["oob_secret.import"].details == {
        "written": True,
        "rows": 2,
        "created": 1,
        "updated": 0,
        "unchanged": 1,
    }
    assert by_action["oob_secret.remove"].details == {"enrollment_id": "lab"}
    everything = repr(audit_log(tmp_path))
    assert "label-secret" not in everything
