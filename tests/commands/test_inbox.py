"""The bounce inbox: DSNs and ARF reports mailed back to VERP return paths."""

import smtplib

import pytest
from sqlalchemy import select

from app.workers.delivery import Worker
from core.crypto import SecretBox
from models import Delivery, Event, Suppression
from tests import smtppeer
from tests.app.smtp.test_relay import relay, relay_for  # noqa: F401 - fixtures
from tests.conftest import SECRET_KEY

smtp_peer = smtppeer.smtp_peer


@pytest.fixture
def delivered(client, active_domain, dns_server, smtp_peer, base_config, database, clock):
    """A message delivered to rcpt@dest.example; returns (delivery, message id)."""
    domain = active_domain()
    dns_server.add("dest.example", "A", "127.0.0.1")
    resp = client.post(
        "/api/v1/email",
        headers={"Authorization": f"Bearer {domain.key}"},
        json={
            "Subject": "s",
            "ContentType": "plain",
            "PlainContent": "x",
            "From": {"email": "a@example.com", "name": "A"},
            "To": [{"email": "rcpt@dest.example"}],
        },
    )
    message_id = resp.get_json()["MessageID"]
    with Worker(
        base_config.replace(delivery__mx_port=smtp_peer.port),
        database,
        SecretBox(SECRET_KEY.encode()),
        clock=clock,
    ) as worker:
        worker.run_once()
    with database.transaction(readonly=True) as s:
        d = s.scalars(select(Delivery).where(Delivery.message_id == message_id)).one()
    assert d.status == "delivered"
    return d, message_id


def dsn(message_id, status="5.1.1", action="failed", code=550):
    return f"""From: MAILER-DAEMON@mx.dest.example
To: bounce@whatever
Subject: Undelivered Mail Returned to Sender
MIME-Version: 1.0
Content-Type: multipart/report; report-type=delivery-status; boundary="b1"

--b1
Content-Type: text/plain

This is the mail system at host mx.dest.example.

--b1
Content-Type: message/delivery-status

Reporting-MTA: dns; mx.dest.example

Final-Recipient: rfc822; rcpt@dest.example
Action: {action}
Status: {status}
Diagnostic-Code: smtp; {code} {status} <rcpt@dest.example>: Recipient address rejected

--b1
Content-Type: text/rfc822-headers

From: A <a@example.com>
To: rcpt@dest.example
Subject: s
Message-ID: <{message_id}@example.com>

--b1--
""".replace("\n", "\r\n").encode()


def arf(message_id):
    return f"""From: feedback@fbl.mailbox.example
To: fbl@whatever
Subject: Complaint
MIME-Version: 1.0
Content-Type: multipart/report; report-type=feedback-report; boundary="b2"

--b2
Content-Type: text/plain

This is an email abuse report.

--b2
Content-Type: message/feedback-report

Feedback-Type: abuse
User-Agent: ExampleFBL/1.0
Version: 1
Original-Mail-From: <b-x@sl.example.com>
Original-Rcpt-To: <rcpt@dest.example>

--b2
Content-Type: text/rfc822-headers

From: A <a@example.com>
To: rcpt@dest.example
Message-ID: <{message_id}@example.com>

--b2--
""".replace("\n", "\r\n").encode()


def mail_to(relay, rcpt, data):  # noqa: F811 - relay is the fixture's value here
    with smtplib.SMTP("127.0.0.1", relay.ports["inbound"], timeout=10) as c:
        c.ehlo()
        c.mail("")
        code, text = c.rcpt(rcpt)
        if code != 250:
            return code, text
        return c.data(data)


def events_of(database, kind):
    with database.transaction(readonly=True) as s:
        return s.scalars(select(Event).where(Event.type == kind)).all()


