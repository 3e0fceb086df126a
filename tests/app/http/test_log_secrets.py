"""No log line carries a password, key, session id (or what is stored of them), nor any SQL
statement's parameters, even at DEBUG with the statements echoed."""

import logging

import pytest
from sqlalchemy import insert
from sqlalchemy.exc import IntegrityError

from app.http.factory import create_app
from app.logs import JSONFormatter, TextFormatter
from commands import Gateway
from core.crypto import token_digest
from models import Domain, UserSession
from models.domains import ENABLED


def test_secrets_never_reach_the_log(base_config, database, clock, make_user, caplog, postern_log):
    config = base_config.replace(database__echo=True, log__level="DEBUG")
    gateway = Gateway(config, clock=clock)  # its own engines, echoing every statement
    client = create_app(config, gateway).test_client()
    caplog.set_level(logging.DEBUG)
    user = make_user("alice", password="hunter2-correct-horse")
    secrets = {"password": user.password, "user key": user.api_key}

    def api(command, **params):
        body = client.post("/api.php", json={"Command": command, **params}).get_json()
        assert body["Success"] is True, body
        return body

    assert (
        client.post(
            "/api.php",
            json={"Command": "User.Login", "Username": "alice", "Password": "wrong-secret-pw"},
        ).get_json()["ErrorCode"]
        == 3
    )
    secrets["wrong password"] = "wrong-secret-pw"
    sid = api("User.Login", Username="alice", Password=user.password)["SessionID"]
    secrets["session"] = sid
    domain_id = api("EmailGateway.AddDomain", SessionID=sid, DomainName="example.com")[
        "NewSenderDomainID"
    ]
    with database.transaction() as s:
        s.get(Domain, int(domain_id)).status = ENABLED
    sender = api("EmailGateway.AddAPI", SessionID=sid, DomainID=domain_id, Description="app")[
        "APIKey"
    ]["Key"]
    secrets["sender key"] = sender
    smtp = api("EmailGateway.AddSMTP", SessionID=sid, DomainID=domain_id)["SMTP"]
    secrets["smtp password"] = smtp["Password"]
    signing = api("EmailGateway.GetWebhooks", SessionID=sid, DomainID=domain_id)["SigningKey"]
    secrets["webhook signing key"] = signing
    sent = client.post(
        "/api/v1/email",
        headers={"Authorization": f"Bearer {sender}", "Idempotency-Key": "log-test"},
        json={
            "From": {"email": "news@example.com"},
            "To": [{"email": "ann@dest.example"}],
            "Subject": "Hello",
            "ContentType": "plain",
            "PlainContent": "Hi",
        },
    )
    assert sent.status_code == 200, sent.get_data(as_text=True)
    api("User.Logout", SessionID=sid)
    # A database error logged, with its traceback or as a message's argument, shows no
    # values either: a session id's digest inserted twice (PostgreSQL's DETAIL and MariaDB's
    # "Duplicate entry" quote it; the statement's parameters are hidden by the engine).
    with pytest.raises(IntegrityError) as failed, gateway.db.transaction() as s:
        for _ in range(2):
            s.execute(
                insert(UserSession).values(
                    token_digest=token_digest(sid),
                    user_id=user.id,
                    created_at=clock(),
                    last_seen_at=clock(),
                )
            )
    logging.getLogger("postern.test").error("database error", exc_info=failed.value)
    logging.getLogger("postern.test").warning("it failed: %s", failed.value)
    logging.getLogger("postern.test").warning("it failed: %s", failed.value.orig)
    gateway.db.dispose()

    # What is stored of them is as secret as they are.
    secrets.update({f"digest of {k}": token_digest(v) for k, v in list(secrets.items())})
    assert any("INSERT INTO user_sessions" in r.getMessage() for r in caplog.records)
    assert len([r for r in postern_log if r.name == "postern.test"]) == 3
    # Every record, as Postern's log handler writes it (SQLAlchemy's echo lines included).
    records = [*caplog.records, *postern_log]
    lines = [f.format(r) for f in (JSONFormatter(), TextFormatter()) for r in records]
    leaked = {name for name, value in secrets.items() for line in lines if value in line}
    assert not leaked
