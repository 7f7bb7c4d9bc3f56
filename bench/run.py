"""``make bench``: every part of the benchmark in one run, one table, one JSON file.

1. the crypto floor (:mod:`bench.floor`);
2. registration load per mechanism and concurrency, on SQLite and PostgreSQL, with the
   load generator (:mod:`bench.load`) in its own process and the server's CPU read
   from ``/proc``; then ThingSpeak ``/update`` writes, each to a channel of its own
   (devices registered for the purpose before the section);
3. CSR signing: imprint's ``POST /api/v1/certificates``, the minimal Python signer
   (:mod:`bench.ceiling`) and ``cfssl serve`` (without and with its certificate
   database) in the same minutes, with the same CSRs and the same load generator;
4. scale: the x509 rate with 10k against 1M devices stored; a 1M-secret import;
5. nodes: the x509 (signed) rate with 1, 2 and 3 nodes on PostgreSQL behind HAProxy
   (:mod:`bench.cluster`);
6. the table, ``bench/results/<date>-<host>.json`` and a markdown copy of the tables.

``BENCH_QUICK=1`` (``make bench-quick``) runs the same parts small, in a minute or two.
``BENCH_SECTIONS=csr,load`` runs only the named sections (``load``, ``ocsp``, ``paced``,
``csr``, ``scale``, ``import``, ``workers``, ``nodes``) and ``BENCH_BACKENDS=sqlite``
only the named databases, for a before/after comparison of one part.

Every section records the load average (1 minute) when it starts and ends; a section
that starts above :data:`BUSY_LOAD` is run again after a pause, a bounded number of
times, and the attempt that started on the quietest machine is kept (marked ``noisy``
when even that one started above it).
"""

from __future__ import annotations

import json
import os
import ssl
import subprocess
import sys
import tempfile
import time
import uuid
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import httpx
from cryptography import x509
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec

from bench import cluster, floor, machine, report, scale
from bench.floor import ca_certificate
from bench.load import new_csr, oob_secret_for
from bench.servers import (
    Ceiling,
    Cfssl,
    ImprintServer,
    Postgres,
    PostgresBackground,
    cpu_seconds,
    memory,
    postgres_activity,
    postgres_activity_during,
)
from imprint.server import TRUST_REFRESH_SECONDS

RESULTS = Path(__file__).resolve().parent / "results"
# est-oob right after oob-secret: the same devices' kind of proof (the OOB secret), over
# EST's simpleenroll with HTTP Basic instead of the native JSON, at the same concurrency.
MECHANISMS = ("x509-signed", "x509-mtls", "oob-secret", "est-oob", "symmetric-key")
#: What registered devices send after: ThingSpeak's ``/update``, each write to a channel
#: of its own (the load section's last kind).
DEVICE_WRITES = ("thingspeak-update",)
OCSP_KINDS = ("ocsp-cached", "ocsp-uncached")
OCSP_CERTIFICATES = 20
OOB_MASTER = "bench-oob-master"
ORG = "Bench Devices"
SECTIONS = ("load", "ocsp", "paced", "csr", "scale", "import", "workers", "nodes")
BUSY_LOAD = 1.5  # a section starting above this 1-minute load average is run again


@dataclass(frozen=True)
class Plan:
    quick: bool
    count: int  # devices per load run (the most; a run also stops at max_seconds)
    concurrencies: tuple[int, ...]
    max_seconds: float
    backends: tuple[str, ...]
    scale_backends: tuple[str, ...]
    scale_small: int
    scale_large: int
    import_rows: int
    sections: tuple[str, ...] = SECTIONS
    retries: int = 2  # more attempts of a section that started on a busy machine
    settle_seconds: float = 30  # the pause before such an attempt

    @classmethod
    def make(cls, quick: bool) -> Plan:
        sections = tuple(
            s.strip() for s in os.environ.get("BENCH_SECTIONS", ",".join(SECTIONS)).split(",")
        )
        backends = tuple(
            b.strip() for b in os.environ.get("BENCH_BACKENDS", "sqlite,postgresql").split(",")
        )
        if quick:
            return cls(True, 300, (16,), 5, backends, ("sqlite",), 2_000,
                       20_000, 20_000, sections, 1, 10)  # fmt: skip
        # Seeding 1M devices takes minutes per backend: scale runs on SQLite only.
        return cls(False, 2500, (1, 8, 32), 10, backends, ("sqlite",),
                   10_000, 1_000_000, 1_000_000, sections)  # fmt: skip

    def wants(self, section: str) -> bool:
        return section in self.sections


