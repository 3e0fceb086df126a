"""Reading an Infobip send from the wire: the multipart form of /email/2 and /email/3, the
JSON body of /email/4/messages.

Form field names are matched case-insensitively (the Go SDK writes ``HTML``,
``trackclicks``), and the Node SDK's ``to['0']`` / ``to[0]`` forms count as ``to``; a value
``undefined`` (the Node SDK's unset field) counts as not given. Booleans are ``true`` /
``false`` in any case (the Python client writes ``True``). ``sendAt`` is ISO 8601 with an
offset written ``Z``, ``+00:00`` or ``+0000`` (or none: UTC).

What is wrong with a field's shape is gathered as Infobip's ``validationErrors``: wire name
to texts. Fields accepted but not acted on are kept as they came (``ReportSettings.ignored``).
"""

from __future__ import annotations

import base64
import json
import mimetypes
import re
from datetime import UTC, datetime, timedelta
from email.utils import parseaddr
from typing import Any

from flask import Request
from werkzeug.exceptions import HTTPException

from commands.sending.infobip import MAX_RECIPIENTS, InfobipRecipient, InfobipSend, ReportSettings
from models.payload import File, Person
from mta.addresses import normalise_address
from mta.message import lone_surrogate

MAX_SCHEDULE = timedelta(days=30)
MAX_CALLBACK_DATA = 4000
MAX_BULK_ID = 100
MAX_MESSAGE_ID = 200
MAX_ID = 255
MAX_KEPT = 4000  # characters of a field recorded only (ampHtml, landingPagePlaceholders, ...)
NOTIFY_CONTENT_TYPES = ("application/json", "application/xml")

BLANK = "must not be blank"
BAD_ADDRESS = "must be a valid email address"
BAD_BOOLEAN = "must be true or false"
BAD_JSON_OBJECT = "must be a JSON object"
NOT_TEXT = "must be valid Unicode text (it has a lone surrogate)"
NUL_TEXT = "must not contain NUL characters"

# The form fields read (/email/2/send, /email/3/send; app/http/openapi.py describes them).
FORM_FIELDS = (
    "from",
    "to",
    "cc",
    "bcc",
    "subject",
    "text",
    "html",
    "ampHtml",
    "templateId",
    "attachment",
    "inlineImage",
    "intermediateReport",
    "notifyUrl",
    "notifyContentType",
    "callbackData",
    "track",
    "trackClicks",
    "trackOpens",
    "trackingPixelPosition",
    "trackingUrl",
    "bulkId",
    "messageId",
    "campaignReferenceId",
    "replyTo",
    "defaultPlaceholders",
    "preserveRecipients",
    "sendAt",
    "headers",
    "landingPagePlaceholders",
    "landingPageId",
    "templateLanguageVersion",
    "clientPriority",
    "applicationId",
    "entityId",
    "ipPoolId",
)
# ... by their name in lower case.
_FORM_NAMES = {n.lower(): n for n in FORM_FIELDS}
REPEATED = {"to", "cc", "bcc", "attachment", "inlineImage"}
# Accepted and kept, not acted on.
_IGNORED = (
    "ampHtml",
    "trackingPixelPosition",
    "landingPagePlaceholders",
    "landingPageId",
    "templateLanguageVersion",
    "clientPriority",
    "applicationId",
    "entityId",
    "ipPoolId",
)
_NODE_INDEX = re.compile(r"\[\s*'?\"?\d*'?\"?\s*\]$")


class Problems(dict[str, list[str]]):
    """Infobip's ``validationErrors``: wire field name to texts."""

    def add(self, name: str, text: str) -> None:
        self.setdefault(name, []).append(text)


def _form_name(raw: str | None) -> str | None:
    if not isinstance(raw, str):  # a part whose name werkzeug could not read (None)
        return None
    base = _NODE_INDEX.sub("", raw.strip())
    return _FORM_NAMES.get(base.lower())


def _flag(value: Any, name: str, problems: Problems) -> bool | None:
    if value is None or value == "":
        return None
    if isinstance(value, bool):
        return value
    text = str(value).strip().lower()
    if text in ("true", "1"):
        return True
    if text in ("false", "0"):
        return False
    problems.add(name, BAD_BOOLEAN)
    return None


def _text(value: Any, name: str, problems: Problems, most: int | None = None) -> str | None:
    if value is None:
        return None
    if not isinstance(value, str):
        problems.add(name, "must be a string")
        return None
    if most is not None and len(value) > most:
        problems.add(name, f"size must be between 0 and {most}")
        return None
    if lone_surrogate(value) is not None:
        problems.add(name, NOT_TEXT)
        return None
    if "\x00" in value:  # kept in the database, whose text (PostgreSQL's) cannot hold it
        problems.add(name, NUL_TEXT)
        return None
    return value


