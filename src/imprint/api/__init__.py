"""The HTTP layer: parse, call one domain function, render."""

from imprint.api.app import create_app

__all__ = ["create_app"]
