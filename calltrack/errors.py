"""Known failures turned into one line for the user (no traceback)."""

from __future__ import annotations

from config import ConfigError


def translate(exc: BaseException) -> str | None:
    """A message for an expected failure, or None for a bug (which keeps its traceback)."""
    if isinstance(exc, ConfigError):
        # A command-line option is not a settings file.
        return str(exc) if exc.source.startswith("--") else f"settings: {exc}"
    from sqlalchemy.exc import ArgumentError, IntegrityError, NoSuchModuleError, OperationalError

    from schema.db import NoDatabase
    from schema.migrate import DatabaseBehind
    from tracking.errors import TrackingError

    if isinstance(exc, TrackingError | DatabaseBehind | NoDatabase):
        return str(exc)
    if isinstance(exc, ArgumentError | NoSuchModuleError):
        return f"database URL: {exc}: use sqlite:///PATH or postgresql://USER@HOST/DATABASE"
    if isinstance(exc, IntegrityError):
        return f"the database refused the change (another process may have written the same thing): {exc.orig}"
    if isinstance(exc, OperationalError):
        detail = str(exc.orig).strip().splitlines()[0] if exc.orig else str(exc)
        return f"database unavailable: {detail}"
    return None
