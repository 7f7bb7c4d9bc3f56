"""x509 registrations over mutual TLS with a fresh handshake each: straight to imprint,
and through HAProxy terminating TLS in front of it. Does handing TLS to a proxy on the
same machine raise the rate?

    .venv/bin/python -m bench.proxy [concurrency] [count] [rounds]

Two servers with ``server.workers: 2`` on SQLite, each with the bench's enrollments: one
serving TLS itself, one with ``server.tls: false`` behind HAProxy (HTTP mode; TLS with
``verify optional`` against imprint's chain and the bench manufacturer's root; the
client's certificate forwarded as base64 DER, as docs/configuration.md sets it up;
connections to imprint kept and reused). The same load generator, one after the other,
``rounds`` times. Prints the rate and the CPU a registration of imprint, HAProxy and
the load generator, and writes them to ``bench/results/<date>-<host>-proxy-<time>.json``
with the load average; not part of ``make bench`` (bench/README.md has the figures).
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import tempfile
import time
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import NameOID

from bench import machine
from bench.run import RESULTS, Manufacturer, Target, run_load, say
from bench.servers import ImprintServer, cpu_seconds, free_port
from imprint.server import TRUST_REFRESH_SECONDS

HAPROXY = """\
global
    maxconn 4000
defaults
    mode http
    timeout connect 2s
    timeout client 60s
    timeout server 60s
frontend devices
    bind 127.0.0.1:{port} ssl crt {crt} ca-file {clients} verify optional
    http-request del-header X-Client-Cert
    http-request set-header X-Client-Cert %[ssl_c_der,base64] if {{ ssl_c_used }}
    default_backend imprint
backend imprint
    http-reuse always
    server imprint 127.0.0.1:{backend} maxconn 64
"""


class Behind(ImprintServer):
    """``imprint serve`` over plain HTTP, trusting 127.0.0.1 to forward certificates."""

    def __init__(self, workdir: Path, front: int) -> None:
        super().__init__(workdir, None, "behind-proxy", workers=2)
        self.base_url = f"http://127.0.0.1:{self.port}"
        self.front = front

    def environment(self) -> dict[str, str]:
        return super().environment() | {
            "IMPRINT_SERVER__TLS": "false",
            "IMPRINT_SERVER__TRUSTED_PROXIES": '["127.0.0.1"]',
            "IMPRINT_SERVER__PUBLIC_URL": f"https://127.0.0.1:{self.front}",
        }


def _proxy_files(target: Target, server: Behind, workdir: Path) -> tuple[Path, Path]:
    """HAProxy's certificate (issued by imprint, with its chain and key) and the CAs
    whose certificates it lets clients present."""
    key = ec.generate_private_key(ec.SECP256R1())
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "bench proxy")])
    csr = x509.CertificateSigningRequestBuilder().subject_name(name).sign(key, hashes.SHA256())
    body = {
        "csr": csr.public_bytes(serialization.Encoding.PEM).decode(),
        "profile": "server",
        "sans": ["127.0.0.1"],
    }
    issued = target.admin.post("/api/v1/certificates", json=body)
    issued.raise_for_status()
    crt, clients = workdir / "proxy.pem", workdir / "clients.pem"
    crt.write_text(issued.json()["chain"] + target.manufacturer.pem(key))
    m = target.manufacturer
    clients.write_text((server.data_dir / "ca" / "chain.crt").read_text() + m.pem(m.root))
    return crt, clients


def _measure(target: Target, port: int, pids: list[int], concurrency: int, count: int
             ) -> dict[str, Any]:  # fmt: skip
    where = {"port": port, "base_url": f"https://127.0.0.1:{port}",
             "ca_file": str(target.server.root_cert)}  # fmt: skip
    run_load(target.job("x509-mtls", 200, concurrency, 5) | where, pids[0])  # warm up
    before = [cpu_seconds(pid) for pid in pids]
    result = run_load(target.job("x509-mtls", count, concurrency, 10) | where, pids[0])
    spent = [cpu_seconds(pid) - start for pid, start in zip(pids, before, strict=True)]
    ok = result["ok"] or 1
    return {
        "ok": result["ok"], "errors": result["errors"], "rate": result["rate"],
        "p99_ms": result["p99_ms"],
        "imprint_ms": round(spent[0] * 1000 / ok, 2),
        "proxy_ms": round(spent[1] * 1000 / ok, 2) if len(spent) > 1 else None,
        "client_ms": round(result["client_cpu_s"] * 1000 / ok, 2),
    }  # fmt: skip


def main() -> None:
    if shutil.which("haproxy") is None:
        raise SystemExit("needs haproxy (apt-get install haproxy)")
    arguments = [int(a) for a in sys.argv[1:]]
    concurrency, count, rounds = (arguments + [32, 2500, 2][len(arguments) :])[:3]
    workdir = Path(tempfile.mkdtemp(prefix="imprint-bench-proxy-"))
    manufacturer = Manufacturer()
    direct = ImprintServer(workdir, None, "direct", workers=2)
    front = free_port()
    behind = Behind(workdir, front)
    haproxy: subprocess.Popen[bytes] | None = None
    targets: list[Target] = []
    try:
        direct.start()
        behind.start()
        targets = [Target(direct, manufacturer), Target(behind, manufacturer)]
        crt, clients = _proxy_files(targets[1], behind, workdir)
        config = workdir / "haproxy.cfg"
        config.write_text(HAPROXY.format(port=front, crt=crt, clients=clients, backend=behind.port))
        with (workdir / "haproxy.log").open("wb") as log:
            haproxy = subprocess.Popen(["haproxy", "-db", "-f", str(config)], stdout=log,
                                       stderr=subprocess.STDOUT)  # fmt: skip
        time.sleep(TRUST_REFRESH_SECONDS + 1)  # every worker admits the enrollments' CAs
        rows = []
        for _ in range(rounds):
            for label, target, port, pids in (
                ("direct", targets[0], direct.port, [direct.pid]),
                ("haproxy", targets[1], front, [behind.pid, haproxy.pid]),
            ):
                start = os.getloadavg()[0]
                found = _measure(target, port, pids, concurrency, count)
                rows.append({"path": label, "concurrency": concurrency, **found,
                             "load_start": round(start, 2),
                             "load_end": round(os.getloadavg()[0], 2)})  # fmt: skip
                say(f"{label:8s} c{concurrency} " + " ".join(f"{k} {v}" for k, v in found.items()))
        started = datetime.now(UTC)
        RESULTS.mkdir(exist_ok=True)
        described = machine.describe()  # the host, its CPU and the commit measured
        stem = f"{started:%Y-%m-%d}-{described['host']}-proxy-{started:%H%M}"
        found = {"machine": described, "rows": rows}
        (RESULTS / f"{stem}.json").write_text(json.dumps(found, indent=2) + "\n")
        say(f"wrote bench/results/{stem}.json")
    finally:
        if haproxy is not None:
            haproxy.terminate()
            haproxy.wait(timeout=10)
        for target in targets:
            target.close()
        direct.stop()
        behind.stop()
        shutil.rmtree(workdir, ignore_errors=True)


if __name__ == "__main__":
    main()
