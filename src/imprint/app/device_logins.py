"""Device logins (OAuth 2.0 Device Authorization Grant, RFC 8628): ``imprint login
--device`` asks for a code, the person approves it in the console signed in as
herself, and the command line's polls then get her access token.

Asking for a code and polling need no principal (the client is authenticated by the
token endpoint's own rules); approving or denying is the signed-in user's, audited as
``device_login.approve`` / ``device_login.deny``. The client's own changes are audited
with the client as the actor (``client:<client id>``), each in its transaction:
``device_login.start`` for a new code, ``device_login.complete`` for the poll that spends
an approved code and gets the user's token (issued by
:meth:`~imprint.app.sign_ins.SignInOperations.user_token`, the one path for users'
tokens; outcome ``failure`` when the user was disabled or removed meanwhile). Other polls
change no login's state and write no entry: pending, denied, expired, unknown, and
``slow_down`` (which only lengthens the client's polling interval; an entry for each
would let a client flood the log).
"""

from __future__ import annotations

from datetime import timedelta

from imprint.app.base import Operations
from imprint.app.sign_ins import UserToken, client_actor
from imprint.auth.clients import OAuthClient
from imprint.auth.device_codes import (
    DeviceAuthorization,
    PollAnswer,
    device_code_digest,
    new_device_authorization,
    user_code_digest,
)
from imprint.auth.errors import InvalidGrant
from imprint.errors import NotFound, PermissionDenied
from imprint.tenancy.access import Principal

__all__ = ["DeviceLoginOperations", "IssuedDeviceCode"]


class IssuedDeviceCode:
    """A new request: the codes to show (never stored) and how long they last."""

    def __init__(self, device_code: str, user_code: str, record: DeviceAuthorization) -> None:
        self.device_code = device_code
        self.user_code = user_code
        self.record = record


class DeviceLoginOperations(Operations):
    def start(self, client: OAuthClient, scope: str) -> IssuedDeviceCode:
        """A device code and user code for ``client`` (authenticated by the caller)."""
        auth = self._rt.settings.auth
        device_code, user_code, record = new_device_authorization(
            client_id=client.client_id,
            scope=scope,
            at=self._now(),
            lifetime=timedelta(seconds=auth.device_code_lifetime_seconds),
            interval=auth.device_poll_interval_seconds,
        )
        with self._transaction():
            self._rt.device_codes.add(record)
            self._audit(
                client_actor(client),
                "device_login.start",
                "oauth_client",
                client.client_id,
                org_id=client.org_id,
                scope=scope,
                expires_at=record.expires_at.isoformat(),
            )
        return IssuedDeviceCode(device_code, user_code, record)

    def pending(self, principal: Principal, user_code: str) -> DeviceAuthorization:
        """The request a person is about to approve.

        Raises:
            PermissionDenied: not a user of this instance.
            NotFound: no pending request has this code (mistyped, expired or decided).
        """
        self._user(principal)
        found = self._rt.device_codes.pending(user_code_digest(user_code), self._now())
        if found is None:
            raise NotFound("no sign-in waits for this code: it is mistyped, expired or used")
        return found

    def decide(self, principal: Principal, user_code: str, *, approve: bool) -> DeviceAuthorization:
        """Approve (the client gets the user's token at its next poll) or deny.

        The token carries the organization the user's console session acts for.

        Raises:
            PermissionDenied: not a user of this instance.
            NotFound: no pending request has this code.
        """
        self._user(principal)
        with self._transaction():
            decided = self._rt.device_codes.decide(
                user_code_digest(user_code),
                approve=approve,
                user_id=principal.subject,
                org_id=principal.owner,
                at=self._now(),
            )
            if decided is None:
                raise NotFound("no sign-in waits for this code: it is mistyped, expired or used")
            self._audit(
                principal,
                "device_login.approve" if approve else "device_login.deny",
                "user",
                principal.subject,
                org_id=principal.owner,
                client_id=decided.client_id,
            )
        return decided

    def poll(self, client: OAuthClient, device_code: str) -> tuple[PollAnswer, UserToken | None]:
        """One token request's answer; APPROVED once, with the user's token.

        Raises:
            InvalidGrant: the code was approved but its user is gone or disabled (the
                code is spent and the refusal audited).
        """
        refusal: InvalidGrant | None = None
        token: UserToken | None = None
        with self._transaction():
            answer, record = self._rt.device_codes.poll(
                device_code_digest(device_code), client.client_id, self._now()
            )
            if answer is not PollAnswer.APPROVED or record is None or record.user_id is None:
                return answer, None
            try:
                token = self._rt.app.sign_ins.user_token(
                    client, record.user_id, record.org_id, record.scope
                )
            except InvalidGrant as exc:
                refusal = exc
            details = {"client_id": client.client_id}
            if refusal is not None:
                details["reason"] = refusal.message
            self._audit(
                client_actor(client),
                "device_login.complete",
                "user",
                record.user_id,
                org_id=record.org_id,
                outcome="success" if refusal is None else "failure",
                **details,
            )
        if refusal is not None:  # raised once the spent code and its entry are committed
            raise refusal
        return answer, token

    @staticmethod
    def _user(principal: Principal) -> None:
        if principal.kind != "user":
            raise PermissionDenied(
                "a device login is approved by a user signed in with this instance's password"
            )
