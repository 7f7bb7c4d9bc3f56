"""Webhooks and the provisioning hook against a real server and a real receiver: signed
deliveries retried through the outbox and logged, the five events, expiry thresholds
told once each, a hook that denies, adds claims or times out, tenancy and bad input."""

from __future__ import annotations

import json
import threading
import time
from collections.abc import Iterator
from datetime import timedelta
from pathlib import Path
from typing import Any

import httpx
import pytest
from cryptography.hazmat.primitives.asymmetric import ec
from sqlalchemy import select, text

from imprint.api.device_plane import inline
from imprint.settings import Settings, WebhookSettings
from imprint.store.tables import provisioning_records
from imprint.webhooks.model import check_url
from imprint.webhooks.signing import verify
from tests.e2e.conftest import run_imprint
from tests.integration.conftest import Service, start_service, with_orgs
from tests.integration.fleet_helpers import Cli
from tests.integration.oauth_helpers import bearer, token_for
from tests.integration.test_lifecycle import Factory, csr_of, device_ref
from tests.integration.test_x509_attestation import Manufacturer, enroll, signed_body
from tests.integration.webhook_receiver import Receiver, receiver

PROBLEM = "application/problem+json"
EVERY_EVENT = [
    "provisioning.succeeded",
    "provisioning.failed",
    "device.awaiting_approval",
    "certificate.revoked",
    "certificate.expiring",
]


@pytest.fixture
def service(settings: Settings, tmp_path: Path) -> Iterator[Service]:
    """The server, accepting http:// receivers on 127.0.0.1 (the test's own)."""
    allowed = settings.model_copy(
        update={"webhooks": WebhookSettings(allow_http_loopback=True, timeout_seconds=30)}
    )
    for running in start_service(allowed, tmp_path):
        yield with_orgs(running, "acme", "other")


@pytest.fixture
def hooked(service: Service) -> Iterator[Receiver]:
    with receiver(lambda: service.clock.now().timestamp()) as found:
        yield found


def subscribe(service: Service, target: Receiver, events: list[str], org: str = "acme") -> str:
    with service.admin() as admin:
        made = admin.post(
            "/api/v1/webhooks", json={"org_id": org, "url": target.url, "events": events}
        )
    assert made.status_code == 201, made.text
    assert made.headers["cache-control"] == "no-store"
    target.secret = made.json()["secret"]
    assert target.secret.startswith("whsec_")
    subscription_id: str = made.json()["id"]
    return subscription_id


def deliver(service: Service) -> None:
    """One webhook round in this process, instead of waiting for the server's."""
    service.runtime.outbox.deliver(background=True)


def log_of(service: Service, subscription_id: str) -> list[dict[str, Any]]:
    with service.admin() as admin:
        page = admin.get(f"/api/v1/webhooks/{subscription_id}/deliveries")
    assert page.status_code == 200, page.text
    items: list[dict[str, Any]] = page.json()["items"]
    return items


