"""SQLAlchemy Core table definitions: the single source of the schema's shape.

Migrations in ``migrations/versions`` create exactly these tables; a test compares
the two so they cannot drift apart.
"""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any

from sqlalchemy import (
    BigInteger,
    Boolean,
    Column,
    DateTime,
    Dialect,
    Float,
    Index,
    Integer,
    LargeBinary,
    MetaData,
    String,
    Table,
    Text,
    UniqueConstraint,
)
from sqlalchemy.types import TypeDecorator

__all__ = [
    "UTCDateTime",
    "api_keys",
    "audit_log",
    "authorization_codes",
    "certificates",
    "channel_entries",
    "channel_keys",
    "channels",
    "client_cas",
    "client_identities",
    "client_psks",
    "crl_numbers",
    "denied_certificates",
    "device_claims",
    "device_codes",
    "devices",
    "ended_console_sessions",
    "enrollments",
    "manufacturer_crls",
    "memberships",
    "metadata",
    "oauth_clients",
    "one_time_passwords",
    "oob_secrets",
    "organizations",
    "outbox",
    "provisioning_hooks",
    "provisioning_records",
    "registration_keys",
    "relay_requests",
    "signing_keys",
    "used_nonces",
    "users",
    "webhook_deliveries",
    "webhook_expiry_marks",
    "webhook_subscriptions",
]

metadata = MetaData(
    naming_convention={
        "ix": "ix_%(table_name)s_%(column_0_N_name)s",
        "uq": "uq_%(table_name)s_%(column_0_N_name)s",
        "pk": "pk_%(table_name)s",
    }
)


def _in_utc(value: datetime) -> datetime:
    """``value`` in UTC (itself when it is already); a naive one is refused.

    Raises:
        ValueError: ``value`` has no time zone.
    """
    if value.tzinfo is UTC:
        return value
    if value.tzinfo is None:
        raise ValueError("naive datetimes are not stored")
    return value.astimezone(UTC)


class UTCDateTime(TypeDecorator[datetime]):
    """A timestamp that is always timezone-aware UTC in Python, on every backend."""

    impl = DateTime(timezone=True)
    cache_ok = True

    def process_bind_param(self, value: datetime | None, dialect: Dialect) -> datetime | None:
        if value is None:
            return None
        value = _in_utc(value)
        return value.replace(tzinfo=None) if dialect.name == "sqlite" else value

    @staticmethod
    def sqlite_text(value: datetime | None) -> str | None:
        """What :meth:`process_bind_param` and SQLAlchemy's SQLite ``DATETIME`` make of
        ``value`` together (``YYYY-MM-DD HH:MM:SS.ffffff`` in UTC), in about half their
        time: for statements bound a value at a time (``store.db.Prepared``), where a
        registration binds about fifteen."""
        if value is None:
            return None
        return _in_utc(value).replace(tzinfo=None).isoformat(" ", "microseconds")

    def process_result_value(self, value: Any, dialect: Dialect) -> datetime | None:
        if value is None:
            return None
        assert isinstance(value, datetime)
        return value.replace(tzinfo=UTC) if value.tzinfo is None else value.astimezone(UTC)


certificates = Table(
    "certificates",
    metadata,
    Column("serial", String(40), primary_key=True),
    Column("issuer", String(64), nullable=False),
    Column("profile", String(32), nullable=False),
    Column("subject", Text, nullable=False),
    Column("sans", Text, nullable=False, default="[]"),
    Column("status", String(16), nullable=False),
    Column("not_before", UTCDateTime, nullable=False),
    Column("not_after", UTCDateTime, nullable=False),
    Column("requested_by", String(200), nullable=False),
    Column("created_at", UTCDateTime, nullable=False),
    Column("issued_at", UTCDateTime),
    Column("fingerprint_sha256", String(64)),
    Column("der", LargeBinary),
    Column("revoked_at", UTCDateTime),
    Column("revocation_reason", String(32)),
    Column("owner", String(100)),  # organization it was issued for (0009); NULL: instance
    Column("device_ref", String(36)),  # the device it was issued to (0012); NULL: none
    Index(None, "issuer", "status"),
    Index(None, "not_after"),
    Index(None, "owner"),
    Index(None, "device_ref"),
)

