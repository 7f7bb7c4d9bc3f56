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

from imprint.app.api_keys import ApiKeyOperations
from imprint.app.audit import AuditOperations
from imprint.app.certificates import CertificateOperations
from imprint.app.channels import ChannelOperations
from imprint.app.client_cas import ClientCAOperations
from imprint.app.deny_list import DenyListOperations
from imprint.app.device_logins import DeviceLoginOperations
from imprint.app.devices import DeviceOperations
from imprint.app.enrollments import EnrollmentOperations
from imprint.app.identities import IdentityOperations
from imprint.app.imports import ImportOperations
from imprint.app.oauth_clients import OAuthClientOperations
from imprint.app.oob_secrets import OobSecretOperations
from imprint.app.organizations import OrganizationOperations
from imprint.app.registration_keys import RegistrationKeyOperations
from imprint.app.relays import RelayOperations
from imprint.app.sign_ins import SignInOperations
from imprint.app.users import UserOperations
from imprint.app.webhooks import WebhookOperations

if TYPE_CHECKING:
    from imprint.runtime import Database, Runtime

__all__ = ["Application", "DatabaseApplication"]


class Application:
    """Every aggregate's operations over one runtime (``runtime.app``)."""

    def __init__(self, runtime: Runtime) -> None:
        self.audit = AuditOperations(runtime)
        self.devices = DeviceOperations(runtime)
        self.client_cas = ClientCAOperations(runtime)
        self.deny_list = DenyListOperations(runtime)
        self.channels = ChannelOperations(runtime)
        self.identities = IdentityOperations(runtime)
        self.relays = RelayOperations(runtime)
        self.enrollments = EnrollmentOperations(runtime)
        self.oob_secrets = OobSecretOperations(runtime)
        self.certificates = CertificateOperations(runtime)
        self.registration_keys = RegistrationKeyOperations(runtime)
        self.organizations = OrganizationOperations(runtime)
        self.users = UserOperations(runtime)
        self.api_keys = ApiKeyOperations(runtime)
        self.oauth_clients = OAuthClientOperations(runtime)
        self.imports = ImportOperations(runtime)
        self.webhooks = WebhookOperations(runtime)
        self.device_logins = DeviceLoginOperations(runtime)
        self.sign_ins = SignInOperations(runtime)


class DatabaseApplication:
    """The operations that need the database alone, not the CA (``database.app``):
    ``imprint admin`` runs before ``imprint ca init``."""

    def __init__(self, database: Database) -> None:
        self.api_keys = ApiKeyOperations(database)
