"""A warm ``imprint`` command line for the tests that run it as a program.

The end-to-end tests and the documentation pages run ``imprint`` several hundred times.
Each run of the real program spends a second or two of CPU importing the stack (Python,
SQLAlchemy, pydantic, cryptography, imprint itself) before it does anything, and on two
cores that import, not the command, became most of the suite's time.

So the tests put a small stand-in for ``imprint`` first on their ``PATH`` (and use it
where they name the program's path). It asks a warm process, which has imported the
stack once, to fork; the fork takes the caller's arguments, environment, working
directory and its standard input, output and error (the file descriptors themselves,
passed over a Unix socket), runs :func:`imprint.cli.main` exactly as the program does,
and hands its exit status back. The command's code, its output, its exit status and its
effects are the program's; only the imports are shared, and they are made before
anything reads the environment or the configuration.

What is not the command line's code does not go through the stand-in: ``imprint serve``
(the tests stop and kill servers by process id) runs the real program, and so does any
run when the warm process cannot be reached. A few tests run the real program on
purpose (``--version``, ``make run``, the workers), so the program itself stays tested.
"""

from __future__ import annotations

import array
import atexit
import io
import json
import os
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
from pathlib import Path

#: The real program, in the virtual environment the tests run in.
REAL = Path(sys.executable).parent / "imprint"

#: Run by the real program, never by the stand-in (see the module docstring).
_REAL_ONLY = ("serve",)

#: What the warm process imports before it serves: the heavy part of every command.
#: Nothing of imprint that reads the environment at import (the command line's consoles)
#: is among them; the fork imports that, with the caller's environment in place.
_PRELOAD = (
    "alembic.command",
    "cryptography.x509",
    "fastapi",
    "httpx",
    "pydantic",
    "pydantic_settings",
    "rich.console",
    "rich.table",
    "sqlalchemy",
    "typer",
    "yaml",
    "imprint.api.app",
    "imprint.app",
    "imprint.runtime",
    "imprint.settings",
)

_HEADER = 4


def _send_frame(sock: socket.socket, payload: bytes, fds: list[int] | None = None) -> None:
    data = len(payload).to_bytes(_HEADER, "big") + payload
    if fds:
        sock.sendmsg([data], [(socket.SOL_SOCKET, socket.SCM_RIGHTS, array.array("i", fds))])
    else:
        sock.sendall(data)


def _recv_exact(sock: socket.socket, size: int) -> bytes:
    chunks = bytearray()
    while len(chunks) < size:
        chunk = sock.recv(size - len(chunks))
        if not chunk:
            raise EOFError
        chunks += chunk
    return bytes(chunks)


# The warm process ---------------------------------------------------------------------


def serve(path: str) -> None:
    """Import the stack, then fork a command for every connection on ``path``."""
    import importlib

    for name in _PRELOAD:
        importlib.import_module(name)
    listener = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    listener.bind(path)
    listener.listen(64)
    signal.signal(signal.SIGCHLD, signal.SIG_IGN)  # the kernel reaps the forks
    print("ready", flush=True)
    while True:
        conn, _ = listener.accept()
        if os.fork() == 0:
            listener.close()
            signal.signal(signal.SIGCHLD, signal.SIG_DFL)
            _run_command(conn)  # never returns
        conn.close()


def _run_command(conn: socket.socket) -> None:
    # The descriptors ride on the request's first bytes: read those with recvmsg (a
    # plain recv would drop them), then the rest of the request.
    fds = array.array("i")
    first, ancillary, _, _ = conn.recvmsg(65536, socket.CMSG_SPACE(3 * fds.itemsize))
    for level, kind, data in ancillary:
        if level == socket.SOL_SOCKET and kind == socket.SCM_RIGHTS:
            fds.frombytes(data[: len(data) - len(data) % fds.itemsize])
    while len(first) < _HEADER:
        first += _recv_exact(conn, _HEADER - len(first))
    size = int.from_bytes(first[:_HEADER], "big")
    payload = first[_HEADER:]
    while len(payload) < size:
        payload += _recv_exact(conn, size - len(payload))
    request = json.loads(payload)
    for target, fd in enumerate(fds[:3]):
        os.dup2(fd, target)
        os.close(fd)
    os.environ.clear()
    os.environ.update(request["env"])
    time.tzset()
    os.chdir(request["cwd"])
    unbuffered = bool(os.environ.get("PYTHONUNBUFFERED"))
    sys.stdin = io.TextIOWrapper(io.FileIO(0, "r", closefd=False), encoding="utf-8")
    sys.stdout = _text_stream(1, unbuffered, "strict")
    sys.stderr = _text_stream(2, True, "backslashreplace")
    sys.argv = [str(REAL), *request["argv"]]
    _send_frame(conn, str(os.getpid()).encode())
    status = 1
    try:
        from imprint.cli import main

        main()
        status = 0
    except SystemExit as done:
        status = _exit_status(done.code)
    except BaseException:  # as Python itself would: the traceback on stderr, status 1
        import traceback

        traceback.print_exc()
    try:
        atexit._run_exitfuncs()
        sys.stdout.flush()
        sys.stderr.flush()
    finally:
        with _quiet():
            _send_frame(conn, str(status).encode())
        os._exit(status)


