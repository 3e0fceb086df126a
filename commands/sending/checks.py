"""The send checks: one small check per error code, run in the documented order.

The first check that fails answers. The order (after authentication: /api/v1 1, 13, 12;
/api.php 99998, then DomainID 2):
  32 domain not activated; 15 TemplateID (not one of the user's templates);
  8 Subject; 9 ContentType; 10 HTMLContent; 11 PlainContent;
  3 From missing or malformed, 23 From address (or name) invalid, 3 From not at the domain;
  18/19/20 To (20: none); 21/22 CC; 20 more To and CC than sending.max_recipients;
  24/25/26/27 BCC; 28/29/30/31 ReplyTo;
  16 TargetListID; 42 Personalization; 43 the subject and parts as templates (a
  personalized send: a syntax error, or what cannot be rendered for a recipient);
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
import re
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from typing import Any, NamedTuple, Protocol

from commands.errors import CommandError
from commands.schema import is_ascii_number
from commands.templates.render import one_line
from commands.templates.store import Parts, syntax_problem
from models import Domain
from models.domains import ENABLED
from models.payload import Personalization
from mta.addresses import belongs, normalise_address
from mta.message import (
    LINE_BREAKS,
    TRACE_PROBLEM,
    header_problem,
    is_trace_header,
    lone_surrogate,
)
from mta.templating import TemplateError, render

MAX_TAGS = 20
MAX_TAG_LENGTH = 100
MAX_VALUES = 100  # names in one Personalization object
MAX_VALUES_BYTES = 65536  # characters of one Personalization object's names and values
VALUE_NAME = re.compile(r"[A-Za-z_][A-Za-z0-9_]{0,99}")


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
    personalization: Personalization | None = None  # set: subject and parts are templates


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
    template: Parts | None = None  # the TemplateID's template, when it is the user's
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
    personalization: Personalization | None = None
    personalize: bool = False  # the subject and parts are templates whatever the values

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
            personalization=self.personalization,
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
    params: Mapping[str, Any],
    domain: Domain,
    config: Settings,
    now: datetime,
    template: Parts | None = None,
    *,
    personalize: bool = False,
) -> Accepted:
    """Run every check in order on a send's parameters; CommandError for the first failure.

    ``template`` is the parts of the send's ``TemplateID`` when that is one of the user's
    templates (read by the caller); the send's own Subject and parts override its."""
    draft = Draft(params, domain, config.sending, now, template, personalize=personalize)
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


def _given(value: Any) -> bool:
    return value not in (None, "")


@check(15)
def template_found(d: Draft) -> None:
    if _given(d.params.get("TemplateID")) and d.template is None:
        raise fail(15, "Invalid TemplateID")


@check(8)
def subject(d: Draft) -> None:
    subject = d.params.get("Subject")
    if d.template is not None and (not isinstance(subject, str) or not subject.strip()):
        subject = d.template.subject
    if not isinstance(subject, str) or not subject.strip():
        raise fail(8, "Missing Subject")
    if "\r" in subject or "\n" in subject or len(subject) > 998:
        raise fail(8, "Subject must be one line of at most 998 characters")
    if "\x00" in subject:  # no header may hold one (RFC 5322), nor PostgreSQL's text
        raise fail(8, "Subject must not contain NUL characters")
    at = lone_surrogate(subject)
    if at is not None:
        raise fail(8, not_text("Subject", at))
    d.subject = subject


@check(9)
def content_type(d: Draft) -> None:
    content_type = d.params.get("ContentType")
    if d.template is not None and (not isinstance(content_type, str) or not content_type.strip()):
        content_type = "html" if d.template.html is not None else "plain"
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
    if html is None and d.template is not None:
        html = d.template.html
    if d.content_type == "html" and html is None:
        raise fail(10, "Missing HTMLContent")
    d.html = html
    d.content_bytes = _encoded_size(html, 10, "HTMLContent")


