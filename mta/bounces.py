"""Parsing returned mail: RFC 3464 DSNs, common plain-text bounces, and RFC 5965 ARF complaints."""

from __future__ import annotations

import base64
import binascii
import email
import email.policy
import email.utils
import html
import quopri
import re
from dataclasses import dataclass, field
from email.message import Message

from mta import feedback
from mta.classify import HARD, IGNORE, SOFT, classify
from mta.verp import verp_token

MAX_BYTES = 4 * 1024 * 1024  # of the raw message; the rest (usually the returned original) is cut
MAX_PARTS = 50  # MIME parts looked at, in depth-first order
# Lines starting "--" (boundary candidates) and blank lines before the message is cut: the email
# package would otherwise build every one of thousands of tiny parts (or nest them past the
# recursion limit), or of thousands of header blocks in a message/delivery-status part.
MAX_DASH_LINES = 4 * MAX_PARTS
MAX_BLANK_LINES = 2000
MAX_TEXT = 200_000  # characters of human-readable text searched by the heuristics
MAX_RECIPIENTS = 100
MAX_HEADER = 1000  # characters of a header value kept: the email package parses them in O(n^2)
MAX_DIAGNOSTIC = 1000
_MAX_FIELD_LINES = 5000  # lines of a delivery-status or feedback-report part
_MAX_AT_SIGNS = 500  # "@" looked at when searching text for addresses

ACTIONS = frozenset({"failed", "delayed", "delivered", "relayed", "expanded"})
_DSN_TYPES = frozenset({"message/delivery-status", "message/global-delivery-status"})
_ARF_TYPE = "message/feedback-report"
_ORIGINAL_TYPES = (
    "message/rfc822",
    "message/global",
    "text/rfc822-headers",
    "message/rfc822-headers",
    "message/global-headers",
)


@dataclass(frozen=True)
class RecipientStatus:
    """What a report says about one recipient."""

    recipient: str | None  # lower-cased address, or None if unknown
    action: str  # an RFC 3464 action; "failed" when guessed, "delivered" for a complaint
    status: str | None  # enhanced status code like "5.1.1"
    diagnostic: str  # the remote server's text, or the best human text found (<= 1000 chars)
    remote_mta: str | None  # Remote-MTA (else Reporting-MTA) host
    smtp_code: int | None  # the 3-digit SMTP reply code, when the diagnostic has one

    @property
    def bounce_class(self) -> str:
        """What the failure means (mta/classify.py): "hard", "soft", "block", "message", or
        "ignore" for anything but a failure (a delay notice, a delivery, a complaint)."""
        if self.action != "failed":
            return IGNORE
        return classify(self.status, self.smtp_code, self.diagnostic)

    @property
    def hard(self) -> bool:
        """The address or domain does not exist: a failure of class "hard"."""
        return self.bounce_class == HARD

    @property
    def soft(self) -> bool:
        """A temporary problem: action delayed, or a failure of class "soft"."""
        return self.action == "delayed" or self.bounce_class == SOFT


@dataclass(frozen=True)
class Report:
    """A delivery status notification ("bounce") or a feedback report ("complaint")."""

    kind: str  # "bounce" or "complaint"
    recipients: list[RecipientStatus]
    original_message_id: str | None  # with <>
    original_envelope_from: str | None  # lower-cased, without <>
    feedback_type: str | None  # ARF Feedback-Type, lower-cased ("abuse", "fraud", ...)
    user_agent: str | None  # ARF User-Agent
    # An auth-failure report's RFC 6591 fields (AUTH_FAILURE_FIELDS: lower-cased names,
    # values cut to 500 characters); empty for any other report.
    auth_fields: dict[str, str] = field(default_factory=dict)


# The fields of an RFC 6591 authentication failure report kept with it.
AUTH_FAILURE_FIELDS = (
    "reported-domain",
    "source-ip",
    "auth-failure",
    "arrival-date",
    "original-mail-from",
    "dkim-domain",
    "dkim-selector",
    "spf-dns",
    "authentication-results",
)


def _class(status: str | None, code: int | None) -> str | None:
    if status:
        return status[0]
    if code is not None:
        return str(code)[0]
    return None


