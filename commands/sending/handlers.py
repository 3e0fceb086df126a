"""Accepting mail: POST /api/v1/email and EmailGateway.SendEmail.

The checks run in this fixed order; the first that fails answers:
  (authentication: /api/v1 1, 13, 12; /api.php 99998, then DomainID 2)
  32 domain not activated;
  8 Subject; 9 ContentType; 10 HTMLContent; 11 PlainContent;
  3 From missing or malformed, 23 From address invalid, 3 From not at the sending domain;
  18/19/20 To (20: none, or more To and Cc than sending.max_recipients);
  21/22 CC; 24/25/26/27 BCC; 28/29/30/31 ReplyTo;
  15 TemplateID; 16 TargetListID;
  35 Headers; 36 Tags; 37 TrackLinks/TrackOpens; 38 SendAt; 39 Attachments;
  40 message larger than sending.max_message_bytes;
  14 every recipient suppressed; 17 sending quota reached.
"""

from __future__ import annotations

import base64
import binascii
import json
import mimetypes
import re
import secrets
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from email.errors import HeaderParseError
from email.header import decode_header, make_header
from email.parser import BytesHeaderParser
from email.utils import getaddresses
from types import SimpleNamespace
from typing import Any

from marshmallow import fields
from sqlalchemy import func, insert, select
from sqlalchemy.engine import Connection

from commands.context import Context
from commands.errors import CommandError
from commands.events import writer as events
from commands.registry import Auth, command
from commands.schema import CommandSchema
from commands.suppression import suppressed_among
from commands.tenancy import domain_id_param, owned_domain
from models import Delivery, Domain, Message, User
from models.base import new_uuid
from models.direct import Direct
from models.domains import ENABLED
from models.messages import QUEUED, SUPPRESSED
from models.payload import Composed, File, Payload, Person, Submitted, encode_payload
from mta.addresses import belongs, normalise_address
from mta.message import header_problem

MAX_TAGS = 20
MAX_TAG_LENGTH = 100


@dataclass
class Recipient:
    email: str
    name: str
    kind: str  # to, cc, bcc


@dataclass
class Accepted:
    """A send that passed every check, ready to be stored."""

    sender: dict[str, str]
    recipients: list[Recipient]
    reply_to: list[dict[str, str]]
    subject: str
    html: str | None
    text: str | None
    headers: dict[str, str]
    tags: list[str]
    track_links: bool | None
    track_opens: bool | None
    send_at: datetime | None
    attachments: list[dict[str, Any]] = field(default_factory=list)
    size: int = 0


def _fail(code: int, text: str) -> CommandError:
    return CommandError(code, text)


def _maybe_json(value: Any) -> Any:
    """Structured fields may arrive as JSON text (form bodies)."""
    if isinstance(value, str) and value.strip()[:1] in ("[", "{"):
        try:
            return json.loads(value)
        except ValueError:
            return value
    return value


def _entries(value: Any, *, strict: bool, not_array: tuple[int, str]) -> list[Any]:
    """A list of address entries; a single entry or a bare address is accepted unless strict."""
    value = _maybe_json(value)
    if value is None or value == "":
        return []
    if isinstance(value, list):
        return value
    if strict:
        raise _fail(*not_array)
    return [value]


def _parse_people(
    value: Any,
    *,
    missing: tuple[int, str],
    invalid: tuple[int, str],
    strict: bool = False,
    not_array: tuple[int, str] = (0, ""),
) -> list[dict]:
    """[{email, name}] from objects or bare addresses; names are optional."""
    out = []
    for entry in _entries(value, strict=strict, not_array=not_array):
        if isinstance(entry, str):
            entry = {"email": entry}
        if not isinstance(entry, dict):
            raise _fail(*missing)
        lowered = {str(k).lower(): v for k, v in entry.items()}
        email, name = lowered.get("email"), lowered.get("name", "")
        if not isinstance(email, str) or not email.strip():
            raise _fail(*missing)
        if not isinstance(name, str):
            name = str(name)
        normalised = normalise_address(email)
        if normalised is None:
            raise _fail(*invalid)
        if "\r" in name or "\n" in name:
            raise _fail(*invalid)
        out.append({"email": normalised, "name": name.strip()})
    return out


