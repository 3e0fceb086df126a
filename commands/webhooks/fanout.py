"""The webhook fan-out: new events in the event log become webhook deliveries, in id order.

The event log is the outbox: writing an event costs nothing more. One pass, in one
transaction, reads the events after ``WebhookCursor.last_event_id``, creates a
``WebhookDelivery`` for each active webhook of the event's domain that subscribed to its
type and was added before it happened, and moves the cursor on. While no webhook is
active, a pass only moves the cursor to the newest event, reading none.

Ids can become visible out of order: a transaction that took a lower id may commit after
one that took a higher id, and on PostgreSQL and MariaDB a rollback leaves ids unused. An
id the cursor passes without having seen it is kept in ``WebhookCursor.gaps`` and looked
for again on every pass until ``webhooks.gap_expiry`` seconds have gone by.
"""

from __future__ import annotations

import json
import logging
from collections import defaultdict
from collections.abc import Iterable
from datetime import datetime
from typing import Any

from sqlalchemy import Row, func, insert, select
from sqlalchemy.exc import IntegrityError
from sqlalchemy.orm import Session

from commands.webhooks.handlers import event_name
from commands.webhooks.infobip import push_rows
from commands.webhooks.payload import WEBHOOK_EVENTS
from core.settings import Config
from models import (
    Database,
    Domain,
    Event,
    InfobipMessage,
    Webhook,
    WebhookCursor,
    WebhookDelivery,
)
from models.webhooks import PENDING

log = logging.getLogger("postern.webhooks")

CURSOR_ID = 1
# At most this many missing ids are remembered: those nearest the cursor. Ids far below
# the newest were burnt long ago (a sequence jump, a large rollback), not taken by a
# transaction still running.
MAX_GAPS = 10_000
_CHUNK = 500  # ids per IN (...) list

# An event as the fan-out reads it: _COLUMNS.
EventRow = Row[int, str, str, datetime, int, int]
_COLUMNS = (
    Event.id,
    Event.uid,
    Event.type,
    Event.created_at,
    Event.user_id,
    Event.domain_id,
)


def fan_out(db: Database, config: Config, now: datetime) -> int:
    """One pass; the number of new events read (``webhooks.batch_size`` means: call again).

    Only one pass runs at a time: the cursor row is locked (``FOR UPDATE SKIP LOCKED`` on
    PostgreSQL and MariaDB, where a pass that finds it locked returns 0 at once; on SQLite
    the transaction holds the database's write lock from its first statement).
    """
    with db.transaction() as s:
        cursor = _locked_cursor(s, db.backend)
        if cursor is None:
            return 0
        # With no active webhook there is nothing to fan out: the cursor moves past every
        # event committed so far, without reading them. The newest id is read first: the
        # events up to it, and those still uncommitted below it, were created before that
        # read; a webhook not yet committed when the next statement looks is one no pass
        # would have seen for them either, as a pass fans out to the webhooks it sees.
        newest = s.scalar(select(func.max(Event.id)))
        # Infobip's pushes (commands/webhooks/infobip.py) need no webhook: while no message
        # was sent over Infobip's API either, there is nothing to fan out.
        if (
            s.scalar(select(Webhook.id).where(Webhook.active.is_(True)).limit(1)) is None
            and s.scalar(select(InfobipMessage.delivery_id).limit(1)) is None
        ):
            cursor.last_event_id = max(cursor.last_event_id, newest or 0)
            cursor.gaps = "{}"
            return 0
        stamp = now.timestamp()
        gaps = {
            int(i): seen
            for i, seen in json.loads(cursor.gaps or "{}").items()
            if stamp - seen <= config.webhooks.gap_expiry
        }
        late = _events_by_id(s, gaps)
        for row in late:
            del gaps[row.id]
        last = cursor.last_event_id
        fresh = list(
            s.execute(
                select(*_COLUMNS)
                .where(Event.id > last)
                .order_by(Event.id)
                .limit(config.webhooks.batch_size)
            )
        )
        if fresh:
            top = fresh[-1].id
            seen = {row.id for row in fresh}
            for missing in range(max(last + 1, top - MAX_GAPS), top):
                if missing not in seen:
                    gaps[missing] = stamp
            cursor.last_event_id = top
        if len(gaps) > MAX_GAPS:
            log.warning("webhook fan-out forgets %d missing event ids", len(gaps) - MAX_GAPS)
            gaps = dict(sorted(gaps.items())[-MAX_GAPS:])
        cursor.gaps = json.dumps({str(i): seen for i, seen in sorted(gaps.items())})
        created = _create_deliveries(s, late + fresh, now)
    if created or late:
        log.info(
            "webhook deliveries created",
            extra={"count": created, "events": len(fresh), "late_events": len(late)},
        )
    return len(fresh)