def parse_report(raw: bytes) -> Report | None:
    """A DSN or ARF report parsed from a whole message, or None when the message is neither
    (an ordinary reply, an auto-responder / out-of-office, spam, garbage)."""
    try:
        return _parse(raw)
    except Exception:  # arbitrary internet input: a parsing problem means "not a report"
        return None


# --- the message as a whole -------------------------------------------------------------------


def _parse(raw: bytes) -> Report | None:
    if not isinstance(raw, bytes | bytearray | memoryview):
        return None
    data = _bounded(bytes(raw[:MAX_BYTES]))
    if not data.strip():
        return None
    msg = email.message_from_bytes(data, policy=_POLICY)
    parts = _parts(msg)
    report_type = _report_type(msg)
    dsn_parts = [p for ctype, p in parts if ctype in _DSN_TYPES]
    arf_parts = [p for ctype, p in parts if ctype == _ARF_TYPE]
    if arf_parts and (report_type == "feedback-report" or not dsn_parts):
        return _complaint(parts, arf_parts[0])
    if dsn_parts:
        report = _dsn(msg, parts, dsn_parts)
        if report is not None:
            return report
    if report_type != "delivery-status" and not dsn_parts:
        legacy = _legacy_complaint(msg, parts)
        if legacy is not None:
            return legacy
    return _plain_bounce(msg, parts, report_type == "delivery-status")


_DASH_LINE = re.compile(rb"\n--")
_BLANK_LINE = re.compile(rb"\n\r?\n")


def _bounded(data: bytes) -> bytes:
    """``data`` cut before its MAX_DASH_LINES-th line starting with "--" and before its
    MAX_BLANK_LINES-th blank line."""
    for pattern, limit in ((_DASH_LINE, MAX_DASH_LINES), (_BLANK_LINE, MAX_BLANK_LINES)):
        for count, m in enumerate(pattern.finditer(data), 1):
            if count == limit:
                data = data[: m.start() + 1]
                break
    return data


class _Policy(email.policy.EmailPolicy):
    """email.policy.default, keeping only the first MAX_HEADER characters of a header value."""

    def header_source_parse(self, sourcelines: list[str]) -> tuple[str, str]:
        name, value = super().header_source_parse(sourcelines)
        return name, value[:MAX_HEADER]


_POLICY = _Policy()

Parts = list[tuple[str, Message]]  # (content type, part)


def _parts(msg: Message) -> Parts:
    """The first MAX_PARTS parts, depth first, descending into multiparts only (never into a
    returned message, whose own parts say nothing about this report)."""
    out: Parts = []
    stack = [msg]
    while stack and len(out) < MAX_PARTS:
        part = stack.pop()
        ctype = part.get_content_type()
        out.append((ctype, part))
        if ctype.startswith("multipart/"):
            payload = part.get_payload()
            if isinstance(payload, list):
                stack.extend(p for p in reversed(payload[:MAX_PARTS]) if isinstance(p, Message))
    return out


def _report_type(msg: Message) -> str:
    if msg.get_content_type() != "multipart/report":
        return ""
    value = msg.get_param("report-type", "", header="content-type")
    if isinstance(value, tuple):
        value = email.utils.collapse_rfc2231_value(value)
    return str(value).strip().lower()


def _hdr(msg: Message | None, name: str) -> str:
    """A header's (decoded) value with whitespace collapsed, or "" when absent."""
    if msg is None:
        return ""
    try:
        value = msg.get(name)
        text = "" if value is None else str(value)
    except Exception:  # a header the policy cannot parse: fall back to the raw text
        text = next((v for k, v in msg.raw_items() if k.lower() == name.lower()), "")
    return _collapse(text)


def _collapse(text: str) -> str:
    return " ".join(text.split())


def _newlines(text: str) -> str:
    return text.replace("\r\n", "\n").replace("\r", "\n")


def _payload(part: Message) -> bytes:
    """A leaf part's body with its transfer encoding undone (b"" for anything else)."""
    try:
        payload = part.get_payload(decode=True)
    except Exception:  # a broken transfer encoding
        return b""
    return payload if isinstance(payload, bytes) else b""


