"""calls.transferred_to

Who a transferred call went to: the channel that answered after the transfer
(``PJSIP/101``), else the transfer's target (``101@agents`` for a blind transfer,
the target channel of an attended one). Calls stored before come through with none.

Revision ID: 0004
Revises: 0003
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0004"
down_revision = "0003"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.add_column("calls", sa.Column("transferred_to", sa.String(length=200), nullable=True))


def downgrade() -> None:
    with op.batch_alter_table("calls") as batch:
        batch.drop_column("transferred_to")