def _text_stream(fd: int, line_buffered: bool, errors: str) -> io.TextIOWrapper:
    binary = io.BufferedWriter(io.FileIO(fd, "w", closefd=False))
    return io.TextIOWrapper(
        binary,
        encoding="utf-8",
        errors=errors,
        line_buffering=line_buffered or os.isatty(fd),
        write_through=line_buffered,
    )


def _exit_status(code: object) -> int:
    if code is None:
        return 0
    if isinstance(code, int):
        return code & 0xFF
    print(code, file=sys.stderr)
    return 1


class _quiet:
    def __enter__(self) -> None:
        return None

    def __exit__(self, *exc: object) -> bool:
        return True


# The stand-in for the program -----------------------------------------------------------

_STAND_IN = """#!{python} -IS
# The tests' stand-in for imprint: see tests/warm_cli.py.
import sys
sys.path.insert(0, {here!r})
from warm_cli_client import run
run({socket!r}, {real!r}, {real_only!r})
"""

_CLIENT = '''"""The stand-in's side of tests/warm_cli.py (standard library only; no site)."""
import array, json, os, signal, socket, sys


def _exact(sock, size):
    data = b""
    while len(data) < size:
        chunk = sock.recv(size - len(data))
        if not chunk:
            raise EOFError
        data += chunk
    return data


def _frame(sock):
    return _exact(sock, int.from_bytes(_exact(sock, 4), "big"))


def run(path, real, real_only):
    argv = sys.argv[1:]
    if argv[:1] and argv[0] in real_only:
        os.execv(real, [real, *argv])
    sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    try:
        sock.connect(path)
    except OSError:
        os.execv(real, [real, *argv])
    request = json.dumps({"argv": argv, "env": dict(os.environ), "cwd": os.getcwd()}).encode()
    sock.sendmsg(
        [len(request).to_bytes(4, "big") + request],
        [(socket.SOL_SOCKET, socket.SCM_RIGHTS, array.array("i", [0, 1, 2]))],
    )
    pid = int(_frame(sock))

    def forward(signum, _frame):
        try:
            os.kill(pid, signum)
        except ProcessLookupError:
            pass

    for signum in (signal.SIGTERM, signal.SIGINT, signal.SIGHUP):
        signal.signal(signum, forward)
    try:
        status = int(_frame(sock))
    except EOFError:
        print("imprint: the command ended without an exit status", file=sys.stderr)
        status = 1
    sys.exit(status)
'''


class WarmCli:
    """The warm process of one test process, and the directory holding its stand-in."""

    def __init__(self) -> None:
        self._dir = Path(tempfile.mkdtemp(prefix="imprint-warm-"))
        self.bin = self._dir / "bin"
        self.bin.mkdir()
        sock = self._dir / "warm.sock"
        repo = Path(__file__).resolve().parent.parent
        self._process = subprocess.Popen(
            [sys.executable, "-c", f"from tests.warm_cli import serve; serve({str(sock)!r})"],
            cwd=repo,
            stdin=subprocess.DEVNULL,
            stdout=subprocess.PIPE,
            stderr=None,
            start_new_session=True,
            env={k: v for k, v in os.environ.items() if not k.startswith("IMPRINT_")},
        )
        assert self._process.stdout is not None
        with self._process.stdout as said:
            ready = said.readline()
        if ready.strip() != b"ready":
            raise RuntimeError("the warm imprint process did not start")
        (self._dir / "warm_cli_client.py").write_text(_CLIENT)
        self.program = self.bin / "imprint"
        self.program.write_text(
            _STAND_IN.format(
                python=sys.executable,
                here=str(self._dir),
                socket=str(sock),
                real=str(REAL),
                real_only=_REAL_ONLY,
            )
        )
        self.program.chmod(0o755)
        atexit.register(self.close)

    def close(self) -> None:
        try:
            if self._process.poll() is None:
                os.killpg(self._process.pid, signal.SIGTERM)
                self._process.wait(timeout=10)
        finally:
            shutil.rmtree(self._dir, ignore_errors=True)  # its stand-in, client and socket


_warm: WarmCli | None = None


def warm_imprint() -> Path:
    """The stand-in for ``imprint`` of this test process (started at the first call)."""
    global _warm
    if _warm is None:
        _warm = WarmCli()
    return _warm.program
