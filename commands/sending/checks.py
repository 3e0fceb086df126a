"""The send checks: one small check per error code, run in the documented order.

The first check that fails answers. The order (after authentication: /api/v1 1, 13, 12;
/api.php 99998, then DomainID 2):
  32 domain not activated;
  8 Subject; 9 ContentType; 10 HTMLContent; 11 PlainContent;
  3 From missing or malformed, 23 From address (or name) invalid, 3 From not at the domain;
  18/19/20 To (20: none); 21/22 CC; 20 more To and CC than sending.max_recipients;
  24/25/26/27 BCC; 28/29/30/31 ReplyTo;
  15 TemplateID; 16 TargetListID;
  35 Headers; 36 Tags; 37 TrackLinks/TrackOpens; 38 SendAt; 39 Attachments;
  40 message larger than sending.max_message_bytes;
then, once the database is read (commands.sending.handlers.store): 14 every recipient
suppressed; 17 sending quota reached.

A value that could not be written into the message (a lone surrogate such as "\\ud800" in
a name, the Subject, a body, a header value or an attachment's name) is refused here with
its field's code, rather than failing the message's build after it was accepted.
"""

from __future__ import annotations

import base64
import binascii
import json
import mimetypes
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from typing import Any, NamedTuple, Protocol

from commands.errors import CommandError
from commands.schema import is_ascii_number
from models import Domain
from models.domains import ENABLED
from mta.addresses import belongs, normalise_address
from mta.message import (
    LINE_BREAKS,
    TRACE_PROBLEM,
    header_problem,
    is_trace_header,
    lone_surrogate,
)

MAX_TAGS = 20
MAX_TAG_LENGTH = 100


class SendingLimits(Protocol):
    """The [sending] settings the checks read."""

    @property
    def max_recipients(self) -> int: ...
    @property
    def max_bcc(self) -> int: ...
    @property
    def max_reply_to(self) -> int: ...
    @property
    def max_message_bytes(self) -> int: ...
    @property
    def max_schedule_seconds(self) -> int: ...


class Settings(Protocol):
    @property
    def sending(self) -> SendingLimits: ...


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


@dataclass
class People:
    """An address field read entry by entry: the entries up to the first that is not right,
    and what is wrong with that one ("missing", "invalid"; "not an array" for the whole)."""

    entries: list[dict[str, str]]
    problem: str | None = None
    surrogate_at: int | None = None  # where the invalid entry's name has a lone surrogate

    def invalid(self, code: int, text: str, label: str) -> CommandError:
        """The answer for an invalid entry: ``text``, or why its ``label`` name is not text."""
        if self.surrogate_at is not None:
            return fail(code, not_text(f"{label} name", self.surrogate_at))
        return fail(code, text)


@dataclass
class Draft:
    """A send being checked: its parameters, and what the checks have read from them."""

    params: Mapping[str, Any]
    domain: Domain
    limits: SendingLimits
    now: datetime
    subject: str = ""
    content_type: str = ""
    html: str | None = None
    text: str | None = None
    content_bytes: int = 0  # of the HTML and plain parts, in UTF-8
    sender_fields: dict[str, Any] = field(default_factory=dict)
    sender: dict[str, str] = field(default_factory=dict)
    to: People = field(default_factory=lambda: People([]))
    cc: People = field(default_factory=lambda: People([]))
    bcc: People = field(default_factory=lambda: People([]))
    reply_to: People = field(default_factory=lambda: People([]))
    headers: dict[str, str] = field(default_factory=dict)
    tags: list[str] = field(default_factory=list)
    track_links: bool | None = None
    track_opens: bool | None = None
    send_at: datetime | None = None
    attachments: list[dict[str, Any]] = field(default_factory=list)
    attachment_bytes: int = 0
    size: int = 0

    def accepted(self) -> Accepted:
        recipients: list[Recipient] = []
        seen: set[str] = set()
        for kind, people in (("to", self.to), ("cc", self.cc), ("bcc", self.bcc)):
            for person in people.entries:
                key = person["email"].lower()
                if key not in seen:
                    seen.add(key)
                    recipients.append(Recipient(person["email"], person["name"], kind))
        return Accepted(
            sender=self.sender,
            recipients=recipients,
            reply_to=self.reply_to.entries,
            subject=self.subject,
            html=self.html,
            text=self.text,
            headers=self.headers,
            tags=self.tags,
            track_links=self.track_links,
            track_opens=self.track_opens,
            send_at=self.send_at,
            attachments=self.attachments,
            size=self.size,
        )


