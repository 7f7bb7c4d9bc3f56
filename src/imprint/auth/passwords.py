"""Passwords of people: argon2id hashes (argon2-cffi), checked in constant time.

Unknown users are checked against a dummy hash, so the time an answer takes does not
tell whether a user name exists.
"""

from __future__ import annotations

from functools import cache

from argon2 import PasswordHasher
from argon2.exceptions import InvalidHashError, VerificationError, VerifyMismatchError

from imprint.errors import InvalidValue

__all__ = ["MIN_PASSWORD_LENGTH", "check_password_policy", "hash_password", "verify_password"]

MIN_PASSWORD_LENGTH = 10
MAX_PASSWORD_LENGTH = 1024
_hasher = PasswordHasher()


@cache
def _dummy_hash() -> str:
    """Made on first use, not on import: every command-line start imports this module."""
    return _hasher.hash("imprint-dummy-password")


def check_password_policy(password: str) -> None:
    """Raises InvalidValue for a password that is too short or too long."""
    if not MIN_PASSWORD_LENGTH <= len(password) <= MAX_PASSWORD_LENGTH:
        raise InvalidValue(f"password: {MIN_PASSWORD_LENGTH} to {MAX_PASSWORD_LENGTH} characters")


def hash_password(password: str) -> str:
    """The argon2id hash (PHC string) of an acceptable password.

    Raises:
        InvalidValue: the password breaks the policy.
    """
    check_password_policy(password)
    return _hasher.hash(password)


def verify_password(stored_hash: str | None, password: str) -> bool:
    """True when ``password`` matches; a missing hash is checked against a dummy."""
    if len(password) > MAX_PASSWORD_LENGTH:
        return False
    try:
        return (
            bool(_hasher.verify(stored_hash or _dummy_hash(), password)) and stored_hash is not None
        )
    except (VerifyMismatchError, VerificationError, InvalidHashError):
        return False
