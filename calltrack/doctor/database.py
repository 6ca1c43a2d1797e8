"""The database: reachable, at this calltrack's revision, writable by the service user."""

from __future__ import annotations

from typing import TYPE_CHECKING

from calltrack.doctor import files
from calltrack.doctor.findings import Finding, fail, ok

if TYPE_CHECKING:
    from calltrack.context import AppContext


def check(app: AppContext, service: files.Who) -> list[Finding]:
    from sqlalchemy import text
    from sqlalchemy.exc import DBAPIError

    from schema import migrate
    from schema.db import NoDatabase, redact, sqlite_path

    where = redact(app.settings.database_url)
    try:
        engine = app.make_engine()
    except NoDatabase as exc:
        return [fail("database", str(exc), "calltrack db upgrade")]
    try:
        migrate.require_current(engine)
    except migrate.DatabaseBehind as exc:
        return [fail("database", f"{where}: {exc}", "calltrack db upgrade")]
    except DBAPIError as exc:
        detail = str(exc.orig).strip().splitlines()[0] if exc.orig else str(exc)
        return [fail("database", f"{where} is unreachable: {detail}", "start the database, or fix database.url")]
    found = [ok("database", f"{where} answers, at revision {migrate.head_revision()}")]
    try:
        with engine.connect() as conn:
            # A write that changes nothing, rolled back: it takes the write lock and checks the grants.
            conn.execute(text("UPDATE alembic_version SET version_num = version_num"))
            conn.rollback()
    except DBAPIError as exc:
        detail = str(exc.orig).strip().splitlines()[0] if exc.orig else str(exc)
        return [fail("database", f"{where} is not writable: {detail}", "give the calltrack user write access")]
    path = sqlite_path(app.settings.database_url)
    if path is not None:
        # SQLite in WAL mode writes beside the file (-wal, -shm): the folder must be writable too.
        for target, want in ((path, "rw"), (path.parent, "rwx")):
            st = target.stat()
            if not files.can(service, st, want):
                return [
                    fail(
                        "database",
                        f"{target} ({files.owner(st)}) is not writable by {service.name}",
                        f"chown {service.name} {path.parent} {path}",
                    )
                ]
    found.append(ok("database", f"{where} is writable" + (f" by {service.name}" if path is not None else "")))
    return found