class Check(NamedTuple):
    code: int
    run: Callable[[Draft], None]


CHECKS: list[Check] = []  # in the order they run: the order they are defined below


def check(code: int) -> Callable[[Callable[[Draft], None]], Callable[[Draft], None]]:
    """Add the decorated function to CHECKS: it raises CommandError ``code`` (only) when
    the send fails it, and may keep what it read on the draft for the checks after it."""

    def add(run: Callable[[Draft], None]) -> Callable[[Draft], None]:
        CHECKS.append(Check(code, run))
        return run

    return add


def check_send(
    params: Mapping[str, Any], domain: Domain, config: Settings, now: datetime
) -> Accepted:
    """Run every check in order on a send's parameters; CommandError for the first failure."""
    draft = Draft(params, domain, config.sending, now)
    for c in CHECKS:
        c.run(draft)
    return draft.accepted()


def fail(code: int, text: str) -> CommandError:
    return CommandError(code, text)


def not_text(what: str, at: int) -> str:
    """Why a value with a lone surrogate at index ``at`` is refused."""
    return (
        f"{what} is not valid Unicode text: it has a lone surrogate at character {at + 1} "
        "(a JSON \\ud800-\\udfff escape that is not half of a pair)"
    )


def shown(text: str) -> str:
    """``text`` as an answer may quote it: a lone surrogate (which no response could be
    encoded with) written as its escape."""
    if lone_surrogate(text) is None:
        return text
    return text.encode("utf-8", "backslashreplace").decode("utf-8")


# -- the domain, the subject and the content -------------------------------------------------


@check(32)
def domain_active(d: Draft) -> None:
    if d.domain.status != ENABLED:
        raise fail(32, "Domain is not activated")


@check(8)
def subject(d: Draft) -> None:
    subject = d.params.get("Subject")
    if not isinstance(subject, str) or not subject.strip():
        raise fail(8, "Missing Subject")
    if "\r" in subject or "\n" in subject or len(subject) > 998:
        raise fail(8, "Subject must be one line of at most 998 characters")
    at = lone_surrogate(subject)
    if at is not None:
        raise fail(8, not_text("Subject", at))
    d.subject = subject


@check(9)
def content_type(d: Draft) -> None:
    content_type = d.params.get("ContentType")
    if not isinstance(content_type, str) or not content_type.strip():
        raise fail(9, "Missing ContentType")
    d.content_type = content_type.strip().lower()
    if d.content_type not in ("html", "plain"):
        raise fail(9, 'Missing ContentType: it must be "html" or "plain"')


def _content(value: Any) -> str | None:
    return value if isinstance(value, str) and value.strip() else None


def _encoded_size(value: str | None, code: int, what: str) -> int:
    """The UTF-8 size of a body part, or CommandError ``code`` when it is not text."""
    if value is None:
        return 0
    try:
        return len(value.encode())
    except UnicodeEncodeError as exc:
        raise fail(code, not_text(what, exc.start)) from None


@check(10)
def html_content(d: Draft) -> None:
    html = _content(d.params.get("HTMLContent"))
    if d.content_type == "html" and html is None:
        raise fail(10, "Missing HTMLContent")
    d.html = html
    d.content_bytes = _encoded_size(html, 10, "HTMLContent")


