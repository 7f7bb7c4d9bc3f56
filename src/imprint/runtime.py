"""Start-up: everything the service and the CLI need, prepared in one place.

:func:`prepare` is idempotent. On a first start it creates the data directory, the
database schema, the CA (with a generated passphrase file when none is configured),
the HTTPS server certificate and the first admin API key.
"""

from __future__ import annotations

import functools
import hashlib
import os
from collections.abc import Sequence
from contextlib import AbstractContextManager
from dataclasses import dataclass, field
from datetime import timedelta
from pathlib import Path
from typing import TYPE_CHECKING

from cryptography import x509
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec
from sqlalchemy.engine import Engine

from imprint.attestation.base import Attestor
from imprint.attestation.registry import build_attestors
from imprint.attestation.renewal import RenewalAuthorizer
from imprint.attestation.x509 import MAX_ENROLLMENTS, manufacturer_certificates
from imprint.audit import AuditEntry
from imprint.auth.api_keys import create_api_key
from imprint.auth.bearer import BearerAuthenticator
from imprint.auth.clients import COMMAND_LINE_CLIENT, ClientRegistry, configured_clients
from imprint.auth.oidc import ExternalProvider
from imprint.auth.tokens import TokenService
from imprint.client_trust import ClientTrust
from imprint.clock import Clock, SystemClock
from imprint.errors import CANotInitialized, ConfigurationError
from imprint.identities import ClientIdentities, IdentityIssuer
from imprint.layout import DataLayout
from imprint.leadership import Leadership
from imprint.logs import get_logger
from imprint.metrics import Metrics
from imprint.outbox import Outbox
from imprint.pki.authority import CERTIFICATE_CHANGED, CertificateAuthority, IssuanceRequest
from imprint.pki.material import init_ca, load_ca
from imprint.pki.ocsp import OcspResponder
from imprint.pki.profiles import Publication, parse_sans
from imprint.provisioning.enrollments import Enrollment, Mechanism
from imprint.provisioning.hub import HubTokenSource
from imprint.provisioning.ratelimit import AttemptLimiter, Rule, Space
from imprint.provisioning.service import Provisioner
from imprint.sealing import SecretBox, load_secret_box
from imprint.settings import Settings
from imprint.store.api_keys import SqlApiKeyStore
from imprint.store.audit import SqlAuditLog
from imprint.store.cache import generation, look_now, on_change
from imprint.store.certificates import REVOCATIONS, SqlCertificateLedger
from imprint.store.channel_entries import SqlEntryStore
from imprint.store.channels import SqlChannelStore
from imprint.store.client_cas import SqlClientCAStore
from imprint.store.console_sessions import SqlEndedSessions
from imprint.store.db import after_commit, create_engine, observe_groups, unit_of_work, upgrade
from imprint.store.deny_list import SqlDenyList, SqlManufacturerCrlStore
from imprint.store.device_codes import SqlDeviceCodeStore
from imprint.store.devices import SqlDeviceStore, SqlNonceStore, SqlStepRecorder
from imprint.store.enrollments import SqlEnrollmentStore
from imprint.store.identities import SqlIdentityStore, SqlPskStore, SqlRelayStore
from imprint.store.oauth import SqlAuthorizationCodeStore, SqlOAuthClientStore, SqlSigningKeyStore
from imprint.store.one_time_passwords import SqlOneTimePasswordStore
from imprint.store.oob_secrets import SqlOobSecretStore
from imprint.store.orgs import SqlOrganizationStore
from imprint.store.outbox import SqlOutboxStore
from imprint.store.registration_keys import SqlRegistrationKeyStore
from imprint.store.users import SqlUserStore
from imprint.store.webhooks import SqlWebhookStore
from imprint.tenancy.orgs import OrgTree
from imprint.tenancy.roles import Role
from imprint.webhooks.delivery import WebhookDelivery
from imprint.webhooks.events import WEBHOOK_DELIVERY, WebhookEvents
from imprint.webhooks.expiry import ExpiryWatch
from imprint.webhooks.hook import HttpProvisioningHook

if TYPE_CHECKING:
    from imprint.app import Application, DatabaseApplication

__all__ = ["Database", "FirstStart", "Runtime", "open_database", "open_runtime", "prepare"]

