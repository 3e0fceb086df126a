"""Building the RFC 5322/MIME message for a send, and checking custom headers at acceptance."""

from __future__ import annotations

import base64
import binascii
import re
import secrets
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from datetime import datetime
from email.headerregistry import Address as _HeaderAddress
from email.headerregistry import HeaderRegistry
from email.message import EmailMessage, Message, MIMEPart
from email.policy import EmailPolicy

import idna
from lxml import etree


class _BuildPolicy(EmailPolicy):
    """The policy of the messages Postern builds: header values set raw (folded by Postern)
    are read back as plain strings, not parsed into header objects on every read (the
    generator reads Content-Type and its parameters several times per part)."""

    def header_fetch_parse(self, name: str, value: str) -> str:
        if hasattr(value, "name"):
            return value
        return "".join(value.splitlines())


# email.policy.SMTP's CRLF line ends; 7bit so bodies are quoted-printable or base64 whenever
# they are not plain short-lined ASCII; "none" so the raw header values we fold ourselves are
# written untouched.
POLICY = _BuildPolicy(linesep="\r\n", cte_type="7bit", refold_source="none")

MAX_LINE = 998  # RFC 5322 2.1.1: octets per line, CRLF excluded
FOLD_AT = 78  # ...and the line length it recommends

RESERVED_HEADERS = frozenset(
    {
        "from",
        "to",
        "cc",
        "bcc",
        "reply-to",
        "subject",
        "date",
        "message-id",
        "mime-version",
        "content-type",
        "content-transfer-encoding",
        "sender",
        "list-unsubscribe",
        "list-unsubscribe-post",
    }
)
RESERVED_PREFIX = "x-postern-"

# Headers only the servers a message passes through write: trace fields (RFC 5321 4.4, and
# what delivery agents add) and authentication results and signatures (RFC 8601, RFC 8617's
# ARC-*, DKIM). A sender who sets them forges a hop or a verdict: over HTTP each is refused.
TRACE_HEADERS = frozenset(
    {
        "received",
        "return-path",
        "received-spf",
        "delivered-to",
        "x-original-to",
        "authentication-results",
        "dkim-signature",
        "domainkey-signature",
    }
)
TRACE_PREFIXES = ("arc-",)
# Over SMTP, a submitting client's own MTA may have added Received lines (kept), and a
# message built by a mail library may carry Return-Path or delivery headers: those are
# dropped before signing, as Postfix drops Return-Path. The others are refused.
DROPPED_AT_SUBMISSION = frozenset({"bcc", "return-path", "delivered-to", "x-original-to"})
KEPT_AT_SUBMISSION = frozenset({"received"})

_FIELD_NAME = re.compile(r"[\x21-\x39\x3b-\x7e]{1,76}")  # printable ASCII except ":"
_MESSAGE_ID = re.compile(r"<[\x21-\x3b\x3d\x3f-\x7e]+@[\x21-\x3b\x3d\x3f-\x7e]+>")
_MIME_TYPE = re.compile(r"[A-Za-z0-9][A-Za-z0-9!#$&^_.+-]*")
_UNSTRUCTURED = HeaderRegistry(use_default_map=False)  # RFC 2047 encoding, no parsing


@dataclass(frozen=True)
class Address:
    email: str
    name: str = ""


@dataclass(frozen=True)
class Attachment:
    filename: str
    content: bytes
    content_type: str = "application/octet-stream"  # "type/subtype"
    disposition: str = "attachment"  # "attachment" or "inline"
    content_id: str | None = None  # for inline parts referenced as cid:...


@dataclass
class MessageSpec:
    sender: Address  # the From
    to: list[Address]
    cc: list[Address]
    reply_to: list[Address]
    subject: str
    html: str | None
    text: str | None
    attachments: list[Attachment]
    headers: dict[str, str]  # custom headers, already validated
    tags: list[str]
    message_id: str  # complete, e.g. "<0b7c...@example.com>"
    date: datetime  # aware
    extra_headers: dict[str, str] = field(default_factory=dict)  # headers Postern itself adds
    sender_header: Address | None = None  # the Sender header (who sent it for the From)