@check(11)
def plain_content(d: Draft) -> None:
    text = _content(d.params.get("PlainContent"))
    if d.content_type == "plain" and text is None:
        raise fail(11, "Missing PlainContent")
    d.text = text
    d.content_bytes += _encoded_size(text, 11, "PlainContent")


# -- the sender ------------------------------------------------------------------------------

FROM_MISSING = (
    3,
    "From parameter is either missing or invalid. Make sure you pass both name "
    "and email address for the from field",
)


def maybe_json(value: Any) -> Any:
    """Structured fields may arrive as JSON text (form bodies)."""
    if isinstance(value, str) and value.strip()[:1] in ("[", "{"):
        try:
            return json.loads(value)
        except ValueError:
            return value
    return value


@check(3)
def sender_given(d: Draft) -> None:
    sender = maybe_json(d.params.get("From"))
    if isinstance(sender, str):
        sender = {"email": sender}
    if not isinstance(sender, dict):
        raise fail(*FROM_MISSING)
    fields = {str(k).lower(): v for k, v in sender.items()}
    if not isinstance(fields.get("email"), str) or not fields["email"].strip():
        raise fail(*FROM_MISSING)
    d.sender_fields = fields


@check(23)
def sender_valid(d: Draft) -> None:
    email = normalise_address(d.sender_fields["email"])
    name = str(d.sender_fields.get("name") or "").strip()
    if email is None or "\n" in name or "\r" in name:
        raise fail(23, "Invalid from email address format")
    at = lone_surrogate(name)
    if at is not None:
        raise fail(23, not_text("The From name", at))
    d.sender = {"email": email, "name": name}


@check(3)
def sender_at_domain(d: Draft) -> None:
    if not belongs(d.sender["email"], d.domain.name):
        raise fail(3, f"From must be an address at {d.domain.name} (or one of its subdomains)")


# -- recipients ------------------------------------------------------------------------------


def read_people(value: Any, *, strict: bool = False) -> People:
    """[{email, name}] from objects or bare addresses (names are optional), up to the first
    entry that is not right. A single entry or a bare address is taken unless ``strict``."""
    value = maybe_json(value)
    if value is None or value == "":
        return People([])
    if not isinstance(value, list):
        if strict:
            return People([], "not an array")
        value = [value]
    people = People([])
    for entry in value:
        if isinstance(entry, str):
            entry = {"email": entry}
        if not isinstance(entry, dict):
            people.problem = "missing"
            break
        lowered = {str(k).lower(): v for k, v in entry.items()}
        email, name = lowered.get("email"), lowered.get("name", "")
        if not isinstance(email, str) or not email.strip():
            people.problem = "missing"
            break
        if not isinstance(name, str):
            name = str(name)
        normalised = normalise_address(email)
        if normalised is None or "\r" in name or "\n" in name:
            people.problem = "invalid"
            break
        people.surrogate_at = lone_surrogate(name)
        if people.surrogate_at is not None:
            people.problem = "invalid"
            break
        people.entries.append({"email": normalised, "name": name.strip()})
    return people


@check(18)
def to_entries_complete(d: Draft) -> None:
    d.to = read_people(d.params.get("To"))
    if d.to.problem == "missing":
        raise fail(18, "Recipient name or email address is missing")


@check(19)
def to_entries_valid(d: Draft) -> None:
    if d.to.problem == "invalid":
        raise d.to.invalid(19, "Recipient email address is invalid.", "Recipient")


@check(20)
def some_recipient(d: Draft) -> None:
    if not d.to.entries:
        raise fail(20, "There is no recipient set for the email.")


@check(21)
def cc_entries_complete(d: Draft) -> None:
    d.cc = read_people(d.params.get("CC"))
    if d.cc.problem == "missing":
        raise fail(21, "CC name or email address is missing")


@check(22)
def cc_entries_valid(d: Draft) -> None:
    if d.cc.problem == "invalid":
        raise d.cc.invalid(22, "CC email address is invalid.", "CC")


