"""Postal-format webhooks end to end: real deliveries, bounces, opens and clicks reach a
loopback receiver as Postal's payloads, signed with the key /.well-known/jwks.json serves,
and django-anymail's Postal webhook view takes them."""

import base64
import email
import email.policy
import json
import re

import pytest
from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import padding, rsa

from app.workers.webhooks import WebhookSender
from commands.events import writer as events
from models import Delivery, Message
from tests import djangoconf, httpreceiver
from tests.app.workers import test_delivery as delivery_tests
from tests.mta.test_tracking import hrefs

http_receiver = httpreceiver.http_receiver
smtp_peer = delivery_tests.smtp_peer
mx = delivery_tests.mx
worker_for = delivery_tests.worker_for
domain = delivery_tests.domain
send = delivery_tests.send
deliveries = delivery_tests.deliveries

djangoconf.configure()

from anymail.exceptions import AnymailWebhookValidationFailure  # noqa: E402 - needs settings
from anymail.signals import tracking  # noqa: E402
from anymail.webhooks.postal import PostalTrackingWebhookView  # noqa: E402
from django.test import RequestFactory, override_settings  # noqa: E402

ALL_EVENTS = "delivered,deferred,bounced,failed,held,opened,clicked"


@pytest.fixture
def postal_hook(api, user, domain, http_receiver):
    def add(event=ALL_EVENTS, url=None):
        body = api(
            "EmailGateway.AddWebhook",
            APIKey=user.api_key,
            DomainID=domain.id,
            Event=event,
            WebhookURL=url or http_receiver.url("/postal"),
            Format="postal",
        )
        assert body["Success"] is True, body
        return int(body["NewWebhookID"])

    return add


@pytest.fixture
def sender(base_config, database, clock, box):
    return WebhookSender(base_config, database, box, clock=clock)


def drain(sender):
    total = 0
    while n := sender.run_once():
        total += n
    return total


def public_key_from_jwks(client):
    """The RSA public key and its kid, as a receiver builds them from the JWKS."""
    resp = client.get("/.well-known/jwks.json")
    assert resp.status_code == 200 and resp.content_type == "application/json"
    (jwk,) = resp.get_json()["keys"]
    assert (jwk["kty"], jwk["use"], jwk["alg"]) == ("RSA", "sig", "RS256")

    def number(text):
        return int.from_bytes(base64.urlsafe_b64decode(text + "=" * (-len(text) % 4)), "big")

    key = rsa.RSAPublicNumbers(number(jwk["e"]), number(jwk["n"])).public_key()
    return key, jwk["kid"]


def assert_postal_signed(request, key, kid):
    assert request.headers["x-postal-signature-kid"] == kid
    for header, digest in (
        ("x-postal-signature", hashes.SHA1()),  # noqa: S303 - what Postal signs with
        ("x-postal-signature-256", hashes.SHA256()),
    ):
        signature = base64.b64decode(request.headers[header])
        key.verify(signature, request.body, padding.PKCS1v15(), digest)  # raises if wrong
    with pytest.raises(InvalidSignature):
        key.verify(
            base64.b64decode(request.headers["x-postal-signature-256"]),
            request.body + b" ",
            padding.PKCS1v15(),
            hashes.SHA256(),
        )


def anymail_key(key):
    """The public key as django-anymail's POSTAL_WEBHOOK_KEY takes it (a PEM's base64)."""
    der = key.public_bytes(
        serialization.Encoding.DER, serialization.PublicFormat.SubjectPublicKeyInfo
    )
    return base64.b64encode(der).decode()


def anymail_events(request, key):
    """What django-anymail's PostalTrackingWebhookView makes of a received POST."""
    seen = []

    def receiver(sender, event, esp_name, **kwargs):
        seen.append(event)

    tracking.connect(receiver)
    try:
        with override_settings(ANYMAIL={"POSTAL_WEBHOOK_KEY": anymail_key(key)}):
            django_request = RequestFactory().post(
                "/anymail/postal/tracking/",
                data=request.body,
                content_type="application/json",
                HTTP_X_POSTAL_SIGNATURE=request.headers["x-postal-signature"],
            )
            response = PostalTrackingWebhookView.as_view()(django_request)
    finally:
        tracking.disconnect(receiver)
    assert response.status_code == 200, response.content
    return seen


def message_hash(delivery, message, domain):
    return {
        "id": delivery.id,
        "token": delivery.token,
        "direction": "outgoing",
        "message_id": f"{message.id}@{domain.name}",
        "to": delivery.recipient,
        "from": "news@example.com",
        "subject": "Hello ünïcode",
        "timestamp": round(message.created_at.timestamp(), 6),
        "spam_status": "NotChecked",
        "tag": "welcome",
    }


