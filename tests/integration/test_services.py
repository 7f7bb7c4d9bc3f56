"""The services directory: configured services reach every directory and the bundle, and
an enrollment overrides them."""

from __future__ import annotations

import base64
import json
from collections.abc import Iterator
from pathlib import Path

import pytest

from imprint.device import DeviceStore, ImprintClient, provision_symmetric_key
from imprint.errors import ConfigurationError
from imprint.settings import Settings, load_settings
from tests.integration.conftest import Service, start_service, with_orgs

CONFIGURED = {"mqtt": "mqtts://broker.example:8883", "portal": "https://portal.example"}


@pytest.fixture
def with_services(settings: Settings, tmp_path: Path) -> Iterator[Service]:
    for service in start_service(settings.model_copy(update={"services": CONFIGURED}), tmp_path):
        yield with_orgs(service, "acme")


def test_every_directory_lists_the_configured_services(with_services: Service) -> None:
    with with_services.client() as client:
        native = client.get("/.well-known/imprint")
        versioned = client.get("/api/v1/directory")
        idprov = client.get("/idprov/directory")
    assert native.status_code == versioned.status_code == idprov.status_code == 200
    assert native.json()["services"] == CONFIGURED
    assert versioned.json() == native.json()
    assert json.loads(idprov.content)["services"] == CONFIGURED


@pytest.mark.both_databases
def test_an_enrollment_overrides_and_adds_services_in_the_bundle(
    with_services: Service, tmp_path: Path
) -> None:
    with with_services.admin() as admin:
        response = admin.post(
            "/api/v1/enrollments",
            json={
                "mechanism": "symmetric-key",
                "owner": "acme",
                "id": "line-2",
                "services": {"mqtt": "mqtts://line2-broker:8883", "ntp": "ntp://time.line2"},
            },
        )
    assert response.status_code == 201, response.text
    assert response.json()["services"] == {
        "mqtt": "mqtts://line2-broker:8883",
        "ntp": "ntp://time.line2",
    }
    store = DeviceStore(tmp_path / "device")
    with ImprintClient.from_url(with_services.base_url, ca_file=with_services.root_cert) as client:
        bundle = provision_symmetric_key(
            client,
            "press-1",
            group_key=base64.b64decode(response.json()["group_key"]),
            key=store.pending_key(),
        )
        store.save(bundle, server=client)
    assert dict(DeviceStore(tmp_path / "device").load().services) == {
        "mqtt": "mqtts://line2-broker:8883",
        "portal": "https://portal.example",
        "ntp": "ntp://time.line2",
    }


def test_an_enrollment_with_a_bad_service_name_is_refused(with_services: Service) -> None:
    with with_services.admin() as admin:
        response = admin.post(
            "/api/v1/enrollments",
            json={"mechanism": "symmetric-key", "owner": "acme", "services": {"MQTT!": "x"}},
        )
        listed = admin.get("/api/v1/enrollments")
    assert response.status_code == 400, response.text
    assert response.headers["content-type"] == "application/problem+json"
    assert "services" in response.text
    assert listed.json()["items"] == [], "a refused enrollment must not be stored"


@pytest.mark.parametrize(
    ("services", "complaint"),
    [({"MQTT": "mqtts://b"}, "a service name is lowercase"), ({"mqtt": ""}, "an address of 1")],
)
def test_a_bad_configured_service_is_a_clear_error(
    tmp_path: Path, services: dict[str, str], complaint: str
) -> None:
    config = tmp_path / "imprint.yaml"
    config.write_text(json.dumps({"services": services}))
    with pytest.raises(ConfigurationError, match=complaint):
        load_settings(config)