@check(20)
def not_too_many_recipients(d: Draft) -> None:
    most = d.limits.max_recipients
    if len(d.to.entries) + len(d.cc.entries) > most:
        raise fail(20, f"Too many recipients: at most {most} To and CC addresses together")


@check(24)
def bcc_is_array(d: Draft) -> None:
    d.bcc = read_people(d.params.get("BCC"), strict=True)
    if d.bcc.problem == "not an array":
        raise fail(24, "BCC email addresses must be set as an array")


@check(25)
def bcc_entries_complete(d: Draft) -> None:
    if d.bcc.problem == "missing":
        raise fail(25, "BCC name or email address is missing")


@check(26)
def bcc_entries_valid(d: Draft) -> None:
    if d.bcc.problem == "invalid":
        raise d.bcc.invalid(26, "BCC email address is invalid.", "BCC")


@check(27)
def not_too_many_bcc(d: Draft) -> None:
    if len(d.bcc.entries) > d.limits.max_bcc:
        raise fail(
            27,
            "The number of BCC email addresses exceed the allowed email address "
            f"count ({d.limits.max_bcc})",
        )


@check(28)
def reply_to_is_array(d: Draft) -> None:
    d.reply_to = read_people(d.params.get("ReplyTo"), strict=True)
    if d.reply_to.problem == "not an array":
        raise fail(28, "Reply-To email addresses must be set as an array")


@check(29)
def reply_to_entries_complete(d: Draft) -> None:
    if d.reply_to.problem == "missing":
        raise fail(29, "Reply-To name or email address is missing")


@check(30)
def reply_to_entries_valid(d: Draft) -> None:
    if d.reply_to.problem == "invalid":
        raise d.reply_to.invalid(30, "Reply-To email address is invalid.", "Reply-To")


@check(31)
def not_too_many_reply_to(d: Draft) -> None:
    if len(d.reply_to.entries) > d.limits.max_reply_to:
        raise fail(
            31,
            "The number of Reply-To email addresses exceed the allowed email "
            f"address count ({d.limits.max_reply_to})",
        )


# -- what Postern does not offer -------------------------------------------------------------


@check(15)
def no_template(d: Draft) -> None:
    if d.params.get("TemplateID") not in (None, ""):
        raise fail(15, "Invalid TemplateID")


@check(16)
def no_target_list(d: Draft) -> None:
    if d.params.get("TargetListID") not in (None, ""):
        raise fail(16, "Invalid TargetListID")


# -- options ---------------------------------------------------------------------------------


@check(35)
def headers(d: Draft) -> None:
    value = maybe_json(d.params.get("Headers"))
    if value in (None, ""):
        return
    if not isinstance(value, dict):
        raise fail(35, "Headers must be an object of header names and values")
    for name, raw in value.items():
        if not isinstance(raw, str | int | float) or isinstance(raw, bool):
            raise fail(35, f"Invalid header {shown(str(name))}: the value must be a string")
        problem = header_problem(str(name), str(raw), trace_ok=True)  # 41, after this
        if problem:
            raise fail(35, f"Invalid header {shown(str(name))}: {problem}")
        d.headers[str(name)] = str(raw)


@check(41)
def no_trace_headers(d: Draft) -> None:
    for name in d.headers:
        if is_trace_header(name):
            raise fail(41, f"Invalid header {shown(name)}: {TRACE_PROBLEM}")


@check(36)
def tags(d: Draft) -> None:
    value = maybe_json(d.params.get("Tags"))
    if value in (None, ""):
        return
    if isinstance(value, str):
        value = value.split(",")
    if not isinstance(value, list) or len(value) > MAX_TAGS:
        raise fail(36, f"Tags must be an array of at most {MAX_TAGS} strings")
    for tag in value:
        if not isinstance(tag, str):
            raise fail(36, "Tags must be strings")
        tag = tag.strip()
        if not tag or len(tag) > MAX_TAG_LENGTH or not tag.isprintable() or "," in tag:
            raise fail(
                36, f"Invalid tag {tag!r}: 1 to {MAX_TAG_LENGTH} printable characters, no commas"
            )
        if tag not in d.tags:
            d.tags.append(tag)


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
    raise fail(37, f'{name} must be "true" or "false"')


