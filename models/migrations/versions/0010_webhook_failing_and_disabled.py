"""webhooks: failing_since, disabled_at, disabled_reason (a webhook failing for days is disabled)

Revision ID: 0010
Revises: 0009
Create Date: 2026-12-07 18:30:00
"""

import sqlalchemy as sa
from alembic import op

import models.base

revision = "0010"
down_revision = "0009"
branch_labels = None
depends_on = None


def upgrade() -> None:
    with op.batch_alter_table("webhooks") as batch_op:
        batch_op.add_column(sa.Column("failing_since", models.base.UTCDateTime(), nullable=True))
        batch_op.add_column(sa.Column("disabled_at", models.base.UTCDateTime(), nullable=True))
        batch_op.add_column(sa.Column("disabled_reason", sa.String(length=255), nullable=True))


def downgrade() -> None:
    with op.batch_alter_table("webhooks") as batch_op:
        batch_op.drop_column("disabled_reason")
        batch_op.drop_column("disabled_at")
        batch_op.drop_column("failing_since")
