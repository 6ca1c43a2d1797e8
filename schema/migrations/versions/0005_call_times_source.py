"""calls.times_source

How a call's end was known: NULL from Asterisk's events as they happened; "cdr" from
Asterisk's own call records (the call ended while calltrack was not looking); "estimated"
(closed at the last moment it was known alive, no record found). Calls stored before come
through with NULL.

Revision ID: 0005
Revises: 0004
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0005"
down_revision = "0004"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.add_column("calls", sa.Column("times_source", sa.String(length=16), nullable=True))


def downgrade() -> None:
    with op.batch_alter_table("calls") as batch:
        batch.drop_column("times_source")
