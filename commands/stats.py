"""Statistics over the event log: EmailGateway.AggrEvents, DomainStats and DailySeries."""

from __future__ import annotations

import json
from collections import Counter
from datetime import UTC, date, datetime, timedelta
from typing import Any

from marshmallow import ValidationError, fields, validate
from sqlalchemy import ColumnElement, distinct, func, select
from sqlalchemy.orm import Session

from models import Event

from .context import Context
from .domains import domain_id_param, owned_domain
from .errors import CommandError
from .event_log import INVALID_EVENT, DateArg, EventTypes, Span, public_type
from .registry import Auth, command
from .schema import CommandSchema, param

DEFAULT_DAYS = 30
MAX_SERIES_DAYS = 366
MAX_TAGS = 100

# Counted event types -> their key in Stats; distinct deliveries -> the Unique keys.
COUNTED = {
    "accepted": "Sent",
    "delivered": "Delivered",
    "bounced": "Bounced",
    "opened": "Opened",
    "clicked": "Clicked",
    "unsubscribed": "Unsubscribed",
    "complained": "Complained",
}
UNIQUE = {"opened": "UniqueOpened", "clicked": "UniqueClicked"}
STAT_KEYS = (*COUNTED.values(), *UNIQUE.values())


def stat_period(
    start: Span | None, end: Span | None, today: date, end_code: int
) -> tuple[datetime, datetime]:
    """[from, to): the dates given (both inclusive), by default the last 30 days with today."""
    tomorrow = datetime(today.year, today.month, today.day, tzinfo=UTC) + timedelta(days=1)
    high = end.end if end else tomorrow
    low = start.start if start else high - timedelta(days=DEFAULT_DAYS)
    if high <= low:
        raise CommandError(end_code, "EndDate is before StartDate")
    return low, high


def _where(user_id: int, domain_id: int, low: datetime, high: datetime) -> list[Any]:
    return [
        Event.domain_id == domain_id,
        Event.user_id == user_id,
        Event.created_at >= low,
        Event.created_at < high,
    ]


def _zero() -> dict[str, int]:
    return dict.fromkeys(STAT_KEYS, 0)


def _counts(db: Session, where: list[Any], *group: ColumnElement) -> dict[tuple, dict[str, int]]:
    """Stats per value of ``group`` (every key zero where nothing happened)."""
    out: dict[tuple, dict[str, int]] = {}
    totals = select(*group, Event.type, func.count()).where(*where, Event.type.in_(list(COUNTED)))
    uniques = select(*group, Event.type, func.count(distinct(Event.delivery_id))).where(
        *where, Event.type.in_(list(UNIQUE))
    )
    for names, query in ((COUNTED, totals), (UNIQUE, uniques)):
        for *key, kind, n in db.execute(query.group_by(*group, Event.type)):
            out.setdefault(tuple(key), _zero())[names[kind]] += n
    return out


def _split_tags(by_tags: dict[tuple, dict[str, int]], limit: int) -> dict[str, dict[str, int]]:
    """Per-tag figures from figures per tag list (a delivery has one list, so uniques add up)."""
    per_tag: dict[str, dict[str, int]] = {}
    for (tags_text,), figures in by_tags.items():
        try:
            tags = json.loads(tags_text)
        except ValueError:
            continue
        for tag in set(tags) if isinstance(tags, list) else ():
            into = per_tag.setdefault(str(tag), _zero())
            for key, n in figures.items():
                into[key] += n
    ranked = sorted(per_tag.items(), key=lambda kv: (-sum(kv[1].values()), kv[0]))
    return dict(ranked[:limit])


def _bucket(db: Session, unit: str) -> ColumnElement:
    """created_at truncated to its UTC day or hour, in this database's own way."""
    column = Event.created_at
    dialect = db.get_bind().dialect.name
    if dialect == "postgresql":
        return func.date_trunc(unit, column)
    if dialect in ("mysql", "mariadb"):
        return func.date_format(column, "%Y-%m-%d" if unit == "day" else "%Y-%m-%d %H:00:00")
    return func.substr(column, 1, 10 if unit == "day" else 13)  # SQLite keeps ISO text


