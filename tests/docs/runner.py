"""Running a page's steps in one shell against a fresh server, and comparing output.

A page runs in a directory of its own, as a reader would run it from a checkout: its
``data/`` is the server's data directory, ``imprint`` is on the ``PATH`` (the tests'
warm stand-in for it, see tests/warm_cli.py; ``.venv/bin/imprint`` works too), and
nothing of the test's environment leaks in: no ``IMPRINT_*`` variable but the server's
port, so every variable a page uses must be set on the page. The server listens on a
free port; ``127.0.0.1:8443`` and ``localhost:8443`` in a command become that port, and
the port in the output becomes 8443 again before it is compared.
"""

from __future__ import annotations

import os
import queue
import re
import shutil
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Iterator, Sequence
from contextlib import contextmanager, suppress
from dataclasses import dataclass, field
from functools import cache
from pathlib import Path

from tests.conftest import free_port
from tests.docs.pages import Command
from tests.e2e.conftest import wait_until_serving
from tests.warm_cli import warm_imprint

REPO = Path(__file__).resolve().parents[2]
VENV_BIN = Path(sys.executable).parent
DOCUMENTED_PORT = 8443
COMMAND_TIMEOUT = 120.0
_DONE = "__docs_test_done__"

# What differs from run to run. Both the shown and the actual output have these replaced
# by a tag before they are compared, so a page may show real-looking values.
_VOLATILE: tuple[tuple[re.Pattern[str], str], ...] = (
    (re.compile(r"\b[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}\b"), "<uuid>"),
    # registration keys: HQ481047-1JWORF43
    (re.compile(r"\b(?=[A-Z0-9-]*\d)[A-Z0-9]{8,32}-[A-Z0-9]{8,32}\b"), "<regkey>"),
    # 2026-11-24T12:32:27Z, 2026-12-01 12:32 UTC, 2026-11-24T12:32:27.123+00:00
    (
        re.compile(
            r"\d{4}-\d\d-\d\d(?:[T ]\d\d:\d\d(?::\d\d(?:\.\d+)?)?(?:Z|[+-]\d\d:?\d\d| UTC)?)?"
        ),
        "<time>",
    ),
    # openssl: Nov 24 12:32:27 2026 GMT; ls -l: Nov 24 13:34
    (re.compile(r"[A-Z][a-z]{2} [ \d]\d \d\d:\d\d(?::\d\d \d{4}(?: GMT)?)?"), "<time>"),
    # fingerprints and key ids: 53:E6:E6:AA:...
    (re.compile(r"\b(?:[0-9A-Fa-f]{2}:){7,}[0-9A-Fa-f]{2}\b"), "<hex>"),
    # serials, ids, hashes: 167aa37a9aeca86f6e9f2e65f1a7dc2bb, usr-1773b32e88887c10
    (re.compile(r"\b(?=[0-9a-fA-F]*\d)[0-9a-fA-F]{8,}\b"), "<hex>"),
    # keys, tokens, nonces: base64 and base64url runs with a digit and a letter
    (
        re.compile(r"(?=[A-Za-z0-9+/_-]*\d)(?=[A-Za-z0-9+/_-]*[A-Za-z])[A-Za-z0-9+/_-]{16,}={0,2}"),
        "<b64>",
    ),
    # Unix times
    (re.compile(r"\b1[6-9]\d{8}\b"), "<time>"),
)
# openssl's key-generation progress (dots and pluses, then a line of five dashes) is
# random; it is left out of the actual output, and pages do not show it.
_OPENSSL_PROGRESS = re.compile(r"[.+*]{3,}|-----")
_BOX_RUNS = re.compile(r"([━─═]|\s)\1+")
_PLACEHOLDER = re.compile(r"<[a-z][a-z0-9 _.-]*>|…")
_ANY_LINES = frozenset({"...", "…"})


def normalize(line: str) -> str:
    """A line with its volatile values tagged and its spacing reduced."""
    for pattern, tag in _VOLATILE:
        line = pattern.sub(tag, line)
    return _BOX_RUNS.sub(r"\1", line).strip()


def _line_pattern(shown: str) -> re.Pattern[str]:
    parts, last = [], 0
    for match in _PLACEHOLDER.finditer(shown):
        parts.append(re.escape(shown[last : match.start()]))
        parts.append(".*?" if match.group() == "…" else ".+?")
        last = match.end()
    parts.append(re.escape(shown[last:]))
    return re.compile("".join(parts))


