"""Searching the event log: event types in both vocabularies, date parameters, Query terms,
and a page of events with their exact number."""

from __future__ import annotations

import json
import re
from collections.abc import Mapping
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Any

from marshmallow import ValidationError, fields
from sqlalchemy import ColumnElement, and_, func, or_, select, text
from sqlalchemy.orm import Session

from commands.errors import CommandError
from commands.schema import is_ascii_number
from models import Event, Message

# Octeth's names for the event types they share; the other types keep Postern's names.
OCTETH_NAMES = {
    "delivered": "delivery",
    "bounced": "bounce",
    "opened": "open",
    "clicked": "click",
    "unsubscribed": "unsubscribe",
    "complained": "complaint",
}
EVENT_TYPES = (
    "accepted",
    "rejected",
    "deferred",
    "failed",
    "blocked",
    "held",
    "suppressed",
    "not_spam",
    "auth_failure",
    # A domain's own events (no message): commands/events/writer.py DOMAIN_EVENTS.
    "dkim_rotating",
    "dkim_activated",
    "dkim_retired",
    "webhook_disabled",
    *OCTETH_NAMES,
)
# Any accepted spelling (either vocabulary, any letter case) -> the stored type.
_TYPE_OF = {name: name for name in EVENT_TYPES} | {o: t for t, o in OCTETH_NAMES.items()}


INVALID_EVENT = "Invalid Event: one or more of " + ", ".join(sorted(_TYPE_OF))


def public_type(stored: str) -> str:
    """The name answers give a stored event type."""
    return OCTETH_NAMES.get(stored, stored)


class EventTypes(fields.Field[list[str]]):
    """One or several event types (a list, or comma-separated), in either vocabulary."""

    def _deserialize(
        self, value: Any, attr: str | None, data: Mapping[str, Any] | None, **kwargs: Any
    ) -> list[str]:
        items = value if isinstance(value, list) else str(value).split(",")
        types: list[str] = []
        for item in items:
            stored = _TYPE_OF.get(str(item).strip().lower())
            if stored is None:
                raise ValidationError("unknown event type")
            if stored not in types:
                types.append(stored)
        if not types:
            raise ValidationError("no event type")
        return types


@dataclass(frozen=True)
class Span:
    """What a date parameter covers: a whole day, or one second (a time or a Unix time)."""

    start: datetime
    end: datetime  # exclusive


_DAY = re.compile(r"^\d{4}-\d{2}-\d{2}$")
_SECOND = re.compile(r"^\d{4}-\d{2}-\d{2}[ T]\d{2}:\d{2}:\d{2}$")


def parse_span(value: Any) -> Span | None:
    """``YYYY-MM-DD``, ``YYYY-MM-DD HH:MM:SS`` or a Unix time (UTC), or None."""
    if isinstance(value, bool):
        return None
    raw = str(value).strip()
    try:
        if isinstance(value, int) or is_ascii_number(raw, 12):
            start = datetime.fromtimestamp(int(raw), UTC)
            return Span(start, start + timedelta(seconds=1))
        if _DAY.match(raw):
            start = datetime.strptime(raw, "%Y-%m-%d").replace(tzinfo=UTC)
            return Span(start, start + timedelta(days=1))
        if _SECOND.match(raw):
            start = datetime.strptime(raw.replace("T", " "), "%Y-%m-%d %H:%M:%S")
            return Span(start.replace(tzinfo=UTC), start.replace(tzinfo=UTC) + timedelta(seconds=1))
    except (ValueError, OverflowError, OSError):
        return None
    return None


class DateArg(fields.Field[Span]):
    """A date parameter, as the Span it covers."""

    def _deserialize(
        self, value: Any, attr: str | None, data: Mapping[str, Any] | None, **kwargs: Any
    ) -> Span:
        span = parse_span(value)
        if span is None or not 1970 <= span.start.year <= 9998:
            raise ValidationError("not a date")
        return span


def date_range(
    start: Span | None, end: Span | None, end_code: int
) -> tuple[datetime | None, datetime | None]:
    """[from, to) of the StartDate and EndDate parameters, both inclusive; either may be open."""
    low = start.start if start else None
    high = end.end if end else None
    if low is not None and high is not None and high <= low:
        raise CommandError(end_code, "EndDate is before StartDate")
    return low, high


# -- the Query parameter -------------------------------------------------------------------

TERMS = ("subject", "to", "from", "tag", "message")
# The most terms one Query may hold: each is a condition of its own (some a subquery).
MAX_QUERY_TERMS = 20
_TOKEN = re.compile(r'(?:(\w+):)?(?:"([^"]*)"?|(\S+))')


