"""Attestation mechanisms, one module each, behind :class:`~imprint.attestation.base.Attestor`."""