@pytest.mark.slow
def test_a_delivery_is_signed_retried_after_a_500_and_logged(
    service: Service, hooked: Receiver, tmp_path: Path
) -> None:
    subscription = subscribe(service, hooked, ["provisioning.succeeded"])
    hooked.statuses = [500]
    # A receiver that does not answer: the device's answer must not wait for it.
    hooked.delay = 60.0
    factory = Factory(service, tmp_path, "fleet")
    with service.client(cert=factory.device("meter-1")) as device:  # 10 s timeout
        answer = device.post(
            "/api/v1/provision",
            json={"mechanism": "client-ca", "csr": csr_of(ec.generate_private_key(ec.SECP256R1()))},
        )
    assert answer.status_code == 200, answer.text
    first = hooked.wait_for(1)[0]  # the server's own round took it
    hooked.delay = 0.0
    hooked.release.set()
    deadline_rows: list[dict[str, Any]] = []
    for _ in range(500):
        deadline_rows = log_of(service, subscription)
        if deadline_rows:
            break
        hooked.release.wait(0.02)
    assert [(r["attempt"], r["outcome"], r["status_code"]) for r in deadline_rows] == [
        (1, "failed", 500)
    ]
    service.clock.advance(timedelta(seconds=3))  # past the first backoff (2 s)
    deliver(service)
    second = hooked.wait_for(2)[1]

    for got, attempt in ((first, "1"), (second, "2")):
        assert got.signed, "the signature must verify with the subscription's secret"
        assert got.headers["imprint-delivery-attempt"] == attempt
        assert got.headers["imprint-event-type"] == "provisioning.succeeded"
    assert first.body == second.body
    assert first.headers["imprint-event-id"] == second.headers["imprint-event-id"]
    event = second.event
    assert event["id"] == second.headers["imprint-event-id"]
    assert (event["type"], event["org_id"]) == ("provisioning.succeeded", "acme")
    assert event["data"]["device_id"] == "meter-1"
    assert event["data"]["serial"] == answer.json()["bundle"]["serial"]
    # Tampered with, the body no longer matches its signature.
    now = service.clock.now().timestamp()
    assert not verify(hooked.secret, second.headers, second.body + b" ", now=now)
    assert not verify("whsec_wrong", second.headers, second.body, now=now)

    rows = log_of(service, subscription)
    assert [(r["attempt"], r["outcome"], r["status_code"]) for r in rows] == [
        (2, "delivered", 200),
        (1, "failed", 500),
    ]
    assert {r["event_id"] for r in rows} == {event["id"]}
    # Delivered: another round sends nothing more.
    service.clock.advance(timedelta(minutes=10))
    deliver(service)
    assert len(hooked.received) == 2
    # The secret is in no log: not the delivery log, not the audit log.
    with service.admin() as admin:
        audit = admin.get("/api/v1/audit", params={"limit": 1000}).text
        everything = admin.get("/api/v1/webhook-deliveries").text
    assert hooked.secret not in audit + everything + json.dumps(rows)
    assert "webhook.create" in audit


def test_failed_awaiting_approval_and_revoked_events(
    service: Service, hooked: Receiver, tmp_path: Path
) -> None:
    subscribe(
        service,
        hooked,
        ["provisioning.failed", "device.awaiting_approval", "certificate.revoked"],
    )
    strict = Factory(service, tmp_path, "strict", device_id_pattern="meter-[0-9]+")
    refused = strict.provision(strict.device("thermostat"))
    assert (refused.status_code, refused.json()["code"]) == (403, "device_id_rejected")
    held = Factory(service, tmp_path, "held", manual_approval=True)
    assert held.provision(held.device("meter-2")).status_code == 202
    plain = Factory(service, tmp_path, "plain")
    serial = plain.provision(plain.device("meter-3")).json()["bundle"]["serial"]
    with service.admin() as admin:
        revoked = admin.post(
            f"/api/v1/devices/{device_ref(service, 'meter-3')}/revoke",
            json={"reason": "keyCompromise"},
        )
    assert revoked.status_code == 200, revoked.text
    deliver(service)
    hooked.wait_for(3)

    assert all(r.signed for r in hooked.received)
    [failed] = hooked.events("provisioning.failed")
    assert failed["data"]["code"] == "device_id_rejected"
    assert failed["data"]["enrollment_id"] == "strict"
    assert failed["data"]["device_id"] == "thermostat"
    [waiting] = hooked.events("device.awaiting_approval")
    assert (waiting["data"]["device_id"], waiting["data"]["enrollment_id"]) == ("meter-2", "held")
    [gone] = hooked.events("certificate.revoked")
    assert (gone["data"]["serial"], gone["data"]["reason"]) == (serial, "keyCompromise")
    # Not subscribed to successes: none arrived.
    assert hooked.events("provisioning.succeeded") == []


