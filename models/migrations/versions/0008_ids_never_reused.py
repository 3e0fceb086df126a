"""ids never reused: AUTOINCREMENT on SQLite for every table whose ids are counted

Without AUTOINCREMENT, SQLite gives a new row the highest id in its table plus one, so
the id of the highest row deleted comes back: a domain deleted by one user could return
as another user's domain, under the events, deliveries and webhook deliveries that still
name it. Each such table is rebuilt (SQLite cannot add AUTOINCREMENT otherwise) with
its rows and ids, and its counter (``sqlite_sequence``) starts above the highest id
that the table or any column naming its rows still holds, so that ids of rows deleted
before this migration are not given again either, as far as the database remembers them.

PostgreSQL's sequences and MariaDB's InnoDB auto-increment counters (persistent across
restarts since MariaDB 10.2) never go back: nothing changes there.

The rebuild needs foreign keys off (dropping a table with them on deletes its rows first,
with cascades): ``models/migrations/env.py`` turns them off on SQLite for a migration run
and this checks them before it commits.

Revision ID: 0008
Revises: 0007
Create Date: 2026-12-07 18:40:00
"""

import sqlalchemy as sa
from alembic import op

revision = "0008"
down_revision = "0007"
branch_labels = None
depends_on = None

# Each table rebuilt, with the columns elsewhere that name its rows (table, column).
TABLES: dict[str, list[tuple[str, str]]] = {
    "users": [
        (t, "user_id")
        for t in (
            "user_sessions",
            "user_api_keys",
            "domains",
            "sender_api_keys",
            "smtp_credentials",
            "messages",
            "deliveries",
            "events",
            "event_counts",
            "suppressions",
            "webhook_deliveries",
        )
    ],
    "user_sessions": [],
    "user_api_keys": [],
    "domains": [
        (t, "domain_id")
        for t in (
            "dkim_keys",
            "sender_api_keys",
            "smtp_credentials",
            "webhooks",
            "messages",
            "deliveries",
            "events",
            "event_counts",
            "suppressions",
            "webhook_deliveries",
        )
    ],
    "dkim_keys": [],
    "sender_api_keys": [("messages", "sender_key_id")],
    "smtp_credentials": [],
    "webhooks": [("webhook_deliveries", "webhook_id")],
    "deliveries": [("events", "delivery_id")],
    "events": [("webhook_deliveries", "event_id"), ("webhook_cursor", "last_event_id")],
    "suppressions": [],
    "webhook_deliveries": [("webhook_attempts", "delivery_id")],
    "webhook_attempts": [],
}


def upgrade() -> None:
    bind = op.get_bind()
    if bind.dialect.name != "sqlite":
        return
    if bind.exec_driver_sql("PRAGMA foreign_keys").scalar():
        raise RuntimeError(
            "migration 0008 rebuilds tables and needs foreign keys off on SQLite "
            "(models.migrate.upgrade does that)"
        )
    for table in TABLES:
        with op.batch_alter_table(
            table, recreate="always", table_kwargs={"sqlite_autoincrement": True}
        ):
            pass
    for table, naming in TABLES.items():
        named = [(table, "id"), *naming]
        seq = max(
            (
                bind.scalar(sa.select(sa.func.max(sa.column(column))).select_from(sa.table(t)))
                for t, column in named
            ),
            key=lambda v: -1 if v is None else int(v),
        )
        bind.execute(sa.text("DELETE FROM sqlite_sequence WHERE name = :t"), {"t": table})
        if seq is not None:
            bind.execute(
                sa.text("INSERT INTO sqlite_sequence (name, seq) VALUES (:t, :s)"),
                {"t": table, "s": int(seq)},
            )
    broken = bind.exec_driver_sql("PRAGMA foreign_key_check").first()
    if broken is not None:
        raise RuntimeError(f"migration 0008 left a broken foreign key: {tuple(broken)}")


def downgrade() -> None:
    bind = op.get_bind()
    if bind.dialect.name != "sqlite":
        return
    for table in TABLES:
        with op.batch_alter_table(
            table, recreate="always", table_kwargs={"sqlite_autoincrement": False}
        ):
            pass
