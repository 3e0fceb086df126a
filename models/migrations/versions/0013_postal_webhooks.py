"""webhooks.format (postern or postal) and webhook_signing_keys (the Postal RSA key)

Revision ID: 0013
Revises: 0012
Create Date: 2026-12-07 21:50:00
"""

import sqlalchemy as sa
from alembic import op

from models.base import UTCDateTime

revision = "0013"
down_revision = "0012"
branch_labels = None
depends_on = None


def upgrade() -> None:
    with op.batch_alter_table("webhooks") as batch_op:
        batch_op.add_column(
            sa.Column("format", sa.String(length=16), nullable=False, server_default="postern")
        )
    op.create_table(
        "webhook_signing_keys",
        sa.Column("purpose", sa.String(length=32), nullable=False),
        sa.Column("key_encrypted", sa.Text(), nullable=False),
        sa.Column("created_at", UTCDateTime(), nullable=False),
        sa.PrimaryKeyConstraint("purpose", name=op.f("pk_webhook_signing_keys")),
    )


def downgrade() -> None:
    op.drop_table("webhook_signing_keys")
    with op.batch_alter_table("webhooks") as batch_op:
        batch_op.drop_column("format")
