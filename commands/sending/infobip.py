"""Infobip's email send: one request, one bulk, a message per recipient (or one message to
all of them with ``preserveRecipients``), accepted in one transaction.

The transport (app/http/infobip.py) reads the wire format (multipart for /email/2 and
/email/3, JSON for /email/4) into ``InfobipSend`` values and hands over what it found wrong
with their shape (``Problems``: Infobip's ``validationErrors``, wire field name to texts).
This command adds what needs the database (the sender's domain, the template, suppressions
and the quota), runs the shared send checks (commands/sending/checks.py) on each send, and
stores the messages, their deliveries and events, and an ``infobip_messages`` row per
delivery: its ``bulkId`` and ``messageId`` and where its reports and events are to go.

A suppressed recipient is accepted as Infobip accepts it: its delivery is stored suppressed
(never sent) and its report says so.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from typing import Any

from marshmallow import fields
from sqlalchemy import insert

from commands import observers
from commands.context import Context
from commands.errors import CommandError
from commands.registry import Auth, command
from commands.schema import RawFieldsSchema
from commands.sending.batch import batch_settings, domain_for
from commands.sending.checks import Accepted, Recipient, check_send
from commands.sending.handlers import quota_of, used_in_period, write_message
from commands.suppression import suppressed_among
from commands.templates.store import Parts, parts_of
from commands.templates.store import find as find_template
from models import Domain, InfobipMessage
from models.base import new_uuid
from models.payload import Composed, File, Person, Personalization, encode_payload
from mta.addresses import belongs

MAX_RECIPIENTS = 1000  # in one request, To, Cc and Bcc together
SOURCE = "infobip"


class InfobipRefused(CommandError):
    """Every reason a request was refused, by the wire name of its field (Infobip's
    ``validationErrors``)."""

    def __init__(self, errors: dict[str, list[str]], status: int = 400):
        text = "; ".join(f"{k}: {v}" for k, texts in errors.items() for v in texts)
        super().__init__(400, text, http_status=status)
        self.errors = errors


@dataclass(frozen=True)
class InfobipRecipient:
    """A ``to``, ``cc`` or ``bcc`` entry: its address, its placeholders and (JSON sends) its
    own messageId; ``where`` is its wire name (``to[1]``) for the answers that name it."""

    email: str
    where: str
    name: str = ""
    placeholders: dict[str, Any] = field(default_factory=dict)
    message_id: str | None = None


@dataclass(frozen=True)
class ReportSettings:
    """Where and how a send's reports and tracking events go, and what is only recorded."""

    notify_url: str | None = None
    notify_content_type: str | None = None
    notify: bool = True
    callback_data: str | None = None
    intermediate_report: bool = False
    tracking_url: str | None = None
    campaign_reference_id: str | None = None
    application_id: str | None = None
    entity_id: str | None = None
    ignored: dict[str, Any] = field(default_factory=dict)


@dataclass(frozen=True)
class InfobipSend:
    """One send as the transport read it: a /email/3/send request, or one destination group
    of one message of a /email/4/messages request."""

    sender: Person | None
    to: tuple[InfobipRecipient, ...] = ()
    cc: tuple[InfobipRecipient, ...] = ()
    bcc: tuple[InfobipRecipient, ...] = ()
    subject: str | None = None
    html: str | None = None
    text: str | None = None
    template_id: int | None = None
    attachments: tuple[File, ...] = ()
    reply_to: Person | None = None
    headers: dict[str, str] = field(default_factory=dict)
    track_links: bool | None = None
    track_opens: bool | None = None
    send_at: int | None = None  # Unix time
    default_placeholders: dict[str, Any] = field(default_factory=dict)
    preserve_recipients: bool = False
    message_id: str | None = None  # the request's messageId (/email/3/send)
    report: ReportSettings = field(default_factory=ReportSettings)
    # The wire name of each field the checks may name (``from`` -> ``messages[0].sender``).
    names: dict[str, str] = field(default_factory=dict)

    def name(self, canonical: str) -> str:
        return self.names.get(canonical, canonical)

    @property
    def recipients(self) -> tuple[InfobipRecipient, ...]:
        return self.to + self.cc + self.bcc


# The field a send check's failure is about, by its code (commands/sending/checks.py).
_FIELD_OF_CODE = {
    3: "from",
    23: "from",
    32: "from",
    8: "subject",
    9: "text",
    10: "html",
    11: "text",
    15: "templateId",
    18: "to",
    19: "to",
    20: "to",
    21: "cc",
    22: "cc",
    24: "bcc",
    25: "bcc",
    26: "bcc",
    27: "bcc",
    28: "replyTo",
    29: "replyTo",
    30: "replyTo",
    31: "replyTo",
    35: "headers",
    41: "headers",
    37: "track",
    38: "sendAt",
    39: "attachment",
    40: "attachment",
    42: "defaultPlaceholders",
}
_PART_FIELDS = {"Subject": "subject", "HTMLContent": "html", "PlainContent": "text"}


