"""Application operations: the one way in for every change of state.

One module per aggregate. Each operation takes the :class:`~imprint.tenancy.access.Principal`
asking (an API key, a user, an OAuth client, ``cli:<os user>``), then in one transaction
finds what it names as that principal may see it (a foreign object is "not found"),
checks the role, acts, and writes the audit entry. API routes, console pages and CLI
commands parse their input, call one operation and render what it returns; device
protocols go through the provisioning use case instead (see docs/architecture.md).
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from imprint.app.certificates import CertificateOperations
from imprint.app.devices import DeviceOperations
from imprint.app.registration_keys import RegistrationKeyOperations

if TYPE_CHECKING:
    from imprint.runtime import Runtime

__all__ = ["Application"]


class Application:
    """Every aggregate's operations over one runtime (``runtime.app``)."""

    def __init__(self, runtime: Runtime) -> None:
        self.devices = DeviceOperations(runtime)
        self.certificates = CertificateOperations(runtime)
        self.registration_keys = RegistrationKeyOperations(runtime)
