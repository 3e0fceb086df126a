"""One message that cannot be built is held alone; its batch-mates are delivered."""

import json

import pytest
from sqlalchemy import select

from commands.delivery.outcomes import HOLD_AFTER
from models import Delivery, DKIMKey, Event
from tests.app.workers import test_delivery as delivery_tests

deliveries = delivery_tests.deliveries
smtp_peer, mx, worker_for = delivery_tests.smtp_peer, delivery_tests.mx, delivery_tests.worker_for


@pytest.fixture
def three_senders(active_domain, make_user, api, dns_server):
    """Two domains of alice (one whose DKIM key is then spoiled) and one of bob's."""
    dns_server.add("dest.example", "MX", "10 mx.dest.example")
    dns_server.add("mx.dest.example", "A", "127.0.0.1")
    good = active_domain("good.example")
    bad = active_domain("bad.example")
    bob = make_user("bob")
    other = active_domain("other.example", key=bob.api_key)
    return good, bad, other, bob


def spoil_key(database, domain_id):
    """The domain's DKIM key as if encrypted with another secret key: it cannot be decrypted."""
    with database.transaction() as s:
        key = s.scalars(select(DKIMKey).where(DKIMKey.domain_id == domain_id)).one()
        saved = key.private_key_encrypted
        key.private_key_encrypted = "gAAAAABspoiled" + saved[14:40]
    return saved


def restore_key(database, domain_id, saved):
    with database.transaction() as s:
        key = s.scalars(select(DKIMKey).where(DKIMKey.domain_id == domain_id)).one()
        key.private_key_encrypted = saved


def send_from(client, domain, to):
    resp = client.post(
        "/api/v1/email",
        headers={"Authorization": f"Bearer {domain.key}"},
        json={
            "Subject": f"from {domain.name}",
            "ContentType": "plain",
            "PlainContent": "hello",
            "From": {"email": f"news@{domain.name}", "name": "News"},
            "To": [{"email": to}],
        },
    )
    assert resp.status_code == 200, resp.get_json()
    return resp.get_json()["MessageID"]


def test_an_unbuildable_message_is_held_alone_and_released_once_fixed(
    client, three_senders, mx, worker_for, database, clock, api, user
):
    good, bad, other, bob = three_senders
    saved = spoil_key(database, bad.id)
    held = send_from(client, bad, "held@dest.example")
    fine = [send_from(client, good, "a@dest.example"), send_from(client, other, "b@dest.example")]
    worker = worker_for(mx)
    assert worker.run_once() == 3  # one batch
    for message_id in fine:  # delivered on their first attempt
        [d] = deliveries(database, message_id)
        assert (d.status, d.attempts) == ("delivered", 1)
    assert sorted(m.rcpt_tos[0] for m in mx.messages) == ["a@dest.example", "b@dest.example"]
    [d] = deliveries(database, held)
    assert (d.status, d.errors, d.last_enhanced) == ("deferred", 1, "4.3.0")
    assert d.last_text.startswith("Unexpected failure: ValueError: a stored secret cannot")
    for _ in range(2, HOLD_AFTER + 1):
        clock.advance(hours=1)
        assert worker.run_once() == 1
    [d] = deliveries(database, held)
    assert (d.status, d.due_at, d.errors, d.attempts) == ("held", None, HOLD_AFTER, HOLD_AFTER)
    assert d.last_text.startswith(f"Held after {HOLD_AFTER} unexpected failures: ValueError")
    clock.advance(hours=1)
    assert worker.run_once() == 0  # held: not due
    with database.transaction(readonly=True) as s:
        query = select(Event.type).where(Event.message_id == held).order_by(Event.id)
        types = list(s.scalars(query))
    assert types == ["accepted", "deferred", "deferred", "held"]

    # The held event, through GetEvents (by its type, too).
    body = api(
        "EmailGateway.GetEvents", APIKey=user.api_key, StartFrom=0, RetrieveCount=10, Event="held"
    )
    assert body["Success"] is True, body
    [event] = body["Events"]
    assert event["event_type"] == "held" and event["message_id"] == held
    assert event["details"]["error"].startswith("ValueError: a stored secret cannot")

    # The key fixed and the message released: it is sent, once.
    restore_key(database, bad.id, saved)
    answer = api("EmailGateway.ReleaseHeldMessages", APIKey=user.api_key, DomainID=bad.id)
    assert answer["ReleasedCount"] == 1, answer
    [d] = deliveries(database, held)
    assert (d.status, d.errors) == ("queued", 0) and d.due_at is not None
    assert worker.run_once() == 1
    [d] = deliveries(database, held)
    assert d.status == "delivered"
    assert [m.rcpt_tos[0] for m in mx.messages].count("held@dest.example") == 1