def _field_of(send: InfobipSend, exc: CommandError, recipients: list[InfobipRecipient]) -> str:
    if exc.code == 43:  # "Template syntax error in PlainContent ...", "Subject cannot be ..."
        found = [(exc.text.find(p), f) for p, f in _PART_FIELDS.items() if p in exc.text]
        return send.name(min(found)[1] if found else "html")
    if exc.code == 42 and exc.text.startswith("To["):
        index = int(exc.text[3 : exc.text.index("]")])
        if index < len(recipients):
            return recipients[index].where
    return send.name(_FIELD_OF_CODE.get(exc.code, "request"))


def _entry(r: InfobipRecipient) -> dict[str, Any]:
    return {"email": r.email, "name": r.name, "Personalization": r.placeholders or None}


@dataclass
class _Checked:
    send: InfobipSend
    domain: Domain
    accepted: Accepted


def _check(
    ctx: Context, send: InfobipSend, errors: dict[str, list[str]], total: int
) -> _Checked | None:
    """One send checked: its domain and the send checks' result, or None (``errors`` says
    why)."""

    def problem(canonical: str, text: str) -> None:
        errors.setdefault(send.name(canonical), []).append(text)

    template: Parts | None = None
    user_id = ctx.current_user.id
    if send.template_id is not None:
        with ctx.read() as s:
            row = find_template(s, user_id, send.template_id)
            template = parts_of(row) if row is not None else None
        if template is None:
            problem("templateId", "Template not found.")
    if send.sender is None:
        problem("from", "must not be blank")
        return None
    domain = domain_for(ctx, send.sender.email)
    if domain is None:
        problem("from", "The sender's domain is not one of your enabled domains.")
        return None
    if not belongs(send.sender.email, domain.name):
        problem("from", f"The address must be at {domain.name} or its subdomains.")
        return None
    if template is None and send.template_id is not None:
        return None
    if send.preserve_recipients:
        people = {
            "To": [_entry(r) for r in send.to],
            "CC": [_entry(r) for r in send.cc],
            "BCC": [_entry(r) for r in send.bcc],
        }
        ordered = list(send.recipients)
    else:
        ordered = list(send.recipients)
        people = {"To": [_entry(r) for r in ordered]}
    parts_given = send.html is not None or send.text is not None
    octeth: dict[str, Any] = {
        "From": {"email": send.sender.email, "name": send.sender.name},
        **people,
        "Subject": send.subject,
        "ContentType": None
        if template is not None and not parts_given
        else ("html" if send.html is not None else "plain"),
        "HTMLContent": send.html,
        "PlainContent": send.text,
        "Headers": send.headers or None,
        "Attachments": [
            {
                "filename": a.filename,
                "content": a.content,
                "type": a.type,
                "disposition": a.disposition,
                "contentid": a.contentid,
            }
            for a in send.attachments
        ]
        or None,
        "ReplyTo": [{"email": send.reply_to.email, "name": send.reply_to.name}]
        if send.reply_to is not None
        else None,
        "TrackLinks": send.track_links,
        "TrackOpens": send.track_opens,
        "SendAt": send.send_at,
        "Personalization": send.default_placeholders or None,
    }
    try:
        accepted = check_send(
            octeth,
            domain,
            batch_settings(ctx.config, max(MAX_RECIPIENTS, total)),
            ctx.now,
            template,
            personalize=True,
        )
    except CommandError as exc:
        errors.setdefault(_field_of(send, exc, ordered), []).append(exc.text)
        return None
    return _Checked(send, domain, accepted)


@dataclass
class _Planned:
    """A message to write: its row, its recipients, and each one's Infobip messageId."""

    message: dict[str, Any]
    people: list[Recipient]
    message_ids: list[str]
    report: ReportSettings


def _plan(checked: _Checked, sender_key_id: int | None, now: Any) -> list[_Planned]:
    send, domain, a = checked.send, checked.domain, checked.accepted
    common = {
        "user_id": domain.user_id,
        "domain_id": domain.id,
        "domain_name": domain.name,
        "sender_key_id": sender_key_id,
        "source": SOURCE,
        "from_email": a.sender["email"],
        "subject": a.subject[:1000],
        "tags": "[]",
        "size": a.size,
        "send_at": a.send_at,
        "created_at": now,
    }
    base = Composed(
        sender=Person(a.sender["email"], a.sender.get("name", "")),
        reply_to=tuple(Person(p["email"], p.get("name", "")) for p in a.reply_to),
        subject=a.subject,
        html=a.html,
        text=a.text,
        headers=a.headers,
        attachments=tuple(File(**f) for f in a.attachments),
        track_links=a.track_links,
        track_opens=a.track_opens,
    )
    defaults = a.personalization.values if a.personalization else send.default_placeholders
    if send.preserve_recipients:
        by_address = {r.email.lower(): r for r in reversed(send.recipients)}
        people = a.recipients  # each address once
        payload = Composed(
            sender=base.sender,
            to=tuple(Person(r.email, r.name) for r in people if r.kind == "to"),
            cc=tuple(Person(r.email, r.name) for r in people if r.kind == "cc"),
            reply_to=base.reply_to,
            subject=base.subject,
            html=base.html,
            text=base.text,
            headers=base.headers,
            attachments=base.attachments,
            track_links=base.track_links,
            track_opens=base.track_opens,
            personalization=a.personalization or Personalization(defaults),
        )
        ids = [
            by_address[r.email.lower()].message_id or send.message_id or new_uuid() for r in people
        ]
        message = {**common, "id": new_uuid(), "payload": encode_payload(payload)}
        return [_Planned(message, list(people), ids, send.report)]
    planned = []
    for r in send.recipients:
        message_id = new_uuid()
        payload = Composed(
            sender=base.sender,
            to=(Person(r.email, r.name),),
            reply_to=base.reply_to,
            subject=base.subject,
            html=base.html,
            text=base.text,
            headers=base.headers,
            attachments=base.attachments,
            track_links=base.track_links,
            track_opens=base.track_opens,
            personalization=Personalization({**defaults, **r.placeholders}, {}),
        )
        message = {**common, "id": message_id, "payload": encode_payload(payload)}
        planned.append(
            _Planned(
                message,
                [Recipient(r.email, r.name, "to")],
                [r.message_id or send.message_id or message_id],
                send.report,
            )
        )
    return planned