def _text(part: Message) -> str:
    """A leaf part's decoded text ("" for anything else), at most MAX_TEXT characters."""
    payload = _payload(part)[: MAX_TEXT * 4]
    try:
        text = payload.decode(part.get_content_charset() or "utf-8", errors="replace")
    except Exception:  # unknown or non-text charset
        text = payload.decode("utf-8", errors="replace")
    return _newlines(text[:MAX_TEXT])


_TAG = re.compile(r"<[^<>]*>")
_DROP_HTML = re.compile(r"<(script|style)\b[^<>]*>[^<]*</\1\s*>", re.IGNORECASE)


def _human_text(parts: Parts) -> str:
    """The report's readable text: its text/plain parts, else its text/html ones stripped."""
    texts: dict[str, list[str]] = {"text/plain": [], "text/html": []}
    for ctype, part in parts:
        if ctype in texts and part.get_content_disposition() != "attachment":
            texts[ctype].append(_text(part))
    if any(t.strip() for t in texts["text/plain"]):
        text = "\n\n".join(texts["text/plain"])
    else:
        markup = "\n\n".join(texts["text/html"])[:MAX_TEXT]
        markup = re.sub(r"(?i)<br\s*/?>|</(?:p|div|tr|li|h\d)\s*>", "\n", markup)
        text = html.unescape(_TAG.sub(" ", _DROP_HTML.sub(" ", markup)))
    return text[:MAX_TEXT]


# Where a bounce's text stops describing the failure and starts quoting the original message.
_ORIGINAL_MARKER = re.compile(
    r"^[ \t>-]*(?:"
    r"this is a copy of the message|original message|below this line is a copy of the message"
    r"|returned message|unsent message follows|the header of the original message"
    r"|a copy of the original message|message headers follow|undelivered message headers"
    r"|original message headers|the original message headers"
    r")",
    re.IGNORECASE | re.MULTILINE,
)


def _split_original(text: str) -> tuple[str, str]:
    m = _ORIGINAL_MARKER.search(text)
    return (text[: m.start()], text[m.start() :]) if m else (text, "")


def _original_headers(parts: Parts) -> Message | None:
    """The returned original message (or just its headers), if the report carries one."""
    for ctype, part in parts:
        if ctype not in _ORIGINAL_TYPES:
            continue
        payload = part.get_payload()
        if isinstance(payload, list):
            if payload and isinstance(payload[0], Message):
                return payload[0]
            continue
        data = _payload(part)
        if data.strip():
            return email.message_from_bytes(data[:MAX_TEXT], policy=_POLICY)
    return None


# --- addresses, codes, fields ------------------------------------------------------------------

_LOCAL_TAIL = re.compile(r"[A-Za-z0-9.!#$%&'*+/=?^_`{|}~-]{1,64}\Z")
_DOMAIN_HEAD = re.compile(
    r"[A-Za-z0-9](?:[A-Za-z0-9-]{0,62}[A-Za-z0-9])?(?:\.[A-Za-z0-9](?:[A-Za-z0-9-]{0,62}[A-Za-z0-9])?)+"
)


def _find_addresses(text: str) -> list[tuple[int, str]]:
    """(start, lower-cased address) of each address-like string in ``text``, in order."""
    found: list[tuple[int, str]] = []
    at = text.find("@")
    while at != -1 and len(found) < _MAX_AT_SIGNS:
        local = _LOCAL_TAIL.search(text, max(0, at - 64), at)
        domain = _DOMAIN_HEAD.match(text, at + 1, at + 256)
        if local and domain:
            left = local.group().lstrip(".'`={|}~")
            if left:
                found.append((at - len(left), f"{left}@{domain.group()}".lower()))
        at = text.find("@", at + 1)
    return found


def _first_address(text: str) -> str | None:
    found = _find_addresses(text)
    return found[0][1] if found else None


def _address_field(value: str | None) -> str | None:
    """ "rfc822; <User@Example.org>" -> "user@example.org"."""
    if not value:
        return None
    v = value.strip()
    head, sep, tail = v.partition(";")
    if sep and "@" not in head:
        v = tail.strip()
    found = _first_address(v)
    if found:
        return found
    v = v.strip().strip("<>").strip().lower()
    return v if v and " " not in v else None


