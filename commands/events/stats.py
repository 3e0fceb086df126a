"""Statistics over the event log: EmailGateway.AggrEvents, DomainStats and DailySeries.

Counts of whole UTC days come from ``event_counts`` (models/event_counts.py); the part of a
period that does not fill a day, distinct deliveries (the Unique figures), recipient domains
and hours are read from the events themselves.
"""

from __future__ import annotations

import json
from collections import Counter
from collections.abc import Callable, Mapping, Sequence
from datetime import UTC, date, datetime, time, timedelta
from typing import Any, TypeVar

from marshmallow import ValidationError, fields, validate
from sqlalchemy import ColumnElement, SQLColumnExpression, distinct, func, select
from sqlalchemy.orm import Session

from commands.context import Context
from commands.errors import CommandError
from commands.events.search import (
    INVALID_EVENT,
    DateArg,
    EventTypes,
    Span,
    plan_each_query,
    public_type,
)
from commands.registry import Auth, command
from commands.schema import CommandSchema, param
from commands.tenancy import domain_id_param, owned_domain
from models import Event, EventCount

DEFAULT_DAYS = 30
EPOCH = datetime(1970, 1, 1, tzinfo=UTC)
MAX_SERIES_DAYS = 366
MAX_TAGS = 100

# Counted event types -> their key in Stats; distinct deliveries -> the Unique keys.
COUNTED = {
    "accepted": "Sent",
    "delivered": "Delivered",
    "bounced": "Bounced",
    "blocked": "Blocked",
    "opened": "Opened",
    "clicked": "Clicked",
    "unsubscribed": "Unsubscribed",
    "complained": "Complained",
    "not_spam": "NotSpam",
    "auth_failure": "AuthFailures",
}
UNIQUE = {"opened": "UniqueOpened", "clicked": "UniqueClicked"}
STAT_KEYS = (*COUNTED.values(), *UNIQUE.values())

# What figures are grouped by: () for the whole period, (tag list,) or (day,).
Group = tuple[str, ...]
# Events per group and type, keyed (*group, stored type).
Tally = Counter[tuple[str, ...]]
Figures = dict[str, int]
V = TypeVar("V")


def stat_period(
    start: Span | None, end: Span | None, today: date, end_code: int
) -> tuple[datetime, datetime]:
    """[from, to): the dates given (both inclusive), by default the last 30 days with today."""
    tomorrow = datetime.combine(today, time(), UTC) + timedelta(days=1)
    high = end.end if end else tomorrow
    low = start.start if start else high - timedelta(days=DEFAULT_DAYS)
    if high <= low:
        raise CommandError(end_code, "EndDate is before StartDate")
    return low, high


def domain_scope(
    ctx: Context,
    domain_id: int,
    start: Span | None,
    end: Span | None,
    not_found: tuple[int, str],
) -> Scope:
    """The user's domain over the period asked for (error 4 when it ends before it starts)."""
    domain = owned_domain(ctx, domain_id, not_found)
    low, high = stat_period(start, end, ctx.now.date(), 4)
    return Scope(ctx.db, ctx.current_user.id, domain.id, low, high)


