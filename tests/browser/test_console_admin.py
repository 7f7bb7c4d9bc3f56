"""The admin pages in a real browser: organizations and users, trusted CAs with Decode,
enrollments (create, edit, disable, OOB bulk upload, registration key), channels with
their keys and live chart, and the CSR relay approved in the console."""

from __future__ import annotations

import re
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import NameOID
from playwright.sync_api import expect

from imprint.audit import AuditQuery
from imprint.channels.entries import EntryDraft
from imprint.provisioning.channels import ChannelTemplate, channel_for_device
from imprint.provisioning.enrollments import Enrollment, EnrollmentKind, Mechanism
from imprint.tenancy.roles import Role
from tests.browser.conftest import Console, Problems, User, login, screenshot
from tests.integration.identity_helpers import csr_pem, make_csr, openssl_verify


def _ca(name: str) -> tuple[x509.Certificate, str]:
    key = ec.generate_private_key(ec.SECP256R1())
    subject = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, name)])
    now = datetime.now(UTC)
    certificate = (
        x509.CertificateBuilder()
        .subject_name(subject)
        .issuer_name(subject)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - timedelta(minutes=1))
        .not_valid_after(now + timedelta(days=365))
        .add_extension(x509.BasicConstraints(ca=True, path_length=None), critical=True)
        .sign(key, hashes.SHA256())
    )
    return certificate, certificate.public_bytes(serialization.Encoding.PEM).decode()


def _audited(console: Console, prefix: str) -> list[tuple[str, str, str | None]]:
    """The audit log's entries whose action starts with ``prefix``, oldest first."""
    logged = console.service.runtime.audit.search(AuditQuery(limit=200))
    return [
        (e.action, e.actor, e.target_id) for e in reversed(logged) if e.action.startswith(prefix)
    ]


def _enrollment(console: Console, enrollment_id: str, mechanism: Mechanism, owner: str) -> None:
    now = datetime.now(UTC)
    console.service.runtime.enrollments.add(
        Enrollment(
            id=enrollment_id,
            kind=EnrollmentKind.GROUP,
            mechanism=mechanism,
            owner=owner,
            created_at=now,
            updated_at=now,
        )
    )


def test_a_pasted_ca_is_decoded_before_it_is_saved(page: Any, console: Console) -> None:
    _enrollment(console, "factory-cas", Mechanism.CLIENT_CA, "acme")
    certificate, pem = _ca("Acme Factory CA")
    expected = certificate.fingerprint(hashes.SHA256()).hex()
    login(page, console, console.admin)
    page.goto(f"{console.url}/trusted-cas")
    assert "No CA trusted yet" in page.locator("#list-factory-cas").inner_text()
    page.locator("#ca-pem").fill(pem)
    page.get_by_role("button", name="Decode").click()
    decoded = page.locator("table.decoded")
    assert decoded.locator("code.fingerprint").inner_text() == expected
    assert decoded.locator(".subject").inner_text() == "CN=Acme Factory CA"
    assert "EC" in decoded.locator(".key").inner_text()
    assert "trusted as a root" in decoded.locator(".trusted-as").inner_text()
    assert decoded.locator(".chain").inner_text() == "CN=Acme Factory CA"
    assert console.service.runtime.client_cas.for_enrollment("factory-cas") == ()  # not yet
    screenshot(page, "trusted-cas-decoded")

    page.get_by_role("button", name="Save").click()
    page.wait_for_url(f"{console.url}/trusted-cas?enrollment=factory-cas")
    assert "now trusts 1 CA" in page.get_by_role("status").inner_text()
    trusted = console.service.runtime.client_cas.for_enrollment("factory-cas")
    assert [ca.fingerprint_sha256 for ca in trusted] == [expected]
    assert page.locator("#list-factory-cas code.fingerprint").inner_text() == expected

    page.locator("#list-factory-cas").get_by_role("button", name="Disable this list").click()
    assert "disabled" in page.locator("#list-factory-cas h2").inner_text()
    assert console.service.runtime.enrollments.get("factory-cas").enabled is False
    screenshot(page, "trusted-cas")

    page.locator("#list-factory-cas").get_by_role("button", name="Remove").click()
    assert "no longer trusts" in page.get_by_role("status").inner_text()
    assert console.service.runtime.client_cas.for_enrollment("factory-cas") == ()
    admin = f"user:{console.admin.username}"
    assert _audited(console, "client_ca.") == [
        ("client_ca.add", admin, "factory-cas"),
        ("client_ca.remove", admin, "factory-cas"),
    ]


