"""Fixtures: a real database (SQLite, or PostgreSQL/MariaDB by POSTERN_TEST_DATABASE_URL),
the app on it with a controllable clock, and helpers to call /api.php."""

from __future__ import annotations

import logging
import os
import secrets
import threading
from datetime import datetime, timedelta
from types import SimpleNamespace

import pytest
from sqlalchemy import create_engine, delete, text
from sqlalchemy.engine import make_url
from werkzeug.serving import make_server

from app.http.factory import create_app
from commands import Gateway
from commands.users import create_api_key, create_user
from core.clock import utcnow
from core.crypto import SecretBox
from core.settings import load_config
from models import Base, Database
from models.migrate import upgrade
from tests.dnsserver import DNSServer

SECRET_KEY = "test-secret-key-0123456789abcdef0123456789"
SERVER_URL = os.environ.get("POSTERN_TEST_DATABASE_URL", "").strip()


@pytest.fixture(scope="session")
def database_url(tmp_path_factory):
    """A database of its own for this test run, dropped at the end."""
    if not SERVER_URL:
        yield f"sqlite:///{tmp_path_factory.mktemp('db') / 'postern.db'}"
        return
    server = make_url(SERVER_URL)
    name = f"postern_test_{secrets.token_hex(4)}"
    admin = create_engine(server, isolation_level="AUTOCOMMIT")
    with admin.connect() as conn:
        conn.execute(text(f"CREATE DATABASE {name}"))
    try:
        yield server.set(database=name).render_as_string(hide_password=False)
    finally:
        with admin.connect() as conn:
            force = " WITH (FORCE)" if admin.dialect.name == "postgresql" else ""
            conn.execute(text(f"DROP DATABASE IF EXISTS {name}{force}"))
        admin.dispose()


@pytest.fixture(scope="session")
def dns_session():
    """One loopback DNS server for the run: the resolver every test configuration uses."""
    with DNSServer() as server:
        yield server


@pytest.fixture
def dns_server(dns_session):
    """The loopback DNS server, emptied for this test."""
    dns_session.clear()
    dns_session.queries.clear()
    yield dns_session
    dns_session.clear()


@pytest.fixture(scope="session")
def base_config(database_url, dns_session):
    return load_config(environ={}).replace(
        database__url=database_url,
        security__secret_key=SECRET_KEY,
        log__level="INFO",
        dns__nameservers=[dns_session.host],
        dns__port=dns_session.port,
        dns__timeout=1.0,
        webhooks__allow_private=True,
        delivery__allow_private_mx=True,  # the SMTP peers are on loopback
        smtp__hostname="mx.postern.test",
        delivery__build_processes=1,  # in process; tests/test_delivery.py covers the pool
    )


class Clock:
    """The gateway's clock: real time plus an offset tests move forward, or, once frozen,
    a fixed instant that only ``advance`` moves (rate-limit windows are aligned to it)."""

    def __init__(self):
        self.offset = timedelta()
        self.frozen: datetime | None = None

    def __call__(self):
        return (self.frozen or utcnow()) + self.offset

    def advance(self, **kw):
        self.offset += timedelta(**kw)

    def freeze(self, at: datetime | None = None):
        """Stop the clock at ``at`` (aware, UTC), or where it is now."""
        self.frozen, self.offset = at or self(), timedelta()

    def reset(self):
        self.offset, self.frozen = timedelta(), None


@pytest.fixture(scope="session")
def clock():
    return Clock()


@pytest.fixture(scope="session")
def database(base_config):
    db = Database(base_config.database.url)
    upgrade(db.engine)
    yield db
    db.dispose()


@pytest.fixture(scope="session")
def gateway(base_config, database, clock):
    return Gateway(base_config, database, clock=clock)


@pytest.fixture(scope="session")
def flask_app(base_config, gateway):
    return create_app(base_config, gateway)