log = get_logger(__name__)

#: A reservation still pending after this long belongs to a request that died: signing
#: takes milliseconds, and a unit of work's reservation commits only once issued.
ABANDON_AFTER = timedelta(seconds=30)


@dataclass(frozen=True)
class FirstStart:
    """What :func:`prepare` created, so the caller can tell the user."""

    created_ca: bool = False
    admin_token_file: Path | None = None
    server_certificate_issued: bool = False


@dataclass
class Runtime:
    settings: Settings
    engine: Engine
    ledger: SqlCertificateLedger
    api_keys: SqlApiKeyStore
    authority: CertificateAuthority
    enrollments: SqlEnrollmentStore
    devices: SqlDeviceStore
    records: SqlStepRecorder
    nonces: SqlNonceStore
    box: SecretBox
    attestors: dict[Mechanism, Attestor]
    renewals: RenewalAuthorizer
    outbox: Outbox
    clock: Clock
    channels: SqlChannelStore
    client_cas: SqlClientCAStore
    deny_list: SqlDenyList
    manufacturer_crls: SqlManufacturerCrlStore
    oob_secrets: SqlOobSecretStore
    registration_keys: SqlRegistrationKeyStore  # sealed with the key-encryption key
    one_time_passwords: SqlOneTimePasswordStore  # their SHA-256 only
    audit: SqlAuditLog
    metrics: Metrics = field(default_factory=Metrics)
    #: The cache generations of enrollments and client CAs when the client CAs were last
    #: loaded (``_trust_sources``).
    _trust_generations: tuple[int, int] | None = field(default=None, init=False, repr=False)

    def transaction(self) -> AbstractContextManager[None]:
        """One transaction for the store writes made inside the block (a unit of work)."""
        return unit_of_work(self.engine)

    @functools.cached_property
    def provisioner(self) -> Provisioner:
        """The one provisioning use case every device protocol calls."""
        return Provisioner(
            authority=self.authority,
            devices=self.devices,
            recorder=self.records,
            nonces=self.nonces,
            attestors=self.attestors,
            renewals=self.renewals,
            services=self.settings.services,
            channels=self.channels,
            transaction=self.transaction,
            limiter=self.attempt_limiter,
            hub_tokens=HubTokenSource(
                clients=self.clients,
                tokens=self.tokens,
                owner_claim=self.settings.auth.owner_claim,
                clock=self.clock,
            ),
            audit=self.audit,
            clock=self.clock,
            hooks=HttpProvisioningHook(self.webhook_store),
            events=self.webhook_events,
        )

    @functools.cached_property
    def webhook_store(self) -> SqlWebhookStore:
        """Webhook subscriptions, their delivery log and provisioning hooks."""
        return SqlWebhookStore(self.engine, self.box, self.clock)

    @functools.cached_property
    def webhook_events(self) -> WebhookEvents:
        """Where events are queued for webhook receivers (docs/webhooks.md)."""
        return WebhookEvents(self.webhook_store, self.outbox, self.org_tree, self.clock)

    @functools.cached_property
    def expiry_watch(self) -> ExpiryWatch:
        """The search for certificates crossing an expiry threshold (one node at a time)."""
        return ExpiryWatch(
            self.webhook_store,
            self.webhook_events,
            self.org_tree,
            self.clock,
            self.settings.webhooks.expiry_thresholds_days,
            self.transaction,
        )

    @functools.cached_property
    def ocsp(self) -> OcspResponder:
        """The OCSP responder (its signing certificate is made at the first request)."""
        config = self.settings.ocsp
        return OcspResponder(
            self.authority,
            clock=self.clock,
            validity=timedelta(minutes=config.validity_minutes),
            cache_for=timedelta(seconds=config.cache_seconds),
            responder_validity=timedelta(days=config.responder_validity_days),
            renew_before=timedelta(hours=config.responder_renew_before_hours),
        )

    @functools.cached_property
    def app(self) -> Application:
        """The application operations: what every admin surface calls."""
        from imprint.app import Application

        return Application(self)

    @functools.cached_property
    def channel_entries(self) -> SqlEntryStore:
        return SqlEntryStore(self.engine, self.clock)

    @functools.cached_property
    def orgs(self) -> SqlOrganizationStore:
        return SqlOrganizationStore(self.engine)

    def org_tree(self) -> OrgTree:
        """The organization tree as it is now (read per request: it changes)."""
        return OrgTree(self.orgs.all())

    @functools.cached_property
    def users(self) -> SqlUserStore:
        return SqlUserStore(self.engine, self.clock)

    @functools.cached_property
    def ended_sessions(self) -> SqlEndedSessions:
        """Console sessions signed out before their expiry."""
        return SqlEndedSessions(self.engine)

    @functools.cached_property
    def oauth_clients(self) -> SqlOAuthClientStore:
        return SqlOAuthClientStore(self.engine)

    @functools.cached_property
    def clients(self) -> ClientRegistry:
        """Stored OAuth clients plus the development clients of ``auth.clients`` and the
        command line's own (``imprint login`` with a user's password)."""
        configured = configured_clients(self.settings.auth.clients)
        return ClientRegistry(self.oauth_clients, configured, [COMMAND_LINE_CLIENT])

    @functools.cached_property
    def authorization_codes(self) -> SqlAuthorizationCodeStore:
        return SqlAuthorizationCodeStore(self.engine)

    @functools.cached_property
    def device_codes(self) -> SqlDeviceCodeStore:
        """Requests of the device authorization grant (``imprint login --device``)."""
        return SqlDeviceCodeStore(self.engine)

    @functools.cached_property
    def tokens(self) -> TokenService:
        auth = self.settings.auth
        base = self.settings.server.base_url()
        return TokenService(
            SqlSigningKeyStore(self.engine),
            self.box,
            issuer=auth.issuer or base,
            audience=auth.audience or base,
            owner_claim=auth.owner_claim,
            lifetime=timedelta(seconds=auth.token_lifetime_seconds),
            clock=self.clock,
        )

    @functools.cached_property
    def external_oidc(self) -> ExternalProvider | None:
        auth = self.settings.auth
        oidc = auth.oidc
        if oidc.issuer is None:
            return None
        if oidc.audience is None:
            raise ConfigurationError("auth.oidc.audience: required with auth.oidc.issuer")
        return ExternalProvider(
            issuer=oidc.issuer,
            audience=oidc.audience,
            jwks_url=oidc.jwks_url,
            owner_claim=oidc.owner_claim or auth.owner_claim,
            roles_claim=oidc.roles_claim,
            default_role=None if oidc.default_role is None else Role(oidc.default_role),
            clock=self.clock,
        )

    @functools.cached_property
    def bearer(self) -> BearerAuthenticator:
        return BearerAuthenticator(
            api_keys=self.api_keys,
            tokens=self.tokens,
            users=self.users,
            clients=self.clients,
            external=self.external_oidc,
            clock=self.clock,
        )

    @functools.cached_property
    def attempt_limiter(self) -> AttemptLimiter:
        """The failed-attempt limits of devices, sign-ins, OAuth clients and sign-ups,
        each in its own key spaces (decision 0011)."""
        return AttemptLimiter(self.clock.now)

    @functools.cached_property
    def identities(self) -> ClientIdentities:
        """Identity certificates, the browser relay and PSKs of client applications."""
        config = self.settings.identities
        return ClientIdentities(
            issuer=IdentityIssuer(self.authority, SqlIdentityStore(self.engine), self.clock),
            relays=SqlRelayStore(self.engine),
            psks=SqlPskStore(self.engine, self.box),
            relay_lifetime=timedelta(seconds=config.relay_lifetime_seconds),
            relay_limiter=AttemptLimiter(
                self.clock.now, {Space.RELAY: (Rule(config.relay_requests_per_minute, 60.0),)}
            ),
        )

    @functools.cached_property
    def client_trust(self) -> ClientTrust:
        """The CAs the TLS handshake admits client certificates from: imprint's chain, the
        manufacturer chain of every x509 enrollment and the CAs of client-ca enrollments
        (see :mod:`imprint.client_trust`)."""
        trust = ClientTrust(self.authority.chain)
        self._load_enrolled_cas(trust)
        return trust

    def refresh_client_trust(self) -> int:
        """Admit CAs that enrollments gained behind this process's back (another node, or
        the CLI); return how many were new. The server calls this every few seconds."""
        return self._load_enrolled_cas(self.client_trust)

    def client_trust_caught_up(self) -> bool:
        """Whether enrollments or client CAs changed since the client CAs were last
        loaded, in this process or in another one (looked for now, not at the listener's
        next look), and were loaded again: a chain refused as unknown may then be judged
        again. Another process's change is found at once on SQLite; on PostgreSQL its
        notification arrives as its transaction commits."""
        look_now(self.engine)
        if self._trust_generations == self._trust_sources():
            return False  # nothing changed since: the refusal stands, after one PRAGMA
        self.refresh_client_trust()
        return True

    def _trust_sources(self) -> tuple[int, int]:
        """The cache generations of what the client CAs are loaded from: they move when
        either kind changes, here or (once heard of) elsewhere."""
        return generation(self.engine, "enrollments"), generation(self.engine, "client_cas")

    def _load_enrolled_cas(self, trust: ClientTrust) -> int:
        sources = self._trust_sources()  # before reading: a change meanwhile moves them
        found = self.enrollments.search(mechanism=Mechanism.X509, limit=MAX_ENROLLMENTS)
        added = trust.add(manufacturer_certificates(found))
        added += trust.add(ca.certificate() for ca in self.client_cas.all())
        self._trust_generations = sources
        return added

    def enrollment_added(self, enrollment: Enrollment) -> None:
        """Let what is derived from enrollments (the TLS gate) learn about a new one."""
        if enrollment.x509 is not None:
            self.client_trust.add(enrollment.x509.certificates())

    @functools.cached_property
    def layout(self) -> DataLayout:
        return self.settings.layout()

    @property
    def server_certfile(self) -> Path:
        return self.layout.server_certificate

    @property
    def server_keyfile(self) -> Path:
        return self.layout.server_key

    @property
    def root_certfile(self) -> Path:
        return self.layout.ca.root_certificate

    def root_fingerprint(self) -> str:
        der = self.authority.material.root.public_bytes(serialization.Encoding.DER)
        return ":".join(f"{b:02X}" for b in hashlib.sha256(der).digest())

    def resolve_abandoned(self, grace: timedelta = ABANDON_AFTER) -> Sequence[str]:
        """Mark abandoned the certificate reservations of requests that died before they
        signed (reserved more than ``grace`` ago and still pending); their serials. No
        answer carried those certificates, so none of them is in the field."""
        serials = self.ledger.abandon_pending(self.clock.now() - grace)
        if serials:
            log.warning("certificate_reservations_abandoned", serials=list(serials))
        return serials

    @functools.cached_property
    def leadership(self) -> Leadership:
        """The background duties this process leads (one node at a time per duty)."""
        return Leadership(self.engine)

    def close(self) -> None:
        if "leadership" in self.__dict__:
            self.leadership.close()
        self.engine.dispose()


