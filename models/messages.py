"""Messages, their per-recipient deliveries (the queue), events, and the suppression list."""

from __future__ import annotations

from datetime import datetime

from sqlalchemy import ForeignKey, Index, Integer, String, Text, UniqueConstraint
from sqlalchemy.engine.default import DefaultExecutionContext
from sqlalchemy.orm import Mapped, mapped_column, relationship

from core.clock import utcnow
from models.base import NEVER_REUSED, Base, BigID, LongText, UTCDateTime

# The payload's JSON-level forms, where they were first kept (models.payload holds them).
from models.payload import (
    PACK_ABOVE,
    pack_payload,
    raw_entry,
    raw_message,
    submitted_whole,
    unpack_payload,
)

__all__ = [
    "PACK_ABOVE",
    "pack_payload",
    "raw_entry",
    "raw_message",
    "submitted_whole",
    "unpack_payload",
]

# Delivery.status values. A delivery is pending while its due_at is set.
QUEUED = "queued"
SENDING = "sending"
DEFERRED = "deferred"
DELIVERED = "delivered"
BOUNCED = "bounced"
FAILED = "failed"
SUPPRESSED = "suppressed"
# Parked after repeated unexpected failures (building or signing it failed): not due until
# EmailGateway.ReleaseHeldMessages makes it due again.
HELD = "held"


class Message(Base):
    """One accepted message; what to build and send is kept in ``payload`` (models.payload)."""

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
    __table_args__ = (
        Index("ix_deliveries_user_id_created_at", "user_id", "created_at"),
        NEVER_REUSED,
    )

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
    # Unexpected failures (an error building or signing it) since it was last released.
    errors: Mapped[int] = mapped_column(Integer, server_default="0")
    last_code: Mapped[int | None] = mapped_column(Integer, nullable=True)
    last_enhanced: Mapped[str | None] = mapped_column(String(16), nullable=True)
    last_text: Mapped[str | None] = mapped_column(Text, nullable=True)
    last_host: Mapped[str | None] = mapped_column(String(255), nullable=True)
    created_at: Mapped[datetime] = mapped_column(UTCDateTime, default=utcnow)
    updated_at: Mapped[datetime] = mapped_column(UTCDateTime, default=utcnow)

    message: Mapped[Message] = relationship(back_populates="deliveries")


def _lower_recipient(context: DefaultExecutionContext) -> str:
    recipient: str = context.get_current_parameters()["recipient"]  # type: ignore[no-untyped-call]
    return recipient.lower()


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
        NEVER_REUSED,
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
    __table_args__ = (UniqueConstraint("user_id", "email", "domain_id"), NEVER_REUSED)

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    user_id: Mapped[int] = mapped_column(ForeignKey("users.id", ondelete="CASCADE"))
    email: Mapped[str] = mapped_column(String(320))  # lower-cased
    domain_id: Mapped[int] = mapped_column(Integer, default=0)
    source: Mapped[str] = mapped_column(String(16))  # bounce, complaint, unsubscribe, manual
    reason: Mapped[str] = mapped_column(Text, default="")
    created_at: Mapped[datetime] = mapped_column(UTCDateTime, default=utcnow)
