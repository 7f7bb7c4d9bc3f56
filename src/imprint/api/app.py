"""The ASGI application factory."""

from __future__ import annotations

import re

from fastapi import APIRouter, FastAPI

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

__all__ = ["ROUTERS", "create_app"]


#: The bulk imports, whose bodies may reach ``server.max_upload_bytes``.
BULK_UPLOADS = re.compile(
    r"/api/v1/enrollments/[^/]+/oob-secrets:bulk|/console/enrollments/[^/]+/oob-secrets"
)


#: The routers whose routes the application serves, in the order a request is matched
#: against them, route by route, so the device plane comes first: a registration, an EST
#: enrollment or an OCSP answer does not pay for the admin API's and the console's
#: routes (bench/README.md, step 6). No two routers' routes answer one request
#: (tests/integration/test_routing.py), so the order changes nothing else.
#:
#: The application takes the routes themselves, as their modules declared them (with
#: their router's prefix, tags, route class and dependencies), instead of
#: ``include_router``, which would have FastAPI build every route again for each
#: application on the first request that reaches its router: 150-340 ms of CPU and
#: about 2.5 MB in each process (and in each test's application), and a slow first
#: answer after every start (bench/README.md, step 44). No router here adds anything at
#: inclusion (the console's router includes its pages' routers under ``/console``
#: itself: FastAPI builds those once a process). Given up: ``app.dependency_overrides``,
#: which reaches only routes built for the application.
ROUTERS: tuple[APIRouter, ...] = (
    provision.device_routes,
    certificates.device_routes,
    provision.router,
    certificates.router,
    est.router,
    ocsp.router,
    thingspeak.router,
    idprov.router,
    midpoint.router,
    connector.router,
    identity_csr.router,
    health.router,
    ca.router,
    client_cas.router,
    enrollments.router,
    devices.router,
    deny_list.router,
    oob_secrets.router,
    registration_keys.router,
    whoami.router,
    oauth.router,
    orgs.router,
    users.router,
    oauth_clients.router,
    audit.router,
    signup.router,
    channels.router,
    thingspeak_reads.router,
    relay.router,
    psk.router,
    api_keys.router,
    webhooks.router,
    imports.router,
    console.router,
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
    for router in ROUTERS:
        app.router.routes.extend(router.routes)
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
