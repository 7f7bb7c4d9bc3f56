"""The load generator: a separate process that provisions N distinct devices.

It is started by :mod:`bench.run` with a job (JSON) on stdin. It first builds every
request (keys, CSRs, manufacturer certificates, evidence), untimed, then prints
``ready``; the parent snapshots the server's CPU counters and answers ``go``; the
generator sends the requests and prints one JSON line with what it measured.

The HTTP/1.1 client is a small one on asyncio streams (uvloop when installed): a
general-purpose client costs more CPU per request than the server's crypto floor, and
on a two-core machine the generator shares the CPU with the server it measures.

Modes:

* closed loop: ``concurrency`` connections each send their next request as soon as
  the previous answer arrived;
* open loop (``rate`` set): requests are due at a fixed pace and latency counts from
  the moment a request was due, so a slow server cannot hide queueing delay.

With ``fresh_connection`` every request opens a new TLS connection (a full handshake,
with the device's own client certificate for x509 over mutual TLS).
"""

from __future__ import annotations

import asyncio
import base64
import contextlib
import gc
import hashlib
import hmac
import json
import os
import ssl
import sys
import tempfile
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID

from imprint.device.evidence import (
    derive_device_key,
    oob_secret_evidence,
    signed_request,
    symmetric_key_evidence,
)

OK_STATUSES = (200, 201)
REQUEST_TIMEOUT = 30.0


@dataclass(frozen=True, slots=True)
class Request:
    path: str
    body: bytes
    context: ssl.SSLContext | None = None  # a per-device context (mutual TLS)
    method: str = "POST"
    content_type: str = "application/json"
    headers: bytes = b""  # this request's own (e.g. its HTTP Basic credentials)
    #: A 2xx answer with this body is a refusal (ThingSpeak's ``/update`` answers ``0``).
    refused: bytes | None = None


#: In a paced run, the seconds at its start left out of its steady-state p99.
STEADY_AFTER_SECONDS = 2.0
#: In a paced run, a latency above this is counted in the second it was due.
SLOW_SECONDS = 0.05


@dataclass
class Tally:
    latencies: list[float] = field(default_factory=list)
    dues: list[float] = field(default_factory=list)  # paced: when each was due, from the start
    errors: dict[str, int] = field(default_factory=dict)
    first_error: str | None = None

    def error(self, kind: str, detail: str) -> None:
        self.errors[kind] = self.errors.get(kind, 0) + 1
        if self.first_error is None:
            self.first_error = f"{kind}: {detail[:300]}"


def oob_secret_for(master: str, device_id: str) -> str:
    """The secret the bench registered for a device (the parent computes the same)."""
    return hmac.new(master.encode(), device_id.encode(), hashlib.sha256).hexdigest()[:32]


def new_csr(common_name: str) -> tuple[x509.CertificateSigningRequest, str]:
    key = ec.generate_private_key(ec.SECP256R1())
    csr = (
        x509.CertificateSigningRequestBuilder()
        .subject_name(x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, common_name)]))
        .sign(key, hashes.SHA256())
    )
    return csr, csr.public_bytes(serialization.Encoding.PEM).decode("ascii")


def idevid(
    common_name: str, issuer: x509.Certificate, issuer_key: ec.EllipticCurvePrivateKey
) -> tuple[x509.Certificate, ec.EllipticCurvePrivateKey]:
    """A manufacturer device certificate, as a factory would make it."""
    key = ec.generate_private_key(ec.SECP256R1())
    now = datetime.now(UTC)
    certificate = (
        x509.CertificateBuilder()
        .subject_name(x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, common_name)]))
        .issuer_name(issuer.subject)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - timedelta(days=1))
        .not_valid_after(now + timedelta(days=3650))
        .add_extension(x509.BasicConstraints(ca=False, path_length=None), critical=True)
        .add_extension(x509.ExtendedKeyUsage([ExtendedKeyUsageOID.CLIENT_AUTH]), critical=False)
        .add_extension(
            x509.AuthorityKeyIdentifier.from_issuer_public_key(issuer_key.public_key()), False
        )
        .sign(issuer_key, hashes.SHA256())
    )
    return certificate, key


def _pem(item: x509.Certificate | ec.EllipticCurvePrivateKey) -> bytes:
    if isinstance(item, x509.Certificate):
        return item.public_bytes(serialization.Encoding.PEM)
    return item.private_bytes(
        serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()
    )


