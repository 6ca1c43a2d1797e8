"""What the benchmarks share: a scratch PostgreSQL database.

The benchmarks run as scripts (``python bench/NAME.py``), so this folder is on
``sys.path`` and they import this module by its bare name.
"""

from __future__ import annotations

import contextlib
import uuid
from collections.abc import Iterator


@contextlib.contextmanager
def scratch_postgres(base: str, prefix: str = "calltrack_bench") -> Iterator[str]:
    """A new empty database on *base*'s server, as a URL; dropped afterwards (even when in use)."""
    from sqlalchemy import create_engine, text
    from sqlalchemy.engine import make_url

    name = f"{prefix}_{uuid.uuid4().hex[:8]}"
    admin = create_engine(make_url(base).set(drivername="postgresql+psycopg"), isolation_level="AUTOCOMMIT")
    try:
        with admin.connect() as conn:
            conn.execute(text(f'CREATE DATABASE "{name}"'))
        try:
            yield (
                make_url(base).set(drivername="postgresql+psycopg", database=name).render_as_string(hide_password=False)
            )
        finally:
            with admin.connect() as conn:
                conn.execute(text(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)'))
    finally:
        admin.dispose()
