"""Configuration: one YAML file plus ``IMPRINT_*`` environment overrides.

Precedence, highest first: environment variables (``IMPRINT_SERVER__PORT=9443``; a double
underscore descends into a section), the YAML file, the defaults below. Zero
configuration works: everything has a default and the data directory is created on
first start.

Unknown keys are errors in the file and in the environment alike, so a typo never
silently falls back to a default.
"""

from __future__ import annotations

import ipaddress
import os
import re
from enum import StrEnum
from pathlib import Path
from typing import Any, Literal

import yaml
from pydantic import BaseModel, ConfigDict, Field, SecretStr, ValidationError, field_validator
from pydantic_settings import BaseSettings, PydanticBaseSettingsSource, SettingsConfigDict

from imprint.errors import ConfigurationError
from imprint.layout import CAFiles, DataLayout

__all__ = [
    "AuthSettings",
    "CASettings",
    "ChannelSettings",
    "DatabaseSettings",
    "DiscoverySettings",
    "EstSettings",
    "IdentitySettings",
    "KeyType",
    "LimitSettings",
    "LoggingSettings",
    "MqttSettings",
    "OAuthClientSettings",
    "OIDCSettings",
    "OcspSettings",
    "Pkcs11Settings",
    "ProfileSettings",
    "SecretsSettings",
    "ServerSettings",
    "Settings",
    "WebhookSettings",
    "describe_validation_error",
    "load_settings",
]

ENV_PREFIX = "IMPRINT_"
CONFIG_ENV = "IMPRINT_CONFIG"
#: Not configuration: the admin token that the docs have users export for curl. It
#: shares the prefix, so it is named here to keep it from counting as a typo.
CLIENT_ENV = frozenset({"IMPRINT_TOKEN"})
#: The PKCS#11 user PIN: read from the environment (or ``ca.pkcs11.pin_file``), never
#: from the configuration file, so it is not a setting.
PKCS11_PIN_ENV = "IMPRINT_PKCS11_PIN"
DEFAULT_CONFIG_FILE = Path("imprint.yaml")
MASK = "********"


class KeyType(StrEnum):
    """Key algorithms the CA can use for its own keys."""

    EC_P256 = "ec-p256"
    EC_P384 = "ec-p384"
    RSA_3072 = "rsa-3072"