def is_reserved(name: str) -> bool:
    """Whether ``name`` is a header Postern writes itself."""
    lower = name.lower()
    return lower in RESERVED_HEADERS or lower.startswith(RESERVED_PREFIX)


def is_trace_header(name: str) -> bool:
    """Whether ``name`` is a trace or authentication header (TRACE_HEADERS, ARC-*)."""
    lower = name.strip().lower()
    return lower in TRACE_HEADERS or lower.startswith(TRACE_PREFIXES)


def refused_at_submission(name: str) -> bool:
    """Whether a message submitted over SMTP may not carry header ``name``: a trace or
    authentication header other than those kept or dropped."""
    lower = name.strip().lower()
    return (
        is_trace_header(lower)
        and lower not in DROPPED_AT_SUBMISSION
        and lower not in KEPT_AT_SUBMISSION
    )


TRACE_PROBLEM = (
    "only the servers a message passes through write this header (a trace or "
    "authentication header), so a sender may not set it"
)


def header_problem(name: str, value: str, *, trace_ok: bool = False) -> str | None:
    """Why the custom header ``name: value`` is not acceptable (a sentence that does not
    repeat the name), or None when it is. A trace or authentication header is refused
    unless ``trace_ok`` (the send checks answer those with a code of their own)."""
    problem = _syntax_problem(name, value)
    if problem:
        return problem
    if is_trace_header(name):
        return None if trace_ok else TRACE_PROBLEM
    if is_reserved(name):
        return "Postern sets this header itself, so it cannot be given as a custom header"
    return None


# The characters other than CR and LF at which str.splitlines (and so the email package's
# generator) breaks a line: in a header value they would start a line that is not a header.
LINE_BREAKS = frozenset("\x0b\x0c\x1c\x1d\x1e\x85\u2028\u2029")


def lone_surrogate(text: str) -> int | None:
    """The index of the first lone surrogate in ``text`` (a code point from U+D800 to
    U+DFFF, which JSON's \\ud800 escapes can give, and which no encoding can write), or
    None when there is none."""
    if text.isascii():
        return None
    try:
        text.encode("utf-8")
    except UnicodeEncodeError as exc:
        return exc.start
    return None


def _syntax_problem(name: str, value: str, longest: int = MAX_LINE) -> str | None:
    for what, text in (("name", name), ("value", value)):
        if any(c in text for c in "\r\n\0"):
            return f"the {what} must not contain CR, LF or NUL characters"
    if any(c in LINE_BREAKS for c in value):
        return "the value must not contain line breaks (VT, FF, FS, GS, RS, NEL, U+2028, U+2029)"
    at = lone_surrogate(value)
    if at is not None:
        return f"the value is not valid Unicode text (a lone surrogate at character {at + 1})"
    if not name:
        return "the name is empty"
    if len(name) > 76:
        return "the name is longer than 76 characters"
    if not _FIELD_NAME.fullmatch(name):
        if name.rstrip(" \t") != name and _FIELD_NAME.fullmatch(name.rstrip(" \t")):
            return (
                "the name ends in white space: a header name is followed by its colon with "
                "no space (the obsolete `From :` form is refused)"
            )
        return "the name may only contain printable ASCII characters other than the colon"
    if len(value) > longest:
        return f"the value is longer than {longest} characters"
    if any(len(word) >= MAX_LINE for word in re.split(r"[ \t]+", value)):
        return f"the value has a word too long to fit on a {MAX_LINE}-character line"
    return None


# A submitted message's header block as the DKIM signer reads it: lines ending in LF or
# CRLF, each a field ("name:" with no space before the colon) or the continuation of one
# (beginning with a space or tab), up to an empty line or the end.
_FIELD_LINE = rb"[\x21-\x39\x3b-\x7e]+:[^\n]*(?:\n|\Z)"
_HEADER_BLOCK = re.compile(rb"(?:%s(?:[ \t][^\n]*(?:\n|\Z))*)*(?:\r?\n|\Z)" % _FIELD_LINE)
_SPACE_BEFORE_COLON = re.compile(rb"[\x21-\x39\x3b-\x7e]+[ \t]+:")


