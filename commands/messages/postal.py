"""Postal's messages/message and messages/deliveries: one delivery, as Postal shows it.

A Postal message is one recipient's copy: here, a delivery (its integer id and token). A
sender key sees its domain's deliveries, a user key its user's; any other id (another
tenant's, one that does not exist, one that is not a whole number) answers ``MessageNotFound``
alike. The message's headers, raw form and attachments are those of the message as the
worker builds it (commands/delivery/build.py), before DKIM signing and tracking links.
"""

from __future__ import annotations

import base64
import email
import email.policy
import hashlib
import json
from datetime import datetime
from typing import Any

from marshmallow import fields
from sqlalchemy import select
from sqlalchemy.orm import Session

from commands.context import Context
from commands.delivery.build import BuildJob, build_and_sign
from commands.errors import CommandError
from commands.events import writer as events
from commands.registry import Auth, command
from commands.schema import RawFieldsSchema, parse_row_id
from commands.sending.postal import required
from models import Delivery, Domain, Event, Message
from models.messages import (
    BOUNCED,
    DEFERRED,
    DELIVERED,
    FAILED,
    HELD,
    QUEUED,
    SENDING,
    SUPPRESSED,
)
from models.payload import Composed, decode_payload

# Postern's delivery and event statuses as Postal names them.
STATUS = {
    QUEUED: "Pending",
    SENDING: "Pending",
    events.ACCEPTED: "Pending",
    DEFERRED: "SoftFail",
    DELIVERED: "Sent",
    BOUNCED: "Bounced",
    FAILED: "HardFail",
    events.BLOCKED: "HardFail",
    HELD: "Held",
    SUPPRESSED: "HardFail",
}
EXPANSIONS = (
    "status",
    "details",
    "inspection",
    "plain_body",
    "html_body",
    "attachments",
    "headers",
    "raw_message",
    "activity_entries",
)
# The event types that are delivery attempts (messages/deliveries).
ATTEMPTS = (events.DEFERRED, events.DELIVERED, events.BOUNCED, events.FAILED, events.BLOCKED)
ATTEMPTS_HELD = (*ATTEMPTS, events.HELD)


class MessageNotFound(CommandError):
    """No delivery of the caller's with that id: Postal's MessageNotFound, the id echoed."""

    def __init__(self, given: Any):
        super().__init__(404, "No message found matching provided ID")
        self.given = given


def _find(ctx: Context, s: Session, given: Any) -> tuple[Delivery, Message]:
    delivery_id = parse_row_id(given)
    if delivery_id is None:
        raise MessageNotFound(given)
    query = select(Delivery, Message).join(Message, Message.id == Delivery.message_id)
    query = query.where(Delivery.id == delivery_id)
    if ctx.sender is not None:
        query = query.where(
            Delivery.domain_id == ctx.sender.domain_id, Delivery.user_id == ctx.sender.user_id
        )
    else:
        query = query.where(Delivery.user_id == ctx.current_user.id)
    row = s.execute(query).first()
    if row is None:
        raise MessageNotFound(given)
    return row[0], row[1]


def _stamp(value: datetime | None) -> float:
    return round(value.timestamp(), 3) if value is not None else 0.0


def _expansions(value: Any) -> set[str]:
    if value is True or (isinstance(value, str) and value.strip().lower() in ("true", "all")):
        return set(EXPANSIONS)
    if isinstance(value, str):
        try:
            value = json.loads(value)
        except ValueError:
            value = [v.strip() for v in value.split(",")]
        if value is True:
            return set(EXPANSIONS)
    if not isinstance(value, list):
        return set()
    wanted = {str(v) for v in value}
    return set(EXPANSIONS) if "all" in wanted else wanted & set(EXPANSIONS)


def built(s: Session, delivery: Delivery, message: Message) -> bytes:
    """The message as the worker builds it for this delivery (unsigned, links as written)."""
    domain = s.get(Domain, message.domain_id)
    job = BuildJob(
        decode_payload(message.payload),
        message.tags,
        message.id,
        message.domain_name,
        domain.subdomain if domain is not None else "",
        message.created_at,
        (),
        None,
        delivery.recipient,
    )
    return build_and_sign(job)