def test_a_device_certificate_is_not_saved_as_a_ca(
    page: Any, console: Console, problems: Problems
) -> None:
    problems.expect("400")  # chromium logs the refused form's answer
    _enrollment(console, "factory-cas", Mechanism.CLIENT_CA, "acme")
    key = ec.generate_private_key(ec.SECP256R1())
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "device-1")])
    now = datetime.now(UTC)
    leaf = (
        x509.CertificateBuilder()
        .subject_name(name)
        .issuer_name(name)
        .public_key(key.public_key())
        .serial_number(1)
        .not_valid_before(now)
        .not_valid_after(now + timedelta(days=1))
        .sign(key, hashes.SHA256())
    )
    login(page, console, console.admin)
    page.goto(f"{console.url}/trusted-cas")
    page.locator("#ca-pem").fill(leaf.public_bytes(serialization.Encoding.PEM).decode())
    page.get_by_role("button", name="Decode").click()
    assert "a device certificate cannot be trusted" in page.locator("table.decoded").inner_text()
    with page.expect_response(re.compile(r"/console/trusted-cas$")) as answer:
        page.get_by_role("button", name="Save").click()
    assert answer.value.status == 400
    assert "not a CA certificate" in page.locator("#ca-error").inner_text()
    assert console.service.runtime.client_cas.for_enrollment("factory-cas") == ()


def test_create_edit_and_disable_an_oob_enrollment_with_a_bulk_upload(
    page: Any, console: Console, tmp_path: Path
) -> None:
    login(page, console, console.admin)
    page.goto(f"{console.url}/enrollments")
    expect(page.locator(".empty")).to_have_count(1)
    page.get_by_role("link", name="New enrollment").click()
    page.locator("select[name=mechanism]").select_option("oob-secret")
    page.locator("select[name=owner]").select_option("acme-east")
    page.get_by_label("Id (optional)").fill("line-7")
    page.get_by_label("Manual approval").check()
    page.get_by_label("Quota (optional)").fill("500")
    screenshot(page, "enrollment-new")
    page.get_by_role("button", name="Create enrollment").click()
    assert "Enrollment line-7 created" in page.locator("h1").inner_text()
    stored = console.service.runtime.enrollments.get("line-7")
    assert (stored.mechanism, stored.owner, stored.manual_approval, stored.quota) == (
        Mechanism.OOB_SECRET,
        "acme-east",
        True,
        500,
    )

    page.get_by_role("link", name="Open the enrollment").click()
    page.get_by_label("Quota").fill("800")
    page.get_by_role("button", name="Save").click()
    assert page.get_by_role("status").inner_text() == "Enrollment saved (quota)."
    assert console.service.runtime.enrollments.get("line-7").quota == 800

    rows = tmp_path / "secrets.csv"
    rows.write_text(
        "device_id,secret\nsensor-1,s3cret-one-aaaaaaaa\nsensor-2,s3cret-two-bbbbbbbb\n"
    )
    page.locator("input[type=file]").set_input_files(str(rows))
    page.get_by_role("button", name="Upload").click()
    assert "Preview (dry run)" in page.locator("h1").inner_text()
    assert page.locator("[data-count=created]").inner_text() == "2"
    assert page.locator("[data-count=invalid]").inner_text() == "0"
    assert console.service.runtime.enrollments.get("line-7") is not None
    screenshot(page, "oob-preview")
    page.get_by_role("button", name="Register these 2 secrets").click()
    assert page.locator("h1").inner_text() == "Imported"
    page.get_by_role("link", name="Back to the enrollment").click()
    expect(page.locator("#oob-secrets tbody tr")).to_have_count(2)

    page.get_by_role("button", name="Disable").click()
    assert page.locator("#enrollment-state").inner_text() == "disabled"
    assert console.service.runtime.enrollments.get("line-7").enabled is False
    page.goto(f"{console.url}/enrollments")
    assert "disabled" in page.locator("tr[data-enrollment=line-7]").inner_text()
    screenshot(page, "enrollments")
    query = AuditQuery(target_id="line-7", actor=f"user:{console.admin.username}")
    logged = console.service.runtime.audit.search(query)
    assert [(e.action, e.org_id) for e in reversed(logged)] == [
        ("enrollment.create", "acme-east"),
        ("enrollment.update", "acme-east"),
        ("oob_secret.import", "acme-east"),
        ("enrollment.disable", "acme-east"),
    ]
    assert logged[1].details == {
        "written": True,
        "rows": 2,
        "created": 2,
        "updated": 0,
        "unchanged": 0,
    }


