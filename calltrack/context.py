"""What every command shares: settings, the engine, a session per command."""

from __future__ import annotations

import contextlib
import logging
from collections.abc import Iterator
from typing import TYPE_CHECKING

import click

if TYPE_CHECKING:
    from sqlalchemy import Engine
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

            settings = load_settings(self.config_path)
            if self.database_url:
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
    def engine(self) -> Engine:
        if self._engine is None:
            from schema.db import make_engine

            db = self.settings.database
            self._engine = make_engine(self.settings.database_url, connect_timeout=db.connect_timeout, echo=db.echo)
        return self._engine

    def ready_engine(self) -> Engine:
        """The engine, once the schema is known current; a brand-new database is created here."""
        from schema import migrate
        from schema.db import redact

        engine = self.engine
        if migrate.current_revision(engine) is None and migrate.is_empty(engine):
            click.echo(f"calltrack: creating the database at {redact(self.settings.database_url)}", err=True)
            migrate.upgrade(engine)
        migrate.require_current(engine)
        return engine

    @contextlib.contextmanager
    def session(self) -> Iterator[Session]:
        """One transaction: committed when the block ends, rolled back on any error."""
        from schema.db import make_session_factory

        factory = make_session_factory(self.ready_engine())
        with factory() as session, session.begin():
            yield session

    def close(self) -> None:
        if self._engine is not None:
            self._engine.dispose()
            self._engine = None


pass_app = click.make_pass_decorator(AppContext)