@dataclass
class Database:
    """The database alone, for the commands that run before the CA exists (``imprint
    admin``): the API keys and the audit log."""

    settings: Settings
    engine: Engine
    clock: Clock = field(default_factory=SystemClock)

    def transaction(self) -> AbstractContextManager[None]:
        return unit_of_work(self.engine)

    @functools.cached_property
    def app(self) -> DatabaseApplication:
        """The operations that need no CA."""
        from imprint.app import DatabaseApplication

        return DatabaseApplication(self)

    @functools.cached_property
    def api_keys(self) -> SqlApiKeyStore:
        return SqlApiKeyStore(self.engine)

    @functools.cached_property
    def audit(self) -> SqlAuditLog:
        return SqlAuditLog(self.engine, self.clock)

    def close(self) -> None:
        self.engine.dispose()


def open_database(settings: Settings, *, migrate: bool = True) -> Database:
    """Connect to the database (and migrate it), without the CA.

    Raises:
        ConfigurationError: the database cannot be reached.
    """
    settings.data_dir.mkdir(parents=True, exist_ok=True)
    engine = create_engine(settings.database_url())
    try:
        if migrate:
            upgrade(engine)
    except Exception:
        engine.dispose()
        raise
    return Database(settings, engine)


def _make_data_dir(path: Path) -> None:
    path.mkdir(parents=True, exist_ok=True)
    os.chmod(path, 0o700)


