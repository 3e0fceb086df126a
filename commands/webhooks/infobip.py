"""Infobip's pushes: a delivery report POSTed to the ``notifyUrl`` a message was sent with,
and tracking events to its ``trackingUrl``.

A push is a webhook delivery of no registered webhook (``WebhookDelivery.webhook_id`` is
NULL; its URL is the message's own): the fan-out makes one for an event of a delivery sent
over Infobip's API (``infobip_messages``) of the same user, and the webhook sender posts it
as any other: claimed, retried on ``webhooks.retry_schedule``, each attempt logged, the
address checked before connecting (``webhooks.allow_private``). Its event name says which
push it is: ``infobip-report`` or ``infobip-tracking``.

- ``infobip-report``: when the delivery ends (delivered, bounced, failed, blocked, or
  suppressed at sending), and for each deferral when ``intermediateReport`` was asked for;
  only when ``notify`` was not false. The body is Infobip's ``{"results": [...]}`` (JSON,
  or XML when ``notifyContentType`` is ``application/xml``), with ``smsCount`` and the
  ``callbackData``. A report pushed is not handed out again by GET /email/1/reports.
- ``infobip-tracking``: ``OPENED``, ``CLICKED``, ``UNSUBSCRIBED``, ``COMPLAINED``, and
  ``LATE_BOUNCE`` for a bounce that came after the delivery was accepted.
"""

from __future__ import annotations

import json
from collections.abc import Iterable, Sequence
from datetime import datetime
from typing import Any
from xml.sax.saxutils import escape

from sqlalchemy import select
from sqlalchemy.orm import Session

from commands.sending.infobip_status import FINAL_EVENTS, aware, infobip_outcome, infobip_time
from models import Delivery, Event, InfobipMessage
from models.webhooks import PENDING

REPORT = "infobip-report"
TRACKING = "infobip-tracking"
PUSHES = (REPORT, TRACKING)
PUSH_FORMAT = "infobip"  # what the queue calls a push's format (it has no webhook)

_TRACKED = {
    "opened": "OPENED",
    "clicked": "CLICKED",
    "unsubscribed": "UNSUBSCRIBED",
    "complained": "COMPLAINED",
}
PUSHED_EVENTS = (*FINAL_EVENTS, "deferred", *_TRACKED)
_CHUNK = 500


def push_rows(s: Session, events: Sequence[Any], now: datetime) -> list[dict[str, Any]]:
    """The webhook deliveries (rows) of the pushes ``events`` call for, not made before."""
    wanted = [e for e in events if e.type in PUSHED_EVENTS]
    if not wanted:
        return []
    event_ids = [e.id for e in wanted]
    full: dict[int, Event] = {}
    for start in range(0, len(event_ids), _CHUNK):
        for one in s.scalars(select(Event).where(Event.id.in_(event_ids[start : start + _CHUNK]))):
            full[one.id] = one
    delivery_ids = sorted({ev.delivery_id for ev in full.values() if ev.delivery_id is not None})
    targets: dict[int, InfobipMessage] = {}
    for start in range(0, len(delivery_ids), _CHUNK):
        for target in s.scalars(
            select(InfobipMessage).where(
                InfobipMessage.delivery_id.in_(delivery_ids[start : start + _CHUNK]),
                (InfobipMessage.notify_url.is_not(None))
                | (InfobipMessage.tracking_url.is_not(None)),
            )
        ):
            targets[target.delivery_id] = target
    if not targets:
        return []
    late = _delivered_before(
        s, [full[e.id] for e in wanted if e.id in full and e.type == "bounced"]
    )
    rows = []
    for e in wanted:
        ev = full.get(e.id)
        ib = targets.get(ev.delivery_id or 0) if ev is not None else None
        if ev is None or ib is None or ib.user_id != ev.user_id:
            continue
        name, url = None, None
        if ev.type in _TRACKED or (ev.type == "bounced" and ev.id in late):
            name, url = TRACKING, ib.tracking_url
        elif ev.type in FINAL_EVENTS or (ev.type == "deferred" and ib.intermediate_report):
            name, url = REPORT, ib.notify_url if ib.notify else None
        if name is None or not url:
            continue
        rows.append(
            {
                "webhook_id": None,
                "user_id": ev.user_id,
                "domain_id": ev.domain_id,
                "event_id": ev.id,
                "event_uid": ev.uid,
                "event_name": name,
                "url": url,
                "status": PENDING,
                "due_at": now,
                "attempts": 0,
                "created_at": now,
                "updated_at": now,
            }
        )
    return rows


