"""calls.after_hours: whether the route found the number's business hours closed

Revision ID: 0002
Revises: 0001
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0002"
down_revision = "0001"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.add_column("calls", sa.Column("after_hours", sa.Boolean(), nullable=True))


def downgrade() -> None:
    # batch mode: SQLite drops a column by rebuilding the table
    with op.batch_alter_table("calls") as batch:
        batch.drop_column("after_hours")
