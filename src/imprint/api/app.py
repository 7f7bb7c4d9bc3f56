"""The ASGI application factory."""

from __future__ import annotations

import re

from fastapi import FastAPI

from imprint import __version__, console
from imprint.api.device_route import serve_device_routes_first
from imprint.api.middleware import (
    BodyLimitMiddleware,
    CaughtUpMiddleware,
    RequestLogMiddleware,
)
from imprint.api.openapi import install_openapi
from imprint.api.problems import install_problem_handlers
from imprint.api.routes import (
    api_keys,
    audit,
    ca,
    certificates,
    channels,
    client_cas,
    connector,
    deny_list,
    devices,
    enrollments,
    est,
    health,
    identity_csr,
    idprov,
    imports,
    midpoint,
    oauth,
    oauth_clients,
    ocsp,
    oob_secrets,
    orgs,
    provision,
    psk,
    registration_keys,
    relay,
    signup,
    thingspeak,
    thingspeak_reads,
    users,
    webhooks,
    whoami,
)
from imprint.runtime import Runtime
from imprint.store.cache import looker

__all__ = ["create_app"]


#: The bulk imports, whose bodies may reach ``server.max_upload_bytes``.
BULK_UPLOADS = re.compile(
    r"/api/v1/enrollments/[^/]+/oob-secrets:bulk|/console/enrollments/[^/]+/oob-secrets"
)


def create_app(runtime: Runtime) -> FastAPI:
    """Build the application around a prepared :class:`~imprint.runtime.Runtime`."""
    app = FastAPI(
        title="imprint",
        version=__version__,
        summary="Self-hosted IoT device provisioning and certificate authority",
        docs_url="/docs",
        redoc_url=None,
        openapi_url="/openapi.json",
        # FastAPI's own OpenTelemetry hooks, unused here (the request log and the
        # Prometheus metrics are imprint's): off, a request no longer asks the global
        # providers and the environment whether they are configured (3 µs a request).
        telemetry={"tracing": False, "metrics": False, "logs": False},
    )
    app.state.runtime = runtime
    install_problem_handlers(app)
    # A request is matched against the routers in this order, each scanned route by
    # route (about 10 µs a router), so the device plane comes first: a registration, an
    # EST enrollment or an OCSP answer no longer pays for the admin API's and the
    # console's routes (bench/README.md, step 6). No two modules' routes answer
    # one request (tests/integration/test_routing.py), so the order changes nothing else.
    app.include_router(provision.device_routes)
    app.include_router(certificates.device_routes)
    for module in (
        provision,
        certificates,
        est,
        ocsp,
        thingspeak,
        idprov,
        midpoint,
        connector,
        identity_csr,
        health,
        ca,
        client_cas,
        enrollments,
        devices,
        deny_list,
        oob_secrets,
        registration_keys,
        whoami,
        oauth,
        orgs,
        users,
        oauth_clients,
        audit,
        signup,
        channels,
        thingspeak_reads,
        relay,
        psk,
        api_keys,
        webhooks,
        imports,
    ):
        app.include_router(module.router)
    app.include_router(console.router)
    serve_device_routes_first(app, provision.device_routes, certificates.device_routes)
    install_openapi(app)
    server = runtime.settings.server
    app.add_middleware(
        BodyLimitMiddleware,
        limit=server.max_body_bytes,
        upload_limit=server.max_upload_bytes,
        uploads=BULK_UPLOADS,
    )
    app.add_middleware(CaughtUpMiddleware, look=looker(runtime.engine))
    app.add_middleware(RequestLogMiddleware, metrics=runtime.metrics)
    return app