def say(message: str) -> None:
    print(f"[{datetime.now():%H:%M:%S}] {message}", file=sys.stderr, flush=True)


def load_average() -> float:
    return round(os.getloadavg()[0], 2)


def section(name: str, plan: Plan, results: dict[str, Any],
            measure: Callable[[], list[dict[str, Any]]]) -> list[dict[str, Any]]:  # fmt: skip
    """Run one section, noting the load average at its start and end on each of its rows.

    A section that starts above :data:`BUSY_LOAD` runs again after a pause, up to
    ``plan.retries`` more times; the attempt that started lowest is kept, and marked
    ``noisy`` when it too started above the bound.
    """
    attempts: list[tuple[float, float, list[dict[str, Any]]]] = []
    for attempt in range(plan.retries + 1):
        if attempt:
            say(f"{name}: started at load {attempts[-1][0]} > {BUSY_LOAD}; "
                f"again in {plan.settle_seconds:.0f} s")  # fmt: skip
            time.sleep(plan.settle_seconds)
        start = load_average()
        rows = measure()
        attempts.append((start, load_average(), rows))
        if start <= BUSY_LOAD:
            break
    start, end, rows = min(attempts, key=lambda a: a[0])
    noisy = start > BUSY_LOAD
    for row in rows:
        row |= {"load_start": start, "load_end": end, "noisy": noisy, "attempts": len(attempts)}
        say(report.line(row))
    results["runs"].extend(rows)
    results.setdefault("sections", []).append(
        {"section": name, "load_start": start, "load_end": end, "noisy": noisy,
         "attempts": [[a[0], a[1]] for a in attempts]}
    )  # fmt: skip
    return rows


class Manufacturer:
    """A device maker's root and production-line CA: what x509 enrollments trust."""

    def __init__(self) -> None:
        root_key = ec.generate_private_key(ec.SECP256R1())
        self.root = ca_certificate("Bench Root CA", root_key, None, root_key, ORG)
        self.line_key = ec.generate_private_key(ec.SECP256R1())
        self.line = ca_certificate("Bench Line A", self.line_key, self.root, root_key, ORG)

    def pem(self, what: x509.Certificate | ec.EllipticCurvePrivateKey) -> str:
        if isinstance(what, x509.Certificate):
            return what.public_bytes(serialization.Encoding.PEM).decode()
        return what.private_bytes(
            serialization.Encoding.PEM,
            serialization.PrivateFormat.PKCS8,
            serialization.NoEncryption(),
        ).decode()


