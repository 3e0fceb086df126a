"""Infobip's email reports (each handed out once) and logs (the last 48 hours, any number of
times) of the messages sent over Infobip's API.

The transport (app/http/infobip_reports.py) reads the query into a ``ReportQuery`` or a
``LogQuery`` and renders the ``InfobipReport`` values these commands answer with. A caller
sees its own messages only: a sender key those of its domain, a user key or password the
user's.

A one-time report is claimed atomically: the candidates are read, then locked (``FOR
UPDATE SKIP LOCKED`` on PostgreSQL and MariaDB; on SQLite the write transaction holds the
database's lock), then marked with ``UPDATE ... SET reported_at WHERE reported_at IS NULL``;
only rows that update took are answered (``RETURNING`` on PostgreSQL and SQLite; on
MariaDB the locked rows are those updated, and a count that differs undoes the claim).
"""

from __future__ import annotations

import json
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from typing import Any, cast

from marshmallow import fields
from sqlalchemy import CursorResult, Row, func, or_, select, update
from sqlalchemy.orm import Session

from commands.context import Context
from commands.registry import Auth, command
from commands.schema import RawFieldsSchema
from commands.sending.infobip import InfobipRefused
from commands.sending.infobip_status import (
    ENDED,
    FINAL_EVENTS,
    GENERAL_STATUSES,
    Outcome,
    aware,
    infobip_outcome,
)
from models import Delivery, Event, InfobipMessage, Message

LOG_HOURS = 48  # how far back the logs reach
DEFAULT_LIMIT = 50
MAX_LIMIT = 1000
_CHUNK = 500


@dataclass(frozen=True)
class ReportQuery:
    """GET /email/1/reports and /email/4/reports: its filters, and what was wrong with them."""

    bulk_id: str | None = None
    message_id: str | None = None
    campaign_reference_id: str | None = None
    application_id: str | None = None
    entity_id: str | None = None
    limit: int = DEFAULT_LIMIT
    problems: dict[str, list[str]] = field(default_factory=dict)


@dataclass(frozen=True)
class LogQuery:
    """GET /email/1/logs and /email/4/logs: its filters, and what was wrong with them."""

    message_ids: tuple[str, ...] = ()
    bulk_ids: tuple[str, ...] = ()
    sender: str | None = None
    to: str | None = None
    campaign_reference_id: str | None = None
    application_id: str | None = None
    entity_id: str | None = None
    general_status: str | None = None
    sent_since: datetime | None = None
    sent_until: datetime | None = None
    limit: int = DEFAULT_LIMIT
    problems: dict[str, list[str]] = field(default_factory=dict)


@dataclass(frozen=True)
class InfobipReport:
    """A message to one recipient as Infobip reports it."""

    delivery_id: int
    bulk_id: str
    message_id: str
    to: str
    sender: str
    subject: str
    sent_at: datetime
    done_at: datetime | None
    outcome: Outcome
    attempts: int
    callback_data: str | None
    campaign_reference_id: str | None


@dataclass(frozen=True)
class Scope:
    """Whose messages a caller sees: the user's, or one domain's of the user."""

    user_id: int
    domain_id: int | None = None


def _scope(ctx: Context) -> Scope:
    if ctx.sender is not None:
        return Scope(ctx.sender.user_id, ctx.sender.domain_id)
    return Scope(ctx.current_user.id)


def _mine(scope: Scope) -> list[Any]:
    where: list[Any] = [InfobipMessage.user_id == scope.user_id, Delivery.user_id == scope.user_id]
    if scope.domain_id is not None:
        where.append(Delivery.domain_id == scope.domain_id)
    return where


# A report pushed to its notifyUrl is not also handed out by GET /email/1/reports.
NOT_PUSHED = or_(InfobipMessage.notify_url.is_(None), InfobipMessage.notify.is_(False))


