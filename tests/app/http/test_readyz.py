"""GET /readyz: ready while the database answers, its schema is current and a delivery
worker has reported within a minute; 503 naming each failed check otherwise."""

from contextlib import contextmanager
from datetime import UTC, datetime

from sqlalchemy import text

from app.http.factory import create_app
from commands.health import STALE_AFTER
from core.clock import utcnow
from models.migrate import head_revision
from tests import smtppeer
from tests.app.workers import test_delivery as delivery_tests

smtp_peer = smtppeer.smtp_peer
mx, worker_for = delivery_tests.mx, delivery_tests.worker_for


def test_not_ready_until_a_delivery_worker_reports(client, worker_for, mx):
    resp = client.get("/readyz")
    assert resp.status_code == 503
    body = resp.get_json()
    assert body["Status"] == "error" and body["Failed"] == ["worker"]
    assert body["Checks"]["database"] == body["Checks"]["migrations"] == "ok"
    assert body["Checks"]["worker"] == "no delivery worker has reported"

    assert worker_for(mx).run_once() == 0  # an idle round reports too
    resp = client.get("/readyz")
    assert resp.status_code == 200, resp.get_json()
    assert resp.get_json() == {
        "Status": "ok",
        "Checks": {"database": "ok", "migrations": "ok", "worker": "ok"},
        "Failed": [],
    }
    assert client.get("/healthz").status_code == 200


def test_a_worker_that_stopped_reporting_a_minute_ago_makes_it_unready(
    client, worker_for, mx, clock
):
    clock.freeze(datetime.fromtimestamp(int(utcnow().timestamp()), UTC))  # a whole second
    worker_for(mx).run_once()
    clock.advance(seconds=STALE_AFTER)
    assert client.get("/readyz").status_code == 200
    clock.advance(seconds=5)
    resp = client.get("/readyz")
    assert resp.status_code == 503
    assert resp.get_json()["Failed"] == ["worker"]
    assert resp.get_json()["Checks"]["worker"] == f"last reported {STALE_AFTER + 5} seconds ago"
    assert client.get("/healthz").status_code == 200  # alive, only not ready


@contextmanager
def schema_at(database, revision):
    """The database's recorded schema revision set back to ``revision`` for a while."""
    with database.engine.begin() as conn:
        conn.execute(text("UPDATE alembic_version SET version_num = :r"), {"r": revision})
    try:
        yield
    finally:
        with database.engine.begin() as conn:
            conn.execute(
                text("UPDATE alembic_version SET version_num = :r"), {"r": head_revision()}
            )


def test_a_schema_behind_the_migrations_makes_it_unready(client, database, worker_for, mx):
    worker_for(mx).run_once()
    with schema_at(database, "0011"):
        resp = client.get("/readyz")
    assert resp.status_code == 503
    body = resp.get_json()
    assert body["Failed"] == ["migrations"]
    assert body["Checks"]["migrations"] == f"at 0011, not {head_revision()}"
    assert client.get("/readyz").status_code == 200


def test_an_unreachable_database_makes_it_unready(base_config):
    config = base_config.replace(database__url="postgresql+psycopg://nobody@127.0.0.1:1/none")
    app = create_app(config)
    resp = app.test_client().get("/readyz")
    assert resp.status_code == 503
    assert resp.get_json()["Failed"] == ["database", "migrations", "worker"]
    assert resp.get_json()["Checks"]["database"] == "unreachable"