def _host_field(value: str | None) -> str | None:
    """ "dns; mx.example.org. (192.0.2.1)" -> "mx.example.org"."""
    if not value:
        return None
    head, sep, tail = value.partition(";")
    words = (tail if sep else head).split()
    return (words[0].rstrip(".") or None) if words else None


def _message_id(value: str | None) -> str | None:
    if not value:
        return None
    m = re.search(r"<[^<>\s]{1,900}>", value)
    if m:
        return m.group()
    v = value.strip()
    return f"<{v}>" if v and len(v) < 900 and not any(c in v for c in " \t<>") else None


_STATUS = re.compile(r"(?<![\d.])([245])\.(\d{1,3})\.(\d{1,3})(?![\d.])")
_STATUS_45 = re.compile(r"(?<![\d.])([45])\.(\d{1,3})\.(\d{1,3})(?![\d.])")
# A code may be followed by ":" ("554: delivery error", Yahoo's plain bounces).
_CODE = re.compile(r"(?<![^\s;:('\"])([245]\d\d)(?=[\s\-'\"):]|$)")
_CODE_45 = re.compile(r"(?<![^\s;:('\"])([45]\d\d)(?=[\s\-'\"):]|$)")
_CODE_THEN_STATUS = re.compile(
    r"(?<![^\s;:('\"])([245]\d\d)[ \t-]+([245]\.\d{1,3}\.\d{1,3})(?![\d.])"
)


def _status_in(text: str, *, failures_only: bool = False) -> str | None:
    m = (_STATUS_45 if failures_only else _STATUS).search(text)
    return m.group() if m else None


def _code_in(text: str, *, failures_only: bool = False) -> int | None:
    pair = _CODE_THEN_STATUS.search(text)
    if pair and (not failures_only or pair.group(1)[0] in "45"):
        return int(pair.group(1))
    m = (_CODE_45 if failures_only else _CODE).search(text)
    return int(m.group(1)) if m else None


_FIELD = re.compile(r"([A-Za-z][A-Za-z0-9-]{0,75})[ \t]*:(.*)")

Fields = dict[str, list[str]]


def _field_blocks(text: str) -> list[Fields]:
    """RFC 3464/5965 field blocks ("Name: value" lines, folded, blocks split by blank lines)."""
    blocks: list[Fields] = []
    block: Fields = {}
    last: tuple[str, int] | None = None
    for line in _newlines(text).split("\n")[:_MAX_FIELD_LINES]:
        if not line.strip():
            if block:
                blocks.append(block)
            block, last = {}, None
        elif line[0] in " \t":
            if last is not None:
                key, i = last
                block[key][i] += " " + line.strip()
        elif m := _FIELD.match(line):
            key = m.group(1).lower()
            block.setdefault(key, []).append(m.group(2).strip())
            last = (key, len(block[key]) - 1)
        else:
            last = None
    if block:
        blocks.append(block)
    return blocks


def _fields_text(part: Message) -> str:
    """The text of a message/delivery-status or message/feedback-report part. The email package
    has already split it into header blocks (or parsed it as one message): put it back."""
    payload = part.get_payload()
    if not isinstance(payload, list):
        return _text(part)
    chunks = []
    for block in payload[:MAX_PARTS]:
        if not isinstance(block, Message):
            continue
        lines = [f"{k}: {v}" for k, v in block.raw_items()]
        body = block.get_payload()
        if isinstance(body, str) and body.strip():
            lines.append(body)
        chunks.append("\n".join(lines))
    text = "\n\n".join(chunks)
    cte = str(part.get("content-transfer-encoding", "")).strip().lower()
    if cte in ("base64", "quoted-printable"):
        encoded = text.encode("utf-8", "surrogateescape")
        try:
            if cte == "base64":
                decoded = base64.b64decode(b"".join(encoded.split()))
            else:
                decoded = quopri.decodestring(encoded)
            text = decoded.decode("utf-8", errors="replace")
        except (binascii.Error, ValueError):
            pass
    return _newlines(text)


def _first(fields: Fields, name: str) -> str | None:
    values = fields.get(name)
    return _collapse(values[0]) if values else None


# --- RFC 3464 delivery status notifications ----------------------------------------------------

_RECIPIENT_FIELDS = ("final-recipient", "original-recipient", "action", "status")


