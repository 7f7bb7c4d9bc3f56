"""plgd's Device Provisioning Service values (the Helm values YAML), read as imprint's
enrollment groups and OAuth clients.

What is read:

- ``global.ownerClaim``: the claim that carries the owner (compared with
  ``auth.owner_claim``, which the caller reports on);
- ``mockoauthserver.oauth[]``: OAuth clients (name, clientID, clientSecret, grantType,
  scopes, audience, redirectURL, useInUi), as ``auth.clients`` reads them;
- ``deviceProvisioningService.enrollmentGroups[]``: id, owner, preSharedKey,
  ``attestationMechanism.x509`` (certificateChain, leadCertificateName,
  expiredCertificateEnabled) and ``hub.authorization.provider`` (name, clientId,
  clientSecret, scopes, audience; ``tokenURL`` for an external token endpoint).

Everything else in the file (images, services, the hub's own settings) is not
imprint's business and is left alone; fields of an enrollment group that imprint does
not use are reported as ignored. :func:`apply_values` is idempotent: a second import
of the same file changes nothing.
"""

from __future__ import annotations

import hmac
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field, replace
from typing import Any, Literal

import yaml
from pydantic import ValidationError

from imprint.auth.clients import (
    CLIENT_CREDENTIALS,
    OAuthClient,
    OAuthClientStore,
    configured_clients,
    secret_digest,
)
from imprint.errors import ConfigurationError, InvalidValue, NotFound
from imprint.provisioning.enrollments import (
    Enrollment,
    EnrollmentStore,
    now,
    validate_enrollment,
)
from imprint.provisioning.specs import EnrollmentSpec, enrollment_from
from imprint.settings import OAuthClientSettings

__all__ = ["Action", "PlgdValues", "apply_values", "hub_provider_problems", "read_values"]

_PEM_END = "-----END CERTIFICATE-----"
_GROUP_FIELDS = {"id", "owner", "preSharedKey", "attestationMechanism", "hub", "name"}
_X509_FIELDS = {
    "certificateChain": "certificate_chain",
    "leadCertificateName": "lead_certificate_name",
    "expiredCertificateEnabled": "accept_expired",
}
_PROVIDER_FIELDS = {
    "name",
    "clientId",
    "clientID",
    "clientSecret",
    "scopes",
    "audience",
    "tokenURL",
    "tokenUrl",
}


@dataclass(frozen=True, slots=True)
class PlgdValues:
    """What a values file asks of imprint, checked but not yet applied."""

    owner_claim: str | None
    clients: tuple[tuple[str, OAuthClient], ...]  # (where in the file, the client)
    enrollments: tuple[tuple[str, Enrollment], ...]
    notes: tuple[str, ...] = ()


@dataclass(frozen=True, slots=True)
class Action:
    """One thing the import did (or, on a dry run, would do)."""

    kind: Literal["client", "enrollment"]
    target: str
    result: Literal["created", "updated", "unchanged", "skipped"]
    detail: str = ""

    def __str__(self) -> str:
        label = "oauth client" if self.kind == "client" else "enrollment"
        tail = f" ({self.detail})" if self.detail else ""
        return f"{label} {self.target}: {self.result}{tail}"


def _mapping(value: object, where: str) -> Mapping[str, Any]:
    if value is None:
        return {}
    if not isinstance(value, dict):
        raise InvalidValue(f"{where}: expected a mapping")
    return value


def _list(value: object, where: str) -> list[Any]:
    if value is None:
        return []
    if not isinstance(value, list):
        raise InvalidValue(f"{where}: expected a list")
    return value


def _split_chain(text: object, where: str) -> list[str]:
    if not isinstance(text, str):
        raise InvalidValue(f"{where}: a PEM certificate chain")
    parts = [part.strip() for part in text.split(_PEM_END) if part.strip()]
    return [f"{part}\n{_PEM_END}\n" for part in parts]


def _problems(exc: ValidationError) -> str:
    return "; ".join(
        f"{'.'.join(str(p) for p in e['loc'])}: {e['msg']}" for e in exc.errors(include_url=False)
    )


