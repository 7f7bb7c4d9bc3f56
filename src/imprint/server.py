"""Run the HTTPS service with uvicorn: in this process, or in several worker processes
that share one port (``server.workers``)."""

from __future__ import annotations

import asyncio
import contextlib
import ctypes
import gc
import logging
import os
import signal
import socket
import ssl
import sys
import time
from collections.abc import Callable, Sequence
from types import FrameType
from typing import Any

import uvicorn

from imprint.api.app import create_app
from imprint.http_limits import HandshakeDeadlineLoop, limited_protocol
from imprint.leadership import BROKER_CRL, OUTBOX, WEBHOOKS
from imprint.runtime import Runtime, open_runtime
from imprint.settings import Settings
from imprint.store.cache import on_change
from imprint.store.db import Checkpointer
from imprint.tls import server_ssl_context

__all__ = [
    "ImprintServer",
    "bind_sockets",
    "build_server",
    "run_workers",
    "settle_heap",
    "ssl_context_for",
]

log = logging.getLogger(__name__)

#: How often the server looks for client CAs added outside it (seconds).
TRUST_REFRESH_SECONDS = 5.0
#: How often each server process delivers what is due in the outbox.
OUTBOX_SECONDS = 1.0
#: How often it resolves abandoned certificate reservations and purges old deliveries.
HOUSEKEEPING_SECONDS = 60.0


def ssl_context_for(runtime: Runtime) -> ssl.SSLContext:
    """The server's TLS context: it asks for client certificates (unless
    ``server.client_certificates`` is ``none``) and leaves judging them to the
    application (``imprint.api.identity.peer_certificate``)."""
    return server_ssl_context(
        certfile=runtime.server_certfile,
        keyfile=runtime.server_keyfile,
        client_certificates=runtime.settings.server.client_certificates == "optional",
    )


