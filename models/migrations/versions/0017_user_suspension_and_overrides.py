"""users: suspended, send_quota_period, domain_limit; domains: suspended (admin commands)

Revision ID: 0017
Revises: 0015
Create Date: 2026-12-07 22:00:00
"""

import sqlalchemy as sa
from alembic import op

revision = "0017"
down_revision = "0015"
branch_labels = None
depends_on = None


def upgrade() -> None:
    with op.batch_alter_table("users") as batch_op:
        batch_op.add_column(
            sa.Column("suspended", sa.Boolean(), nullable=False, server_default=sa.false())
        )
        batch_op.add_column(sa.Column("send_quota_period", sa.Integer(), nullable=True))
        batch_op.add_column(sa.Column("domain_limit", sa.Integer(), nullable=True))
    with op.batch_alter_table("domains") as batch_op:
        batch_op.add_column(
            sa.Column("suspended", sa.Boolean(), nullable=False, server_default=sa.false())
        )


def downgrade() -> None:
    with op.batch_alter_table("domains") as batch_op:
        batch_op.drop_column("suspended")
    with op.batch_alter_table("users") as batch_op:
        batch_op.drop_column("domain_limit")
        batch_op.drop_column("send_quota_period")
        batch_op.drop_column("suspended")