def test_deliveries_bounces_opens_and_clicks_reach_the_receiver_as_postal_posts_them(
    api, user, client, domain, postal_hook, send, mx, worker_for, sender, http_receiver,
    database, clock,
):  # fmt: skip
    body = api(
        "EmailGateway.UpdateDomain",
        APIKey=user.api_key,
        DomainID=domain.id,
        LinkTracking=1,
        OpenTracking=1,
    )
    assert body["Success"] is True, body
    postal_hook()
    mx.fail_rcpt("soft@dest.example", 451, "4.7.1 Greylisted, try later", times=1)
    mx.fail_rcpt("hard@dest.example", 550, "5.1.1 No such user here")
    mx.fail_rcpt(
        "block@dest.example",
        554,
        "5.7.1 Service unavailable; Client host [127.0.0.1] blocked using zen.spamhaus.org",
    )
    recipients = ["ok", "soft", "hard", "block"]
    message_id = send(to=[{"email": f"{r}@dest.example"} for r in recipients])
    worker = worker_for(mx, tracking__base_url="http://track.example")
    worker.run_once()
    (received,) = [m for m in mx.messages if m.rcpt_tos == ["ok@dest.example"]]
    parsed = email.message_from_bytes(received.data, policy=email.policy.default)
    html = parsed.get_body(("html",)).get_content()
    click = next(link for link in hrefs(html) if "/t/c/" in link)
    pixel = re.search(r'<img src="([^"]+)"', html).group(1)
    headers = {"User-Agent": "Test Browser/1.0"}
    assert (
        client.get(click.removeprefix("http://track.example"), headers=headers).status_code == 302
    )
    assert (
        client.get(pixel.removeprefix("http://track.example"), headers=headers).status_code == 200
    )
    rows = {d.recipient.split("@")[0]: d for d in deliveries(database, message_id)}
    with database.transaction() as s:  # held: parked after repeated unexpected failures
        msg = s.get(Message, message_id)
        held = s.get(Delivery, rows["soft"].id)
        s.add(events.event_row("held", msg, held, held.recipient, clock(), text="Held after 3"))
    with database.transaction(readonly=True) as s:
        msg = s.get(Message, message_id)
        s.expunge(msg)

    assert drain(sender) == 7
    requests = http_receiver.wait_for(7)
    key, kid = public_key_from_jwks(client)
    by_event = {}
    for r in requests:
        assert r.path == "/postal" and r.headers["content-type"] == "application/json"
        assert_postal_signed(r, key, kid)
        body = r.json()
        assert list(body) == ["event", "timestamp", "payload", "uuid"]
        assert isinstance(body["timestamp"], float)
        message = body["payload"].get("message") or body["payload"]["original_message"]
        by_event[body["event"], message["to"].split("@")[0]] = r
    assert set(by_event) == {
        ("MessageSent", "ok"),
        ("MessageDelayed", "soft"),
        ("MessageBounced", "hard"),
        ("MessageDeliveryFailed", "block"),
        ("MessageHeld", "soft"),
        ("MessageLinkClicked", "ok"),
        ("MessageLoaded", "ok"),
    }

    sent = by_event["MessageSent", "ok"].json()["payload"]
    assert sent == {
        "message": message_hash(rows["ok"], msg, domain),
        "status": "Sent",
        "details": f"Message for ok@dest.example accepted by 127.0.0.1:{mx.port}",
        "output": sent["output"],
        "sent_with_ssl": False,  # the loopback MX offers no STARTTLS
        "timestamp": sent["timestamp"],
        "time": sent["time"],
    }
    assert isinstance(sent["time"], float) and 0 <= sent["time"] < 60
    assert sent["output"] == "250 2.0.0 OK queued as 1"
    delayed = by_event["MessageDelayed", "soft"].json()["payload"]
    assert (delayed["status"], delayed["message"]) == (
        "SoftFail",
        message_hash(rows["soft"], msg, domain),
    )
    assert "Greylisted" in delayed["output"] and "Greylisted" in delayed["details"]
    failed = by_event["MessageDeliveryFailed", "block"].json()["payload"]
    assert failed["status"] == "HardFail" and "spamhaus" in failed["output"]
    held_payload = by_event["MessageHeld", "soft"].json()["payload"]
    assert (held_payload["status"], held_payload["details"]) == ("Held", "Held after 3")
    bounced = by_event["MessageBounced", "hard"].json()["payload"]
    assert list(bounced) == ["original_message", "bounce"]
    assert bounced["original_message"] == message_hash(rows["hard"], msg, domain)
    assert bounced["bounce"]["direction"] == "incoming"
    clicked = by_event["MessageLinkClicked", "ok"].json()
    assert clicked["payload"] == {
        "message": message_hash(rows["ok"], msg, domain),
        "url": "https://example.com/x",
        "token": clicked["uuid"],
        "ip_address": "127.0.0.1",
        "user_agent": "Test Browser/1.0",
    }
    loaded = by_event["MessageLoaded", "ok"].json()["payload"]
    assert loaded == {
        "message": message_hash(rows["ok"], msg, domain),
        "ip_address": "127.0.0.1",
        "user_agent": "Test Browser/1.0",
    }

    # django-anymail's Postal view checks X-Postal-Signature and reads each event.
    expected = {
        ("MessageSent", "ok"): "delivered",
        ("MessageDelayed", "soft"): "deferred",
        ("MessageBounced", "hard"): "bounced",
        ("MessageDeliveryFailed", "block"): "failed",
        ("MessageHeld", "soft"): "queued",
        ("MessageLinkClicked", "ok"): "clicked",
        ("MessageLoaded", "ok"): "unknown",  # anymail names no Postal open event
    }
    for (name, who), kind in expected.items():
        request = by_event[name, who]
        (event,) = anymail_events(request, key)
        assert event.event_type == kind, name
        assert event.event_id == request.json()["uuid"]
        assert (event.message_id, event.recipient) == (rows[who].id, f"{who}@dest.example")
        assert event.tags == ["welcome"]
    assert anymail_events(by_event["MessageLinkClicked", "ok"], key)[0].click_url == (
        "https://example.com/x"
    )


