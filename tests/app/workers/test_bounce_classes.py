"""Synchronous SMTP answers classified (mta/classify.py) and acted on by the worker."""

import json

import pytest
from sqlalchemy import select

from commands.webhooks.handlers import event_name, parse_events
from commands.webhooks.payload import event_body
from models import Event, Suppression
from tests.app.smtp.test_relay import relay, relay_for  # noqa: F401 - fixtures
from tests.app.workers import test_delivery as base
from tests.commands import test_inbox
from tests.mta.test_bounce_corpus import CORPUS

deliveries = base.deliveries
smtp_peer, mx, worker_for, domain, send = (
    base.smtp_peer,
    base.mx,
    base.worker_for,
    base.domain,
    base.send,
)


def events_of(database, message_id):
    with database.transaction(readonly=True) as s:
        return s.scalars(
            select(Event).where(Event.message_id == message_id).order_by(Event.id)
        ).all()


def suppressed(database):
    with database.transaction(readonly=True) as s:
        return [(e.email, e.source) for e in s.scalars(select(Suppression))]


# (stage, code, text, delivery status, last event type, bounce_class, suppressed)
ANSWERS = [
    (
        "rcpt",
        550,
        "5.1.1 <rcpt@dest.example>: Recipient address rejected: User unknown",
        "bounced",
        "bounced",
        "hard",
        True,
    ),
    (
        "rcpt",
        550,
        "Requested action not taken: mailbox unavailable",
        "bounced",
        "bounced",
        "hard",
        True,
    ),
    ("rcpt", 552, "5.2.2 <rcpt@dest.example>: Mailbox full", "bounced", "bounced", "soft", False),
    (
        "data",
        552,
        "5.2.2 Quota exceeded (mailbox for user is full)",
        "bounced",
        "bounced",
        "soft",
        False,
    ),
    (
        "rcpt",
        554,
        "5.7.1 Service unavailable; Client host [127.0.0.1] blocked using zen.spamhaus.org",
        "failed",
        "blocked",
        "block",
        False,
    ),
    (
        "data",
        550,
        "5.7.26 Unauthenticated email is not accepted due to domain's DMARC policy",
        "failed",
        "blocked",
        "block",
        False,
    ),
    ("mail", 554, "Your IP has a poor reputation", "failed", "blocked", "block", False),
    ("data", 552, "5.3.4 Message too big for system", "failed", "failed", "message", False),
    ("data", 554, "5.6.0 Message content rejected", "failed", "failed", "message", False),
    ("rcpt", 452, "4.2.2 Mailbox full, try again later", "deferred", "deferred", "soft", False),
    (
        "rcpt",
        451,
        "4.7.1 Greylisted, see https://postgrey.example/",
        "deferred",
        "deferred",
        "soft",
        False,
    ),
    (
        "mail",
        421,
        "4.7.0 Temporarily rate limited due to IP reputation",
        "deferred",
        "deferred",
        "block",
        False,
    ),
]


@pytest.mark.parametrize(
    ("stage", "code", "text", "status", "kind", "klass", "is_suppressed"), ANSWERS
)
def test_an_answer_is_classified_and_acted_on(
    send, mx, worker_for, database, stage, code, text, status, kind, klass, is_suppressed
):
    if stage == "rcpt":
        mx.fail_rcpt("rcpt@dest.example", code, text)
    elif stage == "mail":
        mx.fail_mail(code, text)
    else:
        mx.fail_data(code, text)
    message_id = send()
    worker_for(mx).run_once()
    [d] = deliveries(database, message_id)
    assert (d.status, d.last_code) == (status, code)  # 4xx retried, 5xx never
    event = events_of(database, message_id)[-1]
    assert event.type == kind
    assert json.loads(event.details)["bounce_class"] == klass
    assert suppressed(database) == ([("rcpt@dest.example", "bounce")] if is_suppressed else [])
    if kind in ("bounced", "blocked"):  # what a webhook receiver is told
        body = json.loads(event_body(event, kind))
        assert body["details"]["bounce_class"] == klass
        assert body["details"]["smtp_code"] == code


