"""The device SDK runs on a device: it must not pull in imprint's server."""

from __future__ import annotations

import json
import subprocess
import sys

import pytest

SERVER_PACKAGES = (
    "imprint.api",
    "imprint.attestation",
    "imprint.cli",
    "imprint.pki",
    "imprint.provisioning",
    "imprint.runtime",
    "imprint.settings",
    "imprint.store",
)
ALLOWED_THIRD_PARTY = {"cryptography", "httpx"}
#: Imported inside the function that needs it, never when the SDK is imported.
LAZY_THIRD_PARTY = {"zeroconf"}


def test_importing_the_sdk_loads_no_server_module() -> None:
    code = "import json, sys, imprint.device; print(json.dumps(sorted(sys.modules)))"
    result = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, timeout=60, check=True
    )
    loaded = json.loads(result.stdout)
    ours = [m for m in loaded if m == "imprint" or m.startswith("imprint.")]
    assert "imprint.device.store" in ours
    leaked = [m for m in ours if m.startswith(SERVER_PACKAGES)]
    assert leaked == []
    for name in (
        "fastapi",
        "sqlalchemy",
        "pydantic",
        "starlette",
        "uvicorn",
        "typer",
        "yaml",
        *LAZY_THIRD_PARTY,
    ):
        assert name not in loaded, f"imprint.device imported {name}"


@pytest.mark.slow
def test_the_sdk_source_imports_only_itself_cryptography_and_httpx() -> None:
    import ast
    from pathlib import Path

    import imprint.device

    package = Path(imprint.device.__file__).parent
    for source in package.glob("*.py"):
        tree = ast.parse(source.read_text())
        for node in ast.walk(tree):
            names: list[str] = []
            if isinstance(node, ast.Import):
                names = [alias.name for alias in node.names]
            elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
                names = [node.module]
            for name in names:
                top = name.split(".")[0]
                if top == "imprint":
                    assert name == "imprint" or name.startswith("imprint.device"), (
                        f"{source.name} imports {name}"
                    )
                else:
                    allowed = ALLOWED_THIRD_PARTY | LAZY_THIRD_PARTY
                    assert top in allowed or top in sys.stdlib_module_names, (
                        f"{source.name} imports {name}"
                    )
