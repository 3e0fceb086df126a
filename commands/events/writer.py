"""Writing event rows: every stage of a delivery leaves one."""

from __future__ import annotations

import json
from datetime import datetime
from types import SimpleNamespace
from typing import Any

from sqlalchemy import insert
from sqlalchemy.engine import Connection
from sqlalchemy.orm import Session

from models import Delivery, Event, Message
from models.base import new_uuid
from models.direct import Direct
from models.event_counts import add_counts, count_rows

# Event types written by sending and delivery.
ACCEPTED = "accepted"
REJECTED = "rejected"
DEFERRED = "deferred"
DELIVERED = "delivered"
BOUNCED = "bounced"
FAILED = "failed"
SUPPRESSED = "suppressed"
# ...and by tracking (commands.tracking); commands.inbox writes "complained".
OPENED = "opened"
CLICKED = "clicked"
UNSUBSCRIBED = "unsubscribed"


def event_values(
    kind: str,
    message: Any,
    delivery_id: int | None,
    recipient: str,
    now: datetime,
    *,
    code: int | None = None,
    enhanced: str | None = None,
    text: str | None = None,
    details: dict[str, Any] | None = None,
) -> dict[str, Any]:
    """An event's column values; ``message`` is anything with the Message attributes."""
    return {
        "uid": new_uuid(),
        "type": kind,
        "created_at": now,
        "user_id": message.user_id,
        "domain_id": message.domain_id,
        "domain_name": message.domain_name,
        "message_id": message.id,
        "delivery_id": delivery_id,
        "recipient": recipient,
        "recipient_lower": recipient.lower(),
        "tags": message.tags,
        "smtp_code": code,
        "enhanced_code": enhanced,
        "smtp_text": text,
        "details": json.dumps(details or {}),
    }


def event_row(
    kind: str,
    message: Message,
    delivery: Delivery | None,
    recipient: str,
    now: datetime,
    **kw: Any,
) -> Event:
    row = Event(
        **event_values(
            kind, message, delivery.id if delivery is not None else None, recipient, now, **kw
        )
    )
    if delivery is not None and delivery.id is None:
        row.delivery = delivery  # not written yet: the flush fills delivery_id in
    return row


def record(
    db: Session,
    kind: str,
    message: Message,
    delivery: Delivery | None,
    recipient: str,
    now: datetime,
    **kw: Any,
) -> Event:
    row = event_row(kind, message, delivery, recipient, now, **kw)
    db.add(row)
    return row


_INSERT_EVENT = Direct(insert(Event))


def insert_values(conn: Connection, rows: list[dict[str, Any]]) -> None:
    """Insert events given as ``event_values`` with one Core statement, and count them.

    For hot paths (a Direct statement): the unit of work costs more than the insert. Such
    rows bypass the session hook of models/event_counts.py, so they are counted here.
    """
    if rows:
        _INSERT_EVENT.execute(conn, rows)
        add_counts(conn, count_rows(SimpleNamespace(**row) for row in rows))
