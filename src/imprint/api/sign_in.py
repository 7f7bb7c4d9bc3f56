"""The password check shared by every sign-in form: the OAuth authorize page, the
browser relay's approval page and the console."""

from __future__ import annotations

from typing import Any

from imprint.app.auditing import audit
from imprint.auth.passwords import verify_password
from imprint.runtime import Runtime
from imprint.tenancy.users import User, canonical_username

__all__ = ["check_password"]


def check_password(
    runtime: Runtime, source: str | None, username: str, password: str, **details: Any
) -> User | None:
    """The enabled user with this name and password, else None.

    A mismatch counts as a failure for the address and for the user name, and writes a
    failed ``user.login`` audit entry with ``details`` (which form it came from). The
    password is verified even for an unknown name, so timing does not tell which
    names exist.

    Raises:
        TooManyAttempts: too many recent failures for the address or the user name.
    """
    username = canonical_username(username)[:200]  # bounds the limiter's keys too
    runtime.login_limiter.check(source, f"user:{username}")
    user = runtime.users.find_by_username(username) if username else None
    if (
        not verify_password(user.password_hash if user else None, password)
        or user is None
        or user.disabled
    ):
        runtime.login_limiter.failure(source, f"user:{username}")
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
