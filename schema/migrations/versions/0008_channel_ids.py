"""Uniqueids and linkedids as long as Asterisk makes them (152 characters instead of 64)

Asterisk allows a uniqueid of AST_MAX_PUBLIC_UNIQUEID (149) characters, any text (a custom
Originate ChannelId, or "<system name>-<epoch>.<n>" with a system name up to 127 characters),
plus ";2" on a Local channel's second half.

Revision ID: 0008
Revises: 0007
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0008"
down_revision = "0007"
branch_labels = None
depends_on = None

COLUMNS = (("calls", "linkedid"), ("calls", "uniqueid"), ("call_legs", "uniqueid"), ("ami_events", "uniqueid"), ("ami_events", "linkedid"))


def _alter(old: int, new: int) -> None:
    for table in dict.fromkeys(t for t, _ in COLUMNS):
        # batch mode: PostgreSQL alters the type in place; SQLite (which never enforced the length) rebuilds
        with op.batch_alter_table(table) as batch:
            for t, column in COLUMNS:
                if t == table:
                    batch.alter_column(column, type_=sa.String(length=new), existing_type=sa.String(length=old))


def upgrade() -> None:
    _alter(64, 152)


def downgrade() -> None:
    _alter(152, 64)
