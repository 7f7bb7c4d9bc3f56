"""Channel operations: the data channels of devices and their keys, for every admin surface.

Channels belong to their device's owner organization; another organization's channel is
not found. Viewers read a channel, its entries and its read keys; operators see the write
key, regenerate keys and add read keys. What devices write into a channel is the device
plane (:mod:`imprint.api.routes.thingspeak`), not an operation here.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

from imprint.app.base import Operations
from imprint.app.scoping import scope_of
from imprint.channels.entries import Entry
from imprint.provisioning.channels import (
    Channel,
    KeyKind,
    add_read_key,
    regenerate_read_key,
    regenerate_write_key,
)
from imprint.tenancy.access import Principal, authorize
from imprint.tenancy.roles import Role

__all__ = ["ChannelOperations", "ChannelView"]


@dataclass(frozen=True, slots=True)
class ChannelView:
    """A channel as the principal may see it.

    Attributes:
        channel: the channel with all its keys.
        role: the principal's role on it.
        last_entry_id: the id of its latest entry (0: none yet).
    """

    channel: Channel
    role: Role
    last_entry_id: int

    @property
    def shows_write_key(self) -> bool:
        """The write key lets one write as the device: operators and admins only."""
        return self.role.allows(Role.OPERATOR)


class ChannelOperations(Operations):
    def _visible(self, principal: Principal, channel_id: int, needed: Role) -> tuple[Channel, Role]:
        """The channel and the principal's role on it.

        Raises:
            NotFound: no such channel, or a foreign one.
            PermissionDenied: visible, but the role is too low.
        """
        channel = self._rt.channels.get(channel_id)
        tree = self._rt.org_tree()
        role = authorize(principal, channel.owner, needed, tree, what=f"channel {channel_id}")
        return channel, role

    def _view(self, channel: Channel, role: Role) -> ChannelView:
        return ChannelView(channel, role, self._rt.channel_entries.last_entry_id(channel.id))

    def search(
        self, principal: Principal, *, limit: int = 100, after: int | None = None
    ) -> Sequence[Channel]:
        """The channels of the organizations the principal sees, in id order, without
        their keys (``after``: the last id of the previous page)."""
        return self._rt.channels.search(
            owners=scope_of(self._rt, principal), limit=limit, after=after
        )

    def show(self, principal: Principal, channel_id: int) -> ChannelView:
        """One channel with its keys.

        Raises:
            NotFound: no such channel, or a foreign one.
        """
        return self._view(*self._visible(principal, channel_id, Role.VIEWER))

    def entries(
        self, principal: Principal, channel_id: int, results: int
    ) -> tuple[Channel, Sequence[Entry]]:
        """The channel and its latest ``results`` entries, oldest first."""
        channel, _ = self._visible(principal, channel_id, Role.VIEWER)
        return channel, self._rt.channel_entries.latest(channel.id, results)

    def regenerate_key(
        self, principal: Principal, channel_id: int, kind: KeyKind, key_id: str | None = None
    ) -> ChannelView:
        """Replace the write key, or a read key (the oldest unless ``key_id`` names one);
        the old key stops working at once.

        Raises:
            NotFound: no such (visible) channel, or no such read key.
            PermissionDenied: the role is below operator.
        """
        at = self._now()
        with self._transaction():
            _, role = self._visible(principal, channel_id, Role.OPERATOR)
            if kind is KeyKind.WRITE:
                channel = regenerate_write_key(self._rt.channels, channel_id, at=at)
            else:
                channel = regenerate_read_key(self._rt.channels, channel_id, at=at, key_id=key_id)
            self._audit(
                principal,
                "channel.key_regenerate",
                "channel",
                str(channel_id),
                org_id=channel.owner,
                kind=kind.value,
            )
        return self._view(channel, role)

    def add_read_key(self, principal: Principal, channel_id: int) -> ChannelView:
        """Give the channel one more read key.

        Raises:
            NotFound, PermissionDenied: not visible, or the role is below operator.
            Conflict: it has the maximum of read keys already (``too_many_read_keys``).
        """
        with self._transaction():
            _, role = self._visible(principal, channel_id, Role.OPERATOR)
            channel = add_read_key(self._rt.channels, channel_id, at=self._now())
            self._audit(
                principal, "channel.key_add", "channel", str(channel_id), org_id=channel.owner
            )
        return self._view(channel, role)