def header_message_id(data: bytes) -> str:
    parsed = email.message_from_bytes(data.split(b"\r\n\r\n", 1)[0] + b"\r\n\r\n")
    return "".join(str(parsed.get("Message-ID", "")).split()).strip("<>")


def _headers(parsed: email.message.Message) -> dict[str, list[str]]:
    out: dict[str, list[str]] = {"received": []}
    for name, value in parsed.items():
        out.setdefault(name.lower(), []).append(str(value))
    return out


def _body(parsed: email.message.EmailMessage, subtype: str) -> str | None:
    part = parsed.get_body(preferencelist=(subtype,))
    if part is None or not isinstance(part, email.message.EmailMessage):
        return None
    content = part.get_content()
    return content if isinstance(content, str) else None


def _attachments(parsed: email.message.EmailMessage) -> list[dict[str, Any]]:
    out: list[dict[str, Any]] = []
    for part in parsed.walk():
        if part.is_multipart() or part.get_filename() is None:
            continue
        data = part.get_payload(decode=True)
        data = data if isinstance(data, bytes) else b""
        out.append(
            {
                "filename": part.get_filename(),
                "content_type": part.get_content_type(),
                "data": base64.b64encode(data).decode("ascii"),
                "size": len(data),
                "hash": hashlib.sha1(data).hexdigest(),  # noqa: S324 - Postal's digest
            }
        )
    return out


def _activity(s: Session, delivery: Delivery) -> dict[str, list[dict[str, Any]]]:
    rows = s.scalars(
        select(Event)
        .where(Event.delivery_id == delivery.id, Event.type.in_((events.OPENED, events.CLICKED)))
        .order_by(Event.id)
    ).all()
    loads: list[dict[str, Any]] = []
    clicks: list[dict[str, Any]] = []
    for e in rows:
        details = json.loads(e.details or "{}")
        entry = {
            "ip_address": str(details.get("ip") or ""),
            "user_agent": str(details.get("user_agent") or ""),
            "timestamp": e.created_at.isoformat(),
        }
        if e.type == events.CLICKED:
            clicks.append({"url": str(details.get("url") or ""), **entry})
        else:
            loads.append(entry)
    return {"loads": loads, "clicks": clicks}


def _last_attempt(s: Session, delivery: Delivery) -> float:
    """When it was last tried (the accepted time when it never was: postal-py needs a
    number)."""
    found = s.scalar(
        select(Event.created_at)
        .where(Event.delivery_id == delivery.id, Event.type.in_(ATTEMPTS_HELD))
        .order_by(Event.id.desc())
        .limit(1)
    )
    return _stamp(found or delivery.created_at)


def message_data(ctx: Context, given: Any, expansions: Any) -> dict[str, Any]:
    wanted = _expansions(expansions)
    s = ctx.db
    delivery, message = _find(ctx, s, given)
    data: dict[str, Any] = {"id": int(delivery.id), "token": delivery.token}
    if not wanted:
        return data
    payload = decode_payload(message.payload)
    raw = built(s, delivery, message)
    parsed = email.message_from_bytes(raw, policy=email.policy.default)
    assert isinstance(parsed, email.message.EmailMessage)
    tags = json.loads(message.tags or "[]")
    if "status" in wanted:
        data["status"] = {
            "status": STATUS.get(delivery.status, "Pending"),
            "last_delivery_attempt": _last_attempt(s, delivery),
            "held": delivery.status == HELD,
            "hold_expiry": None,
        }
    if "details" in wanted:
        data["details"] = {
            "rcpt_to": delivery.recipient,
            "mail_from": message.from_email,
            "subject": message.subject,
            "message_id": header_message_id(raw),
            "timestamp": _stamp(message.created_at),
            "direction": "outgoing",
            "size": len(raw),
            "bounce": isinstance(payload, Composed) and payload.bounce,
            "bounce_for_id": 0,
            "tag": tags[0] if tags else None,
            "received_with_ssl": False,
        }
    if "inspection" in wanted:
        data["inspection"] = {
            "inspected": False,
            "spam": False,
            "spam_score": 0.0,
            "threat": False,
            "threat_details": None,
        }
    if "plain_body" in wanted:
        data["plain_body"] = _body(parsed, "plain")
    if "html_body" in wanted:
        data["html_body"] = _body(parsed, "html")
    if "attachments" in wanted:
        data["attachments"] = _attachments(parsed)
    if "headers" in wanted:
        data["headers"] = _headers(parsed)
    if "raw_message" in wanted:
        data["raw_message"] = base64.b64encode(raw).decode("ascii")
    if "activity_entries" in wanted:
        data["activity_entries"] = _activity(s, delivery)
    return data