def test_the_edit_page_gives_new_devices_a_channel_and_a_new_psk(
    page: Any, console: Console, problems: Problems
) -> None:
    problems.expect("400")  # chromium logs the refused form's answer
    _enrollment(console, "thermo", Mechanism.REGISTRATION_KEY, "acme")
    login(page, console, console.admin)
    page.goto(f"{console.url}/enrollments/thermo")
    page.get_by_label("Channel fields").fill("field1=temperature\nfield2=humidity")
    page.get_by_label("Services").fill("mqtt=mqtts://broker.example:8883")
    page.locator("#psk-action").select_option("generate")
    page.get_by_role("button", name="Save").click()
    assert page.locator("h1").inner_text() == "Enrollment thermo saved"
    shown = page.locator("#secrets code").inner_text()
    stored = console.service.runtime.enrollments.get("thermo")
    assert stored.channel is not None
    assert dict(stored.channel.fields) == {"field1": "temperature", "field2": "humidity"}
    assert dict(stored.services) == {"mqtt": "mqtts://broker.example:8883"}
    assert stored.pre_shared_key == shown
    page.get_by_role("link", name="Open the enrollment").click()
    assert shown not in page.content()  # shown once
    page.get_by_label("Quota").fill("-3")
    page.get_by_role("button", name="Save").click()
    assert "quota" in page.content()
    assert console.service.runtime.enrollments.get("thermo").quota is None
    (entry,) = [
        e
        for e in console.service.runtime.audit.search(AuditQuery(target_id="thermo"))
        if e.action == "enrollment.update"
    ]
    assert entry.actor == f"user:{console.admin.username}"
    assert entry.details == {"changed": ["channel", "pre_shared_key", "services"]}
    assert shown not in str(entry.details)


def test_a_large_secrets_file_is_previewed_then_registered(
    page: Any, console: Console, tmp_path: Path
) -> None:
    """The preview hands the whole file back with its confirmation: over a megabyte too."""
    _enrollment(console, "big-batch", Mechanism.OOB_SECRET, "acme-east")
    rows = tmp_path / "secrets.csv"
    count = 30_000
    lines = [f"meter-{i:05d},secret-of-meter-{i:05d}-padding" for i in range(count)]
    rows.write_text("device_id,secret\n" + "\n".join(lines) + "\n")
    assert rows.stat().st_size > 1024 * 1024
    login(page, console, console.admin)
    page.goto(f"{console.url}/enrollments/big-batch")
    page.locator("input[type=file]").set_input_files(str(rows))
    page.get_by_role("button", name="Upload").click(timeout=120_000)
    assert "Preview (dry run)" in page.locator("h1").inner_text()
    assert page.locator("[data-count=created]").inner_text() == str(count)
    # Registering 30,000 secrets is one request that takes seconds, many more on a busy
    # machine: the page waits for its answer longer than for an ordinary click.
    page.get_by_role("button", name=f"Register these {count} secrets").click(timeout=120_000)
    assert page.locator("h1").inner_text(timeout=120_000) == "Imported"
    stored = console.service.runtime.oob_secrets.search("big-batch", limit=count + 1)
    assert len(stored) == count