def _dsn(msg: Message, parts: Parts, dsn_parts: list[Message]) -> Report | None:
    per_message: Fields = {}
    blocks: list[Fields] = []
    for part in dsn_parts:
        for block in _field_blocks(_fields_text(part)):
            if any(k in block for k in _RECIPIENT_FIELDS):
                blocks.append(block)
            for key, values in block.items():
                per_message.setdefault(key, values)
    if not blocks:
        return None
    human, _ = _split_original(_human_text(parts))
    reporting_mta = _host_field(_first(per_message, "reporting-mta"))
    recipients = [_dsn_recipient(b, reporting_mta, human) for b in blocks[:MAX_RECIPIENTS]]
    original = _original_headers(parts)
    message_id = _message_id(_hdr(original, "message-id"))
    envelope_from = _address_field(_hdr(original, "return-path"))
    return Report(
        kind="bounce",
        recipients=recipients,
        original_message_id=message_id
        or _message_id(_first(per_message, "x-original-message-id"))
        or _replied_id(msg),
        original_envelope_from=envelope_from
        or _address_field(_first(per_message, "x-postfix-sender")),
        feedback_type=None,
        user_agent=None,
    )


def _dsn_recipient(block: Fields, reporting_mta: str | None, human: str) -> RecipientStatus:
    original = _address_field(_first(block, "original-recipient"))
    if original and "@" not in original:
        original = None  # an X.500 or other non-Internet original address
    recipient = original or _address_field(_first(block, "final-recipient"))
    diagnostic = _first(block, "diagnostic-code") or ""
    status = _status_in(_first(block, "status") or "")
    if status is None or status.endswith(".0.0"):
        # Exim and others say only "5.0.0" here and give the precise code in the diagnostic.
        detailed = _status_in(diagnostic)
        if detailed and (status is None or detailed[0] == status[0]):
            status = detailed
    code = _code_in(diagnostic)
    if not diagnostic:
        diagnostic = _describe(human, recipient)
        status = status or _status_in(diagnostic)
        code = code or _code_in(diagnostic)
    action = (_first(block, "action") or "").lower().split(" ", 1)[0]
    if action not in ACTIONS:
        action = {"4": "delayed", "2": "delivered"}.get(_class(status, code) or "", "failed")
    return RecipientStatus(
        recipient=recipient,
        action=action,
        status=status,
        diagnostic=diagnostic[:MAX_DIAGNOSTIC],
        remote_mta=_host_field(_first(block, "remote-mta")) or reporting_mta,
        smtp_code=code,
    )


def _describe(text: str, address: str | None) -> str:
    """The paragraph of ``text`` about ``address`` (else the first paragraph), collapsed."""
    paragraphs = [p for p in re.split(r"\n[ \t]*\n", text) if p.strip()]
    if address:
        for p in paragraphs:
            if address in p.lower():
                return _collapse(p)[:MAX_DIAGNOSTIC]
    return _collapse(paragraphs[0])[:MAX_DIAGNOSTIC] if paragraphs else ""


def _replied_id(msg: Message) -> str | None:
    """The original's Message-ID as a bounce's In-Reply-To or References gives it (Exim, Gmail)."""
    in_reply_to = _message_id(_hdr(msg, "in-reply-to"))
    if in_reply_to:
        return in_reply_to
    ids = re.findall(r"<[^<>\s]{1,900}>", _hdr(msg, "references"))
    return ids[-1] if ids else None


# --- RFC 5965 feedback reports -----------------------------------------------------------------


def _complaint(parts: Parts, arf_part: Message) -> Report:
    fields: Fields = {}
    for block in _field_blocks(_fields_text(arf_part)):
        for key, values in block.items():
            fields.setdefault(key, values)
    original = _original_headers(parts)
    recipient = _address_field(_first(fields, "original-rcpt-to"))
    if recipient is None:
        recipient = _address_field(_hdr(original, feedback.JMRP_HEADER))
    if recipient is None:
        recipient = _first_address(_hdr(original, "to"))
    feedback_type = feedback.normalize_type(_first(fields, "feedback-type"))
    auth_fields: dict[str, str] = {}
    if feedback.action_of(feedback_type) == feedback.AUTH_FAILURE:
        for name in AUTH_FAILURE_FIELDS:
            value = _first(fields, name)
            if value:
                auth_fields[name] = value[:500]
    return _feedback_report(
        parts,
        original,
        recipient,
        feedback_type,
        remote_mta=_host_field(_first(fields, "reporting-mta")),
        envelope_from=_address_field(_first(fields, "original-mail-from")),
        user_agent=_first(fields, "user-agent"),
        auth_fields=auth_fields,
    )


