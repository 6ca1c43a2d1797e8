"""conversion_exports, form_leads; visitor_sessions.msclkid, sites.forms, outbox_events.form_lead_id

Ad-platform conversion exports remember each call exported per platform and conversion
name (so overlapping exports never count a call twice); website forms captured by dni.js
are stored as leads beside calls, opt-in per site; the visit keeps Microsoft's click id.

Revision ID: 0012
Revises: 0011
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0012"
down_revision = "0011"
branch_labels = None
depends_on = None


def upgrade() -> None:
    with op.batch_alter_table("visitor_sessions") as batch:
        batch.add_column(sa.Column("msclkid", sa.String(length=200), nullable=True))
    with op.batch_alter_table("sites") as batch:
        batch.add_column(sa.Column("forms", sa.String(length=16), nullable=True))
    op.create_table(
        "conversion_exports",
        sa.Column("id", sa.Integer(), nullable=False),
        sa.Column("account_id", sa.Integer(), nullable=False),
        sa.Column("call_id", sa.Integer(), nullable=False),
        sa.Column("platform", sa.String(length=20), nullable=False),
        sa.Column("conversion_name", sa.String(length=200), nullable=False),
        sa.Column("format", sa.String(length=20), nullable=False),
        sa.Column("exported_at", sa.DateTime(), nullable=False),
        sa.ForeignKeyConstraint(
            ["account_id"], ["accounts.id"], name=op.f("fk_conversion_exports_account_id_accounts"), ondelete="CASCADE"
        ),
        sa.ForeignKeyConstraint(
            ["call_id"], ["calls.id"], name=op.f("fk_conversion_exports_call_id_calls"), ondelete="CASCADE"
        ),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_conversion_exports")),
        sa.UniqueConstraint(
            "call_id", "platform", "conversion_name", name=op.f("uq_conversion_exports_call_id_platform_conversion_name")
        ),
    )
    op.create_index(op.f("ix_conversion_exports_account_id"), "conversion_exports", ["account_id"], unique=False)
    op.create_table(
        "form_leads",
        sa.Column("id", sa.Integer(), nullable=False),
        sa.Column("account_id", sa.Integer(), nullable=False),
        sa.Column("visitor_session_id", sa.Integer(), nullable=True),
        sa.Column("source_id", sa.Integer(), nullable=True),
        sa.Column("page_url", sa.Text(), nullable=True),
        sa.Column("form_name", sa.String(length=200), nullable=True),
        sa.Column("fields", sa.JSON(), nullable=False),
        sa.Column("email", sa.String(length=320), nullable=True),
        sa.Column("phone", sa.String(length=40), nullable=True),
        sa.Column("submitted_at", sa.DateTime(), nullable=False),
        sa.ForeignKeyConstraint(
            ["account_id"], ["accounts.id"], name=op.f("fk_form_leads_account_id_accounts"), ondelete="CASCADE"
        ),
        sa.ForeignKeyConstraint(
            ["visitor_session_id"],
            ["visitor_sessions.id"],
            name=op.f("fk_form_leads_visitor_session_id_visitor_sessions"),
            ondelete="SET NULL",
        ),
        sa.ForeignKeyConstraint(
            ["source_id"], ["sources.id"], name=op.f("fk_form_leads_source_id_sources"), ondelete="SET NULL"
        ),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_form_leads")),
    )
    op.create_index("ix_form_leads_account_submitted", "form_leads", ["account_id", "submitted_at"], unique=False)
    op.create_index("ix_form_leads_email", "form_leads", ["email"], unique=False)
    op.create_index("ix_form_leads_phone", "form_leads", ["phone"], unique=False)
    op.create_index(op.f("ix_form_leads_visitor_session_id"), "form_leads", ["visitor_session_id"], unique=False)
    with op.batch_alter_table("outbox_events") as batch:
        batch.add_column(sa.Column("form_lead_id", sa.Integer(), nullable=True))
        batch.create_foreign_key(
            batch.f("fk_outbox_events_form_lead_id_form_leads"), "form_leads", ["form_lead_id"], ["id"], ondelete="CASCADE"
        )
        batch.create_index(batch.f("ix_outbox_events_form_lead_id"), ["form_lead_id"], unique=False)


def downgrade() -> None:
    with op.batch_alter_table("outbox_events") as batch:
        batch.drop_index(batch.f("ix_outbox_events_form_lead_id"))
        batch.drop_constraint(batch.f("fk_outbox_events_form_lead_id_form_leads"), type_="foreignkey")
        batch.drop_column("form_lead_id")
    op.drop_index(op.f("ix_form_leads_visitor_session_id"), table_name="form_leads")
    op.drop_index("ix_form_leads_phone", table_name="form_leads")
    op.drop_index("ix_form_leads_email", table_name="form_leads")
    op.drop_index("ix_form_leads_account_submitted", table_name="form_leads")
    op.drop_table("form_leads")
    op.drop_index(op.f("ix_conversion_exports_account_id"), table_name="conversion_exports")
    op.drop_table("conversion_exports")
    with op.batch_alter_table("sites") as batch:
        batch.drop_column("forms")
    with op.batch_alter_table("visitor_sessions") as batch:
        batch.drop_column("msclkid")
