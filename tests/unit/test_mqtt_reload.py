"""The broker's reload: SIGHUP only once the process handles it. Mosquitto writes its pid
file before it installs its signal handlers, and a SIGHUP in between ends the broker."""

from __future__ import annotations

import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path
from typing import cast

import pytest

from imprint.mqtt.broker import BrokerFiles, BrokerSync
from imprint.pki.authority import CertificateAuthority
from imprint.settings import MqttSettings

pytestmark = pytest.mark.skipif(
    not Path("/proc/self/status").is_file(), reason="reads the signal mask from /proc"
)

# Writes its pid file at once, handles SIGHUP only after a while, and notes each SIGHUP.
_LATE_HANDLER = """
import os, signal, sys, time
directory = sys.argv[1]
with open(os.path.join(directory, "broker.pid"), "w") as pid_file:
    pid_file.write(str(os.getpid()))
time.sleep(float(sys.argv[2]))
def reloaded(signum, frame):
    with open(os.path.join(directory, "reloads"), "a") as noted:
        noted.write("hup\\n")
signal.signal(signal.SIGHUP, reloaded)
time.sleep(30)
"""


@pytest.fixture
def processes() -> Iterator[list[subprocess.Popen[bytes]]]:
    started: list[subprocess.Popen[bytes]] = []
    yield started
    for process in started:
        process.kill()
        process.wait(timeout=10)


def _sync(directory: Path) -> BrokerSync:
    settings = MqttSettings(pid_file=directory / "broker.pid")
    # reload() reads the pid file and signals; it needs no authority.
    return BrokerSync(settings, BrokerFiles(directory), cast(CertificateAuthority, None))


def _named_by_the_pid_file(
    directory: Path, processes: list[subprocess.Popen[bytes]]
) -> subprocess.Popen[bytes]:
    """A process that never catches SIGHUP (``sleep``), its pid in the pid file."""
    child = subprocess.Popen(["sleep", "30"])
    processes.append(child)
    (directory / "broker.pid").write_text(f"{child.pid}\n")
    return child


def _pid_file_written(directory: Path) -> None:
    deadline = time.monotonic() + 10
    while not (directory / "broker.pid").is_file() or not (directory / "broker.pid").read_text():
        assert time.monotonic() < deadline, "the child did not write its pid file"
        time.sleep(0.01)


def test_a_broker_still_starting_is_reloaded_once_it_handles_sighup(
    tmp_path: Path, processes: list[subprocess.Popen[bytes]]
) -> None:
    child = subprocess.Popen([sys.executable, "-c", _LATE_HANDLER, str(tmp_path), "0.4"])
    processes.append(child)
    _pid_file_written(tmp_path)
    assert _sync(tmp_path).reload()
    deadline = time.monotonic() + 5
    while not (tmp_path / "reloads").is_file():
        assert child.poll() is None, f"the SIGHUP ended the starting broker ({child.returncode})"
        assert time.monotonic() < deadline, "the broker never got the SIGHUP"
        time.sleep(0.01)
    assert (tmp_path / "reloads").read_text() == "hup\n"
    assert child.poll() is None


def test_a_process_that_never_handles_sighup_is_not_signalled(
    tmp_path: Path, processes: list[subprocess.Popen[bytes]], monkeypatch: pytest.MonkeyPatch
) -> None:
    # A pid file naming a process that is no broker (its pid reused): it must live on.
    monkeypatch.setattr("imprint.mqtt.broker.SIGHUP_WAIT_SECONDS", 0.3)
    child = _named_by_the_pid_file(tmp_path, processes)
    assert not _sync(tmp_path).reload()
    time.sleep(0.1)
    assert child.poll() is None


def test_a_pid_file_naming_no_process_reloads_nothing(tmp_path: Path) -> None:
    child = subprocess.Popen(["true"])
    child.wait(timeout=10)
    (tmp_path / "broker.pid").write_text(f"{child.pid}\n")
    assert not _sync(tmp_path).reload()


def test_an_older_process_that_does_not_catch_sighup_is_passed_over_at_once(
    tmp_path: Path, processes: list[subprocess.Popen[bytes]], monkeypatch: pytest.MonkeyPatch
) -> None:
    # A stale pid file after a reboot names some long-running program: no wait per sync.
    monkeypatch.setattr("imprint.mqtt.broker.SIGHUP_WAIT_SECONDS", 0.5)
    child = _named_by_the_pid_file(tmp_path, processes)
    time.sleep(0.7)  # older than the wait
    started = time.monotonic()
    assert not _sync(tmp_path).reload()
    assert time.monotonic() - started < 0.3
    assert child.poll() is None
