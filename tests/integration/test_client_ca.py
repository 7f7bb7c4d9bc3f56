"""client-ca self-provisioning, done with plain openssl and curl as the seed does it."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import httpx
import pytest

from tests.e2e.conftest import openssl
from tests.integration.conftest import Service, with_orgs
from tests.integration.test_cache_coherence_sqlite import asleep


@pytest.fixture
def service(service: Service) -> Service:
    """The server, with the organizations this module's enrollments name."""
    return with_orgs(service, "acme")


CA_EXT = [
    "-addext",
    "basicConstraints=critical,CA:TRUE",
    "-addext",
    "keyUsage=critical,keyCertSign,cRLSign",
]


def make_ca(directory: Path, name: str) -> Path:
    openssl(
        "req", "-x509", "-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:P-256", "-nodes",
        "-keyout", f"{name}-key.pem", "-out", f"{name}.pem", "-subj", f"/CN={name}",
        "-days", "30", *CA_EXT, cwd=directory,
    )  # fmt: skip
    return directory / f"{name}.pem"


def make_device(directory: Path, ca: str, common_name: str, file_name: str | None = None) -> str:
    name = file_name or common_name
    openssl(
        "req", "-new", "-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:P-256", "-nodes",
        "-keyout", f"{name}-key.pem", "-out", f"{name}.csr", "-subj", f"/CN={common_name}",
        cwd=directory,
    )  # fmt: skip
    openssl(
        "x509", "-req", "-in", f"{name}.csr", "-CA", f"{ca}.pem", "-CAkey", f"{ca}-key.pem",
        "-CAcreateserial", "-days", "10", "-out", f"{name}.pem", cwd=directory,
    )  # fmt: skip
    return name


def curl_provision(
    service: Service, directory: Path, device: str, payload: dict[str, object]
) -> tuple[int, dict[str, object]]:
    result = subprocess.run(
        [
            "curl", "--silent", "--cacert", str(service.root_cert),
            "--cert", f"{device}.pem", "--key", f"{device}-key.pem",
            "-H", "content-type: application/json", "-d", json.dumps(payload),
            "-w", "\n%{http_code}", f"{service.base_url}/api/v1/provision",
        ],
        cwd=directory, capture_output=True, text=True, timeout=30, check=False,
    )  # fmt: skip
    body, _, status = result.stdout.rpartition("\n")
    return int(status or 0), json.loads(body) if body else {}


def csr_for(directory: Path, device: str) -> str:
    return (directory / f"{device}.csr").read_text()


def create_enrollment(client: httpx.Client, enrollment_id: str) -> None:
    """A client-ca enrollment of acme's, through the API."""
    created = client.post(
        "/api/v1/enrollments",
        json={"id": enrollment_id, "mechanism": "client-ca", "owner": "acme"},
    )
    assert created.status_code == 201, created.text


@pytest.fixture
def connector(service: Service, tmp_path: Path) -> Path:
    """A client-ca enrollment trusting a CA made with openssl, uploaded through the API."""
    make_ca(tmp_path, "factory-ca")
    with service.admin() as client:
        create_enrollment(client, "connector")
        uploaded = client.post(
            "/api/v1/enrollments/connector/client-cas",
            json={"pem": (tmp_path / "factory-ca.pem").read_text()},
        )
        assert uploaded.status_code == 201, uploaded.text
    return tmp_path


def test_decode_shows_the_ca_before_saving(service: Service, tmp_path: Path) -> None:
    ca = make_ca(tmp_path, "preview-ca")
    expected = openssl("x509", "-in", str(ca), "-noout", "-fingerprint", "-sha256", cwd=tmp_path)
    with service.admin() as client:
        decoded = client.post("/api/v1/client-cas/decode", json={"pem": ca.read_text()})
        garbage = client.post("/api/v1/client-cas/decode", json={"pem": "not a pem"})
    assert decoded.status_code == 200
    (item,) = decoded.json()
    assert item["subject"] == "CN=preview-ca"
    assert item["issuer"] == "CN=preview-ca"
    assert item["key"] == "EC P-256"
    assert item["is_ca"] is True
    assert item["fingerprint_sha256"] == expected.strip().split("=")[1].replace(":", "").lower()
    assert (garbage.status_code, garbage.json()["code"]) == (400, "value_invalid")
    with service.admin() as client:
        assert client.get("/api/v1/enrollments").json()["items"] == []


@pytest.mark.both_databases
def test_first_mtls_contact_provisions_the_device_with_its_cn(
    service: Service, connector: Path
) -> None:
    device = make_device(connector, "factory-ca", "dev-1")
    status, body = curl_provision(
        service, connector, device, {"mechanism": "client-ca", "csr": csr_for(connector, device)}
    )
    assert status == 200, body
    bundle = body["bundle"]
    assert isinstance(bundle, dict)
    assert bundle["device_id"] == "dev-1"
    assert bundle["owner"] == "acme"
    with service.admin() as client:
        devices = client.get("/api/v1/devices", params={"enrollment_id": "connector"}).json()
    (listed,) = devices["items"]
    assert listed["device_id"] == "dev-1"
    assert listed["status"] == "provisioned"
    pinned = openssl(
        "x509", "-in", f"{device}.pem", "-noout", "-fingerprint", "-sha256", cwd=connector
    )
    assert listed["pinned_fingerprint"] == pinned.strip().split("=")[1].replace(":", "").lower()


