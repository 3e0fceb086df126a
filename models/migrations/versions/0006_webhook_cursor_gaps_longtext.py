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


def _gaps_type(old: sa.types.TypeEngine[str], new: sa.types.TypeEngine[str]) -> None:
    if op.get_bind().dialect.name in ("mysql", "mariadb"):
        op.alter_column(
            "webhook_cursor", "gaps", existing_type=old, type_=new, existing_nullable=False
        )


def upgrade() -> None:
    _gaps_type(sa.Text(), mysql.LONGTEXT())


def downgrade() -> None:
    _gaps_type(mysql.LONGTEXT(), sa.Text())