class _Config(uvicorn.Config):
    """uvicorn's configuration, running on an event loop that gives TLS handshakes a
    deadline (``server.limits.handshake_timeout_seconds``)."""

    def __init__(self, *args: Any, handshake_timeout: float, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.handshake_timeout = handshake_timeout

    def get_loop_factory(self) -> Callable[[], asyncio.AbstractEventLoop] | None:
        timeout = self.handshake_timeout

        def new_loop() -> asyncio.AbstractEventLoop:
            loop = HandshakeDeadlineLoop()
            loop.handshake_timeout = timeout
            return loop

        return new_loop


class ImprintServer(uvicorn.Server):
    """uvicorn's server, plus the DNS-SD announcement while it listens (when enabled) and
    the refresh of the MQTT broker's CRL (with ``mqtt.enabled``). With several worker
    processes only the primary one announces and refreshes."""

    def __init__(self, config: uvicorn.Config, runtime: Runtime, *, primary: bool = True) -> None:
        super().__init__(config)
        self._runtime = runtime
        self._primary = primary
        self._advertiser: Any = None
        self._trust_refresh: asyncio.Task[None] | None = None
        self._broker_refresh: asyncio.Task[None] | None = None
        self._outbox_rounds: asyncio.Task[None] | None = None
        self._webhook_rounds: asyncio.Task[None] | None = None
        self._checkpointer: Checkpointer | None = None

    async def _deliver_outbox(self) -> None:
        """Deliver the outbox: what a failed prompt delivery left for a retry, and what a
        process that died after its commit left undelivered. Also, once a minute, resolve
        reservations of requests that died before signing and forget old deliveries.
        On PostgreSQL one node at a time does this (``imprint.leadership``)."""
        runtime = self._runtime
        housekeeping = 0.0
        while True:
            try:
                leads = await asyncio.to_thread(runtime.leadership.leads, OUTBOX)
                if not leads:
                    housekeeping = 0.0  # due at once when this node takes over
                elif time.monotonic() >= housekeeping:
                    await asyncio.to_thread(runtime.resolve_abandoned)
                    await asyncio.to_thread(runtime.outbox.purge)
                    housekeeping = time.monotonic() + HOUSEKEEPING_SECONDS
                if leads:
                    await asyncio.to_thread(runtime.outbox.deliver)
            except Exception:  # a database hiccup must not stop the loop
                log.warning("could not deliver the outbox", exc_info=True)
            await asyncio.sleep(OUTBOX_SECONDS)

    async def _deliver_webhooks(self) -> None:
        """Deliver webhooks (the outbox's background kind) every round, and look for
        certificates crossing an expiry threshold every ``webhooks.expiry_scan_seconds``:
        on its own task and thread, so a slow receiver holds up neither a request nor
        the broker's revocations. On PostgreSQL one node at a time does this."""
        runtime = self._runtime
        period = float(runtime.settings.webhooks.expiry_scan_seconds)
        scan_due = 0.0
        while True:
            try:
                leads = await asyncio.to_thread(runtime.leadership.leads, WEBHOOKS)
                if not leads:
                    scan_due = 0.0
                else:
                    await asyncio.to_thread(runtime.outbox.deliver, background=True)
                    if time.monotonic() >= scan_due:
                        await asyncio.to_thread(runtime.expiry_watch.scan)
                        scan_due = time.monotonic() + period
            except Exception:  # a database hiccup must not stop the loop
                log.warning("could not deliver webhooks", exc_info=True)
            await asyncio.sleep(OUTBOX_SECONDS)

    async def _refresh_trust(self) -> None:
        """Keep the CAs client certificates are checked against in step with enrollments
        made elsewhere (the CLI, a peer)."""
        # A change of enrollments or client CAs made by another process (a worker, a
        # node, the CLI) is heard of (imprint.store.cache.on_change): refresh at once,
        # not at the next round, so each worker admits a new manufacturer's devices
        # within milliseconds of the others.
        wake = asyncio.Event()
        loop = asyncio.get_running_loop()

        def changed() -> None:
            with contextlib.suppress(RuntimeError):  # the loop has stopped
                loop.call_soon_threadsafe(wake.set)

        for kind in ("enrollments", "client_cas"):
            on_change(self._runtime.engine, kind, changed)
        while True:
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(wake.wait(), TRUST_REFRESH_SECONDS)
            wake.clear()
            try:
                added = await asyncio.to_thread(self._runtime.refresh_client_trust)
            except Exception:  # a database hiccup must not stop the loop
                log.warning("could not refresh the client CAs from the database", exc_info=True)
                continue
            if added:
                log.info("client CAs learned from the database", extra={"count": added})

    async def _refresh_broker_files(self) -> None:
        """Re-sign the MQTT broker's CRL well before it expires (an expired CRL locks every
        device out of Mosquitto): every quarter of its validity, at most hourly."""
        from imprint.mqtt.broker import BrokerFiles, BrokerSync

        settings = self._runtime.settings
        files = BrokerFiles(settings.mqtt_dir())
        sync = BrokerSync(settings.mqtt, files, self._runtime.authority, self._runtime.clock)
        leadership = self._runtime.leadership
        period = min(settings.ca.crl_validity_hours * 900.0, 3600.0)
        due = 0.0
        while True:
            # Asked every round, so a node takes over within a round of the leader's death.
            leads = await asyncio.to_thread(leadership.leads, BROKER_CRL)
            if leads and files.config.is_file() and time.monotonic() >= due:
                try:
                    await asyncio.to_thread(sync.sync)
                    due = time.monotonic() + period
                except Exception:
                    log.warning("could not refresh the MQTT broker's CRL and ACL", exc_info=True)
            elif not leads:
                due = 0.0
            await asyncio.sleep(OUTBOX_SECONDS)

    async def startup(self, sockets: list[socket.socket] | None = None) -> None:
        await super().startup(sockets)
        self._checkpointer = Checkpointer.start(self._runtime.engine)  # SQLite only
        self._outbox_rounds = asyncio.create_task(self._deliver_outbox())
        self._webhook_rounds = asyncio.create_task(self._deliver_webhooks())
        listening = self._runtime.settings.server
        if listening.tls and listening.client_certificates == "optional":
            self._trust_refresh = asyncio.create_task(self._refresh_trust())
        if not self._primary:
            return
        if self._runtime.settings.mqtt.enabled:
            self._broker_refresh = asyncio.create_task(self._refresh_broker_files())
        discovery = self._runtime.settings.discovery
        if not discovery.enabled or self.should_exit:
            return
        from imprint.discovery import Advertiser

        port = self._runtime.settings.server.port
        for server in self.servers:
            for bound in server.sockets:
                port = bound.getsockname()[1]
        self._advertiser = Advertiser(discovery, self._runtime.settings.server.base_url())
        await self._advertiser.start(port)

    async def shutdown(self, sockets: list[socket.socket] | None = None) -> None:
        if self._outbox_rounds is not None:
            self._outbox_rounds.cancel()
            self._outbox_rounds = None
        if self._webhook_rounds is not None:
            self._webhook_rounds.cancel()
            self._webhook_rounds = None
        if self._trust_refresh is not None:
            self._trust_refresh.cancel()
            self._trust_refresh = None
        if self._broker_refresh is not None:
            self._broker_refresh.cancel()
            self._broker_refresh = None
        if self._advertiser is not None:
            advertiser, self._advertiser = self._advertiser, None
            await advertiser.stop()
        await super().shutdown(sockets)
        if self._checkpointer is not None:
            checkpointer, self._checkpointer = self._checkpointer, None
            await asyncio.to_thread(checkpointer.stop)


def build_server(runtime: Runtime, *, primary: bool = True) -> uvicorn.Server:
    """A uvicorn server for the runtime.

    Run it with ``server.run()``, or ``server.run(sockets=[sock])`` on a socket that is
    already bound (tests bind port 0; worker processes share the supervisor's).
    """
    settings = runtime.settings
    context = ssl_context_for(runtime) if settings.server.tls else None

    def context_factory(_config: Any, _default: Any) -> ssl.SSLContext:
        assert context is not None
        return context

    server = settings.server
    limits = server.limits
    headers = []
    if context is not None and server.hsts_max_age_seconds > 0:
        headers.append(("strict-transport-security", f"max-age={server.hsts_max_age_seconds}"))
    config = _Config(
        create_app(runtime),
        host=server.host,
        port=server.port,
        http=limited_protocol(limits, server.trusted_proxies),
        ws="none",
        lifespan="off",
        proxy_headers=False,
        server_header=False,
        date_header=True,
        headers=headers,
        access_log=False,
        log_config=None,
        timeout_keep_alive=limits.keep_alive_seconds,
        ssl_context_factory=context_factory if context is not None else None,
        handshake_timeout=limits.handshake_timeout_seconds,
    )
    return ImprintServer(config, runtime, primary=primary)


# Worker processes ------------------------------------------------------------------------
#
# One Python process serves on one core at a time (the GIL), so ``server.workers`` forks
# that many processes after the first-start work is done. Each accepts on a socket of its
# own, bound here on the one port (``SO_REUSEPORT``: the kernel spreads the connections),
# and opens its own runtime (database pool, CA key, caches). The supervisor starts a new
# worker when one dies, on the dead one's socket, and stops them all on SIGTERM or SIGINT.

#: A worker that exits sooner than this after its start did not start at all.
_STARTUP_SECONDS = 5.0


#: The collector's young generation, in container objects allocated and not yet freed:
#: above what the requests in flight hold at once (bench/README.md, step 45).
YOUNG_GENERATION = 10_000


def settle_heap() -> None:
    """Set the garbage collector for serving, once the server is ready to run.

    - **Start-up's objects kept out of its passes.** Modules, the application and the
      runtime are about 200,000 objects it tracks. A full collection walks every one;
      with these in the heap each took 110-150 ms in which the event loop answered
      nothing, a few times a minute under load. Only for a process that is about to
      serve until it ends: what is frozen is never collected.
    - **A young generation larger than the requests in flight.** Python collects the
      youngest generation after 700 net allocations of container objects, which 16
      requests in flight reach together every 16 calls or so: each such pass walked
      objects still in use, about 40 µs of every x509 registration and 15 µs of every
      CSR signing, and freed next to nothing (their objects go by reference counting).
      At :data:`YOUNG_GENERATION` a pass comes when garbage does accumulate, which it
      barely does: at most one came in 3,000 registrations at 16 or 64 in flight. The older
      generations keep their thresholds.
    """
    gc.collect()
    gc.freeze()
    _, middle, old = gc.get_threshold()
    gc.set_threshold(YOUNG_GENERATION, middle, old)


def bind_sockets(host: str, port: int, count: int) -> list[socket.socket]:
    """``count`` listening TCP sockets on one address, one for each worker process.

    They share the port with ``SO_REUSEPORT``, so the kernel spreads new connections over
    them, hence over the workers, by a hash of each connection's addresses. On one shared
    socket whichever worker woke first accepted every connection then waiting: the 32
    connections the benchmark opens at once all went to one of two workers, which served
    the whole load while the other idled (bench/README.md, step 36). The port is first
    bound without ``SO_REUSEPORT``, so that a port another server listens on is refused
    here as before, even when that server is another imprint with its sockets shared
    (one that binds in the moment between that check and these sockets would still
    share the port). Where the kernel does not spread connections so (not Linux), or has
    no ``SO_REUSEPORT``, the workers share one socket as before: the list holds it
    ``count`` times.

    Raises:
        OSError: the address cannot be bound.
    """
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    if not sys.platform.startswith("linux") or not hasattr(socket, "SO_REUSEPORT"):
        shared = socket.socket(family, socket.SOCK_STREAM)
        try:
            shared.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
            shared.bind((host, port))
            shared.listen(2048)
        except OSError:
            shared.close()
            raise
        return [shared] * count
    with socket.socket(family, socket.SOCK_STREAM) as probe:
        probe.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        probe.bind((host, port))  # EADDRINUSE while anything listens there
        port = probe.getsockname()[1]  # the port the system chose for 0
    sockets: list[socket.socket] = []
    try:
        for _ in range(count):
            sock = socket.socket(family, socket.SOCK_STREAM)
            sockets.append(sock)
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEPORT, 1)
            sock.bind((host, port))
            sock.listen(2048)
    except OSError:
        for sock in sockets:
            sock.close()
        raise
    return sockets


