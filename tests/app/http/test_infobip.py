"""Infobip's email send (POST /email/2/send, /email/3/send, /email/4/messages): answers,
every 400 and 401 shape, placeholders, templates, preserveRecipients and what is stored."""

import base64
import json

import pytest
from sqlalchemy import select

from models import Delivery, InfobipMessage, Message

V3 = "/email/3/send"
V4 = "/email/4/messages"
UNAUTHORIZED = {
    "requestError": {
        "serviceException": {"messageId": "UNAUTHORIZED", "text": "Invalid login details"}
    }
}
PENDING_ACCEPTED = {
    "groupId": 1,
    "groupName": "PENDING",
    "id": 26,
    "name": "PENDING_ACCEPTED",
    "description": "Message accepted, pending for delivery.",
}


def app_key(key):
    return {"Authorization": f"App {key}"}


def basic(username, password):
    token = base64.b64encode(f"{username}:{password}".encode()).decode()
    return {"Authorization": f"Basic {token}"}


def form(**changes):
    f = {
        "from": "News <news@example.com>",
        "to": "ann@dest.example",
        "subject": "Hi",
        "text": "Hello",
    }
    f.update(changes)
    return {k: v for k, v in f.items() if v is not None}


def validation_errors(resp):
    assert resp.status_code == 400, resp.get_data(as_text=True)
    exc = resp.get_json()["requestError"]["serviceException"]
    assert exc["messageId"] == "BAD_REQUEST" and exc["text"] == "Bad request"
    return exc["validationErrors"]


@pytest.fixture
def domain(active_domain):
    return active_domain()


def stored(database, message_id=None):
    with database.transaction(readonly=True) as s:
        q = select(InfobipMessage, Delivery, Message).join(
            Delivery, Delivery.id == InfobipMessage.delivery_id
        ).join(Message, Message.id == Delivery.message_id)
        if message_id is not None:
            q = q.where(InfobipMessage.message_id == message_id)
        rows = s.execute(q.order_by(Delivery.id)).all()
        for r in rows:
            s.expunge_all()
        return rows


def test_a_multipart_send_to_two_addresses(client, domain, database):
    resp = client.post(
        V3,
        headers=app_key(domain.key),
        data={
            **form(to=["ann@dest.example", "bob@dest.example"]),
            "attachment": [(__import__("io").BytesIO(b"hello"), "a.txt", "text/plain")],
            "bulkId": "bulk-1",
            "notifyUrl": "https://hooks.example/dlr",
            "notifyContentType": "application/json",
            "callbackData": "cb",
            "intermediateReport": "true",
            "trackingUrl": "https://hooks.example/track",
            "ipPoolId": "pool",
            "landingPageId": "lp",
            "clientPriority": "HIGH",
        },
        content_type="multipart/form-data",
    )
    assert resp.status_code == 200, resp.get_json()
    answer = resp.get_json()
    assert answer["bulkId"] == "bulk-1"
    assert [m["to"] for m in answer["messages"]] == ["ann@dest.example", "bob@dest.example"]
    assert all(m["status"] == PENDING_ACCEPTED for m in answer["messages"])
    rows = stored(database)
    assert [r.InfobipMessage.message_id for r in rows] == [m["messageId"] for m in answer["messages"]]
    first = rows[0].InfobipMessage
    assert first.bulk_id == "bulk-1" and first.callback_data == "cb"
    assert first.notify_url == "https://hooks.example/dlr" and first.intermediate_report
    assert json.loads(first.ignored) == {
        "ipPoolId": "pool",
        "landingPageId": "lp",
        "clientPriority": "HIGH",
    }
    assert rows[0].Message.source == "infobip"
    assert len({r.Message.id for r in rows}) == 2
