"""webhook_deliveries.webhook_id nullable (Infobip's pushed reports and tracking events);
infobip_messages by user and time (Infobip's logs)

A POST to the ``notifyUrl`` or ``trackingUrl`` a message was sent with is a webhook
delivery of no registered webhook: its URL is its own. On SQLite the table is rebuilt
(SQLite cannot change a column's nullability otherwise) with AUTOINCREMENT and its counter
kept, so that no id is given twice (0008).

Revision ID: 0017
Revises: 0016
Create Date: 2026-12-07 22:30:00
"""

import sqlalchemy as sa
from alembic import op

revision = "0017"
down_revision = "0016"
branch_labels = None
depends_on = None


def _sequence(bind: sa.Connection) -> int | None:
    seq = bind.scalar(sa.text("SELECT seq FROM sqlite_sequence WHERE name = 'webhook_deliveries'"))
    return None if seq is None else int(seq)


def _set_sequence(bind: sa.Connection, seq: int | None) -> None:
    highest = bind.scalar(sa.text("SELECT max(id) FROM webhook_deliveries"))
    values = [int(v) for v in (seq, highest) if v is not None]
    bind.execute(sa.text("DELETE FROM sqlite_sequence WHERE name = 'webhook_deliveries'"))
    if values:
        bind.execute(
            sa.text("INSERT INTO sqlite_sequence (name, seq) VALUES ('webhook_deliveries', :s)"),
            {"s": max(values)},
        )


def _webhook_id(nullable: bool) -> None:
    bind = op.get_bind()
    sqlite = bind.dialect.name == "sqlite"
    seq = _sequence(bind) if sqlite else None
    kwargs = {"table_kwargs": {"sqlite_autoincrement": True}} if sqlite else {}
    with op.batch_alter_table("webhook_deliveries", **kwargs) as batch_op:  # type: ignore[arg-type]
        batch_op.alter_column(
            "webhook_id",
            existing_type=sa.Integer(),
            nullable=nullable,
        )
    if sqlite:
        _set_sequence(bind, seq)


def upgrade() -> None:
    _webhook_id(nullable=True)
    op.create_index(
        "ix_infobip_messages_user_id_created_at",
        "infobip_messages",
        ["user_id", "created_at"],
        unique=False,
    )


def downgrade() -> None:
    op.drop_index("ix_infobip_messages_user_id_created_at", table_name="infobip_messages")
    op.execute("DELETE FROM webhook_deliveries WHERE webhook_id IS NULL")
    _webhook_id(nullable=False)
