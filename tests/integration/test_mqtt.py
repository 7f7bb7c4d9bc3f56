"""A real Mosquitto configured by imprint: devices publish with the certificates imprint
issued them, organizations are kept apart by the ACL, and a revocation shuts the door."""

from __future__ import annotations

import asyncio
import base64
import os
import queue
import shutil
import socket
import ssl
import subprocess
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import paho.mqtt.client as mqtt
import pytest
from paho.mqtt.enums import CallbackAPIVersion

from imprint.api.device_plane import inline
from imprint.device import DeviceStore, ImprintClient, provision_symmetric_key
from imprint.mqtt import BrokerFiles, write_broker_setup
from imprint.mqtt.broker import BrokerSync
from imprint.settings import Settings
from tests.conftest import free_port
from tests.integration.conftest import Service, ensure_org, start_service


def _mosquitto() -> str:
    found = shutil.which("mosquitto") or (
        "/usr/sbin/mosquitto" if Path("/usr/sbin/mosquitto").is_file() else None
    )
    if found is None:
        if os.environ.get("CI") == "true":
            pytest.fail("mosquitto is required in CI (Debian package mosquitto)")
        pytest.skip("mosquitto not installed (apt-get install mosquitto)")
    return found


@dataclass
class Broker:
    files: BrokerFiles
    port: int
    process: subprocess.Popen[bytes]


@pytest.fixture
def mqtt_service(settings: Settings, tmp_path: Path) -> Iterator[Service]:
    settings = settings.model_copy(
        update={
            "mqtt": settings.mqtt.model_copy(
                update={"enabled": True, "dir": tmp_path / "mqtt", "port": free_port()}
            )
        }
    )
    yield from start_service(settings, tmp_path)


@pytest.fixture
def broker(mqtt_service: Service) -> Iterator[Broker]:
    binary = _mosquitto()
    runtime = mqtt_service.runtime
    run_as = "root" if os.geteuid() == 0 else None
    files = write_broker_setup(runtime.settings, runtime.authority, run_as=run_as)
    port = runtime.settings.mqtt.port
    log = (files.directory / "mosquitto.log").open("wb")
    process = subprocess.Popen(
        [binary, "-c", str(files.config)], stdout=log, stderr=subprocess.STDOUT
    )
    try:
        deadline = time.monotonic() + 10
        while True:
            assert process.poll() is None, (files.directory / "mosquitto.log").read_text()
            try:
                socket.create_connection(("127.0.0.1", port), timeout=1).close()
                break
            except OSError:
                assert time.monotonic() < deadline, "mosquitto did not listen within 10 s"
                time.sleep(0.05)
        while not files.default_pid_file.is_file():  # written before it listens
            time.sleep(0.05)
        yield Broker(files, port, process)
    finally:
        process.terminate()
        process.wait(timeout=10)
        log.close()


def provision(service: Service, owner: str, device_id: str, directory: Path) -> Path:
    """Provision ``device_id`` for ``owner`` through the server, as a device would."""
    with service.admin() as admin:
        ensure_org(admin, owner)
        response = admin.post(
            "/api/v1/enrollments",
            json={"mechanism": "symmetric-key", "owner": owner, "id": f"{owner}-sensors"},
        )
    assert response.status_code == 201, response.text
    group_key = base64.b64decode(response.json()["group_key"])
    store = DeviceStore(directory)
    with ImprintClient.from_url(service.base_url, ca_file=service.root_cert) as client:
        bundle = provision_symmetric_key(
            client, device_id, group_key=group_key, key=store.pending_key()
        )
        store.save(bundle, server=client)
    return directory


class Device:
    """A paho-mqtt client holding a provisioned device's key and certificate."""

    def __init__(self, directory: Path, broker: Broker) -> None:
        self.client = mqtt.Client(CallbackAPIVersion.VERSION2, protocol=mqtt.MQTTv5)
        self.client.tls_set(
            ca_certs=str(broker.files.ca),
            certfile=str(directory / "chain.pem"),
            keyfile=str(directory / "key.pem"),
        )
        self.broker = broker
        self.connected: queue.Queue[bool] = queue.Queue()
        self.subacks: queue.Queue[list[Any]] = queue.Queue()
        self.unsubacks: queue.Queue[bool] = queue.Queue()
        self.messages: queue.Queue[tuple[str, bytes]] = queue.Queue()
        self.client.on_connect = lambda _c, _u, _f, rc, _p: self.connected.put(not rc.is_failure)
        self.client.on_subscribe = lambda _c, _u, _m, codes, _p: self.subacks.put(codes)
        self.client.on_unsubscribe = lambda _c, _u, _m, _codes, _p: self.unsubacks.put(True)
        self.client.on_message = lambda _c, _u, msg: self.messages.put((msg.topic, msg.payload))

    def connect(self) -> bool:
        """True when the broker accepted the connection (CONNACK success)."""
        try:
            self.client.connect("127.0.0.1", self.broker.port, keepalive=10)
        except (ssl.SSLError, OSError):
            return False
        self.client.loop_start()
        try:
            return self.connected.get(timeout=5)
        except queue.Empty:
            return False

    def subscribe(self, topic: str) -> None:
        """Subscribe and wait for the SUBACK."""
        self.client.subscribe(topic, qos=1)
        self.subacks.get(timeout=5)

    def wait_until_allowed(self, device_id: str) -> None:
        """Wait until the broker lets this device use its own topics.

        imprint rewrites the ACL and signals the broker after the registration's commit;
        the broker applies it at its next turn, so a device connecting right after its
        registration may publish before its ACL entry is read, and such a message is
        dropped. A probe published until it comes back waits for that; the probes are
        then unsubscribed and drained so that a test sees only its own messages.
        """
        probe = f"devices/{device_id}/probe"
        self.subscribe(probe)
        deadline = time.monotonic() + 10
        while True:
            self.client.publish(probe, b"?", qos=1).wait_for_publish(5)
            try:
                if self.messages.get(timeout=0.25)[0] == probe:
                    break
            except queue.Empty:
                assert time.monotonic() < deadline, f"the broker never let {device_id} in"
        self.client.unsubscribe(probe)
        self.unsubacks.get(timeout=5)  # probes in flight arrive before the UNSUBACK
        while not self.messages.empty():
            self.messages.get_nowait()

    def close(self) -> None:
        self.client.disconnect()
        self.client.loop_stop()


