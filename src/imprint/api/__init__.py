"""The HTTP layer: parse, call one domain function, render.

The application itself is built by :func:`imprint.api.app.create_app`; this package
imports nothing, so that a command that only needs one route module's response models
does not build the whole application.
"""
