"""Authentication of administrators and machines."""