def _person(value: Any, name: str, problems: Problems) -> Person | None:
    """An address, or ``Name <address>``."""
    if value is None or (isinstance(value, str) and not value.strip()):
        return None
    if not isinstance(value, str):
        problems.add(name, "must be a string")
        return None
    display, address = parseaddr(value.strip())
    normal = normalise_address(address) if address else None
    if normal is None:
        problems.add(name, BAD_ADDRESS)
        return None
    return Person(normal, display.strip())


def _json_object(value: Any, name: str, problems: Problems) -> dict[str, Any]:
    """A JSON object given as an object or as a JSON string."""
    if value is None or value == "":
        return {}
    if isinstance(value, str):
        try:
            value = json.loads(value)
        except (ValueError, RecursionError):
            problems.add(name, BAD_JSON_OBJECT)
            return {}
    if not isinstance(value, dict):
        problems.add(name, BAD_JSON_OBJECT)
        return {}
    return value


def _headers(value: Any, name: str, problems: Problems) -> dict[str, str]:
    headers: dict[str, str] = {}
    for key, raw in _json_object(value, name, problems).items():
        if isinstance(raw, bool) or not isinstance(raw, str | int | float):
            problems.add(name, f"{key}: the value must be a string")
        else:
            headers[str(key)] = str(raw)
    return headers


def _recipient(value: Any, where: str, problems: Problems) -> InfobipRecipient | None:
    """``addr``, ``Name <addr>`` or a JSON ``{"to", "placeholders"}`` (also an object with
    ``destination``, ``messageId`` and ``placeholders``, as /email/4 sends)."""
    entry: Any = value
    if isinstance(value, str) and value.strip().startswith("{"):
        try:
            entry = json.loads(value)
        except (ValueError, RecursionError):
            problems.add(where, BAD_ADDRESS)
            return None
    if isinstance(entry, dict):
        lowered = {str(k).lower(): v for k, v in entry.items()}
        address = lowered.get("to", lowered.get("destination"))
        person = _person(address, where, problems)
        if address is None:
            problems.add(where, BLANK)
        placeholders = _json_object(lowered.get("placeholders"), f"{where}.placeholders", problems)
        message_id = _text(lowered.get("messageid"), f"{where}.messageId", problems, MAX_MESSAGE_ID)
        if person is None:
            return None
        return InfobipRecipient(person.email, where, person.name, placeholders, message_id or None)
    person = _person(entry, where, problems)
    if person is None:
        if entry is None or (isinstance(entry, str) and not entry.strip()):
            problems.add(where, BLANK)
        return None
    return InfobipRecipient(person.email, where, person.name)


def _send_at(value: Any, name: str, problems: Problems, now: datetime) -> int | None:
    if value is None or value == "":
        return None
    if not isinstance(value, str):
        problems.add(name, "must be a date and time (ISO 8601)")
        return None
    text = value.strip()
    text = re.sub(r"Z$", "+00:00", text)
    text = re.sub(r"([+-]\d\d)(\d\d)$", r"\1:\2", text)
    try:
        when = datetime.fromisoformat(text)
    except ValueError:
        problems.add(name, "must be a date and time (ISO 8601)")
        return None
    if when.tzinfo is None:
        when = when.replace(tzinfo=UTC)
    if when > now + MAX_SCHEDULE:
        problems.add(name, "must be at most 30 days ahead")
        return None
    return int(when.timestamp()) if when > now else None


def _template_id(value: Any, name: str, problems: Problems) -> int | None:
    if value is None or value == "":
        return None
    text = str(value).strip()
    if isinstance(value, bool) or not text.isascii() or not text.isdigit() or len(text) > 18:
        problems.add(name, "must be a template id (a number)")
        return None
    return int(text)


def _url(value: Any, name: str, problems: Problems) -> str | None:
    text = _text(value, name, problems, 2048)
    if not text:
        return None
    if not re.match(r"^https?://[^\s/]+", text, re.IGNORECASE):
        problems.add(name, "must be an http or https URL")
        return None
    return text


def _file(data: bytes, filename: str, mimetype: str | None, inline: bool) -> File:
    name = (filename or "attachment").replace("\r", "").replace("\n", "").strip() or "attachment"
    ctype = mimetype or mimetypes.guess_type(name)[0] or "application/octet-stream"
    if ctype.count("/") != 1 or any(c in ctype for c in "\r\n;"):
        ctype = "application/octet-stream"
    return File(
        filename=name,
        content=base64.b64encode(data).decode("ascii"),
        type=ctype.lower(),
        disposition="inline" if inline else "attachment",
        contentid=name if inline else None,
    )


