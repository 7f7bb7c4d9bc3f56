"""The password check shared by every sign-in form: the OAuth authorize page, the
browser relay's approval page and the console."""

from __future__ import annotations

from typing import Any

from imprint.app.auditing import audit
from imprint.auth.passwords import verify_password
from imprint.provisioning.ratelimit import guessable_keys
from imprint.runtime import Runtime
from imprint.tenancy.users import User, canonical_username

__all__ = ["check_password"]


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
