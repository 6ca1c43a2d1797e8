"""What every command shares: settings, the engine, a session per command."""

from __future__ import annotations

import contextlib
import logging
from collections.abc import Iterator
from typing import TYPE_CHECKING

import click

if TYPE_CHECKING:
    from sqlalchemy import Connection, Engine
    from sqlalchemy.orm import Session

    from config import Settings

logger = logging.getLogger(__name__)


class AppContext:
    """Built by the root command; settings and engine are made on first use."""

    def __init__(self, config_path: str | None = None, database_url: str | None = None) -> None:
        self.config_path = config_path
        self.database_url = database_url
        self._settings: Settings | None = None
        self._engine: Engine | None = None

    @property
    def settings(self) -> Settings:
        if self._settings is None:
            from config import DatabaseSettings, load_settings
            from config.settings import check_database_url

            settings = load_settings(self.config_path)
            if self.database_url:
                check_database_url(self.database_url, "--database (or CALLTRACK_DATABASE_URL)", key="")
                settings = settings.replace(
                    database=DatabaseSettings(
                        url=self.database_url,
                        connect_timeout=settings.database.connect_timeout,
                        echo=settings.database.echo,
                    )
                )
            self._settings = settings
        return self._settings

    @property
    def is_default_database(self) -> bool:
        """True for the embedded SQLite file in the data folder (no URL configured or given)."""
        return not self.settings.database.url

    def make_engine(self, *, create: bool = False) -> Engine:
        """The engine; a SQLite file that does not exist is refused unless *create* (or it is the default).

        A mistyped ``sqlite:///`` path must not leave folders and an empty database behind:
        only ``db upgrade`` (``create=True``) or the default location creates a new one.
        """
        if self._engine is None:
            from schema.db import NoDatabase, make_engine, sqlite_path

            url = self.settings.database_url
            path = sqlite_path(url)
            if path is not None and not path.exists():
                if self.is_default_database:
                    path.parent.mkdir(parents=True, exist_ok=True)
                elif not create:
                    raise NoDatabase(
                        f"no database at {path}: create it with `calltrack db upgrade`, or check --database / "
                        "database.url"
                    )
                elif not path.parent.is_dir():
                    raise NoDatabase(
                        f"cannot create the database {path}: the folder {path.parent} does not exist "
                        "(create it first, or check --database / database.url)"
                    )
            db = self.settings.database
            self._engine = make_engine(url, connect_timeout=db.connect_timeout, echo=db.echo)
        return self._engine

    @property
    def engine(self) -> Engine:
        return self.make_engine()

    def ready_engine(self) -> Engine:
        """The engine, once the schema is known current.

        The embedded database is created here on first use; any other database is
        created by `calltrack db upgrade`, so a wrong URL is an error, not a new database.
        """
        from schema import migrate

        engine = self.engine
        if self.is_default_database and migrate.current_revision(engine) is None and migrate.is_empty(engine):
            from schema.db import redact

            click.echo(f"calltrack: creating the database at {redact(self.settings.database_url)}", err=True)
            migrate.upgrade(engine)
        migrate.require_current(engine, fresh_hint=not self.is_default_database)
        return engine

    @contextlib.contextmanager
    def session(self) -> Iterator[Session]:
        """One transaction: committed when the block ends, rolled back on any error."""
        from schema.db import make_session_factory

        factory = make_session_factory(self.ready_engine())
        with factory() as session, session.begin():
            yield session

    @contextlib.contextmanager
    def connection(self) -> Iterator[Connection]:
        """One read transaction over SQLAlchemy Core, for the listings that do without the ORM."""
        with self.ready_engine().begin() as conn:
            yield conn

    def close(self) -> None:
        if self._engine is not None:
            self._engine.dispose()
            self._engine = None


pass_app = click.make_pass_decorator(AppContext)