def parse_query(query: str | None) -> list[tuple[str | None, str]]:
    """``subject:welcome to:"a b" free text`` -> [(term or None, value)]; quotes keep spaces.

    A prefix that is not a known term is part of the free text (``http://…``).
    """
    out: list[tuple[str | None, str]] = []
    for match in _TOKEN.finditer(query or ""):
        name, quoted, bare = match.groups()
        value = quoted if quoted is not None else bare
        if name and name.lower() not in TERMS:
            value, name = f"{name}:{value}", None
        if value:
            out.append((name.lower() if name else None, value))
    return out


def check_query(query: str) -> None:
    """ValidationError for a Query of more than MAX_QUERY_TERMS terms."""
    if len(parse_query(query)) > MAX_QUERY_TERMS:
        raise ValidationError(f"more than {MAX_QUERY_TERMS} terms")


def _contains(value: str) -> str:
    escaped = value.replace("\\", "\\\\").replace("%", "\\%").replace("_", "\\_")
    return f"%{escaped}%"


def message_id_of(value: str) -> str:
    """A message id as given back by the send commands, or its ``<id@domain>`` header form."""
    return value.strip().strip("<>").partition("@")[0]


def _messages_where(
    user_id: int, domain_id: int | None, *where: ColumnElement[bool]
) -> ColumnElement[bool]:
    ids = select(Message.id).where(Message.user_id == user_id, *where)
    if domain_id is not None:
        ids = ids.where(Message.domain_id == domain_id)
    return Event.message_id.in_(ids)


def _term(user_id: int, domain_id: int | None, name: str | None, value: str) -> ColumnElement[bool]:
    if name == "subject":
        return _messages_where(
            user_id, domain_id, Message.subject.ilike(_contains(value), escape="\\")
        )
    if name == "from":
        pattern = _contains(value)
        return _messages_where(user_id, domain_id, Message.from_email.ilike(pattern, escape="\\"))
    if name == "to":
        value = value.lower()
        if "@" in value[1:]:
            return Event.recipient_lower == value  # a whole address: the index answers it
        return Event.recipient_lower.like(_contains(value), escape="\\")
    if name == "tag":
        forms = {json.dumps(value), json.dumps(value, ensure_ascii=False)}
        return or_(*(Event.tags.like(_contains(f), escape="\\") for f in forms))
    if name == "message":
        return Event.message_id == message_id_of(value)
    pattern = _contains(value)  # free text: the recipient or the subject
    return or_(
        Event.recipient_lower.like(pattern.lower(), escape="\\"),
        _messages_where(user_id, domain_id, Message.subject.ilike(pattern, escape="\\")),
    )


def event_filters(
    user_id: int,
    domain_id: int | None = None,
    *,
    since: datetime | None = None,
    until: datetime | None = None,
    types: list[str] | None = None,
    query: str | None = None,
    message_id: str | None = None,
) -> list[ColumnElement[bool]]:
    """WHERE conditions of an event search; always scoped to ``user_id``."""
    where: list[ColumnElement[bool]] = [Event.user_id == user_id]
    if domain_id is not None:
        where.append(Event.domain_id == domain_id)
    if since is not None:
        where.append(Event.created_at >= since)
    if until is not None:
        where.append(Event.created_at < until)
    if types:
        where.append(Event.type.in_(types))
    if message_id:
        where.append(Event.message_id == message_id_of(message_id))
    where.extend(_term(user_id, domain_id, n, v) for n, v in parse_query(query))
    return where


def plan_each_query(db: Session) -> None:
    """On PostgreSQL, plan this transaction's statements for their own values.

    psycopg prepares a statement run five times; PostgreSQL may then keep one generic plan
    for it, and a plan made without knowing the dates or the search text can be many times
    slower for a search (a `subject:` search went from 0.1 s to 0.6 s).
    """
    if db.get_bind().dialect.name == "postgresql":
        db.execute(text("SET LOCAL plan_cache_mode = force_custom_plan"))


def event_page(
    db: Session, where: list[ColumnElement[bool]], start_from: int, count: int
) -> tuple[int, list[Event]]:
    """The exact number of matching events and one page of them, newest first."""
    rows = db.scalars(
        select(Event)
        .where(and_(*where))
        .order_by(Event.created_at.desc(), Event.id.desc())
        .offset(start_from)
        .limit(count)
    ).all()
    if 0 < len(rows) < count or (start_from == 0 and not rows):
        return start_from + len(rows), list(rows)  # the last page: no count needed
    total = db.scalar(select(func.count()).select_from(Event).where(and_(*where)))
    return total or 0, list(rows)
