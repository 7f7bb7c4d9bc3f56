"""``imprint device provision|show|renew`` run as a user runs them, against ``imprint serve``."""

from __future__ import annotations

import base64
import json
import signal
import ssl
import subprocess
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx
import pytest

from imprint.device import derive_device_key
from tests.conftest import free_port
from tests.e2e.conftest import IMPRINT, clean_env, frozen_heap, openssl, stop
from tests.warm_cli import warm_imprint

PASS = {"IMPRINT_CA__PASSPHRASE": "correct horse battery staple"}


@dataclass
class Server:
    url: str
    root: Path
    token: str
    data: Path

    def admin(self, path: str, **body: Any) -> dict[str, Any]:
        with httpx.Client(
            verify=trusting(self.root),
            headers={"Authorization": f"Bearer {self.token}"},
            timeout=10,
        ) as client:
            response = client.post(f"{self.url}{path}", json=body)
        assert response.status_code in (200, 201), response.text
        result: dict[str, Any] = response.json()
        return result


def trusting(root: Path) -> ssl.SSLContext:
    return ssl.create_default_context(cafile=str(root))


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Server]:
    """``imprint serve`` on a free port with a fresh data directory, for this module."""
    workdir = tmp_path_factory.mktemp("device-cli-server")
    port = free_port()
    env = clean_env(workdir / "data", IMPRINT_SERVER__PORT=str(port), **PASS)
    log = (workdir / "serve.log").open("w")
    process = subprocess.Popen(
        [str(IMPRINT), "serve"], cwd=workdir, env=env, stdout=log, stderr=subprocess.STDOUT
    )
    url = f"https://127.0.0.1:{port}"
    root = workdir / "data" / "ca" / "root.crt"
    try:
        deadline = time.monotonic() + 60
        while True:
            assert process.poll() is None, (workdir / "serve.log").read_text()
            assert time.monotonic() < deadline, "imprint serve did not answer within 60 s"
            try:
                if root.exists() and httpx.get(f"{url}/healthz", verify=trusting(root)).is_success:
                    break
            except httpx.HTTPError:
                pass
            time.sleep(0.2)
        token = (workdir / "data" / "admin-token").read_text().strip()
        server = Server(url, root, token, workdir / "data")
        server.admin("/api/v1/orgs", id="acme", name="Acme")  # the enrollments' owner
        yield server
    finally:
        stop(process, signal.SIGINT, 20)
        log.close()


def test_the_server_keeps_its_start_up_heap_out_of_collections(server: Server) -> None:
    """``imprint serve`` freezes what start-up made before it serves: a full collection
    then walks what requests left behind, not the ~200,000 objects of the modules, the
    application and the runtime (each such pass stalled the event loop 110-150 ms)."""
    _, frozen = frozen_heap(server.url, server.root)
    assert frozen > 50_000


def device(
    tmp_path: Path, *args: str, stdin: str | None = None
) -> subprocess.CompletedProcess[str]:
    """``imprint device ARGS`` with no imprint configuration around it."""
    return subprocess.run(
        [str(warm_imprint()), "device", *args],
        cwd=tmp_path,
        env=clean_env(tmp_path / "unused"),
        input=stdin,
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )


def ok(result: subprocess.CompletedProcess[str]) -> str:
    assert result.returncode == 0, result.stdout + result.stderr
    return result.stdout


def failed(result: subprocess.CompletedProcess[str], code: int = 1) -> str:
    assert result.returncode == code, result.stdout + result.stderr
    assert "Traceback" not in result.stderr
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1, result.stderr
    assert lines[0].startswith("error: ")
    return lines[0]


def test_provision_show_and_renew_with_a_symmetric_key(server: Server, tmp_path: Path) -> None:
    group = server.admin(
        "/api/v1/enrollments",
        id="cli-sym",
        mechanism="symmetric-key",
        owner="acme",
        pre_shared_key="psk-for-the-cli-0001",
        services={"mqtt": "mqtts://broker:8883"},
    )
    device_key = derive_device_key(base64.b64decode(group["group_key"]), "cli-1")
    key_file = tmp_path / "device.key"
    key_file.write_text(base64.b64encode(device_key).decode() + "\n")
    dev = tmp_path / "dev"
    out = ok(device(
        tmp_path, "provision", "--url", server.url, "--ca-file", str(server.root),
        "--dir", str(dev), "--mechanism", "symmetric-key", "--device-id", "cli-1",
        "--secret-file", str(key_file),
    ))  # fmt: skip
    assert "provisioned device cli-1 (owner acme, enrollment cli-sym, symmetric-key)" in out
    assert "renewal due" in out
    assert (dev / "key.pem").stat().st_mode & 0o777 == 0o600
    assert "OK" in openssl("verify", "-CAfile", "ca.pem", "-untrusted", "chain.pem", "cert.pem",
                           cwd=dev)  # fmt: skip

    shown = ok(device(tmp_path, "show", "--dir", str(dev)))
    assert "device id" in shown
    assert "cli-1" in shown
    assert "CN=cli-1,OU=acme" in shown
    assert "mqtt=mqtts://broker:8883" in shown
    assert "psk-for-the-cli-0001" not in shown
    assert "PRIVATE KEY" not in shown
    assert "hidden" in shown
    secrets = ok(device(tmp_path, "show", "--dir", str(dev), "--show-secrets"))
    assert "psk-for-the-cli-0001" in secrets
    as_json = json.loads(ok(device(tmp_path, "show", "--dir", str(dev), "--json")))
    assert as_json["device_id"] == "cli-1"
    assert as_json["renewal_due_now"] is False
    first_serial = as_json["serial"]

    not_due = ok(device(tmp_path, "renew", "--dir", str(dev)))
    assert "renewal not due until" in not_due
    renewed = ok(device(tmp_path, "renew", "--dir", str(dev), "--force"))
    assert f"(was {first_serial})" in renewed
    after = json.loads(ok(device(tmp_path, "show", "--dir", str(dev), "--json")))
    assert after["serial"] != first_serial
    signed = ok(device(tmp_path, "renew", "--dir", str(dev), "--force", "--signed"))
    assert f"(was {after['serial']})" in signed

    again = failed(device(
        tmp_path, "provision", "--url", server.url, "--ca-file", str(server.root),
        "--dir", str(dev), "--mechanism", "symmetric-key", "--device-id", "cli-1",
        "--secret-file", str(key_file),
    ))  # fmt: skip
    assert "already holds device 'cli-1'" in again


