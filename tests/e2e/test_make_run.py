"""`make run` on a fresh data directory: it starts, says where it is, and answers curl."""

from __future__ import annotations

import os
import re
import signal
import subprocess
import time
from pathlib import Path

from tests.conftest import free_port
from tests.e2e.conftest import clean_env, live_processes, openssl

REPO = Path(__file__).resolve().parents[2]


def _wait_gone(group: int, seconds: float = 20) -> None:
    """Wait until no process of the group is left (the server exits after make)."""
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        if not [p for p in live_processes() if p.group == group]:
            return
        time.sleep(0.1)
    os.killpg(group, signal.SIGKILL)
    raise AssertionError("the server outlived make run")


def test_make_run_starts_the_service_and_explains_how_to_use_it(tmp_path: Path) -> None:
    port = free_port()
    env = clean_env(tmp_path / "data", IMPRINT_SERVER__PORT=str(port))
    process = subprocess.Popen(
        ["make", "--no-print-directory", "run"],
        cwd=REPO,
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
        start_new_session=True,
    )
    lines: list[str] = []
    try:
        assert process.stdout is not None
        deadline = time.monotonic() + 120
        while time.monotonic() < deadline:
            line = process.stdout.readline()
            if not line:
                break
            lines.append(line)
            # One process says "Uvicorn running"; workers (one per core, the default)
            # each say "Started server process" on the socket their supervisor bound.
            if "Uvicorn running" in line or "Started server process" in line:
                break
        output = "".join(lines)
        assert f"https://127.0.0.1:{port}" in output, output
        ca_path = Path(re.search(r"CA certificate: (\S+)", output).group(1))  # type: ignore[union-attr]
        fingerprint = re.search(r"SHA-256 fingerprint: (\S+)", output).group(1)  # type: ignore[union-attr]
        assert "admin-token" in output
        # One process per core: the default, on SQLite as on PostgreSQL.
        assert f"Workers: {min(64, len(os.sched_getaffinity(0)))} process" in output
        assert "Authorization: Bearer" in output

        # The printed fingerprint is the CA certificate's, as openssl computes it.
        computed = openssl(
            "x509", "-in", str(ca_path), "-noout", "-fingerprint", "-sha256", cwd=tmp_path
        )
        assert computed.strip().split("=", 1)[1] == fingerprint

        health = subprocess.run(
            ["curl", "--silent", "--show-error", "--fail", "--cacert", str(ca_path),
             "--retry", "20", "--retry-connrefused", "--retry-delay", "1",
             f"https://127.0.0.1:{port}/healthz"],
            capture_output=True, text=True, timeout=30, check=False,
        )  # fmt: skip
        assert health.returncode == 0, health.stderr
        assert health.stdout == '{"status":"ok"}'

        token = (tmp_path / "data" / "admin-token").read_text().strip()
        assert (tmp_path / "data" / "admin-token").stat().st_mode & 0o777 == 0o600
        whoami = subprocess.run(
            ["curl", "--silent", "--fail", "--cacert", str(ca_path),
             "-H", f"Authorization: Bearer {token}", f"https://127.0.0.1:{port}/api/v1/whoami"],
            capture_output=True, text=True, timeout=30, check=False,
        )  # fmt: skip
        assert '"api_key":"admin"' in whoami.stdout

        # The printed console URL leads to its sign-in page.
        console = re.search(r"Web console: (\S+)", output).group(1)  # type: ignore[union-attr]
        sign_in = subprocess.run(
            ["curl", "--silent", "--show-error", "--location", "--cacert", str(ca_path),
             "--output", "/dev/null", "--write-out", "%{http_code} %{url_effective}", console],
            capture_output=True, text=True, timeout=30, check=False,
        )  # fmt: skip
        assert sign_in.stdout.startswith("200 "), sign_in
        assert "/console/login" in sign_in.stdout, sign_in
        assert token not in output, "the token itself must not be printed to the log"
    finally:
        # Ctrl-C reaches make *and* the server it started (one process group): a signal
        # to make alone would leave the server running without it.
        os.killpg(process.pid, signal.SIGINT)
        try:
            process.wait(timeout=20)
        except subprocess.TimeoutExpired:
            os.killpg(process.pid, signal.SIGKILL)
            process.wait()
        _wait_gone(process.pid)
        if process.stdout is not None:
            process.stdout.close()


def test_second_start_reuses_the_ca_and_creates_no_new_admin(tmp_path: Path) -> None:
    from imprint.runtime import prepare
    from imprint.settings import Settings

    settings = Settings(data_dir=tmp_path / "data")
    runtime, first = prepare(settings)
    fingerprint = runtime.root_fingerprint()
    runtime.close()
    runtime, second = prepare(settings)
    try:
        assert first.created_ca
        assert first.admin_token_file is not None
        assert not second.created_ca
        assert second.admin_token_file is None
        assert not second.server_certificate_issued
        assert runtime.root_fingerprint() == fingerprint
    finally:
        runtime.close()
