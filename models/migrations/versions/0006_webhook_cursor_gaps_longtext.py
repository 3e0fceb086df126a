"""webhook cursor: its gaps as LONGTEXT on MySQL and MariaDB

TEXT holds 64 KB there, a few thousand missing ids; the fan-out keeps up to 10,000. On
SQLite and PostgreSQL text has no such limit and nothing changes.

Revision ID: 0006
Revises: 0005
Create Date: 2026-11-22 04:35:00
"""

import sqlalchemy as sa
from alembic import op
from sqlalchemy.dialects import mysql

revision = "0006"
down_revision = "0005"
branch_labels = None
depends_on = None


def _mysql() -> bool:
    return op.get_bind().dialect.name in ("mysql", "mariadb")


def upgrade() -> None:
    if _mysql():
        op.alter_column(
            "webhook_cursor",
            "gaps",
            existing_type=sa.Text(),
            type_=mysql.LONGTEXT(),
            existing_nullable=False,
        )


def downgrade() -> None:
    if _mysql():
        op.alter_column(
            "webhook_cursor",
            "gaps",
            existing_type=mysql.LONGTEXT(),
            type_=sa.Text(),
            existing_nullable=False,
        )
