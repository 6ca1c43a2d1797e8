"""Logging of the daemons (`serve`, `agi serve`, `ami listen`, `web serve`, `recordings watch`).

One format for every service line, at ``general.log_level``.  Alembic's INFO lines
("Context impl SQLiteImpl", "Will assume transactional DDL") say nothing an
administrator can act on, so the migration machinery logs warnings only unless the
level is DEBUG.
"""

from __future__ import annotations

import logging

FORMAT = "%(asctime)s %(levelname)s %(name)s: %(message)s"


def setup(level: str) -> None:
    name = level.upper()
    logging.basicConfig(level=name, format=FORMAT)
    if name != "DEBUG":
        logging.getLogger("alembic").setLevel(logging.WARNING)