def test_hard_bounce_marks_bounced_and_suppresses(relay, delivered, database):  # noqa: F811
    d, message_id = delivered
    code, _ = mail_to(relay, f"b-{d.token}@sl.example.com", dsn(message_id))
    assert code == 250
    with database.transaction(readonly=True) as s:
        again = s.get(Delivery, d.id)
        entry = s.scalars(select(Suppression)).one()
    assert (again.status, again.last_enhanced, again.last_code) == ("bounced", "5.1.1", 550)
    assert (entry.email, entry.source) == ("rcpt@dest.example", "bounce")
    [event] = events_of(database, "bounced")
    assert event.delivery_id == d.id and "Recipient address rejected" in event.smtp_text


def test_soft_bounce_only_notes_the_delay(relay, delivered, database):  # noqa: F811
    d, message_id = delivered
    mail_to(relay, f"b-{d.token}@sl.example.com", dsn(message_id, "4.4.1", "delayed", 451))
    with database.transaction(readonly=True) as s:
        assert s.get(Delivery, d.id).status == "delivered"
        assert s.scalars(select(Suppression)).all() == []
    [event] = events_of(database, "deferred")
    assert event.enhanced_code == "4.4.1"


def test_complaint_is_recorded_and_suppresses(relay, delivered, database):  # noqa: F811
    d, message_id = delivered
    assert mail_to(relay, f"b-{d.token}@sl.example.com", arf(message_id))[0] == 250
    [event] = events_of(database, "complained")
    assert event.delivery_id == d.id
    with database.transaction(readonly=True) as s:
        assert s.scalars(select(Suppression.source)).one() == "complaint"


def test_message_id_fallback(relay, delivered, database):  # noqa: F811
    d, message_id = delivered
    assert mail_to(relay, "postmaster@sl.example.com", dsn(message_id))[0] == 250
    with database.transaction(readonly=True) as s:
        assert s.get(Delivery, d.id).status == "bounced"


def test_no_open_relay_and_junk_is_harmless(relay, delivered, database):  # noqa: F811
    code, _ = mail_to(relay, "someone@gmail.example", b"Subject: hi\r\n\r\nhello\r\n")
    assert code == 550
    code, _ = mail_to(relay, "b-0000@sl.unknown.example", b"Subject: hi\r\n\r\nhello\r\n")
    assert code == 550
    code, _ = mail_to(relay, "b-garbage@sl.example.com", b"Subject: hi\r\n\r\nnot a bounce\r\n")
    assert code == 250
    assert events_of(database, "bounced") == []


@pytest.mark.parametrize("report", [dsn, arf])
@pytest.mark.parametrize("local", ["postmaster", "b-0123456789abcdef0123456789abcdef"])
def test_a_report_to_another_tenants_return_path_changes_nothing(
    relay,  # noqa: F811
    delivered,
    database,
    make_user,
    active_domain,
    report,
    local,
):
    """Seen: a DSN without a (valid) VERP token, mailed to tenant B's return path, named
    tenant A's message: A's delivery became a bounce and the address was suppressed for A.
    Without a token it may only match messages of the return-path domain's owner."""
    d, message_id = delivered
    bob = make_user("bob")
    active_domain("bob.example", key=bob.api_key)
    assert mail_to(relay, f"{local}@sl.bob.example", report(message_id))[0] == 250
    with database.transaction(readonly=True) as s:
        assert s.get(Delivery, d.id).status == "delivered"
        assert s.scalars(select(Suppression)).all() == []
    assert events_of(database, "bounced") == [] and events_of(database, "complained") == []


def test_a_report_without_a_token_to_the_owners_return_path_still_counts(
    relay,  # noqa: F811
    delivered,
    database,
    make_user,
    active_domain,
):
    """Another tenant's domain of the same name elsewhere does not stop the owner's own."""
    d, message_id = delivered
    bob = make_user("bob")
    active_domain("bob.example", key=bob.api_key)
    assert mail_to(relay, "postmaster@sl.example.com", arf(message_id))[0] == 250
    [event] = events_of(database, "complained")
    assert event.delivery_id == d.id
    assert mail_to(relay, "postmaster@sl.example.com", dsn(message_id))[0] == 250
    with database.transaction(readonly=True) as s:
        assert s.get(Delivery, d.id).status == "bounced"
