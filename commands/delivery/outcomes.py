"""What became of each delivery a worker handled: its new state and its event, in one commit.

The retry rule: a temporary failure ("deferred") is retried after ``retry_delay`` (doubling
from ``delivery.retry_base`` up to ``delivery.retry_max``, with jitter) until the delivery
is ``delivery.max_age`` seconds old, then it fails. An unexpected failure ("error": the
message could not be built or signed) is retried the same way, and after ``HOLD_AFTER`` of
them the delivery is parked as ``held`` (no due time; a ``held`` event holds the error)
until EmailGateway.ReleaseHeldMessages makes it due again. A hard bounce follows the
hard-bounce rule (``hard_bounce``), as bounces mailed back do.
"""

from __future__ import annotations

import random
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime, timedelta
from types import SimpleNamespace
from typing import Any

from sqlalchemy import bindparam, select, update
from sqlalchemy.orm import Session

from commands.events import writer as events
from commands.suppression import suppress_bounce
from models import Database, Delivery, Message
from models.direct import Direct
from models.messages import BOUNCED, DEFERRED, DELIVERED, FAILED, HELD, SENDING

HOLD_AFTER = 3  # unexpected failures of a delivery before it is held
ERROR_CODE = "4.3.0"  # the enhanced code recorded with an unexpected failure


@dataclass(frozen=True)
class Result:
    """How handling one claimed delivery went."""

    delivery_id: int
    status: str  # "delivered", "bounced", "deferred", "failed" or "error" (unexpected)
    code: int | None = None  # the SMTP reply code that decided it
    enhanced: str | None = None
    text: str = ""
    host: str | None = None


@dataclass(frozen=True)
class Retry:
    """The retry settings (``delivery.max_age``, ``retry_base``, ``retry_max``), in seconds."""

    max_age: float
    base: float
    cap: float


def retry_delay(attempts: int, base: float, cap: float) -> float:
    """Exponential backoff with +-20% jitter: base, 2 base, 4 base ... at most cap."""
    delay: float = min(cap, base * float(2 ** max(0, attempts - 1)))
    return delay * random.uniform(0.8, 1.2)  # noqa: S311 - jitter, not secrecy


def hard_bounce(
    db: Session,
    written: list[dict[str, Any]],
    message: events.MessageColumns,
    delivery_id: int,
    user_id: int,
    recipient: str,
    now: datetime,
    *,
    code: int | None,
    enhanced: str | None,
    text: str | None,
    details: dict[str, Any],
) -> None:
    """The hard-bounce rule, the same for an MX host's 5xx and a bounce mailed back: a
    ``bounced`` event (added to ``written``, which the caller writes with its other events
    through the event writer) and the address suppressed for all the user's domains."""
    written.append(
        events.event_values(
            events.BOUNCED,
            message,
            delivery_id,
            recipient,
            now,
            code=code,
            enhanced=enhanced,
            text=text,
            details=details,
        )
    )
    suppress_bounce(db, user_id, recipient, code, enhanced, text, now)


# What recording reads of a claimed delivery and its message (not the payload), named so
# that a row also reads as the message an event takes (id is the message's).
_OURS = Direct(
    select(
        Delivery.id.label("delivery_id"),
        Delivery.user_id,
        Delivery.recipient,
        Delivery.attempts,
        Delivery.errors,
        Delivery.created_at,
        Message.id,
        Message.domain_id,
        Message.domain_name,
        Message.tags,
    )
    .join(Message, Message.id == Delivery.message_id)
    .where(
        Delivery.id.in_(bindparam("ids", expanding=True)),
        Delivery.claimed_by == bindparam("worker"),
        Delivery.status == SENDING,
    )
)
_RECORD = Direct(
    update(Delivery)
    .where(Delivery.id == bindparam("b_id"))
    .values(
        status=bindparam("b_status"),
        due_at=bindparam("b_due_at"),
        claimed_by=None,
        errors=bindparam("b_errors"),
        updated_at=bindparam("b_now"),
        last_code=bindparam("b_code"),
        last_enhanced=bindparam("b_enhanced"),
        last_text=bindparam("b_text"),
        last_host=bindparam("b_host"),
    )
)
_STATUS = {"delivered": DELIVERED, "bounced": BOUNCED, "deferred": DEFERRED, "held": HELD}


def record_outcomes(
    db: Database, worker_id: str, results: Sequence[Result], now: datetime, retry: Retry
) -> None:
    """Write every result in one transaction; a delivery no longer ours (its claim ran out
    and another worker took it) is left alone, and a delivery given twice is recorded once.

    Direct statements (one UPDATE executed for every row, one INSERT of the events): the
    ORM's unit of work cost more than the statements. A bounce's suppression is written
    through the ORM session, joined to the same transaction.
    """
    if not results:
        return
    with db.unit_of_work() as work:
        ids = sorted({r.delivery_id for r in results})
        ours = {
            row["delivery_id"]: SimpleNamespace(**row)
            for row in _OURS.mappings(work.conn, {"ids": ids, "worker": worker_id})
        }
        changes: list[dict[str, Any]] = []
        written: list[dict[str, Any]] = []
        for r in results:
            d = ours.pop(r.delivery_id, None)
            if d is None:
                continue
            kind, due_at, text, errors = r.status, None, r.text, d.errors
            details: dict[str, Any] = {"host": r.host, "attempt": d.attempts}
            enhanced = r.enhanced
            if kind == "error":
                errors += 1
                details["error"] = r.text
                enhanced = enhanced or ERROR_CODE
                if errors >= HOLD_AFTER:
                    kind = "held"
                    text = f"Held after {errors} unexpected failures: {r.text}"
                else:
                    kind = "deferred"
                    text = f"Unexpected failure: {r.text}"
            if kind == "deferred":
                if (now - d.created_at).total_seconds() >= retry.max_age:
                    kind = "failed"
                    text = f"Gave up after {d.attempts} attempts: {text}"
                else:
                    delay = retry_delay(d.attempts, retry.base, retry.cap)
                    due_at = now + timedelta(seconds=delay)
            changes.append(
                {
                    "b_id": d.delivery_id,
                    "b_status": _STATUS.get(kind, FAILED),
                    "b_due_at": due_at,
                    "b_errors": errors,
                    "b_now": now,
                    "b_code": r.code,
                    "b_enhanced": enhanced,
                    "b_text": text,
                    "b_host": r.host,
                }
            )
            if kind == "bounced":
                hard_bounce(
                    work.session,
                    written,
                    d,
                    d.delivery_id,
                    d.user_id,
                    d.recipient,
                    now,
                    code=r.code,
                    enhanced=enhanced,
                    text=text,
                    details=details,
                )
                continue
            written.append(
                events.event_values(
                    kind,
                    d,  # its message's columns too
                    d.delivery_id,
                    d.recipient,
                    now,
                    code=r.code,
                    enhanced=enhanced,
                    text=text,
                    details=details,
                )
            )
        if changes:
            _RECORD.execute(work.conn, changes)
            events.write(work.conn, written)
