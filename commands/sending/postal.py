"""Postal's legacy sends (send/message, send/raw) on the common send path.

The transport (app/http/postal.py) hands over the parameters as Postal's clients send them.
``send/message`` runs Postal's own checks first, in Postal's order (the first failure
answers, as ``PostalRefused`` with Postal's code): NoRecipients; TooManyToAddresses,
TooManyCCAddresses, TooManyBCCAddresses; NoContent; FromAddressMissing;
UnauthenticatedFromAddress; AttachmentMissingName; AttachmentMissingData. The send is then
handed to ``accept`` (commands/sending/handlers.py) as Octeth's fields, so the send checks,
suppressions, the quota, tracking and events are the common ones; what those refuse the
transport answers as ``ValidationError`` with Postern's text. ``send/raw`` is ``accept_raw``.

The answer is Postal's: the Message-ID the recipients see (without ``<>``) and, for each
recipient, its delivery's id and token.
"""

from __future__ import annotations

import base64
import binascii
import re
from email.parser import BytesHeaderParser
from email.utils import getaddresses, parseaddr
from typing import Any

from marshmallow import fields
from sqlalchemy import select

from commands.context import Context
from commands.errors import CommandError
from commands.registry import Auth, command
from commands.schema import RawFieldsSchema
from commands.sending.batch import domain_for
from commands.sending.handlers import accept, accept_raw
from models import Delivery, Domain
from models.payload import Person
from mta.addresses import belongs, normalise_address

MAX_ADDRESSES = 50  # To, CC and BCC each
SOURCE = "postal"


class PostalRefused(CommandError):
    """A send refused by one of Postal's own checks: its code and text."""

    def __init__(self, code: str, text: str):
        super().__init__(400, text)
        self.postal_code = code


class ParameterRefused(CommandError):
    """A parameter missing or of the wrong type: Postal's ``parameter-error``."""

    def __init__(self, text: str):
        super().__init__(400, text)


def required(params: dict[str, Any], *names: str) -> None:
    """ParameterRefused for the first of ``names`` not given."""
    for name in names:
        if params.get(name) in (None, "", []):
            raise ParameterRefused(f"`{name}` parameter is required but is missing")


NO_RECIPIENTS = ("NoRecipients", "There are no recipients defined to receive this message")
NO_CONTENT = ("NoContent", "There is no content defined for this e-mail")
FROM_MISSING = ("FromAddressMissing", "The From address is missing and is required")
UNAUTHENTICATED_FROM = (
    "UnauthenticatedFromAddress",
    "The From address is not authorised to send mail from this server",
)
ATTACHMENT_NAME = ("AttachmentMissingName", "An attachment is missing a name")
ATTACHMENT_DATA = ("AttachmentMissingData", "An attachment is missing data")


def _too_many(field: str) -> PostalRefused:
    code = {"To": "TooManyToAddresses", "CC": "TooManyCCAddresses", "BCC": "TooManyBCCAddresses"}
    return PostalRefused(
        code[field],
        f"The maximum number of {field} addresses has been reached (maximum {MAX_ADDRESSES})",
    )


def _text(value: Any) -> str:
    return value.strip() if isinstance(value, str) else ""


def _addresses(value: Any, field: str) -> list[dict[str, str]]:
    """An address list given as an array of strings or a comma-separated string, each
    ``addr`` or ``Name <addr>``: [{email, name}] (an address that cannot be read is kept as
    given, for the send checks to refuse)."""
    if value is None or value == "":
        return []
    if isinstance(value, str):
        items = [value]
    elif isinstance(value, list):
        items = value
    else:
        raise CommandError(400, f"{field.lower()} must be an array of addresses or a string")
    out: list[dict[str, str]] = []
    for item in items:
        if not isinstance(item, str):
            raise CommandError(400, f"{field.lower()} must hold addresses as strings")
        for name, address in getaddresses([item]):
            if address:
                out.append({"email": address, "name": name})
            elif name.strip():
                out.append({"email": name.strip(), "name": ""})
    return out


def _person(value: str) -> dict[str, str]:
    name, address = parseaddr(value)
    return {"email": address or value, "name": name}


