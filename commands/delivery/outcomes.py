"""What became of each delivery a worker handled: its new state and its event, in one commit.

The retry rule: a temporary failure ("deferred") is retried after ``retry_delay`` (doubling
from ``delivery.retry_base`` up to ``delivery.retry_max``, with jitter) until the delivery
is ``delivery.max_age`` seconds old, then it fails. An unexpected failure ("error": the
message could not be built or signed) is retried the same way, and after ``HOLD_AFTER`` of
them the delivery is parked as ``held`` (no due time; a ``held`` event holds the error)
until EmailGateway.ReleaseHeldMessages makes it due again.

A permanent failure (a 5xx answer, or a bounce mailed back) is classified by mta/classify.py
and follows the failure rule (``apply_failure``), the same in the worker and the inbox:
``hard`` is bounced and suppressed; ``soft`` is bounced and suppressed
only after ``delivery.soft_bounce_limit`` soft bounces spanning at least
``delivery.soft_bounce_days`` days (``SoftRule``); ``block`` is failed with a ``blocked``
event and never suppressed; ``message`` is failed (a ``failed`` event), never suppressed.
A temporary (4xx) answer is retried, whatever its class.
"""

from __future__ import annotations

import json
import random
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from types import SimpleNamespace
from typing import Any

from sqlalchemy import bindparam, select, update
from sqlalchemy.orm import Session

from commands.events import writer as events
from commands.suppression import suppress_bounce, suppress_soft_bounces
from models import Database, Delivery, Event, Message
from models.direct import Direct
from models.messages import BOUNCED, DEFERRED, DELIVERED, FAILED, HELD, SENDING
from mta.classify import BLOCK, HARD, SOFT, classify

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
    tls: bool = False  # the attempt went over TLS
    seconds: float | None = None  # how long the SMTP transaction took


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


@dataclass(frozen=True)
class SoftRule:
    """When soft bounces suppress an address: ``limit`` of them (this one included) within
    the last ``window_days()`` days, the first at least ``days`` days before the last
    (``delivery.soft_bounce_limit`` and ``delivery.soft_bounce_days``)."""

    limit: int = 3
    days: int = 3

    def window_days(self) -> int:
        return max(SOFT_WINDOW_DAYS, 2 * self.days)


SOFT_WINDOW_DAYS = 30  # soft bounces older than this (or twice soft_bounce_days) are forgotten


def _soft_bounces_before(
    db: Session, user_id: int, recipient: str, since: datetime
) -> list[datetime]:
    """When the address soft-bounced (``bounced`` events of class soft) since ``since``."""
    rows = db.execute(
        select(Event.created_at, Event.details).where(
            Event.user_id == user_id,
            Event.recipient_lower == recipient.lower(),
            Event.type == events.BOUNCED,
            Event.created_at >= since,
        )
    ).all()
    out = []
    for created_at, details in rows:
        try:
            klass = json.loads(details or "{}").get("bounce_class")
        except (ValueError, AttributeError):
            continue
        if klass == SOFT:
            out.append(created_at)
    return out


def apply_failure(
    db: Session,
    written: list[dict[str, Any]],
    message: events.MessageColumns,
    delivery_id: int,
    user_id: int,
    recipient: str,
    now: datetime,
    *,
    klass: str,
    code: int | None,
    enhanced: str | None,
    text: str | None,
    details: dict[str, Any],
    soft: SoftRule,
) -> str:
    """The failure rule, the same for an MX host's 5xx and a bounce mailed back: the event of
    a permanent failure of class ``klass`` (added to ``written``), the suppression it calls
    for, and the delivery's new status (BOUNCED or FAILED). ``bounce_class`` goes in the
    event's details."""
    details = {**details, "bounce_class": klass}
    kind = {HARD: events.BOUNCED, SOFT: events.BOUNCED, BLOCK: events.BLOCKED}.get(
        klass, events.FAILED
    )
    written.append(
        events.event_values(
            kind,
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
    if klass == HARD:  # the address is dead: suppressed for all the user's domains
        suppress_bounce(db, user_id, recipient, code, enhanced, text, now)
        return BOUNCED
    if klass != SOFT:
        return FAILED
    since = now - timedelta(days=soft.window_days())
    times = _soft_bounces_before(db, user_id, recipient, since)
    # ...and those not written yet (this one, and the batch's before it).
    times += [
        row["created_at"]
        for row in written
        if row["type"] == events.BOUNCED
        and row["user_id"] == user_id
        and row["recipient_lower"] == recipient.lower()
        and json.loads(row["details"]).get("bounce_class") == SOFT
    ]
    first = min(_aware(t) for t in times)
    if len(times) >= soft.limit and (_aware(now) - first) >= timedelta(days=soft.days):
        last = f"{code or ''} {enhanced or ''} {text or ''}".strip()
        suppress_soft_bounces(db, user_id, recipient, len(times), first, last, now)
    return BOUNCED


def _aware(moment: datetime) -> datetime:
    """``moment`` with a time zone (UTC when the database gave none back)."""
    return moment if moment.tzinfo else moment.replace(tzinfo=UTC)


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
    db: Database,
    worker_id: str,
    results: Sequence[Result],
    now: datetime,
    retry: Retry,
    soft: SoftRule,
) -> dict[str, int]:
    """Write every result in one transaction; a delivery no longer ours (its claim ran out
    and another worker took it) is left alone, and a delivery given twice is recorded once.
    Returns how many deliveries got each new status (delivered, deferred, bounced, failed,
    held), once committed.

    Direct statements (one UPDATE executed for every row, one INSERT of the events): the
    ORM's unit of work cost more than the statements. A bounce's suppression is written
    through the ORM session, joined to the same transaction.
    """
    told: dict[str, int] = {}
    if not results:
        return told
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
            if r.seconds is not None:  # an SMTP transaction was made
                details["tls"], details["seconds"] = r.tls, r.seconds
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
            if r.status in ("deferred", "bounced") and (r.code is not None or r.enhanced):
                details["bounce_class"] = classify(r.enhanced, r.code, r.text)
            if kind == "deferred":
                if (now - d.created_at).total_seconds() >= retry.max_age:
                    kind = "failed"
                    text = f"Gave up after {d.attempts} attempts: {text}"
                else:
                    delay = retry_delay(d.attempts, retry.base, retry.cap)
                    due_at = now + timedelta(seconds=delay)
            status = _STATUS.get(kind, FAILED)
            if kind == "bounced":
                status = apply_failure(
                    work.session,
                    written,
                    d,
                    d.delivery_id,
                    d.user_id,
                    d.recipient,
                    now,
                    klass=details.get("bounce_class") or HARD,
                    code=r.code,
                    enhanced=enhanced,
                    text=text,
                    details=details,
                    soft=soft,
                )
            told[status] = told.get(status, 0) + 1
            changes.append(
                {
                    "b_id": d.delivery_id,
                    "b_status": status,
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
                continue  # its event is written by apply_failure
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
    return told
