"""The webhook queue's services: claims as typed Posts and Attempts, each delivery prepared on
its own, attempts recorded with what follows, old deliveries pruned."""

import json
from datetime import timedelta

import pytest
from sqlalchemy import select, text

from commands.events import writer as events
from commands.webhooks.fanout import fan_out
from commands.webhooks.queue import (
    GIVE_UP_AFTER,
    Attempt,
    Post,
    Recorded,
    claim_deliveries,
    internal_error,
    prune_deliveries,
    record_attempt,
)
from models import Delivery, Domain, Event, Message, WebhookDelivery

HOLD = timedelta(seconds=70)
SCHEDULE = (60, 300, 1800, 7200)


@pytest.fixture
def events_of(api, client, active_domain, database, clock, base_config):
    """A domain with a webhook and ``n`` delivered events fanned out; their event ids."""

    def make(name="example.com", n=1, key=None):
        domain = active_domain(name, key=key)
        body = api(
            "EmailGateway.AddWebhook",
            APIKey=domain.user_key,
            DomainID=domain.id,
            Event="delivered",
            WebhookURL="http://127.0.0.1:9/hook",
        )
        assert body["Success"] is True, body
        resp = client.post(
            "/api/v1/email",
            headers={"Authorization": f"Bearer {domain.key}"},
            json={
                "Subject": "Hi",
                "ContentType": "plain",
                "PlainContent": "Hello",
                "From": {"email": f"me@{name}"},
                "To": [{"email": "buyer@dest.example"}],
            },
        )
        assert resp.status_code == 200, resp.get_json()
        ids = []
        with database.transaction() as s:
            msg = s.get(Message, resp.get_json()["MessageID"])
            delivery = s.scalars(select(Delivery).where(Delivery.message_id == msg.id)).one()
            for _ in range(n):
                row = events.event_row("delivered", msg, delivery, delivery.recipient, clock())
                s.add(row)
                s.flush()
                ids.append(row.id)
        fan_out(database, base_config, clock())
        return domain, ids

    return make


def claim(database, box, clock, worker_id="w1", limit=100):
    return claim_deliveries(database, box, worker_id=worker_id, now=clock(), limit=limit, hold=HOLD)


def record(database, attempt, clock, worker_id="w1"):
    return record_attempt(
        database, attempt, worker_id=worker_id, now=clock(), retry_schedule=SCHEDULE
    )


def test_a_claim_is_typed_posts_ready_to_sign(events_of, database, box, clock):
    domain, ids = events_of(n=2)
    claimed = claim(database, box, clock)
    assert [type(c) for c in claimed] == [Post, Post]
    post = claimed[0]
    assert post.url == "http://127.0.0.1:9/hook"
    assert json.loads(post.body)["event"] == "delivered"
    with database.transaction(readonly=True) as s:
        stored = s.get(Domain, domain.id).signing_key_encrypted
        uids = list(s.scalars(select(Event.uid).where(Event.id.in_(ids)).order_by(Event.id)))
    assert post.signing_key == box.decrypt(stored)
    assert post.signing_key not in repr(post)
    assert [c.message_id for c in claimed] == uids
    assert claim(database, box, clock) == []  # claimed: nobody else takes them
    clock.advance(seconds=HOLD.total_seconds() + 1)
    assert len(claim(database, box, clock, worker_id="w2")) == 2  # the claim ran out


def test_a_delivery_that_cannot_be_prepared_comes_back_as_its_attempt(
    events_of, make_user, database, box, clock
):
    events_of(n=2)
    mallory = make_user("mallory")
    theirs, _ = events_of("other.example", key=mallory.api_key)
    with database.transaction() as s:
        s.get(Domain, theirs.id).signing_key_encrypted = "not a token"
    claimed = claim(database, box, clock)
    assert [type(c) for c in claimed] == [Post, Post, Attempt]
    failed = claimed[2]
    assert (failed.status_code, failed.final, failed.internal) == (None, False, True)
    assert failed.error == "Internal error decrypting the signing key: ValueError"


def test_an_event_row_that_cannot_be_read_fails_alone(events_of, database, box, clock):
    if database.backend != "sqlite":
        pytest.skip("only SQLite stores a timestamp it cannot read back")
    _, ids = events_of(n=3)
    with database.transaction() as s:
        s.execute(text("UPDATE events SET created_at = 'garbage' WHERE id = :id"), {"id": ids[1]})
    claimed = claim(database, box, clock)
    assert [type(c) for c in claimed] == [Post, Attempt, Post]
    assert claimed[1].error == "Internal error reading its event and signing key: ValueError"


def test_recorded_attempts_say_what_follows(events_of, database, box, clock):
    events_of(n=2)
    first, second = claim(database, box, clock)
    done = record(database, Attempt(first.delivery_id, clock(), 200, 5, None), clock)
    assert done == Recorded(first.delivery_id, "succeeded", 1, None, None)
    again = record(database, Attempt(second.delivery_id, clock(), 503, 5, "HTTP 503"), clock)
    assert isinstance(again, Recorded)
    assert (again.status, again.attempts, again.error) == ("pending", 1, "HTTP 503")
    assert again.due_at is not None and again.due_at > clock() + timedelta(seconds=50)
    # Recorded once: the delivery is no longer claimed by anybody.
    assert record(database, Attempt(second.delivery_id, clock(), 200, 5, None), clock) is None


def test_internal_errors_fail_a_delivery_after_a_few(events_of, database, box, clock):
    events_of()
    for n in range(1, GIVE_UP_AFTER + 1):
        clock.advance(days=1)
        (post,) = claim(database, box, clock)
        attempt = internal_error(post.delivery_id, clock(), "posting", RuntimeError("secret"))
        assert attempt.error == "Internal error posting: RuntimeError"
        recorded = record(database, attempt, clock)
        assert recorded.attempts == n
    assert (recorded.status, recorded.due_at) == ("failed", None)
    assert recorded.error == (
        f"Internal error posting: RuntimeError (given up after {GIVE_UP_AFTER} internal errors)"
    )
    clock.advance(days=1)
    assert claim(database, box, clock) == []


def test_prune_deletes_finished_deliveries_only(events_of, database, box, clock):
    events_of(n=2)
    first, _ = claim(database, box, clock)
    record(database, Attempt(first.delivery_id, clock(), 200, 5, None), clock)
    clock.advance(days=8)
    assert prune_deliveries(database, now=clock(), keep_days=0) == 0
    assert prune_deliveries(database, now=clock(), keep_days=7) == 1
    with database.transaction(readonly=True) as s:
        assert [d.status for d in s.scalars(select(WebhookDelivery))] == ["pending"]