@check(37)
def tracking_flags(d: Draft) -> None:
    d.track_links = _flag(d.params.get("TrackLinks"), "TrackLinks")
    d.track_opens = _flag(d.params.get("TrackOpens"), "TrackOpens")


@check(38)
def send_at(d: Draft) -> None:
    value = d.params.get("SendAt")
    if value in (None, ""):
        return
    text = str(value).strip()
    if not is_ascii_number(text.removeprefix("-"), 12):
        raise fail(38, "SendAt must be a Unix time (seconds)")
    stamp = int(text)
    try:
        when = datetime.fromtimestamp(stamp, UTC)
    except (OverflowError, OSError, ValueError):
        raise fail(38, "SendAt must be a Unix time (seconds)") from None
    if when <= d.now:
        return
    most = d.limits.max_schedule_seconds
    if when > d.now + timedelta(seconds=most):
        raise fail(38, f"SendAt may be at most {most} seconds ahead")
    d.send_at = when


def _breaks_line(text: str) -> bool:
    return any(c in LINE_BREAKS for c in text)


@check(39)
def attachments(d: Draft) -> None:
    value = maybe_json(d.params.get("Attachments"))
    if value in (None, ""):
        return
    if not isinstance(value, list):
        raise fail(39, "Attachments must be an array")
    for i, item in enumerate(value):
        if not isinstance(item, dict):
            raise fail(39, f"Attachment {i + 1} must be an object")
        a = {str(k).lower(): v for k, v in item.items()}
        name, content = a.get("filename"), a.get("content")
        if (
            not isinstance(name, str)
            or not name.strip()
            or len(name) > 255
            or any(c in name for c in "\r\n\0")
        ):
            raise fail(39, f"Attachment {i + 1}: filename is missing or invalid")
        at = lone_surrogate(name)
        if at is not None:
            raise fail(39, not_text(f"Attachment {i + 1}: the filename", at))
        if not isinstance(content, str):
            raise fail(39, f"Attachment {name}: content (base64) is missing")
        try:
            data = base64.b64decode(content, validate=True)
        except (binascii.Error, ValueError):
            raise fail(39, f"Attachment {name}: content is not valid base64") from None
        ctype = a.get("type") or mimetypes.guess_type(name)[0] or "application/octet-stream"
        if not isinstance(ctype, str) or ctype.count("/") != 1 or any(c in ctype for c in "\r\n;"):
            raise fail(39, f"Attachment {name}: invalid type")
        disposition = str(a.get("disposition") or "attachment").lower()
        if disposition not in ("attachment", "inline"):
            raise fail(39, f"Attachment {name}: disposition must be attachment or inline")
        cid = a.get("contentid") or None
        if cid is not None and (
            not isinstance(cid, str)
            or any(c in cid for c in "\r\n<>")
            or _breaks_line(cid)
            or lone_surrogate(cid) is not None
        ):
            raise fail(39, f"Attachment {name}: invalid contentid")
        d.attachment_bytes += len(data)
        d.attachments.append(
            {
                "filename": name.strip(),
                "content": content,
                "type": ctype.lower(),
                "disposition": disposition,
                "contentid": cid,
            }
        )


@check(40)
def not_too_large(d: Draft) -> None:
    d.size = (
        len(d.subject)
        + d.content_bytes
        + d.attachment_bytes
        + sum(len(k) + len(v) + 4 for k, v in d.headers.items())
    )
    most = d.limits.max_message_bytes
    if d.size > most:
        raise fail(40, f"Message too large: {d.size} bytes, at most {most}")