def _trimmed(lines: Sequence[str]) -> list[str]:
    result = list(lines)
    while result and not result[0].strip():
        result.pop(0)
    while result and not result[-1].strip():
        result.pop()
    return result


def output_matches(shown: Sequence[str], actual: str) -> bool:
    """Whether ``actual`` is what the page shows: line by line after :func:`normalize`,
    where ``…`` or ``<name>`` stands for any text in a line and a line of ``...`` or
    ``…`` alone for any number of lines."""
    expected = [
        None if line.strip() in _ANY_LINES else _line_pattern(normalize(line))
        for line in _trimmed(shown)
    ]
    got = [
        normalize(line)
        for line in _trimmed(actual.splitlines())
        if not _OPENSSL_PROGRESS.fullmatch(line.strip())
    ]

    @cache
    def match(i: int, j: int) -> bool:
        if i == len(expected):
            return j == len(got)
        pattern = expected[i]
        if pattern is None:
            return any(match(i + 1, k) for k in range(j, len(got) + 1))
        return j < len(got) and pattern.fullmatch(got[j]) is not None and match(i + 1, j + 1)

    return match(0, 0)


def to_port(text: str, port: int) -> str:
    """The documented address rewritten to the test server's."""
    for host in ("127.0.0.1", "localhost"):
        text = text.replace(f"{host}:{DOCUMENTED_PORT}", f"{host}:{port}")
    return text


def from_port(text: str, port: int, workdir: Path | None = None) -> str:
    """The test server's address rewritten to the documented one, and paths in the
    page's directory written relative to it, as the page shows them."""
    if workdir is not None:
        text = text.replace(f"{workdir}/", "")
    # 127.0.0.1:PORT, port=PORT, "port: PORT" (a random five-digit port stands alone)
    return re.sub(rf"\b{port}\b", str(DOCUMENTED_PORT), text)


def page_environment(workdir: Path, port: int) -> dict[str, str]:
    """A reader's shell: no IMPRINT_* of the test's, imprint on the PATH."""
    keep = ("PATH", "LANG", "LC_ALL", "TZ", "TMPDIR", "USER", "LOGNAME", "SHELL", "CI")
    env = {key: os.environ[key] for key in keep if key in os.environ}
    env.update(
        # imprint is the tests' warm stand-in (tests/warm_cli.py); .venv/bin/imprint and
        # the server are the real program.
        PATH=os.pathsep.join(
            [str(warm_imprint().parent), str(VENV_BIN), os.environ.get("PATH", "/usr/bin:/bin")]
        ),
        HOME=str(workdir / "home"),
        COLUMNS="200",
        NO_COLOR="1",
        TERM="dumb",
        # Python writes at once, as to a terminal, so stdout and stderr interleave as a
        # reader sees them.
        PYTHONUNBUFFERED="1",
        IMPRINT_SERVER__PORT=str(port),
    )
    return env


@dataclass
class Server:
    """``imprint serve`` of one page, in its working directory."""

    workdir: Path
    port: int
    env: dict[str, str]
    process: subprocess.Popen[bytes] | None = None

    def start(self) -> None:
        with (self.workdir / ".docs-test" / "server.log").open("ab") as log:
            self.process = subprocess.Popen(
                [str(VENV_BIN / "imprint"), "serve"],
                cwd=self.workdir,
                env=self.env,
                stdout=log,
                stderr=subprocess.STDOUT,
                start_new_session=True,
            )
        wait_until_serving(
            self.process,
            f"https://127.0.0.1:{self.port}",
            self.workdir / "data" / "ca" / "root.crt",
            self.workdir / ".docs-test" / "server.log",
        )

    def stop(self) -> None:
        if self.process is None or self.process.poll() is not None:
            return
        os.killpg(self.process.pid, signal.SIGTERM)
        try:
            self.process.wait(timeout=20)
        except subprocess.TimeoutExpired:
            os.killpg(self.process.pid, signal.SIGKILL)
            self.process.wait()

    def log(self) -> str:
        return (self.workdir / ".docs-test" / "server.log").read_text(errors="replace")[-4000:]


@dataclass
class Result:
    status: int
    output: str
    seconds: float