def _common(
    fields: dict[str, Any], problems: Problems, names: dict[str, str], now: datetime
) -> dict[str, Any]:
    """The fields /email/3 and /email/4 share, read from canonical names (``names`` gives
    each one's wire name)."""

    def n(canonical: str) -> str:
        return names.get(canonical, canonical)

    track = _flag(fields.get("track"), n("track"), problems)
    clicks = _flag(fields.get("trackClicks"), n("trackClicks"), problems)
    opens = _flag(fields.get("trackOpens"), n("trackOpens"), problems)
    notify_type = _text(fields.get("notifyContentType"), n("notifyContentType"), problems, 100)
    if notify_type and notify_type.strip().lower() not in NOTIFY_CONTENT_TYPES:
        problems.add(n("notifyContentType"), "must be application/json or application/xml")
    ignored = {k: _kept(fields[k]) for k in _IGNORED if fields.get(k) is not None}
    report = ReportSettings(
        notify_url=_url(fields.get("notifyUrl"), n("notifyUrl"), problems),
        notify_content_type=notify_type.strip().lower() if notify_type else None,
        notify=_flag(fields.get("notify"), n("notify"), problems) is not False,
        callback_data=_text(
            fields.get("callbackData"), n("callbackData"), problems, MAX_CALLBACK_DATA
        ),
        intermediate_report=bool(
            _flag(fields.get("intermediateReport"), n("intermediateReport"), problems)
        ),
        tracking_url=_url(fields.get("trackingUrl"), n("trackingUrl"), problems),
        campaign_reference_id=_text(
            fields.get("campaignReferenceId"), n("campaignReferenceId"), problems, MAX_ID
        ),
        application_id=_str_or_none(fields.get("applicationId")),
        entity_id=_str_or_none(fields.get("entityId")),
        ignored=ignored,
    )
    return {
        "sender": _person(fields.get("from"), n("from"), problems),
        "subject": _text(fields.get("subject"), n("subject"), problems),
        "html": _text(fields.get("html"), n("html"), problems),
        "text": _text(fields.get("text"), n("text"), problems),
        "template_id": _template_id(fields.get("templateId"), n("templateId"), problems),
        "reply_to": _person(fields.get("replyTo"), n("replyTo"), problems),
        "headers": _headers(fields.get("headers"), n("headers"), problems),
        "track_links": clicks if clicks is not None else track,
        "track_opens": opens if opens is not None else track,
        "send_at": _send_at(fields.get("sendAt"), n("sendAt"), problems, now),
        "default_placeholders": _json_object(
            fields.get("defaultPlaceholders"), n("defaultPlaceholders"), problems
        ),
        "preserve_recipients": bool(
            _flag(fields.get("preserveRecipients"), n("preserveRecipients"), problems)
        ),
        "report": report,
        "names": names,
    }


def _kept(value: Any) -> Any:
    """A field recorded only, as kept: text (or JSON) up to MAX_KEPT characters."""
    if isinstance(value, str | int | float | bool):
        return value[:MAX_KEPT] if isinstance(value, str) else value
    return json.dumps(value)[:MAX_KEPT]


def _str_or_none(value: Any) -> str | None:
    if value is None or isinstance(value, dict | list):
        return None
    text = str(value)[:MAX_ID]
    return text if lone_surrogate(text) is None and "\x00" not in text else None


def _required(send: dict[str, Any], problems: Problems, names: dict[str, str]) -> None:
    if send["template_id"] is None:
        if send["sender"] is None and names.get("from", "from") not in problems:
            problems.add(names.get("from", "from"), BLANK)
        if not send["subject"] and names.get("subject", "subject") not in problems:
            problems.add(names.get("subject", "subject"), BLANK)


