"""pool_overflow_counts: a pool's overflows counted in slots, so full-pool visitors do not queue for the pool row

On PostgreSQL the DNI API counts an overflow in the slot of its database connection
(pg_backend_pid() % 16) instead of number_pools.overflow_count, which every visitor of a
full pool would otherwise lock in turn. A pool's count is number_pools.overflow_count plus
its slots.

Revision ID: 0014
Revises: 0013
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0014"
down_revision = "0013"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table(
        "pool_overflow_counts",
        sa.Column("pool_id", sa.Integer(), nullable=False),
        sa.Column("slot", sa.Integer(), autoincrement=False, nullable=False),
        sa.Column("count", sa.Integer(), nullable=False),
        sa.ForeignKeyConstraint(
            ["pool_id"],
            ["number_pools.id"],
            name=op.f("fk_pool_overflow_counts_pool_id_number_pools"),
            ondelete="CASCADE",
        ),
        sa.PrimaryKeyConstraint("pool_id", "slot", name=op.f("pk_pool_overflow_counts")),
    )


def downgrade() -> None:
    op.drop_table("pool_overflow_counts")