@pytest.fixture
def two_organizations(mqtt_service: Service, broker: Broker, tmp_path: Path) -> tuple[Path, Path]:
    acme = provision(mqtt_service, "acme", "sensor-a", tmp_path / "sensor-a")
    globex = provision(mqtt_service, "globex", "sensor-b", tmp_path / "sensor-b")
    return acme, globex


@pytest.mark.both_databases
def test_a_provisioned_device_publishes_and_the_acl_names_it(
    broker: Broker, two_organizations: tuple[Path, Path]
) -> None:
    acl = broker.files.acl.read_text()
    assert "user sensor-a\ntopic readwrite devices/sensor-a/#\ntopic readwrite orgs/acme/#" in acl
    device = Device(two_organizations[0], broker)
    assert device.connect()
    device.wait_until_allowed("sensor-a")
    device.subscribe("devices/sensor-a/#")
    device.client.publish("devices/sensor-a/temperature", b"21.5", qos=1).wait_for_publish(5)
    assert device.messages.get(timeout=5) == ("devices/sensor-a/temperature", b"21.5")
    device.close()


@pytest.mark.both_databases
def test_a_registration_syncs_the_broker_off_the_event_loop(
    mqtt_service: Service, broker: Broker, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The broker's files are written and the broker reloaded (a subprocess, when a
    reload command is set) after each certificate change: with ``mqtt.enabled`` the
    device plane runs in the thread pool, so that never stops the event loop."""
    assert not inline(mqtt_service.runtime)
    sync = BrokerSync.sync
    loops: list[bool] = []

    def recorded(self: BrokerSync, *, reload: bool = True) -> Any:
        loops.append(asyncio._get_running_loop() is not None)
        return sync(self, reload=reload)

    monkeypatch.setattr(BrokerSync, "sync", recorded)
    provision(mqtt_service, "acme", "sensor-c", tmp_path / "sensor-c")
    assert loops, "the registration did not sync the broker"
    assert not any(loops)


def test_a_device_of_another_organization_cannot_read_its_topics(
    broker: Broker, two_organizations: tuple[Path, Path]
) -> None:
    # Mosquitto's acl_file never refuses a SUBSCRIBE (its SUBACK grants it); it withholds
    # every message the ACL does not let the subscriber read. So: nothing must arrive.
    owner, stranger = Device(two_organizations[0], broker), Device(two_organizations[1], broker)
    assert owner.connect()
    assert stranger.connect()
    owner.wait_until_allowed("sensor-a")  # both in force: the ACL that names them both
    stranger.wait_until_allowed("sensor-b")
    stranger.subscribe("devices/sensor-a/#")
    stranger.subscribe("orgs/acme/#")
    stranger.subscribe("devices/sensor-b/#")
    owner.subscribe("devices/sensor-a/#")
    owner.client.publish("devices/sensor-a/secret", b"x", qos=1).wait_for_publish(5)
    owner.client.publish("orgs/acme/news", b"y", qos=1).wait_for_publish(5)
    owner.client.publish("devices/sensor-b/spoof", b"z", qos=1).wait_for_publish(5)
    stranger.client.publish("devices/sensor-a/command", b"w", qos=1).wait_for_publish(5)
    stranger.client.publish("devices/sensor-b/own", b"v", qos=1).wait_for_publish(5)
    assert owner.messages.get(timeout=5) == ("devices/sensor-a/secret", b"x")
    assert stranger.messages.get(timeout=5) == ("devices/sensor-b/own", b"v")
    time.sleep(0.5)
    assert stranger.messages.empty(), "a foreign organization's message was delivered"
    assert owner.messages.empty(), "a foreign device could write to this device's topics"
    owner.close()
    stranger.close()


def test_after_a_revocation_the_next_connection_is_refused(
    mqtt_service: Service, broker: Broker, two_organizations: tuple[Path, Path]
) -> None:
    first = Device(two_organizations[0], broker)
    assert first.connect()
    first.close()
    serial = DeviceStore(two_organizations[0]).load().serial
    with mqtt_service.admin() as admin:
        response = admin.post(
            f"/api/v1/certificates/{serial}/revoke", json={"reason": "keyCompromise"}
        )
    assert response.status_code == 200, response.text
    assert "sensor-a" not in broker.files.acl.read_text()
    # The broker reloads its CRL on the SIGHUP imprint sent; give it a moment to do so.
    deadline = time.monotonic() + 5
    refused = False
    while not refused and time.monotonic() < deadline:
        attempt = Device(two_organizations[0], broker)
        refused = not attempt.connect()
        attempt.close()
    assert refused, "the revoked device could still connect"
    log = (broker.files.directory / "mosquitto.log").read_text()
    assert "certificate revoked" in log or "certificate verify failed" in log
    other = Device(two_organizations[1], broker)
    assert other.connect(), "the other device must still get in"
    other.close()
