"""The tests' warm stand-in for ``imprint`` (tests/warm_cli.py) answers as the real
program does: the same output on the same streams, the same exit status, standard input
read, the caller's environment and working directory in force."""

from __future__ import annotations

import subprocess
from pathlib import Path

import pytest

from tests.e2e.conftest import IMPRINT, clean_env
from tests.warm_cli import warm_imprint


def _both(tmp_path: Path, *args: str, stdin: str = "") -> list[subprocess.CompletedProcess[str]]:
    env = clean_env(tmp_path / "data", IMPRINT_CA__PASSPHRASE="correct horse battery staple")
    return [
        subprocess.run(
            [str(program), *args],
            cwd=tmp_path,
            env=env,
            input=stdin,
            capture_output=True,
            text=True,
            timeout=120,
            check=False,
        )
        for program in (IMPRINT, warm_imprint())
    ]


@pytest.mark.parametrize(
    "args",
    [
        ("--version",),
        ("org", "no-such-command"),  # a usage error: status 2, on stderr
        ("config", "show"),  # reads IMPRINT_DATA_DIR of the caller's environment
        ("devices", "show", "dev-1"),  # an error of imprint's own, status 1
    ],
    ids=["version", "usage-error", "environment", "error"],
)
def test_the_stand_in_answers_as_the_program(tmp_path: Path, args: tuple[str, ...]) -> None:
    real, warm = _both(tmp_path, *args)
    assert (warm.returncode, warm.stdout, warm.stderr) == (
        real.returncode,
        real.stdout,
        real.stderr,
    )


def test_the_stand_in_reads_standard_input_and_works_in_the_callers_directory(
    tmp_path: Path,
) -> None:
    (tmp_path / "secrets.csv").write_text("device_id,secret\n")
    real, warm = _both(tmp_path, "oob", "import", "nowhere", "secrets.csv")
    assert (warm.returncode, warm.stdout, warm.stderr) == (
        real.returncode,
        real.stdout,
        real.stderr,
    )
    assert warm.returncode != 0
    _, warm = _both(tmp_path, "user", "create", "x@example.com", stdin="a password\n")
    assert warm.returncode != 0
    assert "Traceback" not in warm.stderr