class Target:
    """One imprint server set up with an enrollment per mechanism."""

    def __init__(self, server: ImprintServer, manufacturer: Manufacturer) -> None:
        self.server = server
        self.manufacturer = manufacturer
        context = ssl.create_default_context(cafile=str(server.root_cert))
        self.admin = httpx.Client(
            base_url=server.base_url,
            verify=context,
            timeout=300,
            headers={"Authorization": f"Bearer {server.admin_token}"},
        )
        self.devices = httpx.Client(base_url=server.base_url, verify=context, timeout=300)
        self._channel_key_half: str | None = None
        m = manufacturer
        made = self.admin.post("/api/v1/orgs", json={"id": "bench", "name": "Benchmarks"})
        if made.status_code != 409:  # the owner of every enrollment below
            made.raise_for_status()
        self.x509 = self._enroll(
            {"id": "bench-x509", "mechanism": "x509",
             "x509": {"certificate_chain": [m.pem(m.line), m.pem(m.root)]}}
        )  # fmt: skip
        self._enroll({"id": "bench-oob", "mechanism": "oob-secret"})
        self._enroll({"id": "bench-oob-import", "mechanism": "oob-secret"})
        self.group_key = self._enroll({"id": "bench-sym", "mechanism": "symmetric-key"})[
            "group_key"
        ]
        issuing = x509.load_pem_x509_certificate(self.admin.get("/ca/issuing.pem").content)
        ski = issuing.extensions.get_extension_for_class(x509.SubjectKeyIdentifier).value
        self.issuing_id = ski.digest.hex()  # how the ledger names the issuer

    def _enroll(self, body: dict[str, Any]) -> dict[str, Any]:
        response = self.admin.post("/api/v1/enrollments", json={"owner": "bench", **body})
        response.raise_for_status()
        created: dict[str, Any] = response.json()
        return created

    def write_keys(self, count: int) -> list[str]:
        """The write keys of ``count`` new channels: devices registered (8 at a time) with
        the registration key of an enrollment that gives each a channel."""
        if self._channel_key_half is None:
            self._enroll({"id": "bench-channels", "mechanism": "registration-key",
                          "channel": {"fields": {"field1": "temperature", "field2": "humidity"},
                                      "delivery": "plain"}})  # fmt: skip
            issued = self.admin.post("/api/v1/enrollments/bench-channels/registration-key",
                                     json={})  # fmt: skip
            issued.raise_for_status()
            self._channel_key_half = str(issued.json()["key"]).split("-")[0]
        half = {"X-Imprint-Key-Half": self._channel_key_half}
        prefix = f"ts-{uuid.uuid4().hex[:6]}"

        def register(index: int) -> str:
            body = {"mechanism": "registration-key", "csr": new_csr(f"{prefix}-{index}")[1],
                    "registration_id": f"{prefix}-{index:07d}"}  # fmt: skip
            answer = self.devices.post("/api/v1/provision", json=body, headers=half)
            answer.raise_for_status()
            return str(answer.json()["bundle"]["channel"]["write_key"])

        with ThreadPoolExecutor(8) as pool:
            return list(pool.map(register, range(count)))

    def register_secrets(self, prefix: str, count: int) -> None:
        rows = []
        for index in range(count):
            device_id = f"{prefix}-{index:07d}"
            rows.append({"device_id": device_id, "secret": oob_secret_for(OOB_MASTER, device_id)})
        for start in range(0, len(rows), 20_000):
            response = self.admin.post(
                "/api/v1/enrollments/bench-oob/oob-secrets:bulk", json=rows[start : start + 20_000]
            )
            response.raise_for_status()

    def job(self, kind: str, count: int, concurrency: int, max_seconds: float) -> dict[str, Any]:
        prefix = f"{kind}-{uuid.uuid4().hex[:6]}"
        if kind in ("oob-secret", "est-oob"):
            self.register_secrets(prefix, count)
        m = self.manufacturer
        return {
            "kind": kind,
            "count": count,
            "prefix": prefix,
            "concurrency": concurrency,
            "max_seconds": max_seconds,
            "host": "127.0.0.1",
            "port": self.server.port,
            "base_url": self.server.base_url,
            "ca_file": str(self.server.root_cert),
            "fresh_connection": kind == "x509-mtls",
            "line_cert": m.pem(m.line),
            "line_key": m.pem(m.line_key),
            "oob_master": OOB_MASTER,
            "group_key": self.group_key,
        }

    def ocsp_job(self, kind: str, count: int, concurrency: int, max_seconds: float
                 ) -> dict[str, Any]:  # fmt: skip
        """OCSP requests about a few certificates issued for the purpose."""
        certificates = []
        for index in range(OCSP_CERTIFICATES):
            _, pem = new_csr(f"ocsp-{index}")
            response = self.admin.post(
                "/api/v1/certificates", json={"csr": pem, "profile": "device"}
            )
            response.raise_for_status()
            certificates.append(response.json()["certificate"])
        return self.job(kind, count, concurrency, max_seconds) | {
            "certificates": certificates,
            "issuer": self.admin.get("/ca/issuing.pem").text,
        }

    def close(self) -> None:
        self.admin.close()
        self.devices.close()