def read_form(request: Request, now: datetime) -> dict[str, Any]:
    """The send of a /email/2 or /email/3 multipart (or urlencoded) request."""
    problems = Problems()
    single: dict[str, Any] = {}
    lists: dict[str, list[Any]] = {k: [] for k in REPEATED}
    files: dict[str, list[File]] = {"attachment": [], "inlineImage": []}
    try:
        form = list(request.form.items(multi=True))
        uploads = list(request.files.items(multi=True))
    except HTTPException:
        raise
    except (ValueError, UnicodeDecodeError):
        form, uploads = [], []
        problems.add("request", "the form could not be read")
    for raw, value in form:
        name = _form_name(raw)
        if name is None or value == "undefined":
            continue
        if name in REPEATED:
            if name in files:
                problems.add(name, "must be a file part")
            else:
                lists[name].append(value)
        elif name not in single:
            single[name] = value
    for raw, upload in uploads:
        name = _form_name(raw)
        if name in files:
            files[name].append(
                _file(upload.read(), upload.filename or "", upload.mimetype, name == "inlineImage")
            )
        elif name in REPEATED:
            lists[name].append(upload.read().decode("utf-8", "replace"))
        elif name is not None and name not in single:
            single[name] = upload.read().decode("utf-8", "replace")
    people = {
        kind: tuple(
            r
            for i, v in enumerate(lists[kind])
            if (r := _recipient(v, f"{kind}[{i}]" if len(lists[kind]) > 1 else kind, problems))
        )
        for kind in ("to", "cc", "bcc")
    }
    if not lists["to"]:
        problems.add("to", BLANK)
    total = sum(len(lists[k]) for k in ("to", "cc", "bcc"))
    if total > MAX_RECIPIENTS:
        problems.add("to", f"at most {MAX_RECIPIENTS} recipients in total")
    common = _common(single, problems, {}, now)
    _required(common, problems, {})
    send = InfobipSend(
        **common,
        to=people["to"],
        cc=people["cc"],
        bcc=people["bcc"],
        attachments=tuple(files["attachment"] + files["inlineImage"]),
        message_id=_text(single.get("messageId"), "messageId", problems, MAX_MESSAGE_ID) or None,
    )
    bulk_id = _text(single.get("bulkId"), "bulkId", problems, MAX_BULK_ID)
    return {"Sends": [send], "BulkID": bulk_id or None, "Problems": dict(problems)}


def _media(value: Any, where: str, problems: Problems, inline: bool) -> list[File]:
    if value is None:
        return []
    if not isinstance(value, list):
        problems.add(where, "must be an array")
        return []
    out: list[File] = []
    for i, item in enumerate(value):
        at = f"{where}[{i}]"
        if not isinstance(item, dict):
            problems.add(at, "must be an object")
            continue
        kind = str(item.get("type") or "binary")
        if kind != "binary":
            problems.add(f"{at}.type", "only binary content is accepted")
            continue
        content, name = item.get("content"), item.get("fileName")
        if not isinstance(name, str) or not name.strip():
            problems.add(f"{at}.fileName", BLANK)
        if not isinstance(content, str):
            problems.add(f"{at}.content", BLANK)
            continue
        try:
            data = base64.b64decode(content, validate=True)
        except ValueError:
            problems.add(f"{at}.content", "must be base64")
            continue
        ctype = item.get("contentType")
        if isinstance(name, str) and name.strip():
            out.append(_file(data, name, ctype if isinstance(ctype, str) else None, inline))
    return out


def _object(value: Any, where: str, problems: Problems) -> dict[str, Any]:
    if value is None:
        return {}
    if not isinstance(value, dict):
        problems.add(where, "must be an object")
        return {}
    return value