def header_block_problem(data: bytes) -> str | None:
    """Why the header block of a complete message (as submitted over SMTP) could not be
    signed and sent as it is, or None when it can: a line that is neither a header field
    nor the continuation of one, a space before a field's colon (``From :``), or a
    continuation with no field before it."""
    if _HEADER_BLOCK.match(data):
        return None
    for number, line in enumerate(re.split(rb"\r?\n", data), 1):
        if not line:
            break  # the end of the header block
        if line[:1] in (b" ", b"\t"):
            if number == 1:
                return "line 1 begins with a space or tab, but there is no header to continue"
            continue
        if _SPACE_BEFORE_COLON.match(line):
            return f"line {number}: a header name must be followed by its colon, with no space"
        if not re.match(rb"[\x21-\x39\x3b-\x7e]+:", line):
            return (
                f"line {number} is neither a header field (a name of printable ASCII "
                "characters, a colon, the value) nor the continuation of one"
            )
    return "the header block cannot be read"  # pragma: no cover - the lines above say why


def build_message(spec: MessageSpec) -> bytes:
    """The message for ``spec``: CRLF line ends, 7-bit clean, no line over 998 octets."""
    if spec.date.tzinfo is None or spec.date.utcoffset() is None:
        raise ValueError("MessageSpec.date must be timezone-aware")
    if not _MESSAGE_ID.fullmatch(spec.message_id):
        raise ValueError(f"malformed Message-ID {spec.message_id!r}")
    msg = EmailMessage(policy=POLICY)
    msg["From"] = _address(spec.sender)
    if spec.sender_header is not None:
        msg["Sender"] = _address(spec.sender_header)
    for header, addresses in (("To", spec.to), ("Cc", spec.cc), ("Reply-To", spec.reply_to)):
        if addresses:
            msg[header] = [_address(a) for a in addresses]
    msg["Subject"] = _one_line(spec.subject)
    msg["Date"] = spec.date
    msg.set_raw("Message-ID", spec.message_id)
    msg.set_raw("MIME-Version", "1.0")
    if spec.tags:
        # Up to 20 tags of 100 characters: longer than a custom header's value may be, and
        # folded between tags like any other.
        _add_header(msg, "X-Postern-Tags", ", ".join(spec.tags), longest=TAGS_LONGEST)
    for name, value in spec.headers.items():
        problem = header_problem(name, value)
        if problem:
            raise ValueError(problem)
        _add_header(msg, name, value)
    for name, value in spec.extra_headers.items():
        _add_header(msg, name, value)

    body = MIMEPart(policy=POLICY)
    _body_filler(spec)(body)
    # Move the body in below the headers above (filling ``msg`` directly would reorder them
    # and drop any custom Content-* header, which set_content clears).
    for name, value in body.raw_items():
        msg.set_raw(name, value)
    msg.set_payload(body.get_payload())
    return msg.as_bytes()


# -- headers -------------------------------------------------------------------------------


def _one_line(text: str) -> str:
    return " ".join(text.splitlines())


def _address(a: Address) -> _HeaderAddress:
    local, at, domain = a.email.strip().rpartition("@")
    if not at or not local or not domain:
        raise ValueError(f"not an email address: {a.email!r}")
    if not local.isascii():
        raise ValueError(f"non-ASCII local part needs SMTPUTF8, which is not used: {a.email!r}")
    if not domain.isascii():
        domain = idna.encode(domain, uts46=True).decode("ascii")
    return _HeaderAddress(display_name=_one_line(a.name), addr_spec=f"{local}@{domain}")


TAGS_LONGEST = 4 * MAX_LINE  # the X-Postern-Tags value, before it is folded


def _add_header(msg: EmailMessage, name: str, value: str, longest: int = MAX_LINE) -> None:
    """Add a header of no particular syntax: folded at whitespace, and never re-encoded when
    ASCII, so a List-Unsubscribe URL reaches the reader as written."""
    problem = _syntax_problem(name, value, longest)
    if problem:
        raise ValueError(problem)
    if value.isascii():
        # The email package would turn an unbreakable ASCII token longer than a line
        # (a long List-Unsubscribe URL) into encoded-words; write it as given instead.
        msg.set_raw(name, fold(name, value))
    else:
        msg[name] = _UNSTRUCTURED(name, value)


