"""transcripts, transcript_segments, lead_rules, call_outcomes, call_tags, spam_numbers

Conversation intelligence (issue 12): a transcript per archived recording (also the transcriber's
queue: state, attempts, backoff), its segments with the speaker and times, full-text search
(SQLite: an FTS5 table kept by triggers; PostgreSQL: a GIN index over to_tsvector), per-account
lead rules, what rules and spam signals concluded about a call, and known spam numbers.
Accounts gain a switch for transcription.

Revision ID: 0009
Revises: 0008
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0009"
down_revision = "0008"
branch_labels = None
depends_on = None

SQLITE_FTS = (
    "CREATE VIRTUAL TABLE transcripts_fts USING fts5(text, content='transcripts', content_rowid='id',"
    " tokenize='porter unicode61')",
    "CREATE TRIGGER transcripts_fts_insert AFTER INSERT ON transcripts BEGIN"
    " INSERT INTO transcripts_fts(rowid, text) VALUES (new.id, coalesce(new.text, '')); END",
    "CREATE TRIGGER transcripts_fts_delete AFTER DELETE ON transcripts BEGIN"
    " INSERT INTO transcripts_fts(transcripts_fts, rowid, text) VALUES ('delete', old.id, coalesce(old.text, '')); END",
    "CREATE TRIGGER transcripts_fts_update AFTER UPDATE OF text ON transcripts BEGIN"
    " INSERT INTO transcripts_fts(transcripts_fts, rowid, text) VALUES ('delete', old.id, coalesce(old.text, ''));"
    " INSERT INTO transcripts_fts(rowid, text) VALUES (new.id, coalesce(new.text, '')); END",
)


def upgrade() -> None:
    with op.batch_alter_table("accounts") as batch:
        batch.add_column(sa.Column("transcription", sa.Boolean(), nullable=False, server_default=sa.true()))
    op.create_table(
        "transcripts",
        sa.Column("id", sa.Integer(), nullable=False),
        sa.Column("recording_id", sa.Integer(), nullable=False),
        sa.Column("call_id", sa.Integer(), nullable=True),
        sa.Column("account_id", sa.Integer(), nullable=True),
        sa.Column("state", sa.String(length=16), nullable=False),
        sa.Column("attempts", sa.Integer(), nullable=False),
        sa.Column("last_error", sa.Text(), nullable=True),
        sa.Column("next_attempt_at", sa.DateTime(), nullable=True),
        sa.Column("model", sa.String(length=200), nullable=True),
        sa.Column("language", sa.String(length=16), nullable=True),
        sa.Column("channels", sa.Integer(), nullable=True),
        sa.Column("text", sa.Text(), nullable=True),
        sa.Column("redactions", sa.JSON(), nullable=True),
        sa.Column("seconds", sa.Float(), nullable=True),
        sa.Column("created_at", sa.DateTime(), nullable=False),
        sa.Column("transcribed_at", sa.DateTime(), nullable=True),
        sa.CheckConstraint(
            "state IN ('pending', 'done', 'failed', 'skipped')", name=op.f("ck_transcripts_state")
        ),
        sa.ForeignKeyConstraint(
            ["recording_id"], ["recordings.id"], name=op.f("fk_transcripts_recording_id_recordings"), ondelete="CASCADE"
        ),
        sa.ForeignKeyConstraint(["call_id"], ["calls.id"], name=op.f("fk_transcripts_call_id_calls"), ondelete="CASCADE"),
        sa.ForeignKeyConstraint(
            ["account_id"], ["accounts.id"], name=op.f("fk_transcripts_account_id_accounts"), ondelete="CASCADE"
        ),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_transcripts")),
        sa.UniqueConstraint("recording_id", name=op.f("uq_transcripts_recording_id")),
    )
    op.create_index(op.f("ix_transcripts_call_id"), "transcripts", ["call_id"], unique=False)
    op.create_index(op.f("ix_transcripts_account_id"), "transcripts", ["account_id"], unique=False)
    op.create_index("ix_transcripts_due", "transcripts", ["state", "next_attempt_at"], unique=False)
    op.create_table(
        "transcript_segments",
        sa.Column("id", sa.Integer(), nullable=False),
        sa.Column("transcript_id", sa.Integer(), nullable=False),
        sa.Column("speaker", sa.String(length=8), nullable=False),
        sa.Column("start", sa.Float(), nullable=False),
        sa.Column("end", sa.Float(), nullable=False),
        sa.Column("text", sa.Text(), nullable=False),
        sa.CheckConstraint("speaker IN ('caller', 'agent', 'mono')", name=op.f("ck_transcript_segments_speaker")),
        sa.ForeignKeyConstraint(
            ["transcript_id"],
            ["transcripts.id"],
            name=op.f("fk_transcript_segments_transcript_id_transcripts"),
            ondelete="CASCADE",
        ),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_transcript_segments")),
    )
    op.create_index(
        op.f("ix_transcript_segments_transcript_id"), "transcript_segments", ["transcript_id"], unique=False
    )
    op.create_table(
        "lead_rules",
        sa.Column("id", sa.Integer(), nullable=False),
        sa.Column("account_id", sa.Integer(), nullable=False),
        sa.Column("name", sa.String(length=200), nullable=False),
        sa.Column("condition", sa.Text(), nullable=False),
        sa.Column("action", sa.Text(), nullable=False),
        sa.Column("enabled", sa.Boolean(), nullable=False),
        sa.Column("created_at", sa.DateTime(), nullable=False),
        sa.ForeignKeyConstraint(
            ["account_id"], ["accounts.id"], name=op.f("fk_lead_rules_account_id_accounts"), ondelete="CASCADE"
        ),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_lead_rules")),
        sa.UniqueConstraint("account_id", "name", name=op.f("uq_lead_rules_account_id_name")),
    )
    op.create_table(
        "call_outcomes",
        sa.Column("call_id", sa.Integer(), nullable=False),
        sa.Column("lead", sa.String(length=16), nullable=True),
        sa.Column("score", sa.Integer(), nullable=False),
        sa.Column("value", sa.Float(), nullable=True),
        sa.Column("spam", sa.Boolean(), nullable=False),
        sa.Column("spam_reason", sa.String(length=500), nullable=True),
        sa.Column("spam_cleared_at", sa.DateTime(), nullable=True),
        sa.Column("rules_at", sa.DateTime(), nullable=True),
        sa.Column("updated_at", sa.DateTime(), nullable=False),
        sa.CheckConstraint("lead IN ('qualified', 'not-lead')", name=op.f("ck_call_outcomes_lead")),
        sa.ForeignKeyConstraint(["call_id"], ["calls.id"], name=op.f("fk_call_outcomes_call_id_calls"), ondelete="CASCADE"),
        sa.PrimaryKeyConstraint("call_id", name=op.f("pk_call_outcomes")),
    )
    op.create_table(
        "call_tags",
        sa.Column("id", sa.Integer(), nullable=False),
        sa.Column("call_id", sa.Integer(), nullable=False),
        sa.Column("tag", sa.String(length=100), nullable=False),
        sa.Column("rule_id", sa.Integer(), nullable=True),
        sa.Column("created_at", sa.DateTime(), nullable=False),
        sa.ForeignKeyConstraint(["call_id"], ["calls.id"], name=op.f("fk_call_tags_call_id_calls"), ondelete="CASCADE"),
        sa.ForeignKeyConstraint(
            ["rule_id"], ["lead_rules.id"], name=op.f("fk_call_tags_rule_id_lead_rules"), ondelete="SET NULL"
        ),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_call_tags")),
        sa.UniqueConstraint("call_id", "tag", name=op.f("uq_call_tags_call_id_tag")),
    )
    op.create_table(
        "spam_numbers",
        sa.Column("id", sa.Integer(), nullable=False),
        sa.Column("account_id", sa.Integer(), nullable=True),
        sa.Column("number", sa.String(length=64), nullable=False),
        sa.Column("reason", sa.String(length=500), nullable=True),
        sa.Column("created_at", sa.DateTime(), nullable=False),
        sa.ForeignKeyConstraint(
            ["account_id"], ["accounts.id"], name=op.f("fk_spam_numbers_account_id_accounts"), ondelete="CASCADE"
        ),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_spam_numbers")),
        sa.UniqueConstraint("account_id", "number", name=op.f("uq_spam_numbers_account_id_number")),
    )
    op.create_index(op.f("ix_spam_numbers_number"), "spam_numbers", ["number"], unique=False)
    bind = op.get_bind()
    if bind.dialect.name == "sqlite":
        for statement in SQLITE_FTS:
            op.execute(statement)
    else:
        op.execute(
            "CREATE INDEX ix_transcripts_search ON transcripts USING gin (to_tsvector('english', coalesce(text, '')))"
        )


def downgrade() -> None:
    bind = op.get_bind()
    if bind.dialect.name == "sqlite":
        for name in ("transcripts_fts_insert", "transcripts_fts_delete", "transcripts_fts_update"):
            op.execute(f"DROP TRIGGER IF EXISTS {name}")
        op.execute("DROP TABLE IF EXISTS transcripts_fts")
    else:
        op.execute("DROP INDEX IF EXISTS ix_transcripts_search")
    op.drop_table("spam_numbers")
    op.drop_table("call_tags")
    op.drop_table("call_outcomes")
    op.drop_table("lead_rules")
    op.drop_table("transcript_segments")
    op.drop_table("transcripts")
    with op.batch_alter_table("accounts") as batch:
        batch.drop_column("transcription")