@pytest.mark.slow
def test_expiring_certificates_are_told_once_per_threshold(
    service: Service, hooked: Receiver, tmp_path: Path
) -> None:
    subscribe(service, hooked, ["certificate.expiring"])
    factory = Factory(service, tmp_path, "short", validity_days=40)
    serial = factory.provision(factory.device("meter-5")).json()["bundle"]["serial"]
    watch = service.runtime.expiry_watch

    def told() -> list[int]:
        deliver(service)
        return [e["data"]["threshold_days"] for e in hooked.events("certificate.expiring")]

    assert watch.scan() == 0  # 40 days left: no threshold crossed
    service.clock.advance(timedelta(days=11))  # 29 days left
    assert watch.scan() == 1
    assert watch.scan() == 0  # told once
    hooked.wait_for(1)
    assert told() == [30]
    service.clock.advance(timedelta(days=25))  # 4 days left: 7 crossed, once
    assert watch.scan() == 1
    hooked.wait_for(2)
    service.clock.advance(timedelta(days=3, hours=12))  # half a day left
    assert watch.scan() == 1
    assert watch.scan() == 0
    hooked.wait_for(3)
    assert told() == [30, 7, 1]
    event = hooked.events("certificate.expiring")[-1]
    assert event["data"]["serial"] == serial
    assert event["data"]["days_left"] < 1


def set_hook(service: Service, target: Receiver, **spec: Any) -> dict[str, Any]:
    with service.admin() as admin:
        made = admin.put("/api/v1/provisioning-hooks/acme", json={"url": target.url, **spec})
    assert made.status_code == 200, made.text
    body: dict[str, Any] = made.json()
    if body["secret"]:
        target.secret = body["secret"]
    return body


def device_certificates(service: Service) -> list[str]:
    return [
        r.serial
        for r in service.runtime.ledger.search(limit=100)
        if r.requested_by != "imprint:server"
    ]


def test_a_hook_that_denies_stops_the_registration_before_signing(
    service: Service, hooked: Receiver, tmp_path: Path
) -> None:
    set_hook(service, hooked)
    hooked.answer = {"decision": "deny", "reason": "not in the inventory"}
    factory = Factory(service, tmp_path, "gated")
    refused = factory.provision(factory.device("meter-6"))
    assert refused.status_code == 403
    assert refused.headers["content-type"].startswith(PROBLEM)
    assert refused.json()["code"] == "hook_denied"
    assert "not in the inventory" in refused.json()["detail"]
    assert device_certificates(service) == []
    [asked] = hooked.received
    assert asked.signed
    facts = asked.event
    assert (facts["device_id"], facts["enrollment_id"], facts["org_id"]) == (
        "meter-6",
        "gated",
        "acme",
    )
    assert asked.headers["imprint-event-type"] == "provisioning.hook"
    with service.admin() as admin:
        audit = admin.get("/api/v1/audit", params={"action": "device.hook"}).json()["items"]
    [entry] = audit
    assert entry["outcome"] == "denied"
    assert entry["details"]["reason"] == "not in the inventory"
    records = provisioning_records.c
    with service.runtime.engine.connect() as conn:
        steps = conn.execute(
            select(records.step, records.status, records.code).where(
                records.request_id == facts["request_id"]
            )
        ).all()
    assert ("hook", "failed", "hook_denied") in [tuple(s) for s in steps]