def test_soft_bounces_suppress_only_when_repeated_over_days(send, mx, worker_for, database, clock):
    mx.fail_rcpt("rcpt@dest.example", 552, "5.2.2 Mailbox full")
    worker = worker_for(mx)
    for _ in range(3):  # three the same day: not yet
        send()
        worker.run_once()
    assert suppressed(database) == []
    clock.advance(days=2)
    send()
    worker.run_once()
    assert suppressed(database) == []  # four, over two days
    clock.advance(days=1, minutes=1)
    send()
    worker.run_once()
    assert suppressed(database) == [("rcpt@dest.example", "bounce")]  # over three days
    with database.transaction(readonly=True) as s:
        reason = s.scalars(select(Suppression.reason)).one()
    assert reason.startswith("Soft bounces repeated: 5 since") and "Mailbox full" in reason


def test_soft_bounce_settings(send, mx, worker_for, database, clock):
    mx.fail_rcpt("rcpt@dest.example", 552, "5.2.2 Mailbox full")
    worker = worker_for(mx, delivery__soft_bounce_limit=2, delivery__soft_bounce_days=0)
    send()
    worker.run_once()
    assert suppressed(database) == []
    send()
    worker.run_once()
    assert suppressed(database) == [("rcpt@dest.example", "bounce")]


def test_a_new_user_finds_a_full_mailbox_and_a_block_leave_the_address_sendable(
    send, mx, worker_for, database, api, domain
):
    """Tried as a new user would: a full mailbox and a blocklist refusal leave the address
    sendable, and the statistics show the block."""
    mx.fail_rcpt("rcpt@dest.example", 552, "5.2.2 Mailbox full", times=1)
    first = send()
    worker_for(mx).run_once()
    mx.fail_data(554, "5.7.1 Rejected: 127.0.0.1 listed at zen.spamhaus.org", times=1)
    second = send()
    worker_for(mx).run_once()
    assert deliveries(database, first)[0].status == "bounced"
    assert deliveries(database, second)[0].status == "failed"
    check = api("Suppression.Check", APIKey=domain.user_key, EmailAddress="rcpt@dest.example")
    assert (check["Suppressed"], check["Entries"]) == (False, []), check
    third = send()  # accepted: not error 14
    worker_for(mx).run_once()
    assert deliveries(database, third)[0].status == "delivered"
    stats = api("EmailGateway.DomainStats", APIKey=domain.user_key, DomainID=domain.id)["Stats"]
    assert (stats["Bounced"], stats["Blocked"], stats["Delivered"]) == (1, 1, 1)


def test_soft_bounces_of_one_batch_count_together(send, mx, worker_for, database):
    mx.fail_rcpt("rcpt@dest.example", 552, "5.2.2 Mailbox full")
    send()
    send()
    worker_for(mx, delivery__soft_bounce_limit=2, delivery__soft_bounce_days=0).run_once()
    assert suppressed(database) == [("rcpt@dest.example", "bounce")]


def test_the_soft_rule_counts_answers_and_bounces_mailed_back_alike(
    send,
    mx,
    worker_for,
    database,
    clock,
    relay,  # noqa: F811
):
    mx.fail_rcpt("rcpt@dest.example", 552, "5.2.2 Mailbox full", times=2)
    for _ in range(2):
        send()
        worker_for(mx).run_once()
        clock.advance(days=2)
    assert suppressed(database) == []
    message_id = send()
    worker_for(mx).run_once()
    [d] = deliveries(database, message_id)
    assert d.status == "delivered"
    raw = (CORPUS / "postfix_mailbox_full.eml").read_bytes()
    verp = f"b-{d.token}@sl.example.com"
    raw = raw.replace(b"@VERP@", verp.encode())
    raw = raw.replace(b"@MESSAGE_ID@", f"<{message_id}@example.com>".encode())
    code, _ = test_inbox.mail_to(relay, verp, raw.replace(b"\n", b"\r\n"))
    assert code == 250
    assert deliveries(database, message_id)[0].status == "bounced"
    assert suppressed(database) == [("rcpt@dest.example", "bounce")]  # 3 over 4 days


def test_webhooks_can_subscribe_to_blocks():
    assert parse_events("block,bounce") == ["block", "bounce"]
    assert parse_events(["blocked"]) == ["blocked"]
    assert event_name("delivery,block", "blocked") == "block"
    assert event_name("bounce", "blocked") is None  # a block is not a bounce
