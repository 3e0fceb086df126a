"""Messages, their per-recipient deliveries (the queue), events, and the suppression list."""

from __future__ import annotations

import base64
import json
import zlib
from datetime import datetime
from typing import Any

from sqlalchemy import ForeignKey, Index, Integer, String, Text, UniqueConstraint
from sqlalchemy.orm import Mapped, mapped_column, relationship

from core.clock import utcnow
from models.base import Base, BigID, LongText, UTCDateTime

# Delivery.status values. A delivery is pending while its due_at is set.
QUEUED = "queued"
SENDING = "sending"
DEFERRED = "deferred"
DELIVERED = "delivered"
BOUNCED = "bounced"
FAILED = "failed"
SUPPRESSED = "suppressed"


def raw_entry(data: bytes) -> dict[str, str]:
    """How a message submitted whole (over SMTP) is kept in its payload: compressed by zlib at
    its quickest level, then base64. A typical message shrinks to a third or less, so its
    row needs fewer (or no) overflow pages: fewer pages to write at the commit that accepts
    it, to read when it is built, and cheaper to encode than the base64 of the whole."""
    return {"rawz": _squeeze(data)}


PACK_ABOVE = 1024  # bytes of JSON: a smaller payload is kept as it is


def pack_payload(payload: dict[str, Any]) -> str:
    """A message's payload as kept in ``messages.payload``: JSON, and when that is larger
    than ``PACK_ABOVE`` (HTML parts, attachments), the JSON compressed by zlib at its
    quickest level and base64-encoded, as ``{"jz": ...}``. HTML typically shrinks to a
    quarter or less, so the row needs fewer (or no) overflow pages: fewer pages to write
    at the commit that accepts it. A payload holding a message submitted whole, already
    compressed (``raw_entry``), is kept as JSON."""
    text = json.dumps(payload)
    if len(text) <= PACK_ABOVE or submitted_whole(payload):
        return text
    return json.dumps({"jz": _squeeze(text.encode())})


def unpack_payload(text: str) -> dict[str, Any]:
    """The payload ``pack_payload`` kept (or plain JSON, as payloads were kept before)."""
    payload = json.loads(text)
    if "jz" in payload:
        return json.loads(_unsqueeze(payload["jz"]))
    return payload


def _squeeze(data: bytes) -> str:
    """``data`` compressed by zlib at its quickest level, as base64 text."""
    return base64.b64encode(zlib.compress(data, 1)).decode("ascii")


def _unsqueeze(text: str) -> bytes:
    return zlib.decompress(base64.b64decode(text))


def submitted_whole(payload: dict[str, Any]) -> bool:
    """Whether a payload holds a message submitted whole (over SMTP), in either form."""
    return "rawz" in payload or "raw" in payload


def raw_message(payload: dict[str, Any]) -> bytes | None:
    """The message a payload holds whole, if it does: compressed, or plain base64 ("raw",
    as stored before compression)."""
    if "rawz" in payload:
        return _unsqueeze(payload["rawz"])
    if "raw" in payload:
        return base64.b64decode(payload["raw"])
    return None


class Message(Base):
    """One accepted message; what to build and send is kept as JSON in ``payload``."""

    __tablename__ = "messages"

    id: Mapped[str] = mapped_column(String(36), primary_key=True)  # a UUID
    user_id: Mapped[int] = mapped_column(ForeignKey("users.id", ondelete="CASCADE"), index=True)
    # No foreign key: a deleted domain's messages and events stay for statistics.
    domain_id: Mapped[int] = mapped_column(Integer, index=True)
    domain_name: Mapped[str] = mapped_column(String(253))
    sender_key_id: Mapped[int | None] = mapped_column(Integer, nullable=True)
    source: Mapped[str] = mapped_column(String(16))  # "api", "api.php", "smtp"
    from_email: Mapped[str] = mapped_column(String(320))
    subject: Mapped[str] = mapped_column(String(1000))
    tags: Mapped[str] = mapped_column(Text, default="[]")  # JSON list
    payload: Mapped[str] = mapped_column(LongText)  # JSON: parts, headers, attachments
    size: Mapped[int] = mapped_column(Integer)
    send_at: Mapped[datetime | None] = mapped_column(UTCDateTime, nullable=True)
    created_at: Mapped[datetime] = mapped_column(UTCDateTime, default=utcnow)

    deliveries: Mapped[list[Delivery]] = relationship(
        back_populates="message", cascade="all, delete-orphan", passive_deletes=True
    )