def _bucket_key(value: Any, unit: str) -> str:
    if isinstance(value, datetime):
        return value.strftime("%Y-%m-%d" if unit == "day" else "%Y-%m-%d %H:00:00")
    text = str(value)
    return text[:10] if unit == "day" else text[:13] + ":00:00"


def _recipient_domain(db: Session) -> ColumnElement:
    """The part of the recipient after its last @."""
    column = Event.recipient_lower
    dialect = db.get_bind().dialect.name
    if dialect == "postgresql":
        return func.reverse(func.split_part(func.reverse(column), "@", 1))
    if dialect in ("mysql", "mariadb"):
        return func.substring_index(column, "@", -1)
    # SQLite has no reverse: strip everything up to the last @ (rtrim of the non-@ characters).
    return func.replace(column, func.rtrim(column, func.replace(column, "@", "")), "")


class Field(fields.Field):
    """AggregatedField: eventType, recipientDomain, tag, day or hour (a few spellings)."""

    NAMES = {
        "eventtype": "eventType",
        "event_type": "eventType",
        "event": "eventType",
        "type": "eventType",
        "recipientdomain": "recipientDomain",
        "recipient_domain": "recipientDomain",
        "domain": "recipientDomain",
        "tag": "tag",
        "tags": "tag",
        "day": "day",
        "date": "day",
        "hour": "hour",
    }

    def _deserialize(self, value, attr, data, **kwargs) -> str:
        name = self.NAMES.get(str(value).strip().lower())
        if name is None:
            raise ValidationError("unknown field")
        return name


DOMAIN_NOT_FOUND = (2, "Failed to retrieve sender domain")


class AggrEventsSchema(CommandSchema):
    DomainID = domain_id_param((1, "Required parameter missing: DomainID"), DOMAIN_NOT_FOUND)
    StartDate = param(DateArg(), invalid=(3, "Invalid StartDate: YYYY-MM-DD"))
    EndDate = param(DateArg(), invalid=(4, "Invalid EndDate: YYYY-MM-DD"))
    AggregatedField = param(
        Field(load_default="eventType"),
        invalid=(5, "Invalid AggregatedField: eventType, recipientDomain, tag, day or hour"),
    )
    AggregateSize = param(
        fields.Integer(load_default=10, validate=validate.Range(min=1, max=1000)),
        invalid=(6, "Invalid AggregateSize: a whole number from 1 to 1000"),
    )
    types = param(EventTypes(data_key="Event"), invalid=(7, INVALID_EVENT))


@command("EmailGateway.AggrEvents", schema=AggrEventsSchema, auth=Auth.USER, readonly=True)
def aggr_events(
    ctx: Context,
    DomainID: int,
    AggregatedField: str,
    AggregateSize: int,
    StartDate: Span | None = None,
    EndDate: Span | None = None,
    types: list[str] | None = None,
) -> dict[str, Any]:
    """Event counts per type, recipient domain, tag, day or hour, largest (or latest) first."""
    domain = owned_domain(ctx, DomainID, DOMAIN_NOT_FOUND)
    low, high = stat_period(StartDate, EndDate, ctx.now.date(), 4)
    where = _where(ctx.current_user.id, domain.id, low, high)
    if types:
        where.append(Event.type.in_(types))
    size = AggregateSize
    if AggregatedField == "tag":
        totals: Counter[str] = Counter()
        query = select(Event.tags, func.count()).where(*where, Event.tags != "[]")
        for tags_text, n in ctx.db.execute(query.group_by(Event.tags)):
            try:
                tags = json.loads(tags_text)
            except ValueError:
                continue
            for tag in set(tags) if isinstance(tags, list) else ():
                totals[str(tag)] += n
        ranked = sorted(totals.items(), key=lambda kv: (-kv[1], kv[0]))[:size]
        return {"AggBuckets": [{"key": k, "doc_count": n} for k, n in ranked]}
    if AggregatedField in ("day", "hour"):
        bucket = _bucket(ctx.db, AggregatedField).label("bucket")
        rows = ctx.db.execute(
            select(bucket, func.count()).where(*where).group_by(bucket).order_by(bucket.desc())
        ).all()[:size]
        buckets = [{"key": _bucket_key(k, AggregatedField), "doc_count": n} for k, n in rows]
        return {"AggBuckets": buckets[::-1]}
    key = Event.type if AggregatedField == "eventType" else _recipient_domain(ctx.db)
    count = func.count().label("n")
    rows = ctx.db.execute(
        select(key, count).where(*where).group_by(key).order_by(count.desc(), key).limit(size)
    ).all()
    if AggregatedField == "eventType":
        return {"AggBuckets": [{"key": public_type(k), "doc_count": n} for k, n in rows]}
    return {"AggBuckets": [{"key": k, "doc_count": n} for k, n in rows]}


