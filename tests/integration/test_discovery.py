"""DNS-SD: the running server announces itself by mDNS on loopback, and a device with no
URL configured finds it and provisions (the CLI, as a separate process)."""

from __future__ import annotations

import base64
import os
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest
from zeroconf import IPVersion, Zeroconf

from imprint.device import DeviceStore
from imprint.device.discovery import browse
from imprint.settings import Settings
from tests.integration.conftest import Service, start_service, with_orgs

LOOPBACK = "127.0.0.1"


@pytest.fixture
def announced(settings: Settings, tmp_path: Path) -> Iterator[Service]:
    settings = settings.model_copy(
        update={
            "discovery": settings.discovery.model_copy(
                update={"enabled": True, "interfaces": [LOOPBACK], "name": f"imprint-{os.getpid()}"}
            )
        }
    )
    for service in start_service(settings, tmp_path):
        yield with_orgs(service, "acme")


@pytest.mark.parametrize(
    ("service_type", "path"),
    [
        ("_imprint._tcp.local.", "/.well-known/imprint"),
        ("_idprov._tcp.local.", "/idprov/directory"),
    ],
)
@pytest.mark.slow
def test_both_service_types_are_announced_with_the_directory_path(
    announced: Service, service_type: str, path: str
) -> None:
    port = int(announced.base_url.rsplit(":", 1)[1])
    name = f"imprint-{os.getpid()}.{service_type}"
    zeroconf = Zeroconf(interfaces=[LOOPBACK], ip_version=IPVersion.V4Only)
    try:
        info = zeroconf.get_service_info(service_type, name, timeout=5000)
    finally:
        zeroconf.close()
    assert info is not None, f"{name} not found by mDNS on {LOOPBACK}"
    assert info.port == port
    assert info.parsed_addresses() == [LOOPBACK]
    assert info.properties[b"path"] == path.encode()
    assert info.properties[b"directory"] == path.encode()
    assert info.properties[b"url"] == announced.base_url.encode()
    with announced.client() as client:
        response = client.get(info.properties[b"path"].decode())
    assert response.status_code == 200


@pytest.mark.slow
def test_the_sdk_browse_finds_the_server(announced: Service) -> None:
    found = browse(5.0, interfaces=[LOOPBACK])
    assert announced.base_url in found


@pytest.mark.slow
@pytest.mark.both_databases
def test_a_device_provisions_with_no_url_configured(announced: Service, tmp_path: Path) -> None:
    with announced.admin() as admin:
        response = admin.post(
            "/api/v1/enrollments",
            json={"mechanism": "symmetric-key", "owner": "acme", "id": "found-by-dns-sd"},
        )
    assert response.status_code == 201, response.text
    group_key = tmp_path / "group.key"
    group_key.write_text(response.json()["group_key"])
    base64.b64decode(group_key.read_text())
    device_dir = tmp_path / "device"
    env = {k: v for k, v in os.environ.items() if not k.startswith("IMPRINT_")}
    done = subprocess.run(
        [
            sys.executable,
            "-m",
            "imprint",
            "device",
            "provision",
            "--dir",
            str(device_dir),
            "--mechanism",
            "symmetric-key",
            "--device-id",
            "lamp-7",
            "--group-key-file",
            str(group_key),
            "--ca-file",
            str(announced.root_cert),
        ],
        capture_output=True,
        text=True,
        timeout=60,
        env=env,
        check=False,
    )
    assert done.returncode == 0, done.stderr
    assert "provisioned device lamp-7 (owner acme, enrollment found-by-dns-sd" in done.stdout
    bundle = DeviceStore(device_dir).load()
    assert bundle.device_id == "lamp-7"
    assert announced.runtime.devices.find("acme", "lamp-7") is not None


@pytest.mark.slow
def test_without_discovery_or_url_the_cli_says_so(tmp_path: Path) -> None:
    env = {k: v for k, v in os.environ.items() if not k.startswith("IMPRINT_")}
    (tmp_path / "key").write_text(base64.b64encode(b"k" * 32).decode())
    done = subprocess.run(
        [
            sys.executable,
            "-m",
            "imprint",
            "device",
            "provision",
            "--dir",
            str(tmp_path / "device"),
            "--mechanism",
            "symmetric-key",
            "--device-id",
            "nobody",
            "--group-key-file",
            str(tmp_path / "key"),
            "--discover-timeout",
            "1",
        ],
        capture_output=True,
        text=True,
        timeout=60,
        env=env,
        check=False,
    )
    assert done.returncode != 0
    assert "discovery found no imprint server within 1 s" in done.stderr