def run_load(job: dict[str, Any], server_pid: int) -> dict[str, Any]:
    """Start the load generator, let it build its requests, then time the run."""
    process = subprocess.Popen(
        [sys.executable, "-m", "bench.load"],
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        text=True,
        cwd=Path(__file__).resolve().parent.parent,
    )
    assert process.stdin is not None
    assert process.stdout is not None
    process.stdin.write(json.dumps(job) + "\n")
    process.stdin.flush()
    if process.stdout.readline().strip() != "ready":
        process.kill()
        raise RuntimeError(f"the load generator failed to prepare {job['kind']}")
    before = cpu_seconds(server_pid)
    process.stdin.write("go\n")
    process.stdin.flush()
    line = process.stdout.readline()
    after = cpu_seconds(server_pid)
    process.wait(timeout=60)
    result: dict[str, Any] = json.loads(line)
    ok = result["ok"]
    result["server_cpu_s"] = round(after - before, 2)
    result["server_cpu_ms_per_reg"] = round((after - before) * 1000 / ok, 3) if ok else None
    result["server_rss_mb"] = memory(server_pid)["rss_mb"]
    return result


def _row(section: str, backend: str, kind: str, job: dict[str, Any], result: dict[str, Any],
         floor_us: float | None) -> dict[str, Any]:  # fmt: skip
    cpu = result.get("server_cpu_ms_per_reg")
    return {
        "section": section,
        "backend": backend,
        "mechanism": kind,
        "concurrency": job["concurrency"],
        "rate_target": job.get("rate"),
        "floor_ms": round(floor_us / 1000, 3) if floor_us else None,
        "cpu_over_floor": round(cpu * 1000 / floor_us, 2) if cpu and floor_us else None,
        **result,
    }


def _floor_of(kind: str, floors: dict[str, float]) -> float | None:
    return floors.get("csr-sign" if kind.startswith("csr") else kind)