class _Section(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class DatabaseSettings(_Section):
    url: str | None = Field(
        default=None,
        description="SQLAlchemy URL; default is SQLite in the data directory. "
        "PostgreSQL: postgresql+psycopg://user:password@host/db",
    )

    @field_validator("url")
    @classmethod
    def _known_backend(cls, value: str | None) -> str | None:
        if value is not None and not value.startswith(("sqlite", "postgresql")):
            raise ValueError("only sqlite:// and postgresql+psycopg:// URLs are supported")
        return value


class LimitSettings(_Section):
    """What one client may make the HTTP server hold (docs/security.md)."""

    max_header_bytes: int = Field(
        default=16_384,
        ge=1024,
        le=1_048_576,
        description="Request line plus headers; larger requests get 431",
    )
    max_headers: int = Field(default=100, ge=8, le=1000, description="More headers get 431")
    header_timeout_seconds: float = Field(
        default=10.0,
        gt=0,
        le=300,
        description="Time to send a request's line and headers, from its first byte "
        "(or from the connection); then 408 and the connection is closed",
    )
    body_timeout_seconds: float = Field(
        default=30.0,
        gt=0,
        le=3600,
        description="Longest pause while a request's body arrives (after the headers, or "
        "between two parts of it); then the connection is closed",
    )
    handshake_timeout_seconds: float = Field(
        default=10.0, gt=0, le=300, description="Time to complete the TLS handshake"
    )
    keep_alive_seconds: float = Field(
        default=30.0, gt=0, le=3600, description="An idle kept-alive connection is closed"
    )
    max_connections: int = Field(
        default=1024,
        ge=1,
        le=100_000,
        description="Open connections per server process; more are closed at once",
    )
    max_connections_per_source: int = Field(
        default=64,
        ge=1,
        le=100_000,
        description="Open connections per client address and process (trusted proxies "
        "are exempt); more are answered 503 and closed",
    )


class ServerSettings(_Section):
    host: str = "127.0.0.1"
    port: int = Field(default=8443, ge=0, le=65535)
    public_url: str | None = Field(
        default=None, description="Base URL devices use; default https://HOST:PORT"
    )
    tls: bool = Field(default=True, description="Serve HTTPS (turn off only behind a proxy)")
    san: list[str] = Field(
        default_factory=lambda: ["localhost", "127.0.0.1", "::1"],
        description="DNS names and IP addresses in the server certificate",
    )
    client_certificates: Literal["none", "optional"] = "optional"
    trusted_proxies: list[str] = Field(
        default_factory=list,
        description="Addresses or networks allowed to forward a client certificate",
    )
    client_cert_header: str = Field(
        default="X-Client-Cert",
        description=(
            "Header carrying the client certificate from a trusted proxy: PEM (URL-encoded"
            " or not) or base64 DER"
        ),
    )
    max_body_bytes: int = Field(default=1_048_576, ge=1024)
    max_upload_bytes: int = Field(
        default=16_777_216,
        ge=1024,
        description="Body limit of the OOB-secret bulk imports (API and console upload)",
    )
    workers: int | None = Field(
        default=None,
        ge=1,
        le=64,
        description="Server processes sharing the port; unset: one per core (see worker_count)",
    )
    hsts_max_age_seconds: int = Field(
        default=63_072_000,
        ge=0,
        description="max-age of Strict-Transport-Security on every HTTPS response; 0 omits it",
    )
    limits: LimitSettings = Field(default_factory=LimitSettings)

    @field_validator("trusted_proxies")
    @classmethod
    def _networks(cls, value: list[str]) -> list[str]:
        for item in value:
            try:
                ipaddress.ip_network(item, strict=False)
            except ValueError:
                raise ValueError(f"{item!r} is not an IP address or network") from None
        return value

    @field_validator("san")
    @classmethod
    def _san_not_empty(cls, value: list[str]) -> list[str]:
        if not value:
            raise ValueError("at least one DNS name or IP address is needed")
        return value

    def base_url(self) -> str:
        """The URL clients use to reach this server."""
        if self.public_url:
            return self.public_url.rstrip("/")
        scheme = "https" if self.tls else "http"
        host = f"[{self.host}]" if ":" in self.host else self.host
        return f"{scheme}://{host}:{self.port}"


class Pkcs11Settings(_Section):
    """CA keys in a PKCS#11 token (an HSM); used when ``library`` is set."""

    library: Path | None = Field(
        default=None,
        description="PKCS#11 module, e.g. /usr/lib/softhsm/libsofthsm2.so; unset: keys in files",
    )
    token_label: str = Field(default="imprint", description="Label of the token holding the keys")
    issuing_key_label: str = Field(default="imprint-issuing", description="Issuing CA key's label")
    root_key_label: str = Field(default="imprint-root", description="Root CA key's label")
    pin_file: Path | None = Field(
        default=None,
        description="File holding the user PIN (else the IMPRINT_PKCS11_PIN variable)",
    )


class CASettings(_Section):
    key_type: KeyType = KeyType.EC_P256
    root_name: str = "imprint Root CA"
    issuing_name: str = "imprint Issuing CA"
    organization: str | None = None
    root_validity_days: int = Field(default=3650, ge=1)
    issuing_validity_days: int = Field(default=1825, ge=1)
    passphrase: SecretStr | None = Field(
        default=None, description="Passphrase of the CA keys (prefer IMPRINT_CA__PASSPHRASE)"
    )
    passphrase_file: Path | None = Field(
        default=None,
        description="File holding the CA key passphrase; default DATA_DIR/ca-passphrase",
    )
    crl_validity_hours: int = Field(default=24, ge=1, description="CRL nextUpdate distance")
    pkcs11: Pkcs11Settings = Pkcs11Settings()
    crl_url: str | None = Field(
        default=None,
        description="Public URL of the issuing CA's CRL written into every certificate's CRL "
        "distribution point; default BASE_URL/crl/<issuing key id>.crl",
    )
    issuer_url: str | None = Field(
        default=None,
        description="Public URL of the issuing CA certificate (DER) in the AIA caIssuers "
        "entry; default BASE_URL/ca/issuing.crt",
    )
    ocsp_url: str | None = Field(
        default=None,
        description="Public URL of the OCSP responder in the AIA OCSP entry; default BASE_URL/ocsp",
    )

    @field_validator("crl_url", "issuer_url", "ocsp_url")
    @classmethod
    def _http_url(cls, value: str | None) -> str | None:
        if value is not None and not re.fullmatch(r"https?://[^\s/]+(/\S*)?", value):
            raise ValueError("an http:// or https:// URL")
        return value


class OcspSettings(_Section):
    validity_minutes: int = Field(
        default=60,
        ge=1,
        le=10080,
        description="Distance from a response's thisUpdate to its nextUpdate",
    )
    cache_seconds: int = Field(
        default=60,
        ge=0,
        le=3600,
        description="How long a worker reuses a signed response without a nonce (0: never); "
        "a revocation drops it at once in the process that delivers the change",
    )
    responder_validity_days: int = Field(
        default=7, ge=1, le=365, description="Lifetime of the delegated responder certificate"
    )
    responder_renew_before_hours: int = Field(
        default=48,
        ge=1,
        description="The responder certificate is replaced this long before it expires",
    )


class WebhookSettings(_Section):
    """Webhooks and provisioning hooks (docs/webhooks.md)."""

    allow_http_loopback: bool = Field(
        default=False,
        description="Accept http:// URLs to 127.0.0.1, ::1 or localhost for webhooks and "
        "provisioning hooks (tests and local development); every other URL must be https://",
    )
    timeout_seconds: float = Field(
        default=10.0, gt=0, le=60, description="How long one webhook delivery may take"
    )
    max_age_hours: int = Field(
        default=24,
        ge=1,
        le=720,
        description="A delivery still failing this long after its event is given up",
    )
    expiry_thresholds_days: list[int] = Field(
        default_factory=lambda: [30, 7, 1],
        description="certificate.expiring is sent once per certificate as it comes within "
        "each of these many days of its expiry",
    )
    expiry_scan_seconds: int = Field(
        default=300,
        ge=10,
        le=86400,
        description="How often the server looks for certificates crossing a threshold",
    )

    @field_validator("expiry_thresholds_days")
    @classmethod
    def _thresholds(cls, value: list[int]) -> list[int]:
        if len(value) > 10 or any(not 1 <= days <= 3650 for days in value):
            raise ValueError("at most 10 thresholds, each 1 to 3650 days")
        return sorted(set(value), reverse=True)


class EstSettings(_Section):
    channel_binding_required: list[str] = Field(
        default_factory=list,
        description="EST labels (enrollment ids) whose enrollments must carry the TLS "
        "channel binding in the CSR's challengePassword; '*' for every enrollment",
    )


class ProfileSettings(_Section):
    device_validity_days: int = Field(default=90, ge=1)
    client_validity_days: int = Field(default=30, ge=1)
    server_validity_days: int = Field(default=90, ge=1)


class SecretsSettings(_Section):
    key: SecretStr | None = Field(
        default=None,
        description="Key-encryption key, 32 bytes in base64 (prefer IMPRINT_SECRETS__KEY)",
    )
    key_file: Path | None = Field(
        default=None,
        description="File holding the key-encryption key; default DATA_DIR/secrets.key",
    )


class OAuthClientSettings(BaseModel):
    """A development OAuth client, with the field names of plgd's mockoauthserver."""

    model_config = ConfigDict(extra="forbid", frozen=True, populate_by_name=True)

    name: str = Field(min_length=1, max_length=100)
    client_id: str = Field(alias="clientID", min_length=1, max_length=100)
    client_secret: SecretStr | None = Field(
        default=None, alias="clientSecret", description="None: a public client (PKCE only)"
    )
    grant_type: Literal["clientCredentials", "authorizationCode"] = Field(
        default="authorizationCode", alias="grantType"
    )
    scopes: list[str] = Field(default_factory=list)
    audience: str | None = Field(default=None, description="aud of its tokens")
    redirect_url: str | None = Field(default=None, alias="redirectURL")
    use_in_ui: bool = Field(default=False, alias="useInUi")
    owner: str | None = Field(
        default=None, max_length=100, description="Organization id for the owner claim"
    )
    role: Literal["viewer", "operator", "admin"] = "viewer"

    @field_validator("client_secret")
    @classmethod
    def _secret_not_empty(cls, value: SecretStr | None) -> SecretStr | None:
        if value is not None and not value.get_secret_value():
            raise ValueError("an empty secret: leave clientSecret out for a public client")
        return value


class OIDCSettings(_Section):
    issuer: str | None = Field(
        default=None, description="External OpenID provider; its tokens are accepted too"
    )
    jwks_url: str | None = Field(
        default=None, description="Its JWKS; default the jwks_uri of its discovery document"
    )
    audience: str | None = Field(default=None, description="The aud its tokens must carry")
    owner_claim: str | None = Field(
        default=None, description="Claim with the organization id; default auth.owner_claim"
    )
    roles_claim: str = Field(default="roles", description="Claim with admin/operator/viewer")
    default_role: Literal["viewer", "operator", "admin"] | None = Field(
        default=None, description="Role when the roles claim names none (None: refuse)"
    )
    console_client_id: str | None = Field(
        default=None,
        max_length=200,
        description="Client id of the console at this provider: enables its sign-in button",
    )
    console_client_secret: SecretStr | None = Field(
        default=None, description="That client's secret; None: a public client (PKCE only)"
    )


class AuthSettings(_Section):
    issuer: str | None = Field(default=None, description="iss of tokens; default the base URL")
    audience: str | None = Field(
        default=None, description="aud the admin API accepts; default the base URL"
    )
    owner_claim: str = Field(
        default="https://plgd.dev/owner", min_length=1, description="Claim with the org id"
    )
    token_lifetime_seconds: int = Field(default=3600, ge=60, le=86_400)
    code_lifetime_seconds: int = Field(default=60, ge=10, le=600)
    device_code_lifetime_seconds: int = Field(
        default=600, ge=60, le=1800, description="How long a device login code may be approved"
    )
    device_poll_interval_seconds: int = Field(
        default=5, ge=1, le=60, description="How often a device login may poll the token endpoint"
    )
    self_registration: bool = Field(
        default=False, description="POST /api/v1/signup creates an organization and its admin"
    )
    clients: list[OAuthClientSettings] = Field(
        default_factory=list, description="Development OAuth clients (mockoauthserver fields)"
    )
    oidc: OIDCSettings = OIDCSettings()


class ChannelSettings(_Section):
    min_write_interval_seconds: float = Field(
        default=1.0,
        ge=0,
        le=86_400,
        description="Least time between two entries of one channel (0: no limit)",
    )


class IdentitySettings(_Section):
    relay_lifetime_seconds: int = Field(
        default=60, ge=1, le=3600, description="How long a browser-relay state lives"
    )
    relay_requests_per_minute: int = Field(
        default=20, ge=1, description="Relay requests one source address may start per minute"
    )


class LoggingSettings(_Section):
    level: Literal["debug", "info", "warning", "error"] = "info"
    json_format: bool = Field(default=False, alias="json")

    model_config = ConfigDict(extra="forbid", frozen=True, populate_by_name=True)


class DiscoverySettings(_Section):
    enabled: bool = Field(
        default=False, description="Advertise _imprint._tcp and _idprov._tcp by DNS-SD (mDNS)"
    )
    interfaces: list[str] = Field(
        default_factory=list,
        description="IPv4 addresses to advertise on and to announce (default: all)",
    )
    name: str = Field(
        default="imprint", min_length=1, max_length=60, description="DNS-SD instance name"
    )

    @field_validator("interfaces")
    @classmethod
    def _ipv4(cls, value: list[str]) -> list[str]:
        for item in value:
            try:
                ipaddress.IPv4Address(item)
            except ValueError:
                raise ValueError(f"{item!r} is not an IPv4 address") from None
        return value


class MqttSettings(_Section):
    enabled: bool = Field(
        default=False,
        description="Keep the broker's CRL and ACL files in mqtt.dir current on every "
        "issuance and revocation, and make the broker reload them",
    )
    dir: Path | None = Field(
        default=None, description="Where 'imprint mqtt config' writes; default DATA_DIR/mqtt"
    )
    host: str = Field(default="127.0.0.1", description="Address the broker listens on")
    port: int = Field(default=8883, ge=1, le=65535, description="The broker's TLS port")
    san: list[str] = Field(
        default_factory=lambda: ["localhost", "127.0.0.1"],
        description="DNS names and IP addresses in the broker's certificate",
    )
    pid_file: Path | None = Field(
        default=None,
        description="The broker's pid file: it gets SIGHUP after the files change "
        "(default: MQTT_DIR/mosquitto.pid)",
    )
    reload_command: list[str] = Field(
        default_factory=list,
        description="Run instead of SIGHUP to reload the broker, e.g. [systemctl, reload, "
        "mosquitto]",
    )

    @field_validator("san")
    @classmethod
    def _san_not_empty(cls, value: list[str]) -> list[str]:
        if not value:
            raise ValueError("at least one DNS name or IP address is needed")
        return value


_SERVICE_NAME = re.compile(r"[a-z][a-z0-9-]{0,31}")


class Settings(BaseSettings):
    """The whole effective configuration."""

    model_config = SettingsConfigDict(
        env_prefix=ENV_PREFIX,
        env_nested_delimiter="__",
        extra="forbid",
        frozen=True,
    )

    data_dir: Path = Path("data")
    development: bool = Field(
        default=False, description="Allow unencrypted CA keys (never in production)"
    )
    database: DatabaseSettings = DatabaseSettings()
    server: ServerSettings = ServerSettings()
    ca: CASettings = CASettings()
    profiles: ProfileSettings = ProfileSettings()
    secrets: SecretsSettings = SecretsSettings()
    logging: LoggingSettings = LoggingSettings()
    auth: AuthSettings = AuthSettings()
    identities: IdentitySettings = IdentitySettings()
    channels: ChannelSettings = ChannelSettings()
    services: dict[str, str] = Field(
        default_factory=dict,
        description="Services devices should use, by name (e.g. mqtt: mqtts://broker:8883)",
    )
    discovery: DiscoverySettings = DiscoverySettings()
    mqtt: MqttSettings = MqttSettings()
    ocsp: OcspSettings = OcspSettings()
    est: EstSettings = EstSettings()
    webhooks: WebhookSettings = WebhookSettings()

    @field_validator("services")
    @classmethod
    def _service_names(cls, value: dict[str, str]) -> dict[str, str]:
        for name, address in value.items():
            if not _SERVICE_NAME.fullmatch(name):
                raise ValueError(f"{name!r}: a service name is lowercase letters, digits and -")
            if not address or len(address) > 500:
                raise ValueError(f"{name}: an address of 1 to 500 characters")
        return value

    @classmethod
    def settings_customise_sources(
        cls,
        settings_cls: type[BaseSettings],
        init_settings: PydanticBaseSettingsSource,
        env_settings: PydanticBaseSettingsSource,
        dotenv_settings: PydanticBaseSettingsSource,
        file_secret_settings: PydanticBaseSettingsSource,
    ) -> tuple[PydanticBaseSettingsSource, ...]:
        # The YAML file arrives through init_settings (see load_settings).
        return (env_settings, init_settings)

    def database_url(self) -> str:
        """The SQLAlchemy URL, defaulting to SQLite in the data directory."""
        if self.database.url:
            return self.database.url
        return f"sqlite:///{(self.data_dir / 'imprint.db').resolve()}"

    def worker_count(self) -> int:
        """``server.workers``, or when unset: one process per core this process may run
        on (decision 0013: the processes hear of each other's changes within
        milliseconds, on PostgreSQL and on a SQLite file alike); one for SQLite in
        memory, which is the process's own."""
        if self.server.workers is not None:
            return self.server.workers
        scheme, _, rest = self.database_url().partition("://")
        database = rest.partition("?")[0].removeprefix("/")  # as store.db.sqlite_file
        in_memory = database in ("", ":memory:") or database.startswith("file:")
        if scheme.startswith("sqlite") and in_memory:
            return 1
        return max(1, min(64, len(os.sched_getaffinity(0))))

    @property
    def ca_dir(self) -> Path:
        return self.data_dir / "ca"

    def layout(self) -> DataLayout:
        """Where the files of this configuration's data directory are."""
        return DataLayout(self.data_dir, CAFiles(self.ca_dir))

    def passphrase_path(self) -> Path:
        return self.ca.passphrase_file or self.data_dir / "ca-passphrase"

    def mqtt_dir(self) -> Path:
        return self.mqtt.dir or self.data_dir / "mqtt"

    def secrets_key_path(self) -> Path:
        return self.secrets.key_file or self.data_dir / "secrets.key"

    def masked(self) -> dict[str, Any]:
        """The configuration as plain data, with every secret replaced by ``********``."""
        data = self.model_dump(mode="json", by_alias=True)
        if self.ca.passphrase is not None:
            data["ca"]["passphrase"] = MASK
        if self.secrets.key is not None:
            data["secrets"]["key"] = MASK
        for client in data["auth"]["clients"]:
            if client.get("clientSecret") is not None:
                client["clientSecret"] = MASK
        if self.database.url:
            data["database"]["url"] = _mask_url_password(self.database.url)
        data["database"]["effective_url"] = _mask_url_password(self.database_url())
        return data


def _mask_url_password(url: str) -> str:
    from sqlalchemy.engine import make_url

    try:
        parsed = make_url(url)
    except Exception:  # an unparseable URL is reported elsewhere
        return url
    if parsed.password is None:
        return url
    return parsed.render_as_string(hide_password=True).replace(":***@", f":{MASK}@")


def _known_env_keys(model: type[BaseModel], prefix: str) -> set[str]:
    keys: set[str] = set()
    for name, field in model.model_fields.items():
        names = {name.upper()}
        if field.alias:
            names.add(field.alias.upper())
        annotation = field.annotation
        for key in names:
            full = f"{prefix}{key}"
            if isinstance(annotation, type) and issubclass(annotation, BaseModel):
                keys.add(full)
                keys |= _known_env_keys(annotation, f"{full}__")
            else:
                keys.add(full)
    return keys


def _check_environment(environ: dict[str, str]) -> None:
    known = _known_env_keys(Settings, ENV_PREFIX) | {CONFIG_ENV, PKCS11_PIN_ENV} | CLIENT_ENV
    for key in sorted(environ):
        if key.upper().startswith(ENV_PREFIX) and key.upper() not in known:
            raise ConfigurationError(f"unknown configuration variable {key}")


def _read_yaml(path: Path) -> dict[str, Any]:
    try:
        text = path.read_text(encoding="utf-8")
    except OSError as exc:
        raise ConfigurationError(f"cannot read configuration file {path}: {exc.strerror}") from None
    try:
        data = yaml.safe_load(text)
    except yaml.YAMLError as exc:
        raise ConfigurationError(f"configuration file {path} is not valid YAML: {exc}") from None
    if data is None:
        return {}
    if not isinstance(data, dict):
        raise ConfigurationError(f"configuration file {path} must hold a mapping at the top")
    return data


def describe_validation_error(error: ValidationError, origin: str) -> str:
    lines = []
    for item in error.errors():
        key = ".".join(str(part) for part in item["loc"]) or "(top level)"
        message = item["msg"]
        if item["type"] == "extra_forbidden":
            message = "unknown key"
        lines.append(f"{key}: {message}")
    return f"invalid configuration ({origin}): " + "; ".join(lines)


def load_settings(config_file: Path | None = None) -> Settings:
    """Build the effective settings.

    Args:
        config_file: YAML file to read. Defaults to ``$IMPRINT_CONFIG``, then
            ``./imprint.yaml`` when it exists, then no file at all.

    Returns:
        The validated settings.

    Raises:
        ConfigurationError: a file that cannot be read, an unknown key, a bad value.
    """
    env = dict(os.environ)
    _check_environment(env)
    if config_file is None and env.get(CONFIG_ENV):
        config_file = Path(env[CONFIG_ENV])
    if config_file is None and DEFAULT_CONFIG_FILE.is_file():
        config_file = DEFAULT_CONFIG_FILE
    data = _read_yaml(config_file) if config_file is not None else {}
    origin = (
        f"file {config_file} and IMPRINT_* environment" if config_file else "IMPRINT_* environment"
    )
    try:
        return Settings(**data)
    except ValidationError as exc:
        raise ConfigurationError(describe_validation_error(exc, origin)) from None