class Scope:
    """One domain of one user over [low, high), and how its counts are read."""

    def __init__(self, db: Session, user_id: int, domain_id: int, low: datetime, high: datetime):
        self.db, self.user_id, self.domain_id = db, user_id, domain_id
        self.low, self.high = low, high
        plan_each_query(db)

    def events(
        self, low: datetime | None = None, high: datetime | None = None
    ) -> list[ColumnElement[bool]]:
        return [
            Event.domain_id == self.domain_id,
            Event.user_id == self.user_id,
            Event.created_at >= (low or self.low),
            Event.created_at < (high or self.high),
        ]

    def split(self) -> tuple[tuple[date, date] | None, list[tuple[datetime, datetime]]]:
        """The whole days inside the period, [first, last), and the pieces left at its ends."""
        first = datetime.combine(self.low.date(), time(), UTC)
        if first < self.low:
            first += timedelta(days=1)
        last = datetime.combine(self.high.date(), time(), UTC)
        if first >= last:
            return None, [(self.low, self.high)]
        ends = [(a, b) for a, b in ((self.low, first), (last, self.high)) if a < b]
        return (first.date(), last.date()), ends

    def counts(self, by: str | None = None, types: list[str] | None = None) -> Tally:
        """Events per (group, type); ``by`` is None, "tags" (the tag list) or "day"."""
        out: Tally = Counter()
        days, ends = self.split()
        if days:
            shown_by: dict[str | None, list[SQLColumnExpression[Any]]] = {
                None: [],
                "tags": [func.max(EventCount.tags)],
                "day": [EventCount.day],
            }
            group_by: dict[str | None, list[SQLColumnExpression[Any]]] = {
                None: [],
                "tags": [EventCount.tags_key],
                "day": [EventCount.day],
            }
            shown, group = shown_by[by], group_by[by]
            query = select(*shown, EventCount.type, func.sum(EventCount.total)).where(
                EventCount.domain_id == self.domain_id,
                EventCount.user_id == self.user_id,
                EventCount.day >= days[0],
                EventCount.day < days[1],
            )
            if types:
                query = query.where(EventCount.type.in_(types))
            for row in self.db.execute(query.group_by(*group, EventCount.type)):
                key, kind, n = _split_row(row)
                out[(*self._key(key, by), kind)] += int(n)
        for low, high in ends:
            column = self._column(by)
            query = select(*column, Event.type, func.count()).where(*self.events(low, high))
            if types:
                query = query.where(Event.type.in_(types))
            for row in self.db.execute(query.group_by(*column, Event.type)):
                key, kind, n = _split_row(row)
                out[(*self._key(key, by), kind)] += n
        return out

    def uniques(self, by: str | None = None) -> Tally:
        """Distinct deliveries with an open, and with a click, per (group, type)."""
        column = self._column(by)
        query = select(*column, Event.type, func.count(distinct(Event.delivery_id))).where(
            *self.events(), Event.type.in_(list(UNIQUE))
        )
        out: Tally = Counter()
        for row in self.db.execute(query.group_by(*column, Event.type)):
            key, kind, n = _split_row(row)
            out[(*self._key(key, by), kind)] += n
        return out

    def figures(self, by: str | None = None) -> dict[Group, Figures]:
        """The Stats figures per group (every key, zero where nothing happened)."""
        out: dict[Group, Figures] = {}
        for names, counter in (
            (COUNTED, self.counts(by, list(COUNTED))),
            (UNIQUE, self.uniques(by)),
        ):
            for (*key, kind), n in counter.items():
                out.setdefault(tuple(key), _zero())[names[kind]] += n
        return out

    def _column(self, by: str | None) -> list[SQLColumnExpression[Any]]:
        columns: dict[str | None, list[SQLColumnExpression[Any]]] = {
            None: [],
            "tags": [Event.tags],
            "day": [bucket(self.db, "day")],
        }
        return columns[by]

    @staticmethod
    def _key(key: Sequence[Any], by: str | None) -> Group:
        return (bucket_key(key[0], "day"),) if by == "day" else tuple(key)


def _split_row(row: Sequence[Any]) -> tuple[list[Any], str, Any]:
    """A counting row's group columns (none or one), its event type and its count."""
    *key, kind, n = row
    return key, kind, n


def _zero() -> Figures:
    return dict.fromkeys(STAT_KEYS, 0)


def per_tag(by_tags: Mapping[Group, V], add: Callable[[V, V], V]) -> dict[str, V]:
    """Figures per tag from figures per tag list (``add`` sums two of them)."""
    out: dict[str, V] = {}
    for (tags_text, *_), figures in by_tags.items():
        try:
            tags = json.loads(tags_text)
        except ValueError:
            continue
        for tag in set(tags) if isinstance(tags, list) else ():
            tag = str(tag)
            out[tag] = add(out[tag], figures) if tag in out else figures
    return out


def _add_figures(a: Figures, b: Figures) -> Figures:
    return {k: a[k] + b[k] for k in a}


def bucket(db: Session, unit: str) -> ColumnElement[Any]:
    """created_at truncated to its UTC day or hour, in this database's own way."""
    column = Event.created_at
    dialect = db.get_bind().dialect.name
    if dialect == "postgresql":
        return func.date_trunc(unit, column)
    if dialect in ("mysql", "mariadb"):
        return func.date_format(column, "%Y-%m-%d" if unit == "day" else "%Y-%m-%d %H:00:00")
    return func.substr(column, 1, 10 if unit == "day" else 13)  # SQLite keeps ISO text