def _legacy_complaint(msg: Message, parts: Parts) -> Report | None:
    """A provider's feedback loop report without a message/feedback-report part: the original
    forwarded as an attachment (Microsoft JMRP, the old Yahoo / AOL formats). Never a
    message that looks like a bounce."""
    original = _original_headers(parts)
    text = _human_text(parts)
    if not feedback.legacy_signal(original, _hdr(msg, "subject"), text):
        return None
    jmrp = original is not None and original.get(feedback.JMRP_HEADER) is not None
    if not jmrp and _looks_bounced(msg, _split_original(text)[0], False):
        return None
    recipient = _address_field(_hdr(original, feedback.JMRP_HEADER)) or _first_address(
        _hdr(original, "to")
    )
    return _feedback_report(
        parts,
        original,
        recipient,
        "abuse",  # a provider's spam report
        remote_mta=None,
        envelope_from=_address_field(_hdr(original, "return-path")),
        user_agent=None,
    )


def _feedback_report(
    parts: Parts,
    original: Message | None,
    recipient: str | None,
    feedback_type: str | None,
    *,
    remote_mta: str | None,
    envelope_from: str | None,
    user_agent: str | None,
    auth_fields: dict[str, str] | None = None,
) -> Report:
    human = [
        _text(p)
        for ctype, p in parts
        if ctype == "text/plain" and p.get_content_disposition() != "attachment"
    ]
    diagnostic = _collapse(human[0]) if human else ""
    return Report(
        kind="complaint",
        recipients=[
            RecipientStatus(
                recipient=recipient,
                action="delivered",  # the message was delivered; the recipient complained
                status=None,
                diagnostic=(diagnostic or f"feedback-type: {feedback_type}")[:MAX_DIAGNOSTIC],
                remote_mta=remote_mta,
                smtp_code=None,
            )
        ],
        original_message_id=_message_id(_hdr(original, "message-id")),
        original_envelope_from=envelope_from,
        feedback_type=feedback_type,
        user_agent=user_agent,
        auth_fields=auth_fields or {},
    )


# --- non-standard (plain-text) bounces ---------------------------------------------------------