@pytest.mark.slow
def test_a_hook_adds_claims_and_only_allowed_ones(
    service: Service, hooked: Receiver, tmp_path: Path
) -> None:
    set_hook(service, hooked)
    hooked.answer = {
        "decision": "allow",
        "claims": {
            "attributes": {"site": "berlin"},
            "services": {"telemetry": "mqtts://telemetry.example:8883"},
        },
    }
    factory = Factory(service, tmp_path, "enriched")
    allowed = factory.provision(factory.device("meter-7"))
    assert allowed.status_code == 200, allowed.text
    assert allowed.json()["bundle"]["services"]["telemetry"] == "mqtts://telemetry.example:8883"
    ref = device_ref(service, "meter-7")
    assert service.runtime.webhook_store.claims_of(ref) == (
        {"site": "berlin"},
        {"telemetry": "mqtts://telemetry.example:8883"},
    )
    with service.admin() as admin:
        provisioned = admin.get("/api/v1/audit", params={"action": "device.provision"}).json()
    assert provisioned["items"][0]["details"]["claims"] == {"site": "berlin"}
    # A hook may not set the certificate's subject: its answer counts as a failure (deny).
    hooked.answer = {"decision": "allow", "claims": {"subject": "CN=admin"}}
    refused = factory.provision(factory.device("meter-8"))
    assert (refused.status_code, refused.json()["code"]) == (403, "hook_denied")
    assert "subject" in refused.json()["detail"]


@pytest.mark.slow
def test_a_devices_attributes_from_the_hook_are_shown_as_the_device_is(
    service: Service, hooked: Receiver, tmp_path: Path
) -> None:
    set_hook(service, hooked)
    hooked.answer = {"decision": "allow", "claims": {"attributes": {"site": "berlin", "line": "7"}}}
    factory = Factory(service, tmp_path, "claimed")
    assert factory.provision(factory.device("meter-10")).status_code == 200
    hooked.answer = {"decision": "allow"}
    assert factory.provision(factory.device("meter-11")).status_code == 200
    ref = device_ref(service, "meter-10")
    with service.admin() as admin:
        shown = admin.get(f"/api/v1/devices/{ref}")
        plain = admin.get("/api/v1/devices/meter-11")
        token = token_for(service, admin, "other", "admin")
    assert shown.status_code == 200, shown.text
    assert shown.json()["attributes"] == {"line": "7", "site": "berlin"}
    assert plain.json()["attributes"] == {}
    with bearer(service, token) as http:  # another organization's admin: not found
        foreign = http.get(f"/api/v1/devices/{ref}")
    assert foreign.status_code == 404
    assert "berlin" not in foreign.text

    # The command line, against the server: in its JSON, and a row of its table.
    cli = Cli(tmp_path / "person")
    cli(
        "login", "--server", service.base_url, "--ca-file", str(service.root_cert),
        input=service.admin_token + "\n",
    )  # fmt: skip
    assert cli.json("devices", "show", ref)["attributes"] == {"line": "7", "site": "berlin"}
    table = cli("devices", "show", ref).stdout
    assert any(
        line.split()[:1] == ["attributes"] and "line=7, site=berlin" in line
        for line in table.splitlines()
    ), table
    assert cli.json("devices", "show", "meter-11")["attributes"] == {}
    # And on the server's own data directory (local mode), the same object.
    local = run_imprint(service.runtime.settings, "devices", "show", ref, "--output", "json")
    assert local.returncode == 0, local.stderr
    assert json.loads(local.stdout)["attributes"] == {"line": "7", "site": "berlin"}


@pytest.mark.slow
def test_a_hook_that_times_out_denies_or_allows_as_configured(
    service: Service, hooked: Receiver, tmp_path: Path
) -> None:
    set_hook(service, hooked, timeout_seconds=0.5)
    hooked.delay = 30.0  # answers long after the hook's timeout
    factory = Factory(service, tmp_path, "slow")
    refused = factory.provision(factory.device("meter-9"))
    assert (refused.status_code, refused.json()["code"]) == (403, "hook_denied")
    assert "timed out" in refused.json()["detail"]
    assert device_certificates(service) == []
    set_hook(service, hooked, timeout_seconds=0.5, on_failure="allow")
    allowed = factory.provision(factory.device("meter-9"))
    assert allowed.status_code == 200, allowed.text
    with service.admin() as admin:
        audit = admin.get("/api/v1/audit", params={"action": "device.hook"}).json()["items"]
    assert [(e["outcome"], e["details"]["failure"]) for e in audit] == [
        ("success", "timed out after 0.5 s"),
        ("denied", "timed out after 0.5 s"),
    ]


