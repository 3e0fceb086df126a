"""deliveries: errors, the unexpected failures counted towards holding a delivery

Revision ID: 0007
Revises: 0006
Create Date: 2026-12-07 16:00:00
"""

import sqlalchemy as sa
from alembic import op

revision = "0007"
down_revision = "0006"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.add_column(
        "deliveries", sa.Column("errors", sa.Integer(), server_default="0", nullable=False)
    )


def downgrade() -> None:
    op.drop_column("deliveries", "errors")