def _flag(value: Any, name: str) -> bool | None:
    if value is None or value == "":
        return None
    if isinstance(value, bool):
        return value
    text = str(value).strip().lower()
    if text in ("true", "1", "yes"):
        return True
    if text in ("false", "0", "no"):
        return False
    raise _fail(37, f'{name} must be "true" or "false"')


def check_send(p: dict[str, Any], domain: Domain, config, now: datetime) -> Accepted:
    """Validate a send in the documented order; CommandError for the first problem."""
    if domain.status != ENABLED:
        raise _fail(32, "Domain is not activated")
    subject = p.get("Subject")
    if not isinstance(subject, str) or not subject.strip():
        raise _fail(8, "Missing Subject")
    if "\r" in subject or "\n" in subject or len(subject) > 998:
        raise _fail(8, "Subject must be one line of at most 998 characters")
    content_type = p.get("ContentType")
    if not isinstance(content_type, str) or not content_type.strip():
        raise _fail(9, "Missing ContentType")
    content_type = content_type.strip().lower()
    if content_type not in ("html", "plain"):
        raise _fail(9, 'Missing ContentType: it must be "html" or "plain"')
    html, text = p.get("HTMLContent"), p.get("PlainContent")
    html = html if isinstance(html, str) and html.strip() else None
    text = text if isinstance(text, str) and text.strip() else None
    if content_type == "html" and html is None:
        raise _fail(10, "Missing HTMLContent")
    if content_type == "plain" and text is None:
        raise _fail(11, "Missing PlainContent")
    if content_type == "plain":
        html = None if p.get("HTMLContent") is None else html

    from_bad = (
        3,
        "From parameter is either missing or invalid. Make sure you pass both name "
        "and email address for the from field",
    )
    sender_raw = _maybe_json(p.get("From"))
    if isinstance(sender_raw, str):
        sender_raw = {"email": sender_raw}
    if not isinstance(sender_raw, dict):
        raise _fail(*from_bad)
    sender_fields = {str(k).lower(): v for k, v in sender_raw.items()}
    if not isinstance(sender_fields.get("email"), str) or not sender_fields["email"].strip():
        raise _fail(*from_bad)
    sender_email = normalise_address(sender_fields["email"])
    sender_name = str(sender_fields.get("name") or "").strip()
    if sender_email is None or "\n" in sender_name or "\r" in sender_name:
        raise _fail(23, "Invalid from email address format")
    if not belongs(sender_email, domain.name):
        raise _fail(3, f"From must be an address at {domain.name} (or one of its subdomains)")

    limits = config.sending
    to = _parse_people(
        p.get("To"),
        missing=(18, "Recipient name or email address is missing"),
        invalid=(19, "Recipient email address is invalid."),
    )
    if not to:
        raise _fail(20, "There is no recipient set for the email.")
    cc = _parse_people(
        p.get("CC"),
        missing=(21, "CC name or email address is missing"),
        invalid=(22, "CC email address is invalid."),
    )
    if len(to) + len(cc) > limits.max_recipients:
        raise _fail(
            20, f"Too many recipients: at most {limits.max_recipients} To and CC addresses together"
        )
    bcc = _parse_people(
        p.get("BCC"),
        missing=(25, "BCC name or email address is missing"),
        invalid=(26, "BCC email address is invalid."),
        strict=True,
        not_array=(24, "BCC email addresses must be set as an array"),
    )
    if len(bcc) > limits.max_bcc:
        raise _fail(
            27,
            "The number of BCC email addresses exceed the allowed email address "
            f"count ({limits.max_bcc})",
        )
    reply_to = _parse_people(
        p.get("ReplyTo"),
        missing=(29, "Reply-To name or email address is missing"),
        invalid=(30, "Reply-To email address is invalid."),
        strict=True,
        not_array=(28, "Reply-To email addresses must be set as an array"),
    )
    if len(reply_to) > limits.max_reply_to:
        raise _fail(
            31,
            "The number of Reply-To email addresses exceed the allowed email "
            f"address count ({limits.max_reply_to})",
        )
    if p.get("TemplateID") not in (None, ""):
        raise _fail(15, "Invalid TemplateID")
    if p.get("TargetListID") not in (None, ""):
        raise _fail(16, "Invalid TargetListID")

    headers = _headers(p.get("Headers"))
    tags = _tags(p.get("Tags"))
    track_links = _flag(p.get("TrackLinks"), "TrackLinks")
    track_opens = _flag(p.get("TrackOpens"), "TrackOpens")
    send_at = _send_at(p.get("SendAt"), now, limits.max_schedule_seconds)
    attachments, attachment_bytes = _attachments(p.get("Attachments"))

    size = (
        len(subject)
        + len((html or "").encode())
        + len((text or "").encode())
        + attachment_bytes
        + sum(len(k) + len(v) + 4 for k, v in headers.items())
    )
    if size > limits.max_message_bytes:
        raise _fail(40, f"Message too large: {size} bytes, at most {limits.max_message_bytes}")

    recipients: list[Recipient] = []
    seen: set[str] = set()
    for kind, people in (("to", to), ("cc", cc), ("bcc", bcc)):
        for person in people:
            key = person["email"].lower()
            if key not in seen:
                seen.add(key)
                recipients.append(Recipient(person["email"], person["name"], kind))
    return Accepted(
        sender={"email": sender_email, "name": sender_name},
        recipients=recipients,
        reply_to=reply_to,
        subject=subject,
        html=html,
        text=text,
        headers=headers,
        tags=tags,
        track_links=track_links,
        track_opens=track_opens,
        send_at=send_at,
        attachments=attachments,
        size=size,
    )


