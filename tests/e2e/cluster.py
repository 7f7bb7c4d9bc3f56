"""Several real ``imprint serve`` nodes on one PostgreSQL database behind a real HAProxy
(TLS passthrough), on 127.0.0.1. Shared by tests/e2e/test_cluster.py and the bench."""

from __future__ import annotations

import base64
import os
import secrets
import signal
import subprocess
import time
from collections.abc import Iterator
from contextlib import ExitStack, contextmanager
from dataclasses import dataclass, field
from pathlib import Path

import httpx

from tests.e2e.conftest import IMPRINT, clean_env, stop, trusting

HAPROXY_CONFIG = """\
global
    maxconn 2000

defaults
    mode tcp
    timeout connect 2s
    timeout client 60s
    timeout server 60s
    retries 3
    option redispatch

frontend imprint
    bind 127.0.0.1:{port}
    default_backend nodes

backend nodes
    balance roundrobin
    option httpchk
    http-check send meth GET uri /readyz
    http-check expect status 200
    default-server check check-ssl verify none inter 500ms fall 2 rise 2
    default-server on-marked-down shutdown-sessions
{servers}
"""


def haproxy_config(port: int, nodes: dict[str, int]) -> str:
    servers = "\n".join(f"    server {name} 127.0.0.1:{p}" for name, p in nodes.items())
    return HAPROXY_CONFIG.format(port=port, servers=servers)


@dataclass
class Node:
    name: str
    port: int
    data_dir: Path
    process: subprocess.Popen[str]

    @property
    def url(self) -> str:
        return f"https://127.0.0.1:{self.port}"


@dataclass
class Cluster:
    workdir: Path
    database_url: str
    proxy_port: int
    env: dict[str, str]
    nodes: dict[str, Node] = field(default_factory=dict)
    proxy: subprocess.Popen[str] | None = None

    @property
    def url(self) -> str:
        return f"https://127.0.0.1:{self.proxy_port}"

    @property
    def root(self) -> Path:
        return next(iter(self.nodes.values())).data_dir / "ca" / "root.crt"

    def admin_token(self) -> str:
        return (next(iter(self.nodes.values())).data_dir / "admin-token").read_text().strip()

    def client(self, url: str | None = None, **kwargs: object) -> httpx.Client:
        return httpx.Client(
            base_url=url or self.url, verify=trusting(self.root), timeout=30, **kwargs
        )  # type: ignore[arg-type]

    def admin(self, url: str | None = None) -> httpx.Client:
        return self.client(url, headers={"Authorization": f"Bearer {self.admin_token()}"})


def _ready(url: str, root: Path) -> bool:
    try:
        return httpx.get(f"{url}/readyz", verify=trusting(root), timeout=2).status_code == 200
    except (httpx.HTTPError, OSError):
        return False


def _wait(condition: object, what: str, seconds: float) -> None:
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        if condition():  # type: ignore[operator]
            return
        time.sleep(0.1)
    raise AssertionError(f"timed out waiting for {what}")


@contextmanager
def running_cluster(
    workdir: Path,
    database_url: str,
    ports: dict[str, int],
    proxy_port: int,
    per_node: dict[str, dict[str, str]] | None = None,
    **extra_env: str,
) -> Iterator[Cluster]:
    """Start the nodes one after another (the first makes the CA and the admin key; the
    first started leads the background duties), then HAProxy in front of them; stop
    everything on exit. ``per_node`` adds environment variables to one node's."""
    env = {
        "IMPRINT_DATABASE__URL": database_url,
        "IMPRINT_SERVER__HOST": "127.0.0.1",
        # One public address for every node: it is in the CRL distribution points and the
        # audience of signed requests.
        "IMPRINT_SERVER__PUBLIC_URL": f"https://127.0.0.1:{proxy_port}",
        "IMPRINT_SECRETS__KEY": base64.b64encode(secrets.token_bytes(32)).decode(),
        "IMPRINT_CA__PASSPHRASE": "cluster-passphrase",
        # One process per node (PostgreSQL would start one per core): a node killed is
        # one process gone, and the nodes share this machine's cores.
        "IMPRINT_SERVER__WORKERS": "1",
        **extra_env,
    }
    cluster = Cluster(workdir, database_url, proxy_port, env)
    with ExitStack() as stack:
        # The first node makes the CA and the admin key; the others start together.
        names = list(ports)
        for batch in (names[:1], names[1:]):
            started = [spawn_node(cluster, n, ports[n], (per_node or {}).get(n)) for n in batch]
            for node in started:
                stack.callback(stop, node.process, signal.SIGTERM, 20)
                cluster.nodes[node.name] = node
            for node in started:
                wait_for_node(cluster, node)
        config = workdir / "haproxy.cfg"
        config.write_text(haproxy_config(proxy_port, ports))
        with (workdir / "haproxy.log").open("w") as out:
            proxy = subprocess.Popen(
                ["haproxy", "-db", "-f", str(config)], stdout=out, stderr=subprocess.STDOUT,
                text=True,
            )  # fmt: skip
        cluster.proxy = proxy
        stack.callback(stop, proxy, signal.SIGTERM, 10)
        _wait(lambda: _ready(cluster.url, cluster.root), "HAProxy to answer", 30)
        yield cluster


def spawn_node(cluster: Cluster, name: str, port: int, own: dict[str, str] | None = None) -> Node:
    """Start ``imprint serve`` for one node (not waiting for it to answer)."""
    data_dir = cluster.workdir / name
    node_env = clean_env(data_dir, IMPRINT_SERVER__PORT=str(port), **{**cluster.env, **(own or {})})
    if cluster.nodes and not cluster.env.get("IMPRINT_CA__PKCS11__LIBRARY"):
        # Keys in files: every node gets a copy of the first node's CA directory.
        source = next(iter(cluster.nodes.values())).data_dir / "ca"
        subprocess.run(["cp", "-a", str(source), str(data_dir / "ca")], check=True)
    data_dir.mkdir(parents=True, exist_ok=True)
    with (cluster.workdir / f"{name}.log").open("a") as out:
        process = subprocess.Popen(
            [str(IMPRINT), "serve"], cwd=cluster.workdir, env=node_env, stdout=out,
            stderr=subprocess.STDOUT, text=True,
        )  # fmt: skip
    return Node(name, port, data_dir, process)


def wait_for_node(cluster: Cluster, node: Node) -> None:
    root = node.data_dir / "ca" / "root.crt"
    process = node.process
    _wait(
        lambda: (
            (process.poll() is None and root.exists() and _ready(node.url, root))
            or process.poll() is not None
        ),
        f"node {node.name} to start",
        120,
    )
    assert process.poll() is None, (cluster.workdir / f"{node.name}.log").read_text()[-3000:]


def kill_node(node: Node) -> None:
    """SIGKILL, as a crash or a pulled plug would."""
    os.kill(node.process.pid, signal.SIGKILL)
    node.process.wait(timeout=10)