class Delivery(Base):
    """The message to one recipient: the unit the worker claims, sends and retries."""

    __tablename__ = "deliveries"
    __table_args__ = (Index("ix_deliveries_user_id_created_at", "user_id", "created_at"),)

    id: Mapped[int] = mapped_column(BigID, primary_key=True, autoincrement=True)
    message_id: Mapped[str] = mapped_column(
        ForeignKey("messages.id", ondelete="CASCADE"), index=True
    )
    user_id: Mapped[int] = mapped_column(Integer)
    domain_id: Mapped[int] = mapped_column(Integer, index=True)
    recipient: Mapped[str] = mapped_column(String(320))
    recipient_domain: Mapped[str] = mapped_column(String(253))
    kind: Mapped[str] = mapped_column(String(3))  # "to", "cc", "bcc"
    # Unguessable: names the delivery in its VERP return path and tracking links.
    token: Mapped[str] = mapped_column(String(32), unique=True)
    status: Mapped[str] = mapped_column(String(16), default=QUEUED)
    # When the worker should take it up; NULL once final, so the index holds only the queue.
    due_at: Mapped[datetime | None] = mapped_column(UTCDateTime, nullable=True, index=True)
    claimed_by: Mapped[str | None] = mapped_column(String(64), nullable=True)
    attempts: Mapped[int] = mapped_column(Integer, default=0)
    last_code: Mapped[int | None] = mapped_column(Integer, nullable=True)
    last_enhanced: Mapped[str | None] = mapped_column(String(16), nullable=True)
    last_text: Mapped[str | None] = mapped_column(Text, nullable=True)
    last_host: Mapped[str | None] = mapped_column(String(255), nullable=True)
    created_at: Mapped[datetime] = mapped_column(UTCDateTime, default=utcnow)
    updated_at: Mapped[datetime] = mapped_column(UTCDateTime, default=utcnow)

    message: Mapped[Message] = relationship(back_populates="deliveries")


def _lower_recipient(context) -> str:
    return context.get_current_parameters()["recipient"].lower()


class Event(Base):
    """Something that happened to a delivery; ``uid`` is stable for webhook receivers."""

    __tablename__ = "events"
    # The event log's queries (commands/event_log.py, commands/stats.py) are answered from
    # these indexes alone where they can be: a page and its exact count by user or domain and
    # date, by domain, type and date (with the delivery, for unique opens and clicks), by
    # recipient.
    __table_args__ = (
        Index("ix_events_user_id_created_at_type", "user_id", "created_at", "type"),
        Index("ix_events_domain_id_created_at_user_id", "domain_id", "created_at", "user_id"),
        Index(
            "ix_events_domain_id_type_created_at_user_id_delivery_id",
            "domain_id",
            "type",
            "created_at",
            "user_id",
            "delivery_id",
        ),
        Index("ix_events_user_id_recipient_lower", "user_id", "recipient_lower"),
    )

    id: Mapped[int] = mapped_column(BigID, primary_key=True, autoincrement=True)
    uid: Mapped[str] = mapped_column(String(36), unique=True)
    type: Mapped[str] = mapped_column(String(16))
    created_at: Mapped[datetime] = mapped_column(UTCDateTime, default=utcnow)
    user_id: Mapped[int] = mapped_column(Integer)
    domain_id: Mapped[int] = mapped_column(Integer)
    domain_name: Mapped[str] = mapped_column(String(253))
    message_id: Mapped[str] = mapped_column(String(36), index=True)
    delivery_id: Mapped[int | None] = mapped_column(BigID, nullable=True)
    recipient: Mapped[str] = mapped_column(String(320))
    # The recipient lower-cased, filled in from ``recipient`` on insert: searched by `to:`.
    recipient_lower: Mapped[str] = mapped_column(String(320), default=_lower_recipient)
    tags: Mapped[str] = mapped_column(Text, default="[]")
    smtp_code: Mapped[int | None] = mapped_column(Integer, nullable=True)
    enhanced_code: Mapped[str | None] = mapped_column(String(16), nullable=True)
    smtp_text: Mapped[str | None] = mapped_column(Text, nullable=True)
    details: Mapped[str] = mapped_column(Text, default="{}")  # JSON

    # Lets a new event and its new delivery be written in one flush (no FK: events outlive).
    delivery: Mapped[Delivery | None] = relationship(
        primaryjoin="foreign(Event.delivery_id) == Delivery.id", lazy="raise"
    )


class Suppression(Base):
    """An address the user's mail is not sent to: for one domain, or all (domain_id 0)."""

    __tablename__ = "suppressions"
    __table_args__ = (UniqueConstraint("user_id", "email", "domain_id"),)

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    user_id: Mapped[int] = mapped_column(ForeignKey("users.id", ondelete="CASCADE"))
    email: Mapped[str] = mapped_column(String(320))  # lower-cased
    domain_id: Mapped[int] = mapped_column(Integer, default=0)
    source: Mapped[str] = mapped_column(String(16))  # bounce, complaint, unsubscribe, manual
    reason: Mapped[str] = mapped_column(Text, default="")
    created_at: Mapped[datetime] = mapped_column(UTCDateTime, default=utcnow)