def _output(e: Event) -> str:
    """The reply that decided the attempt: its code and text (the enhanced code leads the
    text already when the server sent one)."""
    text = e.smtp_text or ""
    if e.enhanced_code and not text.startswith(e.enhanced_code):
        text = f"{e.enhanced_code} {text}".strip()
    return " ".join(str(p) for p in (e.smtp_code, text) if p)


def _details(e: Event, recipient: str) -> str:
    host = json.loads(e.details or "{}").get("host")
    at = f" by {host}" if host else ""
    if e.type == events.DELIVERED:
        return f"Message for {recipient} accepted{at}"
    if e.type == events.DEFERRED:
        return f"Message for {recipient} deferred{at}: {e.smtp_text or ''}".rstrip(": ")
    return f"Message for {recipient} not delivered{at}: {e.smtp_text or ''}".rstrip(": ")


def deliveries_data(ctx: Context, given: Any) -> list[dict[str, Any]]:
    s = ctx.db
    delivery, _message = _find(ctx, s, given)
    rows = s.scalars(
        select(Event)
        .where(Event.delivery_id == delivery.id, Event.type.in_(ATTEMPTS_HELD))
        .order_by(Event.id)
    ).all()
    out = []
    for e in rows:
        stored = json.loads(e.details or "{}")
        seconds = stored.get("seconds")
        out.append(
            {
                "id": int(e.id),
                "status": STATUS.get(e.type, "HardFail"),
                "details": _details(e, delivery.recipient),
                "output": _output(e),
                "sent_with_ssl": stored.get("tls") is True,
                "log_id": e.uid,
                # Seconds the SMTP transaction took; 0.0 for an attempt that made none.
                "time": float(seconds) if isinstance(seconds, int | float) else 0.0,
                "timestamp": _stamp(e.created_at),
            }
        )
    return out


class PostalMessageSchema(RawFieldsSchema):
    """messages/message: the id, and which parts to show."""

    id = fields.Raw()
    _expansions = fields.Raw()


class PostalDeliveriesSchema(RawFieldsSchema):
    """messages/deliveries: the id."""

    id = fields.Raw()


@command(
    "v1.Postal.Message", schema=PostalMessageSchema, auth=Auth.SENDER, readonly=True, transport="v1"
)
def postal_message(ctx: Context, **params: Any) -> dict[str, Any]:
    required(params, "id")
    return {"data": message_data(ctx, params.get("id"), params.get("_expansions"))}


@command(
    "v1.Postal.MessageAsUser",
    schema=PostalMessageSchema,
    auth=Auth.USER,
    readonly=True,
    transport="v1",
)
def postal_message_as_user(ctx: Context, **params: Any) -> dict[str, Any]:
    required(params, "id")
    return {"data": message_data(ctx, params.get("id"), params.get("_expansions"))}


@command(
    "v1.Postal.Deliveries",
    schema=PostalDeliveriesSchema,
    auth=Auth.SENDER,
    readonly=True,
    transport="v1",
)
def postal_deliveries(ctx: Context, **params: Any) -> dict[str, Any]:
    required(params, "id")
    return {"data": deliveries_data(ctx, params.get("id"))}


@command(
    "v1.Postal.DeliveriesAsUser",
    schema=PostalDeliveriesSchema,
    auth=Auth.USER,
    readonly=True,
    transport="v1",
)
def postal_deliveries_as_user(ctx: Context, **params: Any) -> dict[str, Any]:
    required(params, "id")
    return {"data": deliveries_data(ctx, params.get("id"))}
