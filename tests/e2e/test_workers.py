"""`imprint serve` with `server.workers: 2`: two processes share the port and the SQLite
database, a worker that dies is replaced, and SIGTERM stops them all."""

from __future__ import annotations

import asyncio
import signal
import socket
import subprocess
import time
from collections import Counter
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path

import httpx
import pytest
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import NameOID

from imprint.attestation.symmetric_key import derive_device_key
from tests.conftest import free_port
from tests.e2e.conftest import (
    IMPRINT,
    clean_env,
    frozen_heap,
    healthy,
    live_processes,
    start_serve,
    stop,
    symmetric_key_group,
    trusting,
    wait_until,
    wait_until_serving,
)
from tests.integration.test_symmetric_key import request_body


@dataclass
class Served:
    process: subprocess.Popen[str]
    url: str
    ca: Path
    token: str
    log: Path


def _workers_of(pid: int) -> set[int]:
    return {p.pid for p in live_processes() if p.parent == pid}


@pytest.fixture
def served(tmp_path: Path) -> Iterator[Served]:
    port = free_port()
    log = tmp_path / "serve.log"
    env = clean_env(
        tmp_path / "data",
        IMPRINT_SERVER__PORT=str(port),
        IMPRINT_SERVER__WORKERS="2",
        IMPRINT_CA__PASSPHRASE="workers-passphrase",
    )
    process = start_serve(tmp_path, env, log)
    url = f"https://127.0.0.1:{port}"
    ca = tmp_path / "data" / "ca" / "root.crt"
    try:
        wait_until_serving(process, url, ca, log, 90)
        token = (tmp_path / "data" / "admin-token").read_text().strip()
        yield Served(process, url, ca, token, log)
    finally:
        stop(process, signal.SIGTERM, 30)


def _csr(name: str) -> str:
    key = ec.generate_private_key(ec.SECP256R1())
    csr = (
        x509.CertificateSigningRequestBuilder()
        .subject_name(x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, name)]))
        .sign(key, hashes.SHA256())
    )
    return csr.public_bytes(serialization.Encoding.PEM).decode()


def test_two_workers_share_the_port_and_the_database(served: Served) -> None:
    assert "Workers: 2 processes" in served.log.read_text()
    wait_until(lambda: len(_workers_of(served.process.pid)) == 2, "two worker processes")

    # Forty concurrent issuances over fresh connections land on both workers, which
    # write to one SQLite file: every one succeeds and is recorded once.
    headers = {"Authorization": f"Bearer {served.token}"}

    def issue(n: int) -> httpx.Response:
        with httpx.Client(verify=trusting(served.ca), headers=headers, timeout=30) as client:
            body = {"csr": _csr(f"worker-test-{n}"), "profile": "device"}
            return client.post(f"{served.url}/api/v1/certificates", json=body)

    with ThreadPoolExecutor(max_workers=8) as pool:
        answers = list(pool.map(issue, range(40)))
    assert [a.status_code for a in answers] == [201] * 40, [a.text for a in answers[:3]]
    serials = {a.json()["serial"] for a in answers}
    assert len(serials) == 40
    listed = httpx.get(
        f"{served.url}/api/v1/certificates",
        params={"limit": 200},
        headers=headers,
        verify=trusting(served.ca),
    ).json()["items"]
    assert serials <= {item["serial"] for item in listed}
    assert all(item["status"] == "issued" for item in listed if item["serial"] in serials)


def test_each_worker_keeps_its_start_up_heap_out_of_collections(served: Served) -> None:
    wait_until(lambda: len(_workers_of(served.process.pid)) == 2, "two worker processes")
    frozen: dict[str, float] = {}  # pid -> the objects its start-up froze

    def scrape(_: int) -> None:  # a fresh connection each: whichever worker takes it
        pid, objects = frozen_heap(served.url, served.ca)
        frozen[pid] = objects

    deadline = time.monotonic() + 30
    with ThreadPoolExecutor(max_workers=8) as pool:
        while len(frozen) < 2 and time.monotonic() < deadline:
            list(pool.map(scrape, range(16)))
    assert set(frozen) == {str(pid) for pid in _workers_of(served.process.pid)}, frozen
    assert min(frozen.values()) > 50_000, frozen