def test_a_registration_key_is_shown_once_and_rotates_with_a_transition(
    page: Any, console: Console
) -> None:
    login(page, console, console.admin)
    page.goto(f"{console.url}/enrollments/new?mechanism=registration-key")
    page.get_by_label("Id (optional)").fill("field-units")
    page.get_by_role("button", name="Create enrollment").click()
    page.get_by_role("link", name="Open the enrollment").click()
    assert "No registration key yet" in page.locator("main").inner_text()
    page.get_by_role("button", name="Create the key").click()
    first = page.locator("#registration-key").inner_text()
    assert len(first) >= 17
    page.get_by_role("link", name="Back to the enrollment").click()
    assert first not in page.content()  # shown once, never again
    page.get_by_label("The old key keeps working for").fill("2h")
    page.get_by_role("button", name="Rotate the key").click()
    second = page.locator("#registration-key").inner_text()
    assert second != first
    assert "keeps working until" in page.locator("main").inner_text()
    screenshot(page, "registration-key")
    page.get_by_role("link", name="Back to the enrollment").click()
    keys = page.locator("#registration-keys").inner_text()
    assert second.split("-")[0] in keys
    assert first.split("-")[0] in keys
    assert "(ended)" not in keys  # the previous key works for its transition
    logged = console.service.runtime.audit.search(
        AuditQuery(action="registration_key.rotate", target_id="field-units")
    )
    actor = f"user:{console.admin.username}"
    assert [(e.actor, e.org_id) for e in logged] == [(actor, "acme")] * 2


def test_organizations_and_users_are_scoped_to_the_subtree(page: Any, console: Console) -> None:
    login(page, console, console.admin)
    page.goto(f"{console.url}/orgs")
    tree = page.locator("#org-tree")
    assert [li.get_attribute("data-org") for li in tree.locator("li").all()] == [
        "acme",
        "acme-east",
        "acme-west",
    ]
    form = page.locator("#new-org")
    form.locator("select[name=parent_id]").select_option("acme-east")
    form.get_by_label("Name").fill("East Lab")
    form.get_by_label("Id (optional").fill("acme-east-lab")
    form.get_by_role("button", name="Create organization").click()
    assert "East Lab (acme-east-lab) created" in page.get_by_role("status").inner_text()

    form = page.locator("#new-user")
    form.get_by_label("User name").fill("eve@east.example")
    form.get_by_label("Initial password").fill("another long passphrase")
    form.locator("select[name=org_id]").select_option("acme-east")
    form.locator("select[name=role]").select_option("admin")
    form.get_by_role("button", name="Create user").click()
    assert "eve@east.example is now admin of acme-east" in page.get_by_role("status").inner_text()
    row = page.locator("tr[data-user='eve@east.example']")
    row.locator("select[name=org_id]").select_option("acme-east-lab")
    row.locator("select[name=role]").select_option("viewer")
    row.get_by_role("button", name="Apply").click()
    assert "East Lab: viewer" in page.locator("tr[data-user='eve@east.example']").inner_text()
    screenshot(page, "orgs")
    logged = console.service.runtime.audit.search(
        AuditQuery(actor=f"user:{console.admin.username}")
    )
    assert [(e.action, e.org_id) for e in logged][:3] == [
        ("user.role.set", "acme-east-lab"),
        ("user.create", "acme-east"),
        ("org.create", "acme-east-lab"),
    ]

    page.get_by_role("button", name="Sign out").click()
    page.wait_for_url(f"{console.url}/login")
    login(page, console, User("eve@east.example", "another long passphrase", "acme-east"))
    page.goto(f"{console.url}/orgs")
    seen = [li.get_attribute("data-org") for li in page.locator("#org-tree li").all()]
    assert seen == ["acme-east", "acme-east-lab"]
    assert "admin@acme.example" not in page.locator("main").inner_text()
    assert page.locator("#new-org select[name=parent_id] option").all_inner_texts() == [
        "Acme East",  # organizations by name
        "East Lab",
    ]