def fold(name: str, value: str, width: int = FOLD_AT) -> str:
    """``value`` folded (CRLF before a space or tab) so that ``name: value`` lines fit
    ``width`` where the words allow; no line exceeds 998 characters if no word does."""
    words = re.split(r"(?<=\S)(?=[ \t])", value.strip(" \t"))
    lines: list[str] = []
    used = len(name) + 2
    if words[0] and used + len(words[0]) > MAX_LINE:
        lines.append("")  # the value starts on a continuation line
        words[0] = " " + words[0]
        used = 0
    line = ""
    for word in words:
        if line and used + len(word) > width:
            lines.append(line)
            line, used = "", 0
        line += word
        used += len(word)
    lines.append(line)
    return "\r\n".join(lines)


# -- body ----------------------------------------------------------------------------------

Filler = Callable[[MIMEPart], None]


def _body_filler(spec: MessageSpec) -> Filler:
    inline = [a for a in spec.attachments if _is_inline(a) and a.content_id]
    if spec.html is None:
        inline = []  # nothing refers to them: they go along with the other attachments
    others = [a for a in spec.attachments if a not in inline]

    text = spec.text
    if text is None:
        text = html_to_text(spec.html) if spec.html is not None else ""
    main = _text(text, "plain")
    if spec.html is not None:
        html = _text(spec.html, "html")
        if inline:
            html = _multipart("related", [html, *(_attachment(a) for a in inline)])
        main = _multipart("alternative", [main, html])
    if others:
        main = _multipart("mixed", [main, *(_attachment(a) for a in others)])
    return main


def _text(content: str, subtype: str) -> Filler:
    """A text part in UTF-8, encoded as ``set_content`` would choose (7bit when every line is
    short ASCII, else the shorter of quoted-printable and base64), with binascii's C encoders
    instead of the email package's pure-Python quoted-printable, and its header values
    written as they are rather than parsed back."""

    def fill(part: MIMEPart) -> None:
        cte, payload = _encoded_text(content)
        part.set_raw("Content-Type", f'text/{subtype}; charset="utf-8"')
        part.set_raw("Content-Transfer-Encoding", cte)
        part.set_payload(payload)

    return fill


def _encoded_text(content: str) -> tuple[str, str]:
    data = b"\n".join(content.encode("utf-8").splitlines()) + b"\n"
    if data.isascii() and max(map(len, data.split(b"\n"))) <= FOLD_AT:
        return "7bit", data.decode("ascii")
    qp = binascii.b2a_qp(data, istext=True)
    b64 = base64.encodebytes(data)
    if len(qp) <= len(b64):
        return "quoted-printable", qp.decode("ascii")
    return "base64", b64.decode("ascii")


def _multipart(subtype: str, children: list[Filler]) -> Filler:
    def fill(part: MIMEPart) -> None:
        parts: list[MIMEPart] = []
        for child in children:
            sub = MIMEPart(policy=POLICY)
            child(sub)
            parts.append(sub)
        boundary = _boundary(parts)
        part.set_raw("Content-Type", f'multipart/{subtype}; boundary="{boundary}"')
        payload: list[Message[str, str] | str] = [*parts]
        part.set_payload(payload)

    return fill


def _boundary(parts: list[MIMEPart]) -> str:
    """A boundary found in none of the parts (a random one, checked as the generator does)."""
    while True:
        boundary = f"=_{secrets.token_hex(16)}"
        if not any(boundary in p.get_payload() for p in parts if not p.is_multipart()):
            return boundary


def _is_inline(a: Attachment) -> bool:
    return a.disposition.strip().lower() == "inline"