@pytest.fixture
def served(flask_app):
    """The suite's application served over HTTP on loopback by a thread: "127.0.0.1:<port>"
    (for clients that speak HTTP themselves: vendors' libraries, browsers)."""
    server = make_server("127.0.0.1", 0, flask_app, threaded=True)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    yield f"127.0.0.1:{server.server_port}"
    server.shutdown()
    thread.join()


@pytest.fixture(autouse=True)
def _clean(request, clock):
    """Every test starts with empty tables and an unmoved clock."""
    clock.reset()
    yield
    if "database" in request.fixturenames:
        db = request.getfixturevalue("database")
        with db.transaction() as s:
            for table in reversed(Base.metadata.sorted_tables):
                s.execute(delete(table))


@pytest.fixture
def client(flask_app):
    return flask_app.test_client()


@pytest.fixture
def api(client):
    """Call /api.php with a JSON body; returns the parsed envelope (status checked by caller)."""

    def call(command, *, expect_status=200, **params):
        resp = client.post("/api.php", json={"Command": command, **params})
        assert resp.status_code == expect_status, resp.get_data(as_text=True)
        return resp.get_json()

    return call


@pytest.fixture
def box():
    return SecretBox(SECRET_KEY.encode())


@pytest.fixture
def make_user(database, box):
    """Create users directly through the gateway's own service functions."""

    def make(username="alice", password="correct horse battery", email="", is_admin=False):
        with database.transaction() as s:
            user = create_user(s, username, password, email, is_admin=is_admin)
            _, key = create_api_key(s, box, user, "test")
            return SimpleNamespace(id=user.id, username=username, password=password, api_key=key)

    return make


@pytest.fixture
def user(make_user):
    return make_user()


@pytest.fixture
def postern_log():
    """Records what Postern logs (its logger does not propagate to the root)."""
    records: list[logging.LogRecord] = []

    class Keep(logging.Handler):
        def emit(self, record):
            records.append(record)

    handler = Keep(level=logging.DEBUG)
    logger = logging.getLogger("postern")
    logger.addHandler(handler)
    yield records
    logger.removeHandler(handler)


@pytest.fixture
def make_app(database, clock, base_config):
    """An app on the same database with some settings changed (``section__key=value``).

    Returns a function that calls /api.php on it; ``.client`` is its test client.
    """

    def make(**changes):
        config = base_config.replace(**changes)
        client = create_app(config, Gateway(config, database, clock=clock)).test_client()

        def call(command, **params):
            """Call /api.php on this app with a JSON body; the parsed envelope."""
            return client.post("/api.php", json={"Command": command, **params}).get_json()

        call.client = client
        return call

    return make


@pytest.fixture
def add_domain(api, user):
    """Add a domain through EmailGateway.AddDomain; returns its DomainID."""

    def add(name="example.com", key=None):
        body = api("EmailGateway.AddDomain", APIKey=key or user.api_key, DomainName=name)
        assert body["Success"] is True, body
        return body["NewSenderDomainID"]

    return add


@pytest.fixture
def publish(api, user, dns_server):
    """Publish a domain's DNS records, as GetDomain gives them, in the loopback DNS."""

    def do(domain_id, key=None, skip=()):
        body = api("EmailGateway.GetDomain", APIKey=key or user.api_key, DomainID=domain_id)
        records = body["Domain"]["DNSRecords"]
        for r in records:
            if r["Purpose"] not in skip:
                dns_server.add(r["Host"], r["Type"], r["Value"])
        return records

    return do


@pytest.fixture
def active_domain(api, user, add_domain, database):
    """An enabled domain of ``user`` with a sender API key (its DNS taken as verified)."""
    from models import Domain
    from models.domains import ENABLED

    def make(name="example.com", key=None):
        key = key or user.api_key
        domain_id = add_domain(name, key=key)
        with database.transaction() as s:
            s.get(Domain, domain_id).status = ENABLED
        sender = api("EmailGateway.AddAPI", APIKey=key, DomainID=domain_id, Description="app")[
            "APIKey"
        ]["Key"]
        return SimpleNamespace(id=domain_id, name=name, key=sender, user_key=key)

    return make