# Effects that must follow a commit, written in the transaction that causes them (0012).
outbox = Table(
    "outbox",
    metadata,
    Column("id", Integer, primary_key=True, autoincrement=True),
    Column("kind", String(64), nullable=False),
    Column("payload", Text, nullable=False),
    Column("created_at", UTCDateTime, nullable=False),
    Column("due_at", UTCDateTime, nullable=False),
    Column("attempts", Integer, nullable=False, server_default="0"),
    Column("last_error", String(500)),
    Column("done_at", UTCDateTime),
    Index(None, "done_at", "due_at"),
)

crl_numbers = Table(
    "crl_numbers",
    metadata,
    Column("issuer", String(64), primary_key=True),
    Column("number", BigInteger, nullable=False),
    Column("updated_at", UTCDateTime, nullable=False),
)

#: On SQLite, how often each kind of cached object was changed: a write adds one in its
#: transaction, and every process looks for counts that moved (imprint.store.cache).
cache_changes = Table(
    "cache_changes",
    metadata,
    Column("kind", String(64), primary_key=True),
    Column("changes", BigInteger, nullable=False),
)

api_keys = Table(
    "api_keys",
    metadata,
    Column("key_id", String(32), primary_key=True),
    Column("name", String(100), nullable=False, unique=True),
    Column("secret_sha256", String(64), nullable=False),
    Column("role", String(16), nullable=False),
    Column("created_at", UTCDateTime, nullable=False),
    Column("last_used_at", UTCDateTime),
    Column("expires_at", UTCDateTime),  # 0014; NULL: never
)

enrollments = Table(
    "enrollments",
    metadata,
    Column("id", String(63), primary_key=True),
    Column("kind", String(16), nullable=False),
    Column("mechanism", String(32), nullable=False),
    Column("owner", String(100), nullable=False),
    Column("profile", String(32), nullable=False),
    Column("validity_days", Integer),
    Column("key_types", Text, nullable=False),
    Column("device_id_rule", String(32), nullable=False),
    Column("device_id_pattern", Text),
    Column("registration_id", String(200)),
    Column("manual_approval", Boolean, nullable=False),
    Column("pre_shared_key_sealed", LargeBinary),
    Column("services", Text, nullable=False),
    Column("enabled", Boolean, nullable=False),
    Column("valid_from", UTCDateTime),
    Column("valid_until", UTCDateTime),
    Column("quota", Integer),
    Column("x509", Text),
    Column("group_key_sealed", LargeBinary),
    Column("reprovision", String(16), nullable=False, server_default="allow"),
    Column("renewal_grace_days", Integer, nullable=False, server_default="0"),
    Column("channel", Text),  # JSON channel template, or NULL for no channel per device
    Column("hub", Text),  # JSON hub/OAuth provider without its secret, or NULL
    Column("hub_client_secret_sealed", LargeBinary),
    Column("created_at", UTCDateTime, nullable=False),
    Column("updated_at", UTCDateTime, nullable=False),
    Index(None, "mechanism", "enabled"),
    Index(None, "owner"),
    Index(None, "registration_id", "mechanism"),  # 0021: a device's own enrollments
)

devices = Table(
    "devices",
    metadata,
    Column("id", String(36), primary_key=True),
    Column("owner", String(100), nullable=False),
    Column("device_id", String(200), nullable=False),
    Column("enrollment_id", String(63), nullable=False),
    Column("mechanism", String(32), nullable=False),
    Column("status", String(16), nullable=False),
    Column("certificate_serial", String(40)),
    Column("pinned_fingerprint", String(64)),
    Column("public_key_sha256", String(64)),
    Column("created_at", UTCDateTime, nullable=False),
    Column("updated_at", UTCDateTime, nullable=False),
    Column("provisioned_at", UTCDateTime),
    UniqueConstraint("owner", "device_id"),
    Index(None, "enrollment_id", "status"),
    Index(None, "status"),
    Index(None, "device_id"),  # 0014: admins address a device by its id
    Index(None, "public_key_sha256"),  # 0015: a key certified for another device
    Index(None, "updated_at"),  # 0017: the console's list, newest activity first
)

provisioning_records = Table(
    "provisioning_records",
    metadata,
    Column("id", String(36), primary_key=True),
    Column("request_id", String(64), nullable=False),
    Column("device_ref", String(36)),
    Column("enrollment_id", String(63)),
    Column("mechanism", String(32), nullable=False),
    Column("registration_id", String(200)),
    Column("step", String(16), nullable=False),
    Column("status", String(16), nullable=False),
    Column("code", String(64)),
    Column("detail", Text),
    Column("source", String(64)),
    Column("at", UTCDateTime, nullable=False),
    Index(None, "device_ref", "at"),
    Index(None, "at"),
)