def _attachment(a: Attachment) -> Filler:
    maintype, _, subtype = a.content_type.strip().lower().partition("/")
    if (
        not _MIME_TYPE.fullmatch(maintype)
        or not _MIME_TYPE.fullmatch(subtype)
        or maintype in ("multipart", "message")  # these may not be base64-encoded
    ):
        maintype, subtype = "application", "octet-stream"
    disposition = "inline" if _is_inline(a) else "attachment"
    filename = _one_line(a.filename)
    cid = f"<{a.content_id.strip().strip('<>')}>" if a.content_id else None

    def fill(part: MIMEPart) -> None:
        part.set_content(
            a.content,
            maintype,
            subtype,
            cte="base64",
            disposition=disposition,
            filename=filename,
            cid=cid,
            params={"name": filename},
        )

    return fill


# -- HTML to plain text --------------------------------------------------------------------

_SKIP = frozenset({"script", "style", "head", "title", "template"})
_LINE = frozenset(
    {"div", "li", "tr", "dt", "dd", "hr", "ul", "ol", "dl", "table", "section", "article"}
    | {"header", "footer", "nav", "aside", "address", "figure", "figcaption", "center"}
)
_PARAGRAPH = frozenset({"p", "h1", "h2", "h3", "h4", "h5", "h6", "blockquote", "pre"})


_SOFT, _HARD = "\x01", "\x02"  # a line break and a paragraph break, before they are merged
_CONTROLS_TO_SPACE = {c: " " for c in (*range(0x20), 0x7F)}
_MARKS_TO_SPACE = {ord(_SOFT): " ", ord(_HARD): " ", ord("\n"): " "}
_BREAK_RUN = re.compile(r"[\x01\x02][^\S\n]*(?:[\x01\x02][^\S\n]*)*")  # marks, white space
_BLANK_LINES = re.compile(r"\n{3,}")


class _TextExtractor:
    """Collects the readable text of an HTML document, marking where lines break: the target
    of lxml's HTML parser (libxml2), which calls it for each tag and run of text."""

    def __init__(self) -> None:
        self.out: list[str] = []
        self.skip = 0
        self.links: list[tuple[str, int]] = []

    def start(self, tag: str, attrs: Mapping[str, str]) -> None:
        if tag in _SKIP:
            self.skip += 1
        elif self.skip:
            return
        elif tag == "br":
            self.out.append("\n")  # explicit: <br><br> leaves a blank line
        elif tag in _PARAGRAPH:
            self.out.append(_HARD)
        elif tag in _LINE:
            self.out.append(_SOFT)
        elif tag in ("td", "th"):
            self.out.append(" ")
        elif tag == "a":
            self.links.append(((attrs.get("href") or "").strip(), len(self.out)))
        elif tag == "img":
            alt = attrs.get("alt")
            if alt:
                self.out.append(f" {alt} ")

    def end(self, tag: str) -> None:
        if tag in _SKIP:
            self.skip = max(0, self.skip - 1)
        elif self.skip:
            return
        elif tag in _PARAGRAPH:
            self.out.append(_HARD)
        elif tag in _LINE:
            self.out.append(_SOFT)
        elif tag == "a" and self.links:
            url, start = self.links.pop()
            label = " ".join("".join(self.out[start:]).translate(_MARKS_TO_SPACE).split())
            if _worth_showing(url, label):
                self.out.append(f" ({url})" if label else url)

    def data(self, data: str) -> None:
        if not self.skip:
            self.out.append(data.translate(_CONTROLS_TO_SPACE))

    def close(self) -> list[str]:
        return self.out


def _worth_showing(url: str, label: str) -> bool:
    """Whether a link's target adds anything to its text."""
    if not url or url.lower().startswith(("#", "javascript:")):
        return False
    return url not in (label, f"mailto:{label}")


def _merge_breaks(run: re.Match[str]) -> str:
    return "\n\n" if _HARD in run.group() else "\n"


def html_to_text(html: str) -> str:
    """A readable plain-text rendering of ``html`` for the text/plain alternative."""
    if not html.strip():
        return ""
    parser = etree.HTMLParser(target=_TextExtractor())
    parser.feed(html)
    out = parser.close()
    # A run of break marks (and the white space among them) becomes its line breaks; each
    # line's white space then becomes single spaces between words.
    text = _BREAK_RUN.sub(_merge_breaks, "".join(out))
    lines = (" ".join(line.split()) for line in text.split("\n"))
    return _BLANK_LINES.sub("\n\n", "\n".join(lines)).strip("\n")
