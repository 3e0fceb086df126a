"""A batch send: one request, one message per recipient, accepted in one transaction.

Each recipient gets a message of its own (its own id, Message-ID, delivery and tracking
tokens), built from the request's common parts with the recipient's own values and headers.
The common parts are checked once by the send checks (commands/sending/checks.py: the
sender, subject, parts, headers, attachments, size, and each recipient's message rendered);
every failure of the request is gathered and answered together (``BatchRefused``), each a
string that names its field (``recipients[1].email: ...``), as FreshMail's v3 API answers.

The transport (app/http/freshmail.py) reads the wire format into the parameters below and
hands over what it found wrong with its shape (``Problems``); the command adds what needs
the database: the sender's domain, the template, suppressions and the quota.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from typing import Any

from marshmallow import fields
from sqlalchemy import select

from commands import observers
from commands.context import Context
from commands.errors import CommandError
from commands.registry import Auth, command
from commands.schema import RawFieldsSchema
from commands.sending.checks import Recipient, check_send
from commands.sending.handlers import (
    SUSPENDED_ACCOUNT,
    quota_of,
    used_in_period,
    write_message,
)
from commands.suppression import suppressed_among
from commands.templates.store import Parts, find_by_hash, parts_of
from core.settings import Config
from models import Domain
from models.base import new_uuid
from models.domains import ENABLED
from models.payload import Composed, File, Person, Personalization, encode_payload
from mta.addresses import belongs
from mta.message import header_problem, is_trace_header

MAX_BATCH = 100  # recipients in one batch
BATCH_REFUSED = 400  # the code of a refused batch (its texts say why)


class BatchRefused(CommandError):
    """Every reason a batch was refused, one string per failure naming its field."""

    def __init__(self, errors: list[str]):
        super().__init__(BATCH_REFUSED, "; ".join(errors), http_status=400)
        self.errors = errors


@dataclass(frozen=True)
class _Limits:
    """The sending limits with room for a batch: each message has a single recipient."""

    max_recipients: int
    max_bcc: int
    max_reply_to: int
    max_message_bytes: int
    max_schedule_seconds: int


@dataclass(frozen=True)
class _Settings:
    sending: _Limits


def batch_settings(config: Config, most: int = MAX_BATCH) -> _Settings:
    """The sending limits for a batch of at most ``most`` recipients, one message each."""
    s = config.sending
    return _Settings(
        _Limits(
            max(most, s.max_recipients),
            s.max_bcc,
            s.max_reply_to,
            s.max_message_bytes,
            s.max_schedule_seconds,
        )
    )


def _recipient_headers(i: int, value: Any, errors: list[str]) -> dict[str, str]:
    if value in (None, {}, []):
        return {}
    if not isinstance(value, dict):
        errors.append(f"recipients[{i}].headers: This value should be of type object.")
        return {}
    out: dict[str, str] = {}
    for name, raw in value.items():
        problem = _header_name_problem(str(name))
        if problem is None and (not isinstance(raw, str | int | float) or isinstance(raw, bool)):
            problem = "This value should be of type string."
        if problem is None:
            problem = header_problem(str(name), str(raw))
        if problem is not None:
            errors.append(f"recipients[{i}].headers.{name}: {problem}")
        else:
            out[str(name)] = str(raw)
    return out


def _header_name_problem(name: str) -> str | None:
    if not name.lower().startswith("x-"):
        return "Header name must start with X-."
    if is_trace_header(name):
        return "This header cannot be set."
    return None


# The field a send check's failure is about, by its code (commands/sending/checks.py).
_FIELD_OF_CODE = {
    8: "subject",
    9: "contents",
    10: "contents",
    11: "contents",
    35: "headers",
    39: "attachments",
    40: "contents",
    41: "headers",
    42: "recipients",
    43: "contents",
}


def _named(exc: CommandError) -> str:
    """A send check's failure as a batch answers it: the field it is about, then its text
    (a recipient's values named as the batch names them)."""
    text = _RECIPIENT_VALUES.sub(r"recipients[\1].personalization", exc.text)
    field = _FIELD_OF_CODE.get(exc.code, "from" if exc.code < 8 else "")
    if text.startswith("recipients["):
        return text
    return f"{field}: {text}" if field else text


_RECIPIENT_VALUES = re.compile(r"To\[(\d+)\]\.Personalization")


def domain_for(ctx: Context, sender_email: str) -> Domain | None:
    """The domain a send from ``sender_email`` goes out from: the sender key's, else the
    user's enabled domain the address belongs to (the most specific one)."""
    if ctx.sender is not None:
        return ctx.sender_domain
    with ctx.read() as s:
        rows = s.scalars(
            select(Domain).where(Domain.user_id == ctx.current_user.id, Domain.status == ENABLED)
        ).all()
        found = [d for d in rows if belongs(sender_email, d.name)]
        if not found:
            return None
        best = max(found, key=lambda d: len(d.name))
        s.expunge(best)
        return best


def accept_batch(
    ctx: Context, params: dict[str, Any], *, source: str, sender_key_id: int | None
) -> dict[str, Any]:
    """Check the batch; store a message, delivery and event per recipient; answer
    ``{"Messages": [{"email", "id"}, ...]}`` in the recipients' order."""
    if not ctx.current_user.enabled or ctx.current_user.suspended:
        raise CommandError(*SUSPENDED_ACCOUNT)
    errors: list[str] = [str(p) for p in params.get("Problems") or []]
    recipients: list[dict[str, Any]] = [
        r for r in params.get("Recipients") or [] if isinstance(r, dict)
    ]
    sender = params.get("From") if isinstance(params.get("From"), dict) else None
    sender_email = str((sender or {}).get("email") or "")
    domain = domain_for(ctx, sender_email) if sender_email else None
    if sender_email and domain is None:
        errors.append("from.email: The sender's domain is not one of your enabled domains.")
    elif sender_email and domain is not None and not belongs(sender_email, domain.name):
        errors.append(f"from.email: The address must be at {domain.name} or its subdomains.")
        domain = None
    elif domain is not None and domain.suspended:
        errors.append(f"from.email: The domain {domain.name} is suspended.")
        domain = None
    template: Parts | None = None
    template_hash = params.get("TemplateHash")
    if isinstance(template_hash, str) and template_hash:
        with ctx.read() as s:
            row = find_by_hash(s, ctx.current_user.id, template_hash)
            template = parts_of(row) if row is not None else None
        if template is None:
            errors.append("templateHash: Template not found.")
    per_headers = [
        _recipient_headers(r.get("index", i), r.get("headers"), errors)
        for i, r in enumerate(recipients)
    ]
    if errors or domain is None or not recipients:
        raise BatchRefused(errors or ["recipients: This value should not be blank."])

    octeth: dict[str, Any] = {
        "From": sender,
        "To": [
            {"email": r["email"], "name": r.get("name") or "", "Personalization": r.get("values")}
            for r in recipients
        ],
        "Subject": params.get("Subject"),
        "ContentType": None
        if template is not None and not params.get("HTMLContent") and not params.get("PlainContent")
        else ("html" if params.get("HTMLContent") else "plain"),
        "HTMLContent": params.get("HTMLContent"),
        "PlainContent": params.get("PlainContent"),
        "Headers": params.get("Headers"),
        "Attachments": params.get("Attachments"),
        "ReplyTo": params.get("ReplyTo"),
    }
    try:
        send = check_send(
            octeth, domain, batch_settings(ctx.config), ctx.now, template, personalize=True
        )
    except CommandError as exc:
        raise BatchRefused([_named(exc)]) from None

    user = ctx.current_user
    quota = quota_of(ctx.config, user)
    used = used_in_period(ctx, user.id) if quota else 0  # the user's quota period
    common = {
        "user_id": domain.user_id,
        "domain_id": domain.id,
        "domain_name": domain.name,
        "sender_key_id": sender_key_id,
        "source": source,
        "from_email": send.sender["email"],
        "tags": "[]",
        "size": send.size,
        "send_at": None,
        "created_at": ctx.now,
    }
    base = Composed(
        sender=Person(send.sender["email"], send.sender.get("name", "")),
        reply_to=tuple(Person(p["email"], p.get("name", "")) for p in send.reply_to),
        subject=send.subject,
        html=send.html,
        text=send.text,
        attachments=tuple(File(**a) for a in send.attachments),
        track_links=send.track_links,
        track_opens=send.track_opens,
    )
    p = send.personalization or Personalization()
    people: list[Recipient] = []
    messages: list[dict[str, Any]] = []
    for r, own_headers in zip(recipients, per_headers, strict=True):
        person = Recipient(str(r["email"]), str(r.get("name") or ""), "to")
        payload = Composed(
            sender=base.sender,
            to=(Person(person.email, person.name),),
            reply_to=base.reply_to,
            subject=base.subject,
            html=base.html,
            text=base.text,
            headers={**send.headers, **own_headers},
            attachments=base.attachments,
            track_links=base.track_links,
            track_opens=base.track_opens,
            personalization=Personalization(
                {**p.values, **(r.get("values") or {})},
                {},
            ),
        )
        people.append(person)
        messages.append(
            {
                **common,
                "id": new_uuid(),
                "subject": send.subject[:1000],
                "payload": encode_payload(payload),
            }
        )
    # The write transaction begins here: suppressions added meanwhile are seen.
    blocked = suppressed_among(ctx.conn, domain.user_id, domain.id, (r.email for r in people))
    if blocked:
        raise BatchRefused(
            [
                f"recipients[{r.get('index', i)}].email: This address is in the suppression "
                "list: mail to it is blocked."
                for i, (r, person) in enumerate(zip(recipients, people, strict=True))
                if person.email.lower() in blocked
            ]
        )
    if ctx.accepted is not None:
        used += ctx.accepted.get(user.id, 0)
    if quota and used + len(people) > quota:
        raise BatchRefused(["recipients: Email sending limit reached."])
    for message, person in zip(messages, people, strict=True):
        write_message(ctx.conn, message, [person], set(), ctx.now)
        observers.accepted(ctx.work, source, 1, 0)
    return {
        "Messages": [
            {"email": person.email, "id": message["id"]}
            for message, person in zip(messages, people, strict=True)
        ]
    }


class BatchFields:
    """A batch, as the transport read it (see accept_batch)."""

    From = fields.Raw()
    Subject = fields.Raw()
    HTMLContent = fields.Raw()
    PlainContent = fields.Raw()
    TemplateHash = fields.Raw()
    Headers = fields.Raw()
    Attachments = fields.Raw()
    ReplyTo = fields.Raw()
    Recipients = fields.Raw()
    Problems = fields.Raw()


class BatchSchema(BatchFields, RawFieldsSchema):
    """v1.Batch.Send and v1.Batch.SendAsUser: a batch, loaded as given."""


@command("v1.Batch.Send", schema=BatchSchema, auth=Auth.SENDER, transport="v1", idempotent=True)
def batch_send(ctx: Context, **params: Any) -> dict[str, Any]:
    return accept_batch(ctx, params, source="freshmail", sender_key_id=ctx.current_sender.key_id)


@command("v1.Batch.SendAsUser", schema=BatchSchema, auth=Auth.USER, transport="v1", idempotent=True)
def batch_send_as_user(ctx: Context, **params: Any) -> dict[str, Any]:
    return accept_batch(ctx, params, source="freshmail", sender_key_id=None)