def _delivered_before(s: Session, bounces: list[Event]) -> set[int]:
    """The ids of the bounces whose delivery had been accepted by the receiver before."""
    if not bounces:
        return set()
    delivered: dict[int, int] = {}
    for ev in s.scalars(
        select(Event).where(
            Event.message_id.in_({b.message_id for b in bounces}),
            Event.delivery_id.in_({b.delivery_id for b in bounces}),
            Event.type == "delivered",
        )
    ):
        if ev.delivery_id is not None:
            delivered.setdefault(ev.delivery_id, ev.id)
    return {b.id for b in bounces if delivered.get(b.delivery_id or 0, b.id) < b.id}


def push_sources(
    s: Session, events: Iterable[Event]
) -> tuple[dict[int, InfobipMessage], dict[int, Delivery]]:
    """The Infobip rows and deliveries the pushes of ``events`` are made from."""
    delivery_ids = {e.delivery_id for e in events if e.delivery_id is not None}
    if not delivery_ids:
        return {}, {}
    ibs = {
        r.delivery_id: r
        for r in s.scalars(
            select(InfobipMessage).where(InfobipMessage.delivery_id.in_(delivery_ids))
        )
    }
    deliveries = {d.id: d for d in s.scalars(select(Delivery).where(Delivery.id.in_(delivery_ids)))}
    return ibs, deliveries


def push_body(
    event: Event,
    name: str,
    ib: InfobipMessage,
    delivery: Delivery | None,
) -> tuple[bytes, str]:
    """The body of a push and its Content-Type; built from the rows alone (every retry
    posts the same bytes)."""
    if name == TRACKING:
        return _tracking_body(event, ib), "application/json"
    stored = json.loads(event.details or "{}")
    outcome = infobip_outcome(
        event.type,
        event.smtp_code,
        event.enhanced_code,
        stored.get("bounce_class"),
        event.smtp_text,
    )
    sent_at = aware(ib.created_at)
    done_at = aware(event.created_at)
    attempts = delivery.attempts if delivery is not None else 0
    result: dict[str, Any] = {
        "bulkId": ib.bulk_id,
        "messageId": ib.message_id,
        "to": event.recipient,
        "sentAt": infobip_time(sent_at),
        "doneAt": infobip_time(done_at),
        "smsCount": 1,
        "attemptCount": attempts,
        "timeToFirstAttempt": 0,
        "price": {"pricePerMessage": 0, "currency": "EUR"},
        "status": outcome.status,
        "error": outcome.error,
    }
    if ib.callback_data is not None:
        result["callbackData"] = ib.callback_data
    if (ib.notify_content_type or "").endswith("/xml"):
        return _xml({"reportResponse": {"results": {"result": result}}}), "application/xml"
    return json.dumps({"results": [result]}, separators=(",", ":")).encode(), "application/json"


def _tracking_body(event: Event, ib: InfobipMessage) -> bytes:
    stored = json.loads(event.details or "{}")
    kind = _TRACKED.get(event.type, "LATE_BOUNCE")
    body: dict[str, Any] = {
        "notificationType": kind,
        "eventId": event.uid,
        "domain": event.domain_name,
        "recipient": event.recipient,
        "sendDateTime": int(aware(event.created_at).timestamp() * 1000),
        "messageId": ib.message_id,
        "bulkId": ib.bulk_id,
        "callbackData": ib.callback_data,
    }
    if kind == "CLICKED" and stored.get("url"):
        body["url"] = stored["url"]
    if stored.get("user_agent"):
        body["recipientInfo"] = {"userAgent": stored["user_agent"]}
    return json.dumps(body, separators=(",", ":")).encode()


def _xml(value: Any) -> bytes:
    def render(v: Any) -> str:
        if isinstance(v, dict):
            return "".join(f"<{k}>{render(x)}</{k}>" for k, x in v.items() if x is not None)
        if isinstance(v, bool):
            return "true" if v else "false"
        return escape(str(v))

    return ('<?xml version="1.0" encoding="UTF-8"?>' + render(value)).encode()
