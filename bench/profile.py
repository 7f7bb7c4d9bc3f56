"""Profile the server under load with py-spy: where does a registration's CPU go?

    .venv/bin/python -m bench.profile x509-signed [sqlite|postgresql] [concurrency] [--gil]
    .venv/bin/python -m bench.profile --summarize bench/results/profile-....txt

Starts imprint, runs one load job of the mechanism (``x509-signed``, ``x509-mtls``,
``oob-secret``, ``symmetric-key``, or ``csr-imprint``: the admin API's CSR signing)
while ``py-spy record`` samples the server (every thread, native frames off, idle
threads left out), and prints the functions with the most samples, inclusive and on
their own. py-spy stops the process for each sample, so every stack is whole. The
collapsed stacks are kept in ``bench/results/profile-<mechanism>-<backend>.txt`` (feed
them to a flame graph tool, or grep them). With ``--gil`` only the thread holding the
GIL is sampled: a view of where the Python CPU goes, without the threads waiting for a
lock or the database.
"""

from __future__ import annotations

import collections
import dataclasses
import json
import re
import shutil
import subprocess
import sys
import tempfile
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from bench.load import new_csr
from bench.run import RESULTS, Manufacturer, Plan, Target, imprint_csr_job, run_load
from bench.servers import VENV_BIN, ImprintServer, Postgres


def _samples(collapsed: Path) -> Iterator[tuple[list[str], int]]:
    """(frames, outermost first; sample count) of each line of a collapsed-stack file."""
    for line in collapsed.read_text().splitlines():
        stack, _, count_text = line.rpartition(" ")
        yield stack.split(";"), int(count_text)


def summarize(collapsed: Path, top: int = 40) -> str:
    inclusive: collections.Counter[str] = collections.Counter()
    own: collections.Counter[str] = collections.Counter()
    total = 0
    for frames, count in _samples(collapsed):
        total += count
        for frame in set(frames):
            inclusive[frame] += count
        own[frames[-1]] += count
    out = [f"{total} samples", "", "inclusive:"]
    out += [f"{100 * n / total:5.1f}%  {f}" for f, n in inclusive.most_common(top)]
    out += ["", "own:"]
    out += [f"{100 * n / total:5.1f}%  {f}" for f, n in own.most_common(top)]
    return "\n".join(out)


#: A line of imprint's that calls into cryptography's compiled code, hashlib or hmac
#: (the call itself has no Python frame of its own in a sample).
_CRYPTO_CALL = re.compile(
    r"\.(verify|sign|verify_directly_issued_by|public_bytes|public_key|fingerprint|digest"
    r"|hexdigest|exchange|derive|encrypt|decrypt)\(|\.is_signature_valid\b|load_(pem|der)_"
    r"|hashlib\.|hmac\."
)
SOURCE = Path(__file__).resolve().parent.parent / "src"


def _crypto_lines() -> tuple[str, ...]:
    """``imprint/<module>.py:<line>)`` for each line of imprint's that calls into the
    cryptography, as py-spy names the frame of a sample taken inside that call."""
    found = []
    for path in sorted((SOURCE / "imprint").rglob("*.py")):
        name = path.relative_to(SOURCE).as_posix()
        for number, line in enumerate(path.read_text().splitlines(), 1):
            if _CRYPTO_CALL.search(line.split("#", 1)[0]):
                found.append(f"{name}:{number})")
    return tuple(found)


#: Where a sample's time goes, decided by its innermost frame that matches a rule.
_CATEGORIES = (
    ("crypto", ("cryptography/", "hashlib", *_crypto_lines())),
    ("database", ("sqlalchemy/", "imprint/store/", "sqlite3")),
    ("logging", ("logging/", "structlog/")),
    ("TLS", ("ssl.py", "sslproto")),
    # uvloop's own work (socket I/O, TLS records, its callbacks) has no Python frame: its
    # samples end in the frame that runs the loop.
    ("event loop (uvloop: I/O, TLS records)", ("Runner.run (asyncio/runners.py", "uvloop")),
    ("HTTP, framework", ("uvicorn/", "starlette/", "fastapi/", "anyio/", "asyncio/",
                         "h11/", "httptools", "pydantic/")),
    ("imprint's own code", ("imprint/",)),
)  # fmt: skip


def categories(collapsed: Path) -> str:
    """Samples per category (crypto, database, logging, TLS, the event loop, HTTP and the
    framework, imprint's own code; other: mostly samples with no Python frame). Crypto
    is judged by the source as it is now (:func:`_crypto_lines`): summarize a profile
    at the commit it was taken on."""
    found: collections.Counter[str] = collections.Counter()
    total = 0
    for frames, count in _samples(collapsed):
        total += count
        for frame in reversed(frames):
            name = next((n for n, marks in _CATEGORIES if any(m in frame for m in marks)), None)
            if name is not None:
                found[name] += count
                break
        else:
            found["other"] += count
    return "\n".join(f"{100 * n / total:5.1f}%  {name}" for name, n in found.most_common())


def main() -> None:
    if len(sys.argv) == 3 and sys.argv[1] == "--summarize":
        collapsed = Path(sys.argv[2])
        print(categories(collapsed), summarize(collapsed), sep="\n\n")
        return
    gil = "--gil" in sys.argv
    args = [a for a in sys.argv[1:] if a != "--gil"]
    kind = args[0] if args else "x509-signed"
    backend = args[1] if len(args) > 1 else "sqlite"
    concurrency = int(args[2]) if len(args) > 2 else 16
    workdir = Path(tempfile.mkdtemp(prefix="imprint-profile-"))
    postgres = None
    url = None
    if backend == "postgresql":
        postgres = Postgres()
        postgres.start()
        url = postgres.create_database(f"profile_{uuid.uuid4().hex[:8]}")
    server = ImprintServer(workdir, url, backend)
    server.start()
    target = Target(server, Manufacturer())
    RESULTS.mkdir(exist_ok=True)
    collapsed = RESULTS / f"profile-{kind}-{backend}{'-gil' if gil else ''}.txt"

    def job(count: int, seconds: float) -> dict[str, Any]:
        if kind != "csr-imprint":
            return target.job(kind, count, concurrency, seconds)
        csrs = workdir / f"csrs-{count}.json"
        csrs.write_text(json.dumps([new_csr(f"csr-{i:06d}")[1] for i in range(count)]))
        plan = dataclasses.replace(Plan.make(quick=False), count=count, max_seconds=seconds)
        return imprint_csr_job(server, plan, concurrency, csrs)

    try:
        run_load(job(200, 10), server.pid)  # warm up: caches, pools, first requests
        measured = job(4000, 30)
        spy = subprocess.Popen(
            [str(VENV_BIN / "py-spy"), "record", "--pid", str(server.pid), "--format", "raw",
             "--output", str(collapsed), "--rate", "250", *(["--gil"] if gil else [])],
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
        )  # fmt: skip
        result = run_load(measured, server.pid)
        spy.send_signal(2)
        spy.wait(timeout=60)
        print(result)
        print(categories(collapsed), summarize(collapsed), sep="\n\n")
    finally:
        target.close()
        server.stop()
        if postgres is not None:
            postgres.stop()
        shutil.rmtree(workdir, ignore_errors=True)


if __name__ == "__main__":
    main()