def test_a_slow_hook_holds_up_its_own_registration_only(
    service: Service, hooked: Receiver, tmp_path: Path
) -> None:
    """A provisioning hook is a network call inside the registration: the device plane
    runs it in a thread, never on the event loop, where it would stop every request."""
    assert inline(service.runtime)
    set_hook(service, hooked, timeout_seconds=3, on_failure="allow")
    assert not inline(service.runtime)
    hooked.delay = 30.0  # answers after the hook's timeout
    factory = Factory(service, tmp_path, "slow")
    credentials = factory.device("meter-10")
    answers: list[httpx.Response] = []
    registering = threading.Thread(target=lambda: answers.append(factory.provision(credentials)))
    registering.start()
    try:
        hooked.wait_for(1)  # the registration waits for the hook now
        started = time.monotonic()
        with service.client() as other:
            assert other.get("/healthz").status_code == 200
        assert time.monotonic() - started < 1.0
    finally:
        registering.join(15)
    [answer] = answers
    assert answer.status_code == 200, answer.text  # the hook timed out; allowed
    with service.admin() as admin:
        assert admin.delete("/api/v1/provisioning-hooks/acme").status_code == 204
    assert inline(service.runtime)


@pytest.mark.both_databases
def test_a_signed_request_waiting_for_the_hook_holds_no_transaction(
    service: Service, hooked: Receiver
) -> None:
    """A signed request's nonce is spent, alone and committed, before the hook is asked:
    while the hook takes its time no transaction is open (on SQLite, the one writer's
    lock would stop every other change), and a replay is refused without asking it."""
    set_hook(service, hooked, timeout_seconds=3, on_failure="allow")
    hooked.delay = 30.0  # answers after the hook's timeout
    maker = Manufacturer.create("Hooked")
    enroll(service, maker.chain())
    leaf, key = maker.line.idevid("meter-20")
    body = signed_body(service, leaf, key, [maker.line.certificate])
    answers: list[httpx.Response] = []

    def register() -> None:
        with service.client() as http:
            answers.append(http.post("/api/v1/provision", json=body))

    registering = threading.Thread(target=register)
    registering.start()
    try:
        hooked.wait_for(1)  # the registration waits for the hook now
        started = time.monotonic()
        with service.admin() as admin:  # another change meanwhile: an organization
            made = admin.post("/api/v1/orgs", json={"name": "Initech", "id": "initech"})
        assert made.status_code == 201, made.text
        assert time.monotonic() - started < 1.5  # SQLite: no writer's lock held
        if service.runtime.engine.dialect.name == "postgresql":  # no transaction open
            with service.runtime.engine.connect() as conn:
                waiting = conn.execute(
                    text(
                        "SELECT count(*) FROM pg_stat_activity WHERE datname = "
                        "current_database() AND state LIKE 'idle in transaction%'"
                    )
                ).scalar_one()
            assert waiting == 0
    finally:
        registering.join(15)
    [answer] = answers
    assert answer.status_code == 200, answer.text  # the hook timed out; allowed
    hooked.delay = 0.0
    with service.client() as http:
        replayed = http.post("/api/v1/provision", json=body)
    assert (replayed.status_code, replayed.json()["code"]) == (403, "replay_detected")
    assert len(hooked.received) == 1  # the hook was not asked about the replay


