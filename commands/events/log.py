"""The event log: EmailGateway.GetEvents and GET /api/v1/events, and how they show an event."""

from __future__ import annotations

import json
from datetime import UTC, datetime
from typing import Any, NamedTuple

from marshmallow import fields, validate
from sqlalchemy import select

from commands.context import Context
from commands.events.search import (
    INVALID_EVENT,
    MAX_QUERY_TERMS,
    DateArg,
    EventTypes,
    Span,
    check_query,
    date_range,
    event_filters,
    event_page,
    plan_each_query,
    public_type,
)
from commands.registry import Auth, command
from commands.schema import CommandSchema, RowID, param
from commands.tenancy import owned_domain
from models import Event, Message


def iso(value: datetime) -> str:
    return value.astimezone(UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


def _json(raw: str | None) -> Any:
    try:
        return json.loads(raw or "")
    except ValueError:
        return None


def _json_dict(raw: str | None) -> dict[str, Any]:
    """A JSON object column, or {} when it holds anything else."""
    value = _json(raw)
    return value if isinstance(value, dict) else {}


def _json_list(raw: str | None) -> list[Any]:
    """A JSON array column, or [] when it holds anything else."""
    value = _json(raw)
    return value if isinstance(value, list) else []


class Headers(NamedTuple):
    """What an event shows of its message."""

    subject: str
    from_email: str


def event_view(row: Event, message: Headers | None) -> dict[str, Any]:
    """One event as GetEvents answers it (Octeth's shape, with Postern's own fields)."""
    details = _json_dict(row.details)
    view: dict[str, Any] = {
        "id": row.uid,
        "event_type": public_type(row.type),
        "timestamp": iso(row.created_at),
        "message_id": row.message_id,
        "recipient": row.recipient,
        "domain": row.domain_name,
        "tags": _json_list(row.tags),
        "message": {
            "headers": {
                "subject": message.subject if message else None,
                "from": message.from_email if message else None,
                "to": row.recipient,
                "message-id": (f"<{row.message_id}@{row.domain_name}>" if row.message_id else None),
            }
        },
    }
    if row.smtp_code is not None or row.enhanced_code or row.smtp_text:
        view["delivery_status"] = {
            "code": row.smtp_code,
            "enhanced": row.enhanced_code,
            "text": row.smtp_text,
        }
    for key in ("url", "ip", "user_agent"):
        if key in details:
            view[key] = details.pop(key)
    if details:
        view["details"] = details
    return view


class GetEventsSchema(CommandSchema):
    # Checked in the order the seed lists the codes: 4, 5, then the domain (2).
    StartFrom = param(
        fields.Integer(required=True, validate=validate.Range(min=0, max=2**31 - 1)),
        missing=(4, "Required parameter missing: StartFrom"),
        invalid=(6, "Invalid StartFrom: a whole number, 0 or more"),
    )
    RetrieveCount = param(
        fields.Integer(required=True, validate=validate.Range(min=1, max=100)),
        missing=(5, "Required parameter missing: RetrieveCount"),
        invalid=(7, "Invalid RetrieveCount: a whole number from 1 to 100"),
    )
    DomainID = param(RowID(), invalid=(2, "Failed to retrieve sender domain"))
    StartDate = param(
        DateArg(), invalid=(8, "Invalid StartDate: YYYY-MM-DD or YYYY-MM-DD HH:MM:SS (UTC)")
    )
    EndDate = param(
        DateArg(), invalid=(9, "Invalid EndDate: YYYY-MM-DD or YYYY-MM-DD HH:MM:SS (UTC)")
    )
    types = param(EventTypes(data_key="Event"), invalid=(10, INVALID_EVENT))
    Query = param(
        fields.String(validate=[validate.Length(max=1000), check_query]),
        invalid=(11, f"Invalid Query: at most 1000 characters and {MAX_QUERY_TERMS} terms"),
    )


@command("EmailGateway.GetEvents", schema=GetEventsSchema, auth=Auth.USER, readonly=True)
def get_events(
    ctx: Context,
    StartFrom: int,
    RetrieveCount: int,
    DomainID: int | None = None,
    StartDate: Span | None = None,
    EndDate: Span | None = None,
    types: list[str] | None = None,
    Query: str | None = None,
) -> dict[str, Any]:
    """The user's events (one domain's, or all), newest first, with their exact number."""
    user_id = ctx.current_user.id
    if DomainID is not None:
        owned_domain(ctx, DomainID, (2, "Failed to retrieve sender domain"))
    plan_each_query(ctx.db)
    since, until = date_range(StartDate, EndDate, 9)
    where = event_filters(user_id, DomainID, since=since, until=until, types=types, query=Query)
    total, rows = event_page(ctx.db, where, StartFrom, RetrieveCount)
    ids = {r.message_id for r in rows}
    messages = {
        m.id: Headers(m.subject, m.from_email)
        for m in ctx.db.execute(
            select(Message.id, Message.subject, Message.from_email).where(
                Message.id.in_(ids), Message.user_id == user_id
            )
        )
    }
    return {
        "TotalRecords": total,
        "Events": [event_view(r, messages.get(r.message_id)) for r in rows],
    }


# -- GET /api/v1/events ----------------------------------------------------------------------

_DETAIL_NAMES = {"user_agent": "UserAgent", "ip": "IpAddress", "url": "Url"}


def v1_event_view(row: Event) -> dict[str, Any]:
    details = {
        _DETAIL_NAMES.get(k) or k.title().replace("_", ""): v
        for k, v in _json_dict(row.details).items()
    }
    if row.smtp_code is not None:
        details["SMTPCode"] = row.smtp_code
    if row.enhanced_code:
        details["EnhancedStatusCode"] = row.enhanced_code
    if row.smtp_text:
        details["SMTPResponse"] = row.smtp_text
    return {
        "EventId": row.uid,
        "EventType": public_type(row.type),
        "EventTimestamp": iso(row.created_at),
        "Recipient": row.recipient,
        "MessageId": row.message_id,
        "CampaignId": None,
        "Tags": _json_list(row.tags),
        "Details": details,
    }


_V1_DATE = "a Unix time or YYYY-MM-DD HH:MM:SS (UTC)"


class V1EventsSchema(CommandSchema):
    StartFrom = param(
        fields.Integer(load_default=0, validate=validate.Range(min=0, max=2**31 - 1)),
        invalid=(4, "Invalid StartFrom: a whole number, 0 or more"),
    )
    RetrieveCount = param(
        fields.Integer(load_default=5, validate=validate.Range(min=1, max=100)),
        invalid=(5, "Invalid RetrieveCount: a whole number from 1 to 100"),
    )
    StartDate = param(DateArg(), invalid=(6, f"Invalid StartDate: {_V1_DATE}"))
    EndDate = param(DateArg(), invalid=(7, f"Invalid EndDate: {_V1_DATE}"))
    types = param(EventTypes(data_key="Event"), invalid=(8, INVALID_EVENT))
    MessageID = param(
        fields.String(validate=validate.Length(max=300)), invalid=(9, "Invalid MessageID")
    )


@command("v1.Events.List", schema=V1EventsSchema, auth=Auth.SENDER, transport="v1", readonly=True)
def v1_events(
    ctx: Context,
    StartFrom: int,
    RetrieveCount: int,
    StartDate: Span | None = None,
    EndDate: Span | None = None,
    types: list[str] | None = None,
    MessageID: str | None = None,
) -> dict[str, Any]:
    """The sender key's domain's events, newest first."""
    since, until = date_range(StartDate, EndDate, 7)
    plan_each_query(ctx.db)
    sender = ctx.current_sender
    where = event_filters(
        sender.user_id,
        sender.domain_id,
        since=since,
        until=until,
        types=types,
        message_id=MessageID,
    )
    total, rows = event_page(ctx.db, where, StartFrom, RetrieveCount)
    return {"TotalRecords": total, "Events": [v1_event_view(r) for r in rows]}
