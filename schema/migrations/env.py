"""Alembic environment: the engine comes from calltrack (config.attributes["engine"])."""

from __future__ import annotations

from alembic import context
from sqlalchemy import create_engine

from schema.models import Base

config = context.config
target_metadata = Base.metadata


#: made by migrations outside the models, for transcript search: SQLite's full-text table (and the
#: tables FTS5 keeps behind it), PostgreSQL's GIN index over to_tsvector (tracking/transcript_search.py)
NOT_MODELLED_TABLES = ("transcripts_fts",)
NOT_MODELLED_INDEXES = ("ix_transcripts_search",)


def include_name(name: str | None, type_: str, parent_names: object) -> bool:
    if name is None:
        return True
    if type_ == "table":
        return not name.startswith(NOT_MODELLED_TABLES)
    if type_ == "index":
        return name not in NOT_MODELLED_INDEXES
    return True


def run_migrations() -> None:
    engine = config.attributes.get("engine")
    if engine is None:
        url = config.get_main_option("sqlalchemy.url")
        if not url:
            raise RuntimeError("run migrations through `calltrack db upgrade`")
        engine = create_engine(url)
    with engine.begin() as connection:
        context.configure(
            connection=connection,
            target_metadata=target_metadata,
            render_as_batch=connection.dialect.name == "sqlite",
            compare_type=True,
            include_name=include_name,
        )
        context.run_migrations()


run_migrations()
