"""Importing configuration written for other systems (a plgd hub/DPS values file).

An import creates instance-wide objects (OAuth clients) and enrollments of any
organization, so it needs the whole instance (an API key or the local command line).
Everything is checked before anything is written: a hub provider whose client or secret
would only fail at a device's first provisioning is refused here, and nothing of the
file is stored.
"""

from __future__ import annotations

from dataclasses import dataclass

from imprint.app.base import Operations
from imprint.compat.plgd import Action, PlgdValues, apply_values, hub_provider_problems
from imprint.errors import InvalidValue
from imprint.tenancy.access import Principal, require_instance_admin

__all__ = ["HubProviderInvalid", "ImportOperations", "Imported"]


class HubProviderInvalid(InvalidValue):
    """An enrollment's hub provider names no client imprint could get a token from."""

    code = "hub_provider_invalid"


@dataclass(frozen=True, slots=True)
class Imported:
    """What an import did (or, in a dry run, would do), and what it noted."""

    actions: tuple[Action, ...]
    notes: tuple[str, ...]


class ImportOperations(Operations):
    def plgd_values(
        self, principal: Principal, values: PlgdValues, *, source: str, dry_run: bool = False
    ) -> Imported:
        """Create or update the OAuth clients and enrollment groups of a plgd values file.

        Each created or updated object gets its audit entry (``oauth_client.import``,
        ``enrollment.import``, with the ``source`` file); a dry run writes and audits
        nothing.

        Raises:
            PermissionDenied: not the whole instance.
            HubProviderInvalid: a hub provider's client is unknown, its secret does not
                match, or it may not use client credentials (nothing is stored).
        """
        require_instance_admin(principal, "importing a plgd values file")
        with self._transaction():
            problems, notes = hub_provider_problems(values, self._rt.clients.candidates)
            if problems:
                raise HubProviderInvalid("; ".join(problems))
            actions = apply_values(
                values,
                enrollments=self._rt.enrollments,
                clients=self._rt.oauth_clients,
                configured=self._rt.clients.configured,
                dry_run=dry_run,
            )
            if not dry_run:
                for action in actions:
                    if action.result not in ("created", "updated"):
                        continue
                    target = "oauth_client" if action.kind == "client" else "enrollment"
                    owner = next(
                        (e.owner for _w, e in values.enrollments if e.id == action.target), None
                    )
                    self._audit(
                        principal,
                        f"{target}.import",
                        target,
                        action.target,
                        org_id=owner if action.kind == "enrollment" else None,
                        file=source,
                    )
        return Imported(tuple(actions), (*values.notes, *notes))
