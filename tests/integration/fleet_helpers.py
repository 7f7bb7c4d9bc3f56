"""What tests of the fleet's lists and of the command line against a real server share:
devices saved straight into the store, and ``imprint`` run as a person elsewhere."""

from __future__ import annotations

import json
import os
import subprocess
import uuid
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from imprint.provisioning.devices import Device, DeviceStatus
from tests.integration.conftest import Service
from tests.warm_cli import warm_imprint


def pending_device(
    service: Service, owner: str, device_id: str, enrollment_id: str = "factory"
) -> Device:
    """A device waiting for approval, saved as provisioning would have left it."""
    now = datetime.now(UTC)
    device = Device(
        id=str(uuid.uuid4()),
        owner=owner,
        device_id=device_id,
        enrollment_id=enrollment_id,
        mechanism="oob-secret",
        status=DeviceStatus.PENDING,
        created_at=now,
        updated_at=now,
    )
    service.runtime.devices.save(device)
    return device


class Cli:
    """``imprint`` run as a person elsewhere would: an empty directory, no IMPRINT_
    settings, a configuration directory of her own."""

    def __init__(self, home: Path) -> None:
        self.home = home
        self.cwd = home / "elsewhere"
        self.cwd.mkdir(parents=True)
        self.env = {k: v for k, v in os.environ.items() if not k.startswith("IMPRINT_")}
        self.env.update({"HOME": str(home), "XDG_CONFIG_HOME": str(home / "config")})

    def __call__(
        self, *args: str, input: str | None = None, ok: bool = True
    ) -> subprocess.CompletedProcess[str]:
        result = subprocess.run(
            [str(warm_imprint()), *args],
            cwd=self.cwd,
            env=self.env,
            input=input or "",
            capture_output=True,
            text=True,
            timeout=120,
            check=False,
        )
        if ok:
            assert result.returncode == 0, f"imprint {' '.join(args)}:\n{result.stderr}"
        return result

    def json(self, *args: str, input: str | None = None) -> Any:
        return json.loads(self(*args, "--output", "json", input=input).stdout)

    def start(self, *args: str) -> subprocess.Popen[str]:
        """``imprint`` started in the background (its output read as it comes)."""
        return subprocess.Popen(
            [str(warm_imprint()), *args],
            cwd=self.cwd,
            env=self.env,
            stdin=subprocess.DEVNULL,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
        )