def bench_backend(backend: str, plan: Plan, workdir: Path, manufacturer: Manufacturer,
                  floors: dict[str, float], results: dict[str, Any], csr_file: Path,
                  postgres: Postgres | None) -> None:  # fmt: skip
    url = postgres.create_database(f"bench_{uuid.uuid4().hex[:8]}") if postgres else None
    server = ImprintServer(workdir, url, backend)
    say(f"{backend}: starting imprint")
    server.start()
    target = Target(server, manufacturer)
    try:
        best: dict[str, float] = {}
        for kind in MECHANISMS if plan.wants("load") else ():

            def mechanism(kind: str = kind) -> list[dict[str, Any]]:
                rows = []
                for concurrency in plan.concurrencies:
                    job = target.job(kind, plan.count, concurrency, plan.max_seconds)
                    rows.append(_row("load", backend, kind, job, run_load(job, server.pid),
                                     _floor_of(kind, floors)))  # fmt: skip
                return rows

            for row in section(f"load {backend} {kind}", plan, results, mechanism):
                best[kind] = max(best.get(kind, 0.0), row["rate"])
        for kind in DEVICE_WRITES if plan.wants("load") else ():
            say(f"{backend}: registering devices for {kind}")
            keys = target.write_keys(plan.count * len(plan.concurrencies))

            def writes(kind: str = kind, keys: list[str] = keys) -> list[dict[str, Any]]:
                rows = []
                for run, concurrency in enumerate(plan.concurrencies):
                    job = target.job(kind, plan.count, concurrency, plan.max_seconds) | {
                        "write_keys": keys[run * plan.count : (run + 1) * plan.count]
                    }
                    rows.append(_row("load", backend, kind, job, run_load(job, server.pid), None))
                return rows

            section(f"load {backend} {kind}", plan, results, writes)
        # OCSP responses per second: kept answers (RFC 5019 GET) and fresh ones (nonces).
        for kind in OCSP_KINDS if plan.wants("ocsp") else ():

            def ocsp(kind: str = kind) -> list[dict[str, Any]]:
                job = target.ocsp_job(kind, plan.count * 4, plan.concurrencies[-1],
                                      plan.max_seconds)  # fmt: skip
                return [_row("ocsp", backend, kind, job, run_load(job, server.pid), None)]

            section(f"ocsp {backend} {kind}", plan, results, ocsp)
        if plan.wants("paced") and "x509-signed" in best:
            # p99 at half the highest x509 (signed) rate, paced (open loop).
            rate = max(1.0, round(best["x509-signed"] / 2, 1))

            def paced() -> list[dict[str, Any]]:
                _warm(target, "x509-signed", plan.concurrencies[-1])
                count = int(rate * plan.max_seconds)
                job = target.job("x509-signed", count, 64, plan.max_seconds * 2) | {"rate": rate}
                return [_row("paced", backend, "x509-signed", job,
                             _with_commit_groups(server, backend, job),
                             floors["x509-signed"])]  # fmt: skip

            section(f"paced {backend}", plan, results, paced)
        if backend == "sqlite" and plan.wants("csr"):
            bench_csr(plan, workdir, floors, csr_file, results, target)
        if backend in plan.scale_backends and plan.wants("scale"):
            try:
                results["scale"][backend] = scale_runs(target, plan, floors)
            except Exception as exc:  # a failed part must not lose the rest of the run
                say(f"{backend}: scale failed: {exc!r}")
                results.setdefault("failures", []).append(f"scale {backend}: {exc!r}")
        if backend == "sqlite" and plan.wants("import"):
            say(f"{backend}: importing {plan.import_rows} OOB secrets with the CLI")
            results["import"] = scale.import_secrets(server, "bench-oob-import", plan.import_rows)
            say(f"import: {results['import']}")
        results["server_memory"][backend] = memory(server.pid)
    finally:
        target.close()
        server.stop()


def _warm(target: Target, kind: str, concurrency: int) -> None:
    """200 requests of ``kind`` just before a measured run, not measured: after a pause
    (a section's settle) a server's first second is slow, which is not the steady state
    a run measures (bench/README.md, "The paced runs warmed first")."""
    run_load(target.job(kind, 200, concurrency, 5), target.server.pid)


