"""dkim_keys: status, activated_at, retire_at, retired_at (DKIM key rotation)

Revision ID: 0011
Revises: 0010
Create Date: 2026-12-07 19:50:00
"""

import sqlalchemy as sa
from alembic import op

import models.base

revision = "0011"
down_revision = "0010"
branch_labels = None
depends_on = None


def upgrade() -> None:
    with op.batch_alter_table("dkim_keys") as batch_op:
        batch_op.add_column(
            sa.Column("status", sa.String(length=16), server_default="active", nullable=False)
        )
        batch_op.add_column(sa.Column("activated_at", models.base.UTCDateTime(), nullable=True))
        batch_op.add_column(sa.Column("retire_at", models.base.UTCDateTime(), nullable=True))
        batch_op.add_column(sa.Column("retired_at", models.base.UTCDateTime(), nullable=True))
    # The keys there sign already: active since they were made.
    op.execute("UPDATE dkim_keys SET activated_at = created_at")


def downgrade() -> None:
    with op.batch_alter_table("dkim_keys") as batch_op:
        batch_op.drop_column("retired_at")
        batch_op.drop_column("retire_at")
        batch_op.drop_column("activated_at")
        batch_op.drop_column("status")
