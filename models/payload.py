"""The stored message payload: a typed, versioned structure with one encoder and one decoder.

A payload is ``Composed`` (the parts of a send made over HTTP, built into a message by the
worker) or ``Submitted`` (a complete message submitted over SMTP). ``encode_payload`` writes
the current version (``VERSION``) as kept in ``messages.payload``; ``decode_payload`` reads
it and every form kept before:

- version 1, plain JSON with no ``v`` key: the send's parts, or ``raw`` (the submitted
  message in base64) or ``rawz`` (zlib, then base64);
- any version, its JSON compressed as ``{"jz": ...}`` when larger than ``PACK_ABOVE``;
- version 2: version 1's keys with ``"v": 2``;
- version 3: version 2's keys and ``personalization`` (the subject and parts are templates,
  rendered for each recipient when the message is built). Only a personalized send is
  written as version 3, so a worker that predates it refuses it rather than sending the
  templates as they are; every other payload is written exactly as before.

Versions 2 and 3 may carry ``sender_header`` (the Sender header) and ``bounce`` (true: the
sender marked it a bounce message), written only when set.

Beneath them, ``pack_payload`` and ``unpack_payload`` are the JSON-level forms (compression),
kept for what reads or writes payloads as plain dicts.
"""

from __future__ import annotations

import base64
import json
import zlib
from dataclasses import dataclass, field
from typing import Any

VERSION = 2
PERSONALIZED_VERSION = 3
PACK_ABOVE = 1024  # bytes of JSON: a smaller payload is kept as it is


@dataclass(frozen=True)
class Person:
    """An address and its display name."""

    email: str
    name: str = ""


@dataclass(frozen=True)
class File:
    """An attachment as accepted: its content still in base64."""

    filename: str
    content: str  # base64
    type: str = "application/octet-stream"
    disposition: str = "attachment"
    contentid: str | None = None


@dataclass(frozen=True)
class Personalization:
    """The values of a personalized send: the message's own, and each recipient's (by
    address, in lower case), which override them."""

    values: dict[str, Any] = field(default_factory=dict)
    recipients: dict[str, dict[str, Any]] = field(default_factory=dict)

    def values_for(self, recipient: str) -> dict[str, Any]:
        own = self.recipients.get(recipient.lower())
        return {**self.values, **own} if own else self.values


@dataclass(frozen=True)
class Composed:
    """A message given as parts (the HTTP sends): the worker builds it."""

    sender: Person
    to: tuple[Person, ...] = ()
    cc: tuple[Person, ...] = ()
    reply_to: tuple[Person, ...] = ()
    subject: str = ""
    html: str | None = None
    text: str | None = None
    headers: dict[str, str] = field(default_factory=dict)
    attachments: tuple[File, ...] = ()
    track_links: bool | None = None  # None: the domain's setting
    track_opens: bool | None = None
    # Set: subject, html and text are templates (mta.templating), rendered per recipient.
    personalization: Personalization | None = None
    sender_header: Person | None = None  # the Sender header, when it differs from From
    bounce: bool = False  # the sender marked it a bounce message (Postal's ``bounce``)


@dataclass(frozen=True)
class Submitted:
    """A complete message submitted over SMTP, kept as it came."""

    data: bytes


Payload = Composed | Submitted


class PayloadError(ValueError):
    """A stored payload that cannot be read (unknown version, missing part)."""


def encode_payload(payload: Payload) -> str:
    """``payload`` as kept in ``messages.payload`` (the current version)."""
    if isinstance(payload, Submitted):
        # Compressed on its own (a third of its size or less), so not packed again.
        return json.dumps(
            {"v": VERSION, **raw_entry(payload.data), "track_links": None, "track_opens": None}
        )
    stored: dict[str, Any] = {
        "v": VERSION,
        "from": _person(payload.sender),
        "to": [_person(p) for p in payload.to],
        "cc": [_person(p) for p in payload.cc],
        "reply_to": [_person(p) for p in payload.reply_to],
        "subject": payload.subject,
        "html": payload.html,
        "text": payload.text,
        "headers": payload.headers,
        "attachments": [
            {
                "filename": f.filename,
                "content": f.content,
                "type": f.type,
                "disposition": f.disposition,
                "contentid": f.contentid,
            }
            for f in payload.attachments
        ],
        "track_links": payload.track_links,
        "track_opens": payload.track_opens,
    }
    # Written only when set, so every other payload is kept exactly as before.
    if payload.sender_header is not None:
        stored["sender_header"] = _person(payload.sender_header)
    if payload.bounce:
        stored["bounce"] = True
    if payload.personalization is not None:
        stored["v"] = PERSONALIZED_VERSION
        stored["personalization"] = {
            "values": payload.personalization.values,
            "recipients": payload.personalization.recipients,
        }
    return pack_payload(stored)