def claim_reports(ctx: Context, query: ReportQuery) -> list[InfobipReport]:
    """The reports of ended deliveries not yet handed out, now marked as handed out."""
    scope = _scope(ctx)
    s = ctx.db
    ib = InfobipMessage
    where = [*_mine(scope), ib.reported_at.is_(None), Delivery.status.in_(ENDED), NOT_PUSHED]
    if query.bulk_id is not None:
        where.append(ib.bulk_id == query.bulk_id)
    if query.message_id is not None:
        where.append(ib.message_id == query.message_id)
    for column, value in (
        (ib.campaign_reference_id, query.campaign_reference_id),
        (ib.application_id, query.application_id),
        (ib.entity_id, query.entity_id),
    ):
        if value is not None:
            where.append(column == value)
    candidates = list(
        s.scalars(
            select(ib.delivery_id)
            .join(Delivery, Delivery.id == ib.delivery_id)
            .where(*where)
            .order_by(ib.delivery_id)
            .limit(query.limit)
        )
    )
    if not candidates:
        return []
    backend = ctx.database.backend if ctx.database is not None else "sqlite"
    lock = select(ib.delivery_id).where(ib.delivery_id.in_(candidates), ib.reported_at.is_(None))
    if backend != "sqlite":
        lock = lock.with_for_update(skip_locked=True)
    locked = list(s.scalars(lock.order_by(ib.delivery_id)))
    if not locked:
        return []
    mark = (
        update(ib)
        .where(ib.delivery_id.in_(locked), ib.reported_at.is_(None))
        .values(reported_at=ctx.now)
    )
    if backend in ("postgresql", "sqlite"):
        taken = set(s.scalars(mark.returning(ib.delivery_id)))
    else:
        result = cast(CursorResult[Any], s.execute(mark))
        if result.rowcount != len(locked):  # pragma: no cover - the rows were locked
            raise RuntimeError("reports changed while locked")
        taken = set(locked)
    return [r for r in _reports(s, taken) if r.delivery_id in taken]


def read_logs(ctx: Context, query: LogQuery) -> list[InfobipReport]:
    """The messages sent in the last 48 hours that match ``query``, newest first."""
    scope = _scope(ctx)
    ib = InfobipMessage
    since = ctx.now - timedelta(hours=LOG_HOURS)
    if query.sent_since is not None:
        since = max(since, query.sent_since)
    where = [*_mine(scope), ib.created_at >= since]
    if query.sent_until is not None:
        where.append(ib.created_at <= query.sent_until)
    if query.message_ids:
        where.append(ib.message_id.in_(query.message_ids))
    if query.bulk_ids:
        where.append(ib.bulk_id.in_(query.bulk_ids))
    if query.to is not None:
        where.append(func.lower(Delivery.recipient) == query.to.lower())
    if query.sender is not None:
        where.append(func.lower(Message.from_email) == query.sender.lower())
    for column, value in (
        (ib.campaign_reference_id, query.campaign_reference_id),
        (ib.application_id, query.application_id),
        (ib.entity_id, query.entity_id),
    ):
        if value is not None:
            where.append(column == value)
    if query.general_status is not None:
        where.append(Delivery.status.in_(GENERAL_STATUSES[query.general_status]))
    found: list[InfobipReport] = []
    s = ctx.db
    page = select(ib.delivery_id).join(Delivery, Delivery.id == ib.delivery_id)
    if query.sender is not None:
        page = page.join(Message, Message.id == Delivery.message_id)
    page = page.where(*where).order_by(ib.created_at.desc(), ib.delivery_id.desc())
    size, offset = max(query.limit, 100), 0
    while len(found) < query.limit:
        ids = list(s.scalars(page.limit(size).offset(offset)))
        # The general status is Infobip's view of the outcome: checked on each report.
        for report in _reports(s, ids):
            wanted = query.general_status
            if wanted is None or report.outcome.status["groupName"] == wanted:
                found.append(report)
        if len(ids) < size:
            break
        offset += size
    found.sort(key=lambda r: (aware(r.sent_at), r.delivery_id), reverse=True)
    return found[: query.limit]


