"""Prometheus metrics, one registry per application instance."""

from __future__ import annotations

import gc
import os
from typing import Any

from prometheus_client import (
    CollectorRegistry,
    Counter,
    Gauge,
    GCCollector,
    Histogram,
    Info,
    generate_latest,
)
from prometheus_client.exposition import CONTENT_TYPE_LATEST

__all__ = ["CONTENT_TYPE_LATEST", "Metrics"]


class Metrics:
    """Counters and histograms imprint exports at ``/metrics``.

    Also implements :class:`imprint.pki.authority.AuthorityEvents` and
    :class:`imprint.store.db.GroupObserver`.
    """

    def __init__(self) -> None:
        self.registry = CollectorRegistry()
        self.requests = Counter(
            "imprint_http_requests",
            "HTTP requests served",
            ["method", "route", "status"],
            registry=self.registry,
        )
        self.latency = Histogram(
            "imprint_http_request_duration_seconds",
            "Time to serve an HTTP request",
            ["method", "route"],
            buckets=(0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5),
            registry=self.registry,
        )
        # (method, route, status) -> (counter, histogram) children: ``labels()`` checks
        # and locks on every call, a dict lookup does not. Routes are templates, so the
        # keys are as few as the label sets prometheus keeps anyway.
        self._request_children: dict[tuple[str, str, int], tuple[Any, Any]] = {}
        self.issued = Counter(
            "imprint_certificates_issued",
            "Certificates issued",
            ["profile"],
            registry=self.registry,
        )
        self.revoked = Counter(
            "imprint_certificates_revoked",
            "Certificates revoked",
            ["reason"],
            registry=self.registry,
        )
        self.client_certificate_refusals = Counter(
            "imprint_client_certificate_refusals",
            "Client certificates refused by the application, by problem code",
            ["code"],
            registry=self.registry,
        )
        self.ocsp = Counter(
            "imprint_ocsp_responses",
            "OCSP responses by what they said, and whether a kept response was reused",
            ["outcome", "cached"],
            registry=self.registry,
        )
        self.est = Counter(
            "imprint_est_requests",
            "EST requests by operation and HTTP status",
            ["operation", "status"],
            registry=self.registry,
        )
        # SQLite's commit groups (imprint.store.db): how many requests' writes commit
        # together, how long a group waits for the writer lock another worker or the
        # CLI holds, and how long it holds it (the longest the others' writes can wait).
        self.group_members = Histogram(
            "imprint_commit_group_members",
            "Requests whose writes committed together, per commit group (SQLite)",
            buckets=(1, 2, 4, 8, 16, 32),
            registry=self.registry,
        )
        self.writer_lock_wait = Histogram(
            "imprint_writer_lock_wait_seconds",
            "Time a commit group waited for the writer lock held by another process or "
            "thread (SQLite; groups that found it free are not counted)",
            buckets=(0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 5.0),
            registry=self.registry,
        )
        self.writer_lock_held = Histogram(
            "imprint_writer_lock_held_seconds",
            "Time a commit group held the writer lock, to the end of its commit (SQLite)",
            buckets=(0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 1.0),
            registry=self.registry,
        )
        # The process's garbage collector: collections by generation, and the objects
        # start-up made that ``imprint serve`` keeps out of them (``server.settle_heap``).
        GCCollector(registry=self.registry)
        Gauge(
            "imprint_gc_frozen_objects",
            "Objects kept out of the garbage collector's passes since the server started",
            registry=self.registry,
        ).set_function(gc.get_freeze_count)
        # Which process answered: with several workers, whichever took the connection.
        Info("imprint_process", "The process serving these metrics", registry=self.registry).info(
            {"pid": str(os.getpid())}
        )

    def client_certificate_refused(self, code: str) -> None:
        self.client_certificate_refusals.labels(code=code).inc()

    def ocsp_answered(self, outcome: str, cached: bool) -> None:
        self.ocsp.labels(outcome=outcome, cached="true" if cached else "false").inc()

    def est_answered(self, operation: str, status: int) -> None:
        self.est.labels(operation=operation, status=str(status)).inc()

    def certificate_issued(self, profile: str) -> None:
        self.issued.labels(profile=profile).inc()

    def certificate_revoked(self, reason: str) -> None:
        self.revoked.labels(reason=reason).inc()

    def group_committed(self, members: int, lock_wait: float | None, held: float) -> None:
        """Implements :class:`imprint.store.db.GroupObserver`."""
        self.group_members.observe(members)
        if lock_wait is not None:
            self.writer_lock_wait.observe(lock_wait)
        self.writer_lock_held.observe(held)

    def observe_request(self, method: str, route: str, status: int, seconds: float) -> None:
        key = (method, route, status)
        children = self._request_children.get(key)
        if children is None:
            children = (
                self.requests.labels(method=method, route=route, status=str(status)),
                self.latency.labels(method=method, route=route),
            )
            self._request_children[key] = children
        children[0].inc()
        children[1].observe(seconds)

    def render(self) -> bytes:
        return generate_latest(self.registry)