def accept_infobip(
    ctx: Context, params: dict[str, Any], *, sender_key_id: int | None
) -> dict[str, Any]:
    """Check every send; store each message, its deliveries, events and Infobip rows; answer
    ``{"BulkID", "Messages": [{"to", "messageId"}, ...]}`` in the recipients' order."""
    errors: dict[str, list[str]] = {
        str(k): [str(t) for t in v] for k, v in (params.get("Problems") or {}).items()
    }
    sends: list[InfobipSend] = [s for s in params.get("Sends") or [] if isinstance(s, InfobipSend)]
    total = sum(len(s.recipients) for s in sends)
    checked = [c for s in sends if (c := _check(ctx, s, errors, total)) is not None]
    if errors or not checked:
        raise InfobipRefused(errors or {"to": ["must not be empty"]})
    planned = [p for c in checked for p in _plan(c, sender_key_id, ctx.now)]
    bulk_id = str(params.get("BulkID") or new_uuid())
    user = ctx.current_user
    quota = quota_of(ctx.config, user)
    used = used_in_period(ctx, user.id) if quota else 0
    # The write transaction begins here: suppressions added meanwhile are seen.
    blocked: set[str] = set()
    for domain_id in {p.message["domain_id"] for p in planned}:
        blocked |= suppressed_among(
            ctx.conn,
            user.id,
            domain_id,
            (r.email for p in planned if p.message["domain_id"] == domain_id for r in p.people),
        )
    active = sum(1 for p in planned for r in p.people if r.email.lower() not in blocked)
    if quota and used + active > quota:
        raise InfobipRefused({"to": ["Email sending limit reached."]}, status=403)
    rows: list[dict[str, Any]] = []
    answer: list[dict[str, str]] = []
    for p in planned:
        ids = write_message(ctx.conn, p.message, p.people, blocked, ctx.now)
        held_back = sum(1 for r in p.people if r.email.lower() in blocked)
        observers.accepted(ctx.work, p.message["source"], len(p.people) - held_back, held_back)
        r = p.report
        for delivery_id, person, message_id in zip(ids, p.people, p.message_ids, strict=True):
            rows.append(
                {
                    "delivery_id": delivery_id,
                    "user_id": user.id,
                    "bulk_id": bulk_id,
                    "message_id": message_id,
                    "campaign_reference_id": r.campaign_reference_id,
                    "application_id": r.application_id,
                    "entity_id": r.entity_id,
                    "notify_url": r.notify_url,
                    "notify_content_type": r.notify_content_type,
                    "notify": r.notify,
                    "callback_data": r.callback_data,
                    "intermediate_report": r.intermediate_report,
                    "tracking_url": r.tracking_url,
                    "ignored": json.dumps(r.ignored, sort_keys=True),
                    "created_at": ctx.now,
                    "reported_at": None,
                }
            )
            answer.append({"to": person.email, "messageId": message_id})
    ctx.conn.execute(insert(InfobipMessage), rows)
    return {"BulkID": bulk_id, "Messages": answer}


class InfobipSchema(RawFieldsSchema):
    """infobip.Send and infobip.SendAsUser: the sends as the transport read them."""

    Sends = fields.Raw()
    BulkID = fields.Raw()
    Problems = fields.Raw()


@command("infobip.Send", schema=InfobipSchema, auth=Auth.SENDER, transport="v1", idempotent=True)
def infobip_send(ctx: Context, **params: Any) -> dict[str, Any]:
    return accept_infobip(ctx, params, sender_key_id=ctx.current_sender.key_id)


@command(
    "infobip.SendAsUser", schema=InfobipSchema, auth=Auth.USER, transport="v1", idempotent=True
)
def infobip_send_as_user(ctx: Context, **params: Any) -> dict[str, Any]:
    return accept_infobip(ctx, params, sender_key_id=None)
