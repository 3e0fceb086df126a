"""users: suspended, send_quota_period, domain_limit; domains: suspended (admin commands)

Revision ID: 0016
Revises: 0015
Create Date: 2026-12-07 22:00:00
"""

import sqlalchemy as sa
from alembic import op

revision = "0016"
down_revision = "0015"
branch_labels = None
depends_on = None


def upgrade() -> None:
    # Plain ADD COLUMNs: on SQLite, batch mode would copy the tables for the expression
    # defaults, and the copies would lose AUTOINCREMENT (ids never reused: 0008).
    op.add_column(
        "users", sa.Column("suspended", sa.Boolean(), nullable=False, server_default=sa.false())
    )
    op.add_column("users", sa.Column("send_quota_period", sa.Integer(), nullable=True))
    op.add_column("users", sa.Column("domain_limit", sa.Integer(), nullable=True))
    op.add_column(
        "domains",
        sa.Column("suspended", sa.Boolean(), nullable=False, server_default=sa.false()),
    )


def downgrade() -> None:
    # DROP COLUMN (SQLite 3.35 or later): no copies of the tables either.
    op.drop_column("domains", "suspended")
    op.drop_column("users", "domain_limit")
    op.drop_column("users", "send_quota_period")
    op.drop_column("users", "suspended")