def _group_spec(group: Mapping[str, Any], where: str, notes: list[str]) -> EnrollmentSpec:
    """The enrollment spec of one ``enrollmentGroups`` entry."""
    ignored = sorted(set(group) - _GROUP_FIELDS)
    group_id = group.get("id")
    if not isinstance(group_id, str) or not group_id:
        raise InvalidValue(f"{where}.id: every enrollment group needs its id")
    owner = group.get("owner")
    if owner is None or isinstance(owner, bool | dict | list):
        raise InvalidValue(f"{where}.owner: the owner the group's devices belong to")
    mechanisms = _mapping(group.get("attestationMechanism"), f"{where}.attestationMechanism")
    x509 = _mapping(mechanisms.get("x509"), f"{where}.attestationMechanism.x509")
    if not x509:
        raise InvalidValue(f"{where}.attestationMechanism.x509: imprint reads x509 groups only")
    ignored += [f"attestationMechanism.{k}" for k in sorted(set(mechanisms) - {"x509"})]
    ignored += [f"attestationMechanism.x509.{k}" for k in sorted(set(x509) - set(_X509_FIELDS))]
    x509_spec: dict[str, Any] = {
        ours: x509[theirs] for theirs, ours in _X509_FIELDS.items() if theirs in x509
    }
    x509_spec["certificate_chain"] = _split_chain(
        x509.get("certificateChain"), f"{where}.attestationMechanism.x509.certificateChain"
    )
    body: dict[str, Any] = {
        "id": group_id.lower(),
        "mechanism": "x509",
        "owner": str(owner),
        "pre_shared_key": group.get("preSharedKey") or None,
        "x509": x509_spec,
    }
    hub = _mapping(group.get("hub"), f"{where}.hub")
    ignored += [f"hub.{k}" for k in sorted(set(hub) - {"authorization"})]
    authorization = _mapping(hub.get("authorization"), f"{where}.hub.authorization")
    ignored += [f"hub.authorization.{k}" for k in sorted(set(authorization) - {"provider"})]
    provider = _mapping(authorization.get("provider"), f"{where}.hub.authorization.provider")
    if provider:
        if "authority" in provider and not ({"tokenURL", "tokenUrl"} & set(provider)):
            raise InvalidValue(
                f"{where}.hub.authorization.provider.authority: imprint does not discover "
                "token endpoints; give tokenURL (the provider's token endpoint) instead, or "
                "leave both out to use imprint's own OAuth server"
            )
        unknown = sorted(set(provider) - _PROVIDER_FIELDS)
        ignored += [f"hub.authorization.provider.{k}" for k in unknown]
        body["hub"] = {
            "authorization": {"provider": {k: v for k, v in provider.items() if k not in unknown}}
        }
    if ignored:
        notes.append(f"{where} ({group_id}): ignored {', '.join(ignored)}")
    try:
        return EnrollmentSpec.model_validate(body)
    except ValidationError as exc:
        raise InvalidValue(f"{where}: {_problems(exc)}") from None


def read_values(text: str) -> PlgdValues:
    """Parse and check a values file; nothing is stored.

    Raises:
        InvalidValue: naming the place in the file (``deviceProvisioningService.
            enrollmentGroups.0.owner``) and what is wrong.
    """
    try:
        data = yaml.safe_load(text)
    except yaml.YAMLError as exc:
        raise InvalidValue(f"not YAML: {exc}") from None
    root = _mapping(data, "the file")
    notes: list[str] = []
    owner_claim = _mapping(root.get("global"), "global").get("ownerClaim")
    if owner_claim is not None and not isinstance(owner_claim, str):
        raise InvalidValue("global.ownerClaim: a claim name")
    clients: list[tuple[str, OAuthClient]] = []
    mock = _mapping(root.get("mockoauthserver"), "mockoauthserver")
    for index, item in enumerate(_list(mock.get("oauth"), "mockoauthserver.oauth")):
        where = f"mockoauthserver.oauth.{index}"
        try:
            parsed = OAuthClientSettings.model_validate(item)
            clients.append((where, configured_clients([parsed])[0]))
        except ValidationError as exc:
            raise InvalidValue(f"{where}: {_problems(exc)}") from None
        except ConfigurationError as exc:
            raise InvalidValue(f"{where}: {exc.message.partition(': ')[2]}") from None
    dps = _mapping(root.get("deviceProvisioningService"), "deviceProvisioningService")
    enrollments: list[tuple[str, Enrollment]] = []
    groups = _list(dps.get("enrollmentGroups"), "deviceProvisioningService.enrollmentGroups")
    for index, group in enumerate(groups):
        where = f"deviceProvisioningService.enrollmentGroups.{index}"
        enrollment = enrollment_from(_group_spec(_mapping(group, where), where, notes))
        try:
            validate_enrollment(enrollment)
        except InvalidValue as exc:
            raise InvalidValue(f"{where}: {exc.message}") from None
        enrollments.append((where, enrollment))
    if not clients and not enrollments:
        raise InvalidValue(
            "neither mockoauthserver.oauth nor deviceProvisioningService.enrollmentGroups: "
            "is this a plgd values file?"
        )
    return PlgdValues(owner_claim, tuple(clients), tuple(enrollments), tuple(notes))


