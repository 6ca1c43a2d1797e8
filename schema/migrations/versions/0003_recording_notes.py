"""recordings.note and the 'discarded' state; calls.do_not_track

A recording can carry a note (a WAV header the recorder repaired) and be discarded
(the call's caller is on a do-not-track list); the call row says it is such a call.

Revision ID: 0003
Revises: 0002
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0003"
down_revision = "0002"
branch_labels = None
depends_on = None

OLD_STATES = "state IN ('pending', 'archived', 'empty', 'failed', 'deleted')"
NEW_STATES = "state IN ('pending', 'archived', 'empty', 'failed', 'deleted', 'discarded')"


def upgrade() -> None:
    op.add_column("calls", sa.Column("do_not_track", sa.Boolean(), nullable=True))
    # batch mode: SQLite changes a CHECK constraint by rebuilding the table
    with op.batch_alter_table("recordings") as batch:
        batch.add_column(sa.Column("note", sa.Text(), nullable=True))
        batch.drop_constraint(op.f("ck_recordings_state"), type_="check")
        batch.create_check_constraint("state", NEW_STATES)


def downgrade() -> None:
    op.execute("UPDATE recordings SET state = 'deleted' WHERE state = 'discarded'")
    with op.batch_alter_table("recordings") as batch:
        batch.drop_constraint(op.f("ck_recordings_state"), type_="check")
        batch.create_check_constraint("state", OLD_STATES)
        batch.drop_column("note")
    with op.batch_alter_table("calls") as batch:
        batch.drop_column("do_not_track")