def test_another_certificate_for_the_same_cn_is_refused(service: Service, connector: Path) -> None:
    first = make_device(connector, "factory-ca", "dev-2", "dev-2-first")
    second = make_device(connector, "factory-ca", "dev-2", "dev-2-second")
    ok, _ = curl_provision(
        service, connector, first, {"mechanism": "client-ca", "csr": csr_for(connector, first)}
    )
    before = len(service.runtime.ledger.search(limit=1000))
    refused, body = curl_provision(
        service, connector, second, {"mechanism": "client-ca", "csr": csr_for(connector, second)}
    )
    assert ok == 200
    assert (refused, body["code"]) == (403, "identity_taken")
    assert len(service.runtime.ledger.search(limit=1000)) == before


def test_unknown_issuer_is_refused_over_http(service: Service, connector: Path) -> None:
    make_ca(connector, "rogue-ca")
    device = make_device(connector, "rogue-ca", "dev-3")
    status, body = curl_provision(
        service, connector, device, {"mechanism": "client-ca", "csr": csr_for(connector, device)}
    )
    assert (status, body["code"]) == (403, "issuer_unknown")
    assert service.runtime.devices.search(limit=10) == []


def test_disabled_list_refuses_even_known_issuers(service: Service, connector: Path) -> None:
    device = make_device(connector, "factory-ca", "dev-4")
    with service.admin() as client:
        assert client.post("/api/v1/enrollments/connector/disable").status_code == 200
    status, body = curl_provision(
        service, connector, device, {"mechanism": "client-ca", "csr": csr_for(connector, device)}
    )
    assert (status, body["code"]) == (403, "not_enrolled")
    assert service.runtime.devices.search(limit=10) == []


def test_no_client_certificate_is_missing_evidence(service: Service, connector: Path) -> None:
    device = make_device(connector, "factory-ca", "dev-5")
    with service.client() as client:
        response = client.post(
            "/api/v1/provision", json={"mechanism": "client-ca", "csr": csr_for(connector, device)}
        )
    assert (response.status_code, response.json()["code"]) == (400, "evidence_missing")


def test_non_ca_certificates_are_not_trusted(service: Service, connector: Path) -> None:
    device = make_device(connector, "factory-ca", "leaf-only")
    with service.admin() as client:
        response = client.post(
            "/api/v1/enrollments/connector/client-cas",
            json={"pem": (connector / f"{device}.pem").read_text()},
        )
        listed = client.get("/api/v1/enrollments/connector/client-cas").json()["items"]
    assert (response.status_code, response.json()["code"]) == (400, "value_invalid")
    assert [ca["subject"] for ca in listed] == ["CN=factory-ca"]


_ADD_IN_ANOTHER_PROCESS = """
import sys
from datetime import UTC, datetime

from cryptography import x509

from imprint.provisioning.client_cas import ClientCA, fingerprint
from imprint.store.client_cas import SqlClientCAStore
from imprint.store.db import create_engine

url, enrollment_id, path = sys.argv[1:]
pem = open(path).read()
certificate = x509.load_pem_x509_certificate(pem.encode())
engine = create_engine(url)
SqlClientCAStore(engine).add([ClientCA(
    "", enrollment_id, fingerprint(certificate), certificate.subject.rfc4514_string(), pem,
    datetime.now(UTC).replace(microsecond=0),
)])
engine.dispose()
"""


def test_a_ca_added_by_another_process_admits_its_devices_at_once(
    service: Service, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Another worker (here another process writing the same SQLite file) adds the CA,
    and the device connects at once, before this process's listener has looked: the
    gate looks itself before it refuses an unknown issuer."""
    asleep(service.runtime.engine, monkeypatch)  # its listener's thread looks no more
    make_ca(tmp_path, "late-ca")
    with service.admin() as client:
        create_enrollment(client, "late")  # no CA yet
    device = make_device(tmp_path, "late-ca", "late-1")
    payload = {"mechanism": "client-ca", "csr": csr_for(tmp_path, device)}
    status, body = curl_provision(service, tmp_path, device, payload)
    assert (status, body.get("code")) == (403, "issuer_unknown")  # not trusted yet
    added = subprocess.run(
        [sys.executable, "-c", _ADD_IN_ANOTHER_PROCESS, service.runtime.settings.database_url(),
         "late", str(tmp_path / "late-ca.pem")],
        capture_output=True, text=True, timeout=60, check=False,
    )  # fmt: skip
    assert added.returncode == 0, added.stderr
    status, body = curl_provision(service, tmp_path, device, payload)
    assert status == 200, body
    assert body["bundle"]["device_id"] == "late-1"  # type: ignore[index]
