"""Mosquitto with imprint's certificates: configuration, ACLs and enforced revocation."""

from __future__ import annotations

from imprint.mqtt.acl import AclEntry, acl_entries, current_certificates, render_acl
from imprint.mqtt.broker import (
    BrokerFiles,
    BrokerSync,
    SyncResult,
    render_config,
    write_broker_setup,
)

__all__ = [
    "AclEntry",
    "BrokerFiles",
    "BrokerSync",
    "SyncResult",
    "acl_entries",
    "current_certificates",
    "render_acl",
    "render_config",
    "write_broker_setup",
]
