"""Every console page at 390 px: nothing sticks out sideways, stacked tables keep labels.

The pages come from the console's own router, so a page added later is checked too: a
GET route is visited with ids from a seeded fleet (devices, an OOB enrollment with
secrets, a channel with data, a trusted CA, audit entries); the CSR relay's approval
page, which uses the console's layout outside its router, is visited with a pending
request's state. A route whose parameters
the fleet cannot fill fails the test by name: give it a value in ``FILL`` (or, if it
is not a page, a reason in ``NOT_PAGES``).
"""

from __future__ import annotations

import re
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest
from fastapi import APIRouter
from fastapi.routing import APIRoute
from playwright.sync_api import expect

from imprint.app.webhooks import HookSpec
from imprint.channels.entries import EntryDraft
from imprint.console import router as console_router
from imprint.device import RequestRefused
from imprint.provisioning.channels import ChannelTemplate, channel_for_device
from imprint.tenancy.access import cli_principal
from tests.browser.conftest import SCREENSHOTS, Console, Problems, login
from tests.browser.fleet import device, oob_enrollment, provision, register
from tests.browser.test_console_admin import _ca
from tests.integration.identity_helpers import csr_pem, make_csr

WIDTH = 390
CA_LIST = "factory-cas-for-production-line-seven-east"  # a long id widens its <select>

# GET routes of the console that are not pages a person reads, and why.
NOT_PAGES = {
    "/console/static/{name:path}": "static files",
    "/console/channels/{channel_id}/entries.json": "the live chart's JSON",
    "/console/login/oidc": "a redirect to the identity provider",
    "/console/login/oidc/callback": "the identity provider's way back",
    "/console/certificates/{serial}.pem": "a certificate download (PEM), not a page",
    "/console/audit.csv": "a CSV export, not a page",
    "/console/certificates.csv": "a CSV export, not a page",
    "/console/devices.csv": "a CSV export, not a page",
    "/console/enrollments/{enrollment_id}/oob-secrets.csv": "a CSV export, not a page",
}

PARAM = r"{([^}:]+)(?::[^}]*)?}"  # a path parameter: {name} or {name:converter}

# Query strings worth a second look at a page (filters that change what it shows).
ALSO = {
    "/console/trusted-cas": [f"?enrollment={CA_LIST}"],
    "/console/devices": ["?status=provisioned"],
}

# Pages that need a query to be a page at all, per route (the query replaces the bare path).
ONLY_WITH = {"/console/devices/bulk": "?action=revoke&all=1"}

# Parameters that name something other than a page's own object, per route.
ROUTE_FILL = {"/console/devices/{device_ref}/{name}": {"name": "revoke"}}

# What the page checks in the browser: the widest element, and every stacked table cell
# without a visible label (a td of a table.list whose header row is hidden).
MEASURE = """() => {
  const unlabelled = [];
  for (const table of document.querySelectorAll("table.list")) {
    const head = table.querySelector("thead");
    if (!head || getComputedStyle(head).display !== "none") continue;
    const name = table.id ? "#" + table.id : "table.list";
    const box = table.parentElement;
    if (table.scrollWidth > box.clientWidth + 1) {
      unlabelled.push(`${name} is ${table.scrollWidth} px in a ${box.clientWidth} px box`);
    }
    for (const td of table.querySelectorAll("tbody td")) {
      const label = td.dataset.label || "";
      const shown = getComputedStyle(td, "::before").content;
      if (!label || !shown.includes(label)) {
        unlabelled.push(`${name}: a td without a label: ${td.innerText.trim().slice(0, 40)}`);
      }
    }
  }
  const wide = [];
  for (const element of document.querySelectorAll("body *")) {
    const box = element.getBoundingClientRect();
    if (box.right > window.innerWidth + 0.5 && box.width > 0) {
      const inside = element.closest(".table-wrap, pre, .scroll");
      const id = element.id ? "#" + element.id : "." + [...element.classList].join(".");
      if (!inside || inside === element) wide.push(`${element.tagName.toLowerCase()}${id}`);
    }
  }
  return {
    width: document.documentElement.scrollWidth,
    unlabelled,
    wide: wide.slice(0, 5),
  };
}"""