@dataclass
class Shell:
    """One bash for the whole page, so that variables, functions and ``cd`` carry over
    from block to block. Each step's output (stdout and stderr, as a terminal shows
    them) goes to a file; stdin is /dev/null."""

    workdir: Path
    env: dict[str, str]
    #: Text of the page's commands to replace before they run (a port the test chose).
    replacements: dict[str, str] = field(default_factory=dict)
    process: subprocess.Popen[str] = field(init=False)
    lines: queue.Queue[str | None] = field(init=False, default_factory=queue.Queue)
    reader: threading.Thread = field(init=False)

    def __post_init__(self) -> None:
        self.process = subprocess.Popen(
            ["bash", "--noprofile", "--norc"],
            cwd=self.workdir,
            env=self.env,
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
            text=True,
            start_new_session=True,
        )
        self.reader = threading.Thread(target=self._read, daemon=True)
        self.reader.start()

    def _read(self) -> None:
        assert self.process.stdout is not None
        for line in self.process.stdout:
            self.lines.put(line)
        self.lines.put(None)

    def run(self, script: str, errexit: bool) -> Result:
        """Run ``script`` as if typed; with ``errexit`` the first failing command ends it."""
        control = self.workdir / ".docs-test"
        (control / "step.sh").write_text(script + "\n")
        output = control / "output"
        wrapped = f"source {control / 'step.sh'} > {output} 2>&1 < /dev/null"
        # `set -e` for a script: its first failing command ends the shell, and the page.
        line = f'set {"-" if errexit else "+"}e; {wrapped}; echo "{_DONE} $?"; set +e\n'
        assert self.process.stdin is not None
        started = time.monotonic()
        self.process.stdin.write(line)
        self.process.stdin.flush()
        deadline = started + COMMAND_TIMEOUT
        stray: list[str] = []
        while True:
            try:
                text = self.lines.get(timeout=max(0.1, deadline - time.monotonic()))
            except queue.Empty:
                self.close()
                raise AssertionError(
                    f"timed out after {COMMAND_TIMEOUT:.0f} s:\n{script}\n"
                    + output.read_text(errors="replace")
                ) from None
            if text is None:
                status = self.process.wait()
                break
            if text.startswith(_DONE):
                status = int(text.split()[1])
                break
            stray.append(text)
        seconds = time.monotonic() - started
        return Result(status, output.read_text(errors="replace") + "".join(stray), seconds)

    def close(self) -> None:
        if self.process.poll() is None:
            with suppress(ProcessLookupError):
                os.killpg(self.process.pid, signal.SIGKILL)
            self.process.wait()
        self.reader.join(timeout=10)
        for pipe in (self.process.stdin, self.process.stdout):
            if pipe is not None:
                pipe.close()


@contextmanager
def page_session(
    workdir: Path, server_config: Sequence[str], replacements: dict[str, str] | None = None
) -> Iterator[tuple[Shell, int]]:
    """A fresh server and a shell in ``workdir``, both ended afterwards."""
    (workdir / ".docs-test").mkdir(parents=True)
    (workdir / "home").mkdir()
    # curl draws its progress meter only when its output is not a terminal; the steps
    # write to a file, where a reader's terminal would show no meter.
    (workdir / "home" / ".curlrc").write_text("no-progress-meter\n")
    (workdir / ".venv").symlink_to(VENV_BIN.parent)
    if server_config:
        (workdir / "imprint.yaml").write_text("\n".join(server_config) + "\n")
    port = free_port()
    env = page_environment(workdir, port)
    server = Server(workdir, port, env)
    shell: Shell | None = None
    try:
        server.start()
        shell = Shell(workdir, env, dict(replacements or {}))
        yield shell, port
    finally:
        if shell is not None:
            shell.close()
        server.stop()


def check_step(shell: Shell, port: int, step: Command, where: str) -> Result:
    """Run one step; fail with the page's place, the command and what it printed."""
    command = to_port(step.text, port)
    for written, actual in shell.replacements.items():
        command = command.replace(written, actual)
    result = shell.run(command, errexit=step.script and not step.exit_status)
    output = from_port(result.output, port, shell.workdir)
    if result.status != step.exit_status:
        raise AssertionError(
            f"{where}: exit status {result.status}, the page expects {step.exit_status}\n"
            f"$ {step.text}\n{output}"
        )
    if step.expected is not None and not output_matches(step.expected, output):
        shown = "\n".join(step.expected)
        raise AssertionError(
            f"{where}: the output is not what the page shows\n$ {step.text}\n"
            f"--- shown\n{shown}\n--- actual\n{output}"
        )
    return Result(result.status, output, result.seconds)


def clean(workdir: Path) -> None:
    shutil.rmtree(workdir, ignore_errors=True)