def test_release_held_messages_answers_for_the_callers_domains_only(
    client, three_senders, mx, worker_for, database, clock, api, user
):
    good, bad, other, bob = three_senders
    spoil_key(database, bad.id)
    held = send_from(client, bad, "held@dest.example")
    worker = worker_for(mx)
    for _ in range(HOLD_AFTER):
        worker.run_once()
        clock.advance(hours=1)
    assert deliveries(database, held)[0].status == "held"
    release = "EmailGateway.ReleaseHeldMessages"
    missing = api(release, APIKey=user.api_key)
    assert missing["ErrorCode"] == 1 and missing["Success"] is False
    theirs = api(release, APIKey=bob.api_key, DomainID=bad.id)
    nowhere = api(release, APIKey=bob.api_key, DomainID=999999)
    assert theirs == nowhere and theirs["ErrorCode"] == 2
    other_message = api(release, APIKey=user.api_key, DomainID=good.id, MessageID=held)
    assert other_message["ErrorCode"] == 3
    assert api(release, APIKey=user.api_key, DomainID=bad.id, MessageID=held)["ReleasedCount"] == 1
    assert api(release, APIKey=user.api_key, DomainID=bad.id)["ReleasedCount"] == 0
    [d] = deliveries(database, held)
    assert d.status == "queued"


def test_the_held_event_details_name_the_error(
    client, three_senders, mx, worker_for, database, clock
):
    good, bad, other, bob = three_senders
    spoil_key(database, bad.id)
    held = send_from(client, bad, "held@dest.example")
    worker = worker_for(mx)
    for _ in range(HOLD_AFTER):
        worker.run_once()
        clock.advance(hours=1)
    with database.transaction(readonly=True) as s:
        event = s.scalars(select(Event).where(Event.type == "held")).one()
        d = s.scalars(select(Delivery).where(Delivery.message_id == held)).one()
    details = json.loads(event.details)
    assert details["error"].startswith("ValueError") and event.delivery_id == d.id
    assert event.enhanced_code == "4.3.0"


def test_a_message_whose_build_fails_is_that_messages_error_alone(
    client, three_senders, mx, worker_for, database
):
    """A build that raises (here: an attachment stored as base64 that is not) comes back
    from sending as that delivery's error; the batch-mates are delivered at once."""
    from models import Message

    good, bad, other, bob = three_senders
    broken = send_from(client, good, "broken@dest.example")
    fine = send_from(client, other, "fine@dest.example")
    with database.transaction() as s:
        message = s.get(Message, broken)
        stored = json.loads(message.payload)
        stored["attachments"] = [
            {
                "filename": "a.bin",
                "content": "abc",  # not base64: no padding
                "type": "application/octet-stream",
                "disposition": "attachment",
                "contentid": None,
            }
        ]
        message.payload = json.dumps(stored)
    assert worker_for(mx).run_once() == 2
    [d] = deliveries(database, fine)
    assert (d.status, d.attempts) == ("delivered", 1)
    [d] = deliveries(database, broken)
    assert (d.status, d.errors) == ("deferred", 1)
    assert d.last_text.startswith("Unexpected failure: Error: ")  # binascii.Error
    assert [m.rcpt_tos[0] for m in mx.messages] == ["fine@dest.example"]