used_nonces = Table(
    "used_nonces",
    metadata,
    Column("scope", String(64), primary_key=True),
    Column("nonce", String(128), primary_key=True),
    Column("expires_at", UTCDateTime, nullable=False),
    Index(None, "expires_at"),
)

oob_secrets = Table(
    "oob_secrets",
    metadata,
    Column("enrollment_id", String(63), primary_key=True),
    Column("device_id", String(200), primary_key=True),
    Column("secret_sealed", LargeBinary, nullable=False),
    Column("valid_until", UTCDateTime, nullable=False),
    Column("used_at", UTCDateTime),
    Column("created_at", UTCDateTime, nullable=False),
    # A registration reads a device's secrets by its id alone (store/oob_secrets.py).
    Index("ix_oob_secrets_device_id", "device_id"),
)

one_time_passwords = Table(
    "one_time_passwords",
    metadata,
    Column("id", String(36), primary_key=True),
    Column("enrollment_id", String(63), nullable=False),
    Column("device_id", String(200), nullable=False),
    Column("password_sha256", String(64), nullable=False, unique=True),
    Column("created_at", UTCDateTime, nullable=False),
    Column("expires_at", UTCDateTime, nullable=False),
    Column("used_at", UTCDateTime),
    Column("created_by", String(200), nullable=False),
    Index(None, "enrollment_id", "device_id"),
)

registration_keys = Table(
    "registration_keys",
    metadata,
    Column("id", String(36), primary_key=True),
    Column("enrollment_id", String(63), nullable=False),
    Column("lookup_sha256", String(64), nullable=False, unique=True),
    Column("key_sealed", LargeBinary, nullable=False),
    Column("state", String(16), nullable=False),
    Column("expires_at", UTCDateTime),
    Column("created_at", UTCDateTime, nullable=False),
    Index(None, "enrollment_id", "state"),
)

client_cas = Table(
    "client_cas",
    metadata,
    Column("id", String(36), primary_key=True),
    Column("enrollment_id", String(63), nullable=False),
    Column("fingerprint_sha256", String(64), nullable=False),
    Column("subject", Text, nullable=False),
    Column("pem", Text, nullable=False),
    Column("created_at", UTCDateTime, nullable=False),
    UniqueConstraint("enrollment_id", "fingerprint_sha256"),
)

denied_certificates = Table(
    "denied_certificates",
    metadata,
    Column("fingerprint_sha256", String(64), primary_key=True),
    Column("reason", String(200), nullable=False),
    Column("created_at", UTCDateTime, nullable=False),
)

# The CRL number is up to 20 octets (RFC 5280), too big for BIGINT: stored as hex.
manufacturer_crls = Table(
    "manufacturer_crls",
    metadata,
    Column("issuer_key_sha256", String(64), primary_key=True),
    Column("issuer", Text, nullable=False),
    Column("crl_number", String(42)),
    Column("this_update", UTCDateTime, nullable=False),
    Column("next_update", UTCDateTime),
    Column("revoked_count", Integer, nullable=False),
    Column("fingerprint_sha256", String(64), nullable=False),
    Column("der", LargeBinary, nullable=False),
    Column("uploaded_at", UTCDateTime, nullable=False),
)

# Channels (migration 0006): the ThingSpeak model. Ids are integers, as ThingSpeak's are;
# keys are sealed (owners see them again) and found by SHA-256; ``last_entry_id`` numbers
# a channel's entries 1, 2, 3, ...
channels = Table(
    "channels",
    metadata,
    Column("id", Integer, primary_key=True, autoincrement=True),
    Column("owner", String(100), nullable=False),
    Column("device_ref", String(36), nullable=False, unique=True),
    Column("device_id", String(200), nullable=False),
    Column("enrollment_id", String(63), nullable=False),
    Column("name", String(200), nullable=False),
    *(Column(f"field{n}", String(100)) for n in range(1, 9)),
    Column("last_entry_id", Integer, nullable=False, server_default="0"),
    Column("created_at", UTCDateTime, nullable=False),
    Column("updated_at", UTCDateTime, nullable=False),
    Index(None, "owner"),
)