def _with_commit_groups(server: ImprintServer, backend: str,
                        job: dict[str, Any]) -> dict[str, Any]:  # fmt: skip
    """``run_load(job)``, and on SQLite each worker's commit groups during it, from the
    workers' ``/metrics``: members a group, and the shares of the run's seconds it spent
    waiting for the writer lock and holding it; on PostgreSQL the server's checkpoints
    and autovacuum runs during it (``postgres_activity``), and by the second (printed
    beside the slow requests of a paced run) the autovacuum passes seen, the buffers
    checkpoints wrote and the WAL written (:class:`bench.servers.PostgresBackground`)."""
    if backend != "sqlite":
        before_pg = postgres_activity(server.database_url)
        with PostgresBackground(server.database_url) as background:
            result = run_load(job, server.pid)
        after_pg = postgres_activity(server.database_url)
        result["postgres_activity"] = postgres_activity_during(before_pg, after_pg)
        say(f"  postgresql during the run: {result['postgres_activity']}")
        started = result["started_at"]
        seen = background.by_second(started, started + result["seconds"])
        result["postgres_background_by_second"] = seen
        if background.error is not None:
            result["postgres_background_error"] = background.error
            say(f"  postgresql's background work not sampled to the end: {background.error}")
        # A paced run: each second's slow requests (by when they were due) beside it; the
        # requests of the run's last seconds may all have been due before them.
        for second, (count, what) in enumerate(zip(result.get("slow_by_second", ()), seen,
                                                   strict=False)):  # fmt: skip
            say(f"  second {second}: {count} slow; postgresql: WAL {what['wal_kb']} kB, "
                f"checkpoints wrote {what['checkpoint_buffers']} buffers, "
                f"autovacuum: {', '.join(what['autovacuum']) or '-'}")  # fmt: skip
        return result
    before = server.commit_groups()
    result = run_load(job, server.pid)
    after = server.commit_groups()
    seconds = result["seconds"] or 1.0
    workers = []
    for pid, now in sorted(after.items()):
        then = before.get(pid)
        if then is None:
            continue
        delta = {key: now.get(key, 0.0) - then.get(key, 0.0) for key in now}
        groups = delta.get("groups", 0.0)
        workers.append({
            "pid": pid,
            "groups": int(groups),
            "members_per_group": round(delta.get("members", 0.0) / groups, 2) if groups else None,
            "lock_waits": int(delta.get("waits", 0.0)),
            "lock_wait_share": round(delta.get("wait_s", 0.0) / seconds, 3),
            "lock_held_share": round(delta.get("held_s", 0.0) / seconds, 3),
        })  # fmt: skip
        say(f"  worker {pid}: {int(groups)} groups, {workers[-1]['members_per_group']} "
            f"members each; writer lock waited {workers[-1]['lock_wait_share']:.0%} "
            f"and held {workers[-1]['lock_held_share']:.0%} of the run")  # fmt: skip
    result["commit_groups"] = workers
    return result


def bench_workers(backend: str, plan: Plan, workdir: Path, manufacturer: Manufacturer,
                  floors: dict[str, float], results: dict[str, Any], csr_file: Path,
                  postgres: Postgres | None, workers: int = 2) -> None:  # fmt: skip
    """The x509 rates again, from ``workers`` server processes sharing the port (the
    default on this two-core machine: ``server.workers`` is the number of cores); then
    the paced run at half of that rate and, on SQLite, CSR signing."""
    url = postgres.create_database(f"bench_{uuid.uuid4().hex[:8]}") if postgres else None
    server = ImprintServer(workdir, url, backend, workers=workers)
    say(f"{backend}: starting imprint with {workers} worker processes")
    server.start()
    target = Target(server, manufacturer)
    # The enrollments were made through one worker; the others see them within the cache
    # TTL (2 s) and admit their CAs to the TLS handshake within the trust refresh (5 s).
    time.sleep(TRUST_REFRESH_SECONDS + 1)
    name = f"workers {workers}"
    best: dict[str, float] = {}
    try:
        for kind in ("x509-signed", "x509-mtls"):

            def measure(kind: str = kind) -> list[dict[str, Any]]:
                concurrency = plan.concurrencies[-1]
                _warm(target, kind, concurrency)
                job = target.job(kind, plan.count, concurrency, plan.max_seconds)
                result = _with_commit_groups(server, backend, job)
                return [_row(name, backend, kind, job, result, floors[kind])]

            for row in section(f"{name} {backend} {kind}", plan, results, measure):
                best[kind] = max(best.get(kind, 0.0), row["rate"])
        if plan.wants("paced") and best.get("x509-signed"):
            rate = max(1.0, round(best["x509-signed"] / 2, 1))

            def paced() -> list[dict[str, Any]]:
                _warm(target, "x509-signed", plan.concurrencies[-1])
                count = int(rate * plan.max_seconds)
                job = target.job("x509-signed", count, 64, plan.max_seconds * 2) | {"rate": rate}
                return [_row(f"paced {name}", backend, "x509-signed", job,
                             _with_commit_groups(server, backend, job),
                             floors["x509-signed"])]  # fmt: skip

            section(f"paced {name} {backend}", plan, results, paced)
        if backend == "sqlite" and plan.wants("csr"):

            def csr() -> list[dict[str, Any]]:
                rows = []
                for concurrency in plan.concurrencies[-2:]:
                    job = imprint_csr_job(server, plan, concurrency, csr_file)
                    rows.append(_row(name, backend, "csr-imprint", job,
                                     run_load(job, server.pid), floors["csr-sign"]))  # fmt: skip
                return rows

            section(f"{name} {backend} csr-sign", plan, results, csr)
        # Summed over the supervisor and its workers; not the per-process RSS target.
        results.setdefault("workers_memory", {})[backend] = memory(server.pid)
    finally:
        target.close()
        server.stop()