def test_registration_key_typed_at_the_prompt_and_oob_secret_from_a_file(
    server: Server, tmp_path: Path
) -> None:
    server.admin(
        "/api/v1/enrollments",
        id="cli-reg",
        mechanism="registration-key",
        owner="acme",
        generate_pre_shared_key=True,
    )
    key = server.admin("/api/v1/enrollments/cli-reg/registration-key")["key"]
    out = ok(device(
        tmp_path, "provision", "--url", server.url, "--ca-file", str(server.root),
        "--dir", "reg", "--mechanism", "registration-key", "--device-id", "74743827342",
        stdin=key + "\n",
    ))  # fmt: skip
    assert "provisioned device 74743827342" in out
    shown = json.loads(ok(device(tmp_path, "show", "--dir", "reg", "--json", "--show-secrets")))
    assert len(shown["pre_shared_key"]) >= 16  # opened from the sealed answer

    server.admin("/api/v1/enrollments", id="cli-oob", mechanism="oob-secret", owner="acme")
    server.admin(
        "/api/v1/enrollments/cli-oob/oob-secrets", device_id="oob-1", secret="cli-oob-secret-1"
    )
    (tmp_path / "secret.txt").write_text("cli-oob-secret-1\n")
    out = ok(device(
        tmp_path, "provision", "--url", server.url.removeprefix("https://"),
        "--ca-file", str(server.root), "--dir", "oob", "--mechanism", "oob-secret",
        "--device-id", "oob-1", "--secret-file", "secret.txt",
    ))  # fmt: skip
    assert "provisioned device oob-1" in out


def test_errors_are_one_line_with_a_useful_exit_status(server: Server, tmp_path: Path) -> None:
    server.admin("/api/v1/enrollments", id="cli-err", mechanism="oob-secret", owner="acme")
    server.admin(
        "/api/v1/enrollments/cli-err/oob-secrets", device_id="err-1", secret="the-right-one"
    )
    (tmp_path / "wrong.txt").write_text("not-the-secret\n")
    common = ("provision", "--url", server.url, "--ca-file", str(server.root), "--dir", "dev")
    wrong = failed(device(
        tmp_path, *common, "--mechanism", "oob-secret", "--device-id", "err-1",
        "--secret-file", "wrong.txt",
    ))  # fmt: skip
    assert "403 signature_invalid" in wrong
    assert "not-the-secret" not in wrong
    assert not (tmp_path / "dev" / "bundle.json").exists()

    missing = failed(device(tmp_path, *common, "--mechanism", "oob-secret"))
    assert "oob-secret needs --device-id" in missing
    no_cert = failed(device(tmp_path, *common, "--mechanism", "client-ca"))
    assert "client-ca needs --cert" in no_cert
    http = failed(device(
        tmp_path, "provision", "--url", "http://127.0.0.1:1", "--dir", "x",
        "--mechanism", "oob-secret", "--device-id", "a", "--secret-file", "wrong.txt",
    ))  # fmt: skip
    assert "must start with https://" in http
    unreachable = failed(
        device(
            tmp_path, "provision", "--url", f"https://127.0.0.1:{free_port()}", "--dir", "y",
            "--mechanism", "oob-secret", "--device-id", "a", "--secret-file", "wrong.txt",
            "--attempts", "1",
        ),
        75,
    )  # fmt: skip
    assert "cannot reach the server (ConnectError" in unreachable
    assert "gave up after 1 attempt" in unreachable
    empty = failed(device(tmp_path, "show", "--dir", "nothing-here"))
    assert "holds no provisioned device" in empty
    not_there = failed(device(tmp_path, *common, "--mechanism", "x509", "--cert", "no.pem",
                              "--key", "no.pem"))  # fmt: skip
    assert "no.pem" in not_there