_BOUNCE_SENDER = re.compile(
    r"mailer[-_]?daemon|mail-daemon|postmaster|mail delivery (?:system|subsystem|service)"
    r"|microsoftexchange[0-9a-f]{32}|mail administrator",
    re.IGNORECASE,
)
_BOUNCE_SUBJECT = re.compile(
    r"undeliver(?:ed|able)|delivery status notification|mail delivery (?:failed|failure)"
    r"|delivery (?:failure|failed|has failed|problem)|returned mail|returned to sender"
    r"|returning message to sender|failure notice|non-?delivery|could not be delivered"
    r"|not delivered|delivery delayed|delayed mail|message delayed|warning: message .{0,200}delayed"
    r"|mail system error|nicht zustellbar|unzustellbar|non remis|no entregado",
    re.IGNORECASE,
)
_REPLY_SUBJECT = re.compile(r"\s*(?:re|fwd?|aw|wg|sv|vs|tr|rv)\s*:", re.IGNORECASE)
_FAILURE_TEXT = re.compile(
    r"could ?n[o']t be delivered|was ?n[o']t delivered|was not delivered|undeliverable"
    r"|delivery (?:has )?failed|delivery to the following recipient|permanent(?:ly)? (?:error|fail)"
    r"|failed permanently|user unknown|unknown user|no such (?:user|mailbox|recipient|address)"
    r"|does not exist|address not found|recipient address rejected"
    r"|mailbox (?:unavailable|not found)"
    r"|smtp error from remote|this is the mail system|unrouteable address|relay access denied"
    r"|host or domain name not found|has not yet been delivered|delivery attempts will continue"
    r"|(?<![\d.])[45]\.\d{1,3}\.\d{1,3}(?![\d.])",
    re.IGNORECASE,
)
_DELAY_TEXT = re.compile(
    r"has not yet been delivered|delivery attempts will continue|will (?:continue to )?retry"
    r"|will be retried|\bdelayed\b|\bdeferred\b",
    re.IGNORECASE,
)
_AUTO_REPLY_SUBJECT = re.compile(
    r"\s*(?:out of (?:the )?office|automatic reply|auto(?:matic)?[- ]?(?:reply|response)|auto:"
    r"|autoreply|abwesenheit|absence|vacation|away from|réponse automatique|respuesta automática)",
    re.IGNORECASE,
)
_AUTO_REPLY_HEADERS = ("x-autoreply", "x-autorespond", "x-autoresponder", "x-auto-reply")
_DAEMON_LOCAL_PARTS = frozenset(
    {"mailer-daemon", "mailer_daemon", "mailerdaemon", "mail-daemon", "postmaster"}
)
# A quoted header line of the original message, whose addresses are not failed recipients.
_QUOTED_HEADER = re.compile(
    r"[ \t]*(?:message-id|in-reply-to|references|from|sender|reply-to|return-path|received|to"
    r"|cc|bcc|delivered-to|errors-to|dkim-signature|list-[\w-]+|resent-[\w-]+|x-[\w-]+)[ \t]*:",
    re.IGNORECASE,
)
_HOST_SAID = re.compile(
    r"\bhost ([A-Za-z0-9](?:[A-Za-z0-9-]{0,62}[A-Za-z0-9])?(?:\.[A-Za-z0-9-]{1,63}){1,10})"
    r"\s*\[[0-9A-Fa-f.:]{2,45}\]"
)


def _plain_bounce(msg: Message, parts: Parts, report_typed: bool) -> Report | None:
    text, quoted = _split_original(_human_text(parts))
    if not _looks_bounced(msg, text, report_typed):
        return None
    excluded = {a for _, a in _find_addresses(_sender_headers(msg))}
    original = _original_headers(parts)
    if original is not None:
        message_id = _message_id(_hdr(original, "message-id"))
        envelope_from = _address_field(_hdr(original, "return-path"))
        excluded.update(a for _, a in _find_addresses(_hdr(original, "from")))
    else:
        m = re.search(r"^[ \t]*message-id:[ \t]*(<[^<>\s]{1,900}>)", quoted, re.I | re.M)
        message_id = m.group(1) if m else None
        m = re.search(r"^[ \t]*return-path:[ \t]*<([^<>\s]{1,900})>", quoted, re.I | re.M)
        envelope_from = m.group(1).lower() if m else None
    if envelope_from:
        excluded.add(envelope_from)
    recipients = _plain_recipients(msg, text, excluded)
    if not recipients:
        return None  # nothing to go on: no address and no failure code
    return Report(
        kind="bounce",
        recipients=recipients,
        original_message_id=message_id or _replied_id(msg),
        original_envelope_from=envelope_from,
        feedback_type=None,
        user_agent=None,
    )


def _sender_headers(msg: Message) -> str:
    return " ".join(_hdr(msg, h) for h in ("from", "sender", "to", "reply-to", "return-path"))


def _looks_bounced(msg: Message, text: str, report_typed: bool) -> bool:
    """Whether a message without a usable delivery-status part is still a bounce. It takes a
    report-type=delivery-status, or two signals: a bounce sender (MAILER-DAEMON, postmaster,
    ..., or an X-Failed-Recipients / X-MS-Exchange-Message-Is-Ndr header) with a bounce subject
    or failure text, or a bounce subject with failure text from a machine (null Return-Path or
    Auto-Submitted). A person's message mentioning "550" is not a bounce, nor is an auto-reply
    (unless its sender and subject both say bounce: MTAs mark bounces auto-replied too)."""
    subject = _hdr(msg, "subject")
    sender = _BOUNCE_SENDER.search(_hdr(msg, "from") + " " + _hdr(msg, "sender")) is not None
    sender = sender or bool(_hdr(msg, "x-failed-recipients"))
    sender = sender or bool(_hdr(msg, "x-ms-exchange-message-is-ndr"))
    by_subject = not _REPLY_SUBJECT.match(subject) and _BOUNCE_SUBJECT.search(subject) is not None
    auto_submitted = _hdr(msg, "auto-submitted").lower()
    auto_reply = (
        any(_hdr(msg, h) for h in _AUTO_REPLY_HEADERS)
        or _AUTO_REPLY_SUBJECT.match(subject) is not None
        or "auto_reply" in _hdr(msg, "precedence").lower()
        or (auto_submitted.startswith("auto-replied") and not sender)
    )
    if auto_reply and not (sender and by_subject):
        return False
    if report_typed or (sender and by_subject):
        return True
    by_text = _FAILURE_TEXT.search(text) is not None
    null_sender = msg.get("return-path") is not None and _hdr(msg, "return-path") in ("<>", "")
    machine = null_sender or auto_submitted.startswith("auto-")
    return by_text and (sender or (by_subject and machine))