@check(11)
def plain_content(d: Draft) -> None:
    text = _content(d.params.get("PlainContent"))
    if text is None and d.template is not None:
        text = d.template.text
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


@check(16)
def no_target_list(d: Draft) -> None:
    if d.params.get("TargetListID") not in (None, ""):
        raise fail(16, "Invalid TargetListID")


# -- personalization -------------------------------------------------------------------------


def read_values(value: Any, where: str) -> dict[str, Any]:
    """A Personalization object: names (as template names are written) and values (text,
    numbers, true, false or null), at most ``MAX_VALUES`` of them and ``MAX_VALUES_BYTES``
    characters in all; CommandError 42 otherwise."""
    value = maybe_json(value)
    if value in (None, ""):
        return {}
    if not isinstance(value, dict):
        raise fail(42, f"{where} must be an object of names and values")
    if len(value) > MAX_VALUES:
        raise fail(42, f"{where} has more than {MAX_VALUES} values")
    values: dict[str, Any] = {}
    size = 0
    for name, item in value.items():
        name = str(name)
        if not VALUE_NAME.fullmatch(name):
            raise fail(
                42,
                f"{where}: {shown(name)[:100]!r} is not a name (letters, digits and _, "
                "not beginning with a digit, at most 100)",
            )
        if isinstance(item, str):
            at = lone_surrogate(item)
            if at is not None:
                raise fail(42, not_text(f"{where}.{name}", at))
        elif item is not None and not isinstance(item, bool | int | float):
            raise fail(42, f"{where}.{name} must be text, a number, true, false or null")
        size += len(name) + len(str(item))
        values[name] = item
    if size > MAX_VALUES_BYTES:
        raise fail(42, f"{where} is larger than {MAX_VALUES_BYTES} characters")
    return values


def _recipient_values(to: Any) -> dict[str, dict[str, Any]]:
    """Each To entry's own Personalization, by its address in lower case (the first entry of
    an address given twice); the entries were checked by 18 and 19."""
    entries = maybe_json(to)
    if not isinstance(entries, list):
        entries = [entries]
    found: dict[str, dict[str, Any]] = {}
    for i, entry in enumerate(entries):
        if not isinstance(entry, dict):
            continue
        lowered = {str(k).lower(): v for k, v in entry.items()}
        address = normalise_address(str(lowered.get("email") or ""))
        values = read_values(lowered.get("personalization"), f"To[{i}].Personalization")
        if address is not None and values and address.lower() not in found:
            found[address.lower()] = values
    return found


@check(42)
def personalization(d: Draft) -> None:
    values = read_values(d.params.get("Personalization"), "Personalization")
    recipients = _recipient_values(d.params.get("To"))
    if values or recipients or d.personalize or _given(d.params.get("TemplateID")):
        d.personalization = Personalization(values, recipients)


@check(43)
def templates_render(d: Draft) -> None:
    """A personalized send's subject and parts are templates: each must be valid, and each
    recipient's message must render (within sending.max_message_bytes, checked by 40)."""
    p = d.personalization
    if p is None:
        return
    parts = (("Subject", d.subject), ("HTMLContent", d.html), ("PlainContent", d.text))
    for part, text in parts:
        problem = syntax_problem(part, text)
        if problem is not None:
            raise fail(43, problem.text)
    largest = 0
    for people in (d.to, d.cc, d.bcc):
        for person in people.entries:
            values = p.values_for(person["email"])
            size = 0
            for part, text in parts:
                if text is None:
                    continue
                try:
                    out = render(text, values, html=part == "HTMLContent")
                except TemplateError as exc:
                    where = f" at line {exc.line}" if exc.line else ""
                    raise fail(
                        43, f"{part}{where} cannot be rendered for {person['email']}: {exc.message}"
                    ) from None
                if part == "Subject":
                    out = one_line(out)
                size += len(out.encode("utf-8", "surrogatepass"))
            largest = max(largest, size)
    d.content_bytes = max(d.content_bytes, largest - len(d.subject))


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
