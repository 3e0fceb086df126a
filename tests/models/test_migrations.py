"""Migrations build exactly the schema the models describe, on every database."""

import pytest
from alembic.autogenerate import compare_metadata
from alembic.runtime.migration import MigrationContext
from sqlalchemy import text

from models import Base
from models.database import make_engine
from models.migrate import current_revision, head_revision, is_current, upgrade


def test_upgraded_database_matches_the_models(database):
    assert current_revision(database.engine) == head_revision()
    assert is_current(database.engine)
    with database.engine.connect() as conn:
        ctx = MigrationContext.configure(conn, opts={"compare_type": True})
        diff = compare_metadata(ctx, Base.metadata)
    assert diff == []


# Every table whose ids are counted (migration 0008): an id is never given twice.
COUNTED = [
    "users",
    "user_sessions",
    "user_api_keys",
    "domains",
    "dkim_keys",
    "sender_api_keys",
    "smtp_credentials",
    "webhooks",
    "deliveries",
    "events",
    "suppressions",
    "webhook_deliveries",
    "templates",
    "webhook_attempts",
    "idempotency_keys",
]


def test_every_counted_table_never_gives_an_id_twice_in_the_models():
    """A table whose primary key is one integer the database gives takes NEVER_REUSED (the
    webhook cursor's one row is always id 1)."""
    autoincrement = {
        t.name for t in Base.metadata.sorted_tables if t.dialect_options["sqlite"]["autoincrement"]
    }
    counted = {
        t.name
        for t in Base.metadata.sorted_tables
        if t.autoincrement_column is not None and t.name != "webhook_cursor"
    }
    assert autoincrement == counted == set(COUNTED)


def test_counted_tables_have_autoincrement_on_sqlite(database):
    if database.engine.dialect.name != "sqlite":
        pytest.skip("PostgreSQL sequences and InnoDB counters never go back")
    with database.engine.connect() as conn:
        sql = {n: s for n, s in conn.execute(text("SELECT name, sql FROM sqlite_master"))}
    for table in COUNTED:
        assert "AUTOINCREMENT" in sql[table], table


def _exec(conn, statement, **params):
    return conn.execute(text(statement), params)


def test_the_migration_keeps_rows_and_ids_and_starts_above_the_highest_used(tmp_path):
    """An SQLite database at 0007 with rows (and rows deleted) upgraded to 0008: the same rows
    and ids, and each counter above the highest id the table or anything naming it holds."""
    engine = make_engine(f"sqlite:///{tmp_path / 'old.db'}")
    try:
        upgrade(engine, "0007")
        now = "2026-12-01 10:00:00"
        with engine.begin() as conn:
            for uid in (1, 2, 3):
                _exec(
                    conn,
                    "INSERT INTO users (id, username, username_key, email, password_hash,"
                    " enabled, is_admin, created_at) VALUES (:i, :n, :n, '', 'x', 1, 0, :now)",
                    i=uid,
                    n=f"u{uid}",
                    now=now,
                )
            for did, uid in ((1, 1), (2, 2), (3, 1)):
                _exec(
                    conn,
                    "INSERT INTO domains (id, user_id, name, status, last_check, ownership_token,"
                    " subdomain, link_tracking, open_tracking, unsubscribe_link,"
                    " hosting_provider, signing_key_encrypted, created_at) VALUES"
                    " (:i, :u, :n, 'Enabled', '', 't', 'sl', 0, 1, 0, '', 'k', :now)",
                    i=did,
                    u=uid,
                    n=f"d{did}.example",
                    now=now,
                )
            _exec(
                conn,
                "INSERT INTO webhooks (id, domain_id, url, events, active, created_at)"
                " VALUES (7, 2, 'http://127.0.0.1/h', 'open', 1, :now)",
                now=now,
            )
            # Domain 3 is deleted and so is user 3: before 0008 SQLite would give their ids
            # again. Domain 3's messages and events stay (statistics).
            _exec(
                conn,
                "INSERT INTO messages (id, user_id, domain_id, domain_name, source, from_email,"
                " subject, tags, payload, size, created_at) VALUES ('m1', 1, 3, 'd3.example',"
                " 'api', 'a@d3.example', 's', '[]', '{}', 1, :now)",
                now=now,
            )
            _exec(
                conn,
                "INSERT INTO deliveries (id, message_id, user_id, domain_id, recipient,"
                " recipient_domain, kind, token, status, attempts, created_at, updated_at)"
                " VALUES (40, 'm1', 1, 3, 'r@x.example', 'x.example', 'to', 'tok', 'delivered',"
                " 1, :now, :now)",
                now=now,
            )
            _exec(
                conn,
                "INSERT INTO events (id, uid, type, created_at, user_id, domain_id, domain_name,"
                " message_id, delivery_id, recipient, recipient_lower, tags, details) VALUES"
                " (90, 'e90', 'delivered', :now, 1, 3, 'd3.example', 'm1', 41, 'r@x.example',"
                " 'r@x.example', '[]', '{}')",
                now=now,
            )
            _exec(conn, "DELETE FROM domains WHERE id = 3")
            _exec(conn, "DELETE FROM deliveries WHERE id = 40")
            _exec(conn, "DELETE FROM users WHERE id = 3")
        upgrade(engine)
        assert current_revision(engine) == head_revision()
        with engine.connect() as conn:
            sql = {n: s for n, s in _exec(conn, "SELECT name, sql FROM sqlite_master")}
            assert all("AUTOINCREMENT" in sql[t] for t in COUNTED)
            assert list(_exec(conn, "SELECT id, user_id, name FROM domains ORDER BY id")) == [
                (1, 1, "d1.example"),
                (2, 2, "d2.example"),
            ]
            assert list(_exec(conn, "SELECT id, domain_id FROM webhooks")) == [(7, 2)]
            assert list(_exec(conn, "SELECT id, domain_id FROM events")) == [(90, 3)]
            seq = {n: s for n, s in _exec(conn, "SELECT name, seq FROM sqlite_sequence")}
            assert _exec(conn, "PRAGMA foreign_keys").scalar() == 1  # set back on
            diff = compare_metadata(
                MigrationContext.configure(conn, opts={"compare_type": True}), Base.metadata
            )
        assert diff == []
        # users: 2 left, but 3 was used (users table) and events name no higher user.
        # domains: 2 left, but 3 is named by messages and events; deliveries: 41 by an event.
        assert seq["domains"] == 3 and seq["deliveries"] == 41 and seq["events"] == 90
        assert seq["webhooks"] == 7
        with engine.begin() as conn:
            _exec(
                conn,
                "INSERT INTO domains (user_id, name, status, last_check, ownership_token,"
                " subdomain, link_tracking, open_tracking, unsubscribe_link, hosting_provider,"
                " signing_key_encrypted, created_at) VALUES (2, 'new.example', 'Pending', '',"
                " 't', 'sl', 0, 0, 0, '', 'k', :now)",
                now=now,
            )
            assert _exec(conn, "SELECT id FROM domains WHERE name='new.example'").scalar() == 4
            _exec(conn, "DELETE FROM domains WHERE id = 4")
        with engine.begin() as conn:
            _exec(
                conn,
                "INSERT INTO domains (user_id, name, status, last_check, ownership_token,"
                " subdomain, link_tracking, open_tracking, unsubscribe_link, hosting_provider,"
                " signing_key_encrypted, created_at) VALUES (2, 'again.example', 'Pending', '',"
                " 't', 'sl', 0, 0, 0, '', 'k', :now)",
                now=now,
            )
            assert _exec(conn, "SELECT id FROM domains WHERE name='again.example'").scalar() == 5
    finally:
        engine.dispose()


