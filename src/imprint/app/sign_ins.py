"""Sign-in operations: the authorization code with PKCE and the user's token.

:meth:`SignInOperations.authorize` stores the code of a person whose password the
sign-in form checked, with her ``user.login`` audit entry, in one transaction.
:meth:`SignInOperations.exchange_code` spends the code and, if everything matches, issues
her token, auditing ``authorization_code.exchange`` with the client as the actor
(``client:<client id>``). A code is used once even when the exchange is refused (a wrong
verifier, another redirect URI, an expired code): the refusal is audited with outcome
``failure`` and committed with the spent code before it is raised. An unknown or already
used code changes nothing and writes nothing.

:meth:`SignInOperations.user_token` is the one way a user's access token (and ID token)
is issued, for a code exchanged here and for an approved device login alike.

:func:`check_password` is the password check every sign-in form shares (the OAuth
authorize page, the browser relay's approval page, the console) and the password change.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import timedelta
from typing import Any

from imprint.app.auditing import audit
from imprint.app.base import Operations
from imprint.auth.clients import OAuthClient
from imprint.auth.codes import code_digest, new_authorization_code, verifier_matches
from imprint.auth.errors import InvalidGrant
from imprint.auth.passwords import verify_password
from imprint.errors import NotFound
from imprint.provisioning.ratelimit import guessable_keys
from imprint.runtime import Runtime
from imprint.tenancy.users import User, canonical_username

__all__ = ["SignInOperations", "UserToken", "check_password", "client_actor"]


@dataclass(frozen=True, slots=True)
class UserToken:
    """A user's access token, its lifetime in seconds and scope, and the ID token when
    the scope holds ``openid``."""

    access_token: str
    expires_in: int
    scope: str
    id_token: str | None = None


def check_password(
    runtime: Runtime, source: str | None, username: str, password: str, **details: Any
) -> User | None:
    """The enabled user with this name and password, else None.

    A password can be guessed: the attempt is limited before it is verified, per
    address, per user name from that address and per user name everywhere (decision
    0009), so strangers elsewhere cannot lock the user out. A mismatch counts as a
    failure and writes a failed ``user.login`` audit entry with ``details`` (which form
    it came from). The password is verified even for an unknown name, so timing does
    not tell which names exist.

    Raises:
        TooManyAttempts: too many recent failures for the address or the user name.
    """
    username = canonical_username(username)[:200]  # bounds the limiter's keys too
    with runtime.attempt_limiter.attempt(guessable_keys(f"user:{username}", source)) as attempt:
        user = runtime.users.find_by_username(username) if username else None
        proven = verify_password(user.password_hash if user else None, password)
        if not proven or user is None or user.disabled:
            attempt.failed()
    if attempt.counted:
        audit(
            runtime,
            f"user:{username}",
            "user.login",
            "user",
            user.id if user else None,
            outcome="failure",
            **details,
        )
        return None
    return user


def client_actor(client: OAuthClient) -> str:
    """The audit actor of an OAuth client acting for itself (as its tokens are named)."""
    return f"client:{client.client_id}"


class SignInOperations(Operations):
    def authorize(
        self,
        user: User,
        client: OAuthClient,
        *,
        redirect_uri: str,
        scope: str,
        nonce: str | None,
        code_challenge: str,
        organization: str | None = None,
    ) -> str:
        """Store an authorization code for ``user`` (whose password was checked) and
        ``client``, and audit her sign-in; the code, to send to the redirect URI.

        Args:
            organization: the organization she picked; by default (or if she is not a
                member of it) her first one.
        """
        roles = dict(user.memberships or {})
        org_id = organization if organization in roles else (sorted(roles)[0] if roles else None)
        code, record = new_authorization_code(
            client_id=client.client_id,
            user_id=user.id,
            org_id=org_id,
            redirect_uri=redirect_uri,
            scope=" ".join(dict.fromkeys(scope.split())),
            nonce=nonce,
            code_challenge=code_challenge,
            at=self._now(),
            lifetime=timedelta(seconds=self._rt.settings.auth.code_lifetime_seconds),
        )
        with self._transaction():
            self._rt.authorization_codes.add(record)
            self._audit(
                f"user:{user.username}",
                "user.login",
                "user",
                user.id,
                org_id=org_id,
                client_id=client.client_id,
            )
        return code

    def exchange_code(
        self, client: OAuthClient, code: str, verifier: str, redirect_uri: str
    ) -> UserToken:
        """Spend ``code`` for the user's token (authorization code grant with PKCE).

        Raises:
            InvalidGrant: unknown or used (nothing changed), or refused: expired, for
                another client or redirect URI, a verifier that does not match, a user
                gone or disabled (the code is spent and the refusal audited).
        """
        now = self._now()
        refusal: InvalidGrant | None = None
        with self._transaction():
            record = self._rt.authorization_codes.consume(code_digest(code), now)
            if record is None:
                raise InvalidGrant("the code is unknown, expired, used, or for another client")
            if (
                record.client_id != client.client_id
                or record.expires_at <= now
                or record.redirect_uri != redirect_uri
            ):
                refusal = InvalidGrant("the code is unknown, expired, used, or for another client")
            elif not verifier_matches(verifier, record.code_challenge):
                refusal = InvalidGrant("code_verifier does not match the code_challenge")
            else:
                try:
                    token = self.user_token(
                        client, record.user_id, record.org_id, record.scope, nonce=record.nonce
                    )
                except InvalidGrant as exc:
                    refusal = exc
            details: dict[str, Any] = {"client_id": client.client_id}
            if refusal is not None:
                details["reason"] = refusal.message
            self._audit(
                client_actor(client),
                "authorization_code.exchange",
                "user",
                record.user_id,
                org_id=record.org_id,
                outcome="success" if refusal is None else "failure",
                **details,
            )
        if refusal is not None:  # raised once the spent code and its entry are committed
            raise refusal
        return token

    def user_token(
        self,
        client: OAuthClient,
        user_id: str,
        org_id: str | None,
        scope: str,
        *,
        nonce: str | None = None,
    ) -> UserToken:
        """The user's access token for ``client`` (and an ID token for ``openid``).

        Raises:
            InvalidGrant: the user no longer exists or is disabled.
        """
        try:
            user = self._rt.users.get(user_id)
        except NotFound:
            raise InvalidGrant("the user no longer exists") from None
        if user.disabled:
            raise InvalidGrant("the user is disabled")
        scopes = scope.split()
        tokens = self._rt.tokens
        access_token, expires_in = tokens.issue(
            subject=user.id,
            client_id=client.client_id,
            audience=client.audience,
            scope=scopes,
            owner=org_id,
        )
        id_token = None
        if "openid" in scopes:
            extra: dict[str, Any] = {"preferred_username": user.username}
            if org_id is not None:
                extra[tokens.owner_claim] = org_id
            id_token = tokens.id_token(
                subject=user.id, client_id=client.client_id, nonce=nonce, extra=extra
            )
        return UserToken(access_token, expires_in, scope, id_token)
