"""What can go wrong on the device side, as one small tree.

::

    DeviceError                     anything this SDK raises on purpose
    ├── RequestRefused              the server said no (problem+json 4xx): .status, .code
    ├── ServiceUnavailable          5xx, 429 or no connection, still after every retry
    ├── PendingTimeout              still pending when the wait budget ran out
    ├── ProtocolError               an answer this SDK cannot read
    ├── VerificationFailed          the answer did not verify (MAC, key, chain)
    ├── StoreError                  the device directory is missing or inconsistent
    └── ServerNotFound              no URL given and discovery found no server

``RequestRefused`` is final: retrying the same request gets the same answer.
``ServiceUnavailable`` and ``PendingTimeout`` are worth trying again later.
Messages never contain a secret.
"""

from __future__ import annotations

__all__ = [
    "DeviceError",
    "PendingTimeout",
    "ProtocolError",
    "RequestRefused",
    "ServerNotFound",
    "ServiceUnavailable",
    "StoreError",
    "VerificationFailed",
]


class DeviceError(Exception):
    """Base class of every error the device SDK raises."""

    def __init__(self, message: str) -> None:
        super().__init__(message)
        self.message = message


class RequestRefused(DeviceError):
    """The server refused the request with a problem+json answer (4xx other than 429).

    Attributes:
        status: the HTTP status.
        code: the server's stable error code, e.g. ``signature_invalid``.
        detail: the server's explanation (it never contains a secret).
    """

    def __init__(self, status: int, code: str, detail: str) -> None:
        super().__init__(f"{status} {code}: {detail}")
        self.status = status
        self.code = code
        self.detail = detail


class ServiceUnavailable(DeviceError):
    """No usable answer after the retries: connection errors, 5xx or 429.

    Attributes:
        status: the last HTTP status, or None when there was no connection.
        code: the last problem code, when the server sent one.
        retry_after: seconds the server asked to wait, when it said so.
    """

    def __init__(
        self,
        message: str,
        *,
        status: int | None = None,
        code: str | None = None,
        retry_after: float | None = None,
    ) -> None:
        super().__init__(message)
        self.status = status
        self.code = code
        self.retry_after = retry_after


class PendingTimeout(DeviceError):
    """The request was still pending (e.g. awaiting approval) when the wait budget ran out.

    Provisioning again later with the same key picks up where this left off.
    """

    def __init__(self, message: str, *, request_id: str, device_id: str) -> None:
        super().__init__(message)
        self.request_id = request_id
        self.device_id = device_id


class ProtocolError(DeviceError):
    """The server's answer is not what the imprint device protocol describes."""


class VerificationFailed(DeviceError):
    """The answer did not verify: wrong response MAC, another key, or a broken chain."""


class StoreError(DeviceError):
    """The device directory lacks a file, or its files do not belong together."""


class ServerNotFound(DeviceError):
    """No server URL was given, and discovery (if any) found none."""