def test_0017_keeps_webhook_deliveries_and_their_counter_on_sqlite(tmp_path):
    """webhook_deliveries rebuilt (webhook_id nullable, for Infobip's pushes): its rows and
    ids kept, AUTOINCREMENT kept, and the next id above one deleted before."""
    engine = make_engine(f"sqlite:///{tmp_path / 'old.db'}")
    try:
        upgrade(engine, "0016")
        now = "2026-12-01 10:00:00"
        with engine.begin() as conn:
            _exec(
                conn,
                "INSERT INTO users (id, username, username_key, email, password_hash,"
                " enabled, is_admin, created_at) VALUES (1, 'u', 'u', '', 'x', 1, 0, :now)",
                now=now,
            )
            _exec(
                conn,
                "INSERT INTO domains (id, user_id, name, status, last_check, ownership_token,"
                " subdomain, link_tracking, open_tracking, unsubscribe_link,"
                " hosting_provider, signing_key_encrypted, created_at) VALUES"
                " (1, 1, 'd.example', 'Enabled', '', 't', 'sl', 0, 1, 0, '', 'k', :now)",
                now=now,
            )
            _exec(
                conn,
                "INSERT INTO webhooks (id, domain_id, url, events, active, created_at)"
                " VALUES (7, 1, 'http://127.0.0.1/h', 'open', 1, :now)",
                now=now,
            )
            for wid in (5, 9):
                _exec(
                    conn,
                    "INSERT INTO webhook_deliveries (id, webhook_id, user_id, domain_id,"
                    " event_id, event_uid, event_name, url, status, attempts, created_at,"
                    " updated_at) VALUES (:i, 7, 1, 1, :i, :u, 'open', 'http://127.0.0.1/h',"
                    " 'succeeded', 1, :now, :now)",
                    i=wid,
                    u=f"e{wid}",
                    now=now,
                )
            _exec(
                conn,
                "INSERT INTO webhook_attempts (delivery_id, attempted_at, status_code,"
                " duration_ms) VALUES (5, :now, 200, 3)",
                now=now,
            )
            _exec(conn, "DELETE FROM webhook_deliveries WHERE id = 9")
        upgrade(engine)
        with engine.begin() as conn:
            sql = {n: s for n, s in _exec(conn, "SELECT name, sql FROM sqlite_master")}
            assert "AUTOINCREMENT" in sql["webhook_deliveries"]
            assert list(_exec(conn, "SELECT id, webhook_id FROM webhook_deliveries")) == [(5, 7)]
            assert list(_exec(conn, "SELECT delivery_id FROM webhook_attempts")) == [(5,)]
            _exec(
                conn,
                "INSERT INTO webhook_deliveries (webhook_id, user_id, domain_id, event_id,"
                " event_uid, event_name, url, status, attempts, created_at, updated_at)"
                " VALUES (NULL, 1, 1, 11, 'e11', 'infobip-report', 'http://127.0.0.1/n',"
                " 'pending', 0, :now, :now)",
                now=now,
            )
            new = _exec(conn, "SELECT id FROM webhook_deliveries WHERE event_id = 11").scalar()
            assert new == 10
    finally:
        engine.dispose()
