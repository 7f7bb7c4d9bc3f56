"""Nodes behind HAProxy: the x509 (signed) rate with 1, 2 and 3 ``imprint serve`` nodes on
one PostgreSQL database, HAProxy in TCP mode (TLS passthrough) in front, all on this box.

Each node is one process (no workers). The load generator connects to HAProxy with
keep-alive; HAProxy spreads the connections round-robin. "cpu ms" is the CPU of every
node per registration; HAProxy's own CPU is reported apart (``proxy_cpu_ms_per_reg``).
On two cores the nodes, PostgreSQL, HAProxy and the load generator share the CPU, so the
rate cannot grow linearly with the nodes: the section shows what a node costs and how
much a second and third add here, not the capacity of several machines.

``.venv/bin/python -m bench.cluster`` runs this section alone and prints its rows.
"""

from __future__ import annotations

import base64
import json
import secrets
import shutil
import subprocess
import sys
import tempfile
import time
import uuid
from pathlib import Path
from typing import Any

from bench import report
from bench.servers import ImprintServer, Postgres, cpu_seconds, free_port

HAPROXY = """\
global
    maxconn 4000
defaults
    mode tcp
    timeout connect 2s
    timeout client 60s
    timeout server 60s
frontend imprint
    bind 127.0.0.1:{port}
    default_backend nodes
backend nodes
    balance roundrobin
    option httpchk
    http-check send meth GET uri /readyz
    default-server check check-ssl verify none inter 2s
{servers}
"""


class Node(ImprintServer):
    """One node: the cluster's public address, key-encryption key and CA."""

    def __init__(self, workdir: Path, url: str, label: str, shared: dict[str, str]) -> None:
        super().__init__(workdir, url, label)
        self._shared = shared

    def environment(self) -> dict[str, str]:
        return super().environment() | self._shared


class Front:
    """What :class:`bench.run.Target` needs of a server, pointing at HAProxy."""

    def __init__(self, port: int, first: Node) -> None:
        self.port = port
        self.base_url = f"https://127.0.0.1:{port}"
        self.root_cert = first.root_cert
        self.admin_token = first.admin_token


def bench_nodes(postgres: Postgres, workdir: Path, manufacturer: Any, floors: dict[str, float],
                results: dict[str, Any], count: int, max_seconds: float,
                concurrency: int = 32) -> None:  # fmt: skip
    from bench.run import Target, _row, run_load, say

    if shutil.which("haproxy") is None:
        say("nodes: haproxy not installed (apt-get install haproxy); skipped")
        return
    for size in (1, 2, 3):
        url = postgres.create_database(f"bench_{uuid.uuid4().hex[:8]}")
        proxy_port = free_port()
        shared = {
            "IMPRINT_SERVER__PUBLIC_URL": f"https://127.0.0.1:{proxy_port}",
            "IMPRINT_SECRETS__KEY": base64.b64encode(secrets.token_bytes(32)).decode(),
            "IMPRINT_SERVER__WORKERS": "1",  # one process per node, as the table says
        }
        nodes = [Node(workdir, url, f"n{size}-{i}", shared) for i in range(size)]
        proxy: subprocess.Popen[bytes] | None = None
        target = None
        try:
            say(f"nodes {size}: starting imprint")
            nodes[0].start()
            for node in nodes[1:]:
                node.data_dir.mkdir(parents=True, exist_ok=True)
                shutil.copytree(nodes[0].data_dir / "ca", node.data_dir / "ca")
                node.start()
            config = workdir / f"haproxy-{size}.cfg"
            servers = "\n".join(
                f"    server n{i} 127.0.0.1:{node.port}" for i, node in enumerate(nodes)
            )
            config.write_text(HAPROXY.format(port=proxy_port, servers=servers))
            proxy = subprocess.Popen(
                ["haproxy", "-db", "-f", str(config)],
                stdout=subprocess.DEVNULL,
                stderr=subprocess.DEVNULL,
            )
            time.sleep(1)
            target = Target(Front(proxy_port, nodes[0]), manufacturer)  # type: ignore[arg-type]
            run_load(target.job("x509-signed", 200, concurrency, 5), nodes[0].pid)  # warm up
            job = target.job("x509-signed", count, concurrency, max_seconds)
            before = [cpu_seconds(node.pid) for node in nodes]
            proxy_before = cpu_seconds(proxy.pid)
            result = run_load(job, nodes[0].pid)
            spent = sum(cpu_seconds(node.pid) - b for node, b in zip(nodes, before, strict=True))
            proxy_spent = cpu_seconds(proxy.pid) - proxy_before
            ok = result["ok"]
            result["server_cpu_s"] = round(spent, 2)
            result["server_cpu_ms_per_reg"] = round(spent * 1000 / ok, 3) if ok else None
            result["proxy_cpu_ms_per_reg"] = round(proxy_spent * 1000 / ok, 3) if ok else None
            row = _row(f"nodes {size}", "postgresql", "x509-signed", job, result,
                       floors.get("x509-signed"))  # fmt: skip
            results["runs"].append(row)
            say(report.line(row) + f" (haproxy {result['proxy_cpu_ms_per_reg']} ms/reg)")
        finally:
            if target is not None:
                target.close()
            if proxy is not None:
                proxy.terminate()
                proxy.wait(timeout=10)
            for node in nodes:
                node.stop()


def main() -> None:
    from bench import floor
    from bench.run import Manufacturer

    quick = "--quick" in sys.argv
    floors = floor.floors(floor.primitives(True))
    results: dict[str, Any] = {"runs": []}
    workdir = Path(tempfile.mkdtemp(prefix="imprint-bench-nodes-"))
    postgres = Postgres()
    postgres.start()
    try:
        bench_nodes(postgres, workdir, Manufacturer(), floors, results,
                    count=300 if quick else 2500, max_seconds=5 if quick else 10)  # fmt: skip
    finally:
        postgres.stop()
        shutil.rmtree(workdir, ignore_errors=True)
    print(json.dumps(results["runs"], indent=2))


if __name__ == "__main__":
    main()
