"""Domain errors.

Every error carries a stable machine-readable ``code`` and a human message that is
safe to show to the caller (it never contains a secret). The web layer maps error
classes to HTTP statuses; nothing here knows about HTTP.

::

    ImprintError
    ├── ConfigurationError        bad or unknown configuration key
    ├── InvalidRequest            the caller sent something we cannot use
    │   ├── InvalidCSR            not a parseable PKCS#10 request
    │   ├── CSRSignatureInvalid   the CSR's self-signature does not verify
    │   ├── UnsupportedKey        key type or size not allowed
    │   ├── UnknownProfile        no certificate profile of that name
    │   └── InvalidValue          a field has a value we cannot accept
    ├── AuthenticationRequired    no or bad credentials
    ├── PermissionDenied          authenticated, but not allowed
    ├── NotFound                  no such object (or not visible to the caller)
    ├── Conflict                  the object's state forbids the operation
    ├── UpstreamError             a service imprint relies on failed or answered wrongly
    └── CAError                   the certificate authority cannot act
        ├── CANotInitialized      no CA material in the data directory
        ├── CAKeyLocked           passphrase missing or wrong
        └── UnencryptedCAKey      a plaintext CA key outside development mode
"""

from __future__ import annotations

__all__ = [
    "AuthenticationRequired",
    "CAError",
    "CAKeyLocked",
    "CANotInitialized",
    "CSRSignatureInvalid",
    "ConfigurationError",
    "Conflict",
    "ImprintError",
    "InvalidCSR",
    "InvalidRequest",
    "InvalidValue",
    "NotFound",
    "PermissionDenied",
    "UnencryptedCAKey",
    "UnknownProfile",
    "UnsupportedKey",
    "UpstreamError",
]


class ImprintError(Exception):
    """Base of every error imprint raises on purpose."""

    code = "error"

    def __init__(self, message: str, *, code: str | None = None) -> None:
        super().__init__(message)
        self.message = message
        if code is not None:
            self.code = code


class ConfigurationError(ImprintError):
    code = "config_invalid"


class InvalidRequest(ImprintError):
    code = "request_invalid"


class InvalidCSR(InvalidRequest):
    code = "csr_invalid"


class CSRSignatureInvalid(InvalidRequest):
    code = "csr_signature_invalid"


class UnsupportedKey(InvalidRequest):
    code = "key_unsupported"


class UnknownProfile(InvalidRequest):
    code = "profile_unknown"


class InvalidValue(InvalidRequest):
    code = "value_invalid"


class AuthenticationRequired(ImprintError):
    code = "authentication_required"


class PermissionDenied(ImprintError):
    code = "permission_denied"


class NotFound(ImprintError):
    code = "not_found"


class Conflict(ImprintError):
    code = "conflict"


class UpstreamError(ImprintError):
    code = "upstream_error"


class CAError(ImprintError):
    code = "ca_error"


class CANotInitialized(CAError):
    code = "ca_not_initialized"


class CAKeyLocked(CAError):
    code = "ca_key_locked"


class UnencryptedCAKey(CAError):
    code = "ca_key_unencrypted"