STATS_DOMAIN_NOT_FOUND = (2, "Unable to retrieve domain information")


class DomainStatsSchema(CommandSchema):
    DomainID = domain_id_param((1, "Required parameter missing: DomainID"), STATS_DOMAIN_NOT_FOUND)
    StartDate = param(DateArg(), invalid=(3, "Invalid StartDate: YYYY-MM-DD"))
    EndDate = param(DateArg(), invalid=(4, "Invalid EndDate: YYYY-MM-DD"))


@command("EmailGateway.DomainStats", schema=DomainStatsSchema, auth=Auth.USER, readonly=True)
def domain_stats(
    ctx: Context, DomainID: int, StartDate: Span | None = None, EndDate: Span | None = None
) -> dict[str, Any]:
    """Figures for the period, for the period as long before it, and per tag."""
    domain = owned_domain(ctx, DomainID, STATS_DOMAIN_NOT_FOUND)
    low, high = stat_period(StartDate, EndDate, ctx.now.date(), 4)
    user_id = ctx.current_user.id
    where = _where(user_id, domain.id, low, high)
    earlier = _where(user_id, domain.id, low - (high - low), low)
    by_tags = _counts(ctx.db, [*where, Event.tags != "[]"], Event.tags)
    return {
        "StartDate": low.strftime("%Y-%m-%d %H:%M:%S"),
        "EndDate": (high - timedelta(seconds=1)).strftime("%Y-%m-%d %H:%M:%S"),
        "Stats": _counts(ctx.db, where).get((), _zero()),
        "ComparisonStats": _counts(ctx.db, earlier).get((), _zero()),
        "TagStats": _split_tags(by_tags, MAX_TAGS),
    }


@command("EmailGateway.DailySeries", schema=DomainStatsSchema, auth=Auth.USER, readonly=True)
def daily_series(
    ctx: Context, DomainID: int, StartDate: Span | None = None, EndDate: Span | None = None
) -> dict[str, Any]:
    """The Stats figures day by day (UTC), every day of the period, with nothing as zeros."""
    domain = owned_domain(ctx, DomainID, STATS_DOMAIN_NOT_FOUND)
    low, high = stat_period(StartDate, EndDate, ctx.now.date(), 4)
    first, last = low.date(), (high - timedelta(microseconds=1)).date()
    if (last - first).days >= MAX_SERIES_DAYS:
        raise CommandError(5, f"The period is longer than {MAX_SERIES_DAYS} days")
    day = _bucket(ctx.db, "day").label("day")
    figures = _counts(ctx.db, _where(ctx.current_user.id, domain.id, low, high), day)
    by_day = {_bucket_key(k[0], "day"): v for k, v in figures.items()}
    series = []
    for offset in range((last - first).days + 1):
        key = (first + timedelta(days=offset)).isoformat()
        series.append({"Date": key, **by_day.get(key, _zero())})
    return {"Series": series}
