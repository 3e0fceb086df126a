"""Accepting mail: POST /api/v1/email, EmailGateway.SendEmail and SMTP submissions.

The send's parameters are checked by commands/sending/checks.py, one check per error code
in the documented order; ``store`` then answers 14 (every recipient suppressed) and 17
(sending quota reached) once it has read the database.
"""

from __future__ import annotations

import json
import re
import secrets
from datetime import UTC, datetime
from email.errors import HeaderParseError
from email.header import decode_header, make_header
from email.parser import BytesHeaderParser
from email.utils import getaddresses
from types import SimpleNamespace
from typing import Any

from marshmallow import fields
from sqlalchemy import func, insert, select
from sqlalchemy.engine import Connection

from commands import observers
from commands.context import Context
from commands.errors import CommandError
from commands.events import writer as events
from commands.registry import Auth, command
from commands.schema import CommandSchema, RawFieldsSchema, parse_row_id
from commands.sending.checks import MAX_TAGS, Recipient, check_send
from commands.suppression import suppressed_among
from commands.templates.store import Parts, parts_of
from commands.templates.store import find as find_template
from commands.tenancy import domain_id_param, owned_domain
from core.settings import Config
from models import Delivery, Domain, Message, User
from models.base import new_uuid
from models.direct import Direct
from models.messages import QUEUED, SUPPRESSED
from models.payload import Composed, File, Payload, Person, Submitted, encode_payload
from mta.addresses import belongs, normalise_address
from mta.message import TRACE_PROBLEM, header_block_problem, refused_at_submission


def _inserted_id(conn: Connection, delivery: dict[str, Any]) -> int:
    """Insert one delivery; its id (RETURNING, or the driver's last row id)."""
    row = _INSERT_DELIVERY.first(conn, delivery)
    assert row is not None, "an INSERT ... RETURNING returns its row"
    return int(row[0])


def _fail(code: int, text: str) -> CommandError:
    return CommandError(code, text)


def quota_of(config: Config, user: User) -> int:
    return user.send_quota if user.send_quota is not None else config.sending.quota


def quota_period_of(config: Config, user: User) -> int:
    period = user.send_quota_period
    return period if period is not None else config.sending.quota_period


SUSPENDED_ACCOUNT = (12, "Invalid or deactivated user account")
SUSPENDED_DOMAIN = (32, "Domain is not activated")


def refuse_suspended(user: User, domain: Domain, http_status: int = 200) -> None:
    """Every send path's first refusal: 12 for a disabled or suspended user (``http_status``:
    403 on /api/v1, as for a disabled one), 32 for a suspended domain (their queued mail
    waits; commands/delivery/queue.py)."""
    if not user.enabled or user.suspended:
        raise CommandError(*SUSPENDED_ACCOUNT, http_status=http_status)
    if domain.suspended:
        raise CommandError(*SUSPENDED_DOMAIN)