def _client_context(ca_file: str) -> ssl.SSLContext:
    return ssl.create_default_context(cafile=ca_file)


def ocsp_requests(job: dict[str, Any]) -> list[Request]:
    """OCSP for the job's certificates: ``ocsp-cached`` asks the same few by RFC 5019 GET
    (the responder signs each once and then reuses its answer), ``ocsp-uncached`` POSTs
    each with its own nonce (a ledger lookup and a signature every time)."""
    from cryptography.x509 import ocsp

    issuer = x509.load_pem_x509_certificate(job["issuer"].encode())
    leaves = [x509.load_pem_x509_certificate(pem.encode()) for pem in job["certificates"]]
    requests = []
    for index in range(int(job["count"])):
        builder = ocsp.OCSPRequestBuilder().add_certificate(
            leaves[index % len(leaves)],
            issuer,
            hashes.SHA1(),  # noqa: S303 (RFC 5019 CertID)
        )
        if job["kind"] == "ocsp-uncached":
            builder = builder.add_extension(x509.OCSPNonce(os.urandom(16)), critical=False)
        der = builder.build().public_bytes(serialization.Encoding.DER)
        if job["kind"] == "ocsp-cached":
            path = "/ocsp/" + base64.b64encode(der).decode().replace("/", "%2F")
            requests.append(Request(path, b"", method="GET"))
        else:
            requests.append(Request("/ocsp", der, content_type="application/ocsp-request"))
    return requests


def build_requests(job: dict[str, Any]) -> list[Request]:
    """Every request of the job, with its evidence, before any timing starts."""
    kind, count, prefix = job["kind"], int(job["count"]), job["prefix"]
    base = job["base_url"]
    requests: list[Request] = []
    if kind.startswith("ocsp"):
        return ocsp_requests(job)
    if kind == "thingspeak-update":
        # One entry a channel, as a fleet's devices write (each its own channel's key).
        return [
            Request("/update", f"api_key={key}&field1=21.5&field2=40".encode(),
                    content_type="application/x-www-form-urlencoded", refused=b"0")
            for key in job["write_keys"][:count]
        ]  # fmt: skip
    if kind in ("csr-imprint", "csr-cfssl", "csr-ceiling"):
        csrs = json.loads(Path(job["csr_file"]).read_text())[:count]
        for pem in csrs:
            if kind == "csr-imprint":
                fields = {"csr": pem, "profile": "device"}
                requests.append(Request("/api/v1/certificates", json.dumps(fields).encode()))
            elif kind == "csr-ceiling":
                requests.append(Request("/sign", json.dumps({"csr": pem}).encode()))
            else:
                fields = {"certificate_request": pem}
                requests.append(Request("/api/v1/cfssl/sign", json.dumps(fields).encode()))
        return requests
    if kind.startswith("x509"):
        issuer = x509.load_pem_x509_certificate(job["line_cert"].encode())
        loaded = serialization.load_pem_private_key(job["line_key"].encode(), None)
        assert isinstance(loaded, ec.EllipticCurvePrivateKey)
        issuer_key = loaded
    workdir = Path(tempfile.mkdtemp(prefix="imprint-bench-load-"))
    for index in range(count):
        device_id = f"{prefix}-{index:07d}"
        csr, csr_pem = new_csr(device_id)
        context = None
        body: dict[str, Any] = {"csr": csr_pem}
        if kind == "x509-signed":
            leaf, key = idevid(device_id, issuer, issuer_key)
            token = signed_request(csr, key, [leaf, issuer], f"{base}/api/v1/provision")
            body |= {"mechanism": "x509", "evidence": {"jws": token}}
        elif kind == "x509-mtls":
            leaf, key = idevid(device_id, issuer, issuer_key)
            chain_file, key_file = workdir / "chain.pem", workdir / "key.pem"
            chain_file.write_bytes(_pem(leaf) + _pem(issuer))
            key_file.write_bytes(_pem(key))
            context = _client_context(job["ca_file"])
            context.load_cert_chain(str(chain_file), str(key_file))
            body |= {"mechanism": "x509"}
        elif kind == "oob-secret":
            secret = oob_secret_for(job["oob_master"], device_id)
            body |= {
                "mechanism": "oob-secret",
                "registration_id": device_id,
                "evidence": oob_secret_evidence(secret, device_id, csr),
            }
        elif kind == "est-oob":
            # EST simpleenroll, HTTP Basic with the device's OOB secret.
            secret = oob_secret_for(job["oob_master"], device_id)
            basic = base64.b64encode(f"{device_id}:{secret}".encode()).decode()
            der = csr.public_bytes(serialization.Encoding.DER)
            requests.append(
                Request(
                    "/.well-known/est/bench-oob/simpleenroll",
                    base64.b64encode(der),
                    content_type="application/pkcs10",
                    headers=f"Authorization: Basic {basic}\r\n".encode(),
                )
            )
            continue
        elif kind == "symmetric-key":
            device_key = derive_device_key(base64.b64decode(job["group_key"]), device_id)
            body |= {
                "mechanism": "symmetric-key",
                "registration_id": device_id,
                "evidence": symmetric_key_evidence(device_key, device_id, csr),
            }
        else:
            raise SystemExit(f"unknown job kind {kind!r}")
        requests.append(Request("/api/v1/provision", json.dumps(body).encode(), context))
    for leftover in workdir.iterdir():
        leftover.unlink()
    workdir.rmdir()
    return requests


