"""Text messages (PJSIP out-of-call messaging): sms_messages keyed by the SIP message id, opt-outs

sms_messages gains what a text needs to be tracked like a call: the message id it is
idempotent on (MESSAGE_DATA(Call-ID) for texts in, calltrack's own for texts out), the
visit and first-time flag of its attribution, the sender's name, its status, the
keyword it carried (STOP, START, HELP), the Content-Length the carrier sent (Asterisk
drops bodies of 1024 bytes or more), where it was forwarded, and do-not-track (no
sender, no body kept). from_number becomes nullable for do-not-track senders.
sms_opt_outs: the senders who texted STOP, per account. tracking_numbers.sms_forward_to:
where texts to the number go; accounts.sms_help_text: the answer to HELP.
outbox_events.sms_id: the subject of sms.received.

Revision ID: 0013
Revises: 0012
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0013"
down_revision = "0012"
branch_labels = None
depends_on = None


def upgrade() -> None:
    with op.batch_alter_table("sms_messages") as batch:
        batch.alter_column("from_number", existing_type=sa.String(length=64), nullable=True)
        batch.add_column(sa.Column("message_id", sa.String(length=200), nullable=True))
        batch.add_column(sa.Column("sender_name", sa.String(length=200), nullable=True))
        batch.add_column(sa.Column("visitor_session_id", sa.Integer(), nullable=True))
        batch.add_column(sa.Column("first_time", sa.Boolean(), nullable=True))
        batch.add_column(sa.Column("status", sa.String(length=16), nullable=True))
        batch.add_column(sa.Column("keyword", sa.String(length=16), nullable=True))
        batch.add_column(sa.Column("content_length", sa.Integer(), nullable=True))
        batch.add_column(sa.Column("body_dropped", sa.Boolean(), nullable=True))
        batch.add_column(sa.Column("forwarded_to", sa.String(length=500), nullable=True))
        batch.add_column(sa.Column("do_not_track", sa.Boolean(), nullable=True))
        batch.add_column(sa.Column("error", sa.Text(), nullable=True))
        batch.create_foreign_key(
            batch.f("fk_sms_messages_visitor_session_id_visitor_sessions"),
            "visitor_sessions",
            ["visitor_session_id"],
            ["id"],
            ondelete="SET NULL",
        )
        batch.create_unique_constraint(batch.f("uq_sms_messages_system_message_id"), ["system", "message_id"])
        batch.create_index("ix_sms_messages_from", ["from_number"], unique=False)
        batch.create_index("ix_sms_messages_to", ["to_number"], unique=False)
        batch.create_index("ix_sms_messages_account_received", ["account_id", "received_at"], unique=False)
    op.create_table(
        "sms_opt_outs",
        sa.Column("id", sa.Integer(), nullable=False),
        sa.Column("account_id", sa.Integer(), nullable=False),
        sa.Column("number", sa.String(length=64), nullable=False),
        sa.Column("keyword", sa.String(length=16), nullable=True),
        sa.Column("created_at", sa.DateTime(), nullable=False),
        sa.ForeignKeyConstraint(
            ["account_id"], ["accounts.id"], name=op.f("fk_sms_opt_outs_account_id_accounts"), ondelete="CASCADE"
        ),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_sms_opt_outs")),
        sa.UniqueConstraint("account_id", "number", name=op.f("uq_sms_opt_outs_account_id_number")),
    )
    with op.batch_alter_table("tracking_numbers") as batch:
        batch.add_column(sa.Column("sms_forward_to", sa.String(length=500), nullable=True))
    with op.batch_alter_table("accounts") as batch:
        batch.add_column(sa.Column("sms_help_text", sa.String(length=500), nullable=True))
    with op.batch_alter_table("outbox_events") as batch:
        batch.add_column(sa.Column("sms_id", sa.Integer(), nullable=True))
        batch.create_foreign_key(
            batch.f("fk_outbox_events_sms_id_sms_messages"), "sms_messages", ["sms_id"], ["id"], ondelete="CASCADE"
        )
        batch.create_index(batch.f("ix_outbox_events_sms_id"), ["sms_id"], unique=False)


def downgrade() -> None:
    with op.batch_alter_table("outbox_events") as batch:
        batch.drop_index(batch.f("ix_outbox_events_sms_id"))
        batch.drop_constraint(batch.f("fk_outbox_events_sms_id_sms_messages"), type_="foreignkey")
        batch.drop_column("sms_id")
    with op.batch_alter_table("accounts") as batch:
        batch.drop_column("sms_help_text")
    with op.batch_alter_table("tracking_numbers") as batch:
        batch.drop_column("sms_forward_to")
    op.drop_table("sms_opt_outs")
    with op.batch_alter_table("sms_messages") as batch:
        batch.drop_index("ix_sms_messages_account_received")
        batch.drop_index("ix_sms_messages_to")
        batch.drop_index("ix_sms_messages_from")
        batch.drop_constraint(batch.f("uq_sms_messages_system_message_id"), type_="unique")
        batch.drop_constraint(batch.f("fk_sms_messages_visitor_session_id_visitor_sessions"), type_="foreignkey")
        for column in (
            "error",
            "do_not_track",
            "forwarded_to",
            "body_dropped",
            "content_length",
            "keyword",
            "status",
            "first_time",
            "visitor_session_id",
            "sender_name",
            "message_id",
        ):
            batch.drop_column(column)
        batch.alter_column("from_number", existing_type=sa.String(length=64), nullable=False)