def used_in_period(ctx: Context, user_id: int, period: int | None = None) -> int:
    """The user's deliveries in the current quota period (suppressed ones not counted).

    Counting them can take a while: in a read transaction of its own, before the write
    transaction (on SQLite that holds the single write lock)."""
    if period is None:
        period = quota_period_of(ctx.config, ctx.current_user)
    start = datetime.fromtimestamp(int(ctx.now.timestamp()) // period * period, UTC)
    with ctx.read() as s:
        return (
            s.scalar(
                select(func.count())
                .select_from(Delivery)
                .where(
                    Delivery.user_id == user_id,
                    Delivery.created_at >= start,
                    Delivery.status != SUPPRESSED,
                )
            )
            or 0
        )


def accept(
    ctx: Context,
    domain: Domain,
    params: dict[str, Any],
    *,
    source: str,
    sender_key_id: int | None = None,
    sender_header: Person | None = None,
    bounce: bool = False,
) -> dict[str, Any]:
    """Check a send, then store the message, a delivery and an event per recipient.

    ``sender_header`` and ``bounce`` are kept with the message (Postal's ``sender`` and
    ``bounce``; see models/payload.py)."""
    refuse_suspended(ctx.current_user, domain, 200 if ctx.sender is None else 403)
    send = check_send(params, domain, ctx.config, ctx.now, _template(ctx, domain, params))
    payload = Composed(
        sender=Person(send.sender["email"], send.sender.get("name", "")),
        to=tuple(Person(r.email, r.name) for r in send.recipients if r.kind == "to"),
        cc=tuple(Person(r.email, r.name) for r in send.recipients if r.kind == "cc"),
        reply_to=tuple(Person(p["email"], p.get("name", "")) for p in send.reply_to),
        subject=send.subject,
        html=send.html,
        text=send.text,
        headers=send.headers,
        attachments=tuple(File(**a) for a in send.attachments),
        track_links=send.track_links,
        track_opens=send.track_opens,
        personalization=send.personalization,
        sender_header=sender_header,
        bounce=bounce,
    )
    return store(
        ctx,
        domain,
        send.recipients,
        payload,
        source=source,
        from_email=send.sender["email"],
        subject=send.subject,
        tags=send.tags,
        size=send.size,
        send_at=send.send_at,
        sender_key_id=sender_key_id,
    )


def _template(ctx: Context, domain: Domain, params: dict[str, Any]) -> Parts | None:
    """The parts of the send's TemplateID when it is one of the domain's user's templates
    (read in a read transaction of its own, before the write transaction)."""
    template_id = parse_row_id(params.get("TemplateID"))
    if template_id is None:
        return None
    with ctx.read() as s:
        row = find_template(s, domain.user_id, template_id)
        return parts_of(row) if row is not None else None


MALFORMED_HEADER = 35  # the code of an invalid header in a send's Headers
TRACE_HEADER = 41  # ... and of a trace or authentication header


def accept_raw(
    ctx: Context, domain: Domain, data: bytes, recipients: list[str], *, source: str = "smtp"
) -> dict[str, Any]:
    """Store a complete message submitted over SMTP, for the envelope recipients.

    The header block must be one the signer can read (35: every line a header field,
    ``name: value`` with no space before the colon, or the continuation of one); the From
    header must be an address at the domain (3); every recipient must be a valid address
    (19). Authentication results, ARC sets, Received-SPF and DKIM or DomainKey signatures
    are refused (41). The worker adds Message-ID and Date when missing, drops any Bcc,
    Return-Path, Delivered-To and X-Original-To header, and DKIM-signs it like any other
    message.
    """
    refuse_suspended(ctx.current_user, domain)
    # The raw header values (compat32): the default policy builds header objects (and new
    # classes) per header, which costs more than the rest of accepting the message. Only
    # the header block is given to the parser, which would otherwise split the whole body
    # into lines it then ignores.
    problem = header_block_problem(data)
    if problem is not None:
        raise _fail(MALFORMED_HEADER, f"Malformed message header: {problem}")
    end = _HEADER_END.search(data)
    headers = BytesHeaderParser().parsebytes(data[: end.end()] if end else data)
    for name in headers:  # the field names
        if refused_at_submission(name):
            raise _fail(TRACE_HEADER, f"Header {name} refused: {TRACE_PROBLEM}")
    authors = [addr for _name, addr in getaddresses(headers.get_all("From") or []) if addr]
    if not authors or not all(belongs(a, domain.name) for a in authors):
        raise _fail(3, f"From must be an address at {domain.name} (or one of its subdomains)")
    people: list[Recipient] = []
    seen: set[str] = set()
    for raw in recipients:
        address = normalise_address(raw)
        if address is None:
            raise _fail(19, f"Recipient email address is invalid: {raw}")
        if address.lower() not in seen:
            seen.add(address.lower())
            people.append(Recipient(address, "", "to"))
    subject = _decoded(headers["Subject"])[:1000]
    tags = [t.strip() for t in _decoded(headers["X-Postern-Tags"]).split(",") if t.strip()]
    payload = Submitted(data)
    return store(
        ctx,
        domain,
        people,
        payload,
        source=source,
        from_email=authors[0],
        subject=subject,
        tags=tags[:MAX_TAGS],
        size=len(data),
        send_at=None,
    )


def _decoded(value: Any) -> str:
    """A raw header value with its RFC 2047 encoded words decoded, unfolded."""
    if value is None:
        return ""
    value = _FOLD.sub("", str(value)).strip()
    try:
        return str(make_header(decode_header(value)))
    except (HeaderParseError, LookupError, UnicodeError, ValueError):
        return str(value)


_FOLD = re.compile(r"\r?\n(?=[ \t])")
_HEADER_END = re.compile(rb"\r?\n\r?\n")


def store(
    ctx: Context,
    domain: Domain,
    recipients: list[Recipient],
    payload: Payload,
    *,
    source: str,
    from_email: str,
    subject: str,
    tags: list[str],
    size: int,
    send_at: datetime | None,
    sender_key_id: int | None = None,
) -> dict[str, Any]:
    """Suppression and quota checks, then the message, its deliveries and their events."""
    user = ctx.current_user  # the domain's owner: keys, credentials and DomainID are checked
    quota = quota_of(ctx.config, user)
    used = used_in_period(ctx, user.id) if quota else 0
    # Everything that needs no database is done before the write transaction begins (on
    # SQLite, whichever process holds it holds up every other writer).
    message = {
        "id": new_uuid(),
        "user_id": domain.user_id,
        "domain_id": domain.id,
        "domain_name": domain.name,
        "sender_key_id": sender_key_id,
        "source": source,
        "from_email": from_email,
        "subject": subject[:1000],
        "tags": json.dumps(tags),
        "size": size,
        "send_at": send_at,
        "created_at": ctx.now,
        "payload": encode_payload(payload),
    }
    # An indexed look-up: read in the write transaction, so a suppression added meanwhile
    # is seen (the write transaction begins here).
    blocked = suppressed_among(ctx.conn, domain.user_id, domain.id, (r.email for r in recipients))
    active = [r for r in recipients if r.email.lower() not in blocked]
    if not active:
        # Nothing will be sent: keep the refusal in the event log, answer 14.
        refused = Message(**message)  # not stored: only the events are kept
        for r in recipients:
            events.record(
                ctx.db, events.REJECTED, refused, None, r.email, ctx.now, text=_SUPPRESSED_TEXT
            )
        raise CommandError(
            14, "Email address is in the suppression list. Email delivery is blocked.", commit=True
        )
    if ctx.accepted is not None:
        used += ctx.accepted.get(user.id, 0)
    if quota and used + len(active) > quota:
        raise CommandError(17, "Email sending limit reached")
    write_message(ctx.conn, message, recipients, blocked, ctx.now)
    observers.accepted(ctx.work, source, len(active), len(recipients) - len(active))
    if ctx.accepted is not None:
        ctx.accepted[user.id] = ctx.accepted.get(user.id, 0) + len(active)
    return {"MessageID": message["id"]}


_SUPPRESSED_TEXT = "Email address is in the suppression list"
_INSERT_MESSAGE = Direct(insert(Message))
_INSERT_DELIVERY = Direct(insert(Delivery).returning(Delivery.id))


def write_message(
    conn: Connection,
    message: dict[str, Any],
    recipients: list[Recipient],
    blocked: set[str],
    now: datetime,
) -> list[int]:
    """Insert the message, a delivery per recipient and its event, and count the events;
    the deliveries' ids, in the recipients' order.

    Direct statements rather than ORM objects: accepting mail is the hot path, and the
    unit of work (or even Core's execution layer) costs more than the inserts themselves.
    """
    _INSERT_MESSAGE.execute(conn, [message])
    due = message["send_at"] or now
    deliveries = []
    for r in recipients:
        is_blocked = r.email.lower() in blocked
        deliveries.append(
            {
                "message_id": message["id"],
                "user_id": message["user_id"],
                "domain_id": message["domain_id"],
                "recipient": r.email,
                "recipient_domain": r.email.rsplit("@", 1)[1].lower(),
                "kind": r.kind,
                "token": secrets.token_hex(16),
                "status": SUPPRESSED if is_blocked else QUEUED,
                "due_at": None if is_blocked else due,
                "attempts": 0,
                "created_at": now,
                "updated_at": now,
            }
        )
    ids = [_inserted_id(conn, d) for d in deliveries]
    columns = SimpleNamespace(**message)
    accepted = {"send_at": columns.send_at.isoformat()} if columns.send_at else None
    rows = [
        events.event_values(
            events.SUPPRESSED, columns, delivery_id, d["recipient"], now, text=_SUPPRESSED_TEXT
        )
        if d["status"] == SUPPRESSED
        else events.event_values(
            events.ACCEPTED, columns, delivery_id, d["recipient"], now, details=accepted
        )
        for delivery_id, d in zip(ids, deliveries, strict=True)
    ]
    events.insert_values(conn, rows)
    return ids


class SendFields:
    """The send fields, as given: commands/sending/checks.py reads them in order."""

    Subject = fields.Raw()
    ContentType = fields.Raw()
    HTMLContent = fields.Raw()
    PlainContent = fields.Raw()
    From = fields.Raw()
    To = fields.Raw()
    CC = fields.Raw()
    BCC = fields.Raw()
    ReplyTo = fields.Raw()
    Attachments = fields.Raw()
    Headers = fields.Raw()
    Tags = fields.Raw()
    TrackLinks = fields.Raw()
    TrackOpens = fields.Raw()
    SendAt = fields.Raw()
    TemplateID = fields.Raw()
    TargetListID = fields.Raw()
    Personalization = fields.Raw()


class SendSchema(SendFields, RawFieldsSchema):
    """v1.Email.Send: the send fields, loaded as given (a pass-through of raw fields)."""


@command("v1.Email.Send", schema=SendSchema, auth=Auth.SENDER, transport="v1", idempotent=True)
def v1_send(ctx: Context, **params: Any) -> dict[str, Any]:
    return accept(
        ctx, ctx.sender_domain, params, source="api", sender_key_id=ctx.current_sender.key_id
    )


_SEND_NOT_FOUND = (2, "Invalid DomainID")


class SendEmailSchema(SendFields, CommandSchema):
    """EmailGateway.SendEmail: the send fields, and the DomainID to send from."""

    DomainID = domain_id_param((2, "Invalid DomainID"), _SEND_NOT_FOUND)


@command("EmailGateway.SendEmail", schema=SendEmailSchema, auth=Auth.USER, idempotent=True)
def send_email(ctx: Context, DomainID: int, **params: Any) -> dict[str, Any]:
    return accept(ctx, owned_domain(ctx, DomainID, _SEND_NOT_FOUND), params, source="api.php")