channel_keys = Table(
    "channel_keys",
    metadata,
    Column("id", String(36), primary_key=True),
    Column("channel_id", Integer, nullable=False),
    Column("kind", String(8), nullable=False),
    Column("lookup_sha256", String(64), nullable=False, unique=True),
    Column("key_sealed", LargeBinary, nullable=False),
    Column("created_at", UTCDateTime, nullable=False),
    Index(None, "channel_id", "kind"),
)

channel_entries = Table(
    "channel_entries",
    metadata,
    Column("channel_id", Integer, primary_key=True),
    Column("entry_id", Integer, primary_key=True),
    Column("created_at", UTCDateTime, nullable=False),
    *(Column(f"field{n}", Text) for n in range(1, 9)),
    Column("latitude", String(32)),
    Column("longitude", String(32)),
    Column("elevation", String(32)),
    Column("status", Text),
    Index(None, "channel_id", "created_at"),
)

# Tenancy and authentication (migration 0007). Organization ids are the owner values
# enrollments and devices carry, so they are stable strings chosen once.
organizations = Table(
    "organizations",
    metadata,
    Column("id", String(100), primary_key=True),
    Column("parent_id", String(100)),
    Column("name", String(200), nullable=False),
    Column("created_at", UTCDateTime, nullable=False),
    Index(None, "parent_id"),
)

users = Table(
    "users",
    metadata,
    Column("id", String(36), primary_key=True),
    Column("username", String(200), nullable=False, unique=True),
    Column("password_hash", Text),
    Column("disabled", Boolean, nullable=False),
    Column("created_at", UTCDateTime, nullable=False),
    Column("sessions_valid_after", UTCDateTime),
)

memberships = Table(
    "memberships",
    metadata,
    Column("user_id", String(36), primary_key=True),
    Column("org_id", String(100), primary_key=True),
    Column("role", String(16), nullable=False),
    Column("created_at", UTCDateTime, nullable=False),
    Index(None, "org_id"),
)

oauth_clients = Table(
    "oauth_clients",
    metadata,
    Column("client_id", String(100), primary_key=True),
    Column("name", String(100), nullable=False),
    Column("secret_sha256", String(64)),
    Column("grant_types", Text, nullable=False),
    Column("scopes", Text, nullable=False),
    Column("audience", String(500)),
    Column("redirect_uris", Text, nullable=False),
    Column("org_id", String(100)),
    Column("role", String(16), nullable=False),
    Column("created_at", UTCDateTime, nullable=False),
    Index(None, "org_id"),
)

signing_keys = Table(
    "signing_keys",
    metadata,
    Column("kid", String(64), primary_key=True),
    Column("private_key_sealed", LargeBinary, nullable=False),
    Column("created_at", UTCDateTime, nullable=False),
    Column("retired_at", UTCDateTime),
)

authorization_codes = Table(
    "authorization_codes",
    metadata,
    Column("code_sha256", String(64), primary_key=True),
    Column("client_id", String(100), nullable=False),
    Column("user_id", String(36), nullable=False),
    Column("org_id", String(100)),
    Column("redirect_uri", Text, nullable=False),
    Column("scope", Text, nullable=False),
    Column("nonce", String(200)),
    Column("code_challenge", String(128), nullable=False),
    Column("expires_at", UTCDateTime, nullable=False),
    Column("used_at", UTCDateTime),
    Column("created_at", UTCDateTime, nullable=False),
    Index(None, "expires_at"),
)

device_codes = Table(
    "device_codes",
    metadata,
    Column("device_code_sha256", String(64), primary_key=True),
    Column("user_code_sha256", String(64), nullable=False, unique=True),
    Column("client_id", String(100), nullable=False),
    Column("scope", Text, nullable=False),
    Column("state", String(16), nullable=False),
    Column("interval_seconds", Integer, nullable=False),
    Column("user_id", String(36)),
    Column("org_id", String(100)),
    Column("created_at", UTCDateTime, nullable=False),
    Column("expires_at", UTCDateTime, nullable=False),
    Column("last_polled_at", UTCDateTime),
    Column("decided_at", UTCDateTime),
    Index(None, "expires_at"),
)

audit_log = Table(
    "audit_log",
    metadata,
    Column("id", Integer, primary_key=True, autoincrement=True),
    Column("at", UTCDateTime, nullable=False),
    Column("actor", String(200), nullable=False),
    Column("action", String(64), nullable=False),
    Column("target_type", String(32), nullable=False),
    Column("target_id", String(200)),
    Column("org_id", String(100)),
    Column("outcome", String(16), nullable=False),
    Column("details", Text, nullable=False),
    # The hash chain (imprint.audit): the predecessor's hash and this entry's.
    Column("prev_hash", String(64)),
    Column("hash", String(64)),
    Index(None, "at"),
    Index(None, "org_id", "at"),
)

