"""Infobip's pushes end to end: a message sent over Infobip's API with a notifyUrl and a
trackingUrl is delivered to a loopback MX; its reports (final, and deferred ones with
intermediateReport) and its tracking events (OPENED, CLICKED, LATE_BOUNCE) reach a loopback
receiver through the webhook sender, retried and logged as any webhook delivery."""

import re
import xml.etree.ElementTree as ET

import pytest
from sqlalchemy import select

from app.workers.webhooks import WebhookSender
from commands.events import writer as events
from models import Delivery, InfobipMessage, Message, WebhookAttempt, WebhookDelivery
from tests import httpreceiver
from tests.app.workers import test_delivery as delivery_tests
from tests.mta.test_tracking import hrefs

http_receiver = httpreceiver.http_receiver
smtp_peer = delivery_tests.smtp_peer
mx, worker_for, domain = delivery_tests.mx, delivery_tests.worker_for, delivery_tests.domain


def app_key(key):
    return {"Authorization": f"App {key}"}


@pytest.fixture
def sender(base_config, database, clock, box):
    return WebhookSender(base_config, database, box, clock=clock)


def drain(sender):
    total = 0
    while n := sender.run_once():
        total += n
    return total


@pytest.fixture
def send(client, domain, http_receiver):
    def do(*to, **extra):
        fields = {
            "from": "News <news@example.com>",
            "to": list(to),
            "subject": "Hi",
            "html": '<p>Hello <a href="https://example.com/x">there</a></p>',
            "notifyUrl": http_receiver.url("/dlr"),
            "callbackData": "cb-1",
            "bulkId": "bulk-1",
            **extra,
        }
        resp = client.post("/email/3/send", headers=app_key(domain.key), data=fields)
        assert resp.status_code == 200, resp.get_json()
        return {m["to"]: m["messageId"] for m in resp.get_json()["messages"]}

    return do


def by_path(requests, path):
    return [r for r in requests if r.path == path]


def test_reports_and_tracking_events_are_pushed(
    client, domain, send, mx, worker_for, sender, http_receiver
):
    mx.fail_rcpt("soft@dest.example", 451, "4.7.1 Greylisted, try later", times=1)
    mx.fail_rcpt("hard@dest.example", 550, "5.1.1 No such user here")
    ids = send(
        "ok@dest.example",
        "soft@dest.example",
        "hard@dest.example",
        intermediateReport="true",
        trackingUrl=http_receiver.url("/track"),
        track="true",
    )
    worker = worker_for(mx, tracking__base_url="http://track.example")
    worker.run_once()
    (received,) = [m for m in mx.messages if m.rcpt_tos == ["ok@dest.example"]]
    html = received.data.decode("utf-8", "replace").replace("=\r\n", "").replace("=3D", "=")
    click = next(link for link in hrefs(html) if "/t/c/" in link)
    pixel = re.search(r'<img src="([^"]+)"', html).group(1)
    ua = {"User-Agent": "Test Browser/1.0"}
    assert client.get(click.removeprefix("http://track.example"), headers=ua).status_code == 302
    assert client.get(pixel.removeprefix("http://track.example"), headers=ua).status_code == 200
    # ok delivered, hard bounced, soft deferred (intermediate), an open and a click.
    assert drain(sender) == 5
    requests = http_receiver.wait_for(5)
    dlr = {r.json()["results"][0]["to"]: r for r in by_path(requests, "/dlr")}
    assert set(dlr) == {"ok@dest.example", "soft@dest.example", "hard@dest.example"}
    for to, r in dlr.items():
        assert r.method == "POST" and r.headers["content-type"] == "application/json"
        (result,) = r.json()["results"]
        assert result["messageId"] == ids[to] and result["bulkId"] == "bulk-1"
        assert result["callbackData"] == "cb-1" and result["smsCount"] == 1
        assert "messageCount" not in result and result["doneAt"].endswith("+0000")
    ok = dlr["ok@dest.example"].json()["results"][0]
    assert ok["status"]["name"] == "DELIVERED_TO_HANDSET" and ok["error"]["id"] == 0
    hard = dlr["hard@dest.example"].json()["results"][0]
    assert (hard["status"]["id"], hard["error"]["id"]) == (9, 6012)
    assert hard["error"]["name"] == "EC_HARD_BOUNCE" and hard["error"]["permanent"] is True
    soft = dlr["soft@dest.example"].json()["results"][0]
    assert soft["status"]["groupName"] == "PENDING" and soft["error"]["id"] == 6011
    track = {r.json()["notificationType"]: r.json() for r in by_path(requests, "/track")}
    assert set(track) == {"OPENED", "CLICKED"}
    assert track["CLICKED"]["url"] == "https://example.com/x"
    for t in track.values():
        assert t["messageId"] == ids["ok@dest.example"] and t["bulkId"] == "bulk-1"
        assert t["recipient"] == "ok@dest.example" and t["domain"] == domain.name
        assert t["callbackData"] == "cb-1" and isinstance(t["sendDateTime"], int)
    # Pushed reports are not handed out by GET /email/1/reports.
    resp = client.get("/email/1/reports", headers=app_key(domain.key))
    assert resp.get_json() == {"results": []}