@dataclass
class _Merged:
    client: OAuthClient
    names: list[str] = field(default_factory=list)


def _merge(a: OAuthClient, b: OAuthClient) -> OAuthClient:
    """One stored client for two entries of the same id and secret (plgd's ``test``)."""
    return replace(
        a,
        grant_types=tuple(dict.fromkeys((*a.grant_types, *b.grant_types))),
        scopes=tuple(dict.fromkeys((*a.scopes, *b.scopes))),
        redirect_uris=tuple(dict.fromkeys((*a.redirect_uris, *b.redirect_uris))),
        audience=a.audience or b.audience,
    )


def _same_client(a: OAuthClient, b: OAuthClient) -> bool:
    return (
        a.name == b.name
        and a.secret_sha256 == b.secret_sha256
        and set(a.grant_types) == set(b.grant_types)
        and set(a.scopes) == set(b.scopes)
        and a.audience == b.audience
        and set(a.redirect_uris) == set(b.redirect_uris)
    )


def _import_clients(
    values: PlgdValues,
    store: OAuthClientStore,
    configured: Sequence[OAuthClient],
    dry_run: bool,
) -> list[Action]:
    actions: list[Action] = []
    merged: dict[str, _Merged] = {}
    for where, client in values.clients:
        first = merged.get(client.client_id)
        if first is None:
            merged[client.client_id] = _Merged(client, [client.name])
            continue
        if first.client.secret_sha256 is None or not hmac.compare_digest(
            first.client.secret_sha256, client.secret_sha256 or ""
        ):
            actions.append(
                Action(
                    "client",
                    client.client_id,
                    "skipped",
                    f"{where} ({client.name}) reuses the client id with another secret; "
                    "give it its own id, or list it under auth.clients",
                )
            )
            continue
        first.client = _merge(first.client, client)
        first.names.append(client.name)
    stamp = now()
    for client_id, entry in merged.items():
        wanted = replace(entry.client, configured=False, created_at=stamp)
        if any(c.client_id == client_id for c in configured):
            actions.append(
                Action("client", client_id, "skipped", "configured in auth.clients already")
            )
            continue
        existing = store.find(client_id)
        if existing is None:
            if not dry_run:
                store.add(wanted)
            actions.append(Action("client", client_id, "created", _client_detail(entry)))
            continue
        # Keep what an administrator decided since: the organization and the role.
        wanted = replace(wanted, org_id=existing.org_id, role=existing.role)
        if _same_client(existing, wanted):
            actions.append(Action("client", client_id, "unchanged", _client_detail(entry)))
            continue
        if not dry_run:
            store.remove(client_id)
            store.add(replace(wanted, created_at=existing.created_at or stamp))
        actions.append(Action("client", client_id, "updated", _client_detail(entry)))
    return actions


def _client_detail(entry: _Merged) -> str:
    client = entry.client
    names = " and ".join(entry.names)
    if len(entry.names) > 1:
        names += " (one client: same id and secret)"
    audience = f", audience {client.audience}" if client.audience else ""
    return f"{names}, {' + '.join(client.grant_types)}{audience}"


def _enrollment_detail(enrollment: Enrollment) -> str:
    parts = [enrollment.mechanism.value, f"owner {enrollment.owner}"]
    if enrollment.pre_shared_key is not None:
        parts.append("pre-shared key")
    if enrollment.hub is not None:
        where = enrollment.hub.token_url or "imprint's OAuth server"
        parts.append(f"hub provider {enrollment.hub.name} via {where}")
    return ", ".join(parts)