class Connection:
    """One HTTP/1.1 connection over TLS; keeps itself alive unless told otherwise."""

    def __init__(self, host: str, port: int, headers: bytes, source: str | None = None) -> None:
        self._host, self._port, self._headers = host, port, headers
        self._local = None if source is None else (source, 0)
        self._reader: asyncio.StreamReader | None = None
        self._writer: asyncio.StreamWriter | None = None

    async def open(self, context: ssl.SSLContext) -> None:
        self._reader, self._writer = await asyncio.open_connection(
            self._host, self._port, ssl=context, server_hostname=self._host,
            local_addr=self._local,
        )  # fmt: skip

    @property
    def is_open(self) -> bool:
        return self._writer is not None

    async def close(self) -> None:
        if self._writer is not None:
            self._writer.close()
            with contextlib.suppress(OSError, ssl.SSLError):
                await self._writer.wait_closed()
        self._reader = self._writer = None

    async def send(self, request: Request, *, close: bool) -> tuple[int, bytes]:
        assert self._reader is not None
        assert self._writer is not None
        head = f"{request.method} {request.path} HTTP/1.1\r\nHost: {self._host}:{self._port}\r\n"
        if request.method == "POST":
            head += (
                f"Content-Type: {request.content_type}\r\nContent-Length: {len(request.body)}\r\n"
            )
        encoded = head.encode() + request.headers
        if close:
            encoded += b"Connection: close\r\n"
        self._writer.write(encoded + self._headers + b"\r\n" + request.body)
        status_line = await self._reader.readline()
        if not status_line:
            raise ConnectionError("the server closed the connection")
        status = int(status_line.split(b" ", 2)[1])
        length, chunked, closing = 0, False, close
        while True:
            line = await self._reader.readline()
            if line in (b"\r\n", b""):
                break
            name, _, value = line.partition(b":")
            name = name.strip().lower()
            if name == b"content-length":
                length = int(value)
            elif name == b"transfer-encoding" and b"chunked" in value.lower():
                chunked = True
            elif name == b"connection" and b"close" in value.lower():
                closing = True
        if chunked:
            parts = []
            while True:
                size = int((await self._reader.readline()).split(b";")[0], 16)
                if size == 0:
                    await self._reader.readline()
                    break
                parts.append(await self._reader.readexactly(size))
                await self._reader.readexactly(2)
            body = b"".join(parts)
        else:
            body = await self._reader.readexactly(length)
        if closing:
            await self.close()
        return status, body


def _quantile_ms(ordered: list[float], q: float) -> float | None:
    """The ``q`` quantile of ``ordered`` (seconds, ascending) in milliseconds."""
    if not ordered:
        return None
    return round(ordered[min(len(ordered) - 1, int(q * len(ordered)))] * 1000, 2)


def _source(host: str, number: int) -> str | None:
    """The address connection ``number`` comes from: devices come from many addresses,
    so on loopback each connection takes one of 127.0.0.2-127.0.0.251 (Linux routes all
    of 127.0.0.0/8 to the loopback device). One address for all would meet the limits
    a server keeps per address (connections, attempts at guessable credentials in
    progress: decision 0011), which a fleet does not."""
    return f"127.0.0.{2 + number % 250}" if host == "127.0.0.1" else None


