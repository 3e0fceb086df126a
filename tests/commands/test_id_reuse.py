"""A deleted row's id never carries one user's events, mail or webhooks to another user.

Seen: on SQLite a deleted domain's id came back as another user's new domain, whose webhook
then received the first user's open events signed with its key, and the first user's mail
still queued could have been signed with the second user's DKIM key. Ids are never given
twice (migration 0008), and every step from an event, a delivery or a message to a domain,
a key or a webhook also matches the user.
"""

from datetime import timedelta

import pytest
from sqlalchemy import select

from commands import tracking
from commands.delivery.build import TrackingURLs, prepare_batch
from commands.delivery.queue import claim_batch
from commands.domains.dns_records import tracking_host
from commands.webhooks.fanout import fan_out
from commands.webhooks.queue import Attempt, claim_deliveries
from models import Delivery, DKIMKey, Domain, Webhook, WebhookDelivery
from mta.tracking import OPEN, sign


def send(client, domain, to):
    resp = client.post(
        "/api/v1/email",
        headers={"Authorization": f"Bearer {domain.key}"},
        json={
            "Subject": "Your order",
            "ContentType": "plain",
            "PlainContent": "Thanks",
            "From": {"email": f"shop@{domain.name}"},
            "To": [{"email": to}],
            "TrackOpens": "true",
        },
    )
    assert resp.status_code == 200, resp.get_json()
    return resp.get_json()["MessageID"]


def give_id(database, source_id, wanted_id, now):
    """A copy of domain ``source_id`` (its user, keys and webhooks) under id ``wanted_id``: what
    a reused id would make, made on purpose (a restored backup, a hand-made row)."""
    with database.transaction() as s:
        src = s.get(Domain, source_id)
        s.add(
            Domain(
                id=wanted_id,
                user_id=src.user_id,
                name="copy-" + src.name,
                status=src.status,
                last_check="",
                ownership_token=src.ownership_token,
                subdomain=src.subdomain,
                open_tracking=True,
                signing_key_encrypted=src.signing_key_encrypted,
                created_at=now,
            )
        )
        s.flush()
        for k in src.dkim_keys:
            s.add(
                DKIMKey(
                    domain_id=wanted_id,
                    selector=k.selector,
                    algorithm=k.algorithm,
                    private_key_encrypted=k.private_key_encrypted,
                    public_key=k.public_key,
                    created_at=now,
                )
            )
        for hook in s.scalars(select(Webhook).where(Webhook.domain_id == source_id)).all():
            s.add(Webhook(domain_id=wanted_id, url=hook.url, events=hook.events, created_at=now))


@pytest.mark.parametrize("reuse", ["as the database gives ids", "by hand"])
def test_a_deleted_domains_id_carries_nothing_to_another_user(
    reuse,
    api,
    client,
    user,
    make_user,
    active_domain,
    database,
    base_config,
    gateway,
    clock,
    box,
):
    a = active_domain("shop-a.example")
    message_id = send(client, a, "buyer@dest.example")
    with database.transaction(readonly=True) as s:
        token = s.scalar(select(Delivery.token).where(Delivery.message_id == message_id))
    # A's mail is in the worker's hands when A deletes the domain: it goes on.
    claimed = claim_batch(database, "w1", 10, clock(), 300)
    assert [c.message_id for c in claimed] == [message_id]
    assert api("EmailGateway.DeleteDomain", APIKey=user.api_key, DomainID=a.id)["Success"]

    bob = make_user("bob")
    b = active_domain("shop-b.example", key=bob.api_key)
    hook = api(
        "EmailGateway.AddWebhook",
        APIKey=bob.api_key,
        DomainID=b.id,
        Event="open",
        WebhookURL="http://127.0.0.1:9/hook",
    )
    assert hook["Success"] is True, hook
    if reuse == "by hand":
        give_id(database, int(b.id), int(a.id), clock())
    clock.advance(seconds=5)

    # A's recipient opens A's message: the event is A's, and no webhook of B's hears of it.
    visitor = tracking.Visitor("203.0.113.9", "Reader/1.0")
    assert tracking.open_(gateway, sign(box.tracking_key, OPEN, token), visitor)
    while fan_out(database, base_config, clock()):
        pass
    with database.transaction(readonly=True) as s:
        assert s.scalars(select(WebhookDelivery)).all() == []

    # A's mail still in hand is never signed with B's keys: its domain is gone.
    urls = TrackingURLs("", base_config.http.public_url, tracking_host)
    ready, results = prepare_batch(database, box, claimed, urls)
    assert ready == []
    assert [(r.status, r.text) for r in results] == [("failed", "The sending domain was deleted")]
    if reuse != "by hand":
        assert int(b.id) > int(a.id)  # never the deleted domain's id


def test_a_webhook_delivery_is_signed_only_with_its_own_users_key(
    api,
    client,
    user,
    make_user,
    active_domain,
    database,
    base_config,
    clock,
    box,
):
    """A webhook delivery whose domain id names another user's domain is not posted with
    that domain's signing key."""
    a = active_domain("shop-a.example")
    hook = api(
        "EmailGateway.AddWebhook",
        APIKey=user.api_key,
        DomainID=a.id,
        Event="open",
        WebhookURL="http://127.0.0.1:9/hook",
    )
    assert hook["Success"] is True
    message_id = send(client, a, "buyer@dest.example")
    with database.transaction(readonly=True) as s:
        token = s.scalar(select(Delivery.token).where(Delivery.message_id == message_id))
    clock.advance(seconds=5)
    gateway_visitor = tracking.Visitor("203.0.113.9", "Reader/1.0")
    from commands import Gateway

    gateway = Gateway(base_config, database, clock=clock)
    assert tracking.open_(gateway, sign(box.tracking_key, OPEN, token), gateway_visitor)
    fan_out(database, base_config, clock())
    # The delivery is made to name a domain of another user (as a reused id would).
    bob = make_user("bob")
    b = active_domain("shop-b.example", key=bob.api_key)
    with database.transaction() as s:
        row = s.scalars(select(WebhookDelivery)).one()
        row.domain_id = int(b.id)
    posts = claim_deliveries(
        database,
        box,
        worker_id="w",
        now=clock() + timedelta(seconds=1),
        limit=10,
        hold=timedelta(seconds=60),
    )
    assert len(posts) == 1
    assert isinstance(posts[0], Attempt)  # not posted, least of all signed with B's key
    assert posts[0].error == "The event or its domain is gone" and posts[0].final