def _headers(value: Any) -> dict[str, str]:
    value = _maybe_json(value)
    if value in (None, ""):
        return {}
    if not isinstance(value, dict):
        raise _fail(35, "Headers must be an object of header names and values")
    out = {}
    for name, raw in value.items():
        if not isinstance(raw, str | int | float) or isinstance(raw, bool):
            raise _fail(35, f"Invalid header {name}: the value must be a string")
        problem = header_problem(str(name), str(raw))
        if problem:
            raise _fail(35, f"Invalid header {name}: {problem}")
        out[str(name)] = str(raw)
    return out


def _tags(value: Any) -> list[str]:
    value = _maybe_json(value)
    if value in (None, ""):
        return []
    if isinstance(value, str):
        value = [t for t in value.split(",")]
    if not isinstance(value, list) or len(value) > MAX_TAGS:
        raise _fail(36, f"Tags must be an array of at most {MAX_TAGS} strings")
    tags = []
    for tag in value:
        if not isinstance(tag, str):
            raise _fail(36, "Tags must be strings")
        tag = tag.strip()
        if not tag or len(tag) > MAX_TAG_LENGTH or not tag.isprintable() or "," in tag:
            raise _fail(
                36, f"Invalid tag {tag!r}: 1 to {MAX_TAG_LENGTH} printable characters, no commas"
            )
        if tag not in tags:
            tags.append(tag)
    return tags


def _send_at(value: Any, now: datetime, max_ahead: int) -> datetime | None:
    if value in (None, ""):
        return None
    try:
        stamp = int(str(value).strip())
    except ValueError:
        raise _fail(38, "SendAt must be a Unix time (seconds)") from None
    try:
        when = datetime.fromtimestamp(stamp, UTC)
    except (OverflowError, OSError, ValueError):
        raise _fail(38, "SendAt must be a Unix time (seconds)") from None
    if when <= now:
        return None
    if when > now + timedelta(seconds=max_ahead):
        raise _fail(38, f"SendAt may be at most {max_ahead} seconds ahead")
    return when