async def _run(job: dict[str, Any], requests: list[Request]) -> dict[str, Any]:
    host, port = job["host"], int(job["port"])
    headers = b"".join(f"{k}: {v}\r\n".encode() for k, v in job.get("headers", {}).items())
    shared = _client_context(job["ca_file"])
    fresh = bool(job.get("fresh_connection"))
    concurrency = int(job["concurrency"])
    rate = job.get("rate")
    deadline = time.monotonic() + float(job["max_seconds"])
    tally = Tally()
    pending: Iterator[tuple[int, Request]] = iter(enumerate(requests))
    start = time.monotonic()

    async def worker(number: int) -> None:
        connection = Connection(host, port, headers, _source(host, number))
        for index, request in pending:
            due = start + index / rate if rate else time.monotonic()
            if rate:
                delay = due - time.monotonic()
                if delay > 0:
                    await asyncio.sleep(delay)
            if time.monotonic() > deadline:
                break
            try:
                if not connection.is_open:
                    await connection.open(request.context or shared)
                status, body = await asyncio.wait_for(
                    connection.send(request, close=fresh), REQUEST_TIMEOUT
                )
            except (
                OSError,
                ssl.SSLError,
                ConnectionError,
                asyncio.IncompleteReadError,
                TimeoutError,
            ) as exc:
                tally.error(type(exc).__name__, str(exc))
                await connection.close()
                continue
            if status in OK_STATUSES and body != request.refused:
                tally.latencies.append(time.monotonic() - due)
                if rate:
                    tally.dues.append(due - start)
            else:
                what = "refused" if status in OK_STATUSES else f"http {status}"
                tally.error(what, body.decode(errors="replace"))
        await connection.close()

    await asyncio.gather(*(worker(number) for number in range(concurrency)))
    elapsed = time.monotonic() - start
    latencies = sorted(tally.latencies)

    def quantile(q: float) -> float | None:
        return _quantile_ms(latencies, q)

    paced: dict[str, Any] = {}
    if rate and tally.dues:
        pairs = list(zip(tally.dues, tally.latencies, strict=True))
        steady = sorted(latency for due, latency in pairs if due >= STEADY_AFTER_SECONDS)
        slow = [0] * (int(max(tally.dues)) + 1)
        for due, latency in pairs:
            slow[int(due)] += latency > SLOW_SECONDS
        paced = {
            # the p99 without the requests due in the run's first seconds
            "p99_steady_ms": _quantile_ms(steady, 0.99),
            "steady_after_s": STEADY_AFTER_SECONDS,
            "slow_by_second": slow,  # requests over SLOW_SECONDS, by the second they were due
        }
    return paced | {
        "ok": len(latencies),
        "errors": sum(tally.errors.values()),
        "error_kinds": tally.errors,
        "first_error": tally.first_error,
        "seconds": round(elapsed, 3),
        "started_at": start,  # time.monotonic(), the same clock in every process here
        "rate": round(len(latencies) / elapsed, 1) if elapsed else 0.0,
        "p50_ms": quantile(0.50),
        "p95_ms": quantile(0.95),
        "p99_ms": quantile(0.99),
        "client_cpu_s": None,
    }


class _Pauses:
    """The generator's own garbage-collector pauses while it measures: each one delays
    every request due meanwhile, and an open-loop run counts that as latency."""

    def __init__(self) -> None:
        self.longest = 0.0
        self.total = 0.0
        self.full = 0
        self._began = 0.0

    def __call__(self, phase: str, info: dict[str, int]) -> None:
        if phase == "start":
            self._began = time.perf_counter()
            return
        took = time.perf_counter() - self._began
        self.longest = max(self.longest, took)
        self.total += took
        self.full += info["generation"] == 2


def main() -> None:
    job = json.loads(sys.stdin.readline())
    requests = build_requests(job)
    # What was built stays for the whole run: out of the collector's passes, as the
    # server's start-up objects are (imprint.server.settle_heap).
    gc.collect()
    gc.freeze()
    pauses = _Pauses()
    gc.callbacks.append(pauses)
    print("ready", flush=True)
    if sys.stdin.readline().strip() != "go":
        raise SystemExit("expected 'go'")
    try:
        import uvloop

        run: Callable[..., Any] = uvloop.run
    except ImportError:
        run = asyncio.run
    before = os.times()
    result = run(_run(job, requests))
    after = os.times()
    result["client_cpu_s"] = round((after.user - before.user) + (after.system - before.system), 3)
    result["client_gc"] = {
        "longest_ms": round(pauses.longest * 1000, 2),
        "total_ms": round(pauses.total * 1000, 2),
        "full": pauses.full,
    }
    print(json.dumps(result), flush=True)


if __name__ == "__main__":
    main()