client_identities = Table(
    "client_identities",
    metadata,
    Column("owner", String(100), primary_key=True),
    Column("spki_sha256", String(64), nullable=False),
    Column("serial", String(40)),
    Column("not_after", UTCDateTime),
    Column("claimed_at", UTCDateTime, nullable=False),
    Column("requested_by", String(200), nullable=False),
)

relay_requests = Table(
    "relay_requests",
    metadata,
    Column("state_sha256", String(64), primary_key=True),
    Column("csr", Text, nullable=False),
    Column("subject", Text, nullable=False),
    Column("spki_sha256", String(64), nullable=False),
    Column("status", String(16), nullable=False),
    Column("owner", String(100)),
    Column("serial", String(40)),
    Column("decided_by", String(200)),
    Column("source", String(64)),
    Column("created_at", UTCDateTime, nullable=False),
    Column("expires_at", UTCDateTime, nullable=False),
    Index(None, "expires_at"),
)

client_psks = Table(
    "client_psks",
    metadata,
    Column("id", String(36), primary_key=True),
    Column("org_id", String(100), nullable=False),
    Column("subject", String(100), nullable=False),
    Column("key_sealed", LargeBinary, nullable=False),
    Column("origin", String(16), nullable=False),
    Column("created_by", String(200), nullable=False),
    Column("created_at", UTCDateTime, nullable=False),
    UniqueConstraint("org_id", "subject"),
    Index(None, "org_id"),
)

ended_console_sessions = Table(
    "ended_console_sessions",
    metadata,
    Column("session_sha256", String(64), primary_key=True),
    Column("expires_at", UTCDateTime, nullable=False),
    Index(None, "expires_at"),
)

webhook_subscriptions = Table(
    "webhook_subscriptions",
    metadata,
    Column("id", String(36), primary_key=True),
    Column("org_id", String(100), nullable=False),
    Column("url", String(2000), nullable=False),
    Column("events", Text, nullable=False),  # JSON list of event types
    Column("description", String(200)),
    Column("enabled", Boolean, nullable=False),
    Column("secret_sealed", LargeBinary, nullable=False),
    Column("created_by", String(200), nullable=False),
    Column("created_at", UTCDateTime, nullable=False),
    Column("updated_at", UTCDateTime, nullable=False),
    Index(None, "org_id"),
)

webhook_deliveries = Table(
    "webhook_deliveries",
    metadata,
    Column("id", Integer, primary_key=True, autoincrement=True),
    Column("subscription_id", String(36), nullable=False),
    Column("org_id", String(100), nullable=False),
    Column("event_id", String(36), nullable=False),
    Column("event_type", String(64), nullable=False),
    Column("attempt", Integer, nullable=False),
    Column("at", UTCDateTime, nullable=False),
    Column("outcome", String(16), nullable=False),  # delivered | failed | expired
    Column("status_code", Integer),
    Column("error", String(500)),
    Column("duration_ms", Integer, nullable=False),
    Index(None, "subscription_id", "id"),
    Index(None, "org_id", "id"),
    Index(None, "event_id"),
)

webhook_expiry_marks = Table(
    "webhook_expiry_marks",
    metadata,
    Column("serial", String(40), primary_key=True),
    Column("threshold_days", Integer, primary_key=True),
    Column("at", UTCDateTime, nullable=False),
)

provisioning_hooks = Table(
    "provisioning_hooks",
    metadata,
    Column("org_id", String(100), primary_key=True),
    Column("url", String(2000), nullable=False),
    Column("secret_sealed", LargeBinary, nullable=False),
    Column("timeout_seconds", Float, nullable=False),
    Column("on_failure", String(8), nullable=False),  # deny | allow
    Column("enabled", Boolean, nullable=False),
    Column("created_by", String(200), nullable=False),
    Column("created_at", UTCDateTime, nullable=False),
    Column("updated_at", UTCDateTime, nullable=False),
)

device_claims = Table(
    "device_claims",
    metadata,
    Column("device_ref", String(36), primary_key=True),
    Column("owner", String(100), nullable=False),
    Column("attributes", Text, nullable=False),  # JSON object of strings
    Column("services", Text, nullable=False),  # JSON object of strings
    Column("updated_at", UTCDateTime, nullable=False),
)