def test_connections_opened_at_once_are_shared_out_over_the_workers(served: Served) -> None:
    """Thirty-two connections opened together, as a device gateway or the benchmark's
    load generator opens them, and kept: each worker takes a fair share of them. On one
    shared socket the first worker to wake accepted every connection then waiting."""
    wait_until(lambda: len(_workers_of(served.process.pid)) == 2, "two worker processes")
    port = int(served.url.rsplit(":", 1)[1])
    # Two listening sockets on the port, one a worker (what the hash below spreads over).
    assert _listening_on(port) == 2

    async def pid_of(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> str:
        writer.write(b"GET /metrics HTTP/1.1\r\nHost: 127.0.0.1\r\nConnection: close\r\n\r\n")
        body = (await reader.read()).decode()
        writer.close()
        return body.split('imprint_process_info{pid="', 1)[1].split('"', 1)[0]

    async def main() -> list[str]:
        context = trusting(served.ca)
        opened = await asyncio.gather(
            *(asyncio.open_connection("127.0.0.1", port, ssl=context) for _ in range(32))
        )
        return await asyncio.gather(*(pid_of(reader, writer) for reader, writer in opened))

    served_by = Counter(asyncio.run(main()))
    assert set(served_by) == {str(pid) for pid in _workers_of(served.process.pid)}, served_by
    # A hash over 32 connections: fewer than 4 on either side is about 3 in a million.
    assert min(served_by.values()) >= 4, served_by


def _listening_on(port: int) -> int:
    """How many sockets listen on 127.0.0.1:``port`` (``/proc/net/tcp``, state 0A)."""
    local = f"0100007F:{port:04X}"
    rows = Path("/proc/net/tcp").read_text().splitlines()[1:]
    return sum(1 for row in rows if row.split()[1] == local and row.split()[3] == "0A")


def _answered_by(served: Served, token: str) -> tuple[str, int]:
    """(the pid of the worker that took a fresh connection, the status it answered the
    API key list with ``token``): two requests on one kept-alive connection."""
    headers = {"Authorization": f"Bearer {token}"}
    with httpx.Client(base_url=served.url, verify=trusting(served.ca), timeout=10) as client:
        text = client.get("/metrics").text
        pid = text.split('imprint_process_info{pid="', 1)[1].split('"', 1)[0]
        return pid, client.get("/api/v1/api-keys", headers=headers).status_code


def test_a_key_revoked_through_one_worker_is_refused_by_the_other_at_once(
    served: Served,
) -> None:
    """Each worker caches the API keys it has checked; a revocation through one worker
    reaches the other at once: each request looks for changes committed through another
    process before it begins (SQLite: the cache_changes counts), so the key is not taken
    for the rest of the cache's 2 s TTL, as it was before."""
    wait_until(lambda: len(_workers_of(served.process.pid)) == 2, "two worker processes")
    workers = {str(pid) for pid in _workers_of(served.process.pid)}
    admin = {"Authorization": f"Bearer {served.token}"}
    with httpx.Client(base_url=served.url, verify=trusting(served.ca), timeout=10) as client:
        created = client.post("/api/v1/api-keys", json={"name": "short-lived"}, headers=admin)
        assert created.status_code == 201, created.text
        token = created.json()["token"]
        # Both workers check the key, and keep it (fresh connections until each did).
        accepted: set[str] = set()
        with ThreadPoolExecutor(max_workers=8) as pool:
            while accepted != workers:
                for pid, status in pool.map(lambda _: _answered_by(served, token), range(8)):
                    assert status == 200
                    accepted.add(pid)
        assert client.delete("/api/v1/api-keys/short-lived", headers=admin).status_code == 204
    revoked = time.monotonic()
    refused: set[str] = set()
    with ThreadPoolExecutor(max_workers=8) as pool:
        while refused != workers and time.monotonic() - revoked < 1.6:
            for pid, status in pool.map(lambda _: _answered_by(served, token), range(8)):
                assert status == 401, f"worker {pid} still took the key"
                refused.add(pid)
    assert refused == workers  # both were asked, well inside the 2 s TTL


def test_two_workers_register_devices_concurrently_without_an_error(served: Served) -> None:
    """Each worker's device requests share commit groups on the one SQLite file: a
    group must never fail because the other worker committed while it ran."""
    with httpx.Client(base_url=served.url, verify=trusting(served.ca), timeout=30) as admin:
        group_key = symmetric_key_group(admin, served.token, "fleet")

    def register(names: list[str]) -> list[int]:
        with httpx.Client(base_url=served.url, verify=trusting(served.ca), timeout=30) as client:
            return [
                client.post(
                    "/api/v1/provision",
                    json=request_body(derive_device_key(group_key, name), name),
                ).status_code
                for name in names
            ]

    batches = [[f"dev-{c}-{n}" for n in range(10)] for c in range(16)]
    with ThreadPoolExecutor(max_workers=16) as pool:
        statuses = [status for batch in pool.map(register, batches) for status in batch]
    assert statuses == [200] * 160, sorted(set(statuses))
    assert "database is locked" not in served.log.read_text()


def test_a_dead_worker_is_replaced_and_sigterm_stops_them_all(served: Served) -> None:
    wait_until(lambda: len(_workers_of(served.process.pid)) == 2, "two worker processes")
    first = _workers_of(served.process.pid)
    victim = min(first)
    time.sleep(5.5)  # past the start-up grace: a death now is a crash, not a failed start
    subprocess.run(["kill", "-KILL", str(victim)], check=True)
    wait_until(
        lambda: len(_workers_of(served.process.pid) - {victim}) == 2,
        "a replacement worker",
    )
    assert victim not in _workers_of(served.process.pid)
    assert healthy(served.url, served.ca)
    assert "exited (status -9); starting another" in served.log.read_text()

    workers = _workers_of(served.process.pid)
    served.process.send_signal(signal.SIGTERM)
    assert served.process.wait(timeout=30) == 0
    assert not [pid for pid in workers if Path(f"/proc/{pid}").exists()]


def test_workers_on_a_port_in_use_fail_with_a_clear_error(tmp_path: Path) -> None:
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen(1)
        port = taken.getsockname()[1]
        env = clean_env(
            tmp_path / "data",
            IMPRINT_SERVER__PORT=str(port),
            IMPRINT_SERVER__WORKERS="2",
            IMPRINT_CA__PASSPHRASE="workers-passphrase",
        )
        result = subprocess.run(
            [str(IMPRINT), "serve"], cwd=tmp_path, env=env, capture_output=True, text=True,
            timeout=90, check=False,
        )  # fmt: skip
    assert result.returncode == 1
    assert f"could not start on 127.0.0.1:{port}: Address already in use" in result.stderr
    assert "Traceback" not in result.stderr + result.stdout


# A supervisor whose worker 0 cannot start (it exits with status 3 as soon as worker 1
# runs) while worker 1 serves on; each worker leaves its pid in the directory argv[1].
_FAILING_START = """
import os, socket, sys, time
from pathlib import Path
from imprint.server import run_workers

def worker(settings, sock, primary):
    Path(sys.argv[1], str(os.getpid())).touch()
    if primary:  # fails once worker 1 is up
        deadline = time.monotonic() + 30
        while len(list(Path(sys.argv[1]).iterdir())) < 2 and time.monotonic() < deadline:
            time.sleep(0.01)
        return 3
    time.sleep(120)
    return 0

with socket.create_server(("127.0.0.1", 0)) as sock:
    sys.exit(run_workers(None, [sock, sock], worker=worker))
"""


# A supervisor of two workers on two sockets bound by bind_sockets; each worker leaves
# "<pid> <its socket's descriptor>" in the directory argv[1] and serves until stopped.
_ON_ITS_SOCKET = """
import os, sys, time
from pathlib import Path
from imprint.server import bind_sockets, run_workers

def worker(settings, sock, primary):
    Path(sys.argv[1], str(os.getpid())).write_text(str(sock.fileno()))
    time.sleep(120)
    return 0

sys.exit(run_workers(None, bind_sockets("127.0.0.1", 0, 2), worker=worker))
"""


def _written(directory: Path) -> int:
    """How many workers have written their file in ``directory`` (not just made it)."""
    return sum(1 for path in directory.iterdir() if path.read_text())


def test_a_replaced_worker_takes_over_the_dead_ones_socket(tmp_path: Path) -> None:
    python = IMPRINT.parent / "python"
    supervisor = subprocess.Popen([str(python), "-c", _ON_ITS_SOCKET, str(tmp_path)])
    try:
        wait_until(lambda: _written(tmp_path) == 2, "two workers", 30)
        first = {int(p.name): int(p.read_text()) for p in tmp_path.iterdir()}
        assert len(set(first.values())) == 2  # a socket each
        time.sleep(5.5)  # past the start-up grace: a death now is a crash
        victim = max(first)
        subprocess.run(["kill", "-KILL", str(victim)], check=True)
        wait_until(lambda: _written(tmp_path) == 3, "a replacement worker", 30)
        (replacement,) = {int(p.name) for p in tmp_path.iterdir()} - set(first)
        assert int((tmp_path / str(replacement)).read_text()) == first[victim]
    finally:
        stop(supervisor, signal.SIGTERM, 30)


def test_a_worker_that_cannot_start_stops_the_others_with_status_1(tmp_path: Path) -> None:
    python = IMPRINT.parent / "python"
    result = subprocess.run(
        [str(python), "-c", _FAILING_START, str(tmp_path)],
        capture_output=True, text=True, timeout=60, check=False,
    )  # fmt: skip
    assert result.returncode == 1, result.stderr  # worker 1 stopped, not waited for
    assert "worker 0 exited at start (status 3); stopping" in result.stderr
    pids = {int(path.name) for path in tmp_path.iterdir()}
    assert len(pids) == 2  # both started; neither was started again
    assert not pids & {p.pid for p in live_processes()}