def _attachments(value: Any) -> list[dict[str, str]]:
    if not isinstance(value, list):
        return []
    out: list[dict[str, str]] = []
    for item in value:
        if not isinstance(item, dict):
            continue  # as Postal: what is not an object is skipped
        name, data = item.get("name"), item.get("data")
        if not _text(name):
            raise PostalRefused(*ATTACHMENT_NAME)
        if not _text(data):
            raise PostalRefused(*ATTACHMENT_DATA)
        # The type without its parameters (a charset): the message writes its own.
        ctype = _text(item.get("content_type")).split(";")[0].strip() or "application/octet-stream"
        out.append({"filename": str(name), "content": re.sub(r"\s", "", str(data)), "type": ctype})
    return out


def _headers(value: Any) -> Any:
    return value if value not in (None, "", [], {}) else None


def read_message(ctx: Context, params: dict[str, Any]) -> tuple[Domain, dict[str, Any]]:
    """Postal's checks in Postal's order; the domain to send from and Octeth's fields."""
    to = _addresses(params.get("to"), "To")
    cc = _addresses(params.get("cc"), "CC")
    bcc = _addresses(params.get("bcc"), "BCC")
    if not (to or cc or bcc):
        raise PostalRefused(*NO_RECIPIENTS)
    for field, people in (("To", to), ("CC", cc), ("BCC", bcc)):
        if len(people) > MAX_ADDRESSES:
            raise _too_many(field)
    html, plain = params.get("html_body"), params.get("plain_body")
    if not _text(html) and not _text(plain):
        raise PostalRefused(*NO_CONTENT)
    raw_from = _text(params.get("From"))
    if not raw_from:
        raise PostalRefused(*FROM_MISSING)
    sender = _person(raw_from)
    address = normalise_address(sender["email"])
    domain = domain_for(ctx, address) if address else None
    if address is None or domain is None or not belongs(address, domain.name):
        raise PostalRefused(*UNAUTHENTICATED_FROM)
    envelope_sender = _text(params.get("sender"))
    if envelope_sender:
        own = normalise_address(_person(envelope_sender)["email"])
        if own is None or not belongs(own, domain.name):
            raise PostalRefused(*UNAUTHENTICATED_FROM)
    attachments = _attachments(params.get("attachments"))
    reply_to = _text(params.get("reply_to"))
    tag = params.get("tag")
    octeth: dict[str, Any] = {
        "From": sender,
        "To": to,
        "CC": cc,
        "BCC": bcc,
        "ReplyTo": [_person(reply_to)] if reply_to else None,
        "Subject": params.get("subject"),
        "ContentType": "html" if _text(html) else "plain",
        "HTMLContent": html if _text(html) else None,
        "PlainContent": plain if _text(plain) else None,
        "Headers": _headers(params.get("headers")),
        "Attachments": attachments or None,
        "Tags": [tag] if isinstance(tag, str) and tag.strip() else None,
    }
    return domain, octeth


def _answer(ctx: Context, message_id: str, header_id: str | None) -> dict[str, Any]:
    """Postal's success data: the Message-ID and each recipient's delivery id and token."""
    rows = ctx.conn.execute(
        select(Delivery.id, Delivery.recipient, Delivery.token)
        .where(Delivery.message_id == message_id)
        .order_by(Delivery.id)
    ).all()
    return {
        "message_id": header_id,
        "messages": {r.recipient: {"id": int(r.id), "token": r.token} for r in rows},
    }


def send_message(ctx: Context, params: dict[str, Any], sender_key_id: int | None) -> dict[str, Any]:
    domain, octeth = read_message(ctx, params)
    envelope_sender = _text(params.get("sender"))
    sender_header = None
    if envelope_sender:
        person = _person(envelope_sender)
        address = normalise_address(person["email"]) or person["email"]
        sender_header = Person(address, person["name"].strip())
    stored = accept(
        ctx,
        domain,
        octeth,
        source=SOURCE,
        sender_key_id=sender_key_id,
        sender_header=sender_header,
        bounce=params.get("bounce") is True,
    )
    # The Message-ID the worker writes (commands/delivery/build.py).
    return _answer(ctx, stored["MessageID"], f"{stored['MessageID']}@{domain.name}")