def open_runtime(
    settings: Settings, *, migrate: bool = True, clock: Clock | None = None
) -> Runtime:
    """Connect to the database and load the CA (which must exist).

    Raises:
        CANotInitialized: no CA yet.
        CAKeyLocked, UnencryptedCAKey: the CA key cannot be used.
        ConfigurationError: the database cannot be reached.
    """
    _make_data_dir(settings.data_dir)
    engine = create_engine(settings.database_url())
    try:
        if migrate:
            upgrade(engine)
        material = load_ca(settings)
    except Exception:
        engine.dispose()
        raise
    ledger = SqlCertificateLedger(engine)
    metrics = Metrics()
    observe_groups(engine, metrics)
    clock = clock or SystemClock()
    committed = functools.partial(after_commit, engine)
    audit = SqlAuditLog(engine, clock)
    outbox = Outbox(
        SqlOutboxStore(engine),
        committed,
        clock.now,
        audit=audit,
        transaction=functools.partial(unit_of_work, engine),
    )
    authority = CertificateAuthority(
        material,
        ledger,
        profiles=settings.profiles,
        base_url=settings.server.base_url(),
        crl_validity=timedelta(hours=settings.ca.crl_validity_hours),
        publication=Publication(
            crl_url=settings.ca.crl_url or "",
            issuer_url=settings.ca.issuer_url or "",
            ocsp_url=settings.ca.ocsp_url,
        ),
        events=metrics,
        outbox=outbox,
        after_commit=committed,
        clock=clock,
    )
    outbox.register(
        CERTIFICATE_CHANGED, lambda payload: authority.tell_listeners(payload["serial"])
    )
    on_change(engine, REVOCATIONS, authority.forget_crls)
    box = load_secret_box(settings, create=True)
    enrollments = SqlEnrollmentStore(engine, box, clock)
    devices = SqlDeviceStore(engine)
    records = SqlStepRecorder(engine)
    nonces = SqlNonceStore(engine)
    channels = SqlChannelStore(engine, box)
    client_cas = SqlClientCAStore(engine, clock)
    deny_list = SqlDenyList(engine, clock)
    manufacturer_crls = SqlManufacturerCrlStore(engine, clock)
    oob_secrets = SqlOobSecretStore(engine, box)
    registration_keys = SqlRegistrationKeyStore(engine, box)
    one_time_passwords = SqlOneTimePasswordStore(engine)
    attestors = build_attestors(
        enrollments=enrollments,
        devices=devices,
        client_cas=client_cas,
        deny_list=deny_list,
        crls=manufacturer_crls,
        oob_secrets=oob_secrets,
        registration_keys=registration_keys,
        provision_url=f"{settings.server.base_url()}/api/v1/provision",
        one_time_passwords=one_time_passwords,
    )
    renewals = RenewalAuthorizer(
        issuing=material.issuing,
        ledger=ledger,
        devices=devices,
        enrollments=enrollments,
        audience=f"{settings.server.base_url()}/api/v1/renew",
    )
    runtime = Runtime(
        settings=settings,
        engine=engine,
        ledger=ledger,
        api_keys=SqlApiKeyStore(engine),
        authority=authority,
        enrollments=enrollments,
        devices=devices,
        records=records,
        nonces=nonces,
        box=box,
        attestors=attestors,
        renewals=renewals,
        outbox=outbox,
        clock=clock,
        channels=channels,
        client_cas=client_cas,
        deny_list=deny_list,
        manufacturer_crls=manufacturer_crls,
        oob_secrets=oob_secrets,
        registration_keys=registration_keys,
        one_time_passwords=one_time_passwords,
        audit=audit,
        metrics=metrics,
    )
    webhooks = settings.webhooks
    outbox.register(
        WEBHOOK_DELIVERY,
        WebhookDelivery(
            runtime.webhook_store,
            clock,
            timeout=webhooks.timeout_seconds,
            max_age=timedelta(hours=webhooks.max_age_hours),
        ),
        background=True,  # off every request's path: the server's webhook round
    )
    authority.on_revoked(runtime.webhook_events.certificate_revoked)
    authority.add_listener(runtime.ocsp)  # a revocation drops its kept OCSP responses
    on_change(engine, REVOCATIONS, runtime.ocsp.forget)  # ... made on any node
    if settings.mqtt.enabled:
        from imprint.mqtt.broker import BrokerFiles, BrokerSync

        files = BrokerFiles(settings.mqtt_dir())
        authority.add_listener(BrokerSync(settings.mqtt, files, authority, clock))
    try:
        runtime.bearer  # noqa: B018 (the auth configuration is checked at start)
        runtime.provisioner  # noqa: B018
    except Exception:
        engine.dispose()
        raise
    return runtime