def test_a_clone_is_refused_before_the_hook_is_asked(service: Service, hooked: Receiver) -> None:
    """The device is read once, under its lock, for a registration without a network
    call; before a hook is asked, it is read (and its pinned identity checked) first."""
    maker = Manufacturer.create("Pinned")
    enroll(service, maker.chain())
    leaf, key = maker.line.idevid("meter-30")
    chain = [maker.line.certificate]
    with service.client() as http:
        first = http.post("/api/v1/provision", json=signed_body(service, leaf, key, chain))
    assert first.status_code == 200, first.text
    set_hook(service, hooked)
    hooked.answer = {"decision": "allow"}
    clone, clone_key = maker.line.idevid("meter-30")  # the same name, another certificate
    cloned = signed_body(service, clone, clone_key, chain)
    with service.client() as http:
        refused = [http.post("/api/v1/provision", json=cloned) for _ in range(2)]
        again = http.post("/api/v1/provision", json=signed_body(service, leaf, key, chain))
    # Refused evidence spends no nonce: the same request is refused for the same reason.
    assert [(r.status_code, r.json()["code"]) for r in refused] == [(403, "identity_taken")] * 2
    assert again.status_code == 200, again.text  # the device itself, asked about once
    assert len(hooked.received) == 1


def test_an_org_admin_sees_only_its_own_webhooks(service: Service, hooked: Receiver) -> None:
    ours = subscribe(service, hooked, ["provisioning.failed"], org="acme")
    theirs = subscribe(service, hooked, ["provisioning.failed"], org="other")
    with service.admin() as admin:
        token = token_for(service, admin, "other", "admin")
    with bearer(service, token) as http:
        listed = http.get("/api/v1/webhooks").json()["items"]
        foreign = http.get(f"/api/v1/webhooks/{ours}")
        foreign_log = http.get(f"/api/v1/webhooks/{ours}/deliveries")
        deleted = http.delete(f"/api/v1/webhooks/{ours}")
        into_acme = http.post(
            "/api/v1/webhooks",
            json={"org_id": "acme", "url": hooked.url, "events": ["provisioning.failed"]},
        )
        hook = http.put("/api/v1/provisioning-hooks/acme", json={"url": hooked.url})
        own = http.get(f"/api/v1/webhooks/{theirs}")
    assert [w["id"] for w in listed] == [theirs]
    for answer in (foreign, foreign_log, deleted, into_acme, hook):
        assert answer.status_code == 404, answer.text
        assert answer.headers["content-type"].startswith(PROBLEM)
    assert own.status_code == 200
    assert "secret" not in own.json()
    with service.admin() as admin:
        assert admin.get(f"/api/v1/webhooks/{ours}").status_code == 200


@pytest.mark.both_databases
def test_bad_input_is_a_problem_and_changes_nothing(service: Service) -> None:
    cases: list[dict[str, Any]] = [
        {"org_id": "acme", "url": "http://example.com/hook", "events": ["provisioning.failed"]},
        {"org_id": "acme", "url": "ftp://example.com/", "events": ["provisioning.failed"]},
        {"org_id": "acme", "url": "https://example.com/", "events": ["device.exploded"]},
        {"org_id": "acme", "url": "https://example.com/", "events": []},
        {"org_id": "nowhere", "url": "https://example.com/", "events": ["provisioning.failed"]},
    ]
    with service.admin() as admin:
        answers = [admin.post("/api/v1/webhooks", json=body) for body in cases]
        hook = admin.put(
            "/api/v1/provisioning-hooks/acme",
            json={"url": "https://example.com/", "timeout_seconds": 120},
        )
        listed = admin.get("/api/v1/webhooks").json()
        missing = admin.get("/api/v1/provisioning-hooks/acme")
    for answer in [*answers, hook]:
        assert 400 <= answer.status_code < 500, answer.text
        assert answer.headers["content-type"].startswith(PROBLEM)
    assert answers[0].json()["code"] == "value_invalid"
    assert "https" in answers[0].json()["detail"]
    assert answers[4].status_code == 404
    assert listed == {"items": [], "total": 0, "next": None}
    assert missing.status_code == 404


def test_the_url_rule() -> None:
    assert check_url("https://hooks.example/x", allow_http_loopback=False)
    assert check_url("http://127.0.0.1:9/x", allow_http_loopback=True)
    assert check_url("http://[::1]:9/x", allow_http_loopback=True)
    for url, loopback in (
        ("http://127.0.0.1:9/x", False),
        ("http://10.0.0.1/x", True),
        ("http://localhost.example/x", True),
        ("https://user:pw@hooks.example/", False),
        ("https:///nohost", False),
    ):
        with pytest.raises(Exception, match="url"):
            check_url(url, allow_http_loopback=loopback)