def _worker(settings: Settings, sock: socket.socket, primary: bool) -> int:
    runtime = open_runtime(settings, migrate=False)
    try:
        server = build_server(runtime, primary=primary)
        settle_heap()
        server.run(sockets=[sock])
    finally:
        runtime.close()
    return 0 if server.started else 1


#: What a worker process runs: (settings, the listening socket, primary?) -> exit status.
Worker = Callable[[Settings, socket.socket, bool], int]


def _die_with(supervisor: int) -> None:
    """Have the kernel kill this worker when its supervisor dies (Linux), as a crash of
    ``imprint serve`` takes all of it down: no orphan keeps the port or the database."""
    with contextlib.suppress(OSError, AttributeError):
        libc = ctypes.CDLL(None, use_errno=True)
        libc.prctl(1, signal.SIGKILL)  # PR_SET_PDEATHSIG
    if os.getppid() != supervisor:  # it died before the line above
        os._exit(1)


def _fork_worker(
    settings: Settings, sockets: Sequence[socket.socket], index: int, worker: Worker
) -> int:
    supervisor = os.getpid()
    pid = os.fork()
    if pid != 0:
        return pid
    _die_with(supervisor)
    sock = sockets[index]
    for other in sockets:  # the other workers' sockets: not this one's to hold open
        if other is not sock:
            other.close()
    # The child: the supervisor's signal handlers are not ours (uvicorn installs its own).
    signal.signal(signal.SIGTERM, signal.SIG_DFL)
    signal.signal(signal.SIGINT, signal.SIG_DFL)
    code = 1
    try:
        code = worker(settings, sock, index == 0)
    except BaseException:
        log.exception("worker %d failed", index)
    finally:
        logging.shutdown()
        os._exit(code)


