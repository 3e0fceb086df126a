"""rate_counters.window_start as a 64-bit integer (Unix seconds past 2038)

Revision ID: 0015
Revises: 0014
Create Date: 2026-12-07 21:50:00

A 32-bit INTEGER on PostgreSQL and MariaDB holds Unix seconds only until 2038-01-19; SQLite's
INTEGER is 64-bit already (nothing to do there).
"""

import sqlalchemy as sa
from alembic import op

revision = "0015"
down_revision = "0014"
branch_labels = None
depends_on = None


def _window_start(to: sa.types.TypeEngine[int], was: sa.types.TypeEngine[int]) -> None:
    if op.get_bind().dialect.name == "sqlite":
        return
    op.alter_column(
        "rate_counters", "window_start", type_=to, existing_type=was, existing_nullable=False
    )


def upgrade() -> None:
    _window_start(sa.BigInteger(), sa.Integer())


def downgrade() -> None:
    _window_start(sa.Integer(), sa.BigInteger())
