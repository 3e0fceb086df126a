"""Pooled connections on PostgreSQL and MariaDB: tested on checkout only after a rest, and a
connection the server dropped meanwhile is replaced without the caller seeing an error."""

from __future__ import annotations

import pytest
from sqlalchemy import text

import models.database
from models import Database


@pytest.fixture
def server_db(database_url):
    if database_url.startswith("sqlite"):
        pytest.skip("SQLite has no server connections to lose")
    db = Database(database_url, pool_size=1)
    yield db
    db.dispose()


def _session_id(conn) -> int:
    query = (
        "SELECT pg_backend_pid()" if conn.dialect.name == "postgresql" else "SELECT CONNECTION_ID()"
    )
    return conn.execute(text(query)).scalar()


def _kill(database_url: str, session_id: int, dialect: str) -> None:
    killer = Database(database_url, pool_size=1)
    with killer.engine.connect() as conn:
        if dialect == "postgresql":
            conn.execute(text("SELECT pg_terminate_backend(:p)"), {"p": session_id})
        else:
            conn.execute(text(f"KILL {int(session_id)}"))
    killer.dispose()


def test_a_rested_connection_the_server_dropped_is_replaced(server_db, database_url, monkeypatch):
    monkeypatch.setattr(models.database, "IDLE_PING", 0.0)
    with server_db.engine.connect() as conn:
        first = _session_id(conn)
    _kill(database_url, first, server_db.backend)
    with server_db.engine.connect() as conn:  # the checkout test finds it dead: a new one
        assert _session_id(conn) != first
        assert conn.execute(text("SELECT 1")).scalar() == 1


def test_only_a_rested_connection_is_tested(server_db, monkeypatch):
    pings = []
    monkeypatch.setattr(models.database, "_ping", pings.append)
    monkeypatch.setattr(models.database, "IDLE_PING", 3600.0)
    for _ in range(3):
        with server_db.engine.connect() as conn:
            conn.execute(text("SELECT 2"))
    assert pings == []  # busy: returned moments ago
    monkeypatch.setattr(models.database, "IDLE_PING", 0.0)
    with server_db.engine.connect() as conn:
        conn.execute(text("SELECT 2"))
    assert len(pings) == 1


def test_a_direct_statement_on_a_dropped_connection_invalidates_it(server_db, database_url):
    # Direct statements (models/direct.py) bypass Connection.execute, which would notice
    # the loss; they must too, so the pool does not hand the dead connection out again.
    from sqlalchemy import select
    from sqlalchemy.exc import DBAPIError

    from models.direct import Direct

    one = Direct(select(text("1")))
    with server_db.engine.connect() as conn:
        first = _session_id(conn)
        conn.commit()
        _kill(database_url, first, server_db.backend)
        with pytest.raises(DBAPIError) as caught:
            one.first(conn, {})
        assert caught.value.connection_invalidated
        assert conn.invalidated
    with server_db.engine.connect() as conn:  # a new connection, without any test needed
        assert _session_id(conn) != first
        assert one.first(conn, {}) == (1,)