def _locked_cursor(s: Session, backend: str) -> WebhookCursor | None:
    """The cursor row, locked for this transaction; made on first use; None if busy."""
    mine = WebhookCursor.id == CURSOR_ID
    if backend == "sqlite":
        cursor = s.scalar(select(WebhookCursor).where(mine))
    else:
        cursor = s.scalar(select(WebhookCursor).where(mine).with_for_update(skip_locked=True))
        if cursor is None and s.scalar(select(WebhookCursor.id).where(mine)) is not None:
            return None  # another pass holds it
    if cursor is not None:
        return cursor
    try:
        with s.begin_nested():  # made now; another process may be making it too
            cursor = WebhookCursor(id=CURSOR_ID, last_event_id=0, gaps="{}")
            s.add(cursor)
    except IntegrityError:
        return None
    return cursor


def _events_by_id(s: Session, ids: Iterable[int]) -> list[EventRow]:
    wanted = sorted(ids)
    found: list[EventRow] = []
    for start in range(0, len(wanted), _CHUNK):
        chunk = wanted[start : start + _CHUNK]
        found += s.execute(select(*_COLUMNS).where(Event.id.in_(chunk)).order_by(Event.id))
    return found


def _create_deliveries(s: Session, events: list[EventRow], now: datetime) -> int:
    """A pending delivery per event and matching webhook, and per push it calls for; the
    number created."""
    pushes = _new_pushes(s, push_rows(s, events, now))
    if pushes:
        s.execute(insert(WebhookDelivery), pushes)
    relevant = [e for e in events if e.type in WEBHOOK_EVENTS]
    if not relevant:
        return len(pushes)
    # A webhook hears of the events of its domain and of the user who owns that domain: an
    # event names both, and a domain id alone is no proof of whose the event is.
    hooks: dict[tuple[int, int], list[Webhook]] = defaultdict(list)
    for hook, owner in s.execute(
        select(Webhook, Domain.user_id)
        .join(Domain, Domain.id == Webhook.domain_id)
        .where(Webhook.domain_id.in_({e.domain_id for e in relevant}), Webhook.active.is_(True))
        .order_by(Webhook.id)
    ):
        hooks[hook.domain_id, owner].append(hook)
    rows = []
    for e in relevant:
        for hook in hooks.get((e.domain_id, e.user_id), ()):
            name = event_name(hook.events, e.type, hook.format)
            if name is not None and e.created_at >= hook.created_at:
                rows.append(
                    {
                        "webhook_id": hook.id,
                        "user_id": e.user_id,
                        "domain_id": e.domain_id,
                        "event_id": e.id,
                        "event_uid": e.uid,
                        "event_name": name,
                        "url": hook.url,
                        "status": PENDING,
                        "due_at": now,
                        "attempts": 0,
                        "created_at": now,
                        "updated_at": now,
                    }
                )
    if not rows:
        return len(pushes)
    # Under the cursor lock an event is fanned out once; this guards the unique key anyway,
    # so that a stray duplicate could never stop the fan-out for good.
    hook_ids = {r["webhook_id"] for r in rows}
    event_ids = sorted({r["event_id"] for r in rows})
    existing: set[tuple[int | None, int]] = set()
    for start in range(0, len(event_ids), _CHUNK):
        existing.update(
            (hook_id, event_id)
            for hook_id, event_id in s.execute(
                select(WebhookDelivery.webhook_id, WebhookDelivery.event_id).where(
                    WebhookDelivery.webhook_id.in_(hook_ids),
                    WebhookDelivery.event_id.in_(event_ids[start : start + _CHUNK]),
                )
            )
        )
    rows = [r for r in rows if (r["webhook_id"], r["event_id"]) not in existing]
    if rows:
        s.execute(insert(WebhookDelivery), rows)
    return len(rows) + len(pushes)


def _new_pushes(s: Session, rows: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """``rows`` but those made before (as ``_create_deliveries`` guards the unique key,
    which a push, of no webhook, is not held to)."""
    if not rows:
        return []
    event_ids = sorted({r["event_id"] for r in rows})
    made: set[tuple[int, str]] = set()
    for start in range(0, len(event_ids), _CHUNK):
        made.update(
            (event_id, name)
            for event_id, name in s.execute(
                select(WebhookDelivery.event_id, WebhookDelivery.event_name).where(
                    WebhookDelivery.webhook_id.is_(None),
                    WebhookDelivery.event_id.in_(event_ids[start : start + _CHUNK]),
                )
            )
        )
    return [r for r in rows if (r["event_id"], r["event_name"]) not in made]
