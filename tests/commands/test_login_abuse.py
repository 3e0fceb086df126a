"""User.Login under attack: failed logins throttled per username and per client address, in
the store every process shares, and no database lock held while a password is checked."""

from __future__ import annotations

import os
import sqlite3
from datetime import UTC, datetime, timedelta

import pytest
from sqlalchemy import text
from sqlalchemy.engine import make_url

import commands.users
from app.http.factory import create_app
from commands import Gateway

START = 1_800_000_000  # a multiple of login_lockout (900 s): a window begins there
LOCKOUT = 900
REDIS_URL = os.environ.get("POSTERN_TEST_REDIS_URL", "").strip()


@pytest.fixture
def at(clock):
    """Freezes the gateway's clock ``seconds`` after START."""

    def move(seconds: float):
        clock.freeze(datetime.fromtimestamp(START, UTC) + timedelta(seconds=seconds))

    move(0)
    return move


def login(client, username, password, address="192.0.2.1"):
    resp = client.post(
        "/api.php",
        json={"Command": "User.Login", "Username": username, "Password": password},
        environ_base={"REMOTE_ADDR": address},
    )
    return resp.status_code, resp.get_json()


def refused(status, body):
    return (
        status == 429
        and body["Success"] is False
        and body["ErrorCode"] == 4
        and body["ErrorText"].startswith("Too many failed logins. Wait for ")
    )


def test_wrong_passwords_for_a_username_lock_it_until_the_window_ends(client, user, at):
    # From a different address each time: only the username's count reaches its limit.
    for i in range(5):
        status, body = login(client, user.username, "wrong password", f"192.0.2.{i + 10}")
        assert (status, body["ErrorCode"]) == (200, 3)
    # The sixth attempt is refused, the right password too, from anywhere, in any case.
    for name in (user.username, user.username.upper()):
        status, body = login(client, name, user.password, "198.51.100.7")
        assert refused(status, body), body
    assert "Wait for 900 seconds" in body["ErrorText"]
    at(LOCKOUT - 1)
    status, body = login(client, user.username, user.password, "198.51.100.7")
    assert refused(status, body) and "Wait for 1 seconds" in body["ErrorText"]
    at(LOCKOUT)  # the window has ended
    status, body = login(client, user.username, user.password, "198.51.100.7")
    assert body["Success"] is True, body


def test_wrong_passwords_from_an_address_lock_it_until_the_window_ends(client, user, make_user, at):
    other = make_user("bob")
    # Twenty failures from one address, for usernames that do not exist.
    for i in range(20):
        status, body = login(client, f"nobody{i}", "wrong password", "203.0.113.5")
        assert (status, body["ErrorCode"]) == (200, 3)
    status, body = login(client, user.username, user.password, "203.0.113.5")
    assert refused(status, body), body
    # Another address logs in; the usernames themselves were never locked.
    status, body = login(client, other.username, other.password, "203.0.113.6")
    assert body["Success"] is True, body
    at(LOCKOUT)
    status, body = login(client, user.username, user.password, "203.0.113.5")
    assert body["Success"] is True, body


def test_a_login_forgets_the_usernames_failures(client, user, at):
    for _ in range(4):
        assert login(client, user.username, "wrong password")[1]["ErrorCode"] == 3
    assert login(client, user.username, user.password)[1]["Success"] is True
    for _ in range(4):
        assert login(client, user.username, "wrong password", "192.0.2.99")[1]["ErrorCode"] == 3
    assert login(client, user.username, user.password, "192.0.2.99")[1]["Success"] is True


def test_failures_are_shared_by_every_process(base_config, database, clock, user, at):
    """Two gateways (two processes' worth: each its own limiter) on one database."""
    first = create_app(base_config, Gateway(base_config, database, clock=clock)).test_client()
    second = create_app(base_config, Gateway(base_config, database, clock=clock)).test_client()
    for i in range(5):
        client = (first, second)[i % 2]
        assert login(client, user.username, "wrong password", f"192.0.2.{i}")[1]["ErrorCode"] == 3
    assert refused(*login(first, user.username, user.password, "192.0.2.50"))
    assert refused(*login(second, user.username, user.password, "192.0.2.51"))


@pytest.fixture
def redis_url():
    import redis

    url = REDIS_URL or "redis://127.0.0.1:6379/0"
    client = redis.Redis.from_url(url, socket_connect_timeout=2, socket_timeout=2)
    try:
        client.ping()
    except redis.RedisError as exc:
        if REDIS_URL:
            pytest.fail(f"POSTERN_TEST_REDIS_URL={url} cannot be reached: {exc}")
        pytest.skip(f"no Redis at {url} ({exc})")
    finally:
        client.close()
    return url


def test_failures_are_kept_in_redis_when_rate_limits_are(
    base_config, database, clock, user, at, redis_url
):
    config = base_config.replace(ratelimit__storage=redis_url)
    gateways = [Gateway(config, database, clock=clock) for _ in range(2)]
    clients = [create_app(config, g).test_client() for g in gateways]
    throttle = gateways[0].login_throttle
    keys = [("user", user.username), ("ip", "192.0.2.60"), ("ip", "192.0.2.61")]
    try:
        for i in range(5):
            body = login(clients[i % 2], user.username, "wrong password", f"192.0.2.{i}")[1]
            assert body["ErrorCode"] == 3
        assert refused(*login(clients[1], user.username, user.password, "192.0.2.60"))
        # Nothing was written to the database's counters.
        with database.read_connection() as conn:
            rows = conn.execute(text("SELECT COUNT(*) FROM rate_counters")).scalar_one()
        assert rows == 0
    finally:
        for i in range(5):
            throttle.forget(("ip", f"192.0.2.{i}"))
        for key in keys:
            throttle.forget(key)
        for g in gateways:
            g.close()


# -- no lock while the hash is checked


def transactions_open(database) -> int:
    """How many transactions other than this probe's are open on the database, as the
    database itself says; on SQLite, whether another connection can take the write lock."""
    url = make_url(database.url)
    if database.backend == "sqlite":
        probe = sqlite3.connect(url.database, timeout=0, isolation_level=None)
        try:
            probe.execute("BEGIN IMMEDIATE")
            probe.execute("ROLLBACK")
            return 0
        except sqlite3.OperationalError:  # database is locked
            return 1
        finally:
            probe.close()
    with database.engine.connect() as conn:
        if database.backend == "postgresql":
            query = (
                "SELECT COUNT(*) FROM pg_stat_activity WHERE datname = current_database()"
                " AND state LIKE 'idle in transaction%' AND pid <> pg_backend_pid()"
            )
        else:
            query = (
                "SELECT COUNT(*) FROM information_schema.innodb_trx"
                " WHERE trx_mysql_thread_id <> CONNECTION_ID()"
            )
        count = conn.execute(text(query)).scalar_one()
        conn.rollback()
    return int(count)


def test_no_transaction_is_open_while_a_password_is_checked(client, user, database, monkeypatch):
    seen = []
    check = commands.users.verify_password

    def watched(password_hash, password):
        seen.append(transactions_open(database))
        return check(password_hash, password)

    monkeypatch.setattr(commands.users, "verify_password", watched)
    assert login(client, user.username, user.password)[1]["Success"] is True
    assert login(client, user.username, "wrong password")[1]["ErrorCode"] == 3
    # An unknown username is checked against a stand-in hash: as slow, and as lock-free.
    assert login(client, "nobody", "wrong password")[1]["ErrorCode"] == 3
    assert seen == [0, 0, 0]