def _seed(console: Console, workdir: Path) -> dict[str, str]:
    """A small fleet with the things that make pages long or wide; its ids by parameter."""
    service, rt = console.service, console.service.runtime
    oob_enrollment(service, "meters-east-long-enrollment-name", "acme-east", validity_days=20)
    for n in range(1, 5):
        register(
            service,
            "meters-east-long-enrollment-name",
            f"meter-{n:04d}-with-a-long-serial-0123456789abcdef",
            f"label-secret-{n:04d}",
        )
    provision(
        service, workdir, "meter-0001-with-a-long-serial-0123456789abcdef", "label-secret-0001"
    )
    with pytest.raises(RequestRefused):  # a recorded failure on the dashboard
        provision(service, workdir, "meter-0002-with-a-long-serial-0123456789abcdef", "wrong")
    provisioned = device(service, "meter-0001-with-a-long-serial-0123456789abcdef")

    _, pem = _ca("factory-root-ca.manufacturing-line-7.acme-industries.example")
    with service.admin() as admin:
        created = admin.post(
            "/api/v1/enrollments",
            json={"id": CA_LIST, "mechanism": "client-ca", "owner": "acme-west"},
        )
        assert created.status_code == 201, created.text
        trusted = admin.post(f"/api/v1/enrollments/{CA_LIST}/client-cas", json={"pem": pem})
        assert trusted.status_code == 201, trusted.text

    now = datetime.now(UTC)
    channel = channel_for_device(
        rt.channels,
        ChannelTemplate(fields={"field1": "temperature", "field2": "relative humidity"}),
        owner="acme-east",
        enrollment_id="meters-east-long-enrollment-name",
        device_ref=provisioned.id,
        device_id=provisioned.device_id,
        at=now - timedelta(minutes=5),
    )
    for n in range(12):
        rt.channel_entries.append(
            channel.id,
            EntryDraft(fields={"field1": f"{20 + n / 4}", "field2": f"{40 + n}"}),
            min_interval=timedelta(0),
        )
    subscribed = rt.app.webhooks.create(
        cli_principal(),
        "acme-east",
        "https://inventory-receiver.production-line-seven.acme-industries.example/imprint/events",
        ["provisioning.succeeded", "provisioning.failed", "certificate.expiring"],
        description="the inventory system of production line seven, east building",
    )
    rt.app.webhooks.set_hook(
        cli_principal(),
        "acme-east",
        HookSpec(url="https://inventory-hook.production-line-seven.acme-industries.example/hook"),
    )
    _, csr = make_csr("laptop-client-of-line-seven-east.acme-industries.example")
    with service.client() as client:
        started = client.post("/api/v1/relay", json={"csr": csr_pem(csr)})
    assert started.status_code == 201, started.text
    return {
        "relay_state": started.json()["state"],
        "subscription_id": subscribed.subscription.id,
        "device_ref": provisioned.id,
        "enrollment_id": "meters-east-long-enrollment-name",
        "channel_id": str(channel.id),
    }


def _get_routes(router: APIRouter, prefix: str) -> Iterator[str]:
    """The paths of the GET routes of ``router`` and the routers it includes (FastAPI
    keeps an included router whole, as ``original_router``, or copies its routes)."""
    for route in router.routes:
        included = getattr(route, "original_router", None)
        if isinstance(included, APIRouter):
            yield from _get_routes(included, prefix + included.prefix)
        elif isinstance(route, APIRoute) and "GET" in route.methods:
            yield route.path if route.path.startswith(prefix) else prefix + route.path


def _pages(fill: dict[str, str]) -> list[str]:
    """Every GET page of the console's router, its parameters filled from the fleet."""
    pages, unfilled = [], []
    for route in _get_routes(console_router, console_router.prefix):
        if route in NOT_PAGES:
            continue
        values = {**fill, **ROUTE_FILL.get(route, {})}
        names = re.findall(PARAM, route)
        missing = [name for name in names if name not in values]
        if missing:
            unfilled.append(f"{route} (no value for {', '.join(missing)})")
            continue
        path = re.sub(PARAM, lambda m, values=values: values[m.group(1)], route)
        pages.append(path + ONLY_WITH.get(route, ""))
        pages.extend(path + query for query in ALSO.get(route, []))
    assert not unfilled, (
        "console pages the seeded fleet cannot fill (add their ids to the fleet, or to "
        "NOT_PAGES with a reason): " + "; ".join(unfilled)
    )
    return pages


def _check(page: Any, where: str) -> list[str]:
    found = page.evaluate(MEASURE)
    faults = []
    if found["width"] > WIDTH:
        faults.append(f"{where}: {found['width']} px wide ({', '.join(found['wide'])})")
    faults.extend(f"{where}: {cell}" for cell in found["unlabelled"])
    return faults