def _plain_recipients(msg: Message, text: str, excluded: set[str]) -> list[RecipientStatus]:
    failed_header = [a for _, a in _find_addresses(_hdr(msg, "x-failed-recipients"))]
    candidates: list[tuple[int, str]] = []
    seen: set[str] = set()
    for start, address in _find_addresses(text):
        if address in seen or address in excluded or verp_token(address):
            continue
        if address.split("@", 1)[0] in _DAEMON_LOCAL_PARTS:
            continue
        line_start = text.rfind("\n", 0, start) + 1
        if _QUOTED_HEADER.match(text, line_start, start):
            continue
        seen.add(address)
        candidates.append((start, address))
    for address in failed_header:
        if address not in seen:
            seen.add(address)
            candidates.append((-1, address))
    # Each recipient's segment: from its line to the line of the next recipient.
    located = sorted((s, a) for s, a in candidates if s >= 0)
    segments: dict[str, str] = {}
    for i, (start, address) in enumerate(located):
        begin = text.rfind("\n", 0, start) + 1
        end = len(text)
        if i + 1 < len(located):
            nxt = located[i + 1][0]
            end = text.rfind("\n", 0, nxt) + 1
            if end <= begin:
                end = nxt
        segments[address] = text[begin:end]
    chosen = [a for a in failed_header if a in seen]
    if not chosen:
        chosen = [a for _, a in located if _has_failure_code(segments[a])]
    if not chosen and located:
        chosen = [located[0][1]]
    if not chosen:
        return [_plain_status(None, text, None)] if _has_failure_code(text) else []
    only = len(chosen) == 1
    return [_plain_status(a, segments.get(a, ""), text if only else None) for a in chosen][
        :MAX_RECIPIENTS
    ]


def _has_failure_code(text: str) -> bool:
    return bool(_status_in(text, failures_only=True) or _code_in(text, failures_only=True))


def _plain_status(address: str | None, segment: str, whole: str | None) -> RecipientStatus:
    """A recipient's status from its segment of a plain-text bounce (or from the whole text
    when it is the only recipient and its segment has no code)."""
    source = segment
    if whole is not None and not _has_failure_code(segment):
        source = whole
    status = _status_in(source, failures_only=True)
    code = _code_in(source, failures_only=True)
    klass = _class(status, code)
    if klass == "5":
        action = "failed"
    elif klass == "4" or _DELAY_TEXT.search(source):
        action = "delayed"
    else:
        action = "failed"  # guessed: a bounce that gives no code
    host = _HOST_SAID.search(source)
    return RecipientStatus(
        recipient=address,
        action=action,
        status=status,
        # Without a code anywhere, the recipient's own lines say most ("mailbox is full").
        diagnostic=_plain_diagnostic(
            source if _has_failure_code(source) or not segment.strip() else segment
        ),
        remote_mta=host.group(1).lower() if host else None,
        smtp_code=code,
    )


def _plain_diagnostic(text: str) -> str:
    """The paragraph of ``text`` with the first failure code (else its first one), collapsed."""
    paragraphs = [p for p in re.split(r"\n[ \t]*\n", text) if p.strip()]
    for p in paragraphs:
        if _has_failure_code(p):
            return _collapse(p)[:MAX_DIAGNOSTIC]
    return _collapse(paragraphs[0])[:MAX_DIAGNOSTIC] if paragraphs else ""