def prepare(settings: Settings, *, clock: Clock | None = None) -> tuple[Runtime, FirstStart]:
    """Open the runtime, creating on first start what does not exist yet."""
    _make_data_dir(settings.data_dir)
    created_ca = False
    try:
        runtime = open_runtime(settings, clock=clock)
    except CANotInitialized:
        init_ca(settings)
        created_ca = True
        log.info("ca_created", directory=str(settings.ca_dir), key_type=settings.ca.key_type.value)
        runtime = open_runtime(settings, clock=clock)
    issued = _ensure_server_certificate(runtime) if settings.server.tls else False
    token_file = _ensure_admin(runtime)
    return runtime, FirstStart(created_ca, token_file, issued)


def _server_certificate_current(runtime: Runtime) -> bool:
    try:
        pem = runtime.server_certfile.read_bytes()
        certificate = x509.load_pem_x509_certificates(pem)[0]
    except (OSError, ValueError, IndexError):
        return False
    if not runtime.server_keyfile.is_file():
        return False
    issuing = runtime.authority.material.issuing
    if certificate.issuer != issuing.subject:
        return False
    try:
        certificate.verify_directly_issued_by(issuing)
    except Exception:
        return False
    now = runtime.clock.now()
    lifetime = certificate.not_valid_after_utc - certificate.not_valid_before_utc
    if certificate.not_valid_after_utc - now < lifetime / 3:
        return False
    try:
        present = certificate.extensions.get_extension_for_class(x509.SubjectAlternativeName).value
    except x509.ExtensionNotFound:
        return False
    wanted = parse_sans(runtime.settings.server.san)
    return set(present) == set(wanted)