@pytest.mark.slow
def test_deliveries_never_run_in_the_committing_request(
    service: Service, hooked: Receiver, tmp_path: Path
) -> None:
    """The prompt delivery of the outbox skips webhooks: an admin's revocation answers
    while the receiver holds every request it gets."""
    subscribe(service, hooked, ["certificate.revoked"])
    hooked.delay = 60.0
    factory = Factory(service, tmp_path, "hold")
    factory.provision(factory.device("meter-10"))
    with service.admin() as admin:  # 10 s timeout; a delivery would take 30 s
        revoked = admin.post(
            f"/api/v1/devices/{device_ref(service, 'meter-10')}/revoke",
            json={"reason": "superseded"},
        )
    assert revoked.status_code == 200
    assert hooked.wait_for(1)[0].headers["imprint-event-type"] == "certificate.revoked"


@pytest.mark.slow
def test_the_command_line_manages_webhooks_on_a_remote_server(
    service: Service, hooked: Receiver, tmp_path: Path
) -> None:
    from tests.integration.test_remote_cli import Cli

    cli = Cli(tmp_path / "person")
    server = ["--server", service.base_url, "--ca-file", str(service.root_cert)]
    cli("login", *server, input=service.admin_token + "\n")
    made = cli.json(
        "webhook", "create", "--org", "acme", "--url", hooked.url, "-e", "certificate.revoked"
    )
    assert str(made["secret"]).startswith("whsec_")
    listed = cli.json("webhook", "list")
    assert [w["id"] for w in listed["items"]] == [made["id"]]  # type: ignore[index,union-attr]
    assert "secret" not in listed["items"][0]  # type: ignore[index]
    refused = cli(
        "webhook",
        "create",
        "--org",
        "acme",
        "--url",
        "http://example.com/",
        "-e",
        "certificate.revoked",
        ok=False,
    )
    assert refused.returncode != 0
    assert "https" in refused.stderr
    hook = cli.json("webhook", "hook", "set", "--org", "acme", "--url", hooked.url)
    assert (hook["timeout_seconds"], hook["on_failure"]) == (5.0, "deny")
    log = cli.json("webhook", "deliveries", str(made["id"]))
    assert log["items"] == []


def test_a_rotated_secret_signs_from_then_on_and_a_disabled_webhook_gets_nothing(
    service: Service, hooked: Receiver, tmp_path: Path
) -> None:
    subscription = subscribe(service, hooked, ["certificate.revoked"])
    old = hooked.secret
    with service.admin() as admin:
        rotated = admin.post(f"/api/v1/webhooks/{subscription}/rotate-secret")
    assert rotated.status_code == 200, rotated.text
    hooked.secret = rotated.json()["secret"]
    assert hooked.secret != old
    factory = Factory(service, tmp_path, "rotated")
    for name in ("meter-11", "meter-12"):
        assert factory.provision(factory.device(name)).status_code == 200

    def revoke(device_id: str) -> None:
        with service.admin() as admin:
            answer = admin.post(
                f"/api/v1/devices/{device_ref(service, device_id)}/revoke",
                json={"reason": "keyCompromise"},
            )
        assert answer.status_code == 200, answer.text

    revoke("meter-11")
    deliver(service)
    [got] = hooked.wait_for(1)
    assert got.signed
    assert not verify(old, got.headers, got.body, now=service.clock.now().timestamp())
    with service.admin() as admin:
        off = admin.patch(f"/api/v1/webhooks/{subscription}", json={"enabled": False})
    assert off.json()["enabled"] is False
    revoke("meter-12")
    deliver(service)
    assert len(hooked.received) == 1