def bucket_key(value: Any, unit: str) -> str:
    if isinstance(value, datetime):
        return value.strftime("%Y-%m-%d" if unit == "day" else "%Y-%m-%d %H:00:00")
    if isinstance(value, date):
        return value.isoformat()
    text = str(value)
    return text[:10] if unit == "day" else text[:13] + ":00:00"


def recipient_domain(db: Session) -> ColumnElement[Any]:
    """The part of the recipient after its last @."""
    column = Event.recipient_lower
    dialect = db.get_bind().dialect.name
    if dialect == "postgresql":
        return func.reverse(func.split_part(func.reverse(column), "@", 1))
    if dialect in ("mysql", "mariadb"):
        return func.substring_index(column, "@", -1)
    # SQLite has no reverse: strip everything up to the last @ (rtrim of the non-@ characters).
    return func.replace(column, func.rtrim(column, func.replace(column, "@", "")), "")


class Field(fields.Field[str]):
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

    def _deserialize(
        self, value: Any, attr: str | None, data: Mapping[str, Any] | None, **kwargs: Any
    ) -> str:
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
    scope = domain_scope(ctx, DomainID, StartDate, EndDate, DOMAIN_NOT_FOUND)
    field, size = AggregatedField, AggregateSize
    totals: Counter[str] = Counter()
    if field in ("eventType", "tag", "day"):
        by = {"eventType": None, "tag": "tags", "day": "day"}[field]
        for (*key, kind), n in scope.counts(by, types).items():
            totals[public_type(kind) if by is None else key[0]] += n
        if field == "tag":
            totals = Counter(per_tag({(k,): n for k, n in totals.items()}, int.__add__))
    else:
        column = bucket(ctx.db, "hour") if field == "hour" else recipient_domain(ctx.db)
        query = select(column, func.count()).where(*scope.events())
        if types:
            query = query.where(Event.type.in_(types))
        for row in ctx.db.execute(query.group_by(column)):
            value, n = row[0], row[1]
            totals[bucket_key(value, "hour") if field == "hour" else value] += n
    if field in ("day", "hour"):  # the latest buckets, oldest first
        ranked = sorted(totals.items())[-size:]
    else:
        ranked = sorted(totals.items(), key=lambda kv: (-kv[1], kv[0]))[:size]
    return {"AggBuckets": [{"key": k, "doc_count": n} for k, n in ranked if n]}


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
    scope = domain_scope(ctx, DomainID, StartDate, EndDate, STATS_DOMAIN_NOT_FOUND)
    low, high = scope.low, scope.high
    # As long before the period, but not before 1970 (dates go back no further; a period
    # from 1970 to 9998 would otherwise reach before year 1).
    earlier_low = low - min(high - low, low - EPOCH) if low > EPOCH else EPOCH
    earlier = Scope(ctx.db, scope.user_id, scope.domain_id, earlier_low, max(low, EPOCH))
    tagged = {k: v for k, v in scope.figures("tags").items() if k[0] != "[]"}
    by_tag = per_tag(tagged, _add_figures)
    ranked = sorted(by_tag.items(), key=lambda kv: (-sum(kv[1].values()), kv[0]))[:MAX_TAGS]
    return {
        "StartDate": low.strftime("%Y-%m-%d %H:%M:%S"),
        "EndDate": (high - timedelta(seconds=1)).strftime("%Y-%m-%d %H:%M:%S"),
        "Stats": scope.figures().get((), _zero()),
        "ComparisonStats": earlier.figures().get((), _zero()),
        "TagStats": dict(ranked),
    }


@command("EmailGateway.DailySeries", schema=DomainStatsSchema, auth=Auth.USER, readonly=True)
def daily_series(
    ctx: Context, DomainID: int, StartDate: Span | None = None, EndDate: Span | None = None
) -> dict[str, Any]:
    """The Stats figures day by day (UTC), every day of the period, with nothing as zeros."""
    scope = domain_scope(ctx, DomainID, StartDate, EndDate, STATS_DOMAIN_NOT_FOUND)
    first, last = scope.low.date(), (scope.high - timedelta(microseconds=1)).date()
    if (last - first).days >= MAX_SERIES_DAYS:
        raise CommandError(5, f"The period is longer than {MAX_SERIES_DAYS} days")
    by_day = scope.figures("day")
    series = []
    for offset in range((last - first).days + 1):
        key = (first + timedelta(days=offset)).isoformat()
        series.append({"Date": key, **by_day.get((key,), _zero())})
    return {"Series": series}