def raw_message_id(data: bytes) -> str | None:
    """A raw message's own Message-ID, without ``<>``; None when it has none."""
    end = re.search(rb"\r?\n\r?\n", data)
    headers = BytesHeaderParser().parsebytes(data[: end.end()] if end else data)
    value = headers.get("Message-ID")
    if value is None:
        return None
    text = "".join(str(value).split()).strip("<>")
    return text or None


def send_raw(ctx: Context, params: dict[str, Any]) -> dict[str, Any]:
    """send/raw: ``data`` (base64) for ``rcpt_to``."""
    required(params, "mail_from", "rcpt_to", "data")
    if not isinstance(params.get("mail_from"), str):
        raise ParameterRefused("`mail_from` parameter should be a String")
    if not isinstance(params.get("rcpt_to"), list):
        raise ParameterRefused("`rcpt_to` parameter should be an Array")
    if not isinstance(params.get("data"), str):
        raise ParameterRefused("`data` parameter should be a String")
    try:
        data = base64.b64decode(re.sub(r"\s", "", params["data"]), validate=True)
    except (binascii.Error, ValueError):
        raise ParameterRefused("`data` parameter is not valid base64") from None
    rcpt_to = [str(r) for r in params.get("rcpt_to") or []]
    if not rcpt_to:
        raise PostalRefused(*NO_RECIPIENTS)
    end = re.search(rb"\r?\n\r?\n", data)
    headers = BytesHeaderParser().parsebytes(data[: end.end()] if end else data)
    authors = [a for _n, a in getaddresses(headers.get_all("From") or []) if a]
    address = normalise_address(authors[0]) if authors else None
    domain = domain_for(ctx, address) if address else None
    if domain is None:
        raise PostalRefused(*UNAUTHENTICATED_FROM)
    try:
        stored = accept_raw(ctx, domain, data, rcpt_to, source=SOURCE)
    except CommandError as exc:
        if exc.code == 3:  # the From header is not at the domain
            raise PostalRefused(*UNAUTHENTICATED_FROM) from None
        raise
    return _answer(ctx, stored["MessageID"], raw_message_id(data))


class PostalSendSchema(RawFieldsSchema):
    """send/message, as Postal's clients send it (read by ``read_message``)."""

    to = fields.Raw()
    cc = fields.Raw()
    bcc = fields.Raw()
    sender = fields.Raw()
    subject = fields.Raw()
    reply_to = fields.Raw()
    plain_body = fields.Raw()
    html_body = fields.Raw()
    headers = fields.Raw()
    attachments = fields.Raw()
    tag = fields.Raw()
    bounce = fields.Raw()
    From = fields.Raw()  # "from" (parameter names are matched in any letter case)


class PostalRawSchema(RawFieldsSchema):
    """send/raw: the envelope and the message in base64."""

    mail_from = fields.Raw()
    rcpt_to = fields.Raw()
    data = fields.Raw()
    bounce = fields.Raw()


@command(
    "v1.Postal.Send", schema=PostalSendSchema, auth=Auth.SENDER, transport="v1", idempotent=True
)
def postal_send(ctx: Context, **params: Any) -> dict[str, Any]:
    return send_message(ctx, params, ctx.current_sender.key_id)


@command(
    "v1.Postal.SendAsUser", schema=PostalSendSchema, auth=Auth.USER, transport="v1", idempotent=True
)
def postal_send_as_user(ctx: Context, **params: Any) -> dict[str, Any]:
    return send_message(ctx, params, None)


@command(
    "v1.Postal.SendRaw", schema=PostalRawSchema, auth=Auth.SENDER, transport="v1", idempotent=True
)
def postal_send_raw(ctx: Context, **params: Any) -> dict[str, Any]:
    return send_raw(ctx, params)


@command(
    "v1.Postal.SendRawAsUser",
    schema=PostalRawSchema,
    auth=Auth.USER,
    transport="v1",
    idempotent=True,
)
def postal_send_raw_as_user(ctx: Context, **params: Any) -> dict[str, Any]:
    return send_raw(ctx, params)
