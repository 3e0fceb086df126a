"""The delivery queue seen from the gateway: failing a domain's deliveries not yet sent."""

from __future__ import annotations

from datetime import datetime

from sqlalchemy import select
from sqlalchemy.orm import Session

from commands.events import writer as events
from models import Delivery, Message
from models.messages import FAILED, SENDING


def fail_pending(db: Session, domain_id: int, reason: str, now: datetime) -> int:
    """Fail every delivery of the domain not yet sent (one in the worker's hands goes on)."""
    rows = db.execute(
        select(Delivery, Message)
        .join(Message, Message.id == Delivery.message_id)
        .where(
            Delivery.domain_id == domain_id,
            Delivery.due_at.is_not(None),
            Delivery.status != SENDING,
        )
    ).all()
    for delivery, message in rows:
        delivery.status = FAILED
        delivery.due_at = None
        delivery.last_text = reason
        delivery.updated_at = now
        events.record(db, events.FAILED, message, delivery, delivery.recipient, now, text=reason)
    return len(rows)