def decode_payload(text: str) -> Payload:
    """The payload kept in ``text``, in any of the forms ever written (see the module)."""
    try:
        stored = unpack_payload(text)
    except (ValueError, zlib.error) as exc:
        raise PayloadError(f"unreadable payload: {exc}") from exc
    if not isinstance(stored, dict):
        raise PayloadError("unreadable payload: not a JSON object")
    version = stored.get("v", 1)
    if version not in (1, 2, PERSONALIZED_VERSION):
        raise PayloadError(f"payload version {version} is newer than this Postern reads")
    try:
        raw = raw_message(stored)
        if raw is not None:
            return Submitted(raw)
        return Composed(
            sender=_read_person(stored["from"]),
            to=tuple(_read_person(p) for p in stored.get("to") or ()),
            cc=tuple(_read_person(p) for p in stored.get("cc") or ()),
            reply_to=tuple(_read_person(p) for p in stored.get("reply_to") or ()),
            subject=str(stored.get("subject") or ""),
            html=stored.get("html"),
            text=stored.get("text"),
            headers={str(k): str(v) for k, v in (stored.get("headers") or {}).items()},
            attachments=tuple(
                File(
                    str(a["filename"]),
                    str(a["content"]),
                    str(a.get("type") or "application/octet-stream"),
                    str(a.get("disposition") or "attachment"),
                    a.get("contentid"),
                )
                for a in stored.get("attachments") or ()
            ),
            track_links=stored.get("track_links"),
            track_opens=stored.get("track_opens"),
            personalization=_read_personalization(stored.get("personalization")),
            sender_header=_read_person(stored["sender_header"])
            if stored.get("sender_header")
            else None,
            bounce=bool(stored.get("bounce")),
        )
    except (KeyError, TypeError, AttributeError, ValueError) as exc:
        raise PayloadError(f"unreadable payload: {type(exc).__name__}: {exc}") from exc


def _read_personalization(entry: Any) -> Personalization | None:
    if entry is None:
        return None
    return Personalization(
        dict(entry.get("values") or {}),
        {str(k): dict(v) for k, v in (entry.get("recipients") or {}).items()},
    )


def _person(p: Person) -> dict[str, str]:
    return {"email": p.email, "name": p.name}


def _read_person(entry: dict[str, Any]) -> Person:
    return Person(str(entry["email"]), str(entry.get("name") or ""))


# -- the JSON-level forms -------------------------------------------------------------------


def raw_entry(data: bytes) -> dict[str, str]:
    """How a message submitted whole (over SMTP) is kept in its payload: compressed by zlib at
    its quickest level, then base64. A typical message shrinks to a third or less, so its
    row needs fewer (or no) overflow pages: fewer pages to write at the commit that accepts
    it, to read when it is built, and cheaper to encode than the base64 of the whole."""
    return {"rawz": _squeeze(data)}


def pack_payload(payload: dict[str, Any]) -> str:
    """A payload dict as kept: JSON, and when that is larger than ``PACK_ABOVE`` (HTML parts,
    attachments), the JSON compressed by zlib at its quickest level and base64-encoded, as
    ``{"jz": ...}``. HTML typically shrinks to a quarter or less, so the row needs fewer (or
    no) overflow pages: fewer pages to write at the commit that accepts it. A payload
    holding a message submitted whole, already compressed (``raw_entry``), is kept as JSON."""
    text = json.dumps(payload)
    if len(text) <= PACK_ABOVE or submitted_whole(payload):
        return text
    return json.dumps({"jz": _squeeze(text.encode())})


def unpack_payload(text: str) -> dict[str, Any]:
    """The payload dict ``pack_payload`` kept (or plain JSON, as payloads were kept before)."""
    payload: dict[str, Any] = json.loads(text)
    if "jz" in payload:
        unpacked: dict[str, Any] = json.loads(_unsqueeze(payload["jz"]))
        return unpacked
    return payload


def submitted_whole(payload: dict[str, Any]) -> bool:
    """Whether a payload dict holds a message submitted whole (over SMTP), in either form."""
    return "rawz" in payload or "raw" in payload


def raw_message(payload: dict[str, Any]) -> bytes | None:
    """The message a payload dict holds whole, if it does: compressed, or plain base64
    ("raw", as stored before compression)."""
    if "rawz" in payload:
        return _unsqueeze(payload["rawz"])
    if "raw" in payload:
        return base64.b64decode(payload["raw"])
    return None


def _squeeze(data: bytes) -> str:
    """``data`` compressed by zlib at its quickest level, as base64 text."""
    return base64.b64encode(zlib.compress(data, 1)).decode("ascii")


def _unsqueeze(text: str) -> bytes:
    return zlib.decompress(base64.b64decode(text))