def read_json(request: Request, now: datetime) -> dict[str, Any]:
    """The sends of a /email/4/messages request: one per destination group of each message."""
    problems = Problems()
    raw = request.get_data(cache=True)
    try:
        body = json.loads(raw) if raw.strip() else None
    except (ValueError, UnicodeDecodeError, RecursionError):
        problems.add("request", "the body is not valid JSON")
        return {"Sends": [], "BulkID": None, "Problems": dict(problems)}
    if not isinstance(body, dict):
        problems.add("request", "must be a JSON object")
        return {"Sends": [], "BulkID": None, "Problems": dict(problems)}
    options = _object(body.get("options"), "options", problems)
    schedule = _object(options.get("schedule"), "options.schedule", problems)
    tracking = _object(options.get("tracking"), "options.tracking", problems)
    bulk_id = _text(schedule.get("bulkId"), "options.schedule.bulkId", problems, MAX_BULK_ID)
    request_fields: dict[str, Any] = {
        "sendAt": schedule.get("sendAt"),
        "track": tracking.get("track"),
        "trackOpens": tracking.get("trackOpens"),
        "trackClicks": tracking.get("trackClicks"),
        "trackingUrl": tracking.get("trackingUrl"),
        "trackingPixelPosition": tracking.get("trackingPixelPosition"),
        "clientPriority": options.get("clientPriority", options.get("clientPriority ")),
    }
    request_names = {
        "sendAt": "options.schedule.sendAt",
        "track": "options.tracking.track",
        "trackOpens": "options.tracking.trackOpens",
        "trackClicks": "options.tracking.trackClicks",
        "trackingUrl": "options.tracking.trackingUrl",
    }
    messages = body.get("messages")
    sends: list[InfobipSend] = []
    if not isinstance(messages, list) or not messages:
        problems.add("messages", BLANK)
        messages = []
    total = 0
    for m, message in enumerate(messages):
        at = f"messages[{m}]"
        if not isinstance(message, dict):
            problems.add(at, "must be an object")
            continue
        content = _object(message.get("content"), f"{at}.content", problems)
        options_m = _object(message.get("options"), f"{at}.options", problems)
        platform = _object(options_m.get("platform"), f"{at}.options.platform", problems)
        webhooks = _object(message.get("webhooks"), f"{at}.webhooks", problems)
        delivery = _object(webhooks.get("delivery"), f"{at}.webhooks.delivery", problems)
        ips = _object(message.get("ips"), f"{at}.ips", problems)
        fields = {
            **request_fields,
            "from": message.get("sender"),
            "subject": content.get("subject"),
            "text": content.get("text"),
            "html": content.get("html"),
            "ampHtml": content.get("ampHtml"),
            "templateId": content.get("templateId"),
            "defaultPlaceholders": content.get("defaultPlaceholders"),
            "landingPagePlaceholders": content.get("landingPagePlaceholders"),
            "landingPageId": content.get("optoutLandingPageId"),
            "templateLanguageVersion": content.get("templateLanguageVersion"),
            "headers": content.get("headers"),
            "campaignReferenceId": options_m.get("campaignReferenceId"),
            "applicationId": platform.get("applicationId"),
            "entityId": platform.get("entityId"),
            "notifyUrl": delivery.get("url"),
            "intermediateReport": delivery.get("intermediateReport"),
            "notify": delivery.get("notify"),
            "notifyContentType": webhooks.get("contentType"),
            "callbackData": webhooks.get("callbackData"),
            "ipPoolId": ips.get("ipPoolId"),
        }
        names = {
            **request_names,
            "from": f"{at}.sender",
            "subject": f"{at}.content.subject",
            "text": f"{at}.content.text",
            "html": f"{at}.content.html",
            "templateId": f"{at}.content.templateId",
            "defaultPlaceholders": f"{at}.content.defaultPlaceholders",
            "headers": f"{at}.content.headers",
            "attachment": f"{at}.content.attachments",
            "campaignReferenceId": f"{at}.options.campaignReferenceId",
            "notifyUrl": f"{at}.webhooks.delivery.url",
            "intermediateReport": f"{at}.webhooks.delivery.intermediateReport",
            "notify": f"{at}.webhooks.delivery.notify",
            "notifyContentType": f"{at}.webhooks.contentType",
            "callbackData": f"{at}.webhooks.callbackData",
        }
        files = _media(
            content.get("attachments"), f"{at}.content.attachments", problems, False
        ) + _media(content.get("inlineImages"), f"{at}.content.inlineImages", problems, True)
        groups = message.get("destinations")
        if not isinstance(groups, list) or not groups:
            problems.add(f"{at}.destinations", BLANK)
            groups = []
        for g, group in enumerate(groups):
            where = f"{at}.destinations[{g}]"
            if not isinstance(group, dict):
                problems.add(where, "must be an object")
                continue
            group_names = {
                **names,
                "to": f"{where}.to",
                "cc": f"{where}.cc",
                "bcc": f"{where}.bcc",
                "replyTo": f"{where}.replyTo",
                "preserveRecipients": f"{where}.preserveRecipients",
            }
            common = _common(
                {
                    **fields,
                    "replyTo": group.get("replyTo"),
                    "preserveRecipients": group.get("preserveRecipients"),
                },
                problems,
                group_names,
                now,
            )
            _required(common, problems, group_names)
            people: dict[str, tuple[InfobipRecipient, ...]] = {}
            for kind in ("to", "cc", "bcc"):
                entries = group.get(kind)
                if entries is None:
                    entries = []
                if not isinstance(entries, list):
                    problems.add(f"{where}.{kind}", "must be an array")
                    entries = []
                total += len(entries)
                people[kind] = tuple(
                    r
                    for i, e in enumerate(entries)
                    if (r := _recipient(e, f"{where}.{kind}[{i}].destination", problems))
                )
            if not group.get("to"):
                problems.add(f"{where}.to", BLANK)
            sends.append(
                InfobipSend(
                    **common,
                    to=people["to"],
                    cc=people["cc"],
                    bcc=people["bcc"],
                    attachments=tuple(files),
                )
            )
    if total > MAX_RECIPIENTS:
        problems.add("messages", f"at most {MAX_RECIPIENTS} recipients in total")
    return {"Sends": sends, "BulkID": bulk_id or None, "Problems": dict(problems)}
