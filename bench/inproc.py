"""In-process microbenchmarks: CPU µs per call, many repetitions, no network.

On a shared two-core machine a load test's absolute numbers move with whatever else
runs; the CPU one call costs in this process moves far less. These decide changes:

* ``middleware``: the request log and metrics middleware around an ASGI no-op, with
  logging configured as ``imprint serve`` does (lines to a file, as a service's stderr);
* ``noop``: the ASGI no-op alone (what ``middleware`` is compared with);
* ``x509-signed``, ``oob-secret``, ``symmetric-key``, ``csr-sign``: the whole
  application (routing, dependencies, validation, the use case, the database) for one
  registration by that mechanism (the OOB secrets registered in bulk first), or one
  admin CSR signing, called as an ASGI application without HTTP or TLS;
* ``registration-key``: one registration with the enrollment's registration key, of a
  device the enrollment gives a ThingSpeak channel (made at its registration, with a
  write and a read key), as midPoint's devices are;
* ``thingspeak-update``: one entry written through ThingSpeak's ``POST /update`` (a
  form with the channel's write key), each to a channel of its own, as a fleet's
  devices write theirs (the devices and their channels registered first, untimed
  unless ``registration-key`` is asked for too);
  SQLite in a temporary directory, or PostgreSQL at ``--database URL``. On SQLite a
  second line says how long a call's commit group held the writer lock (its write
  phase, which a second worker's writes wait for).

``python -m bench.inproc middleware x509-signed csr-sign [--count N] [--database URL]
[--concurrency N]`` prints one line per part: µs of process CPU per call (user + system,
every thread), the calls a second in wall time, and the 1-minute load average before
and after. ``--concurrency 16`` keeps 16 calls in flight on the event loop, as a server
under load does. The event loop is uvloop's, as in ``imprint serve``.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import logging
import os
import shutil
import sys
import tempfile
import time
from collections.abc import Awaitable, Callable, MutableMapping
from functools import partial
from pathlib import Path
from typing import Any

import uvloop

Message = MutableMapping[str, Any]
App = Callable[[Message, Callable[[], Awaitable[Message]], Callable[[Message], Awaitable[None]]],
               Awaitable[None]]  # fmt: skip


async def call(app: App, method: str, path: str, body: bytes = b"",
               headers: dict[str, str] | None = None,
               content_type: str = "application/json") -> tuple[int, bytes]:  # fmt: skip
    """One request through ``app`` as uvicorn would make it."""
    raw = [(k.lower().encode(), v.encode()) for k, v in (headers or {}).items()]
    raw += [(b"content-type", content_type.encode()),
            (b"content-length", str(len(body)).encode()), (b"host", b"127.0.0.1")]  # fmt: skip
    scope: Message = {
        "type": "http", "asgi": {"version": "3.0", "spec_version": "2.3"}, "http_version": "1.1",
        "method": method, "scheme": "https", "path": path, "raw_path": path.encode(),
        "query_string": b"", "root_path": "", "headers": raw, "client": ("127.0.0.1", 50000),
        "server": ("127.0.0.1", 8443), "state": {}, "extensions": {},
    }  # fmt: skip
    sent = False
    status = 0
    chunks: list[bytes] = []

    async def receive() -> Message:
        nonlocal sent
        if sent:
            await asyncio.sleep(3600)
        sent = True
        return {"type": "http.request", "body": body, "more_body": False}

    async def send(message: Message) -> None:
        nonlocal status
        if message["type"] == "http.response.start":
            status = message["status"]
        elif message["type"] == "http.response.body":
            chunks.append(message.get("body", b""))

    await app(scope, receive, send)
    return status, b"".join(chunks)


def _cpu() -> float:
    return time.process_time()


#: Calls in flight at once (``--concurrency``): 1 measures a call's own cost; more, what
#: concurrent requests cost each other (thread hops, the GIL, waiting for a commit).
CONCURRENCY = 1


class _Held:
    """The commit groups' time holding the writer lock (SQLite), passed on to the
    runtime's metrics as well: how much of a call's work ran in a group's write phase,
    which is what a second worker waits for."""

    def __init__(self, metrics: Any) -> None:
        self.metrics = metrics
        self.seconds = 0.0
        self.members = 0

    def group_committed(self, members: int, lock_wait: float | None, held: float) -> None:
        self.metrics.group_committed(members, lock_wait, held)
        self.seconds += held
        self.members += members


#: The runtime's :class:`_Held`, once :func:`bench_app` has made it.
HELD: _Held | None = None


async def _timed(name: str, count: int, one: Callable[[int], Awaitable[None]]) -> float:
    for index in range(min(50, count // 10)):  # warm caches and code paths
        await one(-1 - index)
    load = os.getloadavg()[0]
    if HELD is not None:
        HELD.seconds, HELD.members = 0.0, 0
    started, wall = _cpu(), time.perf_counter()
    indexes = iter(range(count))

    async def caller() -> None:
        for index in indexes:
            await one(index)

    await asyncio.gather(*(caller() for _ in range(CONCURRENCY)))
    spent, wall = _cpu() - started, time.perf_counter() - wall
    per_call = spent * 1e6 / count
    print(f"{name:<14} {per_call:9.1f} µs CPU per call  ({count} calls, {CONCURRENCY} at a time, "
          f"{count / wall:.0f}/s wall, load {load:.2f} -> {os.getloadavg()[0]:.2f})",
          flush=True)  # fmt: skip
    if HELD is not None and HELD.members:
        held = HELD.seconds * 1e6 / count
        print(f"{'':<14} {held:9.1f} µs a call holding the writer lock "
              f"({held / per_call:.0%} of its CPU; {HELD.members / count:.2f} writes "
              "committed a call)", flush=True)  # fmt: skip
    return per_call


async def noop(scope: Message, receive: Any, send: Any) -> None:
    await send({"type": "http.response.start", "status": 200, "headers": []})
    await send({"type": "http.response.body", "body": b"{}"})


def _logging_as_served(directory: Path) -> None:
    from imprint.logs import configure_logging

    stderr = sys.stderr
    sys.stderr = (directory / "stderr.log").open("w")  # what a service's journal reads
    try:
        configure_logging("info")
    finally:
        sys.stderr = stderr


async def bench_middleware(count: int, directory: Path) -> None:
    from imprint.api.middleware import RequestLogMiddleware
    from imprint.metrics import Metrics

    _logging_as_served(directory)
    wrapped = RequestLogMiddleware(noop, metrics=Metrics())

    async def bare(_: int) -> None:
        await call(noop, "POST", "/api/v1/provision")

    async def logged(_: int) -> None:
        await call(wrapped, "POST", "/api/v1/provision")

    base = await _timed("noop", count, bare)
    total = await _timed("middleware", count, logged)
    print(f"{'log + metrics':<14} {total - base:9.1f} µs CPU per request", flush=True)


async def _provision(app: App, requests: list[Any], count: int, index: int) -> None:
    """One prepared registration request (negative indexes: the warm-up's, after the rest)."""
    request = requests[index if index >= 0 else count - 1 - index]
    status, answer = await call(app, "POST", request.path, request.body)
    if status != 200:
        raise RuntimeError(f"registration: {status} {answer[:300]!r}")


async def bench_app(parts: list[str], count: int, directory: Path, database: str | None) -> None:
    from cryptography.hazmat.primitives import serialization
    from cryptography.hazmat.primitives.asymmetric import ec

    from bench.floor import ca_certificate
    from bench.load import build_requests, new_csr, oob_secret_for
    from imprint.api.app import create_app
    from imprint.runtime import prepare
    from imprint.server import settle_heap
    from imprint.settings import Settings
    from imprint.store.db import Checkpointer, observe_groups

    _logging_as_served(directory)
    settings = Settings(
        data_dir=directory / "data",
        database={"url": database or f"sqlite:///{directory}/imprint.db"},
        ca={"passphrase": "bench-passphrase"},
        server={"tls": False},
    )
    runtime, first = prepare(settings)
    global HELD
    HELD = _Held(runtime.metrics)
    observe_groups(runtime.engine, HELD)
    token = (first.admin_token_file or settings.data_dir / "admin-token").read_text().strip()
    app = create_app(runtime)
    checkpointer = Checkpointer.start(runtime.engine)  # as `imprint serve` does (SQLite)
    settle_heap()  # as `imprint serve` does before it serves
    admin = {"Authorization": f"Bearer {token}"}

    async def post(path: str, body: object, headers: dict[str, str] | None = None) -> bytes:
        status, answer = await call(app, "POST", path, json.dumps(body).encode(), headers)
        if status not in (200, 201, 409):
            raise RuntimeError(f"{path}: {status} {answer[:300]!r}")
        return answer

    await post("/api/v1/orgs", {"id": "bench", "name": "Benchmarks"}, admin)
    root_key = ec.generate_private_key(ec.SECP256R1())
    root = ca_certificate("Bench Root CA", root_key, None, root_key, "Bench Devices")
    line_key = ec.generate_private_key(ec.SECP256R1())
    line = ca_certificate("Bench Line A", line_key, root, root_key, "Bench Devices")
    pem = serialization.Encoding.PEM
    await post("/api/v1/enrollments", {
        "owner": "bench", "id": "bench-x509", "mechanism": "x509",
        "x509": {"certificate_chain": [line.public_bytes(pem).decode(),
                                       root.public_bytes(pem).decode()]},
    }, admin)  # fmt: skip
    warm = min(50, count // 10)
    try:
        if "x509-signed" in parts:
            requests = build_requests({
                "kind": "x509-signed", "count": count + warm, "prefix": f"in-{time.time_ns()}",
                "base_url": "http://127.0.0.1:8443",
                "line_cert": line.public_bytes(pem).decode(),
                "line_key": line_key.private_bytes(
                    pem, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()
                ).decode(),
            })  # fmt: skip

            await _timed("x509-signed", count, partial(_provision, app, requests, count))
        for kind in ("oob-secret", "symmetric-key"):
            if kind not in parts:
                continue
            prefix = f"in-{kind}-{time.time_ns()}"
            job: dict[str, Any] = {"kind": kind, "count": count + warm, "prefix": prefix,
                                   "base_url": "http://127.0.0.1:8443"}  # fmt: skip
            if kind == "oob-secret":
                enrollment = {"owner": "bench", "id": "bench-oob", "mechanism": "oob-secret"}
                await post("/api/v1/enrollments", enrollment, admin)
                job["oob_master"] = "bench-oob-master"
                rows = [{"device_id": f"{prefix}-{i:07d}",
                         "secret": oob_secret_for(job["oob_master"], f"{prefix}-{i:07d}")}
                        for i in range(count + warm)]  # fmt: skip
                await post("/api/v1/enrollments/bench-oob/oob-secrets:bulk", rows, admin)
            else:
                enrollment = {"owner": "bench", "id": "bench-sym", "mechanism": "symmetric-key"}
                made = await post("/api/v1/enrollments", enrollment, admin)
                job["group_key"] = json.loads(made)["group_key"]
            by_kind = build_requests(job)
            await _timed(kind, count, partial(_provision, app, by_kind, count))
        if "csr-sign" in parts:
            csrs = [new_csr(f"csr-{i}")[1] for i in range(count + warm)]

            async def sign(index: int) -> None:
                pem_csr = csrs[index if index >= 0 else count - 1 - index]
                body = json.dumps({"csr": pem_csr, "profile": "device"}).encode()
                status, answer = await call(app, "POST", "/api/v1/certificates", body, admin)
                if status != 201:
                    raise RuntimeError(f"csr-sign: {status} {answer[:300]!r}")

            await _timed("csr-sign", count, sign)
        if "registration-key" in parts or "thingspeak-update" in parts:
            keys = await _channel_write_keys(app, post, admin, count, warm,
                                             timed="registration-key" in parts)  # fmt: skip
        if "thingspeak-update" in parts:

            async def update(index: int) -> None:
                key = keys[index if index >= 0 else count - 1 - index]
                form = f"api_key={key}&field1=21.5&field2=40".encode()
                status, answer = await call(app, "POST", "/update", form, content_type=_FORM)
                if status != 200 or not answer.isdigit() or answer == b"0":
                    raise RuntimeError(f"thingspeak-update: {status} {answer[:300]!r}")

            await _timed("ts-update", count, update)
    finally:
        if checkpointer is not None:
            checkpointer.stop()
        runtime.close()


_FORM = "application/x-www-form-urlencoded"


async def _channel_write_keys(app: App, post: Callable[..., Awaitable[bytes]],
                              admin: dict[str, str], count: int, warm: int,
                              timed: bool) -> list[str]:  # fmt: skip
    """``count`` (+ ``warm``) devices registered with a registration key, each given a
    channel (``timed``: as the ``registration-key`` part): their channels' write keys, in
    the order :func:`_timed` takes its indexes (the warm-up's last)."""
    from bench.load import new_csr

    enrollment = {"owner": "bench", "id": "bench-channels", "mechanism": "registration-key",
                  "channel": {"fields": {"field1": "temperature", "field2": "humidity"},
                              "delivery": "plain"}}  # fmt: skip
    await post("/api/v1/enrollments", enrollment, admin)
    issued = await post("/api/v1/enrollments/bench-channels/registration-key", {}, admin)
    half = {"X-Imprint-Key-Half": json.loads(issued)["key"].split("-")[0]}
    bodies = [json.dumps({"mechanism": "registration-key", "csr": new_csr(f"ts-{i}")[1],
                          "registration_id": f"ts-{i:07d}"}).encode()
              for i in range(count + warm)]  # fmt: skip
    keys: list[str] = [""] * (count + warm)

    async def register(index: int) -> None:
        at = index if index >= 0 else count - 1 - index
        status, answer = await call(app, "POST", "/api/v1/provision", bodies[at], half)
        if status != 200:
            raise RuntimeError(f"registration-key: {status} {answer[:300]!r}")
        keys[at] = json.loads(answer)["bundle"]["channel"]["write_key"]

    if timed:
        await _timed("registration-key", count, register)
    else:
        for index in range(count + warm):
            await register(index)
    return keys


def main() -> None:
    parser = argparse.ArgumentParser(prog="python -m bench.inproc")
    parser.add_argument("parts", nargs="+",
                        choices=("middleware", "x509-signed", "oob-secret", "symmetric-key",
                                 "csr-sign", "registration-key", "thingspeak-update"))  # fmt: skip
    parser.add_argument("--count", type=int, default=0)
    parser.add_argument("--database", default=None)
    parser.add_argument("--concurrency", type=int, default=1)
    arguments = parser.parse_args()
    global CONCURRENCY
    CONCURRENCY = max(1, arguments.concurrency)
    directory = Path(tempfile.mkdtemp(prefix="imprint-inproc-"))
    logging.getLogger().handlers[:] = []
    try:
        if "middleware" in arguments.parts:
            uvloop.run(bench_middleware(arguments.count or 20_000, directory))
        app_parts = [p for p in arguments.parts if p != "middleware"]
        if app_parts:
            uvloop.run(bench_app(app_parts, arguments.count or 400, directory, arguments.database))
    finally:  # its database and log (tens of MB after a few thousand registrations)
        shutil.rmtree(directory, ignore_errors=True)


if __name__ == "__main__":
    main()
