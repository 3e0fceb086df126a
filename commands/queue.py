"""The queue seen from commands: failing a domain's pending deliveries, ClearDomainQueue."""

from __future__ import annotations

from datetime import datetime
from typing import Any

from sqlalchemy import select
from sqlalchemy.orm import Session

from models import Delivery, Message
from models.messages import FAILED, SENDING

from . import events
from .context import Context
from .domains import domain_id_param, owned_domain
from .registry import Auth, command
from .schema import CommandSchema


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


_CLEAR_NOT_FOUND = (2, "Unable to retrieve sender domain")


class ClearDomainQueueSchema(CommandSchema):
    DomainID = domain_id_param((1, "Missing required parameter: DomainID"), _CLEAR_NOT_FOUND)


@command("EmailGateway.ClearDomainQueue", schema=ClearDomainQueueSchema, auth=Auth.USER)
def clear_domain_queue(ctx: Context, DomainID: int) -> dict[str, Any]:
    domain = owned_domain(ctx, DomainID, _CLEAR_NOT_FOUND)
    count = fail_pending(ctx.db, domain.id, "Removed from the queue by ClearDomainQueue", ctx.now)
    return {"ClearedCount": count}
