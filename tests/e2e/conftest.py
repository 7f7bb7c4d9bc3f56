"""Helpers for running the real ``imprint`` command line in a clean environment."""

from __future__ import annotations

import base64
import os
import ssl
import subprocess
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx
import pytest
from prometheus_client.parser import text_string_to_metric_families

from imprint.settings import Settings
from tests.warm_cli import warm_imprint

#: The real program: servers (which the tests stop and kill by process id) run as it.
IMPRINT = Path(sys.executable).parent / "imprint"

Run = Callable[..., subprocess.CompletedProcess[str]]


def clean_env(data_dir: Path, **extra: str) -> dict[str, str]:
    """The environment of a command run: no IMPRINT_ settings but these, and a
    configuration directory of its own (no login profile of the person running the
    tests)."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("IMPRINT_")}
    env.update(
        {
            "IMPRINT_DATA_DIR": str(data_dir),
            "COLUMNS": "200",
            "XDG_CONFIG_HOME": str(data_dir.parent / "config"),
            **extra,
        }
    )
    return env


def run_imprint(settings: Settings, *args: str, **env: str) -> subprocess.CompletedProcess[str]:
    """``imprint ARGS`` on the data directory and database of ``settings``, with the tests'
    CA passphrase, from the nearest existing directory above the data directory."""
    return subprocess.run(
        [str(warm_imprint()), *args],
        cwd=next(place for place in settings.data_dir.parents if place.exists()),
        env=clean_env(
            settings.data_dir,
            IMPRINT_DATABASE__URL=settings.database_url(),
            IMPRINT_CA__PASSPHRASE="test-passphrase",
            **env,
        ),
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )


def start_serve(cwd: Path, env: dict[str, str], log: Path) -> subprocess.Popen[str]:
    """``imprint serve`` in ``cwd`` with ``env``, its output in ``log`` (not waited for:
    :func:`wait_until_serving`)."""
    with log.open("w") as out:
        return subprocess.Popen(
            [str(IMPRINT), "serve"], cwd=cwd, env=env, stdout=out, stderr=subprocess.STDOUT,
            text=True,
        )  # fmt: skip


def stop(process: subprocess.Popen[Any], sig: int, timeout: float) -> None:
    """Send ``sig`` and wait up to ``timeout`` seconds, then kill."""
    if process.poll() is not None:
        return
    process.send_signal(sig)
    try:
        process.wait(timeout=timeout)
    except subprocess.TimeoutExpired:
        process.kill()
        process.wait()


@pytest.fixture
def imprint(tmp_path: Path) -> Run:
    """Run ``imprint ARGS`` with its data directory in ``tmp_path/data``."""

    def run(
        *args: str, check: bool = True, input: str | None = None, **extra_env: str
    ) -> subprocess.CompletedProcess[str]:
        result = subprocess.run(
            [str(warm_imprint()), *args],
            cwd=tmp_path,
            env=clean_env(tmp_path / "data", **extra_env),
            input=input,
            capture_output=True,
            text=True,
            timeout=60,
            check=False,
        )
        if check and result.returncode != 0:
            raise AssertionError(f"imprint {' '.join(args)} failed:\n{result.stderr}")
        return result

    return run


@dataclass(frozen=True)
class Process:
    pid: int
    parent: int
    group: int


def live_processes() -> list[Process]:
    """Every process of the machine that has not exited (zombies left out), from /proc."""
    found = []
    for stat in Path("/proc").glob("[0-9]*/stat"):
        try:
            fields = stat.read_text().rpartition(")")[2].split()
        except OSError:
            continue  # gone meanwhile
        if fields[0] != "Z":
            found.append(Process(int(stat.parent.name), int(fields[1]), int(fields[2])))
    return found


def wait_until(condition: Callable[[], bool], what: str, seconds: float = 30) -> None:
    """Poll ``condition`` every 0.1 s; fail naming ``what`` after ``seconds``."""
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        if condition():
            return
        time.sleep(0.1)
    raise AssertionError(f"timed out waiting for {what}")


def wait_until_serving(
    process: subprocess.Popen[Any], url: str, ca: Path, log: Path, seconds: float = 60
) -> None:
    """Wait until the server ``process`` answers ``url``/healthz over TLS verified against
    ``ca``; fail at once, with the end of its ``log``, if it exits first, and with it
    after ``seconds``."""

    def tail() -> str:
        return log.read_text(errors="replace")[-4000:]

    def answers() -> bool:
        if process.poll() is not None:
            raise AssertionError(f"the server exited ({process.returncode}):\n{tail()}")
        try:
            return ca.exists() and healthy(url, ca)
        except ssl.SSLError:  # root.crt is being written
            return False

    try:
        wait_until(answers, "the server to answer", seconds)
    except AssertionError as exc:
        if process.poll() is not None:
            raise
        raise AssertionError(f"{exc} within {seconds:g} s:\n{tail()}") from None


def trusting(ca: Path) -> ssl.SSLContext:
    """A client TLS context that trusts imprint's root certificate ``ca``."""
    return ssl.create_default_context(cafile=str(ca))


def healthy(url: str, ca: Path) -> bool:
    """Whether ``url``/healthz answers 200 over TLS verified against ``ca``."""
    try:
        return httpx.get(f"{url}/healthz", verify=trusting(ca), timeout=2).status_code == 200
    except httpx.HTTPError:
        return False


def frozen_heap(url: str, ca: Path) -> tuple[str, float]:
    """(pid, objects start-up froze) from ``url``/metrics, as Prometheus would read them,
    of whichever server process took this fresh connection."""
    text = httpx.get(f"{url}/metrics", verify=trusting(ca), timeout=10).text
    samples = {
        sample.name: sample
        for family in text_string_to_metric_families(text)
        for sample in family.samples
    }
    assert 'python_gc_collections_total{generation="2"}' in text
    pid = samples["imprint_process_info"].labels["pid"]
    return pid, samples["imprint_gc_frozen_objects"].value


def openssl(*args: str, cwd: Path) -> str:
    result = subprocess.run(
        ["openssl", *args], cwd=cwd, capture_output=True, text=True, timeout=60, check=False
    )
    assert result.returncode == 0, result.stderr
    return result.stdout


def symmetric_key_group(client: httpx.Client, token: str, enrollment_id: str) -> bytes:
    """Create the organization ``acme`` and a symmetric-key group enrollment of it with
    the admin token; the group key its devices derive their keys from."""
    admin = {"Authorization": f"Bearer {token}"}
    made = client.post("/api/v1/orgs", headers=admin, json={"id": "acme", "name": "Acme"})
    assert made.status_code == 201, made.text
    group = client.post(
        "/api/v1/enrollments",
        headers=admin,
        json={"mechanism": "symmetric-key", "owner": "acme", "id": enrollment_id},
    )
    assert group.status_code == 201, group.text
    return base64.b64decode(group.json()["group_key"])
