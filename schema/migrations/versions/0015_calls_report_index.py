"""calls: indexes for the dashboard's reports and overview, and its missed calls not called back

ix_calls_account_started (account_id, started_at) becomes ix_calls_account_started_report
(account_id, started_at, disposition, first_time, talk_time, source_id, visitor_session_id,
tracking_number): the reports page and the overview read one account's period of calls from the
index alone instead of one random table page per call. bench/dashboard_bench.py, SQLite, one
account's month of a 1,000,000-call database: the reports' main query 84 ms -> 16 ms (best of 3,
shared machine). Same prefix, so every query that used the old index uses this one.

ix_calls_caller (caller_number) becomes ix_calls_caller_answered (caller_number, account_id,
disposition, started_at): "a later answered call from the same number to the account" is one
index probe (with only the wider index above, SQLite walked the account's later calls instead:
65 ms for the month's missed calls; under 5 ms with this one). Same prefix for lookups by number.

Revision ID: 0015
Revises: 0014
"""

from __future__ import annotations

from alembic import op

revision = "0015"
down_revision = "0014"
branch_labels = None
depends_on = None

COLUMNS = [
    "account_id",
    "started_at",
    "disposition",
    "first_time",
    "talk_time",
    "source_id",
    "visitor_session_id",
    "tracking_number",
]


def upgrade() -> None:
    with op.batch_alter_table("calls") as batch_op:
        batch_op.create_index("ix_calls_account_started_report", COLUMNS, unique=False)
        batch_op.drop_index("ix_calls_account_started")
        batch_op.create_index(
            "ix_calls_caller_answered", ["caller_number", "account_id", "disposition", "started_at"], unique=False
        )
        batch_op.drop_index("ix_calls_caller")


def downgrade() -> None:
    with op.batch_alter_table("calls") as batch_op:
        batch_op.create_index("ix_calls_caller", ["caller_number"], unique=False)
        batch_op.drop_index("ix_calls_caller_answered")
        batch_op.create_index("ix_calls_account_started", ["account_id", "started_at"], unique=False)
        batch_op.drop_index("ix_calls_account_started_report")