def run_workers(
    settings: Settings, sockets: Sequence[socket.socket], *, worker: Worker = _worker
) -> int:
    """Serve from one worker process for each of ``sockets`` (:func:`bind_sockets`), each
    on its own, until SIGTERM or SIGINT. A worker that dies is replaced on the same
    socket, where the connections that came meanwhile wait for it.

    ``worker`` is what each process runs (the HTTPS server; the tests give their own).
    Returns the exit status: 0 after a requested stop, 1 when a worker could not start.
    """
    count = len(sockets)
    workers: dict[int, tuple[int, float]] = {}  # pid -> (index, started at)
    stopping = False
    status = 0

    def stop(_signum: int, _frame: FrameType | None) -> None:
        nonlocal stopping
        stopping = True
        for pid in workers:
            with contextlib.suppress(ProcessLookupError):
                os.kill(pid, signal.SIGTERM)

    previous = {sig: signal.signal(sig, stop) for sig in (signal.SIGTERM, signal.SIGINT)}
    try:
        for index in range(count):
            workers[_fork_worker(settings, sockets, index, worker)] = (
                index,
                time.monotonic(),
            )
        log.info("workers started", extra={"count": count, "pids": sorted(workers)})
        while workers:
            try:
                pid, wait_status = os.wait()
            except ChildProcessError:
                break
            index, started = workers.pop(pid, (-1, 0.0))
            if index < 0 or stopping:
                continue
            code = os.waitstatus_to_exitcode(wait_status)
            if time.monotonic() - started < _STARTUP_SECONDS:
                log.error("worker %d exited at start (status %d); stopping", index, code)
                status = 1
                stop(signal.SIGTERM, None)
                continue
            log.warning("worker %d exited (status %d); starting another", index, code)
            workers[_fork_worker(settings, sockets, index, worker)] = (
                index,
                time.monotonic(),
            )
    finally:
        for sig, handler in previous.items():
            signal.signal(sig, handler)
    return status