def _import_enrollments(values: PlgdValues, store: EnrollmentStore, dry_run: bool) -> list[Action]:
    actions: list[Action] = []
    for _where, enrollment in values.enrollments:
        try:
            existing = store.get(enrollment.id)
        except NotFound:
            existing = None
        if existing is None:
            if not dry_run:
                store.add(enrollment)
            actions.append(
                Action("enrollment", enrollment.id, "created", _enrollment_detail(enrollment))
            )
            continue
        # An administrator's enable/disable stands; everything else follows the file.
        wanted = replace(
            enrollment,
            enabled=existing.enabled,
            created_at=existing.created_at,
            updated_at=existing.updated_at,
        )
        if wanted == existing:
            actions.append(
                Action("enrollment", enrollment.id, "unchanged", _enrollment_detail(existing))
            )
            continue
        changed = sorted(
            name
            for name in Enrollment.__dataclass_fields__
            if getattr(wanted, name) != getattr(existing, name)
        )
        if not dry_run:
            store.replace(replace(wanted, updated_at=now()))
        actions.append(Action("enrollment", enrollment.id, "updated", ", ".join(changed)))
    return actions


def apply_values(
    values: PlgdValues,
    *,
    enrollments: EnrollmentStore,
    clients: OAuthClientStore,
    configured: Sequence[OAuthClient] = (),
    dry_run: bool = False,
) -> list[Action]:
    """Create or update the OAuth clients and enrollment groups of ``values``.

    Clients that share an id and secret (the seed's ``plgd.dps`` and ``plgd.web`` are
    both ``test``/``test``) become one stored client with both grants, named after the
    first. An id already
    configured in ``auth.clients`` is left to the configuration.

    Returns:
        What was done (or, with ``dry_run``, would be done), one action per object.
    """
    actions = _import_clients(values, clients, configured, dry_run)
    return [*actions, *_import_enrollments(values, enrollments, dry_run)]


def hub_provider_problems(
    values: PlgdValues, known: Callable[[str], Sequence[OAuthClient]]
) -> tuple[list[str], list[str]]:
    """Check each enrollment's hub provider before anything is stored, so a wrong id
    or secret is refused at import rather than at a device's first provisioning.

    A provider without ``tokenURL`` gets its tokens from imprint's own OAuth server: its
    client id and secret must authenticate against a client of the file or one imprint
    knows already (``known(client_id)``: configured, then stored), and that client must
    be allowed ``client_credentials``. A provider with ``tokenURL`` is another server's
    client; it is only noted.

    Returns:
        (problems, notes): each problem names the enrollment and the provider.
    """
    in_file: dict[str, list[OAuthClient]] = {}
    for _where, client in values.clients:
        in_file.setdefault(client.client_id, []).append(client)
    problems: list[str] = []
    notes: list[str] = []
    for where, enrollment in values.enrollments:
        provider = enrollment.hub
        if provider is None:
            continue
        label = f"{where} ({enrollment.id}): hub provider {provider.name!r}"
        if provider.token_url is not None:
            notes.append(
                f"{label} gets tokens from {provider.token_url}; its client secret is "
                "checked there, at the first provisioning"
            )
            continue
        candidates = [*in_file.get(provider.client_id, []), *known(provider.client_id)]
        if not candidates:
            problems.append(
                f"{label} names client {provider.client_id!r}, which is neither in "
                "mockoauthserver.oauth nor a client imprint knows (auth.clients or "
                "imprint client create)"
            )
            continue
        digest = secret_digest(provider.client_secret)
        proven = [
            c
            for c in candidates
            if c.secret_sha256 is not None and hmac.compare_digest(c.secret_sha256, digest)
        ]
        if not proven:
            problems.append(
                f"{label}: the client secret does not match client {provider.client_id!r}"
            )
        elif not any(CLIENT_CREDENTIALS in c.grant_types for c in proven):
            problems.append(
                f"{label}: client {provider.client_id!r} may not use the client_credentials "
                "grant that hub tokens need"
            )
    return problems, notes
