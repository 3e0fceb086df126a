"""The delivery queue: claiming due deliveries, failing a domain's, releasing held ones."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any, cast

from sqlalchemy import CursorResult, bindparam, exists, or_, select, update
from sqlalchemy.orm import Session

from commands.events import writer as events
from models import Database, Delivery, Domain, Message, User
from models.direct import Direct
from models.messages import FAILED, HELD, QUEUED, SENDING


@dataclass(frozen=True)
class Claimed:
    """A delivery a worker has claimed: what building and sending it start from."""

    delivery_id: int
    token: str
    recipient: str
    recipient_domain: str
    message_id: str
    domain_id: int
    user_id: int
    created_at: datetime


# Claiming: the due deliveries' ids (a statement per backend and batch size: on PostgreSQL
# and MariaDB it skips rows locked by another worker), then these two.
_DUE: dict[tuple[str, int], Direct] = {}
_CLAIM = Direct(
    update(Delivery)
    .where(Delivery.id.in_(bindparam("ids", expanding=True)))
    .values(
        status=SENDING,
        claimed_by=bindparam("worker"),
        attempts=Delivery.attempts + 1,
        due_at=bindparam("until"),
        updated_at=bindparam("now"),
    )
)
_CLAIMED = Direct(
    select(
        Delivery.id.label("delivery_id"),
        Delivery.token,
        Delivery.recipient,
        Delivery.recipient_domain,
        Delivery.message_id,
        Delivery.domain_id,
        Delivery.user_id,
        Delivery.created_at,
    ).where(Delivery.id.in_(bindparam("ids", expanding=True)))
)


def _due(db: Database, limit: int) -> Direct:
    key = (db.backend, limit)
    due = _DUE.get(key)
    if due is None:
        query = select(Delivery.id).where(
            Delivery.due_at <= bindparam("now"),
            ~exists().where(User.id == Delivery.user_id, User.suspended),
            ~exists().where(Domain.id == Delivery.domain_id, Domain.suspended),
        )
        due = _DUE[key] = Direct(db.skip_locked(query.order_by(Delivery.due_at).limit(limit)))
    return due


def claim_batch(
    db: Database, worker_id: str, limit: int, now: datetime, claim_timeout: float
) -> list[Claimed]:
    """Take up to ``limit`` due deliveries for ``worker_id``; nobody else takes them until the
    claim ends, ``claim_timeout`` seconds from ``now``.

    PostgreSQL and MariaDB skip rows another worker has locked; SQLite's BEGIN IMMEDIATE
    makes the claim exclusive. A claim moves due_at forward by the claim timeout, so the
    deliveries of a worker that died are taken up again after it.

    The deliveries of a suspended user or domain are not claimed: they stay queued, due,
    and go out once it is enabled again. The suspension is read in the claiming
    transaction, so a delivery claimed after the suspension commits is never one of them
    (one claimed before it, already in a worker's hands, goes on).
    """
    with db.unit_of_work() as work:
        ids = [row[0] for row in _due(db, limit).all(work.conn, {"now": now})]
        if not ids:
            return []
        until = now + timedelta(seconds=claim_timeout)
        _CLAIM.execute(work.conn, [{"ids": ids, "worker": worker_id, "until": until, "now": now}])
        rows = _CLAIMED.mappings(work.conn, {"ids": ids})
    return [Claimed(**row) for row in rows]


# Deliveries failed per transaction by ``fail_pending_in_batches``.
CLEAR_BATCH = 1000


def fail_pending(
    db: Session,
    domain_id: int,
    user_id: int,
    reason: str,
    now: datetime,
    *,
    limit: int | None = None,
) -> int:
    """Fail every delivery of the user's domain not yet sent, held ones too (one in the
    worker's hands goes on), or the first ``limit`` of them by id; the number failed."""
    query = (
        select(Delivery, Message)
        .join(Message, Message.id == Delivery.message_id)
        .where(
            Delivery.domain_id == domain_id,
            Delivery.user_id == user_id,
            or_(
                (Delivery.due_at.is_not(None)) & (Delivery.status != SENDING),
                Delivery.status == HELD,
            ),
        )
    )
    if limit is not None:
        query = query.order_by(Delivery.id).limit(limit)
    rows = db.execute(query).all()
    written = []
    for delivery, message in rows:
        delivery.status = FAILED
        delivery.due_at = None
        delivery.last_text = reason
        delivery.updated_at = now
        written.append(
            events.event_values(
                events.FAILED, message, delivery.id, delivery.recipient, now, text=reason
            )
        )
    events.write(db.connection(), written)
    return len(rows)


def fail_pending_in_batches(
    db: Database,
    domain_id: int,
    user_id: int,
    reason: str,
    now: datetime,
    *,
    batch: int | None = None,
) -> int:
    """``fail_pending``, ``batch`` deliveries (``CLEAR_BATCH``) per transaction of its own,
    so that a huge queue never holds the write lock for long; the number failed. Batches
    already committed stay failed if a later one cannot be."""
    size = batch or CLEAR_BATCH
    failed = 0
    while True:
        with db.transaction() as s:
            done = fail_pending(s, domain_id, user_id, reason, now, limit=size)
        failed += done
        if done < size:
            return failed


def release_held(
    db: Session, domain_id: int, user_id: int, message_id: str | None, now: datetime
) -> int:
    """Make the user's domain's held deliveries (of one message, when given) due now, their
    count of unexpected failures started again; the number released."""
    where = [Delivery.domain_id == domain_id, Delivery.user_id == user_id, Delivery.status == HELD]
    if message_id is not None:
        where.append(Delivery.message_id == message_id)
    result = db.execute(
        update(Delivery)
        .where(*where)
        .values(status=QUEUED, due_at=now, errors=0, updated_at=now)
        .execution_options(synchronize_session=False)
    )
    released: int = cast(CursorResult[Any], result).rowcount
    return released
