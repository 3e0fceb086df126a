"""infobip_messages: an Infobip send's bulkId, messageId and report settings per delivery

Revision ID: 0014
Revises: 0013
Create Date: 2026-12-07 22:00:00
"""

import sqlalchemy as sa
from alembic import op
from sqlalchemy.dialects import mysql

from models.base import UTCDateTime

revision = "0014"
down_revision = "0013"
branch_labels = None
depends_on = None

_LONG = sa.Text().with_variant(mysql.LONGTEXT(), "mariadb").with_variant(mysql.LONGTEXT(), "mysql")


def upgrade() -> None:
    op.create_table(
        "infobip_messages",
        sa.Column(
            "delivery_id", sa.BigInteger().with_variant(sa.Integer(), "sqlite"), nullable=False
        ),
        sa.Column("user_id", sa.Integer(), nullable=False),
        sa.Column("bulk_id", sa.String(length=100), nullable=False),
        sa.Column("message_id", sa.String(length=200), nullable=False),
        sa.Column("campaign_reference_id", sa.String(length=255), nullable=True),
        sa.Column("application_id", sa.String(length=255), nullable=True),
        sa.Column("entity_id", sa.String(length=255), nullable=True),
        sa.Column("notify_url", sa.Text(), nullable=True),
        sa.Column("notify_content_type", sa.String(length=100), nullable=True),
        sa.Column("notify", sa.Boolean(), nullable=False),
        sa.Column("callback_data", sa.Text(), nullable=True),
        sa.Column("intermediate_report", sa.Boolean(), nullable=False),
        sa.Column("tracking_url", sa.Text(), nullable=True),
        sa.Column("ignored", _LONG, nullable=False),
        sa.Column("created_at", UTCDateTime(), nullable=False),
        sa.Column("reported_at", UTCDateTime(), nullable=True),
        sa.ForeignKeyConstraint(
            ["delivery_id"],
            ["deliveries.id"],
            name=op.f("fk_infobip_messages_delivery_id_deliveries"),
            ondelete="CASCADE",
        ),
        sa.PrimaryKeyConstraint("delivery_id", name=op.f("pk_infobip_messages")),
    )
    op.create_index(
        "ix_infobip_messages_user_id_message_id",
        "infobip_messages",
        ["user_id", "message_id"],
        unique=False,
    )
    op.create_index(
        "ix_infobip_messages_user_id_bulk_id",
        "infobip_messages",
        ["user_id", "bulk_id"],
        unique=False,
    )


def downgrade() -> None:
    op.drop_index("ix_infobip_messages_user_id_bulk_id", table_name="infobip_messages")
    op.drop_index("ix_infobip_messages_user_id_message_id", table_name="infobip_messages")
    op.drop_table("infobip_messages")