def test_the_soft_one_gets_its_final_report_after_the_retry(
    client, domain, send, mx, worker_for, sender, http_receiver, clock
):
    mx.fail_rcpt("soft@dest.example", 451, "4.7.1 Greylisted, try later", times=1)
    ids = send("soft@dest.example")  # no intermediateReport: only the final one
    worker = worker_for(mx)
    worker.run_once()
    assert drain(sender) == 0
    clock.advance(hours=2)
    assert worker.run_once() == 1
    assert drain(sender) == 1
    (r,) = http_receiver.wait_for(1)
    (result,) = r.json()["results"]
    assert result["messageId"] == ids["soft@dest.example"]
    assert result["status"]["name"] == "DELIVERED_TO_HANDSET"
    assert result["attemptCount"] == 2


def test_xml_reports(domain, send, mx, worker_for, sender, http_receiver):
    send("ok@dest.example", notifyContentType="application/xml", callbackData="<a&b>")
    worker_for(mx).run_once()
    assert drain(sender) == 1
    (r,) = http_receiver.wait_for(1)
    assert r.headers["content-type"] == "application/xml"
    root = ET.fromstring(r.body)
    assert root.tag == "reportResponse"
    result = root.find("results/result")
    assert result.findtext("to") == "ok@dest.example"
    assert result.findtext("callbackData") == "<a&b>"
    assert result.findtext("smsCount") == "1"
    assert result.findtext("status/name") == "DELIVERED_TO_HANDSET"


def test_late_bounces_unsubscribes_and_complaints_go_to_the_tracking_url(
    domain, send, mx, worker_for, sender, http_receiver, database, clock
):
    ids = send("ok@dest.example", trackingUrl=http_receiver.url("/track"))
    worker_for(mx).run_once()
    assert drain(sender) == 1  # the delivered report
    with database.transaction() as s:
        ib = s.scalar(
            select(InfobipMessage).where(InfobipMessage.message_id == ids["ok@dest.example"])
        )
        d = s.get(Delivery, ib.delivery_id)
        msg = s.get(Message, d.message_id)
        s.add(
            events.event_row("bounced", msg, d, d.recipient, clock(), code=550, text="5.1.1 gone")
        )
    assert drain(sender) == 1
    requests = http_receiver.wait_for(2)
    (late,) = by_path(requests, "/track")
    assert late.json()["notificationType"] == "LATE_BOUNCE"
    assert late.json()["messageId"] == ids["ok@dest.example"]
    assert len(by_path(requests, "/dlr")) == 1  # no second report
    with database.transaction() as s:
        d = s.get(Delivery, ib.delivery_id)
        msg = s.get(Message, d.message_id)
        for kind in ("unsubscribed", "complained"):
            s.add(events.event_row(kind, msg, d, d.recipient, clock()))
    assert drain(sender) == 2
    requests = http_receiver.wait_for(4)
    kinds = [r.json()["notificationType"] for r in by_path(requests, "/track")]
    assert sorted(kinds) == ["COMPLAINED", "LATE_BOUNCE", "UNSUBSCRIBED"]


def test_a_push_is_retried_and_logged(
    domain, send, mx, worker_for, sender, http_receiver, database, clock
):
    http_receiver.answer(500, 200)
    send("ok@dest.example")
    worker_for(mx).run_once()
    assert drain(sender) == 1
    clock.advance(minutes=5)
    assert drain(sender) == 1
    assert len(http_receiver.wait_for(2)) == 2
    with database.transaction(readonly=True) as s:
        (push,) = s.scalars(select(WebhookDelivery)).all()
        assert push.webhook_id is None and push.event_name == "infobip-report"
        assert push.status == "succeeded" and push.attempts == 2
        codes = [
            a.status_code for a in s.scalars(select(WebhookAttempt).order_by(WebhookAttempt.id))
        ]
        assert codes == [500, 200]


def test_a_private_address_is_refused_when_not_allowed(
    base_config, database, clock, box, domain, send, mx, worker_for, http_receiver
):
    send("ok@dest.example")
    worker_for(mx).run_once()
    strict = WebhookSender(
        base_config.replace(webhooks__allow_private=False), database, box, clock=clock
    )
    assert drain(strict) == 1
    assert http_receiver.requests == []
    with database.transaction(readonly=True) as s:
        (push,) = s.scalars(select(WebhookDelivery)).all()
        assert push.status == "failed" and "Refused" in push.last_error


def test_no_push_without_a_url_and_none_of_another_users_messages(
    client, domain, active_domain, make_user, mx, worker_for, sender, http_receiver, database
):
    other = make_user("bob")
    theirs = active_domain("other.example", key=other.api_key)
    resp = client.post(
        "/email/3/send",
        headers=app_key(theirs.key),
        data={"from": "a@other.example", "to": "x@dest.example", "subject": "s", "text": "t"},
    )
    assert resp.status_code == 200
    worker_for(mx).run_once()
    assert drain(sender) == 0
    with database.transaction(readonly=True) as s:
        assert s.scalars(select(WebhookDelivery)).all() == []


def test_pushes_are_listed_with_the_domains_webhook_deliveries(
    api, user, domain, send, mx, worker_for, sender, http_receiver
):
    send("ok@dest.example")
    worker_for(mx).run_once()
    assert drain(sender) == 1
    body = api("EmailGateway.GetWebhookDeliveries", APIKey=user.api_key, DomainID=domain.id)
    (push,) = body["Deliveries"]
    assert push["WebhookID"] == "" and push["Event"] == "infobip-report"
    assert push["URL"] == http_receiver.url("/dlr") and push["Status"] == "succeeded"
    assert push["Attempts"][0]["StatusCode"] == 200
