"""Mail back to Postern: DSN bounces and ARF complaints closing the loop on deliveries."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime
from typing import Any

from sqlalchemy import select
from sqlalchemy.orm import Session

from commands.delivery.outcomes import hard_bounce
from commands.events import writer as events
from commands.suppression import suppress
from models import Delivery, Domain, Message
from models.messages import BOUNCED
from mta.bounces import Report

COMPLAINED = "complained"


@dataclass
class Outcome:
    bounced: int = 0
    deferred: int = 0
    complained: int = 0
    unmatched: int = 0


def is_return_path_host(db: Session, host: str) -> bool:
    """Whether ``host`` is the return-path host (<subdomain>.<domain>) of a known domain."""
    host = host.strip().lower().rstrip(".")
    sub, _, name = host.partition(".")
    if not sub or not name:
        return False
    return (
        db.scalar(select(Domain.id).where(Domain.name == name, Domain.subdomain == sub).limit(1))
        is not None
    )


def _by_token(db: Session, token: str | None) -> Delivery | None:
    if not token:
        return None
    return db.scalar(select(Delivery).where(Delivery.token == token))


def _by_message_id(db: Session, message_id: str | None, recipient: str | None) -> Delivery | None:
    """The delivery of the original message to ``recipient`` (the Message-ID fallback)."""
    if not message_id:
        return None
    local = message_id.strip().strip("<>").split("@", 1)[0]
    if len(local) != 36:
        return None
    query = select(Delivery).where(Delivery.message_id == local)
    rows = list(db.scalars(query))
    if recipient:
        rows = [d for d in rows if d.recipient.lower() == recipient.lower()]
    return rows[0] if len(rows) == 1 else None


def apply_report(db: Session, report: Report, tokens: list[str | None], now: datetime) -> Outcome:
    """Record what a parsed report says about the deliveries it names.

    ``tokens`` are the VERP tokens of the envelope recipients the report was sent to. The
    events are written together at the end, through the event writer.
    """
    out = Outcome()
    written: list[dict[str, Any]] = []
    statuses = report.recipients or []
    for i, status in enumerate(statuses):
        token = tokens[i] if i < len(tokens) else (tokens[0] if len(tokens) == 1 else None)
        delivery = _by_token(db, token)
        if (
            delivery is not None
            and status.recipient
            and delivery.recipient.lower() != status.recipient.lower()
            and len(statuses) > 1
        ):
            delivery = None  # a multi-recipient report: match each to its own delivery
        delivery = delivery or _by_message_id(db, report.original_message_id, status.recipient)
        if delivery is None:
            out.unmatched += 1
            continue
        message = db.get(Message, delivery.message_id)
        if message is None:  # pragma: no cover - a delivery goes with its message
            out.unmatched += 1
            continue
        code, enhanced = status.smtp_code, status.status
        text = status.diagnostic or None
        details: dict[str, Any] = {
            "source": "dsn" if report.kind == "bounce" else "arf",
            "remote_mta": status.remote_mta,
        }
        if report.kind == "complaint":
            details["feedback_type"] = report.feedback_type
            written.append(
                events.event_values(
                    COMPLAINED,
                    message,
                    delivery.id,
                    delivery.recipient,
                    now,
                    text=text,
                    details=details,
                )
            )
            suppress(
                db,
                delivery.user_id,
                delivery.recipient,
                "complaint",
                f"Complaint ({report.feedback_type or 'abuse'})",
                now,
            )
            out.complained += 1
        elif status.hard:
            delivery.status = BOUNCED
            delivery.due_at = None
            delivery.last_code, delivery.last_enhanced, delivery.last_text = code, enhanced, text
            delivery.updated_at = now
            hard_bounce(
                db,
                written,
                message,
                delivery.id,
                delivery.user_id,
                delivery.recipient,
                now,
                code=code,
                enhanced=enhanced,
                text=text,
                details=details,
            )
            out.bounced += 1
        elif status.soft:
            written.append(
                events.event_values(
                    events.DEFERRED,
                    message,
                    delivery.id,
                    delivery.recipient,
                    now,
                    code=code,
                    enhanced=enhanced,
                    text=text,
                    details={**details, "note": "delay reported by the receiving side"},
                )
            )
            out.deferred += 1
    events.write(db.connection(), written)
    return out
