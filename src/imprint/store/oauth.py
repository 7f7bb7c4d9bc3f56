"""OAuth clients, authorization codes and token signing keys on SQL."""

from __future__ import annotations

import json
from collections.abc import Sequence
from datetime import datetime

from sqlalchemy import delete, select, update
from sqlalchemy.engine import Engine, RowMapping
from sqlalchemy.exc import IntegrityError

from imprint.auth.clients import OAuthClient
from imprint.auth.codes import AuthorizationCode
from imprint.auth.tokens import SigningKeyRecord
from imprint.errors import Conflict, NotFound
from imprint.store.db import guarded, reading, writing
from imprint.store.tables import authorization_codes, oauth_clients, signing_keys
from imprint.tenancy.roles import Role

__all__ = ["SqlAuthorizationCodeStore", "SqlOAuthClientStore", "SqlSigningKeyStore"]


def _client(row: RowMapping) -> OAuthClient:
    return OAuthClient(
        client_id=row["client_id"],
        name=row["name"],
        secret_sha256=row["secret_sha256"],
        grant_types=tuple(json.loads(row["grant_types"])),
        scopes=tuple(json.loads(row["scopes"])),
        audience=row["audience"],
        redirect_uris=tuple(json.loads(row["redirect_uris"])),
        org_id=row["org_id"],
        role=Role(row["role"]),
        created_at=row["created_at"],
    )


class SqlOAuthClientStore:
    """Implements :class:`imprint.auth.clients.OAuthClientStore`."""

    def __init__(self, engine: Engine) -> None:
        self._engine = engine

    def add(self, client: OAuthClient) -> None:
        try:
            with writing(self._engine) as conn, guarded(conn):
                conn.execute(
                    oauth_clients.insert().values(
                        client_id=client.client_id,
                        name=client.name,
                        secret_sha256=client.secret_sha256,
                        grant_types=json.dumps(list(client.grant_types)),
                        scopes=json.dumps(list(client.scopes)),
                        audience=client.audience,
                        redirect_uris=json.dumps(list(client.redirect_uris)),
                        org_id=client.org_id,
                        role=client.role.value,
                        created_at=client.created_at,
                    )
                )
        except IntegrityError:
            raise Conflict(f"an OAuth client {client.client_id!r} exists already") from None

    def find(self, client_id: str) -> OAuthClient | None:
        with reading(self._engine) as conn:
            row = (
                conn.execute(select(oauth_clients).where(oauth_clients.c.client_id == client_id))
                .mappings()
                .first()
            )
        return None if row is None else _client(row)

    def search(self, org_ids: set[str] | None, limit: int) -> Sequence[OAuthClient]:
        query = select(oauth_clients).order_by(oauth_clients.c.name).limit(limit)
        if org_ids is not None:
            query = query.where(oauth_clients.c.org_id.in_(sorted(org_ids)))
        with reading(self._engine) as conn:
            return [_client(r) for r in conn.execute(query).mappings()]

    def set_secret(self, client_id: str, secret_sha256: str) -> None:
        with writing(self._engine) as conn:
            changed = conn.execute(
                update(oauth_clients)
                .where(oauth_clients.c.client_id == client_id)
                .values(secret_sha256=secret_sha256)
            ).rowcount
        if changed == 0:
            raise NotFound(f"no OAuth client {client_id!r}")

    def remove(self, client_id: str) -> None:
        with writing(self._engine) as conn:
            gone = conn.execute(delete(oauth_clients).where(oauth_clients.c.client_id == client_id))
            if gone.rowcount == 0:
                raise NotFound(f"no OAuth client {client_id!r}")


class SqlAuthorizationCodeStore:
    """Implements :class:`imprint.auth.codes.AuthorizationCodeStore`."""

    def __init__(self, engine: Engine) -> None:
        self._engine = engine

    def add(self, code: AuthorizationCode) -> None:
        with writing(self._engine) as conn:
            conn.execute(
                delete(authorization_codes).where(
                    authorization_codes.c.expires_at < code.created_at
                )
            )
            conn.execute(
                authorization_codes.insert().values(
                    code_sha256=code.code_sha256,
                    client_id=code.client_id,
                    user_id=code.user_id,
                    org_id=code.org_id,
                    redirect_uri=code.redirect_uri,
                    scope=code.scope,
                    nonce=code.nonce,
                    code_challenge=code.code_challenge,
                    expires_at=code.expires_at,
                    created_at=code.created_at,
                )
            )

    def consume(self, code_sha256: str, at: datetime) -> AuthorizationCode | None:
        where = authorization_codes.c.code_sha256 == code_sha256
        # In the caller's unit of work (the exchange's audit entry commits with it): the
        # exchange commits the spent code even when it then refuses the token request.
        with writing(self._engine) as conn:
            marked = conn.execute(
                update(authorization_codes)
                .where(where & authorization_codes.c.used_at.is_(None))
                .values(used_at=at)
            )
            if marked.rowcount != 1:
                return None
            row = conn.execute(select(authorization_codes).where(where)).mappings().one()
        return AuthorizationCode(
            code_sha256=row["code_sha256"],
            client_id=row["client_id"],
            user_id=row["user_id"],
            org_id=row["org_id"],
            redirect_uri=row["redirect_uri"],
            scope=row["scope"],
            nonce=row["nonce"],
            code_challenge=row["code_challenge"],
            expires_at=row["expires_at"],
            created_at=row["created_at"],
            used_at=row["used_at"],
        )


class SqlSigningKeyStore:
    """Implements :class:`imprint.auth.tokens.SigningKeyStore`."""

    def __init__(self, engine: Engine) -> None:
        self._engine = engine

    def add(self, record: SigningKeyRecord) -> None:
        with writing(self._engine) as conn:
            conn.execute(
                signing_keys.insert().values(
                    kid=record.kid,
                    private_key_sealed=record.private_key_sealed,
                    created_at=record.created_at,
                    retired_at=record.retired_at,
                )
            )

    def all(self) -> Sequence[SigningKeyRecord]:
        with reading(self._engine) as conn:
            rows = conn.execute(select(signing_keys).order_by(signing_keys.c.created_at))
            return [
                SigningKeyRecord(
                    kid=r.kid,
                    private_key_sealed=r.private_key_sealed,
                    created_at=r.created_at,
                    retired_at=r.retired_at,
                )
                for r in rows
            ]

    def retire(self, kid: str, at: datetime) -> None:
        with writing(self._engine) as conn:
            conn.execute(
                update(signing_keys)
                .where((signing_keys.c.kid == kid) & signing_keys.c.retired_at.is_(None))
                .values(retired_at=at)
            )