def _ensure_server_certificate(runtime: Runtime) -> bool:
    """Issue the HTTPS certificate when it is missing, stale, or has other SANs."""
    if _server_certificate_current(runtime):
        return False
    key = ec.generate_private_key(ec.SECP256R1())
    san = runtime.settings.server.san
    issued = runtime.authority.issue(
        IssuanceRequest(
            public_key=key.public_key(),
            profile="server",
            common_name=san[0],
            sans=san,
            requested_by="imprint:server",
        )
    )
    runtime.layout.tls_dir.mkdir(parents=True, exist_ok=True)
    fd = os.open(runtime.server_keyfile, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "wb") as handle:
        handle.write(
            key.private_bytes(
                serialization.Encoding.PEM,
                serialization.PrivateFormat.PKCS8,
                serialization.NoEncryption(),
            )
        )
    chain = [issued.certificate, *issued.chain[:-1]]
    runtime.server_certfile.write_bytes(
        b"".join(c.public_bytes(serialization.Encoding.PEM) for c in chain)
    )
    log.info("server_certificate_issued", serial=issued.record.serial, san=list(san))
    return True


def _ensure_admin(runtime: Runtime) -> Path | None:
    """Create the first admin key when there is none; its token goes to a 0600 file."""
    if runtime.api_keys.count() > 0:
        return None
    with runtime.transaction():
        issued = create_api_key(runtime.api_keys, "admin", now=runtime.clock.now())
        runtime.audit.write(
            AuditEntry(
                actor="imprint:bootstrap",
                action="api_key.create",
                target_type="api_key",
                target_id=issued.key.name,
                details={"key_id": issued.key.key_id, "role": issued.key.role},
            )
        )
    path = runtime.layout.admin_token
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "w", encoding="ascii") as handle:
        handle.write(issued.token + "\n")
    log.info("admin_key_created", name=issued.key.name, token_file=str(path))
    return path