def test_a_retry_posts_the_same_bytes_and_signatures(
    postal_hook, send, mx, worker_for, sender, http_receiver, client
):
    postal_hook("delivery")
    send()
    worker_for(mx).run_once()
    http_receiver.answer(500)
    assert sender.run_once() == 1
    sender.clock.advance(seconds=70)
    assert sender.run_once() == 1
    first, second = http_receiver.wait_for(2)
    assert first.body == second.body
    for name in ("x-postal-signature", "x-postal-signature-256", "x-postal-signature-kid"):
        assert first.headers[name] == second.headers[name]
    assert first.json()["event"] == "MessageSent"
    key, kid = public_key_from_jwks(client)
    assert_postal_signed(second, key, kid)


def test_anymail_refuses_a_body_changed_on_the_way(
    postal_hook, send, mx, worker_for, sender, http_receiver, client
):
    postal_hook("delivered")
    send()
    worker_for(mx).run_once()
    sender.run_once()
    (request,) = http_receiver.wait_for(1)
    key, _ = public_key_from_jwks(client)
    tampered = httpreceiver.Request(
        request.method, request.path, request.headers, request.body.replace(b"Sent", b"Sant")
    )
    with override_settings(ANYMAIL={"POSTAL_WEBHOOK_KEY": anymail_key(key)}):
        django_request = RequestFactory().post(
            "/anymail/postal/tracking/",
            data=tampered.body,
            content_type="application/json",
            HTTP_X_POSTAL_SIGNATURE=tampered.headers["x-postal-signature"],
        )
        with pytest.raises(AnymailWebhookValidationFailure, match="incorrect signature"):
            PostalTrackingWebhookView.as_view()(django_request)  # Django answers 400


def test_only_the_postal_webhook_gets_postal_posts(
    api, user, domain, postal_hook, send, mx, worker_for, sender, http_receiver
):
    postal_hook("delivered")
    body = api(
        "EmailGateway.AddWebhook",
        APIKey=user.api_key,
        DomainID=domain.id,
        Event="delivered",
        WebhookURL=http_receiver.url("/postern"),
    )
    assert body["Success"] is True
    send()
    worker_for(mx).run_once()
    assert drain(sender) == 2
    by_path = {r.path: r for r in http_receiver.wait_for(2)}
    assert by_path["/postal"].json()["event"] == "MessageSent"
    assert "x-postal-signature" in by_path["/postal"].headers
    assert "x-postern-signature" not in by_path["/postal"].headers
    assert by_path["/postern"].json()["event"] == "delivered"
    assert "x-postal-signature" not in by_path["/postern"].headers
    assert json.loads(by_path["/postern"].body)["recipient"] == "rcpt@dest.example"