def scale_runs(target: Target, plan: Plan, floors: dict[str, float]) -> dict[str, Any]:
    server = target.server
    enrollment = "bench-x509"
    issuer = target.issuing_id
    found: dict[str, Any] = {}
    seeded = 0
    for size in (plan.scale_small, plan.scale_large):
        stored = scale.device_count(server)
        missing = size - stored
        seconds = 0.0
        if missing > 0:
            say(f"{server.label}: seeding {missing} devices to reach {size}")
            seconds = scale.seed_devices(server, seeded + 1, seeded + missing, enrollment, issuer)
            seeded += missing
        concurrency = 16
        # Three runs at each size, the median kept: one 10-second run on a shared
        # two-core machine moves by 20% or more on its own.
        rows = []
        for _ in range(1 if plan.quick else 3):
            job = target.job("x509-signed", plan.count, concurrency, plan.max_seconds)
            rows.append(_row(f"scale {size}", server.label, "x509-signed", job,
                             run_load(job, server.pid), floors["x509-signed"]))  # fmt: skip
        rows.sort(key=lambda r: r["rate"])
        row = rows[len(rows) // 2]
        row["rates"] = [r["rate"] for r in rows]
        row["devices_stored"] = scale.device_count(server)
        row["seed_seconds"] = round(seconds, 1)
        say(report.line(row))
        found[str(size)] = row
    small, large = found[str(plan.scale_small)], found[str(plan.scale_large)]
    found["ratio"] = round(large["rate"] / small["rate"], 3) if small["rate"] else None
    return found


def _csr_job(kind: str, plan: Plan, concurrency: int, port: int, ca_file: Path,
             csr_file: Path) -> dict[str, Any]:  # fmt: skip
    return {
        "kind": kind, "count": plan.count, "prefix": kind, "concurrency": concurrency,
        "max_seconds": plan.max_seconds, "host": "127.0.0.1", "port": port, "base_url": "",
        "ca_file": str(ca_file), "csr_file": str(csr_file),
    }  # fmt: skip


def imprint_csr_job(server: ImprintServer, plan: Plan, concurrency: int,
                    csr_file: Path) -> dict[str, Any]:  # fmt: skip
    """CSR signing by imprint's admin API (``POST /api/v1/certificates``) as its admin."""
    admin = {"Authorization": f"Bearer {server.admin_token}"}
    job = _csr_job("csr-imprint", plan, concurrency, server.port, server.root_cert, csr_file)
    return job | {"base_url": server.base_url, "headers": admin}


def bench_csr(plan: Plan, workdir: Path, floors: dict[str, float], csr_file: Path,
              results: dict[str, Any], target: Target) -> None:  # fmt: skip
    """CSR signing by imprint's admin API, the minimal Python signer and cfssl (without
    and with its certificate database), one after the other at each concurrency, in one
    section (the same minutes)."""
    ceiling = Ceiling(workdir)
    ceiling.start()
    peers: list[Cfssl] = []
    if not Cfssl.available():
        say("cfssl is not installed (apt-get install golang-cfssl): skipping the peer")
        results["cfssl"] = None
    else:
        peers = [Cfssl(workdir), Cfssl(workdir, record=True)]
        for peer in peers:
            peer.start()
        results["cfssl"] = {"version": Cfssl.version()}
    server = target.server

    def measure() -> list[dict[str, Any]]:
        rows = []
        for concurrency in plan.concurrencies[-2:]:
            job = imprint_csr_job(server, plan, concurrency, csr_file)
            rows.append(_row("csr-sign", "sqlite", "csr-imprint", job,
                             run_load(job, server.pid), floors["csr-sign"]))  # fmt: skip
            job = _csr_job("csr-ceiling", plan, concurrency, ceiling.port, ceiling.ca_file,
                           csr_file)  # fmt: skip
            rows.append(_row("csr-sign", "sqlite", "csr-ceiling", job,
                             run_load(job, ceiling.pid), floors["csr-sign"]))  # fmt: skip
            for peer in peers:
                # The backend column tells them apart: "none" keeps no record.
                job = _csr_job("csr-cfssl", plan, concurrency, peer.port, peer.ca_file,
                               csr_file)  # fmt: skip
                rows.append(_row("csr-sign", "sqlite" if peer.record else "none", "csr-cfssl",
                                 job, run_load(job, peer.pid), floors["csr-sign"]))  # fmt: skip
        return rows

    try:
        section("csr-sign", plan, results, measure)
        results["ceiling_memory"] = memory(ceiling.pid)
        for peer in peers:
            if peer.record:
                results["cfssl"]["recorded"] = peer.recorded()
            else:
                results["cfssl"]["memory"] = memory(peer.pid)
    finally:
        ceiling.stop()
        for peer in peers:
            peer.stop()


def main() -> None:
    plan = Plan.make(os.environ.get("BENCH_QUICK") == "1")
    started = time.monotonic()
    results: dict[str, Any] = {
        "started": datetime.now(UTC).isoformat(timespec="seconds"),
        "quick": plan.quick,
        "plan": plan.__dict__,
        "machine": machine.describe(),
        "runs": [],
        "scale": {},
        "server_memory": {},
    }
    say("measuring the crypto floor")
    primitives = floor.primitives(plan.quick)
    floors = floor.floors(primitives)
    results["floor"] = {"primitives_us": primitives, "per_registration_us": floors}
    workdir = Path(tempfile.mkdtemp(prefix="imprint-bench-"))
    csr_file = workdir / "csrs.json"
    csr_file.write_text(json.dumps([new_csr(f"csr-{i:06d}")[1] for i in range(plan.count)]))
    manufacturer = Manufacturer()
    postgres = None
    try:
        for backend in plan.backends:
            if backend == "postgresql":
                postgres = Postgres()
                postgres.start()
                results["machine"]["postgresql"] = postgres.version
            bench_backend(backend, plan, workdir, manufacturer, floors, results, csr_file,
                          postgres)  # fmt: skip
            if plan.wants("workers"):
                bench_workers(backend, plan, workdir, manufacturer, floors, results, csr_file,
                              postgres)  # fmt: skip
            if postgres is not None and plan.wants("nodes"):
                cluster.bench_nodes(postgres, workdir, manufacturer, floors, results,
                                    plan.count, plan.max_seconds)  # fmt: skip
    finally:
        if postgres is not None:
            postgres.stop()
        subprocess.run(["rm", "-rf", str(workdir)], check=False)
    results["load_average_at_end"] = [round(x, 2) for x in os.getloadavg()]
    results["seconds"] = round(time.monotonic() - started, 1)
    results["targets"] = report.targets(results)
    text = report.render(results)
    print(text)
    RESULTS.mkdir(exist_ok=True)
    stem = f"{datetime.now(UTC):%Y-%m-%d}-{results['machine']['host']}"
    if plan.quick:
        stem += "-quick"
    if plan.sections != SECTIONS or plan.backends != ("sqlite", "postgresql"):
        stem += "-" + "-".join((*plan.sections, *plan.backends))  # a partial run
    stem += f"-{datetime.now(UTC):%H%M}"
    (RESULTS / f"{stem}.json").write_text(json.dumps(results, indent=2) + "\n")
    (RESULTS / f"{stem}.md").write_text(report.markdown(results))
    say(f"wrote bench/results/{stem}.json and .md in {results['seconds']} s")


if __name__ == "__main__":
    main()