def test_channel_keys_and_live_chart(page: Any, console: Console) -> None:
    rt = console.service.runtime
    now = datetime.now(UTC)
    channel = channel_for_device(
        rt.channels,
        ChannelTemplate(fields={"field1": "temperature", "field2": "humidity"}),
        owner="acme-west",
        enrollment_id="weather",
        device_ref="0b6c1f6e-2f7e-4b5e-9c55-3c1f2a9d0001",
        device_id="station-1",
        at=now,
    )
    for value in ("20.5", "21.0", "22.25"):
        rt.channel_entries.append(
            channel.id,
            EntryDraft(fields={"field1": value, "field2": "40"}),
            min_interval=timedelta(0),
        )
    viewer = console.add_user("val@west.example", "acme-west", Role.VIEWER)
    login(page, console, viewer)
    page.goto(f"{console.url}/channels")
    page.get_by_role("link", name="station-1").first.click()
    read_key = channel.read_keys[0].key
    assert read_key in page.locator("#read-keys").inner_text()
    expect(page.locator("main")).to_contain_text("Only operators and admins see the write key")
    expect(page.locator("#write-key")).to_have_count(0)  # a viewer never sees the write key
    # Polled by Playwright itself: a string for the page to evaluate would need the
    # 'unsafe-eval' the console's CSP refuses.
    expect(page.locator("#chart-status")).to_have_text(re.compile(r"^3 entries"))
    assert page.locator("[data-latest=field1]").inner_text() == "latest 22.25"
    screenshot(page, "channel")

    page.get_by_role("button", name="Sign out").click()
    login(page, console, console.admin)
    page.goto(f"{console.url}/channels/{channel.id}")
    old_write = page.locator("#write-key").inner_text()
    page.get_by_role("button", name="Regenerate the write key").click()
    assert "write key was regenerated" in page.get_by_role("status").inner_text()
    assert page.locator("#write-key").inner_text() != old_write
    assert rt.channels.get(channel.id).write_key.key != old_write
    page.get_by_role("button", name="Add a read key").click()
    assert "read key was added" in page.get_by_role("status").inner_text()
    assert len(rt.channels.get(channel.id).read_keys) == 2
    admin = f"user:{console.admin.username}"
    assert _audited(console, "channel.") == [
        ("channel.key_regenerate", admin, str(channel.id)),
        ("channel.key_add", admin, str(channel.id)),
    ]


def test_a_sibling_cannot_open_another_subtrees_channel(
    page: Any, console: Console, problems: Problems
) -> None:
    rt = console.service.runtime
    channel = channel_for_device(
        rt.channels,
        ChannelTemplate(fields={"field1": "temperature"}),
        owner="acme-west",
        enrollment_id="weather",
        device_ref="0b6c1f6e-2f7e-4b5e-9c55-3c1f2a9d0002",
        device_id="station-2",
        at=datetime.now(UTC),
    )
    east = console.add_user("ed@east.example", "acme-east", Role.ADMIN)
    login(page, console, east)
    page.goto(f"{console.url}/channels")
    assert "station-2" not in page.locator("main").inner_text()
    problems.expect("404")
    answer = page.goto(f"{console.url}/channels/{channel.id}")
    assert answer.status == 404
    assert channel.read_keys[0].key not in page.content()


