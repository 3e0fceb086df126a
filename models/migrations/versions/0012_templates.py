"""templates: a user's stored templates (TemplateID, TemplateHash, name, subject, parts)

Revision ID: 0012
Revises: 0011
Create Date: 2026-12-07 20:00:00
"""

import sqlalchemy as sa
from alembic import op
from sqlalchemy.dialects import mysql

from models.base import UTCDateTime

revision = "0012"
down_revision = "0011"
branch_labels = None
depends_on = None

_LONG = sa.Text().with_variant(mysql.LONGTEXT(), "mariadb").with_variant(mysql.LONGTEXT(), "mysql")


def upgrade() -> None:
    op.create_table(
        "templates",
        sa.Column("id", sa.Integer(), nullable=False),
        sa.Column("user_id", sa.Integer(), nullable=False),
        sa.Column("hash", sa.String(length=64), nullable=False),
        sa.Column("name", sa.String(length=255), nullable=False),
        sa.Column("subject", sa.String(length=1000), nullable=False),
        sa.Column("html", _LONG, nullable=True),
        sa.Column("text", _LONG, nullable=True),
        sa.Column("created_at", UTCDateTime(), nullable=False),
        sa.Column("updated_at", UTCDateTime(), nullable=False),
        sa.ForeignKeyConstraint(
            ["user_id"], ["users.id"], name=op.f("fk_templates_user_id_users"), ondelete="CASCADE"
        ),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_templates")),
        sa.UniqueConstraint("hash", name=op.f("uq_templates_hash")),
        sqlite_autoincrement=True,
    )
    op.create_index(op.f("ix_templates_user_id"), "templates", ["user_id"], unique=False)


def downgrade() -> None:
    op.drop_index(op.f("ix_templates_user_id"), table_name="templates")
    op.drop_table("templates")
