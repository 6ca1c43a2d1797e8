"""Sites keep the business numbers dni.js replaces, and the region their pages write numbers in

`sites add --replace` used to put the numbers only into the printed snippet; the API now answers
each page with the digit sequences to find (national and international forms) and what to put in
their place, so it needs them.  region: where numbers without a country code are read (empty:
numbers.default_region).

Revision ID: 0010
Revises: 0009
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0010"
down_revision = "0009"
branch_labels = None
depends_on = None


def upgrade() -> None:
    with op.batch_alter_table("sites") as batch:
        batch.add_column(sa.Column("replace_numbers", sa.String(length=1000), nullable=False, server_default=""))
        batch.add_column(sa.Column("region", sa.String(length=2), nullable=True))


def downgrade() -> None:
    with op.batch_alter_table("sites") as batch:
        batch.drop_column("region")
        batch.drop_column("replace_numbers")