def _reports(s: Session, delivery_ids: Iterable[int]) -> list[InfobipReport]:
    """The reports of these deliveries, in the order of their ids (one read each)."""
    ids = sorted(set(delivery_ids))
    if not ids:
        return []
    rows: list[Row[InfobipMessage, Delivery, str, str]] = []
    for start in range(0, len(ids), _CHUNK):
        rows += s.execute(
            select(InfobipMessage, Delivery, Message.from_email, Message.subject)
            .join(Delivery, Delivery.id == InfobipMessage.delivery_id)
            .join(Message, Message.id == Delivery.message_id)
            .where(InfobipMessage.delivery_id.in_(ids[start : start + _CHUNK]))
            .order_by(InfobipMessage.delivery_id)
        ).all()
    finals = _final_events(s, [(r[1].message_id, r[1].id) for r in rows])
    reports = []
    for ib, d, sender, subject in rows:
        event = finals.get(d.id)
        if event is not None:
            stored = json.loads(event.details or "{}")
            outcome = infobip_outcome(
                event.type,
                event.smtp_code,
                event.enhanced_code,
                stored.get("bounce_class"),
                event.smtp_text,
            )
            done_at: datetime | None = event.created_at
        else:
            outcome = infobip_outcome(d.status, d.last_code, d.last_enhanced, None, d.last_text)
            done_at = d.updated_at if d.status in ENDED else None
        reports.append(
            InfobipReport(
                delivery_id=d.id,
                bulk_id=ib.bulk_id,
                message_id=ib.message_id,
                to=d.recipient,
                sender=sender,
                subject=subject,
                sent_at=ib.created_at,
                done_at=done_at,
                outcome=outcome,
                attempts=d.attempts,
                callback_data=ib.callback_data,
                campaign_reference_id=ib.campaign_reference_id,
            )
        )
    return reports


def _final_events(s: Session, pairs: Sequence[tuple[str, int]]) -> dict[int, Event]:
    """The last event that ended each delivery (by delivery id), if it has one."""
    found: dict[int, Event] = {}
    for start in range(0, len(pairs), _CHUNK):
        chunk = pairs[start : start + _CHUNK]
        for event in s.scalars(
            select(Event)
            .where(
                Event.message_id.in_({m for m, _ in chunk}),
                Event.delivery_id.in_({d for _, d in chunk}),
                Event.type.in_(FINAL_EVENTS),
            )
            .order_by(Event.id)
        ):
            if event.delivery_id is not None:
                found[event.delivery_id] = event  # the later one wins
    return found


class ReportsSchema(RawFieldsSchema):
    """infobip.Reports and infobip.Logs (and their AsUser forms): the query as read."""

    Query = fields.Raw()


def _reports_of(ctx: Context, params: dict[str, Any]) -> dict[str, Any]:
    query = params.get("Query")
    if not isinstance(query, ReportQuery):
        raise InfobipRefused({"request": ["unreadable"]})
    if query.problems:
        raise InfobipRefused(query.problems)
    return {"Reports": claim_reports(ctx, query)}


def _logs_of(ctx: Context, params: dict[str, Any]) -> dict[str, Any]:
    query = params.get("Query")
    if not isinstance(query, LogQuery):
        raise InfobipRefused({"request": ["unreadable"]})
    if query.problems:
        raise InfobipRefused(query.problems)
    return {"Reports": read_logs(ctx, query)}


@command("infobip.Reports", schema=ReportsSchema, auth=Auth.SENDER, transport="v1")
def infobip_reports(ctx: Context, **params: Any) -> dict[str, Any]:
    return _reports_of(ctx, params)


@command("infobip.ReportsAsUser", schema=ReportsSchema, auth=Auth.USER, transport="v1")
def infobip_reports_as_user(ctx: Context, **params: Any) -> dict[str, Any]:
    return _reports_of(ctx, params)


@command("infobip.Logs", schema=ReportsSchema, auth=Auth.SENDER, transport="v1", readonly=True)
def infobip_logs(ctx: Context, **params: Any) -> dict[str, Any]:
    return _logs_of(ctx, params)


@command("infobip.LogsAsUser", schema=ReportsSchema, auth=Auth.USER, transport="v1", readonly=True)
def infobip_logs_as_user(ctx: Context, **params: Any) -> dict[str, Any]:
    return _logs_of(ctx, params)