def test_the_csr_relay_is_approved_in_the_console(page: Any, console: Console) -> None:
    key, csr = make_csr("d2d-client-on-a-laptop")
    with console.service.client() as client:
        started = client.post("/api/v1/relay", json={"csr": csr_pem(csr)}).json()
        assert client.get(f"/api/v1/relay/{started['state']}").status_code == 202

        login(page, console, console.admin)
        page.goto(started["approve_url"])
        assert page.locator("#fingerprint").inner_text() == started["fingerprint"]
        assert "CN=d2d-client-on-a-laptop" in page.locator("#relay-request").inner_text()
        assert "EC" in page.locator("#key-type").inner_text()
        assert "Signed in as admin@acme.example" in page.locator("main").inner_text()
        expect(page.locator("nav a").nth(6)).to_be_attached()  # the console's layout
        screenshot(page, "relay")
        page.get_by_role("button", name="Approve").click()
        assert page.locator("h1").inner_text() == "Approved"

        collected = client.get(f"/api/v1/relay/{started['state']}")
    assert collected.status_code == 200, collected.text
    body = collected.json()
    certificate = x509.load_pem_x509_certificate(body["certificate"].encode())
    assert certificate.public_key() == key.public_key()
    openssl_verify(console.service.workdir, body["certificate_chain"], body["trust_anchors"])


def test_forms_without_the_csrf_token_change_nothing(page: Any, console: Console) -> None:
    _enrollment(console, "factory-cas", Mechanism.CLIENT_CA, "acme")
    _, pem = _ca("Forged CA")
    login(page, console, console.admin)
    for path, form in (
        ("/orgs", {"name": "Forged", "id": "forged", "parent_id": "acme"}),
        ("/trusted-cas", {"enrollment": "factory-cas", "pem": pem, "action": "save"}),
        ("/enrollments/new", {"mechanism": "oob-secret", "owner": "acme", "id": "forged"}),
        ("/trusted-cas/factory-cas/state", {"enabled": "false"}),
    ):
        answer = page.request.post(f"{console.url}{path}", form={**form, "csrf": "0" * 43})
        assert answer.status == 403, path
        assert "csrf_refused" in answer.text()
    rt = console.service.runtime
    assert "forged" not in rt.org_tree()
    assert rt.client_cas.for_enrollment("factory-cas") == ()
    assert [
        e.id for e in rt.enrollments.search(mechanism=None, owner=None, limit=10, owners=None)
    ] == ["factory-cas"]
    assert rt.enrollments.get("factory-cas").enabled is True


def test_an_organization_is_renamed_and_deleted_and_a_user_deleted(
    page: Any, console: Console, problems: Problems
) -> None:
    problems.expect("status of 409 (Conflict)")  # the refusal of an organization not empty
    console.add_user("wile@west.example", "acme-west", Role.VIEWER)
    login(page, console, console.admin)
    page.goto(f"{console.url}/orgs")
    west = page.locator("details.org-admin[data-org=acme-west]")
    west.locator("summary").click()
    west.get_by_label("New name of acme-west").fill("Acme West Coast")
    west.get_by_role("button", name="Rename").click()
    assert "acme-west is now called Acme West Coast" in page.get_by_role("status").inner_text()

    # Not empty: a member is left; the page says so and nothing is deleted.
    west = page.locator("details.org-admin[data-org=acme-west]")
    west.locator("summary").click()
    west.get_by_label("delete acme-west").check()
    west.get_by_role("button", name="Delete").click()
    assert "members" in page.locator("main").inner_text()
    assert console.service.runtime.orgs.get("acme-west").name == "Acme West Coast"

    page.goto(f"{console.url}/orgs")
    row = page.locator("tr[data-user='wile@west.example']")
    row.get_by_label("delete wile@west.example").check()
    row.get_by_role("button", name="Delete").click()
    assert "wile@west.example deleted" in page.get_by_role("status").inner_text()
    west = page.locator("details.org-admin[data-org=acme-west]")
    west.locator("summary").click()
    west.get_by_label("delete acme-west").check()
    west.get_by_role("button", name="Delete").click()
    assert "Acme West Coast (acme-west) deleted" in page.get_by_role("status").inner_text()
    seen = [li.get_attribute("data-org") for li in page.locator("#org-tree li").all()]
    assert seen == ["acme", "acme-east"]
    assert _audited(console, "org.") == [
        ("org.rename", f"user:{console.admin.username}", "acme-west"),
        ("org.delete", f"user:{console.admin.username}", "acme-west"),
    ]
    assert [a for a, _, _ in _audited(console, "user.delete")] == ["user.delete"]
