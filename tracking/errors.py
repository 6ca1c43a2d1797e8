"""Errors a user can fix; the CLI prints them in one line, the web answers 4xx."""

from __future__ import annotations


class TrackingError(Exception):
    """Bad input or a state that forbids the operation. Nothing was written."""


class NotFound(TrackingError):
    """The named account, source, pool or number does not exist."""


class Conflict(TrackingError):
    """It exists already (a duplicate number, account or source)."""


class InvalidInput(TrackingError):
    """A malformed number, dial string, timezone or value."""
