"""Known failures turned into one line for the user (no traceback)."""

from __future__ import annotations

from config import ConfigError


def translate(exc: BaseException) -> str | None:
    """A message for an expected failure, or None for a bug (which keeps its traceback)."""
    if isinstance(exc, ConfigError):
        return f"settings: {exc}"
    from sqlalchemy.exc import IntegrityError, OperationalError

    from schema.migrate import DatabaseBehind
    from tracking.errors import TrackingError

    if isinstance(exc, TrackingError | DatabaseBehind):
        return str(exc)
    if isinstance(exc, IntegrityError):
        return f"the database refused the change (another process may have written the same thing): {exc.orig}"
    if isinstance(exc, OperationalError):
        detail = str(exc.orig).strip().splitlines()[0] if exc.orig else str(exc)
        return f"database unavailable: {detail}"
    return None