def _attachments(value: Any) -> tuple[list[dict[str, Any]], int]:
    value = _maybe_json(value)
    if value in (None, ""):
        return [], 0
    if not isinstance(value, list):
        raise _fail(39, "Attachments must be an array")
    out, total = [], 0
    for i, item in enumerate(value):
        if not isinstance(item, dict):
            raise _fail(39, f"Attachment {i + 1} must be an object")
        a = {str(k).lower(): v for k, v in item.items()}
        name, content = a.get("filename"), a.get("content")
        if (
            not isinstance(name, str)
            or not name.strip()
            or len(name) > 255
            or any(c in name for c in "\r\n\0")
        ):
            raise _fail(39, f"Attachment {i + 1}: filename is missing or invalid")
        if not isinstance(content, str):
            raise _fail(39, f"Attachment {name}: content (base64) is missing")
        try:
            data = base64.b64decode(content, validate=True)
        except (binascii.Error, ValueError):
            raise _fail(39, f"Attachment {name}: content is not valid base64") from None
        ctype = a.get("type") or mimetypes.guess_type(name)[0] or "application/octet-stream"
        if not isinstance(ctype, str) or ctype.count("/") != 1 or any(c in ctype for c in "\r\n;"):
            raise _fail(39, f"Attachment {name}: invalid type")
        disposition = str(a.get("disposition") or "attachment").lower()
        if disposition not in ("attachment", "inline"):
            raise _fail(39, f"Attachment {name}: disposition must be attachment or inline")
        cid = a.get("contentid") or None
        if cid is not None and (not isinstance(cid, str) or any(c in cid for c in "\r\n<>")):
            raise _fail(39, f"Attachment {name}: invalid contentid")
        total += len(data)
        out.append(
            {
                "filename": name.strip(),
                "content": content,
                "type": ctype.lower(),
                "disposition": disposition,
                "contentid": cid,
            }
        )
    return out, total


def quota_of(config, user: User) -> int:
    return user.send_quota if user.send_quota is not None else config.sending.quota


def accept(
    ctx: Context,
    domain: Domain,
    params: dict[str, Any],
    *,
    source: str,
    sender_key_id: int | None = None,
) -> dict[str, Any]:
    """Check a send, then store the message, a delivery and an event per recipient."""
    send = check_send(params, domain, ctx.config, ctx.now)
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


def accept_raw(
    ctx: Context, domain: Domain, data: bytes, recipients: list[str], *, source: str = "smtp"
) -> dict[str, Any]:
    """Store a complete message submitted over SMTP, for the envelope recipients.

    The From header must be an address at the domain (error 3); every recipient must be a
    valid address (19). The worker adds Message-ID and Date when missing, drops any Bcc
    header, and DKIM-signs it like any other message.
    """
    # The raw header values (compat32): the default policy builds header objects (and new
    # classes) per header, which costs more than the rest of accepting the message. Only
    # the header block is given to the parser, which would otherwise split the whole body
    # into lines it then ignores.
    end = _HEADER_END.search(data)
    headers = BytesHeaderParser().parsebytes(data[: end.end()] if end else data)
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
        return value


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
    used = 0
    if quota:
        # Counting the period's deliveries can take a while: in a read transaction of its
        # own, before the write transaction (on SQLite that holds the single write lock).
        period = ctx.config.sending.quota_period
        start = datetime.fromtimestamp(int(ctx.now.timestamp()) // period * period, UTC)
        with ctx.read() as s:
            used = s.scalar(
                select(func.count())
                .select_from(Delivery)
                .where(
                    Delivery.user_id == user.id,
                    Delivery.created_at >= start,
                    Delivery.status != SUPPRESSED,
                )
            )
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
) -> None:
    """Insert the message, a delivery per recipient and its event, and count the events.

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
    ids = [_INSERT_DELIVERY.first(conn, d)[0] for d in deliveries]
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


class SendSchema(CommandSchema):
    """The send fields, collected as given; check_send validates them in order."""

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


@command("v1.Email.Send", schema=SendSchema, auth=Auth.SENDER, transport="v1")
def v1_send(ctx: Context, **params: Any) -> dict[str, Any]:
    return accept(ctx, ctx.sender_domain, params, source="api", sender_key_id=ctx.sender.key_id)


_SEND_NOT_FOUND = (2, "Invalid DomainID")


class SendEmailSchema(SendSchema):
    DomainID = domain_id_param((2, "Invalid DomainID"), _SEND_NOT_FOUND)


@command("EmailGateway.SendEmail", schema=SendEmailSchema, auth=Auth.USER)
def send_email(ctx: Context, DomainID: int, **params: Any) -> dict[str, Any]:
    return accept(ctx, owned_domain(ctx, DomainID, _SEND_NOT_FOUND), params, source="api.php")