def test_every_console_page_fits_390_px_and_stacked_tables_keep_labels(
    page: Any, console: Console, problems: Problems, tmp_path: Path
) -> None:
    fill = _seed(console, tmp_path)
    pages = _pages(fill)
    assert "/console/trusted-cas" in pages
    assert f"/console/channels/{fill['channel_id']}" in pages
    page.set_viewport_size({"width": WIDTH, "height": 844})

    page.goto(f"{console.url}/login")
    faults = _check(page, "/console/login")
    login(page, console, console.admin)
    checked = []
    for path in pages:
        answer = page.goto(f"{console.service.base_url}{path}")
        assert answer is not None
        assert answer.status == 200, f"{path}: HTTP {answer.status}"
        if not answer.headers.get("content-type", "").startswith("text/html"):
            continue  # a download (CSV, PEM): no layout
        page.wait_for_load_state("load")
        faults.extend(_check(page, path))
        checked.append(path)
        if path in (f"/console/enrollments/{fill['enrollment_id']}", "/console/trusted-cas"):
            SCREENSHOTS.mkdir(parents=True, exist_ok=True)
            name = path.split("/")[2]
            page.screenshot(path=str(SCREENSHOTS / f"{name}-layout-390.png"), full_page=True)

    # The relay's approval page: the console's layout, outside the console's router.
    answer = page.goto(f"{console.service.base_url}/relay/{fill['relay_state']}")
    assert answer is not None
    assert answer.status == 200
    expect(page.locator("#fingerprint")).to_have_count(1)
    faults.extend(_check(page, "/relay/{state}"))
    SCREENSHOTS.mkdir(parents=True, exist_ok=True)
    page.screenshot(path=str(SCREENSHOTS / "relay-layout-390.png"), full_page=True)

    # Pages a form leads to: a decoded CA, a new enrollment's one-time secrets.
    page.goto(f"{console.url}/trusted-cas")
    _, pem = _ca("another-intermediate-ca.plant-3.acme-industries.example")
    page.locator("#ca-pem").fill(pem)
    page.get_by_role("button", name="Decode").click()
    page.wait_for_load_state("load")
    faults.extend(_check(page, "/console/trusted-cas (decoded)"))
    page.goto(f"{console.url}/enrollments/new")
    page.get_by_label("Id (optional)").fill("sensors-registration-key-with-a-long-name")
    page.locator("#mechanism").select_option("symmetric-key")
    page.locator("select[name=owner]").select_option("acme-east")
    page.locator("#create-enrollment").click()
    page.wait_for_load_state("load")
    faults.extend(_check(page, "/console/enrollments/new (created)"))
    page.goto(f"{console.url}/enrollments/new")
    page.get_by_label("Id (optional)").fill("sensors-with-a-registration-key-and-long-id")
    page.locator("#mechanism").select_option("registration-key")
    page.locator("select[name=owner]").select_option("acme-east")
    page.locator("#create-enrollment").click()
    page.wait_for_load_state("load")
    page.goto(f"{console.url}/enrollments/sensors-with-a-registration-key-and-long-id")
    page.locator("#rotate-key button").click()
    page.wait_for_load_state("load")
    expect(page.locator("#registration-key")).to_have_count(1)
    faults.extend(_check(page, "/console/enrollments/{enrollment_id}/registration-key"))
    page.goto(f"{console.url}/enrollments/{fill['enrollment_id']}")
    rows = "device_id,secret\n" + "".join(
        f"sensor-{n}-0123456789abcdef0123456789abcdef0123456789abcdef,{'x' * n}\n"
        for n in (3, 40)  # the first secret is too short: a report with a problem
    )
    page.locator("#oob-upload input[type=file]").set_input_files(
        {"name": "secrets.csv", "mimeType": "text/csv", "buffer": rows.encode()}
    )
    page.locator("#oob-submit").click()
    page.wait_for_load_state("load")
    expect(page.locator("#oob-problems tbody tr").first).to_be_attached()
    faults.extend(_check(page, "/console/enrollments/{enrollment_id}/oob-secrets (report)"))

    assert len(checked) >= 12, checked
    assert not faults, "at 390 px:\n" + "\n".join(faults)


def test_a_route_the_fleet_cannot_fill_is_named() -> None:
    with pytest.raises(AssertionError) as refused:
        _pages({"device_ref": "d", "channel_id": "1"})
    assert "/console/enrollments/{enrollment_id} (no value for enrollment_id)" in str(refused.value)
    assert "/console/devices/{device_ref}" not in str(refused.value)
