"""Writing event rows, with their daily counts: every stage of a delivery leaves one."""

from __future__ import annotations

import json
from dataclasses import dataclass
from datetime import datetime
from types import SimpleNamespace
from typing import Any, Protocol

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
BLOCKED = "blocked"  # failed: the receiver refused the sender (a "block" class failure)
SUPPRESSED = "suppressed"
HELD = "held"  # parked after repeated unexpected failures (commands/delivery/outcomes.py)
# ...and by tracking (commands.tracking); commands.delivery.inbox writes "complained",
# "not_spam" and "auth_failure" (and "unsubscribed" for an opt-out feedback report).
OPENED = "opened"
CLICKED = "clicked"
UNSUBSCRIBED = "unsubscribed"
# Events of a domain rather than of a message (no message, delivery or recipient): the
# steps of a DKIM key rotation (commands/domains/rotation.py) and a webhook disabled after
# days of failures (commands/webhooks/queue.py). GetEvents lists them; no webhook gets them.
DKIM_ROTATING = "dkim_rotating"
DKIM_ACTIVATED = "dkim_activated"
DKIM_RETIRED = "dkim_retired"
WEBHOOK_DISABLED = "webhook_disabled"
DOMAIN_EVENTS = (DKIM_ROTATING, DKIM_ACTIVATED, DKIM_RETIRED, WEBHOOK_DISABLED)


class MessageColumns(Protocol):
    """What an event takes from its message (a Message row, or a row read with its columns)."""

    @property
    def id(self) -> str: ...
    @property
    def user_id(self) -> int: ...
    @property
    def domain_id(self) -> int: ...
    @property
    def domain_name(self) -> str: ...
    @property
    def tags(self) -> str: ...


def event_values(
    kind: str,
    message: MessageColumns,
    delivery_id: int | None,
    recipient: str,
    now: datetime,
    *,
    code: int | None = None,
    enhanced: str | None = None,
    text: str | None = None,
    details: dict[str, Any] | None = None,
) -> dict[str, Any]:
    """An event's column values, to be written by ``write``."""
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


def domain_event_values(
    kind: str,
    user_id: int,
    domain_id: int,
    domain_name: str,
    now: datetime,
    *,
    text: str | None = None,
    details: dict[str, Any] | None = None,
) -> dict[str, Any]:
    """An event of a domain (one of ``DOMAIN_EVENTS``): its message id and recipient are
    empty."""
    domain = _NoMessage("", user_id, domain_id, domain_name, "[]")
    return event_values(kind, domain, None, "", now, text=text, details=details)


@dataclass(frozen=True)
class _NoMessage:
    """What a domain's event takes in place of a message's columns."""

    id: str
    user_id: int
    domain_id: int
    domain_name: str
    tags: str


_INSERT_EVENT = Direct(insert(Event))


def write(conn: Connection, rows: list[dict[str, Any]]) -> None:
    """Write events given as ``event_values`` and add them to the daily counts, in the
    connection's transaction: the one way Postern writes events.

    One statement for the rows and one sorted upsert for their counts (models/event_counts.py),
    so write a transaction's events together: concurrent writers then take the counters'
    row locks in one order.
    """
    if rows:
        _INSERT_EVENT.execute(conn, rows)
        add_counts(conn, count_rows(SimpleNamespace(**row) for row in rows))


insert_values = write  # the name the send path knows it by


def record(
    db: Session,
    kind: str,
    message: MessageColumns,
    delivery: Delivery | None,
    recipient: str,
    now: datetime,
    **kw: Any,
) -> dict[str, Any]:
    """Write one event in the session's transaction (through ``write``); its values."""
    values = event_values(
        kind, message, delivery.id if delivery is not None else None, recipient, now, **kw
    )
    write(db.connection(), [values])
    return values


def event_row(
    kind: str,
    message: Message,
    delivery: Delivery | None,
    recipient: str,
    now: datetime,
    **kw: Any,
) -> Event:
    """An event as an ORM row, for a session to add (counted at commit by the session hook
    of models/event_counts.py); ``record`` and ``write`` are what Postern itself uses."""
    row = Event(
        **event_values(
            kind, message, delivery.id if delivery is not None else None, recipient, now, **kw
        )
    )
    if delivery is not None and delivery.id is None:
        row.delivery = delivery  # not written yet: the flush fills delivery_id in
    return row
