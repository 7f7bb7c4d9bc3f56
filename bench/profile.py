"""Profile the server under load with py-spy: where does a registration's CPU go?

    .venv/bin/python -m bench.profile x509-signed [sqlite|postgresql] [concurrency] [--gil]
    .venv/bin/python -m bench.profile --summarize bench/results/profile-....txt

Starts imprint, runs one load job of the mechanism while ``py-spy record`` samples the
server (every thread, native frames off, idle threads left out), and prints the
functions with the most samples, inclusive and on their own. The collapsed stacks are
kept in ``bench/results/profile-<mechanism>-<backend>.txt`` (feed them to a flame graph
tool, or grep them). With ``--gil`` only the thread holding the GIL is sampled: a view
of where the Python CPU goes, without the threads waiting for a lock or the database.
"""

from __future__ import annotations

import collections
import shutil
import subprocess
import sys
import tempfile
import uuid
from collections.abc import Iterator
from pathlib import Path

from bench.run import RESULTS, Manufacturer, Target, run_load
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


#: Where a sample's time goes, decided by its innermost frame that matches a rule.
_CATEGORIES = (
    ("crypto", ("cryptography/", "x509.py:380)", "jws.py:196)", "csr.py:43)", "hashlib")),
    ("database", ("sqlalchemy/", "imprint/store/", "sqlite3")),
    ("logging", ("logging/", "structlog/")),
    ("HTTP, TLS, framework", ("uvicorn/", "starlette/", "fastapi/", "anyio/", "asyncio/",
                              "ssl.py", "h11/", "httptools", "pydantic/")),
    ("imprint's own code", ("imprint/",)),
)  # fmt: skip


def categories(collapsed: Path) -> str:
    """Samples per category (crypto, database, logging, framework, imprint, other)."""
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
    try:
        target.job(kind, 200, concurrency, 10)  # warm up: caches, pools, first requests
        run_load(target.job(kind, 200, concurrency, 10), server.pid)
        spy = subprocess.Popen(
            [str(VENV_BIN / "py-spy"), "record", "--pid", str(server.pid), "--format", "raw",
             "--output", str(collapsed), "--rate", "250", "--nonblocking",
             *(["--gil"] if gil else [])],
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
        )  # fmt: skip
        result = run_load(target.job(kind, 1500, concurrency, 15), server.pid)
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
