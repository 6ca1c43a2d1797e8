"""caller_lookups: third-party caller lookups, cached until they expire

Revision ID: 0006
Revises: 0005
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op


revision = "0006"
down_revision = "0005"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table(
        "caller_lookups",
        sa.Column("id", sa.Integer(), nullable=False),
        sa.Column("provider", sa.String(length=200), nullable=False),
        sa.Column("number", sa.String(length=20), nullable=False),
        sa.Column("status", sa.String(length=16), nullable=False),
        sa.Column("name", sa.String(length=200), nullable=True),
        sa.Column("line_type", sa.String(length=40), nullable=True),
        sa.Column("carrier", sa.String(length=200), nullable=True),
        sa.Column("error", sa.String(length=500), nullable=True),
        sa.Column("fetched_at", sa.DateTime(), nullable=False),
        sa.Column("expires_at", sa.DateTime(), nullable=False),
        sa.CheckConstraint("status IN ('found', 'not-found', 'error')", name=op.f("ck_caller_lookups_status")),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_caller_lookups")),
        sa.UniqueConstraint("provider", "number", name=op.f("uq_caller_lookups_provider_number")),
    )
    op.create_index(op.f("ix_caller_lookups_expires_at"), "caller_lookups", ["expires_at"], unique=False)


def downgrade() -> None:
    op.drop_index(op.f("ix_caller_lookups_expires_at"), table_name="caller_lookups")
    op.drop_table("caller_lookups")
